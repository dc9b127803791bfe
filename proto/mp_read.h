/*  mp_read.h - a bounds-checked msgpack cursor reader, internal to proto.

    Every read checks the bytes left before it looks at them, and every declared array, map,
    str, bin or ext length against the bytes left before anything is used or allocated for it
    (each array element takes at least one byte, each map entry two). On failure a read returns
    VS_EPROTO and sets reader->why to a static reason; the cursor is then unspecified and the
    caller gives up on the buffer. msgpack_unpack is never used: msgpack-c allocates for a
    declared count before it checks that the bytes exist.                                     */
#ifndef VS_MP_READ_H_INCLUDED
#define VS_MP_READ_H_INCLUDED

#include "vs_proto.h"

/*  How deep skipped objects may nest; deeper input is rejected, not recursed into.            */
#define VS_MP_MAX_DEPTH 32

typedef struct {
    const uint8_t *pos;
    const uint8_t *end;
    const char *why; /* static reason of the last failure */
} vs_mp_reader_t;

/*  Starts reading size bytes at data.                                                          */
void vs_mp_reader_init(vs_mp_reader_t *reader, const void *data, size_t size);

/*  Bytes not read yet.                                                                         */
static inline size_t vs_mp_left(const vs_mp_reader_t *reader)
{
    return (size_t) (reader->end - reader->pos);
}

/*  Reads an array header; *count is at most the bytes left.                                    */
int vs_mp_read_array(vs_mp_reader_t *reader, uint32_t *count);

/*  Reads any integer format holding a value in 0 .. 2^64-1.                                    */
int vs_mp_read_uint(vs_mp_reader_t *reader, uint64_t *value);

/*  Reads true or false.                                                                        */
int vs_mp_read_bool(vs_mp_reader_t *reader, bool *value);

/*  Reads a str (any of fixstr, str8, str16, str32); borrows its bytes.                         */
int vs_mp_read_str(vs_mp_reader_t *reader, vs_bytes_t *value);

/*  Reads a bin (bin8, bin16, bin32); borrows its bytes.                                        */
int vs_mp_read_bin(vs_mp_reader_t *reader, vs_bytes_t *value);

/*  Reads one change set value: nil, any integer (an unsigned one above INT64_MAX is an
    error), float32 (widened) or float64, str, bin. Anything else is an error.               */
int vs_mp_read_value(vs_mp_reader_t *reader, vs_value_t *value);

/*  Checks one change set value as vs_mp_read_value does, without producing it.                */
int vs_mp_skip_value(vs_mp_reader_t *reader);

/*  Skips one well-formed object of any type, including maps and ext; depth counts the
    enclosing containers and may not pass VS_MP_MAX_DEPTH.                                    */
int vs_mp_skip(vs_mp_reader_t *reader, int depth);

/*  Skips count objects (the unknown trailing elements of an array).                           */
int vs_mp_skip_many(vs_mp_reader_t *reader, uint32_t count, int depth);

#endif
