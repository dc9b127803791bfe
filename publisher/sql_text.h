/*  sql_text.h - the tokens of SQL text, as far as the publisher reads it: the WHERE of a
    partial index (capture.c) and a ROLLBACK TO among an application's statements (writer.c).
    Not a parser: it knows white space, comments, quoted names and strings, words and single
    characters.                                                                              */
#ifndef VS_SQL_TEXT_H_INCLUDED
#define VS_SQL_TEXT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    VS_SQL_END,    /* no token left                                                       */
    VS_SQL_WORD,   /* a keyword or bare name: letters, digits, _ and $, and UTF-8 bytes    */
    VS_SQL_QUOTED, /* '...', "...", `...` or [...], quotes included (doubled ones inside)  */
    VS_SQL_OTHER,  /* any other single character: ( ) ; , = and so on                     */
    VS_SQL_OPEN    /* a quote or a comment left open at the end of the text               */
} vs_sql_kind_t;

/*  The token at *at, past white space and comments: its kind, and where it starts and how
    long it is (*start and *length, when not NULL). Moves *at past it; at VS_SQL_END and
    VS_SQL_OPEN *at is left at the end of the text.                                          */
vs_sql_kind_t vs_sql_next(const char **at, const char **start, size_t *length);

/*  True when a token is the word (ASCII, any case).                                         */
bool vs_sql_is_word(vs_sql_kind_t kind, const char *start, size_t length, const char *word);

#endif
