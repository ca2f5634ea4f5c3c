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

#endif /* SP_BOUNDCALL_H */
