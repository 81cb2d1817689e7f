//! Human-friendly durations (`"90s"`, `"5m"`, `"1h30m"`, `"500ms"`) for playbook timeouts.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write timeouts in config files.
///
/// Kept as its own type so the playbook stays readable (`timeout = "5m"`) while the engine gets a
/// plain [`Duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of `secs` seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The wrapped duration.
    #[must_use]
    pub const fn get(self) -> Duration {
        self.0
    }
}

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration: write e.g. \"30s\", \"5m\" or \"1h30m\"")]
    Empty,
    /// A number was not followed by a unit, or the unit is unknown.
    #[error("bad duration {0:?}: use a number followed by ms, s, m or h (e.g. \"90s\", \"1h30m\")")]
    Malformed(String),
}

/// Parse `"1h30m"`, `"90s"`, `"250ms"`.
///
/// # Errors
/// [`DurationError`] when the text is empty or is not a sequence of number+unit pairs.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(malformed)?;
        if digits == 0 {
            return Err(malformed());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| malformed())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(malformed()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut secs = self.0.as_secs();
        let hours = secs / 3600;
        secs %= 3600;
        let minutes = secs / 60;
        secs %= 60;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if secs > 0 {
            write!(f, "{secs}s")?;
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"90s\" or \"5m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
        }
        let text = deserializer.deserialize_str(Text)?;
        parse_duration(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(" 90s ").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(matches!(
            parse_duration("90"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("5 minutes"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("m"),
            Err(DurationError::Malformed(_))
        ));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
    }

    #[test]
    fn display_round_trips() {
        for text in ["1h30m", "250ms", "45s", "2h", "0s"] {
            let d = HumanDuration(parse_duration(text).unwrap());
            assert_eq!(d.to_string(), text);
        }
    }
}
