#!/usr/bin/env bash
# REPLACE over UNIQUE columns: INSERT OR REPLACE and UPDATE OR REPLACE delete the rows whose
# values collide in a UNIQUE index besides the primary key (partial ones included). Those
# deletes must reach the slave, or it keeps the old rows and refuses the new one (its copy of
# the index collides).
# A transaction that swaps two UNIQUE values reaches the slave as two upserts that collide
# in either order, and a rotation of values over many rows can span several change sets.
# The slave converges and keeps following.
source "$(dirname "$0")/lib.sh" "$1"

master=$ROOT/accounts.db
slave=$ROOT/slave.db
make_keys || { log "keygen failed"; exit 1; }
sqlite3 "$master" "CREATE TABLE acc(id INTEGER PRIMARY KEY, login TEXT UNIQUE, mail TEXT);
    CREATE UNIQUE INDEX acc_mail ON acc(mail COLLATE NOCASE);
    INSERT INTO acc VALUES (1, 'ada', 'ada@x'), (2, 'bob', 'bob@x'), (3, 'cy', 'cy@x');"
start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
start_subscriber sub "$slave" sub1 --stream accounts
check "the first rows arrive" wait_until 20 tables_equal "$master" "$slave" acc

sqlite3 -cmd ".timeout 10000" "$master" "INSERT OR REPLACE INTO acc VALUES (4, 'ada', 'd@x')"
check "INSERT OR REPLACE over a UNIQUE column converges" \
    wait_until 20 tables_equal "$master" "$slave" acc
sqlite3 -cmd ".timeout 10000" "$master" "BEGIN;
    INSERT OR REPLACE INTO acc VALUES (5, 'eve', 'BOB@X');
    UPDATE OR REPLACE acc SET login = 'cy' WHERE id = 5;
    COMMIT;"
check "a NOCASE index and UPDATE OR REPLACE converge" \
    wait_until 20 tables_equal "$master" "$slave" acc
sqlite3 -cmd ".timeout 10000" "$master" "BEGIN;
    UPDATE acc SET login = 'tmp' WHERE id = 4;
    UPDATE acc SET login = 'ada' WHERE id = 5;
    UPDATE acc SET login = 'cy' WHERE id = 4;
    COMMIT;"
check "a transaction that swaps two UNIQUE values converges" \
    wait_until 20 tables_equal "$master" "$slave" acc
# A partial UNIQUE index: only live rows must be unique, and only they are replaced.
sqlite3 -cmd ".timeout 10000" "$master" "CREATE TABLE member(id INTEGER PRIMARY KEY,
        mail TEXT, gone INT DEFAULT 0);
    CREATE UNIQUE INDEX member_live ON member(mail) WHERE gone = 0;
    INSERT INTO member VALUES (1, 'm@x', 1), (2, 'm@x', 0), (3, 'n@x', 0);"
check "a table with a partial UNIQUE index arrives" \
    wait_until 20 tables_equal "$master" "$slave" member
sqlite3 -cmd ".timeout 10000" "$master" "INSERT OR REPLACE INTO member VALUES (4, 'm@x', 0)"
check "INSERT OR REPLACE over a partial UNIQUE index converges" \
    wait_until 20 tables_equal "$master" "$slave" member
# A rotation of 20,000 UNIQUE codes in one transaction: more than one change set (the
# publisher cuts a read past 256 KiB), so a row can take the code of a row in the next set.
sqlite3 -cmd ".timeout 10000" "$master" "CREATE TABLE seat(id INTEGER PRIMARY KEY,
        code TEXT UNIQUE, note TEXT);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
    INSERT INTO seat SELECT i, printf('c%06d', i), printf('%040d', i) FROM n;"
check "a table of 20,000 UNIQUE codes arrives" \
    wait_until 30 tables_equal "$master" "$slave" seat
sqlite3 -cmd ".timeout 10000" "$master" "BEGIN;
    UPDATE seat SET code = '~' || code;
    UPDATE seat SET code = printf('c%06d', id % 20000 + 1);
    COMMIT;"
check "a rotation of UNIQUE codes over several change sets converges" \
    wait_until 30 tables_equal "$master" "$slave" seat
sqlite3 -cmd ".timeout 10000" "$master" "INSERT INTO acc VALUES (6, 'fay', 'f@x')"
check "the subscriber keeps following" wait_until 20 tables_equal "$master" "$slave" acc
check "the subscriber is still running" running sub
for table in acc member seat; do
    if ! tables_equal "$master" "$slave" "$table"; then
        show_difference "$master" "$slave" "$table"
    fi
done
finish
