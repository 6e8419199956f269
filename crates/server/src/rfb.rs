//! A view-only guard for RFB (VNC) client streams: follows the client's
//! side of the protocol (RFC 6143) and drops keyboard, pointer, clipboard
//! and desktop-size messages, so that a viewer watches without acting.
//! Everything else passes unchanged. A message it cannot size ends the
//! stream rather than letting unparsed bytes through.

/// Where the client's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The 12-byte ProtocolVersion.
    Version,
    /// The security type the client picks (RFB 3.7 and later).
    Security,
    /// The 16-byte VNC-authentication response.
    Challenge,
    /// ClientInit: the shared flag.
    Init,
    /// Normal client messages.
    Messages,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected RFB client message type {0}")]
pub struct UnknownMessage(pub u8);

#[derive(Debug)]
pub struct ViewOnly {
    stage: Stage,
    buf: Vec<u8>,
    /// Bytes of a dropped message still to come: discarded as they arrive,
    /// never held (a clipboard message may announce gigabytes).
    skip: usize,
    /// Messages dropped so far (for the log and tests).
    pub dropped: u64,
}

impl Default for ViewOnly {
    fn default() -> Self {
        ViewOnly {
            stage: Stage::Version,
            buf: Vec::new(),
            skip: 0,
            dropped: 0,
        }
    }
}

/// Why a message is dropped or kept, and how long it is; `None` until
/// enough of it has arrived to tell.
fn message_len(buf: &[u8]) -> Result<Option<(usize, bool)>, UnknownMessage> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let u16_at = |i: usize| -> Option<usize> {
        buf.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |i: usize| -> Option<usize> {
        buf.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // (length, keep)
    let sized = match kind {
        0 => Some((20, true)),                                    // SetPixelFormat
        2 => u16_at(2).map(|n| (4 + 4 * n, true)),                // SetEncodings
        3 => Some((10, true)),                                    // FramebufferUpdateRequest
        4 => Some((8, false)),                                    // KeyEvent
        5 => Some((6, false)),                                    // PointerEvent
        6 => u32_at(4).map(|n| (8 + n, false)),                   // ClientCutText
        150 => Some((10, true)),                                  // EnableContinuousUpdates
        248 => buf.get(8).map(|&n| (9 + n as usize, true)),       // Fence
        250 => Some((4, false)),                                  // xvp (shutdown, reboot)
        251 => buf.get(6).map(|&n| (8 + 16 * n as usize, false)), // SetDesktopSize
        other => return Err(UnknownMessage(other)),
    };
    Ok(sized)
}

impl ViewOnly {
    /// Feeds bytes from the client; returns those to forward to the server.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<u8>, UnknownMessage> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::new();
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(out);
                }
            }
            let (len, keep) = match self.stage {
                Stage::Version => (12, true),
                Stage::Security => (1, true),
                Stage::Challenge => (16, true),
                Stage::Init => (1, true),
                Stage::Messages => match message_len(&self.buf)? {
                    Some(sized) => sized,
                    None => return Ok(out),
                },
            };
            if !keep {
                // Only normal messages are dropped; the stage stays.
                let n = len.min(self.buf.len());
                self.buf.drain(..n);
                self.skip = len - n;
                self.dropped += 1;
                continue;
            }
            if self.buf.len() < len {
                return Ok(out);
            }
            let message: Vec<u8> = self.buf.drain(..len).collect();
            self.stage = match self.stage {
                // Before RFB 3.7 the server picks the security type (servers
                // treat unknown older versions as 3.3): nothing to read.
                Stage::Version if message.as_slice() < b"RFB 003.007".as_slice() => Stage::Init,
                Stage::Version => Stage::Security,
                Stage::Security if message[0] == 2 => Stage::Challenge,
                Stage::Security | Stage::Challenge => Stage::Init,
                Stage::Init | Stage::Messages => Stage::Messages,
            };
            out.extend_from_slice(&message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> Vec<u8> {
        let mut h = b"RFB 003.008\n".to_vec();
        h.push(1); // security: None
        h.push(1); // ClientInit: shared
        h
    }

    #[test]
    fn input_is_dropped_and_everything_else_passes_even_split_anywhere() {
        let mut stream = handshake();
        let encodings = [2u8, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xcc];
        let request = [3u8, 0, 0, 0, 0, 0, 4, 0, 3, 0];
        let key = [4u8, 1, 0, 0, 0, 0, 0, 0x61];
        let pointer = [5u8, 1, 0, 10, 0, 20];
        let cut = [6u8, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c'];
        for m in [&encodings[..], &request, &key, &pointer, &cut, &request] {
            stream.extend_from_slice(m);
        }
        let mut expected = handshake();
        expected.extend_from_slice(&encodings);
        expected.extend_from_slice(&request);
        expected.extend_from_slice(&request);
        for chunk in [1, 2, 3, 7, stream.len()] {
            let mut f = ViewOnly::default();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                out.extend(f.feed(piece).unwrap());
            }
            assert_eq!(out, expected, "chunks of {chunk}");
            assert_eq!(f.dropped, 3);
        }
    }

    #[test]
    fn vnc_authentication_and_rfb_3_3_handshakes_are_followed() {
        let mut f = ViewOnly::default();
        let mut stream = b"RFB 003.008\n".to_vec();
        stream.push(2);
        stream.extend([5u8; 16]);
        stream.push(0);
        stream.extend([5u8, 0, 0, 1, 0, 1]);
        assert_eq!(f.feed(&stream).unwrap().len(), stream.len() - 6);

        let mut f = ViewOnly::default();
        let mut stream = b"RFB 003.003\n".to_vec();
        stream.push(1);
        stream.extend([4u8, 1, 0, 0, 0, 0, 0, 0x61]);
        assert_eq!(f.feed(&stream).unwrap(), &stream[..13]);
    }

    #[test]
    fn a_huge_clipboard_message_is_skipped_without_being_held() {
        let mut f = ViewOnly::default();
        let mut stream = handshake();
        stream.extend([6u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(f.feed(&stream).unwrap(), handshake());
        for _ in 0..100 {
            assert!(f.feed(&[b'x'; 65536]).unwrap().is_empty());
        }
        assert!(f.buf.is_empty(), "nothing of it is kept");
        assert_eq!(f.skip, 0xffff_ffff - 100 * 65536);
    }

    #[test]
    fn an_unknown_message_ends_the_stream() {
        let mut f = ViewOnly::default();
        let mut stream = handshake();
        stream.push(99);
        assert_eq!(f.feed(&stream), Err(UnknownMessage(99)));
    }
}
