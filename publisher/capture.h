/*  capture.h - change capture on a master SQLite database: the one owner of its connection.

    vs_capture_open attaches to an existing database: it switches it to WAL, creates the
    _versync_meta, _versync_tables and _versync_log tables, installs on every replicated table
    the triggers that log the primary key of each changed row with a monotonically increasing
    version, and logs every row already present when a table is first attached.

    vs_capture_read reads, in ONE snapshot, each key changed after a version once (with its
    newest version), looks its row up in the same snapshot and encodes UPSERTs and DELETEs into
    change sets cut at the configured target size. vs_capture_ack records the broker's ACK and
    trims the log, always keeping its newest row so versions never go back.

    Not thread-safe: one capture belongs to one thread (the publisher actor, or a test).
*/
#ifndef VS_CAPTURE_H_INCLUDED
#define VS_CAPTURE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vs_proto.h"

typedef struct vs_capture vs_capture_t;

typedef struct {
    const char *db_path;       /* must exist; opened without create                         */
    const char *const *tables; /* only these tables; table_count 0 means every table        */
    size_t table_count;
    size_t changeset_target; /* cut a set once it passes this many bytes; 0: 1 MiB        */
    uint64_t read_span;      /* versions one read looks at; 0: 262144 (tests set less)    */
    vs_logger_t logger;      /* {0}: silent                                               */
} vs_capture_config_t;

/*  One encoded change set produced by vs_capture_read. data is the caller's (free() it).     */
typedef struct {
    uint64_t first_version;
    uint64_t last_version;
    uint32_t flags; /* VS_CHANGESET_CONSISTENT on the last set of a snapshot */
    size_t change_count;
    uint8_t *data;
    size_t size;
} vs_capture_set_t;

/*  Opens and attaches to the database. On success *self_p holds the capture. On failure
    returns VS_ENOTFOUND (missing database or requested table), VS_ESTORE (SQLite failed) or
    VS_EINVAL / VS_ENOMEM, and writes a reason ("cannot open database 'x': ...") into error.  */
int vs_capture_open(vs_capture_t **self_p, const vs_capture_config_t *config, char *error,
                    size_t error_size);

/*  Closes the database (no transaction is left open) and frees the capture; sets *self_p to
    NULL; safe on NULL and twice.                                                              */
void vs_capture_destroy(vs_capture_t **self_p);

/*  The detailed message of the last failure; borrowed, never NULL.                            */
const char *vs_capture_error(const vs_capture_t *self);

/*  The publisher id kept in _versync_meta (32 lowercase hex characters); borrowed.           */
const char *vs_capture_publisher_id(const vs_capture_t *self);

/*  The highest version the broker acknowledged, as stored in _versync_meta.                  */
uint64_t vs_capture_acked_version(const vs_capture_t *self);

/*  Number of tables currently replicated.                                                     */
size_t vs_capture_table_count(const vs_capture_t *self);

/*  True when another connection committed since the last call (PRAGMA data_version), or on
    the first call. An error also answers true, so that the following read reports it. Unless
    exact, a wal-index header unchanged since the last check answers false without asking
    SQLite (one pread, no read transaction): cheap enough to call every few microseconds.   */
bool vs_capture_changed(vs_capture_t *self, bool exact);

/*  True when the changes after version `after` would fill a change set of the target size,
    estimated from the bytes per version of the last read; also true when that is not known
    yet, and on an error (so that the following read reports it). One statement on the log's
    newest row: a publisher with sets in flight asks it before reading a partial set.       */
bool vs_capture_backlog_full(vs_capture_t *self, uint64_t after);

/*  Reads, in one snapshot, every change after version `after` and encodes them into at most
    max_sets sets (sets must have room for max_sets), stopping at a cut once the produced sets
    reach max_bytes, and looking at no more than read_span versions. *set_count is the number
   produced (0 when there was nothing to read); *more is true when the snapshot held more than was
   produced. The sets cover contiguous version ranges from after + 1; the last set of a snapshot
   read to its end is CONSISTENT. Picks up schema changes first (and, when replicating every table,
   attaches new tables). Returns VS_OK; VS_ESTORE when SQLite failed (vs_capture_busy tells whether
   retrying later may help); VS_EMSGSIZE when a row cannot fit in VS_MAX_CHANGESET; VS_ENOMEM. On
   failure no set is handed out. */
int vs_capture_read(vs_capture_t *self, uint64_t after, size_t max_sets, size_t max_bytes,
                    vs_capture_set_t *sets, size_t *set_count, bool *more);

/*  Records that the broker holds every version up to `version`: stores acked_version and
    deletes the log rows up to it except the newest log row, in one write transaction. Waits
    at most busy_timeout_ms for the write lock (0: only tries), so that a busy writer does not
    hold the caller up. Returns VS_OK or VS_ESTORE (see vs_capture_busy).                     */
int vs_capture_ack(vs_capture_t *self, uint64_t version, int busy_timeout_ms);

/*  True when the last VS_ESTORE came from a lock held by another connection (SQLITE_BUSY or
    SQLITE_LOCKED): the same call may succeed later.                                          */
bool vs_capture_busy(const vs_capture_t *self);

/*  Frees the data of count sets and zeroes them.                                              */
void vs_capture_sets_free(vs_capture_set_t *sets, size_t count);

#endif
