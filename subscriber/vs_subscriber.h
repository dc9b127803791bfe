/*  vs_subscriber.h - the slave side: catch-up, then live, with gap detection, chain
    verification and batched exactly-once apply into a slave SQLite database.

    The subscriber connects its SUB socket first, then FETCHes each stream from its stored
    position until caught up, then applies live change sets; it discards what it already has
    and catches up again on a gap (seen in a live sequence or a heartbeat's head). Every batch
    is ONE SQLite transaction that also stores, per stream, the new position and chain hash in
    _versync_state, so a kill -9 at any moment loses and duplicates nothing. Missing tables are
    created from the master's schema; differing tables get the columns both sides have; a
    different primary key is refused.

    It runs as a czmq actor:

        vs_subscriber_config_t config = { .db_path = "slave.db", ... };
        zactor_t *subscriber = zactor_new (vs_subscriber_actor, &config);

    Pipe protocol (the same for every versync actor):
      - after zactor_new returns, the actor sends one message: "OK", or "ERROR" + reason frame;
        after "ERROR" the actor has ended (destroy it);
      - later it may send "FATAL" + reason once (chain mismatch, schema refused, store
        failure); nothing of the failing batch is committed; it then waits for $TERM;
      - "$TERM" stops it cleanly: the open batch is rolled back or committed whole.
      - "POSITION" + stream answers four frames: "POSITION", the stream, the last seq applied
        (the open batch included) and the last seq committed, both in decimal; the two numbers
        are empty strings for an invalid stream name.
      - "COUNT" answers three frames: "COUNT", then the UPSERTs and the DELETEs of the wanted
        tables in committed batches since the start, in decimal.

    Verify-only (config.verify_only): no database at all. Positions start at 0 and live in
    memory, so every start replays the whole history; every set is still checked exactly as
    for a slave (sequence, chain hash, encoding, value counts, CONSISTENT points) and its
    changes counted (COUNT), but nothing is written. For watching a stream's integrity, and
    for the fan-out benchmark's many light subscribers.

    FATAL reasons: a chain mismatch ("chain mismatch on stream S at seq N: fork or corrupted
    history"), a history that ends before the slave's position ("slave is at seq N of stream S
    but the broker's history ends ..."), a table refused ("table 't': primary key (a) on the
    slave, (a, b) on the master", a hostile or missing create_sql), a store failure (constraint,
    I/O, full disk), or the broker refusing our FETCH (VS_EAUTH, VS_EVERSION). Malformed
    messages are dropped with a rate-limited warning; a FETCH left unanswered for 3 s is sent
    again; a gap in a live sequence or a heartbeat's head beyond the position starts a catch-up.
*/
#ifndef VS_SUBSCRIBER_H_INCLUDED
#define VS_SUBSCRIBER_H_INCLUDED

#include <czmq.h>

#include "vs_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *db_path;           /* slave database, created if missing                     */
    bool verify_only;              /* no database (db_path unused): check and count only      */
    const char *broker_endpoint;   /* request endpoint, e.g. tcp://127.0.0.1:5570            */
    const char *live_endpoint;     /* live endpoint, e.g. tcp://127.0.0.1:5571               */
    const char *broker_public_key; /* broker's public key, Z85 (40 characters)               */
    zcert_t *cert;                 /* our key pair; borrowed until "OK"                      */
    const char *const *streams;    /* streams to follow, at least one                        */
    size_t stream_count;
    const char *const *tables; /* only these tables; table_count 0 means all             */
    size_t table_count;
    vs_logger_t logger;
} vs_subscriber_config_t;

/*  The actor function; args is a const vs_subscriber_config_t *, read before "OK" is sent.   */
void vs_subscriber_actor(zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif

#endif
