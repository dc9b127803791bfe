/*  main.c - the versync binary: dispatches to a subcommand.                                 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char s_usage[] =
    "versync - keeps SQLite databases in sync through a CURVE-encrypted ZeroMQ broker\n"
    "\n"
    "usage: versync <command> [options]\n"
    "\n"
    "commands:\n"
    "  keygen PATH       make a CURVE key pair: PATH (public) and PATH_secret (secret)\n"
    "  broker            run the broker that sequences and stores change sets\n"
    "  publish           publish the changes of a master SQLite database\n"
    "  subscribe         apply one or more streams to a slave SQLite database\n"
    "  status            show each stream's head sequence and publishers\n"
    "  demo              run everything on this machine with temporary files\n"
    "\n"
    "'versync <command> --help' describes a command's options.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(s_usage, stderr);
        return VS_CLI_EXIT_USAGE;
    }
    const char *command = argv[1];
    if (vs_cli_is_help(command) || streq(command, "help")) {
        fputs(s_usage, stdout);
        return VS_CLI_EXIT_OK;
    }
    if (streq(command, "--version") || streq(command, "version")) {
        printf("versync 0.1.0 (protocol %d)\n", VS_PROTOCOL_VERSION);
        return VS_CLI_EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {
        {"keygen", vs_cmd_keygen},   {"broker", vs_cmd_broker}, {"publish", vs_cmd_publish},
        {"subscribe", vs_cmd_subscribe}, {"status", vs_cmd_status}, {"demo", vs_cmd_demo},
    };
    for (size_t index = 0; index < sizeof commands / sizeof commands[0]; index++) {
        if (streq(command, commands[index].name)) {
            /*  czmq would otherwise print its own banner on SIGINT; we log our own lines.   */
            zsys_set_logident("versync");
            return commands[index].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "versync: unknown command '%s'\n\n%s", command, s_usage);
    return VS_CLI_EXIT_USAGE;
}
