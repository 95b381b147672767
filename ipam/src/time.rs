//! Allocation timestamps: written as RFC 3339 UTC, read in that form or in the Go
//! `time.Time.String()` form Calico writes (`2025-01-01 00:00:00.1 +0000 UTC`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Nanoseconds since the epoch, to seed a new block's sequence number.
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Parses a stored timestamp; `None` for anything unrecognised (the caller then cannot prove
/// an allocation old, and must not treat it as leaked).
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Some(t);
    }
    // Go: "2006-01-02 15:04:05.999999999 -0700 MST" (Calico always writes UTC).
    let mut parts = s.split_whitespace();
    let date = parts.next()?;
    let time = parts.next()?;
    let offset = parts.next().unwrap_or("+0000");
    let base = humantime::parse_rfc3339_weak(&format!("{date} {time}")).ok()?;
    let (sign, digits) = match offset.split_at_checked(1)? {
        ("+", d) => (1i64, d),
        ("-", d) => (-1i64, d),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    let shift = sign * (hours * 3600 + minutes * 60);
    // Local time minus its offset is UTC.
    if shift >= 0 {
        base.checked_sub(Duration::from_secs(shift as u64))
    } else {
        base.checked_add(Duration::from_secs((-shift) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ours_and_calicos() {
        let ours = now_rfc3339();
        let t = parse_timestamp(&ours).unwrap();
        assert!(SystemTime::now().duration_since(t).unwrap() < Duration::from_secs(5));
        let go = parse_timestamp("2025-01-01 00:00:00.1 +0000 UTC").unwrap();
        let rfc = parse_timestamp("2025-01-01T00:00:00.1Z").unwrap();
        assert_eq!(go, rfc);
        let east = parse_timestamp("2025-01-01 02:00:00 +0200 EET").unwrap();
        assert_eq!(east, parse_timestamp("2025-01-01T00:00:00Z").unwrap());
        assert!(parse_timestamp("yesterday").is_none());
        assert!(parse_timestamp("").is_none());
    }
}
