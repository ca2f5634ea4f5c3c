/* caches.c - process-wide caches of the standard library that a cell must
 * not leave changed.
 *
 * Some standard modules compute a value once and keep it for the whole
 * process.  Computed inside a cell, under the cell's policy, the value can
 * differ from what the host would have computed: tempfile.gettempdir()
 * probes candidate directories by creating a file in each, and with /tmp
 * outside ok_dests the probe there is refused, so the first allowed
 * candidate (the working directory) becomes every later temporary file's
 * directory, the host's included.  Nothing a cell does, refused or not,
 * may leave such a cache in a state the host would not have reached: each
 * step of a cell records the caches first and puts back what it changed.
 * The cell itself keeps seeing its own value during the step.
 *
 * Cost: one sys.modules lookup per step, and one attribute read when the
 * module is loaded.  Threading: GIL held.
 */
#include "caches.h"

static PyObject *
caches_module(const char *name)
{
    PyObject *key = PyUnicode_FromString(name);
    PyObject *mod = key == NULL ? NULL : PyImport_GetModule(key);
    Py_XDECREF(key);
    if (mod == NULL) {
        PyErr_Clear();
    }
    return mod;
}

void
sp_caches_take(sp_caches_snapshot *snap)
{
    snap->loaded = 0;
    snap->tempdir = NULL;
    PyObject *exc = sp_err_get_raised();
    PyObject *mod = caches_module("tempfile");
    if (mod != NULL) {
        snap->tempdir = PyObject_GetAttrString(mod, "tempdir");
        if (snap->tempdir == NULL) {
            PyErr_Clear();
        }
        snap->loaded = snap->tempdir != NULL;
        Py_DECREF(mod);
    }
    sp_err_set_raised(exc);
}

void
sp_caches_restore(sp_caches_snapshot *snap)
{
    PyObject *exc = sp_err_get_raised();
    PyObject *mod = caches_module("tempfile");
    if (mod != NULL) {
        PyObject *now = PyObject_GetAttrString(mod, "tempdir");
        if (now == NULL) {
            PyErr_Clear();
        }
        /* Loaded during the step: the host would start from None. */
        PyObject *before = snap->loaded ? snap->tempdir : Py_None;
        if (now != NULL && now != before &&
            PyObject_SetAttrString(mod, "tempdir", before) < 0) {
            PyErr_WriteUnraisable(mod);
        }
        Py_XDECREF(now);
        Py_DECREF(mod);
    }
    Py_CLEAR(snap->tempdir);
    sp_err_set_raised(exc);
}
