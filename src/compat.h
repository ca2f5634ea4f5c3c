/* compat.h - every CPython version difference the engine cares about.
 *
 * One shim per concern, each saying which versions differ and why.  Code
 * elsewhere calls the shim and never tests PY_VERSION_HEX itself.
 */
#ifndef SP_COMPAT_H
#define SP_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Thread start.  3.12 added the "_thread.start_new_thread" audit event and
 * 3.13 "_thread.start_joinable_thread"; 3.11 raises none, so there the
 * engine wraps _thread.start_new_thread with a C function that asks the hook
 * (see hook.c, sp_hook_thread_guard_install). */
#if PY_VERSION_HEX < 0x030C0000
#define SP_NEED_THREAD_GUARD 1
#else
#define SP_NEED_THREAD_GUARD 0
#endif

/* asyncio.Task.get_context() exists from 3.12; on 3.11 the runner cannot
 * tell which new tasks a cell created and awaits every task that appeared
 * while the cell ran. */
#if PY_VERSION_HEX >= 0x030C0000
#define SP_HAVE_TASK_GET_CONTEXT 1
#else
#define SP_HAVE_TASK_GET_CONTEXT 0
#endif

/* PyDict_GetItemRef is public from 3.13; before that use the borrowed
 * lookup and take a reference.  Same -1/0/1 contract. */
#if PY_VERSION_HEX < 0x030D0000
static inline int
sp_dict_get_ref(PyObject *dict, PyObject *key, PyObject **result)
{
    PyObject *item = PyDict_GetItemWithError(dict, key);
    if (item == NULL) {
        *result = NULL;
        return PyErr_Occurred() ? -1 : 0;
    }
    *result = Py_NewRef(item);
    return 1;
}
#else
#define sp_dict_get_ref PyDict_GetItemRef
#endif

/* The same lookup with a C string key. */
static inline int
sp_dict_get_ref_str(PyObject *dict, const char *key, PyObject **result)
{
    PyObject *k = PyUnicode_FromString(key);
    if (k == NULL) {
        *result = NULL;
        return -1;
    }
    int rc = sp_dict_get_ref(dict, k, result);
    Py_DECREF(k);
    return rc;
}

/* Py_mod_multiple_interpreters exists from 3.12. */
#if PY_VERSION_HEX >= 0x030C0000
#define SP_HAVE_MOD_MULTIPLE_INTERPRETERS 1
#else
#define SP_HAVE_MOD_MULTIPLE_INTERPRETERS 0
#endif

/* PyErr_GetRaisedException / PyErr_SetRaisedException are 3.12+; 3.11
 * has only the (type, value, traceback) triple.  Same contract: get
 * returns a new reference to the normalised exception (traceback attached)
 * and clears it; set steals the reference. */
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *
sp_err_get_raised(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(type);
    return value;
}

static inline void
sp_err_set_raised(PyObject *exc)
{
    if (exc == NULL) {
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
}
#else
#define sp_err_get_raised PyErr_GetRaisedException
#define sp_err_set_raised PyErr_SetRaisedException
#endif

/* Whether weak reference `wr` still refers to `obj`.  PyWeakref_GetObject
 * (borrowed) is deprecated in 3.13, which adds PyWeakref_GetRef. */
static inline int
sp_weakref_is(PyObject *wr, PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *ref = NULL;
    if (PyWeakref_GetRef(wr, &ref) < 0) {
        PyErr_Clear();
        return 0;
    }
    int same = ref == obj;
    Py_XDECREF(ref);
    return same;
#else
    return PyWeakref_GetObject(wr) == obj;
#endif
}

/* The object weak reference `wr` refers to: 1 with *obj a new reference,
 * 0 when dead (or not a weakref), -1 with an exception.  PyWeakref_GetRef
 * is 3.13+; before it, the borrowed PyWeakref_GetObject. */
static inline int
sp_weakref_get_ref(PyObject *wr, PyObject **obj)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyWeakref_GetRef(wr, obj);
#else
    PyObject *o = PyWeakref_GetObject(wr);
    *obj = NULL;
    if (o == NULL) {
        return -1;
    }
    if (o == Py_None) {
        return 0;
    }
    *obj = Py_NewRef(o);
    return 1;
#endif
}

/* The name of an object's type for error messages.  "%T" in
 * PyErr_Format / PyUnicode_FromFormat exists only from 3.13 (3.11 prints it
 * literally, 3.12 raises SystemError), so messages use "%.200s" with this. */
#define SP_TYPE_NAME(obj) (Py_TYPE(obj)->tp_name)

/* A type's attribute dictionary, as a new reference.  From 3.12 the static
 * builtin types (int, str, ...) keep theirs per interpreter and tp_dict is
 * NULL: PyType_GetDict is the way in.  3.11 has no PyType_GetDict. */
static inline PyObject *
sp_type_dict(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyType_GetDict(tp);
#else
    return Py_XNewRef(tp->tp_dict);
#endif
}

/* Whether weak reference `wr` no longer refers to a live object. */
static inline int
sp_weakref_dead(PyObject *wr)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *ref = NULL;
    if (PyWeakref_GetRef(wr, &ref) < 0) {
        PyErr_Clear();
        return 0;
    }
    Py_XDECREF(ref);
    return ref == NULL;
#else
    return PyWeakref_GetObject(wr) == Py_None;
#endif
}

/* Cheap change detection for the dicts the shell pins (shell.c).  3.12
 * added dict watchers (PyDict_AddWatcher); 3.11 has none, but there every
 * change of a dict bumps its ma_version_tag (a public field, deprecated in
 * 3.12 and gone later, hence watchers there). */
#if PY_VERSION_HEX >= 0x030C0000
#define SP_HAVE_DICT_WATCHERS 1
#else
#define SP_HAVE_DICT_WATCHERS 0
static inline unsigned long long
sp_dict_version(PyObject *dict)
{
    return (unsigned long long)((PyDictObject *)dict)->ma_version_tag;
}
#endif

/* Py_AddPendingCall from a thread that is not the main thread: before
 * 3.13 the interpreter decides in the *calling* thread whether the pending
 * call can run, finds it cannot, and does not set the eval breaker, so the
 * main thread notices the call only when it next takes the GIL.  There the
 * watchdog asks for the GIL once after queueing (a GIL drop request makes
 * the main thread take the GIL again within the switch interval); 3.13
 * signals the main thread directly. */
#if PY_VERSION_HEX < 0x030D0000
#define SP_PENDING_CALL_NEEDS_GIL 1
#else
#define SP_PENDING_CALL_NEEDS_GIL 0
#endif

#endif /* SP_COMPAT_H */
