/* runner.h - compile a cell, run it under its run context, export names. */
#ifndef SP_RUNNER_H
#define SP_RUNNER_H

#include "compat.h"

/* Add the Runner and Cell types and the srcfn/should_export functions. */
int sp_runner_init(PyObject *module);

#endif /* SP_RUNNER_H */
