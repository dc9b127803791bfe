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
    msgpack_packer change_packer;
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
    vs_mp_packer_init(&self->change_packer, &self->changes);
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

/*  Appends [table, op, [value...]] after checking every value.                                 */
static int s_append_change(vs_changeset_writer_t *self, uint32_t table_index, vs_op_t op,
                           size_t value_count, const vs_value_t *values)
{
    size_t bound = 1 + 5 + 1 + 5;
    size_t rollback;
    msgpack_packer *packer = &self->change_packer;
    int rc;
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
    rollback = self->changes.size;
    rc = msgpack_pack_array(packer, 3);
    rc |= msgpack_pack_uint32(packer, table_index);
    rc |= msgpack_pack_uint32(packer, (uint32_t) op);
    rc |= msgpack_pack_array(packer, value_count);
    for (size_t index = 0; index < value_count; index++) {
        const vs_value_t *value = &values[index];
        switch (value->type) {
        case VS_INTEGER: rc |= msgpack_pack_int64(packer, value->as.integer); break;
        case VS_REAL: rc |= msgpack_pack_double(packer, value->as.real); break;
        case VS_TEXT:
            rc |= msgpack_pack_str_with_body(packer, value->as.bytes.data, value->as.bytes.size);
            break;
        case VS_BLOB:
            rc |= msgpack_pack_bin_with_body(packer, value->as.bytes.data, value->as.bytes.size);
            break;
        default: rc |= msgpack_pack_nil(packer); break;
        }
    }
    if (rc != 0) {
        self->changes.size = rollback;
        return VS_ENOMEM;
    }
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
