/*  vslight.c - light subscribers for the fan-out benchmark (W4): many in one process, each a
    real versync protocol client with its own CURVE connections to the broker, that receives
    a stream, verifies its hash chain and counts the rows of one table, without a database.

      vslight --broker EP --live EP --broker-key FILE --cert FILE --stream NAME --table NAME
              --count N --rows R --ready FILE --result FILE [--timeout S]

    Each of the N subscribers runs in its own thread: SUB on the live endpoint (connected
    first), DEALER on the request endpoint; FETCH since its position until caught up, then live
    sets; a gap in the live sequence or a heartbeat ahead of it means FETCH again (docs/
    protocol.md, the same algorithm as subscriber/). Every set it accepts must follow its
    position and extend the chain (hash(n) = BLAKE2b(hash(n-1) || set)); anything else marks it
    broken. When all N have answered their first FETCH, "ready" is written to the ready file.
    When each has counted R UPSERTs of the table (or the timeout passes), the result file gets
    "key value" lines: light_count, light_complete, light_broken, light_last_done_ns (the
    CLOCK_MONOTONIC time the last one reached R), light_bytes.

    It uses proto/ (libvs_proto.a) for the codec and the chain: what the bench needs of the
    subscriber module is only a way to run a subscriber without a database.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "vs_proto.h"

static const char *g_broker, *g_live, *g_stream, *g_table, *g_ready_path, *g_result_path;
static char g_server_key[41], g_public[41], g_secret[41];
static int64_t g_rows;
static atomic_int g_ready, g_done, g_broken, g_stop;
static atomic_llong g_last_done_ns, g_bytes;

static void die(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "vslight: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The Z85 key after `name = "` in a czmq certificate file (or the argument itself when it is
   a 40-character key). */
static void read_key(const char *path, const char *name, char out[41])
{
    if (strlen(path) == 40 && !strchr(path, '/')) {
        memcpy(out, path, 41);
        return;
    }
    FILE *file = fopen(path, "r");
    if (!file) {
        die("cannot open '%s': %s", path, strerror(errno));
    }
    char line[512];
    while (fgets(line, sizeof line, file)) {
        char *at = strstr(line, name);
        char *quote = at ? strchr(at, '"') : NULL;
        if (quote && strlen(quote + 1) >= 41 && quote[41] == '"') {
            memcpy(out, quote + 1, 40);
            out[40] = 0;
            fclose(file);
            return;
        }
    }
    fclose(file);
    die("no %s in '%s'", name, path);
}

static void *socket_new(void *context, int type, const char *endpoint)
{
    void *socket = zmq_socket(context, type);
    int64_t max = 80 << 20;
    int zero = 0;
    zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, g_server_key, 40);
    zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, g_public, 40);
    zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, g_secret, 40);
    zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max, sizeof max);
    zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
    if (type == ZMQ_SUB) {
        char topic[256];
        size_t size = vs_live_topic(g_stream, strlen(g_stream), topic, sizeof topic);
        zmq_setsockopt(socket, ZMQ_SUBSCRIBE, topic, size);
        zmq_setsockopt(socket, ZMQ_RCVHWM, &zero, sizeof zero);
    }
    if (zmq_connect(socket, endpoint) != 0) {
        die("connect %s: %s", endpoint, zmq_strerror(zmq_errno()));
    }
    return socket;
}

typedef struct {
    void *context;
    int index;
} light_args_t;

typedef struct {
    void *dealer;
    uint64_t position;
    uint8_t hash[VS_HASH_SIZE];
    bool fetching, ready, done, broken;
    int64_t rows;
    uint64_t request_id;
} light_t;

static void light_fetch(light_t *self)
{
    vs_msg_t msg = {.command = VS_CMD_FETCH, .request_id = ++self->request_id};
    msg.stream.data = g_stream;
    msg.stream.size = strlen(g_stream);
    msg.since = self->position;
    uint8_t *data = NULL;
    size_t size = 0;
    if (vs_msg_encode(&msg, &data, &size) != VS_OK) {
        die("cannot encode FETCH");
    }
    zmq_send(self->dealer, data, size, 0);
    free(data);
    self->fetching = true;
}

static void light_broken(light_t *self, const char *why)
{
    if (!self->broken) {
        self->broken = true;
        atomic_fetch_add(&g_broken, 1);
        fprintf(stderr, "vslight: a subscriber stops at seq %" PRIu64 ": %s\n", self->position,
                why);
    }
}

/* Accepts set seq with chain hash `hash` when it follows; counts the table's upserts. */
static void light_accept(light_t *self, uint64_t seq, vs_bytes_t hash, vs_bytes_t changeset)
{
    if (self->broken || seq != self->position + 1) {
        return;
    }
    uint8_t next[VS_HASH_SIZE];
    vs_chain_next(self->hash, changeset.data, changeset.size, next);
    if (hash.size != VS_HASH_SIZE || memcmp(next, hash.data, VS_HASH_SIZE) != 0) {
        light_broken(self, "the chain does not follow");
        return;
    }
    vs_changeset_t set;
    const char *why = NULL;
    if (vs_changeset_open(&set, changeset.data, changeset.size, &why) != VS_OK) {
        light_broken(self, why ? why : "bad change set");
        return;
    }
    int table = -1;
    for (uint32_t t = 0; t < set.table_count; t++) {
        if (vs_bytes_equal(set.tables[t].name, g_table)) {
            table = (int)t;
        }
    }
    if (table >= 0 && set.table_count == 1) {
        self->rows += (int64_t)set.change_count; /* only upserts in the bulk load */
    } else if (table >= 0) {
        vs_change_t change;
        while (vs_changeset_next(&set, &change)) {
            self->rows += change.table == (uint32_t)table && change.op == VS_OP_UPSERT;
        }
    }
    vs_changeset_close(&set);
    memcpy(self->hash, next, VS_HASH_SIZE);
    self->position = seq;
    atomic_fetch_add(&g_bytes, (long long)changeset.size);
    if (!self->done && self->rows >= g_rows) {
        self->done = true;
        long long now = now_ns(), seen = atomic_load(&g_last_done_ns);
        while (now > seen && !atomic_compare_exchange_weak(&g_last_done_ns, &seen, now)) {
        }
        atomic_fetch_add(&g_done, 1);
    }
}

static void *light_thread(void *arg)
{
    light_args_t *args = arg;
    light_t self = {0};
    void *sub = socket_new(args->context, ZMQ_SUB, g_live);
    self.dealer = socket_new(args->context, ZMQ_DEALER, g_broker);
    light_fetch(&self);
    zmq_pollitem_t items[2] = {{sub, 0, ZMQ_POLLIN, 0}, {self.dealer, 0, ZMQ_POLLIN, 0}};
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    while (!atomic_load(&g_stop) && !self.done && !self.broken) {
        if (zmq_poll(items, 2, 100) < 0) {
            continue;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            if (zmq_msg_recv(&frame, self.dealer, 0) < 0) {
                continue;
            }
            vs_msg_t msg;
            const char *why = NULL;
            if (vs_msg_decode(&msg, zmq_msg_data(&frame), zmq_msg_size(&frame), &why) != VS_OK) {
                light_broken(&self, why ? why : "bad reply");
                continue;
            }
            if (msg.command == VS_CMD_CHUNK) {
                for (size_t e = 0; e < msg.entry_count; e++) {
                    light_accept(&self, msg.entries[e].seq, msg.entries[e].hash,
                                 msg.entries[e].changeset);
                }
                if (!self.ready) {
                    self.ready = true;
                    atomic_fetch_add(&g_ready, 1);
                }
                self.fetching = false;
                if (msg.head > self.position && !self.broken) {
                    light_fetch(&self);
                }
            } else if (msg.command == VS_CMD_ERROR) {
                light_broken(&self, "the broker answered ERROR");
            }
            vs_msg_clear(&msg);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            /* two frames: topic, body */
            if (zmq_msg_recv(&frame, sub, 0) < 0) {
                continue;
            }
            int more = 0;
            size_t more_size = sizeof more;
            zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &more_size);
            if (!more) {
                continue;
            }
            if (zmq_msg_recv(&frame, sub, 0) < 0) {
                continue;
            }
            vs_msg_t msg;
            if (vs_msg_decode(&msg, zmq_msg_data(&frame), zmq_msg_size(&frame), NULL) != VS_OK) {
                continue; /* the live endpoint drops what it cannot read */
            }
            if (!self.fetching && vs_bytes_equal(msg.stream, g_stream)) {
                if (msg.command == VS_CMD_LIVE) {
                    if (msg.seq == self.position + 1) {
                        light_accept(&self, msg.seq, msg.hash, msg.changeset);
                    } else if (msg.seq > self.position + 1) {
                        light_fetch(&self); /* a gap */
                    }
                } else if (msg.command == VS_CMD_HEARTBEAT && msg.head > self.position) {
                    light_fetch(&self);
                }
            }
            vs_msg_clear(&msg);
        }
    }
    zmq_msg_close(&frame);
    zmq_close(sub);
    zmq_close(self.dealer);
    return NULL;
}

static void write_file(const char *path, const char *text)
{
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    FILE *file = fopen(temporary, "w");
    if (!file || fputs(text, file) < 0 || fclose(file) != 0 || rename(temporary, path) != 0) {
        die("cannot write '%s'", path);
    }
}

int main(int argc, char **argv)
{
    const char *broker_key = NULL, *cert = NULL;
    int count = 1;
    double timeout = 600;
    g_table = "items";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *key = argv[i], *value = argv[i + 1];
        if (strcmp(key, "--broker") == 0) {
            g_broker = value;
        } else if (strcmp(key, "--live") == 0) {
            g_live = value;
        } else if (strcmp(key, "--broker-key") == 0) {
            broker_key = value;
        } else if (strcmp(key, "--cert") == 0) {
            cert = value;
        } else if (strcmp(key, "--stream") == 0) {
            g_stream = value;
        } else if (strcmp(key, "--table") == 0) {
            g_table = value;
        } else if (strcmp(key, "--count") == 0) {
            count = atoi(value);
        } else if (strcmp(key, "--rows") == 0) {
            g_rows = atoll(value);
        } else if (strcmp(key, "--ready") == 0) {
            g_ready_path = value;
        } else if (strcmp(key, "--result") == 0) {
            g_result_path = value;
        } else if (strcmp(key, "--timeout") == 0) {
            timeout = atof(value);
        } else {
            die("unknown option %s", key);
        }
    }
    if (!g_broker || !g_live || !broker_key || !cert || !g_stream || !g_ready_path
        || !g_result_path || count < 1 || g_rows < 1) {
        die("usage: vslight --broker EP --live EP --broker-key FILE --cert FILE --stream NAME "
            "--count N --rows R --ready FILE --result FILE [--table NAME] [--timeout S]");
    }
    read_key(broker_key, "public-key", g_server_key);
    read_key(cert, "public-key", g_public);
    read_key(cert, "secret-key", g_secret);

    void *context = zmq_ctx_new();
    zmq_ctx_set(context, ZMQ_IO_THREADS, 2);
    zmq_ctx_set(context, ZMQ_MAX_SOCKETS, 4 * count + 64);
    pthread_t *threads = calloc((size_t)count, sizeof *threads);
    light_args_t *args = calloc((size_t)count, sizeof *args);
    for (int i = 0; i < count; i++) {
        args[i] = (light_args_t){.context = context, .index = i};
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setstacksize(&attributes, 256 << 10);
        if (pthread_create(&threads[i], &attributes, light_thread, &args[i]) != 0) {
            die("cannot start thread %d", i);
        }
        pthread_attr_destroy(&attributes);
    }
    int64_t deadline = now_ns() + (int64_t)(timeout * 1e9);
    bool announced = false;
    while (atomic_load(&g_done) + atomic_load(&g_broken) < count && now_ns() < deadline) {
        if (!announced && atomic_load(&g_ready) + atomic_load(&g_broken) == count) {
            write_file(g_ready_path, "ready\n");
            announced = true;
        }
        usleep(2000);
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < count; i++) {
        pthread_join(threads[i], NULL);
    }
    char text[512];
    snprintf(text, sizeof text,
             "light_count %d\nlight_complete %d\nlight_broken %d\nlight_last_done_ns %lld\n"
             "light_bytes %lld\n",
             count, atomic_load(&g_done), atomic_load(&g_broken),
             (long long)atomic_load(&g_last_done_ns), (long long)atomic_load(&g_bytes));
    write_file(g_result_path, text);
    zmq_ctx_term(context);
    free(threads);
    free(args);
    return atomic_load(&g_done) == count ? 0 : 1;
}
