//! Vault's duration inputs (`parseutil.ParseDurationSecond`): an integer number of seconds, or
//! a Go-style duration string such as `1h30m`, `768h`, `10s`, `2d`.

use serde_json::Value;

use super::error::ApiError;

/// Parses a TTL field into seconds; `null`, absent or `""` is zero.
///
/// # Errors
/// A 400 naming the field when the value is not a duration.
pub fn seconds(field: &str, value: Option<&Value>) -> Result<u64, ApiError> {
    let bad = || ApiError::bad(format!("invalid duration for {field:?}"));
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad),
        Some(Value::String(s)) => parse(s).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// Seconds of a bare integer or a duration string (whole seconds, as Vault stores TTLs).
fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    humantime::parse_duration(text).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_vault_durations() {
        assert_eq!(seconds("ttl", Some(&json!("1h30m"))), Ok(5400));
        assert_eq!(seconds("ttl", Some(&json!("768h"))), Ok(2_764_800));
        assert_eq!(seconds("ttl", Some(&json!("90"))), Ok(90));
        assert_eq!(seconds("ttl", Some(&json!(60))), Ok(60));
        assert_eq!(seconds("ttl", Some(&json!("2d"))), Ok(172_800));
        assert_eq!(seconds("ttl", None), Ok(0));
        assert!(seconds("ttl", Some(&json!("soon"))).is_err());
        assert!(seconds("ttl", Some(&json!("10x"))).is_err());
    }
}
