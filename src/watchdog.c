/* watchdog.c - time limits, and the host's event loop kept moving while a
 * cell runs.
 *
 * What it owns: one watchdog thread (pthread, started on the first step it
 * has to watch), the list of running cell steps and the list of armed
 * deadlines, both threaded through structs that the cells own (cell.c:
 * the sp_wd_limit inside each Cell, an sp_wd_step on the C stack of each
 * step).  Python cannot reach any of it: there is no object to call,
 * replace or stop.
 *
 * Why a thread: a cell spinning in bytecode (`while True: pass`) never
 * returns to the event loop, so nothing on the loop - a timer, a
 * wait_for, a task.cancel() - can run, let alone stop it.  The watchdog
 * thread never takes the GIL for that: it queues a pending call
 * (Py_AddPendingCall, safe without the GIL), which the interpreter runs in
 * the main thread between two bytecodes.  The pending call then
 *   - raises the limit's error inside the cell when its deadline passed
 *     (TimeoutError: the cell's `finally` blocks run);
 *   - after a grace period, raises it again at every eval-breaker check
 *     until the step has left the cell: an exception raised at a loop's
 *     backward jump or a call's entry eventually lands outside every `try`,
 *     so `except BaseException: pass` cannot keep a cell alive;
 *   - otherwise, when the step has run for a slice (SLICE_NS) and the
 *     innermost frame is the cell's own code, lets the running asyncio loop
 *     make one non-blocking pass re-entrantly (the task is left and entered
 *     again around it, and the pass runs as host code: the host's timers
 *     and other tasks run; tasks the cell spawned carry its run in their
 *     context and stay gated);
 *   - after that pass, if the cell's task received a cancel request
 *     (wait_for, asyncio.timeout, task.cancel()), raises CancelledError in
 *     the cell under the same grace/re-raise rule.
 * Passes do not nest (a cell spinning inside another cell's pass is not
 * preempted again, only stopped by its own deadline).  A loop that is not
 * a BaseEventLoop (uvloop) gets no pass.
 *
 * Pending calls run in the main thread only.  A step on another thread
 * gets its limit's TimeoutError through PyThreadState_SetAsyncExc, taken
 * with the GIL (PyGILState_Ensure); it has no loop pass and no
 * cancellation.  One long call into C (time.sleep, a huge regex) cannot be
 * interrupted: the error is raised when it returns.
 *
 * Re-raising at eval-breaker checks is not always enough: CPython may
 * attribute an exception raised at a loop's backward jump to the
 * instruction before the jump's target, and in a loop whose `except`
 * clause jumps back into the try (3.12) every check lands in the try.  So
 * the first raise also sets a C trace function on the thread for the rest
 * of the step (restoring the host's at its end): past the grace period it
 * raises at every line event, and a line of an `except` clause is outside
 * its own try.
 *
 * Code a cell leaves running after its step (tasks it spawned, callbacks)
 * runs in a context holding its run: past the deadline, the pending call
 * raises in that code too while the cell is armed.
 *
 * Cost when nothing runs long: a step takes the (uncontended) lock twice
 * and reads the clock once.  The thread polls every SLICE_NS while steps
 * come and go and, LINGER_NS after the last one, sleeps until the next.
 *
 * Locking: `lock` guards the lists and flags.  Code holding the GIL may
 * take `lock`; the watchdog never takes the GIL while holding `lock`.
 * Exit: an atexit function stops and joins the thread before the
 * interpreter finalizes; after that nothing is queued.
 */
#include "common.h"
#include "state.h"
#include "watchdog.h"

#include "context.h"
#include "gate.h"

#include <errno.h>
#include <time.h>

/* A step runs this long before the loop gets a pass. */
#define SLICE_NS (20 * 1000000LL)
/* The thread keeps polling this long after the last step. */
#define LINGER_NS (1000 * 1000000LL)

static struct sp_watchdog_state *const wd = &sp_state.watchdog;

int64_t
sp_wd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- decisions (lock held) ------------------------------------------------ */

static int
wd_check_locked(sp_wd_limit *l, int64_t now)
{
    if (l->stopping == SP_WD_RUNNING && l->deadline != 0 &&
        now >= l->deadline) {
        l->stopping = SP_WD_TIMEOUT;
        l->reraise_at = now + l->grace;
    }
    return l->stopping;
}

int
sp_wd_check(sp_wd_limit *l, int64_t now)
{
    if (l->deadline == 0 || l->stopping != SP_WD_RUNNING) {
        return l->stopping;
    }
    pthread_mutex_lock(&wd->lock);
    int st = wd_check_locked(l, now);
    pthread_mutex_unlock(&wd->lock);
    return st;
}

/* What the limit asks for now: 0 nothing, 1 raise its error (first time or
 * after the grace period). */
static int
wd_due(sp_wd_limit *l, int64_t now)
{
    if (l->stopping != SP_WD_RUNNING) {
        return now >= l->reraise_at;
    }
    return wd_check_locked(l, now) != SP_WD_RUNNING;
}

/* The innermost step of thread `t`, or NULL. */
static sp_wd_step *
wd_innermost(unsigned long t)
{
    for (sp_wd_step *s = wd->steps; s != NULL; s = s->next) {
        if (s->thread == t) {
            return s;
        }
    }
    return NULL;
}

/* ---- the error --------------------------------------------------------------- */

PyObject *
sp_wd_error(sp_wd_limit *l)
{
    if (l->stopping == SP_WD_CANCEL) {
        return PyObject_CallNoArgs(wd->cancelled);
    }
    char secs[64];
    PyOS_snprintf(secs, sizeof(secs), "%g", l->timeout);
    return PyObject_CallFunction(
        PyExc_TimeoutError, "N",
        PyUnicode_FromFormat("cell exceeded its time limit of %s s", secs));
}

static int
wd_raise(sp_wd_limit *l)
{
    PyObject *exc = sp_wd_error(l);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* ---- the loop pass ------------------------------------------------------------- */

static PyObject *
wd_noop(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_NONE;
}

static Py_ssize_t
wd_ready_len(PyObject *loop)
{
    PyObject *ready = PyObject_GetAttrString(loop, "_ready");
    Py_ssize_t n = ready == NULL ? -1 : PyObject_Length(ready);
    Py_XDECREF(ready);
    return n;
}

/* The pass itself, called as host code (sp_gate_call_as_host) with the
 * loop.  A no-op callback first makes the pass non-blocking (_run_once
 * does not wait when callbacks are ready).  The outer _run_once that is
 * running the cell's task will pop as many callbacks as it counted before:
 * the queue is topped up with no-ops so it never finds it short. */
static PyObject *
wd_pass(PyObject *self, PyObject *loop)
{
    (void)self;
    Py_ssize_t before = wd_ready_len(loop);
    if (before < 0) {
        return NULL;
    }
    PyObject *h = PyObject_CallFunctionObjArgs(wd->call_soon, loop, wd->noop,
                                               NULL);
    if (h == NULL) {
        return NULL;
    }
    Py_DECREF(h);
    PyObject *res = PyObject_CallOneArg(wd->run_once, loop);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_ssize_t after = wd_ready_len(loop);
    for (Py_ssize_t i = after; i >= 0 && i < before; i++) {
        h = PyObject_CallFunctionObjArgs(wd->call_soon, loop, wd->noop, NULL);
        if (h == NULL) {
            return NULL;
        }
        Py_DECREF(h);
    }
    if (after < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef wd_pass_def = {"safepyrun_loop_pass", wd_pass, METH_O,
                                  "One pass of the host's event loop."};
static PyMethodDef wd_noop_def = {"safepyrun_noop", wd_noop, METH_NOARGS,
                                  "Does nothing."};

/* Let the thread's running loop make one pass while step `s` waits.  0 ok
 * (or nothing to do), -1 error. */
static int
wd_loop_pass(sp_wd_step *s)
{
    PyObject *loop = NULL, *task = NULL, *res = NULL; /* owned */
    int rc = -1;
    loop = PyObject_CallNoArgs(wd->get_running_loop);
    if (loop == NULL) {
        goto done;
    }
    int is_base = loop == Py_None ? 0 : PyObject_IsInstance(loop, wd->base_loop);
    if (is_base <= 0) {
        rc = is_base;
        goto done;
    }
    task = PyObject_CallOneArg(wd->current_task, loop);
    if (task == NULL) {
        goto done;
    }
    if (task == Py_None) {
        rc = 0; /* driven by hand, outside any task */
        goto done;
    }
    res = PyObject_CallFunctionObjArgs(wd->leave_task, loop, task, NULL);
    if (res == NULL) {
        goto done;
    }
    Py_CLEAR(res);
    pthread_mutex_lock(&wd->lock);
    s->in_pass = 1;
    wd->in_pass = 1;
    pthread_mutex_unlock(&wd->lock);
    res = sp_gate_call_as_host(wd->pass_fn, loop);
    pthread_mutex_lock(&wd->lock);
    s->in_pass = 0;
    wd->in_pass = 0;
    s->last_service = sp_wd_now();
    pthread_mutex_unlock(&wd->lock);
    /* The task is entered again whatever happened in the pass. */
    PyObject *pending = sp_err_get_raised();
    PyObject *back = PyObject_CallFunctionObjArgs(wd->enter_task, loop, task,
                                                  NULL);
    if (back == NULL) {
        Py_XDECREF(pending); /* the cell cannot go on outside its task */
        goto done;
    }
    Py_DECREF(back);
    sp_err_set_raised(pending);
    rc = res == NULL ? -1 : 0;
done:
    Py_XDECREF(loop);
    Py_XDECREF(task);
    Py_XDECREF(res);
    return rc;
}

/* Whether the cell's task has more cancel requests than when it started.
 * 1 / 0 / -1. */
static int
wd_cancel_requested(sp_wd_limit *l)
{
    if (l->task == NULL) {
        return 0;
    }
    PyObject *n = PyObject_CallMethod(l->task, "cancelling", NULL);
    if (n == NULL) {
        return -1;
    }
    long v = PyLong_AsLong(n);
    Py_DECREF(n);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    return v > l->cancel_base;
}

/* Whether the innermost frame runs cell code: a pass is made only from
 * the cell's own code, never from inside a host tool it called. */
static int
wd_in_cell_code(void)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    if (frame == NULL) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int is_cell = sp_gate_is_cell_code(code);
    Py_DECREF(code);
    return is_cell;
}

/* The armed limit whose run governs the code running now, when there is no
 * step to ask (a task or callback the cell left running).  Lock held; the
 * run is compared only. */
static sp_wd_limit *
wd_limit_of_run(SpRun *run)
{
    for (sp_wd_limit *l = wd->armed; l != NULL; l = l->next) {
        if (l->run == (void *)run || l->data == (void *)run->data) {
            return l;
        }
    }
    return NULL;
}

static void
wd_requeue(void);

/* The stop tracer: past the grace period of the innermost step's limit,
 * raise its error at every line.  Main thread, GIL held. */
static int
wd_trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    (void)frame;
    (void)arg;
    if (what != PyTrace_LINE && what != PyTrace_CALL) {
        return 0;
    }
    pthread_mutex_lock(&wd->lock);
    sp_wd_step *s = wd_innermost(PyThread_get_thread_ident());
    sp_wd_limit *l = s == NULL || s->in_pass ? NULL : s->limit;
    int due = l != NULL && l->stopping && sp_wd_now() >= l->reraise_at;
    pthread_mutex_unlock(&wd->lock);
    return due ? wd_raise(l) : 0;
}

/* Set the stop tracer for step `s` (this thread's innermost). */
static void
wd_trace_begin(sp_wd_step *s)
{
    if (s->traced) {
        return;
    }
    PyThreadState *ts = PyThreadState_Get();
    s->saved_trace = ts->c_tracefunc;
    s->saved_traceobj = Py_XNewRef(ts->c_traceobj);
    s->traced = 1;
    PyObject *pending = sp_err_get_raised();
    sp_gate_engine_begin(); /* our own "sys.settrace" is not judged */
    PyEval_SetTrace(wd_trace, NULL);
    sp_gate_engine_end();
    PyErr_Clear();
    sp_err_set_raised(pending);
}

/* Put back the trace function the step found. */
static void
wd_trace_end(sp_wd_step *s)
{
    if (!s->traced) {
        return;
    }
    s->traced = 0;
    PyObject *pending = sp_err_get_raised();
    sp_gate_engine_begin();
    PyEval_SetTrace(s->saved_trace, s->saved_traceobj);
    sp_gate_engine_end();
    PyErr_Clear();
    sp_err_set_raised(pending);
    Py_CLEAR(s->saved_traceobj);
}

/* The pending call: GIL held, main thread, between two bytecodes. */
static int
wd_pending(void *unused)
{
    (void)unused;
    int raise = 0, want_pass = 0, check_context = 0;
    sp_wd_limit *l = NULL;
    pthread_mutex_lock(&wd->lock);
    wd->queued = 0;
    int64_t now = sp_wd_now();
    sp_wd_step *s = wd_innermost(PyThread_get_thread_ident());
    if (s != NULL && !s->in_pass) {
        l = s->limit;
        raise = wd_due(l, now);
        want_pass = !raise && l->stopping == SP_WD_RUNNING && !wd->in_pass &&
                    l->task != NULL && now - s->last_service >= SLICE_NS;
    }
    else {
        check_context = wd->armed != NULL;
    }
    pthread_mutex_unlock(&wd->lock);
    if (check_context) {
        SpRun *run = NULL;
        if (sp_gate_run(&run) < 0) {
            return -1;
        }
        if (run != NULL) {
            pthread_mutex_lock(&wd->lock);
            l = wd_limit_of_run(run);
            raise = l != NULL && wd_due(l, now);
            pthread_mutex_unlock(&wd->lock);
            Py_DECREF(run);
        }
    }
    if (raise) {
        /* Past the grace period: again at the next eval-breaker check,
         * until the code of the cell is left. */
        if (now >= l->reraise_at) {
            wd_requeue();
        }
        if (s != NULL && !s->in_pass && s->limit == l) {
            wd_trace_begin(s);
        }
        return wd_raise(l);
    }
    if (!want_pass || !wd_in_cell_code()) {
        return 0;
    }
    if (wd_loop_pass(s) < 0) {
        return -1;
    }
    int cancelled = wd_cancel_requested(l);
    if (cancelled <= 0) {
        return cancelled;
    }
    pthread_mutex_lock(&wd->lock);
    if (l->stopping == SP_WD_RUNNING) {
        l->stopping = SP_WD_CANCEL;
        l->reraise_at = sp_wd_now() + l->grace;
    }
    pthread_mutex_unlock(&wd->lock);
    wd_trace_begin(s);
    return wd_raise(l);
}

/* Queue the pending call if it is not queued (lock held by the caller, or
 * GIL held in the pending call itself). */
static void
wd_queue_locked(void)
{
    if (!wd->queued && !wd->stop && Py_IsInitialized() &&
        Py_AddPendingCall(wd_pending, NULL) == 0) {
        wd->queued = 1;
    }
}

static void
wd_requeue(void)
{
    pthread_mutex_lock(&wd->lock);
    wd_queue_locked();
    pthread_mutex_unlock(&wd->lock);
}

/* ---- the thread ------------------------------------------------------------------ */

/* Whether a step of the cell limited by `l` runs.  Lock held. */
static int
wd_stepping(sp_wd_limit *l)
{
    for (sp_wd_step *s = wd->steps; s != NULL; s = s->next) {
        if (s->limit == l) {
            return 1;
        }
    }
    return 0;
}

/* Wake the awaiting cell of `l` if it is still armed (its cell alive) and
 * not stepping.  Called without the lock; takes the GIL. */
static void
wd_wake_cell(sp_wd_limit *l)
{
    PyGILState_STATE g = PyGILState_Ensure();
    pthread_mutex_lock(&wd->lock);
    int armed = 0;
    for (sp_wd_limit *x = wd->armed; x != NULL; x = x->next) {
        armed |= x == l;
    }
    armed = armed && !wd_stepping(l);
    pthread_mutex_unlock(&wd->lock);
    if (armed) {
        /* The GIL keeps the cell alive from here: only code holding it
         * disarms and frees. */
        l->wake(l);
    }
    PyGILState_Release(g);
}

/* Raise TimeoutError in thread `t` if its innermost step is still `s`, not
 * paused for a pass, and still due.  Called without the lock; takes the
 * GIL. */
static void
wd_async_raise(sp_wd_step *s, unsigned long t)
{
    if (!Py_IsInitialized()) {
        return;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    pthread_mutex_lock(&wd->lock);
    int64_t now = sp_wd_now();
    int raise = 0;
    if (wd_innermost(t) == s && !s->in_pass) {
        raise = wd_due(s->limit, now);
        if (raise && now >= s->limit->reraise_at) {
            /* again one slice later at the earliest */
            s->limit->reraise_at = now + SLICE_NS;
        }
    }
    pthread_mutex_unlock(&wd->lock);
    if (raise) {
        PyThreadState_SetAsyncExc(t, s->limit->stopping == SP_WD_CANCEL
                                         ? wd->cancelled : wd->timeout_error);
    }
    PyGILState_Release(g);
}

static void *
wd_main(void *arg)
{
    (void)arg;
    int64_t last_activity = sp_wd_now();
    unsigned long seen = 0;
    pthread_mutex_lock(&wd->lock);
    while (!wd->stop) {
        int64_t now = sp_wd_now();
        if (wd->steps_seen != seen || wd->steps != NULL) {
            seen = wd->steps_seen;
            last_activity = now;
        }
        if (wd->steps == NULL && wd->armed == NULL &&
            now - last_activity >= LINGER_NS) {
            wd->idle = 1;
            pthread_cond_wait(&wd->wake, &wd->lock);
            wd->idle = 0;
            last_activity = sp_wd_now();
            continue;
        }
        int64_t wake = now + SLICE_NS;
        int queue = 0;
        sp_wd_step *other = NULL;
        unsigned long other_thread = 0;
        for (sp_wd_step *s = wd->steps; s != NULL; s = s->next) {
            sp_wd_limit *l = s->limit;
            /* when its limit is due, and (main thread) when the loop is */
            int64_t due = l->stopping ? l->reraise_at
                          : l->deadline ? l->deadline : INT64_MAX;
            int64_t svc = INT64_MAX;
            int pending_ok = s->thread == wd->main_thread && !wd->in_pass;
            if (pending_ok && !s->in_pass && l->task != NULL && !l->stopping) {
                svc = s->last_service + SLICE_NS;
            }
            int late = l->stopping && now >= due;
            if (pending_ok && !late && (now >= due || now >= svc)) {
                queue = 1;
            }
            else if (now >= due) {
                /* another thread, the main thread inside a loop pass
                 * (which runs in a pending call: pending calls do not
                 * nest), or a re-raise after the grace period (the
                 * pending call queues itself again, but 3.12 does not
                 * always run a pending call queued from a pending call);
                 * only the innermost step, never a paused one */
                if (other == NULL && !s->in_pass &&
                    wd_innermost(s->thread) == s) {
                    other = s;
                    other_thread = s->thread;
                }
            }
            else {
                int64_t next = due < svc ? due : svc;
                wake = next < wake ? next : wake;
            }
        }
        sp_wd_limit *to_wake = NULL;
        for (sp_wd_limit *l = wd->armed; l != NULL; l = l->next) {
            int64_t next = l->stopping ? l->reraise_at : l->deadline;
            if (now >= next) {
                queue = 1; /* code the cell left running on the main thread */
                if (to_wake == NULL && l->wake != NULL &&
                    now >= l->next_wake && !wd_stepping(l)) {
                    to_wake = l;
                    l->next_wake = now + 5 * SLICE_NS;
                }
            }
            else if (next < wake) {
                wake = next;
            }
        }
        if (queue) {
            int fresh = !wd->queued;
            wd_queue_locked();
            if (SP_PENDING_CALL_NEEDS_GIL && fresh && wd->queued &&
                Py_IsInitialized()) {
                /* compat.h: make the main thread notice the call */
                pthread_mutex_unlock(&wd->lock);
                PyGILState_STATE g = PyGILState_Ensure();
                PyGILState_Release(g);
                pthread_mutex_lock(&wd->lock);
            }
        }
        if (other != NULL) {
            pthread_mutex_unlock(&wd->lock);
            wd_async_raise(other, other_thread);
            pthread_mutex_lock(&wd->lock);
            continue;
        }
        if (to_wake != NULL && Py_IsInitialized()) {
            pthread_mutex_unlock(&wd->lock);
            wd_wake_cell(to_wake);
            pthread_mutex_lock(&wd->lock);
        }
        if (wake <= now) {
            wake = now + SLICE_NS / 4;
        }
        struct timespec ts = {(time_t)(wake / 1000000000LL),
                              (long)(wake % 1000000000LL)};
        int rc;
        do {
            rc = pthread_cond_timedwait(&wd->wake, &wd->lock, &ts);
        } while (rc == EINTR);
    }
    pthread_mutex_unlock(&wd->lock);
    return NULL;
}

/* Start the thread if it is not running.  Lock held. */
static int
wd_start_locked(void)
{
    if (wd->started || wd->stop) {
        return 0;
    }
    if (pthread_create(&wd->thread, NULL, wd_main, NULL) != 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "safepyrun: cannot start the watchdog thread");
        return -1;
    }
    wd->started = 1;
    return 0;
}

/* Wake the thread if it waits untimed.  Lock held. */
static void
wd_kick_locked(void)
{
    if (wd->idle) {
        pthread_cond_signal(&wd->wake);
    }
}

/* ---- limits and steps ------------------------------------------------------------- */

int
sp_wd_arm(sp_wd_limit *l, const void *run, const void *data, double timeout)
{
    int64_t now = sp_wd_now();
    l->timeout = timeout;
    l->run = run;
    l->data = data;
    l->stopping = SP_WD_RUNNING;
    l->deadline = 0;
    l->next_wake = 0;
    if (timeout <= 0) {
        return 0;
    }
    double grace = 0.1 * timeout;
    grace = grace < 0.05 ? 0.05 : grace > 1.0 ? 1.0 : grace;
    l->grace = (int64_t)(grace * 1e9);
    double ns = timeout * 1e9;
    l->deadline = ns >= (double)(INT64_MAX - now) ? INT64_MAX - 1
                                                 : now + (int64_t)ns;
    /* the loop's own timer comes first; this only backs it up */
    l->next_wake = l->deadline + SLICE_NS;
    pthread_mutex_lock(&wd->lock);
    if (wd_start_locked() < 0) {
        pthread_mutex_unlock(&wd->lock);
        return -1;
    }
    if (!l->armed) {
        l->prev = NULL;
        l->next = wd->armed;
        if (wd->armed != NULL) {
            wd->armed->prev = l;
        }
        wd->armed = l;
        l->armed = 1;
    }
    wd_kick_locked();
    pthread_mutex_unlock(&wd->lock);
    return 0;
}

void
sp_wd_disarm(sp_wd_limit *l)
{
    if (!l->armed) {
        return;
    }
    pthread_mutex_lock(&wd->lock);
    if (l->prev != NULL) {
        l->prev->next = l->next;
    }
    else {
        wd->armed = l->next;
    }
    if (l->next != NULL) {
        l->next->prev = l->prev;
    }
    l->next = l->prev = NULL;
    l->armed = 0;
    pthread_mutex_unlock(&wd->lock);
}

int
sp_wd_step_begin(sp_wd_step *s, sp_wd_limit *l)
{
    s->registered = 0;
    if (l->deadline == 0 && l->task == NULL) {
        return 0; /* nothing to watch: no deadline, no loop to keep moving */
    }
    s->limit = l;
    s->thread = PyThread_get_thread_ident();
    s->in_pass = 0;
    s->traced = 0;
    s->saved_traceobj = NULL;
    s->last_service = sp_wd_now();
    pthread_mutex_lock(&wd->lock);
    if (wd_start_locked() < 0) {
        pthread_mutex_unlock(&wd->lock);
        return -1;
    }
    s->prev = NULL;
    s->next = wd->steps;
    if (wd->steps != NULL) {
        wd->steps->prev = s;
    }
    wd->steps = s;
    wd->steps_seen++;
    s->registered = 1;
    wd_kick_locked();
    pthread_mutex_unlock(&wd->lock);
    return 0;
}

void
sp_wd_step_end(sp_wd_step *s)
{
    if (!s->registered) {
        return;
    }
    pthread_mutex_lock(&wd->lock);
    if (s->prev != NULL) {
        s->prev->next = s->next;
    }
    else {
        wd->steps = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    s->registered = 0;
    pthread_mutex_unlock(&wd->lock);
    wd_trace_end(s);
}

/* ---- the cell's task and loop ------------------------------------------------------ */

int
sp_wd_task_begin(sp_wd_limit *l, PyObject *task, PyObject **loop)
{
    *loop = NULL;
    PyObject *n = PyObject_CallMethod(task, "cancelling", NULL);
    if (n == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear(); /* not an asyncio.Task: nothing to watch */
            return 0;
        }
        return -1;
    }
    l->cancel_base = PyLong_AsLong(n);
    Py_DECREF(n);
    if (l->cancel_base == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *lp = PyObject_CallNoArgs(wd->get_running_loop);
    if (lp == NULL) {
        return -1;
    }
    if (lp == Py_None) {
        Py_DECREF(lp);
        return 0;
    }
    *loop = lp;
    return 1;
}

/* Call the BaseEventLoop method `fn` captured at import on a BaseEventLoop,
 * else the loop's own method `name` (another loop class, e.g. uvloop). */
static PyObject *
wd_loop_call(PyObject *loop, PyObject *fn, const char *name, PyObject *a,
             PyObject *b)
{
    int is_base = PyObject_IsInstance(loop, wd->base_loop);
    if (is_base < 0) {
        return NULL;
    }
    if (is_base) {
        return PyObject_CallFunctionObjArgs(fn, loop, a, b, NULL);
    }
    PyObject *m = PyObject_GetAttrString(loop, name);
    if (m == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallFunctionObjArgs(m, a, b, NULL);
    Py_DECREF(m);
    return res;
}

PyObject *
sp_wd_call_at(PyObject *loop, int64_t when, PyObject *cb)
{
    PyObject *t = wd_loop_call(loop, wd->loop_time, "time", NULL, NULL);
    if (t == NULL) {
        return NULL;
    }
    double now = PyFloat_AsDouble(t);
    Py_DECREF(t);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double delay = (double)(when - sp_wd_now()) / 1e9;
    PyObject *at = PyFloat_FromDouble(now + (delay > 0 ? delay : 0));
    if (at == NULL) {
        return NULL;
    }
    PyObject *h = wd_loop_call(loop, wd->call_at, "call_at", at, cb);
    Py_DECREF(at);
    return h;
}

PyObject *
sp_wd_call_soon_threadsafe(PyObject *loop, PyObject *cb)
{
    return wd_loop_call(loop, wd->call_soon_ts, "call_soon_threadsafe", cb,
                        NULL);
}

int
sp_wd_handle_cancelled(PyObject *handle)
{
    PyObject *r = PyObject_CallOneArg(wd->handle_cancelled, handle);
    if (r == NULL) {
        return -1;
    }
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

void
sp_wd_cancel_handle(PyObject *handle)
{
    PyObject *r = PyObject_CallOneArg(wd->handle_cancel, handle);
    Py_XDECREF(r);
    PyErr_Clear();
}

int
sp_wd_cancel_future(PyObject *fut)
{
    int is_future = PyObject_IsInstance(fut, wd->future_type);
    if (is_future < 0) {
        return -1;
    }
    PyObject *r = is_future ? PyObject_CallOneArg(wd->future_cancel, fut)
                            : PyObject_CallMethod(fut, "cancel", NULL);
    if (r == NULL) {
        /* a future-like object without a working cancel(): its task
         * resumes the cell when it completes, and the cell stops then */
        PyErr_Clear();
        return 0;
    }
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (v < 0) {
        PyErr_Clear();
        return 0;
    }
    return v;
}

/* ---- set-up and exit ---------------------------------------------------------------- */

/* atexit: stop and join the thread before the interpreter finalizes, so
 * that nothing is queued on an interpreter going away.  Refused inside a
 * run (atexit._run_exitfuncs from a cell must not end the watchdog). */
static PyObject *
wd_stop(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    SpRun *run = NULL;
    int inside = sp_gate_run(&run);
    Py_XDECREF(run);
    if (inside != 0) {
        if (inside < 0) {
            return NULL;
        }
        /* atexit._run_exitfuncs() from a cell: atexit forgets its
         * functions after running them, so register again, as host code
         * (not bound to the run), and refuse. */
        PyObject *atexit = PyImport_ImportModule("atexit");
        PyObject *reg = atexit == NULL ? NULL
                        : PyObject_GetAttrString(atexit, "register");
        PyObject *r = reg == NULL ? NULL
                      : sp_gate_call_as_host(reg, wd->stop_fn);
        Py_XDECREF(atexit);
        Py_XDECREF(reg);
        Py_XDECREF(r);
        PyErr_Clear();
        PyErr_SetString(PyExc_PermissionError,
                        "safepyrun refused to stop the watchdog: sandboxed "
                        "code cannot change the sandbox");
        return NULL;
    }
    pthread_mutex_lock(&wd->lock);
    int join = wd->started && !wd->stop;
    wd->stop = 1;
    pthread_cond_signal(&wd->wake);
    pthread_mutex_unlock(&wd->lock);
    if (join) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(wd->thread, NULL);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyMethodDef wd_stop_def = {"safepyrun_watchdog_stop", wd_stop,
                                  METH_NOARGS, "Stop the watchdog at exit."};

/* After fork() only the forking thread exists: the child starts its own
 * watchdog when it needs one. */
static void
wd_after_fork_child(void)
{
    pthread_mutex_init(&wd->lock, NULL);
    wd->started = 0;
    wd->idle = 0;
    wd->queued = 0;
}

static int
wd_capture(void)
{
    PyObject *asyncio = NULL, *events = NULL, *tasks = NULL, *atexit = NULL;
    PyObject *threading = NULL, *main = NULL, *ident = NULL, *r = NULL;
    PyObject *handle = NULL;
    int rc = -1;
    asyncio = PyImport_ImportModule("asyncio");
    events = asyncio == NULL ? NULL : PyImport_ImportModule("asyncio.events");
    tasks = events == NULL ? NULL : PyImport_ImportModule("asyncio.tasks");
    atexit = tasks == NULL ? NULL : PyImport_ImportModule("atexit");
    threading = atexit == NULL ? NULL : PyImport_ImportModule("threading");
    if (threading == NULL) {
        goto done;
    }
    wd->cancelled = PyObject_GetAttrString(asyncio, "CancelledError");
    wd->get_running_loop = PyObject_GetAttrString(events, "_get_running_loop");
    wd->current_task = PyObject_GetAttrString(tasks, "current_task");
    wd->enter_task = PyObject_GetAttrString(tasks, "_enter_task");
    wd->leave_task = PyObject_GetAttrString(tasks, "_leave_task");
    wd->base_loop = PyObject_GetAttrString(asyncio, "BaseEventLoop");
    wd->run_once = wd->base_loop == NULL ? NULL
                   : PyObject_GetAttrString(wd->base_loop, "_run_once");
    wd->call_soon = wd->base_loop == NULL ? NULL
                    : PyObject_GetAttrString(wd->base_loop, "call_soon");
    wd->call_at = wd->base_loop == NULL ? NULL
                  : PyObject_GetAttrString(wd->base_loop, "call_at");
    wd->call_soon_ts = wd->base_loop == NULL ? NULL
                       : PyObject_GetAttrString(wd->base_loop,
                                                "call_soon_threadsafe");
    wd->loop_time = wd->base_loop == NULL ? NULL
                    : PyObject_GetAttrString(wd->base_loop, "time");
    wd->future_type = PyObject_GetAttrString(asyncio, "Future");
    wd->future_cancel = wd->future_type == NULL ? NULL
                        : PyObject_GetAttrString(wd->future_type, "cancel");
    handle = PyObject_GetAttrString(asyncio, "Handle");
    wd->handle_cancel = handle == NULL ? NULL
                        : PyObject_GetAttrString(handle, "cancel");
    wd->handle_cancelled = handle == NULL ? NULL
                           : PyObject_GetAttrString(handle, "cancelled");
    wd->timeout_error = Py_NewRef(PyExc_TimeoutError);
    wd->pass_fn = PyCFunction_New(&wd_pass_def, NULL);
    wd->noop = PyCFunction_New(&wd_noop_def, NULL);
    wd->stop_fn = PyCFunction_New(&wd_stop_def, NULL);
    if (wd->cancelled == NULL || wd->get_running_loop == NULL ||
        wd->current_task == NULL || wd->enter_task == NULL ||
        wd->leave_task == NULL || wd->run_once == NULL ||
        wd->call_soon == NULL || wd->call_at == NULL ||
        wd->call_soon_ts == NULL ||
        wd->loop_time == NULL || wd->future_cancel == NULL ||
        wd->handle_cancel == NULL || wd->handle_cancelled == NULL ||
        wd->pass_fn == NULL || wd->noop == NULL ||
        wd->stop_fn == NULL) {
        goto done;
    }
    main = PyObject_CallMethod(threading, "main_thread", NULL);
    ident = main == NULL ? NULL : PyObject_GetAttrString(main, "ident");
    if (ident == NULL) {
        goto done;
    }
    wd->main_thread = PyLong_AsUnsignedLong(ident);
    if (PyErr_Occurred()) {
        goto done;
    }
    r = PyObject_CallMethod(atexit, "register", "O", wd->stop_fn);
    rc = r == NULL ? -1 : 0;
done:
    Py_XDECREF(asyncio);
    Py_XDECREF(events);
    Py_XDECREF(tasks);
    Py_XDECREF(atexit);
    Py_XDECREF(threading);
    Py_XDECREF(main);
    Py_XDECREF(ident);
    Py_XDECREF(r);
    Py_XDECREF(handle);
    return rc;
}

int
sp_watchdog_init(PyObject *module)
{
    (void)module;
    if (wd->stop_fn != NULL) {
        return 0; /* a second import: the first one's watchdog */
    }
    pthread_condattr_t attr;
    if (pthread_mutex_init(&wd->lock, NULL) != 0 ||
        pthread_condattr_init(&attr) != 0 ||
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&wd->wake, &attr) != 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "safepyrun: cannot set up the watchdog");
        return -1;
    }
    pthread_condattr_destroy(&attr);
    pthread_atfork(NULL, NULL, wd_after_fork_child);
    return wd_capture();
}
