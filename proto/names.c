/*  names.c - stream names and the live topic built from them.                                */
#include "vs_proto.h"

#include <string.h>

bool vs_stream_name_valid(const char *data, size_t size)
{
    if (data == NULL || size < 1 || size > VS_MAX_STREAM_NAME) {
        return false;
    }
    for (size_t index = 0; index < size; index++) {
        char c = data[index];
        bool valid = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '.' || c == '_' || c == '-';
        if (!valid) {
            return false;
        }
    }
    return true;
}

size_t vs_live_topic(const char *stream, size_t stream_size, char *out, size_t out_size)
{
    if (out == NULL || !vs_stream_name_valid(stream, stream_size) || out_size < stream_size + 1) {
        return 0;
    }
    memcpy(out, stream, stream_size);
    out[stream_size] = '\0';
    return stream_size + 1;
}
