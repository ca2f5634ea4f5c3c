/* trust.c - the trusted-call search and everything that decides with it.
 *
 * A refusal is turned into an allowance when a callable the host trusted
 * with allow() is active: its frame is on the Python stack between the
 * event and the first frame of cell code, or (for async tools whose frames
 * are gone) it was recorded by track_call in the current context.  Trust is
 * decided by identity: a frame's code object is looked up in the registry
 * (registry.c); names are never consulted, except 'pkg.*' prefixes, and a
 * frame running cell code is never trusted and ends the search.
 *
 * A grant may carry policies: policy(obj, args, kwargs, data) with the
 * call's real arguments (read from the frame: `self` removed for methods,
 * *args and **kwargs expanded) and the run's data.  A policy refuses by
 * raising PermissionError (or returning False); any policy that passes
 * allows; when all refuse, the refusal lists each message.  Grants that
 * name the attribute take precedence over a blanket grant of its owner.
 *
 * The same policies gate the call itself (sp_trust_gate_call, driven by
 * monitor.c): inside a run, a call of a function registered with
 * (name, policy) runs the policies before the body.
 *
 * Also here: set_data (default policy data), the pre_deny hook's info
 * objects, track_call, and in_run.  Threading: GIL held throughout.
 */
#include "common.h"
#include "state.h"
#include "trust.h"

#include "gate.h"
#include "paths.h"
#include "policy.h"
#include "monitor.h"
#include "registry.h"
#include "report.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

/* This file's part of the engine state (state.h). */
static struct sp_trust_state *const trust = &sp_state.trust;

/* Frames the search walks at most; deeper stacks are not trusted. */
#define TRUST_MAX_DEPTH 1000

/* ---- arguments of a frame ---------------------------------------------- */

/* The values of a code's free variables, in co_freevars order, read from
 * the frame's `locals` (an unbound one is trust->unbound): what tells apart
 * functions that share the code.  New tuple, or NULL with an exception. */
static PyObject *
trust_freevals_of_frame(PyObject *locals, PyCodeObject *code)
{
    PyObject *names = PyCode_GetFreevars(code);
    if (names == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *vals = PyTuple_New(n);
    for (Py_ssize_t i = 0; vals != NULL && i < n; i++) {
        PyObject *v = PyObject_GetItem(locals, PyTuple_GET_ITEM(names, i));
        if (v == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError) &&
                !PyErr_ExceptionMatches(PyExc_NameError)) {
                Py_CLEAR(vals);
                break;
            }
            PyErr_Clear();
            v = Py_NewRef(trust->unbound);
        }
        PyTuple_SET_ITEM(vals, i, v);
    }
    Py_DECREF(names);
    return vals;
}

/* The same for a function object: the contents of its closure's cells.
 * New tuple (empty without a closure), or NULL with an exception. */
static PyObject *
trust_freevals_of_function(PyObject *fn)
{
    PyObject *closure = PyFunction_GET_CLOSURE(fn); /* borrowed, or NULL */
    Py_ssize_t n = closure != NULL ? PyTuple_GET_SIZE(closure) : 0;
    PyObject *vals = PyTuple_New(n);
    for (Py_ssize_t i = 0; vals != NULL && i < n; i++) {
        PyObject *v = PyCell_GET(PyTuple_GET_ITEM(closure, i));
        PyTuple_SET_ITEM(vals, i, Py_NewRef(v != NULL ? v : trust->unbound));
    }
    return vals;
}

/* Whether grant `g` is for the call whose free variables hold `freevals`
 * (a tuple): a grant made from a function with a closure holds only for
 * the call whose free variables hold what the function's cells hold. */
static int
trust_grant_closure_matches(PyObject *g, PyObject *freevals)
{
    PyObject *cells = PyTuple_GET_ITEM(g, SP_GRANT_CLOSURE);
    if (cells == Py_None) {
        return 1;
    }
    if (freevals == NULL || !PyTuple_Check(cells) ||
        PyTuple_GET_SIZE(cells) != PyTuple_GET_SIZE(freevals)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cells); i++) {
        PyObject *cell = PyTuple_GET_ITEM(cells, i);
        PyObject *v = PyCell_Check(cell) ? PyCell_GET(cell) : NULL;
        if ((v != NULL ? v : trust->unbound) != PyTuple_GET_ITEM(freevals, i)) {
            return 0;
        }
    }
    return 1;
}

/* Rebuild the call's arguments from `frame`'s locals: *args_out a new
 * list of positional values (then *args expanded), *kwargs_out a new dict
 * (keyword-only values, then **kwargs), and *freevals_out (when not NULL)
 * the values of its free variables.  0 ok, -1 error. */
static int
trust_frame_args(PyFrameObject *frame, PyCodeObject *code, PyObject **args_out,
                 PyObject **kwargs_out, PyObject **freevals_out)
{
    PyObject *locals = NULL, *names = NULL, *args = NULL, *kwargs = NULL;
    int rc = -1;
    *args_out = *kwargs_out = NULL;
    if (freevals_out != NULL) {
        *freevals_out = NULL;
    }
    locals = PyFrame_GetLocals(frame);
    names = PyCode_GetVarnames(code);
    args = PyList_New(0);
    kwargs = PyDict_New();
    if (locals == NULL || names == NULL || args == NULL || kwargs == NULL) {
        goto done;
    }
    int argc = code->co_argcount, kwc = code->co_kwonlyargcount;
    int i = 0, n = (int)PyTuple_GET_SIZE(names);
    for (; i < argc + kwc && i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *value = PyObject_GetItem(locals, name);
        if (value == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                goto done;
            }
            PyErr_Clear(); /* deleted by the body: not there to check */
            continue;
        }
        int r = i < argc ? PyList_Append(args, value)
                         : PyDict_SetItem(kwargs, name, value);
        Py_DECREF(value);
        if (r < 0) {
            goto done;
        }
    }
    for (int flag = 0; flag < 2; flag++) {
        int want = flag == 0 ? CO_VARARGS : CO_VARKEYWORDS;
        if (!(code->co_flags & want) || i >= n) {
            continue;
        }
        PyObject *value = PyObject_GetItem(locals, PyTuple_GET_ITEM(names, i++));
        if (value == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                goto done;
            }
            PyErr_Clear();
            continue;
        }
        int r;
        if (flag == 0) {
            PyObject *ext = PySequence_List(value);
            r = ext == NULL ? -1 : PyList_SetSlice(args, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, ext);
            Py_XDECREF(ext);
        }
        else {
            r = PyDict_Check(value) ? PyDict_Update(kwargs, value) : 0;
        }
        Py_DECREF(value);
        if (r < 0) {
            goto done;
        }
    }
    if (freevals_out != NULL &&
        (*freevals_out = trust_freevals_of_frame(locals, code)) == NULL) {
        goto done;
    }
    *args_out = Py_NewRef(args);
    *kwargs_out = Py_NewRef(kwargs);
    rc = 0;
done:
    Py_XDECREF(locals);
    Py_XDECREF(names);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return rc;
}

/* ---- judging grants ------------------------------------------------------ */

/* Run one policy.  1 passed, 0 refused (message appended to `refusals`),
 * -1 error (a policy's own non-PermissionError exception). */
static int
trust_run_policy(PyObject *policy, PyObject *obj, PyObject *args,
                 PyObject *kwargs, PyObject *data, PyObject *refusals)
{
    PyObject *res = PyObject_CallFunctionObjArgs(policy, obj, args, kwargs,
                                                 data, NULL);
    if (res == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_PermissionError)) {
            return -1;
        }
        PyObject *exc = sp_err_get_raised();
        PyObject *msg = PyObject_Str(exc);
        Py_DECREF(exc);
        int rc = msg == NULL ? -1 : PyList_Append(refusals, msg);
        Py_XDECREF(msg);
        return rc < 0 ? -1 : 0;
    }
    int refused = res == Py_False;
    Py_DECREF(res);
    if (!refused) {
        return 1;
    }
    PyObject *msg = PyUnicode_FromFormat("%R refused", policy);
    int rc = msg == NULL ? -1 : PyList_Append(refusals, msg);
    Py_XDECREF(msg);
    return rc < 0 ? -1 : 0;
}

/* Judge `grants` for one call whose arguments are `args` (a list, self
 * included for methods) and `kwargs`, and whose free variables hold
 * `freevals` (a tuple).  `named_only` considers only grants that name an
 * attribute (the call gate).
 * Returns 1 trusted, 0 refused by policies, 2 no grant applies, -1 error. */
static int
trust_judge(PyObject *grants, PyObject *args, PyObject *kwargs,
            PyObject *freevals, PyObject *data, PyObject *refusals,
            int named_only)
{
    Py_ssize_t n = PyTuple_GET_SIZE(grants);
    PyObject *first = PyList_GET_SIZE(args) > 0 ? PyList_GET_ITEM(args, 0) : NULL;
    int any_named = 0, applies = 0;
    /* Pass 1: which grants apply, and do named ones exist among them. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *g = PyTuple_GET_ITEM(grants, i);
        PyObject *inst = PyTuple_GET_ITEM(g, SP_GRANT_INSTANCE);
        if ((inst != Py_None && inst != first) ||
            !trust_grant_closure_matches(g, freevals)) {
            continue;
        }
        applies = 1;
        any_named |= PyTuple_GET_ITEM(g, SP_GRANT_NAME) != Py_None;
    }
    if (!applies || (named_only && !any_named)) {
        return 2;
    }
    /* Pass 2: an unconditional grant allows; else any passing policy. */
    int policies = 0;
    for (int want_policy = 0; want_policy < 2; want_policy++) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *g = PyTuple_GET_ITEM(grants, i);
            PyObject *inst = PyTuple_GET_ITEM(g, SP_GRANT_INSTANCE);
            PyObject *policy = PyTuple_GET_ITEM(g, SP_GRANT_POLICY);
            if ((inst != Py_None && inst != first) ||
                !trust_grant_closure_matches(g, freevals) ||
                (any_named && PyTuple_GET_ITEM(g, SP_GRANT_NAME) == Py_None)) {
                continue;
            }
            if (!want_policy) {
                if (policy == Py_None) {
                    return 1;
                }
                continue;
            }
            policies++;
            int is_method = PyTuple_GET_ITEM(g, SP_GRANT_IS_METHOD) == Py_True;
            PyObject *obj = is_method && first != NULL ? first : Py_None;
            PyObject *rest = is_method && first != NULL
                ? PyList_GetSlice(args, 1, PY_SSIZE_T_MAX)
                : Py_NewRef(args);
            if (rest == NULL) {
                return -1;
            }
            /* A read-only view of a copy per call: a policy (or what it
             * calls) cannot change the run's data for the next one. */
            PyObject *view = sp_policy_data_view(data);
            if (view == NULL) {
                Py_DECREF(rest);
                return -1;
            }
            int r = trust_run_policy(policy, obj, rest, kwargs, view, refusals);
            Py_DECREF(view);
            Py_DECREF(rest);
            if (r != 0) {
                return r; /* 1 passed, -1 error */
            }
        }
    }
    return policies > 0 ? 0 : 2;
}

/* Judge the grants of the call running in `frame`. Same returns. */
static int
trust_judge_frame(SpRun *run, PyFrameObject *frame, PyCodeObject *code,
                  PyObject *grants, PyObject *refusals, int named_only)
{
    PyObject *args, *kwargs, *freevals;
    if (trust_frame_args(frame, code, &args, &kwargs, &freevals) < 0) {
        return -1;
    }
    int r = trust_judge(grants, args, kwargs, freevals, run->data, refusals,
                        named_only);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    Py_DECREF(freevals);
    return r;
}

/* One call of a track_call tool, recorded in the `safepyrun.calls`
 * context variable while it is in progress.  Only the engine creates
 * them; a cell can read the variable (contexts are iterable) and set it,
 * so the search accepts nothing but an exact tuple of these records, and
 * a record stops counting when its call has returned: trust handed to the
 * work a tool scheduled ends with the tool's call. */
typedef struct {
    PyObject_HEAD
    PyObject *fn;     /* owned: the tracked callable */
    PyObject *args;   /* owned: tuple of positional arguments */
    PyObject *kwargs; /* owned: dict (a copy made at the call) */
    int active;       /* nonzero while the call (or its awaitable) runs */
} SpCallRecord;

static int
record_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpCallRecord *r = (SpCallRecord *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(r->fn);
    Py_VISIT(r->args);
    Py_VISIT(r->kwargs);
    return 0;
}

static int
record_tp_clear(PyObject *self)
{
    SpCallRecord *r = (SpCallRecord *)self;
    r->active = 0;
    Py_CLEAR(r->fn);
    Py_CLEAR(r->args);
    Py_CLEAR(r->kwargs);
    return 0;
}

static PyType_Slot record_slots[] = {
    {Py_tp_doc, "A call of a track_call tool in progress (opaque)."},
    {Py_tp_traverse, record_tp_traverse},
    {Py_tp_clear, record_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec record_spec = {
    .name = "safepyrun._engine.CallRecord",
    .basicsize = sizeof(SpCallRecord),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = record_slots,
};

/* New active record of fn(*args, **kwargs).  New reference or NULL. */
static SpCallRecord *
record_new(PyObject *fn, PyObject *args, PyObject *kwargs)
{
    SpCallRecord *r = PyObject_GC_New(SpCallRecord, trust->record);
    if (r == NULL) {
        return NULL;
    }
    Py_INCREF(trust->record);
    r->fn = Py_NewRef(fn);
    r->args = Py_NewRef(args);
    r->kwargs = Py_NewRef(kwargs);
    r->active = 1;
    PyObject_GC_Track(r);
    return r;
}

/* "module.qualname" of the code running in `frame` (the module from the
 * frame's globals, read from the dict: no code runs), or the qualname.
 * New reference, or NULL with no exception when it cannot be made. */
static PyObject *
trust_frame_name(PyFrameObject *frame, PyCodeObject *code)
{
    PyObject *globals = PyFrame_GetGlobals(frame);
    PyObject *module = NULL, *res = NULL;
    if (globals != NULL && PyDict_Check(globals) &&
        sp_dict_get_ref(globals, trust->name_key, &module) > 0 &&
        PyUnicode_CheckExact(module)) {
        res = PyUnicode_FromFormat("%U.%U", module, code->co_qualname);
    }
    else {
        res = Py_NewRef(code->co_qualname);
    }
    Py_XDECREF(module);
    Py_XDECREF(globals);
    PyErr_Clear();
    return res;
}

/* The same for a trusted callable (a native, or a function track_call
 * recorded): its __module__ and __qualname__ when they are plain str.
 * New reference, or NULL with no exception. */
static PyObject *
trust_callable_name(PyObject *fn)
{
    PyObject *module = PyObject_GetAttrString(fn, "__module__");
    PyObject *qualname = PyObject_GetAttrString(fn, "__qualname__");
    PyObject *res = NULL;
    if (qualname != NULL && PyUnicode_CheckExact(qualname)) {
        res = module != NULL && PyUnicode_CheckExact(module)
            ? PyUnicode_FromFormat("%U.%U", module, qualname)
            : Py_NewRef(qualname);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    PyErr_Clear();
    return res;
}

/* Judge the calls track_call recorded in this context, newest first;
 * *by (when not NULL) names the one that trusts. */
static int
trust_judge_tracked(SpRun *run, PyObject *refusals, PyObject **by)
{
    PyObject *calls = NULL;
    if (PyContextVar_Get(trust->calls_var, trust->empty_tuple, &calls) < 0) {
        return -1;
    }
    int verdict = 2;
    if (!PyTuple_CheckExact(calls)) {
        Py_DECREF(calls); /* not the engine's: a forged value counts for nothing */
        return 2;
    }
    for (Py_ssize_t i = PyTuple_GET_SIZE(calls) - 1; i >= 0 && verdict == 2; i--) {
        PyObject *item = PyTuple_GET_ITEM(calls, i);
        if (!Py_IS_TYPE(item, trust->record) || !((SpCallRecord *)item)->active) {
            continue;
        }
        SpCallRecord *rec = (SpCallRecord *)Py_NewRef(item);
        PyObject *fn = rec->fn;
        PyObject *grants = PyFunction_Check(fn)
            ? sp_registry_code_grants(PyFunction_GET_CODE(fn)) : NULL;
        PyObject *args = grants == NULL ? NULL : PySequence_List(rec->args);
        PyObject *freevals = args == NULL ? NULL : trust_freevals_of_function(fn);
        if (grants != NULL && freevals == NULL) {
            verdict = -1;
        }
        else if (grants != NULL) {
            verdict = trust_judge(grants, args, rec->kwargs, freevals, run->data,
                                  refusals, 0);
            if (verdict == 1 && by != NULL) {
                *by = trust_callable_name(fn);
            }
        }
        Py_XDECREF(args);
        Py_XDECREF(freevals);
        Py_XDECREF(grants);
        Py_DECREF(rec);
    }
    Py_DECREF(calls);
    return verdict;
}

int
sp_trust_search(SpRun *run, PyObject **refusals)
{
    return sp_trust_search_by(run, refusals, NULL);
}

int
sp_trust_search_by(SpRun *run, PyObject **refusals, PyObject **by)
{
    if (by != NULL) {
        *by = NULL;
    }
    *refusals = PyList_New(0);
    if (*refusals == NULL) {
        return -1;
    }
    int verdict = 2, saw_cell = 0;
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed, then owned */
    /* A trusted native called directly by the innermost frame: nothing
     * stands between it and the event. */
    PyObject *native = frame != NULL ? sp_monitor_native_call(frame) : NULL;
    PyObject *native_grants = native != NULL ? sp_registry_native_grants(native) : NULL;
    if (native_grants != NULL) {
        Py_DECREF(native_grants); /* natives are registered without policies */
        Py_CLEAR(*refusals);
        if (by != NULL) {
            *by = trust_callable_name(native);
        }
        return 1;
    }
    sp_walk w;
    sp_walk_start(&w);
    PyFrameObject *f;
    while (verdict == 2 && w.depth < TRUST_MAX_DEPTH &&
           (f = sp_walk_next(&w)) != NULL) {
        PyCodeObject *code = w.code; /* borrowed from the walk */
        if (sp_gate_is_cell_code(code)) {
            saw_cell = 1;
            break;
        }
        PyObject *grants = sp_registry_code_grants((PyObject *)code);
        if (grants != NULL) {
            verdict = trust_judge_frame(run, f, code, grants, *refusals, 0);
            Py_DECREF(grants);
        }
        if (verdict == 2) {
            PyObject *globals = PyFrame_GetGlobals(f);
            int module_level = PyUnicode_Check(code->co_name) &&
                PyUnicode_Compare(code->co_name, trust->module_name) == 0;
            if (globals == NULL) {
                verdict = -1;
            }
            else if (sp_registry_globals_trusted(globals, module_level)) {
                verdict = 1;
            }
            Py_XDECREF(globals);
        }
        if (verdict == 1 && by != NULL) {
            *by = trust_frame_name(f, code);
        }
    }
    if (verdict == 2 && w.depth >= TRUST_MAX_DEPTH) {
        saw_cell = 1; /* deeper than we look: not proven host code */
    }
    sp_walk_stop(&w);
    if (verdict == 2 && PyErr_Occurred()) {
        verdict = -1; /* PyFrame_GetBack ran out of memory */
    }
    if (verdict == 2 && !saw_cell) {
        verdict = trust_judge_tracked(run, *refusals, by);
    }
    if (verdict == 1 || verdict < 0) {
        Py_CLEAR(*refusals);
    }
    return verdict < 0 ? -1 : verdict == 1;
}

/* A str argument of a report's "call" event, as is. */
static PyObject *
trust_plain_str(PyObject *obj)
{
    return PyUnicode_Check(obj) ? PyUnicode_FromObject(obj) : PyObject_Repr(obj);
}

int
sp_trust_gate_call(PyFrameObject *frame, PyObject *code)
{
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    if (active <= 0) {
        return active;
    }
    PyObject *refusals = NULL, *grants = NULL;
    int rc = -1;
    grants = sp_registry_code_grants(code);
    refusals = PyList_New(0);
    if (grants == NULL || refusals == NULL) {
        rc = refusals == NULL ? -1 : 0;
        goto done;
    }
    int verdict = trust_judge_frame(run, frame, (PyCodeObject *)code, grants,
                                    refusals, 1);
    if (verdict < 0) {
        goto done;
    }
    if (verdict == 0) {
        PyObject *sep = PyUnicode_FromString("; ");
        PyObject *joined = sep == NULL ? NULL : PyUnicode_Join(sep, refusals);
        Py_XDECREF(sep);
        PyObject *exc = joined == NULL ? NULL : PyObject_CallFunction(
            PyExc_PermissionError, "N",
            PyUnicode_FromFormat("safepyrun refused the call %U(): %U",
                                 ((PyCodeObject *)code)->co_qualname, joined));
        Py_XDECREF(joined);
        if (run->report != NULL) {
            /* Reported as a "call" event: the call's policies refused it. */
            PyObject *what = PyTuple_Pack(1, ((PyCodeObject *)code)->co_qualname);
            PyErr_Clear();
            sp_report_event(run, "call", what, trust_plain_str, "denied", NULL);
            Py_XDECREF(what);
        }
        if (exc != NULL && sp_context_record_denial(run, exc) == 0) {
            PyErr_SetObject(PyExc_PermissionError, exc);
        }
        Py_XDECREF(exc);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(grants);
    Py_XDECREF(refusals);
    Py_DECREF(run);
    return rc;
}

/* ---- pre_deny ------------------------------------------------------------ */

/* What pre_deny(info) is told, in the published implementation's shape:
 * info.args/kwargs are the first call's (a track_call tool's, else the
 * innermost frame's), the event's own arguments are info.raw.args. */
static PyStructSequence_Field deny_info_fields[] = {
    {"event", "the audit event"},
    {"args", "the first call's positional arguments (info.call.args; the "
             "event's own are info.raw.args)"},
    {"kwargs", "the first call's keyword arguments"},
    {"data", "the run's data (ok_dests and RunPython's extra keywords)"},
    {"calls", "the calls active, track_call tools first, then frames "
              "innermost first, up to the cell's (CallInfo)"},
    {"call", "the first of calls, or None"},
    {"raw", "the event as raised (RawDenyInfo)"},
    {NULL, NULL},
};

static PyStructSequence_Desc deny_info_desc = {
    "safepyrun.DenyInfo",
    "What pre_deny(info) is told about a would-be refusal; "
    "info.find(name) is the first call whose name or qualname is name.",
    deny_info_fields, 7,
};

static PyStructSequence_Field raw_deny_info_fields[] = {
    {"args", "the audit event's arguments"},
    {"frame", "the innermost Python frame, or None"},
    {"msg", "what would be refused"},
    {"calls", "the track_call calls in progress (CallInfo)"},
    {NULL, NULL},
};

static PyStructSequence_Desc raw_deny_info_desc = {
    "safepyrun.RawDenyInfo",
    "A would-be refusal as the audit hook saw it.",
    raw_deny_info_fields, 4,
};

static PyStructSequence_Field call_info_fields[] = {
    {"fn", "the callable (a track_call tool), or None for a frame"},
    {"args", "positional arguments (a list)"},
    {"kwargs", "keyword arguments (a dict)"},
    {"module", "the module (globals __name__) of the function"},
    {"qualname", "its qualified name"},
    {"name", "module.qualname (qualname without a module)"},
    {"frame", "the frame, or None"},
    {"source", "'tracked' or 'frame'"},
    {NULL, NULL},
};

static PyStructSequence_Desc call_info_desc = {
    "safepyrun.CallInfo",
    "One active call, as pre_deny sees it.",
    call_info_fields, 8,
};

/* A CallInfo.  `name` is module.qualname, or qualname without a module.
 * Borrows everything.  New reference or NULL. */
static PyObject *
trust_new_call_info(PyObject *fn, PyObject *args, PyObject *kwargs,
                    PyObject *module, PyObject *qualname, PyObject *frame,
                    const char *source)
{
    PyObject *name = module != Py_None && PyUnicode_Check(module)
        ? PyUnicode_FromFormat("%U.%U", module, qualname)
        : Py_NewRef(qualname);
    PyObject *src = PyUnicode_FromString(source);
    PyObject *info = name == NULL || src == NULL ? NULL
                     : PyStructSequence_New(trust->call_info);
    if (info == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(src);
        return NULL;
    }
    PyStructSequence_SetItem(info, 0, Py_NewRef(fn));
    PyStructSequence_SetItem(info, 1, Py_NewRef(args));
    PyStructSequence_SetItem(info, 2, Py_NewRef(kwargs));
    PyStructSequence_SetItem(info, 3, Py_NewRef(module));
    PyStructSequence_SetItem(info, 4, Py_NewRef(qualname));
    PyStructSequence_SetItem(info, 5, name); /* steals */
    PyStructSequence_SetItem(info, 6, Py_NewRef(frame));
    PyStructSequence_SetItem(info, 7, src);  /* steals */
    return info;
}

/* The globals' __name__ (borrowed), Py_None when absent; NULL on error. */
static PyObject *
trust_module_name(PyObject *globals)
{
    if (globals == NULL || !PyDict_Check(globals)) {
        return Py_None;
    }
    PyObject *module = PyDict_GetItemWithError(globals, trust->name_key);
    if (module == NULL) {
        return PyErr_Occurred() ? NULL : Py_None;
    }
    return module;
}

/* CallInfo for one frame.  New reference or NULL. */
static PyObject *
trust_call_info(PyFrameObject *frame)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *globals = PyFrame_GetGlobals(frame);
    PyObject *args = NULL, *kwargs = NULL, *info = NULL;
    if (trust_frame_args(frame, code, &args, &kwargs, NULL) < 0) {
        goto done;
    }
    PyObject *module = trust_module_name(globals); /* borrowed */
    if (module != NULL) {
        info = trust_new_call_info(Py_None, args, kwargs, module,
                                   code->co_qualname, (PyObject *)frame,
                                   "frame");
    }
done:
    Py_DECREF(code);
    Py_XDECREF(globals);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return info;
}

/* CallInfo for the track_call tools in progress in this context, newest
 * first, appended to `calls`.  0 / -1. */
static int
trust_tracked_call_infos(PyObject *calls)
{
    PyObject *records = NULL;
    if (PyContextVar_Get(trust->calls_var, trust->empty_tuple, &records) < 0) {
        return -1;
    }
    int rc = 0;
    if (!PyTuple_CheckExact(records)) {
        goto done; /* not the engine's: nothing to tell */
    }
    for (Py_ssize_t i = PyTuple_GET_SIZE(records) - 1; i >= 0 && rc == 0; i--) {
        PyObject *item = PyTuple_GET_ITEM(records, i);
        if (!Py_IS_TYPE(item, trust->record) || !((SpCallRecord *)item)->active) {
            continue;
        }
        SpCallRecord *rec = (SpCallRecord *)item;
        PyObject *fn = rec->fn, *info = NULL;
        PyObject *args = PySequence_List(rec->args);
        PyObject *kwargs = args == NULL ? NULL : PyDict_Copy(rec->kwargs);
        PyObject *qualname = NULL, *module = NULL;
        if (kwargs != NULL && PyFunction_Check(fn)) {
            qualname = Py_NewRef(((PyFunctionObject *)fn)->func_qualname);
            module = trust_module_name(PyFunction_GET_GLOBALS(fn));
            Py_XINCREF(module);
        }
        else if (kwargs != NULL) {
            qualname = PyUnicode_FromString(Py_TYPE(fn)->tp_name);
            module = Py_NewRef(Py_None);
        }
        if (qualname != NULL && module != NULL) {
            info = trust_new_call_info(fn, args, kwargs, module, qualname,
                                       Py_None, "tracked");
        }
        if (info == NULL || PyList_Append(calls, info) < 0) {
            rc = -1;
        }
        Py_XDECREF(info);
        Py_XDECREF(args);
        Py_XDECREF(kwargs);
        Py_XDECREF(qualname);
        Py_XDECREF(module);
    }
done:
    Py_DECREF(records);
    return rc;
}

/* The active Python calls for pre_deny: frames innermost first, up to and
 * including the first frame of cell code, appended to `calls`; *innermost
 * is set to a new reference to the innermost frame (or None).  0 / -1. */
static int
trust_frame_call_infos(PyObject *calls, PyObject **innermost)
{
    *innermost = NULL;
    sp_walk w;
    sp_walk_start(&w);
    PyFrameObject *f;
    int rc = 0;
    while (w.depth < TRUST_MAX_DEPTH && (f = sp_walk_next(&w)) != NULL) {
        if (*innermost == NULL) {
            *innermost = Py_NewRef(f);
        }
        PyObject *info = trust_call_info(f);
        if (info == NULL || PyList_Append(calls, info) < 0) {
            Py_XDECREF(info);
            rc = -1;
            break;
        }
        Py_DECREF(info);
        if (sp_gate_is_cell_code(w.code)) {
            break;
        }
    }
    sp_walk_stop(&w);
    if (rc == 0 && PyErr_Occurred()) {
        rc = -1; /* PyFrame_GetBack ran out of memory */
    }
    if (*innermost == NULL) {
        *innermost = Py_NewRef(Py_None);
    }
    if (rc < 0) {
        Py_CLEAR(*innermost);
    }
    return rc;
}

/* The DenyInfo for a would-be refusal.  New reference or NULL. */
static PyObject *
trust_deny_info(SpRun *run, const char *event, PyObject *args, const char *what)
{
    PyObject *info = NULL, *calls = NULL, *tracked = NULL, *frame = NULL;
    PyObject *raw = NULL;
    calls = PyList_New(0);
    if (calls == NULL || trust_tracked_call_infos(calls) < 0) {
        goto done;
    }
    tracked = PyList_GetSlice(calls, 0, PyList_GET_SIZE(calls));
    if (tracked == NULL || trust_frame_call_infos(calls, &frame) < 0) {
        goto done;
    }
    raw = PyStructSequence_New(trust->raw_deny_info);
    info = raw == NULL ? NULL : PyStructSequence_New(trust->deny_info);
    PyObject *name = info == NULL ? NULL : PyUnicode_FromString(event);
    PyObject *msg = name == NULL ? NULL : PyUnicode_FromString(what);
    PyObject *view = msg == NULL ? NULL : sp_policy_data_view(run->data);
    if (view == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(msg);
        Py_CLEAR(info);
        goto done;
    }
    PyStructSequence_SetItem(raw, 0, Py_NewRef(args));
    PyStructSequence_SetItem(raw, 1, Py_NewRef(frame));
    PyStructSequence_SetItem(raw, 2, msg);          /* steals */
    PyStructSequence_SetItem(raw, 3, Py_NewRef(tracked));
    PyObject *first = PyList_GET_SIZE(calls) > 0 ? PyList_GET_ITEM(calls, 0)
                                                 : NULL; /* borrowed */
    PyStructSequence_SetItem(info, 0, name);        /* steals */
    PyStructSequence_SetItem(info, 1, first != NULL
        ? Py_NewRef(PyStructSequence_GET_ITEM(first, 1))
        : PyTuple_New(0));
    PyStructSequence_SetItem(info, 2, first != NULL
        ? Py_NewRef(PyStructSequence_GET_ITEM(first, 2))
        : PyDict_New());
    PyStructSequence_SetItem(info, 3, view);        /* steals */
    PyStructSequence_SetItem(info, 4, Py_NewRef(calls));
    PyStructSequence_SetItem(info, 5, Py_NewRef(first != NULL ? first : Py_None));
    PyStructSequence_SetItem(info, 6, Py_NewRef(raw));
    if (PyStructSequence_GET_ITEM(info, 1) == NULL ||
        PyStructSequence_GET_ITEM(info, 2) == NULL) {
        Py_CLEAR(info);
    }
done:
    Py_XDECREF(calls);
    Py_XDECREF(tracked);
    Py_XDECREF(frame);
    Py_XDECREF(raw);
    return info;
}

/* DenyInfo.find(name): the first call whose name or qualname is `name`,
 * else None. */
static PyObject *
trust_deny_info_find(PyObject *self, PyObject *name)
{
    if (!Py_IS_TYPE(self, trust->deny_info)) {
        PyErr_SetString(PyExc_TypeError, "find() needs a DenyInfo");
        return NULL;
    }
    PyObject *calls = PyStructSequence_GET_ITEM(self, 4); /* borrowed */
    for (Py_ssize_t i = 0; PyList_Check(calls) && i < PyList_GET_SIZE(calls); i++) {
        PyObject *call = PyList_GET_ITEM(calls, i);
        for (int field = 5; field >= 4; field--) { /* name, then qualname */
            int eq = PyObject_RichCompareBool(
                PyStructSequence_GET_ITEM(call, field), name, Py_EQ);
            if (eq != 0) {
                return eq < 0 ? NULL : Py_NewRef(call);
            }
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef trust_deny_info_find_def = {
    "find", trust_deny_info_find, METH_O,
    "find(name) -> the first CallInfo whose name or qualname is name, or None",
};

int
sp_trust_pre_deny(SpRun *run, const char *event, PyObject *args,
                  const char *what)
{
    if (run->pre_deny == NULL) {
        return 0;
    }
    PyObject *info = trust_deny_info(run, event, args, what);
    if (info == NULL) {
        return -1;
    }
    /* pre_deny is the host's: not gated, though cell frames lie below. */
    PyObject *res = sp_gate_call_as_host(run->pre_deny, info);
    Py_DECREF(info);
    if (res == NULL) {
        return -1;
    }
    int rc = res == Py_True ? 1 : 0;
    Py_DECREF(res);
    return rc;
}

/* ---- set_data, in_run ------------------------------------------------------ */

PyObject *
sp_trust_default_data(void)
{
    return trust->default_data;
}

static PyObject *
trust_py_set_data(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "set_data() takes keyword arguments only");
        return NULL;
    }
    if (sp_gate_refuse_inside("change policy data (set_data)") < 0) {
        return NULL;
    }
    if (kwargs != NULL && PyDict_Update(trust->default_data, kwargs) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
trust_py_set_default_ok_dests(PyObject *module, PyObject *dests)
{
    (void)module;
    if (sp_gate_refuse_inside("change default_ok_dests") < 0) {
        return NULL;
    }
    PyObject *norm = sp_paths_normalise_dests(dests);
    if (norm == NULL) {
        return NULL;
    }
    Py_SETREF(trust->default_dests, norm);
    Py_RETURN_NONE;
}

static PyObject *
trust_py_get_default_ok_dests(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (trust->default_dests == Py_None) {
        Py_RETURN_NONE;
    }
    return PySequence_List(trust->default_dests);
}

static PyObject *
trust_py_get_data(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyDict_Copy(trust->default_data);
}

static PyObject *
trust_py_in_run(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    Py_XDECREF(run);
    return active < 0 ? NULL : PyBool_FromLong(active);
}

/* ---- track_call ------------------------------------------------------------ */

/* track_call(fn) returns a Tracked callable: calling it records
 * (fn, args, kwargs) in the `safepyrun.calls` context variable while fn
 * runs and, when fn returns an awaitable, while each step of it runs.
 * Tasks and callbacks it schedules copy the context, so the record follows
 * the work an async tool hands off. */
typedef struct {
    PyObject_HEAD
    PyObject *fn;   /* owned */
    PyObject *dict; /* owned or NULL: __dict__ (functools.wraps fills it) */
} SpTracked;

typedef struct {
    PyObject_HEAD
    PyObject *inner;  /* owned: fn's awaitable's iterator */
    PyObject *calls;  /* owned: the calls tuple to set while stepping */
    SpCallRecord *record; /* owned: this call's record (last of calls),
                             deactivated when the awaitable finishes */
} SpTrackedAwait;

static int
tracked_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((SpTracked *)self)->fn);
    Py_VISIT(((SpTracked *)self)->dict);
    return 0;
}

static int
tracked_tp_clear(PyObject *self)
{
    Py_CLEAR(((SpTracked *)self)->fn);
    Py_CLEAR(((SpTracked *)self)->dict);
    return 0;
}

static int
tracked_aw_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((SpTrackedAwait *)self)->inner);
    Py_VISIT(((SpTrackedAwait *)self)->calls);
    Py_VISIT(((SpTrackedAwait *)self)->record);
    return 0;
}

static int
tracked_aw_tp_clear(PyObject *self)
{
    SpTrackedAwait *aw = (SpTrackedAwait *)self;
    if (aw->record != NULL) {
        aw->record->active = 0; /* an abandoned call is over too */
    }
    Py_CLEAR(aw->inner);
    Py_CLEAR(aw->calls);
    Py_CLEAR(aw->record);
    return 0;
}

/* Call `fn(*args, **kwargs)` or step an awaitable with `calls` set. */
static PyObject *
tracked_with_calls(PyObject *calls, PyObject *callable, PyObject *args,
                   PyObject *kwargs)
{
    PyObject *token = PyContextVar_Set(trust->calls_var, calls);
    if (token == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_Call(callable, args, kwargs);
    if (sp_context_leave_var(trust->calls_var, token) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

static PyObject *
tracked_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    SpTracked *t = (SpTracked *)self;
    PyObject *outer = NULL, *calls = NULL, *res = NULL, *one = NULL; /* owned */
    SpCallRecord *rec = NULL;                                          /* owned */
    PyObject *kw = kwargs != NULL ? PyDict_Copy(kwargs) : PyDict_New();
    if (kw == NULL || PyContextVar_Get(trust->calls_var, trust->empty_tuple, &outer) < 0) {
        goto done;
    }
    if (!PyTuple_CheckExact(outer)) {
        Py_SETREF(outer, Py_NewRef(trust->empty_tuple)); /* not ours: ignored */
    }
    rec = record_new(t->fn, args, kw);
    one = rec == NULL ? NULL : PyTuple_Pack(1, (PyObject *)rec);
    calls = one == NULL ? NULL : PySequence_Concat(outer, one);
    if (calls == NULL) {
        goto done;
    }
    res = tracked_with_calls(calls, t->fn, args, kwargs);
    /* An awaitable: its steps run with the record too. */
    PyTypeObject *tp = res == NULL ? NULL : Py_TYPE(res);
    if (tp != NULL && tp->tp_as_async != NULL && tp->tp_as_async->am_await != NULL) {
        PyObject *inner = tp->tp_as_async->am_await(res);
        if (inner == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        SpTrackedAwait *aw = PyObject_GC_New(SpTrackedAwait, trust->tracked_aw);
        if (aw == NULL) {
            Py_DECREF(inner);
            Py_CLEAR(res);
            goto done;
        }
        Py_INCREF(trust->tracked_aw);
        aw->inner = inner;
        aw->calls = Py_NewRef(calls);
        aw->record = (SpCallRecord *)Py_NewRef(rec);
        PyObject_GC_Track(aw);
        Py_SETREF(res, (PyObject *)aw);
        Py_CLEAR(rec); /* stays active while the awaitable runs */
    }
done:
    if (rec != NULL) {
        rec->active = 0; /* the call has returned */
    }
    Py_XDECREF(kw);
    Py_XDECREF(outer);
    Py_XDECREF(one);
    Py_XDECREF(rec);
    Py_XDECREF(calls);
    return res;
}

static PyObject *
tracked_get_wrapped(PyObject *self, void *c)
{
    (void)c;
    return Py_NewRef(((SpTracked *)self)->fn);
}

static PyObject *
tracked_getattro(PyObject *self, PyObject *name)
{
    /* Own attributes first; then the function's (__name__, __doc__...),
     * so a tracked tool documents itself like the function. */
    PyObject *res = PyObject_GenericGetAttr(self, name);
    if (res != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return res;
    }
    PyErr_Clear();
    return PyObject_GetAttr(((SpTracked *)self)->fn, name);
}

static PyObject *
tracked_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static PyGetSetDef tracked_getset[] = {
    {"__wrapped__", tracked_get_wrapped, NULL, "The tracked function.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef tracked_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(SpTracked, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot tracked_slots[] = {
    {Py_tp_doc, "A function wrapped by track_call."},
    {Py_tp_traverse, tracked_tp_traverse},
    {Py_tp_clear, tracked_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_call, tracked_tp_call},
    {Py_tp_getattro, tracked_getattro},
    {Py_tp_descr_get, tracked_descr_get},
    {Py_tp_getset, tracked_getset},
    {Py_tp_members, tracked_members},
    {0, NULL},
};

static PyType_Spec tracked_spec = {
    .name = "safepyrun._engine.Tracked",
    .basicsize = sizeof(SpTracked),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tracked_slots,
};

static PySendResult
tracked_aw_am_send(PyObject *self, PyObject *arg, PyObject **result)
{
    SpTrackedAwait *aw = (SpTrackedAwait *)self;
    *result = NULL;
    PyObject *token = PyContextVar_Set(trust->calls_var, aw->calls);
    if (token == NULL) {
        return PYGEN_ERROR;
    }
    PySendResult r = PyIter_Send(aw->inner, arg, result);
    if (sp_context_leave_var(trust->calls_var, token) < 0 && r != PYGEN_ERROR) {
        Py_CLEAR(*result);
        r = PYGEN_ERROR;
    }
    if (r != PYGEN_NEXT && aw->record != NULL) {
        aw->record->active = 0; /* the tool's call is over */
    }
    return r;
}

static PyObject *
tracked_aw_send(PyObject *self, PyObject *arg)
{
    PyObject *value;
    PySendResult r = tracked_aw_am_send(self, arg, &value);
    return sp_send_result_to_python(r, value);
}

static PyObject *
tracked_aw_iternext(PyObject *self)
{
    return tracked_aw_send(self, Py_None);
}

/* throw/close go to the inner iterator with the record set. */
static PyObject *
tracked_aw_forward(PyObject *self, const char *method, PyObject *args)
{
    SpTrackedAwait *aw = (SpTrackedAwait *)self;
    PyObject *fn = PyObject_GetAttrString(aw->inner, method);
    if (fn == NULL) {
        return NULL;
    }
    PyObject *res = tracked_with_calls(aw->calls, fn, args, NULL);
    Py_DECREF(fn);
    if ((res == NULL || strcmp(method, "close") == 0) && aw->record != NULL) {
        aw->record->active = 0; /* finished, failed or closed */
    }
    return res;
}

static PyObject *
tracked_aw_throw(PyObject *self, PyObject *args)
{
    return tracked_aw_forward(self, "throw", args);
}

static PyObject *
tracked_aw_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    return tracked_aw_forward(self, "close", trust->empty_tuple);
}

static PyObject *
tracked_aw_am_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyMethodDef tracked_aw_methods[] = {
    {"send", tracked_aw_send, METH_O, NULL},
    {"throw", tracked_aw_throw, METH_VARARGS, NULL},
    {"close", tracked_aw_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tracked_aw_slots[] = {
    {Py_tp_traverse, tracked_aw_tp_traverse},
    {Py_tp_clear, tracked_aw_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, tracked_aw_iternext},
    {Py_tp_methods, tracked_aw_methods},
    {Py_am_await, tracked_aw_am_await},
    {Py_am_send, tracked_aw_am_send},
    {0, NULL},
};

static PyType_Spec tracked_aw_spec = {
    .name = "safepyrun._engine.TrackedAwaitable",
    .basicsize = sizeof(SpTrackedAwait),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tracked_aw_slots,
};

static PyObject *
trust_py_track_call(PyObject *module, PyObject *fn)
{
    (void)module;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "track_call() needs a callable, not %.200s", SP_TYPE_NAME(fn));
        return NULL;
    }
    SpTracked *t = PyObject_GC_New(SpTracked, trust->tracked);
    if (t == NULL) {
        return NULL;
    }
    Py_INCREF(trust->tracked);
    t->fn = Py_NewRef(fn);
    t->dict = NULL;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

static PyMethodDef trust_functions[] = {
    {"set_data", (PyCFunction)(void (*)(void))trust_py_set_data,
     METH_VARARGS | METH_KEYWORDS,
     "set_data(**kw)\n\nDefault entries of the data mapping policies receive. "
     "Refused inside a run."},
    {"get_data", trust_py_get_data, METH_NOARGS,
     "get_data() -> dict\n\nA copy of the set_data() defaults."},
    {"set_default_ok_dests", trust_py_set_default_ok_dests, METH_O,
     "set_default_ok_dests(dests)\n\nThe ok_dests of a RunPython given none. "
     "Refused inside a run."},
    {"get_default_ok_dests", trust_py_get_default_ok_dests, METH_NOARGS,
     "get_default_ok_dests() -> list | None"},
    {"in_run", trust_py_in_run, METH_NOARGS,
     "in_run() -> bool\n\nWhether a gated run is active in this context."},
    {"track_call", trust_py_track_call, METH_O,
     "track_call(fn) -> callable\n\nMark an async tool: while it and the work "
     "it schedules run, it counts as an active call for the trust search."},
    {NULL, NULL, 0, NULL},
};

int
sp_trust_init(PyObject *module)
{
    if (trust->calls_var == NULL) {
        trust->module_name = PyUnicode_InternFromString("<module>");
        trust->name_key = PyUnicode_InternFromString("__name__");
        trust->empty_tuple = PyTuple_New(0);
        trust->unbound = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        trust->default_data = PyDict_New();
        trust->default_dests = PyTuple_New(0);
        trust->calls_var = PyContextVar_New("safepyrun.calls", NULL);
        trust->deny_info = PyStructSequence_NewType(&deny_info_desc);
        trust->call_info = PyStructSequence_NewType(&call_info_desc);
        trust->raw_deny_info = PyStructSequence_NewType(&raw_deny_info_desc);
        trust->tracked = (PyTypeObject *)PyType_FromModuleAndSpec(module,
                                                                 &tracked_spec, NULL);
        trust->record = (PyTypeObject *)PyType_FromModuleAndSpec(module,
                                                                &record_spec, NULL);
        trust->tracked_aw = (PyTypeObject *)PyType_FromModuleAndSpec(
            module, &tracked_aw_spec, NULL);
        if (trust->module_name == NULL ||
            trust->name_key == NULL || trust->empty_tuple == NULL ||
            trust->unbound == NULL ||
            trust->default_data == NULL || trust->default_dests == NULL ||
            trust->calls_var == NULL ||
            trust->deny_info == NULL || trust->call_info == NULL ||
            trust->raw_deny_info == NULL ||
            trust->tracked == NULL || trust->tracked_aw == NULL ||
            trust->record == NULL) {
            return -1;
        }
        /* DenyInfo.find; then the three types are made immutable: the host's
         * pre_deny reads them, and a cell must not redefine what it reads. */
        PyObject *find = PyDescr_NewMethod(trust->deny_info,
                                           &trust_deny_info_find_def);
        if (find == NULL || PyObject_SetAttrString((PyObject *)trust->deny_info,
                                                   "find", find) < 0) {
            Py_XDECREF(find);
            return -1;
        }
        Py_DECREF(find);
        sp_freeze_type(trust->deny_info);
        sp_freeze_type(trust->raw_deny_info);
        sp_freeze_type(trust->call_info);
    }
    if (PyModule_AddObjectRef(module, "Tracked", (PyObject *)trust->tracked) < 0 ||
        PyModule_AddObjectRef(module, "DenyInfo", (PyObject *)trust->deny_info) < 0 ||
        PyModule_AddObjectRef(module, "CallInfo", (PyObject *)trust->call_info) < 0 ||
        PyModule_AddObjectRef(module, "RawDenyInfo",
                              (PyObject *)trust->raw_deny_info) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, trust_functions);
}
