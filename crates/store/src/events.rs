//! Events: each session's record of what happened, in `seq` order — every
//! step of the agent (`thinking`, `text`, `tool_use`, `tool_result`,
//! `error`, `complete`) and every lifecycle change (`state`).
//!
//! An event is appended inside the transaction of the change it reports,
//! so it exists exactly when the change does. After the commit the store
//! announces the session's id on an in-process broadcast; subscribers then
//! read the table from the last `seq` they saw, so a missed or lagging
//! announcement never loses an event, it only delays the next read.

use std::sync::Arc;

use raworc_api::SessionState;
use tokio::sync::broadcast;

use crate::db::{self, Row};
use crate::sessions;
use crate::{now_ms, Conn, Dialect, Result, Store, StoreError};

/// The kinds of event.
pub mod kind {
    pub const THINKING: &str = "thinking";
    pub const TEXT: &str = "text";
    pub const TOOL_USE: &str = "tool_use";
    pub const TOOL_RESULT: &str = "tool_result";
    pub const ERROR: &str = "error";
    pub const COMPLETE: &str = "complete";
    pub const STATE: &str = "state";
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub session_id: String,
    pub seq: i64,
    pub kind: String,
    pub content: String,
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub content: String,
    pub metadata: serde_json::Value,
}

impl NewEvent {
    pub fn new(
        kind: &'static str,
        content: impl Into<String>,
        metadata: serde_json::Value,
    ) -> Self {
        NewEvent {
            kind,
            content: without_nul(content.into()),
            metadata,
        }
    }

    /// A lifecycle event: the session's state (and whether the agent works).
    pub fn state(state: SessionState, busy: bool) -> Self {
        NewEvent::new(
            kind::STATE,
            state.as_str(),
            serde_json::json!({ "state": state.as_str(), "busy": busy }),
        )
    }
}

/// `text` with NUL characters replaced (U+FFFD): a program's output may
/// hold them, and PostgreSQL's text columns refuse them.
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// Announces, after each commit that appended events, which session has new ones.
#[derive(Clone)]
pub(crate) struct EventHub {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            tx: broadcast::channel(4096).0,
        }
    }
}

impl EventHub {
    pub(crate) fn announce(&self, session_id: &str) {
        // No subscriber is fine: nobody is waiting.
        let _ = self.tx.send(Arc::from(session_id));
    }
}

fn from_row(row: &Row) -> Result<EventRow> {
    let metadata = row.text("metadata")?;
    Ok(EventRow {
        session_id: row.text("session_id")?,
        seq: row.i64("seq")?,
        kind: row.text("type")?,
        content: row.text("content")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("event metadata: {e}")))?,
        created_at: row.i64("created_at")?,
    })
}

/// Takes `n` numbers from the session's event counter; returns the first.
async fn reserve_seqs(conn: &mut Conn, dialect: Dialect, session_id: &str, n: i64) -> Result<i64> {
    let row = sessions::update_returning(
        conn,
        dialect,
        session_id,
        "event_seq = event_seq + ?",
        vec![n.into()],
        "",
        "event_seq",
    )
    .await?;
    Ok(row.i64("event_seq")? - n + 1)
}

/// Appends `events` to the session's record inside the caller's
/// transaction; returns their `seq`s.
pub(crate) async fn append(
    conn: &mut Conn,
    dialect: Dialect,
    session_id: &str,
    events: &[NewEvent],
) -> Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let first = reserve_seqs(conn, dialect, session_id, events.len() as i64).await?;
    let now = now_ms();
    let sql = dialect.sql(
        "INSERT INTO events (session_id, seq, type, content, metadata, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    );
    let mut seqs = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let seq = first + i as i64;
        db::query(&sql)
            .bind(session_id)
            .bind(seq)
            .bind(e.kind)
            .bind(e.content.as_str())
            .bind(e.metadata.to_string())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        seqs.push(seq);
    }
    Ok(seqs)
}

impl Store {
    /// Appends events to a session's record in one transaction.
    pub async fn append_events(&self, session_id: &str, events: Vec<NewEvent>) -> Result<Vec<i64>> {
        let dialect = self.dialect;
        let id = session_id.to_owned();
        let hook = self.session_changed(session_id.to_owned());
        self.writer
            .write_then(
                move |conn| Box::pin(async move { append(conn, dialect, &id, &events).await }),
                hook,
            )
            .await
    }

    /// Events with `seq > after`, oldest first.
    pub async fn list_events(
        &self,
        session_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let sql = self.dialect.sql(
            "SELECT session_id, seq, type, content, metadata, created_at FROM events \
             WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        );
        let rows = db::query(&sql)
            .bind(session_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// The `seq` of the session's latest event (0 when it has none).
    pub async fn last_event_seq(&self, session_id: &str) -> Result<i64> {
        let sql = self
            .dialect
            .sql("SELECT COALESCE(MAX(seq), 0) AS n FROM events WHERE session_id = ?");
        let row = db::query(&sql)
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?;
        row.i64("n")
    }

    /// Announcements of sessions with new events (and other changes).
    /// Subscribe before reading the table, then read again on each
    /// announcement of the session: nothing falls between the two.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_never_reach_a_text_column() {
        let e = NewEvent::new(kind::TOOL_RESULT, "a\0b", serde_json::json!({}));
        assert_eq!(e.content, "a\u{FFFD}b");
        assert_eq!(without_nul("plain".into()), "plain");
    }
}
