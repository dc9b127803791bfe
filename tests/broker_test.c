/*  broker_test.c - the broker actor in process: publish, dedupe, restart, catch-up, status,
    authorisation, live fan-out and bad input, over CURVE on loopback.                        */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "history.h"
#include "vs_broker.h"
#include "zap.h"

#define S_REPLY_MS   10000 /* bounded wait for an answer that must come            */
#define S_SILENCE_MS 400   /* bounded wait that must see nothing                   */

typedef struct {
    char base[1024];
    char data[1100];
    char publishers[1100];
    char subscribers[1100];
    char request_endpoint[64];
    char live_endpoint[64];
    zcert_t *broker_cert;
    zcert_t *publisher;
    zcert_t *subscriber;
    zcert_t *both;
    zcert_t *stranger;
    zactor_t *broker;
    size_t max_unread; /* the broker's max_unread_bytes; 0: its default */
} s_env_t;

static void s_log(void *arg, vs_log_level_t level, const char *line)
{
    (void) arg;
    if (getenv("VS_TEST_VERBOSE") || level <= VS_LOG_ERROR) {
        fprintf(stderr, "    log %d: %s\n", (int) level, line);
    }
}

static void s_save_public(zcert_t *cert, const char *folder, const char *name)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.cert", folder, name);
    zcert_save_public(cert, path);
}

static char *s_broker_start_once(s_env_t *env, int heartbeat_ms)
{
    int request_port = vs_test_free_port();
    int live_port = vs_test_free_port();
    for (int tries = 0; live_port == request_port && tries < 10; tries++) {
        live_port = vs_test_free_port();
    }
    snprintf(env->request_endpoint, sizeof env->request_endpoint, "tcp://127.0.0.1:%d",
             request_port);
    snprintf(env->live_endpoint, sizeof env->live_endpoint, "tcp://127.0.0.1:%d", live_port);
    vs_broker_config_t config = {.data_dir = env->data,
                                 .cert = env->broker_cert,
                                 .publishers_dir = env->publishers,
                                 .subscribers_dir = env->subscribers,
                                 .request_endpoint = env->request_endpoint,
                                 .live_endpoint = env->live_endpoint,
                                 .heartbeat_ms = heartbeat_ms,
                                 .max_unread_bytes = env->max_unread,
                                 .logger = {s_log, NULL}};
    env->broker = zactor_new(vs_broker_actor, &config);
    if (!env->broker) {
        return NULL;
    }
    char *status = zstr_recv(env->broker);
    if (status && streq(status, "ERROR")) {
        zstr_free(&status);
        status = zstr_recv(env->broker);
        zactor_destroy(&env->broker);
        if (!status) {
            status = strdup("ERROR without a reason");
        }
    }
    return status;
}

/*  Starts (or restarts) the broker of env on fresh ports; returns "OK" or the error text
    (caller frees), NULL when the actor did not answer. A port taken between its discovery
    and the bind (other tests run in parallel) is retried with new ports.                   */
static char *s_broker_start(s_env_t *env, int heartbeat_ms)
{
    char *status = s_broker_start_once(env, heartbeat_ms);
    for (int tries = 0; tries < 3 && status && strstr(status, "Address already in use"); tries++) {
        zstr_free(&status);
        status = s_broker_start_once(env, heartbeat_ms);
    }
    return status;
}

/*  A fresh environment: folders, keys and a running broker.                                   */
static bool s_env_new(s_env_t *env, const char *name, int heartbeat_ms)
{
    memset(env, 0, sizeof *env);
    snprintf(env->base, sizeof env->base, "%s", vs_test_dir(name));
    snprintf(env->data, sizeof env->data, "%s/data", env->base);
    snprintf(env->publishers, sizeof env->publishers, "%s/publishers", env->base);
    snprintf(env->subscribers, sizeof env->subscribers, "%s/subscribers", env->base);
    zsys_dir_create("%s", env->publishers);
    zsys_dir_create("%s", env->subscribers);
    env->broker_cert = zcert_new();
    env->publisher = zcert_new();
    env->subscriber = zcert_new();
    env->both = zcert_new();
    env->stranger = zcert_new();
    s_save_public(env->publisher, env->publishers, "publisher");
    s_save_public(env->subscriber, env->subscribers, "subscriber");
    s_save_public(env->both, env->publishers, "both");
    s_save_public(env->both, env->subscribers, "both");
    /* junk and a second copy of a key in a folder are outside input: they must not hurt     */
    s_save_public(env->publisher, env->publishers, "publisher-copy");
    char junk[1200];
    snprintf(junk, sizeof junk, "%s/README", env->publishers);
    FILE *file = fopen(junk, "w");
    if (file) {
        fputs("curve\n    public-key = \"short\"\n\x01\x02\xff\n", file);
        fclose(file);
    }
    char *status = s_broker_start(env, heartbeat_ms);
    bool ok = status && streq(status, "OK");
    if (!ok) {
        fprintf(stderr, "  broker did not start: %s\n", status ? status : "(no answer)");
    }
    zstr_free(&status);
    return ok;
}

static void s_env_destroy(s_env_t *env)
{
    zactor_destroy(&env->broker);
    zcert_destroy(&env->broker_cert);
    zcert_destroy(&env->publisher);
    zcert_destroy(&env->subscriber);
    zcert_destroy(&env->both);
    zcert_destroy(&env->stranger);
}

static zsock_t *s_client(s_env_t *env, zcert_t *cert)
{
    zsock_t *client = zsock_new(ZMQ_DEALER);
    zsock_set_linger(client, 0);
    zcert_apply(cert, client);
    zsock_set_curve_serverkey(client, zcert_public_txt(env->broker_cert));
    zsock_connect(client, "%s", env->request_endpoint);
    return client;
}

static zsock_t *s_subscriber(s_env_t *env, zcert_t *cert, const char *topic, size_t topic_size)
{
    zsock_t *subscriber = zsock_new(ZMQ_SUB);
    zsock_set_linger(subscriber, 0);
    zcert_apply(cert, subscriber);
    zsock_set_curve_serverkey(subscriber, zcert_public_txt(env->broker_cert));
    zmq_setsockopt(zsock_resolve(subscriber), ZMQ_SUBSCRIBE, topic, topic_size);
    zsock_connect(subscriber, "%s", env->live_endpoint);
    return subscriber;
}

static bool s_send(zsock_t *client, const vs_msg_t *msg)
{
    uint8_t *data = NULL;
    size_t size = 0;
    if (vs_msg_encode(msg, &data, &size) != VS_OK) {
        return false;
    }
    int rc = zmq_send(zsock_resolve(client), data, size, 0);
    free(data);
    return rc >= 0;
}

/*  Receives one frame within timeout_ms and decodes it into *reply, which borrows from the
    returned frame (destroy it after use). NULL on timeout or undecodable bytes.              */
static zframe_t *s_recv(zsock_t *socket, int timeout_ms, vs_msg_t *reply)
{
    zsock_set_rcvtimeo(socket, timeout_ms);
    zframe_t *frame = zframe_recv(socket);
    if (!frame) {
        return NULL;
    }
    const char *why = NULL;
    if (vs_msg_decode(reply, zframe_data(frame), zframe_size(frame), &why) != VS_OK) {
        fprintf(stderr, "  undecodable reply: %s\n", why ? why : "?");
        zframe_destroy(&frame);
        return NULL;
    }
    return frame;
}

/*  A live message: topic frame then body. *topic receives the topic (caller frees).           */
static zframe_t *s_recv_live(zsock_t *subscriber, int timeout_ms, vs_msg_t *message,
                             zframe_t **topic)
{
    zsock_set_rcvtimeo(subscriber, timeout_ms);
    *topic = zframe_recv(subscriber);
    if (!*topic) {
        return NULL;
    }
    if (!zsock_rcvmore(subscriber)) {
        zframe_destroy(topic);
        return NULL;
    }
    return s_recv(subscriber, timeout_ms, message);
}

static vs_changeset_writer_t *s_writer;

/*  A valid change set of rows rows (values of value_size bytes) covering first..last.         */
static uint8_t *s_changeset(uint64_t first, uint64_t last, int rows, size_t value_size,
                            size_t *size)
{
    if (!s_writer) {
        s_writer = vs_changeset_writer_new();
    }
    const char *columns[] = {"id", "value"};
    uint32_t pk[] = {0};
    uint32_t table = 0;
    if (vs_changeset_writer_add_table(s_writer, "items",
                                      "CREATE TABLE items (id INTEGER PRIMARY KEY, value TEXT)", 2,
                                      columns, 1, pk, &table) != VS_OK) {
        return NULL;
    }
    char *text = (char *) malloc(value_size + 1);
    for (int row = 0; row < rows; row++) {
        snprintf(text, value_size + 1, "%llu-%d", (unsigned long long) last, row);
        size_t used = strlen(text);
        memset(text + used, 'x', value_size - (used < value_size ? used : value_size));
        vs_value_t values[2];
        values[0].type = VS_INTEGER;
        values[0].as.integer = (int64_t) (first * 1000 + (uint64_t) row);
        values[1].type = VS_TEXT;
        values[1].as.bytes.data = text;
        values[1].as.bytes.size = value_size;
        vs_changeset_writer_upsert(s_writer, table, 2, values);
    }
    free(text);
    uint8_t *data = NULL;
    if (vs_changeset_writer_finish(s_writer, first, last, VS_CHANGESET_CONSISTENT, &data, size) !=
        VS_OK) {
        return NULL;
    }
    return data;
}

static vs_bytes_t s_bytes(const char *text)
{
    vs_bytes_t bytes = {text, strlen(text)};
    return bytes;
}

static bool s_send_publish(zsock_t *client, uint64_t request_id, const char *stream,
                           const char *publisher, const uint8_t *changeset, size_t size)
{
    vs_msg_t publish = {.command = VS_CMD_PUBLISH, .request_id = request_id};
    publish.stream = s_bytes(stream);
    publish.publisher = s_bytes(publisher);
    publish.changeset.data = (const char *) changeset;
    publish.changeset.size = size;
    return s_send(client, &publish);
}

/*  Publishes with the acked field and waits for the answer.                                  */
static zframe_t *s_publish_acked(zsock_t *client, uint64_t request_id, const char *publisher,
                                 uint64_t acked, const uint8_t *changeset, size_t size,
                                 vs_msg_t *reply)
{
    vs_msg_t publish = {
        .command = VS_CMD_PUBLISH, .request_id = request_id, .has_acked = true, .acked = acked};
    publish.stream = s_bytes("orders");
    publish.publisher = s_bytes(publisher);
    publish.changeset.data = (const char *) changeset;
    publish.changeset.size = size;
    if (!s_send(client, &publish)) {
        return NULL;
    }
    return s_recv(client, S_REPLY_MS, reply);
}

/*  Publishes and waits for the answer; returns its frame (reply borrows from it).            */
static zframe_t *s_publish(zsock_t *client, uint64_t request_id, const char *stream,
                           const char *publisher, const uint8_t *changeset, size_t size,
                           vs_msg_t *reply)
{
    if (!s_send_publish(client, request_id, stream, publisher, changeset, size)) {
        return NULL;
    }
    return s_recv(client, S_REPLY_MS, reply);
}

static zframe_t *s_fetch(zsock_t *client, uint64_t request_id, const char *stream, uint64_t since,
                         uint64_t max_bytes, vs_msg_t *reply)
{
    vs_msg_t fetch = {
        .command = VS_CMD_FETCH, .request_id = request_id, .since = since, .max_bytes = max_bytes};
    fetch.stream = s_bytes(stream);
    if (!s_send(client, &fetch)) {
        return NULL;
    }
    return s_recv(client, S_REPLY_MS, reply);
}

static zframe_t *s_status_within(zsock_t *client, uint64_t request_id, vs_msg_t *reply,
                                 int timeout_ms)
{
    vs_msg_t status = {.command = VS_CMD_STATUS, .request_id = request_id};
    if (!s_send(client, &status)) {
        return NULL;
    }
    return s_recv(client, timeout_ms, reply);
}

static zframe_t *s_status(zsock_t *client, uint64_t request_id, vs_msg_t *reply)
{
    return s_status_within(client, request_id, reply, S_REPLY_MS);
}

/*  The head of stream according to STATUS, or -1 on failure / no such stream (-2).           */
static long long s_status_head(zsock_t *client, const char *stream)
{
    vs_msg_t reply;
    zframe_t *frame = s_status(client, 999, &reply);
    if (!frame) {
        return -1;
    }
    long long head = -2;
    if (reply.command == VS_CMD_STATUS_REPLY) {
        for (size_t index = 0; index < reply.stream_count; index++) {
            if (vs_bytes_equal(reply.streams[index].name, stream)) {
                head = (long long) reply.streams[index].head;
            }
        }
    } else {
        head = -1;
    }
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    return head;
}

/* ---------------------------------------------------------------------------------------------
    Tests                                                                                      */

static void test_publish_ack_dedupe_restart(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "publish", 100));
    zsock_t *client = s_client(&env, env.publisher);
    uint8_t *sets[3];
    size_t sizes[3];
    uint8_t hash[VS_HASH_SIZE] = {0};
    for (int index = 0; index < 3; index++) {
        sets[index] = s_changeset((uint64_t) index * 10 + 1, (uint64_t) index * 10 + 10, 5, 40,
                                  &sizes[index]);
        VS_REQUIRE(sets[index]);
        vs_msg_t ack;
        zframe_t *frame = s_publish(client, 100 + (uint64_t) index, "orders", "master-1",
                                    sets[index], sizes[index], &ack);
        VS_REQUIRE(frame);
        VS_CHECK(ack.command == VS_CMD_ACK);
        VS_CHECK(ack.request_id == 100 + (uint64_t) index);
        VS_CHECK(ack.seq == (uint64_t) index + 1);
        VS_CHECK(!ack.duplicate);
        VS_CHECK(ack.last_version == (uint64_t) index * 10 + 10);
        VS_CHECK(vs_bytes_equal(ack.stream, "orders"));
        vs_chain_next(hash, sets[index], sizes[index], hash);
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
    }
    /* a resend: same publisher, same last_version */
    vs_msg_t ack;
    zframe_t *frame = s_publish(client, 200, "orders", "master-1", sets[1], sizes[1], &ack);
    VS_REQUIRE(frame);
    VS_CHECK(ack.command == VS_CMD_ACK);
    VS_CHECK(ack.duplicate);
    VS_CHECK(ack.seq == 3);
    vs_msg_clear(&ack);
    zframe_destroy(&frame);

    /* the chain: hash(n) = H(hash(n-1) || set n) over the stored sets                        */
    vs_msg_t chunk;
    zsock_t *reader = s_client(&env, env.subscriber);
    frame = s_fetch(reader, 300, "orders", 0, 0, &chunk);
    VS_REQUIRE(frame);
    VS_CHECK(chunk.command == VS_CMD_CHUNK);
    VS_CHECK(chunk.head == 3);
    VS_CHECK(chunk.entry_count == 3);
    VS_CHECK(chunk.hash.size == VS_HASH_SIZE && memcmp(chunk.hash.data, hash, 32) == 0);
    uint8_t running[VS_HASH_SIZE] = {0};
    for (size_t index = 0; index < chunk.entry_count && index < 3; index++) {
        vs_entry_t *entry = &chunk.entries[index];
        VS_CHECK(entry->seq == index + 1);
        VS_CHECK(entry->changeset.size == sizes[index] &&
                 memcmp(entry->changeset.data, sets[index], sizes[index]) == 0);
        vs_chain_next(running, entry->changeset.data, entry->changeset.size, running);
        VS_CHECK(memcmp(entry->hash.data, running, VS_HASH_SIZE) == 0);
    }
    vs_msg_clear(&chunk);
    zframe_destroy(&frame);
    zsock_destroy(&client);
    zsock_destroy(&reader);

    /* restart: head, hash and dedupe state survive                                            */
    zactor_destroy(&env.broker);
    char *status = s_broker_start(&env, 100);
    VS_CHECK(status && streq(status, "OK"));
    zstr_free(&status);
    VS_REQUIRE(env.broker);
    client = s_client(&env, env.publisher);
    frame = s_publish(client, 400, "orders", "master-1", sets[2], sizes[2], &ack);
    VS_REQUIRE(frame);
    VS_CHECK(ack.command == VS_CMD_ACK && ack.duplicate && ack.seq == 3);
    vs_msg_clear(&ack);
    zframe_destroy(&frame);
    size_t size4 = 0;
    uint8_t *set4 = s_changeset(31, 40, 3, 10, &size4);
    frame = s_publish(client, 401, "orders", "master-1", set4, size4, &ack);
    VS_REQUIRE(frame);
    VS_CHECK(ack.command == VS_CMD_ACK && !ack.duplicate && ack.seq == 4);
    vs_msg_clear(&ack);
    zframe_destroy(&frame);
    vs_chain_next(hash, set4, size4, hash);
    reader = s_client(&env, env.subscriber);
    frame = s_fetch(reader, 402, "orders", 3, 0, &chunk);
    VS_REQUIRE(frame);
    VS_CHECK(chunk.command == VS_CMD_CHUNK && chunk.head == 4 && chunk.entry_count == 1);
    VS_CHECK(chunk.hash.size == VS_HASH_SIZE && memcmp(chunk.hash.data, hash, 32) == 0);
    vs_msg_clear(&chunk);
    zframe_destroy(&frame);
    /* another publisher on the same stream continues the same sequence                       */
    frame = s_publish(client, 403, "orders", "master-2", sets[0], sizes[0], &ack);
    VS_REQUIRE(frame);
    VS_CHECK(ack.command == VS_CMD_ACK && !ack.duplicate && ack.seq == 5);
    vs_msg_clear(&ack);
    zframe_destroy(&frame);
    free(set4);
    for (int index = 0; index < 3; index++) {
        free(sets[index]);
    }
    zsock_destroy(&reader);
    zsock_destroy(&client);
    s_env_destroy(&env);
}

/*  A publisher the broker does not know yet, whose first set was lost on the way (the broker
    died before committing it, or the batch failed) while the next one was still queued: the
    next one must not be stored, or its ACK lets the publisher trim versions never stored and
    the resend of the first is then dropped as a duplicate (found by a review). Its acked
    field (0: nothing acknowledged yet) says where it stands.                                 */
static void test_new_publisher_gap(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "new_publisher_gap", 100));
    zsock_t *client = s_client(&env, env.publisher);
    size_t first_size = 0, second_size = 0, third_size = 0;
    uint8_t *first = s_changeset(1, 5, 3, 10, &first_size);
    uint8_t *second = s_changeset(6, 10, 3, 10, &second_size);
    uint8_t *third = s_changeset(8, 12, 3, 10, &third_size);
    VS_REQUIRE(first && second && third);
    vs_msg_t reply;
    zframe_t *frame = s_publish_acked(client, 1, "fresh", 0, second, second_size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_EGAP);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    VS_CHECK(s_status_head(client, "orders") == -2); /* nothing stored */
    /* the resend from the acknowledged version: both stored, in order */
    frame = s_publish_acked(client, 2, "fresh", 0, first, first_size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && !reply.duplicate && reply.seq == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    frame = s_publish_acked(client, 3, "fresh", 0, second, second_size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && !reply.duplicate && reply.seq == 2 &&
             reply.last_version == 10);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    /* a publisher that held 7 acknowledged by a broker whose history is gone goes on from 8,
       as before the field existed; so does one that sends no acked */
    frame = s_publish_acked(client, 4, "known-elsewhere", 7, third, third_size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && !reply.duplicate && reply.seq == 3);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    frame = s_publish(client, 5, "orders", "no-acked-field", second, second_size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && !reply.duplicate && reply.seq == 4);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    free(first);
    free(second);
    free(third);
    zsock_destroy(&client);
    s_env_destroy(&env);
}

/*  A subscriber that sends FETCH after FETCH and reads nothing: the broker holds at most about
    max_unread_bytes of CHUNKs for it, answers the rest VS_EBUSY, and serves others as usual.
    It used to build and hold every CHUNK (a review grew a broker to 3.4 GB with 200).        */
static void test_unread_bound(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "unread", 100));
    zsock_t *client = s_client(&env, env.publisher);
    for (uint64_t version = 1; version <= 8; version++) {
        size_t size = 0;
        uint8_t *set = s_changeset(version, version, 4, 65536, &size);
        vs_msg_t ack;
        zframe_t *frame = s_publish(client, version, "big", "p", set, size, &ack);
        VS_REQUIRE(frame);
        VS_CHECK(ack.command == VS_CMD_ACK && ack.seq == version);
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
        free(set);
    }
    zsock_destroy(&client);
    zactor_destroy(&env.broker);
    env.max_unread = 1024 * 1024;
    char *status = s_broker_start(&env, 100);
    VS_CHECK(status && streq(status, "OK"));
    zstr_free(&status);
    VS_REQUIRE(env.broker);

    enum { FETCHES = 200 };
    zsock_t *flood = zsock_new(ZMQ_DEALER);
    zsock_set_linger(flood, 0);
    zsock_set_rcvhwm(flood, 1);
    zsock_set_rcvbuf(flood, 4096);
    zcert_apply(env.subscriber, flood);
    zsock_set_curve_serverkey(flood, zcert_public_txt(env.broker_cert));
    zsock_connect(flood, "%s", env.request_endpoint);
    for (int index = 0; index < FETCHES; index++) {
        vs_msg_t fetch = {.command = VS_CMD_FETCH,
                          .request_id = 1000 + (uint64_t) index,
                          .since = 0,
                          .max_bytes = 16 * 1024 * 1024};
        fetch.stream = s_bytes("big");
        VS_CHECK(s_send(flood, &fetch));
    }
    /* another subscriber is served meanwhile */
    zsock_t *reader = s_client(&env, env.subscriber);
    vs_msg_t chunk;
    zframe_t *frame = s_fetch(reader, 1, "big", 6, 0, &chunk);
    VS_REQUIRE(frame);
    VS_CHECK(chunk.command == VS_CMD_CHUNK && chunk.head == 8 && chunk.entry_count >= 1);
    vs_msg_clear(&chunk);
    zframe_destroy(&frame);
    /* every FETCH of the flood answered, most of them VS_EBUSY */
    int chunks = 0, busy = 0;
    for (int index = 0; index < FETCHES; index++) {
        vs_msg_t reply;
        frame = s_recv(flood, S_REPLY_MS, &reply);
        if (!frame) {
            break;
        }
        chunks += reply.command == VS_CMD_CHUNK && reply.entry_count == 8;
        busy += reply.command == VS_CMD_ERROR && reply.code == VS_EBUSY;
        vs_msg_clear(&reply);
        zframe_destroy(&frame);
    }
    if (getenv("VS_TEST_VERBOSE")) {
        fprintf(stderr, "    unread bound: %d CHUNKs, %d VS_EBUSY\n", chunks, busy);
    }
    VS_CHECK(chunks + busy == FETCHES);
    VS_CHECK(busy > FETCHES / 2);
    VS_CHECK(chunks >= 1);
    /* read, the client is served again */
    frame = s_fetch(flood, 2, "big", 0, 16 * 1024 * 1024, &chunk);
    VS_REQUIRE(frame);
    VS_CHECK(chunk.command == VS_CMD_CHUNK && chunk.entry_count == 8);
    vs_msg_clear(&chunk);
    zframe_destroy(&frame);
    zsock_destroy(&flood);
    zsock_destroy(&reader);
    s_env_destroy(&env);
}

static void test_fetch_chunks_and_status(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "fetch", 100));
    zsock_t *publisher = s_client(&env, env.publisher);
    zsock_t *subscriber = s_client(&env, env.subscriber);
    enum { SETS = 40 };
    uint8_t *sets[SETS];
    size_t sizes[SETS];
    for (int index = 0; index < SETS; index++) {
        sets[index] = s_changeset((uint64_t) index + 1, (uint64_t) index + 1, 1 + index % 5,
                                  100 + (size_t) index * 7, &sizes[index]);
        VS_REQUIRE(sets[index]);
        vs_msg_t ack;
        zframe_t *frame = s_publish(publisher, (uint64_t) index + 1, "catalog", "pub-a",
                                    sets[index], sizes[index], &ack);
        VS_REQUIRE(frame);
        VS_CHECK(ack.command == VS_CMD_ACK && ack.seq == (uint64_t) index + 1);
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
    }
    /* reassemble the history in chunks of at most 1500 bytes (or one set)                    */
    uint64_t since = 0;
    int rounds = 0;
    uint8_t running[VS_HASH_SIZE] = {0};
    while (since < SETS && rounds < 2 * SETS) {
        rounds++;
        vs_msg_t chunk;
        zframe_t *frame =
            s_fetch(subscriber, 1000 + (uint64_t) rounds, "catalog", since, 1500, &chunk);
        VS_REQUIRE(frame);
        VS_REQUIRE(chunk.command == VS_CMD_CHUNK);
        VS_CHECK(chunk.head == SETS);
        VS_CHECK(chunk.entry_count >= 1);
        size_t bytes = 0;
        for (size_t index = 0; index < chunk.entry_count; index++) {
            vs_entry_t *entry = &chunk.entries[index];
            VS_CHECK(entry->seq == since + 1);
            if (entry->seq != since + 1 || entry->seq > SETS) {
                break;
            }
            size_t at = (size_t) entry->seq - 1;
            VS_CHECK(entry->changeset.size == sizes[at] &&
                     memcmp(entry->changeset.data, sets[at], sizes[at]) == 0);
            vs_chain_next(running, entry->changeset.data, entry->changeset.size, running);
            VS_CHECK(memcmp(entry->hash.data, running, VS_HASH_SIZE) == 0);
            bytes += entry->changeset.size;
            since = entry->seq;
        }
        VS_CHECK(chunk.entry_count == 1 || bytes <= 1500);
        vs_msg_clear(&chunk);
        zframe_destroy(&frame);
    }
    VS_CHECK(since == SETS);
    VS_CHECK(rounds > 3);

    /* since == head: no entry; since > head: VS_EBEHIND; unknown stream: head 0             */
    vs_msg_t reply;
    zframe_t *frame = s_fetch(subscriber, 2000, "catalog", SETS, 0, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_CHUNK && reply.entry_count == 0 && reply.head == SETS);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    frame = s_fetch(subscriber, 2001, "catalog", SETS + 5, 0, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_EBEHIND);
    VS_CHECK(reply.request_id == 2001);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    frame = s_fetch(subscriber, 2002, "nowhere", 0, 0, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_CHUNK && reply.head == 0 && reply.entry_count == 0);
    static const uint8_t zero[VS_HASH_SIZE];
    VS_CHECK(reply.hash.size == VS_HASH_SIZE && memcmp(reply.hash.data, zero, 32) == 0);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);

    /* a publisher may not FETCH                                                              */
    frame = s_fetch(publisher, 2003, "catalog", 0, 0, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_EAUTH);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);

    /* STATUS lists streams, heads, hashes and publishers                                    */
    size_t size = 0;
    uint8_t *other = s_changeset(7, 9, 1, 10, &size);
    frame = s_publish(publisher, 3000, "audit", "pub-b", other, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    free(other);
    frame = s_status(subscriber, 3001, &reply);
    VS_REQUIRE(frame);
    VS_REQUIRE(reply.command == VS_CMD_STATUS_REPLY);
    VS_CHECK(reply.request_id == 3001);
    VS_REQUIRE(reply.stream_count == 2);
    VS_CHECK(vs_bytes_equal(reply.streams[0].name, "audit"));
    VS_CHECK(reply.streams[0].head == 1);
    VS_CHECK(reply.streams[0].publisher_count == 1);
    VS_CHECK(reply.streams[0].publisher_count == 1 &&
             vs_bytes_equal(reply.streams[0].publishers[0].id, "pub-b") &&
             reply.streams[0].publishers[0].last_version == 9);
    VS_CHECK(vs_bytes_equal(reply.streams[1].name, "catalog"));
    VS_CHECK(reply.streams[1].head == SETS);
    VS_CHECK(reply.streams[1].hash.size == VS_HASH_SIZE &&
             memcmp(reply.streams[1].hash.data, running, VS_HASH_SIZE) == 0);
    VS_CHECK(reply.streams[1].publisher_count == 1 &&
             reply.streams[1].publishers[0].last_version == SETS);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    for (int index = 0; index < SETS; index++) {
        free(sets[index]);
    }
    zsock_destroy(&publisher);
    zsock_destroy(&subscriber);
    s_env_destroy(&env);
}

static void test_authorisation(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "auth", 100));
    size_t size = 0;
    uint8_t *set = s_changeset(1, 1, 2, 10, &size);
    VS_REQUIRE(set);

    /* a subscriber key may not publish                                                       */
    zsock_t *subscriber = s_client(&env, env.subscriber);
    vs_msg_t reply;
    zframe_t *frame = s_publish(subscriber, 1, "secret", "sneaky", set, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_EAUTH && reply.request_id == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);

    /* an unknown key gets nothing at all, while a valid client is served                     */
    zsock_t *stranger = s_client(&env, env.stranger);
    VS_CHECK(s_send_publish(stranger, 2, "secret", "stranger", set, size));
    vs_msg_t status;
    VS_CHECK(s_status_within(stranger, 3, &status, S_SILENCE_MS) == NULL);
    VS_CHECK(s_status_head(subscriber, "secret") == -2);

    /* a client without CURVE never gets through                                            */
    zsock_t *plain = zsock_new(ZMQ_DEALER);
    zsock_set_linger(plain, 0);
    zsock_connect(plain, "%s", env.request_endpoint);
    VS_CHECK(s_status_within(plain, 7, &status, S_SILENCE_MS) == NULL);
    zsock_destroy(&plain);

    /* a key in both folders may do both                                                     */
    zsock_t *both = s_client(&env, env.both);
    frame = s_publish(both, 4, "shared", "both-1", set, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    frame = s_fetch(both, 5, "shared", 0, 0, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_CHUNK && reply.entry_count == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);

    /* a key added to the folder later is admitted without a restart                          */
    s_save_public(env.stranger, env.publishers, "late");
    zsock_t *late = s_client(&env, env.stranger);
    frame = s_publish(late, 6, "shared", "late-1", set, size, &reply);
    VS_CHECK(frame && reply.command == VS_CMD_ACK && reply.seq == 2);
    if (frame) {
        vs_msg_clear(&reply);
        zframe_destroy(&frame);
    }
    zsock_destroy(&late);

    /* a certificate replaced by another (czmq's are all of one size) with the same whole-second
       modification time, as a rotation within the second of the last look: the old key is
       refused and the new one admitted. The keyring used to miss it for good.               */
    zcert_t *old_key = zcert_new();
    zcert_t *new_key = zcert_new();
    char rotating[1200];
    snprintf(rotating, sizeof rotating, "%s/rotating.cert", env.subscribers);
    struct timespec fixed[2] = {{1700000000, 0}, {1700000000, 0}};
    s_save_public(old_key, env.subscribers, "rotating");
    VS_CHECK(utimensat(AT_FDCWD, rotating, fixed, 0) == 0);
    zsock_t *rotated = s_client(&env, old_key);
    VS_CHECK(s_status_head(rotated, "shared") == 2);
    zsock_destroy(&rotated);
    s_save_public(new_key, env.subscribers, "rotating");
    VS_CHECK(utimensat(AT_FDCWD, rotating, fixed, 0) == 0);
    rotated = s_client(&env, old_key);
    VS_CHECK(s_status_within(rotated, 8, &status, S_SILENCE_MS) == NULL);
    zsock_destroy(&rotated);
    rotated = s_client(&env, new_key);
    VS_CHECK(s_status_head(rotated, "shared") == 2);
    zsock_destroy(&rotated);
    zcert_destroy(&old_key);
    zcert_destroy(&new_key);

    zsock_destroy(&stranger);
    zsock_destroy(&subscriber);
    zsock_destroy(&both);
    free(set);
    s_env_destroy(&env);
}

static void test_live(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "live", 50));
    zsock_t *publisher = s_client(&env, env.publisher);
    size_t size = 0;
    uint8_t *first = s_changeset(1, 1, 1, 10, &size);
    vs_msg_t reply;
    zframe_t *frame = s_publish(publisher, 1, "feed", "p", first, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    uint8_t hash[VS_HASH_SIZE] = {0};
    vs_chain_next(hash, first, size, hash);
    free(first);

    char topic[VS_MAX_STREAM_NAME + 1];
    size_t topic_size = vs_live_topic("feed", 4, topic, sizeof topic);
    VS_REQUIRE(topic_size == 5);
    zsock_t *good = s_subscriber(&env, env.subscriber, topic, topic_size);
    zsock_t *bad = s_subscriber(&env, env.publisher, "", 0);
    /* a heartbeat shows the subscription is active and carries the head                     */
    bool heartbeat = false;
    int64_t deadline = zclock_mono() + S_REPLY_MS;
    while (!heartbeat && zclock_mono() < deadline) {
        zframe_t *topic_frame = NULL;
        vs_msg_t message;
        frame = s_recv_live(good, 500, &message, &topic_frame);
        if (frame) {
            if (message.command == VS_CMD_HEARTBEAT) {
                heartbeat = true;
                VS_CHECK(vs_bytes_equal(message.stream, "feed"));
                VS_CHECK(message.head == 1);
                VS_CHECK(memcmp(message.hash.data, hash, VS_HASH_SIZE) == 0);
                VS_CHECK(zframe_size(topic_frame) == 5 &&
                         memcmp(zframe_data(topic_frame), "feed\0", 5) == 0);
            }
            vs_msg_clear(&message);
            zframe_destroy(&frame);
        }
        zframe_destroy(&topic_frame);
    }
    VS_REQUIRE(heartbeat);

    uint8_t *second = s_changeset(2, 3, 2, 10, &size);
    frame = s_publish(publisher, 2, "feed", "p", second, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 2);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    vs_chain_next(hash, second, size, hash);
    bool live = false;
    deadline = zclock_mono() + S_REPLY_MS;
    while (!live && zclock_mono() < deadline) {
        zframe_t *topic_frame = NULL;
        vs_msg_t message;
        frame = s_recv_live(good, 500, &message, &topic_frame);
        if (frame) {
            if (message.command == VS_CMD_LIVE) {
                live = true;
                VS_CHECK(vs_bytes_equal(message.stream, "feed"));
                VS_CHECK(message.seq == 2);
                VS_CHECK(message.hash.size == 32 &&
                         memcmp(message.hash.data, hash, VS_HASH_SIZE) == 0);
                VS_CHECK(message.changeset.size == size &&
                         memcmp(message.changeset.data, second, size) == 0);
                VS_CHECK(zframe_size(topic_frame) == 5);
            }
            vs_msg_clear(&message);
            zframe_destroy(&frame);
        }
        zframe_destroy(&topic_frame);
    }
    VS_CHECK(live);
    free(second);

    /* the publisher key never got past the live endpoint's handshake                         */
    zframe_t *topic_frame = NULL;
    vs_msg_t message;
    frame = s_recv_live(bad, S_SILENCE_MS, &message, &topic_frame);
    VS_CHECK(frame == NULL);
    if (frame) {
        vs_msg_clear(&message);
        zframe_destroy(&frame);
    }
    zframe_destroy(&topic_frame);
    zsock_destroy(&good);
    zsock_destroy(&bad);
    zsock_destroy(&publisher);
    s_env_destroy(&env);
}

/*  Sends raw frames and expects an ERROR (code when not 0) or, when code < 0, no answer.      */
static void s_expect_error(zsock_t *client, const void *data, size_t size, int code)
{
    zmq_send(zsock_resolve(client), data, size, 0);
    vs_msg_t reply;
    zframe_t *frame = s_recv(client, S_REPLY_MS, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR);
    VS_CHECK(code == 0 || reply.code == (uint32_t) code);
    VS_CHECK(reply.reason.size > 0);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
}

static int s_tcp_connect(const char *endpoint)
{
    const char *colon = strrchr(endpoint, ':');
    if (!colon) {
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons((uint16_t) atoi(colon + 1));
    if (fd >= 0 && connect(fd, (struct sockaddr *) &address, sizeof address) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_bad_input(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "junk", 100));
    zsock_t *client = s_client(&env, env.both);

    uint8_t random[200];
    uint32_t state = 12345;
    for (size_t index = 0; index < sizeof random; index++) {
        state = state * 1103515245u + 12345u;
        random[index] = (uint8_t) (state >> 16);
    }
    random[0] = 0xc1; /* never valid msgpack */
    s_expect_error(client, random, sizeof random, 0);
    static const uint8_t bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    s_expect_error(client, bomb, sizeof bomb, 0);
    static const uint8_t version[] = {0x93, 0x02, 0x05, 0x07};
    s_expect_error(client, version, sizeof version, VS_EVERSION);
    static const uint8_t command[] = {0x93, 0x01, 0x63, 0x07};
    s_expect_error(client, command, sizeof command, VS_ECOMMAND);
    s_expect_error(client, "", 0, 0);
    /* a reply command sent as a request                                                      */
    vs_msg_t ack = {.command = VS_CMD_ACK, .request_id = 9, .seq = 1, .last_version = 1};
    ack.stream = s_bytes("orders");
    uint8_t *data = NULL;
    size_t size = 0;
    VS_REQUIRE(vs_msg_encode(&ack, &data, &size) == VS_OK);
    s_expect_error(client, data, size, VS_ECOMMAND);
    free(data);
    /* a PUBLISH whose change set is junk                                                     */
    VS_CHECK(s_send_publish(client, 10, "orders", "p", random, sizeof random));
    vs_msg_t reply;
    zframe_t *frame = s_recv(client, S_REPLY_MS, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_EPROTO && reply.request_id == 10);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    /* a 3-frame message                                                                      */
    zstr_sendx(client, "one", "two", NULL);
    frame = s_recv(client, S_REPLY_MS, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_EPROTO);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    /* raw TCP junk on both ports                                                             */
    const char *endpoints[] = {env.request_endpoint, env.live_endpoint};
    for (int index = 0; index < 2; index++) {
        int fd = s_tcp_connect(endpoints[index]);
        VS_CHECK(fd >= 0);
        if (fd >= 0) {
            static const char http[] = "GET / HTTP/1.0\r\n\r\n";
            VS_CHECK(send(fd, http, sizeof http - 1, MSG_NOSIGNAL) > 0);
            /* the broker may have hung up already                                            */
            (void) !send(fd, random, sizeof random, MSG_NOSIGNAL);
            close(fd);
        }
        fd = s_tcp_connect(endpoints[index]);
        if (fd >= 0) {
            /* a ZMTP greeting claiming CURVE, then a huge frame                              */
            uint8_t greeting[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0};
            memcpy(greeting + 12, "CURVE", 5);
            VS_CHECK(send(fd, greeting, sizeof greeting, MSG_NOSIGNAL) > 0);
            static const uint8_t huge[] = {0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
            (void) !send(fd, huge, sizeof huge, MSG_NOSIGNAL);
            close(fd);
        }
    }
    /* still serving                                                                          */
    size_t set_size = 0;
    uint8_t *set = s_changeset(1, 2, 2, 10, &set_size);
    frame = s_publish(client, 11, "orders", "p", set, set_size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 1 && reply.request_id == 11);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    free(set);

    /* a peer that keeps sending junk is ignored; the others are served                       */
    zsock_t *noisy = s_client(&env, env.publisher);
    for (int index = 0; index < 20; index++) {
        zmq_send(zsock_resolve(noisy), bomb, sizeof bomb, 0);
    }
    int errors = 0;
    while ((frame = s_recv(noisy, S_SILENCE_MS * 2, &reply)) != NULL) {
        VS_CHECK(reply.command == VS_CMD_ERROR);
        errors++;
        vs_msg_clear(&reply);
        zframe_destroy(&frame);
    }
    VS_CHECK(errors == 17);
    VS_CHECK(s_status_within(noisy, 12, &reply, S_SILENCE_MS) == NULL);
    VS_CHECK(s_status_head(client, "orders") == 1);
    zsock_destroy(&noisy);
    zsock_destroy(&client);
    s_env_destroy(&env);
}

static void test_pipeline(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "pipeline", 100));
    zsock_t *client = s_client(&env, env.publisher);
    enum { COUNT = 1000 };
    size_t size = 0;
    for (uint64_t index = 1; index <= COUNT; index++) {
        uint8_t *set = s_changeset(index, index, 1, 20, &size);
        VS_REQUIRE(set);
        VS_REQUIRE(s_send_publish(client, index, "pipe", "p", set, size));
        if (index % 100 == 0) {
            /* a resend in the stream of requests: its duplicate ACK comes in order           */
            VS_REQUIRE(s_send_publish(client, 100000 + index, "pipe", "p", set, size));
        }
        free(set);
    }
    bool in_order = true;
    for (uint64_t index = 1; index <= COUNT; index++) {
        vs_msg_t ack;
        zframe_t *frame = s_recv(client, S_REPLY_MS, &ack);
        VS_REQUIRE(frame);
        if (ack.command != VS_CMD_ACK || ack.request_id != index || ack.seq != index ||
            ack.duplicate) {
            in_order = false;
        }
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
        if (index % 100 == 0) {
            frame = s_recv(client, S_REPLY_MS, &ack);
            VS_REQUIRE(frame);
            if (ack.command != VS_CMD_ACK || ack.request_id != 100000 + index || ack.seq != index ||
                !ack.duplicate) {
                in_order = false;
            }
            vs_msg_clear(&ack);
            zframe_destroy(&frame);
        }
    }
    VS_CHECK(in_order);
    VS_CHECK(s_status_head(client, "pipe") == COUNT);
    zsock_destroy(&client);
    s_env_destroy(&env);
}

static void test_large_sets(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "large", 100));
    zsock_t *publisher = s_client(&env, env.publisher);
    zsock_t *subscriber = s_client(&env, env.subscriber);
    enum { SETS = 3 };
    uint8_t *sets[SETS];
    size_t sizes[SETS];
    for (int index = 0; index < SETS; index++) {
        /* about 2 MiB each: over the default chunk size of 1 MiB                             */
        sets[index] =
            s_changeset((uint64_t) index + 1, (uint64_t) index + 1, 2000, 1000, &sizes[index]);
        VS_REQUIRE(sets[index] && sizes[index] > VS_DEFAULT_CHUNK_BYTES);
        VS_REQUIRE(
            s_send_publish(publisher, (uint64_t) index + 1, "big", "p", sets[index], sizes[index]));
    }
    for (int index = 0; index < SETS; index++) {
        vs_msg_t ack;
        zframe_t *frame = s_recv(publisher, S_REPLY_MS, &ack);
        VS_REQUIRE(frame);
        VS_CHECK(ack.command == VS_CMD_ACK && ack.seq == (uint64_t) index + 1);
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
    }
    /* the default chunk holds one such set; a huge max_bytes is capped, here all three fit  */
    vs_msg_t chunk;
    zframe_t *frame = s_fetch(subscriber, 10, "big", 0, 0, &chunk);
    VS_REQUIRE(frame);
    VS_CHECK(chunk.command == VS_CMD_CHUNK && chunk.entry_count == 1 && chunk.head == SETS);
    vs_msg_clear(&chunk);
    zframe_destroy(&frame);
    frame = s_fetch(subscriber, 11, "big", 0, UINT64_MAX, &chunk);
    VS_REQUIRE(frame);
    VS_CHECK(chunk.command == VS_CMD_CHUNK && chunk.entry_count == SETS);
    for (size_t index = 0; index < chunk.entry_count && index < SETS; index++) {
        VS_CHECK(chunk.entries[index].changeset.size == sizes[index] &&
                 memcmp(chunk.entries[index].changeset.data, sets[index], sizes[index]) == 0);
    }
    vs_msg_clear(&chunk);
    zframe_destroy(&frame);
    for (int index = 0; index < SETS; index++) {
        free(sets[index]);
    }
    zsock_destroy(&publisher);
    zsock_destroy(&subscriber);
    s_env_destroy(&env);
}

static void test_store_failure(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "store", 100));
    zsock_t *client = s_client(&env, env.publisher);
    size_t size = 0;
    uint8_t *set = s_changeset(1, 1, 1, 10, &size);
    vs_msg_t reply;
    zframe_t *frame = s_publish(client, 1, "locked", "p", set, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 1);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    free(set);

    /* another connection holds the write lock: the broker answers ESTORE and goes on        */
    char path[1200];
    snprintf(path, sizeof path, "%s/history.db", env.data);
    sqlite3 *db = NULL;
    VS_REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    VS_REQUIRE(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    uint8_t *second = s_changeset(2, 2, 1, 10, &size);
    frame = s_publish(client, 2, "locked", "p", second, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_ESTORE && reply.request_id == 2);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    /* a new stream in the failed batch is forgotten too                                      */
    frame = s_publish(client, 3, "fresh", "p", second, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ERROR && reply.code == VS_ESTORE);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    VS_CHECK(s_status_head(client, "fresh") == -2);
    VS_CHECK(s_status_head(client, "locked") == 1);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);

    /* the resend is stored with the next sequence: no hole                                   */
    frame = s_publish(client, 4, "locked", "p", second, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 2 && !reply.duplicate);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    frame = s_publish(client, 5, "fresh", "p", second, size, &reply);
    VS_REQUIRE(frame);
    VS_CHECK(reply.command == VS_CMD_ACK && reply.seq == 1 && !reply.duplicate);
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    free(second);
    zsock_destroy(&client);

    /* a damaged history is refused at start, with a reason                                  */
    zactor_destroy(&env.broker);
    VS_REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    VS_CHECK(sqlite3_exec(db, "UPDATE streams SET head = head + 1 WHERE name = 'locked'", NULL,
                          NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    char *status = s_broker_start(&env, 100);
    VS_CHECK(status && strstr(status, "inconsistent"));
    zstr_free(&status);
    zactor_destroy(&env.broker);
    s_env_destroy(&env);
}

static void test_start_errors(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "start", 100));
    /* one ZAP handler per process: a second broker is refused with a reason                  */
    zactor_t *first = env.broker;
    env.broker = NULL;
    char *status = s_broker_start(&env, 100);
    VS_CHECK(status && strstr(status, "in use by another broker"));
    zstr_free(&status);
    zactor_destroy(&env.broker);
    char data[sizeof env.data];
    memcpy(data, env.data, sizeof data);
    snprintf(env.data, sizeof env.data, "%s/other", env.base);
    status = s_broker_start(&env, 100);
    VS_CHECK(status && strstr(status, "ZAP"));
    zstr_free(&status);
    zactor_destroy(&env.broker);
    memcpy(env.data, data, sizeof data);
    zactor_destroy(&first);

    /* a port in use                                                                          */
    int port = vs_test_free_port();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons((uint16_t) port);
    VS_REQUIRE(bind(fd, (struct sockaddr *) &address, sizeof address) == 0);
    VS_REQUIRE(listen(fd, 1) == 0);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    vs_broker_config_t config = {.data_dir = env.data,
                                 .cert = env.broker_cert,
                                 .publishers_dir = env.publishers,
                                 .subscribers_dir = env.subscribers,
                                 .request_endpoint = endpoint,
                                 .live_endpoint = "tcp://127.0.0.1:*",
                                 .logger = {s_log, NULL}};
    zactor_t *broker = zactor_new(vs_broker_actor, &config);
    char *answer = zstr_recv(broker);
    char *reason = zstr_recv(broker);
    VS_CHECK(answer && streq(answer, "ERROR"));
    VS_CHECK(reason && strstr(reason, "cannot bind request endpoint") && strstr(reason, endpoint));
    zstr_free(&answer);
    zstr_free(&reason);
    zactor_destroy(&broker);
    close(fd);

    /* ephemeral ports, read back with ENDPOINTS                                              */
    config.request_endpoint = "tcp://127.0.0.1:*";
    broker = zactor_new(vs_broker_actor, &config);
    answer = zstr_recv(broker);
    VS_CHECK(answer && streq(answer, "OK"));
    zstr_free(&answer);
    zstr_send(broker, "ENDPOINTS");
    char *request = NULL;
    char *live = NULL;
    VS_CHECK(zstr_recvx(broker, &request, &live, NULL) == 2);
    VS_CHECK(request && strncmp(request, "tcp://127.0.0.1:", 16) == 0);
    VS_CHECK(live && strncmp(live, "tcp://127.0.0.1:", 16) == 0 && !streq(live, request));
    if (request) {
        snprintf(env.request_endpoint, sizeof env.request_endpoint, "%s", request);
        zsock_t *client = s_client(&env, env.subscriber);
        VS_CHECK(s_status_head(client, "none") == -2);
        zsock_destroy(&client);
    }
    zstr_free(&request);
    zstr_free(&live);
    zactor_destroy(&broker);
    s_env_destroy(&env);
}

static void test_history_unit(void)
{
    char data[1100];
    snprintf(data, sizeof data, "%s/deep/er/data", vs_test_dir("history"));
    vs_logger_t logger = {s_log, NULL};
    vs_history_t *history = NULL;
    char why[256];
    VS_REQUIRE(vs_history_open(data, &logger, &history, why, sizeof why) == VS_OK);
    vs_history_receipt_t receipt;
    VS_CHECK(vs_history_append(history, s_bytes("bad name!"), s_bytes("p"), 1, 1, "x", 1, &receipt) ==
             VS_EINVAL);
    VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("bad id"), 1, 1, "x", 1, &receipt) ==
             VS_EINVAL);
    VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), 5, 5, "abc", 3, &receipt) ==
             VS_OK);
    VS_CHECK(!receipt.duplicate && receipt.seq == 1);
    /* a duplicate of a staged set is recognised before the commit                            */
    VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), 5, 5, "abc", 3, &receipt) ==
             VS_OK);
    VS_CHECK(receipt.duplicate && receipt.seq == 1);
    VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), 6, 6, "def", 3, &receipt) ==
             VS_OK);
    VS_CHECK(receipt.seq == 2);
    /* a set that would leave versions out (an earlier one lost on the way) is refused, and
       nothing is staged: the publisher resends from its acknowledged version               */
    VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), 8, 9, "ghi", 3, &receipt) ==
             VS_EGAP);
    VS_CHECK(receipt.last_version == 6 && receipt.seq == 2 && !receipt.duplicate);
    VS_CHECK(vs_history_pending(history));
    VS_CHECK(vs_history_commit(history) == VS_OK);
    VS_CHECK(!vs_history_pending(history));
    vs_history_chunk_t chunk;
    VS_CHECK(vs_history_fetch(history, s_bytes("s"), 0, 1, &chunk) == VS_OK);
    VS_CHECK(chunk.head == 2 && chunk.entry_count == 1 && chunk.entries[0].seq == 1);
    VS_CHECK(vs_history_fetch(history, s_bytes("s"), 1, 100, &chunk) == VS_OK);
    VS_CHECK(chunk.entry_count == 1 && chunk.entries[0].changeset.size == 3 &&
             memcmp(chunk.entries[0].changeset.data, "def", 3) == 0);
    VS_CHECK(vs_history_fetch(history, s_bytes("s"), 3, 100, &chunk) == VS_EBEHIND);
    VS_CHECK(vs_history_fetch(history, s_bytes("t"), 0, 100, &chunk) == VS_OK);
    VS_CHECK(chunk.head == 0 && chunk.entry_count == 0);
    vs_stream_info_t *streams = NULL;
    size_t count = 0;
    VS_CHECK(vs_history_status(history, &streams, &count) == VS_OK);
    VS_CHECK(count == 1 && streams[0].head == 2 && streams[0].publisher_count == 1 &&
             streams[0].publishers[0].last_version == 6);
    vs_history_status_free(&streams, count);
    /* one history per data folder at a time                                                  */
    vs_history_t *second = NULL;
    VS_CHECK(vs_history_open(data, &logger, &second, why, sizeof why) == VS_ESTORE);
    VS_CHECK(second == NULL && strstr(why, "in use by another broker"));
    vs_history_destroy(&history);
    vs_history_destroy(&history);

    VS_REQUIRE(vs_history_open(data, &logger, &history, why, sizeof why) == VS_OK);
    VS_CHECK(vs_history_stream_count(history) == 1);
    VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), 6, 6, "def", 3, &receipt) ==
             VS_OK);
    VS_CHECK(receipt.duplicate && receipt.seq == 2);
    vs_history_destroy(&history);

    /* the data folder cannot be a file                                                        */
    char file[1200];
    snprintf(file, sizeof file, "%s/history.db", data);

    /* another program's database is refused and left as it was                                */
    char foreign[1200];
    snprintf(foreign, sizeof foreign, "%s/foreign", vs_test_dir("history_foreign"));
    zsys_dir_create("%s", foreign);
    char foreign_db[1300];
    snprintf(foreign_db, sizeof foreign_db, "%s/history.db", foreign);
    sqlite3 *db = NULL;
    VS_REQUIRE(sqlite3_open(foreign_db, &db) == SQLITE_OK);
    VS_CHECK(sqlite3_exec(db, "CREATE TABLE streams (x)", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    VS_CHECK(vs_history_open(foreign, &logger, &history, why, sizeof why) == VS_ESTORE);
    VS_CHECK(history == NULL && strstr(why, "another program's tables"));
    VS_REQUIRE(sqlite3_open(foreign_db, &db) == SQLITE_OK);
    sqlite3_stmt *statement = NULL;
    VS_CHECK(sqlite3_prepare_v2(db,
                                "SELECT (SELECT count(*) FROM sqlite_master) * 10 + "
                                "(SELECT user_version FROM pragma_user_version), "
                                "(SELECT journal_mode FROM pragma_journal_mode)",
                                -1, &statement, NULL) == SQLITE_OK &&
             sqlite3_step(statement) == SQLITE_ROW && sqlite3_column_int(statement, 0) == 10 &&
             strcmp((const char *) sqlite3_column_text(statement, 1), "delete") == 0);
    sqlite3_finalize(statement);
    sqlite3_close(db);
    VS_CHECK(vs_history_open(file, &logger, &history, why, sizeof why) != VS_OK);
    VS_CHECK(history == NULL && strstr(why, "cannot create data folder"));
}

static long s_file_size(const char *path)
{
    struct stat info;
    return stat(path, &info) == 0 ? (long) info.st_size : -1;
}

/*  Copies a file byte for byte; returns false on any failure.                                 */
static bool s_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = in ? fopen(to, "wb") : NULL;
    bool copied = in && out;
    char buffer[65536];
    size_t size;
    while (copied && (size = fread(buffer, 1, sizeof buffer, in)) > 0) {
        copied = fwrite(buffer, 1, size, out) == size;
    }
    if (in) {
        fclose(in);
    }
    if (out && fclose(out) != 0) {
        copied = false;
    }
    return copied;
}

/*  Copies history.db and its WAL as they stand (a crash: no close, no checkpoint) into
    base/name, opens the copy and checks that it holds head sets with the last one intact.    */
static void s_check_crash_copy(const char *base, const char *name, const char *data, uint64_t head)
{
    char crashed[1100];
    snprintf(crashed, sizeof crashed, "%s/%s", base, name);
    VS_REQUIRE(mkdir(crashed, 0700) == 0);
    char from[1200];
    char to[1200];
    snprintf(from, sizeof from, "%s/history.db", data);
    snprintf(to, sizeof to, "%s/history.db", crashed);
    VS_REQUIRE(s_copy_file(from, to));
    snprintf(from, sizeof from, "%s/history.db-wal", data);
    snprintf(to, sizeof to, "%s/history.db-wal", crashed);
    VS_REQUIRE(s_copy_file(from, to));
    vs_logger_t logger = {s_log, NULL};
    vs_history_t *recovered = NULL;
    char why[256];
    VS_REQUIRE(vs_history_open(crashed, &logger, &recovered, why, sizeof why) == VS_OK);
    vs_history_chunk_t chunk;
    VS_CHECK(vs_history_fetch(recovered, s_bytes("s"), head - 1, 0, &chunk) == VS_OK);
    VS_CHECK(chunk.head == head && chunk.entry_count == 1 && chunk.entries[0].seq == head);
    vs_history_destroy(&recovered);
}

/*  No COMMIT checkpoints (that would delay the ACK): the WAL grows until vs_history_checkpoint,
    which copies it into history.db; the next commits then reuse the log from its start.       */
static void test_history_checkpoint(void)
{
    char base[1024];
    snprintf(base, sizeof base, "%s", vs_test_dir("checkpoint"));
    char data[1100];
    snprintf(data, sizeof data, "%s/data", base);
    char wal[1200];
    snprintf(wal, sizeof wal, "%s/history.db-wal", data);
    vs_logger_t logger = {s_log, NULL};
    vs_history_t *history = NULL;
    char why[256];
    VS_REQUIRE(vs_history_open(data, &logger, &history, why, sizeof why) == VS_OK);
    /* the log is given its working size at open: commits overwrite, never append           */
    long reserved = s_file_size(wal);
    VS_CHECK(reserved > 1000 * 4096);
    static char payload[16 * 1024];
    vs_history_receipt_t receipt;
    uint64_t version = 0;
    for (int index = 0; index < 10; index++) {
        version++;
        VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), version, version, "x", 1,
                                   &receipt) == VS_OK);
        VS_CHECK(vs_history_commit(history) == VS_OK);
    }
    VS_CHECK(s_file_size(wal) == reserved);
    /* a crash now, frames followed by the reserved zeros: every committed set is recovered   */
    s_check_crash_copy(base, "crashed-early", data, 10);
    /* sets 11 to 300 of 16 KiB, one commit each: past the reserve and SQLite's automatic
       checkpoint threshold                                                                   */
    for (int index = 10; index < 300; index++) {
        memset(payload, 'a' + index % 26, sizeof payload);
        version++;
        VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), version, version, payload,
                                   sizeof payload, &receipt) == VS_OK);
        VS_CHECK(receipt.seq == version);
        /* nothing to checkpoint inside a batch                                               */
        VS_CHECK(vs_history_checkpoint(history) == VS_OK);
        VS_CHECK(vs_history_commit(history) == VS_OK);
    }
    long grown = s_file_size(wal);
    VS_CHECK(grown > reserved);
    VS_CHECK(vs_history_checkpoint(history) == VS_OK);
    for (int index = 0; index < 100; index++) {
        version++;
        VS_CHECK(vs_history_append(history, s_bytes("s"), s_bytes("p"), version, version, payload,
                                   sizeof payload, &receipt) == VS_OK);
        VS_CHECK(vs_history_commit(history) == VS_OK);
        VS_CHECK(vs_history_checkpoint(history) == VS_OK);
    }
    /* the log started over after the checkpoint instead of growing                           */
    VS_CHECK(s_file_size(wal) == grown);
    /* a crash now, with the log restarted over stale frames: nothing committed is lost      */
    s_check_crash_copy(base, "crashed-late", data, 400);
    vs_history_destroy(&history);
    /* every set is there after a restart, in order and unchanged                             */
    VS_REQUIRE(vs_history_open(data, &logger, &history, why, sizeof why) == VS_OK);
    vs_history_chunk_t chunk;
    VS_CHECK(vs_history_fetch(history, s_bytes("s"), 299, 1, &chunk) == VS_OK);
    VS_CHECK(chunk.head == 400 && chunk.entry_count == 1 && chunk.entries[0].seq == 300 &&
             chunk.entries[0].changeset.size == sizeof payload &&
             ((const char *) chunk.entries[0].changeset.data)[0] == 'a' + 299 % 26);
    vs_history_destroy(&history);
}

static void test_roles(void)
{
    VS_CHECK(vs_zap_roles(NULL) == 0);
    VS_CHECK(vs_zap_roles("") == 0);
    VS_CHECK(vs_zap_roles("publisher") == VS_ROLE_PUBLISHER);
    VS_CHECK(vs_zap_roles("subscriber") == VS_ROLE_SUBSCRIBER);
    VS_CHECK(vs_zap_roles("publisher,subscriber") == (VS_ROLE_PUBLISHER | VS_ROLE_SUBSCRIBER));
    VS_CHECK(vs_zap_roles("admin") == 0);
}

/*  Not a test: throughput and latency figures, run only with VS_BROKER_BENCH set.            */
static void test_bench(void)
{
    s_env_t env;
    VS_REQUIRE(s_env_new(&env, "bench", 1000));
    zsock_t *client = s_client(&env, env.publisher);
    enum { SETS = 100, ROWS = 10000, WINDOW = 4 };
    uint8_t *sets[SETS];
    size_t sizes[SETS];
    for (int index = 0; index < SETS; index++) {
        sets[index] =
            s_changeset((uint64_t) index + 1, (uint64_t) index + 1, ROWS, 80, &sizes[index]);
        VS_REQUIRE(sets[index]);
    }
    int64_t started = zclock_usecs();
    int sent = 0;
    int acked = 0;
    while (acked < SETS) {
        while (sent < SETS && sent - acked < WINDOW) {
            VS_REQUIRE(
                s_send_publish(client, (uint64_t) sent + 1, "bench", "p", sets[sent], sizes[sent]));
            sent++;
        }
        vs_msg_t ack;
        zframe_t *frame = s_recv(client, S_REPLY_MS, &ack);
        VS_REQUIRE(frame);
        VS_CHECK(ack.command == VS_CMD_ACK);
        acked++;
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
    }
    double seconds = (double) (zclock_usecs() - started) / 1e6;
    fprintf(stderr, "  %d sets of %zu bytes (%d rows): %.0f rows/s, %.1f MB/s\n", SETS, sizes[0],
            ROWS, SETS * (double) ROWS / seconds, SETS * (double) sizes[0] / seconds / 1e6);
    for (int index = 0; index < SETS; index++) {
        free(sets[index]);
    }
    /* single-row round trips                                                                  */
    enum { SMALL = 300 };
    int64_t total = 0;
    int64_t worst = 0;
    for (int index = 0; index < SMALL; index++) {
        size_t size = 0;
        uint8_t *set =
            s_changeset(SETS + (uint64_t) index + 1, SETS + (uint64_t) index + 1, 1, 40, &size);
        int64_t before = zclock_usecs();
        vs_msg_t ack;
        zframe_t *frame = s_publish(client, 5000 + (uint64_t) index, "bench", "p", set, size, &ack);
        int64_t elapsed = zclock_usecs() - before;
        total += elapsed;
        worst = elapsed > worst ? elapsed : worst;
        VS_REQUIRE(frame);
        vs_msg_clear(&ack);
        zframe_destroy(&frame);
        free(set);
    }
    fprintf(stderr, "  single-row PUBLISH->ACK: mean %.0f us, worst %lld us\n",
            (double) total / SMALL, (long long) worst);
    zsock_destroy(&client);
    s_env_destroy(&env);
}

int main(void)
{
    zsys_init();
    zsys_set_linger(0);
    vs_test_run("roles", test_roles);
    vs_test_run("history_unit", test_history_unit);
    vs_test_run("history_checkpoint", test_history_checkpoint);
    vs_test_run("publish_ack_dedupe_restart", test_publish_ack_dedupe_restart);
    vs_test_run("new_publisher_gap", test_new_publisher_gap);
    vs_test_run("unread_bound", test_unread_bound);
    vs_test_run("fetch_chunks_and_status", test_fetch_chunks_and_status);
    vs_test_run("authorisation", test_authorisation);
    vs_test_run("live", test_live);
    vs_test_run("bad_input", test_bad_input);
    vs_test_run("pipeline", test_pipeline);
    vs_test_run("large_sets", test_large_sets);
    vs_test_run("store_failure", test_store_failure);
    vs_test_run("start_errors", test_start_errors);
    if (getenv("VS_BROKER_BENCH")) {
        vs_test_run("bench", test_bench);
    }
    vs_changeset_writer_destroy(&s_writer);
    return vs_test_summary();
}
