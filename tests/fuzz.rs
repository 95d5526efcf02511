//! A short, bounded fuzz run of the parsers that read what clients and
//! operators send: the research body validator, the configuration loader, the
//! SSE watcher (under every chunking) and the MCP JSON-RPC handler. Each
//! property runs thousands of generated cases (about 20 s in all in a debug
//! build): nothing panics, and each answer is one of the documented ones.

use context7_lb::config::{Config, Problem};
use context7_lb::routes::mcp::{self, HttpRequest, Message};
use context7_lb::routes::research::{Rejection, ResearchRequest};
use context7_lb::sse::SseWatcher;
use proptest::prelude::*;
use proptest::test_runner::Config as Cases;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// Research body

/// A value for one research field, and whether the original pydantic model
/// accepts it (`None`: the field is absent).
#[derive(Debug, Clone)]
enum Field {
    Absent,
    Present(Value, bool),
}

fn query_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Absent),
        // Lengths around both bounds, in characters (é is two bytes).
        (0usize..5003, prop::bool::ANY).prop_map(|(n, wide)| {
            let text = if wide { "é".repeat(n) } else { "q".repeat(n) };
            Field::Present(Value::String(text), (1..=5000).contains(&n))
        }),
        ".{1,40}".prop_map(|s| Field::Present(Value::String(s), true)),
        any_json()
            .prop_filter("not a string", |v| !v.is_string())
            .prop_map(|v| Field::Present(v, false)),
    ]
}

fn max_tokens_field() -> impl Strategy<Value = Field> {
    let fits = |n: i64| (100..=4000).contains(&n);
    prop_oneof![
        Just(Field::Absent),
        (-100i64..4200).prop_map(move |n| Field::Present(json!(n), fits(n))),
        (-100i64..4200).prop_map(move |n| Field::Present(json!(n as f64), fits(n))),
        (-100i64..4200).prop_map(move |n| Field::Present(json!(n.to_string()), fits(n))),
        (100i64..4000).prop_map(|n| Field::Present(json!(n as f64 + 0.5), false)),
        "[a-z]{1,6}".prop_map(|s| Field::Present(json!(s), false)),
        prop_oneof![
            Just(json!(null)),
            Just(json!(true)),
            Just(json!([])),
            Just(json!({}))
        ]
        .prop_map(|v| Field::Present(v, false)),
    ]
}

fn temperature_field() -> impl Strategy<Value = Field> {
    let fits = |t: f64| (0.0..=2.0).contains(&t);
    prop_oneof![
        Just(Field::Absent),
        (-1.0f64..3.0).prop_map(move |t| Field::Present(json!(t), fits(t))),
        (-1.0f64..3.0).prop_map(move |t| Field::Present(json!(t.to_string()), fits(t))),
        (0i64..3).prop_map(move |n| Field::Present(json!(n), fits(n as f64))),
        "[a-z]{1,6}".prop_map(|s| Field::Present(json!(s), false)),
        prop_oneof![
            Just(json!(null)),
            Just(json!(false)),
            Just(json!([1])),
            Just(json!({}))
        ]
        .prop_map(|v| Field::Present(v, false)),
    ]
}

proptest! {
    #![proptest_config(Cases { cases: 3000, ..Cases::default() })]

    /// Any bytes: accepted, or refused as 400 (not JSON) or 422 (not the schema).
    #[test]
    fn research_bodies_of_any_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let is_json = serde_json::from_slice::<Value>(&body).is_ok();
        match ResearchRequest::parse(&body) {
            Ok(r) => prop_assert!(is_json && !r.query.is_empty()),
            Err(Rejection::MalformedJson(why)) => {
                prop_assert!(!is_json && !why.is_empty());
                prop_assert_eq!(Rejection::MalformedJson(why).reply().status, 400);
            }
            Err(rejection @ Rejection::Invalid(_)) => {
                prop_assert!(is_json);
                prop_assert_eq!(rejection.reply().status, 422);
            }
        }
    }

    /// Objects with each field valid or not: accepted exactly when all three
    /// are, and otherwise refused with one 422 entry per invalid field.
    #[test]
    fn research_fields_are_judged_one_by_one(
        query in query_field(),
        max_tokens in max_tokens_field(),
        temperature in temperature_field(),
        extra in any_json(),
    ) {
        let mut object = Map::new();
        object.insert("extra".into(), extra);
        let mut invalid = Vec::new();
        for (name, field) in [("query", &query), ("max_tokens", &max_tokens), ("temperature", &temperature)] {
            match field {
                Field::Absent if name == "query" => invalid.push(name),
                Field::Absent => {}
                Field::Present(value, valid) => {
                    object.insert(name.into(), value.clone());
                    if !valid {
                        invalid.push(name);
                    }
                }
            }
        }
        let body = serde_json::to_vec(&Value::Object(object)).unwrap();
        match ResearchRequest::parse(&body) {
            Ok(r) => {
                prop_assert!(invalid.is_empty(), "accepted with {:?} invalid", invalid);
                let chars = r.query.chars().count();
                prop_assert!((1..=5000).contains(&chars));
                prop_assert!((100..=4000).contains(&r.max_tokens));
                prop_assert!((0.0..=2.0).contains(&r.temperature));
            }
            Err(Rejection::Invalid(errors)) => {
                let located: Vec<&str> = errors.iter().map(|e| e.loc[1].as_str()).collect();
                prop_assert_eq!(located, invalid);
                for e in &errors {
                    prop_assert_eq!(e.loc[0].as_str(), "body");
                    prop_assert!(!e.msg.is_empty() && !e.kind.is_empty());
                }
            }
            Err(other) => prop_assert!(false, "valid JSON refused as {:?}", other),
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration loader

/// Every problem says where and why.
fn well_formed(problems: &[Problem]) -> Result<(), TestCaseError> {
    prop_assert!(!problems.is_empty());
    for p in problems {
        prop_assert!(!p.at.is_empty() && !p.why.is_empty(), "{:?}", p);
    }
    Ok(())
}

/// Loading never panics: a configuration (then valid or not, each problem
/// located), or problems.
fn load(text: &str, env: &HashMap<String, String>) -> Result<(), TestCaseError> {
    match Config::from_yaml(text, env) {
        Ok(config) => match config.validate() {
            Ok(()) => Ok(()),
            Err(problems) => well_formed(&problems),
        },
        Err(problems) => well_formed(&problems),
    }
}

const EXAMPLE: &str = include_str!("../config/example.yaml");

/// An edit of `config/example.yaml`: lines dropped, doubled, changed or cut.
#[derive(Debug, Clone)]
enum Edit {
    Drop(usize),
    Double(usize),
    Replace(usize, String),
    Value(usize, String),
    Truncate(usize),
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let line = 0usize..200;
    let token = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("0s".to_string()),
        Just("1e999".to_string()),
        Just("${UNSET}".to_string()),
        Just("${PORT:-x}".to_string()),
        Just("[".to_string()),
        Just("{a: b}".to_string()),
        Just("&anchor x".to_string()),
        Just("*alias".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("~".to_string()),
        ".{0,12}".boxed(),
    ];
    prop_oneof![
        line.clone().prop_map(Edit::Drop),
        line.clone().prop_map(Edit::Double),
        (line.clone(), ".{0,30}").prop_map(|(i, s)| Edit::Replace(i, s)),
        (line.clone(), token).prop_map(|(i, s)| Edit::Value(i, s)),
        (0usize..8000).prop_map(Edit::Truncate),
        (line, "[ :\\-\\[\\]{}a-z#&*!|>'\"%@`]{0,12}").prop_map(|(i, s)| Edit::Insert(i, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::Double(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Replace(i, s) if !lines.is_empty() => lines[i % n] = s.clone(),
            Edit::Value(i, s) if !lines.is_empty() => {
                let l = &mut lines[i % n];
                if let Some((key, _)) = l.split_once(':') {
                    *l = format!("{key}: {s}");
                }
            }
            Edit::Truncate(at) => {
                let joined = lines.join("\n");
                let cut = joined
                    .char_indices()
                    .map(|(i, _)| i)
                    .take_while(|i| i <= at)
                    .last()
                    .unwrap_or(0);
                lines = joined[..cut].lines().map(str::to_string).collect();
            }
            Edit::Insert(i, s) => lines.insert(i % n.max(1), s.clone()),
            _ => {}
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(Cases { cases: 1500, ..Cases::default() })]

    /// Arbitrary text (and bytes read lossily) as a configuration file.
    #[test]
    fn config_from_any_text(text in ".{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let env = HashMap::new();
        load(&text, &env)?;
        load(&String::from_utf8_lossy(&bytes), &env)?;
    }

    /// The shipped example, edited at random, with variables set or not.
    #[test]
    fn config_from_edited_examples(
        edits in prop::collection::vec(edit(), 1..5),
        port in prop::option::of("[0-9a-z:]{0,6}"),
    ) {
        let mut env = HashMap::new();
        if let Some(port) = port {
            env.insert("PORT".to_string(), port);
        }
        load(&apply(EXAMPLE, &edits), &env)?;
    }
}

// ---------------------------------------------------------------------------
// Extreme numbers in a configuration

/// A duration as written in YAML: zero, ordinary, the longest allowed, just
/// past it, and far past anything a clock can add.
fn extreme_duration() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "0s",
        "1ms",
        "5s",
        "7days",
        "8days",
        "500years",
        "18446744073709551615s",
    ])
}

/// A number as written in YAML, from the tiny to the absurd.
fn extreme_number() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "0", "1e-30", "0.001", "0.5", "1", "1000", "1e6", "1e300", ".inf", ".nan", "-1",
    ])
}

/// What a validated configuration does first: build the pool, choose an
/// upstream, record a failure (its penalty and cooldown added to now), check a
/// rate limit, and make one real request (to a closed port) with its deadlines.
fn run_once(config: &Config) {
    use context7_lb::pool::call::{Ask, Caller, ModelNamedBy, Prepared};
    let metrics = std::sync::Arc::new(context7_lb::metrics::Metrics::new());
    let pool = std::sync::Arc::new(
        context7_lb::pool::Pool::from_config(config, metrics.clone()).expect("a valid pool"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if let Ok(upstream) = pool.select(&[]) {
            pool.begin(&upstream)
                .finish(context7_lb::pool::Outcome::Failure("fuzz".into()));
            pool.begin(&upstream)
                .finish(context7_lb::pool::Outcome::RateLimited(Some(
                    std::time::Duration::from_secs(u64::MAX / 4),
                )));
            let _ = pool.cost(&upstream, tokio::time::Instant::now());
        }
        let limit = context7_lb::limits::Limits::new([&config.rate_limit], None);
        let client_id = context7_lb::auth::ClientId::Unknown;
        let _ = limit.admit(&client_id, &config.rate_limit).await;
        limit.charge(&client_id, &config.rate_limit, u64::MAX).await;
        let _ = limit.admit(&client_id, &config.rate_limit).await;
        let client = std::sync::Arc::new(context7_lb::client::UpstreamClient::new());
        let caller = Caller::new(config, pool.clone(), client, metrics);
        let prepare = |_: &context7_lb::pool::Upstream| Prepared {
            body: bytes::Bytes::from_static(b"{}"),
            token_model: "m".into(),
        };
        let ask = Ask {
            endpoint: "/chat/completions",
            model_named_by: ModelNamedBy::Gateway,
            eligible: &|_| true,
            prepare: &prepare,
        };
        let parse = |_: &[u8]| Ok(((), None));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), caller.call(&ask, &parse))
            .await;
    });
}

proptest! {
    #![proptest_config(Cases { cases: 96, ..Cases::default() })]

    /// Durations and rates at every extreme: refused with the field named, or
    /// accepted and then run without a panic.
    #[test]
    fn extreme_numbers_are_refused_or_run(
        durations in prop::collection::vec(prop::option::weighted(0.2, extreme_duration()), 8),
        numbers in prop::collection::vec(prop::option::weighted(0.2, extreme_number()), 6),
        burst in prop::option::weighted(0.2, prop::sample::select(vec![0u64, 1, 1_000_000, 4_000_000_000])),
    ) {
        // Each setting is left at its default or set to an extreme.
        let set = |key: &str, value: Option<String>| {
            value.map_or(String::new(), |v| format!("  {key}: {v}\n"))
        };
        let d = |i: usize| durations[i].map(str::to_string);
        let n = |i: usize| numbers[i].map(str::to_string);
        let yaml = format!(
            "timeouts:\n  connect: 1s\n{}{}pool:\n  decay: 10s\n{}{}{}\
             ejection:\n  base_cooldown: 1s\n{}{}rate_limit:\n{}{}retries:\n  max_attempts: 2\n{}{}\
             upstreams:\n  - name: a\n    base_url: \"http://127.0.0.1:9/v1\"\n{}  \
             - name: b\n    base_url: \"http://127.0.0.1:9/v2\"\n",
            set("total", d(0)),
            set("first_byte", d(1)),
            set("failure_penalty", d(2)),
            set("initial_latency", d(3)),
            set("in_flight_weight", n(0)),
            set("max_cooldown", d(4)),
            set("max_retry_after", d(5)),
            set("requests_per_second", n(1).or(Some("10".into()))),
            set("burst", burst.map(|b| b.to_string())),
            set("budget_ratio", n(2)),
            set("budget_min_per_second", n(3)),
            set("  weight", n(4)),
        );
        let _ = (d(6), d(7), n(5));
        match Config::from_yaml(&yaml, &HashMap::new()) {
            Err(problems) => well_formed(&problems)?,
            Ok(config) => match config.validate() {
                Err(problems) => well_formed(&problems)?,
                Ok(()) => run_once(&config),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// SSE watcher

/// What a watcher concluded from a stream.
fn watch(chunks: &[&[u8]]) -> (bool, Option<(u64, u64)>, u64, u64) {
    let mut w = SseWatcher::new();
    for c in chunks {
        w.feed(c);
    }
    (
        w.done(),
        w.usage().map(|u| (u.prompt_tokens, u.completion_tokens)),
        w.events(),
        w.errors(),
    )
}

/// Cuts `bytes` at the given points (any order, any repeats).
fn cut<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points {
        chunks.push(&bytes[start..p]);
        start = p;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// One event of an OpenAI-style stream, or the bytes between events.
fn sse_event() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,10}".prop_map(|t| format!("data: {}", json!({"choices": [{"delta": {"content": t}}]}))),
        (0u64..1000, 0u64..1000).prop_map(|(p, c)| format!(
            "data: {}",
            json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
        )),
        "[a-z ]{0,10}".prop_map(|m| format!("data: {}", json!({"error": {"message": m}}))),
        Just("data: [DONE]".to_string()),
        Just(": keep-alive".to_string()),
        Just("event: message\ndata: {\"x\":1}".to_string()),
        Just("data: {\"usage\":\ndata: {\"prompt_tokens\":1}}".to_string()),
        "[ -~]{0,16}".prop_map(|s| s),
    ]
}

proptest! {
    #![proptest_config(Cases { cases: 3000, ..Cases::default() })]

    /// A generated stream (LF, CRLF or CR separators) gives the same result
    /// however it is cut into chunks.
    #[test]
    fn sse_results_do_not_depend_on_chunking(
        events in prop::collection::vec(sse_event(), 0..8),
        separator in prop_oneof![Just("\n\n"), Just("\r\n\r\n"), Just("\r\r")],
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let newline = &separator[..separator.len() / 2];
        let text: String = events
            .iter()
            .map(|e| format!("{}{separator}", e.replace('\n', newline)))
            .collect();
        let bytes = text.as_bytes();
        prop_assert_eq!(watch(&cut(bytes, &points)), watch(&[bytes]));
        // Byte by byte, the finest chunking of all.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(watch(&singles), watch(&[bytes]));
    }

    /// Arbitrary bytes, arbitrarily cut: no panic, and the same result.
    #[test]
    fn sse_any_bytes_any_chunking(
        bytes in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..300),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        prop_assert_eq!(watch(&cut(&bytes, &points)), watch(&[&bytes]));
    }
}

// ---------------------------------------------------------------------------
// MCP JSON-RPC

const RPC_CODES: [i64; 7] = [-32700, -32600, -32601, -32602, -32603, -32000, -32001];

/// A JSON-RPC message as clients (and fuzzers) write them.
fn rpc_message() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just(json!("initialize")),
        Just(json!("ping")),
        Just(json!("tools/list")),
        Just(json!("tools/call")),
        Just(json!("notifications/initialized")),
        Just(json!("resources/list")),
        any_json(),
    ];
    let id = prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9]{0,8}".prop_map(|s| json!(s)),
        any_json(),
    ];
    let arguments = prop_oneof![
        Just(json!({"query": "what is vLLM?"})),
        Just(json!({"query": "", "max_tokens": 5})),
        Just(json!({"query": "q", "temperature": "hot"})),
        any_json(),
    ];
    let params = prop_oneof![
        Just(
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}})
        ),
        (
            prop_oneof![
                Just(json!("research")),
                Just(json!("list_models")),
                Just(json!("upstream_status")),
                any_json()
            ],
            arguments,
        )
            .prop_map(|(name, arguments)| json!({"name": name, "arguments": arguments})),
        any_json(),
    ];
    (
        prop::option::of(prop_oneof![
            Just(json!("2.0")),
            Just(json!("1.0")),
            any_json()
        ]),
        prop::option::of(method),
        prop::option::of(id),
        prop::option::of(params),
        prop::option::of(any_json()),
    )
        .prop_map(|(jsonrpc, method, id, params, result)| {
            let mut m = Map::new();
            for (key, value) in [
                ("jsonrpc", jsonrpc),
                ("method", method),
                ("id", id),
                ("params", params),
                ("result", result),
            ] {
                if let Some(v) = value {
                    m.insert(key.into(), v);
                }
            }
            Value::Object(m)
        })
}

/// The parts of an HTTP request the transport reads.
fn http_parts() -> impl Strategy<Value = (http::Method, http::HeaderMap, bool)> {
    (
        prop_oneof![8 => Just(http::Method::POST), 1 => Just(http::Method::DELETE), 1 => Just(http::Method::GET)],
        prop::option::of(prop_oneof![
            Just("application/json, text/event-stream"),
            Just("text/event-stream"),
            Just("application/json"),
            Just("text/html"),
            Just("*/*"),
        ]),
        prop::option::of(prop_oneof![Just("application/json"), Just("text/plain")]),
        prop::option::of(prop_oneof![Just("2025-11-25"), Just("2025-03-26"), Just("1999-01-01")]),
        prop::option::of(prop_oneof![Just("http://localhost:3000"), Just("https://evil.example")]),
        prop_oneof![Just(0u8), Just(1u8), Just(2u8)],
    )
        .prop_map(|(method, accept, content_type, version, origin, session)| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in [
                ("accept", accept),
                ("content-type", content_type),
                ("mcp-protocol-version", version),
                ("origin", origin),
            ] {
                if let Some(v) = value {
                    headers.insert(name, v.parse().unwrap());
                }
            }
            if session == 1 {
                headers.insert("mcp-session-id", "00000000000000000000000000000000".parse().unwrap());
            }
            // 2: the live session opened before the run, filled in by the test.
            (method, headers, session == 2)
        })
}

proptest! {
    #![proptest_config(Cases { cases: 3000, ..Cases::default() })]

    /// The message reader: any bytes are a message, or -32700 (not JSON) or
    /// -32600 (not a JSON-RPC message), answered with a readable id or null.
    #[test]
    fn mcp_messages_of_any_bytes(body in prop::collection::vec(any::<u8>(), 0..120), message in rpc_message()) {
        let generated = serde_json::to_vec(&message).unwrap();
        for body in [body, generated] {
            let is_json = serde_json::from_slice::<Value>(&body).is_ok();
            match mcp::parse_message(&body) {
                Ok(Message::Request { id, method, .. }) => {
                    let value: Value = serde_json::from_slice(&body).unwrap();
                    prop_assert!(id.is_string() || id.is_i64() || id.is_u64());
                    prop_assert_eq!(&value["jsonrpc"], "2.0");
                    prop_assert_eq!(&value["method"], &Value::String(method));
                }
                Ok(_) => prop_assert!(is_json),
                Err(unreadable) => {
                    let code = unreadable.error.code;
                    prop_assert_eq!(code == -32700, !is_json, "{:?}", unreadable);
                    prop_assert!(code == -32700 || code == -32600);
                    prop_assert!(unreadable.id.is_null() || unreadable.id.is_string() || unreadable.id.is_number());
                }
            }
        }
    }
}

/// The whole handler, as `/mcp` runs it, over a gateway with no upstream: every
/// answer a documented status, its body JSON-RPC with a documented code.
#[test]
fn mcp_handler_answers_every_message_with_a_documented_status() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let built = context7_lb::app::build(&Config::default(), None, false).expect("a gateway");
    let state = built.state.load_full();
    // A live session for the cases that send one.
    let init = HttpRequest::from_parts(&http::Method::POST, &{
        let mut h = http::HeaderMap::new();
        h.insert("accept", "application/json".parse().unwrap());
        h
    });
    let opened = runtime.block_on(state.mcp.answer(
        &state.mcp_tools(),
        &init,
        br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}"#,
    ));
    let session = opened
        .reply
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("mcp-session-id"))
        .map(|(_, v)| v.clone())
        .expect("a session");
    let allowed = [200, 202, 400, 403, 404, 405, 406, 415];
    let mut runner = proptest::test_runner::TestRunner::new(Cases {
        cases: 2000,
        ..Cases::default()
    });
    runner
        .run(
            &(
                http_parts(),
                rpc_message(),
                prop::collection::vec(any::<u8>(), 0..60),
                any::<bool>(),
            ),
            |((method, mut headers, live), message, junk, use_junk)| {
                if live {
                    headers.insert("mcp-session-id", session.parse().unwrap());
                }
                let body = if use_junk {
                    junk
                } else {
                    serde_json::to_vec(&message).unwrap()
                };
                let request = HttpRequest::from_parts(&method, &headers);
                // As `/mcp` runs it: the checks before the body, then the answer.
                let reply = match state.mcp.refuse_before_body(&request) {
                    Some(refusal) => refusal,
                    None => {
                        runtime
                            .block_on(state.mcp.answer(&state.mcp_tools(), &request, &body))
                            .reply
                    }
                };
                prop_assert!(
                    allowed.contains(&reply.status),
                    "{} for {:?}",
                    reply.status,
                    request
                );
                if reply.body.is_empty() {
                    prop_assert!(matches!(reply.status, 200 | 202), "{}", reply.status);
                    return Ok(());
                }
                // JSON, or one SSE `message` event holding JSON.
                let text = String::from_utf8(reply.body.to_vec()).unwrap();
                let json_text = text
                    .strip_prefix("event: message\ndata: ")
                    .map_or(text.as_str(), |t| t.trim_end());
                let rpc: Value = serde_json::from_str(json_text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                prop_assert_eq!(&rpc["jsonrpc"], "2.0");
                if let Some(code) = rpc["error"]["code"].as_i64() {
                    prop_assert!(RPC_CODES.contains(&code), "{}", code);
                } else {
                    prop_assert!(rpc.get("result").is_some(), "{}", rpc);
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(state.mcp.sessions().len() <= Config::default().mcp.max_sessions);
}
