/*  vs_proto.h - the versync wire format: errors, values, change sets, commands, the hash chain.

    Pure code: bytes to structs and back, validation, limits and error text. No sockets, files,
    SQLite or global state. Every decoder checks each length, type and count against the bytes
    left before it reads or allocates, and returns VS_EPROTO (or VS_EMSGSIZE) with a static reason
    string on bad input. docs/protocol.md is the normative description of these bytes.
*/
#ifndef VS_PROTO_H_INCLUDED
#define VS_PROTO_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
    Limits. Anything larger from the network or a file is rejected before allocation.        */

#define VS_PROTOCOL_VERSION 1
#define VS_HASH_SIZE 32                            /* BLAKE2b-256                            */
#define VS_MAX_FRAME (80u * 1024 * 1024)           /* ZMQ_MAXMSGSIZE on every socket         */
#define VS_MAX_FRAMES 4                            /* frames accepted in one message         */
#define VS_MAX_CHANGESET (64u * 1024 * 1024)       /* one encoded change set                 */
#define VS_DEFAULT_CHANGESET_TARGET (256u * 1024) /* publisher cuts a set past this size     */
#define VS_DEFAULT_CHUNK_BYTES (1024u * 1024)      /* catch-up reply size                    */
#define VS_MAX_CHUNK_ENTRIES 65536                 /* change sets in one CHUNK               */
#define VS_MAX_NAME 255                            /* table or column name, bytes            */
#define VS_MAX_STREAM_NAME 128                     /* stream name, bytes                     */
#define VS_MAX_PUBLISHER_ID 64                     /* publisher id, bytes                    */
#define VS_MAX_SQL 65536                           /* CREATE TABLE text, bytes               */
#define VS_MAX_TABLES 1024                         /* tables in one change set               */
#define VS_MAX_COLUMNS 2000                        /* columns in one table (SQLite's limit)  */
#define VS_MAX_PK_COLUMNS 8                        /* primary key columns                    */
#define VS_MAX_STATUS_STREAMS 100000               /* streams in one STATUS reply            */
#define VS_MAX_STATUS_PUBLISHERS 100000            /* publishers per stream in STATUS        */
#define VS_MAX_REASON 1024                         /* ERROR reason text, bytes               */

/* ---------------------------------------------------------------------------------------------
    Errors. The numbers travel in ERROR commands: never renumber.                              */

typedef enum {
    VS_OK = 0,
    VS_ENOMEM = 1,     /* out of memory                                      */
    VS_EINVAL = 2,     /* invalid argument from our own caller               */
    VS_EPROTO = 3,     /* malformed message or change set                    */
    VS_EMSGSIZE = 4,   /* a size or count over a limit                       */
    VS_EVERSION = 5,   /* unsupported protocol version                       */
    VS_ECOMMAND = 6,   /* unknown command                                    */
    VS_EAUTH = 7,      /* the peer's key may not do this                     */
    VS_ESTORE = 8,     /* the database failed (I/O, full disk, corrupt)      */
    VS_EGAP = 9,       /* a sequence is missing                              */
    VS_ECHAIN = 10,    /* hash chain mismatch: fork or corrupted history     */
    VS_ESCHEMA = 11,   /* the slave's table cannot take the master's rows    */
    VS_ENOTFOUND = 12, /* no such stream, table or file                     */
    VS_ETIMEDOUT = 13, /* no answer in time                                 */
    VS_EIO = 14,       /* a socket or file failed                            */
    VS_EBEHIND = 15,   /* the broker's history ends before this position     */
    VS_EBUSY = 16,     /* the peer has too much unread: ask again later      */
} vs_err_t;

/*  Returns a static English text for the code; never NULL.                                    */
const char *vs_strerror(int code);

/* ---------------------------------------------------------------------------------------------
    Logging. Libraries are silent until a sink is set. proto only formats: the sink does I/O. */

typedef enum {
    VS_LOG_ERROR = 0,
    VS_LOG_WARNING = 1,
    VS_LOG_NOTICE = 2,
    VS_LOG_INFO = 3,
    VS_LOG_DEBUG = 4,
} vs_log_level_t;

typedef void(vs_log_fn)(void *arg, vs_log_level_t level, const char *line);

typedef struct {
    vs_log_fn *fn; /* NULL: silent */
    void *arg;
} vs_logger_t;

/*  Formats one line and hands it to the sink; does nothing when logger or its fn is NULL.      */
void vs_log(const vs_logger_t *logger, vs_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/*  Writes a short printable sample of untrusted bytes into out (always NUL-terminated):
    printable ASCII as is, everything else as \xNN, cut with "..." when longer than out allows. */
void vs_escape_sample(const void *data, size_t size, char *out, size_t out_size);

/* ---------------------------------------------------------------------------------------------
    Borrowed byte ranges and values.                                                           */

/*  A borrowed range of bytes, not NUL-terminated, valid while the decoded buffer lives.       */
typedef struct {
    const char *data;
    size_t size;
} vs_bytes_t;

/*  True when the range holds exactly the NUL-terminated string.                               */
bool vs_bytes_equal(vs_bytes_t bytes, const char *string);

/*  Returns a NUL-terminated heap copy (caller frees), or NULL when out of memory.             */
char *vs_bytes_strdup(vs_bytes_t bytes);

/*  Value types; the numbers equal SQLite's SQLITE_INTEGER .. SQLITE_NULL on purpose.          */
typedef enum {
    VS_INTEGER = 1,
    VS_REAL = 2,
    VS_TEXT = 3,
    VS_BLOB = 4,
    VS_NULL = 5,
} vs_type_t;

typedef struct {
    vs_type_t type;
    union {
        int64_t integer;
        double real;
        vs_bytes_t bytes; /* VS_TEXT and VS_BLOB: borrowed */
    } as;
} vs_value_t;

/* ---------------------------------------------------------------------------------------------
    Change sets: whole master transactions for one stream, as produced by one publisher.
    Encoding (msgpack): [first_version, last_version, flags, tables, changes]
      tables  = [[name, create_sql, [column...], [pk column index...]], ...]
      changes = [[table index, op, [value...]], ...]
    UPSERT carries every column of its table in order; DELETE carries the key in pk order.   */

typedef enum {
    VS_OP_UPSERT = 1,
    VS_OP_DELETE = 2,
} vs_op_t;

/*  Flag: after applying this set, the slave holds a consistent state of the master. A
    publisher that splits one snapshot over several sets sets it on the last one only; a slave
    commits a batch only where every stream in it stands on such a set.                       */
#define VS_CHANGESET_CONSISTENT 1u
#define VS_CHANGESET_KNOWN_FLAGS VS_CHANGESET_CONSISTENT

typedef struct vs_changeset_writer vs_changeset_writer_t;

/*  Returns a new empty writer, or NULL when out of memory.                                    */
vs_changeset_writer_t *vs_changeset_writer_new(void);

/*  Frees the writer and sets *self_p to NULL; safe on NULL and twice.                         */
void vs_changeset_writer_destroy(vs_changeset_writer_t **self_p);

/*  Forgets every table and change; keeps the allocated buffers.                               */
void vs_changeset_writer_reset(vs_changeset_writer_t *self);

/*  Declares a table for this set and returns its index in *table_index. Strings are copied.
    pk_columns are indexes into columns. Returns VS_EINVAL or VS_EMSGSIZE when a limit or an
    index is out of range, VS_ENOMEM.                                                          */
int vs_changeset_writer_add_table(vs_changeset_writer_t *self, const char *name,
                                  const char *create_sql, size_t column_count,
                                  const char *const *columns, size_t pk_count,
                                  const uint32_t *pk_columns, uint32_t *table_index);

/*  Appends an UPSERT: value_count must equal the table's column count. Values are copied.
    Returns VS_EINVAL (bad index, count or value type), VS_EMSGSIZE (one change alone over
    VS_MAX_CHANGESET), VS_ENOMEM; on failure nothing is appended.                              */
int vs_changeset_writer_upsert(vs_changeset_writer_t *self, uint32_t table_index,
                               size_t value_count, const vs_value_t *values);

/*  Appends a DELETE: key_count must equal the table's pk column count.                        */
int vs_changeset_writer_delete(vs_changeset_writer_t *self, uint32_t table_index,
                               size_t key_count, const vs_value_t *key);

/*  Encoded bytes appended so far (changes and tables, plus the largest header finish adds):
    an upper bound of the finished size, to decide where to cut a set.                         */
size_t vs_changeset_writer_size(const vs_changeset_writer_t *self);

/*  Changes appended so far.                                                                   */
size_t vs_changeset_writer_change_count(const vs_changeset_writer_t *self);

/*  Encodes the set into a new heap buffer handed to the caller (*data, free() it) and resets
    the writer. Requires 1 <= first_version <= last_version. Returns VS_EINVAL, VS_EMSGSIZE
    (over VS_MAX_CHANGESET), VS_ENOMEM; on failure the writer keeps its tables and changes.   */
int vs_changeset_writer_finish(vs_changeset_writer_t *self, uint64_t first_version,
                               uint64_t last_version, uint32_t flags, uint8_t **data,
                               size_t *size);

typedef struct {
    vs_bytes_t name;
    vs_bytes_t create_sql;
    uint32_t column_count;
    vs_bytes_t *columns;   /* column_count names                          */
    uint32_t pk_count;
    uint32_t *pk_columns;  /* pk_count distinct indexes into columns       */
} vs_table_t;

typedef struct {
    uint32_t table;            /* index into the set's tables               */
    vs_op_t op;
    uint32_t value_count;      /* column_count for UPSERT, pk_count for DELETE */
    const vs_value_t *values;  /* valid until the next call                 */
} vs_change_t;

/*  A decoded change set. Fields are read-only for the caller; all bytes are borrowed from the
    buffer given to vs_changeset_open, which must outlive it.                                  */
typedef struct {
    uint64_t first_version;
    uint64_t last_version;
    uint32_t flags;
    uint32_t table_count;
    vs_table_t *tables;
    size_t change_count;
    /* private: iteration state */
    const uint8_t *cursor;
    const uint8_t *end;
    size_t next_change;
    vs_value_t *value_buffer;
    const uint8_t *changes; /* the first change, for vs_changeset_rewind */
    const char *error;      /* why iteration stopped early, NULL: it did not */
} vs_changeset_t;

/*  Validates the whole encoded set (every table, change, type, count and index) without
    allocating per change, then decodes its header and tables. On success the caller iterates
    with vs_changeset_next and must call vs_changeset_close. On failure returns VS_EPROTO or
    VS_EMSGSIZE (VS_EINVAL for a NULL argument, VS_ENOMEM) with a static reason in *why (when
    why is not NULL), and *self needs no close (a close is still safe).
    Changes of each table must have exactly the counts its header declares.                    */
int vs_changeset_open(vs_changeset_t *self, const void *data, size_t size, const char **why);

/*  The same, except that the changes are validated one by one as vs_changeset_next reads them,
    not up front: the header and tables are checked here, and a set accepted by
    vs_changeset_open is accepted here. For a reader that goes through every change once and
    can undo what it did with the earlier ones (a slave's transaction): one pass over the
    bytes instead of two. After vs_changeset_next returns false, vs_changeset_error tells
    whether the set was whole.                                                               */
int vs_changeset_open_incremental(vs_changeset_t *self, const void *data, size_t size,
                                  const char **why);

/*  NULL when iteration has not stopped early, else why: a malformed change, fewer changes
    than declared, or trailing bytes after the last (checked by the vs_changeset_next call
    that returns false at the end).                                                          */
const char *vs_changeset_error(const vs_changeset_t *self);

/*  Produces the next change in *change. Returns true while there was one, false at the end.   */
bool vs_changeset_next(vs_changeset_t *self, vs_change_t *change);

/*  Restarts iteration at the first change.                                                    */
void vs_changeset_rewind(vs_changeset_t *self);

/*  Frees what open allocated; safe twice.                                                     */
void vs_changeset_close(vs_changeset_t *self);

/* ---------------------------------------------------------------------------------------------
    Commands. Each message on the request endpoint is ONE frame (after the ROUTER identity)
    holding a msgpack array [protocol version, command, request id, fields...]. On the live
    endpoint a message is two frames: the topic (stream name + one 0x00 byte), then the body.  */

typedef enum {
    VS_CMD_PUBLISH = 1,      /* publisher -> broker: stream, publisher id, change set, and
                                optionally acked (docs/protocol.md 4.1)                        */
    VS_CMD_ACK = 2,          /* broker -> publisher: stream, last_version, seq, duplicate      */
    VS_CMD_FETCH = 3,        /* subscriber -> broker: stream, since, max_bytes                 */
    VS_CMD_CHUNK = 4,        /* broker -> subscriber: stream, head, head hash, entries         */
    VS_CMD_STATUS = 5,       /* client -> broker: nothing                                      */
    VS_CMD_STATUS_REPLY = 6, /* broker -> client: streams                                      */
    VS_CMD_ERROR = 7,        /* broker -> client: code, reason                                 */
    VS_CMD_LIVE = 8,         /* broker PUB: stream, seq, hash, change set                      */
    VS_CMD_HEARTBEAT = 9,    /* broker PUB: stream, head, head hash                            */
} vs_command_t;

/*  One stored change set, as carried by CHUNK.                                                */
typedef struct {
    uint64_t seq;
    vs_bytes_t hash;      /* VS_HASH_SIZE bytes: the chain hash after this set */
    vs_bytes_t changeset; /* the encoded change set, exactly as published      */
} vs_entry_t;

typedef struct {
    vs_bytes_t id;
    uint64_t last_version;
} vs_publisher_info_t;

typedef struct {
    vs_bytes_t name;
    uint64_t head;
    vs_bytes_t hash; /* VS_HASH_SIZE bytes */
    size_t publisher_count;
    vs_publisher_info_t *publishers;
} vs_stream_info_t;

/*  One command, decoded or to encode. Only the fields of its command are meaningful.
    Byte ranges borrow from the decoded buffer; entries/streams arrays are owned by the
    message after decode (vs_msg_clear frees them) and borrowed by vs_msg_encode.              */
typedef struct {
    vs_command_t command;
    uint64_t request_id;  /* chosen by the client, echoed in the reply; 0 on the live socket */
    vs_bytes_t stream;    /* every command but STATUS, STATUS_REPLY and ERROR                */
    vs_bytes_t publisher; /* PUBLISH                                                         */
    vs_bytes_t changeset; /* PUBLISH, LIVE                                                   */
    bool has_acked;       /* PUBLISH: the optional acked field is present                    */
    uint64_t acked;       /* PUBLISH: the publisher's acknowledged version when it sent it   */
    uint64_t last_version; /* ACK                                                            */
    uint64_t seq;         /* ACK, LIVE                                                       */
    bool duplicate;       /* ACK: the broker had this set already                            */
    uint64_t since;       /* FETCH                                                           */
    uint64_t max_bytes;   /* FETCH: 0 means the broker's default                             */
    uint64_t head;        /* CHUNK, HEARTBEAT                                                */
    vs_bytes_t hash;      /* LIVE, HEARTBEAT, CHUNK (the head hash): VS_HASH_SIZE bytes       */
    size_t entry_count;   /* CHUNK                                                           */
    vs_entry_t *entries;
    size_t stream_count;  /* STATUS_REPLY                                                    */
    vs_stream_info_t *streams;
    uint32_t code;        /* ERROR: a vs_err_t                                               */
    vs_bytes_t reason;    /* ERROR                                                           */
} vs_msg_t;

/*  Decodes one message body into *msg (zeroed first). Checks the protocol version, the
    command, and every field's type, length and count; stream names must be valid (see
    vs_stream_name_valid). Returns VS_OK, VS_EVERSION, VS_ECOMMAND, VS_EPROTO or VS_EMSGSIZE
    (VS_EINVAL for a NULL argument, VS_ENOMEM) with a static reason in *why. The change set
    bytes inside PUBLISH, LIVE and CHUNK are not decoded here: use vs_changeset_open. Call
    vs_msg_clear after success. On failure nothing stays allocated, and msg->command and
    msg->request_id keep what could be read before the fault (0 otherwise; command stays 0 on
    VS_ECOMMAND), so a broker can echo the request id in its ERROR reply.                      */
int vs_msg_decode(vs_msg_t *msg, const void *data, size_t size, const char **why);

/*  Encodes *msg into a new heap buffer (*data, free() it). Returns VS_EINVAL for an unknown
    command or a field over its limit (invalid stream name or publisher id, hash not 32 bytes,
    too many entries), VS_EMSGSIZE when the body would pass VS_MAX_FRAME, VS_ENOMEM.          */
int vs_msg_encode(const vs_msg_t *msg, uint8_t **data, size_t *size);

/*  Frees the arrays that vs_msg_decode allocated and zeroes *msg; safe twice.                 */
void vs_msg_clear(vs_msg_t *msg);

/*  True for 1..VS_MAX_STREAM_NAME bytes of [A-Za-z0-9._-].                                    */
bool vs_stream_name_valid(const char *data, size_t size);

/*  Writes the live topic of a stream (name + one 0x00 byte) into out; returns its length, or
    0 when out_size is too small or the name invalid.                                          */
size_t vs_live_topic(const char *stream, size_t stream_size, char *out, size_t out_size);

/* ---------------------------------------------------------------------------------------------
    The hash chain: hash(n) = BLAKE2b-256(hash(n-1) || changeset(n)), hash(0) = 32 zero bytes. */

void vs_chain_next(const uint8_t previous[VS_HASH_SIZE], const void *changeset, size_t size,
                   uint8_t next[VS_HASH_SIZE]);

/*  Lowercase hex of a hash into out (2 * VS_HASH_SIZE + 1 bytes).                             */
void vs_hash_hex(const uint8_t hash[VS_HASH_SIZE], char out[2 * VS_HASH_SIZE + 1]);

#ifdef __cplusplus
}
#endif

#endif
