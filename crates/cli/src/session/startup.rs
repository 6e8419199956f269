//! What to ask of a session that is not `running` yet, decided from its
//! row alone so that the waiting loop stays simple and testable.

use anyhow::Result;
use raworc_api::{Session, SessionState};

/// What to do about a session that is not `running` yet.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Move {
    Ready,
    Wait(&'static str),
    Restore,
    Resume,
}

/// The changes already asked for, each asked at most once.
#[derive(Debug, Default)]
pub(super) struct Asked {
    restore: bool,
    resume: bool,
}

/// The next step towards a running session, from its current row.
/// `may_restore_errored`: the user asked to restore this session (`-r`),
/// so an errored one is started again rather than reported.
pub(super) fn next_move(s: &Session, asked: &mut Asked, may_restore_errored: bool) -> Result<Move> {
    let id = &s.id;
    Ok(match s.state {
        SessionState::Running => Move::Ready,
        SessionState::Created | SessionState::Starting => Move::Wait("starting the computer…"),
        SessionState::Closing => Move::Wait("waiting for the computer to stop…"),
        SessionState::Paused if !asked.resume => {
            asked.resume = true;
            Move::Resume
        }
        SessionState::Closed if !asked.restore => {
            asked.restore = true;
            Move::Restore
        }
        SessionState::Errored if may_restore_errored && !asked.restore => {
            asked.restore = true;
            Move::Restore
        }
        SessionState::Errored => anyhow::bail!(
            "session {id} failed: {}",
            s.error.as_deref().unwrap_or("no reason given")
        ),
        SessionState::Deleted => anyhow::bail!("session {id} was deleted"),
        SessionState::Paused | SessionState::Closed => {
            anyhow::bail!("session {id} was {} while starting", s.state)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn session(state: SessionState) -> Session {
        serde_json::from_value(json!({
            "id": "s1", "name": null, "state": state, "busy": false, "owner": "admin",
            "instructions": null, "setup": null, "secrets": [], "metadata": {},
            "parent_id": null, "network": "none", "limits": {},
            "error": if state == SessionState::Errored { json!("setup failed") } else { Value::Null },
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn sessions_are_brought_to_running() {
        use SessionState::*;
        let mv = |state, asked: &mut Asked, restore| next_move(&session(state), asked, restore);
        let fresh = &mut Asked::default();
        assert_eq!(mv(Running, fresh, false).unwrap(), Move::Ready);
        assert!(matches!(mv(Created, fresh, false).unwrap(), Move::Wait(_)));
        assert!(matches!(mv(Starting, fresh, false).unwrap(), Move::Wait(_)));
        assert!(matches!(mv(Closing, fresh, false).unwrap(), Move::Wait(_)));

        let asked = &mut Asked::default();
        assert_eq!(mv(Closed, asked, false).unwrap(), Move::Restore);
        let e = mv(Closed, asked, false).unwrap_err().to_string();
        assert_eq!(e, "session s1 was closed while starting");
        let asked = &mut Asked::default();
        assert_eq!(mv(Paused, asked, false).unwrap(), Move::Resume);
        assert!(mv(Paused, asked, false).is_err());

        // Errored: restored when the user asked for a restore, once.
        let asked = &mut Asked::default();
        assert_eq!(mv(Errored, asked, true).unwrap(), Move::Restore);
        let e = mv(Errored, asked, true).unwrap_err().to_string();
        assert_eq!(e, "session s1 failed: setup failed");
        let e = mv(Errored, &mut Asked::default(), false).unwrap_err();
        assert_eq!(e.to_string(), "session s1 failed: setup failed");
        let e = mv(Deleted, &mut Asked::default(), true).unwrap_err();
        assert_eq!(e.to_string(), "session s1 was deleted");
    }
}
