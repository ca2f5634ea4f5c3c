/* environ.c - SpEnviron: the process environment's data, with events.
 *
 * os.environ._data (the same dict as posix.environ, shared by
 * os.environb) is what child processes get through os.get_exec_path and
 * what shutil.which searches; changing it directly changes both without
 * os.putenv and its audit event.  sp_environ_guard puts an SpEnviron in
 * front of that dict: a mapping that owns it and raises "os.putenv" /
 * "os.unsetenv" (judged by the hook's SP_RULE_ENV: only sensitive names
 * are refused) for every change, then makes it.
 *
 * Why not a dict subclass: dict.__setitem__(data, k, v) and dict.update
 * would go around its methods.  The wrapped dict is never handed out
 * (iteration and views work on copies) and holds only exact bytes, so the
 * collector never tracks it and gc.get_objects() cannot hand it out either.
 * Not closed here: rebinding os.environ._data (or os.environ) to another
 * object is a plain attribute assignment, which raises no audit event.
 *
 * What it owns: the SpEnviron type (process-wide, created once by
 * sp_environ_init).  Not GC-tracked: it holds one dict of bytes.
 * Threading: GIL held.
 */
#include "environ.h"
#include "state.h"

/* Process-wide; written once by sp_environ_init. */

typedef struct {
    PyObject_HEAD
    PyObject *dict; /* owned: the process environment as bytes -> bytes;
                       only exact bytes, so it is never GC-tracked */
} SpEnviron;

static void
env_tp_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(((SpEnviron *)self)->dict);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* An exact bytes copy of a key or value (os.environb lets bytes subclasses
 * through).  New reference, or NULL with TypeError. */
static PyObject *
env_bytes(PyObject *obj)
{
    if (PyBytes_CheckExact(obj)) {
        return Py_NewRef(obj);
    }
    if (PyBytes_Check(obj)) {
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(obj),
                                         PyBytes_GET_SIZE(obj));
    }
    PyErr_Format(PyExc_TypeError,
                 "environment keys and values must be bytes, not %.200s",
                 SP_TYPE_NAME(obj));
    return NULL;
}

/* Check a method's positional argument count.  1 ok, 0 with TypeError. */
static int
env_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs >= min && nargs <= max) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                 name, min, max, nargs);
    return 0;
}

/* Set (value != NULL) or delete one variable, after the event os.putenv or
 * os.unsetenv judges.  0 ok, -1 error (KeyError for a missing key). */
static int
env_set(SpEnviron *env, PyObject *key, PyObject *value)
{
    PyObject *k = NULL, *v = NULL; /* owned */
    int rc = -1;
    k = env_bytes(key);
    if (k == NULL) {
        goto done;
    }
    if (value == NULL) {
        if (PySys_Audit("os.unsetenv", "(O)", k) < 0) {
            goto done;
        }
        rc = PyDict_DelItem(env->dict, k);
        goto done;
    }
    v = env_bytes(value);
    if (v == NULL || PySys_Audit("os.putenv", "OO", k, v) < 0) {
        goto done;
    }
    rc = PyDict_SetItem(env->dict, k, v);
done:
    Py_XDECREF(k);
    Py_XDECREF(v);
    return rc;
}

static Py_ssize_t
env_mp_length(PyObject *self)
{
    return PyDict_GET_SIZE(((SpEnviron *)self)->dict);
}

static PyObject *
env_mp_subscript(PyObject *self, PyObject *key)
{
    return PyObject_GetItem(((SpEnviron *)self)->dict, key);
}

static int
env_mp_ass_subscript(PyObject *self, PyObject *key, PyObject *value)
{
    return env_set((SpEnviron *)self, key, value);
}

static int
env_sq_contains(PyObject *self, PyObject *key)
{
    return PyDict_Contains(((SpEnviron *)self)->dict, key);
}

/* Iteration goes over a list of the keys: a dict iterator would hand out
 * the dict itself (gc.get_referents). */
static PyObject *
env_tp_iter(PyObject *self)
{
    PyObject *keys = PyDict_Keys(((SpEnviron *)self)->dict);
    if (keys == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
env_tp_repr(PyObject *self)
{
    return PyObject_Repr(((SpEnviron *)self)->dict);
}

static PyObject *
env_copy(PyObject *self, PyObject *unused)
{
    (void)unused;
    return PyDict_Copy(((SpEnviron *)self)->dict);
}

/* Read-only views, of a copy (a view of the dict would hand it out). */
static PyObject *
env_view(PyObject *self, const char *method)
{
    PyObject *copy = PyDict_Copy(((SpEnviron *)self)->dict);
    if (copy == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallMethod(copy, method, NULL);
    Py_DECREF(copy);
    return res;
}

static PyObject *
env_keys(PyObject *self, PyObject *unused)
{
    (void)unused;
    return env_view(self, "keys");
}

static PyObject *
env_values(PyObject *self, PyObject *unused)
{
    (void)unused;
    return env_view(self, "values");
}

static PyObject *
env_items(PyObject *self, PyObject *unused)
{
    (void)unused;
    return env_view(self, "items");
}

static PyObject *
env_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!env_nargs("get", nargs, 1, 2)) {
        return NULL;
    }
    PyObject *value = NULL;
    int found = sp_dict_get_ref(((SpEnviron *)self)->dict, args[0], &value);
    if (found < 0) {
        return NULL;
    }
    return found ? value : Py_NewRef(nargs > 1 ? args[1] : Py_None);
}

static PyObject *
env_pop(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!env_nargs("pop", nargs, 1, 2)) {
        return NULL;
    }
    PyObject *value = NULL;
    int found = sp_dict_get_ref(((SpEnviron *)self)->dict, args[0], &value);
    if (found < 0) {
        return NULL;
    }
    if (!found) {
        if (nargs > 1) {
            return Py_NewRef(args[1]);
        }
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    if (env_set((SpEnviron *)self, args[0], NULL) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static PyObject *
env_popitem(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *dict = ((SpEnviron *)self)->dict;
    PyObject *key, *value;
    Py_ssize_t pos = 0, last = -1;
    PyObject *lkey = NULL;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        lkey = key;
        last = pos;
    }
    if (last < 0) {
        PyErr_SetString(PyExc_KeyError, "popitem(): environment is empty");
        return NULL;
    }
    PyObject *k = Py_NewRef(lkey);
    PyObject *v = PyObject_GetItem(dict, k);
    PyObject *res = NULL;
    if (v != NULL && env_set((SpEnviron *)self, k, NULL) == 0) {
        res = PyTuple_Pack(2, k, v);
    }
    Py_DECREF(k);
    Py_XDECREF(v);
    return res;
}

static PyObject *
env_setdefault(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!env_nargs("setdefault", nargs, 2, 2)) {
        return NULL;
    }
    PyObject *value = NULL;
    int found = sp_dict_get_ref(((SpEnviron *)self)->dict, args[0], &value);
    if (found != 0) {
        return found < 0 ? NULL : value;
    }
    if (env_set((SpEnviron *)self, args[0], args[1]) < 0) {
        return NULL;
    }
    return PyObject_GetItem(((SpEnviron *)self)->dict, args[0]);
}

static PyObject *
env_clear(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *keys = PyDict_Keys(((SpEnviron *)self)->dict);
    if (keys == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        if (env_set((SpEnviron *)self, PyList_GET_ITEM(keys, i), NULL) < 0) {
            Py_DECREF(keys);
            return NULL;
        }
    }
    Py_DECREF(keys);
    Py_RETURN_NONE;
}

/* update(mapping_or_pairs=(), /, **kw): one event per variable. */
static PyObject *
env_update(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *other = NULL, *tmp = NULL, *items = NULL; /* owned: tmp, items */
    PyObject *res = NULL;
    if (!PyArg_UnpackTuple(args, "update", 0, 1, &other)) {
        return NULL;
    }
    tmp = PyDict_New();
    if (tmp == NULL) {
        return NULL;
    }
    if (other != NULL) {
        int rc = PyObject_HasAttrString(other, "keys")
                     ? PyDict_Update(tmp, other)
                     : PyDict_MergeFromSeq2(tmp, other, 1);
        if (rc < 0) {
            goto done;
        }
    }
    if (kwargs != NULL && PyDict_Update(tmp, kwargs) < 0) {
        goto done;
    }
    items = PyDict_Items(tmp);
    if (items == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        if (env_set((SpEnviron *)self, PyTuple_GET_ITEM(pair, 0),
                    PyTuple_GET_ITEM(pair, 1)) < 0) {
            goto done;
        }
    }
    res = Py_NewRef(Py_None);
done:
    Py_XDECREF(tmp);
    Py_XDECREF(items);
    return res;
}

static PyMethodDef env_methods[] = {
    {"get", (PyCFunction)(void (*)(void))env_get, METH_FASTCALL, NULL},
    {"keys", env_keys, METH_NOARGS, NULL},
    {"values", env_values, METH_NOARGS, NULL},
    {"items", env_items, METH_NOARGS, NULL},
    {"copy", env_copy, METH_NOARGS, "A plain dict copy."},
    {"pop", (PyCFunction)(void (*)(void))env_pop, METH_FASTCALL, NULL},
    {"popitem", env_popitem, METH_NOARGS, NULL},
    {"setdefault", (PyCFunction)(void (*)(void))env_setdefault, METH_FASTCALL,
     NULL},
    {"clear", env_clear, METH_NOARGS, NULL},
    {"update", (PyCFunction)(void (*)(void))env_update,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot env_slots[] = {
    {Py_tp_doc, "The process environment (bytes -> bytes); every change "
                "raises os.putenv / os.unsetenv (safepyrun)."},
    {Py_tp_dealloc, env_tp_dealloc},
    {Py_tp_iter, env_tp_iter},
    {Py_tp_repr, env_tp_repr},
    {Py_tp_methods, env_methods},
    {Py_mp_length, env_mp_length},
    {Py_mp_subscript, env_mp_subscript},
    {Py_mp_ass_subscript, env_mp_ass_subscript},
    {Py_sq_contains, env_sq_contains},
    {0, NULL},
};

static PyType_Spec env_spec = {
    .name = "safepyrun._engine.Environ",
    .basicsize = sizeof(SpEnviron),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_MAPPING,
    .slots = env_slots,
};

int
sp_environ_guard(PyObject *posix)
{
    PyObject *dict = NULL, *os = NULL, *env = NULL, *name = NULL; /* owned */
    int rc = -1;
    dict = PyObject_GetAttrString(posix, "environ");
    if (dict == NULL) {
        PyErr_Clear(); /* no environ: nothing to guard */
        return 0;
    }
    if (!PyDict_CheckExact(dict)) {
        rc = 0; /* already ours, or replaced by the host */
        goto done;
    }
    /* The dict must stay untracked: check it holds exact bytes only. */
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        if (!PyBytes_CheckExact(k) || !PyBytes_CheckExact(v)) {
            rc = 0; /* not the platform's bytes environ: leave it */
            goto done;
        }
    }
    SpEnviron *wrapper = PyObject_New(SpEnviron, sp_state.guards.environ_type);
    if (wrapper == NULL) {
        goto done;
    }
    wrapper->dict = Py_NewRef(dict);
    env = (PyObject *)wrapper;
    if (PyObject_SetAttrString(posix, "environ", env) < 0) {
        goto done;
    }
    name = PyUnicode_FromString("os");
    os = name == NULL ? NULL : PyImport_GetModule(name);
    if (os == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    static const char *const views[] = {"environ", "environb"};
    for (size_t i = 0; i < 2; i++) {
        PyObject *view = PyObject_GetAttrString(os, views[i]);
        if (view == NULL) {
            PyErr_Clear();
            continue;
        }
        PyObject *data = PyObject_GetAttrString(view, "_data");
        if (data == NULL) {
            PyErr_Clear();
        }
        int same = data == dict;
        Py_XDECREF(data);
        int err = same && PyObject_SetAttrString(view, "_data", env) < 0;
        Py_DECREF(view);
        if (err) {
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(dict);
    Py_XDECREF(os);
    Py_XDECREF(env);
    Py_XDECREF(name);
    return rc;
}

int
sp_environ_init(PyObject *module)
{
    if (sp_state.guards.environ_type != NULL) {
        return 0;
    }
    sp_state.guards.environ_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &env_spec, NULL);
    return sp_state.guards.environ_type == NULL ? -1 : 0;
}
