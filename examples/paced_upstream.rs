//! The upstream of `scripts/stream-bench.sh`: a vLLM stand-in that costs
//! next to nothing per stream, so that the proxies in front of it are what
//! the benchmark measures. Every streamed chat completion is the same SSE
//! answer, rendered once at start-up: a role chunk and the first token at
//! once, then a token every GAP_MS, then `[DONE]`, over raw HTTP/1.1 with
//! chunked framing and kept-alive connections. `GET /ping`, `GET /health`
//! and `GET .../models` answer as vLLM's do; a chat completion without
//! `"stream": true` gets the whole answer as one JSON body. The built-in
//! simulator (`--sim-upstream`) renders every chunk with serde_json and runs
//! a task and a channel per stream, which at thousands of streams took more
//! of the two cores than the proxies did.
//!
//!   cargo run --release --example paced_upstream -- LISTEN TOKENS GAP_MS [THREADS]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// The answer, rendered once: the stream's chunks (each a whole chunked
/// frame) and the plain JSON answer.
struct Answer {
    first: Vec<u8>,
    tokens: Vec<Vec<u8>>,
    last: Vec<u8>,
    plain: Vec<u8>,
}

fn frame(data: &str) -> Vec<u8> {
    let event = format!("data: {data}\n\n");
    format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
}

fn render(tokens: usize) -> Answer {
    let chunk = |delta: &str, finish: &str| {
        format!(
            r#"{{"id":"chatcmpl-paced","object":"chat.completion.chunk","created":1764633600,"model":"{MODEL}","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish},"logprobs":null}}]}}"#
        )
    };
    let words: Vec<String> = (0..tokens)
        .map(|i| {
            if i == 0 {
                "word".to_string()
            } else {
                format!(" word{i}")
            }
        })
        .collect();
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    head.extend(frame(&chunk(
        r#"{"role":"assistant","content":""}"#,
        "null",
    )));
    let token_frames: Vec<Vec<u8>> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let finish = if i + 1 == tokens {
                r#""length""#
            } else {
                "null"
            };
            frame(&chunk(&format!(r#"{{"content":"{w}"}}"#), finish))
        })
        .collect();
    let mut last = frame("[DONE]");
    last.extend_from_slice(b"0\r\n\r\n");
    let body = format!(
        r#"{{"id":"chatcmpl-paced","object":"chat.completion","created":1764633600,"model":"{MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"length","logprobs":null}}],"usage":{{"prompt_tokens":12,"completion_tokens":{tokens},"total_tokens":{}}}}}"#,
        words.concat(),
        12 + tokens
    );
    Answer {
        first: head,
        tokens: token_frames,
        last,
        plain: plain(&body),
    }
}

fn plain(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one connection's requests until it closes.
async fn connection(mut stream: TcpStream, answer: &'static Answer, gap: Duration) {
    let _ = stream.set_nodelay(true);
    let models = plain(&format!(
        r#"{{"object":"list","data":[{{"id":"{MODEL}","object":"model","owned_by":"vllm","root":"{MODEL}","max_model_len":8192}}]}}"#
    ));
    let mut buf = Vec::with_capacity(4096);
    loop {
        // One whole request: its head, then Content-Length bytes of body.
        let (head_len, path, is_get, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let length = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (
                        n,
                        request.path.unwrap_or("").to_string(),
                        request.method == Some("GET"),
                        length,
                    );
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            if read_more(&mut stream, &mut buf).await.is_none() {
                return;
            }
        };
        while buf.len() < head_len + body_len {
            if read_more(&mut stream, &mut buf).await.is_none() {
                return;
            }
        }
        let streamed = {
            let body = &buf[head_len..head_len + body_len];
            body.windows(13).any(|w| w == b"\"stream\":true")
        };
        buf.drain(..head_len + body_len);
        let written = if is_get && path.ends_with("/models") {
            stream.write_all(&models).await
        } else if is_get {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
        } else if !streamed {
            stream.write_all(&answer.plain).await
        } else {
            stream_answer(&mut stream, answer, gap).await
        };
        if written.is_err() {
            return;
        }
    }
}

async fn stream_answer(
    stream: &mut TcpStream,
    answer: &Answer,
    gap: Duration,
) -> std::io::Result<()> {
    let mut first = answer.first.clone();
    if let Some(token) = answer.tokens.first() {
        first.extend_from_slice(token);
    }
    stream.write_all(&first).await?;
    for token in answer.tokens.iter().skip(1) {
        tokio::time::sleep(gap).await;
        stream.write_all(token).await?;
    }
    stream.write_all(&answer.last).await
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: paced_upstream LISTEN TOKENS GAP_MS [THREADS]");
        std::process::exit(2);
    }
    let tokens: usize = args[1].parse().expect("TOKENS is a number");
    let gap = Duration::from_millis(args[2].parse().expect("GAP_MS is a number"));
    let threads = args
        .get(3)
        .map_or(1, |t| t.parse().expect("THREADS is a number"));
    let answer: &'static Answer = Box::leak(Box::new(render(tokens.max(1))));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // A backlog for thousands of connections made at once.
        let address: std::net::SocketAddr = args[0].parse().expect("LISTEN is an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(address).expect("bind");
        let listener: TcpListener = socket.listen(4096).expect("listen");
        println!(
            "paced upstream on http://{}/v1",
            listener.local_addr().unwrap()
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(connection(stream, answer, gap));
        }
    });
}
