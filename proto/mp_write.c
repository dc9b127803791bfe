/*  mp_write.c - the growable buffer under every proto encoder.                               */
#include "mp_write.h"

#include <stdlib.h>
#include <string.h>

int vs_mp_buffer_reserve(vs_mp_buffer_t *self, size_t more)
{
    size_t needed;
    size_t capacity;
    uint8_t *data;
    if (more <= self->capacity - self->size) {
        return VS_OK;
    }
    if (more > SIZE_MAX / 2 - self->size) {
        return VS_ENOMEM;
    }
    needed = self->size + more;
    capacity = self->capacity ? self->capacity : 256;
    while (capacity < needed) {
        capacity *= 2;
    }
    data = realloc(self->data, capacity);
    if (data == NULL) {
        return VS_ENOMEM;
    }
    self->data = data;
    self->capacity = capacity;
    return VS_OK;
}

void vs_mp_buffer_free(vs_mp_buffer_t *self)
{
    free(self->data);
    memset(self, 0, sizeof *self);
}

int vs_mp_buffer_write(void *data, const char *bytes, size_t size)
{
    vs_mp_buffer_t *self = data;
    if (size == 0) {
        return 0;
    }
    if (size > self->capacity - self->size && vs_mp_buffer_reserve(self, size) != VS_OK) {
        return -1;
    }
    memcpy(self->data + self->size, bytes, size);
    self->size += size;
    return 0;
}

void vs_mp_packer_init(msgpack_packer *packer, vs_mp_buffer_t *buffer)
{
    msgpack_packer_init(packer, buffer, vs_mp_buffer_write);
}
