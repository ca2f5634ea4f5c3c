/* cell.c - the Cell: the awaitable that runs one cell to completion.
 *
 * A Cell (one per `await python(code)`) is created by the runner with the
 * host namespace and the run's policy.  Awaiting it compiles the cell
 * (compile.c), executes it with a copy of the host namespace as globals
 * (so top-level names are globals that comprehensions, closures and
 * functions see), drives the coroutine the code returns when it used
 * top-level await, awaits the tasks the cell created, and exports new and
 * changed names (export.c).
 *
 * Gating: every step that runs code a cell may have touched (the cell
 * itself, its coroutine, and asyncio calls whose module attributes a cell
 * could have replaced) runs with the run context entered, and the context
 * is left again before the Cell yields to the event loop, so host code
 * that runs while the cell is suspended is never gated.  Functions the
 * Cell calls (asyncio.gather, all_tasks) are captured before the first
 * cell of the process runs.
 *
 * Errors: an exception that wraps one of the run's refusals (a library's
 * own error type with the PermissionError as __cause__/__context__, or an
 * ExceptionGroup) is replaced by the refusal; the traceback is trimmed to
 * start at the cell's frames.
 */
#include "common.h"
#include "state.h"
#include "cell.h"

#include "caches.h"
#include "compile.h"
#include "export.h"
#include "gate.h"
#include "guards.h"
#include "hook.h"
#include "monitor.h"
#include "output.h"
#include "report.h"
#include "shell.h"
#include "watchdog.h"

#include <stddef.h>
#include <string.h>

#define CELL_MAX_UNWRAP 32

/* This file's part of the engine state (state.h). */
static struct sp_cell_state *const cell_global = &sp_state.cell;

typedef enum {
    CELL_START,    /* not started */
    CELL_CORO,     /* driving the cell's coroutine (top-level await) */
    CELL_TASKS,    /* looking for tasks the cell created */
    CELL_WAIT,     /* driving gather() over those tasks */
    CELL_DONE,     /* finishing: result and export */
    CELL_CANCELLING, /* stopped for its task's cancel request: yielded once
                        so that the task delivers that request itself */
    CELL_FINISHED, /* returned or raised */
} cell_state;

static void cell_wake(sp_wd_limit *l);

typedef struct {
    PyObject_HEAD
    PyObject *g;       /* owned: the host namespace (dict) */
    PyObject *ns;      /* owned: the runner's live namespace (dict) */
    PyObject *synced;  /* owned: the runner's record of g when in step */
    PyObject *banned;  /* owned: tuple of modules the checks refuse */
    SpRun *run;        /* owned: this cell's policy */
    PyObject *source;  /* owned: the code as given */
    PyObject *code;    /* owned or NULL until started: compiled cell */
    PyObject *globals; /* owned or NULL until started: the cell's namespace */
    PyObject *coro;    /* owned or NULL: the running cell coroutine */
    PyObject *waiter;  /* owned or NULL: gather(...).__await__() */
    PyObject *seen;    /* owned or NULL: tasks not to await (existed before,
                          or already awaited); NULL when no loop runs */
    PyObject *error;   /* owned or NULL: first failure of a cell task */
    PyObject *before;  /* owned or NULL: with a memory cap, a copy of the
                          namespace as the cell found it (put back when
                          the cap stops the cell) */
    int has_result;
    int ban_defs;      /* the checks refuse def/class */
    int checks;        /* the syntax-tree checks apply (not yolo) */
    int monitored;     /* the call monitor watches this cell (monitor.c) */
    int report_mode;   /* the run has a report: the Cell's value is the
                          report's dict, and the cell's errors go in it */
    int cancelled_in;  /* a CancelledError was thrown in: the awaiting
                          task was cancelled, which is not the cell's error */
    sp_output_streams streams; /* report mode: sys.stdout/stderr per step */
    cell_state state;
    /* Time limit and cancellation (watchdog.c). */
    sp_wd_limit limit; /* the deadline; armed from start to finish */
    PyObject *task;    /* owned or NULL: the task awaiting the cell */
    PyObject *loop;    /* owned or NULL: the loop running at start */
    PyObject *timer;   /* owned or NULL: the loop's handle that stops the
                          cell at its deadline while it awaits */
    int64_t timer_when; /* monotonic ns that timer is for */
    PyObject *yielded; /* owned or NULL: what the last step yielded to the
                          task (the future the cell awaits) */
    int we_cancelled;  /* the timer cancelled `yielded` */
    int rethrown;      /* the limit's error was thrown after the grace */
    int stepping;      /* a step of the cell runs now (no re-entry) */
    PyObject *cancel_exc; /* owned or NULL: the CancelledError the cell
                             raised, while CELL_CANCELLING */
} SpCell;

static int
cell_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpCell *c = (SpCell *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->g);
    Py_VISIT(c->ns);
    Py_VISIT(c->synced);
    Py_VISIT(c->banned);
    Py_VISIT(c->run);
    Py_VISIT(c->source);
    Py_VISIT(c->code);
    Py_VISIT(c->globals);
    Py_VISIT(c->coro);
    Py_VISIT(c->waiter);
    Py_VISIT(c->seen);
    Py_VISIT(c->error);
    Py_VISIT(c->before);
    Py_VISIT(c->streams.own[0]);
    Py_VISIT(c->streams.own[1]);
    Py_VISIT(c->task);
    Py_VISIT(c->loop);
    Py_VISIT(c->timer);
    Py_VISIT(c->yielded);
    Py_VISIT(c->cancel_exc);
    return 0;
}

static int
cell_tp_clear(PyObject *self)
{
    SpCell *c = (SpCell *)self;
    Py_CLEAR(c->g);
    Py_CLEAR(c->ns);
    Py_CLEAR(c->synced);
    Py_CLEAR(c->banned);
    Py_CLEAR(c->source);
    Py_CLEAR(c->code);
    Py_CLEAR(c->globals);
    Py_CLEAR(c->coro);
    Py_CLEAR(c->waiter);
    Py_CLEAR(c->seen);
    Py_CLEAR(c->error);
    sp_wd_disarm(&c->limit); /* before the memory goes: the list holds it */
    c->limit.task = NULL;
    Py_CLEAR(c->task);
    Py_CLEAR(c->loop);
    Py_CLEAR(c->timer);
    Py_CLEAR(c->yielded);
    Py_CLEAR(c->cancel_exc);
    Py_CLEAR(c->before);
    sp_output_clear(&c->streams);
    if (c->run != NULL) {
        sp_memcap_end(c->run->mem); /* a cell dropped before it finished */
        if (c->report_mode) {
            /* Never finished: what the run's tasks write from now on goes
             * to the host. */
            sp_report_close(c->run);
        }
    }
    Py_CLEAR(c->run);
    return 0;
}

PyObject *
sp_cell_new(PyObject *g, PyObject *ns, PyObject *synced, SpRun *run,
            PyObject *source, PyObject *banned, int ban_defs, int checks,
            double timeout)
{
    SpCell *cell = PyObject_GC_New(SpCell, cell_global->cell_type);
    if (cell == NULL) {
        return NULL;
    }
    Py_INCREF(cell_global->cell_type);
    cell->g = Py_NewRef(g);
    cell->ns = Py_NewRef(ns);
    cell->synced = Py_NewRef(synced);
    cell->banned = Py_NewRef(banned);
    cell->run = (SpRun *)Py_NewRef(run);
    cell->source = Py_NewRef(source);
    cell->code = cell->globals = cell->coro = cell->waiter = NULL;
    cell->seen = cell->error = cell->before = NULL;
    cell->has_result = 0;
    cell->ban_defs = ban_defs;
    cell->checks = checks;
    cell->monitored = 0;
    cell->report_mode = run->report != NULL;
    cell->cancelled_in = 0;
    cell->streams.router[0] = cell->streams.router[1] = NULL;
    cell->streams.own[0] = cell->streams.own[1] = NULL;
    cell->state = CELL_START;
    memset(&cell->limit, 0, sizeof(cell->limit));
    cell->limit.timeout = timeout;
    cell->limit.wake = cell_wake;
    cell->task = cell->loop = cell->timer = cell->yielded = NULL;
    cell->timer_when = 0;
    cell->we_cancelled = cell->rethrown = cell->stepping = 0;
    cell->cancel_exc = NULL;
    PyObject_GC_Track(cell);
    return (PyObject *)cell;
}

/* Capture asyncio's functions once, before any cell could replace them. */
static int
cell_capture_asyncio(void)
{
    if (cell_global->gather != NULL) {
        return 0;
    }
    if (sp_hook_before_run() < 0) {
        return -1;
    }
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        return -1;
    }
    cell_global->all_tasks = PyObject_GetAttrString(asyncio, "all_tasks");
    cell_global->current_task = PyObject_GetAttrString(asyncio, "current_task");
    cell_global->cancelled = PyObject_GetAttrString(asyncio, "CancelledError");
    cell_global->gather = PyObject_GetAttrString(asyncio, "gather");
    Py_DECREF(asyncio);
    if (cell_global->all_tasks == NULL || cell_global->current_task == NULL ||
        cell_global->cancelled == NULL || cell_global->gather == NULL) {
        Py_CLEAR(cell_global->all_tasks);
        Py_CLEAR(cell_global->current_task);
        Py_CLEAR(cell_global->cancelled);
        Py_CLEAR(cell_global->gather);
        return -1;
    }
    return 0;
}

/* Prepare to find the tasks the cell creates.  Where a task's context
 * can be read (3.12+), a task is the cell's when its context holds this
 * cell's run, and only the current task needs excluding; on 3.11 the tasks
 * that exist before the cell runs are remembered.  Without a running event
 * loop there is nothing to track and `seen` stays NULL. */
static int
cell_begin(SpCell *self)
{
    if (cell_capture_asyncio() < 0) {
        return -1;
    }
    PyObject *current = PyObject_CallNoArgs(cell_global->current_task);
    if (current == NULL) {
        if (PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            PyErr_Clear(); /* no running loop */
            return 0;
        }
        return -1;
    }
#if SP_HAVE_TASK_GET_CONTEXT
    self->seen = PySet_New(NULL);
#else
    PyObject *tasks = PyObject_CallNoArgs(cell_global->all_tasks);
    self->seen = tasks == NULL ? NULL : PySet_New(tasks);
    Py_XDECREF(tasks);
#endif
    int rc = self->seen == NULL ? -1
             : current == Py_None ? 0
                                  : PySet_Add(self->seen, current);
    if (rc == 0 && current != Py_None) {
        /* The watchdog lets the task's loop make progress while a step runs
         * long, and stops the cell when the task is cancelled meanwhile. */
        rc = sp_wd_task_begin(&self->limit, current, &self->loop);
        if (rc > 0) {
            self->task = Py_NewRef(current);
            self->limit.task = self->task;
        }
        rc = rc < 0 ? -1 : 0;
    }
    Py_DECREF(current);
    return rc;
}

/* Whether `task` belongs to this cell: it is not done and (where the
 * interpreter can tell) it runs in a context holding this cell's run.
 * 1 yes, 0 no, -1 error. */
static int
cell_owns_task(SpCell *self, PyObject *task)
{
    PyObject *done = PyObject_CallMethod(task, "done", NULL);
    if (done == NULL) {
        return -1;
    }
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done != 0) {
        return is_done < 0 ? -1 : 0;
    }
#if SP_HAVE_TASK_GET_CONTEXT
    PyObject *ctx = PyObject_CallMethod(task, "get_context", NULL);
    if (ctx == NULL) {
        return -1;
    }
    if (!PyContext_CheckExact(ctx)) {
        Py_DECREF(ctx);
        return 0;
    }
    PyObject *value = PyObject_GetItem(ctx, sp_context_var());
    Py_DECREF(ctx);
    if (value == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int mine = value == (PyObject *)self->run;
    Py_DECREF(value);
    return mine;
#else
    (void)self;
    return 1;
#endif
}

/* Find the cell's tasks not yet awaited; if any, start gathering them.
 * 1 if self->waiter was set, 0 if there is nothing to wait for, -1 error. */
static int
cell_collect_tasks(SpCell *self)
{
    PyObject *tasks = NULL, *mine = NULL, *args = NULL, *kw = NULL;
    PyObject *fut = NULL;
    int rc = -1;
    if (self->seen == NULL) {
        return 0;
    }
    tasks = PyObject_CallNoArgs(cell_global->all_tasks);
    mine = PyList_New(0);
    if (tasks == NULL || mine == NULL) {
        goto done;
    }
    PyObject *it = PyObject_GetIter(tasks);
    if (it == NULL) {
        goto done;
    }
    PyObject *task;
    while ((task = PyIter_Next(it)) != NULL) {
        int seen = PySet_Contains(self->seen, task);
        int own = seen == 0 ? cell_owns_task(self, task) : 0;
        if (seen < 0 || own < 0 ||
            (own && (PyList_Append(mine, task) < 0 ||
                     PySet_Add(self->seen, task) < 0))) {
            Py_DECREF(task);
            Py_DECREF(it);
            goto done;
        }
        Py_DECREF(task);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        goto done;
    }
    if (PyList_GET_SIZE(mine) == 0) {
        rc = 0;
        goto done;
    }
    args = PyList_AsTuple(mine);
    kw = Py_BuildValue("{sO}", "return_exceptions", Py_True);
    if (args == NULL || kw == NULL) {
        goto done;
    }
    fut = PyObject_Call(cell_global->gather, args, kw);
    if (fut == NULL) {
        goto done;
    }
    self->waiter = PyObject_CallMethod(fut, "__await__", NULL);
    rc = self->waiter == NULL ? -1 : 1;
done:
    Py_XDECREF(tasks);
    Py_XDECREF(mine);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(fut);
    return rc;
}

/* Cancel the cell's tasks that are not done (the cell was stopped by its
 * limit: they are not awaited).  0 / -1. */
static int
cell_cancel_tasks(SpCell *self)
{
    if (self->seen == NULL) {
        return 0;
    }
    PyObject *tasks = PyObject_CallNoArgs(cell_global->all_tasks);
    PyObject *it = tasks == NULL ? NULL : PyObject_GetIter(tasks);
    Py_XDECREF(tasks);
    if (it == NULL) {
        return -1;
    }
    PyObject *task;
    int rc = 0;
    while (rc == 0 && (task = PyIter_Next(it)) != NULL) {
        int seen = PySet_Contains(self->seen, task);
        int own = seen == 0 ? cell_owns_task(self, task) : 0;
        if (seen < 0 || own < 0) {
            rc = -1;
        }
        else if (own) {
            PyObject *r = PyObject_CallMethod(task, "cancel", NULL);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(task);
    }
    Py_DECREF(it);
    return rc < 0 || PyErr_Occurred() ? -1 : 0;
}

/* Note the first failure among gathered results (a list); a task that was
 * cancelled is not a failure of the cell. */
static void
cell_note_task_errors(SpCell *self, PyObject *results)
{
    if (!PyList_Check(results) || self->error != NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(results); i++) {
        PyObject *item = PyList_GET_ITEM(results, i);
        if (PyExceptionInstance_Check(item) &&
            !PyErr_GivenExceptionMatches(item, cell_global->cancelled)) {
            self->error = Py_NewRef(item);
            return;
        }
    }
}

/* Search `exc`'s causes, contexts and group members for one of the run's
 * refusals, breadth first, visiting each exception once (a chain may be a
 * diamond or a cycle) and at most CELL_MAX_UNWRAP of them.  Borrowed
 * result (kept alive by `exc`'s chain, which the caller holds), or NULL;
 * no exception is left set. */
static PyObject *
cell_find_denial(SpRun *run, PyObject *exc)
{
    PyObject *queue = PyList_New(0); /* owned: exceptions to look at */
    PyObject *seen = PySet_New(NULL); /* owned: ids of those queued */
    PyObject *found = NULL;
    if (queue == NULL || seen == NULL || PyList_Append(queue, exc) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(queue) && i < CELL_MAX_UNWRAP &&
                           found == NULL; i++) {
        PyObject *e = PyList_GET_ITEM(queue, i); /* kept by queue */
        if (sp_context_is_denial(run, e)) {
            found = e;
            break;
        }
        PyObject *next[2] = {PyException_GetCause(e), PyException_GetContext(e)};
        PyObject *members = NULL;
        if (PyObject_TypeCheck(e, (PyTypeObject *)PyExc_BaseExceptionGroup)) {
            members = PyObject_GetAttrString(e, "exceptions");
        }
        int failed = 0;
        for (int k = 0; k < 2; k++) {
            if (next[k] != NULL && !failed) {
                PyObject *id = PyLong_FromVoidPtr(next[k]);
                int dup = id == NULL ? -1 : PySet_Contains(seen, id);
                failed = dup < 0 ||
                         (!dup && (PySet_Add(seen, id) < 0 ||
                                   PyList_Append(queue, next[k]) < 0));
                Py_XDECREF(id);
            }
            Py_XDECREF(next[k]);
        }
        for (Py_ssize_t m = 0; !failed && members != NULL && PyTuple_Check(members) &&
                               m < PyTuple_GET_SIZE(members); m++) {
            PyObject *member = PyTuple_GET_ITEM(members, m);
            PyObject *id = PyLong_FromVoidPtr(member);
            int dup = id == NULL ? -1 : PySet_Contains(seen, id);
            failed = dup < 0 || (!dup && (PySet_Add(seen, id) < 0 ||
                                          PyList_Append(queue, member) < 0));
            Py_XDECREF(id);
        }
        Py_XDECREF(members);
        if (failed) {
            break;
        }
    }
done:
    PyErr_Clear(); /* a failed search finds nothing; the error stands */
    Py_XDECREF(queue);
    Py_XDECREF(seen);
    return found; /* still referenced from exc's chain */
}

/* Whether a traceback entry runs a cell's code. */
static int
cell_tb_in_cell(PyObject *tb)
{
    PyFrameObject *frame = ((PyTracebackObject *)tb)->tb_frame;
    PyCodeObject *code = PyFrame_GetCode(frame);
    int is_cell = sp_gate_is_cell_code(code);
    Py_DECREF(code);
    return is_cell;
}

/* Whether `exc` is the cell being stopped by its memory cap: a
 * MemoryError in a run whose cap refused an allocation. */
static int
cell_memory_stopped(SpCell *self, PyObject *exc)
{
    return exc != NULL && self->run->mem != NULL &&
           sp_memcap_tripped(self->run->mem) &&
           PyErr_GivenExceptionMatches(exc, PyExc_MemoryError);
}

/* When the memory cap stopped the cell, free what it built: its namespace
 * is put back as it found it (nothing is exported) and the frames of its
 * traceback drop their locals.  Keeps the pending exception. */
static void
cell_drop_partial(SpCell *self)
{
    PyObject *exc = sp_err_get_raised();
    if (!cell_memory_stopped(self, exc) || self->before == NULL ||
        self->globals == NULL) {
        sp_err_set_raised(exc);
        return;
    }
    PyObject *keys = PyDict_Keys(self->globals);
    for (Py_ssize_t i = 0; keys != NULL && i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        int had = PyDict_Contains(self->before, key);
        if (had < 0 || (had == 0 && PyDict_DelItem(self->globals, key) < 0)) {
            PyErr_Clear();
        }
    }
    Py_XDECREF(keys);
    if (PyDict_Update(self->globals, self->before) < 0) {
        PyErr_Clear();
    }
    Py_CLEAR(self->before);
    PyObject *tb = PyException_GetTraceback(exc); /* owned */
    for (PyObject *walk = tb; walk != NULL && walk != Py_None;
         walk = (PyObject *)((PyTracebackObject *)walk)->tb_next) {
        PyObject *res = PyObject_CallMethod(
            (PyObject *)((PyTracebackObject *)walk)->tb_frame, "clear", NULL);
        if (res == NULL) {
            PyErr_Clear(); /* a frame still running keeps its locals */
        }
        Py_XDECREF(res);
    }
    Py_XDECREF(tb);
    sp_memcap_trim();
    sp_err_set_raised(exc);
}

/* Rewrite the pending exception for the host: a wrapped refusal is
 * unwrapped, and the traceback starts at the cell's first frame. */
static void
cell_fix_error(SpCell *self)
{
    PyObject *exc = sp_err_get_raised();
    if (exc == NULL) {
        return;
    }
    PyObject *denial = cell_find_denial(self->run, exc);
    if (denial != NULL && denial != exc) {
        Py_SETREF(exc, Py_NewRef(denial));
    }
    if (cell_memory_stopped(self, exc)) {
        /* Deep inside, MemoryError often has no message (CPython's
         * preallocated one): the host gets one naming the cap, with what
         * was raised as its cause. */
        char cap[32];
        sp_memcap_format(sp_memcap_cap(self->run->mem), cap, sizeof(cap));
        PyObject *err = PyObject_CallFunction(
            PyExc_MemoryError, "N",
            PyUnicode_FromFormat("cell exceeded its memory limit of %s", cap));
        if (err == NULL) {
            PyErr_Clear(); /* keep the MemoryError rather than nothing */
        }
        else {
            PyObject *tb = PyException_GetTraceback(exc);
            if (tb != NULL) {
                PyException_SetTraceback(err, tb);
                Py_DECREF(tb);
            }
            PyException_SetCause(err, exc); /* steals exc */
            exc = err;
        }
    }
    if (self->checks && PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)) {
        /* sys.exit()/exit() in a cell would end the host: a refusal, with
         * the SystemExit as its cause (the CLI takes its exit code). */
        PyObject *code = PyObject_GetAttrString(exc, "code");
        PyObject *refusal = code == NULL ? NULL : PyObject_CallFunction(
            PyExc_PermissionError, "N", PyUnicode_FromFormat(
                "safepyrun refused to exit the host process: the cell raised "
                "SystemExit(%R)", code));
        Py_XDECREF(code);
        if (refusal == NULL) {
            PyErr_Clear(); /* keep the SystemExit rather than nothing */
        }
        else {
            PyObject *tb = PyException_GetTraceback(exc);
            if (tb != NULL) {
                PyException_SetTraceback(refusal, tb);
                Py_DECREF(tb);
            }
            PyException_SetCause(refusal, exc); /* steals exc */
            exc = refusal;
        }
    }
    PyObject *tb = PyException_GetTraceback(exc); /* new or NULL */
    PyObject *walk = tb;                          /* borrowed along the chain */
    while (walk != NULL && walk != Py_None && !cell_tb_in_cell(walk)) {
        walk = (PyObject *)((PyTracebackObject *)walk)->tb_next;
    }
    if (walk != NULL && walk != tb && walk != Py_None) {
        PyException_SetTraceback(exc, walk);
    }
    Py_XDECREF(tb);
    sp_err_set_raised(exc);
}

/* Throw `exc` into iterator `it` the way yield-from does. */
static PySendResult
cell_throw_into(PyObject *it, PyObject *exc, PyObject **out)
{
    *out = PyObject_CallMethod(it, "throw", "O", exc);
    if (*out != NULL) {
        return PYGEN_NEXT;
    }
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        return PYGEN_ERROR;
    }
    PyObject *stop = sp_err_get_raised();
    *out = PyObject_GetAttrString(stop, "value");
    Py_DECREF(stop);
    return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

/* What a step of the cell enters and must leave again. */
typedef struct {
    sp_monitor_saved monitor;
    sp_caches_snapshot caches;
    sp_memcap_step mem;
    PyObject *token; /* owned until cell_leave: the run context's token */
    sp_wd_step wd;   /* the step, as the watchdog sees it */
    SpCell *cell;    /* borrowed: the cell stepping */
} cell_step;

/* Enter the cell's run for one step: the caches are recorded, the monitor
 * (when the cell needs it) and the run context entered.  0 ok (then
 * cell_leave must follow), -1 error. */
static int
cell_enter(SpCell *self, cell_step *step)
{
    /* Output first, outside the run: installing the router is host work. */
    if (self->report_mode && sp_output_enter(&self->streams) < 0) {
        return -1;
    }
    if (sp_monitor_enter(&step->monitor, self->monitored) < 0) {
        if (self->report_mode) {
            (void)sp_output_leave(&self->streams);
        }
        return -1;
    }
    sp_caches_take(&step->caches);
    step->token = sp_context_enter(self->run);
    if (step->token == NULL) {
        sp_caches_restore(&step->caches);
        sp_monitor_leave(&step->monitor);
        if (self->report_mode) {
            (void)sp_output_leave(&self->streams);
        }
        return -1;
    }
    if (sp_wd_step_begin(&step->wd, &self->limit) < 0) {
        (void)sp_context_leave(step->token);
        sp_caches_restore(&step->caches);
        sp_monitor_leave(&step->monitor);
        if (self->report_mode) {
            (void)sp_output_leave(&self->streams);
        }
        return -1;
    }
    step->cell = self;
    self->stepping = 1;
    /* Last in, first out: the engine's own entering and leaving is not
     * charged to the cell's memory cap. */
    sp_memcap_step_enter(self->run->mem, &step->mem);
    return 0;
}

/* Leave what cell_enter entered; a pending exception survives.  0 ok, -1
 * error. */
static int
cell_leave(SpCell *self, cell_step *step)
{
    /* First: the watchdog raises nothing into what follows. */
    sp_wd_step_end(&step->wd);
    step->cell->stepping = 0;
    sp_memcap_step_leave(&step->mem);
    int left = sp_context_leave(step->token);
    step->token = NULL;
    sp_caches_restore(&step->caches);
    sp_monitor_leave(&step->monitor);
    if (self->report_mode && sp_output_leave(&self->streams) < 0) {
        left = -1;
    }
    /* The shell's names and objects as the host left them (shell.c): put
     * back what the step changed, and say so. */
    PyObject *pending = sp_err_get_raised();
    if (sp_shell_verify() < 0) {
        if (pending != NULL) {
            PyObject *exc = sp_err_get_raised();
            PyException_SetContext(exc, pending); /* steals pending */
            sp_err_set_raised(exc);
        }
        return -1;
    }
    sp_err_set_raised(pending);
    return left;
}

/* Send `arg` (or throw `exc`) into `it` with the run entered. */
static PySendResult
cell_drive(SpCell *self, PyObject *it, PyObject *arg, PyObject *exc,
           PyObject **out)
{
    cell_step step;
    *out = NULL;
    if (cell_enter(self, &step) < 0) {
        return PYGEN_ERROR;
    }
    PySendResult r = exc != NULL ? cell_throw_into(it, exc, out)
                                 : PyIter_Send(it, arg, out);
    if (cell_leave(self, &step) < 0 && r != PYGEN_ERROR) {
        Py_CLEAR(*out);
        return PYGEN_ERROR;
    }
    return r;
}

/* Start the cell: run its code; a cell that used top-level await returns a
 * coroutine, which becomes self->coro.  0 ok, -1 error. */
static int
cell_start(SpCell *self)
{
    SpRun *outer = NULL;
    int nested = sp_gate_run(&outer);
    Py_XDECREF(outer);
    if (nested != 0) {
        if (nested > 0) {
            PyErr_SetString(PyExc_PermissionError,
                            "safepyrun refused to start a run from sandboxed "
                            "code: a nested run could change the policy");
        }
        return -1;
    }
    if (sp_monitor_sync() < 0) {
        return -1;
    }
    if (self->report_mode) {
        sp_report_start(self->run->report);
    }
    self->code = sp_compile_cell(self->source, self->banned, self->ban_defs,
                                 self->checks, &self->has_result);
    if (self->code == NULL ||
        sp_gate_register_codes(self->code, self->run) < 0) {
        return -1;
    }
    self->monitored = sp_monitor_cell_wants(self->code);
    if (self->monitored && sp_monitor_watch_cell(self->code) < 0) {
        return -1;
    }
    /* The runner's live namespace, shared by its cells as IPython's cells
     * share one (a function an earlier cell defined sees names later cells
     * rebind), brought in step with the host's changes to g; the cell's
     * top-level names are its globals, and reach g by the export rule. */
    if (sp_export_sync_in(self->g, self->ns, self->synced) < 0) {
        return -1;
    }
    self->globals = Py_NewRef(self->ns);
    /* As exec() does: without __builtins__ a cell's imports misbehave. */
    if (PyDict_SetDefault(self->globals, cell_global->builtins_name,
                          PyEval_GetBuiltins()) == NULL) {
        return -1;
    }
    if (self->run->mem != NULL &&
        (self->before = PyDict_Copy(self->globals)) == NULL) {
        return -1;
    }
    if (cell_begin(self) < 0 || sp_guards_before_run() < 0) {
        return -1;
    }
    cell_step step;
    if (cell_enter(self, &step) < 0) {
        return -1;
    }
    PyObject *res = PyEval_EvalCode(self->code, self->globals, self->globals);
    if (cell_leave(self, &step) < 0 || res == NULL) {
        Py_XDECREF(res);
        return -1;
    }
    if (((PyCodeObject *)self->code)->co_flags & CO_COROUTINE) {
        self->coro = res;
        self->state = CELL_CORO;
    }
    else {
        Py_DECREF(res);
        self->state = CELL_TASKS;
    }
    return 0;
}

/* The cell's value: the last expression's, or None.  New reference. */
static PyObject *
cell_take_result(SpCell *self)
{
    if (!self->has_result) {
        return Py_NewRef(Py_None);
    }
    PyObject *result = NULL;
    if (sp_dict_get_ref(self->globals, sp_compile_result_name(), &result) < 0) {
        return NULL;
    }
    if (result == NULL) {
        return Py_NewRef(Py_None);
    }
    if (PyDict_DelItem(self->globals, sp_compile_result_name()) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* Export names after a failure, keeping the pending exception: what the
 * cell defined before it failed still reaches the host. */
static void
cell_export_on_error(SpCell *self)
{
    if (self->globals == NULL) {
        return; /* failed before running: nothing to export */
    }
    PyObject *pending = sp_err_get_raised();
    if (PyDict_DelItem(self->globals, sp_compile_result_name()) < 0) {
        PyErr_Clear();
    }
    if (sp_export_names(self->globals, self->g, self->synced) < 0) {
        PyErr_WriteUnraisable(self->g);
    }
    sp_err_set_raised(pending);
}

/* Report mode: the cell failed; its error goes in the report, which is
 * the Cell's value.  A cancellation of the awaiting task is not the
 * cell's error and propagates, as does a failure to build the report. */
static PySendResult
cell_report_error(SpCell *self, PyObject **out)
{
    if (self->cancelled_in &&
        PyErr_ExceptionMatches(cell_global->cancelled)) {
        sp_report_close(self->run);
        return PYGEN_ERROR;
    }
    PyObject *exc = sp_err_get_raised();
    *out = sp_report_finish(self->run, NULL, exc);
    Py_XDECREF(exc);
    return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

/* ---- the time limit ------------------------------------------------------ */

static PyObject *cell_on_timer(PyObject *self, PyObject *unused);

static PyMethodDef cell_timer_def = {
    "safepyrun_cell_deadline", cell_on_timer, METH_NOARGS,
    "Stop an awaiting cell at its deadline."};

/* Make sure the loop will wake the cell when it must stop while awaiting:
 * at the deadline, or at the end of the grace period once stopping.  The
 * handle is checked at each await, so a cell that cancels it (through the
 * loop's private lists) gets a new one.  0 / -1. */
static int
cell_arm_timer(SpCell *self)
{
    if (self->loop == NULL || self->limit.deadline == 0) {
        return 0;
    }
    int64_t when = self->limit.stopping ? self->limit.reraise_at
                                        : self->limit.deadline;
    if (self->timer != NULL && self->timer_when == when) {
        int gone = sp_wd_handle_cancelled(self->timer);
        if (gone <= 0) {
            return gone;
        }
    }
    if (self->timer != NULL) {
        sp_wd_cancel_handle(self->timer);
        Py_CLEAR(self->timer);
    }
    PyObject *cb = PyCFunction_New(&cell_timer_def, (PyObject *)self);
    if (cb == NULL) {
        return -1;
    }
    self->timer = sp_wd_call_at(self->loop, when, cb);
    Py_DECREF(cb);
    self->timer_when = when;
    return self->timer == NULL ? -1 : 0;
}

/* The loop's timer: the cell awaits past its deadline (or past the grace
 * period).  Cancel the future it awaits, so its task wakes it; the cell
 * then throws its TimeoutError in instead of the CancelledError.  Harmless
 * when called early (it does nothing but wait for the next timer). */
static PyObject *
cell_on_timer(PyObject *op, PyObject *unused)
{
    (void)unused;
    SpCell *self = (SpCell *)op;
    Py_CLEAR(self->timer);
    if (self->state == CELL_FINISHED || self->state == CELL_START ||
        self->stepping) {
        Py_RETURN_NONE; /* a running step is the watchdog's */
    }
    int64_t now = sp_wd_now();
    int was = self->limit.stopping;
    int st = sp_wd_check(&self->limit, now);
    if (st == SP_WD_RUNNING || (was && now < self->limit.reraise_at)) {
        if (cell_arm_timer(self) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (self->yielded != NULL && self->yielded != Py_None) {
        int ok = sp_wd_cancel_future(self->yielded);
        if (ok < 0) {
            return NULL;
        }
        self->we_cancelled |= ok;
    }
    if (cell_arm_timer(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The watchdog's back-up for the timer (watchdog.h, sp_wd_limit.wake):
 * GIL held, on the watchdog thread; the cell is alive (armed).  Ask the
 * loop, thread-safely, to run the timer callback now. */
static void
cell_wake(sp_wd_limit *l)
{
    SpCell *self = (SpCell *)((char *)l - offsetof(SpCell, limit));
    if (self->loop == NULL || self->state == CELL_FINISHED) {
        return;
    }
    PyObject *cb = PyCFunction_New(&cell_timer_def, (PyObject *)self);
    PyObject *h = cb == NULL ? NULL
                  : sp_wd_call_soon_threadsafe(self->loop, cb);
    Py_XDECREF(cb);
    Py_XDECREF(h);
    PyErr_Clear(); /* a closed loop: nothing to wake */
}

/* The cell is done (returned or raised): the watchdog and the loop forget
 * it.  Keeps a pending exception. */
static void
cell_finish(SpCell *self)
{
    sp_wd_disarm(&self->limit);
    Py_CLEAR(self->yielded);
    if (self->timer != NULL) {
        PyObject *pending = sp_err_get_raised();
        sp_wd_cancel_handle(self->timer);
        Py_CLEAR(self->timer);
        sp_err_set_raised(pending);
    }
}

/* After a time limit, the exception that reaches the host is TimeoutError
 * with the limit in its message, whatever the cell raised on its way out
 * (that exception becomes its context); the traceback shows where the
 * cell was stopped. */
static void
cell_fix_timeout(SpCell *self)
{
    if (self->limit.stopping != SP_WD_TIMEOUT) {
        return;
    }
    PyObject *exc = sp_err_get_raised();
    PyObject *err = sp_wd_error(&self->limit);
    if (err == NULL) {
        Py_XDECREF(exc);
        return;
    }
    if (exc != NULL) {
        PyObject *tb = PyException_GetTraceback(exc);
        if (tb != NULL) {
            PyException_SetTraceback(err, tb);
            Py_DECREF(tb);
        }
        if (Py_IS_TYPE(exc, (PyTypeObject *)PyExc_TimeoutError)) {
            Py_DECREF(exc);
        }
        else {
            PyException_SetContext(err, exc); /* steals exc */
        }
    }
    sp_err_set_raised(err);
}

/* Before resuming an awaiting cell: what to throw into it instead of what
 * its task sends.  Past the deadline the limit's error is thrown once;
 * during the grace period the cell resumes normally (its finally blocks may
 * await) except where our timer cancelled what it awaited; after the grace
 * period, the error again.  New reference, or NULL with nothing to
 * replace (and no exception) or with an exception (*failed set). */
static PyObject *
cell_limit_throw(SpCell *self, PyObject *exc, int *failed)
{
    *failed = 0;
    int ours = self->we_cancelled;
    self->we_cancelled = 0;
    if (self->limit.deadline == 0 && self->limit.stopping == SP_WD_RUNNING) {
        return NULL;
    }
    int64_t now = sp_wd_now();
    int was = self->limit.stopping;
    int st = sp_wd_check(&self->limit, now);
    if (st == SP_WD_RUNNING) {
        return NULL;
    }
    if (was == SP_WD_RUNNING || now >= self->limit.reraise_at ||
        (ours && exc != NULL &&
         PyErr_GivenExceptionMatches(exc, cell_global->cancelled))) {
        PyObject *err = sp_wd_error(&self->limit);
        *failed = err == NULL;
        return err;
    }
    return NULL;
}

/* The watchdog stopped the cell with CancelledError because its task was
 * cancelled while a step ran.  Task.cancel() on a running task also left
 * the task a pending cancel request (_must_cancel), which the task
 * delivers at its next yield: a cell that ran inline in a host coroutine
 * (asyncio.timeout, 3.12's wait_for) would leave it to cancel the host
 * later.  So the cell yields once (a bare yield: the task steps again at
 * once) and raises its CancelledError when the task delivers the request.
 * 1 if the cell yields (its error kept), 0 to fail now. */
static int
cell_yield_for_cancel(SpCell *self)
{
    if (self->limit.stopping != SP_WD_CANCEL || self->task == NULL ||
        self->state == CELL_CANCELLING || self->state == CELL_FINISHED ||
        !PyErr_ExceptionMatches(cell_global->cancelled)) {
        return 0;
    }
    PyObject *pending = sp_err_get_raised();
    PyObject *flag = PyObject_GetAttrString(self->task, "_must_cancel");
    int must = flag == NULL ? -1 : PyObject_IsTrue(flag);
    Py_XDECREF(flag);
    PyErr_Clear();
    if (must <= 0) {
        sp_err_set_raised(pending);
        return 0;
    }
    Py_CLEAR(self->coro);
    Py_CLEAR(self->waiter);
    self->cancel_exc = pending;
    self->state = CELL_CANCELLING;
    return 1;
}

/* The state machine behind send/throw/__next__.  `exc` (borrowed, may be
 * NULL) is thrown into whatever the cell is waiting on. */
static PySendResult
cell_advance(SpCell *self, PyObject *arg, PyObject *exc, PyObject **out)
{
    assert(self->state >= CELL_START && self->state <= CELL_FINISHED);
    assert(!PyErr_Occurred());
    PyObject *thrown = NULL; /* owned: an exception the limit throws */
    *out = NULL;
    if (self->stepping) {
        /* A cell reaching its own Cell (through its task) and resuming it
         * from inside its step. */
        PyErr_SetString(PyExc_RuntimeError, "the cell is already running");
        return PYGEN_ERROR;
    }
    for (;;) {
        switch (self->state) {
        case CELL_START:
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                goto fail;
            }
            if (sp_wd_arm(&self->limit, self->run, self->run->data,
                          self->limit.timeout) < 0 ||
                cell_start(self) < 0) {
                goto fail;
            }
            break;
        case CELL_CORO:
        case CELL_WAIT: {
            PyObject **it = self->state == CELL_CORO ? &self->coro : &self->waiter;
            assert(*it != NULL);
            Py_CLEAR(self->yielded);
            int failed;
            PyObject *stop = cell_limit_throw(self, exc, &failed);
            if (failed) {
                goto fail;
            }
            if (stop != NULL) {
                Py_XSETREF(thrown, stop);
                exc = thrown;
            }
            PySendResult r = cell_drive(self, *it, arg, exc, out);
            exc = NULL;
            arg = Py_None;
            if (r == PYGEN_NEXT) {
                if (self->limit.stopping != SP_WD_RUNNING &&
                    sp_wd_now() >= self->limit.reraise_at) {
                    /* Past the grace period and awaiting again: once more
                     * the error; a cell that swallows that too is closed. */
                    Py_CLEAR(*out);
                    if (!self->rethrown) {
                        self->rethrown = 1;
                        Py_XSETREF(thrown, sp_wd_error(&self->limit));
                        if (thrown == NULL) {
                            goto fail;
                        }
                        exc = thrown;
                        break;
                    }
                    PyObject *res = PyObject_CallMethod(*it, "close", NULL);
                    Py_XDECREF(res);
                    PyErr_Clear();
                    Py_CLEAR(*it);
                    PyObject *err = sp_wd_error(&self->limit);
                    if (err != NULL) {
                        sp_err_set_raised(err);
                    }
                    goto fail;
                }
                if (self->limit.deadline != 0) {
                    self->yielded = Py_NewRef(*out);
                    if (cell_arm_timer(self) < 0) {
                        Py_CLEAR(*out);
                        goto fail;
                    }
                }
                Py_XDECREF(thrown);
                return PYGEN_NEXT;
            }
            Py_CLEAR(*it);
            if (r == PYGEN_ERROR) {
                goto fail;
            }
            if (self->state == CELL_WAIT) {
                cell_note_task_errors(self, *out);
            }
            Py_CLEAR(*out);
            self->state = CELL_TASKS;
            break;
        }
        case CELL_TASKS: {
            if (self->limit.stopping != SP_WD_RUNNING ||
                sp_wd_check(&self->limit, sp_wd_now()) != SP_WD_RUNNING) {
                /* Stopped: the tasks it left are cancelled, not awaited. */
                if (cell_cancel_tasks(self) < 0) {
                    goto fail;
                }
                self->state = CELL_DONE;
                break;
            }
            int found = cell_collect_tasks(self);
            if (found < 0) {
                goto fail;
            }
            self->state = found ? CELL_WAIT : CELL_DONE;
            break;
        }
        case CELL_DONE: {
            if (self->limit.stopping != SP_WD_RUNNING) {
                PyObject *err = sp_wd_error(&self->limit);
                if (err != NULL) {
                    sp_err_set_raised(err);
                }
                goto fail;
            }
            if (self->error != NULL) {
                PyObject *err = self->error; /* reference moves to the error */
                self->error = NULL;
                sp_err_set_raised(err);
                goto fail;
            }
            PyObject *result = cell_take_result(self);
            if (result == NULL) {
                goto fail;
            }
            if (sp_export_names(self->globals, self->g, self->synced) < 0) {
                Py_DECREF(result);
                goto fail;
            }
            self->state = CELL_FINISHED;
            cell_finish(self);
            Py_XDECREF(thrown);
            sp_memcap_end(self->run->mem);
            if (self->report_mode) {
                *out = sp_report_finish(self->run, result, NULL);
                Py_DECREF(result);
                return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
            }
            *out = result;
            return PYGEN_RETURN;
        }
        case CELL_CANCELLING: {
            /* The task resumed the cell: with the CancelledError of its
             * cancel request, normally.  The cell's own error goes out
             * (its traceback shows where the cell was stopped). */
            PyObject *err = self->cancel_exc;
            self->cancel_exc = NULL;
            sp_err_set_raised(err);
            goto fail;
        }
        case CELL_FINISHED:
            Py_XDECREF(thrown);
            PyErr_SetString(PyExc_RuntimeError,
                            "cannot reuse an already awaited cell");
            return PYGEN_ERROR;
        }
    }
fail:
    Py_XDECREF(thrown);
    if (cell_yield_for_cancel(self)) {
        *out = Py_NewRef(Py_None);
        return PYGEN_NEXT;
    }
    self->state = CELL_FINISHED;
    Py_CLEAR(self->coro);
    Py_CLEAR(self->waiter);
    cell_finish(self);
    cell_drop_partial(self);
    cell_export_on_error(self);
    cell_fix_error(self);
    cell_fix_timeout(self);
    sp_memcap_end(self->run->mem);
    if (self->report_mode) {
        return cell_report_error(self, out);
    }
    return PYGEN_ERROR;
}

static PySendResult
cell_am_send(PyObject *self, PyObject *arg, PyObject **result)
{
    return cell_advance((SpCell *)self, arg, NULL, result);
}

static PyObject *
cell_send(PyObject *self, PyObject *arg)
{
    PyObject *value;
    PySendResult r = cell_advance((SpCell *)self, arg, NULL, &value);
    return sp_send_result_to_python(r, value);
}

static PyObject *
cell_tp_iternext(PyObject *self)
{
    return cell_send(self, Py_None);
}

static PyObject *
cell_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    PyObject *exc;
    if (PyExceptionInstance_Check(typ)) {
        exc = Py_NewRef(typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        exc = PyExceptionInstance_Check(val) ? Py_NewRef(val)
              : val == Py_None               ? PyObject_CallNoArgs(typ)
                                             : PyObject_CallOneArg(typ, val);
        if (exc == NULL) {
            return NULL;
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must derive from BaseException");
        return NULL;
    }
    PyObject *value;
    if (cell_global->cancelled != NULL &&
        PyErr_GivenExceptionMatches(exc, cell_global->cancelled)) {
        ((SpCell *)self)->cancelled_in = 1;
    }
    PySendResult r = cell_advance((SpCell *)self, Py_None, exc, &value);
    Py_DECREF(exc);
    return sp_send_result_to_python(r, value);
}

static PyObject *
cell_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    SpCell *c = (SpCell *)self;
    PyObject *it = c->coro != NULL ? c->coro : c->waiter; /* borrowed */
    if (c->stepping) {
        PyErr_SetString(PyExc_RuntimeError, "the cell is already running");
        return NULL;
    }
    c->state = CELL_FINISHED;
    cell_finish(c);
    if (c->report_mode) {
        sp_report_close(c->run);
    }
    PyObject *res = it != NULL ? PyObject_CallMethod(it, "close", NULL)
                               : Py_NewRef(Py_None);
    Py_CLEAR(c->coro);
    Py_CLEAR(c->waiter);
    return res == NULL ? NULL : (Py_DECREF(res), Py_NewRef(Py_None));
}

static PyObject *
cell_get_peak_memory(PyObject *self, void *c)
{
    (void)c;
    return sp_memcap_run_peak(((SpCell *)self)->run);
}

static PyGetSetDef cell_getset[] = {
    {"peak_memory", cell_get_peak_memory, NULL,
     "Bytes the cell had allocated at its high-water mark (counted while "
     "its steps ran), or None without a memory cap.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
cell_am_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* A cell made and dropped without being awaited never ran: warn, as
 * CPython does for a coroutine never awaited, since `python(code)` without
 * `await` is an easy slip that otherwise fails silently.  Closed or
 * started cells say nothing.  The pending exception, if any, is kept. */
static void
cell_tp_finalize(PyObject *self)
{
    SpCell *c = (SpCell *)self;
    if (c->state != CELL_START) {
        return;
    }
    PyObject *pending = sp_err_get_raised(); /* owned */
    if (PyErr_WarnEx(PyExc_RuntimeWarning,
                     "safepyrun cell was never awaited: python(code) returns "
                     "an awaitable, so write `await python(code)`", 1) < 0) {
        PyErr_WriteUnraisable(self);
    }
    sp_err_set_raised(pending);
}

/* tp_finalize runs from here when the last reference goes (the garbage
 * collector calls it itself for cells in cycles). */
static void
cell_tp_dealloc(PyObject *self)
{
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return; /* resurrected by the warning machinery */
    }
    sp_gc_dealloc(self);
}

static PyMethodDef cell_methods[] = {
    {"send", cell_send, METH_O, "Resume the cell with a value."},
    {"throw", (PyCFunction)(void (*)(void))cell_throw, METH_FASTCALL,
     "Raise an exception where the cell is suspended."},
    {"close", cell_close, METH_NOARGS, "Stop the cell."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cell_slots[] = {
    {Py_tp_doc, "One cell run: await it to run the cell and get its value."},
    {Py_tp_traverse, cell_tp_traverse},
    {Py_tp_clear, cell_tp_clear},
    {Py_tp_dealloc, cell_tp_dealloc},
    {Py_tp_finalize, cell_tp_finalize},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, cell_tp_iternext},
    {Py_tp_methods, cell_methods},
    {Py_tp_getset, cell_getset},
    {Py_am_await, cell_am_await},
    {Py_am_send, cell_am_send},
    {0, NULL},
};

static PyType_Spec cell_spec = {
    .name = "safepyrun._engine.Cell",
    .basicsize = sizeof(SpCell),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = cell_slots,
};

int
sp_cell_init(PyObject *module)
{
    if (cell_global->cell_type == NULL) {
        cell_global->cell_type =
            (PyTypeObject *)PyType_FromModuleAndSpec(module, &cell_spec, NULL);
        cell_global->builtins_name = PyUnicode_InternFromString("__builtins__");
        if (cell_global->cell_type == NULL || cell_global->builtins_name == NULL) {
            return -1;
        }
    }
    return PyModule_AddObjectRef(module, "Cell", (PyObject *)cell_global->cell_type);
}
