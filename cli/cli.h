/*  cli.h - what every versync subcommand shares: option parsing helpers, key loading,
    endpoint defaults, the log sink, and starting/waiting for an agent actor.

    Errors are printed as one line, "versync <command>: <what> '<object>': <reason>", and the
    commands exit 1 at run time and 2 for usage errors (VS_CLI_EXIT_*).                       */
#ifndef VS_CLI_H_INCLUDED
#define VS_CLI_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "vs_proto.h"

#define VS_CLI_EXIT_OK 0
#define VS_CLI_EXIT_RUNTIME 1
#define VS_CLI_EXIT_USAGE 2

#define VS_DEFAULT_REQUEST_ENDPOINT "tcp://127.0.0.1:5570"

/*  The subcommands; each returns the process exit code.                                       */
int vs_cmd_keygen(int argc, char **argv);
int vs_cmd_broker(int argc, char **argv);
int vs_cmd_publish(int argc, char **argv);
int vs_cmd_subscribe(int argc, char **argv);
int vs_cmd_status(int argc, char **argv);
int vs_cmd_demo(int argc, char **argv);

/*  Keeps up to 64 MiB of freed memory in each malloc heap, and serves allocations under 4 MiB
    from the heaps; call before any thread starts. See cli.c.                                  */
void vs_cli_keep_freed_memory(void);

/*  Prints "versync <command>: <message>" on stderr.                                           */
void vs_cli_error(const char *command, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/*  A logger whose lines go to stderr through czmq's zsys_* with a level. verbose adds DEBUG.
    VERSYNC_LOG=debug|info|notice|warning|error in the environment sets the threshold.       */
vs_logger_t vs_cli_logger(void);

/*  Loads our own key pair from a czmq certificate (the secret file written by keygen).
    Prints an error and returns NULL when it is missing, unreadable or has no secret key.   */
zcert_t *vs_cli_load_secret_cert(const char *command, const char *option, const char *path);

/*  Wipes the key pair's secret key (sodium_memzero) and destroys the certificate.            */
void vs_cli_cert_destroy(zcert_t **cert_p);

/*  Reads a public key: a certificate file (public or secret) or a 40-character Z85 text.
    Returns a heap Z85 string (caller frees), or NULL after printing an error.              */
char *vs_cli_load_public_key(const char *command, const char *option, const char *path);

/*  The live endpoint that goes with a request endpoint: same host, port + 1. Returns a heap
    string (caller frees), or NULL after printing an error when the port cannot be read.   */
char *vs_cli_default_live_endpoint(const char *command, const char *request_endpoint);

/*  True when the endpoint looks like tcp://HOST:PORT, ipc://PATH or inproc://NAME.           */
bool vs_cli_endpoint_valid(const char *endpoint);

/*  Starts an agent actor and reads its first answer. Returns the actor, or NULL after
    printing "versync <command>: <reason>".                                                 */
zactor_t *vs_cli_start_actor(const char *command, zactor_fn *actor_fn, void *args);

/*  Waits until SIGINT/SIGTERM (exit 0) or the actor reports FATAL (exit 1, reason printed),
    then destroys the actor. Returns the exit code.                                        */
int vs_cli_run_until_signal(const char *command, zactor_t **actor_p);

/*  The options that publish and subscribe share, parsed and checked. Strings borrow argv. */
typedef struct {
    const char *db;
    const char *broker;
    const char *broker_key_path;
    const char *cert_path;
    const char *live;        /* NULL when not given                                     */
    const char **streams;    /* every --stream, stream_count of them                    */
    size_t stream_count;
    const char **tables;     /* every --table                                           */
    size_t table_count;
    const char *linger;      /* --linger as given (publish only), NULL when not given   */
    char *broker_key;        /* loaded by vs_cli_agent_load_keys: Z85, owned            */
    zcert_t *cert;           /* loaded by vs_cli_agent_load_keys: owned                 */
} vs_cli_agent_options_t;

/*  Parses --db --broker --broker-key --cert --live --stream... --table... --linger --help
    (--linger is refused by every command but publish), checks the
    required ones, the endpoints and the stream names. Returns -1 when the command should go
    on, else the exit code to return (0 after printing help, 2 after a usage error).      */
int vs_cli_agent_parse(const char *command, const char *help, int argc, char **argv,
                       vs_cli_agent_options_t *options);

/*  Loads the broker's public key and our secret certificate; false after printing why.    */
bool vs_cli_agent_load_keys(const char *command, vs_cli_agent_options_t *options);

/*  Frees what parse and load_keys allocated (wiping the secret key); safe twice.          */
void vs_cli_agent_free(vs_cli_agent_options_t *options);

/*  True when the argument is -h or --help.                                                    */
bool vs_cli_is_help(const char *argument);

#endif
