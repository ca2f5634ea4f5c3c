/* check.c - the syntax-tree rules applied to a cell before it runs.
 *
 * Owns: a walk over the tree that compile(..., PyCF_ONLY_AST) returns,
 * refusing banned imports, exec/eval/compile called by name and (when asked)
 * def/class, plus a process-wide cache of the _ast classes and interned
 * attribute names the walk needs.
 *
 * Invariants:
 *   - Runs with the GIL held, so the lazy cache needs no lock.  The cache
 *     holds strong references that are never released: the engine supports
 *     one interpreter only (see engine.c), and its _ast classes live as long
 *     as that interpreter.
 *   - The walk is generic (type(node)._fields in order, depth first, each
 *     node checked before its children), so new node kinds in later Python
 *     versions are still searched.  "First violation" means first in that
 *     order, which is source order except where a node lists its fields out
 *     of source order (e.g. a def's decorators come after its body).
 *   - Every node visit is bracketed by Py_EnterRecursiveCall, so a deep or
 *     cyclic tree ends in RecursionError, never a C stack overflow.
 *   - This is a cheap first line, not the boundary: the audit hook still
 *     sees every import, exec and compile that gets past it.
 */
#include "check.h"
#include "state.h"

#include <string.h>

/* The _ast classes the rules look at.  T_AST is the base of every node. */
enum { T_AST, T_IMPORT, T_IMPORTFROM, T_CALL, T_NAME, T_FUNCTIONDEF,
       T_ASYNCFUNCTIONDEF, T_CLASSDEF, T_COUNT };
static const char *const check_type_names[T_COUNT] = {
    "AST", "Import", "ImportFrom", "Call", "Name", "FunctionDef",
    "AsyncFunctionDef", "ClassDef",
};
_Static_assert(T_COUNT == SP_CHECK_NTYPES, "state.h: SP_CHECK_NTYPES");
/* The node types, in the engine state (state.h). */
static PyTypeObject **const check_types = sp_state.check.types;

/* Interned attribute names, so each getattr is a pointer-compared lookup. */
enum { S_FIELDS, S_NAMES, S_NAME, S_MODULE, S_LEVEL, S_FUNC, S_ID, S_LINENO,
       S_COUNT };
static const char *const check_str_values[S_COUNT] = {
    "_fields", "names", "name", "module", "level", "func", "id", "lineno",
};
_Static_assert(S_COUNT == SP_CHECK_NSTRS, "state.h: SP_CHECK_NSTRS");
/* The interned attribute names, in the engine state (state.h). */
static PyObject **const check_strs = sp_state.check.strs;


typedef struct {
    PyObject *banned;   /* tuple of str, validated by sp_check_tree */
    int ban_defs;
    PyObject *filename; /* shown with str() in messages */
} check_ctx;

#define check_is(obj, t) PyObject_TypeCheck((obj), check_types[(t)])

/* Fill the cache on first use.  Entries already filled by an earlier,
 * failed attempt are kept, so a retry neither leaks nor redoes them. */
static int
check_init(void)
{
    PyObject *mod = NULL;
    int rc = -1;
    if (sp_state.check.ready) {
        return 0;
    }
    for (int i = 0; i < S_COUNT; i++) {
        if (check_strs[i] == NULL) {
            check_strs[i] = PyUnicode_InternFromString(check_str_values[i]);
            if (check_strs[i] == NULL) {
                goto done;
            }
        }
    }
    /* _ast, not ast: the C module is always loaded by compile() and
     * importing it runs no Python code. */
    mod = PyImport_ImportModule("_ast");
    if (mod == NULL) {
        goto done;
    }
    for (int i = 0; i < T_COUNT; i++) {
        if (check_types[i] != NULL) {
            continue;
        }
        PyObject *cls = PyObject_GetAttrString(mod, check_type_names[i]);
        if (cls == NULL) {
            goto done;
        }
        if (!PyType_Check(cls)) {
            PyErr_Format(PyExc_TypeError, "_ast.%s is not a class",
                         check_type_names[i]);
            Py_DECREF(cls);
            goto done;
        }
        check_types[i] = (PyTypeObject *)cls;
    }
    sp_state.check.ready = 1;
    rc = 0;
done:
    Py_XDECREF(mod);
    return rc;
}

/* Raise PermissionError "<before><name><after> is not allowed in the
 * sandbox (<filename>, line <n>)"; name may be NULL.  Always returns -1. */
static int
check_refuse(const check_ctx *ctx, PyObject *node, const char *before,
             PyObject *name, const char *after)
{
    PyObject *lineno = PyObject_GetAttr(node, check_strs[S_LINENO]);
    if (lineno == NULL) {
        /* Only a hand-built tree lacks positions; still refuse with
         * PermissionError rather than let an AttributeError stand in. */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        lineno = PyUnicode_FromString("?");
        if (lineno == NULL) {
            return -1;
        }
    }
    PyErr_Format(PyExc_PermissionError,
                 "%s%V%s is not allowed in the sandbox (%S, line %S)",
                 before, name, "", after, ctx->filename, lineno);
    Py_DECREF(lineno);
    return -1;
}

/* Whether the dotted name `mod` (or `mod` + "." + `attr` when attr is not
 * NULL) equals `ban` or lies under it, i.e. starts with `ban` + ".".  The
 * two-part form spares building "importlib.util" for every from-import. */
static int
check_name_under(const char *mod, Py_ssize_t mlen, const char *attr,
                 Py_ssize_t alen, const char *ban, Py_ssize_t blen)
{
    Py_ssize_t total = attr == NULL ? mlen : mlen + 1 + alen;
    if (total < blen) {
        return 0;
    }
    if (blen <= mlen) {
        if (memcmp(mod, ban, (size_t)blen) != 0) {
            return 0;
        }
        /* The next character is mod[blen], or the joining "." */
        return blen == total || blen == mlen || mod[blen] == '.';
    }
    /* The ban reaches past mod into attr: mod "." must be its prefix. */
    if (attr == NULL || memcmp(mod, ban, (size_t)mlen) != 0 ||
        ban[mlen] != '.') {
        return 0;
    }
    Py_ssize_t rest = blen - mlen - 1;
    if (memcmp(attr, ban + mlen + 1, (size_t)rest) != 0) {
        return 0;
    }
    return rest == alen || attr[rest] == '.';
}

/* Read-only submodules of banned packages: they only read metadata and
 * package files (`from importlib.metadata import version` is a common
 * first line), while their parent's import machinery stays banned. */
static const char *const check_read_only[] = {"importlib.metadata",
                                              "importlib.resources", NULL};

/* Whether the name (mod[.attr]) lies under a read-only submodule that is
 * itself strictly under the ban `ban` (a ban naming the submodule, or
 * something inside it, still applies). */
static int
check_read_only_under(const char *mod, Py_ssize_t mlen, const char *attr,
                      Py_ssize_t alen, const char *ban, Py_ssize_t blen)
{
    for (int i = 0; check_read_only[i] != NULL; i++) {
        const char *ro = check_read_only[i];
        Py_ssize_t rlen = (Py_ssize_t)strlen(ro);
        if (rlen > blen && check_name_under(ro, rlen, NULL, 0, ban, blen) &&
            check_name_under(mod, mlen, attr, alen, ro, rlen)) {
            return 1;
        }
    }
    return 0;
}

/* 1 if the module `mod` (or its member `attr`, if not NULL) is banned or
 * under a banned name, 0 if not, -1 on error.  Compares UTF-8, which is
 * equivalent to comparing the str objects and, for the ASCII names code
 * uses, reads the strings' own buffers without allocating. */
static int
check_is_banned(const check_ctx *ctx, PyObject *mod, PyObject *attr)
{
    Py_ssize_t mlen, alen = 0, blen;
    const char *m = PyUnicode_AsUTF8AndSize(mod, &mlen);
    const char *a = NULL;
    if (m == NULL) {
        return -1;
    }
    if (attr != NULL && (a = PyUnicode_AsUTF8AndSize(attr, &alen)) == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ctx->banned); i++) {
        const char *b = PyUnicode_AsUTF8AndSize(
            PyTuple_GET_ITEM(ctx->banned, i), &blen);
        if (b == NULL) {
            return -1;
        }
        if (check_name_under(m, mlen, a, alen, b, blen) &&
            !check_read_only_under(m, mlen, a, alen, b, blen)) {
            return 1;
        }
    }
    return 0;
}

/* The aliases of an import statement against the list.  For `import a.b`
 * (mod NULL) each alias's own dotted name is checked and shown; for
 * `from mod import x` it is mod.x, so a banned submodule cannot be reached
 * through its parent, and mod is shown, as that is what the cell wrote. */
static int
check_aliases(const check_ctx *ctx, PyObject *node, PyObject *mod)
{
    PyObject *names = NULL, *alias = NULL, *name = NULL;
    int rc = -1;
    names = PyObject_GetAttr(node, check_strs[S_NAMES]);
    if (names == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; PyList_Check(names) && i < PyList_GET_SIZE(names);
         i++) {
        alias = Py_NewRef(PyList_GET_ITEM(names, i));
        name = PyObject_GetAttr(alias, check_strs[S_NAME]);
        if (name == NULL) {
            goto done;
        }
        if (PyUnicode_Check(name)) {
            int banned = mod == NULL ? check_is_banned(ctx, name, NULL)
                                     : check_is_banned(ctx, mod, name);
            if (banned == 0 && mod == NULL &&
                PyUnicode_FindChar(name, '.', 0, PyUnicode_GET_LENGTH(name), 1) >= 0) {
                /* `import importlib.metadata` binds `importlib` itself:
                 * allowed only with `as`, which binds the submodule. */
                PyObject *asname = PyObject_GetAttrString(alias, "asname");
                if (asname == NULL) {
                    goto done;
                }
                if (asname == Py_None) {
                    Py_ssize_t dot = PyUnicode_FindChar(
                        name, '.', 0, PyUnicode_GET_LENGTH(name), 1);
                    PyObject *top = dot < 0 ? NULL : PyUnicode_Substring(name, 0, dot);
                    banned = top == NULL ? -1 : check_is_banned(ctx, top, NULL);
                    Py_XDECREF(top);
                }
                Py_DECREF(asname);
            }
            if (banned != 0) {
                if (banned > 0) {
                    check_refuse(ctx, node, "import of '",
                                 mod == NULL ? name : mod, "'");
                }
                goto done;
            }
        }
        Py_CLEAR(name);
        Py_CLEAR(alias);
    }
    rc = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(alias);
    Py_XDECREF(names);
    return rc;
}

/* from mod import x: mod itself, then each mod.x.  Relative imports name
 * the cell's own package, never a banned top-level one, so skip them. */
static int
check_import_from(const check_ctx *ctx, PyObject *node)
{
    PyObject *level = NULL, *mod = NULL;
    int rc = -1, banned;
    level = PyObject_GetAttr(node, check_strs[S_LEVEL]);
    if (level == NULL) {
        goto done;
    }
    if (PyLong_Check(level)) {
        long n = PyLong_AsLong(level);
        if (n == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (n > 0) {
            rc = 0;
            goto done;
        }
    }
    mod = PyObject_GetAttr(node, check_strs[S_MODULE]);
    if (mod == NULL) {
        goto done;
    }
    if (!PyUnicode_Check(mod)) {
        rc = 0; /* None: "from . import x", only valid when relative */
        goto done;
    }
    /* `from importlib import metadata`: the package is banned, but each
     * name taken from it may be a read-only submodule; check_aliases
     * judges each mod.x.  Anything else from a banned module is refused
     * there too, as mod.x lies under the ban. */
    if ((banned = check_is_banned(ctx, mod, NULL)) < 0) {
        goto done;
    }
    rc = check_aliases(ctx, node, mod);
done:
    Py_XDECREF(mod);
    Py_XDECREF(level);
    return rc;
}

/* exec(...), eval(...), compile(...) by bare name.  Only the obvious
 * spelling is caught here: builtins.exec(...), an alias (e = eval; e(s))
 * or getattr(builtins, "exec") pass, and are left to the audit hook, which
 * sees the "exec" and "compile" events whatever the spelling. */
static int
check_call(const check_ctx *ctx, PyObject *node)
{
    PyObject *func = NULL, *id = NULL;
    int rc = -1;
    func = PyObject_GetAttr(node, check_strs[S_FUNC]);
    if (func == NULL) {
        goto done;
    }
    if (check_is(func, T_NAME)) {
        id = PyObject_GetAttr(func, check_strs[S_ID]);
        if (id == NULL) {
            goto done;
        }
        if (PyUnicode_Check(id) &&
            (PyUnicode_CompareWithASCIIString(id, "exec") == 0 ||
             PyUnicode_CompareWithASCIIString(id, "eval") == 0 ||
             PyUnicode_CompareWithASCIIString(id, "compile") == 0)) {
            check_refuse(ctx, node, "calling ", id, "()");
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(id);
    Py_XDECREF(func);
    return rc;
}

/* The rules for one node, before its children are visited. */
static int
check_node_rules(const check_ctx *ctx, PyObject *node)
{
    if (check_is(node, T_CALL)) {
        return check_call(ctx, node);
    }
    if (check_is(node, T_IMPORT)) {
        return check_aliases(ctx, node, NULL);
    }
    if (check_is(node, T_IMPORTFROM)) {
        return check_import_from(ctx, node);
    }
    if (ctx->ban_defs) {
        /* Lambda stays allowed: it cannot hold statements. */
        if (check_is(node, T_FUNCTIONDEF) ||
            check_is(node, T_ASYNCFUNCTIONDEF)) {
            return check_refuse(ctx, node, "defining functions", NULL, "");
        }
        if (check_is(node, T_CLASSDEF)) {
            return check_refuse(ctx, node, "defining classes", NULL, "");
        }
    }
    return 0;
}

/* Check node, then every AST value in its fields, directly or in a list.
 * The one recursive function, so each tree level costs one C frame. */
static int
check_visit_node(const check_ctx *ctx, PyObject *node)
{
    PyObject *fields = NULL, *value = NULL, *item = NULL;
    int rc = -1;
    if (Py_EnterRecursiveCall(" while checking a cell")) {
        return -1;
    }
    if (check_node_rules(ctx, node) < 0) {
        goto done;
    }
    fields = PyObject_GetAttr((PyObject *)Py_TYPE(node),
                              check_strs[S_FIELDS]);
    if (fields == NULL) {
        goto done;
    }
    if (!PyTuple_Check(fields)) {
        PyErr_Format(PyExc_TypeError, "%s._fields is not a tuple",
                     Py_TYPE(node)->tp_name);
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        value = PyObject_GetAttr(node, PyTuple_GET_ITEM(fields, i));
        if (value == NULL) {
            goto done;
        }
        if (check_is(value, T_AST)) {
            if (check_visit_node(ctx, value) < 0) {
                goto done;
            }
        }
        else if (PyList_Check(value)) {
            /* Size re-read and item held each time: nothing here should
             * run Python code, but a list must never be read stale. */
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(value); j++) {
                item = Py_NewRef(PyList_GET_ITEM(value, j));
                if (check_is(item, T_AST) &&
                    check_visit_node(ctx, item) < 0) {
                    goto done;
                }
                Py_CLEAR(item);
            }
        }
        /* Anything else (None, str, int, constants) holds no nodes. */
        Py_CLEAR(value);
    }
    rc = 0;
done:
    Py_XDECREF(item);
    Py_XDECREF(value);
    Py_XDECREF(fields);
    Py_LeaveRecursiveCall();
    return rc;
}

int
sp_check_tree(PyObject *tree, PyObject *banned, int ban_defs,
              PyObject *filename)
{
    if (check_init() < 0) {
        return -1;
    }
    if (!PyTuple_Check(banned)) {
        PyErr_SetString(PyExc_TypeError, "banned must be a tuple of str");
        return -1;
    }
    /* Validated once here so the matcher can read every entry as str. */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(banned); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(banned, i))) {
            PyErr_SetString(PyExc_TypeError, "banned must be a tuple of str");
            return -1;
        }
    }
    if (!check_is(tree, T_AST)) {
        PyErr_Format(PyExc_TypeError, "expected an AST node, not %s",
                     Py_TYPE(tree)->tp_name);
        return -1;
    }
    check_ctx ctx = {banned, ban_defs, filename};
    return check_visit_node(&ctx, tree);
}

/* ---- the text pre-filter --------------------------------------------------- */

/* Whether `word` occurs in text[0:n]; with `unless_after_dot`, occurrences
 * right after a '.' do not count. */
static int
check_text_has(const char *text, size_t n, const char *word, size_t len,
               int unless_after_dot)
{
    const char *p = text, *end = text + n;
    while (len > 0 && (size_t)(end - p) >= len) {
        const char *hit = memmem(p, (size_t)(end - p), word, len);
        if (hit == NULL) {
            return 0;
        }
        if (!unless_after_dot || hit == text || hit[-1] != '.') {
            return 1;
        }
        p = hit + 1;
    }
    return 0;
}

int
sp_check_needed(PyObject *source, PyObject *banned, int ban_defs)
{
    if (!PyUnicode_Check(source) || !PyUnicode_IS_ASCII(source)) {
        return 1;
    }
    const char *text = (const char *)PyUnicode_1BYTE_DATA(source);
    size_t n = (size_t)PyUnicode_GET_LENGTH(source);
    static const char *const calls[] = {"exec", "eval", "compile", NULL};
    for (int i = 0; calls[i] != NULL; i++) {
        if (check_text_has(text, n, calls[i], strlen(calls[i]), 1)) {
            return 1;
        }
    }
    if (ban_defs && (check_text_has(text, n, "def", 3, 0) ||
                     check_text_has(text, n, "class", 5, 0))) {
        return 1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(banned); i++) {
        Py_ssize_t len;
        const char *name = PyUnicode_Check(PyTuple_GET_ITEM(banned, i))
            ? PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(banned, i), &len)
            : NULL;
        if (name == NULL) {
            PyErr_Clear();
            return 1; /* let the tree walk report the bad entry */
        }
        if (check_text_has(text, n, name, (size_t)len, 0)) {
            return 1;
        }
    }
    return 0;
}
