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
#include "state.h"
#include "context.h"

#include <stddef.h>

/* This file's part of the engine state (state.h). */
static struct sp_context_state *const context_global = &sp_state.context;

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
    Py_VISIT(run->report);
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
    sp_memcap_release(run->mem);
    run->mem = NULL;
    Py_CLEAR(run->report);
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
    if (context_global->run_type == NULL) {
        PyObject *tp = PyType_FromModuleAndSpec(module, &run_spec, NULL);
        if (tp == NULL) {
            return -1;
        }
        PyObject *var = PyContextVar_New("safepyrun.run", NULL);
        if (var == NULL) {
            Py_DECREF(tp);
            return -1;
        }
        context_global->run_type = (PyTypeObject *)tp;
        context_global->run_var = var;
    }
    return PyModule_AddObjectRef(module, "Run",
                                 (PyObject *)context_global->run_type);
}

PyObject *
sp_context_var(void)
{
    return context_global->run_var;
}

SpRun *
sp_context_new_run(PyObject *ok_dests, PyObject *data, PyObject *pre_deny,
                   int yolo)
{
    PyTypeObject *tp = context_global->run_type;
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
    run->mem = NULL;
    run->report = NULL;
    run->denials = PyList_New(0);
    if (run->denials == NULL) {
        Py_DECREF(run);
        return NULL;
    }
    PyObject_GC_Track(run);
    return run;
}

int
sp_context_current_any(SpRun **run)
{
    PyObject *value = NULL;
    *run = NULL;
    if (context_global->run_var == NULL) {
        return 0;
    }
    if (PyContextVar_Get(context_global->run_var, NULL, &value) < 0) {
        return -1;
    }
    if (value == NULL) {
        return 0;
    }
    if (!Py_IS_TYPE(value, context_global->run_type)) {
        Py_DECREF(value); /* sp_context_call_outside's None */
        return 0;
    }
    *run = (SpRun *)value;
    return 1;
}

int
sp_context_current(SpRun **run)
{
    int found = sp_context_current_any(run);
    if (found > 0 && (*run)->yolo) {
        Py_CLEAR(*run); /* a yolo run governs nothing */
        return 0;
    }
    return found;
}

PyObject *
sp_context_enter(SpRun *run)
{
    return PyContextVar_Set(context_global->run_var, (PyObject *)run);
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
    return sp_context_leave_var(context_global->run_var, token);
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
    PyObject *token = PyContextVar_Set(context_global->run_var, Py_None);
    if (token == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(fn, arg);
    if (sp_context_leave(token) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

SpRun *
sp_context_new_twin(SpRun *run)
{
    SpRun *twin = sp_context_new_run(
        run->ok_dests, run->data,
        run->pre_deny != NULL ? run->pre_deny : Py_None, run->yolo);
    if (twin != NULL) {
        twin->later = 1;
    }
    return twin;
}

int
sp_context_set_memcap(SpRun *run, size_t cap)
{
    if (cap == 0) {
        return 0;
    }
    if (sp_memcap_install() < 0) {
        return -1;
    }
    sp_memcap_release(run->mem);
    run->mem = sp_memcap_new(cap);
    return run->mem == NULL ? -1 : 0;
}

PyObject *
sp_memcap_run_peak(SpRun *run)
{
    if (run->mem == NULL) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSize_t(sp_memcap_peak(run->mem));
}
