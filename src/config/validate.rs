//! `Config::validate`: every field checked, every problem reported at once.

use super::*;

impl Config {
    /// Checks every field and returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |at: &str, why: String| {
            problems.push(Problem {
                at: at.to_string(),
                why,
            })
        };
        if let Err(e) = self.listen.parse::<SocketAddr>() {
            problem(
                "listen",
                format!(
                    "{:?} is not an address and port such as \"0.0.0.0:8002\" ({e})",
                    self.listen
                ),
            );
        }
        if let Err(why) = parse_base_url(&self.runpod_api_base) {
            problem("runpod_api_base", why);
        }
        if self.research.model.trim().is_empty() {
            problem("research.model", "must not be empty".into());
        }
        let mut names = HashSet::new();
        for (i, up) in self.upstreams.iter().enumerate() {
            let at = |field: &str| format!("upstreams[{i}].{field}");
            if up.name.is_empty() {
                problem(&at("name"), "must not be empty".into());
            } else if !up
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                problem(
                    &at("name"),
                    format!(
                        "{:?} may only hold letters, digits, '-', '_' and '.'",
                        up.name
                    ),
                );
            } else if !names.insert(up.name.as_str()) {
                problem(
                    &at("name"),
                    format!("{:?} is used by another upstream", up.name),
                );
            }
            let addresses = [
                up.runpod_endpoint_id.is_some(),
                up.base_url.is_some(),
                up.runpod_lb_endpoint_id.is_some(),
            ]
            .iter()
            .filter(|set| **set)
            .count();
            if let Some(id) = &up.runpod_lb_endpoint_id {
                for (field, why) in runpod_endpoint_problems("runpod_lb_endpoint_id", id, up) {
                    problem(&at(field), why);
                }
            }
            if !(up.weight.is_finite() && up.weight > 0.0) {
                problem(
                    &at("weight"),
                    format!("{} must be a number above 0", up.weight),
                );
            }
            if let Some(pricing) = &up.pricing {
                for (field, price) in [
                    ("per_second", pricing.per_second),
                    (
                        "per_million_prompt_tokens",
                        pricing.per_million_prompt_tokens,
                    ),
                    (
                        "per_million_completion_tokens",
                        pricing.per_million_completion_tokens,
                    ),
                ] {
                    if let Some(price) = price
                        && !(price.is_finite() && price >= 0.0)
                    {
                        problem(
                            &at(&format!("pricing.{field}")),
                            format!("{price} must be a number of dollars, 0 or more"),
                        );
                    }
                }
            }
            if let Some(url) = &up.health_url
                && let Err(why) = parse_base_url(url)
            {
                problem(&at("health_url"), why);
            }
            match (&up.runpod_endpoint_id, &up.base_url) {
                _ if addresses > 1 => problem(
                    &format!("upstreams[{i}]"),
                    "set only one of runpod_endpoint_id, runpod_lb_endpoint_id and base_url".into(),
                ),
                (None, None) if addresses == 0 => problem(
                    &format!("upstreams[{i}]"),
                    "needs runpod_endpoint_id, runpod_lb_endpoint_id or base_url".into(),
                ),
                (None, None) | (Some(_), Some(_)) => {}
                (Some(id), None) => {
                    for (field, why) in runpod_endpoint_problems("runpod_endpoint_id", id, up) {
                        problem(&at(field), why);
                    }
                }
                (None, Some(url)) => {
                    if let Err(why) = parse_base_url(url) {
                        problem(&at("base_url"), why);
                    }
                }
            }
            if up.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
                problem(&at("model"), "must not be empty when set".into());
            }
            if up.models.iter().any(|m| m.trim().is_empty()) {
                problem(&at("models"), "must not hold an empty name".into());
            }
        }
        if !self.health_check.path.starts_with('/') {
            problem(
                "health_check.path",
                format!("{:?} must start with '/'", self.health_check.path),
            );
        }
        // Every duration, once: long enough, and short enough to add to now.
        for (at, d, zero) in self.durations() {
            let Some(d) = d else { continue };
            if d.is_zero() {
                if let Some(why) = zero {
                    problem(at, why.into());
                }
            } else if d > MAX_DURATION {
                problem(
                    at,
                    format!(
                        "{} is longer than the longest the gateway allows, {}",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_DURATION)
                    ),
                );
            }
        }
        for (at, n) in [
            (
                "health_check.healthy_threshold",
                self.health_check.healthy_threshold,
            ),
            (
                "health_check.unhealthy_threshold",
                self.health_check.unhealthy_threshold,
            ),
            ("retries.max_attempts", self.retries.max_attempts),
            (
                "ejection.consecutive_failures",
                self.ejection.consecutive_failures,
            ),
        ] {
            if n == 0 {
                problem(at, "must be at least 1".into());
            }
        }
        if self.ejection.max_cooldown < self.ejection.base_cooldown {
            problem(
                "ejection.max_cooldown",
                "must not be shorter than ejection.base_cooldown".into(),
            );
        }
        for (at, v) in [
            ("pool.in_flight_weight", self.pool.in_flight_weight),
            ("retries.budget_ratio", self.retries.budget_ratio),
            (
                "retries.budget_min_per_second",
                self.retries.budget_min_per_second,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problem(at, format!("{v} must be a number of 0 or more"));
            }
        }
        for (alias, targets) in &self.model_aliases {
            if alias.trim().is_empty() || targets.as_slice().is_empty() {
                problem(
                    &format!("model_aliases.{alias}"),
                    "needs a name and at least one served model".into(),
                );
            }
        }
        for (at, address) in [
            ("metrics_listen", &self.metrics_listen),
            ("health_listen", &self.health_listen),
        ] {
            if let Some(address) = address {
                if let Err(e) = address.parse::<SocketAddr>() {
                    problem(at, format!("{address:?} is not an address and port ({e})"));
                } else if address == &self.listen {
                    problem(at, "must differ from listen".into());
                }
            }
        }
        if self.auth.keys.iter().any(|k| k.key.trim().len() < 8) {
            problem(
                "auth.keys",
                "every key needs at least 8 characters (an unset variable gives an empty one)"
                    .into(),
            );
        }
        if let Some(file) = &self.auth.keys_file
            && let Err(why) = super::read_keys_file(Path::new(file))
        {
            problem("auth.keys_file", why);
        } else if let Err(why) = super::client_keys(&self.auth) {
            problem("auth", why);
        }
        let mut key_names = HashSet::new();
        for (i, entry) in self.auth.keys.iter().enumerate() {
            let at = |field: &str| format!("auth.keys[{i}].{field}");
            if let Some(name) = &entry.name {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    problem(
                        &at("name"),
                        format!("{name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"),
                    );
                } else if name.starts_with("key#") || !key_names.insert(name.as_str()) {
                    problem(&at("name"), format!("{name:?} is used twice"));
                }
            }
            // Only what the key sets is its problem; what it inherits is
            // reported at `rate_limit` (a burst, also when the key sets a rate).
            let sets = |field: &str| match field.rsplit('.').next() {
                Some("requests_per_second") => entry.requests_per_second.is_some(),
                Some("burst") => entry.burst.is_some() || entry.requests_per_second.is_some(),
                Some("tokens_per_minute") => entry.tokens_per_minute.is_some(),
                _ => true,
            };
            check_limits(
                &at(""),
                &entry.limits(&self.rate_limit),
                &mut |field, why| {
                    if sets(field) {
                        problem(field, why)
                    }
                },
            );
        }
        check_limits("rate_limit.", &self.rate_limit, &mut |field, why| {
            problem(field, why)
        });
        if let Some(redis) = &self.redis {
            if let Err(why) = check_redis_url(&redis.url) {
                problem("redis.url", why);
            }
            if redis.prefix.len() > 256 {
                problem("redis.prefix", "must be at most 256 bytes".into());
            }
        }
        if self.cache.enabled && (self.cache.max_entries == 0 || self.cache.max_bytes == 0) {
            problem(
                "cache",
                "max_entries and max_bytes must be at least 1".into(),
            );
        }
        if self.limits.max_body_bytes == 0 {
            problem("limits.max_body_bytes", "must be at least 1".into());
        }
        if !(1024..=MAX_HEADER_BYTES_CEILING).contains(&self.limits.max_header_bytes) {
            problem(
                "limits.max_header_bytes",
                format!(
                    "{} must be between 1024 and {MAX_HEADER_BYTES_CEILING} (Pingora's own ceiling)",
                    self.limits.max_header_bytes
                ),
            );
        }
        if self.limits.max_upstream_body_bytes < 1024 {
            problem(
                "limits.max_upstream_body_bytes",
                "must be at least 1024".into(),
            );
        }
        for (i, origin) in self.mcp.allowed_origins.iter().enumerate() {
            if let Err(why) = super::check_allowed_origin(origin) {
                problem(&format!("mcp.allowed_origins[{i}]"), why);
            }
        }
        if self.mcp.max_sessions == 0 {
            problem("mcp.max_sessions", "must be at least 1".into());
        }
        self.check_ranges(&mut problem);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Every duration setting: its field, its value (`None` when unset or
    /// off), and what a zero is told (`None`: zero is allowed).
    fn durations(&self) -> [(&'static str, Option<Duration>, Option<&'static str>); 21] {
        const POSITIVE: Option<&str> = Some("must be longer than zero");
        let set = Some;
        [
            (
                "health_check.interval",
                set(self.health_check.interval),
                POSITIVE,
            ),
            (
                "health_check.timeout",
                set(self.health_check.timeout),
                POSITIVE,
            ),
            ("timeouts.connect", set(self.timeouts.connect), POSITIVE),
            ("timeouts.total", set(self.timeouts.total), POSITIVE),
            (
                "timeouts.first_byte",
                self.timeouts.first_byte,
                Some("must be longer than zero when set"),
            ),
            ("pool.decay", set(self.pool.decay), POSITIVE),
            (
                "pool.initial_latency",
                set(self.pool.initial_latency),
                POSITIVE,
            ),
            ("pool.failure_penalty", set(self.pool.failure_penalty), None),
            (
                "pool.spill_latency",
                self.pool.spill_latency,
                Some("must be longer than zero when set"),
            ),
            (
                "ejection.base_cooldown",
                set(self.ejection.base_cooldown),
                POSITIVE,
            ),
            (
                "ejection.max_cooldown",
                set(self.ejection.max_cooldown),
                None,
            ),
            (
                "ejection.max_retry_after",
                set(self.ejection.max_retry_after),
                None,
            ),
            (
                "cache.ttl",
                self.cache.enabled.then_some(self.cache.ttl),
                POSITIVE,
            ),
            (
                "limits.client_header_timeout",
                set(self.limits.client_header_timeout),
                POSITIVE,
            ),
            (
                "limits.client_body_timeout",
                set(self.limits.client_body_timeout),
                POSITIVE,
            ),
            (
                "limits.client_keepalive_timeout",
                set(self.limits.client_keepalive_timeout),
                POSITIVE,
            ),
            (
                "limits.client_write_timeout",
                set(self.limits.client_write_timeout),
                POSITIVE,
            ),
            (
                "mcp.session_idle_timeout",
                set(self.mcp.session_idle_timeout),
                POSITIVE,
            ),
            (
                "shutdown.grace_period",
                set(self.shutdown.grace_period),
                None,
            ),
            (
                "redis.connect_timeout",
                self.redis.as_ref().map(|r| r.connect_timeout),
                POSITIVE,
            ),
            (
                "redis.command_timeout",
                self.redis.as_ref().map(|r| r.command_timeout),
                POSITIVE,
            ),
        ]
    }

    /// Values the types accept but the gateway cannot run with: rates so
    /// small that a token's period overflows, weights and factors that are
    /// not ordinary numbers (durations are bounded with the others, above).
    /// Each is refused here, with its field, rather than panicking on the
    /// request path or in a reload.
    fn check_ranges(&self, problem: &mut impl FnMut(&str, String)) {
        for (at, value, max) in [
            ("pool.in_flight_weight", self.pool.in_flight_weight, 1000.0),
            ("retries.budget_ratio", self.retries.budget_ratio, 1000.0),
            (
                "retries.budget_min_per_second",
                self.retries.budget_min_per_second,
                MAX_RATE,
            ),
        ] {
            if value.is_finite() && value > max {
                problem(at, format!("{value} is more than {max}"));
            }
        }
        for (i, up) in self.upstreams.iter().enumerate() {
            if up.weight.is_finite() && !(MIN_WEIGHT..=MAX_WEIGHT).contains(&up.weight) {
                problem(
                    &format!("upstreams[{i}].weight"),
                    format!("{} is outside {MIN_WEIGHT} to {MAX_WEIGHT}", up.weight),
                );
            }
        }
        if self.retries.max_attempts > MAX_ATTEMPTS {
            problem(
                "retries.max_attempts",
                format!("{} is more than {MAX_ATTEMPTS}", self.retries.max_attempts),
            );
        }
    }
}

/// Checks one set of limits (`rate_limit`, or a key's own, `at` being the
/// field prefix): rates the limiter can hold, a burst when a rate is set.
fn check_limits(at: &str, limits: &RateLimitConfig, problem: &mut impl FnMut(&str, String)) {
    let field = |name: &str| format!("{at}{name}");
    let rate = limits.requests_per_second;
    if !(rate.is_finite() && rate >= 0.0) {
        problem(
            &field("requests_per_second"),
            "must be a number of 0 or more".into(),
        );
    } else if rate > 0.0 && !(MIN_RATE..=MAX_RATE).contains(&rate) {
        problem(
            &field("requests_per_second"),
            format!("{rate} is outside {MIN_RATE} to {MAX_RATE} (0 turns the limit off)"),
        );
    }
    if rate > 0.0 && limits.burst == 0 {
        problem(&field("burst"), "must be at least 1".into());
    }
    if limits.burst > MAX_BURST {
        problem(
            &field("burst"),
            format!("{} is more than {MAX_BURST}", limits.burst),
        );
    }
    if limits.tokens_per_minute > MAX_TOKENS_PER_MINUTE {
        problem(
            &field("tokens_per_minute"),
            format!(
                "{} is more than {MAX_TOKENS_PER_MINUTE}",
                limits.tokens_per_minute
            ),
        );
    }
}

/// What is wrong with a Redis URL, quoted without its password.
fn check_redis_url(url: &str) -> Result<(), String> {
    let shown = without_userinfo(url);
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!(
            "{shown:?} must start with redis:// or rediss:// (TLS)"
        ));
    }
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(_) => Ok(()),
        // The crate's own message can quote the URL, password included.
        Err(_) => Err(format!(
            "{shown:?} is not a Redis URL such as redis://:${{REDIS_PASSWORD}}@redis:6379/0"
        )),
    }
}

/// The longest duration any setting may hold: far beyond any sensible value,
/// and far from where `Instant + Duration` overflows.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Requests per second a rate limit may allow, when it is on: a token's
/// period (1 / rate) must be a duration the limiter can hold.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;
const MAX_BURST: u32 = 1_000_000;
/// Far beyond any GPU's output, far from overflowing the limiter's arithmetic.
const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000_000;
const MIN_WEIGHT: f64 = 0.000_001;
const MAX_WEIGHT: f64 = 1_000_000.0;
const MAX_ATTEMPTS: u32 = 100;

/// What is wrong with a RunPod endpoint `id` given in `field` of `up`: its
/// form, and a missing API key (both kinds of RunPod endpoint need one).
fn runpod_endpoint_problems(
    field: &'static str,
    id: &str,
    up: &UpstreamConfig,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if !is_endpoint_id(id) {
        problems.push((
            field,
            format!("{id:?} is not a RunPod endpoint id (letters, digits, '-' and '_')"),
        ));
    }
    if up.api_key.as_deref().unwrap_or("").is_empty() {
        problems.push((
            "api_key",
            "RunPod endpoints need an API key (for example \"${RUNPOD_API_KEY}\")".into(),
        ));
    }
    problems
}

fn is_endpoint_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
