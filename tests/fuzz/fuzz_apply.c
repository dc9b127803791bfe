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
    PRAGMA integrity_check at the end. With FUZZ_APPLY_TRACE set it prints each step's result,
    to read what an input does.                                                              */
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

#define S_STREAM "fuzz"
#define S_MAX_STEPS 64
#define S_MAX_REOPENS 4

static char s_path[512];
static bool s_trace;

static void s_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_apply: contract broken: %s (%s)\n", what, detail ? detail : "");
    abort();
}

static void s_remove_database(void)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char path[600];
    for (size_t index = 0; index < sizeof suffixes / sizeof suffixes[0]; index++) {
        snprintf(path, sizeof path, "%s%s", s_path, suffixes[index]);
        unlink(path);
    }
}

static vs_apply_t *s_open(void)
{
    char why[256] = "";
    vs_apply_t *store = NULL;
    if (vs_apply_open(&store, s_path, NULL, 0, why, sizeof why) != VS_OK) {
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

static void s_integrity(void)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_open_v2(s_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_path[0]) {
        const char *dir = getenv("VS_TEST_TMP");
        if (!dir || access(dir, W_OK) != 0) {
            dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        }
        snprintf(s_path, sizeof s_path, "%s/fuzz_apply.%ld.db", dir, (long) getpid());
        s_trace = getenv("FUZZ_APPLY_TRACE") != NULL;
    }
    s_remove_database();
    vs_apply_t *store = s_open();
    size_t offset = 0;
    unsigned sets = 0, reopens = 0;
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
            /* An exact copy, so that a read past the set's end is a read past the buffer. */
            uint8_t *set = malloc(length ? length : 1);
            if (!set) {
                abort();
            }
            memcpy(set, data + offset, length);
            offset += length;
            uint8_t next_hash[VS_HASH_SIZE];
            vs_chain_next(hash, set, length, next_hash);
            bool gap = ++sets % 16 == 0;
            bool applied = false;
            int rc = vs_apply_set(store, S_STREAM, seq + (gap ? 2 : 1), next_hash, set, length,
                                  &applied);
            free(set);
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
            if (consistent && rc == VS_OK && (committed != seq ||
                                              memcmp(committed_hash, hash, VS_HASH_SIZE) != 0)) {
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
            store = s_open();
            uint64_t reopened = 0;
            uint8_t reopened_hash[VS_HASH_SIZE];
            s_committed(store, &reopened, reopened_hash);
            if (reopened != committed ||
                memcmp(reopened_hash, committed_hash, VS_HASH_SIZE) != 0) {
                s_fail("a reopened store lost its committed position", NULL);
            }
        }
    }
    vs_apply_close(&store);
    s_integrity();
    s_remove_database();
    return 0;
}
