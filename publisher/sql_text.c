/*  sql_text.c - the tokens of SQL text (sql_text.h).                                        */
#include "sql_text.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool s_word_char(char c)
{
    return isalnum((unsigned char) c) || c == '_' || c == '$' || (unsigned char) c >= 0x80;
}

vs_sql_kind_t vs_sql_next(const char **at, const char **start, size_t *length)
{
    const char *text = *at;
    for (;;) {
        if (isspace((unsigned char) *text)) {
            text++;
        } else if (text[0] == '-' && text[1] == '-') {
            const char *end = strchr(text, '\n');
            text = end ? end + 1 : text + strlen(text); /* a line comment may end the text */
        } else if (text[0] == '/' && text[1] == '*') {
            const char *end = strstr(text + 2, "*/");
            if (!end) {
                *at = text + strlen(text);
                return VS_SQL_OPEN;
            }
            text = end + 2;
        } else {
            break;
        }
    }
    const char *first = text;
    vs_sql_kind_t kind;
    if (!*text) {
        kind = VS_SQL_END;
    } else if (*text == '\'' || *text == '"' || *text == '`' || *text == '[') {
        char close = *text == '[' ? ']' : *text;
        kind = VS_SQL_OPEN;
        for (text++; *text; text++) {
            if (*text == close && (close == ']' || text[1] != close)) {
                text++;
                kind = VS_SQL_QUOTED;
                break;
            }
            if (*text == close) {
                text++; /* a doubled quote */
            }
        }
    } else if (s_word_char(*text)) {
        while (s_word_char(*text)) {
            text++;
        }
        kind = VS_SQL_WORD;
    } else {
        text++;
        kind = VS_SQL_OTHER;
    }
    if (start) {
        *start = first;
    }
    if (length) {
        *length = (size_t) (text - first);
    }
    *at = text;
    return kind;
}

bool vs_sql_is_word(vs_sql_kind_t kind, const char *start, size_t length, const char *word)
{
    return kind == VS_SQL_WORD && length == strlen(word) && strncasecmp(start, word, length) == 0;
}
