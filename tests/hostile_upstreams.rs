//! Upstreams that misbehave in ways no well-behaved server does, over raw
//! sockets: interim (1xx) answers before the real one on every path
//! (research, chat plain and streamed, health probes, model discovery), a
//! 101 nobody asked for, and arbitrary bytes fed to the answer reader.

mod common;

use common::*;
use context7_lb::client::{UpstreamClient, UpstreamRequest};
use context7_lb::config::parse_base_url;
use proptest::prelude::*;
use serde_json::{Value, json};

use common::raw::{RawUpstream, read_request};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const MODEL: &str = "raw-model";

/// What the raw upstream writes before each final answer.
type Preamble = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

fn answer(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The final answer for a request: `/ping`, `/v1/models`, or a completion.
fn final_answer(line: &str, body: &[u8]) -> Vec<u8> {
    let path = line.split(' ').nth(1).unwrap_or("");
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if path == "/ping" {
        return answer("200 OK", "application/json", r#"{"status":"healthy"}"#);
    }
    if path.ends_with("/models") {
        let list = json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]});
        return answer("200 OK", "application/json", &list.to_string());
    }
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    if request["stream"] == true {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]});
        let events = format!(
            "data: {chunk}\n\ndata: {}\n\ndata: [DONE]\n\n",
            json!({"choices": [], "usage": usage})
        );
        return format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{events}\r\n0\r\n\r\n",
            events.len()
        )
        .into_bytes();
    }
    let completion = json!({"model": MODEL, "usage": usage,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "the answer"}}]});
    answer("200 OK", "application/json", &completion.to_string())
}

/// A raw upstream that writes `preamble(path)` and then a plain, well-formed
/// answer for each request, keeping the connection alive.
async fn raw_upstream(preamble: Preamble) -> RawUpstream {
    RawUpstream::start(move |stream| serve_connection(stream, preamble.clone())).await
}

async fn serve_connection(mut stream: TcpStream, preamble: Preamble) {
    let mut buffer = Vec::new();
    while let Some((line, body)) = read_request(&mut stream, &mut buffer).await {
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut out = preamble(&path);
        out.extend(final_answer(&line, &body));
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

const INTERIM: &str = "HTTP/1.1 100 Continue\r\n\r\n\
    HTTP/1.1 102 Processing\r\n\r\n\
    HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\nlink: </app.js>; rel=preload\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_answers_are_skipped_on_every_upstream_path() {
    let raw = raw_upstream(Arc::new(|_path: &str| INTERIM.as_bytes().to_vec())).await;
    let mut config = config();
    let mut upstream = context7_lb::config::UpstreamConfig {
        name: "raw".into(),
        base_url: Some(raw.base_url()),
        model: Some(MODEL.into()),
        ..Default::default()
    };
    upstream.models.clear();
    config.upstreams.push(upstream);
    let gw = start(config).await;
    // The probe read its 200 through the interim answers.
    let status = get_json(&gw, "/status").await;
    assert_eq!(status["upstreams"][0]["state"], "healthy", "{status}");
    // Discovery did too: the model the upstream lists is served.
    wait_until_listed(&gw, MODEL).await;

    let (code, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"], "the answer");
    for stream in [false, true] {
        let answer = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": MODEL, "stream": stream,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let text = answer.text().await.unwrap();
        if stream {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        } else {
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["choices"][0]["message"]["content"], "the answer");
        }
    }
    stop(gw).await;
}

/// Polls `/v1/models` until `model` is listed.
async fn wait_until_listed(gw: &context7_lb::app::RunningGateway, model: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let models = get_json(gw, "/v1/models").await;
        if models["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == model))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{model} never listed: {models}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_nobody_asked_for_is_an_error_and_probes_go_on() {
    let raw = raw_upstream(Arc::new(|path: &str| {
        if path == "/ping" {
            Vec::new()
        } else {
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                .to_vec()
        }
    }))
    .await;
    let mut config = config();
    config.upstreams.push(context7_lb::config::UpstreamConfig {
        name: "raw".into(),
        base_url: Some(raw.base_url()),
        ..Default::default()
    });
    let gw = start(config).await;
    let (code, _, body) = research(&gw, r#"{"query":"q"}"#).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(
        body["detail"],
        "vLLM backend raw failed: connection broken before an answer: the upstream answered \
         101 Switching Protocols, which was not asked for"
    );
    // The health loop is alive: checks keep landing.
    let state = gw.state.clone();
    let checked =
        |s: &context7_lb::state::AppState| s.pool.upstreams()[0].last_check().map(|c| c.at);
    let first = checked(&state);
    wait_until("another health check", || checked(&state) != first).await;
    stop(gw).await;
}

/// Interim heads, a final head, a chunked or sized body, all cut anywhere:
/// what a broken or hostile upstream may send.
fn answers() -> impl Strategy<Value = Vec<u8>> {
    let interim = prop::collection::vec(
        (
            100u16..200,
            prop::collection::vec("[a-z-]{1,8}: [ -~]{0,20}", 0..3),
        ),
        0..4,
    );
    let status = prop_oneof![Just(200u16), Just(204), Just(304), 100u16..600];
    let framing = prop_oneof![
        Just("content-length: 5\r\n".to_string()),
        Just("content-length: 999999\r\n".to_string()),
        Just("content-length: -1\r\n".to_string()),
        Just("transfer-encoding: chunked\r\n".to_string()),
        Just(String::new()),
    ];
    let body = prop_oneof![
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"zz\r\nhello\r\n".to_vec()),
        Just(b"hello".to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    (
        interim,
        status,
        framing,
        body,
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(interim, status, framing, body, cut, whole)| {
            let mut out = Vec::new();
            for (code, headers) in interim {
                out.extend(format!("HTTP/1.1 {code} Interim\r\n").bytes());
                for h in headers {
                    out.extend(h.bytes());
                    out.extend(b"\r\n");
                }
                out.extend(b"\r\n");
            }
            out.extend(format!("HTTP/1.1 {status} X\r\n{framing}\r\n").bytes());
            out.extend(body);
            if !whole {
                let at = cut.index(out.len() + 1);
                out.truncate(at);
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Whatever the upstream sends, the answer reader returns an answer or an
    /// error: it never panics and never hangs past its deadline.
    #[test]
    fn the_answer_reader_survives_any_bytes(
        answer in prop_oneof![answers(), prop::collection::vec(any::<u8>(), 0..200)]
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = Vec::new();
                let _ = read_request(&mut stream, &mut buffer).await;
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            });
            let url = parse_base_url(&format!("http://{address}/v1")).unwrap();
            let request = completion_request(&url);
            let client = UpstreamClient::new();
            let sent = tokio::time::timeout(Duration::from_secs(5), client.send(address, &request)).await;
            assert!(sent.is_ok(), "the reader hung");
            server.abort();
        });
    }
}

/// An upstream that closes a kept-alive connection as a second completion
/// request arrives on it (the close crossing the request in flight): answers
/// every other request normally.
async fn closes_kept_alive_connections() -> RawUpstream {
    RawUpstream::start(|mut stream| async move {
        let mut buffer = Vec::new();
        let mut completions = 0;
        while let Some((line, body)) = read_request(&mut stream, &mut buffer).await {
            if line.contains("/completions") {
                completions += 1;
                if completions == 2 {
                    return;
                }
            }
            if stream.write_all(&final_answer(&line, &body)).await.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_connection_is_resent_once_as_an_attempt() {
    for budget in [true, false] {
        let raw = closes_kept_alive_connections().await;
        let mut config = config();
        if !budget {
            config.retries.budget_ratio = 0.0;
            config.retries.budget_min_per_second = 0.0;
        }
        config.upstreams.push(context7_lb::config::UpstreamConfig {
            name: "raw".into(),
            base_url: Some(raw.base_url()),
            model: Some(MODEL.into()),
            ..Default::default()
        });
        let gw = start(config).await;
        let (first, _, _) = research(&gw, r#"{"query":"q"}"#).await;
        assert_eq!(first, 200);
        // The second request takes the kept-alive connection, which breaks.
        let (second, _, body) = research(&gw, r#"{"query":"q"}"#).await;
        let stale = metric(
            &gw,
            r#"context7_upstream_requests_total{outcome="stale_connection",upstream="raw"}"#,
        )
        .await;
        assert_eq!(stale, 1.0, "counted as an attempt of its own");
        if budget {
            assert_eq!(second, 200, "resent on a new connection: {body}");
            assert_eq!(
                metric(&gw, r#"context7_upstream_retries_total{upstream="raw"}"#).await,
                1.0
            );
        } else {
            // No retry left in the budget: the failure is the answer, not a
            // hidden resend.
            assert_eq!(second, 502, "{body}");
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.starts_with(
                    "vLLM backend raw failed: kept-alive connection closed by the upstream"
                ),
                "{detail}"
            );
        }
        stop(gw).await;
    }
}

/// A raw upstream that counts the connections it accepts and answers every
/// request on them; with `close_after_answer`, it closes each connection
/// right after its first answer (without saying so in the answer), as an
/// upstream whose keep-alive timeout is shorter than the gateway's does.
async fn counting_upstream(
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    close_after_answer: bool,
) -> RawUpstream {
    RawUpstream::start(move |mut stream| {
        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut buffer = Vec::new();
            while let Some((line, body)) = read_request(&mut stream, &mut buffer).await {
                if stream.write_all(&final_answer(&line, &body)).await.is_err() {
                    return;
                }
                if close_after_answer {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
    })
    .await
}

/// A chat completion request to `url`'s upstream, straight through the client.
fn completion_request(url: &context7_lb::config::BaseUrl) -> UpstreamRequest<'_> {
    UpstreamRequest {
        method: "POST",
        url,
        path: "/v1/chat/completions",
        authorization: None,
        body: Some(bytes::Bytes::from_static(b"{}")),
        max_body: 4096,
        read_timeout: Some(Duration::from_secs(2)),
        accept: "application/json",
        connect_timeout: Duration::from_secs(2),
        fresh: false,
    }
}

/// One completion through `client`; with `resend_stale`, a kept-alive
/// connection found closed on first use is resent on a new one (`send`),
/// otherwise that is an error (`open`, as requests' calls use it).
async fn completion(client: &UpstreamClient, base_url: &str, resend_stale: bool) -> u16 {
    let url = parse_base_url(base_url).unwrap();
    let address = format!("{}:{}", url.host, url.port).parse().unwrap();
    let request = completion_request(&url);
    if resend_stale {
        return client.send(address, &request).await.unwrap().status;
    }
    let exchange = client.open(address, &request).await.unwrap();
    exchange.read_all(4096).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_connection_is_kept_and_used_again() {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let raw = counting_upstream(accepted.clone(), false).await;
    let client = UpstreamClient::new();
    assert_eq!(client.idle_connections(), 0);
    for _ in 0..3 {
        assert_eq!(completion(&client, &raw.base_url(), false).await, 200);
        assert_eq!(client.idle_connections(), 1, "given back after its answer");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A sweep keeps a live connection.
    client.sweep();
    assert_eq!(client.idle_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_upstream_closed_is_never_used() {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let raw = counting_upstream(accepted.clone(), true).await;
    let client = UpstreamClient::new();
    assert_eq!(completion(&client, &raw.base_url(), true).await, 200);
    // The upstream's close arrives while the connection is idle.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Taking it finds the close: a new connection, not a stale error.
    assert_eq!(completion(&client, &raw.base_url(), false).await, 200);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A sweep closes what the upstream closed, without a request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.idle_connections(), 1);
    client.sweep();
    assert_eq!(client.idle_connections(), 0);
}
