/*  seeds.c - writes the starting corpus of the fuzz targets: valid commands and change sets
    for fuzz_proto, and apply scripts for fuzz_apply (see fuzz_apply.c for their format) that
    create tables, move UNIQUE values across sets, change a table's columns, commit, roll
    back and reopen. The fuzzers grow the corpus from these; tests/fuzz/corpus/ holds the
    merged result. Usage: fuzz_seeds PROTO_DIR APPLY_DIR (both must exist).                  */
#include "vs_proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t data[65536];
    size_t size;
} s_script_t;

static void s_die(const char *what)
{
    fprintf(stderr, "fuzz_seeds: %s\n", what);
    exit(1);
}

static void s_write(const char *dir, const char *name, const void *data, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen(path, "wb");
    if (!file || fwrite(data, 1, size, file) != size || fclose(file) != 0) {
        s_die(path);
    }
}

static vs_value_t s_integer(int64_t value)
{
    return (vs_value_t){.type = VS_INTEGER, .as.integer = value};
}

static vs_value_t s_text(const char *text)
{
    return (vs_value_t){.type = VS_TEXT, .as.bytes = {text, strlen(text)}};
}

static vs_value_t s_real(double value)
{
    return (vs_value_t){.type = VS_REAL, .as.real = value};
}

static vs_value_t s_blob(const void *data, size_t size)
{
    return (vs_value_t){.type = VS_BLOB, .as.bytes = {data, size}};
}

static vs_value_t s_null(void)
{
    return (vs_value_t){.type = VS_NULL};
}

static uint32_t s_table(vs_changeset_writer_t *writer, const char *name, const char *sql,
                        size_t column_count, const char *const *columns, size_t pk_count,
                        const uint32_t *pk)
{
    uint32_t index = 0;
    if (vs_changeset_writer_add_table(writer, name, sql, column_count, columns, pk_count, pk,
                                      &index) != VS_OK) {
        s_die("add_table");
    }
    return index;
}

static void s_upsert(vs_changeset_writer_t *writer, uint32_t table, size_t count,
                     const vs_value_t *values)
{
    if (vs_changeset_writer_upsert(writer, table, count, values) != VS_OK) {
        s_die("upsert");
    }
}

static void s_delete(vs_changeset_writer_t *writer, uint32_t table, size_t count,
                     const vs_value_t *key)
{
    if (vs_changeset_writer_delete(writer, table, count, key) != VS_OK) {
        s_die("delete");
    }
}

/*  Finishes the set into the script as one apply step, and into the proto corpus.             */
static void s_finish(vs_changeset_writer_t *writer, uint64_t version, bool consistent,
                     s_script_t *script, const char *proto_dir, const char *name)
{
    uint8_t *data = NULL;
    size_t size = 0;
    if (vs_changeset_writer_finish(writer, version, version,
                                   consistent ? VS_CHANGESET_CONSISTENT : 0, &data,
                                   &size) != VS_OK ||
        size > 0xffff || script->size + 3 + size > sizeof script->data) {
        s_die("finish");
    }
    script->data[script->size++] = 0;
    script->data[script->size++] = (uint8_t) (size & 0xff);
    script->data[script->size++] = (uint8_t) (size >> 8);
    memcpy(script->data + script->size, data, size);
    script->size += size;
    s_write(proto_dir, name, data, size);
    free(data);
}

static void s_step(s_script_t *script, uint8_t kind)
{
    script->data[script->size++] = kind;
}

static const char *const s_item_columns[] = {"id", "name", "qty", "price", "note"};
static const uint32_t s_first[] = {0};

static uint32_t s_items(vs_changeset_writer_t *writer)
{
    return s_table(writer, "items",
                   "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, "
                   "price REAL, note BLOB)",
                   5, s_item_columns, 1, s_first);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_seeds PROTO_DIR APPLY_DIR\n");
        return 2;
    }
    const char *proto_dir = argv[1], *apply_dir = argv[2];
    vs_changeset_writer_t *writer = vs_changeset_writer_new();
    if (!writer) {
        s_die("out of memory");
    }
    static s_script_t script;

    /* 1: rows of every type, a delete, commit, reopen, more rows, rollback. */
    script.size = 0;
    uint32_t items = s_items(writer);
    for (int64_t id = 1; id <= 4; id++) {
        vs_value_t row[] = {s_integer(id), s_text("item"), s_integer(id * 7), s_real(id / 4.0),
                            id % 2 ? s_blob("\x00\x01\xff", 3) : s_null()};
        s_upsert(writer, items, 5, row);
    }
    vs_value_t key = s_integer(2);
    s_delete(writer, items, 1, &key);
    s_finish(writer, 1, true, &script, proto_dir, "set-items");
    s_step(&script, 1);
    s_step(&script, 3);
    items = s_items(writer);
    vs_value_t later[] = {s_integer(9), s_text(""), s_integer(INT64_MIN), s_real(-0.0),
                          s_text("text in a blob column")};
    s_upsert(writer, items, 5, later);
    s_finish(writer, 2, true, &script, proto_dir, "set-items-2");
    s_step(&script, 2);
    s_write(apply_dir, "items", script.data, script.size);

    /* 2: a UNIQUE value swapped between two rows over two sets of one snapshot. */
    script.size = 0;
    static const char *const code_columns[] = {"id", "code"};
    const char *code_sql = "CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT UNIQUE)";
    uint32_t codes = s_table(writer, "codes", code_sql, 2, code_columns, 1, s_first);
    vs_value_t a[] = {s_integer(1), s_text("a")}, b[] = {s_integer(2), s_text("b")};
    s_upsert(writer, codes, 2, a);
    s_upsert(writer, codes, 2, b);
    s_finish(writer, 1, true, &script, proto_dir, "set-codes");
    s_step(&script, 1);
    codes = s_table(writer, "codes", code_sql, 2, code_columns, 1, s_first);
    vs_value_t a_to_b[] = {s_integer(1), s_text("b")};
    s_upsert(writer, codes, 2, a_to_b);
    s_finish(writer, 2, false, &script, proto_dir, "set-codes-half");
    codes = s_table(writer, "codes", code_sql, 2, code_columns, 1, s_first);
    vs_value_t b_to_a[] = {s_integer(2), s_text("a")};
    s_upsert(writer, codes, 2, b_to_a);
    s_finish(writer, 3, true, &script, proto_dir, "set-codes-end");
    s_step(&script, 1);
    s_write(apply_dir, "unique-swap", script.data, script.size);

    /* 3: a two-column text key, then the same table with a column added. */
    script.size = 0;
    static const char *const pair_columns[] = {"region", "id", "v"};
    static const uint32_t pair_key[] = {0, 1};
    uint32_t pairs = s_table(writer, "pairs",
                             "CREATE TABLE pairs (region TEXT, id INTEGER, v, "
                             "PRIMARY KEY (region, id)) WITHOUT ROWID",
                             3, pair_columns, 2, pair_key);
    vs_value_t pair[] = {s_text("eu"), s_integer(1), s_real(1.5)};
    s_upsert(writer, pairs, 3, pair);
    s_finish(writer, 1, true, &script, proto_dir, "set-pairs");
    static const char *const wider_columns[] = {"region", "id", "v", "w"};
    pairs = s_table(writer, "pairs",
                    "CREATE TABLE pairs (region TEXT, id INTEGER, v, w, "
                    "PRIMARY KEY (region, id)) WITHOUT ROWID",
                    4, wider_columns, 2, pair_key);
    vs_value_t wider[] = {s_text("us"), s_integer(2), s_null(), s_text("new")};
    s_upsert(writer, pairs, 4, wider);
    s_delete(writer, pairs, 2, pair);
    s_finish(writer, 2, true, &script, proto_dir, "set-pairs-wider");
    s_step(&script, 1);
    s_step(&script, 3);
    s_write(apply_dir, "pairs-schema", script.data, script.size);

    /* The commands, each with a real set where it carries one. */
    uint8_t *set = NULL;
    size_t set_size = 0;
    items = s_items(writer);
    s_upsert(writer, items, 5, later);
    if (vs_changeset_writer_finish(writer, 5, 6, VS_CHANGESET_CONSISTENT, &set, &set_size) !=
        VS_OK) {
        s_die("finish");
    }
    static const uint8_t hash[VS_HASH_SIZE] = {1, 2, 3};
    vs_entry_t entries[2] = {{.seq = 7,
                              .hash = {(const char *) hash, VS_HASH_SIZE},
                              .changeset = {(const char *) set, set_size}},
                             {.seq = 8,
                              .hash = {(const char *) hash, VS_HASH_SIZE},
                              .changeset = {(const char *) set, set_size}}};
    vs_publisher_info_t publisher = {.id = {"pub-1", 5}, .last_version = 6};
    vs_stream_info_t stream = {.name = {"orders", 6},
                               .head = 8,
                               .hash = {(const char *) hash, VS_HASH_SIZE},
                               .publisher_count = 1,
                               .publishers = &publisher};
    static const char *const names[] = {"",       "publish",      "ack",   "fetch", "chunk",
                                        "status", "status-reply", "error", "live",  "heartbeat"};
    for (int command = VS_CMD_PUBLISH; command <= VS_CMD_HEARTBEAT; command++) {
        vs_msg_t msg;
        memset(&msg, 0, sizeof msg);
        msg.command = (vs_command_t) command;
        msg.request_id = command == VS_CMD_LIVE || command == VS_CMD_HEARTBEAT ? 0 : 42;
        if (command != VS_CMD_STATUS && command != VS_CMD_STATUS_REPLY && command != VS_CMD_ERROR) {
            msg.stream = (vs_bytes_t){"orders", 6};
        }
        msg.publisher = publisher.id;
        msg.changeset = (vs_bytes_t){(const char *) set, set_size};
        msg.last_version = 6;
        msg.seq = 8;
        msg.since = 6;
        msg.head = 8;
        msg.hash = (vs_bytes_t){(const char *) hash, VS_HASH_SIZE};
        msg.entry_count = 2;
        msg.entries = entries;
        msg.stream_count = 1;
        msg.streams = &stream;
        msg.code = VS_EBEHIND;
        msg.reason = (vs_bytes_t){"the history ends", 16};
        uint8_t *data = NULL;
        size_t size = 0;
        if (vs_msg_encode(&msg, &data, &size) != VS_OK) {
            s_die(names[command]);
        }
        char name[64];
        snprintf(name, sizeof name, "command-%s", names[command]);
        s_write(proto_dir, name, data, size);
        free(data);
        if (command == VS_CMD_PUBLISH) {
            msg.has_acked = true;
            msg.acked = 5;
            if (vs_msg_encode(&msg, &data, &size) != VS_OK) {
                s_die("publish with acked");
            }
            s_write(proto_dir, "command-publish-acked", data, size);
            free(data);
        }
    }
    free(set);
    vs_changeset_writer_destroy(&writer);
    return 0;
}
