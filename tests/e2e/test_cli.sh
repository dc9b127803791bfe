#!/usr/bin/env bash
# The command line: --help everywhere, usage errors exit 2 with one line, run-time errors
# (unreadable files, a port in use, a missing database) exit 1 with one clear line, keygen's
# files and modes, and a clean exit 0 on SIGTERM.
source "$(dirname "$0")/lib.sh" "$1"

expect_exit() {   # expect_exit CODE PATTERN command...: exit code and a line matching PATTERN
    local code=$1 pattern=$2
    shift 2
    local output status=0
    output=$(timeout 30 "$@" 2>&1) || status=$?
    if [ "$status" != "$code" ]; then
        echo "exit $status, expected $code: $output"
        return 1
    fi
    grep -qiE -- "$pattern" <<<"$output" || { echo "no '$pattern' in: $output"; return 1; }
}

check "versync --help" expect_exit 0 "usage: versync" "$VERSYNC" --help
for command in keygen broker publish subscribe status demo; do
    check "versync $command --help" expect_exit 0 "usage: versync $command" "$VERSYNC" "$command" --help
done
check "no command: usage, exit 2" expect_exit 2 "usage" "$VERSYNC"
check "unknown command: exit 2" expect_exit 2 "unknown command 'frobnicate'" "$VERSYNC" frobnicate
check "unknown option: exit 2" expect_exit 2 "unknown or incomplete option '--frob'" "$VERSYNC" broker --frob
check "missing options: exit 2" expect_exit 2 "required" "$VERSYNC" publish --db x.db
check "bad endpoint: exit 2" expect_exit 2 "invalid endpoint 'nonsense'" \
    "$VERSYNC" status --broker nonsense --broker-key k --cert c
check "bad stream name: exit 2" expect_exit 2 "invalid stream name 'a/b'" \
    "$VERSYNC" publish --db x --broker tcp://127.0.0.1:1 --broker-key k --cert c --stream a/b

check "keygen writes a key pair" expect_exit 0 "^.{40}$" "$VERSYNC" keygen "$ROOT/k"
check "the secret file has mode 0600" test "$(stat -c %a "$ROOT/k_secret")" == 600
check "keygen creates missing folders" expect_exit 0 "^.{40}$" "$VERSYNC" keygen "$ROOT/new/folder/k"
check "... private to the user" test "$(stat -c %a "$ROOT/new/folder")" == 700
check "keygen never overwrites" expect_exit 1 "exists already" "$VERSYNC" keygen "$ROOT/k"
make_keys || { log "keygen failed"; exit 1; }

broker_args=(--data "$ROOT/data" --publishers "$ROOT/publishers" --subscribers "$ROOT/subscribers")
check "missing certificate: exit 1" expect_exit 1 "cannot read --cert '$ROOT/none'" \
    "$VERSYNC" broker "${broker_args[@]}" --cert "$ROOT/none" --bind "tcp://127.0.0.1:$PORT"
mkdir -p "$ROOT/public-only" && cp "$ROOT/keys/broker" "$ROOT/public-only/"
check "a public certificate as --cert: exit 1" expect_exit 1 "no secret key" \
    "$VERSYNC" broker "${broker_args[@]}" --cert "$ROOT/public-only/broker" --bind "tcp://127.0.0.1:$PORT"
check "missing folder: exit 1" expect_exit 1 "not a directory" \
    "$VERSYNC" broker --data "$ROOT/data" --publishers "$ROOT/nowhere" --subscribers "$ROOT/subscribers" \
    --cert "$ROOT/keys/broker_secret"

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
check "a port in use: exit 1 with the reason" expect_exit 1 "in use" \
    "$VERSYNC" broker "${broker_args[@]}" --cert "$ROOT/keys/broker_secret" --bind "tcp://127.0.0.1:$PORT"
check "publish to a missing database: exit 1" expect_exit 1 "$ROOT/missing.db" \
    "$VERSYNC" publish --db "$ROOT/missing.db" --broker "tcp://127.0.0.1:$PORT" \
    --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/pub1_secret"
check "status of an empty broker" expect_exit 0 "no streams yet" \
    "$VERSYNC" status --broker "tcp://127.0.0.1:$PORT" --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/sub1_secret"
check "status with an unknown key times out with a hint: exit 1" expect_exit 1 "no answer" \
    "$VERSYNC" status --broker "tcp://127.0.0.1:$PORT" --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/stranger_secret"
check "the broker logs with a level" grep -qE "^I: " "$ROOT/broker.log"
stop broker TERM
check "the broker exits 0 on SIGTERM" test "$STOPPED" == 0
finish
