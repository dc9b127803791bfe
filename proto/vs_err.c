/*  vs_err.c - English text for every vs_err_t code.                                          */
#include "vs_proto.h"

const char *vs_strerror(int code)
{
    switch (code) {
    case VS_OK: return "success";
    case VS_ENOMEM: return "out of memory";
    case VS_EINVAL: return "invalid argument";
    case VS_EPROTO: return "malformed message or change set";
    case VS_EMSGSIZE: return "a size or count over a limit";
    case VS_EVERSION: return "unsupported protocol version";
    case VS_ECOMMAND: return "unknown command";
    case VS_EAUTH: return "the peer's key may not do this";
    case VS_ESTORE: return "the database failed";
    case VS_EGAP: return "a sequence is missing";
    case VS_ECHAIN: return "hash chain mismatch: fork or corrupted history";
    case VS_ESCHEMA: return "the slave's table cannot take the master's rows";
    case VS_ENOTFOUND: return "no such stream, table or file";
    case VS_ETIMEDOUT: return "no answer in time";
    case VS_EIO: return "a socket or file failed";
    case VS_EBEHIND: return "the history ends before this position";
    case VS_EBUSY: return "too many replies unread: ask again later";
    default: return "unknown error";
    }
}
