//! The mock agent, used when no model key is configured: no model, but a
//! few plain requests understood and done for real on the computer through
//! the same tools, loop and events as a model's work —
//!
//! - "run `CMD`" (or "run CMD"): the command in the session's shell
//! - "open URL": the address typed into the browser's address bar
//! - "take a screenshot"
//! - "type TEXT"
//! - "click X Y"
//!
//! Anything else is answered with what it can do.

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{Model, ModelError, ModelReply, ModelRequest};
use crate::wire::{Block, KnownBlock, Role, StopReason, ToolResultContent, Turn, Usage};

pub struct Mock;

/// What the mock says it can do.
pub const HELP: &str =
    "I am Raworc's mock agent: no model key is configured, so I understand only \
simple requests, and do them on this session's computer: run `COMMAND`, open URL, take a \
screenshot, type TEXT, click X Y.";

fn tool_use(n: usize, name: &str, input: Value) -> Block {
    Block::Known(KnownBlock::ToolUse {
        id: format!("toolu_mock_{n}"),
        name: name.to_owned(),
        input,
    })
}

fn strip_ticks(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('`')
        .and_then(|r| r.strip_suffix('`'))
        .unwrap_or(s)
        .trim()
}

/// The tool calls that carry out `request`, or `None` when it is not understood.
pub fn plan(request: &str) -> Option<Vec<(String, Value)>> {
    let request = request.trim();
    let lower = request.to_lowercase();
    let rest = |n: usize| request.get(n..).unwrap_or("").trim();
    if lower.starts_with("run ") {
        let cmd = strip_ticks(rest(4));
        return (!cmd.is_empty()).then(|| vec![("bash".to_owned(), json!({"command": cmd}))]);
    }
    if lower.starts_with("open ") {
        let url = strip_ticks(rest(5));
        return (!url.is_empty()).then(|| {
            vec![
                (
                    "computer".to_owned(),
                    json!({"action": "key", "text": "ctrl+l"}),
                ),
                (
                    "computer".to_owned(),
                    json!({"action": "type", "text": format!("{url}\n")}),
                ),
            ]
        });
    }
    if lower.contains("screenshot") {
        return Some(vec![(
            "computer".to_owned(),
            json!({"action": "screenshot"}),
        )]);
    }
    if lower.starts_with("type ") {
        let text = strip_ticks(rest(5));
        return (!text.is_empty()).then(|| {
            vec![(
                "computer".to_owned(),
                json!({"action": "type", "text": text}),
            )]
        });
    }
    if lower.starts_with("click ") {
        let nums: Vec<i64> = rest(6)
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<i64>())
            .collect::<Result<_, _>>()
            .ok()?;
        if let [x, y] = nums[..] {
            return Some(vec![(
                "computer".to_owned(),
                json!({"action": "left_click", "coordinate": [x, y]}),
            )]);
        }
    }
    None
}

/// A summary of the results of the mock's tool calls.
fn summarise(results: &[Block]) -> String {
    let mut lines = Vec::new();
    for block in results {
        let Some(KnownBlock::ToolResult {
            content, is_error, ..
        }) = block.known()
        else {
            continue;
        };
        let text = match content {
            ToolResultContent::Text(t) => t.clone(),
            ToolResultContent::Blocks(blocks) => {
                let texts: Vec<String> = blocks
                    .iter()
                    .filter_map(|b| match b.known() {
                        Some(KnownBlock::Text { text }) => Some(text.clone()),
                        _ => None,
                    })
                    .collect();
                texts.join("\n")
            }
        };
        if *is_error {
            lines.push(format!("That failed: {text}"));
        } else if !text.is_empty() {
            lines.push(text);
        }
    }
    // The reply says what answered it: no model is behind it.
    let done = "Done (mock agent: no model key is configured).";
    if lines.is_empty() {
        done.to_owned()
    } else {
        format!("{done}\n\n{}", lines.join("\n\n"))
    }
}

fn reply(content: Vec<Block>, stop: StopReason) -> ModelReply {
    ModelReply {
        content,
        stop_reason: stop,
        usage: Usage::default(),
        model: "mock".to_owned(),
        attempts: 1,
    }
}

impl Model for Mock {
    fn provider(&self) -> &'static str {
        "mock"
    }

    fn model(&self) -> &str {
        "mock"
    }

    fn respond<'a>(
        &'a self,
        req: ModelRequest<'a>,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(async move {
            let Some(last) = req.turns.last().filter(|t| t.role == Role::User) else {
                return Ok(reply(vec![Block::text(HELP)], StopReason::EndTurn));
            };
            let has_results = last
                .content
                .iter()
                .any(|b| matches!(b.known(), Some(KnownBlock::ToolResult { .. })));
            if has_results {
                return Ok(reply(
                    vec![Block::text(summarise(&last.content))],
                    StopReason::EndTurn,
                ));
            }
            let request = Turn::text(last);
            match plan(&request) {
                Some(calls) => {
                    let content = calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, input))| tool_use(i + 1, &name, input))
                        .collect();
                    Ok(reply(content, StopReason::ToolUse))
                }
                None => Ok(reply(vec![Block::text(HELP)], StopReason::EndTurn)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_become_tool_calls() {
        assert_eq!(
            plan("run `echo hi`").unwrap(),
            vec![("bash".to_owned(), json!({"command": "echo hi"}))]
        );
        assert_eq!(plan("Run ls -la").unwrap()[0].1["command"], "ls -la");
        assert_eq!(
            plan("click 10, 20").unwrap()[0].1["coordinate"],
            json!([10, 20])
        );
        assert_eq!(
            plan("Take a screenshot please").unwrap()[0].1["action"],
            "screenshot"
        );
        let open = plan("open https://example.com").unwrap();
        assert_eq!(open[1].1["text"], "https://example.com\n");
        assert_eq!(plan("type héllo").unwrap()[0].1["text"], "héllo");
        assert!(plan("what is the weather?").is_none());
        assert!(plan("click here").is_none());
    }
}
