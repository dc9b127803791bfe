/*  vs_publisher.h - change capture on a master SQLite database and the publishing loop.

    The publisher attaches to a database that other programs keep writing to: it installs
    triggers that log the primary key of every changed row with a monotonically increasing
    version into _versync_log, wakes within a millisecond or two of a commit (inotify on the
    WAL, confirmed by PRAGMA data_version), reads whole transactions in one snapshot, sends
    them to the broker as change sets and deletes its log rows only after the broker's ACK.

    It runs as a czmq actor:

        vs_publisher_config_t config = { .db_path = "master.db", ... };
        zactor_t *publisher = zactor_new (vs_publisher_actor, &config);

    Pipe protocol (see also vs_broker.h, the same for every versync actor):
      - after zactor_new returns, the actor sends one message: "OK", or "ERROR" + reason frame;
        after "ERROR" the actor has ended (destroy it);
      - later it may send "FATAL" + reason once, when it cannot go on; it then waits for $TERM;
      - "$TERM" stops it cleanly: nothing half-written, unacknowledged changes stay logged.

    Behaviour worth knowing:
      - "ERROR" at start: missing database ("cannot open database 'x': ..."), a requested table
        that does not exist or cannot be replicated (no PRIMARY KEY, more than 8 key columns),
        an invalid stream name, a bad broker key or endpoint.
      - Tables without a PRIMARY KEY or with more than 8 key columns are skipped with a warning
        when replicating every table; tables created later are attached on the fly.
      - Under sustained load (3 ACKs in a row found commits waiting) a set waits until
        linger_ms after the previous read for more commits; an idle publisher sends at once.
      - Up to 8 change sets (8 MiB) are in flight. ERROR VS_ESTORE from the broker, or no ACK
        within 5 s, makes the publisher resend from the last acknowledged version.
      - "FATAL" when the broker refuses a set for another reason (VS_EAUTH, VS_EPROTO, ...),
        when a single row cannot fit in a change set (VS_MAX_CHANGESET), or when the database
        fails other than by being locked.
*/
#ifndef VS_PUBLISHER_H_INCLUDED
#define VS_PUBLISHER_H_INCLUDED

#include <czmq.h>

#include "vs_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VS_PUBLISHER_LINGER_DEFAULT_MS 20    /* linger_ms 0 means this          */
#define VS_PUBLISHER_LINGER_MAX_MS     10000 /* a larger linger_ms is refused   */

typedef struct {
    const char *db_path;           /* master database (must exist)                           */
    const char *broker_endpoint;   /* request endpoint, e.g. tcp://127.0.0.1:5570            */
    const char *broker_public_key; /* broker's public key, Z85 (40 characters)               */
    zcert_t *cert;                 /* our key pair; borrowed until the actor answered OK     */
    const char *stream;            /* NULL: the database file name without extension         */
    const char *const *tables;     /* only these tables; table_count 0 means all             */
    size_t table_count;
    size_t changeset_target;       /* cut a change set past this many bytes; 0: 256 KiB      */
    int linger_ms;                 /* under load, how long a set may wait after the previous
                                      read for more commits: 0: 20 ms, negative: never;
                                      at most 10000                                          */
    vs_logger_t logger;            /* where log lines go; {0} is silent                      */
} vs_publisher_config_t;

/*  The actor function; args is a const vs_publisher_config_t *, read before "OK" is sent.    */
void vs_publisher_actor(zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif

#endif
