#!/usr/bin/env bash
# History: a slave that starts from nothing replays the whole history (after the publisher
# has stopped), two streams from two masters go into one slave database, a restarted slave
# resumes from its stored position, and the broker resumes every stream after a restart.
source "$(dirname "$0")/lib.sh" "$1"

east=$ROOT/east.db
west=$ROOT/west.db
make_keys || { log "keygen failed"; exit 1; }
sqlite3 -cmd ".timeout 10000" "$east" "CREATE TABLE sales(id INTEGER PRIMARY KEY, region TEXT, amount REAL);"
sqlite3 "$west" "CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INTEGER, photo BLOB);"

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher east "$east" pub1
start_publisher west "$west" pub2
{
    echo "BEGIN;"
    for i in $(seq 1 3000); do echo "INSERT INTO sales VALUES ($i, 'east', $i.25);"; done
    echo "COMMIT;"
    for i in $(seq 1 200); do echo "UPDATE sales SET amount = amount + 1 WHERE id = $i;"; done
    echo "DELETE FROM sales WHERE id > 2900;"
} | sqlite3 -cmd ".timeout 10000" "$east"
{
    for i in $(seq 1 500); do echo "INSERT INTO stock VALUES ('sku-$i', $i, randomblob($i));"; done
    echo "UPDATE stock SET qty = 0 WHERE qty % 2 = 0;"
} | sqlite3 -cmd ".timeout 10000" "$west"

both_acked() { all_acked "$east" && all_acked "$west"; }
check "the broker acknowledges both streams" wait_until 30 both_acked
stop east
stop west
east_head=$(head_of east)
west_head=$(head_of west)
check "status shows a head for each stream" test "$east_head" -gt 0 -a "$west_head" -gt 0

log "restart the broker: it resumes every stream"
stop broker
start_broker || { log "broker did not restart"; exit 1; }
check "heads survive a broker restart" \
    test "$(head_of east) $(head_of west)" == "$east_head $west_head"

slave=$ROOT/late.db
start_subscriber late "$slave" sub1 --stream east --stream west
both_equal() { tables_equal "$east" "$slave" sales && tables_equal "$west" "$slave" stock; }
check "a new slave replays the whole history of two streams into one database" \
    wait_until 30 both_equal
check "its positions equal the heads" \
    test "$(sqlite3 "$slave" "SELECT group_concat(seq, ' ') FROM (SELECT seq FROM _versync_state ORDER BY stream)")" == "$east_head $west_head"

log "stop the slave, write more, restart it: it resumes from its position"
stop late
start_publisher east "$east" pub1
sqlite3 -cmd ".timeout 10000" "$east" "INSERT INTO sales VALUES (5000, 'late', 1.0); DELETE FROM sales WHERE id = 1;"
head_above() { [ "$(head_of "$1")" -gt "$2" ]; }
check "the broker stores the new writes" wait_until 20 head_above east "$east_head"
start_subscriber late "$slave" sub1 --stream east --stream west
check "the restarted slave converges" \
    wait_until 20 tables_equal "$east" "$slave" sales
position_of() { sqlite3 -readonly "$1" "SELECT seq FROM _versync_state WHERE stream = '$2'" 2>/dev/null; }
east_head=$(head_of east)
start_subscriber filtered "$ROOT/filtered.db" sub2 --stream east --stream west --table stock
at_heads() {
    [ "$(position_of "$ROOT/filtered.db" east)" = "$east_head" ] &&
        [ "$(position_of "$ROOT/filtered.db" west)" = "$west_head" ]
}
check "a filtered slave reaches both heads" wait_until 20 at_heads
check "the table filter applied only the named table" \
    test "$(count_rows "$ROOT/filtered.db" stock) $(sqlite3 "$ROOT/filtered.db" "SELECT count(*) FROM sqlite_master WHERE name = 'sales'")" == "500 0"
finish
