#!/usr/bin/env bash
# run.sh - the versync benchmark (issue 3): versync against PostgreSQL 15 logical replication
# on this machine, plus the SQLite apply limit and the ZeroMQ CURVE transport limit.
#
#   bash bench/run.sh [--quick] [--runs N] [--pairs N] [--only W1,W2,W3,W4,W5,limits]
#                     [--out FILE] [--keep]
#
# Installs missing Debian packages (as root), compiles bench/vsbench.c into $BUILD (default
# build/, next to build/versync), starts two PostgreSQL clusters and every versync process on
# 127.0.0.1 with random free ports, runs each workload versync then PostgreSQL, run after run
# (A B A B; the short W2 and W5 --pairs times a run, default 3, 1 with --quick), and writes
# one table: to bench/results/latest.md (and a dated copy) for a full run, to
# $BUILD/bench-quick.md for --quick. Everything it starts is stopped and removed on exit. See
# bench/README.md for what each workload does exactly.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD_DIR=$(cd "$ROOT" && realpath -m "${BUILD:-build}")
QUICK=0
RUNS=
PAIRS=
ONLY="W1,W2,W3,W4,W5,limits"
OUT=
KEEP=0

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1}
    PAIRS=${PAIRS:-1}
    W1_ROWS=20000 W2_COMMITS=50 W3_ROWS=20000 W4_ROWS=20000 W4_NS="1 3" W5_UPDATES=5000
    LIMIT_ROWS=20000
    OUT=${OUT:-$BUILD_DIR/bench-quick.md}
else
    RUNS=${RUNS:-3}
    PAIRS=${PAIRS:-3}
    W1_ROWS=1000000 W2_COMMITS=1000 W3_ROWS=1000000 W4_ROWS=1000000 W4_NS="1 10 100 300"
    W5_UPDATES=200000
    LIMIT_ROWS=1000000
fi
case $PAIRS in
[1-9]) ;;
*) echo "run.sh: --pairs takes 1 to 9, not '$PAIRS'" >&2; exit 2 ;;
esac
W1_TXN=1000        # rows per master transaction in W1, W3 and W4
W2_INTERVAL_MS=5   # between W2 commits
W5_ROWS=1000       # the hot rows
W5_TXN=100         # updates per master transaction in W5
APPLY_TXN=10000    # rows per transaction of the apply limit
REAL_SLAVES_MAX=10 # W4 with real `versync subscribe` processes only up to this N (see README)
TIMEOUT=900        # seconds, for any single wait

want() { [[ ",$ONLY," == *",$1,"* ]]; }
say() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
fail() { echo "run.sh: $*" >&2; exit 1; }

# ------------------------------------------------------------------ Debian packages

PACKAGES="build-essential pkg-config libsqlite3-dev libzmq3-dev libczmq-dev libsodium-dev
          libmsgpack-dev libpq-dev postgresql sqlite3"
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        say "installing:$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing \
            || fail "apt-get install failed"
    else
        echo "run.sh: missing Debian packages:$missing" >&2
        echo "run: sudo apt-get install$missing" >&2
        exit 1
    fi
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG_BIN/initdb" ] || fail "no PostgreSQL server binaries under /usr/lib/postgresql"
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}')

# ------------------------------------------------------------------ build

mkdir -p "$BUILD_DIR"
VSBENCH=$BUILD_DIR/vsbench
# With versync built, vsbench links its vs_writer (publisher/vs_writer.h) for the in-process
# capture variants of W1 and W5 (--capture writer).
VSBENCH_WRITER=()
if [ -f "$BUILD_DIR/libvs_publisher.a" ]; then
    VSBENCH_WRITER=(-DVSBENCH_WRITER -I"$ROOT/publisher" -I"$ROOT/proto" "$BUILD_DIR/libvs_publisher.a")
fi
cc -std=c11 -O2 -Wall -Wextra -o "$VSBENCH" "$HERE/vsbench.c" "${VSBENCH_WRITER[@]}" \
    $(pkg-config --cflags --libs sqlite3 libzmq) -I"$(pg_config --includedir)" -lpq \
    -lpthread -lm || fail "cannot compile bench/vsbench.c"
VSLIGHT=
if [ -f "$BUILD_DIR/libvs_subscriber.a" ] && [ -f "$BUILD_DIR/libvs_proto.a" ]; then
    cc -std=c11 -O2 -Wall -Wextra -I"$ROOT/proto" -I"$ROOT/subscriber" -o "$BUILD_DIR/vslight" \
        "$HERE/vslight.c" "$BUILD_DIR/libvs_subscriber.a" "$BUILD_DIR/libvs_proto.a" \
        $(pkg-config --cflags --libs libczmq libzmq sqlite3 libsodium msgpack) \
        -lpthread && VSLIGHT=$BUILD_DIR/vslight
fi
[ -n "$VSLIGHT" ] || say "no light subscribers (bench/vslight.c needs $BUILD_DIR/libvs_subscriber.a)"
VERSYNC=$BUILD_DIR/versync
VERSYNC_OK=0
if [ -x "$VERSYNC" ] && "$VERSYNC" --version >/dev/null 2>&1; then
    VERSYNC_OK=1
else
    say "no working $VERSYNC: the versync side is skipped (make build first)"
fi

# ------------------------------------------------------------------ scratch space, cleanup

WORK=$(mktemp -d /tmp/versync-bench.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
declare -A BG=()      # pid -> name, everything started in the background
LAST_PID=
PG_CLUSTERS=()

as_postgres() {   # PostgreSQL refuses to run as root
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cleanup() {
    local pid cluster
    for pid in "${!BG[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${!BG[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    for cluster in "${PG_CLUSTERS[@]}"; do
        as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg/$cluster" -m immediate stop >/dev/null 2>&1
    done
    if [ "$KEEP" = 1 ]; then
        say "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bg() {   # start_bg NAME LOG command...: sets LAST_PID (call it directly, not in $(...))
    local name=$1 log=$2
    shift 2
    "$@" >>"$log" 2>&1 &
    LAST_PID=$!
    BG[$LAST_PID]=$name
}

stop_bg() {   # stop_bg PID...: SIGTERM, then SIGKILL after 10 s
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "$@"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        unset "BG[$pid]"
    done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port_pair() {   # two free consecutive ports on 127.0.0.1: prints the first
    local port
    for _ in $(seq 1 100); do
        # below the ephemeral range (32768 and up), where outgoing connections take ports
        port=$((10000 + RANDOM % 22000))
        if port_free "$port" && port_free $((port + 1)); then
            echo "$port"
            return 0
        fi
    done
    fail "no free port"
}

# record WORKLOAD METRIC SYSTEM RUN VALUE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"; }

# value KEY FILE: the value of a "key value" line of vsbench's output
value() { awk -v k="$1" '$1 == k { print $2; exit }' "$2"; }

record_cpu() {   # record_cpu WORKLOAD RUN FILE [PREFIX]: CPU seconds of each process over the
    # timed part (vsbench --watch order: broker, publisher, subscriber; self: the master's
    # writer), as PREFIXwriter_cpu_s and so on
    record "$1" "${4:-}writer_cpu_s" versync "$2" "$(value self_cpu_s "$3")"
    record "$1" "${4:-}broker_cpu_s" versync "$2" "$(value cpu_s.0 "$3")"
    record "$1" "${4:-}publisher_cpu_s" versync "$2" "$(value cpu_s.1 "$3")"
    record "$1" "${4:-}subscriber_cpu_s" versync "$2" "$(value cpu_s.2 "$3")"
}

pair_ids() {   # pair_ids RUN: the ids of the run's W2 and W5 pairs: 1a 1b ... (1 if one)
    if [ "$PAIRS" = 1 ]; then
        echo "$1"
        return
    fi
    local letters=abcdefghi k
    for k in $(seq 0 $((PAIRS - 1))); do
        printf '%s%s ' "$1" "${letters:k:1}"
    done
}

check_verify() {   # check_verify FILE WHAT: a mismatch is reported, never hidden
    if [ "$(value verify "$1")" != ok ]; then
        say "WARNING: $2: the slave does not match the master (see $1)"
        record "$2" verify_failed x x 1
    fi
}

# ------------------------------------------------------------------ PostgreSQL

declare -A PG_PORT=()

pg_start() {   # pg_start NAME: a fresh cluster on 127.0.0.1, on a random free port
    local name=$1 dir=$WORK/pg/$1 port
    mkdir -p "$WORK/pg"
    [ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg"
    port=$(free_port_pair)
    as_postgres "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$WORK/pg/$name.initdb.log" 2>&1 || fail "initdb failed (see $WORK/pg/$name.initdb.log)"
    cat >>"$dir/postgresql.conf" <<EOF
# versync bench: loopback only, logical replication; fsync and synchronous_commit: defaults
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$WORK/pg'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_worker_processes = 16
max_logical_replication_workers = 8
# the launcher starts at most one worker per wal_retrieve_retry_interval (default 5 s)
wal_retrieve_retry_interval = '50ms'
EOF
    PG_CLUSTERS+=("$name")
    as_postgres "$PG_BIN/pg_ctl" -D "$dir" -l "$WORK/pg/$name.log" -w start >/dev/null \
        || fail "cannot start PostgreSQL (see $WORK/pg/$name.log)"
    PG_PORT[$name]=$port
}

pg_conn() { echo "host=127.0.0.1 port=${PG_PORT[$1]} user=postgres dbname=$2"; }

pg_sql() {   # pg_sql CLUSTER DB SQL
    PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(pg_conn "$1" "$2")" -c "$3" >/dev/null
}

pg_postmaster() { head -1 "$WORK/pg/$1/postmaster.pid"; }

# pg_pair DB: the database DB on both clusters with items and warm, a publication on pub and a
# subscription (no initial copy) on sub, streaming.
pg_pair() {
    local db=$1
    pg_sql pub postgres "CREATE DATABASE $db" || fail "CREATE DATABASE $db"
    pg_sql sub postgres "CREATE DATABASE $db" || fail "CREATE DATABASE $db"
    "$VSBENCH" init --kind pg --db "$(pg_conn pub "$db")" || fail "init $db"
    "$VSBENCH" init --kind pg --db "$(pg_conn sub "$db")" || fail "init $db"
    pg_sql pub "$db" "CREATE PUBLICATION p_$db FOR TABLE items, warm" || fail "publication"
    pg_sql sub "$db" "CREATE SUBSCRIPTION s_$db CONNECTION '$(pg_conn pub "$db")'
                      PUBLICATION p_$db WITH (copy_data = false)" || fail "subscription"
    "$VSBENCH" ready --kind pg --master "$(pg_conn pub "$db")" --slave "$(pg_conn sub "$db")" \
        --timeout 60 >/dev/null || fail "the subscription s_$db never streamed"
}

pg_drop() {   # pg_drop DB [SUBSCRIPTION_DB...]: subscriptions first (they hold slots)
    local db=$1 other
    shift
    for other in "$db" "$@"; do
        pg_sql sub "$other" "DROP SUBSCRIPTION IF EXISTS s_$other" 2>/dev/null
        pg_sql sub postgres "DROP DATABASE IF EXISTS $other WITH (FORCE)" 2>/dev/null
    done
    pg_sql pub postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null
}

# ------------------------------------------------------------------ versync

VS_KEYS=$WORK/keys

vs_keys() {
    mkdir -p "$VS_KEYS/publishers" "$VS_KEYS/subscribers"
    local name
    for name in broker pub sub; do
        "$VERSYNC" keygen "$VS_KEYS/$name" >/dev/null || fail "versync keygen failed"
    done
    cp "$VS_KEYS/pub" "$VS_KEYS/publishers/"
    cp "$VS_KEYS/sub" "$VS_KEYS/subscribers/"
}

VS_PORT= VS_BROKER_PID= VS_PUBLISHER_PID=

vs_status_ok() {
    "$VERSYNC" status --broker "tcp://127.0.0.1:$VS_PORT" --broker-key "$VS_KEYS/broker" \
        --cert "$VS_KEYS/sub_secret" --json >/dev/null 2>&1
}

vs_start() {   # vs_start DIR: broker and publisher for DIR/master.db (created, empty)
    local dir=$1
    # the slaves live in a folder of their own, as on another machine: the publisher watches
    # the master's folder, and a slave's writes there would wake it for nothing
    mkdir -p "$dir" "$dir/slaves"
    "$VSBENCH" init --kind sqlite --db "$dir/master.db" || fail "init $dir/master.db"
    local tries attempt
    for attempt in 1 2 3 4 5; do
        VS_PORT=$(free_port_pair)
        start_bg broker "$dir/broker.log" "$VERSYNC" broker --data "$dir/broker-data" \
            --cert "$VS_KEYS/broker_secret" --publishers "$VS_KEYS/publishers" \
            --subscribers "$VS_KEYS/subscribers" --bind "tcp://127.0.0.1:$VS_PORT"
        VS_BROKER_PID=$LAST_PID
        for tries in $(seq 1 200); do
            vs_status_ok && break
            kill -0 "$VS_BROKER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -0 "$VS_BROKER_PID" 2>/dev/null && break
        # a port probed free can be taken before the bind: try others, but only for that
        grep -q "in use" "$dir/broker.log" || fail "the broker died (see $dir/broker.log)"
        say "ports $VS_PORT/$((VS_PORT + 1)) were taken; trying others"
    done
    kill -0 "$VS_BROKER_PID" 2>/dev/null || fail "the broker died (see $dir/broker.log)"
    vs_status_ok || fail "the broker never answered (see $dir/broker.log)"
    start_bg publisher "$dir/publisher.log" "$VERSYNC" publish \
        --db "$dir/master.db" --broker "tcp://127.0.0.1:$VS_PORT" \
        --broker-key "$VS_KEYS/broker" --cert "$VS_KEYS/pub_secret" --stream bench
    VS_PUBLISHER_PID=$LAST_PID
}

vs_subscribe_command() {   # the argv of a subscriber for DB
    echo "$VERSYNC" subscribe --db "$1" --broker "tcp://127.0.0.1:$VS_PORT" \
        --broker-key "$VS_KEYS/broker" --cert "$VS_KEYS/sub_secret" --stream bench
}

vs_subscribe() {   # vs_subscribe DB LOG: sets LAST_PID
    # shellcheck disable=SC2046
    start_bg subscriber "$2" $(vs_subscribe_command "$1")
}

vs_ready() {   # vs_ready DIR SLAVE_DB [PID...]: a warm-up row went through the whole chain
    local dir=$1 slave=$2 pid watches=()
    shift 2
    for pid in "$VS_BROKER_PID" "$VS_PUBLISHER_PID" "$@"; do
        watches+=(--watch "$pid")
    done
    "$VSBENCH" ready --kind sqlite --master "$dir/master.db" --slave "$slave" --timeout 60 \
        "${watches[@]}" >/dev/null \
        || fail "versync never delivered the warm-up row (see the logs in $dir)"
}

# ------------------------------------------------------------------ workloads

bench_limits() {   # bench_limits RUN
    local i=$1 out=$WORK/limits.$i
    say "run $i: limits (SQLite upsert, ZeroMQ CURVE)"
    "$VSBENCH" apply-limit --db "$WORK/apply-limit.db" --rows "$LIMIT_ROWS" --txn "$APPLY_TXN" \
        >"$out.apply" || fail "apply-limit"
    rm -f "$WORK/apply-limit.db"*
    record limit apply_rows_per_s limit "$i" "$(value rows_per_s "$out.apply")"
    # the same with 32 rows a statement, as versync's subscriber writes them
    "$VSBENCH" apply-limit --db "$WORK/apply-limit.db" --rows "$LIMIT_ROWS" --txn "$APPLY_TXN" \
        --per-statement 32 >"$out.apply32" || fail "apply-limit (32 rows a statement)"
    rm -f "$WORK/apply-limit.db"*
    record limit apply32_rows_per_s limit "$i" "$(value rows_per_s "$out.apply32")"
    "$VSBENCH" curve-limit --rows "$LIMIT_ROWS" >"$out.curve" || fail "curve-limit"
    record limit curve_rows_per_s limit "$i" "$(value rows_per_s "$out.curve")"
    record limit curve_mb_per_s limit "$i" "$(value mb_per_s "$out.curve")"
    [ "$VERSYNC_OK" = 1 ] && writer_limits "$i"
}

writer_master() {   # writer_master DIR: DIR/master.db with versync's capture triggers, and
                    # nothing replicating: a publisher installs them and is stopped (its broker
                    # port has no broker)
    local dir=$1
    mkdir -p "$dir"
    "$VSBENCH" init --kind sqlite --db "$dir/master.db" || fail "init $dir/master.db"
    start_bg publisher "$dir/publisher.log" "$VERSYNC" publish --db "$dir/master.db" \
        --broker "tcp://127.0.0.1:$(free_port_pair)" --broker-key "$VS_KEYS/broker" \
        --cert "$VS_KEYS/pub_secret" --stream writer
    local publisher=$LAST_PID
    "$VSBENCH" triggers --db "$dir/master.db" --timeout 60 --watch "$publisher" \
        || fail "the publisher never installed its triggers (see $dir/publisher.log)"
    stop_bg "$publisher"
}

writer_limits() {   # writer_limits RUN: W1's and W5's writes with the capture triggers, alone,
                    # then through a vs_writer (in-process capture), alone
    local i=$1 dir=$WORK/writer.$i out=$WORK/writer.$i capture prefix
    for capture in triggers writer; do
        [ "$capture" = writer ] && [ ${#VSBENCH_WRITER[@]} = 0 ] && continue
        prefix=$([ "$capture" = writer ] && echo writer_inproc || echo writer)
        say "run $i: limits (the master's writer with capture $capture, nothing replicating)"
        writer_master "$dir/bulk.$capture"
        # the slave is the master itself: timed until the last commit
        "$VSBENCH" bulk --kind sqlite --master "$dir/bulk.$capture/master.db" \
            --slave "$dir/bulk.$capture/master.db" --capture "$capture" \
            --rows "$W1_ROWS" --txn "$W1_TXN" --timeout "$TIMEOUT" >"$out.bulk" \
            || fail "writer limit"
        record limit "${prefix}_rows_per_s" limit "$i" "$(value rows_per_s "$out.bulk")"
        writer_master "$dir/hot.$capture"
        "$VSBENCH" hot --kind sqlite --master "$dir/hot.$capture/master.db" \
            --slave "$dir/hot.$capture/master.db" --capture "$capture" \
            --rows "$W5_ROWS" --updates "$W5_UPDATES" --txn "$W5_TXN" --timeout "$TIMEOUT" \
            >"$out.hot" || fail "writer limit (hot)"
        record limit "${prefix}_updates_per_s" limit "$i" "$(value updates_per_s "$out.hot")"
    done
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

vs_inproc() {   # vs_inproc RUN W1|W5: the workload with the master written through a vs_writer
    local i=$1 workload=$2 dir=$WORK/vs/inproc.$2.$1 out=$WORK/vs-inproc.$2.$1
    [ ${#VSBENCH_WRITER[@]} = 0 ] && return 0
    say "run $i: versync $workload, in-process capture (vs_writer)"
    vs_start "$dir"
    local subscriber
    vs_subscribe "$dir/slaves/slave.db" "$dir/subscriber.log"
    subscriber=$LAST_PID
    vs_ready "$dir" "$dir/slaves/slave.db" "$subscriber"
    if [ "$workload" = W1 ]; then
        "$VSBENCH" bulk --kind sqlite --master "$dir/master.db" --slave "$dir/slaves/slave.db" \
            --capture writer --rows "$W1_ROWS" --txn "$W1_TXN" --timeout "$TIMEOUT" \
            --watch "$VS_BROKER_PID" --watch "$VS_PUBLISHER_PID" --watch "$subscriber" \
            >"$out" || fail "versync W1 in-process (logs in $dir)"
        check_verify "$out" W1
        record W1 inproc_rows_per_s versync "$i" "$(value rows_per_s "$out")"
        record_cpu W1 "$i" "$out" inproc_
    else
        "$VSBENCH" hot --kind sqlite --master "$dir/master.db" --slave "$dir/slaves/slave.db" \
            --capture writer --rows "$W5_ROWS" --updates "$W5_UPDATES" --txn "$W5_TXN" \
            --timeout "$TIMEOUT" \
            --watch "$VS_BROKER_PID" --watch "$VS_PUBLISHER_PID" --watch "$subscriber" \
            >"$out" || fail "versync W5 in-process (logs in $dir)"
        check_verify "$out" W5
        record W5 inproc_updates_per_s versync "$i" "$(value updates_per_s "$out")"
        record_cpu W5 "$i" "$out" inproc_
    fi
    stop_bg "$subscriber" "$VS_PUBLISHER_PID" "$VS_BROKER_PID"
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

vs_w1_w3() {   # W1 bulk, then W3 new replica on the same broker history
    local i=$1 dir=$WORK/vs/w1.$i out=$WORK/vs-w1.$i
    say "run $i: versync W1 bulk ($W1_ROWS rows)"
    vs_start "$dir"
    local subscriber
    vs_subscribe "$dir/slaves/slave.db" "$dir/subscriber.log"
    subscriber=$LAST_PID
    vs_ready "$dir" "$dir/slaves/slave.db" "$subscriber"
    "$VSBENCH" bulk --kind sqlite --master "$dir/master.db" --slave "$dir/slaves/slave.db" \
        --rows "$W1_ROWS" --txn "$W1_TXN" --timeout "$TIMEOUT" \
        --watch "$VS_BROKER_PID" --watch "$VS_PUBLISHER_PID" --watch "$subscriber" \
        >"$out" || fail "versync W1 (logs in $dir)"
    check_verify "$out" W1
    record W1 rows_per_s versync "$i" "$(value rows_per_s "$out")"
    record W1 write_s versync "$i" "$(value write_s "$out")"
    record_cpu W1 "$i" "$out"
    stop_bg "$subscriber" "$VS_PUBLISHER_PID"
    if want W3; then
        say "run $i: versync W3 new replica ($W1_ROWS row changes)"
        out=$WORK/vs-w3.$i
        # shellcheck disable=SC2046
        "$VSBENCH" replica --kind sqlite --slave "$dir/slaves/replica.db" --master "$dir/master.db" \
            --rows "$W1_ROWS" --timeout "$TIMEOUT" \
            -- $(vs_subscribe_command "$dir/slaves/replica.db") >"$out" 2>"$dir/replica.log" \
            || fail "versync W3 (logs in $dir)"
        check_verify "$out" W3
        record W3 rows_per_s versync "$i" "$(value rows_per_s "$out")"
        record W3 peak_rss_mb versync "$i" "$(awk '$1 == "peak_rss_kb.0" { printf "%.1f", $2 / 1024 }' "$out")"
    fi
    stop_bg "$VS_BROKER_PID"
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

pg_w1_w3() {
    local i=$1 db=w1_$i out=$WORK/pg-w1.$i
    say "run $i: PostgreSQL W1 bulk ($W1_ROWS rows)"
    pg_pair "$db"
    "$VSBENCH" bulk --kind pg --master "$(pg_conn pub "$db")" --slave "$(pg_conn sub "$db")" \
        --rows "$W1_ROWS" --txn "$W1_TXN" --timeout "$TIMEOUT" >"$out" || fail "PostgreSQL W1"
    check_verify "$out" W1
    record W1 rows_per_s postgresql "$i" "$(value rows_per_s "$out")"
    record W1 write_s postgresql "$i" "$(value write_s "$out")"
    local replica=
    if want W3; then
        say "run $i: PostgreSQL W3 initial copy ($W1_ROWS rows)"
        replica=w3_$i
        out=$WORK/pg-w3.$i
        pg_sql sub postgres "CREATE DATABASE $replica" || fail "CREATE DATABASE $replica"
        "$VSBENCH" init --kind pg --db "$(pg_conn sub "$replica")" || fail "init $replica"
        "$VSBENCH" replica --kind pg --slave "$(pg_conn sub "$replica")" \
            --master "$(pg_conn pub "$db")" --rows "$W1_ROWS" --timeout "$TIMEOUT" \
            --watch-tree "$(pg_postmaster sub)" \
            --exec "CREATE SUBSCRIPTION s_$replica CONNECTION '$(pg_conn pub "$db")'
                    PUBLICATION p_$db WITH (copy_data = true)" >"$out" \
            || fail "PostgreSQL W3"
        check_verify "$out" W3
        record W3 rows_per_s postgresql "$i" "$(value rows_per_s "$out")"
        record W3 peak_rss_mb postgresql "$i" "$(awk '$1 == "tree_peak_rss_kb" { printf "%.1f", $2 / 1024 }' "$out")"
    fi
    pg_drop "$db" $replica
}

vs_w2() {
    local i=$1 dir=$WORK/vs/w2.$i out=$WORK/vs-w2.$i
    say "run $i: versync W2 latency ($W2_COMMITS commits, ${W2_INTERVAL_MS} ms apart)"
    vs_start "$dir"
    local subscriber
    vs_subscribe "$dir/slaves/slave.db" "$dir/subscriber.log"
    subscriber=$LAST_PID
    vs_ready "$dir" "$dir/slaves/slave.db" "$subscriber"
    "$VSBENCH" latency --kind sqlite --master "$dir/master.db" --slave "$dir/slaves/slave.db" \
        --commits "$W2_COMMITS" --interval-ms "$W2_INTERVAL_MS" --timeout "$TIMEOUT" \
        --watch "$VS_BROKER_PID" --watch "$VS_PUBLISHER_PID" --watch "$subscriber" \
        >"$out" || fail "versync W2 (logs in $dir)"
    check_verify "$out" W2
    local metric
    for metric in p50_ms p99_ms max_ms; do
        record W2 "$metric" versync "$i" "$(value "$metric" "$out")"
    done
    stop_bg "$subscriber" "$VS_PUBLISHER_PID" "$VS_BROKER_PID"
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

pg_w2() {
    local i=$1 db=w2_$i out=$WORK/pg-w2.$i
    say "run $i: PostgreSQL W2 latency ($W2_COMMITS commits, ${W2_INTERVAL_MS} ms apart)"
    pg_pair "$db"
    "$VSBENCH" latency --kind pg --master "$(pg_conn pub "$db")" --slave "$(pg_conn sub "$db")" \
        --commits "$W2_COMMITS" --interval-ms "$W2_INTERVAL_MS" --timeout "$TIMEOUT" \
        >"$out" || fail "PostgreSQL W2"
    check_verify "$out" W2
    local metric
    for metric in p50_ms p99_ms max_ms; do
        record W2 "$metric" postgresql "$i" "$(value "$metric" "$out")"
    done
    pg_drop "$db"
}

vs_w5() {
    local i=$1 dir=$WORK/vs/w5.$i out=$WORK/vs-w5.$i
    say "run $i: versync W5 hot rows ($W5_UPDATES updates over $W5_ROWS rows)"
    vs_start "$dir"
    local subscriber
    vs_subscribe "$dir/slaves/slave.db" "$dir/subscriber.log"
    subscriber=$LAST_PID
    vs_ready "$dir" "$dir/slaves/slave.db" "$subscriber"
    "$VSBENCH" hot --kind sqlite --master "$dir/master.db" --slave "$dir/slaves/slave.db" \
        --rows "$W5_ROWS" --updates "$W5_UPDATES" --txn "$W5_TXN" --timeout "$TIMEOUT" \
        --watch "$VS_BROKER_PID" --watch "$VS_PUBLISHER_PID" --watch "$subscriber" \
        >"$out" || fail "versync W5 (logs in $dir)"
    check_verify "$out" W5
    record W5 updates_per_s versync "$i" "$(value updates_per_s "$out")"
    record_cpu W5 "$i" "$out"
    stop_bg "$subscriber" "$VS_PUBLISHER_PID" "$VS_BROKER_PID"
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

pg_w5() {
    local i=$1 db=w5_$i out=$WORK/pg-w5.$i
    say "run $i: PostgreSQL W5 hot rows ($W5_UPDATES updates over $W5_ROWS rows)"
    pg_pair "$db"
    "$VSBENCH" hot --kind pg --master "$(pg_conn pub "$db")" --slave "$(pg_conn sub "$db")" \
        --rows "$W5_ROWS" --updates "$W5_UPDATES" --txn "$W5_TXN" --timeout "$TIMEOUT" \
        >"$out" || fail "PostgreSQL W5"
    check_verify "$out" W5
    record W5 updates_per_s postgresql "$i" "$(value updates_per_s "$out")"
    pg_drop "$db"
}

vs_w4() {   # vs_w4 RUN N: one broker, N subscribers (2 real, the rest light), a W1-sized run
    local i=$1 n=$2 dir=$WORK/vs/w4.$i.$n out=$WORK/vs-w4.$i.$n
    local real=$n light=0
    if [ -n "$VSLIGHT" ]; then
        real=$((n < 2 ? n : 2))
        light=$((n - real))
    elif [ "$n" -gt "$REAL_SLAVES_MAX" ]; then
        say "run $i: versync W4 N=$n skipped: needs light subscribers (bench/README.md)"
        return 0
    fi
    say "run $i: versync W4 fan-out to $n subscribers ($real real, $light light; $W4_ROWS rows)"
    vs_start "$dir"
    local k pids=() also=() light_options=() light_pid
    for k in $(seq 1 "$real"); do
        vs_subscribe "$dir/slaves/slave$k.db" "$dir/subscriber$k.log"
        pids+=("$LAST_PID")
        [ "$k" -gt 1 ] && also+=(--also-slave "$dir/slaves/slave$k.db")
    done
    if [ "$light" -gt 0 ]; then
        start_bg light "$dir/light.log" "$VSLIGHT" --broker "tcp://127.0.0.1:$VS_PORT" \
            --live "tcp://127.0.0.1:$((VS_PORT + 1))" --broker-key "$VS_KEYS/broker" \
            --cert "$VS_KEYS/sub_secret" --stream bench --table items --count "$light" \
            --rows "$W4_ROWS" --ready "$dir/light.ready" --result "$dir/light.result" \
            --timeout "$TIMEOUT"
        light_pid=$LAST_PID
        light_options=(--light-result "$dir/light.result" --light-pid "$light_pid")
    fi
    for k in $(seq 1 "$real"); do
        vs_ready "$dir" "$dir/slaves/slave$k.db" "${pids[@]}"
    done
    if [ "$light" -gt 0 ]; then
        for _ in $(seq 1 1200); do
            [ -f "$dir/light.ready" ] && break
            sleep 0.05
        done
        [ -f "$dir/light.ready" ] || fail "the light subscribers never got ready (see $dir/light.log)"
    fi
    local watches=(--watch "$VS_BROKER_PID" --watch "$VS_PUBLISHER_PID") pid
    for pid in "${pids[@]}"; do
        watches+=(--watch "$pid")
    done
    "$VSBENCH" bulk --kind sqlite --master "$dir/master.db" --slave "$dir/slaves/slave1.db" "${also[@]}" \
        "${light_options[@]}" "${watches[@]}" --rows "$W4_ROWS" --txn "$W1_TXN" --timeout "$TIMEOUT" \
        >"$out" || fail "versync W4 N=$n (logs in $dir)"
    record "W4 N=$n" delivered_rows_per_s versync "$i" "$(value delivered_rows_per_s "$out")"
    record "W4 N=$n" complete_subscribers versync "$i" "$(value complete_subscribers "$out")"
    record "W4 N=$n" broker_cpu_s versync "$i" "$(value cpu_s.0 "$out")"
    record "W4 N=$n" broker_peak_rss_mb versync "$i" \
        "$(awk '$1 == "peak_rss_kb.0" { printf "%.1f", $2 / 1024 }' "$out")"
    if [ "$(value complete_subscribers "$out")" != "$n" ]; then
        say "WARNING: W4 N=$n: only $(value complete_subscribers "$out") of $n subscribers got every change"
        record "W4 N=$n" verify_failed x x 1
    fi
    stop_bg "${pids[@]}" ${light_pid:-} "$VS_PUBLISHER_PID" "$VS_BROKER_PID"
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

# ------------------------------------------------------------------ the run

STARTED=$(date +%s)
say "work directory $WORK; $RUNS run(s); $([ "$QUICK" = 1 ] && echo quick || echo full) sizes"
if want W1 || want W2 || want W3 || want W5; then
    pg_start pub
    pg_start sub
    say "PostgreSQL $PG_VERSION clusters on 127.0.0.1:${PG_PORT[pub]} and :${PG_PORT[sub]}"
fi
[ "$VERSYNC_OK" = 1 ] && vs_keys

for i in $(seq 1 "$RUNS"); do
    want limits && bench_limits "$i"
    if want W1 || want W3; then
        [ "$VERSYNC_OK" = 1 ] && vs_w1_w3 "$i"
        pg_w1_w3 "$i"
        want W1 && [ "$VERSYNC_OK" = 1 ] && vs_inproc "$i" W1
    fi
    # W2 and W5 take seconds and move most with the machine: several pairs a run, each
    # its own pair in the ratios (ids 1a, 1b, ...).
    for pair in $(pair_ids "$i"); do
        if want W2; then
            [ "$VERSYNC_OK" = 1 ] && vs_w2 "$pair"
            pg_w2 "$pair"
        fi
        if want W5; then
            [ "$VERSYNC_OK" = 1 ] && vs_w5 "$pair"
            pg_w5 "$pair"
            [ "$VERSYNC_OK" = 1 ] && vs_inproc "$pair" W5
        fi
    done
    if want W4 && [ "$VERSYNC_OK" = 1 ]; then
        for n in $W4_NS; do
            vs_w4 "$i" "$n"
        done
    fi
done
ELAPSED=$(($(date +%s) - STARTED))

# ------------------------------------------------------------------ the table

ENVIRONMENT="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, \
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), \
$(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
VERSIONS="SQLite $(pkg-config --modversion sqlite3), libzmq $(pkg-config --modversion libzmq), \
czmq $(pkg-config --modversion libczmq 2>/dev/null || echo ?), libsodium $(pkg-config --modversion libsodium), \
PostgreSQL $PG_VERSION"
MODE=$([ "$QUICK" = 1 ] && echo "QUICK (tiny sizes; figures mean little)" || echo full)

bash "$HERE/table.sh" "$RESULTS" >"$WORK/table.md" || fail "cannot make the table"
{
    echo "# versync benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Mode: $MODE. $RUNS run(s), versync and PostgreSQL alternately, W2 and W5 $PAIRS" \
         "pair(s) a run; $((ELAPSED / 60)) min $((ELAPSED % 60)) s."
    echo "Machine: $ENVIRONMENT. $VERSIONS."
    echo "versync: $( [ "$VERSYNC_OK" = 1 ] && "$VERSYNC" --version 2>/dev/null || echo 'not built: versync side skipped'),"\
         "git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')."
    echo
    cat "$WORK/table.md"
    echo
    echo "Sizes: W1 $W1_ROWS rows in ${W1_TXN}-row transactions; W2 $W2_COMMITS single-row commits" \
         "${W2_INTERVAL_MS} ms apart; W3 a new slave replaying $W3_ROWS row changes (PostgreSQL:" \
         "a new subscription's initial copy of the $W1_ROWS-row table); W4 N = ${W4_NS// /, }" \
         "subscribers during a $W4_ROWS-row W1 run; W5 $W5_UPDATES updates over $W5_ROWS rows in" \
         "${W5_TXN}-update transactions; limits on $LIMIT_ROWS rows (apply: ${APPLY_TXN}-row transactions)."
    echo
    echo "Notes: median [min-max] over the runs (W2 and W5: over all their pairs). ratio =" \
         "versync / PostgreSQL, taken run by run (pair by pair), median of the pairs: above 1" \
         "is better for rates, below 1 is better for latencies and memory. 'vs limit' is" \
         "versync's median over the limit's median. Every server listens on 127.0.0.1 only;" \
         "CURVE on every versync socket; PostgreSQL connections are plain TCP without SSL. Durability settings are the defaults:" \
         "PostgreSQL fsync=on, synchronous_commit=on on both clusters (the subscription's own" \
         "synchronous_commit stays at its default, off: the apply worker does not wait for" \
         "its flush); the SQLite master is" \
         "written with synchronous=FULL (the default) in WAL mode; versync's broker commits" \
         "with synchronous=FULL, its slaves with synchronous=NORMAL. PostgreSQL's" \
         "wal_retrieve_retry_interval is lowered to 50 ms. The disk answers fsync from a cache." \
         "Every run checks that each slave matches its master (count and column sums)."
} >"$WORK/report.md"

cat "$WORK/report.md"
mkdir -p "$(dirname "$OUT")" 2>/dev/null
if [ -z "$OUT" ]; then
    mkdir -p "$HERE/results"
    OUT=$HERE/results/latest.md
    cp "$WORK/report.md" "$HERE/results/$(date -u +%Y-%m-%d-%H%M).md"
fi
cp "$WORK/report.md" "$OUT"
say "table written to $OUT"
if grep -q verify_failed "$RESULTS"; then
    say "some slave did not match its master: see the warnings above"
    exit 1
fi
