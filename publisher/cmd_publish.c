/*  cmd_publish.c - versync publish: parses argv, installs logging, runs the publisher actor
    until SIGINT or SIGTERM.                                                                   */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "vs_publisher.h"

static const char s_help[] =
    "usage: versync publish --db FILE --broker EP --broker-key PUBLIC --cert SECRET\n"
    "                       [--live EP] [--stream NAME] [--table NAME]...\n"
    "\n"
    "Attaches to an existing master SQLite database that other programs keep writing to,\n"
    "captures every INSERT, UPDATE and DELETE of its tables with triggers (rows that exist\n"
    "already are replicated too), and publishes whole transactions to the broker. Log rows\n"
    "are deleted only after the broker's acknowledgement; a restart resends the rest.\n"
    "\n"
    "  --db FILE           the master database (must exist; switched to WAL mode)\n"
    "  --broker EP         the broker's request endpoint, e.g. " VS_DEFAULT_REQUEST_ENDPOINT "\n"
    "  --broker-key PUBLIC the broker's public certificate (or its 40-character Z85 key)\n"
    "  --cert SECRET       this publisher's secret certificate (from versync keygen)\n"
    "  --live EP           accepted for symmetry with subscribe; a publisher does not use it\n"
    "  --stream NAME       stream name, default the database file name without extension\n"
    "  --table NAME        replicate only this table (repeatable); default all tables with\n"
    "                      a primary key (tables without one are reported and skipped)\n"
    "\n"
    "Stops cleanly on SIGINT or SIGTERM. Log lines go to stderr (VERSYNC_LOG=debug for more).\n";

int vs_cmd_publish(int argc, char **argv)
{
    static const struct option options[] = {
        {"db", required_argument, NULL, 'd'},     {"broker", required_argument, NULL, 'b'},
        {"broker-key", required_argument, NULL, 'k'}, {"cert", required_argument, NULL, 'c'},
        {"live", required_argument, NULL, 'l'},   {"stream", required_argument, NULL, 's'},
        {"table", required_argument, NULL, 't'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL, *broker = NULL, *key_path = NULL, *cert_path = NULL;
    const char *live = NULL, *stream = NULL;
    const char **tables = calloc((size_t) argc + 1, sizeof *tables);
    size_t table_count = 0;
    int exit_code = VS_CLI_EXIT_USAGE;
    char *broker_key = NULL;
    zcert_t *cert = NULL;
    if (!tables) {
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
        case 's': stream = optarg; break;
        case 't': tables[table_count++] = optarg; break;
        case 'h': fputs(s_help, stdout); exit_code = VS_CLI_EXIT_OK; goto cleanup;
        default:
            vs_cli_error("publish", "unknown or incomplete option '%s' (see --help)",
                         argv[optind - 1]);
            goto cleanup;
        }
    }
    if (optind < argc) {
        vs_cli_error("publish", "unexpected argument '%s' (see --help)", argv[optind]);
        goto cleanup;
    }
    if (!db || !broker || !key_path || !cert_path) {
        vs_cli_error("publish", "--db, --broker, --broker-key and --cert are required "
                                "(see --help)");
        goto cleanup;
    }
    if (!vs_cli_endpoint_valid(broker) || (live && !vs_cli_endpoint_valid(live))) {
        vs_cli_error("publish", "invalid endpoint '%s' (expected tcp://HOST:PORT)",
                     vs_cli_endpoint_valid(broker) ? live : broker);
        goto cleanup;
    }
    if (stream && !vs_stream_name_valid(stream, strlen(stream))) {
        vs_cli_error("publish", "invalid stream name '%s' (1 to %d characters of A-Z a-z 0-9 . _ -)",
                     stream, VS_MAX_STREAM_NAME);
        goto cleanup;
    }
    exit_code = VS_CLI_EXIT_RUNTIME;
    broker_key = vs_cli_load_public_key("publish", "--broker-key", key_path);
    cert = broker_key ? vs_cli_load_secret_cert("publish", "--cert", cert_path) : NULL;
    if (!cert) {
        goto cleanup;
    }
    vs_publisher_config_t config = {
        .db_path = db,
        .broker_endpoint = broker,
        .broker_public_key = broker_key,
        .cert = cert,
        .stream = stream,
        .tables = tables,
        .table_count = table_count,
        .logger = vs_cli_logger(),
    };
    zactor_t *publisher = vs_cli_start_actor("publish", vs_publisher_actor, &config);
    vs_cli_cert_destroy(&cert);
    if (!publisher) {
        goto cleanup;
    }
    exit_code = vs_cli_run_until_signal("publish", &publisher);
cleanup:
    vs_cli_cert_destroy(&cert);
    free(broker_key);
    free(tables);
    return exit_code;
}
