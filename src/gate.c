/* gate.c - the one predicate, the cell-code index and the frame walk.
 *
 * "Is a run governing the code running now?"  The context variable of
 * context.c answers for the code the runner drives, and for the tasks and
 * callbacks that copied its context.  It is a hint, not a proof: a cell can
 * reset the variable, or call into the engine through
 * `contextvars.Context().run(...)`.  So when the context holds no run, the
 * gate walks the Python stack for a frame running cell code; such a frame
 * means a cell is (directly or through host code it called) running now,
 * and its run's policy governs.  The same walk makes code that a cell
 * created stay gated after its run: a function the host calls later, a
 * finalizer, a callback in a fresh context.
 *
 * Cell code is known by identity.  The index below maps code objects, by
 * address, to the policy they stay gated under (a "twin" of their run, see
 * sp_gate_register_codes).  It is an open-addressing hash table in C: the
 * walk probes it once per frame with no allocation and no Python-level
 * work, so host code pays a few nanoseconds per frame, and nothing at all
 * while no cell has run.  Each entry holds a weak reference to its code
 * object whose callback removes the entry when the code object is freed;
 * the callback (reachable from Python through weakref.getweakrefs) removes
 * nothing while its code object is alive.  The index itself is reachable
 * from no Python object.
 *
 * Host calls: the engine calls the host's pre_deny hook from inside a
 * refusal.  That call is host code even though cell frames lie below it;
 * sp_gate_call_as_host sets a per-thread barrier at the innermost frame,
 * and every walk stops there.
 *
 * Threading: GIL held throughout.  The index is process-wide (the audit
 * hook is); the barrier is per thread.
 */
#include "gate.h"
#include "threads.h"
#include "state.h"

#include <stdint.h>
#include <string.h>

/* A freed entry: keeps probe chains intact until the next rehash. */
#define GATE_TOMB ((PyObject *)(uintptr_t)1)
#define GATE_MIN_SLOTS 64
/* Nesting of code objects followed when registering. */
#define GATE_MAX_NESTING 100

/* This file's part of the engine state (state.h). */
static struct sp_gate_state *const gate = &sp_state.gate;

/* Per thread: the innermost frame when sp_gate_call_as_host began; walks
 * stop there.  Compared only. */
static _Thread_local PyFrameObject *gate_barrier;

/* Per thread: depth of the engine's own calls (sp_gate_engine_begin). */
static _Thread_local int gate_engine_depth;

static PyObject *gate_code_gone(PyObject *key, PyObject *wr);

static PyMethodDef gate_code_gone_def = {
    "safepyrun_code_gone", gate_code_gone, METH_O,
    "Forget a cell code object that was freed."};

/* ---- the index ------------------------------------------------------------- */

static inline size_t
gate_hash(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h;
}

/* The slot holding `code`, or NULL. */
static sp_gate_slot *
gate_find(const void *code)
{
    if (gate->live == 0) {
        return NULL;
    }
    size_t mask = gate->size - 1;
    for (size_t i = gate_hash(code) & mask;; i = (i + 1) & mask) {
        sp_gate_slot *s = &gate->slots[i];
        if (s->code == code) {
            return s;
        }
        if (s->code == NULL) {
            return NULL;
        }
    }
}

/* Grow (or clean tombstones) so that one more entry fits.  0 / -1. */
static int
gate_reserve(void)
{
    if (gate->size != 0 && (gate->filled + 1) * 4 <= gate->size * 3) {
        return 0;
    }
    size_t size = GATE_MIN_SLOTS;
    while (size * 3 <= (gate->live + 1) * 8) {
        size *= 2; /* at most 3/8 full after the rehash */
    }
    sp_gate_slot *slots = PyMem_Calloc(size, sizeof(sp_gate_slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < gate->size; i++) {
        sp_gate_slot *old = &gate->slots[i];
        if (old->code == NULL || old->code == GATE_TOMB) {
            continue;
        }
        size_t j = gate_hash(old->code) & (size - 1);
        while (slots[j].code != NULL) {
            j = (j + 1) & (size - 1);
        }
        slots[j] = *old;
    }
    PyMem_Free(gate->slots);
    gate->slots = slots;
    gate->size = size;
    gate->filled = gate->live;
    return 0;
}

/* Weak-reference callback: the code object at address `key` is being
 * freed.  Python code can call this too (weakref.getweakrefs(code)[0].
 * __callback__): it removes an entry only when the entry's weak reference
 * is dead, i.e. the code object really is gone. */
static PyObject *
gate_code_gone(PyObject *key, PyObject *unused)
{
    (void)unused;
    void *code = PyLong_AsVoidPtr(key);
    if (code == NULL && PyErr_Occurred()) {
        return NULL;
    }
    sp_gate_slot *s = gate_find(code);
    if (s == NULL || !sp_weakref_dead(s->wr)) {
        Py_RETURN_NONE;
    }
    /* Unlink first: releasing the references may run arbitrary code. */
    PyObject *wr = s->wr;
    PyObject *run = s->run;
    s->code = GATE_TOMB;
    s->wr = NULL;
    s->run = NULL;
    gate->live--;
    Py_DECREF(wr);
    Py_DECREF(run);
    Py_RETURN_NONE;
}

/* Add one code object.  0 ok (also when already present), -1 error. */
static int
gate_add(PyObject *code, SpRun *twin)
{
    if (gate_find(code) != NULL) {
        return 0;
    }
    PyObject *key = NULL, *cb = NULL, *wr = NULL; /* owned */
    int rc = -1;
    key = PyLong_FromVoidPtr(code);
    cb = key == NULL ? NULL : PyCFunction_New(&gate_code_gone_def, key);
    wr = cb == NULL ? NULL : PyWeakref_NewRef(code, cb);
    if (wr == NULL || gate_reserve() < 0) {
        goto done;
    }
    size_t mask = gate->size - 1;
    size_t i = gate_hash(code) & mask;
    while (gate->slots[i].code != NULL && gate->slots[i].code != GATE_TOMB) {
        i = (i + 1) & mask;
    }
    if (gate->slots[i].code == NULL) {
        gate->filled++;
    }
    gate->slots[i].code = code;
    gate->slots[i].wr = wr; /* reference moves into the slot */
    gate->slots[i].run = Py_NewRef((PyObject *)twin);
    wr = NULL;
    gate->live++;
    rc = 0;
done:
    Py_XDECREF(key);
    Py_XDECREF(cb);
    Py_XDECREF(wr);
    return rc;
}

static int
gate_add_nested(PyObject *code, SpRun *twin, int depth)
{
    if (depth > GATE_MAX_NESTING) {
        return 0; /* absurd nesting: the outer codes are registered */
    }
    if (gate_add(code, twin) < 0) {
        return -1;
    }
    PyObject *consts = ((PyCodeObject *)code)->co_consts; /* borrowed */
    for (Py_ssize_t i = 0; consts != NULL && i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && gate_add_nested(c, twin, depth + 1) < 0) {
            return -1;
        }
    }
    return 0;
}

int
sp_gate_register_codes(PyObject *code, SpRun *run)
{
    if (run->yolo || !PyCode_Check(code)) {
        return 0;
    }
    /* A twin without the run's denial list: the index is invisible to the
     * garbage collector, and a denial's traceback would keep the cell's
     * globals, and so its code, alive for ever. */
    SpRun *twin = run->later ? (SpRun *)Py_NewRef(run)
                             : sp_context_new_twin(run);
    if (twin == NULL) {
        return -1;
    }
    int rc = gate_add_nested(code, twin, 0);
    Py_DECREF(twin);
    return rc;
}

int
sp_gate_is_cell_code(PyCodeObject *code)
{
    return gate_find(code) != NULL;
}

sp_method_kind
sp_gate_method_kind(PyTypeObject *tp, const char *name)
{
    PyObject *mro = tp->tp_mro; /* borrowed */
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        PyObject *dict = sp_type_dict(base);
        PyObject *fn = NULL; /* owned */
        int found = dict == NULL ? -1 : sp_dict_get_ref_str(dict, name, &fn);
        Py_XDECREF(dict);
        if (found == 0) {
            continue;
        }
        sp_method_kind kind =
            found < 0 ? SP_METHOD_UNKNOWN
            : PyFunction_Check(fn)
                ? (sp_gate_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(fn))
                       ? SP_METHOD_CELL : SP_METHOD_HOST)
            : (base->tp_flags & Py_TPFLAGS_HEAPTYPE) ? SP_METHOD_OTHER
                                                     : SP_METHOD_HOST;
        PyErr_Clear();
        Py_XDECREF(fn);
        return kind;
    }
    return SP_METHOD_HOST;
}

/* ---- the frame walk ------------------------------------------------------------ */

void
sp_walk_start(sp_walk *w)
{
    w->frame = NULL;
    w->code = NULL;
    w->next = (PyFrameObject *)Py_XNewRef(PyEval_GetFrame());
    w->stop = gate_barrier;
    w->depth = 0;
}

PyFrameObject *
sp_walk_next(sp_walk *w)
{
    Py_CLEAR(w->code);
    Py_XSETREF(w->frame, w->next);
    w->next = NULL;
    if (w->frame == NULL || w->frame == w->stop) {
        Py_CLEAR(w->frame);
        return NULL;
    }
    w->code = PyFrame_GetCode(w->frame);
    w->next = PyFrame_GetBack(w->frame); /* NULL: the end, or no memory */
    if (w->next == NULL && PyErr_Occurred()) {
        Py_CLEAR(w->code);
        Py_CLEAR(w->frame);
        return NULL;
    }
    w->depth++;
    return w->frame;
}

void
sp_walk_stop(sp_walk *w)
{
    Py_CLEAR(w->code);
    Py_CLEAR(w->frame);
    Py_CLEAR(w->next);
}

/* ---- the predicate ----------------------------------------------------------------- */

/* The policy of the innermost frame running cell code.  Same returns as
 * sp_gate_run. */
static int
gate_run_of_frames(SpRun **run)
{
    int adopted = sp_threads_any_adopted();
    if (gate->live == 0 && !adopted) {
        return 0;
    }
    sp_walk w;
    sp_walk_start(&w);
    PyFrameObject *bottom = NULL; /* owned: the outermost frame walked */
    while (sp_walk_next(&w) != NULL) {
        sp_gate_slot *s = gate_find(w.code);
        if (s != NULL) {
            *run = (SpRun *)Py_NewRef(s->run);
            break;
        }
        if (adopted && w.next == NULL) {
            bottom = (PyFrameObject *)Py_NewRef(w.frame);
        }
    }
    sp_walk_stop(&w);
    if (*run == NULL && bottom != NULL && !PyErr_Occurred()) {
        /* A thread a library's import started inside a run. */
        (void)sp_threads_adopted_run(bottom, run);
    }
    Py_XDECREF(bottom);
    if (PyErr_Occurred()) {
        Py_CLEAR(*run);
        return -1;
    }
    return *run != NULL;
}

int
sp_gate_run(SpRun **run)
{
    int active = sp_context_current(run);
    if (active != 0) {
        return active;
    }
    return gate_run_of_frames(run);
}

int
sp_gate_refuse_inside(const char *what)
{
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    Py_XDECREF(run);
    if (active > 0) {
        PyErr_Format(PyExc_PermissionError,
                     "safepyrun refused to %s: sandboxed code cannot change "
                     "the sandbox", what);
        return -1;
    }
    return active;
}

int
sp_gate_exec_is_import(void)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    if (frame == NULL || gate->import_exec_code == NULL) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int is_import = (PyObject *)code == gate->import_exec_code;
    Py_DECREF(code);
    return is_import;
}

int
sp_gate_import_body(PyObject **globals, PyCodeObject **code)
{
    *globals = NULL;
    *code = NULL;
    if (gate->import_exec_code == NULL) {
        return 0;
    }
    sp_walk w;
    sp_walk_start(&w);
    while (sp_walk_next(&w) != NULL) {
        if (gate_find(w.code) != NULL) {
            break; /* cell code first: a cell's callback, not the import */
        }
        if (w.next == NULL) {
            continue;
        }
        PyCodeObject *outer = PyFrame_GetCode(w.next);
        int is_body = (PyObject *)outer == gate->import_exec_code;
        Py_DECREF(outer);
        if (is_body) {
            *globals = PyFrame_GetGlobals(w.frame);
            *code = (PyCodeObject *)Py_NewRef(w.code);
            break;
        }
    }
    sp_walk_stop(&w);
    if (PyErr_Occurred()) {
        Py_CLEAR(*globals);
        Py_CLEAR(*code);
        return -1;
    }
    return *globals != NULL;
}

void
sp_gate_engine_begin(void)
{
    gate_engine_depth++;
}

void
sp_gate_engine_end(void)
{
    gate_engine_depth--;
}

int
sp_gate_in_engine(void)
{
    return gate_engine_depth > 0;
}

PyObject *
sp_gate_call_as_host(PyObject *fn, PyObject *arg)
{
    PyFrameObject *saved = gate_barrier;
    gate_barrier = PyEval_GetFrame(); /* borrowed: alive below this call */
    PyObject *res = sp_context_call_outside(fn, arg);
    gate_barrier = saved;
    return res;
}

/* is_cell_code(obj): whether obj (a code object, or a function's) is cell
 * code.  A read-only predicate for the Python shell (the IPython glue uses
 * it to tell a library's callbacks from a cell's); it reveals nothing a
 * cell could use to widen trust. */
static PyObject *
gate_py_is_cell_code(PyObject *module, PyObject *obj)
{
    (void)module;
    if (PyFunction_Check(obj)) {
        obj = PyFunction_GET_CODE(obj);
    }
    if (!PyCode_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "is_cell_code() needs a code object or a function, not "
                     "%.200s", SP_TYPE_NAME(obj));
        return NULL;
    }
    return PyBool_FromLong(sp_gate_is_cell_code((PyCodeObject *)obj));
}

/* Whether a function value found in a class dictionary (a function, or
 * one wrapped by staticmethod/classmethod) is cell code.  1 / 0 / -1. */
static int
gate_class_value_is_cell(PyObject *value)
{
    PyObject *fn = NULL;
    if (Py_IS_TYPE(value, &PyStaticMethod_Type) ||
        Py_IS_TYPE(value, &PyClassMethod_Type)) {
        fn = PyObject_GetAttrString(value, "__func__"); /* a C getter */
        if (fn == NULL) {
            return -1;
        }
    }
    else {
        fn = Py_NewRef(value);
    }
    int cell = PyFunction_Check(fn) &&
               sp_gate_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(fn));
    Py_DECREF(fn);
    return cell;
}

/* Whether no class along `tp`'s MRO holds a function a cell made, reading
 * the class dictionaries only.  1 / 0 / -1. */
static int
gate_type_is_host(PyTypeObject *tp)
{
    PyObject *mro = tp->tp_mro; /* borrowed */
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *dict = sp_type_dict((PyTypeObject *)PyTuple_GET_ITEM(mro, i));
        PyObject *values = dict == NULL ? NULL : PyDict_Values(dict);
        Py_XDECREF(dict);
        if (values == NULL) {
            return -1;
        }
        int cell = 0;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(values) && cell == 0; j++) {
            cell = gate_class_value_is_cell(PyList_GET_ITEM(values, j));
        }
        Py_DECREF(values);
        if (cell != 0) {
            return cell < 0 ? -1 : 0;
        }
    }
    return 1;
}

/* is_host_callable(obj): whether obj is plainly the host's or a library's
 * callable: a function whose code no cell made, such a function bound to
 * an object whose class holds no cell function, or a native not bound to
 * an object (unbound, or a module's).  Anything else (a callable object,
 * a partial, a bound native) may run or stand for something a cell chose.
 * No code of obj runs. */
static PyObject *
gate_py_is_host_callable(PyObject *module, PyObject *obj)
{
    (void)module;
    if (PyFunction_Check(obj)) {
        return PyBool_FromLong(
            !sp_gate_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(obj)));
    }
    if (PyMethod_Check(obj)) {
        PyObject *fn = PyMethod_GET_FUNCTION(obj);
        if (!PyFunction_Check(fn) ||
            sp_gate_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(fn))) {
            Py_RETURN_FALSE;
        }
        int host = gate_type_is_host(Py_TYPE(PyMethod_GET_SELF(obj)));
        return host < 0 ? NULL : PyBool_FromLong(host);
    }
    if (PyCFunction_Check(obj)) {
        PyObject *self = PyCFunction_GET_SELF(obj); /* borrowed, may be NULL */
        return PyBool_FromLong(self == NULL || PyModule_Check(self));
    }
    Py_RETURN_FALSE;
}

static PyMethodDef gate_functions[] = {
    {"is_host_callable", gate_py_is_host_callable, METH_O,
     "is_host_callable(obj) -> bool\n\nWhether obj is plainly the host's "
     "or a library's callable (see gate.c); the IPython glue keeps only such "
     "callables a cell's run added to the shell's input machinery."},
    {"is_cell_code", gate_py_is_cell_code, METH_O,
     "is_cell_code(code_or_function) -> bool\n\nWhether it is cell code "
     "(compiled by a runner, or made while a run was active)."},
    {NULL, NULL, 0, NULL},
};

int
sp_gate_init(PyObject *module)
{
    if (PyModule_AddFunctions(module, gate_functions) < 0) {
        return -1;
    }
    if (gate->import_exec_code != NULL) {
        return 0;
    }
    /* The import system runs a module's code through this helper of the
     * frozen importlib._bootstrap; an exec called from it is an import,
     * whose code is the library's, not the cell's. */
    PyObject *name = PyUnicode_FromString("_frozen_importlib");
    PyObject *bootstrap = name == NULL ? NULL : PyImport_GetModule(name);
    Py_XDECREF(name);
    if (bootstrap == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *fn = PyObject_GetAttrString(bootstrap, "_call_with_frames_removed");
    Py_DECREF(bootstrap);
    if (fn == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (PyFunction_Check(fn)) {
        gate->import_exec_code = Py_NewRef(PyFunction_GET_CODE(fn));
    }
    Py_DECREF(fn);
    return 0;
}
