//! Time windows and per-connection percentages. Time and randomness come in as arguments.

use std::time::Duration;

/// `window: {after | start, for, every}`: active from `after` (counted from when the
/// configuration was loaded) or from the instant `start`, for `for`, repeating every `every` when
/// set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: Duration,
    /// An absolute start (nanoseconds since the Unix epoch): every sidecar switches at the same
    /// moment, and a push does not restart the schedule.
    pub start: Option<u64>,
    pub duration: Duration,
    pub every: Option<Duration>,
}

impl Window {
    /// Whether the window is open at `now` for a configuration loaded at `loaded_at` (both
    /// nanoseconds on the same clock).
    pub fn is_open_at(&self, loaded_at: u64, now: u64) -> bool {
        self.state_at(loaded_at, now).0
    }

    /// Whether the window is open at `now` for a configuration loaded at `loaded_at`, and how
    /// long until that changes (`None`: never again).
    pub fn state_at(&self, loaded_at: u64, now: u64) -> (bool, Option<Duration>) {
        match self.start {
            // (`start` and `after` are exclusive: `after` is zero here.)
            Some(start) if now < start => (false, Some(Duration::from_nanos(start - now))),
            Some(start) => self.state(Duration::from_nanos(now - start)),
            None => self.state(Duration::from_nanos(now.saturating_sub(loaded_at))),
        }
    }

    /// Whether the window is open `since_load` after the configuration was loaded.
    pub fn is_open(&self, since_load: Duration) -> bool {
        self.state(since_load).0
    }

    /// Whether the window is open `since_load` after the configuration was loaded (or after
    /// `start`), and how long until that changes (`None`: never again).
    pub fn state(&self, since_load: Duration) -> (bool, Option<Duration>) {
        let Some(t) = since_load.checked_sub(self.after) else {
            return (false, Some(self.after.saturating_sub(since_load)));
        };
        // In nanoseconds as u64 (durations are validated to at most 30 days): u128 arithmetic
        // would pull its division routines into the module.
        let (t, open) = (nanos(t), nanos(self.duration));
        let (is_open, left) = match self.every.map(nanos).filter(|e| *e > 0) {
            Some(every) => {
                let phase = t % every;
                if phase < open {
                    (true, Some(open - phase))
                } else {
                    (false, Some(every - phase))
                }
            }
            None if t < open => (true, Some(open - t)),
            None => (false, None),
        };
        (is_open, left.map(Duration::from_nanos))
    }
}

/// SplitMix64: a tiny, well-distributed mixer; enough for per-connection percentages and jitter.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Whether a connection with random `seed` falls in the `percentage_bp` (basis points) share for
/// one activation `episode` of a rule. Deterministic: asking again gives the same answer, so
/// re-evaluating an open connection never re-rolls.
pub fn selected(seed: u64, episode: u64, percentage_bp: u32) -> bool {
    if percentage_bp >= 10_000 {
        return true;
    }
    mix(seed ^ mix(episode)) % 10_000 < u64::from(percentage_bp)
}

/// Whether the sidecar `node_id` is in a rule's `sidecarPercentage` share (`share_bp` basis
/// points): the first 8 bytes of SHA-256(node id, a newline, rule name), big-endian, modulo
/// 10000, below the share. Stable across pushes, restarts and new VMs, and different per rule,
/// so that two rules at 30% do not always pick the same pods.
pub fn sidecar_selected(node_id: &str, rule: &str, share_bp: u32) -> bool {
    if share_bp >= 10_000 {
        return true;
    }
    let mut input = Vec::with_capacity(node_id.len() + 1 + rule.len());
    input.extend_from_slice(node_id.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(rule.as_bytes());
    let digest = crate::config::digest::sha256(&input);
    let (head, _) = digest.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    u64::from_be_bytes(*head) % 10_000 < u64::from(share_bp)
}

/// A small PRNG stream (SplitMix64 steps), for jitter.
#[derive(Debug, Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[-spread, +spread]` nanoseconds.
    pub fn symmetric(&mut self, spread: u64) -> i64 {
        if spread == 0 {
            return 0;
        }
        let span = spread.saturating_mul(2).saturating_add(1);
        let offset = self.next_u64() % span;
        i64::try_from(offset).unwrap_or(i64::MAX) - i64::try_from(spread).unwrap_or(i64::MAX)
    }
}

/// Converts a duration to nanoseconds, saturating (durations are validated to at most days).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_shares_are_stable_nested_and_per_rule() {
        let pods: Vec<String> = (0..10_000)
            .map(|i| {
                format!(
                    "sidecar~10.1.{}.{}~plants-{i:x}.plants~plants.svc.cluster.local",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        let chosen = |rule: &str, bp: u32| -> Vec<bool> {
            pods.iter().map(|p| sidecar_selected(p, rule, bp)).collect()
        };
        let count = |v: &[bool]| v.iter().filter(|c| **c).count();
        let a30 = chosen("outage", 3000);
        // About the share (binomial: sd = 46 for 10000 at 30%; 5 sd either side).
        assert!((2770..=3230).contains(&count(&a30)), "{}", count(&a30));
        assert_eq!(count(&chosen("outage", 0)), 0);
        assert_eq!(count(&chosen("outage", 10_000)), 10_000);
        // Asking again gives the same pods.
        assert_eq!(chosen("outage", 3000), a30);
        // A larger share keeps every pod of a smaller one (raising it only adds sidecars).
        let a50 = chosen("outage", 5000);
        assert!(a30.iter().zip(&a50).all(|(small, large)| !small || *large));
        // Another rule picks other pods: overlap near 30% × 30%, not 30%.
        let b30 = chosen("slow", 3000);
        let both = a30.iter().zip(&b30).filter(|(a, b)| **a && **b).count();
        assert!((700..=1100).contains(&both), "{both}");
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn one_shot_window() {
        let w = Window {
            start: None,
            after: s(10),
            duration: s(60),
            every: None,
        };
        assert!(!w.is_open(s(0)));
        assert!(!w.is_open(s(9)));
        assert!(w.is_open(s(10)));
        assert!(w.is_open(s(69)));
        assert!(!w.is_open(s(70)));
        assert!(!w.is_open(s(1000)));
        // How long until it switches, and that it never opens again.
        assert_eq!(w.state(s(4)), (false, Some(s(6))));
        assert_eq!(w.state(s(30)), (true, Some(s(40))));
        assert_eq!(w.state(s(70)), (false, None));
    }

    #[test]
    fn repeating_window() {
        let w = Window {
            start: None,
            after: s(10),
            duration: s(60),
            every: Some(s(300)),
        };
        assert!(w.is_open(s(10)));
        assert!(!w.is_open(s(70)));
        assert!(!w.is_open(s(309)));
        assert!(w.is_open(s(310)));
        assert!(w.is_open(s(369)));
        assert!(!w.is_open(s(370)));
        assert_eq!(w.state(s(20)), (true, Some(s(50))));
        assert_eq!(w.state(s(100)), (false, Some(s(210))));
        assert!(w.is_open(s(10 + 300 * 1000)));
    }

    #[test]
    fn percentages_are_fair_and_each_episode_draws_anew() {
        assert!(selected(1, 1, 10_000));
        assert!(!selected(1, 1, 0));
        for bp in [100u32, 2_500, 5_000, 9_000] {
            let hits = (0..20_000u64)
                .filter(|&seed| selected(mix(seed), 7, bp))
                .count();
            let expected = 20_000.0 * f64::from(bp) / 10_000.0;
            let sd = (expected * (1.0 - f64::from(bp) / 10_000.0)).sqrt();
            assert!(
                (hits as f64 - expected).abs() < 4.0 * sd,
                "{bp}bp: {hits} hits, expected {expected}"
            );
        }
        // Another episode is an independent draw.
        let differ = (0..1000u64)
            .filter(|&s| selected(s, 1, 5000) != selected(s, 2, 5000))
            .count();
        assert!(differ > 400 && differ < 600, "{differ}");
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let mut rng = Rng::new(42);
        let (mut lo, mut hi) = (0i64, 0i64);
        for _ in 0..10_000 {
            let j = rng.symmetric(50);
            assert!((-50..=50).contains(&j));
            lo = lo.min(j);
            hi = hi.max(j);
        }
        assert_eq!((lo, hi), (-50, 50));
        assert_eq!(Rng::new(1).symmetric(0), 0);
    }
}
