#!/usr/bin/env bash
# In-process capture: a program that writes its master through a vs_writer (vs_writer.h;
# here the helper tests/vs_writer_exec) replicates like one whose writes go through the
# triggers: inserts, updates, key changes, deletes (a DELETE without WHERE too), a REPLACE
# that deletes another row for a UNIQUE column, while the sqlite3 shell writes the same
# database through the triggers, and a table attached after the publisher started.
source "$(dirname "$0")/lib.sh" "$1"

WRITER=$(dirname "$VERSYNC")/tests/vs_writer_exec
[ -x "$WRITER" ] || { log "no $WRITER (build the tests)"; exit 1; }
TABLES="items people pairs accounts"
master=$ROOT/app.db
slave=$ROOT/slave.db
make_keys || { log "keygen failed"; exit 1; }

sqlite3 -cmd ".timeout 10000" "$master" <<'SQL'
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL);
CREATE TABLE people(email TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER);
CREATE TABLE pairs(a INTEGER, b TEXT, value REAL, PRIMARY KEY (b, a)) WITHOUT ROWID;
CREATE TABLE accounts(id INTEGER PRIMARY KEY, login TEXT UNIQUE, note TEXT);
SQL

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
start_subscriber sub "$slave" sub1 --stream app
# the writer needs the publisher's tables and triggers
has_triggers() {
    [ "$(sqlite3 -readonly -cmd ".timeout 2000" "$master" "SELECT count(*) FROM sqlite_schema
        WHERE type = 'trigger' AND name LIKE '\_versync\_%\_ins' ESCAPE '\' AND tbl_name IN
        ($(printf "'%s'," $* | sed 's/,$//'))")" = "$#" ]
}
check "the publisher attached the tables" wait_until 20 has_triggers $TABLES

check "a transaction of every key shape, through the writer" \
    "$WRITER" "$master" "
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
    INSERT INTO items SELECT i, 'item ' || i, i % 7, i / 4.0 FROM n;
    INSERT INTO people VALUES ('ada@example.org', 'Ada', 36), ('alan@example.org', 'Alan', NULL);
    INSERT INTO pairs VALUES (1, 'x', 0.1), (2, 'x', 0.2), (1, 'y', NULL);
    INSERT INTO accounts VALUES (1, 'ada', 'first'), (2, 'alan', NULL);"
check "it converges" wait_until 20 tables_equal "$master" "$slave" $TABLES

check "updates, key changes, deletes and a REPLACE, through the writer" \
    "$WRITER" "$master" \
    "UPDATE items SET qty = qty + 1 WHERE id % 3 = 0;
     UPDATE items SET id = id + 100000 WHERE id % 97 = 0;
     DELETE FROM items WHERE id % 5 = 0;" \
    "UPDATE people SET email = 'lovelace@example.org' WHERE email = 'ada@example.org';
     UPDATE pairs SET b = 'z' WHERE a = 2;
     INSERT OR REPLACE INTO accounts VALUES (10, 'ada', 'replaces account 1');" \
    "DELETE FROM pairs; UPDATE people SET age = 37;"
check "they converge, account 1 gone with its login" \
    wait_until 20 tables_equal "$master" "$slave" $TABLES
check "the slave has no account 1" \
    test "$(count_rows "$slave" accounts)" = 2

# The writer and the sqlite3 shell (triggers) write the same database at the same time.
writes=()
for i in $(seq 1 100); do
    writes+=("INSERT INTO items VALUES ($((500000 + i)), 'writer $i', $i, 0.5);
              UPDATE items SET qty = -$i WHERE id = $i;")
done
"$WRITER" "$master" "${writes[@]}" &
writer_pid=$!
for i in $(seq 1 100); do
    echo "INSERT INTO people VALUES ('p$i@example.org', 'shell $i', $i);"
done | sqlite3 -cmd ".timeout 10000" "$master"
check "the writer's 100 transactions next to the shell's 100" wait "$writer_pid"
check "both converge" wait_until 20 tables_equal "$master" "$slave" $TABLES

# A table created now is attached by the running publisher, then written through the writer.
sqlite3 -cmd ".timeout 10000" "$master" "CREATE TABLE late(k TEXT PRIMARY KEY, v)"
check "the publisher attached the new table" wait_until 20 has_triggers late
check "the new table, through the writer" \
    "$WRITER" "$master" "INSERT INTO late VALUES ('a', 1), ('b', x'00'); UPDATE late SET v = 2
    WHERE k = 'a'"
check "it converges" wait_until 20 tables_equal "$master" "$slave" $TABLES late
if ! tables_equal "$master" "$slave" $TABLES late; then
    for t in $TABLES late; do show_difference "$master" "$slave" "$t"; done
fi
finish
