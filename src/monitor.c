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

#include "guards.h"
#include "registry.h"
#include "trust.h"

/* sys.monitoring.events values (stable since 3.12). */
#define MONITOR_PY_START 1
#define MONITOR_CALL (1 << 4)

static struct {
    unsigned long synced_version;
    PyObject *gated;    /* owned: {id(code): code} as last synced */
    int tool_id;        /* 3.12+: our sys.monitoring tool, or -1 */
    PyObject *disable;  /* owned: sys.monitoring.DISABLE (3.12+) */
} monitor = {(unsigned long)-1, NULL, -1, NULL};

/* The last call of a trusted native made by cell code, per thread (a
 * native may release the GIL): the callable (owned), the calling frame and
 * its instruction.  While that frame still stands at that instruction, the
 * call is in progress, so an audit event raised with that frame innermost
 * comes from inside the native.  No return event is needed: a finished
 * call leaves the frame at another instruction, or the call site's next
 * CALL event replaces the record. */
static _Thread_local struct {
    PyObject *callable;   /* owned, or NULL */
    PyFrameObject *frame; /* compared only, never dereferenced */
    int lasti;
} native_call;

/* Record `callable`, called by `frame`, if it is a trusted native.
 * 1 recorded, 0 not a trusted native (the record of this call site, if
 * any, is cleared). */
static int
monitor_native_called(PyObject *callable, PyFrameObject *frame)
{
    int trusted = sp_registry_native_trusted(callable);
    int lasti = PyFrame_GetLasti(frame);
    if (!trusted) {
        if (native_call.frame == frame && native_call.lasti == lasti) {
            Py_CLEAR(native_call.callable);
            native_call.frame = NULL;
        }
        return 0;
    }
    Py_XSETREF(native_call.callable, Py_NewRef(callable));
    native_call.frame = frame;
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
    return Py_NewRef(monitor.disable);
}

static PyMethodDef monitor_cell_call_def = {
    "safepyrun_cell_call", (PyCFunction)(void (*)(void))monitor_cell_call,
    METH_FASTCALL, "safepyrun's CALL callback (trusted natives)."};

/* Claim a tool id and register the callback, once. */
static int
monitor_claim_tool(PyObject *mon)
{
    static const int candidates[] = {4, 3};
    for (int i = 0; i < 2 && monitor.tool_id < 0; i++) {
        PyObject *r = PyObject_CallMethod(mon, "use_tool_id", "is",
                                          candidates[i], "safepyrun");
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            PyErr_Clear(); /* taken by another tool */
            continue;
        }
        Py_DECREF(r);
        monitor.tool_id = candidates[i];
    }
    if (monitor.tool_id < 0) {
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
    monitor.disable = PyObject_GetAttrString(mon, "DISABLE");
    if (monitor.disable == NULL) {
        return -1;
    }
    for (size_t i = 0; i < sizeof(callbacks) / sizeof(callbacks[0]); i++) {
        PyObject *cb = PyCFunction_New(callbacks[i].def, NULL);
        if (cb == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallMethod(mon, "register_callback", "iiO",
                                          monitor.tool_id, callbacks[i].event, cb);
        Py_DECREF(cb);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* sys.monitoring, with our tool claimed.  New reference or NULL. */
static PyObject *
monitor_module(void)
{
    PyObject *mon = sp_guards_monitoring(); /* the unguarded functions */
    if (mon != NULL && monitor.tool_id < 0 && monitor_claim_tool(mon) < 0) {
        Py_CLEAR(mon);
    }
    return mon;
}

static int
monitor_watch_one(PyObject *mon, PyObject *code, int depth)
{
    if (depth > 100) {
        return 0;
    }
    int events = MONITOR_CALL;
    if (monitor.gated != NULL) {
        PyObject *id = PyLong_FromVoidPtr(code);
        int gated = id == NULL ? -1 : PyDict_Contains(monitor.gated, id);
        Py_XDECREF(id);
        if (gated < 0) {
            return -1;
        }
        events |= gated ? MONITOR_PY_START : 0;
    }
    PyObject *r = PyObject_CallMethod(mon, "set_local_events", "iOi",
                                      monitor.tool_id, code, events);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    for (Py_ssize_t i = 0; consts != NULL && i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && monitor_watch_one(mon, c, depth + 1) < 0) {
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
    PyObject *mon = monitor_module();
    if (mon == NULL) {
        return -1;
    }
    int rc = monitor_watch_one(mon, code, 0);
    Py_DECREF(mon);
    return rc;
}

int
sp_monitor_sync(void)
{
    if (monitor.synced_version == sp_registry_version()) {
        return 0;
    }
    PyObject *gated = sp_registry_gated_codes(); /* borrowed */
    if (PyDict_GET_SIZE(gated) == 0 &&
        (monitor.gated == NULL || PyDict_GET_SIZE(monitor.gated) == 0)) {
        monitor.synced_version = sp_registry_version();
        return 0;
    }
    PyObject *mon = monitor_module();
    if (mon == NULL) {
        return -1;
    }
    PyObject *key, *code;
    Py_ssize_t pos = 0;
    /* Off for codes no longer gated, on for the gated ones. */
    while (monitor.gated != NULL && PyDict_Next(monitor.gated, &pos, &key, &code)) {
        if (PyDict_Contains(gated, key) == 1) {
            continue;
        }
        PyObject *r = PyObject_CallMethod(mon, "set_local_events", "iOi",
                                          monitor.tool_id, code, 0);
        if (r == NULL) {
            Py_DECREF(mon);
            return -1;
        }
        Py_DECREF(r);
    }
    pos = 0;
    while (PyDict_Next(gated, &pos, &key, &code)) {
        PyObject *r = PyObject_CallMethod(mon, "set_local_events", "iOi",
                                          monitor.tool_id, code,
                                          MONITOR_PY_START);
        if (r == NULL) {
            Py_DECREF(mon);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(mon);
    Py_XSETREF(monitor.gated, PyDict_Copy(gated));
    if (monitor.gated == NULL) {
        return -1;
    }
    monitor.synced_version = sp_registry_version();
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
static Py_tracefunc monitor_chained_func;
static PyObject *monitor_chained_obj; /* borrowed from the saved state */

int
sp_monitor_sync(void)
{
    if (monitor.synced_version == sp_registry_version()) {
        return 0;
    }
    Py_XSETREF(monitor.gated, PyDict_Copy(sp_registry_gated_codes()));
    if (monitor.gated == NULL) {
        return -1;
    }
    monitor.synced_version = sp_registry_version();
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
    else if (what == PyTrace_CALL && monitor.gated != NULL &&
             PyDict_GET_SIZE(monitor.gated) > 0) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject *id = PyLong_FromVoidPtr(code);
        int gated = id == NULL ? -1 : PyDict_Contains(monitor.gated, id);
        Py_XDECREF(id);
        int rc = gated > 0 ? sp_trust_gate_call(frame, (PyObject *)code) : gated;
        Py_DECREF(code);
        if (rc < 0) {
            return -1;
        }
    }
    (void)obj;
    if (monitor_chained_func != NULL) {
        return monitor_chained_func(monitor_chained_obj, frame, what, arg);
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
    monitor_chained_func = saved->func;
    monitor_chained_obj = saved->obj;
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
    monitor_chained_func = NULL;
    monitor_chained_obj = NULL;
    Py_CLEAR(saved->obj);
    saved->active = 0;
}

#endif

static int
monitor_code_names(PyObject *code, PyObject *names, int depth)
{
    PyObject *co_names = ((PyCodeObject *)code)->co_names;
    for (Py_ssize_t i = 0; co_names != NULL && i < PyTuple_GET_SIZE(co_names); i++) {
        int has = PySet_Contains(names, PyTuple_GET_ITEM(co_names, i));
        if (has != 0) {
            if (has < 0) {
                PyErr_Clear();
            }
            return 1; /* an error counts as "watch it" */
        }
    }
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    for (Py_ssize_t i = 0; depth < 100 && consts != NULL && i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && monitor_code_names(c, names, depth + 1)) {
            return 1;
        }
    }
    return 0;
}

int
sp_monitor_cell_wants(PyObject *code)
{
    PyObject *names = sp_registry_watch_names(); /* borrowed */
    if (names == NULL || PySet_GET_SIZE(names) == 0) {
        return 0;
    }
    return monitor_code_names(code, names, 0);
}

int
sp_monitor_init(PyObject *module)
{
    (void)module;
    return 0;
}
