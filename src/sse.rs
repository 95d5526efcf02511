//! A watcher of OpenAI-style Server-Sent Events passing through the gateway:
//! it never changes or holds back bytes, it only notes, across arbitrary
//! chunk boundaries, whether `data: [DONE]` arrived and the last `usage`.

use serde_json::Value;

/// Longest event kept while waiting for its end; a longer one is skipped
/// (it still passes through, it is only not inspected).
const MAX_EVENT: usize = 1024 * 1024;

/// Prompt and completion tokens an upstream reported for one answer: a
/// stream's final usage chunk, or a whole answer's `usage` (read as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Incremental scanner over an SSE byte stream.
#[derive(Debug, Default)]
pub struct SseWatcher {
    pending: Vec<u8>,
    skipping: bool,
    done: bool,
    usage: Option<Usage>,
    events: u64,
    errors: u64,
}

impl SseWatcher {
    pub fn new() -> SseWatcher {
        SseWatcher::default()
    }

    /// Notes what a chunk of the stream completes.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match find_event_end(&self.pending, rest) {
                Some((taken, separator)) => {
                    if !self.skipping {
                        self.pending.extend_from_slice(&rest[..taken]);
                        let event = std::mem::take(&mut self.pending);
                        let body_len = event.len().saturating_sub(separator);
                        self.inspect(&event[..body_len]);
                        // Back, so that its capacity serves the next event.
                        self.pending = event;
                    }
                    self.pending.clear();
                    self.skipping = false;
                    rest = &rest[taken..];
                }
                None => {
                    if !self.skipping {
                        self.pending.extend_from_slice(rest);
                        if self.pending.len() > MAX_EVENT {
                            self.pending.clear();
                            self.skipping = true;
                        }
                    }
                    return;
                }
            }
        }
    }

    fn inspect(&mut self, event: &[u8]) {
        let Ok(text) = std::str::from_utf8(event) else {
            return;
        };
        // An event's data is the join of its `data:` lines.
        let mut data = String::new();
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if data.is_empty() {
            return;
        }
        self.events += 1;
        if data.trim() == "[DONE]" {
            self.done = true;
            return;
        }
        // Only chunks that can carry usage or an error are parsed.
        if !data.contains("\"usage\"") && !data.contains("\"error\"") {
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        if value.get("error").is_some()
            || value.get("object").and_then(Value::as_str) == Some("error")
        {
            self.errors += 1;
        }
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(Usage {
                prompt_tokens: n("prompt_tokens"),
                completion_tokens: n("completion_tokens"),
            });
        }
    }

    /// Whether `data: [DONE]` has passed.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The last usage seen, if the upstream sent one.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Events with data seen so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Error events the upstream sent inside the stream.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

/// Where the event that `pending` began ends within `rest`: the bytes of
/// `rest` it takes and the length of the blank-line separator ending it.
fn find_event_end(pending: &[u8], rest: &[u8]) -> Option<(usize, usize)> {
    // A separator may straddle the chunk boundary: look at the tail of
    // `pending` joined with `rest`.
    let tail_len = pending.len().min(3);
    let tail = &pending[pending.len() - tail_len..];
    let joined_at = |i: usize| -> u8 {
        if i < tail_len {
            tail[i]
        } else {
            rest[i - tail_len]
        }
    };
    let total = tail_len + rest.len();
    let mut i = 0;
    while i < total {
        let b = joined_at(i);
        if b == b'\n' || b == b'\r' {
            for separator in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
                let end = i + separator.len();
                if end <= total
                    && end > tail_len
                    && (0..separator.len()).all(|k| joined_at(i + k) == separator[k])
                {
                    return Some((end - tail_len, separator.len()));
                }
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn a_whole_stream_is_read_at_once() {
        let mut w = SseWatcher::new();
        w.feed(STREAM.as_bytes());
        assert!(w.done());
        assert_eq!(
            w.usage(),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            })
        );
        assert_eq!(w.events(), 3);
    }

    #[test]
    fn any_chunk_boundary_gives_the_same_result() {
        let bytes = STREAM.as_bytes();
        for cut in 0..bytes.len() {
            for cut2 in cut..bytes.len() {
                let mut w = SseWatcher::new();
                w.feed(&bytes[..cut]);
                w.feed(&bytes[cut..cut2]);
                w.feed(&bytes[cut2..]);
                assert!(w.done(), "cuts at {cut}, {cut2}");
                assert_eq!(w.events(), 3, "cuts at {cut}, {cut2}");
                assert_eq!(w.usage().unwrap().completion_tokens, 2);
            }
        }
    }

    #[test]
    fn crlf_separators_and_error_events() {
        let mut w = SseWatcher::new();
        w.feed(b"data: {\"error\":{\"message\":\"boom\"}}\r\n\r\ndata: [DONE]\r\n\r\n");
        assert_eq!(w.errors(), 1);
        assert!(w.done());
    }

    #[test]
    fn a_stream_cut_short_is_not_done() {
        let mut w = SseWatcher::new();
        w.feed(&STREAM.as_bytes()[..STREAM.len() - 4]);
        assert!(!w.done());
    }

    #[test]
    fn an_oversized_event_is_skipped_not_buffered() {
        let mut w = SseWatcher::new();
        w.feed(b"data: ");
        w.feed(&vec![b'x'; MAX_EVENT + 10]);
        assert!(w.pending.is_empty());
        w.feed(b"\n\ndata: [DONE]\n\n");
        assert!(w.done());
    }
}
