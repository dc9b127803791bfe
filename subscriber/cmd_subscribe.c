/*  cmd_subscribe.c - versync subscribe: parses argv, installs logging, runs the subscriber
    actor until SIGINT or SIGTERM.                                                             */
#include <malloc.h>
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

/*  One malloc arena for the whole process, set before any thread starts. The slave's 64 MiB
    page cache grows in the actor thread, and glibc grows a thread's own arena by one
    mprotect per page (15,000 calls in a 1M-row replay, each a TLB flush on the other core);
    the main arena grows by brk, 128 KiB at a time. Replays of one 1M-row history (W3), with
    and without, side by side: 1.11-1.42x pair by pair (bench/README.md). Not for the broker
    or the publisher, whose I/O threads allocate as much as their actors: in W1 they used
    more CPU with it.                                                                        */
static void s_one_arena(void)
{
#ifdef M_ARENA_MAX
    mallopt(M_ARENA_MAX, 1);
#endif
}

int vs_cmd_subscribe(int argc, char **argv)
{
    s_one_arena();
    vs_cli_agent_options_t options;
    char *live_default = NULL;
    int exit_code = vs_cli_agent_parse("subscribe", s_help, argc, argv, &options);
    if (exit_code >= 0) {
        goto cleanup;
    }
    exit_code = VS_CLI_EXIT_USAGE;
    if (options.stream_count == 0) {
        vs_cli_error("subscribe", "at least one --stream is required (see --help)");
        goto cleanup;
    }
    if (!options.live &&
        !(live_default = vs_cli_default_live_endpoint("subscribe", options.broker))) {
        goto cleanup;
    }
    exit_code = VS_CLI_EXIT_RUNTIME;
    if (!vs_cli_agent_load_keys("subscribe", &options)) {
        goto cleanup;
    }
    vs_subscriber_config_t config = {
        .db_path = options.db,
        .broker_endpoint = options.broker,
        .live_endpoint = options.live ? options.live : live_default,
        .broker_public_key = options.broker_key,
        .cert = options.cert,
        .streams = options.streams,
        .stream_count = options.stream_count,
        .tables = options.tables,
        .table_count = options.table_count,
        .logger = vs_cli_logger(),
    };
    zactor_t *subscriber = vs_cli_start_actor("subscribe", vs_subscriber_actor, &config);
    vs_cli_cert_destroy(&options.cert);
    if (subscriber) {
        exit_code = vs_cli_run_until_signal("subscribe", &subscriber);
    }
cleanup:
    vs_cli_agent_free(&options);
    free(live_default);
    return exit_code;
}
