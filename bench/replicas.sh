#!/usr/bin/env bash
# Replicas behind HAProxy, measured in one run on this machine:
#
#   bench/replicas.sh [--agents N] [--duration S] [--eps N] [--no-build]
#                     [--cases "direct spool-off haproxy1 haproxy2 failover"]
#
# Three cases, each on a fresh PostgreSQL database (PGHOST/PGPORT, default
# the machine's server on 127.0.0.1:5432, user postgres) with the same
# TCP agents from ossec-agent-sim:
#   direct    the simulator -> one collector (disk spool on, the default)
#   spool-off the same with --spool-dir off (the memory-only queue): the
#             spool's cost is direct vs spool-off
#   haproxy1  the simulator -> HAProxy (send-proxy-v2) -> one collector
#   haproxy2  the simulator -> HAProxy (send-proxy-v2) -> two collectors
# and, last, failover: two collectors behind HAProxy, replica A killed with
# SIGKILL half way; the agents' reconnects and the time from the kill to
# the first event stored through B.
#
# For each case: events stored per second (rows committed / sending time),
# the simulator's ACK latency p50/p99 (keepalive every second), CPU seconds
# of the collectors and of HAProxy per event. HAProxy's config is made from
# deploy/haproxy.cfg (addresses replaced), so the shipped file is what runs.
# Results: target/bench/replicas-<time>/ (JSON per case, logs) and a table
# on stdout. BENCH_SIM_ARGS (environment) is appended to every simulator
# command, e.g. BENCH_SIM_ARGS="--preseal 2000000" to seal the events before
# the run so that the simulator takes almost no CPU during it.
# Needs haproxy, psql, createdb, dropdb, jq, curl, bc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGENTS=100
DURATION=20
EPS=0
BUILD=1
CASES="direct haproxy1 haproxy2 failover"
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES=$2; shift 2 ;;
        --agents) AGENTS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --eps) EPS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || { echo "haproxy not found: apt-get install -y haproxy" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    cargo build --release -q -p ossec-collector -p ossec-agent-sim --manifest-path "$ROOT/Cargo.toml"
fi
COL=$ROOT/target/release/ossec-collector
SIM=$ROOT/target/release/ossec-agent-sim
OUT=$ROOT/target/bench/replicas-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
PIDS=()
DBS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for d in "${DBS[@]}"; do dropdb --if-exists --force "$d" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_s() { # utime+stime of a live process, in seconds
    awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' "/proc/$1/stat" 2>/dev/null || echo 0
}
wait_health() {
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "collector on metrics port $1 never became healthy" >&2; return 1
}
rows() { psql -qtAX -d "$1" -c "SELECT count(*) FROM events"; }

"$SIM" --generate-keys "$AGENTS" --write-keys "$OUT/client.keys" --keys-only >/dev/null

# start_collector NAME DB PROXY [ARGS…] -> sets PORT_<NAME>, MET_<NAME>, PID_<NAME>
start_collector() {
    local name=$1 db=$2 proxy=$3 port met
    shift 3
    local spool=(--spool-dir "$OUT/spool-$name-$db") a
    for a in "$@"; do [ "$a" = --spool-dir ] && spool=(); done
    port=$(free_port); met=$(free_port)
    local args=(serve --listen "127.0.0.1:$port" --no-udp --keys "$OUT/client.keys"
        --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$db" --metrics-listen "127.0.0.1:$met"
        --instance-name "$name" --verify-counters true "${spool[@]}" "$@")
    [ "$proxy" = 1 ] && args+=(--proxy-protocol v2 --proxy-from 127.0.0.0/8)
    RUST_LOG=warn "$COL" "${args[@]}" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_health "$met"
    printf -v "PORT_$name" %s "$port"; printf -v "MET_$name" %s "$met"; printf -v "PID_$name" %s "$pid"
}

# start_haproxy "port:met" ... -> HAP_PORT, HAP_PID
start_haproxy() {
    HAP_PORT=$(free_port)
    local enroll; enroll=$(free_port)
    local servers="" i=0
    for s in "$@"; do
        i=$((i + 1))
        servers+="    server collector-$i 127.0.0.1:${s%%:*} check port ${s##*:}\n"
    done
    # deploy/haproxy.cfg with local addresses: no Docker DNS, health checks
    # every 500 ms (the shipped 2 s would dominate the failover time).
    sed -e '/^resolvers docker/,/^$/d' -e 's/ resolvers docker init-addr libc,none//' \
        -e 's/ check port 9514 inter 2s/ inter 500ms/' -e 's/maxconn 100000/maxconn 4000/' \
        -e "s/bind :1514/bind 127.0.0.1:$HAP_PORT/" -e "s/bind :1515/bind 127.0.0.1:$enroll/" \
        -e '/^    server collector-/d' "$ROOT/deploy/haproxy.cfg" \
        | awk -v s="$servers" '{print} /^backend collectors/{b=1} b && /default-server/{printf "%s", s; b=0}' \
        >"$OUT/haproxy.cfg"
    "$HAPROXY" -c -q -f "$OUT/haproxy.cfg"
    "$HAPROXY" -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
    HAP_PID=$!
    PIDS+=("$HAP_PID")
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$HAP_PORT") 2>/dev/null && break
        sleep 0.1
    done
    sleep 1.5 # first health checks
}

new_db() {
    local db="oc_replicas_$1_$$"
    dropdb --if-exists --force "$db" 2>/dev/null || true
    createdb "$db"
    DBS+=("$db")
    echo "$db"
}

# run_sim CASE SERVER -> $OUT/CASE.json
run_sim() {
    "$SIM" --server "$2" --keys "$OUT/client.keys" --agents "$AGENTS" --transport tcp \
        --eps "$EPS" --duration "$DURATION" --keepalive "${KEEPALIVE:-1}" ${BENCH_SIM_ARGS:-} >"$OUT/$1.json" 2>"$OUT/$1.sim.log"
}

wait_drained() { # until the row count stops moving for 2 s
    local db=$1 last=-1 same=0 n
    while [ $same -lt 20 ]; do
        n=$(rows "$db")
        if [ "$n" = "$last" ]; then same=$((same + 1)); else same=0; last=$n; fi
        sleep 0.1
    done
    echo "$last"
}

RESULTS=()
report() { # CASE DB CPU_COLLECTORS CPU_HAPROXY
    local case=$1 db=$2 ccpu=$3 hcpu=$4 stored
    stored=$(wait_drained "$db")
    local line
    line=$(jq -c --arg case "$case" --argjson stored "$stored" --argjson dur "$DURATION" \
        --argjson ccpu "$ccpu" --argjson hcpu "$hcpu" '{
            case: $case, sent: .sent, stored: $stored, lost: (.sent - $stored), replies_out_of_order: .replies_out_of_order,
            stored_per_s: ($stored / $dur | floor), sent_per_s: (.achieved_eps | floor), presealed_exhausted_agents: .presealed_exhausted_agents,
            ack_p50_ms: .ack_latency_p50_ms, ack_p99_ms: .ack_latency_p99_ms,
            reconnects: .reconnects, missing_acks: .missing_acks,
            collector_cpu_us_per_event: (if $stored > 0 then ($ccpu * 1e6 / $stored * 100 | floor) / 100 else null end),
            haproxy_cpu_us_per_event: (if $stored > 0 then ($hcpu * 1e6 / $stored * 100 | floor) / 100 else null end)
        }' "$OUT/$case.json")
    echo "$line" | tee -a "$OUT/results.jsonl"
    RESULTS+=("$line")
}

stop() { for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

has() { [[ " $CASES " == *" $1 "* ]]; }

if has direct; then
echo "== direct: simulator -> one collector (disk spool)"
db=$(new_db direct)
start_collector a "$db" 0
c0=$(cpu_s "$PID_a")
run_sim direct "127.0.0.1:$PORT_a"
report direct "$db" "$(echo "$(cpu_s "$PID_a") - $c0" | bc -l)" 0
stop "$PID_a"
fi

if has spool-off; then
echo "== spool-off: simulator -> one collector, memory-only queue"
db=$(new_db spooloff)
start_collector a "$db" 0 --spool-dir off
c0=$(cpu_s "$PID_a")
run_sim spool-off "127.0.0.1:$PORT_a"
report spool-off "$db" "$(echo "$(cpu_s "$PID_a") - $c0" | bc -l)" 0
stop "$PID_a"
fi

if has haproxy1; then
echo "== haproxy1: simulator -> HAProxy -> one collector"
db=$(new_db h1)
start_collector a "$db" 1
start_haproxy "$PORT_a:$MET_a"
c0=$(cpu_s "$PID_a"); h0=$(cpu_s "$HAP_PID")
run_sim haproxy1 "127.0.0.1:$HAP_PORT"
report haproxy1 "$db" "$(echo "$(cpu_s "$PID_a") - $c0" | bc -l)" "$(echo "$(cpu_s "$HAP_PID") - $h0" | bc -l)"
stop "$HAP_PID" "$PID_a"
fi

if has haproxy2; then
echo "== haproxy2: simulator -> HAProxy -> two collectors"
db=$(new_db h2)
start_collector a "$db" 1
start_collector b "$db" 1
start_haproxy "$PORT_a:$MET_a" "$PORT_b:$MET_b"
c0=$(echo "$(cpu_s "$PID_a") + $(cpu_s "$PID_b")" | bc -l); h0=$(cpu_s "$HAP_PID")
run_sim haproxy2 "127.0.0.1:$HAP_PORT"
c1=$(echo "$(cpu_s "$PID_a") + $(cpu_s "$PID_b")" | bc -l)
report haproxy2 "$db" "$(echo "$c1 - $c0" | bc -l)" "$(echo "$(cpu_s "$HAP_PID") - $h0" | bc -l)"
echo "   agents per replica: $(psql -qtAX -d "$db" -c "SELECT string_agg(collector || '=' || n, ' ') FROM (SELECT collector, count(*) n FROM agents GROUP BY 1 ORDER BY 1) x")"
stop "$HAP_PID" "$PID_a" "$PID_b"
fi

FAILOVER_S=null
if has failover; then
echo "== failover: two collectors behind HAProxy, A killed half way"
db=$(new_db fo)
start_collector a "$db" 1
start_collector b "$db" 1
start_haproxy "$PORT_a:$MET_a" "$PORT_b:$MET_b"
run_sim failover "127.0.0.1:$HAP_PORT" &
SIM_PID=$!
# Half way through the sending (after any pre-sealing, once A has agents).
for _ in $(seq 1 1200); do
    [ "$(psql -qtAX -d "$db" -c "SELECT count(*) FROM agents WHERE collector = 'a'")" -gt 0 ] && break
    sleep 0.1
done
sleep "$((DURATION / 2))"
on_a=$(psql -qtAX -d "$db" -c "SELECT string_agg(quote_literal(id), ',') FROM agents WHERE collector = 'a'")
kill -9 "$PID_a"
killed=$(date +%s.%N)
# Replica A's agents: the first event of one of them stored after the kill
# came through B.
first=""
for _ in $(seq 1 600); do
    first=$(psql -qtAX -d "$db" -c "SELECT extract(epoch FROM min(received_at)) - $killed FROM events WHERE received_at > to_timestamp($killed) AND agent_id IN ($on_a)")
    [ -n "$first" ] && break
    sleep 0.05
done
wait "$SIM_PID" || true
echo "   replica A had $(echo "$on_a" | tr ',' '\n' | grep -c .) agents; first of their events stored through B $(printf '%.3f' "${first:-nan}") s after the kill"
FAILOVER_S=${first:-null}
report failover "$db" 0 0
stop "$HAP_PID" "$PID_b"
fi

echo
echo "Results ($AGENTS TCP agents, ${DURATION}s, eps=$EPS; $OUT):"
echo "failover (kill -9 A -> first event of A's agents received by B): ${FAILOVER_S} s"
printf '%-9s %10s %10s %10s %10s %12s %12s\n' case stored/s ack_p50 ack_p99 reconnects col_us/ev hap_us/ev
for r in "${RESULTS[@]}"; do
    echo "$r" | jq -r '[.case, .stored_per_s, .ack_p50_ms, .ack_p99_ms, .reconnects, .collector_cpu_us_per_event, .haproxy_cpu_us_per_event] | @tsv' \
        | awk -F'\t' '{printf "%-9s %10s %10s %10s %10s %12s %12s\n", $1, $2, $3, $4, $5, $6, $7}'
done
