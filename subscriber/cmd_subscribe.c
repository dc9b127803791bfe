/*  cmd_subscribe.c - versync subscribe: parses argv, installs logging, runs the subscriber
    actor until SIGINT or SIGTERM.                                                             */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vs_subscriber.h"

static const char s_help[] =
    "usage: versync subscribe --db FILE --broker EP --broker-key PUBLIC --cert SECRET\n"
    "                         [--live EP] --stream NAME... [--table NAME]...\n"
    "\n"
    "Applies one or more streams to a slave SQLite database: catches up from its stored\n"
    "position over the request endpoint (a new slave replays the whole history), then\n"
    "follows live. Every batch is one SQLite transaction that also stores the position, so\n"
    "nothing is lost or applied twice, whenever the process is stopped or killed.\n"
    "\n"
    "  --db FILE           the slave database (created if missing)\n"
    "  --broker EP         the broker's request endpoint, e.g. " VS_DEFAULT_REQUEST_ENDPOINT "\n"
    "  --broker-key PUBLIC the broker's public certificate (or its 40-character Z85 key)\n"
    "  --cert SECRET       this subscriber's secret certificate (from versync keygen)\n"
    "  --live EP           the broker's live endpoint, default --broker's port + 1\n"
    "  --stream NAME       a stream to follow (repeatable, at least one)\n"
    "  --table NAME        apply only this table (repeatable); default all\n"
    "\n"
    "Stops cleanly on SIGINT or SIGTERM; exits 1 when it must not go on (a broken hash\n"
    "chain, a primary key that differs from the master's, a failing database).\n";

int vs_cmd_subscribe(int argc, char **argv)
{
    static const struct option options[] = {
        {"db", required_argument, NULL, 'd'},     {"broker", required_argument, NULL, 'b'},
        {"broker-key", required_argument, NULL, 'k'}, {"cert", required_argument, NULL, 'c'},
        {"live", required_argument, NULL, 'l'},   {"stream", required_argument, NULL, 's'},
        {"table", required_argument, NULL, 't'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL, *broker = NULL, *key_path = NULL, *cert_path = NULL;
    const char *live = NULL;
    const char **tables = calloc((size_t) argc + 1, sizeof *tables);
    const char **streams = calloc((size_t) argc + 1, sizeof *streams);
    size_t table_count = 0, stream_count = 0;
    int exit_code = VS_CLI_EXIT_USAGE;
    char *broker_key = NULL;
    char *live_default = NULL;
    zcert_t *cert = NULL;
    if (!tables || !streams) {
        free(tables);
        free(streams);
        return VS_CLI_EXIT_RUNTIME;
    }
    opterr = 0;
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (option) {
        case 'd': db = optarg; break;
        case 'b': broker = optarg; break;
        case 'k': key_path = optarg; break;
        case 'c': cert_path = optarg; break;
        case 'l': live = optarg; break;
        case 's': streams[stream_count++] = optarg; break;
        case 't': tables[table_count++] = optarg; break;
        case 'h': fputs(s_help, stdout); exit_code = VS_CLI_EXIT_OK; goto cleanup;
        default:
            vs_cli_error("subscribe", "unknown or incomplete option '%s' (see --help)",
                         argv[optind - 1]);
            goto cleanup;
        }
    }
    if (optind < argc) {
        vs_cli_error("subscribe", "unexpected argument '%s' (see --help)", argv[optind]);
        goto cleanup;
    }
    if (!db || !broker || !key_path || !cert_path || stream_count == 0) {
        vs_cli_error("subscribe", "--db, --broker, --broker-key, --cert and at least one "
                                  "--stream are required (see --help)");
        goto cleanup;
    }
    if (!vs_cli_endpoint_valid(broker) || (live && !vs_cli_endpoint_valid(live))) {
        vs_cli_error("subscribe", "invalid endpoint '%s' (expected tcp://HOST:PORT)",
                     vs_cli_endpoint_valid(broker) ? live : broker);
        goto cleanup;
    }
    for (size_t index = 0; index < stream_count; index++) {
        if (!vs_stream_name_valid(streams[index], strlen(streams[index]))) {
            vs_cli_error("subscribe",
                         "invalid stream name '%s' (1 to %d characters of A-Z a-z 0-9 . _ -)",
                         streams[index], VS_MAX_STREAM_NAME);
            goto cleanup;
        }
    }
    if (!live && !(live_default = vs_cli_default_live_endpoint("subscribe", broker))) {
        goto cleanup;
    }
    exit_code = VS_CLI_EXIT_RUNTIME;
    broker_key = vs_cli_load_public_key("subscribe", "--broker-key", key_path);
    cert = broker_key ? vs_cli_load_secret_cert("subscribe", "--cert", cert_path) : NULL;
    if (!cert) {
        goto cleanup;
    }
    vs_subscriber_config_t config = {
        .db_path = db,
        .broker_endpoint = broker,
        .live_endpoint = live ? live : live_default,
        .broker_public_key = broker_key,
        .cert = cert,
        .streams = streams,
        .stream_count = stream_count,
        .tables = tables,
        .table_count = table_count,
        .logger = vs_cli_logger(),
    };
    zactor_t *subscriber = vs_cli_start_actor("subscribe", vs_subscriber_actor, &config);
    vs_cli_cert_destroy(&cert);
    if (!subscriber) {
        goto cleanup;
    }
    exit_code = vs_cli_run_until_signal("subscribe", &subscriber);
cleanup:
    vs_cli_cert_destroy(&cert);
    free(broker_key);
    free(live_default);
    free(tables);
    free(streams);
    return exit_code;
}
