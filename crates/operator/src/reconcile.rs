//! One reconcile step: compare a session's row with its computer and make
//! one move towards agreement. Every state change goes through
//! [`Store::observe_session`], a compare-and-set: when the API changed the
//! row meanwhile, the change is dropped and the session's next step (the
//! API woke the operator) sees the new row.

use std::collections::BTreeMap;

use raworc_api::{SessionNetwork, SessionState};
use raworc_runtime::{ComputerSpec, ComputerState, Inherit, Network, RuntimeError};
use raworc_store::{SessionRow, Store, StoreError};

use crate::Shared;

/// Moves `s` from `from` to `to`; false when the row had moved on.
async fn observe(
    store: &Store,
    id: &str,
    from: SessionState,
    to: SessionState,
    error: Option<String>,
) -> Result<bool, StoreError> {
    let moved = store.observe_session(id, from, to, error.clone()).await?;
    if moved {
        match &error {
            Some(reason) => tracing::warn!(%from, %to, %reason, "session observed"),
            None => tracing::info!(%from, %to, "session observed"),
        }
    }
    Ok(moved)
}

pub(crate) async fn step(shared: &Shared, id: &str) -> Result<(), StoreError> {
    let row = shared.store.get_session(id).await?;
    let Some(s) = row.filter(|s| s.state != SessionState::Deleted) else {
        // Deleted, or a computer no session knows: processes and disk go —
        // once remixes of it that have not started yet have their copy.
        for child in shared
            .store
            .sessions_in_states(&[SessionState::Created, SessionState::Starting])
            .await?
            .into_iter()
            .filter(|c| c.parent_id.as_deref() == Some(id))
        {
            if let Err(reason) = inherit_disk(shared, &child).await {
                tracing::warn!(child = %child.id, %reason, "a remix could not take its disk");
            }
        }
        shared.release(id);
        if let Err(e) = shared.runtime.remove(id).await {
            tracing::warn!(error = %e, "removing a computer failed");
        }
        return Ok(());
    };
    let computer = match shared.runtime.state(id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading a computer's state failed");
            return Ok(());
        }
    };
    let up = matches!(computer, ComputerState::Running | ComputerState::Paused);
    match s.state {
        SessionState::Created => {
            if observe(&shared.store, id, s.state, SessionState::Starting, None).await? {
                start(shared, &s, SessionState::Starting).await?;
            }
        }
        SessionState::Starting => start(shared, &s, SessionState::Starting).await?,
        SessionState::Running | SessionState::Paused if !up => {
            // The computer died, or the control plane restarted without it.
            tracing::info!(state = %s.state, "computer is not running; starting it again");
            if observe(&shared.store, id, s.state, SessionState::Starting, None).await? {
                start(shared, &s, SessionState::Starting).await?;
            }
        }
        SessionState::Running if computer == ComputerState::Paused => {
            if let Err(e) = shared.runtime.resume(id).await {
                fail(shared, &s, format!("resuming the computer failed: {e}")).await?;
            }
        }
        SessionState::Paused if computer == ComputerState::Running => {
            if let Err(e) = shared.runtime.pause(id).await {
                fail(shared, &s, format!("pausing the computer failed: {e}")).await?;
            }
        }
        SessionState::Running | SessionState::Paused => {}
        SessionState::Closing => {
            let outcome = shared.runtime.stop(id).await;
            shared.release(id);
            match outcome {
                Ok(()) => {
                    observe(&shared.store, id, s.state, SessionState::Closed, None).await?;
                }
                Err(e) => fail(shared, &s, format!("stopping the computer failed: {e}")).await?,
            }
        }
        SessionState::Closed | SessionState::Errored if up => {
            if let Err(e) = shared.runtime.stop(id).await {
                tracing::warn!(error = %e, "stopping a computer failed");
            }
            shared.release(id);
        }
        SessionState::Closed | SessionState::Errored | SessionState::Deleted => {}
    }
    Ok(())
}

/// Puts `s` in `errored` with `reason`, and stops what is left of its computer.
async fn fail(shared: &Shared, s: &SessionRow, reason: String) -> Result<(), StoreError> {
    if let Err(e) = shared.runtime.stop(&s.id).await {
        tracing::warn!(error = %e, "stopping a failed computer failed");
    }
    shared.release(&s.id);
    observe(
        &shared.store,
        &s.id,
        s.state,
        SessionState::Errored,
        Some(reason),
    )
    .await?;
    Ok(())
}

/// Brings the computer of `s` (now in `from`, normally `starting`) up and
/// moves the session to `running`, or to `paused` when that is what it
/// asks for, or to `errored` with the reason.
async fn start(shared: &Shared, s: &SessionRow, from: SessionState) -> Result<(), StoreError> {
    let outcome = start_reserved(shared, s, from).await;
    // Whatever happened, the place held while starting is given back (a
    // computer that runs now counts by itself).
    shared.release(&s.id);
    outcome
}

async fn start_reserved(
    shared: &Shared,
    s: &SessionRow,
    from: SessionState,
) -> Result<(), StoreError> {
    let s = SessionRow {
        state: from,
        ..s.clone()
    };
    // A remix's disk first, before any wait: it is of the parent as it
    // was when the remix was asked for.
    if let Err(reason) = inherit_disk(shared, &s).await {
        return fail(shared, &s, reason).await;
    }
    if !wait_for_room(shared, &s.id).await {
        let reason = format!(
            "no room: this server runs at most {} computers at once",
            shared.config.max_running
        );
        return fail(shared, &s, reason).await;
    }
    let secrets = match open_secrets(shared, &s.id).await? {
        Ok(secrets) => secrets,
        Err(reason) => return fail(shared, &s, reason).await,
    };
    let spec = ComputerSpec {
        id: s.id.clone(),
        display: shared.config.display,
        setup: s.setup.clone(),
        instructions: s.instructions.clone(),
        secrets,
        limits: Some(raworc_runtime::Limits {
            memory_bytes: s.limits.memory_mb.map(|mb| mb << 20),
            pids: s.limits.pids,
            cpu_millicores: s.limits.millicores,
        }),
        network: match s.network {
            SessionNetwork::Egress => Network::Egress,
            SessionNetwork::None => Network::None,
        },
    };
    let outcome = {
        let _permit = shared.starts.acquire().await;
        shared.runtime.start(&spec).await
    };
    let ready = match outcome {
        Ok(ready) => ready,
        Err(RuntimeError::AlreadyRunning(_)) => {
            shared.release(&s.id);
            observe(&shared.store, &s.id, from, SessionState::Running, None).await?;
            return Ok(());
        }
        Err(e) => return fail(shared, &s, format!("the computer did not start: {e}")).await,
    };
    shared.release(&s.id);
    if let Some(setup) = ready.setup.filter(|r| r.exit_code != 0) {
        let reason = format!(
            "setup.sh exited with {}: {}",
            setup.exit_code, setup.output_tail
        );
        return fail(shared, &s, reason).await;
    }
    let to = if s.desired_state == SessionState::Paused {
        if let Err(e) = shared.runtime.pause(&s.id).await {
            return fail(shared, &s, format!("pausing the computer failed: {e}")).await;
        }
        SessionState::Paused
    } else {
        SessionState::Running
    };
    observe(&shared.store, &s.id, from, to, None).await?;
    Ok(())
}

/// A remixed session's first start: its disk starts as its parent's.
async fn inherit_disk(shared: &Shared, s: &SessionRow) -> Result<(), String> {
    let (Some(parent), Some(remix)) = (&s.parent_id, s.metadata.get("remix")) else {
        return Ok(());
    };
    let has_disk = !matches!(shared.runtime.state(&s.id).await, Ok(ComputerState::Absent));
    if has_disk {
        return Ok(());
    }
    let inherit = Inherit {
        data: remix.get("data").and_then(|v| v.as_bool()).unwrap_or(true),
        code: remix.get("code").and_then(|v| v.as_bool()).unwrap_or(true),
    };
    shared
        .runtime
        .fork(parent, &s.id, inherit)
        .await
        .map_err(|e| format!("the parent's disk could not be copied: {e}"))
}

/// Waits until there is room for one more running computer, or gives up.
async fn wait_for_room(shared: &Shared, id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + shared.config.room_wait;
    loop {
        let stepped = shared.stepped.notified();
        tokio::pin!(stepped);
        stepped.as_mut().enable();
        if shared.reserve(id) {
            return true;
        }
        if tokio::time::timeout_at(deadline, stepped).await.is_err() {
            return shared.reserve(id);
        }
    }
}

/// The session's secrets in clear, or why they cannot be opened.
async fn open_secrets(
    shared: &Shared,
    id: &str,
) -> Result<Result<BTreeMap<String, String>, String>, StoreError> {
    let sealed = shared.store.session_secrets(id).await?;
    let mut open = BTreeMap::new();
    for (name, sealed) in sealed {
        match shared.secrets.open(&name, &sealed) {
            Ok(value) => {
                open.insert(name, value);
            }
            Err(e) => return Ok(Err(format!("secret {name} cannot be opened: {e}"))),
        }
    }
    Ok(Ok(open))
}
