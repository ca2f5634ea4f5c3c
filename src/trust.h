/* trust.h - the trusted-call search, policies, and the host's hooks on
 * refusals (pre_deny, set_data, track_call). */
#ifndef SP_TRUST_H
#define SP_TRUST_H

#include "compat.h"
#include "context.h"

int sp_trust_init(PyObject *module);

/* Would-be refusal of `event` in `run`: is a trusted call active?
 * Searches Python frames from the event outward (stopping at the first
 * frame of cell code) and then the calls recorded by track_call.  A grant
 * with policies runs them with the call's real arguments.
 * Returns 1 trusted, 0 not trusted, -1 error.  On 0, *refusals is a new
 * reference to a list of the policies' refusal messages (maybe empty);
 * otherwise NULL. */
int sp_trust_search(SpRun *run, PyObject **refusals);

/* sp_trust_search that also names the trusted call: on 1, *by is a new
 * reference to "module.qualname" (or NULL when no name could be made);
 * otherwise NULL. */
int sp_trust_search_by(SpRun *run, PyObject **refusals, PyObject **by);

/* The host's pre_deny hook for a would-be refusal of `event` (`args`, its
 * arguments; `what`, what would be refused, e.g. "open a file for
 * writing"): 1 allow, 0 refuse, -1 error.  Without a hook, 0. */
int sp_trust_pre_deny(SpRun *run, const char *event, PyObject *args,
                      const char *what);

/* Call gate: `frame` starts running `code`, which has (name, policy)
 * registrations.  Inside a gated run the policies decide before the body
 * runs: 0 allowed, -1 with PermissionError (or a policy's own error). */
int sp_trust_gate_call(PyFrameObject *frame, PyObject *code);

/* The data policies receive by default (set_data), merged into each run's
 * data.  Borrowed dict. */
PyObject *sp_trust_default_data(void);

#endif /* SP_TRUST_H */
