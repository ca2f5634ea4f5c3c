/* watchdog.h - time limits and loop progress while a cell runs (see
 * watchdog.c).
 *
 * A cell (cell.c) owns one sp_wd_limit: its deadline and why it is being
 * stopped.  Each synchronous step of the cell is an sp_wd_step, registered
 * here for as long as the step runs.  A watchdog thread watches both and,
 * through Py_AddPendingCall (main thread) or PyThreadState_SetAsyncExc
 * (other threads), raises the limit's error inside the running cell, lets
 * the host's event loop make progress while a step runs long, and notices
 * that the cell's task was cancelled meanwhile.
 */
#ifndef SP_WATCHDOG_H
#define SP_WATCHDOG_H

#include "compat.h"

#include <stdint.h>

/* Why a limit is stopping its cell. */
enum {
    SP_WD_RUNNING = 0,
    SP_WD_TIMEOUT = 1, /* past its deadline: TimeoutError */
    SP_WD_CANCEL = 2,  /* its task was cancelled during a step */
};

/* One cell's limit.  Embedded in the Cell (plain C fields: the watchdog
 * thread reads them under its lock, never touching a Python object).
 * Written with the GIL held, under the watchdog's lock once armed. */
typedef struct sp_wd_limit {
    double timeout;      /* seconds, 0: none */
    int64_t deadline;    /* monotonic ns, 0: none */
    int64_t grace;       /* ns a stopping cell gets before the re-raise */
    int64_t reraise_at;  /* monotonic ns: from then on, raise again */
    const void *run;     /* compared only: the SpRun of the cell */
    const void *data;    /* compared only: that run's data (its twins') */
    PyObject *task;      /* borrowed (the cell owns it): the asyncio task
                            awaiting the cell, or NULL */
    long cancel_base;    /* task.cancelling() when the cell started */
    int stopping;        /* SP_WD_*; only ever goes up from RUNNING */
    /* Called by the watchdog thread, with the GIL, when the limit is due
     * and no step of its cell runs: the cell awaits, and its loop's timer
     * did not stop it (a cell can cancel the loop's handles).  Wakes the
     * cell's loop; errors are the callee's to clear. */
    void (*wake)(struct sp_wd_limit *l);
    int64_t next_wake;   /* monotonic ns: not woken again before */
    int armed;           /* linked in the watchdog's list of deadlines */
    struct sp_wd_limit *next, *prev;
} sp_wd_limit;

/* One synchronous step of a cell, on the C stack of the code running it. */
typedef struct sp_wd_step {
    sp_wd_limit *limit;   /* borrowed: the cell's */
    unsigned long thread; /* PyThread_get_thread_ident() of the step */
    int64_t last_service; /* monotonic ns: step start, or the last pass */
    int in_pass;          /* the step is paused for a loop pass */
    int registered;
    int traced;           /* the stop tracer is set (main thread) */
    Py_tracefunc saved_trace; /* the thread's trace function before it */
    PyObject *saved_traceobj; /* owned while traced: its object */
    struct sp_wd_step *next, *prev;
} sp_wd_step;

int sp_watchdog_init(PyObject *module);

/* Monotonic clock in ns (vDSO: no system call). */
int64_t sp_wd_now(void);

/* Set `l` for a cell of `run` with `timeout` seconds (0: none), starting
 * now, and arm it (the watchdog watches its deadline until
 * sp_wd_disarm).  0 / -1 with an exception. */
int sp_wd_arm(sp_wd_limit *l, const void *run, const void *data,
              double timeout);
void sp_wd_disarm(sp_wd_limit *l);

/* Record that a step of the cell limited by `l` runs now on this thread.
 * Registered only when there is something to watch (a deadline or a task);
 * sp_wd_step_end must follow.  0 / -1 with an exception. */
int sp_wd_step_begin(sp_wd_step *s, sp_wd_limit *l);
void sp_wd_step_end(sp_wd_step *s);

/* If `l`'s deadline has passed and it is not stopping yet, start stopping
 * it (SP_WD_TIMEOUT).  Returns l->stopping. */
int sp_wd_check(sp_wd_limit *l, int64_t now);

/* The error a stopping limit raises (TimeoutError with the limit in its
 * message, or asyncio.CancelledError).  New reference or NULL. */
PyObject *sp_wd_error(sp_wd_limit *l);

/* The cell's task `task` (the current one) will be watched: record its
 * cancel requests so far in `l`, and set *loop to the running loop (new
 * reference, NULL when none).  1 watched, 0 not (no Task API), -1 error. */
int sp_wd_task_begin(sp_wd_limit *l, PyObject *task, PyObject **loop);

/* loop.call_at for monotonic time `when` (ns), calling `cb`.  The handle
 * (new reference) or NULL. */
PyObject *sp_wd_call_at(PyObject *loop, int64_t when, PyObject *cb);

/* loop.call_soon_threadsafe(cb): the handle (new reference) or NULL. */
PyObject *sp_wd_call_soon_threadsafe(PyObject *loop, PyObject *cb);

/* Whether `handle` was cancelled: 1 / 0 / -1. */
int sp_wd_handle_cancelled(PyObject *handle);

/* Cancel `handle`; errors are cleared (best effort, used on the way out). */
void sp_wd_cancel_handle(PyObject *handle);

/* Cancel the future a cell awaits (for an asyncio.Future, with the C
 * method, whatever a subclass defines).  1 cancelled, 0 not, -1 error. */
int sp_wd_cancel_future(PyObject *fut);

#endif /* SP_WATCHDOG_H */
