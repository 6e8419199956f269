//! The HTTP calls `raworc session` makes on one session, with the saved
//! server and token.

use anyhow::Result;
use raworc_api::{Event, Session};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::{self, Credentials};

/// Events listed per call when looking for a session's latest one.
const EVENT_PAGE: usize = 1000;

/// The session's API, with the saved server and token.
pub(super) struct Remote {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
    /// The session's path, `/api/v0/sessions/{id}`, once there is one.
    pub(super) path: String,
}

impl Remote {
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        http::call(
            &self.http,
            &self.base,
            method,
            path,
            Some(&self.token),
            body,
            Credentials::Bearer,
        )
        .await
    }

    pub(super) fn at(&mut self, id: &str) {
        self.path = format!("/api/v0/sessions/{}", http::encode_segment(id));
    }

    pub(super) async fn session(&self) -> Result<Session> {
        self.call(Method::GET, &self.path, None).await
    }

    pub(super) async fn post<T: DeserializeOwned>(&self, sub: &str, body: Value) -> Result<T> {
        let path = format!("{}{sub}", self.path);
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// The seq of the session's latest event (0 if none), so that a stream
    /// opened after it shows only what happens from now on.
    pub(super) async fn latest_event(&self) -> Result<i64> {
        let mut after = 0;
        loop {
            let path = format!("{}/events?after={after}&limit={EVENT_PAGE}", self.path);
            let page: Vec<Event> = self.call(Method::GET, &path, None).await?;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            if page.len() < EVENT_PAGE {
                return Ok(after);
            }
        }
    }
}
