//! Streamed answers (`text/event-stream`) and their events.

use std::time::{Duration, Instant};

/// Reads a streamed answer to its end (a broken stream or a body that is not
/// UTF-8 panics), noting when each chunk arrived, measured from `started`.
pub async fn read_stream(
    mut response: reqwest::Response,
    started: Instant,
) -> (String, Vec<Duration>) {
    let mut bytes = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("the stream reads to its end") {
        arrivals.push(started.elapsed());
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes).expect("a UTF-8 stream");
    (text, arrivals)
}

/// The events of an SSE text, each trimmed and without its `data: ` prefix
/// where it has one.
pub fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim().strip_prefix("data: ").unwrap_or(e).to_string())
        .collect()
}

/// The data of each event of an SSE text in which every event is exactly one
/// `data: ` line; panics on any other event.
pub fn data_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {e:?}"))
        })
        .collect()
}
