/* gate.h - the one predicate: is a run governing the code running now?
 *
 * Every decision that depends on "are we inside a sandboxed run" asks
 * here: the audit hook, the registry, set_data and the defaults, the module
 * guards, Runner construction, nested runs, the call gate, the native
 * monitor and the stdlib guards.  The answer is never taken from a context
 * variable alone (a cell can run code in a fresh or forged context): a
 * frame on the Python stack running cell code, recognised by the identity
 * of its code object, is proof of a run too.
 */
#ifndef SP_GATE_H
#define SP_GATE_H

#include "context.h"

/* The run governing the code running now: the run held by the current
 * context (validated: the engine's own type, not a yolo run), else the
 * run of the innermost frame running cell code.  -1 error, 0 none, 1
 * found with *run a new reference (NULL unless 1). */
int sp_gate_run(SpRun **run);

/* Refuse `what` (e.g. "change the allow registry") when a run governs the
 * code running now: -1 with PermissionError (or another error), 0 when
 * outside any run. */
int sp_gate_refuse_inside(const char *what);

/* Whether `code` is cell code: compiled by the runner, or created while a
 * run was active (exec/eval/compile, FunctionType, code.replace).  By
 * object identity only.  No exception is set. */
int sp_gate_is_cell_code(PyCodeObject *code);

#endif /* SP_GATE_H */
