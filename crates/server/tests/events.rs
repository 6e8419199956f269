//! Events through the real HTTP server on every database, without
//! computers: lifecycle changes recorded as `state` events in `seq` order,
//! paging, bad input, and streams that end when the server stops.

use std::time::Duration;

use raworc_testkit::{backend_tests, Backend, StatusCode, TestApp};
use serde_json::{json, Value};

backend_tests!(
    lifecycle_changes_are_state_events,
    streams_end_when_the_server_stops,
    the_next_message_to_answer_is_found_past_any_number_of_others,
);

async fn events(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v0/sessions/{id}/events{query}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body.as_array().unwrap().clone()
}

async fn lifecycle_changes_are_state_events(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({"name": "evented"})).await;
    // Without computers the session stays `created`; closing and restoring it moves it.
    let r = app
        .post(&format!("/api/v0/sessions/{id}/close"), Some(&t), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/restore"),
            Some(&t),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let all = events(&app, &id, "").await;
    let states: Vec<(i64, &str)> = all
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "state");
            assert_eq!(e["session_id"], id.as_str());
            assert_eq!(e["metadata"]["busy"], false);
            (e["seq"].as_i64().unwrap(), e["content"].as_str().unwrap())
        })
        .collect();
    assert_eq!(states, [(1, "created"), (2, "closed"), (3, "starting")]);
    // Paging.
    let after = events(&app, &id, "?after=1&limit=1").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["seq"], 2);
    assert!(events(&app, &id, "?after=3").await.is_empty());
    for bad in ["?limit=0", "?limit=5000"] {
        let r = app
            .get(&format!("/api/v0/sessions/{id}/events{bad}"), Some(&t))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(r.error().contains("limit"), "{bad}: {:?}", r.body);
    }
    let r = app
        .get(&format!("/api/v0/sessions/{id}/events?after=x"), Some(&t))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A bad Last-Event-ID is a clear error, not a stream from the start.
    let r = app
        .send(
            app.client
                .get(format!("{}/api/v0/sessions/{id}/events/stream", app.base))
                .bearer_auth(&t)
                .header("Last-Event-ID", "yesterday"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("Last-Event-ID"), "{:?}", r.body);
    // No computers here, so no agent: a cancel stops nothing.
    let r = app
        .post(
            &format!("/api/v0/sessions/{id}/cancel"),
            Some(&t),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["cancelled"], false);
    app.stop().await;
}

async fn streams_end_when_the_server_stops(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let sse = app
        .client
        .get(format!("{}/api/v0/sessions/{id}/events/stream", app.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let url = format!("ws://{}/ws/{id}/stream?token={t}", app.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // A deleted session's stream ends after saying so.
    let other = app.session(&t, json!({})).await;
    let mut gone = app
        .client
        .get(format!(
            "{}/api/v0/sessions/{other}/events/stream",
            app.base
        ))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let r = app
        .delete(&format!("/api/v0/sessions/{other}"), Some(&t))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut body = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = gone.chunk().await.unwrap() {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream of a deleted session ends: {body}"
    );
    assert!(body.contains("\"content\":\"deleted\""), "{body}");
    // A graceful stop does not wait on streams that would never end.
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("the server stops with streams open");
    drop((sse, ws));
}

async fn the_next_message_to_answer_is_found_past_any_number_of_others(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let post = |content: String, role: &'static str| {
        let (app, t, id) = (&app, &t, &id);
        async move {
            let r = app
                .post(
                    &format!("/api/v0/sessions/{id}/messages"),
                    Some(t),
                    json!({ "content": content, "role": role }),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            r.body["seq"].as_i64().unwrap()
        }
    };
    post("first".into(), "user").await;
    // Many messages that are not the agent's to answer (replies, notes)...
    for n in 0..80 {
        post(format!("note {n}"), "assistant").await;
    }
    // ...and then one that is.
    let seq = post("after them".into(), "user").await;
    let store = &app.state().store;
    let next = store
        .next_user_message(&id, 1)
        .await
        .unwrap()
        .expect("found");
    assert_eq!((next.seq, next.content.as_str()), (seq, "after them"));
    assert!(store.next_user_message(&id, seq).await.unwrap().is_none());
    // The conversation window: the latest user messages, oldest first.
    let recent = store.recent_user_messages(&id, seq, 1).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].seq, seq);
    let both = store.recent_user_messages(&id, seq, 5).await.unwrap();
    assert_eq!(both.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, seq]);
    app.stop().await;
}
