/* runner.c - the Runner: a host namespace and the policy its cells run
 * under.
 *
 * One Runner per RunPython.  Its fields are fixed at construction (which
 * is refused inside a run: a runner carries a policy).  Runner.run(code)
 * makes the run's policy object (context.c) with a fresh data dict and
 * returns a Cell (cell.c) that does the work when awaited.
 */
#include "common.h"
#include "state.h"
#include "runner.h"

#include "cell.h"
#include "context.h"
#include "gate.h"
#include "paths.h"
#include "trust.h"

#include <stddef.h>
#include <structmember.h>

/* This file's part of the engine state (state.h). */
static struct sp_runner_state *const runner_global = &sp_state.runner;


typedef struct {
    PyObject_HEAD
    PyObject *g;        /* owned: host namespace (dict) */
    PyObject *ok_dests; /* owned: normalised tuple, or None */
    PyObject *banned;   /* owned: tuple of str */
    PyObject *data;     /* owned: dict for policies (RunPython's keywords) */
    PyObject *pre_deny; /* owned: callable or None */
    PyObject *ns;       /* owned: the live namespace its cells share */
    PyObject *synced;   /* owned: g as it was when ns and g were in step */
    double timeout;     /* seconds per cell, 0: none */
    int ban_defs;
    int yolo;
} SpRunner;

static PyObject *runner_run_timeout(SpRunner *r, PyObject *source,
                                    PyObject *timeout);

/* A time limit given as `timeout` (None, or seconds > 0): 0 for None, the
 * seconds, or -1 with an exception. */
static double
runner_parse_timeout(PyObject *timeout)
{
    if (timeout == Py_None) {
        return 0;
    }
    if (PyBool_Check(timeout) || !PyNumber_Check(timeout) ||
        PyComplex_Check(timeout)) {
        PyErr_Format(PyExc_TypeError,
                     "timeout must be a number of seconds or None, not %.200s",
                     SP_TYPE_NAME(timeout));
        return -1;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(t > 0) || Py_IS_INFINITY(t)) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be a positive, finite number of seconds "
                     "or None, not %R", timeout);
        return -1;
    }
    return t;
}

static int
runner_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpRunner *r = (SpRunner *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(r->g);
    Py_VISIT(r->ok_dests);
    Py_VISIT(r->banned);
    Py_VISIT(r->data);
    Py_VISIT(r->pre_deny);
    Py_VISIT(r->ns);
    Py_VISIT(r->synced);
    return 0;
}

static int
runner_tp_clear(PyObject *self)
{
    SpRunner *r = (SpRunner *)self;
    Py_CLEAR(r->g);
    Py_CLEAR(r->ok_dests);
    Py_CLEAR(r->banned);
    Py_CLEAR(r->data);
    Py_CLEAR(r->pre_deny);
    Py_CLEAR(r->ns);
    Py_CLEAR(r->synced);
    return 0;
}

/* Runner(g, ok_dests, banned=None, ban_defs=False, yolo=False, data=None,
 *        pre_deny=None, timeout=None) */
static PyObject *
runner_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"g", "ok_dests", "banned", "ban_defs", "yolo",
                             "data", "pre_deny", "timeout", NULL};
    PyObject *g, *ok_dests, *banned = Py_None, *data = Py_None;
    PyObject *timeout = Py_None;
    PyObject *pre_deny = Py_None;
    int ban_defs = 0, yolo = 0;
    /* A runner made inside a run would carry a policy of the cell's own
     * choosing (yolo, ok_dests=None): refused, whatever the route
     * (RunPython, _engine.Runner, a subclass). */
    if (sp_gate_refuse_inside("create a runner") < 0) {
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OppOOO:Runner", kwlist,
                                     &g, &ok_dests, &banned, &ban_defs, &yolo,
                                     &data, &pre_deny, &timeout)) {
        return NULL;
    }
    double seconds = runner_parse_timeout(timeout);
    if (seconds < 0) {
        return NULL;
    }
    if (pre_deny != Py_None && !PyCallable_Check(pre_deny)) {
        PyErr_Format(PyExc_TypeError, "pre_deny must be callable, not %.200s",
                     SP_TYPE_NAME(pre_deny));
        return NULL;
    }
    if (!PyDict_Check(g)) {
        PyErr_Format(PyExc_TypeError,
                     "g must be a dict (the namespace cells run in), not %.200s", SP_TYPE_NAME(g));
        return NULL;
    }
    if (data != Py_None && !PyDict_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data must be a dict, not %.200s", SP_TYPE_NAME(data));
        return NULL;
    }
    SpRunner *self = (SpRunner *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->g = Py_NewRef(g);
    self->pre_deny = Py_NewRef(pre_deny);
    self->ns = PyDict_New();
    self->synced = PyDict_New();
    if (self->ns == NULL || self->synced == NULL) {
        goto error;
    }
    self->ban_defs = ban_defs;
    self->yolo = yolo;
    self->timeout = seconds;
    self->ok_dests = sp_paths_normalise_dests(ok_dests);
    if (self->ok_dests == NULL) {
        goto error;
    }
    if (banned == Py_None) {
        self->banned = Py_NewRef(runner_global->default_banned);
    }
    else {
        if (PyUnicode_Check(banned) || PyBytes_Check(banned)) {
            PyErr_Format(PyExc_TypeError,
                         "ban_imports must be a list of module names, not %.200s",
                         SP_TYPE_NAME(banned));
            goto error;
        }
        self->banned = PySequence_Tuple(banned);
        if (self->banned == NULL) {
            goto error;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->banned); i++) {
            PyObject *item = PyTuple_GET_ITEM(self->banned, i);
            if (!PyUnicode_Check(item)) {
                PyErr_Format(PyExc_TypeError,
                             "ban_imports entries must be str, not %.200s", SP_TYPE_NAME(item));
                goto error;
            }
        }
    }
    self->data = data == Py_None ? PyDict_New() : PyDict_Copy(data);
    if (self->data == NULL) {
        goto error;
    }
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

/* runner(code, timeout=None) is runner.run(code, timeout=None):
 * RunPython, a subclass, is called straight into C. */
static PyObject *
runner_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", "timeout", NULL};
    PyObject *code, *timeout = Py_None; /* borrowed */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:__call__", kwlist,
                                     &code, &timeout)) {
        return NULL;
    }
    return runner_run_timeout((SpRunner *)self, code, timeout);
}

static PyObject *
runner_run(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", "timeout", NULL};
    PyObject *code, *timeout = Py_None; /* borrowed */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:run", kwlist,
                                     &code, &timeout)) {
        return NULL;
    }
    return runner_run_timeout((SpRunner *)self, code, timeout);
}

/* The host's objects a policy or the pre_deny hook decides with: their
 * values (a list in the data, the hook's closure) are mutable, so a cell
 * does not get them through the runner it can reach. */
static PyObject *
runner_get_data(PyObject *self, void *c)
{
    (void)c;
    if (sp_gate_refuse_inside("read the runner's policy data") < 0) {
        return NULL;
    }
    /* A copy: the runner's policy data cannot be changed through it. */
    return PyDict_Copy(((SpRunner *)self)->data);
}

static PyObject *
runner_get_pre_deny(PyObject *self, void *c)
{
    (void)c;
    if (sp_gate_refuse_inside("read the runner's pre_deny hook") < 0) {
        return NULL;
    }
    return Py_NewRef(((SpRunner *)self)->pre_deny);
}

static PyObject *
runner_get_ban_defs(PyObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(((SpRunner *)self)->ban_defs);
}

static PyObject *
runner_get_yolo(PyObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(((SpRunner *)self)->yolo);
}

static PyObject *
runner_get_timeout(PyObject *self, void *c)
{
    (void)c;
    double t = ((SpRunner *)self)->timeout;
    return t > 0 ? PyFloat_FromDouble(t) : Py_NewRef(Py_None);
}

static PyMemberDef runner_members[] = {
    {"g", T_OBJECT_EX, offsetof(SpRunner, g), READONLY,
     "The host namespace cells run in."},
    {"ok_dests", T_OBJECT_EX, offsetof(SpRunner, ok_dests), READONLY,
     "Normalised write destinations (tuple), or None."},
    {"ban_imports", T_OBJECT_EX, offsetof(SpRunner, banned), READONLY,
     "Modules a cell may not import (tuple)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef runner_getset[] = {
    {"data", runner_get_data, NULL,
     "A copy of the data handed to policies (refused inside a run).", NULL},
    {"pre_deny", runner_get_pre_deny, NULL,
     "The host's pre_deny hook, or None (refused inside a run).", NULL},
    {"ban_defs", runner_get_ban_defs, NULL, "Whether def/class are refused.",
     NULL},
    {"yolo", runner_get_yolo, NULL, "True when nothing is gated.", NULL},
    {"timeout", runner_get_timeout, NULL,
     "Each cell's time limit in seconds, or None (read-only).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Runner.run(code, timeout=None) -> Cell.  Nothing happens until the Cell
 * is awaited: then the code is checked, compiled and run, so a syntax
 * error surfaces at the await as any other error of the cell does.  A
 * timeout given here replaces the runner's for this cell. */
static PyObject *
runner_run_timeout(SpRunner *r, PyObject *source, PyObject *timeout)
{
    double seconds = runner_parse_timeout(timeout);
    if (seconds < 0) {
        return NULL;
    }
    if (timeout == Py_None) {
        seconds = r->timeout;
    }
    /* The run's data: set_data() defaults, then RunPython's keywords, then
     * ok_dests; a fresh dict per cell, so a policy cannot change another
     * run's data. */
    PyObject *data = PyDict_Copy(sp_trust_default_data());
    if (data == NULL || PyDict_Update(data, r->data) < 0 ||
        PyDict_SetItemString(data, "ok_dests", r->ok_dests) < 0) {
        Py_XDECREF(data);
        return NULL;
    }
    SpRun *run = sp_context_new_run(r->ok_dests, data, r->pre_deny, r->yolo);
    Py_DECREF(data);
    if (run == NULL) {
        return NULL;
    }
    PyObject *cell = sp_cell_new(r->g, r->ns, r->synced, run, source,
                                 r->banned, r->ban_defs, !r->yolo, seconds);
    Py_DECREF(run);
    return cell;
}

static PyMethodDef runner_methods[] = {
    {"run", (PyCFunction)(void (*)(void))runner_run,
     METH_VARARGS | METH_KEYWORDS,
     "run(code, timeout=None) -> Cell\n\nCheck and compile a cell; await the "
     "result to run it and get the value of its last expression.  timeout "
     "(seconds) replaces the runner's time limit for this cell."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot runner_slots[] = {
    {Py_tp_doc, "Runner(g, ok_dests, banned=None, ban_defs=False, yolo=False, "
                "data=None, pre_deny=None, timeout=None)\n\nThe engine behind "
                "RunPython: a host namespace and the policy its cells run "
                "under; timeout is each cell's time limit in seconds."},
    {Py_tp_new, runner_tp_new},
    {Py_tp_call, runner_tp_call},
    {Py_tp_traverse, runner_tp_traverse},
    {Py_tp_clear, runner_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_methods, runner_methods},
    {Py_tp_getset, runner_getset},
    {Py_tp_members, runner_members},
    {0, NULL},
};

static PyType_Spec runner_spec = {
    .name = "safepyrun._engine.Runner",
    .basicsize = sizeof(SpRunner),
    /* BASETYPE: RunPython subclasses it (with __slots__ = ()). */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = runner_slots,
};

int
sp_runner_init(PyObject *module)
{
    if (runner_global->runner_type == NULL) {
        runner_global->runner_type =
            (PyTypeObject *)PyType_FromModuleAndSpec(module, &runner_spec, NULL);
        runner_global->default_banned = Py_BuildValue(
            "(ssss)", "socket", "importlib", "ctypes", "safepyrun");
        if (runner_global->runner_type == NULL ||
            runner_global->default_banned == NULL) {
            return -1;
        }
    }
    if (PyModule_AddObjectRef(module, "Runner",
                              (PyObject *)runner_global->runner_type) < 0 ||
        PyModule_AddObjectRef(module, "DEFAULT_BAN_IMPORTS",
                              runner_global->default_banned) < 0) {
        return -1;
    }
    return 0;
}
