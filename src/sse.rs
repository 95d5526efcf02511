//! A watcher of OpenAI-style Server-Sent Events passing through the gateway:
//! it notes, across arbitrary chunk boundaries, whether `data: [DONE]`
//! arrived and the last `usage`. Fed with [`SseWatcher::feed`] it never
//! changes or holds back bytes; with [`SseWatcher::pass`] (a watcher made
//! by [`SseWatcher::hiding_usage`]) it also takes out the usage-only chunk
//! the gateway asked for on the client's behalf, holding back each event
//! until it is whole.

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
    /// Take out usage-only chunks (`choices: []` with `usage`).
    hide_usage: bool,
}

impl SseWatcher {
    pub fn new() -> SseWatcher {
        SseWatcher::default()
    }

    /// A watcher whose [`Self::pass`] takes out usage-only chunks: for a
    /// client that did not ask for usage when the gateway did.
    pub fn hiding_usage() -> SseWatcher {
        SseWatcher {
            hide_usage: true,
            ..SseWatcher::default()
        }
    }

    /// Notes what `chunk` completes and returns what to send on: `chunk`
    /// itself, or (hiding usage) the whole events it completes but the
    /// usage-only ones, the start of an unfinished event held back until
    /// its end arrives.
    pub fn pass(&mut self, chunk: bytes::Bytes) -> bytes::Bytes {
        if !self.hide_usage {
            self.feed(&chunk);
            return chunk;
        }
        let mut out = Vec::with_capacity(self.pending.len() + chunk.len());
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if self.skipping {
                // An oversized event passes through uninspected to its end;
                // `pending` keeps only its last bytes, where a separator
                // split across chunks begins.
                match find_event_end(&self.pending, rest) {
                    Some((taken, _)) => {
                        out.extend_from_slice(&rest[..taken]);
                        self.pending.clear();
                        self.skipping = false;
                        rest = &rest[taken..];
                    }
                    None => {
                        out.extend_from_slice(rest);
                        self.keep_tail(rest);
                        break;
                    }
                }
                continue;
            }
            match find_event_end(&self.pending, rest) {
                Some((taken, separator)) => {
                    self.pending.extend_from_slice(&rest[..taken]);
                    let body_len = self.pending.len().saturating_sub(separator);
                    let event = std::mem::take(&mut self.pending);
                    if !self.inspect(&event[..body_len]) {
                        out.extend_from_slice(&event);
                    }
                    self.pending = event;
                    self.pending.clear();
                    rest = &rest[taken..];
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    if self.pending.len() > MAX_EVENT {
                        out.extend_from_slice(&self.pending);
                        let whole = std::mem::take(&mut self.pending);
                        self.keep_tail(&whole);
                        self.skipping = true;
                    }
                    break;
                }
            }
        }
        out.into()
    }

    /// While skipping an oversized event: keeps the last 3 bytes seen (of
    /// `pending` then `more`), where a separator split across chunks begins.
    fn keep_tail(&mut self, more: &[u8]) {
        self.pending
            .extend_from_slice(&more[more.len().saturating_sub(3)..]);
        let cut = self.pending.len().saturating_sub(3);
        self.pending.drain(..cut);
    }

    /// What [`Self::pass`] still holds back (an event the stream did not
    /// finish), to send on when the stream ends.
    pub fn held_back(&mut self) -> Option<bytes::Bytes> {
        (self.hide_usage && !self.skipping && !self.pending.is_empty())
            .then(|| std::mem::take(&mut self.pending).into())
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
                    if self.skipping {
                        self.keep_tail(rest);
                    } else {
                        self.pending.extend_from_slice(rest);
                        if self.pending.len() > MAX_EVENT {
                            let whole = std::mem::take(&mut self.pending);
                            self.keep_tail(&whole);
                            self.skipping = true;
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Notes one whole event; `true` when it is a usage-only chunk to hide.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(event) else {
            return false;
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
            return false;
        }
        self.events += 1;
        if data.trim() == "[DONE]" {
            self.done = true;
            return false;
        }
        // Only chunks that can carry usage or an error are parsed.
        if !data.contains("\"usage\"") && !data.contains("\"error\"") {
            return false;
        }
        let Ok(value) = serde_json::from_str::<Value>(&data) else {
            return false;
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
            let no_choices = value
                .get("choices")
                .is_none_or(|c| c.as_array().is_some_and(Vec::is_empty));
            return self.hide_usage && no_choices;
        }
        false
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
    fn hiding_usage_takes_out_only_the_usage_chunk_at_any_boundary() {
        let bytes = STREAM.as_bytes();
        let expected = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
            data: [DONE]\n\n";
        for cut in 0..bytes.len() {
            let mut w = SseWatcher::hiding_usage();
            let mut out = w
                .pass(bytes::Bytes::copy_from_slice(&bytes[..cut]))
                .to_vec();
            out.extend_from_slice(&w.pass(bytes::Bytes::copy_from_slice(&bytes[cut..])));
            assert!(w.held_back().is_none(), "cut at {cut}");
            assert_eq!(String::from_utf8(out).unwrap(), expected, "cut at {cut}");
            assert_eq!(w.usage().unwrap().total(), 5);
            assert!(w.done());
        }
        // A chunk with choices and usage (vLLM's continuous usage) stays.
        let mut w = SseWatcher::hiding_usage();
        let both = "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        assert_eq!(&w.pass(both.into())[..], both.as_bytes());
        // What a stream cut short left unfinished is handed back.
        let mut w = SseWatcher::hiding_usage();
        assert!(w.pass("data: {\"cho".into()).is_empty());
        assert_eq!(w.held_back().unwrap(), "data: {\"cho");
        // Without hiding, bytes pass as they are.
        let mut w = SseWatcher::new();
        assert_eq!(&w.pass(STREAM.into())[..], bytes);
    }

    #[test]
    fn a_stream_cut_short_is_not_done() {
        let mut w = SseWatcher::new();
        w.feed(&STREAM.as_bytes()[..STREAM.len() - 4]);
        assert!(!w.done());
    }

    #[test]
    fn after_an_oversized_event_a_split_separator_is_still_found() {
        for hiding in [false, true] {
            let mut w = if hiding {
                SseWatcher::hiding_usage()
            } else {
                SseWatcher::new()
            };
            let mut out = w.pass("data: ".into()).to_vec();
            out.extend_from_slice(&w.pass(vec![b'x'; MAX_EVENT + 10].into()));
            // The blank line ending the big event is split across chunks.
            out.extend_from_slice(&w.pass("\n".into()));
            out.extend_from_slice(
                &w.pass(
                    "\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4}}\n\ndata: [DONE]\n\n"
                        .into(),
                ),
            );
            assert!(w.done());
            assert_eq!(w.usage().unwrap().prompt_tokens, 4, "hiding: {hiding}");
            assert_eq!(
                String::from_utf8_lossy(&out).contains("usage"),
                !hiding,
                "the usage chunk is hidden only when asked"
            );
            assert!(out.len() > MAX_EVENT, "the big event passed through");
        }
    }

    #[test]
    fn an_oversized_event_is_skipped_not_buffered() {
        let mut w = SseWatcher::new();
        w.feed(b"data: ");
        w.feed(&vec![b'x'; MAX_EVENT + 10]);
        assert!(w.pending.len() <= 3, "only the tail is kept");
        w.feed(b"\n\ndata: [DONE]\n\n");
        assert!(w.done());
    }
}
