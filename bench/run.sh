#!/usr/bin/env bash
# End-to-end benchmark of ossec-collector on PostgreSQL, driven by ossec-agent-sim.
#
#   bench/run.sh [--scenario throughput|fleet|udp|smoke|all] [--duration S]
#                [--no-build] [--doc FILE|none] [--perf] [--keep] [--wait-idle]
#                [--pg-setup SQL] [--pg own|server]
#   bench/run.sh --scenario custom [--agents N] [options] -- SIMULATOR OPTIONS
#   bench/run.sh --render target/bench/<time> [--scenario S]   (rewrite docs from saved results)
#
# For every case: builds the release binaries, creates a fresh PostgreSQL
# database, writes client.keys with the simulator, starts `ossec-collector
# serve` (--verify-counters true, metrics on a free port), runs the simulator
# with --stamp, and measures what reached the database:
#   * the sustained rate of committed events (max(id) of `events`, sampled
#     every 100 ms; steady-state window, not sent/duration),
#   * loss per transport = sent - stored, after the queue has drained (the
#     row count unchanged for 2 s),
#   * latency send -> row visible, p50/p99 (every 50th row, polled every 100 ms:
#     visible_time - stamp),
#   * collector CPU (utime+stime from /proc) and peak RSS (VmHWM),
# and writes the results with the machine description into docs/benchmarks.md
# (one section per scenario, replaced on every run). Raw results (JSON, logs,
# perf reports) go to target/bench/<timestamp>/.
#
# Scenarios:
#   throughput  100 TCP agents, as fast as possible, 60 s (goal >= 100,000 events/s, 0 lost):
#               pre-sealed events at zlib level 9 like real agents (the simulator takes
#               almost no CPU), a live simulator at level 1, then PostgreSQL alone (the
#               ceiling for these rows); with --pg own also pre-sealed on the machine's server
#   fleet       10,000 TCP agents from 127.1.0.0/16, 20 s keepalives, 1 event/s each
#               (pre-sealed), 60 s (goal: every ACK within 1 s, 0 reconnects; RSS per agent)
#   udp         1,000 UDP agents, --eps stepped up (30 s steps, pre-sealed): highest rate
#               without loss, loss curve above
#   smoke       10 TCP + 10 UDP agents for 5 s, then 4 pre-sealed TCP agents and PostgreSQL
#               alone; exits non-zero if TCP loses anything, an ACK does not decode, an agent
#               cannot complete its handshake, the summary is missing or a step does not run.
#               It never fails on speed. Does not write docs unless --doc is given.
#   all         throughput, fleet, udp (not smoke)
#   custom      --agents N (default 100) agents with the simulator options after --,
#               e.g. `-- --transport tcp --eps 10000 --duration 30`; prints the JSON result
#
# --perf records the collector and its PostgreSQL backends for 10 s mid-run (throughput);
# --wait-idle waits (at most 10 min) before each case until other processes use < 10 % of
# the machine, and runs a case again (3 times at most) when they used more meanwhile;
# --pg-setup runs SQL in each fresh database after the migrations (experiments, e.g.
# "ALTER TABLE events ALTER COLUMN message SET STORAGE EXTERNAL"); --keep keeps the
# databases. BENCH_SIM_ARGS and BENCH_COL_ARGS (environment) are appended to every
# simulator and collector command (experiments, e.g. BENCH_COL_ARGS="--store-writers 1").
#
# PostgreSQL: with --pg own (the default but for custom) the script
# starts a PostgreSQL cluster of its own for the run (initdb in target/bench/<time>/pgdata,
# a free port from 5433, the settings docker-compose.yml gives its database: see PG_TUNING
# below), so the figures are those of the deployment we ship, whatever the machine's
# server is set to; it is stopped and removed at the end. The throughput scenario also
# runs its pre-sealed case and PostgreSQL alone on the server given by PGHOST/PGPORT,
# as it is configured, for comparison. With --pg server (the default for custom)
# everything runs on PGHOST/PGPORT/PGUSER/PGPASSWORD (default 127.0.0.1:5432,
# postgres); the user must be allowed to create databases. Needs psql, createdb, dropdb,
# jq (and initdb, pg_ctl for --pg own); perf for --perf.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIO=all
DURATION=""
BUILD=1
DOC=default
PERF=0
KEEP=0
AGENTS=100
RENDER=""
CUSTOM_ARGS=()
WAIT_IDLE=0
PG_SETUP=""
PG_MODE=default

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --scenario) SCENARIO=${2:?--scenario needs a value}; shift 2 ;;
        --scenario=*) SCENARIO=${1#*=}; shift ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --doc) DOC=${2:?--doc needs FILE or none}; shift 2 ;;
        --doc=*) DOC=${1#*=}; shift ;;
        --perf) PERF=1; shift ;;
        --keep) KEEP=1; shift ;;
        --wait-idle) WAIT_IDLE=1; shift ;;
        --pg-setup) PG_SETUP=${2:?--pg-setup needs SQL}; shift 2 ;;
        --pg) PG_MODE=${2:?--pg needs own or server}; shift 2 ;;
        --pg=*) PG_MODE=${1#*=}; shift ;;
        --agents) AGENTS=${2:?--agents needs a number}; shift 2 ;;
        --render) RENDER=${2:?--render needs a results directory}; shift 2 ;;
        --) shift; CUSTOM_ARGS=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$SCENARIO" in throughput|fleet|udp|smoke|all|custom) ;; *) echo "unknown scenario: $SCENARIO" >&2; exit 2 ;; esac
if [ "$SCENARIO" = custom ] && [ "${#CUSTOM_ARGS[@]}" = 0 ]; then
    echo "--scenario custom needs simulator options after --, e.g. -- --eps 10000 --duration 30" >&2; exit 2
fi
if [ -n "$DURATION" ] && ! [[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "--duration must be a number of seconds" >&2; exit 2
fi
case "$PG_MODE" in
    default) case "$SCENARIO" in custom) PG_MODE=server ;; *) PG_MODE=own ;; esac ;;
    own|server) ;;
    *) echo "--pg must be own or server" >&2; exit 2 ;;
esac
if [ "$DOC" = default ]; then
    case "$SCENARIO" in smoke|custom) DOC=none ;; *) DOC="$ROOT/docs/benchmarks.md" ;; esac
fi

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
PG_AUTH=$PGUSER
if [ -n "${PGPASSWORD:-}" ]; then PG_AUTH="$PGUSER:$PGPASSWORD"; fi

log() { echo "[bench $(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
for t in psql createdb dropdb jq; do command -v "$t" >/dev/null || die "$t is required"; done
if [ "$PERF" = 1 ]; then command -v perf >/dev/null || die "--perf needs perf"; fi

SIM="$ROOT/target/release/ossec-agent-sim"
COL="$ROOT/target/release/ossec-collector"
CLK=$(getconf CLK_TCK)
now_ms() { date +%s%3N; }
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- crates migrations Cargo.lock 2>/dev/null; then
    COMMIT="$COMMIT+local changes"
fi

if [ -n "$RENDER" ]; then
    OUT=$(cd "$RENDER" && pwd) || die "no results directory $RENDER"
else
OUT="$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked -p ossec-collector -p ossec-agent-sim >&2) \
        || (cd "$ROOT" && cargo build --release -p ossec-collector -p ossec-agent-sim >&2)
fi
[ -x "$SIM" ] && [ -x "$COL" ] || die "missing $SIM or $COL (build them or drop --no-build)"
# Run (and profile) copies: a concurrent cargo build must not replace the
# binaries under a running benchmark or under perf's symbol lookup.
mkdir -p "$OUT/bin"
cp "$SIM" "$COL" "$OUT/bin/"
SIM="$OUT/bin/ossec-agent-sim"
COL="$OUT/bin/ossec-collector"
SERVER_OK=0
if psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then SERVER_OK=1
elif [ "$PG_MODE" = server ]; then die "cannot connect to PostgreSQL at $PGHOST:$PGPORT as $PGUSER"
else log "no PostgreSQL server at $PGHOST:$PGPORT: only our own cluster is measured"
fi
fi

# The settings docker-compose.yml gives its PostgreSQL (a test keeps the two
# equal): larger shared and WAL buffers and rare checkpoints for a store that
# is written all the time. With the Debian defaults (128 MB shared buffers, 4 MB
# of WAL buffers, 1 GB max_wal_size, so a checkpoint every ~10 s at this rate)
# COPY backends spent a fifth of their time waiting on WAL writes.
PG_TUNING=(-c shared_buffers=1GB -c wal_buffers=64MB -c max_wal_size=8GB -c min_wal_size=1GB
           -c checkpoint_timeout=15min)
# BENCH_PG_ARGS (environment): more settings for our cluster, after these
# (experiments, e.g. BENCH_PG_ARGS="-c shared_buffers=256MB").
read -r -a _extra <<<"${BENCH_PG_ARGS:-}"
PG_TUNING+=("${_extra[@]}")
SERVER_PGHOST=$PGHOST SERVER_PGPORT=$PGPORT SERVER_PGUSER=$PGUSER SERVER_PG_AUTH=$PG_AUTH
OWN_PGDATA=""
OWN_PGPORT=""
# Runs a PostgreSQL command as the postgres user when we are root (the server
# refuses to run as root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin() {
    local d
    d=$(pg_config --bindir 2>/dev/null || true)
    [ -x "$d/initdb" ] || d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    echo "$d"
}
start_own_pg() {
    local bin port p
    bin=$(pg_bin)
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] || die "--pg own needs initdb and pg_ctl (PostgreSQL server binaries)"
    OWN_PGDATA="$OUT/pgdata"
    mkdir -p "$OWN_PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$OUT" "$OWN_PGDATA"
    as_pg "$bin/initdb" -D "$OWN_PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$OUT/initdb.log" 2>&1 \
        || die "initdb failed: $OUT/initdb.log"
    port=""
    for p in $(seq 5433 5499); do
        if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
    done
    [ -n "$port" ] || die "no free port in 5433-5499 for our PostgreSQL"
    as_pg "$bin/pg_ctl" -D "$OWN_PGDATA" -l "$OUT/pg.log" -w -t 60 \
        -o "-p $port -k $OWN_PGDATA -c listen_addresses=127.0.0.1 ${PG_TUNING[*]}" start >/dev/null \
        || die "our PostgreSQL did not start: $OUT/pg.log"
    OWN_PGPORT=$port
    use_own_pg
    log "PostgreSQL of our own on 127.0.0.1:$port (${PG_TUNING[*]})"
}
stop_own_pg() {
    [ -n "$OWN_PGDATA" ] || return 0
    as_pg "$(pg_bin)/pg_ctl" -D "$OWN_PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    [ "$KEEP" = 1 ] || rm -rf "$OWN_PGDATA"
    OWN_PGDATA=""
}
use_own_pg() { export PGHOST=127.0.0.1 PGPORT=$OWN_PGPORT PGUSER=postgres; PG_AUTH=postgres; PG_LABEL="ours"; }
use_server_pg() { export PGHOST=$SERVER_PGHOST PGPORT=$SERVER_PGPORT PGUSER=$SERVER_PGUSER; PG_AUTH=$SERVER_PG_AUTH; PG_LABEL="server"; }
PG_LABEL="server"

# ---------------------------------------------------------------- helpers

COL_PID=""; MON_PID=""; DB=""; PERF_PID=""; SIM_PID=""
cleanup() {
    if [ -n "$SIM_PID" ]; then kill -INT "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=""; fi
    if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; fi
    if [ -n "$MON_PID" ]; then kill "$MON_PID" 2>/dev/null || true; wait "$MON_PID" 2>/dev/null || true; MON_PID=""; fi
    if [ -n "$COL_PID" ]; then
        kill -TERM "$COL_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$COL_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$COL_PID" 2>/dev/null || true
        wait "$COL_PID" 2>/dev/null || true
        COL_PID=""
    fi
    if [ -n "$DB" ] && [ "$KEEP" = 0 ]; then dropdb --if-exists "$DB" >/dev/null 2>&1 || true; fi
    DB=""
}
trap 'cleanup; stop_own_pg' EXIT
trap 'exit 130' INT TERM
if [ -z "$RENDER" ] && [ "$PG_MODE" = own ]; then start_own_pg; fi

q() { psql -d "$DB" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
# utime+stime of a process, in clock ticks.
ticks() { cut -d')' -f2- "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# Busy and total jiffies of the whole machine.
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
# All PostgreSQL processes: the live ones, plus what exited children (backends,
# autovacuum workers) left in their postmaster's cutime+cstime (every cluster's).
pg_ticks() {
    local s=0 p ppid
    for p in $(pgrep -x postgres 2>/dev/null || true); do
        s=$((s + $(ticks "$p" 2>/dev/null || echo 0)))
        ppid=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || echo 1)
        if [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" != postgres ]; then
            s=$((s + $(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null | awk '{print $14 + $15}' || echo 0)))
        fi
    done
    echo "$s"
}
udp_rcvbuf_errors() { awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp; }
metric() { # metric NAME [FORMAT]: sum of a Prometheus counter/gauge (all label sets)
    [ -n "${METRICS:-}" ] || { echo 0; return; }
    curl -fsS "http://$METRICS/metrics" 2>/dev/null | awk -v m="$1" -v fmt="${2:-%d}" \
        '$1 ~ "^"m"({|$)" {s += $2} END {printf fmt "\n", s}'
}

# Waits until the machine is idle (< 10 % busy over 3 s), at most 10 minutes.
wait_idle() {
    local i a b c d busy
    for i in $(seq 1 200); do
        read -r a b < <(machine_ticks); sleep 3; read -r c d < <(machine_ticks)
        busy=$(( (c - a) * 100 / ((d - b) > 0 ? (d - b) : 1) ))
        [ "$busy" -lt 10 ] && return 0
        [ "$i" = 1 ] && log "waiting for the machine to become idle (now $busy % busy)"
    done
    log "the machine did not become idle; running anyway"
}

machine_json() {
    local model mem pgv
    model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    pgv=$(psql -d postgres -XAtqc 'show server_version')
    pgv="$pgv ($( [ "$PG_LABEL" = ours ] && echo "a cluster of the benchmark's own, as docker-compose.yml sets it up" || echo "the machine's server as configured"): $(psql -d postgres -XAtqc "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'wal_buffers', 'max_wal_size', 'checkpoint_timeout', 'synchronous_commit')"))"
    jq -n --arg nproc "$(nproc)" --arg model "$model" --arg mem "$mem" --arg pg "$pgv" \
        --arg kernel "$(uname -r)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
        --arg commit "$COMMIT" \
        --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
        '{nproc: ($nproc|tonumber), cpu: $model, ram: $mem, postgresql: $pg, kernel: $kernel,
          loadavg_before: $load, commit: $commit, date: $date}'
}

# run_case NAME AGENTS "COLLECTOR ARGS" SIM ARGS...
# Runs one simulation against a fresh collector and database; writes $OUT/NAME.json.
# With --wait-idle, a case during which other processes used more than 0.15
# of a core on average is run again (at most 3 times in all).
run_case() {
    local attempt best="" others
    for attempt in 1 2 3; do
        run_case_once "$@"
        [ "$WAIT_IDLE" = 1 ] || return 0
        others=$(jq -r '(.others_cpu_s // 0) / (.wall_s // 1)' "$OUT/$1.json")
        # Keep the least disturbed attempt.
        if [ -z "$best" ] || awk -v a="$others" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$others
            rm -rf "$OUT/$1.best"; cp -r "$OUT/$1" "$OUT/$1.best"; cp "$OUT/$1.json" "$OUT/$1.best.json"
        fi
        if awk -v a="$others" 'BEGIN { exit !(a <= 0.15) }'; then break; fi
        log "$1: other processes used $(jq -r .others_cpu_s "$OUT/$1.json") s of CPU during the run (attempt $attempt of 3)"
        [ "$attempt" = 3 ] || wait_idle
    done
    rm -rf "$OUT/$1"; mv "$OUT/$1.best" "$OUT/$1"; mv "$OUT/$1.best.json" "$OUT/$1.json"
}

run_case_once() {
    local name=$1 agents=$2 col_args=$3; shift 3
    local work="$OUT/$name"
    mkdir -p "$work"
    DB="ossec_bench_${name//[^a-z0-9]/_}_$$"
    dropdb --if-exists "$DB" >/dev/null 2>&1 || true
    createdb "$DB" || die "createdb $DB failed"
    "$SIM" --generate-keys "$agents" --write-keys "$work/client.keys" --keys-only --seed 1 2>/dev/null

    # shellcheck disable=SC2086
    "$COL" serve --listen 127.0.0.1:0 --keys "$work/client.keys" \
        --database-url "postgres://$PG_AUTH@$PGHOST:$PGPORT/$DB" \
        --verify-counters true --metrics-listen 127.0.0.1:0 --log-format json $col_args ${BENCH_COL_ARGS:-} \
        >"$work/collector.log" 2>&1 &
    COL_PID=$!
    local ready="" i
    for i in $(seq 1 600); do
        ready=$(grep -m1 '"ossec-collector ready' "$work/collector.log" 2>/dev/null || true)
        [ -n "$ready" ] && break
        kill -0 "$COL_PID" 2>/dev/null || { cat "$work/collector.log" >&2; die "the collector exited"; }
        sleep 0.1
    done
    [ -n "$ready" ] || die "the collector did not become ready in 60 s"
    local addr
    addr=$(jq -r '.fields.tcp // .fields.udp' <<<"$ready")
    METRICS=$(jq -r '.fields.metrics' <<<"$ready")
    command -v curl >/dev/null || METRICS=""

    if [ -n "$PG_SETUP" ]; then q "$PG_SETUP" >/dev/null || die "--pg-setup failed"; fi
    if [ "$WAIT_IDLE" = 1 ]; then wait_idle; fi

    # Sampling tables and the monitor: every 100 ms, the newest id (rate) and
    # when every 50th new row became visible; after the run its latency is
    # that time minus the stamp in its message (reading messages during the
    # run cost PostgreSQL 15 % of a core). Batches may commit out of id order
    # (--store-writers > 1): the sampling point stops at the first sampled id
    # not yet visible and waits for it (at most 10 s, then skips).
    q "CREATE UNLOGGED TABLE bench_state (last_id bigint NOT NULL, moved_ms bigint NOT NULL);
       INSERT INTO bench_state VALUES (0, 0);
       CREATE UNLOGGED TABLE bench_lat (id bigint PRIMARY KEY, seen_us bigint NOT NULL, transport text, lat_us bigint);
       CREATE UNLOGGED TABLE bench_rate (t_ms bigint, max_id bigint);" >/dev/null
    # The sampled ids are looked up by primary key (never a scan of `events`,
    # which would cost more than the collector's own writes), and without
    # JIT (compiling this query 10 times a second would cost a core). It is
    # planned anew every time: a plan prepared while `events` is empty scans
    # the whole table once it has millions of rows.
    cat >"$work/monitor.sql" <<'SQL'
SET jit = off;
WITH s AS (SELECT last_id, moved_ms, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms FROM bench_state),
m AS (SELECT coalesce(max(id), 0) AS max_id FROM events),
ids AS (SELECT g AS id FROM s, m, generate_series((s.last_id / 50 + 1) * 50, least(m.max_id, s.last_id + 5000000), 50) g),
found AS (SELECT e.id FROM events e WHERE e.id = ANY (ARRAY(SELECT id FROM ids))),
lat AS (
    INSERT INTO bench_lat (id, seen_us)
    SELECT f.id, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
    FROM found f
    ON CONFLICT (id) DO NOTHING
    RETURNING 1),
gap AS (SELECT min(id) AS first_missing FROM ids WHERE id NOT IN (SELECT id FROM found)),
r AS (INSERT INTO bench_rate SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint, max_id FROM m RETURNING 1),
nxt AS (SELECT CASE WHEN gap.first_missing IS NULL THEN least(m.max_id, s.last_id + 5000000)
                    WHEN s.now_ms - s.moved_ms > 10000 THEN m.max_id
                    ELSE gap.first_missing - 1 END AS last_id,
               s.now_ms, s.last_id AS old, gap.first_missing IS NULL AS caught_up
        FROM s, m, gap),
u AS (UPDATE bench_state SET last_id = nxt.last_id,
             moved_ms = CASE WHEN nxt.caught_up OR nxt.last_id > nxt.old THEN nxt.now_ms ELSE bench_state.moved_ms END
      FROM nxt RETURNING 1)
SELECT (SELECT count(*) FROM lat) + (SELECT count(*) FROM r) + (SELECT count(*) FROM u);
\watch 0.1
SQL
    sleep 1
    local idle_rss
    idle_rss=$(status_kb "$COL_PID" VmRSS)
    psql -d "$DB" -XAtq -f "$work/monitor.sql" >/dev/null 2>"$work/monitor.err" &
    MON_PID=$!

    log "$name: $agents agents -> $addr: ossec-agent-sim $*"
    local sim_rc=0 timecmd=()
    if [ -x /usr/bin/time ]; then timecmd=(/usr/bin/time -f '%U %S %M' -o "$work/sim.time"); fi
    ${timecmd[@]+"${timecmd[@]}"} "$SIM" --server "$addr" --keys "$work/client.keys" --agents "$agents" --stamp \
        --progress 5 "$@" ${BENCH_SIM_ARGS:-} >"$work/summary.json" 2>"$work/sim.log" &
    SIM_PID=$!
    # With --preseal the simulator first seals its events (the collector is
    # idle meanwhile); measuring starts when it starts sending.
    if [[ " $* ${BENCH_SIM_ARGS:-} " =~ \ --preseal[=\ ] ]]; then
        while kill -0 "$SIM_PID" 2>/dev/null && ! grep -q '^pre-sealed .*; sending' "$work/sim.log" 2>/dev/null; do
            sleep 0.1
        done
        log "$name: $(grep -m1 '^pre-sealed' "$work/sim.log" || echo 'the simulator ended before sending')"
    fi
    local c0 m0 pg0 rb0 t0
    c0=$(ticks "$COL_PID"); read -r mb0 mt0 < <(machine_ticks); pg0=$(pg_ticks); rb0=$(udp_rcvbuf_errors)
    t0=$(now_ms)
    if [ "$PERF" = 1 ] && [ -n "${PERF_AT:-}" ]; then
        # The collector, and the PostgreSQL backends serving it.
        ( sleep "$PERF_AT"
          pg_pids=$(q "SELECT string_agg(pid::text, ',') FROM pg_stat_activity
                       WHERE datname = current_database() AND application_name <> 'psql'" || true)
          if [ -n "$pg_pids" ]; then
              perf record -g -o "$work/perf-pg.data" -p "$pg_pids" -- sleep 10 >"$work/perf-pg.log" 2>&1 &
          fi
          perf record -g -o "$work/perf.data" -p "$COL_PID" -- sleep 10
          wait ) >"$work/perf.log" 2>&1 &
        PERF_PID=$!
    fi
    wait "$SIM_PID" || sim_rc=$?
    SIM_PID=""
    local t1; t1=$(now_ms)
    if [ -n "$PERF_PID" ]; then
        wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""
        perf report -i "$work/perf.data" --stdio 2>/dev/null | head -60 >"$work/perf-report.txt" || true
        perf report -i "$work/perf.data" --stdio --no-children -g none 2>/dev/null \
            | grep -E '^ +[0-9.]+%' | head -40 >"$work/perf-self.txt" || true
        if [ -f "$work/perf-pg.data" ]; then
            perf report -i "$work/perf-pg.data" --stdio --no-children -g none 2>/dev/null \
                | grep -E '^ +[0-9.]+%' | head -40 >"$work/perf-pg-self.txt" || true
        fi
    fi

    # Drain: wait until nothing has been stored for 2 s (at most 10 min): the
    # collector's stored-events counter (counted after each commit) and the
    # newest id both unchanged.
    local last=-1 cur stable_from
    stable_from=$(now_ms)
    for i in $(seq 1 2400); do
        cur="$(metric ossec_events_stored_total)/$(q "SELECT coalesce(max(id), 0) FROM events")"
        if [ "$cur" != "$last" ]; then last=$cur; stable_from=$(now_ms);
        elif [ $(( $(now_ms) - stable_from )) -ge 2000 ]; then break; fi
        sleep 0.25
    done
    local t2; t2=$(now_ms)
    kill "$MON_PID" 2>/dev/null || true; wait "$MON_PID" 2>/dev/null || true; MON_PID=""

    local c1 pg1 rb1 hwm rss_end
    c1=$(ticks "$COL_PID"); read -r mb1 mt1 < <(machine_ticks); pg1=$(pg_ticks); rb1=$(udp_rcvbuf_errors)
    hwm=$(status_kb "$COL_PID" VmHWM); rss_end=$(status_kb "$COL_PID" VmRSS)
    local dropped rejected acks
    dropped=$(metric ossec_events_dropped_total)
    rejected=$(metric ossec_messages_rejected_total)
    acks=$(metric ossec_acks_sent_total)
    local batch_s batch_n stored_n
    batch_s=$(metric ossec_batch_write_seconds_sum %.3f)
    batch_n=$(metric ossec_batch_write_seconds_count)
    stored_n=$(metric ossec_events_stored_total)

    local stored_tcp stored_udp agent_updates
    agent_updates=$(q "SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_user_tables WHERE relname = 'agents'")
    stored_tcp=$(q "SELECT count(*) FROM events WHERE transport = 'tcp'")
    stored_udp=$(q "SELECT count(*) FROM events WHERE transport = 'udp'")

    # Steady-state window: skip the warm-up (a quarter of the run, at most
    # 10 s) and the last second of sending.
    local send_ms=$((t1 - t0)) dur_ms
    dur_ms=$(jq -r '(.duration_s // 0) * 1000 | floor' "$work/summary.json" 2>/dev/null || echo "$send_ms")
    [ "$dur_ms" -gt 0 ] 2>/dev/null || dur_ms=$send_ms
    local warm=$((dur_ms / 4)); [ "$warm" -gt 10000 ] && warm=10000
    local w0=$((t0 + warm)) w1=$((t0 + dur_ms - 1000))
    local rate
    # 1 s rates: between the last samples of consecutive seconds, divided by
    # the real time between them (a slow poll must not count twice).
    rate=$(q "WITH b AS (SELECT floor((t_ms - $w0) / 1000.0) AS sec, max(t_ms) AS t, max(max_id) AS top
                       FROM bench_rate WHERE t_ms BETWEEN $w0 AND $w1 GROUP BY 1),
                   d AS (SELECT round((top - lag(top) OVER (ORDER BY sec)) * 1000.0
                                      / nullif(t - lag(t) OVER (ORDER BY sec), 0)) AS per_s FROM b),
                   w AS (SELECT min(t_ms) AS ta, max(t_ms) AS tb FROM bench_rate WHERE t_ms BETWEEN $w0 AND $w1),
                   e AS (SELECT (SELECT max_id FROM bench_rate, w WHERE t_ms = w.tb LIMIT 1)
                              - (SELECT max_id FROM bench_rate, w WHERE t_ms = w.ta LIMIT 1) AS n,
                                (SELECT tb - ta FROM w) AS ms)
              SELECT json_build_object(
                'sustained_eps', round(CASE WHEN e.ms > 0 AND e.n > 0 THEN e.n * 1000.0 / e.ms END),
                'median_1s_eps', (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY per_s) FROM d WHERE per_s IS NOT NULL),
                'min_1s_eps', (SELECT min(per_s) FROM d),
                'max_1s_eps', (SELECT max(per_s) FROM d),
                'window_s', round(e.ms / 1000.0, 1)) FROM e")
    q "UPDATE bench_lat l SET transport = e.transport,
              lat_us = l.seen_us - substring(e.message FROM 'stamp\"?[=:]([0-9]{13,17})')::bigint
       FROM events e WHERE e.id = l.id" >/dev/null
    local lat
    lat=$(q "SELECT json_build_object(
               'samples', count(*),
               'p50_ms', round(percentile_disc(0.5) WITHIN GROUP (ORDER BY lat_us) / 1000.0, 1),
               'p99_ms', round(percentile_disc(0.99) WITHIN GROUP (ORDER BY lat_us) / 1000.0, 1),
               'max_ms', round(max(lat_us) / 1000.0, 1),
               'p99_tcp_ms', round((percentile_disc(0.99) WITHIN GROUP (ORDER BY lat_us) FILTER (WHERE transport = 'tcp')) / 1000.0, 1),
               'p99_udp_ms', round((percentile_disc(0.99) WITHIN GROUP (ORDER BY lat_us) FILTER (WHERE transport = 'udp')) / 1000.0, 1))
             FROM bench_lat WHERE lat_us IS NOT NULL")

    local summary='null'
    if [ -s "$work/summary.json" ] \
        && [ "$(jq -r 'type == "object" and has("sent")' "$work/summary.json" 2>/dev/null)" = true ]; then
        summary=$(cat "$work/summary.json")
    fi
    local simtime
    simtime=$(tail -n1 "$work/sim.time" 2>/dev/null || echo "0 0 0")
    jq -n --arg name "$name" --argjson agents "$agents" --argjson summary "$summary" \
        --argjson sim_rc "$sim_rc" --argjson rate "$rate" --argjson lat "$lat" \
        --argjson stored_tcp "$stored_tcp" --argjson stored_udp "$stored_udp" \
        --argjson cpu_ticks "$((c1 - c0))" --argjson clk "$CLK" --argjson wall_ms "$((t2 - t0))" \
        --argjson send_ms "$send_ms" --argjson drain_ms "$((t2 - t1))" \
        --argjson idle_rss "$idle_rss" --argjson hwm "$hwm" --argjson rss_end "$rss_end" \
        --argjson pg_ticks "$((pg1 - pg0))" --argjson mbusy "$((mb1 - mb0))" --argjson mtotal "$((mt1 - mt0))" \
        --argjson rcvbuf "$((rb1 - rb0))" --argjson dropped "${dropped:-0}" \
        --argjson rejected "${rejected:-0}" --argjson acks "${acks:-0}" \
        --argjson agent_updates "${agent_updates:-0}" \
        --argjson batch_s "${batch_s:-0}" --argjson batch_n "${batch_n:-0}" --argjson stored_n "${stored_n:-0}" \
        --arg simtime "$simtime" --arg sim_args "$*" --arg col_args "$col_args ${BENCH_COL_ARGS:-}" \
        --arg pg "$PG_LABEL" --arg pgsettings "$(psql -d postgres -XAtqc "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'wal_buffers', 'max_wal_size')")" '
        ($simtime | split(" ") | map(tonumber? // 0)) as $st |
        # CPU of the simulator while sending: without what pre-sealing took.
        ((($st[0] // 0) + ($st[1] // 0)) - (($summary // {}).preseal_cpu_s // 0) | if . < 0 then 0 else . end) as $simcpu |
        {name: $name, agents: $agents, sim_args: $sim_args, collector_args: $col_args,
         postgresql: $pg, postgresql_settings: $pgsettings,
         sim_exit: $sim_rc, summary: $summary,
         stored: {tcp: $stored_tcp, udp: $stored_udp},
         lost: (if $summary then {tcp: ($summary.sent_tcp - $stored_tcp), udp: ($summary.sent_udp - $stored_udp)} else null end),
         rate: $rate, latency: $lat,
         collector: {cpu_s: ($cpu_ticks / $clk), cpu_cores: (($cpu_ticks / $clk) / ($wall_ms / 1000) * 100 | round / 100),
                     idle_rss_mb: ($idle_rss / 1024 | . * 10 | round / 10), peak_rss_mb: ($hwm / 1024 | . * 10 | round / 10),
                     end_rss_mb: ($rss_end / 1024 | . * 10 | round / 10),
                     rss_per_agent_kb: ((($hwm - $idle_rss) / $agents) * 10 | round / 10),
                     events_dropped_queue_full: $dropped, messages_rejected: $rejected, acks_sent: $acks,
                     cpu_us_per_event: (if $stored_n > 0 then (($cpu_ticks / $clk) * 1e6 / $stored_n | . * 10 | round / 10) else null end),
                     batches: $batch_n,
                     avg_batch_rows: (if $batch_n > 0 then ($stored_n / $batch_n | round) else null end),
                     avg_batch_write_ms: (if $batch_n > 0 then ($batch_s * 1000 / $batch_n | . * 10 | round / 10) else null end),
                     batch_write_busy_pct: (($batch_s * 100 / ($wall_ms / 1000)) | round)},
         simulator: {cpu_s: ($simcpu | . * 100 | round / 100), peak_rss_mb: (($st[2] // 0) / 1024 | round),
                     preseal_cpu_s: (($summary // {}).preseal_cpu_s // 0)},
         postgres_cpu_s: ($pg_ticks / $clk | . * 100 | round / 100),
         agents_row_updates: $agent_updates,
         others_cpu_s: ((($mbusy - $cpu_ticks - $pg_ticks) / $clk) - $simcpu | . * 10 | round / 10),
         machine_busy_pct: (if $mtotal > 0 then ($mbusy * 100 / $mtotal | round) else null end),
         udp_rcvbuf_errors: $rcvbuf,
         wall_s: ($wall_ms / 1000), send_s: ($send_ms / 1000), drain_s: ($drain_ms / 1000)}' \
        >"$OUT/$name.json"

    if [ -n "${EXPORT_ROWS:-}" ]; then
        # Rows as the collector wrote them, for measuring PostgreSQL alone.
        q "\\copy (SELECT $EVENT_COLUMNS FROM events ORDER BY id LIMIT $PG_ROWS) TO '$EXPORT_ROWS' WITH (FORMAT binary)" \
            >/dev/null || rm -f "$EXPORT_ROWS"
    fi
    cleanup
    METRICS=""
    # eps is null when every event was committed before the steady-state
    # window opened (a short run of pre-sealed events): there is no steady rate.
    jq -c '{name, sent: .summary.sent, stored, lost, eps: .rate.sustained_eps, p50: .latency.p50_ms, p99: .latency.p99_ms, collector_cpu_s: .collector.cpu_s, rss: .collector.peak_rss_mb}' "$OUT/$name.json" >&2
}

# ---------------------------------------------------------------- docs

MACHINE=""
doc_section() { # doc_section KEY TITLE BODY-FILE
    local key=$1 title=$2 body=$3
    [ "$DOC" = none ] && return 0
    local file=$DOC tmp
    if [ ! -f "$file" ]; then
        # A new page: the title; the method is described in the repository's
        # docs/benchmarks.md and bench/run.sh --help.
        cat >"$file" <<'EOF'
# Benchmarks

Written by `bench/run.sh` (method: `bench/run.sh --help`). Raw results of every run
(JSON, logs, perf data) are kept in `target/bench/<time>/`.
EOF
    fi
    tmp=$(mktemp)
    {
        echo "<!-- BEGIN $key -->"
        echo "## $title"
        echo
        cat "$body"
        echo "<!-- END $key -->"
    } >"$tmp.section"
    awk -v key="$key" -v sect="$tmp.section" '
        BEGIN { while ((getline l < sect) > 0) s = s l "\n" }
        $0 == "<!-- BEGIN " key " -->" { printf "%s", s; skip = 1; done = 1; next }
        skip && $0 == "<!-- END " key " -->" { skip = 0; next }
        !skip { print }
        END { if (!done) printf "\n%s", s }' "$file" >"$tmp"
    mv "$tmp" "$file"
    rm -f "$tmp.section"
    log "wrote the $key section of $file"
}

machine_line() {
    jq -r '"Machine: \(.nproc) vCPU \(.cpu), \(.ram) RAM, PostgreSQL \(.postgresql), Linux \(.kernel); load average before the run \(.loadavg_before) (the machine is shared with other jobs); commit \(.commit), \(.date)."' <<<"$MACHINE"
}

fmt() { jq -r "$1" "$2"; }

# ---------------------------------------------------------------- scenarios

# Rows per COPY stream when PostgreSQL is measured alone, and their columns.
PG_ROWS=1000000
EVENT_COLUMNS="received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter"

scenario_throughput() {
    echo "$MACHINE" >"$OUT/throughput.machine.json"
    local d=${DURATION:-60}
    PERF_AT=$(awk -v d="$d" 'BEGIN { a = d / 3; if (a > 20) a = 20; printf "%d", a }')
    # 1. Pre-sealed: the agents' events (zlib level 9, like real agents) are
    #    sealed before the clock starts, so the simulator takes almost no CPU
    #    from the collector and PostgreSQL. Enough for 100,000 events/s.
    EXPORT_ROWS="$OUT/rows.bin" run_case throughput-presealed 100 "" --transport tcp --eps 0 \
        --duration "$d" --keepalive 20 --preseal "$(awk -v d="$d" 'BEGIN { printf "%d", 100000 * d }')"
    PERF_AT=""
    # 2. Live: every event built and sealed as it is sent (zlib level 1, half
    #    the simulator's CPU of level 9), all three on the same two cores.
    run_case throughput-live 100 "" --transport tcp --eps 0 --duration "$d" --keepalive 20 --zlib-level 1
    pg_alone "$OUT/pg-alone.json"
    # 3. The same pre-sealed run and PostgreSQL alone on the machine's own
    #    server, as it is configured.
    if [ "$PG_MODE" = own ] && [ "$SERVER_OK" = 1 ]; then
        use_server_pg
        echo "$(machine_json)" >"$OUT/throughput.server-machine.json"
        run_case throughput-presealed-server 100 "" --transport tcp --eps 0 \
            --duration "$d" --keepalive 20 --preseal "$(awk -v d="$d" 'BEGIN { printf "%d", 100000 * d }')"
        pg_alone "$OUT/pg-alone-server.json"
        use_own_pg
    fi
    rm -f "$OUT/rows.bin"
    render_throughput
}

# PostgreSQL alone: the rows of the pre-sealed run, COPYed (binary, as the
# collector does) into a fresh database with the collector's schema by 1 and
# by 2 concurrent psql sessions, nothing else running. This is the ceiling of
# this PostgreSQL for these rows: the collector cannot store faster. Writes
# the results to the file given.
pg_alone() {
    local out=$1 rows="$OUT/rows.bin" p i db t0 t1 pg0 pg1 l0 l1
    if [ ! -s "$rows" ]; then log "no rows exported; skipping the PostgreSQL-alone measurement"; return 0; fi
    echo '[]' >"$out"
    for p in 1 2; do
        db="ossec_bench_pgalone_$$"
        dropdb --if-exists "$db" >/dev/null 2>&1 || true
        createdb "$db"
        for f in "$ROOT"/migrations/postgres/*.sql; do
            psql -d "$db" -XAtq -v ON_ERROR_STOP=1 -f "$f" >/dev/null || die "applying $f failed"
        done
        psql -d "$db" -XAtqc 'CHECKPOINT' >/dev/null
        [ "$WAIT_IDLE" = 1 ] && wait_idle
        l0=$(psql -d "$db" -XAtqc 'SELECT pg_current_wal_lsn()')
        pg0=$(pg_ticks); read -r mb0 mt0 < <(machine_ticks); t0=$(now_ms)
        local pids=() failed=0
        for i in $(seq 1 "$p"); do
            PGSSLMODE=disable psql -d "$db" -XAtq -v ON_ERROR_STOP=1 \
                -c "\\copy events ($EVENT_COLUMNS) FROM '$rows' WITH (FORMAT binary)" >/dev/null &
            pids+=($!)
        done
        for i in "${pids[@]}"; do wait "$i" || failed=1; done
        [ "$failed" = 0 ] || die "PostgreSQL alone: a COPY failed"
        t1=$(now_ms); pg1=$(pg_ticks); read -r mb1 mt1 < <(machine_ticks)
        l1=$(psql -d "$db" -XAtqc 'SELECT pg_current_wal_lsn()')
        local stored wal
        stored=$(psql -d "$db" -XAtqc 'SELECT count(*) FROM events')
        wal=$(psql -d "$db" -XAtqc "SELECT pg_wal_lsn_diff('$l1', '$l0')::bigint")
        jq --argjson p "$p" --argjson stored "$stored" --argjson ms "$((t1 - t0))" \
           --argjson pg "$((pg1 - pg0))" --argjson clk "$CLK" --argjson wal "$wal" \
           --argjson mbusy "$((mb1 - mb0))" --argjson mtotal "$((mt1 - mt0))" \
           '. + [{streams: $p, rows: $stored, wall_s: ($ms / 1000),
                  rows_per_s: ($stored * 1000 / $ms | round),
                  pg_cpu_s: ($pg / $clk), pg_us_per_row: ($pg / $clk * 1e6 / $stored | . * 10 | round / 10),
                  wal_bytes_per_row: ($wal / $stored | round),
                  machine_busy_pct: ($mbusy * 100 / $mtotal | round)}]' \
           "$out" >"$OUT/pg-alone.json.tmp" && mv "$OUT/pg-alone.json.tmp" "$out"
        dropdb --if-exists "$db" >/dev/null 2>&1 || true
        log "PostgreSQL alone, $p stream(s): $(jq -c '.[-1]' "$out")"
    done
}

render_throughput() {
    local a="$OUT/throughput-presealed.json" b="$OUT/throughput-live.json" c="$OUT/throughput-presealed-server.json"
    local body="$OUT/throughput.md" d files=()
    d=$(jq -r '.summary.duration_s | round' "$a")
    files=("$a" "$b")
    [ -f "$c" ] && files+=("$c")
    row() { # row LABEL JQ-EXPRESSION
        local f line="| $1 |"
        for f in "${files[@]}"; do line="$line $(jq -r "$2" "$f") |"; done
        echo "$line"
    }
    {
        machine_line
        echo
        echo "Command: \`ossec-agent-sim --agents 100 --transport tcp --eps 0 --duration $d --stamp\` (as fast as possible), with"
        echo "\`--preseal $(jq -r '.summary.presealed' "$a")\` (zlib level 9) or live at \`--zlib-level 1\`."
        echo "Goal: ≥ 100,000 events/s sustained, 0 lost."
        echo
        if [ -f "$c" ]; then
            echo "PostgreSQL: $(jq -r '.postgresql' "$OUT/throughput.machine.json" 2>/dev/null || true) for the first two columns;"
            echo "$(jq -r '.postgresql' "$OUT/throughput.server-machine.json" 2>/dev/null || true) for the third."
            echo
            echo "| measure | pre-sealed events, zlib level 9 (like real agents) | live simulator, zlib level 1 | pre-sealed, level 9, the machine's server |"
            echo "|---|---|---|---|"
        else
            echo "| measure | pre-sealed events, zlib level 9 (like real agents) | live simulator, zlib level 1 |"
            echo "|---|---|---|"
        fi
        row "**committed events/s** (steady state)" '"**\(.rate.sustained_eps)** (\(.rate.window_s) s window; 1 s rates \(.rate.min_1s_eps)–\(.rate.max_1s_eps), median \(.rate.median_1s_eps))"'
        row "sent by the simulator" '"\(.summary.sent) in \(.summary.duration_s) s (\(.summary.achieved_eps)/s), \(.summary.bytes_sent / 1048576 | floor) MiB"'
        row "what limited the rate" 'if .summary.achieved_eps > 1.1 * (.rate.sustained_eps // 0) then "PostgreSQL and the collector: the simulator sent faster, the excess waited in the collector queue and the socket buffers (TCP backpressure)" else "the simulator: everything sent was committed as it came" end'
        row "stored / **lost** (TCP)" '"\(.stored.tcp) / **\(.lost.tcp)**"'
        row "latency send → row p50 / p99 / max" '"\(.latency.p50_ms) / \(.latency.p99_ms) / \(.latency.max_ms) ms (\(.latency.samples) samples)"'
        row "drain after the simulator stopped" '"\(.drain_s) s"'
        row "collector CPU" '"\(.collector.cpu_s) s = \(.collector.cpu_cores) cores; \(.collector.cpu_us_per_event) µs per event"'
        row "collector peak RSS" '"\(.collector.peak_rss_mb) MB (idle \(.collector.idle_rss_mb) MB)"'
        row "store batches" '"\(.collector.batches) × \(.collector.avg_batch_rows) rows, \(.collector.avg_batch_write_ms) ms each; \(.collector.batch_write_busy_pct / 100) writes in flight on average"'
        row "PostgreSQL CPU" '"\(.postgres_cpu_s) s; \(if .stored.tcp > 0 then (.postgres_cpu_s * 1e6 / .stored.tcp | . * 10 | round / 10) else "?" end) µs per row"'
        row "CPU: simulator / others; machine busy" '"\(.simulator.cpu_s) s / \(.others_cpu_s) s; \(.machine_busy_pct) %"'
        row "pre-sealing (before the clock)" 'if .summary.presealed > 0 then "\(.summary.presealed) events in \(.summary.preseal_s) s (\(.summary.preseal_mib) MiB); \(.summary.presealed_sent) sent, \(.summary.presealed_exhausted_agents) agents used theirs up" else "—" end'
        row "ACKs (startup, keepalives)" '"\(.summary.acked) of \(.summary.control_sent), p50 / p99 \(.summary.ack_latency_p50_ms) / \(.summary.ack_latency_p99_ms | . * 10 | round / 10) ms; reconnects \(.summary.reconnects), errors \(.summary.errors)"'
        echo
        echo "When the simulator sends faster than events are committed, nothing is lost: TCP"
        echo "backpressure holds the excess in the collector's queue (200,000 events) and the socket"
        echo "buffers, and the latency is that backlog. A keepalive waits behind the events sent before"
        echo "it on its connection, so its ACK is as late as the backlog too."
        if [ -s "$OUT/pg-alone.json" ]; then
            echo
            echo "**PostgreSQL alone**, the ceiling for these rows: the first $PG_ROWS rows of the pre-sealed run,"
            echo "\`COPY … FROM … (FORMAT binary)\` (what the collector sends) by 1 and 2 concurrent \`psql\`"
            echo "sessions into a fresh database with the collector's schema, nothing else running:"
            echo
            echo "| PostgreSQL | COPY streams | rows/s | PostgreSQL CPU per row | WAL per row | machine busy |"
            echo "|---|---:|---:|---:|---:|---:|"
            jq -r --arg w "$([ -f "$c" ] && echo "the benchmark's (compose settings)" || echo "$PG_LABEL")" \
                '.[] | "| \($w) | \(.streams) | \(.rows_per_s) | \(.pg_us_per_row) µs | \(.wal_bytes_per_row) B | \(.machine_busy_pct) % |"' "$OUT/pg-alone.json"
            if [ -s "$OUT/pg-alone-server.json" ]; then
                jq -r '.[] | "| the machine'"'"'s server | \(.streams) | \(.rows_per_s) | \(.pg_us_per_row) µs | \(.wal_bytes_per_row) B | \(.machine_busy_pct) % |"' "$OUT/pg-alone-server.json"
            fi
        fi
        if [ -s "$OUT/throughput-presealed/perf-self.txt" ]; then
            echo
            echo "Collector profile during the pre-sealed run (\`perf record -g -p <pid>\`, 10 s mid-run, self time):"
            echo
            echo '```'
            head -20 "$OUT/throughput-presealed/perf-self.txt" | sed 's/  */ /g'
            echo '```'
        fi
        if [ -s "$OUT/throughput-presealed/perf-pg-self.txt" ]; then
            echo
            echo "PostgreSQL backends serving the collector, same 10 s (self time; the distribution's binary has few symbols):"
            echo
            echo '```'
            head -12 "$OUT/throughput-presealed/perf-pg-self.txt" | sed 's/  */ /g'
            echo '```'
        fi
    } >"$body"
    doc_section throughput "Throughput: 100 TCP agents, as fast as possible" "$body"
}

scenario_fleet() {
    echo "$MACHINE" >"$OUT/fleet.machine.json"
    local d=${DURATION:-60}
    run_case fleet 10000 "" --transport tcp --eps 10000 --duration "$d" --keepalive 20 \
        --source-ips 127.1.0.0/16 --ramp-up 5 --preseal auto --stamp-every 4
    render_fleet
}

render_fleet() {
    local r="$OUT/fleet.json" body="$OUT/fleet.md" d
    d=$(jq -r '.summary.duration_s | round' "$r")
    {
        machine_line
        echo
        echo "Command: \`ossec-agent-sim --agents 10000 --transport tcp --eps 10000 --keepalive 20 --duration $d --source-ips 127.1.0.0/16 --ramp-up 5 --preseal auto --stamp-every 4 --stamp\` (events pre-sealed at zlib level 9, every 5th event of an agent sealed live with its send time; handshakes, keepalives and ACK checks live)."
        echo "Goal: every ACK within 1 s, 0 reconnects."
        echo
        echo "| measure | value |"
        echo "|---|---|"
        fmt '"| agents connected (handshake done) | \(.summary.agents_handshaken) of \(.agents) |"' "$r"
        fmt '"| ACKs received / startups+keepalives sent | \(.summary.acked) / \(.summary.control_sent) (missing \(.summary.missing_acks)) |"' "$r"
        fmt '"| ACK latency p50 / p99 / max | \(.summary.ack_latency_p50_ms) / \(.summary.ack_latency_p99_ms) / \(.summary.max_ack_latency_ms | . * 10 | round / 10) ms; **\(.summary.acks_over_1s) ACKs over 1 s** |"' "$r"
        fmt '"| reconnects / errors | **\(.summary.reconnects)** / \(.summary.errors) |"' "$r"
        fmt '"| committed events/s (steady state) | \(.rate.sustained_eps) (target 10,000) |"' "$r"
        fmt '"| stored / lost (TCP) | \(.stored.tcp) / **\(.lost.tcp)** |"' "$r"
        fmt '"| latency send → row, p50 / p99 | \(.latency.p50_ms) / \(.latency.p99_ms) ms |"' "$r"
        fmt '"| collector CPU | \(.collector.cpu_s) s = \(.collector.cpu_cores) cores over \(.wall_s) s; \(.collector.cpu_us_per_event) µs per event |"' "$r"
        fmt '"| PostgreSQL CPU | \(.postgres_cpu_s) s; store batches \(.collector.batches) × \(.collector.avg_batch_rows) rows, \(.collector.avg_batch_write_ms) ms each; `agents` rows updated \(.agents_row_updates) times |"' "$r"
        fmt '"| collector RSS idle → peak | \(.collector.idle_rss_mb) → \(.collector.peak_rss_mb) MB: **\(.collector.rss_per_agent_kb) KB per agent** |"' "$r"
        fmt '"| simulator CPU / peak RSS | \(.simulator.cpu_s) s / \(.simulator.peak_rss_mb) MB |"' "$r"
    } >"$body"
    doc_section fleet "Fleet: 10,000 TCP agents, 1 event/s each" "$body"
}

scenario_udp() {
    echo "$MACHINE" >"$OUT/udp.machine.json"
    local d=${DURATION:-30} eps lost=0 lossy=0 short=0
    : >"$OUT/udp-steps.jsonl"
    udp_step() {
        run_case "udp-$1" 1000 "" --transport udp --eps "$1" --duration "$d" --keepalive 20 --preseal auto --stamp-every 16
        jq -c '{target_eps: (.summary.target_eps), achieved_eps: .summary.achieved_eps,
                committed_eps: .rate.sustained_eps, sent: .summary.sent_udp, stored: .stored.udp,
                lost: .lost.udp, loss_pct: (if .summary.sent_udp > 0 then (.lost.udp * 10000 / .summary.sent_udp | round) / 100 else 0 end),
                dropped_queue_full: .collector.events_dropped_queue_full, kernel_rcvbuf_errors: .udp_rcvbuf_errors,
                p50_ms: .latency.p50_ms, p99_ms: .latency.p99_ms, cpu_cores: .collector.cpu_cores,
                missing_acks: .summary.missing_acks,
                sustainable: (.lost.udp == 0 and (.rate.sustained_eps // 0) >= 0.97 * .summary.achieved_eps)}' \
            "$OUT/udp-$1.json" | tee -a "$OUT/udp-steps.jsonl" >&2
        lost=$(jq -r '.lost.udp // 1' "$OUT/udp-$1.json")
        if jq -e '.summary.achieved_eps < 0.9 * .summary.target_eps' "$OUT/udp-$1.json" >/dev/null; then
            short=$((short + 1))
        fi
    }
    # Step up until three steps have lost events or the simulator cannot
    # reach 90 % of the target twice.
    for eps in 5000 10000 15000 20000 25000 30000 40000 50000 60000 80000 100000; do
        udp_step "$eps"
        [ "$lost" -gt 0 ] && lossy=$((lossy + 1))
        [ "$lossy" -ge 3 ] || [ "$short" -ge 2 ] && break
    done
    jq -s 'sort_by(.target_eps)' "$OUT/udp-steps.jsonl" >"$OUT/udp.json"
    render_udp
}

render_udp() {
    local d first
    first=$(ls "$OUT"/udp-*.json | grep -v 'udp-steps' | head -1)
    d=$(jq -r '.summary.duration_s | round' "$first")
    local lossless sustainable
    lossless=$(jq -r 'map(select(.lost <= 0)) | max_by(.achieved_eps) // {} | .achieved_eps // "none"' "$OUT/udp.json")
    sustainable=$(jq -r 'map(select(.sustainable)) | max_by(.achieved_eps) // {} | .achieved_eps // "none"' "$OUT/udp.json")
    local body="$OUT/udp.md"
    {
        machine_line
        echo
        echo "Command: \`ossec-agent-sim --agents 1000 --transport udp --eps <step> --duration $d --preseal auto --stamp-every 16 --stamp\`, a fresh collector and database per step"
        echo "(events pre-sealed at zlib level 9 like real agents, so that the simulator's CPU does not decide the result)."
        echo
        echo "**Highest rate sustained without loss: $sustainable events/s** (no loss, and the database keeps up: committed ≥ 97 % of sent)."
        echo "Highest rate without loss in a $d s step: $lossless events/s (above the sustainable rate the collector's"
        echo "queue, 200,000 events by default, absorbs the excess for a while; a longer step loses more)."
        echo
        echo "| target/s | sent/s | committed/s | sent | stored | lost | loss | dropped: queue full / kernel | latency p50 / p99 | collector CPU |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        jq -r '.[] | "| \(.target_eps) | \(.achieved_eps) | \(.committed_eps) | \(.sent) | \(.stored) | \(.lost) | \(.loss_pct) % | \(.dropped_queue_full) / \(.kernel_rcvbuf_errors) | \(.p50_ms) / \(.p99_ms) ms | \(.cpu_cores) |"' "$OUT/udp.json"
        echo
        echo "UDP has no backpressure: when events arrive faster than PostgreSQL commits them, the"
        echo "collector's queue fills and it drops what it cannot queue (\`ossec_events_dropped_total\`,"
        echo "*queue full*); the kernel drops datagrams when the socket buffers are full (*kernel*: the"
        echo "machine-wide \`Udp RcvbufErrors\` delta; net.core.rmem_max = $(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo '?'), which caps the 16 MB"
        echo "receive buffers the collector asks for: raise it with sysctl on a UDP-heavy server)."
    } >"$body"
    doc_section udp "UDP: 1,000 agents, rate stepped up" "$body"
}

scenario_smoke() {
    local d=${DURATION:-5}
    run_case smoke 20 "" --transport mixed --cipher mixed --eps 200 --duration "$d" --keepalive 2
    # The throughput scenario's machinery: pre-sealed agents, the rows
    # export and PostgreSQL alone.
    PG_ROWS=2000 EXPORT_ROWS="$OUT/rows.bin" run_case smoke-presealed 4 "" --transport tcp --eps 0 \
        --duration "$d" --keepalive 2 --preseal 4000 --zlib-level 1
    PG_ROWS=2000 pg_alone "$OUT/pg-alone.json"
    rm -f "$OUT/rows.bin"
    local r="$OUT/smoke.json" p="$OUT/smoke-presealed.json" fail=0
    jq -e '.summary.presealed_sent > 0 and .lost.tcp == 0 and .summary.agents_handshaken == .agents
           and .summary.reply_errors == 0 and .summary.errors == 0' "$p" >/dev/null \
        || { log "FAIL: pre-sealed agents: $(jq -c '{sent: .summary.sent, presealed_sent: .summary.presealed_sent, lost, handshaken: .summary.agents_handshaken, errors: .summary.errors}' "$p")"; fail=1; }
    jq -e 'length == 2 and all(.[]; .rows_per_s > 0)' "$OUT/pg-alone.json" >/dev/null 2>&1 \
        || { log "FAIL: the PostgreSQL-alone measurement did not run"; fail=1; }
    if ! jq -e '.summary | type == "object"' "$r" >/dev/null; then
        log "FAIL: the simulator printed no summary (exit $(jq -r .sim_exit "$r")); see $OUT/smoke/sim.log"
        fail=1
    else
        jq -e '.summary.sent > 0' "$r" >/dev/null || { log "FAIL: no events were sent"; fail=1; }
        jq -e '.lost.tcp == 0' "$r" >/dev/null || { log "FAIL: TCP lost $(jq .lost.tcp "$r") events"; fail=1; }
        jq -e '.summary.reply_errors == 0 and .summary.replies_not_ack == 0' "$r" >/dev/null \
            || { log "FAIL: replies that are not a valid #!-agent ack"; fail=1; }
        jq -e '.summary.agents_handshaken == .agents' "$r" >/dev/null \
            || { log "FAIL: only $(jq .summary.agents_handshaken "$r") of $(jq .agents "$r") agents completed the handshake"; fail=1; }
        jq -e '.lost.udp == 0' "$r" >/dev/null || log "note: UDP lost $(jq .lost.udp "$r") events (not a failure)"
        jq -e '.summary.missing_acks == 0' "$r" >/dev/null || log "note: $(jq .summary.missing_acks "$r") ACKs missing at the end (not a failure)"
    fi
    local body="$OUT/smoke.md"
    {
        machine_line
        echo
        fmt '"20 agents (10 TCP, 10 UDP, AES and Blowfish), \(.summary.duration_s) s: sent \(.summary.sent) (TCP \(.summary.sent_tcp), UDP \(.summary.sent_udp)), stored TCP \(.stored.tcp) / UDP \(.stored.udp), lost TCP **\(.lost.tcp)** / UDP \(.lost.udp); ACKs \(.summary.acked) of \(.summary.control_sent); latency p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms."' "$r"
    } >"$body" 2>/dev/null || true
    doc_section smoke "Smoke" "$body"
    if [ "$fail" = 1 ]; then log "smoke: FAILED ($OUT)"; exit 1; fi
    log "smoke: OK"
}

if [ -n "$RENDER" ]; then
    for sc in throughput fleet udp; do
        case "$SCENARIO" in "$sc"|all) ;; *) continue ;; esac
        case "$sc" in
            throughput) [ -f "$OUT/throughput-presealed.json" ] && [ -f "$OUT/throughput-live.json" ] || continue ;;
            *) [ -f "$OUT/$sc.json" ] || continue ;;
        esac
        MACHINE=$(cat "$OUT/$sc.machine.json" 2>/dev/null || cat "$OUT/machine.json")
        "render_$sc"
    done
    exit 0
fi

MACHINE=$(machine_json)
echo "$MACHINE" >"$OUT/machine.json"
log "results in $OUT"
case "$SCENARIO" in
    throughput) scenario_throughput ;;
    fleet) scenario_fleet ;;
    udp) scenario_udp ;;
    smoke) scenario_smoke ;;
    all) scenario_throughput; MACHINE=$(machine_json); scenario_fleet; MACHINE=$(machine_json); scenario_udp ;;
    custom)
        run_case custom "$AGENTS" "" "${CUSTOM_ARGS[@]}"
        jq 'del(.summary.events_by_kind)' "$OUT/custom.json" ;;
esac
log "done: $OUT"
