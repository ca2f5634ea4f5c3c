/* guards.h - guards on standard-library natives that raise no audit event.
 *
 * A guard replaces a module attribute (posix.mkfifo, _posixsubprocess.
 * fork_exec, sys.monitoring.set_events, atexit.register...) with a C
 * function that raises an audit event carrying the effect's real
 * arguments and, when the hook lets it through, calls the real function.
 * Registration points that take a callable to be called later wrap it, while
 * a run is active, so that it runs under that run's policy.  See guards.c.
 */
#ifndef SP_GUARDS_H
#define SP_GUARDS_H

#include "compat.h"

/* Install the guards on the modules that are cheap to import (posix,
 * _posixsubprocess, _signal, atexit, _imp, sys.monitoring) and on
 * any other guarded module already imported.  Idempotent: a second import
 * of the engine module does nothing.  0 ok, -1 error. */
int sp_guards_init(PyObject *module);

/* Called by the runner before a cell starts, outside the run's context:
 * guards the pure-Python registration points (weakref.finalize, asyncio's
 * Handle, concurrent.futures' _WorkItem) once their modules are loaded.  A few
 * dict look-ups until everything is guarded, then nothing.  0 ok, -1
 * error. */
int sp_guards_before_run(void);

/* sys.monitoring with the real (unguarded) functions, for the engine's own
 * monitor: a private copy of the module's namespace that no Python code
 * can reach.  Falls back to sys.monitoring itself before the guards are
 * installed.  New reference, or NULL with an exception. */
PyObject *sp_guards_monitoring(void);

#endif /* SP_GUARDS_H */
