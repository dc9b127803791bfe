/*  log.c - formatting log lines for a caller's sink, and escaping untrusted samples.          */
#include "vs_proto.h"

#include <stdio.h>
#include <string.h>

/*  Longest line handed to a sink; longer ones are cut.                                        */
#define S_LINE_SIZE 1024

void vs_log(const vs_logger_t *logger, vs_log_level_t level, const char *format, ...)
{
    char line[S_LINE_SIZE];
    va_list args;
    if (logger == NULL || logger->fn == NULL || format == NULL) {
        return;
    }
    va_start(args, format);
    if (vsnprintf(line, sizeof line, format, args) < 0) {
        line[0] = '\0';
    }
    va_end(args);
    logger->fn(logger->arg, level, line);
}

/*  Printable ASCII but the backslash, which would make an escape ambiguous.                   */
static bool s_plain(unsigned char byte)
{
    return byte >= 0x20 && byte <= 0x7e && byte != '\\';
}

void vs_escape_sample(const void *data, size_t size, char *out, size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *bytes = data;
    size_t written = 0;
    if (out == NULL || out_size == 0) {
        return;
    }
    if (bytes == NULL) {
        size = 0;
    }
    size_t full = 0;
    for (size_t index = 0; index < size && full < out_size; index++) {
        full += s_plain(bytes[index]) ? 1 : 4;
    }
    /*  When everything fits, nothing is cut; otherwise keep room for "..." at every step.    */
    size_t reserve = full + 1 <= out_size ? 0 : 3;
    for (size_t index = 0; index < size; index++) {
        unsigned char byte = bytes[index];
        bool plain = s_plain(byte);
        size_t width = plain ? 1 : 4;
        if (written + width + reserve + 1 > out_size) {
            size_t dots_size = out_size - 1 - written < 3 ? out_size - 1 - written : 3;
            memcpy(out + written, "...", dots_size);
            written += dots_size;
            break;
        }
        if (plain) {
            out[written++] = (char) byte;
        } else {
            out[written++] = '\\';
            out[written++] = 'x';
            out[written++] = hex[byte >> 4];
            out[written++] = hex[byte & 0x0f];
        }
    }
    out[written] = '\0';
}
