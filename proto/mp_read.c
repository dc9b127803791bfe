/*  mp_read.c - the bounds-checked msgpack cursor reader behind every proto decoder.          */
#include "mp_read.h"

#include <string.h>

static const uint8_t s_empty[1];

static inline uint16_t s_load16(const uint8_t *bytes)
{
    return (uint16_t) (((uint16_t) bytes[0] << 8) | bytes[1]);
}

static inline uint32_t s_load32(const uint8_t *bytes)
{
    return ((uint32_t) bytes[0] << 24) | ((uint32_t) bytes[1] << 16) | ((uint32_t) bytes[2] << 8) |
           bytes[3];
}

static inline uint64_t s_load64(const uint8_t *bytes)
{
    return ((uint64_t) s_load32(bytes) << 32) | s_load32(bytes + 4);
}

static int s_fail(vs_mp_reader_t *reader, const char *why)
{
    reader->why = why;
    return VS_EPROTO;
}

void vs_mp_reader_init(vs_mp_reader_t *reader, const void *data, size_t size)
{
    reader->pos = data ? (const uint8_t *) data : s_empty;
    reader->end = data ? reader->pos + size : s_empty;
    reader->why = NULL;
}

/*  The length of a str, bin or ext whose type byte is at pos: length_size bytes after it.    */
static int s_read_length(vs_mp_reader_t *reader, size_t length_size, size_t *length)
{
    const uint8_t *pos = reader->pos;
    if (vs_mp_left(reader) < 1 + length_size) {
        return s_fail(reader, "truncated length");
    }
    if (length_size == 1) {
        *length = pos[1];
    } else if (length_size == 2) {
        *length = s_load16(pos + 1);
    } else {
        *length = s_load32(pos + 1);
    }
    return VS_OK;
}

/*  A str or bin body of length bytes after a header of header_size bytes.                     */
static int s_take_body(vs_mp_reader_t *reader, size_t header_size, size_t length, vs_bytes_t *value)
{
    if (length > vs_mp_left(reader) - header_size) {
        return s_fail(reader, "length exceeds the bytes left");
    }
    value->data = (const char *) reader->pos + header_size;
    value->size = length;
    reader->pos += header_size + length;
    return VS_OK;
}

int vs_mp_read_array(vs_mp_reader_t *reader, uint32_t *count)
{
    const uint8_t *pos = reader->pos;
    size_t left = vs_mp_left(reader);
    uint32_t declared;
    size_t header_size;
    if (left < 1) {
        return s_fail(reader, "truncated: expected an array");
    }
    if ((pos[0] & 0xf0) == 0x90) {
        declared = pos[0] & 0x0f;
        header_size = 1;
    } else if (pos[0] == 0xdc) {
        if (left < 3) {
            return s_fail(reader, "truncated array header");
        }
        declared = s_load16(pos + 1);
        header_size = 3;
    } else if (pos[0] == 0xdd) {
        if (left < 5) {
            return s_fail(reader, "truncated array header");
        }
        declared = s_load32(pos + 1);
        header_size = 5;
    } else {
        return s_fail(reader, "expected an array");
    }
    if (declared > left - header_size) {
        return s_fail(reader, "array count exceeds the bytes left");
    }
    reader->pos += header_size;
    *count = declared;
    return VS_OK;
}

/*  Reads any integer format. A value >= 0 comes back in *unsigned_value with *negative false;
    a value < 0 in *signed_value with *negative true.                                         */
static int s_read_integer(vs_mp_reader_t *reader, bool *negative, uint64_t *unsigned_value,
                          int64_t *signed_value)
{
    const uint8_t *pos = reader->pos;
    size_t left = vs_mp_left(reader);
    uint8_t type;
    size_t body_size;
    uint64_t raw;
    if (left < 1) {
        return s_fail(reader, "truncated: expected an integer");
    }
    type = pos[0];
    if (type <= 0x7f) {
        *negative = false;
        *unsigned_value = type;
        reader->pos += 1;
        return VS_OK;
    }
    if (type >= 0xe0) {
        *negative = true;
        *signed_value = (int64_t) type - 256;
        reader->pos += 1;
        return VS_OK;
    }
    switch (type) {
    case 0xcc:
    case 0xd0: body_size = 1; break;
    case 0xcd:
    case 0xd1: body_size = 2; break;
    case 0xce:
    case 0xd2: body_size = 4; break;
    case 0xcf:
    case 0xd3: body_size = 8; break;
    default: return s_fail(reader, "expected an integer");
    }
    if (left < 1 + body_size) {
        return s_fail(reader, "truncated integer");
    }
    raw = body_size == 1   ? pos[1]
          : body_size == 2 ? s_load16(pos + 1)
          : body_size == 4 ? s_load32(pos + 1)
                           : s_load64(pos + 1);
    reader->pos += 1 + body_size;
    if (type <= 0xcf) {
        *negative = false;
        *unsigned_value = raw;
        return VS_OK;
    }
    /*  int8 .. int64: sign-extend from the body's width.                                     */
    {
        unsigned bits = (unsigned) body_size * 8;
        uint64_t sign = (uint64_t) 1 << (bits - 1);
        if ((raw & sign) == 0) {
            *negative = false;
            *unsigned_value = raw;
        } else {
            /*  raw - 2^bits, computed without overflow: -(2^bits - raw).                      */
            uint64_t magnitude = bits == 64 ? (~raw + 1) : ((sign << 1) - raw);
            *negative = true;
            *signed_value = magnitude == ((uint64_t) 1 << 63) ? INT64_MIN : -(int64_t) magnitude;
        }
    }
    return VS_OK;
}

int vs_mp_read_uint(vs_mp_reader_t *reader, uint64_t *value)
{
    bool negative;
    int64_t signed_value;
    const uint8_t *start = reader->pos;
    int rc = s_read_integer(reader, &negative, value, &signed_value);
    if (rc != VS_OK) {
        return rc;
    }
    if (negative) {
        reader->pos = start;
        return s_fail(reader, "negative integer where an unsigned one is expected");
    }
    return VS_OK;
}

int vs_mp_read_bool(vs_mp_reader_t *reader, bool *value)
{
    if (vs_mp_left(reader) < 1) {
        return s_fail(reader, "truncated: expected a bool");
    }
    if (reader->pos[0] == 0xc2 || reader->pos[0] == 0xc3) {
        *value = reader->pos[0] == 0xc3;
        reader->pos += 1;
        return VS_OK;
    }
    return s_fail(reader, "expected a bool");
}

int vs_mp_read_str(vs_mp_reader_t *reader, vs_bytes_t *value)
{
    size_t length;
    uint8_t type;
    int rc;
    if (vs_mp_left(reader) < 1) {
        return s_fail(reader, "truncated: expected a str");
    }
    type = reader->pos[0];
    if ((type & 0xe0) == 0xa0) {
        return s_take_body(reader, 1, type & 0x1f, value);
    }
    if (type < 0xd9 || type > 0xdb) {
        return s_fail(reader, "expected a str");
    }
    rc = s_read_length(reader, (size_t) 1 << (type - 0xd9), &length);
    if (rc != VS_OK) {
        return rc;
    }
    return s_take_body(reader, 1 + ((size_t) 1 << (type - 0xd9)), length, value);
}

int vs_mp_read_bin(vs_mp_reader_t *reader, vs_bytes_t *value)
{
    size_t length;
    uint8_t type;
    int rc;
    if (vs_mp_left(reader) < 1) {
        return s_fail(reader, "truncated: expected a bin");
    }
    type = reader->pos[0];
    if (type < 0xc4 || type > 0xc6) {
        return s_fail(reader, "expected a bin");
    }
    rc = s_read_length(reader, (size_t) 1 << (type - 0xc4), &length);
    if (rc != VS_OK) {
        return rc;
    }
    return s_take_body(reader, 1 + ((size_t) 1 << (type - 0xc4)), length, value);
}

int vs_mp_read_value(vs_mp_reader_t *reader, vs_value_t *value)
{
    const uint8_t *pos = reader->pos;
    uint8_t type;
    int rc;
    if (pos >= reader->end) {
        return s_fail(reader, "truncated: expected a value");
    }
    type = pos[0];
    if (type <= 0x7f) {
        value->type = VS_INTEGER;
        value->as.integer = type;
        reader->pos += 1;
        return VS_OK;
    }
    if (type >= 0xe0) {
        value->type = VS_INTEGER;
        value->as.integer = (int64_t) type - 256;
        reader->pos += 1;
        return VS_OK;
    }
    if ((type & 0xe0) == 0xa0) {
        value->type = VS_TEXT;
        return s_take_body(reader, 1, type & 0x1f, &value->as.bytes);
    }
    switch (type) {
    case 0xc0:
        value->type = VS_NULL;
        reader->pos += 1;
        return VS_OK;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        bool negative;
        uint64_t unsigned_value;
        int64_t signed_value;
        rc = s_read_integer(reader, &negative, &unsigned_value, &signed_value);
        if (rc != VS_OK) {
            return rc;
        }
        if (!negative && unsigned_value > (uint64_t) INT64_MAX) {
            reader->pos = pos;
            return s_fail(reader, "integer value above INT64_MAX");
        }
        value->type = VS_INTEGER;
        value->as.integer = negative ? signed_value : (int64_t) unsigned_value;
        return VS_OK;
    }
    case 0xca: {
        uint32_t bits;
        float single;
        if (vs_mp_left(reader) < 5) {
            return s_fail(reader, "truncated float32");
        }
        bits = s_load32(pos + 1);
        memcpy(&single, &bits, sizeof single);
        value->type = VS_REAL;
        value->as.real = (double) single;
        reader->pos += 5;
        return VS_OK;
    }
    case 0xcb: {
        uint64_t bits;
        if (vs_mp_left(reader) < 9) {
            return s_fail(reader, "truncated float64");
        }
        bits = s_load64(pos + 1);
        memcpy(&value->as.real, &bits, sizeof bits);
        value->type = VS_REAL;
        reader->pos += 9;
        return VS_OK;
    }
    case 0xd9:
    case 0xda:
    case 0xdb: value->type = VS_TEXT; return vs_mp_read_str(reader, &value->as.bytes);
    case 0xc4:
    case 0xc5:
    case 0xc6: value->type = VS_BLOB; return vs_mp_read_bin(reader, &value->as.bytes);
    case 0xc2:
    case 0xc3: return s_fail(reader, "a bool is not a value (nil, integer, float, str or bin)");
    default: return s_fail(reader, "value of an unsupported type (nil, integer, float, str, bin)");
    }
}

/*  The broker and the subscriber check every value of every change set before using it: the
    common valid forms are stepped over here, and anything else, valid or not, goes through
    vs_mp_read_value, so that both accept, refuse and explain exactly the same bytes.        */
int vs_mp_skip_value(vs_mp_reader_t *reader)
{
    const uint8_t *pos = reader->pos;
    size_t left = vs_mp_left(reader);
    if (left > 0) {
        uint8_t type = pos[0];
        size_t size = 0; /* of the whole value; 0: not a fast form */
        if (type <= 0x7f || type >= 0xe0 || type == 0xc0) {
            size = 1;
        } else if ((type & 0xe0) == 0xa0) {
            size = 1 + (size_t) (type & 0x1f);
        } else if (type == 0xcb) {
            size = 9;
        } else if ((type >= 0xcc && type <= 0xce) || (type >= 0xd0 && type <= 0xd3) ||
                   (type == 0xcf && left > 1 && pos[1] < 0x80)) {
            size = 1 + ((size_t) 1 << ((type - 0xcc) & 3)); /* uint64 above INT64_MAX: below */
        } else if ((type == 0xd9 || type == 0xc4) && left > 1) {
            size = 2 + (size_t) pos[1];
        }
        if (size > 0 && size <= left) {
            reader->pos += size;
            return VS_OK;
        }
    }
    vs_value_t value;
    return vs_mp_read_value(reader, &value);
}

/*  Skips a fixed-size body of body_size bytes after a type byte.                              */
static int s_skip_fixed(vs_mp_reader_t *reader, size_t body_size)
{
    if (vs_mp_left(reader) < 1 + body_size) {
        return s_fail(reader, "truncated object");
    }
    reader->pos += 1 + body_size;
    return VS_OK;
}

/*  Skips a str, bin (extra 0) or ext (extra 1: the type byte) whose length follows the type
    byte in length_size bytes.                                                                */
static int s_skip_sized(vs_mp_reader_t *reader, size_t length_size, size_t extra)
{
    size_t length;
    int rc = s_read_length(reader, length_size, &length);
    if (rc != VS_OK) {
        return rc;
    }
    if (vs_mp_left(reader) - 1 - length_size < extra ||
        length > vs_mp_left(reader) - 1 - length_size - extra) {
        return s_fail(reader, "length exceeds the bytes left");
    }
    reader->pos += 1 + length_size + extra + length;
    return VS_OK;
}

/*  Skips count elements of a container whose header took header_size bytes.                   */
static int s_skip_container(vs_mp_reader_t *reader, size_t header_size, uint64_t elements,
                            int depth)
{
    if (depth >= VS_MP_MAX_DEPTH) {
        return s_fail(reader, "msgpack nested too deep");
    }
    if (elements > vs_mp_left(reader) - header_size) {
        return s_fail(reader, "container count exceeds the bytes left");
    }
    reader->pos += header_size;
    for (uint64_t index = 0; index < elements; index++) {
        int rc = vs_mp_skip(reader, depth + 1);
        if (rc != VS_OK) {
            return rc;
        }
    }
    return VS_OK;
}

int vs_mp_skip(vs_mp_reader_t *reader, int depth)
{
    const uint8_t *pos = reader->pos;
    size_t left = vs_mp_left(reader);
    uint8_t type;
    if (depth > VS_MP_MAX_DEPTH) {
        return s_fail(reader, "msgpack nested too deep");
    }
    if (left < 1) {
        return s_fail(reader, "truncated: expected an object");
    }
    type = pos[0];
    if (type <= 0x7f || type >= 0xe0 || type == 0xc0 || type == 0xc2 || type == 0xc3) {
        reader->pos += 1;
        return VS_OK;
    }
    if ((type & 0xf0) == 0x80) {
        return s_skip_container(reader, 1, 2 * (uint64_t) (type & 0x0f), depth);
    }
    if ((type & 0xf0) == 0x90) {
        return s_skip_container(reader, 1, type & 0x0f, depth);
    }
    if ((type & 0xe0) == 0xa0) {
        vs_bytes_t ignored;
        return s_take_body(reader, 1, type & 0x1f, &ignored);
    }
    switch (type) {
    case 0xc4: /* bin 8, 16, 32 */
    case 0xc5:
    case 0xc6: return s_skip_sized(reader, (size_t) 1 << (type - 0xc4), 0);
    case 0xc7: /* ext 8, 16, 32 */
    case 0xc8:
    case 0xc9: return s_skip_sized(reader, (size_t) 1 << (type - 0xc7), 1);
    case 0xca: return s_skip_fixed(reader, 4);
    case 0xcb: return s_skip_fixed(reader, 8);
    case 0xcc:
    case 0xd0: return s_skip_fixed(reader, 1);
    case 0xcd:
    case 0xd1: return s_skip_fixed(reader, 2);
    case 0xce:
    case 0xd2: return s_skip_fixed(reader, 4);
    case 0xcf:
    case 0xd3: return s_skip_fixed(reader, 8);
    case 0xd4: /* fixext 1, 2, 4, 8, 16: a type byte then the data */
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8: return s_skip_fixed(reader, 1 + ((size_t) 1 << (type - 0xd4)));
    case 0xd9: /* str 8, 16, 32 */
    case 0xda:
    case 0xdb: return s_skip_sized(reader, (size_t) 1 << (type - 0xd9), 0);
    case 0xdc:
        if (left < 3) {
            return s_fail(reader, "truncated array header");
        }
        return s_skip_container(reader, 3, s_load16(pos + 1), depth);
    case 0xdd:
        if (left < 5) {
            return s_fail(reader, "truncated array header");
        }
        return s_skip_container(reader, 5, s_load32(pos + 1), depth);
    case 0xde:
        if (left < 3) {
            return s_fail(reader, "truncated map header");
        }
        return s_skip_container(reader, 3, 2 * (uint64_t) s_load16(pos + 1), depth);
    case 0xdf:
        if (left < 5) {
            return s_fail(reader, "truncated map header");
        }
        return s_skip_container(reader, 5, 2 * (uint64_t) s_load32(pos + 1), depth);
    default: /* 0xc1 is never used */ return s_fail(reader, "reserved msgpack type 0xc1");
    }
}

int vs_mp_skip_many(vs_mp_reader_t *reader, uint32_t count, int depth)
{
    for (uint32_t index = 0; index < count; index++) {
        int rc = vs_mp_skip(reader, depth);
        if (rc != VS_OK) {
            return rc;
        }
    }
    return VS_OK;
}
