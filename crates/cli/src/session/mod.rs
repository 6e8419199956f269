//! `raworc session`: talk to a session's agent from a terminal or a script.
//!
//! It creates a session (or restores, attaches to or remixes one), waits
//! until its computer runs, then posts each prompt as a user message and
//! shows the agent's steps live from the session's server-sent event stream
//! until the `complete` event that answers it. The stream is opened once,
//! before anything is asked of the session, and kept open (reconnecting with
//! `Last-Event-ID` when it breaks), so no event is missed or shown twice.
//!
//! The reply goes to stdout; steps, status and the prompt go to stderr, so
//! `raworc session -p '…' > reply.txt` keeps only the reply.

mod args;
mod remote;
mod render;
mod shell;
mod startup;
mod stream;

use std::io::IsTerminal;

use anyhow::{Context as _, Result};
use raworc_api::{Session, SessionState};
use reqwest::Method;
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

pub use args::{expand_args, SessionArgs};

use crate::auth;
use crate::http;
use crate::Context;
use args::{Plan, Target};
use remote::Remote;
use render::{Style, Ui};
use shell::{Flow, Shell, HELP};
use stream::Events;

/// `raworc session`.
pub async fn session(ctx: &Context, args: SessionArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    let (server, _cfg, token) = auth::logged_in(ctx)?;
    let interactive = std::io::stdin().is_terminal();
    let sigint = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut remote = Remote {
        http: http::client()?,
        base: server,
        token,
        path: String::new(),
    };
    let mut ui = Ui::new();

    let (session, after, may_restore_errored) = match plan.target {
        Target::New(body) => {
            let mut body = serde_json::to_value(&*body).context("cannot encode the session")?;
            if let Value::Object(fields) = &mut body {
                // Only what was given: the server's defaults for the rest.
                fields.retain(|_, v| !v.is_null());
            }
            let s: Session = remote
                .call(Method::POST, "/api/v0/sessions", Some(&body))
                .await
                .context("cannot create the session")?;
            ui.say(Style::Dim, &format!("Created session {}", s.id));
            (s, 0, false)
        }
        Target::Restore(id) => {
            remote.at(&id);
            let s = remote.session().await?;
            let after = remote.latest_event().await?;
            if !interactive || s.state != SessionState::Running {
                ui.say(Style::Dim, &format!("Session {} is {}", s.id, s.state));
            }
            (s, after, true)
        }
        Target::Remix { parent, body } => {
            remote.at(&parent);
            let body = serde_json::to_value(&body).context("cannot encode the remix")?;
            let s: Session = remote
                .post("/remix", body)
                .await
                .with_context(|| format!("cannot remix session {parent}"))?;
            ui.say(
                Style::Dim,
                &format!("Remixed session {parent} into session {}", s.id),
            );
            (s, 0, false)
        }
    };
    remote.at(&session.id);
    let mut shell = Shell {
        remote,
        // The model's text as it streams feeds the spinner's line (terminals only).
        events: Events::after(after).with_deltas(ui.tty),
        ui,
        sigint,
        id: session.id.clone(),
        state: session.state.as_str().to_string(),
    };
    // The stream opens before the session's state is read, so no change
    // between the two is missed.
    shell.events.connect(&shell.remote).await?;

    let mut flow = shell.until_running(may_restore_errored).await?;
    if flow == Flow::Go {
        if interactive {
            let text = format!("Session {} is running.\n{HELP}", shell.id);
            shell.ui.say(Style::Dim, &text);
        }
        if let Some(prompt) = &plan.prompt {
            flow = shell.ask(prompt).await?;
        }
        // A script's one prompt is answered; anything else reads stdin.
        let only_prompt = plan.prompt.is_some() && !interactive;
        if flow == Flow::Go && !only_prompt {
            flow = shell.prompt_loop(interactive).await?;
        }
    }
    if interactive {
        let text = format!(
            "Left session {id} (still {state}); come back with: raworc session -r {id}",
            id = shell.id,
            state = shell.state
        );
        shell.ui.say(Style::Dim, &text);
        return Ok(());
    }
    match flow {
        Flow::Go => Ok(()),
        Flow::Leave => anyhow::bail!("interrupted; session {} goes on", shell.id),
    }
}
