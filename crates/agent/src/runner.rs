//! The agent loop of one session: its user messages one at a time, in
//! `seq` order, each answered exactly once.
//!
//! Per message: bring the computer up if it is not (a closed session is
//! restored, a paused one resumed), then turn after turn — the model's turn
//! is stored (with its events) before any of its tools runs, each tool's
//! result is stored as it finishes — until the model stops asking for
//! tools, the steps run out or the user cancels. A tool call that a turn
//! stopped by its token limit ends in may be incomplete: it is answered as
//! cut off ([`CUT_TOOL`]), never run. The reply, the message's
//! "answered" mark and the `complete` event commit together. Everything
//! is read back from the store at each turn, so a restarted server goes on
//! where the last one stopped; a tool whose call is stored but whose result
//! is not was interrupted and is answered as such, never run again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raworc_api::SessionState;
use raworc_host::client::HostClient;
use raworc_store::{event_kind, MessageRow, NewEvent, NewMessage, SessionRow, SessionTransition};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::context::{self, step};
use crate::provider::{Delta, ModelRequest};
use crate::redact::Redactor;
use crate::tools::{ToolOutcome, ToolSet, Tools};
use crate::wire::{Block, KnownBlock, StopReason, ToolResultContent, Turn, Usage};
use crate::Shared;

/// What a tool whose run a crash, a stop or a failure interrupted is answered with.
pub const INTERRUPTED: &str = "The tool was interrupted before it returned (the server \
restarted or failed); it may or may not have taken effect. Check the state before retrying.";
/// User messages (with the agent's steps for them) the model is shown.
const HISTORY_MESSAGES: u32 = 20;
/// What an empty final turn of the model is answered with.
const NO_REPLY: &str = "(The model ended its turn without a reply.)";
/// What a tool skipped because the user cancelled is answered with.
pub const CANCELLED_TOOL: &str = "Not run: the user cancelled the task.";
/// What the tool call a turn ended in when it hit its token limit is
/// answered with: its input may be incomplete (even when it parses), so it
/// is never run, and the model is told how to go on.
pub const CUT_TOOL: &str = "Not run: this tool call was cut off at the reply's token limit \
(max_tokens) before its input was complete. Make the call again with less input, or split \
the work into several smaller calls.";

/// A request to stop the current message's work at its next step.
#[derive(Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub(crate) fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.flag.store(false, Ordering::SeqCst);
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Answers the session's unanswered user messages, then returns.
pub(crate) async fn work(shared: &Shared, id: &str, cancel: &Cancel) -> raworc_store::Result<()> {
    loop {
        let Some(session) = shared.store.get_session(id).await? else {
            return Ok(());
        };
        if session.state == SessionState::Deleted {
            // Screenshots a step took while the session was being deleted.
            shared.shots.remove_session(id).await;
            return Ok(());
        }
        let Some(message) = shared
            .store
            .next_user_message(id, session.answered_seq)
            .await?
        else {
            shared.store.set_busy(id, false).await?;
            return Ok(());
        };
        shared.store.set_busy(id, true).await?;
        let answer = Answer {
            shared,
            session: &session,
            message: &message,
            cancel,
            started: Instant::now(),
            usage: Usage::default(),
            model_turns: 0,
            model_attempts: 0,
            model_name: shared.model.model().to_owned(),
        };
        answer.run().await?;
        cancel.reset();
    }
}

struct Answer<'a> {
    shared: &'a Shared,
    session: &'a SessionRow,
    message: &'a MessageRow,
    cancel: &'a Cancel,
    started: Instant,
    usage: Usage,
    model_turns: u32,
    /// Model calls made, retries included.
    model_attempts: u32,
    model_name: String,
}

/// Tool calls of the current message's last model turn that have no result yet.
fn missing_results(steps: &[raworc_store::StepRow]) -> Vec<(String, String)> {
    let Some(last) = steps.iter().rposition(|s| s.kind == step::ASSISTANT) else {
        return Vec::new();
    };
    let answered: Vec<&str> = steps[last + 1..]
        .iter()
        .filter(|s| s.kind == step::TOOL_RESULT)
        .filter_map(|s| s.body["tool_use_id"].as_str())
        .collect();
    let content: Vec<Block> = serde_json::from_value(steps[last].body.clone()).unwrap_or_default();
    content
        .iter()
        .filter_map(Block::as_tool_use)
        .filter(|(id, _, _)| !answered.contains(id))
        .map(|(id, name, _)| (id.to_owned(), name.to_owned()))
        .collect()
}

/// The id of the tool call a turn ended in, when the turn stopped at its
/// token limit: the call may have been cut anywhere in its input.
fn cut_call<'c>(content: &'c [Block], stop: &StopReason) -> Option<&'c str> {
    if *stop != StopReason::MaxTokens {
        return None;
    }
    content.last()?.as_tool_use().map(|(id, _, _)| id)
}

/// The text of the last model turn, when it is the message's last step
/// and asks for no tools: the model's answer, written before a crash took
/// the server down ahead of the reply.
fn finished_turn(steps: &[raworc_store::StepRow]) -> Option<String> {
    let last = steps.last().filter(|s| s.kind == step::ASSISTANT)?;
    let content: Vec<Block> = serde_json::from_value(last.body.clone()).ok()?;
    let turn = Turn::assistant(content);
    let asks_for_tools = turn.tool_uses().next().is_some();
    (!asks_for_tools).then(|| turn.text())
}

impl Answer<'_> {
    fn id(&self) -> &str {
        &self.session.id
    }

    async fn run(mut self) -> raworc_store::Result<()> {
        let host = tokio::select! {
            host = self.computer() => match host {
                Ok(host) => host,
                Err(reason) => return self.fail(&reason).await,
            },
            _ = self.cancel.wait() => {
                return self.finish("Stopped: the task was cancelled.".to_owned(), true).await;
            }
        };
        let redactor = Redactor::new(self.shared.hooks.session_secrets(self.id()).await);
        let toolset = ToolSet::for_model(
            self.shared.model.model(),
            self.shared.config.display_width,
            self.shared.config.display_height,
        );
        let tools = Tools {
            host: &host,
            shots: &self.shared.shots,
            session_id: &self.session.id,
            space: toolset.space(),
        };
        let system = context::system_prompt(
            self.session.instructions.as_deref(),
            toolset.display_width,
            toolset.display_height,
        );
        // Set after a paused turn, which the model goes on with.
        let mut paused = false;
        loop {
            // The conversation the model sees: the latest user messages and
            // the agent's steps for them.
            let messages = self
                .shared
                .store
                .recent_user_messages(self.id(), self.message.seq, HISTORY_MESSAGES)
                .await?;
            let first = messages.first().map_or(self.message.seq, |m| m.seq);
            let steps = self
                .shared
                .store
                .agent_steps(self.id(), first, self.message.seq)
                .await?;
            let mine: Vec<_> = steps
                .iter()
                .filter(|s| s.message_seq == self.message.seq)
                .cloned()
                .collect();
            let missing = missing_results(&mine);
            if !missing.is_empty() {
                // Stored calls without results: a crash or stop came between.
                for (tool_use_id, name) in missing {
                    self.record_result(&tool_use_id, &name, ToolOutcome::error(INTERRUPTED))
                        .await?;
                }
                continue;
            }
            if let Some(text) = finished_turn(&mine).filter(|_| !paused) {
                return self.finish(text, false).await;
            }
            paused = false;
            self.model_turns = mine.iter().filter(|s| s.kind == step::ASSISTANT).count() as u32;
            if self.cancel.is_set() {
                return self
                    .finish("Stopped: the task was cancelled.".to_owned(), true)
                    .await;
            }
            if self.model_turns >= self.shared.config.max_steps {
                let text = format!(
                    "Stopped after {} steps (the limit per message) before the task was done.",
                    self.model_turns
                );
                return self.finish(text, true).await;
            }
            let mut turns = context::conversation(&messages, &steps, self.message.seq);
            context::attach_images(
                &mut turns,
                &self.shared.shots,
                self.id(),
                self.shared.config.keep_images,
            )
            .await;
            // The turn's text and thinking go out live as they stream, placed
            // after the events stored so far (a store that fails to say
            // puts them first: they are only a preview).
            let after = self
                .shared
                .store
                .last_event_seq(self.id())
                .await
                .unwrap_or(0);
            let hooks = &self.shared.hooks;
            let session_id = self.session.id.as_str();
            let live = |delta: Delta| hooks.delta(session_id, after, &delta);
            let request = ModelRequest {
                system: &system,
                turns: &turns,
                tools: &toolset,
                deltas: Some(&live),
            };
            let reply = tokio::select! {
                r = self.shared.model.respond(request) => r,
                _ = self.cancel.wait() => continue,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.error_event("model", &e.to_string()).await?;
                    let text = format!("I could not reach the model: {e}");
                    return self.finish(text, true).await;
                }
            };
            self.usage.add(reply.usage);
            self.model_attempts += reply.attempts;
            if !reply.model.is_empty() {
                self.model_name = reply.model.clone();
            }
            // Labelled with the configured model: what a server answers is not trusted.
            self.shared.hooks.model_usage(
                self.shared.model.provider(),
                self.shared.model.model(),
                reply.usage,
            );
            let content = reply.content;
            let cut = cut_call(&content, &reply.stop_reason).map(str::to_owned);
            let events = turn_events(&content);
            self.shared
                .store
                .record_step(
                    self.id(),
                    self.message.seq,
                    step::ASSISTANT,
                    serde_json::to_value(&content).unwrap_or(Value::Null),
                    events,
                )
                .await?;
            self.model_turns += 1;
            let calls: Vec<(String, String, Value)> = content
                .iter()
                .filter_map(Block::as_tool_use)
                .map(|(i, n, v)| (i.to_owned(), n.to_owned(), v.clone()))
                .collect();
            if calls.is_empty() {
                if reply.stop_reason == StopReason::PauseTurn {
                    paused = true;
                    continue;
                }
                let text = Turn::assistant(content).text();
                return self.finish(text, false).await;
            }
            for (tool_use_id, name, input) in calls {
                let outcome = if cut.as_deref() == Some(tool_use_id.as_str()) {
                    ToolOutcome::error(CUT_TOOL)
                } else if self.cancel.is_set() {
                    ToolOutcome::error(CANCELLED_TOOL)
                } else {
                    self.shared.hooks.touch(self.id());
                    redactor.outcome(tools.run(&name, &input).await)
                };
                self.record_result(&tool_use_id, &name, outcome).await?;
            }
        }
    }

    async fn record_result(
        &self,
        tool_use_id: &str,
        name: &str,
        outcome: ToolOutcome,
    ) -> raworc_store::Result<()> {
        let block = Block::Known(KnownBlock::ToolResult {
            tool_use_id: tool_use_id.to_owned(),
            content: outcome.content.clone(),
            is_error: outcome.is_error,
        });
        let mut metadata = json!({
            "tool_use_id": tool_use_id,
            "name": name,
            "is_error": outcome.is_error,
        });
        if let Some(shot) = &outcome.shot {
            metadata["screenshot"] = json!(shot);
            metadata["image_url"] = json!(format!(
                "/api/v0/sessions/{}/screenshots/{shot}",
                self.session.id
            ));
        }
        let event = NewEvent::new(event_kind::TOOL_RESULT, outcome.text.clone(), metadata);
        self.shared
            .store
            .record_step(
                self.id(),
                self.message.seq,
                step::TOOL_RESULT,
                serde_json::to_value(&block).unwrap_or(Value::Null),
                vec![event],
            )
            .await?;
        Ok(())
    }

    /// Answers the message with `text`; `as_step` stores the text as the
    /// conversation's last turn too (when the model did not write it).
    async fn finish(&self, text: String, as_step: bool) -> raworc_store::Result<()> {
        // An empty answer is no answer: say so, and keep it in the conversation.
        let (text, as_step) = if text.trim().is_empty() {
            (NO_REPLY.to_owned(), true)
        } else {
            (text, as_step)
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let usage = serde_json::to_value(self.usage).unwrap_or(Value::Null);
        let metadata = json!({
            "reply_to": self.message.seq,
            "provider": self.shared.model.provider(),
            "model": self.model_name,
            "steps": self.model_turns,
            "model_attempts": self.model_attempts,
            "usage": usage,
            "duration_ms": duration_ms,
        });
        let reply = NewMessage {
            role: raworc_api::MessageRole::Assistant,
            content: text.clone(),
            metadata: metadata.clone(),
        };
        let complete = NewEvent::new(event_kind::COMPLETE, text.clone(), metadata);
        let step = as_step.then(|| json!({ "text": text }));
        match self
            .shared
            .store
            .finish_reply(self.id(), self.message.seq, reply, step, vec![complete])
            .await
        {
            Ok(_) => Ok(()),
            // Answered already (by a concurrent or earlier run): nothing to do.
            Err(raworc_store::StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records an `error` event; `source` says where it came from.
    async fn error_event(&self, source: &str, message: &str) -> raworc_store::Result<()> {
        let event = NewEvent::new(event_kind::ERROR, message, json!({ "source": source }));
        self.shared
            .store
            .append_events(self.id(), vec![event])
            .await?;
        Ok(())
    }

    /// Answers with an error: an `error` event and a reply that says why.
    async fn fail(&self, reason: &str) -> raworc_store::Result<()> {
        self.error_event("computer", reason).await?;
        self.finish(format!("I could not work on this: {reason}"), true)
            .await
    }

    /// The session's computer, started, resumed or restored first if need be.
    async fn computer(&self) -> Result<HostClient, String> {
        let shared = self.shared;
        let id = self.id();
        let Some(runtime) = &shared.runtime else {
            return Err("this server runs no computers (started with --runtime none)".into());
        };
        let deadline = Instant::now() + shared.config.computer_wait;
        let mut news = shared.store.subscribe_events();
        let mut asked = false;
        loop {
            let session = match shared.store.get_session(id).await {
                Ok(Some(s)) => s,
                Ok(None) => return Err("the session is gone".into()),
                Err(e) => return Err(format!("the store failed: {e}")),
            };
            let change = match session.state {
                SessionState::Running => match runtime.host(id) {
                    Ok(host) => return Ok(host),
                    Err(_) => None,
                },
                SessionState::Paused => Some(SessionTransition::Resume),
                SessionState::Closed => Some(SessionTransition::Restore),
                SessionState::Errored => {
                    return Err(format!(
                        "the session's computer failed: {}",
                        session.error.unwrap_or_else(|| "no reason given".into())
                    ))
                }
                SessionState::Deleted => return Err("the session was deleted".into()),
                SessionState::Created | SessionState::Starting | SessionState::Closing => None,
            };
            if let (Some(change), false) = (change, asked) {
                asked = true;
                if shared
                    .store
                    .transition_session(id.to_owned(), change, None)
                    .await
                    .is_ok()
                {
                    shared.hooks.wake_operator(id);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the computer was not running after {} s",
                    shared.config.computer_wait.as_secs()
                ));
            }
            // Woken by any change of the session (its state events), or
            // at the latest every second.
            let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), async {
                loop {
                    match news.recv().await {
                        Ok(s) if &*s == id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
        }
    }
}

/// The events that report a model turn: its thinking, text and tool calls.
fn turn_events(content: &[Block]) -> Vec<NewEvent> {
    content
        .iter()
        .filter_map(|b| match b.known()? {
            KnownBlock::Thinking { thinking, .. } => Some(NewEvent::new(
                event_kind::THINKING,
                thinking.clone(),
                json!({}),
            )),
            KnownBlock::Text { text } if !text.trim().is_empty() => {
                Some(NewEvent::new(event_kind::TEXT, text.clone(), json!({})))
            }
            KnownBlock::ToolUse { id, name, input } => Some(NewEvent::new(
                event_kind::TOOL_USE,
                format!("{name} {input}"),
                json!({"tool_use_id": id, "name": name, "input": input}),
            )),
            _ => None,
        })
        .collect()
}

/// The text of a tool result's content (for summaries).
pub fn result_text(content: &ToolResultContent) -> String {
    match content {
        ToolResultContent::Text(t) => t.clone(),
        ToolResultContent::Blocks(blocks) => blocks
            .iter()
            .filter_map(|b| match b.known() {
                Some(KnownBlock::Text { text }) => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raworc_store::StepRow;

    fn st(step: i64, kind: &str, body: Value) -> StepRow {
        StepRow {
            message_seq: 1,
            step,
            kind: kind.into(),
            body,
            created_at: 0,
        }
    }

    #[test]
    fn calls_without_results_are_found() {
        let call = json!([
            {"type":"tool_use","id":"a","name":"bash","input":{}},
            {"type":"tool_use","id":"b","name":"computer","input":{}}
        ]);
        let steps = vec![
            st(1, step::ASSISTANT, call.clone()),
            st(
                2,
                step::TOOL_RESULT,
                json!({"type":"tool_result","tool_use_id":"a","content":"x"}),
            ),
        ];
        assert_eq!(
            missing_results(&steps),
            vec![("b".to_owned(), "computer".to_owned())]
        );
        assert!(finished_turn(&steps).is_none());
        let done = vec![st(
            1,
            step::ASSISTANT,
            json!([{"type":"text","text":"all done"}]),
        )];
        assert!(missing_results(&done).is_empty());
        assert_eq!(finished_turn(&done).as_deref(), Some("all done"));
    }

    #[test]
    fn only_the_last_call_of_a_turn_at_its_token_limit_is_cut() {
        let call = |id: &str| {
            Block::Known(KnownBlock::ToolUse {
                id: id.into(),
                name: "bash".into(),
                input: json!({"command": "true"}),
            })
        };
        let turn = vec![Block::text("two"), call("a"), call("b")];
        assert_eq!(cut_call(&turn, &StopReason::MaxTokens), Some("b"));
        assert_eq!(cut_call(&turn, &StopReason::ToolUse), None);
        let ends_in_text = vec![call("a"), Block::text("and then")];
        assert_eq!(cut_call(&ends_in_text, &StopReason::MaxTokens), None);
        assert_eq!(cut_call(&[], &StopReason::MaxTokens), None);
        assert!(CUT_TOOL.contains("token limit"));
    }
}
