/*  proto_test.c - tests of the wire format: values and change sets, the nine commands, the
    rejection of bad bytes, golden vectors, the hash chain, and an unasserted speed report.

    Malformed input is built with a tiny msgpack writer of this file (s_buf_*), written from
    the msgpack spec and independent of the encoder under test.                               */
#include "mp_read.h"
#include "testutil.h"
#include "vs_proto.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
    A growable byte buffer and a hand-written msgpack writer for crafting input.              */

typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
} s_buf_t;

static void s_buf_put(s_buf_t *buf, const void *bytes, size_t size)
{
    if (buf->size + size > buf->capacity) {
        size_t capacity = buf->capacity ? buf->capacity : 64;
        while (capacity < buf->size + size) {
            capacity *= 2;
        }
        buf->data = realloc(buf->data, capacity);
        if (buf->data == NULL) {
            fprintf(stderr, "out of memory in a test\n");
            exit(1);
        }
        buf->capacity = capacity;
    }
    if (size > 0) {
        memcpy(buf->data + buf->size, bytes, size);
    }
    buf->size += size;
}

static void s_buf_byte(s_buf_t *buf, uint8_t byte)
{
    s_buf_put(buf, &byte, 1);
}

static void s_buf_be(s_buf_t *buf, uint64_t value, int bytes)
{
    for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) {
        s_buf_byte(buf, (uint8_t) (value >> shift));
    }
}

static void s_buf_free(s_buf_t *buf)
{
    free(buf->data);
    memset(buf, 0, sizeof *buf);
}

/*  Smallest msgpack format for a non-negative integer.                                        */
static void s_mp_uint(s_buf_t *buf, uint64_t value)
{
    if (value <= 0x7f) {
        s_buf_byte(buf, (uint8_t) value);
    } else if (value <= 0xff) {
        s_buf_byte(buf, 0xcc);
        s_buf_be(buf, value, 1);
    } else if (value <= 0xffff) {
        s_buf_byte(buf, 0xcd);
        s_buf_be(buf, value, 2);
    } else if (value <= 0xffffffffu) {
        s_buf_byte(buf, 0xce);
        s_buf_be(buf, value, 4);
    } else {
        s_buf_byte(buf, 0xcf);
        s_buf_be(buf, value, 8);
    }
}

/*  A negative integer in the given format: 1, 2, 4 or 8 body bytes (int8 .. int64).          */
static void s_mp_int_sized(s_buf_t *buf, int64_t value, int bytes)
{
    s_buf_byte(buf, bytes == 1 ? 0xd0 : bytes == 2 ? 0xd1 : bytes == 4 ? 0xd2 : 0xd3);
    s_buf_be(buf, (uint64_t) value, bytes);
}

static void s_mp_header(s_buf_t *buf, uint8_t fix, uint8_t fix_max, uint8_t code8, uint8_t code16,
                        uint8_t code32, uint64_t size)
{
    if (fix && size <= fix_max) {
        s_buf_byte(buf, (uint8_t) (fix | size));
    } else if (code8 && size <= 0xff) {
        s_buf_byte(buf, code8);
        s_buf_be(buf, size, 1);
    } else if (size <= 0xffff) {
        s_buf_byte(buf, code16);
        s_buf_be(buf, size, 2);
    } else {
        s_buf_byte(buf, code32);
        s_buf_be(buf, size, 4);
    }
}

static void s_mp_array(s_buf_t *buf, uint32_t count)
{
    s_mp_header(buf, 0x90, 15, 0, 0xdc, 0xdd, count);
}

static void s_mp_map(s_buf_t *buf, uint32_t count)
{
    s_mp_header(buf, 0x80, 15, 0, 0xde, 0xdf, count);
}

static void s_mp_str(s_buf_t *buf, const void *data, size_t size)
{
    s_mp_header(buf, 0xa0, 31, 0xd9, 0xda, 0xdb, size);
    s_buf_put(buf, data, size);
}

static void s_mp_cstr(s_buf_t *buf, const char *text)
{
    s_mp_str(buf, text, strlen(text));
}

static void s_mp_bin(s_buf_t *buf, const void *data, size_t size)
{
    s_mp_header(buf, 0, 0, 0xc4, 0xc5, 0xc6, size);
    s_buf_put(buf, data, size);
}

static const uint8_t s_hash_a[VS_HASH_SIZE] = {
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
};
static const uint8_t s_zero_hash[VS_HASH_SIZE];

/* ---------------------------------------------------------------------------------------------
    Helpers                                                                                    */

static vs_bytes_t s_bytes(const void *data, size_t size)
{
    vs_bytes_t bytes = {(const char *) data, size};
    return bytes;
}

static vs_bytes_t s_text(const char *text)
{
    return s_bytes(text, strlen(text));
}

static bool s_bytes_same(vs_bytes_t a, vs_bytes_t b)
{
    return a.size == b.size && (a.size == 0 || memcmp(a.data, b.data, a.size) == 0);
}

static vs_value_t s_integer(int64_t integer)
{
    vs_value_t value = {.type = VS_INTEGER, .as.integer = integer};
    return value;
}

static vs_value_t s_real(double real)
{
    vs_value_t value = {.type = VS_REAL, .as.real = real};
    return value;
}

static vs_value_t s_textv(const void *data, size_t size)
{
    vs_value_t value = {.type = VS_TEXT, .as.bytes = {(const char *) data, size}};
    return value;
}

static vs_value_t s_blob(const void *data, size_t size)
{
    vs_value_t value = {.type = VS_BLOB, .as.bytes = {(const char *) data, size}};
    return value;
}

static vs_value_t s_null(void)
{
    vs_value_t value = {.type = VS_NULL};
    return value;
}

/*  Same type and same content; reals compare bit for bit (NaN payloads, -0.0).                */
static bool s_value_same(const vs_value_t *a, const vs_value_t *b)
{
    if (a->type != b->type) {
        return false;
    }
    switch (a->type) {
    case VS_INTEGER: return a->as.integer == b->as.integer;
    case VS_REAL: return memcmp(&a->as.real, &b->as.real, sizeof(double)) == 0;
    case VS_TEXT:
    case VS_BLOB: return s_bytes_same(a->as.bytes, b->as.bytes);
    case VS_NULL: return true;
    }
    return false;
}

static double s_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double) now.tv_sec + (double) now.tv_nsec / 1e9;
}

/*  A deterministic generator (xorshift64*) for the mutation loop and test data.              */
static uint64_t s_random_state = 0x9e3779b97f4a7c15u;

static uint64_t s_random(void)
{
    s_random_state ^= s_random_state >> 12;
    s_random_state ^= s_random_state << 25;
    s_random_state ^= s_random_state >> 27;
    return s_random_state * 0x2545f4914f6cdd1dULL;
}

/*  Encodes one message or fails the test; the caller frees *data.                             */
static bool s_encode(const vs_msg_t *msg, uint8_t **data, size_t *size)
{
    int rc = vs_msg_encode(msg, data, size);
    if (rc != VS_OK) {
        fprintf(stderr, "  encode of command %d: %s\n", (int) msg->command, vs_strerror(rc));
        return false;
    }
    return true;
}

/*  Decode result, with the reason printed on failure to help a reader of the log.             */
static int s_decode(vs_msg_t *msg, const void *data, size_t size)
{
    const char *why = NULL;
    int rc = vs_msg_decode(msg, data, size, &why);
    if (rc == VS_OK) {
        VS_CHECK(why == NULL);
    } else {
        VS_CHECK(why != NULL && why[0] != '\0');
    }
    return rc;
}

/*  Opens with vs_changeset_open_incremental and reads every change: VS_OK when the set came
    out whole, else open's code, or VS_EPROTO when the iteration stopped early (with a reason).  */
static int s_open_incremental_all(const void *data, size_t size)
{
    vs_changeset_t set;
    const char *why = NULL;
    int rc = vs_changeset_open_incremental(&set, data, size, &why);
    if (rc != VS_OK) {
        return rc;
    }
    vs_change_t change;
    size_t count = 0;
    while (vs_changeset_next(&set, &change)) {
        count++;
    }
    const char *error = vs_changeset_error(&set);
    rc = error ? VS_EPROTO : VS_OK;
    if (error) {
        VS_CHECK(error[0] != '\0');
    } else {
        VS_CHECK(count == set.change_count);
    }
    vs_changeset_close(&set);
    return rc;
}

/*  vs_changeset_open, checking on the way that the incremental open accepts the same sets.    */
static int s_open(vs_changeset_t *set, const void *data, size_t size)
{
    const char *why = NULL;
    int rc = vs_changeset_open(set, data, size, &why);
    if (rc != VS_OK) {
        VS_CHECK(why != NULL && why[0] != '\0');
    }
    VS_CHECK((s_open_incremental_all(data, size) == VS_OK) == (rc == VS_OK));
    return rc;
}

/*  The shape of the speed report and several tests: (id INTEGER, name TEXT, qty INTEGER,
    price REAL, note TEXT, updated INTEGER).                                                   */
static const char *const s_item_columns[] = {"id", "name", "qty", "price", "note", "updated"};
static const uint32_t s_item_pk[] = {0};
static const char s_item_sql[] = "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty "
                                 "INTEGER, price REAL, note TEXT, updated INTEGER)";

static int s_add_items(vs_changeset_writer_t *writer, uint32_t *table)
{
    return vs_changeset_writer_add_table(writer, "items", s_item_sql, 6, s_item_columns, 1,
                                         s_item_pk, table);
}

/*  Row i of the items table; name and note point into the caller's buffers.                  */
static void s_item_row(uint64_t row, vs_value_t values[6], char name[32], char note[64])
{
    int name_size = snprintf(name, 32, "item-%llu", (unsigned long long) row);
    int note_size =
        snprintf(note, 64, "note for row %llu, with some text", (unsigned long long) row);
    values[0] = s_integer((int64_t) row);
    values[1] = s_textv(name, (size_t) name_size);
    values[2] = s_integer((int64_t) (row * 7 % 1000));
    values[3] = s_real((double) row * 0.25);
    values[4] = row % 5 == 0 ? s_null() : s_textv(note, (size_t) note_size);
    values[5] = s_integer(1700000000000LL + (int64_t) row);
}

/*  Finishes a writer into *data or fails.                                                     */
static bool s_finish(vs_changeset_writer_t *writer, uint64_t first, uint64_t last, uint32_t flags,
                     uint8_t **data, size_t *size)
{
    int rc = vs_changeset_writer_finish(writer, first, last, flags, data, size);
    if (rc != VS_OK) {
        fprintf(stderr, "  finish: %s\n", vs_strerror(rc));
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------
    Small helpers of vs_proto.h                                                                */

static char s_logged[2048];
static vs_log_level_t s_logged_level;

static void s_log_sink(void *arg, vs_log_level_t level, const char *line)
{
    (void) arg;
    s_logged_level = level;
    snprintf(s_logged, sizeof s_logged, "%s", line);
}

static void test_helpers(void)
{
    /*  Every code has its own text; unknown codes have one too.                               */
    for (int code = VS_OK; code <= VS_EBUSY; code++) {
        VS_CHECK(vs_strerror(code) != NULL);
        VS_CHECK(strcmp(vs_strerror(code), vs_strerror(-1)) != 0);
        for (int other = VS_OK; other < code; other++) {
            VS_CHECK(strcmp(vs_strerror(code), vs_strerror(other)) != 0);
        }
    }
    VS_CHECK(strcmp(vs_strerror(999), "unknown error") == 0);

    VS_CHECK(vs_bytes_equal(s_text("orders"), "orders"));
    VS_CHECK(!vs_bytes_equal(s_text("orders"), "orders2"));
    VS_CHECK(!vs_bytes_equal(s_bytes("ord", 3), "orders"));
    VS_CHECK(vs_bytes_equal(s_bytes(NULL, 0), ""));
    VS_CHECK(!vs_bytes_equal(s_text("x"), NULL));

    char *copy = vs_bytes_strdup(s_bytes("a\0b", 3));
    VS_REQUIRE(copy != NULL);
    VS_CHECK(memcmp(copy, "a\0b", 4) == 0);
    free(copy);
    copy = vs_bytes_strdup(s_bytes(NULL, 0));
    VS_REQUIRE(copy != NULL);
    VS_CHECK(copy[0] == '\0');
    free(copy);

    /*  Escaped samples: printable as is, the rest as \xNN, cut with "...".                    */
    char sample[32];
    vs_escape_sample("ab\x01\\\xff", 5, sample, sizeof sample);
    VS_CHECK(strcmp(sample, "ab\\x01\\x5c\\xff") == 0);
    vs_escape_sample("0123456789abcdef", 16, sample, 10);
    VS_CHECK(strcmp(sample, "012345...") == 0);
    vs_escape_sample("012345678", 9, sample, 10);
    VS_CHECK(strcmp(sample, "012345678") == 0);
    vs_escape_sample("\x01\x02\x03", 3, sample, 10);
    VS_CHECK(strcmp(sample, "\\x01...") == 0);
    vs_escape_sample("abc", 3, sample, 1);
    VS_CHECK(sample[0] == '\0');
    vs_escape_sample("abc", 3, sample, 3);
    VS_CHECK(strcmp(sample, "..") == 0);
    vs_escape_sample(NULL, 0, sample, sizeof sample);
    VS_CHECK(sample[0] == '\0');
    /*  Every output size on a hostile sample stays terminated and in bounds.                  */
    for (size_t size = 1; size < sizeof sample; size++) {
        memset(sample, 'Z', sizeof sample);
        vs_escape_sample("\xff\x00 a\\b\x7f", 7, sample, size);
        VS_CHECK(strlen(sample) < size);
    }

    /*  Stream names and live topics.                                                          */
    char name[VS_MAX_STREAM_NAME + 2];
    memset(name, 'a', sizeof name);
    VS_CHECK(vs_stream_name_valid("orders", 6));
    VS_CHECK(vs_stream_name_valid("A-z_0.9", 7));
    VS_CHECK(vs_stream_name_valid(name, VS_MAX_STREAM_NAME));
    VS_CHECK(!vs_stream_name_valid(name, VS_MAX_STREAM_NAME + 1));
    VS_CHECK(!vs_stream_name_valid("", 0));
    VS_CHECK(!vs_stream_name_valid(NULL, 3));
    VS_CHECK(!vs_stream_name_valid("a/b", 3));
    VS_CHECK(!vs_stream_name_valid("a\0b", 3));
    VS_CHECK(!vs_stream_name_valid("a b", 3));
    VS_CHECK(!vs_stream_name_valid("caf\xc3\xa9", 5));
    char topic[16];
    VS_CHECK(vs_live_topic("orders", 6, topic, sizeof topic) == 7);
    VS_CHECK(memcmp(topic, "orders\0", 7) == 0);
    VS_CHECK(vs_live_topic("orders", 6, topic, 6) == 0);
    VS_CHECK(vs_live_topic("orders", 6, topic, 7) == 7);
    VS_CHECK(vs_live_topic("or/ders", 7, topic, sizeof topic) == 0);
    VS_CHECK(vs_live_topic("", 0, topic, sizeof topic) == 0);

    /*  Logging: silent without a sink, one formatted line with one, long lines cut.           */
    vs_logger_t silent = {NULL, NULL};
    vs_log(&silent, VS_LOG_ERROR, "nothing %d", 1);
    vs_log(NULL, VS_LOG_ERROR, "nothing %d", 2);
    vs_logger_t logger = {s_log_sink, NULL};
    vs_log(&logger, VS_LOG_WARNING, "stream %s seq %d", "orders", 42);
    VS_CHECK(strcmp(s_logged, "stream orders seq 42") == 0);
    VS_CHECK(s_logged_level == VS_LOG_WARNING);
    char long_text[3000];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    vs_log(&logger, VS_LOG_INFO, "%s", long_text);
    VS_CHECK(strlen(s_logged) > 500 && strlen(s_logged) < 2000);

    char hex[2 * VS_HASH_SIZE + 1];
    vs_hash_hex(s_hash_a, hex);
    VS_CHECK(strcmp(hex, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f") == 0);
}

/* ---------------------------------------------------------------------------------------------
    Change set round trips                                                                     */

/*  The end of a one-change set [.., [[table, 1, [value...]]]] is the change's own bytes.
    Returns whether the set ends with expected (size bytes) after the change's headers.       */
static bool s_change_ends_with(uint32_t table_count, size_t column_count, const vs_value_t *values,
                               const uint8_t *expected, size_t size)
{
    static const char *const names[16] = {"a", "b", "c", "d", "e", "f", "g", "h",
                                          "i", "j", "k", "l", "m", "n", "o", "p"};
    const uint32_t pk[] = {0};
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table = 0;
    bool ok = writer != NULL && column_count <= 16;
    for (uint32_t index = 0; ok && index < table_count; index++) {
        char name[16];
        snprintf(name, sizeof name, "t%u", index);
        ok = vs_changeset_writer_add_table(writer, name, "", column_count, names, 1, pk,
                                           &table) == VS_OK;
    }
    ok = ok && vs_changeset_writer_upsert(writer, table, column_count, values) == VS_OK;
    uint8_t *data = NULL;
    size_t data_size = 0;
    ok = ok && vs_changeset_writer_finish(writer, 1, 1, 0, &data, &data_size) == VS_OK;
    ok = ok && data_size >= size && memcmp(data + data_size - size, expected, size) == 0;
    free(data);
    vs_changeset_writer_destroy(&writer);
    return ok;
}

/*  Every value takes msgpack's shortest form, byte for byte as msgpack-c packs it: integers
    at each width's edges, floats, nil, str and bin at each length's edges, and the headers
    of the change (array, table index, op, value count) past their one-byte forms.           */
static void test_changes_encoding(void)
{
    static const struct {
        int64_t value;
        const char *hex;
    } integers[] = {
        {0, "00"},
        {127, "7f"},
        {128, "cc80"},
        {255, "ccff"},
        {256, "cd0100"},
        {65535, "cdffff"},
        {65536, "ce00010000"},
        {4294967295, "ceffffffff"},
        {4294967296, "cf0000000100000000"},
        {INT64_MAX, "cf7fffffffffffffff"},
        {-1, "ff"},
        {-32, "e0"},
        {-33, "d0df"},
        {-128, "d080"},
        {-129, "d1ff7f"},
        {-32768, "d18000"},
        {-32769, "d2ffff7fff"},
        {INT32_MIN, "d280000000"},
        {(int64_t) INT32_MIN - 1, "d3ffffffff7fffffff"},
        {INT64_MIN, "d38000000000000000"},
    };
    for (size_t index = 0; index < sizeof integers / sizeof integers[0]; index++) {
        uint8_t expected[16];
        size_t size = strlen(integers[index].hex) / 2;
        for (size_t byte = 0; byte < size; byte++) {
            unsigned int nibbles = 0;
            sscanf(integers[index].hex + 2 * byte, "%2x", &nibbles);
            expected[byte] = (uint8_t) nibbles;
        }
        vs_value_t value = s_integer(integers[index].value);
        if (!s_change_ends_with(1, 1, &value, expected, size)) {
            fprintf(stderr, "  integer %lld: not %s\n", (long long) integers[index].value,
                    integers[index].hex);
            VS_CHECK(false);
        }
    }
    /*  [[0, 1, [1.5]]] and [[0, 1, [nil]]], with the change's headers.                       */
    vs_value_t real = s_real(1.5);
    const uint8_t real_bytes[] = {0x91, 0x93, 0x00, 0x01, 0x91, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0};
    VS_CHECK(s_change_ends_with(1, 1, &real, real_bytes, sizeof real_bytes));
    vs_value_t nil = s_null();
    const uint8_t nil_bytes[] = {0x91, 0x93, 0x00, 0x01, 0x91, 0xc0};
    VS_CHECK(s_change_ends_with(1, 1, &nil, nil_bytes, sizeof nil_bytes));
    /*  str and bin: the header before the body, at every length edge.                        */
    static uint8_t body[65537];
    memset(body, 'x', sizeof body);
    static const struct {
        vs_type_t type;
        size_t length;
        uint8_t head[5];
        size_t head_size;
    } strings[] = {
        {VS_TEXT, 0, {0xa0}, 1},
        {VS_TEXT, 31, {0xbf}, 1},
        {VS_TEXT, 32, {0xd9, 32}, 2},
        {VS_TEXT, 255, {0xd9, 0xff}, 2},
        {VS_TEXT, 256, {0xda, 0x01, 0x00}, 3},
        {VS_TEXT, 65535, {0xda, 0xff, 0xff}, 3},
        {VS_TEXT, 65536, {0xdb, 0x00, 0x01, 0x00, 0x00}, 5},
        {VS_BLOB, 1, {0xc4, 1}, 2},
        {VS_BLOB, 255, {0xc4, 0xff}, 2},
        {VS_BLOB, 256, {0xc5, 0x01, 0x00}, 3},
        {VS_BLOB, 65535, {0xc5, 0xff, 0xff}, 3},
        {VS_BLOB, 65536, {0xc6, 0x00, 0x01, 0x00, 0x00}, 5},
    };
    static uint8_t expected[65536 + 16];
    for (size_t index = 0; index < sizeof strings / sizeof strings[0]; index++) {
        vs_value_t value = {.type = strings[index].type};
        value.as.bytes.data = (const char *) body;
        value.as.bytes.size = strings[index].length;
        size_t size = 0;
        memcpy(expected, strings[index].head, strings[index].head_size);
        size += strings[index].head_size;
        memcpy(expected + size, body, strings[index].length);
        size += strings[index].length;
        if (!s_change_ends_with(1, 1, &value, expected, size)) {
            fprintf(stderr, "  %s of %zu bytes: wrong header\n",
                    strings[index].type == VS_TEXT ? "str" : "bin", strings[index].length);
            VS_CHECK(false);
        }
    }
    /*  16 values: array16; table index 199: uint8.                                          */
    vs_value_t sixteen[16];
    for (size_t index = 0; index < 16; index++) {
        sixteen[index] = s_integer((int64_t) index);
    }
    uint8_t wide[6 + 16] = {0x93, 0x00, 0x01, 0xdc, 0x00, 0x10};
    for (size_t index = 0; index < 16; index++) {
        wide[6 + index] = (uint8_t) index;
    }
    VS_CHECK(s_change_ends_with(1, 16, sixteen, wide, 6 + 16));
    vs_value_t one = s_integer(7);
    const uint8_t far[] = {0x93, 0xcc, 0xc7, 0x01, 0x91, 0x07};
    VS_CHECK(s_change_ends_with(200, 1, &one, far, sizeof far));
}

static void test_value_round_trip(void)
{
    static const int64_t integers[] = {
        INT64_MIN,
        INT64_MAX,
        0,
        -1,
        127,
        128,
        -32,
        -33,
        255,
        256,
        65535,
        65536,
        -128,
        -129,
        -32768,
        -32769,
        2147483647,
        -2147483647 - 1,
        -2147483649LL,
        4294967295LL,
        4294967296LL,
        INT64_MIN + 1,
        1LL << 53,
        -(1LL << 40),
    };
    uint64_t nan_bits = 0x7ff8000000000123ULL;
    double payload_nan;
    memcpy(&payload_nan, &nan_bits, sizeof payload_nan);
    const double reals[] = {0.0, -0.0,        1e308,  -1e308, INFINITY, -INFINITY,
                            NAN, payload_nan, 5e-324, 1.5,    -2.25,    3.141592653589793};
    static char big_text[70000];
    memset(big_text, 'q', sizeof big_text);
    static const char utf8[] = "gr\xc3\xbc\xc3\x9f \xe2\x9c\x93 \xf0\x9f\x98\x80";
    const vs_value_t others[] = {
        s_textv("", 0),
        s_textv("a\0b", 3),
        s_textv(utf8, sizeof utf8 - 1),
        s_textv(big_text, 31),
        s_textv(big_text, 32),
        s_textv(big_text, 255),
        s_textv(big_text, 256),
        s_textv(big_text, 65535),
        s_textv(big_text, 65536),
        s_blob("", 0),
        s_blob("\x00", 1),
        s_blob(big_text, 255),
        s_blob(big_text, 256),
        s_blob(big_text, 65535),
        s_blob(big_text, 65536),
        s_null(),
    };
    size_t integer_count = sizeof integers / sizeof integers[0];
    size_t real_count = sizeof reals / sizeof reals[0];
    size_t other_count = sizeof others / sizeof others[0];
    size_t total = integer_count + real_count + other_count;
    vs_value_t *expected = calloc(total, sizeof *expected);
    VS_REQUIRE(expected != NULL);
    for (size_t index = 0; index < integer_count; index++) {
        expected[index] = s_integer(integers[index]);
    }
    for (size_t index = 0; index < real_count; index++) {
        expected[integer_count + index] = s_real(reals[index]);
    }
    for (size_t index = 0; index < other_count; index++) {
        expected[integer_count + real_count + index] = others[index];
    }

    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    VS_REQUIRE(writer != NULL);
    static const char *const columns[] = {"id", "value"};
    static const uint32_t pk[] = {0};
    uint32_t table;
    VS_CHECK(vs_changeset_writer_add_table(writer, "v", "CREATE TABLE v(id, value)", 2, columns, 1,
                                           pk, &table) == VS_OK);
    VS_CHECK(table == 0);
    for (size_t index = 0; index < total; index++) {
        vs_value_t row[2] = {s_integer((int64_t) index), expected[index]};
        VS_CHECK(vs_changeset_writer_upsert(writer, table, 2, row) == VS_OK);
        /*  The same value as a key: any type may sit in a pk column.                          */
        VS_CHECK(vs_changeset_writer_delete(writer, table, 1, &expected[index]) == VS_OK);
    }
    VS_CHECK(vs_changeset_writer_change_count(writer) == 2 * total);
    size_t estimate = vs_changeset_writer_size(writer);
    uint8_t *data = NULL;
    size_t size = 0;
    bool finished = s_finish(writer, 10, 12, VS_CHANGESET_CONSISTENT, &data, &size);
    VS_CHECK(finished);
    VS_CHECK(size <= estimate);
    VS_CHECK(vs_changeset_writer_change_count(writer) == 0);
    vs_changeset_writer_destroy(&writer);
    VS_CHECK(writer == NULL);
    vs_changeset_writer_destroy(&writer);
    if (!finished) {
        free(expected);
        return;
    }

    vs_changeset_t set;
    VS_CHECK(s_open(&set, data, size) == VS_OK);
    VS_CHECK(set.first_version == 10 && set.last_version == 12);
    VS_CHECK(set.flags == VS_CHANGESET_CONSISTENT);
    VS_CHECK(set.table_count == 1);
    VS_CHECK(set.change_count == 2 * total);
    VS_CHECK(vs_bytes_equal(set.tables[0].name, "v"));
    VS_CHECK(vs_bytes_equal(set.tables[0].create_sql, "CREATE TABLE v(id, value)"));
    size_t mismatches = 0;
    vs_change_t change;
    for (int pass = 0; pass < 2; pass++) {
        size_t seen = 0;
        while (vs_changeset_next(&set, &change)) {
            size_t index = seen / 2;
            if (seen % 2 == 0) {
                vs_value_t id = s_integer((int64_t) index);
                mismatches += change.op != VS_OP_UPSERT || change.value_count != 2 ||
                              change.table != 0 || !s_value_same(&change.values[0], &id) ||
                              !s_value_same(&change.values[1], &expected[index]);
            } else {
                mismatches += change.op != VS_OP_DELETE || change.value_count != 1 ||
                              !s_value_same(&change.values[0], &expected[index]);
            }
            seen++;
        }
        VS_CHECK(seen == 2 * total);
        VS_CHECK(!vs_changeset_next(&set, &change));
        vs_changeset_rewind(&set);
    }
    VS_CHECK(mismatches == 0);
    /*  Sign of -0.0 and the NaN payload, spelled out.                                         */
    vs_changeset_rewind(&set);
    for (size_t index = 0; index < 2 * (integer_count + 1) + 1; index++) {
        VS_CHECK(vs_changeset_next(&set, &change));
    }
    VS_CHECK(change.values[1].type == VS_REAL && signbit(change.values[1].as.real));
    vs_changeset_close(&set);
    vs_changeset_close(&set);
    free(data);
    free(expected);
}

static void test_big_blob(void)
{
    size_t blob_size = 16u * 1024 * 1024;
    uint8_t *blob = malloc(blob_size);
    VS_REQUIRE(blob != NULL);
    for (size_t index = 0; index < blob_size; index++) {
        blob[index] = (uint8_t) (index * 131 + (index >> 13));
    }
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    static const char *const columns[] = {"id", "data"};
    static const uint32_t pk[] = {0};
    uint32_t table;
    VS_CHECK(vs_changeset_writer_add_table(writer, "b", "", 2, columns, 1, pk, &table) == VS_OK);
    vs_value_t row[2] = {s_integer(1), s_blob(blob, blob_size)};
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 2, row) == VS_OK);
    VS_CHECK(vs_changeset_writer_size(writer) > blob_size);
    uint8_t *data = NULL;
    size_t size = 0;
    if (s_finish(writer, 1, 1, 0, &data, &size)) {
        vs_changeset_t set;
        vs_change_t change;
        VS_CHECK(s_open(&set, data, size) == VS_OK);
        VS_CHECK(vs_changeset_next(&set, &change));
        VS_CHECK(change.values[1].type == VS_BLOB);
        VS_CHECK(change.values[1].as.bytes.size == blob_size);
        VS_CHECK(memcmp(change.values[1].as.bytes.data, blob, blob_size) == 0);
        VS_CHECK(!vs_changeset_next(&set, &change));
        vs_changeset_close(&set);
        free(data);
    } else {
        VS_CHECK(false);
    }
    vs_changeset_writer_destroy(&writer);
    free(blob);
}

static void test_wide_table(void)
{
    static char names[VS_MAX_COLUMNS][8];
    static const char *columns[VS_MAX_COLUMNS];
    for (int column = 0; column < VS_MAX_COLUMNS; column++) {
        snprintf(names[column], sizeof names[column], "c%d", column);
        columns[column] = names[column];
    }
    static const uint32_t pk[VS_MAX_PK_COLUMNS] = {1999, 0, 7, 3, 1000, 42, 5, 1};
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table;
    VS_CHECK(vs_changeset_writer_add_table(writer, "wide", "CREATE TABLE wide(...)", VS_MAX_COLUMNS,
                                           columns, VS_MAX_PK_COLUMNS, pk, &table) == VS_OK);
    static vs_value_t row[VS_MAX_COLUMNS];
    for (int column = 0; column < VS_MAX_COLUMNS; column++) {
        row[column] = column % 3 == 0   ? s_integer(column * 1000003LL)
                      : column % 3 == 1 ? s_textv(names[column], strlen(names[column]))
                                        : s_real(column / 7.0);
    }
    vs_value_t key[VS_MAX_PK_COLUMNS];
    for (int index = 0; index < VS_MAX_PK_COLUMNS; index++) {
        key[index] = row[pk[index]];
    }
    VS_CHECK(vs_changeset_writer_upsert(writer, table, VS_MAX_COLUMNS, row) == VS_OK);
    VS_CHECK(vs_changeset_writer_delete(writer, table, VS_MAX_PK_COLUMNS, key) == VS_OK);
    VS_CHECK(vs_changeset_writer_upsert(writer, table, VS_MAX_COLUMNS - 1, row) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_delete(writer, table, 1, key) == VS_EINVAL);
    uint8_t *data = NULL;
    size_t size = 0;
    VS_REQUIRE(s_finish(writer, 5, 9, 0, &data, &size));
    vs_changeset_writer_destroy(&writer);

    vs_changeset_t set;
    vs_change_t change;
    VS_CHECK(s_open(&set, data, size) == VS_OK);
    VS_CHECK(set.table_count == 1);
    VS_CHECK(set.tables[0].column_count == VS_MAX_COLUMNS);
    VS_CHECK(set.tables[0].pk_count == VS_MAX_PK_COLUMNS);
    int bad = 0;
    for (int column = 0; column < VS_MAX_COLUMNS; column++) {
        bad += !vs_bytes_equal(set.tables[0].columns[column], names[column]);
    }
    VS_CHECK(bad == 0);
    VS_CHECK(memcmp(set.tables[0].pk_columns, pk, sizeof pk) == 0);
    VS_CHECK(vs_changeset_next(&set, &change));
    VS_CHECK(change.op == VS_OP_UPSERT && change.value_count == VS_MAX_COLUMNS);
    for (int column = 0; column < VS_MAX_COLUMNS; column++) {
        bad += !s_value_same(&change.values[column], &row[column]);
    }
    VS_CHECK(bad == 0);
    VS_CHECK(vs_changeset_next(&set, &change));
    VS_CHECK(change.op == VS_OP_DELETE && change.value_count == VS_MAX_PK_COLUMNS);
    for (int index = 0; index < VS_MAX_PK_COLUMNS; index++) {
        bad += !s_value_same(&change.values[index], &key[index]);
    }
    VS_CHECK(bad == 0);
    VS_CHECK(!vs_changeset_next(&set, &change));
    vs_changeset_close(&set);
    free(data);
}

static void test_many_tables(void)
{
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    static const char *const columns[] = {"k", "v"};
    static const uint32_t pk[] = {0};
    char name[16];
    char sql[64];
    for (uint32_t index = 0; index < VS_MAX_TABLES; index++) {
        uint32_t table = UINT32_MAX;
        snprintf(name, sizeof name, "t%u", index);
        snprintf(sql, sizeof sql, "CREATE TABLE t%u(k PRIMARY KEY, v)", index);
        VS_CHECK(vs_changeset_writer_add_table(writer, name, sql, 2, columns, 1, pk, &table) ==
                 VS_OK);
        VS_CHECK(table == index);
    }
    uint32_t extra;
    VS_CHECK(vs_changeset_writer_add_table(writer, "one_more", "", 2, columns, 1, pk, &extra) ==
             VS_EMSGSIZE);
    /*  One change per table, in reverse order.                                                */
    for (uint32_t index = VS_MAX_TABLES; index-- > 0;) {
        vs_value_t row[2] = {s_integer(index), s_integer(-(int64_t) index)};
        VS_CHECK(vs_changeset_writer_upsert(writer, index, 2, row) == VS_OK);
    }
    vs_value_t row[2] = {s_integer(0), s_integer(0)};
    VS_CHECK(vs_changeset_writer_upsert(writer, VS_MAX_TABLES, 2, row) == VS_EINVAL);
    uint8_t *data = NULL;
    size_t size = 0;
    VS_REQUIRE(s_finish(writer, 1, 1, 0, &data, &size));
    vs_changeset_writer_destroy(&writer);
    vs_changeset_t set;
    vs_change_t change;
    VS_CHECK(s_open(&set, data, size) == VS_OK);
    VS_CHECK(set.table_count == VS_MAX_TABLES);
    VS_CHECK(set.change_count == VS_MAX_TABLES);
    int bad = 0;
    for (uint32_t index = 0; index < set.table_count; index++) {
        snprintf(name, sizeof name, "t%u", index);
        snprintf(sql, sizeof sql, "CREATE TABLE t%u(k PRIMARY KEY, v)", index);
        bad += !vs_bytes_equal(set.tables[index].name, name);
        bad += !vs_bytes_equal(set.tables[index].create_sql, sql);
        bad += set.tables[index].column_count != 2 || set.tables[index].pk_count != 1;
        bad += !vs_bytes_equal(set.tables[index].columns[1], "v");
    }
    uint32_t expected_table = VS_MAX_TABLES;
    while (vs_changeset_next(&set, &change)) {
        expected_table--;
        bad += change.table != expected_table || change.values[0].as.integer != expected_table;
    }
    VS_CHECK(expected_table == 0);
    VS_CHECK(bad == 0);
    vs_changeset_close(&set);
    free(data);
}

static void test_large_set(void)
{
    const uint64_t rows = 100000;
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t table;
    VS_REQUIRE(s_add_items(writer, &table) == VS_OK);
    vs_value_t values[6];
    char name[32];
    char note[64];
    for (uint64_t row = 0; row < rows; row++) {
        s_item_row(row, values, name, note);
        if (row % 10 == 9) {
            VS_CHECK(vs_changeset_writer_delete(writer, table, 1, values) == VS_OK);
        } else {
            VS_CHECK(vs_changeset_writer_upsert(writer, table, 6, values) == VS_OK);
        }
    }
    VS_CHECK(vs_changeset_writer_change_count(writer) == rows);
    uint8_t *data = NULL;
    size_t size = 0;
    VS_REQUIRE(s_finish(writer, 1000, 200000, VS_CHANGESET_CONSISTENT, &data, &size));
    VS_CHECK(size < VS_MAX_CHANGESET);

    /*  The writer is reusable after finish.                                                   */
    VS_CHECK(vs_changeset_writer_change_count(writer) == 0);
    VS_CHECK(s_add_items(writer, &table) == VS_OK);
    VS_CHECK(table == 0);
    vs_changeset_writer_destroy(&writer);

    vs_changeset_t set;
    vs_change_t change;
    VS_REQUIRE(s_open(&set, data, size) == VS_OK);
    VS_CHECK(set.change_count == rows);
    uint64_t row = 0;
    size_t bad = 0;
    while (vs_changeset_next(&set, &change)) {
        s_item_row(row, values, name, note);
        if (row % 10 == 9) {
            bad += change.op != VS_OP_DELETE || change.value_count != 1 ||
                   !s_value_same(&change.values[0], &values[0]);
        } else {
            bad += change.op != VS_OP_UPSERT || change.value_count != 6;
            for (int column = 0; column < 6 && change.value_count == 6; column++) {
                bad += !s_value_same(&change.values[column], &values[column]);
            }
        }
        row++;
    }
    VS_CHECK(row == rows);
    VS_CHECK(bad == 0);
    vs_changeset_close(&set);
    free(data);
}

static void test_writer_validation(void)
{
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    VS_REQUIRE(writer != NULL);
    static const char *const columns[] = {"a", "b", "c"};
    static const char *const bad_columns[] = {"a", "", "c"};
    static const char *const null_columns[] = {"a", NULL, "c"};
    const uint32_t pk[] = {0, 2};
    const uint32_t pk_out[] = {3};
    const uint32_t pk_twice[] = {1, 1};
    const uint32_t pk_nine[] = {0, 1, 2, 0, 1, 2, 0, 1, 2};
    uint32_t table;
    char long_name[VS_MAX_NAME + 2];
    memset(long_name, 'n', sizeof long_name);
    long_name[VS_MAX_NAME + 1] = '\0';
    char *long_sql = malloc(VS_MAX_SQL + 2);
    VS_REQUIRE(long_sql != NULL);
    memset(long_sql, 's', VS_MAX_SQL + 1);
    long_sql[VS_MAX_SQL + 1] = '\0';

    VS_CHECK(vs_changeset_writer_add_table(writer, NULL, "", 3, columns, 1, pk, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "", "", 3, columns, 1, pk, &table) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, long_name, "", 3, columns, 1, pk, &table) ==
             VS_EMSGSIZE);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", NULL, 3, columns, 1, pk, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", long_sql, 3, columns, 1, pk, &table) ==
             VS_EMSGSIZE);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 0, columns, 1, pk, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", VS_MAX_COLUMNS + 1, columns, 1, pk,
                                           &table) == VS_EMSGSIZE);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, bad_columns, 1, pk, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, null_columns, 1, pk, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 0, pk, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 9, pk_nine, &table) ==
             VS_EMSGSIZE);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 1, pk_out, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 2, pk_twice, &table) ==
             VS_EINVAL);
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 2, pk, NULL) == VS_EINVAL);
    /*  Nothing was added by the failures.                                                     */
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 2, pk, &table) == VS_OK);
    VS_CHECK(table == 0);
    long_name[VS_MAX_NAME] = '\0';
    VS_CHECK(vs_changeset_writer_add_table(writer, long_name, long_sql + 1, 3, columns, 2, pk,
                                           &table) == VS_OK);
    VS_CHECK(table == 1);
    free(long_sql);

    vs_value_t row[3] = {s_integer(1), s_null(), s_integer(2)};
    vs_value_t key[2] = {s_integer(1), s_integer(2)};
    VS_CHECK(vs_changeset_writer_upsert(writer, 2, 3, row) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 2, row) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, NULL) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_delete(writer, 0, 3, key) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_delete(writer, 5, 2, key) == VS_EINVAL);
    row[1].type = (vs_type_t) 0;
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, row) == VS_EINVAL);
    row[1].type = (vs_type_t) 6;
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, row) == VS_EINVAL);
    row[1] = s_textv(NULL, 3);
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, row) == VS_EINVAL);
    row[1] = s_blob("x", (size_t) VS_MAX_CHANGESET + 1);
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, row) == VS_EMSGSIZE);
    VS_CHECK(vs_changeset_writer_change_count(writer) == 0);
    row[1] = s_textv(NULL, 0);
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, row) == VS_OK);
    VS_CHECK(vs_changeset_writer_delete(writer, 0, 2, key) == VS_OK);
    VS_CHECK(vs_changeset_writer_change_count(writer) == 2);

    uint8_t *data = NULL;
    size_t size = 0;
    size_t before = vs_changeset_writer_size(writer);
    VS_CHECK(vs_changeset_writer_finish(writer, 0, 1, 0, &data, &size) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_finish(writer, 3, 2, 0, &data, &size) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_finish(writer, 1, 2, 2, &data, &size) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_finish(writer, 1, 2, 0, NULL, &size) == VS_EINVAL);
    VS_CHECK(data == NULL);
    /*  A failed finish keeps the writer's content.                                            */
    VS_CHECK(vs_changeset_writer_size(writer) == before);
    VS_CHECK(vs_changeset_writer_change_count(writer) == 2);
    VS_CHECK(vs_changeset_writer_finish(writer, UINT64_MAX, UINT64_MAX, 1, &data, &size) == VS_OK);
    vs_changeset_t set;
    VS_CHECK(s_open(&set, data, size) == VS_OK);
    VS_CHECK(set.first_version == UINT64_MAX && set.table_count == 2 && set.change_count == 2);
    VS_CHECK(set.tables[1].name.size == VS_MAX_NAME);
    VS_CHECK(set.tables[1].create_sql.size == VS_MAX_SQL);
    vs_changeset_close(&set);
    free(data);

    /*  reset forgets everything; an empty set is valid.                                       */
    VS_CHECK(vs_changeset_writer_add_table(writer, "t", "", 3, columns, 2, pk, &table) == VS_OK);
    vs_changeset_writer_reset(writer);
    VS_CHECK(vs_changeset_writer_change_count(writer) == 0);
    VS_CHECK(vs_changeset_writer_upsert(writer, 0, 3, row) == VS_EINVAL);
    VS_CHECK(vs_changeset_writer_finish(writer, 1, 1, 0, &data, &size) == VS_OK);
    VS_CHECK(size == 6 && memcmp(data, "\x95\x01\x01\x00\x90\x90", 6) == 0);
    VS_CHECK(s_open(&set, data, size) == VS_OK);
    VS_CHECK(set.table_count == 0 && set.change_count == 0 && set.tables == NULL);
    vs_change_t change;
    VS_CHECK(!vs_changeset_next(&set, &change));
    vs_changeset_close(&set);
    free(data);
    vs_changeset_writer_destroy(&writer);

    /*  NULL arguments are refused, never crash.                                               */
    VS_CHECK(vs_changeset_writer_size(NULL) == 0);
    VS_CHECK(vs_changeset_writer_change_count(NULL) == 0);
    VS_CHECK(vs_changeset_writer_upsert(NULL, 0, 3, row) == VS_EINVAL);
    vs_changeset_writer_reset(NULL);
    vs_changeset_writer_destroy(NULL);
    VS_CHECK(vs_changeset_open(NULL, "", 0, NULL) == VS_EINVAL);
    VS_CHECK(vs_changeset_open(&set, NULL, 3, NULL) == VS_EINVAL);
    VS_CHECK(!vs_changeset_next(NULL, &change));
}

/* ---------------------------------------------------------------------------------------------
    Command round trips                                                                        */

static void s_check_round_trip(const vs_msg_t *msg)
{
    uint8_t *data = NULL;
    size_t size = 0;
    vs_msg_t decoded;
    VS_REQUIRE(s_encode(msg, &data, &size));
    int rc = s_decode(&decoded, data, size);
    VS_CHECK(rc == VS_OK);
    if (rc != VS_OK) {
        free(data);
        return;
    }
    VS_CHECK(decoded.command == msg->command);
    VS_CHECK(decoded.request_id == msg->request_id);
    switch (msg->command) {
    case VS_CMD_PUBLISH:
        VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
        VS_CHECK(s_bytes_same(decoded.publisher, msg->publisher));
        VS_CHECK(s_bytes_same(decoded.changeset, msg->changeset));
        break;
    case VS_CMD_ACK:
        VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
        VS_CHECK(decoded.last_version == msg->last_version);
        VS_CHECK(decoded.seq == msg->seq);
        VS_CHECK(decoded.duplicate == msg->duplicate);
        break;
    case VS_CMD_FETCH:
        VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
        VS_CHECK(decoded.since == msg->since);
        VS_CHECK(decoded.max_bytes == msg->max_bytes);
        break;
    case VS_CMD_CHUNK:
        VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
        VS_CHECK(decoded.head == msg->head);
        VS_CHECK(s_bytes_same(decoded.hash, msg->hash));
        VS_REQUIRE(decoded.entry_count == msg->entry_count);
        for (size_t index = 0; index < msg->entry_count; index++) {
            VS_CHECK(decoded.entries[index].seq == msg->entries[index].seq);
            VS_CHECK(s_bytes_same(decoded.entries[index].hash, msg->entries[index].hash));
            VS_CHECK(s_bytes_same(decoded.entries[index].changeset, msg->entries[index].changeset));
        }
        break;
    case VS_CMD_STATUS: break;
    case VS_CMD_STATUS_REPLY:
        VS_REQUIRE(decoded.stream_count == msg->stream_count);
        for (size_t index = 0; index < msg->stream_count; index++) {
            const vs_stream_info_t *got = &decoded.streams[index];
            const vs_stream_info_t *want = &msg->streams[index];
            VS_CHECK(s_bytes_same(got->name, want->name));
            VS_CHECK(got->head == want->head);
            VS_CHECK(s_bytes_same(got->hash, want->hash));
            VS_REQUIRE(got->publisher_count == want->publisher_count);
            for (size_t publisher = 0; publisher < want->publisher_count; publisher++) {
                VS_CHECK(
                    s_bytes_same(got->publishers[publisher].id, want->publishers[publisher].id));
                VS_CHECK(got->publishers[publisher].last_version ==
                         want->publishers[publisher].last_version);
            }
        }
        break;
    case VS_CMD_ERROR:
        VS_CHECK(decoded.code == msg->code);
        VS_CHECK(s_bytes_same(decoded.reason, msg->reason));
        break;
    case VS_CMD_LIVE:
        VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
        VS_CHECK(decoded.seq == msg->seq);
        VS_CHECK(s_bytes_same(decoded.hash, msg->hash));
        VS_CHECK(s_bytes_same(decoded.changeset, msg->changeset));
        break;
    case VS_CMD_HEARTBEAT:
        VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
        VS_CHECK(decoded.head == msg->head);
        VS_CHECK(s_bytes_same(decoded.hash, msg->hash));
        break;
    }
    vs_msg_clear(&decoded);
    vs_msg_clear(&decoded);
    VS_CHECK(decoded.entries == NULL && decoded.streams == NULL);
    free(data);
}

/*  One valid message of each command, for the round trip, truncation and mutation tests.    */
static vs_entry_t s_sample_entries[3];
static vs_publisher_info_t s_sample_publishers[2];
static vs_stream_info_t s_sample_streams[2];
static const uint8_t s_tiny_set[] = {0x95, 0x01, 0x01, 0x00, 0x90, 0x90};

static vs_msg_t s_sample(vs_command_t command)
{
    vs_msg_t msg;
    memset(&msg, 0, sizeof msg);
    msg.command = command;
    msg.request_id = 0x123456789aULL;
    msg.stream = s_text("orders.eu-1_x");
    switch (command) {
    case VS_CMD_PUBLISH:
        msg.publisher = s_text("pub:host/1");
        msg.changeset = s_bytes(s_tiny_set, sizeof s_tiny_set);
        break;
    case VS_CMD_ACK:
        msg.last_version = UINT64_MAX;
        msg.seq = 300;
        msg.duplicate = true;
        break;
    case VS_CMD_FETCH:
        msg.since = 4294967296ULL;
        msg.max_bytes = 0;
        break;
    case VS_CMD_CHUNK:
        for (int index = 0; index < 3; index++) {
            s_sample_entries[index].seq = 41 + (uint64_t) index;
            s_sample_entries[index].hash =
                s_bytes(index == 1 ? s_zero_hash : s_hash_a, VS_HASH_SIZE);
            s_sample_entries[index].changeset = s_bytes(s_tiny_set, sizeof s_tiny_set);
        }
        msg.head = 43;
        msg.hash = s_bytes(s_hash_a, VS_HASH_SIZE);
        msg.entry_count = 3;
        msg.entries = s_sample_entries;
        break;
    case VS_CMD_STATUS: msg.stream = s_bytes(NULL, 0); break;
    case VS_CMD_STATUS_REPLY:
        msg.stream = s_bytes(NULL, 0);
        s_sample_publishers[0].id = s_text("alpha");
        s_sample_publishers[0].last_version = 7;
        s_sample_publishers[1].id = s_text("beta~!");
        s_sample_publishers[1].last_version = 1ULL << 40;
        s_sample_streams[0].name = s_text("orders");
        s_sample_streams[0].head = 12;
        s_sample_streams[0].hash = s_bytes(s_hash_a, VS_HASH_SIZE);
        s_sample_streams[0].publisher_count = 2;
        s_sample_streams[0].publishers = s_sample_publishers;
        s_sample_streams[1].name = s_text("empty");
        s_sample_streams[1].head = 0;
        s_sample_streams[1].hash = s_bytes(s_zero_hash, VS_HASH_SIZE);
        s_sample_streams[1].publisher_count = 0;
        s_sample_streams[1].publishers = NULL;
        msg.stream_count = 2;
        msg.streams = s_sample_streams;
        break;
    case VS_CMD_ERROR:
        msg.stream = s_bytes(NULL, 0);
        msg.code = VS_EBEHIND;
        msg.reason = s_text("the history ends before since=9");
        break;
    case VS_CMD_LIVE:
        msg.request_id = 0;
        msg.seq = 99;
        msg.hash = s_bytes(s_hash_a, VS_HASH_SIZE);
        msg.changeset = s_bytes(s_tiny_set, sizeof s_tiny_set);
        break;
    case VS_CMD_HEARTBEAT:
        msg.request_id = 0;
        msg.head = 65536;
        msg.hash = s_bytes(s_zero_hash, VS_HASH_SIZE);
        break;
    }
    return msg;
}

static void test_command_round_trip(void)
{
    for (int command = VS_CMD_PUBLISH; command <= VS_CMD_HEARTBEAT; command++) {
        vs_msg_t msg = s_sample((vs_command_t) command);
        s_check_round_trip(&msg);
        msg.request_id = UINT64_MAX;
        s_check_round_trip(&msg);
        msg.request_id = 0;
        s_check_round_trip(&msg);
    }
    /*  Edges: empty CHUNK, empty STATUS-REPLY, empty reason, a 1 MiB change set, limits.      */
    vs_msg_t msg = s_sample(VS_CMD_CHUNK);
    msg.entry_count = 0;
    msg.entries = NULL;
    s_check_round_trip(&msg);
    msg = s_sample(VS_CMD_STATUS_REPLY);
    msg.stream_count = 0;
    msg.streams = NULL;
    s_check_round_trip(&msg);
    msg = s_sample(VS_CMD_ERROR);
    msg.reason = s_bytes(NULL, 0);
    s_check_round_trip(&msg);
    static char reason[VS_MAX_REASON];
    memset(reason, 'r', sizeof reason);
    msg.reason = s_bytes(reason, VS_MAX_REASON);
    s_check_round_trip(&msg);
    msg = s_sample(VS_CMD_ACK);
    msg.duplicate = false;
    s_check_round_trip(&msg);
    static char stream[VS_MAX_STREAM_NAME];
    memset(stream, 'S', sizeof stream);
    msg.stream = s_bytes(stream, sizeof stream);
    s_check_round_trip(&msg);
    msg = s_sample(VS_CMD_PUBLISH);
    static char publisher[VS_MAX_PUBLISHER_ID];
    memset(publisher, '~', sizeof publisher);
    msg.publisher = s_bytes(publisher, sizeof publisher);
    size_t big = 1024 * 1024 + 3;
    char *changeset = malloc(big);
    VS_REQUIRE(changeset != NULL);
    memset(changeset, 0xab, big);
    msg.changeset = s_bytes(changeset, big);
    s_check_round_trip(&msg);
    free(changeset);
}

static void test_encode_validation(void)
{
    uint8_t *data = NULL;
    size_t size = 0;
    vs_msg_t msg = s_sample(VS_CMD_HEARTBEAT);
    msg.stream = s_text("bad/name");
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg.stream = s_bytes(NULL, 0);
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_HEARTBEAT);
    msg.hash = s_bytes(s_hash_a, 31);
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_PUBLISH);
    msg.publisher = s_text("has space");
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg.publisher = s_bytes(NULL, 0);
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_CHUNK);
    msg.entry_count = VS_MAX_CHUNK_ENTRIES + 1;
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_CHUNK);
    s_sample_entries[2].hash = s_bytes(s_hash_a, 33);
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_STATUS_REPLY);
    s_sample_publishers[1].id = s_bytes("a\x7f", 2);
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_STATUS_REPLY);
    s_sample_streams[1].name = s_text("");
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_ERROR);
    static char reason[VS_MAX_REASON + 1];
    msg.reason = s_bytes(reason, sizeof reason);
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg = s_sample(VS_CMD_STATUS);
    msg.command = (vs_command_t) 10;
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    msg.command = (vs_command_t) 0;
    VS_CHECK(vs_msg_encode(&msg, &data, &size) == VS_EINVAL);
    VS_CHECK(vs_msg_encode(NULL, &data, &size) == VS_EINVAL);
    VS_CHECK(data == NULL);
}

/* ---------------------------------------------------------------------------------------------
    Rejection of bad bytes                                                                     */

/*  Starts [1, command, request_id, ...] with count elements in all.                            */
static void s_msg_start(s_buf_t *buf, uint32_t count, uint64_t command, uint64_t request_id)
{
    s_mp_array(buf, count);
    s_mp_uint(buf, VS_PROTOCOL_VERSION);
    s_mp_uint(buf, command);
    s_mp_uint(buf, request_id);
}

static int s_decode_buf(const s_buf_t *buf)
{
    vs_msg_t msg;
    int rc = s_decode(&msg, buf->data, buf->size);
    if (rc == VS_OK) {
        vs_msg_clear(&msg);
    } else {
        VS_CHECK(msg.entries == NULL && msg.streams == NULL);
    }
    return rc;
}

/*  A HEARTBEAT with a custom stream and hash: [1, 9, 0, stream, 5, hash].                      */
static int s_heartbeat_with(const void *stream, size_t stream_size, size_t hash_size)
{
    s_buf_t buf = {0};
    uint8_t hash[64] = {0};
    s_msg_start(&buf, 6, VS_CMD_HEARTBEAT, 0);
    s_mp_str(&buf, stream, stream_size);
    s_mp_uint(&buf, 5);
    s_mp_bin(&buf, hash, hash_size);
    int rc = s_decode_buf(&buf);
    s_buf_free(&buf);
    return rc;
}

static void test_reject_messages(void)
{
    s_buf_t buf = {0};
    vs_msg_t msg;

    /*  Not even an array, an empty array, truncated headers, the 5-byte bomb.                 */
    VS_CHECK(s_decode(&msg, "", 0) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\x90", 1) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\x01", 1) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\xc1", 1) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\xdd\xff\xff\xff\xff", 5) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\xdc\xff\xff", 3) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\xdf\xff\xff\xff\xff", 5) == VS_EPROTO);
    VS_CHECK(s_decode(&msg, "\xdd\xff", 2) == VS_EPROTO);
    VS_CHECK(vs_msg_decode(NULL, "", 0, NULL) == VS_EINVAL);
    VS_CHECK(vs_msg_decode(&msg, NULL, 5, NULL) == VS_EINVAL);

    /*  Version: another number is VS_EVERSION, another type is VS_EPROTO.                     */
    s_mp_array(&buf, 3);
    s_mp_uint(&buf, 2);
    s_mp_uint(&buf, VS_CMD_STATUS);
    s_mp_uint(&buf, 1);
    VS_CHECK(s_decode_buf(&buf) == VS_EVERSION);
    buf.size = 0;
    s_mp_array(&buf, 1);
    s_mp_uint(&buf, 0);
    VS_CHECK(s_decode_buf(&buf) == VS_EVERSION);
    buf.size = 0;
    s_mp_array(&buf, 3);
    s_mp_cstr(&buf, "1");
    s_mp_uint(&buf, VS_CMD_STATUS);
    s_mp_uint(&buf, 1);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0;
    s_mp_array(&buf, 2);
    s_mp_uint(&buf, 1);
    s_mp_uint(&buf, VS_CMD_STATUS);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);

    /*  Unknown commands, with the request id kept for the ERROR reply.                        */
    uint64_t unknown[] = {0, 10, 255, UINT64_MAX};
    for (size_t index = 0; index < 4; index++) {
        buf.size = 0;
        s_msg_start(&buf, 4, unknown[index], 77);
        s_mp_cstr(&buf, "whatever");
        VS_CHECK(s_decode(&msg, buf.data, buf.size) == VS_ECOMMAND);
        VS_CHECK(msg.request_id == 77);
        VS_CHECK(msg.command == 0);
    }
    /*  A bad field keeps command and request id too.                                          */
    buf.size = 0;
    s_msg_start(&buf, 4, VS_CMD_FETCH, 78);
    s_mp_cstr(&buf, "s");
    VS_CHECK(s_decode(&msg, buf.data, buf.size) == VS_EPROTO);
    VS_CHECK(msg.request_id == 78 && msg.command == VS_CMD_FETCH);

    /*  Missing fields; STATUS with none is fine; a negative request id is not.                */
    buf.size = 0;
    s_msg_start(&buf, 5, VS_CMD_FETCH, 1);
    s_mp_cstr(&buf, "s");
    s_mp_uint(&buf, 3);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0;
    s_msg_start(&buf, 3, VS_CMD_STATUS, 1);
    VS_CHECK(s_decode_buf(&buf) == VS_OK);
    buf.size = 0;
    s_mp_array(&buf, 3);
    s_mp_uint(&buf, 1);
    s_mp_uint(&buf, VS_CMD_STATUS);
    s_buf_byte(&buf, 0xff); /* -1 */
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);

    /*  Integers in every format are accepted for uint fields, negative ones are not.          */
    buf.size = 0;
    s_msg_start(&buf, 6, VS_CMD_FETCH, 1);
    s_mp_cstr(&buf, "s");
    s_mp_int_sized(&buf, 5, 8); /* int64 holding 5 */
    s_buf_byte(&buf, 0xcf);     /* uint64 holding 7, not the smallest format */
    s_buf_be(&buf, 7, 8);
    VS_CHECK(s_decode(&msg, buf.data, buf.size) == VS_OK);
    VS_CHECK(msg.since == 5 && msg.max_bytes == 7);
    vs_msg_clear(&msg);
    buf.size = 0;
    s_msg_start(&buf, 6, VS_CMD_FETCH, 1);
    s_mp_cstr(&buf, "s");
    s_mp_int_sized(&buf, -5, 2);
    s_mp_uint(&buf, 0);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);

    /*  Wrong field types.                                                                     */
    buf.size = 0; /* stream as bin */
    s_msg_start(&buf, 6, VS_CMD_HEARTBEAT, 0);
    s_mp_bin(&buf, "orders", 6);
    s_mp_uint(&buf, 5);
    s_mp_bin(&buf, s_hash_a, 32);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0; /* head as str */
    s_msg_start(&buf, 6, VS_CMD_HEARTBEAT, 0);
    s_mp_cstr(&buf, "orders");
    s_mp_cstr(&buf, "5");
    s_mp_bin(&buf, s_hash_a, 32);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0; /* hash as str */
    s_msg_start(&buf, 6, VS_CMD_HEARTBEAT, 0);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 5);
    s_mp_str(&buf, s_hash_a, 32);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0; /* head as float */
    s_msg_start(&buf, 6, VS_CMD_HEARTBEAT, 0);
    s_mp_cstr(&buf, "orders");
    s_buf_put(&buf, "\xcb\x40\x14\x00\x00\x00\x00\x00\x00", 9);
    s_mp_bin(&buf, s_hash_a, 32);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0; /* duplicate as an integer */
    s_msg_start(&buf, 7, VS_CMD_ACK, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_uint(&buf, 1);
    s_mp_uint(&buf, 1);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0; /* changeset as str */
    s_msg_start(&buf, 6, VS_CMD_PUBLISH, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_cstr(&buf, "p");
    s_mp_str(&buf, s_tiny_set, sizeof s_tiny_set);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0; /* entries as a map */
    s_msg_start(&buf, 7, VS_CMD_CHUNK, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_map(&buf, 0);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);

    /*  Stream names, hash sizes, publisher ids, error fields.                                 */
    char name[VS_MAX_STREAM_NAME + 1];
    memset(name, 'n', sizeof name);
    VS_CHECK(s_heartbeat_with("orders", 6, 32) == VS_OK);
    VS_CHECK(s_heartbeat_with(name, VS_MAX_STREAM_NAME, 32) == VS_OK);
    VS_CHECK(s_heartbeat_with(name, VS_MAX_STREAM_NAME + 1, 32) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("", 0, 32) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("a/b", 3, 32) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("a\0b", 3, 32) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("\0", 1, 32) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("orders", 6, 31) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("orders", 6, 33) == VS_EPROTO);
    VS_CHECK(s_heartbeat_with("orders", 6, 0) == VS_EPROTO);
    const char *bad_publishers[] = {"",
                                    "a b",
                                    "tab\t",
                                    "\x7f",
                                    "caf\xc3\xa9",
                                    "12345678901234567890123456789012345678901234567890123456789"
                                    "012345"};
    for (size_t index = 0; index < sizeof bad_publishers / sizeof bad_publishers[0]; index++) {
        buf.size = 0;
        s_msg_start(&buf, 6, VS_CMD_PUBLISH, 1);
        s_mp_cstr(&buf, "orders");
        s_mp_cstr(&buf, bad_publishers[index]);
        s_mp_bin(&buf, s_tiny_set, sizeof s_tiny_set);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    }
    static char reason[VS_MAX_REASON + 1];
    memset(reason, 'r', sizeof reason);
    buf.size = 0;
    s_msg_start(&buf, 5, VS_CMD_ERROR, 1);
    s_mp_uint(&buf, VS_EPROTO);
    s_mp_str(&buf, reason, VS_MAX_REASON + 1);
    VS_CHECK(s_decode_buf(&buf) == VS_EMSGSIZE);
    buf.size = 0;
    s_msg_start(&buf, 5, VS_CMD_ERROR, 1);
    s_mp_uint(&buf, (uint64_t) UINT32_MAX + 1);
    s_mp_cstr(&buf, "x");
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);

    /*  Trailing garbage after the array; huge declared lengths in every field.                */
    buf.size = 0;
    s_msg_start(&buf, 3, VS_CMD_STATUS, 1);
    s_buf_byte(&buf, 0xc0);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    const uint8_t *bombs[] = {
        (const uint8_t *) "\xdb\xff\xff\xff\xff", (const uint8_t *) "\xc6\xff\xff\xff\xff",
        (const uint8_t *) "\xdd\xff\xff\xff\xff", (const uint8_t *) "\xdf\xff\xff\xff\xff",
        (const uint8_t *) "\xc9\xff\xff\xff\xff"};
    for (size_t index = 0; index < 5; index++) {
        /*  As the stream, as the change set, as a trailing element.                           */
        buf.size = 0;
        s_msg_start(&buf, 6, VS_CMD_PUBLISH, 1);
        s_buf_put(&buf, bombs[index], 5);
        s_buf_put(&buf, "abcdefgh", 8);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
        buf.size = 0;
        s_msg_start(&buf, 6, VS_CMD_PUBLISH, 1);
        s_mp_cstr(&buf, "orders");
        s_mp_cstr(&buf, "p");
        s_buf_put(&buf, bombs[index], 5);
        s_buf_put(&buf, "abcdefgh", 8);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
        buf.size = 0;
        s_msg_start(&buf, 4, VS_CMD_STATUS, 1);
        s_buf_put(&buf, bombs[index], 5);
        s_buf_put(&buf, "abcdefgh", 8);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
        /*  As the CHUNK entries and STATUS-REPLY streams arrays.                              */
        buf.size = 0;
        s_msg_start(&buf, 7, VS_CMD_CHUNK, 1);
        s_mp_cstr(&buf, "orders");
        s_mp_uint(&buf, 1);
        s_mp_bin(&buf, s_hash_a, 32);
        s_buf_put(&buf, bombs[index], 5);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
        buf.size = 0;
        s_msg_start(&buf, 4, VS_CMD_STATUS_REPLY, 1);
        s_buf_put(&buf, bombs[index], 5);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    }

    /*  Counts over their limits, though backed by enough bytes: VS_EMSGSIZE.                  */
    buf.size = 0;
    s_msg_start(&buf, 7, VS_CMD_CHUNK, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, VS_MAX_CHUNK_ENTRIES + 1);
    for (uint32_t index = 0; index <= VS_MAX_CHUNK_ENTRIES; index++) {
        s_mp_array(&buf, 3);
        s_mp_uint(&buf, 1);
        s_mp_bin(&buf, s_hash_a, 32);
        s_mp_bin(&buf, "", 0);
    }
    VS_CHECK(s_decode_buf(&buf) == VS_EMSGSIZE);
    /*  ... and a count backed by too few bytes per element: VS_EPROTO before allocating.      */
    buf.size = 0;
    s_msg_start(&buf, 7, VS_CMD_CHUNK, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, 60000);
    for (uint32_t index = 0; index < 60000; index++) {
        s_buf_byte(&buf, 0xc0);
    }
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0;
    s_msg_start(&buf, 4, VS_CMD_STATUS_REPLY, 1);
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 4);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, VS_MAX_STATUS_PUBLISHERS + 1);
    for (uint32_t index = 0; index <= VS_MAX_STATUS_PUBLISHERS; index++) {
        s_mp_array(&buf, 2);
        s_mp_cstr(&buf, "p");
        s_mp_uint(&buf, index);
    }
    VS_CHECK(s_decode_buf(&buf) == VS_EMSGSIZE);

    /*  Bad records inside CHUNK and STATUS-REPLY.                                             */
    buf.size = 0;
    s_msg_start(&buf, 7, VS_CMD_CHUNK, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, 2);
    s_mp_array(&buf, 3);
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_bin(&buf, s_tiny_set, 6);
    s_mp_array(&buf, 3);
    s_mp_uint(&buf, 2);
    s_mp_bin(&buf, s_hash_a, 16); /* short hash in the second entry */
    s_mp_bin(&buf, s_tiny_set, 6);
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    buf.size = 0;
    s_msg_start(&buf, 4, VS_CMD_STATUS_REPLY, 1);
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 4);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, 2);
    s_mp_array(&buf, 2);
    s_mp_cstr(&buf, "ok");
    s_mp_uint(&buf, 1);
    s_mp_array(&buf, 1); /* a publisher record without last_version */
    s_mp_cstr(&buf, "short");
    for (int pad = 0; pad < 8; pad++) {
        s_buf_byte(&buf, 0xc0);
    }
    VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    s_buf_free(&buf);
}

/*  [1, 5, 0, trailing], the trailing element nested depth arrays deep.                         */
static int s_status_with_nest(size_t depth, uint8_t container)
{
    s_buf_t buf = {0};
    s_msg_start(&buf, 4, VS_CMD_STATUS, 0);
    for (size_t level = 0; level < depth; level++) {
        s_buf_byte(&buf, container);
        if (container == 0x81) {
            s_buf_byte(&buf, 0x01); /* key; the value is the next level */
        }
    }
    s_buf_byte(&buf, 0xc0);
    int rc = s_decode_buf(&buf);
    s_buf_free(&buf);
    return rc;
}

/*  PUBLISH's optional acked field: encoded only when present, read back, and the message
    without it (every publisher before it) still decodes, with has_acked false.            */
static void test_publish_acked(void)
{
    vs_msg_t msg = s_sample(VS_CMD_PUBLISH);
    uint8_t *plain = NULL, *with = NULL;
    size_t plain_size = 0, with_size = 0;
    VS_REQUIRE(s_encode(&msg, &plain, &plain_size));
    msg.has_acked = true;
    msg.acked = UINT64_MAX - 1;
    VS_REQUIRE(s_encode(&msg, &with, &with_size));
    VS_CHECK(with_size == plain_size + 9);
    vs_msg_t decoded;
    VS_CHECK(s_decode(&decoded, plain, plain_size) == VS_OK);
    VS_CHECK(!decoded.has_acked && decoded.acked == 0);
    vs_msg_clear(&decoded);
    VS_CHECK(s_decode(&decoded, with, with_size) == VS_OK);
    VS_CHECK(decoded.has_acked && decoded.acked == UINT64_MAX - 1);
    VS_CHECK(vs_bytes_equal(decoded.publisher, "pub:host/1"));
    vs_msg_clear(&decoded);
    /*  acked of another type is refused; elements after it are skipped as always.           */
    uint8_t *bad = malloc(plain_size + 2);
    uint8_t *longer = malloc(with_size + 1);
    VS_REQUIRE(bad && longer && (plain[0] & 0xf0) == 0x90);
    memcpy(bad, plain, plain_size);
    bad[0]++;
    bad[plain_size] = 0xa1; /* "x" */
    bad[plain_size + 1] = 'x';
    VS_CHECK(s_decode(&decoded, bad, plain_size + 2) == VS_EPROTO);
    memcpy(longer, with, with_size);
    longer[0]++;
    longer[with_size] = 0xc0; /* nil */
    VS_CHECK(s_decode(&decoded, longer, with_size + 1) == VS_OK);
    VS_CHECK(decoded.has_acked && decoded.acked == UINT64_MAX - 1);
    vs_msg_clear(&decoded);
    free(bad);
    free(longer);
    free(plain);
    free(with);
}

static void test_trailing_elements(void)
{
    /*  Known fields, then unknown ones of every type: accepted and skipped.                   */
    s_buf_t buf = {0};
    s_msg_start(&buf, 18, VS_CMD_HEARTBEAT, 0);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1000);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_map(&buf, 2); /* {1: [nil, true], "k": {}} */
    s_mp_uint(&buf, 1);
    s_mp_array(&buf, 2);
    s_buf_byte(&buf, 0xc0);
    s_buf_byte(&buf, 0xc3);
    s_mp_cstr(&buf, "k");
    s_mp_map(&buf, 0);
    s_buf_put(&buf, "\xd4\x01\x02", 3); /* fixext 1 */
    s_buf_put(&buf, "\xd8\x05", 2);     /* fixext 16 */
    s_buf_put(&buf, "0123456789abcdef", 16);
    s_buf_put(&buf, "\xc7\x02\x07\xaa\xbb", 5);     /* ext 8 */
    s_buf_put(&buf, "\xc8\x00\x01\x07\xaa", 5);     /* ext 16 */
    s_buf_put(&buf, "\xc9\x00\x00\x00\x00\x07", 6); /* ext 32, empty */
    s_buf_put(&buf, "\xca\x3f\x80\x00\x00", 5);     /* float32 */
    s_buf_put(&buf, "\xd3\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    s_buf_put(&buf, "\xde\x00\x01\xa1x\xc2", 6); /* map16 */
    s_buf_put(&buf, "\xdc\x00\x01\xe0", 4);      /* array16 [-32] */
    s_mp_str(&buf, "future", 6);
    s_buf_put(&buf, "\xda\x00\x01z", 4); /* str16 */
    vs_msg_t msg;
    VS_CHECK(s_decode(&msg, buf.data, buf.size) == VS_OK);
    VS_CHECK(msg.command == VS_CMD_HEARTBEAT && msg.head == 1000);
    VS_CHECK(vs_bytes_equal(msg.stream, "orders"));
    vs_msg_clear(&msg);

    /*  Unknown trailing elements inside entries and status records.                           */
    buf.size = 0;
    s_msg_start(&buf, 7, VS_CMD_CHUNK, 1);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 5);
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_bin(&buf, s_tiny_set, 6);
    s_mp_cstr(&buf, "extra");
    s_mp_map(&buf, 1);
    s_mp_uint(&buf, 1);
    s_mp_uint(&buf, 2);
    VS_CHECK(s_decode(&msg, buf.data, buf.size) == VS_OK);
    VS_CHECK(msg.entry_count == 1 && msg.entries[0].seq == 1);
    VS_CHECK(s_bytes_same(msg.entries[0].changeset, s_bytes(s_tiny_set, 6)));
    vs_msg_clear(&msg);
    buf.size = 0;
    s_msg_start(&buf, 4, VS_CMD_STATUS_REPLY, 1);
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 5);
    s_mp_cstr(&buf, "orders");
    s_mp_uint(&buf, 1);
    s_mp_bin(&buf, s_hash_a, 32);
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 3);
    s_mp_cstr(&buf, "pub");
    s_mp_uint(&buf, 9);
    s_buf_byte(&buf, 0xc0);
    s_mp_cstr(&buf, "extra");
    VS_CHECK(s_decode(&msg, buf.data, buf.size) == VS_OK);
    VS_CHECK(msg.stream_count == 1 && msg.streams[0].publisher_count == 1);
    VS_CHECK(msg.streams[0].publishers[0].last_version == 9);
    vs_msg_clear(&msg);

    /*  A malformed trailing element is an error: reserved byte, truncated ext, bad map.       */
    const char *bad[] = {"\xc1", "\xc7\x05\x01", "\xd8\x01", "\x82\x01", "\xca\x00"};
    const size_t bad_sizes[] = {1, 3, 2, 2, 2};
    for (size_t index = 0; index < 5; index++) {
        buf.size = 0;
        s_msg_start(&buf, 4, VS_CMD_STATUS, 1);
        s_buf_put(&buf, bad[index], bad_sizes[index]);
        VS_CHECK(s_decode_buf(&buf) == VS_EPROTO);
    }
    s_buf_free(&buf);

    /*  Nesting: moderate depth is fine, deep nests are refused without recursing into them.   */
    VS_CHECK(s_status_with_nest(20, 0x91) == VS_OK);
    VS_CHECK(s_status_with_nest(20, 0x81) == VS_OK);
    VS_CHECK(s_status_with_nest(40, 0x91) == VS_EPROTO);
    VS_CHECK(s_status_with_nest(40, 0x81) == VS_EPROTO);
    VS_CHECK(s_status_with_nest(1000000, 0x91) == VS_EPROTO);
    VS_CHECK(s_status_with_nest(1000000, 0x81) == VS_EPROTO);
}

/*  Every proper prefix of data must be refused, and no decode may crash.                      */
static size_t s_prefix_accepted(const uint8_t *data, size_t size, bool changeset)
{
    size_t accepted = 0;
    for (size_t length = 0; length < size; length++) {
        /*  A fresh copy of exactly length bytes, so ASan sees any read past it.               */
        uint8_t *copy = malloc(length ? length : 1);
        if (copy == NULL) {
            return size;
        }
        if (length > 0) {
            memcpy(copy, data, length);
        }
        if (changeset) {
            vs_changeset_t set;
            int rc = vs_changeset_open(&set, copy, length, NULL);
            if (rc == VS_OK) {
                accepted++;
                vs_changeset_close(&set);
            }
            /*  Every truncation: the incremental open refuses too, while reading the changes. */
            accepted += (s_open_incremental_all(copy, length) == VS_OK) != (rc == VS_OK);
        } else {
            vs_msg_t msg;
            if (vs_msg_decode(&msg, copy, length, NULL) == VS_OK) {
                accepted++;
                vs_msg_clear(&msg);
            }
        }
        free(copy);
    }
    return accepted;
}

/*  A small change set with two tables, upserts and deletes of every type.                     */
static bool s_sample_set(uint8_t **data, size_t *size)
{
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    uint32_t items;
    uint32_t pairs;
    static const char *const columns[] = {"a", "b"};
    static const uint32_t pk[] = {1, 0};
    bool ok = writer != NULL && s_add_items(writer, &items) == VS_OK &&
              vs_changeset_writer_add_table(writer, "pairs", "CREATE TABLE pairs(a, b)", 2, columns,
                                            2, pk, &pairs) == VS_OK;
    char name[32];
    char note[64];
    vs_value_t values[6];
    for (uint64_t row = 0; ok && row < 4; row++) {
        s_item_row(row * 1000, values, name, note);
        ok = vs_changeset_writer_upsert(writer, items, 6, values) == VS_OK;
    }
    vs_value_t pair[2] = {s_blob("\x00\x01", 2), s_integer(-70000)};
    ok = ok && vs_changeset_writer_upsert(writer, pairs, 2, pair) == VS_OK;
    ok = ok && vs_changeset_writer_delete(writer, pairs, 2, pair) == VS_OK;
    ok = ok && vs_changeset_writer_delete(writer, items, 1, values) == VS_OK;
    ok = ok && s_finish(writer, 3, 9, VS_CHANGESET_CONSISTENT, data, size);
    vs_changeset_writer_destroy(&writer);
    return ok;
}

static void test_reject_truncations(void)
{
    for (int command = VS_CMD_PUBLISH; command <= VS_CMD_HEARTBEAT; command++) {
        vs_msg_t msg = s_sample((vs_command_t) command);
        uint8_t *data = NULL;
        size_t size = 0;
        VS_REQUIRE(s_encode(&msg, &data, &size));
        VS_CHECK(s_prefix_accepted(data, size, false) == 0);
        /*  One byte more is trailing garbage.                                                 */
        uint8_t *longer = malloc(size + 1);
        VS_REQUIRE(longer != NULL);
        memcpy(longer, data, size);
        longer[size] = 0x00;
        VS_CHECK(s_decode(&msg, longer, size + 1) == VS_EPROTO);
        free(longer);
        free(data);
    }
    uint8_t *data = NULL;
    size_t size = 0;
    VS_REQUIRE(s_sample_set(&data, &size));
    VS_CHECK(s_prefix_accepted(data, size, true) == 0);
    uint8_t *longer = malloc(size + 1);
    VS_REQUIRE(longer != NULL);
    memcpy(longer, data, size);
    longer[size] = 0xc0;
    vs_changeset_t set;
    VS_CHECK(s_open(&set, longer, size + 1) == VS_EPROTO);
    VS_CHECK(s_open(&set, data, size) == VS_OK);
    vs_changeset_close(&set);
    free(longer);
    free(data);
}

/* ---------------------------------------------------------------------------------------------
    Rejection of bad change sets, crafted by hand                                              */

/*  Parts of a crafted set; each test changes one of them.                                    */
typedef struct {
    uint64_t first;
    uint64_t last;
    uint64_t flags;
    uint64_t pk_index[2];
    uint32_t pk_count;
    uint64_t table;             /* of the change */
    uint64_t op;                /* of the change */
    uint32_t values;            /* count of the change's values */
    const uint8_t *value_bytes; /* replaces the first value when not NULL */
    size_t value_size;
} s_craft_t;

static s_craft_t s_craft_default(void)
{
    s_craft_t craft = {.first = 1,
                       .last = 2,
                       .flags = 1,
                       .pk_index = {0, 1},
                       .pk_count = 1,
                       .table = 0,
                       .op = 1,
                       .values = 3};
    return craft;
}

/*  [first, last, flags, [["t", "sql", ["a","b","c"], pk]], [[table, op, [values...]]]]        */
static int s_craft_open(const s_craft_t *craft)
{
    s_buf_t buf = {0};
    s_mp_array(&buf, 5);
    s_mp_uint(&buf, craft->first);
    s_mp_uint(&buf, craft->last);
    s_mp_uint(&buf, craft->flags);
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 4);
    s_mp_cstr(&buf, "t");
    s_mp_cstr(&buf, "CREATE TABLE t(a, b, c, PRIMARY KEY(a))");
    s_mp_array(&buf, 3);
    s_mp_cstr(&buf, "a");
    s_mp_cstr(&buf, "b");
    s_mp_cstr(&buf, "c");
    s_mp_array(&buf, craft->pk_count);
    for (uint32_t key = 0; key < craft->pk_count; key++) {
        s_mp_uint(&buf, craft->pk_index[key]);
    }
    s_mp_array(&buf, 1);
    s_mp_array(&buf, 3);
    s_mp_uint(&buf, craft->table);
    s_mp_uint(&buf, craft->op);
    s_mp_array(&buf, craft->values);
    for (uint32_t value = 0; value < craft->values; value++) {
        if (value == 0 && craft->value_bytes) {
            s_buf_put(&buf, craft->value_bytes, craft->value_size);
        } else {
            s_mp_uint(&buf, value);
        }
    }
    vs_changeset_t set;
    int rc = s_open(&set, buf.data, buf.size);
    if (rc == VS_OK) {
        vs_change_t change;
        VS_CHECK(vs_changeset_next(&set, &change));
        VS_CHECK(change.value_count == craft->values);
        vs_changeset_close(&set);
    }
    s_buf_free(&buf);
    return rc;
}

/*  A set whose first table is given raw (bytes after the tables array header of 1).          */
static int s_open_with_table(const s_buf_t *table)
{
    s_buf_t buf = {0};
    s_buf_put(&buf, "\x95\x01\x01\x00\x91", 5);
    s_buf_put(&buf, table->data, table->size);
    s_mp_array(&buf, 0);
    vs_changeset_t set;
    int rc = s_open(&set, buf.data, buf.size);
    if (rc == VS_OK) {
        vs_changeset_close(&set);
    }
    s_buf_free(&buf);
    return rc;
}

static void test_reject_changesets(void)
{
    s_craft_t craft = s_craft_default();
    VS_CHECK(s_craft_open(&craft) == VS_OK);
    craft.first = 0;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft = s_craft_default();
    craft.first = 3;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.last = 3;
    VS_CHECK(s_craft_open(&craft) == VS_OK);
    craft = s_craft_default();
    craft.flags = 2;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.flags = 1ULL << 40;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.flags = 0;
    VS_CHECK(s_craft_open(&craft) == VS_OK);
    craft = s_craft_default();
    craft.pk_index[0] = 3;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft = s_craft_default();
    craft.pk_count = 2;
    craft.pk_index[1] = 0;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.pk_index[1] = 2;
    VS_CHECK(s_craft_open(&craft) == VS_OK);
    craft = s_craft_default();
    craft.pk_count = 0;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft = s_craft_default();
    craft.values = 2;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.values = 4;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.op = 2;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.values = 1;
    VS_CHECK(s_craft_open(&craft) == VS_OK);
    craft = s_craft_default();
    craft.table = 1;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.table = UINT64_MAX;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft = s_craft_default();
    craft.op = 3;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);
    craft.op = 0;
    VS_CHECK(s_craft_open(&craft) == VS_EPROTO);

    /*  Values: every accepted format, and the refused ones.                                   */
    static const struct {
        const char *bytes;
        size_t size;
        int rc;
    } values[] = {
        {"\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9, VS_EPROTO}, /* uint64 2^63 */
        {"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, VS_EPROTO}, /* uint64 2^64-1 */
        {"\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9, VS_OK},     /* uint64 INT64_MAX */
        {"\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9, VS_OK},     /* int64 INT64_MIN */
        {"\xd0\x80", 2, VS_OK},
        {"\xd1\x80\x00", 3, VS_OK},
        {"\xd2\x80\x00\x00\x00", 5, VS_OK},
        {"\xcc\xff", 2, VS_OK},
        {"\xcd\xff\xff", 3, VS_OK},
        {"\xce\xff\xff\xff\xff", 5, VS_OK},
        {"\xca\x3f\xc0\x00\x00", 5, VS_OK}, /* float32 1.5 */
        {"\xc0", 1, VS_OK},
        {"\xd9\x01x", 3, VS_OK},
        {"\xda\x00\x01x", 4, VS_OK},
        {"\xdb\x00\x00\x00\x01x", 6, VS_OK},
        {"\xc5\x00\x01x", 4, VS_OK},
        {"\xc6\x00\x00\x00\x01x", 6, VS_OK},
        {"\xc2", 1, VS_EPROTO},         /* false */
        {"\xc3", 1, VS_EPROTO},         /* true */
        {"\x90", 1, VS_EPROTO},         /* array */
        {"\x80", 1, VS_EPROTO},         /* map */
        {"\xd4\x01\x01", 3, VS_EPROTO}, /* fixext */
        {"\xc7\x00\x01", 3, VS_EPROTO}, /* ext8 */
        {"\xc1", 1, VS_EPROTO},
        {"\xdb\xff\xff\xff\xff", 5, VS_EPROTO},
        {"\xc6\xff\xff\xff\xff", 5, VS_EPROTO},
    };
    for (size_t index = 0; index < sizeof values / sizeof values[0]; index++) {
        craft = s_craft_default();
        craft.value_bytes = (const uint8_t *) values[index].bytes;
        craft.value_size = values[index].size;
        int rc = s_craft_open(&craft);
        if (rc != values[index].rc) {
            fprintf(stderr, "  value %zu: got %d\n", index, rc);
        }
        VS_CHECK(rc == values[index].rc);
    }

    /*  A float32 widens exactly.                                                              */
    {
        s_buf_t buf = {0};
        s_buf_put(&buf,
                  "\x95\x01\x01\x00\x91\x94\xa1t\xa0\x91\xa1"
                  "a\x91\x00\x91\x93\x00\x01\x91"
                  "\xca\x3f\xc0\x00\x00",
                  24);
        vs_changeset_t set;
        vs_change_t change;
        VS_CHECK(s_open(&set, buf.data, buf.size) == VS_OK);
        VS_CHECK(vs_changeset_next(&set, &change));
        VS_CHECK(change.values[0].type == VS_REAL && change.values[0].as.real == 1.5);
        vs_changeset_close(&set);
        s_buf_free(&buf);
    }

    /*  Tables: names, sql, columns, pk, extra elements.                                       */
    s_buf_t table = {0};
    char long_name[VS_MAX_NAME + 1];
    memset(long_name, 'x', sizeof long_name);
    const struct {
        const char *name;
        size_t name_size;
        int rc;
    } names[] = {{"ok", 2, VS_OK},
                 {"", 0, VS_EPROTO},
                 {"a\0b", 3, VS_EPROTO},
                 {long_name, VS_MAX_NAME, VS_OK},
                 {long_name, VS_MAX_NAME + 1, VS_EMSGSIZE}};
    for (size_t index = 0; index < 5; index++) {
        /*  As the table name, then as a column name.                                          */
        for (int as_column = 0; as_column < 2; as_column++) {
            table.size = 0;
            s_mp_array(&table, 4);
            if (as_column) {
                s_mp_cstr(&table, "t");
            } else {
                s_mp_str(&table, names[index].name, names[index].name_size);
            }
            s_mp_cstr(&table, "");
            s_mp_array(&table, 2);
            s_mp_cstr(&table, "k");
            if (as_column) {
                s_mp_str(&table, names[index].name, names[index].name_size);
            } else {
                s_mp_cstr(&table, "v");
            }
            s_mp_array(&table, 1);
            s_mp_uint(&table, 0);
            VS_CHECK(s_open_with_table(&table) == names[index].rc);
        }
    }
    table.size = 0; /* name as bin */
    s_buf_put(&table, "\x94\xc4\x01t\xa0\x91\xa1k\x91\x00", 11);
    VS_CHECK(s_open_with_table(&table) == VS_EPROTO);
    table.size = 0; /* five elements */
    s_buf_put(&table, "\x95\xa1t\xa0\x91\xa1k\x91\x00\xc0", 11);
    VS_CHECK(s_open_with_table(&table) == VS_EPROTO);
    table.size = 0; /* three elements */
    s_buf_put(&table, "\x93\xa1t\xa0\x91\xa1k", 7);
    VS_CHECK(s_open_with_table(&table) == VS_EPROTO);
    table.size = 0; /* no column */
    s_buf_put(&table, "\x94\xa1t\xa0\x90\x91\x00", 7);
    VS_CHECK(s_open_with_table(&table) == VS_EPROTO);
    table.size = 0; /* negative pk index */
    s_buf_put(&table, "\x94\xa1t\xa0\x91\xa1k\x91\xff", 9);
    VS_CHECK(s_open_with_table(&table) == VS_EPROTO);
    char *sql = malloc(VS_MAX_SQL + 1);
    VS_REQUIRE(sql != NULL);
    memset(sql, 's', VS_MAX_SQL + 1);
    for (int over = 0; over < 2; over++) {
        table.size = 0;
        s_mp_array(&table, 4);
        s_mp_cstr(&table, "t");
        s_mp_str(&table, sql, VS_MAX_SQL + (size_t) over);
        s_buf_put(&table, "\x91\xa1k\x91\x00", 5);
        VS_CHECK(s_open_with_table(&table) == (over ? VS_EMSGSIZE : VS_OK));
    }
    free(sql);
    for (int over = 0; over < 2; over++) {
        table.size = 0;
        s_mp_array(&table, 4);
        s_mp_cstr(&table, "t");
        s_mp_cstr(&table, "");
        s_mp_array(&table, VS_MAX_COLUMNS + (uint32_t) over);
        for (int column = 0; column < VS_MAX_COLUMNS + over; column++) {
            char name[16];
            snprintf(name, sizeof name, "c%d", column);
            s_mp_cstr(&table, name);
        }
        s_buf_put(&table, "\x91\x00", 2);
        VS_CHECK(s_open_with_table(&table) == (over ? VS_EMSGSIZE : VS_OK));
    }
    table.size = 0; /* nine pk columns */
    s_buf_put(&table,
              "\x94\xa1t\xa0\x9a\xa1"
              "a\xa1"
              "b\xa1"
              "c\xa1"
              "d\xa1"
              "e\xa1"
              "f\xa1"
              "g\xa1"
              "h\xa1"
              "i\xa1"
              "j\x99\x00\x01\x02\x03\x04\x05\x06\x07\x08",
              35);
    VS_CHECK(s_open_with_table(&table) == VS_EMSGSIZE);
    table.data[25] = 0x98; /* eight of them */
    table.size--;
    VS_CHECK(s_open_with_table(&table) == VS_OK);
    s_buf_free(&table);

    /*  The envelope: not five elements, over 1024 tables, bombs, over 64 MiB, trailing bytes.  */
    vs_changeset_t set;
    VS_CHECK(s_open(&set, "\x94\x01\x01\x00\x90", 5) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\x96\x01\x01\x00\x90\x90\xc0", 7) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\x95\x01\x01\x00\x90\x90\xc0", 7) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\x95\x01\x01\x00\x90\x80", 6) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\x95\xff\x01\x00\x90\x90", 6) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\xdd\xff\xff\xff\xff", 5) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\x95\x01\x01\x00\xdd\xff\xff\xff\xff", 9) == VS_EPROTO);
    VS_CHECK(s_open(&set, "\x95\x01\x01\x00\x90\xdd\xff\xff\xff\xff", 10) == VS_EPROTO);
    VS_CHECK(s_open(&set, "", 0) == VS_EPROTO);
    s_buf_t many = {0};
    s_buf_put(&many, "\x95\x01\x01\x00", 4);
    s_mp_array(&many, VS_MAX_TABLES + 1);
    for (int pad = 0; pad < 4 * (VS_MAX_TABLES + 1); pad++) {
        s_buf_byte(&many, 0xc0);
    }
    VS_CHECK(s_open(&set, many.data, many.size) == VS_EMSGSIZE);
    s_buf_free(&many);
    uint8_t *huge = calloc(1, (size_t) VS_MAX_CHANGESET + 1);
    VS_REQUIRE(huge != NULL);
    VS_CHECK(s_open(&set, huge, (size_t) VS_MAX_CHANGESET + 1) == VS_EMSGSIZE);
    free(huge);

    /*  A failed open needs no close; close after it is still safe.                            */
    vs_changeset_close(&set);
}

/* ---------------------------------------------------------------------------------------------
    Random mutations                                                                           */

/*  Checks what a successful decode produced: consistent counts, valid names and values.       */
static size_t s_check_decoded_set(const void *data, size_t size)
{
    vs_changeset_t set;
    vs_change_t change;
    size_t bad = 0;
    if (vs_changeset_open(&set, data, size, NULL) != VS_OK) {
        return 0;
    }
    bad += set.first_version < 1 || set.first_version > set.last_version;
    bad += (set.flags & ~VS_CHANGESET_KNOWN_FLAGS) != 0;
    for (uint32_t table = 0; table < set.table_count; table++) {
        const vs_table_t *info = &set.tables[table];
        bad += info->column_count < 1 || info->column_count > VS_MAX_COLUMNS;
        bad += info->pk_count < 1 || info->pk_count > VS_MAX_PK_COLUMNS;
        for (uint32_t key = 0; key < info->pk_count; key++) {
            bad += info->pk_columns[key] >= info->column_count;
        }
    }
    size_t seen = 0;
    while (vs_changeset_next(&set, &change)) {
        const vs_table_t *info = &set.tables[change.table];
        bad +=
            change.value_count != (change.op == VS_OP_UPSERT ? info->column_count : info->pk_count);
        for (uint32_t index = 0; index < change.value_count; index++) {
            bad += change.values[index].type < VS_INTEGER || change.values[index].type > VS_NULL;
        }
        seen++;
    }
    bad += seen != set.change_count;
    vs_changeset_close(&set);
    return bad;
}

static size_t s_check_decoded_msg(const vs_msg_t *msg)
{
    /*  A message that decoded must encode again and decode to the same bytes.                 */
    uint8_t *data = NULL;
    size_t size = 0;
    size_t bad = 0;
    if (vs_msg_encode(msg, &data, &size) != VS_OK) {
        return 1;
    }
    vs_msg_t again;
    if (vs_msg_decode(&again, data, size, NULL) != VS_OK) {
        bad++;
    } else {
        uint8_t *data2 = NULL;
        size_t size2 = 0;
        bad += vs_msg_encode(&again, &data2, &size2) != VS_OK || size2 != size ||
               memcmp(data, data2, size) != 0;
        free(data2);
        vs_msg_clear(&again);
    }
    if (msg->command == VS_CMD_PUBLISH || msg->command == VS_CMD_LIVE) {
        bad += s_check_decoded_set(msg->changeset.data, msg->changeset.size);
    }
    for (size_t index = 0; index < msg->entry_count; index++) {
        bad += msg->entries[index].hash.size != VS_HASH_SIZE;
        bad += s_check_decoded_set(msg->entries[index].changeset.data,
                                   msg->entries[index].changeset.size);
    }
    for (size_t index = 0; index < msg->stream_count; index++) {
        bad += !vs_stream_name_valid(msg->streams[index].name.data, msg->streams[index].name.size);
    }
    free(data);
    return bad;
}

static void test_mutations(void)
{
    enum { SEEDS = VS_CMD_HEARTBEAT + 2, ROUNDS = 20000 };
    uint8_t *seeds[SEEDS];
    size_t seed_sizes[SEEDS];
    for (int command = VS_CMD_PUBLISH; command <= VS_CMD_HEARTBEAT; command++) {
        vs_msg_t msg = s_sample((vs_command_t) command);
        VS_REQUIRE(s_encode(&msg, &seeds[command - 1], &seed_sizes[command - 1]));
    }
    VS_REQUIRE(s_sample_set(&seeds[SEEDS - 2], &seed_sizes[SEEDS - 2]));
    /*  A PUBLISH carrying the sample set, so mutations reach a nested set too.                */
    {
        vs_msg_t msg = s_sample(VS_CMD_PUBLISH);
        msg.changeset = s_bytes(seeds[SEEDS - 2], seed_sizes[SEEDS - 2]);
        VS_REQUIRE(s_encode(&msg, &seeds[SEEDS - 1], &seed_sizes[SEEDS - 1]));
    }
    static const uint8_t interesting[] = {
        0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc6,
        0xc9, 0xca, 0xcb, 0xcf, 0xd3, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};
    s_random_state = 20240501;
    size_t decoded_ok = 0;
    size_t sets_ok = 0;
    size_t bad = 0;
    size_t odd_codes = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int seed = (int) (s_random() % SEEDS);
        size_t size = seed_sizes[seed];
        uint8_t *data = malloc(size + 8);
        VS_REQUIRE(data != NULL);
        memcpy(data, seeds[seed], size);
        int mutations = 1 + (int) (s_random() % 4);
        for (int mutation = 0; mutation < mutations; mutation++) {
            size_t at = size ? (size_t) (s_random() % size) : 0;
            switch (s_random() % 6) {
            case 0: /* flip bits */
                if (size) {
                    data[at] ^= (uint8_t) (1u << (s_random() % 8));
                }
                break;
            case 1: /* an interesting byte */
                if (size) {
                    data[at] = interesting[s_random() % sizeof interesting];
                }
                break;
            case 2: /* a random byte */
                if (size) {
                    data[at] = (uint8_t) s_random();
                }
                break;
            case 3: /* insert a byte */
                if (size < seed_sizes[seed] + 8) {
                    memmove(data + at + 1, data + at, size - at);
                    data[at] = (uint8_t) s_random();
                    size++;
                }
                break;
            case 4: /* delete a byte */
                if (size) {
                    memmove(data + at, data + at + 1, size - at - 1);
                    size--;
                }
                break;
            default: /* truncate */ size = at; break;
            }
        }
        /*  Exactly size bytes, so ASan sees any read past the end.                            */
        uint8_t *exact = malloc(size ? size : 1);
        VS_REQUIRE(exact != NULL);
        memcpy(exact, data, size);
        free(data);
        vs_msg_t msg;
        int rc = vs_msg_decode(&msg, exact, size, NULL);
        if (rc == VS_OK) {
            decoded_ok++;
            bad += s_check_decoded_msg(&msg);
            vs_msg_clear(&msg);
        } else {
            odd_codes +=
                rc != VS_EPROTO && rc != VS_EMSGSIZE && rc != VS_EVERSION && rc != VS_ECOMMAND;
            bad += msg.entries != NULL || msg.streams != NULL;
        }
        vs_changeset_t set;
        rc = vs_changeset_open(&set, exact, size, NULL);
        /*  The incremental open, reading every change, accepts exactly the same sets.        */
        int incremental = s_open_incremental_all(exact, size);
        bad += (incremental == VS_OK) != (rc == VS_OK);
        odd_codes += incremental != VS_OK && incremental != VS_EPROTO && incremental != VS_EMSGSIZE;
        if (rc == VS_OK) {
            sets_ok++;
            vs_changeset_close(&set);
            bad += s_check_decoded_set(exact, size);
        } else {
            odd_codes += rc != VS_EPROTO && rc != VS_EMSGSIZE;
        }
        free(exact);
    }
    fprintf(stderr, "  %d mutations: %zu decoded as messages, %zu as change sets\n", ROUNDS,
            decoded_ok, sets_ok);
    VS_CHECK(bad == 0);
    VS_CHECK(odd_codes == 0);
    /*  The loop exercised both outcomes.                                                      */
    VS_CHECK(decoded_ok > 0 && decoded_ok < ROUNDS);
    for (int seed = 0; seed < SEEDS; seed++) {
        free(seeds[seed]);
    }
}

/* ---------------------------------------------------------------------------------------------
    Golden vectors                                                                             */

/*  Reads a vector file: hex digits, whitespace, '#' comments to the end of the line.          */
static bool s_read_vector(const char *name, s_buf_t *out)
{
    char path[4096 + 256];
    const char *folder = getenv("VS_VECTORS");
    char source_folder[4096];
    if (folder == NULL || folder[0] == '\0') {
        snprintf(source_folder, sizeof source_folder, "%s", __FILE__);
        char *slash = strrchr(source_folder, '/');
        if (slash) {
            snprintf(slash, sizeof source_folder - (size_t) (slash - source_folder), "/vectors");
        } else {
            snprintf(source_folder, sizeof source_folder, "vectors");
        }
        folder = source_folder;
    }
    snprintf(path, sizeof path, "%s/%s", folder, name);
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        fprintf(stderr, "  cannot open %s\n", path);
        return false;
    }
    bool comment = false;
    int high = -1;
    int c;
    bool ok = true;
    while ((c = fgetc(file)) != EOF) {
        if (c == '\n') {
            comment = false;
        } else if (comment || c == ' ' || c == '\t' || c == '\r') {
            continue;
        } else if (c == '#') {
            comment = true;
        } else {
            int digit = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
            if (digit < 0) {
                fprintf(stderr, "  %s: bad character '%c'\n", path, c);
                ok = false;
                break;
            }
            if (high < 0) {
                high = digit;
            } else {
                s_buf_byte(out, (uint8_t) (high * 16 + digit));
                high = -1;
            }
        }
    }
    fclose(file);
    if (high >= 0) {
        fprintf(stderr, "  %s: odd number of hex digits\n", path);
        ok = false;
    }
    return ok;
}

static void s_check_vector(const char *name, const vs_msg_t *msg)
{
    s_buf_t vector = {0};
    VS_REQUIRE(s_read_vector(name, &vector));
    uint8_t *data = NULL;
    size_t size = 0;
    VS_REQUIRE(s_encode(msg, &data, &size));
    VS_CHECK(size == vector.size && memcmp(data, vector.data, size) == 0);
    if (size != vector.size || memcmp(data, vector.data, size) != 0) {
        fprintf(stderr, "  %s: the encoder wrote %zu bytes, the vector holds %zu\n", name, size,
                vector.size);
    }
    free(data);
    vs_msg_t decoded;
    VS_REQUIRE(s_decode(&decoded, vector.data, vector.size) == VS_OK);
    /*  Re-encoding the decoded fields gives the vector back: every field came through.       */
    VS_CHECK(s_encode(&decoded, &data, &size));
    VS_CHECK(size == vector.size && memcmp(data, vector.data, size) == 0);
    free(data);
    VS_CHECK(decoded.command == msg->command && decoded.request_id == msg->request_id);
    VS_CHECK(s_bytes_same(decoded.stream, msg->stream));
    vs_msg_clear(&decoded);
    s_buf_free(&vector);
}

static const char s_items_sql[] =
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB)";

static void test_vectors(void)
{
    static const uint8_t hash1[VS_HASH_SIZE] = {0x60, 0xb8, 0xea, 0xfe, 0xd8, 0xae, 0xdf, 0x68,
                                                0xcd, 0xf9, 0xc3, 0x03, 0x21, 0xb2, 0x8a, 0x5b,
                                                0x6d, 0x98, 0xff, 0x57, 0xdf, 0xf9, 0x0c, 0x69,
                                                0x45, 0x00, 0xfc, 0xf3, 0xb6, 0xa2, 0xd6, 0xce};
    static const uint8_t hash2[VS_HASH_SIZE] = {0x93, 0xf9, 0xac, 0x13, 0xb8, 0x00, 0x44, 0x8e,
                                                0x38, 0x74, 0x01, 0x92, 0x61, 0xa3, 0xe3, 0x39,
                                                0xec, 0xdd, 0x1e, 0x60, 0x27, 0xe0, 0xd2, 0xbf,
                                                0x80, 0x9a, 0xe4, 0x7c, 0xab, 0xa8, 0x0c, 0xcb};
    vs_msg_t msg;

    /*  PUBLISH: request 42, "orders", "pub-1", the 6-byte set.                                */
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_PUBLISH;
    msg.request_id = 42;
    msg.stream = s_text("orders");
    msg.publisher = s_text("pub-1");
    msg.changeset = s_bytes(s_tiny_set, sizeof s_tiny_set);
    s_check_vector("publish.hex", &msg);

    /*  HEARTBEAT: "orders", head 1000, hash 00..1f.                                           */
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_HEARTBEAT;
    msg.stream = s_text("orders");
    msg.head = 1000;
    msg.hash = s_bytes(s_hash_a, VS_HASH_SIZE);
    s_check_vector("heartbeat.hex", &msg);

    /*  LIVE: "orders", seq 1, hash(1), the 6-byte set.                                        */
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_LIVE;
    msg.stream = s_text("orders");
    msg.seq = 1;
    msg.hash = s_bytes(hash1, VS_HASH_SIZE);
    msg.changeset = s_bytes(s_tiny_set, sizeof s_tiny_set);
    s_check_vector("live.hex", &msg);

    /*  CHUNK: request 5, "orders", head 2, hash(2), entries 1 and 2.                          */
    vs_entry_t entries[2] = {{1, s_bytes(hash1, VS_HASH_SIZE), s_bytes(s_tiny_set, 6)},
                             {2, s_bytes(hash2, VS_HASH_SIZE), s_bytes(s_tiny_set, 6)}};
    memset(&msg, 0, sizeof msg);
    msg.command = VS_CMD_CHUNK;
    msg.request_id = 5;
    msg.stream = s_text("orders");
    msg.head = 2;
    msg.hash = s_bytes(hash2, VS_HASH_SIZE);
    msg.entry_count = 2;
    msg.entries = entries;
    s_check_vector("chunk.hex", &msg);
    /*  ... and its hashes follow the chain.                                                   */
    uint8_t next[VS_HASH_SIZE];
    vs_chain_next(s_zero_hash, s_tiny_set, sizeof s_tiny_set, next);
    VS_CHECK(memcmp(next, hash1, VS_HASH_SIZE) == 0);
    vs_chain_next(next, s_tiny_set, sizeof s_tiny_set, next);
    VS_CHECK(memcmp(next, hash2, VS_HASH_SIZE) == 0);

    /*  The change set of changeset.hex, through the writer and back.                          */
    s_buf_t vector = {0};
    VS_REQUIRE(s_read_vector("changeset.hex", &vector));
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    static const char *const columns[] = {"id", "name", "price", "data"};
    static const uint32_t pk[] = {0};
    uint32_t table;
    VS_CHECK(vs_changeset_writer_add_table(writer, "items", s_items_sql, 4, columns, 1, pk,
                                           &table) == VS_OK);
    const vs_value_t first[4] = {s_integer(300), s_textv("apple", 5), s_real(1.5),
                                 s_blob("\x01\x02\xff", 3)};
    const vs_value_t second[4] = {s_integer(-33), s_textv("", 0), s_null(), s_blob("", 0)};
    const vs_value_t key[1] = {s_integer(65536)};
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, first) == VS_OK);
    VS_CHECK(vs_changeset_writer_upsert(writer, table, 4, second) == VS_OK);
    VS_CHECK(vs_changeset_writer_delete(writer, table, 1, key) == VS_OK);
    uint8_t *data = NULL;
    size_t size = 0;
    VS_CHECK(s_finish(writer, 1, 3, VS_CHANGESET_CONSISTENT, &data, &size));
    vs_changeset_writer_destroy(&writer);
    VS_CHECK(size == vector.size && data && memcmp(data, vector.data, size) == 0);
    free(data);

    vs_changeset_t set;
    vs_change_t change;
    VS_REQUIRE(s_open(&set, vector.data, vector.size) == VS_OK);
    VS_CHECK(set.first_version == 1 && set.last_version == 3);
    VS_CHECK(set.flags == VS_CHANGESET_CONSISTENT);
    VS_CHECK(set.table_count == 1 && set.change_count == 3);
    VS_CHECK(vs_bytes_equal(set.tables[0].name, "items"));
    VS_CHECK(vs_bytes_equal(set.tables[0].create_sql, s_items_sql));
    VS_CHECK(set.tables[0].column_count == 4);
    for (int column = 0; column < 4; column++) {
        VS_CHECK(vs_bytes_equal(set.tables[0].columns[column], columns[column]));
    }
    VS_CHECK(set.tables[0].pk_count == 1 && set.tables[0].pk_columns[0] == 0);
    VS_CHECK(vs_changeset_next(&set, &change));
    VS_CHECK(change.table == 0 && change.op == VS_OP_UPSERT && change.value_count == 4);
    for (int column = 0; column < 4; column++) {
        VS_CHECK(s_value_same(&change.values[column], &first[column]));
    }
    VS_CHECK(vs_changeset_next(&set, &change));
    VS_CHECK(change.table == 0 && change.op == VS_OP_UPSERT && change.value_count == 4);
    for (int column = 0; column < 4; column++) {
        VS_CHECK(s_value_same(&change.values[column], &second[column]));
    }
    VS_CHECK(vs_changeset_next(&set, &change));
    VS_CHECK(change.table == 0 && change.op == VS_OP_DELETE && change.value_count == 1);
    VS_CHECK(s_value_same(&change.values[0], &key[0]));
    VS_CHECK(!vs_changeset_next(&set, &change));
    vs_changeset_close(&set);
    s_buf_free(&vector);
}

/* ---------------------------------------------------------------------------------------------
    The hash chain                                                                             */

static void test_chain(void)
{
    /*  The first link over the 6-byte set, computed independently with python3:
        hashlib.blake2b(bytes(32) + bytes.fromhex("950101009090"), digest_size=32)            */
    uint8_t next[VS_HASH_SIZE];
    char hex[2 * VS_HASH_SIZE + 1];
    vs_chain_next(s_zero_hash, s_tiny_set, sizeof s_tiny_set, next);
    vs_hash_hex(next, hex);
    VS_CHECK(strcmp(hex, "60b8eafed8aedf68cdf9c30321b28a5b6d98ff57dff90c694500fcf3b6a2d6ce") == 0);

    /*  Equal to crypto_generichash over the concatenation, for several sizes.                 */
    uint8_t previous[VS_HASH_SIZE];
    memcpy(previous, s_hash_a, VS_HASH_SIZE);
    static uint8_t input[VS_HASH_SIZE + 70000];
    for (size_t index = 0; index < sizeof input; index++) {
        input[index] = (uint8_t) (index * 7 + 3);
    }
    const size_t sizes[] = {0, 1, 127, 128, 129, 1000, 65536, 70000};
    for (size_t index = 0; index < sizeof sizes / sizeof sizes[0]; index++) {
        uint8_t concatenated[VS_HASH_SIZE + 70000];
        uint8_t expected[VS_HASH_SIZE];
        memcpy(concatenated, previous, VS_HASH_SIZE);
        memcpy(concatenated + VS_HASH_SIZE, input, sizes[index]);
        crypto_generichash(expected, VS_HASH_SIZE, concatenated, VS_HASH_SIZE + sizes[index], NULL,
                           0);
        vs_chain_next(previous, input, sizes[index], next);
        VS_CHECK(memcmp(next, expected, VS_HASH_SIZE) == 0);
        memcpy(previous, next, VS_HASH_SIZE);
    }
    /*  The empty set with NULL bytes is defined too.                                          */
    uint8_t with_null[VS_HASH_SIZE];
    uint8_t with_empty[VS_HASH_SIZE];
    vs_chain_next(s_zero_hash, NULL, 0, with_null);
    vs_chain_next(s_zero_hash, "", 0, with_empty);
    VS_CHECK(memcmp(with_null, with_empty, VS_HASH_SIZE) == 0);
}

/* ---------------------------------------------------------------------------------------------
    Speed report (printed, not asserted)                                                       */

static void test_speed_report(void)
{
    enum { ROWS = 1000, ROUNDS = 200 };
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    VS_REQUIRE(writer != NULL);
    static vs_value_t rows[ROWS][6];
    static char names[ROWS][32];
    static char notes[ROWS][64];
    for (int row = 0; row < ROWS; row++) {
        s_item_row((uint64_t) row, rows[row], names[row], notes[row]);
    }
    uint8_t *data = NULL;
    size_t size = 0;
    double start = s_seconds();
    for (int round = 0; round < ROUNDS; round++) {
        uint32_t table;
        VS_REQUIRE(s_add_items(writer, &table) == VS_OK);
        for (int row = 0; row < ROWS; row++) {
            if (vs_changeset_writer_upsert(writer, table, 6, rows[row]) != VS_OK) {
                VS_CHECK(false);
                break;
            }
        }
        free(data);
        data = NULL;
        VS_REQUIRE(s_finish(writer, 1, 1, VS_CHANGESET_CONSISTENT, &data, &size));
    }
    double encode_seconds = s_seconds() - start;
    vs_changeset_writer_destroy(&writer);

    size_t decoded_rows = 0;
    int64_t checksum = 0;
    start = s_seconds();
    for (int round = 0; round < ROUNDS; round++) {
        vs_changeset_t set;
        vs_change_t change;
        if (vs_changeset_open(&set, data, size, NULL) != VS_OK) {
            VS_CHECK(false);
            break;
        }
        while (vs_changeset_next(&set, &change)) {
            checksum += change.values[0].as.integer;
            decoded_rows++;
        }
        vs_changeset_close(&set);
    }
    double decode_seconds = s_seconds() - start;
    VS_CHECK(decoded_rows == (size_t) ROWS * ROUNDS);
    VS_CHECK(checksum == (int64_t) ROUNDS * ROWS * (ROWS - 1) / 2);
    double total_rows = (double) ROWS * ROUNDS;
    fprintf(stderr,
            "  1,000-row sets of 6 columns, %zu bytes each: encode %.0f rows/s (%.0f values/s), "
            "decode %.0f rows/s (%.0f values/s)\n",
            size, total_rows / encode_seconds, 6 * total_rows / encode_seconds,
            total_rows / decode_seconds, 6 * total_rows / decode_seconds);
    free(data);
}

/*  vs_mp_skip_value steps over the common forms itself: for every first byte, body and
    truncation it must accept, refuse and explain exactly as vs_mp_read_value.               */
static void test_skip_value_matches_read(void)
{
    static const uint8_t fills[] = {0x00, 0x05, 0x7f, 0x80, 0xff};
    uint8_t buffer[40];
    size_t cases = 0;
    size_t mismatches = 0;
    for (int type = 0; type < 256; type++) {
        for (size_t fill = 0; fill < sizeof fills; fill++) {
            buffer[0] = (uint8_t) type;
            memset(buffer + 1, fills[fill], sizeof buffer - 1);
            for (size_t size = 0; size <= sizeof buffer; size++) {
                vs_mp_reader_t skipped;
                vs_mp_reader_t read;
                vs_mp_reader_init(&skipped, buffer, size);
                vs_mp_reader_init(&read, buffer, size);
                vs_value_t value;
                int skip_rc = vs_mp_skip_value(&skipped);
                int read_rc = vs_mp_read_value(&read, &value);
                bool same = skip_rc == read_rc && skipped.pos == read.pos &&
                            (skipped.why == read.why ||
                             (skipped.why && read.why && strcmp(skipped.why, read.why) == 0));
                if (!same && mismatches++ < 5) {
                    fprintf(stderr, "  type 0x%02x fill 0x%02x size %zu: skip %d, read %d\n", type,
                            fills[fill], size, skip_rc, read_rc);
                }
                cases++;
            }
        }
    }
    VS_CHECK(cases == 256 * 5 * 41);
    VS_CHECK(mismatches == 0);
}

int main(void)
{
    vs_test_run("helpers", test_helpers);
    vs_test_run("value_round_trip", test_value_round_trip);
    vs_test_run("changes_encoding", test_changes_encoding);
    vs_test_run("big_blob", test_big_blob);
    vs_test_run("wide_table", test_wide_table);
    vs_test_run("many_tables", test_many_tables);
    vs_test_run("large_set", test_large_set);
    vs_test_run("writer_validation", test_writer_validation);
    vs_test_run("command_round_trip", test_command_round_trip);
    vs_test_run("encode_validation", test_encode_validation);
    vs_test_run("reject_messages", test_reject_messages);
    vs_test_run("publish_acked", test_publish_acked);
    vs_test_run("trailing_elements", test_trailing_elements);
    vs_test_run("reject_truncations", test_reject_truncations);
    vs_test_run("reject_changesets", test_reject_changesets);
    vs_test_run("mutations", test_mutations);
    vs_test_run("vectors", test_vectors);
    vs_test_run("chain", test_chain);
    vs_test_run("skip_value_matches_read", test_skip_value_matches_read);
    vs_test_run("speed_report", test_speed_report);
    return vs_test_summary();
}
