/* monitor.c - the call monitor (see monitor.h).
 *
 * 3.12+: one sys.monitoring tool id (the first free of 4, 3) with a C
 * callback for PY_START, enabled with set_local_events on each gated code
 * object only.  The callback runs for every start of such code in any
 * thread or task; trust.c's gate does nothing outside a gated run.
 *
 * 3.11: sys.monitoring does not exist.  While gated codes exist, each step
 * of a cell runs with a C profile function installed on the thread; on a
 * call it looks the code up among the gated ones.  The host's own profile
 * function, if any, is saved, chained and restored.  Calls made by tasks
 * the cell created run in their own steps, outside this window: on 3.11
 * they are not call-gated (their effects are still gated by the hook).
 *
 * Threading: GIL held.  State below is process-wide and written only by
 * sp_monitor_sync (registry version, synced codes).
 */
#include "monitor.h"
#include "state.h"

#include "registry.h"
#include "trust.h"

/* sys.monitoring.events values (stable since 3.12). */
#define MONITOR_PY_START 1
#define MONITOR_CALL (1 << 4)

/* This file's part of the engine state (state.h). */
static struct sp_monitor_state *const monitor = &sp_state.monitor;

/* The last call of a trusted native made by cell code, per thread (a
 * native may release the GIL): the callable and the calling frame, both
 * owned, and its instruction.  While that frame still stands at that
 * instruction, the call is in progress, so an audit event raised with that
 * frame innermost comes from inside the native.  No return event is
 * needed: a finished call leaves the frame at another instruction, or the
 * call site's next CALL event replaces the record.  The frame is held, not
 * just its address: a freed frame's memory is reused by the next frame of
 * the same shape, which would then match a stale record. */
static _Thread_local struct {
    PyObject *callable;   /* owned, or NULL */
    PyFrameObject *frame; /* owned, or NULL */
    int lasti;
} native_call;

/* The last callable found trusted, so a loop calling one trusted native
 * pays a pointer compare, not a registry look-up.  Exact: the answer is
 * reused only while the registry is at the same version and for the same
 * object (held, so its address cannot be reused by another), or, for a
 * builtin method bound anew at each call (3.11's profile events), for the
 * same method definition on the same type whose version tag proves its
 * MRO's dicts unchanged, when the trust came from that method's
 * descriptor.  Any other callable takes the full look-up.  Process-wide,
 * GIL held. */
static struct {
    PyObject *callable;  /* owned, or NULL */
    PyTypeObject *type;  /* owned, or NULL: bound builtin methods */
    PyMethodDef *def;    /* with type */
    unsigned int tag;    /* type's tp_version_tag when cached */
    unsigned long version; /* registry version when cached */
} trusted_cache;

/* An open-addressing set of pointers, built whole, then only read. */
typedef struct {
    const void **slots; /* PyMem, or NULL: not built */
    size_t mask;
} monitor_ptrset;

static size_t
monitor_ptr_hash(const void *p)
{
    uintptr_t x = (uintptr_t)p >> 4;
    return (size_t)(x ^ (x >> 17)) * (size_t)0x9E3779B1u;
}

static void
monitor_ptrset_add(monitor_ptrset *s, const void *p)
{
    size_t i = monitor_ptr_hash(p) & s->mask;
    while (s->slots[i] != NULL && s->slots[i] != p) {
        i = (i + 1) & s->mask;
    }
    s->slots[i] = p;
}

static int
monitor_ptrset_has(const monitor_ptrset *s, const void *p)
{
    size_t i = monitor_ptr_hash(p) & s->mask;
    while (s->slots[i] != NULL) {
        if (s->slots[i] == p) {
            return 1;
        }
        i = (i + 1) & s->mask;
    }
    return 0;
}

/* An empty set sized for n pointers (at most half full).  0 / -1. */
static int
monitor_ptrset_init(monitor_ptrset *s, size_t n)
{
    size_t cap = 8;
    while (cap < 2 * n + 2) {
        cap *= 2;
    }
    PyMem_Free(s->slots);
    s->slots = PyMem_Calloc(cap, sizeof(void *));
    s->mask = cap - 1;
    return s->slots == NULL ? -1 : 0;
}

/* The pre-filter: which callables can be trusted natives at all.  A
 * callable is one only if it is itself registered (`objects`) or is a
 * builtin method bound from a registered method descriptor, whose method
 * definition is then in `defs` (registry.c's two ways).  Most calls (every
 * C call a library makes, on 3.11) are answered "no" here without
 * allocating.  The registry holds its keys, so their addresses cannot be
 * reused while the version stands. */
static struct {
    monitor_ptrset objects, defs;
    unsigned long version;
    int built;
} natives_filter;

/* 1 if `callable` may be a trusted native (ask the registry), 0 if it
 * cannot be. */
static int
monitor_may_be_native(PyObject *callable)
{
    unsigned long version = sp_registry_version();
    if (!natives_filter.built || natives_filter.version != version) {
        PyObject *natives = sp_registry_natives(); /* borrowed */
        size_t n = natives != NULL ? (size_t)PyDict_GET_SIZE(natives) : 0;
        natives_filter.built = 0;
        if (monitor_ptrset_init(&natives_filter.objects, n) < 0 ||
            monitor_ptrset_init(&natives_filter.defs, n) < 0) {
            return 1; /* no filter: the registry answers */
        }
        PyObject *key, *slot;
        Py_ssize_t pos = 0;
        while (natives != NULL && PyDict_Next(natives, &pos, &key, &slot)) {
            if (!PyTuple_Check(slot) || PyTuple_GET_SIZE(slot) < 1) {
                return 1;
            }
            PyObject *obj = PyTuple_GET_ITEM(slot, 0);
            monitor_ptrset_add(&natives_filter.objects, obj);
            if (Py_IS_TYPE(obj, &PyMethodDescr_Type)) {
                monitor_ptrset_add(&natives_filter.defs,
                                   ((PyMethodDescrObject *)obj)->d_method);
            }
        }
        natives_filter.version = version;
        natives_filter.built = 1;
    }
    if (monitor_ptrset_has(&natives_filter.objects, callable)) {
        return 1;
    }
    return PyCFunction_Check(callable) &&
           monitor_ptrset_has(&natives_filter.defs,
                              ((PyCFunctionObject *)callable)->m_ml);
}

static int
monitor_trusted(PyObject *callable)
{
    unsigned long version = sp_registry_version();
    if (trusted_cache.callable != NULL && trusted_cache.version == version) {
        if (callable == trusted_cache.callable) {
            return 1;
        }
        if (trusted_cache.type != NULL && PyCFunction_Check(callable)) {
            PyObject *self = PyCFunction_GET_SELF(callable);
            PyTypeObject *tp = self != NULL ? Py_TYPE(self) : NULL;
            if (tp == trusted_cache.type &&
                ((PyCFunctionObject *)callable)->m_ml == trusted_cache.def &&
                (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) &&
                tp->tp_version_tag == trusted_cache.tag) {
                return 1;
            }
        }
    }
    int by_method = 0;
    if (!monitor_may_be_native(callable) ||
        !sp_registry_native_trusted_by(callable, &by_method)) {
        return 0;
    }
    Py_XSETREF(trusted_cache.callable, Py_NewRef(callable));
    Py_CLEAR(trusted_cache.type);
    trusted_cache.version = version;
    if (by_method) {
        PyTypeObject *tp = Py_TYPE(PyCFunction_GET_SELF(callable));
        if (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) {
            trusted_cache.type = (PyTypeObject *)Py_NewRef((PyObject *)tp);
            trusted_cache.def = ((PyCFunctionObject *)callable)->m_ml;
            trusted_cache.tag = tp->tp_version_tag;
        }
    }
    return 1;
}

/* Record `callable`, called by `frame`, if it is a trusted native.
 * 1 recorded, 0 not a trusted native (the record of this call site, if
 * any, is cleared). */
static int
monitor_native_called(PyObject *callable, PyFrameObject *frame)
{
    int trusted = monitor_trusted(callable);
    int lasti = PyFrame_GetLasti(frame);
    if (!trusted) {
        if (native_call.frame == frame && native_call.lasti == lasti) {
            Py_CLEAR(native_call.callable);
            Py_CLEAR(native_call.frame);
        }
        return 0;
    }
    /* The same call again (a loop): only the instruction moves. */
    if (native_call.callable != callable) {
        Py_XSETREF(native_call.callable, Py_NewRef(callable));
    }
    if (native_call.frame != frame) {
        Py_XSETREF(native_call.frame, (PyFrameObject *)Py_NewRef(frame));
    }
    native_call.lasti = lasti;
    return 1;
}

PyObject *
sp_monitor_native_call(PyFrameObject *frame)
{
    if (native_call.callable == NULL || native_call.frame != frame ||
        native_call.lasti != PyFrame_GetLasti(frame)) {
        return NULL;
    }
    return native_call.callable;
}

int
sp_monitor_cell_wants(PyObject *code)
{
    (void)code;
    /* Any cell may reach a gated function or a trusted native through an
     * alias (tools[0](...), globals()['sa' + 've']): watch every cell
     * while either kind of registration exists. */
    return sp_registry_has_natives() ||
           PyDict_GET_SIZE(sp_registry_gated_codes()) > 0;
}

#if PY_VERSION_HEX >= 0x030C0000

/* The PY_START callback: (code, instruction_offset) -> None. */
static PyObject *
monitor_py_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1) {
        Py_RETURN_NONE;
    }
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed: the new frame */
    if (frame != NULL && sp_trust_gate_call(frame, args[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef monitor_py_start_def = {
    "safepyrun_call_gate", (PyCFunction)(void (*)(void))monitor_py_start,
    METH_FASTCALL, "safepyrun's PY_START callback (call gate)."};

/* CALL in cell code: (code, offset, callable, arg0).  A call site whose
 * callable is not a trusted native is switched off (DISABLE), so cell code
 * pays for this only at sites that call trusted natives.  (A site that
 * later calls a trusted native is then not seen, and the native's effects
 * are refused: the monitor fails closed.) */
static PyObject *
monitor_cell_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    PyFrameObject *frame = PyEval_GetFrame();
    if (nargs < 3 || frame == NULL) {
        Py_RETURN_NONE;
    }
    if (monitor_native_called(args[2], frame)) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(monitor->disable);
}

static PyMethodDef monitor_cell_call_def = {
    "safepyrun_cell_call", (PyCFunction)(void (*)(void))monitor_cell_call,
    METH_FASTCALL, "safepyrun's CALL callback (trusted natives)."};

/* Claim a tool id and register the callback, once. */
static int
monitor_claim_tool(void)
{
    static const int candidates[] = {4, 3};
    for (int i = 0; i < 2 && monitor->tool_id < 0; i++) {
        PyObject *r = PyObject_CallFunction(monitor->use_tool_id, "is",
                                            candidates[i], "safepyrun");
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            PyErr_Clear(); /* taken by another tool */
            continue;
        }
        Py_DECREF(r);
        monitor->tool_id = candidates[i];
    }
    if (monitor->tool_id < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "safepyrun: no free sys.monitoring tool id (3 and 4 "
                        "are taken); the call gate cannot run");
        return -1;
    }
    static const struct {
        PyMethodDef *def;
        int event;
    } callbacks[] = {
        {&monitor_py_start_def, MONITOR_PY_START},
        {&monitor_cell_call_def, MONITOR_CALL},
    };
    for (size_t i = 0; i < sizeof(callbacks) / sizeof(callbacks[0]); i++) {
        PyObject *cb = PyCFunction_New(callbacks[i].def, NULL);
        if (cb == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallFunction(monitor->register_callback, "iiO",
                                            monitor->tool_id, callbacks[i].event, cb);
        Py_DECREF(cb);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* Our tool claimed and its callbacks registered, once.  0 ok, -1 error. */
static int
monitor_ready(void)
{
    return monitor->tool_id >= 0 ? 0 : monitor_claim_tool();
}

/* set_local_events(our tool, code, events) through the captured function. */
static int
monitor_set_local_events(PyObject *code, int events)
{
    PyObject *r = PyObject_CallFunction(monitor->set_local_events, "iOi",
                                        monitor->tool_id, code, events);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
monitor_watch_one(PyObject *code, int depth)
{
    if (depth > 100) {
        return 0;
    }
    int events = MONITOR_CALL;
    if (monitor->gated != NULL) {
        PyObject *id = PyLong_FromVoidPtr(code);
        int gated = id == NULL ? -1 : PyDict_Contains(monitor->gated, id);
        Py_XDECREF(id);
        if (gated < 0) {
            return -1;
        }
        events |= gated ? MONITOR_PY_START : 0;
    }
    if (monitor_set_local_events(code, events) < 0) {
        return -1;
    }
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    for (Py_ssize_t i = 0; consts != NULL && i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && monitor_watch_one(c, depth + 1) < 0) {
            return -1;
        }
    }
    return 0;
}

int
sp_monitor_watch_cell(PyObject *code)
{
    if (!sp_registry_has_natives()) {
        return 0;
    }
    if (monitor_ready() < 0) {
        return -1;
    }
    return monitor_watch_one(code, 0);
}

int
sp_monitor_sync(void)
{
    if (monitor->synced_version == sp_registry_version()) {
        return 0;
    }
    PyObject *gated = sp_registry_gated_codes(); /* borrowed */
    if (PyDict_GET_SIZE(gated) == 0 &&
        (monitor->gated == NULL || PyDict_GET_SIZE(monitor->gated) == 0)) {
        monitor->synced_version = sp_registry_version();
        return 0;
    }
    if (monitor_ready() < 0) {
        return -1;
    }
    PyObject *key, *code;
    Py_ssize_t pos = 0;
    /* Off for codes no longer gated, on for the gated ones. */
    while (monitor->gated != NULL && PyDict_Next(monitor->gated, &pos, &key, &code)) {
        if (PyDict_Contains(gated, key) == 1) {
            continue;
        }
        if (monitor_set_local_events(code, 0) < 0) {
            return -1;
        }
    }
    pos = 0;
    while (PyDict_Next(gated, &pos, &key, &code)) {
        if (monitor_set_local_events(code, MONITOR_PY_START) < 0) {
            return -1;
        }
    }
    Py_XSETREF(monitor->gated, PyDict_Copy(gated));
    if (monitor->gated == NULL) {
        return -1;
    }
    monitor->synced_version = sp_registry_version();
    return 0;
}

int
sp_monitor_enter(sp_monitor_saved *saved, int wanted)
{
    (void)wanted;
    saved->active = 0;
    return 0;
}

void
sp_monitor_leave(sp_monitor_saved *saved)
{
    (void)saved;
}

#else /* 3.11: a profile function during the cell's steps */

static int
monitor_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg);

/* The host's profile function while ours runs (chained). */

/* The gated codes as a pointer set, for the profile function's look-up
 * on every Python call (monitor->gated holds the codes, so their
 * addresses stay theirs). */
static monitor_ptrset gated_set;

int
sp_monitor_sync(void)
{
    if (monitor->synced_version == sp_registry_version()) {
        return 0;
    }
    Py_XSETREF(monitor->gated, PyDict_Copy(sp_registry_gated_codes()));
    if (monitor->gated == NULL ||
        monitor_ptrset_init(&gated_set, (size_t)PyDict_GET_SIZE(monitor->gated)) < 0) {
        Py_CLEAR(monitor->gated);
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return -1;
    }
    PyObject *key, *code;
    Py_ssize_t pos = 0;
    while (PyDict_Next(monitor->gated, &pos, &key, &code)) {
        monitor_ptrset_add(&gated_set, code);
    }
    monitor->synced_version = sp_registry_version();
    return 0;
}

int
sp_monitor_watch_cell(PyObject *code)
{
    (void)code; /* 3.11: the profile function sees every call of a step */
    return 0;
}

static int
monitor_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    if (what == PyTrace_C_CALL) {
        (void)monitor_native_called(arg, frame);
    }
    else if (what == PyTrace_CALL && monitor->gated != NULL &&
             PyDict_GET_SIZE(monitor->gated) > 0) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        int rc = monitor_ptrset_has(&gated_set, code)
                     ? sp_trust_gate_call(frame, (PyObject *)code)
                     : 0;
        Py_DECREF(code);
        if (rc < 0) {
            return -1;
        }
    }
    (void)obj;
    if (monitor->chained_func != NULL) {
        return monitor->chained_func(monitor->chained_obj, frame, what, arg);
    }
    return 0;
}

int
sp_monitor_enter(sp_monitor_saved *saved, int wanted)
{
    saved->active = 0;
    if (!wanted) {
        return 0;
    }
    PyThreadState *ts = PyThreadState_Get();
    if (ts->c_profilefunc == monitor_profile) {
        return 0; /* nested: already installed */
    }
    saved->func = ts->c_profilefunc;
    saved->obj = Py_XNewRef(ts->c_profileobj);
    monitor->chained_func = saved->func;
    monitor->chained_obj = saved->obj;
    PyEval_SetProfile(monitor_profile, NULL);
    if (PyErr_Occurred()) {
        Py_CLEAR(saved->obj);
        return -1;
    }
    saved->active = 1;
    return 0;
}

void
sp_monitor_leave(sp_monitor_saved *saved)
{
    if (!saved->active) {
        return;
    }
    PyObject *exc = sp_err_get_raised();
    PyEval_SetProfile(saved->func, saved->obj);
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(NULL);
    }
    sp_err_set_raised(exc);
    monitor->chained_func = NULL;
    monitor->chained_obj = NULL;
    Py_CLEAR(saved->obj);
    saved->active = 0;
}

#endif

int
sp_monitor_init(PyObject *module)
{
    (void)module;
    if (monitor->ready) {
        return 0;
    }
    monitor->synced_version = (unsigned long)-1; /* never synced */
    monitor->tool_id = -1;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *mon = sys == NULL ? NULL : PyObject_GetAttrString(sys, "monitoring");
    Py_XDECREF(sys);
    if (mon == NULL) {
        return -1;
    }
    monitor->set_local_events = PyObject_GetAttrString(mon, "set_local_events");
    monitor->use_tool_id = PyObject_GetAttrString(mon, "use_tool_id");
    monitor->register_callback = PyObject_GetAttrString(mon, "register_callback");
    monitor->disable = PyObject_GetAttrString(mon, "DISABLE");
    Py_DECREF(mon);
    if (monitor->set_local_events == NULL || monitor->use_tool_id == NULL ||
        monitor->register_callback == NULL || monitor->disable == NULL) {
        return -1;
    }
#endif
    monitor->ready = 1;
    return 0;
}
