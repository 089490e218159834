//! Incremental framing of streamed bodies: lines out of arbitrary byte chunks (NDJSON, Ollama)
//! and events out of lines (server-sent events, OpenAI).
//!
//! Network chunks split lines — and multi-byte UTF-8 characters — anywhere, so bytes are
//! buffered until a newline and only complete lines are decoded.

/// Splits a byte stream into lines (`\n` or `\r\n`).
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    pending: Vec<u8>,
}

/// A line that is not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotUtf8;

impl LineBuffer {
    /// Adds a chunk and returns the lines it completed, without their terminators.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, NotUtf8> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            let line = if self.pending.is_empty() {
                decode(head)?
            } else {
                self.pending.extend_from_slice(head);
                let line = decode(&self.pending)?;
                self.pending.clear();
                line
            };
            lines.push(line);
            rest = &tail[1..];
        }
        self.pending.extend_from_slice(rest);
        Ok(lines)
    }

    /// The unterminated last line, if the stream ended without a newline.
    pub(crate) fn finish(&mut self) -> Result<Option<String>, NotUtf8> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let line = decode(&self.pending)?;
        self.pending.clear();
        Ok(Some(line))
    }
}

fn decode(bytes: &[u8]) -> Result<String, NotUtf8> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec()).map_err(|_| NotUtf8)
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, when present.
    pub(crate) event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// Assembles server-sent events from lines (the framing of the HTML SSE specification:
/// fields until a blank line, `:` comments, one optional space after the colon).
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    event: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds one line; returns an event when the line ends one.
    pub(crate) fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` matter for reconnecting EventSource clients, not for one call.
            _ => {}
        }
        None
    }

    /// Dispatches an event left open when the stream ended without its blank line; servers
    /// that omit the final blank line still mean the event.
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|data| SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every possible pair of points and checks the same lines come
    /// out.
    #[test]
    fn lines_survive_any_chunking() {
        let input = "{\"a\":\"größe\"}\r\n{\"b\":2}\n\n{\"c\":\"→\"}";
        let bytes = input.as_bytes();
        let expected = vec!["{\"a\":\"größe\"}", "{\"b\":2}", "", "{\"c\":\"→\"}"];
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut buf = LineBuffer::default();
                let mut got = Vec::new();
                for part in [&bytes[..i], &bytes[i..j], &bytes[j..]] {
                    got.extend(buf.push(part).unwrap());
                }
                got.extend(buf.finish().unwrap());
                assert_eq!(got, expected, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut buf = LineBuffer::default();
        let mut got = Vec::new();
        for b in "x\ny\n".bytes() {
            got.extend(buf.push(&[b]).unwrap());
        }
        assert_eq!(got, vec!["x", "y"]);
        assert_eq!(buf.finish().unwrap(), None);
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let mut buf = LineBuffer::default();
        assert_eq!(buf.push(b"\xff\xfe\n"), Err(NotUtf8));
    }

    fn events(text: &str) -> Vec<SseEvent> {
        let mut buf = LineBuffer::default();
        let mut dec = SseDecoder::default();
        let mut out = Vec::new();
        for line in buf.push(text.as_bytes()).unwrap() {
            out.extend(dec.line(&line));
        }
        if let Some(line) = buf.finish().unwrap() {
            out.extend(dec.line(&line));
        }
        out.extend(dec.finish());
        out
    }

    #[test]
    fn sse_framing() {
        let got = events(
            ": keep-alive\n\ndata: {\"x\":1}\n\ndata:{\"y\":2}\r\n\r\nevent: error\ndata: a\ndata: b\n\ndata: [DONE]",
        );
        assert_eq!(
            got,
            vec![
                SseEvent {
                    event: None,
                    data: "{\"x\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "{\"y\":2}".into()
                },
                SseEvent {
                    event: Some("error".into()),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }

    #[test]
    fn sse_ignores_blank_runs_and_unknown_fields() {
        let got = events("\n\nid: 4\nretry: 10\n\ndata\n\n");
        assert_eq!(
            got,
            vec![SseEvent {
                event: None,
                data: String::new()
            }]
        );
    }

    #[test]
    fn sse_event_split_across_chunks() {
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"hé\"}}]}\n\n";
        let bytes = text.as_bytes();
        for i in 0..=bytes.len() {
            let mut buf = LineBuffer::default();
            let mut dec = SseDecoder::default();
            let mut out = Vec::new();
            for part in [&bytes[..i], &bytes[i..]] {
                for line in buf.push(part).unwrap() {
                    out.extend(dec.line(&line));
                }
            }
            assert_eq!(out.len(), 1, "split at {i}");
            assert_eq!(
                out[0].data,
                "{\"choices\":[{\"delta\":{\"content\":\"hé\"}}]}"
            );
        }
    }
}
