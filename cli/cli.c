/*  cli.c - helpers shared by the versync subcommands: errors, logging, keys, endpoints and
    the agent actor lifecycle.                                                                */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*  glibc gives a thread's heap back to the kernel as soon as more than twice its largest freed
    mapping lies free at the top (madvise, one TLB flush on the other core each time) and takes
    it back page by page (a page fault each). Change sets are allocated and freed all the
    time, so in W5 the publisher made 75 such madvise calls and 2,449 page faults, in W1 52 and
    10,491, the broker 26 and 7,121 (`perf stat`); a profile of the publisher in W5 put 8% of
    its samples in madvise and 7% in page faults. With these two settings: no madvise, and
    782 and 1,030 page faults in W1. Fixed thresholds also stop glibc from moving them.     */
void vs_cli_keep_freed_memory(void)
{
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

void vs_cli_error(const char *command, const char *format, ...)
{
    char message[1024];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    fprintf(stderr, "versync %s: %s\n", command, message);
}

static vs_log_level_t s_threshold(void)
{
    const char *setting = getenv("VERSYNC_LOG");
    if (!setting) {
        return VS_LOG_INFO;
    }
    static const char *names[] = {"error", "warning", "notice", "info", "debug"};
    for (int level = 0; level < 5; level++) {
        if (strcmp(setting, names[level]) == 0) {
            return (vs_log_level_t) level;
        }
    }
    return VS_LOG_INFO;
}

static void s_log_sink(void *arg, vs_log_level_t level, const char *line)
{
    vs_log_level_t threshold = (vs_log_level_t) (intptr_t) arg;
    if (level > threshold) {
        return;
    }
    switch (level) {
    case VS_LOG_ERROR:
        zsys_error("%s", line);
        break;
    case VS_LOG_WARNING:
        zsys_warning("%s", line);
        break;
    case VS_LOG_NOTICE:
        zsys_notice("%s", line);
        break;
    case VS_LOG_INFO:
        zsys_info("%s", line);
        break;
    default:
        zsys_debug("%s", line);
        break;
    }
}

vs_logger_t vs_cli_logger(void)
{
    vs_logger_t logger = {s_log_sink, (void *) (intptr_t) s_threshold()};
    return logger;
}

static bool s_key_is_zero(const byte *key)
{
    for (int index = 0; index < 32; index++) {
        if (key[index] != 0) {
            return false;
        }
    }
    return true;
}

static bool s_readable_file(const char *command, const char *option, const char *path)
{
    struct stat info;
    if (stat(path, &info) != 0) {
        vs_cli_error(command, "cannot read %s '%s': %s", option, path, strerror(errno));
        return false;
    }
    if (!S_ISREG(info.st_mode)) {
        vs_cli_error(command, "cannot read %s '%s': not a regular file", option, path);
        return false;
    }
    if (access(path, R_OK) != 0) {
        vs_cli_error(command, "cannot read %s '%s': %s", option, path, strerror(errno));
        return false;
    }
    return true;
}

zcert_t *vs_cli_load_secret_cert(const char *command, const char *option, const char *path)
{
    if (!s_readable_file(command, option, path)) {
        return NULL;
    }
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        vs_cli_error(command, "cannot read %s '%s': not a czmq certificate", option, path);
        return NULL;
    }
    if (s_key_is_zero(zcert_secret_key(cert))) {
        vs_cli_error(command,
                     "cannot use %s '%s': it holds no secret key (pass the _secret file "
                     "written by 'versync keygen')",
                     option, path);
        vs_cli_cert_destroy(&cert);
        return NULL;
    }
    return cert;
}

void vs_cli_cert_destroy(zcert_t **cert_p)
{
    if (*cert_p) {
        sodium_memzero((void *) (uintptr_t) zcert_secret_key(*cert_p), 32);
        sodium_memzero((void *) (uintptr_t) zcert_secret_txt(*cert_p), 40);
        zcert_destroy(cert_p);
    }
}

char *vs_cli_load_public_key(const char *command, const char *option, const char *path)
{
    struct stat info;
    if (strlen(path) == 40 && stat(path, &info) != 0) {
        byte decoded[32];
        if (zmq_z85_decode(decoded, path)) {
            return strdup(path);
        }
    }
    if (!s_readable_file(command, option, path)) {
        return NULL;
    }
    zcert_t *cert = zcert_load(path);
    if (!cert || s_key_is_zero(zcert_public_key(cert))) {
        vs_cli_error(command, "cannot read %s '%s': not a czmq certificate", option, path);
        zcert_destroy(&cert);
        return NULL;
    }
    char *key = strdup(zcert_public_txt(cert));
    zcert_destroy(&cert);
    return key;
}

bool vs_cli_endpoint_valid(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6) == 0) {
        const char *colon = strrchr(endpoint + 6, ':');
        if (!colon || colon == endpoint + 6 || colon[1] == '\0') {
            return false;
        }
        if (strcmp(colon + 1, "*") == 0) {
            return true;
        }
        char *end = NULL;
        long port = strtol(colon + 1, &end, 10);
        return *end == '\0' && port >= 0 && port <= 65535;
    }
    return (strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6])
        || (strncmp(endpoint, "inproc://", 9) == 0 && endpoint[9]);
}

char *vs_cli_default_live_endpoint(const char *command, const char *request_endpoint)
{
    const char *colon = strrchr(request_endpoint, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (strncmp(request_endpoint, "tcp://", 6) != 0 || !colon || !end || *end != '\0'
        || port <= 0 || port >= 65535) {
        vs_cli_error(command,
                     "cannot derive the live endpoint from '%s': give --live (the default "
                     "is the request endpoint's port + 1)",
                     request_endpoint);
        return NULL;
    }
    size_t host_length = (size_t) (colon - request_endpoint);
    char *live = malloc(host_length + 8);
    if (!live) {
        return NULL;
    }
    snprintf(live, host_length + 8, "%.*s:%ld", (int) host_length, request_endpoint, port + 1);
    return live;
}

zactor_t *vs_cli_start_actor(const char *command, zactor_fn *actor_fn, void *args)
{
    zactor_t *actor = zactor_new(actor_fn, args);
    if (!actor) {
        vs_cli_error(command, "cannot start: out of memory or threads");
        return NULL;
    }
    zmsg_t *answer = zmsg_recv(actor);
    char *status = answer ? zmsg_popstr(answer) : NULL;
    if (status && streq(status, "OK")) {
        free(status);
        zmsg_destroy(&answer);
        return actor;
    }
    char *reason = answer ? zmsg_popstr(answer) : NULL;
    vs_cli_error(command, "%s", reason ? reason : "cannot start (no reason given)");
    free(reason);
    free(status);
    zmsg_destroy(&answer);
    zactor_destroy(&actor);
    return NULL;
}

int vs_cli_run_until_signal(const char *command, zactor_t **actor_p)
{
    int exit_code = VS_CLI_EXIT_OK;
    zpoller_t *poller = zpoller_new(*actor_p, NULL);
    while (!zsys_interrupted) {
        void *which = zpoller_wait(poller, 200);
        if (which == *actor_p) {
            zmsg_t *event = zmsg_recv(*actor_p);
            char *kind = event ? zmsg_popstr(event) : NULL;
            if (kind && streq(kind, "FATAL")) {
                char *reason = zmsg_popstr(event);
                vs_cli_error(command, "%s", reason ? reason : "stopped (no reason given)");
                free(reason);
                exit_code = VS_CLI_EXIT_RUNTIME;
            }
            free(kind);
            zmsg_destroy(&event);
            if (exit_code != VS_CLI_EXIT_OK) {
                break;
            }
        } else if (zpoller_terminated(poller) && !zsys_interrupted) {
            break;
        }
    }
    zpoller_destroy(&poller);
    zactor_destroy(actor_p);
    return exit_code;
}

bool vs_cli_is_help(const char *argument)
{
    return streq(argument, "-h") || streq(argument, "--help");
}

int vs_cli_agent_parse(const char *command, const char *help, int argc, char **argv,
                       vs_cli_agent_options_t *options)
{
    static const struct option long_options[] = {
        {"db", required_argument, NULL, 'd'},         {"broker", required_argument, NULL, 'b'},
        {"broker-key", required_argument, NULL, 'k'}, {"cert", required_argument, NULL, 'c'},
        {"live", required_argument, NULL, 'l'},       {"stream", required_argument, NULL, 's'},
        {"table", required_argument, NULL, 't'},      {"help", no_argument, NULL, 'h'},
        {"linger", required_argument, NULL, 'g'},
        {NULL, 0, NULL, 0},
    };
    memset(options, 0, sizeof *options);
    options->streams = calloc((size_t) argc + 1, sizeof *options->streams);
    options->tables = calloc((size_t) argc + 1, sizeof *options->tables);
    if (!options->streams || !options->tables) {
        vs_cli_error(command, "out of memory");
        return VS_CLI_EXIT_RUNTIME;
    }
    opterr = 0;
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (option) {
        case 'd': options->db = optarg; break;
        case 'b': options->broker = optarg; break;
        case 'k': options->broker_key_path = optarg; break;
        case 'c': options->cert_path = optarg; break;
        case 'l': options->live = optarg; break;
        case 's': options->streams[options->stream_count++] = optarg; break;
        case 't': options->tables[options->table_count++] = optarg; break;
        case 'g': options->linger = optarg; break;
        case 'h': fputs(help, stdout); return VS_CLI_EXIT_OK;
        default:
            vs_cli_error(command, "unknown or incomplete option '%s' (see --help)",
                         argv[optind - 1]);
            return VS_CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        vs_cli_error(command, "unexpected argument '%s' (see --help)", argv[optind]);
        return VS_CLI_EXIT_USAGE;
    }
    if (options->linger && strcmp(command, "publish") != 0) {
        vs_cli_error(command, "--linger is an option of publish (see --help)");
        return VS_CLI_EXIT_USAGE;
    }
    if (!options->db || !options->broker || !options->broker_key_path || !options->cert_path) {
        vs_cli_error(command, "--db, --broker, --broker-key and --cert are required (see --help)");
        return VS_CLI_EXIT_USAGE;
    }
    const char *endpoints[] = {options->broker, options->live};
    for (size_t index = 0; index < 2; index++) {
        if (endpoints[index] && !vs_cli_endpoint_valid(endpoints[index])) {
            vs_cli_error(command, "invalid endpoint '%s' (expected tcp://HOST:PORT)",
                         endpoints[index]);
            return VS_CLI_EXIT_USAGE;
        }
    }
    for (size_t index = 0; index < options->stream_count; index++) {
        const char *stream = options->streams[index];
        if (!vs_stream_name_valid(stream, strlen(stream))) {
            vs_cli_error(command,
                         "invalid stream name '%s' (1 to %d characters of A-Z a-z 0-9 . _ -)",
                         stream, VS_MAX_STREAM_NAME);
            return VS_CLI_EXIT_USAGE;
        }
    }
    return -1;
}

bool vs_cli_agent_load_keys(const char *command, vs_cli_agent_options_t *options)
{
    options->broker_key = vs_cli_load_public_key(command, "--broker-key", options->broker_key_path);
    if (options->broker_key) {
        options->cert = vs_cli_load_secret_cert(command, "--cert", options->cert_path);
    }
    return options->cert != NULL;
}

void vs_cli_agent_free(vs_cli_agent_options_t *options)
{
    vs_cli_cert_destroy(&options->cert);
    free(options->broker_key);
    free(options->streams);
    free(options->tables);
    options->broker_key = NULL;
    options->streams = options->tables = NULL;
}
