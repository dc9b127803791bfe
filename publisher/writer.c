/*  writer.c - in-process change capture: a preupdate hook notes changed keys, the flush logs
    them into _versync_log as the triggers would have (see vs_writer.h).                      */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1 /* sqlite3.h declares the hook only with this       */
#include "vs_writer.h"
#include "sql_text.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Rows one INSERT into the log carries: starting and ending a statement costs about as much
   as a row (the same reason the slaves apply 32 rows a statement). */
#define S_ROWS_PER_INSERT 32

/* Kinds of a key value in the pending buffer. */
enum { S_NULL, S_INTEGER, S_REAL, S_TEXT, S_BLOB };

typedef struct {
    char *name;
    int64_t id; /* _versync_tables.id: the triggers' and the log's table number */
    size_t pk_count;
    int pk[VS_MAX_PK_COLUMNS]; /* column index of each key column, in key order    */
    bool real_key[VS_MAX_PK_COLUMNS]; /* the key column has REAL affinity            */
    bool rowid_key;            /* its one key column is the rowid (INTEGER PRIMARY KEY) */
} s_table_t;

struct vs_writer {
    sqlite3 *db;
    int trigger_setting; /* the connection's SQLITE_DBCONFIG_ENABLE_TRIGGER before attach */
    s_table_t *tables;
    size_t table_count;
    int64_t schema_version; /* of the loaded tables                                       */
    char last_name[VS_MAX_NAME + 1]; /* the table the hook saw last (a name, never its
                                        pointer: SQLite may free and reuse that)             */
    bool last_valid;
    size_t last_index;
    bool last_known;
    /* The changes of the open transaction, in order: table index (uint32), then each key
       value as a kind byte and its bytes. The first logged_count (logged_size bytes) are in
       the log already; they are kept until the transaction ends, for a ROLLBACK TO that
       takes their log rows back (see s_log_check). */
    uint8_t *pending;
    size_t pending_size;
    size_t pending_capacity;
    size_t pending_count;
    size_t logged_size;
    size_t logged_count;
    int64_t txn_first_version; /* the first log row this transaction wrote; 0: none yet   */
    size_t txn_logged;         /* the log rows it wrote                                    */
    size_t changes_seen;   /* any table's, since the last flush or rollback                */
    bool note_failed;      /* a change could not be noted: the transaction must not commit */
    bool schema_changed;   /* the schema changed under the transaction: it must not commit */
    bool attached_changed; /* a change to an attached database: its triggers are off too   */
    bool flushing;         /* our own log inserts: not changes to note                     */
    sqlite3_stmt *schema_version_stmt;
    sqlite3_stmt *count_logged_stmt; /* this transaction's log rows                    */
    sqlite3_stmt *unlog_stmt;        /* deletes them                                    */
    sqlite3_stmt *insert[VS_MAX_PK_COLUMNS + 1][2]; /* by key count: one row, 32 rows        */
    char error[512];
};

static void s_set_error(vs_writer_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void s_set_error(vs_writer_t *self, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(self->error, sizeof self->error, format, args);
    va_end(args);
}

static int s_sqlite_error(vs_writer_t *self, const char *what)
{
    s_set_error(self, "%s: %s", what, sqlite3_errmsg(self->db));
    return VS_ESTORE;
}

static void s_tables_free(vs_writer_t *self)
{
    for (size_t index = 0; index < self->table_count; index++) {
        free(self->tables[index].name);
    }
    free(self->tables);
    self->tables = NULL;
    self->table_count = 0;
    self->last_valid = false;
}

/*  Forgets the transaction: it ended.                                                       */
static void s_pending_clear(vs_writer_t *self)
{
    self->pending_size = 0;
    self->pending_count = 0;
    self->logged_size = 0;
    self->logged_count = 0;
    self->txn_first_version = 0;
    self->txn_logged = 0;
    self->changes_seen = 0;
    self->note_failed = false;
    self->schema_changed = false;
    self->attached_changed = false;
}

/* ---------------------------------------------------------------------------------------------
    The replicated tables: those with versync's triggers installed, as the publisher left them.
*/

static int s_schema_version(vs_writer_t *self, int64_t *version)
{
    int rc = sqlite3_step(self->schema_version_stmt);
    *version = sqlite3_column_int64(self->schema_version_stmt, 0);
    sqlite3_reset(self->schema_version_stmt);
    return rc == SQLITE_ROW ? VS_OK : s_sqlite_error(self, "cannot read the schema version");
}

/*  True when a column declared with type has REAL affinity (SQLite's rules, in their order).  */
static bool s_real_affinity(const char *type)
{
    if (!type) {
        return false;
    }
    char upper[128];
    size_t length = 0;
    for (; type[length] && length + 1 < sizeof upper; length++) {
        upper[length] = (char) toupper((unsigned char) type[length]);
    }
    upper[length] = 0;
    if (strstr(upper, "INT") || strstr(upper, "CHAR") || strstr(upper, "CLOB") ||
        strstr(upper, "TEXT") || strstr(upper, "BLOB")) {
        return false;
    }
    return strstr(upper, "REAL") || strstr(upper, "FLOA") || strstr(upper, "DOUB");
}

/*  Fills table's key columns from its table_info; rowid_key when its key is the rowid (a rowid
    table whose primary key made no index of its own).                                       */
static int s_table_describe(vs_writer_t *self, s_table_t *table)
{
    int result = VS_ESTORE;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT cid, pk, type FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk", -1,
                           &stmt, NULL) != SQLITE_OK) {
        result = s_sqlite_error(self, "cannot read table info");
        goto cleanup;
    }
    sqlite3_bind_text(stmt, 1, table->name, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (table->pk_count == VS_MAX_PK_COLUMNS) {
            s_set_error(self, "table '%s' has more than %d key columns", table->name,
                        VS_MAX_PK_COLUMNS);
            result = VS_EINVAL;
            goto cleanup;
        }
        /* SQLite stores a whole REAL as an integer, and the preupdate hook hands an INSERT's
           value over as stored: the triggers' NEW.k gives a real. */
        table->real_key[table->pk_count] = s_real_affinity((const char *) sqlite3_column_text(stmt, 2));
        table->pk[table->pk_count++] = sqlite3_column_int(stmt, 0);
    }
    if (rc != SQLITE_DONE) {
        result = s_sqlite_error(self, "cannot read table info");
        goto cleanup;
    }
    if (table->pk_count == 0) {
        s_set_error(self, "table '%s' has versync's triggers but no primary key", table->name);
        result = VS_EINVAL;
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (sqlite3_prepare_v2(
            self->db,
            "SELECT (SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main') = 0 "
            "AND NOT EXISTS (SELECT 1 FROM pragma_index_list(?1, 'main') "
            "WHERE origin = 'pk'), EXISTS (SELECT 1 FROM pragma_table_xinfo(?1, 'main') "
            "WHERE hidden IN (2, 3))",
            -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 1, table->name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        result = s_sqlite_error(self, "cannot read table info");
        goto cleanup;
    }
    table->rowid_key = table->pk_count == 1 && sqlite3_column_int(stmt, 0) == 1;
    /* The preupdate hook numbers a row's columns as SQLite stores them, which leaves out
       virtual generated columns, and table_info numbers them without any generated one
       (SQLite 3.40): with a generated column, a key read by column number can be another
       column's value. A key that is the rowid is read as the rowid.                        */
    if (!table->rowid_key && sqlite3_column_int(stmt, 1)) {
        s_set_error(self,
                    "table '%s' has a generated column and a primary key that is not its "
                    "rowid: a writer cannot read its keys (its changes need the triggers)",
                    table->name);
        result = VS_EINVAL;
        goto cleanup;
    }
    result = VS_OK;
cleanup:
    sqlite3_finalize(stmt);
    return result;
}

/*  Loads the replicated tables and checks that the database has no trigger but versync's,
    which this connection would not run. Reads, so inside or outside a transaction.           */
static int s_tables_load(vs_writer_t *self)
{
    int result = VS_ESTORE;
    sqlite3_stmt *stmt = NULL;
    s_tables_free(self);
    if (s_schema_version(self, &self->schema_version) != VS_OK) {
        goto cleanup;
    }
    if (sqlite3_prepare_v2(self->db,
                           "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name NOT "
                           "LIKE '\\_versync\\_%' ESCAPE '\\' UNION ALL SELECT name FROM "
                           "sqlite_temp_schema WHERE type = 'trigger' LIMIT 1",
                           -1, &stmt, NULL) != SQLITE_OK) {
        result = s_sqlite_error(self, "cannot read the schema");
        goto cleanup;
    }
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        s_set_error(self, "trigger '%s' would not run on a connection with a writer attached",
                    (const char *) sqlite3_column_text(stmt, 0));
        result = VS_EINVAL;
        goto cleanup;
    }
    if (rc != SQLITE_DONE) {
        result = s_sqlite_error(self, "cannot read the schema");
        goto cleanup;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    /* A table is replicated while its insert trigger is installed (the publisher installs the
       four together and drops them together). */
    if (sqlite3_prepare_v2(self->db,
                           "SELECT t.id, t.name FROM _versync_tables t JOIN sqlite_schema s "
                           "ON s.type = 'trigger' AND s.name = '_versync_' || t.id || '_ins' "
                           "AND s.tbl_name = t.name ORDER BY t.id",
                           -1, &stmt, NULL) != SQLITE_OK) {
        s_sqlite_error(self, "cannot read _versync_tables (has a publisher attached this "
                             "database?)");
        result = VS_EINVAL;
        goto cleanup;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        s_table_t *tables = realloc(self->tables, (self->table_count + 1) * sizeof *tables);
        if (!tables) {
            s_set_error(self, "out of memory");
            result = VS_ENOMEM;
            goto cleanup;
        }
        self->tables = tables;
        s_table_t *table = &tables[self->table_count];
        memset(table, 0, sizeof *table);
        table->id = sqlite3_column_int64(stmt, 0);
        table->name = strdup((const char *) sqlite3_column_text(stmt, 1));
        if (!table->name) {
            s_set_error(self, "out of memory");
            result = VS_ENOMEM;
            goto cleanup;
        }
        self->table_count++;
        result = s_table_describe(self, table);
        if (result != VS_OK) {
            goto cleanup;
        }
    }
    if (rc != SQLITE_DONE) {
        result = s_sqlite_error(self, "cannot read _versync_tables");
        goto cleanup;
    }
    result = VS_OK;
cleanup:
    sqlite3_finalize(stmt);
    if (result != VS_OK) {
        s_tables_free(self);
        self->schema_version = -1;
    }
    return result;
}

/* ---------------------------------------------------------------------------------------------
    The hooks. The preupdate hook runs inside SQLite's statement: it only notes, never queries.
*/

static bool s_pending_reserve(vs_writer_t *self, size_t more)
{
    if (self->pending_size + more <= self->pending_capacity) {
        return true;
    }
    size_t capacity = self->pending_capacity ? self->pending_capacity : 64 * 1024;
    while (capacity < self->pending_size + more) {
        capacity *= 2;
    }
    uint8_t *pending = realloc(self->pending, capacity);
    if (!pending) {
        return false;
    }
    self->pending = pending;
    self->pending_capacity = capacity;
    return true;
}

static void s_pending_put(vs_writer_t *self, const void *data, size_t size)
{
    memcpy(self->pending + self->pending_size, data, size);
    self->pending_size += size;
}

static void s_note_integer(vs_writer_t *self, uint32_t table, int64_t key)
{
    if (!s_pending_reserve(self, sizeof table + 1 + sizeof key)) {
        self->note_failed = true;
        return;
    }
    uint8_t kind = S_INTEGER;
    s_pending_put(self, &table, sizeof table);
    s_pending_put(self, &kind, 1);
    s_pending_put(self, &key, sizeof key);
    self->pending_count++;
}

/*  Notes the key of the old (or new) row from the preupdate API.                             */
static void s_note_values(vs_writer_t *self, uint32_t index, bool new_row)
{
    const s_table_t *table = &self->tables[index];
    size_t start = self->pending_size;
    if (!s_pending_reserve(self, sizeof index)) {
        goto failed;
    }
    s_pending_put(self, &index, sizeof index);
    for (size_t key = 0; key < table->pk_count; key++) {
        sqlite3_value *value = NULL;
        int rc = new_row ? sqlite3_preupdate_new(self->db, table->pk[key], &value)
                         : sqlite3_preupdate_old(self->db, table->pk[key], &value);
        if (rc != SQLITE_OK || !value) {
            goto failed;
        }
        int type = sqlite3_value_type(value);
        uint8_t kind = type == SQLITE_INTEGER ? S_INTEGER
                       : type == SQLITE_FLOAT ? S_REAL
                       : type == SQLITE_TEXT  ? S_TEXT
                       : type == SQLITE_BLOB  ? S_BLOB
                                              : S_NULL;
        if (kind == S_INTEGER && table->real_key[key]) {
            kind = S_REAL;
        }
        if (kind == S_INTEGER || kind == S_REAL) {
            if (!s_pending_reserve(self, 9)) {
                goto failed;
            }
            s_pending_put(self, &kind, 1);
            if (kind == S_INTEGER) {
                int64_t integer = sqlite3_value_int64(value);
                s_pending_put(self, &integer, sizeof integer);
            } else {
                double real = sqlite3_value_double(value);
                s_pending_put(self, &real, sizeof real);
            }
        } else if (kind == S_TEXT || kind == S_BLOB) {
            const void *bytes = kind == S_TEXT ? (const void *) sqlite3_value_text(value)
                                               : sqlite3_value_blob(value);
            uint32_t size = (uint32_t) sqlite3_value_bytes(value);
            if (!s_pending_reserve(self, 1 + sizeof size + size)) {
                goto failed;
            }
            s_pending_put(self, &kind, 1);
            s_pending_put(self, &size, sizeof size);
            if (size) {
                s_pending_put(self, bytes, size);
            }
        } else {
            if (!s_pending_reserve(self, 1)) {
                goto failed;
            }
            s_pending_put(self, &kind, 1);
        }
    }
    self->pending_count++;
    return;
failed:
    self->pending_size = start;
    self->note_failed = true;
}

/*  True when an UPDATE changed a key column's value: type or bytes. Where the triggers compare
    with the column's collation or affinity ('a' and 'A' under NOCASE), this logs the new key
    once more than they would; it never logs less.                                            */
static bool s_key_changed(vs_writer_t *self, const s_table_t *table)
{
    for (size_t key = 0; key < table->pk_count; key++) {
        sqlite3_value *old_value = NULL;
        sqlite3_value *new_value = NULL;
        if (sqlite3_preupdate_old(self->db, table->pk[key], &old_value) != SQLITE_OK ||
            sqlite3_preupdate_new(self->db, table->pk[key], &new_value) != SQLITE_OK ||
            !old_value || !new_value) {
            return true;
        }
        int type = sqlite3_value_type(old_value);
        if (type != sqlite3_value_type(new_value)) {
            return true;
        }
        if (type == SQLITE_INTEGER) {
            if (sqlite3_value_int64(old_value) != sqlite3_value_int64(new_value)) {
                return true;
            }
        } else if (type == SQLITE_FLOAT) {
            double left = sqlite3_value_double(old_value);
            double right = sqlite3_value_double(new_value);
            if (memcmp(&left, &right, sizeof left) != 0) {
                return true;
            }
        } else if (type != SQLITE_NULL) {
            const void *left = type == SQLITE_TEXT ? (const void *) sqlite3_value_text(old_value)
                                                   : sqlite3_value_blob(old_value);
            const void *right = type == SQLITE_TEXT ? (const void *) sqlite3_value_text(new_value)
                                                    : sqlite3_value_blob(new_value);
            int size = sqlite3_value_bytes(old_value);
            if (size != sqlite3_value_bytes(new_value) ||
                (size && memcmp(left, right, (size_t) size) != 0)) {
                return true;
            }
        }
    }
    return false;
}

static void s_preupdate(void *arg, sqlite3 *db, int op, const char *schema, const char *name,
                        sqlite3_int64 old_rowid, sqlite3_int64 new_rowid)
{
    (void) db;
    vs_writer_t *self = arg;
    if (self->flushing || strcmp(schema, "temp") == 0) {
        return;
    }
    if (strcmp(schema, "main") != 0) {
        /* Not captured here, and the connection runs no triggers in any database: the flush
           checks that this one has none to miss. */
        self->attached_changed = true;
        self->changes_seen++;
        return;
    }
    self->changes_seen++;
    if (!self->last_valid || strcmp(name, self->last_name) != 0) {
        self->last_known = false;
        for (size_t index = 0; index < self->table_count; index++) {
            if (strcmp(self->tables[index].name, name) == 0) {
                self->last_index = index;
                self->last_known = true;
                break;
            }
        }
        size_t length = strlen(name);
        self->last_valid = length < sizeof self->last_name;
        if (self->last_valid) {
            memcpy(self->last_name, name, length + 1);
        }
    }
    if (!self->last_known) {
        return;
    }
    uint32_t index = (uint32_t) self->last_index;
    const s_table_t *table = &self->tables[index];
    /* As the triggers: INSERT logs NEW's key, DELETE OLD's; UPDATE OLD's, then NEW's too when
       the key changed (the older key keeps the lower version). */
    if (table->rowid_key) {
        if (op != SQLITE_INSERT) {
            s_note_integer(self, index, old_rowid);
        }
        if (op == SQLITE_INSERT || (op == SQLITE_UPDATE && new_rowid != old_rowid)) {
            s_note_integer(self, index, new_rowid);
        }
        return;
    }
    if (op != SQLITE_INSERT) {
        s_note_values(self, index, false);
    }
    if (op == SQLITE_INSERT || (op == SQLITE_UPDATE && s_key_changed(self, table))) {
        s_note_values(self, index, true);
    }
}

/*  Refuses (turns into a ROLLBACK) a commit of changes no flush has looked at: their keys, or
    the check that the tables they were matched against are still this transaction's.       */
static int s_commit_hook(void *arg)
{
    vs_writer_t *self = arg;
    if (self->changes_seen > 0 || self->note_failed || self->schema_changed) {
        return 1;
    }
    s_pending_clear(self);
    return 0;
}

/*  True for the text of a ROLLBACK TO (ROLLBACK [TRANSACTION] TO [SAVEPOINT] name): its
    first word ROLLBACK, and a word TO after it, outside quotes and comments.              */
static bool s_is_rollback_to(const char *sql)
{
    if (!sql) {
        return false;
    }
    const char *start;
    size_t length;
    vs_sql_kind_t kind;
    do {
        kind = vs_sql_next(&sql, &start, &length); /* past empty statements */
    } while (kind == VS_SQL_OTHER && *start == ';');
    if (!vs_sql_is_word(kind, start, length, "ROLLBACK")) {
        return false;
    }
    while ((kind = vs_sql_next(&sql, &start, &length)) != VS_SQL_END && kind != VS_SQL_OPEN &&
           !(kind == VS_SQL_OTHER && *start == ';')) {
        if (vs_sql_is_word(kind, start, length, "TO")) {
            return true;
        }
    }
    return false;
}

/*  Each statement as it starts: a ROLLBACK TO may take back log rows of an earlier flush,
    and no hook tells, so the transaction needs a flush again (s_log_check) to commit.        */
static int s_trace(unsigned type, void *arg, void *stmt, void *sql)
{
    (void) sql;
    vs_writer_t *self = arg;
    if (type == SQLITE_TRACE_STMT && self->txn_logged > 0 &&
        s_is_rollback_to(sqlite3_sql((sqlite3_stmt *) stmt))) {
        self->changes_seen++;
    }
    return 0;
}

static void s_rollback_hook(void *arg)
{
    s_pending_clear((vs_writer_t *) arg);
}

/* ---------------------------------------------------------------------------------------------
    Public API.
*/

int vs_writer_attach(vs_writer_t **self_p, sqlite3 *db, char *error, size_t error_size)
{
    int result = VS_ENOMEM;
    *self_p = NULL;
    vs_writer_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return VS_ENOMEM;
    }
    self->db = db;
    self->trigger_setting = -1;
    if (!db || !sqlite3_get_autocommit(db)) {
        s_set_error(self, "the connection is missing or inside a transaction");
        result = VS_EINVAL;
        goto cleanup;
    }
    if (sqlite3_prepare_v2(db, "PRAGMA schema_version", -1, &self->schema_version_stmt, NULL) !=
        SQLITE_OK) {
        result = s_sqlite_error(self, "cannot prepare");
        goto cleanup;
    }
    result = s_tables_load(self);
    if (result != VS_OK) {
        goto cleanup;
    }
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM main._versync_log WHERE version >= ?1", -1,
                           &self->count_logged_stmt, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "DELETE FROM main._versync_log WHERE version >= ?1", -1,
                           &self->unlog_stmt, NULL) != SQLITE_OK) {
        result = s_sqlite_error(self, "cannot prepare");
        goto cleanup;
    }
    int previous = -1;
    int now = -1;
    /* Turning triggers off expires the connection's prepared statements, so each is prepared
       again knowing of the preupdate hook (a DELETE without WHERE prepared before it would
       take SQLite's truncate shortcut, which calls no hook). Already off: on, then off. */
    if (sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, -1, &previous) != SQLITE_OK ||
        (previous == 0 &&
         sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 1, &now) != SQLITE_OK) ||
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, &now) != SQLITE_OK || now != 0) {
        result = s_sqlite_error(self, "cannot turn the connection's triggers off");
        goto cleanup;
    }
    self->trigger_setting = previous;
    sqlite3_preupdate_hook(db, s_preupdate, self);
    sqlite3_commit_hook(db, s_commit_hook, self);
    sqlite3_rollback_hook(db, s_rollback_hook, self);
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT, s_trace, self);
    *self_p = self;
    return VS_OK;
cleanup:
    snprintf(error, error_size, "%s", self->error);
    vs_writer_detach(&self);
    return result;
}

void vs_writer_detach(vs_writer_t **self_p)
{
    vs_writer_t *self = *self_p;
    if (!self) {
        return;
    }
    if (self->trigger_setting >= 0) {
        /* Without the hooks an open transaction could commit its unlogged changes, or a
           ROLLBACK TO could take its log rows back unseen. */
        if (!sqlite3_get_autocommit(self->db) &&
            (self->changes_seen > 0 || self->note_failed || self->schema_changed ||
             self->txn_logged > 0)) {
            sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        }
        sqlite3_preupdate_hook(self->db, NULL, NULL);
        sqlite3_commit_hook(self->db, NULL, NULL);
        sqlite3_rollback_hook(self->db, NULL, NULL);
        sqlite3_trace_v2(self->db, 0, NULL, NULL);
        sqlite3_db_config(self->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, self->trigger_setting, NULL);
    }
    sqlite3_finalize(self->schema_version_stmt);
    sqlite3_finalize(self->count_logged_stmt);
    sqlite3_finalize(self->unlog_stmt);
    for (size_t count = 0; count <= VS_MAX_PK_COLUMNS; count++) {
        sqlite3_finalize(self->insert[count][0]);
        sqlite3_finalize(self->insert[count][1]);
    }
    s_tables_free(self);
    free(self->pending);
    free(self);
    *self_p = NULL;
}

const char *vs_writer_error(const vs_writer_t *self)
{
    return self ? self->error : "no writer";
}

int vs_writer_begin(vs_writer_t *self)
{
    if (sqlite3_exec(self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        return s_sqlite_error(self, "cannot begin");
    }
    /* The schema as this transaction sees it. */
    int64_t version;
    int rc = s_schema_version(self, &version);
    if (rc == VS_OK && version != self->schema_version) {
        rc = s_tables_load(self);
    }
    if (rc != VS_OK) {
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/*  The INSERT into the log for key_count keys and rows rows, prepared once.                  */
static sqlite3_stmt *s_insert(vs_writer_t *self, size_t key_count, size_t rows)
{
    sqlite3_stmt **stmt = &self->insert[key_count][rows > 1];
    if (*stmt) {
        return *stmt;
    }
    char sql[8192];
    size_t used = (size_t) snprintf(sql, sizeof sql, "INSERT INTO _versync_log (tbl");
    for (size_t key = 0; key < key_count; key++) {
        used += (size_t) snprintf(sql + used, sizeof sql - used, ", k%zu", key);
    }
    used += (size_t) snprintf(sql + used, sizeof sql - used, ") VALUES ");
    for (size_t row = 0; row < rows; row++) {
        used += (size_t) snprintf(sql + used, sizeof sql - used, "%s(?", row ? "," : "");
        for (size_t key = 0; key < key_count; key++) {
            used += (size_t) snprintf(sql + used, sizeof sql - used, ",?");
        }
        used += (size_t) snprintf(sql + used, sizeof sql - used, ")");
    }
    if (sqlite3_prepare_v2(self->db, sql, -1, stmt, NULL) != SQLITE_OK) {
        s_sqlite_error(self, "cannot prepare the log insert");
        *stmt = NULL;
    }
    return *stmt;
}

/*  Binds one pending change at *offset to stmt's row, advancing *offset.                     */
static void s_bind_change(vs_writer_t *self, sqlite3_stmt *stmt, int parameter, size_t *offset)
{
    uint32_t index;
    memcpy(&index, self->pending + *offset, sizeof index);
    *offset += sizeof index;
    const s_table_t *table = &self->tables[index];
    sqlite3_bind_int64(stmt, parameter++, table->id);
    for (size_t key = 0; key < table->pk_count; key++, parameter++) {
        uint8_t kind = self->pending[(*offset)++];
        if (kind == S_INTEGER || kind == S_REAL) {
            int64_t integer;
            double real;
            if (kind == S_INTEGER) {
                memcpy(&integer, self->pending + *offset, sizeof integer);
                sqlite3_bind_int64(stmt, parameter, integer);
            } else {
                memcpy(&real, self->pending + *offset, sizeof real);
                sqlite3_bind_double(stmt, parameter, real);
            }
            *offset += 8;
        } else if (kind == S_TEXT || kind == S_BLOB) {
            uint32_t size;
            memcpy(&size, self->pending + *offset, sizeof size);
            *offset += sizeof size;
            const void *bytes = self->pending + *offset;
            if (kind == S_TEXT) {
                sqlite3_bind_text(stmt, parameter, bytes, (int) size, SQLITE_STATIC);
            } else {
                sqlite3_bind_blob(stmt, parameter, bytes, (int) size, SQLITE_STATIC);
            }
            *offset += size;
        } else {
            sqlite3_bind_null(stmt, parameter);
        }
    }
}

/*  Table index of the pending change at offset.                                              */
static uint32_t s_pending_table(const vs_writer_t *self, size_t offset)
{
    uint32_t index;
    memcpy(&index, self->pending + offset, sizeof index);
    return index;
}

/*  VS_EINVAL when an attached database has a trigger, which this connection no longer runs:
    a change written there would go unlogged.                                               */
static int s_attached_triggers(vs_writer_t *self)
{
    int result = VS_ESTORE;
    sqlite3_stmt *databases = NULL;
    sqlite3_stmt *triggers = NULL;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT name FROM pragma_database_list WHERE name NOT IN "
                           "('main', 'temp')",
                           -1, &databases, NULL) != SQLITE_OK) {
        result = s_sqlite_error(self, "cannot list the attached databases");
        goto cleanup;
    }
    int rc;
    while ((rc = sqlite3_step(databases)) == SQLITE_ROW) {
        const char *database = (const char *) sqlite3_column_text(databases, 0);
        char *sql = sqlite3_mprintf("SELECT name FROM \"%w\".sqlite_schema WHERE type = "
                                    "'trigger' LIMIT 1",
                                    database ? database : "");
        if (!sql) {
            s_set_error(self, "out of memory");
            result = VS_ENOMEM;
            goto cleanup;
        }
        int prepared = sqlite3_prepare_v2(self->db, sql, -1, &triggers, NULL);
        sqlite3_free(sql);
        if (prepared != SQLITE_OK) {
            result = s_sqlite_error(self, "cannot read an attached database's schema");
            goto cleanup;
        }
        int step = sqlite3_step(triggers);
        if (step == SQLITE_ROW) {
            s_set_error(self,
                        "trigger '%s' of attached database '%s' would not run on a connection "
                        "with a writer attached",
                        (const char *) sqlite3_column_text(triggers, 0), database);
            result = VS_EINVAL;
            goto cleanup;
        }
        if (step != SQLITE_DONE) {
            result = s_sqlite_error(self, "cannot read an attached database's schema");
            goto cleanup;
        }
        sqlite3_finalize(triggers);
        triggers = NULL;
    }
    result = rc == SQLITE_DONE ? VS_OK : s_sqlite_error(self, "cannot list the attached databases");
cleanup:
    sqlite3_finalize(databases);
    sqlite3_finalize(triggers);
    return result;
}

/*  Offset of the pending change after the one at offset.                                    */
static size_t s_pending_skip(const vs_writer_t *self, size_t offset)
{
    size_t key_count = self->tables[s_pending_table(self, offset)].pk_count;
    offset += sizeof(uint32_t);
    for (size_t key = 0; key < key_count; key++) {
        uint8_t kind = self->pending[offset++];
        if (kind == S_INTEGER || kind == S_REAL) {
            offset += 8;
        } else if (kind == S_TEXT || kind == S_BLOB) {
            uint32_t size;
            memcpy(&size, self->pending + offset, sizeof size);
            offset += sizeof size + size;
        }
    }
    return offset;
}

/*  Checks that the log rows this transaction's flushes wrote are still there. A ROLLBACK TO
    a savepoint taken before a flush takes them back, and no hook tells: then the rest of
    them go too, and every change of the transaction is logged again (a change that the
    ROLLBACK TO also undid is logged for nothing: its row travels as it is).                */
static int s_log_check(vs_writer_t *self)
{
    if (self->txn_logged == 0) {
        return VS_OK;
    }
    sqlite3_bind_int64(self->count_logged_stmt, 1, self->txn_first_version);
    int rc = sqlite3_step(self->count_logged_stmt);
    int64_t count = sqlite3_column_int64(self->count_logged_stmt, 0);
    sqlite3_reset(self->count_logged_stmt);
    if (rc != SQLITE_ROW) {
        return s_sqlite_error(self, "cannot count the logged keys");
    }
    if ((uint64_t) count == self->txn_logged) {
        return VS_OK;
    }
    sqlite3_bind_int64(self->unlog_stmt, 1, self->txn_first_version);
    self->flushing = true;
    rc = sqlite3_step(self->unlog_stmt);
    self->flushing = false;
    sqlite3_reset(self->unlog_stmt);
    if (rc != SQLITE_DONE) {
        return s_sqlite_error(self, "cannot log the changed keys again");
    }
    self->logged_size = 0;
    self->logged_count = 0;
    self->txn_first_version = 0;
    self->txn_logged = 0;
    return VS_OK;
}

int vs_writer_flush(vs_writer_t *self)
{
    if (self->note_failed) {
        s_set_error(self, "a change could not be noted (out of memory): roll the transaction "
                          "back");
        return VS_ENOMEM;
    }
    if (self->schema_changed) {
        return VS_ESCHEMA; /* its message stays */
    }
    if (self->changes_seen == 0 && self->txn_logged == 0) {
        return VS_OK;
    }
    if (self->attached_changed) {
        int rc = s_attached_triggers(self);
        if (rc != VS_OK) {
            return rc;
        }
    }
    int64_t version;
    if (s_schema_version(self, &version) != VS_OK) {
        return VS_ESTORE;
    }
    if (version != self->schema_version) {
        /* The hook matched this transaction's changes against tables that may not be its own
           (a table attached since then had its changes ignored), and its noted changes name
           them by index: the transaction must not commit. The tables are read again for the
           next one. */
        self->schema_changed = true;
        int rc = s_tables_load(self);
        s_set_error(self,
                    "the schema changed under this transaction (a publisher attached a table, "
                    "or the transaction changed the schema itself): roll it back and run it "
                    "again, with schema changes outside transactions written through the "
                    "writer");
        return rc != VS_OK ? rc : VS_ESCHEMA;
    }
    int result = s_log_check(self);
    self->flushing = true;
    size_t offset = self->logged_size;
    size_t done = self->logged_count;
    while (result == VS_OK && done < self->pending_count) {
        /* 32 consecutive changes of tables with the same key count go in one INSERT; the
           others one by one. */
        size_t key_count = self->tables[s_pending_table(self, offset)].pk_count;
        size_t rows = 0;
        for (size_t probe = offset;
             rows < S_ROWS_PER_INSERT && done + rows < self->pending_count &&
             self->tables[s_pending_table(self, probe)].pk_count == key_count;
             probe = s_pending_skip(self, probe)) {
            rows++;
        }
        rows = rows == S_ROWS_PER_INSERT ? rows : 1;
        sqlite3_stmt *stmt = s_insert(self, key_count, rows);
        if (!stmt) {
            result = VS_ESTORE;
            break;
        }
        for (size_t row = 0; row < rows; row++) {
            s_bind_change(self, stmt, (int) (row * (key_count + 1) + 1), &offset);
        }
        int rc = sqlite3_step(stmt);
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        if (rc != SQLITE_DONE) {
            result = s_sqlite_error(self, "cannot log the changed keys");
            break;
        }
        if (self->txn_logged == 0) {
            /* the rows of one INSERT take consecutive versions */
            self->txn_first_version = sqlite3_last_insert_rowid(self->db) - (int64_t) rows + 1;
        }
        self->txn_logged += rows;
        done += rows;
        self->logged_size = offset;
        self->logged_count = done;
    }
    self->flushing = false;
    if (result == VS_OK) {
        self->changes_seen = 0;
        self->attached_changed = false;
    }
    return result;
}

int vs_writer_commit(vs_writer_t *self)
{
    int rc = vs_writer_flush(self);
    if (rc != VS_OK) {
        return rc;
    }
    if (sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        return s_sqlite_error(self, "cannot commit");
    }
    return VS_OK;
}
