//! Go-style duration strings (`"90s"`, `"1m30s"`, `"1h"`, `"500ms"`), as Calico writes timers in
//! BGPPeer, BGPConfiguration and FelixConfiguration (Kubernetes' `metav1.Duration`, which is Go's
//! `time.ParseDuration` / `Duration.String`).
//!
//! [`Duration`] keeps the text it was parsed from so a resource read, edited and written back by
//! `trellisctl` shows the user's own spelling (`90s` stays `90s`, not `1m30s`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write a number with a unit, e.g. \"30s\"")]
    Empty,
    #[error("invalid duration {input:?}: {reason}")]
    Invalid { input: String, reason: String },
    #[error("negative duration {0:?} is not allowed here")]
    Negative(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// A non-negative duration written the Go way. Equality compares the length of time, not the
/// spelling: `"90s" == "1m30s"`, so a respelled but identical setting is not seen as a change.
#[derive(Clone)]
pub struct Duration {
    text: String,
    value: StdDuration,
}

impl Duration {
    /// Parses Go's syntax: one or more `NUMBER UNIT` groups, units `ns`, `us` (or `µs`), `ms`,
    /// `s`, `m`, `h`, decimal fractions allowed (`1.5h`), and the bare `0`. Unlike Go, negative
    /// values are refused: no Trellis timer can run backwards.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        parse_go_duration(text).map(|value| Self {
            text: text.to_string(),
            value,
        })
    }

    /// The duration as Go's `Duration.String()` would print it (`1m30s`, `500ms`, `0s`).
    pub fn from_std(value: StdDuration) -> Self {
        Self {
            text: format_go_duration(value),
            value,
        }
    }

    pub fn from_secs(secs: u64) -> Self {
        Self::from_std(StdDuration::from_secs(secs))
    }

    pub fn as_std(&self) -> StdDuration {
        self.value
    }

    /// The text as given (or as formatted by [`Self::from_std`]).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_zero(&self) -> bool {
        self.value.is_zero()
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({:?} = {:?})", self.text, self.value)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Duration {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Duration {}

impl PartialOrd for Duration {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Duration {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

impl std::hash::Hash for Duration {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<StdDuration> for Duration {
    fn from(value: StdDuration) -> Self {
        Self::from_std(value)
    }
}

impl From<Duration> for StdDuration {
    fn from(d: Duration) -> Self {
        d.value
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"1m30s\" or \"500ms\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }

            // A bare number is refused rather than guessed: Calico's durations are strings and a
            // unit-less `30` could mean seconds or nanoseconds (Go's integer encoding).
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" for seconds"
                )))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" for seconds"
                )))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" for seconds"
                )))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// Nanoseconds per unit, longest names first so `ms` is not read as `m` + garbage.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000), // Greek mu, which Go also accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

fn parse_go_duration(input: &str) -> Result<StdDuration, DurationError> {
    let invalid = |reason: &str| DurationError::Invalid {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let mut s = input;
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Some(rest) = s.strip_prefix('-') {
        // Go accepts "-0"; it is still zero, so let it through.
        if rest.bytes().all(|b| b == b'0') && !rest.is_empty() {
            return Ok(StdDuration::ZERO);
        }
        return Err(DurationError::Negative(input.to_string()));
    }
    s = s.strip_prefix('+').unwrap_or(s);
    // Go's special case: a bare zero needs no unit.
    if s == "0" {
        return Ok(StdDuration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid("expected a number"));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number before each unit"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(invalid("missing unit; use ns, us, ms, s, m or h"));
        }
        let per_unit = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ns)| *ns)
            .ok_or_else(|| invalid(&format!("unknown unit {unit:?}; use ns, us, ms, s, m or h")))?;
        let overflow = || DurationError::Overflow(input.to_string());
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(per_unit).ok_or_else(overflow)?;
        // Fractions are exact up to nanoseconds; digits beyond that are truncated, as Go does.
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for d in frac_part.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        nanos = nanos
            .checked_add(frac * per_unit / scale)
            .ok_or_else(overflow)?;
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(input.to_string()))?;
    Ok(StdDuration::new(secs, (total % 1_000_000_000) as u32))
}

/// Go's `Duration.String()`: `0s`; below a second one unit (`1.5ms`, `250µs`, `7ns`); otherwise
/// `XhYmZs` with leading zero units left out but inner ones kept (`1h0m0s`, `2m0.5s`).
fn format_go_duration(d: StdDuration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sec_text = decimal(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    if h > 0 {
        format!("{h}h{m}m{sec_text}s")
    } else if m > 0 {
        format!("{m}m{sec_text}s")
    } else {
        format!("{sec_text}s")
    }
}

/// `value / unit` as a decimal without trailing zeros (`1500, 1000` -> `1.5`).
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> StdDuration {
        Duration::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_std()
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(d("90s"), StdDuration::from_secs(90));
        assert_eq!(d("1m30s"), StdDuration::from_secs(90));
        assert_eq!(d("1h"), StdDuration::from_secs(3600));
        assert_eq!(d("500ms"), StdDuration::from_millis(500));
        assert_eq!(d("1.5h"), StdDuration::from_secs(5400));
        assert_eq!(d(".5s"), StdDuration::from_millis(500));
        assert_eq!(d("1h2m3s4ms5us6ns"), StdDuration::new(3723, 4_005_006));
        assert_eq!(d("10µs"), StdDuration::from_micros(10));
        assert_eq!(d("0"), StdDuration::ZERO);
        assert_eq!(d("0s"), StdDuration::ZERO);
        assert_eq!(d("+5s"), StdDuration::from_secs(5));
        assert_eq!(d("-0"), StdDuration::ZERO);
        assert_eq!(d("1.0000000009s"), StdDuration::from_secs(1)); // truncated like Go
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Duration::parse(""), Err(DurationError::Empty));
        assert!(matches!(
            Duration::parse("30"),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(
            Duration::parse("5 s"),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(
            Duration::parse("5d"),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(
            Duration::parse("s"),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(
            Duration::parse("."),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(
            Duration::parse("1m30"),
            Err(DurationError::Invalid { .. })
        ));
        assert_eq!(
            Duration::parse("-5s"),
            Err(DurationError::Negative("-5s".into()))
        );
        assert!(matches!(
            Duration::parse("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        let e = Duration::parse("5d").unwrap_err().to_string();
        assert!(e.contains("unknown unit \"d\""), "{e}");
    }

    #[test]
    fn formats_like_go() {
        let f = |d: StdDuration| Duration::from_std(d).as_str().to_string();
        assert_eq!(f(StdDuration::ZERO), "0s");
        assert_eq!(f(StdDuration::from_secs(90)), "1m30s");
        assert_eq!(f(StdDuration::from_secs(3600)), "1h0m0s");
        assert_eq!(f(StdDuration::from_secs(120)), "2m0s");
        assert_eq!(f(StdDuration::from_millis(1500)), "1.5s");
        assert_eq!(f(StdDuration::from_millis(500)), "500ms");
        assert_eq!(f(StdDuration::from_micros(1500)), "1.5ms");
        assert_eq!(f(StdDuration::from_nanos(250_000)), "250µs");
        assert_eq!(f(StdDuration::from_nanos(7)), "7ns");
        // Whatever Go prints, Go (and we) can parse back.
        for secs in [0, 1, 59, 61, 3599, 3601, 86_400] {
            let v = Duration::from_secs(secs);
            assert_eq!(Duration::parse(v.as_str()).unwrap(), v);
        }
    }

    #[test]
    fn keeps_spelling_and_compares_by_value() {
        let a = Duration::parse("90s").unwrap();
        let b = Duration::parse("1m30s").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "90s");
        assert!(Duration::from_secs(3) < Duration::parse("1m").unwrap());
    }

    #[test]
    fn serde_round_trip_keeps_the_text() {
        let v: Duration = serde_json::from_str("\"90s\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"90s\"");
        let e = serde_json::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("write \"30s\""), "{e}");
        let e = serde_json::from_str::<Duration>("\"-1s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative"), "{e}");
    }
}
