//! The calls tests and benchmarks make on a session's agent, through the API.

use serde_json::{json, Value};

use crate::computer::await_some;
use crate::StatusCode;

impl crate::TestApp {
    /// Posts a user message to session `id` as admin; its `seq`.
    pub async fn post_message(&self, id: &str, content: &str) -> i64 {
        let r = self
            .post(
                &format!("/api/v0/sessions/{id}/messages"),
                Some(&self.admin_token),
                json!({ "content": content }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["seq"].as_i64().expect("seq")
    }

    /// The assistant's reply to message `seq` of session `id`, once written
    /// (waiting up to `secs`).
    pub async fn reply_to(&self, id: &str, seq: i64, secs: u64) -> Value {
        await_some(&format!("the reply to message {seq}"), secs, || async {
            let r = self
                .get(
                    &format!("/api/v0/sessions/{id}/messages?after={seq}"),
                    Some(&self.admin_token),
                )
                .await;
            r.body
                .as_array()?
                .iter()
                .find(|m| m["role"] == "assistant" && m["metadata"]["reply_to"] == seq)
                .cloned()
        })
        .await
    }

    /// Waits until session `id`'s agent has finished its work (`busy` is
    /// down: every event of that work is written).
    pub async fn await_idle(&self, id: &str) {
        await_some(&format!("session {id}'s agent to be idle"), 30, || async {
            let r = self
                .get(&format!("/api/v0/sessions/{id}"), Some(&self.admin_token))
                .await;
            (r.body["busy"] == false).then_some(())
        })
        .await
    }

    /// Session `id`'s events (up to a thousand).
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let r = self
            .get(
                &format!("/api/v0/sessions/{id}/events?limit=1000"),
                Some(&self.admin_token),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body.as_array().cloned().unwrap_or_default()
    }
}
