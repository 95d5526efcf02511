//! Requests to a gateway, each with a fresh client (closed when it returns, so
//! it keeps no descriptor), and the answers' JSON bodies.

use super::gateway::RunningGateway;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Duration;

/// A client with a 20 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Parses a body as JSON; panics with the text when it is not.
pub fn json_body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text:?}"))
}

/// One answer: status, headers and the whole body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        json_body(&self.text)
    }

    /// The `error.code` of a JSON-RPC answer (panics when there is none).
    pub fn error_code(&self) -> i64 {
        self.json()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no JSON-RPC error in {}", self.text))
    }

    /// Status, headers and body text.
    pub fn parts(self) -> (u16, HeaderMap, String) {
        (self.status, self.headers, self.text)
    }
}

/// A gateway to send requests to: one in this process, or a child process,
/// and the client key sent with every request ([`WithKey`]).
pub trait At {
    /// `http://127.0.0.1:PORT`.
    fn url(&self) -> String;

    fn bearer(&self) -> Option<&str> {
        None
    }
}

/// A gateway, with `Authorization: Bearer <key>` on every request sent
/// through [`send`] that does not carry one.
pub struct WithKey<'a, G: At>(pub &'a G, pub &'a str);

impl<G: At> At for WithKey<'_, G> {
    fn url(&self) -> String {
        self.0.url()
    }

    fn bearer(&self) -> Option<&str> {
        Some(self.1)
    }
}

impl At for RunningGateway {
    fn url(&self) -> String {
        RunningGateway::url(self)
    }
}

impl At for super::process::Process {
    fn url(&self) -> String {
        super::process::Process::url(self)
    }
}

/// Sends `method path` with exactly `headers` (and `body`, if any).
pub async fn send(
    gw: &impl At,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut request = client().request(method.parse().unwrap(), format!("{}{path}", gw.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(key) = gw.bearer()
        && !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body read"),
    }
}

/// POSTs `body` to `path` as JSON; returns status, headers and the body as text.
pub async fn post_json(gw: &RunningGateway, path: &str, body: &str) -> (u16, HeaderMap, String) {
    send(
        gw,
        "POST",
        path,
        &[("content-type", "application/json")],
        Some(body),
    )
    .await
    .parts()
}

/// POSTs a JSON text to `/v1/research`; returns status, headers and JSON body.
pub async fn research(gw: &RunningGateway, body: &str) -> (u16, HeaderMap, Value) {
    let (status, headers, text) = post_json(gw, "/v1/research", body).await;
    (status, headers, json_body(&text))
}

/// `GET` of a gateway path, as text.
pub async fn get_text(gw: &impl At, path: &str) -> String {
    send(gw, "GET", path, &[], None).await.text
}

/// `GET` of a gateway path, as JSON.
pub async fn get_json(gw: &RunningGateway, path: &str) -> Value {
    fetch_json(&format!("{}{path}", gw.url()), None).await
}

/// `GET` of any URL, with `bearer` as the key if given, as JSON.
pub async fn fetch_json(url: &str, bearer: Option<&str>) -> Value {
    let mut request = client().get(url);
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    request
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("a JSON body")
}

/// The value of one series (`name{labels}`, labels in Prometheus's order) in
/// the gateway's `/metrics`; 0 when it is not exported.
pub async fn metric(gw: &impl At, series: &str) -> f64 {
    get_text(gw, "/metrics")
        .await
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The sum of every series whose line starts with `prefix`: a whole family,
/// or those of its series whose labels begin so.
pub async fn metric_sum(gw: &impl At, prefix: &str) -> f64 {
    get_text(gw, "/metrics")
        .await
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
