/*  zap.h - the broker's ZAP handler (ZeroMQ RFC 27): authorises CURVE public keys.

    A key found among the public certificates of the publishers folder gets the role publisher,
    one in the subscribers folder the role subscriber, one in both gets both. The roles travel
    as the ZAP user id ("publisher", "subscriber" or "publisher,subscriber"), which libzmq
    attaches to every message of that peer as the "User-Id" property. Domain "versync.request"
    admits any role, "versync.live" only subscribers; every other key, domain or mechanism is
    denied (status 400), so the handshake fails and nothing of that peer reaches the broker.
    The folders are re-read when they change.

    The handler is a REP socket bound to inproc://zeromq.zap.01 in czmq's context; the owner
    polls vs_zap_socket and calls vs_zap_handle when it is readable. It must exist before any
    CURVE server socket binds.
*/
#ifndef VS_ZAP_H_INCLUDED
#define VS_ZAP_H_INCLUDED

#include <czmq.h>

#include "vs_proto.h"

#define VS_ZAP_DOMAIN_REQUEST "versync.request"
#define VS_ZAP_DOMAIN_LIVE    "versync.live"

typedef enum {
    VS_ROLE_PUBLISHER = 1,
    VS_ROLE_SUBSCRIBER = 2,
} vs_role_t;

typedef struct vs_zap vs_zap_t;

/*  Binds a new ZAP handler reading the two folders (borrowed strings; a missing folder holds
    no key). logger is borrowed and must outlive the handler. Returns VS_OK and hands it
    through *self_p, or VS_EIO (the ZAP endpoint is taken: another broker or zauth in this
    process) or VS_ENOMEM with a reason in why.                                                */
int vs_zap_new(const char *publishers_dir, const char *subscribers_dir, const vs_logger_t *logger,
               vs_zap_t **self_p, char *why, size_t why_size);

/*  Unbinds and frees the handler and sets *self_p to NULL; safe on NULL and twice.            */
void vs_zap_destroy(vs_zap_t **self_p);

/*  The REP socket to poll (borrowed).                                                         */
zsock_t *vs_zap_socket(vs_zap_t *self);

/*  Receives one ZAP request without blocking and answers it. Does nothing when none waits.    */
void vs_zap_handle(vs_zap_t *self);

/*  The roles (a set of vs_role_t bits) written in a user id; 0 for NULL or an unknown text.   */
unsigned vs_zap_roles(const char *user_id);

#endif
