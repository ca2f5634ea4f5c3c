/* policy.h - the built-in allow policies, in C.
 *
 * AllowPolicy (a base Python may subclass; abstract __call__),
 * PosAllowPolicy, PathWritePolicy, OpenWritePolicy and LocalWritePolicy are
 * immutable heap types whose checks call the C write check directly: no
 * module attribute, class attribute or instance field a cell could rebind
 * takes part in their decision.
 */
#ifndef SP_POLICY_H
#define SP_POLICY_H

#include "compat.h"

/* Add the policy types to `module` (created once per process). */
int sp_policy_init(PyObject *module);

/* chk_dest: raise PermissionError ("safepyrun refused to write a file:
 * '...' is outside ok_dests [...] (write policy check). Remedy: ...") unless `path` lies inside the ok_dests given by `given`: a list
 * of destinations, None (no checks), or a mapping holding 'ok_dests' (a
 * dict, or any non-sequence mapping such as the read-only view policies
 * receive).  0 ok, -1 error.  Borrows both arguments. */
int sp_policy_chk_dest(PyObject *path, PyObject *given);

/* The read-only view of a run's data that a policy (or the pre_deny hook's
 * DenyInfo.data) receives: a types.MappingProxyType over a fresh shallow
 * copy, so neither the view nor the copy leads back to the run's dict.
 * `data` is a dict or any mapping (borrowed).  New reference, or NULL with
 * an exception. */
PyObject *sp_policy_data_view(PyObject *data);

#endif /* SP_POLICY_H */
