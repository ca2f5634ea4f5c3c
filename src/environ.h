/* environ.h - the process environment's data, with events (see
 * environ.c). */
#ifndef SP_ENVIRON_H
#define SP_ENVIRON_H

#include "compat.h"

/* Create the type, once per process.  0 ok, -1 error. */
int sp_environ_init(PyObject *module);

/* Put an SpEnviron in front of `posix.environ` (a fresh posix module gets
 * a fresh dict) and of os.environ._data / os.environb._data when they are
 * that dict.  Leaves an environ that is not a dict of exact bytes alone.
 * 0 ok, -1 error. */
int sp_environ_guard(PyObject *posix);

#endif /* SP_ENVIRON_H */
