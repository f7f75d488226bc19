//! The deployment files checked against the code, so that they cannot drift:
//! `docs/config.example.toml` (loads, lists every `serve` setting with its
//! real default), `docker-compose.yml` (shape, secrets, no password, settings
//! the binary accepts), `Dockerfile` and `.dockerignore` (non-root runtime with
//! the binary only, a build context that has what the build needs) and
//! `deploy/ossec-collector.service` (command, hardening, stop timeout).
//! No Docker or systemd is needed: these read the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use ossec_collector::config::{read_file, LogFormat, ServeArgs, Settings};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The settings of `ServeArgs` as written in config.rs, except the two that
/// are not file keys (`config`, and the hidden `keys_file` alias).
fn serve_settings() -> BTreeSet<String> {
    let src = read("crates/ossec-collector/src/config.rs");
    let start = src
        .find("pub struct ServeArgs {")
        .expect("ServeArgs in config.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("end of ServeArgs")];
    let fields: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|n| n != "config" && n != "keys_file" && !n.contains(' '))
        .collect();
    assert!(
        fields.len() >= 15 && fields.contains("database_url") && fields.contains("listen"),
        "could not read ServeArgs' fields from config.rs: {fields:?}"
    );
    fields
}

/// `key = value` lines of a TOML file, commented (`# key = value`) or not:
/// (key, line number, commented).
fn setting_lines(text: &str) -> Vec<(String, usize, bool)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        let (commented, t) = match t.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, t),
        };
        let Some((key, _)) = t.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            out.push((key.to_owned(), n + 1, commented));
        }
    }
    out
}

const EXAMPLE: &str = "docs/config.example.toml";

/// The default SQLite store of the example (and of the systemd unit).
const EXAMPLE_SQLITE: &str = "sqlite:///var/lib/ossec-collector/ossec-collector.db";

#[test]
fn config_example_loads_and_resolves() {
    let path = root().join(EXAMPLE);
    read_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let s = ServeArgs {
        config: Some(path),
        ..Default::default()
    }
    .resolve()
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.keys,
        Some(PathBuf::from("/etc/ossec-collector/client.keys"))
    );
    match std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()) {
        None => assert_eq!(s.database_url, EXAMPLE_SQLITE),
        Some(v) => assert_eq!(s.database_url, v),
    }
}

#[test]
fn config_example_lists_every_serve_setting_once() {
    let text = read(EXAMPLE);
    let lines = setting_lines(&text);
    let mut seen = BTreeMap::new();
    for (key, line, _) in &lines {
        if let Some(first) = seen.insert(key.clone(), *line) {
            panic!("{EXAMPLE}: `{key}` on lines {first} and {line}");
        }
    }
    let documented: BTreeSet<String> = seen.keys().cloned().collect();
    let settings = serve_settings();
    let missing: Vec<_> = settings.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&settings).collect();
    assert!(
        missing.is_empty(),
        "{EXAMPLE} does not document the serve settings {missing:?} (add a commented `# key = default` line)"
    );
    assert!(
        unknown.is_empty(),
        "{EXAMPLE} has keys that are not serve settings: {unknown:?}"
    );
}

/// Uncommenting every commented setting must still load, and each shows the
/// real default (except the few whose default is not a fixed value).
#[test]
fn config_example_commented_values_are_the_defaults() {
    let text = read(EXAMPLE);
    let commented: BTreeSet<usize> = setting_lines(&text)
        .into_iter()
        .filter(|(_, _, c)| *c)
        .map(|(_, n, _)| n)
        .collect();
    assert!(commented.len() >= 10, "expected commented defaults");
    let uncommented: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if commented.contains(&(i + 1)) {
                format!("{}\n", l.trim_start().trim_start_matches('#').trim_start())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("all.toml");
    std::fs::write(&f, uncommented).unwrap();
    let s = ServeArgs {
        config: Some(f),
        ..Default::default()
    }
    .resolve()
    .unwrap_or_else(|e| panic!("{EXAMPLE} with every setting uncommented: {e}"));
    let d = Settings::default();
    assert_eq!(s.listen, d.listen, "listen");
    assert_eq!((s.udp, s.tcp), (d.udp, d.tcp), "no_udp / no_tcp");
    assert_eq!(s.verify_counters, d.verify_counters, "verify_counters");
    assert_eq!(s.disconnect_after, d.disconnect_after, "disconnect_after");
    assert_eq!(s.max_connections, d.max_connections, "max_connections");
    assert_eq!(s.tcp_idle_timeout, d.tcp_idle_timeout, "tcp_idle_timeout");
    assert_eq!(s.queue_capacity, d.queue_capacity, "queue_capacity");
    assert_eq!(s.batch_size, d.batch_size, "batch_size");
    assert_eq!(s.flush_interval, d.flush_interval, "flush_interval_ms");
    assert_eq!(s.metrics_listen, d.metrics_listen, "metrics_listen");
    assert_eq!(s.log_format, d.log_format, "log_format");
    assert_eq!(s.shutdown_timeout, d.shutdown_timeout, "shutdown_timeout");
    assert_eq!(
        s.keys_poll_interval, d.keys_poll_interval,
        "keys_poll_interval"
    );
    assert!((1..=64).contains(&s.udp_workers));
    // database_url (set in the example) wins over database_url_file.
    assert!(s.database_url.starts_with("sqlite://") || std::env::var_os("DATABASE_URL").is_some());
}

fn compose() -> Yaml {
    let text = read("docker-compose.yml");
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
        .iter()
        .map(scalar)
        .collect()
}

fn scalar(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A service's `environment:` as a map (mapping or `KEY=value` list).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Hash(h) => h.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Yaml::Array(a) => a
            .iter()
            .map(|e| {
                let e = scalar(e);
                let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Yaml::BadValue => BTreeMap::new(),
        other => panic!("environment: {other:?}"),
    }
}

/// Compose durations as used here: `45s`, `1m30s`, `500ms`.
fn duration(s: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let n: u64 = num.parse().unwrap_or_else(|_| panic!("duration {s}"));
        num.clear();
        total += match unit.as_str() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(60 * n),
            "h" => Duration::from_secs(3600 * n),
            _ => panic!("duration {s}: unit {unit}"),
        };
    }
    if !num.is_empty() {
        total += Duration::from_secs(num.parse().unwrap());
    }
    total
}

#[test]
fn compose_file_shape() {
    let doc = compose();
    let services = &doc["services"];
    let db = &services["db"];
    let collector = &services["collector"];
    assert!(
        !db.is_badvalue() && !collector.is_badvalue(),
        "services db and collector"
    );

    // PostgreSQL: a current major, password from a secret, named volume, pg_isready.
    let image = scalar(&db["image"]);
    let major: u32 = image
        .strip_prefix("postgres:")
        .and_then(|t| t.split(['.', '-']).next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("db image {image}: expected postgres:MAJOR"));
    assert!(major >= 17, "db image {image}: PostgreSQL 17 or newer");
    let db_env = environment(db);
    assert_eq!(
        db_env.get("POSTGRES_PASSWORD_FILE").map(String::as_str),
        Some("/run/secrets/db_password")
    );
    assert!(strings(&db["secrets"]).contains(&"db_password".to_owned()));
    let volume = strings(&db["volumes"])
        .into_iter()
        .find(|v| v.contains(":/var/lib/postgresql"))
        .expect("db data volume");
    let (name, target) = volume.split_once(':').unwrap();
    assert!(
        !doc["volumes"][name].is_badvalue(),
        "db volume {name} is a named volume declared under top-level volumes"
    );
    if major >= 18 {
        // 18+ images keep data in /var/lib/postgresql/MAJOR/docker and refuse
        // a volume on the old /var/lib/postgresql/data.
        assert_eq!(target.trim_end_matches(":rw"), "/var/lib/postgresql");
    }
    let db_health = strings(&db["healthcheck"]["test"]).join(" ");
    assert!(
        db_health.contains("pg_isready"),
        "db healthcheck: {db_health}"
    );

    // The collector: built here, ports, secrets, waits for a healthy db.
    assert!(
        !collector["build"].is_badvalue(),
        "collector is built from the Dockerfile"
    );
    let dockerfile = match &collector["build"] {
        Yaml::Hash(_) => collector["build"]["dockerfile"]
            .as_str()
            .unwrap_or("Dockerfile")
            .to_owned(),
        _ => "Dockerfile".to_owned(),
    };
    assert_eq!(dockerfile, "Dockerfile");
    let ports = strings(&collector["ports"]);
    for p in ["1514:1514/tcp", "1514:1514/udp"] {
        assert!(
            ports.contains(&p.to_owned()),
            "collector ports {ports:?} lack {p}"
        );
    }
    let metrics: Vec<_> = ports.iter().filter(|p| p.contains("9514")).collect();
    assert!(
        !metrics.is_empty() && metrics.iter().all(|p| p.starts_with("127.0.0.1:")),
        "metrics port published on the host's 127.0.0.1 only: {metrics:?}"
    );
    assert_eq!(
        collector["depends_on"]["db"]["condition"].as_str(),
        Some("service_healthy")
    );
    for s in [db, collector] {
        let r = scalar(&s["restart"]);
        assert!(r == "unless-stopped" || r == "always", "restart: {r}");
    }
    let health = strings(&collector["healthcheck"]["test"]);
    assert!(
        health.iter().any(|a| a.ends_with("ossec-collector"))
            && health.contains(&"healthcheck".to_owned()),
        "collector healthcheck uses `ossec-collector healthcheck`: {health:?}"
    );
    let secrets = strings(&collector["secrets"]);
    for s in ["database_url", "client_keys"] {
        assert!(
            secrets.contains(&s.to_owned()),
            "collector secrets {secrets:?} lack {s}"
        );
    }
    for s in ["db_password", "database_url", "client_keys"] {
        let file = scalar(&doc["secrets"][s]["file"]);
        assert!(
            file.starts_with("./secrets/"),
            "secret {s} comes from a file under ./secrets/: {file}"
        );
    }

    // Graceful shutdown fits in the stop timeout.
    let env = environment(collector);
    let shutdown = env
        .get("OSSEC_COLLECTOR_SHUTDOWN_TIMEOUT")
        .map(|s| Duration::from_secs(s.parse().unwrap()))
        .unwrap_or(Settings::default().shutdown_timeout);
    let grace = duration(&scalar(&collector["stop_grace_period"]));
    assert!(
        grace >= shutdown + Duration::from_secs(5),
        "stop_grace_period {grace:?} must exceed the shutdown timeout {shutdown:?}"
    );
}

/// No password or credential URL anywhere in the compose file's values.
#[test]
fn compose_file_has_no_secret() {
    fn walk(y: &Yaml, path: &str, out: &mut Vec<String>) {
        match y {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    let k = scalar(k);
                    let upper = k.to_ascii_uppercase();
                    if path.ends_with(".environment")
                        && ((upper.contains("PASSWORD") && !upper.ends_with("_FILE"))
                            || upper.ends_with("DATABASE_URL"))
                    {
                        out.push(format!("{path}.{k}"));
                    }
                    walk(v, &format!("{path}.{k}"), out);
                }
            }
            Yaml::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            Yaml::String(s) => {
                let creds = s
                    .find("://")
                    .map(|i| &s[i + 3..])
                    .and_then(|rest| rest.split('/').next())
                    .is_some_and(|auth| auth.contains('@') && auth.contains(':'));
                let upper = s.to_ascii_uppercase();
                if creds || (upper.contains("PASSWORD=") && !upper.contains("PASSWORD_FILE=")) {
                    out.push(format!("{path}: {s}"));
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&compose(), "", &mut found);
    assert!(
        found.is_empty(),
        "secrets written in docker-compose.yml: {found:?}"
    );
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Serve(Box<ServeArgs>),
}

/// The collector's command and OSSEC_COLLECTOR_* environment are accepted by
/// `serve` and resolve to what the container needs.
#[test]
fn compose_collector_settings_are_valid() {
    let doc = compose();
    let collector = &doc["services"]["collector"];
    let command = strings(&collector["command"]);
    assert_eq!(command.first().map(String::as_str), Some("serve"));
    assert!(
        command
            .windows(2)
            .any(|w| w[0] == "--keys" && w[1] == "/run/secrets/client_keys"),
        "client.keys given with --keys /run/secrets/client_keys: {command:?}"
    );
    let env = environment(collector);
    let settings = serve_settings();
    // Environment variables as the flags they stand for (clap treats both alike).
    let mut args = vec!["ossec-collector".to_owned()];
    args.extend(command.iter().cloned());
    for (k, v) in &env {
        let Some(name) = k.strip_prefix("OSSEC_COLLECTOR_") else {
            continue;
        };
        let key = name.to_ascii_lowercase();
        assert!(settings.contains(&key), "{k} is not a serve setting");
        args.push(format!("--{}", key.replace('_', "-")));
        args.push(v.clone());
    }
    let Sub::Serve(mut serve) = Cli::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("serve rejects {args:?}: {e}"))
        .command;
    assert_eq!(
        serve.database_url_file.as_deref(),
        Some(Path::new("/run/secrets/database_url")),
        "the database URL comes from the database_url secret"
    );
    assert!(
        serve.database_url.is_none(),
        "no database URL in the compose file"
    );
    // Resolve with the secret's path pointing at a stand-in file.
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database_url");
    std::fs::write(&url_file, "postgres://ossec:pw@db:5432/ossec\n").unwrap();
    serve.database_url_file = Some(url_file);
    let s = serve.resolve().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.database_url, "postgres://ossec:pw@db:5432/ossec");
    assert_eq!(s.keys, Some(PathBuf::from("/run/secrets/client_keys")));
    assert_eq!(
        s.metrics_listen,
        Some("0.0.0.0:9514".parse().unwrap()),
        "inside the container metrics must listen on all interfaces to be published"
    );
    assert_eq!(s.listen.port(), 1514);
    assert!(s.udp && s.tcp);
    assert_eq!(s.log_format, LogFormat::Text);
}

/// Dockerfile instructions with continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        // Comments, also inside a continued instruction, and blank lines.
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (ins, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
                out.push((ins.to_ascii_uppercase(), rest.trim().to_owned()));
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_runtime_is_non_root_with_the_binary_only() {
    let ins = dockerfile();
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build");
    let builder = &ins[froms[0]].1;
    assert!(
        builder.starts_with("rust:")
            && builder.contains("bookworm")
            && builder.ends_with("AS builder"),
        "builder stage: official rust image, Debian 12 like the runtime: {builder}"
    );
    let build_stage = &ins[froms[0]..froms[froms.len() - 1]];
    assert!(
        build_stage
            .iter()
            .any(|(i, r)| i == "RUN"
                && r.contains("cargo build --release --locked -p ossec-collector")),
        "the builder builds the locked release binary"
    );

    let runtime = &ins[*froms.last().unwrap()..];
    let users: Vec<&String> = runtime
        .iter()
        .filter(|(i, _)| i == "USER")
        .map(|(_, r)| r)
        .collect();
    let user = users.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "runtime USER must not be root: {user}"
    );
    let copies: Vec<&String> = runtime
        .iter()
        .filter(|(i, _)| i == "COPY" || i == "ADD")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "the runtime copies the binary only: {copies:?}"
    );
    let parts: Vec<&str> = copies[0].split_whitespace().collect();
    assert!(
        parts.contains(&"--from=builder")
            && parts[parts.len() - 2].ends_with("/ossec-collector")
            && parts[parts.len() - 1] == "/usr/local/bin/ossec-collector",
        "COPY --from=builder …/ossec-collector /usr/local/bin/ossec-collector: {}",
        copies[0]
    );
    let exposed: BTreeSet<&str> = runtime
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, r)| r.split_whitespace())
        .collect();
    assert!(
        exposed.contains("1514/tcp") && exposed.contains("1514/udp"),
        "EXPOSE 1514/tcp 1514/udp: {exposed:?}"
    );
    let health = runtime
        .iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .map(|(_, r)| r.clone())
        .expect("a HEALTHCHECK");
    assert!(health.contains("ossec-collector") && health.contains("\"healthcheck\""));
    let entry = runtime
        .iter()
        .find(|(i, _)| i == "ENTRYPOINT")
        .map(|(_, r)| r.clone())
        .expect("an ENTRYPOINT");
    assert!(entry.contains("/usr/local/bin/ossec-collector"), "{entry}");
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The allow-list build context holds everything the release build reads:
/// every workspace member, and every file embedded by `sqlx::migrate!` or
/// `include_str!`/`include_bytes!` in non-test code; never secrets or target.
#[test]
fn dockerignore_context_has_what_the_build_needs() {
    let text = read(".dockerignore");
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "an allow-list: starts with `*`");
    let allowed: Vec<String> = rules
        .iter()
        .filter_map(|r| r.strip_prefix('!'))
        .map(|r| r.trim_matches('/').to_owned())
        .collect();
    for never in ["secrets", "target", ".git"] {
        assert!(
            rules.iter().any(|r| r.trim_end_matches('/') == never),
            ".dockerignore must exclude {never}"
        );
        assert!(!allowed
            .iter()
            .any(|a| a == never || a.starts_with(&format!("{never}/"))));
    }
    let root = root();
    let in_context = |p: &Path| {
        let rel = p
            .strip_prefix(&root)
            .unwrap_or_else(|_| panic!("{} outside the repository", p.display()));
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        allowed.iter().any(|a| *a == first || rel == Path::new(a))
    };
    for f in ["Cargo.toml", "Cargo.lock"] {
        assert!(in_context(&root.join(f)), "{f} in the build context");
    }
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    for m in members {
        let m = root.join(m.as_str().unwrap());
        assert!(
            in_context(&m),
            "workspace member {} not in the build context",
            m.display()
        );
    }
    // Files the compiler embeds, from the crates' non-test sources.
    let mut embedded = Vec::new();
    for m in members {
        let crate_dir = root.join(m.as_str().unwrap());
        let mut stack = vec![crate_dir.join("src")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let src = std::fs::read_to_string(&p).unwrap();
                for (mac, base) in [
                    ("migrate!(\"", crate_dir.clone()),
                    ("include_str!(\"", p.parent().unwrap().to_owned()),
                    ("include_bytes!(\"", p.parent().unwrap().to_owned()),
                ] {
                    for (i, _) in src.match_indices(mac) {
                        let arg = &src[i + mac.len()..];
                        let arg = &arg[..arg.find('"').unwrap()];
                        embedded.push(normalize(&base.join(arg)));
                    }
                }
            }
        }
    }
    assert!(
        embedded.iter().any(|p| p.ends_with("migrations/postgres")),
        "expected sqlx::migrate! of migrations/postgres, found {embedded:?}"
    );
    for p in &embedded {
        assert!(p.exists(), "{} is embedded but does not exist", p.display());
        assert!(
            in_context(p),
            "{} is embedded but not in the build context",
            p.display()
        );
    }
}

/// `key=value` settings of a systemd unit (the last one wins, as in systemd,
/// except that repeated keys are all kept).
fn unit() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("deploy/ossec-collector.service").lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') || t.starts_with('[') {
            continue;
        }
        let (k, v) = t.split_once('=').unwrap_or_else(|| panic!("unit line {t}"));
        out.entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

#[test]
fn systemd_unit() {
    let u = unit();
    let one = |k: &str| -> String {
        u.get(k)
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_else(|| panic!("the unit sets {k}="))
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/ossec-collector serve --config /etc/ossec-collector/config.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("User"), "ossec-collector");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("LimitNOFILE"), "65536");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("StateDirectory"), "ossec-collector");
    assert_eq!(one("WorkingDirectory"), "/var/lib/ossec-collector");
    // Port 1514 is above 1024: no capability at all.
    assert!(u
        .get("AmbientCapabilities")
        .is_none_or(|v| v.iter().all(String::is_empty)));
    assert_eq!(one("CapabilityBoundingSet"), "");
    let stop = duration(&one("TimeoutStopSec"));
    assert!(
        stop >= Settings::default().shutdown_timeout + Duration::from_secs(5),
        "TimeoutStopSec {stop:?} must exceed the default --shutdown-timeout"
    );
    // The example's default SQLite store is in the writable state directory.
    let db = EXAMPLE_SQLITE.strip_prefix("sqlite://").unwrap();
    assert!(db.starts_with("/var/lib/ossec-collector/"));
    assert!(read(EXAMPLE).contains(EXAMPLE_SQLITE));
}

/// The commands that the Dockerfile, the compose file and the docs run exist
/// with the flags they use (exit 0 for --help, and the healthcheck answers
/// 0 or 1, not a usage error).
#[test]
fn documented_commands_exist() {
    let bin = env!("CARGO_BIN_EXE_ossec-collector");
    for args in [
        &["serve", "--help"][..],
        &["healthcheck", "--help"],
        &["agents", "reset-counters", "--help"],
        &["keys", "check", "--help"],
    ] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "ossec-collector {args:?}: {out:?}");
    }
    let help = String::from_utf8(
        Command::new(bin)
            .args(["serve", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for flag in [
        "--config",
        "--keys",
        "--database-url-file",
        "--metrics-listen",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
    // The compose healthcheck, against a closed port: unhealthy (1), not a usage error (2).
    let doc = compose();
    let mut health = strings(&doc["services"]["collector"]["healthcheck"]["test"]);
    assert_eq!(health.remove(0), "CMD");
    assert!(health.remove(0).ends_with("ossec-collector"));
    for a in health.iter_mut() {
        if a.starts_with("http://") {
            *a = "http://127.0.0.1:1/health".into();
        }
    }
    let out = Command::new(bin).args(&health).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "ossec-collector {health:?}: {out:?}"
    );
}

/// `-c name=value` pairs of a command line.
fn settings(words: &[String]) -> std::collections::BTreeSet<String> {
    words
        .windows(2)
        .filter(|w| w[0] == "-c")
        .map(|w| w[1].clone())
        .collect()
}

/// The compose file's PostgreSQL settings are the ones the benchmark runs
/// its own cluster with (`PG_TUNING` in crates/ossec-bench/src/pg.rs), so
/// that docs/benchmarks.md measures the deployment we ship.
#[test]
fn compose_postgres_settings_are_the_benchmarks() {
    let command = strings(&compose()["services"]["db"]["command"]);
    assert_eq!(command.first().map(String::as_str), Some("postgres"));
    let compose = settings(&command);
    assert!(
        compose.iter().any(|s| s.starts_with("shared_buffers=")),
        "{compose:?}"
    );
    let bench = read("crates/ossec-bench/src/pg.rs");
    let start = bench
        .find("PG_TUNING: &[&str] = &[")
        .expect("PG_TUNING in crates/ossec-bench/src/pg.rs")
        + "PG_TUNING: &[&str] = &[".len();
    let end = start + bench[start..].find("];").expect("end of PG_TUNING");
    let mut words = Vec::new();
    for s in bench[start..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let s = s.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
        words.push("-c".to_string());
        words.push(s.expect("PG_TUNING holds string literals").to_string());
    }
    assert_eq!(settings(&words), compose);
}
