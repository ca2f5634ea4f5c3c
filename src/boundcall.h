/* boundcall.h - a callable that runs under its run's policy (see
 * boundcall.c). */
#ifndef SP_BOUNDCALL_H
#define SP_BOUNDCALL_H

#include "context.h"

/* Create the type, once per process.  0 ok, -1 error. */
int sp_boundcall_init(PyObject *module);

/* `fn` bound to `run`: calling the result calls fn with `run` current.
 * A bound call is returned as it is (its own run already governs it).
 * Neither argument is stolen.  New reference, or NULL with an exception. */
PyObject *sp_boundcall_new(SpRun *run, PyObject *fn);

/* `fn` (a step or wakeup of a task a capped cell spawned) charged to
 * `run`'s memory cap while it runs: the task's context holds the run
 * already, only the cap's thread-local account is set around the call.
 * New reference, or NULL with an exception. */
PyObject *sp_boundcall_memcap_new(SpRun *run, PyObject *fn);

#endif /* SP_BOUNDCALL_H */
