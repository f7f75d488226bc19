//! Timestamps as the store writes them: Unix microseconds in memory,
//! `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) in SQL text.

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

/// Appends `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) to `out` without going
/// through a format string: this runs once per stored event.
pub fn write_micros(out: &mut Vec<u8>, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(format_micros(us).as_bytes());
        return;
    }
    fn digits(out: &mut Vec<u8>, v: u32, n: usize) {
        let mut buf = [b'0'; 6];
        let mut v = v;
        for i in (0..n).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..n]);
    }
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
    out.push(b' ');
    digits(out, sod / 3600, 2);
    out.push(b':');
    digits(out, sod / 60 % 60, 2);
    out.push(b':');
    digits(out, sod % 60, 2);
    out.push(b'.');
    digits(out, frac, 6);
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
    fn fast_writer_matches_chrono() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut samples = vec![
            0i64,
            -1,
            1,
            951_782_400_000_000,
            4_102_444_800_000_000 - 1,
            1_795_995_692_315_517,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 1970..2100, any microsecond
            samples.push((x % 4_102_444_800_000_000) as i64);
        }
        for us in samples {
            let mut out = Vec::new();
            write_micros(&mut out, us);
            assert_eq!(String::from_utf8(out).unwrap(), format_micros(us), "{us}");
        }
    }

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
