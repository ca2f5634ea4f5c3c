/* registry.h - the allow registry: what the host trusts, held in C.
 *
 * Registrations are (owner, name, policy) entries:
 *   owner  a function, class, module, callable instance, bound method,
 *          native callable, or a 'pkg.*' prefix string;
 *   name   None for the whole owner, else an attribute name of the owner;
 *   policy None (unconditional) or a callable policy(obj, args, kwargs, data).
 * The entries are the source of truth.  From them the registry derives the
 * indexes that the trust search reads: code object -> grants (Python code of
 * every trusted function or method), trusted module namespaces, module-name
 * prefixes, native callables, and modules whose import is trusted.  Entries
 * hold strong references, so a registration survives `del` of host names
 * and an object's identity is never reused while registered.
 *
 * Threading: GIL held.  Changes are refused inside a gated run.
 */
#ifndef SP_REGISTRY_H
#define SP_REGISTRY_H

#include "compat.h"

/* One grant as the trust search sees it: a tuple
 *   (owner, name, policy, instance, is_method, closure)
 * owner/name/policy as registered (name and policy may be None); `instance`
 * is the object a callable-instance or bound-method registration is keyed
 * on (None otherwise): the grant holds only when the frame's first argument
 * is that object; `is_method` says the first argument is `self`, passed to
 * policies as `obj` and left out of `args`; `closure` is the registered
 * function's __closure__ (None without one): functions that share a code
 * object (a decorator's wrapper) differ in their cells, and the grant
 * holds only for the call whose free variables hold what those cells
 * hold. */
enum {
    SP_GRANT_OWNER = 0,
    SP_GRANT_NAME,
    SP_GRANT_POLICY,
    SP_GRANT_INSTANCE,
    SP_GRANT_IS_METHOD,
    SP_GRANT_CLOSURE,
    SP_GRANT_SIZE
};

int sp_registry_init(PyObject *module);

/* Add or remove one entry.  0 ok, -1 error (PermissionError inside a run,
 * TypeError/AttributeError for an owner/name that cannot be trusted). */
int sp_registry_add(PyObject *owner, PyObject *name, PyObject *policy);
int sp_registry_remove(PyObject *owner, PyObject *name, PyObject *policy);

/* Modules (and their submodules) whose import-time code is trusted. */
int sp_registry_allow_import(PyObject *modname);

/* Grants for code running in `code`: a new reference to a tuple of grant
 * tuples, or NULL (no exception) when the code is not trusted. */
PyObject *sp_registry_code_grants(PyObject *code);

/* Grants for a native callable (builtin function or method descriptor)
 * being called: new reference to a tuple, or NULL when not registered.
 * A bound builtin method is looked up by itself and, failing that, as the
 * method descriptor of its type (registered under __objclass__). */
PyObject *sp_registry_native_grants(PyObject *callable);

/* Whether `callable` is a registered native (sp_registry_native_grants
 * finds it).  No exception is left set. */
int sp_registry_native_trusted(PyObject *callable);

/* sp_registry_native_trusted, also saying (*by_method = 1) when the trust
 * comes from the method descriptor behind a bound builtin method, i.e.
 * depends only on type(self), the method's definition and the registry
 * (monitor.c caches it on that basis). */
int sp_registry_native_trusted_by(PyObject *callable, int *by_method);

/* Whether any native callable is registered (the monitor then watches
 * cell code's calls). */
int sp_registry_has_natives(void);

/* Whether a frame with these globals runs trusted module code: its module
 * is fully trusted, matches a 'pkg.*' prefix, or (`module_level` set) is
 * being imported under an import allowance.  1 yes, 0 no. */
int sp_registry_globals_trusted(PyObject *globals, int module_level);

/* Codes whose calls are gated by a (name, policy) registration: a borrowed
 * dict {id(code): code}; changes with every registration. */
PyObject *sp_registry_gated_codes(void);

/* The registered natives: a borrowed dict {id(obj): (obj, grants)}, or
 * NULL before the first registration; replaced (not changed) when the
 * registry version moves.  For monitor.c's pre-filter. */
PyObject *sp_registry_natives(void);

/* A monotonic counter bumped by every change (monitor.c resyncs on it). */
unsigned long sp_registry_version(void);

#endif /* SP_REGISTRY_H */
