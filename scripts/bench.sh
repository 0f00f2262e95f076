#!/usr/bin/env bash
# Benchmark suite: the standard scenarios against a fresh local 3-node Vigil cluster and, when etcd is
# installed, the same load shapes against a fresh 3-node etcd on loopback in the same run; then writes the
# Vigil | etcd | Vigil/etcd table into docs/performance.md (between the bench.sh:begin/end markers).
#
# Usage: scripts/bench.sh [--quick] [--no-etcd] [--no-doc] [--wait-quiet MINUTES]
#   --quick            short runs (2 s instead of 10 s, smaller fan-out, one failover round) to try it out
#   --no-etcd          Vigil only, even when etcd is on PATH
#   --no-doc           print the table instead of writing it into docs/performance.md
#   --wait-quiet M     first wait up to M minutes for the 1-minute load average to drop below 0.8
#
# Scenarios, each run the same way against both systems (benches/load.rs and benches/events.rs, --target):
#   writes      1, 16 and 64 concurrent writers, 256-byte values, to the leader (10 s each after 1 s warm-up)
#   event       one write at a time on the leader, one subscription (Vigil WebSocket `kv*` / etcd watch on the
#               prefix kv/) on a follower; put acknowledged -> event and put sent -> event
#   fan-out     1,000 subscriptions on one follower at FANOUT_RATE writes/s, then 10,000 at FANOUT_BIG_RATE
#               writes/s (8 paced writers on the leader): delivery latency, lost/dup, the follower's CPU and
#               resident memory before, with idle subscriptions and at the end
#   failover    SIGKILL the leader, time to the first acknowledged write through a survivor; FAILOVER_ROUNDS
#               rounds, the killed node restarted and caught up between rounds
#
# Both systems keep their default durability (fsync on). Everything listens on 127.0.0.1 only, on free ports
# found at start. State lives in target/bench.XXXXXX (on the repository's disk, not a tmpfs) and is removed at
# the end unless KEEP=1. A user's own scripts/cluster.sh cluster (.cluster/, ports 8200...) is not touched: the
# Vigil cluster is started by a copy of scripts/cluster.sh and cluster-configs/ in that directory, with its own
# port base.
#
# Environment: FANOUT_RATE (default 200), FANOUT_BIG_RATE (default 20), FAILOVER_ROUNDS (default 3), KEEP=1.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly REPO_ROOT
cd "$REPO_ROOT"

COMMAND="scripts/bench.sh${*:+ $*}"
QUICK=0 ETCD=1 WRITE_DOC=1 WAIT_QUIET=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --no-etcd) ETCD=0 ;;
        --no-doc) WRITE_DOC=0 ;;
        --wait-quiet)
            [ $# -ge 2 ] || { echo "bench.sh: --wait-quiet needs a number of minutes" >&2; exit 2; }
            WAIT_QUIET=$2
            shift
            ;;
        -h | --help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    WRITE_SECONDS=2 WARMUP=0.5 EVENT_SECONDS=2 FANOUT_SECONDS=2 FANOUT_SMALL=200 FANOUT_BIG=1000
    FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-1}
else
    WRITE_SECONDS=10 WARMUP=1 EVENT_SECONDS=8 FANOUT_SECONDS=10 FANOUT_SMALL=1000 FANOUT_BIG=10000
    FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-3}
fi
FANOUT_RATE=${FANOUT_RATE:-200}
FANOUT_BIG_RATE=${FANOUT_BIG_RATE:-20}

say() { printf 'bench.sh: %s %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$ETCD" = 1 ] && ! command -v etcd >/dev/null 2>&1; then
    say "etcd is not on PATH (apt-get install etcd-server etcd-client): measuring Vigil only"
    ETCD=0
fi
command -v curl >/dev/null 2>&1 || die "need curl"

# 10,000 subscriptions need 10,000 descriptors in this process and in the subscribed node.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((FANOUT_BIG + 500)) ]; then
    say "warning: the open-files hard limit is $hard; the $FANOUT_BIG-subscription run may fail"
fi
ulimit -Sn "$hard" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------------------
# Quiet machine, build

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
if [ "$WAIT_QUIET" != 0 ]; then
    deadline=$((SECONDS + 60 * WAIT_QUIET))
    until awk '{exit !($1 < 0.8)}' /proc/loadavg; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "the load average is still $(loadavg) after $WAIT_QUIET minutes; running anyway"
            break
        fi
        say "waiting for a quiet machine (load average $(loadavg))"
        sleep 30
    done
fi

say "building (cargo build --release; cargo bench --no-run --bench load --bench events)"
cargo build --release --quiet --bin vigil
bench_exe() {
    cargo bench --no-run --quiet --bench "$1" --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*/deps/[^"]*"' | tail -n 1 | sed 's/^"executable":"//; s/"$//'
}
LOAD=$(bench_exe load)
EVENTS=$(bench_exe events)
[ -x "$LOAD" ] && [ -x "$EVENTS" ] || die "could not build the bench binaries (cargo bench --no-run)"
VIGIL_BIN=$REPO_ROOT/target/release/vigil

WORK=$(mktemp -d "$REPO_ROOT/target/bench.XXXXXX")
RESULTS=$WORK/results
: >"$RESULTS"
LOG=$WORK/bench.log
ETCD_PIDS=()
VIGIL_ROOT=""

cleanup() {
    local pid
    if [ -n "$VIGIL_ROOT" ] && [ -x "$VIGIL_ROOT/scripts/cluster.sh" ]; then
        VIGIL_BIN=$VIGIL_BIN "$VIGIL_ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
    fi
    for pid in "${ETCD_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${ETCD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

LOAD_BEFORE=$(loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
say "results in $RESULTS, log in $LOG; load average $LOAD_BEFORE"

# True when nothing listens on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A base B such that B, B+1, B+10, B+11, B+20, B+21 are free (three nodes, two ports each), from $1 up.
free_base() {
    local base=$1 off ok
    while [ "$base" -lt 65000 ]; do
        ok=1
        for off in 0 1 10 11 20 21; do
            port_free $((base + off)) || { ok=0; break; }
        done
        [ "$ok" = 1 ] && { echo "$base"; return 0; }
        base=$((base + 100))
    done
    die "no free ports"
}

# Runs a measurement, its output to the log and stderr; a failed one is reported and the run goes on.
run() {
    printf '\n$ %s\n' "$*" >>"$LOG"
    "$@" 2>&1 | tee -a "$LOG" >&2 || say "FAILED: $*"
}

# ---------------------------------------------------------------------------------------------------------
# The scenarios, for one target whose nodes are described in $2 (nodeN.addr, nodeN.pid)

scenarios() {
    local target=$1 dir=$2 restart=$3 token_args=() round
    [ -s "$dir/root-token" ] && token_args=(--token "$(cat "$dir/root-token")")
    say "$target: writes"
    run "$LOAD" --bench --target "$target" --cluster-dir "$dir" "${token_args[@]}" --writers 1,16,64 \
        --duration "$WRITE_SECONDS" --warmup "$WARMUP" --value-size 256 --record "$RESULTS"
    say "$target: event latency"
    run "$EVENTS" --bench --target "$target" --cluster-dir "$dir" "${token_args[@]}" --latency \
        --duration "$EVENT_SECONDS" --warmup "$WARMUP" --record "$RESULTS"
    say "$target: fan-out $FANOUT_SMALL at $FANOUT_RATE/s"
    run "$EVENTS" --bench --target "$target" --cluster-dir "$dir" "${token_args[@]}" --fanout "$FANOUT_SMALL" \
        --rate "$FANOUT_RATE" --writers 8 --duration "$FANOUT_SECONDS" --warmup "$WARMUP" --record "$RESULTS"
    sleep 2
    say "$target: fan-out $FANOUT_BIG at $FANOUT_BIG_RATE/s"
    run "$EVENTS" --bench --target "$target" --cluster-dir "$dir" "${token_args[@]}" --fanout "$FANOUT_BIG" \
        --rate "$FANOUT_BIG_RATE" --writers 8 --duration "$FANOUT_SECONDS" --warmup "$WARMUP" \
        --connect-batch 500 --record "$RESULTS"
    for round in $(seq 1 "$FAILOVER_ROUNDS"); do
        sleep 3
        say "$target: failover round $round"
        run "$LOAD" --bench --failover --target "$target" --cluster-dir "$dir" "${token_args[@]}" \
            --record "$RESULTS"
        "$restart"
    done
}

# ---------------------------------------------------------------------------------------------------------
# Vigil: scripts/cluster.sh, run from a copy so that its .cluster/ lives in $WORK/vigil

vigil_cluster() { VIGIL_BIN=$VIGIL_BIN "$VIGIL_ROOT/scripts/cluster.sh" "$@" >>"$LOG" 2>&1; }

# True if process $1 runs. A killed process that nobody has reaped yet (a zombie) does not: the nodes are started
# by cluster.sh, which has exited, so a SIGKILLed node waits as a zombie for a PID 1 that may never reap it, and
# `kill -0` alone took it for alive (the next failover round then found its API port closed).
pid_alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    [ -r "/proc/$1/stat" ] || return 0
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

vigil_restart_dead() {
    local n
    for n in 1 2 3; do
        if ! pid_alive "$(cat "$VIGIL_ROOT/.cluster/node$n.pid" 2>/dev/null || echo 0)"; then
            say "vigil: restarting node$n"
            vigil_cluster restart "$n" || die "restarting Vigil node$n failed (see $LOG)"
        fi
    done
    sleep 2 # let it catch up before the next kill
}

bench_vigil() {
    VIGIL_ROOT=$WORK/vigil
    mkdir -p "$VIGIL_ROOT/scripts"
    cp scripts/cluster.sh "$VIGIL_ROOT/scripts/"
    cp -r cluster-configs "$VIGIL_ROOT/"
    local base
    base=$(free_base 28200)
    say "vigil: starting a fresh 3-node cluster in $VIGIL_ROOT/.cluster (API ports $base, $((base + 10)), $((base + 20)))"
    VIGIL_PORT_BASE=$base vigil_cluster start || die "the Vigil cluster did not start (see $LOG)"
    VIGIL_VERSION=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
    scenarios vigil "$VIGIL_ROOT/.cluster" vigil_restart_dead
    vigil_cluster stop || true
}

# ---------------------------------------------------------------------------------------------------------
# etcd: three members on loopback, default settings (fsync on)

ETCD_DIR=""
ETCD_BASE=""

etcd_member() {
    local n=$1 client_port=$((ETCD_BASE + 10 * ($1 - 1))) cluster="" m
    for m in 1 2 3; do
        cluster+="${cluster:+,}m$m=http://127.0.0.1:$((ETCD_BASE + 10 * (m - 1) + 1))"
    done
    etcd --name "m$n" --data-dir "$ETCD_DIR/m$n" \
        --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$((client_port + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((client_port + 1))" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "vigil-bench-$$" \
        --logger zap --log-outputs stderr </dev/null >>"$ETCD_DIR/m$n.log" 2>&1 &
    ETCD_PIDS+=($!)
    echo $! >"$ETCD_DIR/node$n.pid"
    echo "http://127.0.0.1:$client_port" >"$ETCD_DIR/node$n.addr"
}

etcd_wait_healthy() {
    local deadline=$((SECONDS + 60)) n ok
    while :; do
        ok=1
        for n in 1 2 3; do
            curl -s --max-time 2 "$(cat "$ETCD_DIR/node$n.addr")/health" | grep -q '"health":"true"' || ok=0
        done
        [ "$ok" = 1 ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || die "etcd did not become healthy (logs in $ETCD_DIR)"
        sleep 0.5
    done
}

etcd_restart_dead() {
    local n
    for n in 1 2 3; do
        if ! pid_alive "$(cat "$ETCD_DIR/node$n.pid")"; then
            say "etcd: restarting m$n"
            etcd_member "$n"
        fi
    done
    etcd_wait_healthy
    sleep 2
}

bench_etcd() {
    ETCD_DIR=$WORK/etcd
    mkdir -p "$ETCD_DIR"
    ETCD_BASE=$(free_base 32379)
    ETCD_VERSION=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')
    say "etcd $ETCD_VERSION: starting 3 members in $ETCD_DIR (client ports $ETCD_BASE, $((ETCD_BASE + 10)), $((ETCD_BASE + 20)))"
    local n
    for n in 1 2 3; do etcd_member "$n"; done
    etcd_wait_healthy
    scenarios etcd "$ETCD_DIR" etcd_restart_dead
    for n in 1 2 3; do kill -TERM "$(cat "$ETCD_DIR/node$n.pid")" 2>/dev/null || true; done
}

VIGIL_VERSION="" ETCD_VERSION=""
bench_vigil
[ "$ETCD" = 1 ] && bench_etcd
LOAD_AFTER=$(loadavg)

# ---------------------------------------------------------------------------------------------------------
# The table

# The last recorded value of $1, or "-".
get() { awk -v k="$1" '$1 == k { v = $2 } END { print (v == "" ? "-" : v) }' "$RESULTS"; }
# "a / b / c" of the recorded values of target $1 for keys $2...
joined() {
    local t=$1 out="" k
    shift
    for k in "$@"; do out+="${out:+ / }$(get "$t.$k")"; done
    printf '%s\n' "$out"
}
# Componentwise a/b of two "x / y" cells, two decimals.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " / "); split(b, y, " / "); out = ""
        for (i = 1; i <= n; i++) {
            r = (x[i] ~ /^[0-9.]+$/ && y[i] ~ /^[0-9.]+$/ && y[i] + 0 > 0) ? sprintf("%.2f", x[i] / y[i]) : "-"
            out = out (i > 1 ? " / " : "") r
        }
        print out }'
}
# Median (min–max) of target $1's failover rounds.
failover_cell() {
    awk -v k="$1.failover_ms" '$1 == k { v[++n] = $2 } END {
        if (n == 0) { print "-"; exit }
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "%d (%d–%d, n=%d)\n", m, v[1], v[n], n }' "$RESULTS"
}
failover_median() { failover_cell "$1" | cut -d' ' -f1; }

row() { # label, keys...
    local label=$1 v e
    shift
    v=$(joined vigil "$@")
    if [ "$ETCD" = 1 ]; then
        e=$(joined etcd "$@")
        printf '| %s | %s | %s | %s |\n' "$label" "$v" "$e" "$(ratio "$v" "$e")"
    else
        printf '| %s | %s |\n' "$label" "$v"
    fi
}

fanout_rows() { # count, rate
    local n=$1 rate=$2 f="fanout_$1"
    row "fan-out $n subs @ $rate writes/s asked: writes/s reached" "${f}_writes_per_s"
    row "fan-out $n: delivery (ack → event) p50 / p99 / max ms" "${f}_p50_ms" "${f}_p99_ms" "${f}_max_ms"
    row "fan-out $n: subscriptions connected / lost / dup+disorder" "${f}_connected" "${f}_lost" "${f}_dup"
    row "fan-out $n: serving node CPU % of a core / load generator %" "${f}_node_cpu_pct" "${f}_client_cpu_pct"
    row "fan-out $n: serving node RSS before / idle subs / end, MiB" \
        "${f}_rss_before_mib" "${f}_rss_idle_mib" "${f}_rss_end_mib"
    row "fan-out $n: memory per idle subscription, KiB" "${f}_kib_per_sub"
}

table() {
    if [ "$ETCD" = 1 ]; then
        echo "| scenario | Vigil | etcd $ETCD_VERSION | Vigil/etcd |"
        echo "|---|---:|---:|---:|"
    else
        echo "| scenario | Vigil |"
        echo "|---|---:|"
    fi
    local w s
    for w in 1 16 64; do
        s=$([ "$w" = 1 ] && echo writer || echo writers)
        row "$w $s: writes/s" "write_w${w}_per_s"
        row "$w $s: latency p50 / p99 / p99.9 ms" "write_w${w}_p50_ms" "write_w${w}_p99_ms" "write_w${w}_p999_ms"
    done
    row "event: put acknowledged → event on a follower, p50 / p99 ms" \
        event_ack_to_event_p50_ms event_ack_to_event_p99_ms
    row "event: put sent → event on a follower, p50 / p99 ms" event_sent_to_event_p50_ms event_sent_to_event_p99_ms
    row "event: put sent → acknowledged (same run), p50 / p99 ms" event_sent_to_ack_p50_ms event_sent_to_ack_p99_ms
    row "event: writes measured / lost" event_writes event_lost
    fanout_rows "$FANOUT_SMALL" "$FANOUT_RATE"
    fanout_rows "$FANOUT_BIG" "$FANOUT_BIG_RATE"
    local v e
    v=$(failover_cell vigil)
    if [ "$ETCD" = 1 ]; then
        e=$(failover_cell etcd)
        printf '| failover: SIGKILL leader → first acknowledged write, median ms (min–max) | %s | %s | %s |\n' \
            "$v" "$e" "$(ratio "$(failover_median vigil)" "$(failover_median etcd)")"
    else
        printf '| failover: SIGKILL leader → first acknowledged write, median ms (min–max) | %s |\n' "$v"
    fi
}

machine() {
    local model mem fs
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
    printf '%s CPUs (%s), %s RAM, Linux %s, data on %s' "$(nproc)" "$model" "$mem" "$(uname -r)" "$fs"
}

SECTION=$WORK/section.md
{
    echo "<!-- bench.sh:begin (generated by scripts/bench.sh; edits between these markers are overwritten) -->"
    echo "## Vigil beside etcd: one run of scripts/bench.sh"
    echo
    echo "- Date: $STARTED. Machine: $(machine)."
    echo "- Command: \`$COMMAND\` (Vigil $VIGIL_VERSION${ETCD_VERSION:+, etcd $ETCD_VERSION})."
    echo "- Load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER."
    echo "- Both clusters: 3 nodes on 127.0.0.1, fsync on (defaults), started fresh, one after the other on the"
    echo "  same cores as the load generator. Writes go to the leader; subscriptions to a follower. Durations:"
    echo "  writes ${WRITE_SECONDS} s per writer count (+${WARMUP} s warm-up), event latency ${EVENT_SECONDS} s,"
    echo "  fan-out ${FANOUT_SECONDS} s of writes (8 paced writers), $FAILOVER_ROUNDS failover rounds."
    echo "- Vigil/etcd below 1 means Vigil is lower: better for latencies and failover, worse for writes/s."
    echo
    table
    echo "<!-- bench.sh:end -->"
} >"$SECTION"

if [ "$WRITE_DOC" = 1 ]; then
    DOC=docs/performance.md
    if grep -q '^<!-- bench.sh:begin' "$DOC" && grep -q '^<!-- bench.sh:end' "$DOC"; then
        awk -v section="$SECTION" '
            /^<!-- bench.sh:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
            /^<!-- bench.sh:end/ { skip = 0; next }
            !skip' "$DOC" >"$DOC.tmp"
    else
        { cat "$DOC"; echo; cat "$SECTION"; } >"$DOC.tmp"
    fi
    mv "$DOC.tmp" "$DOC"
    say "wrote the table into $DOC"
fi
cat "$SECTION"
cp "$RESULTS" "$REPO_ROOT/target/bench-results.txt"
cp "$LOG" "$REPO_ROOT/target/bench-log.txt"
say "raw results: target/bench-results.txt, full output: target/bench-log.txt"
