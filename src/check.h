/* check.h - rules applied to a cell's syntax tree before anything runs. */
#ifndef SP_CHECK_H
#define SP_CHECK_H

#include "compat.h"

/* Walk `tree` (an ast.Module from compile(..., PyCF_ONLY_AST)) and refuse:
 *   - importing a module named in `banned` (a tuple of str) or any of its
 *     submodules: `import socket`, `import importlib.util`,
 *     `from ctypes import util`, `from importlib import import_module`;
 *   - calling exec, eval or compile by name;
 *   - def / async def / class when `ban_defs` is true.
 * `filename` names the cell in messages.  Returns 0 if the tree passes;
 * -1 with PermissionError (naming the construct and its line) or another
 * exception (RecursionError on absurd nesting) otherwise. */
int sp_check_tree(PyObject *tree, PyObject *banned, int ban_defs,
                  PyObject *filename);

/* Whether `source` (str) could break a rule of sp_check_tree at all: 0 when
 * it is ASCII (so what the parser sees is exactly what is written) and
 * contains none of the banned names, no `def`/`class` when `ban_defs`, and
 * `exec`, `eval` or `compile` only right after a '.' (attribute calls such
 * as re.compile are not the builtins).  1 otherwise: then the tree must be
 * walked.  A conservative filter: it never answers 0 for source that
 * sp_check_tree would refuse. */
int sp_check_needed(PyObject *source, PyObject *banned, int ban_defs);

#endif /* SP_CHECK_H */
