/* hook.h - the audit hook: event -> rule -> verdict. */
#ifndef SP_HOOK_H
#define SP_HOOK_H

#include "compat.h"

/* Install the process-wide audit hook (first import only). */
int sp_hook_init(PyObject *module);

/* Before the first cell runs: record the code of asyncio.to_thread (the
 * thread it starts for the default executor is not refused), and install
 * the executor guard (threads.c) and the sqlite3 guard (sqlite.c).
 * Idempotent.  Returns 0, or -1 with an exception. */
int sp_hook_before_run(void);

#endif /* SP_HOOK_H */
