/*  cmd_broker.c - versync broker: parses argv, installs logging, runs the broker actor
    until SIGINT or SIGTERM.                                                                   */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "vs_broker.h"

static const char s_help[] =
    "usage: versync broker --data DIR --cert SECRET --publishers DIR --subscribers DIR\n"
    "                      [--bind EP] [--live EP]\n"
    "\n"
    "Runs the broker: authorises clients by key, gives each stream's change sets gap-free\n"
    "sequence numbers and a hash chain, stores them in DIR/history.db before acknowledging,\n"
    "serves catch-up requests and fans change sets out live.\n"
    "\n"
    "  --data DIR          where the history lives (created if missing)\n"
    "  --cert SECRET       the broker's secret certificate (from versync keygen)\n"
    "  --publishers DIR    folder of public certificates allowed to publish\n"
    "  --subscribers DIR   folder of public certificates allowed to subscribe\n"
    "  --bind EP           request endpoint (ROUTER), default " VS_DEFAULT_REQUEST_ENDPOINT "\n"
    "  --live EP           live endpoint (PUB), default the --bind host with port + 1\n"
    "\n"
    "Stops cleanly on SIGINT or SIGTERM. Log lines go to stderr (VERSYNC_LOG=debug for more).\n";

static bool s_directory(const char *option, const char *path)
{
    struct stat info;
    if (stat(path, &info) != 0 || !S_ISDIR(info.st_mode)) {
        vs_cli_error("broker", "cannot read %s '%s': not a directory", option, path);
        return false;
    }
    return true;
}

int vs_cmd_broker(int argc, char **argv)
{
    vs_cli_keep_freed_memory();
    static const struct option options[] = {
        {"data", required_argument, NULL, 'd'},       {"cert", required_argument, NULL, 'c'},
        {"publishers", required_argument, NULL, 'p'}, {"subscribers", required_argument, NULL, 's'},
        {"bind", required_argument, NULL, 'b'},       {"live", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *cert_path = NULL, *publishers = NULL, *subscribers = NULL;
    const char *bind = VS_DEFAULT_REQUEST_ENDPOINT, *live = NULL;
    opterr = 0;
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (option) {
        case 'd': data = optarg; break;
        case 'c': cert_path = optarg; break;
        case 'p': publishers = optarg; break;
        case 's': subscribers = optarg; break;
        case 'b': bind = optarg; break;
        case 'l': live = optarg; break;
        case 'h': fputs(s_help, stdout); return VS_CLI_EXIT_OK;
        default:
            vs_cli_error("broker", "unknown or incomplete option '%s' (see --help)",
                         argv[optind - 1]);
            return VS_CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        vs_cli_error("broker", "unexpected argument '%s' (see --help)", argv[optind]);
        return VS_CLI_EXIT_USAGE;
    }
    if (!data || !cert_path || !publishers || !subscribers) {
        vs_cli_error("broker", "--data, --cert, --publishers and --subscribers are required "
                               "(see --help)");
        return VS_CLI_EXIT_USAGE;
    }
    if (!vs_cli_endpoint_valid(bind) || (live && !vs_cli_endpoint_valid(live))) {
        vs_cli_error("broker", "invalid endpoint '%s' (expected tcp://HOST:PORT)",
                     vs_cli_endpoint_valid(bind) ? live : bind);
        return VS_CLI_EXIT_USAGE;
    }
    if (!s_directory("--publishers", publishers) || !s_directory("--subscribers", subscribers)) {
        return VS_CLI_EXIT_RUNTIME;
    }
    char *live_default = live ? NULL : vs_cli_default_live_endpoint("broker", bind);
    if (!live && !live_default) {
        return VS_CLI_EXIT_USAGE;
    }
    zcert_t *cert = vs_cli_load_secret_cert("broker", "--cert", cert_path);
    if (!cert) {
        free(live_default);
        return VS_CLI_EXIT_RUNTIME;
    }
    vs_broker_config_t config = {
        .data_dir = data,
        .cert = cert,
        .publishers_dir = publishers,
        .subscribers_dir = subscribers,
        .request_endpoint = bind,
        .live_endpoint = live ? live : live_default,
        .logger = vs_cli_logger(),
    };
    zactor_t *broker = vs_cli_start_actor("broker", vs_broker_actor, &config);
    vs_cli_cert_destroy(&cert);
    if (!broker) {
        free(live_default);
        return VS_CLI_EXIT_RUNTIME;
    }
    zsys_info("broker: serving requests on %s and live on %s", bind, config.live_endpoint);
    int exit_code = vs_cli_run_until_signal("broker", &broker);
    zsys_info("broker: stopped");
    free(live_default);
    return exit_code;
}
