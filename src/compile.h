/* compile.h - a cell's source to a code object (see compile.c). */
#ifndef SP_COMPILE_H
#define SP_COMPILE_H

#include "compat.h"

/* Capture builtins.compile and the _ast types; add srcfn().  0 / -1. */
int sp_compile_init(PyObject *module);

/* Register `src` in linecache under the next <pyrun_N> name (N cycling
 * 0..9) so tracebacks and inspect.getsource show the cell.  New reference
 * to the name, or NULL. */
PyObject *sp_compile_srcfn(PyObject *src);

/* Compile a cell: type and NUL checks, linecache entry, parse, the
 * syntax-tree rules (when `checks`: `banned` a tuple of module names,
 * `ban_defs`), and the last expression turned into an assignment to
 * sp_compile_result_name().  Sets *has_result.  New reference to the code
 * object, or NULL. */
PyObject *sp_compile_cell(PyObject *source, PyObject *banned, int ban_defs,
                          int checks, int *has_result);

/* The name a cell's last value is stored under (borrowed, interned). */
PyObject *sp_compile_result_name(void);

#endif /* SP_COMPILE_H */
