//! Sessions and their lifecycle transitions.

use raworc_api::{SessionLimits, SessionNetwork, SessionState};

use crate::audit::{self, AuditRecord};
use crate::db::{self, Row};
use crate::events::{self, NewEvent};
use crate::messages::{self, MessageRow, NewMessage};
use crate::{new_id, now_ms, Conn, Dialect, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub owner: String,
    pub owner_type: String,
    pub name: Option<String>,
    pub state: SessionState,
    /// What the API last asked for; the operator converges `state` towards it.
    pub desired_state: SessionState,
    pub busy: bool,
    pub instructions: Option<String>,
    pub setup: Option<String>,
    pub metadata: serde_json::Value,
    pub secret_names: Vec<String>,
    pub parent_id: Option<String>,
    pub network: SessionNetwork,
    pub limits: SessionLimits,
    pub error: Option<String>,
    pub message_seq: i64,
    /// The `seq` of the last user message the agent has answered.
    pub answered_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_activity_at: i64,
    pub deleted_at: Option<i64>,
}

/// A session to create. Secrets arrive sealed (encrypted) by the caller.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub owner: String,
    pub owner_type: String,
    pub name: Option<String>,
    pub instructions: Option<String>,
    pub setup: Option<String>,
    pub metadata: serde_json::Value,
    pub sealed_secrets: Vec<(String, String)>,
    pub prompt: Option<String>,
    pub network: SessionNetwork,
    pub limits: SessionLimits,
}

/// Fields of `PUT /sessions/{id}`; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SessionPatch {
    pub name: Option<String>,
    pub instructions: Option<String>,
    pub setup: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// A fork of `parent_id` for a new owner.
#[derive(Debug, Clone)]
pub struct Remix {
    pub parent_id: String,
    pub owner: String,
    pub owner_type: String,
    /// Inherit instructions and setup.
    pub code: bool,
    /// Defaults to the parent's name.
    pub name: Option<String>,
    /// Becomes the child's first user message.
    pub prompt: Option<String>,
    pub metadata: serde_json::Value,
}

/// A lifecycle change asked for through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTransition {
    Pause,
    Resume,
    Close,
    Restore,
    Delete,
}

impl SessionTransition {
    fn verb(self) -> &'static str {
        match self {
            SessionTransition::Pause => "pause",
            SessionTransition::Resume => "resume",
            SessionTransition::Close => "close",
            SessionTransition::Restore => "restore",
            SessionTransition::Delete => "delete",
        }
    }

    /// The state a session in `from` moves to, or `None` when the change is illegal.
    /// A session that never started has no computer to stop, so it closes at once;
    /// everything else waits for the operator in a transitional state.
    pub fn target(self, from: SessionState) -> Option<SessionState> {
        use SessionState::*;
        match (self, from) {
            (_, Deleted) => None,
            (SessionTransition::Pause, Running | Paused) => Some(Paused),
            (SessionTransition::Resume, Paused | Running) => Some(Running),
            (SessionTransition::Close, Created | Errored) => Some(Closed),
            (SessionTransition::Close, Running | Paused | Starting) => Some(Closing),
            (SessionTransition::Restore, Closed | Errored) => Some(Starting),
            (SessionTransition::Delete, _) => Some(Deleted),
            _ => None,
        }
    }

    fn desired(self) -> SessionState {
        match self {
            SessionTransition::Pause => SessionState::Paused,
            SessionTransition::Resume | SessionTransition::Restore => SessionState::Running,
            SessionTransition::Close => SessionState::Closed,
            SessionTransition::Delete => SessionState::Deleted,
        }
    }
}

macro_rules! session_columns {
    () => {
        "id, owner, owner_type, name, state, desired_state, busy, instructions, setup, \
    metadata, secret_names, parent_id, error, message_seq, created_at, updated_at, last_activity_at, deleted_at, \
    network, limits, answered_seq"
    };
}

fn parse_state(s: &str) -> Result<SessionState> {
    SessionState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("session state '{s}'")))
}

fn from_row(row: &Row) -> Result<SessionRow> {
    let metadata: String = row.text("metadata")?;
    let secret_names: String = row.text("secret_names")?;
    Ok(SessionRow {
        id: row.text("id")?,
        owner: row.text("owner")?,
        owner_type: row.text("owner_type")?,
        name: row.opt_text("name")?,
        state: parse_state(&row.text("state")?)?,
        desired_state: parse_state(&row.text("desired_state")?)?,
        busy: row.i64("busy")? != 0,
        instructions: row.opt_text("instructions")?,
        setup: row.opt_text("setup")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("session metadata: {e}")))?,
        secret_names: serde_json::from_str(&secret_names)
            .map_err(|e| StoreError::Corrupt(format!("session secret names: {e}")))?,
        parent_id: row.opt_text("parent_id")?,
        network: {
            let n = row.text("network")?;
            SessionNetwork::parse(&n)
                .ok_or_else(|| StoreError::Corrupt(format!("session network '{n}'")))?
        },
        limits: serde_json::from_str(&row.text("limits")?)
            .map_err(|e| StoreError::Corrupt(format!("session limits: {e}")))?,
        error: row.opt_text("error")?,
        message_seq: row.i64("message_seq")?,
        answered_seq: row.i64("answered_seq")?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
        last_activity_at: row.i64("last_activity_at")?,
        deleted_at: row.opt_i64("deleted_at")?,
    })
}

pub(crate) async fn fetch(conn: &mut Conn, dialect: Dialect, id: &str) -> Result<SessionRow> {
    let sql = dialect.sql(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = ?"
    ));
    let row = db::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("session", id))?;
    from_row(&row)
}

/// The session `id` unless it is missing or deleted (both: not found).
pub(crate) async fn fetch_live(conn: &mut Conn, dialect: Dialect, id: &str) -> Result<SessionRow> {
    let s = fetch(conn, dialect, id).await?;
    if s.state == SessionState::Deleted {
        return Err(StoreError::not_found("session", id));
    }
    Ok(s)
}

/// Inserts a new session, with the `state` event of its first state.
async fn insert(conn: &mut Conn, dialect: Dialect, s: &SessionRow) -> Result<()> {
    let sql = dialect.sql(concat!(
        "INSERT INTO sessions (",
        session_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ));
    db::query(&sql)
        .bind(&s.id)
        .bind(&s.owner)
        .bind(&s.owner_type)
        .bind(&s.name)
        .bind(s.state.as_str())
        .bind(s.desired_state.as_str())
        .bind(i64::from(s.busy))
        .bind(&s.instructions)
        .bind(&s.setup)
        .bind(s.metadata.to_string())
        .bind(serde_json::Value::from(s.secret_names.clone()).to_string())
        .bind(&s.parent_id)
        .bind(&s.error)
        .bind(s.message_seq)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.last_activity_at)
        .bind(s.deleted_at)
        .bind(s.network.as_str())
        .bind(serde_json::to_string(&s.limits).unwrap_or_else(|_| "{}".into()))
        .bind(s.answered_seq)
        .execute(&mut *conn)
        .await?;
    // Its first state is an event, like every later one.
    events::append(conn, dialect, &s.id, &[NewEvent::state(s.state, s.busy)]).await?;
    Ok(())
}

async fn insert_secret(
    conn: &mut Conn,
    dialect: Dialect,
    session_id: &str,
    name: &str,
    sealed: &str,
) -> Result<()> {
    db::query(
        &dialect.sql("INSERT INTO session_secrets (session_id, name, sealed) VALUES (?, ?, ?)"),
    )
    .bind(session_id)
    .bind(name)
    .bind(sealed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Creates a session (and its first message, when a prompt is given) atomically.
    pub async fn create_session(
        &self,
        new: NewSession,
        audit: Option<AuditRecord>,
    ) -> Result<(SessionRow, Option<MessageRow>)> {
        let dialect = self.dialect;
        // The new session's id is known only inside the write: the hook
        // announces whatever session the write returns.
        let hub = self.announcer();
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        let now = now_ms();
                        let mut session = SessionRow {
                            id: new_id("session"),
                            owner: new.owner,
                            owner_type: new.owner_type,
                            name: new.name,
                            state: SessionState::Created,
                            desired_state: SessionState::Running,
                            busy: false,
                            instructions: new.instructions,
                            setup: new.setup,
                            metadata: new.metadata,
                            secret_names: new
                                .sealed_secrets
                                .iter()
                                .map(|(n, _)| n.clone())
                                .collect(),
                            parent_id: None,
                            network: new.network,
                            limits: new.limits,
                            error: None,
                            message_seq: 0,
                            answered_seq: 0,
                            created_at: now,
                            updated_at: now,
                            last_activity_at: now,
                            deleted_at: None,
                        };
                        let first = first_message(&mut session, new.prompt, now);
                        insert(conn, dialect, &session).await?;
                        for (name, sealed) in &new.sealed_secrets {
                            insert_secret(conn, dialect, &session.id, name, sealed).await?;
                        }
                        if let Some(m) = &first {
                            messages::insert(conn, dialect, m).await?;
                        }
                        // The id exists only now: the record of the create names it.
                        let audit = audit.map(|mut a| {
                            a.session_id.get_or_insert_with(|| session.id.clone());
                            a
                        });
                        audit::insert_if(conn, dialect, &audit).await?;
                        Ok((session, first))
                    })
                },
                Some(Box::new(
                    move |(s, _): &(SessionRow, Option<MessageRow>)| hub(&s.id),
                )),
            )
            .await
    }

    pub async fn get_session(&self, id: &str) -> Result<Option<SessionRow>> {
        let epoch = match &self.sessions {
            Some(cache) => match cache.get(id) {
                Some(row) => return Ok(Some(row)),
                None => Some(cache.epoch()),
            },
            None => None,
        };
        let sql = self
            .dialect
            .sql(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE id = ?"
            ))
            .into_owned();
        let row = db::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        let row = row.as_ref().map(from_row).transpose()?;
        if let (Some(cache), Some(epoch), Some(row)) = (&self.sessions, epoch, &row) {
            cache.fill(epoch, row);
        }
        Ok(row)
    }

    /// Newest first. Deleted sessions are listed only when asked for by state.
    pub async fn list_sessions(
        &self,
        owner: Option<(&str, &str)>,
        state: Option<SessionState>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<SessionRow>> {
        let mut sql = String::from(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE "
        ));
        sql.push_str(if state.is_some() {
            "state = ?"
        } else {
            "state <> 'deleted'"
        });
        if owner.is_some() {
            sql.push_str(" AND owner = ? AND owner_type = ?");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?");
        let sql = self.dialect.sql(&sql);
        let mut query = db::query(&sql);
        if let Some(s) = state {
            query = query.bind(s.as_str());
        }
        if let Some((name, kind)) = owner {
            query = query.bind(name).bind(kind);
        }
        let rows = query
            .bind(i64::from(limit))
            .bind(crate::sql_offset(offset))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Every session in one of `states`, oldest first: the operator's work list.
    pub async fn sessions_in_states(&self, states: &[SessionState]) -> Result<Vec<SessionRow>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; states.len()].join(", ");
        let sql = format!(
            "SELECT {} FROM sessions WHERE state IN ({marks}) ORDER BY created_at, id",
            session_columns!()
        );
        let sql = self.dialect.sql(&sql).into_owned();
        let mut query = db::query(&sql);
        for s in states {
            query = query.bind(s.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// The operator's report on a session's computer: moves it from `from`
    /// to `to` with `error` as the reason (cleared when `None`), only if it
    /// is still in `from`. False when the state changed meanwhile (the API
    /// won the race; the operator looks again).
    pub async fn observe_session(
        &self,
        id: &str,
        from: SessionState,
        to: SessionState,
        error: Option<String>,
    ) -> Result<bool> {
        let dialect = self.dialect;
        let hook = self.session_changed(id.to_owned());
        let id = id.to_owned();
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        let changed = db::query(&dialect.sql(
                            "UPDATE sessions SET state = ?, error = ?, updated_at = ? \
                             WHERE id = ? AND state = ?",
                        ))
                        .bind(to.as_str())
                        .bind(error)
                        .bind(now_ms())
                        .bind(&id)
                        .bind(from.as_str())
                        .execute(&mut *conn)
                        .await?;
                        if changed == 1 {
                            let s = fetch(conn, dialect, &id).await?;
                            events::append(conn, dialect, &id, &[NewEvent::state(to, s.busy)])
                                .await?;
                        }
                        Ok(changed == 1)
                    })
                },
                hook,
            )
            .await
    }

    /// Counts live sessions by state, for metrics.
    pub async fn count_sessions_by_state(&self) -> Result<Vec<(SessionState, i64)>> {
        let rows = db::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((parse_state(&r.text("state")?)?, r.i64("n")?)))
            .collect()
    }

    /// The sealed secrets of a session, for the runtime that injects them.
    pub async fn session_secrets(&self, id: &str) -> Result<Vec<(String, String)>> {
        let sql = self
            .dialect
            .sql("SELECT name, sealed FROM session_secrets WHERE session_id = ? ORDER BY name");
        let rows = db::query(&sql).bind(id).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.text("name")?, r.text("sealed")?)))
            .collect()
    }

    pub async fn update_session(
        &self,
        id: String,
        patch: SessionPatch,
        audit: Option<AuditRecord>,
    ) -> Result<SessionRow> {
        let dialect = self.dialect;
        let hook = self.session_changed(id.clone());
        self.writer
            .write_then(
                move |conn| {
                Box::pin(async move {
                    let mut s = fetch_live(conn, dialect, &id).await?;
                    if let Some(v) = patch.name {
                        s.name = Some(v);
                    }
                    if let Some(v) = patch.instructions {
                        s.instructions = Some(v);
                    }
                    if let Some(v) = patch.setup {
                        s.setup = Some(v);
                    }
                    if let Some(v) = patch.metadata {
                        s.metadata = v;
                    }
                    s.updated_at = now_ms();
                    db::query(&dialect.sql(
                        "UPDATE sessions SET name = ?, instructions = ?, setup = ?, metadata = ?, updated_at = ? WHERE id = ?",
                    ))
                    .bind(&s.name)
                    .bind(&s.instructions)
                    .bind(&s.setup)
                    .bind(s.metadata.to_string())
                    .bind(s.updated_at)
                    .bind(&s.id)
                    .execute(&mut *conn)
                    .await?;
                    audit::insert_if(conn, dialect, &audit).await?;
                    Ok(s)
                })
            },
                hook,
            )
            .await
    }

    /// Applies a lifecycle change, or fails with `InvalidState` (HTTP 409).
    pub async fn transition_session(
        &self,
        id: String,
        change: SessionTransition,
        audit: Option<AuditRecord>,
    ) -> Result<SessionRow> {
        let dialect = self.dialect;
        let hook = self.session_changed(id.clone());
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        let mut s = fetch_live(conn, dialect, &id).await?;
                        let to = change.target(s.state).ok_or(StoreError::InvalidState {
                            action: change.verb(),
                            state: s.state,
                        })?;
                        set_state(conn, dialect, &mut s, to, change.desired()).await?;
                        if change == SessionTransition::Delete {
                            db::query(
                                &dialect.sql("DELETE FROM session_secrets WHERE session_id = ?"),
                            )
                            .bind(&s.id)
                            .execute(&mut *conn)
                            .await?;
                            db::query(&dialect.sql(
                            "UPDATE sessions SET deleted_at = ?, secret_names = '[]' WHERE id = ?",
                        ))
                        .bind(s.updated_at)
                        .bind(&s.id)
                        .execute(&mut *conn)
                        .await?;
                            s.deleted_at = Some(s.updated_at);
                            s.secret_names.clear();
                        }
                        audit::insert_if(conn, dialect, &audit).await?;
                        Ok(s)
                    })
                },
                hook,
            )
            .await
    }

    /// Creates a child of `parent_id`. With `code = false` the child inherits
    /// neither instructions nor setup. Secrets are copied still sealed.
    pub async fn remix_session(
        &self,
        remix: Remix,
        audit: Option<AuditRecord>,
    ) -> Result<(SessionRow, Option<MessageRow>)> {
        let dialect = self.dialect;
        let Remix {
            parent_id,
            owner,
            owner_type,
            code,
            name,
            prompt,
            metadata,
        } = remix;
        let hub = self.announcer();
        self.writer
            .write_then(
                move |conn| {
                    Box::pin(async move {
                        let parent = fetch_live(conn, dialect, &parent_id).await?;
                        let now = now_ms();
                        let mut child = SessionRow {
                            id: new_id("session"),
                            owner,
                            owner_type,
                            name: name.or_else(|| parent.name.clone()),
                            state: SessionState::Created,
                            desired_state: SessionState::Running,
                            busy: false,
                            instructions: if code {
                                parent.instructions.clone()
                            } else {
                                None
                            },
                            setup: if code { parent.setup.clone() } else { None },
                            metadata,
                            secret_names: parent.secret_names.clone(),
                            parent_id: Some(parent.id.clone()),
                            network: parent.network,
                            limits: parent.limits,
                            error: None,
                            message_seq: 0,
                            answered_seq: 0,
                            created_at: now,
                            updated_at: now,
                            last_activity_at: now,
                            deleted_at: None,
                        };
                        let first = first_message(&mut child, prompt, now);
                        insert(conn, dialect, &child).await?;
                        db::query(&dialect.sql(
                            "INSERT INTO session_secrets (session_id, name, sealed) \
                         SELECT ?, name, sealed FROM session_secrets WHERE session_id = ?",
                        ))
                        .bind(&child.id)
                        .bind(&parent.id)
                        .execute(&mut *conn)
                        .await?;
                        if let Some(m) = &first {
                            messages::insert(conn, dialect, m).await?;
                        }
                        audit::insert_if(conn, dialect, &audit).await?;
                        Ok((child, first))
                    })
                },
                Some(Box::new(
                    move |(s, _): &(SessionRow, Option<MessageRow>)| hub(&s.id),
                )),
            )
            .await
    }
}

/// A new session's first message (seq 1) when it is created with a prompt.
fn first_message(session: &mut SessionRow, prompt: Option<String>, now: i64) -> Option<MessageRow> {
    let content = prompt?;
    session.message_seq = 1;
    Some(MessageRow::new(
        &session.id,
        1,
        NewMessage::user(content),
        now,
    ))
}

/// Runs `UPDATE sessions SET {set} WHERE id = ? {and}` on session `id`
/// (`set_args` bound first) and returns the updated row's `columns`: one
/// round trip where the database has `RETURNING`, an UPDATE then a SELECT
/// on MySQL. No row updated is `NotFound`.
pub(crate) async fn update_returning(
    conn: &mut Conn,
    dialect: Dialect,
    id: &str,
    set: &str,
    set_args: Vec<db::Value>,
    and: &str,
    columns: &str,
) -> Result<Row> {
    let update = format!("UPDATE sessions SET {set} WHERE id = ? {and}");
    fn bound<'q>(mut q: db::Query<'q>, args: &[db::Value], id: &str) -> db::Query<'q> {
        for a in args {
            q = q.bind(a.clone());
        }
        q.bind(id)
    }
    let row = if dialect == Dialect::MySql {
        let updated = bound(db::query(&update), &set_args, id)
            .execute(&mut *conn)
            .await?;
        if updated != 1 {
            return Err(StoreError::not_found("session", id));
        }
        db::query(&format!("SELECT {columns} FROM sessions WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    } else {
        let sql = dialect
            .sql(&format!("{update} RETURNING {columns}"))
            .into_owned();
        bound(db::query(&sql), &set_args, id)
            .fetch_optional(&mut *conn)
            .await?
    };
    row.ok_or_else(|| StoreError::not_found("session", id))
}

/// Moves `s` to `to`, guarded against a concurrent change of state.
pub(crate) async fn set_state(
    conn: &mut Conn,
    dialect: Dialect,
    s: &mut SessionRow,
    to: SessionState,
    desired: SessionState,
) -> Result<()> {
    let now = now_ms();
    let done = db::query(&dialect.sql(
        "UPDATE sessions SET state = ?, desired_state = ?, updated_at = ? WHERE id = ? AND state = ?",
    ))
    .bind(to.as_str())
    .bind(desired.as_str())
    .bind(now)
    .bind(&s.id)
    .bind(s.state.as_str())
    .execute(&mut *conn)
    .await?;
    if done != 1 {
        return Err(StoreError::Conflict(format!(
            "session '{}' changed state concurrently; retry",
            s.id
        )));
    }
    s.state = to;
    s.desired_state = desired;
    s.updated_at = now;
    events::append(conn, dialect, &s.id, &[NewEvent::state(to, s.busy)]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionState::*;

    #[test]
    fn lifecycle_rules() {
        assert_eq!(SessionTransition::Pause.target(Running), Some(Paused));
        assert_eq!(SessionTransition::Pause.target(Created), None);
        assert_eq!(SessionTransition::Resume.target(Paused), Some(Running));
        assert_eq!(SessionTransition::Close.target(Created), Some(Closed));
        assert_eq!(SessionTransition::Close.target(Running), Some(Closing));
        assert_eq!(SessionTransition::Close.target(Closed), None);
        assert_eq!(SessionTransition::Restore.target(Closed), Some(Starting));
        assert_eq!(SessionTransition::Restore.target(Running), None);
        assert_eq!(SessionTransition::Delete.target(Running), Some(Deleted));
        for t in [
            SessionTransition::Pause,
            SessionTransition::Resume,
            SessionTransition::Close,
            SessionTransition::Restore,
            SessionTransition::Delete,
        ] {
            assert_eq!(
                t.target(Deleted),
                None,
                "{t:?} must not revive a deleted session"
            );
        }
    }
}
