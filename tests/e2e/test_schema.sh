#!/usr/bin/env bash
# Schemas that differ: a slave table with an extra column and without one of the master's
# gets the columns both sides have (its own column keeps its values); a slave table whose
# primary key differs is refused: the subscriber exits 1 with a clear reason and writes
# nothing of the refused batch.
source "$(dirname "$0")/lib.sh" "$1"

master=$ROOT/crm.db
make_keys || { log "keygen failed"; exit 1; }
sqlite3 "$master" <<'SQL'
CREATE TABLE contacts(id INTEGER PRIMARY KEY, name TEXT, email TEXT, score REAL);
INSERT INTO contacts VALUES (1, 'Ada', 'ada@example.org', 9.5), (2, 'Alan', NULL, 7.25);
SQL
sqlite3 "$ROOT/mapped.db" <<'SQL'
CREATE TABLE contacts(id INTEGER PRIMARY KEY, name TEXT, score REAL, local_note TEXT DEFAULT 'mine');
INSERT INTO contacts(id, name, score, local_note) VALUES (1, 'old name', 0, 'keep me');
SQL
sqlite3 "$ROOT/refused.db" <<'SQL'
CREATE TABLE contacts(id INTEGER, name TEXT, email TEXT, score REAL, PRIMARY KEY (id, name));
INSERT INTO contacts VALUES (99, 'untouched', NULL, NULL);
SQL

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
start_subscriber mapped "$ROOT/mapped.db" sub1 --stream crm
start_subscriber refused "$ROOT/refused.db" sub2 --stream crm

common() { sqlite3 -readonly -cmd ".timeout 5000" "$1" ".mode quote" "SELECT id, name, score FROM contacts ORDER BY id"; }
mapped_equal() { [ "$(common "$master")" == "$(common "$ROOT/mapped.db")" ]; }
check "the differing slave table converges on the common columns" wait_until 20 mapped_equal
sqlite3 -cmd ".timeout 10000" "$master" "UPDATE contacts SET name = 'Ada L.', score = 10 WHERE id = 1; INSERT INTO contacts VALUES (3, 'Grace', 'g@example.org', 8);"
check "later changes converge too" wait_until 20 mapped_equal
check "the slave-only column keeps its value on update" \
    test "$(sqlite3 "$ROOT/mapped.db" "SELECT local_note FROM contacts WHERE id = 1")" == "keep me"
check "rows the slave did not have get its default" \
    test "$(sqlite3 "$ROOT/mapped.db" "SELECT local_note FROM contacts WHERE id = 3")" == "mine"

refused_stopped() { ! running refused; }
check "a slave whose primary key differs stops" wait_until 20 refused_stopped
stop refused
check "... with exit code 1" test "$STOPPED" == 1
check "... and a reason naming the primary key" grep -q "primary key" "$ROOT/refused.log"
check "... having written nothing" \
    test "$(sqlite3 "$ROOT/refused.db" ".mode quote" "SELECT * FROM contacts")" == "99,'untouched',NULL,NULL"
check "... and stored no position" \
    test "$(sqlite3 "$ROOT/refused.db" "SELECT count(*) FROM _versync_state" 2>/dev/null || echo 0)" == 0
finish
