/* cell.h - the awaitable that runs one cell (see cell.c). */
#ifndef SP_CELL_H
#define SP_CELL_H

#include "context.h"

/* Create the Cell type.  0 / -1. */
int sp_cell_init(PyObject *module);

/* A Cell that will run `source` (any object: checked when awaited) under
 * `run` in the runner's live namespace `ns` (a dict shared by its cells,
 * brought in step with the host namespace `g` first; `synced` records g
 * as it was when last in step; see export.h); `banned` (a tuple) and
 * `ban_defs` are the syntax-tree rules, applied when `checks`; `timeout`
 * is the cell's time limit in seconds from its start (0: none).  Takes its
 * own references.  New reference or NULL. */
PyObject *sp_cell_new(PyObject *g, PyObject *ns, PyObject *synced,
                      SpRun *run, PyObject *source, PyObject *banned,
                      int ban_defs, int checks, double timeout);

#endif /* SP_CELL_H */
