/* policy.c - the built-in allow policies.
 *
 * What it owns: five heap types and the chk_dest check they share.
 *   AllowPolicy       the base: policy(obj, args, kwargs, data); its
 *                     __call__ is abstract, Python subclasses define it;
 *   PosAllowPolicy    (pos=0, kw=None): the path argument at `pos` (or
 *                     keyword `kw`) must lie inside ok_dests; non-paths
 *                     (buffers, file objects) pass;
 *   PathWritePolicy   (target_pos=None, target_kw=None): `obj` (the Path)
 *                     and the optional target argument must lie inside;
 *   OpenWritePolicy   () open(file, mode)-shaped calls: a mode that writes
 *                     needs the file inside;
 *   LocalWritePolicy  PosAllowPolicy that also refuses URLs.
 *
 * Why C: a policy written in Python decides through names a cell can
 * reach (the module global chk_dest, a class attribute, an instance
 * field).  These types are immutable (Py_TPFLAGS_IMMUTABLETYPE), their
 * fields are read-only and set once in tp_new (calling __init__ again
 * changes nothing), and their checks call sp_paths_check_write directly.
 * The ok_dests they check against come from the `data` argument, which the
 * engine hands them as a read-only view (sp_policy_data_view).
 *
 * Messages read as the audit hook's refusal of the same write does
 * ("safepyrun refused to write a file: '...' is outside ok_dests [...]"),
 * ending with the same remedy (common.h).
 *
 * Threading: GIL held.  The type objects are process-wide (created on the
 * first import, never freed), as the audit hook that ends up calling them
 * is.
 */
#include "common.h"
#include "policy.h"
#include "state.h"

#include "paths.h"

#include <stddef.h>
#include <structmember.h>

/* This file's part of the engine state (state.h): written once by
 * sp_policy_init. */
static struct sp_policy_state *const policy_types = &sp_state.policy;

typedef struct {
    PyObject_HEAD
    Py_ssize_t pos;
    PyObject *kw; /* owned: the keyword to look at first, or None */
} SpPosPolicy;

typedef struct {
    PyObject_HEAD
    PyObject *target_pos; /* owned: int or None */
    PyObject *target_kw;  /* owned: keyword name or None */
} SpPathPolicy;

/* ---- chk_dest and the data view ---------------------------------------- */

/* Whether `given` is a policy's data mapping rather than a list of
 * destinations: a dict, or a mapping that is not a sequence (a
 * MappingProxyType view). */
static int
policy_is_data_mapping(PyObject *given)
{
    return PyDict_Check(given) ||
           (!PySequence_Check(given) && PyMapping_Check(given));
}

int
sp_policy_chk_dest(PyObject *path, PyObject *given)
{
    /* owned */
    PyObject *from_data = NULL, *dests = NULL, *resolved = NULL;
    PyObject *list = NULL, *text = NULL, *expanded = NULL;
    int rc = -1;
    if (policy_is_data_mapping(given)) {
        if (PyDict_Check(given)) {
            int found = sp_dict_get_ref_str(given, "ok_dests", &from_data);
            if (found < 0) {
                goto done;
            }
        }
        else {
            from_data = PyMapping_GetItemString(given, "ok_dests");
            if (from_data == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                    goto done;
                }
                PyErr_Clear();
            }
        }
        if (from_data == NULL) {
            PyErr_SetString(PyExc_KeyError,
                            "chk_dest(): the data mapping has no 'ok_dests'");
            goto done;
        }
        given = from_data;
    }
    dests = sp_paths_normalise_dests(given);
    if (dests == NULL) {
        goto done;
    }
    if (dests != Py_None) {
        /* The effect will ask the path object again: only a stable one can
         * be judged (paths.h).  A leading "~" is read both ways: open()
         * takes it literally, pandas and most libraries expand it. */
        if (!sp_paths_stable(path)) {
            PyErr_Format(PyExc_PermissionError,
                         "safepyrun refused to write a file through a %.200s "
                         "object: a path object of the sandbox's own class "
                         "could name another file to the write; pass a str "
                         "or pathlib.Path (write policy check)." SP_REMEDY_WRITE,
                         SP_TYPE_NAME(path));
            goto done;
        }
        text = sp_paths_text(path);
        expanded = text == NULL ? NULL : sp_paths_expand_user(text);
        if (expanded == NULL) {
            goto done;
        }
        int ok = sp_paths_check_write(text, -1, SP_PATH_FOLLOW | SP_PATH_SELF,
                                      dests, &resolved);
        if (ok > 0 && PyUnicode_Compare(expanded, text) != 0) {
            Py_CLEAR(resolved);
            ok = sp_paths_check_write(expanded, -1, SP_PATH_FOLLOW | SP_PATH_SELF,
                                      dests, &resolved);
        }
        if (ok < 0) {
            goto done;
        }
        if (ok == 0) {
            list = PySequence_List(dests);
            if (list != NULL && PyList_GET_SIZE(list) == 0) {
                PyErr_Format(PyExc_PermissionError,
                             "safepyrun refused to write a file: %R (no "
                             "writes are allowed: ok_dests is empty) (write "
                             "policy check)." SP_REMEDY_WRITE, path);
            }
            else if (list != NULL) {
                PyErr_Format(PyExc_PermissionError,
                             "safepyrun refused to write a file: %R is "
                             "outside ok_dests %R (write policy check)."
                             SP_REMEDY_WRITE, path, list);
            }
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(from_data);
    Py_XDECREF(dests);
    Py_XDECREF(resolved);
    Py_XDECREF(list);
    Py_XDECREF(text);
    Py_XDECREF(expanded);
    return rc;
}

PyObject *
sp_policy_data_view(PyObject *data)
{
    PyObject *copy = NULL; /* owned */
    PyObject *view = NULL;
    if (PyDict_Check(data)) {
        copy = PyDict_Copy(data);
    }
    else {
        copy = PyDict_New();
        if (copy != NULL && PyDict_Merge(copy, data, 1) < 0) {
            Py_CLEAR(copy);
        }
    }
    if (copy != NULL) {
        view = PyDictProxy_New(copy);
    }
    Py_XDECREF(copy);
    return view;
}

/* ---- argument helpers --------------------------------------------------- */

/* kwargs[key] when key is not None and is in kwargs (a dict or any
 * mapping): -1 error, 0 absent, 1 found with *out a new reference. */
static int
policy_kwarg(PyObject *kwargs, PyObject *key, PyObject **out)
{
    *out = NULL;
    if (key == Py_None) {
        return 0;
    }
    if (PyDict_Check(kwargs)) {
        return sp_dict_get_ref(kwargs, key, out);
    }
    int has = PySequence_Contains(kwargs, key);
    if (has <= 0) {
        return has;
    }
    *out = PyObject_GetItem(kwargs, key);
    return *out == NULL ? -1 : 1;
}

/* args[pos] when pos < len(args) (Python indexing, so a negative pos
 * counts from the end): -1 error, 0 absent, 1 found (*out new ref). */
static int
policy_arg(PyObject *args, Py_ssize_t pos, PyObject **out)
{
    *out = NULL;
    Py_ssize_t n = PyObject_Length(args);
    if (n < 0) {
        return -1;
    }
    if (pos >= n) {
        return 0;
    }
    *out = PySequence_GetItem(args, pos);
    return *out == NULL ? -1 : 1;
}

/* Whether `obj` is a path a policy checks: str, bytes or anything with
 * __fspath__ (as hasattr() sees it).  -1 error, 0 no, 1 yes. */
static int
policy_is_path(PyObject *obj)
{
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        return 1;
    }
    PyObject *attr = PyObject_GetAttrString(obj, "__fspath__");
    if (attr != NULL) {
        Py_DECREF(attr);
        return 1;
    }
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

/* Parse policy(obj, args, kwargs, data).  Borrowed outputs. */
static int
policy_parse_call(PyObject *args, PyObject *kwargs, const char *fmt,
                  PyObject **obj, PyObject **pargs, PyObject **pkwargs,
                  PyObject **data)
{
    static char *kwlist[] = {"obj", "args", "kwargs", "data", NULL};
    return PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, obj, pargs,
                                       pkwargs, data)
               ? 0
               : -1;
}

/* ---- repr ---------------------------------------------------------------- */

/* "Name(k=v, ...)": the C fields named in `names` with `values`, then the
 * instance __dict__ of a Python subclass, as the Python versions printed
 * vars(self).  New reference. */
static PyObject *
policy_repr(PyObject *self, const char *const *names, PyObject *const *values,
            Py_ssize_t n)
{
    /* owned */
    PyObject *parts = NULL, *dict = NULL, *sep = NULL, *joined = NULL;
    PyObject *name = NULL, *result = NULL;
    parts = PyList_New(0);
    if (parts == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyUnicode_FromFormat("%s=%R", names[i], values[i]);
        if (item == NULL || PyList_Append(parts, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
    }
    dict = PyObject_GetAttrString(self, "__dict__");
    if (dict == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            goto done;
        }
        PyErr_Clear();
    }
    else if (PyDict_Check(dict)) {
        PyObject *key, *value; /* borrowed */
        Py_ssize_t pos = 0;
        while (PyDict_Next(dict, &pos, &key, &value)) {
            PyObject *item = PyUnicode_FromFormat("%S=%R", key, value);
            if (item == NULL || PyList_Append(parts, item) < 0) {
                Py_XDECREF(item);
                goto done;
            }
            Py_DECREF(item);
        }
    }
    sep = PyUnicode_FromString(", ");
    name = PyType_GetName(Py_TYPE(self));
    if (sep == NULL || name == NULL) {
        goto done;
    }
    joined = PyUnicode_Join(sep, parts);
    if (joined != NULL) {
        result = PyUnicode_FromFormat("%U(%U)", name, joined);
    }
done:
    Py_XDECREF(parts);
    Py_XDECREF(dict);
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    Py_XDECREF(name);
    return result;
}

/* ---- AllowPolicy ----------------------------------------------------------- */

static int
base_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
base_tp_clear(PyObject *self)
{
    (void)self;
    return 0;
}

static PyObject *
base_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    PyErr_Format(PyExc_NotImplementedError,
                 "%.200s does not define __call__(obj, args, kwargs, data)",
                 SP_TYPE_NAME(self));
    return NULL;
}

static PyObject *
base_tp_repr(PyObject *self)
{
    return policy_repr(self, NULL, NULL, 0);
}

static PyType_Slot base_slots[] = {
    {Py_tp_doc,
     "AllowPolicy()\n--\n\n"
     "Base class for policies: ``policy(obj, args, kwargs, data)`` is "
     "called with the trusted call's object (``self`` of a method, else "
     "None), its positional and keyword arguments, and a read-only view of "
     "the run's data (which holds ``ok_dests``).  Refuse by raising "
     "``PermissionError`` (or returning False); anything else allows.  "
     "Subclasses define ``__call__``."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_call, base_tp_call},
    {Py_tp_repr, base_tp_repr},
    {Py_tp_traverse, base_tp_traverse},
    {Py_tp_clear, base_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec base_spec = {
    .name = "safepyrun.AllowPolicy",
    .basicsize = sizeof(PyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = base_slots,
};

/* ---- PosAllowPolicy and LocalWritePolicy ----------------------------------- */

static PyObject *
pos_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"pos", "kw", NULL};
    Py_ssize_t pos = 0;
    PyObject *kw = Py_None; /* borrowed */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|nO:PosAllowPolicy",
                                     kwlist, &pos, &kw)) {
        return NULL;
    }
    SpPosPolicy *self = (SpPosPolicy *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->pos = pos;
    self->kw = Py_NewRef(kw);
    return (PyObject *)self;
}

static int
pos_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((SpPosPolicy *)self)->kw);
    return 0;
}

static int
pos_tp_clear(PyObject *self)
{
    Py_CLEAR(((SpPosPolicy *)self)->kw);
    return 0;
}

/* The argument a PosAllowPolicy checks (keyword first): -1 error, else 0
 * with *out a new reference (None when absent). */
static int
pos_target(PyObject *self, PyObject *args, PyObject *kwargs, PyObject **out)
{
    SpPosPolicy *p = (SpPosPolicy *)self;
    int found = policy_kwarg(kwargs, p->kw == NULL ? Py_None : p->kw, out);
    if (found == 0) {
        found = policy_arg(args, p->pos, out);
    }
    if (found < 0) {
        return -1;
    }
    if (found == 0) {
        *out = Py_NewRef(Py_None);
    }
    return 0;
}

/* The PosAllowPolicy check of `target`: a path must lie inside. */
static int
pos_check(PyObject *target, PyObject *data)
{
    int is_path = policy_is_path(target);
    if (is_path <= 0) {
        return is_path;
    }
    return sp_policy_chk_dest(target, data);
}

static PyObject *
pos_py_target(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"args", "kwargs", NULL};
    PyObject *pargs, *pkwargs; /* borrowed */
    PyObject *target = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:target", kwlist,
                                     &pargs, &pkwargs)) {
        return NULL;
    }
    if (pos_target(self, pargs, pkwargs, &target) < 0) {
        return NULL;
    }
    return target;
}

static PyObject *
pos_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *obj, *pargs, *pkwargs, *data; /* borrowed */
    PyObject *target = NULL;                /* owned */
    if (policy_parse_call(args, kwargs, "OOOO:PosAllowPolicy", &obj, &pargs,
                          &pkwargs, &data) < 0 ||
        pos_target(self, pargs, pkwargs, &target) < 0) {
        return NULL;
    }
    int rc = pos_check(target, data);
    Py_DECREF(target);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pos_tp_repr(PyObject *self)
{
    SpPosPolicy *p = (SpPosPolicy *)self;
    static const char *const names[] = {"pos", "kw"};
    PyObject *pos = PyLong_FromSsize_t(p->pos);
    if (pos == NULL) {
        return NULL;
    }
    PyObject *values[] = {pos, p->kw == NULL ? Py_None : p->kw};
    PyObject *res = policy_repr(self, names, values, 2);
    Py_DECREF(pos);
    return res;
}

static PyObject *
pos_py_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    SpPosPolicy *p = (SpPosPolicy *)self;
    return Py_BuildValue("O(nO)", (PyObject *)Py_TYPE(self), p->pos,
                         p->kw == NULL ? Py_None : p->kw);
}

static PyMethodDef pos_methods[] = {
    {"target", (PyCFunction)(void (*)(void))pos_py_target,
     METH_VARARGS | METH_KEYWORDS,
     "target(args, kwargs)\n--\n\n"
     "The argument this policy checks (keyword first), or None."},
    {"__reduce__", pos_py_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef pos_members[] = {
    {"pos", T_PYSSIZET, offsetof(SpPosPolicy, pos), READONLY,
     "The position of the checked argument."},
    {"kw", T_OBJECT, offsetof(SpPosPolicy, kw), READONLY,
     "The keyword of the checked argument (looked at first), or None."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot pos_slots[] = {
    {Py_tp_doc,
     "PosAllowPolicy(pos=0, kw=None)\n--\n\n"
     "Allow when the path argument at position ``pos`` (or keyword ``kw``) "
     "lies inside ok_dests; buffers and file objects are not paths and "
     "pass."},
    {Py_tp_new, pos_tp_new},
    {Py_tp_call, pos_tp_call},
    {Py_tp_repr, pos_tp_repr},
    {Py_tp_methods, pos_methods},
    {Py_tp_members, pos_members},
    {Py_tp_traverse, pos_tp_traverse},
    {Py_tp_clear, pos_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec pos_spec = {
    .name = "safepyrun.PosAllowPolicy",
    .basicsize = sizeof(SpPosPolicy),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pos_slots,
};

/* LocalWritePolicy: the target must not be a URL, then PosAllowPolicy. */
static PyObject *
local_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *obj, *pargs, *pkwargs, *data; /* borrowed */
    PyObject *target = NULL, *text = NULL;  /* owned */
    PyObject *result = NULL;
    if (policy_parse_call(args, kwargs, "OOOO:LocalWritePolicy", &obj, &pargs,
                          &pkwargs, &data) < 0 ||
        pos_target(self, pargs, pkwargs, &target) < 0) {
        return NULL;
    }
    if (PyBytes_Check(target)) {
        text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(target),
                                    PyBytes_GET_SIZE(target), "replace");
        if (text == NULL) {
            goto done;
        }
    }
    else if (PyUnicode_Check(target)) {
        text = Py_NewRef(target);
    }
    if (text != NULL) {
        PyObject *scheme = PyUnicode_FromString("://");
        int is_url = scheme == NULL ? -1 : PyUnicode_Contains(text, scheme);
        Py_XDECREF(scheme);
        if (is_url < 0) {
            goto done;
        }
        if (is_url) {
            PyErr_Format(PyExc_PermissionError,
                         "safepyrun refused to write a file: %R is a URL, "
                         "not a local path inside ok_dests (write policy "
                         "check)." SP_REMEDY_WRITE,
                         text);
            goto done;
        }
    }
    if (pos_check(target, data) < 0) {
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(target);
    Py_XDECREF(text);
    return result;
}

static PyType_Slot local_slots[] = {
    {Py_tp_doc,
     "LocalWritePolicy(pos=0, kw=None)\n--\n\n"
     "``PosAllowPolicy`` for library writers that also accept URLs: the "
     "target at ``pos`` (or keyword ``kw``) must be a local path inside "
     "ok_dests (buffers and file objects pass); a URL (``s3://...``, "
     "``https://...``) is refused, since trusting the call would also trust "
     "the network traffic it makes."},
    {Py_tp_call, local_tp_call},
    {Py_tp_traverse, pos_tp_traverse},
    {Py_tp_clear, pos_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec local_spec = {
    .name = "safepyrun.LocalWritePolicy",
    .basicsize = 0, /* PosAllowPolicy's layout */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = local_slots,
};

/* ---- PathWritePolicy -------------------------------------------------------- */

static PyObject *
path_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"target_pos", "target_kw", NULL};
    PyObject *target_pos = Py_None, *target_kw = Py_None; /* borrowed */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:PathWritePolicy",
                                     kwlist, &target_pos, &target_kw)) {
        return NULL;
    }
    PyObject *index = NULL; /* owned */
    if (target_pos == Py_None) {
        index = Py_NewRef(Py_None);
    }
    else {
        index = PyNumber_Index(target_pos);
        if (index == NULL) {
            return NULL;
        }
    }
    SpPathPolicy *self = (SpPathPolicy *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(index);
        return NULL;
    }
    self->target_pos = index; /* reference moves into the policy */
    self->target_kw = Py_NewRef(target_kw);
    return (PyObject *)self;
}

static int
path_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpPathPolicy *p = (SpPathPolicy *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(p->target_pos);
    Py_VISIT(p->target_kw);
    return 0;
}

static int
path_tp_clear(PyObject *self)
{
    SpPathPolicy *p = (SpPathPolicy *)self;
    Py_CLEAR(p->target_pos);
    Py_CLEAR(p->target_kw);
    return 0;
}

static PyObject *
path_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    SpPathPolicy *p = (SpPathPolicy *)self;
    PyObject *obj, *pargs, *pkwargs, *data; /* borrowed */
    PyObject *target = NULL;                /* owned */
    if (policy_parse_call(args, kwargs, "OOOO:PathWritePolicy", &obj, &pargs,
                          &pkwargs, &data) < 0 ||
        sp_policy_chk_dest(obj, data) < 0) {
        return NULL;
    }
    if (p->target_pos != NULL && p->target_pos != Py_None) {
        Py_ssize_t pos = PyLong_AsSsize_t(p->target_pos);
        if (pos == -1 && PyErr_Occurred()) {
            return NULL;
        }
        int found = policy_arg(pargs, pos, &target);
        if (found < 0 || (found && sp_policy_chk_dest(target, data) < 0)) {
            Py_XDECREF(target);
            return NULL;
        }
        Py_CLEAR(target);
    }
    if (p->target_kw != NULL) {
        int found = policy_kwarg(pkwargs, p->target_kw, &target);
        if (found < 0 || (found && sp_policy_chk_dest(target, data) < 0)) {
            Py_XDECREF(target);
            return NULL;
        }
        Py_CLEAR(target);
    }
    Py_RETURN_NONE;
}

static PyObject *
path_tp_repr(PyObject *self)
{
    SpPathPolicy *p = (SpPathPolicy *)self;
    static const char *const names[] = {"target_pos", "target_kw"};
    PyObject *values[] = {p->target_pos == NULL ? Py_None : p->target_pos,
                          p->target_kw == NULL ? Py_None : p->target_kw};
    return policy_repr(self, names, values, 2);
}

static PyObject *
path_py_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    SpPathPolicy *p = (SpPathPolicy *)self;
    return Py_BuildValue("O(OO)", (PyObject *)Py_TYPE(self),
                         p->target_pos == NULL ? Py_None : p->target_pos,
                         p->target_kw == NULL ? Py_None : p->target_kw);
}

static PyMethodDef path_methods[] = {
    {"__reduce__", path_py_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef path_members[] = {
    {"target_pos", T_OBJECT, offsetof(SpPathPolicy, target_pos), READONLY,
     "The position of the target argument, or None."},
    {"target_kw", T_OBJECT, offsetof(SpPathPolicy, target_kw), READONLY,
     "The keyword of the target argument, or None."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot path_slots[] = {
    {Py_tp_doc,
     "PathWritePolicy(target_pos=None, target_kw=None)\n--\n\n"
     "Allow a ``Path`` method when the path itself (``obj``), and the target "
     "argument if given by ``target_pos``/``target_kw``, lie inside "
     "ok_dests."},
    {Py_tp_new, path_tp_new},
    {Py_tp_call, path_tp_call},
    {Py_tp_repr, path_tp_repr},
    {Py_tp_methods, path_methods},
    {Py_tp_members, path_members},
    {Py_tp_traverse, path_tp_traverse},
    {Py_tp_clear, path_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec path_spec = {
    .name = "safepyrun.PathWritePolicy",
    .basicsize = sizeof(SpPathPolicy),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = path_slots,
};

/* ---- OpenWritePolicy --------------------------------------------------------- */

static PyObject *
open_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":OpenWritePolicy",
                                     (char *[]){NULL})) {
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static PyObject *
open_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    PyObject *obj, *pargs, *pkwargs, *data;       /* borrowed */
    PyObject *mode = NULL, *key = NULL, *file = NULL; /* owned */
    PyObject *result = NULL;
    if (policy_parse_call(args, kwargs, "OOOO:OpenWritePolicy", &obj, &pargs,
                          &pkwargs, &data) < 0) {
        return NULL;
    }
    Py_ssize_t nargs = PyObject_Length(pargs);
    key = PyUnicode_FromString("mode");
    if (nargs < 0 || key == NULL) {
        goto done;
    }
    int found = policy_kwarg(pkwargs, key, &mode);
    if (found == 0) {
        found = policy_arg(pargs, 1, &mode);
        if (found == 0) {
            mode = PyUnicode_FromString("r");
            found = mode == NULL ? -1 : 1;
        }
    }
    if (found < 0) {
        goto done;
    }
    int writes = 0;
    if (PyUnicode_Check(mode)) {
        for (const char *c = "wax+"; *c && !writes; c++) {
            writes = PyUnicode_FindChar(mode, (Py_UCS4)*c, 0,
                                        PyUnicode_GET_LENGTH(mode), 1) >= 0;
        }
    }
    if (writes) {
        if (nargs > 0) {
            found = policy_arg(pargs, 0, &file);
        }
        else {
            Py_SETREF(key, PyUnicode_FromString("file"));
            found = key == NULL ? -1 : policy_kwarg(pkwargs, key, &file);
        }
        if (found < 0) {
            goto done;
        }
        if (sp_policy_chk_dest(file == NULL ? Py_None : file, data) < 0) {
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(mode);
    Py_XDECREF(key);
    Py_XDECREF(file);
    return result;
}

static PyType_Slot open_slots[] = {
    {Py_tp_doc,
     "OpenWritePolicy()\n--\n\n"
     "Allow ``open(file, mode)``-shaped calls that read; a mode that writes "
     "(w, a, x or +) needs the file inside ok_dests."},
    {Py_tp_new, open_tp_new},
    {Py_tp_call, open_tp_call},
    {Py_tp_traverse, base_tp_traverse},
    {Py_tp_clear, base_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec open_spec = {
    .name = "safepyrun.OpenWritePolicy",
    .basicsize = 0, /* AllowPolicy's layout */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = open_slots,
};

/* ---- set-up ------------------------------------------------------------------ */

static PyObject *
policy_py_data_view(PyObject *module, PyObject *data)
{
    (void)module;
    return sp_policy_data_view(data);
}

static PyMethodDef policy_functions[] = {
    {"policy_data_view", policy_py_data_view, METH_O,
     "policy_data_view(data) -> mappingproxy\n--\n\nThe read-only view of "
     "a run's data that policies receive (a copy).  Exposed for the tests."},
    {NULL, NULL, 0, NULL},
};

/* Create one type with `base` as its only base (NULL: object).  New
 * reference. */
static PyTypeObject *
policy_new_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base)
{
    return (PyTypeObject *)PyType_FromModuleAndSpec(module, spec,
                                                    (PyObject *)base);
}

int
sp_policy_init(PyObject *module)
{
    if (policy_types->base == NULL) {
        PyTypeObject *base = policy_new_type(module, &base_spec, NULL);
        if (base == NULL) {
            return -1;
        }
        policy_types->pos = policy_new_type(module, &pos_spec, base);
        policy_types->path = policy_new_type(module, &path_spec, base);
        policy_types->open = policy_new_type(module, &open_spec, base);
        policy_types->local = policy_types->pos == NULL
                                 ? NULL
                                 : policy_new_type(module, &local_spec,
                                                   policy_types->pos);
        if (policy_types->pos == NULL || policy_types->path == NULL ||
            policy_types->open == NULL || policy_types->local == NULL) {
            Py_CLEAR(policy_types->pos);
            Py_CLEAR(policy_types->path);
            Py_CLEAR(policy_types->open);
            Py_CLEAR(policy_types->local);
            Py_DECREF(base);
            return -1;
        }
        policy_types->base = base; /* set last: marks the set-up done */
    }
    struct {
        const char *name;
        PyTypeObject *type;
    } exported[] = {
        {"AllowPolicy", policy_types->base},
        {"PosAllowPolicy", policy_types->pos},
        {"PathWritePolicy", policy_types->path},
        {"OpenWritePolicy", policy_types->open},
        {"LocalWritePolicy", policy_types->local},
    };
    for (size_t i = 0; i < sizeof(exported) / sizeof(exported[0]); i++) {
        if (PyModule_AddObjectRef(module, exported[i].name,
                                  (PyObject *)exported[i].type) < 0) {
            return -1;
        }
    }
    return PyModule_AddFunctions(module, policy_functions);
}
