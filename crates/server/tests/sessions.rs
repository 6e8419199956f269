//! Sessions and messages through the real HTTP server, on every database.

use raworc_testkit::{backend_tests, Backend, StatusCode, TestApp};
use serde_json::json;

backend_tests!(
    session_crud,
    prompt_becomes_first_message,
    lifecycle_transitions,
    remix_copies_config,
    messages_paging_and_clear,
    message_to_closed_session_restores_it,
    operator_reports_only_win_from_the_state_they_saw,
);

async fn session_crud(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let r = app
        .post(
            "/api/v0/sessions",
            Some(&t),
            json!({"name": "report", "instructions": "Analyze this data file", "setup": "pip install pandas",
                   "secrets": {"API_KEY": "sk-123"}, "metadata": {"team": "x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("session-"));
    assert_eq!(r.body["state"], "created");
    assert_eq!(r.body["busy"], false);
    assert_eq!(r.body["secrets"], json!(["API_KEY"]));
    assert!(
        !r.body.to_string().contains("sk-123"),
        "secret value leaked"
    );
    assert_eq!(r.body["metadata"]["team"], "x");

    let got = app.get(&format!("/api/v0/sessions/{id}"), Some(&t)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["instructions"], "Analyze this data file");
    assert!(!got.body.to_string().contains("sk-123"));

    let upd = app
        .put(
            &format!("/api/v0/sessions/{id}"),
            Some(&t),
            json!({"name": "renamed", "metadata": {"k": 1}}),
        )
        .await;
    assert_eq!(upd.status, StatusCode::OK, "{:?}", upd.body);
    assert_eq!(upd.body["name"], "renamed");
    assert_eq!(upd.body["metadata"], json!({"k": 1}));
    assert_eq!(
        upd.body["instructions"], "Analyze this data file",
        "untouched field kept"
    );

    // An empty body creates a plain session.
    let plain = app
        .raw(
            reqwest::Method::POST,
            "/api/v0/sessions",
            Some(&t),
            "application/json",
            vec![],
        )
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{:?}", plain.body);

    let list = app.get("/api/v0/sessions", Some(&t)).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<_> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], id, "newest first");
    let limited = app.get("/api/v0/sessions?limit=1&offset=1", Some(&t)).await;
    assert_eq!(limited.body.as_array().unwrap().len(), 1);
    assert_eq!(limited.body[0]["id"], id.as_str());
    let by_state = app.get("/api/v0/sessions?state=running", Some(&t)).await;
    assert_eq!(by_state.body, json!([]));
    let bad_state = app.get("/api/v0/sessions?state=flying", Some(&t)).await;
    assert_eq!(bad_state.status, StatusCode::BAD_REQUEST);

    let del = app
        .delete(&format!("/api/v0/sessions/{id}"), Some(&t))
        .await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(del.body["state"], "deleted");
    assert_eq!(del.body["secrets"], json!([]));
    assert_eq!(
        app.get(&format!("/api/v0/sessions/{id}"), Some(&t))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v0/sessions/{id}"), Some(&t))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let deleted = app.get("/api/v0/sessions?state=deleted", Some(&t)).await;
    assert_eq!(
        deleted.body.as_array().unwrap().len(),
        1,
        "row kept for audit"
    );
    assert_eq!(
        app.get("/api/v0/sessions", Some(&t))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

async fn prompt_becomes_first_message(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({"prompt": "open the browser"})).await;
    let msgs = app
        .get(&format!("/api/v0/sessions/{id}/messages"), Some(&t))
        .await;
    assert_eq!(msgs.status, StatusCode::OK);
    let m = &msgs.body[0];
    assert_eq!(m["role"], "user");
    assert_eq!(m["content"], "open the browser");
    assert_eq!(m["seq"], 1);
    assert_eq!(m["session_id"], id.as_str());
    assert!(m["id"].as_str().unwrap().starts_with("msg-"));
    assert_eq!(m["created_at"], m["timestamp"]);
    app.stop().await;
}

async fn lifecycle_transitions(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let path = |s: &str| format!("/api/v0/sessions/{id}{s}");

    // Not running yet: pause and resume are illegal; unknown states are bad requests.
    let r = app
        .put(&path("/state"), Some(&t), json!({"state": "paused"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(
        r.error().contains("created"),
        "message names the state: {}",
        r.error()
    );
    let r = app
        .put(&path("/state"), Some(&t), json!({"state": "flying"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .put(&path("/state"), Some(&t), json!({"state": "closed"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.post(&path("/restore"), Some(&t), json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = app.post(&path("/close"), Some(&t), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "closed");
    let r = app.post(&path("/close"), Some(&t), json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.post(&path("/restore"), Some(&t), json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["state"], "starting");
    app.stop().await;
}

async fn remix_copies_config(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let parent = app
        .session(&t, json!({"name": "p", "instructions": "do it", "setup": "echo hi", "secrets": {"TOKEN": "v"}}))
        .await;
    let r = app
        .post(
            &format!("/api/v0/sessions/{parent}/remix"),
            Some(&t),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["parent_id"], parent.as_str());
    assert_eq!(r.body["instructions"], "do it");
    assert_eq!(r.body["secrets"], json!(["TOKEN"]));
    assert_eq!(r.body["state"], "created");
    assert_ne!(r.body["id"], parent.as_str());

    let r = app
        .post(
            &format!("/api/v0/sessions/{parent}/remix"),
            Some(&t),
            json!({"code": false, "data": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body["instructions"],
        json!(null),
        "code=false drops instructions"
    );
    assert_eq!(r.body["setup"], json!(null));
    assert_eq!(r.body["metadata"]["remix"]["data"], false);
    let child = r.body["id"].as_str().unwrap();
    let sealed = app.state().store.session_secrets(child).await.unwrap();
    assert_eq!(sealed.len(), 1);
    assert_eq!(
        app.state().secrets.open("TOKEN", &sealed[0].1).unwrap(),
        "v"
    );

    let r = app
        .post(
            "/api/v0/sessions/session-missing/remix",
            Some(&t),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn messages_paging_and_clear(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let path = format!("/api/v0/sessions/{id}/messages");
    for i in 1..=5 {
        let r = app
            .post(&path, Some(&t), json!({"content": format!("m{i}")}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.body["seq"], i);
        assert_eq!(r.body["role"], "user");
    }
    let r = app
        .post(
            &path,
            Some(&t),
            json!({"content": "done", "role": "assistant"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["role"], "assistant");

    let all = app.get(&path, Some(&t)).await;
    let seqs: Vec<i64> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let after = app.get(&format!("{path}?after=4"), Some(&t)).await;
    let seqs: Vec<i64> = after
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 6]);
    let page = app.get(&format!("{path}?limit=2&offset=1"), Some(&t)).await;
    assert_eq!(page.body[0]["content"], "m2");
    assert_eq!(page.body.as_array().unwrap().len(), 2);
    let count = app.get(&format!("{path}/count"), Some(&t)).await;
    assert_eq!(count.body, json!({"count": 6}));

    let bad = app
        .post(&path, Some(&t), json!({"content": "x", "role": "robot"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let empty = app.post(&path, Some(&t), json!({"content": "  "})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_after = app.get(&format!("{path}?after=abc"), Some(&t)).await;
    assert_eq!(bad_after.status, StatusCode::BAD_REQUEST);
    assert!(bad_after.error().contains("after"), "{}", bad_after.error());

    let cleared = app.delete(&path, Some(&t)).await;
    assert_eq!(cleared.body, json!({"deleted": 6}));
    assert_eq!(
        app.get(&format!("{path}/count"), Some(&t)).await.body,
        json!({"count": 0})
    );
    let next = app.post(&path, Some(&t), json!({"content": "again"})).await;
    assert_eq!(next.body["seq"], 7, "seq keeps counting after a clear");
    app.stop().await;
}

async fn message_to_closed_session_restores_it(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    app.post(&format!("/api/v0/sessions/{id}/close"), Some(&t), json!({}))
        .await;
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/messages"),
            Some(&t),
            json!({"content": "wake up"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let s = app.get(&format!("/api/v0/sessions/{id}"), Some(&t)).await;
    assert_eq!(s.body["state"], "starting");
    app.stop().await;
}

/// The operator's store calls: its work list by state, and reports that
/// apply only while the session is still in the state the operator saw.
async fn operator_reports_only_win_from_the_state_they_saw(b: Backend) {
    use raworc_api::SessionState::*;
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let first = app.session(&t, json!({})).await;
    let second = app.session(&t, json!({})).await;
    let store = &app.state().store;

    let listed: Vec<String> = store
        .sessions_in_states(&[Created])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![first.clone(), second.clone()], "oldest first");
    assert!(store
        .sessions_in_states(&[Running])
        .await
        .unwrap()
        .is_empty());

    assert!(store
        .observe_session(&first, Created, Starting, None)
        .await
        .unwrap());
    // A stale report (the session is no longer `created`) changes nothing.
    assert!(!store
        .observe_session(&first, Created, Errored, Some("late".into()))
        .await
        .unwrap());
    assert!(store
        .observe_session(
            &first,
            Starting,
            Errored,
            Some("setup.sh exited with 3".into())
        )
        .await
        .unwrap());
    let r = app
        .get(&format!("/api/v0/sessions/{first}"), Some(&t))
        .await;
    assert_eq!(r.body["state"], "errored");
    assert_eq!(r.body["error"], "setup.sh exited with 3", "{:?}", r.body);
    let in_work: Vec<String> = store
        .sessions_in_states(&[Starting, Errored])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(in_work, vec![first.clone()]);
    // Back to running clears the reason.
    assert!(store
        .observe_session(&first, Errored, Running, None)
        .await
        .unwrap());
    let r = app
        .get(&format!("/api/v0/sessions/{first}"), Some(&t))
        .await;
    assert_eq!(r.body["state"], "running");
    assert!(r.body["error"].is_null(), "{:?}", r.body);
    app.stop().await;
}
