/* runner.h - the Runner type behind RunPython (see runner.c). */
#ifndef SP_RUNNER_H
#define SP_RUNNER_H

#include "compat.h"

/* Add the Runner type and DEFAULT_BAN_IMPORTS.  0 / -1. */
int sp_runner_init(PyObject *module);

#endif /* SP_RUNNER_H */
