/* common.h - small helpers several engine files share.
 *
 * Header-only (static inline): the slot boilerplate of the engine's GC heap
 * types and the iterator-protocol end of its awaitables.
 */
#ifndef SP_COMMON_H
#define SP_COMMON_H

#include "compat.h"

/* The one wording of a refusal's remedy (issue 11): every refusal of the
 * same kind of effect ends with the same sentence, naming what the host can
 * do, so that a person fixes it at once and an LLM stops retrying.  Used by
 * the audit hook (hook.c) and the write policies and chk_dest (policy.c). */
#define SP_REMEDY_WRITE                                                     \
    " Remedy: only the host can allow this, by adding the directory to "    \
    "ok_dests (or trusting the function that writes with allow()); do not " \
    "retry it another way."
#define SP_REMEDY_TRUST                                                     \
    " Remedy: only the host can allow this, by trusting a function that "   \
    "does it with allow(); do not retry it another way."

/* tp_dealloc of a GC heap type whose tp_clear drops every owned field:
 * untrack, clear, free, and release the instance's reference to its type. */
static inline void
sp_gc_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)tp->tp_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* The iterator protocol's side of an am_send result: the yielded value
 * (PYGEN_NEXT), or NULL with StopIteration(value) set (PYGEN_RETURN) or the
 * pending error (PYGEN_ERROR).  Steals `value`.  StopIteration is built
 * explicitly so that a tuple or exception value is not taken as its
 * constructor's arguments. */
static inline PyObject *
sp_send_result_to_python(PySendResult r, PyObject *value)
{
    if (r == PYGEN_NEXT) {
        return value;
    }
    if (r == PYGEN_RETURN) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, value);
        Py_DECREF(value);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

/* Make a class's attributes unchangeable: assigning a class attribute
 * raises no audit event, so a class whose behaviour the engine relies on
 * (a guarded stdlib class, pathlib's path classes) is made immutable the
 * way C types are: setattr then raises TypeError ("cannot set ... of
 * immutable type"), and instances cannot have their __class__ swapped.
 * The flag is not inherited: subclasses stay ordinary classes. */
static inline void
sp_freeze_type(PyTypeObject *tp)
{
    tp->tp_flags |= Py_TPFLAGS_IMMUTABLETYPE;
    PyType_Modified(tp);
}

#endif /* SP_COMMON_H */
