/* libcache.h - a library's first import may create its own caches.
 *
 * The first `import matplotlib` on a machine creates its config and cache
 * directories and writes its font cache; other libraries do the same on
 * their first run.  A cell that imports such a library for the first time
 * would be refused those writes (they lie outside ok_dests), so the import
 * would fail where plain Python succeeds.  This file decides the narrow
 * case in which such a write is the library's own:
 *
 *   - the effect comes from a module body that the import system is
 *     executing, with no cell code in between (a cell's callback called by
 *     the library is still the cell's);
 *   - that module body is exactly the code of a regular file outside
 *     ok_dests: the running code object equals a fresh compile of the file
 *     its co_filename names (so code a cell made, or a loader a cell
 *     poisoned, is not the library's);
 *   - and the effect is one a cache needs: creating a directory (it cannot
 *     destroy data), or a write inside the user's cache directory for that
 *     package ($XDG_CACHE_HOME/<pkg> or ~/.cache/<pkg>), inside a directory
 *     a host environment variable names as a cache or config directory
 *     (MPLCONFIGDIR, NUMBA_CACHE_DIR, ...: cells cannot change the
 *     environment), or inside a temporary directory such an import created
 *     (tempfile.mkdtemp, matplotlib's fallback).
 *
 * A thread such an import starts (matplotlib's "building the font cache"
 * timer) is not refused either: it runs under the run's gate, so what it
 * does is judged as the cell's (threads.h, sp_threads_adopt).
 */
#ifndef SP_LIBCACHE_H
#define SP_LIBCACHE_H

#include "context.h"

int sp_libcache_init(PyObject *module);

/* A write event the run would refuse (its path `resolved`, an absolute
 * str, lies outside ok_dests): 1 when it is a library's first-import cache
 * write as above, 0 when not, -1 with an exception.  `is_mkdir`: the event
 * creates the directory `resolved`. */
int sp_libcache_allows(SpRun *run, PyObject *resolved, int is_mkdir);

/* Whether the code running now is a library's module body being imported
 * (verified as above) with no cell code in between: a thread it starts is
 * adopted into the run (threads.h).  1 / 0 / -1. */
int sp_libcache_in_import(SpRun *run);

#endif /* SP_LIBCACHE_H */
