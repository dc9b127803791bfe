/*  changeset_writer.c - builds one encoded change set from tables and row changes.

    Tables and changes are packed into two separate buffers as they come, because the changes
    array's count is only known at the end; finish joins [first, last, flags, tables, changes]
    into one heap buffer.                                                                     */
#include "mp_write.h"

#include <stdlib.h>
#include <string.h>

/*  What upsert and delete need to check their value counts.                                   */
typedef struct {
    uint32_t column_count;
    uint32_t pk_count;
} s_table_shape_t;

/*  The largest header finish adds before the tables and changes: fixarray, three uint64,
    two array32 headers.                                                                      */
#define S_SET_HEADER_MAX (1 + 3 * 9 + 2 * 5)

struct vs_changeset_writer {
    vs_mp_buffer_t tables;  /* packed table entries, without the array header  */
    vs_mp_buffer_t changes; /* packed changes, without the array header        */
    msgpack_packer table_packer;
    uint32_t table_count;
    size_t change_count;
    s_table_shape_t shapes[VS_MAX_TABLES];
};

vs_changeset_writer_t *vs_changeset_writer_new(void)
{
    vs_changeset_writer_t *self = calloc(1, sizeof *self);
    if (self == NULL) {
        return NULL;
    }
    vs_mp_packer_init(&self->table_packer, &self->tables);
    return self;
}

void vs_changeset_writer_destroy(vs_changeset_writer_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    vs_mp_buffer_free(&(*self_p)->tables);
    vs_mp_buffer_free(&(*self_p)->changes);
    free(*self_p);
    *self_p = NULL;
}

void vs_changeset_writer_reset(vs_changeset_writer_t *self)
{
    if (self == NULL) {
        return;
    }
    self->tables.size = 0;
    self->changes.size = 0;
    self->table_count = 0;
    self->change_count = 0;
}

/*  A table or column name: 1 .. VS_MAX_NAME bytes (a C string holds no NUL).                  */
static int s_check_name(const char *name, size_t *length)
{
    if (name == NULL) {
        return VS_EINVAL;
    }
    *length = strnlen(name, VS_MAX_NAME + 1);
    if (*length == 0) {
        return VS_EINVAL;
    }
    return *length > VS_MAX_NAME ? VS_EMSGSIZE : VS_OK;
}

int vs_changeset_writer_add_table(vs_changeset_writer_t *self, const char *name,
                                  const char *create_sql, size_t column_count,
                                  const char *const *columns, size_t pk_count,
                                  const uint32_t *pk_columns, uint32_t *table_index)
{
    size_t name_length;
    size_t sql_length;
    size_t bound;
    size_t rollback;
    msgpack_packer *packer;
    int rc;
    if (self == NULL || table_index == NULL || create_sql == NULL || columns == NULL ||
        pk_columns == NULL || column_count == 0 || pk_count == 0) {
        return VS_EINVAL;
    }
    if (self->table_count >= VS_MAX_TABLES || column_count > VS_MAX_COLUMNS ||
        pk_count > VS_MAX_PK_COLUMNS) {
        return VS_EMSGSIZE;
    }
    rc = s_check_name(name, &name_length);
    if (rc != VS_OK) {
        return rc;
    }
    sql_length = strnlen(create_sql, VS_MAX_SQL + 1);
    if (sql_length > VS_MAX_SQL) {
        return VS_EMSGSIZE;
    }
    bound = 5 + (2 + VS_MAX_NAME) + (5 + sql_length) + 3 + 3 + pk_count * 5;
    for (size_t column = 0; column < column_count; column++) {
        size_t column_length;
        rc = s_check_name(columns[column], &column_length);
        if (rc != VS_OK) {
            return rc;
        }
        bound += 2 + column_length;
    }
    for (size_t key = 0; key < pk_count; key++) {
        if (pk_columns[key] >= column_count) {
            return VS_EINVAL;
        }
        for (size_t earlier = 0; earlier < key; earlier++) {
            if (pk_columns[earlier] == pk_columns[key]) {
                return VS_EINVAL;
            }
        }
    }
    if (vs_mp_buffer_reserve(&self->tables, bound) != VS_OK) {
        return VS_ENOMEM;
    }
    /*  Room is reserved, so the packer cannot fail below.                                     */
    rollback = self->tables.size;
    packer = &self->table_packer;
    rc = msgpack_pack_array(packer, 4);
    rc |= msgpack_pack_str_with_body(packer, name, name_length);
    rc |= msgpack_pack_str_with_body(packer, create_sql, sql_length);
    rc |= msgpack_pack_array(packer, column_count);
    for (size_t column = 0; column < column_count; column++) {
        rc |= msgpack_pack_str_with_body(packer, columns[column], strlen(columns[column]));
    }
    rc |= msgpack_pack_array(packer, pk_count);
    for (size_t key = 0; key < pk_count; key++) {
        rc |= msgpack_pack_uint32(packer, pk_columns[key]);
    }
    if (rc != 0) {
        self->tables.size = rollback;
        return VS_ENOMEM;
    }
    self->shapes[self->table_count].column_count = (uint32_t) column_count;
    self->shapes[self->table_count].pk_count = (uint32_t) pk_count;
    *table_index = self->table_count++;
    return VS_OK;
}

/*  In-place msgpack for the changes, the hot path of every read a publisher makes: the same
    bytes msgpack-c's packer writes (the shortest form of each value; the golden vectors and
    test_changes_encoding hold them), written into room the caller has reserved.             */
static uint8_t *s_put_big_endian(uint8_t *out, uint64_t value, size_t size)
{
    for (size_t index = size; index > 0; index--) {
        out[index - 1] = (uint8_t) value;
        value >>= 8;
    }
    return out + size;
}

static uint8_t *s_put_head(uint8_t *out, uint8_t type, uint64_t value, size_t size)
{
    *out = type;
    return s_put_big_endian(out + 1, value, size);
}

static uint8_t *s_put_array(uint8_t *out, size_t count)
{
    if (count < 16) {
        *out = (uint8_t) (0x90 | count);
        return out + 1;
    }
    return count < 65536 ? s_put_head(out, 0xdc, count, 2) : s_put_head(out, 0xdd, count, 4);
}

static uint8_t *s_put_uint(uint8_t *out, uint64_t value)
{
    if (value < 128) {
        *out = (uint8_t) value;
        return out + 1;
    }
    return value < 256                    ? s_put_head(out, 0xcc, value, 1)
           : value < 65536                ? s_put_head(out, 0xcd, value, 2)
           : value < ((uint64_t) 1 << 32) ? s_put_head(out, 0xce, value, 4)
                                          : s_put_head(out, 0xcf, value, 8);
}

static uint8_t *s_put_int(uint8_t *out, int64_t value)
{
    if (value >= 0) {
        return s_put_uint(out, (uint64_t) value);
    }
    if (value >= -32) {
        *out = (uint8_t) value; /* negative fixint: 0xe0..0xff */
        return out + 1;
    }
    uint64_t bits = (uint64_t) value;
    return value >= -128          ? s_put_head(out, 0xd0, bits & 0xff, 1)
           : value >= -32768      ? s_put_head(out, 0xd1, bits & 0xffff, 2)
           : value >= -2147483648 ? s_put_head(out, 0xd2, bits & 0xffffffff, 4)
                                  : s_put_head(out, 0xd3, bits, 8);
}

static uint8_t *s_put_bytes(uint8_t *out, vs_type_t type, const void *data, size_t size)
{
    if (type == VS_TEXT) {
        if (size < 32) {
            *out++ = (uint8_t) (0xa0 | size);
        } else {
            out = size < 256     ? s_put_head(out, 0xd9, size, 1)
                  : size < 65536 ? s_put_head(out, 0xda, size, 2)
                                 : s_put_head(out, 0xdb, size, 4);
        }
    } else {
        out = size < 256     ? s_put_head(out, 0xc4, size, 1)
              : size < 65536 ? s_put_head(out, 0xc5, size, 2)
                             : s_put_head(out, 0xc6, size, 4);
    }
    if (size > 0) {
        memcpy(out, data, size);
    }
    return out + size;
}

/*  Appends [table, op, [value...]] after checking every value.                                 */
static int s_append_change(vs_changeset_writer_t *self, uint32_t table_index, vs_op_t op,
                           size_t value_count, const vs_value_t *values)
{
    size_t bound = 1 + 5 + 1 + 5;
    for (size_t index = 0; index < value_count; index++) {
        const vs_value_t *value = &values[index];
        switch (value->type) {
        case VS_INTEGER:
        case VS_REAL:
        case VS_NULL: bound += 9; break;
        case VS_TEXT:
        case VS_BLOB:
            if (value->as.bytes.data == NULL && value->as.bytes.size > 0) {
                return VS_EINVAL;
            }
            if (value->as.bytes.size > VS_MAX_CHANGESET) {
                return VS_EMSGSIZE;
            }
            bound += 5 + value->as.bytes.size;
            break;
        default: return VS_EINVAL;
        }
    }
    if (bound > VS_MAX_CHANGESET + (size_t) 9 * VS_MAX_COLUMNS) {
        return VS_EMSGSIZE;
    }
    if (vs_mp_buffer_reserve(&self->changes, bound) != VS_OK) {
        return VS_ENOMEM;
    }
    uint8_t *out = self->changes.data + self->changes.size;
    out = s_put_array(out, 3);
    out = s_put_uint(out, table_index);
    out = s_put_uint(out, (uint64_t) op);
    out = s_put_array(out, value_count);
    for (size_t index = 0; index < value_count; index++) {
        const vs_value_t *value = &values[index];
        switch (value->type) {
        case VS_INTEGER: out = s_put_int(out, value->as.integer); break;
        case VS_REAL: {
            uint64_t bits;
            memcpy(&bits, &value->as.real, sizeof bits);
            out = s_put_head(out, 0xcb, bits, 8);
            break;
        }
        case VS_TEXT:
        case VS_BLOB:
            out = s_put_bytes(out, value->type, value->as.bytes.data, value->as.bytes.size);
            break;
        default: *out++ = 0xc0; break;
        }
    }
    self->changes.size = (size_t) (out - self->changes.data);
    self->change_count++;
    return VS_OK;
}

int vs_changeset_writer_upsert(vs_changeset_writer_t *self, uint32_t table_index,
                               size_t value_count, const vs_value_t *values)
{
    if (self == NULL || values == NULL || table_index >= self->table_count ||
        value_count != self->shapes[table_index].column_count) {
        return VS_EINVAL;
    }
    return s_append_change(self, table_index, VS_OP_UPSERT, value_count, values);
}

int vs_changeset_writer_delete(vs_changeset_writer_t *self, uint32_t table_index, size_t key_count,
                               const vs_value_t *key)
{
    if (self == NULL || key == NULL || table_index >= self->table_count ||
        key_count != self->shapes[table_index].pk_count) {
        return VS_EINVAL;
    }
    return s_append_change(self, table_index, VS_OP_DELETE, key_count, key);
}

size_t vs_changeset_writer_size(const vs_changeset_writer_t *self)
{
    if (self == NULL) {
        return 0;
    }
    return S_SET_HEADER_MAX + self->tables.size + self->changes.size;
}

size_t vs_changeset_writer_change_count(const vs_changeset_writer_t *self)
{
    return self ? self->change_count : 0;
}

int vs_changeset_writer_finish(vs_changeset_writer_t *self, uint64_t first_version,
                               uint64_t last_version, uint32_t flags, uint8_t **data, size_t *size)
{
    vs_mp_buffer_t out = {0};
    msgpack_packer packer;
    int rc;
    if (self == NULL || data == NULL || size == NULL || first_version < 1 ||
        first_version > last_version || (flags & ~(uint32_t) VS_CHANGESET_KNOWN_FLAGS) != 0 ||
        self->change_count > UINT32_MAX) {
        return VS_EINVAL;
    }
    if (vs_changeset_writer_size(self) > VS_MAX_CHANGESET + (size_t) S_SET_HEADER_MAX) {
        return VS_EMSGSIZE;
    }
    if (vs_mp_buffer_reserve(&out, vs_changeset_writer_size(self)) != VS_OK) {
        return VS_ENOMEM;
    }
    vs_mp_packer_init(&packer, &out);
    rc = msgpack_pack_array(&packer, 5);
    rc |= msgpack_pack_uint64(&packer, first_version);
    rc |= msgpack_pack_uint64(&packer, last_version);
    rc |= msgpack_pack_uint32(&packer, flags);
    rc |= msgpack_pack_array(&packer, self->table_count);
    rc |= vs_mp_buffer_write(&out, (const char *) self->tables.data, self->tables.size);
    rc |= msgpack_pack_array(&packer, self->change_count);
    rc |= vs_mp_buffer_write(&out, (const char *) self->changes.data, self->changes.size);
    if (rc != 0) {
        vs_mp_buffer_free(&out);
        return VS_ENOMEM;
    }
    if (out.size > VS_MAX_CHANGESET) {
        vs_mp_buffer_free(&out);
        return VS_EMSGSIZE;
    }
    *data = out.data;
    *size = out.size;
    vs_changeset_writer_reset(self);
    return VS_OK;
}
