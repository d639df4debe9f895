//! `cut: {"afterBytes": 4096, "after": "5s"}` — forward exactly `afterBytes` bytes in total
//! (both directions together; the chunk that crosses the limit is truncated) and/or until
//! `after` has passed since the connection opened, even while traffic flows; then close.
//! Everything after the cut is discarded.

use super::nanos;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub after_bytes: Option<u64>,
    pub after: Option<Duration>,
}

impl Cut {
    /// When a connection opened at `opened_at` is cut by time.
    pub fn deadline(&self, opened_at: u64) -> Option<u64> {
        self.after.map(|d| opened_at.saturating_add(nanos(d)))
    }

    /// How many of `size` new bytes may pass after `forwarded` bytes already did: `size` when
    /// the limit is not reached, fewer (possibly 0) when this chunk reaches or crosses it.
    pub fn allowance(&self, forwarded: u64, size: usize) -> Option<usize> {
        let limit = self.after_bytes?;
        let left = limit.saturating_sub(forwarded);
        Some(usize::try_from(left).unwrap_or(usize::MAX).min(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance() {
        let c = Cut {
            after_bytes: Some(100),
            after: None,
        };
        assert_eq!(c.allowance(0, 60), Some(60));
        assert_eq!(c.allowance(60, 60), Some(40));
        assert_eq!(c.allowance(100, 5), Some(0));
        assert_eq!(c.allowance(150, 5), Some(0));
        let t = Cut {
            after_bytes: None,
            after: Some(Duration::from_secs(5)),
        };
        assert_eq!(t.allowance(0, 10), None);
        assert_eq!(t.deadline(1_000), Some(5_000_001_000));
    }
}
