//! Several replicas sharing state through a real `redis-server`: rate limits,
//! token budgets, the research cache and MCP sessions, across two gateway
//! processes; and Redis going down, hanging and coming back without a 5xx.

mod common;

use common::mcp;
use common::redis::RedisServer;
use common::*;
use context7_lb::config::{OnRedisFailure, RedisConfig};
use context7_lb::sim::{SimConfig, SimUpstream};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEY: &str = "shared-client-key-1";
const UNLIMITED_KEY: &str = "unlimited-client-key-2";
const UPSTREAM_KEY: &str = "upstream-key";

/// Two gateway processes on one configuration, and what they share.
struct Replicas {
    gateways: [Process; 2],
    _dir: TempDir,
}

/// Starts two gateways in front of `sim`, sharing `redis`, with `extra`
/// YAML (top-level sections), and waits until both reach Redis.
async fn replicas(name: &str, redis: &RedisServer, sim: &SimUpstream, extra: &str) -> Replicas {
    let dir = TempDir::new(&format!("replicas-{name}"));
    let file = dir.join("gateway.yaml");
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nthreads: 1\naccess_log:\n  enabled: false\n\
         health_check:\n  interval: 300ms\n  timeout: 500ms\n\
         auth:\n  keys:\n    - {{key: \"{KEY}\", name: team-a}}\n    - {{key: \"{UNLIMITED_KEY}\", requests_per_second: 0, tokens_per_minute: 0}}\n\
         redis:\n  url: \"{}\"\n  command_timeout: 200ms\n{extra}\
         upstreams:\n  - name: sim\n    base_url: \"{}\"\n    api_key: \"{UPSTREAM_KEY}\"\n",
        redis.url(),
        sim.base_url()
    );
    std::fs::write(&file, yaml).unwrap();
    let gateways = [
        Process::spawn(&mut configured(&file)),
        Process::spawn(&mut configured(&file)),
    ];
    for gw in &gateways {
        redis_is(gw, "up").await;
    }
    Replicas {
        gateways,
        _dir: dir,
    }
}

/// Waits until `gw`'s `/ping` shows Redis `state` and an upstream is healthy.
async fn redis_is(gw: &Process, state: &str) {
    wait_for(
        &format!("{}/ping", gw.url()),
        Duration::from_secs(20),
        |status, body| status == 200 && body["redis"] == state,
    )
    .await;
}

async fn research_at(gw: &impl At, key: &str, body: &Value) -> Answer {
    send(
        gw,
        "POST",
        "/v1/research",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {key}")),
        ],
        Some(&body.to_string()),
    )
    .await
}

fn sim() -> SimConfig {
    SimConfig::new("sim")
        .api_key(UPSTREAM_KEY)
        .ttft(Duration::from_millis(1))
        .tokens_per_second(10_000.0)
        .answer_tokens(30)
}

/// A key allowed 5 requests/s (burst 5), sending 20/s for 3 s spread over
/// both replicas, gets 5 + 3 × 5 through: the limit is the key's, not each
/// replica's (which would let about twice as many through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_replicas() {
    let redis = RedisServer::start("rate");
    let upstream = SimUpstream::start(sim()).await.unwrap();
    let set = replicas(
        "rate",
        &redis,
        &upstream,
        "rate_limit:\n  requests_per_second: 5\n  burst: 5\n",
    )
    .await;
    let body = json!({"query": "What is vLLM?"});
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..60u32 {
        let at = started + Duration::from_millis(50 * u64::from(i));
        tokio::time::sleep_until(at.into()).await;
        let gw = &set.gateways[(i % 2) as usize];
        let (url, body) = (gw.url(), body.clone());
        pending.push(tokio::spawn(async move {
            let r = client()
                .post(format!("{url}/v1/research"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let retry_after = r.headers().get("retry-after").cloned();
            (r.status().as_u16(), retry_after, r.text().await.unwrap())
        }));
    }
    let mut accepted = [0u32; 2];
    let mut refused = 0;
    for (i, p) in pending.into_iter().enumerate() {
        let (status, retry_after, text) = p.await.unwrap();
        match status {
            200 => accepted[i % 2] += 1,
            429 => {
                refused += 1;
                assert_eq!(retry_after.unwrap(), "1", "{text}");
                assert_eq!(
                    json_body(&text),
                    json!({"detail": "Rate limit exceeded: retry after 1 s"})
                );
            }
            other => panic!("{other}: {text}"),
        }
    }
    let total = accepted[0] + accepted[1];
    assert!(
        (18..=22).contains(&total),
        "5 at once and 5/s for 3 s: {accepted:?} accepted, {refused} refused"
    );
    // Which replica a freed request lands on follows the phase of the
    // sending (every 4th tick is the same one); both must have taken part.
    assert!(
        accepted[0] > 0 && accepted[1] > 0,
        "both replicas serve: {accepted:?}"
    );
    // The other key sets its own limits: none.
    for gw in &set.gateways {
        for _ in 0..10 {
            assert_eq!(research_at(gw, UNLIMITED_KEY, &body).await.status, 200);
        }
    }
    let refused_a = metric_sum(
        &WithKey(&set.gateways[0], KEY),
        "context7_rate_limited_total",
    )
    .await;
    let refused_b = metric_sum(
        &WithKey(&set.gateways[1], KEY),
        "context7_rate_limited_total",
    )
    .await;
    assert_eq!((refused_a + refused_b) as u32, refused);
}

/// A tokens-per-minute budget spent through one replica refuses on the other,
/// with the time until the minute frees up; the upstream was asked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_spent_on_one_replica_refuses_on_the_other() {
    let redis = RedisServer::start("tokens");
    let upstream = SimUpstream::start(sim()).await.unwrap();
    let set = replicas(
        "tokens",
        &redis,
        &upstream,
        "rate_limit:\n  tokens_per_minute: 40\n",
    )
    .await;
    let [a, b] = &set.gateways;
    // 3 prompt tokens ("What is vLLM?") and 30 completion tokens each.
    let body = json!({"query": "What is vLLM?"});
    let first = research_at(a, KEY, &body).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["tokens_used"], 33);
    assert_eq!(
        research_at(a, KEY, &body).await.status,
        200,
        "7 tokens left: allowed, and it may overspend"
    );
    let refused = research_at(b, KEY, &body).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    // 66 of 40 spent: 26 tokens of debt plus the one a request needs, at
    // 1.5 s a token.
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((39..=41).contains(&wait), "Retry-After: {wait}");
    assert_eq!(
        refused.json(),
        json!({"detail": format!(
            "Token limit exceeded: this key's tokens per minute are spent; retry after {wait} s"
        )})
    );
    let openai = send(
        a,
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {KEY}")),
        ],
        Some(r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await;
    assert_eq!(openai.status, 429, "{}", openai.text);
    assert_eq!(
        openai.json()["error"]["code"],
        "tokens_per_minute_exceeded",
        "the same budget on the OpenAI routes"
    );
    assert_eq!(upstream.chat_requests(), 2);
    assert_eq!(
        metric_sum(
            &WithKey(b, KEY),
            "context7_rate_limited_total{limit=\"tokens\""
        )
        .await,
        1.0
    );
    assert_eq!(
        research_at(b, UNLIMITED_KEY, &body).await.status,
        200,
        "budgets are per key"
    );
}

/// A research answer paid for through one replica is a hit on the other
/// (and for MCP's research tool there), and an MCP session made on one is
/// used and ended on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_and_mcp_sessions_are_shared() {
    let redis = RedisServer::start("cache");
    let upstream = SimUpstream::start(sim()).await.unwrap();
    let set = replicas("cache", &redis, &upstream, "cache:\n  enabled: true\n").await;
    let [a, b] = &set.gateways;
    let (a, b) = (&WithKey(a, KEY), &WithKey(b, KEY));
    let body = json!({"query": "What is   vLLM?", "temperature": 0});
    let miss = research_at(a, KEY, &body).await;
    assert_eq!(miss.status, 200, "{}", miss.text);
    assert_eq!(miss.headers["x-cache"], "MISS");
    let hit = research_at(b, KEY, &json!({"query": "What is vLLM?", "temperature": 0})).await;
    assert_eq!(hit.headers["x-cache"], "HIT", "{}", hit.text);
    assert_eq!(hit.json()["result"], miss.json()["result"]);
    assert_eq!(upstream.chat_requests(), 1);

    let session = mcp::open_session(a).await;
    let tools = mcp::call(b, &session, 1, "tools/list", json!({})).await;
    assert!(tools["result"]["tools"].as_array().unwrap().len() >= 3);
    let structured = mcp::research_tool(
        b,
        &session,
        json!({"query": "What is vLLM?", "temperature": 0}),
    )
    .await;
    assert_eq!(structured["result"], miss.json()["result"]);
    assert_eq!(upstream.chat_requests(), 1, "MCP's research hit the cache");

    let headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    assert_eq!(send(b, "DELETE", "/mcp", &headers, None).await.status, 200);
    let after = mcp::post(
        a,
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(after.status, 404, "ended on the other replica");
    assert_eq!(send(a, "DELETE", "/mcp", &headers, None).await.status, 404);
}

/// Redis killed under traffic, then started again (empty): no request fails,
/// failures are counted, the outage is logged once per replica, and sharing
/// resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_breaks_nothing_and_sharing_resumes() {
    let mut redis = RedisServer::start("outage");
    let upstream = SimUpstream::start(sim()).await.unwrap();
    let mut set = replicas(
        "outage",
        &redis,
        &upstream,
        "rate_limit:\n  requests_per_second: 1000\n  burst: 1000\n  tokens_per_minute: 100000000\n\
         cache:\n  enabled: true\n",
    )
    .await;
    let traffic = |set: &Replicas, n: u32| {
        let urls = [set.gateways[0].url(), set.gateways[1].url()];
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..n {
                let body = json!({"query": format!("question {}", i % 7), "temperature": 0});
                let r = client()
                    .post(format!("{}/v1/research", urls[(i % 2) as usize]))
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    let during = traffic(&set, 150);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for gw in &set.gateways {
        let ping = fetch_json(&format!("{}/ping", gw.url()), None).await;
        assert_eq!(ping["redis"], "down", "{ping}");
        assert_eq!(
            ping["status"], "healthy",
            "Redis does not make the gateway unhealthy"
        );
    }
    redis.restart();
    let statuses = during.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request answered: {statuses:?}"
    );
    for gw in &set.gateways {
        redis_is(gw, "up").await;
        assert!(metric_sum(&WithKey(gw, KEY), "context7_redis_errors_total").await >= 1.0);
    }
    // Sharing again: a session made on one replica works on the other.
    let session = mcp::open_session(&WithKey(&set.gateways[0], KEY)).await;
    mcp::call(
        &WithKey(&set.gateways[1], KEY),
        &session,
        1,
        "tools/list",
        json!({}),
    )
    .await;
    let status = fetch_json(&format!("{}/status", set.gateways[1].url()), Some(KEY)).await;
    assert_eq!(status["redis"]["state"], "up");
    assert_eq!(status["redis"]["outages"], 1);
    assert!(!status["redis"]["url"].as_str().unwrap().is_empty());

    for gw in &mut set.gateways {
        gw.signal("INT");
        let (_, _, logs) = gw.wait(Duration::from_secs(10));
        let lost = logs
            .lines()
            .filter(|l| l.contains("redis") && l.contains(": lost"))
            .count();
        let back = logs
            .lines()
            .filter(|l| l.contains("reachable again"))
            .count();
        assert_eq!((lost, back), (1, 1), "logged once per outage:\n{logs}");
    }
}

/// A Redis that accepts connections and answers nothing (SIGSTOP) costs the
/// first requests at most the command timeout, then none; it is back as soon
/// as it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_one_command_timeout_then_nothing() {
    let redis = RedisServer::start("hung");
    let upstream = SimUpstream::start(sim()).await.unwrap();
    let set = replicas(
        "hung",
        &redis,
        &upstream,
        "rate_limit:\n  requests_per_second: 1000\n  burst: 1000\n",
    )
    .await;
    let a = &set.gateways[0];
    let body = json!({"query": "What is vLLM?"});
    redis.signal("STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(research_at(a, KEY, &body).await.status, 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(800),
        "the 200 ms command timeout bounds the wait: {slowest:?}"
    );
    let status = fetch_json(&format!("{}/status", a.url()), Some(KEY)).await;
    assert_eq!(status["redis"]["state"], "down");
    assert!(
        status["redis"]["last_error"]
            .as_str()
            .unwrap()
            .contains("command_timeout"),
        "{status}"
    );
    redis.signal("CONT");
    redis_is(a, "up").await;
}

/// With `on_failure: deny`, limits that cannot be checked refuse with 503
/// and say why; `/ping` stays 200 and says Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_deny_refuses_while_redis_is_unreachable() {
    let sims = sims(vec![SimConfig::new("sim").api_key("key-sim")]).await;
    let mut config = common::config();
    config.rate_limit.requests_per_second = 100.0;
    // A port held, and listened on by no one: every connection is refused.
    let nothing = common::redis::held_port::Hold::loopback();
    config.redis = Some(RedisConfig {
        url: format!("redis://127.0.0.1:{}", nothing.address().port()),
        on_failure: OnRedisFailure::Deny,
        ..RedisConfig::default()
    });
    let gw = gateway(&sims, config).await;
    let refused = research_at(&gw, "none", &json!({"query": "q"})).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(
        refused.json(),
        json!({"detail": "Service Unavailable: the shared rate limits cannot be checked (Redis \
                          is unreachable and redis.on_failure is deny); retry shortly"})
    );
    let ping = get_json(&gw, "/ping").await;
    assert_eq!(
        (ping["status"].as_str(), ping["redis"].as_str()),
        (Some("healthy"), Some("down"))
    );
    assert!(metric(&gw, "context7_redis_errors_total{op=\"limit\"}").await >= 1.0);
    assert_eq!(
        metric(
            &gw,
            "context7_rate_limited_total{limit=\"unavailable\",route=\"/v1/research\"}"
        )
        .await,
        1.0
    );
}

/// A wrong Redis password is reported (in `/status` and the log) without
/// the password, which appears in no answer, metric or log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_is_reported_without_it() {
    let redis = RedisServer::start_with("password", &["--requirepass", "right-password-123"]);
    let dir = TempDir::new("redis-password");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: \"127.0.0.1:0\"\nthreads: 1\nredis:\n  url: \"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{}\"\n",
            redis.address().port()
        ),
    )
    .unwrap();
    let mut command = configured(&file);
    command
        .env("REDIS_PASSWORD", "wrong-password-456")
        .env("RUST_LOG", "debug");
    let mut gw = Process::spawn(&mut command);
    redis_is(&gw, "down").await;
    let status = fetch_json(&format!("{}/status", gw.url()), None).await;
    assert_eq!(
        status["redis"]["url"],
        format!("redis://***@127.0.0.1:{}", redis.address().port())
    );
    let error = status["redis"]["last_error"].as_str().unwrap();
    assert_eq!(
        error,
        "Password authentication failed - AuthenticationFailed"
    );
    let metrics = get_text(&gw, "/metrics").await;
    gw.signal("INT");
    let (_, out, logs) = gw.wait(Duration::from_secs(10));
    for text in [status.to_string(), metrics, out, logs.clone()] {
        assert!(!text.contains("wrong-password-456"), "{text}");
    }
    assert!(logs.contains("cannot be reached"), "{logs}");
}
