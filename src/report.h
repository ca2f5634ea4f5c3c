/* report.h - the run report: a run's captured output and judged events
 * (see report.c). */
#ifndef SP_REPORT_H
#define SP_REPORT_H

#include "compat.h"
#include "context.h"

/* Which captured stream. */
#define SP_REPORT_STDOUT 0
#define SP_REPORT_STDERR 1

/* Create the report type (first import only).  0 / -1. */
int sp_report_init(PyObject *module);

/* A new, open report: output captured up to `max_output` characters per
 * stream (-1: no limit), shown on the host's streams too when `echo`.
 * New reference or NULL. */
PyObject *sp_report_new(Py_ssize_t max_output, int echo);

/* The open report of `run`, borrowed, or NULL (no report, or the run has
 * finished: what its tasks write later goes to the host). */
PyObject *sp_report_open_of(SpRun *run);

/* Capture `text` (an exact str) written to stream `which` of `report`.
 * 0 / -1. */
int sp_report_append(PyObject *report, int which, PyObject *text);

/* Whether `report`'s output is also shown on the host's streams. */
int sp_report_echoes(PyObject *report);

/* Start the clock of `report` (the cell's first step). */
void sp_report_start(PyObject *report);

/* Record one event the hook judged in `run`: `event` its name, `args` its
 * arguments (shown by `repr_fn`, which must run no cell code: new str or
 * NULL), `verdict` "allowed" or "denied", `by` (borrowed, may be NULL) the
 * name of the trusted call that allowed it.  Nothing happens for a run
 * without an open report; past the bound only a count grows.  Never fails:
 * a failure to record is forgotten, and a pending exception survives. */
void sp_report_event(SpRun *run, const char *event, PyObject *args,
                     PyObject *(*repr_fn)(PyObject *), const char *verdict,
                     PyObject *by);

/* Close `run`'s report without describing it (the cell was closed or
 * dropped unfinished).  Nothing happens for a run without a report. */
void sp_report_close(SpRun *run);

/* Close `run`'s report and describe the run as a dict: value, error,
 * stdout, stderr, events, events_dropped, elapsed.  `value` and `error`
 * are borrowed (either may be NULL: None).  New reference or NULL. */
PyObject *sp_report_finish(SpRun *run, PyObject *value, PyObject *error);

#endif /* SP_REPORT_H */
