/*  history.c - the broker's durable history in history.db, with every stream's head in memory.

    Tables:
      streams    (id, name, head, head_hash)        one row per stream, head == max(seq)
      changesets (id, stream, seq, hash, payload)   one row per stored set, UNIQUE(stream, seq)
      publishers (stream, publisher, last_version)  highest version stored per publisher

    Memory holds two copies of each mutable number: the staged value (what the open batch has
    made of it) and the committed value (what history.db holds). A commit copies staged into
    committed for the streams and publishers the batch touched; a failed commit copies back.
*/
#include "history.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_SCHEMA_VERSION  1
#define S_MAX_CHUNK_BYTES (16u * 1024 * 1024)
#define S_BUSY_TIMEOUT_MS 1000
#define S_PATH_MAX        4096
/*  WAL pages after which vs_history_checkpoint copies them into history.db (SQLite's own
    automatic checkpoint threshold, but run after the replies rather than inside COMMIT).    */
#define S_CHECKPOINT_PAGES 1000

typedef struct s_stream s_stream_t;

typedef struct {
    char id[VS_MAX_PUBLISHER_ID + 1];
    size_t id_size;
    s_stream_t *stream;
    uint64_t last_version;           /* staged                                   */
    uint64_t committed_last_version; /* as in history.db                         */
    bool persisted;                  /* a committed row exists                   */
    bool dirty;                      /* touched by the open batch                */
} s_publisher_t;

struct s_stream {
    int64_t id;
    char name[VS_MAX_STREAM_NAME + 1];
    size_t name_size;
    uint64_t head;
    uint8_t hash[VS_HASH_SIZE];
    uint64_t committed_head;
    uint8_t committed_hash[VS_HASH_SIZE];
    bool persisted;
    bool dirty;
    zhashx_t *publishers; /* id -> s_publisher_t                                   */
};

struct vs_history {
    const vs_logger_t *logger;
    int lock_fd; /* data_dir/broker.lock, flock()ed while the history is open           */
    sqlite3 *db;
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
    sqlite3_stmt *insert_stream;
    sqlite3_stmt *update_stream;
    sqlite3_stmt *insert_changeset;
    sqlite3_stmt *upsert_publisher;
    sqlite3_stmt *fetch;
    zhashx_t *streams; /* name -> s_stream_t                                          */
    int wal_pages;     /* frames in the WAL after the last commit, from the WAL hook           */
    bool in_transaction;
    bool failed;          /* the open batch hit a database error                               */
    void **dirty_streams; /* s_stream_t *, touched by the open batch               */
    size_t dirty_stream_count;
    size_t dirty_stream_capacity;
    void **dirty_publishers; /* s_publisher_t *                                 */
    size_t dirty_publisher_count;
    size_t dirty_publisher_capacity;
    uint8_t *chunk_buffer;
    size_t chunk_buffer_capacity;
    vs_entry_t *chunk_entries;
    size_t chunk_entry_capacity;
    char error[S_PATH_MAX + 512];
};

static const uint8_t s_zero_hash[VS_HASH_SIZE];

static void s_publisher_destroy(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_stream_destroy(void **item)
{
    s_stream_t *stream = (s_stream_t *) *item;
    if (stream) {
        zhashx_destroy(&stream->publishers);
        free(stream);
    }
    *item = NULL;
}

/*  Removes key from hash (destroying its item) with a copy of the key, since the key may live
    inside the item being destroyed.                                                          */
static void s_delete(zhashx_t *hash, const char *key)
{
    char copy[VS_MAX_NAME + 1];
    snprintf(copy, sizeof copy, "%s", key);
    zhashx_delete(hash, copy);
}

static s_stream_t *s_stream_new(const char *name, size_t name_size)
{
    s_stream_t *stream = (s_stream_t *) calloc(1, sizeof *stream);
    if (!stream) {
        return NULL;
    }
    stream->publishers = zhashx_new();
    if (!stream->publishers) {
        free(stream);
        return NULL;
    }
    zhashx_set_destructor(stream->publishers, s_publisher_destroy);
    memcpy(stream->name, name, name_size);
    stream->name[name_size] = 0;
    stream->name_size = name_size;
    return stream;
}

static bool s_publisher_id_valid(const char *data, size_t size)
{
    if (size == 0 || size > VS_MAX_PUBLISHER_ID) {
        return false;
    }
    for (size_t index = 0; index < size; index++) {
        unsigned char c = (unsigned char) data[index];
        if (c < 0x21 || c > 0x7e) {
            return false;
        }
    }
    return true;
}

static void s_set_error(vs_history_t *self, const char *what)
{
    snprintf(self->error, sizeof self->error, "%s: %s", what, sqlite3_errmsg(self->db));
}

/*  Creates path and its parents like mkdir -p. Returns 0, or -1 with errno set.              */
static int s_mkdir_p(const char *path)
{
    char buffer[S_PATH_MAX];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof buffer) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buffer, path, length + 1);
    for (size_t index = 1; index <= length; index++) {
        if (buffer[index] == '/' || buffer[index] == 0) {
            char saved = buffer[index];
            buffer[index] = 0;
            if (mkdir(buffer, 0700) != 0 && errno != EEXIST) {
                return -1;
            }
            buffer[index] = saved;
        }
    }
    struct stat info;
    if (stat(path, &info) != 0) {
        return -1;
    }
    if (!S_ISDIR(info.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int s_prepare(vs_history_t *self, sqlite3_stmt **statement, const char *sql)
{
    if (sqlite3_prepare_v3(self->db, sql, -1, SQLITE_PREPARE_PERSISTENT, statement, NULL) !=
        SQLITE_OK) {
        s_set_error(self, "cannot prepare a statement");
        return VS_ESTORE;
    }
    return VS_OK;
}

static int s_exec(vs_history_t *self, const char *sql)
{
    char *message = NULL;
    if (sqlite3_exec(self->db, sql, NULL, NULL, &message) != SQLITE_OK) {
        snprintf(self->error, sizeof self->error, "%s", message ? message : "unknown error");
        sqlite3_free(message);
        return VS_ESTORE;
    }
    return VS_OK;
}

/*  Runs a statement that returns no row, then resets it.                                     */
static int s_step_done(vs_history_t *self, sqlite3_stmt *statement, const char *what)
{
    int rc = sqlite3_step(statement);
    if (rc != SQLITE_DONE) {
        s_set_error(self, what);
    }
    sqlite3_reset(statement);
    sqlite3_clear_bindings(statement);
    return rc == SQLITE_DONE ? VS_OK : VS_ESTORE;
}

/*  Refuses another program's database, before anything is written to it (the journal mode
    included): a file with tables but no versync schema version.                              */
static int s_refuse_foreign(vs_history_t *self)
{
    sqlite3_stmt *statement = NULL;
    int version = -1, tables = -1;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT (SELECT user_version FROM pragma_user_version),"
                           " (SELECT count(*) FROM sqlite_master)",
                           -1, &statement, NULL) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
        version = sqlite3_column_int(statement, 0);
        tables = sqlite3_column_int(statement, 1);
    }
    sqlite3_finalize(statement);
    if (version < 0 || tables < 0) {
        s_set_error(self, "cannot read the schema");
        return VS_ESTORE;
    }
    if (version == 0 && tables > 0) {
        snprintf(self->error, sizeof self->error,
                 "history.db holds another program's tables (it has no versync schema "
                 "version): not touching it");
        return VS_ESTORE;
    }
    return VS_OK;
}

static int s_create_schema(vs_history_t *self)
{
    sqlite3_stmt *statement = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(self->db, "PRAGMA user_version", -1, &statement, NULL) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
        version = sqlite3_column_int(statement, 0);
    }
    sqlite3_finalize(statement);
    if (version < 0) {
        s_set_error(self, "cannot read the schema version");
        return VS_ESTORE;
    }
    if (version > S_SCHEMA_VERSION) {
        snprintf(self->error, sizeof self->error,
                 "history.db has schema version %d; this broker knows up to %d", version,
                 S_SCHEMA_VERSION);
        return VS_ESTORE;
    }
    return s_exec(self, "BEGIN IMMEDIATE;"
                        "CREATE TABLE IF NOT EXISTS streams ("
                        "  id INTEGER PRIMARY KEY,"
                        "  name TEXT UNIQUE NOT NULL,"
                        "  head INTEGER NOT NULL,"
                        "  head_hash BLOB NOT NULL);"
                        "CREATE TABLE IF NOT EXISTS changesets ("
                        "  id INTEGER PRIMARY KEY,"
                        "  stream INTEGER NOT NULL,"
                        "  seq INTEGER NOT NULL,"
                        "  hash BLOB NOT NULL,"
                        "  payload BLOB NOT NULL,"
                        "  UNIQUE (stream, seq));"
                        "CREATE TABLE IF NOT EXISTS publishers ("
                        "  stream INTEGER NOT NULL,"
                        "  publisher TEXT NOT NULL,"
                        "  last_version INTEGER NOT NULL,"
                        "  PRIMARY KEY (stream, publisher)) WITHOUT ROWID;"
                        "PRAGMA user_version = 1;"
                        "COMMIT;");
}

/*  Loads one stream's publishers.                                                             */
static int s_load_publishers(vs_history_t *self, s_stream_t *stream)
{
    int status = VS_ESTORE;
    sqlite3_stmt *statement = NULL;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT publisher, last_version FROM publishers WHERE stream = ?", -1,
                           &statement, NULL) != SQLITE_OK) {
        s_set_error(self, "cannot read publishers");
        goto cleanup;
    }
    sqlite3_bind_int64(statement, 1, stream->id);
    int rc;
    while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
        const char *id = (const char *) sqlite3_column_text(statement, 0);
        size_t id_size = (size_t) sqlite3_column_bytes(statement, 0);
        if (!id || !s_publisher_id_valid(id, id_size)) {
            snprintf(self->error, sizeof self->error,
                     "history.db is inconsistent: stream '%s' has an invalid publisher id",
                     stream->name);
            goto cleanup;
        }
        s_publisher_t *publisher = (s_publisher_t *) calloc(1, sizeof *publisher);
        if (!publisher) {
            status = VS_ENOMEM;
            snprintf(self->error, sizeof self->error, "out of memory");
            goto cleanup;
        }
        memcpy(publisher->id, id, id_size);
        publisher->id_size = id_size;
        publisher->stream = stream;
        publisher->last_version = (uint64_t) sqlite3_column_int64(statement, 1);
        publisher->committed_last_version = publisher->last_version;
        publisher->persisted = true;
        if (zhashx_insert(stream->publishers, publisher->id, publisher) != 0) {
            free(publisher);
            snprintf(self->error, sizeof self->error,
                     "history.db is inconsistent: stream '%s' lists a publisher twice",
                     stream->name);
            goto cleanup;
        }
    }
    if (rc != SQLITE_DONE) {
        s_set_error(self, "cannot read publishers");
        goto cleanup;
    }
    status = VS_OK;
cleanup:
    sqlite3_finalize(statement);
    return status;
}

/*  Checks that the stream's stored sets are exactly 1..head and end with head_hash.          */
static int s_check_stream(vs_history_t *self, const s_stream_t *stream)
{
    int status = VS_ESTORE;
    sqlite3_stmt *statement = NULL;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT count(*), ifnull(min(seq), 0), ifnull(max(seq), 0),"
                           " (SELECT hash FROM changesets WHERE stream = ?1"
                           "  ORDER BY seq DESC LIMIT 1)"
                           " FROM changesets WHERE stream = ?1",
                           -1, &statement, NULL) != SQLITE_OK ||
        (sqlite3_bind_int64(statement, 1, stream->id), sqlite3_step(statement)) != SQLITE_ROW) {
        s_set_error(self, "cannot check the history");
        goto cleanup;
    }
    uint64_t count = (uint64_t) sqlite3_column_int64(statement, 0);
    uint64_t lowest = (uint64_t) sqlite3_column_int64(statement, 1);
    uint64_t highest = (uint64_t) sqlite3_column_int64(statement, 2);
    const void *hash = sqlite3_column_blob(statement, 3);
    size_t hash_size = (size_t) sqlite3_column_bytes(statement, 3);
    if (count != stream->head || highest != stream->head || (count > 0 && lowest != 1)) {
        snprintf(self->error, sizeof self->error,
                 "history.db is inconsistent: stream '%s' has head %llu but %llu sets from %llu "
                 "to %llu",
                 stream->name, (unsigned long long) stream->head, (unsigned long long) count,
                 (unsigned long long) lowest, (unsigned long long) highest);
        goto cleanup;
    }
    if (count == 0 ? memcmp(stream->hash, s_zero_hash, VS_HASH_SIZE) != 0
                   : (hash_size != VS_HASH_SIZE || memcmp(hash, stream->hash, VS_HASH_SIZE) != 0)) {
        snprintf(self->error, sizeof self->error,
                 "history.db is inconsistent: stream '%s' head hash differs from set %llu",
                 stream->name, (unsigned long long) stream->head);
        goto cleanup;
    }
    status = VS_OK;
cleanup:
    sqlite3_finalize(statement);
    return status;
}

static int s_load_streams(vs_history_t *self)
{
    int status = VS_ESTORE;
    sqlite3_stmt *statement = NULL;
    if (sqlite3_prepare_v2(self->db, "SELECT id, name, head, head_hash FROM streams", -1,
                           &statement, NULL) != SQLITE_OK) {
        s_set_error(self, "cannot read streams");
        goto cleanup;
    }
    int rc;
    while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
        const char *name = (const char *) sqlite3_column_text(statement, 1);
        size_t name_size = (size_t) sqlite3_column_bytes(statement, 1);
        const void *hash = sqlite3_column_blob(statement, 3);
        size_t hash_size = (size_t) sqlite3_column_bytes(statement, 3);
        if (!name || !vs_stream_name_valid(name, name_size) || !hash || hash_size != VS_HASH_SIZE) {
            snprintf(self->error, sizeof self->error,
                     "history.db is inconsistent: a stream row has an invalid name or hash");
            goto cleanup;
        }
        s_stream_t *stream = s_stream_new(name, name_size);
        if (!stream) {
            status = VS_ENOMEM;
            snprintf(self->error, sizeof self->error, "out of memory");
            goto cleanup;
        }
        stream->id = sqlite3_column_int64(statement, 0);
        stream->head = (uint64_t) sqlite3_column_int64(statement, 2);
        memcpy(stream->hash, hash, VS_HASH_SIZE);
        stream->committed_head = stream->head;
        memcpy(stream->committed_hash, stream->hash, VS_HASH_SIZE);
        stream->persisted = true;
        if (zhashx_insert(self->streams, stream->name, stream) != 0) {
            void *item = stream;
            s_stream_destroy(&item);
            snprintf(self->error, sizeof self->error,
                     "history.db is inconsistent: a stream is listed twice");
            goto cleanup;
        }
        status = s_check_stream(self, stream);
        if (status == VS_OK) {
            status = s_load_publishers(self, stream);
        }
        if (status != VS_OK) {
            goto cleanup;
        }
        status = VS_ESTORE;
    }
    if (rc != SQLITE_DONE) {
        s_set_error(self, "cannot read streams");
        goto cleanup;
    }
    status = VS_OK;
cleanup:
    sqlite3_finalize(statement);
    return status;
}

/*  Counts the WAL's pages after every commit. Registering it also turns off SQLite's automatic
    checkpoint, which would otherwise run inside the COMMIT that precedes an ACK.             */
static int s_wal_hook(void *arg, sqlite3 *db, const char *database, int pages)
{
    (void) db;
    (void) database;
    vs_history_t *self = (vs_history_t *) arg;
    self->wal_pages = pages;
    return SQLITE_OK;
}

/*  Writes zeros past the end of the WAL file up to the size the log reaches between two
    checkpoints, so that commits overwrite blocks the file already has instead of appending:
    an fdatasync after an append must also write the inode, a second I/O before the ACK. A
    zeroed frame (page number 0, no matching salt) is never valid, so SQLite ignores the zeros
    as it ignores the stale frames that follow the log's end after every restart. Best effort:
    a failure only leaves the log to grow as it would anyway.                               */
static void s_wal_reserve(vs_history_t *self)
{
    static const char zeros[64 * 1024];
    sqlite3_file *wal = NULL;
    sqlite3_int64 size = 0;
    int page_size = 0;
    sqlite3_stmt *statement = NULL;
    if (sqlite3_prepare_v2(self->db, "PRAGMA page_size", -1, &statement, NULL) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
        page_size = sqlite3_column_int(statement, 0);
    }
    sqlite3_finalize(statement);
    /*  In WAL mode this is the WAL file (sqlite3PagerJrnlFile).                              */
    if (page_size <= 0 || page_size > 65536 ||
        sqlite3_file_control(self->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK ||
        !wal || !wal->pMethods || wal->pMethods->xFileSize(wal, &size) != SQLITE_OK) {
        return;
    }
    /*  32-byte header, then frames of a 24-byte header and one page.                          */
    sqlite3_int64 target =
        32 + (sqlite3_int64) (S_CHECKPOINT_PAGES + S_CHECKPOINT_PAGES / 4) * (24 + page_size);
    if (size >= target) {
        return;
    }
    for (sqlite3_int64 offset = size; offset < target; offset += (sqlite3_int64) sizeof zeros) {
        sqlite3_int64 left = target - offset;
        int amount = left < (sqlite3_int64) sizeof zeros ? (int) left : (int) sizeof zeros;
        if (wal->pMethods->xWrite(wal, zeros, amount, offset) != SQLITE_OK) {
            return;
        }
    }
    wal->pMethods->xSync(wal, SQLITE_SYNC_FULL);
}

int vs_history_open(const char *data_dir, const vs_logger_t *logger, vs_history_t **self_p,
                    char *why, size_t why_size)
{
    int status = VS_ESTORE;
    char path[S_PATH_MAX];
    vs_history_t *self = NULL;
    *self_p = NULL;
    if (!data_dir || !*data_dir) {
        snprintf(why, why_size, "no data folder given");
        return VS_EINVAL;
    }
    if (s_mkdir_p(data_dir) != 0) {
        snprintf(why, why_size, "cannot create data folder '%s': %s", data_dir, strerror(errno));
        return VS_ESTORE;
    }
    if ((size_t) snprintf(path, sizeof path, "%s/history.db", data_dir) >= sizeof path) {
        snprintf(why, why_size, "data folder path is too long");
        return VS_EINVAL;
    }
    self = (vs_history_t *) calloc(1, sizeof *self);
    if (!self) {
        snprintf(why, why_size, "out of memory");
        return VS_ENOMEM;
    }
    self->logger = logger;
    self->lock_fd = -1;
    /* One broker per data folder: two would hand out the same sequence numbers.             */
    char lock_path[S_PATH_MAX];
    snprintf(lock_path, sizeof lock_path, "%s/broker.lock", data_dir);
    self->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0) {
        snprintf(self->error, sizeof self->error, "cannot open '%s': %s", lock_path,
                 strerror(errno));
        goto cleanup;
    }
    if (flock(self->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(self->error, sizeof self->error, "data folder '%s' is in use by another broker%s",
                 data_dir, errno == EWOULDBLOCK ? "" : " (cannot lock it)");
        goto cleanup;
    }
    self->streams = zhashx_new();
    if (!self->streams) {
        status = VS_ENOMEM;
        snprintf(self->error, sizeof self->error, "out of memory");
        goto cleanup;
    }
    zhashx_set_destructor(self->streams, s_stream_destroy);
    if (sqlite3_open_v2(path, &self->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(self->error, sizeof self->error, "cannot open '%s': %s", path,
                 self->db ? sqlite3_errmsg(self->db) : "out of memory");
        goto cleanup;
    }
    sqlite3_extended_result_codes(self->db, 1);
    sqlite3_busy_timeout(self->db, S_BUSY_TIMEOUT_MS);
    if (s_refuse_foreign(self) != VS_OK) {
        goto cleanup;
    }
    {
        sqlite3_stmt *statement = NULL;
        bool wal = false;
        if (sqlite3_prepare_v2(self->db, "PRAGMA journal_mode=WAL", -1, &statement, NULL) ==
                SQLITE_OK &&
            sqlite3_step(statement) == SQLITE_ROW) {
            const char *mode = (const char *) sqlite3_column_text(statement, 0);
            wal = mode && strcmp(mode, "wal") == 0;
        }
        sqlite3_finalize(statement);
        if (!wal) {
            snprintf(self->error, sizeof self->error, "cannot open '%s' in WAL mode: %s", path,
                     sqlite3_errmsg(self->db));
            goto cleanup;
        }
    }
    if (s_exec(self, "PRAGMA synchronous=FULL") != VS_OK || s_create_schema(self) != VS_OK) {
        goto cleanup;
    }
    sqlite3_wal_hook(self->db, s_wal_hook, self);
    if (s_prepare(self, &self->begin, "BEGIN IMMEDIATE") != VS_OK ||
        s_prepare(self, &self->commit, "COMMIT") != VS_OK ||
        s_prepare(self, &self->rollback, "ROLLBACK") != VS_OK ||
        s_prepare(self, &self->insert_stream,
                  "INSERT INTO streams (name, head, head_hash) VALUES (?, 0, ?)") != VS_OK ||
        s_prepare(self, &self->update_stream,
                  "UPDATE streams SET head = ?, head_hash = ? WHERE id = ?") != VS_OK ||
        s_prepare(self, &self->insert_changeset,
                  "INSERT INTO changesets (stream, seq, hash, payload) VALUES (?, ?, ?, ?)") !=
            VS_OK ||
        s_prepare(self, &self->upsert_publisher,
                  "INSERT INTO publishers (stream, publisher, last_version) VALUES (?, ?, ?)"
                  " ON CONFLICT (stream, publisher) DO UPDATE"
                  " SET last_version = excluded.last_version") != VS_OK ||
        s_prepare(self, &self->fetch,
                  "SELECT seq, hash, payload FROM changesets"
                  " WHERE stream = ? AND seq > ? AND seq <= ? ORDER BY seq") != VS_OK) {
        goto cleanup;
    }
    status = s_load_streams(self);
    if (status != VS_OK) {
        goto cleanup;
    }
    s_wal_reserve(self);
    *self_p = self;
    self = NULL;
    status = VS_OK;
cleanup:
    if (self) {
        snprintf(why, why_size, "%s", self->error);
        vs_history_destroy(&self);
    }
    return status;
}

void vs_history_destroy(vs_history_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    vs_history_t *self = *self_p;
    if (self->in_transaction) {
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_finalize(self->begin);
    sqlite3_finalize(self->commit);
    sqlite3_finalize(self->rollback);
    sqlite3_finalize(self->insert_stream);
    sqlite3_finalize(self->update_stream);
    sqlite3_finalize(self->insert_changeset);
    sqlite3_finalize(self->upsert_publisher);
    sqlite3_finalize(self->fetch);
    sqlite3_close(self->db);
    zhashx_destroy(&self->streams);
    free(self->dirty_streams);
    free(self->dirty_publishers);
    free(self->chunk_buffer);
    free(self->chunk_entries);
    if (self->lock_fd >= 0) {
        close(self->lock_fd); /* releases the lock */
    }
    free(self);
    *self_p = NULL;
}

/*  Grows an array of pointers by doubling; returns false when out of memory.                 */
static bool s_grow(void ***array, size_t *capacity, size_t needed)
{
    if (needed <= *capacity) {
        return true;
    }
    size_t grown = *capacity ? *capacity * 2 : 64;
    while (grown < needed) {
        grown *= 2;
    }
    void **bigger = (void **) realloc(*array, grown * sizeof **array);
    if (!bigger) {
        return false;
    }
    *array = bigger;
    *capacity = grown;
    return true;
}

static bool s_mark_stream(vs_history_t *self, s_stream_t *stream)
{
    if (stream->dirty) {
        return true;
    }
    if (!s_grow(&self->dirty_streams, &self->dirty_stream_capacity, self->dirty_stream_count + 1)) {
        return false;
    }
    self->dirty_streams[self->dirty_stream_count++] = stream;
    stream->dirty = true;
    return true;
}

static bool s_mark_publisher(vs_history_t *self, s_publisher_t *publisher)
{
    if (publisher->dirty) {
        return true;
    }
    if (!s_grow(&self->dirty_publishers, &self->dirty_publisher_capacity,
                self->dirty_publisher_count + 1)) {
        return false;
    }
    self->dirty_publishers[self->dirty_publisher_count++] = publisher;
    publisher->dirty = true;
    return true;
}

static int s_begin(vs_history_t *self)
{
    if (self->in_transaction) {
        return self->failed ? VS_ESTORE : VS_OK;
    }
    self->in_transaction = true;
    if (s_step_done(self, self->begin, "cannot begin a transaction") != VS_OK) {
        self->failed = true;
        return VS_ESTORE;
    }
    return VS_OK;
}

/*  Dooms the open batch for want of memory: it rolls back and every set of it is answered
    ESTORE, rather than committed without the set that could not be staged.                   */
static int s_out_of_memory(vs_history_t *self)
{
    self->failed = true;
    snprintf(self->error, sizeof self->error, "out of memory");
    return VS_ENOMEM;
}

/*  Finds or creates (staged) the stream; NULL when out of memory or the database failed.      */
static s_stream_t *s_stream_require(vs_history_t *self, vs_bytes_t name, int *status)
{
    char key[VS_MAX_STREAM_NAME + 1];
    memcpy(key, name.data, name.size);
    key[name.size] = 0;
    s_stream_t *stream = (s_stream_t *) zhashx_lookup(self->streams, key);
    if (stream) {
        return stream;
    }
    *status = s_begin(self);
    if (*status != VS_OK) {
        return NULL;
    }
    stream = s_stream_new(name.data, name.size);
    if (!stream) {
        *status = s_out_of_memory(self); /* else the set is ACKed, never stored */
        return NULL;
    }
    sqlite3_bind_text(self->insert_stream, 1, stream->name, (int) stream->name_size, SQLITE_STATIC);
    sqlite3_bind_blob(self->insert_stream, 2, s_zero_hash, VS_HASH_SIZE, SQLITE_STATIC);
    if (s_step_done(self, self->insert_stream, "cannot create a stream") != VS_OK) {
        void *item = stream;
        s_stream_destroy(&item);
        self->failed = true;
        *status = VS_ESTORE;
        return NULL;
    }
    stream->id = sqlite3_last_insert_rowid(self->db);
    if (zhashx_insert(self->streams, stream->name, stream) != 0) {
        void *item = stream;
        s_stream_destroy(&item);
        *status = s_out_of_memory(self);
        return NULL;
    }
    if (!s_mark_stream(self, stream)) {
        s_delete(self->streams, stream->name); /* its row goes with the doomed batch */
        *status = s_out_of_memory(self);
        return NULL;
    }
    return stream;
}

/*  Looks up stream and publisher (stored or staged) by name, from valid names; key receives
    the publisher id as a string. *stream_p is NULL for an unknown stream, the return value
    NULL for an unknown publisher.                                                            */
static s_publisher_t *s_publisher_find(vs_history_t *self, vs_bytes_t stream_name,
                                       vs_bytes_t publisher_id, s_stream_t **stream_p,
                                       char key[VS_MAX_PUBLISHER_ID + 1])
{
    memcpy(key, publisher_id.data, publisher_id.size);
    key[publisher_id.size] = 0;
    char stream_key[VS_MAX_STREAM_NAME + 1];
    memcpy(stream_key, stream_name.data, stream_name.size);
    stream_key[stream_name.size] = 0;
    *stream_p = (s_stream_t *) zhashx_lookup(self->streams, stream_key);
    return *stream_p ? (s_publisher_t *) zhashx_lookup((*stream_p)->publishers, key) : NULL;
}

int vs_history_append(vs_history_t *self, vs_bytes_t stream_name, vs_bytes_t publisher_id,
                      uint64_t first_version, uint64_t last_version, const void *changeset,
                      size_t size, vs_history_receipt_t *receipt)
{
    memset(receipt, 0, sizeof *receipt);
    if (!vs_stream_name_valid(stream_name.data, stream_name.size) ||
        !s_publisher_id_valid(publisher_id.data, publisher_id.size)) {
        return VS_EINVAL;
    }
    if (self->failed) {
        return VS_ESTORE;
    }
    /* A resend is recognised without touching the database.                              */
    char key[VS_MAX_PUBLISHER_ID + 1];
    s_stream_t *stream = NULL;
    s_publisher_t *publisher = s_publisher_find(self, stream_name, publisher_id, &stream, key);
    if (publisher && last_version <= publisher->last_version) {
        receipt->duplicate = true;
        receipt->seq = stream->head;
        memcpy(receipt->hash, stream->hash, VS_HASH_SIZE);
        return VS_OK;
    }
    if (publisher && first_version > publisher->last_version + 1) {
        receipt->seq = stream->head;
        receipt->last_version = publisher->last_version;
        return VS_EGAP;
    }
    int status = s_begin(self);
    if (status != VS_OK) {
        return status;
    }
    if (!stream) {
        stream = s_stream_require(self, stream_name, &status);
        if (!stream) {
            return status;
        }
    }
    if (!publisher) {
        publisher = (s_publisher_t *) calloc(1, sizeof *publisher);
        if (!publisher) {
            return s_out_of_memory(self);
        }
        memcpy(publisher->id, key, publisher_id.size + 1);
        publisher->id_size = publisher_id.size;
        publisher->stream = stream;
        if (zhashx_insert(stream->publishers, publisher->id, publisher) != 0) {
            free(publisher);
            return s_out_of_memory(self);
        }
    }
    if (!s_mark_stream(self, stream) || !s_mark_publisher(self, publisher)) {
        return s_out_of_memory(self);
    }
    uint64_t seq = stream->head + 1;
    uint8_t hash[VS_HASH_SIZE];
    vs_chain_next(stream->hash, changeset, size, hash);
    sqlite3_bind_int64(self->insert_changeset, 1, stream->id);
    sqlite3_bind_int64(self->insert_changeset, 2, (sqlite3_int64) seq);
    sqlite3_bind_blob(self->insert_changeset, 3, hash, VS_HASH_SIZE, SQLITE_STATIC);
    sqlite3_bind_blob64(self->insert_changeset, 4, changeset, size, SQLITE_STATIC);
    if (s_step_done(self, self->insert_changeset, "cannot store a change set") != VS_OK) {
        self->failed = true;
        return VS_ESTORE;
    }
    stream->head = seq;
    memcpy(stream->hash, hash, VS_HASH_SIZE);
    publisher->last_version = last_version;
    receipt->duplicate = false;
    receipt->seq = seq;
    memcpy(receipt->hash, hash, VS_HASH_SIZE);
    return VS_OK;
}

bool vs_history_pending(const vs_history_t *self)
{
    return self->in_transaction;
}

/*  Ends the batch: keeps (committed) or restores (rolled back) the staged state.             */
static void s_finish_batch(vs_history_t *self, bool committed)
{
    for (size_t index = 0; index < self->dirty_publisher_count; index++) {
        s_publisher_t *publisher = (s_publisher_t *) self->dirty_publishers[index];
        publisher->dirty = false;
        if (committed) {
            publisher->committed_last_version = publisher->last_version;
            publisher->persisted = true;
        } else {
            publisher->last_version = publisher->committed_last_version;
            if (!publisher->persisted) {
                s_delete(publisher->stream->publishers, publisher->id);
            }
        }
    }
    self->dirty_publisher_count = 0;
    for (size_t index = 0; index < self->dirty_stream_count; index++) {
        s_stream_t *stream = (s_stream_t *) self->dirty_streams[index];
        stream->dirty = false;
        if (committed) {
            stream->committed_head = stream->head;
            memcpy(stream->committed_hash, stream->hash, VS_HASH_SIZE);
            stream->persisted = true;
        } else {
            stream->head = stream->committed_head;
            memcpy(stream->hash, stream->committed_hash, VS_HASH_SIZE);
            if (!stream->persisted) {
                s_delete(self->streams, stream->name);
            }
        }
    }
    self->dirty_stream_count = 0;
    self->in_transaction = false;
    self->failed = false;
}

int vs_history_commit(vs_history_t *self)
{
    if (!self->in_transaction) {
        return VS_OK;
    }
    for (size_t index = 0; !self->failed && index < self->dirty_stream_count; index++) {
        s_stream_t *stream = (s_stream_t *) self->dirty_streams[index];
        sqlite3_bind_int64(self->update_stream, 1, (sqlite3_int64) stream->head);
        sqlite3_bind_blob(self->update_stream, 2, stream->hash, VS_HASH_SIZE, SQLITE_STATIC);
        sqlite3_bind_int64(self->update_stream, 3, stream->id);
        if (s_step_done(self, self->update_stream, "cannot update a stream head") != VS_OK) {
            self->failed = true;
        }
    }
    for (size_t index = 0; !self->failed && index < self->dirty_publisher_count; index++) {
        s_publisher_t *publisher = (s_publisher_t *) self->dirty_publishers[index];
        sqlite3_bind_int64(self->upsert_publisher, 1, publisher->stream->id);
        sqlite3_bind_text(self->upsert_publisher, 2, publisher->id, (int) publisher->id_size,
                          SQLITE_STATIC);
        sqlite3_bind_int64(self->upsert_publisher, 3, (sqlite3_int64) publisher->last_version);
        if (s_step_done(self, self->upsert_publisher, "cannot update a publisher version") !=
            VS_OK) {
            self->failed = true;
        }
    }
    if (!self->failed && s_step_done(self, self->commit, "cannot commit the history") == VS_OK) {
        s_finish_batch(self, true);
        return VS_OK;
    }
    /* ROLLBACK fails harmlessly when BEGIN did not happen or SQLite rolled back already.     */
    if (sqlite3_get_autocommit(self->db) == 0) {
        sqlite3_step(self->rollback);
        sqlite3_reset(self->rollback);
    }
    s_finish_batch(self, false);
    return VS_ESTORE;
}

int vs_history_checkpoint(vs_history_t *self)
{
    if (self->in_transaction || self->wal_pages < S_CHECKPOINT_PAGES) {
        return VS_OK;
    }
    int logged = 0;
    int copied = 0;
    int rc =
        sqlite3_wal_checkpoint_v2(self->db, "main", SQLITE_CHECKPOINT_PASSIVE, &logged, &copied);
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
        return VS_OK; /* another connection checkpoints or holds a lock: try again later    */
    }
    if (rc != SQLITE_OK) {
        s_set_error(self, "cannot checkpoint the history");
        return VS_ESTORE;
    }
    /*  When every frame is copied the next commit starts the WAL over: count from zero.       */
    self->wal_pages = copied == logged ? 0 : logged;
    return VS_OK;
}

static s_stream_t *s_stream_find(vs_history_t *self, vs_bytes_t name)
{
    if (!vs_stream_name_valid(name.data, name.size)) {
        return NULL;
    }
    char key[VS_MAX_STREAM_NAME + 1];
    memcpy(key, name.data, name.size);
    key[name.size] = 0;
    return (s_stream_t *) zhashx_lookup(self->streams, key);
}

int vs_history_fetch(vs_history_t *self, vs_bytes_t stream_name, uint64_t since, uint64_t max_bytes,
                     vs_history_chunk_t *chunk)
{
    assert(!self->in_transaction);
    memset(chunk, 0, sizeof *chunk);
    s_stream_t *stream = s_stream_find(self, stream_name);
    if (stream) {
        chunk->head = stream->committed_head;
        memcpy(chunk->head_hash, stream->committed_hash, VS_HASH_SIZE);
    }
    if (since > chunk->head) {
        return VS_EBEHIND;
    }
    if (since == chunk->head) {
        return VS_OK;
    }
    if (max_bytes == 0) {
        max_bytes = VS_DEFAULT_CHUNK_BYTES;
    }
    if (max_bytes > S_MAX_CHUNK_BYTES) {
        max_bytes = S_MAX_CHUNK_BYTES;
    }
    /* Do not keep a huge buffer from an earlier big answer.                                  */
    if (self->chunk_buffer_capacity > 2 * S_MAX_CHUNK_BYTES) {
        free(self->chunk_buffer);
        self->chunk_buffer = NULL;
        self->chunk_buffer_capacity = 0;
    }
    int status = VS_ESTORE;
    size_t count = 0;
    size_t used = 0;
    sqlite3_bind_int64(self->fetch, 1, stream->id);
    sqlite3_bind_int64(self->fetch, 2, (sqlite3_int64) since);
    sqlite3_bind_int64(self->fetch, 3, (sqlite3_int64) chunk->head);
    int rc = SQLITE_DONE;
    while (count < VS_MAX_CHUNK_ENTRIES && (rc = sqlite3_step(self->fetch)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t) sqlite3_column_int64(self->fetch, 0);
        const void *hash = sqlite3_column_blob(self->fetch, 1);
        size_t hash_size = (size_t) sqlite3_column_bytes(self->fetch, 1);
        const void *payload = sqlite3_column_blob(self->fetch, 2);
        size_t size = (size_t) sqlite3_column_bytes(self->fetch, 2);
        if (seq != since + 1 + count || hash_size != VS_HASH_SIZE || size == 0 || !payload ||
            size > VS_MAX_CHANGESET) {
            snprintf(self->error, sizeof self->error,
                     "history.db is inconsistent: stream '%s' set %llu is missing or damaged",
                     stream->name, (unsigned long long) (since + 1 + count));
            goto cleanup;
        }
        if (count > 0 && (used - count * VS_HASH_SIZE) + size > max_bytes) {
            break;
        }
        if (count == self->chunk_entry_capacity) {
            size_t grown = self->chunk_entry_capacity ? self->chunk_entry_capacity * 2 : 256;
            vs_entry_t *entries =
                (vs_entry_t *) realloc(self->chunk_entries, grown * sizeof *entries);
            if (!entries) {
                status = VS_ENOMEM;
                goto cleanup;
            }
            self->chunk_entries = entries;
            self->chunk_entry_capacity = grown;
        }
        if (used + VS_HASH_SIZE + size > self->chunk_buffer_capacity) {
            size_t grown = self->chunk_buffer_capacity ? self->chunk_buffer_capacity : 65536;
            while (grown < used + VS_HASH_SIZE + size) {
                grown *= 2;
            }
            uint8_t *buffer = (uint8_t *) realloc(self->chunk_buffer, grown);
            if (!buffer) {
                status = VS_ENOMEM;
                goto cleanup;
            }
            self->chunk_buffer = buffer;
            self->chunk_buffer_capacity = grown;
        }
        memcpy(self->chunk_buffer + used, hash, VS_HASH_SIZE);
        memcpy(self->chunk_buffer + used + VS_HASH_SIZE, payload, size);
        vs_entry_t *entry = &self->chunk_entries[count];
        entry->seq = seq;
        entry->hash.size = VS_HASH_SIZE;
        entry->changeset.size = size;
        used += VS_HASH_SIZE + size;
        count++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        s_set_error(self, "cannot read the history");
        goto cleanup;
    }
    if (count == 0) {
        snprintf(self->error, sizeof self->error,
                 "history.db is inconsistent: stream '%s' set %llu is missing", stream->name,
                 (unsigned long long) (since + 1));
        goto cleanup;
    }
    /* The buffer may have moved while growing: point the entries at it only now.             */
    size_t offset = 0;
    for (size_t index = 0; index < count; index++) {
        vs_entry_t *entry = &self->chunk_entries[index];
        entry->hash.data = (const char *) self->chunk_buffer + offset;
        entry->changeset.data = (const char *) self->chunk_buffer + offset + VS_HASH_SIZE;
        offset += VS_HASH_SIZE + entry->changeset.size;
    }
    chunk->entry_count = count;
    chunk->entries = self->chunk_entries;
    status = VS_OK;
cleanup:
    sqlite3_reset(self->fetch);
    sqlite3_clear_bindings(self->fetch);
    return status;
}

bool vs_history_knows(vs_history_t *self, vs_bytes_t stream_name, vs_bytes_t publisher_id)
{
    if (!vs_stream_name_valid(stream_name.data, stream_name.size) ||
        !s_publisher_id_valid(publisher_id.data, publisher_id.size)) {
        return false;
    }
    char key[VS_MAX_PUBLISHER_ID + 1];
    s_stream_t *stream = NULL;
    return s_publisher_find(self, stream_name, publisher_id, &stream, key) != NULL;
}

size_t vs_history_stream_count(const vs_history_t *self)
{
    return zhashx_size(self->streams);
}

void vs_history_each_stream(vs_history_t *self, vs_history_stream_fn *fn, void *arg)
{
    for (s_stream_t *stream = (s_stream_t *) zhashx_first(self->streams); stream;
         stream = (s_stream_t *) zhashx_next(self->streams)) {
        if (stream->persisted) {
            fn(arg, stream->name, stream->committed_head, stream->committed_hash);
        }
    }
}

static int s_compare_streams(const void *left, const void *right)
{
    const s_stream_t *a = *(const s_stream_t *const *) left;
    const s_stream_t *b = *(const s_stream_t *const *) right;
    return strcmp(a->name, b->name);
}

static int s_compare_publishers(const void *left, const void *right)
{
    const vs_publisher_info_t *a = (const vs_publisher_info_t *) left;
    const vs_publisher_info_t *b = (const vs_publisher_info_t *) right;
    size_t size = a->id.size < b->id.size ? a->id.size : b->id.size;
    int order = memcmp(a->id.data, b->id.data, size);
    if (order != 0) {
        return order;
    }
    return a->id.size < b->id.size ? -1 : a->id.size > b->id.size ? 1 : 0;
}

int vs_history_status(vs_history_t *self, vs_stream_info_t **streams_p, size_t *count_p)
{
    int status = VS_ENOMEM;
    size_t total = zhashx_size(self->streams);
    s_stream_t **sorted = NULL;
    vs_stream_info_t *infos = NULL;
    size_t count = 0;
    *streams_p = NULL;
    *count_p = 0;
    sorted = (s_stream_t **) calloc(total ? total : 1, sizeof *sorted);
    if (!sorted) {
        goto cleanup;
    }
    for (s_stream_t *stream = (s_stream_t *) zhashx_first(self->streams); stream;
         stream = (s_stream_t *) zhashx_next(self->streams)) {
        if (stream->persisted && count < total) {
            sorted[count++] = stream;
        }
    }
    qsort(sorted, count, sizeof *sorted, s_compare_streams);
    if (count > VS_MAX_STATUS_STREAMS) {
        count = VS_MAX_STATUS_STREAMS;
    }
    infos = (vs_stream_info_t *) calloc(count ? count : 1, sizeof *infos);
    if (!infos) {
        goto cleanup;
    }
    for (size_t index = 0; index < count; index++) {
        s_stream_t *stream = sorted[index];
        vs_stream_info_t *info = &infos[index];
        info->name.data = stream->name;
        info->name.size = stream->name_size;
        info->head = stream->committed_head;
        info->hash.data = (const char *) stream->committed_hash;
        info->hash.size = VS_HASH_SIZE;
        size_t publisher_total = zhashx_size(stream->publishers);
        info->publishers = (vs_publisher_info_t *) calloc(publisher_total ? publisher_total : 1,
                                                          sizeof *info->publishers);
        if (!info->publishers) {
            vs_history_status_free(&infos, index);
            goto cleanup;
        }
        size_t publisher_count = 0;
        for (s_publisher_t *publisher = (s_publisher_t *) zhashx_first(stream->publishers);
             publisher; publisher = (s_publisher_t *) zhashx_next(stream->publishers)) {
            if (publisher->persisted && publisher_count < VS_MAX_STATUS_PUBLISHERS &&
                publisher_count < publisher_total) {
                vs_publisher_info_t *entry = &info->publishers[publisher_count++];
                entry->id.data = publisher->id;
                entry->id.size = publisher->id_size;
                entry->last_version = publisher->committed_last_version;
            }
        }
        qsort(info->publishers, publisher_count, sizeof *info->publishers, s_compare_publishers);
        info->publisher_count = publisher_count;
    }
    *streams_p = infos;
    *count_p = count;
    infos = NULL;
    status = VS_OK;
cleanup:
    free(sorted);
    free(infos);
    return status;
}

void vs_history_status_free(vs_stream_info_t **streams, size_t count)
{
    if (!streams || !*streams) {
        return;
    }
    for (size_t index = 0; index < count; index++) {
        free((*streams)[index].publishers);
    }
    free(*streams);
    *streams = NULL;
}

const char *vs_history_error(const vs_history_t *self)
{
    return self->error[0] ? self->error : "no error";
}
