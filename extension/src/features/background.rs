//! Refresh ahead of expiry and rendering again, on a timer, where the environment is never
//! frozen (Lambda Managed Instances).
//!
//! Elsewhere that work hangs on INVOKE events, the only moments a frozen environment runs.
//! Managed Instances refuse INVOKE to external extensions but never freeze, so a timer
//! does the same rounds: each looks at the cache, refreshes what function code read that
//! is in the last part of its TTL, and renders again the files whose values changed.

use std::future::Future;
use std::time::Duration;

/// The shortest time between two rounds: a round over an idle cache is cheap, but not free.
pub const MIN_PERIOD: Duration = Duration::from_millis(250);
/// The longest: rendered files follow a value within this even with long TTLs.
pub const MAX_PERIOD: Duration = Duration::from_secs(30);

/// How often to run a round: four times per refresh window (the last `refresh_ahead` of
/// the shortest TTL in use, or that whole TTL when refresh ahead is off), so an entry is
/// looked at several times before it expires; within [`MIN_PERIOD`] and [`MAX_PERIOD`].
/// A TTL of zero (cache bypassed) takes no part.
pub fn period(ttls: &[Duration], refresh_ahead: f64) -> Duration {
    let Some(shortest) = ttls.iter().copied().filter(|t| !t.is_zero()).min() else {
        return MAX_PERIOD;
    };
    let window = if refresh_ahead > 0.0 {
        shortest.mul_f64(refresh_ahead)
    } else {
        shortest
    };
    (window / 4).clamp(MIN_PERIOD, MAX_PERIOD)
}

/// Runs `round` every `period`, the first time one period from now, until the task is
/// aborted. A round that overruns delays the next one rather than stacking them.
pub async fn every<F, Fut>(period: Duration, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        round().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn period_is_a_quarter_of_the_shortest_refresh_window_within_bounds() {
        let secs = Duration::from_secs;
        // Defaults: 300 s TTLs, the last 20 %: a 60 s window, looked at every 15 s.
        assert_eq!(period(&[secs(300), secs(300)], 0.2), secs(15));
        // The shortest TTL in use decides; a bypassed kind (TTL 0) does not.
        assert_eq!(
            period(&[secs(4), secs(300)], 0.5),
            Duration::from_millis(500)
        );
        assert_eq!(period(&[Duration::ZERO, secs(40)], 0.5), secs(5));
        // Refresh ahead off: the whole TTL is the window (rendering follows expiry).
        assert_eq!(period(&[secs(8)], 0.0), secs(2));
        // Bounds.
        assert_eq!(period(&[secs(1)], 0.1), MIN_PERIOD);
        assert_eq!(period(&[secs(86_400)], 0.9), MAX_PERIOD);
        assert_eq!(period(&[Duration::ZERO], 0.2), MAX_PERIOD);
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_run_once_per_period_and_not_before_the_first() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let rounds = rounds.clone();
            every(Duration::from_secs(1), move || {
                let rounds = rounds.clone();
                async move {
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            })
        });
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(2_002)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
        task.abort();
    }
}
