/*  vs_err.c - placeholder until proto lands.                                                 */
#include "vs_proto.h"

const char *vs_strerror(int code)
{
    (void) code;
    return "unknown error";
}
