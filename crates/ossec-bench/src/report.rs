//! Output: a human table on stdout, then the JSON object as the last line.

use serde_json::Value;

/// Prints `title`, the rows as an aligned two-column table, then `json` on
/// one line (the last line of stdout).
pub fn print(title: &str, rows: &[(String, String)], json: &Value) {
    println!("{title}");
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
    println!("{json}");
}

/// Rounds to `d` decimals (for JSON figures that are meant to be read).
pub fn round(x: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (x * m).round() / m
}
