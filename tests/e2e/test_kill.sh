#!/usr/bin/env bash
# Crashes under load: kill -9 of the publisher, the broker and the subscriber while a writer
# commits transfers (each moves money between two accounts and logs an event) and bulk
# transactions big enough to be split over several change sets. A watcher reads the slave
# all along: the sum of the balances must never differ from the master's invariant (no half
# transaction ever visible). At the end master and slave are equal row for row.
source "$(dirname "$0")/lib.sh" "$1"

master=$ROOT/bank.db
slave=$ROOT/slave.db
make_keys || { log "keygen failed"; exit 1; }

sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
CREATE TABLE events(id INTEGER PRIMARY KEY, account INTEGER, amount INTEGER, note TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
INSERT INTO accounts SELECT i, 1000 FROM n;
SQL
TOTAL=100000

writer() {   # rounds of 200 transfers, with a bulk transaction of ~3 MiB every 5th round
    local round event=0
    for round in $(seq 1 25); do
        {
            echo ".timeout 10000"
            for _ in $(seq 1 200); do
                event=$((event + 1))
                local from=$((RANDOM % 100 + 1)) to=$((RANDOM % 100 + 1)) amount=$((RANDOM % 50))
                echo "BEGIN; UPDATE accounts SET balance = balance - $amount WHERE id = $from;"
                echo "UPDATE accounts SET balance = balance + $amount WHERE id = $to;"
                echo "INSERT INTO events(account, amount, note) VALUES ($from, $amount, 'transfer $round'); COMMIT;"
            done
            if [ $((round % 5)) -eq 0 ]; then
                echo "BEGIN;"
                echo "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
                echo "INSERT INTO events(account, amount, note) SELECT i % 100, i, hex(randomblob(60)) FROM n;"
                echo "UPDATE accounts SET balance = balance - 7 WHERE id = 1;"
                echo "UPDATE accounts SET balance = balance + 7 WHERE id = 2;"
                echo "COMMIT;"
            fi
        } | sqlite3 -cmd ".timeout 10000" "$master" || echo "writer round $round failed" >>"$ROOT/writer.errors"
        sleep 0.05
    done
}

watcher() {  # records any moment the slave shows a sum other than the invariant
    while [ ! -f "$ROOT/stop-watcher" ]; do
        local seen
        sleep 0.01
        seen=$(sqlite3 -readonly "$slave" ".timeout 2000" \
            "SELECT count(*) || ' ' || ifnull(sum(balance), 0) FROM accounts" 2>/dev/null) || continue
        case "$seen" in
            "0 0"|"100 $TOTAL"|"") ;;
            *) echo "$seen" >>"$ROOT/violations" ;;
        esac
    done
}

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
start_subscriber sub "$slave" sub1 --stream bank
wait_until 20 tables_equal "$master" "$slave" accounts || log "initial sync slow"

watcher &
WATCHER=$!
writer &
WRITER=$!

sleep 0.7
log "kill -9 publisher";  stop pub KILL;    sleep 0.3; start_publisher pub "$master" pub1
sleep 0.7
log "kill -9 broker";     stop broker KILL; sleep 0.3; start_broker || log "broker restart slow"
sleep 0.7
log "kill -9 subscriber"; stop sub KILL;    sleep 0.3; start_subscriber sub "$slave" sub1 --stream bank
sleep 0.7
log "kill -9 all three";  stop pub KILL; stop broker KILL; stop sub KILL
sleep 0.3
start_broker || log "broker restart slow"
start_subscriber sub "$slave" sub1 --stream bank
start_publisher pub "$master" pub1
sleep 0.5
log "kill -9 subscriber again"; stop sub KILL; start_subscriber sub "$slave" sub1 --stream bank

wait "$WRITER"
check "the writer committed every transaction" test ! -s "$ROOT/writer.errors"
check "master and slave converge row for row after the crashes" \
    wait_until 90 tables_equal "$master" "$slave" accounts events
touch "$ROOT/stop-watcher"
wait "$WATCHER"
if ! tables_equal "$master" "$slave" accounts events; then
    show_difference "$master" "$slave" accounts
    log "events: master $(count_rows "$master" events), slave $(count_rows "$slave" events)"
fi
check "the master's invariant holds" \
    test "$(sqlite3 -cmd ".timeout 10000" "$master" "SELECT sum(balance) FROM accounts")" == "$TOTAL"
check "no half transaction was ever visible on the slave" test ! -s "$ROOT/violations"
[ -s "$ROOT/violations" ] && head -5 "$ROOT/violations"
check "every event arrived exactly once" \
    test "$(count_rows "$slave" events)" == "$(count_rows "$master" events)"
finish
