//! The fault matrix: each upstream failure the gateway must survive, with the
//! exact answer a client sees on `/v1/research` and `/v1/chat/completions`
//! (streamed and not), and after each one nothing in flight, no descriptor
//! leaked and the simulator's connections closed.
//!
//! Already covered elsewhere and only extended here: refused connections for
//! research (`research.rs`: `a_connect_failure_is_retried_on_another_upstream`,
//! `all_upstreams_unreachable_is_503_naming_the_last_error`), research's total
//! timeout and answers that are not chat completions (`research.rs`), a
//! non-streamed chat timeout (`openai.rs`:
//! `no_upstream_no_health_and_timeouts_are_openai_errors`), a stream cut after
//! three tokens (`openai.rs`: `an_upstream_dying_mid_stream_ends_with_an_error_event_and_done`)
//! and one 429 (`pool.rs`: `a_429_is_passed_on_and_the_upstream_rests_for_its_retry_after`).
//!
//! Every test holds `SERIAL`, so descriptor counts see this test's sockets only.

mod common;

use common::*;
use context7_lb::config::UpstreamConfig;
use context7_lb::sim::{SimConfig, SimUpstream, TlsIdentity};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

fn chat_body(stream: bool) -> String {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "q"}], "stream": stream})
        .to_string()
}

async fn research_call(gw: &RunningGateway) -> (u16, reqwest::header::HeaderMap, Value) {
    research(gw, r#"{"query":"q"}"#).await
}

async fn chat_call(gw: &RunningGateway, stream: bool) -> (u16, reqwest::header::HeaderMap, String) {
    post_json(gw, "/v1/chat/completions", &chat_body(stream)).await
}

fn refs(sims: &[SimUpstream]) -> Vec<&SimUpstream> {
    sims.iter().collect()
}

/// A gateway whose health checks run once an hour after the first round, so
/// that an upstream killed after it still looks healthy and gets chosen.
async fn gateway_without_rechecks(sims: &[SimUpstream]) -> RunningGateway {
    let mut config = config();
    config.health_check.interval = Duration::from_secs(3600);
    gateway(sims, config).await
}

/// One request of each kind, so that pools and lazily made things exist
/// before the baseline is taken.
async fn warm_up(gw: &RunningGateway) {
    assert_eq!(research_call(gw).await.0, 200);
    assert_eq!(chat_call(gw, false).await.0, 200);
    assert_eq!(chat_call(gw, true).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused() {
    let _serial = SERIAL.lock().await;
    let mut sims = sims(vec![SimConfig::new("dead"), SimConfig::new("live")]).await;
    let gw = gateway_without_rechecks(&sims).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&refs(&sims));
    sims[0].stop();
    // Two upstreams: every request is retried on the live one.
    for _ in 0..6 {
        let (status, headers, body) = research_call(&gw).await;
        assert_eq!(
            (status, &headers["x-upstream"]),
            (200, &"live".parse().unwrap()),
            "{body}"
        );
        for stream in [false, true] {
            let (status, headers, text) = chat_call(&gw, stream).await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(headers["x-upstream"], "live");
        }
    }
    leaks
        .settled(&gw, &refs(&sims), "two upstreams, one refusing")
        .await;
    stop(gw).await;

    // One upstream, refusing: a clean 503 naming it, in each route's format.
    let mut sims = common::sims(vec![SimConfig::new("dead")]).await;
    let gw = gateway_without_rechecks(&sims).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&refs(&sims));
    sims[0].stop();
    let refused = "connection failed: ConnectRefused: Connection refused (os error 111)";
    let (status, _, body) = research_call(&gw).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"detail": format!("vLLM backend unreachable: upstream dead: {refused}")})
    );
    for stream in [false, true] {
        let (status, headers, text) = chat_call(&gw, stream).await;
        assert_eq!(status, 503, "{text}");
        assert_eq!(
            headers["content-type"], "application/json",
            "an error, not a stream"
        );
        assert_eq!(
            json_body(&text),
            json!({"error": {"message": format!("Upstream dead failed: {refused}"), "type": "upstream_error", "param": null, "code": null}})
        );
    }
    leaks
        .settled(&gw, &refs(&sims), "one refusing upstream")
        .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_body() {
    let _serial = SERIAL.lock().await;
    for sent in [0, 40] {
        let sims = sims(vec![SimConfig::new("broken")]).await;
        let gw = gateway(&sims, config()).await;
        warm_up(&gw).await;
        let leaks = LeakCheck::start(&refs(&sims));
        let pooled = sims[0].open_connections();
        sims[0].update(|c| c.reset_body_after = Some(sent));
        // The answer's header arrived, its body broke off: 502 naming the upstream.
        let (status, headers, body) = research_call(&gw).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(headers["x-upstream"], "broken");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("vLLM backend broken failed: connection broken: "),
            "{detail}"
        );
        let (status, _, text) = chat_call(&gw, false).await;
        assert_eq!(status, 502, "{text}");
        let error = json_body(&text);
        assert_eq!(error["error"]["type"], "upstream_error");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Upstream broken failed: connection broken: "),
            "{error}"
        );
        leaks.settled(&gw, &refs(&sims), "reset mid-body").await;
        let sim = &sims[0];
        wait_until("the broken connections closed", || {
            sim.open_connections() <= pooled
        })
        .await;
        stop(gw).await;
    }

    // With a second upstream, the broken answer is retried there (nothing
    // had reached the client yet).
    let sims = sims(vec![SimConfig::new("broken"), SimConfig::new("good")]).await;
    let gw = gateway(&sims, config()).await;
    sims[0].update(|c| c.reset_body_after = Some(40));
    let leaks = LeakCheck::start(&refs(&sims));
    for _ in 0..6 {
        let (status, headers, body) = research_call(&gw).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-upstream"], "good");
        let (status, headers, text) = chat_call(&gw, false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(headers["x-upstream"], "good");
    }
    leaks
        .settled(&gw, &refs(&sims), "reset mid-body, retried")
        .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_later_than_the_timeout() {
    let _serial = SERIAL.lock().await;
    let sims = sims(vec![SimConfig::new("slow")]).await;
    let mut config = config();
    config.timeouts.total = Duration::from_millis(400);
    let gw = gateway(&sims, config).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&refs(&sims));
    sims[0].update(|c| c.ttft = Duration::from_secs(3));
    let started = Instant::now();
    let (status, _, body) = research_call(&gw).await;
    assert_eq!(status, 504);
    assert_eq!(
        body,
        json!({"detail": "vLLM backend did not answer within 400ms"})
    );
    let (status, _, text) = chat_call(&gw, false).await;
    assert_eq!(status, 504);
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "No answer within 400ms.", "type": "timeout", "param": null, "code": null}})
    );
    // A stream's header comes at once; its first token does not.
    let (status, _, text) = chat_call(&gw, true).await;
    assert_eq!(status, 504);
    assert_eq!(
        json_body(&text),
        json!({"error": {"message": "Upstream slow sent no token in time.", "type": "timeout", "param": null, "code": null}})
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no wait past the timeout"
    );
    // The gateway hung up on the late stream: the simulator saw its reader go.
    let sim = &sims[0];
    wait_until("the late stream cancelled", || sim.cancelled_streams() == 1).await;
    leaks.settled(&gw, &refs(&sims), "first byte late").await;
    stop(gw).await;

    // With timeouts.first_byte below the total, the late upstream is given up
    // and another one answers.
    let sims = common::sims(vec![SimConfig::new("slow"), SimConfig::new("quick")]).await;
    let mut config = common::config();
    config.timeouts.first_byte = Some(Duration::from_millis(300));
    let gw = gateway(&sims, config).await;
    sims[0].update(|c| c.ttft = Duration::from_secs(3));
    let leaks = LeakCheck::start(&refs(&sims));
    for _ in 0..4 {
        let (status, headers, body) = research_call(&gw).await;
        assert_eq!(
            (status, &headers["x-upstream"]),
            (200, &"quick".parse().unwrap()),
            "{body}"
        );
        for stream in [false, true] {
            let (status, headers, text) = chat_call(&gw, stream).await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(headers["x-upstream"], "quick");
        }
    }
    leaks
        .settled(&gw, &refs(&sims), "first byte late, retried")
        .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_json() {
    let _serial = SERIAL.lock().await;
    let sims = sims(vec![SimConfig::new("garbled")]).await;
    let gw = gateway(&sims, config()).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&refs(&sims));
    for (raw, research_why, chat_why) in [
        (
            "<html>oops</html>",
            "not JSON (expected value at line 1 column 1)",
            "expected value at line 1 column 1",
        ),
        (
            r#"{"choices":[{"mess"#,
            "not JSON (EOF while parsing a string at line 1 column 18)",
            "EOF while parsing a string at line 1 column 18",
        ),
    ] {
        sims[0].update(|c| c.raw_answer = Some(raw.into()));
        let (status, _, body) = research_call(&gw).await;
        assert_eq!(status, 502, "{raw}");
        assert_eq!(
            body,
            json!({"detail": format!("vLLM backend garbled sent an invalid chat completion: {research_why}")})
        );
        let (status, headers, text) = chat_call(&gw, false).await;
        assert_eq!(status, 502, "{raw}");
        assert_eq!(headers["x-upstream"], "garbled");
        assert_eq!(
            json_body(&text),
            json!({"error": {"message": format!("Upstream garbled sent an answer that is not JSON: {chat_why}"), "type": "upstream_error", "param": null, "code": null}})
        );
    }
    leaks
        .settled(&gw, &refs(&sims), "answers that are not JSON")
        .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway() {
    let _serial = SERIAL.lock().await;
    let sims = sims(vec![
        SimConfig::new("cut")
            .answer_tokens(8)
            .tokens_per_second(50.0),
    ])
    .await;
    let gw = gateway(&sims, config()).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&refs(&sims));
    let pooled = sims[0].open_connections();
    for cut in [1, 4] {
        sims[0].update(|c| c.cut_stream_after = Some(cut));
        let (status, _, text) = chat_call(&gw, true).await;
        // The role chunk and `cut` tokens were relayed, so the answer is a
        // 200 stream that ends with an error event and [DONE].
        assert_eq!(status, 200);
        let events = events(&text);
        assert_eq!(events.len(), cut + 3, "{text}");
        assert_eq!(events[events.len() - 1], "[DONE]");
        let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(error["error"]["type"], "upstream_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Upstream cut failed mid-stream: connection broken: "),
            "{message}"
        );
        let tokens = events
            .iter()
            .filter(|e| e.contains("\"delta\":{\"content\""))
            .count();
        assert_eq!(tokens, cut, "{text}");
    }
    let up = &gw.state.pool.upstreams()[0];
    assert!(
        up.last_error()
            .unwrap()
            .message
            .starts_with("stream broke: ")
    );
    leaks.settled(&gw, &refs(&sims), "stream cut").await;
    let sim = &sims[0];
    wait_until("the cut connections closed", || {
        sim.open_connections() <= pooled
    })
    .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_with_retry_after() {
    let _serial = SERIAL.lock().await;
    let sims = sims(vec![SimConfig::new("limited"), SimConfig::new("spare")]).await;
    let gw = gateway(&sims, config()).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&refs(&sims));
    sims[0].update(|c| {
        c.error_rate = 1.0;
        c.error_status = 429;
        c.retry_after_secs = 30;
    });
    let before = sims[0].chat_requests();
    // 8 clients, 80 requests: the limited upstream answers 429 to those it
    // gets before its first 429 is seen, then rests for its Retry-After.
    let answers = load(&gw, 8, Duration::from_secs(10), 80).await;
    assert_eq!(answers.len(), 80);
    let limited: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(limited.iter().all(|a| a.status == 429), "{limited:?}");
    let reached = sims[0].chat_requests() - before;
    assert_eq!(
        limited.len() as u64,
        reached,
        "every request it got was a 429"
    );
    assert!(
        reached <= 8,
        "{reached} requests reached it after its first 429"
    );
    let up = &gw.state.pool.upstreams()[0];
    assert!(up.ejected_until(tokio::time::Instant::now()).is_some());
    leaks
        .settled(&gw, &refs(&sims), "429 storm on one of two")
        .await;
    stop(gw).await;

    // Every upstream limited: each client gets the 429 and its Retry-After,
    // in each route's format.
    let sims = common::sims(vec![SimConfig::new("limited")]).await;
    sims[0].update(|c| {
        c.error_rate = 1.0;
        c.error_status = 429;
        c.retry_after_secs = 30;
    });
    let gw = gateway(&sims, config()).await;
    let leaks = LeakCheck::start(&refs(&sims));
    for _ in 0..3 {
        let (status, headers, body) = research_call(&gw).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "30");
        assert_eq!(
            body,
            json!({"detail": "vLLM backend limited is rate limited: simulated failure from limited"})
        );
        for stream in [false, true] {
            let (status, headers, text) = chat_call(&gw, stream).await;
            assert_eq!(status, 429);
            assert_eq!(headers["retry-after"], "30");
            assert_eq!(
                json_body(&text),
                json!({"error": {"message": "simulated failure from limited", "type": "Too Many Requests", "param": null, "code": 429}})
            );
        }
    }
    leaks
        .settled(&gw, &refs(&sims), "429 storm on the only upstream")
        .await;
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flapping() {
    let _serial = SERIAL.lock().await;
    let mut flapping = SimUpstream::start(SimConfig::new("flapping"))
        .await
        .unwrap();
    let stable = SimUpstream::start(SimConfig::new("stable")).await.unwrap();
    let address = flapping.address();
    let mut config = config();
    config.health_check.interval = Duration::from_millis(100);
    config.health_check.timeout = Duration::from_millis(300);
    config.health_check.unhealthy_threshold = 1;
    config.upstreams.push(upstream("flapping", &flapping, "k"));
    config.upstreams.push(upstream("stable", &stable, "k"));
    let gw = start(config).await;
    warm_up(&gw).await;
    let leaks = LeakCheck::start(&[&flapping, &stable]);
    // The flapping upstream dies and comes back on the same port every 300 ms
    // while clients send research and chat requests.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let state = gw.state.clone();
    let flapper = {
        let seen = seen.clone();
        async move {
            for round in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if round % 2 == 0 {
                    flapping.stop();
                } else {
                    flapping = SimUpstream::start_on(address, SimConfig::new("flapping"))
                        .await
                        .expect("restarts on its port");
                }
                seen.lock()
                    .unwrap()
                    .insert(state.pool.upstreams()[0].health().as_str());
            }
            flapping
        }
    };
    let traffic = async {
        let mut statuses = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            statuses.push(research_call(&gw).await.0);
            statuses.push(chat_call(&gw, false).await.0);
        }
        statuses
    };
    let (flapping, statuses) = tokio::join!(flapper, traffic);
    assert!(statuses.len() > 20, "only {} requests", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a client saw an error: {statuses:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains("healthy") && seen.contains("unhealthy"),
        "states seen: {seen:?}"
    );
    leaks
        .settled(&gw, &[&flapping, &stable], "health flapping")
        .await;
    stop(gw).await;
    drop(flapping);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_does_not_resolve() {
    let _serial = SERIAL.lock().await;
    let mut config = config();
    // RFC 6761: nothing under .invalid resolves, so nothing is ever sent.
    config.upstreams.push(UpstreamConfig {
        name: "nowhere".into(),
        base_url: Some("http://vllm.invalid:8000/v1".into()),
        ..UpstreamConfig::default()
    });
    let gw = start(config).await;
    let leaks = LeakCheck::start(&[]);
    let up = &gw.state.pool.upstreams()[0];
    assert!(!up.is_healthy());
    let detail = up.last_check().unwrap().detail;
    assert!(
        detail.starts_with("cannot resolve vllm.invalid: "),
        "{detail}"
    );
    let status = get_json(&gw, "/status").await;
    assert_eq!(status["upstreams"][0]["state"], "unhealthy");
    assert_eq!(
        status["upstreams"][0]["last_check"]["detail"],
        detail.as_str()
    );
    let (status, _, body) = research_call(&gw).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"detail": "vLLM backend unreachable: no healthy upstream (0 of 1 passed their health checks)"})
    );
    for stream in [false, true] {
        let (status, _, text) = chat_call(&gw, stream).await;
        assert_eq!(status, 503);
        assert_eq!(
            json_body(&text),
            json!({"error": {"message": format!("No healthy upstream serves `{MODEL}` right now."), "type": "service_unavailable", "param": null, "code": null}})
        );
    }
    leaks.settled(&gw, &[], "unresolvable host").await;
    stop(gw).await;
}

/// A self-signed certificate for 127.0.0.1 and localhost, made now.
fn self_signed() -> (TlsIdentity, Vec<u8>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("certificate");
    let der = cert.der().to_vec();
    (
        TlsIdentity {
            cert_chain: vec![der.clone()],
            private_key: signing_key.serialize_der(),
        },
        der,
    )
}

/// `GET /ping` over TLS trusting only `cert`: the simulator itself works.
async fn ping_trusting(address: std::net::SocketAddr, cert: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert))
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_with_an_untrusted_certificate() {
    let _serial = SERIAL.lock().await;
    let (identity, cert) = self_signed();
    let tls = SimUpstream::start_tls(SimConfig::new("selfsigned"), identity)
        .await
        .unwrap();
    let plain = SimUpstream::start(SimConfig::new("plain")).await.unwrap();
    let base = format!("https://127.0.0.1:{}/v1", tls.address().port());
    let mut config = config();
    config.upstreams.push(UpstreamConfig {
        name: "selfsigned".into(),
        base_url: Some(base.clone()),
        ..UpstreamConfig::default()
    });
    // The same server again, but health-checked through a plain simulator, so
    // that it is routable and real requests try its certificate too.
    config.upstreams.push(UpstreamConfig {
        name: "selfsigned-routable".into(),
        base_url: Some(base),
        health_url: Some(format!("{}/ping", plain.origin())),
        ..UpstreamConfig::default()
    });
    let gw = start(config).await;
    let leaks = LeakCheck::start(&[&tls, &plain]);
    let untrusted = "connection failed: TLSHandshakeFailure: invalid peer certificate: UnknownIssuer, SNI: 127.0.0.1";
    let checked = &gw.state.pool.upstreams()[0];
    assert!(!checked.is_healthy());
    assert_eq!(checked.last_check().unwrap().detail, untrusted);
    assert!(gw.state.pool.upstreams()[1].is_healthy());

    let (status, _, body) = research_call(&gw).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"detail": format!("vLLM backend unreachable: upstream selfsigned-routable: {untrusted}")})
    );
    for stream in [false, true] {
        let (status, _, text) = chat_call(&gw, stream).await;
        assert_eq!(status, 503);
        assert_eq!(
            json_body(&text),
            json!({"error": {"message": format!("Upstream selfsigned-routable failed: {untrusted}"), "type": "upstream_error", "param": null, "code": null}})
        );
    }
    // Not one request got through the handshake.
    assert!(tls.requests().is_empty(), "{:?}", tls.requests());
    assert!(tls.failed_handshakes() >= 4, "{}", tls.failed_handshakes());
    leaks
        .settled(&gw, &[&tls, &plain], "untrusted certificate")
        .await;
    stop(gw).await;

    // The simulator is sound: a client that trusts the certificate gets its answer.
    let answer = ping_trusting(tls.address(), cert).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(tls.requests().len(), 1);
}

/// A hung upstream costs clients seconds, not a minute: one of two simulated
/// upstreams (processes of their own) is frozen with SIGSTOP under load, with
/// the default health settings (5 s interval, 2 s timeout, 2 failures). The
/// checks take it out within a few seconds, the attempts waiting on it move
/// to the other at once, and every request succeeds in under 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_upstream_costs_seconds_not_a_minute() {
    let _serial = SERIAL.lock().await;
    let spawn_sim = || {
        Process::spawn(
            binary()
                .args(["--sim-upstream", "127.0.0.1:0", "--sim-ttft-ms", "20"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        )
    };
    let (frozen, live) = (spawn_sim(), spawn_sim());
    // The default health settings; only the listener is the test's.
    let mut config = context7_lb::config::Config {
        listen: "127.0.0.1:0".into(),
        threads: 1,
        ..Default::default()
    };
    for (name, sim) in [("frozen", &frozen), ("live", &live)] {
        config.upstreams.push(context7_lb::config::UpstreamConfig {
            name: name.into(),
            base_url: Some(format!("{}/v1", sim.url())),
            ..Default::default()
        });
    }
    let gw = start(config).await;
    let client = client();
    let url = format!("{}/v1/research", gw.url());
    let run = |seconds: u64| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut answers = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < deadline && answers.len() < 2000 {
                let started = Instant::now();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"query":"q"}"#)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                answers.push((status, started.elapsed()));
            }
            answers
        }
    };
    // Both take traffic first.
    let warm = futures::future::join_all((0..4).map(|_| run(2))).await;
    assert!(warm.iter().flatten().all(|(s, _)| *s == 200));
    frozen.signal("STOP");
    let answers: Vec<_> = futures::future::join_all((0..4).map(|_| run(14)))
        .await
        .into_iter()
        .flatten()
        .collect();
    let status = get_json(&gw, "/status").await;
    let taken_out = metric(
        &gw,
        r#"context7_upstream_requests_total{outcome="taken_out",upstream="frozen"}"#,
    )
    .await;
    frozen.signal("CONT");
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "a request waited {slowest:?}"
    );
    assert_eq!(status["upstreams"][0]["state"], "unhealthy", "{status}");
    assert!(
        taken_out >= 1.0,
        "attempts were moved off the frozen upstream"
    );
    stop(gw).await;
}
