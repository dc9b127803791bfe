/*  checkpoint.h - copies the slave's WAL into its database on a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past its threshold:
    the applying thread copies the pages the WAL holds and waits for two fsyncs, and the next
    change set waits with it (a one-row slave commit of 30 us became 8-10 ms about every 400
    commits; a 1M-row replay ran 30% slower than with no checkpoint at all). The checkpointer
    is a czmq actor with its own connection to the same database, the way PostgreSQL has a
    checkpointer process: the applying thread only asks, and goes on committing while the
    pages are copied. SQLite lets one connection checkpoint while another writes; a PASSIVE
    checkpoint never waits for a lock and never takes the write lock.

    Internal to the subscriber module. The handle belongs to the thread that made it.        */
#ifndef VS_CHECKPOINT_H_INCLUDED
#define VS_CHECKPOINT_H_INCLUDED

#include <stddef.h>

typedef struct vs_checkpointer vs_checkpointer_t;

/*  Starts the actor and opens its connection to the WAL database at path (which must exist).
    On success hands it through *self_p; on failure returns VS_ESTORE or VS_ENOMEM and writes
    a reason into why (why_size bytes, may be 0).                                              */
int vs_checkpointer_new(vs_checkpointer_t **self_p, const char *path, char *why, size_t why_size);

/*  Stops the actor, waiting for a checkpoint in progress to end, closes its connection and
    sets *self_p to NULL; safe on NULL and twice.                                              */
void vs_checkpointer_destroy(vs_checkpointer_t **self_p);

/*  Asks for a checkpoint and returns at once. Requests that arrive while one runs are served
    by one more. The actor copies what the WAL holds, again while committed frames remain
    and it makes progress (a reader's snapshot can hold the rest back until later).          */
void vs_checkpointer_request(vs_checkpointer_t *self);

/*  Checkpoints the actor has completed, for tests and statistics. The count is read from the
    actor over its pipe, so the call waits for a checkpoint in progress.                     */
unsigned long vs_checkpointer_count(vs_checkpointer_t *self);

#endif
