#!/usr/bin/env bash
# Local three-node Vigil cluster for development and manual testing.
#
# Usage: scripts/cluster.sh <command>
#   start              start node1..node3 in the background, initialise node1 on first
#                      start, wait until the cluster has one active node and two
#                      standbys, then print the `export VIGIL_ADDR=... VIGIL_TOKEN=...`
#                      lines. Does nothing if a node of the cluster is already running.
#   stop               stop every node (SIGTERM, SIGKILL after 10 s). Data is kept, so a
#                      later `start` brings the same cluster back; `rm -rf .cluster` wipes it.
#   status             per node: process, API address and what /v1/sys/health says.
#   kill N             SIGKILL node N (1, 2 or 3), e.g. to watch a leader fail over.
#   restart N          (re)start node N with its config, appending to its log.
#   logs N [--no-follow]
#                      tail -f node N's log (only the last 100 lines when stdout is not a
#                      terminal or with --no-follow).
#
# Runs from anywhere: it works in the repository root (the parent of scripts/) and keeps
# all state under .cluster/ there:
#   .cluster/nodeN/        node N's data (storage "raft" path)
#   .cluster/nodeN.hcl     the config node N runs with: cluster-configs/nodeN.hcl with every
#                          127.0.0.1:<port> shifted by VIGIL_PORT_BASE - 8200 (an exact copy
#                          with the default base); regenerated at every start
#   .cluster/nodeN.log     node N's stdout and stderr (appended to across restarts)
#   .cluster/nodeN.pid     pid of the running node N
#   .cluster/nodeN.addr    node N's API URL
#   .cluster/port-base     the VIGIL_PORT_BASE the cluster was created with
#   .cluster/root-token    the root token (mode 600, no trailing newline); node2 and node3
#                          read it to join node1 (retry_join leader_token_file)
#
# Environment:
#   VIGIL_PORT_BASE        node N listens on API port BASE+10*(N-1) and cluster port
#                          BASE+10*(N-1)+1 (default 8200, or the base recorded in
#                          .cluster/port-base by the first start)
#   VIGIL_BIN              the vigil binary (default target/release/vigil, built with
#                          `cargo build --release` by start/restart when missing)
#   VIGIL_START_TIMEOUT    seconds start/restart wait for the nodes (default 60)

set -euo pipefail

readonly NODES=(1 2 3)
readonly DEFAULT_PORT_BASE=8200
readonly STOP_GRACE_SECONDS=10
readonly EXPLICIT_JOIN_AFTER_SECONDS=5
readonly EXPLICIT_JOIN_EVERY_SECONDS=10

ORIG_PWD=$PWD
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ORIG_PWD REPO_ROOT
readonly STATE_DIR=.cluster
cd "$REPO_ROOT"

START_TIMEOUT=${VIGIL_START_TIMEOUT:-60}
PORT_BASE=""        # set by main (see load_port_base)
VIGIL_BIN_PATH=""   # set by resolve_binary
HEALTH=""           # set by wait_until_answering
STARTING=0          # 1 while start/restart launch nodes (die then explains what is left)

# ---------------------------------------------------------------------------------------
# Small helpers

say() { printf '%s\n' "$*"; }
warn() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    printf 'cluster.sh: error: %s\n' "$*" >&2
    if [ "$STARTING" = 1 ]; then
        printf 'cluster.sh: nodes that did start are left running for inspection (scripts/cluster.sh status);\n' >&2
        printf 'cluster.sh: stop them with: scripts/cluster.sh stop\n' >&2
    fi
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: scripts/cluster.sh start|stop|status
       scripts/cluster.sh kill N|restart N     (N = 1, 2 or 3)
       scripts/cluster.sh logs N [--no-follow]
environment: VIGIL_PORT_BASE (default 8200), VIGIL_BIN (default target/release/vigil),
             VIGIL_START_TIMEOUT (seconds, default 60)
EOF
}

usage_error() {
    [ $# -gt 0 ] && printf 'cluster.sh: %s\n' "$*" >&2
    usage
    exit 2
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Validates a node number argument.
check_node_arg() {
    local n=${1:-}
    [[ $n =~ ^[123]$ ]] || usage_error "expected a node number 1, 2 or 3, got '${n}'"
}

# ---------------------------------------------------------------------------------------
# Ports, addresses and files

# Sets PORT_BASE: VIGIL_PORT_BASE if set, else the base the cluster was created with
# (.cluster/port-base), else 8200.
load_port_base() {
    local base
    if [ -n "${VIGIL_PORT_BASE:-}" ]; then
        base=$VIGIL_PORT_BASE
    elif [ -s "$STATE_DIR/port-base" ]; then
        base=$(<"$STATE_DIR/port-base")
    else
        base=$DEFAULT_PORT_BASE
    fi
    if ! is_uint "$base" || [ "$base" -lt 1024 ] || [ "$base" -gt 65500 ]; then
        die "invalid port base '$base' (VIGIL_PORT_BASE must be an integer from 1024 to 65500)"
    fi
    PORT_BASE=$((10#$base))
}

api_port() { printf '%s\n' "$((PORT_BASE + 10 * ($1 - 1)))"; }
cluster_port() { printf '%s\n' "$((PORT_BASE + 10 * ($1 - 1) + 1))"; }
api_url() { printf 'http://127.0.0.1:%s\n' "$(api_port "$1")"; }

pid_file() { printf '%s/node%s.pid\n' "$STATE_DIR" "$1"; }
log_file() { printf '%s/node%s.log\n' "$STATE_DIR" "$1"; }
addr_file() { printf '%s/node%s.addr\n' "$STATE_DIR" "$1"; }
config_file() { printf '%s/node%s.hcl\n' "$STATE_DIR" "$1"; }
data_dir() { printf '%s/node%s\n' "$STATE_DIR" "$1"; }
readonly TOKEN_FILE=$STATE_DIR/root-token

# The API URL node N was started with (its .addr file), else the one the port base gives.
node_url() {
    local f
    f=$(addr_file "$1")
    if [ -s "$f" ]; then
        head -n 1 "$f"
    else
        api_url "$1"
    fi
}

root_token() {
    [ -s "$TOKEN_FILE" ] && cat "$TOKEN_FILE"
}

# Writes the root token atomically (nodes may read the file at any moment), mode 600.
write_root_token() {
    local tmp="$TOKEN_FILE.tmp.$$"
    (umask 077 && printf '%s' "$1" >"$tmp")
    mv -f "$tmp" "$TOKEN_FILE"
}

# Writes .cluster/nodeN.hcl: cluster-configs/nodeN.hcl with every 127.0.0.1:<port> shifted
# by (port base - 8200), then checks the result listens where this script will look.
generate_config() {
    local n=$1 src="cluster-configs/node$1.hcl" dst delta
    dst=$(config_file "$n")
    [ -f "$src" ] || die "missing $REPO_ROOT/$src"
    delta=$((PORT_BASE - DEFAULT_PORT_BASE))
    {
        printf '# GENERATED by scripts/cluster.sh from %s with port base %s; edits are overwritten.\n' \
            "$src" "$PORT_BASE"
        awk -v delta="$delta" '{
            out = ""
            while (match($0, /127\.0\.0\.1:[0-9]+/)) {
                port = substr($0, RSTART + 10, RLENGTH - 10) + delta
                out = out substr($0, 1, RSTART - 1) "127.0.0.1:" port
                $0 = substr($0, RSTART + RLENGTH)
            }
            print out $0
        }' "$src"
    } >"$dst.tmp"
    grep -Eq "^[[:space:]]*address[[:space:]]*=[[:space:]]*\"127\.0\.0\.1:$(api_port "$n")\"" "$dst.tmp" ||
        die "$src: expected listener address 127.0.0.1:$((DEFAULT_PORT_BASE + 10 * (n - 1))) (node $n)"
    mv -f "$dst.tmp" "$dst"
}

# Pid of node N if it is running, else nothing (and status 1). A pid file whose process
# is gone, is a zombie, or (where /proc exists) is not `vigil ... nodeN.hcl` is stale.
running_pid() {
    local n=$1 f pid stat state
    f=$(pid_file "$n")
    [ -s "$f" ] || return 1
    pid=$(head -n 1 "$f")
    is_uint "$pid" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/stat" ]; then
        stat=$(<"/proc/$pid/stat") || return 1
        state=${stat##*) }
        [ "${state%% *}" != Z ] || return 1
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "node$n\.hcl" || return 1
    fi
    printf '%s\n' "$pid"
}

remove_stale_pid_file() {
    local n=$1 f
    f=$(pid_file "$n")
    if [ -e "$f" ] && ! running_pid "$n" >/dev/null; then
        rm -f "$f"
    fi
}

# ---------------------------------------------------------------------------------------
# Talking to the nodes

# HTTP status of GET <url>/v1/sys/health, or 000 when nothing answers.
# Uses curl when present, else a raw HTTP request through bash's /dev/tcp.
health_code() {
    local url=$1 code
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -s -o /dev/null --noproxy '*' --connect-timeout 2 --max-time 3 \
            -w '%{http_code}' "$url/v1/sys/health" 2>/dev/null) || true
        printf '%s\n' "${code:-000}"
    else
        health_code_devtcp "$url"
    fi
}

health_code_devtcp() {
    local hostport=${1#http://} host port line
    hostport=${hostport%%/*}
    host=${hostport%:*}
    port=${hostport##*:}
    line=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/$host/$port" || exit 0
        printf 'GET /v1/sys/health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$hostport" >&3
        IFS= read -r -t 3 line <&3 && printf '%s' "$line"
    ) || true
    if [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then
        printf '%s\n' "${BASH_REMATCH[1]}"
    else
        printf '000\n'
    fi
}

# Fails clearly when this script has no way to query a node's health.
check_http_client() {
    local err
    command -v curl >/dev/null 2>&1 && return 0
    err=$( (exec 3<>/dev/tcp/127.0.0.1/9) 2>&1 || true)
    if [[ $err == *"No such file"* || $err == *"not supported"* ]]; then
        die "need curl to query the nodes (and this bash has no /dev/tcp): apt-get install -y curl"
    fi
    warn "curl not found; querying the nodes through bash's /dev/tcp (install curl to be safe)"
}

# 200 active, 429 standby, 473 performance standby.
is_healthy_code() {
    case $1 in 200 | 429 | 473) return 0 ;; *) return 1 ;; esac
}

health_meaning() {
    case $1 in
        200) say "active" ;;
        429) say "standby" ;;
        473) say "performance standby" ;;
        501) say "not initialized" ;;
        503) say "no leader known" ;;
        000) say "down" ;;
        *) say "unexpected HTTP $1" ;;
    esac
}

# True when some process already listens on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Runs `vigil <args...>` as a client of node N (VIGIL_ADDR set to it).
vigil_client() {
    local n=$1
    shift
    VIGIL_ADDR=$(node_url "$n") "$VIGIL_BIN_PATH" "$@"
}

# ---------------------------------------------------------------------------------------
# The binary

# Sets VIGIL_BIN_PATH (absolute). VIGIL_BIN relative paths are taken from the directory
# the script was called from; a bare name is looked up in PATH. Builds the default binary
# when missing (only when $1 is "build").
resolve_binary() {
    local want_build=${1:-}
    if [ -n "${VIGIL_BIN:-}" ]; then
        case $VIGIL_BIN in
            /*) VIGIL_BIN_PATH=$VIGIL_BIN ;;
            */*) VIGIL_BIN_PATH=$ORIG_PWD/$VIGIL_BIN ;;
            *) VIGIL_BIN_PATH=$(command -v "$VIGIL_BIN" || true) ;;
        esac
        if [ -z "$VIGIL_BIN_PATH" ] || [ ! -x "$VIGIL_BIN_PATH" ]; then
            die "VIGIL_BIN=$VIGIL_BIN is not an executable file"
        fi
        return 0
    fi
    VIGIL_BIN_PATH=$REPO_ROOT/target/release/vigil
    if [ ! -x "$VIGIL_BIN_PATH" ]; then
        [ "$want_build" = build ] || die "$VIGIL_BIN_PATH is missing; run: cargo build --release"
        command -v cargo >/dev/null 2>&1 || die "$VIGIL_BIN_PATH is missing and cargo is not installed"
        say "Building vigil (cargo build --release)..."
        cargo build --release || die "cargo build --release failed"
        [ -x "$VIGIL_BIN_PATH" ] || die "cargo build --release did not produce $VIGIL_BIN_PATH"
    fi
}

# ---------------------------------------------------------------------------------------
# Starting and stopping node processes

# Starts node N in the background in its own session (it survives this script and a
# Ctrl-C in this terminal), appending stdout+stderr to its log; writes .pid and .addr.
launch_node() {
    local n=$1 cfg log pid
    cfg=$(config_file "$n")
    log=$(log_file "$n")
    mkdir -p "$STATE_DIR"
    printf '\n===== %s: cluster.sh starting node%s: %s server -config %s\n' \
        "$(date '+%Y-%m-%d %H:%M:%S')" "$n" "$VIGIL_BIN_PATH" "$cfg" >>"$log"
    if command -v setsid >/dev/null 2>&1; then
        # In a non-interactive shell the job is not a process group leader, so setsid
        # execs (no fork) and $! is the node's own pid.
        setsid nohup "$VIGIL_BIN_PATH" server -config "$cfg" </dev/null >>"$log" 2>&1 &
    else
        nohup "$VIGIL_BIN_PATH" server -config "$cfg" </dev/null >>"$log" 2>&1 &
    fi
    pid=$!
    printf '%s\n' "$pid" >"$(pid_file "$n")"
    api_url "$n" >"$(addr_file "$n")"
    say "node$n: started, pid $pid, API $(api_url "$n"), log $(log_file "$n")"
}

# Fails (after showing its log) when node N's process has exited.
check_node_alive() {
    local n=$1 pid rc how="exited"
    running_pid "$n" >/dev/null && return 0
    pid=$(head -n 1 "$(pid_file "$n")" 2>/dev/null || true)
    if is_uint "${pid:-x}"; then
        # Started by this shell, so `wait` reports its exit status.
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        case $rc in
            2) how="exited with status 2 (configuration error)" ;;
            127) ;; # not our child after all
            *) how="exited with status $rc" ;;
        esac
    fi
    rm -f "$(pid_file "$n")"
    warn "node$n $how; last lines of $(log_file "$n"):"
    tail -n 20 "$(log_file "$n")" >&2 2>/dev/null || true
    die "node$n failed to start (full log: scripts/cluster.sh logs $n)"
}

# Waits until node N answers /v1/sys/health with any status; sets HEALTH to that status.
# (Not meant for $(...): it must run in the shell that started the node, see check_node_alive.)
wait_until_answering() {
    local n=$1 timeout=$2 deadline
    deadline=$((SECONDS + timeout))
    while :; do
        check_node_alive "$n"
        HEALTH=$(health_code "$(node_url "$n")")
        if [ "$HEALTH" != 000 ]; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] ||
            die "node$n does not answer on $(node_url "$n") after ${timeout}s; see: scripts/cluster.sh logs $n"
        sleep 0.5
    done
}

# SIGTERMs the given running nodes, waits up to STOP_GRACE_SECONDS, SIGKILLs leftovers,
# removes their pid files.
stop_nodes() {
    local n pid deadline
    local -a pids=()
    for n in "$@"; do
        if pid=$(running_pid "$n"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids[n]=$pid
            say "node$n: sent SIGTERM to pid $pid"
        fi
    done
    deadline=$((SECONDS + STOP_GRACE_SECONDS))
    for n in "${!pids[@]}"; do
        while running_pid "$n" >/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.2
        done
        if pid=$(running_pid "$n"); then
            warn "node$n did not stop within ${STOP_GRACE_SECONDS}s; sending SIGKILL to pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
            local gone_by=$((SECONDS + 3))
            while running_pid "$n" >/dev/null && [ "$SECONDS" -lt "$gone_by" ]; do
                sleep 0.1
            done
        else
            say "node$n: stopped"
        fi
        rm -f "$(pid_file "$n")"
    done
}

# ---------------------------------------------------------------------------------------
# Cluster-level steps of `start`

# Refuses to reuse existing data under another port base (Raft remembers the addresses).
check_port_base_consistency() {
    local recorded
    [ -s "$STATE_DIR/port-base" ] || return 0
    recorded=$(<"$STATE_DIR/port-base")
    if [ "$recorded" != "$PORT_BASE" ] && [ -d "$(data_dir 1)" ]; then
        die "the cluster in $STATE_DIR was created with port base $recorded, not $PORT_BASE;" \
            "unset VIGIL_PORT_BASE (or set it to $recorded), or wipe it with: rm -rf $STATE_DIR"
    fi
}

check_ports_free() {
    local n port
    for n in "${NODES[@]}"; do
        for port in "$(api_port "$n")" "$(cluster_port "$n")"; do
            if port_in_use "$port"; then
                die "port $port (node$n) is already in use by another process;" \
                    "stop it or pick other ports with VIGIL_PORT_BASE=<base>"
            fi
        done
    done
}

# Initialises node1 when it says so (501) and saves the root token.
# $2 is 1 when node1 had a data directory before this start.
init_if_needed() {
    local code=$1 had_data=$2 out token
    if [ "$code" != 501 ]; then
        say "node1: already initialized (health $code: $(health_meaning "$code"))"
        [ -s "$TOKEN_FILE" ] || warn "$TOKEN_FILE is missing: the root token of this cluster is unknown"
        return 0
    fi
    say "node1: initializing (vigil operator init)..."
    if ! out=$(vigil_client 1 operator init 2>&1); then
        printf '%s\n' "$out" >&2
        if [ "$had_data" = 1 ] && [ -s "$TOKEN_FILE" ]; then
            warn "vigil operator init failed on node1, which has data from an earlier start;" \
                "assuming it is initialized and keeping $TOKEN_FILE"
            return 0
        fi
        die "vigil operator init failed on node1"
    fi
    token=$(printf '%s\n' "$out" | sed -n 's/^[[:space:]]*Initial Root Token:[[:space:]]*\([^[:space:]]*\).*$/\1/p' | head -n 1)
    if [ -z "$token" ]; then
        printf '%s\n' "$out" >&2
        die "could not find 'Initial Root Token:' in the output of vigil operator init"
    fi
    write_root_token "$token"
    say "node1: initialized; root token saved in $TOKEN_FILE"
}

# Number of voters in the Raft configuration as node $1 reports it (0 when it cannot tell).
voter_count() {
    local n=$1 token out
    token=$(root_token) || { echo 0; return 0; }
    out=$(VIGIL_TOKEN=$token vigil_client "$n" read -format=json sys/storage/raft/configuration 2>/dev/null) ||
        { echo 0; return 0; }
    printf '%s\n' "$out" | grep -o '"voter": *true' | wc -l | tr -d ' '
}

# Waits until exactly one node is active, the others are (performance) standbys, and every node
# is a voter: a joined node is a learner until it has caught up, and a cluster whose followers are
# still learners cannot survive losing its leader.
# Nodes still uninitialized after a few seconds are joined to node1 explicitly (in case
# retry_join is slow or failing); that is retried every few seconds.
wait_for_cluster() {
    local timeout=$1 deadline started n code active standby summary leader voters
    local -a last_join=()
    started=$SECONDS
    deadline=$((SECONDS + timeout))
    while :; do
        active=0 standby=0 summary=""
        for n in "${NODES[@]}"; do
            check_node_alive "$n"
            code=$(health_code "$(node_url "$n")")
            summary+=" node$n=$code"
            case $code in
                200) active=$((active + 1)) leader=$n ;;
                429 | 473) standby=$((standby + 1)) ;;
                501)
                    if [ "$n" != 1 ] && [ $((SECONDS - started)) -ge "$EXPLICIT_JOIN_AFTER_SECONDS" ] &&
                        [ $((SECONDS - ${last_join[n]:--1000})) -ge "$EXPLICIT_JOIN_EVERY_SECONDS" ]; then
                        last_join[n]=$SECONDS
                        explicit_join "$n"
                    fi
                    ;;
            esac
        done
        voters=0
        if [ "$active" -eq 1 ] && [ "$standby" -eq $((${#NODES[@]} - 1)) ]; then
            voters=$(voter_count "$leader")
            [ "$voters" -eq "${#NODES[@]}" ] && return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "health after ${timeout}s:$summary, voters: $voters (want one 200, two 473/429, ${#NODES[@]} voters)"
            die "the cluster did not come up; see scripts/cluster.sh status and scripts/cluster.sh logs N"
        fi
        sleep 1
    done
}

explicit_join() {
    local n=$1 token out leader
    token=$(root_token) || return 0
    leader=$(node_url 1)
    say "node$n: still not initialized; joining it to node1 explicitly (vigil operator raft join $leader)"
    if ! out=$(VIGIL_TOKEN=$token vigil_client "$n" operator raft join "$leader" 2>&1); then
        warn "node$n: explicit join failed (will keep waiting for retry_join): $out"
    fi
}

print_exports() {
    local token
    say "export VIGIL_ADDR=$(node_url 1)"
    if token=$(root_token); then
        say "export VIGIL_TOKEN=$token"
    else
        warn "no root token in $TOKEN_FILE (it was deleted after the cluster was initialized)"
    fi
}

# ---------------------------------------------------------------------------------------
# Commands

cmd_start() {
    local n pid had_data=0
    local -a running=() stopped=()
    for n in "${NODES[@]}"; do
        if pid=$(running_pid "$n"); then running+=("node$n (pid $pid)"); else stopped+=("$n"); fi
    done
    if [ ${#running[@]} -gt 0 ]; then
        say "The cluster is already running: ${running[*]}. Nothing changed."
        for n in "${stopped[@]}"; do
            say "node$n is not running; start it with: scripts/cluster.sh restart $n"
        done
        say ""
        print_exports
        return 0
    fi

    check_http_client
    resolve_binary build
    check_port_base_consistency
    check_ports_free
    [ -d "$(data_dir 1)" ] && had_data=1
    mkdir -p "$STATE_DIR"
    printf '%s\n' "$PORT_BASE" >"$STATE_DIR/port-base"
    for n in "${NODES[@]}"; do
        remove_stale_pid_file "$n"
        generate_config "$n"
    done
    STARTING=1
    for n in "${NODES[@]}"; do
        launch_node "$n"
    done

    say "Waiting for node1 to answer on $(node_url 1)..."
    wait_until_answering 1 "$START_TIMEOUT"
    init_if_needed "$HEALTH" "$had_data"
    say "Waiting for one active node and two standbys (up to ${START_TIMEOUT}s)..."
    wait_for_cluster "$START_TIMEOUT"

    say ""
    say "Vigil cluster is up (data in $REPO_ROOT/$STATE_DIR):"
    cmd_status
    say ""
    say "To use it:"
    print_exports
}

cmd_stop() {
    local n any=0
    for n in "${NODES[@]}"; do
        if running_pid "$n" >/dev/null; then
            any=1
        else
            remove_stale_pid_file "$n"
        fi
    done
    if [ "$any" -eq 0 ]; then
        say "No node is running."
    else
        stop_nodes "${NODES[@]}"
    fi
    if [ -d "$STATE_DIR" ]; then
        say "Data kept in $REPO_ROOT/$STATE_DIR: 'scripts/cluster.sh start' brings the same cluster back;" \
            "'rm -rf $STATE_DIR' wipes it."
    fi
}

cmd_status() {
    local n pid proc code health
    printf '%-6s %-20s %-24s %s\n' NODE PROCESS API HEALTH
    for n in "${NODES[@]}"; do
        if pid=$(running_pid "$n"); then
            proc="running (pid $pid)"
        else
            proc="not running"
        fi
        code=$(health_code "$(node_url "$n")")
        health="$code $(health_meaning "$code")"
        [ "$code" != 000 ] || health="down"
        printf '%-6s %-20s %-24s %s\n' "node$n" "$proc" "$(node_url "$n")" "$health"
    done
}

cmd_kill() {
    local n=$1 pid
    if pid=$(running_pid "$n"); then
        kill -KILL "$pid" 2>/dev/null || true
        # A killed process lives on until its last thread leaves the kernel (a disk sync in progress finishes
        # first), and its sockets accept connections until then — even after its main thread already shows as a
        # zombie, which is all `running_pid` sees. Return only once it is gone and its ports refuse connections.
        local waited=0
        while { running_pid "$n" >/dev/null || port_in_use "$(api_port "$n")" || port_in_use "$(cluster_port "$n")"; } &&
            [ "$waited" -lt 100 ]; do
            sleep 0.05
            waited=$((waited + 1))
        done
        rm -f "$(pid_file "$n")"
        say "node$n: killed (SIGKILL to pid $pid); bring it back with: scripts/cluster.sh restart $n"
    else
        remove_stale_pid_file "$n"
        say "node$n is not running."
    fi
}

cmd_restart() {
    local n=$1 code deadline port
    [ -d "$STATE_DIR" ] || die "no cluster in $REPO_ROOT/$STATE_DIR; run: scripts/cluster.sh start"
    check_http_client
    resolve_binary build
    check_port_base_consistency
    if running_pid "$n" >/dev/null; then
        stop_nodes "$n"
    else
        remove_stale_pid_file "$n"
    fi
    for port in "$(api_port "$n")" "$(cluster_port "$n")"; do
        if port_in_use "$port"; then
            die "port $port (node$n) is still in use by another process"
        fi
    done
    generate_config "$n"
    STARTING=1
    launch_node "$n"
    wait_until_answering "$n" "$START_TIMEOUT"
    code=$HEALTH
    # Give it a moment to rejoin (not fatal: the cluster may have lost its quorum).
    deadline=$((SECONDS + 15))
    while ! is_healthy_code "$code" && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.5
        check_node_alive "$n"
        code=$(health_code "$(node_url "$n")")
    done
    say "node$n: answering on $(node_url "$n"): health $code ($(health_meaning "$code"))"
}

cmd_logs() {
    local n=$1 follow=$2 log
    log=$(log_file "$n")
    [ -f "$log" ] || die "no log for node$n ($REPO_ROOT/$log); has the cluster been started?"
    if [ "$follow" = 1 ] && [ -t 1 ]; then
        exec tail -n 100 -f "$log"
    fi
    tail -n 100 "$log"
}

main() {
    local cmd=${1:-} arg follow=1 node=""
    [ $# -gt 0 ] && shift
    case $cmd in
        start | stop | status | kill | restart | logs)
            load_port_base
            is_uint "$START_TIMEOUT" || die "VIGIL_START_TIMEOUT must be a number of seconds"
            ;;
    esac
    case $cmd in
        start | stop | status)
            [ $# -eq 0 ] || usage_error "'$cmd' takes no arguments"
            "cmd_$cmd"
            ;;
        kill | restart)
            [ $# -eq 1 ] || usage_error "'$cmd' takes one node number"
            check_node_arg "$1"
            "cmd_$cmd" "$1"
            ;;
        logs)
            for arg in "$@"; do
                case $arg in
                    --no-follow) follow=0 ;;
                    *) [ -z "$node" ] || usage_error "'logs' takes one node number"; node=$arg ;;
                esac
            done
            check_node_arg "$node"
            cmd_logs "$node" "$follow"
            ;;
        -h | --help | help)
            usage 2>&1
            ;;
        "") usage_error "missing command" ;;
        *) usage_error "unknown command '$cmd'" ;;
    esac
}

main "$@"
