/*  apply.c - the slave database: positions, schema mapping and batched exactly-once apply.

    Owns the slave's SQLite connection. Each master table signature (name, columns, primary
    key) is mapped once to the slave table and gets cached statements: an UPSERT of one row,
    an UPSERT of S_UPSERT_ROWS rows and a DELETE. Consecutive upserts of one table are queued
    and written S_UPSERT_ROWS at a time; applying a change then only binds values and steps,
    with no allocation per row.                                                               */
#include "apply.h"

#include "checkpoint.h"

#include <czmq.h>
#include <ctype.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_STATE_TABLE "_versync_state"
/*  Rows in one multi-row UPSERT, and the most parameters it may have: SQLite spends about a
    quarter of a one-row UPSERT's instructions starting and ending the statement (VdbeHalt,
    register buffers), so rows of one table go through one statement. The statement holds
    rows x columns parameters; tables too wide for two rows keep the one-row form.            */
#define S_UPSERT_ROWS       32
#define S_UPSERT_PARAMETERS 1024
/*  WAL pages between two requests to the checkpointer (checkpoint.h): SQLite's own automatic
    threshold. Past S_WAL_PAGES_MAX (16 MiB of 4 KiB pages) the applying thread checkpoints
    itself after its commit, as SQLite would have, when the checkpointer is not copying at
    that moment. Past S_WAL_PAGES_HARD it waits for the checkpointer's pass to end (at most
    S_WAL_WAIT_MS) and then copies the rest: the WAL stays bounded even when the applying
    thread outpaces the checkpointer.                                                        */
#define S_CHECKPOINT_PAGES 1000
#define S_WAL_PAGES_MAX    (4 * S_CHECKPOINT_PAGES)
#define S_WAL_PAGES_HARD   (2 * S_WAL_PAGES_MAX)
#define S_WAL_WAIT_MS      2000

/*  One stream's position: as committed, and as it stands inside the open batch.               */
typedef struct {
    char *name;
    uint64_t committed_seq;
    uint8_t committed_hash[VS_HASH_SIZE];
    uint64_t seq;
    uint8_t hash[VS_HASH_SIZE];
    bool touched;    /* changed by the open batch                                  */
    bool consistent; /* the last set applied in the open batch is CONSISTENT       */
} s_stream_t;

/*  How one master table signature lands in the slave.                                          */
typedef struct {
    char *name;            /* the master table's                                      */
    bool skip;             /* filtered out by config->tables                          */
    uint32_t column_count; /* master columns                                          */
    uint32_t pk_count;
    uint32_t pk_columns[VS_MAX_PK_COLUMNS]; /* master column of each key column, in order */
    int *parameter; /* per master column: its UPSERT parameter, 0 when unused   */
    int parameters; /* UPSERT parameters of one row                              */
    sqlite3_stmt *upsert;
    sqlite3_stmt *upsert_rows; /* upsert_row_count rows at once; NULL: too wide   */
    int upsert_row_count;
    sqlite3_stmt *delete;
} s_mapping_t;

/*  One deferred upsert of the set being applied: its table's mapping, where its values
    start in deferred_values (their bytes point into the set).                                */
typedef struct {
    s_mapping_t *mapping;
    size_t offset;
    bool done;
} s_deferred_t;

/*  An upsert deferred past the end of its set (s_deferred_settle): its values, and the bytes
    they point to, are copies in one block.                                                   */
typedef struct {
    s_mapping_t *mapping;
    size_t stream;      /* index in streams                                               */
    vs_value_t *values; /* the master's columns, then their bytes                          */
    uint64_t hash;      /* of the slave table's name and the key (s_key_hash)             */
    bool done;          /* written, or superseded by a later change of its key            */
} s_carried_t;

struct vs_apply {
    sqlite3 *db;   /* NULL: verify-only, positions in memory, changes only checked and counted */
    vs_checkpointer_t *checkpointer; /* with db */
    int wal_requested_at;            /* WAL pages at the last request to the checkpointer */
    char **tables; /* filter; table_count 0 means every table */
    size_t table_count;
    s_stream_t *streams;
    size_t stream_count;
    size_t stream_capacity;
    zhashx_t *mappings; /* signature -> s_mapping_t */
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
    sqlite3_stmt *state_read;
    sqlite3_stmt *state_write;
    sqlite3_stmt *table_type;
    sqlite3_stmt *table_columns;
    sqlite3 *scratch; /* in memory: where a master's create_sql shows its column types */
    bool in_batch;
    size_t batch_rows;
    size_t batch_sets;
    uint64_t batch_upserts; /* changes of wanted tables in the open batch */
    uint64_t batch_deletes;
    uint64_t upserts; /* committed */
    uint64_t deletes;
    bool *set_wanted; /* verify-only: per table of the set being applied */
    size_t set_wanted_capacity;
    s_mapping_t **set_mappings; /* per table of the set being applied */
    size_t set_mappings_capacity;
    /*  Upserts of one table waiting for a multi-row UPSERT; their values point into the set
        being applied, so the queue is written out before vs_apply_set returns.             */
    s_mapping_t *queued_mapping;
    uint32_t queued_table;
    size_t queued_rows;
    vs_value_t *queued_values; /* queued_rows x the table's column count */
    size_t queued_capacity;    /* values                                 */
    /*  Upserts of the set being applied that collided with another row in a UNIQUE index
        besides the primary key: written again at the end of the set (s_deferred_settle).  */
    s_deferred_t *deferred;
    size_t deferred_count;
    size_t deferred_capacity;
    vs_value_t *deferred_values; /* each deferred row's values, at its offset          */
    size_t deferred_values_used;
    size_t deferred_values_capacity;
    /*  Deferred upserts of earlier sets of the batch that are not settled yet.                */
    s_carried_t *carried;
    size_t carried_count;
    size_t carried_capacity;
    uint32_t *carried_slots;   /* by key hash: index in carried + 1, 0 for none */
    size_t carried_slot_count; /* a power of two                                */
    char *signature;
    size_t signature_capacity;
    char error[1024];
};

static void s_carried_clear(vs_apply_t *self);

/*  A growable NUL-terminated text; failed records an allocation failure.                     */
typedef struct {
    char *data;
    size_t size;
    size_t capacity;
    bool failed;
} s_text_t;

static void s_text_append(s_text_t *text, const char *data, size_t size)
{
    if (text->failed) {
        return;
    }
    if (text->size + size + 1 > text->capacity) {
        size_t capacity = text->capacity ? text->capacity : 256;
        while (capacity < text->size + size + 1) {
            capacity *= 2;
        }
        char *grown = realloc(text->data, capacity);
        if (!grown) {
            text->failed = true;
            return;
        }
        text->data = grown;
        text->capacity = capacity;
    }
    memcpy(text->data + text->size, data, size);
    text->size += size;
    text->data[text->size] = 0;
}

static void s_text_add(s_text_t *text, const char *string)
{
    s_text_append(text, string, strlen(string));
}

/*  Appends name as a quoted SQL identifier, doubling every '"'.                              */
static void s_text_add_identifier(s_text_t *text, const char *name)
{
    s_text_append(text, "\"", 1);
    for (const char *cursor = name; *cursor; cursor++) {
        s_text_append(text, cursor, 1);
        if (*cursor == '"') {
            s_text_append(text, "\"", 1);
        }
    }
    s_text_append(text, "\"", 1);
}

static void s_text_add_number(s_text_t *text, size_t number)
{
    char digits[32];
    int size = snprintf(digits, sizeof digits, "%zu", number);
    s_text_append(text, digits, (size_t) size);
}

static int s_fail(vs_apply_t *self, int code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(vs_apply_t *self, int code, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(self->error, sizeof self->error, format, arguments);
    va_end(arguments);
    return code;
}

/*  A short printable form of an untrusted name, for error texts.                              */
static const char *s_sample(const char *data, size_t size, char *out, size_t out_size)
{
    vs_escape_sample(data, size, out, out_size);
    return out;
}

static bool s_has_prefix_nocase(const char *name, const char *prefix)
{
    return sqlite3_strnicmp(name, prefix, (int) strlen(prefix)) == 0;
}

/*  Called by SQLite after each commit with the pages the WAL holds (it replaces the automatic
    checkpoint, which would run here on this thread). A count below the last request's means
    the WAL started over.                                                                    */
static int s_wal_hook(void *arg, sqlite3 *db, const char *database, int pages)
{
    vs_apply_t *self = (vs_apply_t *) arg;
    if (pages < self->wal_requested_at) {
        self->wal_requested_at = 0;
    }
    if (pages >= S_WAL_PAGES_MAX) {
        /* Busy at once while the checkpointer copies (a busy handler is not called for the
           checkpoint lock): past the hard bound, wait for it here.                          */
        for (int waited = 0;; waited++) {
            int rc = sqlite3_wal_checkpoint_v2(db, database, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            if ((rc & 0xff) != SQLITE_BUSY || pages < S_WAL_PAGES_HARD || waited >= S_WAL_WAIT_MS) {
                break;
            }
            sqlite3_sleep(1);
        }
    } else if (pages >= self->wal_requested_at + S_CHECKPOINT_PAGES) {
        vs_checkpointer_request(self->checkpointer);
        self->wal_requested_at = pages;
    }
    return SQLITE_OK;
}

static int s_prepare(vs_apply_t *self, const char *sql, sqlite3_stmt **stmt)
{
    int rc = sqlite3_prepare_v3(self->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
    if (rc != SQLITE_OK) {
        return s_fail(self, VS_ESTORE, "cannot prepare \"%.60s\": %s", sql,
                      sqlite3_errmsg(self->db));
    }
    return VS_OK;
}

static void s_mapping_destroy(s_mapping_t **self_p)
{
    if (*self_p) {
        s_mapping_t *self = *self_p;
        sqlite3_finalize(self->upsert);
        sqlite3_finalize(self->upsert_rows);
        sqlite3_finalize(self->delete);
        free(self->parameter);
        free(self->name);
        free(self);
        *self_p = NULL;
    }
}

static void s_mapping_destructor(void **item)
{
    s_mapping_destroy((s_mapping_t **) item);
}

/* ------------------------------------------------------------------------------------------ */

int vs_apply_open(vs_apply_t **self_p, const char *path, const char *const *tables,
                  size_t table_count, char *why, size_t why_size)
{
    if (!self_p || (table_count > 0 && !tables)) {
        if (why_size > 0) {
            snprintf(why, why_size, "invalid arguments");
        }
        return VS_EINVAL;
    }
    int code = VS_ENOMEM;
    vs_apply_t *self = calloc(1, sizeof *self);
    if (!self) {
        goto cleanup;
    }
    self->mappings = zhashx_new();
    if (!self->mappings) {
        goto cleanup;
    }
    zhashx_set_destructor(self->mappings, s_mapping_destructor);
    if (table_count > 0) {
        self->tables = calloc(table_count, sizeof *self->tables);
        if (!self->tables) {
            goto cleanup;
        }
        self->table_count = table_count;
        for (size_t index = 0; index < table_count; index++) {
            if (!tables[index]) {
                code = s_fail(self, VS_EINVAL, "table filter %zu is NULL", index);
                goto cleanup;
            }
            self->tables[index] = strdup(tables[index]);
            if (!self->tables[index]) {
                goto cleanup;
            }
        }
    }
    if (!path) {
        *self_p = self; /* verify-only */
        return VS_OK;
    }
    int rc = sqlite3_open_v2(
        path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        code = s_fail(self, VS_ESTORE, "cannot open '%s': %s", path,
                      self->db ? sqlite3_errmsg(self->db) : sqlite3_errstr(rc));
        goto cleanup;
    }
    sqlite3_extended_result_codes(self->db, 1);
    sqlite3_busy_timeout(self->db, 5000);
    const char *setup = "PRAGMA journal_mode=WAL;"
                        "PRAGMA synchronous=NORMAL;"
                        "PRAGMA cache_size=-65536;" /* 64 MiB: random keys stay in memory */
                        "CREATE TABLE IF NOT EXISTS " S_STATE_TABLE
                        "(stream TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);";
    if (sqlite3_exec(self->db, setup, NULL, NULL, NULL) != SQLITE_OK) {
        code = s_fail(self, VS_ESTORE, "cannot set up '%s': %s", path, sqlite3_errmsg(self->db));
        goto cleanup;
    }
    char reason[512];
    code = vs_checkpointer_new(&self->checkpointer, path, reason, sizeof reason);
    if (code != VS_OK) {
        code = s_fail(self, code, "%s", reason);
        goto cleanup;
    }
    sqlite3_wal_hook(self->db, s_wal_hook, self);
    code = s_prepare(self, "BEGIN IMMEDIATE", &self->begin);
    if (code == VS_OK) {
        code = s_prepare(self, "COMMIT", &self->commit);
    }
    if (code == VS_OK) {
        code = s_prepare(self, "ROLLBACK", &self->rollback);
    }
    if (code == VS_OK) {
        code = s_prepare(self, "SELECT seq, hash FROM main." S_STATE_TABLE " WHERE stream = ?1",
                         &self->state_read);
    }
    if (code == VS_OK) {
        code = s_prepare(self,
                         "INSERT INTO main." S_STATE_TABLE "(stream, seq, hash) VALUES (?1, ?2, ?3)"
                         " ON CONFLICT(stream) DO UPDATE SET seq = excluded.seq,"
                         " hash = excluded.hash",
                         &self->state_write);
    }
    if (code == VS_OK) {
        code = s_prepare(self,
                         "SELECT type, name FROM main.sqlite_schema"
                         " WHERE name = ?1 COLLATE NOCASE AND type IN ('table', 'view')",
                         &self->table_type);
    }
    if (code == VS_OK) {
        code =
            s_prepare(self, "SELECT name, pk, type FROM pragma_table_info(?1, 'main') ORDER BY cid",
                      &self->table_columns);
    }
    if (code != VS_OK) {
        goto cleanup;
    }
    *self_p = self;
    self = NULL;
    code = VS_OK;
cleanup:
    if (self) {
        if (why_size > 0) {
            snprintf(why, why_size, "%s", self->error[0] ? self->error : vs_strerror(code));
        }
        vs_apply_close(&self);
    } else if (code == VS_ENOMEM && why_size > 0) {
        snprintf(why, why_size, "out of memory");
    }
    return code;
}

void vs_apply_close(vs_apply_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    vs_apply_t *self = *self_p;
    if (self->in_batch) {
        vs_apply_rollback(self);
    }
    zhashx_destroy(&self->mappings);
    /* First, so that this connection, the last one, copies the WAL and removes it on close. */
    vs_checkpointer_destroy(&self->checkpointer);
    sqlite3_finalize(self->begin);
    sqlite3_finalize(self->commit);
    sqlite3_finalize(self->rollback);
    sqlite3_finalize(self->state_read);
    sqlite3_finalize(self->state_write);
    sqlite3_finalize(self->table_type);
    sqlite3_finalize(self->table_columns);
    sqlite3_close(self->scratch);
    sqlite3_close_v2(self->db);
    for (size_t index = 0; index < self->table_count; index++) {
        free(self->tables[index]);
    }
    free(self->tables);
    for (size_t index = 0; index < self->stream_count; index++) {
        free(self->streams[index].name);
    }
    free(self->streams);
    free(self->set_mappings);
    free(self->queued_values);
    free(self->deferred);
    free(self->deferred_values);
    s_carried_clear(self);
    free(self->carried);
    free(self->carried_slots);
    free(self->set_wanted);
    free(self->signature);
    free(self);
    *self_p = NULL;
}

const char *vs_apply_error(const vs_apply_t *self)
{
    return self->error;
}

bool vs_apply_in_batch(const vs_apply_t *self)
{
    return self->in_batch;
}

size_t vs_apply_batch_rows(const vs_apply_t *self)
{
    return self->in_batch ? self->batch_rows : 0;
}

size_t vs_apply_batch_sets(const vs_apply_t *self)
{
    return self->in_batch ? self->batch_sets : 0;
}

const char *vs_apply_waiting_stream(const vs_apply_t *self)
{
    for (size_t index = 0; index < self->stream_count; index++) {
        if (self->streams[index].touched && !self->streams[index].consistent) {
            return self->streams[index].name;
        }
    }
    return NULL;
}

bool vs_apply_consistent(const vs_apply_t *self)
{
    for (size_t index = 0; index < self->stream_count; index++) {
        if (self->streams[index].touched && !self->streams[index].consistent) {
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------------------------
    Streams and their positions.                                                              */

/*  Finds the stream, loading its committed position on first use.                            */
static int s_stream_get(vs_apply_t *self, const char *name, s_stream_t **stream_p)
{
    if (!name || !vs_stream_name_valid(name, strlen(name))) {
        return s_fail(self, VS_EINVAL, "invalid stream name");
    }
    for (size_t index = 0; index < self->stream_count; index++) {
        if (strcmp(self->streams[index].name, name) == 0) {
            *stream_p = &self->streams[index];
            return VS_OK;
        }
    }
    uint64_t seq = 0;
    uint8_t hash[VS_HASH_SIZE] = {0};
    int code = VS_OK;
    int rc = SQLITE_DONE;
    if (self->db) {
        sqlite3_bind_text(self->state_read, 1, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(self->state_read);
    }
    if (rc == SQLITE_ROW) {
        sqlite3_int64 stored = sqlite3_column_int64(self->state_read, 0);
        const void *blob = sqlite3_column_blob(self->state_read, 1);
        int blob_size = sqlite3_column_bytes(self->state_read, 1);
        if (sqlite3_column_type(self->state_read, 0) != SQLITE_INTEGER || stored < 0 ||
            sqlite3_column_type(self->state_read, 1) != SQLITE_BLOB || blob_size != VS_HASH_SIZE) {
            code = s_fail(self, VS_ESTORE, "corrupt " S_STATE_TABLE " row for stream %s", name);
        } else {
            seq = (uint64_t) stored;
            memcpy(hash, blob, VS_HASH_SIZE);
        }
    } else if (rc != SQLITE_DONE) {
        code =
            s_fail(self, VS_ESTORE, "cannot read " S_STATE_TABLE ": %s", sqlite3_errmsg(self->db));
    }
    if (self->db) {
        sqlite3_reset(self->state_read);
        sqlite3_clear_bindings(self->state_read);
    }
    if (code != VS_OK) {
        return code;
    }
    if (self->stream_count == self->stream_capacity) {
        size_t capacity = self->stream_capacity ? self->stream_capacity * 2 : 8;
        s_stream_t *grown = realloc(self->streams, capacity * sizeof *grown);
        if (!grown) {
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
        self->streams = grown;
        self->stream_capacity = capacity;
    }
    s_stream_t *stream = &self->streams[self->stream_count];
    memset(stream, 0, sizeof *stream);
    stream->name = strdup(name);
    if (!stream->name) {
        return s_fail(self, VS_ENOMEM, "out of memory");
    }
    stream->committed_seq = stream->seq = seq;
    memcpy(stream->committed_hash, hash, VS_HASH_SIZE);
    memcpy(stream->hash, hash, VS_HASH_SIZE);
    stream->consistent = true;
    self->stream_count++;
    *stream_p = stream;
    return VS_OK;
}

int vs_apply_position(vs_apply_t *self, const char *stream_name, uint64_t *seq,
                      uint8_t hash[VS_HASH_SIZE])
{
    s_stream_t *stream = NULL;
    int code = s_stream_get(self, stream_name, &stream);
    if (code == VS_OK) {
        *seq = stream->seq;
        if (hash) {
            memcpy(hash, stream->hash, VS_HASH_SIZE);
        }
    }
    return code;
}

int vs_apply_committed_position(vs_apply_t *self, const char *stream_name, uint64_t *seq,
                                uint8_t hash[VS_HASH_SIZE])
{
    s_stream_t *stream = NULL;
    int code = s_stream_get(self, stream_name, &stream);
    if (code == VS_OK) {
        *seq = stream->committed_seq;
        if (hash) {
            memcpy(hash, stream->committed_hash, VS_HASH_SIZE);
        }
    }
    return code;
}

/* ------------------------------------------------------------------------------------------
    Batches.                                                                                  */

/*  Empties the queue of upserts (see s_queue_upsert) without writing it.                     */
static void s_queue_clear(vs_apply_t *self)
{
    self->queued_mapping = NULL;
    self->queued_rows = 0;
    self->deferred_count = 0;
    self->deferred_values_used = 0;
}

static int s_step_once(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

void vs_apply_rollback(vs_apply_t *self)
{
    if (!self->in_batch) {
        return;
    }
    if (self->db && !sqlite3_get_autocommit(self->db)) {
        s_step_once(self->rollback);
    }
    for (size_t index = 0; index < self->stream_count; index++) {
        s_stream_t *stream = &self->streams[index];
        stream->seq = stream->committed_seq;
        memcpy(stream->hash, stream->committed_hash, VS_HASH_SIZE);
        stream->touched = false;
        stream->consistent = true;
    }
    /*  A table created inside the batch is gone again: map everything afresh.                */
    s_queue_clear(self);
    s_carried_clear(self);
    zhashx_purge(self->mappings);
    self->in_batch = false;
    self->batch_rows = 0;
    self->batch_sets = 0;
    self->batch_upserts = 0;
    self->batch_deletes = 0;
}

/*  Rolls back the batch, keeping the error text already recorded.                             */
static int s_abort(vs_apply_t *self, int code)
{
    vs_apply_rollback(self);
    return code;
}

int vs_apply_commit(vs_apply_t *self)
{
    if (!self->in_batch) {
        return VS_OK;
    }
    if (!vs_apply_consistent(self)) {
        return s_fail(self, VS_EINVAL, "the batch is not at a consistent point");
    }
    for (size_t index = 0; index < self->stream_count && self->db; index++) {
        s_stream_t *stream = &self->streams[index];
        if (!stream->touched) {
            continue;
        }
        sqlite3_bind_text(self->state_write, 1, stream->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(self->state_write, 2, (sqlite3_int64) stream->seq);
        sqlite3_bind_blob(self->state_write, 3, stream->hash, VS_HASH_SIZE, SQLITE_STATIC);
        int rc = s_step_once(self->state_write);
        sqlite3_clear_bindings(self->state_write);
        if (rc != SQLITE_OK) {
            s_fail(self, VS_ESTORE, "cannot store the position of stream %s: %s", stream->name,
                   sqlite3_errmsg(self->db));
            return s_abort(self, VS_ESTORE);
        }
    }
    if (self->db && s_step_once(self->commit) != SQLITE_OK) {
        s_fail(self, VS_ESTORE, "commit failed: %s", sqlite3_errmsg(self->db));
        return s_abort(self, VS_ESTORE);
    }
    for (size_t index = 0; index < self->stream_count; index++) {
        s_stream_t *stream = &self->streams[index];
        stream->committed_seq = stream->seq;
        memcpy(stream->committed_hash, stream->hash, VS_HASH_SIZE);
        stream->touched = false;
        stream->consistent = true;
    }
    self->upserts += self->batch_upserts;
    self->deletes += self->batch_deletes;
    self->in_batch = false;
    self->batch_rows = 0;
    self->batch_sets = 0;
    self->batch_upserts = 0;
    self->batch_deletes = 0;
    return VS_OK;
}

void vs_apply_counts(const vs_apply_t *self, uint64_t *upserts, uint64_t *deletes)
{
    *upserts = self->upserts;
    *deletes = self->deletes;
}

unsigned long vs_apply_checkpoints(vs_apply_t *self)
{
    return self->checkpointer ? vs_checkpointer_count(self->checkpointer) : 0;
}

/* ------------------------------------------------------------------------------------------
    Creating a missing table from the master's CREATE TABLE text.                             */

typedef struct {
    const char *table;
    bool created;
} s_create_guard_t;

static bool s_is_schema_table(const char *name)
{
    return name && (strcmp(name, "sqlite_master") == 0 || strcmp(name, "sqlite_schema") == 0 ||
                    strcmp(name, "sqlite_sequence") == 0);
}

/*  Lets through exactly what one CREATE TABLE of the expected name needs in the main
    database: the table (and sqlite_sequence for AUTOINCREMENT), its automatic indexes, reads
    of its own columns (CHECK, generated columns), function names in its expressions, and the
    schema table's bookkeeping. Everything else (AS SELECT, triggers, views, other tables,
    ATTACH, pragmas, temp objects) is denied.                                                 */
static int s_create_authorizer(void *arg, int action, const char *first, const char *second,
                               const char *database, const char *trigger)
{
    s_create_guard_t *guard = arg;
    (void) trigger;
    bool in_main = database && strcmp(database, "main") == 0;
    switch (action) {
    case SQLITE_CREATE_TABLE:
        if (in_main && first && sqlite3_stricmp(first, guard->table) == 0) {
            guard->created = true;
            return SQLITE_OK;
        }
        if (in_main && first && strcmp(first, "sqlite_sequence") == 0) {
            return SQLITE_OK;
        }
        return SQLITE_DENY;
    case SQLITE_CREATE_INDEX:
        if (in_main && first && second && s_has_prefix_nocase(first, "sqlite_autoindex_") &&
            sqlite3_stricmp(second, guard->table) == 0) {
            return SQLITE_OK;
        }
        return SQLITE_DENY;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE: return in_main && s_is_schema_table(first) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_READ:
        if (in_main && first &&
            (s_is_schema_table(first) || sqlite3_stricmp(first, guard->table) == 0)) {
            return SQLITE_OK;
        }
        return SQLITE_DENY;
    case SQLITE_FUNCTION: return SQLITE_OK;
    default: return SQLITE_DENY;
    }
}

static int s_create_table(vs_apply_t *self, const char *table, vs_bytes_t create_sql)
{
    char sample[80];
    if (create_sql.size == 0 || create_sql.size > VS_MAX_SQL ||
        memchr(create_sql.data, 0, create_sql.size)) {
        return s_fail(self, VS_ESCHEMA, "table '%s': missing on the slave and no usable create_sql",
                      s_sample(table, strlen(table), sample, sizeof sample));
    }
    char *sql = vs_bytes_strdup(create_sql);
    if (!sql) {
        return s_fail(self, VS_ENOMEM, "out of memory");
    }
    s_create_guard_t guard = {.table = table, .created = false};
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int code = VS_OK;
    sqlite3_set_authorizer(self->db, s_create_authorizer, &guard);
    int rc = sqlite3_prepare_v2(self->db, sql, -1, &stmt, &tail);
    if (rc != SQLITE_OK || !stmt) {
        code = s_fail(self, VS_ESCHEMA, "table '%s': create_sql refused: %s",
                      s_sample(table, strlen(table), sample, sizeof sample),
                      rc != SQLITE_OK ? sqlite3_errmsg(self->db) : "no statement");
        goto cleanup;
    }
    for (const char *cursor = tail; cursor && *cursor; cursor++) {
        if (*cursor != ';' && *cursor != ' ' && *cursor != '\t' && *cursor != '\n' &&
            *cursor != '\r' && *cursor != '\f' && *cursor != '\v') {
            code =
                s_fail(self, VS_ESCHEMA, "table '%s': create_sql refused: more than one statement",
                       s_sample(table, strlen(table), sample, sizeof sample));
            goto cleanup;
        }
    }
    if (!guard.created) {
        code = s_fail(self, VS_ESCHEMA,
                      "table '%s': create_sql refused: not a CREATE TABLE of that table",
                      s_sample(table, strlen(table), sample, sizeof sample));
        goto cleanup;
    }
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        code =
            s_fail(self, VS_ESCHEMA, "table '%s': cannot create it: %s",
                   s_sample(table, strlen(table), sample, sizeof sample), sqlite3_errmsg(self->db));
        goto cleanup;
    }
cleanup:
    sqlite3_finalize(stmt);
    sqlite3_set_authorizer(self->db, NULL, NULL);
    free(sql);
    return code;
}

/* ------------------------------------------------------------------------------------------
    Mapping a master table onto the slave table.                                              */

static char s_affinity(const char *type);

/*  The affinities of the master's key columns, in key order, from its create_sql run in an
    in-memory scratch database under the same authorizer as s_create_table. Returns false
    when they cannot be known (no create_sql, or one SQLite here does not take): then the
    caller does without.                                                                     */
static bool s_master_key_affinities(vs_apply_t *self, const vs_table_t *table,
                                    char affinities[VS_MAX_PK_COLUMNS])
{
    if (table->create_sql.size == 0 || table->create_sql.size > VS_MAX_SQL ||
        table->name.size > VS_MAX_NAME ||
        memchr(table->create_sql.data, 0, table->create_sql.size)) {
        return false;
    }
    if (!self->scratch &&
        sqlite3_open_v2(":memory:", &self->scratch, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(self->scratch);
        self->scratch = NULL;
        return false;
    }
    char name[VS_MAX_NAME + 1];
    memcpy(name, table->name.data, table->name.size);
    name[table->name.size] = 0;
    char *sql = vs_bytes_strdup(table->create_sql);
    bool known = false;
    sqlite3_stmt *stmt = NULL;
    s_create_guard_t guard = {.table = name, .created = false};
    sqlite3_set_authorizer(self->scratch, s_create_authorizer, &guard);
    const char *tail = NULL;
    bool created = sql && sqlite3_prepare_v2(self->scratch, sql, -1, &stmt, &tail) == SQLITE_OK &&
                   stmt && guard.created && sqlite3_step(stmt) == SQLITE_DONE;
    sqlite3_finalize(stmt);
    stmt = NULL;
    sqlite3_set_authorizer(self->scratch, NULL, NULL);
    if (created && sqlite3_prepare_v2(self->scratch,
                                      "SELECT pk, type FROM pragma_table_info(?1, 'main') "
                                      "WHERE pk > 0",
                                      -1, &stmt, NULL) == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
        size_t found = 0;
        while (sqlite3_step(stmt) == SQLITE_ROW) {
            int position = sqlite3_column_int(stmt, 0);
            if (position >= 1 && position <= (int) table->pk_count) {
                affinities[position - 1] = s_affinity((const char *) sqlite3_column_text(stmt, 1));
                found++;
            }
        }
        known = found == table->pk_count;
    }
    sqlite3_finalize(stmt);
    /* The authorizer let it create that one table: dropping it empties the scratch. */
    char *drop = sqlite3_mprintf("DROP TABLE IF EXISTS main.\"%w\"", name);
    if (drop) {
        sqlite3_exec(self->scratch, drop, NULL, NULL, NULL);
    }
    sqlite3_free(drop);
    free(sql);
    return known;
}

/*  "1:t|2:ab|...|pk:0,1," with each name length-prefixed, so no two tables collide.          */
static int s_signature(vs_apply_t *self, const vs_table_t *table)
{
    s_text_t text = {self->signature, 0, self->signature_capacity, false};
    s_text_add_number(&text, table->name.size);
    s_text_append(&text, ":", 1);
    s_text_append(&text, table->name.data, table->name.size);
    for (uint32_t index = 0; index < table->column_count; index++) {
        s_text_append(&text, "|", 1);
        s_text_add_number(&text, table->columns[index].size);
        s_text_append(&text, ":", 1);
        s_text_append(&text, table->columns[index].data, table->columns[index].size);
    }
    s_text_append(&text, "|pk:", 4);
    for (uint32_t index = 0; index < table->pk_count; index++) {
        s_text_add_number(&text, table->pk_columns[index]);
        s_text_append(&text, ",", 1);
    }
    self->signature = text.data;
    self->signature_capacity = text.capacity;
    return text.failed ? s_fail(self, VS_ENOMEM, "out of memory") : VS_OK;
}

static bool s_table_wanted(const vs_apply_t *self, const char *name)
{
    if (self->table_count == 0) {
        return true;
    }
    for (size_t index = 0; index < self->table_count; index++) {
        if (sqlite3_stricmp(self->tables[index], name) == 0) {
            return true;
        }
    }
    return false;
}

/*  Looks the table up in the slave: *kind 0 when missing, 1 for a table, 2 for a view.       */
static int s_table_kind(vs_apply_t *self, const char *name, int *kind)
{
    *kind = 0;
    sqlite3_bind_text(self->table_type, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(self->table_type);
    if (rc == SQLITE_ROW) {
        const char *type = (const char *) sqlite3_column_text(self->table_type, 0);
        *kind = type && strcmp(type, "table") == 0 ? 1 : 2;
        rc = SQLITE_DONE;
    }
    sqlite3_reset(self->table_type);
    sqlite3_clear_bindings(self->table_type);
    if (rc != SQLITE_DONE) {
        return s_fail(self, VS_ESTORE, "cannot read the slave schema: %s",
                      sqlite3_errmsg(self->db));
    }
    return VS_OK;
}

typedef struct {
    char *name;
    int pk;            /* 1-based position in the primary key, 0 when not part of it */
    int master_column; /* -1 when the master does not have it */
    char affinity;     /* of its declared type: s_affinity */
} s_slave_column_t;

static const char *s_affinity_name(char affinity)
{
    switch (affinity) {
    case 'I': return "INTEGER";
    case 'T': return "TEXT";
    case 'B': return "BLOB (no type)";
    case 'R': return "REAL";
    default: return "NUMERIC";
    }
}

/*  The type affinity of a declared column type, by SQLite's rules (datatype3.html, 3.1):
    'I'nteger, 'T'ext, 'B'lob (none), 'R'eal, 'N'umeric.                                     */
static char s_affinity(const char *type)
{
    char upper[128];
    size_t length = 0;
    for (; type && type[length] && length + 1 < sizeof upper; length++) {
        upper[length] = (char) toupper((unsigned char) type[length]);
    }
    upper[length] = 0;
    if (strstr(upper, "INT")) {
        return 'I';
    }
    if (strstr(upper, "CHAR") || strstr(upper, "CLOB") || strstr(upper, "TEXT")) {
        return 'T';
    }
    if (length == 0 || strstr(upper, "BLOB")) {
        return 'B';
    }
    if (strstr(upper, "REAL") || strstr(upper, "FLOA") || strstr(upper, "DOUB")) {
        return 'R';
    }
    return 'N';
}

static void s_slave_columns_free(s_slave_column_t *columns, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        free(columns[index].name);
    }
    free(columns);
}

static int s_slave_columns(vs_apply_t *self, const char *table, s_slave_column_t **columns_p,
                           size_t *count_p)
{
    s_slave_column_t *columns = NULL;
    size_t count = 0;
    size_t capacity = 0;
    int code = VS_OK;
    sqlite3_bind_text(self->table_columns, 1, table, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(self->table_columns)) == SQLITE_ROW) {
        if (count == capacity) {
            capacity = capacity ? capacity * 2 : 16;
            s_slave_column_t *grown = realloc(columns, capacity * sizeof *grown);
            if (!grown) {
                code = s_fail(self, VS_ENOMEM, "out of memory");
                break;
            }
            columns = grown;
        }
        const char *name = (const char *) sqlite3_column_text(self->table_columns, 0);
        columns[count].name = strdup(name ? name : "");
        columns[count].pk = sqlite3_column_int(self->table_columns, 1);
        columns[count].master_column = -1;
        columns[count].affinity =
            s_affinity((const char *) sqlite3_column_text(self->table_columns, 2));
        if (!columns[count].name) {
            code = s_fail(self, VS_ENOMEM, "out of memory");
            break;
        }
        count++;
    }
    if (code == VS_OK && rc != SQLITE_DONE) {
        code = s_fail(self, VS_ESTORE, "cannot read the columns of the slave table: %s",
                      sqlite3_errmsg(self->db));
    }
    sqlite3_reset(self->table_columns);
    sqlite3_clear_bindings(self->table_columns);
    if (code != VS_OK) {
        s_slave_columns_free(columns, count);
        return code;
    }
    *columns_p = columns;
    *count_p = count;
    return VS_OK;
}

/*  Appends "(a, b)" naming the slave's primary key columns in key order.                     */
static void s_describe_slave_pk(s_text_t *text, const s_slave_column_t *columns, size_t count)
{
    s_text_add(text, "(");
    int written = 0;
    for (int position = 1; position <= (int) count; position++) {
        for (size_t index = 0; index < count; index++) {
            if (columns[index].pk == position) {
                if (written++) {
                    s_text_add(text, ", ");
                }
                s_text_add(text, columns[index].name);
            }
        }
    }
    s_text_add(text, ")");
}

static void s_describe_master_pk(s_text_t *text, const vs_table_t *table)
{
    s_text_add(text, "(");
    for (uint32_t index = 0; index < table->pk_count; index++) {
        if (index) {
            s_text_add(text, ", ");
        }
        char sample[80];
        const vs_bytes_t *name = &table->columns[table->pk_columns[index]];
        s_text_add(text, s_sample(name->data, name->size, sample, sizeof sample));
    }
    s_text_add(text, ")");
}

/*  True when the master column name equals the slave's, ignoring ASCII case like SQLite.     */
static bool s_name_equal(vs_bytes_t master, const char *slave)
{
    size_t size = strlen(slave);
    return size == master.size &&
           (size == 0 || sqlite3_strnicmp(master.data, slave, (int) size) == 0);
}

/*  Builds the mapping of one master table: creates the slave table if missing, checks the
    primary key, matches the columns and prepares the UPSERT and DELETE.                       */
static int s_mapping_build(vs_apply_t *self, const vs_table_t *table, s_mapping_t **mapping_p)
{
    char sample[80];
    char *name = NULL;
    s_slave_column_t *columns = NULL;
    size_t column_count = 0;
    s_text_t sql = {NULL, 0, 0, false};
    s_text_t head = {NULL, 0, 0, false};
    s_text_t tail = {NULL, 0, 0, false};
    s_text_t message = {NULL, 0, 0, false};
    int code = VS_ENOMEM;
    s_mapping_t *mapping = calloc(1, sizeof *mapping);
    if (!mapping) {
        code = s_fail(self, VS_ENOMEM, "out of memory");
        goto cleanup;
    }
    mapping->column_count = table->column_count;
    mapping->pk_count = table->pk_count; /* at most VS_MAX_PK_COLUMNS: the reader checked */
    memcpy(mapping->pk_columns, table->pk_columns, table->pk_count * sizeof *table->pk_columns);
    if (table->name.size == 0 || memchr(table->name.data, 0, table->name.size)) {
        code = s_fail(self, VS_EPROTO, "invalid table name");
        goto cleanup;
    }
    name = vs_bytes_strdup(table->name);
    if (!name) {
        code = s_fail(self, VS_ENOMEM, "out of memory");
        goto cleanup;
    }
    mapping->name = name;
    const char *shown = s_sample(name, strlen(name), sample, sizeof sample);
    if (!s_table_wanted(self, name)) {
        mapping->skip = true;
        code = VS_OK;
        goto cleanup;
    }
    if (s_has_prefix_nocase(name, "sqlite_") || s_has_prefix_nocase(name, "_versync_")) {
        code = s_fail(self, VS_ESCHEMA, "table '%s': reserved name", shown);
        goto cleanup;
    }
    if (table->pk_count == 0) {
        code = s_fail(self, VS_ESCHEMA, "table '%s': no primary key on the master", shown);
        goto cleanup;
    }
    int kind = 0;
    code = s_table_kind(self, name, &kind);
    if (code == VS_OK && kind == 0) {
        code = s_create_table(self, name, table->create_sql);
        if (code == VS_OK) {
            code = s_table_kind(self, name, &kind);
        }
        if (code == VS_OK && kind != 1) {
            code = s_fail(self, VS_ESCHEMA, "table '%s': create_sql did not create it", shown);
        }
    }
    if (code != VS_OK) {
        goto cleanup;
    }
    if (kind != 1) {
        code = s_fail(self, VS_ESCHEMA, "table '%s': a view on the slave", shown);
        goto cleanup;
    }
    code = s_slave_columns(self, name, &columns, &column_count);
    if (code != VS_OK) {
        goto cleanup;
    }
    /*  The slave's primary key must be the master's, column by column in key order.          */
    size_t slave_pk_count = 0;
    for (size_t index = 0; index < column_count; index++) {
        if (columns[index].pk > 0) {
            slave_pk_count++;
        }
    }
    bool same_pk = slave_pk_count == table->pk_count;
    for (size_t index = 0; same_pk && index < column_count; index++) {
        int position = columns[index].pk;
        if (position > 0 &&
            (position > (int) table->pk_count ||
             !s_name_equal(table->columns[table->pk_columns[position - 1]], columns[index].name))) {
            same_pk = false;
        }
    }
    /*  Keys of TEXT or no affinity on the master would be converted by a slave key of another
        affinity: '1', '01' and '1.0' are three rows of a TEXT key, one of an INTEGER key.    */
    char master_affinity[VS_MAX_PK_COLUMNS];
    if (same_pk && s_master_key_affinities(self, table, master_affinity)) {
        for (size_t index = 0; index < column_count; index++) {
            int position = columns[index].pk;
            char master = position > 0 ? master_affinity[position - 1] : 0;
            if (position > 0 && (master == 'T' || master == 'B') &&
                columns[index].affinity != master) {
                code = s_fail(self, VS_ESCHEMA,
                              "table '%s': primary key column '%s' has %s affinity on the slave "
                              "but %s on the master: the slave would convert the master's keys",
                              shown, columns[index].name, s_affinity_name(columns[index].affinity),
                              s_affinity_name(master));
                goto cleanup;
            }
        }
    }
    if (!same_pk) {
        s_describe_slave_pk(&message, columns, column_count);
        s_text_add(&message, " on the slave, ");
        s_describe_master_pk(&message, table);
        code = s_fail(self, VS_ESCHEMA, "table '%s': primary key %s on the master", shown,
                      message.failed ? "?" : message.data);
        goto cleanup;
    }
    /*  Match the columns both sides have.                                                     */
    mapping->parameter = calloc(table->column_count, sizeof *mapping->parameter);
    if (!mapping->parameter) {
        code = s_fail(self, VS_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (uint32_t master = 0; master < table->column_count; master++) {
        for (size_t slave = 0; slave < column_count; slave++) {
            if (s_name_equal(table->columns[master], columns[slave].name)) {
                if (columns[slave].master_column >= 0) {
                    code = s_fail(self, VS_ESCHEMA, "table '%s': column '%s' appears twice", shown,
                                  columns[slave].name);
                    goto cleanup;
                }
                columns[slave].master_column = (int) master;
                break;
            }
        }
    }
    /*  INSERT OR ABORT INTO main."t"("a","b") VALUES(?1,?2) ON CONFLICT("a") DO UPDATE SET
        "b"=... head is up to VALUES, tail from ON CONFLICT; the multi-row form lists one (?,?)
        per row, parameters numbered on. SQLite writes the rows in order: a key twice in one
        statement is inserted, then updated, as by two statements. OR ABORT overrides the
        slave table's own conflict clauses: with UNIQUE ON CONFLICT IGNORE a colliding row was
        silently not written, with ON CONFLICT ROLLBACK the batch's transaction was gone. A
        collision must come back as an error, for the deferral to wait it out.               */
    s_text_add(&head, "INSERT OR ABORT INTO main.");
    s_text_add_identifier(&head, name);
    s_text_add(&head, "(");
    int parameters = 0;
    for (size_t slave = 0; slave < column_count; slave++) {
        if (columns[slave].master_column >= 0) {
            if (parameters > 0) {
                s_text_add(&head, ",");
            }
            s_text_add_identifier(&head, columns[slave].name);
            mapping->parameter[columns[slave].master_column] = ++parameters;
        }
    }
    mapping->parameters = parameters;
    s_text_add(&head, ") VALUES");
    s_text_add(&tail, " ON CONFLICT(");
    for (uint32_t key = 0; key < table->pk_count; key++) {
        for (size_t slave = 0; slave < column_count; slave++) {
            if (columns[slave].pk == (int) key + 1) {
                s_text_add(&tail, key > 0 ? "," : "");
                s_text_add_identifier(&tail, columns[slave].name);
            }
        }
    }
    s_text_add(&tail, ") DO ");
    int updated = 0;
    for (size_t slave = 0; slave < column_count; slave++) {
        if (columns[slave].master_column >= 0 && columns[slave].pk == 0) {
            s_text_add(&tail, updated++ ? "," : "UPDATE SET ");
            s_text_add_identifier(&tail, columns[slave].name);
            s_text_add(&tail, "=excluded.");
            s_text_add_identifier(&tail, columns[slave].name);
        }
    }
    if (updated == 0) {
        s_text_add(&tail, "NOTHING");
    }
    int variables = sqlite3_limit(self->db, SQLITE_LIMIT_VARIABLE_NUMBER, -1);
    int most = variables < S_UPSERT_PARAMETERS ? variables : S_UPSERT_PARAMETERS;
    int rows = parameters > 0 ? most / parameters : 0;
    mapping->upsert_row_count = rows < S_UPSERT_ROWS ? rows : S_UPSERT_ROWS;
    for (int form = 0; form < 2; form++) {
        int row_count = form == 0 ? 1 : mapping->upsert_row_count;
        sqlite3_stmt **stmt = form == 0 ? &mapping->upsert : &mapping->upsert_rows;
        if (row_count < 2 && form == 1) {
            break; /* too wide: one row at a time */
        }
        sql.size = 0;
        s_text_append(&sql, head.data ? head.data : "", head.size);
        for (int row = 0; row < row_count; row++) {
            s_text_add(&sql, row > 0 ? ",(" : "(");
            for (int parameter = 1; parameter <= parameters; parameter++) {
                s_text_add(&sql, parameter > 1 ? ",?" : "?");
                s_text_add_number(&sql, (size_t) (row * parameters + parameter));
            }
            s_text_add(&sql, ")");
        }
        s_text_append(&sql, tail.data ? tail.data : "", tail.size);
        if (sql.failed || head.failed || tail.failed) {
            code = s_fail(self, VS_ENOMEM, "out of memory");
            goto cleanup;
        }
        int rc = sqlite3_prepare_v3(self->db, sql.data, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
        if (rc != SQLITE_OK) {
            code = s_fail(self, VS_ESCHEMA, "table '%s': cannot prepare the upsert: %s", shown,
                          sqlite3_errmsg(self->db));
            goto cleanup;
        }
    }
    if (!mapping->upsert_rows) {
        mapping->upsert_row_count = 1;
    }
    /*  DELETE FROM main."t" WHERE "a" IS ?1 AND "b" IS ?2 (IS: a key may hold NULL).          */
    sql.size = 0;
    s_text_add(&sql, "DELETE FROM main.");
    s_text_add_identifier(&sql, name);
    s_text_add(&sql, " WHERE ");
    for (uint32_t key = 0; key < table->pk_count; key++) {
        for (size_t slave = 0; slave < column_count; slave++) {
            if (columns[slave].pk == (int) key + 1) {
                s_text_add(&sql, key > 0 ? " AND " : "");
                s_text_add_identifier(&sql, columns[slave].name);
                s_text_add(&sql, " IS ?");
                s_text_add_number(&sql, key + 1);
            }
        }
    }
    if (sql.failed) {
        code = s_fail(self, VS_ENOMEM, "out of memory");
        goto cleanup;
    }
    int rc = sqlite3_prepare_v3(self->db, sql.data, -1, SQLITE_PREPARE_PERSISTENT,
                                &mapping->delete, NULL);
    if (rc != SQLITE_OK) {
        code = s_fail(self, VS_ESCHEMA, "table '%s': cannot prepare the delete: %s", shown,
                      sqlite3_errmsg(self->db));
        goto cleanup;
    }
    code = VS_OK;
cleanup:
    if (code == VS_OK) {
        *mapping_p = mapping;
    } else {
        s_mapping_destroy(&mapping);
    }
    s_slave_columns_free(columns, column_count);
    free(sql.data);
    free(head.data);
    free(tail.data);
    free(message.data);
    return code; /* name belongs to the mapping */
}

/*  The cached mapping of the set's table, built on first use.                                 */
static int s_mapping_get(vs_apply_t *self, const vs_changeset_t *set, uint32_t table_index,
                         s_mapping_t **mapping_p)
{
    if (self->set_mappings[table_index]) {
        *mapping_p = self->set_mappings[table_index];
        return VS_OK;
    }
    const vs_table_t *table = &set->tables[table_index];
    int code = s_signature(self, table);
    if (code != VS_OK) {
        return code;
    }
    s_mapping_t *mapping = zhashx_lookup(self->mappings, self->signature);
    if (!mapping) {
        code = s_mapping_build(self, table, &mapping);
        if (code != VS_OK) {
            return code;
        }
        if (zhashx_insert(self->mappings, self->signature, mapping) != 0) {
            s_mapping_destroy(&mapping);
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
    }
    self->set_mappings[table_index] = mapping;
    *mapping_p = mapping;
    return VS_OK;
}

/* ------------------------------------------------------------------------------------------
    Applying change sets.                                                                     */

static int s_bind(sqlite3_stmt *stmt, int parameter, const vs_value_t *value)
{
    switch (value->type) {
    case VS_INTEGER: return sqlite3_bind_int64(stmt, parameter, value->as.integer);
    case VS_REAL: return sqlite3_bind_double(stmt, parameter, value->as.real);
    case VS_TEXT:
        /*  The buffer outlives the step; "" keeps an empty text a text, not a NULL.          */
        return sqlite3_bind_text64(stmt, parameter,
                                   value->as.bytes.size ? value->as.bytes.data : "",
                                   value->as.bytes.size, SQLITE_STATIC, SQLITE_UTF8);
    case VS_BLOB:
        if (value->as.bytes.size == 0) {
            return sqlite3_bind_zeroblob(stmt, parameter, 0);
        }
        return sqlite3_bind_blob64(stmt, parameter, value->as.bytes.data, value->as.bytes.size,
                                   SQLITE_STATIC);
    case VS_NULL: return sqlite3_bind_null(stmt, parameter);
    default: return SQLITE_MISMATCH;
    }
}

/*  Resets stmt after a step that answered rc (SQLITE_OK for done); a failure names the table
    and the operation.                                                                        */
static int s_step_finish(vs_apply_t *self, sqlite3_stmt *stmt, int rc, const s_mapping_t *mapping,
                         vs_op_t op)
{
    sqlite3_reset(stmt);
    if (rc != SQLITE_OK) {
        char sample[80];
        return s_fail(self, VS_ESTORE, "table '%s': %s failed: %s",
                      s_sample(mapping->name, strlen(mapping->name), sample, sizeof sample),
                      op == VS_OP_UPSERT ? "upsert" : "delete", sqlite3_errmsg(self->db));
    }
    return VS_OK;
}

/*  Steps stmt, bound by the caller unless rc says binding failed, and resets it.              */
static int s_step_change(vs_apply_t *self, sqlite3_stmt *stmt, int rc, const s_mapping_t *mapping,
                         vs_op_t op)
{
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    return s_step_finish(self, stmt, rc, mapping, op);
}

/*  Binds one row of master values to an UPSERT whose row starts after parameter offset.      */
static int s_bind_row(sqlite3_stmt *stmt, const s_mapping_t *mapping, int offset,
                      const vs_value_t *values)
{
    int rc = SQLITE_OK;
    for (uint32_t column = 0; column < mapping->column_count && rc == SQLITE_OK; column++) {
        if (mapping->parameter[column] > 0) {
            rc = s_bind(stmt, offset + mapping->parameter[column], &values[column]);
        }
    }
    return rc;
}

/*  True when the last statement failed on a UNIQUE index besides the primary key (an UPSERT
    resolves primary key conflicts itself), a collision the batch can wait out: the
    transaction must still be open. (The upserts say OR ABORT, which overrides a column's own
    ON CONFLICT ROLLBACK; should the transaction be gone all the same, the collision is a
    failure, never a deferral: the rest of the batch would go on in autocommit, and its
    position commit without its rows.)                                                        */
static bool s_unique_conflict(vs_apply_t *self, int rc)
{
    return (rc & 0xff) == SQLITE_CONSTRAINT &&
           sqlite3_extended_errcode(self->db) == SQLITE_CONSTRAINT_UNIQUE &&
           !sqlite3_get_autocommit(self->db);
}

/*  Keeps one upsert for s_deferred_settle: a copy of its values, whose bytes point into the
    set being applied, which outlives the deferral. values must not point into the deferred
    values themselves (they may move).                                                      */
static int s_defer(vs_apply_t *self, s_mapping_t *mapping, const vs_value_t *values)
{
    if (self->deferred_count == self->deferred_capacity) {
        size_t capacity = self->deferred_capacity ? 2 * self->deferred_capacity : 16;
        s_deferred_t *grown = realloc(self->deferred, capacity * sizeof *grown);
        if (!grown) {
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
        self->deferred = grown;
        self->deferred_capacity = capacity;
    }
    size_t columns = mapping->column_count;
    if (self->deferred_values_used + columns > self->deferred_values_capacity) {
        size_t capacity = self->deferred_values_capacity ? 2 * self->deferred_values_capacity : 256;
        while (capacity < self->deferred_values_used + columns) {
            capacity *= 2;
        }
        vs_value_t *grown = realloc(self->deferred_values, capacity * sizeof *grown);
        if (!grown) {
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
        self->deferred_values = grown;
        self->deferred_values_capacity = capacity;
    }
    memcpy(self->deferred_values + self->deferred_values_used, values, columns * sizeof *values);
    self->deferred[self->deferred_count++] =
        (s_deferred_t){.mapping = mapping, .offset = self->deferred_values_used};
    self->deferred_values_used += columns;
    return VS_OK;
}

/* ------------------------------------------------------------------------------------------
    Upserts carried past the end of their set: the rows of a set that is not CONSISTENT and
    still collide wait for the stream's next sets, indexed by key so that a later change of
    the key supersedes them.                                                                  */

/*  Key column `key` of a row: all of the master's columns (full_row) or only its key.         */
static const vs_value_t *s_key_value(const s_mapping_t *mapping, const vs_value_t *values,
                                     bool full_row, uint32_t key)
{
    return full_row ? &values[mapping->pk_columns[key]] : &values[key];
}

static uint64_t s_hash_mix(uint64_t hash, uint64_t value)
{
    return (hash ^ value) * 0x100000001b3ull + (hash >> 29);
}

/*  The hash of a row's slave table and key. The table counts by name, not by mapping: a
    master table whose columns change between two reads gets a second mapping, and a change
    under it must still find the carried upserts of the same row.                           */
static uint64_t s_key_hash(const s_mapping_t *mapping, const vs_value_t *values, bool full_row)
{
    uint64_t hash = 0xcbf29ce484222325ull;
    for (const char *name = mapping->name; *name; name++) {
        hash = s_hash_mix(hash, (uint64_t) tolower((unsigned char) *name));
    }
    for (uint32_t key = 0; key < mapping->pk_count; key++) {
        const vs_value_t *value = s_key_value(mapping, values, full_row, key);
        hash = s_hash_mix(hash, (uint64_t) value->type);
        if (value->type == VS_INTEGER) {
            hash = s_hash_mix(hash, (uint64_t) value->as.integer);
        } else if (value->type == VS_REAL) {
            uint64_t bits;
            memcpy(&bits, &value->as.real, sizeof bits);
            hash = s_hash_mix(hash, bits);
        } else if (value->type == VS_TEXT || value->type == VS_BLOB) {
            for (size_t at = 0; at < value->as.bytes.size; at++) {
                hash = s_hash_mix(hash, (uint8_t) value->as.bytes.data[at]);
            }
        }
    }
    return hash;
}

/*  True when a carried upsert and a change are of the same slave row.                        */
static bool s_key_equal(const s_carried_t *carried, const s_mapping_t *mapping,
                        const vs_value_t *values, bool full_row)
{
    if (carried->mapping->pk_count != mapping->pk_count ||
        sqlite3_stricmp(carried->mapping->name, mapping->name) != 0) {
        return false;
    }
    for (uint32_t key = 0; key < mapping->pk_count; key++) {
        const vs_value_t *left = s_key_value(carried->mapping, carried->values, true, key);
        const vs_value_t *right = s_key_value(mapping, values, full_row, key);
        if (left->type != right->type) {
            return false;
        }
        if (left->type == VS_INTEGER && left->as.integer != right->as.integer) {
            return false;
        }
        if (left->type == VS_REAL && memcmp(&left->as.real, &right->as.real, sizeof(double))) {
            return false;
        }
        if ((left->type == VS_TEXT || left->type == VS_BLOB) &&
            (left->as.bytes.size != right->as.bytes.size ||
             (left->as.bytes.size &&
              memcmp(left->as.bytes.data, right->as.bytes.data, left->as.bytes.size)))) {
            return false;
        }
    }
    return true;
}

/*  Indexes the carried upserts by key, at most a quarter full: s_carry adds to it until it
    is half full.                                                                            */
static int s_carried_index(vs_apply_t *self)
{
    if (self->carried_count >= UINT32_MAX / 4) {
        return s_fail(self, VS_ENOMEM, "too many upserts waiting for a UNIQUE value");
    }
    size_t slots = 16;
    while (slots < 4 * self->carried_count + 1) {
        slots *= 2;
    }
    if (slots > self->carried_slot_count) {
        uint32_t *grown = realloc(self->carried_slots, slots * sizeof *grown);
        if (!grown) {
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
        self->carried_slots = grown;
        self->carried_slot_count = slots;
    }
    memset(self->carried_slots, 0, self->carried_slot_count * sizeof *self->carried_slots);
    size_t mask = self->carried_slot_count - 1;
    for (size_t index = 0; index < self->carried_count; index++) {
        size_t slot = self->carried[index].hash & mask;
        while (self->carried_slots[slot]) {
            slot = (slot + 1) & mask;
        }
        self->carried_slots[slot] = (uint32_t) index + 1;
    }
    return VS_OK;
}

/*  Copies one deferred upsert, bytes and all, to the carried ones, and indexes it. On failure
    the index may be stale: the caller fails the set, and the rollback drops them all.       */
static int s_carry(vs_apply_t *self, s_mapping_t *mapping, size_t stream, const vs_value_t *values)
{
    if (self->carried_count == self->carried_capacity) {
        size_t capacity = self->carried_capacity ? 2 * self->carried_capacity : 16;
        s_carried_t *grown = realloc(self->carried, capacity * sizeof *grown);
        if (!grown) {
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
        self->carried = grown;
        self->carried_capacity = capacity;
    }
    size_t columns = mapping->column_count;
    size_t bytes = 0;
    for (size_t column = 0; column < columns; column++) {
        if (values[column].type == VS_TEXT || values[column].type == VS_BLOB) {
            bytes += values[column].as.bytes.size;
        }
    }
    vs_value_t *copy = malloc(columns * sizeof *copy + bytes + 1);
    if (!copy) {
        return s_fail(self, VS_ENOMEM, "out of memory");
    }
    char *data = (char *) (copy + columns);
    for (size_t column = 0; column < columns; column++) {
        copy[column] = values[column];
        if ((values[column].type == VS_TEXT || values[column].type == VS_BLOB) &&
            values[column].as.bytes.size > 0) {
            memcpy(data, values[column].as.bytes.data, values[column].as.bytes.size);
            copy[column].as.bytes.data = data;
            data += values[column].as.bytes.size;
        }
    }
    size_t index = self->carried_count++;
    self->carried[index] = (s_carried_t){
        .mapping = mapping, .stream = stream, .values = copy,
        .hash = s_key_hash(mapping, copy, true)};
    if (2 * self->carried_count > self->carried_slot_count) {
        return s_carried_index(self); /* at most half full */
    }
    size_t mask = self->carried_slot_count - 1;
    size_t slot = self->carried[index].hash & mask;
    while (self->carried_slots[slot]) {
        slot = (slot + 1) & mask;
    }
    self->carried_slots[slot] = (uint32_t) index + 1;
    return VS_OK;
}

/*  A change of a key whose upsert is carried: the change is newer, the carried one is done.  */
static void s_carried_supersede(vs_apply_t *self, const s_mapping_t *mapping,
                                const vs_value_t *values, bool full_row)
{
    uint64_t hash = s_key_hash(mapping, values, full_row);
    size_t mask = self->carried_slot_count - 1;
    for (size_t slot = hash & mask; self->carried_slots[slot]; slot = (slot + 1) & mask) {
        s_carried_t *row = &self->carried[self->carried_slots[slot] - 1];
        if (row->hash == hash && s_key_equal(row, mapping, values, full_row)) {
            row->done = true;
        }
    }
}

/*  Drops the carried upserts of one stream, when its snapshot is settled.                   */
static int s_carried_drop(vs_apply_t *self, size_t stream)
{
    size_t kept = 0;
    for (size_t index = 0; index < self->carried_count; index++) {
        if (self->carried[index].stream == stream) {
            free(self->carried[index].values);
        } else {
            self->carried[kept++] = self->carried[index];
        }
    }
    if (kept == self->carried_count) {
        return VS_OK;
    }
    self->carried_count = kept;
    if (kept == 0 && self->carried_slots) {
        /* no slot may keep pointing at a freed row */
        memset(self->carried_slots, 0, self->carried_slot_count * sizeof *self->carried_slots);
        return VS_OK;
    }
    return s_carried_index(self);
}

static void s_carried_clear(vs_apply_t *self)
{
    for (size_t index = 0; index < self->carried_count; index++) {
        free(self->carried[index].values);
    }
    self->carried_count = 0;
    if (self->carried_slots) {
        memset(self->carried_slots, 0, self->carried_slot_count * sizeof *self->carried_slots);
    }
}

/*  s_upsert_row's answer for a row that collided in a UNIQUE index, when allowed to.        */
#define S_COLLIDED (-2)

/*  One upsert through the one-row statement. With may_collide, a collision in a UNIQUE index
    besides the primary key answers S_COLLIDED instead of failing.                          */
static int s_upsert_row(vs_apply_t *self, s_mapping_t *mapping, const vs_value_t *values,
                        bool may_collide)
{
    int rc = s_bind_row(mapping->upsert, mapping, 0, values);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(mapping->upsert);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        if (rc != SQLITE_OK && may_collide && s_unique_conflict(self, rc)) {
            sqlite3_reset(mapping->upsert);
            return S_COLLIDED;
        }
    }
    return s_step_finish(self, mapping->upsert, rc, mapping, VS_OP_UPSERT);
}

/*  Writes the queued upserts, in order: a full queue through the multi-row UPSERT, a shorter
    one (or a full one that collided in a UNIQUE index) row by row. The queue is empty
    afterwards, also on failure.                                                              */
static int s_queue_flush(vs_apply_t *self)
{
    s_mapping_t *mapping = self->queued_mapping;
    size_t rows = self->queued_rows;
    self->queued_mapping = NULL;
    self->queued_rows = 0;
    if (!mapping || rows == 0) {
        return VS_OK;
    }
    const vs_value_t *values = self->queued_values;
    if (mapping->upsert_rows && rows == (size_t) mapping->upsert_row_count) {
        int rc = SQLITE_OK;
        for (size_t row = 0; row < rows && rc == SQLITE_OK; row++) {
            rc = s_bind_row(mapping->upsert_rows, mapping, (int) row * mapping->parameters,
                            values + row * mapping->column_count);
        }
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(mapping->upsert_rows);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        if (rc == SQLITE_OK || !s_unique_conflict(self, rc)) {
            return s_step_finish(self, mapping->upsert_rows, rc, mapping, VS_OP_UPSERT);
        }
        /* The statement's rows were taken back: again one by one, deferring collisions. */
        sqlite3_reset(mapping->upsert_rows);
    }
    for (size_t row = 0; row < rows; row++) {
        const vs_value_t *row_values = values + row * mapping->column_count;
        int code = s_upsert_row(self, mapping, row_values, true);
        if (code == S_COLLIDED) {
            code = s_defer(self, mapping, row_values);
        }
        if (code != VS_OK) {
            return code;
        }
    }
    return VS_OK;
}

/*  The index-th upsert waiting at the end of a set of stream: the set's own deferred ones,
    then the stream's carried ones. False for one that is done or of another stream.         */
static bool s_waiting(vs_apply_t *self, size_t stream, size_t index, s_mapping_t **mapping,
                      const vs_value_t **values, bool **done)
{
    if (index < self->deferred_count) {
        s_deferred_t *row = &self->deferred[index];
        *mapping = row->mapping;
        *values = self->deferred_values + row->offset;
        *done = &row->done;
    } else {
        s_carried_t *row = &self->carried[index - self->deferred_count];
        if (row->stream != stream) {
            return false;
        }
        *mapping = row->mapping;
        *values = row->values;
        *done = &row->done;
    }
    return !**done;
}

/*  The upserts deferred by a UNIQUE collision, at the end of their set. A snapshot satisfies
    the master's UNIQUE indexes, so a row can only collide with a slave row that the snapshot
    changes later (values moved between rows) or that the master no longer has. Each is
    tried once more, which settles a value moved to a row written later in the set. A
    snapshot can take several sets (a publisher's read is cut by size), and only its last is
    flagged CONSISTENT, so the row that moves out of the way can come in a later set: before
    that set, the ones that still collide are carried, copied, to the stream's next sets,
    where a later change of the same row supersedes them (s_carried_supersede). At the
    CONSISTENT set the carried ones are tried once more too, and the rest (chains, swaps and
    cycles of values) are deleted, then written again, each row with its newest values. Each
    row is tried at most three times: linear in the rows. A slave-only column of the rows
    written again goes back to its default. A collision left after that is a real difference
    between master and slave: the set fails, and the batch with it.                         */
static int s_deferred_settle(vs_apply_t *self, size_t stream, bool consistent)
{
    size_t total = consistent ? self->deferred_count + self->carried_count : self->deferred_count;
    s_mapping_t *mapping;
    const vs_value_t *values;
    bool *done;
    size_t left = 0;
    for (size_t index = 0; index < total; index++) {
        if (s_waiting(self, stream, index, &mapping, &values, &done)) {
            int code = s_upsert_row(self, mapping, values, true);
            if (code == S_COLLIDED) {
                left++;
            } else if (code == VS_OK) {
                *done = true;
            } else {
                return code;
            }
        }
    }
    if (!consistent) {
        for (size_t index = 0; index < total && left > 0; index++) {
            if (s_waiting(self, stream, index, &mapping, &values, &done)) {
                int code = s_carry(self, mapping, stream, values);
                if (code != VS_OK) {
                    return code;
                }
            }
        }
        return VS_OK;
    }
    for (size_t index = 0; index < total && left > 0; index++) {
        if (s_waiting(self, stream, index, &mapping, &values, &done)) {
            int rc = SQLITE_OK;
            for (uint32_t key = 0; key < mapping->pk_count && rc == SQLITE_OK; key++) {
                rc = s_bind(mapping->delete, (int) key + 1, &values[mapping->pk_columns[key]]);
            }
            int code = s_step_change(self, mapping->delete, rc, mapping, VS_OP_DELETE);
            if (code != VS_OK) {
                return code;
            }
        }
    }
    for (size_t index = 0; index < total && left > 0; index++) {
        if (s_waiting(self, stream, index, &mapping, &values, &done)) {
            int code = s_upsert_row(self, mapping, values, false);
            if (code != VS_OK) {
                return code;
            }
        }
    }
    return s_carried_drop(self, stream);
}

/*  Queues one upsert of mapping's table; a full queue is written at once.                    */
static int s_queue_upsert(vs_apply_t *self, s_mapping_t *mapping, const vs_change_t *change)
{
    if (self->queued_mapping != mapping || self->queued_table != change->table) {
        int code = s_queue_flush(self);
        if (code != VS_OK) {
            return code;
        }
    }
    size_t columns = mapping->column_count;
    size_t needed = (size_t) mapping->upsert_row_count * columns;
    if (needed > self->queued_capacity) {
        vs_value_t *grown = realloc(self->queued_values, needed * sizeof *grown);
        if (!grown) {
            return s_fail(self, VS_ENOMEM, "out of memory");
        }
        self->queued_values = grown;
        self->queued_capacity = needed;
    }
    memcpy(self->queued_values + self->queued_rows * columns, change->values,
           columns * sizeof *change->values);
    self->queued_mapping = mapping;
    self->queued_table = change->table;
    self->queued_rows++;
    if (self->queued_rows == (size_t) mapping->upsert_row_count) {
        return s_queue_flush(self);
    }
    return VS_OK;
}

static int s_apply_change(vs_apply_t *self, const vs_changeset_t *set, const vs_change_t *change)
{
    if (change->table >= set->table_count) {
        return s_fail(self, VS_EPROTO, "change names table %u of %u", change->table,
                      set->table_count);
    }
    const vs_table_t *table = &set->tables[change->table];
    if (change->value_count !=
        (change->op == VS_OP_UPSERT ? table->column_count : table->pk_count)) {
        return s_fail(self, VS_EPROTO, "change of op %d with %u values", (int) change->op,
                      change->value_count);
    }
    if (!self->db) {
        if (self->set_wanted[change->table]) {
            self->batch_rows++;
            *(change->op == VS_OP_UPSERT ? &self->batch_upserts : &self->batch_deletes) += 1;
        }
        return VS_OK;
    }
    s_mapping_t *mapping = NULL;
    int code = s_mapping_get(self, set, change->table, &mapping);
    if (code != VS_OK || mapping->skip) {
        return code;
    }
    bool full_row = change->op == VS_OP_UPSERT;
    if (self->carried_count > 0 &&
        change->value_count == (full_row ? mapping->column_count : mapping->pk_count)) {
        s_carried_supersede(self, mapping, change->values, full_row);
    }
    if (change->op == VS_OP_UPSERT && change->value_count == mapping->column_count) {
        code = s_queue_upsert(self, mapping, change);
    } else if (change->op == VS_OP_DELETE && change->value_count == mapping->pk_count) {
        code = s_queue_flush(self); /* the upserts before this delete come first */
        if (code == VS_OK) {
            int rc = SQLITE_OK;
            for (uint32_t key = 0; key < change->value_count && rc == SQLITE_OK; key++) {
                rc = s_bind(mapping->delete, (int) key + 1, &change->values[key]);
            }
            code = s_step_change(self, mapping->delete, rc, mapping, VS_OP_DELETE);
        }
    } else {
        return s_fail(self, VS_EPROTO, "change of op %d with %u values", (int) change->op,
                      change->value_count);
    }
    if (code != VS_OK) {
        return code;
    }
    self->batch_rows++;
    *(change->op == VS_OP_UPSERT ? &self->batch_upserts : &self->batch_deletes) += 1;
    return VS_OK;
}

int vs_apply_set(vs_apply_t *self, const char *stream_name, uint64_t seq,
                 const uint8_t hash[VS_HASH_SIZE], const void *changeset, size_t size,
                 bool *applied)
{
    if (applied) {
        *applied = false;
    }
    if (!hash || (!changeset && size > 0)) {
        return s_fail(self, VS_EINVAL, "invalid arguments");
    }
    s_stream_t *stream = NULL;
    int code = s_stream_get(self, stream_name, &stream);
    if (code != VS_OK) {
        return code;
    }
    if (seq <= stream->seq) {
        return VS_OK;
    }
    if (seq != stream->seq + 1) {
        return s_fail(self, VS_EGAP, "stream %s: set %" PRIu64 " does not follow position %" PRIu64,
                      stream->name, seq, stream->seq);
    }
    uint8_t expected[VS_HASH_SIZE];
    vs_chain_next(stream->hash, changeset, size, expected);
    if (memcmp(expected, hash, VS_HASH_SIZE) != 0) {
        s_fail(self, VS_ECHAIN,
               "chain mismatch on stream %s at seq %" PRIu64 ": fork or corrupted history",
               stream->name, seq);
        return s_abort(self, VS_ECHAIN);
    }
    /*  The changes are validated as they are read: a bad one rolls the batch back, so nothing
        of the set stays, and the bytes are gone through once instead of twice (2026-12-02,
        callgrind, 200,000-row W1: the subscriber 1.37G to 1.29G instructions).              */
    vs_changeset_t set;
    const char *why = NULL;
    code = vs_changeset_open_incremental(&set, changeset, size, &why);
    if (code != VS_OK) {
        s_fail(self, code, "stream %s seq %" PRIu64 ": bad change set: %s", stream->name, seq,
               why ? why : vs_strerror(code));
        return s_abort(self, code);
    }
    if (!self->in_batch) {
        if (self->db && s_step_once(self->begin) != SQLITE_OK) {
            vs_changeset_close(&set);
            return s_fail(self, VS_ESTORE, "cannot begin a transaction: %s",
                          sqlite3_errmsg(self->db));
        }
        self->in_batch = true;
        self->batch_rows = 0;
        self->batch_sets = 0;
    }
    if (set.table_count > self->set_mappings_capacity) {
        s_mapping_t **grown = realloc(self->set_mappings, set.table_count * sizeof *grown);
        if (!grown) {
            vs_changeset_close(&set);
            s_fail(self, VS_ENOMEM, "out of memory");
            return s_abort(self, VS_ENOMEM);
        }
        self->set_mappings = grown;
        self->set_mappings_capacity = set.table_count;
    }
    if (set.table_count > 0) {
        memset(self->set_mappings, 0, set.table_count * sizeof *self->set_mappings);
    }
    if (!self->db && set.table_count > self->set_wanted_capacity) {
        bool *grown = realloc(self->set_wanted, set.table_count * sizeof *grown);
        if (!grown) {
            vs_changeset_close(&set);
            s_fail(self, VS_ENOMEM, "out of memory");
            return s_abort(self, VS_ENOMEM);
        }
        self->set_wanted = grown;
        self->set_wanted_capacity = set.table_count;
    }
    for (size_t index = 0; !self->db && index < set.table_count; index++) {
        char name[VS_MAX_NAME + 1];
        const vs_bytes_t *bytes = &set.tables[index].name;
        size_t length = bytes->size < VS_MAX_NAME ? bytes->size : VS_MAX_NAME;
        memcpy(name, bytes->data, length);
        name[length] = 0;
        self->set_wanted[index] = s_table_wanted(self, name);
    }
    vs_change_t change;
    while (code == VS_OK && vs_changeset_next(&set, &change)) {
        code = s_apply_change(self, &set, &change);
    }
    if (code == VS_OK && vs_changeset_error(&set)) {
        code = s_fail(self, VS_EPROTO, "stream %s seq %" PRIu64 ": bad change set: %s",
                      stream->name, seq, vs_changeset_error(&set));
    }
    if (code == VS_OK) {
        code = s_queue_flush(self); /* its values point into the set */
    }
    bool consistent = (set.flags & VS_CHANGESET_CONSISTENT) != 0;
    if (code == VS_OK && (self->deferred_count > 0 || self->carried_count > 0)) {
        /* theirs too, until they are carried */
        code = s_deferred_settle(self, (size_t) (stream - self->streams), consistent);
    }
    s_queue_clear(self);
    vs_changeset_close(&set);
    if (code != VS_OK) {
        return s_abort(self, code);
    }
    stream->seq = seq;
    memcpy(stream->hash, hash, VS_HASH_SIZE);
    stream->touched = true;
    stream->consistent = consistent;
    self->batch_sets++;
    if (applied) {
        *applied = true;
    }
    return VS_OK;
}
