//! Timestamps as the store writes them: Unix microseconds in memory,
//! `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) in SQL text (SQLite, agent records);
//! PostgreSQL's binary COPY takes the microseconds as they are.

use chrono::{DateTime, NaiveDateTime};

/// Now, in Unix microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC.
pub fn format_micros(us: i64) -> String {
    match DateTime::from_timestamp_micros(us) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => "1970-01-01 00:00:00.000000".to_owned(),
    }
}

/// Parses what [`format_micros`] writes (also without fraction, or with `T`).
pub fn parse_micros(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z').trim_end_matches("+00");
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let us = 1_795_995_692_315_517;
        let s = format_micros(us);
        assert_eq!(s, "2026-11-29 23:41:32.315517");
        assert_eq!(parse_micros(&s), Some(us));
        assert_eq!(
            parse_micros("2026-11-29 23:41:32"),
            Some(1_795_995_692_000_000)
        );
    }
}
