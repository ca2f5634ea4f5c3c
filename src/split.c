/* split.c - find a cell's last top-level statement in its source text.
 *
 * Why: a cell's value is its last expression.  The slow way to find it
 * builds Python syntax-tree objects and compiles from them, which costs
 * more than compiling the cell itself.  This scan reads the text once and
 * says whether the last top-level statement is an expression statement and
 * where it starts, so compile.c can insert `RESULT = \` on a line of its
 * own right before it and compile the text directly.
 *
 * Invariants:
 *   - Conservative: the scan follows only what it fully understands
 *     (ASCII, '\n' line ends, brackets, comments, backslash continuations,
 *     every string form including f-strings with nested strings of the
 *     other quote) and answers SP_SPLIT_SLOW for anything else, so the
 *     caller takes the syntax-tree path.  tests/test_compile_fastpath.py
 *     checks the answers against the tree with generated sources.
 *   - A top-level statement starts a logical line at column 0.  The last
 *     such line starts the last top-level statement (indented lines after
 *     it are its body; else/except/... lines start with a keyword and are
 *     never expressions, like the statement they continue).
 *   - Pure function of its input: no Python objects, no state.
 */
#include "split.h"

#include <string.h>

#define SPLIT_MAX_NEST 4 /* f-strings inside f-strings, at most */

typedef struct {
    const char *s;
    size_t n;
    size_t i;
    int bad; /* the scan gave up: SP_SPLIT_SLOW */
} split_scan;

/* One logical line at bracket depth 0. */
typedef struct {
    size_t start, line;  /* first byte, first line */
    size_t end;          /* the '\n' that ends it, or n */
    int col0;            /* starts at column 0: a top-level statement */
    int first;           /* class of its first token (split_first) */
    int semicolon;       /* ';' at depth 0 */
    int assign;          /* '=' or an augmented assignment at depth 0 */
    int colon;           /* ':' at depth 0 */
    int walrus;          /* ':=' at depth 0 */
    int lambda;          /* `lambda` at depth 0 */
    int comment_last;    /* its last physical line has a comment */
    int blank_before;    /* the line above is blank or only a comment */
    size_t blank_start, blank_end; /* that line's bytes, without '\n' */
} split_logical;

enum split_first {
    FIRST_EXPR = 0,  /* may start an expression */
    FIRST_STMT,      /* a keyword that starts a simple statement */
    FIRST_COMPOUND,  /* a keyword or '@' that starts a compound statement */
    FIRST_UNSURE,    /* soft keywords, lambda, yield: let the tree decide */
};

static int
split_id_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int
split_id_char(char c)
{
    return split_id_start(c) || (c >= '0' && c <= '9');
}

static int
split_word_is(const char *w, size_t len, const char *kw)
{
    return strlen(kw) == len && memcmp(w, kw, len) == 0;
}

/* The class of a logical line starting with the word [w, w+len). */
static int
split_classify(const char *w, size_t len)
{
    static const char *const compound[] = {
        "if", "elif", "else", "for", "while", "try", "except", "finally",
        "with", "def", "class", "async", NULL};
    static const char *const simple[] = {
        "import", "from", "return", "pass", "del", "global", "nonlocal",
        "assert", "raise", "break", "continue", NULL};
    static const char *const unsure[] = {
        "match", "case", "type", "lambda", "yield", NULL};
    for (int k = 0; compound[k] != NULL; k++) {
        if (split_word_is(w, len, compound[k])) {
            return FIRST_COMPOUND;
        }
    }
    for (int k = 0; simple[k] != NULL; k++) {
        if (split_word_is(w, len, simple[k])) {
            return FIRST_STMT;
        }
    }
    for (int k = 0; unsure[k] != NULL; k++) {
        if (split_word_is(w, len, unsure[k])) {
            return FIRST_UNSURE;
        }
    }
    return FIRST_EXPR;
}

/* Whether [p, p+len) is a string prefix; sets *raw and *fmt.  Bytes
 * prefixes count (their literals scan like str). */
static int
split_prefix(const char *p, size_t len, int *raw, int *fmt)
{
    int r = 0, f = 0, b = 0, u = 0;
    if (len == 0 || len > 2) {
        return 0;
    }
    for (size_t k = 0; k < len; k++) {
        switch (p[k]) {
        case 'r': case 'R': r++; break;
        case 'f': case 'F': f++; break;
        case 'b': case 'B': b++; break;
        case 'u': case 'U': u++; break;
        default: return 0;
        }
    }
    if (r > 1 || f > 1 || b > 1 || u > 1 || (u && len > 1) || (f && b)) {
        return 0;
    }
    *raw = r;
    *fmt = f;
    return 1;
}

static void split_string(split_scan *sc, int raw, int fmt, int nest,
                         char outer_q, int outer_triple);

/* Inside an f-string's replacement field, just after its '{'.  Consumes
 * through the field's closing '}'.  `q`/`triple`: the f-string's quote. */
static void
split_field(split_scan *sc, char q, int triple, int nest)
{
    const char *s = sc->s;
    int depth = 0, spec = 0;
    if (nest > SPLIT_MAX_NEST) {
        sc->bad = 1;
        return;
    }
    while (!sc->bad) {
        if (sc->i >= sc->n) {
            sc->bad = 1;
            return;
        }
        char c = s[sc->i];
        /* 3.11 refuses backslashes in a field; a quote like the outer one
         * ends the string on 3.11 but nests on 3.12+: not ours to decide. */
        if (c == '\\' || c == q || (c == '\n' && !triple)) {
            sc->bad = 1;
            return;
        }
        if (spec) {
            /* The format spec: literal text and nested fields. */
            if (c == '{') {
                sc->i++;
                split_field(sc, q, triple, nest + 1);
                continue;
            }
            if (c == '}') {
                sc->i++;
                return;
            }
            if (c == '\'' || c == '"') {
                sc->bad = 1;
                return;
            }
            sc->i++;
            continue;
        }
        if (c == '#') {
            sc->bad = 1;
            return;
        }
        if (c == '\'' || c == '"') {
            split_string(sc, 0, 0, nest + 1, q, triple);
            continue;
        }
        if (split_id_start(c)) {
            size_t w = sc->i;
            while (sc->i < sc->n && split_id_char(s[sc->i])) {
                sc->i++;
            }
            if (sc->i < sc->n && (s[sc->i] == '\'' || s[sc->i] == '"')) {
                int raw, fmt;
                if (!split_prefix(s + w, sc->i - w, &raw, &fmt)) {
                    sc->bad = 1;
                    return;
                }
                split_string(sc, raw, fmt, nest + 1, q, triple);
            }
            continue;
        }
        if (c == '(' || c == '[' || c == '{') {
            depth++;
        }
        else if (c == ')' || c == ']') {
            if (--depth < 0) {
                sc->bad = 1;
                return;
            }
        }
        else if (c == '}') {
            if (depth == 0) {
                sc->i++;
                return;
            }
            depth--;
        }
        else if (c == '!' && depth == 0 && sc->i + 1 < sc->n &&
                 s[sc->i + 1] == '=') {
            sc->i += 2; /* the != operator, not a conversion */
            continue;
        }
        else if (c == ':' && depth == 0) {
            spec = 1;
        }
        sc->i++;
    }
}

/* A string literal whose opening quote is at sc->i; consumes through the
 * closing quote.  `outer_q` (0 if none): this literal sits in a field of
 * an f-string quoted with outer_q, which it must not contain (3.11 would
 * end the outer string there), nor a backslash or (unless the outer one is
 * triple-quoted) a newline. */
static void
split_string(split_scan *sc, int raw, int fmt, int nest, char outer_q,
             int outer_triple)
{
    const char *s = sc->s;
    size_t n = sc->n;
    char q = s[sc->i];
    int triple = sc->i + 2 < n && s[sc->i + 1] == q && s[sc->i + 2] == q;
    /* An f-string in a field of another: which quotes end which string
     * differs between 3.11 and 3.12+, so it is not followed. */
    if (nest > SPLIT_MAX_NEST || (fmt && outer_q != 0)) {
        sc->bad = 1;
        return;
    }
    sc->i += triple ? 3 : 1;
    while (!sc->bad) {
        if (sc->i >= n) {
            sc->bad = 1;
            return;
        }
        char c = s[sc->i];
        if (outer_q != 0 && (c == outer_q || c == '\\' ||
                             (c == '\n' && !outer_triple))) {
            sc->bad = 1;
            return;
        }
        if (c == '\\') {
            /* In every string form a backslash keeps the next character
             * from ending the literal.  In an f-string, \N{...} and a
             * backslash before a brace are not worth following. */
            if (sc->i + 1 >= n) {
                sc->bad = 1;
                return;
            }
            char d = s[sc->i + 1];
            if (fmt && (d == '{' || d == '}' || (!raw && d == 'N'))) {
                sc->bad = 1;
                return;
            }
            sc->i += 2;
            continue;
        }
        if (c == '\n' && !triple) {
            sc->bad = 1;
            return;
        }
        if (c == q) {
            if (!triple) {
                sc->i++;
                return;
            }
            if (sc->i + 2 < n && s[sc->i + 1] == q && s[sc->i + 2] == q) {
                sc->i += 3;
                return;
            }
            sc->i++;
            continue;
        }
        if (fmt && c == '{') {
            if (sc->i + 1 < n && s[sc->i + 1] == '{') {
                sc->i += 2;
                continue;
            }
            sc->i++;
            split_field(sc, q, triple, nest);
            continue;
        }
        if (fmt && c == '}') {
            if (sc->i + 1 < n && s[sc->i + 1] == '}') {
                sc->i += 2;
                continue;
            }
            sc->bad = 1;
            return;
        }
        sc->i++;
    }
}

/* An operator starting at sc->i (not a bracket, quote, '#', '\\' or
 * word); records what matters at depth 0 in `ll`. */
static void
split_operator(split_scan *sc, split_logical *ll, int depth)
{
    static const char *const ops3[] = {"//=", "**=", "<<=", ">>=", "...",
                                       NULL};
    static const char *const ops2[] = {
        "==", "!=", "<=", ">=", "->", ":=", "+=", "-=", "*=", "/=", "%=",
        "@=", "&=", "|=", "^=", "//", "**", "<<", ">>", NULL};
    const char *p = sc->s + sc->i;
    size_t left = sc->n - sc->i;
    const char *op = NULL;
    for (int k = 0; op == NULL && ops3[k] != NULL; k++) {
        if (left >= 3 && memcmp(p, ops3[k], 3) == 0) {
            op = ops3[k];
        }
    }
    for (int k = 0; op == NULL && ops2[k] != NULL; k++) {
        if (left >= 2 && memcmp(p, ops2[k], 2) == 0) {
            op = ops2[k];
        }
    }
    if (op == NULL) {
        if (strchr("+-*/%@&|^~<>=:.,;!", *p) == NULL) {
            sc->bad = 1; /* '$', '?', '`', control characters, ... */
            return;
        }
        if (*p == '!') {
            sc->bad = 1; /* a lone '!' is no Python operator */
            return;
        }
        sc->i++;
        if (depth == 0) {
            ll->assign |= *p == '=';
            ll->colon |= *p == ':';
            ll->semicolon |= *p == ';';
        }
        return;
    }
    size_t len = strlen(op);
    sc->i += len;
    if (depth == 0) {
        if (strcmp(op, ":=") == 0) {
            ll->walrus = 1;
        }
        else if (op[len - 1] == '=' && strcmp(op, "==") != 0 &&
                 strcmp(op, "!=") != 0 && strcmp(op, "<=") != 0 &&
                 strcmp(op, ">=") != 0) {
            ll->assign = 1; /* augmented assignment */
        }
    }
}

/* Scan one logical line starting at sc->i (its first non-blank byte).
 * Consumes through its terminating '\n' (or to the end). */
static void
split_logical_line(split_scan *sc, split_logical *ll)
{
    const char *s = sc->s;
    int depth = 0, first_done = 0, comment = 0;
    while (!sc->bad && sc->i < sc->n) {
        char c = s[sc->i];
        if (c == '\n') {
            if (depth == 0) {
                ll->end = sc->i;
                ll->comment_last = comment;
                sc->i++;
                return;
            }
            comment = 0;
            sc->i++;
            continue;
        }
        if (c == ' ' || c == '\t') {
            sc->i++;
            continue;
        }
        if (c == '#') {
            while (sc->i < sc->n && s[sc->i] != '\n') {
                sc->i++;
            }
            comment = 1;
            continue;
        }
        if (c == '\\') {
            /* Only as a line continuation, and not into a blank line
             * (which ends the statement there, an error we leave to the
             * parser). */
            if (sc->i + 1 >= sc->n || s[sc->i + 1] != '\n' || comment) {
                sc->bad = 1;
                return;
            }
            sc->i += 2;
            size_t j = sc->i;
            while (j < sc->n && (s[j] == ' ' || s[j] == '\t')) {
                j++;
            }
            if (j >= sc->n || s[j] == '\n' || s[j] == '#') {
                sc->bad = 1;
                return;
            }
            continue;
        }
        int word = split_id_start(c);
        if (!first_done) {
            first_done = 1;
            if (c == '@') {
                ll->first = FIRST_COMPOUND;
            }
            else if (word) {
                size_t j = sc->i;
                while (j < sc->n && split_id_char(s[j])) {
                    j++;
                }
                ll->first = split_classify(s + sc->i, j - sc->i);
            }
        }
        if (word) {
            size_t w = sc->i;
            while (sc->i < sc->n && split_id_char(s[sc->i])) {
                sc->i++;
            }
            if (sc->i < sc->n && (s[sc->i] == '\'' || s[sc->i] == '"')) {
                int raw, fmt;
                if (!split_prefix(s + w, sc->i - w, &raw, &fmt)) {
                    sc->bad = 1;
                    return;
                }
                split_string(sc, raw, fmt, 0, 0, 0);
            }
            else if (depth == 0 && split_word_is(s + w, sc->i - w, "lambda")) {
                ll->lambda = 1;
            }
            continue;
        }
        if (c >= '0' && c <= '9') {
            /* Numbers: digits, letters, '_' and '.', e.g. 1_000, 0x1F,
             * 1.5j; an exponent's sign is read as an operator, harmless.
             * A quote right after a number is an error: not followed. */
            while (sc->i < sc->n &&
                   (split_id_char(s[sc->i]) || s[sc->i] == '.')) {
                sc->i++;
            }
            if (sc->i < sc->n && (s[sc->i] == '\'' || s[sc->i] == '"')) {
                sc->bad = 1;
            }
            continue;
        }
        if (c == '\'' || c == '"') {
            split_string(sc, 0, 0, 0, 0, 0);
            continue;
        }
        if (c == '(' || c == '[' || c == '{') {
            depth++;
            sc->i++;
            continue;
        }
        if (c == ')' || c == ']' || c == '}') {
            if (--depth < 0) {
                sc->bad = 1;
                return;
            }
            sc->i++;
            continue;
        }
        if (c == '@' && depth == 0 && ll->first == FIRST_COMPOUND &&
            sc->i == ll->start) {
            sc->i++; /* a decorator's '@' */
            continue;
        }
        split_operator(sc, ll, depth);
    }
    if (!sc->bad && depth != 0) {
        sc->bad = 1; /* unclosed bracket at the end */
    }
    ll->end = sc->i;
    ll->comment_last = comment;
}

/* Whether "coding" appears in the first two lines: an encoding
 * declaration moves if a line is added above it. */
static int
split_has_coding(const char *s, size_t n)
{
    size_t lines = 0, i = 0;
    while (i < n && lines < 2) {
        size_t j = i;
        while (j < n && s[j] != '\n') {
            j++;
        }
        for (size_t k = i; k + 6 <= j; k++) {
            if (memcmp(s + k, "coding", 6) == 0) {
                return 1;
            }
        }
        lines++;
        i = j + 1;
    }
    return 0;
}

void
sp_split_scan(const char *s, size_t n, sp_split_result *out)
{
    split_scan sc = {s, n, 0, 0};
    split_logical cur, last_top, before_top, prev;
    int have_top = 0, have_prev = 0, have_before = 0;
    size_t line = 1;
    /* The latest blank or comment-only line outside any statement. */
    size_t blank_line = 0, blank_start = 0, blank_end = 0;

    memset(out, 0, sizeof(*out));
    out->kind = SP_SPLIT_SLOW;
    memset(&last_top, 0, sizeof(last_top));
    memset(&before_top, 0, sizeof(before_top));
    memset(&prev, 0, sizeof(prev));
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c >= 0x7f || (c < 0x20 && c != '\n' && c != '\t')) {
            return; /* non-ASCII, '\r', '\f', NUL, ...: the tree decides */
        }
    }
    if (split_has_coding(s, n)) {
        return;
    }
    while (sc.i < n) {
        size_t line_start = sc.i;
        while (sc.i < n && (s[sc.i] == ' ' || s[sc.i] == '\t')) {
            sc.i++;
        }
        if (sc.i >= n || s[sc.i] == '\n' || s[sc.i] == '#') {
            while (sc.i < n && s[sc.i] != '\n') {
                sc.i++;
            }
            blank_line = line;
            blank_start = line_start;
            blank_end = sc.i;
            if (sc.i < n) {
                sc.i++;
            }
            line++;
            continue;
        }
        memset(&cur, 0, sizeof(cur));
        cur.start = sc.i;
        cur.line = line;
        cur.col0 = sc.i == line_start;
        cur.blank_before = line > 1 && blank_line == line - 1;
        cur.blank_start = blank_start;
        cur.blank_end = blank_end;
        split_logical_line(&sc, &cur);
        if (sc.bad) {
            return;
        }
        for (size_t k = cur.start; k < sc.i; k++) {
            line += s[k] == '\n';
        }
        if (cur.col0) {
            before_top = prev;
            have_before = have_prev;
            last_top = cur;
            have_top = 1;
        }
        prev = cur;
        have_prev = 1;
    }
    if (!have_top) {
        out->kind = have_prev ? SP_SPLIT_SLOW : SP_SPLIT_NONE;
        return;
    }
    const split_logical *x = &last_top;
    if (x->first == FIRST_UNSURE || x->semicolon || x->walrus || x->lambda) {
        return;
    }
    if (x->first == FIRST_COMPOUND || x->first == FIRST_STMT || x->assign ||
        x->colon) {
        out->kind = SP_SPLIT_NONE;
        return;
    }
    out->line = x->line;
    out->offset = x->start;
    if (x->line == 1) {
        out->kind = SP_SPLIT_EXPR;
        out->insert = SP_INSERT_PREPEND;
        return;
    }
    if (x->blank_before) {
        out->kind = SP_SPLIT_EXPR;
        out->insert = SP_INSERT_REPLACE;
        out->start = x->blank_start;
        out->end = x->blank_end;
        return;
    }
    /* The statement before x must end on the line just above it, at the
     * top level, as a simple statement without a trailing comment. */
    if (have_before && before_top.col0 && before_top.end + 1 == x->start &&
        !before_top.comment_last && before_top.first != FIRST_COMPOUND &&
        before_top.first != FIRST_UNSURE) {
        out->kind = SP_SPLIT_EXPR;
        out->insert = SP_INSERT_APPEND;
        out->start = before_top.end;
        out->end = before_top.end;
    }
}
