//! A server-sent events reader: splits a byte stream into events
//! (`event:` name and joined `data:` lines), tolerant of CRLF and of
//! comment lines.

use bytes::BytesMut;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::AttemptError;

/// The events of a streamed answer; a stream that breaks or ends before
/// its last event failed (and is worth another try).
pub(crate) struct SseStream {
    bytes: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    reader: SseReader,
    /// What the stream should have sent before ending, for the error.
    last: &'static str,
}

impl SseStream {
    pub(crate) fn new(response: reqwest::Response, last: &'static str) -> SseStream {
        SseStream {
            bytes: response.bytes_stream().boxed(),
            reader: SseReader::default(),
            last,
        }
    }

    pub(crate) async fn next(&mut self) -> Result<SseEvent, AttemptError> {
        loop {
            if let Some(event) = self.reader.next_event() {
                return Ok(event);
            }
            match self.bytes.next().await {
                Some(Ok(chunk)) => self.reader.push(&chunk),
                Some(Err(e)) => return Err(AttemptError::transient("stream_cut", e.to_string())),
                None => {
                    return Err(AttemptError::transient(
                        "stream_cut",
                        format!("the stream ended before {}", self.last),
                    ))
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Collects bytes and hands out whole events.
#[derive(Default)]
pub(crate) struct SseReader {
    buf: BytesMut,
    current: SseEvent,
    has_data: bool,
}

impl SseReader {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if the bytes so far hold one.
    pub(crate) fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line = self.buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    self.has_data = false;
                    return Some(std::mem::take(&mut self.current));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let mut r = SseReader::default();
        r.push(b"event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\nevent: message_st");
        assert_eq!(
            r.next_event(),
            Some(SseEvent {
                event: Some("ping".into()),
                data: "{\"type\": \"ping\"}".into()
            })
        );
        assert_eq!(r.next_event(), None);
        r.push(b"op\ndata: {\"a\":\ndata: 1}\n: comment\n\ndata: [DONE]\n\n");
        assert_eq!(r.next_event().unwrap().data, "{\"a\":\n1}");
        assert_eq!(
            r.next_event(),
            Some(SseEvent {
                event: None,
                data: "[DONE]".into()
            })
        );
        assert_eq!(r.next_event(), None);
    }
}
