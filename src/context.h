/* context.h - a run's policy and the context variable that scopes it.
 *
 * The audit hook asks "is a gated run active here?" by reading one
 * ContextVar.  Because it is a context variable, the answer follows asyncio
 * tasks (a task copies the context it was created in) and not threads: a
 * host coroutine running in another task while a cell is suspended sees no
 * run, and neither does a thread the host starts.
 */
#ifndef SP_CONTEXT_H
#define SP_CONTEXT_H

#include "compat.h"
#include "memcap.h"

/* The policy of one cell run.  Immutable after creation except `denials`.
 * Kept alive by the cell that created it and by every context copy that
 * holds it (tasks and callbacks the cell scheduled), so those stay gated
 * under the same policy after the cell returns. */
typedef struct {
    PyObject_HEAD
    PyObject *ok_dests; /* owned: tuple of str, or None (no write checks) */
    PyObject *data;     /* owned: dict handed to policies; holds ok_dests */
    PyObject *denials;  /* owned: list of the PermissionErrors the hook
                           raised in this run, newest last, bounded; the
                           runner unwraps wrapped errors by identity */
    PyObject *pre_deny; /* owned or NULL: host hook called before a refusal */
    sp_memcap_account *mem; /* owned (C memory) or NULL: the memory cap's
                               account (memcap.c); never on a twin */
    int yolo;           /* nonzero: nothing is gated */
    int later;          /* nonzero: the policy twin that gates a cell's code
                           after its run (records no denials: see
                           sp_context_register_codes) */
    PyObject *report;   /* owned or NULL: the run report (report.c) of a
                           run started by Runner.report: its captured
                           output and judged events.  Twins have none. */
} SpRun;

/* Create the SpRun type and the context variable.  Both are process-wide
 * (the audit hook is) and created on the first import only. */
int sp_context_init(PyObject *module);

/* The context variable itself (borrowed; lives for the process). */
PyObject *sp_context_var(void);

/* New run.  `ok_dests` is a normalised tuple or None; `data` a dict (a
 * reference is taken; it is not copied); `pre_deny` a callable or None.
 * Returns a new reference. */
SpRun *sp_context_new_run(PyObject *ok_dests, PyObject *data,
                          PyObject *pre_deny, int yolo);

/* Run `fn(arg)` with no run active in the current context (host hooks such
 * as pre_deny are host code, not sandboxed).  New reference or NULL. */
PyObject *sp_context_call_outside(PyObject *fn, PyObject *arg);

/* The run active in the current context: -1 error, 0 none (or a yolo run),
 * 1 found with *run a new reference.  *run is NULL unless 1. */
int sp_context_current(SpRun **run);

/* The run of the current context whatever its policy (a yolo run too):
 * what the output router (output.c) routes by.  -1 error, 0 none, 1 with
 * *run a new reference.  *run is NULL unless 1. */
int sp_context_current_any(SpRun **run);

/* Make `run` current; returns a new reference to the token, or NULL. */
PyObject *sp_context_enter(SpRun *run);

/* Undo sp_context_enter.  Keeps any pending exception intact.
 * Steals `token`. Returns 0, or -1 with an exception. */
int sp_context_leave(PyObject *token);

/* Reset another context variable with its token, keeping any pending
 * exception.  Steals `token`.  0 ok, -1 error. */
int sp_context_leave_var(PyObject *var, PyObject *token);

/* A copy of `run` that gates a cell's code after its run (`later` set:
 * it records no denials).  New reference or NULL. */
SpRun *sp_context_new_twin(SpRun *run);

/* The run's memory cap account: `cap` bytes, 0 for none.  0 / -1. */
int sp_context_set_memcap(SpRun *run, size_t cap);

/* The bytes the run had counted at its high-water mark (the run report's
 * peak_memory): a new reference to an int, or None when the run has no
 * memory cap (nothing is counted then). */
PyObject *sp_memcap_run_peak(SpRun *run);

/* Remember `exc` (a PermissionError the hook is raising) in `run`. */
int sp_context_record_denial(SpRun *run, PyObject *exc);

/* 1 if `exc` is one of the run's denials, else 0. */
int sp_context_is_denial(SpRun *run, PyObject *exc);

#endif /* SP_CONTEXT_H */
