/*  capture.c - triggers, change log, snapshot reads and trimming on the master database.

    This file is the only one that touches the master's SQLite connection. Its tables:
      _versync_meta   (key TEXT PRIMARY KEY, value): publisher_id, acked_version
      _versync_tables (id INTEGER PRIMARY KEY, name TEXT UNIQUE): replicated table ids; a table
                      that lost its triggers (dropped and created again) gets a fresh id and the
                      old row keeps its id with name NULL, so ids are never reused
      _versync_log    (version INTEGER PRIMARY KEY, tbl, k0..k7): one row per changed key
    Versions come from the log's rowid (max + 1); trimming always keeps the newest log row, so
    they never go back.
*/
#include "capture.h"
#include "sql_text.h"

#include <ctype.h>
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define S_BUSY_TIMEOUT_MS    5000
#define S_ATTACH_PATIENCE_MS 60000 /* how long attaching waits for a locked database */
/* Internal: a schema load found triggers to install or drop and must run as a writer. */
#define S_NEED_WRITE (-1)
#define S_ID_BYTES   16
/* The log's columns. No constraint that could abort the triggers' insert: see s_log_upgrade. */
#define S_LOG_COLUMNS "(version INTEGER PRIMARY KEY, tbl INTEGER, k0, k1, k2, k3, k4, k5, k6, k7)"
/* A row whose estimated encoding would push a set past this cap is cut into the next set. */
#define S_SET_CAP (VS_MAX_CHANGESET - 64 * 1024)
/* One read looks at most this many versions, so a huge backlog is not scanned again for
   every window of sets; it looks at a quarter more versions than its sets seem to need (from
   the bytes per version of the last read), and at least S_SPAN_FLOOR. Every version it looks
   at past the last set is looked at again by the next read: twice the need, as before
   2026-12, cost about a tenth of the publisher's instructions in W1 (callgrind). */
#define S_READ_SPAN  (1u << 18)
#define S_SPAN_FLOOR 1024
/* A read whose log has at least one row in S_FILTER_SHARE that a newer change of the same key
   supersedes steps the readers that skip such rows before their joins (_versync_kept): a
   call per log row, instead of a row lookup and its columns per superseded row. W5 (100-update
   transactions over 1,000 rows) supersedes about half. The filter's bitmap covers one read's
   span; a span over S_FILTER_SPAN_MAX versions reads unfiltered. */
#define S_FILTER_SHARE    16
#define S_FILTER_SPAN_MAX (1u << 26)

typedef struct {
    int64_t id;
    char *name;
    char *create_sql;
    size_t column_count;
    char **columns;
    size_t pk_count;
    uint32_t pk[VS_MAX_PK_COLUMNS];
    /* A rowid alias no column shadows; NULL for WITHOUT ROWID (or all three shadowed): then
       the row exists when its first pk column is not NULL. */
    const char *rowid;
    size_t reader;       /* its row reader (vs_capture.readers)                              */
    int found_column;    /* that reader's column: 1 when the row exists; its columns follow  */
    vs_value_t *values;  /* column_count values of the row being encoded                    */
    uint64_t generation; /* set generation in which set_index is valid                 */
    uint32_t set_index;  /* index of this table in the set being written               */
} s_table_t;

/*  One key of the log as read, its text or blob bytes kept in s_changes_t's arena.            */
typedef struct {
    int type; /* SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB or SQLITE_NULL */
    union {
        int64_t integer;
        double real;
        struct {
            size_t offset;
            size_t size;
        } bytes;
    } as;
} s_key_t;

/*  A changed key of one read: its newest version in the range.                               */
typedef struct {
    uint64_t version;
    s_table_t *table;
    uint64_t hash;
    size_t slot; /* its place in the hash table */
} s_change_t;

/*  The changed keys of one read, collected newest first so that the first occurrence of a key
    is its newest version, with an open-addressing hash table over them. Kept between reads
    so that a steady stream of reads allocates nothing.                                        */
typedef struct {
    s_change_t *items;
    s_key_t *keys; /* stride key values per item */
    size_t count;
    size_t capacity;
    size_t stride;
    uint32_t *slots; /* item index + 1; 0: empty */
    size_t slot_capacity;
    char *arena;
    size_t arena_size;
    size_t arena_capacity;
} s_changes_t;

/*  Reads the log in a version range, oldest first, LEFT JOINed with the current rows of a group
    of tables: the rows of every change come in the same statement step as its log row, with
    no lookup statement per key. Columns: version, then per table "found" and its columns. */
typedef struct {
    sqlite3_stmt *stmt;
    sqlite3_stmt *filtered; /* the same, only for the versions a read keeps (_versync_kept) */
    sqlite3_stmt *active;   /* the one the current read steps                            */
    uint64_t at; /* version of the current row; 0: not stepped in this read */
} s_reader_t;

struct vs_capture {
    sqlite3 *db;
    char *db_path;
    vs_logger_t logger;
    char **requested; /* config->tables, copied */
    size_t requested_count;
    size_t target;
    uint64_t read_span;
    size_t bytes_per_version; /* of the sets of the last read, 0: not known yet           */
    char publisher_id[2 * S_ID_BYTES + 1];
    uint64_t acked_version;
    s_table_t *tables; /* sorted by id */
    size_t table_count;
    size_t key_columns; /* largest pk count in use: k0..k(key_columns-1) are read      */
    int64_t schema_version;
    int64_t data_version;
    bool data_version_known;
    int wal_index_fd;           /* the -shm file, read-only; -1: none                */
    uint8_t wal_index_seen[48]; /* its first header copy at the last data_version   */
    bool wal_index_known;
    sqlite3_stmt *read_changes; /* the log's keys in a version range, newest first        */
    s_reader_t *readers;        /* the log joined with the tables' rows, oldest first      */
    size_t reader_count;
    s_changes_t changes; /* the keys of one read, deduplicated                      */
    size_t superseded;   /* log rows of the last collect with a newer change of their key */
    uint8_t *kept;       /* bit v - kept_after - 1: version v is kept by the current read */
    uint64_t kept_after;
    uint64_t kept_span; /* versions the bitmap covers; 0: not allocated                   */
    sqlite3_stmt *newest_stmt;
    sqlite3_stmt *schema_version_stmt;
    sqlite3_stmt *data_version_stmt;
    sqlite3_stmt *begin_stmt;    /* BEGIN: prepared once, as a read starts many times a second */
    sqlite3_stmt *rollback_stmt; /* ROLLBACK                                                    */
    sqlite3_stmt *trim_stmt;
    sqlite3_stmt *store_acked_stmt;
    vs_changeset_writer_t *writer;
    uint64_t generation;
    size_t set_table_count; /* tables declared in the set being written               */
    bool busy;
    char error[1024];
};

static void s_kept_function(sqlite3_context *context, int argc, sqlite3_value **argv);

/* ---------------------------------------------------------------------------------------------
    A growing text buffer for generated SQL.                                                   */

typedef struct {
    char *data;
    size_t size;
    size_t capacity;
    bool failed;
} s_text_t;

static bool s_text_reserve(s_text_t *text, size_t more)
{
    if (text->failed) {
        return false;
    }
    if (text->size + more + 1 <= text->capacity) {
        return true;
    }
    size_t capacity = text->capacity ? text->capacity : 256;
    while (capacity < text->size + more + 1) {
        capacity *= 2;
    }
    char *data = realloc(text->data, capacity);
    if (!data) {
        text->failed = true;
        return false;
    }
    text->data = data;
    text->capacity = capacity;
    return true;
}

__attribute__((format(printf, 2, 3))) static void s_text_add(s_text_t *text, const char *format,
                                                             ...)
{
    va_list args;
    va_start(args, format);
    char small[256];
    int length = vsnprintf(small, sizeof small, format, args);
    va_end(args);
    if (length < 0) {
        text->failed = true;
        return;
    }
    if (!s_text_reserve(text, (size_t) length)) {
        return;
    }
    va_start(args, format);
    vsnprintf(text->data + text->size, (size_t) length + 1, format, args);
    va_end(args);
    text->size += (size_t) length;
}

/*  Appends name as a quoted SQL identifier: "na""me".                                        */
static void s_text_identifier(s_text_t *text, const char *name)
{
    size_t length = strlen(name);
    if (!s_text_reserve(text, 2 * length + 2)) {
        return;
    }
    text->data[text->size++] = '"';
    for (const char *cursor = name; *cursor; cursor++) {
        if (*cursor == '"') {
            text->data[text->size++] = '"';
        }
        text->data[text->size++] = *cursor;
    }
    text->data[text->size++] = '"';
    text->data[text->size] = 0;
}

static void s_text_free(s_text_t *text)
{
    free(text->data);
    memset(text, 0, sizeof *text);
}

/* ---------------------------------------------------------------------------------------------
    Errors.                                                                                    */

__attribute__((format(printf, 2, 3))) static void s_set_error(vs_capture_t *self,
                                                              const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(self->error, sizeof self->error, format, args);
    va_end(args);
}

/*  Records SQLite's message for what failed and returns VS_ESTORE.                            */
static int s_sqlite_error(vs_capture_t *self, const char *what)
{
    int code = sqlite3_errcode(self->db) & 0xff;
    self->busy = code == SQLITE_BUSY || code == SQLITE_LOCKED;
    s_set_error(self, "%s in database '%s': %s", what, self->db_path, sqlite3_errmsg(self->db));
    return VS_ESTORE;
}

static int s_exec(vs_capture_t *self, const char *sql, const char *what)
{
    if (sqlite3_exec(self->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return s_sqlite_error(self, what);
    }
    return VS_OK;
}

static int s_prepare(vs_capture_t *self, const char *sql, sqlite3_stmt **stmt, const char *what)
{
    if (sqlite3_prepare_v3(self->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL) != SQLITE_OK) {
        *stmt = NULL;
        return s_sqlite_error(self, what);
    }
    return VS_OK;
}

/*  Ends the open transaction, if any, discarding its writes.                                 */
static void s_rollback(vs_capture_t *self)
{
    if (sqlite3_get_autocommit(self->db)) {
        return;
    }
    if (self->rollback_stmt) {
        sqlite3_step(self->rollback_stmt);
        sqlite3_reset(self->rollback_stmt);
    }
    if (!sqlite3_get_autocommit(self->db)) {
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    }
}

/* ---------------------------------------------------------------------------------------------
    Tables.                                                                                    */

static void s_table_clear(s_table_t *table)
{
    free(table->name);
    free(table->create_sql);
    for (size_t index = 0; index < table->column_count; index++) {
        free(table->columns[index]);
    }
    free(table->columns);
    free(table->values);
    memset(table, 0, sizeof *table);
}

static void s_tables_free(s_table_t **tables, size_t *count)
{
    for (size_t index = 0; index < *count; index++) {
        s_table_clear(&(*tables)[index]);
    }
    free(*tables);
    *tables = NULL;
    *count = 0;
}

static int s_table_compare(const void *left, const void *right)
{
    int64_t a = ((const s_table_t *) left)->id;
    int64_t b = ((const s_table_t *) right)->id;
    return (a > b) - (a < b);
}

static s_table_t *s_table_by_id(vs_capture_t *self, int64_t id)
{
    size_t low = 0;
    size_t high = self->table_count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (self->tables[middle].id == id) {
            return &self->tables[middle];
        }
        if (self->tables[middle].id < id) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    return NULL;
}

typedef enum {
    S_DESCRIBE_OK,
    S_DESCRIBE_SKIP, /* not replicable: reason in self->error */
    S_DESCRIBE_FAIL, /* SQLite or memory failure: reason in self->error */
} s_describe_t;

/*  Fills table's name, create_sql, columns and pk from the schema (inside a transaction).    */
static s_describe_t s_table_describe(vs_capture_t *self, const char *name, const char *sql,
                                     s_table_t *table)
{
    s_describe_t result = S_DESCRIBE_FAIL;
    sqlite3_stmt *info = NULL;
    size_t capacity = 0;
    memset(table, 0, sizeof *table);
    table->name = strdup(name);
    table->create_sql = strdup(sql ? sql : "");
    if (!table->name || !table->create_sql) {
        s_set_error(self, "out of memory");
        goto cleanup;
    }
    if (strlen(name) > VS_MAX_NAME) {
        s_set_error(self, "its name is longer than %d bytes", VS_MAX_NAME);
        result = S_DESCRIBE_SKIP;
        goto cleanup;
    }
    if (strlen(table->create_sql) > VS_MAX_SQL) {
        s_set_error(self, "its CREATE TABLE text is longer than %d bytes", VS_MAX_SQL);
        result = S_DESCRIBE_SKIP;
        goto cleanup;
    }
    if (s_prepare(self, "SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid", &info,
                  "cannot read table info") != VS_OK) {
        goto cleanup;
    }
    sqlite3_bind_text(info, 1, name, -1, SQLITE_STATIC);
    int rc;
    uint32_t pk_by_position[VS_MAX_PK_COLUMNS];
    size_t too_many_pk = 0;
    while ((rc = sqlite3_step(info)) == SQLITE_ROW) {
        const char *column = (const char *) sqlite3_column_text(info, 0);
        int64_t pk = sqlite3_column_int64(info, 1);
        if (!column || !*column || strlen(column) > VS_MAX_NAME) {
            s_set_error(self, "a column name is empty or longer than %d bytes", VS_MAX_NAME);
            result = S_DESCRIBE_SKIP;
            goto cleanup;
        }
        if (table->column_count == VS_MAX_COLUMNS) {
            s_set_error(self, "it has more than %d columns", VS_MAX_COLUMNS);
            result = S_DESCRIBE_SKIP;
            goto cleanup;
        }
        if (table->column_count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            char **columns = realloc(table->columns, capacity * sizeof *columns);
            if (!columns) {
                s_set_error(self, "out of memory");
                goto cleanup;
            }
            table->columns = columns;
        }
        table->columns[table->column_count] = strdup(column);
        if (!table->columns[table->column_count]) {
            s_set_error(self, "out of memory");
            goto cleanup;
        }
        if (pk > VS_MAX_PK_COLUMNS) {
            too_many_pk++;
        } else if (pk > 0) {
            pk_by_position[pk - 1] = (uint32_t) table->column_count;
            table->pk_count++;
        }
        table->column_count++;
    }
    if (rc != SQLITE_DONE) {
        s_sqlite_error(self, "cannot read table info");
        goto cleanup;
    }
    if (table->column_count == 0) {
        s_set_error(self, "it has no columns");
        result = S_DESCRIBE_SKIP;
        goto cleanup;
    }
    if (too_many_pk) {
        s_set_error(self, "its primary key has more than %d columns", VS_MAX_PK_COLUMNS);
        result = S_DESCRIBE_SKIP;
        goto cleanup;
    }
    if (table->pk_count == 0) {
        s_set_error(self, "it has no PRIMARY KEY (rowid only)");
        result = S_DESCRIBE_SKIP;
        goto cleanup;
    }
    memcpy(table->pk, pk_by_position, table->pk_count * sizeof table->pk[0]);
    table->values = calloc(table->column_count, sizeof *table->values);
    if (!table->values) {
        s_set_error(self, "out of memory");
        goto cleanup;
    }
    result = S_DESCRIBE_OK;
cleanup:
    sqlite3_finalize(info);
    if (result != S_DESCRIBE_OK) {
        s_table_clear(table);
    }
    return result;
}

/*  Appends "k0, k1, ..." for count key columns.                                               */
static void s_text_keys(s_text_t *text, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        s_text_add(text, "%sk%zu", index ? ", " : "", index);
    }
}

/*  Appends `prefix."pk1", prefix."pk2"` (prefix NULL: bare names).                            */
static void s_text_pk(s_text_t *text, const s_table_t *table, const char *prefix)
{
    for (size_t index = 0; index < table->pk_count; index++) {
        s_text_add(text, "%s%s%s", index ? ", " : "", prefix ? prefix : "", prefix ? "." : "");
        s_text_identifier(text, table->columns[table->pk[index]]);
    }
}

/*  Appends a trigger body that logs the key of the NEW or OLD row into _versync_log.          */
static void s_text_log_body(s_text_t *sql, const s_table_t *table, const char *row)
{
    s_text_add(sql, " BEGIN INSERT INTO _versync_log (tbl, ");
    s_text_keys(sql, table->pk_count);
    s_text_add(sql, ") VALUES (%lld, ", (long long) table->id);
    s_text_pk(sql, table, row);
    s_text_add(sql, "); END;");
}

/*  Creates the four triggers of a table, replacing any earlier ones, inside the caller's write
    transaction; with backfill, also logs every existing row. An UPDATE logs OLD's key through
    _upd; only an UPDATE that names a key column and changes its value also logs NEW's key,
    through _key, whose WHEN clause SQLite checks before running it: the common UPDATE pays for
    one log insert and nothing else.                                                          */
static int s_table_install(vs_capture_t *self, const s_table_t *table, bool backfill)
{
    int rc = VS_ENOMEM;
    s_text_t sql = {0};
    const char *kinds[4] = {"ins", "upd", "key", "del"};
    for (size_t kind = 0; kind < 4; kind++) {
        s_text_add(&sql, "DROP TRIGGER IF EXISTS \"_versync_%lld_%s\";", (long long) table->id,
                   kinds[kind]);
    }
    /* AFTER INSERT: NEW's key. */
    s_text_add(&sql, "CREATE TRIGGER IF NOT EXISTS \"_versync_%lld_ins\" AFTER INSERT ON ",
               (long long) table->id);
    s_text_identifier(&sql, table->name);
    s_text_log_body(&sql, table, "NEW");
    /* AFTER UPDATE OF a key column, when the key changed: NEW's key too. Created before _upd
       because SQLite runs the triggers of an event newest first: OLD's key keeps the lower
       version, as a DELETE before an INSERT. */
    s_text_add(&sql, "CREATE TRIGGER IF NOT EXISTS \"_versync_%lld_key\" AFTER UPDATE OF ",
               (long long) table->id);
    s_text_pk(&sql, table, NULL);
    s_text_add(&sql, " ON ");
    s_text_identifier(&sql, table->name);
    s_text_add(&sql, " WHEN ");
    for (size_t index = 0; index < table->pk_count; index++) {
        const char *column = table->columns[table->pk[index]];
        s_text_add(&sql, "%sNEW.", index ? " OR " : "");
        s_text_identifier(&sql, column);
        s_text_add(&sql, " IS NOT OLD.");
        s_text_identifier(&sql, column);
    }
    s_text_log_body(&sql, table, "NEW");
    /* AFTER UPDATE: OLD's key. */
    s_text_add(&sql, "CREATE TRIGGER IF NOT EXISTS \"_versync_%lld_upd\" AFTER UPDATE ON ",
               (long long) table->id);
    s_text_identifier(&sql, table->name);
    s_text_log_body(&sql, table, "OLD");
    /* AFTER DELETE: OLD's key. */
    s_text_add(&sql, "CREATE TRIGGER IF NOT EXISTS \"_versync_%lld_del\" AFTER DELETE ON ",
               (long long) table->id);
    s_text_identifier(&sql, table->name);
    s_text_log_body(&sql, table, "OLD");
    if (backfill) {
        /* Rows present before the triggers existed. */
        s_text_add(&sql, "INSERT INTO _versync_log (tbl, ");
        s_text_keys(&sql, table->pk_count);
        s_text_add(&sql, ") SELECT %lld, ", (long long) table->id);
        s_text_pk(&sql, table, NULL);
        s_text_add(&sql, " FROM ");
        s_text_identifier(&sql, table->name);
        s_text_add(&sql, ";");
    }
    if (sql.failed) {
        s_set_error(self, "out of memory");
        goto cleanup;
    }
    rc = s_exec(self, sql.data, "cannot install triggers");
cleanup:
    s_text_free(&sql);
    return rc;
}

/*  The expression after the WHERE of a CREATE INDEX statement's text (a partial index), or
    NULL when the text has none or is not understood. The WHERE is the first one at depth 0
    after the column list, and the text after it must end outside any quote or comment
    (SQLite keeps a comment left open at the end).                                          */
static const char *s_index_where(const char *sql)
{
    int depth = 0;
    bool after_columns = false;
    const char *where = NULL;
    const char *at = sql;
    for (;;) {
        const char *start;
        size_t length;
        vs_sql_kind_t kind = vs_sql_next(&at, &start, &length);
        if (kind == VS_SQL_END || kind == VS_SQL_OPEN) {
            return kind == VS_SQL_END ? where : NULL;
        }
        if (kind == VS_SQL_OTHER && (*start == '(' || *start == ')')) {
            depth += *start == '(' ? 1 : -1;
            after_columns = after_columns || (*start == ')' && depth == 0);
        } else if (!where && after_columns && depth == 0 &&
                   vs_sql_is_word(kind, start, length, "WHERE")) {
            where = at;
        }
    }
}

/*  True when name may appear in the text of an expression: as a word or quoted, in any case.
    A name with a quote character in it is taken to appear (its text doubles them).         */
static bool s_names_column(const char *text, const char *name)
{
    size_t length = strlen(name);
    if (length == 0 || strpbrk(name, "\"'`[]")) {
        return true;
    }
    const char *start;
    size_t size;
    vs_sql_kind_t kind;
    while ((kind = vs_sql_next(&text, &start, &size)) != VS_SQL_END && kind != VS_SQL_OPEN) {
        if ((kind == VS_SQL_WORD && size == length && strncasecmp(start, name, length) == 0) ||
            (kind == VS_SQL_QUOTED && size == length + 2 &&
             strncasecmp(start + 1, name, length) == 0)) {
            return true;
        }
    }
    return false;
}

/*  The guard triggers of a table with UNIQUE indexes besides its primary key, as sqlite_master
    stores them (no trailing semicolon), into insert_sql and update_sql; both empty when the
    table has none. An INSERT or UPDATE OR REPLACE deletes the rows whose values collide with
    the new row's in such an index, and SQLite runs no DELETE trigger for them (unless the
    writing connection turned recursive_triggers on): the guards log those rows' keys first,
    before the new row is written. A plain INSERT that collides fails, and its statement
    journal takes the guard's log rows back with it. A partial index's guard carries the
    index's WHERE, so that it looks rows up through that index. Indexes on expressions are
    left out.                                                                               */
static int s_unique_guards_text(vs_capture_t *self, const s_table_t *table, s_text_t *insert_sql,
                                s_text_t *update_sql)
{
    int rc = VS_ESTORE;
    sqlite3_stmt *indexes = NULL;
    sqlite3_stmt *columns = NULL;
    sqlite3_stmt *index_sql = NULL;
    sqlite3_stmt *generated = NULL;
    s_text_t body = {0};
    s_text_t updated = {0}; /* the columns an UPDATE OF names, once each */
    size_t updated_count = 0;
    bool *named = calloc(table->column_count, sizeof *named);  /* in updated          */
    bool *uses = calloc(table->column_count, sizeof *uses);    /* by the index at hand */
    if (!named || !uses) {
        free(named);
        free(uses);
        s_set_error(self, "out of memory");
        return VS_ENOMEM;
    }
    if (s_prepare(self,
                  "SELECT name, partial FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND "
                  "origin != 'pk' ORDER BY name",
                  &indexes, "cannot read the table's indexes") != VS_OK ||
        s_prepare(self, "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
                  &index_sql, "cannot read the table's indexes") != VS_OK ||
        s_prepare(self,
                  "SELECT count(*) FROM pragma_table_xinfo(?1) WHERE hidden IN (2, 3)",
                  &generated, "cannot read the table's columns") != VS_OK ||
        s_prepare(self,
                  "SELECT cid, name, coll FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
                  &columns, "cannot read the table's indexes") != VS_OK) {
        goto cleanup;
    }
    /* A generated column's value comes from other columns, which an UPDATE OF list would
       have to name; the table's columns (table_info) leave generated ones out. */
    sqlite3_bind_text(generated, 1, table->name, -1, SQLITE_STATIC);
    if (sqlite3_step(generated) != SQLITE_ROW) {
        s_sqlite_error(self, "cannot read the table's columns");
        goto cleanup;
    }
    bool has_generated = sqlite3_column_int(generated, 0) > 0;
    sqlite3_bind_text(indexes, 1, table->name, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(indexes)) == SQLITE_ROW) {
        sqlite3_reset(columns);
        sqlite3_bind_text(columns, 1, (const char *) sqlite3_column_text(indexes, 0), -1,
                          SQLITE_TRANSIENT);
        s_text_t where = {0};
        bool usable = true;
        size_t count = 0;
        const char *partial = NULL; /* its WHERE, borrowed from index_sql */
        if (sqlite3_column_int(indexes, 1)) {
            sqlite3_reset(index_sql);
            sqlite3_bind_text(index_sql, 1, (const char *) sqlite3_column_text(indexes, 0), -1,
                              SQLITE_TRANSIENT);
            if (sqlite3_step(index_sql) == SQLITE_ROW && sqlite3_column_text(index_sql, 0)) {
                partial = s_index_where((const char *) sqlite3_column_text(index_sql, 0));
            }
            usable = partial != NULL;
        }
        int column_step = SQLITE_DONE;
        while (usable && (column_step = sqlite3_step(columns)) == SQLITE_ROW) {
            const char *name = (const char *) sqlite3_column_text(columns, 1);
            const char *collation = (const char *) sqlite3_column_text(columns, 2);
            if (sqlite3_column_int(columns, 0) < 0 || !name || !collation) {
                usable = false; /* an expression, or the rowid */
                break;
            }
            size_t column = 0;
            while (column < table->column_count && strcasecmp(table->columns[column], name)) {
                column++;
            }
            if (column == table->column_count) {
                usable = false; /* a generated column (table_info leaves them out) */
                break;
            }
            uses[column] = true;
            s_text_add(&where, "%s", count++ ? " AND " : "");
            s_text_identifier(&where, name);
            s_text_add(&where, " = NEW.");
            s_text_identifier(&where, name);
            s_text_add(&where, " COLLATE ");
            s_text_identifier(&where, collation);
        }
        /* The UPDATE guard fires on the index's columns, and for a partial index on those its
           WHERE reads too: an UPDATE of them alone can bring a row into the index. */
        for (size_t index = 0; index < table->column_count; index++) {
            bool in_where =
                partial && (has_generated || s_names_column(partial, table->columns[index]));
            if (usable && !named[index] && (uses[index] || in_where)) {
                named[index] = true;
                s_text_add(&updated, "%s", updated_count++ ? ", " : "");
                s_text_identifier(&updated, table->columns[index]);
            }
            uses[index] = false;
        }
        if (column_step != SQLITE_ROW && column_step != SQLITE_DONE) {
            s_text_free(&where);
            s_sqlite_error(self, "cannot read the table's indexes");
            goto cleanup;
        }
        body.failed = body.failed || where.failed;
        if (usable && count && !body.failed) {
            s_text_add(&body, " INSERT INTO _versync_log (tbl, ");
            s_text_keys(&body, table->pk_count);
            s_text_add(&body, ") SELECT %lld, ", (long long) table->id);
            s_text_pk(&body, table, NULL);
            s_text_add(&body, " FROM ");
            s_text_identifier(&body, table->name);
            s_text_add(&body, " WHERE %s", where.data);
            if (partial) {
                /* the line break ends a comment the index's text may end with */
                s_text_add(&body, " AND (%s\n)", partial);
            }
            s_text_add(&body, " AND NOT (");
            for (size_t index = 0; index < table->pk_count; index++) {
                const char *column = table->columns[table->pk[index]];
                s_text_add(&body, "%s", index ? " AND " : "");
                s_text_identifier(&body, column);
                s_text_add(&body, " IS NEW.");
                s_text_identifier(&body, column);
            }
            s_text_add(&body, ");");
        }
        s_text_free(&where);
    }
    if (step != SQLITE_DONE) {
        s_sqlite_error(self, "cannot read the table's indexes");
        goto cleanup;
    }
    if (body.size) {
        s_text_add(insert_sql, "CREATE TRIGGER \"_versync_%lld_uni\" BEFORE INSERT ON ",
                   (long long) table->id);
        s_text_identifier(insert_sql, table->name);
        s_text_add(insert_sql, " BEGIN%s END", body.data);
        s_text_add(update_sql, "CREATE TRIGGER \"_versync_%lld_unu\" BEFORE UPDATE OF %s ON ",
                   (long long) table->id, updated.data ? updated.data : "");
        s_text_identifier(update_sql, table->name);
        s_text_add(update_sql, " BEGIN%s END", body.data);
    }
    if (body.failed || updated.failed || insert_sql->failed || update_sql->failed) {
        s_set_error(self, "out of memory");
        rc = VS_ENOMEM;
        goto cleanup;
    }
    rc = VS_OK;
cleanup:
    free(named);
    free(uses);
    sqlite3_finalize(indexes);
    sqlite3_finalize(columns);
    sqlite3_finalize(index_sql);
    sqlite3_finalize(generated);
    s_text_free(&body);
    s_text_free(&updated);
    return rc;
}

/*  Makes the table's guard triggers (s_unique_guards_text) what its indexes call for: VS_OK
    when they already are, S_NEED_WRITE when they are not and write is false.               */
static int s_unique_guards_sync(vs_capture_t *self, const s_table_t *table, bool write)
{
    int rc = VS_ESTORE;
    s_text_t expected[2] = {{0}, {0}};
    s_text_t sql = {0};
    sqlite3_stmt *stmt = NULL;
    int made = s_unique_guards_text(self, table, &expected[0], &expected[1]);
    if (made != VS_OK) {
        rc = made;
        goto cleanup;
    }
    if (s_prepare(self,
                  "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = "
                  "printf('_versync_%d_%s', ?1, ?2)",
                  &stmt, "cannot read the schema") != VS_OK) {
        goto cleanup;
    }
    bool current = true;
    const char *kinds[2] = {"uni", "unu"};
    for (size_t kind = 0; kind < 2; kind++) {
        sqlite3_reset(stmt);
        sqlite3_bind_int64(stmt, 1, table->id);
        sqlite3_bind_text(stmt, 2, kinds[kind], -1, SQLITE_STATIC);
        int step = sqlite3_step(stmt);
        if (step != SQLITE_ROW && step != SQLITE_DONE) {
            s_sqlite_error(self, "cannot read the schema");
            goto cleanup;
        }
        const char *have = step == SQLITE_ROW ? (const char *) sqlite3_column_text(stmt, 0) : NULL;
        const char *want = expected[kind].size ? expected[kind].data : NULL;
        current = current && (have && want ? strcmp(have, want) == 0 : have == want);
    }
    if (current) {
        rc = VS_OK;
        goto cleanup;
    }
    if (!write) {
        rc = S_NEED_WRITE;
        goto cleanup;
    }
    for (size_t kind = 0; kind < 2; kind++) {
        s_text_add(&sql, "DROP TRIGGER IF EXISTS \"_versync_%lld_%s\";", (long long) table->id,
                   kinds[kind]);
        if (expected[kind].size) {
            s_text_add(&sql, "%s;", expected[kind].data);
        }
    }
    if (sql.failed) {
        s_set_error(self, "out of memory");
        rc = VS_ENOMEM;
        goto cleanup;
    }
    rc = s_exec(self, sql.data, "cannot install the UNIQUE guard triggers");
cleanup:
    sqlite3_finalize(stmt);
    s_text_free(&expected[0]);
    s_text_free(&expected[1]);
    s_text_free(&sql);
    return rc;
}

/*  Finds how a join tells that the table's row exists: a rowid alias that no column shadows,
    for a table that has a rowid; NULL for a WITHOUT ROWID table, whose pk is NOT NULL.     */
static void s_table_prepare(vs_capture_t *self, s_table_t *table)
{
    static const char *const aliases[] = {"rowid", "oid", "_rowid_"};
    table->rowid = NULL;
    for (size_t alias = 0; alias < 3 && !table->rowid; alias++) {
        bool shadowed = false;
        for (size_t index = 0; index < table->column_count && !shadowed; index++) {
            shadowed = strcasecmp(table->columns[index], aliases[alias]) == 0;
        }
        if (shadowed) {
            continue;
        }
        s_text_t sql = {0};
        s_text_add(&sql, "SELECT %s FROM ", aliases[alias]);
        s_text_identifier(&sql, table->name);
        sqlite3_stmt *stmt = NULL;
        /* Fails (no such column) for a WITHOUT ROWID table. */
        if (!sql.failed && sqlite3_prepare_v2(self->db, sql.data, -1, &stmt, NULL) == SQLITE_OK) {
            table->rowid = aliases[alias];
        }
        sqlite3_finalize(stmt);
        s_text_free(&sql);
        return;
    }
}

static void s_readers_free(s_reader_t **readers, size_t *count)
{
    for (size_t index = 0; index < *count; index++) {
        sqlite3_finalize((*readers)[index].stmt);
        sqlite3_finalize((*readers)[index].filtered);
    }
    free(*readers);
    *readers = NULL;
    *count = 0;
}

/*  SQLite's limits on one SELECT: 64 tables in a join, 2000 result columns.                 */
#define S_READER_TABLES  32
#define S_READER_COLUMNS 1990

/*  Prepares the readers of the tables (sorted by id): a group of tables per statement, within
    SQLite's limits. A reader of several groups reads only its own tables' log rows.         */
static int s_readers_prepare(vs_capture_t *self, s_table_t *tables, size_t count,
                             s_reader_t **readers_p, size_t *reader_count_p)
{
    s_reader_t *readers = NULL;
    size_t reader_count = 0;
    int rc = VS_OK;
    for (size_t first = 0; first < count && rc == VS_OK;) {
        size_t columns = 1;
        size_t last = first;
        while (last < count && last - first < S_READER_TABLES &&
               (last == first || columns + 1 + tables[last].column_count <= S_READER_COLUMNS)) {
            columns += 1 + tables[last].column_count;
            last++;
        }
        if (columns > S_READER_COLUMNS) {
            s_set_error(self, "table '%s' has %zu columns: versync replicates at most %d",
                        tables[first].name, tables[first].column_count, S_READER_COLUMNS - 2);
            rc = VS_EINVAL;
            break;
        }
        s_text_t sql = {0};
        s_text_add(&sql, "SELECT l.version");
        int column = 1;
        for (size_t index = first; index < last; index++) {
            s_table_t *table = &tables[index];
            size_t alias = index - first;
            if (table->rowid) {
                s_text_add(&sql, ", t%zu.%s IS NOT NULL", alias, table->rowid);
            } else {
                s_text_add(&sql, ", t%zu.", alias);
                s_text_identifier(&sql, table->columns[table->pk[0]]);
                s_text_add(&sql, " IS NOT NULL");
            }
            table->reader = reader_count;
            table->found_column = column;
            column += 1 + (int) table->column_count;
            for (size_t col = 0; col < table->column_count; col++) {
                s_text_add(&sql, ", t%zu.", alias);
                s_text_identifier(&sql, table->columns[col]);
            }
        }
        s_text_add(&sql, " FROM _versync_log AS l");
        for (size_t index = first; index < last; index++) {
            s_table_t *table = &tables[index];
            size_t alias = index - first;
            s_text_add(&sql, " LEFT JOIN ");
            s_text_identifier(&sql, table->name);
            s_text_add(&sql, " AS t%zu ON ", alias);
            /* For another table's log row the key is NULL: no lookup, no match. */
            for (size_t key = 0; key < table->pk_count; key++) {
                s_text_add(&sql, "%st%zu.", key ? " AND " : "", alias);
                s_text_identifier(&sql, table->columns[table->pk[key]]);
                s_text_add(&sql, " IS CASE WHEN l.tbl = %lld THEN l.k%zu END",
                           (long long) table->id, key);
            }
        }
        s_text_add(&sql, " WHERE l.version > ?1 AND l.version <= ?2");
        if (first > 0 || last < count) {
            s_text_add(&sql, " AND l.tbl IN (");
            for (size_t index = first; index < last; index++) {
                s_text_add(&sql, "%s%lld", index > first ? ", " : "", (long long) tables[index].id);
            }
            s_text_add(&sql, ")");
        }
        /* The filter is a term of the log alone: SQLite tests it before the joins. */
        s_text_t filtered = {0};
        s_text_add(&filtered, "%s AND _versync_kept(l.version) ORDER BY l.version",
                   sql.data ? sql.data : "");
        s_text_add(&sql, " ORDER BY l.version");
        s_reader_t *grown = realloc(readers, (reader_count + 1) * sizeof *readers);
        if (sql.failed || filtered.failed || !grown) {
            s_set_error(self, "out of memory");
            rc = VS_ENOMEM;
        } else {
            readers = grown;
            memset(&readers[reader_count], 0, sizeof readers[reader_count]);
            rc = s_prepare(self, sql.data, &readers[reader_count].stmt,
                           "cannot prepare the change reader");
            if (rc == VS_OK) {
                rc = s_prepare(self, filtered.data, &readers[reader_count].filtered,
                               "cannot prepare the change reader");
                if (rc != VS_OK) {
                    sqlite3_finalize(readers[reader_count].stmt);
                }
            }
            if (rc == VS_OK) {
                readers[reader_count].active = readers[reader_count].stmt;
                reader_count++;
            }
        }
        s_text_free(&filtered);
        s_text_free(&sql);
        first = last;
    }
    if (rc != VS_OK) {
        s_readers_free(&readers, &reader_count);
    }
    *readers_p = readers;
    *reader_count_p = reader_count;
    return rc;
}

/*  Steps a table's reader to the log row of version: the older rows it passes are older
    changes of keys whose newest change comes later.                                        */
static int s_reader_seek(vs_capture_t *self, const s_table_t *table, uint64_t version,
                         sqlite3_stmt **row)
{
    s_reader_t *reader = &self->readers[table->reader];
    while (reader->at < version) {
        int step = sqlite3_step(reader->active);
        if (step != SQLITE_ROW) {
            reader->at = UINT64_MAX;
            if (step != SQLITE_DONE) {
                return s_sqlite_error(self, "cannot read a row");
            }
            break;
        }
        reader->at = (uint64_t) sqlite3_column_int64(reader->active, 0);
    }
    if (reader->at != version) {
        s_set_error(self, "the change log of '%s' changed during a read (version %llu)",
                    self->db_path, (unsigned long long) version);
        return VS_ESTORE;
    }
    *row = reader->active;
    return VS_OK;
}

static void s_readers_reset(vs_capture_t *self)
{
    for (size_t index = 0; index < self->reader_count; index++) {
        sqlite3_reset(self->readers[index].stmt);
        sqlite3_reset(self->readers[index].filtered);
        self->readers[index].at = 0;
    }
}

/*  Looks the table's id up in _versync_tables; *found false when it has none.               */
static int s_table_find_id(vs_capture_t *self, s_table_t *table, bool *found)
{
    sqlite3_stmt *stmt = NULL;
    if (s_prepare(self, "SELECT id FROM _versync_tables WHERE name = ?1", &stmt,
                  "cannot read _versync_tables") != VS_OK) {
        return VS_ESTORE;
    }
    sqlite3_bind_text(stmt, 1, table->name, -1, SQLITE_STATIC);
    int rc = VS_OK;
    int step = sqlite3_step(stmt);
    *found = step == SQLITE_ROW;
    if (step == SQLITE_ROW) {
        table->id = sqlite3_column_int64(stmt, 0);
    } else if (step != SQLITE_DONE) {
        rc = s_sqlite_error(self, "cannot read _versync_tables");
    }
    sqlite3_finalize(stmt);
    return rc;
}

/*  Gives the table a new id. The old row, if any, is retired (name NULL) and keeps its id, so
    an id is never reused and old log rows of an earlier table of that name are skipped.      */
static int s_table_new_id(vs_capture_t *self, s_table_t *table)
{
    int rc = VS_ESTORE;
    sqlite3_stmt *retire = NULL;
    sqlite3_stmt *insert = NULL;
    if (s_prepare(self, "UPDATE _versync_tables SET name = NULL WHERE name = ?1", &retire,
                  "cannot update _versync_tables") != VS_OK ||
        s_prepare(self, "INSERT INTO _versync_tables (name) VALUES (?1)", &insert,
                  "cannot update _versync_tables") != VS_OK) {
        goto cleanup;
    }
    sqlite3_bind_text(retire, 1, table->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 1, table->name, -1, SQLITE_STATIC);
    if (sqlite3_step(retire) != SQLITE_DONE || sqlite3_step(insert) != SQLITE_DONE) {
        s_sqlite_error(self, "cannot update _versync_tables");
        goto cleanup;
    }
    table->id = sqlite3_last_insert_rowid(self->db);
    rc = VS_OK;
cleanup:
    sqlite3_finalize(retire);
    sqlite3_finalize(insert);
    return rc;
}

typedef enum {
    S_TRIGGERS_CURRENT, /* the four triggers of this version                               */
    S_TRIGGERS_OLDER,   /* _ins, _upd logging both keys, _del: complete, an older form     */
    S_TRIGGERS_MISSING, /* anything else: the table's changes were not all captured        */
} s_triggers_t;

/*  Which of this table's triggers are present under their current names.                    */
static int s_table_triggers(vs_capture_t *self, const s_table_t *table, s_triggers_t *triggers)
{
    sqlite3_stmt *stmt = NULL;
    if (s_prepare(self,
                  "SELECT substr(name, -3), sql FROM sqlite_master WHERE type = 'trigger' AND "
                  "name IN (printf('_versync_%d_ins', ?1), printf('_versync_%d_upd', ?1), "
                  "printf('_versync_%d_key', ?1), printf('_versync_%d_del', ?1)) AND "
                  "tbl_name = ?2 COLLATE NOCASE",
                  &stmt, "cannot read the schema") != VS_OK) {
        return VS_ESTORE;
    }
    sqlite3_bind_int64(stmt, 1, table->id);
    sqlite3_bind_text(stmt, 2, table->name, -1, SQLITE_STATIC);
    int logging = 0; /* _ins, _upd and _del */
    bool update_both = false;
    bool key = false;
    int step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *kind = (const char *) sqlite3_column_text(stmt, 0);
        const char *sql = (const char *) sqlite3_column_text(stmt, 1);
        if (!kind) {
            continue;
        }
        if (strcmp(kind, "key") == 0) {
            key = true;
        } else {
            logging++;
            /* The older _upd also logged NEW's key itself. */
            update_both = update_both || (strcmp(kind, "upd") == 0 && sql && strstr(sql, "NEW."));
        }
    }
    int rc = VS_OK;
    if (step != SQLITE_DONE) {
        rc = s_sqlite_error(self, "cannot read the schema");
    } else if (logging == 3 && key) {
        *triggers = S_TRIGGERS_CURRENT;
    } else if (logging == 3 && update_both) {
        *triggers = S_TRIGGERS_OLDER;
    } else {
        *triggers = S_TRIGGERS_MISSING;
    }
    sqlite3_finalize(stmt);
    return rc;
}

/*  Drops every _versync_ trigger that does not belong to a table in the new list under its
    current id (renamed tables, tables dropped from config->tables, retired ids).            */
static int s_drop_stale_triggers(vs_capture_t *self, const s_table_t *tables, size_t count,
                                 bool write)
{
    int rc = VS_ESTORE;
    sqlite3_stmt *stmt = NULL;
    s_text_t drops = {0};
    if (s_prepare(self,
                  "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND name "
                  "LIKE '\\_versync\\_%' ESCAPE '\\'",
                  &stmt, "cannot read the schema") != VS_OK) {
        goto cleanup;
    }
    int step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *) sqlite3_column_text(stmt, 0);
        const char *table_name = (const char *) sqlite3_column_text(stmt, 1);
        if (!name || !table_name) {
            continue;
        }
        long long id = strtoll(name + strlen("_versync_"), NULL, 10);
        bool keep = false;
        for (size_t index = 0; index < count && !keep; index++) {
            keep = tables[index].id == id && strcasecmp(tables[index].name, table_name) == 0;
        }
        if (!keep) {
            s_text_add(&drops, "DROP TRIGGER IF EXISTS ");
            s_text_identifier(&drops, name);
            s_text_add(&drops, ";");
        }
    }
    if (step != SQLITE_DONE) {
        s_sqlite_error(self, "cannot read the schema");
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (drops.failed) {
        s_set_error(self, "out of memory");
        rc = VS_ENOMEM;
        goto cleanup;
    }
    if (drops.size && !write) {
        rc = S_NEED_WRITE;
    } else {
        rc = drops.size ? s_exec(self, drops.data, "cannot drop old triggers") : VS_OK;
    }
cleanup:
    sqlite3_finalize(stmt);
    s_text_free(&drops);
    return rc;
}

/*  Adds a described table to the list, or logs why it is skipped. Returns VS_OK, or the
    failure (a requested table that cannot be replicated fails the first load).               */
static int s_load_one(vs_capture_t *self, const char *name, const char *sql, bool requested,
                      bool first_load, s_table_t *tables, size_t *count)
{
    s_describe_t described = s_table_describe(self, name, sql, &tables[*count]);
    if (described == S_DESCRIBE_FAIL) {
        return VS_ESTORE;
    }
    if (described == S_DESCRIBE_SKIP) {
        if (requested && first_load) {
            char reason[sizeof self->error];
            snprintf(reason, sizeof reason, "%s", self->error);
            s_set_error(self, "cannot replicate table '%s' of database '%s': %s", name,
                        self->db_path, reason);
            return VS_EINVAL;
        }
        vs_log(&self->logger, VS_LOG_WARNING, "publisher: skipping table '%s' of '%s': %s", name,
               self->db_path, self->error);
        return VS_OK;
    }
    (*count)++;
    return VS_OK;
}

/*  Reloads the replicated tables in one write transaction: describes them, installs missing
    triggers (logging existing rows), drops stale triggers, notes the schema version, then
    prepares the change readers.                                                            */
static int s_schema_load_as(vs_capture_t *self, bool first_load, bool write)
{
    int rc = VS_ESTORE;
    sqlite3_stmt *stmt = NULL;
    s_table_t *tables = NULL;
    size_t count = 0;
    size_t capacity = 0;
    s_text_t sql = {0};
    if (s_exec(self, write ? "BEGIN IMMEDIATE" : "BEGIN", "cannot start a transaction") != VS_OK) {
        goto cleanup;
    }
    if (self->requested_count) {
        capacity = self->requested_count;
    } else {
        if (s_prepare(self, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", &stmt,
                      "cannot read the schema") != VS_OK) {
            goto cleanup;
        }
        if (sqlite3_step(stmt) != SQLITE_ROW) {
            s_sqlite_error(self, "cannot read the schema");
            goto cleanup;
        }
        capacity = (size_t) sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        stmt = NULL;
    }
    tables = calloc(capacity ? capacity : 1, sizeof *tables);
    if (!tables) {
        s_set_error(self, "out of memory");
        rc = VS_ENOMEM;
        goto cleanup;
    }
    /* Ordinary tables only: not views, virtual tables or their shadow tables. */
    if (s_prepare(self,
                  "SELECT m.name, m.sql, l.type FROM sqlite_master m LEFT JOIN "
                  "pragma_table_list l ON l.schema = 'main' AND l.name = m.name "
                  "WHERE m.type = 'table' AND (?1 IS NULL OR m.name = ?1 COLLATE NOCASE) "
                  "AND (?1 IS NOT NULL OR (m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                  "AND m.name NOT LIKE '\\_versync\\_%' ESCAPE '\\')) ORDER BY m.name",
                  &stmt, "cannot read the schema") != VS_OK) {
        goto cleanup;
    }
    size_t rounds = self->requested_count ? self->requested_count : 1;
    for (size_t round = 0; round < rounds; round++) {
        const char *wanted = self->requested_count ? self->requested[round] : NULL;
        sqlite3_reset(stmt);
        if (wanted) {
            sqlite3_bind_text(stmt, 1, wanted, -1, SQLITE_STATIC);
        } else {
            sqlite3_bind_null(stmt, 1);
        }
        bool found = false;
        int step;
        while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
            const char *name = (const char *) sqlite3_column_text(stmt, 0);
            const char *create_sql = (const char *) sqlite3_column_text(stmt, 1);
            const char *type = (const char *) sqlite3_column_text(stmt, 2);
            if (!name || count == capacity) {
                continue;
            }
            found = true;
            if (type && strcmp(type, "table") != 0) {
                if (wanted && first_load) {
                    s_set_error(self,
                                "cannot replicate table '%s' of database '%s': it is a %s table",
                                name, self->db_path, type);
                    rc = VS_EINVAL;
                    goto cleanup;
                }
                if (wanted || strcmp(type, "virtual") == 0) {
                    vs_log(&self->logger, VS_LOG_WARNING,
                           "publisher: skipping %s table '%s' of '%s'", type, name, self->db_path);
                }
                continue;
            }
            int loaded =
                s_load_one(self, name, create_sql, wanted != NULL, first_load, tables, &count);
            if (loaded != VS_OK) {
                rc = loaded;
                goto cleanup;
            }
        }
        if (step != SQLITE_DONE) {
            s_sqlite_error(self, "cannot read the schema");
            goto cleanup;
        }
        if (wanted && !found) {
            if (first_load) {
                s_set_error(self, "no table '%s' in database '%s'", wanted, self->db_path);
                rc = VS_ENOTFOUND;
                goto cleanup;
            }
            vs_log(&self->logger, VS_LOG_WARNING,
                   "publisher: table '%s' no longer exists in '%s'; not replicated", wanted,
                   self->db_path);
        }
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    /* Ids and triggers. */
    for (size_t index = 0; index < count; index++) {
        s_table_t *table = &tables[index];
        s_triggers_t triggers = S_TRIGGERS_MISSING;
        bool known = false;
        if (s_table_find_id(self, table, &known) != VS_OK) {
            goto cleanup;
        }
        if (known && s_table_triggers(self, table, &triggers) != VS_OK) {
            goto cleanup;
        }
        if (triggers != S_TRIGGERS_CURRENT && !write) {
            rc = S_NEED_WRITE;
            goto cleanup;
        }
        if (triggers == S_TRIGGERS_OLDER) {
            /* Every change was captured: replacing the triggers in this transaction keeps
               the id and logs nothing again. */
            if (s_table_install(self, table, false) != VS_OK) {
                goto cleanup;
            }
            vs_log(&self->logger, VS_LOG_NOTICE,
                   "publisher: upgraded the triggers of table '%s' of '%s' (id %lld)", table->name,
                   self->db_path, (long long) table->id);
        } else if (triggers == S_TRIGGERS_MISSING) {
            if (s_table_new_id(self, table) != VS_OK ||
                s_table_install(self, table, true) != VS_OK) {
                goto cleanup;
            }
            vs_log(&self->logger, VS_LOG_NOTICE,
                   "publisher: attached table '%s' of '%s' (id %lld): existing rows logged",
                   table->name, self->db_path, (long long) table->id);
        }
        int guarded = s_unique_guards_sync(self, table, write);
        if (guarded != VS_OK) {
            rc = guarded;
            goto cleanup;
        }
    }
    int dropped = s_drop_stale_triggers(self, tables, count, write);
    if (dropped != VS_OK) {
        rc = dropped == S_NEED_WRITE ? S_NEED_WRITE : VS_ESTORE;
        goto cleanup;
    }
    if (sqlite3_step(self->schema_version_stmt) != SQLITE_ROW) {
        s_sqlite_error(self, "cannot read the schema version");
        sqlite3_reset(self->schema_version_stmt);
        goto cleanup;
    }
    int64_t schema_version = sqlite3_column_int64(self->schema_version_stmt, 0);
    sqlite3_reset(self->schema_version_stmt);
    if (s_exec(self, "COMMIT", "cannot commit the triggers") != VS_OK) {
        goto cleanup;
    }
    /* Statements for the new list. */
    qsort(tables, count, sizeof *tables, s_table_compare);
    size_t key_columns = 0;
    for (size_t index = 0; index < count; index++) {
        s_table_prepare(self, &tables[index]);
        if (tables[index].pk_count > key_columns) {
            key_columns = tables[index].pk_count;
        }
    }
    s_text_add(&sql, "SELECT version, tbl%s", key_columns ? ", " : "");
    s_text_keys(&sql, key_columns);
    s_text_add(&sql, " FROM _versync_log WHERE version > ?1 AND version <= ?2 "
                     "ORDER BY version DESC");
    if (sql.failed) {
        s_set_error(self, "out of memory");
        rc = VS_ENOMEM;
        goto cleanup;
    }
    if (s_prepare(self, sql.data, &stmt, "cannot prepare the change reader") != VS_OK) {
        goto cleanup;
    }
    s_reader_t *readers = NULL;
    size_t reader_count = 0;
    int prepared = s_readers_prepare(self, tables, count, &readers, &reader_count);
    if (prepared != VS_OK) {
        rc = prepared;
        goto cleanup;
    }
    s_readers_free(&self->readers, &self->reader_count);
    self->readers = readers;
    self->reader_count = reader_count;
    sqlite3_finalize(self->read_changes);
    self->read_changes = stmt;
    stmt = NULL;
    s_tables_free(&self->tables, &self->table_count);
    self->tables = tables;
    self->table_count = count;
    tables = NULL;
    count = 0;
    self->key_columns = key_columns;
    self->schema_version = schema_version;
    self->generation++;
    rc = VS_OK;
cleanup:
    sqlite3_finalize(stmt);
    s_rollback(self);
    s_tables_free(&tables, &count);
    s_text_free(&sql);
    return rc;
}

/*  Loads the schema as a reader; only when triggers must be installed or dropped does it
    load again as a writer, so that a schema change elsewhere does not wait for the write
    lock.                                                                                      */
static int s_schema_load(vs_capture_t *self, bool first_load)
{
    int rc = s_schema_load_as(self, first_load, false);
    if (rc == S_NEED_WRITE) {
        rc = s_schema_load_as(self, first_load, true);
    }
    return rc == S_NEED_WRITE ? VS_ESTORE : rc;
}

/* ---------------------------------------------------------------------------------------------
    Opening.                                                                                   */

static int s_journal_mode(vs_capture_t *self, const char *sql, char *mode, size_t mode_size)
{
    sqlite3_stmt *stmt = NULL;
    if (s_prepare(self, sql, &stmt, "cannot read the journal mode") != VS_OK) {
        return VS_ESTORE;
    }
    int rc = VS_OK;
    if (sqlite3_step(stmt) == SQLITE_ROW) {
        const char *text = (const char *) sqlite3_column_text(stmt, 0);
        snprintf(mode, mode_size, "%s", text ? text : "");
    } else {
        rc = s_sqlite_error(self, "cannot set the journal mode");
    }
    sqlite3_finalize(stmt);
    return rc;
}

/*  Logs made before 2026-12-02 declared `tbl INTEGER NOT NULL`. A constraint that can abort a
    trigger's insert makes SQLite open a statement journal for every UPDATE and DELETE of a
    replicated table, copying each page the statement touches first: 0.57 us of a 3.4 us
    UPDATE on the bench machine. The triggers always log a table id, so the constraint guarded
    nothing. Such a log is copied, rows and versions unchanged, into one without it, inside
    the caller's write transaction; with legacy_alter_table the copy takes the log's name
    although the triggers name the log (SQLite would otherwise check them, and find the old
    table gone).                                                                               */
static int s_log_upgrade(vs_capture_t *self)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT \"notnull\" FROM pragma_table_info('_versync_log') "
                           "WHERE name = 'tbl'",
                           -1, &stmt, NULL) != SQLITE_OK) {
        return s_sqlite_error(self, "cannot read the log's columns");
    }
    int step = sqlite3_step(stmt);
    bool not_null = step == SQLITE_ROW && sqlite3_column_int(stmt, 0) != 0;
    sqlite3_finalize(stmt);
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        return s_sqlite_error(self, "cannot read the log's columns");
    }
    if (!not_null) {
        return VS_OK;
    }
    int rc = s_exec(self,
                    "PRAGMA legacy_alter_table = ON;"
                    "CREATE TABLE _versync_log_upgrade " S_LOG_COLUMNS ";"
                    "INSERT INTO _versync_log_upgrade SELECT version, tbl, k0, k1, k2, k3, k4, "
                    "k5, k6, k7 FROM _versync_log;"
                    "DROP TABLE _versync_log;"
                    "ALTER TABLE _versync_log_upgrade RENAME TO _versync_log;",
                    "cannot upgrade _versync_log");
    sqlite3_exec(self->db, "PRAGMA legacy_alter_table = OFF", NULL, NULL, NULL);
    if (rc == VS_OK) {
        vs_log(&self->logger, VS_LOG_NOTICE,
               "publisher: upgraded _versync_log of '%s' (tbl no longer NOT NULL)",
               self->db_path);
    }
    return rc;
}

static int s_setup(vs_capture_t *self)
{
    char mode[32];
    if (s_journal_mode(self, "PRAGMA journal_mode", mode, sizeof mode) != VS_OK) {
        return VS_ESTORE;
    }
    if (strcasecmp(mode, "wal") != 0) {
        char was[32];
        snprintf(was, sizeof was, "%s", mode);
        if (s_journal_mode(self, "PRAGMA journal_mode = WAL", mode, sizeof mode) != VS_OK) {
            return VS_ESTORE;
        }
        if (strcasecmp(mode, "wal") != 0) {
            s_set_error(self, "cannot switch database '%s' to WAL (journal mode stays '%s')",
                        self->db_path, mode);
            return VS_ESTORE;
        }
        vs_log(&self->logger, VS_LOG_NOTICE,
               "publisher: database '%s' was in journal mode '%s'; switched it to WAL",
               self->db_path, was);
    }
    /* Our own commits (trims) may be lost on power failure: they are then simply resent. */
    if (s_exec(self, "PRAGMA synchronous = NORMAL", "cannot set synchronous") != VS_OK) {
        return VS_ESTORE;
    }
    uint8_t id[S_ID_BYTES];
    char id_hex[2 * S_ID_BYTES + 1];
    randombytes_buf(id, sizeof id);
    sodium_bin2hex(id_hex, sizeof id_hex, id, sizeof id);
    char sql[2048];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE;"
             "CREATE TABLE IF NOT EXISTS _versync_meta (key TEXT PRIMARY KEY, value);"
             "CREATE TABLE IF NOT EXISTS _versync_tables (id INTEGER PRIMARY KEY, "
             "name TEXT UNIQUE);"
             "CREATE TABLE IF NOT EXISTS _versync_log " S_LOG_COLUMNS ";"
             "INSERT OR IGNORE INTO _versync_meta (key, value) VALUES ('publisher_id', '%s');"
             "INSERT OR IGNORE INTO _versync_meta (key, value) VALUES ('acked_version', 0);"
             /* Versions must stay above what the broker acknowledged, even if someone
                emptied the log: a placeholder row (table 0 is never used) keeps max + 1. */
             "INSERT INTO _versync_log (version, tbl) SELECT a, 0 FROM (SELECT "
             "CAST(value AS INTEGER) AS a FROM _versync_meta WHERE key = 'acked_version') "
             "WHERE a > coalesce((SELECT max(version) FROM _versync_log), 0);",
             id_hex);
    if (s_exec(self, sql, "cannot set up the versync tables") != VS_OK ||
        s_log_upgrade(self) != VS_OK ||
        s_exec(self, "COMMIT", "cannot set up the versync tables") != VS_OK) {
        s_rollback(self);
        return VS_ESTORE;
    }
    sqlite3_stmt *stmt = NULL;
    if (s_prepare(self,
                  "SELECT (SELECT value FROM _versync_meta WHERE key = 'publisher_id'), "
                  "(SELECT value FROM _versync_meta WHERE key = 'acked_version')",
                  &stmt, "cannot read _versync_meta") != VS_OK) {
        return VS_ESTORE;
    }
    int rc = VS_OK;
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        rc = s_sqlite_error(self, "cannot read _versync_meta");
        goto cleanup;
    }
    const char *stored_id = (const char *) sqlite3_column_text(stmt, 0);
    size_t id_length = stored_id ? strlen(stored_id) : 0;
    bool id_valid = id_length > 0 && id_length < sizeof self->publisher_id;
    for (size_t index = 0; id_valid && index < id_length; index++) {
        id_valid = stored_id[index] >= 0x21 && stored_id[index] <= 0x7e;
    }
    int64_t acked = sqlite3_column_int64(stmt, 1);
    if (!id_valid || sqlite3_column_type(stmt, 1) != SQLITE_INTEGER || acked < 0) {
        s_set_error(self,
                    "database '%s' has a damaged _versync_meta (publisher_id or "
                    "acked_version)",
                    self->db_path);
        rc = VS_ESTORE;
        goto cleanup;
    }
    memcpy(self->publisher_id, stored_id, id_length + 1);
    self->acked_version = (uint64_t) acked;
cleanup:
    sqlite3_finalize(stmt);
    return rc;
}

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int s_probe(vs_capture_t *self)
{
    char mode[32];
    return s_journal_mode(self, "PRAGMA journal_mode", mode, sizeof mode);
}

static int s_first_schema_load(vs_capture_t *self)
{
    return s_schema_load(self, true);
}

/*  Runs one attach step, waiting out applications that keep the database locked. Switching to
    WAL needs the exclusive lock, and a writer committing back to back in rollback-journal mode
    can starve SQLite's busy handler for longer than its timeout: a publisher started next to
    a busy application must wait, not fail. Other errors fail at once.                        */
static int s_patiently(vs_capture_t *self, int (*step)(vs_capture_t *))
{
    int64_t deadline = s_now_ms() + S_ATTACH_PATIENCE_MS;
    bool told = false;
    for (;;) {
        self->busy = false;
        int rc = step(self);
        if (rc == VS_OK || !self->busy || s_now_ms() >= deadline) {
            return rc;
        }
        if (!told) {
            vs_log(&self->logger, VS_LOG_NOTICE,
                   "publisher: database '%s' is locked by another connection; waiting up to "
                   "%d s to attach",
                   self->db_path, S_ATTACH_PATIENCE_MS / 1000);
            told = true;
        }
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/*  Opens the wal-index (the -shm file SQLite keeps next to a WAL database, present once our
    connection has read in WAL mode) for vs_capture_changed's hint. Without it every check
    asks SQLite.                                                                               */
static void s_wal_index_open(vs_capture_t *self)
{
    const char *db_file = sqlite3_db_filename(self->db, "main"); /* symbolic links resolved */
    if (!db_file || !*db_file) {
        return;
    }
    size_t length = strlen(db_file);
    char *path = malloc(length + sizeof "-shm");
    if (path) {
        memcpy(path, db_file, length);
        memcpy(path + length, "-shm", sizeof "-shm");
        self->wal_index_fd = open(path, O_RDONLY | O_CLOEXEC);
        free(path);
    }
}

int vs_capture_open(vs_capture_t **self_p, const vs_capture_config_t *config, char *error,
                    size_t error_size)
{
    if (!self_p || !config || !config->db_path) {
        if (error && error_size) {
            snprintf(error, error_size, "no database path");
        }
        return VS_EINVAL;
    }
    *self_p = NULL;
    int rc = VS_ENOMEM;
    vs_capture_t *self = calloc(1, sizeof *self);
    if (!self) {
        goto failed;
    }
    snprintf(self->error, sizeof self->error, "out of memory");
    self->wal_index_fd = -1;
    self->db_path = strdup(config->db_path);
    self->logger = config->logger;
    self->target =
        config->changeset_target ? config->changeset_target : VS_DEFAULT_CHANGESET_TARGET;
    self->read_span = config->read_span ? config->read_span : S_READ_SPAN;
    self->writer = vs_changeset_writer_new();
    if (!self->db_path || !self->writer) {
        goto failed;
    }
    if (config->table_count) {
        self->requested = calloc(config->table_count, sizeof *self->requested);
        if (!self->requested) {
            goto failed;
        }
        for (size_t index = 0; index < config->table_count; index++) {
            if (!config->tables[index]) {
                s_set_error(self, "empty table name");
                rc = VS_EINVAL;
                goto failed;
            }
            self->requested[index] = strdup(config->tables[index]);
            if (!self->requested[index]) {
                goto failed;
            }
            self->requested_count++;
        }
    }
    if (sodium_init() < 0) {
        s_set_error(self, "cannot initialise libsodium");
        rc = VS_EINVAL;
        goto failed;
    }
    int opened = sqlite3_open_v2(self->db_path, &self->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (opened != SQLITE_OK) {
        s_set_error(self, "cannot open database '%s': %s", self->db_path,
                    self->db ? sqlite3_errmsg(self->db) : sqlite3_errstr(opened));
        rc = (opened & 0xff) == SQLITE_CANTOPEN ? VS_ENOTFOUND : VS_ESTORE;
        goto failed;
    }
    sqlite3_busy_timeout(self->db, S_BUSY_TIMEOUT_MS);
    if (sqlite3_create_function_v2(self->db, "_versync_kept", 1,
                                   SQLITE_UTF8 | SQLITE_DIRECTONLY, self, s_kept_function, NULL,
                                   NULL, NULL) != SQLITE_OK) {
        s_set_error(self, "cannot register a function: %s", sqlite3_errmsg(self->db));
        rc = VS_ESTORE;
        goto failed;
    }
    /* The first read tells a file that is not a database. */
    if (s_patiently(self, s_probe) != VS_OK) {
        s_set_error(self, "cannot open database '%s': %s", self->db_path, sqlite3_errmsg(self->db));
        rc = VS_ESTORE;
        goto failed;
    }
    rc = VS_ESTORE;
    if (s_patiently(self, s_setup) != VS_OK ||
        s_prepare(self, "PRAGMA schema_version", &self->schema_version_stmt,
                  "cannot prepare a statement") != VS_OK ||
        s_prepare(self, "PRAGMA data_version", &self->data_version_stmt,
                  "cannot prepare a statement") != VS_OK ||
        s_prepare(self, "BEGIN", &self->begin_stmt, "cannot prepare a statement") != VS_OK ||
        s_prepare(self, "ROLLBACK", &self->rollback_stmt, "cannot prepare a statement") != VS_OK ||
        s_prepare(self, "SELECT max(version) FROM _versync_log", &self->newest_stmt,
                  "cannot prepare a statement") != VS_OK ||
        s_prepare(self,
                  "DELETE FROM _versync_log WHERE version <= ?1 AND version < "
                  "(SELECT max(version) FROM _versync_log)",
                  &self->trim_stmt, "cannot prepare a statement") != VS_OK ||
        s_prepare(self,
                  "UPDATE _versync_meta SET value = ?1 WHERE key = 'acked_version' AND "
                  "value < ?1",
                  &self->store_acked_stmt, "cannot prepare a statement") != VS_OK) {
        goto failed;
    }
    rc = s_patiently(self, s_first_schema_load);
    if (rc != VS_OK) {
        goto failed;
    }
    s_wal_index_open(self);
    *self_p = self;
    return VS_OK;
failed:
    if (error && error_size) {
        snprintf(error, error_size, "%s", self ? self->error : "out of memory");
    }
    vs_capture_destroy(&self);
    return rc;
}

void vs_capture_destroy(vs_capture_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    vs_capture_t *self = *self_p;
    if (self->db) {
        s_rollback(self);
    }
    s_tables_free(&self->tables, &self->table_count);
    sqlite3_finalize(self->read_changes);
    s_readers_free(&self->readers, &self->reader_count);
    free(self->changes.items);
    free(self->changes.keys);
    free(self->changes.slots);
    free(self->changes.arena);
    free(self->kept);
    sqlite3_finalize(self->newest_stmt);
    sqlite3_finalize(self->schema_version_stmt);
    sqlite3_finalize(self->data_version_stmt);
    sqlite3_finalize(self->begin_stmt);
    sqlite3_finalize(self->rollback_stmt);
    sqlite3_finalize(self->trim_stmt);
    sqlite3_finalize(self->store_acked_stmt);
    if (self->db) {
        sqlite3_close(self->db);
    }
    for (size_t index = 0; index < self->requested_count; index++) {
        free(self->requested[index]);
    }
    free(self->requested);
    vs_changeset_writer_destroy(&self->writer);
    if (self->wal_index_fd >= 0) {
        close(self->wal_index_fd);
    }
    free(self->db_path);
    free(self);
    *self_p = NULL;
}

const char *vs_capture_error(const vs_capture_t *self)
{
    return self->error;
}

const char *vs_capture_publisher_id(const vs_capture_t *self)
{
    return self->publisher_id;
}

uint64_t vs_capture_acked_version(const vs_capture_t *self)
{
    return self->acked_version;
}

size_t vs_capture_table_count(const vs_capture_t *self)
{
    return self->table_count;
}

bool vs_capture_busy(const vs_capture_t *self)
{
    return self->busy;
}

/*  Reads the first copy of the wal-index header (https://www.sqlite.org/walformat.html): a
    writer changes it on every commit (iChange, mxFrame, checksums). Only a hint: false when
    it cannot be read.                                                                         */
static bool s_wal_index_header(vs_capture_t *self, uint8_t *header)
{
    return self->wal_index_fd >= 0 && pread(self->wal_index_fd, header, sizeof self->wal_index_seen,
                                            0) == (ssize_t) sizeof self->wal_index_seen;
}

bool vs_capture_changed(vs_capture_t *self, bool exact)
{
    uint8_t header[sizeof self->wal_index_seen];
    bool hinted = s_wal_index_header(self, header);
    if (!exact && hinted && self->wal_index_known && self->data_version_known &&
        memcmp(header, self->wal_index_seen, sizeof header) == 0) {
        return false; /* no commit since the last data_version: one pread instead of a read */
    }
    /* The header is taken before data_version: a commit between the two shows again. */
    self->wal_index_known = hinted;
    if (hinted) {
        memcpy(self->wal_index_seen, header, sizeof header);
    }
    bool changed = true;
    if (sqlite3_step(self->data_version_stmt) == SQLITE_ROW) {
        int64_t version = sqlite3_column_int64(self->data_version_stmt, 0);
        changed = !self->data_version_known || version != self->data_version;
        self->data_version = version;
        self->data_version_known = true;
    }
    sqlite3_reset(self->data_version_stmt);
    return changed;
}

bool vs_capture_backlog_full(vs_capture_t *self, uint64_t after)
{
    if (!self->bytes_per_version) {
        return true;
    }
    bool full = true;
    if (sqlite3_step(self->newest_stmt) == SQLITE_ROW) {
        uint64_t newest = (uint64_t) sqlite3_column_int64(self->newest_stmt, 0);
        uint64_t versions = newest > after ? newest - after : 0;
        full = versions >= self->target / self->bytes_per_version;
    }
    sqlite3_reset(self->newest_stmt);
    return full;
}

/* ---------------------------------------------------------------------------------------------
    Reading.                                                                                   */

static void s_value_from_column(sqlite3_stmt *stmt, int column, vs_value_t *value)
{
    switch (sqlite3_column_type(stmt, column)) {
    case SQLITE_INTEGER:
        value->type = VS_INTEGER;
        value->as.integer = sqlite3_column_int64(stmt, column);
        break;
    case SQLITE_FLOAT:
        value->type = VS_REAL;
        value->as.real = sqlite3_column_double(stmt, column);
        break;
    case SQLITE_TEXT: {
        const char *text = (const char *) sqlite3_column_text(stmt, column);
        value->type = VS_TEXT;
        value->as.bytes.size = (size_t) sqlite3_column_bytes(stmt, column);
        value->as.bytes.data = text ? text : "";
        break;
    }
    case SQLITE_BLOB: {
        const char *blob = sqlite3_column_blob(stmt, column);
        value->type = VS_BLOB;
        value->as.bytes.size = (size_t) sqlite3_column_bytes(stmt, column);
        value->as.bytes.data = blob ? blob : "";
        break;
    }
    default: value->type = VS_NULL; break;
    }
}

/*  Bytes a value may take in msgpack, a little generously.                                    */
static size_t s_value_estimate(const vs_value_t *value)
{
    return (value->type == VS_TEXT || value->type == VS_BLOB) ? value->as.bytes.size + 5 : 9;
}

/*  Starts a read transaction on a snapshot whose schema matches the loaded tables.            */
static int s_begin_read(vs_capture_t *self)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        int begun = sqlite3_step(self->begin_stmt);
        sqlite3_reset(self->begin_stmt);
        if (begun != SQLITE_DONE) {
            return s_sqlite_error(self, "cannot start a read");
        }
        if (sqlite3_step(self->schema_version_stmt) != SQLITE_ROW) {
            sqlite3_reset(self->schema_version_stmt);
            s_sqlite_error(self, "cannot read the schema version");
            s_rollback(self);
            return VS_ESTORE;
        }
        int64_t schema_version = sqlite3_column_int64(self->schema_version_stmt, 0);
        sqlite3_reset(self->schema_version_stmt);
        if (schema_version == self->schema_version) {
            return VS_OK;
        }
        s_rollback(self);
        int rc = s_schema_load(self, false);
        if (rc != VS_OK) {
            return rc;
        }
    }
    s_set_error(self, "the schema of database '%s' keeps changing", self->db_path);
    self->busy = true;
    return VS_ESTORE;
}

/* ---------------------------------------------------------------------------------------------
    The changed keys of one read.                                                              */

static uint64_t s_hash_mix(uint64_t hash, uint64_t value)
{
    hash ^= value + 0x9e3779b97f4a7c15ull + (hash << 6) + (hash >> 2);
    hash *= 0xff51afd7ed558ccdull;
    return hash ^ (hash >> 33);
}

static uint64_t s_hash_bytes(uint64_t hash, const char *data, size_t size)
{
    uint64_t fnv = 0xcbf29ce484222325ull;
    for (size_t index = 0; index < size; index++) {
        fnv = (fnv ^ (uint8_t) data[index]) * 0x100000001b3ull;
    }
    return s_hash_mix(hash, fnv ^ size);
}

static bool s_key_equal(const s_changes_t *changes, const s_key_t *left, const s_key_t *right)
{
    if (left->type != right->type) {
        return false;
    }
    switch (left->type) {
    case SQLITE_INTEGER: return left->as.integer == right->as.integer;
    case SQLITE_FLOAT: return memcmp(&left->as.real, &right->as.real, sizeof left->as.real) == 0;
    case SQLITE_TEXT:
    case SQLITE_BLOB:
        return left->as.bytes.size == right->as.bytes.size &&
               memcmp(changes->arena + left->as.bytes.offset,
                      changes->arena + right->as.bytes.offset, left->as.bytes.size) == 0;
    default: return true;
    }
}

/*  Forgets the keys of the last read; keeps the memory.                                      */
static void s_changes_clear(s_changes_t *changes)
{
    for (size_t index = 0; index < changes->count; index++) {
        changes->slots[changes->items[index].slot] = 0;
    }
    changes->count = 0;
    changes->arena_size = 0;
}

/*  Makes room for one more item (and its slot in a table at most half full).                */
static bool s_changes_reserve(s_changes_t *changes)
{
    if (changes->count == changes->capacity) {
        size_t capacity = changes->capacity ? 2 * changes->capacity : 64;
        s_change_t *items = realloc(changes->items, capacity * sizeof *items);
        if (!items) {
            return false;
        }
        changes->items = items;
        s_key_t *keys = realloc(changes->keys, capacity * changes->stride * sizeof *keys);
        if (!keys) {
            return false;
        }
        changes->keys = keys;
        changes->capacity = capacity;
    }
    if (2 * (changes->count + 1) > changes->slot_capacity) {
        size_t slot_capacity = changes->slot_capacity ? 2 * changes->slot_capacity : 128;
        uint32_t *slots = calloc(slot_capacity, sizeof *slots);
        if (!slots) {
            return false;
        }
        for (size_t index = 0; index < changes->count; index++) {
            size_t slot = changes->items[index].hash & (slot_capacity - 1);
            while (slots[slot]) {
                slot = (slot + 1) & (slot_capacity - 1);
            }
            slots[slot] = (uint32_t) index + 1;
            changes->items[index].slot = slot;
        }
        free(changes->slots);
        changes->slots = slots;
        changes->slot_capacity = slot_capacity;
    }
    return true;
}

/*  Copies text or blob bytes into the arena; false when out of memory.                       */
static bool s_changes_store(s_changes_t *changes, const void *data, size_t size, size_t *offset)
{
    if (changes->arena_size + size > changes->arena_capacity) {
        size_t capacity = changes->arena_capacity ? changes->arena_capacity : 4096;
        while (capacity < changes->arena_size + size) {
            capacity *= 2;
        }
        char *arena = realloc(changes->arena, capacity);
        if (!arena) {
            return false;
        }
        changes->arena = arena;
        changes->arena_capacity = capacity;
    }
    if (size) {
        memcpy(changes->arena + changes->arena_size, data, size);
    }
    *offset = changes->arena_size;
    changes->arena_size += size;
    return true;
}

/*  _versync_kept(version): 1 when the current read keeps that version (the newest change of
    its key in the read), else 0. Registered on our connection only, and SQLITE_DIRECTONLY:
    the database's own triggers and views cannot call it.                                   */
static void s_kept_function(sqlite3_context *context, int argc, sqlite3_value **argv)
{
    const vs_capture_t *self = sqlite3_user_data(context);
    sqlite3_int64 version = argc == 1 ? sqlite3_value_int64(argv[0]) : 0;
    int kept = 0;
    if (self->kept && version > 0 && (uint64_t) version > self->kept_after &&
        (uint64_t) version - self->kept_after <= self->kept_span) {
        uint64_t bit = (uint64_t) version - self->kept_after - 1;
        kept = (self->kept[bit / 8] >> (bit % 8)) & 1;
    }
    sqlite3_result_int(context, kept);
}

/*  Marks the collected versions of a read of (after, bound] in the bitmap. False when the
    filter does not pay or the bitmap cannot cover the span: the read goes unfiltered.       */
static bool s_kept_mark(vs_capture_t *self, uint64_t after, uint64_t bound)
{
    size_t count = self->changes.count;
    if (self->superseded * S_FILTER_SHARE < count + self->superseded) {
        return false;
    }
    uint64_t span = bound - after;
    if (span > S_FILTER_SPAN_MAX) {
        return false;
    }
    if (span > self->kept_span) {
        uint8_t *grown = realloc(self->kept, (size_t) (span / 8 + 1));
        if (!grown) {
            return false;
        }
        self->kept = grown;
        self->kept_span = span;
    }
    memset(self->kept, 0, (size_t) (self->kept_span / 8 + 1));
    self->kept_after = after;
    for (size_t item = 0; item < count; item++) {
        uint64_t bit = self->changes.items[item].version - after - 1;
        self->kept[bit / 8] |= (uint8_t) (1u << (bit % 8));
    }
    return true;
}

/*  Reads the log's rows after `after` up to bound, newest first, and keeps each key of a
    replicated table once, with its newest version; self->superseded counts the rows it drops
    (older changes of a kept key, rows of tables no longer replicated). *highest is the
    newest version read, of any table (0: none).                                              */
static int s_collect(vs_capture_t *self, uint64_t after, uint64_t bound, uint64_t *highest)
{
    s_changes_t *changes = &self->changes;
    s_changes_clear(changes);
    size_t stride = self->key_columns ? self->key_columns : 1;
    if (stride != changes->stride) {
        free(changes->keys);
        changes->keys =
            changes->capacity ? malloc(changes->capacity * stride * sizeof(s_key_t)) : NULL;
        changes->stride = stride;
        if (changes->capacity && !changes->keys) {
            changes->capacity = 0;
        }
    }
    *highest = 0;
    self->superseded = 0;
    sqlite3_stmt *read = self->read_changes;
    sqlite3_bind_int64(read, 1, (int64_t) after);
    sqlite3_bind_int64(read, 2, (int64_t) bound);
    int rc = VS_OK;
    int step;
    while ((step = sqlite3_step(read)) == SQLITE_ROW) {
        uint64_t version = (uint64_t) sqlite3_column_int64(read, 0);
        if (!*highest) {
            *highest = version;
        }
        s_table_t *table = s_table_by_id(self, sqlite3_column_int64(read, 1));
        if (!table) {
            self->superseded++;
            continue; /* a table no longer replicated: its versions travel empty */
        }
        if (!s_changes_reserve(changes)) {
            s_set_error(self, "out of memory");
            rc = VS_ENOMEM;
            goto done;
        }
        s_key_t *key = &changes->keys[changes->count * stride];
        uint64_t hash = s_hash_mix(0, (uint64_t) table->id);
        for (size_t index = 0; index < table->pk_count; index++) {
            int column = (int) index + 2;
            key[index].type = sqlite3_column_type(read, column);
            switch (key[index].type) {
            case SQLITE_INTEGER:
                key[index].as.integer = sqlite3_column_int64(read, column);
                hash = s_hash_mix(hash, (uint64_t) key[index].as.integer);
                break;
            case SQLITE_FLOAT: {
                key[index].as.real = sqlite3_column_double(read, column);
                uint64_t bits;
                memcpy(&bits, &key[index].as.real, sizeof bits);
                hash = s_hash_mix(hash, bits ^ 0x5555);
                break;
            }
            case SQLITE_TEXT:
            case SQLITE_BLOB: {
                const void *data = key[index].type == SQLITE_TEXT
                                       ? (const void *) sqlite3_column_text(read, column)
                                       : sqlite3_column_blob(read, column);
                size_t size = (size_t) sqlite3_column_bytes(read, column);
                if (!s_changes_store(changes, data, size, &key[index].as.bytes.offset)) {
                    s_set_error(self, "out of memory");
                    rc = VS_ENOMEM;
                    goto done;
                }
                key[index].as.bytes.size = size;
                hash = s_hash_bytes(hash + (uint64_t) key[index].type,
                                    changes->arena + key[index].as.bytes.offset, size);
                break;
            }
            default:
                key[index].type = SQLITE_NULL;
                hash = s_hash_mix(hash, 0x6e756c6c);
                break;
            }
        }
        size_t mask = changes->slot_capacity - 1;
        size_t slot = hash & mask;
        bool seen = false;
        while (changes->slots[slot] && !seen) {
            const s_change_t *other = &changes->items[changes->slots[slot] - 1];
            if (other->hash == hash && other->table == table) {
                const s_key_t *other_key = &changes->keys[(changes->slots[slot] - 1) * stride];
                seen = true;
                for (size_t index = 0; index < table->pk_count && seen; index++) {
                    seen = s_key_equal(changes, &key[index], &other_key[index]);
                }
            }
            if (!seen) {
                slot = (slot + 1) & mask;
            }
        }
        if (seen) {
            self->superseded++;
            continue; /* an older change of a key already read: its newest version counts */
        }
        s_change_t *change = &changes->items[changes->count];
        change->version = version;
        change->table = table;
        change->hash = hash;
        change->slot = slot;
        changes->slots[slot] = (uint32_t) ++changes->count;
    }
    if (step != SQLITE_DONE) {
        rc = s_sqlite_error(self, "cannot read _versync_log");
    }
done:
    sqlite3_reset(read);
    return rc;
}

/*  The key of a collected change as values (bytes borrowed from the arena).                  */
static void s_change_key(const vs_capture_t *self, size_t item, vs_value_t *values)
{
    const s_changes_t *changes = &self->changes;
    const s_change_t *change = &changes->items[item];
    const s_key_t *key = &changes->keys[item * changes->stride];
    for (size_t index = 0; index < change->table->pk_count; index++) {
        switch (key[index].type) {
        case SQLITE_INTEGER:
            values[index].type = VS_INTEGER;
            values[index].as.integer = key[index].as.integer;
            break;
        case SQLITE_FLOAT:
            values[index].type = VS_REAL;
            values[index].as.real = key[index].as.real;
            break;
        case SQLITE_TEXT:
        case SQLITE_BLOB:
            values[index].type = key[index].type == SQLITE_TEXT ? VS_TEXT : VS_BLOB;
            values[index].as.bytes.size = key[index].as.bytes.size;
            values[index].as.bytes.data =
                key[index].as.bytes.size ? changes->arena + key[index].as.bytes.offset : "";
            break;
        default: values[index].type = VS_NULL; break;
        }
    }
}

/*  Finishes the set being written into sets[*count].                                         */
static int s_finish_set(vs_capture_t *self, uint64_t first, uint64_t last, uint32_t flags,
                        vs_capture_set_t *sets, size_t *count)
{
    vs_capture_set_t *set = &sets[*count];
    memset(set, 0, sizeof *set);
    set->change_count = vs_changeset_writer_change_count(self->writer);
    int rc = vs_changeset_writer_finish(self->writer, first, last, flags, &set->data, &set->size);
    self->generation++;
    self->set_table_count = 0;
    if (rc == VS_EMSGSIZE) {
        s_set_error(self,
                    "a change of database '%s' (versions %llu..%llu) does not fit in a change "
                    "set of %u bytes",
                    self->db_path, (unsigned long long) first, (unsigned long long) last,
                    VS_MAX_CHANGESET);
        return rc;
    }
    if (rc != VS_OK) {
        s_set_error(self, "cannot encode a change set: %s", vs_strerror(rc));
        return rc;
    }
    set->first_version = first;
    set->last_version = last;
    set->flags = flags;
    (*count)++;
    return VS_OK;
}

int vs_capture_read(vs_capture_t *self, uint64_t after, size_t max_sets, size_t max_bytes,
                    vs_capture_set_t *sets, size_t *set_count, bool *more)
{
    *set_count = 0;
    *more = false;
    self->busy = false;
    if (max_sets == 0) {
        return VS_OK;
    }
    if (after > INT64_MAX) {
        s_set_error(self, "version %llu is out of range", (unsigned long long) after);
        return VS_EINVAL;
    }
    int rc = s_begin_read(self);
    if (rc != VS_OK) {
        return rc;
    }
    /* The newest version tells whether there is anything to read, and how far. */
    if (sqlite3_step(self->newest_stmt) != SQLITE_ROW) {
        rc = s_sqlite_error(self, "cannot read _versync_log");
        sqlite3_reset(self->newest_stmt);
        s_rollback(self);
        return rc;
    }
    uint64_t newest = (uint64_t) sqlite3_column_int64(self->newest_stmt, 0);
    sqlite3_reset(self->newest_stmt);
    if (newest < after && after > self->acked_version) {
        s_set_error(self,
                    "the change log of database '%s' went back (newest version %llu, %llu "
                    "already sent): was _versync_log emptied? Restart the publisher",
                    self->db_path, (unsigned long long) newest, (unsigned long long) after);
        s_rollback(self);
        return VS_ESTORE;
    }
    if (newest <= after) {
        s_rollback(self);
        return VS_OK;
    }
    /* Collecting looks at every version of the span: a window with room for one set must not
       scan a backlog of S_READ_SPAN versions each time. */
    uint64_t span = self->read_span;
    if (self->bytes_per_version) {
        size_t wanted = max_sets > SIZE_MAX / self->target ? SIZE_MAX : max_sets * self->target;
        wanted = wanted < max_bytes ? wanted : max_bytes;
        uint64_t needed = (uint64_t) (wanted / self->bytes_per_version) * 5 / 4 + S_SPAN_FLOOR;
        span = needed < span ? needed : span;
    }
    uint64_t bound = INT64_MAX - after < span ? INT64_MAX : after + span;
    bool limited = newest > bound;
    uint64_t highest = 0;
    rc = s_collect(self, after, bound, &highest);
    if (rc != VS_OK) {
        s_rollback(self);
        return rc;
    }
    vs_changeset_writer_reset(self->writer);
    self->generation++;
    self->set_table_count = 0;
    bool filter = s_kept_mark(self, after, bound);
    for (size_t index = 0; index < self->reader_count; index++) {
        s_reader_t *reader = &self->readers[index];
        reader->active = filter ? reader->filtered : reader->stmt;
        sqlite3_bind_int64(reader->active, 1, (int64_t) after);
        sqlite3_bind_int64(reader->active, 2, (int64_t) bound);
        reader->at = 0;
    }
    uint64_t cut = after;  /* the last set ended here                          */
    uint64_t last = after; /* version of the last key handled                   */
    size_t bytes = 0;      /* encoded bytes of the finished sets                */
    bool stopped = false;
    vs_value_t key[VS_MAX_PK_COLUMNS];
    /* Collected newest first: written oldest first. */
    for (size_t item = self->changes.count; item-- > 0;) {
        const s_change_t *change = &self->changes.items[item];
        uint64_t version = change->version;
        s_table_t *table = change->table;
        size_t estimate = 16;
        s_change_key(self, item, key);
        sqlite3_stmt *row = NULL;
        rc = s_reader_seek(self, table, version, &row);
        if (rc != VS_OK) {
            goto failed;
        }
        bool found = sqlite3_column_int(row, table->found_column) != 0;
        if (found) {
            for (size_t index = 0; index < table->column_count; index++) {
                s_value_from_column(row, table->found_column + 1 + (int) index,
                                    &table->values[index]);
                estimate += s_value_estimate(&table->values[index]);
            }
        } else {
            for (size_t index = 0; index < table->pk_count; index++) {
                estimate += s_value_estimate(&key[index]);
            }
        }
        if (estimate > S_SET_CAP) {
            s_set_error(self,
                        "a row of table '%s' in database '%s' (version %llu) is larger than "
                        "the %u-byte change set limit",
                        table->name, self->db_path, (unsigned long long) version, VS_MAX_CHANGESET);
            rc = VS_EMSGSIZE;
            goto failed;
        }
        size_t size = vs_changeset_writer_size(self->writer);
        bool new_table = table->generation != self->generation;
        if (vs_changeset_writer_change_count(self->writer) > 0 &&
            (size >= self->target || size + estimate > S_SET_CAP ||
             (new_table && self->set_table_count == VS_MAX_TABLES))) {
            rc = s_finish_set(self, cut + 1, last, 0, sets, set_count);
            if (rc != VS_OK) {
                goto failed;
            }
            bytes += sets[*set_count - 1].size;
            cut = last;
            if (*set_count == max_sets || bytes >= max_bytes) {
                stopped = true;
                break;
            }
        }
        if (table->generation != self->generation) {
            self->set_table_count++;
            rc = vs_changeset_writer_add_table(self->writer, table->name, table->create_sql,
                                               table->column_count,
                                               (const char *const *) table->columns,
                                               table->pk_count, table->pk, &table->set_index);
            if (rc != VS_OK) {
                s_set_error(self, "cannot add table '%s' to a change set: %s", table->name,
                            vs_strerror(rc));
                goto failed;
            }
            table->generation = self->generation;
        }
        if (found) {
            rc = vs_changeset_writer_upsert(self->writer, table->set_index, table->column_count,
                                            table->values);
        } else {
            rc = vs_changeset_writer_delete(self->writer, table->set_index, table->pk_count, key);
        }
        if (rc != VS_OK) {
            s_set_error(self, "cannot add a change of table '%s': %s", table->name,
                        vs_strerror(rc));
            goto failed;
        }
        last = version;
    }
    if (!stopped) {
        /* Versions after the last key handled (older changes of keys handled earlier, tables
           no longer replicated) are covered too; up to the bound when the read was limited. */
        last = limited ? bound : highest > last ? highest : last;
    }
    if (!stopped && last > cut) {
        rc = s_finish_set(self, cut + 1, last, limited ? 0 : VS_CHANGESET_CONSISTENT, sets,
                          set_count);
        if (rc != VS_OK) {
            goto failed;
        }
    }
    *more = stopped || limited;
    if (*set_count) {
        size_t produced = 0;
        for (size_t index = 0; index < *set_count; index++) {
            produced += sets[index].size;
        }
        uint64_t versions = sets[*set_count - 1].last_version - after;
        self->bytes_per_version = (size_t) (produced / versions) + 1;
    }
    s_readers_reset(self);
    s_rollback(self); /* a read transaction: nothing to keep */
    return VS_OK;
failed:
    s_readers_reset(self);
    s_rollback(self);
    vs_changeset_writer_reset(self->writer);
    vs_capture_sets_free(sets, *set_count);
    *set_count = 0;
    *more = false;
    return rc;
}

int vs_capture_ack(vs_capture_t *self, uint64_t version, int busy_timeout_ms)
{
    self->busy = false;
    if (version > INT64_MAX) {
        s_set_error(self, "version %llu is out of range", (unsigned long long) version);
        return VS_EINVAL;
    }
    sqlite3_busy_timeout(self->db, busy_timeout_ms);
    int begun = s_exec(self, "BEGIN IMMEDIATE", "cannot start trimming the log");
    sqlite3_busy_timeout(self->db, S_BUSY_TIMEOUT_MS);
    if (begun != VS_OK) {
        return VS_ESTORE;
    }
    int rc = VS_OK;
    sqlite3_bind_int64(self->trim_stmt, 1, (int64_t) version);
    sqlite3_bind_int64(self->store_acked_stmt, 1, (int64_t) version);
    if (sqlite3_step(self->trim_stmt) != SQLITE_DONE ||
        sqlite3_step(self->store_acked_stmt) != SQLITE_DONE) {
        rc = s_sqlite_error(self, "cannot trim the log");
    }
    sqlite3_reset(self->trim_stmt);
    sqlite3_reset(self->store_acked_stmt);
    if (rc == VS_OK && s_exec(self, "COMMIT", "cannot commit the log trim") != VS_OK) {
        rc = VS_ESTORE;
    }
    s_rollback(self);
    if (rc == VS_OK && version > self->acked_version) {
        self->acked_version = version;
    }
    return rc;
}

void vs_capture_sets_free(vs_capture_set_t *sets, size_t count)
{
    for (size_t index = 0; index < count; index++) {
        free(sets[index].data);
        memset(&sets[index], 0, sizeof sets[index]);
    }
}
