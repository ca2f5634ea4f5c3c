/* threads.c - what a cell may hand to other threads.
 *
 * Threads are refused inside a run (rules.c) unless a trusted call starts
 * them.  Two exceptions keep ordinary asyncio code working without letting
 * work escape the gate, because work handed to them stays gated:
 *   - asyncio.to_thread (hook.c recognises its code on the stack);
 *   - the running loop's own default executor (loop.run_in_executor(None,
 *     ...), loop.getaddrinfo): ThreadPoolExecutor.submit is replaced by a
 *     guard that, inside a run, submits the work wrapped in a copy of the
 *     submitter's context, so it runs gated in the worker; while it calls
 *     the real submit for the default executor, the worker thread that the
 *     executor may start is allowed (sp_threads_in_default_submit).
 * On 3.11, which raises no audit event for a thread start, the real
 * _thread.start_new_thread is replaced by a guard that raises the event
 * 3.12 raises.  The classes patched here are made immutable (class
 * attribute writes raise no audit event), together with the pathlib
 * classes whose paths count as stable (paths.c).
 *
 * State: the engine state's threads part, written once; a per-thread flag
 * while the guarded submit runs.  GIL held throughout.
 */
#include "threads.h"

#include "common.h"
#include "gate.h"
#include "paths.h"
#include "state.h"

/* This file's part of the engine state (state.h). */
static struct sp_threads_state *const threads = &sp_state.threads;

/* Set on this thread while the guarded ThreadPoolExecutor.submit calls
 * the real one for the running loop's default executor. */
static _Thread_local int threads_in_submit;

static int threads_capture_bootstrap(void);

/* module.cls.attr, importing module.  New reference or NULL. */
static PyObject *
threads_class_attr(const char *module, const char *cls, const char *attr)
{
    PyObject *mod = PyImport_ImportModule(module);
    PyObject *tp = mod == NULL ? NULL : PyObject_GetAttrString(mod, cls);
    PyObject *value = tp == NULL ? NULL : PyObject_GetAttrString(tp, attr);
    Py_XDECREF(mod);
    Py_XDECREF(tp);
    return value;
}

int
sp_threads_in_default_submit(void)
{
    return threads_in_submit;
}

#if SP_NEED_THREAD_GUARD
/* _thread.start_new_thread on 3.11, which raises no audit event: judge the
 * start as the event 3.12 raises, then call the real function. */
static PyObject *
threads_guarded_start_thread(PyObject *module, PyObject *args)
{
    (void)module;
    if (PySys_Audit("_thread.start_new_thread", "O", args) < 0) {
        return NULL;
    }
    return PyObject_Call(threads->start_thread, args, NULL);
}

static PyMethodDef threads_start_thread_def = {
    "start_new_thread", threads_guarded_start_thread, METH_VARARGS,
    "start_new_thread(function, args[, kwargs]) -- start a thread; refused "
    "inside a sandboxed run (safepyrun)."};

/* Replace _thread.start_new_thread (and its aliases) with the guard.  The
 * real function is kept only in the engine state, out of a cell's reach; the
 * guard's __self__ is the engine module. */
static int
threads_guard_start(PyObject *module)
{
    PyObject *thread_mod = NULL, *guard = NULL, *threading = NULL;
    int rc = -1;
    thread_mod = PyImport_ImportModule("_thread");
    if (thread_mod == NULL) {
        goto done;
    }
    threads->start_thread =
        PyObject_GetAttrString(thread_mod, "start_new_thread");
    if (threads->start_thread == NULL) {
        goto done;
    }
    guard = PyCFunction_NewEx(&threads_start_thread_def, module, NULL);
    if (guard == NULL ||
        PyObject_SetAttrString(thread_mod, "start_new_thread", guard) < 0 ||
        PyObject_SetAttrString(thread_mod, "start_new", guard) < 0) {
        goto done;
    }
    /* threading binds its own alias at import. */
    PyObject *name = PyUnicode_FromString("threading");
    if (name == NULL) {
        goto done;
    }
    threading = PyImport_GetModule(name);
    Py_DECREF(name);
    if (threading == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (threading != NULL &&
        PyObject_SetAttrString(threading, "_start_new_thread", guard) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(thread_mod);
    Py_XDECREF(guard);
    Py_XDECREF(threading);
    return rc;
}
#endif

/* Whether `executor` is asyncio's own: made by the event loop's
 * run_in_executor as its default executor (recorded by the guarded
 * __init__ below), not one a cell made and set as the default.  1 / 0. */
static int
threads_is_default_executor(PyObject *executor)
{
    PyObject *key = PyLong_FromVoidPtr(executor);
    PyObject *wr = key == NULL ? NULL
        : PyDict_GetItemWithError(threads->asyncio_executors, key); /* borrowed */
    Py_XDECREF(key);
    if (wr == NULL) {
        PyErr_Clear();
        return 0;
    }
    return sp_weakref_is(wr, executor);
}

/* ThreadPoolExecutor.__init__, as installed by sp_threads_before_run: an
 * executor made by the event loop's run_in_executor (asyncio's default
 * executor) is recorded as asyncio's own. */
static PyObject *
threads_guarded_init(PyObject *unused, PyObject *const *args, size_t nargsf,
                     PyObject *kwnames)
{
    (void)unused;
    PyObject *res = PyObject_Vectorcall(threads->init, args, nargsf, kwnames);
    PyFrameObject *caller = PyEval_GetFrame(); /* borrowed */
    if (res == NULL || PyVectorcall_NARGS(nargsf) < 1 || caller == NULL) {
        return res;
    }
    PyCodeObject *code = PyFrame_GetCode(caller);
    int by_asyncio = (PyObject *)code == threads->run_in_executor_code;
    Py_DECREF(code);
    if (by_asyncio && PyDict_GET_SIZE(threads->asyncio_executors) >= 16) {
        /* One per event loop: forget the executors that are gone. */
        PyObject *items = PyDict_Items(threads->asyncio_executors);
        for (Py_ssize_t i = 0; items != NULL && i < PyList_GET_SIZE(items); i++) {
            PyObject *pair = PyList_GET_ITEM(items, i);
            if (sp_weakref_dead(PyTuple_GET_ITEM(pair, 1)) &&
                PyDict_DelItem(threads->asyncio_executors,
                               PyTuple_GET_ITEM(pair, 0)) < 0) {
                PyErr_Clear();
            }
        }
        Py_XDECREF(items);
        PyErr_Clear();
    }
    if (by_asyncio) {
        PyObject *key = PyLong_FromVoidPtr(args[0]);
        PyObject *wr = key == NULL ? NULL : PyWeakref_NewRef(args[0], NULL);
        if (wr == NULL || PyDict_SetItem(threads->asyncio_executors, key, wr) < 0) {
            Py_CLEAR(res);
        }
        Py_XDECREF(key);
        Py_XDECREF(wr);
    }
    return res;
}

static PyMethodDef threads_init_def = {
    "__init__", (PyCFunction)(void (*)(void))threads_guarded_init,
    METH_FASTCALL | METH_KEYWORDS,
    "Initialise the executor (safepyrun records asyncio's own)."};

/* Replace `name` of class `tp` by an instance method wrapping the C
 * function `def`; the real attribute goes to *real.  0 / -1. */
static int
threads_wrap_method(PyObject *tp, const char *name, PyMethodDef *def,
                    PyObject **real)
{
    *real = PyObject_GetAttrString(tp, name);
    PyObject *fn = *real == NULL ? NULL : PyCFunction_NewEx(def, NULL, NULL);
    PyObject *method = fn == NULL ? NULL : PyInstanceMethod_New(fn);
    int rc = method == NULL ? -1 : PyObject_SetAttrString(tp, name, method);
    Py_XDECREF(fn);
    Py_XDECREF(method);
    return rc;
}

/* ThreadPoolExecutor.submit, as installed by sp_threads_before_run: work
 * submitted from inside a gated run runs in a copy of the submitter's
 * context, so it stays gated in the worker thread (asyncio.to_thread does
 * this itself; loop.run_in_executor and executor.submit do not). */
static PyObject *
threads_guarded_submit(PyObject *unused, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    SpRun *run = NULL;
    int active = nargs >= 2 ? sp_gate_run(&run) : 0;
    if (active < 0) {
        return NULL;
    }
    if (active == 0) {
        return PyObject_Vectorcall(threads->submit, args, nargs, kwnames);
    }
    Py_DECREF(run);
    PyObject *ctx = PyContext_CopyCurrent();
    PyObject *ctx_run = ctx == NULL ? NULL : PyObject_GetAttrString(ctx, "run");
    Py_XDECREF(ctx);
    if (ctx_run == NULL) {
        return NULL;
    }
    /* submit(self, ctx.run, fn, *args, **kwargs) */
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject **stack = PyMem_New(PyObject *, nargs + nkw + 1);
    if (stack == NULL) {
        Py_DECREF(ctx_run);
        return PyErr_NoMemory();
    }
    stack[0] = args[0];
    stack[1] = ctx_run;
    for (Py_ssize_t i = 1; i < nargs + nkw; i++) {
        stack[i + 1] = args[i];
    }
    /* asyncio's own executor (loop.run_in_executor(None, ...),
     * loop.getaddrinfo) may start a worker thread for this work: allowed,
     * as every item this guard submits runs in its submitter's context.
     * Executors a cell makes stay refused. */
    int was_submitting = threads_in_submit;
    int is_default = threads_is_default_executor(args[0]);
    if (is_default < 0) {
        PyMem_Free(stack);
        Py_DECREF(ctx_run);
        return NULL;
    }
    threads_in_submit = is_default;
    PyObject *res = PyObject_Vectorcall(threads->submit, stack, nargs + 1,
                                        kwnames);
    threads_in_submit = was_submitting;
    PyMem_Free(stack);
    Py_DECREF(ctx_run);
    return res;
}

static PyMethodDef threads_submit_def = {
    "submit", (PyCFunction)(void (*)(void))threads_guarded_submit,
    METH_FASTCALL | METH_KEYWORDS,
    "submit(fn, /, *args, **kwargs) -- schedule fn; work submitted from a "
    "sandboxed run stays gated (safepyrun)."};

/* Install the executor guard once. */
static int
threads_guard_executor(void)
{
    PyObject *mod = NULL, *tpe = NULL;
    int rc = -1;
    mod = PyImport_ImportModule("concurrent.futures.thread");
    tpe = mod == NULL ? NULL : PyObject_GetAttrString(mod, "ThreadPoolExecutor");
    if (tpe == NULL || !PyType_Check(tpe)) {
        goto done;
    }
    if (threads_wrap_method(tpe, "submit", &threads_submit_def,
                            &threads->submit) < 0 ||
        threads_wrap_method(tpe, "__init__", &threads_init_def,
                            &threads->init) < 0) {
        goto done;
    }
    /* The classes whose attributes a cell may not change: the guarded
     * executor, and the pathlib classes whose paths count as stable. */
    PyObject *pathlib_types = sp_paths_capture_pathlib();
    PyObject *one = pathlib_types == NULL ? NULL : PyTuple_Pack(1, tpe);
    threads->frozen_types = one == NULL ? NULL
                                             : PySequence_Concat(one, pathlib_types);
    Py_XDECREF(one);
    Py_XDECREF(pathlib_types);
    if (threads->frozen_types == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(threads->frozen_types); i++) {
        sp_freeze_type((PyTypeObject *)PyTuple_GET_ITEM(threads->frozen_types, i));
    }
    rc = 0;
done:
    Py_XDECREF(mod);
    Py_XDECREF(tpe);
    return rc;
}

int
sp_threads_before_run(void)
{
    if (threads->submit != NULL) {
        return 0;
    }
    /* asyncio's default executor is made by this method. */
    PyObject *fn = threads_class_attr("asyncio.base_events", "BaseEventLoop",
                                      "run_in_executor");
    if (fn == NULL) {
        return -1;
    }
    if (PyFunction_Check(fn)) {
        threads->run_in_executor_code = Py_NewRef(PyFunction_GET_CODE(fn));
    }
    Py_DECREF(fn);
    threads->asyncio_executors = PyDict_New();
    if (threads->asyncio_executors == NULL || threads_capture_bootstrap() < 0) {
        return -1;
    }
    return threads_guard_executor();
}

/* ---- threads a library's import starts ------------------------------------ */

int
sp_threads_any_adopted(void)
{
    return threads->adopted != NULL && PyDict_GET_SIZE(threads->adopted) > 0;
}

/* The weakref callback of an adopted thread object: its entry goes with
 * it, so that the gate stops looking for adopted threads once none is
 * left (gate.c walks to the outermost frame only while some are). */
static PyObject *
threads_forget_adopted(PyObject *key, PyObject *wr)
{
    (void)wr;
    if (threads->adopted != NULL && PyDict_DelItem(threads->adopted, key) < 0) {
        PyErr_Clear(); /* already gone: the key was reused */
    }
    Py_RETURN_NONE;
}

static PyMethodDef threads_forget_def = {
    "forget_adopted", threads_forget_adopted, METH_O, NULL,
};

int
sp_threads_adopt(SpRun *run, PyObject *function)
{
    if (threads->bootstrap == NULL || !PyMethod_Check(function) ||
        PyMethod_GET_FUNCTION(function) != threads->bootstrap) {
        return 0;
    }
    PyObject *thread = PyMethod_GET_SELF(function); /* borrowed */
    PyObject *key = PyLong_FromVoidPtr(thread);
    PyObject *forget = key == NULL ? NULL
                       : PyCFunction_New(&threads_forget_def, key);
    PyObject *wr = forget == NULL ? NULL : PyWeakref_NewRef(thread, forget);
    PyObject *entry = wr == NULL ? NULL : PyTuple_Pack(2, wr, (PyObject *)run);
    int rc = entry == NULL ? -1
             : PyDict_SetItem(threads->adopted, key, entry);
    Py_XDECREF(key);
    Py_XDECREF(forget);
    Py_XDECREF(wr);
    Py_XDECREF(entry);
    return rc < 0 ? -1 : 1;
}

int
sp_threads_adopted_run(PyFrameObject *bottom, SpRun **run)
{
    *run = NULL;
    if (threads->adopted == NULL || PyDict_GET_SIZE(threads->adopted) == 0) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(bottom);
    int is_bootstrap = (PyObject *)code ==
                       PyFunction_GET_CODE(threads->bootstrap);
    Py_DECREF(code);
    if (!is_bootstrap) {
        return 0;
    }
    /* Its `self`: the thread object the start passed (bound above). */
    PyObject *self = NULL, *key = NULL, *entry = NULL;
    int rc = 0;
    PyObject *locals = PyFrame_GetLocals(bottom);
    if (locals == NULL) {
        return -1;
    }
    self = PyMapping_GetItemString(locals, "self");
    if (self == NULL) {
        PyErr_Clear();
        goto done;
    }
    key = PyLong_FromVoidPtr(self);
    if (key == NULL) {
        rc = -1;
        goto done;
    }
    rc = sp_dict_get_ref(threads->adopted, key, &entry);
    if (rc <= 0) {
        goto done;
    }
    /* The entry is this object's, not a dead one's at a reused address
     * (its callback removes it, but may not have run yet). */
    PyObject *alive = PyObject_CallNoArgs(PyTuple_GET_ITEM(entry, 0));
    rc = alive == self;
    Py_XDECREF(alive);
    if (rc) {
        *run = (SpRun *)Py_NewRef(PyTuple_GET_ITEM(entry, 1));
    }
done:
    Py_DECREF(locals);
    Py_XDECREF(self);
    Py_XDECREF(key);
    Py_XDECREF(entry);
    return rc;
}

/* Capture threading.Thread._bootstrap before any cell could replace it. */
static int
threads_capture_bootstrap(void)
{
    PyObject *fn = threads_class_attr("threading", "Thread", "_bootstrap");
    if (fn == NULL) {
        return -1;
    }
    if (!PyFunction_Check(fn)) {
        Py_DECREF(fn); /* replaced by the host: no adoption */
        return 0;
    }
    threads->adopted = PyDict_New();
    if (threads->adopted == NULL) {
        Py_DECREF(fn);
        return -1;
    }
    threads->bootstrap = fn;
    return 0;
}

int
sp_threads_init(PyObject *module)
{
#if SP_NEED_THREAD_GUARD
    if (threads->start_thread == NULL && threads_guard_start(module) < 0) {
        return -1;
    }
#else
    (void)module;
#endif
    return 0;
}
