/* caches.h - process-wide caches of the standard library that a cell must
 * not leave changed (see caches.c). */
#ifndef SP_CACHES_H
#define SP_CACHES_H

#include "compat.h"

/* What was cached when a cell's step began. */
typedef struct {
    int loaded;        /* tempfile was imported */
    PyObject *tempdir; /* owned: tempfile.tempdir then (None if unset) */
} sp_caches_snapshot;

/* Record the caches before a step of a cell.  Never fails: a cache that
 * cannot be read is not restored. */
void sp_caches_take(sp_caches_snapshot *snap);

/* After the step: put back what the step changed, and release the
 * snapshot.  A pending exception survives. */
void sp_caches_restore(sp_caches_snapshot *snap);

#endif /* SP_CACHES_H */
