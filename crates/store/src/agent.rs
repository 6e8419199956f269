//! The agent's durable progress, so that each user message is answered
//! exactly once, also across crashes.
//!
//! Per user message the agent appends steps: the model's turn (stored
//! before any of its tools runs), then each tool's result as it finishes.
//! A restart reads them back and goes on from the last one; a tool whose
//! turn is stored but whose result is not was interrupted and is never run
//! again blindly. The final reply, the session's `answered_seq` and the
//! `complete` event are written in one transaction, guarded so that a
//! message can be answered only once.

use raworc_api::SessionState;

use crate::db::{self, Row};
use crate::events::{self, NewEvent};
use crate::messages::{self, message_columns, MessageRow, NewMessage};
use crate::{now_ms, Conn, Dialect, Result, Store, StoreError};

/// One stored step of the agent's work on a user message.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub message_seq: i64,
    pub step: i64,
    /// `assistant` (the model's turn), `tool_result` (one tool's result) or
    /// `reply` (a final answer the model did not write, e.g. an error).
    pub kind: String,
    pub body: serde_json::Value,
    pub created_at: i64,
}

fn step_from_row(row: &Row) -> Result<StepRow> {
    let body = row.text("body")?;
    Ok(StepRow {
        message_seq: row.i64("message_seq")?,
        step: row.i64("step")?,
        kind: row.text("kind")?,
        body: serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("agent step: {e}")))?,
        created_at: row.i64("created_at")?,
    })
}

async fn insert_step(
    conn: &mut Conn,
    dialect: Dialect,
    session_id: &str,
    message_seq: i64,
    kind: &str,
    body: &serde_json::Value,
) -> Result<i64> {
    let row = db::query(&dialect.sql(
        "SELECT COALESCE(MAX(step), 0) AS n FROM agent_steps WHERE session_id = ? AND message_seq = ?",
    ))
    .bind(session_id)
    .bind(message_seq)
    .fetch_one(&mut *conn)
    .await?;
    let step = row.i64("n")? + 1;
    db::query(&dialect.sql(
        "INSERT INTO agent_steps (session_id, message_seq, step, kind, body, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    ))
    .bind(session_id)
    .bind(message_seq)
    .bind(step)
    .bind(kind)
    .bind(body.to_string())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(step)
}

/// Sets the agent's `busy` flag; true when it changed.
async fn set_busy_in(conn: &mut Conn, dialect: Dialect, id: &str, busy: bool) -> Result<bool> {
    let changed = db::query(
        &dialect.sql("UPDATE sessions SET busy = ?, updated_at = ? WHERE id = ? AND busy <> ?"),
    )
    .bind(i64::from(busy))
    .bind(now_ms())
    .bind(id)
    .bind(i64::from(busy))
    .execute(&mut *conn)
    .await?;
    Ok(changed == 1)
}

fn parse_state(row: &Row) -> Result<SessionState> {
    let s = row.text("state")?;
    SessionState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("session state '{s}'")))
}

impl Store {
    /// The first user message after `after_seq`: the next one to answer.
    pub async fn next_user_message(
        &self,
        session_id: &str,
        after_seq: i64,
    ) -> Result<Option<MessageRow>> {
        let sql = self.dialect.sql(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE session_id = ? AND seq > ? AND role = 'user' ORDER BY seq LIMIT 1"
        ));
        let row = db::query(&sql)
            .bind(session_id)
            .bind(after_seq)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(messages::from_row).transpose()
    }

    /// The last `n` user messages up to `up_to_seq`, oldest first: the
    /// conversation the agent shows the model.
    pub async fn recent_user_messages(
        &self,
        session_id: &str,
        up_to_seq: i64,
        n: u32,
    ) -> Result<Vec<MessageRow>> {
        let sql = self.dialect.sql(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE session_id = ? AND seq <= ? AND role = 'user' \
             ORDER BY seq DESC LIMIT ?"
        ));
        let rows = db::query(&sql)
            .bind(session_id)
            .bind(up_to_seq)
            .bind(i64::from(n))
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(messages::from_row)
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// Every stored step of messages `from_message_seq..=up_to_message_seq`, in order.
    pub async fn agent_steps(
        &self,
        session_id: &str,
        from_message_seq: i64,
        up_to_message_seq: i64,
    ) -> Result<Vec<StepRow>> {
        let sql = self.dialect.sql(
            "SELECT message_seq, step, kind, body, created_at FROM agent_steps \
             WHERE session_id = ? AND message_seq >= ? AND message_seq <= ? \
             ORDER BY message_seq, step",
        );
        let rows = db::query(&sql)
            .bind(session_id)
            .bind(from_message_seq)
            .bind(up_to_message_seq)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    /// Appends one step and the events that report it, atomically.
    /// Refused once the message has its reply.
    pub async fn record_step(
        &self,
        session_id: &str,
        message_seq: i64,
        kind: &'static str,
        body: serde_json::Value,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<i64>)> {
        let dialect = self.dialect;
        let id = session_id.to_owned();
        let hook = self.session_changed(session_id.to_owned());
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        ensure_unanswered(conn, dialect, &id, message_seq).await?;
                        let step =
                            insert_step(conn, dialect, &id, message_seq, kind, &body).await?;
                        let seqs = events::append(conn, dialect, &id, &events).await?;
                        Ok((step, seqs))
                    })
                },
                hook,
            )
            .await
    }

    /// Answers user message `message_seq`: the assistant's reply, an optional
    /// last step (when the model did not write the reply itself), the
    /// session's `answered_seq` and `events` — all or nothing, and only once
    /// (a second answer to the same message is a conflict).
    pub async fn finish_reply(
        &self,
        session_id: &str,
        message_seq: i64,
        reply: NewMessage,
        last_step: Option<serde_json::Value>,
        events: Vec<NewEvent>,
    ) -> Result<MessageRow> {
        let dialect = self.dialect;
        let id = session_id.to_owned();
        let hook = self.session_changed(session_id.to_owned());
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        let answered = db::query(&dialect.sql(
                            "UPDATE sessions SET answered_seq = ? WHERE id = ? AND answered_seq < ?",
                        ))
                        .bind(message_seq)
                        .bind(&id)
                        .bind(message_seq)
                        .execute(&mut *conn)
                        .await?;
                        if answered != 1 {
                            return Err(StoreError::Conflict(format!(
                                "message {message_seq} of session '{id}' is answered already"
                            )));
                        }
                        if let Some(body) = &last_step {
                            insert_step(conn, dialect, &id, message_seq, "reply", body).await?;
                        }
                        let now = now_ms();
                        let (seq, _) = messages::next_seq(conn, dialect, &id, now).await?;
                        let reply = NewMessage {
                            content: events::without_nul(reply.content),
                            ..reply
                        };
                        let row = MessageRow::new(&id, seq, reply, now);
                        messages::insert(conn, dialect, &row).await?;
                        events::append(conn, dialect, &id, &events).await?;
                        Ok(row)
                    })
                },
                hook,
            )
            .await
    }

    /// Sets whether the agent works on the session; a change is a `state` event.
    pub async fn set_busy(&self, session_id: &str, busy: bool) -> Result<()> {
        let dialect = self.dialect;
        let id = session_id.to_owned();
        let hook = self.session_changed(session_id.to_owned());
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        if set_busy_in(conn, dialect, &id, busy).await? {
                            let row =
                                db::query(&dialect.sql("SELECT state FROM sessions WHERE id = ?"))
                                    .bind(&id)
                                    .fetch_one(&mut *conn)
                                    .await?;
                            let state = parse_state(&row)?;
                            events::append(conn, dialect, &id, &[NewEvent::state(state, busy)])
                                .await?;
                        }
                        Ok(())
                    })
                },
                hook,
            )
            .await
    }

    /// Clears the `busy` flag of every session (at start-up: no agent works
    /// yet; a crash may have left flags up). Returns the sessions cleared.
    pub async fn clear_busy(&self) -> Result<Vec<String>> {
        let rows = db::query("SELECT id FROM sessions WHERE busy <> 0")
            .fetch_all(&self.pool)
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.text("id")).collect::<Result<_>>()?;
        for id in &ids {
            self.set_busy(id, false).await?;
        }
        Ok(ids)
    }

    /// Sessions with a user message the agent has not answered yet (at
    /// start-up: the work a crash or a stop interrupted).
    pub async fn sessions_with_unanswered_messages(&self) -> Result<Vec<String>> {
        let rows = db::query(
            "SELECT DISTINCT s.id AS id FROM sessions s JOIN messages m ON m.session_id = s.id \
             WHERE s.state <> 'deleted' AND m.role = 'user' AND m.seq > s.answered_seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.text("id")).collect()
    }
}

/// Fails when message `message_seq` has its reply already.
async fn ensure_unanswered(
    conn: &mut Conn,
    dialect: Dialect,
    id: &str,
    message_seq: i64,
) -> Result<()> {
    let row = db::query(&dialect.sql("SELECT answered_seq FROM sessions WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("session", id))?;
    if row.i64("answered_seq")? >= message_seq {
        return Err(StoreError::Conflict(format!(
            "message {message_seq} of session '{id}' is answered already"
        )));
    }
    Ok(())
}
