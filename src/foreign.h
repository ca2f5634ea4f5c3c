/* foreign.h - ctypes inside a run: foreign calls and raw objects
 * (see foreign.c). */
#ifndef SP_FOREIGN_H
#define SP_FOREIGN_H

#include "compat.h"

/* Redirect _ctypes' call and construction slots (once).  `ctypes_module`
 * is the _ctypes module.  0 / -1. */
int sp_foreign_install(PyObject *ctypes_module);

/* Before a cell runs: install when _ctypes is loaded already.  0 / -1. */
int sp_foreign_before_run(void);

#endif /* SP_FOREIGN_H */
