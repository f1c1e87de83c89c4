//! Durations as written in config and in the API: `<integer><unit>`, unit `ms|s|m|h|d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration parsed from `250ms`, `60s`, `5m`, `7d`. Displays back in the largest exact unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HubDuration(Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration: write <integer><unit> with unit ms, s, m, h or d (e.g. 250ms, 60s, 7d)")]
pub struct DurationError(String);

impl HubDuration {
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.as_millis_i64())
    }
}

impl FromStr for HubDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.chars().take(32).collect());
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let ms_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        let ms = n.checked_mul(ms_per_unit).ok_or_else(err)?;
        Ok(Self(Duration::from_millis(ms)))
    }
}

impl fmt::Display for HubDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> serde::Deserialize<'de> for HubDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for HubDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("250ms", 250),
            ("60s", 60_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                text.parse::<HubDuration>().unwrap().get().as_millis(),
                ms,
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_integer_and_unit() {
        for bad in [
            "",
            "5",
            "m",
            "1.5s",
            "-1s",
            "5 m",
            "5M",
            "5min",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<HubDuration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        for text in ["250ms", "90s", "5m", "36h", "7d", "0ms"] {
            assert_eq!(text.parse::<HubDuration>().unwrap().to_string(), text);
        }
    }
}
