//! A simulated vLLM upstream on loopback, shared by tests, benchmarks and
//! `--demo`: OpenAI-compatible chat completions (plain and SSE streaming),
//! `/v1/models`, `/ping`, `/health`, RunPod's `/v2/{id}/health`, with
//! configurable time to first token, token pacing, failures and a cold mode.

use bytes::Bytes;
use http_body_util::{BodyExt, Channel, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Requests kept for inspection; older ones are dropped.
const RECORDED_REQUESTS: usize = 1000;

/// How a simulated upstream behaves. Every field can be changed while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Used in answers, so that a test can tell upstreams apart.
    pub name: String,
    /// Model id reported in answers and `/v1/models`.
    pub model: String,
    /// Time before the first token.
    pub ttft: Duration,
    /// Pace of the tokens after the first one.
    pub tokens_per_second: f64,
    /// Tokens in an answer (fewer when the request's `max_tokens` is lower).
    pub answer_tokens: usize,
    /// Share of chat requests answered with `error_status`, spread evenly.
    pub error_rate: f64,
    pub error_status: u16,
    /// Message of the simulated failures (default names the upstream).
    pub error_message: Option<String>,
    /// Body of successful chat answers instead of a chat completion, to
    /// simulate a broken or foreign upstream.
    pub raw_answer: Option<String>,
    /// `GET /ping` answers 204 (initializing) and `/health` 503.
    pub cold: bool,
    /// Streams break off (connection reset) before this token.
    pub cut_stream_after: Option<usize>,
    /// Requests for another model than `model` get vLLM's 404.
    pub strict_model: bool,
    /// When set, chat and model requests need `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Non-streamed answers send their header (with the whole answer's
    /// `Content-Length`) and this many bytes of the body, then the connection
    /// is reset (TCP RST): a worker dying mid-answer. `Some(0)` resets right
    /// after the header.
    pub reset_body_after: Option<usize>,
    /// `Retry-After` sent with simulated 429s, in seconds.
    pub retry_after_secs: u64,
}

impl SimConfig {
    pub fn new(name: &str) -> SimConfig {
        SimConfig {
            name: name.to_string(),
            model: "meta-llama/Llama-3.1-8B-Instruct".into(),
            ttft: Duration::from_millis(0),
            tokens_per_second: 0.0,
            answer_tokens: 16,
            error_rate: 0.0,
            error_status: 500,
            error_message: None,
            raw_answer: None,
            cold: false,
            cut_stream_after: None,
            strict_model: false,
            api_key: None,
            reset_body_after: None,
            retry_after_secs: 1,
        }
    }

    pub fn ttft(mut self, ttft: Duration) -> Self {
        self.ttft = ttft;
        self
    }

    /// Tokens per second after the first one; 0 sends them all at once.
    pub fn tokens_per_second(mut self, tps: f64) -> Self {
        self.tokens_per_second = tps;
        self
    }

    pub fn answer_tokens(mut self, n: usize) -> Self {
        self.answer_tokens = n;
        self
    }

    pub fn model(mut self, model: &str) -> Self {
        self.model = model.to_string();
        self
    }

    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    pub fn errors(mut self, rate: f64, status: u16) -> Self {
        self.error_rate = rate;
        self.error_status = status;
        self
    }

    pub fn cold(mut self, cold: bool) -> Self {
        self.cold = cold;
        self
    }

    fn token_gap(&self) -> Duration {
        if self.tokens_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / self.tokens_per_second)
        } else {
            Duration::ZERO
        }
    }
}

/// One request as the simulated upstream received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub host: Option<String>,
    pub request_id: Option<String>,
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct SimState {
    config: Mutex<SimConfig>,
    requests: Mutex<std::collections::VecDeque<RecordedRequest>>,
    chat_requests: AtomicU64,
    health_requests: AtomicU64,
    cancelled_streams: AtomicU64,
    /// TCP connections accepted and not yet closed.
    open_connections: AtomicU64,
    /// TCP connections accepted so far.
    accepted_connections: AtomicU64,
    /// TLS handshakes that failed (TLS variant only).
    failed_handshakes: AtomicU64,
}

/// A certificate chain and its private key (DER) for [`SimUpstream::start_tls`].
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain: Vec<Vec<u8>>,
    pub private_key: Vec<u8>,
}

/// A running simulated upstream; stops when dropped.
pub struct SimUpstream {
    address: SocketAddr,
    state: Arc<SimState>,
    server: Option<JoinHandle<()>>,
    /// After [`SimUpstream::stop`], the port stays this process's, so that a
    /// restart with [`SimUpstream::start_on`] gets it back.
    held: Option<crate::ports::PortReservation>,
}

impl SimUpstream {
    /// Starts on an ephemeral loopback port.
    pub async fn start(config: SimConfig) -> std::io::Result<SimUpstream> {
        SimUpstream::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on a given address (port 0 for an ephemeral one); the address
    /// of a stopped upstream still held by it is taken over.
    pub async fn start_on(address: SocketAddr, config: SimConfig) -> std::io::Result<SimUpstream> {
        SimUpstream::launch(address, config, None).await
    }

    /// Starts on an ephemeral loopback port, speaking HTTPS with `identity`
    /// (a self-signed certificate, say, to see that the gateway refuses it).
    pub async fn start_tls(
        config: SimConfig,
        identity: TlsIdentity,
    ) -> std::io::Result<SimUpstream> {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = identity
            .cert_chain
            .into_iter()
            .map(rustls::pki_types::CertificateDer::from)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::try_from(identity.private_key)
            .map_err(std::io::Error::other)?;
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        SimUpstream::launch(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            Some(acceptor),
        )
        .await
    }

    async fn launch(
        address: SocketAddr,
        config: SimConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<SimUpstream> {
        let listener = crate::ports::listen_reusing(address)?;
        let address = listener.local_addr()?;
        let state = Arc::new(SimState {
            config: Mutex::new(config),
            requests: Mutex::new(std::collections::VecDeque::new()),
            chat_requests: AtomicU64::new(0),
            health_requests: AtomicU64::new(0),
            cancelled_streams: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
            accepted_connections: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
        });
        let server = tokio::spawn(serve(listener, state.clone(), tls));
        Ok(SimUpstream {
            address,
            state,
            server: Some(server),
            held: None,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT/v1`, for a `base_url` upstream.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// `http://127.0.0.1:PORT`, for `runpod_api_base`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes the behaviour of the running upstream.
    pub fn update(&self, change: impl FnOnce(&mut SimConfig)) {
        change(&mut self.state.config.lock().expect("sim config lock"));
    }

    pub fn config(&self) -> SimConfig {
        self.state.config.lock().expect("sim config lock").clone()
    }

    /// Requests received so far (the last 1000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .expect("sim log lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Completion requests (chat and text) received so far.
    pub fn chat_requests(&self) -> u64 {
        self.state.chat_requests.load(Ordering::Relaxed)
    }

    /// Streams whose reader went away before the end.
    pub fn cancelled_streams(&self) -> u64 {
        self.state.cancelled_streams.load(Ordering::Relaxed)
    }

    /// Health probes (`/ping`, `/health`, `/v2/{id}/health`) received so far.
    pub fn health_requests(&self) -> u64 {
        self.state.health_requests.load(Ordering::Relaxed)
    }

    /// TCP connections open right now (a leak check: the gateway's pooled
    /// connections are included, so compare against a baseline).
    pub fn open_connections(&self) -> u64 {
        self.state.open_connections.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn accepted_connections(&self) -> u64 {
        self.state.accepted_connections.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed, for the TLS variant (a client that
    /// refused the certificate, say).
    pub fn failed_handshakes(&self) -> u64 {
        self.state.failed_handshakes.load(Ordering::Relaxed)
    }

    /// Stops listening and drops every open connection at once, as a crash
    /// would. The port stays held (bound, not listening: connections are
    /// refused) until this value is dropped, so that a restart on it cannot
    /// lose it to another program.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.held = crate::ports::PortReservation::hold(self.address).ok();
            server.abort();
        }
    }
}

impl Drop for SimUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<SimState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Connections live in this set, so aborting the server aborts them too.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let resets = state
            .config
            .lock()
            .expect("sim config lock")
            .reset_body_after
            .is_some();
        if resets {
            // Closing then sends RST instead of FIN: a crash, not a goodbye.
            let _ = stream.set_zero_linger();
        }
        state.accepted_connections.fetch_add(1, Ordering::Relaxed);
        let open = OpenConnection::new(state.clone());
        let state = state.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let open = open;
            let service = service_fn(move |req| handle(state.clone(), req));
            let http = http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Err(_) => {
                        open.state.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    }
                },
            }
        });
    }
}

/// Counts a connection as open for as long as it lives, however its task ends
/// (closed, failed or aborted with the server).
struct OpenConnection {
    state: Arc<SimState>,
}

impl OpenConnection {
    fn new(state: Arc<SimState>) -> OpenConnection {
        state.open_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection { state }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

type SimBody = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<SimBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("server", "sim-vllm")
        .body(
            Full::new(body.into())
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .expect("valid response")
}

fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    full(status, "application/json", value.to_string())
}

fn openai_error(status: StatusCode, message: &str) -> Response<SimBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": status.canonical_reason().unwrap_or("Error"), "param": null, "code": status.as_u16()}}),
    )
}

async fn handle(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        host: header("host"),
        request_id: header("x-request-id"),
        body,
    };
    {
        let mut log = state.requests.lock().expect("sim log lock");
        if log.len() >= RECORDED_REQUESTS {
            log.pop_front();
        }
        log.push_back(recorded.clone());
    }
    let config = state.config.lock().expect("sim config lock").clone();
    let path = recorded.path.as_str();
    let authorized = config
        .api_key
        .as_ref()
        .is_none_or(|key| recorded.authorization.as_deref() == Some(&format!("Bearer {key}")));

    let response = match (&parts.method, path) {
        (&Method::GET, "/ping") | (&Method::GET, "/health") => {
            state.health_requests.fetch_add(1, Ordering::Relaxed);
            match (config.cold, path) {
                (true, "/ping") => full(StatusCode::NO_CONTENT, "text/plain", ""),
                (true, _) => full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", ""),
                (false, _) => full(StatusCode::OK, "text/plain", ""),
            }
        }
        (&Method::GET, p) if p.starts_with("/v2/") && p.ends_with("/health") => {
            state.health_requests.fetch_add(1, Ordering::Relaxed);
            if !authorized {
                json_response(StatusCode::UNAUTHORIZED, &json!({"error": "Unauthorized"}))
            } else {
                let running = u64::from(!config.cold);
                json_response(
                    StatusCode::OK,
                    &json!({
                        "jobs": {"completed": state.chat_requests.load(Ordering::Relaxed), "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
                        "workers": {"idle": running, "running": running}
                    }),
                )
            }
        }
        _ if !authorized => openai_error(StatusCode::UNAUTHORIZED, "Unauthorized"),
        (&Method::GET, p) if p.ends_with("/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{
                "id": config.model, "object": "model", "created": unix_time(), "owned_by": "vllm",
                "root": config.model, "max_model_len": 8192
            }]}),
        ),
        (&Method::POST, p) if p.ends_with("/chat/completions") => {
            complete(&state, &config, &recorded, Api::Chat).await
        }
        (&Method::POST, p) if p.ends_with("/completions") => {
            complete(&state, &config, &recorded, Api::Text).await
        }
        _ => openai_error(StatusCode::NOT_FOUND, "Not Found"),
    };
    Ok(response)
}

/// Which completion API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Text,
}

async fn complete(
    state: &Arc<SimState>,
    config: &SimConfig,
    req: &RecordedRequest,
    api: Api,
) -> Response<SimBody> {
    let n = state.chat_requests.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return openai_error(StatusCode::BAD_REQUEST, "request body is not valid JSON");
    };
    let (prompt, question) = match api {
        Api::Chat => {
            let Some(messages) = body.get("messages").and_then(Value::as_array) else {
                return openai_error(StatusCode::BAD_REQUEST, "messages: field required");
            };
            let text = |m: &Value| {
                m.get("content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (
                messages.iter().map(text).collect::<Vec<_>>().join(" "),
                messages.last().map(text).unwrap_or_default(),
            )
        }
        Api::Text => match body.get("prompt") {
            Some(Value::String(p)) => (p.clone(), p.clone()),
            Some(Value::Array(parts)) => {
                let joined = parts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ");
                (joined.clone(), joined)
            }
            _ => return openai_error(StatusCode::BAD_REQUEST, "prompt: field required"),
        },
    };
    let requested = body.get("model").and_then(Value::as_str).unwrap_or("");
    if config.strict_model && requested != config.model {
        // vLLM's flat error form, which the gateway must read as well.
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"object": "error", "message": format!("The model `{requested}` does not exist."),
                    "type": "NotFoundError", "param": null, "code": 404}),
        );
    }
    // Spread failures evenly: request n fails when the running share crosses an integer.
    let rate = config.error_rate.clamp(0.0, 1.0);
    if ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor() {
        tokio::time::sleep(config.ttft).await;
        let status =
            StatusCode::from_u16(config.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = config
            .error_message
            .clone()
            .unwrap_or_else(|| format!("simulated failure from {}", config.name));
        let mut response = openai_error(status, &message);
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                "retry-after",
                config
                    .retry_after_secs
                    .to_string()
                    .parse()
                    .expect("valid header"),
            );
        }
        return response;
    }
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .map_or(config.answer_tokens, |m| {
            (m as usize).min(config.answer_tokens)
        });
    let words = answer_words(&config.name, &question, max_tokens.max(1));
    let prompt_tokens = prompt.split_whitespace().count().max(1) as u64;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens + words.len() as u64,
    });
    let id = format!(
        "{}-sim-{n}",
        if api == Api::Chat { "chatcmpl" } else { "cmpl" }
    );
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        return stream(
            state.clone(),
            config.clone(),
            api,
            id,
            words,
            include_usage.then_some(usage),
        );
    }
    let gap = config.token_gap();
    if let Some(raw) = &config.raw_answer {
        tokio::time::sleep(config.ttft).await;
        return full(StatusCode::OK, "application/json", raw.clone());
    }
    tokio::time::sleep(config.ttft + gap * words.len().saturating_sub(1) as u32).await;
    let text = words.join(" ");
    let (object, choice) = match api {
        Api::Chat => (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length", "logprobs": null}),
        ),
        Api::Text => (
            "text_completion",
            json!({"index": 0, "text": text, "finish_reason": "length", "logprobs": null}),
        ),
    };
    let answer = json!({
        "id": id, "object": object, "created": unix_time(), "model": config.model,
        "choices": [choice],
        "usage": usage,
    });
    match config.reset_body_after {
        None => json_response(StatusCode::OK, &answer),
        Some(sent) => broken_answer(answer.to_string().into_bytes(), sent),
    }
}

/// An answer whose header promises `body.len()` bytes, of which only `sent`
/// arrive before the connection is reset.
fn broken_answer(body: Vec<u8>, sent: usize) -> Response<SimBody> {
    let (mut tx, channel) = Channel::<Bytes, std::io::Error>::new(1);
    let length = body.len();
    tokio::spawn(async move {
        let part = Bytes::from(body).slice(..sent.min(length));
        if !part.is_empty() {
            let _ = tx.send(Frame::data(part)).await;
        }
        // Let the part leave before the reset, so the client sees a short body.
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.abort(std::io::Error::other("simulated crash mid-answer"));
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("content-length", length)
        .header("server", "sim-vllm")
        .body(channel.boxed())
        .expect("valid response")
}

fn stream(
    state: Arc<SimState>,
    config: SimConfig,
    api: Api,
    id: String,
    words: Vec<String>,
    usage: Option<Value>,
) -> Response<SimBody> {
    let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(4);
    tokio::spawn(async move {
        let object = match api {
            Api::Chat => "chat.completion.chunk",
            Api::Text => "text_completion",
        };
        let chunk = |text: &str, role: bool, finish: Value| {
            let choice = match api {
                Api::Chat if role => {
                    json!({"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": null})
                }
                Api::Chat => {
                    json!({"index": 0, "delta": {"content": text}, "finish_reason": finish, "logprobs": null})
                }
                Api::Text => {
                    json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null})
                }
            };
            json!({"id": id, "object": object, "created": unix_time(), "model": config.model, "choices": [choice]})
        };
        let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
        let cancelled = || {
            state.cancelled_streams.fetch_add(1, Ordering::Relaxed);
        };
        tokio::time::sleep(config.ttft).await;
        if api == Api::Chat
            && tx
                .send(Frame::data(event(chunk("", true, Value::Null))))
                .await
                .is_err()
        {
            return cancelled();
        }
        let last = words.len().saturating_sub(1);
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(config.token_gap()).await;
            }
            if config.cut_stream_after == Some(i) {
                // The worker dies: the connection breaks mid-stream.
                tx.abort(std::io::Error::other("simulated crash"));
                return;
            }
            let text = if i == 0 {
                word.clone()
            } else {
                format!(" {word}")
            };
            let finish = if i == last {
                json!("length")
            } else {
                Value::Null
            };
            if tx
                .send(Frame::data(event(chunk(&text, false, finish))))
                .await
                .is_err()
            {
                return cancelled();
            }
        }
        if let Some(usage) = usage {
            let v = json!({"id": id, "object": object, "created": unix_time(), "model": config.model, "choices": [], "usage": usage});
            let _ = tx.send(Frame::data(event(v))).await;
        }
        let _ = tx
            .send(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))
            .await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("server", "sim-vllm")
        .body(body.boxed())
        .expect("valid response")
}

/// A deterministic answer: a sentence naming the upstream and the question,
/// then filler words, `n` words in all.
fn answer_words(name: &str, prompt: &str, n: usize) -> Vec<String> {
    let topic: String = prompt
        .split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join(" ");
    let opening = format!("[{name}] Simulated answer about: {topic}.");
    const FILLER: &[&str] = &[
        "vLLM",
        "batches",
        "requests",
        "continuously",
        "and",
        "pages",
        "the",
        "KV",
        "cache",
        "so",
        "throughput",
        "stays",
        "high",
        "while",
        "latency",
        "stays",
        "low.",
    ];
    opening
        .split_whitespace()
        .map(str::to_string)
        .chain(FILLER.iter().cycle().map(|w| w.to_string()))
        .take(n)
        .collect()
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
