/*  publisher.c - the publisher actor: wake-up, in-flight window, PUBLISH, ACK and resend.

    The actor owns a capture (capture.c) and a CURVE DEALER connected to the broker's request
    endpoint. It wakes on inotify events of the database and its WAL, on replies and every
    S_POLL_MS, confirms a change with the wal-index and PRAGMA data_version (vs_capture_changed),
    reads whole snapshots into change sets and keeps up to S_WINDOW_SETS (or S_WINDOW_BYTES) of
    them in flight. The next read starts after the last version sent. The ACKs of a short while
    are trimmed from the log together; ERROR VS_ESTORE or an ACK that does not come within
    S_ACK_TIMEOUT_MS makes it forget the sets in flight and rebuild them from the last
    acknowledged version (the broker drops what it already has).
*/
#include "vs_publisher.h"

#include "capture.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define S_WINDOW_SETS    8
#define S_WINDOW_BYTES   (8u * 1024 * 1024)
#define S_ACK_TIMEOUT_MS 5000
#define S_POLL_MS        50
#define S_STORE_RETRY_MS 1000 /* after ERROR VS_ESTORE from the broker    */
#define S_GAP_RETRY_MS     100  /* after the second VS_EGAP in a row, doubling ... */
#define S_GAP_RETRY_MAX_MS 5000 /* ... up to this                          */
#define S_BUSY_RETRY_MS  50   /* after our database was locked            */
/* A WAL write wakes us before the commit is visible (the wal-index in shared memory, which
   inotify does not see, is updated after the write and the sync; here that took 0.2 to 0.7 ms
   after the event). After each event we look again for S_RECHECK_PERIOD_MS: first after half
   the usual time an event took to become visible (a moving average, at least
   S_RECHECK_FIRST_US), then each time after a quarter longer up to a millisecond, then twice
   as long. A commit is seen within about a fifth of the time it took to become visible, with
   a few looks, and a look costs one pread of the wal-index (see vs_capture_changed). */
#define S_RECHECK_FIRST_US  20
#define S_RECHECK_PERIOD_MS 25
/* An idle publisher (nothing in flight, nothing left to read) does not sleep between those
   looks at first: a sleep here ends 50 us or more late, and that is latency on every single
   commit. It looks again at once, yielding the CPU in between, for twice the usual
   event-to-visible time (at most S_SPIN_MAX_US), then falls back to the timed looks. A busy
   publisher never spins: its next look comes with the next reply. */
#define S_SPIN_MAX_US 2000
/* The log is trimmed in one write transaction for every ACK of the last S_TRIM_DELAY_MS, or
   sooner once S_TRIM_VERSIONS versions wait: fewer, larger trims take the write lock from the
   application less often (a writer that finds it taken sleeps in SQLite's busy handler, for a
   millisecond at least, and its page cache is reloaded after any other connection's write).
   An idle publisher used to trim at once after each ACK, but "idle" also means between two
   commits of a steady writer (W5: a trim per change set). Trimming only tries for the write
   lock, every S_TRIM_RETRY_MS, unless it has not managed for S_TRIM_PATIENCE_MS. */
#define S_TRIM_DELAY_MS    100
#define S_TRIM_VERSIONS    65536
#define S_TRIM_RETRY_MS    5
#define S_TRIM_PATIENCE_MS 1000
#define S_TRIM_WAIT_MS     20
/* Lingering: ACK clocking alone sends a set per round trip to the broker, about 1-3 ms here,
   and a set costs every process its wake-ups and the broker an fsync whatever its size (W5,
   100-update transactions: 3 transactions a set, 2.8 ms of CPU a set across the three
   processes). Once the window has emptied S_LINGER_STREAK times in a row with commits
   already waiting, the writer is outpacing the round trip: the next read waits until the
   linger has passed since the previous one, unless a set's worth is waiting. A window that
   empties with nothing waiting ends it, so single commits (W2) still go at once. */
#define S_LINGER_STREAK 3

typedef struct {
    uint64_t request_id;
    uint64_t last_version;
    size_t size;
    int64_t sent_at; /* zclock_mono */
} s_flight_t;

typedef enum {
    S_RUNNING,  /* reading, sending, handling replies             */
    S_FAILED,   /* sent FATAL: waits for $TERM                    */
    S_STOPPING, /* got $TERM                                      */
} s_state_t;

typedef struct {
    zsock_t *pipe;
    vs_logger_t logger;
    vs_capture_t *capture;
    zsock_t *dealer;
    int inotify_fd;
    char *db_name; /* the database's file name, without its folder */
    char *stream;
    const char *publisher_id; /* borrowed from capture */
    s_state_t state;
    uint64_t sent_version;    /* the next read starts after this          */
    uint64_t acked_version;   /* the broker holds every version up to it  */
    uint64_t trimmed_version; /* the log is trimmed up to it              */
    uint64_t highest_sent;    /* an ACK above it is not ours              */
    s_flight_t flights[S_WINDOW_SETS];
    size_t flight_count;
    size_t flight_bytes;
    uint64_t next_request_id;
    bool more;                  /* the last read stopped at the window           */
    bool emptied;               /* an ACK emptied the window since the last pump */
    unsigned loaded_streak;     /* windows emptied in a row with commits waiting */
    int64_t linger_ms;          /* 0: never linger                               */
    int64_t read_at;            /* the last read that sent something             */
    int64_t linger_until;       /* no read before this time, 0: not lingering    */
    bool blocked;               /* something to send but the DEALER is not ready */
    int64_t retry_at;           /* no read before this time (zclock_mono)       */
    unsigned gap_streak;        /* VS_EGAP answers since the acknowledged version last moved */
    int64_t recheck_until;      /* look at data_version again until then         */
    int64_t recheck_delay_us;   /* the next look after this long                 */
    int64_t event_at_us;        /* the last event, 0: seen since (zclock_usecs)  */
    int64_t visible_after_us;   /* moving average: event to commit seen          */
    int64_t spin_until_us;      /* idle: look again without sleeping until then  */
    int64_t exact_at;           /* ask SQLite itself, not the wal-index, then    */
    int64_t trim_at;            /* trim the log at this time, 0: nothing to trim */
    int64_t trim_pending_since; /* first failed trim attempt, 0: none            */
} s_publisher_t;

/* ---------------------------------------------------------------------------------------------
    Construction.                                                                              */

/*  The stream name a database gets by default: its file name without folder and extension.   */
static char *s_default_stream(const char *db_path)
{
    const char *name = strrchr(db_path, '/');
    name = name ? name + 1 : db_path;
    const char *dot = strrchr(name, '.');
    size_t length = dot && dot != name ? (size_t) (dot - name) : strlen(name);
    char *stream = malloc(length + 1);
    if (stream) {
        memcpy(stream, name, length);
        stream[length] = 0;
    }
    return stream;
}

/*  Watches the database's folder: the WAL and the database file change there on a commit.   */
static int s_watch(const char *db_path, const vs_logger_t *logger)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        vs_log(logger, VS_LOG_WARNING, "publisher: no inotify (%s); polling every %d ms",
               strerror(errno), S_POLL_MS);
        return -1;
    }
    char *folder = strdup(db_path);
    char *slash = folder ? strrchr(folder, '/') : NULL;
    const char *watched = ".";
    if (slash == folder && folder) {
        watched = "/";
    } else if (slash) {
        *slash = 0;
        watched = folder;
    }
    if (!folder ||
        inotify_add_watch(fd, watched, IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        vs_log(logger, VS_LOG_WARNING,
               "publisher: cannot watch folder '%s' (%s); polling every %d ms", watched,
               strerror(errno), S_POLL_MS);
        close(fd);
        fd = -1;
    }
    free(folder);
    return fd;
}

static void s_publisher_destroy(s_publisher_t **self_p)
{
    if (!*self_p) {
        return;
    }
    s_publisher_t *self = *self_p;
    vs_capture_destroy(&self->capture);
    zsock_destroy(&self->dealer);
    if (self->inotify_fd >= 0) {
        close(self->inotify_fd);
    }
    free(self->stream);
    free(self->db_name);
    free(self);
    *self_p = NULL;
}

/*  Opens the capture and the DEALER. Returns NULL with a reason in error on failure.        */
static s_publisher_t *s_publisher_new(zsock_t *pipe, const vs_publisher_config_t *config,
                                      char *error, size_t error_size)
{
    s_publisher_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(error, error_size, "out of memory");
        return NULL;
    }
    self->pipe = pipe;
    self->inotify_fd = -1;
    self->logger = config->logger;
    uint8_t server_key[32];
    if (!config->db_path || !*config->db_path) {
        snprintf(error, error_size, "no database given");
        goto failed;
    }
    if (!config->broker_endpoint || !*config->broker_endpoint) {
        snprintf(error, error_size, "no broker endpoint given");
        goto failed;
    }
    if (!config->broker_public_key || strlen(config->broker_public_key) != 40 ||
        !zmq_z85_decode(server_key, config->broker_public_key)) {
        snprintf(error, error_size, "the broker's public key must be 40 characters of Z85");
        goto failed;
    }
    if (!config->cert) {
        snprintf(error, error_size, "no certificate given");
        goto failed;
    }
    if (config->linger_ms > VS_PUBLISHER_LINGER_MAX_MS) {
        snprintf(error, error_size, "linger %d ms is over the limit of %d ms", config->linger_ms,
                 VS_PUBLISHER_LINGER_MAX_MS);
        goto failed;
    }
    self->linger_ms = config->linger_ms < 0    ? 0
                      : config->linger_ms == 0 ? VS_PUBLISHER_LINGER_DEFAULT_MS
                                               : config->linger_ms;
    self->stream = config->stream ? strdup(config->stream) : s_default_stream(config->db_path);
    if (!self->stream) {
        snprintf(error, error_size, "out of memory");
        goto failed;
    }
    if (!vs_stream_name_valid(self->stream, strlen(self->stream))) {
        char sample[64];
        vs_escape_sample(self->stream, strlen(self->stream), sample, sizeof sample);
        snprintf(error, error_size,
                 "invalid stream name '%s': it must be 1 to %d characters of [A-Za-z0-9._-]%s",
                 sample, VS_MAX_STREAM_NAME, config->stream ? "" : " (give one with --stream)");
        goto failed;
    }
    vs_capture_config_t capture_config = {
        .db_path = config->db_path,
        .tables = config->tables,
        .table_count = config->table_count,
        .changeset_target = config->changeset_target,
        .logger = config->logger,
    };
    if (vs_capture_open(&self->capture, &capture_config, error, error_size) != VS_OK) {
        goto failed;
    }
    self->publisher_id = vs_capture_publisher_id(self->capture);
    self->acked_version = vs_capture_acked_version(self->capture);
    self->sent_version = self->acked_version;
    self->trimmed_version = self->acked_version;
    self->highest_sent = self->acked_version;
    self->dealer = zsock_new(ZMQ_DEALER);
    if (!self->dealer) {
        snprintf(error, error_size, "cannot create a socket");
        goto failed;
    }
    zcert_apply(config->cert, self->dealer);
    zsock_set_curve_serverkey(self->dealer, config->broker_public_key);
    zsock_set_maxmsgsize(self->dealer, (int) VS_MAX_FRAME);
    zsock_set_immediate(self->dealer, 1);
    zsock_set_linger(self->dealer, 0);
    if (zsock_connect(self->dealer, "%s", config->broker_endpoint) != 0) {
        snprintf(error, error_size, "cannot connect to broker endpoint '%s': %s",
                 config->broker_endpoint, zmq_strerror(zmq_errno()));
        goto failed;
    }
    const char *slash = strrchr(config->db_path, '/');
    self->db_name = strdup(slash ? slash + 1 : config->db_path);
    if (!self->db_name) {
        snprintf(error, error_size, "out of memory");
        goto failed;
    }
    self->inotify_fd = s_watch(config->db_path, &self->logger);
    vs_log(&self->logger, VS_LOG_NOTICE,
           "publisher: '%s' publishes stream '%s' as %s to %s: %zu tables, acknowledged up to "
           "version %llu",
           config->db_path, self->stream, self->publisher_id, config->broker_endpoint,
           vs_capture_table_count(self->capture), (unsigned long long) self->acked_version);
    return self;
failed:
    s_publisher_destroy(&self);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
    Sending.                                                                                   */

__attribute__((format(printf, 2, 3))) static void s_fail(s_publisher_t *self, const char *format,
                                                         ...)
{
    char reason[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(reason, sizeof reason, format, args);
    va_end(args);
    vs_log(&self->logger, VS_LOG_ERROR, "publisher: stream '%s': %s", self->stream, reason);
    if (self->state == S_RUNNING) {
        zstr_sendm(self->pipe, "FATAL");
        zstr_send(self->pipe, reason);
        self->state = S_FAILED;
    }
}

/*  Forgets the sets in flight: the next read rebuilds them from the acknowledged version.    */
static void s_rewind(s_publisher_t *self)
{
    self->flight_count = 0;
    self->flight_bytes = 0;
    self->sent_version = self->acked_version;
    self->more = true;
}

static void s_free_buffer(void *data, void *hint)
{
    (void) hint;
    free(data);
}

/*  Sends one set as PUBLISH. Returns false when the DEALER cannot take it now.               */
static bool s_send_set(s_publisher_t *self, const vs_capture_set_t *set)
{
    vs_msg_t msg = {
        .command = VS_CMD_PUBLISH,
        .request_id = ++self->next_request_id,
        .stream = {self->stream, strlen(self->stream)},
        .publisher = {self->publisher_id, strlen(self->publisher_id)},
        .changeset = {(const char *) set->data, set->size},
        .has_acked = true,
        .acked = self->acked_version,
    };
    uint8_t *body = NULL;
    size_t size = 0;
    int rc = vs_msg_encode(&msg, &body, &size);
    if (rc != VS_OK) {
        s_fail(self, "cannot encode PUBLISH of versions %llu..%llu: %s",
               (unsigned long long) set->first_version, (unsigned long long) set->last_version,
               vs_strerror(rc));
        return false;
    }
    zmq_msg_t frame;
    if (zmq_msg_init_data(&frame, body, size, s_free_buffer, NULL) != 0) {
        free(body);
        return false;
    }
    if (zmq_msg_send(&frame, zsock_resolve(self->dealer), ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frame);
        return false;
    }
    s_flight_t *flight = &self->flights[self->flight_count++];
    flight->request_id = msg.request_id;
    flight->last_version = set->last_version;
    flight->size = set->size;
    flight->sent_at = zclock_mono();
    self->flight_bytes += set->size;
    self->sent_version = set->last_version;
    if (set->last_version > self->highest_sent) {
        self->highest_sent = set->last_version;
    }
    vs_log(&self->logger, VS_LOG_DEBUG,
           "publisher: stream '%s': sent versions %llu..%llu (%zu changes, %zu bytes%s)",
           self->stream, (unsigned long long) set->first_version,
           (unsigned long long) set->last_version, set->change_count, set->size,
           set->flags & VS_CHANGESET_CONSISTENT ? ", consistent" : "");
    return true;
}

/*  Reads and sends what the window has room for, when something changed.                     */
static void s_pump(s_publisher_t *self)
{
    int64_t now = zclock_mono();
    bool exact = now >= self->exact_at;
    if (exact) {
        self->exact_at = now + S_POLL_MS;
    }
    bool changed = vs_capture_changed(self->capture, exact);
    if (changed && self->event_at_us) {
        int64_t took = zclock_usecs() - self->event_at_us;
        if (took < 1000 * S_RECHECK_PERIOD_MS) {
            self->visible_after_us += (took - self->visible_after_us) / 8;
        }
        self->event_at_us = 0;
        self->spin_until_us = 0;
    }
    self->more = self->more || changed;
    self->blocked = false;
    if (self->emptied) {
        self->emptied = false;
        self->loaded_streak = self->more ? self->loaded_streak + 1 : 0;
    }
    if (!self->more || self->flight_count == S_WINDOW_SETS ||
        self->flight_bytes >= S_WINDOW_BYTES || now < self->retry_at) {
        return;
    }
    if (!(zsock_events(self->dealer) & ZMQ_POLLOUT)) {
        self->blocked = true; /* not connected yet: wait for the DEALER */
        return;
    }
    /* ACK clocking: with sets in flight, a partial set waits for their ACK, and whatever
       commits meanwhile travels in the next set. Under load, sets grow instead of the
       broker's commits (an fsync each) multiplying; when idle, a commit goes at once. */
    if (self->flight_count > 0 && !vs_capture_backlog_full(self->capture, self->sent_version)) {
        return;
    }
    if (self->flight_count == 0 && self->linger_ms && self->loaded_streak >= S_LINGER_STREAK) {
        if (!self->linger_until) {
            self->linger_until = self->read_at + self->linger_ms;
        }
        if (now < self->linger_until &&
            !vs_capture_backlog_full(self->capture, self->sent_version)) {
            return;
        }
    }
    self->linger_until = 0;
    vs_capture_set_t sets[S_WINDOW_SETS];
    size_t set_count = 0;
    bool more = false;
    int rc = vs_capture_read(self->capture, self->sent_version, S_WINDOW_SETS - self->flight_count,
                             S_WINDOW_BYTES - self->flight_bytes, sets, &set_count, &more);
    if (rc != VS_OK) {
        if (rc == VS_ESTORE && vs_capture_busy(self->capture)) {
            vs_log(&self->logger, VS_LOG_INFO, "publisher: %s; retrying",
                   vs_capture_error(self->capture));
            self->retry_at = zclock_mono() + S_BUSY_RETRY_MS;
            return;
        }
        s_fail(self, "%s", vs_capture_error(self->capture));
        return;
    }
    self->more = more;
    if (set_count > 0) {
        self->read_at = now;
    }
    for (size_t index = 0; index < set_count; index++) {
        if (self->state != S_RUNNING || !s_send_set(self, &sets[index])) {
            self->more = true; /* the rest is read again later */
            self->blocked = self->state == S_RUNNING;
            break;
        }
    }
    vs_capture_sets_free(sets, set_count);
}

static void s_drain_inotify(s_publisher_t *self, bool arm);

/*  Trims the log up to the acknowledged version when it is time: one small write transaction
    for all the ACKs that arrived since the last trim. With force, tries now.                */
static void s_trim(s_publisher_t *self, bool force)
{
    if (self->acked_version <= self->trimmed_version) {
        self->trim_at = 0;
        return;
    }
    int64_t now = zclock_mono();
    if (!self->trim_at) {
        self->trim_at = now + S_TRIM_DELAY_MS;
    }
    bool waited = self->acked_version - self->trimmed_version >= S_TRIM_VERSIONS;
    bool due = now >= self->trim_at || (!self->trim_pending_since && waited);
    if (!force && !due) {
        return;
    }
    bool patient = self->trim_pending_since && now - self->trim_pending_since > S_TRIM_PATIENCE_MS;
    if (vs_capture_ack(self->capture, self->acked_version, patient ? S_TRIM_WAIT_MS : 0) == VS_OK) {
        self->trimmed_version = self->acked_version;
        self->trim_pending_since = 0;
        self->trim_at = 0;
        /* The events of our own commit are queued by now: they need no recheck. An application
           commit whose event is among them is still seen, at the latest by the S_POLL_MS look. */
        if (self->inotify_fd >= 0) {
            s_drain_inotify(self, false);
        }
    } else if (vs_capture_busy(self->capture)) {
        if (!self->trim_pending_since) {
            self->trim_pending_since = now;
        }
        self->trim_at = now + S_TRIM_RETRY_MS;
    } else if (!force) {
        s_fail(self, "%s", vs_capture_error(self->capture));
    }
}

/* ---------------------------------------------------------------------------------------------
    Replies.                                                                                   */

static void s_handle_ack(s_publisher_t *self, const vs_msg_t *msg)
{
    if (msg->stream.size != strlen(self->stream) ||
        memcmp(msg->stream.data, self->stream, msg->stream.size) != 0) {
        char sample[64];
        vs_escape_sample(msg->stream.data, msg->stream.size, sample, sizeof sample);
        vs_log(&self->logger, VS_LOG_WARNING, "publisher: ignoring an ACK for stream '%s'", sample);
        return;
    }
    uint64_t version = msg->last_version;
    if (version > self->highest_sent) {
        vs_log(&self->logger, VS_LOG_WARNING,
               "publisher: stream '%s': ignoring an ACK of version %llu, never sent", self->stream,
               (unsigned long long) version);
        return;
    }
    vs_log(&self->logger, VS_LOG_DEBUG, "publisher: stream '%s': ACK of version %llu, seq %llu%s",
           self->stream, (unsigned long long) version, (unsigned long long) msg->seq,
           msg->duplicate ? " (duplicate)" : "");
    if (version > self->acked_version) {
        self->acked_version = version;
        self->gap_streak = 0;
    }
    if (self->sent_version < self->acked_version) {
        self->sent_version = self->acked_version;
    }
    size_t kept = 0;
    size_t had = self->flight_count;
    self->flight_bytes = 0;
    for (size_t index = 0; index < self->flight_count; index++) {
        if (self->flights[index].last_version > self->acked_version) {
            self->flight_bytes += self->flights[index].size;
            self->flights[kept++] = self->flights[index];
        }
    }
    self->flight_count = kept;
    if (had > 0 && kept == 0) {
        self->emptied = true;
    }
}

static void s_handle_error(s_publisher_t *self, const vs_msg_t *msg)
{
    char reason[256];
    vs_escape_sample(msg->reason.data, msg->reason.size, reason, sizeof reason);
    if (msg->code == VS_ESTORE || msg->code == VS_EGAP) {
        bool in_flight = false;
        for (size_t index = 0; index < self->flight_count && !in_flight; index++) {
            in_flight = self->flights[index].request_id == msg->request_id;
        }
        if (!in_flight) {
            return; /* about a set sent before the last rewind: already being resent */
        }
        vs_log(
            &self->logger, VS_LOG_WARNING,
            "publisher: stream '%s': the broker %s (%s); resending from version %llu", self->stream,
            msg->code == VS_EGAP ? "missed an earlier change set" : "could not store a change set",
            reason, (unsigned long long) self->acked_version + 1);
        s_rewind(self);
        /* A full or failing disk needs time; a gap is repaired at once. A gap that comes
           back without progress means the broker holds fewer versions than it acknowledged
           (a history restored from a backup): resending at once would spin, so the wait
           doubles from the second one.                                                      */
        int64_t delay = 0;
        if (msg->code == VS_ESTORE) {
            delay = S_STORE_RETRY_MS;
        } else if (++self->gap_streak > 1) {
            unsigned doublings = self->gap_streak - 2 < 16 ? self->gap_streak - 2 : 16;
            delay = (int64_t) S_GAP_RETRY_MS << doublings;
            delay = delay < S_GAP_RETRY_MAX_MS ? delay : S_GAP_RETRY_MAX_MS;
        }
        self->retry_at = zclock_mono() + delay;
        return;
    }
    s_fail(self, "the broker refused a change set: %s: %s", vs_strerror((int) msg->code), reason);
}

/*  Handles every reply waiting on the DEALER.                                                */
static void s_handle_replies(s_publisher_t *self)
{
    while (self->state == S_RUNNING && (zsock_events(self->dealer) & ZMQ_POLLIN)) {
        zmsg_t *reply = zmsg_recv(self->dealer);
        if (!reply) {
            return;
        }
        zframe_t *frame = zmsg_first(reply);
        if (zmsg_size(reply) != 1) {
            vs_log(&self->logger, VS_LOG_WARNING,
                   "publisher: dropping a reply of %zu frames (one expected)", zmsg_size(reply));
            zmsg_destroy(&reply);
            continue;
        }
        vs_msg_t msg;
        const char *why = NULL;
        int rc = vs_msg_decode(&msg, zframe_data(frame), zframe_size(frame), &why);
        if (rc != VS_OK) {
            char sample[64];
            vs_escape_sample(zframe_data(frame), zframe_size(frame), sample, sizeof sample);
            vs_log(&self->logger, VS_LOG_WARNING, "publisher: dropping a bad reply (%s: %s): %s",
                   vs_strerror(rc), why ? why : "", sample);
            zmsg_destroy(&reply);
            continue;
        }
        switch (msg.command) {
        case VS_CMD_ACK: s_handle_ack(self, &msg); break;
        case VS_CMD_ERROR: s_handle_error(self, &msg); break;
        default:
            vs_log(&self->logger, VS_LOG_WARNING,
                   "publisher: ignoring unexpected command %d from the broker", (int) msg.command);
            break;
        }
        vs_msg_clear(&msg);
        zmsg_destroy(&reply);
    }
}

static void s_check_timeout(s_publisher_t *self)
{
    if (self->flight_count && zclock_mono() - self->flights[0].sent_at > S_ACK_TIMEOUT_MS) {
        vs_log(&self->logger, VS_LOG_WARNING,
               "publisher: stream '%s': no ACK for version %llu in %d ms; resending from "
               "version %llu",
               self->stream, (unsigned long long) self->flights[0].last_version, S_ACK_TIMEOUT_MS,
               (unsigned long long) self->acked_version + 1);
        s_rewind(self);
    }
}

/*  True when an event of the watched folder is about our database: its file, its WAL or its
    rollback journal (other files of the folder, a slave's database say, do not wake us).  */
static bool s_event_is_ours(const s_publisher_t *self, const struct inotify_event *event)
{
    if (event->mask & IN_Q_OVERFLOW) {
        return true;
    }
    size_t length = strlen(self->db_name);
    if (event->len == 0 || strncmp(event->name, self->db_name, length) != 0) {
        return false;
    }
    const char *suffix = event->name + length;
    return !*suffix || streq(suffix, "-wal") || streq(suffix, "-journal");
}

/*  Reads every queued event; with arm, an event of our database starts a recheck period.    */
static void s_drain_inotify(s_publisher_t *self, bool arm)
{
    char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool ours = false;
    ssize_t size;
    while ((size = read(self->inotify_fd, events, sizeof events)) > 0) {
        /* Only a wake-up: data_version tells whether anything was committed. */
        for (ssize_t offset = 0; offset + (ssize_t) sizeof(struct inotify_event) <= size;) {
            const struct inotify_event *event = (const struct inotify_event *) (events + offset);
            ours = ours || s_event_is_ours(self, event);
            offset += (ssize_t) (sizeof *event + event->len);
        }
    }
    if (ours && arm) {
        self->recheck_until = zclock_mono() + S_RECHECK_PERIOD_MS;
        self->recheck_delay_us = self->visible_after_us / 2 > S_RECHECK_FIRST_US
                                     ? self->visible_after_us / 2
                                     : S_RECHECK_FIRST_US;
        self->event_at_us = zclock_usecs();
        if (self->flight_count == 0 && !self->more) {
            int64_t spin = 2 * self->visible_after_us + 100;
            self->spin_until_us = self->event_at_us + (spin < S_SPIN_MAX_US ? spin : S_SPIN_MAX_US);
        }
    }
}

static void s_handle_pipe(s_publisher_t *self)
{
    char *command = zstr_recv(self->pipe);
    if (!command) {
        self->state = S_STOPPING; /* interrupted */
        return;
    }
    if (streq(command, "$TERM")) {
        self->state = S_STOPPING;
    } else {
        vs_log(&self->logger, VS_LOG_WARNING, "publisher: unknown pipe command '%s'", command);
    }
    zstr_free(&command);
}

/* ---------------------------------------------------------------------------------------------
    The actor.                                                                                 */

void vs_publisher_actor(zsock_t *pipe, void *args)
{
    const vs_publisher_config_t *config = args;
    char error[1024] = "no configuration";
    s_publisher_t *self = config ? s_publisher_new(pipe, config, error, sizeof error) : NULL;
    zsock_signal(pipe, 0);
    if (!self) {
        zstr_sendm(pipe, "ERROR");
        zstr_send(pipe, error);
        return;
    }
    zstr_send(pipe, "OK");
    /* Sleeps of a few microseconds must not be stretched to the default 50 us timer slack. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    zmq_pollitem_t items[3] = {
        {zsock_resolve(pipe), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->dealer), 0, ZMQ_POLLIN, 0},
        {NULL, self->inotify_fd, ZMQ_POLLIN, 0},
    };
    while (self->state != S_STOPPING) {
        if (self->state == S_RUNNING) {
            s_pump(self);
            s_trim(self, false);
        }
        int64_t now = zclock_mono();
        /* A wake-up from the database only matters when a read could follow: with the window
           full, the DEALER blocked or a retry pending, the commit is picked up by
           data_version at the next reply or retry, and its events wait in the queue. */
        bool lingering = self->linger_until > now;
        bool can_read = self->state == S_RUNNING && !self->blocked && now >= self->retry_at &&
                        !lingering && self->flight_count < S_WINDOW_SETS &&
                        self->flight_bytes < S_WINDOW_BYTES;
        int item_count = self->state != S_RUNNING ? 1 : can_read && self->inotify_fd >= 0 ? 3 : 2;
        items[1].events = (short) (ZMQ_POLLIN | (self->blocked ? ZMQ_POLLOUT : 0));
        long timeout = S_POLL_MS;
        long sleep_us = 0;
        if (self->state != S_RUNNING) {
            timeout = -1;
        } else {
            if (self->retry_at > now) {
                timeout = (long) (self->retry_at - now);
                items[1].events = ZMQ_POLLIN;
            }
            bool spinning = can_read && self->spin_until_us && zclock_usecs() < self->spin_until_us;
            if (spinning) {
                timeout = 0;
                sleep_us = -1; /* yield, then look again */
            } else if (can_read && now < self->recheck_until) {
                self->spin_until_us = 0;
                if (self->recheck_delay_us < 1000) {
                    sleep_us = (long) self->recheck_delay_us;
                    timeout = 0;
                } else if (self->recheck_delay_us / 1000 < timeout) {
                    timeout = (long) (self->recheck_delay_us / 1000);
                }
                self->recheck_delay_us += self->recheck_delay_us < 1000 ? self->recheck_delay_us / 4
                                                                        : self->recheck_delay_us;
                /* The loop also turns on replies, not only on this timeout: without a cap
                   the delay could double past any bound within one recheck period.        */
                if (self->recheck_delay_us > S_RECHECK_PERIOD_MS * 1000) {
                    self->recheck_delay_us = S_RECHECK_PERIOD_MS * 1000;
                }
            }
            if (lingering && self->linger_until - now < timeout) {
                timeout = (long) (self->linger_until - now);
            }
            if (self->trim_at && timeout != 0) {
                long until_trim = self->trim_at > now ? (long) (self->trim_at - now) : 0;
                timeout = until_trim < timeout ? until_trim : timeout;
            }
        }
        int ready = zmq_poll(items, item_count, timeout);
        if (ready < 0) {
            if (zmq_errno() == EINTR) {
                continue;
            }
            break; /* the context is terminating */
        }
        if (ready == 0 && sleep_us < 0) {
            sched_yield();
            continue;
        }
        if (ready == 0 && sleep_us > 0) {
            struct timespec pause = {0, sleep_us * 1000};
            nanosleep(&pause, NULL);
            continue;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            s_handle_pipe(self);
        }
        if (self->state == S_RUNNING && item_count > 1 && (items[1].revents & ZMQ_POLLIN)) {
            s_handle_replies(self);
        }
        if (item_count > 2 && (items[2].revents & ZMQ_POLLIN)) {
            s_drain_inotify(self, true);
        }
        if (self->state == S_RUNNING) {
            s_check_timeout(self);
        }
    }
    if (self->state == S_STOPPING) {
        s_trim(self, true); /* one try: what is left is resent after a restart */
    }
    vs_log(&self->logger, VS_LOG_INFO,
           "publisher: stream '%s' stopped: acknowledged up to version %llu, sent up to %llu",
           self->stream, (unsigned long long) self->acked_version,
           (unsigned long long) self->highest_sent);
    s_publisher_destroy(&self);
}
