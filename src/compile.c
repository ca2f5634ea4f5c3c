/* compile.c - a cell's source to a code object, and its linecache entry.
 *
 * Parse once to a syntax tree (top-level await allowed); apply check.c's
 * rules; if the last statement is an expression, turn it into an
 * assignment to COMPILE_RESULT on the tree itself, so line numbers stay
 * the cell's own; compile.  The source is registered in linecache as
 * <pyrun_N> first, so tracebacks and inspect.getsource show the cell.
 *
 * The functions used here (builtins.compile, the _ast node types) are
 * captured at the first import, before any cell could replace them.
 * State is process-wide and written once, GIL held.
 */
#include "compile.h"
#include "state.h"

#include "check.h"

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

PyObject *
sp_compile_cell(PyObject *source, PyObject *banned, int ban_defs, int checks,
                int *has_result)
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

static PyMethodDef compile_functions[] = {
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
