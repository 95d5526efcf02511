//! Retry budget: retries may add at most `ratio` of the recent requests, plus
//! a small floor per second, so that retries never multiply an overload
//! (the scheme of Finagle's and Linkerd's retry budgets).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The window is kept as this many one-second slots.
const WINDOW_SECONDS: usize = 10;

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    second: u64,
    requests: u64,
    retries: u64,
}

/// A sliding ten-second window of first attempts and retries.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    epoch: Instant,
    slots: Mutex<[Slot; WINDOW_SECONDS]>,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: f64) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_second,
            epoch: Instant::now(),
            slots: Mutex::new([Slot::default(); WINDOW_SECONDS]),
        }
    }

    fn with_slot<T>(&self, f: impl FnOnce(&mut [Slot; WINDOW_SECONDS], usize) -> T) -> T {
        let second = Instant::now().duration_since(self.epoch).as_secs();
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let index = (second as usize) % WINDOW_SECONDS;
        if slots[index].second != second {
            slots[index] = Slot {
                second,
                requests: 0,
                retries: 0,
            };
        }
        let recent = second.saturating_sub(WINDOW_SECONDS as u64 - 1);
        for slot in slots.iter_mut() {
            if slot.second < recent {
                *slot = Slot::default();
            }
        }
        f(&mut slots, index)
    }

    /// Counts a request's first attempt.
    pub fn record_request(&self) {
        self.with_slot(|slots, i| slots[i].requests += 1);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self) -> bool {
        self.with_slot(|slots, i| {
            let requests: u64 = slots.iter().map(|s| s.requests).sum();
            let retries: u64 = slots.iter().map(|s| s.retries).sum();
            let allowed =
                self.min_per_second * WINDOW_SECONDS as f64 + self.ratio * requests as f64;
            if (retries as f64) < allowed {
                slots[i].retries += 1;
                true
            } else {
                false
            }
        })
    }

    /// The window the budget looks at.
    pub fn window() -> Duration {
        Duration::from_secs(WINDOW_SECONDS as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 0.1); // floor: 1 retry per 10 s window
        for _ in 0..100 {
            budget.record_request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 21);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_retries_with_little_traffic() {
        let budget = RetryBudget::new(0.2, 0.3); // floor: 3 per window
        budget.record_request();
        let granted = (0..10).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 4); // 3 + 0.2
    }

    #[tokio::test(start_paused = true)]
    async fn spent_budget_comes_back_as_the_window_slides() {
        let budget = RetryBudget::new(0.2, 0.0);
        for _ in 0..10 {
            budget.record_request();
        }
        assert_eq!((0..10).filter(|_| budget.try_retry()).count(), 2);
        assert!(!budget.try_retry());
        tokio::time::advance(RetryBudget::window()).await;
        assert!(!budget.try_retry(), "old requests no longer count");
        for _ in 0..10 {
            budget.record_request();
        }
        assert!(budget.try_retry());
    }
}
