/* gate.c - the one predicate (see gate.h). */
#include "gate.h"

int
sp_gate_run(SpRun **run)
{
    int active = sp_context_current(run);
    if (active == 0) {
        active = sp_context_run_of_frames(run);
    }
    return active;
}

int
sp_gate_refuse_inside(const char *what)
{
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    Py_XDECREF(run);
    if (active > 0) {
        PyErr_Format(PyExc_PermissionError,
                     "safepyrun refused to %s: sandboxed code cannot change "
                     "the sandbox", what);
        return -1;
    }
    return active;
}

int
sp_gate_is_cell_code(PyCodeObject *code)
{
    return sp_context_is_cell_code(code);
}
