//! The conversation as the agent keeps it: Anthropic's content blocks, the
//! richest of the wire formats (the OpenAI-compatible provider translates).
//! Screenshots are kept as references to files ([`ImageSource::Shot`]) and
//! read back only for the turns that still show them to the model.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    /// A screenshot stored by the control plane (see [`crate::shots`]).
    Shot {
        id: String,
    },
}

/// A content block. Blocks of types this client does not know are kept
/// as they came ([`Block::Other`]) and sent back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Block {
    Known(KnownBlock),
    Other(Value),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KnownBlock {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: ToolResultContent,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
}

/// A tool result's content: a plain string (errors, as the reference sends
/// them) or text and image blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

impl Default for ToolResultContent {
    fn default() -> Self {
        ToolResultContent::Blocks(Vec::new())
    }
}

impl Block {
    pub fn text(text: impl Into<String>) -> Block {
        Block::Known(KnownBlock::Text { text: text.into() })
    }

    pub fn shot(id: impl Into<String>) -> Block {
        Block::Known(KnownBlock::Image {
            source: ImageSource::Shot { id: id.into() },
        })
    }

    pub fn known(&self) -> Option<&KnownBlock> {
        match self {
            Block::Known(k) => Some(k),
            Block::Other(_) => None,
        }
    }

    /// `(id, name, input)` of a tool call.
    pub fn as_tool_use(&self) -> Option<(&str, &str, &Value)> {
        match self {
            Block::Known(KnownBlock::ToolUse { id, name, input }) => Some((id, name, input)),
            _ => None,
        }
    }
}

impl Turn {
    pub fn user(content: Vec<Block>) -> Turn {
        Turn {
            role: Role::User,
            content,
        }
    }

    pub fn assistant(content: Vec<Block>) -> Turn {
        Turn {
            role: Role::Assistant,
            content,
        }
    }

    /// The tool calls in this turn.
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(Block::as_tool_use)
    }

    /// The text of this turn's text blocks, joined by blank lines.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self
            .content
            .iter()
            .filter_map(|b| match b {
                Block::Known(KnownBlock::Text { text }) if !text.trim().is_empty() => {
                    Some(text.as_str())
                }
                _ => None,
            })
            .collect();
        parts.join("\n\n")
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    PauseTurn,
    Refusal,
    #[serde(untagged)]
    Other(String),
}

impl StopReason {
    pub fn parse(s: &str) -> StopReason {
        serde_json::from_value(Value::String(s.to_owned()))
            .unwrap_or_else(|_| StopReason::Other(s.to_owned()))
    }
}

/// Tokens a model call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks_round_trip_and_unknown_ones_are_kept() {
        let blocks = json!([
            {"type":"text","text":"hi"},
            {"type":"tool_use","id":"toolu_1","name":"computer","input":{"action":"screenshot"}},
            {"type":"thinking","thinking":"hm","signature":"sig"},
            {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}},
            {"type":"tool_result","tool_use_id":"toolu_1","content":"oops","is_error":true},
            {"type":"image","source":{"type":"shot","id":"shot-1"}}
        ]);
        let parsed: Vec<Block> = serde_json::from_value(blocks.clone()).unwrap();
        assert!(matches!(parsed[3], Block::Other(_)));
        assert_eq!(parsed[1].as_tool_use().unwrap().1, "computer");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), blocks);
    }

    #[test]
    fn stop_reasons_parse_with_a_fallback() {
        assert_eq!(StopReason::parse("tool_use"), StopReason::ToolUse);
        assert_eq!(
            StopReason::parse("compaction"),
            StopReason::Other("compaction".into())
        );
    }
}
