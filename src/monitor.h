/* monitor.h - the call monitor: runs policies when a gated function starts.
 *
 * A (name, policy) registration gates the call itself: inside a run, the
 * policies decide before the function's body runs (trust.c judges; this
 * file arranges to be told).  And a trusted native callable has no frame
 * for the trust search to find: the monitor records, per thread, the last
 * trusted native that cell code called and from where.  3.12+ uses sys.monitoring PY_START events set
 * on exactly the gated code objects, so no other call pays anything; 3.11
 * installs a C profile function while a cell's steps run.
 */
#ifndef SP_MONITOR_H
#define SP_MONITOR_H

#include "compat.h"

int sp_monitor_init(PyObject *module);

/* Whether a cell's code needs the monitor: a native callable or a gated
 * function is registered (any cell may reach one through an alias).
 * 1 or 0. */
int sp_monitor_cell_wants(PyObject *code);

/* A cell's code was compiled: on 3.12+, while native callables are
 * registered, watch its calls (and those of its nested code) so that a
 * trusted native it calls is known while it runs.  0 ok, -1 error. */
int sp_monitor_watch_cell(PyObject *code);

/* The trusted native callable that `frame` is calling right now (its
 * record matches the frame and its current instruction), or NULL.
 * Borrowed from the monitor's record. */
PyObject *sp_monitor_native_call(PyFrameObject *frame);

/* Bring the monitor in line with the registry (after allow() changed it).
 * Called by the runner before a cell starts, outside the run context.
 * 0 ok, -1 error. */
int sp_monitor_sync(void);

/* Around each step of a cell (outside its run context): on 3.11 install
 * the profile function when `wanted` (sp_monitor_cell_wants) and gated
 * codes or natives exist, and restore the previous one afterwards.  No-ops
 * on 3.12+.  `saved` is caller storage. */
typedef struct {
    int active;
    Py_tracefunc func;
    PyObject *obj; /* owned while active */
} sp_monitor_saved;

int sp_monitor_enter(sp_monitor_saved *saved, int wanted);
void sp_monitor_leave(sp_monitor_saved *saved);

#endif /* SP_MONITOR_H */
