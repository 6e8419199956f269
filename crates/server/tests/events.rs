//! Events through the real HTTP server on every database, without
//! computers: lifecycle changes recorded as `state` events in `seq` order,
//! paging, bad input, live pieces of model turns on the streams that ask
//! for them, and streams that end when the server stops.

use std::time::Duration;

use raworc_testkit::{backend_tests, Backend, StatusCode, TestApp};
use serde_json::{json, Value};

backend_tests!(
    lifecycle_changes_are_state_events,
    live_pieces_reach_only_streams_that_ask_before_the_events_after_them,
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
    app.close(&t, &id).await;
    app.request_restore(&t, &id).await;
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

type Sent = (String, Option<String>, Value);

/// Reads server-sent events until `n` stored ones (with an `id`) have
/// come: `(event, id, data)` of each.
async fn read_sse(resp: &mut reqwest::Response, n: usize) -> Vec<Sent> {
    read_sse_until(resp, |out| {
        out.iter().filter(|e| e.1.is_some()).count() == n
    })
    .await
}

/// Reads server-sent events until `done` says so.
async fn read_sse_until(resp: &mut reqwest::Response, done: impl Fn(&[Sent]) -> bool) -> Vec<Sent> {
    let mut buf = String::new();
    let mut out: Vec<Sent> = Vec::new();
    while !done(&out) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream goes on");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            if let Some(data) = field("data: ") {
                let event = field("event: ").unwrap_or_default();
                out.push((event, field("id: "), serde_json::from_str(&data).unwrap()));
                if done(&out) {
                    break;
                }
            }
        }
    }
    out
}

/// Live pieces (as the agent publishes them while a model streams) reach
/// the streams of their session that asked for them — SSE `delta` events
/// without an `id`, WebSocket `delta` updates without a `seq` — right
/// after the event their model call began after and before the events
/// written after them, even when the stream reads all of it at once;
/// other streams see only the stored events, the same ones.
async fn live_pieces_reach_only_streams_that_ask_before_the_events_after_them(b: Backend) {
    use raworc_api::EventDelta;
    use raworc_server::routes::events::publish_delta;

    let app = TestApp::spawn(b).await;
    let t = app.admin_token.clone();
    let id = app.session(&t, json!({})).await;
    let other = app.session(&t, json!({})).await;
    let open = |query: &'static str| {
        let (app, t, id) = (&app, &t, &id);
        async move {
            let r = app
                .client
                .get(format!(
                    "{}/api/v0/sessions/{id}/events/stream?after=1{query}",
                    app.base
                ))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r
        }
    };
    let mut live = open("&deltas=true").await;
    let mut plain = open("").await;
    let mut off = open("&deltas=false").await;
    let url = format!(
        "ws://{}/ws/{id}/stream?after=1&deltas=true&token={t}",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hub = &app.state().deltas;
    let piece = |session: &str, kind: &str, index: u32, text: &str| EventDelta {
        session_id: session.to_owned(),
        kind: kind.to_owned(),
        index,
        attempt: 1,
        text: text.to_owned(),
    };
    publish_delta(hub, 1, piece(&other, "text", 0, "not yours"));
    publish_delta(hub, 1, piece(&id, "thinking", 0, "Hm"));
    publish_delta(hub, 1, piece(&id, "text", 1, "Hel"));
    publish_delta(hub, 1, piece(&id, "text", 1, "lo"));
    app.close(&t, &id).await;
    publish_delta(hub, 2, piece(&id, "text", 0, "again"));
    app.request_restore(&t, &id).await;

    let got = read_sse(&mut live, 2).await;
    let shape: Vec<(String, Option<String>, String)> = got
        .iter()
        .map(|(event, id, data)| {
            let what = if event == "delta" {
                format!(
                    "{} {} {} {}",
                    data["kind"], data["index"], data["attempt"], data["text"]
                )
            } else {
                data["content"].as_str().unwrap().to_owned()
            };
            (event.clone(), id.clone(), what)
        })
        .collect();
    let delta = |what: &str| ("delta".to_owned(), None, what.to_owned());
    let stored =
        |seq: &str, state: &str| ("state".to_owned(), Some(seq.to_owned()), state.to_owned());
    assert_eq!(
        shape,
        [
            delta(r#""thinking" 0 1 "Hm""#),
            delta(r#""text" 1 1 "Hel""#),
            delta(r#""text" 1 1 "lo""#),
            stored("2", "closed"),
            delta(r#""text" 0 1 "again""#),
            stored("3", "starting"),
        ]
    );
    assert!(got.iter().all(|(_, _, d)| d["session_id"] == id.as_str()));
    // A piece after an event the stream has not seen (not stored, here)
    // still goes out, and so does one after an event sent long ago.
    publish_delta(hub, 100, piece(&id, "text", 0, "ahead"));
    publish_delta(hub, 1, piece(&id, "text", 0, "behind"));
    let more = read_sse_until(&mut live, |out| out.len() == 2).await;
    let texts: Vec<(&str, &Value)> = more.iter().map(|e| (e.0.as_str(), &e.2["text"])).collect();
    assert_eq!(
        texts,
        [("delta", &json!("ahead")), ("delta", &json!("behind"))]
    );
    // Without `deltas=true` (or with `false`): the stored events alone, the same.
    let stored_only: Vec<&Value> = got.iter().filter(|e| e.1.is_some()).map(|e| &e.2).collect();
    for resp in [&mut plain, &mut off] {
        let got = read_sse(resp, 2).await;
        assert!(
            got.iter()
                .all(|(event, id, _)| event == "state" && id.is_some()),
            "{got:?}"
        );
        let data: Vec<&Value> = got.iter().map(|e| &e.2).collect();
        assert_eq!(data, stored_only);
    }
    // The WebSocket: seed 004's shape, pieces without `seq`.
    let mut updates = Vec::new();
    while updates
        .iter()
        .filter(|u: &&Value| u["seq"].is_i64())
        .count()
        < 2
    {
        let m = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(&mut ws))
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["type"] == "agent_update" {
            updates.push(v);
        }
    }
    let ws_shape: Vec<String> = updates
        .iter()
        .map(|u| match u["update_type"].as_str().unwrap() {
            "delta" => {
                assert!(u.get("seq").is_none(), "{u}");
                assert!(u["timestamp"].is_string(), "{u}");
                let m = &u["metadata"];
                format!(
                    "delta {} {} {} {}",
                    m["kind"], m["index"], m["attempt"], u["content"]
                )
            }
            kind => format!("{kind} {} {}", u["seq"], u["content"]),
        })
        .collect();
    assert_eq!(
        ws_shape,
        [
            r#"delta "thinking" 0 1 "Hm""#,
            r#"delta "text" 1 1 "Hel""#,
            r#"delta "text" 1 1 "lo""#,
            r#"state 2 "closed""#,
            r#"delta "text" 0 1 "again""#,
            r#"state 3 "starting""#,
        ]
    );
    // What the agent places its pieces after: the latest event's seq.
    let store = &app.state().store;
    assert_eq!(store.last_event_seq(&id).await.unwrap(), 3);
    assert_eq!(store.last_event_seq("no-such-session").await.unwrap(), 0);
    // The flag and the pieces' shape are documented.
    let doc = app.get("/api/v0/openapi.json", None).await.body;
    let params = &doc["paths"]["/api/v0/sessions/{id}/events/stream"]["get"]["parameters"];
    assert!(
        params
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "deltas" && p["in"] == "query"),
        "{params}"
    );
    let schema = &doc["components"]["schemas"]["EventDelta"]["properties"];
    for field in ["session_id", "kind", "index", "attempt", "text"] {
        assert!(schema.get(field).is_some(), "EventDelta.{field}: {schema}");
    }
    // A flag that is not a boolean is refused.
    let r = app
        .get(
            &format!("/api/v0/sessions/{id}/events/stream?deltas=maybe"),
            Some(&t),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.error().contains("deltas"), "{:?}", r.body);
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
