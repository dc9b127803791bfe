/*  bytes.c - helpers for borrowed, not NUL-terminated byte ranges.                           */
#include "vs_proto.h"

#include <stdlib.h>
#include <string.h>

bool vs_bytes_equal(vs_bytes_t bytes, const char *string)
{
    size_t length;
    if (string == NULL) {
        return false;
    }
    length = strlen(string);
    if (length != bytes.size) {
        return false;
    }
    return length == 0 || memcmp(bytes.data, string, length) == 0;
}

char *vs_bytes_strdup(vs_bytes_t bytes)
{
    char *copy;
    if (bytes.size == SIZE_MAX || (bytes.data == NULL && bytes.size > 0)) {
        return NULL;
    }
    copy = malloc(bytes.size + 1);
    if (copy == NULL) {
        return NULL;
    }
    if (bytes.size > 0) {
        memcpy(copy, bytes.data, bytes.size);
    }
    copy[bytes.size] = '\0';
    return copy;
}
