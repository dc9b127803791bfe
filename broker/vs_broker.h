/*  vs_broker.h - the versync broker: authorisation, stream sequencing, durable history,
    catch-up serving and live fan-out.

    The broker binds a request endpoint (ROUTER) and a live endpoint (PUB), both CURVE servers.
    A ZAP handler of its own authorises each client's public key against two folders of public
    certificates: publishers and subscribers. Per stream, it dedupes change sets by (stream,
    publisher id, version), gives each accepted set the stream's next sequence and chain hash,
    commits it to history.db under data_dir (WAL, synchronous=FULL, many sets per commit under
    load) and only then ACKs the publisher and publishes it live. It answers FETCH with bounded
    chunks of history, STATUS with every stream's head, and sends a HEARTBEAT per stream at least
    every heartbeat_ms.

    It runs as a czmq actor:

        vs_broker_config_t config = { .data_dir = "data", ... };
        zactor_t *broker = zactor_new (vs_broker_actor, &config);

    Pipe protocol (the same for every versync actor):
      - after zactor_new returns, the actor sends one message: "OK", or "ERROR" + reason frame;
        after "ERROR" the actor has ended (destroy it);
      - later it may send "FATAL" + reason once, when it cannot go on; it then waits for $TERM;
      - "$TERM" stops it cleanly: every ACKed change set is committed.
      - "ENDPOINTS" (request) answers two frames: the request and live endpoints as bound
        (useful with port 0 / ephemeral binds in tests).

    "ERROR" reasons are one line, e.g. "cannot bind request endpoint 'tcp://127.0.0.1:5570':
    Address already in use", "cannot bind ZAP handler ..." (only one broker, or zauth, per
    process: the ZAP endpoint is per ZeroMQ context), "history.db is inconsistent: ...".

    Bad requests are answered ERROR with a code and reason and logged as one warning line; a
    peer with more than 16 bad requests in 60 s is ignored for 60 s. A failed commit (full
    disk, I/O error, locked database) answers each PUBLISH of the batch ERROR VS_ESTORE and
    the broker goes on serving.
*/
#ifndef VS_BROKER_H_INCLUDED
#define VS_BROKER_H_INCLUDED

#include <czmq.h>

#include "vs_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *data_dir;         /* created if missing; holds history.db                   */
    zcert_t *cert;                /* broker key pair; borrowed until "OK"                   */
    const char *publishers_dir;   /* public certificates allowed to publish                 */
    const char *subscribers_dir;  /* public certificates allowed to subscribe               */
    const char *request_endpoint; /* NULL: tcp://127.0.0.1:5570; port * binds an ephemeral one */
    const char *live_endpoint;    /* NULL: tcp://127.0.0.1:5571                             */
    int heartbeat_ms;             /* 0: 1000                                                */
    size_t max_unread_bytes;      /* CHUNK bytes held for one client before its FETCHes are
                                     answered VS_EBUSY; 0: 160 MiB                          */
    vs_logger_t logger;
} vs_broker_config_t;

/*  The actor function; args is a const vs_broker_config_t *, read before "OK" is sent.       */
void vs_broker_actor(zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif

#endif
