//! Idle timeouts: a running session nobody has used for a while is paused,
//! and later closed (its disk kept), as if its owner had asked.
//!
//! Use is a message (the row's `last_activity_at`), a lifecycle change
//! (`updated_at`), or a call on its computer or desktop, which the server
//! reports with [`crate::Operator::touch`] (kept in memory: a call per
//! screenshot must not cost a database write). A restart of the control
//! plane counts as use, so that nothing is paused for time it was away.
//! Each change goes into the audit log with `operator` as its author.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raworc_api::SessionState;
use raworc_store::{AuditRecord, SessionRow, SessionTransition, StoreError};

use crate::Shared;

/// When sessions were last used, beyond what their rows say.
#[derive(Debug)]
pub(crate) struct Activity {
    touched: Mutex<HashMap<String, i64>>,
    /// The operator's start, in ms since the epoch.
    started: i64,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            touched: Mutex::default(),
            started: now_ms(),
        }
    }

    pub fn touch(&self, id: &str) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        if touched.len() > 100_000 {
            touched.clear();
        }
        touched.insert(id.to_owned(), now_ms());
    }

    /// When `s` was last used.
    fn last_use(&self, s: &SessionRow) -> i64 {
        let touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        [
            s.last_activity_at,
            s.updated_at,
            self.started,
            touched.get(&s.id).copied().unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// What an idle session is due for, if anything.
fn due(
    state: SessionState,
    idle: Duration,
    pause: Option<Duration>,
    close: Option<Duration>,
) -> Option<SessionTransition> {
    let live = matches!(state, SessionState::Running | SessionState::Paused);
    if live && close.is_some_and(|c| idle >= c) {
        return Some(SessionTransition::Close);
    }
    if state == SessionState::Running && pause.is_some_and(|p| idle >= p) {
        return Some(SessionTransition::Pause);
    }
    None
}

/// Pauses or closes the idle sessions among `sessions`; the ids changed.
pub(crate) async fn enforce(shared: &Shared, sessions: &[SessionRow]) -> Vec<String> {
    let (pause, close) = (shared.config.idle_pause, shared.config.idle_close);
    if pause.is_none() && close.is_none() {
        return Vec::new();
    }
    let now = now_ms();
    let mut changed = Vec::new();
    for s in sessions {
        // A session whose agent is at work is in use, however long it thinks.
        if s.busy {
            continue;
        }
        let idle = Duration::from_millis((now - shared.activity.last_use(s)).max(0) as u64);
        let Some(change) = due(s.state, idle, pause, close) else {
            continue;
        };
        // Recorded like the same change asked through the API, with the
        // operator as its author.
        let (action, target) = match change {
            SessionTransition::Pause => (
                "PUT /api/v0/sessions/{id}/state",
                format!("/api/v0/sessions/{}/state", s.id),
            ),
            _ => (
                "POST /api/v0/sessions/{id}/close",
                format!("/api/v0/sessions/{}/close", s.id),
            ),
        };
        let record = AuditRecord {
            at: now,
            principal: "operator".into(),
            principal_type: None,
            action: action.into(),
            target,
            session_id: Some(s.id.clone()),
            outcome: 200,
            request_id: String::new(),
        };
        match shared
            .store
            .transition_session(s.id.clone(), change, Some(record))
            .await
        {
            Ok(_) => {
                tracing::info!(session = %s.id, ?change, idle_s = idle.as_secs(), "idle session");
                changed.push(s.id.clone());
            }
            // Changed meanwhile by its owner: their change stands.
            Err(StoreError::InvalidState { .. } | StoreError::Conflict(_)) => {}
            // One session's failure does not hold up the others' sweep.
            Err(e) => tracing::warn!(session = %s.id, error = %e, "idle timeout not applied"),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionState::*;

    #[test]
    fn running_sessions_pause_then_close_and_nothing_else_moves() {
        let s = Duration::from_secs;
        let (p, c) = (Some(s(60)), Some(s(600)));
        assert_eq!(due(Running, s(59), p, c), None);
        assert_eq!(due(Running, s(60), p, c), Some(SessionTransition::Pause));
        assert_eq!(due(Paused, s(300), p, c), None);
        assert_eq!(due(Paused, s(600), p, c), Some(SessionTransition::Close));
        assert_eq!(due(Running, s(601), p, c), Some(SessionTransition::Close));
        assert_eq!(due(Running, s(10_000), None, None), None);
        assert_eq!(
            due(Running, s(10_000), None, c),
            Some(SessionTransition::Close)
        );
        for other in [Created, Starting, Closing, Closed, Errored, Deleted] {
            assert_eq!(due(other, s(10_000), p, c), None, "{other}");
        }
    }
}
