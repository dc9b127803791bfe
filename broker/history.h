/*  history.h - the broker's durable history: streams, stored change sets and publisher versions.

    history.c is the one file that owns the broker's SQLite connection (history.db under the data
    folder, WAL, synchronous=FULL). It keeps every stream's head, head hash and the highest
    version stored per (stream, publisher) in memory, loaded and checked on open.

    Writes are grouped in batches: vs_history_append stages a set in an open transaction (opened
    by the first staged set), vs_history_commit makes the whole batch durable with one commit.
    Until the commit succeeds nothing of the batch may be acknowledged or published. When the
    commit fails, the transaction is rolled back and the in-memory state restored, so the staged
    sequence numbers are handed out again by the next batch.

    No commit pays for a WAL checkpoint (vs_history_checkpoint does it, after the replies) or
    for growing the WAL file (vs_history_open gives it its working size, written with zeros),
    so a commit's fdatasync normally writes the new frames and not the inode as well.

    Sequence numbers and versions are unsigned 64-bit on the wire; SQLite stores them as the
    signed 64-bit integer of the same bits.
*/
#ifndef VS_HISTORY_H_INCLUDED
#define VS_HISTORY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vs_proto.h"

typedef struct vs_history vs_history_t;

/*  What became of one staged change set.                                                       */
typedef struct {
    bool duplicate;             /* its last_version was already stored: nothing staged   */
    uint64_t seq;               /* the set's sequence; for a duplicate the stream's head */
    uint8_t hash[VS_HASH_SIZE]; /* the chain hash after the set (head hash if duplicate) */
    uint64_t last_version;      /* on VS_EGAP: the highest version stored for the publisher */
} vs_history_receipt_t;

/*  One catch-up reply. entries and their bytes are borrowed from the history and stay valid
    until the next call of vs_history_fetch or vs_history_destroy.                             */
typedef struct {
    uint64_t head;
    uint8_t head_hash[VS_HASH_SIZE];
    size_t entry_count;
    vs_entry_t *entries;
} vs_history_chunk_t;

/*  Called for every stream with its committed head.                                           */
typedef void(vs_history_stream_fn)(void *arg, const char *stream, uint64_t head,
                                   const uint8_t head_hash[VS_HASH_SIZE]);

/*  Opens (creating when missing, with mkdir -p semantics for data_dir) data_dir/history.db,
    loads every stream's state and checks it against the stored sets. On success hands a new
    history through *self_p. Returns VS_ESTORE (cannot create, open or read the database, or it
    is inconsistent), VS_ENOMEM; on failure writes a one-line reason into why. logger is
    borrowed and must outlive the history.                                                     */
int vs_history_open(const char *data_dir, const vs_logger_t *logger, vs_history_t **self_p,
                    char *why, size_t why_size);

/*  Rolls back a batch still open, closes the database, frees everything and sets *self_p to
    NULL; safe on NULL and twice.                                                               */
void vs_history_destroy(vs_history_t **self_p);

/*  Stages one change set of publisher on stream, covering versions first_version to
    last_version. A set whose last_version is not above the highest stored or staged for
    (stream, publisher) is a duplicate: nothing is staged. A set of a known publisher whose
    first_version is above that highest + 1 would leave versions out (an earlier set was lost
    on the way, for instance in a broker crash, while later ones were still queued): nothing is
    staged and VS_EGAP is returned, so that the publisher resends from its acknowledged
    version. Otherwise the set gets the stream's next sequence and chain hash; a new stream or
    publisher is created. changeset is borrowed until the batch is committed. Returns VS_OK,
    VS_EGAP, VS_EINVAL (invalid stream name or publisher id), VS_ENOMEM, or VS_ESTORE: the
    database failed and the whole batch is lost (vs_history_commit then rolls it back and
    returns VS_ESTORE). receipt->seq holds the head and receipt->last_version the highest
    version stored for the publisher on VS_EGAP.                                               */
int vs_history_append(vs_history_t *self, vs_bytes_t stream, vs_bytes_t publisher,
                      uint64_t first_version, uint64_t last_version, const void *changeset,
                      size_t size, vs_history_receipt_t *receipt);

/*  True while a batch is open (vs_history_append staged something or failed).                 */
bool vs_history_pending(const vs_history_t *self);

/*  Commits the open batch, if any, with one transaction commit. Returns VS_OK, or VS_ESTORE
    after rolling the batch back and restoring heads, hashes and publisher versions.           */
int vs_history_commit(vs_history_t *self);

/*  Copies the committed part of the write-ahead log into history.db once it holds 1,000 pages
    or more (a PASSIVE checkpoint; SQLite's automatic one is off, so that no COMMIT pays for
    it before an ACK). Call it after the replies and live messages of a batch are sent. Does
    nothing while a batch is open. Returns VS_OK, or VS_ESTORE (vs_history_error says why:
    nothing committed is lost, the log only grows until a later checkpoint succeeds).      */
int vs_history_checkpoint(vs_history_t *self);

/*  Reads committed sets of stream with seq > since into *chunk, in order and without holes,
    until their bytes would pass max_bytes (0: VS_DEFAULT_CHUNK_BYTES; capped at 16 MiB) but at
    least one when since < head, and at most VS_MAX_CHUNK_ENTRIES. An unknown stream has head 0
    and the zero hash. Must not be called while a batch is open. Returns VS_OK, VS_EBEHIND
    (since > head), VS_ENOMEM, VS_ESTORE.                                                      */
int vs_history_fetch(vs_history_t *self, vs_bytes_t stream, uint64_t since, uint64_t max_bytes,
                     vs_history_chunk_t *chunk);

/*  True when the broker knows publisher on stream: it has a set of it stored, or staged in
    the open batch. A publisher is forgotten with a batch that rolls back before its first
    set was ever committed.                                                                    */
bool vs_history_knows(vs_history_t *self, vs_bytes_t stream, vs_bytes_t publisher);

/*  Number of streams.                                                                         */
size_t vs_history_stream_count(const vs_history_t *self);

/*  Calls fn for every stream with its committed head and head hash.                            */
void vs_history_each_stream(vs_history_t *self, vs_history_stream_fn *fn, void *arg);

/*  Builds the committed state of every stream (at most VS_MAX_STATUS_STREAMS, sorted by name,
    each with at most VS_MAX_STATUS_PUBLISHERS publishers) into a new array handed through
    *streams; its byte ranges borrow from the history and stay valid until the next append,
    commit or destroy. Free it with vs_history_status_free. Returns VS_OK, VS_ENOMEM.         */
int vs_history_status(vs_history_t *self, vs_stream_info_t **streams, size_t *count);

/*  Frees an array made by vs_history_status and sets *streams to NULL; safe on NULL.          */
void vs_history_status_free(vs_stream_info_t **streams, size_t count);

/*  The detailed text of the last database failure (a static "no error" when none).            */
const char *vs_history_error(const vs_history_t *self);

#endif
