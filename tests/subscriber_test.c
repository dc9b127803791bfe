/*  subscriber_test.c - the subscriber: batched exactly-once apply, schema mapping, and the
    actor's catch-up, live, gap and heartbeat handling against a small fake broker.          */
#include <czmq.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "apply.h"
#include "testutil.h"
#include "vs_proto.h"
#include "vs_subscriber.h"

/* ------------------------------------------------------------------------------------------
    Helpers: histories of change sets and queries on the slave database.                      */

#define S_MAX_SETS 256

typedef struct {
    uint64_t seq;
    uint8_t hash[VS_HASH_SIZE];
    uint8_t *data;
    size_t size;
} s_set_t;

/*  A stream's history: sets 1..count, hash-chained.                                          */
typedef struct {
    const char *stream;
    s_set_t sets[S_MAX_SETS];
    size_t count;
} s_history_t;

static void s_history_add(s_history_t *history, uint8_t *data, size_t size)
{
    s_set_t *set = &history->sets[history->count];
    uint8_t zero[VS_HASH_SIZE] = {0};
    const uint8_t *previous = history->count ? history->sets[history->count - 1].hash : zero;
    set->seq = history->count + 1;
    set->data = data;
    set->size = size;
    vs_chain_next(previous, data, size, set->hash);
    history->count++;
}

static void s_history_free(s_history_t *history)
{
    for (size_t index = 0; index < history->count; index++) {
        free(history->sets[index].data);
    }
    history->count = 0;
}

static const char *const s_items_columns[] = {"id", "name", "score", "data"};
static const uint32_t s_items_pk[] = {0};
static const char *s_items_sql =
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)";

static vs_value_t s_integer(int64_t value)
{
    vs_value_t result = {.type = VS_INTEGER};
    result.as.integer = value;
    return result;
}

static vs_value_t s_real(double value)
{
    vs_value_t result = {.type = VS_REAL};
    result.as.real = value;
    return result;
}

static vs_value_t s_text(const char *value)
{
    vs_value_t result = {.type = VS_TEXT};
    result.as.bytes.data = value;
    result.as.bytes.size = strlen(value);
    return result;
}

static vs_value_t s_blob(const void *value, size_t size)
{
    vs_value_t result = {.type = VS_BLOB};
    result.as.bytes.data = value;
    result.as.bytes.size = size;
    return result;
}

static vs_value_t s_null(void)
{
    vs_value_t result = {.type = VS_NULL};
    return result;
}

/*  A set of `items` upserts for ids first..last (name "n<id>-<tag>", score id/2, data 2 bytes),
    then deletes of the ids in deletes (count delete_count).                                   */
static void s_items_set(uint64_t version, uint32_t flags, int first, int last, const char *tag,
                        const int *deletes, size_t delete_count, uint8_t **data, size_t *size)
{
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    int rc = vs_changeset_writer_add_table(writer, "items", s_items_sql, 4, s_items_columns, 1,
                                           s_items_pk, &table);
    VS_CHECK(rc == VS_OK);
    for (int id = first; id <= last; id++) {
        char name[64];
        snprintf(name, sizeof name, "n%d-%s", id, tag);
        uint8_t bytes[2] = {(uint8_t) id, 0};
        vs_value_t values[4] = {s_integer(id), s_text(name), s_real(id / 2.0),
                                s_blob(bytes, sizeof bytes)};
        VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, values) == VS_OK);
    }
    for (size_t index = 0; index < delete_count; index++) {
        vs_value_t key = s_integer(deletes[index]);
        VS_CHECK(vs_changeset_writer_delete(writer, table, 1, &key) == VS_OK);
    }
    rc = vs_changeset_writer_finish(writer, version, version, flags, data, size);
    VS_CHECK(rc == VS_OK);
    vs_changeset_writer_destroy(&writer);
}

/*  Runs a query returning one integer on a separate connection; -1 on any failure.           */
static int64_t s_query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int64_t result = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW) {
            result = sqlite3_column_int64(stmt, 0);
        }
        sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
    return result;
}

/*  One text result (into out), "" on failure.                                                 */
static void s_query_text(const char *path, const char *sql, char *out, size_t out_size)
{
    sqlite3 *db = NULL;
    out[0] = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0)) {
            snprintf(out, out_size, "%s", (const char *) sqlite3_column_text(stmt, 0));
        }
        sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
}

static int s_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

static int64_t s_stored_seq(const char *path, const char *stream)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT seq FROM _versync_state WHERE stream = '%s'", stream);
    return s_query_int(path, sql);
}

static char s_path[4096];

static const char *s_db_path(const char *test)
{
    snprintf(s_path, sizeof s_path, "%s/slave.db", vs_test_dir(test));
    return s_path;
}

static vs_apply_t *s_open(const char *path)
{
    vs_apply_t *store = NULL;
    char why[256];
    int rc = vs_apply_open(&store, path, NULL, 0, why, sizeof why);
    if (rc != VS_OK) {
        fprintf(stderr, "  open: %s\n", why);
    }
    return store;
}

/*  Applies a whole history of one stream, committing at the end.                              */
static int s_apply_history(vs_apply_t *store, const s_history_t *history, size_t from, size_t to)
{
    for (size_t index = from; index < to; index++) {
        const s_set_t *set = &history->sets[index];
        int rc =
            vs_apply_set(store, history->stream, set->seq, set->hash, set->data, set->size, NULL);
        if (rc != VS_OK) {
            return rc;
        }
    }
    return vs_apply_commit(store);
}

/* ------------------------------------------------------------------------------------------
    The apply store.                                                                          */

static void test_apply_commit(void)
{
    const char *path = s_db_path("apply_commit");
    s_history_t history = {.stream = "orders"};
    uint8_t *data;
    size_t size;
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 10, "a", NULL, 0, &data, &size);
    s_history_add(&history, data, size);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    bool applied = false;
    const s_set_t *set = &history.sets[0];
    VS_CHECK(vs_apply_set(store, "orders", 1, set->hash, set->data, set->size, &applied) == VS_OK);
    VS_CHECK(applied);
    VS_CHECK(vs_apply_in_batch(store));
    VS_CHECK(vs_apply_batch_rows(store) == 10);
    VS_CHECK(vs_apply_consistent(store));
    uint64_t seq = 99;
    uint8_t hash[VS_HASH_SIZE];
    VS_CHECK(vs_apply_position(store, "orders", &seq, hash) == VS_OK);
    VS_CHECK(seq == 1 && memcmp(hash, set->hash, VS_HASH_SIZE) == 0);
    VS_CHECK(vs_apply_committed_position(store, "orders", &seq, hash) == VS_OK);
    VS_CHECK(seq == 0);
    VS_CHECK(vs_apply_commit(store) == VS_OK);
    VS_CHECK(!vs_apply_in_batch(store));
    vs_apply_close(&store);
    VS_CHECK(store == NULL);
    vs_apply_close(&store);

    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 10);
    VS_CHECK(s_query_int(path, "SELECT typeof(id) = 'integer' AND typeof(name) = 'text'"
                               " AND typeof(score) = 'real' AND typeof(data) = 'blob'"
                               " FROM items WHERE id = 7") == 1);
    VS_CHECK(s_query_int(path, "SELECT score = 3.5 AND data = x'0700' AND name = 'n7-a'"
                               " FROM items WHERE id = 7") == 1);
    VS_CHECK(s_stored_seq(path, "orders") == 1);
    VS_CHECK(s_query_int(path, "SELECT length(hash) FROM _versync_state") == VS_HASH_SIZE);
    char hex[2 * VS_HASH_SIZE + 1];
    char stored[2 * VS_HASH_SIZE + 1];
    vs_hash_hex(set->hash, hex);
    s_query_text(path, "SELECT lower(hex(hash)) FROM _versync_state", stored, sizeof stored);
    VS_CHECK(strcmp(hex, stored) == 0);
    char mode[32];
    s_query_text(path, "PRAGMA journal_mode", mode, sizeof mode);
    VS_CHECK(strcmp(mode, "wal") == 0);

    /*  Reopened: the position is back, the set is already there, and exact types survive NULL,
        empty text and empty blob.                                                             */
    store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(vs_apply_position(store, "orders", &seq, hash) == VS_OK);
    VS_CHECK(seq == 1 && memcmp(hash, set->hash, VS_HASH_SIZE) == 0);
    VS_CHECK(vs_apply_set(store, "orders", 1, set->hash, set->data, set->size, &applied) == VS_OK);
    VS_CHECK(!applied);
    VS_CHECK(!vs_apply_in_batch(store));

    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    VS_CHECK(vs_changeset_writer_add_table(writer, "items", s_items_sql, 4, s_items_columns, 1,
                                           s_items_pk, &table) == VS_OK);
    vs_value_t values[4] = {s_integer(-5), s_text(""), s_null(), s_blob(NULL, 0)};
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, values) == VS_OK);
    vs_value_t big[4] = {s_integer(INT64_MAX), s_null(), s_real(-0.125), s_null()};
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, big) == VS_OK);
    VS_CHECK(vs_changeset_writer_finish(writer, 2, 2, VS_CHANGESET_CONSISTENT, &data, &size) ==
             VS_OK);
    vs_changeset_writer_destroy(&writer);
    s_history_add(&history, data, size);
    VS_CHECK(s_apply_history(store, &history, 1, 2) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT typeof(name) = 'text' AND name = '' AND typeof(score) ="
                               " 'null' AND typeof(data) = 'blob' AND length(data) = 0"
                               " FROM items WHERE id = -5") == 1);
    VS_CHECK(s_query_int(path, "SELECT score = -0.125 FROM items WHERE id = 9223372036854775807") ==
             1);
    VS_CHECK(s_stored_seq(path, "orders") == 2);
    s_history_free(&history);
}

/*  Applying without committing (a kill mid-batch) leaves the old rows and position;
    applying again then gives each row exactly once.                                           */
static void test_apply_kill_mid_batch(void)
{
    const char *path = s_db_path("apply_kill");
    s_history_t history = {.stream = "s"};
    for (int index = 0; index < 6; index++) {
        uint8_t *data;
        size_t size;
        int deletes[1] = {(index - 1) * 10 + 1};
        s_items_set((uint64_t) index + 1, VS_CHANGESET_CONSISTENT, index * 10 + 1, index * 10 + 10,
                    "k", index > 0 ? deletes : NULL, index > 0 ? 1 : 0, &data, &size);
        s_history_add(&history, data, size);
    }
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &history, 0, 2) == VS_OK);
    for (size_t index = 2; index < 5; index++) {
        const s_set_t *set = &history.sets[index];
        VS_CHECK(vs_apply_set(store, "s", set->seq, set->hash, set->data, set->size, NULL) ==
                 VS_OK);
    }
    uint64_t seq = 0;
    VS_CHECK(vs_apply_position(store, "s", &seq, NULL) == VS_OK && seq == 5);
    vs_apply_close(&store); /* no commit: like kill -9 */
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 19);
    VS_CHECK(s_stored_seq(path, "s") == 2);

    store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(vs_apply_position(store, "s", &seq, NULL) == VS_OK && seq == 2);
    /*  A replay from the start: 1 and 2 are skipped, 3..6 applied once.                        */
    VS_CHECK(s_apply_history(store, &history, 0, 6) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 60 - 5);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE id IN (1, 11, 21, 31, 41)") == 0);
    VS_CHECK(s_stored_seq(path, "s") == 6);
    s_history_free(&history);
}

static void test_apply_gap_and_chain(void)
{
    const char *path = s_db_path("apply_chain");
    s_history_t history = {.stream = "s"};
    for (int index = 0; index < 3; index++) {
        uint8_t *data;
        size_t size;
        s_items_set((uint64_t) index + 1, VS_CHANGESET_CONSISTENT, index * 5 + 1, index * 5 + 5,
                    "c", NULL, 0, &data, &size);
        s_history_add(&history, data, size);
    }
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &history, 0, 1) == VS_OK);
    /*  A gap: set 3 after position 1 changes nothing.                                           */
    const s_set_t *third = &history.sets[2];
    VS_CHECK(vs_apply_set(store, "s", 3, third->hash, third->data, third->size, NULL) == VS_EGAP);
    VS_CHECK(!vs_apply_in_batch(store));
    /*  A wrong hash: refused, nothing written, the batch before it rolled back.                */
    const s_set_t *second = &history.sets[1];
    uint8_t wrong[VS_HASH_SIZE];
    memcpy(wrong, second->hash, VS_HASH_SIZE);
    wrong[0] ^= 1;
    VS_CHECK(vs_apply_set(store, "s", 2, wrong, second->data, second->size, NULL) == VS_ECHAIN);
    VS_CHECK(strstr(vs_apply_error(store), "chain mismatch on stream s at seq 2") != NULL);
    VS_CHECK(!vs_apply_in_batch(store));
    /*  The right hash with other bytes (a fork) is refused too.                                */
    VS_CHECK(vs_apply_set(store, "s", 2, second->hash, third->data, third->size, NULL) ==
             VS_ECHAIN);
    uint64_t seq = 0;
    VS_CHECK(vs_apply_position(store, "s", &seq, NULL) == VS_OK && seq == 1);
    VS_CHECK(vs_apply_commit(store) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 5);
    VS_CHECK(s_stored_seq(path, "s") == 1);

    /*  A corrupt state row is reported, not trusted.                                          */
    VS_CHECK(s_exec(path, "UPDATE _versync_state SET hash = x'00'") == SQLITE_OK);
    store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(vs_apply_position(store, "s", &seq, NULL) == VS_ESTORE);
    VS_CHECK(vs_apply_position(store, "bad name!", &seq, NULL) == VS_EINVAL);
    vs_apply_close(&store);
    s_history_free(&history);
}

/*  A set of one row (1, 2, 3) for a table declared by name, create_sql, columns and pk.      */
/*  Finishes writer's set (rc: how writing it went) as seq, applies it to store after hash on
    stream and commits; hash moves on when it applied. Returns -1 when the set could not be
    written, else vs_apply_set's or vs_apply_commit's code.                                  */
/*  Finishes writer's set as seq of stream with flags and applies it after hash; a CONSISTENT
    set is committed with the batch. hash moves on when it was applied.                       */
static int s_apply_flagged(vs_apply_t *store, const char *stream, uint64_t seq,
                           uint8_t hash[VS_HASH_SIZE], vs_changeset_writer_t *writer, int rc,
                           uint32_t flags)
{
    uint8_t *data = NULL;
    size_t size = 0;
    if (rc == VS_OK) {
        rc = vs_changeset_writer_finish(writer, seq, seq, flags, &data, &size);
    }
    vs_changeset_writer_destroy(&writer);
    if (rc != VS_OK) {
        return -1;
    }
    uint8_t next[VS_HASH_SIZE];
    vs_chain_next(hash, data, size, next);
    rc = vs_apply_set(store, stream, seq, next, data, size, NULL);
    if (rc == VS_OK && (flags & VS_CHANGESET_CONSISTENT)) {
        rc = vs_apply_commit(store);
    }
    if (rc == VS_OK) {
        memcpy(hash, next, VS_HASH_SIZE);
    }
    free(data);
    return rc;
}

static int s_apply_written(vs_apply_t *store, const char *stream, uint64_t seq,
                           uint8_t hash[VS_HASH_SIZE], vs_changeset_writer_t *writer, int rc)
{
    return s_apply_flagged(store, stream, seq, hash, writer, rc, VS_CHANGESET_CONSISTENT);
}

static int s_apply_table_set(vs_apply_t *store, const char *stream, uint64_t seq,
                             uint8_t hash[VS_HASH_SIZE], const char *name, const char *sql,
                             size_t column_count, const char *const *columns, size_t pk_count,
                             const uint32_t *pk, const vs_value_t *values)
{
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    int rc = vs_changeset_writer_add_table(writer, name, sql, column_count, columns, pk_count, pk,
                                           &table);
    if (rc == VS_OK) {
        rc = vs_changeset_writer_upsert(writer, table, column_count, values);
    }
    return s_apply_written(store, stream, seq, hash, writer, rc);
}

static void test_apply_create_table(void)
{
    const char *path = s_db_path("apply_create");
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    uint8_t hash[VS_HASH_SIZE] = {0};
    uint64_t seq = 0;
    const char *const columns[] = {"a", "b", "c"};
    const uint32_t pk_ab[] = {0, 1};
    const uint32_t pk_a[] = {0};
    vs_value_t values[3] = {s_integer(1), s_text("two"), s_integer(3)};

    /*  Composite key, WITHOUT ROWID, a quote in the name, AUTOINCREMENT.                      */
    VS_CHECK(s_apply_table_set(store, "s", ++seq, hash, "pairs",
                               "CREATE TABLE pairs(a INTEGER, b TEXT, c, PRIMARY KEY(a, b))"
                               " WITHOUT ROWID",
                               3, columns, 2, pk_ab, values) == VS_OK);
    VS_CHECK(s_apply_table_set(store, "s", ++seq, hash, "we\"ird",
                               "CREATE TABLE \"we\"\"ird\"(a INTEGER PRIMARY KEY AUTOINCREMENT,"
                               " b UNIQUE, c CHECK (length(c) > 0));",
                               3, columns, 1, pk_a, values) == VS_OK);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM pairs WHERE a = 1 AND b = 'two' AND c = 3") ==
             1);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM \"we\"\"ird\" WHERE b = 'two'") == 1);
    char sql[256];
    s_query_text(path, "SELECT sql FROM sqlite_schema WHERE name = 'pairs'", sql, sizeof sql);
    VS_CHECK(strstr(sql, "WITHOUT ROWID") != NULL);

    /*  Hostile create_sql: refused, nothing created, nothing committed.                       */
    const char *hostile[] = {
        "CREATE TABLE t(a PRIMARY KEY, b, c); DROP TABLE pairs",
        "CREATE TABLE other(a PRIMARY KEY, b, c)",
        "CREATE TABLE t AS SELECT 1 AS a, 2 AS b, 3 AS c",
        "CREATE TRIGGER t AFTER INSERT ON pairs BEGIN DELETE FROM pairs; END",
        "ATTACH 'x.db' AS t",
        "CREATE TEMP TABLE t(a PRIMARY KEY, b, c)",
        "CREATE VIEW t AS SELECT * FROM pairs",
        "PRAGMA writable_schema = 1",
        "",
        "CREATE TABLE t(a PRIMARY KEY, b, c);\n; CREATE TABLE x(a)",
        "CREATE TABLE main.t(a PRIMARY KEY, b, c, d AS (load_extension('x')))",
    };
    for (size_t index = 0; index < sizeof hostile / sizeof hostile[0]; index++) {
        int rc = s_apply_table_set(store, "s", seq + 1, hash, "t", hostile[index], 3, columns, 1,
                                   pk_a, values);
        VS_CHECK(rc == VS_ESCHEMA);
        if (rc != VS_ESCHEMA) {
            fprintf(stderr, "  accepted: %s\n", hostile[index]);
        }
        VS_CHECK(!vs_apply_in_batch(store));
    }
    /*  Reserved names are refused even when their create_sql is sound.                        */
    VS_CHECK(s_apply_table_set(store, "s", seq + 1, hash, "sqlite_stat9",
                               "CREATE TABLE sqlite_stat9(a PRIMARY KEY, b, c)", 3, columns, 1,
                               pk_a, values) == VS_ESCHEMA);
    VS_CHECK(s_apply_table_set(store, "s", seq + 1, hash, "_versync_state",
                               "CREATE TABLE _versync_state(a PRIMARY KEY, b, c)", 3, columns, 1,
                               pk_a, values) == VS_ESCHEMA);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM sqlite_schema WHERE name IN ('t', 'other')") ==
             0);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'") == 0);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM pairs") == 1);
    VS_CHECK(s_stored_seq(path, "s") == 2);
}

/*  Applies one set of upserts of acc (id INTEGER PRIMARY KEY, login TEXT UNIQUE): count rows,
    ids[i] with logins[i]. Commits when it applies; returns vs_apply_set's code.            */
/*  A set of upserts of acc (id, login), and deletes of acc: ids of negative numbers. wide:
    the master's acc has a third column, extra (7 in every row), that the slave lacks.       */
static int s_apply_acc(vs_apply_t *store, uint64_t seq, uint8_t hash[VS_HASH_SIZE], bool wide,
                       size_t count, const int *ids, const char *const *logins, uint32_t flags)
{
    const char *const columns[] = {"id", "login", "extra"};
    const uint32_t pk[] = {0};
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    int rc = vs_changeset_writer_add_table(
        writer, "acc",
        wide ? "CREATE TABLE acc(id INTEGER PRIMARY KEY, login TEXT UNIQUE, extra)"
             : "CREATE TABLE acc(id INTEGER PRIMARY KEY, login TEXT UNIQUE)",
        wide ? 3 : 2, columns, 1, pk, &table);
    for (size_t row = 0; row < count && rc == VS_OK; row++) {
        vs_value_t values[3] = {s_integer(ids[row] < 0 ? -ids[row] : ids[row]),
                                s_text(logins[row]), s_integer(7)};
        rc = ids[row] < 0 ? vs_changeset_writer_delete(writer, table, 1, values)
                          : vs_changeset_writer_upsert(writer, table, wide ? 3 : 2, values);
    }
    return s_apply_flagged(store, "s", seq, hash, writer, rc, flags);
}

static int s_apply_logins_flagged(vs_apply_t *store, uint64_t seq, uint8_t hash[VS_HASH_SIZE],
                                  size_t count, const int *ids, const char *const *logins,
                                  uint32_t flags)
{
    return s_apply_acc(store, seq, hash, false, count, ids, logins, flags);
}

static int s_apply_logins(vs_apply_t *store, uint64_t seq, uint8_t hash[VS_HASH_SIZE], size_t count,
                          const int *ids, const char *const *logins)
{
    return s_apply_logins_flagged(store, seq, hash, count, ids, logins, VS_CHANGESET_CONSISTENT);
}

/*  A snapshot may move a UNIQUE value from one row to another. Applied in version order, a row
    can collide with a slave row that the same set changes later: such upserts wait for the
    end of the set, through the one-row and the 32-row statements alike; values that go round
    in a cycle (a swap) are deleted and written again. A collision with a row the set does not
    change is a real difference: the set fails and nothing of it stays.                      */
/*  A slave table whose UNIQUE column has its own conflict clause. The upserts override it,
    so a collision still comes back as an error and waits for the row that gives the value
    up. With ON CONFLICT IGNORE the colliding row was silently not written; with ON CONFLICT
    ROLLBACK the batch's transaction was gone, the rest of it went on in autocommit, and the
    position was committed without the sets before (found by a review).                      */
static void test_apply_unique_conflict_clauses(void)
{
    static const char *const clauses[] = {"IGNORE", "ROLLBACK", "FAIL", "REPLACE", "ABORT"};
    for (size_t index = 0; index < sizeof clauses / sizeof clauses[0]; index++) {
        char name[64];
        snprintf(name, sizeof name, "apply_unique_clause_%s", clauses[index]);
        const char *path = s_db_path(name);
        char sql[256];
        snprintf(sql, sizeof sql,
                 "CREATE TABLE acc(id INTEGER PRIMARY KEY, login TEXT UNIQUE ON CONFLICT %s)",
                 clauses[index]);
        VS_CHECK(s_exec(path, sql) == SQLITE_OK);
        vs_apply_t *store = s_open(path);
        VS_REQUIRE(store);
        uint8_t hash[VS_HASH_SIZE] = {0};
        VS_CHECK(s_apply_logins(store, 1, hash, 2, (int[]){1, 2},
                                (const char *const[]){"a", "b"}) == VS_OK);
        /* one batch: a new row; then a new row 3 takes row 1's login, which row 1 gives up
           later in the set (the INSERT collides, where the column's clause applies) */
        VS_CHECK(s_apply_logins_flagged(store, 2, hash, 1, (int[]){4}, (const char *const[]){"c"},
                                        0) == VS_OK);
        VS_CHECK(s_apply_logins(store, 3, hash, 2, (int[]){3, 1},
                                (const char *const[]){"a", "z"}) == VS_OK);
        vs_apply_close(&store);
        char text[256];
        s_query_text(path,
                     "SELECT group_concat(id || '=' || login, ' ') FROM "
                     "(SELECT * FROM acc ORDER BY id)",
                     text, sizeof text);
        VS_CHECK(strcmp(text, "1=z 2=b 3=a 4=c") == 0);
        VS_CHECK(s_stored_seq(path, "s") == 3);
        if (strcmp(text, "1=z 2=b 3=a 4=c") != 0 || s_stored_seq(path, "s") != 3) {
            fprintf(stderr, "  ON CONFLICT %s: %s at seq %lld\n", clauses[index], text,
                    (long long) s_stored_seq(path, "s"));
        }
    }
}

static void test_apply_unique_moves(void)
{
    const char *path = s_db_path("apply_unique_moves");
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    uint8_t hash[VS_HASH_SIZE] = {0};
    char text[4096];
    int ids[64];
    const char *logins[64];
    char names[64][16];
    for (int row = 0; row < 40; row++) {
        ids[row] = row + 1;
        snprintf(names[row], sizeof names[row], "user%02d", row + 1);
        logins[row] = names[row];
    }
    /* The slave counts the UPDATEs its upserts run: new rows run none. */
    VS_CHECK(s_exec(path, "CREATE TABLE acc(id INTEGER PRIMARY KEY, login TEXT UNIQUE);"
                          "CREATE TABLE updates(n INTEGER); INSERT INTO updates VALUES (0);"
                          "CREATE TRIGGER acc_updates AFTER UPDATE ON acc BEGIN "
                          "UPDATE updates SET n = n + 1; END;") == SQLITE_OK);
    VS_CHECK(s_apply_logins(store, 1, hash, 40, ids, logins) == VS_OK);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc") == 40);
    VS_CHECK(s_query_int(path, "SELECT n FROM updates") == 0);

    /* A swap of rows 1 and 2, and a chain: row 3 takes row 4's login, row 4 a new one. */
    int moved_ids[] = {1, 2, 3, 4};
    const char *moved[] = {"user02", "user01", "user04", "fresh"};
    VS_CHECK(s_apply_logins(store, 2, hash, 4, moved_ids, moved) == VS_OK);
    s_query_text(path, "SELECT group_concat(id || '=' || login, ' ') FROM acc WHERE id <= 4", text,
                 sizeof text);
    VS_CHECK(strcmp(text, "1=user02 2=user01 3=user04 4=fresh") == 0);
    if (strcmp(text, "1=user02 2=user01 3=user04 4=fresh") != 0) {
        fprintf(stderr, "  got: %s\n", text);
    }

    /* 32 rows in one statement, the logins of rows 5 to 36 rotated by one: every row
       collides with the next, and the last with the first (a cycle). */
    for (int row = 0; row < 32; row++) {
        ids[row] = row + 5;
        logins[row] = names[row == 31 ? 4 : row + 5];
    }
    VS_CHECK(s_apply_logins(store, 3, hash, 32, ids, logins) == VS_OK);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc WHERE id BETWEEN 5 AND 35 AND login = "
                               "printf('user%02d', id + 1)") == 31);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc WHERE id = 36 AND login = 'user05'") == 1);
    VS_CHECK(s_query_int(path, "SELECT count(DISTINCT login) FROM acc") == 40);

    /* Row 40 takes row 1's login and nothing moves row 1: refused, position kept. */
    int stray_id[] = {40};
    const char *stray[] = {"user02"};
    VS_CHECK(s_apply_logins(store, 4, hash, 1, stray_id, stray) == VS_ESTORE);
    VS_CHECK(strstr(vs_apply_error(store), "UNIQUE") != NULL);
    VS_CHECK(!vs_apply_in_batch(store));
    vs_apply_close(&store);
    VS_CHECK(s_stored_seq(path, "s") == 3);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc WHERE id = 40 AND login = 'user40'") == 1);
}

/*  A publisher's read is cut into sets by size and only its last set is CONSISTENT, so a
    UNIQUE value can move to a row of one set from a row that a later set changes. Such an
    upsert waits for the stream's next sets (the batch stays open until the CONSISTENT one);
    a later change of its row wins over it, also under another column list; a collision
    still there at the CONSISTENT set fails the whole batch.                                */
static void test_apply_unique_moves_across_sets(void)
{
    const char *path = s_db_path("apply_unique_across");
    VS_CHECK(s_exec(path, "CREATE TABLE acc(id INTEGER PRIMARY KEY, login TEXT UNIQUE)") ==
             SQLITE_OK);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    uint8_t hash[VS_HASH_SIZE] = {0};
    char text[4096];
    int ids[80];
    const char *logins[80];
    char names[81][16];
    for (int row = 0; row < 80; row++) {
        ids[row] = row + 1;
        snprintf(names[row + 1], sizeof names[row + 1], "user%02d", row + 1);
        logins[row] = names[row + 1];
    }
    VS_CHECK(s_apply_logins(store, 1, hash, 80, ids, logins) == VS_OK);
    uint64_t seq = 1;
    const uint32_t more = 0, last = VS_CHANGESET_CONSISTENT;

    /* A chain (row 1 takes row 2's login, row 2 a new one) and a swap (rows 3 and 4), each
       split over two sets of one read. */
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 2, (int[]){1, 3},
                                    (const char *[]){"user02", "user04"}, more) == VS_OK);
    VS_CHECK(vs_apply_in_batch(store) && !vs_apply_consistent(store));
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 2, (int[]){2, 4},
                                    (const char *[]){"fresh02", "user03"}, last) == VS_OK);
    VS_CHECK(!vs_apply_in_batch(store));
    VS_CHECK(s_stored_seq(path, "s") == (int64_t) seq);
    s_query_text(path, "SELECT group_concat(id || '=' || login, ' ') FROM acc WHERE id <= 4",
                 text, sizeof text);
    VS_CHECK(strcmp(text, "1=user02 2=fresh02 3=user04 4=user03") == 0);

    /* Row 5 waits for row 6's login over three sets; the second set (a newer read) changes
       row 5 again, and that newer login stays. Row 7 waits for row 8's, then is deleted. */
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 2, (int[]){5, 7},
                                    (const char *[]){"user06", "user08"}, more) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 2, (int[]){5, -7},
                                    (const char *[]){"later05", ""}, more) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 2, (int[]){6, 8},
                                    (const char *[]){"fresh06", "fresh08"}, last) == VS_OK);
    s_query_text(path, "SELECT group_concat(id || '=' || login, ' ') FROM acc "
                       "WHERE id BETWEEN 5 AND 8", text, sizeof text);
    VS_CHECK(strcmp(text, "5=later05 6=fresh06 8=fresh08") == 0);
    if (strcmp(text, "5=later05 6=fresh06 8=fresh08") != 0) {
        fprintf(stderr, "  got: %s\n", text);
    }

    /* The master adds a column between two reads: the same rows come under another column
       list, and still supersede their carried upserts. Row 12 waits for row 13's login,
       then changes again; row 14 waits for row 15's, then is deleted. */
    VS_CHECK(s_apply_acc(store, ++seq, hash, false, 2, (int[]){12, 14},
                         (const char *[]){"user13", "user15"}, more) == VS_OK);
    VS_CHECK(s_apply_acc(store, ++seq, hash, true, 4, (int[]){12, -14, 13, 15},
                         (const char *[]){"new12", "", "fresh13", "fresh15"}, last) == VS_OK);
    s_query_text(path, "SELECT group_concat(id || '=' || login, ' ') FROM acc "
                       "WHERE id BETWEEN 12 AND 15", text, sizeof text);
    VS_CHECK(strcmp(text, "12=new12 13=fresh13 15=fresh15") == 0);
    if (strcmp(text, "12=new12 13=fresh13 15=fresh15") != 0) {
        fprintf(stderr, "  got: %s\n", text);
    }

    /* The logins of rows 41 to 80 rotated by one, in a set of 32 rows (one multi-row
       statement) and a set of 8: a cycle across two sets. */
    for (int row = 0; row < 40; row++) {
        ids[row] = row + 41;
        logins[row] = names[row == 39 ? 41 : row + 42];
    }
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 32, ids, logins, more) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 8, ids + 32, logins + 32, last) == VS_OK);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc WHERE id BETWEEN 41 AND 79 AND login = "
                               "printf('user%02d', id + 1)") == 39);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc WHERE id = 80 AND login = 'user41'") == 1);
    VS_CHECK(s_stored_seq(path, "s") == (int64_t) seq);

    /* Two snapshots one after the other: the second finds nothing of the first's carried
       rows in the index, also when it changes one of their rows again. */
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 4, (int[]){16, 18, 20, 22},
                                    (const char *[]){"user17", "user19", "user21", "user23"},
                                    more) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 4, (int[]){17, 19, 21, 23},
                                    (const char *[]){"f17", "f19", "f21", "f23"}, last) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 1, (int[]){24},
                                    (const char *[]){"user25"}, more) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 2, (int[]){16, 25},
                                    (const char *[]){"again16", "f25"}, last) == VS_OK);
    s_query_text(path, "SELECT group_concat(id || '=' || login, ' ') FROM acc "
                       "WHERE id BETWEEN 16 AND 25", text, sizeof text);
    VS_CHECK(strcmp(text, "16=again16 17=f17 18=user19 19=f19 20=user21 21=f21 22=user23 "
                          "23=f23 24=user25 25=f25") == 0);

    /* Row 9 takes row 10's login and no later set of the read moves row 10: the CONSISTENT
       set fails, and the batch with both sets is rolled back. */
    uint64_t committed = seq;
    uint8_t committed_hash[VS_HASH_SIZE];
    memcpy(committed_hash, hash, sizeof committed_hash);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 1, (int[]){9},
                                    (const char *[]){"user10"}, more) == VS_OK);
    VS_CHECK(s_apply_logins_flagged(store, ++seq, hash, 1, (int[]){11},
                                    (const char *[]){"fresh11"}, last) == VS_ESTORE);
    VS_CHECK(strstr(vs_apply_error(store), "UNIQUE") != NULL);
    VS_CHECK(!vs_apply_in_batch(store));
    vs_apply_close(&store);
    VS_CHECK(s_stored_seq(path, "s") == (int64_t) committed);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc WHERE (id = 9 AND login = 'user09') OR "
                               "(id = 11 AND login = 'user11')") == 2);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM acc") == 78);
}

/*  The slave table has a column the master lacks and lacks one the master has.               */
static void test_apply_common_columns(void)
{
    const char *path = s_db_path("apply_columns");
    VS_CHECK(s_exec(path, "CREATE TABLE items(ID INTEGER PRIMARY KEY, Name TEXT,"
                          " local TEXT DEFAULT 'keep', data BLOB)") == SQLITE_OK);
    VS_CHECK(s_exec(path, "INSERT INTO items VALUES (2, 'old', 'mine', x'ff'),"
                          " (7, 'gone', 'mine', x'00')") == SQLITE_OK);
    s_history_t history = {.stream = "s"};
    uint8_t *data;
    size_t size;
    int deletes[] = {7};
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 5, "x", deletes, 1, &data, &size);
    s_history_add(&history, data, size);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &history, 0, 1) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 5);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE local = 'keep'") == 4);
    VS_CHECK(s_query_int(path, "SELECT name = 'n2-x' AND local = 'mine' AND data = x'0200'"
                               " FROM items WHERE id = 2") == 1);
    s_history_free(&history);
}

/*  A different primary key is refused and nothing of the batch is committed.                 */
/*  A slave table made by hand whose key has another type affinity than the master's: a TEXT
    key on the master would be converted by an INTEGER key on the slave, and '1', '01' and
    '1.0' would land on one row; such a table is refused. Types of the same affinity map.
    (Found by a review: the check compared key names only.)                                  */
static void test_apply_primary_key_types(void)
{
    const char *path = s_db_path("apply_pk_types");
    VS_CHECK(s_exec(path, "CREATE TABLE codes(id INTEGER PRIMARY KEY, v);"
                          "CREATE TABLE names(id VARCHAR(20) PRIMARY KEY, v);"
                          "CREATE TABLE nums(id INTEGER PRIMARY KEY, v)") == SQLITE_OK);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    uint8_t hash[VS_HASH_SIZE] = {0};
    const char *const columns[] = {"id", "v"};
    const uint32_t pk[] = {0};
    vs_value_t values[2] = {s_text("01"), s_text("zero-one")};
    VS_CHECK(s_apply_table_set(store, "s", 1, hash, "codes",
                               "CREATE TABLE codes(id TEXT PRIMARY KEY, v)", 2, columns, 1, pk,
                               values) == VS_ESCHEMA);
    VS_CHECK(strstr(vs_apply_error(store), "affinity") != NULL);
    VS_CHECK(!vs_apply_in_batch(store));
    VS_CHECK(s_apply_table_set(store, "s", 1, hash, "names",
                               "CREATE TABLE names(id TEXT PRIMARY KEY, v)", 2, columns, 1, pk,
                               values) == VS_OK);
    vs_value_t number[2] = {s_integer(7), s_text("seven")};
    VS_CHECK(s_apply_table_set(store, "s", 2, hash, "nums",
                               "CREATE TABLE nums(id INT PRIMARY KEY, v)", 2, columns, 1, pk,
                               number) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM codes") == 0);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM names WHERE id = '01'") == 1);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM nums WHERE id = 7") == 1);
    VS_CHECK(s_stored_seq(path, "s") == 2);
}

static void test_apply_primary_key_mismatch(void)
{
    const char *path = s_db_path("apply_pk");
    VS_CHECK(s_exec(path, "CREATE TABLE items(id INTEGER, name TEXT, score REAL, data BLOB,"
                          " PRIMARY KEY (name, id))") == SQLITE_OK);
    VS_CHECK(s_exec(path, "CREATE TABLE other(k PRIMARY KEY, v)") == SQLITE_OK);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    uint8_t hash[VS_HASH_SIZE] = {0};
    const char *const columns[] = {"k", "v"};
    const uint32_t pk[] = {0};
    vs_value_t values[2] = {s_integer(1), s_text("v")};
    /*  A first set that is fine stays in the open batch ...                                   */
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    VS_CHECK(vs_changeset_writer_add_table(writer, "other", "CREATE TABLE other(k PRIMARY KEY, v)",
                                           2, columns, 1, pk, &table) == VS_OK);
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 2, values) == VS_OK);
    uint8_t *data;
    size_t size;
    VS_CHECK(vs_changeset_writer_finish(writer, 1, 1, VS_CHANGESET_CONSISTENT, &data, &size) ==
             VS_OK);
    vs_changeset_writer_destroy(&writer);
    uint8_t first_hash[VS_HASH_SIZE];
    vs_chain_next(hash, data, size, first_hash);
    VS_CHECK(vs_apply_set(store, "s", 1, first_hash, data, size, NULL) == VS_OK);
    free(data);
    /*  ... and goes with the failing one.                                                     */
    s_items_set(2, VS_CHANGESET_CONSISTENT, 1, 3, "p", NULL, 0, &data, &size);
    uint8_t second_hash[VS_HASH_SIZE];
    vs_chain_next(first_hash, data, size, second_hash);
    VS_CHECK(vs_apply_set(store, "s", 2, second_hash, data, size, NULL) == VS_ESCHEMA);
    VS_CHECK(strstr(vs_apply_error(store),
                    "table 'items': primary key (name, id) on the slave, (id) on the master") !=
             NULL);
    free(data);
    VS_CHECK(!vs_apply_in_batch(store));
    uint64_t seq = 9;
    VS_CHECK(vs_apply_position(store, "s", &seq, NULL) == VS_OK && seq == 0);
    VS_CHECK(vs_apply_commit(store) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM other") == 0);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 0);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM _versync_state") == 0);
}

/*  One snapshot split over three sets: only the last is CONSISTENT. The batch must not be
    committed before it, and a kill in the middle keeps the old state.                         */
static void test_apply_split_snapshot(void)
{
    const char *path = s_db_path("apply_split");
    s_history_t history = {.stream = "s"};
    uint8_t *data;
    size_t size;
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 3, "old", NULL, 0, &data, &size);
    s_history_add(&history, data, size);
    s_items_set(2, 0, 1, 100, "new", NULL, 0, &data, &size);
    s_history_add(&history, data, size);
    s_items_set(3, 0, 101, 200, "new", NULL, 0, &data, &size);
    s_history_add(&history, data, size);
    s_items_set(4, VS_CHANGESET_CONSISTENT, 201, 300, "new", NULL, 0, &data, &size);
    s_history_add(&history, data, size);

    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &history, 0, 1) == VS_OK);
    for (size_t index = 1; index < 3; index++) {
        const s_set_t *set = &history.sets[index];
        VS_CHECK(vs_apply_set(store, "s", set->seq, set->hash, set->data, set->size, NULL) ==
                 VS_OK);
        VS_CHECK(!vs_apply_consistent(store));
        VS_CHECK(vs_apply_waiting_stream(store) && streq(vs_apply_waiting_stream(store), "s"));
        VS_CHECK(vs_apply_commit(store) == VS_EINVAL);
        VS_CHECK(vs_apply_in_batch(store));
    }
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 3);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE name LIKE '%-old'") == 3);
    VS_CHECK(s_stored_seq(path, "s") == 1);

    store = s_open(path);
    VS_REQUIRE(store);
    for (size_t index = 1; index < 4; index++) {
        const s_set_t *set = &history.sets[index];
        VS_CHECK(vs_apply_set(store, "s", set->seq, set->hash, set->data, set->size, NULL) ==
                 VS_OK);
    }
    VS_CHECK(vs_apply_consistent(store));
    VS_CHECK(vs_apply_waiting_stream(store) == NULL);
    VS_CHECK(vs_apply_batch_sets(store) == 3 && vs_apply_batch_rows(store) == 300);
    VS_CHECK(vs_apply_commit(store) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE name LIKE '%-new'") == 300);
    VS_CHECK(s_stored_seq(path, "s") == 4);
    s_history_free(&history);
}

/*  Two streams into one database; one batch holds both and commits only when both are
    consistent.                                                                                */
static void test_apply_two_streams(void)
{
    const char *path = s_db_path("apply_streams");
    s_history_t first = {.stream = "alpha"};
    s_history_t second = {.stream = "beta"};
    uint8_t *data;
    size_t size;
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 10, "a", NULL, 0, &data, &size);
    s_history_add(&first, data, size);
    s_items_set(1, 0, 11, 20, "b", NULL, 0, &data, &size);
    s_history_add(&second, data, size);
    s_items_set(2, VS_CHANGESET_CONSISTENT, 21, 30, "b", NULL, 0, &data, &size);
    s_history_add(&second, data, size);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    const s_set_t *set = &first.sets[0];
    VS_CHECK(vs_apply_set(store, "alpha", 1, set->hash, set->data, set->size, NULL) == VS_OK);
    set = &second.sets[0];
    VS_CHECK(vs_apply_set(store, "beta", 1, set->hash, set->data, set->size, NULL) == VS_OK);
    VS_CHECK(!vs_apply_consistent(store));
    set = &second.sets[1];
    VS_CHECK(vs_apply_set(store, "beta", 2, set->hash, set->data, set->size, NULL) == VS_OK);
    VS_CHECK(vs_apply_consistent(store));
    VS_CHECK(vs_apply_commit(store) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 30);
    VS_CHECK(s_stored_seq(path, "alpha") == 1);
    VS_CHECK(s_stored_seq(path, "beta") == 2);
    s_history_free(&first);
    s_history_free(&second);
}

/*  DELETE, and a primary key change as DELETE of the old key plus UPSERT of the new; the
    table filter skips what it does not name.                                                   */
static void test_apply_delete_and_filter(void)
{
    const char *path = s_db_path("apply_delete");
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    uint8_t hash[VS_HASH_SIZE] = {0};
    const char *const columns[] = {"a", "b"};
    const uint32_t pk[] = {0, 1};
    const char *sql = "CREATE TABLE kv(a, b, PRIMARY KEY (a, b))";
    vs_value_t row[2] = {s_integer(1), s_text("x")};
    VS_CHECK(s_apply_table_set(store, "s", 1, hash, "kv", sql, 2, columns, 2, pk, row) == VS_OK);
    /*  (1, 'x') becomes (2, 'x'); (1, 'y') is deleted though absent.                          */
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    VS_CHECK(vs_changeset_writer_add_table(writer, "kv", sql, 2, columns, 2, pk, &table) == VS_OK);
    VS_CHECK(vs_changeset_writer_delete(writer, table, 2, row) == VS_OK);
    vs_value_t moved[2] = {s_integer(2), s_text("x")};
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 2, moved) == VS_OK);
    vs_value_t absent[2] = {s_integer(1), s_text("y")};
    VS_CHECK(vs_changeset_writer_delete(writer, table, 2, absent) == VS_OK);
    uint8_t *data;
    size_t size;
    VS_CHECK(vs_changeset_writer_finish(writer, 2, 2, VS_CHANGESET_CONSISTENT, &data, &size) ==
             VS_OK);
    vs_changeset_writer_destroy(&writer);
    uint8_t next[VS_HASH_SIZE];
    vs_chain_next(hash, data, size, next);
    VS_CHECK(vs_apply_set(store, "s", 2, next, data, size, NULL) == VS_OK);
    VS_CHECK(vs_apply_commit(store) == VS_OK);
    free(data);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM kv") == 1);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM kv WHERE a = 2 AND b = 'x'") == 1);

    /*  With a filter naming only "items", "kv" changes are skipped but the position moves.     */
    const char *const only[] = {"ITEMS"};
    char why[256];
    VS_CHECK(vs_apply_open(&store, path, only, 1, why, sizeof why) == VS_OK);
    VS_REQUIRE(store);
    memcpy(hash, next, VS_HASH_SIZE);
    vs_value_t other[2] = {s_integer(3), s_text("z")};
    VS_CHECK(s_apply_table_set(store, "s", 3, hash, "kv", sql, 2, columns, 2, pk, other) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM kv") == 1);
    VS_CHECK(s_stored_seq(path, "s") == 3);
}

static void s_table_digest(const char *path, const char *table, char *out, size_t out_size);

/*  One change of test_apply_many_rows: 'u' upserts items row id (name "n<id>-<tag>"), 'd'
    deletes it, 'w' upserts row id of the 600-column table "wide".                             */
typedef struct {
    char op;
    int id;
    const char *tag;
} s_script_t;

static void s_script_append(s_script_t *script, size_t *count, char op, int first, int last,
                            const char *tag)
{
    for (int id = first; id <= last; id++) {
        script[(*count)++] = (s_script_t) {op, id, tag};
    }
}

#define S_WIDE_COLUMNS 600

/*  The set of script[from..to), and the same changes written to the reference database one
    statement each, as a slave without multi-row statements would.                           */
static void s_script_set(const s_script_t *script, size_t from, size_t to, uint64_t version,
                         sqlite3 *reference, uint8_t **data, size_t *size)
{
    static char wide_names[S_WIDE_COLUMNS][16];
    const char *wide_columns[S_WIDE_COLUMNS];
    char wide_sql[16384] = "CREATE TABLE wide(c0 INTEGER PRIMARY KEY";
    for (int column = 0; column < S_WIDE_COLUMNS; column++) {
        snprintf(wide_names[column], sizeof wide_names[column], "c%d", column);
        wide_columns[column] = wide_names[column];
        if (column > 0) {
            snprintf(wide_sql + strlen(wide_sql), sizeof wide_sql - strlen(wide_sql), ", c%d",
                     column);
        }
    }
    strcat(wide_sql, ")");
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t items = 0;
    uint32_t wide = 0;
    const uint32_t wide_pk[] = {0};
    VS_CHECK(vs_changeset_writer_add_table(writer, "items", s_items_sql, 4, s_items_columns, 1,
                                           s_items_pk, &items) == VS_OK);
    VS_CHECK(vs_changeset_writer_add_table(writer, "wide", wide_sql, S_WIDE_COLUMNS, wide_columns,
                                           1, wide_pk, &wide) == VS_OK);
    sqlite3_exec(reference, s_items_sql, NULL, NULL, NULL); /* fails once it exists */
    sqlite3_exec(reference, wide_sql, NULL, NULL, NULL);
    VS_CHECK(sqlite3_exec(reference, "BEGIN", NULL, NULL, NULL) == SQLITE_OK);
    for (size_t index = from; index < to; index++) {
        const s_script_t *change = &script[index];
        char name[64];
        snprintf(name, sizeof name, "n%d-%s", change->id, change->tag);
        uint8_t bytes[2] = {(uint8_t) change->id, (uint8_t) (change->id >> 8)};
        char sql[512];
        if (change->op == 'u') {
            vs_value_t values[4] = {s_integer(change->id), s_text(name), s_real(change->id / 4.0),
                                    s_blob(bytes, sizeof bytes)};
            VS_CHECK(vs_changeset_writer_upsert(writer, items, 4, values) == VS_OK);
            snprintf(sql, sizeof sql,
                     "INSERT INTO items VALUES(%d, '%s', %d / 4.0, x'%02x%02x') ON CONFLICT(id)"
                     " DO UPDATE SET name = excluded.name, score = excluded.score,"
                     " data = excluded.data",
                     change->id, name, change->id, bytes[0], bytes[1]);
        } else if (change->op == 'd') {
            vs_value_t key = s_integer(change->id);
            VS_CHECK(vs_changeset_writer_delete(writer, items, 1, &key) == VS_OK);
            snprintf(sql, sizeof sql, "DELETE FROM items WHERE id = %d", change->id);
        } else {
            vs_value_t values[S_WIDE_COLUMNS];
            values[0] = s_integer(change->id);
            for (int column = 1; column < S_WIDE_COLUMNS; column++) {
                values[column] = s_text(name);
            }
            VS_CHECK(vs_changeset_writer_upsert(writer, wide, S_WIDE_COLUMNS, values) == VS_OK);
            snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO wide(c0, c%d) VALUES(%d, '%s')",
                     S_WIDE_COLUMNS - 1, change->id, name);
        }
        VS_CHECK(sqlite3_exec(reference, sql, NULL, NULL, NULL) == SQLITE_OK);
    }
    VS_CHECK(sqlite3_exec(reference, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    VS_CHECK(vs_changeset_writer_finish(writer, version, version, VS_CHANGESET_CONSISTENT, data,
                                        size) == VS_OK);
    vs_changeset_writer_destroy(&writer);
}

/*  Upserts of one table are written many rows to a statement: the slave must end exactly as
    with one statement per change, whatever the order of upserts, deletes, repeated keys and
    other tables, at every queue boundary; a table too wide for the multi-row form still
    applies; and a failing multi-row statement rolls the batch back and names the table.     */
static void test_apply_many_rows(void)
{
    static s_script_t script[512];
    size_t count = 0;
    s_script_append(script, &count, 'u', 1, 70, "a");   /* two full statements and 6 rows */
    s_script_append(script, &count, 'u', 5, 5, "b");    /* a key again, after its statement */
    s_script_append(script, &count, 'd', 69, 69, "");   /* queued upserts first */
    s_script_append(script, &count, 'd', 66, 66, "");
    s_script_append(script, &count, 'u', 100, 115, "c");
    s_script_append(script, &count, 'u', 100, 100, "c2"); /* twice in one statement */
    s_script_append(script, &count, 'u', 116, 130, "c");
    s_script_append(script, &count, 'w', 1, 1, "w1");   /* another table between upserts */
    s_script_append(script, &count, 'u', 66, 66, "d");  /* back after its delete */
    s_script_append(script, &count, 'w', 2, 2, "w2");
    s_script_append(script, &count, 'w', 1, 1, "w3");
    s_script_append(script, &count, 'd', 11, 11, "");
    s_script_append(script, &count, 'd', 999, 999, ""); /* absent */
    s_script_append(script, &count, 'u', 200, 263, "e"); /* exactly two statements */
    s_script_append(script, &count, 'd', 201, 201, "");
    size_t first_set = count;
    s_script_append(script, &count, 'u', 300, 340, "f"); /* a second set in the same batch */
    s_script_append(script, &count, 'u', 1, 1, "g");
    VS_REQUIRE(count <= sizeof script / sizeof script[0]);

    char reference_path[4096];
    snprintf(reference_path, sizeof reference_path, "%s/reference.db",
             vs_test_dir("apply_many_rows_reference"));
    sqlite3 *reference = NULL;
    VS_REQUIRE(sqlite3_open(reference_path, &reference) == SQLITE_OK);
    s_history_t history = {.stream = "s"};
    uint8_t *data;
    size_t size;
    s_script_set(script, 0, first_set, 1, reference, &data, &size);
    s_history_add(&history, data, size);
    s_script_set(script, first_set, count, 2, reference, &data, &size);
    s_history_add(&history, data, size);
    sqlite3_close(reference);

    const char *path = s_db_path("apply_many_rows");
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &history, 0, 2) == VS_OK);
    uint64_t upserts = 0;
    uint64_t deletes = 0;
    vs_apply_counts(store, &upserts, &deletes);
    VS_CHECK(upserts == count - 5 && deletes == 5);
    vs_apply_close(&store);
    static char expected[65536];
    static char got[65536];
    s_table_digest(reference_path, "items", expected, sizeof expected);
    s_table_digest(path, "items", got, sizeof got);
    VS_CHECK(strlen(expected) > 1000);
    VS_CHECK(strcmp(expected, got) == 0);
    const char *wide_digest = "SELECT count(*) || '/' || group_concat(c0 || '=' || c599, ';')"
                              " FROM (SELECT c0, c599 FROM wide ORDER BY c0)";
    s_query_text(reference_path, wide_digest, expected, sizeof expected);
    s_query_text(path, wide_digest, got, sizeof got);
    VS_CHECK(strcmp(expected, "2/1=n1-w3;2=n2-w2") == 0);
    VS_CHECK(strcmp(expected, got) == 0);
    s_history_free(&history);

    /*  40 rows into a slave table with a NOT NULL column the master does not fill: the first
        32 fail in one statement, nothing is written, the error names the table.               */
    const char *failing = s_db_path("apply_many_rows_error");
    VS_CHECK(s_exec(failing, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT,"
                             " required TEXT NOT NULL)") == SQLITE_OK);
    s_history_t bad = {.stream = "s"};
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 40, "x", NULL, 0, &data, &size);
    s_history_add(&bad, data, size);
    store = s_open(failing);
    VS_REQUIRE(store);
    const s_set_t *set = &bad.sets[0];
    VS_CHECK(vs_apply_set(store, "s", 1, set->hash, set->data, set->size, NULL) == VS_ESTORE);
    VS_CHECK(strstr(vs_apply_error(store), "table 'items'") != NULL);
    VS_CHECK(!vs_apply_in_batch(store));
    vs_apply_close(&store);
    VS_CHECK(s_query_int(failing, "SELECT count(*) FROM items") == 0);
    s_history_free(&bad);
}

/*  A set of 100 `items` upserts, ids from first, each with a 3,000-byte blob filled with the
    id's low byte: about 100 WAL pages when committed alone.                                 */
static void s_bulky_set(uint64_t version, int first, uint8_t **data, size_t *size)
{
    static uint8_t blob[3000];
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    VS_CHECK(vs_changeset_writer_add_table(writer, "items", s_items_sql, 4, s_items_columns, 1,
                                           s_items_pk, &table) == VS_OK);
    for (int id = first; id < first + 100; id++) {
        memset(blob, id & 0xff, sizeof blob);
        vs_value_t values[4] = {s_integer(id), s_text("bulky"), s_real(id),
                                s_blob(blob, sizeof blob)};
        VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, values) == VS_OK);
    }
    VS_CHECK(vs_changeset_writer_finish(writer, version, version, VS_CHANGESET_CONSISTENT, data,
                                        size) == VS_OK);
    vs_changeset_writer_destroy(&writer);
}

/*  The size of path followed by suffix, -1 when it does not exist.                          */
static int64_t s_file_size(const char *path, const char *suffix)
{
    char name[4200];
    snprintf(name, sizeof name, "%s%s", path, suffix);
    return zsys_file_exists(name) ? (int64_t) zsys_file_size(name) : -1;
}

/*  The WAL is copied into the database by the store's checkpointer, not inside its commits;
    past 4,000 pages the store copies it itself after the commit (past 8,000 it waits for the
    checkpointer to let it), so the WAL stays bounded whatever the checkpointer manages; and
    every row is there at the end.                                                            */
static void s_ignore_alarm(int signal_number)
{
    (void) signal_number;
}

/*  A program's signal handler that runs while the store starts its checkpointer cuts that
    wait short (EINTR); the store must still open. Found by fuzz_apply under libFuzzer, whose
    timer is such a handler: the open failed with "cannot start the checkpointer thread".   */
static void test_apply_open_under_signals(void)
{
    const char *path = s_db_path("apply_open_under_signals");
    struct sigaction action, previous;
    memset(&action, 0, sizeof action);
    action.sa_handler = s_ignore_alarm; /* no SA_RESTART: reads are cut short */
    sigemptyset(&action.sa_mask);
    VS_REQUIRE(sigaction(SIGALRM, &action, &previous) == 0);
    struct itimerval every = {.it_interval = {0, 50}, .it_value = {0, 50}}, off, before;
    memset(&off, 0, sizeof off);
    VS_REQUIRE(setitimer(ITIMER_REAL, &every, &before) == 0);
    int opened = 0, counted = 0;
    for (int round = 0; round < 200; round++) {
        vs_apply_t *store = NULL;
        char why[256] = "";
        if (vs_apply_open(&store, path, NULL, 0, why, sizeof why) == VS_OK) {
            opened++;
            counted += vs_apply_checkpoints(store) == 0; /* an answer, not a failed read */
        } else {
            fprintf(stderr, "open %d under signals: %s\n", round, why);
        }
        vs_apply_close(&store);
    }
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &previous, NULL);
    VS_CHECK(opened == 200);
    VS_CHECK(counted == 200);
}

static void test_apply_checkpoints(void)
{
    const int64_t page = 4096;
    const int64_t frame = page + 24;
    s_history_t history = {.stream = "bulk"};
    for (uint64_t k = 1; k <= 60; k++) {
        uint8_t *data;
        size_t size;
        s_bulky_set(k, (int) (k - 1) * 100 + 1, &data, &size);
        s_history_add(&history, data, size);
    }
    const char *path = s_db_path("apply_checkpoints");
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    /*  About 1,200 pages, one commit a set: past 1,000 the checkpointer is asked.          */
    for (size_t index = 0; index < 12; index++) {
        VS_CHECK(s_apply_history(store, &history, index, index + 1) == VS_OK);
    }
    unsigned long checkpoints = 0;
    for (int tries = 0; tries < 1000 && checkpoints == 0; tries++) {
        checkpoints = vs_apply_checkpoints(store);
        if (checkpoints == 0) {
            zclock_sleep(10);
        }
    }
    VS_CHECK(checkpoints >= 1);
    /*  The pages are in the database file itself now (it held only the schema before).     */
    VS_CHECK(s_file_size(path, "") >= 1000 * page);
    /*  4,800 pages more in a tight loop, checked after each commit: the WAL file never grows
        past the hard bound (8,000 pages) plus the commit that crosses it, and one more (about
        103 pages each) should the WAL's restart at the next BEGIN meet the checkpointer.     */
    int64_t wal_max = 0;
    for (size_t index = 12; index < 60; index++) {
        VS_CHECK(s_apply_history(store, &history, index, index + 1) == VS_OK);
        int64_t wal = s_file_size(path, "-wal");
        wal_max = wal > wal_max ? wal : wal_max;
    }
    VS_CHECK(wal_max > 0 && wal_max <= 32 + (8000 + 250) * frame);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 6000);
    VS_CHECK(s_query_int(path, "SELECT sum(length(data)) FROM items") == 6000 * 3000);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE length(data) = 3000 AND"
                               " replace(hex(data), printf('%02X', id % 256), '') = ''") == 6000);
    VS_CHECK(s_stored_seq(path, "bulk") == 60);

    /*  One commit of 4,200 pages: the store copies them itself before the commit returns.  */
    const char *single = s_db_path("apply_checkpoints_single");
    store = s_open(single);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &history, 0, 42) == VS_OK);
    VS_CHECK(s_file_size(single, "") >= 4000 * page);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(single, "SELECT count(*) FROM items") == 4200);
    s_history_free(&history);
}

static void s_orders_history(s_history_t *history, size_t count, const char *tag);

/*  Verify-only (no database): the same checks, positions in memory, changes counted.        */
static void test_apply_verify_only(void)
{
    s_history_t history = {.stream = "orders"};
    s_orders_history(&history, 10, "v"); /* 3 upserts a set, a delete from set 3 on */
    const char *const only[] = {"items"};
    vs_apply_t *store = NULL;
    char why[256] = "";
    VS_CHECK(vs_apply_open(&store, NULL, only, 1, why, sizeof why) == VS_OK);
    VS_REQUIRE(store);
    uint64_t upserts = 1;
    uint64_t deletes = 1;
    vs_apply_counts(store, &upserts, &deletes);
    VS_CHECK(upserts == 0 && deletes == 0);
    VS_CHECK(s_apply_history(store, &history, 0, 5) == VS_OK);
    vs_apply_counts(store, &upserts, &deletes);
    VS_CHECK(upserts == 15 && deletes == 3);
    /*  A gap, then a wrong hash after an applied set: refused, the batch rolled back, the
        counts and the position where the last commit left them.                              */
    const s_set_t *seventh = &history.sets[6];
    VS_CHECK(vs_apply_set(store, "orders", 7, seventh->hash, seventh->data, seventh->size, NULL) ==
             VS_EGAP);
    const s_set_t *sixth = &history.sets[5];
    VS_CHECK(vs_apply_set(store, "orders", 6, sixth->hash, sixth->data, sixth->size, NULL) ==
             VS_OK);
    VS_CHECK(vs_apply_set(store, "orders", 7, sixth->hash, seventh->data, seventh->size, NULL) ==
             VS_ECHAIN);
    VS_CHECK(!vs_apply_in_batch(store));
    uint64_t seq = 0;
    VS_CHECK(vs_apply_position(store, "orders", &seq, NULL) == VS_OK && seq == 5);
    vs_apply_counts(store, &upserts, &deletes);
    VS_CHECK(upserts == 15 && deletes == 3);
    /*  A malformed set is refused as by a slave.                                              */
    uint8_t garbage[8] = {0x95, 1, 2, 3, 4, 5, 6, 7};
    uint8_t next[VS_HASH_SIZE];
    vs_chain_next(history.sets[4].hash, garbage, sizeof garbage, next);
    VS_CHECK(vs_apply_set(store, "orders", 6, next, garbage, sizeof garbage, NULL) == VS_EPROTO);
    VS_CHECK(s_apply_history(store, &history, 5, 10) == VS_OK);
    vs_apply_counts(store, &upserts, &deletes);
    VS_CHECK(upserts == 30 && deletes == 8);
    VS_CHECK(vs_apply_position(store, "orders", &seq, NULL) == VS_OK && seq == 10);
    /*  Another table's changes are not counted (the filter), but the position moves.         */
    uint8_t hash[VS_HASH_SIZE];
    memcpy(hash, history.sets[9].hash, VS_HASH_SIZE);
    const char *const columns[] = {"a", "b"};
    const uint32_t pk[] = {0};
    vs_value_t row[2] = {s_integer(1), s_text("x")};
    VS_CHECK(s_apply_table_set(store, "orders", 11, hash, "kv", "CREATE TABLE kv(a, b)", 2, columns,
                               1, pk, row) == VS_OK);
    vs_apply_counts(store, &upserts, &deletes);
    VS_CHECK(upserts == 30 && deletes == 8);
    VS_CHECK(vs_apply_position(store, "orders", &seq, NULL) == VS_OK && seq == 11);
    vs_apply_close(&store);
    /*  Positions live in memory: a new store starts from 0.                                   */
    VS_CHECK(vs_apply_open(&store, NULL, NULL, 0, why, sizeof why) == VS_OK);
    VS_REQUIRE(store);
    VS_CHECK(vs_apply_position(store, "orders", &seq, NULL) == VS_OK && seq == 0);
    vs_apply_close(&store);
    s_history_free(&history);
}

/*  A store failure (a NOT NULL column the master does not fill) rolls everything back.       */
static void test_apply_store_error(void)
{
    const char *path = s_db_path("apply_error");
    VS_CHECK(s_exec(path, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT,"
                          " required TEXT NOT NULL)") == SQLITE_OK);
    s_history_t history = {.stream = "s"};
    uint8_t *data;
    size_t size;
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 3, "e", NULL, 0, &data, &size);
    s_history_add(&history, data, size);
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    const s_set_t *set = &history.sets[0];
    VS_CHECK(vs_apply_set(store, "s", 1, set->hash, set->data, set->size, NULL) == VS_ESTORE);
    VS_CHECK(strstr(vs_apply_error(store), "table 'items'") != NULL);
    VS_CHECK(!vs_apply_in_batch(store));
    /*  Bad bytes with a matching hash are refused as a malformed set.                          */
    uint8_t junk[3] = {0x93, 0xc1, 0x00};
    uint8_t zero[VS_HASH_SIZE] = {0};
    uint8_t junk_hash[VS_HASH_SIZE];
    vs_chain_next(zero, junk, sizeof junk, junk_hash);
    VS_CHECK(vs_apply_set(store, "s", 1, junk_hash, junk, sizeof junk, NULL) == VS_EPROTO);
    vs_apply_close(&store);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 0);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM _versync_state") == 0);

    /*  Not a database at all: a clear error at open.                                          */
    char bogus[4200];
    snprintf(bogus, sizeof bogus, "%s.bogus", path);
    FILE *file = fopen(bogus, "w");
    VS_REQUIRE(file);
    fputs("this is not an sqlite database, not at all, it is text...........................",
          file);
    fclose(file);
    char why[256] = "";
    VS_CHECK(vs_apply_open(&store, bogus, NULL, 0, why, sizeof why) == VS_ESTORE);
    VS_CHECK(store == NULL);
    VS_CHECK(strlen(why) > 0);
    s_history_free(&history);
}

/*  A set whose header and first changes are fine but which goes bad later (its last value
    cut short; one byte after its last change) is refused after its earlier changes were
    applied: the batch rolls back, so neither it nor the uncommitted set before it leaves a
    row, and a slave and a verify-only store alike take the good history afterwards.        */
static void test_apply_bad_tail(void)
{
    const char *path = s_db_path("apply_bad_tail");
    uint8_t *first;
    size_t first_size;
    uint8_t *second;
    size_t second_size;
    s_items_set(1, VS_CHANGESET_CONSISTENT, 1, 40, "a", NULL, 0, &first, &first_size);
    s_items_set(2, VS_CHANGESET_CONSISTENT, 41, 80, "b", NULL, 0, &second, &second_size);
    s_history_t history = {.stream = "s"};
    s_history_add(&history, first, first_size);
    s_history_add(&history, second, second_size);
    uint8_t *longer = malloc(second_size + 1);
    VS_REQUIRE(longer);
    memcpy(longer, second, second_size);
    longer[second_size] = 0xc0;
    struct {
        const uint8_t *data;
        size_t size;
    } bad[2] = {{second, second_size - 1}, {longer, second_size + 1}};
    for (int verify_only = 0; verify_only <= 1; verify_only++) {
        for (size_t variant = 0; variant < 2; variant++) {
            vs_apply_t *store = NULL;
            char why[256] = "";
            if (verify_only) {
                VS_CHECK(vs_apply_open(&store, NULL, NULL, 0, why, sizeof why) == VS_OK);
            } else {
                store = s_open(path);
            }
            VS_REQUIRE(store);
            const s_set_t *one = &history.sets[0];
            VS_CHECK(vs_apply_set(store, "s", 1, one->hash, one->data, one->size, NULL) == VS_OK);
            VS_CHECK(vs_apply_in_batch(store));
            uint8_t hash[VS_HASH_SIZE];
            vs_chain_next(one->hash, bad[variant].data, bad[variant].size, hash);
            VS_CHECK(vs_apply_set(store, "s", 2, hash, bad[variant].data, bad[variant].size,
                                  NULL) == VS_EPROTO);
            VS_CHECK(strstr(vs_apply_error(store), "bad change set") != NULL);
            VS_CHECK(!vs_apply_in_batch(store));
            uint64_t seq = 99;
            VS_CHECK(vs_apply_position(store, "s", &seq, NULL) == VS_OK && seq == 0);
            uint64_t upserts = 99;
            uint64_t deletes = 99;
            vs_apply_counts(store, &upserts, &deletes);
            VS_CHECK(upserts == 0 && deletes == 0);
            if (!verify_only) {
                VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") <= 0);
            }
            /*  The good history goes in whole afterwards.                                     */
            for (size_t index = 0; index < history.count; index++) {
                const s_set_t *set = &history.sets[index];
                VS_CHECK(vs_apply_set(store, "s", set->seq, set->hash, set->data, set->size,
                                      NULL) == VS_OK);
            }
            VS_CHECK(vs_apply_commit(store) == VS_OK);
            vs_apply_counts(store, &upserts, &deletes);
            VS_CHECK(upserts == 80 && deletes == 0);
            vs_apply_close(&store);
            if (!verify_only) {
                VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 80);
                VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE name LIKE '%-b'") ==
                         40);
                VS_CHECK(s_exec(path, "DROP TABLE items; DELETE FROM _versync_state") ==
                         SQLITE_OK);
            }
        }
    }
    free(longer);
    s_history_free(&history);
}

/* ------------------------------------------------------------------------------------------
    The actor against a fake broker: a ROUTER serving FETCH from in-memory histories and an
    XPUB (so the test sees the subscription arrive) sending LIVE and HEARTBEAT, both CURVE
    servers without a ZAP handler, so they take any client key.                               */

typedef struct {
    zsock_t *router;
    zsock_t *xpub;
    char request_endpoint[64];
    char live_endpoint[64];
    s_history_t *histories[2];
    size_t visible[2]; /* the broker's head per history        */
    size_t history_count;
    size_t chunk_entries; /* entries per CHUNK at most            */
    int ignore_fetches;   /* FETCHes to leave unanswered          */
    int reply_delay_ms;   /* answer each FETCH this late          */
    zmsg_t *held[16];     /* FETCHes waiting for their delay      */
    int64_t held_due[16];
    size_t held_count;
    size_t fetches;       /* FETCHes received                     */
    size_t subscriptions; /* subscriptions seen on the XPUB       */
    char fatal[512];      /* FATAL reason from the actor, if any  */
    zactor_t *actor;      /* asked POSITION by s_position_is      */
    bool position_asked;
    int64_t applied; /* the last POSITION answer             */
    int64_t committed;
    bool count_asked;
    int64_t count_asked_at; /* zclock_mono of the last COUNT asked  */
    int64_t upserts; /* the last COUNT answer                */
    int64_t deletes;
} s_fake_t;

static bool s_fake_start(s_fake_t *fake, zcert_t *cert)
{
    fake->router = zsock_new(ZMQ_ROUTER);
    fake->xpub = zsock_new(ZMQ_XPUB);
    if (!fake->router || !fake->xpub) {
        return false;
    }
    zsock_t *sockets[2] = {fake->router, fake->xpub};
    char *endpoints[2] = {fake->request_endpoint, fake->live_endpoint};
    for (int index = 0; index < 2; index++) {
        zcert_apply(cert, sockets[index]);
        zsock_set_curve_server(sockets[index], 1);
        zsock_set_linger(sockets[index], 0);
        int port = zsock_bind(sockets[index], "tcp://127.0.0.1:*");
        if (port <= 0) {
            return false;
        }
        snprintf(endpoints[index], 64, "tcp://127.0.0.1:%d", port);
    }
    return true;
}

static void s_fake_stop(s_fake_t *fake)
{
    for (size_t index = 0; index < fake->held_count; index++) {
        zmsg_destroy(&fake->held[index]);
    }
    fake->held_count = 0;
    zsock_destroy(&fake->router);
    zsock_destroy(&fake->xpub);
}

static s_history_t *s_fake_history(s_fake_t *fake, vs_bytes_t stream, size_t *index_p)
{
    for (size_t index = 0; index < fake->history_count; index++) {
        if (vs_bytes_equal(stream, fake->histories[index]->stream)) {
            *index_p = index;
            return fake->histories[index];
        }
    }
    return NULL;
}

static const uint8_t *s_head_hash(const s_history_t *history, size_t head)
{
    static const uint8_t zero[VS_HASH_SIZE] = {0};
    return head ? history->sets[head - 1].hash : zero;
}

static void s_fake_reply(s_fake_t *fake, zframe_t *identity, const vs_msg_t *reply)
{
    uint8_t *data = NULL;
    size_t size = 0;
    VS_CHECK(vs_msg_encode(reply, &data, &size) == VS_OK);
    zframe_send(&identity, fake->router, ZFRAME_MORE | ZFRAME_REUSE);
    zmq_send(zsock_resolve(fake->router), data, size, 0);
    free(data);
}

static void s_fake_answer(s_fake_t *fake, zmsg_t *request)
{
    zframe_t *identity = zmsg_first(request);
    zframe_t *body = zmsg_next(request);
    vs_msg_t msg;
    const char *why = NULL;
    if (!body || vs_msg_decode(&msg, zframe_data(body), zframe_size(body), &why) != VS_OK) {
        VS_CHECK(!"the subscriber sent a malformed request");
        zmsg_destroy(&request);
        return;
    }
    VS_CHECK(msg.command == VS_CMD_FETCH);
    fake->fetches++;
    size_t index = 0;
    s_history_t *history = s_fake_history(fake, msg.stream, &index);
    vs_msg_t reply;
    memset(&reply, 0, sizeof reply);
    reply.request_id = msg.request_id;
    vs_entry_t entries[64];
    if (fake->ignore_fetches > 0) {
        fake->ignore_fetches--;
    } else if (!history) {
        VS_CHECK(!"FETCH of an unknown stream");
    } else if (msg.since > fake->visible[index]) {
        reply.command = VS_CMD_ERROR;
        reply.code = VS_EBEHIND;
        reply.reason.data = "since is beyond the head";
        reply.reason.size = strlen(reply.reason.data);
        s_fake_reply(fake, identity, &reply);
    } else {
        reply.command = VS_CMD_CHUNK;
        reply.stream = msg.stream;
        reply.head = fake->visible[index];
        reply.hash.data = (const char *) s_head_hash(history, reply.head);
        reply.hash.size = VS_HASH_SIZE;
        reply.entries = entries;
        for (uint64_t seq = msg.since + 1;
             seq <= reply.head && reply.entry_count < fake->chunk_entries && reply.entry_count < 64;
             seq++) {
            const s_set_t *set = &history->sets[seq - 1];
            vs_entry_t *entry = &entries[reply.entry_count++];
            entry->seq = set->seq;
            entry->hash.data = (const char *) set->hash;
            entry->hash.size = VS_HASH_SIZE;
            entry->changeset.data = (const char *) set->data;
            entry->changeset.size = set->size;
        }
        s_fake_reply(fake, identity, &reply);
    }
    vs_msg_clear(&msg);
    zmsg_destroy(&request);
}

/*  Takes one request: answers it now, or holds it for reply_delay_ms.                       */
static void s_fake_serve(s_fake_t *fake)
{
    zmsg_t *request = zmsg_recv(fake->router);
    if (!request) {
        return;
    }
    if (fake->reply_delay_ms > 0 && fake->held_count < 16) {
        fake->held_due[fake->held_count] = zclock_mono() + fake->reply_delay_ms;
        fake->held[fake->held_count++] = request;
        return;
    }
    s_fake_answer(fake, request);
}

/*  Answers the held requests whose delay has passed, oldest first.                          */
static void s_fake_release(s_fake_t *fake)
{
    while (fake->held_count > 0 && zclock_mono() >= fake->held_due[0]) {
        zmsg_t *request = fake->held[0];
        fake->held_count--;
        memmove(fake->held, fake->held + 1, fake->held_count * sizeof *fake->held);
        memmove(fake->held_due, fake->held_due + 1, fake->held_count * sizeof *fake->held_due);
        s_fake_answer(fake, request);
    }
}

static void s_fake_send_live(s_fake_t *fake, const vs_msg_t *msg)
{
    char topic[VS_MAX_STREAM_NAME + 2];
    size_t topic_size = vs_live_topic(msg->stream.data, msg->stream.size, topic, sizeof topic);
    uint8_t *data = NULL;
    size_t size = 0;
    VS_CHECK(vs_msg_encode(msg, &data, &size) == VS_OK);
    zmq_send(zsock_resolve(fake->xpub), topic, topic_size, ZMQ_SNDMORE);
    zmq_send(zsock_resolve(fake->xpub), data, size, 0);
    free(data);
}

/*  Publishes set seq of the history live.                                                     */
static void s_fake_live(s_fake_t *fake, const s_history_t *history, uint64_t seq)
{
    const s_set_t *set = &history->sets[seq - 1];
    vs_msg_t msg;
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_LIVE;
    msg.stream.data = history->stream;
    msg.stream.size = strlen(history->stream);
    msg.seq = seq;
    msg.hash.data = (const char *) set->hash;
    msg.hash.size = VS_HASH_SIZE;
    msg.changeset.data = (const char *) set->data;
    msg.changeset.size = set->size;
    s_fake_send_live(fake, &msg);
}

static void s_fake_heartbeat(s_fake_t *fake, const s_history_t *history, uint64_t head)
{
    vs_msg_t msg;
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_HEARTBEAT;
    msg.stream.data = history->stream;
    msg.stream.size = strlen(history->stream);
    msg.head = head;
    msg.hash.data = (const char *) s_head_hash(history, head);
    msg.hash.size = VS_HASH_SIZE;
    s_fake_send_live(fake, &msg);
}

typedef bool(s_condition_fn)(s_fake_t *fake, const char *path);

/*  Serves the broker sockets and watches the actor until done() holds or timeout_ms pass.   */
static bool s_pump_until(s_fake_t *fake, zactor_t *actor, const char *path, s_condition_fn *done,
                         int timeout_ms)
{
    zpoller_t *poller = zpoller_new(fake->router, fake->xpub, actor, NULL);
    int64_t deadline = zclock_mono() + timeout_ms;
    bool result = false;
    while (!result && zclock_mono() < deadline) {
        void *which = zpoller_wait(poller, 10);
        s_fake_release(fake);
        if (which == fake->router) {
            s_fake_serve(fake);
        } else if (which == fake->xpub) {
            zframe_t *frame = zframe_recv(fake->xpub);
            if (frame && zframe_size(frame) > 0 && zframe_data(frame)[0] == 1) {
                fake->subscriptions++;
            }
            zframe_destroy(&frame);
        } else if (which == actor) {
            char *command = NULL;
            char *reason = NULL;
            char *applied = NULL;
            char *committed = NULL;
            zstr_recvx(actor, &command, &reason, &applied, &committed, NULL);
            if (command && streq(command, "FATAL")) {
                snprintf(fake->fatal, sizeof fake->fatal, "%s", reason ? reason : "");
            } else if (command && streq(command, "COUNT") && reason && applied) {
                fake->upserts = atoll(reason);
                fake->deletes = atoll(applied);
                fake->count_asked = false;
            } else if (command && streq(command, "POSITION") && applied && committed) {
                fake->applied = *applied ? atoll(applied) : -1;
                fake->committed = *committed ? atoll(committed) : -1;
                fake->position_asked = false;
            }
            zstr_free(&command);
            zstr_free(&reason);
            zstr_free(&applied);
            zstr_free(&committed);
        }
        result = done(fake, path);
    }
    zpoller_destroy(&poller);
    return result;
}

static uint64_t s_wanted_seq;
static const char *s_wanted_stream;

static bool s_reached(s_fake_t *fake, const char *path)
{
    (void) fake;
    return s_stored_seq(path, s_wanted_stream) == (int64_t) s_wanted_seq;
}

static bool s_reached_and_subscribed(s_fake_t *fake, const char *path)
{
    return fake->subscriptions >= fake->history_count && s_reached(fake, path);
}

/*  Asks the actor for the position of s_wanted_stream; true once it has applied
    s_wanted_seq (committed or not).                                                           */
static bool s_applied(s_fake_t *fake, const char *path)
{
    (void) path;
    if (fake->applied == (int64_t) s_wanted_seq) {
        return true;
    }
    if (!fake->position_asked) {
        zstr_sendx(fake->actor, "POSITION", s_wanted_stream, NULL);
        fake->position_asked = true;
    }
    return false;
}

/*  Asks the actor for its counts; true once it has committed s_wanted_upserts UPSERTs.      */
static int64_t s_wanted_upserts;

static bool s_counted(s_fake_t *fake, const char *path)
{
    (void) path;
    if (fake->upserts == s_wanted_upserts) {
        return true;
    }
    /*  At most every 20 ms: a question always waiting on its pipe would starve the actor.     */
    if (!fake->count_asked && zclock_mono() - fake->count_asked_at >= 20) {
        zstr_send(fake->actor, "COUNT");
        fake->count_asked = true;
        fake->count_asked_at = zclock_mono();
    }
    return false;
}

static bool s_fatal_seen(s_fake_t *fake, const char *path)
{
    (void) path;
    return fake->fatal[0] != 0;
}

static void s_test_log(void *arg, vs_log_level_t level, const char *line)
{
    (void) arg;
    if (level <= VS_LOG_INFO) {
        fprintf(stderr, "    [subscriber] %s\n", line);
    }
}

/*  A digest of a table's rows: every value with its type, in key order.                    */
static void s_table_digest(const char *path, const char *table, char *out, size_t out_size)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) || '/' || coalesce(group_concat(row, ';'), '') FROM"
             " (SELECT quote(id) || ',' || quote(name) || ',' || quote(score) || ',' ||"
             " quote(data) AS row FROM %s ORDER BY id)",
             table);
    s_query_text(path, sql, out, out_size);
}

/*  True when a table holds the same rows in both databases, and is not (nearly) empty.      */
static bool s_same_table(const char *path, const char *reference, const char *table)
{
    static char got[65536];
    static char want[65536];
    s_table_digest(path, table, got, sizeof got);
    s_table_digest(reference, table, want, sizeof want);
    return strlen(want) > 10 && strcmp(got, want) == 0;
}

/*  The history of stream "orders": set k upserts ids 3k-2..3k and deletes id 3k-5.           */
static void s_orders_history(s_history_t *history, size_t count, const char *tag)
{
    for (size_t k = 1; k <= count; k++) {
        uint8_t *data;
        size_t size;
        int deletes[1] = {(int) (3 * k) - 5};
        s_items_set(k, VS_CHANGESET_CONSISTENT, (int) (3 * k - 2), (int) (3 * k), tag,
                    k > 2 ? deletes : NULL, k > 2 ? 1 : 0, &data, &size);
        s_history_add(history, data, size);
    }
}

/*  The history of stream "stock", into table "stock", with one snapshot split over 3 sets.  */
static void s_stock_history(s_history_t *history, size_t count)
{
    const char *const columns[] = {"id", "name", "score", "data"};
    const uint32_t pk[] = {0};
    for (size_t k = 1; k <= count; k++) {
        vs_changeset_writer_t *writer = vs_changeset_writer_new();
        uint32_t table = 0;
        VS_CHECK(vs_changeset_writer_add_table(writer, "stock",
                                               "CREATE TABLE stock(id INTEGER PRIMARY KEY,"
                                               " name TEXT, score REAL, data BLOB)",
                                               4, columns, 1, pk, &table) == VS_OK);
        for (int row = 0; row < 5; row++) {
            char name[32];
            snprintf(name, sizeof name, "stock-%zu", k);
            vs_value_t values[4] = {s_integer((int64_t) k * 100 + row), s_text(name),
                                    s_real((double) row), s_null()};
            VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, values) == VS_OK);
        }
        uint32_t flags = k == 5 || k == 6 ? 0 : VS_CHANGESET_CONSISTENT;
        uint8_t *data;
        size_t size;
        VS_CHECK(vs_changeset_writer_finish(writer, k, k, flags, &data, &size) == VS_OK);
        vs_changeset_writer_destroy(&writer);
        s_history_add(history, data, size);
    }
}

static zactor_t *s_start_subscriber(s_fake_t *fake, zcert_t *server, zcert_t *client,
                                    const char *path, const char *const *streams,
                                    size_t stream_count, char *reply, size_t reply_size)
{
    vs_subscriber_config_t config;
    memset(&config, 0, sizeof config);
    config.db_path = path;
    config.broker_endpoint = fake->request_endpoint;
    config.live_endpoint = fake->live_endpoint;
    config.broker_public_key = zcert_public_txt(server);
    config.cert = client;
    config.streams = streams;
    config.stream_count = stream_count;
    config.logger.fn = s_test_log;
    zactor_t *actor = zactor_new(vs_subscriber_actor, &config);
    if (!actor) {
        return NULL;
    }
    char *status = zstr_recv(actor);
    snprintf(reply, reply_size, "%s", status ? status : "");
    if (status && streq(status, "ERROR")) {
        char *reason = zstr_recv(actor);
        snprintf(reply, reply_size, "ERROR %s", reason ? reason : "");
        zstr_free(&reason);
    }
    zstr_free(&status);
    return actor;
}

/*  A fake broker serving one history (its first visible sets, chunk_entries a CHUNK) and a
    subscriber of that stream into path, started and answering OK; NULL on failure.         */
static zactor_t *s_start_one(s_fake_t *fake, s_history_t *history, size_t visible,
                             size_t chunk_entries, zcert_t *server, zcert_t *client,
                             const char *path)
{
    memset(fake, 0, sizeof *fake);
    fake->histories[0] = history;
    fake->history_count = 1;
    fake->visible[0] = visible;
    fake->chunk_entries = chunk_entries;
    fake->applied = -1;
    if (!s_fake_start(fake, server)) {
        return NULL;
    }
    const char *const streams[] = {history->stream};
    char reply[600];
    zactor_t *actor =
        s_start_subscriber(fake, server, client, path, streams, 1, reply, sizeof reply);
    if (actor && !streq(reply, "OK")) {
        fprintf(stderr, "  subscriber: %s\n", reply);
        zactor_destroy(&actor);
    }
    fake->actor = actor;
    return actor;
}

static void test_actor_catch_up_and_live(void)
{
    const char *dir = vs_test_dir("actor_live");
    char path[4200];
    char reference[4200];
    snprintf(path, sizeof path, "%s/slave.db", dir);
    snprintf(reference, sizeof reference, "%s/reference.db", dir);
    static s_history_t orders = {.stream = "orders"};
    static s_history_t stock = {.stream = "stock"};
    s_orders_history(&orders, 40, "o");
    s_stock_history(&stock, 12);

    zcert_t *server = zcert_new();
    zcert_t *client = zcert_new();
    s_fake_t fake;
    memset(&fake, 0, sizeof fake);
    fake.histories[0] = &orders;
    fake.histories[1] = &stock;
    fake.history_count = 2;
    fake.visible[0] = 30;
    fake.visible[1] = 12;
    fake.chunk_entries = 7;
    fake.ignore_fetches = 1; /* the first FETCH is lost: the subscriber must ask again */
    VS_REQUIRE(s_fake_start(&fake, server));

    const char *const streams[] = {"orders", "stock"};
    char reply[600];
    zactor_t *actor =
        s_start_subscriber(&fake, server, client, path, streams, 2, reply, sizeof reply);
    VS_REQUIRE(actor);
    VS_CHECK(streq(reply, "OK"));

    /*  Catch-up: 30 sets of orders in chunks of 7, 12 of stock (with a split snapshot).       */
    s_wanted_stream = "stock";
    s_wanted_seq = 12;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 20000));
    s_wanted_stream = "orders";
    s_wanted_seq = 30;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached_and_subscribed, 20000));
    VS_CHECK(fake.fetches >= 30 / 7 + 1 + 1);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM stock") == 60);

    /*  Live: 31 arrives on the live socket and needs no FETCH.                                */
    size_t fetches = fake.fetches;
    fake.visible[0] = 31;
    s_fake_live(&fake, &orders, 31);
    s_wanted_seq = 31;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(fake.fetches == fetches);

    /*  Malformed live traffic is dropped without harm.                                        */
    zsock_t *xpub = fake.xpub;
    zstr_sendx(xpub, "orders", "x", "y", NULL);                /* 3 frames, wrong topic */
    zmq_send(zsock_resolve(xpub), "orders\0", 7, ZMQ_SNDMORE); /* garbage body          */
    zmq_send(zsock_resolve(xpub), "\x93\x01", 2, 0);
    zmq_send(zsock_resolve(xpub), "orders\0", 7, ZMQ_SNDMORE); /* three frames          */
    zmq_send(zsock_resolve(xpub), "a", 1, ZMQ_SNDMORE);
    zmq_send(zsock_resolve(xpub), "b", 1, 0);
    zmq_send(zsock_resolve(xpub), "orders\0", 7, 0); /* one frame             */
    {
        /*  A LIVE of stream "stock" under the topic of "orders".                              */
        const s_set_t *set = &stock.sets[0];
        vs_msg_t msg;
        memset(&msg, 0, sizeof msg);
        msg.command = VS_CMD_LIVE;
        msg.stream.data = "stock";
        msg.stream.size = 5;
        msg.seq = 13;
        msg.hash.data = (const char *) set->hash;
        msg.hash.size = VS_HASH_SIZE;
        msg.changeset.data = (const char *) set->data;
        msg.changeset.size = set->size;
        uint8_t *data = NULL;
        size_t size = 0;
        VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_OK);
        zmq_send(zsock_resolve(xpub), "orders\0", 7, ZMQ_SNDMORE);
        zmq_send(zsock_resolve(xpub), data, size, 0);
        free(data);
    }

    /*  A dropped live message: 32 never sent, 33 reveals the gap, FETCH repairs it.           */
    fake.visible[0] = 33;
    s_fake_live(&fake, &orders, 33);
    s_wanted_seq = 33;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(fake.fetches > fetches);

    /*  A lost tail: 34 and 35 never sent live; the heartbeat's head reveals them.            */
    fetches = fake.fetches;
    fake.visible[0] = 35;
    s_fake_heartbeat(&fake, &orders, 35);
    s_wanted_seq = 35;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(fake.fetches > fetches);

    /*  Live sets that arrive while the stream catches up are buffered and applied after it:
        the FETCH for 36 goes unanswered, 37 and 38 arrive live meanwhile, and the answer to the
        FETCH sent again stops at 36.                                                          */
    fetches = fake.fetches;
    fake.ignore_fetches = 1;
    fake.visible[0] = 36;
    s_fake_heartbeat(&fake, &orders, 36);
    s_fake_live(&fake, &orders, 37);
    s_fake_live(&fake, &orders, 38);
    s_wanted_seq = 38;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(fake.fetches == fetches + 2);

    /*  A burst of live sets, and a heartbeat at the head that changes nothing.                */
    fake.visible[0] = 40;
    for (uint64_t seq = 39; seq <= 40; seq++) {
        s_fake_live(&fake, &orders, seq);
    }
    s_fake_heartbeat(&fake, &orders, 40);
    s_wanted_seq = 40;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(fake.fatal[0] == 0);
    zactor_destroy(&actor);

    /*  The slave holds exactly what the histories say, row by row.                            */
    vs_apply_t *store = s_open(reference);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &orders, 0, 40) == VS_OK);
    VS_CHECK(s_apply_history(store, &stock, 0, 12) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_same_table(path, reference, "items"));
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 120 - 38);
    VS_CHECK(s_same_table(path, reference, "stock"));
    VS_CHECK(s_stored_seq(path, "orders") == 40);
    VS_CHECK(s_stored_seq(path, "stock") == 12);

    s_fake_stop(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
    s_history_free(&orders);
    s_history_free(&stock);
}

/*  A verify-only subscriber: catch-up and live as a slave, counting instead of writing; a
    fork is FATAL as for a slave.                                                              */
static void test_actor_verify_only(void)
{
    static s_history_t orders = {.stream = "orders"};
    static s_history_t theirs = {.stream = "orders"};
    s_orders_history(&orders, 20, "o");
    s_orders_history(&theirs, 20, "theirs");
    zcert_t *server = zcert_new();
    zcert_t *client = zcert_new();
    s_fake_t fake;
    memset(&fake, 0, sizeof fake);
    fake.histories[0] = &orders;
    fake.history_count = 1;
    fake.visible[0] = 12;
    fake.chunk_entries = 5;
    VS_REQUIRE(s_fake_start(&fake, server));
    vs_subscriber_config_t config;
    memset(&config, 0, sizeof config);
    config.verify_only = true;
    config.broker_endpoint = fake.request_endpoint;
    config.live_endpoint = fake.live_endpoint;
    config.broker_public_key = zcert_public_txt(server);
    config.cert = client;
    const char *const streams[] = {"orders"};
    config.streams = streams;
    config.stream_count = 1;
    config.logger.fn = s_test_log;
    zactor_t *actor = zactor_new(vs_subscriber_actor, &config);
    VS_REQUIRE(actor);
    char *status = zstr_recv(actor);
    VS_CHECK(status && streq(status, "OK"));
    zstr_free(&status);
    fake.actor = actor;
    /*  Catch-up: 12 sets of 3 upserts, deletes from set 3 on.                                 */
    s_wanted_upserts = 36;
    VS_CHECK(s_pump_until(&fake, actor, NULL, s_counted, 20000));
    VS_CHECK(fake.deletes == 10);
    /*  Live, with a gap repaired by FETCH.                                                    */
    fake.visible[0] = 15;
    s_fake_live(&fake, &orders, 13);
    s_fake_live(&fake, &orders, 15);
    s_wanted_upserts = 45;
    VS_CHECK(s_pump_until(&fake, actor, NULL, s_counted, 10000));
    VS_CHECK(fake.deletes == 13);
    s_wanted_stream = "orders";
    s_wanted_seq = 15;
    fake.applied = -1;
    VS_CHECK(s_pump_until(&fake, actor, NULL, s_applied, 10000));
    /*  Another history's set 16 does not extend the chain: FATAL, nothing more counted.       */
    fake.histories[0] = &theirs;
    fake.visible[0] = 16;
    s_fake_live(&fake, &theirs, 16);
    VS_CHECK(s_pump_until(&fake, actor, NULL, s_fatal_seen, 10000));
    VS_CHECK(strstr(fake.fatal, "chain mismatch") != NULL);
    fake.upserts = -1;
    s_wanted_upserts = 45;
    VS_CHECK(s_pump_until(&fake, actor, NULL, s_counted, 10000));
    zactor_destroy(&actor);
    s_fake_stop(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
    s_history_free(&orders);
    s_history_free(&theirs);
}

/*  The slave is ahead of the broker's history (EBEHIND), or on another history (a fork):
    FATAL, and nothing more is written.                                                         */
static void test_actor_behind_and_fork(void)
{
    const char *dir = vs_test_dir("actor_fatal");
    char path[4200];
    snprintf(path, sizeof path, "%s/slave.db", dir);
    static s_history_t mine = {.stream = "orders"};
    static s_history_t theirs = {.stream = "orders"};
    s_orders_history(&mine, 10, "mine");
    s_orders_history(&theirs, 12, "theirs");
    vs_apply_t *store = s_open(path);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &mine, 0, 6) == VS_OK);
    vs_apply_close(&store);

    zcert_t *server = zcert_new();
    zcert_t *client = zcert_new();
    s_fake_t fake;
    memset(&fake, 0, sizeof fake);
    fake.histories[0] = &mine;
    fake.history_count = 1;
    fake.visible[0] = 4;
    fake.chunk_entries = 5;
    VS_REQUIRE(s_fake_start(&fake, server));
    const char *const streams[] = {"orders"};
    char reply[600];
    zactor_t *actor =
        s_start_subscriber(&fake, server, client, path, streams, 1, reply, sizeof reply);
    VS_REQUIRE(actor);
    VS_CHECK(streq(reply, "OK"));
    VS_CHECK(s_pump_until(&fake, actor, path, s_fatal_seen, 10000));
    VS_CHECK(strstr(fake.fatal, "slave is at seq 6 of stream orders") != NULL);
    zactor_destroy(&actor);

    fake.histories[0] = &theirs;
    fake.visible[0] = 12;
    fake.fatal[0] = 0;
    actor = s_start_subscriber(&fake, server, client, path, streams, 1, reply, sizeof reply);
    VS_REQUIRE(actor);
    VS_CHECK(streq(reply, "OK"));
    VS_CHECK(s_pump_until(&fake, actor, path, s_fatal_seen, 10000));
    VS_CHECK(strstr(fake.fatal, "chain mismatch on stream orders at seq 7") != NULL);
    zactor_destroy(&actor);
    VS_CHECK(s_stored_seq(path, "orders") == 6);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items WHERE name LIKE '%theirs'") == 0);

    /*  A bad configuration is an ERROR at start, not a crash.                                 */
    const char *const bad[] = {"no spaces allowed"};
    actor = s_start_subscriber(&fake, server, client, path, bad, 1, reply, sizeof reply);
    VS_REQUIRE(actor);
    VS_CHECK(strncmp(reply, "ERROR", 5) == 0);
    zactor_destroy(&actor);

    s_fake_stop(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
    s_history_free(&mine);
    s_history_free(&theirs);
}

/*  A snapshot split over sets 5..7 of "stock" while the broker holds only up to 6: the
    actor applies 1..6 but commits nothing past 4, and $TERM rolls 5 and 6 back.              */
static void test_actor_term_mid_snapshot(void)
{
    const char *dir = vs_test_dir("actor_term");
    char path[4200];
    snprintf(path, sizeof path, "%s/slave.db", dir);
    static s_history_t stock = {.stream = "stock"};
    s_stock_history(&stock, 12);
    zcert_t *server = zcert_new();
    zcert_t *client = zcert_new();
    s_fake_t fake;
    zactor_t *actor = s_start_one(&fake, &stock, 4, 10, server, client, path);
    VS_REQUIRE(actor);
    const char *const streams[] = {"stock"};
    char reply[600];
    s_wanted_stream = "stock";
    s_wanted_seq = 4;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached_and_subscribed, 10000));
    /*  5 and 6 arrive live; the batch holding them stays open, uncommitted.                  */
    fake.visible[0] = 6;
    s_fake_live(&fake, &stock, 5);
    s_fake_live(&fake, &stock, 6);
    s_wanted_seq = 6;
    VS_CHECK(s_pump_until(&fake, actor, path, s_applied, 10000));
    VS_CHECK(fake.committed == 4);
    VS_CHECK(s_stored_seq(path, "stock") == 4);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM stock") == 20);
    zactor_destroy(&actor);
    VS_CHECK(s_stored_seq(path, "stock") == 4);
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM stock") == 20);

    /*  Restarted with the whole history, it goes on from 4.                                   */
    fake.visible[0] = 12;
    fake.applied = -1;
    actor = s_start_subscriber(&fake, server, client, path, streams, 1, reply, sizeof reply);
    VS_REQUIRE(actor);
    VS_CHECK(streq(reply, "OK"));
    fake.actor = actor;
    s_wanted_seq = 12;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM stock") == 60);
    zstr_sendx(actor, "POSITION", "not a stream", NULL);
    char *command = NULL;
    char *name = NULL;
    char *applied = NULL;
    char *committed = NULL;
    VS_CHECK(zstr_recvx(actor, &command, &name, &applied, &committed, NULL) == 4);
    VS_CHECK(command && streq(command, "POSITION") && applied && streq(applied, ""));
    zstr_free(&command);
    zstr_free(&name);
    zstr_free(&applied);
    zstr_free(&committed);
    zactor_destroy(&actor);
    VS_CHECK(fake.fatal[0] == 0);

    s_fake_stop(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
    s_history_free(&stock);
}

/*  A broker that answers every FETCH 3.5 s late, past the subscriber's first 3 s wait: the
    FETCH sent again keeps its request id, so the late answer to the first one still counts
    and the slave catches up. With a new id at each resend, every answer came stale and the
    slave stayed at 0 for good (found by a review).                                           */
static void test_actor_slow_fetch_answers(void)
{
    const char *dir = vs_test_dir("actor_slow_fetch");
    char path[4200];
    char reference[4200];
    snprintf(path, sizeof path, "%s/slave.db", dir);
    snprintf(reference, sizeof reference, "%s/reference.db", dir);
    static s_history_t orders = {.stream = "orders"};
    s_orders_history(&orders, 6, "slow");
    zcert_t *server = zcert_new();
    zcert_t *client = zcert_new();
    s_fake_t fake;
    zactor_t *actor = s_start_one(&fake, &orders, 6, 64, server, client, path);
    VS_REQUIRE(actor);
    fake.reply_delay_ms = 3500;
    s_wanted_stream = "orders";
    s_wanted_seq = 6;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 20000));
    VS_CHECK(fake.fatal[0] == 0);
    zactor_destroy(&actor);
    vs_apply_t *store = s_open(reference);
    VS_REQUIRE(store);
    VS_CHECK(s_apply_history(store, &orders, 0, 6) == VS_OK);
    vs_apply_close(&store);
    VS_CHECK(s_same_table(path, reference, "items"));
    s_fake_stop(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
    s_history_free(&orders);
}

static bool s_fetched(s_fake_t *fake, const char *path)
{
    (void) path;
    return fake->fetches >= 1;
}

/*  A CHUNK that ends inside a master transaction: the batch still commits at the consistent
    point inside the chunk once it is due (here: 100,000 rows), instead of staying open until
    a chunk happens to end where a transaction does. The chunk holds sets 1-3; sets 1-2 are
    one master transaction of 100,000 rows, 3-4 another; the FETCH for 4 goes unanswered.   */
static void test_actor_commits_inside_chunk(void)
{
    const char *dir = vs_test_dir("actor_inside_chunk");
    char path[4200];
    snprintf(path, sizeof path, "%s/slave.db", dir);
    static s_history_t bulk = {.stream = "bulk"};
    const struct {
        uint32_t flags;
        int first;
        int last;
    } parts[] = {{0, 1, 50000},
                 {VS_CHANGESET_CONSISTENT, 50001, 100000},
                 {0, 100001, 100010},
                 {VS_CHANGESET_CONSISTENT, 100011, 100020}};
    for (size_t index = 0; index < 4; index++) {
        uint8_t *data;
        size_t size;
        s_items_set(index + 1, parts[index].flags, parts[index].first, parts[index].last, "c", NULL,
                    0, &data, &size);
        s_history_add(&bulk, data, size);
    }
    zcert_t *server = zcert_new();
    zcert_t *client = zcert_new();
    s_fake_t fake;
    zactor_t *actor = s_start_one(&fake, &bulk, 4, 3, server, client, path);
    VS_REQUIRE(actor);
    /*  The first FETCH gets sets 1-3; every FETCH after it goes unanswered for now.          */
    VS_CHECK(s_pump_until(&fake, actor, path, s_fetched, 10000));
    fake.ignore_fetches = 1000;
    s_wanted_stream = "bulk";
    s_wanted_seq = 2;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 10000));
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 100000);
    s_wanted_seq = 3;
    VS_CHECK(s_pump_until(&fake, actor, path, s_applied, 10000));
    VS_CHECK(fake.committed == 2);
    /*  The FETCH is asked again (S_FETCH_TIMEOUT_MS), answered now: set 4 completes the
        second transaction.                                                                   */
    fake.ignore_fetches = 0;
    s_wanted_seq = 4;
    VS_CHECK(s_pump_until(&fake, actor, path, s_reached, 15000));
    VS_CHECK(s_query_int(path, "SELECT count(*) FROM items") == 100020);
    zactor_destroy(&actor);
    VS_CHECK(fake.fatal[0] == 0);
    s_fake_stop(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
    s_history_free(&bulk);
}

int main(void)
{
    vs_test_run("apply_commit", test_apply_commit);
    vs_test_run("apply_checkpoints", test_apply_checkpoints);
    vs_test_run("apply_open_under_signals", test_apply_open_under_signals);
    vs_test_run("apply_kill_mid_batch", test_apply_kill_mid_batch);
    vs_test_run("apply_gap_and_chain", test_apply_gap_and_chain);
    vs_test_run("apply_create_table", test_apply_create_table);
    vs_test_run("apply_common_columns", test_apply_common_columns);
    vs_test_run("apply_unique_moves", test_apply_unique_moves);
    vs_test_run("apply_unique_conflict_clauses", test_apply_unique_conflict_clauses);
    vs_test_run("apply_unique_moves_across_sets", test_apply_unique_moves_across_sets);
    vs_test_run("apply_primary_key_mismatch", test_apply_primary_key_mismatch);
    vs_test_run("apply_primary_key_types", test_apply_primary_key_types);
    vs_test_run("apply_split_snapshot", test_apply_split_snapshot);
    vs_test_run("apply_two_streams", test_apply_two_streams);
    vs_test_run("apply_delete_and_filter", test_apply_delete_and_filter);
    vs_test_run("apply_many_rows", test_apply_many_rows);
    vs_test_run("apply_store_error", test_apply_store_error);
    vs_test_run("apply_bad_tail", test_apply_bad_tail);
    vs_test_run("apply_verify_only", test_apply_verify_only);
    vs_test_run("actor_catch_up_and_live", test_actor_catch_up_and_live);
    vs_test_run("actor_behind_and_fork", test_actor_behind_and_fork);
    vs_test_run("actor_slow_fetch_answers", test_actor_slow_fetch_answers);
    vs_test_run("actor_term_mid_snapshot", test_actor_term_mid_snapshot);
    vs_test_run("actor_verify_only", test_actor_verify_only);
    vs_test_run("actor_commits_inside_chunk", test_actor_commits_inside_chunk);
    return vs_test_summary();
}
