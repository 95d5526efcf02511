//! Configuration: the documented shape, `${VAR}` expansion, every error with
//! its message, the environment-only mode, and `--check` on every shipped file.

mod common;

use common::*;
use context7_lb::config::{Config, McpConfig, Problem};
use std::path::Path;
use std::time::Duration;

fn problems(yaml: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let result = Config::from_yaml(yaml, &common::vars(vars)).and_then(|c| c.validate().map(|_| c));
    match result {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(problems) => problems.iter().map(Problem::to_string).collect(),
    }
}

/// The shape from the foundation issue, accepted as written.
const ISSUE_SHAPE: &str = r#"
listen: "0.0.0.0:8002"
research:
  model: "meta-llama/Llama-3.1-8B-Instruct"
upstreams:
  - name: runpod-a
    runpod_endpoint_id: "${RUNPOD_VLLM_ENDPOINT_ID}"   # https://api.runpod.ai/v2/{id}/openai/v1
    api_key: "${RUNPOD_API_KEY}"
  - name: box-1
    base_url: "http://127.0.0.1:8000/v1"               # any OpenAI-compatible server
    model: "my-served-name"                            # optional, overrides research.model for this upstream
health_check:
  path: /ping
  interval: 5s
  timeout: 2s
timeouts:
  connect: 10s
  total: 60s
"#;

#[test]
fn the_documented_shape_is_accepted_with_variables_expanded() {
    let config = Config::from_yaml(
        ISSUE_SHAPE,
        &vars(&[
            ("RUNPOD_VLLM_ENDPOINT_ID", "abc123"),
            ("RUNPOD_API_KEY", "rp-key"),
        ]),
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(
        config.upstreams[0].runpod_endpoint_id.as_deref(),
        Some("abc123")
    );
    assert_eq!(config.upstreams[0].api_key.as_deref(), Some("rp-key"));
    assert_eq!(config.upstreams[1].model.as_deref(), Some("my-served-name"));
    assert_eq!(config.health_check.interval, Duration::from_secs(5));
    assert_eq!(config.timeouts.connect, Duration::from_secs(10));
    assert_eq!(config.timeouts.total, Duration::from_secs(60));
}

#[test]
fn defaults_fill_an_empty_file() {
    let config = Config::from_yaml("", &vars(&[])).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, "0.0.0.0:8002");
    assert_eq!(config.research.model, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(config.limits.max_body_bytes, 1024 * 1024);
}

#[test]
fn defaults_and_durations() {
    let config = Config::from_yaml(
        "listen: \"127.0.0.1:${PORT:-9000}\"\nhealth_check:\n  interval: 500ms\n  timeout: 1m 30s\n",
        &vars(&[]),
    )
    .unwrap();
    assert_eq!(config.listen, "127.0.0.1:9000");
    assert_eq!(config.health_check.interval, Duration::from_millis(500));
    assert_eq!(config.health_check.timeout, Duration::from_secs(90));
    let config = Config::from_yaml("timeouts:\n  total: 2m\n", &vars(&[])).unwrap();
    assert_eq!(config.timeouts.total, Duration::from_secs(120));
}

#[test]
fn a_variable_in_a_comment_is_not_expanded_and_dollars_can_be_escaped() {
    let config = Config::from_yaml(
        "# uses ${NOT_SET_ANYWHERE}\nresearch:\n  system_prompt: \"costs $$5, $${HOME}\"\n",
        &vars(&[]),
    )
    .unwrap();
    assert_eq!(
        config.research.system_prompt.as_deref(),
        Some("costs $5, ${HOME}")
    );
}

#[test]
fn an_unset_variable_is_an_error_that_names_it() {
    assert_eq!(
        problems(ISSUE_SHAPE, &[("RUNPOD_API_KEY", "k")]),
        [
            "upstreams[0] (line 7 column 25): environment variable RUNPOD_VLLM_ENDPOINT_ID is not set (write ${RUNPOD_VLLM_ENDPOINT_ID:-default} to give a default)"
        ]
    );
}

#[test]
fn an_unknown_key_is_an_error_with_its_path() {
    // The message names the key, where it is, and the keys that would do
    // (the list itself grows with the schema, so only its start is pinned).
    let p = problems("upstreams:\n  - name: a\n    base_ur: \"http://x\"\n", &[]);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(
            "upstreams[0].base_ur (line 3 column 5): unknown field `base_ur`, expected one of name, runpod_endpoint_id, base_url, "
        ),
        "{p:?}"
    );
    let p = problems("helth_check: {}\n", &[]);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(
            "helth_check (line 1 column 1): unknown field `helth_check`, expected one of listen, threads, "
        ) && p[0].contains("health_check"),
        "{p:?}"
    );
}

#[test]
fn a_bad_duration_is_an_error_that_shows_the_form() {
    let p = problems("timeouts:\n  connect: ten\n", &[]);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("timeouts.connect (line 2 column 12): invalid duration \"ten\""),
        "{p:?}"
    );
    assert!(
        p[0].ends_with("write a number and a unit, such as 500ms, 5s or 2m"),
        "{p:?}"
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let yaml = r#"
listen: "nowhere"
upstreams:
  - name: a
    base_url: "ftp://x/v1"
  - name: a
    runpod_endpoint_id: "has space"
  - name: "b c"
  - name: d
    base_url: "http://x/v1"
    runpod_endpoint_id: "e"
health_check:
  path: ping
  interval: 0s
retries:
  max_attempts: 0
"#;
    assert_eq!(
        problems(yaml, &[]),
        [
            "listen: \"nowhere\" is not an address and port such as \"0.0.0.0:8002\" (invalid socket address syntax)",
            "upstreams[0].base_url: \"ftp://x/v1\" must start with http:// or https://",
            "upstreams[1].name: \"a\" is used by another upstream",
            "upstreams[1].runpod_endpoint_id: \"has space\" is not a RunPod endpoint id (letters, digits, '-' and '_')",
            "upstreams[1].api_key: RunPod endpoints need an API key (for example \"${RUNPOD_API_KEY}\")",
            "upstreams[2].name: \"b c\" may only hold letters, digits, '-', '_' and '.'",
            "upstreams[2]: needs runpod_endpoint_id, runpod_lb_endpoint_id or base_url",
            "upstreams[3]: set only one of runpod_endpoint_id, runpod_lb_endpoint_id and base_url",
            "health_check.path: \"ping\" must start with '/'",
            "health_check.interval: must be longer than zero",
            "retries.max_attempts: must be at least 1",
        ]
    );
}

#[test]
fn environment_mode_reads_the_original_variables() {
    let config = Config::from_env(&vars(&[
        ("RUNPOD_API_KEY", "rp-key"),
        ("RUNPOD_VLLM_ENDPOINT_ID", "ep1, ep2"),
        ("PORT", "9123"),
    ]))
    .unwrap();
    assert_eq!(config.listen, "0.0.0.0:9123");
    let ids: Vec<_> = config
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.runpod_endpoint_id.as_deref().unwrap()))
        .collect();
    assert_eq!(ids, [("runpod-ep1", "ep1"), ("runpod-ep2", "ep2")]);
    assert!(
        config
            .upstreams
            .iter()
            .all(|u| u.api_key.as_deref() == Some("rp-key"))
    );

    assert_eq!(config.health_listen, None);
    let config = Config::from_env(&vars(&[("PORT", "80"), ("PORT_HEALTH", "8081")])).unwrap();
    assert_eq!(
        (config.listen.as_str(), config.health_listen.as_deref()),
        ("0.0.0.0:80", Some("0.0.0.0:8081"))
    );

    let config = Config::from_env(&vars(&[])).unwrap();
    assert!(config.upstreams.is_empty());
    assert_eq!(config.listen, "0.0.0.0:8002");

    let err = Config::from_env(&vars(&[("RUNPOD_VLLM_ENDPOINT_ID", "ep1")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment: 1 problem in the configuration\n  environment: upstreams[0].api_key: RunPod endpoints need an API key (for example \"${RUNPOD_API_KEY}\")\n"
    );
}

#[test]
fn runpod_api_base_from_the_environment_wins() {
    let config = Config::from_env(&vars(&[
        ("RUNPOD_API_BASE", "http://127.0.0.1:7000"),
        ("RUNPOD_VLLM_ENDPOINT_ID", "ep"),
        ("RUNPOD_API_KEY", "k"),
    ]))
    .unwrap();
    assert_eq!(config.runpod_api_base, "http://127.0.0.1:7000");
}

fn check(path: &Path, vars: &[(&str, &str)]) -> (bool, String, String) {
    let out = binary()
        .arg("--config")
        .arg(path)
        .arg("--check")
        .env_remove("RUNPOD_API_KEY")
        .env_remove("RUNPOD_VLLM_ENDPOINT_ID")
        .envs(vars.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_passes_on_every_shipped_config_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, stdout, stderr) = check(&path, &[]);
            assert!(ok, "{}: {stderr}", path.display());
            assert!(stdout.contains("configuration is valid"), "{stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "config/ holds the example files");
}

#[test]
fn check_prints_every_problem_and_fails() {
    let dir = TempDir::new("check");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  - name: a\n    base_url: \"nope\"\nhealth_check:\n  timeout: 0s\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&file, &[]);
    assert!(!ok);
    assert_eq!(stdout, "");
    let f = file.display();
    assert_eq!(
        stderr,
        format!(
            "{f}: 2 problems in the configuration\n  {f}: upstreams[0].base_url: \"nope\" must start with http:// or https://\n  {f}: health_check.timeout: must be longer than zero\n"
        )
    );
}

#[test]
fn the_mcp_section_has_defaults_and_checked_values() {
    let defaults = McpConfig::default();
    assert_eq!(defaults.session_idle_timeout, Duration::from_secs(30 * 60));
    assert_eq!(defaults.max_sessions, 10_000);
    assert!(
        defaults
            .allowed_origins
            .contains(&"http://localhost".to_string())
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    let config = Config::from_yaml(&text, &vars(&[])).unwrap();
    assert_eq!(config.mcp, defaults, "example.yaml lists the defaults");

    let config = Config::from_yaml(
        "mcp:\n  allowed_origins: [\"*\", \"https://app.example.com:8443\"]\n  session_idle_timeout: 300ms\n",
        &vars(&[]),
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.mcp.session_idle_timeout, Duration::from_millis(300));
    assert_eq!(config.mcp.max_sessions, 10_000);

    let p = problems(
        "mcp:\n  allowed_origins: [\"http://localhost/\"]\n  session_idle_timeout: 0s\n  max_sessions: 0\n",
        &[],
    );
    assert_eq!(p.len(), 3, "{p:?}");
    // Durations are checked together, before the other fields of a section.
    assert_eq!(p[0], "mcp.session_idle_timeout: must be longer than zero");
    assert!(
        p[1].starts_with("mcp.allowed_origins[0]: \"http://localhost/\" must not have a path"),
        "{p:?}"
    );
    assert_eq!(p[2], "mcp.max_sessions: must be at least 1");
    assert!(problems("mcp:\n  origins: []\n", &[])[0].contains("unknown field `origins`"));
}

#[test]
fn a_password_in_a_url_is_never_echoed() {
    for field in ["base_url", "health_url"] {
        let yaml = format!(
            "upstreams:\n  - name: a\n    base_url: \"http://127.0.0.1:8000/v1\"\n    {field}: \"ftp://admin:s3cret-pass@vllm.internal:8000/v1?x=1\"\n"
        )
        .replace(
            "    base_url: \"http://127.0.0.1:8000/v1\"\n    base_url:",
            "    base_url:",
        );
        let p = problems(&yaml, &[]);
        assert!(!p.is_empty());
        for problem in &p {
            assert!(!problem.contains("s3cret"), "{problem}");
            assert!(!problem.contains("admin"), "{problem}");
        }
        assert!(
            p.iter()
                .any(|m| m.contains("\"ftp://***@vllm.internal:8000/v1?x=1\"")),
            "{p:?}"
        );
    }
    let p = problems(
        "upstreams:\n  - name: a\n    base_url: \"http://admin:s3cret-pass@vllm.internal/v1\"\n",
        &[],
    );
    assert_eq!(
        p,
        [
            "upstreams[0].base_url: \"http://***@vllm.internal/v1\" must not carry credentials; use api_key instead"
        ]
    );
}

#[test]
fn the_redis_section_and_key_entries_are_read_and_checked() {
    let config = Config::from_yaml(
        "auth:\n  keys:\n    - plain-key-123\n    - {key: \"batch-key-456\", name: batch, requests_per_second: 50, burst: 100, tokens_per_minute: 20000}\n\
         rate_limit:\n  requests_per_second: 5\n  tokens_per_minute: 1000\n\
         redis:\n  url: \"redis://:${PW}@redis:6379/0\"\n  on_failure: deny\n",
        &vars(&[("PW", "s3cret-pass")]),
    )
    .unwrap();
    config.validate().unwrap();
    let redis = config.redis.as_ref().unwrap();
    assert_eq!(redis.url, "redis://:s3cret-pass@redis:6379/0");
    assert_eq!(
        (
            redis.prefix.as_str(),
            redis.connect_timeout,
            redis.command_timeout
        ),
        (
            "context7:",
            Duration::from_secs(1),
            Duration::from_millis(200)
        )
    );
    assert_eq!(redis.on_failure, context7_lb::config::OnRedisFailure::Deny);
    let batch = config.auth.keys[1].limits(&config.rate_limit);
    assert_eq!(
        (
            batch.requests_per_second,
            batch.burst,
            batch.tokens_per_minute
        ),
        (50.0, 100, 20000)
    );
    let plain = config.auth.keys[0].limits(&config.rate_limit);
    assert_eq!(
        (
            plain.requests_per_second,
            plain.burst,
            plain.tokens_per_minute
        ),
        (5.0, 20, 1000),
        "a plain key has the defaults"
    );

    let p = problems(
        "auth:\n  keys:\n    - {key: \"first-key-123\", name: a, requests_per_second: -1}\n    - {key: \"second-key-456\", name: a, tokens_per_minute: 2000000000000}\n    - {key: \"third-key-789\", name: \"no spaces\"}\n\
         rate_limit:\n  burst: 0\n  requests_per_second: 1\n\
         redis:\n  url: \"http://admin:s3cret-pass@redis:6379\"\n  command_timeout: 0s\n",
        &[],
    );
    assert_eq!(
        p,
        [
            "redis.command_timeout: must be longer than zero",
            "auth.keys[0].requests_per_second: must be a number of 0 or more",
            "auth.keys[1].name: \"a\" is used twice",
            "auth.keys[1].tokens_per_minute: 2000000000000 is more than 1000000000000",
            "auth.keys[2].name: \"no spaces\" must be 1 to 64 letters, digits, '-', '_' or '.'",
            "rate_limit.burst: must be at least 1",
            "redis.url: \"http://***@redis:6379\" must start with redis:// or rediss:// (TLS)",
        ]
    );
    let p = problems("redis:\n  url: \"redis://:pw@[bad\"\n", &[]);
    assert_eq!(
        p,
        [
            "redis.url: \"redis://***@[bad\" is not a Redis URL such as redis://:${REDIS_PASSWORD}@redis:6379/0"
        ]
    );
    let p = problems(
        "auth:\n  keys:\n    - {key: \"first-key-123\", rate: 5}\n",
        &[],
    );
    assert_eq!(
        p,
        [
            "auth.keys[0].rate (line 3 column 30): unknown field `rate`, expected one of key, \
          name, requests_per_second, burst, tokens_per_minute"
        ]
    );
}

#[test]
fn pricing_tiers_and_spill_latency_are_read_and_checked() {
    let yaml = r#"
upstreams:
  - name: box
    base_url: "http://10.0.0.5:8000/v1"
  - name: serverless
    base_url: "http://10.0.0.6:8000/v1"
    tier: 1
    pricing: {per_second: 0.0001, per_million_completion_tokens: 0.2}
pool:
  spill_latency: 2s
"#;
    let config = Config::from_yaml(yaml, &common::vars(&[])).unwrap();
    config.validate().unwrap();
    assert_eq!(config.upstreams[0].tier, 0);
    assert_eq!(config.upstreams[0].pricing, None);
    assert_eq!(config.upstreams[1].tier, 1);
    let pricing = config.upstreams[1].pricing.unwrap();
    assert_eq!(pricing.per_second, Some(0.0001));
    assert_eq!(pricing.per_million_prompt_tokens, None);
    assert_eq!(pricing.per_million_completion_tokens, Some(0.2));
    assert_eq!(config.pool.spill_latency, Some(Duration::from_secs(2)));

    let yaml = r#"
upstreams:
  - name: a
    base_url: "http://x/v1"
    pricing: {per_second: -1, per_million_prompt_tokens: .nan}
pool:
  spill_latency: 0s
"#;
    assert_eq!(
        problems(yaml, &[]),
        [
            "upstreams[0].pricing.per_second: -1 must be a number of dollars, 0 or more",
            "upstreams[0].pricing.per_million_prompt_tokens: NaN must be a number of dollars, 0 or more",
            "pool.spill_latency: must be longer than zero when set",
        ]
    );
    let p = problems(
        "upstreams:\n  - name: a\n    base_url: \"http://x/v1\"\n    pricing: {per_hour: 1}\n",
        &[],
    );
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("upstreams[0].pricing.per_hour (line 4 column 15): unknown field `per_hour`, expected one of per_second, per_million_prompt_tokens, per_million_completion_tokens"),
        "{p:?}"
    );
    let p = problems(
        "upstreams:\n  - name: a\n    base_url: \"http://x/v1\"\n    tier: -1\n",
        &[],
    );
    assert_eq!(p.len(), 1);
    assert_eq!(
        p,
        [
            "upstreams[0].tier (line 4 column 11): -1 is not a tier: write a whole number from 0 (0 is used first)"
        ]
    );
}
