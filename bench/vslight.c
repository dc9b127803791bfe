/*  vslight.c - light subscribers for the fan-out benchmark (W4): many in one process, each the
    subscriber module's own actor (subscriber/vs_subscriber.h) in verify-only mode, with its
    own CURVE connections to the broker: catch-up, live, gap repair, the hash chain and every
    check a slave makes, but no database; it counts the changes of one table.

      vslight --broker EP --live EP --broker-key FILE --cert FILE --stream NAME --table NAME
              --count N --rows R --ready FILE --result FILE [--timeout S]

    When every one of the N actors has committed a first change set (the bench's warm-up
    row), "ready" is written to the ready file. The actors are asked for their counts (the
    COUNT pipe command) every 1% of the time since the first was ready, at least every 20 ms
    and at most every 500 ms: each question wakes an actor on the cores the broker needs, so
    300 actors are not asked 50 times a second. An actor is done when it has counted R
    UPSERTs of the table, broken when it sent FATAL. When all are done or broken (or the
    timeout passes), the result file gets "key value" lines: light_count, light_complete,
    light_broken, light_last_done_ns (the CLOCK_MONOTONIC time the last one was seen done: up
    to about 1% late).
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <czmq.h>

#include "vs_subscriber.h"

#define POLL_MIN_MS 20
#define POLL_MAX_MS 500

typedef enum { LIGHT_STARTING, LIGHT_READY, LIGHT_DONE, LIGHT_BROKEN } light_state_t;

typedef struct {
    zactor_t *actor;
    light_state_t state;
    bool asked; /* a question is waiting for its answer */
} light_t;

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
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Warnings and errors only: 300 actors saying "caught up" are noise. */
static void quiet_log(void *arg, vs_log_level_t level, const char *line)
{
    (void)arg;
    if (level <= VS_LOG_WARNING) {
        fprintf(stderr, "vslight: %s\n", line);
    }
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

/* Reads one answer of an actor: COUNT, POSITION or FATAL. */
static void answer(light_t *light, const char *stream, int64_t rows, int64_t *last_done_ns)
{
    zmsg_t *message = zmsg_recv(light->actor);
    if (!message) {
        light->asked = false; /* no answer within the pipe's timeout: ask again later */
        return;
    }
    char *command = zmsg_popstr(message);
    if (command && streq(command, "FATAL")) {
        char *reason = zmsg_popstr(message);
        fprintf(stderr, "vslight: a subscriber stopped: %s\n", reason ? reason : "");
        zstr_free(&reason);
        light->state = LIGHT_BROKEN;
    } else if (command && streq(command, "POSITION")) {
        char *name = zmsg_popstr(message);
        char *applied = zmsg_popstr(message);
        char *committed = zmsg_popstr(message);
        if (name && streq(name, stream) && committed && atoll(committed) >= 1
            && light->state == LIGHT_STARTING) {
            light->state = LIGHT_READY;
        }
        zstr_free(&name);
        zstr_free(&applied);
        zstr_free(&committed);
        light->asked = false;
    } else if (command && streq(command, "COUNT")) {
        char *upserts = zmsg_popstr(message);
        if (upserts && atoll(upserts) >= rows && light->state == LIGHT_READY) {
            light->state = LIGHT_DONE;
            *last_done_ns = now_ns();
        }
        zstr_free(&upserts);
        light->asked = false;
    }
    zstr_free(&command);
    zmsg_destroy(&message);
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *live = NULL, *broker_key = NULL, *cert_path = NULL;
    const char *stream = NULL, *table = "items", *ready_path = NULL, *result_path = NULL;
    int count = 1;
    int64_t rows = 0;
    double timeout = 600;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *key = argv[i], *value = argv[i + 1];
        if (strcmp(key, "--broker") == 0) {
            broker = value;
        } else if (strcmp(key, "--live") == 0) {
            live = value;
        } else if (strcmp(key, "--broker-key") == 0) {
            broker_key = value;
        } else if (strcmp(key, "--cert") == 0) {
            cert_path = value;
        } else if (strcmp(key, "--stream") == 0) {
            stream = value;
        } else if (strcmp(key, "--table") == 0) {
            table = value;
        } else if (strcmp(key, "--count") == 0) {
            count = atoi(value);
        } else if (strcmp(key, "--rows") == 0) {
            rows = atoll(value);
        } else if (strcmp(key, "--ready") == 0) {
            ready_path = value;
        } else if (strcmp(key, "--result") == 0) {
            result_path = value;
        } else if (strcmp(key, "--timeout") == 0) {
            timeout = atof(value);
        } else {
            die("unknown option %s", key);
        }
    }
    if (!broker || !live || !broker_key || !cert_path || !stream || !ready_path || !result_path
        || count < 1 || rows < 1) {
        die("usage: vslight --broker EP --live EP --broker-key FILE --cert FILE --stream NAME "
            "--count N --rows R --ready FILE --result FILE [--table NAME] [--timeout S]");
    }
    /* Four sockets an actor (its pipe's two ends, SUB and DEALER), each with descriptors. */
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    zsys_set_max_sockets((size_t)count * 4 + 64);
    zsys_set_io_threads(2);
    zsys_handler_set(NULL);
    zcert_t *server = zcert_load(broker_key);
    zcert_t *cert = zcert_load(cert_path);
    if (!server || !cert) {
        die("cannot load the keys '%s' and '%s'", broker_key, cert_path);
    }
    const char *const streams[] = {stream};
    const char *const tables[] = {table};
    vs_subscriber_config_t config = {
        .verify_only = true,
        .broker_endpoint = broker,
        .live_endpoint = live,
        .broker_public_key = zcert_public_txt(server),
        .cert = cert,
        .streams = streams,
        .stream_count = 1,
        .tables = tables,
        .table_count = 1,
        .logger = {.fn = quiet_log},
    };
    light_t *lights = calloc((size_t)count, sizeof *lights);
    if (!lights) {
        die("out of memory");
    }
    for (int i = 0; i < count; i++) {
        lights[i].actor = zactor_new(vs_subscriber_actor, &config);
        char *status = lights[i].actor ? zstr_recv(lights[i].actor) : NULL;
        if (!status || !streq(status, "OK")) {
            char *reason = lights[i].actor ? zstr_recv(lights[i].actor) : NULL;
            die("subscriber %d did not start: %s", i, reason ? reason : "no answer");
        }
        zstr_free(&status);
        zsock_set_rcvtimeo(zactor_sock(lights[i].actor), 5000);
    }
    int64_t deadline = now_ns() + (int64_t)(timeout * 1e9);
    int64_t last_done_ns = 0;
    int64_t ask_at = 0;
    int64_t ready_at = 0;
    bool announced = false;
    while (now_ns() < deadline) {
        int ready = 0, done = 0, broken = 0;
        for (int i = 0; i < count; i++) {
            ready += lights[i].state != LIGHT_STARTING;
            done += lights[i].state == LIGHT_DONE;
            broken += lights[i].state == LIGHT_BROKEN;
        }
        if (!announced && ready == count) {
            write_file(ready_path, "ready\n");
            announced = true;
            ready_at = now_ns();
        }
        if (done + broken == count) {
            break;
        }
        if (now_ns() >= ask_at) {
            for (int i = 0; i < count; i++) {
                if (lights[i].asked || lights[i].state == LIGHT_DONE
                    || lights[i].state == LIGHT_BROKEN) {
                    continue;
                }
                if (lights[i].state == LIGHT_STARTING) {
                    zstr_sendx(lights[i].actor, "POSITION", stream, NULL);
                } else {
                    zstr_send(lights[i].actor, "COUNT");
                }
                lights[i].asked = true;
            }
            int64_t interval = announced ? (now_ns() - ready_at) / 100 : 0;
            interval = interval < POLL_MIN_MS * 1000000LL ? POLL_MIN_MS * 1000000LL : interval;
            interval = interval > POLL_MAX_MS * 1000000LL ? POLL_MAX_MS * 1000000LL : interval;
            ask_at = now_ns() + interval;
        }
        /* Each asked actor's answer, in turn (a FATAL may come first): no poll over hundreds
           of pipes, which cost more CPU than the questions themselves. */
        for (int i = 0; i < count; i++) {
            while (lights[i].asked && lights[i].state != LIGHT_BROKEN) {
                answer(&lights[i], stream, rows, &last_done_ns);
            }
        }
        int64_t pause = ask_at - now_ns();
        if (pause > 0) {
            struct timespec sleep_for = {pause / 1000000000, pause % 1000000000};
            nanosleep(&sleep_for, NULL);
        }
    }
    int done = 0, broken = 0;
    for (int i = 0; i < count; i++) {
        done += lights[i].state == LIGHT_DONE;
        broken += lights[i].state == LIGHT_BROKEN;
    }
    char text[512];
    snprintf(text, sizeof text,
             "light_count %d\nlight_complete %d\nlight_broken %d\nlight_last_done_ns %" PRId64
             "\n",
             count, done, broken, last_done_ns);
    write_file(result_path, text);
    for (int i = 0; i < count; i++) {
        zactor_destroy(&lights[i].actor);
    }
    free(lights);
    zcert_destroy(&server);
    zcert_destroy(&cert);
    return done == count ? 0 : 1;
}
