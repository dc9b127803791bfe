#!/usr/bin/env bash
# Live convergence: inserts, updates, deletes and primary key changes across several tables
# (integer, text, composite and WITHOUT ROWID keys; every value type) and multi-table
# transactions reach a running slave; a table without a primary key is skipped; status shows
# the stream.
source "$(dirname "$0")/lib.sh" "$1"

TABLES="items people pairs tagged"
master=$ROOT/shop.db
slave=$ROOT/slave.db
make_keys || { log "keygen failed"; exit 1; }

sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, data BLOB);
CREATE TABLE people(email TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER);
CREATE TABLE pairs(a INTEGER, b TEXT, value REAL, PRIMARY KEY (b, a)) WITHOUT ROWID;
CREATE TABLE tagged(tag TEXT, n INTEGER, note TEXT, PRIMARY KEY (tag, n));
CREATE TABLE nokey(x, y);
INSERT INTO items VALUES (1, 'before attach', 5, 1.5, x'00ff00');
INSERT INTO nokey VALUES (1, 2);
SQL

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
start_subscriber sub "$slave" sub1 --stream shop

check "row written before the first attach is replicated" \
    wait_until 20 tables_equal "$master" "$slave" items

sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
BEGIN;
INSERT INTO items VALUES (2, 'two', 2, 2.25, NULL), (3, 'three', -3, -0.5, x''),
                         (4, 'min', -9223372036854775808, 1e308, randomblob(1000)),
                         (5, 'max', 9223372036854775807, 3.141592653589793, zeroblob(70000));
INSERT INTO people VALUES ('ada@example.org', 'Ada', 36), ('alan@example.org', 'Alan', NULL);
INSERT INTO pairs VALUES (1, 'x', 0.1), (2, 'x', 0.2), (1, 'y', NULL);
INSERT INTO tagged VALUES ('red', 1, 'r1'), ('red', 2, 'r2'), ('blue', 1, 'b1');
COMMIT;
SQL
check "multi-table insert transaction converges" \
    wait_until 20 tables_equal "$master" "$slave" $TABLES

for i in $(seq 10 400); do
    echo "INSERT INTO items VALUES ($i, 'item $i', $i, $i.5, randomblob($((i % 7))));"
done | sqlite3 -cmd ".timeout 10000" "$master"
sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
UPDATE items SET qty = qty * 2, name = name || ' (updated)' WHERE id % 3 = 0;
UPDATE people SET age = 37 WHERE email = 'ada@example.org';
DELETE FROM items WHERE id % 5 = 0;
DELETE FROM tagged WHERE tag = 'blue';
UPDATE items SET id = 100000 WHERE id = 11;
UPDATE people SET email = 'lovelace@example.org' WHERE email = 'ada@example.org';
UPDATE pairs SET b = 'z' WHERE a = 2;
UPDATE tagged SET n = 20 WHERE tag = 'red' AND n = 2;
SQL
check "single-row autocommits, updates, deletes and key changes converge" \
    wait_until 20 tables_equal "$master" "$slave" $TABLES

sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
BEGIN;
UPDATE items SET qty = 0 WHERE id < 50;
INSERT INTO people VALUES ('grace@example.org', 'Grace', 85);
DELETE FROM pairs WHERE b = 'y';
INSERT OR REPLACE INTO tagged VALUES ('red', 1, 'replaced');
COMMIT;
SQL
check "mixed multi-table transaction converges" \
    wait_until 20 tables_equal "$master" "$slave" $TABLES
if ! tables_equal "$master" "$slave" $TABLES; then
    for t in $TABLES; do show_difference "$master" "$slave" "$t"; done
fi

sqlite3 -cmd ".timeout 10000" "$master" "CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB);
    INSERT INTO big VALUES (1, randomblob(16777216)), (2, zeroblob(0)), (3, randomblob(1048577));"
big_digest() {
    sqlite3 -readonly -cmd ".timeout 5000" "$1" \
        "SELECT id, typeof(data), length(data), hex(sha3(data)) FROM big ORDER BY id" 2>/dev/null
}
big_equal() { [ -n "$(big_digest "$slave")" ] && [ "$(big_digest "$master")" == "$(big_digest "$slave")" ]; }
check "a 16 MiB blob, an empty blob and a table created after attach arrive byte for byte" \
    wait_until 30 big_equal

check "old primary keys are gone on the slave" \
    test "$(sqlite3 "$slave" "SELECT count(*) FROM items WHERE id = 11; SELECT count(*) FROM people WHERE email = 'ada@example.org'")" == "$(printf '0\n0')"
check "the table without a primary key is not replicated" \
    test -z "$(sqlite3 "$slave" "SELECT name FROM sqlite_master WHERE name = 'nokey'")"
check "value types are kept exactly" \
    test "$(sqlite3 "$slave" "SELECT typeof(qty), typeof(price), typeof(data) FROM items WHERE id IN (2, 4) ORDER BY id")" == "$(printf 'integer|real|null\ninteger|real|blob')"

head=$(head_of shop)
check "status reports the stream with a head sequence" test "${head:-0}" -gt 0
json_status() {
    "$VERSYNC" status --broker "tcp://127.0.0.1:$PORT" --broker-key "$ROOT/keys/broker" \
        --cert "$ROOT/keys/pub1_secret" --json | grep -q '^{"streams": \[{"name": "shop", "head": '
}
check "status --json (with a publisher's key) is one object with the stream" json_status

stop pub
check "publisher exits 0 on SIGTERM" test "$STOPPED" == 0
stop sub
check "subscriber exits 0 on SIGTERM" test "$STOPPED" == 0
stop broker INT
check "broker exits 0 on SIGINT" test "$STOPPED" == 0
check "slave holds its position with the data" \
    test "$(sqlite3 -readonly -cmd ".timeout 5000" "$slave" "SELECT seq FROM _versync_state WHERE stream = 'shop'")" == "$head"
finish
