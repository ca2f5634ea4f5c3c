/* export.h - names from a cell back to the host (see export.c). */
#ifndef SP_EXPORT_H
#define SP_EXPORT_H

#include "compat.h"

/* Add should_export().  0 / -1. */
int sp_export_init(PyObject *module);

/* 1 if cell name `k` with value `v` goes back to the host namespace `g`
 * (a dict), 0 if not, -1 on error. */
int sp_export_should(PyObject *k, PyObject *v, PyObject *g);

/* Copy new and changed names from `globals` to `g` by the rule above.
 * 0 / -1. */
int sp_export_names(PyObject *globals, PyObject *g);

#endif /* SP_EXPORT_H */
