/*  writer_exec.c - test helper: runs SQL on a master through a vs_writer (vs_writer.h).

    vs_writer_exec DB SQL...   each SQL argument runs as one transaction: vs_writer_begin, the
                               statements, vs_writer_commit. A transaction refused with
                               VS_ESCHEMA (a table attached meanwhile) is rolled back and run
                               once more. Exits 1 with the reason on the first failure.      */
#include "vs_writer.h"

#include <sqlite3.h>
#include <stdio.h>

static int s_transaction(vs_writer_t *writer, sqlite3 *db, const char *sql)
{
    int rc = vs_writer_begin(writer);
    if (rc == VS_OK) {
        char *error = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
            fprintf(stderr, "vs_writer_exec: '%s': %s\n", sql, error);
            sqlite3_free(error);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return VS_ESTORE;
        }
        rc = vs_writer_commit(writer);
    }
    if (rc != VS_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: vs_writer_exec DB SQL...\n");
        return 2;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "vs_writer_exec: cannot open '%s': %s\n", argv[1], sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    sqlite3_busy_timeout(db, 10000);
    vs_writer_t *writer = NULL;
    char error[512];
    int status = 0;
    if (vs_writer_attach(&writer, db, error, sizeof error) != VS_OK) {
        fprintf(stderr, "vs_writer_exec: cannot attach: %s\n", error);
        status = 1;
    }
    for (int index = 2; status == 0 && index < argc; index++) {
        int rc = s_transaction(writer, db, argv[index]);
        if (rc == VS_ESCHEMA) {
            rc = s_transaction(writer, db, argv[index]);
        }
        if (rc != VS_OK) {
            fprintf(stderr, "vs_writer_exec: '%s': %s\n", argv[index], vs_writer_error(writer));
            status = 1;
        }
    }
    vs_writer_detach(&writer);
    sqlite3_close(db);
    return status;
}
