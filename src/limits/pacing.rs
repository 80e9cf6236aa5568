//! Pacing with governor on tokio's clock, so waits honour paused time in tests.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// governor's clock as nanoseconds since a tokio instant.
#[derive(Clone, Debug)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A GCRA pacer: up to `burst` cells at once, refilled at a steady rate.
#[derive(Debug)]
pub struct Pacer {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>,
    clock: TokioClock,
}

impl Pacer {
    /// `per_minute` requests a minute, at most `burst` at once; `None` when `per_minute` is 0.
    pub fn per_minute(per_minute: u32, burst: u32) -> Option<Pacer> {
        let rate = NonZeroU32::new(per_minute)?;
        Some(Pacer::new(
            Quota::per_minute(rate).allow_burst(at_least_one(burst)),
        ))
    }

    /// Releases after a pause: `burst` at once, then `burst` a second.
    pub fn release(burst: u32) -> Pacer {
        Pacer::new(Quota::per_second(at_least_one(burst)))
    }

    fn new(quota: Quota) -> Pacer {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        Pacer {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// Takes a cell now, or says how long until one may be free.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Waits for a cell. Others may take the cell first; then this waits again.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_acquire() {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn release_is_burst_then_steady() {
        let pacer = Pacer::release(4);
        for _ in 0..4 {
            assert_eq!(pacer.try_acquire(), Ok(()));
        }
        assert_eq!(pacer.try_acquire(), Err(Duration::from_millis(250)));
        let start = Instant::now();
        pacer.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn per_minute() {
        assert!(Pacer::per_minute(0, 5).is_none());
        let pacer = Pacer::per_minute(60, 2).unwrap();
        assert_eq!(pacer.try_acquire(), Ok(()));
        assert_eq!(pacer.try_acquire(), Ok(()));
        assert_eq!(pacer.try_acquire(), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(pacer.try_acquire(), Ok(()));
        // burst 0 is taken as 1.
        let pacer = Pacer::per_minute(60, 0).unwrap();
        assert_eq!(pacer.try_acquire(), Ok(()));
        assert!(pacer.try_acquire().is_err());
    }
}
