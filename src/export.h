/* export.h - names from a cell back to the host (see export.c). */
#ifndef SP_EXPORT_H
#define SP_EXPORT_H

#include "compat.h"

/* Add should_export().  0 / -1. */
int sp_export_init(PyObject *module);

/* 1 if cell name `k` with value `v` goes back to the host namespace `g`
 * (a dict), 0 if not, -1 on error. */
int sp_export_should(PyObject *k, PyObject *v, PyObject *g);

/* Before a cell of a runner: bring the host's changes to `g` (names set or
 * deleted since the namespaces were last in step, as recorded in `synced`)
 * into the runner's live namespace `ns`.  0 / -1. */
int sp_export_sync_in(PyObject *g, PyObject *ns, PyObject *synced);

/* Copy new and changed names from `globals` to `g` by the rule above;
 * then, when `synced` is not NULL, record g's contents in it.  0 / -1. */
int sp_export_names(PyObject *globals, PyObject *g, PyObject *synced);

#endif /* SP_EXPORT_H */
