#!/usr/bin/env bash
# Replay under kills: a slave that starts from nothing replays a history of 300,000 rows (about
# 40 MiB of WAL on the slave) and is killed with SIGKILL up to four times while it applies (a
# restart that finds the replay done ends the kills; the first lands mid-replay). Most of
# that time its checkpointer thread is copying the WAL into the database, so the kills land
# in the middle of batches, of commits and of checkpoints. Each restart resumes from the
# stored position; at the end the slave equals the master row for row and passes SQLite's
# integrity check.
source "$(dirname "$0")/lib.sh" "$1"

master=$ROOT/bulk.db
slave=$ROOT/slave.db
make_keys || { log "keygen failed"; exit 1; }
sqlite3 -cmd ".timeout 10000" "$master" \
    "CREATE TABLE parts(id INTEGER PRIMARY KEY, body BLOB, note TEXT, qty INTEGER);"

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
for batch in $(seq 0 29); do
    sqlite3 -cmd ".timeout 10000" "$master" \
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         INSERT INTO parts SELECT $batch * 10000 + i, randomblob(60), 'batch $batch', i FROM n;"
done
sqlite3 -cmd ".timeout 10000" "$master" \
    "UPDATE parts SET note = 'updated', qty = -qty WHERE id % 7 = 0;
     DELETE FROM parts WHERE id % 11 = 0;"
check "the broker acknowledges the whole history" wait_until 60 all_acked "$master"
stop pub

position() {
    sqlite3 -readonly "$slave" ".timeout 2000" \
        "SELECT seq FROM _versync_state WHERE stream = 'bulk'" 2>/dev/null
}
on_from() {   # on_from SEQ: the slave's position is past SEQ, or at the head already
    local seq
    seq=$(position)
    [ -n "$seq" ] && { [ "$seq" -gt "$1" ] || [ "$seq" = "$head" ]; }
}
head=$(head_of bulk)
kills=0
# On a loaded machine a replay can end before the first look at its position: then it starts
# again from an empty slave, at most three times, so that a kill lands mid-replay.
for attempt in 1 2 3; do
    last=0
    for round in 1 2 3 4; do
        start_subscriber sub "$slave" sub1 --stream bulk
        check "start $round: the slave moves on from seq $last" wait_until 30 on_from "$last"
        if [ "$(position)" = "$head" ]; then
            break
        fi
        sleep "0.0$((RANDOM % 5))"
        last=$(position)
        last=${last:-0}
        [ "$last" -lt "$head" ] && kills=$((kills + 1))
        log "kill -9 the slave at seq $last of $head"
        stop sub KILL
    done
    stop sub
    [ "$kills" -ge 1 ] && break
    log "attempt $attempt: the replay ended before a kill; again from an empty slave"
    rm -f "$slave" "$slave-wal" "$slave-shm"
done
check "at least one kill landed before the end of the replay" test "$kills" -ge 1
start_subscriber sub "$slave" sub1 --stream bulk
parts_equal() {   # row by row: a SHA3 of every row of the table in key order, and the counts
    local query="SELECT * FROM parts ORDER BY id"
    [ "$(count_rows "$slave" parts)" = "$(count_rows "$master" parts)" ] &&
        [ "$(sqlite3 -readonly "$master" "SELECT hex(sha3_query('$query'))")" = \
            "$(sqlite3 -readonly "$slave" ".timeout 5000" "SELECT hex(sha3_query('$query'))")" ]
}
check "the slave converges to the master row for row" wait_until 60 parts_equal
check "the slave's position is the head" test "$(position)" = "$head"
stop sub
check "the slave database passes SQLite's integrity check" \
    test "$(sqlite3 "$slave" "PRAGMA integrity_check")" = ok
finish
