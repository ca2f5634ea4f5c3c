/* hook.h - the audit hook: event -> rule -> verdict. */
#ifndef SP_HOOK_H
#define SP_HOOK_H

#include "compat.h"

/* Install the process-wide audit hook (first import only) and, where the
 * interpreter raises no event for thread start, the C thread guard. */
int sp_hook_init(PyObject *module);

/* Before the first cell runs: record the code of asyncio.to_thread (the
 * thread it starts for the default executor is not refused), guard
 * ThreadPoolExecutor.submit (work submitted from a run runs in a copy of
 * the run's context), capture and guard the pathlib classes whose paths
 * count as stable, and install the sqlite3 guard.  Idempotent.  Returns 0,
 * or -1 with an exception. */
int sp_hook_before_run(void);

#endif /* SP_HOOK_H */
