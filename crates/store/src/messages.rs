//! Messages: each session's conversation, ordered by a per-session `seq`.

use raworc_api::{MessageRole, SessionState};

use crate::audit::{self, AuditRecord};
use crate::db::{self, Row};
use crate::sessions::{self, SessionTransition};
use crate::writer::OnCommit;
use crate::{new_id, now_ms, Conn, Dialect, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: String,
    pub session_id: String,
    pub seq: i64,
    pub role: MessageRole,
    pub content: String,
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: MessageRole,
    pub content: String,
    pub metadata: serde_json::Value,
}

impl NewMessage {
    pub fn user(content: String) -> Self {
        NewMessage {
            role: MessageRole::User,
            content,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }
}

impl MessageRow {
    pub(crate) fn new(session_id: &str, seq: i64, m: NewMessage, now: i64) -> Self {
        MessageRow {
            id: new_id("msg"),
            session_id: session_id.to_string(),
            seq,
            role: m.role,
            content: m.content,
            metadata: m.metadata,
            created_at: now,
        }
    }
}

macro_rules! message_columns {
    () => {
        "id, session_id, seq, role, content, metadata, created_at"
    };
}
pub(crate) use message_columns;

pub(crate) fn from_row(row: &Row) -> Result<MessageRow> {
    let role: String = row.text("role")?;
    let metadata: String = row.text("metadata")?;
    Ok(MessageRow {
        id: row.text("id")?,
        session_id: row.text("session_id")?,
        seq: row.i64("seq")?,
        role: MessageRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("message role '{role}'")))?,
        content: row.text("content")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("message metadata: {e}")))?,
        created_at: row.i64("created_at")?,
    })
}

pub(crate) async fn insert(conn: &mut Conn, dialect: Dialect, m: &MessageRow) -> Result<()> {
    db::query(&dialect.sql(concat!(
        "INSERT INTO messages (",
        message_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(&m.id)
    .bind(&m.session_id)
    .bind(m.seq)
    .bind(m.role.as_str())
    .bind(&m.content)
    .bind(m.metadata.to_string())
    .bind(m.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the session's next message `seq` (and returns its state) in the
/// writer's transaction: one round trip where the database has `RETURNING`.
pub(crate) async fn next_seq(
    conn: &mut Conn,
    dialect: Dialect,
    session_id: &str,
    now: i64,
) -> Result<(i64, SessionState)> {
    let row = sessions::update_returning(
        conn,
        dialect,
        session_id,
        "message_seq = message_seq + 1, last_activity_at = ?",
        vec![now.into()],
        "AND state <> 'deleted'",
        "message_seq, state",
    )
    .await?;
    let state = row.text("state")?;
    let state = SessionState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("session state '{state}'")))?;
    Ok((row.i64("message_seq")?, state))
}

impl Store {
    /// Appends a message with the session's next `seq`. A user message to a
    /// closed session also asks for the session to be restored (SPEC §4).
    pub async fn post_message(
        &self,
        session_id: String,
        message: NewMessage,
        audit: Option<AuditRecord>,
    ) -> Result<MessageRow> {
        let dialect = self.dialect;
        // A post moves the session's `seq` and activity time: the cached row
        // is updated in place, so the next post's access check stays a hit.
        let cache = self.sessions.clone();
        let hub = self.events.clone();
        let id = session_id.clone();
        let hook: Option<OnCommit<(MessageRow, bool)>> =
            Some(Box::new(move |(row, restored): &(MessageRow, bool)| {
                if *restored {
                    if let Some(cache) = &cache {
                        cache.invalidate(&id);
                    }
                    // The restore appended a state event.
                    hub.announce(&id);
                } else if let Some(cache) = &cache {
                    cache.update(&id, |s| {
                        s.message_seq = row.seq;
                        s.last_activity_at = row.created_at;
                    });
                }
            }));
        let (row, _) = self
            .writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        let now = now_ms();
                        let (seq, state) = next_seq(conn, dialect, &session_id, now).await?;
                        let is_user = message.role == MessageRole::User;
                        let row = MessageRow::new(&session_id, seq, message, now);
                        insert(conn, dialect, &row).await?;
                        let mut restored = false;
                        if is_user && state == SessionState::Closed {
                            restored = true;
                            let mut session = sessions::fetch(conn, dialect, &session_id).await?;
                            if let Some(to) = SessionTransition::Restore.target(session.state) {
                                sessions::set_state(
                                    conn,
                                    dialect,
                                    &mut session,
                                    to,
                                    SessionState::Running,
                                )
                                .await?;
                            }
                        }
                        audit::insert_if(conn, dialect, &audit).await?;
                        Ok((row, restored))
                    })
                },
                hook,
            )
            .await?;
        Ok(row)
    }

    /// Messages in `seq` order; `after` skips those with `seq <= after`.
    pub async fn list_messages(
        &self,
        session_id: &str,
        after: Option<i64>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<MessageRow>> {
        let sql = self.dialect.sql(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ? OFFSET ?"
        ));
        let rows = db::query(&sql)
            .bind(session_id)
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit))
            .bind(crate::sql_offset(offset))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn count_messages(&self, session_id: &str) -> Result<i64> {
        let sql = self
            .dialect
            .sql("SELECT COUNT(*) AS n FROM messages WHERE session_id = ?");
        let row = db::query(&sql)
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?;
        row.i64("n")
    }

    /// Deletes a session's messages; `seq` keeps counting so `after=` stays valid.
    pub async fn clear_messages(
        &self,
        session_id: String,
        audit: Option<AuditRecord>,
    ) -> Result<i64> {
        let dialect = self.dialect;
        let hook = self.session_changed(session_id.clone());
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        sessions::fetch_live(conn, dialect, &session_id).await?;
                        let done =
                            db::query(&dialect.sql("DELETE FROM messages WHERE session_id = ?"))
                                .bind(&session_id)
                                .execute(&mut *conn)
                                .await?;
                        // The agent's memory of the conversation goes with it, and
                        // what it was answering counts as answered (its work on a
                        // message that is gone is refused from now on).
                        db::query(&dialect.sql("DELETE FROM agent_steps WHERE session_id = ?"))
                            .bind(&session_id)
                            .execute(&mut *conn)
                            .await?;
                        db::query(
                            &dialect
                                .sql("UPDATE sessions SET answered_seq = message_seq WHERE id = ?"),
                        )
                        .bind(&session_id)
                        .execute(&mut *conn)
                        .await?;
                        audit::insert_if(conn, dialect, &audit).await?;
                        Ok(done as i64)
                    })
                },
                hook,
            )
            .await
    }
}
