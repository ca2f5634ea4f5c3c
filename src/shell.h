/* shell.h - the Python shell's names, pinned: what the host looks up
 * later cannot be rebound by a cell.
 *
 * The host reaches the engine through Python names: safepyrun.RunPython,
 * safepyrun.allow, sys.modules['safepyrun'], the helpers those functions
 * look up as module globals, the methods of the shell's classes.  A cell
 * can rebind every one of them (vars(module)[name] = ..., a module's
 * __class__, a function's __defaults__ or closure cells, a class dict
 * reached through gc).  The snapshot records them; verify puts back
 * whatever changed and reports it.
 */
#ifndef SP_SHELL_H
#define SP_SHELL_H

#include "compat.h"

/* Add the shell_* functions to `module`. */
int sp_shell_init(PyObject *module);

/* Record the shell's state: every module named safepyrun or safepyrun.*
 * in sys.modules (the sys.modules entry, the module's class and every
 * entry of its dict), sys.modules itself, and for each class of the shell
 * found there (its __module__ is safepyrun or safepyrun.*) its dict and
 * the state of its functions (defaults, keyword defaults, closure cells).
 * The shell's Python classes are made immutable (Py_TPFLAGS_IMMUTABLETYPE,
 * as PyType_Freeze does from 3.14): assigning their attributes, their
 * __bases__ or an instance's __class__ raises TypeError.
 * Replaces the previous snapshot.  Refused inside a run.  0 ok, -1 error. */
int sp_shell_snapshot(void);

/* Compare the shell's state with the snapshot (and the extra pins of
 * shell_pin).  Everything that changed is put back; if anything had
 * changed, returns -1 with PermissionError ("safepyrun refused to let
 * sandboxed code change ...: sandboxed code cannot change the sandbox"),
 * else 0.  -1 with another exception if restoring failed.  No snapshot
 * yet: 0.  Call it where a cell step leaves its run. */
int sp_shell_verify(void);

#endif /* SP_SHELL_H */
