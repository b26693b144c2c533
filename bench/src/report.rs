//! The printed result: one row per scenario, then trellis-over-floor ratios.

use std::fmt::Write as _;

use crate::stats::Summary;

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub summary: Summary,
}

impl Row {
    pub fn new(label: impl Into<String>, summary: Summary) -> Self {
        Self {
            label: label.into(),
            summary,
        }
    }
}

/// Trellis divided by the floor. Throughput: above 1 is faster than the floor. Latency: above 1
/// is slower (lower is better).
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub label: String,
    pub ops_per_sec: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl Ratio {
    pub fn of(label: impl Into<String>, trellis: &Summary, floor: &Summary) -> Self {
        let div = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Self {
            label: label.into(),
            ops_per_sec: trellis
                .ops_per_sec
                .zip(floor.ops_per_sec)
                .and_then(|(t, f)| div(t, f)),
            p50: div(trellis.p50_us as f64, floor.p50_us as f64),
            p99: div(trellis.p99_us as f64, floor.p99_us as f64),
        }
    }
}

/// Aligned plain text, ready to paste into a code block.
pub fn render(rows: &[Row], ratios: &[Ratio]) -> String {
    let width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .chain(ratios.iter().map(|r| r.label.chars().count()))
        .chain(["scenario".len(), "trellis/floor".len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>9}  {:>9}  {:>9}",
        "scenario", "ops", "ops/s", "p50 µs", "p99 µs"
    );
    for row in rows {
        let s = &row.summary;
        let rate = s
            .ops_per_sec
            .map_or_else(|| "-".to_string(), |r| format!("{r:.0}"));
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>9}  {:>9}  {:>9}",
            row.label, s.ops, rate, s.p50_us, s.p99_us
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>7}  {:>9}  {:>9}  {:>9}",
            "trellis/floor", "", "ops/s", "p50", "p99"
        );
        for r in ratios {
            let _ = writeln!(
                out,
                "{:<width$}  {:>7}  {:>9}  {:>9}  {:>9}",
                r.label,
                "",
                times(r.ops_per_sec),
                times(r.p50),
                times(r.p99)
            );
        }
    }
    out
}

/// A ratio as printed: `1.23x`, or `-` when there is none.
pub fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(ops_per_sec: Option<f64>, p50_us: u64, p99_us: u64) -> Summary {
        Summary {
            ops: 10,
            ops_per_sec,
            p50_us,
            p99_us,
        }
    }

    #[test]
    fn ratio_is_trellis_over_floor() {
        let r = Ratio::of(
            "1 node",
            &summary(Some(100.0), 3000, 9000),
            &summary(Some(400.0), 1000, 2000),
        );
        assert_eq!(
            (r.ops_per_sec, r.p50, r.p99),
            (Some(0.25), Some(3.0), Some(4.5))
        );
    }

    #[test]
    fn missing_or_zero_floor_gives_no_ratio() {
        let r = Ratio::of("x", &summary(Some(1.0), 5, 5), &summary(None, 0, 0));
        assert_eq!((r.ops_per_sec, r.p50, r.p99), (None, None, None));
    }

    #[test]
    fn renders_aligned_rows_and_ratios() {
        let floor = summary(Some(400.0), 1000, 2000);
        let text = render(
            &[
                Row::new("floor", floor),
                Row::new("subset", summary(None, 7, 8)),
            ],
            &[Ratio::of(
                "1 node",
                &summary(Some(100.0), 3000, 9000),
                &floor,
            )],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "scenario           ops      ops/s     p50 µs     p99 µs"
        );
        assert_eq!(
            lines[1],
            "floor               10        400       1000       2000"
        );
        assert!(lines[2].contains("   -   "), "{}", lines[2]);
        assert_eq!(
            lines[5],
            "1 node                      0.25x      3.00x      4.50x"
        );
    }
}
