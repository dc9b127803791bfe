/*  fuzz_proto.c - a fuzz target for the wire decoders (proto/): any bytes as a command and as
    a change set. Besides "no crash, no leak, no undefined behaviour" it checks two contracts
    of vs_proto.h: a decoded command encodes back to bytes that decode to the same command,
    and vs_changeset_open_incremental, read to the end, accepts exactly the sets that
    vs_changeset_open accepts, with the same changes.                                        */
#include "vs_proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_fail(const char *what)
{
    fprintf(stderr, "fuzz_proto: contract broken: %s\n", what);
    abort();
}

static bool s_same_value(const vs_value_t *a, const vs_value_t *b)
{
    if (a->type != b->type) {
        return false;
    }
    switch (a->type) {
    case VS_INTEGER: return a->as.integer == b->as.integer;
    case VS_REAL: return memcmp(&a->as.real, &b->as.real, sizeof a->as.real) == 0;
    case VS_TEXT:
    case VS_BLOB:
        return a->as.bytes.size == b->as.bytes.size &&
               (a->as.bytes.size == 0 ||
                memcmp(a->as.bytes.data, b->as.bytes.data, a->as.bytes.size) == 0);
    default: return true;
    }
}

static void s_check_command(const uint8_t *data, size_t size)
{
    vs_msg_t msg;
    if (vs_msg_decode(&msg, data, size, NULL) != VS_OK) {
        if (msg.entries || msg.streams) {
            s_fail("a failed decode left arrays allocated");
        }
        return;
    }
    uint8_t *encoded = NULL, *again_encoded = NULL;
    size_t encoded_size = 0, again_size = 0;
    if (vs_msg_encode(&msg, &encoded, &encoded_size) != VS_OK) {
        s_fail("a decoded command does not encode");
    }
    vs_msg_t again;
    if (vs_msg_decode(&again, encoded, encoded_size, NULL) != VS_OK ||
        vs_msg_encode(&again, &again_encoded, &again_size) != VS_OK || again_size != encoded_size ||
        memcmp(encoded, again_encoded, encoded_size) != 0) {
        s_fail("a command does not survive encode and decode");
    }
    vs_msg_clear(&again);
    vs_msg_clear(&msg);
    free(encoded);
    free(again_encoded);
}

static void s_check_changeset(const uint8_t *data, size_t size)
{
    vs_changeset_t whole, incremental;
    int whole_rc = vs_changeset_open(&whole, data, size, NULL);
    int incremental_rc = vs_changeset_open_incremental(&incremental, data, size, NULL);
    if (whole_rc == VS_OK && incremental_rc != VS_OK) {
        s_fail("the incremental open refused a set the whole open accepted");
    }
    if (incremental_rc != VS_OK) {
        vs_changeset_close(&whole);
        return;
    }
    vs_change_t a, b;
    size_t seen = 0;
    for (;;) {
        bool more = vs_changeset_next(&incremental, &b);
        if (whole_rc != VS_OK) {
            if (!more) {
                break;
            }
            continue;
        }
        if (more != vs_changeset_next(&whole, &a)) {
            s_fail("the two opens read different numbers of changes");
        }
        if (!more) {
            break;
        }
        if (a.table != b.table || a.op != b.op || a.value_count != b.value_count) {
            s_fail("the two opens read different changes");
        }
        for (uint32_t index = 0; index < a.value_count; index++) {
            if (!s_same_value(&a.values[index], &b.values[index])) {
                s_fail("the two opens read different values");
            }
        }
        seen++;
    }
    bool whole_ok = whole_rc == VS_OK;
    bool incremental_ok = vs_changeset_error(&incremental) == NULL;
    if (whole_ok != incremental_ok) {
        s_fail("the incremental reading and the whole open disagree on the set");
    }
    if (whole_ok && seen != whole.change_count) {
        s_fail("fewer changes than the set declares");
    }
    vs_changeset_close(&whole);
    vs_changeset_close(&incremental);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact copies, so that a read past the end is a read past the buffer. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) {
        abort();
    }
    memcpy(copy, data, size);
    s_check_command(copy, size);
    s_check_changeset(copy, size);
    free(copy);
    return 0;
}
