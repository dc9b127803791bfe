/*  status.c - versync status: asks the broker for every stream's head and publishers.      */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char s_help[] =
    "usage: versync status --broker EP --broker-key PUBLIC --cert SECRET [--json]\n"
    "\n"
    "Prints, per stream, its name, head sequence, head hash and publishers (id and the last\n"
    "version stored). With --json: one object\n"
    "  {\"streams\": [{\"name\", \"head\", \"hash\", \"publishers\": [{\"id\", \"last_version\"}]}]}\n"
    "The key may be a publisher's or a subscriber's. Waits at most 5 seconds for an answer.\n";

static void s_json_string(vs_bytes_t text)
{
    putchar('"');
    for (size_t index = 0; index < text.size; index++) {
        unsigned char c = (unsigned char) text.data[index];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void s_print_json(const vs_msg_t *reply)
{
    printf("{\"streams\": [");
    for (size_t s = 0; s < reply->stream_count; s++) {
        const vs_stream_info_t *stream = &reply->streams[s];
        char hex[2 * VS_HASH_SIZE + 1];
        vs_hash_hex((const uint8_t *) stream->hash.data, hex);
        printf("%s{\"name\": ", s ? ", " : "");
        s_json_string(stream->name);
        printf(", \"head\": %" PRIu64 ", \"hash\": \"%s\", \"publishers\": [", stream->head, hex);
        for (size_t p = 0; p < stream->publisher_count; p++) {
            printf("%s{\"id\": ", p ? ", " : "");
            s_json_string(stream->publishers[p].id);
            printf(", \"last_version\": %" PRIu64 "}", stream->publishers[p].last_version);
        }
        printf("]}");
    }
    printf("]}\n");
}

static void s_print_table(const vs_msg_t *reply)
{
    if (reply->stream_count == 0) {
        printf("no streams yet\n");
        return;
    }
    printf("%-24s %12s  %-16s  %s\n", "STREAM", "HEAD", "HASH", "PUBLISHERS (id: last version)");
    for (size_t s = 0; s < reply->stream_count; s++) {
        const vs_stream_info_t *stream = &reply->streams[s];
        char hex[2 * VS_HASH_SIZE + 1];
        vs_hash_hex((const uint8_t *) stream->hash.data, hex);
        printf("%-24.*s %12" PRIu64 "  %.16s  ", (int) stream->name.size, stream->name.data,
               stream->head, hex);
        for (size_t p = 0; p < stream->publisher_count; p++) {
            printf("%s%.*s: %" PRIu64, p ? ", " : "", (int) stream->publishers[p].id.size,
                   stream->publishers[p].id.data, stream->publishers[p].last_version);
        }
        printf("\n");
    }
}

int vs_cmd_status(int argc, char **argv)
{
    static const struct option options[] = {
        {"broker", required_argument, NULL, 'b'}, {"broker-key", required_argument, NULL, 'k'},
        {"cert", required_argument, NULL, 'c'},   {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *broker = NULL, *key_path = NULL, *cert_path = NULL;
    bool json = false;
    opterr = 0;
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (option) {
        case 'b': broker = optarg; break;
        case 'k': key_path = optarg; break;
        case 'c': cert_path = optarg; break;
        case 'j': json = true; break;
        case 'h': fputs(s_help, stdout); return VS_CLI_EXIT_OK;
        default:
            vs_cli_error("status", "unknown or incomplete option '%s' (see --help)",
                         argv[optind - 1]);
            return VS_CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        vs_cli_error("status", "unexpected argument '%s' (see --help)", argv[optind]);
        return VS_CLI_EXIT_USAGE;
    }
    if (!broker || !key_path || !cert_path) {
        vs_cli_error("status", "--broker, --broker-key and --cert are required (see --help)");
        return VS_CLI_EXIT_USAGE;
    }
    if (!vs_cli_endpoint_valid(broker)) {
        vs_cli_error("status", "invalid endpoint '%s' (expected tcp://HOST:PORT)", broker);
        return VS_CLI_EXIT_USAGE;
    }
    int exit_code = VS_CLI_EXIT_RUNTIME;
    zsock_t *dealer = NULL;
    zframe_t *frame = NULL;
    uint8_t *request = NULL;
    size_t request_size = 0;
    vs_msg_t reply = {0};
    char *broker_key = vs_cli_load_public_key("status", "--broker-key", key_path);
    zcert_t *cert = broker_key ? vs_cli_load_secret_cert("status", "--cert", cert_path) : NULL;
    if (!cert) {
        goto cleanup;
    }
    dealer = zsock_new(ZMQ_DEALER);
    if (!dealer) {
        vs_cli_error("status", "cannot create a socket");
        goto cleanup;
    }
    zcert_apply(cert, dealer);
    zsock_set_curve_serverkey(dealer, broker_key);
    zsock_set_maxmsgsize(dealer, (int) VS_MAX_FRAME);
    zsock_set_linger(dealer, 0);
    vs_cli_cert_destroy(&cert);
    if (zsock_connect(dealer, "%s", broker) != 0) {
        vs_cli_error("status", "cannot connect to '%s': %s", broker, zmq_strerror(zmq_errno()));
        goto cleanup;
    }
    vs_msg_t status = {.command = VS_CMD_STATUS, .request_id = 1};
    if (vs_msg_encode(&status, &request, &request_size) != VS_OK
        || zmq_send(zsock_resolve(dealer), request, request_size, 0) < 0) {
        vs_cli_error("status", "cannot send the request to '%s'", broker);
        goto cleanup;
    }
    zsock_set_rcvtimeo(dealer, 5000);
    frame = zframe_recv(dealer);
    if (!frame) {
        vs_cli_error("status",
                     "no answer from broker '%s' within 5 s (is it running, is --broker-key "
                     "its key, and is this key in its --publishers or --subscribers folder?)",
                     broker);
        goto cleanup;
    }
    const char *why = NULL;
    int rc = vs_msg_decode(&reply, zframe_data(frame), zframe_size(frame), &why);
    if (rc != VS_OK) {
        vs_cli_error("status", "bad answer from broker '%s': %s", broker, why ? why : "");
        goto cleanup;
    }
    if (reply.command == VS_CMD_ERROR) {
        vs_cli_error("status", "broker '%s' refused: %.*s (%s)", broker, (int) reply.reason.size,
                     reply.reason.data, vs_strerror((int) reply.code));
        goto cleanup;
    }
    if (reply.command != VS_CMD_STATUS_REPLY) {
        vs_cli_error("status", "unexpected answer from broker '%s' (command %d)", broker,
                     (int) reply.command);
        goto cleanup;
    }
    if (json) {
        s_print_json(&reply);
    } else {
        s_print_table(&reply);
    }
    exit_code = VS_CLI_EXIT_OK;
cleanup:
    vs_msg_clear(&reply);
    zframe_destroy(&frame);
    free(request);
    zsock_destroy(&dealer);
    vs_cli_cert_destroy(&cert);
    free(broker_key);
    return exit_code;
}
