//! The PostgreSQL event writer: rows encoded in binary COPY format and sent
//! in chunks while they are encoded.

use crate::events::{text_and_raw, DataCounts, EventOptions, EventRow};
use crate::{sql, Result, StoreError};

const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// Columns per row in [`COPY_EVENTS`].
const COPY_COLUMNS: i16 = 14;

/// [`COPY_EVENTS`] with the `id` of each row given (reserved beforehand,
/// so that batches written at once keep the spool's order).
const COPY_EVENTS_WITH_ID: &str = "COPY events (id, received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter, data) FROM STDIN WITH (FORMAT binary)";

const COPY_EVENTS: &str = "COPY events (received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter, data) FROM STDIN WITH (FORMAT binary)";

/// The version byte that starts a `jsonb` value in binary format.
const JSONB_VERSION: u8 = 1;

/// One field of a binary COPY row: its length, then its bytes. Fields are
/// bounded by the 64 KiB message limit, far below `i32::MAX`.
fn copy_field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

fn copy_opt_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => copy_field(out, b),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Encodes rows in PostgreSQL's binary COPY format, header and trailer
/// included: no text escaping on our side and no text parsing on the
/// server's, which made the server spend about a third less CPU per row
/// than the text format (docs/benchmarks.md).
pub fn copy_rows(rows: &[EventRow], opts: EventOptions, out: &mut Vec<u8>) -> DataCounts {
    let mut counts = DataCounts::default();
    out.extend_from_slice(COPY_BINARY_HEADER);
    for r in rows {
        copy_row(r, None, opts, &mut counts, out);
    }
    copy_trailer(out);
    counts
}

/// The end of binary COPY data.
fn copy_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// One row of binary COPY data.
fn copy_row(
    r: &EventRow,
    id: Option<i64>,
    opts: EventOptions,
    counts: &mut DataCounts,
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    let (location, location_raw) = text_and_raw(&r.location);
    let (message, message_raw) = text_and_raw(&r.message);
    match id {
        Some(id) => {
            out.extend_from_slice(&(COPY_COLUMNS + 1).to_be_bytes());
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        None => out.extend_from_slice(&COPY_COLUMNS.to_be_bytes()),
    }
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(
        &r.received_at
            .saturating_sub(PG_EPOCH_OFFSET_US)
            .to_be_bytes(),
    );
    copy_field(out, r.agent_id.as_bytes());
    copy_field(out, r.agent_name.as_bytes());
    // The address, written in place behind its length (at most 45 bytes).
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", r.source_ip);
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    copy_field(out, r.transport.as_bytes());
    // The queue character as text; a non-ASCII byte becomes U+FFFD
    // (queue characters are ASCII in every agent).
    let q = [r.queue];
    copy_field(out, text_and_raw(&q).0.as_bytes());
    copy_field(out, r.queue_name.as_bytes());
    copy_field(out, location.as_bytes());
    copy_field(out, message.as_bytes());
    copy_opt_field(out, message_raw);
    copy_opt_field(out, location_raw);
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&i64::from(r.global_counter).to_be_bytes());
    out.extend_from_slice(&4i32.to_be_bytes());
    // The local counter has four digits on the wire: it fits an i32.
    out.extend_from_slice(&(r.local_counter.min(i32::MAX as u32) as i32).to_be_bytes());
    copy_data(r, opts, counts, out);
}

/// The `data` field: the JSON text derived from the message, written in
/// place behind its length and the jsonb version byte, or NULL.
fn copy_data(r: &EventRow, opts: EventOptions, counts: &mut DataCounts, out: &mut Vec<u8>) {
    if !opts.data {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, JSONB_VERSION]);
    let outcome = ossec_fields::derive(r.queue, &r.location, &r.message, out);
    counts.add(outcome);
    let len = out.len() - at - 4;
    match i32::try_from(len) {
        Ok(len) if len > 1 => out[at..at + 4].copy_from_slice(&len.to_be_bytes()),
        _ => {
            out.truncate(at);
            out.extend_from_slice(&(-1i32).to_be_bytes());
        }
    }
}

/// COPY data is sent in pieces of about this size while it is encoded: the
/// server starts on the first rows while later ones are encoded, and no
/// batch-sized buffer is built (and copied again by the driver).
const COPY_CHUNK: usize = 256 * 1024;

/// Writes `rows` with one binary COPY on `conn` (inside the caller's
/// transaction), with each row's `id` when `ids` is given (one per row).
pub(crate) async fn copy_events(
    conn: &mut sqlx::PgConnection,
    rows: &[EventRow],
    ids: Option<&[i64]>,
    opts: EventOptions,
) -> Result<DataCounts> {
    let mut counts = DataCounts::default();
    if rows.is_empty() {
        return Ok(counts);
    }
    if ids.is_some_and(|ids| ids.len() != rows.len()) {
        return Err(StoreError::Limit(format!(
            "{} ids reserved for {} events",
            ids.map_or(0, <[i64]>::len),
            rows.len()
        )));
    }
    let statement = match ids {
        Some(_) => COPY_EVENTS_WITH_ID,
        None => COPY_EVENTS,
    };
    let mut copy = conn
        .copy_in_raw(statement)
        .await
        .map_err(sql("starting COPY"))?;
    // One chunk and the row that crosses its end (grown if a row
    // is larger).
    let mut buf = Vec::with_capacity(2 * COPY_CHUNK);
    buf.extend_from_slice(COPY_BINARY_HEADER);
    let mut sent = Ok(());
    for (i, r) in rows.iter().enumerate() {
        copy_row(
            r,
            ids.and_then(|ids| ids.get(i).copied()),
            opts,
            &mut counts,
            &mut buf,
        );
        if i + 1 == rows.len() {
            copy_trailer(&mut buf);
        }
        if buf.len() >= COPY_CHUNK || i + 1 == rows.len() {
            sent = copy.send(buf.as_slice()).await.map(|_| ());
            if sent.is_err() {
                break;
            }
            buf.clear();
        }
    }
    if let Err(e) = sent {
        let _ = copy.abort("send failed").await;
        return Err(StoreError::Sql {
            what: "sending COPY data",
            cause: e,
        });
    }
    copy.finish().await.map_err(sql("finishing COPY"))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one binary COPY field: `None` for NULL.
    fn field<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = b.split_at(4);
        let len = i32::from_be_bytes(len.try_into().unwrap());
        if len < 0 {
            *b = rest;
            return None;
        }
        let (f, rest) = rest.split_at(len as usize);
        *b = rest;
        Some(f)
    }

    #[test]
    fn copy_rows_binary_layout() {
        let row = EventRow {
            received_at: 946_684_800_000_001, // 2000-01-01 00:00:00.000001 UTC
            agent_id: "001".into(),
            agent_name: "a\tb".into(),
            source_ip: "127.0.0.1".parse().unwrap(),
            transport: "tcp",
            queue: 0,
            queue_name: "localfile",
            location: b"C:\\x".to_vec(),
            message: b"l1\nl2\0".to_vec(),
            global_counter: 4_000_000_000,
            local_counter: 2,
        };
        let json = EventRow {
            queue: b'8',
            queue_name: "syscheck",
            location: b"syscheck".to_vec(),
            message: br#"{"type":"event","data":{"path":"/etc/passwd"}}"#.to_vec(),
            ..row.clone()
        };
        let rows = [row.clone(), row, json];
        let mut out = Vec::new();
        let counts = copy_rows(&rows, EventOptions::default(), &mut out);
        assert_eq!(counts.json, 1);
        let mut b = &out[..];
        assert_eq!(&b[..19], COPY_BINARY_HEADER);
        b = &b[19..];
        for _ in 0..2 {
            assert_eq!(&b[..2], &14i16.to_be_bytes());
            b = &b[2..];
            let mut f = || field(&mut b);
            assert_eq!(f(), Some(&1i64.to_be_bytes()[..]));
            assert_eq!(f(), Some(&b"001"[..]));
            assert_eq!(f(), Some(&b"a\tb"[..]));
            assert_eq!(f(), Some(&b"127.0.0.1"[..]));
            assert_eq!(f(), Some(&b"tcp"[..]));
            // NUL cannot be stored as text: U+FFFD.
            assert_eq!(f(), Some("\u{FFFD}".as_bytes()));
            assert_eq!(f(), Some(&b"localfile"[..]));
            assert_eq!(f(), Some(&b"C:\\x"[..]));
            assert_eq!(f(), Some("l1\nl2\u{FFFD}".as_bytes()));
            assert_eq!(
                f(),
                Some(&b"l1\nl2\0"[..]),
                "message_raw keeps the exact bytes"
            );
            assert_eq!(f(), None, "location_raw is NULL when the text is exact");
            assert_eq!(f(), Some(&4_000_000_000i64.to_be_bytes()[..]));
            assert_eq!(f(), Some(&2i32.to_be_bytes()[..]));
            assert_eq!(f(), None, "a text line without a syslog header has no data");
        }
        // The JSON row: `data` is the jsonb version byte and the JSON text.
        assert_eq!(&b[..2], &14i16.to_be_bytes());
        b = &b[2..];
        for _ in 0..13 {
            field(&mut b);
        }
        let data = field(&mut b).unwrap();
        assert_eq!(data[0], JSONB_VERSION);
        let v: serde_json::Value = serde_json::from_slice(&data[1..]).unwrap();
        assert_eq!(v["data"]["path"], "/etc/passwd");
        assert_eq!(b, &(-1i16).to_be_bytes());

        // Without `data`, no parsing and NULL.
        let mut out = Vec::new();
        let counts = copy_rows(&rows[2..], EventOptions { data: false }, &mut out);
        assert_eq!(counts, DataCounts::default());
        assert_eq!(&out[out.len() - 6..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }
}
