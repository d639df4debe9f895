//! `delay: {"latency": "200ms", "jitter": "50ms", "firstOnly": false}` — hold client → database
//! bytes for `latency` ± uniform `jitter`, in order.
//!
//! Envoy can pause the client → database stream and resume it later, but a resume releases
//! everything buffered: bytes that arrive while an earlier chunk is held are released with it
//! (they wait less than `latency`). Request/response clients, which wait for the answer before
//! sending again, see exactly `latency` ± `jitter` per request. Database → client bytes cannot
//! be held in Envoy's ABI and are never delayed.

use super::nanos;
use crate::schedule::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    pub latency: Duration,
    /// At most `latency` (validated), so a hold is never negative.
    pub jitter: Duration,
    /// Delay only the first client → database chunk of the connection (slow setup).
    pub first_only: bool,
}

impl Delay {
    /// The release time of a hold starting at `now`.
    pub fn release_at(&self, now: u64, rng: &mut Rng) -> u64 {
        let base = i128::from(now) + i128::from(nanos(self.latency));
        let at = base + i128::from(rng.symmetric(nanos(self.jitter)));
        u64::try_from(at.max(i128::from(now))).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_times_stay_in_the_jitter_band() {
        let d = Delay {
            latency: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
            first_only: false,
        };
        let mut rng = Rng::new(3);
        let now = 1_000_000_000u64;
        let mut sum = 0u128;
        for _ in 0..1000 {
            let at = d.release_at(now, &mut rng);
            assert!((now + 150_000_000..=now + 250_000_000).contains(&at));
            sum += u128::from(at - now);
        }
        let mean_ms = sum / 1000 / 1_000_000;
        assert!((190..=210).contains(&mean_ms), "{mean_ms}");
    }
}
