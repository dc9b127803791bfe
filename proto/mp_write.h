/*  mp_write.h - a growable byte buffer that msgpack-c's packer writes into, internal to proto.

    Only proto's .c files include this header (and through it msgpack.h).                     */
#ifndef VS_MP_WRITE_H_INCLUDED
#define VS_MP_WRITE_H_INCLUDED

#include <msgpack.h>

#include "vs_proto.h"

typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
} vs_mp_buffer_t;

/*  Makes room for more bytes after size. Returns VS_OK or VS_ENOMEM (buffer unchanged).        */
int vs_mp_buffer_reserve(vs_mp_buffer_t *self, size_t more);

/*  Frees the bytes and zeroes the buffer.                                                      */
void vs_mp_buffer_free(vs_mp_buffer_t *self);

/*  The msgpack_packer_write callback: data is a vs_mp_buffer_t. Returns 0, or -1 when out of
    memory (the packer then returns -1 too).                                                   */
int vs_mp_buffer_write(void *data, const char *bytes, size_t size);

/*  Starts a packer that appends to buffer.                                                     */
void vs_mp_packer_init(msgpack_packer *packer, vs_mp_buffer_t *buffer);

#endif
