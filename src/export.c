/* export.c - which names a cell hands back to the host namespace.
 *
 * The rule (DESIGN.md, "Namespaces") and the copy itself.  The copy works
 * on a snapshot: a key's __hash__/__eq__ may run code that changes either
 * namespace, so nothing is borrowed across a lookup.
 */
#include "export.h"

#include "gate.h"

/* A function whose code a cell compiled (file <pyrun_N>). */
static int
export_is_cell_function(PyObject *obj)
{
    if (!PyFunction_Check(obj)) {
        return 0;
    }
    return sp_gate_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(obj));
}

/* The export rule (DESIGN.md, "Namespaces"): 1 if cell name `k` with value
 * `v` goes back to the host namespace `g`, 0 if not, -1 on error.
 *   - names starting with '_' never (`_`, `_x`, `_x_`, dunders), nor
 *     `py` and `allow`, the names hosts and notebooks bind to the runner
 *     and to allow() (as the published implementation: a cell's
 *     `allow = 'x'` stays in the cells' namespace); other names ending in
 *     '_' always;
 *   - a new name always;
 *   - an existing name is not replaced when the old value is a callable or
 *     module of the host, or the new value is a callable or module (a cell
 *     cannot shadow host names with functions: the seed's `a=3; def a()`
 *     keeps a == 3); a function an earlier cell defined may be redefined. */
int
sp_export_should(PyObject *k, PyObject *v, PyObject *g)
{
    if (!PyUnicode_Check(k)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    if (n == 0) {
        return 0;
    }
    Py_UCS4 first = PyUnicode_READ_CHAR(k, 0), last = PyUnicode_READ_CHAR(k, n - 1);
    if (first == '_' || PyUnicode_CompareWithASCIIString(k, "py") == 0 ||
        PyUnicode_CompareWithASCIIString(k, "allow") == 0) {
        return 0;
    }
    if (last == '_') {
        return 1;
    }
    PyObject *old = NULL;
    int found = sp_dict_get_ref(g, k, &old);
    if (found <= 0) {
        return found < 0 ? -1 : 1;
    }
    int res = 1;
    if (export_is_cell_function(old)) {
        res = 1;
    }
    else if (PyCallable_Check(old) || PyModule_Check(old) ||
             PyCallable_Check(v) || PyModule_Check(v)) {
        res = 0;
    }
    Py_DECREF(old);
    return res;
}

static PyObject *
export_py_should(PyObject *module, PyObject *const *args,
                        Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "should_export() takes 3 arguments (k, v, g), %zd given",
                     nargs);
        return NULL;
    }
    if (!PyDict_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "should_export() g must be a dict, not %.200s",
                     SP_TYPE_NAME(args[2]));
        return NULL;
    }
    int r = sp_export_should(args[0], args[1], args[2]);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* Copy new and changed names from the cell's globals to `g`.  Works on a
 * snapshot of the items: a key's __hash__/__eq__ or a value's comparison
 * can run code that changes either namespace, so nothing is borrowed
 * across a lookup. */
int
sp_export_sync_in(PyObject *g, PyObject *ns, PyObject *synced)
{
    /* Host changes: a name whose value in g is not the one g had when the
     * namespaces were last in step was set (or deleted) by the host. */
    PyObject *items = PyDict_Items(g); /* owned: a snapshot */
    PyObject *gone = items == NULL ? NULL : PyDict_Keys(synced);
    int rc = items == NULL || gone == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        PyObject *was = NULL;
        int found = sp_dict_get_ref(synced, k, &was);
        if (found < 0 || ((found == 0 || was != v) && PyDict_SetItem(ns, k, v) < 0)) {
            rc = -1;
        }
        Py_XDECREF(was);
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(gone); i++) {
        PyObject *k = PyList_GET_ITEM(gone, i);
        int still = PyDict_Contains(g, k);
        if (still < 0) {
            rc = -1;
        }
        else if (still == 0 && PyDict_DelItem(ns, k) < 0) {
            if (PyErr_ExceptionMatches(PyExc_KeyError)) {
                PyErr_Clear(); /* the cell deleted it too */
            }
            else {
                rc = -1;
            }
        }
    }
    Py_XDECREF(items);
    Py_XDECREF(gone);
    return rc;
}

int
sp_export_names(PyObject *globals, PyObject *g, PyObject *synced)
{
    PyObject *items = PyDict_Items(globals); /* owned: list of (k, v) */
    if (items == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && rc == 0; i++) {
        PyObject *pair = PyList_GET_ITEM(items, i); /* kept by items */
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        PyObject *old = NULL;
        int found = sp_dict_get_ref(g, k, &old);
        int unchanged = found > 0 && old == v;
        Py_XDECREF(old);
        if (found < 0) {
            rc = -1;
        }
        else if (!unchanged) {
            int ok = sp_export_should(k, v, g);
            if (ok < 0 || (ok && PyDict_SetItem(g, k, v) < 0)) {
                rc = -1;
            }
        }
    }
    Py_DECREF(items);
    if (rc == 0 && synced != NULL) {
        /* In step again: what g holds now is what the next cell starts
         * from. */
        PyDict_Clear(synced);
        rc = PyDict_Update(synced, g);
    }
    return rc;
}

static PyMethodDef export_functions[] = {
    {"should_export", (PyCFunction)(void (*)(void))export_py_should,
     METH_FASTCALL,
     "should_export(k, v, g) -> bool\n\nWhether cell name k with value v is "
     "exported to the host namespace g."},
    {NULL, NULL, 0, NULL},
};

int
sp_export_init(PyObject *module)
{
    return PyModule_AddFunctions(module, export_functions);
}
