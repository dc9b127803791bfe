/*  checkpoint.c - the slave's checkpointer: a czmq actor that owns a second connection to the
    slave database and runs PASSIVE checkpoints when the applying thread asks.

    Pipe protocol (inproc PAIR, one string frame each): after the handshake the actor sends
    "OK" or "ERROR" then a reason; then it takes "CHECKPOINT" (no reply), "COUNT" (replies
    with the number of checkpoints completed, in decimal) and "$TERM".                       */
#include "checkpoint.h"

#include "vs_proto.h"

#include <czmq.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*  Passes over the WAL after one request: frames committed during a pass are copied by the
    next one, so that the applying thread, between two batches, finds the log copied whole
    and starts it over instead of letting it grow.                                           */
#define S_PASSES_MAX 8

struct vs_checkpointer {
    zactor_t *actor;
};

/*  Copies the WAL into the database, pass after pass while frames remain and the last pass
    copied some. Returns true when at least one pass completed.                               */
static bool s_checkpoint(sqlite3 *db)
{
    bool completed = false;
    int copied_before = -1;
    for (int pass = 0; pass < S_PASSES_MAX; pass++) {
        int logged = 0;
        int copied = 0;
        int rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &logged, &copied);
        if (rc != SQLITE_OK) {
            break; /* busy: the applying thread's own checkpoint runs; or an I/O error */
        }
        completed = true;
        if (copied >= logged || copied == copied_before) {
            break; /* all copied, or a reader holds the rest back */
        }
        copied_before = copied;
    }
    return completed;
}

static void s_actor(zsock_t *pipe, void *args)
{
    const char *path = (const char *) args;
    sqlite3 *db = NULL;
    zsock_signal(pipe, 0);
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        /* A checkpoint syncs the WAL before it copies and the database after, as the applying
           connection's own would (synchronous=NORMAL, set there too).                        */
        rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        zstr_sendm(pipe, "ERROR");
        zstr_sendf(pipe, "cannot open '%s' for checkpoints: %s", path,
                   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return;
    }
    zstr_send(pipe, "OK");
    unsigned long completed = 0;
    bool running = true;
    while (running) {
        char *command = zstr_recv(pipe);
        if (!command) {
            if (zmq_errno() == EINTR) {
                continue; /* a signal: $TERM says when to stop */
            }
            break; /* the context is terminating */
        }
        bool wanted = false;
        /* Requests that queued up while the last checkpoint ran are served by one. */
        while (command) {
            if (streq(command, "$TERM")) {
                running = false;
            } else if (streq(command, "CHECKPOINT")) {
                wanted = true;
            } else if (streq(command, "COUNT")) {
                zstr_sendf(pipe, "%lu", completed);
            }
            zstr_free(&command);
            if (running && (zsock_events(pipe) & ZMQ_POLLIN)) {
                command = zstr_recv(pipe);
            }
        }
        if (running && wanted && s_checkpoint(db)) {
            completed++;
        }
    }
    sqlite3_close_v2(db);
}

/*  A signal whose handler runs in this thread (an embedding program's, a test harness's
    timer) cuts czmq's waits short: zactor_new then returns before the actor has started and
    its start signal is read as the answer, zactor_destroy returns before the thread ends, a
    read fails with EINTR. The slave database then failed to open for no reason of its own.
    So the calls that talk to the actor hold every signal back for their millisecond; the
    held ones are delivered when the mask is restored. The actor's thread starts with every
    signal blocked as well, and leaves them to the program's own threads.                    */
static void s_signals_hold(sigset_t *previous)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, previous);
}

static void s_signals_restore(const sigset_t *previous)
{
    pthread_sigmask(SIG_SETMASK, previous, NULL);
}

int vs_checkpointer_new(vs_checkpointer_t **self_p, const char *path, char *why, size_t why_size)
{
    vs_checkpointer_t *self = (vs_checkpointer_t *) calloc(1, sizeof *self);
    if (!self) {
        snprintf(why, why_size, "out of memory");
        return VS_ENOMEM;
    }
    /* path is read by the actor only until it has answered OK or ERROR. */
    sigset_t signals;
    s_signals_hold(&signals);
    self->actor = zactor_new(s_actor, (void *) path);
    char *status = self->actor ? zstr_recv(self->actor) : NULL;
    if (status && streq(status, "OK")) {
        zstr_free(&status);
        s_signals_restore(&signals);
        *self_p = self;
        return VS_OK;
    }
    int code = VS_ESTORE;
    if (status && streq(status, "ERROR")) {
        char *reason = zstr_recv(self->actor);
        snprintf(why, why_size, "%s", reason ? reason : "cannot start the checkpointer");
        zstr_free(&reason);
    } else {
        code = VS_ENOMEM;
        snprintf(why, why_size, "cannot start the checkpointer thread");
    }
    zstr_free(&status);
    vs_checkpointer_destroy(&self);
    s_signals_restore(&signals);
    return code;
}

void vs_checkpointer_destroy(vs_checkpointer_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    vs_checkpointer_t *self = *self_p;
    sigset_t signals;
    s_signals_hold(&signals);
    zactor_destroy(&self->actor);
    s_signals_restore(&signals);
    free(self);
    *self_p = NULL;
}

void vs_checkpointer_request(vs_checkpointer_t *self)
{
    /* Never waits: a full pipe already holds requests enough. */
    zmq_send(zsock_resolve(self->actor), "CHECKPOINT", strlen("CHECKPOINT"), ZMQ_DONTWAIT);
}

unsigned long vs_checkpointer_count(vs_checkpointer_t *self)
{
    unsigned long count = 0;
    sigset_t signals;
    s_signals_hold(&signals);
    if (zstr_send(self->actor, "COUNT") == 0) {
        char *answer = zstr_recv(self->actor);
        if (answer) {
            count = strtoul(answer, NULL, 10);
        }
        zstr_free(&answer);
    }
    s_signals_restore(&signals);
    return count;
}
