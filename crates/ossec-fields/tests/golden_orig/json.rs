//! JSON payloads and JSON text: owns the single-pass validator that decides
//! whether a message is a JSON object/array that PostgreSQL's `jsonb` input
//! (and `serde_json::from_slice`) will accept, the pass-through of the
//! original bytes (with the few rewrites that make a hostile-but-valid
//! document storable), the decoder of JSON string literals, and the writer of
//! JSON string literals used by the other modules.
//!
//! Why a hand-written validator rather than parse + reserialize: the common
//! Wazuh payload is accepted as-is, so checking it in one pass without
//! allocating and copying the original bytes is several times cheaper than
//! building a `serde_json::Value` and printing it again. The validator is
//! strict RFC 8259 (the same grammar PostgreSQL and serde_json accept) plus
//! the storage rules below; tests compare it with serde_json.
//!
//! Storage rules (what PostgreSQL's `jsonb` input would reject, and what we
//! do instead):
//! - `\u0000` in a string: PostgreSQL rejects it; rewritten to `\ufffd`.
//! - unpaired UTF-16 surrogate escapes (`\ud800` alone, `\udc00` alone):
//!   PostgreSQL and serde_json reject them; each rewritten to `\ufffd`.
//! - numbers PostgreSQL's `numeric` or an `f64` cannot hold: written as a
//!   JSON string holding the number's original text (`1e999999` →
//!   `"1e999999"`); see [`number_needs_string`].
//! - nesting deeper than [`MAX_DEPTH`]: invalid.
//! - invalid UTF-8, raw control characters in strings, trailing garbage:
//!   invalid (JSON itself forbids them).

use std::borrow::Cow;

/// Deepest nesting of arrays/objects accepted (the top-level container is
/// depth 1). serde_json's default limit accepts 127; PostgreSQL's limit is
/// its stack depth (far more). 64 leaves room for a caller that embeds the
/// value in a larger document and still parses it with serde_json.
pub const MAX_DEPTH: usize = 64;

/// What the validator found about one document.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The document without leading/trailing JSON whitespace.
    start: usize,
    end: usize,
    /// Rewrites to apply, in ascending, non-overlapping order. Empty for
    /// the overwhelmingly common document: then the output is the input.
    fixes: Vec<Fix>,
}

#[derive(Debug, Clone, Copy)]
enum FixKind {
    /// A 6-byte `\uXXXX` escape replaced by `\ufffd`.
    Replacement,
    /// A number literal written as a JSON string of its text.
    NumberAsString,
}

#[derive(Debug, Clone, Copy)]
struct Fix {
    start: usize,
    end: usize,
    kind: FixKind,
}

/// A top-level member of an object: byte ranges of the key's literal
/// (including its quotes) and of the value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub key: (usize, usize),
    pub value: (usize, usize),
}

/// The document is not storable JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

// Byte classes for the hot loops.
const WS: u8 = 1; // JSON whitespace
const STR_STOP: u8 = 2; // ends a run of plain string bytes: `"`, `\`, controls

// Built at compile time; every index is a constant below 256.
#[allow(clippy::indexing_slicing)]
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = STR_STOP;
        i += 1;
    }
    t[b'"' as usize] = STR_STOP;
    t[b'\\' as usize] = STR_STOP;
    t[b' ' as usize] = WS;
    t[b'\t' as usize] |= WS;
    t[b'\n' as usize] |= WS;
    t[b'\r' as usize] |= WS;
    t
};

/// The class bits of a byte.
#[inline]
fn class(b: u8) -> u8 {
    // A u8 indexes a 256-entry table: never out of bounds.
    #[allow(clippy::indexing_slicing)]
    CLASS[usize::from(b)]
}

#[inline]
fn is_ws(b: u8) -> bool {
    class(b) & WS != 0
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !is_ws(c) {
            break;
        }
        i += 1;
    }
    i
}

/// How a message looks before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Starts (after ASCII whitespace) with `{`, or with `[` followed by
    /// `{`, `[`, `"` or `]`: meant as JSON, so invalid means JsonInvalid.
    Json,
    /// Starts with `[` otherwise (`[INFO] …`, apache's `[Fri Feb 11 …]`):
    /// JSON if it parses, text if not.
    Bracket,
    Text,
}

pub(crate) fn shape(message: &[u8]) -> Shape {
    let mut rest = message.iter().skip_while(|c| c.is_ascii_whitespace());
    match rest.next() {
        Some(b'{') => Shape::Json,
        Some(b'[') => match rest.find(|&&c| !is_ws(c)) {
            Some(b'{' | b'[' | b'"' | b']') => Shape::Json,
            _ => Shape::Bracket,
        },
        _ => Shape::Text,
    }
}

/// Validates `b` as one JSON object or array (surrounded by optional JSON
/// whitespace) under the storage rules. When `members` is given and the
/// document is an object, its top-level members are pushed there.
pub(crate) fn check(b: &[u8], mut members: Option<&mut Vec<Member>>) -> Result<Checked, Invalid> {
    // serde_json and PostgreSQL both require UTF-8; std's validator has a
    // word-at-a-time ASCII fast path.
    if std::str::from_utf8(b).is_err() {
        return Err(Invalid);
    }
    let start = skip_ws(b, 0);
    if !matches!(b.get(start), Some(b'{') | Some(b'[')) {
        return Err(Invalid);
    }
    let mut fixes = Vec::new();
    // Bit d set: the container at depth d+1 is an object.
    let mut objects: u64 = 0;
    let mut depth: usize = 0;
    let mut i = start;
    // Top-level member being read (key range, value start).
    let mut member_key = (0usize, 0usize);
    let mut member_value_start = 0usize;

    'value: loop {
        // Expect a value at i (whitespace already skipped).
        match b.get(i).copied() {
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(Invalid);
                }
                let is_obj = open == b'{';
                if is_obj {
                    objects |= 1 << depth;
                } else {
                    objects &= !(1 << depth);
                }
                depth += 1;
                i = skip_ws(b, i + 1);
                let close = if is_obj { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    depth -= 1;
                    i += 1;
                } else {
                    if is_obj {
                        let key_start = i;
                        i = key_then_colon(b, i, &mut fixes)?;
                        if depth == 1 {
                            member_key = (key_start, key_end(b, key_start, i));
                            member_value_start = i;
                        }
                    }
                    continue 'value;
                }
            }
            Some(b'"') => i = string(b, i, &mut fixes)?,
            Some(b'-' | b'0'..=b'9') => {
                let (end, as_string) = number(b, i)?;
                if as_string {
                    fixes.push(Fix {
                        start: i,
                        end,
                        kind: FixKind::NumberAsString,
                    });
                }
                i = end;
            }
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            _ => return Err(Invalid),
        }

        // A value just ended at i, inside the container at `depth` (a
        // container that closes is itself a value that ends: loop).
        loop {
            let value_end = i;
            i = skip_ws(b, i);
            if depth == 0 {
                if i != b.len() {
                    return Err(Invalid);
                }
                return Ok(Checked {
                    start,
                    end: trim_end(b, b.len()),
                    fixes,
                });
            }
            let in_obj = objects & (1 << (depth - 1)) != 0;
            if depth == 1 && in_obj {
                if let Some(m) = members.as_deref_mut() {
                    m.push(Member {
                        key: member_key,
                        value: (member_value_start, value_end),
                    });
                }
            }
            match b.get(i).copied() {
                Some(b',') => {
                    i = skip_ws(b, i + 1);
                    if in_obj {
                        let key_start = i;
                        i = key_then_colon(b, i, &mut fixes)?;
                        if depth == 1 {
                            member_key = (key_start, key_end(b, key_start, i));
                            member_value_start = i;
                        }
                    }
                    continue 'value;
                }
                Some(b'}') if in_obj => {
                    depth -= 1;
                    i += 1;
                }
                Some(b']') if !in_obj => {
                    depth -= 1;
                    i += 1;
                }
                _ => return Err(Invalid),
            }
        }
    }
}

/// End of the key literal that starts at `key_start`, given `after` (the
/// position after the colon and whitespace): scans back over whitespace and
/// the colon.
fn key_end(b: &[u8], key_start: usize, after: usize) -> usize {
    let mut e = after;
    while e > key_start {
        match b.get(e - 1) {
            Some(&c) if is_ws(c) || c == b':' => e -= 1,
            _ => break,
        }
    }
    e
}

/// Reads `"key"`, whitespace, `:`, whitespace; returns the position of the
/// value.
fn key_then_colon(b: &[u8], i: usize, fixes: &mut Vec<Fix>) -> Result<usize, Invalid> {
    if b.get(i) != Some(&b'"') {
        return Err(Invalid);
    }
    let i = skip_ws(b, string(b, i, fixes)?);
    if b.get(i) != Some(&b':') {
        return Err(Invalid);
    }
    Ok(skip_ws(b, i + 1))
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Invalid> {
    match b.get(i..i + word.len()) {
        Some(w) if w == word => Ok(i + word.len()),
        _ => Err(Invalid),
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let h = b.get(i..i + 4)?;
    let mut v = 0u32;
    for &c in h {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// Whether any byte of `x` is `"`, `\` or below 0x20 (no false
/// negatives: the classic "has zero byte" / "has byte less than" tests).
#[inline]
fn swar_has_stop(x: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let quote = x ^ (LO * u64::from(b'"'));
    let backslash = x ^ (LO * u64::from(b'\\'));
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let control = x.wrapping_sub(LO * 0x20) & !x & HI;
    (zero(quote) | zero(backslash) | control) != 0
}

/// Validates the string literal starting at `b[i] == b'"'`; returns the
/// position after its closing quote. Records the escapes to rewrite.
fn string(b: &[u8], mut i: usize, fixes: &mut Vec<Fix>) -> Result<usize, Invalid> {
    i += 1;
    loop {
        // Plain run (UTF-8 was validated for the whole input): 8 bytes at
        // a time while none of them stops it, then byte by byte.
        while let Some(chunk) = b.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if swar_has_stop(u64::from_le_bytes(w)) {
                break;
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            if class(c) & STR_STOP != 0 {
                break;
            }
            i += 1;
        }
        match b.get(i).copied() {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1).copied() {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let cp = hex4(b, i + 2).ok_or(Invalid)?;
                    match cp {
                        0 => {
                            fixes.push(Fix {
                                start: i,
                                end: i + 6,
                                kind: FixKind::Replacement,
                            });
                            i += 6;
                        }
                        0xD800..=0xDBFF => {
                            let low = if b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u')
                            {
                                hex4(b, i + 8)
                            } else {
                                None
                            };
                            if matches!(low, Some(0xDC00..=0xDFFF)) {
                                i += 12;
                            } else {
                                // Lone high surrogate: what follows is read
                                // on its own on the next turn.
                                fixes.push(Fix {
                                    start: i,
                                    end: i + 6,
                                    kind: FixKind::Replacement,
                                });
                                i += 6;
                            }
                        }
                        0xDC00..=0xDFFF => {
                            fixes.push(Fix {
                                start: i,
                                end: i + 6,
                                kind: FixKind::Replacement,
                            });
                            i += 6;
                        }
                        _ => i += 6,
                    }
                }
                _ => return Err(Invalid),
            },
            // A raw control character, or the end of input.
            _ => return Err(Invalid),
        }
    }
}

/// Validates the number starting at `i`; returns its end and whether it must
/// be stored as a string.
fn number(b: &[u8], mut i: usize) -> Result<(usize, bool), Invalid> {
    let digits = |b: &[u8], mut i: usize| {
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i),
        _ => return Err(Invalid),
    }
    let int_part = b.get(int_start..i).unwrap_or_default();
    let mut frac_part: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let s = i + 1;
        i = digits(b, s);
        if i == s {
            return Err(Invalid);
        }
        frac_part = b.get(s..i).unwrap_or_default();
    }
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let neg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let s = i;
        i = digits(b, s);
        if i == s {
            return Err(Invalid);
        }
        for &c in b.get(s..i).unwrap_or_default() {
            // Saturate well past every limit below.
            exp = (exp * 10 + i64::from(c - b'0')).min(1 << 40);
        }
        if neg {
            exp = -exp;
        }
    }
    Ok((i, number_needs_string(int_part, frac_part, exp)))
}

/// Whether a number with these digits (`int_part` without sign, `frac_part`
/// after the point) and exponent must be stored as a string:
/// - `|exponent| > 1000`: PostgreSQL before 15 rejects exponents beyond
///   ±1000 (`NUMERIC_MAX_PRECISION`) whatever the digits; later versions
///   still reject exponents past `INT_MAX/2`.
/// - display scale (digits after the point once the exponent is applied)
///   above 16383: PostgreSQL's `numeric` stores it in 14 bits
///   ("value overflows numeric format").
/// - decimal magnitude ≥ 308: serde_json reads numbers as `f64` and
///   rejects what overflows it (1.8e308 → "number out of range"); being
///   conservative at 1e308 avoids depending on its last-digit rounding.
///
/// Tiny numbers (1e-400) are fine: serde_json reads them as 0.0.
pub(crate) fn number_needs_string(int_part: &[u8], frac_part: &[u8], exp: i64) -> bool {
    if !(-1000..=1000).contains(&exp) {
        return true;
    }
    let scale = frac_part.len() as i64 - exp;
    if scale > 16383 {
        return true;
    }
    let int_sig = int_part
        .iter()
        .position(|&c| c != b'0')
        .map(|p| int_part.len() - p);
    let magnitude = match int_sig {
        Some(n) => n as i64 - 1 + exp,
        None => match frac_part.iter().position(|&c| c != b'0') {
            Some(p) => -(p as i64) - 1 + exp,
            None => return false, // zero
        },
    };
    magnitude >= 308
}

fn trim_end(b: &[u8], mut end: usize) -> usize {
    while end > 0 {
        match b.get(end - 1) {
            Some(&c) if is_ws(c) => end -= 1,
            _ => break,
        }
    }
    end
}

impl Checked {
    /// Appends the storable text of the checked document: the original
    /// bytes (trimmed of surrounding whitespace) with the rewrites applied.
    pub(crate) fn write(&self, b: &[u8], out: &mut Vec<u8>) {
        let body = b.get(self.start..self.end).unwrap_or_default();
        if self.fixes.is_empty() {
            out.extend_from_slice(body);
            return;
        }
        out.reserve(body.len() + 2 * self.fixes.len());
        let mut at = self.start;
        for f in &self.fixes {
            out.extend_from_slice(b.get(at..f.start).unwrap_or_default());
            match f.kind {
                FixKind::Replacement => out.extend_from_slice(br"\ufffd"),
                FixKind::NumberAsString => {
                    out.push(b'"');
                    out.extend_from_slice(b.get(f.start..f.end).unwrap_or_default());
                    out.push(b'"');
                }
            }
            at = f.end;
        }
        out.extend_from_slice(b.get(at..self.end).unwrap_or_default());
    }

    /// Whether the output differs from the input bytes (trimmed).
    #[cfg(test)]
    pub(crate) fn rewritten(&self) -> bool {
        !self.fixes.is_empty()
    }
}

/// Decodes a string literal `raw` (with its quotes) from a checked
/// document. Unpaired surrogates and `\u0000` become U+FFFD, so the result
/// never holds NUL. `None` only if `raw` is not a checked literal.
pub(crate) fn decode_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let b = inner.as_bytes();
    let mut s = String::with_capacity(inner.len());
    let mut i = 0;
    while i < b.len() {
        let run_end = b
            .get(i..)?
            .iter()
            .position(|&c| c == b'\\')
            .map_or(b.len(), |p| i + p);
        s.push_str(inner.get(i..run_end)?);
        i = run_end;
        if i >= b.len() {
            break;
        }
        let c = match b.get(i + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let cp = hex4(b, i + 2)?;
                if (0xD800..=0xDBFF).contains(&cp)
                    && b.get(i + 6) == Some(&b'\\')
                    && b.get(i + 7) == Some(&b'u')
                {
                    if let Some(lo @ 0xDC00..=0xDFFF) = hex4(b, i + 8) {
                        let c = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        s.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                        i += 12;
                        continue;
                    }
                }
                i += 4; // plus the 2 below
                match char::from_u32(cp) {
                    Some('\0') | None => '\u{FFFD}',
                    Some(c) => c,
                }
            }
            _ => return None,
        };
        s.push(c);
        i += 2;
    }
    Some(Cow::Owned(s))
}

/// Appends `s` as a JSON string literal. NUL becomes U+FFFD (PostgreSQL's
/// `jsonb` rejects `\u0000`); `"`, `\` and control characters are escaped.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let hex = |n: u8| match n & 0xf {
        n @ 0..=9 => b'0' + n,
        n => b'a' + n - 10,
    };
    out.reserve(s.len() + 2);
    out.push(b'"');
    let b = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    loop {
        // Skip 8 plain bytes at a time, then find the next byte to escape.
        while let Some(chunk) = b.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if swar_has_stop(u64::from_le_bytes(w)) {
                break;
            }
            i += 8;
        }
        let Some(&c) = b.get(i) else { break };
        i += 1;
        if class(c) & STR_STOP == 0 {
            continue;
        }
        out.extend_from_slice(b.get(run..i - 1).unwrap_or_default());
        run = i;
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(c >> 4), hex(c)]),
        }
    }
    out.extend_from_slice(b.get(run..).unwrap_or_default());
    out.push(b'"');
}

/// Appends the storable JSON of `message` if it is a valid JSON
/// object/array.
pub(crate) fn derive(message: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    let checked = check(message, None)?;
    checked.write(message, out);
    Ok(())
}
