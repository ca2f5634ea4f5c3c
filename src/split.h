/* split.h - find a cell's last top-level statement in its source text
 * (see split.c). */
#ifndef SP_SPLIT_H
#define SP_SPLIT_H

#include <stddef.h>

/* What the scan found. */
enum sp_split_kind {
    SP_SPLIT_SLOW = 0, /* not sure: the caller must use the syntax tree */
    SP_SPLIT_NONE,     /* no statement, or the last one is not an expression */
    SP_SPLIT_EXPR,     /* the last statement is an expression statement */
};

/* How to turn the last expression `E` into `RESULT = E` without moving
 * any of E's characters to another line or column: a line of its own
 * ending in a backslash must come right before E's first line. */
enum sp_split_insert {
    SP_INSERT_PREPEND = 1, /* E starts on line 1: a new first line (every
                            * line moves down by one; the caller moves the
                            * code's line numbers back) */
    SP_INSERT_REPLACE,     /* the line before E is blank or only a comment:
                            * replace bytes [start, end) of it */
    SP_INSERT_APPEND,      /* the line before E ends a top-level simple
                            * statement: insert "; RESULT = \" at `start` */
};

typedef struct {
    enum sp_split_kind kind;
    enum sp_split_insert insert; /* SP_SPLIT_EXPR only */
    size_t line;                 /* SP_SPLIT_EXPR: E's first line, 1-based */
    size_t offset;               /* SP_SPLIT_EXPR: E's first byte */
    size_t start, end;           /* SP_SPLIT_EXPR: see sp_split_insert */
} sp_split_result;

/* Scan `n` bytes of ASCII source `s` (no NUL).  Never fails: anything the
 * scan does not fully understand (non-ASCII bytes, '\r', form feeds, a
 * ';' or walrus in the last statement, soft keywords, lambda at the top
 * level, an f-string it cannot follow, unbalanced brackets, a coding
 * comment, ...) gives SP_SPLIT_SLOW.  Otherwise the answer is what the
 * parser's tree would say for source that compiles; for source that does
 * not compile the caller must fall back to the tree for the error. */
void sp_split_scan(const char *s, size_t n, sp_split_result *out);

#endif /* SP_SPLIT_H */
