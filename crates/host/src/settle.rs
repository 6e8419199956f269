//! Waiting for the screen to settle after an action, through the X DAMAGE
//! extension: the X server reports each change of the screen's pixels, and
//! the screen counts as settled once none has come for a short while.
//! Anthropic's reference tools sleep a fixed 2 s instead; most actions
//! settle in a fraction of that.

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

use crate::screen::ScreenError;

/// How long the screen must stay unchanged to count as settled: shorter
/// than a text caret's blink (about 0.5 s), longer than the gap between a
/// click and the repaint it causes.
pub const QUIET: Duration = Duration::from_millis(250);
/// How often pending change reports are read while waiting.
const POLL: Duration = Duration::from_millis(5);

/// A connection of its own that watches the whole screen for changes.
pub struct Settle {
    conn: RustConnection,
    damage: damage::Damage,
}

impl Settle {
    pub fn connect(display: &str) -> Result<Settle, ScreenError> {
        let (conn, screen_num) = RustConnection::connect(Some(display))?;
        let root = conn.setup().roots[screen_num].root;
        conn.damage_query_version(1, 1)?.reply()?;
        let damage = conn.generate_id()?;
        conn.damage_create(damage, root, damage::ReportLevel::NON_EMPTY)?
            .check()?;
        Ok(Settle { conn, damage })
    }

    /// Reads the change reports that arrived; true if there was one (and
    /// asks for the next).
    fn changed(&self) -> Result<bool, ScreenError> {
        let mut any = false;
        while let Some(event) = self.conn.poll_for_event()? {
            if matches!(event, Event::DamageNotify(_)) {
                any = true;
            }
        }
        if any {
            // With NON_EMPTY the server reports again only once the damage is cleared.
            self.conn
                .damage_subtract(self.damage, x11rb::NONE, x11rb::NONE)?;
            self.conn.flush()?;
        }
        Ok(any)
    }

    /// Blocks until the screen has not changed for `quiet`, or `cap` has
    /// passed; returns how long it waited.
    pub fn wait(&self, quiet: Duration, cap: Duration) -> Result<Duration, ScreenError> {
        let start = Instant::now();
        let mut last_change = start;
        loop {
            if self.changed()? {
                last_change = Instant::now();
            }
            let now = Instant::now();
            if now.duration_since(last_change) >= quiet || now.duration_since(start) >= cap {
                return Ok(now.duration_since(start));
            }
            std::thread::sleep(POLL);
        }
    }
}
