# lib.sh - shared by the end-to-end tests: runs the real versync binary and the sqlite3
# shell on 127.0.0.1, waits for conditions by polling with deadlines, compares databases
# row by row, and kills everything it started on exit.
#
# A test script does:  source "$(dirname "$0")/lib.sh" "$1"   ($1: the versync binary)

set -uo pipefail

VERSYNC=$(readlink -f "$1")
TEST_NAME=$(basename "$0" .sh)
ROOT=${VS_TEST_TMP:-/tmp/versync-test}/$TEST_NAME.$$
rm -rf "$ROOT"
mkdir -p "$ROOT"
declare -A PIDS=()
FAILURES=0
CHECKS=0

cleanup() {
    local status=$1 name
    for name in "${!PIDS[@]}"; do
        kill -9 "${PIDS[$name]}" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "$FAILURES" -eq 0 ] && [ "$status" -eq 0 ]; then
        rm -rf "$ROOT"
    else
        echo "logs kept in $ROOT"
    fi
}
trap 'cleanup $?' EXIT

log() { echo "[$TEST_NAME] $*"; }

check() {   # check "description" command...: one assertion
    local what=$1
    shift
    CHECKS=$((CHECKS + 1))
    if "$@"; then
        log "ok: $what"
    else
        log "FAIL: $what"
        FAILURES=$((FAILURES + 1))
    fi
}

finish() {
    echo "$((CHECKS - FAILURES)) passed, $FAILURES failed"
    [ "$FAILURES" -eq 0 ]
    exit $?
}

# wait_until SECONDS command...: polls every 20 ms until the command succeeds.
wait_until() {
    local deadline=$(($(date +%s%N) / 1000000 + $1 * 1000))
    shift
    while [ $(($(date +%s%N) / 1000000)) -lt $deadline ]; do
        if "$@" 2>/dev/null; then
            return 0
        fi
        sleep 0.02
    done
    return 1
}

# Two free consecutive ports on 127.0.0.1 (request, live): prints the first.
free_port_pair() {
    local port
    for _ in $(seq 1 50); do
        # below the ephemeral range (32768 and up), where outgoing connections take ports
        port=$((10000 + RANDOM % 22000))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null \
            && ! (exec 3<>/dev/tcp/127.0.0.1/$((port + 1))) 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# keys: a broker key, publisher keys pub1 pub2, subscriber keys sub1 sub2, and a stranger.
make_keys() {
    mkdir -p "$ROOT/keys" "$ROOT/publishers" "$ROOT/subscribers"
    local name
    for name in broker pub1 pub2 sub1 sub2 stranger; do
        "$VERSYNC" keygen "$ROOT/keys/$name" >/dev/null || return 1
    done
    cp "$ROOT/keys/pub1" "$ROOT/keys/pub2" "$ROOT/publishers/"
    cp "$ROOT/keys/sub1" "$ROOT/keys/sub2" "$ROOT/subscribers/"
}

# start NAME command...: runs a process in the background, logging to $ROOT/NAME.log.
start() {
    local name=$1
    shift
    "$@" >>"$ROOT/$name.log" 2>&1 &
    PIDS[$name]=$!
}

# stop NAME [SIGNAL]: signals the process and waits for it (at most 20 s, then SIGKILL);
# its exit code is left in $STOPPED. Call it in this shell, not in $(...): a subshell cannot
# wait for this shell's children.
STOPPED=
stop() {
    local name=$1 signal=${2:-TERM} pid=${PIDS[$1]:-}
    STOPPED=
    [ -n "$pid" ] || return 0
    kill -s "$signal" "$pid" 2>/dev/null
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 1000 ]; do
        sleep 0.02
        waited=$((waited + 1))
        # a zombie has exited: wait collects it below
        [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
    done
    kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" | cut -c1)" != Z ] && kill -9 "$pid"
    STOPPED=0
    wait "$pid" 2>/dev/null || STOPPED=$?
    unset "PIDS[$name]"
}

running() { kill -0 "${PIDS[$1]}" 2>/dev/null; }

# start_broker: on $PORT/$((PORT+1)) with data in $ROOT/broker-data. The first start moves to
# other ports if these were taken meanwhile (another program may grab them between our probe
# and the bind); a restart keeps the ports the clients know.
BROKER_STARTED=
start_broker() {
    local attempt
    for attempt in 1 2 3 4 5; do
        start broker "$VERSYNC" broker --data "$ROOT/broker-data" \
            --cert "$ROOT/keys/broker_secret" --publishers "$ROOT/publishers" \
            --subscribers "$ROOT/subscribers" --bind "tcp://127.0.0.1:$PORT"
        if wait_until 20 status_or_dead && running broker; then
            BROKER_STARTED=1
            return 0
        fi
        stop broker
        if [ -n "$BROKER_STARTED" ] || ! grep -q "in use" "$ROOT/broker.log"; then
            return 1
        fi
        log "ports $PORT/$((PORT + 1)) taken; trying others"
        PORT=$(free_port_pair) || return 1
    done
    return 1
}

status_or_dead() { status_ok || ! running broker; }

status_ok() {
    "$VERSYNC" status --broker "tcp://127.0.0.1:$PORT" --broker-key "$ROOT/keys/broker" \
        --cert "$ROOT/keys/sub1_secret" --json >/dev/null
}

# head_of STREAM: the broker's head sequence for a stream (0 if unknown).
head_of() {
    "$VERSYNC" status --broker "tcp://127.0.0.1:$PORT" --broker-key "$ROOT/keys/broker" \
        --cert "$ROOT/keys/sub1_secret" --json \
        | grep -o "\"name\": \"$1\", \"head\": [0-9]*" | grep -o '[0-9]*$' || echo 0
}

start_publisher() {   # start_publisher NAME DB [KEY] [extra options...]
    local name=$1 db=$2 key=${3:-pub1}
    shift 3 2>/dev/null || shift $#
    start "$name" "$VERSYNC" publish --db "$db" --broker "tcp://127.0.0.1:$PORT" \
        --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/${key}_secret" "$@"
}

start_subscriber() {  # start_subscriber NAME DB KEY --stream S [more options...]
    local name=$1 db=$2 key=$3
    shift 3
    start "$name" "$VERSYNC" subscribe --db "$db" --broker "tcp://127.0.0.1:$PORT" \
        --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/${key}_secret" "$@"
}

# dump DB TABLE: every row, SQL-quoted so that types show, in primary key order.
dump() {
    sqlite3 -readonly -cmd ".timeout 5000" "$1" ".mode quote" ".headers off" \
        "SELECT * FROM \"$2\" ORDER BY 1, 2" 2>/dev/null
}

tables_equal() {   # tables_equal MASTER SLAVE TABLE...: row-by-row equality of each table
    local master=$1 slave=$2 table
    shift 2
    [ -f "$slave" ] || return 1
    for table in "$@"; do
        local mine theirs
        mine=$(dump "$master" "$table") || return 1
        theirs=$(dump "$slave" "$table") || return 1
        [ "$mine" == "$theirs" ] || return 1
        # an existing table with no rows dumps empty on both sides: require the table too
        sqlite3 -readonly "$slave" "SELECT 1 FROM \"$table\" LIMIT 0" >/dev/null 2>&1 || return 1
    done
}

show_difference() {   # for the log when an equality check fails
    local master=$1 slave=$2 table=$3
    diff <(dump "$master" "$table") <(dump "$slave" "$table") | head -20
}

all_acked() {   # all_acked DB: the publisher has no unacknowledged log row left
    [ "$(sqlite3 -readonly "$1" ".timeout 2000" "SELECT count(*) FROM _versync_log
        WHERE version > (SELECT value FROM _versync_meta WHERE key = 'acked_version')")" = 0 ]
}

count_rows() { sqlite3 -readonly -cmd ".timeout 5000" "$1" "SELECT count(*) FROM \"$2\"" 2>/dev/null || echo 0; }

PORT=$(free_port_pair) || { echo "no free port"; exit 1; }
