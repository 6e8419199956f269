//! Key names as computer-use models write them (xdotool's `key` syntax:
//! `"Return"`, `"ctrl+s"`, `"alt+Tab"`, `"ctrl+a Delete"`) and characters
//! for typing, turned into X keysyms.

/// One chord: keys pressed in order, released in reverse.
pub type Chord = Vec<u32>;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("unknown key name {0:?}")]
    Unknown(String),
    #[error("empty key name in {0:?}")]
    Empty(String),
}

/// Short names models use that are not X keysym names.
fn alias(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "ctrl" | "control" | "ctl" => "Control_L",
        "alt" | "option" => "Alt_L",
        "shift" => "Shift_L",
        "super" | "win" | "windows" | "cmd" | "command" | "meta" => "Super_L",
        "enter" | "return" => "Return",
        "esc" | "escape" => "Escape",
        "backspace" => "BackSpace",
        "del" | "delete" => "Delete",
        "tab" => "Tab",
        "space" => "space",
        "pageup" | "page_up" | "pgup" => "Prior",
        "pagedown" | "page_down" | "pgdn" => "Next",
        "up" => "Up",
        "down" => "Down",
        "left" => "Left",
        "right" => "Right",
        "home" => "Home",
        "end" => "End",
        "insert" | "ins" => "Insert",
        "capslock" | "caps_lock" => "Caps_Lock",
        "menu" => "Menu",
        "print" | "printscreen" => "Print",
        "minus" => "minus",
        "plus" => "plus",
        _ => return None,
    })
}

/// The keysym of one key name.
pub fn keysym_of_name(name: &str) -> Result<u32, KeyError> {
    if name.is_empty() {
        return Err(KeyError::Empty(name.into()));
    }
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Ok(keysym_of_char(c));
    }
    if let Some(record) = x11_keysymdef::lookup_by_name(name) {
        return Ok(record.keysym);
    }
    if let Some(real) = alias(name) {
        if let Some(record) = x11_keysymdef::lookup_by_name(real) {
            return Ok(record.keysym);
        }
    }
    // Function keys in lower case ("f5"), as some models write them.
    if let Some(n) = name
        .strip_prefix(['f', 'F'])
        .and_then(|n| n.parse::<u32>().ok())
    {
        if (1..=35).contains(&n) {
            return Ok(0xffbe + n - 1);
        }
    }
    Err(KeyError::Unknown(name.into()))
}

/// The keysym that types `c`.
pub fn keysym_of_char(c: char) -> u32 {
    match c {
        '\n' | '\r' => 0xff0d, // Return
        '\t' => 0xff09,        // Tab
        '\u{8}' => 0xff08,     // BackSpace
        // Latin-1 keysyms equal their code points.
        ' '..='~' | '\u{a0}'..='\u{ff}' => c as u32,
        _ => x11_keysymdef::lookup_by_codepoint(c)
            .map(|r| r.keysym)
            .unwrap_or(0x0100_0000 + c as u32),
    }
}

/// Parses `"ctrl+shift+t"` or `"ctrl+a Delete"` into chords.
pub fn parse_chords(text: &str) -> Result<Vec<Chord>, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty(text.into()));
    }
    text.split_whitespace()
        .map(|chord| {
            // "+" alone, or a chord ending in "+" ("ctrl++"), means the plus key.
            if chord == "+" {
                return Ok(vec![keysym_of_char('+')]);
            }
            let (body, plus) = match chord.strip_suffix("++") {
                Some(body) => (body, true),
                None => (chord, false),
            };
            let mut keys = body
                .split('+')
                .map(|name| {
                    if name.is_empty() {
                        Err(KeyError::Empty(chord.into()))
                    } else {
                        keysym_of_name(name)
                    }
                })
                .collect::<Result<Chord, _>>()?;
            if plus {
                keys.push(keysym_of_char('+'));
            }
            Ok(keys)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_models_use_resolve_to_keysyms() {
        assert_eq!(keysym_of_name("Return").unwrap(), 0xff0d);
        assert_eq!(keysym_of_name("enter").unwrap(), 0xff0d);
        assert_eq!(keysym_of_name("KP_0").unwrap(), 0xffb0);
        assert_eq!(keysym_of_name("Page_Down").unwrap(), 0xff56);
        assert_eq!(keysym_of_name("f5").unwrap(), 0xffc2);
        assert_eq!(keysym_of_name("a").unwrap(), 'a' as u32);
        assert_eq!(keysym_of_name("A").unwrap(), 'A' as u32);
        assert!(matches!(
            keysym_of_name("NotAKey"),
            Err(KeyError::Unknown(_))
        ));
    }

    #[test]
    fn chords_split_on_plus_and_spaces() {
        assert_eq!(
            parse_chords("ctrl+shift+t").unwrap(),
            vec![vec![0xffe3, 0xffe1, 't' as u32]]
        );
        assert_eq!(
            parse_chords("ctrl+a Delete").unwrap(),
            vec![vec![0xffe3, 'a' as u32], vec![0xffff]]
        );
        assert_eq!(
            parse_chords("ctrl++").unwrap(),
            vec![vec![0xffe3, '+' as u32]]
        );
        assert!(parse_chords("ctrl+").is_err());
        assert!(parse_chords("  ").is_err());
    }

    #[test]
    fn characters_beyond_latin1_use_unicode_keysyms() {
        assert_eq!(keysym_of_char('é'), 0xe9);
        assert_eq!(keysym_of_char('\n'), 0xff0d);
        // The euro sign has a legacy keysym; CJK falls back to the Unicode range.
        assert_eq!(keysym_of_char('€'), 0x20ac);
        assert_eq!(keysym_of_char('中'), 0x0100_4e2d);
    }
}
