/*  subscriber.c - the subscriber actor: catch-up over FETCH, then live, with gap detection
    and batched exactly-once apply.

    Per stream the actor is CATCHING_UP (FETCH since its position, apply each CHUNK, repeat
    until the position reaches the CHUNK's head, while buffering that stream's live messages)
    or LIVE (apply the next sequence, discard older ones, catch up on a gap seen in a live
    sequence or a heartbeat's head). Change sets go into the store's open batch, which is
    committed when no input is immediately waiting or a bound is reached, and only when every
    stream in it stands on a CONSISTENT set.                                                   */
#include "vs_subscriber.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"

#define S_TICK_MS              100    /* poll timeout while nothing is to be committed        */
#define S_WAIT_WARNING_MS      10000  /* warn of a batch held open by a stream this long       */
#define S_FETCH_TIMEOUT_MS     3000   /* resend a FETCH left without an answer this long, ... */
#define S_FETCH_TIMEOUT_MAX_MS 60000  /* ... doubling at each resend up to this               */
#define S_RETRY_MS             1000   /* after an ERROR or an odd CHUNK, ask again after this */
#define S_UNREACHABLE_RETRY_MS 100    /* no connection to the request endpoint yet: retry     */
#define S_BATCH_ROWS           100000 /* commit a batch past this many rows ...               */
#define S_BATCH_MS             50     /* ... or past this age, when consistent                */
#define S_BUFFER_BYTES         (64u << 20) /* live bytes buffered per stream while catching up     */
#define S_WARNING_INTERVAL_MS  10000  /* at most one warning per kind this often              */
#define S_LIVE_HWM             100000 /* live messages queued by ZeroMQ before it drops      */

typedef enum {
    S_CATCHING_UP,
    S_LIVE,
} s_phase_t;

/*  A live change set received while its stream was catching up.                              */
typedef struct {
    uint64_t seq;
    uint8_t hash[VS_HASH_SIZE];
    zframe_t *body; /* owns the bytes that changeset points into */
    const void *changeset;
    size_t size;
} s_buffered_t;

typedef struct {
    char *name;
    char topic[VS_MAX_STREAM_NAME + 2];
    size_t topic_size;
    s_phase_t phase;
    uint64_t request_id;  /* the FETCH waiting for its CHUNK; 0 when none            */
    int64_t request_sent; /* when it was sent (zclock_mono)                          */
    int64_t request_timeout; /* ms until it is sent again, with the same request id  */
    int64_t retry_at;     /* when no FETCH waits: when to send the next one          */
    s_buffered_t *buffer; /* live sets received while catching up, in arrival order  */
    size_t buffer_count;
    size_t buffer_capacity;
    size_t buffer_bytes;
} s_stream_t;

typedef struct {
    zsock_t *pipe;
    vs_logger_t logger;
    vs_apply_t *store;
    zsock_t *sub;
    zsock_t *dealer;
    zpoller_t *poller;
    s_stream_t *streams;
    size_t stream_count;
    uint64_t next_request_id;
    int64_t batch_started;
    int64_t last_wait_warning; /* when a held-open batch was last reported */
    bool terminated;
    bool failed;    /* FATAL sent: only $TERM is served now */
    size_t dropped; /* malformed messages since the last warning */
    int64_t last_drop_warning;
    int64_t last_send_warning;
} s_subscriber_t;

/* ------------------------------------------------------------------------------------------ */

static void s_buffer_clear(s_stream_t *stream)
{
    for (size_t index = 0; index < stream->buffer_count; index++) {
        zframe_destroy(&stream->buffer[index].body);
    }
    stream->buffer_count = 0;
    stream->buffer_bytes = 0;
}

static void s_subscriber_destroy(s_subscriber_t **self_p)
{
    if (!*self_p) {
        return;
    }
    s_subscriber_t *self = *self_p;
    zpoller_destroy(&self->poller);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->dealer);
    vs_apply_close(&self->store);
    for (size_t index = 0; index < self->stream_count; index++) {
        s_buffer_clear(&self->streams[index]);
        free(self->streams[index].buffer);
        free(self->streams[index].name);
    }
    free(self->streams);
    free(self);
    *self_p = NULL;
}

/*  Sends FATAL once, drops the sockets and waits for $TERM. Nothing of the open batch is
    kept.                                                                                      */
static void s_fatal(s_subscriber_t *self, const char *reason)
{
    if (self->failed) {
        return;
    }
    self->failed = true;
    vs_apply_rollback(self->store);
    vs_log(&self->logger, VS_LOG_ERROR, "subscriber stopped: %s", reason);
    zstr_sendm(self->pipe, "FATAL");
    zstr_send(self->pipe, reason);
    zpoller_remove(self->poller, self->sub);
    zpoller_remove(self->poller, self->dealer);
    zsock_destroy(&self->sub);
    zsock_destroy(&self->dealer);
}

/*  Counts a dropped malformed message; warns at most once per interval.                      */
static void s_drop(s_subscriber_t *self, const char *what, const char *why)
{
    self->dropped++;
    int64_t now = zclock_mono();
    if (self->last_drop_warning == 0 || now - self->last_drop_warning >= S_WARNING_INTERVAL_MS) {
        vs_log(&self->logger, VS_LOG_WARNING, "dropped a malformed %s: %s (%zu dropped)", what, why,
               self->dropped);
        self->last_drop_warning = now;
        self->dropped = 0;
    }
}

static s_stream_t *s_stream_find(s_subscriber_t *self, vs_bytes_t name)
{
    for (size_t index = 0; index < self->stream_count; index++) {
        if (vs_bytes_equal(name, self->streams[index].name)) {
            return &self->streams[index];
        }
    }
    return NULL;
}

static uint64_t s_position(s_subscriber_t *self, s_stream_t *stream, uint8_t *hash)
{
    uint64_t seq = 0;
    /*  The stream was loaded at start, so this cannot fail; a failure reads as 0.             */
    if (vs_apply_position(self->store, stream->name, &seq, hash) != VS_OK) {
        seq = 0;
    }
    return seq;
}

/* ------------------------------------------------------------------------------------------
    Applying and committing.                                                                  */

/*  Adds one set to the batch. Returns VS_OK (applied or already had), VS_EGAP (nothing
    changed), or another code after sending FATAL.                                              */
static int s_apply(s_subscriber_t *self, s_stream_t *stream, uint64_t seq, const uint8_t *hash,
                   const void *changeset, size_t size)
{
    if (!vs_apply_in_batch(self->store)) {
        self->batch_started = zclock_mono();
    }
    int code = vs_apply_set(self->store, stream->name, seq, hash, changeset, size, NULL);
    if (code != VS_OK && code != VS_EGAP) {
        s_fatal(self, vs_apply_error(self->store));
    }
    return code;
}

/*  Commits the open batch when it is at a consistent point and either no input waits (idle)
    or it has reached its size or age bound.                                                    */
static void s_commit_if_due(s_subscriber_t *self, bool idle)
{
    if (self->failed || !vs_apply_in_batch(self->store)) {
        return;
    }
    if (!vs_apply_consistent(self->store)) {
        /* Nothing can be committed, for any stream, until this one completes its master
           transaction: say so, for a slave that seems to stand still.                      */
        int64_t now = zclock_mono();
        if (now - self->batch_started >= S_WAIT_WARNING_MS &&
            now - self->last_wait_warning >= S_WAIT_WARNING_MS) {
            self->last_wait_warning = now;
            vs_log(&self->logger, VS_LOG_WARNING,
                   "nothing committed for %" PRId64 " s (%zu rows of %zu sets wait): stream %s"
                   " stands inside a master transaction split over several change sets, and"
                   " the batch commits when its last set arrives",
                   (now - self->batch_started) / 1000, vs_apply_batch_rows(self->store),
                   vs_apply_batch_sets(self->store), vs_apply_waiting_stream(self->store));
        }
        return;
    }
    if (!idle && vs_apply_batch_rows(self->store) < S_BATCH_ROWS &&
        zclock_mono() - self->batch_started < S_BATCH_MS) {
        return;
    }
    if (vs_apply_commit(self->store) != VS_OK) {
        s_fatal(self, vs_apply_error(self->store));
    }
}

/* ------------------------------------------------------------------------------------------
    Catch-up.                                                                                 */

/*  Sends FETCH since. again: the FETCH waiting for its CHUNK went unanswered too long; it is
    sent again under the same request id, so that the first answer to either counts. A broker
    or a link slower than the timeout (one CHUNK can carry a 64 MiB set) then still gets the
    slave through, where a new id made every late answer stale and the slave never caught
    up; and each resend waits twice as long, so a busy broker is not asked ever more often. */
static void s_send_fetch_since(s_subscriber_t *self, s_stream_t *stream, uint64_t since, bool again)
{
    vs_msg_t msg;
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_FETCH;
    again = again && stream->request_id != 0;
    msg.request_id = again ? stream->request_id : ++self->next_request_id;
    msg.stream.data = stream->name;
    msg.stream.size = strlen(stream->name);
    msg.since = since;
    msg.max_bytes = 0;
    uint8_t *data = NULL;
    size_t size = 0;
    if (vs_msg_encode(&msg, &data, &size) != VS_OK) {
        /*  Only memory can fail here: try again later.                                        */
        vs_log(&self->logger, VS_LOG_WARNING, "stream %s: cannot encode FETCH", stream->name);
        stream->request_id = 0;
        stream->retry_at = zclock_mono() + S_RETRY_MS;
        return;
    }
    /*  ZMQ_IMMEDIATE: this fails while no connection to the broker is up (not running, not
        reachable, or our key refused), rather than queueing stale requests.                  */
    if (zmq_send(zsock_resolve(self->dealer), data, size, ZMQ_DONTWAIT) < 0) {
        int64_t now = zclock_mono();
        stream->request_id = 0;
        stream->retry_at = now + S_UNREACHABLE_RETRY_MS;
        if (self->last_send_warning == 0) {
            self->last_send_warning = now; /* the first connection may still be on its way */
        } else if (now - self->last_send_warning >= S_WARNING_INTERVAL_MS) {
            vs_log(&self->logger, VS_LOG_WARNING,
                   "stream %s: cannot send FETCH: no connection to the broker's request"
                   " endpoint (not running, unreachable, or our key is not authorised)",
                   stream->name);
            self->last_send_warning = now;
        }
    } else {
        stream->request_id = msg.request_id;
        stream->request_sent = zclock_mono();
        stream->request_timeout = !again ? S_FETCH_TIMEOUT_MS
                                         : (2 * stream->request_timeout < S_FETCH_TIMEOUT_MAX_MS
                                                ? 2 * stream->request_timeout
                                                : S_FETCH_TIMEOUT_MAX_MS);
        vs_log(&self->logger, VS_LOG_DEBUG, "stream %s: FETCH since %" PRIu64, stream->name,
               msg.since);
    }
    free(data);
}

/*  Asks for the sets that follow the stream's position (the open batch included).          */
static void s_send_fetch(s_subscriber_t *self, s_stream_t *stream)
{
    s_send_fetch_since(self, stream, s_position(self, stream, NULL), false);
}

static void s_catch_up(s_subscriber_t *self, s_stream_t *stream)
{
    stream->phase = S_CATCHING_UP;
    s_send_fetch(self, stream);
}

/*  Keeps a live set for after the catch-up; past the bound the buffer is dropped (the sets
    will be fetched instead).                                                                   */
static void s_buffer_add(s_subscriber_t *self, s_stream_t *stream, uint64_t seq,
                         const vs_msg_t *msg, zframe_t **body_p)
{
    if (stream->buffer_bytes + msg->changeset.size > S_BUFFER_BYTES) {
        vs_log(&self->logger, VS_LOG_NOTICE,
               "stream %s: live buffer full during catch-up; dropped, will fetch instead",
               stream->name);
        s_buffer_clear(stream);
        if (msg->changeset.size > S_BUFFER_BYTES) {
            return;
        }
    }
    if (stream->buffer_count == stream->buffer_capacity) {
        size_t capacity = stream->buffer_capacity ? stream->buffer_capacity * 2 : 64;
        s_buffered_t *grown = realloc(stream->buffer, capacity * sizeof *grown);
        if (!grown) {
            return; /* fetched later instead */
        }
        stream->buffer = grown;
        stream->buffer_capacity = capacity;
    }
    s_buffered_t *entry = &stream->buffer[stream->buffer_count++];
    entry->seq = seq;
    memcpy(entry->hash, msg->hash.data, VS_HASH_SIZE);
    entry->changeset = msg->changeset.data;
    entry->size = msg->changeset.size;
    entry->body = *body_p;
    *body_p = NULL;
    stream->buffer_bytes += msg->changeset.size;
}

/*  The stream reached the broker's head: apply the buffered live sets that follow, then go
    LIVE, or catch up again on a gap among them.                                                */
static void s_go_live(s_subscriber_t *self, s_stream_t *stream)
{
    uint64_t position = s_position(self, stream, NULL);
    vs_log(&self->logger, VS_LOG_INFO, "stream %s caught up at seq %" PRIu64, stream->name,
           position);
    stream->phase = S_LIVE;
    size_t index = 0;
    for (; index < stream->buffer_count && !self->failed; index++) {
        s_buffered_t *entry = &stream->buffer[index];
        int code = s_apply(self, stream, entry->seq, entry->hash, entry->changeset, entry->size);
        if (code == VS_EGAP) {
            vs_log(&self->logger, VS_LOG_NOTICE,
                   "stream %s: gap after catch-up, live seq %" PRIu64 " at position %" PRIu64,
                   stream->name, entry->seq, s_position(self, stream, NULL));
            break;
        }
        zframe_destroy(&entry->body);
        stream->buffer_bytes -= entry->size;
        s_commit_if_due(self, false);
    }
    if (self->failed) {
        return;
    }
    if (index > 0) {
        memmove(stream->buffer, stream->buffer + index,
                (stream->buffer_count - index) * sizeof *stream->buffer);
        stream->buffer_count -= index;
    }
    if (stream->buffer_count > 0) {
        s_catch_up(self, stream);
    }
}

static void s_on_chunk(s_subscriber_t *self, s_stream_t *stream, const vs_msg_t *msg)
{
    stream->request_id = 0;
    stream->retry_at = zclock_mono() + S_RETRY_MS;
    if (!vs_bytes_equal(msg->stream, stream->name)) {
        s_drop(self, "CHUNK", "stream differs from the FETCH");
        return;
    }
    /*  Ask for what follows before applying this chunk, so the next one travels meanwhile.    */
    if (msg->entry_count > 0) {
        uint64_t last = msg->entries[msg->entry_count - 1].seq;
        if (last < msg->head && last > s_position(self, stream, NULL)) {
            s_send_fetch_since(self, stream, last, false);
        }
    }
    for (size_t index = 0; index < msg->entry_count; index++) {
        const vs_entry_t *entry = &msg->entries[index];
        int code = s_apply(self, stream, entry->seq, (const uint8_t *) entry->hash.data,
                           entry->changeset.data, entry->changeset.size);
        if (self->failed) {
            return;
        }
        if (code == VS_EGAP) {
            vs_log(&self->logger, VS_LOG_WARNING,
                   "stream %s: CHUNK entry %" PRIu64 " does not follow position %" PRIu64
                   "; fetching again",
                   stream->name, entry->seq, s_position(self, stream, NULL));
            s_send_fetch(self, stream);
            return;
        }
        /*  At each set, not only after the chunk: a chunk that ends inside a master
            transaction would otherwise keep the batch open through the next one, and so on,
            as long as the chunks and the transactions do not end together.                 */
        s_commit_if_due(self, false);
        if (self->failed) {
            return;
        }
    }
    if (stream->request_id != 0) {
        return; /* the next chunk is on its way */
    }
    uint8_t hash[VS_HASH_SIZE];
    uint64_t position = s_position(self, stream, hash);
    if (position > msg->head) {
        char reason[256];
        snprintf(reason, sizeof reason,
                 "slave is at seq %" PRIu64
                 " of stream %s but the broker's history ends at %" PRIu64,
                 position, stream->name, msg->head);
        s_fatal(self, reason);
        return;
    }
    if (position < msg->head) {
        if (msg->entry_count == 0) {
            /*  An empty chunk below the head: ask again later rather than spin.               */
            vs_log(&self->logger, VS_LOG_WARNING,
                   "stream %s: empty CHUNK below head %" PRIu64 "; asking again", stream->name,
                   msg->head);
        } else {
            s_send_fetch(self, stream);
        }
        return;
    }
    if (memcmp(hash, msg->hash.data, VS_HASH_SIZE) != 0) {
        char reason[256];
        snprintf(reason, sizeof reason,
                 "chain mismatch on stream %s at seq %" PRIu64 ": fork or corrupted history",
                 stream->name, position);
        s_fatal(self, reason);
        return;
    }
    s_go_live(self, stream);
}

static void s_on_error(s_subscriber_t *self, s_stream_t *stream, const vs_msg_t *msg)
{
    char reason[VS_MAX_REASON + 1];
    vs_escape_sample(msg->reason.data, msg->reason.size, reason, sizeof reason);
    stream->request_id = 0;
    stream->retry_at = zclock_mono() + S_RETRY_MS;
    char text[VS_MAX_REASON + 512];
    if (msg->code == VS_EBEHIND) {
        snprintf(text, sizeof text,
                 "slave is at seq %" PRIu64 " of stream %s but the broker's history ends before"
                 " it: %s",
                 s_position(self, stream, NULL), stream->name, reason);
        s_fatal(self, text);
    } else if (msg->code == VS_EAUTH || msg->code == VS_EVERSION) {
        snprintf(text, sizeof text, "the broker refused FETCH of stream %s: %s (%s)", stream->name,
                 vs_strerror((int) msg->code), reason);
        s_fatal(self, text);
    } else {
        vs_log(&self->logger, VS_LOG_WARNING,
               "stream %s: the broker answered FETCH with %s: %s; asking again", stream->name,
               vs_strerror((int) msg->code), reason);
    }
}

/*  Resends FETCHes left unanswered (the broker may have restarted) and due retries.          */
static void s_check_requests(s_subscriber_t *self)
{
    int64_t now = zclock_mono();
    for (size_t index = 0; index < self->stream_count && !self->failed; index++) {
        s_stream_t *stream = &self->streams[index];
        if (stream->phase != S_CATCHING_UP) {
            continue;
        }
        if (stream->request_id != 0 && now - stream->request_sent >= stream->request_timeout) {
            vs_log(&self->logger, VS_LOG_WARNING,
                   "stream %s: no answer to FETCH in %" PRId64 " ms; asking again", stream->name,
                   stream->request_timeout);
            s_send_fetch_since(self, stream, s_position(self, stream, NULL), true);
        } else if (stream->request_id == 0 && now >= stream->retry_at) {
            s_send_fetch(self, stream);
        }
    }
}

/* ------------------------------------------------------------------------------------------
    Receiving.                                                                                */

/*  Receives one whole message, keeping at most max frames; returns the number of frames it
    had (which may be more than kept), 0 when interrupted.                                     */
static size_t s_receive(zsock_t *socket, zframe_t **frames, size_t max)
{
    size_t count = 0;
    while (true) {
        zframe_t *frame = zframe_recv(socket);
        if (!frame) {
            break;
        }
        bool more = zframe_more(frame) != 0;
        if (count < max) {
            frames[count] = frame;
        } else {
            zframe_destroy(&frame);
        }
        count++;
        if (!more) {
            break;
        }
    }
    return count;
}

static void s_on_live(s_subscriber_t *self, s_stream_t *stream, const vs_msg_t *msg,
                      zframe_t **body_p)
{
    uint64_t position = s_position(self, stream, NULL);
    if (msg->seq <= position) {
        return;
    }
    switch (stream->phase) {
    case S_CATCHING_UP: s_buffer_add(self, stream, msg->seq, msg, body_p); break;
    case S_LIVE:
        if (msg->seq == position + 1) {
            s_apply(self, stream, msg->seq, (const uint8_t *) msg->hash.data, msg->changeset.data,
                    msg->changeset.size);
        } else {
            vs_log(&self->logger, VS_LOG_NOTICE,
                   "stream %s: gap, live seq %" PRIu64 " at position %" PRIu64 "; catching up",
                   stream->name, msg->seq, position);
            s_buffer_add(self, stream, msg->seq, msg, body_p);
            s_catch_up(self, stream);
        }
        break;
    default: s_drop(self, "live message", "stream in an unknown state"); break;
    }
}

static void s_on_heartbeat(s_subscriber_t *self, s_stream_t *stream, const vs_msg_t *msg)
{
    if (stream->phase != S_LIVE) {
        return;
    }
    uint8_t hash[VS_HASH_SIZE];
    uint64_t position = s_position(self, stream, hash);
    if (msg->head == position) {
        if (memcmp(hash, msg->hash.data, VS_HASH_SIZE) != 0) {
            char reason[256];
            snprintf(reason, sizeof reason,
                     "chain mismatch on stream %s at seq %" PRIu64 ": fork or corrupted history",
                     stream->name, position);
            s_fatal(self, reason);
        }
        return;
    }
    if (msg->head > position) {
        vs_log(&self->logger, VS_LOG_NOTICE,
               "stream %s: heartbeat head %" PRIu64 " beyond position %" PRIu64 "; catching up",
               stream->name, msg->head, position);
    } else {
        vs_log(&self->logger, VS_LOG_WARNING,
               "stream %s: heartbeat head %" PRIu64 " behind position %" PRIu64 "; checking",
               stream->name, msg->head, position);
    }
    s_catch_up(self, stream);
}

static void s_handle_live(s_subscriber_t *self)
{
    zframe_t *frames[2] = {NULL, NULL};
    size_t count = s_receive(self->sub, frames, 2);
    vs_msg_t msg;
    memset(&msg, 0, sizeof msg);
    if (count == 0) {
        return;
    }
    if (count != 2) {
        s_drop(self, "live message", "not 2 frames");
        goto cleanup;
    }
    const char *why = NULL;
    int code = vs_msg_decode(&msg, zframe_data(frames[1]), zframe_size(frames[1]), &why);
    if (code != VS_OK) {
        s_drop(self, "live message", why ? why : vs_strerror(code));
        goto cleanup;
    }
    if (msg.command != VS_CMD_LIVE && msg.command != VS_CMD_HEARTBEAT) {
        s_drop(self, "live message", "not LIVE or HEARTBEAT");
        goto cleanup;
    }
    if (msg.hash.size != VS_HASH_SIZE) {
        s_drop(self, "live message", "hash is not 32 bytes");
        goto cleanup;
    }
    char topic[VS_MAX_STREAM_NAME + 2];
    size_t topic_size = vs_live_topic(msg.stream.data, msg.stream.size, topic, sizeof topic);
    if (topic_size == 0 || topic_size != zframe_size(frames[0]) ||
        memcmp(topic, zframe_data(frames[0]), topic_size) != 0) {
        s_drop(self, "live message", "topic and stream disagree");
        goto cleanup;
    }
    s_stream_t *stream = s_stream_find(self, msg.stream);
    if (!stream) {
        s_drop(self, "live message", "not one of our streams");
        goto cleanup;
    }
    if (msg.command == VS_CMD_LIVE) {
        s_on_live(self, stream, &msg, &frames[1]);
    } else {
        s_on_heartbeat(self, stream, &msg);
    }
cleanup:
    vs_msg_clear(&msg);
    zframe_destroy(&frames[0]);
    zframe_destroy(&frames[1]);
}

static void s_handle_reply(s_subscriber_t *self)
{
    zframe_t *frame = NULL;
    size_t count = s_receive(self->dealer, &frame, 1);
    vs_msg_t msg;
    memset(&msg, 0, sizeof msg);
    if (count == 0) {
        return;
    }
    if (count != 1) {
        s_drop(self, "reply", "not 1 frame");
        goto cleanup;
    }
    const char *why = NULL;
    int code = vs_msg_decode(&msg, zframe_data(frame), zframe_size(frame), &why);
    if (code != VS_OK) {
        s_drop(self, "reply", why ? why : vs_strerror(code));
        goto cleanup;
    }
    s_stream_t *stream = NULL;
    for (size_t index = 0; index < self->stream_count && msg.request_id != 0; index++) {
        if (self->streams[index].request_id == msg.request_id) {
            stream = &self->streams[index];
        }
    }
    if (!stream) {
        /*  A late answer to a FETCH sent again since: the newer one counts.                   */
        goto cleanup;
    }
    bool hashes_valid = msg.command != VS_CMD_CHUNK || msg.hash.size == VS_HASH_SIZE;
    for (size_t index = 0; hashes_valid && index < msg.entry_count; index++) {
        hashes_valid = msg.entries[index].hash.size == VS_HASH_SIZE;
    }
    if (!hashes_valid) {
        s_drop(self, "reply", "hash is not 32 bytes");
    } else if (msg.command == VS_CMD_CHUNK) {
        s_on_chunk(self, stream, &msg);
    } else if (msg.command == VS_CMD_ERROR) {
        s_on_error(self, stream, &msg);
    } else {
        s_drop(self, "reply", "not CHUNK or ERROR");
    }
cleanup:
    vs_msg_clear(&msg);
    zframe_destroy(&frame);
}

/*  Returns true on $TERM.                                                                     */
static bool s_handle_pipe(s_subscriber_t *self)
{
    zmsg_t *request = zmsg_recv(self->pipe);
    if (!request) {
        return true; /* interrupted */
    }
    char *command = zmsg_popstr(request);
    bool terminate = command && streq(command, "$TERM");
    if (command && streq(command, "POSITION")) {
        /*  POSITION stream -> POSITION stream applied committed ("" "" for a bad name).      */
        char *stream = zmsg_popstr(request);
        uint64_t applied = 0;
        uint64_t committed = 0;
        char applied_text[24] = "";
        char committed_text[24] = "";
        if (stream && vs_apply_position(self->store, stream, &applied, NULL) == VS_OK &&
            vs_apply_committed_position(self->store, stream, &committed, NULL) == VS_OK) {
            snprintf(applied_text, sizeof applied_text, "%" PRIu64, applied);
            snprintf(committed_text, sizeof committed_text, "%" PRIu64, committed);
        }
        zstr_sendx(self->pipe, "POSITION", stream ? stream : "", applied_text, committed_text,
                   NULL);
        zstr_free(&stream);
    } else if (command && streq(command, "COUNT")) {
        /*  COUNT -> COUNT upserts deletes: changes of committed batches.                    */
        uint64_t upserts = 0;
        uint64_t deletes = 0;
        vs_apply_counts(self->store, &upserts, &deletes);
        char upserts_text[24];
        char deletes_text[24];
        snprintf(upserts_text, sizeof upserts_text, "%" PRIu64, upserts);
        snprintf(deletes_text, sizeof deletes_text, "%" PRIu64, deletes);
        zstr_sendx(self->pipe, "COUNT", upserts_text, deletes_text, NULL);
    } else if (!terminate) {
        vs_log(&self->logger, VS_LOG_WARNING, "subscriber: unknown pipe command '%s'",
               command ? command : "");
    }
    zstr_free(&command);
    zmsg_destroy(&request);
    return terminate;
}

/* ------------------------------------------------------------------------------------------
    Start-up.                                                                                 */

static zsock_t *s_client_socket(int type, const vs_subscriber_config_t *config, char *why,
                                size_t why_size)
{
    zsock_t *socket = zsock_new(type);
    if (!socket) {
        snprintf(why, why_size, "cannot create a socket");
        return NULL;
    }
    zsock_set_linger(socket, 0);
    zsock_set_maxmsgsize(socket, (int) VS_MAX_FRAME);
    zcert_apply(config->cert, socket);
    zsock_set_curve_serverkey(socket, config->broker_public_key);
    if (type == ZMQ_SUB) {
        zsock_set_rcvhwm(socket, S_LIVE_HWM);
    } else {
        zsock_set_immediate(socket, 1);
    }
    return socket;
}

static int s_start(s_subscriber_t *self, const vs_subscriber_config_t *config, char *why,
                   size_t why_size)
{
    if (!config || (!config->db_path && !config->verify_only) || !config->broker_endpoint ||
        !config->live_endpoint || !config->broker_public_key || !config->cert || !config->streams ||
        config->stream_count == 0 || (config->table_count > 0 && !config->tables)) {
        snprintf(why, why_size, "incomplete configuration");
        return VS_EINVAL;
    }
    self->logger = config->logger;
    if (strlen(config->broker_public_key) != 40) {
        snprintf(why, why_size, "the broker's public key must be 40 Z85 characters");
        return VS_EINVAL;
    }
    if (!zsys_has_curve()) {
        snprintf(why, why_size, "libzmq has no CURVE support");
        return VS_EINVAL;
    }
    self->streams = calloc(config->stream_count, sizeof *self->streams);
    if (!self->streams) {
        snprintf(why, why_size, "out of memory");
        return VS_ENOMEM;
    }
    for (size_t index = 0; index < config->stream_count; index++) {
        const char *name = config->streams[index];
        if (!name || !vs_stream_name_valid(name, strlen(name))) {
            snprintf(why, why_size, "invalid stream name '%s'", name ? name : "");
            return VS_EINVAL;
        }
        for (size_t other = 0; other < index; other++) {
            if (streq(name, self->streams[other].name)) {
                snprintf(why, why_size, "stream '%s' named twice", name);
                return VS_EINVAL;
            }
        }
        s_stream_t *stream = &self->streams[self->stream_count];
        stream->name = strdup(name);
        if (!stream->name) {
            snprintf(why, why_size, "out of memory");
            return VS_ENOMEM;
        }
        self->stream_count++;
        stream->topic_size = vs_live_topic(name, strlen(name), stream->topic, sizeof stream->topic);
        stream->phase = S_CATCHING_UP;
    }
    int code = vs_apply_open(&self->store, config->verify_only ? NULL : config->db_path,
                             config->tables, config->table_count, why, why_size);
    if (code != VS_OK) {
        return code;
    }
    for (size_t index = 0; index < self->stream_count; index++) {
        uint64_t seq = 0;
        code = vs_apply_position(self->store, self->streams[index].name, &seq, NULL);
        if (code != VS_OK) {
            snprintf(why, why_size, "%s", vs_apply_error(self->store));
            return code;
        }
    }
    /*  The live socket first, so nothing published during the catch-up is missed.            */
    self->sub = s_client_socket(ZMQ_SUB, config, why, why_size);
    if (!self->sub) {
        return VS_EIO;
    }
    for (size_t index = 0; index < self->stream_count; index++) {
        s_stream_t *stream = &self->streams[index];
        zmq_setsockopt(zsock_resolve(self->sub), ZMQ_SUBSCRIBE, stream->topic, stream->topic_size);
    }
    if (zsock_connect(self->sub, "%s", config->live_endpoint) != 0) {
        snprintf(why, why_size, "cannot connect to '%s'", config->live_endpoint);
        return VS_EIO;
    }
    self->dealer = s_client_socket(ZMQ_DEALER, config, why, why_size);
    if (!self->dealer) {
        return VS_EIO;
    }
    if (zsock_connect(self->dealer, "%s", config->broker_endpoint) != 0) {
        snprintf(why, why_size, "cannot connect to '%s'", config->broker_endpoint);
        return VS_EIO;
    }
    self->poller = zpoller_new(self->pipe, self->dealer, self->sub, NULL);
    if (!self->poller) {
        snprintf(why, why_size, "out of memory");
        return VS_ENOMEM;
    }
    return VS_OK;
}

void vs_subscriber_actor(zsock_t *pipe, void *args)
{
    const vs_subscriber_config_t *config = args;
    char why[512] = "";
    s_subscriber_t *self = calloc(1, sizeof *self);
    if (!self) {
        zsock_signal(pipe, 0);
        zstr_sendm(pipe, "ERROR");
        zstr_send(pipe, "out of memory");
        return;
    }
    self->pipe = pipe;
    int code = s_start(self, config, why, sizeof why);
    zsock_signal(pipe, 0);
    if (code != VS_OK) {
        vs_log(&self->logger, VS_LOG_ERROR, "subscriber: %s", why);
        zstr_sendm(pipe, "ERROR");
        zstr_send(pipe, why);
        s_subscriber_destroy(&self);
        return;
    }
    /*  config is the caller's only until "OK": nothing reads it after.                      */
    vs_log(&self->logger, VS_LOG_INFO, "subscriber started: database %s, broker %s, %zu streams",
           config->verify_only ? "(none: verify only)" : config->db_path, config->broker_endpoint,
           self->stream_count);
    config = NULL;
    zstr_send(pipe, "OK");
    for (size_t index = 0; index < self->stream_count; index++) {
        s_stream_t *stream = &self->streams[index];
        vs_log(&self->logger, VS_LOG_INFO, "stream %s at seq %" PRIu64 "; catching up",
               stream->name, s_position(self, stream, NULL));
        s_catch_up(self, stream);
    }

    while (!self->terminated) {
        bool committable =
            !self->failed && vs_apply_in_batch(self->store) && vs_apply_consistent(self->store);
        int timeout = self->failed ? -1 : committable ? 0 : S_TICK_MS;
        void *which = zpoller_wait(self->poller, timeout);
        if (which == self->pipe) {
            self->terminated = s_handle_pipe(self);
        }
        if (self->terminated || (!which && zpoller_terminated(self->poller))) {
            break;
        }
        if (self->failed) {
            continue;
        }
        /*  After a pipe command too: questions asked often (POSITION, COUNT) must not hold back
            the FETCH retries and the commit.                                                   */
        if (which == self->dealer) {
            s_handle_reply(self);
        } else if (which == self->sub) {
            s_handle_live(self);
        }
        s_commit_if_due(self, which == NULL);
        s_check_requests(self);
    }

    /*  $TERM: keep the open batch when it is consistent, else roll it back.                  */
    if (!self->failed && vs_apply_in_batch(self->store)) {
        if (vs_apply_consistent(self->store)) {
            if (vs_apply_commit(self->store) != VS_OK) {
                vs_log(&self->logger, VS_LOG_ERROR, "subscriber: %s", vs_apply_error(self->store));
            }
        } else {
            vs_apply_rollback(self->store);
        }
    }
    vs_log(&self->logger, VS_LOG_INFO, "subscriber stopped");
    s_subscriber_destroy(&self);
}
