//! Peak-EWMA latency estimate, as Finagle, tower and Linkerd use it.
//!
//! A sample above the estimate replaces it at once (the peak), so an upstream
//! that slows down is avoided immediately; a lower sample is blended in with
//! weight `1 - exp(-elapsed / decay)`, so it takes a while to look fast again.
//! Read through [`PeakEwma::estimate`], the estimate also decays towards zero
//! while no sample arrives, so an idle slow upstream is tried again after a
//! while instead of being starved for ever.

use std::time::Duration;
use tokio::time::Instant;

/// One upstream's latency estimate.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    /// Estimate in seconds at `updated`.
    estimate: f64,
    updated: Instant,
    /// Whether a real sample has arrived (the start value is only a guess).
    sampled: bool,
}

impl PeakEwma {
    /// Starts at `initial`: a neutral guess, never zero, so that a new
    /// upstream does not look like the cheapest one.
    pub fn new(initial: Duration, now: Instant) -> PeakEwma {
        PeakEwma {
            estimate: initial.as_secs_f64(),
            updated: now,
            sampled: false,
        }
    }

    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// Drops what the samples said, as if none had come: an upstream that
    /// comes back from being down or ejected starts afresh, instead of being
    /// avoided until the penalties of its outage decay.
    pub fn forget(&mut self) {
        self.sampled = false;
    }

    /// The estimate at `now`, decayed for the time since the last sample.
    pub fn estimate(&self, now: Instant, decay: Duration) -> Duration {
        Duration::from_secs_f64(self.decayed(now, decay))
    }

    fn decayed(&self, now: Instant, decay: Duration) -> f64 {
        self.estimate * self.weight(now, decay)
    }

    /// How much of the estimate is left after the time idle since the last sample.
    fn weight(&self, now: Instant, decay: Duration) -> f64 {
        let idle = now.saturating_duration_since(self.updated).as_secs_f64();
        (-idle / decay.as_secs_f64().max(1e-9)).exp()
    }

    /// Folds in one observed latency.
    pub fn observe(&mut self, sample: Duration, now: Instant, decay: Duration) {
        let sample = sample.as_secs_f64();
        let weight = self.weight(now, decay);
        let current = self.estimate * weight;
        self.estimate = if !self.sampled || sample > current {
            sample
        } else {
            current * weight + sample * (1.0 - weight)
        };
        self.updated = now;
        self.sampled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_replaces_the_estimate_at_once() {
        let mut e = PeakEwma::new(Duration::from_millis(100), Instant::now());
        e.observe(Duration::from_millis(20), Instant::now(), DECAY);
        assert_eq!(ms(e.estimate(Instant::now(), DECAY)), 20.0);
        e.observe(Duration::from_millis(500), Instant::now(), DECAY);
        assert_eq!(ms(e.estimate(Instant::now(), DECAY)), 500.0);
    }

    #[tokio::test(start_paused = true)]
    async fn lower_samples_blend_in_by_elapsed_time() {
        let mut e = PeakEwma::new(Duration::from_millis(100), Instant::now());
        e.observe(Duration::from_millis(100), Instant::now(), DECAY);
        tokio::time::advance(Duration::from_secs(10)).await;
        e.observe(Duration::from_millis(10), Instant::now(), DECAY);
        // Decayed 100 ms over one decay period, blended with weight e^-1.
        let decayed = 100.0 * (-1.0f64).exp();
        let want = decayed * (-1.0f64).exp() + 10.0 * (1.0 - (-1.0f64).exp());
        assert!((ms(e.estimate(Instant::now(), DECAY)) - want).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_decays_while_idle() {
        let mut e = PeakEwma::new(Duration::from_millis(100), Instant::now());
        e.observe(Duration::from_millis(200), Instant::now(), DECAY);
        tokio::time::advance(DECAY).await;
        let after_one_period = ms(e.estimate(Instant::now(), DECAY));
        assert!((after_one_period - 200.0 * (-1.0f64).exp()).abs() < 1e-6);
        tokio::time::advance(DECAY * 4).await;
        assert!(ms(e.estimate(Instant::now(), DECAY)) < 200.0 * (-5.0f64).exp() + 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_sample_replaces_the_neutral_guess_even_when_lower() {
        let mut e = PeakEwma::new(Duration::from_secs(1), Instant::now());
        assert!(!e.is_sampled());
        e.observe(Duration::from_millis(10), Instant::now(), DECAY);
        assert!(e.is_sampled());
        assert_eq!(ms(e.estimate(Instant::now(), DECAY)), 10.0);
    }
}
