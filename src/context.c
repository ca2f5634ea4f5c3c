/* context.c - runs and the context variable that scopes them.
 *
 * What it owns: the SpRun type and one ContextVar, `safepyrun.run`, whose
 * value is the SpRun of the cell executing in the current context (unset
 * elsewhere).  Both are process-wide: the audit hook that reads them is
 * installed once per process and cannot be removed, so they are created by
 * the first import and kept (one owned reference each, in the static
 * struct below) until the process ends.  A second import of the module
 * reuses them.
 *
 * Threading: every function here runs with the GIL held.  The hook calls
 * sp_context_current from whatever thread raised the event; a ContextVar
 * read is per-thread-context by construction, so no locking is needed.
 */
#include "common.h"
#include "context.h"

#include <stddef.h>

/* Process-wide; written once by sp_context_init, read by the hook. */
static struct {
    PyTypeObject *run_type; /* owned: the SpRun heap type */
    PyObject *run_var;      /* owned: ContextVar holding the current SpRun */
    PyObject *cell_codes;   /* owned: {id(code): (weakref(code), twin run)} */
    PyObject *cell_prefix;  /* owned: interned "<pyrun_" */
} context_global;

static PyObject *context_code_gone(PyObject *key, PyObject *wr);

static PyMethodDef context_code_gone_def = {
    "safepyrun_code_gone", context_code_gone, METH_O,
    "Forget a cell code object that was freed."};

/* A cell that keeps retrying a refused operation should not grow memory. */
#define CONTEXT_MAX_DENIALS 32

static int
run_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpRun *run = (SpRun *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(run->ok_dests);
    Py_VISIT(run->data);
    Py_VISIT(run->denials);
    Py_VISIT(run->pre_deny);
    return 0;
}

static int
run_tp_clear(PyObject *self)
{
    SpRun *run = (SpRun *)self;
    Py_CLEAR(run->ok_dests);
    Py_CLEAR(run->data);
    Py_CLEAR(run->denials);
    Py_CLEAR(run->pre_deny);
    return 0;
}

static PyObject *
run_get_ok_dests(PyObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(((SpRun *)self)->ok_dests);
}

static PyObject *
run_get_yolo(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(((SpRun *)self)->yolo);
}

static PyGetSetDef run_getset[] = {
    {"ok_dests", run_get_ok_dests, NULL,
     "The write destinations of this run (tuple), or None.", NULL},
    {"yolo", run_get_yolo, NULL, "True when nothing is gated.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot run_slots[] = {
    {Py_tp_doc, "The policy of one sandboxed cell run (read-only)."},
    {Py_tp_traverse, run_tp_traverse},
    {Py_tp_clear, run_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_getset, run_getset},
    {0, NULL},
};

static PyType_Spec run_spec = {
    .name = "safepyrun._engine.Run",
    .basicsize = sizeof(SpRun),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = run_slots,
};

int
sp_context_init(PyObject *module)
{
    if (context_global.run_type == NULL) {
        PyObject *tp = PyType_FromModuleAndSpec(module, &run_spec, NULL);
        if (tp == NULL) {
            return -1;
        }
        PyObject *var = PyContextVar_New("safepyrun.run", NULL);
        if (var == NULL) {
            Py_DECREF(tp);
            return -1;
        }
        context_global.run_type = (PyTypeObject *)tp;
        context_global.run_var = var;
        context_global.cell_codes = PyDict_New();
        context_global.cell_prefix = PyUnicode_InternFromString("<pyrun_");
        if (context_global.cell_codes == NULL ||
            context_global.cell_prefix == NULL) {
            return -1;
        }
    }
    return PyModule_AddObjectRef(module, "Run",
                                 (PyObject *)context_global.run_type);
}

PyObject *
sp_context_var(void)
{
    return context_global.run_var;
}

SpRun *
sp_context_new_run(PyObject *ok_dests, PyObject *data, PyObject *pre_deny,
                   int yolo)
{
    PyTypeObject *tp = context_global.run_type;
    SpRun *run = PyObject_GC_New(SpRun, tp);
    if (run == NULL) {
        return NULL;
    }
    Py_INCREF(tp); /* heap-type instances own a reference to their type */
    run->ok_dests = Py_NewRef(ok_dests);
    run->data = Py_NewRef(data);
    run->pre_deny = pre_deny == Py_None ? NULL : Py_NewRef(pre_deny);
    run->yolo = yolo;
    run->later = 0;
    run->denials = PyList_New(0);
    if (run->denials == NULL) {
        Py_DECREF(run);
        return NULL;
    }
    PyObject_GC_Track(run);
    return run;
}

int
sp_context_current(SpRun **run)
{
    PyObject *value = NULL;
    *run = NULL;
    if (context_global.run_var == NULL) {
        return 0;
    }
    if (PyContextVar_Get(context_global.run_var, NULL, &value) < 0) {
        return -1;
    }
    if (value == NULL) {
        return 0;
    }
    if (!Py_IS_TYPE(value, context_global.run_type) ||
        ((SpRun *)value)->yolo) {
        Py_DECREF(value);
        return 0;
    }
    *run = (SpRun *)value;
    return 1;
}

PyObject *
sp_context_enter(SpRun *run)
{
    return PyContextVar_Set(context_global.run_var, (PyObject *)run);
}

int
sp_context_leave_var(PyObject *var, PyObject *token)
{
    /* Called on error paths too: the pending exception must survive. */
    PyObject *exc = sp_err_get_raised();
    int rc = PyContextVar_Reset(var, token);
    Py_DECREF(token);
    if (exc != NULL) {
        if (rc < 0) {
            /* The cell's error matters more than a failed reset. */
            PyErr_WriteUnraisable(var);
        }
        sp_err_set_raised(exc);
    }
    return rc;
}

int
sp_context_leave(PyObject *token)
{
    return sp_context_leave_var(context_global.run_var, token);
}

int
sp_context_record_denial(SpRun *run, PyObject *exc)
{
    if (run->later) {
        return 0;
    }
    Py_ssize_t n = PyList_GET_SIZE(run->denials);
    if (n >= CONTEXT_MAX_DENIALS &&
        PySequence_DelItem(run->denials, 0) < 0) {
        return -1;
    }
    return PyList_Append(run->denials, exc);
}

int
sp_context_is_denial(SpRun *run, PyObject *exc)
{
    Py_ssize_t n = PyList_GET_SIZE(run->denials);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(run->denials, i) == exc) {
            return 1;
        }
    }
    return 0;
}

PyObject *
sp_context_call_outside(PyObject *fn, PyObject *arg)
{
    PyObject *token = PyContextVar_Set(context_global.run_var, Py_None);
    if (token == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(fn, arg);
    if (sp_context_leave(token) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* ---- cell code -------------------------------------------------------------- */

int
sp_context_is_cell_code(PyCodeObject *code)
{
    return PyUnicode_Check(code->co_filename) &&
           PyUnicode_Tailmatch(code->co_filename, context_global.cell_prefix, 0,
                               7, -1) == 1;
}

/* Weak-reference callback: the code object `key` names was freed. */
static PyObject *
context_code_gone(PyObject *key, PyObject *wr)
{
    (void)wr;
    if (context_global.cell_codes != NULL &&
        PyDict_DelItem(context_global.cell_codes, key) < 0) {
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static int
context_register_one(PyObject *code, SpRun *twin, int depth)
{
    if (depth > 100) {
        return 0; /* absurd nesting: the outer codes are registered */
    }
    PyObject *key = PyLong_FromVoidPtr(code);
    PyObject *cb = NULL, *wr = NULL, *entry = NULL;
    int rc = -1;
    if (key == NULL) {
        goto done;
    }
    cb = PyCFunction_New(&context_code_gone_def, key);
    wr = cb == NULL ? NULL : PyWeakref_NewRef(code, cb);
    entry = wr == NULL ? NULL : PyTuple_Pack(2, wr, (PyObject *)twin);
    if (entry == NULL || PyDict_SetItem(context_global.cell_codes, key, entry) < 0) {
        goto done;
    }
    PyObject *consts = ((PyCodeObject *)code)->co_consts; /* borrowed */
    rc = 0;
    for (Py_ssize_t i = 0; consts != NULL && i < PyTuple_GET_SIZE(consts) && rc == 0; i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c)) {
            rc = context_register_one(c, twin, depth + 1);
        }
    }
done:
    Py_XDECREF(key);
    Py_XDECREF(cb);
    Py_XDECREF(wr);
    Py_XDECREF(entry);
    return rc;
}

int
sp_context_register_codes(PyObject *code, SpRun *run)
{
    if (run->yolo) {
        return 0;
    }
    /* A twin without the run's denial list: the entries live in a static
     * dict the garbage collector does not see, and a denial's traceback
     * would keep the cell's globals, and so its code, alive for ever. */
    SpRun *twin = sp_context_new_run(run->ok_dests, run->data,
                                     run->pre_deny != NULL ? run->pre_deny
                                                           : Py_None,
                                     0);
    if (twin == NULL) {
        return -1;
    }
    twin->later = 1;
    int rc = context_register_one(code, twin, 0);
    Py_DECREF(twin);
    return rc;
}

int
sp_context_run_of_frames(SpRun **run)
{
    *run = NULL;
    if (context_global.cell_codes == NULL ||
        PyDict_GET_SIZE(context_global.cell_codes) == 0) {
        return 0;
    }
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed, then owned */
    Py_XINCREF(frame);
    int found = 0, depth = 0;
    while (frame != NULL && !found && depth++ < 1000) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject *key = PyLong_FromVoidPtr(code);
        Py_DECREF(code);
        if (key == NULL) {
            Py_DECREF(frame);
            return -1;
        }
        PyObject *entry = PyDict_GetItemWithError(context_global.cell_codes, key);
        Py_DECREF(key);
        if (entry == NULL && PyErr_Occurred()) {
            Py_DECREF(frame);
            return -1;
        }
        if (entry != NULL &&
            sp_weakref_is(PyTuple_GET_ITEM(entry, 0), (PyObject *)code)) {
            *run = (SpRun *)Py_NewRef(PyTuple_GET_ITEM(entry, 1));
            found = 1;
        }
        Py_SETREF(frame, PyFrame_GetBack(frame));
    }
    Py_XDECREF(frame);
    if (PyErr_Occurred()) { /* PyFrame_GetBack ran out of memory */
        Py_CLEAR(*run);
        return -1;
    }
    return found;
}
