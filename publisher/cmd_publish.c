/*  cmd_publish.c - versync publish: parses argv, installs logging, runs the publisher actor
    until SIGINT or SIGTERM.                                                                   */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vs_publisher.h"

#define S_STRING(x)  S_STRING_(x)
#define S_STRING_(x) #x

static const char s_help[] =
    "usage: versync publish --db FILE --broker EP --broker-key PUBLIC --cert SECRET\n"
    "                       [--live EP] [--stream NAME] [--table NAME]... [--linger MS]\n"
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
    "  --linger MS         under sustained load, let a change set wait up to MS ms after\n"
    "                      the previous one for more commits: fewer, larger sets (default\n"
    "                      " S_STRING(VS_PUBLISHER_LINGER_DEFAULT_MS) ", at most " S_STRING(
        VS_PUBLISHER_LINGER_MAX_MS) "; 0: never wait). A commit that finds the\n"
    "                      publisher idle is sent at once whatever the setting\n"
    "\n"
    "Stops cleanly on SIGINT or SIGTERM. Log lines go to stderr (VERSYNC_LOG=debug for more).\n";

int vs_cmd_publish(int argc, char **argv)
{
    vs_cli_keep_freed_memory();
    vs_cli_agent_options_t options;
    int exit_code = vs_cli_agent_parse("publish", s_help, argc, argv, &options);
    if (exit_code >= 0) {
        goto cleanup;
    }
    exit_code = VS_CLI_EXIT_USAGE;
    if (options.stream_count > 1) {
        vs_cli_error("publish", "one --stream at most: a database publishes one stream");
        goto cleanup;
    }
    int linger_ms = 0; /* the default */
    if (options.linger) {
        char *end = NULL;
        errno = 0;
        long value = strtol(options.linger, &end, 10);
        if (errno || end == options.linger || *end || value < 0 ||
            value > VS_PUBLISHER_LINGER_MAX_MS) {
            vs_cli_error("publish", "--linger must be a number of milliseconds from 0 to %d",
                         VS_PUBLISHER_LINGER_MAX_MS);
            goto cleanup;
        }
        linger_ms = value == 0 ? -1 : (int) value;
    }
    exit_code = VS_CLI_EXIT_RUNTIME;
    if (!vs_cli_agent_load_keys("publish", &options)) {
        goto cleanup;
    }
    vs_publisher_config_t config = {
        .db_path = options.db,
        .broker_endpoint = options.broker,
        .broker_public_key = options.broker_key,
        .cert = options.cert,
        .stream = options.stream_count ? options.streams[0] : NULL,
        .tables = options.tables,
        .table_count = options.table_count,
        .linger_ms = linger_ms,
        .logger = vs_cli_logger(),
    };
    zactor_t *publisher = vs_cli_start_actor("publish", vs_publisher_actor, &config);
    vs_cli_cert_destroy(&options.cert);
    if (publisher) {
        exit_code = vs_cli_run_until_signal("publish", &publisher);
    }
cleanup:
    vs_cli_agent_free(&options);
    return exit_code;
}
