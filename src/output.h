/* output.h - the stream router that captures a run's output (see
 * output.c). */
#ifndef SP_OUTPUT_H
#define SP_OUTPUT_H

#include "compat.h"

/* Create the router type (first import only).  0 / -1. */
int sp_output_init(PyObject *module);

/* What a cell step that captures output holds: the routers installed as
 * sys.stdout/sys.stderr when the step began (owned for the step), and the
 * streams the cell itself set there (owned across steps: a cell's
 * contextlib.redirect_stdout lasts for its own steps, never the host's). */
typedef struct {
    PyObject *router[2]; /* owned during a step, else NULL */
    PyObject *own[2];    /* owned or NULL */
} sp_output_streams;

/* Before a step: make sys.stdout and sys.stderr routers (wrapping whatever
 * the host has there; logging handlers holding that stream are pointed at
 * the router), then put back the cell's own streams, if any.  0 / -1. */
int sp_output_enter(sp_output_streams *s);

/* After a step: a stream the cell set is remembered as its own and the
 * router put back, so the host and other runs never write to it.  A
 * pending exception survives.  0 / -1. */
int sp_output_leave(sp_output_streams *s);

/* Drop what `s` holds (the cell is cleared). */
void sp_output_clear(sp_output_streams *s);

#endif /* SP_OUTPUT_H */
