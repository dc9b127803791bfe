/*  fuzz_apply.c - a fuzz target for the slave's apply path: arbitrary change sets, commits,
    rollbacks and reopens against a real slave database (subscriber/apply.h).

    An input is a script of steps. Each step starts with one byte:
      0 mod 4: apply a change set: a 2-byte little-endian length follows, then that many bytes
               (fewer when the input ends first). The harness gives it the stream's next seq
               and the right chain hash, so the bytes reach the decoder and the SQL, not only
               the chain check. Every 16th set goes with seq + 2 instead, to exercise VS_EGAP;
      1 mod 4: commit the open batch;
      2 mod 4: roll it back;
      3 mod 4: close the store and open it again (positions come back from the file); only
               the first S_MAX_REOPENS of an input, as each costs milliseconds.
    Besides "no crash, no leak, no undefined behaviour" it checks the store's contracts: a
    failed set leaves no batch open and the committed position where it was; a commit makes
    the position durable; a rollback returns to the committed position; the database passes
    PRAGMA integrity_check at the end. And it checks the data: the sets the script committed,
    applied again to a second, empty slave in ONE batch, must apply and give the same tables
    and rows. A slave's content must not depend on where its batches were cut, which the
    subscriber decides by timing (catch-up, live, batch limits).
    With FUZZ_APPLY_TRACE set it prints each step's result, to read what an input does.      */
#include "apply.h"
#include "vs_proto.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define S_STREAM      "fuzz"
#define S_MAX_STEPS   64
#define S_MAX_REOPENS 4

typedef struct {
    const uint8_t *data; /* inside the input */
    size_t size;
} s_set_t;

static char s_path[512];  /* the scripted slave                                     */
static char s_again[520]; /* the slave that applies the committed sets in one batch */
static bool s_trace;

static void s_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_apply: contract broken: %s (%s)\n", what, detail ? detail : "");
    abort();
}

static void s_remove_database(const char *base)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char path[600];
    for (size_t index = 0; index < sizeof suffixes / sizeof suffixes[0]; index++) {
        snprintf(path, sizeof path, "%s%s", base, suffixes[index]);
        unlink(path);
    }
}

static vs_apply_t *s_open(const char *path)
{
    char why[256] = "";
    vs_apply_t *store = NULL;
    if (vs_apply_open(&store, path, NULL, 0, why, sizeof why) != VS_OK) {
        s_fail("the slave database does not open", why);
    }
    return store;
}

static void s_committed(vs_apply_t *store, uint64_t *seq, uint8_t hash[VS_HASH_SIZE])
{
    if (vs_apply_committed_position(store, S_STREAM, seq, hash) != VS_OK) {
        s_fail("the committed position is unreadable", vs_apply_error(store));
    }
}

/*  Applies one set at seq after hash (the position's), from an exact copy of its bytes, so
    that a read past its end is a read past the buffer.                                       */
static int s_apply(vs_apply_t *store, uint64_t seq, const uint8_t hash[VS_HASH_SIZE], s_set_t set,
                   uint8_t next_hash[VS_HASH_SIZE], bool *applied)
{
    uint8_t *copy = malloc(set.size ? set.size : 1);
    if (!copy) {
        abort();
    }
    memcpy(copy, set.data, set.size);
    vs_chain_next(hash, copy, set.size, next_hash);
    int rc = vs_apply_set(store, S_STREAM, seq, next_hash, copy, set.size, applied);
    free(copy);
    return rc;
}

/*  Every table of the slave but versync's own, with its SQL and its rows, each row a line
    of quoted values; the rows sorted, as rowids may differ. A heap string to free.          */
static char *s_dump(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    char *dump = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT group_concat(part, char(10)) FROM ("
                           "  SELECT 'table ' || name || ': ' || sql AS part FROM sqlite_master"
                           "  WHERE type = 'table' AND name NOT LIKE '\\_versync%' ESCAPE '\\'"
                           "  ORDER BY name)",
                           -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        s_fail("the slave's schema is unreadable", sqlite3_errmsg(db));
    }
    const char *schema = (const char *) sqlite3_column_text(stmt, 0);
    sqlite3_str *text = sqlite3_str_new(db);
    sqlite3_str_appendf(text, "%s\n", schema ? schema : "");
    sqlite3_finalize(stmt);
    sqlite3_stmt *tables = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                           "LIKE '\\_versync%' ESCAPE '\\' ORDER BY name",
                           -1, &tables, NULL) != SQLITE_OK) {
        s_fail("the slave's tables are unreadable", sqlite3_errmsg(db));
    }
    while (sqlite3_step(tables) == SQLITE_ROW) {
        const char *name = (const char *) sqlite3_column_text(tables, 0);
        /* One line a row, each column quoted; the lines sorted. */
        sqlite3_stmt *columns = NULL;
        char *line = NULL;
        if (sqlite3_prepare_v2(db,
                               "SELECT group_concat('quote(\"' || replace(name, '\"', '\"\"') "
                               "|| '\")', ' || '','' || ') FROM pragma_table_info(?)",
                               -1, &columns, NULL) == SQLITE_OK &&
            sqlite3_bind_text(columns, 1, name, -1, SQLITE_TRANSIENT) == SQLITE_OK &&
            sqlite3_step(columns) == SQLITE_ROW && sqlite3_column_text(columns, 0)) {
            line = sqlite3_mprintf("SELECT %s AS line FROM \"%w\" ORDER BY line",
                                   (const char *) sqlite3_column_text(columns, 0), name);
        }
        sqlite3_finalize(columns);
        sqlite3_stmt *rows = NULL;
        if (!line || sqlite3_prepare_v2(db, line, -1, &rows, NULL) != SQLITE_OK) {
            s_fail("a slave table is unreadable", sqlite3_errmsg(db));
        }
        sqlite3_free(line);
        sqlite3_str_appendf(text, "%s:\n", name);
        while (sqlite3_step(rows) == SQLITE_ROW) {
            sqlite3_str_appendf(text, "%s\n", (const char *) sqlite3_column_text(rows, 0));
        }
        sqlite3_finalize(rows);
    }
    sqlite3_finalize(tables);
    char *result = sqlite3_str_finish(text);
    dump = result ? strdup(result) : NULL;
    sqlite3_free(result);
    sqlite3_close(db);
    if (!dump) {
        abort();
    }
    return dump;
}

static void s_integrity(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        s_fail("integrity_check did not run", sqlite3_errmsg(db));
    }
    const char *result = (const char *) sqlite3_column_text(stmt, 0);
    if (!result || strcmp(result, "ok") != 0) {
        s_fail("the slave database is corrupt", result);
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

/*  The committed sets, applied again to an empty slave in one batch: they must all apply,
    the batch must commit, and both slaves must hold the same tables and rows.               */
static void s_check_one_batch(const s_set_t *sets, uint64_t committed)
{
    s_remove_database(s_again);
    vs_apply_t *store = s_open(s_again);
    uint8_t hash[VS_HASH_SIZE] = {0};
    for (uint64_t seq = 1; seq <= committed; seq++) {
        uint8_t next_hash[VS_HASH_SIZE];
        bool applied = false;
        int rc = s_apply(store, seq, hash, sets[seq - 1], next_hash, &applied);
        if (rc != VS_OK || !applied) {
            s_fail("a committed set does not apply in one batch", vs_apply_error(store));
        }
        memcpy(hash, next_hash, VS_HASH_SIZE);
    }
    int rc = vs_apply_commit(store);
    if (rc != VS_OK || vs_apply_in_batch(store)) {
        s_fail("the committed sets do not commit in one batch", vs_apply_error(store));
    }
    vs_apply_close(&store);
    char *scripted = s_dump(s_path), *again = s_dump(s_again);
    if (s_trace) {
        fprintf(stderr, "both slaves hold:\n%s", scripted);
    }
    if (strcmp(scripted, again) != 0) {
        fprintf(stderr, "scripted slave:\n%s\none batch:\n%s\n", scripted, again);
        s_fail("the slave's content depends on where its batches were cut", NULL);
    }
    free(scripted);
    free(again);
    s_remove_database(s_again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_path[0]) {
        const char *dir = getenv("VS_TEST_TMP");
        if (!dir || access(dir, W_OK) != 0) {
            dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        }
        snprintf(s_path, sizeof s_path, "%s/fuzz_apply.%ld.db", dir, (long) getpid());
        snprintf(s_again, sizeof s_again, "%s.again", s_path);
        s_trace = getenv("FUZZ_APPLY_TRACE") != NULL;
    }
    s_remove_database(s_path);
    vs_apply_t *store = s_open(s_path);
    s_set_t sets[S_MAX_STEPS]; /* sets[i] was applied as seq i + 1 */
    size_t offset = 0;
    unsigned set_count = 0, reopens = 0;
    for (int step = 0; step < S_MAX_STEPS && offset < size; step++) {
        uint8_t kind = data[offset++] % 4;
        uint64_t seq = 0, committed = 0;
        uint8_t hash[VS_HASH_SIZE], committed_hash[VS_HASH_SIZE];
        if (vs_apply_position(store, S_STREAM, &seq, hash) != VS_OK) {
            s_fail("the position is unreadable", vs_apply_error(store));
        }
        s_committed(store, &committed, committed_hash);
        if (kind == 0) {
            size_t length = 0;
            if (offset + 2 <= size) {
                length = (size_t) data[offset] | (size_t) data[offset + 1] << 8;
                offset += 2;
            }
            if (length > size - offset) {
                length = size - offset;
            }
            s_set_t set = {data + offset, length};
            offset += length;
            bool gap = ++set_count % 16 == 0;
            bool applied = false;
            uint8_t next_hash[VS_HASH_SIZE];
            int rc = s_apply(store, seq + (gap ? 2 : 1), hash, set, next_hash, &applied);
            if (s_trace) {
                fprintf(stderr, "set of %zu bytes at seq %llu: %s %s\n", length,
                        (unsigned long long) (seq + (gap ? 2 : 1)), vs_strerror(rc),
                        rc == VS_OK ? "" : vs_apply_error(store));
            }
            uint64_t after = 0, after_committed = 0;
            uint8_t after_hash[VS_HASH_SIZE], ignored[VS_HASH_SIZE];
            if (vs_apply_position(store, S_STREAM, &after, after_hash) != VS_OK) {
                s_fail("the position is unreadable after a set", vs_apply_error(store));
            }
            s_committed(store, &after_committed, ignored);
            if (after_committed != committed) {
                s_fail("applying a set moved the committed position", NULL);
            }
            if (rc == VS_OK) {
                if (gap || !applied || after != seq + 1 ||
                    memcmp(after_hash, next_hash, VS_HASH_SIZE) != 0) {
                    s_fail("an applied set did not move the position to it", NULL);
                }
                sets[seq] = set;
            } else if (rc == VS_EGAP) {
                if (!gap || after != seq) {
                    s_fail("VS_EGAP for a set that follows, or it moved the position", NULL);
                }
            } else if (vs_apply_in_batch(store) || after != committed) {
                s_fail("a failed set left its batch open", vs_strerror(rc));
            }
        } else if (kind == 1) {
            bool consistent = vs_apply_consistent(store);
            int rc = vs_apply_commit(store);
            if (s_trace) {
                fprintf(stderr, "commit: %s\n", vs_strerror(rc));
            }
            s_committed(store, &committed, committed_hash);
            if (consistent && rc == VS_OK &&
                (committed != seq || memcmp(committed_hash, hash, VS_HASH_SIZE) != 0)) {
                s_fail("a commit did not store the position", NULL);
            }
            if (!consistent && rc != VS_EINVAL) {
                s_fail("a batch was committed at a point that is not consistent", NULL);
            }
            if (rc != VS_OK && rc != VS_EINVAL && vs_apply_in_batch(store)) {
                s_fail("a failed commit left its batch open", vs_strerror(rc));
            }
        } else if (kind == 2) {
            vs_apply_rollback(store);
            if (vs_apply_in_batch(store) ||
                vs_apply_position(store, S_STREAM, &seq, hash) != VS_OK || seq != committed) {
                s_fail("a rollback did not return to the committed position", NULL);
            }
        } else if (++reopens <= S_MAX_REOPENS) {
            vs_apply_close(&store);
            store = s_open(s_path);
            uint64_t reopened = 0;
            uint8_t reopened_hash[VS_HASH_SIZE];
            s_committed(store, &reopened, reopened_hash);
            if (reopened != committed || memcmp(reopened_hash, committed_hash, VS_HASH_SIZE) != 0) {
                s_fail("a reopened store lost its committed position", NULL);
            }
        }
    }
    uint64_t committed = 0;
    uint8_t committed_hash[VS_HASH_SIZE];
    s_committed(store, &committed, committed_hash);
    vs_apply_close(&store);
    s_integrity(s_path);
    if (committed > 0) {
        s_check_one_batch(sets, committed);
    }
    s_remove_database(s_path);
    return 0;
}
