/* registry.c - the allow registry.
 *
 * What it owns: the list of registrations and the indexes derived from it
 * (see registry.h).  Every change rebuilds the indexes from the list:
 * registrations are rare and a rebuild is a few dict operations per entry,
 * while lookups, made by the trust search on every would-be refusal, stay
 * plain dict reads keyed by object identity.
 *
 * Identity, not names: code objects, module namespaces and callables are
 * keyed by id() and the index keeps a strong reference to each, so an id is
 * never reused while it is a key.  A cell cannot forge a registration by
 * naming something (`__name__`, `co_qualname`): only 'pkg.*' prefixes match
 * by module name, and the trust search never trusts a frame running cell
 * code, whatever its globals say.
 *
 * Threading: GIL held.  Changes are refused while a gated run is active in
 * the calling context, so sandboxed code cannot widen trust.
 */
#include "registry.h"
#include "state.h"

#include "gate.h"

#include "context.h"
#include "gate.h"

/* This file's part of the engine state (state.h). */
static struct sp_registry_state *const registry = &sp_state.registry;

/* Refuse a change from sandboxed code.  0 ok, -1 PermissionError. */
static int
registry_check_outside_run(const char *what)
{
    return sp_gate_refuse_inside(what) < 0 ? -1 : 0;
}

/* ---- building the indexes -------------------------------------------- */

/* Append `grant` to the list stored under id(key) in `index` (creating
 * (key, [grants]) on first use; lists become tuples after the rebuild). */
static int
registry_index_add(PyObject *index, PyObject *key, PyObject *grant)
{
    PyObject *id = PyLong_FromVoidPtr(key);
    if (id == NULL) {
        return -1;
    }
    PyObject *slot = NULL;
    int rc = -1;
    int found = sp_dict_get_ref(index, id, &slot);
    if (found < 0) {
        goto done;
    }
    if (!found) {
        PyObject *list = PyList_New(0);
        slot = list == NULL ? NULL : PyTuple_Pack(2, key, list);
        Py_XDECREF(list);
        if (slot == NULL || PyDict_SetItem(index, id, slot) < 0) {
            goto done;
        }
    }
    rc = PyList_Append(PyTuple_GET_ITEM(slot, 1), grant);
done:
    Py_XDECREF(slot);
    Py_DECREF(id);
    return rc;
}

/* Turn the grant lists of an index into tuples. */
static int
registry_index_freeze(PyObject *index)
{
    PyObject *key, *slot;
    Py_ssize_t pos = 0;
    while (PyDict_Next(index, &pos, &key, &slot)) {
        PyObject *frozen = PyList_AsTuple(PyTuple_GET_ITEM(slot, 1));
        if (frozen == NULL) {
            return -1;
        }
        PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(slot, 0), frozen);
        Py_DECREF(frozen);
        if (pair == NULL || PyDict_SetItem(index, key, pair) < 0) {
            Py_XDECREF(pair);
            return -1;
        }
        Py_DECREF(pair);
    }
    return 0;
}

/* Whether a function is a method of a class (its first argument is self):
 * its qualified name has a class part before the last dot, not
 * `<locals>` ("C.m" is a method, "f.<locals>.g" a nested function). */
static int
registry_function_is_method(PyObject *fn)
{
    PyObject *qualname = ((PyFunctionObject *)fn)->func_qualname;
    if (qualname == NULL || !PyUnicode_Check(qualname)) {
        return 0;
    }
    Py_ssize_t dot = PyUnicode_FindChar(qualname, '.', 0,
                                        PyUnicode_GET_LENGTH(qualname), -1);
    if (dot < 0) {
        return 0;
    }
    return PyUnicode_Tailmatch(qualname, registry->locals_marker, 0, dot, 1) != 1;
}

static int
registry_is_native(PyObject *obj)
{
    return PyCFunction_Check(obj) ||
           Py_IS_TYPE(obj, &PyMethodDescr_Type) ||
           Py_IS_TYPE(obj, &PyWrapperDescr_Type) ||
           Py_IS_TYPE(obj, &PyClassMethodDescr_Type);
}

/* Index one trusted value (an attribute of an owner, or the owner itself).
 * Functions and their wrappers go to `codes`; native callables to
 * `natives`.  `strict`: raise TypeError for a value that is neither. */
static int
registry_index_value(PyObject *value, PyObject *owner, PyObject *name,
                     PyObject *policy, PyObject *instance, int is_method,
                     int strict)
{
    PyObject *inner = NULL, *grant = NULL;
    int rc = -1;
    if (PyFunction_Check(value)) {
        /* A function with a closure is told apart from the other
         * functions sharing its code (a decorator's wrapper) by its
         * cells. */
        PyObject *closure = PyFunction_GET_CLOSURE(value);
        grant = Py_BuildValue("(OOOOOO)", owner, name, policy, instance,
                              is_method ? Py_True : Py_False,
                              closure != NULL ? closure : Py_None);
        if (grant == NULL) {
            goto done;
        }
        PyObject *code = PyFunction_GET_CODE(value);
        if (registry_index_add(registry->codes, code, grant) < 0) {
            goto done;
        }
        if (policy != Py_None && name != Py_None) {
            PyObject *id = PyLong_FromVoidPtr(code);
            if (id == NULL || PyDict_SetItem(registry->gated, id, code) < 0) {
                Py_XDECREF(id);
                goto done;
            }
            Py_DECREF(id);
        }
        rc = 0;
        goto done;
    }
    if (Py_IS_TYPE(value, &PyStaticMethod_Type) ||
        Py_IS_TYPE(value, &PyClassMethod_Type)) {
        inner = PyObject_GetAttrString(value, "__func__");
        if (inner == NULL) {
            goto done;
        }
        rc = registry_index_value(inner, owner, name, policy, instance,
                                  Py_IS_TYPE(value, &PyClassMethod_Type),
                                  strict);
        goto done;
    }
    if (Py_IS_TYPE(value, &PyProperty_Type)) {
        static const char *const parts[] = {"fget", "fset", "fdel", NULL};
        for (int i = 0; parts[i] != NULL; i++) {
            PyObject *fn = PyObject_GetAttrString(value, parts[i]);
            if (fn == NULL) {
                goto done;
            }
            int r = fn == Py_None ? 0
                                  : registry_index_value(fn, owner, name, policy,
                                                         instance, 1, 0);
            Py_DECREF(fn);
            if (r < 0) {
                goto done;
            }
        }
        rc = 0;
        goto done;
    }
    if (PyMethod_Check(value)) {
        /* A bound method: trusted on that instance only. */
        rc = registry_index_value(PyMethod_GET_FUNCTION(value), owner, name,
                                  policy, PyMethod_GET_SELF(value), 1, strict);
        goto done;
    }
    if (registry_is_native(value)) {
        if (policy != Py_None) {
            PyErr_Format(PyExc_TypeError,
                         "allow(): %R is a native callable: its arguments are "
                         "not visible to a policy; trust it without one, or "
                         "trust a Python function that wraps it",
                         value);
            goto done;
        }
        grant = Py_BuildValue("(OOOOOO)", owner, name, policy, instance,
                              Py_False, Py_None);
        rc = grant == NULL ? -1
                           : registry_index_add(registry->natives, value, grant);
        goto done;
    }
    if (strict) {
        PyErr_Format(PyExc_TypeError,
                     "allow() cannot trust %R: not a function, method, class, "
                     "module or callable instance",
                     value);
        goto done;
    }
    rc = 0; /* a data attribute of a fully trusted class: nothing to run */
done:
    Py_XDECREF(inner);
    Py_XDECREF(grant);
    return rc;
}

/* Find `name` in a class's MRO dictionaries without running descriptors:
 * the trusted thing is the function stored there.  New reference or NULL
 * with AttributeError. */
static PyObject *
registry_class_attr(PyObject *cls, PyObject *name)
{
    PyObject *mro = ((PyTypeObject *)cls)->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *dict = sp_type_dict((PyTypeObject *)PyTuple_GET_ITEM(mro, i));
        PyObject *value = NULL;
        int found = dict == NULL ? 0 : sp_dict_get_ref(dict, name, &value);
        Py_XDECREF(dict);
        if (found != 0) {
            return value;
        }
    }
    PyErr_Format(PyExc_AttributeError, "allow(): %R has no attribute %R", cls,
                 name);
    return NULL;
}

/* Index every callable defined in a class's own namespace. */
static int
registry_index_class(PyObject *cls, PyObject *policy)
{
    /* A snapshot of the items: indexing may run code that changes the
     * class namespace. */
    PyObject *dict = sp_type_dict((PyTypeObject *)cls);
    PyObject *items = dict == NULL ? NULL : PyDict_Values(dict);
    Py_XDECREF(dict);
    if (items == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && rc == 0; i++) {
        rc = registry_index_value(PyList_GET_ITEM(items, i), cls, Py_None,
                                  policy, Py_None, 1, 0);
    }
    Py_DECREF(items);
    return rc < 0 ? -1 : 0;
}

/* Index one registration. */
static int
registry_index_entry(PyObject *owner, PyObject *name, PyObject *policy)
{
    if (PyUnicode_Check(owner)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(owner);
        if (name != Py_None || n < 3 || PyUnicode_READ_CHAR(owner, n - 1) != '*' ||
            PyUnicode_READ_CHAR(owner, n - 2) != '.') {
            PyErr_Format(PyExc_TypeError,
                         "allow(): a string owner must be a 'package.*' prefix "
                         "with '...' as its value, not %R",
                         owner);
            return -1;
        }
        return 0; /* prefixes are collected by registry_rebuild */
    }
    if (name == Py_None) {
        if (PyModule_Check(owner)) {
            PyObject *dict = PyModule_GetDict(owner); /* borrowed */
            PyObject *id = PyLong_FromVoidPtr(dict);
            int rc = id == NULL ? -1 : PyDict_SetItem(registry->modules, id, dict);
            Py_XDECREF(id);
            return rc;
        }
        if (PyType_Check(owner)) {
            return registry_index_class(owner, policy);
        }
        if (PyFunction_Check(owner) || PyMethod_Check(owner)) {
            /* The callable itself is named: its grant is as specific as a
             * (name, policy) entry, so a policy also gates its calls and
             * takes precedence over a blanket grant of its class. */
            PyObject *fn = PyMethod_Check(owner) ? PyMethod_GET_FUNCTION(owner)
                                                 : owner;
            int is_fn = PyFunction_Check(fn);
            PyObject *fname = is_fn ? ((PyFunctionObject *)fn)->func_name : Py_None;
            return registry_index_value(owner, owner, fname, policy, Py_None,
                                        is_fn && registry_function_is_method(fn),
                                        1);
        }
        if (registry_is_native(owner)) {
            return registry_index_value(owner, owner, Py_None, policy, Py_None,
                                        0, 1);
        }
        /* A callable instance: its type's __call__, on this instance. */
        PyObject *call = NULL;
        if (PyCallable_Check(owner)) {
            PyObject *call_name = PyUnicode_FromString("__call__");
            call = call_name == NULL
                ? NULL : registry_class_attr((PyObject *)Py_TYPE(owner), call_name);
            Py_XDECREF(call_name);
            if (call == NULL) {
                return -1;
            }
        }
        if (call == NULL || !PyFunction_Check(call)) {
            Py_XDECREF(call);
            PyErr_Format(PyExc_TypeError,
                         "allow() cannot trust %R: not a function, method, "
                         "class, module or callable instance",
                         owner);
            return -1;
        }
        int rc = registry_index_value(call, owner, Py_None, policy, owner, 1, 1);
        Py_DECREF(call);
        return rc;
    }
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "allow(): names must be str, not %.200s", SP_TYPE_NAME(name));
        return -1;
    }
    PyObject *value;
    PyObject *instance = Py_None;
    int is_method = 0;
    if (PyType_Check(owner)) {
        value = registry_class_attr(owner, name);
        is_method = 1;
    }
    else if (PyModule_Check(owner)) {
        value = PyObject_GetAttr(owner, name);
    }
    else {
        value = registry_class_attr((PyObject *)Py_TYPE(owner), name);
        instance = owner;
        is_method = 1;
    }
    if (value == NULL) {
        return -1;
    }
    int rc = registry_index_value(value, owner, name, policy, instance,
                                  is_method, 1);
    Py_DECREF(value);
    return rc;
}

/* Rebuild every index from the entries.  On failure the old indexes stay
 * in place and -1 is returned. */
static int
registry_rebuild(PyObject *entries)
{
    PyObject *old_codes = registry->codes, *old_natives = registry->natives;
    PyObject *old_modules = registry->modules, *old_gated = registry->gated;
    PyObject *prefixes = NULL;
    registry->codes = PyDict_New();
    registry->natives = PyDict_New();
    registry->modules = PyDict_New();
    registry->gated = PyDict_New();
    prefixes = PyList_New(0);
    if (registry->codes == NULL || registry->natives == NULL ||
        registry->modules == NULL || registry->gated == NULL || prefixes == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        PyObject *owner = PyTuple_GET_ITEM(e, 0);
        if (registry_index_entry(owner, PyTuple_GET_ITEM(e, 1),
                                 PyTuple_GET_ITEM(e, 2)) < 0) {
            goto error;
        }
        if (PyUnicode_Check(owner)) {
            PyObject *base = PyUnicode_Substring(owner, 0,
                                                 PyUnicode_GET_LENGTH(owner) - 2);
            if (base == NULL || PyList_Append(prefixes, base) < 0) {
                Py_XDECREF(base);
                goto error;
            }
            Py_DECREF(base);
        }
    }
    if (registry_index_freeze(registry->codes) < 0 ||
        registry_index_freeze(registry->natives) < 0) {
        goto error;
    }
    Py_XSETREF(registry->prefixes, PyList_AsTuple(prefixes));
    if (registry->prefixes == NULL) {
        goto error;
    }
    Py_DECREF(prefixes);
    Py_XDECREF(old_codes);
    Py_XDECREF(old_natives);
    Py_XDECREF(old_modules);
    Py_XDECREF(old_gated);
    registry->version++;
    return 0;
error:
    Py_XDECREF(prefixes);
    Py_XSETREF(registry->codes, old_codes);
    Py_XSETREF(registry->natives, old_natives);
    Py_XSETREF(registry->modules, old_modules);
    Py_XSETREF(registry->gated, old_gated);
    if (registry->prefixes == NULL) {
        registry->prefixes = PyTuple_New(0);
    }
    return -1;
}

/* ---- the interface --------------------------------------------------- */

/* Index of an entry equal to (owner, name, policy) by identity of owner
 * and policy and equality of name, or -1 (no exception) if none. */
static Py_ssize_t
registry_find(PyObject *owner, PyObject *name, PyObject *policy)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(registry->entries); i++) {
        PyObject *e = PyList_GET_ITEM(registry->entries, i);
        PyObject *ename = PyTuple_GET_ITEM(e, 1);
        if (PyTuple_GET_ITEM(e, 0) != owner || PyTuple_GET_ITEM(e, 2) != policy) {
            continue;
        }
        if (ename == name ||
            (PyUnicode_Check(ename) && PyUnicode_Check(name) &&
             PyUnicode_Compare(ename, name) == 0)) {
            return i;
        }
    }
    return -1;
}

int
sp_registry_add(PyObject *owner, PyObject *name, PyObject *policy)
{
    if (registry_check_outside_run("change the allow registry") < 0) {
        return -1;
    }
    if (policy != Py_None && !PyCallable_Check(policy)) {
        PyErr_Format(PyExc_TypeError,
                     "allow(): a policy must be callable as "
                     "policy(obj, args, kwargs, data), not %.200s",
                     SP_TYPE_NAME(policy));
        return -1;
    }
    if (registry_find(owner, name, policy) >= 0) {
        return 0;
    }
    PyObject *entries = PyList_GetSlice(registry->entries, 0, PY_SSIZE_T_MAX);
    PyObject *entry = PyTuple_Pack(3, owner, name, policy);
    int rc = -1;
    if (entries == NULL || entry == NULL || PyList_Append(entries, entry) < 0) {
        goto done;
    }
    if (registry_rebuild(entries) < 0) {
        goto done;
    }
    Py_SETREF(registry->entries, entries);
    entries = NULL;
    rc = 0;
done:
    Py_XDECREF(entries);
    Py_XDECREF(entry);
    return rc;
}

int
sp_registry_remove(PyObject *owner, PyObject *name, PyObject *policy)
{
    if (registry_check_outside_run("change the allow registry") < 0) {
        return -1;
    }
    Py_ssize_t i = registry_find(owner, name, policy);
    if (i < 0) {
        PyErr_Format(PyExc_KeyError, "not allowed: (%R, %R, %R)", owner, name,
                     policy);
        return -1;
    }
    PyObject *entries = PyList_GetSlice(registry->entries, 0, PY_SSIZE_T_MAX);
    if (entries == NULL || PySequence_DelItem(entries, i) < 0 ||
        registry_rebuild(entries) < 0) {
        Py_XDECREF(entries);
        return -1;
    }
    Py_SETREF(registry->entries, entries);
    return 0;
}

int
sp_registry_allow_import(PyObject *modname)
{
    if (registry_check_outside_run("change the import allowance") < 0) {
        return -1;
    }
    if (!PyUnicode_Check(modname) || PyUnicode_GET_LENGTH(modname) == 0) {
        PyErr_Format(PyExc_TypeError, "allow_imports() takes module names, not %R",
                     modname);
        return -1;
    }
    int has = PySequence_Contains(registry->imports, modname);
    if (has != 0) {
        return has < 0 ? -1 : 0;
    }
    if (PyList_Append(registry->imports, modname) < 0) {
        return -1;
    }
    registry->version++;
    return 0;
}

/* Look up id(key) in an index; new reference to its grants or NULL. */
static PyObject *
registry_index_get(PyObject *index, PyObject *key)
{
    if (index == NULL || PyDict_GET_SIZE(index) == 0) {
        return NULL;
    }
    PyObject *id = PyLong_FromVoidPtr(key);
    if (id == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *slot = PyDict_GetItemWithError(index, id); /* borrowed */
    Py_DECREF(id);
    if (slot == NULL) {
        PyErr_Clear();
        return NULL;
    }
    /* Frozen by registry_rebuild: (key object, tuple of grants). */
    assert(PyTuple_Check(slot) && PyTuple_GET_SIZE(slot) == 2);
    assert(PyTuple_Check(PyTuple_GET_ITEM(slot, 1)));
    return Py_NewRef(PyTuple_GET_ITEM(slot, 1));
}

PyObject *
sp_registry_code_grants(PyObject *code)
{
    return registry_index_get(registry->codes, code);
}

/* sp_registry_native_grants; *by_method is set to 1 when the grants come
 * from the method descriptor that made the bound builtin method
 * `callable` (so they depend only on its type and method definition). */
static PyObject *
registry_native_grants(PyObject *callable, int *by_method)
{
    *by_method = 0;
    PyObject *grants = registry_index_get(registry->natives, callable);
    if (grants != NULL || !PyCFunction_Check(callable)) {
        return grants;
    }
    /* obj.method: a builtin method bound to obj, a new object at each
     * access; trusted when the method descriptor it was made from (found
     * along the MRO of obj's type, so inherited methods count) is. */
    PyObject *self = PyCFunction_GET_SELF(callable);
    if (self == NULL || PyModule_Check(self)) {
        return NULL;
    }
    PyMethodDef *def = ((PyCFunctionObject *)callable)->m_ml;
    PyObject *mro = Py_TYPE(self)->tp_mro; /* borrowed */
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *dict = sp_type_dict((PyTypeObject *)PyTuple_GET_ITEM(mro, i));
        PyObject *descr = NULL; /* owned */
        if (dict == NULL || sp_dict_get_ref_str(dict, def->ml_name, &descr) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(dict);
        if (descr != NULL) {
            /* Only the descriptor that made this bound method. */
            PyObject *grants =
                Py_IS_TYPE(descr, &PyMethodDescr_Type) &&
                        ((PyMethodDescrObject *)descr)->d_method == def
                    ? registry_index_get(registry->natives, descr)
                    : NULL;
            Py_DECREF(descr);
            *by_method = grants != NULL;
            return grants;
        }
    }
    return NULL;
}

PyObject *
sp_registry_native_grants(PyObject *callable)
{
    int by_method;
    return registry_native_grants(callable, &by_method);
}

int
sp_registry_native_trusted_by(PyObject *callable, int *by_method)
{
    PyObject *grants = registry_native_grants(callable, by_method);
    Py_XDECREF(grants);
    return grants != NULL;
}

/* Whether `name` is `base` or a submodule of it. */
static int
registry_name_under(PyObject *name, PyObject *base)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name), b = PyUnicode_GET_LENGTH(base);
    if (n < b || PyUnicode_Tailmatch(name, base, 0, b, -1) != 1) {
        return 0;
    }
    return n == b || PyUnicode_READ_CHAR(name, b) == '.';
}

int
sp_registry_globals_trusted(PyObject *globals, int module_level)
{
    if (globals == NULL || !PyDict_Check(globals)) {
        return 0;
    }
    if (PyDict_GET_SIZE(registry->modules) > 0) {
        PyObject *id = PyLong_FromVoidPtr(globals);
        int has = id == NULL ? -1 : PyDict_Contains(registry->modules, id);
        Py_XDECREF(id);
        if (has != 0) {
            if (has < 0) {
                PyErr_Clear();
            }
            return has > 0;
        }
    }
    Py_ssize_t np = PyTuple_GET_SIZE(registry->prefixes);
    Py_ssize_t ni = module_level ? PyList_GET_SIZE(registry->imports) : 0;
    if (np == 0 && ni == 0) {
        return 0;
    }
    PyObject *name = PyDict_GetItemWithError(globals, registry->name_key);
    if (name == NULL || !PyUnicode_Check(name)) {
        PyErr_Clear();
        return 0;
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        if (registry_name_under(name, PyTuple_GET_ITEM(registry->prefixes, i))) {
            return 1;
        }
    }
    for (Py_ssize_t i = 0; i < ni; i++) {
        if (registry_name_under(name, PyList_GET_ITEM(registry->imports, i))) {
            return 1;
        }
    }
    return 0;
}

int
sp_registry_native_trusted(PyObject *callable)
{
    PyObject *grants = sp_registry_native_grants(callable);
    Py_XDECREF(grants);
    return grants != NULL;
}

int
sp_registry_has_natives(void)
{
    return registry->natives != NULL && PyDict_GET_SIZE(registry->natives) > 0;
}

PyObject *
sp_registry_gated_codes(void)
{
    return registry->gated;
}

PyObject *
sp_registry_natives(void)
{
    return registry->natives;
}

unsigned long
sp_registry_version(void)
{
    return registry->version;
}

/* ---- Python functions ------------------------------------------------- */

/* allow_register / allow_remove: (owner, name=None, policy=None). */
static PyObject *
registry_py_change(PyObject *const *args, Py_ssize_t nargs,
                   int (*change)(PyObject *, PyObject *, PyObject *),
                   const char *usage)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    PyObject *name = nargs > 1 ? args[1] : Py_None;
    PyObject *policy = nargs > 2 ? args[2] : Py_None;
    if (change(args[0], name, policy) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
registry_py_add(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    return registry_py_change(args, nargs, sp_registry_add,
                              "allow_register(owner, name=None, policy=None)");
}

static PyObject *
registry_py_remove(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    return registry_py_change(args, nargs, sp_registry_remove,
                              "allow_remove(owner, name=None, policy=None)");
}

/* allow_entries() hands out the live policy objects the trust search
 * calls: the host's own objects, so a cell must not reach them (a Python
 * policy's fields and class are mutable).  Refused inside a run; the
 * description an LLM reads uses allow_listing() instead. */
static PyObject *
registry_py_entries(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (sp_gate_refuse_inside("read the allow registry's policies") < 0) {
        return NULL;
    }
    return PyList_AsTuple(registry->entries);
}

/* How the description names a policy: "" for none, a class by its
 * qualified name, an instance by its repr when that is short and not
 * "<...>", else by its type's name.  New reference. */
static PyObject *
registry_policy_label(PyObject *policy)
{
    if (policy == Py_None) {
        return PyUnicode_FromString("");
    }
    if (PyType_Check(policy)) {
        return PyType_GetQualName((PyTypeObject *)policy);
    }
    PyObject *text = PyObject_Repr(policy);
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
    }
    else if (PyUnicode_GET_LENGTH(text) == 0 ||
             (PyUnicode_GET_LENGTH(text) <= 60 &&
              PyUnicode_ReadChar(text, 0) != '<')) {
        return text;
    }
    Py_XDECREF(text);
    return PyType_GetName(Py_TYPE(policy));
}

/* allow_listing(): the registry as the tool description shows it, with
 * each policy as its label (a str) instead of the object.  Allowed inside
 * a run (RunPython.__doc__ read by a cell). */
static PyObject *
registry_py_listing(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    /* owned; the entries list is held so a policy's __repr__ cannot free it */
    PyObject *entries = Py_NewRef(registry->entries);
    Py_ssize_t n = PyList_GET_SIZE(entries);
    PyObject *listing = PyTuple_New(n);
    if (listing == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i); /* borrowed */
        PyObject *label = registry_policy_label(PyTuple_GET_ITEM(e, 2));
        if (label == NULL) {
            goto error;
        }
        PyObject *item = PyTuple_Pack(3, PyTuple_GET_ITEM(e, 0),
                                      PyTuple_GET_ITEM(e, 1), label);
        Py_DECREF(label);
        if (item == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(listing, i, item);
    }
    Py_DECREF(entries);
    return listing;
error:
    Py_XDECREF(listing);
    Py_DECREF(entries);
    return NULL;
}

static PyObject *
registry_py_allow_import(PyObject *module, PyObject *name)
{
    (void)module;
    if (sp_registry_allow_import(name) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
registry_py_imports(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyList_AsTuple(registry->imports);
}

static PyMethodDef registry_functions[] = {
    {"allow_register", (PyCFunction)(void (*)(void))registry_py_add,
     METH_FASTCALL,
     "allow_register(owner, name=None, policy=None)\n\nTrust owner (or its "
     "attribute name), optionally under policy.  Refused inside a run."},
    {"allow_remove", (PyCFunction)(void (*)(void))registry_py_remove,
     METH_FASTCALL,
     "allow_remove(owner, name=None, policy=None)\n\nUndo one allow_register."},
    {"allow_entries", registry_py_entries, METH_NOARGS,
     "allow_entries() -> tuple of (owner, name, policy)\n\nRefused inside a "
     "run (the policies are live objects)."},
    {"allow_listing", registry_py_listing, METH_NOARGS,
     "allow_listing() -> tuple of (owner, name, policy_label)\n\nThe "
     "registry as the tool description shows it: each policy named by a "
     "str ('' for none)."},
    {"allow_import", registry_py_allow_import, METH_O,
     "allow_import(modname)\n\nTrust the import-time code of a module and its "
     "submodules.  Refused inside a run."},
    {"allowed_imports", registry_py_imports, METH_NOARGS,
     "allowed_imports() -> tuple of module names"},
    {NULL, NULL, 0, NULL},
};

int
sp_registry_init(PyObject *module)
{
    if (registry->entries == NULL) {
        registry->entries = PyList_New(0);
        registry->imports = PyList_New(0);
        registry->name_key = PyUnicode_InternFromString("__name__");
        registry->locals_marker = PyUnicode_InternFromString("<locals>");
        if (registry->entries == NULL || registry->imports == NULL ||
            registry->name_key == NULL || registry->locals_marker == NULL ||
            registry_rebuild(registry->entries) < 0) {
            return -1;
        }
    }
    return PyModule_AddFunctions(module, registry_functions);
}
