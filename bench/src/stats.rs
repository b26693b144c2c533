//! What a timed run measured: per-operation latencies and the wall-clock span they covered.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Slowest latency kept exactly (60 s, beyond any request timeout); slower ones are clamped.
const MAX_MICROS: u64 = 60_000_000;

/// Latencies in microseconds, three significant digits.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid"))
    }
}

impl Latencies {
    pub fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        self.0.add(&other.0).expect("histograms share bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Microseconds at quantile `q` (0..=1); 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count() == 0 {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }
}

/// From the first timed operation's start to the last one's end, across concurrent workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Instant,
    pub end: Instant,
}

impl Span {
    pub fn union(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn duration(self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// The numbers one table row shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub ops: u64,
    /// `None` for a subset of a run's operations, whose own wall time is not defined.
    pub ops_per_sec: Option<f64>,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl Summary {
    /// Operations over the wall-clock time in which they ran.
    pub fn of_run(latencies: &Latencies, wall: Duration) -> Self {
        let secs = wall.as_secs_f64();
        Self {
            ops_per_sec: (secs > 0.0).then(|| latencies.count() as f64 / secs),
            ..Self::of_subset(latencies)
        }
    }

    /// Latencies only (see [`Summary::ops_per_sec`]).
    pub fn of_subset(latencies: &Latencies) -> Self {
        Self {
            ops: latencies.count(),
            ops_per_sec: None,
            p50_us: latencies.quantile_us(0.50),
            p99_us: latencies.quantile_us(0.99),
        }
    }
}

/// Middle value (mean of the two middle ones for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn quantiles_and_rate() {
        let mut l = Latencies::default();
        for us in 1..=100 {
            l.record(Duration::from_micros(us));
        }
        let s = Summary::of_run(&l, Duration::from_secs(2));
        assert_eq!((s.ops, s.p50_us, s.p99_us), (100, 50, 99));
        assert_eq!(s.ops_per_sec, Some(50.0));
    }

    #[test]
    fn merge_adds_counts_and_empty_reads_zero() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        assert_eq!(a.quantile_us(0.99), 0);
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(30));
        a.merge(&b);
        assert_eq!((a.count(), a.quantile_us(1.0)), (2, 30));
    }

    #[test]
    fn zero_and_huge_latencies_are_kept_in_range() {
        let mut l = Latencies::default();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 2);
        assert_eq!(l.quantile_us(0.0), 1);
    }

    #[test]
    fn span_union_covers_both() {
        let t = Instant::now();
        let a = Span {
            start: t,
            end: t + Duration::from_secs(1),
        };
        let b = Span {
            start: t + Duration::from_millis(500),
            end: t + Duration::from_secs(3),
        };
        assert_eq!(a.union(b).duration(), Duration::from_secs(3));
    }
}
