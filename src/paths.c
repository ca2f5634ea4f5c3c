/* paths.c - STUB, being written. */
#include "paths.h"
PyObject *sp_paths_normalise_dests(PyObject *ok_dests) { return PySequence_Tuple(ok_dests); }
PyObject *sp_paths_resolve(PyObject *path, int dir_fd, int follow) { (void)dir_fd; (void)follow; return PyOS_FSPath(path); }
int sp_paths_check_write(PyObject *path, int dir_fd, int flags, PyObject *dests, PyObject **resolved)
{ (void)path; (void)dir_fd; (void)flags; (void)dests; if (resolved) *resolved = PyOS_FSPath(path); return 0; }
