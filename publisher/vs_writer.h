/*  vs_writer.h - change capture inside the application that writes the master database.

    The publisher's triggers capture every program's writes, but with a trigger on a table
    SQLite runs each INSERT, UPDATE and DELETE with a trigger program and, for most of them, a
    statement journal. An application that writes the master through its own connection can
    instead attach a writer to that connection: the connection stops running triggers, a
    preupdate hook notes the key of each changed row of a replicated table, and
    vs_writer_commit logs those keys into _versync_log, in the same transaction and in the
    same form as the triggers would have, just before COMMIT. `versync publish` reads that log
    as before; other programs writing the same database keep going through the triggers.

        sqlite3 *db;                        // the application's own connection
        sqlite3_open ("master.db", &db);    // a database `versync publish` has attached
        vs_writer_t *writer;
        if (vs_writer_attach (&writer, db, error, sizeof error) != VS_OK) ...
        vs_writer_begin (writer);
        ... INSERT / UPDATE / DELETE through db ...
        vs_writer_commit (writer);          // logs the keys, then COMMIT
        vs_writer_detach (&writer);         // before sqlite3_close (db)

    Rules the attached connection follows:
      - Every transaction that changes a replicated table ends with vs_writer_commit (or
        vs_writer_flush, then the application's own COMMIT). A COMMIT with unlogged changes,
        including an autocommit statement, is refused by SQLite's commit hook: SQLite rolls it
        back and the statement fails with SQLITE_CONSTRAINT_COMMITHOOK. Nothing is lost
        unnoticed. A ROLLBACK TO a savepoint taken before a flush takes that flush's log rows
        back: the transaction then needs another flush (or vs_writer_commit), which logs its
        changes again, and a plain COMMIT is refused until it has one.
      - The connection runs no triggers at all (SQLITE_DBCONFIG_ENABLE_TRIGGER), so attaching
        is refused while the database has any trigger other than versync's, and a flush fails
        if one appears later, or if the transaction wrote to an ATTACHed database that has
        triggers (another versync master, say).
      - Tables the publisher attaches later are picked up at the next transaction. A
        transaction that started before such a change and changed rows, or that changed the
        schema itself (DDL), is refused at flush (VS_ESCHEMA), and stays refused until it is
        rolled back: run it again, with schema changes in transactions of their own.
      - Only tables of the main database are captured; a TEMP table of the same name is not
        mistaken for one. A table with a generated column whose primary key is not its rowid
        cannot be captured by a writer (the preupdate hook's column numbers do not match the
        table's): attaching is refused, and such a database is written through the triggers.
      - Keys are kept in memory until the transaction ends: about 16 bytes a changed row for
        an integer key.
      - The writer takes the connection's preupdate, commit and rollback hooks and its trace
        callback (sqlite3_trace_v2, SQLITE_TRACE_STMT: it watches for ROLLBACK TO). Attaching
        turns the connection's triggers off, which makes SQLite prepare its statements again.
    The writer borrows db, does not close it, and belongs to the thread that uses db.
*/
#ifndef VS_WRITER_H_INCLUDED
#define VS_WRITER_H_INCLUDED

#include <sqlite3.h>
#include <stddef.h>

#include "vs_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vs_writer vs_writer_t;

/*  Attaches to db, which must be outside a transaction and open on a database that a publisher
    has attached (its _versync_ tables exist). On success *self_p holds the writer. Returns
    VS_EINVAL (db in a transaction, foreign triggers, not a versync master), VS_ESTORE (SQLite
    failed) or VS_ENOMEM, with a reason in error.                                             */
int vs_writer_attach(vs_writer_t **self_p, sqlite3 *db, char *error, size_t error_size);

/*  Starts a write transaction (BEGIN IMMEDIATE: it waits for the write lock in the
    connection's busy handler, where a deferred BEGIN that has read first would fail with
    SQLITE_BUSY_SNAPSHOT once the publisher's trims commit) and reloads the replicated tables
    when the schema changed. Returns VS_OK, VS_EINVAL (a foreign trigger appeared) or
    VS_ESTORE; on failure no transaction is left open.                                        */
int vs_writer_begin(vs_writer_t *self);

/*  Logs the keys changed since the last flush into _versync_log, inside the open transaction.
    VS_ESCHEMA: the schema changed under the transaction (roll back, run it again);
    VS_EINVAL: a foreign trigger appeared, or the transaction wrote to an attached database
    that has triggers; VS_ESTORE: SQLite failed (roll back); VS_ENOMEM.                     */
int vs_writer_flush(vs_writer_t *self);

/*  vs_writer_flush, then COMMIT. On failure the transaction is still open: roll it back.    */
int vs_writer_commit(vs_writer_t *self);

/*  Removes the hooks, turns the connection's triggers back on and frees the writer; sets
    *self_p to NULL; safe on NULL and twice. A transaction still open with changes no flush
    has logged is rolled back first: without the hooks it could commit them unlogged.        */
void vs_writer_detach(vs_writer_t **self_p);

/*  The detailed message of the last failure; borrowed, never NULL.                          */
const char *vs_writer_error(const vs_writer_t *self);

#ifdef __cplusplus
}
#endif

#endif
