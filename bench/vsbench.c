/*  vsbench.c - the benchmark driver: the timing-sensitive parts of bench/run.sh.

    One program with subcommands. Each talks to a master and a slave that are either SQLite
    files (--kind sqlite: versync's master and slave) or PostgreSQL databases (--kind pg: a libpq
    conninfo for the publisher cluster and one for the subscriber cluster), writes the workload
    on the master, polls the slave on a second connection, and prints its figures as
    "key value" lines on stdout for run.sh to collect. Every workload uses the same table:

        items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT,
               updated INTEGER)

    and the same rows, made by row_make() from the id alone.

      init      --kind K --db CONN                         create items and warm (empty)
      ready     --kind K --master CONN --slave CONN        a row in warm reaches the slave
      bulk      ... --rows N --txn T                       W1: N inserts in T-row transactions
      latency   ... --commits N --interval-ms I            W2: single-row commits, tight poll
      hot       ... --rows R --updates U --txn T           W5: U updates over R rows
      replica   --kind K --slave CONN --rows N [--master CONN] (--exec SQL | -- command...)
                                                           W3: time until a new slave has N rows
      apply-limit --db FILE --rows N --txn T [--per-statement K]
                                                           raw SQLite upsert rate, K rows a
                                                           statement (default 1)
      curve-limit --rows N [--message-size B]              raw ZeroMQ CURVE PUSH/PULL rate
      sample    --pid PID...                               VmHWM (kB) and CPU seconds of PIDs
      triggers  --db FILE                                  wait until a publisher has installed
                                                           its capture triggers on items

    bulk and hot take --capture writer (SQLite only): the master's connection attaches a
    vs_writer (publisher/vs_writer.h), which logs the changed keys itself instead of the
    triggers; vsbench must then be built with -DVSBENCH_WRITER and libvs_publisher.a.

    Common options: --timeout S (default 600), --watch PID (a process whose CPU time over the
    measured interval and peak RSS are reported; repeatable), --watch-tree PID (a process and
    its children, sampled every 20 ms: the largest peak RSS of any one of them; for PostgreSQL,
    whose workers come and go).
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <libpq-fe.h>
#include <sqlite3.h>
#include <zmq.h>
#ifdef VSBENCH_WRITER
#include "vs_writer.h"
#endif

#define MAX_WATCH 16

/* ------------------------------------------------------------------ utilities */

static void die(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "vsbench: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
    if (ns <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ rows */

typedef struct {
    int64_t id;
    char name[32];
    int64_t qty;
    double price;
    char note[96];
    int64_t updated;
} row_t;

static void row_make(row_t *row, int64_t id)
{
    row->id = id;
    snprintf(row->name, sizeof row->name, "item-%08" PRId64, id);
    row->qty = id % 1000;
    row->price = (double)(id % 100000) / 100.0;
    snprintf(row->note, sizeof row->note, "note %" PRId64 ": the quick brown fox jumps over it",
             id * 7919 % 1000003);
    row->updated = 1700000000 + id;
}

/* Bytes of one UPSERT change of this row in a versync change set (protocol.md section 5):
   [table, op, [values...]] in msgpack. Used to size the transport limit. */
static size_t msgpack_int_size(int64_t v)
{
    if (v >= 0) {
        return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v < 4294967296LL ? 5 : 9;
    }
    return v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= -2147483648LL ? 5 : 9;
}

static size_t msgpack_str_size(size_t n)
{
    return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
}

static size_t row_change_size(const row_t *row)
{
    return 1 + 1 + 1 + 1 + msgpack_int_size(row->id) + msgpack_str_size(strlen(row->name))
           + msgpack_int_size(row->qty) + 9 + msgpack_str_size(strlen(row->note))
           + msgpack_int_size(row->updated);
}

/* ------------------------------------------------------------------ process watching */

typedef struct {
    pid_t pids[MAX_WATCH];
    int count;
    long ticks_start[MAX_WATCH];
    double self_start_s; /* this process's user + system CPU at watch_start */
    pid_t tree_root;        /* 0: none */
    long tree_peak_kb;      /* largest VmHWM of one process in the tree */
    int64_t last_sample_ns;
} watch_t;

static watch_t g_watch;

static long proc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "r");
    if (!file) {
        return -1;
    }
    long value = -1;
    size_t length = strlen(field);
    while (fgets(line, sizeof line, file)) {
        if (strncmp(line, field, length) == 0 && line[length] == ':') {
            value = atol(line + length + 1);
            break;
        }
    }
    fclose(file);
    return value;
}

/* utime + stime in clock ticks, and the parent pid; -1 if gone. */
static long proc_ticks(pid_t pid, pid_t *parent)
{
    char path[64], buffer[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buffer, sizeof buffer - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buffer[n] = 0;
    char *p = strrchr(buffer, ')'); /* the command name may hold spaces */
    if (!p) {
        return -1;
    }
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
       stime */
    char state;
    int ppid;
    long skip, utime, stime;
    if (sscanf(p + 2, "%c %d %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld", &state, &ppid, &skip,
               &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &utime, &stime)
        != 13) {
        return -1;
    }
    if (parent) {
        *parent = ppid;
    }
    return utime + stime;
}

/* True when the process has exited (gone, or a zombie waiting for its parent). */
static bool process_gone(pid_t pid)
{
    if (kill(pid, 0) != 0 && errno == ESRCH) {
        return true;
    }
    char path[64], state = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "r");
    if (file) {
        char buffer[512];
        size_t n = fread(buffer, 1, sizeof buffer - 1, file);
        buffer[n] = 0;
        char *p = strrchr(buffer, ')');
        state = p && p[1] ? p[2] : 0;
        fclose(file);
    }
    return state == 'Z';
}

/* Dies when a watched process has gone: a wait would otherwise last until the timeout. */
static void watch_alive(void)
{
    for (int i = 0; i < g_watch.count; i++) {
        if (process_gone(g_watch.pids[i])) {
            fprintf(stderr, "vsbench: watched process %d has exited\n", (int)g_watch.pids[i]);
            exit(1);
        }
    }
}

static void watch_sample_tree(void)
{
    if (!g_watch.tree_root) {
        return;
    }
    int64_t now = now_ns();
    if (now - g_watch.last_sample_ns < 20000000) {
        return;
    }
    g_watch.last_sample_ns = now;
    DIR *dir = opendir("/proc");
    if (!dir) {
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') {
            continue;
        }
        pid_t pid = atoi(entry->d_name), parent = 0;
        if (pid != g_watch.tree_root
            && (proc_ticks(pid, &parent) < 0 || parent != g_watch.tree_root)) {
            continue;
        }
        long kb = proc_status_kb(pid, "VmHWM");
        if (kb > g_watch.tree_peak_kb) {
            g_watch.tree_peak_kb = kb;
        }
    }
    closedir(dir);
}

/* User + system CPU seconds of this process (the writer, in W1 and W5). */
static double self_cpu_s(void)
{
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0) {
        return 0;
    }
    return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
           + (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

static void watch_start(void)
{
    g_watch.self_start_s = self_cpu_s();
    for (int i = 0; i < g_watch.count; i++) {
        g_watch.ticks_start[i] = proc_ticks(g_watch.pids[i], NULL);
    }
    g_watch.last_sample_ns = 0;
    watch_sample_tree();
}

/* Prints cpu_s.<i> and peak_rss_kb.<i> for each watched pid (in --watch order),
   tree_peak_rss_kb, and self_cpu_s: this process's CPU since watch_start. */
static void watch_report(void)
{
    printf("self_cpu_s %.2f\n", self_cpu_s() - g_watch.self_start_s);
    double hz = (double)sysconf(_SC_CLK_TCK);
    for (int i = 0; i < g_watch.count; i++) {
        long ticks = proc_ticks(g_watch.pids[i], NULL);
        if (ticks >= 0 && g_watch.ticks_start[i] >= 0) {
            printf("cpu_s.%d %.2f\n", i, (double)(ticks - g_watch.ticks_start[i]) / hz);
        }
        printf("peak_rss_kb.%d %ld\n", i, proc_status_kb(g_watch.pids[i], "VmHWM"));
    }
    if (g_watch.tree_root) {
        g_watch.last_sample_ns = 0;
        watch_sample_tree();
        printf("tree_peak_rss_kb %ld\n", g_watch.tree_peak_kb);
    }
}

/* ------------------------------------------------------------------ databases */

typedef enum { KIND_SQLITE, KIND_PG } kind_t;

typedef struct {
    kind_t kind;
    const char *conn;
    sqlite3 *sq;
    sqlite3_stmt *insert, *update, *has, *max, *updated_of, *warm_insert, *warm_has;
    PGconn *pg;
    bool pg_insert_prepared;
    bool pg_update_prepared;
#ifdef VSBENCH_WRITER
    vs_writer_t *writer; /* --capture writer: logs the master's changed keys itself */
#endif
} db_t;

static void sq_check(db_t *db, int code, const char *what)
{
    if (code != SQLITE_OK && code != SQLITE_DONE && code != SQLITE_ROW) {
        die("sqlite %s on '%s': %s", what, db->conn, sqlite3_errmsg(db->sq));
    }
}

static void pg_check(db_t *db, PGresult *result, const char *what)
{
    ExecStatusType status = PQresultStatus(result);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        die("postgres %s: %s", what, PQerrorMessage(db->pg));
    }
}

static void db_exec(db_t *db, const char *sql)
{
    if (db->kind == KIND_SQLITE) {
        char *error = NULL;
        if (sqlite3_exec(db->sq, sql, NULL, NULL, &error) != SQLITE_OK) {
            die("sqlite '%s' on '%s': %s", sql, db->conn, error ? error : "?");
        }
    } else {
        PGresult *result = PQexec(db->pg, sql);
        pg_check(db, result, sql);
        PQclear(result);
    }
}

static void db_pg_prepare(db_t *db, const char *name, const char *sql, int params)
{
    PGresult *result = PQprepare(db->pg, name, sql, params, NULL);
    pg_check(db, result, name);
    PQclear(result);
}

/* Opens a connection. A slave SQLite file may not exist yet: retried until the deadline. */
static void db_open(db_t *db, kind_t kind, const char *conn, bool create, int64_t deadline)
{
    memset(db, 0, sizeof *db);
    db->kind = kind;
    db->conn = conn;
    if (kind == KIND_PG) {
        for (;;) {
            db->pg = PQconnectdb(conn);
            if (PQstatus(db->pg) == CONNECTION_OK) {
                break;
            }
            if (now_ns() > deadline) {
                die("cannot connect to '%s': %s", conn, PQerrorMessage(db->pg));
            }
            PQfinish(db->pg);
            sleep_ns(50000000);
        }
        PGresult *result = PQexec(db->pg, "SET client_min_messages = warning");
        PQclear(result);
        return;
    }
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    for (;;) {
        int code = sqlite3_open_v2(conn, &db->sq, flags, NULL);
        if (code == SQLITE_OK) {
            break;
        }
        sqlite3_close(db->sq);
        db->sq = NULL;
        if (now_ns() > deadline) {
            die("cannot open '%s': %s", conn, sqlite3_errstr(code));
        }
        sleep_ns(5000000);
    }
    sqlite3_busy_timeout(db->sq, 10000);
}

static void db_close(db_t *db)
{
#ifdef VSBENCH_WRITER
    vs_writer_detach(&db->writer);
#endif
    sqlite3_stmt **statements[] = {&db->insert, &db->update, &db->has, &db->max,
                                   &db->updated_of, &db->warm_insert, &db->warm_has};
    for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++) {
        sqlite3_finalize(*statements[i]);
        *statements[i] = NULL;
    }
    if (db->sq) {
        sqlite3_close(db->sq);
        db->sq = NULL;
    }
    if (db->pg) {
        PQfinish(db->pg);
        db->pg = NULL;
    }
}

/* A statement on a slave whose table may not exist yet: NULL until it does. */
static sqlite3_stmt *sq_statement(db_t *db, sqlite3_stmt **slot, const char *sql)
{
    if (!*slot && sqlite3_prepare_v2(db->sq, sql, -1, slot, NULL) != SQLITE_OK) {
        sqlite3_finalize(*slot);
        *slot = NULL;
    }
    return *slot;
}

/* One integer from a one-row query; `missing` when the table is not there yet. */
static int64_t sq_int(db_t *db, sqlite3_stmt **slot, const char *sql, int64_t bind,
                      int64_t missing)
{
    sqlite3_stmt *statement = sq_statement(db, slot, sql);
    if (!statement) {
        return missing;
    }
    if (sqlite3_bind_parameter_count(statement) > 0) {
        sqlite3_bind_int64(statement, 1, bind);
    }
    int64_t value = missing;
    int code = sqlite3_step(statement);
    if (code == SQLITE_ROW) {
        value = sqlite3_column_int64(statement, 0);
    } else if (code != SQLITE_DONE && code != SQLITE_BUSY) {
        /* the schema changed under us (the subscriber created the table): prepare again */
        sqlite3_finalize(*slot);
        *slot = NULL;
    }
    if (*slot) {
        sqlite3_reset(statement);
    }
    return value;
}

static int64_t pg_int(db_t *db, const char *statement_name, const char *sql, int64_t bind,
                      int64_t missing)
{
    char text[32];
    const char *values[1] = {text};
    snprintf(text, sizeof text, "%" PRId64, bind);
    PGresult *result;
    if (statement_name) {
        result = PQexecPrepared(db->pg, statement_name, strchr(sql, '$') ? 1 : 0, values, NULL,
                                NULL, 0);
    } else {
        result = PQexec(db->pg, sql);
    }
    int64_t value = missing;
    if (PQresultStatus(result) == PGRES_TUPLES_OK) {
        if (PQntuples(result) > 0 && !PQgetisnull(result, 0, 0)) {
            value = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
        }
    } else {
        die("postgres '%s': %s", sql, PQerrorMessage(db->pg));
    }
    PQclear(result);
    return value;
}

#define SQL_MAX "SELECT coalesce(max(id), 0) FROM items"
#define SQL_HAS "SELECT count(*) FROM items WHERE id = $1"
#define SQL_HAS_SQ "SELECT count(*) FROM items WHERE id = ?1"
#define SQL_UPDATED "SELECT updated FROM items WHERE id = $1"
#define SQL_UPDATED_SQ "SELECT updated FROM items WHERE id = ?1"

static void db_prepare_slave(db_t *db)
{
    if (db->kind == KIND_PG) {
        db_pg_prepare(db, "max", SQL_MAX, 0);
        db_pg_prepare(db, "has", SQL_HAS, 1);
        db_pg_prepare(db, "updated", SQL_UPDATED, 1);
        db_pg_prepare(db, "warm_has", "SELECT count(*) FROM warm WHERE id = $1", 1);
    }
}

/* The slave's largest id, or -1 while its table does not exist. */
static int64_t slave_max_id(db_t *db)
{
    if (db->kind == KIND_SQLITE) {
        return sq_int(db, &db->max, SQL_MAX, 0, -1);
    }
    return pg_int(db, "max", SQL_MAX, 0, -1);
}

static bool slave_has(db_t *db, int64_t id)
{
    if (db->kind == KIND_SQLITE) {
        return sq_int(db, &db->has, SQL_HAS_SQ, id, 0) > 0;
    }
    return pg_int(db, "has", SQL_HAS, id, 0) > 0;
}

static int64_t slave_updated_of(db_t *db, int64_t id)
{
    if (db->kind == KIND_SQLITE) {
        return sq_int(db, &db->updated_of, SQL_UPDATED_SQ, id, -1);
    }
    return pg_int(db, "updated", SQL_UPDATED, id, -1);
}

static bool slave_warm_has(db_t *db, int64_t id)
{
    if (db->kind == KIND_SQLITE) {
        return sq_int(db, &db->warm_has, "SELECT count(*) FROM warm WHERE id = ?1", id, 0) > 0;
    }
    return pg_int(db, "warm_has", "SELECT count(*) FROM warm WHERE id = $1", id, 0) > 0;
}

/* count, sum(qty), sum(updated), sum(price) in cents: equal on master and slave when the
   slave holds the master's rows. */
static void db_checksum(db_t *db, char *out, size_t size)
{
    const char *sql = db->kind == KIND_SQLITE
                          ? "SELECT count(*), total(qty), total(updated), "
                            "CAST(round(total(price) * 100) AS INTEGER) FROM items"
                          : "SELECT count(*), coalesce(sum(qty), 0), coalesce(sum(updated), 0), "
                            "coalesce(round(sum(price)::numeric * 100), 0) FROM items";
    if (db->kind == KIND_SQLITE) {
        sqlite3_stmt *statement = NULL;
        sq_check(db, sqlite3_prepare_v2(db->sq, sql, -1, &statement, NULL), "checksum");
        sq_check(db, sqlite3_step(statement), "checksum");
        snprintf(out, size, "%lld/%.0f/%.0f/%lld", sqlite3_column_int64(statement, 0),
                 sqlite3_column_double(statement, 1), sqlite3_column_double(statement, 2),
                 sqlite3_column_int64(statement, 3));
        sqlite3_finalize(statement);
    } else {
        PGresult *result = PQexec(db->pg, sql);
        pg_check(db, result, "checksum");
        snprintf(out, size, "%s/%s/%s/%s", PQgetvalue(result, 0, 0), PQgetvalue(result, 0, 1),
                 PQgetvalue(result, 0, 2), PQgetvalue(result, 0, 3));
        PQclear(result);
    }
}

static int64_t count_rows(db_t *db)
{
    if (db->kind == KIND_SQLITE) {
        sqlite3_stmt *statement = NULL;
        int64_t count = sq_int(db, &statement, "SELECT count(*) FROM items", 0, -1);
        sqlite3_finalize(statement);
        return count;
    }
    return pg_int(db, NULL, "SELECT count(*) FROM items", 0, -1);
}

static void db_begin(db_t *db)
{
#ifdef VSBENCH_WRITER
    if (db->writer) {
        if (vs_writer_begin(db->writer) != 0) {
            die("vs_writer_begin: %s", vs_writer_error(db->writer));
        }
        return;
    }
#endif
    db_exec(db, db->kind == KIND_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN");
}

static void db_commit(db_t *db)
{
#ifdef VSBENCH_WRITER
    if (db->writer) {
        if (vs_writer_commit(db->writer) != 0) {
            die("vs_writer_commit: %s", vs_writer_error(db->writer));
        }
        return;
    }
#endif
    db_exec(db, "COMMIT");
}

/* --capture writer: the master's changes are logged by a vs_writer on its connection. */
static void db_attach_writer(db_t *db, bool writer)
{
    if (!writer) {
        return;
    }
    if (db->kind != KIND_SQLITE) {
        die("--capture writer is for a SQLite master");
    }
#ifdef VSBENCH_WRITER
    char error[512];
    if (vs_writer_attach(&db->writer, db->sq, error, sizeof error) != 0) {
        die("vs_writer_attach: %s", error);
    }
#else
    die("--capture writer: vsbench was built without libvs_publisher.a (-DVSBENCH_WRITER)");
#endif
}

/* Inserts rows first..first+count-1 (inside the caller's transaction or in autocommit). */
static void master_insert(db_t *db, int64_t first, int64_t count)
{
    row_t row;
    if (db->kind == KIND_SQLITE) {
        if (!db->insert) {
            sq_check(db,
                     sqlite3_prepare_v2(db->sq, "INSERT INTO items VALUES (?1,?2,?3,?4,?5,?6)",
                                        -1, &db->insert, NULL),
                     "prepare insert");
        }
        for (int64_t id = first; id < first + count; id++) {
            row_make(&row, id);
            sqlite3_bind_int64(db->insert, 1, row.id);
            sqlite3_bind_text(db->insert, 2, row.name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(db->insert, 3, row.qty);
            sqlite3_bind_double(db->insert, 4, row.price);
            sqlite3_bind_text(db->insert, 5, row.note, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(db->insert, 6, row.updated);
            sq_check(db, sqlite3_step(db->insert), "insert");
            sqlite3_reset(db->insert);
        }
        return;
    }
    if (count == 1) { /* W2: one prepared INSERT */
        if (!db->pg_insert_prepared) {
            db_pg_prepare(db, "insert", "INSERT INTO items VALUES ($1,$2,$3,$4,$5,$6)", 6);
            db->pg_insert_prepared = true;
        }
        char texts[6][96];
        const char *values[6];
        row_make(&row, first);
        snprintf(texts[0], 96, "%" PRId64, row.id);
        snprintf(texts[1], 96, "%s", row.name);
        snprintf(texts[2], 96, "%" PRId64, row.qty);
        snprintf(texts[3], 96, "%.17g", row.price);
        snprintf(texts[4], 96, "%s", row.note);
        snprintf(texts[5], 96, "%" PRId64, row.updated);
        for (int c = 0; c < 6; c++) {
            values[c] = texts[c];
        }
        PGresult *result = PQexecPrepared(db->pg, "insert", 6, values, NULL, NULL, 0);
        pg_check(db, result, "insert");
        PQclear(result);
        return;
    }
    /* Many rows: COPY, PostgreSQL's fastest way in, so that the master's writer limits the
       peer as little as it can (the SQLite master gets prepared statements in process). */
    PGresult *result = PQexec(db->pg, "COPY items FROM STDIN");
    if (PQresultStatus(result) != PGRES_COPY_IN) {
        die("postgres COPY: %s", PQerrorMessage(db->pg));
    }
    PQclear(result);
    char *buffer = malloc((size_t)count * 200 + 1);
    size_t used = 0;
    for (int64_t id = first; id < first + count; id++) {
        row_make(&row, id);
        used += (size_t)sprintf(buffer + used, "%" PRId64 "\t%s\t%" PRId64 "\t%.17g\t%s\t%" PRId64 "\n",
                                row.id, row.name, row.qty, row.price, row.note, row.updated);
    }
    if (PQputCopyData(db->pg, buffer, (int)used) != 1 || PQputCopyEnd(db->pg, NULL) != 1) {
        die("postgres COPY: %s", PQerrorMessage(db->pg));
    }
    free(buffer);
    result = PQgetResult(db->pg);
    pg_check(db, result, "COPY");
    PQclear(result);
    while ((result = PQgetResult(db->pg))) {
        PQclear(result);
    }
}

static void master_update(db_t *db, int64_t id, int64_t updated)
{
    if (db->kind == KIND_SQLITE) {
        if (!db->update) {
            sq_check(db,
                     sqlite3_prepare_v2(db->sq,
                                        "UPDATE items SET qty = qty + 1, updated = ?2 "
                                        "WHERE id = ?1",
                                        -1, &db->update, NULL),
                     "prepare update");
        }
        sqlite3_bind_int64(db->update, 1, id);
        sqlite3_bind_int64(db->update, 2, updated);
        sq_check(db, sqlite3_step(db->update), "update");
        sqlite3_reset(db->update);
        return;
    }
    die("master_update is for SQLite; PostgreSQL uses pg_update_transaction");
}

/* One W5 transaction on PostgreSQL in pipeline mode: BEGIN, the updates, COMMIT in one round
   trip, as the SQLite master runs them in process without any. */
static void pg_update_transaction(db_t *db, const int64_t *ids, const int64_t *updated, int n)
{
    if (!db->pg_update_prepared) {
        db_pg_prepare(db, "update", "UPDATE items SET qty = qty + 1, updated = $2 WHERE id = $1",
                      2);
        db->pg_update_prepared = true;
    }
    if (PQpipelineStatus(db->pg) == PQ_PIPELINE_OFF && PQenterPipelineMode(db->pg) != 1) {
        die("postgres pipeline mode: %s", PQerrorMessage(db->pg));
    }
    int sent = 0;
    bool ok = PQsendQueryParams(db->pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) == 1;
    sent++;
    for (int k = 0; ok && k < n; k++, sent++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%" PRId64, ids[k]);
        snprintf(b, sizeof b, "%" PRId64, updated[k]);
        const char *values[2] = {a, b};
        ok = PQsendQueryPrepared(db->pg, "update", 2, values, NULL, NULL, 0) == 1;
    }
    ok = ok && PQsendQueryParams(db->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1;
    sent++;
    ok = ok && PQpipelineSync(db->pg) == 1;
    if (!ok) {
        die("postgres pipeline: %s", PQerrorMessage(db->pg));
    }
    for (int k = 0; k < sent; k++) {
        PGresult *result = PQgetResult(db->pg);
        if (!result) {
            die("postgres pipeline: a result is missing");
        }
        pg_check(db, result, "pipelined update");
        PQclear(result);
        result = PQgetResult(db->pg); /* the NULL that ends each query's results */
        if (result) {
            die("postgres pipeline: unexpected extra result");
        }
    }
    PGresult *result = PQgetResult(db->pg);
    if (PQresultStatus(result) != PGRES_PIPELINE_SYNC) {
        die("postgres pipeline: no sync: %s", PQerrorMessage(db->pg));
    }
    PQclear(result);
}

/* ------------------------------------------------------------------ options */

typedef struct {
    kind_t kind;
    const char *master, *slave, *db, *exec, *light_result;
    pid_t light_pid;
    int64_t rows, txn, commits, updates, start_id, message_size, per_statement;
    double interval_ms, timeout_s;
    char **command; /* after "--" */
    bool writer;    /* --capture writer */
    const char *also[512]; /* bulk: more slaves that must all reach the last row */
    int also_count;
} options_t;

static void parse(int argc, char **argv, options_t *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_s = 600;
    o->rows = 1000000;
    o->txn = 1000;
    o->commits = 1000;
    o->interval_ms = 5;
    o->updates = 200000;
    o->start_id = 1;
    o->message_size = 1 << 20;
    o->per_statement = 1;
    for (int i = 2; i < argc; i++) {
        const char *key = argv[i];
        if (strcmp(key, "--") == 0) {
            o->command = argv + i + 1;
            break;
        }
        if (i + 1 >= argc) {
            die("option %s needs a value", key);
        }
        const char *value = argv[++i];
        if (strcmp(key, "--capture") == 0) {
            if (strcmp(value, "writer") == 0) {
                o->writer = true;
            } else if (strcmp(value, "triggers") != 0) {
                die("--capture is triggers or writer");
            }
        } else if (strcmp(key, "--kind") == 0) {
            if (strcmp(value, "sqlite") == 0) {
                o->kind = KIND_SQLITE;
            } else if (strcmp(value, "pg") == 0) {
                o->kind = KIND_PG;
            } else {
                die("--kind is sqlite or pg");
            }
        } else if (strcmp(key, "--master") == 0) {
            o->master = value;
        } else if (strcmp(key, "--slave") == 0) {
            o->slave = value;
        } else if (strcmp(key, "--db") == 0) {
            o->db = value;
        } else if (strcmp(key, "--also-slave") == 0) {
            if (o->also_count == (int)(sizeof o->also / sizeof o->also[0])) {
                die("too many --also-slave");
            }
            o->also[o->also_count++] = value;
        } else if (strcmp(key, "--light-result") == 0) {
            o->light_result = value;
        } else if (strcmp(key, "--light-pid") == 0) {
            o->light_pid = atoi(value);
        } else if (strcmp(key, "--exec") == 0) {
            o->exec = value;
        } else if (strcmp(key, "--rows") == 0) {
            o->rows = atoll(value);
        } else if (strcmp(key, "--txn") == 0) {
            o->txn = atoll(value);
        } else if (strcmp(key, "--commits") == 0) {
            o->commits = atoll(value);
        } else if (strcmp(key, "--updates") == 0) {
            o->updates = atoll(value);
        } else if (strcmp(key, "--start-id") == 0) {
            o->start_id = atoll(value);
        } else if (strcmp(key, "--message-size") == 0) {
            o->message_size = atoll(value);
        } else if (strcmp(key, "--per-statement") == 0) {
            o->per_statement = atoll(value);
        } else if (strcmp(key, "--interval-ms") == 0) {
            o->interval_ms = atof(value);
        } else if (strcmp(key, "--timeout") == 0) {
            o->timeout_s = atof(value);
        } else if (strcmp(key, "--watch") == 0 || strcmp(key, "--pid") == 0) {
            if (g_watch.count == MAX_WATCH) {
                die("too many --watch");
            }
            g_watch.pids[g_watch.count++] = atoi(value);
        } else if (strcmp(key, "--watch-tree") == 0) {
            g_watch.tree_root = atoi(value);
        } else {
            die("unknown option %s", key);
        }
    }
    if (o->rows <= 0 || o->txn <= 0) {
        die("--rows and --txn must be positive");
    }
}

static int64_t deadline_of(const options_t *o)
{
    return now_ns() + (int64_t)(o->timeout_s * 1e9);
}

static void need(const char *value, const char *name)
{
    if (!value) {
        die("%s is required", name);
    }
}

static bool verify(db_t *master, db_t *slave)
{
    char a[256], b[256];
    db_checksum(master, a, sizeof a);
    db_checksum(slave, b, sizeof b);
    printf("checksum %s\n", b);
    printf("verify %s\n", strcmp(a, b) == 0 ? "ok" : "MISMATCH");
    if (strcmp(a, b) != 0) {
        fprintf(stderr, "vsbench: master %s, slave %s\n", a, b);
    }
    return strcmp(a, b) == 0;
}

/* Polls until the slave's largest id reaches `target`; returns the time it did. */
static int64_t wait_max_id(db_t *slave, int64_t target, int64_t deadline, int64_t pause_ns)
{
    int64_t checked = now_ns();
    for (;;) {
        int64_t max = slave_max_id(slave);
        if (max >= target) {
            return now_ns();
        }
        watch_sample_tree();
        if (now_ns() - checked > 100000000) {
            watch_alive();
            checked = now_ns();
        }
        if (now_ns() > deadline) {
            die("timed out: the slave's largest id is %" PRId64 ", waiting for %" PRId64, max,
                target);
        }
        sleep_ns(pause_ns);
    }
}

/* ------------------------------------------------------------------ subcommands */

static int cmd_init(options_t *o)
{
    need(o->db, "--db");
    db_t db;
    db_open(&db, o->kind, o->db, true, deadline_of(o));
    if (o->kind == KIND_SQLITE) {
        db_exec(&db, "PRAGMA journal_mode = WAL");
        db_exec(&db, "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, "
                     "qty INTEGER, price REAL, note TEXT, updated INTEGER)");
        db_exec(&db, "CREATE TABLE IF NOT EXISTS warm (id INTEGER PRIMARY KEY)");
    } else {
        db_exec(&db, "CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, name text, "
                     "qty bigint, price double precision, note text, updated bigint)");
        db_exec(&db, "CREATE TABLE IF NOT EXISTS warm (id bigint PRIMARY KEY)");
    }
    db_close(&db);
    return 0;
}

static int cmd_ready(options_t *o)
{
    need(o->master, "--master");
    need(o->slave, "--slave");
    int64_t deadline = deadline_of(o);
    db_t master, slave;
    db_open(&master, o->kind, o->master, false, deadline);
    db_open(&slave, o->kind, o->slave, false, deadline);
    db_prepare_slave(&slave);
    int64_t id = (int64_t)time(NULL) * 1000 + getpid() % 1000;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO warm VALUES (%" PRId64 ")", id);
    int64_t start = now_ns();
    db_exec(&master, sql);
    while (!slave_warm_has(&slave, id)) {
        watch_alive();
        if (now_ns() > deadline) {
            die("timed out: the slave never received the warm-up row");
        }
        sleep_ns(2000000);
    }
    printf("ready_s %.3f\n", (double)(now_ns() - start) / 1e9);
    db_close(&master);
    db_close(&slave);
    return 0;
}

/* For the writer limits: waits until versync's publisher has put its triggers on items (it
   installs them all in one transaction), so that the writer alone can be timed with them. */
static int cmd_triggers(options_t *o)
{
    need(o->db, "--db");
    int64_t deadline = deadline_of(o);
    db_t db;
    db_open(&db, KIND_SQLITE, o->db, false, deadline);
    sqlite3_stmt *count = NULL;
    while (sq_int(&db, &count,
                  "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = "
                  "'items'",
                  0, 0) < 3) {
        watch_alive();
        if (now_ns() > deadline) {
            die("timed out: no capture triggers on items in %s", o->db);
        }
        sleep_ns(20000000);
    }
    sqlite3_finalize(count);
    db_close(&db);
    return 0;
}

/* W1: rows in txn-row transactions; from the first commit until the slave has them all. */
static int cmd_bulk(options_t *o)
{
    need(o->master, "--master");
    need(o->slave, "--slave");
    int64_t deadline = deadline_of(o);
    db_t master, slave;
    db_open(&master, o->kind, o->master, false, deadline);
    db_attach_writer(&master, o->writer);
    db_open(&slave, o->kind, o->slave, false, deadline);
    db_prepare_slave(&slave);
    int64_t last = o->start_id + o->rows - 1;
    int64_t first_commit = 0;
    int64_t started = now_ns();
    for (int64_t id = o->start_id; id <= last; id += o->txn) {
        int64_t count = id + o->txn - 1 <= last ? o->txn : last - id + 1;
        db_begin(&master);
        master_insert(&master, id, count);
        db_commit(&master);
        if (!first_commit) {
            first_commit = now_ns();
            watch_start();
        }
        watch_sample_tree();
    }
    int64_t written = now_ns();
    int64_t done = wait_max_id(&slave, last, deadline, 1000000);
    /* more slaves (W4): the time is when the last of them has every row */
    db_t *others = calloc((size_t)o->also_count + 1, sizeof *others);
    for (int k = 0; k < o->also_count; k++) {
        db_open(&others[k], o->kind, o->also[k], false, deadline);
        db_prepare_slave(&others[k]);
        done = wait_max_id(&others[k], last, deadline, 1000000);
    }
    /* light subscribers (W4, bench/vslight.c): their result file says when the last of them
       had every row, on the same CLOCK_MONOTONIC */
    long long light_count = 0, light_complete = 0, light_done_ns = 0;
    if (o->light_result) {
        FILE *file;
        while (!(file = fopen(o->light_result, "r"))) {
            watch_alive();
            if (o->light_pid > 0 && process_gone(o->light_pid)
                && !(file = fopen(o->light_result, "r"))) {
                die("the light subscribers (pid %d) exited without a result", (int)o->light_pid);
            }
            if (file) {
                break;
            }
            if (now_ns() > deadline) {
                die("timed out waiting for %s", o->light_result);
            }
            sleep_ns(2000000);
        }
        char key[64];
        long long number;
        while (fscanf(file, "%63s %lld", key, &number) == 2) {
            if (strcmp(key, "light_count") == 0) {
                light_count = number;
            } else if (strcmp(key, "light_complete") == 0) {
                light_complete = number;
            } else if (strcmp(key, "light_last_done_ns") == 0) {
                light_done_ns = number;
            }
        }
        fclose(file);
        if (light_done_ns > done) {
            done = light_done_ns;
        }
    }
    double seconds = (double)(done - first_commit) / 1e9;
    watch_report();
    printf("rows %" PRId64 "\n", o->rows);
    printf("slaves %d\n", 1 + o->also_count);
    printf("light_subscribers %lld\n", light_count);
    printf("light_complete %lld\n", light_complete);
    printf("write_s %.3f\n", (double)(written - started) / 1e9);
    printf("seconds %.3f\n", seconds);
    printf("rows_per_s %.0f\n", (double)o->rows / seconds);
    printf("delivered_rows_per_s %.0f\n",
           (double)o->rows * (double)(1 + o->also_count + light_complete) / seconds);
    int complete = verify(&master, &slave) ? 1 : 0;
    for (int k = 0; k < o->also_count; k++) {
        char a[256], b[256];
        db_checksum(&master, a, sizeof a);
        db_checksum(&others[k], b, sizeof b);
        complete += strcmp(a, b) == 0;
        db_close(&others[k]);
    }
    free(others);
    printf("complete_slaves %d\n", complete);
    printf("complete_subscribers %lld\n", complete + light_complete);
    db_close(&master);
    db_close(&slave);
    return 0;
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values. */
static int64_t percentile(const int64_t *sorted, int64_t n, double p)
{
    int64_t rank = (int64_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) {
        rank = 1;
    }
    return sorted[rank - 1];
}

/* W2: single-row commits at least interval apart; commit returned -> visible on the slave,
   polled without pause (sched_yield only) on a second connection. */
static int cmd_latency(options_t *o)
{
    need(o->master, "--master");
    need(o->slave, "--slave");
    int64_t deadline = deadline_of(o);
    db_t master, slave;
    db_open(&master, o->kind, o->master, false, deadline);
    db_open(&slave, o->kind, o->slave, false, deadline);
    db_prepare_slave(&slave);
    int64_t *latency = calloc((size_t)o->commits, sizeof *latency);
    int64_t interval = (int64_t)(o->interval_ms * 1e6);
    int64_t polls = 0;
    watch_start();
    for (int64_t i = 0; i < o->commits; i++) {
        int64_t id = o->start_id + i;
        int64_t begun = now_ns();
        master_insert(&master, id, 1); /* autocommit: one row, one commit */
        int64_t committed = now_ns();
        while (!slave_has(&slave, id)) {
            polls++;
            if ((polls & 0xffff) == 0) {
                watch_alive();
            }
            if (now_ns() > deadline) {
                die("timed out: row %" PRId64 " never reached the slave", id);
            }
            sched_yield();
        }
        latency[i] = now_ns() - committed;
        sleep_ns(begun + interval - now_ns());
    }
    qsort(latency, (size_t)o->commits, sizeof *latency, compare_int64);
    double sum = 0;
    for (int64_t i = 0; i < o->commits; i++) {
        sum += (double)latency[i];
    }
    watch_report();
    printf("commits %" PRId64 "\n", o->commits);
    printf("polls %" PRId64 "\n", polls);
    printf("p50_ms %.3f\n", (double)percentile(latency, o->commits, 50) / 1e6);
    printf("p99_ms %.3f\n", (double)percentile(latency, o->commits, 99) / 1e6);
    printf("max_ms %.3f\n", (double)latency[o->commits - 1] / 1e6);
    printf("mean_ms %.3f\n", sum / (double)o->commits / 1e6);
    verify(&master, &slave);
    free(latency);
    db_close(&master);
    db_close(&slave);
    return 0;
}

/* W5: `updates` updates over rows 1..rows (pseudo-random, the same sequence every time) in
   txn-update transactions; from the first commit until the slave shows the last update. */
static int cmd_hot(options_t *o)
{
    need(o->master, "--master");
    need(o->slave, "--slave");
    int64_t deadline = deadline_of(o);
    db_t master, slave;
    db_open(&master, o->kind, o->master, false, deadline);
    db_attach_writer(&master, o->writer);
    db_open(&slave, o->kind, o->slave, false, deadline);
    db_prepare_slave(&slave);
    db_begin(&master);
    master_insert(&master, 1, o->rows);
    db_commit(&master);
    wait_max_id(&slave, o->rows, deadline, 1000000);

    uint64_t state = 88172645463325252ULL; /* xorshift64 */
    int64_t first_commit = 0, last_id = 0;
    int64_t *ids = calloc((size_t)o->txn, sizeof *ids), *stamps = calloc((size_t)o->txn, 8);
    int64_t started = now_ns();
    for (int64_t u = 1; u <= o->updates;) {
        int n = 0;
        for (; n < o->txn && u <= o->updates; n++, u++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            last_id = 1 + (int64_t)(state % (uint64_t)o->rows);
            ids[n] = last_id;
            stamps[n] = u;
        }
        if (o->kind == KIND_PG) {
            pg_update_transaction(&master, ids, stamps, n);
        } else {
            db_begin(&master);
            for (int k = 0; k < n; k++) {
                master_update(&master, ids[k], stamps[k]);
            }
            db_commit(&master);
        }
        if (!first_commit) {
            first_commit = now_ns();
            watch_start();
        }
        watch_sample_tree();
    }
    int64_t written = now_ns();
    free(ids);
    free(stamps);
    if (o->kind == KIND_PG) {
        PQexitPipelineMode(master.pg);
    }
    while (slave_updated_of(&slave, last_id) != o->updates) {
        watch_sample_tree();
        watch_alive();
        if (now_ns() > deadline) {
            die("timed out: the last update never reached the slave");
        }
        sleep_ns(1000000);
    }
    int64_t done = now_ns();
    double seconds = (double)(done - first_commit) / 1e9;
    watch_report();
    printf("updates %" PRId64 "\n", o->updates);
    printf("write_s %.3f\n", (double)(written - started) / 1e9);
    printf("seconds %.3f\n", seconds);
    printf("updates_per_s %.0f\n", (double)o->updates / seconds);
    verify(&master, &slave);
    db_close(&master);
    db_close(&slave);
    return 0;
}

/* W3: a new slave (a spawned command, or SQL run on the slave such as CREATE SUBSCRIPTION)
   until it holds rows 1..rows. */
static int cmd_replica(options_t *o)
{
    need(o->slave, "--slave");
    if (!o->exec && !(o->command && o->command[0])) {
        die("replica needs --exec SQL or -- command...");
    }
    int64_t deadline = deadline_of(o);
    db_t slave, setup;
    pid_t child = 0;
    int64_t started = now_ns();
    if (o->exec) {
        db_open(&setup, o->kind, o->slave, false, deadline);
        started = now_ns();
        db_exec(&setup, o->exec);
        db_close(&setup);
    } else {
        child = fork();
        if (child < 0) {
            die("fork: %s", strerror(errno));
        }
        if (child == 0) {
            dup2(2, 1); /* our stdout carries the figures */
            execvp(o->command[0], o->command);
            fprintf(stderr, "vsbench: cannot run %s: %s\n", o->command[0], strerror(errno));
            _exit(127);
        }
        if (g_watch.count < MAX_WATCH) {
            g_watch.pids[g_watch.count++] = child;
        }
    }
    watch_start();
    db_open(&slave, o->kind, o->slave, false, deadline);
    db_prepare_slave(&slave);
    int64_t done = wait_max_id(&slave, o->start_id + o->rows - 1, deadline, 1000000);
    double seconds = (double)(done - started) / 1e9;
    watch_report();
    int64_t count = count_rows(&slave);
    printf("rows %" PRId64 "\n", o->rows);
    printf("seconds %.3f\n", seconds);
    printf("rows_per_s %.0f\n", (double)o->rows / seconds);
    if (o->master) {
        db_t master;
        db_open(&master, o->kind, o->master, false, deadline);
        verify(&master, &slave);
        db_close(&master);
    } else {
        printf("verify %s\n", count == o->rows ? "ok" : "MISMATCH");
    }
    db_close(&slave);
    if (child > 0) {
        kill(child, SIGTERM);
        int status = 0;
        waitpid(child, &status, 0);
    }
    return 0;
}

/* The apply limit: the same rows upserted into a fresh file in txn-row transactions, with the
   slave's settings (WAL, synchronous=NORMAL). */
static int cmd_apply_limit(options_t *o)
{
    need(o->db, "--db");
    if (o->per_statement < 1 || o->per_statement > 100 || o->rows % o->per_statement != 0) {
        die("--per-statement must be 1 to 100 and divide --rows");
    }
    unlink(o->db);
    db_t db;
    db_open(&db, KIND_SQLITE, o->db, true, deadline_of(o));
    db_exec(&db, "PRAGMA journal_mode = WAL");
    db_exec(&db, "PRAGMA synchronous = NORMAL");
    db_exec(&db, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, "
                 "price REAL, note TEXT, updated INTEGER)");
    /* INSERT INTO items VALUES (?1,...,?6),(?7,...,?12)... ON CONFLICT(id) DO UPDATE ... */
    int per = (int)o->per_statement;
    char sql[8192];
    size_t used = (size_t)snprintf(sql, sizeof sql, "INSERT INTO items VALUES ");
    for (int r = 0; r < per; r++) {
        int b = r * 6;
        used += (size_t)snprintf(sql + used, sizeof sql - used, "%s(?%d,?%d,?%d,?%d,?%d,?%d)",
                                 r ? "," : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6);
    }
    snprintf(sql + used, sizeof sql - used,
             " ON CONFLICT(id) DO UPDATE SET name = excluded.name, qty = excluded.qty, "
             "price = excluded.price, note = excluded.note, updated = excluded.updated");
    sqlite3_stmt *upsert = NULL;
    sq_check(&db, sqlite3_prepare_v2(db.sq, sql, -1, &upsert, NULL), "prepare upsert");
    row_t *rows = calloc((size_t)per, sizeof *rows);
    if (!rows) {
        die("out of memory");
    }
    int64_t started = now_ns();
    for (int64_t id = 1; id <= o->rows;) {
        db_exec(&db, "BEGIN");
        /* whole statements: a transaction ends at the first statement that reaches --txn rows */
        for (int64_t k = 0; k < o->txn && id <= o->rows; k += per) {
            for (int r = 0; r < per; r++, id++) {
                row_t *row = &rows[r];
                int b = r * 6;
                row_make(row, id);
                sqlite3_bind_int64(upsert, b + 1, row->id);
                sqlite3_bind_text(upsert, b + 2, row->name, -1, SQLITE_STATIC);
                sqlite3_bind_int64(upsert, b + 3, row->qty);
                sqlite3_bind_double(upsert, b + 4, row->price);
                sqlite3_bind_text(upsert, b + 5, row->note, -1, SQLITE_STATIC);
                sqlite3_bind_int64(upsert, b + 6, row->updated);
            }
            sq_check(&db, sqlite3_step(upsert), "upsert");
            sqlite3_reset(upsert);
        }
        db_exec(&db, "COMMIT");
    }
    double seconds = (double)(now_ns() - started) / 1e9;
    sqlite3_finalize(upsert);
    free(rows);
    db_close(&db);
    printf("rows %" PRId64 "\n", o->rows);
    printf("seconds %.3f\n", seconds);
    printf("rows_per_s %.0f\n", (double)o->rows / seconds);
    return 0;
}

/* The transport limit: PUSH -> PULL over tcp://127.0.0.1 with CURVE, in two contexts (as two
   processes would be), message_size messages totalling the bytes of the rows' changes. */
typedef struct {
    void *context;
    char endpoint[128];
    char server_public[41];
    int64_t messages;
    int bound;
} pull_args_t;

static char g_server_secret[41];

static void *pull_thread(void *arg)
{
    pull_args_t *args = arg;
    void *socket = zmq_socket(args->context, ZMQ_PULL);
    int one = 1, hwm = 100;
    zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, g_server_secret, 40);
    zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(socket, "tcp://127.0.0.1:*") != 0) {
        die("bind: %s", zmq_strerror(zmq_errno()));
    }
    size_t size = sizeof args->endpoint;
    zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, args->endpoint, &size);
    __atomic_store_n(&args->bound, 1, __ATOMIC_RELEASE);
    zmq_msg_t message;
    zmq_msg_init(&message);
    if (zmq_msg_recv(&message, socket, 0) < 0) { /* the warm-up: CURVE handshake done */
        die("recv: %s", zmq_strerror(zmq_errno()));
    }
    __atomic_store_n(&args->bound, 2, __ATOMIC_RELEASE);
    for (int64_t i = 0; i < args->messages; i++) {
        if (zmq_msg_recv(&message, socket, 0) < 0) {
            die("recv: %s", zmq_strerror(zmq_errno()));
        }
    }
    zmq_msg_close(&message);
    zmq_close(socket);
    return NULL;
}

static int cmd_curve_limit(options_t *o)
{
    row_t row;
    int64_t bytes = 0;
    for (int64_t id = 1; id <= o->rows; id++) {
        row_make(&row, id);
        bytes += (int64_t)row_change_size(&row);
    }
    int64_t messages = (bytes + o->message_size - 1) / o->message_size;
    char server_public[41], client_public[41], client_secret[41];
    if (zmq_curve_keypair(server_public, g_server_secret) != 0
        || zmq_curve_keypair(client_public, client_secret) != 0) {
        die("zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    }
    void *server_context = zmq_ctx_new(), *client_context = zmq_ctx_new();
    pull_args_t args = {.context = server_context, .messages = messages};
    pthread_t thread;
    pthread_create(&thread, NULL, pull_thread, &args);
    while (!__atomic_load_n(&args.bound, __ATOMIC_ACQUIRE)) {
        sleep_ns(1000000);
    }
    void *push = zmq_socket(client_context, ZMQ_PUSH);
    int hwm = 100;
    zmq_setsockopt(push, ZMQ_CURVE_SERVERKEY, server_public, 40);
    zmq_setsockopt(push, ZMQ_CURVE_PUBLICKEY, client_public, 40);
    zmq_setsockopt(push, ZMQ_CURVE_SECRETKEY, client_secret, 40);
    zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(push, args.endpoint) != 0) {
        die("connect %s: %s", args.endpoint, zmq_strerror(zmq_errno()));
    }
    char *payload = malloc((size_t)o->message_size);
    for (int64_t i = 0; i < o->message_size; i++) {
        payload[i] = (char)(i * 131 % 251);
    }
    zmq_send(push, "", 0, 0);
    while (__atomic_load_n(&args.bound, __ATOMIC_ACQUIRE) != 2) {
        sched_yield();
    }
    int64_t started = now_ns();
    for (int64_t i = 0; i < messages; i++) {
        size_t size = i + 1 < messages ? (size_t)o->message_size
                                       : (size_t)(bytes - (messages - 1) * o->message_size);
        if (zmq_send(push, payload, size, 0) < 0) {
            die("send: %s", zmq_strerror(zmq_errno()));
        }
    }
    pthread_join(thread, NULL);
    double seconds = (double)(now_ns() - started) / 1e9;
    int linger = 0;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(push);
    zmq_ctx_term(client_context);
    zmq_ctx_term(server_context);
    free(payload);
    printf("rows %" PRId64 "\n", o->rows);
    printf("bytes %" PRId64 "\n", bytes);
    printf("messages %" PRId64 "\n", messages);
    printf("seconds %.3f\n", seconds);
    printf("mb_per_s %.1f\n", (double)bytes / seconds / 1e6);
    printf("rows_per_s %.0f\n", (double)o->rows / seconds);
    return 0;
}

static int cmd_sample(options_t *o)
{
    (void)o;
    for (int i = 0; i < g_watch.count; i++) {
        g_watch.ticks_start[i] = 0;
    }
    watch_report();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: vsbench init|ready|bulk|latency|hot|replica|apply-limit|"
                        "curve-limit|sample|triggers [options] (see the comment at the top of "
                        "bench/vsbench.c)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    options_t o;
    parse(argc, argv, &o);
    const char *command = argv[1];
    if (strcmp(command, "init") == 0) {
        return cmd_init(&o);
    } else if (strcmp(command, "ready") == 0) {
        return cmd_ready(&o);
    } else if (strcmp(command, "bulk") == 0) {
        return cmd_bulk(&o);
    } else if (strcmp(command, "latency") == 0) {
        return cmd_latency(&o);
    } else if (strcmp(command, "hot") == 0) {
        return cmd_hot(&o);
    } else if (strcmp(command, "replica") == 0) {
        return cmd_replica(&o);
    } else if (strcmp(command, "apply-limit") == 0) {
        return cmd_apply_limit(&o);
    } else if (strcmp(command, "curve-limit") == 0) {
        return cmd_curve_limit(&o);
    } else if (strcmp(command, "sample") == 0) {
        return cmd_sample(&o);
    } else if (strcmp(command, "triggers") == 0) {
        return cmd_triggers(&o);
    }
    die("unknown command '%s'", command);
}
