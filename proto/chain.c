/*  chain.c - the per-stream hash chain: hash(n) = BLAKE2b-256(hash(n-1) || changeset(n)).    */
#include "vs_proto.h"

#include <sodium.h>

void vs_chain_next(const uint8_t previous[VS_HASH_SIZE], const void *changeset, size_t size,
                   uint8_t next[VS_HASH_SIZE])
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, VS_HASH_SIZE);
    crypto_generichash_update(&state, previous, VS_HASH_SIZE);
    if (size > 0) {
        crypto_generichash_update(&state, changeset, size);
    }
    crypto_generichash_final(&state, next, VS_HASH_SIZE);
}

void vs_hash_hex(const uint8_t hash[VS_HASH_SIZE], char out[2 * VS_HASH_SIZE + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t index = 0; index < VS_HASH_SIZE; index++) {
        out[2 * index] = hex[hash[index] >> 4];
        out[2 * index + 1] = hex[hash[index] & 0x0f];
    }
    out[2 * VS_HASH_SIZE] = '\0';
}
