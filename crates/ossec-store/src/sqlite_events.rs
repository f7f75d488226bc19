//! The SQLite event writer: one INSERT per row inside the batch's
//! transaction (SQLite has no COPY; in one transaction this is fast).

use crate::events::{text_and_raw, DataCounts, EventOptions, EventRow};
use crate::{format_micros, sql, Result};

/// The rows of one batch as INSERTs inside the caller's SQLite transaction.
pub(crate) async fn insert_events_sqlite(
    conn: &mut sqlx::SqliteConnection,
    rows: &[EventRow],
    opts: EventOptions,
) -> Result<DataCounts> {
    let mut counts = DataCounts::default();
    let mut data = Vec::new();
    for r in rows {
        let (location, location_raw) = text_and_raw(&r.location);
        let (message, message_raw) = text_and_raw(&r.message);
        data.clear();
        if opts.data {
            counts.add(ossec_fields::derive(
                r.queue,
                &r.location,
                &r.message,
                &mut data,
            ));
        }
        // The JSON text is UTF-8 by construction; anything else stays NULL.
        let data = (!data.is_empty())
            .then(|| std::str::from_utf8(&data).ok())
            .flatten();
        sqlx::query(
            "INSERT INTO events (received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(format_micros(r.received_at))
        .bind(&*r.agent_id)
        .bind(&*r.agent_name)
        .bind(r.source_ip.to_string())
        .bind(r.transport)
        .bind(String::from_utf8_lossy(&[r.queue]).into_owned())
        .bind(r.queue_name)
        .bind(&*location)
        .bind(&*message)
        .bind(message_raw)
        .bind(location_raw)
        .bind(i64::from(r.global_counter))
        .bind(i64::from(r.local_counter))
        .bind(data)
        .execute(&mut *conn)
        .await
        .map_err(sql("inserting events"))?;
    }
    Ok(counts)
}
