/*  broker.c - the broker actor: endpoints, request handling, group commit, live fan-out.

    The actor polls its pipe, its ZAP handler and the request socket. When the request socket is
    readable it drains up to S_BATCH_MESSAGES messages (or S_BATCH_BYTES) without blocking.
    Every PUBLISH of the drain is staged in one history transaction; its reply waits in the
    batch, in arrival order, together with the errors and duplicate ACKs of the same drain. The
    batch is flushed (one commit, then one LIVE per stored set, then every reply in order) at
    the end of the drain, and before a FETCH or STATUS is answered, so a client's replies keep
    the order of its requests and nothing is read, ACKed or published before it is durable.
*/
#include "vs_broker.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"
#include "zap.h"

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93 /* a draft option of libzmq 4.3 */
#endif

#define S_DEFAULT_REQUEST_ENDPOINT "tcp://127.0.0.1:5570"
#define S_DEFAULT_LIVE_ENDPOINT    "tcp://127.0.0.1:5571"
#define S_DEFAULT_HEARTBEAT_MS     1000
#define S_BATCH_MESSAGES           1000
#define S_BATCH_BYTES              (32u * 1024 * 1024)
/*  Replies queued per client; past it ZeroMQ drops them. Room for a full batch of ACKs to one
    client, yet a bound on what a client that never reads can pin (each CHUNK is <= 80 MiB).  */
#define S_REQUEST_SNDHWM   (2 * S_BATCH_MESSAGES)
#define S_PEER_ERROR_LIMIT 16 /* errors in S_PEER_WINDOW_MS before a peer is ignored      */
#define S_PEER_WINDOW_MS   60000
#define S_PEER_IGNORE_MS   60000
#define S_PEER_TABLE_MAX   4096 /* peers tracked at once; more are served untracked          */
#define S_SAMPLE_BYTES     24   /* bytes of a bad message shown in the log                   */
/*  CHUNK bytes held for one client before its FETCHes are answered VS_EBUSY: two of the
    largest CHUNKs, so a client that reads its replies never meets it.                        */
#define S_DEFAULT_MAX_UNREAD (2 * (size_t) VS_MAX_FRAME)
#define S_OUTBOX_TABLE_MAX   65536 /* clients tracked at once; more are served unbounded     */

typedef enum {
    S_REPLY_STORED,    /* a staged PUBLISH: ACK after the commit, or ESTORE            */
    S_REPLY_DUPLICATE, /* a resend: ACK duplicate, or ESTORE when the batch fails      */
    S_REPLY_ERROR,     /* an ERROR decided on arrival                                  */
} s_reply_kind_t;

/*  One reply waiting for the batch's commit.                                                   */
typedef struct {
    s_reply_kind_t kind;
    zmq_msg_t routing_id;
    zmq_msg_t body; /* the request; stream and changeset borrow from it                */
    uint64_t request_id;
    vs_bytes_t stream;
    vs_bytes_t changeset;
    uint64_t last_version;
    uint64_t seq;
    uint8_t hash[VS_HASH_SIZE];
    uint32_t code;
    char reason[160];
} s_reply_t;

/*  The CHUNK bytes one client's connection has not taken yet. ZeroMQ frees each CHUNK (on its
    I/O thread) once it has written it to the connection; every CHUNK in flight holds a
    reference, so the counter outlives the client's entry in the table, and the broker.     */
typedef struct {
    atomic_size_t bytes;
    atomic_uint references;
} s_outbox_t;

/*  What the free function of one counted CHUNK needs.                                        */
typedef struct {
    s_outbox_t *outbox;
    size_t size;
} s_counted_t;

/*  A peer (routing id) that sent bad requests.                                               */
typedef struct {
    unsigned errors;
    int64_t window_start;
    int64_t ignored_until; /* 0 when served                                             */
} s_peer_t;

typedef struct {
    vs_logger_t logger;
    zsock_t *pipe;
    vs_history_t *history;
    vs_zap_t *zap;
    zsock_t *request;
    zsock_t *live;
    void *request_handle;
    void *live_handle;
    int heartbeat_ms;
    int64_t next_heartbeat;
    s_reply_t replies[S_BATCH_MESSAGES];
    size_t reply_count;
    size_t staged_count; /* S_REPLY_STORED replies in the batch                         */
    zhashx_t *peers;     /* hex routing id -> s_peer_t                                   */
    zhashx_t *outboxes;  /* hex routing id -> s_outbox_t, of clients that were sent CHUNKs */
    size_t max_unread;
    bool terminated;
} s_broker_t;

static void s_free_buffer(void *data, void *hint)
{
    (void) hint;
    free(data);
}

static void s_outbox_release(s_outbox_t *outbox)
{
    if (atomic_fetch_sub(&outbox->references, 1) == 1) {
        free(outbox);
    }
}

static void s_outbox_destroy(void **item)
{
    s_outbox_release((s_outbox_t *) *item);
    *item = NULL;
}

static void s_free_counted(void *data, void *hint)
{
    s_counted_t *counted = (s_counted_t *) hint;
    free(data);
    atomic_fetch_sub(&counted->outbox->bytes, counted->size);
    s_outbox_release(counted->outbox);
    free(counted);
}

/*  Encodes msg and sends it as one frame; the buffer goes to ZeroMQ without a copy. With an
    outbox, its bytes count there until ZeroMQ has written them.                              */
static int s_send_encoded(void *handle, const vs_msg_t *msg, int flags, s_outbox_t *outbox)
{
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = vs_msg_encode(msg, &data, &size);
    if (rc != VS_OK) {
        return rc;
    }
    s_counted_t *counted = outbox ? (s_counted_t *) malloc(sizeof *counted) : NULL;
    if (counted) {
        counted->outbox = outbox;
        counted->size = size;
        atomic_fetch_add(&outbox->references, 1);
        atomic_fetch_add(&outbox->bytes, size);
    }
    zmq_msg_t frame;
    if (zmq_msg_init_data(&frame, data, size, counted ? s_free_counted : s_free_buffer, counted) !=
        0) {
        if (counted) {
            s_free_counted(data, counted);
        } else {
            free(data);
        }
        return VS_ENOMEM;
    }
    if (zmq_msg_send(&frame, handle, flags | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return VS_EIO;
    }
    return VS_OK;
}

/*  Sends a reply to the peer of routing_id; the caller still closes routing_id. outbox, when
    not NULL, counts the reply's bytes until they are written.                               */
static void s_send_reply(s_broker_t *self, zmq_msg_t *routing_id, const vs_msg_t *reply,
                         s_outbox_t *outbox)
{
    if (zmq_msg_send(routing_id, self->request_handle, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        return; /* the peer is gone or its queue is full: ZeroMQ drops the reply          */
    }
    int rc = s_send_encoded(self->request_handle, reply, 0, outbox);
    if (rc != VS_OK) {
        /* The identity frame went out: end the message so the socket stays in step. */
        vs_log(&self->logger, VS_LOG_ERROR, "broker: cannot encode a reply: %s", vs_strerror(rc));
        vs_msg_t error = {.command = VS_CMD_ERROR,
                          .request_id = reply->request_id,
                          .code = rc == VS_EMSGSIZE ? VS_EMSGSIZE : VS_ESTORE};
        error.reason.data = "the broker could not build the reply";
        error.reason.size = strlen(error.reason.data);
        if (s_send_encoded(self->request_handle, &error, 0, NULL) != VS_OK) {
            zmq_send(self->request_handle, "", 0, ZMQ_DONTWAIT);
        }
    }
}

static void s_send_error(s_broker_t *self, zmq_msg_t *routing_id, uint64_t request_id,
                         uint32_t code, const char *reason)
{
    vs_msg_t error = {.command = VS_CMD_ERROR, .request_id = request_id, .code = code};
    error.reason.data = reason;
    error.reason.size = strlen(reason);
    s_send_reply(self, routing_id, &error, NULL);
}

/*  Sends a two-frame live message: topic, then body.                                          */
static void s_send_live(s_broker_t *self, vs_bytes_t stream, const vs_msg_t *body)
{
    char topic[VS_MAX_STREAM_NAME + 1];
    size_t topic_size = vs_live_topic(stream.data, stream.size, topic, sizeof topic);
    if (topic_size == 0) {
        return;
    }
    if (zmq_send(self->live_handle, topic, topic_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        return;
    }
    if (s_send_encoded(self->live_handle, body, 0, NULL) != VS_OK) {
        zmq_send(self->live_handle, "", 0, ZMQ_DONTWAIT); /* ends the message; dropped by SUB */
    }
}

/*  The hex text of a routing id, the key of the peer and outbox tables.                      */
static void s_routing_key(zmq_msg_t *routing_id, char *key, size_t key_size)
{
    const uint8_t *data = (const uint8_t *) zmq_msg_data(routing_id);
    size_t size = zmq_msg_size(routing_id);
    if (size * 2 + 1 > key_size) {
        size = (key_size - 1) / 2;
    }
    static const char digits[] = "0123456789abcdef";
    for (size_t index = 0; index < size; index++) {
        key[2 * index] = digits[data[index] >> 4];
        key[2 * index + 1] = digits[data[index] & 15];
    }
    key[2 * size] = 0;
}

/*  The peer entry of a routing id, or NULL when none is tracked. key receives the hex id.    */
static s_peer_t *s_peer_lookup(s_broker_t *self, zmq_msg_t *routing_id, char *key, size_t key_size)
{
    s_routing_key(routing_id, key, key_size);
    return (s_peer_t *) zhashx_lookup(self->peers, key);
}

/*  True when messages of this peer are dropped for now.                                      */
static bool s_peer_ignored(s_broker_t *self, zmq_msg_t *routing_id)
{
    if (zhashx_size(self->peers) == 0) {
        return false;
    }
    char key[2 * 256 + 1];
    s_peer_t *peer = s_peer_lookup(self, routing_id, key, sizeof key);
    if (!peer || peer->ignored_until == 0) {
        return false;
    }
    if (zclock_mono() < peer->ignored_until) {
        return true;
    }
    zhashx_delete(self->peers, key);
    return false;
}

/*  Drops peers whose error window and ignore time have passed.                                */
static void s_peer_sweep(s_broker_t *self, int64_t now)
{
    zlistx_t *stale = zlistx_new();
    if (!stale) {
        return;
    }
    for (s_peer_t *peer = (s_peer_t *) zhashx_first(self->peers); peer;
         peer = (s_peer_t *) zhashx_next(self->peers)) {
        if (now - peer->window_start >= S_PEER_WINDOW_MS && now >= peer->ignored_until) {
            zlistx_add_end(stale, (void *) zhashx_cursor(self->peers));
        }
    }
    for (const char *key = (const char *) zlistx_first(stale); key;
         key = (const char *) zlistx_next(stale)) {
        zhashx_delete(self->peers, key);
    }
    zlistx_destroy(&stale);
}

/*  Counts one bad request of a peer; past the limit the peer is ignored for a while.          */
static void s_peer_error(s_broker_t *self, zmq_msg_t *routing_id, const char *address)
{
    char key[2 * 256 + 1];
    int64_t now = zclock_mono();
    s_peer_t *peer = s_peer_lookup(self, routing_id, key, sizeof key);
    if (!peer) {
        if (zhashx_size(self->peers) >= S_PEER_TABLE_MAX) {
            s_peer_sweep(self, now);
            if (zhashx_size(self->peers) >= S_PEER_TABLE_MAX) {
                return;
            }
        }
        peer = (s_peer_t *) calloc(1, sizeof *peer);
        if (!peer) {
            return;
        }
        peer->window_start = now;
        if (zhashx_insert(self->peers, key, peer) != 0) {
            free(peer);
            return;
        }
    }
    if (now - peer->window_start >= S_PEER_WINDOW_MS) {
        peer->window_start = now;
        peer->errors = 0;
    }
    peer->errors++;
    if (peer->errors > S_PEER_ERROR_LIMIT && peer->ignored_until == 0) {
        peer->ignored_until = now + S_PEER_IGNORE_MS;
        vs_log(&self->logger, VS_LOG_WARNING,
               "broker: ignoring peer %s (%s) for %d s after %u bad requests", key, address,
               S_PEER_IGNORE_MS / 1000, peer->errors);
    }
}

/*  The outbox of a client, created on first use; NULL when the table is full or memory short
    (that client's CHUNKs are then not bounded).                                              */
static s_outbox_t *s_outbox_of(s_broker_t *self, zmq_msg_t *routing_id)
{
    char key[2 * 256 + 1];
    s_routing_key(routing_id, key, sizeof key);
    s_outbox_t *outbox = (s_outbox_t *) zhashx_lookup(self->outboxes, key);
    if (outbox || zhashx_size(self->outboxes) >= S_OUTBOX_TABLE_MAX) {
        return outbox;
    }
    outbox = (s_outbox_t *) calloc(1, sizeof *outbox);
    if (!outbox) {
        return NULL;
    }
    atomic_init(&outbox->bytes, 0);
    atomic_init(&outbox->references, 1); /* the table's */
    if (zhashx_insert(self->outboxes, key, outbox) != 0) {
        free(outbox);
        return NULL;
    }
    return outbox;
}

/*  Forgets the outboxes with nothing in flight.                                              */
static void s_outbox_sweep(s_broker_t *self)
{
    zlistx_t *idle = zlistx_new();
    if (!idle) {
        return;
    }
    for (s_outbox_t *outbox = (s_outbox_t *) zhashx_first(self->outboxes); outbox;
         outbox = (s_outbox_t *) zhashx_next(self->outboxes)) {
        if (atomic_load(&outbox->bytes) == 0) {
            zlistx_add_end(idle, (void *) zhashx_cursor(self->outboxes));
        }
    }
    for (const char *key = (const char *) zlistx_first(idle); key;
         key = (const char *) zlistx_next(idle)) {
        zhashx_delete(self->outboxes, key);
    }
    zlistx_destroy(&idle);
}

static void s_reply_release(s_reply_t *reply)
{
    zmq_msg_close(&reply->routing_id);
    zmq_msg_close(&reply->body);
}

/*  Commits the batch, then sends one LIVE per stored set, then every reply in arrival order.
    LIVE goes first because the slaves' latency is the one a user sees: the I/O thread sends
    in the order it is handed messages. Neither leaves before the commit is durable.          */
static void s_flush(s_broker_t *self)
{
    bool stored = true;
    if (vs_history_pending(self->history)) {
        int64_t started = zclock_usecs();
        if (vs_history_commit(self->history) != VS_OK) {
            stored = false;
            vs_log(&self->logger, VS_LOG_ERROR,
                   "broker: cannot store a batch of %zu change sets: %s; answered ESTORE",
                   self->staged_count, vs_history_error(self->history));
        } else {
            vs_log(&self->logger, VS_LOG_DEBUG, "broker: committed %zu change sets in %lld us",
                   self->staged_count, (long long) (zclock_usecs() - started));
        }
    }
    for (size_t index = 0; stored && index < self->reply_count; index++) {
        s_reply_t *reply = &self->replies[index];
        if (reply->kind != S_REPLY_STORED) {
            continue;
        }
        vs_msg_t live = {.command = VS_CMD_LIVE,
                         .stream = reply->stream,
                         .seq = reply->seq,
                         .changeset = reply->changeset};
        live.hash.data = (const char *) reply->hash;
        live.hash.size = VS_HASH_SIZE;
        s_send_live(self, reply->stream, &live);
        if (reply->seq == 1) {
            vs_log(&self->logger, VS_LOG_INFO, "broker: stream '%.*s' created",
                   (int) reply->stream.size, reply->stream.data);
        }
    }
    for (size_t index = 0; index < self->reply_count; index++) {
        s_reply_t *reply = &self->replies[index];
        if (reply->kind == S_REPLY_ERROR || !stored) {
            const char *reason = reply->kind == S_REPLY_ERROR
                                     ? reply->reason
                                     : "the broker could not store the change set; resend it";
            s_send_error(self, &reply->routing_id, reply->request_id,
                         reply->kind == S_REPLY_ERROR ? reply->code : VS_ESTORE, reason);
            continue;
        }
        vs_msg_t ack = {.command = VS_CMD_ACK,
                        .request_id = reply->request_id,
                        .stream = reply->stream,
                        .last_version = reply->last_version,
                        .seq = reply->seq,
                        .duplicate = reply->kind == S_REPLY_DUPLICATE};
        s_send_reply(self, &reply->routing_id, &ack, NULL);
    }
    for (size_t index = 0; index < self->reply_count; index++) {
        s_reply_release(&self->replies[index]);
    }
    self->reply_count = 0;
    self->staged_count = 0;
}

/*  Queues an ERROR for the request in reply (kept in the batch for ordering).                */
static void s_queue_error(s_broker_t *self, s_reply_t *reply, uint64_t request_id, uint32_t code,
                          const char *reason)
{
    reply->kind = S_REPLY_ERROR;
    reply->request_id = request_id;
    reply->code = code;
    snprintf(reply->reason, sizeof reply->reason, "%s", reason);
    self->reply_count++;
}

static bool s_has_role(zmq_msg_t *body, unsigned role)
{
    return (vs_zap_roles(zmq_msg_gets(body, "User-Id")) & role) != 0;
}

static void s_handle_publish(s_broker_t *self, s_reply_t *reply, const vs_msg_t *request,
                             const char *address)
{
    if (!s_has_role(&reply->body, VS_ROLE_PUBLISHER)) {
        s_queue_error(self, reply, request->request_id, VS_EAUTH,
                      "PUBLISH needs the publisher role");
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    if (request->changeset.size > VS_MAX_CHANGESET) {
        s_queue_error(self, reply, request->request_id, VS_EMSGSIZE, "change set over 64 MiB");
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    vs_changeset_t changeset;
    const char *why = NULL;
    int rc = vs_changeset_open(&changeset, request->changeset.data, request->changeset.size, &why);
    if (rc != VS_OK) {
        char reason[sizeof reply->reason];
        snprintf(reason, sizeof reason, "bad change set: %s", why ? why : vs_strerror(rc));
        s_queue_error(self, reply, request->request_id, (uint32_t) rc, reason);
        vs_log(&self->logger, VS_LOG_WARNING,
               "broker: rejected a change set for stream '%.*s' from %s: %s",
               (int) request->stream.size, request->stream.data, address, reason);
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    uint64_t first_version = changeset.first_version;
    uint64_t last_version = changeset.last_version;
    vs_changeset_close(&changeset);

    /* A publisher the broker does not know (new, or forgotten with a batch that failed or
       died before its first commit) says which version it holds acknowledged (acked): its
       first set here must follow it. Else an earlier set was lost on the way while this one
       was still queued, and storing it would let the publisher trim versions never stored.
       A publisher that sends no acked (before this field) is taken as it comes.             */
    if (request->has_acked && first_version > request->acked + 1 &&
        !vs_history_knows(self->history, request->stream, request->publisher)) {
        char reason[sizeof reply->reason];
        snprintf(reason, sizeof reason,
                 "versions must follow: a new publisher acknowledged up to %llu, this set "
                 "starts at %llu; resend from the acknowledged version",
                 (unsigned long long) request->acked, (unsigned long long) first_version);
        s_queue_error(self, reply, request->request_id, VS_EGAP, reason);
        return;
    }
    vs_history_receipt_t receipt;
    rc = vs_history_append(self->history, request->stream, request->publisher, first_version,
                           last_version, request->changeset.data, request->changeset.size,
                           &receipt);
    if (rc == VS_EGAP) {
        /* Not the peer's fault: an earlier set was lost on the way (a broker crash, say)
           while later ones were still queued. It resends from its acknowledged version.   */
        char reason[sizeof reply->reason];
        snprintf(reason, sizeof reason,
                 "versions must follow: stored up to %llu, this set starts at %llu; resend "
                 "from the acknowledged version",
                 (unsigned long long) receipt.last_version, (unsigned long long) first_version);
        s_queue_error(self, reply, request->request_id, VS_EGAP, reason);
        return;
    }
    if (rc == VS_EINVAL) {
        s_queue_error(self, reply, request->request_id, VS_EPROTO,
                      "invalid stream name or publisher id");
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    reply->kind = receipt.duplicate ? S_REPLY_DUPLICATE : S_REPLY_STORED;
    reply->request_id = request->request_id;
    reply->stream = request->stream;
    reply->changeset = request->changeset;
    reply->last_version = last_version;
    reply->seq = receipt.seq;
    memcpy(reply->hash, receipt.hash, VS_HASH_SIZE);
    self->reply_count++;
    if (rc != VS_OK) {
        /* The batch is lost: answer it now, so that the next sets start a fresh one.        */
        self->staged_count++;
        s_flush(self);
    } else if (!receipt.duplicate) {
        self->staged_count++;
    }
}

static void s_handle_fetch(s_broker_t *self, s_reply_t *reply, const vs_msg_t *request,
                           const char *address)
{
    if (!s_has_role(&reply->body, VS_ROLE_SUBSCRIBER)) {
        s_queue_error(self, reply, request->request_id, VS_EAUTH,
                      "FETCH needs the subscriber role");
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    s_outbox_t *outbox = s_outbox_of(self, &reply->routing_id);
    size_t unread = outbox ? atomic_load(&outbox->bytes) : 0;
    if (unread >= self->max_unread) {
        char reason[sizeof reply->reason];
        snprintf(reason, sizeof reason,
                 "%zu bytes of CHUNKs not read yet: read them, then ask again", unread);
        s_send_error(self, &reply->routing_id, request->request_id, VS_EBUSY, reason);
        s_reply_release(reply);
        return;
    }
    s_flush(self);
    vs_history_chunk_t chunk;
    int rc = vs_history_fetch(self->history, request->stream, request->since, request->max_bytes,
                              &chunk);
    if (rc == VS_OK) {
        vs_msg_t answer = {.command = VS_CMD_CHUNK,
                           .request_id = request->request_id,
                           .stream = request->stream,
                           .head = chunk.head,
                           .entry_count = chunk.entry_count,
                           .entries = chunk.entries};
        answer.hash.data = (const char *) chunk.head_hash;
        answer.hash.size = VS_HASH_SIZE;
        s_send_reply(self, &reply->routing_id, &answer, outbox);
    } else {
        char reason[sizeof reply->reason];
        if (rc == VS_EBEHIND) {
            snprintf(reason, sizeof reason, "since %llu is past the head %llu of stream '%.*s'",
                     (unsigned long long) request->since, (unsigned long long) chunk.head,
                     (int) request->stream.size, request->stream.data);
        } else {
            snprintf(reason, sizeof reason, "cannot read the history: %s",
                     rc == VS_ESTORE ? vs_history_error(self->history) : vs_strerror(rc));
            vs_log(&self->logger, VS_LOG_ERROR, "broker: FETCH of stream '%.*s' failed: %s",
                   (int) request->stream.size, request->stream.data, reason);
        }
        /* local codes (VS_ENOMEM) do not travel: the store failed to answer                */
        s_send_error(self, &reply->routing_id, request->request_id,
                     rc == VS_EBEHIND ? VS_EBEHIND : VS_ESTORE, reason);
    }
    s_reply_release(reply);
}

static void s_handle_status(s_broker_t *self, s_reply_t *reply, const vs_msg_t *request,
                            const char *address)
{
    if (!s_has_role(&reply->body, VS_ROLE_PUBLISHER | VS_ROLE_SUBSCRIBER)) {
        s_queue_error(self, reply, request->request_id, VS_EAUTH, "STATUS needs a role");
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    s_flush(self);
    vs_stream_info_t *streams = NULL;
    size_t count = 0;
    if (vs_history_status(self->history, &streams, &count) == VS_OK) {
        vs_msg_t answer = {.command = VS_CMD_STATUS_REPLY,
                           .request_id = request->request_id,
                           .stream_count = count,
                           .streams = streams};
        s_send_reply(self, &reply->routing_id, &answer, NULL);
        vs_history_status_free(&streams, count);
    } else {
        s_send_error(self, &reply->routing_id, request->request_id, VS_ESTORE, "out of memory");
    }
    s_reply_release(reply);
}

/*  Handles one received request whose routing id and body are in reply (owned by it).        */
static void s_handle_request(s_broker_t *self, s_reply_t *reply, size_t frames)
{
    const char *address = zmq_msg_gets(&reply->body, "Peer-Address");
    if (!address) {
        address = "unknown address";
    }
    if (frames != 2) {
        char reason[64];
        snprintf(reason, sizeof reason, "a request has 1 body frame, not %zu", frames - 1);
        vs_log(&self->logger, VS_LOG_WARNING, "broker: bad request from %s: %s", address, reason);
        s_queue_error(self, reply, 0, VS_EPROTO, reason);
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    const void *data = zmq_msg_data(&reply->body);
    size_t size = zmq_msg_size(&reply->body);
    vs_msg_t request;
    const char *why = NULL;
    int rc = vs_msg_decode(&request, data, size, &why);
    if (rc != VS_OK) {
        char sample[4 * S_SAMPLE_BYTES + 8];
        vs_escape_sample(data, size < S_SAMPLE_BYTES ? size : S_SAMPLE_BYTES, sample,
                         sizeof sample);
        vs_log(&self->logger, VS_LOG_WARNING, "broker: bad request from %s (%zu bytes '%s%s'): %s",
               address, size, sample, size > S_SAMPLE_BYTES ? "..." : "",
               why ? why : vs_strerror(rc));
        s_queue_error(self, reply, request.request_id, (uint32_t) rc, why ? why : vs_strerror(rc));
        vs_msg_clear(&request);
        s_peer_error(self, &reply->routing_id, address);
        return;
    }
    switch (request.command) {
    case VS_CMD_PUBLISH: s_handle_publish(self, reply, &request, address); break;
    case VS_CMD_FETCH: s_handle_fetch(self, reply, &request, address); break;
    case VS_CMD_STATUS: s_handle_status(self, reply, &request, address); break;
    default: {
        char reason[64];
        snprintf(reason, sizeof reason, "command %d is not a request", (int) request.command);
        s_queue_error(self, reply, request.request_id, VS_ECOMMAND, reason);
        s_peer_error(self, &reply->routing_id, address);
        break;
    }
    }
    vs_msg_clear(&request);
}

/*  Receives what the request socket holds, up to one batch, then flushes the batch.           */
static void s_drain(s_broker_t *self)
{
    size_t messages = 0;
    size_t bytes = 0;
    while (messages < S_BATCH_MESSAGES && bytes < S_BATCH_BYTES) {
        /* each message adds at most one reply, and a flush empties the batch                 */
        assert(self->reply_count < S_BATCH_MESSAGES);
        s_reply_t *reply = &self->replies[self->reply_count];
        memset(reply, 0, offsetof(s_reply_t, reason));
        reply->reason[0] = 0;
        zmq_msg_init(&reply->routing_id);
        zmq_msg_init(&reply->body);
        if (zmq_msg_recv(&reply->routing_id, self->request_handle, ZMQ_DONTWAIT) < 0) {
            s_reply_release(reply);
            break;
        }
        messages++;
        if (!zmq_msg_more(&reply->routing_id) ||
            zmq_msg_recv(&reply->body, self->request_handle, ZMQ_DONTWAIT) < 0) {
            s_reply_release(reply);
            continue;
        }
        size_t frames = 2;
        if (zmq_msg_more(&reply->body)) {
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            bool more = true;
            while (more && zmq_msg_recv(&extra, self->request_handle, ZMQ_DONTWAIT) >= 0) {
                frames++;
                more = zmq_msg_more(&extra);
            }
            zmq_msg_close(&extra);
        }
        bytes += zmq_msg_size(&reply->body);
        if (s_peer_ignored(self, &reply->routing_id)) {
            s_reply_release(reply);
            continue;
        }
        s_handle_request(self, reply, frames);
    }
    s_flush(self);
    /*  After the replies and live messages: the checkpoint's fsyncs delay no ACK.            */
    if (vs_history_checkpoint(self->history) != VS_OK) {
        vs_log(&self->logger, VS_LOG_WARNING, "broker: %s", vs_history_error(self->history));
    }
}

static void s_heartbeat_stream(void *arg, const char *stream, uint64_t head,
                               const uint8_t head_hash[VS_HASH_SIZE])
{
    s_broker_t *self = (s_broker_t *) arg;
    vs_msg_t heartbeat = {.command = VS_CMD_HEARTBEAT, .head = head};
    heartbeat.stream.data = stream;
    heartbeat.stream.size = strlen(stream);
    heartbeat.hash.data = (const char *) head_hash;
    heartbeat.hash.size = VS_HASH_SIZE;
    s_send_live(self, heartbeat.stream, &heartbeat);
}

static void s_handle_pipe(s_broker_t *self)
{
    zmsg_t *command = zmsg_recv(self->pipe);
    if (!command) {
        self->terminated = true; /* interrupted */
        return;
    }
    char *name = zmsg_popstr(command);
    if (name && streq(name, "$TERM")) {
        self->terminated = true;
    } else if (name && streq(name, "ENDPOINTS")) {
        char *request = zsock_last_endpoint(self->request);
        char *live = zsock_last_endpoint(self->live);
        zstr_sendx(self->pipe, request ? request : "", live ? live : "", NULL);
        zstr_free(&request);
        zstr_free(&live);
    } else {
        vs_log(&self->logger, VS_LOG_WARNING, "broker: unknown pipe command '%s'",
               name ? name : "");
    }
    zstr_free(&name);
    zmsg_destroy(&command);
}

/*  A CURVE server socket with its ZAP domain, bound to endpoint. Returns NULL with why.       */
static zsock_t *s_server_socket(int type, zcert_t *cert, const char *domain, const char *endpoint,
                                const char *what, char *why, size_t why_size)
{
    zsock_t *socket = zsock_new(type);
    if (!socket) {
        snprintf(why, why_size, "cannot create the %s socket", what);
        return NULL;
    }
    zsock_set_linger(socket, 0);
    zsock_set_maxmsgsize(socket, (int) VS_MAX_FRAME);
    if (type == ZMQ_ROUTER) {
        zsock_set_sndhwm(socket, S_REQUEST_SNDHWM);
    }
    zsock_set_curve_server(socket, 1);
    zcert_apply(cert, socket);
    zsock_set_zap_domain(socket, domain);
    int enforce = 1;
    if (zmq_setsockopt(zsock_resolve(socket), ZMQ_ZAP_ENFORCE_DOMAIN, &enforce, sizeof enforce) !=
            0 &&
        zmq_errno() != EINVAL) {
        snprintf(why, why_size, "cannot enforce the ZAP domain of the %s socket: %s", what,
                 zmq_strerror(zmq_errno()));
        zsock_destroy(&socket);
        return NULL;
    }
    if (zsock_bind(socket, "%s", endpoint) == -1) {
        snprintf(why, why_size, "cannot bind %s endpoint '%s': %s", what, endpoint,
                 zmq_strerror(zmq_errno()));
        zsock_destroy(&socket);
        return NULL;
    }
    return socket;
}

static void s_peer_destroy(void **item)
{
    free(*item);
    *item = NULL;
}

/*  Sets up everything from the config; on failure writes why and returns -1.                 */
static int s_start(s_broker_t *self, const vs_broker_config_t *config, char *why, size_t why_size)
{
    if (!config) {
        snprintf(why, why_size, "no configuration");
        return -1;
    }
    self->logger = config->logger;
    if (!config->data_dir || !*config->data_dir) {
        snprintf(why, why_size, "no data folder configured");
        return -1;
    }
    if (!config->cert) {
        snprintf(why, why_size, "no broker certificate configured");
        return -1;
    }
    if (config->heartbeat_ms < 0) {
        snprintf(why, why_size, "heartbeat interval %d ms is negative", config->heartbeat_ms);
        return -1;
    }
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms : S_DEFAULT_HEARTBEAT_MS;
    const char *request_endpoint =
        config->request_endpoint ? config->request_endpoint : S_DEFAULT_REQUEST_ENDPOINT;
    const char *live_endpoint =
        config->live_endpoint ? config->live_endpoint : S_DEFAULT_LIVE_ENDPOINT;
    self->peers = zhashx_new();
    if (!self->peers) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    zhashx_set_destructor(self->peers, s_peer_destroy);
    self->outboxes = zhashx_new();
    if (!self->outboxes) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    zhashx_set_destructor(self->outboxes, s_outbox_destroy);
    self->max_unread = config->max_unread_bytes ? config->max_unread_bytes : S_DEFAULT_MAX_UNREAD;
    if (vs_history_open(config->data_dir, &self->logger, &self->history, why, why_size) != VS_OK) {
        return -1;
    }
    if (!config->publishers_dir || !config->subscribers_dir) {
        vs_log(&self->logger, VS_LOG_WARNING,
               "broker: no %s folder configured: no key has that role",
               !config->publishers_dir ? "publishers" : "subscribers");
    }
    /* The ZAP handler comes first: a CURVE server bound without one admits any client.       */
    if (vs_zap_new(config->publishers_dir, config->subscribers_dir, &self->logger, &self->zap, why,
                   why_size) != VS_OK) {
        return -1;
    }
    self->request = s_server_socket(ZMQ_ROUTER, config->cert, VS_ZAP_DOMAIN_REQUEST,
                                    request_endpoint, "request", why, why_size);
    if (!self->request) {
        return -1;
    }
    self->live = s_server_socket(ZMQ_PUB, config->cert, VS_ZAP_DOMAIN_LIVE, live_endpoint, "live",
                                 why, why_size);
    if (!self->live) {
        return -1;
    }
    self->request_handle = zsock_resolve(self->request);
    self->live_handle = zsock_resolve(self->live);
    char *request_bound = zsock_last_endpoint(self->request);
    char *live_bound = zsock_last_endpoint(self->live);
    vs_log(&self->logger, VS_LOG_NOTICE,
           "broker: serving %zu streams from %s/history.db; requests on %s, live on %s",
           vs_history_stream_count(self->history), config->data_dir,
           request_bound ? request_bound : request_endpoint,
           live_bound ? live_bound : live_endpoint);
    zstr_free(&request_bound);
    zstr_free(&live_bound);
    self->next_heartbeat = zclock_mono() + self->heartbeat_ms;
    return 0;
}

static void s_stop(s_broker_t *self)
{
    if (self->history) {
        s_flush(self);
    }
    zsock_destroy(&self->request);
    zsock_destroy(&self->live);
    vs_zap_destroy(&self->zap);
    vs_history_destroy(&self->history);
    zhashx_destroy(&self->peers);
    zhashx_destroy(&self->outboxes); /* CHUNKs ZeroMQ still holds keep theirs alive */
}

/*  Reports a failure that stops the broker, then waits for $TERM.                            */
static void s_fatal(s_broker_t *self, const char *reason)
{
    vs_log(&self->logger, VS_LOG_ERROR, "broker: stopped: %s", reason);
    zstr_sendx(self->pipe, "FATAL", reason, NULL);
    while (!self->terminated) {
        zmsg_t *command = zmsg_recv(self->pipe);
        if (!command) {
            break;
        }
        char *name = zmsg_popstr(command);
        if (name && streq(name, "$TERM")) {
            self->terminated = true;
        }
        zstr_free(&name);
        zmsg_destroy(&command);
    }
}

static void s_run(s_broker_t *self)
{
    zmq_pollitem_t items[] = {
        {zsock_resolve(self->pipe), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(vs_zap_socket(self->zap)), 0, ZMQ_POLLIN, 0},
        {self->request_handle, 0, ZMQ_POLLIN, 0},
    };
    while (!self->terminated) {
        int64_t now = zclock_mono();
        long timeout = self->next_heartbeat > now ? (long) (self->next_heartbeat - now) : 0;
        int rc = zmq_poll(items, 3, timeout);
        if (rc < 0) {
            if (zmq_errno() == EINTR) {
                continue;
            }
            if (zmq_errno() == ETERM) {
                break;
            }
            char reason[128];
            snprintf(reason, sizeof reason, "cannot poll: %s", zmq_strerror(zmq_errno()));
            s_fatal(self, reason);
            break;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            vs_zap_handle(self->zap);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            s_handle_pipe(self);
        }
        if (!self->terminated && (items[2].revents & ZMQ_POLLIN)) {
            s_drain(self);
        }
        now = zclock_mono();
        if (now >= self->next_heartbeat) {
            vs_history_each_stream(self->history, s_heartbeat_stream, self);
            self->next_heartbeat = now + self->heartbeat_ms;
            if (zhashx_size(self->peers) > 0) {
                s_peer_sweep(self, now);
            }
            if (zhashx_size(self->outboxes) > 0) {
                s_outbox_sweep(self);
            }
        }
    }
}

void vs_broker_actor(zsock_t *pipe, void *args)
{
    s_broker_t *self = (s_broker_t *) calloc(1, sizeof *self);
    zsock_signal(pipe, 0);
    if (!self) {
        zstr_sendx(pipe, "ERROR", "out of memory", NULL);
        return;
    }
    self->pipe = pipe;
    char why[512] = "";
    if (s_start(self, (const vs_broker_config_t *) args, why, sizeof why) != 0) {
        vs_log(&self->logger, VS_LOG_ERROR, "broker: cannot start: %s", why);
        s_stop(self);
        free(self);
        zstr_sendx(pipe, "ERROR", why, NULL);
        return;
    }
    zstr_send(pipe, "OK");
    s_run(self);
    s_stop(self);
    vs_log(&self->logger, VS_LOG_NOTICE, "broker: stopped");
    free(self);
}
