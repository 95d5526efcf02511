//! Client abuse over raw TCP: slow heads and bodies, idle connections,
//! oversized heads, pipelining, ambiguous framing and absurd lengths. Each is
//! refused with an exact answer while a well-behaved client next to it keeps
//! getting its answers.

mod common;

use common::*;
use context7_lb::sim::SimConfig;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const TIMEOUT: Duration = Duration::from_secs(1);

/// A gateway with one simulated upstream and one-second client timeouts.
async fn guarded_gateway() -> (Vec<context7_lb::sim::SimUpstream>, RunningGateway) {
    let sims = sims(vec![SimConfig::new("a")]).await;
    let mut config = config();
    config.limits.client_header_timeout = TIMEOUT;
    config.limits.client_body_timeout = TIMEOUT;
    config.limits.client_keepalive_timeout = TIMEOUT;
    let gw = gateway(&sims, config).await;
    (sims, gw)
}

/// A well-behaved client asking for research every 20 ms until stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(u16, Duration)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the bystander sends, so that its requests can be told apart upstream.
const BYSTANDER_QUERY: &str = "bystander";

impl Bystander {
    fn start(gw: &RunningGateway) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let url = format!("{}/v1/research", gw.url());
        let (flag, record) = (stop.clone(), answers.clone());
        let task = tokio::spawn(async move {
            let client = client();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!({ "query": BYSTANDER_QUERY }).to_string())
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                record.lock().unwrap().push((status, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Bystander {
            stop,
            answers,
            task,
        }
    }

    /// Lets it make at least five requests, stops it, and checks that every
    /// request it made got a prompt 200.
    async fn unharmed(self) {
        let answers = self.answers.clone();
        wait_until("five bystander requests", || {
            answers.lock().unwrap().len() >= 5
        })
        .await;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let answers = self.answers.lock().unwrap().clone();
        for (status, latency) in &answers {
            assert_eq!(*status, 200, "{answers:?}");
            assert!(*latency < Duration::from_millis(500), "{answers:?}");
        }
    }
}

/// Requests other than the bystander's that reached the upstream.
fn reached_upstream(sim: &context7_lb::sim::SimUpstream) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.json()["messages"][0]["content"] != BYSTANDER_QUERY)
        .count()
}

/// One HTTP/1.1 answer read off a connection: status, header text, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        json_body(&self.body)
    }
}

/// Reads one answer (its body by `Content-Length`) from `reader`, keeping
/// what follows in `pending`; `None` at end of file before any byte.
async fn read_answer(reader: &mut OwnedReadHalf, pending: &mut Vec<u8>) -> Option<Answer> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = reader.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            assert!(
                pending.is_empty(),
                "connection ended mid-answer: {pending:?}"
            );
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while pending.len() < head_end + length {
        let n = reader.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection ended mid-body");
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&pending[head_end..head_end + length]).to_string();
    pending.drain(..head_end + length);
    let status = head[9..12].parse().unwrap();
    Some(Answer { status, head, body })
}

/// Whether the gateway closed the connection (end of file, or a reset).
async fn closed(reader: &mut OwnedReadHalf) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), reader.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connect(gw: &RunningGateway) -> TcpStream {
    TcpStream::connect(gw.address).await.unwrap()
}

fn research_request(body: &str) -> String {
    format!(
        "POST /v1/research HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_off_with_408() {
    let (_sims, gw) = guarded_gateway().await;
    let bystander = Bystander::start(&gw);
    // Several slowloris connections at once, each sending a byte every 150 ms
    // and never finishing its head.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let stream = connect(&gw).await;
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let (mut reader, mut writer) = stream.into_split();
            let trickle = async move {
                for byte in b"POST /v1/research HTTP/1.1\r\nHost: gw\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                    if writer.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            };
            // The client keeps trickling while it waits for an answer.
            let trickle = tokio::spawn(trickle);
            let mut pending = Vec::new();
            let answer = read_answer(&mut reader, &mut pending).await;
            let elapsed = started.elapsed();
            trickle.abort();
            (answer, elapsed, closed(&mut reader).await)
        }));
    }
    for task in slow {
        let (answer, elapsed, closed) = task.await.unwrap();
        let answer = answer.expect("an answer before the close");
        assert_eq!(answer.status, 408, "{answer:?}");
        assert_eq!(
            answer.json(),
            json!({"detail": "Request header not received within 1s"})
        );
        assert!(
            answer.head.contains("Connection: close\r\n"),
            "{}",
            answer.head
        );
        // The gateway's clock starts at its accept, which can come a moment
        // before the client's `started`: a little slack below the timeout.
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(50) && elapsed < TIMEOUT * 3,
            "cut off after {elapsed:?}"
        );
        assert!(closed, "the connection stays open");
    }
    bystander.unharmed().await;
    let metrics = get_text(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"context7_http_requests_total{route="invalid",status="408"} 8"#),
        "{metrics}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_with_408_in_the_routes_format() {
    let (sims, gw) = guarded_gateway().await;
    let bystander = Bystander::start(&gw);
    let cases = [
        (
            "/v1/research",
            json!({"detail": "Request body not received within 1s"}),
        ),
        (
            "/v1/chat/completions",
            json!({"error": {"message": "The request body was not received within 1s.", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    ];
    for (path, want) in cases {
        let stream = connect(&gw).await;
        let (mut reader, mut writer) = stream.into_split();
        let started = Instant::now();
        writer
            .write_all(
                format!("POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let trickle = async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if writer.write_all(b" ").await.is_err() {
                    return;
                }
            }
        };
        let trickle = tokio::spawn(trickle);
        let mut pending = Vec::new();
        let answer = read_answer(&mut reader, &mut pending).await;
        let elapsed = started.elapsed();
        trickle.abort();
        let answer = answer.expect("an answer");
        assert_eq!(answer.status, 408, "{path}: {answer:?}");
        assert_eq!(answer.json(), want, "{path}");
        assert!(
            elapsed >= TIMEOUT && elapsed < TIMEOUT * 3,
            "{path}: cut off after {elapsed:?}"
        );
        assert!(
            closed(&mut reader).await,
            "{path}: the connection stays open"
        );
    }
    bystander.unharmed().await;
    assert_eq!(
        reached_upstream(&sims[0]),
        0,
        "the slow bodies never reached the upstream"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_quietly() {
    let (_sims, gw) = guarded_gateway().await;
    // A connection that never sends anything: closed without an answer.
    let (mut reader, _writer) = connect(&gw).await.into_split();
    let started = Instant::now();
    let mut pending = Vec::new();
    assert!(read_answer(&mut reader, &mut pending).await.is_none());
    assert!(started.elapsed() < TIMEOUT * 3, "{:?}", started.elapsed());

    // A kept-alive connection left idle after its request: closed after the
    // keep-alive timeout (Pingora alone would keep it open forever).
    let (mut reader, mut writer) = connect(&gw).await.into_split();
    writer
        .write_all(b"GET /ping HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut reader, &mut pending).await.unwrap();
    assert_eq!(answer.status, 200);
    let idle = Instant::now();
    assert!(read_answer(&mut reader, &mut pending).await.is_none());
    let elapsed = idle.elapsed();
    assert!(
        elapsed >= TIMEOUT - Duration::from_millis(100) && elapsed < TIMEOUT * 3,
        "closed after {elapsed:?}"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_is_431() {
    let (sims, gw) = guarded_gateway().await;
    let bystander = Bystander::start(&gw);
    // Just over 32 KiB, and far over it (past Pingora's own 1 MiB ceiling,
    // where Pingora alone answers 400): both 431, the second after reading
    // no more than the limit.
    for pad in [33 * 1024, 2 * 1024 * 1024] {
        let (mut reader, mut writer) = connect(&gw).await.into_split();
        let head = format!(
            "POST /v1/research HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            "a".repeat(pad)
        );
        let send = async move {
            let _ = writer.write_all(head.as_bytes()).await;
            writer
        };
        let mut pending = Vec::new();
        let (answer, _writer) = tokio::join!(read_answer(&mut reader, &mut pending), send);
        let answer = answer.expect("an answer");
        assert_eq!(answer.status, 431, "{pad}: {answer:?}");
        assert_eq!(
            answer.json(),
            json!({"detail": "Request header fields larger than the limit of 32768 bytes"})
        );
        assert!(
            closed(&mut reader).await,
            "{pad}: the connection stays open"
        );
    }
    // A head just under the limit is served.
    let (mut reader, mut writer) = connect(&gw).await.into_split();
    let body = r#"{"query":"q"}"#;
    let head = format!(
        "POST /v1/research HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\nContent-Length: {}\r\n\r\n{body}",
        "a".repeat(31 * 1024),
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut reader, &mut Vec::new()).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    bystander.unharmed().await;
    assert_eq!(
        reached_upstream(&sims[0]),
        1,
        "only the head within the limit"
    );
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (sims, gw) = guarded_gateway().await;
    let (mut reader, mut writer) = connect(&gw).await.into_split();
    // Three requests in one write: two research requests with bodies, then a ping.
    let batch = format!(
        "{}{}GET /ping HTTP/1.1\r\nHost: gw\r\n\r\n",
        research_request(r#"{"query":"first question"}"#),
        research_request(r#"{"query":"second question"}"#),
    );
    writer.write_all(batch.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    for expected in ["first question", "second question"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            read_answer(&mut reader, &mut pending),
        )
        .await
        .expect("answered")
        .expect("an answer");
        assert_eq!(answer.status, 200, "{answer:?}");
        let result = answer.json()["result"].as_str().unwrap().to_string();
        assert!(result.contains(expected), "{expected}: {result}");
    }
    let ping = read_answer(&mut reader, &mut pending).await.unwrap();
    assert_eq!(ping.status, 200);
    assert_eq!(ping.json()["status"], "healthy");
    // The connection is still usable afterwards.
    writer
        .write_all(research_request(r#"{"query":"third"}"#).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut reader, &mut pending).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(sims[0].chat_requests(), 3);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_length_and_transfer_encoding_are_400() {
    let (sims, gw) = guarded_gateway().await;
    let bystander = Bystander::start(&gw);
    let chunked = "d\r\n{\"query\":\"q\"}\r\n0\r\n\r\n";
    for framing in [
        "Content-Length: 13\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 13\r\n",
    ] {
        let (mut reader, mut writer) = connect(&gw).await.into_split();
        writer
            .write_all(
                format!("POST /v1/research HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{framing}\r\n{chunked}")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_answer(&mut reader, &mut Vec::new()).await.unwrap();
        assert_eq!(answer.status, 400, "{framing}: {answer:?}");
        assert_eq!(
            answer.json(),
            json!({"detail": "Both Content-Length and Transfer-Encoding: the body's length is ambiguous; send one of them"})
        );
        assert!(
            closed(&mut reader).await,
            "{framing}: the connection stays open"
        );
    }
    assert_eq!(
        reached_upstream(&sims[0]),
        0,
        "nothing reached the upstream"
    );
    // Either framing alone is fine.
    let (mut reader, mut writer) = connect(&gw).await.into_split();
    writer
        .write_all(
            format!("POST /v1/research HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}")
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut reader, &mut Vec::new())
            .await
            .unwrap()
            .status,
        200
    );
    bystander.unharmed().await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_content_length_is_413_before_any_body_is_read() {
    let (sims, gw) = guarded_gateway().await;
    let bystander = Bystander::start(&gw);
    let cases = [
        (
            "POST /v1/research",
            json!({"detail": "Request body larger than the limit of 1048576 bytes"}),
        ),
        (
            "POST /v1/chat/completions",
            json!({"error": {"message": "The request body is larger than the limit of 1048576 bytes.", "type": "invalid_request_error", "param": null, "code": null}}),
        ),
        // A route that takes no body refuses it all the same, rather than
        // draining a petabyte.
        (
            "GET /ping",
            json!({"detail": "Request body larger than the limit of 1048576 bytes"}),
        ),
    ];
    for (request_line, want) in cases {
        let (mut reader, mut writer) = connect(&gw).await.into_split();
        let started = Instant::now();
        // The head only: not one byte of the announced body is ever sent.
        writer
            .write_all(
                format!("{request_line} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000000000000000\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_answer(&mut reader, &mut Vec::new()).await.unwrap();
        assert_eq!(answer.status, 413, "{request_line}: {answer:?}");
        assert_eq!(answer.json(), want, "{request_line}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "answered at once"
        );
        assert!(
            closed(&mut reader).await,
            "{request_line}: the connection stays open"
        );
    }
    assert_eq!(reached_upstream(&sims[0]), 0);
    bystander.unharmed().await;
    stop(gw).await;
}

#[test]
fn the_client_limits_have_documented_defaults_and_checked_values() {
    use context7_lb::config::{Config, LimitsConfig};
    let defaults = LimitsConfig::default();
    assert_eq!(defaults.max_header_bytes, 32 * 1024);
    assert_eq!(defaults.client_header_timeout, Duration::from_secs(10));
    assert_eq!(defaults.client_body_timeout, Duration::from_secs(30));
    assert_eq!(defaults.client_keepalive_timeout, Duration::from_secs(60));
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    let config = Config::from_yaml(&text, &Default::default()).unwrap();
    assert_eq!(config.limits, defaults, "example.yaml lists the defaults");

    let config = Config::from_yaml(
        "limits:\n  max_header_bytes: 0\n  client_header_timeout: 0s\n  client_body_timeout: 0s\n  client_keepalive_timeout: 0s\n",
        &Default::default(),
    )
    .unwrap();
    let problems: Vec<String> = config
        .validate()
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        problems,
        [
            "limits.client_header_timeout: must be longer than zero",
            "limits.client_body_timeout: must be longer than zero",
            "limits.client_keepalive_timeout: must be longer than zero",
            "limits.max_header_bytes: 0 must be between 1024 and 1048575 (Pingora's own ceiling)",
        ]
    );
}
