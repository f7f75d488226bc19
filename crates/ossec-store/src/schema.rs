//! Connecting to the store and its schema: the URL forms, TLS defaults for
//! local servers, the errors a failed connect names, and applying
//! `migrations/` (one schema per dialect) at start.

use std::net::IpAddr;
use std::str::FromStr;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{Result, Store, StoreError};

/// How long a PostgreSQL server may stay silent at connect.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (the SQLite file is created
    /// if missing) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = pg_options(url)?;
            // One connection first, so that a refused connection, an
            // unknown host, a wrong password or a missing database is
            // reported at once and by name; the pool would retry them
            // silently until its timeout.
            let first =
                tokio::time::timeout(CONNECT_TIMEOUT, sqlx::ConnectOptions::connect(&opts)).await;
            match first {
                Ok(Ok(c)) => drop(c),
                Ok(Err(e)) => {
                    return Err(StoreError::Connect {
                        what: redact(url),
                        reason: connect_reason(&e),
                    })
                }
                Err(_) => {
                    return Err(StoreError::Connect {
                        what: redact(url),
                        reason: format!(
                            "no answer within {} s (is the host reachable and the port right?)",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    })
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Connect {
                    what: redact(url),
                    reason: connect_reason(&e),
                })?;
            sqlx::migrate!("../../migrations/postgres")
                .run(&pool)
                .await
                .map_err(StoreError::Migrate)?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Url {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(10));
            let file = opts.get_filename().to_owned();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(StoreError::Connect {
                        what: url.to_owned(),
                        reason: format!(
                            "the directory {} does not exist (create it, or give another path)",
                            dir.display()
                        ),
                    });
                }
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Connect {
                    what: url.to_owned(),
                    reason: match &e {
                        sqlx::Error::Database(d) => format!(
                            "{} ({}: check that the file is writable by this user)",
                            d.message(),
                            file.display()
                        ),
                        _ => connect_reason(&e),
                    },
                })?;
            sqlx::migrate!("../../migrations/sqlite")
                .run(&pool)
                .await
                .map_err(StoreError::Migrate)?;
            Store::Sqlite(pool)
        } else {
            return Err(StoreError::Url {
                url: redact(url),
                reason: "expected postgres://… or sqlite://…".into(),
            });
        };
        Ok(store)
    }
}

/// A connect error in one line, naming the cause and what to check.
fn connect_reason(e: &sqlx::Error) -> String {
    use std::io::ErrorKind;
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => {
                "connection refused (is PostgreSQL running, and listening on that host and port?)"
                    .into()
            }
            ErrorKind::NotFound => format!("{io} (is the socket path right?)"),
            _ if io.to_string().contains("failed to lookup address")
                || io.to_string().contains("Name or service not known") =>
            {
                format!("cannot resolve the host name ({io})")
            }
            _ => io.to_string(),
        },
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("3D000") => format!(
                "{} (create it, e.g. `createdb`, or fix the URL)",
                d.message()
            ),
            Some("28P01") | Some("28000") => {
                format!(
                    "authentication failed: {} (check the user and password in the URL)",
                    d.message()
                )
            }
            _ => d.message().to_owned(),
        },
        sqlx::Error::Tls(t) => format!("TLS failed: {t} (sslmode in the URL?)"),
        sqlx::Error::PoolTimedOut => "no connection within the timeout".into(),
        other => other.to_string(),
    }
}

/// Connection options from a `postgres://` URL. Without an explicit
/// `sslmode` (in the URL or `PGSSLMODE`), a server on a loopback address
/// or a Unix socket is reached without TLS: there it protects nothing and
/// would cost CPU for every byte of COPY data on both sides. Elsewhere the
/// libpq default (`prefer`) stays.
fn pg_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| StoreError::Url {
        url: redact(url),
        reason: e.to_string(),
    })?;
    // sqlx takes `sslmode` and `ssl-mode` in the query string.
    let in_url = url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|kv| matches!(kv.split('=').next(), Some("sslmode" | "ssl-mode")))
    });
    let explicit = in_url || std::env::var_os("PGSSLMODE").is_some();
    if !explicit && is_local_host(opts.get_host()) {
        return Ok(opts.ssl_mode(sqlx::postgres::PgSslMode::Disable));
    }
    Ok(opts)
}

/// Loopback addresses, `localhost` and Unix socket directories.
fn is_local_host(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The file of a `sqlite://FILE` or `sqlite:FILE` URL (query string
/// removed); `None` for other stores and `:memory:`.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let f = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let f = f.split('?').next().unwrap_or(f);
    (f != ":memory:" && !f.is_empty()).then(|| std::path::PathBuf::from(f))
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_servers_need_no_tls() {
        use sqlx::postgres::PgSslMode;
        let mode = |u: &str| format!("{:?}", pg_options(u).unwrap().get_ssl_mode());
        if std::env::var_os("PGSSLMODE").is_none() {
            assert_eq!(
                mode("postgres://u@127.0.0.1:5432/db"),
                format!("{:?}", PgSslMode::Disable)
            );
            assert_eq!(
                mode("postgres://u@localhost/db"),
                format!("{:?}", PgSslMode::Disable)
            );
            assert_eq!(
                mode("postgres://u@[::1]:5432/db"),
                format!("{:?}", PgSslMode::Disable)
            );
            assert_eq!(
                mode("postgres://u@db.example:5432/db"),
                format!("{:?}", PgSslMode::Prefer)
            );
        }
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            format!("{:?}", PgSslMode::Require)
        );
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?application_name=x&ssl-mode=verify-full"),
            format!("{:?}", PgSslMode::VerifyFull)
        );
        assert!(matches!(
            pg_options("postgres://u@h:notaport/db"),
            Err(StoreError::Url { .. })
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
