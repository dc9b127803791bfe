/*  zap.c - the broker's ZAP handler: CURVE public keys to roles, per ZeroMQ RFC 27.

    Each folder of public certificates is a keyring: the Z85 public keys of the certificates it
    holds (subfolders included, "*_secret" files skipped). A keyring re-reads its folder when
    any file in it changed: its name, inode, size, or modification or change time to the
    nanosecond. (czmq's zcertstore looks at the file count, the total size and the newest
    modification time in whole seconds, so a certificate replaced by another of the same size
    within the second of the last look went unseen for good: a revoked key stayed admitted.)
    It reads the certificates itself instead of using zcertstore, because
    zcertstore asserts on two files with the same key and zconfig logs raw bytes of a bad
    file, and a folder's content is outside input: a file that holds no valid public key is
    skipped.
*/
#include "zap.h"

#include <string.h>
#include <sys/stat.h>

#define S_ZAP_ENDPOINT         "inproc://zeromq.zap.01"
#define S_DENIED_LOG_WINDOW_MS 60000
#define S_DENIED_LOG_MAX       10    /* denial lines per window; the rest are counted        */
#define S_CERT_MAX_SIZE        65536 /* a larger file is not a certificate                 */

typedef struct {
    char *folder;
    zhashx_t *keys; /* Z85 public key -> (void *) 1                                        */
    uint64_t signature; /* of the files' names and stat fields at the last load        */
    bool loaded;
} s_keyring_t;

struct vs_zap {
    const vs_logger_t *logger;
    zsock_t *socket;
    s_keyring_t publishers;
    s_keyring_t subscribers;
    int64_t denied_window_start;
    unsigned denied_logged;
    unsigned denied_suppressed;
};

static int s_keyring_init(s_keyring_t *self, const char *folder)
{
    memset(self, 0, sizeof *self);
    self->keys = zhashx_new();
    if (!self->keys) {
        return VS_ENOMEM;
    }
    if (folder && *folder) {
        self->folder = strdup(folder);
        if (!self->folder) {
            zhashx_destroy(&self->keys);
            return VS_ENOMEM;
        }
    }
    return VS_OK;
}

static void s_keyring_clear(s_keyring_t *self)
{
    zhashx_destroy(&self->keys);
    free(self->folder);
    self->folder = NULL;
}

static bool s_secret_file(const char *filename)
{
    size_t length = strlen(filename);
    return length >= 7 && strcmp(filename + length - 7, "_secret") == 0;
}

/*  Reads the Z85 text of the public key of a czmq certificate file, the value of
    'public-key = "..."' (quoted with " or ', or bare) in its curve section, into key_txt.
    Returns false when the file holds no such valid key.                                      */
static bool s_read_public_key(const char *path, char key_txt[41])
{
    bool found = false;
    char *text = NULL;
    FILE *file = fopen(path, "rb");
    if (!file) {
        goto cleanup;
    }
    text = (char *) malloc(S_CERT_MAX_SIZE + 1);
    if (!text) {
        goto cleanup;
    }
    size_t size = fread(text, 1, S_CERT_MAX_SIZE + 1, file);
    if (size > S_CERT_MAX_SIZE) {
        goto cleanup;
    }
    text[size] = 0;
    char *state = NULL;
    for (char *line = strtok_r(text, "\n", &state); line && !found;
         line = strtok_r(NULL, "\n", &state)) {
        while (*line == ' ' || *line == '\t') {
            line++;
        }
        if (strncmp(line, "public-key", 10) != 0) {
            continue;
        }
        char *value = line + 10;
        while (*value == ' ' || *value == '\t') {
            value++;
        }
        if (*value++ != '=') {
            continue;
        }
        while (*value == ' ' || *value == '\t') {
            value++;
        }
        char quote = (*value == '"' || *value == '\'') ? *value++ : 0;
        size_t length = 0;
        while (value[length] && value[length] != quote && value[length] != ' ' &&
               value[length] != '\t' && value[length] != '\r') {
            length++;
        }
        uint8_t key[32];
        if (length == 40) {
            memcpy(key_txt, value, 40);
            key_txt[40] = 0;
            found = zmq_z85_decode(key, key_txt) != NULL;
        }
    }
cleanup:
    free(text);
    if (file) {
        fclose(file);
    }
    return found;
}

static uint64_t s_fold(uint64_t hash, const void *data, size_t size)
{
    const uint8_t *bytes = (const uint8_t *) data;
    for (size_t index = 0; index < size; index++) {
        hash = (hash ^ bytes[index]) * 0x100000001b3ULL; /* FNV-1a */
    }
    return hash;
}

/*  What the folder's files look like now: their names and what stat says of each.            */
static uint64_t s_signature(zfile_t **files)
{
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t index = 0; files && files[index]; index++) {
        const char *filename = zfile_filename(files[index], NULL);
        struct stat info;
        if (!filename || stat(filename, &info) != 0) {
            continue;
        }
        int64_t fields[] = {(int64_t) info.st_ino,         (int64_t) info.st_size,
                            (int64_t) info.st_mtim.tv_sec, (int64_t) info.st_mtim.tv_nsec,
                            (int64_t) info.st_ctim.tv_sec, (int64_t) info.st_ctim.tv_nsec};
        hash = s_fold(hash, filename, strlen(filename) + 1);
        hash = s_fold(hash, fields, sizeof fields);
    }
    return hash;
}

/*  Re-reads the folder when it changed since the last look.                                   */
static void s_keyring_refresh(s_keyring_t *self)
{
    if (!self->folder) {
        return;
    }
    zdir_t *folder = zdir_new(self->folder, NULL);
    if (!folder) {
        /* missing or unreadable: no key                                                      */
        zhashx_purge(self->keys);
        self->loaded = false;
        return;
    }
    zfile_t **files = zdir_flatten(folder);
    uint64_t signature = s_signature(files);
    if (self->loaded && self->signature == signature) {
        zdir_flatten_free(&files);
        zdir_destroy(&folder);
        return;
    }
    zhashx_purge(self->keys);
    for (size_t index = 0; files && files[index]; index++) {
        zfile_t *file = files[index];
        const char *filename = zfile_filename(file, NULL);
        if (!zfile_is_regular(file) || !filename || s_secret_file(filename)) {
            continue;
        }
        char key_txt[41];
        if (s_read_public_key(filename, key_txt)) {
            zhashx_insert(self->keys, key_txt, (void *) 1); /* twice: the second is ignored */
        }
    }
    zdir_flatten_free(&files);
    self->signature = signature;
    self->loaded = true;
    zdir_destroy(&folder);
}

static bool s_keyring_holds(s_keyring_t *self, const char *public_txt)
{
    s_keyring_refresh(self);
    return zhashx_lookup(self->keys, public_txt) != NULL;
}

int vs_zap_new(const char *publishers_dir, const char *subscribers_dir, const vs_logger_t *logger,
               vs_zap_t **self_p, char *why, size_t why_size)
{
    *self_p = NULL;
    vs_zap_t *self = (vs_zap_t *) calloc(1, sizeof *self);
    if (!self) {
        snprintf(why, why_size, "out of memory");
        return VS_ENOMEM;
    }
    self->logger = logger;
    if (s_keyring_init(&self->publishers, publishers_dir) != VS_OK ||
        s_keyring_init(&self->subscribers, subscribers_dir) != VS_OK) {
        snprintf(why, why_size, "out of memory");
        vs_zap_destroy(&self);
        return VS_ENOMEM;
    }
    self->socket = zsock_new(ZMQ_REP);
    if (!self->socket) {
        snprintf(why, why_size, "cannot create the ZAP socket");
        vs_zap_destroy(&self);
        return VS_ENOMEM;
    }
    zsock_set_linger(self->socket, 0);
    if (zsock_bind(self->socket, "%s", S_ZAP_ENDPOINT) != 0) {
        snprintf(why, why_size,
                 "cannot bind ZAP handler '%s': %s (another broker or zauth in this process?)",
                 S_ZAP_ENDPOINT, zmq_strerror(zmq_errno()));
        vs_zap_destroy(&self);
        return VS_EIO;
    }
    s_keyring_refresh(&self->publishers);
    s_keyring_refresh(&self->subscribers);
    *self_p = self;
    return VS_OK;
}

void vs_zap_destroy(vs_zap_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    vs_zap_t *self = *self_p;
    zsock_destroy(&self->socket);
    s_keyring_clear(&self->publishers);
    s_keyring_clear(&self->subscribers);
    free(self);
    *self_p = NULL;
}

zsock_t *vs_zap_socket(vs_zap_t *self)
{
    return self->socket;
}

unsigned vs_zap_roles(const char *user_id)
{
    if (!user_id) {
        return 0;
    }
    if (strcmp(user_id, "publisher") == 0) {
        return VS_ROLE_PUBLISHER;
    }
    if (strcmp(user_id, "subscriber") == 0) {
        return VS_ROLE_SUBSCRIBER;
    }
    if (strcmp(user_id, "publisher,subscriber") == 0) {
        return VS_ROLE_PUBLISHER | VS_ROLE_SUBSCRIBER;
    }
    return 0;
}

static const char *s_user_id(unsigned roles)
{
    switch (roles) {
    case VS_ROLE_PUBLISHER: return "publisher";
    case VS_ROLE_SUBSCRIBER: return "subscriber";
    case VS_ROLE_PUBLISHER | VS_ROLE_SUBSCRIBER: return "publisher,subscriber";
    default: return "";
    }
}

/*  One line per denial, at most S_DENIED_LOG_MAX a minute; the rest are counted and the count
    is logged when the next window opens.                                                     */
static void s_log_denied(vs_zap_t *self, const char *domain, const char *address,
                         const char *mechanism, const char *key_txt, const char *reason)
{
    int64_t now = zclock_mono();
    if (now - self->denied_window_start >= S_DENIED_LOG_WINDOW_MS) {
        if (self->denied_suppressed > 0) {
            vs_log(self->logger, VS_LOG_WARNING,
                   "broker: %u more clients were denied in the last minute",
                   self->denied_suppressed);
        }
        self->denied_window_start = now;
        self->denied_logged = 0;
        self->denied_suppressed = 0;
    }
    if (self->denied_logged >= S_DENIED_LOG_MAX) {
        self->denied_suppressed++;
        return;
    }
    self->denied_logged++;
    vs_log(self->logger, VS_LOG_WARNING, "broker: denied %s client%s%s from %s on %s: %s",
           mechanism, key_txt ? " key " : "", key_txt ? key_txt : "", address, domain, reason);
}

static void s_reply(zsock_t *socket, const char *request_id, size_t request_id_size,
                    const char *status, const char *text, const char *user_id)
{
    zmsg_t *reply = zmsg_new();
    if (!reply) {
        return;
    }
    zmsg_addstr(reply, "1.0");
    zmsg_addmem(reply, request_id, request_id_size);
    zmsg_addstr(reply, status);
    zmsg_addstr(reply, text);
    zmsg_addstr(reply, user_id);
    zmsg_addmem(reply, "", 0);
    zmsg_send(&reply, socket);
    zmsg_destroy(&reply);
}

/*  Copies a frame into a short printable C string for logs and comparisons.                   */
static void s_frame_text(zframe_t *frame, char *out, size_t out_size)
{
    if (!frame) {
        snprintf(out, out_size, "?");
        return;
    }
    vs_escape_sample(zframe_data(frame), zframe_size(frame), out, out_size);
}

void vs_zap_handle(vs_zap_t *self)
{
    zsock_set_rcvtimeo(self->socket, 0);
    zmsg_t *request = zmsg_recv(self->socket);
    zsock_set_rcvtimeo(self->socket, -1);
    if (!request) {
        return;
    }
    zframe_t *version = zmsg_first(request);
    zframe_t *request_id = zmsg_next(request);
    zframe_t *domain_frame = zmsg_next(request);
    zframe_t *address_frame = zmsg_next(request);
    zframe_t *routing_id = zmsg_next(request);
    zframe_t *mechanism_frame = zmsg_next(request);
    zframe_t *key = zmsg_next(request);
    (void) routing_id;
    const char *id_data = request_id ? (const char *) zframe_data(request_id) : "";
    size_t id_size = request_id ? zframe_size(request_id) : 0;
    if (!version || !zframe_streq(version, "1.0") || !mechanism_frame) {
        s_reply(self->socket, id_data, id_size, "500", "malformed ZAP request", "");
        vs_log(self->logger, VS_LOG_ERROR, "broker: malformed ZAP request");
        goto cleanup;
    }
    char domain[64];
    char address[64];
    char mechanism[16];
    s_frame_text(domain_frame, domain, sizeof domain);
    s_frame_text(address_frame, address, sizeof address);
    s_frame_text(mechanism_frame, mechanism, sizeof mechanism);
    if (!zframe_streq(mechanism_frame, "CURVE") || !key || zframe_size(key) != 32) {
        s_reply(self->socket, id_data, id_size, "400", "CURVE required", "");
        s_log_denied(self, domain, address, mechanism, NULL, "mechanism not allowed");
        goto cleanup;
    }
    char key_txt[41];
    if (!zmq_z85_encode(key_txt, zframe_data(key), 32)) {
        s_reply(self->socket, id_data, id_size, "500", "cannot encode key", "");
        goto cleanup;
    }
    unsigned roles = 0;
    if (s_keyring_holds(&self->publishers, key_txt)) {
        roles |= VS_ROLE_PUBLISHER;
    }
    if (s_keyring_holds(&self->subscribers, key_txt)) {
        roles |= VS_ROLE_SUBSCRIBER;
    }
    if (roles == 0) {
        s_reply(self->socket, id_data, id_size, "400", "unknown key", "");
        s_log_denied(self, domain, address, mechanism, key_txt, "unknown key");
        goto cleanup;
    }
    if (zframe_streq(domain_frame, VS_ZAP_DOMAIN_LIVE)) {
        if (!(roles & VS_ROLE_SUBSCRIBER)) {
            s_reply(self->socket, id_data, id_size, "400", "not a subscriber", "");
            s_log_denied(self, domain, address, mechanism, key_txt, "not a subscriber");
            goto cleanup;
        }
    } else if (!zframe_streq(domain_frame, VS_ZAP_DOMAIN_REQUEST)) {
        s_reply(self->socket, id_data, id_size, "400", "unknown domain", "");
        s_log_denied(self, domain, address, mechanism, key_txt, "unknown domain");
        goto cleanup;
    }
    s_reply(self->socket, id_data, id_size, "200", "OK", s_user_id(roles));
    vs_log(self->logger, VS_LOG_DEBUG, "broker: admitted %s key %s from %s on %s", s_user_id(roles),
           key_txt, address, domain);
cleanup:
    zmsg_destroy(&request);
}
