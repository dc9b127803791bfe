/*  msg.c - the nine commands: [version, command, request_id, field...] to vs_msg_t and back.

    docs/protocol.md section 4 is the layout. Decoding checks each field's type, size and
    count before use, allocates the entries, streams and publishers arrays only after their
    counts passed both the limit and the bytes left, and skips unknown trailing elements.    */
#include "mp_read.h"
#include "mp_write.h"

#include <stdlib.h>
#include <string.h>

/*  The fewest bytes an element of each array can take, to bound counts by the bytes left:
    [seq, hash, changeset] and [name, head, hash, publishers] hold a 34-byte hash and at least
    four more bytes; [id, last_version] at least four bytes.                                  */
#define S_ENTRY_MIN_SIZE          38
#define S_STREAM_INFO_MIN_SIZE    38
#define S_PUBLISHER_INFO_MIN_SIZE 4

/*  Elements after [version, command, request_id] each command requires; 0 for unknown.       */
static uint32_t s_field_count(uint64_t command)
{
    switch (command) {
    case VS_CMD_PUBLISH: return 3;
    case VS_CMD_ACK: return 4;
    case VS_CMD_FETCH: return 3;
    case VS_CMD_CHUNK: return 4;
    case VS_CMD_STATUS: return 0;
    case VS_CMD_STATUS_REPLY: return 1;
    case VS_CMD_ERROR: return 2;
    case VS_CMD_LIVE: return 4;
    case VS_CMD_HEARTBEAT: return 3;
    default: return 0;
    }
}

static bool s_command_known(uint64_t command)
{
    return command >= VS_CMD_PUBLISH && command <= VS_CMD_HEARTBEAT;
}

static bool s_publisher_id_valid(const char *data, size_t size)
{
    if (data == NULL || size < 1 || size > VS_MAX_PUBLISHER_ID) {
        return false;
    }
    for (size_t index = 0; index < size; index++) {
        if (data[index] < 0x21 || data[index] > 0x7e) {
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------
    Decoding                                                                                   */

/*  Records the reason of a failure and returns code.                                           */
static int s_fail(const char **why, int code, const char *reason)
{
    if (why) {
        *why = reason;
    }
    return code;
}

/*  Maps a reader failure to VS_EPROTO with the reader's reason.                                */
static int s_reader_failed(const vs_mp_reader_t *reader, const char **why)
{
    return s_fail(why, VS_EPROTO, reader->why ? reader->why : "malformed msgpack");
}

static int s_read_uint(vs_mp_reader_t *reader, uint64_t *value, const char **why)
{
    return vs_mp_read_uint(reader, value) == VS_OK ? VS_OK : s_reader_failed(reader, why);
}

static int s_read_stream(vs_mp_reader_t *reader, vs_bytes_t *stream, const char **why)
{
    if (vs_mp_read_str(reader, stream) != VS_OK) {
        return s_reader_failed(reader, why);
    }
    if (!vs_stream_name_valid(stream->data, stream->size)) {
        return s_fail(why, VS_EPROTO, "invalid stream name (1 to 128 bytes of [A-Za-z0-9._-])");
    }
    return VS_OK;
}

static int s_read_hash(vs_mp_reader_t *reader, vs_bytes_t *hash, const char **why)
{
    if (vs_mp_read_bin(reader, hash) != VS_OK) {
        return s_reader_failed(reader, why);
    }
    if (hash->size != VS_HASH_SIZE) {
        return s_fail(why, VS_EPROTO, "hash is not 32 bytes");
    }
    return VS_OK;
}

static int s_read_changeset(vs_mp_reader_t *reader, vs_bytes_t *changeset, const char **why)
{
    if (vs_mp_read_bin(reader, changeset) != VS_OK) {
        return s_reader_failed(reader, why);
    }
    if (changeset->size > VS_MAX_CHANGESET) {
        return s_fail(why, VS_EMSGSIZE, "change set over 64 MiB");
    }
    return VS_OK;
}

/*  Reads an array header whose count may be at most limit, and whose elements take at least
    min_size bytes each.                                                                      */
static int s_read_list(vs_mp_reader_t *reader, uint32_t *count, uint32_t limit, size_t min_size,
                       const char **why)
{
    if (vs_mp_read_array(reader, count) != VS_OK) {
        return s_reader_failed(reader, why);
    }
    if (*count > limit) {
        return s_fail(why, VS_EMSGSIZE, "array count over its limit");
    }
    if ((uint64_t) *count * min_size > vs_mp_left(reader)) {
        return s_fail(why, VS_EPROTO, "array count exceeds the bytes left");
    }
    return VS_OK;
}

/*  Reads the header of a nested record with at least fields elements; *extra gets the count
    of unknown trailing elements the caller skips after the known ones.                       */
static int s_read_record(vs_mp_reader_t *reader, uint32_t fields, uint32_t *extra, const char **why)
{
    uint32_t count;
    if (vs_mp_read_array(reader, &count) != VS_OK) {
        return s_reader_failed(reader, why);
    }
    if (count < fields) {
        return s_fail(why, VS_EPROTO, "record with missing fields");
    }
    *extra = count - fields;
    return VS_OK;
}

static int s_skip_extra(vs_mp_reader_t *reader, uint32_t extra, int depth, const char **why)
{
    return vs_mp_skip_many(reader, extra, depth) == VS_OK ? VS_OK : s_reader_failed(reader, why);
}

/*  entries = [[seq, hash, changeset]...]                                                       */
static int s_read_entries(vs_mp_reader_t *reader, vs_msg_t *msg, const char **why)
{
    uint32_t count;
    int rc = s_read_list(reader, &count, VS_MAX_CHUNK_ENTRIES, S_ENTRY_MIN_SIZE, why);
    if (rc != VS_OK) {
        return rc;
    }
    if (count > 0) {
        msg->entries = calloc(count, sizeof msg->entries[0]);
        if (msg->entries == NULL) {
            return s_fail(why, VS_ENOMEM, "out of memory");
        }
    }
    for (uint32_t index = 0; index < count; index++) {
        vs_entry_t *entry = &msg->entries[index];
        uint32_t extra;
        if ((rc = s_read_record(reader, 3, &extra, why)) != VS_OK ||
            (rc = s_read_uint(reader, &entry->seq, why)) != VS_OK ||
            (rc = s_read_hash(reader, &entry->hash, why)) != VS_OK ||
            (rc = s_read_changeset(reader, &entry->changeset, why)) != VS_OK ||
            (rc = s_skip_extra(reader, extra, 2, why)) != VS_OK) {
            return rc;
        }
        msg->entry_count = index + 1;
    }
    return VS_OK;
}

/*  publishers = [[id, last_version]...]                                                        */
static int s_read_publishers(vs_mp_reader_t *reader, vs_stream_info_t *stream, const char **why)
{
    uint32_t count;
    int rc = s_read_list(reader, &count, VS_MAX_STATUS_PUBLISHERS, S_PUBLISHER_INFO_MIN_SIZE, why);
    if (rc != VS_OK) {
        return rc;
    }
    if (count > 0) {
        stream->publishers = calloc(count, sizeof stream->publishers[0]);
        if (stream->publishers == NULL) {
            return s_fail(why, VS_ENOMEM, "out of memory");
        }
    }
    for (uint32_t index = 0; index < count; index++) {
        vs_publisher_info_t *publisher = &stream->publishers[index];
        uint32_t extra;
        if ((rc = s_read_record(reader, 2, &extra, why)) != VS_OK) {
            return rc;
        }
        if (vs_mp_read_str(reader, &publisher->id) != VS_OK) {
            return s_reader_failed(reader, why);
        }
        if (!s_publisher_id_valid(publisher->id.data, publisher->id.size)) {
            return s_fail(why, VS_EPROTO, "invalid publisher id (1 to 64 bytes of 0x21..0x7e)");
        }
        if ((rc = s_read_uint(reader, &publisher->last_version, why)) != VS_OK ||
            (rc = s_skip_extra(reader, extra, 4, why)) != VS_OK) {
            return rc;
        }
        stream->publisher_count = index + 1;
    }
    return VS_OK;
}

/*  streams = [[name, head, head_hash, publishers]...]                                         */
static int s_read_streams(vs_mp_reader_t *reader, vs_msg_t *msg, const char **why)
{
    uint32_t count;
    int rc = s_read_list(reader, &count, VS_MAX_STATUS_STREAMS, S_STREAM_INFO_MIN_SIZE, why);
    if (rc != VS_OK) {
        return rc;
    }
    if (count > 0) {
        msg->streams = calloc(count, sizeof msg->streams[0]);
        if (msg->streams == NULL) {
            return s_fail(why, VS_ENOMEM, "out of memory");
        }
    }
    for (uint32_t index = 0; index < count; index++) {
        vs_stream_info_t *stream = &msg->streams[index];
        uint32_t extra;
        /*  Counted before its publishers so that a failure frees them.                        */
        msg->stream_count = index + 1;
        if ((rc = s_read_record(reader, 4, &extra, why)) != VS_OK ||
            (rc = s_read_stream(reader, &stream->name, why)) != VS_OK ||
            (rc = s_read_uint(reader, &stream->head, why)) != VS_OK ||
            (rc = s_read_hash(reader, &stream->hash, why)) != VS_OK ||
            (rc = s_read_publishers(reader, stream, why)) != VS_OK ||
            (rc = s_skip_extra(reader, extra, 2, why)) != VS_OK) {
            return rc;
        }
    }
    return VS_OK;
}

/*  Reads the fields of a known command.                                                        */
static int s_read_fields(vs_mp_reader_t *reader, vs_msg_t *msg, const char **why)
{
    int rc = VS_OK;
    switch (msg->command) {
    case VS_CMD_PUBLISH:
        if ((rc = s_read_stream(reader, &msg->stream, why)) != VS_OK) {
            return rc;
        }
        if (vs_mp_read_str(reader, &msg->publisher) != VS_OK) {
            return s_reader_failed(reader, why);
        }
        if (!s_publisher_id_valid(msg->publisher.data, msg->publisher.size)) {
            return s_fail(why, VS_EPROTO, "invalid publisher id (1 to 64 bytes of 0x21..0x7e)");
        }
        return s_read_changeset(reader, &msg->changeset, why);
    case VS_CMD_ACK:
        if ((rc = s_read_stream(reader, &msg->stream, why)) != VS_OK ||
            (rc = s_read_uint(reader, &msg->last_version, why)) != VS_OK ||
            (rc = s_read_uint(reader, &msg->seq, why)) != VS_OK) {
            return rc;
        }
        if (vs_mp_read_bool(reader, &msg->duplicate) != VS_OK) {
            return s_reader_failed(reader, why);
        }
        return VS_OK;
    case VS_CMD_FETCH:
        if ((rc = s_read_stream(reader, &msg->stream, why)) != VS_OK ||
            (rc = s_read_uint(reader, &msg->since, why)) != VS_OK) {
            return rc;
        }
        return s_read_uint(reader, &msg->max_bytes, why);
    case VS_CMD_CHUNK:
        if ((rc = s_read_stream(reader, &msg->stream, why)) != VS_OK ||
            (rc = s_read_uint(reader, &msg->head, why)) != VS_OK ||
            (rc = s_read_hash(reader, &msg->hash, why)) != VS_OK) {
            return rc;
        }
        return s_read_entries(reader, msg, why);
    case VS_CMD_STATUS: return VS_OK;
    case VS_CMD_STATUS_REPLY: return s_read_streams(reader, msg, why);
    case VS_CMD_ERROR: {
        uint64_t code;
        if ((rc = s_read_uint(reader, &code, why)) != VS_OK) {
            return rc;
        }
        if (code > UINT32_MAX) {
            return s_fail(why, VS_EPROTO, "error code out of range");
        }
        msg->code = (uint32_t) code;
        if (vs_mp_read_str(reader, &msg->reason) != VS_OK) {
            return s_reader_failed(reader, why);
        }
        if (msg->reason.size > VS_MAX_REASON) {
            return s_fail(why, VS_EMSGSIZE, "error reason over 1024 bytes");
        }
        return VS_OK;
    }
    case VS_CMD_LIVE:
        if ((rc = s_read_stream(reader, &msg->stream, why)) != VS_OK ||
            (rc = s_read_uint(reader, &msg->seq, why)) != VS_OK ||
            (rc = s_read_hash(reader, &msg->hash, why)) != VS_OK) {
            return rc;
        }
        return s_read_changeset(reader, &msg->changeset, why);
    case VS_CMD_HEARTBEAT:
        if ((rc = s_read_stream(reader, &msg->stream, why)) != VS_OK ||
            (rc = s_read_uint(reader, &msg->head, why)) != VS_OK) {
            return rc;
        }
        return s_read_hash(reader, &msg->hash, why);
    default: return s_fail(why, VS_ECOMMAND, "unknown command");
    }
}

/*  Frees the arrays and forgets every field but command and request_id.                       */
static void s_release(vs_msg_t *msg)
{
    vs_command_t command = msg->command;
    uint64_t request_id = msg->request_id;
    vs_msg_clear(msg);
    msg->command = command;
    msg->request_id = request_id;
}

int vs_msg_decode(vs_msg_t *msg, const void *data, size_t size, const char **why)
{
    vs_mp_reader_t reader;
    uint32_t count;
    uint64_t version;
    uint64_t command;
    uint32_t fields;
    int rc;
    if (msg == NULL || (data == NULL && size > 0)) {
        return s_fail(why, VS_EINVAL, "no message");
    }
    memset(msg, 0, sizeof *msg);
    if (size > VS_MAX_FRAME) {
        return s_fail(why, VS_EMSGSIZE, "message over 80 MiB");
    }
    vs_mp_reader_init(&reader, data, size);
    if (vs_mp_read_array(&reader, &count) != VS_OK) {
        return s_reader_failed(&reader, why);
    }
    if (count < 1) {
        return s_fail(why, VS_EPROTO, "empty message array");
    }
    if ((rc = s_read_uint(&reader, &version, why)) != VS_OK) {
        return rc;
    }
    if (version != VS_PROTOCOL_VERSION) {
        return s_fail(why, VS_EVERSION, "unsupported protocol version");
    }
    if (count < 3) {
        return s_fail(why, VS_EPROTO, "message shorter than [version, command, request_id]");
    }
    if ((rc = s_read_uint(&reader, &command, why)) != VS_OK ||
        (rc = s_read_uint(&reader, &msg->request_id, why)) != VS_OK) {
        return rc;
    }
    if (!s_command_known(command)) {
        return s_fail(why, VS_ECOMMAND, "unknown command");
    }
    msg->command = (vs_command_t) command;
    fields = s_field_count(command);
    if (count - 3 < fields) {
        return s_fail(why, VS_EPROTO, "message with missing fields");
    }
    rc = s_read_fields(&reader, msg, why);
    if (rc == VS_OK && msg->command == VS_CMD_PUBLISH && count - 3 > fields) {
        /* PUBLISH's optional acked, the one optional field so far. */
        rc = s_read_uint(&reader, &msg->acked, why);
        msg->has_acked = rc == VS_OK;
        fields++;
    }
    if (rc == VS_OK) {
        rc = s_skip_extra(&reader, count - 3 - fields, 1, why);
    }
    if (rc == VS_OK && reader.pos != reader.end) {
        rc = s_fail(why, VS_EPROTO, "trailing bytes after the message");
    }
    if (rc != VS_OK) {
        s_release(msg);
    }
    return rc;
}

void vs_msg_clear(vs_msg_t *msg)
{
    if (msg == NULL) {
        return;
    }
    free(msg->entries);
    if (msg->streams) {
        for (size_t index = 0; index < msg->stream_count; index++) {
            free(msg->streams[index].publishers);
        }
        free(msg->streams);
    }
    memset(msg, 0, sizeof *msg);
}

/* ---------------------------------------------------------------------------------------------
    Encoding                                                                                   */

static bool s_bytes_valid(vs_bytes_t bytes)
{
    return bytes.data != NULL || bytes.size == 0;
}

static bool s_hash_valid(vs_bytes_t hash)
{
    return hash.data != NULL && hash.size == VS_HASH_SIZE;
}

static bool s_changeset_valid(vs_bytes_t changeset)
{
    return s_bytes_valid(changeset) && changeset.size <= VS_MAX_CHANGESET;
}

/*  Checks every field encode will write, and adds an upper bound of its size to *bound.       */
static int s_check_fields(const vs_msg_t *msg, size_t *bound)
{
    size_t total = 16 + 2 * 9 + 5 + VS_HASH_SIZE + 3 * 9 + 1;
    bool stream_needed = msg->command != VS_CMD_STATUS && msg->command != VS_CMD_STATUS_REPLY &&
                         msg->command != VS_CMD_ERROR;
    if (!s_command_known(msg->command)) {
        return VS_EINVAL;
    }
    if (stream_needed) {
        if (!vs_stream_name_valid(msg->stream.data, msg->stream.size)) {
            return VS_EINVAL;
        }
        total += 5 + msg->stream.size;
    }
    switch (msg->command) {
    case VS_CMD_PUBLISH:
        if (!s_publisher_id_valid(msg->publisher.data, msg->publisher.size) ||
            !s_changeset_valid(msg->changeset)) {
            return VS_EINVAL;
        }
        total += 5 + msg->publisher.size + 5 + msg->changeset.size + 9;
        break;
    case VS_CMD_CHUNK:
        if (!s_hash_valid(msg->hash) || msg->entry_count > VS_MAX_CHUNK_ENTRIES ||
            (msg->entries == NULL && msg->entry_count > 0)) {
            return VS_EINVAL;
        }
        total += 5;
        for (size_t index = 0; index < msg->entry_count; index++) {
            const vs_entry_t *entry = &msg->entries[index];
            if (!s_hash_valid(entry->hash) || !s_changeset_valid(entry->changeset)) {
                return VS_EINVAL;
            }
            total += 1 + 9 + 5 + VS_HASH_SIZE + 5 + entry->changeset.size;
        }
        break;
    case VS_CMD_STATUS_REPLY:
        if (msg->stream_count > VS_MAX_STATUS_STREAMS ||
            (msg->streams == NULL && msg->stream_count > 0)) {
            return VS_EINVAL;
        }
        total += 5;
        for (size_t index = 0; index < msg->stream_count; index++) {
            const vs_stream_info_t *stream = &msg->streams[index];
            if (!vs_stream_name_valid(stream->name.data, stream->name.size) ||
                !s_hash_valid(stream->hash) || stream->publisher_count > VS_MAX_STATUS_PUBLISHERS ||
                (stream->publishers == NULL && stream->publisher_count > 0)) {
                return VS_EINVAL;
            }
            total += 1 + 5 + stream->name.size + 9 + 5 + VS_HASH_SIZE + 5;
            for (size_t publisher = 0; publisher < stream->publisher_count; publisher++) {
                const vs_publisher_info_t *info = &stream->publishers[publisher];
                if (!s_publisher_id_valid(info->id.data, info->id.size)) {
                    return VS_EINVAL;
                }
                total += 1 + 5 + info->id.size + 9;
            }
        }
        break;
    case VS_CMD_ERROR:
        if (!s_bytes_valid(msg->reason) || msg->reason.size > VS_MAX_REASON) {
            return VS_EINVAL;
        }
        total += 5 + msg->reason.size;
        break;
    case VS_CMD_LIVE:
        if (!s_hash_valid(msg->hash) || !s_changeset_valid(msg->changeset)) {
            return VS_EINVAL;
        }
        total += 5 + msg->changeset.size;
        break;
    case VS_CMD_HEARTBEAT:
        if (!s_hash_valid(msg->hash)) {
            return VS_EINVAL;
        }
        break;
    default: break;
    }
    *bound = total;
    return VS_OK;
}

static int s_pack_str(msgpack_packer *packer, vs_bytes_t bytes)
{
    return msgpack_pack_str_with_body(packer, bytes.data, bytes.size);
}

static int s_pack_bin(msgpack_packer *packer, vs_bytes_t bytes)
{
    return msgpack_pack_bin_with_body(packer, bytes.data, bytes.size);
}

/*  Packs the whole message; returns non-zero when the buffer could not grow.                   */
static int s_pack(msgpack_packer *packer, const vs_msg_t *msg)
{
    bool acked = msg->command == VS_CMD_PUBLISH && msg->has_acked;
    int rc = msgpack_pack_array(packer, 3 + s_field_count(msg->command) + (acked ? 1 : 0));
    rc |= msgpack_pack_uint32(packer, VS_PROTOCOL_VERSION);
    rc |= msgpack_pack_uint32(packer, (uint32_t) msg->command);
    rc |= msgpack_pack_uint64(packer, msg->request_id);
    switch (msg->command) {
    case VS_CMD_PUBLISH:
        rc |= s_pack_str(packer, msg->stream);
        rc |= s_pack_str(packer, msg->publisher);
        rc |= s_pack_bin(packer, msg->changeset);
        if (acked) {
            rc |= msgpack_pack_uint64(packer, msg->acked);
        }
        break;
    case VS_CMD_ACK:
        rc |= s_pack_str(packer, msg->stream);
        rc |= msgpack_pack_uint64(packer, msg->last_version);
        rc |= msgpack_pack_uint64(packer, msg->seq);
        rc |= msg->duplicate ? msgpack_pack_true(packer) : msgpack_pack_false(packer);
        break;
    case VS_CMD_FETCH:
        rc |= s_pack_str(packer, msg->stream);
        rc |= msgpack_pack_uint64(packer, msg->since);
        rc |= msgpack_pack_uint64(packer, msg->max_bytes);
        break;
    case VS_CMD_CHUNK:
        rc |= s_pack_str(packer, msg->stream);
        rc |= msgpack_pack_uint64(packer, msg->head);
        rc |= s_pack_bin(packer, msg->hash);
        rc |= msgpack_pack_array(packer, msg->entry_count);
        for (size_t index = 0; index < msg->entry_count; index++) {
            const vs_entry_t *entry = &msg->entries[index];
            rc |= msgpack_pack_array(packer, 3);
            rc |= msgpack_pack_uint64(packer, entry->seq);
            rc |= s_pack_bin(packer, entry->hash);
            rc |= s_pack_bin(packer, entry->changeset);
        }
        break;
    case VS_CMD_STATUS: break;
    case VS_CMD_STATUS_REPLY:
        rc |= msgpack_pack_array(packer, msg->stream_count);
        for (size_t index = 0; index < msg->stream_count; index++) {
            const vs_stream_info_t *stream = &msg->streams[index];
            rc |= msgpack_pack_array(packer, 4);
            rc |= s_pack_str(packer, stream->name);
            rc |= msgpack_pack_uint64(packer, stream->head);
            rc |= s_pack_bin(packer, stream->hash);
            rc |= msgpack_pack_array(packer, stream->publisher_count);
            for (size_t publisher = 0; publisher < stream->publisher_count; publisher++) {
                rc |= msgpack_pack_array(packer, 2);
                rc |= s_pack_str(packer, stream->publishers[publisher].id);
                rc |= msgpack_pack_uint64(packer, stream->publishers[publisher].last_version);
            }
        }
        break;
    case VS_CMD_ERROR:
        rc |= msgpack_pack_uint32(packer, msg->code);
        rc |= s_pack_str(packer, msg->reason);
        break;
    case VS_CMD_LIVE:
        rc |= s_pack_str(packer, msg->stream);
        rc |= msgpack_pack_uint64(packer, msg->seq);
        rc |= s_pack_bin(packer, msg->hash);
        rc |= s_pack_bin(packer, msg->changeset);
        break;
    case VS_CMD_HEARTBEAT:
        rc |= s_pack_str(packer, msg->stream);
        rc |= msgpack_pack_uint64(packer, msg->head);
        rc |= s_pack_bin(packer, msg->hash);
        break;
    }
    return rc;
}

int vs_msg_encode(const vs_msg_t *msg, uint8_t **data, size_t *size)
{
    vs_mp_buffer_t out = {0};
    msgpack_packer packer;
    size_t bound;
    int rc;
    if (msg == NULL || data == NULL || size == NULL) {
        return VS_EINVAL;
    }
    rc = s_check_fields(msg, &bound);
    if (rc != VS_OK) {
        return rc;
    }
    if (vs_mp_buffer_reserve(&out, bound) != VS_OK) {
        return VS_ENOMEM;
    }
    vs_mp_packer_init(&packer, &out);
    if (s_pack(&packer, msg) != 0) {
        vs_mp_buffer_free(&out);
        return VS_ENOMEM;
    }
    if (out.size > VS_MAX_FRAME) {
        vs_mp_buffer_free(&out);
        return VS_EMSGSIZE;
    }
    *data = out.data;
    *size = out.size;
    return VS_OK;
}
