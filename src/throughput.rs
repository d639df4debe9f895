//! Byte accounting per upstream and the windowed bytes-per-second rate.
//!
//! The data callbacks only add to a [`ByteCount`]; everything else happens once per interval or
//! once per connection close, with explicit timestamps so it can be tested without a clock.

use std::cell::Cell;

/// Bytes seen in one direction since the VM started. Shared (`Rc`) between the upstream's
/// series and its open connections: the hot path is one `Cell` add, no host call.
#[derive(Debug, Default)]
pub struct ByteCount(Cell<u64>);

impl ByteCount {
    #[inline]
    pub fn add(&self, bytes: usize) {
        self.0.set(self.0.get().wrapping_add(bytes as u64));
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Bytes one upstream's connections moved in this VM, by direction.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Client → database.
    pub tx: ByteCount,
    /// Database → client.
    pub rx: ByteCount,
    /// Swallowed by a fault (blackhole, cut, abort), either direction.
    pub dropped: ByteCount,
}

/// Tracks how much of a monotonically growing total has been handed to a host counter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flushed(u64);

impl Flushed {
    /// The amount to add to the host counter to make it equal `total`; zero when up to date.
    pub fn take(&mut self, total: u64) -> u64 {
        let delta = total.wrapping_sub(self.0);
        self.0 = total;
        delta
    }
}

/// This VM's share of a bytes-per-second gauge that every worker VM adds to.
///
/// Each worker reports the change of its own rate (a signed increment), so the gauge Envoy shows
/// is the sum over workers without any cross-VM coordination.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateShare {
    /// Total bytes at the last rate computation.
    mark: u64,
    /// What this VM currently contributes to the gauge, in bytes per second.
    reported: i64,
}

impl RateShare {
    /// Recomputes the rate from the bytes added since the last call over `elapsed_nanos`, and
    /// returns the increment to apply to the gauge (zero: nothing to do).
    pub fn update(&mut self, total: u64, elapsed_nanos: u64) -> i64 {
        let bytes = total.wrapping_sub(self.mark);
        self.mark = total;
        let rate = bytes_per_second(bytes, elapsed_nanos);
        let delta = rate - self.reported;
        self.reported = rate;
        delta
    }

    /// Withdraws this VM's contribution (metrics disabled, VM going away). Returns the increment.
    pub fn withdraw(&mut self, total: u64) -> i64 {
        self.mark = total;
        let delta = -self.reported;
        self.reported = 0;
        delta
    }

    pub fn reported(&self) -> i64 {
        self.reported
    }
}

/// `bytes` over `elapsed_nanos`, rounded to the nearest byte per second; 0 for no elapsed time.
pub fn bytes_per_second(bytes: u64, elapsed_nanos: u64) -> i64 {
    if elapsed_nanos == 0 {
        return 0;
    }
    // In floating point (exact below 9e15 B/s): u128 arithmetic would pull its division
    // routines into the module. The cast saturates.
    (bytes as f64 * 1e9 / elapsed_nanos as f64 + 0.5) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn rate_math() {
        assert_eq!(bytes_per_second(1000, SEC), 1000);
        assert_eq!(bytes_per_second(1000, SEC / 2), 2000);
        assert_eq!(bytes_per_second(1, 3 * SEC), 0);
        assert_eq!(bytes_per_second(2, 3 * SEC), 1);
        assert_eq!(bytes_per_second(5, 0), 0);
        assert_eq!(bytes_per_second(u64::MAX, 1), i64::MAX);
    }

    #[test]
    fn rate_share_reports_changes_and_returns_to_zero() {
        let count = ByteCount::default();
        let mut share = RateShare::default();
        count.add(500);
        count.add(500);
        assert_eq!(share.update(count.get(), SEC), 1000);
        count.add(3000);
        assert_eq!(share.update(count.get(), 2 * SEC), 500);
        assert_eq!(share.reported(), 1500);
        assert_eq!(share.update(count.get(), SEC), -1500);
        assert_eq!(share.update(count.get(), SEC), 0);
    }

    #[test]
    fn two_workers_sum() {
        let (a, b) = (ByteCount::default(), ByteCount::default());
        let (mut sa, mut sb) = (RateShare::default(), RateShare::default());
        let mut gauge = 0i64;
        a.add(100);
        b.add(300);
        gauge += sa.update(a.get(), SEC) + sb.update(b.get(), SEC);
        assert_eq!(gauge, 400);
        b.add(100);
        gauge += sa.update(a.get(), SEC) + sb.update(b.get(), SEC);
        assert_eq!(gauge, 100);
        gauge += sa.withdraw(a.get()) + sb.withdraw(b.get());
        assert_eq!(gauge, 0);
    }

    #[test]
    fn flushed_deltas() {
        let count = ByteCount::default();
        let mut flushed = Flushed::default();
        count.add(7);
        assert_eq!(flushed.take(count.get()), 7);
        assert_eq!(flushed.take(count.get()), 0);
        count.add(3);
        assert_eq!(flushed.take(count.get()), 3);
    }
}
