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
#include "report.h"
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
    size_t max_memory;  /* bytes a cell may allocate; 0: no cap */
    double timeout;     /* seconds per cell, 0: none */
    int ban_defs;
    int yolo;
    int echo;              /* reports: output also shown on the host */
    Py_ssize_t max_output; /* reports: characters kept per stream, or -1 */
} SpRunner;

static PyObject *runner_make_cell(SpRunner *r, PyObject *source, int report,
                                  int echo, size_t max_memory, double timeout);

/* A memory cap as given by the host: None (no cap) or an int of bytes
 * > 0.  0 ok (*cap 0 for None), -1 error. */
static int
runner_parse_cap(PyObject *obj, size_t *cap)
{
    *cap = 0;
    if (obj == Py_None) {
        return 0;
    }
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "max_memory must be an int (bytes) or None, not %.200s",
                     SP_TYPE_NAME(obj));
        return -1;
    }
    if (PyObject_RichCompareBool(obj, Py_False, Py_LE) == 1) {
        PyErr_SetString(PyExc_ValueError,
                        "max_memory must be a positive number of bytes");
        return -1;
    }
    *cap = PyLong_AsSize_t(obj);
    if (*cap == (size_t)-1 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

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

/* The time limit for one cell: `timeout` as given for it (None: the
 * runner's).  Seconds (0: none), or -1 with an exception. */
static double
runner_effective_timeout(SpRunner *r, PyObject *timeout)
{
    return timeout == Py_None ? r->timeout : runner_parse_timeout(timeout);
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

/* `max_output`: None (-1, no limit) or an int >= 0.  0 / -1. */
static int
runner_parse_max_output(PyObject *obj, Py_ssize_t *out)
{
    *out = -1;
    if (obj == Py_None) {
        return 0;
    }
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "max_output must be an int (characters) or None, not %.200s",
                     SP_TYPE_NAME(obj));
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(obj);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "max_output must be >= 0");
        return -1;
    }
    *out = n;
    return 0;
}

/* Runner(g, ok_dests, banned=None, ban_defs=False, yolo=False, data=None,
 *        pre_deny=None, *, echo=False, max_output=None, max_memory=None,
 *        timeout=None) */
static PyObject *
runner_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"g", "ok_dests", "banned", "ban_defs", "yolo",
                             "data", "pre_deny", "echo", "max_output",
                             "max_memory", "timeout", NULL};
    PyObject *g, *ok_dests, *banned = Py_None, *data = Py_None;
    PyObject *pre_deny = Py_None, *max_output_obj = Py_None;
    PyObject *max_memory = Py_None, *timeout = Py_None;
    size_t cap = 0;
    int ban_defs = 0, yolo = 0, echo = 0;
    Py_ssize_t max_output = -1;
    /* A runner made inside a run would carry a policy of the cell's own
     * choosing (yolo, ok_dests=None): refused, whatever the route
     * (RunPython, _engine.Runner, a subclass). */
    if (sp_gate_refuse_inside("create a runner") < 0) {
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OppOO$pOOO:Runner", kwlist,
                                     &g, &ok_dests, &banned, &ban_defs, &yolo,
                                     &data, &pre_deny, &echo, &max_output_obj,
                                     &max_memory, &timeout)) {
        return NULL;
    }
    double seconds = runner_parse_timeout(timeout);
    if (seconds < 0 ||
        runner_parse_max_output(max_output_obj, &max_output) < 0 ||
        runner_parse_cap(max_memory, &cap) < 0) {
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
    self->echo = echo;
    self->max_output = max_output;
    self->max_memory = cap;
    /* The allocator hooks go in now, on the host's side, not in a cell. */
    if (cap != 0 && sp_memcap_install() < 0) {
        goto error;
    }
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

/* runner(code, *, max_memory=<the runner's>, timeout=<the runner's>) is
 * runner.run(code): RunPython, a subclass, is called straight into C.  A
 * max_memory (None: no cap) or timeout given here replaces the runner's
 * for this cell. */
static PyObject *
runner_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", "max_memory", "timeout", NULL};
    PyObject *code;              /* borrowed */
    PyObject *max_memory = NULL, *timeout = Py_None; /* borrowed */
    SpRunner *r = (SpRunner *)self;
    size_t cap = r->max_memory;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OO:__call__", kwlist,
                                     &code, &max_memory, &timeout)) {
        return NULL;
    }
    if (max_memory != NULL && runner_parse_cap(max_memory, &cap) < 0) {
        return NULL;
    }
    double seconds = runner_effective_timeout(r, timeout);
    if (seconds < 0) {
        return NULL;
    }
    return runner_make_cell(r, code, 0, 0, cap, seconds);
}

/* Runner.run(code, timeout=None) -> Cell.  Nothing happens until the Cell
 * is awaited: then the code is checked, compiled and run, so a syntax
 * error surfaces at the await as any other error of the cell does.  A
 * timeout given here replaces the runner's for this cell. */
static PyObject *
runner_run(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", "timeout", NULL};
    PyObject *code, *timeout = Py_None; /* borrowed */
    SpRunner *r = (SpRunner *)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:run", kwlist,
                                     &code, &timeout)) {
        return NULL;
    }
    double seconds = runner_effective_timeout(r, timeout);
    if (seconds < 0) {
        return NULL;
    }
    return runner_make_cell(r, code, 0, 0, r->max_memory, seconds);
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
runner_get_max_memory(PyObject *self, void *c)
{
    (void)c;
    size_t cap = ((SpRunner *)self)->max_memory;
    return cap == 0 ? Py_NewRef(Py_None) : PyLong_FromSize_t(cap);
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
runner_get_echo(PyObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(((SpRunner *)self)->echo);
}

static PyObject *
runner_get_max_output(PyObject *self, void *c)
{
    (void)c;
    Py_ssize_t n = ((SpRunner *)self)->max_output;
    return n < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(n);
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
    {"ban_imports", T_OBJECT_EX, offsetof(SpRunner, banned), READONLY,
     "Modules a cell may not import (tuple)."},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
runner_get_ok_dests(PyObject *self, void *c)
{
    (void)c;
    return Py_NewRef(((SpRunner *)self)->ok_dests);
}

/* The host may change where a runner's cells write (the IPython extension's
 * user does, without reloading it); a cell may not: refused inside a run,
 * like creating a runner.  Each cell takes the value current when it is
 * made, so a change never reaches a cell already running. */
static int
runner_set_ok_dests(PyObject *self, PyObject *value, void *c)
{
    (void)c;
    if (sp_gate_refuse_inside("change a runner's ok_dests") < 0) {
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "ok_dests cannot be deleted "
                        "(None turns write checks off)");
        return -1;
    }
    PyObject *dests = sp_paths_normalise_dests(value);
    if (dests == NULL) {
        return -1;
    }
    Py_SETREF(((SpRunner *)self)->ok_dests, dests);
    return 0;
}

static PyGetSetDef runner_getset[] = {
    {"ok_dests", runner_get_ok_dests, runner_set_ok_dests,
     "Normalised write destinations (tuple), or None; the host may set it "
     "between cells (refused inside a run).", NULL},
    {"data", runner_get_data, NULL,
     "A copy of the data handed to policies (refused inside a run).", NULL},
    {"pre_deny", runner_get_pre_deny, NULL,
     "The host's pre_deny hook, or None (refused inside a run).", NULL},
    {"ban_defs", runner_get_ban_defs, NULL, "Whether def/class are refused.",
     NULL},
    {"max_memory", runner_get_max_memory, NULL,
     "Bytes a cell may allocate (int), or None for no cap.", NULL},
    {"yolo", runner_get_yolo, NULL, "True when nothing is gated.", NULL},
    {"echo", runner_get_echo, NULL,
     "Whether a report's captured output is also shown on the host.", NULL},
    {"max_output", runner_get_max_output, NULL,
     "Characters of output a report keeps per stream, or None.", NULL},
    {"timeout", runner_get_timeout, NULL,
     "Each cell's time limit in seconds, or None (read-only).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* The Cell for `source`: the run's policy object (context.c) with a fresh
 * data dict, memory cap `max_memory` (0: none) and time limit `timeout`
 * (seconds, 0: none), and, when `report` is set, the run report
 * (report.c) its output and events go to, with `echo` (-1: the runner's
 * setting).  New reference or NULL. */
static PyObject *
runner_make_cell(SpRunner *r, PyObject *source, int report, int echo,
                 size_t max_memory, double timeout)
{
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
    if (sp_context_set_memcap(run, max_memory) < 0) {
        Py_DECREF(run);
        return NULL;
    }
    if (report) {
        run->report = sp_report_new(r->max_output, echo < 0 ? r->echo : echo);
        if (run->report == NULL) {
            Py_DECREF(run);
            return NULL;
        }
    }
    PyObject *cell = sp_cell_new(r->g, r->ns, r->synced, run, source,
                                 r->banned, r->ban_defs, !r->yolo, timeout);
    Py_DECREF(run);
    return cell;
}


/* Runner.report(code, echo=None) -> Cell whose value is the run report (a
 * dict; RunPython.run makes it a RunResult).  The cell's errors, a syntax
 * error included, go in the report; misuse raises here: code that is not
 * a str, or a report started from sandboxed code (a nested run). */
static PyObject *
runner_report(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", "echo", "max_memory", "timeout", NULL};
    PyObject *source, *echo_obj = Py_None, *max_memory = NULL; /* borrowed */
    PyObject *timeout = Py_None; /* borrowed */
    size_t cap = ((SpRunner *)self)->max_memory;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$OO:report", kwlist,
                                     &source, &echo_obj, &max_memory,
                                     &timeout)) {
        return NULL;
    }
    double seconds = runner_effective_timeout((SpRunner *)self, timeout);
    if (seconds < 0) {
        return NULL;
    }
    if (max_memory != NULL && runner_parse_cap(max_memory, &cap) < 0) {
        return NULL;
    }
    if (sp_gate_refuse_inside("start a run") < 0) {
        return NULL;
    }
    if (!PyUnicode_Check(source)) {
        PyErr_Format(PyExc_TypeError, "code must be a str, not %.200s",
                     SP_TYPE_NAME(source));
        return NULL;
    }
    int echo = -1;
    if (echo_obj != Py_None) {
        echo = PyObject_IsTrue(echo_obj);
        if (echo < 0) {
            return NULL;
        }
    }
    return runner_make_cell((SpRunner *)self, source, 1, echo, cap, seconds);
}

static PyMethodDef runner_methods[] = {
    {"run", (PyCFunction)(void (*)(void))runner_run,
     METH_VARARGS | METH_KEYWORDS,
     "run(code, timeout=None) -> Cell\n\nCheck and compile a cell; await the "
     "result to run it and get the value of its last expression.  timeout "
     "(seconds) replaces the runner's time limit for this cell."},
    {"report", (PyCFunction)(void (*)(void))runner_report,
     METH_VARARGS | METH_KEYWORDS,
     "report(code, echo=None, *, max_memory=<the runner's>, "
     "timeout=<the runner's>) -> Cell\n\nLike run(), but awaiting the Cell "
     "gives the run report (a dict: value, error, stdout, stderr, events, "
     "events_dropped, elapsed, displays, peak_memory) and the cell's errors "
     "go in it."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot runner_slots[] = {
    {Py_tp_doc, "Runner(g, ok_dests, banned=None, ban_defs=False, yolo=False, "
                "data=None, pre_deny=None, *, echo=False, max_output=None, "
                "max_memory=None, timeout=None)\n\nThe engine behind RunPython: "
                "a host namespace and the policy its cells run under; timeout "
                "is each cell's time limit in seconds."},
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
