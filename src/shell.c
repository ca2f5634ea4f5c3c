/* shell.c - pin the Python shell's names (see shell.h).
 *
 * What it owns: the snapshot, a list of pins.  Each pin is a tuple whose
 * first item is its kind and second a label for messages:
 *   DICT  (dict, copy, owner, version)  every entry of dict is the one in
 *                                       copy, and no entry was added; owner
 *                                       is the class whose dict it is (or
 *                                       None for a module's); version is
 *                                       the dict's version tag (3.11)
 *   CLASS (obj, type)                   type(obj) is type (a module's
 *                                       __class__)
 *   FUNC  (fn, code, defaults, kwdefaults, kwcopy, closure, contents)
 *                                       a function's state: its code,
 *                                       defaults, keyword defaults (object
 *                                       and entries), closure cells and
 *                                       their contents
 *   LIST  (list, copy)                  a module's __path__ / __all__
 *   SUBSET (dict, keys, values, version) dict[keys[i]] is values[i]: some
 *                                       entries of a dict others change
 *                                       too (sys.modules, builtins)
 * Values are compared by identity only, and verify runs no code a cell
 * wrote (see "verifying" below), so a cell cannot make a comparison lie.
 * NULL fields are stored as None.
 *
 * Invariants: the snapshot is taken by the host (refused inside a run),
 * at the end of `import safepyrun` and after the user config; the module
 * type's __setattr__ retakes it when the host itself sets a module
 * attribute (a submodule import does).  Extra pins (shell_pin) survive a
 * retake.  `__warningregistry__` is ignored: the warnings machinery writes
 * it into the globals of whichever module a warning is attributed to.
 *
 * Cost: verify allocates nothing when nothing changed.  A pinned dict is
 * compared only if it may have changed: a dict watcher marks that (3.12+),
 * or its version tag moved (3.11).  Then it is walked beside its copy
 * comparing pointers, and only a changed dict is compared key by key.
 * Functions, classes and lists are checked every time (a few pointer
 * reads each).
 *
 * Threading: GIL held.  The pins are process-wide, like the audit hook.
 */
#include "common.h"
#include "shell.h"
#include "state.h"

#include "gate.h"

/* This file's part of the engine state (state.h): written by the snapshot
 * and shell_pin (host only). */
static struct sp_shell_state *const shell = &sp_state.shell;

enum { PIN_DICT, PIN_CLASS, PIN_FUNC, PIN_LIST, PIN_SUBSET };

#define OR_NONE(o) ((o) == NULL ? Py_None : (PyObject *)(o))

/* ---- taking the snapshot ------------------------------------------------ */

/* Append `pin` (a new reference, or NULL after a failed Py_BuildValue) to
 * `pins`.  Steals `pin`.  0 ok, -1 error. */
static int
shell_add(PyObject *pins, PyObject *pin)
{
    if (pin == NULL) {
        return -1;
    }
    int rc = PyList_Append(pins, pin);
    Py_DECREF(pin);
    return rc;
}

/* Whether a module name belongs to the shell: "safepyrun" or
 * "safepyrun.*". */
static int
shell_is_ours(PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        return 0;
    }
    if (PyUnicode_CompareWithASCIIString(name, "safepyrun") == 0) {
        return 1;
    }
    PyObject *prefix = PyUnicode_FromString("safepyrun.");
    if (prefix == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t m = PyUnicode_Tailmatch(name, prefix, 0, PY_SSIZE_T_MAX, -1);
    Py_DECREF(prefix);
    if (m < 0) {
        PyErr_Clear();
        return 0;
    }
    return (int)m;
}

/* Whether `tp` is a class of the shell: its __module__ is ours.  No
 * exception is left set. */
static int
shell_is_our_type(PyTypeObject *tp)
{
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    if (mod == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ours = shell_is_ours(mod);
    Py_DECREF(mod);
    return ours;
}

/* "module.qualname" of a class or function, for messages.  New ref. */
static PyObject *
shell_label(PyObject *obj)
{
    PyObject *mod = PyObject_GetAttrString(obj, "__module__");
    PyObject *qual = PyObject_GetAttrString(obj, "__qualname__");
    PyObject *label = NULL;
    if (mod != NULL && qual != NULL) {
        label = PyUnicode_FromFormat("%S.%S", mod, qual);
    }
    else {
        PyErr_Clear();
        label = PyUnicode_FromString(Py_TYPE(obj)->tp_name);
    }
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    return label;
}

/* Make a class of the shell immutable (common.h).  Idempotent. */
static void
shell_freeze(PyTypeObject *tp)
{
    if ((tp->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
        !(tp->tp_flags & Py_TPFLAGS_IMMUTABLETYPE)) {
        sp_freeze_type(tp);
    }
}

/* Pin a function's state (appended to `pins`). */
static int
shell_pin_function(PyObject *pins, PyObject *fn)
{
    PyObject *label = NULL, *kwcopy = NULL, *contents = NULL; /* owned */
    int rc = -1;
    PyObject *kwdefaults = PyFunction_GetKwDefaults(fn); /* borrowed */
    PyObject *closure = PyFunction_GetClosure(fn);       /* borrowed */
    label = shell_label(fn);
    if (label == NULL) {
        goto done;
    }
    if (kwdefaults != NULL && PyDict_Check(kwdefaults)) {
        kwcopy = PyDict_Copy(kwdefaults);
        if (kwcopy == NULL) {
            goto done;
        }
    }
    if (closure != NULL && PyTuple_Check(closure)) {
        Py_ssize_t n = PyTuple_GET_SIZE(closure);
        contents = PyTuple_New(n);
        if (contents == NULL) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *cell = PyTuple_GET_ITEM(closure, i);
            PyObject *value = PyCell_Check(cell) ? PyCell_GET(cell) : NULL;
            PyTuple_SET_ITEM(contents, i, Py_NewRef(OR_NONE(value)));
        }
    }
    rc = shell_add(pins, Py_BuildValue(
        "(iOOOOOOOO)", PIN_FUNC, label, fn, PyFunction_GetCode(fn),
        OR_NONE(PyFunction_GetDefaults(fn)), OR_NONE(kwdefaults),
        OR_NONE(kwcopy), OR_NONE(closure), OR_NONE(contents)));
done:
    Py_XDECREF(label);
    Py_XDECREF(kwcopy);
    Py_XDECREF(contents);
    return rc;
}

/* Whether `obj` was pinned already (adds it to `seen` if not): -1 error,
 * 0 new, 1 seen. */
static int
shell_seen(PyObject *seen, PyObject *obj)
{
    PyObject *id = PyLong_FromVoidPtr(obj);
    if (id == NULL) {
        return -1;
    }
    int has = PySet_Contains(seen, id);
    if (has == 0 && PySet_Add(seen, id) < 0) {
        has = -1;
    }
    Py_DECREF(id);
    return has;
}

static int shell_pin_namespace(PyObject *pins, PyObject *seen,
                               PyObject *label, PyObject *dict,
                               PyObject *owner);

/* Pin what a namespace value leads to: a function's state (also inside
 * staticmethod, classmethod and property), and a class of the shell (made
 * immutable, its dict pinned). */
static int
shell_pin_value(PyObject *pins, PyObject *seen, PyObject *value)
{
    if (PyFunction_Check(value)) {
        int was = shell_seen(seen, value);
        return was != 0 ? (was < 0 ? -1 : 0) : shell_pin_function(pins, value);
    }
    static const char *const staticmethod_attrs[] = {"__func__", NULL};
    static const char *const property_attrs[] = {"fget", "fset", "fdel", NULL};
    const char *const *attrs = NULL;
    if (PyObject_TypeCheck(value, &PyStaticMethod_Type) ||
        PyObject_TypeCheck(value, &PyClassMethod_Type)) {
        attrs = staticmethod_attrs;
    }
    else if (PyObject_TypeCheck(value, &PyProperty_Type)) {
        attrs = property_attrs;
    }
    if (attrs != NULL) {
        for (int i = 0; attrs[i] != NULL; i++) {
            PyObject *fn = PyObject_GetAttrString(value, attrs[i]);
            if (fn == NULL) {
                return -1;
            }
            int rc = shell_pin_value(pins, seen, fn);
            Py_DECREF(fn);
            if (rc < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (PyType_Check(value) && shell_is_our_type((PyTypeObject *)value)) {
        int was = shell_seen(seen, value);
        if (was != 0) {
            return was < 0 ? -1 : 0;
        }
        shell_freeze((PyTypeObject *)value);
        PyObject *dict = sp_type_dict((PyTypeObject *)value);
        PyObject *label = shell_label(value);
        int rc = dict == NULL || label == NULL
                     ? -1
                     : shell_pin_namespace(pins, seen, label, dict, value);
        Py_XDECREF(dict);
        Py_XDECREF(label);
        return rc;
    }
    return 0;
}

#if SP_HAVE_DICT_WATCHERS
/* Any change of a pinned dict: verify will compare the dicts.  Runs before
 * the change; must not fail. */
static int
shell_dict_watcher(PyDict_WatchEvent event, PyObject *dict, PyObject *key,
                   PyObject *new_value)
{
    (void)event;
    (void)dict;
    (void)key;
    (void)new_value;
    shell->dirty = 1;
    return 0;
}
#endif

/* Start watching `dict` (3.12+: new reference to 0), or read its version
 * tag (3.11: new reference to the int). */
static PyObject *
shell_watch_tag(PyObject *dict)
{
#if SP_HAVE_DICT_WATCHERS
    if (shell->watcher < 0) {
        shell->watcher = PyDict_AddWatcher(shell_dict_watcher);
        if (shell->watcher < 0) {
            return NULL;
        }
    }
    if (PyDict_Watch(shell->watcher, dict) < 0) {
        return NULL;
    }
    return PyLong_FromLong(0);
#else
    return PyLong_FromUnsignedLongLong(sp_dict_version(dict));
#endif
}

/* Watch `dict` for changes (3.12+), or return its version tag (3.11), as
 * a new reference to a one-item list [int] (the pin's "version" field,
 * updated after each check on 3.11; [0] with watchers). */
static PyObject *
shell_watch(PyObject *dict)
{
    PyObject *tag = shell_watch_tag(dict); /* owned */
    PyObject *version = tag == NULL ? NULL : PyList_New(1);
    if (version == NULL) {
        Py_XDECREF(tag);
        return NULL;
    }
    PyList_SET_ITEM(version, 0, tag); /* steals tag */
    return version;
}

/* Whether a DICT or SUBSET pin's dict may have changed since the pin was
 * last checked. */
static int
shell_dict_maybe_changed(PyObject *pin)
{
#if SP_HAVE_DICT_WATCHERS
    (void)pin;
    return shell->dirty;
#else
    PyObject *version = PyTuple_GET_ITEM(pin, 5);
    unsigned long long then =
        PyLong_AsUnsignedLongLong(PyList_GET_ITEM(version, 0));
    return then != sp_dict_version(PyTuple_GET_ITEM(pin, 2));
#endif
}

/* The pin's dict was checked (and put back): remember its version (3.11;
 * with watchers the dirty flag is reset after the pass).  0 ok, -1 error. */
static int
shell_dict_checked(PyObject *pin)
{
#if SP_HAVE_DICT_WATCHERS
    (void)pin;
    return 0;
#else
    PyObject *now = PyLong_FromUnsignedLongLong(
        sp_dict_version(PyTuple_GET_ITEM(pin, 2)));
    if (now == NULL) {
        return -1;
    }
    return PyList_SetItem(PyTuple_GET_ITEM(pin, 5), 0, now); /* steals now */
#endif
}

/* Pin a namespace (a module's or a class's dict) and what its values lead
 * to.  `owner` is the class, or None. */
static int
shell_pin_namespace(PyObject *pins, PyObject *seen, PyObject *label,
                    PyObject *dict, PyObject *owner)
{
    PyObject *version = shell_watch(dict); /* owned */
    PyObject *copy = version == NULL ? NULL : PyDict_Copy(dict);
    if (copy == NULL ||
        shell_add(pins, Py_BuildValue("(iOOOOO)", PIN_DICT, label, dict, copy,
                                      owner, version)) < 0) {
        Py_XDECREF(copy);
        Py_XDECREF(version);
        return -1;
    }
    Py_DECREF(version);
    PyObject *key, *value; /* borrowed, from `copy` (owned here) */
    Py_ssize_t pos = 0;
    int rc = 0;
    while (rc == 0 && PyDict_Next(copy, &pos, &key, &value)) {
        if (owner == Py_None && PyList_CheckExact(value) &&
            PyUnicode_Check(key) &&
            (PyUnicode_CompareWithASCIIString(key, "__path__") == 0 ||
             PyUnicode_CompareWithASCIIString(key, "__all__") == 0)) {
            PyObject *items = PyList_AsTuple(value);
            PyObject *what = items == NULL
                                 ? NULL
                                 : PyUnicode_FromFormat("%U.%U", label, key);
            rc = what == NULL ? -1
                              : shell_add(pins, Py_BuildValue(
                                                    "(iOOO)", PIN_LIST, what,
                                                    value, items));
            Py_XDECREF(items);
            Py_XDECREF(what);
            continue;
        }
        rc = shell_pin_value(pins, seen, value);
    }
    Py_DECREF(copy);
    return rc;
}

/* Append a SUBSET pin: dict[keys[i]] is values[i] (lists, turned into
 * tuples).  0 ok, -1 error. */
static int
shell_add_subset(PyObject *pins, const char *label, PyObject *dict,
                 PyObject *keys, PyObject *values)
{
    PyObject *version = shell_watch(dict); /* owned */
    PyObject *k = version == NULL ? NULL : PyList_AsTuple(keys);
    PyObject *v = k == NULL ? NULL : PyList_AsTuple(values);
    int rc = v == NULL ? -1
                       : shell_add(pins, Py_BuildValue("(isOOOO)", PIN_SUBSET,
                                                       label, dict, k, v,
                                                       version));
    Py_XDECREF(version);
    Py_XDECREF(k);
    Py_XDECREF(v);
    return rc;
}

/* Add to `names` every name code (and the code nested in it) loads as a
 * global, builtin or attribute: co_names. */
static int
shell_code_names(PyObject *code, PyObject *names)
{
    PyObject *co_names = PyObject_GetAttrString(code, "co_names");
    PyObject *consts = co_names == NULL
                           ? NULL
                           : PyObject_GetAttrString(code, "co_consts");
    int rc = -1;
    if (consts == NULL || !PyTuple_Check(co_names) || !PyTuple_Check(consts)) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co_names); i++) {
        if (PySet_Add(names, PyTuple_GET_ITEM(co_names, i)) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && shell_code_names(c, names) < 0) {
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(co_names);
    Py_XDECREF(consts);
    return rc;
}

/* The builtins the shell's functions use (isinstance, hasattr, super,
 * PermissionError...) are looked up when they run: pin those entries of
 * the builtins module's dict too.  Only builtin functions and classes:
 * other entries (`_` set by the display hook, IPython's get_ipython) are
 * the interactive shell's to change. */
static int
shell_pin_builtins(PyObject *pins)
{
    /* owned */
    PyObject *names = NULL, *builtins = NULL, *keys = NULL, *values = NULL;
    int rc = -1;
    names = PySet_New(NULL);
    builtins = PyImport_ImportModule("builtins");
    keys = PyList_New(0);
    values = PyList_New(0);
    if (names == NULL || builtins == NULL || keys == NULL || values == NULL) {
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(pins);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pin = PyList_GET_ITEM(pins, i);
        if (PyLong_AsLong(PyTuple_GET_ITEM(pin, 0)) == PIN_FUNC &&
            shell_code_names(PyTuple_GET_ITEM(pin, 3), names) < 0) {
            goto done;
        }
    }
    PyObject *dict = PyModule_GetDict(builtins); /* borrowed */
    PyObject *iter = PyObject_GetIter(names);    /* owned */
    PyObject *name;                              /* owned, per item */
    if (dict == NULL || iter == NULL) {
        Py_XDECREF(iter);
        goto done;
    }
    while ((name = PyIter_Next(iter)) != NULL) {
        PyObject *value = NULL; /* owned */
        int found = PyUnicode_Check(name)
                        ? sp_dict_get_ref(dict, name, &value)
                        : 0;
        if (found > 0 && !PyCFunction_Check(value) && !PyType_Check(value)) {
            /* Not a builtin function or class: what an interactive shell
             * keeps there (_, get_ipython, exit) changes under it. */
            Py_CLEAR(value);
            found = 0;
        }
        int err = found < 0 ||
                  (found > 0 && (PyList_Append(keys, name) < 0 ||
                                 PyList_Append(values, value) < 0));
        Py_XDECREF(value);
        Py_DECREF(name);
        if (err) {
            Py_DECREF(iter);
            goto done;
        }
    }
    Py_DECREF(iter);
    if (PyErr_Occurred()) {
        goto done;
    }
    rc = shell_add_subset(pins, "builtins", dict, keys, values);
done:
    Py_XDECREF(names);
    Py_XDECREF(builtins);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    return rc;
}

int
sp_shell_snapshot(void)
{
    if (sp_gate_refuse_inside("take the shell's snapshot") < 0) {
        return -1;
    }
    /* owned */
    PyObject *pins = NULL, *seen = NULL, *names = NULL, *sys = NULL;
    PyObject *keys = NULL, *values = NULL;
    int rc = -1;
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    pins = PyList_New(0);
    seen = PySet_New(NULL);
    names = PyDict_Keys(modules);
    sys = PyImport_ImportModule("sys");
    keys = PyList_New(0);
    values = PyList_New(0);
    if (pins == NULL || seen == NULL || names == NULL || sys == NULL ||
        keys == NULL || values == NULL) {
        goto done;
    }
    /* sys.modules itself: importlib looks it up as an attribute of sys. */
    PyObject *sysdict = PyModule_GetDict(sys); /* borrowed */
    PyObject *syskey = Py_BuildValue("[s]", "modules");
    PyObject *sysval = Py_BuildValue("[O]", modules);
    int err = sysdict == NULL || syskey == NULL || sysval == NULL ||
              shell_add_subset(pins, "sys", sysdict, syskey, sysval) < 0;
    Py_XDECREF(syskey);
    Py_XDECREF(sysval);
    if (err) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        PyObject *name = PyList_GET_ITEM(names, i); /* borrowed */
        if (!shell_is_ours(name)) {
            continue;
        }
        PyObject *mod = NULL; /* owned */
        if (sp_dict_get_ref(modules, name, &mod) < 0) {
            goto done;
        }
        if (mod == NULL) {
            continue;
        }
        int bad = PyList_Append(keys, name) < 0 ||
                  PyList_Append(values, mod) < 0;
        if (!bad && PyModule_Check(mod)) {
            PyObject *dict = PyModule_GetDict(mod); /* borrowed */
            bad = shell_add(pins, Py_BuildValue("(iOOO)", PIN_CLASS, name, mod,
                                                (PyObject *)Py_TYPE(mod))) < 0 ||
                  shell_pin_namespace(pins, seen, name, dict, Py_None) < 0;
            /* The module's own class (safepyrun's guards attribute sets). */
            if (!bad) {
                bad = shell_pin_value(pins, seen, (PyObject *)Py_TYPE(mod)) < 0;
            }
        }
        Py_DECREF(mod);
        if (bad) {
            goto done;
        }
    }
    if (shell_add_subset(pins, "sys.modules", modules, keys, values) < 0 ||
        shell_pin_builtins(pins) < 0) {
        goto done;
    }
    Py_XSETREF(shell->pins, pins);
    pins = NULL;
#if SP_HAVE_DICT_WATCHERS
    shell->dirty = 0;
#endif
    rc = 0;
done:
    Py_XDECREF(pins);
    Py_XDECREF(seen);
    Py_XDECREF(names);
    Py_XDECREF(sys);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    return rc;
}

/* ---- verifying ---------------------------------------------------------- */

/* Verify runs no code a cell wrote.  Three rules keep it so:
 *   - the live dicts are only probed with keys that cannot run Python
 *     code when hashed or compared (exact str): a dict holding any other
 *     key ("foreign", e.g. a str subclass with its own __hash__/__eq__) is
 *     rebuilt instead, by walking it (no hashing) and re-inserting;
 *   - nothing a cell put in is released before verify is done: replaced
 *     values go to the grave list, dropped at the very end, so a finalizer
 *     cannot run between a check and the next;
 *   - a module's class is put back through object's own __class__ setter,
 *     never through the (replaced) class's __setattr__.
 * A finalizer that changes something again when the grave is released is
 * met by another pass; after the last of SHELL_MAX_PASSES the grave is
 * kept (quarantine) until the next verify starts, so no finalizer of a
 * cell's object runs between a verify's last check and its return. */

/* Keep `obj` alive until verify ends.  0 ok, -1 error. */
static int
shell_bury(PyObject *grave, PyObject *obj)
{
    return obj == NULL ? 0 : PyList_Append(grave, obj);
}

/* Note a change: count it, keep the first description. */
static void
shell_note(int *changes, PyObject **first, PyObject *what)
{
    (*changes)++;
    if (*first == NULL) {
        *first = what; /* reference moves in */
    }
    else {
        Py_XDECREF(what);
    }
}

/* The first key of `dict` that is not an exact str (borrowed), or NULL. */
static PyObject *
shell_foreign_key(PyObject *dict)
{
    PyObject *key, *value; /* borrowed */
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return key;
        }
    }
    return NULL;
}

/* How a changed key is named in the message: its text when it is a str
 * (read directly, no __str__), else its type.  New reference. */
static PyObject *
shell_key_text(PyObject *label, PyObject *key, int subscript)
{
    if (PyUnicode_Check(key)) {
        return subscript ? PyUnicode_FromFormat("%U['%U']", label, key)
                         : PyUnicode_FromFormat("%U.%U", label, key);
    }
    return PyUnicode_FromFormat("%U (a key of type %.200s)", label,
                                SP_TYPE_NAME(key));
}

/* Drop every foreign key of `dict`: its entries are buried, the dict
 * cleared and the exact-str ones put back.  0 ok, -1 error. */
static int
shell_purge_foreign(PyObject *dict, PyObject *grave)
{
    PyObject *items = PyDict_Items(dict); /* owned; no hashing */
    if (items == NULL || shell_bury(grave, items) < 0) {
        Py_XDECREF(items);
        return -1;
    }
    PyDict_Clear(dict);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *key = PyTuple_GET_ITEM(item, 0);
        if (PyUnicode_CheckExact(key) &&
            PyDict_SetItem(dict, key, PyTuple_GET_ITEM(item, 1)) < 0) {
            Py_DECREF(items);
            return -1;
        }
    }
    Py_DECREF(items);
    return 0;
}

/* dict[key] is value (key an exact str, dict without foreign keys); put
 * it back, burying what was there.  -1 error, 0 unchanged, 1 restored. */
static int
shell_restore_item(PyObject *dict, PyObject *key, PyObject *value,
                   PyObject *grave)
{
    PyObject *cur = PyDict_GetItemWithError(dict, key); /* borrowed */
    if (cur == value) {
        return 0;
    }
    if (cur == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (shell_bury(grave, cur) < 0 || PyDict_SetItem(dict, key, value) < 0) {
        return -1;
    }
    return 1;
}

/* The fast check: `dict` still holds exactly the entries of `copy`, in the
 * same order (PyDict_Copy keeps insertion order), so a walk of both
 * compares pointers pairwise without hashing.  A false "no" only sends
 * the caller to the full comparison. */
static int
shell_dict_same(PyObject *dict, PyObject *copy)
{
    if (PyDict_GET_SIZE(dict) != PyDict_GET_SIZE(copy)) {
        return 0;
    }
    PyObject *k1, *v1, *k2, *v2; /* borrowed */
    Py_ssize_t p1 = 0, p2 = 0;
    while (PyDict_Next(copy, &p2, &k2, &v2)) {
        if (!PyDict_Next(dict, &p1, &k1, &v1) || k1 != k2 || v1 != v2) {
            return 0;
        }
    }
    return 1;
}

/* The first key in which `dict` and `copy` differ (an entry of copy that
 * dict lacks or holds another object under, or an entry added to dict),
 * ignoring the warnings registry; borrowed, NULL if none (check
 * PyErr_Occurred).  Only for a dict without foreign keys. */
static PyObject *
shell_first_difference(PyObject *dict, PyObject *copy)
{
    PyObject *key, *value; /* borrowed */
    Py_ssize_t pos = 0;
    while (PyDict_Next(copy, &pos, &key, &value)) {
        PyObject *cur = PyDict_GetItemWithError(dict, key);
        if (cur != value) {
            return PyErr_Occurred() ? NULL : key;
        }
    }
    pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (PyUnicode_Compare(key, shell->ignored_key) == 0) {
            continue;
        }
        int has = PyDict_Contains(copy, key);
        if (has <= 0) {
            return has < 0 ? NULL : key;
        }
    }
    return NULL;
}

/* Make `dict` hold exactly the entries of `copy` (and the warnings
 * registry, if it had one): its entries are buried, it is cleared and
 * refilled from `copy`.  0 ok, -1 error. */
static int
shell_rebuild_dict(PyObject *dict, PyObject *copy, PyObject *grave)
{
    PyObject *items = PyDict_Items(dict); /* owned; no hashing */
    PyObject *registry = NULL;            /* borrowed, kept by `items` */
    if (items == NULL || shell_bury(grave, items) < 0) {
        Py_XDECREF(items);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *key = PyTuple_GET_ITEM(item, 0);
        if (PyUnicode_CheckExact(key) &&
            PyUnicode_Compare(key, shell->ignored_key) == 0) {
            registry = PyTuple_GET_ITEM(item, 1);
        }
    }
    PyDict_Clear(dict);
    int rc = PyDict_Update(dict, copy);
    if (rc == 0 && registry != NULL) {
        rc = PyDict_SetItem(dict, shell->ignored_key, registry);
    }
    Py_DECREF(items);
    return rc;
}

/* A DICT pin.  -1 error, else 0 with *what set if it had changed. */
static int
shell_check_dict(PyObject *pin, PyObject **what, PyObject *grave)
{
    PyObject *label = PyTuple_GET_ITEM(pin, 1), *dict = PyTuple_GET_ITEM(pin, 2);
    PyObject *copy = PyTuple_GET_ITEM(pin, 3), *owner = PyTuple_GET_ITEM(pin, 4);
    if (shell_dict_same(dict, copy)) {
        return 0;
    }
    PyObject *key = shell_foreign_key(dict); /* borrowed */
    if (key == NULL) {
        key = shell_first_difference(dict, copy);
        if (key == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
    }
    *what = shell_key_text(label, key, 0);
    if (*what == NULL || shell_rebuild_dict(dict, copy, grave) < 0) {
        return -1;
    }
    if (owner != Py_None) {
        PyType_Modified((PyTypeObject *)owner);
    }
    return 0;
}

/* A SUBSET pin.  -1 error, else 0 with *what set if it had changed. */
static int
shell_check_subset(PyObject *pin, PyObject **what, PyObject *grave)
{
    PyObject *label = PyTuple_GET_ITEM(pin, 1), *dict = PyTuple_GET_ITEM(pin, 2);
    PyObject *keys = PyTuple_GET_ITEM(pin, 3), *values = PyTuple_GET_ITEM(pin, 4);
    PyObject *foreign = shell_foreign_key(dict); /* borrowed */
    if (foreign != NULL) {
        *what = shell_key_text(label, foreign, 1);
        if (*what == NULL || shell_purge_foreign(dict, grave) < 0) {
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(keys); i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i);
        int r = PyUnicode_CheckExact(key)
                    ? shell_restore_item(dict, key, PyTuple_GET_ITEM(values, i),
                                         grave)
                    : 0;
        if (r < 0) {
            return -1;
        }
        if (r > 0 && *what == NULL) {
            *what = shell_key_text(label, key, 1);
            if (*what == NULL) {
                return -1;
            }
        }
    }
    return 0;
}

/* Put a function's state back.  -1 error, 0 unchanged, 1 restored. */
static int
shell_restore_function(PyObject *pin, PyObject *grave)
{
    PyObject *fn = PyTuple_GET_ITEM(pin, 2), *code = PyTuple_GET_ITEM(pin, 3);
    PyObject *defaults = PyTuple_GET_ITEM(pin, 4);
    PyObject *kwdefaults = PyTuple_GET_ITEM(pin, 5);
    PyObject *kwcopy = PyTuple_GET_ITEM(pin, 6);
    PyObject *closure = PyTuple_GET_ITEM(pin, 7);
    PyObject *contents = PyTuple_GET_ITEM(pin, 8);
    int changed = 0;
    if (PyFunction_GetCode(fn) != code) {
        /* The audit hook refuses a cell's __code__ swap; this is for a
         * swap made where the hook does not look. */
        if (shell_bury(grave, PyFunction_GetCode(fn)) < 0 ||
            PyObject_SetAttrString(fn, "__code__", code) < 0) {
            return -1;
        }
        changed = 1;
    }
    PyObject *cur = PyFunction_GetDefaults(fn); /* borrowed */
    if (OR_NONE(cur) != defaults) {
        if (shell_bury(grave, cur) < 0 ||
            PyFunction_SetDefaults(fn, defaults) < 0) {
            return -1;
        }
        changed = 1;
    }
    if (kwcopy != Py_None && !shell_dict_same(kwdefaults, kwcopy)) {
        if (shell_rebuild_dict(kwdefaults, kwcopy, grave) < 0) {
            return -1;
        }
        changed = 1;
    }
    cur = PyFunction_GetKwDefaults(fn);
    if (OR_NONE(cur) != kwdefaults) {
        if (shell_bury(grave, cur) < 0 ||
            PyFunction_SetKwDefaults(fn, kwdefaults) < 0) {
            return -1;
        }
        changed = 1;
    }
    cur = PyFunction_GetClosure(fn);
    if (OR_NONE(cur) != closure) {
        if (shell_bury(grave, cur) < 0 ||
            PyFunction_SetClosure(fn, closure) < 0) {
            return -1;
        }
        changed = 1;
    }
    if (contents != Py_None) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(contents); i++) {
            PyObject *cell = PyTuple_GET_ITEM(closure, i);
            PyObject *want = PyTuple_GET_ITEM(contents, i);
            if (!PyCell_Check(cell) || OR_NONE(PyCell_GET(cell)) == want) {
                continue;
            }
            if (shell_bury(grave, PyCell_GET(cell)) < 0 ||
                PyCell_Set(cell, want == Py_None ? NULL : want) < 0) {
                return -1;
            }
            changed = 1;
        }
    }
    return changed;
}

/* Put `type` back as the class of `obj` with object's own __class__
 * setter (the replaced class's __setattr__ or a __class__ property it
 * defines would be a cell's code).  0 ok, -1 error. */
static int
shell_restore_class(PyObject *obj, PyObject *type, PyObject *grave)
{
    PyObject *dict = sp_type_dict(&PyBaseObject_Type); /* owned */
    PyObject *descr = NULL;                            /* owned */
    int rc = -1;
    if (dict == NULL || sp_dict_get_ref_str(dict, "__class__", &descr) <= 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError, "object has no __class__");
        }
        goto done;
    }
    descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
    if (set == NULL || shell_bury(grave, (PyObject *)Py_TYPE(obj)) < 0) {
        goto done;
    }
    rc = set(descr, obj, type);
done:
    Py_XDECREF(dict);
    Py_XDECREF(descr);
    return rc;
}

/* Check one pin and put back what changed.  -1 error, else 0 with *what
 * a new reference to a description of the change (NULL if none). */
static int
shell_check_pin(PyObject *pin, PyObject **what, PyObject *grave)
{
    PyObject *label = PyTuple_GET_ITEM(pin, 1);
    PyObject *a = PyTuple_GET_ITEM(pin, 2), *b = PyTuple_GET_ITEM(pin, 3);
    *what = NULL;
    switch (PyLong_AsLong(PyTuple_GET_ITEM(pin, 0))) {
    case PIN_DICT:
        if (!shell_dict_maybe_changed(pin)) {
            return 0;
        }
        return shell_check_dict(pin, what, grave) < 0 ? -1
                                                      : shell_dict_checked(pin);
    case PIN_SUBSET:
        if (!shell_dict_maybe_changed(pin)) {
            return 0;
        }
        return shell_check_subset(pin, what, grave) < 0
                   ? -1
                   : shell_dict_checked(pin);
    case PIN_CLASS:
        if ((PyObject *)Py_TYPE(a) == b) {
            return 0;
        }
        if (shell_restore_class(a, b, grave) < 0) {
            return -1;
        }
        *what = PyUnicode_FromFormat("the class of %U", label);
        return *what == NULL ? -1 : 0;
    case PIN_FUNC: {
        int r = shell_restore_function(pin, grave);
        if (r > 0) {
            *what = PyUnicode_FromFormat("the state of %U", label);
        }
        return r < 0 || (r > 0 && *what == NULL) ? -1 : 0;
    }
    case PIN_LIST: {
        Py_ssize_t n = PyTuple_GET_SIZE(b);
        int same = PyList_GET_SIZE(a) == n;
        for (Py_ssize_t i = 0; same && i < n; i++) {
            same = PyList_GET_ITEM(a, i) == PyTuple_GET_ITEM(b, i);
        }
        if (same) {
            return 0;
        }
        PyObject *old = PyList_AsTuple(a); /* owned */
        int rc = old == NULL || shell_bury(grave, old) < 0 ||
                         PyList_SetSlice(a, 0, PyList_GET_SIZE(a), b) < 0
                     ? -1
                     : 0;
        Py_XDECREF(old);
        if (rc == 0) {
            *what = Py_NewRef(label);
        }
        return rc;
    }
    default:
        return 0;
    }
}

/* Check every pin of `pins`.  -1 error, else 0. */
static int
shell_check_all(PyObject *pins, int *changes, PyObject **first,
                PyObject *grave)
{
    if (pins == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pins); i++) {
        PyObject *what = NULL;
        if (shell_check_pin(PyList_GET_ITEM(pins, i), &what, grave) < 0) {
            Py_XDECREF(what);
            return -1;
        }
        if (what != NULL) {
            shell_note(changes, first, what);
        }
    }
    return 0;
}

/* One pass over every pin: put back what changed, counting it.  What the
 * pass buried is released at its end, after every check: a cell's
 * finalizer runs then (and may change something again: the next pass's).
 * -1 error, else 0 with *pass_changes the changes it found. */
static int
shell_verify_pass(int *pass_changes, PyObject **first, int last)
{
    PyObject *grave = PyList_New(0); /* owned: released last */
    int rc = -1;
    *pass_changes = 0;
    if (grave == NULL) {
        return -1;
    }
    /* The pin lists are held by the grave: a finalizer cannot free them
     * under us. */
    PyObject *pins = shell->pins, *extra = shell->extra; /* kept by grave */
    if (shell_bury(grave, pins) < 0 || shell_bury(grave, extra) < 0 ||
        shell_check_all(pins, pass_changes, first, grave) < 0 ||
        shell_check_all(extra, pass_changes, first, grave) < 0) {
        goto done;
    }
#if SP_HAVE_DICT_WATCHERS
    /* Every pinned dict is as snapshotted now (restored if it was not). */
    shell->dirty = 0;
#endif
    rc = 0;
done:;
    if (last && *pass_changes > 0) {
        /* No pass follows: what this one removed is released at the
         * start of the next verify, whose passes meet its finalizers. */
        Py_XSETREF(shell->quarantine, grave);
        return rc;
    }
    PyObject *exc = sp_err_get_raised(); /* owned, or NULL */
    Py_DECREF(grave);
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(NULL);
    }
    sp_err_set_raised(exc);
    return rc;
}

/* Passes made at most: the first puts back what the step changed; the
 * next ones what finalizers of the objects it removed changed. */
#define SHELL_MAX_PASSES 4

int
sp_shell_verify(void)
{
    int changes = 0, pass_changes = 0;
    PyObject *first = NULL; /* owned */
    /* What the last verify could not release safely goes first. */
    Py_CLEAR(shell->quarantine);
    if (PyErr_Occurred()) {
        return -1;
    }
    for (int i = 0; i < SHELL_MAX_PASSES; i++) {
        if (shell_verify_pass(&pass_changes, &first,
                              i == SHELL_MAX_PASSES - 1) < 0) {
            Py_XDECREF(first);
            return -1;
        }
        changes += pass_changes;
        if (pass_changes == 0) {
            break;
        }
    }
    if (changes == 0) {
        return 0;
    }
    if (changes == 1) {
        PyErr_Format(PyExc_PermissionError,
                     "safepyrun refused to let sandboxed code change %U (put "
                     "back): sandboxed code cannot change the sandbox",
                     first);
    }
    else {
        PyErr_Format(PyExc_PermissionError,
                     "safepyrun refused to let sandboxed code change %U and "
                     "%d other names of the sandbox (put back): sandboxed code "
                     "cannot change the sandbox",
                     first, changes - 1);
    }
    Py_DECREF(first);
    return -1;
}

/* ---- Python functions ------------------------------------------------------ */

static PyObject *
shell_py_snapshot(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (sp_shell_snapshot() < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Accept the host's (re)import of submodule `full`: its sys.modules entry
 * in the SUBSET pin takes the current value (or is dropped).  0 ok, -1
 * error. */
static int
shell_accept_submodule(PyObject *full)
{
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(shell->pins); i++) {
        PyObject *pin = PyList_GET_ITEM(shell->pins, i);
        if (PyLong_AsLong(PyTuple_GET_ITEM(pin, 0)) != PIN_SUBSET ||
            PyTuple_GET_ITEM(pin, 2) != modules) {
            continue;
        }
        PyObject *keys = PyTuple_GET_ITEM(pin, 3);
        PyObject *values = PySequence_List(PyTuple_GET_ITEM(pin, 4)); /* owned */
        PyObject *current = NULL;                                     /* owned */
        if (values == NULL || sp_dict_get_ref(modules, full, &current) < 0) {
            Py_XDECREF(values);
            return -1;
        }
        int rc = 0;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(keys) && rc == 0; k++) {
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(keys, k), full,
                                              Py_EQ);
            if (eq < 0) {
                rc = -1;
            }
            else if (eq > 0 && current != NULL) {
                rc = PyList_SetItem(values, k, Py_NewRef(current));
            }
        }
        PyObject *frozen = rc < 0 ? NULL : PyList_AsTuple(values);
        PyObject *repl = frozen == NULL
                             ? NULL
                             : PyTuple_Pack(6, PyTuple_GET_ITEM(pin, 0),
                                            PyTuple_GET_ITEM(pin, 1), modules,
                                            keys, frozen,
                                            PyTuple_GET_ITEM(pin, 5));
        Py_XDECREF(frozen);
        Py_XDECREF(values);
        Py_XDECREF(current);
        if (repl == NULL) {
            return -1;
        }
        return PyList_SetItem(shell->pins, i, repl); /* steals repl */
    }
    return 0;
}

/* Accept the host's change of `name` in the dict of module `mod`: update
 * the pinned copy of that entry, and if it names a submodule being
 * (re)imported, its sys.modules entry.  0 ok, -1 error. */
static int
shell_accept(PyObject *mod, PyObject *name)
{
    PyObject *dict = PyModule_GetDict(mod); /* borrowed */
    if (dict == NULL) {
        return -1;
    }
    PyObject *modname = PyModule_GetNameObject(mod); /* owned */
    PyObject *full = modname == NULL
                         ? NULL
                         : PyUnicode_FromFormat("%U.%S", modname, name);
    Py_XDECREF(modname);
    int sub = full == NULL ? -1 : shell_accept_submodule(full);
    Py_XDECREF(full);
    if (sub < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(shell->pins); i++) {
        PyObject *pin = PyList_GET_ITEM(shell->pins, i);
        if (PyLong_AsLong(PyTuple_GET_ITEM(pin, 0)) != PIN_DICT ||
            PyTuple_GET_ITEM(pin, 2) != dict) {
            continue;
        }
        PyObject *copy = PyTuple_GET_ITEM(pin, 3);
        PyObject *value = NULL; /* owned */
        int found = sp_dict_get_ref(dict, name, &value);
        int rc = -1;
        if (found > 0) {
            rc = PyDict_SetItem(copy, name, value);
        }
        else if (found == 0) {
            int had = PyDict_Contains(copy, name);
            rc = had <= 0 ? had : PyDict_DelItem(copy, name);
        }
        Py_XDECREF(value);
        return rc;
    }
    return 0;
}

/* shell_refresh(module=None, name=None): the host set (or deleted) the
 * attribute `name` of `module`, one of ours.  That entry is accepted;
 * everything else is verified first (and put back), so a change a cell
 * made outside a step (a finalizer, a callback) is not laundered into the
 * new snapshot; then the snapshot is retaken (a submodule import adds
 * names).  A PermissionError from the verification is raised after the
 * retake. */
static PyObject *
shell_py_refresh(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "shell_refresh(module=None, name=None)");
        return NULL;
    }
    if (shell->pins == NULL) {
        Py_RETURN_NONE;
    }
    if (sp_gate_refuse_inside("take the shell's snapshot") < 0) {
        return NULL;
    }
    if (nargs == 2 && PyModule_Check(args[0]) &&
        shell_accept(args[0], args[1]) < 0) {
        return NULL;
    }
    PyObject *refused = NULL; /* owned: the verification's error */
    if (sp_shell_verify() < 0) {
        refused = sp_err_get_raised();
    }
    if (sp_shell_snapshot() < 0) {
        Py_XDECREF(refused);
        return NULL;
    }
    if (refused != NULL) {
        sp_err_set_raised(refused);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
shell_py_verify(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (sp_shell_verify() < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Build the pin for shell_pin(obj, key): a dict entry, or a function's
 * state.  New reference. */
static PyObject *
shell_make_pin(PyObject *obj, PyObject *key)
{
    if (key != Py_None) {
        if (!PyDict_Check(obj)) {
            PyErr_Format(PyExc_TypeError,
                         "shell_pin(): a key needs a dict, not %.200s",
                         SP_TYPE_NAME(obj));
            return NULL;
        }
        PyObject *value = NULL; /* owned */
        int found = sp_dict_get_ref(obj, key, &value);
        if (found <= 0) {
            if (found == 0) {
                PyErr_SetObject(PyExc_KeyError, key);
            }
            return NULL;
        }
        PyObject *keys = PyList_New(0), *values = PyList_New(0); /* owned */
        PyObject *tmp = PyList_New(0);                            /* owned */
        PyObject *pin = NULL;
        if (keys != NULL && values != NULL && tmp != NULL &&
            PyList_Append(keys, key) == 0 && PyList_Append(values, value) == 0 &&
            shell_add_subset(tmp, "namespace", obj, keys, values) == 0) {
            pin = Py_NewRef(PyList_GET_ITEM(tmp, 0));
        }
        Py_XDECREF(keys);
        Py_XDECREF(values);
        Py_XDECREF(tmp);
        Py_DECREF(value);
        return pin;
    }
    if (!PyFunction_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "shell_pin() takes a dict and a key, or a function, not "
                     "%.200s",
                     SP_TYPE_NAME(obj));
        return NULL;
    }
    PyObject *tmp = PyList_New(0); /* owned */
    if (tmp == NULL || shell_pin_function(tmp, obj) < 0) {
        Py_XDECREF(tmp);
        return NULL;
    }
    PyObject *pin = Py_NewRef(PyList_GET_ITEM(tmp, 0));
    Py_DECREF(tmp);
    return pin;
}

/* Index of the extra pin for (obj, key), or -1 (no exception).  A dict
 * entry's pin is a SUBSET of one key; a function's is a FUNC pin. */
static Py_ssize_t
shell_find_extra(PyObject *obj, PyObject *key)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(shell->extra); i++) {
        PyObject *pin = PyList_GET_ITEM(shell->extra, i);
        if (PyTuple_GET_ITEM(pin, 2) != obj) {
            continue;
        }
        if (key == Py_None) {
            return i;
        }
        PyObject *keys = PyTuple_GET_ITEM(pin, 3);
        if (!PyTuple_Check(keys) || PyTuple_GET_SIZE(keys) != 1) {
            continue;
        }
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(keys, 0), key, Py_EQ);
        if (eq < 0) {
            PyErr_Clear();
        }
        if (eq > 0) {
            return i;
        }
    }
    return -1;
}

static PyObject *
shell_py_pin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "shell_pin(obj, key=None)");
        return NULL;
    }
    if (sp_gate_refuse_inside("pin a name of the sandbox") < 0) {
        return NULL;
    }
    PyObject *key = nargs > 1 ? args[1] : Py_None;
    PyObject *pin = shell_make_pin(args[0], key);
    if (pin == NULL) {
        return NULL;
    }
    Py_ssize_t i = shell_find_extra(args[0], key);
    int rc = i >= 0 ? PyList_SetItem(shell->extra, i, pin)
                    : PyList_Append(shell->extra, pin);
    if (i < 0) {
        Py_DECREF(pin);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
shell_py_unpin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "shell_unpin(obj, key=None)");
        return NULL;
    }
    if (sp_gate_refuse_inside("unpin a name of the sandbox") < 0) {
        return NULL;
    }
    Py_ssize_t i = shell_find_extra(args[0], nargs > 1 ? args[1] : Py_None);
    if (i >= 0 && PySequence_DelItem(shell->extra, i) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef shell_functions[] = {
    {"shell_snapshot", shell_py_snapshot, METH_NOARGS,
     "shell_snapshot()\n--\n\nRecord the safepyrun modules' names, classes "
     "and functions (and make the classes immutable).  Refused inside a "
     "run."},
    {"shell_refresh", (PyCFunction)(void (*)(void))shell_py_refresh,
     METH_FASTCALL,
     "shell_refresh(module=None, name=None)\n--\n\nThe host set module."
     "name: accept that entry, verify the rest, retake the snapshot (if one "
     "was taken).  Refused inside a run."},
    {"shell_verify", shell_py_verify, METH_NOARGS,
     "shell_verify()\n--\n\nPut back what changed since the snapshot; "
     "PermissionError if anything had.  The engine calls it when a cell "
     "step leaves its run; exposed for the tests."},
    {"shell_pin", (PyCFunction)(void (*)(void))shell_py_pin, METH_FASTCALL,
     "shell_pin(obj, key=None)\n--\n\nAlso pin dict obj's entry key, or "
     "function obj's state (defaults, closure).  Refused inside a run."},
    {"shell_unpin", (PyCFunction)(void (*)(void))shell_py_unpin,
     METH_FASTCALL,
     "shell_unpin(obj, key=None)\n--\n\nUndo shell_pin.  Refused inside a "
     "run."},
    {NULL, NULL, 0, NULL},
};

int
sp_shell_init(PyObject *module)
{
    if (shell->extra == NULL) {
#if SP_HAVE_DICT_WATCHERS
        shell->watcher = -1;
#endif
        shell->ignored_key = PyUnicode_InternFromString("__warningregistry__");
        shell->extra = PyList_New(0);
        if (shell->ignored_key == NULL || shell->extra == NULL) {
            Py_CLEAR(shell->ignored_key);
            Py_CLEAR(shell->extra);
            return -1;
        }
    }
    return PyModule_AddFunctions(module, shell_functions);
}
