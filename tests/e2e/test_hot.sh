#!/usr/bin/env bash
# Sustained load: 300 transactions back to back, each updating 20 of 100 hot rows and
# inserting an event, with deletes, re-inserts and key changes among them. The writer
# outpaces the round trip to the broker, so the publisher lingers (--linger 500): a handful
# of change sets carry the 300 transactions (with --linger 0, ACK clocking alone sent about
# 50 here) and a row updated many times travels once a set. The slave must still end equal
# to the master, row by row. A single commit after the burst still arrives; --linger takes
# 0 to 10000 and nothing else, and only on publish.
source "$(dirname "$0")/lib.sh" "$1"

TABLES="hot events"
master=$ROOT/load.db
slave=$ROOT/slave.db
make_keys || { log "keygen failed"; exit 1; }

linger_refused() {   # linger_refused VALUE: publish exits 2 (usage) before connecting
    "$VERSYNC" publish --db "$master" --broker "tcp://127.0.0.1:$PORT" \
        --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/pub1_secret" --linger "$1" \
        >/dev/null 2>&1
    [ $? -eq 2 ]
}
check "--linger refuses a negative value" linger_refused -1
check "--linger refuses a value over 10000" linger_refused 10001
check "--linger refuses a value that is not a number" linger_refused 20ms
linger_accepted() {   # linger_accepted VALUE: past the options, publish fails on the missing db
    "$VERSYNC" publish --db "$ROOT/missing.db" --broker "tcp://127.0.0.1:$PORT" \
        --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/pub1_secret" --linger "$1" \
        >/dev/null 2>&1
    [ $? -eq 1 ]
}
check "--linger takes 0 (never wait)" linger_accepted 0
check "--linger takes 10000" linger_accepted 10000
subscribe_refuses_linger() {
    "$VERSYNC" subscribe --db "$ROOT/never.db" --broker "tcp://127.0.0.1:$PORT" \
        --broker-key "$ROOT/keys/broker" --cert "$ROOT/keys/sub1_secret" --stream load \
        --linger 5 >/dev/null 2>&1
    [ $? -eq 2 ] && [ ! -e "$ROOT/never.db" ]
}
check "subscribe refuses --linger (an option of publish)" subscribe_refuses_linger

sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
CREATE TABLE hot(id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, note TEXT);
CREATE TABLE events(id INTEGER PRIMARY KEY, txn INTEGER, what TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
INSERT INTO hot SELECT i, 0, 'row ' || i FROM n;
INSERT INTO events(txn, what) VALUES (0, 'before the burst');
SQL

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1 --linger 500
start_subscriber sub "$slave" sub1 --stream load

check "the hot rows reach the slave" wait_until 20 tables_equal "$master" "$slave" $TABLES
before=$(head_of load)

# 300 transactions in one sqlite3 process: each commit follows the last at once, without an
# fsync (synchronous=NORMAL), so the writer outpaces the round trip to the broker.
burst() {
    echo "PRAGMA synchronous = NORMAL;"
    for t in $(seq 1 300); do
        echo "BEGIN;"
        for u in $(seq 1 20); do
            echo "UPDATE hot SET qty = qty + 1, note = 'txn $t update $u' WHERE id = $(((t * 37 + u * 11) % 100 + 1));"
        done
        echo "INSERT INTO events(txn, what) VALUES ($t, 'burst');"
        if [ $((t % 25)) -eq 0 ]; then
            echo "DELETE FROM hot WHERE id = $((t % 100 + 1));"
            echo "INSERT INTO hot VALUES ($((t % 100 + 1)), -$t, 're-inserted in txn $t');"
            echo "UPDATE hot SET id = id + 1000 * $t WHERE id = $(((t + 50) % 100 + 1));"
            echo "INSERT INTO hot VALUES ($(((t + 50) % 100 + 1)), $t, 'new key in txn $t');"
            echo "DELETE FROM events WHERE id = $((t / 2));"
        fi
        echo "COMMIT;"
    done
}
burst >"$ROOT/burst.sql"   # written first: the shell is slower than SQLite
sqlite3 -cmd ".timeout 10000" "$master" <"$ROOT/burst.sql"

check "after 300 back-to-back transactions the slave equals the master" \
    wait_until 60 tables_equal "$master" "$slave" $TABLES
if ! tables_equal "$master" "$slave" $TABLES; then
    for t in $TABLES; do show_difference "$master" "$slave" "$t"; done
fi
after=$(head_of load)
log "the 300 transactions travelled in $((after - before)) change sets"
check "the transactions shared change sets (fewer than 20 sets for 300 commits)" \
    test "$((after - before))" -gt 0 -a "$((after - before))" -lt 20

sqlite3 -cmd ".timeout 10000" "$master" "UPDATE hot SET note = 'single commit' WHERE id = 7;"
single_arrived() {
    [ "$(sqlite3 -readonly -cmd ".timeout 5000" "$slave" "SELECT note FROM hot WHERE id = 7")" == "single commit" ]
}
check "a single commit after the burst arrives" wait_until 20 single_arrived
check "and the tables are still equal" tables_equal "$master" "$slave" $TABLES

stop pub
check "publisher exits 0 on SIGTERM" test "$STOPPED" == 0
stop sub
stop broker
finish
