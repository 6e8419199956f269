//! Knowing from the screen itself when the desktop is painted: the panel
//! drawn and the browser's window showing its tab strip and toolbar. A
//! mapped window is not yet a painted one (Chromium maps its window a good
//! while before its first frame), and a computer reported ready before it
//! paints would greet its first screenshot with a grey frame.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, MapState, Window};
use x11rb::rust_connection::RustConnection;

use crate::computer::Computer;
use crate::screen::Rect;

/// How often the screen is looked at while waiting.
const POLL: Duration = Duration::from_millis(10);
/// A painted region shows at least this many colours (icons and
/// anti-aliased text); an unpainted or cleared one shows one or two.
const MIN_COLOURS: usize = 12;
/// The top of the browser's window that holds its tab strip and toolbar.
const BROWSER_CHROME_HEIGHT: u16 = 80;

/// What the wait found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Painted,
    /// The bound passed first; what was still missing.
    GaveUp(String),
}

/// Waits until the panel and the browser's chrome are painted and have
/// stayed the same for one look, or until `bound` has passed.
pub async fn await_painted(display: &str, computer: &Computer, bound: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + bound;
    let (conn, screen) = match RustConnection::connect(Some(display)) {
        Ok(connected) => connected,
        Err(e) => return Outcome::GaveUp(format!("cannot connect to the display: {e}")),
    };
    let root = conn.setup().roots[screen].root;
    let size = computer.size();
    let mut last: Option<(u64, u64)> = None;
    let mut waiting_for = String::new();
    loop {
        let missing = match look(&conn, root, size, computer).await {
            Ok(Look::Painted(hashes)) => {
                if last == Some(hashes) {
                    return Outcome::Painted;
                }
                last = Some(hashes);
                "the painted desktop to settle".to_owned()
            }
            Ok(Look::Missing(what)) => {
                last = None;
                what
            }
            Err(e) => {
                last = None;
                format!("the screen ({e})")
            }
        };
        if missing != waiting_for {
            tracing::debug!(waiting_for = %missing, ms = started.elapsed().as_millis() as u64, "painting");
            waiting_for = missing.clone();
        }
        if Instant::now() >= deadline {
            return Outcome::GaveUp(missing);
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Look {
    /// Both regions painted; a hash of each, to see them settle.
    Painted((u64, u64)),
    Missing(String),
}

async fn look(
    conn: &RustConnection,
    root: Window,
    size: crate::proto::DisplaySize,
    computer: &Computer,
) -> Result<Look, String> {
    let windows = find_windows(conn, root).map_err(|e| e.to_string())?;
    let Some(panel) = windows.panel else {
        return Ok(Look::Missing("the panel's window".into()));
    };
    let Some(browser) = windows.browser else {
        return Ok(Look::Missing("the browser's window".into()));
    };
    let (Some(panel), Some(chrome)) = (
        clip(panel, size),
        clip(
            Rect {
                height: browser.height.min(BROWSER_CHROME_HEIGHT),
                ..browser
            },
            size,
        ),
    ) else {
        return Ok(Look::Missing("windows on the screen".into()));
    };
    let pixels = computer
        .with_screen(move |s| Ok((s.capture(panel)?, s.capture(chrome)?)))
        .await
        .map_err(|e| e.to_string())?;
    let (panel_px, chrome_px) = pixels;
    if colours(&panel_px) < MIN_COLOURS {
        return Ok(Look::Missing("the panel's pixels".into()));
    }
    if colours(&chrome_px) < MIN_COLOURS {
        return Ok(Look::Missing("the browser's tab strip and toolbar".into()));
    }
    Ok(Look::Painted((hash(&panel_px), hash(&chrome_px))))
}

/// Distinct colours in packed RGB, counted up to [`MIN_COLOURS`].
fn colours(rgb: &[u8]) -> usize {
    let mut seen = HashSet::new();
    for px in rgb.chunks_exact(3) {
        seen.insert([px[0], px[1], px[2]]);
        if seen.len() >= MIN_COLOURS {
            break;
        }
    }
    seen.len()
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The part of `rect` that lies on the display, if any.
fn clip(rect: Rect, size: crate::proto::DisplaySize) -> Option<Rect> {
    let right = (rect.x as u32 + rect.width as u32).min(size.width as u32);
    let bottom = (rect.y as u32 + rect.height as u32).min(size.height as u32);
    let width = right.checked_sub(rect.x as u32).filter(|w| *w > 0)?;
    let height = bottom.checked_sub(rect.y as u32).filter(|h| *h > 0)?;
    Some(Rect {
        x: rect.x,
        y: rect.y,
        width: width as u16,
        height: height as u16,
    })
}

/// Where the panel's and the browser's windows are, when on screen.
#[derive(Default)]
pub(crate) struct Windows {
    pub panel: Option<Rect>,
    pub browser: Option<Rect>,
}

/// The viewable panel (tint2) and browser windows, by `WM_CLASS`, among the
/// root's children and their children (the window manager's frames).
/// Windows that go away while being looked at are skipped.
pub(crate) fn find_windows(
    conn: &RustConnection,
    root: Window,
) -> Result<Windows, x11rb::errors::ReplyError> {
    let mut found = Windows::default();
    for top in conn.query_tree(root)?.reply()?.children {
        let mut candidates = vec![top];
        if let Ok(Ok(tree)) = conn.query_tree(top).map(|c| c.reply()) {
            candidates.extend(tree.children);
        }
        for window in candidates {
            let Ok(Some((kind, rect))) = describe(conn, root, window) else {
                continue;
            };
            let slot = match kind {
                Kind::Panel => &mut found.panel,
                Kind::Browser => &mut found.browser,
            };
            slot.get_or_insert(rect);
        }
    }
    Ok(found)
}

enum Kind {
    Panel,
    Browser,
}

/// What `window` is, and where, if it is a viewable panel or browser window.
fn describe(
    conn: &RustConnection,
    root: Window,
    window: Window,
) -> Result<Option<(Kind, Rect)>, x11rb::errors::ReplyError> {
    let class = conn
        .get_property(false, window, AtomEnum::WM_CLASS, AtomEnum::STRING, 0, 256)?
        .reply()?;
    let class = String::from_utf8_lossy(&class.value).to_ascii_lowercase();
    let kind = if class.contains("tint2") {
        Kind::Panel
    } else if class.contains("chromium") {
        Kind::Browser
    } else {
        return Ok(None);
    };
    if conn.get_window_attributes(window)?.reply()?.map_state != MapState::VIEWABLE {
        return Ok(None);
    }
    let geometry = conn.get_geometry(window)?.reply()?;
    let at = conn.translate_coordinates(window, root, 0, 0)?.reply()?;
    if at.dst_x < 0 || at.dst_y < 0 || geometry.width < 8 || geometry.height < 8 {
        return Ok(None);
    }
    let rect = Rect {
        x: at.dst_x as u16,
        y: at.dst_y as u16,
        width: geometry.width,
        height: geometry.height,
    };
    Ok(Some((kind, rect)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DisplaySize;

    #[test]
    fn colours_are_counted_up_to_the_bound() {
        assert_eq!(colours(&[7; 300]), 1);
        let many: Vec<u8> = (0..=255u8).flat_map(|v| [v, 0, 0]).collect();
        assert_eq!(colours(&many), MIN_COLOURS);
    }

    #[test]
    fn rectangles_are_clipped_to_the_display() {
        let size = DisplaySize {
            width: 100,
            height: 50,
        };
        let r = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert_eq!(clip(r(90, 40, 20, 20), size), Some(r(90, 40, 10, 10)));
        assert_eq!(clip(r(100, 0, 5, 5), size), None);
        assert_eq!(clip(r(0, 0, 100, 50), size), Some(r(0, 0, 100, 50)));
    }
}
