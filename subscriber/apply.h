/*  apply.h - the slave database: positions, schema mapping and batched exactly-once apply.

    This is the one place that owns the slave's applying connection (the checkpointer of
    checkpoint.h, which the store starts, has a second one that only copies the WAL). A batch
    is ONE SQLite transaction (BEGIN IMMEDIATE ... COMMIT) holding the changes of one or more
    change sets of one or more streams plus, written at commit, each touched stream's new
    (seq, hash) in _versync_state. A process killed mid-batch therefore loses the whole batch
    and its position together, and fetching again gives each row exactly once.

    Internal to the subscriber module; nothing here is thread-safe: one thread owns a store.   */
#ifndef VS_APPLY_H_INCLUDED
#define VS_APPLY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vs_proto.h"

typedef struct vs_apply vs_apply_t;

/*  Opens (creating if missing) the slave database at path: WAL, synchronous=NORMAL,
    busy_timeout 5000, and the _versync_state table. tables (table_count names, borrowed only
    during the call; 0 means all) filters which tables are applied. With path NULL the store
    is verify-only: no database; positions live in memory from 0, every set is still checked
    (sequence, chain hash, encoding, value counts) and its changes of wanted tables counted
    (vs_apply_counts), but nothing is written. On success hands the store
    through *self_p; on failure returns VS_ESTORE, VS_EINVAL or VS_ENOMEM and writes a reason
    into why (why_size bytes, may be 0).                                                       */
int vs_apply_open(vs_apply_t **self_p, const char *path, const char *const *tables,
                  size_t table_count, char *why, size_t why_size);

/*  Rolls back any open batch (nothing of it is kept, as after a kill), closes the database,
    frees the store and sets *self_p to NULL; safe on NULL and twice.                         */
void vs_apply_close(vs_apply_t **self_p);

/*  The stream's position: the seq and chain hash of the last set applied, including the open
    batch (0 and the zero hash for a stream never applied). Returns VS_OK, VS_EINVAL (bad
    stream name), VS_ESTORE (unreadable or corrupt _versync_state row), VS_ENOMEM.            */
int vs_apply_position(vs_apply_t *self, const char *stream, uint64_t *seq,
                      uint8_t hash[VS_HASH_SIZE]);

/*  The position as committed to the database, ignoring the open batch.                        */
int vs_apply_committed_position(vs_apply_t *self, const char *stream, uint64_t *seq,
                                uint8_t hash[VS_HASH_SIZE]);

/*  Adds the change set (seq, chain hash, encoded bytes) of stream to the batch, opening one
    when none is open. The bytes are borrowed during the call.
      - seq <= position: already applied; returns VS_OK with *applied false (may be NULL);
      - seq > position + 1: returns VS_EGAP; the batch is unchanged;
      - otherwise hash must equal vs_chain_next(position hash, bytes), else VS_ECHAIN;
        then every change is applied (UPSERT / DELETE) and *applied is true.
    On VS_ECHAIN, VS_EPROTO (bad change set), VS_ESCHEMA (table refused or keys differ),
    VS_ESTORE (SQLite failed: constraint, I/O, full disk) or VS_ENOMEM the whole batch has been
    rolled back and vs_apply_error says why.                                                    */
int vs_apply_set(vs_apply_t *self, const char *stream, uint64_t seq,
                 const uint8_t hash[VS_HASH_SIZE], const void *changeset, size_t size,
                 bool *applied);

/*  Changes of wanted tables in committed batches since the store was opened: UPSERTs and
    DELETEs, applied (or, verify-only, checked).                                               */
void vs_apply_counts(const vs_apply_t *self, uint64_t *upserts, uint64_t *deletes);

/*  Checkpoints the store's checkpointer has completed (checkpoint.h): the WAL is copied into
    the database on a thread of its own, not inside the commits. 0 for a verify-only store.  */
unsigned long vs_apply_checkpoints(vs_apply_t *self);

/*  True while a batch is open.                                                                */
bool vs_apply_in_batch(const vs_apply_t *self);

/*  True when the open batch may be committed: every stream it touched stands on a set
    flagged VS_CHANGESET_CONSISTENT. True when no batch is open.                               */
bool vs_apply_consistent(const vs_apply_t *self);

/*  The name of a stream the open batch waits for: touched by it and not standing on a
    CONSISTENT set (inside a master transaction split over several sets). NULL when none.
    Borrowed until the store changes.                                                          */
const char *vs_apply_waiting_stream(const vs_apply_t *self);

/*  Changes (rows) applied in the open batch; 0 when none is open.                             */
size_t vs_apply_batch_rows(const vs_apply_t *self);

/*  Change sets applied in the open batch.                                                     */
size_t vs_apply_batch_sets(const vs_apply_t *self);

/*  Stores each touched stream's position and commits the open batch (VS_OK when none is
    open). Returns VS_EINVAL, with the batch left open, when it is not at a consistent point;
    VS_ESTORE when the commit failed, after rolling the batch back.                            */
int vs_apply_commit(vs_apply_t *self);

/*  Rolls back the open batch, if any: positions return to the committed ones.                */
void vs_apply_rollback(vs_apply_t *self);

/*  The last detailed error text; "" when none. Borrowed until the next call.                  */
const char *vs_apply_error(const vs_apply_t *self);

#endif
