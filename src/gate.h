/* gate.h - the one predicate: is a run governing the code running now?
 *
 * Every decision that depends on "are we inside a sandboxed run" asks
 * here: the audit hook, the registry, set_data and the defaults, the module
 * guards, Runner construction, nested runs, the call gate, the native
 * monitor and the stdlib guards.  The answer is never taken from a context
 * variable alone (a cell can run code in a fresh, reset or forged context):
 * a frame on the Python stack running cell code, recognised by the identity
 * of its code object, is proof of a run too.
 *
 * Also here, because the predicate needs them: the cell-code index (which
 * code objects are cell code, and under which run's policy they stay gated)
 * and the one frame walk every part of the engine uses.
 */
#ifndef SP_GATE_H
#define SP_GATE_H

#include "context.h"

int sp_gate_init(PyObject *module);

/* ---- the predicate ------------------------------------------------------ */

/* The run governing the code running now: the run held by the current
 * context (validated: the engine's own type, not a yolo run), else the
 * policy of the innermost frame running cell code.  -1 error, 0 none, 1
 * found with *run a new reference (NULL unless 1). */
int sp_gate_run(SpRun **run);

/* Refuse `what` (e.g. "change the allow registry") when a run governs the
 * code running now: -1 with PermissionError (or another error), 0 when
 * outside any run. */
int sp_gate_refuse_inside(const char *what);

/* ---- cell code ------------------------------------------------------------ */

/* Whether `code` is cell code: compiled by the runner, or run by
 * exec/eval or wrapped by FunctionType while a run was active.  By object
 * identity only: one hash probe, no Python-level work, no exception. */
int sp_gate_is_cell_code(PyCodeObject *code);

/* What a class would run for its attribute `name`, found along the MRO by
 * reading the class dictionaries (running nothing): */
typedef enum {
    SP_METHOD_HOST = 0,  /* absent, a host function, or a C type's slot */
    SP_METHOD_CELL,      /* a function whose code is cell code */
    SP_METHOD_OTHER,     /* another callable stored in a Python class (a
                            functools.partial, a bound native): it may answer
                            differently on each call */
    SP_METHOD_UNKNOWN,   /* the dictionaries could not be read */
} sp_method_kind;

sp_method_kind sp_gate_method_kind(PyTypeObject *tp, const char *name);

/* Record `code` and every code object nested in its constants as cell
 * code of `run`: they stay gated under its policy when they run later,
 * outside any run.  A code object already recorded keeps its first run.
 * Entries go away with the code objects.  0 ok, -1 error. */
int sp_gate_register_codes(PyObject *code, SpRun *run);

/* Whether the innermost frame is the import system executing a module's
 * code (its exec is not a cell creating code).  By code identity. */
int sp_gate_exec_is_import(void);

/* The module body the import system is executing, if the code running now
 * was reached from one with no cell code in between: walks outwards and
 * stops at the first cell frame.  1 with *globals and *code (new
 * references: that frame's globals, the module's namespace, and its code),
 * 0 none, -1 error. */
int sp_gate_import_body(PyObject **globals, PyCodeObject **code);

/* ---- the engine's own calls ------------------------------------------------- */

/* Around a call the engine itself makes from inside a run that raises an
 * audit event (gc.get_referrers while installing a guard): events raised
 * on this thread in between are the engine's and are not judged.  No
 * Python code of a cell may run in between.  Nest. */
void sp_gate_engine_begin(void);
void sp_gate_engine_end(void);

/* Whether the engine's own call is in progress on this thread. */
int sp_gate_in_engine(void);

/* ---- host calls from inside a run ------------------------------------------ */

/* Call `fn(arg)` as host code: no run in the context, and frame walks stop
 * at the frame that is innermost now, so the cell frames below do not make
 * the host's callable (pre_deny) gated.  New reference or NULL. */
PyObject *sp_gate_call_as_host(PyObject *fn, PyObject *arg);

/* ---- the frame walk -------------------------------------------------------- */

/* Walks the current thread's Python frames from the innermost outwards,
 * stopping at a host-call barrier (sp_gate_call_as_host).
 *
 *     sp_walk w;
 *     sp_walk_start(&w);
 *     PyFrameObject *f;
 *     while ((f = sp_walk_next(&w)) != NULL) { ... w.code ... }
 *     sp_walk_stop(&w);            (always; then check PyErr_Occurred())
 *
 * `frame` and `code` are borrowed from the walk until the next step. */
typedef struct {
    PyFrameObject *frame; /* owned: the frame of this step, or NULL */
    PyFrameObject *next;  /* owned: the next frame out, or NULL */
    PyCodeObject *code;   /* owned: frame's code, or NULL */
    PyFrameObject *stop;  /* borrowed, compared only: the barrier */
    int depth;            /* frames returned so far */
} sp_walk;

void sp_walk_start(sp_walk *w);
PyFrameObject *sp_walk_next(sp_walk *w);
void sp_walk_stop(sp_walk *w);

#endif /* SP_GATE_H */
