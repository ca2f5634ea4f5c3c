/* threads.h - what a cell may hand to other threads (see threads.c). */
#ifndef SP_THREADS_H
#define SP_THREADS_H

#include "compat.h"

/* 3.11: replace _thread.start_new_thread by the guard that raises the
 * audit event 3.12 raises.  0 / -1. */
int sp_threads_init(PyObject *module);

/* Before the first cell runs: guard ThreadPoolExecutor.submit and make the
 * guarded classes immutable.  Idempotent.  0 / -1. */
int sp_threads_before_run(void);

/* Whether the guarded submit is calling the real one for the running
 * loop's default executor on this thread (a worker it starts is allowed). */
int sp_threads_in_default_submit(void);

#endif /* SP_THREADS_H */
