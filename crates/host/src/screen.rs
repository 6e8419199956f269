//! The X display, straight over the X protocol: screenshots through MIT-SHM
//! (a memfd shared with the server, no copy through the socket) and input
//! through XTEST. No helper programs per call.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xfixes::ConnectionExt as _;
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use crate::keys::Chord;
use crate::proto::DisplaySize;

#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    #[error("cannot connect to the display: {0}")]
    Connect(#[from] x11rb::errors::ConnectError),
    #[error("X connection: {0}")]
    Connection(#[from] x11rb::errors::ConnectionError),
    #[error("X request failed: {0}")]
    Reply(#[from] x11rb::errors::ReplyError),
    #[error("X ids exhausted: {0}")]
    Ids(#[from] x11rb::errors::ReplyOrIdError),
    #[error("shared memory: {0}")]
    Shm(std::io::Error),
    #[error("the display uses {0} bits per pixel; only 32 is supported")]
    Format(u8),
    #[error("the display worker failed: {0}")]
    Worker(String),
    #[error("no key of the keyboard can produce keysym {0:#x}")]
    NoKeycode(u32),
    #[error("PNG encoding: {0}")]
    Png(#[from] png::EncodingError),
}

/// A rectangle of the display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
}

/// Mouse buttons as X numbers them (4–7 are the wheel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Left = 1,
    Middle = 2,
    Right = 3,
    WheelUp = 4,
    WheelDown = 5,
    WheelLeft = 6,
    WheelRight = 7,
}

/// A memfd mapped here and attached to the X server as an SHM segment.
struct SharedBuffer {
    seg: u32,
    ptr: *mut u8,
    len: usize,
    _fd: OwnedFd,
}

// SAFETY: the mapping is owned by the buffer and only used through `&mut Screen`.
unsafe impl Send for SharedBuffer {}

impl SharedBuffer {
    fn new(conn: &RustConnection, len: usize) -> Result<SharedBuffer, ScreenError> {
        // SAFETY: memfd_create with a static name; the result is checked.
        let raw = unsafe { libc::memfd_create(c"raworc-screen".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(ScreenError::Shm(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate/mmap on the descriptor above; results are checked.
        let ptr = unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) < 0 {
                return Err(ScreenError::Shm(std::io::Error::last_os_error()));
            }
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ScreenError::Shm(std::io::Error::last_os_error()));
        }
        let seg = conn.generate_id()?;
        let for_server = fd.try_clone().map_err(ScreenError::Shm)?;
        conn.shm_attach_fd(seg, for_server, false)?.check()?;
        Ok(SharedBuffer {
            seg,
            ptr: ptr.cast(),
            len,
            _fd: fd,
        })
    }

    fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: the mapping is `self.len` bytes long and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, len.min(self.len)) }
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Characters a US layout lacks that are bound to spare keycodes when the
/// display starts, before any application reads the keyboard mapping: typing
/// them needs no remapping (which applications notice only a moment later).
const PRELOAD: &str =
    "éèêëàâäáãåçñóòôöõúùûüíìîïýÿÉÈÊËÀÂÄÁÃÅÇÑÓÒÔÖÕÚÙÛÜÍÌÎÏÝ€£¥¢©®°±§¶µ×÷¿¡«»ßæøœÆØŒ·…–—‘’“”•™";
/// Spare keycodes kept free for other characters, bound on demand.
const DYNAMIC_SPARES: usize = 8;

/// The keyboard mapping, to find the keycode (and shift level) of a keysym.
struct Keymap {
    min_keycode: u8,
    per_keycode: usize,
    keysyms: Vec<u32>,
    /// Keycodes without symbols, bound on demand to keysyms the layout lacks.
    dynamic: Vec<u8>,
    next_dynamic: usize,
}

impl Keymap {
    fn load(conn: &RustConnection) -> Result<Keymap, ScreenError> {
        let setup = conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let reply = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        let per_keycode = (reply.keysyms_per_keycode as usize).max(1);
        let spare: Vec<u8> = reply
            .keysyms
            .chunks(per_keycode)
            .enumerate()
            .filter(|(_, syms)| syms.iter().all(|s| *s == 0))
            .map(|(i, _)| min + i as u8)
            .collect();
        let mut keymap = Keymap {
            min_keycode: min,
            per_keycode,
            keysyms: reply.keysyms,
            dynamic: Vec::new(),
            next_dynamic: 0,
        };
        let mut spare = spare.into_iter();
        for c in PRELOAD.chars() {
            let keysym = crate::keys::keysym_of_char(c);
            if keymap.find(keysym).is_some() {
                continue;
            }
            if spare.len() <= DYNAMIC_SPARES {
                break;
            }
            if let Some(code) = spare.next() {
                keymap.bind(conn, code, keysym)?;
            }
        }
        keymap.dynamic = spare.collect();
        Ok(keymap)
    }

    /// Binds `keysym` to `code` on the server and here.
    fn bind(&mut self, conn: &RustConnection, code: u8, keysym: u32) -> Result<(), ScreenError> {
        let per = self.per_keycode;
        let mut syms = vec![0u32; per];
        syms[0] = keysym;
        if per > 1 {
            syms[1] = keysym;
        }
        conn.change_keyboard_mapping(1, code, per as u8, &syms)?
            .check()?;
        let at = (code - self.min_keycode) as usize * per;
        self.keysyms[at..at + per].copy_from_slice(&syms);
        Ok(())
    }

    /// The keycode for `keysym` and whether Shift selects it.
    fn find(&self, keysym: u32) -> Option<(u8, bool)> {
        for level in 0..2.min(self.per_keycode) {
            for (i, syms) in self.keysyms.chunks(self.per_keycode).enumerate() {
                if syms[level] == keysym {
                    return Some((self.min_keycode + i as u8, level == 1));
                }
            }
        }
        None
    }
}

const SHIFT_L: u32 = 0xffe1;

/// The X display of this computer.
pub struct Screen {
    conn: RustConnection,
    root: u32,
    size: DisplaySize,
    shm: Option<SharedBuffer>,
    keymap: Keymap,
    /// Whether the server can hand out the pointer's image (XFixes).
    xfixes: bool,
}

impl Screen {
    /// Connects to display `name` (e.g. `":1"`).
    pub fn connect(name: &str) -> Result<Screen, ScreenError> {
        let (conn, screen_num) = RustConnection::connect(Some(name))?;
        let screen = &conn.setup().roots[screen_num];
        let root = screen.root;
        let size = DisplaySize {
            width: screen.width_in_pixels,
            height: screen.height_in_pixels,
        };
        let depth = screen.root_depth;
        let bpp = conn
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        if bpp != 32 {
            return Err(ScreenError::Format(bpp));
        }
        let len = size.width as usize * size.height as usize * 4;
        // Without MIT-SHM (a remote display), fall back to plain GetImage.
        let shm = match conn.extension_information(x11rb::protocol::shm::X11_EXTENSION_NAME)? {
            Some(_) => match SharedBuffer::new(&conn, len) {
                Ok(buffer) => Some(buffer),
                Err(e) => {
                    tracing::warn!(error = %e, "MIT-SHM unavailable; using GetImage");
                    None
                }
            },
            None => None,
        };
        let keymap = Keymap::load(&conn)?;
        // The version must be asked before any other XFixes request.
        let xfixes = conn
            .extension_information(x11rb::protocol::xfixes::X11_EXTENSION_NAME)?
            .is_some()
            && conn
                .xfixes_query_version(4, 0)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some();
        Ok(Screen {
            conn,
            root,
            size,
            shm,
            keymap,
            xfixes,
        })
    }

    pub fn size(&self) -> DisplaySize {
        self.size
    }

    /// Whether `(x, y)` lies on the display.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x < self.size.width as u32 && y < self.size.height as u32
    }

    /// The pixels of `rect` as packed RGB.
    pub fn capture(&mut self, rect: Rect) -> Result<Vec<u8>, ScreenError> {
        let pixels = rect.width as usize * rect.height as usize;
        let mut rgb = Vec::with_capacity(pixels * 3);
        let push = |rgb: &mut Vec<u8>, bgrx: &[u8]| {
            for px in bgrx.chunks_exact(4) {
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        };
        if let Some(shm) = &self.shm {
            self.conn
                .shm_get_image(
                    self.root,
                    rect.x as i16,
                    rect.y as i16,
                    rect.width,
                    rect.height,
                    !0,
                    ImageFormat::Z_PIXMAP.into(),
                    shm.seg,
                    0,
                )?
                .reply()?;
            push(&mut rgb, shm.bytes(pixels * 4));
        } else {
            let reply = self
                .conn
                .get_image(
                    ImageFormat::Z_PIXMAP,
                    self.root,
                    rect.x as i16,
                    rect.y as i16,
                    rect.width,
                    rect.height,
                    !0,
                )?
                .reply()?;
            push(&mut rgb, &reply.data);
        }
        Ok(rgb)
    }

    /// Draws the mouse pointer into `rgb`, a capture of `rect`: screen
    /// grabs never show it, and a model (like a person) wants to see where
    /// it is — Anthropic's reference takes its screenshots with it too.
    pub fn draw_pointer(&self, rgb: &mut [u8], rect: Rect) -> Result<(), ScreenError> {
        if !self.xfixes {
            return Ok(());
        }
        let cursor = self.conn.xfixes_get_cursor_image()?.reply()?;
        let left = cursor.x as i32 - cursor.xhot as i32 - rect.x as i32;
        let top = cursor.y as i32 - cursor.yhot as i32 - rect.y as i32;
        let (w, h) = (cursor.width as i32, cursor.height as i32);
        for cy in 0..h {
            let y = top + cy;
            if y < 0 || y >= rect.height as i32 {
                continue;
            }
            for cx in 0..w {
                let x = left + cx;
                if x < 0 || x >= rect.width as i32 {
                    continue;
                }
                let Some(&argb) = cursor.cursor_image.get((cy * w + cx) as usize) else {
                    continue;
                };
                // Premultiplied ARGB over the captured pixel.
                let a = argb >> 24;
                if a == 0 {
                    continue;
                }
                let at = ((y * rect.width as i32 + x) * 3) as usize;
                for (i, shift) in [16u32, 8, 0].into_iter().enumerate() {
                    let src = (argb >> shift) & 0xff;
                    let dst = rgb[at + i] as u32;
                    rgb[at + i] = (src + dst * (255 - a) / 255).min(255) as u8;
                }
            }
        }
        Ok(())
    }

    /// The whole display as a PNG of `size` (the display's own or smaller),
    /// with the pointer drawn in when `pointer` is set.
    pub fn png_sized(&mut self, size: DisplaySize, pointer: bool) -> Result<Vec<u8>, ScreenError> {
        let full = self.full();
        let mut rgb = self.capture(full)?;
        if pointer {
            self.draw_pointer(&mut rgb, full)?;
        }
        if size == self.size {
            return encode_png(&rgb, full.width, full.height);
        }
        let small = downscale(&rgb, full.width, full.height, size.width, size.height);
        encode_png(&small, size.width, size.height)
    }

    /// `rect` as a PNG.
    pub fn png(&mut self, rect: Rect) -> Result<Vec<u8>, ScreenError> {
        let rgb = self.capture(rect)?;
        encode_png(&rgb, rect.width, rect.height)
    }

    /// The whole display.
    pub fn full(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: self.size.width,
            height: self.size.height,
        }
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), ScreenError> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0)?;
        Ok(())
    }

    /// Waits until the server has handled every request sent so far.
    pub fn sync(&self) -> Result<(), ScreenError> {
        self.conn.sync()?;
        Ok(())
    }

    pub fn move_to(&self, x: u16, y: u16) -> Result<(), ScreenError> {
        self.fake(xproto::MOTION_NOTIFY_EVENT, 0, x as i16, y as i16)?;
        self.sync()
    }

    pub fn button(&self, button: Button, down: bool) -> Result<(), ScreenError> {
        let kind = if down {
            xproto::BUTTON_PRESS_EVENT
        } else {
            xproto::BUTTON_RELEASE_EVENT
        };
        self.fake(kind, button as u8, 0, 0)?;
        self.sync()
    }

    pub fn click(&self, button: Button, times: u32) -> Result<(), ScreenError> {
        for _ in 0..times {
            self.fake(xproto::BUTTON_PRESS_EVENT, button as u8, 0, 0)?;
            self.fake(xproto::BUTTON_RELEASE_EVENT, button as u8, 0, 0)?;
        }
        self.sync()
    }

    pub fn pointer(&self) -> Result<(i16, i16), ScreenError> {
        let reply = self.conn.query_pointer(self.root)?.reply()?;
        Ok((reply.root_x, reply.root_y))
    }

    /// The keycode that produces `keysym`, binding a spare keycode to it
    /// when the layout has none; and whether Shift is needed.
    fn keycode(&mut self, keysym: u32) -> Result<Option<(u8, bool)>, ScreenError> {
        if let Some(found) = self.keymap.find(keysym) {
            return Ok(Some(found));
        }
        if self.keymap.dynamic.is_empty() {
            return Ok(None);
        }
        let slot = self.keymap.next_dynamic % self.keymap.dynamic.len();
        self.keymap.next_dynamic = slot + 1;
        let code = self.keymap.dynamic[slot];
        self.keymap.bind(&self.conn, code, keysym)?;
        // Clients re-read the mapping when they see MappingNotify; give
        // them a moment before the key arrives, as xdotool does.
        std::thread::sleep(std::time::Duration::from_millis(50));
        Ok(Some((code, false)))
    }

    /// Presses (or releases) one keysym; `None` if no keycode can produce it.
    fn key(&mut self, keysym: u32, down: bool) -> Result<Option<bool>, ScreenError> {
        let Some((code, shift)) = self.keycode(keysym)? else {
            return Ok(None);
        };
        let kind = if down {
            xproto::KEY_PRESS_EVENT
        } else {
            xproto::KEY_RELEASE_EVENT
        };
        self.fake(kind, code, 0, 0)?;
        Ok(Some(shift))
    }

    /// Presses a chord's keys in order (adding Shift where a key needs it).
    pub fn chord_down(&mut self, chord: &Chord) -> Result<(), ScreenError> {
        for &keysym in chord {
            let shift = self.keymap.find(keysym).map(|(_, s)| s).unwrap_or(false);
            if shift && !chord.contains(&SHIFT_L) {
                self.key(SHIFT_L, true)?;
            }
            if self.key(keysym, true)?.is_none() {
                return Err(ScreenError::NoKeycode(keysym));
            }
        }
        self.sync()
    }

    /// Releases a chord's keys in reverse order.
    pub fn chord_up(&mut self, chord: &Chord) -> Result<(), ScreenError> {
        for &keysym in chord.iter().rev() {
            let shift = self.keymap.find(keysym).map(|(_, s)| s).unwrap_or(false);
            self.key(keysym, false)?;
            if shift && !chord.contains(&SHIFT_L) {
                self.key(SHIFT_L, false)?;
            }
        }
        self.sync()
    }

    /// Types `text` character by character.
    pub fn type_text(&mut self, text: &str) -> Result<(), ScreenError> {
        for c in text.chars() {
            let chord = vec![crate::keys::keysym_of_char(c)];
            self.chord_down(&chord)?;
            self.chord_up(&chord)?;
        }
        Ok(())
    }
}

/// Shrinks packed RGB from `w`×`h` to `nw`×`nh` (no larger), each output
/// pixel the average of the source pixels it covers: screenshots for a
/// model told of a smaller screen than the real one.
pub fn downscale(rgb: &[u8], w: u16, h: u16, nw: u16, nh: u16) -> Vec<u8> {
    let (w, h, nw, nh) = (
        w as usize,
        h as usize,
        nw.max(1) as usize,
        nh.max(1) as usize,
    );
    let mut out = Vec::with_capacity(nw * nh * 3);
    for oy in 0..nh {
        let (y0, y1) = (oy * h / nh, ((oy + 1) * h / nh).max(oy * h / nh + 1).min(h));
        for ox in 0..nw {
            let (x0, x1) = (ox * w / nw, ((ox + 1) * w / nw).max(ox * w / nw + 1).min(w));
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &rgb[(y * w + x0) * 3..(y * w + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += px[0] as u32;
                    sum[1] += px[1] as u32;
                    sum[2] += px[2] as u32;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(sum.iter().map(|c| ((c + n / 2) / n) as u8));
        }
    }
    out
}

/// Encodes packed RGB as a PNG, with fast compression (screenshots are
/// taken often and travel a short way).
pub fn encode_png(rgb: &[u8], width: u16, height: u16) -> Result<Vec<u8>, ScreenError> {
    let mut out = Vec::with_capacity(rgb.len() / 4);
    let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn downscaling_averages_the_covered_pixels() {
        // 4x2: left half black, right half white → 2x1: one black, one white.
        let mut rgb = Vec::new();
        for _ in 0..2 {
            rgb.extend_from_slice(&[0; 6]);
            rgb.extend_from_slice(&[255; 6]);
        }
        assert_eq!(
            super::downscale(&rgb, 4, 2, 2, 1),
            vec![0, 0, 0, 255, 255, 255]
        );
        // 3x1 → 2x1: every output pixel is covered.
        let out = super::downscale(&[10, 10, 10, 20, 20, 20, 30, 30, 30], 3, 1, 2, 1);
        assert_eq!(out, vec![10, 10, 10, 25, 25, 25]);
    }
}
