//! One run of `raworc session` once its session exists: waiting for the
//! computer, asking and showing the agent's steps until the reply, and the
//! prompt loop on stdin.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use raworc_api::{Cancelled, Count, Event, Message, Session, SessionState};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;

use super::remote::Remote;
use super::render::{describe_tool_result, describe_tool_use, printable, Style, Ui};
use super::startup::{next_move, Asked, Move};
use super::stream::Events;

/// How long a session may take to reach `running` before the CLI gives up.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the spinner moves.
const SPIN_EVERY: Duration = Duration::from_millis(100);

/// Leaving by Ctrl-C rather than by `/quit` or the end of input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Go,
    Leave,
}

/// One run of `raworc session`, once its session exists.
pub(super) struct Shell {
    pub(super) remote: Remote,
    pub(super) events: Events,
    pub(super) ui: Ui,
    pub(super) sigint: Signal,
    pub(super) id: String,
    /// The session's state as last seen.
    pub(super) state: String,
}

impl Shell {
    /// Waits until the session is `running`, restoring or resuming it
    /// when it is closed or paused.
    pub(super) async fn until_running(&mut self, may_restore_errored: bool) -> Result<Flow> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut asked = Asked::default();
        let mut tick = spinner_clock();
        loop {
            let s = self.remote.session().await?;
            self.state = s.state.as_str().to_string();
            match next_move(&s, &mut asked, may_restore_errored)? {
                Move::Ready => {
                    self.ui.clear();
                    return Ok(Flow::Go);
                }
                Move::Restore => {
                    self.ui.status("restoring the computer…");
                    let _: Session = self
                        .remote
                        .post("/restore", json!({}))
                        .await
                        .with_context(|| format!("cannot restore session {}", self.id))?;
                    continue;
                }
                Move::Resume => {
                    self.ui.status("resuming the computer…");
                    let path = format!("{}/state", self.remote.path);
                    let body = json!({"state": "running"});
                    let _: Session = self
                        .remote
                        .call(Method::PUT, &path, Some(&body))
                        .await
                        .with_context(|| format!("cannot resume session {}", self.id))?;
                    continue;
                }
                Move::Wait(what) => self.ui.status(what),
            }
            // Until the session's state changes.
            loop {
                tokio::select! {
                    _ = self.sigint.recv() => {
                        self.ui.clear();
                        return Ok(Flow::Leave);
                    }
                    e = self.events.next(&self.remote) => {
                        if e?.kind == "state" {
                            break;
                        }
                    }
                    _ = tick.tick(), if self.ui.tty => self.ui.spin(started),
                    _ = tokio::time::sleep_until(deadline) => {
                        self.ui.clear();
                        anyhow::bail!(
                            "session {} did not start within {} minutes (it is {})",
                            self.id,
                            START_TIMEOUT.as_secs() / 60,
                            self.state
                        );
                    }
                }
            }
        }
    }

    /// Posts `content` as a user message and shows the agent's steps until
    /// its reply, which is printed to stdout. Ctrl-C cancels the agent's
    /// work; a second one leaves.
    pub(super) async fn ask(&mut self, content: &str) -> Result<Flow> {
        let message: Message = self
            .remote
            .post("/messages", json!({ "content": content }))
            .await
            .context("cannot send the message")?;
        let started = Instant::now();
        let mut tick = spinner_clock();
        let mut cancelling = false;
        // The latest `text`, held back in case it is the reply itself.
        let mut pending: Option<String> = None;
        let mut live_shown = false;
        self.set_working_status();
        loop {
            tokio::select! {
                _ = self.sigint.recv() => {
                    if cancelling {
                        self.ui.clear();
                        return Ok(Flow::Leave);
                    }
                    cancelling = true;
                    self.ui.say(Style::Yellow, "cancelling… (Ctrl-C again to leave)");
                    self.ui.quiet_status("cancelling…");
                    let cancel: Result<Cancelled> = self.remote.post("/cancel", json!({})).await;
                    if let Err(e) = cancel {
                        self.ui.say(Style::Red, &format!("cannot cancel: {e:#}"));
                    }
                }
                e = self.events.next(&self.remote) => {
                    let event = e?;
                    if let Some(reply) = self.show(event, message.seq, &mut pending).await? {
                        self.ui.clear();
                        print_reply(&reply)?;
                        return Ok(Flow::Go);
                    }
                }
                _ = tick.tick(), if self.ui.tty => {
                    if !cancelling {
                        live_shown = self.show_live(live_shown);
                    }
                    self.ui.spin(started);
                }
            }
        }
    }

    /// Puts the end of the model's text as it streams on the spinner's
    /// line; back to the usual status once its turn is stored. Returns
    /// whether live text is shown.
    fn show_live(&mut self, shown: bool) -> bool {
        match self.events.live() {
            Some(live) => {
                let what = if live.thinking { "thinking" } else { "writing" };
                let status = format!("{what}: {}", live_tail(&live.text));
                self.ui.quiet_status(&status);
                true
            }
            None => {
                if shown {
                    self.set_working_status();
                }
                false
            }
        }
    }

    fn set_working_status(&mut self) {
        if self.state == SessionState::Running.as_str() {
            self.ui.quiet_status("working…");
        } else {
            let status = format!("waiting for the computer (the session is {})…", self.state);
            self.ui.status(&status);
        }
    }

    /// Shows one event; returns the reply when it is the `complete` event
    /// that answers message `seq`.
    async fn show(
        &mut self,
        event: Event,
        seq: i64,
        pending: &mut Option<String>,
    ) -> Result<Option<String>> {
        let flush = |ui: &mut Ui, pending: &mut Option<String>| {
            if let Some(text) = pending.take() {
                ui.say(Style::Dim, text.trim_end());
            }
        };
        match event.kind.as_str() {
            "text" => {
                flush(&mut self.ui, pending);
                *pending = Some(event.content);
            }
            "thinking" => {
                flush(&mut self.ui, pending);
                let text = format!("thinking: {}", event.content.trim());
                self.ui.say(Style::Dim, &text);
            }
            "tool_use" => {
                flush(&mut self.ui, pending);
                let line = describe_tool_use(&event.metadata, &event.content);
                self.ui.step("→", Style::Cyan, &line);
            }
            "tool_result" => {
                flush(&mut self.ui, pending);
                let (failed, line) = describe_tool_result(&event);
                if failed {
                    self.ui.step("✗", Style::Red, &line);
                } else {
                    self.ui.step("✓", Style::Green, &line);
                }
            }
            "error" => {
                flush(&mut self.ui, pending);
                let text = format!("error: {}", event.content.trim());
                self.ui.say(Style::Red, &text);
            }
            "complete" => {
                let answers = event.metadata.get("reply_to").and_then(Value::as_i64) == Some(seq);
                if !answers {
                    flush(&mut self.ui, pending);
                    self.ui
                        .say(Style::Dim, "(the agent answered an earlier message)");
                    return Ok(None);
                }
                // The model's last text is usually the reply: show it once.
                if let Some(text) = pending.take() {
                    if text.trim() != event.content.trim() {
                        self.ui.say(Style::Dim, text.trim_end());
                    }
                }
                return Ok(Some(event.content));
            }
            "state" => self.state_changed(&event.content).await?,
            _ => {}
        }
        Ok(None)
    }

    /// Follows the session's state while the agent works: a failed or
    /// deleted session ends the command; other changes are shown.
    async fn state_changed(&mut self, state: &str) -> Result<()> {
        match SessionState::parse(state) {
            Some(SessionState::Errored) => {
                // The event may be old news: the row says what holds now.
                let s = self.remote.session().await?;
                if s.state == SessionState::Errored {
                    self.ui.clear();
                    anyhow::bail!(
                        "session {} failed: {}",
                        self.id,
                        s.error.as_deref().unwrap_or("no reason given")
                    );
                }
            }
            Some(SessionState::Deleted) => {
                self.ui.clear();
                anyhow::bail!("session {} was deleted", self.id);
            }
            _ => {}
        }
        if state != self.state {
            self.state = state.to_string();
            self.ui
                .say(Style::Dim, &format!("· the session is {state}"));
            self.set_working_status();
        }
        Ok(())
    }

    /// `/status`: the session's id, state, whether the agent works, and
    /// how many messages it has.
    async fn status(&mut self) -> Result<()> {
        let s = self.remote.session().await?;
        let count: Count = self
            .remote
            .call(
                Method::GET,
                &format!("{}/messages/count", self.remote.path),
                None,
            )
            .await?;
        self.state = s.state.as_str().to_string();
        let mut text = format!("id:       {}\n", s.id);
        if let Some(name) = &s.name {
            text.push_str(&format!("name:     {name}\n"));
        }
        text.push_str(&format!(
            "state:    {}\nbusy:     {}\nmessages: {}\n",
            s.state, s.busy, count.count
        ));
        if let Some(error) = &s.error {
            text.push_str(&format!("error:    {error}\n"));
        }
        self.ui.clear();
        print_out(&text)
    }

    /// Reads prompts from stdin until `/quit`, the end of input or Ctrl-C.
    pub(super) async fn prompt_loop(&mut self, interactive: bool) -> Result<Flow> {
        let mut lines = stdin_lines();
        loop {
            if interactive {
                self.ui.prompt();
            }
            let line = tokio::select! {
                _ = self.sigint.recv() => {
                    if interactive {
                        let _ = writeln!(std::io::stderr());
                    }
                    return Ok(Flow::Leave);
                }
                line = lines.recv() => line,
            };
            let Some(line) = line else {
                if interactive {
                    let _ = writeln!(std::io::stderr());
                }
                return Ok(Flow::Go);
            };
            let line = line.context("cannot read stdin")?;
            match line.trim() {
                "" => {}
                "/quit" | "/exit" => return Ok(Flow::Go),
                "/status" => self.status().await?,
                "/help" => self.ui.say(Style::Plain, HELP),
                text => {
                    if self.ask(text).await? == Flow::Leave {
                        return Ok(Flow::Leave);
                    }
                }
            }
        }
    }
}

pub(super) const HELP: &str =
    "Type a message for the agent. Commands: /status (the session's state), \
/quit (or Ctrl-D) to leave; Ctrl-C stops the agent's work, twice leaves.";

fn spinner_clock() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(SPIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Lines of stdin, read on a thread of their own: a read of the terminal
/// cannot be cancelled, and Ctrl-C must still be noticed at the prompt.
fn stdin_lines() -> mpsc::UnboundedReceiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut buf = Vec::new();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if tx.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// The reply, whole, on stdout.
fn print_reply(text: &str) -> Result<()> {
    let mut text = text.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    print_out(&text)
}

/// Writes to stdout (defused for a terminal, as it is for a pipe); a
/// reader that went away (`| head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let text = if stdout.is_terminal() {
        printable(text)
    } else {
        text.to_string()
    };
    let mut out = stdout.lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// The last words of `text` on one line: the spinner shows what the model
/// writes now (the line is cut to the terminal's width from the start).
fn live_tail(text: &str) -> String {
    const KEEP: usize = 60;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = flat.chars().count();
    if count <= KEEP {
        return flat;
    }
    let tail: String = flat.chars().skip(count - KEEP).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::live_tail;

    #[test]
    fn the_live_tail_is_the_last_words_on_one_line() {
        assert_eq!(live_tail("Let me\n  look."), "Let me look.");
        let long = "word ".repeat(30);
        let tail = live_tail(&long);
        assert!(tail.starts_with('…') && tail.ends_with("word"), "{tail}");
        assert_eq!(tail.chars().count(), 61);
    }
}
