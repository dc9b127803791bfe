/*  changeset_reader.c - validates an encoded change set in one pass, then iterates it.

    vs_changeset_open walks every byte once, checking the tables and every change against
    them while keeping each table's counts in small arrays on the stack, so a bad set costs
    no allocation at all. Only then does it allocate ONE block for the tables, their column
    names, their pk indexes and the value buffer (all bounded by the limits and by the bytes
    of the set) and decode the tables into it. vs_changeset_next decodes changes from the
    validated bytes.                                                                          */
#include "mp_read.h"

#include <stdlib.h>
#include <string.h>

/*  The counts of one table, collected by the validating pass.                                 */
typedef struct {
    uint16_t column_count;
    uint8_t pk_count;
} s_table_shape_t;

/*  Fails with code and a static reason.                                                        */
static int s_fail(const char **why, int code, const char *reason)
{
    if (why) {
        *why = reason;
    }
    return code;
}

/*  A table or column name: 1 .. VS_MAX_NAME bytes, no NUL.                                     */
static int s_read_name(vs_mp_reader_t *reader, vs_bytes_t *name, const char **why)
{
    if (vs_mp_read_str(reader, name) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (name->size == 0) {
        return s_fail(why, VS_EPROTO, "empty table or column name");
    }
    if (name->size > VS_MAX_NAME) {
        return s_fail(why, VS_EMSGSIZE, "table or column name over 255 bytes");
    }
    if (memchr(name->data, '\0', name->size) != NULL) {
        return s_fail(why, VS_EPROTO, "NUL byte in a table or column name");
    }
    return VS_OK;
}

/*  Reads one table [name, create_sql, [column...], [pk...]]. With table NULL it only checks
    and reports the counts in *shape; otherwise it also fills *table, whose columns and
    pk_columns arrays the caller has sized from a checking pass.                               */
static int s_read_table(vs_mp_reader_t *reader, s_table_shape_t *shape, vs_table_t *table,
                        const char **why)
{
    uint32_t count;
    uint32_t column_count;
    uint32_t pk_count;
    vs_bytes_t name;
    vs_bytes_t sql;
    int rc;
    if (vs_mp_read_array(reader, &count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (count != 4) {
        return s_fail(why, VS_EPROTO, "a table must be [name, create_sql, columns, pk]");
    }
    rc = s_read_name(reader, &name, why);
    if (rc != VS_OK) {
        return rc;
    }
    if (vs_mp_read_str(reader, &sql) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (sql.size > VS_MAX_SQL) {
        return s_fail(why, VS_EMSGSIZE, "create_sql over 64 KiB");
    }
    if (vs_mp_read_array(reader, &column_count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (column_count == 0) {
        return s_fail(why, VS_EPROTO, "a table without columns");
    }
    if (column_count > VS_MAX_COLUMNS) {
        return s_fail(why, VS_EMSGSIZE, "a table with more than 2000 columns");
    }
    for (uint32_t column = 0; column < column_count; column++) {
        vs_bytes_t column_name;
        rc = s_read_name(reader, &column_name, why);
        if (rc != VS_OK) {
            return rc;
        }
        if (table) {
            table->columns[column] = column_name;
        }
    }
    if (vs_mp_read_array(reader, &pk_count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (pk_count == 0) {
        return s_fail(why, VS_EPROTO, "a table without primary key columns");
    }
    if (pk_count > VS_MAX_PK_COLUMNS) {
        return s_fail(why, VS_EMSGSIZE, "a primary key of more than 8 columns");
    }
    {
        uint32_t keys[VS_MAX_PK_COLUMNS];
        for (uint32_t key = 0; key < pk_count; key++) {
            uint64_t index;
            if (vs_mp_read_uint(reader, &index) != VS_OK) {
                return s_fail(why, VS_EPROTO, reader->why);
            }
            if (index >= column_count) {
                return s_fail(why, VS_EPROTO, "primary key column index out of range");
            }
            for (uint32_t earlier = 0; earlier < key; earlier++) {
                if (keys[earlier] == index) {
                    return s_fail(why, VS_EPROTO, "primary key column listed twice");
                }
            }
            keys[key] = (uint32_t) index;
        }
        if (table) {
            memcpy(table->pk_columns, keys, pk_count * sizeof keys[0]);
        }
    }
    shape->column_count = (uint16_t) column_count;
    shape->pk_count = (uint8_t) pk_count;
    if (table) {
        table->name = name;
        table->create_sql = sql;
        table->column_count = column_count;
        table->pk_count = pk_count;
    }
    return VS_OK;
}

/*  Checks one change [table, op, [value...]] against the tables' shapes.                      */
static int s_check_change(vs_mp_reader_t *reader, const s_table_shape_t *shapes,
                          uint32_t table_count, const char **why)
{
    uint32_t count;
    uint64_t table;
    uint64_t op;
    uint32_t value_count;
    if (vs_mp_read_array(reader, &count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (count != 3) {
        return s_fail(why, VS_EPROTO, "a change must be [table, op, values]");
    }
    if (vs_mp_read_uint(reader, &table) != VS_OK || vs_mp_read_uint(reader, &op) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (table >= table_count) {
        return s_fail(why, VS_EPROTO, "change names a table index out of range");
    }
    if (op != VS_OP_UPSERT && op != VS_OP_DELETE) {
        return s_fail(why, VS_EPROTO, "change op is neither 1 (UPSERT) nor 2 (DELETE)");
    }
    if (vs_mp_read_array(reader, &value_count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader->why);
    }
    if (op == VS_OP_UPSERT && value_count != shapes[table].column_count) {
        return s_fail(why, VS_EPROTO, "UPSERT value count differs from the table's columns");
    }
    if (op == VS_OP_DELETE && value_count != shapes[table].pk_count) {
        return s_fail(why, VS_EPROTO, "DELETE value count differs from the table's key");
    }
    for (uint32_t index = 0; index < value_count; index++) {
        if (vs_mp_skip_value(reader) != VS_OK) {
            return s_fail(why, VS_EPROTO, reader->why);
        }
    }
    return VS_OK;
}

static int s_open(vs_changeset_t *self, const void *data, size_t size, bool check_changes,
                  const char **why)
{
    s_table_shape_t shapes[VS_MAX_TABLES];
    vs_mp_reader_t reader;
    uint32_t count;
    uint64_t first_version;
    uint64_t last_version;
    uint64_t flags;
    uint32_t table_count;
    uint32_t change_count;
    const uint8_t *tables_start;
    const uint8_t *changes_start;
    size_t column_total = 0;
    size_t pk_total = 0;
    size_t value_max = 0;
    size_t block_size;
    char *block;
    int rc;
    if (self == NULL || (data == NULL && size > 0)) {
        return s_fail(why, VS_EINVAL, "no change set");
    }
    memset(self, 0, sizeof *self);
    if (size > VS_MAX_CHANGESET) {
        return s_fail(why, VS_EMSGSIZE, "change set over 64 MiB");
    }
    vs_mp_reader_init(&reader, data, size);
    if (vs_mp_read_array(&reader, &count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader.why);
    }
    if (count != 5) {
        return s_fail(why, VS_EPROTO,
                      "a change set must be [first_version, last_version, flags, tables, changes]");
    }
    if (vs_mp_read_uint(&reader, &first_version) != VS_OK ||
        vs_mp_read_uint(&reader, &last_version) != VS_OK ||
        vs_mp_read_uint(&reader, &flags) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader.why);
    }
    if (first_version == 0) {
        return s_fail(why, VS_EPROTO, "change set first_version is 0");
    }
    if (first_version > last_version) {
        return s_fail(why, VS_EPROTO, "change set first_version above last_version");
    }
    if ((flags & ~(uint64_t) VS_CHANGESET_KNOWN_FLAGS) != 0) {
        return s_fail(why, VS_EPROTO, "change set has unknown flag bits");
    }
    if (vs_mp_read_array(&reader, &table_count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader.why);
    }
    if (table_count > VS_MAX_TABLES) {
        return s_fail(why, VS_EMSGSIZE, "change set has more than 1024 tables");
    }
    tables_start = reader.pos;
    for (uint32_t table = 0; table < table_count; table++) {
        rc = s_read_table(&reader, &shapes[table], NULL, why);
        if (rc != VS_OK) {
            return rc;
        }
        column_total += shapes[table].column_count;
        pk_total += shapes[table].pk_count;
        if (shapes[table].column_count > value_max) {
            value_max = shapes[table].column_count;
        }
    }
    if (vs_mp_read_array(&reader, &change_count) != VS_OK) {
        return s_fail(why, VS_EPROTO, reader.why);
    }
    changes_start = reader.pos;
    for (uint32_t change = 0; check_changes && change < change_count; change++) {
        rc = s_check_change(&reader, shapes, table_count, why);
        if (rc != VS_OK) {
            return rc;
        }
    }
    if (check_changes && reader.pos != reader.end) {
        return s_fail(why, VS_EPROTO, "trailing bytes after the change set");
    }

    /*  Valid: one block holds tables, column names, values, then pk indexes (by alignment).   */
    block_size = table_count * sizeof(vs_table_t) + column_total * sizeof(vs_bytes_t) +
                 value_max * sizeof(vs_value_t) + pk_total * sizeof(uint32_t);
    block = NULL;
    if (block_size > 0) {
        block = malloc(block_size);
        if (block == NULL) {
            return s_fail(why, VS_ENOMEM, "out of memory");
        }
    }
    if (block != NULL) { /* NULL: no table, so nothing to point into (NULL + 0 is undefined) */
        vs_table_t *tables = (vs_table_t *) block;
        vs_bytes_t *columns = (vs_bytes_t *) (tables + table_count);
        vs_value_t *values = (vs_value_t *) (columns + column_total);
        uint32_t *pks = (uint32_t *) (values + value_max);
        vs_mp_reader_init(&reader, tables_start, (size_t) (changes_start - tables_start));
        for (uint32_t table = 0; table < table_count; table++) {
            s_table_shape_t shape;
            tables[table].columns = columns;
            tables[table].pk_columns = pks;
            rc = s_read_table(&reader, &shape, &tables[table], why);
            if (rc != VS_OK) {
                free(block); /* cannot happen: the same bytes passed above */
                memset(self, 0, sizeof *self);
                return rc;
            }
            columns += shape.column_count;
            pks += shape.pk_count;
        }
        self->tables = table_count ? tables : NULL;
        self->value_buffer = value_max ? values : NULL;
    }
    self->first_version = first_version;
    self->last_version = last_version;
    self->flags = (uint32_t) flags;
    self->table_count = table_count;
    self->change_count = change_count;
    self->changes = changes_start;
    self->cursor = changes_start;
    self->end = (const uint8_t *) data + size;
    self->next_change = 0;
    return VS_OK;
}

int vs_changeset_open(vs_changeset_t *self, const void *data, size_t size, const char **why)
{
    return s_open(self, data, size, true, why);
}

int vs_changeset_open_incremental(vs_changeset_t *self, const void *data, size_t size,
                                  const char **why)
{
    return s_open(self, data, size, false, why);
}

const char *vs_changeset_error(const vs_changeset_t *self)
{
    return self ? self->error : NULL;
}

bool vs_changeset_next(vs_changeset_t *self, vs_change_t *change)
{
    vs_mp_reader_t reader;
    uint32_t count;
    uint64_t table;
    uint64_t op;
    uint32_t value_count;
    if (self == NULL || change == NULL) {
        return false;
    }
    if (self->next_change >= self->change_count) {
        if (!self->error && self->cursor != self->end) {
            self->error = "trailing bytes after the change set";
            self->cursor = self->end;
        }
        return false;
    }
    /*  After vs_changeset_open these checks only guard against misuse; after
        vs_changeset_open_incremental they are the validation, the same as s_check_change's
        (vs_mp_read_value accepts exactly what vs_mp_skip_value does).                       */
    reader.pos = self->cursor;
    reader.end = self->end;
    reader.why = NULL;
    if (vs_mp_read_array(&reader, &count) != VS_OK) {
        goto corrupt;
    }
    if (count != 3) {
        reader.why = "a change must be [table, op, values]";
        goto corrupt;
    }
    if (vs_mp_read_uint(&reader, &table) != VS_OK || vs_mp_read_uint(&reader, &op) != VS_OK) {
        goto corrupt;
    }
    if (table >= self->table_count) {
        reader.why = "change names a table index out of range";
        goto corrupt;
    }
    if (op != VS_OP_UPSERT && op != VS_OP_DELETE) {
        reader.why = "change op is neither 1 (UPSERT) nor 2 (DELETE)";
        goto corrupt;
    }
    if (vs_mp_read_array(&reader, &value_count) != VS_OK) {
        goto corrupt;
    }
    {
        const vs_table_t *shape = &self->tables[table];
        if (value_count != (op == VS_OP_UPSERT ? shape->column_count : shape->pk_count)) {
            reader.why = op == VS_OP_UPSERT ? "UPSERT value count differs from the table's columns"
                                            : "DELETE value count differs from the table's key";
            goto corrupt;
        }
    }
    for (uint32_t index = 0; index < value_count; index++) {
        if (vs_mp_read_value(&reader, &self->value_buffer[index]) != VS_OK) {
            goto corrupt;
        }
    }
    change->table = (uint32_t) table;
    change->op = (vs_op_t) op;
    change->value_count = value_count;
    change->values = self->value_buffer;
    self->cursor = reader.pos;
    self->next_change++;
    return true;

corrupt:
    self->next_change = self->change_count;
    self->error = reader.why ? reader.why : "malformed change";
    self->cursor = self->end;
    return false;
}

void vs_changeset_rewind(vs_changeset_t *self)
{
    if (self == NULL) {
        return;
    }
    self->cursor = self->changes;
    self->next_change = 0;
    self->error = NULL;
}

void vs_changeset_close(vs_changeset_t *self)
{
    if (self == NULL) {
        return;
    }
    free(self->tables); /* the one block holding tables, columns, pks and values */
    memset(self, 0, sizeof *self);
}
