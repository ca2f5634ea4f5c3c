/* boundcall.c - SpBoundCall: a callable that runs under its run's policy.
 *
 * What it owns: the SpBoundCall type (process-wide, created once by
 * sp_boundcall_init and kept for the life of the process, like the audit
 * hook whose verdicts it steers).  An SpBoundCall holds a run and a
 * callable; calling it makes the run current (sp_context_enter) around the
 * call, so that what the callable does is judged under the run's policy
 * wherever and whenever it is called: at exit, from a finalizer, a signal
 * handler, an event loop or a worker thread.  guards.c wraps the callables
 * that sandboxed code registers to be called later.
 *
 * Invariants: not instantiable from Python and without attributes, so a
 * cell can neither make one nor take the callable back out; it compares
 * equal to (and hashes as) the callable it wraps, so that
 * atexit.unregister(fn) still finds fn.  GC-tracked: it may sit in a cycle
 * with the callable's own references.
 *
 * Threading: GIL held; the run context is per thread and per context.
 */
#include "boundcall.h"
#include "state.h"

#include "common.h"

/* Process-wide; written once by sp_boundcall_init. */

typedef struct {
    PyObject_HEAD
    SpRun *run;   /* owned: the run whose policy governs the call */
    PyObject *fn; /* owned: the callable the cell registered */
    int memcap;   /* nonzero: only charge the call to the run's memory cap
                     (a step of a task the cell spawned; its context holds
                     the run already) */
} SpBoundCall;

static int
bound_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpBoundCall *b = (SpBoundCall *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(b->run);
    Py_VISIT(b->fn);
    return 0;
}

static int
bound_tp_clear(PyObject *self)
{
    SpBoundCall *b = (SpBoundCall *)self;
    Py_CLEAR(b->run);
    Py_CLEAR(b->fn);
    return 0;
}

/* Call the callable with the run current, so the hook judges its events
 * under the run's policy wherever and whenever it is called. */
static PyObject *
bound_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    SpBoundCall *b = (SpBoundCall *)self;
    if (b->fn == NULL || b->run == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "safepyrun: cleared bound call");
        return NULL;
    }
    if (b->memcap) {
        sp_memcap_step step;
        sp_memcap_step_enter(b->run->mem, &step);
        PyObject *res = PyObject_Call(b->fn, args, kwargs);
        sp_memcap_step_leave(&step);
        return res;
    }
    PyObject *token = sp_context_enter(b->run);
    if (token == NULL) {
        return NULL;
    }
    /* Work a capped cell handed to an executor thread (asyncio.to_thread)
     * counts against its cap while the run lasts. */
    sp_memcap_step step;
    sp_memcap_step_enter(b->run->mem, &step);
    PyObject *res = PyObject_Call(b->fn, args, kwargs);
    sp_memcap_step_leave(&step);
    if (sp_context_leave(token) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

static PyObject *
bound_tp_repr(PyObject *self)
{
    SpBoundCall *b = (SpBoundCall *)self;
    if (b->fn == NULL) {
        return PyUnicode_FromString("<safepyrun sandboxed call>");
    }
    return PyUnicode_FromFormat("<safepyrun sandboxed call of %R>", b->fn);
}

/* Equal to (and hashing as) the callable it wraps, so that
 * atexit.unregister(fn) still finds fn. */
static PyObject *
bound_tp_richcompare(PyObject *self, PyObject *other, int op)
{
    SpBoundCall *b = (SpBoundCall *)self;
    if ((op != Py_EQ && op != Py_NE) || b->fn == NULL) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (Py_IS_TYPE(other, sp_state.guards.boundcall_type)) {
        other = ((SpBoundCall *)other)->fn;
        if (other == NULL) {
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    return PyObject_RichCompare(b->fn, other, op);
}

static Py_hash_t
bound_tp_hash(PyObject *self)
{
    SpBoundCall *b = (SpBoundCall *)self;
    if (b->fn != NULL) {
        return PyObject_Hash(b->fn);
    }
    Py_hash_t h = (Py_hash_t)((uintptr_t)self >> 4); /* cleared: identity */
    return h == -1 ? -2 : h;
}

static PyType_Slot bound_slots[] = {
    {Py_tp_doc, "A callable registered by sandboxed code, called under its "
                "run's policy (safepyrun)."},
    {Py_tp_traverse, bound_tp_traverse},
    {Py_tp_clear, bound_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_call, bound_tp_call},
    {Py_tp_repr, bound_tp_repr},
    {Py_tp_richcompare, bound_tp_richcompare},
    {Py_tp_hash, bound_tp_hash},
    {0, NULL},
};

static PyType_Spec bound_spec = {
    .name = "safepyrun._engine.SandboxedCall",
    .basicsize = sizeof(SpBoundCall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = bound_slots,
};

PyObject *
sp_boundcall_new(SpRun *run, PyObject *fn)
{
    if (Py_IS_TYPE(fn, sp_state.guards.boundcall_type)) {
        return Py_NewRef(fn);
    }
    SpBoundCall *b = PyObject_GC_New(SpBoundCall, sp_state.guards.boundcall_type);
    if (b == NULL) {
        return NULL;
    }
    b->run = (SpRun *)Py_NewRef((PyObject *)run);
    b->fn = Py_NewRef(fn);
    b->memcap = 0;
    PyObject_GC_Track(b);
    return (PyObject *)b;
}

PyObject *
sp_boundcall_memcap_new(SpRun *run, PyObject *fn)
{
    PyObject *b = sp_boundcall_new(run, fn);
    if (b != NULL && ((SpBoundCall *)b)->fn == fn) {
        ((SpBoundCall *)b)->memcap = 1;
    }
    return b;
}

int
sp_boundcall_init(PyObject *module)
{
    if (sp_state.guards.boundcall_type != NULL) {
        return 0;
    }
    sp_state.guards.boundcall_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &bound_spec, NULL);
    return sp_state.guards.boundcall_type == NULL ? -1 : 0;
}
