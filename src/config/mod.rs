//! The configuration: the file's schema with its defaults (here), reading it
//! from YAML or the original service's environment (`load`), and
//! `validate()`, which collects every problem before failing (`validate`).
//! Data and checks only: nothing here imports from the layers above.

mod load;
mod origin;
mod validate;

pub use load::{client_keys, read_keys_file};
pub use origin::{OriginPattern, check_allowed_origin};

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Default RunPod API host; `RUNPOD_API_BASE` or `runpod_api_base` replace it.
pub const DEFAULT_RUNPOD_API_BASE: &str = "https://api.runpod.ai";
/// The model the original service asked for.
pub const DEFAULT_RESEARCH_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// The whole gateway configuration, as written in YAML.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: String,
    /// Worker threads for the proxy service; `0` means one per CPU.
    pub threads: usize,
    /// Replaces `https://api.runpod.ai` for every RunPod upstream and its health checks.
    pub runpod_api_base: String,
    pub research: ResearchConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub health_check: HealthCheckConfig,
    pub timeouts: TimeoutsConfig,
    pub retries: RetriesConfig,
    pub limits: LimitsConfig,
    pub pool: PoolConfig,
    pub ejection: EjectionConfig,
    /// `GET /ping` always answers 200, as the original service did, instead of
    /// 204 while the first health checks run and 503 when no upstream is routable.
    pub ping_always_200: bool,
    pub mcp: McpConfig,
    /// Public model names mapped onto the names upstreams serve: a request for
    /// the public name goes to any upstream serving one of them, with the
    /// model rewritten to the name that upstream serves.
    pub model_aliases: std::collections::BTreeMap<String, OneOrMany>,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub cache: CacheConfig,
    /// State shared by every replica (limits, the research cache, MCP
    /// sessions). Unset: each gateway keeps its own, in process.
    pub redis: Option<RedisConfig>,
    pub access_log: AccessLogConfig,
    pub shutdown: ShutdownConfig,
    /// A second address serving only `/metrics` and `/status`, without client
    /// keys; they are then not served on `listen`. Unset: served on `listen`.
    pub metrics_listen: Option<String>,
    /// A second address serving only `GET /ping` (RunPod's `PORT_HEALTH`).
    pub health_listen: Option<String>,
}

/// Client keys: when any is set, `/v1/*`, `/mcp`, `/status` and `/metrics`
/// need `Authorization: Bearer <key>`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys written here (use `${VAR}` to take them from the environment):
    /// each a plain key, or `{key, name, requests_per_second, burst,
    /// tokens_per_minute}` to name it and give it its own limits.
    pub keys: Vec<KeyEntry>,
    /// A file with one key per line (`#` starts a comment), read at start and reload.
    pub keys_file: Option<String>,
}

/// One client key, with its own name and limits or the defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "KeyEntryForm")]
pub struct KeyEntry {
    pub key: String,
    /// Shown in logs as the client and used for its limits in Redis; unset:
    /// `key#n`, its position among the keys.
    pub name: Option<String>,
    /// Overrides of `rate_limit` for this key (0 turns that limit off).
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

impl KeyEntry {
    /// A key with the default limits.
    pub fn plain(key: impl Into<String>) -> KeyEntry {
        KeyEntry {
            key: key.into(),
            name: None,
            requests_per_second: None,
            burst: None,
            tokens_per_minute: None,
        }
    }

    /// This key's limits: its own where it sets them, else `defaults`.
    pub fn limits(&self, defaults: &RateLimitConfig) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_second: self
                .requests_per_second
                .unwrap_or(defaults.requests_per_second),
            burst: self.burst.unwrap_or(defaults.burst),
            tokens_per_minute: self.tokens_per_minute.unwrap_or(defaults.tokens_per_minute),
        }
    }
}

impl From<&str> for KeyEntry {
    fn from(key: &str) -> KeyEntry {
        KeyEntry::plain(key)
    }
}

/// How a key is written: a string, or a map with the key and its settings
/// (read by hand rather than as an untagged enum, so that a wrong field is
/// named in the error instead of "did not match any variant").
enum KeyEntryForm {
    Plain(String),
    Full(FullKeyEntry),
}

impl<'de> Deserialize<'de> for KeyEntryForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = KeyEntryForm;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key, or a map with `key` and optionally `name`, `requests_per_second`, `burst`, `tokens_per_minute`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyEntryForm, E> {
                Ok(KeyEntryForm::Plain(v.to_string()))
            }
            // A key of digits only, written without quotes.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeyEntryForm, E> {
                Ok(KeyEntryForm::Plain(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<KeyEntryForm, A::Error> {
                FullKeyEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(KeyEntryForm::Full)
            }
        }
        d.deserialize_any(Form)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullKeyEntry {
    key: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    requests_per_second: Option<f64>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    tokens_per_minute: Option<u64>,
}

impl From<KeyEntryForm> for KeyEntry {
    fn from(form: KeyEntryForm) -> KeyEntry {
        match form {
            KeyEntryForm::Plain(key) => KeyEntry::plain(key),
            KeyEntryForm::Full(f) => KeyEntry {
                key: f.key,
                name: f.name,
                requests_per_second: f.requests_per_second,
                burst: f.burst,
                tokens_per_minute: f.tokens_per_minute,
            },
        }
    }
}

/// Limits per client key (per client IP without keys); `auth.keys` entries
/// may override each.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained rate; 0 turns rate limiting off.
    pub requests_per_second: f64,
    /// Requests allowed at once above the rate.
    pub burst: u32,
    /// Prompt plus completion tokens per minute, from the upstreams' usage,
    /// charged when an answer arrives; 0 turns the token limit off.
    pub tokens_per_minute: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: 0.0,
            burst: 20,
            tokens_per_minute: 0,
        }
    }
}

/// The Redis server that replicas share state through.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host[:port][/db]` or `rediss://…` (TLS); write the
    /// password as `${VAR}`.
    pub url: String,
    /// Put before every key, so that several gateways (or other programs)
    /// can share one Redis.
    pub prefix: String,
    /// TCP connect plus TLS and `AUTH`, per attempt.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// One command's wait for its answer; past it the command counts as
    /// failed and Redis is treated as down until it answers again.
    #[serde(with = "duration_text")]
    pub command_timeout: Duration,
    /// What limits do while Redis cannot be reached: `allow` the request
    /// (the default: an outage of Redis is not an outage of the gateway) or
    /// `deny` it with 503.
    pub on_failure: OnRedisFailure,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            prefix: "context7:".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(200),
            on_failure: OnRedisFailure::Allow,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisFailure {
    Allow,
    Deny,
}

/// Cache of research answers (opt-in).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Only requests at or below this temperature are cached (deterministic answers).
    pub max_temperature: f64,
    #[serde(with = "duration_text")]
    pub ttl: Duration,
    pub max_entries: u64,
    /// Bound on the cached answers' text, in bytes.
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_temperature: 0.0,
            ttl: Duration::from_secs(600),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One line per request.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Put the research query's text in the line (off: queries can be private).
    pub include_query: bool,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Text,
            include_query: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Stopping and upgrading.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM (or after handing sockets over on SIGQUIT), in-flight
    /// requests, streams included, get this long to finish.
    #[serde(with = "duration_text")]
    pub grace_period: Duration,
    /// Socket the old process hands its listeners over on for `--upgrade`.
    pub upgrade_sock: String,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: Duration::from_secs(30),
            upgrade_sock: "/tmp/context7-lb-upgrade.sock".into(),
        }
    }
}

/// A single string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8002".into(),
            threads: 0,
            runpod_api_base: DEFAULT_RUNPOD_API_BASE.into(),
            research: ResearchConfig::default(),
            upstreams: Vec::new(),
            health_check: HealthCheckConfig::default(),
            timeouts: TimeoutsConfig::default(),
            retries: RetriesConfig::default(),
            limits: LimitsConfig::default(),
            pool: PoolConfig::default(),
            ejection: EjectionConfig::default(),
            ping_always_200: false,
            mcp: McpConfig::default(),
            model_aliases: Default::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            cache: CacheConfig::default(),
            redis: None,
            access_log: AccessLogConfig::default(),
            shutdown: ShutdownConfig::default(),
            metrics_listen: None,
            health_listen: None,
        }
    }
}

/// How `POST /v1/research` is turned into a chat completion.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResearchConfig {
    /// Model name sent upstream unless the upstream sets its own `model`.
    pub model: String,
    /// Optional system message placed before the user's query.
    pub system_prompt: Option<String>,
}

impl Default for ResearchConfig {
    fn default() -> Self {
        ResearchConfig {
            model: DEFAULT_RESEARCH_MODEL.into(),
            system_prompt: None,
        }
    }
}

/// One endpoint behind the gateway: a RunPod queue endpoint or any OpenAI-compatible base URL.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used in metrics, logs and `/status`.
    pub name: String,
    /// RunPod serverless endpoint id: the base becomes `{runpod_api_base}/v2/{id}/openai/v1`.
    #[serde(default)]
    pub runpod_endpoint_id: Option<String>,
    /// Any OpenAI-compatible base URL, such as `http://10.0.0.5:8000/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Bearer key sent to this upstream (never to clients, never logged).
    #[serde(default)]
    pub api_key: Option<String>,
    /// RunPod load-balancing endpoint id: the base becomes `https://{id}.api.runpod.ai/v1`.
    #[serde(default)]
    pub runpod_lb_endpoint_id: Option<String>,
    /// Served model name for this upstream; overrides `research.model`.
    #[serde(default)]
    pub model: Option<String>,
    /// Every model this upstream serves, for routing OpenAI requests by
    /// `model` (with `model`, and what `/v1/models` discovery finds).
    #[serde(default)]
    pub models: Vec<String>,
    /// Share of traffic relative to the others (cost is divided by it).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Requests allowed in flight at once; past it the pool picks another
    /// upstream, or answers 503 when all are full. 0: no limit.
    #[serde(default)]
    pub max_concurrent: u64,
    /// Full URL probed instead of the kind's usual health check (200 up, 204 initializing).
    #[serde(default)]
    pub health_url: Option<String>,
    /// Whether the probe of a `health_url` on another origin (scheme, host,
    /// port) than the API carries the upstream's key. Off by default: a key
    /// goes only to its own origin unless the operator says otherwise.
    #[serde(default)]
    pub send_key_to_health_url: bool,
    /// Preference order: traffic goes to the lowest tier that has a routable
    /// upstream with room, and spills to the next only when that one is full
    /// or slow (`pool.spill_latency`). Own boxes at 0, serverless at 1.
    #[serde(default, deserialize_with = "tier_number")]
    pub tier: u32,
    /// What this upstream costs, for `context7_upstream_cost_usd_total`,
    /// the access log and `/status`.
    #[serde(default)]
    pub pricing: Option<Pricing>,
}

/// A tier: a whole number from 0, said so when it is not one.
fn tier_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = f64::deserialize(d)?;
    if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(serde::de::Error::custom(format!(
            "{n} is not a tier: write a whole number from 0 (0 is used first)"
        )))
    }
}

/// An upstream's prices in US dollars, each optional: `per_second` is charged
/// for the upstream time of every attempt (RunPod bills per second of
/// worker time), the token prices for the tokens its answers report.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    #[serde(default)]
    pub per_second: Option<f64>,
    #[serde(default)]
    pub per_million_prompt_tokens: Option<f64>,
    #[serde(default)]
    pub per_million_completion_tokens: Option<f64>,
}

impl Pricing {
    /// Dollars for `seconds` of upstream time.
    pub fn for_time(&self, seconds: f64) -> f64 {
        self.per_second.map_or(0.0, |price| price * seconds)
    }

    /// Dollars for the tokens of one answer.
    pub fn for_tokens(&self, prompt: u64, completion: u64) -> f64 {
        let per = |price: Option<f64>, n: u64| price.map_or(0.0, |p| p * n as f64 / 1e6);
        per(self.per_million_prompt_tokens, prompt)
            + per(self.per_million_completion_tokens, completion)
    }

    /// Whether it prices tokens (then streams ask the upstream for usage).
    pub fn prices_tokens(&self) -> bool {
        self.per_million_prompt_tokens.is_some() || self.per_million_completion_tokens.is_some()
    }
}

fn default_weight() -> f64 {
    1.0
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            runpod_endpoint_id: None,
            base_url: None,
            api_key: None,
            runpod_lb_endpoint_id: None,
            model: None,
            models: Vec::new(),
            weight: default_weight(),
            max_concurrent: 0,
            health_url: None,
            send_key_to_health_url: false,
            tier: 0,
            pricing: None,
        }
    }
}

/// Active health checks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path probed on the origin of `base_url` upstreams.
    pub path: String,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy upstream healthy again.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy upstream unhealthy.
    pub unhealthy_threshold: u32,
    /// Ask healthy OpenAI-compatible upstreams for `/v1/models` (never RunPod
    /// queue endpoints, where it is a billed job) to learn what they serve.
    pub discover_models: bool,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: "/ping".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            discover_models: true,
        }
    }
}

/// Timeouts towards upstreams, as in the original service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP connect plus TLS handshake.
    #[serde(with = "duration_text")]
    pub connect: Duration,
    /// Whole research request, retries included; past it the client gets 504.
    #[serde(with = "duration_text")]
    pub total: Duration,
    /// One attempt's wait for the answer to begin; past it another upstream is
    /// tried if time and budget remain. Unset: only `total` applies.
    #[serde(with = "optional_duration_text")]
    pub first_byte: Option<Duration>,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: Duration::from_secs(10),
            total: Duration::from_secs(60),
            first_byte: None,
        }
    }
}

/// Retries of requests that failed before any byte reached the client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesConfig {
    /// Attempts in all, the first one included, each on a different upstream.
    pub max_attempts: u32,
    /// Retries may add at most this share of the requests of the last 10 s.
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the traffic, so a quiet gateway can retry.
    pub budget_min_per_second: f64,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig {
            max_attempts: 2,
            budget_ratio: 0.2,
            budget_min_per_second: 1.0,
        }
    }
}

/// How the next upstream is chosen.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Power of two choices on Peak-EWMA latency times in-flight requests.
    PeakEwma,
    /// Plain rotation over routable upstreams (for comparison).
    RoundRobin,
}

/// The latency-aware selection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub strategy: Strategy,
    /// Time constant of the latency estimate: how fast old samples and idle time fade.
    #[serde(with = "duration_text")]
    pub decay: Duration,
    /// Latency charged for a failed attempt, so a fast error never looks cheap.
    #[serde(with = "duration_text")]
    pub failure_penalty: Duration,
    /// Estimate of an upstream with no sample yet, when no other has one either.
    #[serde(with = "duration_text")]
    pub initial_latency: Duration,
    /// Share of one request's latency that each request already in flight adds
    /// to the cost. 1.0 is the classic Peak-EWMA (a queue serving one at a
    /// time); vLLM batches running requests, so each adds far less.
    pub in_flight_weight: f64,
    /// One of the two candidates is the last winner (P2C with memory): with few
    /// upstreams, plain P2C sends a third of the traffic to the second best.
    pub remember_best: bool,
    /// An upstream whose latency estimate reaches this counts as slow: its
    /// tier takes no more traffic while another tier has room, until the
    /// estimate is back under 80 % of it (hysteresis, so it does not flap).
    /// Unset: tiers spill only when full or down.
    #[serde(with = "optional_duration_text")]
    pub spill_latency: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            strategy: Strategy::PeakEwma,
            decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            initial_latency: Duration::from_millis(500),
            in_flight_weight: 0.25,
            remember_best: true,
            spill_latency: None,
        }
    }
}

/// Passive ejection of upstreams that fail real requests.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionConfig {
    /// Failures in a row that eject an upstream (what counts: `pool::call`, and
    /// docs/reliability.md, "How each attempt outcome is handled").
    pub consecutive_failures: u32,
    /// First ejection's length; each further ejection in a row doubles it.
    #[serde(with = "duration_text")]
    pub base_cooldown: Duration,
    /// Longest ejection.
    #[serde(with = "duration_text")]
    pub max_cooldown: Duration,
    /// Longest ejection taken from a 429's `Retry-After`.
    #[serde(with = "duration_text")]
    pub max_retry_after: Duration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: 3,
            base_cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Limits that protect the gateway from its clients and from its upstreams.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Largest upstream answer the gateway reads on routes it rewrites.
    pub max_upstream_body_bytes: usize,
    /// Largest request head (request line and header fields, up to the blank
    /// line); a larger one gets 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head, from its first byte
    /// (from the accept on a new connection); past it: 408 and close.
    #[serde(with = "duration_text")]
    pub client_header_timeout: Duration,
    /// Time a client has to send a whole request body, from the end of its
    /// head; past it: 408 and close.
    #[serde(with = "duration_text")]
    pub client_body_timeout: Duration,
    /// A client connection idle this long between two requests is closed.
    #[serde(with = "duration_text")]
    pub client_keepalive_timeout: Duration,
    /// A client that accepts no byte of its answer for this long has the
    /// answer cut, its upstream request cancelled and its connection closed.
    #[serde(with = "duration_text")]
    pub client_write_timeout: Duration,
}

/// Pingora refuses request heads over 1 MiB (its `MAX_HEADER_SIZE`) with 400
/// before the gateway sees them, so a larger limit could never apply.
pub const MAX_HEADER_BYTES_CEILING: usize = 1_048_575;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1024 * 1024,
            max_upstream_body_bytes: 16 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            client_header_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(30),
            client_keepalive_timeout: Duration::from_secs(60),
            client_write_timeout: Duration::from_secs(30),
        }
    }
}

/// The MCP endpoint at `/mcp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Browser origins allowed to call `/mcp`, as `scheme://host` (any port) or
    /// `scheme://host:port`; `"*"` allows every origin. A request without an
    /// `Origin` header (every non-browser client) is always allowed.
    pub allowed_origins: Vec<String>,
    /// A session unused this long is forgotten; its id then gets 404.
    #[serde(with = "duration_text")]
    pub session_idle_timeout: Duration,
    /// Sessions kept at most; past it the one idle the longest is dropped.
    pub max_sessions: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            // Loopback only: a page elsewhere must not reach a local gateway
            // through the user's browser (DNS rebinding).
            allowed_origins: [
                "http://localhost",
                "https://localhost",
                "http://127.0.0.1",
                "https://127.0.0.1",
                "http://[::1]",
                "https://[::1]",
            ]
            .map(String::from)
            .to_vec(),
            session_idle_timeout: Duration::from_secs(30 * 60),
            max_sessions: 10_000,
        }
    }
}

/// One thing wrong with a configuration: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `upstreams[1].base_url`, or `line 4 column 5` for YAML errors.
    pub at: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.why)
    }
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `environment` for the environment-only mode.
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {} problem{} in the configuration",
            self.source,
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {p}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The socket address to listen on (valid after `validate`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8002)))
    }
}

/// A base URL split into what a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path without a trailing slash, possibly empty.
    pub path: String,
}

impl BaseUrl {
    /// The `Host` header value: the port is left out when it is the scheme's default.
    pub fn authority(&self) -> String {
        let mut authority = String::with_capacity(self.host.len() + 8);
        self.write_authority(&mut authority);
        authority
    }

    /// [`Self::authority`], written into `out` (a request on the wire).
    pub fn write_authority(&self, out: &mut impl std::fmt::Write) {
        let default = if self.tls { 443 } else { 80 };
        // Writing to a String or BytesMut cannot fail.
        let _ = if self.host.contains(':') {
            write!(out, "[{}]", self.host)
        } else {
            out.write_str(&self.host)
        };
        if self.port != default {
            let _ = write!(out, ":{}", self.port);
        }
    }

    /// `scheme://authority`, for display.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority()
        )
    }
}

/// Parses `http(s)://host[:port][/path]`; user info, queries and fragments are refused.
pub fn parse_base_url(url: &str) -> Result<BaseUrl, String> {
    // Every message quotes the URL without its userinfo: a password written
    // into a URL must not reach a terminal or a log.
    let shown = without_userinfo(url);
    let url_text = url;
    let url = &shown;
    let uri: http::Uri = url_text
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?} must not carry credentials; use api_key instead"
        ));
    }
    if uri.query().is_some() || url_text.contains('#') {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(BaseUrl {
        tls,
        host,
        port,
        path: uri.path().trim_end_matches('/').to_string(),
    })
}

/// `url` with any `user:password@` replaced by `***@`, for messages. Everything
/// from the scheme to the last `@` goes, so that a password holding `/`, `?`
/// or `#` (which would end the authority) is hidden too; a path holding `@`
/// is over-hidden, never shown with a secret.
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// `duration_text` for an optional field.
mod optional_duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::duration_text")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// Durations written as `500ms`, `5s`, `2m` or `1m 30s`.
mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write a number and a unit, such as 500ms, 5s or 2m"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_connection_parts() {
        let u = parse_base_url("https://api.runpod.ai/v2/abc/openai/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "api.runpod.ai", 443, "/v2/abc/openai/v1")
        );
        assert_eq!(u.authority(), "api.runpod.ai");
        let u = parse_base_url("http://127.0.0.1:8000/v1").unwrap();
        assert_eq!(u.authority(), "127.0.0.1:8000");
        let u = parse_base_url("http://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str()), ("::1", ""));
        assert_eq!(u.authority(), "[::1]:9000");
        assert!(parse_base_url("ftp://x/v1").is_err());
        assert!(parse_base_url("http://user:pw@x/v1").is_err());
        assert!(parse_base_url("localhost:8000").is_err());
    }

    #[test]
    fn userinfo_is_hidden_whatever_the_password_holds() {
        for (url, shown) in [
            ("redis://:ab/cd@redis:6379/0", "redis://***@redis:6379/0"),
            ("redis://u:p?q#r@h", "redis://***@h"),
            ("http://user:pw@host/v1", "http://***@host/v1"),
            ("http://host/v1", "http://host/v1"),
            ("host:1", "host:1"),
        ] {
            assert_eq!(without_userinfo(url), shown);
        }
    }
}
