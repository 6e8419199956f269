//! What the model sees: the system prompt (with the session's
//! instructions) and the conversation rebuilt from the store — each user
//! message followed by the agent's stored steps for it — with only the
//! most recent screenshots still attached.

use base64::Engine as _;
use raworc_store::{MessageRow, StepRow};

use crate::shots::Shots;
use crate::wire::{Block, ImageSource, KnownBlock, ToolResultContent, Turn};

/// Step kinds as stored.
pub mod step {
    /// The model's turn (stored before any of its tools runs).
    pub const ASSISTANT: &str = "assistant";
    /// One tool's result block.
    pub const TOOL_RESULT: &str = "tool_result";
    /// A final answer the model did not write (an error, a cancel).
    pub const REPLY: &str = "reply";
}

/// The system prompt: what the computer is, and the session's instructions.
pub fn system_prompt(instructions: Option<&str>, width: u16, height: u16) -> String {
    let date = chrono::Utc::now().format("%A, %B %-d, %Y");
    let mut prompt = format!(
        "<SYSTEM_CAPABILITY>\n\
* You are utilising a Debian Linux computer with a {width}x{height} desktop: a panel at the bottom, \
the Chromium browser, a terminal (xterm) and a file manager.\n\
* Your bash tool runs as the computer's user in /session: /session/code holds the session's code \
and instructions, /session/data its files, /session/secrets its secrets (one file each).\n\
* GUI applications started from bash appear on the desktop (DISPLAY is set); start them in the \
background, e.g. \"(xterm &)\", and take a screenshot to see them.\n\
* Commands with long output: redirect it to a file and look at parts of it with the editor tool \
or grep.\n\
* The computer may have no internet access unless the session was created with egress.\n\
* The current date is {date}.\n\
</SYSTEM_CAPABILITY>"
    );
    if let Some(text) = instructions.filter(|t| !t.trim().is_empty()) {
        prompt.push_str("\n\n<SESSION_INSTRUCTIONS>\n");
        prompt.push_str(text.trim());
        prompt.push_str("\n</SESSION_INSTRUCTIONS>");
    }
    prompt
}

/// Appends `turn`, merging it into the last one when they share a role
/// (the API wants roles to alternate).
fn push(turns: &mut Vec<Turn>, turn: Turn) {
    match turns.last_mut() {
        Some(last) if last.role == turn.role => last.content.extend(turn.content),
        _ => turns.push(turn),
    }
}

/// The conversation up to and including user message `current`.
pub fn conversation(messages: &[MessageRow], steps: &[StepRow], current: i64) -> Vec<Turn> {
    let mut turns = Vec::new();
    for m in messages.iter().filter(|m| m.seq <= current) {
        if m.role != raworc_api::MessageRole::User {
            continue;
        }
        push(&mut turns, Turn::user(vec![Block::text(m.content.clone())]));
        for s in steps.iter().filter(|s| s.message_seq == m.seq) {
            match s.kind.as_str() {
                step::ASSISTANT => {
                    // An empty turn (the model may end one without content)
                    // would make the next request invalid: it is left out.
                    if let Ok(content) = serde_json::from_value::<Vec<Block>>(s.body.clone()) {
                        if !content.is_empty() {
                            push(&mut turns, Turn::assistant(content));
                        }
                    }
                }
                step::TOOL_RESULT => {
                    if let Ok(block) = serde_json::from_value::<Block>(s.body.clone()) {
                        push(&mut turns, Turn::user(vec![block]));
                    }
                }
                step::REPLY => {
                    let text = s.body["text"].as_str().unwrap_or_default().to_owned();
                    push(&mut turns, Turn::assistant(vec![Block::text(text)]));
                }
                _ => {}
            }
        }
    }
    turns
}

/// The images of tool results, in order, as `(turn, block, inner)` positions.
fn image_positions(turns: &[Turn]) -> Vec<(usize, usize, usize)> {
    let mut at = Vec::new();
    for (t, turn) in turns.iter().enumerate() {
        for (b, block) in turn.content.iter().enumerate() {
            if let Some(KnownBlock::ToolResult {
                content: ToolResultContent::Blocks(inner),
                ..
            }) = block.known()
            {
                for (i, ib) in inner.iter().enumerate() {
                    if matches!(ib.known(), Some(KnownBlock::Image { .. })) {
                        at.push((t, b, i));
                    }
                }
            }
        }
    }
    at
}

/// Drops all but the `keep` most recent screenshots, in chunks of `keep`
/// (so the prompt's cached prefix changes only every few turns), and reads
/// the kept ones from their files. A screenshot whose file is gone is
/// replaced by a note.
pub async fn attach_images(turns: &mut [Turn], shots: &Shots, session_id: &str, keep: usize) {
    let positions = image_positions(turns);
    let mut drop = positions.len().saturating_sub(keep);
    if keep > 0 {
        drop -= drop % keep;
    }
    let (old, recent) = positions.split_at(drop);
    for &(t, b, i) in recent {
        let Some(Block::Known(KnownBlock::ToolResult {
            content: ToolResultContent::Blocks(inner),
            ..
        })) = turns[t].content.get_mut(b)
        else {
            continue;
        };
        if let Some(Block::Known(KnownBlock::Image {
            source: source @ ImageSource::Shot { .. },
        })) = inner.get_mut(i)
        {
            let ImageSource::Shot { id } = &*source else {
                continue;
            };
            *source = match shots.load(session_id, id).await {
                Ok(Some(png)) => ImageSource::Base64 {
                    media_type: "image/png".to_owned(),
                    data: base64::engine::general_purpose::STANDARD.encode(png),
                },
                _ => {
                    inner[i] = Block::text("[screenshot no longer available]");
                    continue;
                }
            };
        }
    }
    // Remove old ones back to front, so positions stay valid.
    for &(t, b, i) in old.iter().rev() {
        if let Some(Block::Known(KnownBlock::ToolResult {
            content: ToolResultContent::Blocks(inner),
            ..
        })) = turns[t].content.get_mut(b)
        {
            inner.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Role;
    use raworc_api::MessageRole;
    use serde_json::json;

    /// Whether the last turn is the model's and asks for tools.
    fn pending_tool_uses(turns: &[Turn]) -> Vec<(String, String, serde_json::Value)> {
        match turns.last() {
            Some(t) if t.role == Role::Assistant => t
                .tool_uses()
                .map(|(id, name, input)| (id.to_owned(), name.to_owned(), input.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn msg(seq: i64, text: &str) -> MessageRow {
        MessageRow {
            id: format!("msg-{seq}"),
            session_id: "s".into(),
            seq,
            role: MessageRole::User,
            content: text.into(),
            metadata: json!({}),
            created_at: 0,
        }
    }

    fn st(message_seq: i64, step: i64, kind: &str, body: serde_json::Value) -> StepRow {
        StepRow {
            message_seq,
            step,
            kind: kind.into(),
            body,
            created_at: 0,
        }
    }

    #[test]
    fn steps_rebuild_an_alternating_conversation() {
        let messages = vec![msg(1, "first"), msg(3, "second")];
        let steps = vec![
            st(
                1,
                1,
                step::ASSISTANT,
                json!([{"type":"tool_use","id":"t1","name":"bash","input":{"command":"ls"}}]),
            ),
            st(
                1,
                2,
                step::TOOL_RESULT,
                json!({"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"}]}),
            ),
            st(
                1,
                3,
                step::ASSISTANT,
                json!([{"type":"text","text":"done"}]),
            ),
        ];
        let turns = conversation(&messages, &steps, 3);
        let roles: Vec<Role> = turns.iter().map(|t| t.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::User,
                Role::Assistant,
                Role::User
            ]
        );
        assert_eq!(turns[4].text(), "second");
        assert!(pending_tool_uses(&turns).is_empty());
        let turns = conversation(&messages, &steps[..1], 1);
        assert_eq!(pending_tool_uses(&turns)[0].0, "t1");
    }

    #[test]
    fn empty_model_turns_are_left_out() {
        let steps = vec![
            st(1, 1, step::ASSISTANT, json!([])),
            st(1, 2, step::REPLY, json!({"text": "(no reply)"})),
        ];
        let turns = conversation(&[msg(1, "a"), msg(3, "b")], &steps, 3);
        let roles: Vec<Role> = turns.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(turns[1].text(), "(no reply)");
    }

    #[tokio::test]
    async fn only_recent_screenshots_are_attached() {
        let dir = std::env::temp_dir().join(format!("raworc-shots-{}", uuid::Uuid::new_v4()));
        let shots = Shots::new(dir.clone());
        let mut turns = Vec::new();
        for n in 0..7 {
            let id = shots.save("s", format!("png{n}").as_bytes()).await.unwrap();
            turns.push(Turn::assistant(vec![Block::text("x")]));
            turns.push(Turn::user(vec![Block::Known(KnownBlock::ToolResult {
                tool_use_id: format!("t{n}"),
                content: ToolResultContent::Blocks(vec![Block::text("t"), Block::shot(id)]),
                is_error: false,
            })]));
        }
        attach_images(&mut turns, &shots, "s", 3).await;
        let kept = image_positions(&turns);
        // 7 images, keep 3 in chunks of 3: 3 dropped, 4 kept.
        assert_eq!(kept.len(), 4);
        let v = serde_json::to_value(&turns[13]).unwrap();
        assert_eq!(v["content"][0]["content"][1]["source"]["type"], "base64");
        assert_eq!(
            v["content"][0]["content"][1]["source"]["data"],
            base64::engine::general_purpose::STANDARD.encode("png6")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
