/* compile.c - a cell's source to a code object, and its linecache entry.
 *
 * Two paths give the same code (tests/test_compile_fastpath.py):
 *   - fast, when check.c's text filter says no rule can apply and split.c
 *     finds the last top-level statement in the text: compile the text
 *     directly, with `COMPILE_RESULT = \` on a line of its own right
 *     before a final expression (the expression keeps its lines and
 *     columns).  No Python syntax-tree objects are built.  Any compile
 *     error on this path is thrown away and the slow path run, so errors
 *     are exactly the slow path's.
 *   - slow (the reference): parse to a syntax tree (top-level await
 *     allowed); apply check.c's rules; if the last statement is an
 *     expression, turn it into an assignment to COMPILE_RESULT on the tree
 *     itself, so line numbers stay the cell's own; compile.
 * The source is registered in linecache as <pyrun_N> first, so tracebacks
 * and inspect.getsource show the cell.
 *
 * The functions used here (builtins.compile, the _ast node types) are
 * captured at the first import, before any cell could replace them.
 * State is process-wide and written once, GIL held.
 */
#include "compile.h"
#include "state.h"

#include "check.h"
#include "split.h"

#include <string.h>

#define COMPILE_RESULT "__safepyrun_result__"

/* This file's part of the engine state (state.h). */
static struct sp_compile_state *const compile_global = &sp_state.compile;

PyObject *
sp_compile_result_name(void)
{
    return compile_global->result_name;
}

PyObject *
sp_compile_srcfn(PyObject *src)
{
    PyObject *name = NULL, *lines = NULL, *entry = NULL, *cache = NULL;
    if (!PyUnicode_Check(src)) {
        PyErr_Format(PyExc_TypeError, "srcfn() argument must be str, not %.200s",
                     SP_TYPE_NAME(src));
        return NULL;
    }
    name = PyUnicode_FromFormat("<pyrun_%lu>", compile_global->srcfn_counter % 10);
    compile_global->srcfn_counter++;
    if (name == NULL) {
        goto error;
    }
    lines = PyUnicode_Splitlines(src, 1);
    if (lines == NULL) {
        goto error;
    }
    /* As linecache does for files: every line ends with a newline, so
     * inspect.getsource of a cell's last function is whole. */
    Py_ssize_t nlines = PyList_GET_SIZE(lines);
    if (nlines > 0) {
        PyObject *last = PyList_GET_ITEM(lines, nlines - 1);
        Py_ssize_t len = PyUnicode_GET_LENGTH(last);
        Py_UCS4 end = len > 0 ? PyUnicode_READ_CHAR(last, len - 1) : 0;
        if (end != '\n' && end != '\r') {
            PyObject *fixed = PyUnicode_FromFormat("%U\n", last);
            if (fixed == NULL || PyList_SetItem(lines, nlines - 1, fixed) < 0) {
                goto error;
            }
        }
    }
    entry = Py_BuildValue("(nOOO)", PyUnicode_GET_LENGTH(src), Py_None, lines,
                          name);
    /* Imported on first use: it is not cheap and `import safepyrun`
     * should be. */
    if (compile_global->linecache == NULL) {
        compile_global->linecache = PyImport_ImportModule("linecache");
        if (compile_global->linecache == NULL) {
            goto error;
        }
    }
    cache = PyObject_GetAttrString(compile_global->linecache, "cache");
    if (entry == NULL || cache == NULL) {
        goto error;
    }
    /* Only a real dict: a replacement object's __setitem__ would run
     * Python code outside the gate. */
    if (PyDict_CheckExact(cache) && PyDict_SetItem(cache, name, entry) < 0) {
        goto error;
    }
    Py_DECREF(lines);
    Py_DECREF(entry);
    Py_DECREF(cache);
    return name;
error:
    Py_XDECREF(name);
    Py_XDECREF(lines);
    Py_XDECREF(entry);
    Py_XDECREF(cache);
    return NULL;
}

static PyObject *
compile_py_srcfn(PyObject *module, PyObject *src)
{
    (void)module;
    return sp_compile_srcfn(src);
}

/* Copy the source location of `from` onto `to`. */
static int
compile_copy_location(PyObject *to, PyObject *from)
{
    static const char *const attrs[] = {"lineno", "col_offset", "end_lineno",
                                        "end_col_offset", NULL};
    for (int i = 0; attrs[i] != NULL; i++) {
        PyObject *v = PyObject_GetAttrString(from, attrs[i]);
        if (v == NULL) {
            return -1;
        }
        int rc = PyObject_SetAttrString(to, attrs[i], v);
        Py_DECREF(v);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* If the module's last statement is an expression, replace it in place by
 * `COMPILE_RESULT = <expression>` at the same location.  Returns 1 if it
 * did, 0 if there is no final expression, -1 on error. */
static int
compile_split_last(PyObject *tree)
{
    PyObject *body = NULL, *value = NULL, *name = NULL, *assign = NULL;
    PyObject *kw = NULL, *targets = NULL, *empty = NULL;
    int rc = -1;
    body = PyObject_GetAttrString(tree, "body");
    if (body == NULL) {
        goto done;
    }
    if (!PyList_Check(body) || PyList_GET_SIZE(body) == 0) {
        rc = 0;
        goto done;
    }
    Py_ssize_t last_i = PyList_GET_SIZE(body) - 1;
    PyObject *last = PyList_GET_ITEM(body, last_i); /* borrowed from body */
    if (!Py_IS_TYPE(last, (PyTypeObject *)compile_global->ast_expr)) {
        rc = 0;
        goto done;
    }
    value = PyObject_GetAttrString(last, "value");
    if (value == NULL) {
        goto done;
    }
    name = PyObject_CallFunctionObjArgs(compile_global->ast_name,
                                        compile_global->result_name,
                                        compile_global->ast_store, NULL);
    if (name == NULL || compile_copy_location(name, last) < 0) {
        goto done;
    }
    targets = PyList_New(1);
    if (targets == NULL) {
        goto done;
    }
    PyList_SET_ITEM(targets, 0, Py_NewRef(name));
    kw = Py_BuildValue("{sOsO}", "targets", targets, "value", value);
    empty = PyTuple_New(0);
    if (kw == NULL || empty == NULL) {
        goto done;
    }
    assign = PyObject_Call(compile_global->ast_assign, empty, kw);
    if (assign == NULL || compile_copy_location(assign, last) < 0) {
        goto done;
    }
    if (PyList_SetItem(body, last_i, Py_NewRef(assign)) < 0) {
        goto done;
    }
    rc = 1;
done:
    Py_XDECREF(body);
    Py_XDECREF(value);
    Py_XDECREF(name);
    Py_XDECREF(assign);
    Py_XDECREF(kw);
    Py_XDECREF(targets);
    Py_XDECREF(empty);
    return rc;
}

/* The line put before a final expression: it ends in a backslash, so the
 * expression continues it without moving. */
#define COMPILE_PREFIX COMPILE_RESULT " = \\"

/* Shift a code object's lines up by one (the line added on top by
 * SP_INSERT_PREPEND), with the code objects nested in it (functions,
 * lambdas, comprehensions): each keeps its line table, which is relative
 * to its co_firstlineno.  New reference, or NULL with an error (NULL
 * without one past `depth` 100: the slow path decides). */
static PyObject *
compile_shift_up(PyObject *code, int depth)
{
    PyObject *consts = ((PyCodeObject *)code)->co_consts; /* borrowed */
    PyObject *new_consts = NULL, *replace = NULL, *kw = NULL, *empty = NULL;
    PyObject *res = NULL;
    if (depth > 100) {
        return NULL;
    }
    Py_ssize_t n = consts != NULL ? PyTuple_GET_SIZE(consts) : 0;
    int nested = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        nested |= PyCode_Check(PyTuple_GET_ITEM(consts, i));
    }
    if (nested) {
        new_consts = PyTuple_New(n);
        if (new_consts == NULL) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyTuple_GET_ITEM(consts, i);
            PyObject *item = PyCode_Check(c) ? compile_shift_up(c, depth + 1)
                                             : Py_NewRef(c);
            if (item == NULL) {
                goto done;
            }
            PyTuple_SET_ITEM(new_consts, i, item);
        }
    }
    replace = PyObject_GetAttrString(code, "replace");
    kw = Py_BuildValue("{si}", "co_firstlineno",
                       ((PyCodeObject *)code)->co_firstlineno - 1);
    empty = PyTuple_New(0);
    if (replace == NULL || kw == NULL || empty == NULL ||
        (new_consts != NULL &&
         PyDict_SetItemString(kw, "co_consts", new_consts) < 0)) {
        goto done;
    }
    res = PyObject_Call(replace, empty, kw);
done:
    Py_XDECREF(new_consts);
    Py_XDECREF(replace);
    Py_XDECREF(kw);
    Py_XDECREF(empty);
    return res;
}

/* The fast path (see the top of this file) for ASCII source `src` of
 * `size` bytes.  New reference to the code, NULL with an error, or NULL
 * without one when the slow path must decide. */
static PyObject *
compile_fast(const char *src, Py_ssize_t size, PyObject *filename,
             int *has_result)
{
    sp_split_result split;
    char *buf = NULL;
    PyObject *code = NULL;
    PyCompilerFlags flags = {PyCF_ALLOW_TOP_LEVEL_AWAIT, PY_MINOR_VERSION};

    sp_split_scan(src, (size_t)size, &split);
    if (split.kind == SP_SPLIT_SLOW) {
        return NULL;
    }
    const char *text = src;
    if (split.kind == SP_SPLIT_EXPR) {
        static const char prefix[] = COMPILE_PREFIX;
        size_t plen = sizeof(prefix) - 1, n = (size_t)size;
        buf = PyMem_Malloc(n + plen + 3);
        if (buf == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        char *w = buf;
        size_t head, tail;
        switch (split.insert) {
        case SP_INSERT_PREPEND:
            head = tail = 0;
            break;
        case SP_INSERT_REPLACE:
            head = split.start;
            tail = split.end;
            break;
        default: /* SP_INSERT_APPEND: "x = 1" -> "x = 1;RESULT = \" */
            head = tail = split.start;
            break;
        }
        memcpy(w, src, head);
        w += head;
        if (split.insert == SP_INSERT_APPEND) {
            *w++ = ';';
        }
        memcpy(w, prefix, plen);
        w += plen;
        if (split.insert == SP_INSERT_PREPEND) {
            *w++ = '\n';
        }
        memcpy(w, src + tail, n - tail);
        w += n - tail;
        *w = '\0';
        text = buf;
    }
    code = Py_CompileStringObject(text, filename, Py_file_input, &flags, -1);
    PyMem_Free(buf);
    if (code == NULL) {
        /* Whatever went wrong, the slow path says it exactly. */
        PyErr_Clear();
        return NULL;
    }
    if (!PyCode_Check(code)) {
        Py_DECREF(code);
        PyErr_SetString(PyExc_SystemError, "compile did not return code");
        return NULL;
    }
    if (split.kind == SP_SPLIT_EXPR && split.insert == SP_INSERT_PREPEND) {
        Py_SETREF(code, compile_shift_up(code, 0));
        if (code == NULL) {
            return NULL;
        }
    }
    *has_result = split.kind == SP_SPLIT_EXPR;
    return code;
}

/* Both paths behind sp_compile_cell.  `path`: 0 either (fast when it
 * can), 1 fast only (NULL without an error when it cannot), 2 slow only.
 * *used is set to the path taken (1 or 2). */
static PyObject *
compile_cell_path(PyObject *source, PyObject *banned, int ban_defs,
                  int checks, int *has_result, int path, int *used)
{
    PyObject *filename = NULL, *tree = NULL, *code = NULL;
    if (!PyUnicode_Check(source)) {
        PyErr_Format(PyExc_TypeError, "code must be a str, not %.200s", SP_TYPE_NAME(source));
        return NULL;
    }
    Py_ssize_t size;
    const char *src = PyUnicode_AsUTF8AndSize(source, &size);
    if (src == NULL) {
        return NULL;
    }
    if ((Py_ssize_t)strlen(src) != size) {
        PyErr_SetString(PyExc_ValueError,
                        "source code string cannot contain null bytes");
        return NULL;
    }
    filename = sp_compile_srcfn(source);
    if (filename == NULL) {
        goto done;
    }
    if (path != 2 && PyUnicode_IS_ASCII(source) &&
        (!checks || !sp_check_needed(source, banned, ban_defs))) {
        *used = 1;
        code = compile_fast(src, size, filename, has_result);
        if (code != NULL || PyErr_Occurred() || path == 1) {
            goto done;
        }
    }
    if (path == 1) {
        goto done; /* the fast path does not apply */
    }
    *used = 2;
    PyCompilerFlags flags = {PyCF_ONLY_AST | PyCF_ALLOW_TOP_LEVEL_AWAIT,
                             PY_MINOR_VERSION};
    tree = Py_CompileStringObject(src, filename, Py_file_input, &flags, -1);
    if (tree == NULL) {
        goto done;
    }
    if (checks && sp_check_needed(source, banned, ban_defs) &&
        sp_check_tree(tree, banned, ban_defs, filename) < 0) {
        goto done;
    }
    *has_result = compile_split_last(tree);
    if (*has_result < 0) {
        goto done;
    }
    code = PyObject_CallFunction(compile_global->compile, "OOsii", tree, filename,
                                 "exec", PyCF_ALLOW_TOP_LEVEL_AWAIT, 1);
    if (code != NULL && !PyCode_Check(code)) {
        PyErr_SetString(PyExc_SystemError, "compile() did not return code");
        Py_CLEAR(code);
    }
done:
    Py_XDECREF(filename);
    Py_XDECREF(tree);
    return code;
}

PyObject *
sp_compile_cell(PyObject *source, PyObject *banned, int ban_defs, int checks,
                int *has_result)
{
    int used = 0;
    return compile_cell_path(source, banned, ban_defs, checks, has_result, 0,
                             &used);
}

/* _compile_cell(source, banned=(), ban_defs=False, checks=True, path=0)
 * -> (code, has_result, path used): for the tests that hold the fast path
 * to the slow one.  Compiles only, as compile() does. */
static PyObject *
compile_py_compile_cell(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"source", "banned", "ban_defs", "checks", "path",
                             NULL};
    PyObject *source, *banned = NULL, *code = NULL, *res = NULL;
    int ban_defs = 0, checks = 1, path = 0, has_result = 0, used = 0;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|O!ppi:_compile_cell",
                                     kwlist, &source, &PyTuple_Type, &banned,
                                     &ban_defs, &checks, &path)) {
        return NULL;
    }
    if (path < 0 || path > 2) {
        PyErr_SetString(PyExc_ValueError, "path must be 0, 1 or 2");
        return NULL;
    }
    if (banned == NULL) {
        banned = PyTuple_New(0);
        if (banned == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(banned);
    }
    code = compile_cell_path(source, banned, ban_defs, checks, &has_result,
                             path, &used);
    if (code != NULL) {
        res = Py_BuildValue("(Oii)", code, has_result, used);
    }
    else if (!PyErr_Occurred()) {
        res = Py_BuildValue("(Oii)", Py_None, 0, 0);
    }
    Py_DECREF(banned);
    Py_XDECREF(code);
    return res;
}

/* _split_scan(source) -> (kind, insert, line, offset, start, end), the
 * text scan alone (split.h), for the tests.  ASCII str only. */
static PyObject *
compile_py_split_scan(PyObject *module, PyObject *source)
{
    (void)module;
    if (!PyUnicode_Check(source)) {
        PyErr_SetString(PyExc_TypeError, "_split_scan() needs a str");
        return NULL;
    }
    Py_ssize_t size;
    const char *src = PyUnicode_AsUTF8AndSize(source, &size);
    if (src == NULL) {
        return NULL;
    }
    sp_split_result r;
    if ((Py_ssize_t)strlen(src) != size) {
        r.kind = SP_SPLIT_SLOW;
        r.insert = 0;
        r.line = r.offset = r.start = r.end = 0;
    }
    else {
        sp_split_scan(src, (size_t)size, &r);
    }
    return Py_BuildValue("(iinnnn)", (int)r.kind, (int)r.insert,
                         (Py_ssize_t)r.line, (Py_ssize_t)r.offset,
                         (Py_ssize_t)r.start, (Py_ssize_t)r.end);
}

static PyMethodDef compile_functions[] = {
    {"_compile_cell", (PyCFunction)(void (*)(void))compile_py_compile_cell,
     METH_VARARGS | METH_KEYWORDS,
     "_compile_cell(source, banned=(), ban_defs=False, checks=True, path=0)"
     " -> (code, has_result, path)\n\nCompile a cell as a run would (path 0),"
     " by the fast path only (1) or the syntax tree only (2).  For tests."},
    {"_split_scan", compile_py_split_scan, METH_O,
     "_split_scan(source) -> (kind, insert, line, offset, start, end)\n\n"
     "The text scan behind the fast path.  For tests."},
    {"srcfn", compile_py_srcfn, METH_O,
     "srcfn(src) -> str\n\nStore src in linecache under <pyrun_N> (N cycling "
     "0..9) and return that name."},
    {NULL, NULL, 0, NULL},
};

int
sp_compile_init(PyObject *module)
{
    if (compile_global->compile == NULL) {
        PyObject *builtins = NULL, *ast = NULL, *store_cls = NULL;
        int rc = -1;
        builtins = PyImport_ImportModule("builtins");
        ast = PyImport_ImportModule("_ast");
        if (builtins == NULL || ast == NULL) {
            goto done;
        }
        compile_global->compile = PyObject_GetAttrString(builtins, "compile");
        compile_global->ast_expr = PyObject_GetAttrString(ast, "Expr");
        compile_global->ast_assign = PyObject_GetAttrString(ast, "Assign");
        compile_global->ast_name = PyObject_GetAttrString(ast, "Name");
        store_cls = PyObject_GetAttrString(ast, "Store");
        if (store_cls != NULL) {
            compile_global->ast_store = PyObject_CallNoArgs(store_cls);
        }
        compile_global->result_name = PyUnicode_InternFromString(COMPILE_RESULT);
        if (compile_global->compile == NULL || compile_global->ast_expr == NULL ||
            compile_global->ast_assign == NULL || compile_global->ast_name == NULL ||
            compile_global->ast_store == NULL || compile_global->result_name == NULL) {
            goto done;
        }
        rc = 0;
    done:
        Py_XDECREF(builtins);
        Py_XDECREF(ast);
        Py_XDECREF(store_cls);
        if (rc < 0) {
            return -1;
        }
    }
    return PyModule_AddFunctions(module, compile_functions);
}
