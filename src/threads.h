/* threads.h - what a cell may hand to other threads (see threads.c). */
#ifndef SP_THREADS_H
#define SP_THREADS_H

#include "context.h"

/* 3.11: replace _thread.start_new_thread by the guard that raises the
 * audit event 3.12 raises.  0 / -1. */
int sp_threads_init(PyObject *module);

/* Before the first cell runs: guard ThreadPoolExecutor.submit and make the
 * guarded classes immutable.  Idempotent.  0 / -1. */
int sp_threads_before_run(void);

/* Whether the guarded submit is calling the real one for the running
 * loop's default executor on this thread (a worker it starts is allowed). */
int sp_threads_in_default_submit(void);

/* A thread start a library's import makes inside `run` (libcache.h):
 * when `function` (the start's first argument) is threading.Thread's own
 * _bootstrap bound to a thread, that thread is adopted: code running in
 * it is governed by `run` (sp_threads_adopted_run).  1 adopted, 0 not
 * adoptable (the start stays refused), -1 error. */
int sp_threads_adopt(SpRun *run, PyObject *function);

/* The run that adopted the current thread: its outermost frame runs
 * Thread._bootstrap for an adopted thread object.  `bottom` is the
 * thread's outermost frame (borrowed).  1 with *run a new reference, 0
 * none, -1 error. */
int sp_threads_adopted_run(PyFrameObject *bottom, SpRun **run);

/* Whether any adopted thread may still be running. */
int sp_threads_any_adopted(void);

#endif /* SP_THREADS_H */
