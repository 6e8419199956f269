//! The agent's tools — Anthropic's computer, bash and text editor — as
//! declared to the model and as carried out on the session's computer
//! through its host: every action and command runs inside the computer;
//! only its result comes back. Results are shaped as Anthropic's reference
//! loop shapes them: an error becomes the whole (string) content with
//! `is_error`, else the output as text and the screenshot as an image,
//! each prefixed by a `<system>` note when the tool gave one.

use std::time::Duration;

use base64::Engine as _;
use raworc_host::client::{HostClient, HostError};
use raworc_host::proto::{BashRequest, DisplaySize, EditRequest, ToolOutput};
use serde_json::{json, Value};

use crate::shots::Shots;
use crate::wire::{Block, ToolResultContent};

/// Name of the text editor tool of `text_editor_20250728`.
pub const EDITOR: &str = "str_replace_based_edit_tool";
/// Name of the text editor tool of older versions (with `undo_edit`).
pub const EDITOR_OLD: &str = "str_replace_editor";

/// The computer tool's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputerTool {
    /// `computer_20250124` (Claude 4 and 4.5 models, Sonnet 3.7).
    V20250124,
    /// `computer_20251124`, with `zoom` (Opus 4.5 and later).
    V20251124,
}

/// The tools declared to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSet {
    pub computer: ComputerTool,
    /// The display as the model is told of it (see [`advertised_size`]).
    pub display_width: u16,
    pub display_height: u16,
    /// The computer's real display.
    pub screen_width: u16,
    pub screen_height: u16,
}

/// Sizes the computer-use models do best at: XGA, WXGA, FWXGA.
const TARGETS: [(u16, u16); 3] = [(1024, 768), (1280, 800), (1366, 768)];

/// The size the model is told of for a `width` × `height` screen, as
/// Anthropic's reference does it: a target of (nearly) the same aspect
/// ratio that is smaller than the screen, else the screen itself.
pub fn advertised_size(width: u16, height: u16) -> (u16, u16) {
    let ratio = width as f64 / height.max(1) as f64;
    TARGETS
        .into_iter()
        .find(|(w, h)| (*w as f64 / *h as f64 - ratio).abs() < 0.02 && *w < width)
        .unwrap_or((width, height))
}

/// Model families that take `computer_20251124`.
const NEWER: [&str; 7] = [
    "opus-4-5",
    "opus-4-6",
    "sonnet-4-6",
    "opus-4-7",
    "opus-4-8",
    "sonnet-5",
    "opus-5",
];

impl ToolSet {
    /// The tools that fit `model` on a display of `width` × `height`.
    pub fn for_model(model: &str, width: u16, height: u16) -> ToolSet {
        let computer = if NEWER.iter().any(|m| model.contains(m)) {
            ComputerTool::V20251124
        } else {
            ComputerTool::V20250124
        };
        let (display_width, display_height) = advertised_size(width, height);
        ToolSet {
            computer,
            display_width,
            display_height,
            screen_width: width,
            screen_height: height,
        }
    }

    /// The model's coordinate space, when it differs from the screen.
    pub fn space(&self) -> Option<DisplaySize> {
        ((self.display_width, self.display_height) != (self.screen_width, self.screen_height))
            .then_some(DisplaySize {
                width: self.display_width,
                height: self.display_height,
            })
    }

    /// The `anthropic-beta` value the computer tool needs.
    pub fn beta(&self) -> &'static str {
        match self.computer {
            ComputerTool::V20250124 => "computer-use-2025-01-24",
            ComputerTool::V20251124 => "computer-use-2025-11-24",
        }
    }

    /// The `tools` array of a Messages API request.
    pub fn anthropic(&self) -> Vec<Value> {
        let mut computer = json!({
            "name": "computer",
            "display_width_px": self.display_width,
            "display_height_px": self.display_height,
        });
        match self.computer {
            ComputerTool::V20250124 => computer["type"] = json!("computer_20250124"),
            ComputerTool::V20251124 => {
                computer["type"] = json!("computer_20251124");
                computer["enable_zoom"] = json!(true);
            }
        }
        vec![
            computer,
            json!({"type": "bash_20250124", "name": "bash"}),
            json!({"type": "text_editor_20250728", "name": EDITOR}),
        ]
    }
}

/// A tool's result, ready for the model and for the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub content: ToolResultContent,
    pub is_error: bool,
    /// The screenshot the result shows, if any.
    pub shot: Option<String>,
    /// Its text (output or error), for events.
    pub text: String,
}

impl ToolOutcome {
    /// An error result: the message is the whole content.
    pub fn error(message: impl Into<String>) -> ToolOutcome {
        let text = message.into();
        ToolOutcome {
            content: ToolResultContent::Text(text.clone()),
            is_error: true,
            shot: None,
            text,
        }
    }

    /// A result shaped as the reference shapes its tools' results, its
    /// texts cut to [`MAX_RESULT_CHARS`].
    fn from_output(mut out: ToolOutput, shot: Option<String>) -> ToolOutcome {
        out.output = out.output.map(clip);
        out.error = out.error.map(clip);
        let with_system = |text: &str| match &out.system {
            Some(system) => format!("<system>{system}</system>\n{text}"),
            None => text.to_owned(),
        };
        if let Some(error) = out.error.as_deref().filter(|e| !e.is_empty()) {
            return ToolOutcome::error(with_system(error));
        }
        let mut blocks = Vec::new();
        let mut text = String::new();
        if let Some(output) = out.output.as_deref().filter(|o| !o.is_empty()) {
            text = with_system(output);
            blocks.push(Block::text(text.clone()));
        }
        if let Some(id) = &shot {
            blocks.push(Block::shot(id.clone()));
        }
        ToolOutcome {
            content: ToolResultContent::Blocks(blocks),
            is_error: false,
            shot,
            text,
        }
    }
}

/// Longest text of one tool result the model is shown (about 25 000
/// tokens): a command that prints megabytes would otherwise fill the
/// context of every later turn.
pub const MAX_RESULT_CHARS: usize = 100_000;

/// `text` cut to [`MAX_RESULT_CHARS`], saying so.
fn clip(text: String) -> String {
    match text.char_indices().nth(MAX_RESULT_CHARS) {
        None => text,
        Some((cut, _)) => format!(
            "{}<response clipped><NOTE>The output was longer than {MAX_RESULT_CHARS} characters; \
             the rest is not shown. Write long output to a file and look at parts of it.</NOTE>",
            &text[..cut]
        ),
    }
}

/// Computer actions that answer with text or an image of their own, and
/// need no screenshot after them.
fn answers_itself(action: &str) -> bool {
    matches!(action, "screenshot" | "zoom" | "cursor_position" | "wait")
}

/// Longest wait for the screen to settle after an action before the
/// screenshot that shows its effect (the reference always waits 2 s).
pub const SETTLE_CAP: Duration = Duration::from_secs(2);

/// Carries out tool calls on one session's computer.
pub struct Tools<'a> {
    pub host: &'a HostClient,
    pub shots: &'a Shots,
    pub session_id: &'a str,
    /// The model's coordinate space, when smaller than the screen.
    pub space: Option<DisplaySize>,
}

fn host_failure(e: HostError) -> ToolOutcome {
    match e {
        HostError::Status { message, .. } => ToolOutcome::error(message),
        other => ToolOutcome::error(other.to_string()),
    }
}

impl Tools<'_> {
    /// Runs tool `name` with `input`.
    pub async fn run(&self, name: &str, input: &Value) -> ToolOutcome {
        match name {
            "computer" => self.computer(input).await,
            "bash" => {
                let command = input
                    .get("command")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let restart = input
                    .get("restart")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let req = BashRequest {
                    command,
                    restart,
                    timeout_s: None,
                };
                match self.host.bash(&req).await {
                    Ok(out) => ToolOutcome::from_output(out, None),
                    Err(e) => host_failure(e),
                }
            }
            EDITOR | EDITOR_OLD => {
                let req = EditRequest {
                    tool_name: name.to_owned(),
                    undo: name == EDITOR_OLD,
                    max_characters: None,
                    input: input.clone(),
                };
                match self.host.edit(&req).await {
                    Ok(out) => ToolOutcome::from_output(out, None),
                    Err(e) => host_failure(e),
                }
            }
            other => ToolOutcome::error(format!("Tool {other} is invalid")),
        }
    }

    async fn save_png(&self, png: &[u8]) -> Result<String, ToolOutcome> {
        self.shots
            .save(self.session_id, png)
            .await
            .map_err(|e| ToolOutcome::error(format!("could not keep the screenshot: {e}")))
    }

    async fn computer(&self, input: &Value) -> ToolOutcome {
        let action = input.get("action").and_then(Value::as_str).unwrap_or("");
        let result = match self.host.computer_in(input, self.space).await {
            Ok(r) => r,
            Err(e) => return host_failure(e),
        };
        let png = match &result.image {
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(png) => Some(png),
                Err(e) => {
                    return ToolOutcome::error(format!("the computer sent a broken image: {e}"))
                }
            },
            None if answers_itself(action) => None,
            // The action has happened: if the settled look fails, an
            // immediate one will do (an error would make the model repeat it).
            None => match self.host.screenshot_settled(SETTLE_CAP, self.space).await {
                Ok(png) => Some(png.to_vec()),
                Err(e) => {
                    tracing::warn!(error = %e, "settled screenshot failed; taking one at once");
                    match self
                        .host
                        .computer_in(&json!({"action": "screenshot"}), self.space)
                        .await
                    {
                        Ok(r) => r.image.and_then(|b64| {
                            base64::engine::general_purpose::STANDARD.decode(b64).ok()
                        }),
                        Err(_) => None,
                    }
                }
            },
        };
        let shot = match png {
            Some(png) => match self.save_png(&png).await {
                Ok(id) => Some(id),
                Err(outcome) => return outcome,
            },
            None => None,
        };
        let output = ToolOutput {
            output: result.output,
            error: None,
            system: None,
        };
        ToolOutcome::from_output(output, shot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_models_get_the_newer_computer_tool() {
        let t = ToolSet::for_model("claude-opus-4-5-20251101", 1024, 768);
        assert_eq!(t.computer, ComputerTool::V20251124);
        assert_eq!(t.beta(), "computer-use-2025-11-24");
        assert_eq!(t.anthropic()[0]["enable_zoom"], json!(true));
        let t = ToolSet::for_model("claude-sonnet-4-5", 1280, 800);
        assert_eq!(t.space(), None);
        assert_eq!(t.beta(), "computer-use-2025-01-24");
        assert_eq!(t.anthropic()[0]["type"], "computer_20250124");
        assert_eq!(t.anthropic()[0]["display_width_px"], 1280);
        assert_eq!(t.anthropic()[2]["name"], EDITOR);
    }

    #[test]
    fn large_screens_are_advertised_at_a_size_models_do_best_at() {
        assert_eq!(advertised_size(1024, 768), (1024, 768));
        assert_eq!(advertised_size(1920, 1200), (1280, 800));
        assert_eq!(advertised_size(1920, 1080), (1366, 768));
        assert_eq!(advertised_size(2048, 1536), (1024, 768));
        assert_eq!(advertised_size(800, 600), (800, 600));
        assert_eq!(advertised_size(1000, 1000), (1000, 1000));
        let t = ToolSet::for_model("claude-sonnet-4-5", 1920, 1200);
        assert_eq!(t.anthropic()[0]["display_width_px"], 1280);
        assert_eq!(
            t.space(),
            Some(DisplaySize {
                width: 1280,
                height: 800
            })
        );
    }

    #[test]
    fn long_results_are_clipped() {
        let long = "é".repeat(MAX_RESULT_CHARS + 10);
        let r = ToolOutcome::from_output(
            ToolOutput {
                output: Some(long),
                error: None,
                system: None,
            },
            None,
        );
        assert!(r.text.starts_with(&"é".repeat(MAX_RESULT_CHARS)));
        assert!(r.text.contains("<response clipped>"));
        assert!(!r.text.contains(&"é".repeat(MAX_RESULT_CHARS + 1)));
    }

    #[test]
    fn results_are_shaped_as_the_reference_shapes_them() {
        let out = |o: Option<&str>, e: Option<&str>, s: Option<&str>| ToolOutput {
            output: o.map(str::to_owned),
            error: e.map(str::to_owned),
            system: s.map(str::to_owned),
        };
        let r = ToolOutcome::from_output(out(Some("hi"), Some("oops"), Some("note")), None);
        assert!(r.is_error);
        assert_eq!(
            r.content,
            ToolResultContent::Text("<system>note</system>\noops".into())
        );
        let r = ToolOutcome::from_output(out(Some("hi"), None, None), Some("shot-1".into()));
        assert!(!r.is_error);
        assert_eq!(
            r.content,
            ToolResultContent::Blocks(vec![Block::text("hi"), Block::shot("shot-1")])
        );
        let r = ToolOutcome::from_output(out(None, None, Some("tool has been restarted.")), None);
        assert_eq!(r.content, ToolResultContent::Blocks(vec![]));
    }
}
