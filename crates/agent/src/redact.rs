//! Keeps a session's secrets out of what the agent stores and shows: a
//! tool's output that contains a secret's value (a command that printed
//! it) has the value replaced by `[secret NAME]` before the result reaches
//! the model, the store, the events or a log. Commands still get the real
//! values (in their environment and in `/session/secrets`).

use crate::tools::ToolOutcome;
use crate::wire::{Block, KnownBlock, ToolResultContent};

/// Values shorter than this are not redacted (they would match too much).
const MIN_LEN: usize = 4;

#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<(String, String)>) -> Redactor {
        secrets.retain(|(_, v)| v.len() >= MIN_LEN);
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        Redactor { secrets }
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (name, value) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("[secret {name}]"));
            }
        }
        out
    }

    pub fn outcome(&self, mut o: ToolOutcome) -> ToolOutcome {
        if self.secrets.is_empty() {
            return o;
        }
        o.text = self.text(&o.text);
        match &mut o.content {
            ToolResultContent::Text(t) => *t = self.text(t),
            ToolResultContent::Blocks(blocks) => {
                for b in blocks {
                    if let Block::Known(KnownBlock::Text { text }) = b {
                        *text = self.text(text);
                    }
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_replaced_by_their_names() {
        let r = Redactor::new(vec![
            ("TOKEN".into(), "s3cr3t-value".into()),
            ("SHORT".into(), "ab".into()),
            ("LONGER".into(), "s3cr3t-value-2".into()),
        ]);
        assert_eq!(
            r.text("a s3cr3t-value-2 b s3cr3t-value ab"),
            "a [secret LONGER] b [secret TOKEN] ab"
        );
        let o = r.outcome(ToolOutcome::error("got s3cr3t-value"));
        assert_eq!(o.text, "got [secret TOKEN]");
        assert_eq!(
            o.content,
            ToolResultContent::Text("got [secret TOKEN]".into())
        );
    }
}
