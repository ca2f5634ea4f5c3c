/* foreign.c - ctypes inside a run: foreign calls and raw objects.
 *
 * ctypes raises audit events for loading libraries and looking up symbols,
 * but none for calling a foreign function pointer it already has
 * (ctypes.memmove, memset, cast: made from addresses inside _ctypes at
 * import) and none for making a pointer or a char* from an integer; with
 * those a cell writes any memory of the host or crashes it
 * (c_char_p(1).value), whether or not the host imported ctypes first.
 *
 * So once _ctypes is loaded, the slots that call a foreign function and
 * make a ctypes object are redirected: CFuncPtr's tp_call, and tp_new of
 * the six base types (_SimpleCData, _Pointer, Array, Structure, Union,
 * CFuncPtr).  Inside a run they raise "ctypes.call_function" /
 * "ctypes.new", which the hook refuses unless a trusted call is active;
 * outside a run they cost one context-variable read.  Subclasses copy a
 * base's slots when they are made, so the ones that exist already (the
 * classes ctypes defines at import, CFUNCTYPE results) are redirected too,
 * and every later one inherits the redirection.
 *
 * The slot functions of _ctypes are C functions with no Python object, so
 * no cell can reach the originals.  The original of each slot is kept in
 * the engine state.  GIL held throughout.
 */
#include "foreign.h"

#include "gate.h"
#include "state.h"

#include <string.h>

/* This file's part of the engine state (state.h). */
static struct sp_foreign_state *const foreign = &sp_state.foreign;

static const char *const foreign_bases[SP_FOREIGN_NBASES] = {
    "_SimpleCData", "_Pointer", "Array", "Structure", "Union", "CFuncPtr"};
#define FOREIGN_FUNCPTR 5

/* Whether a library module's import-time code is running here, called by
 * no cell code in between: the module body of ctypes itself (it makes
 * memmove and friends), or of numpy, which imports ctypes.  Module code the
 * import system runs is the library's; code a cell runs is cell code
 * (gate.c), and the walk stops there.  1 / 0 / -1. */
static int
foreign_importing(void)
{
    int found = 0;
    sp_walk w;
    sp_walk_start(&w);
    while (!found && sp_walk_next(&w) != NULL) {
        if (sp_gate_is_cell_code(w.code)) {
            break;
        }
        found = PyUnicode_Check(w.code->co_name) &&
                PyUnicode_CompareWithASCIIString(w.code->co_name, "<module>") == 0;
    }
    sp_walk_stop(&w);
    return PyErr_Occurred() ? -1 : found;
}

/* Raise `event` about `obj` when a run governs the code running now and
 * no library module is being imported.  0 allowed (or outside a run), -1
 * refused or error. */
static int
foreign_judge(const char *event, PyObject *obj)
{
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    Py_XDECREF(run);
    if (active <= 0) {
        return active;
    }
    int importing = foreign_importing();
    if (importing != 0) {
        return importing < 0 ? -1 : 0;
    }
    return PySys_Audit(event, "O", obj);
}

static PyObject *
foreign_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (foreign_judge("ctypes.call_function", self) < 0) {
        return NULL;
    }
    return foreign->real_call(self, args, kwargs);
}

/* The original tp_new for `type`: that of the first base along its MRO. */
static newfunc
foreign_real_new(PyTypeObject *type)
{
    PyObject *mro = type->tp_mro; /* borrowed */
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *t = PyTuple_GET_ITEM(mro, i);
        for (int b = 0; b < SP_FOREIGN_NBASES; b++) {
            if (t == foreign->bases[b]) {
                return foreign->real_new[b];
            }
        }
    }
    return NULL;
}

static PyObject *
foreign_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    newfunc real = foreign_real_new(type);
    if (real == NULL) {
        PyErr_SetString(PyExc_SystemError, "safepyrun: no ctypes base found");
        return NULL;
    }
    if (foreign_judge("ctypes.new", (PyObject *)type) < 0) {
        return NULL;
    }
    return real(type, args, kwargs);
}

/* Redirect `type` and the subclasses that copied an original slot.
 * 0 / -1. */
static int
foreign_redirect_tree(PyTypeObject *type, int depth)
{
    if (depth > 64) {
        return 0;
    }
    for (int b = 0; b < SP_FOREIGN_NBASES; b++) {
        if (type->tp_new == foreign->real_new[b]) {
            type->tp_new = foreign_new;
        }
    }
    if (foreign->real_call != NULL && type->tp_call == foreign->real_call) {
        type->tp_call = foreign_call;
    }
    PyObject *subs = PyObject_CallMethod((PyObject *)type, "__subclasses__", NULL);
    if (subs == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(subs); i++) {
        rc = foreign_redirect_tree((PyTypeObject *)PyList_GET_ITEM(subs, i),
                                   depth + 1);
    }
    Py_DECREF(subs);
    return rc;
}

int
sp_foreign_install(PyObject *ctypes_module)
{
    if (foreign->installed) {
        return 0;
    }
    /* A multi-phase module (3.12+) makes its types when it is executed:
     * before that there is nothing to redirect yet (the guard calls again
     * after execution). */
    PyObject *probe = PyObject_GetAttrString(ctypes_module,
                                             foreign_bases[FOREIGN_FUNCPTR]);
    if (probe == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(probe);
    for (int b = 0; b < SP_FOREIGN_NBASES; b++) {
        PyObject *t = PyObject_GetAttrString(ctypes_module, foreign_bases[b]);
        if (t == NULL || !PyType_Check(t)) {
            Py_XDECREF(t);
            PyErr_Clear();
            continue; /* not in this version: nothing to redirect */
        }
        foreign->bases[b] = t; /* owned */
        foreign->real_new[b] = ((PyTypeObject *)t)->tp_new;
        if (b == FOREIGN_FUNCPTR) {
            foreign->real_call = ((PyTypeObject *)t)->tp_call;
        }
    }
    foreign->installed = 1;
    /* A class made later takes tp_call from CFuncPtr.__call__, the slot
     * wrapper holding the original function: it wraps ours from now on. */
    PyObject *fp = foreign->bases[FOREIGN_FUNCPTR];
    PyObject *dict = fp == NULL ? NULL : sp_type_dict((PyTypeObject *)fp);
    PyObject *wrapper = NULL; /* owned */
    if (dict != NULL && sp_dict_get_ref_str(dict, "__call__", &wrapper) < 0) {
        Py_DECREF(dict);
        return -1;
    }
    Py_XDECREF(dict);
    if (wrapper != NULL && Py_IS_TYPE(wrapper, &PyWrapperDescr_Type) &&
        ((PyWrapperDescrObject *)wrapper)->d_wrapped == (void *)foreign->real_call) {
        ((PyWrapperDescrObject *)wrapper)->d_wrapped = (void *)foreign_call;
    }
    Py_XDECREF(wrapper);
    for (int b = 0; b < SP_FOREIGN_NBASES; b++) {
        if (foreign->bases[b] != NULL &&
            foreign_redirect_tree((PyTypeObject *)foreign->bases[b], 0) < 0) {
            return -1;
        }
    }
    return 0;
}

int
sp_foreign_before_run(void)
{
    if (foreign->installed) {
        return 0;
    }
    PyObject *name = PyUnicode_FromString("_ctypes");
    PyObject *mod = name == NULL ? NULL : PyImport_GetModule(name);
    Py_XDECREF(name);
    if (mod == NULL) {
        return PyErr_Occurred() ? -1 : 0; /* not loaded: guarded on import */
    }
    int rc = sp_foreign_install(mod);
    Py_DECREF(mod);
    return rc;
}
