//! Pool behaviour with paused time: selection, penalties, ejection, recovery.

use super::*;
use crate::config::UpstreamConfig;
use proptest::prelude::{
    Just, ProptestConfig, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
};

fn config(n: usize) -> Config {
    Config {
        upstreams: (0..n)
            .map(|i| UpstreamConfig {
                name: format!("u{i}"),
                base_url: Some(format!("http://127.0.0.1:{}/v1", 9000 + i)),
                ..Default::default()
            })
            .collect(),
        ..Config::default()
    }
}

fn pool_with(config: &Config) -> Pool {
    Pool::from_config(config, Arc::new(Metrics::new())).unwrap()
}

fn pool(n: usize) -> Pool {
    pool_with(&config(n))
}

fn set(pool: &Pool, i: usize, outcome: CheckOutcome) {
    pool.upstreams()[i].observe_check(outcome, String::new(), 1, 1);
}

fn healthy(n: usize) -> Pool {
    let p = pool(n);
    for i in 0..n {
        set(&p, i, CheckOutcome::Up);
    }
    p
}

fn sample(pool: &Pool, i: usize, latency_ms: u64) {
    let up = pool.upstreams()[i].clone();
    pool.begin(&up)
        .finish(Outcome::Success(Duration::from_millis(latency_ms)));
}

fn shares(pool: &Pool, rounds: usize) -> Vec<usize> {
    let mut counts = vec![0; pool.upstreams().len()];
    for _ in 0..rounds {
        counts[pool.select(&[]).unwrap().index] += 1;
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn empty_pool_says_none_configured() {
    assert_eq!(pool(0).select(&[]).unwrap_err(), NoUpstream::NoneConfigured);
}

#[tokio::test(start_paused = true)]
async fn round_robin_covers_healthy_upstreams_evenly() {
    let mut c = config(3);
    c.pool.strategy = crate::config::Strategy::RoundRobin;
    let p = pool_with(&c);
    for i in 0..3 {
        set(&p, i, CheckOutcome::Up);
    }
    assert_eq!(shares(&p, 300), [100, 100, 100]);
}

#[tokio::test(start_paused = true)]
async fn plain_p2c_gives_the_second_best_the_draws_without_the_best() {
    let mut c = config(3);
    c.pool.remember_best = false;
    let p = pool_with(&c);
    for i in 0..3 {
        set(&p, i, CheckOutcome::Up);
    }
    sample(&p, 0, 10);
    sample(&p, 1, 50);
    sample(&p, 2, 200);
    let counts = shares(&p, 3000);
    // The slowest one never wins a draw; the fastest wins the two draws in
    // three that include it, and the middle one the rest.
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!((1900..=2100).contains(&counts[0]), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_with_memory_keeps_the_best_until_load_makes_it_dearer() {
    let p = healthy(3);
    sample(&p, 0, 10);
    sample(&p, 1, 50);
    sample(&p, 2, 200);
    // Until the best first wins a draw the remembered one may be another;
    // from then on the best keeps every request.
    let picks: Vec<usize> = (0..3000).map(|_| p.select(&[]).unwrap().index).collect();
    let first_best = picks.iter().position(|&i| i == 0).unwrap();
    assert!(first_best < 20, "{first_best}");
    assert!(picks[first_best..].iter().all(|&i| i == 0));
    // Twenty in flight on the fastest: 10 ms × (1 + 0.25 × 20) > 50 ms, so the
    // 50 ms one wins the draws it is part of.
    let fast = p.upstreams()[0].clone();
    let busy: Vec<_> = (0..20).map(|_| p.begin(&fast)).collect();
    let counts = shares(&p, 300);
    assert!(counts[1] > 100, "{counts:?}");
    drop(busy);
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_raise_the_cost() {
    let p = healthy(2);
    sample(&p, 0, 10);
    sample(&p, 1, 30);
    let fast = p.upstreams()[0].clone();
    let now = Instant::now();
    assert!(p.cost(&fast, now) < p.cost(&p.upstreams()[1], now));
    // Nine requests in flight on the fast one: 10 ms × (1 + 0.25 × 9) > 30 ms.
    let busy: Vec<_> = (0..9).map(|_| p.begin(&fast)).collect();
    assert_eq!(fast.in_flight(), 9);
    assert_eq!(p.select(&[]).unwrap().index, 1);
    drop(busy);
    assert_eq!(fast.in_flight(), 0);
    assert_eq!(p.select(&[]).unwrap().index, 0);
}

#[tokio::test(start_paused = true)]
async fn classic_in_flight_weight_counts_whole_requests() {
    let mut c = config(2);
    c.pool.in_flight_weight = 1.0;
    let p = pool_with(&c);
    set(&p, 0, CheckOutcome::Up);
    set(&p, 1, CheckOutcome::Up);
    sample(&p, 0, 10);
    sample(&p, 1, 30);
    let fast = p.upstreams()[0].clone();
    let _busy: Vec<_> = (0..3).map(|_| p.begin(&fast)).collect();
    let now = Instant::now();
    assert!((p.cost(&fast, now) - 0.040).abs() < 1e-9);
    assert_eq!(p.select(&[]).unwrap().index, 1);
}

#[tokio::test(start_paused = true)]
async fn weight_divides_the_cost() {
    let mut c = config(2);
    c.upstreams[1].weight = 4.0;
    let p = pool_with(&c);
    set(&p, 0, CheckOutcome::Up);
    set(&p, 1, CheckOutcome::Up);
    sample(&p, 0, 10);
    sample(&p, 1, 30);
    assert_eq!(p.select(&[]).unwrap().index, 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_upstream_starts_neutral_not_free() {
    let p = healthy(3);
    sample(&p, 0, 10);
    sample(&p, 1, 30);
    let now = Instant::now();
    // No sample: the mean of the others, neither zero nor the worst.
    assert_eq!(
        p.latency_estimate(&p.upstreams()[2], now),
        Duration::from_millis(20)
    );
    let fresh = healthy(2);
    assert_eq!(
        fresh.latency_estimate(&fresh.upstreams()[0], now),
        fresh.settings().initial_latency
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_is_tried_again_once_its_estimate_decays() {
    let p = healthy(2);
    sample(&p, 0, 20);
    sample(&p, 1, 400);
    assert_eq!(p.select(&[]).unwrap().index, 0);
    // The fast one keeps being refreshed; the slow one sits idle and decays.
    let mut slow_tried_after = None;
    for second in 1..=120 {
        tokio::time::advance(Duration::from_secs(1)).await;
        sample(&p, 0, 20);
        if p.select(&[]).unwrap().index == 1 {
            slow_tried_after = Some(second);
            break;
        }
    }
    // 400 ms × e^(-t/10 s) < 20 ms once t > 10 s × ln 20 ≈ 30 s.
    assert_eq!(slow_tried_after, Some(30));
}

#[tokio::test(start_paused = true)]
async fn failures_are_charged_a_penalty_so_fast_errors_do_not_look_cheap() {
    let p = healthy(2);
    sample(&p, 0, 50);
    sample(&p, 1, 50);
    let up = p.upstreams()[1].clone();
    p.begin(&up).finish(Outcome::Failure("502".into()));
    assert_eq!(
        up.latency_estimate(Instant::now(), p.settings().decay),
        p.settings().failure_penalty
    );
    assert_eq!(shares(&p, 100), [100, 0]);
    assert_eq!(up.last_error().unwrap().message, "502");
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_for_a_cooldown_that_grows_and_resets() {
    let p = healthy(2);
    let up = p.upstreams()[1].clone();
    let fail = || p.begin(&up).finish(Outcome::Failure("connect".into()));
    let base = p.ejection.base_cooldown;
    fail();
    fail();
    assert!(
        up.ejected_until(Instant::now()).is_none(),
        "two failures: not yet"
    );
    fail();
    assert_eq!(
        up.ejected_until(Instant::now()),
        Some(Instant::now() + base)
    );
    assert_eq!(p.routable_count(), 1);
    for _ in 0..50 {
        assert_eq!(p.select(&[]).unwrap().index, 0);
    }

    tokio::time::advance(base).await;
    assert!(up.ejected_until(Instant::now()).is_none(), "cooldown over");
    fail();
    fail();
    fail();
    assert_eq!(
        up.ejected_until(Instant::now()),
        Some(Instant::now() + base * 2),
        "the second ejection in a row lasts twice as long"
    );

    tokio::time::advance(base * 2).await;
    p.begin(&up)
        .finish(Outcome::Success(Duration::from_millis(5)));
    fail();
    fail();
    fail();
    assert_eq!(
        up.ejected_until(Instant::now()),
        Some(Instant::now() + base),
        "a success in between resets the growth"
    );
    assert_eq!(up.ejections(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_429_ejects_for_retry_after_capped() {
    let p = healthy(2);
    let up = p.upstreams()[0].clone();
    p.begin(&up)
        .finish(Outcome::RateLimited(Some(Duration::from_secs(7))));
    assert_eq!(
        up.ejected_until(Instant::now()),
        Some(Instant::now() + Duration::from_secs(7))
    );
    tokio::time::advance(Duration::from_secs(7)).await;
    p.begin(&up)
        .finish(Outcome::RateLimited(Some(Duration::from_secs(3600))));
    assert_eq!(
        up.ejected_until(Instant::now()),
        Some(Instant::now() + p.ejection.max_retry_after)
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_upstream_is_ejected_the_least_bad_is_still_tried() {
    let p = healthy(2);
    let (a, b) = (p.upstreams()[0].clone(), p.upstreams()[1].clone());
    p.begin(&a)
        .finish(Outcome::RateLimited(Some(Duration::from_secs(30))));
    p.begin(&b)
        .finish(Outcome::RateLimited(Some(Duration::from_secs(10))));
    assert_eq!(p.routable_count(), 0);
    assert_eq!(p.select(&[]).unwrap().index, 1);
    assert_eq!(p.select(&[1]).unwrap().index, 0);
    assert_eq!(p.select(&[0, 1]).unwrap_err(), NoUpstream::NoneHealthy);
}

#[tokio::test(start_paused = true)]
async fn unknown_upstreams_serve_only_while_none_is_healthy() {
    let p = pool(3);
    assert!(p.initializing());
    assert!(p.select(&[]).is_ok());
    set(&p, 0, CheckOutcome::Down);
    assert!(!p.initializing());
    for _ in 0..20 {
        assert_ne!(p.select(&[]).unwrap().index, 0);
    }
    set(&p, 1, CheckOutcome::Up);
    for _ in 0..20 {
        assert_eq!(p.select(&[]).unwrap().index, 1);
    }
    set(&p, 2, CheckOutcome::Initializing);
    assert_eq!(p.select(&[1]).unwrap_err(), NoUpstream::NoneHealthy);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_attempt_leaves_no_sample_and_no_in_flight() {
    let p = healthy(1);
    let up = p.upstreams()[0].clone();
    drop(p.begin(&up));
    assert_eq!(up.in_flight(), 0);
    assert!(!up.has_latency_sample());
}

#[derive(Debug, Clone, Copy)]
enum State {
    Healthy,
    Unhealthy,
    Initializing,
    Unknown,
    HealthyEjected,
}

fn state() -> impl proptest::strategy::Strategy<Value = State> {
    prop_oneof![
        Just(State::Healthy),
        Just(State::Unhealthy),
        Just(State::Initializing),
        Just(State::Unknown),
        Just(State::HealthyEjected),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever the states, latencies and tried set: selection never returns
    /// a tried, unhealthy or initializing upstream; it returns a routable one
    /// whenever one exists; and it only fails when nothing usable is left.
    #[test]
    fn selection_never_returns_an_unroutable_upstream(
        states in prop::collection::vec(state(), 1..12),
        latencies in prop::collection::vec(1u64..500, 12),
        tried_mask in prop::collection::vec(any::<bool>(), 12),
        round_robin in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut c = config(states.len());
            if round_robin {
                c.pool.strategy = crate::config::Strategy::RoundRobin;
            }
            let p = pool_with(&c);
            for (i, s) in states.iter().enumerate() {
                let up = p.upstreams()[i].clone();
                match s {
                    State::Healthy | State::HealthyEjected => set(&p, i, CheckOutcome::Up),
                    State::Unhealthy => set(&p, i, CheckOutcome::Down),
                    State::Initializing => set(&p, i, CheckOutcome::Initializing),
                    State::Unknown => {}
                }
                p.begin(&up).finish(Outcome::Success(Duration::from_millis(latencies[i])));
                if matches!(s, State::HealthyEjected) {
                    p.begin(&up).finish(Outcome::RateLimited(Some(Duration::from_secs(30))));
                }
            }
            let tried: Vec<usize> = (0..states.len()).filter(|i| tried_mask[*i]).collect();
            let open = |i: usize| !tried.contains(&i);
            let routable_exists = (0..states.len())
                .any(|i| open(i) && matches!(states[i], State::Healthy));
            let usable_exists = (0..states.len()).any(|i| {
                open(i) && matches!(states[i], State::Healthy | State::HealthyEjected | State::Unknown)
            });
            for _ in 0..8 {
                match p.select(&tried) {
                    Ok(u) => {
                        prop_assert!(open(u.index), "chose a tried upstream");
                        prop_assert!(
                            !matches!(states[u.index], State::Unhealthy | State::Initializing),
                            "chose {:?}", states[u.index]
                        );
                        if routable_exists {
                            prop_assert!(matches!(states[u.index], State::Healthy));
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(e, NoUpstream::NoneHealthy);
                        prop_assert!(!usable_exists, "refused although {:?} was usable", states);
                    }
                }
            }
            Ok(())
        })?;
    }
}
