/* output.c - the stream router: each run's output goes to that run.
 *
 * What it owns: the router type.  A router is installed as sys.stdout (and
 * another as sys.stderr) when a run that captures output first steps, and
 * stays: it is transparent to the host.  A write asks the run context
 * (context.c) which run is writing: a run with an open report (report.c)
 * gets the text in its report (and, when it echoes, the stream the router
 * replaced gets it too); any other writer -- the host, including its own
 * prints while a cell is suspended at an await, another thread, a run that
 * does not capture -- writes to the stream the router replaced, as if the
 * router were not there.  Tasks a cell spawns carry its context, so their
 * output is the run's.
 *
 * For the host, every other attribute (buffer, encoding, fileno, isatty,
 * ...) is the replaced stream's, and setting one sets the stream's.  For sandboxed code (a run, or a cell's
 * code run later) the router offers only the text-stream methods and plain
 * values: the replaced stream itself, and its buffer, stay out of reach,
 * and close() is refused, so a cell can neither close nor unhook the
 * host's streams.  A cell that assigns sys.stdout keeps that stream for
 * its own steps only (sp_output_leave puts the router back).
 *
 * Not captured: writes to file descriptors 1 and 2 (os.write, C
 * libraries' printf, a subprocess), and to sys.__stdout__.
 *
 * Threading: GIL held throughout.  The routers are plain objects held by
 * sys; the engine keeps no reference to them between steps.
 */
#include "common.h"
#include "state.h"
#include "output.h"

#include "context.h"
#include "gate.h"
#include "report.h"

/* This file's part of the engine state (state.h). */
static struct sp_output_state *const output_global = &sp_state.output;

typedef struct {
    PyObject_HEAD
    PyObject *target; /* owned: the stream the router replaced (or None) */
    int which;        /* SP_REPORT_STDOUT or SP_REPORT_STDERR */
} SpRouter;

#define ROUTER_CAST(op) ((SpRouter *)(op))

static int
router_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(ROUTER_CAST(self)->target);
    return 0;
}

static int
router_tp_clear(PyObject *self)
{
    Py_CLEAR(ROUTER_CAST(self)->target);
    return 0;
}

/* The open report of the run writing here, or NULL: a new reference. */
static int
router_report(PyObject **report)
{
    SpRun *run = NULL;
    *report = NULL;
    int found = sp_context_current_any(&run);
    if (found <= 0) {
        return found;
    }
    PyObject *rep = sp_report_open_of(run);
    *report = Py_XNewRef(rep);
    Py_DECREF(run);
    return rep != NULL;
}

/* Whether the writer here has its output captured and not echoed: then
 * the replaced stream plays no part.  1 / 0 / -1. */
static int
router_captured_only(void)
{
    PyObject *rep = NULL;
    int found = router_report(&rep);
    int res = found > 0 ? !sp_report_echoes(rep) : found;
    Py_XDECREF(rep);
    return res;
}

/* Whether sandboxed code is asking: 1 / 0 / -1. */
static int
router_sandboxed(void)
{
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    Py_XDECREF(run);
    return active;
}

static PyObject *
router_forward(SpRouter *r, PyObject *name, PyObject *arg)
{
    if (r->target == Py_None) {
        return arg != NULL && PyUnicode_Check(arg)
            ? PyLong_FromSsize_t(PyUnicode_GET_LENGTH(arg))
            : Py_NewRef(Py_None);
    }
    return arg != NULL ? PyObject_CallMethodOneArg(r->target, name, arg)
                       : PyObject_CallMethodNoArgs(r->target, name);
}

static PyObject *
router_write(PyObject *self, PyObject *text)
{
    SpRouter *r = ROUTER_CAST(self);
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "write() argument must be str, not %.200s",
                     SP_TYPE_NAME(text));
        return NULL;
    }
    PyObject *rep = NULL;
    int found = router_report(&rep);
    if (found < 0) {
        return NULL;
    }
    if (found) {
        int echo = sp_report_echoes(rep);
        int rc = sp_report_append(rep, r->which, text);
        Py_DECREF(rep);
        if (rc < 0) {
            return NULL;
        }
        if (!echo) {
            return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(text));
        }
    }
    return router_forward(r, output_global->write_name, text);
}

static PyObject *
router_writelines(PyObject *self, PyObject *lines)
{
    PyObject *it = PyObject_GetIter(lines);
    if (it == NULL) {
        return NULL;
    }
    PyObject *line;
    while ((line = PyIter_Next(it)) != NULL) {
        PyObject *res = router_write(self, line);
        Py_DECREF(line);
        if (res == NULL) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(res);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
}

/* flush/isatty/fileno: the replaced stream's, unless the writer's output
 * is captured only (then: nothing to flush, not a terminal, no file
 * descriptor, as for an io.StringIO). */
static PyObject *
router_flush(PyObject *self, PyObject *unused)
{
    (void)unused;
    int captured = router_captured_only();
    if (captured != 0) {
        return captured < 0 ? NULL : Py_NewRef(Py_None);
    }
    return router_forward(ROUTER_CAST(self), output_global->flush_name, NULL);
}

static PyObject *
router_isatty(PyObject *self, PyObject *unused)
{
    (void)unused;
    int captured = router_captured_only();
    if (captured != 0) {
        return captured < 0 ? NULL : Py_NewRef(Py_False);
    }
    return router_forward(ROUTER_CAST(self), output_global->isatty_name, NULL);
}

static PyObject *
router_fileno(PyObject *self, PyObject *unused)
{
    (void)unused;
    int captured = router_captured_only();
    if (captured != 0) {
        if (captured > 0) {
            PyErr_SetString(output_global->unsupported,
                            "fileno: this run's output is captured by safepyrun");
        }
        return NULL;
    }
    if (ROUTER_CAST(self)->target == Py_None) {
        PyErr_SetString(output_global->unsupported, "fileno");
        return NULL;
    }
    return router_forward(ROUTER_CAST(self), output_global->fileno_name, NULL);
}

static PyObject *
router_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    int inside = router_sandboxed();
    if (inside != 0) {
        if (inside > 0) {
            PyErr_Format(PyExc_PermissionError,
                         "safepyrun refused to close sys.%s: it is the host's "
                         "stream", ROUTER_CAST(self)->which ? "stderr" : "stdout");
        }
        return NULL;
    }
    return router_forward(ROUTER_CAST(self), output_global->close_name, NULL);
}

static PyObject *
router_true(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_TRUE;
}

static PyObject *
router_false(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_FALSE;
}

/* A plain attribute of the replaced stream (encoding, errors, ...): only
 * values of builtin types pass to sandboxed code. */
static PyObject *
router_get_plain(PyObject *self, void *closure)
{
    SpRouter *r = ROUTER_CAST(self);
    if (r->target == Py_None) {
        return Py_NewRef(Py_None);
    }
    PyObject *value = PyObject_GetAttrString(r->target, (const char *)closure);
    if (value == NULL || PyUnicode_CheckExact(value) || PyBool_Check(value) ||
        PyLong_CheckExact(value) || value == Py_None) {
        return value;
    }
    int inside = router_sandboxed();
    if (inside != 0) {
        Py_DECREF(value);
        return inside < 0 ? NULL : Py_NewRef(Py_None);
    }
    return value;
}

static PyObject *
router_get_closed(PyObject *self, void *closure)
{
    (void)closure;
    int captured = router_captured_only();
    if (captured != 0) {
        return captured < 0 ? NULL : Py_NewRef(Py_False);
    }
    if (ROUTER_CAST(self)->target == Py_None) {
        return Py_NewRef(Py_False);
    }
    PyObject *value = PyObject_GetAttrString(ROUTER_CAST(self)->target, "closed");
    if (value == NULL) {
        return NULL;
    }
    int closed = PyObject_IsTrue(value);
    Py_DECREF(value);
    return closed < 0 ? NULL : PyBool_FromLong(closed);
}

/* Attributes the router does not define: the replaced stream's, for the
 * host; refused to sandboxed code, which would otherwise reach the host's
 * stream (its buffer, its raw file) through them. */
static PyObject *
router_tp_getattro(PyObject *self, PyObject *name)
{
    PyObject *res = PyObject_GenericGetAttr(self, name);
    if (res != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return res;
    }
    PyObject *missing = sp_err_get_raised(); /* the gate runs error-free */
    int inside = router_sandboxed();
    if (inside != 0) {
        if (inside > 0) {
            PyErr_Format(PyExc_AttributeError,
                         "sys.%s has no attribute %R inside a sandboxed run "
                         "(only the text-stream methods are offered)",
                         ROUTER_CAST(self)->which ? "stderr" : "stdout", name);
        }
        Py_DECREF(missing);
        return NULL;
    }
    if (ROUTER_CAST(self)->target == Py_None) {
        sp_err_set_raised(missing);
        return NULL;
    }
    Py_DECREF(missing);
    return PyObject_GetAttr(ROUTER_CAST(self)->target, name);
}

/* Setting an attribute (a host's stream keeps state on itself, as
 * ipykernel's does): the replaced stream's, for the host; refused to
 * sandboxed code. */
static int
router_tp_setattro(PyObject *self, PyObject *name, PyObject *value)
{
    int inside = router_sandboxed();
    if (inside != 0) {
        if (inside > 0) {
            PyErr_Format(PyExc_AttributeError,
                         "sys.%s's attributes cannot be set inside a sandboxed "
                         "run", ROUTER_CAST(self)->which ? "stderr" : "stdout");
        }
        return -1;
    }
    if (ROUTER_CAST(self)->target == Py_None) {
        return PyObject_GenericSetAttr(self, name, value);
    }
    return PyObject_SetAttr(ROUTER_CAST(self)->target, name, value);
}

static PyObject *
router_tp_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<safepyrun output router for sys.%s>",
                                ROUTER_CAST(self)->which ? "stderr" : "stdout");
}

static PyMethodDef router_methods[] = {
    {"write", router_write, METH_O, "Write text to this run's output."},
    {"writelines", router_writelines, METH_O, "Write each line."},
    {"flush", router_flush, METH_NOARGS, "Flush the stream."},
    {"isatty", router_isatty, METH_NOARGS, "Whether the stream is a terminal."},
    {"fileno", router_fileno, METH_NOARGS, "The stream's file descriptor."},
    {"close", router_close, METH_NOARGS, "Close the stream (host only)."},
    {"writable", router_true, METH_NOARGS, "True."},
    {"readable", router_false, METH_NOARGS, "False."},
    {"seekable", router_false, METH_NOARGS, "False."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef router_getset[] = {
    {"encoding", router_get_plain, NULL, "The stream's encoding.", "encoding"},
    {"errors", router_get_plain, NULL, "The stream's error handler.", "errors"},
    {"name", router_get_plain, NULL, "The stream's name.", "name"},
    {"mode", router_get_plain, NULL, "The stream's mode.", "mode"},
    {"newlines", router_get_plain, NULL, "The stream's newlines.", "newlines"},
    {"line_buffering", router_get_plain, NULL, "Whether line-buffered.",
     "line_buffering"},
    {"closed", router_get_closed, NULL, "Whether the stream is closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot router_slots[] = {
    {Py_tp_doc, "sys.stdout/sys.stderr while safepyrun captures run output: "
                "each run's writes go to its report, everyone else's to the "
                "stream it replaced."},
    {Py_tp_traverse, router_tp_traverse},
    {Py_tp_clear, router_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_getattro, router_tp_getattro},
    {Py_tp_setattro, router_tp_setattro},
    {Py_tp_repr, router_tp_repr},
    {Py_tp_methods, router_methods},
    {Py_tp_getset, router_getset},
    {0, NULL},
};

static PyType_Spec router_spec = {
    .name = "safepyrun._engine.OutputRouter",
    .basicsize = sizeof(SpRouter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = router_slots,
};

/* Point logging's stream handlers that hold `stream` (made before the
 * router, e.g. by logging.basicConfig()) at `router`.  The handler's
 * instance dict is written directly: no handler code runs.  Failures are
 * forgotten: those handlers then write to the host's stream. */
static void
output_redirect_handlers(PyObject *stream, PyObject *router)
{
    PyObject *logging = PyImport_GetModule(output_global->logging_name);
    if (logging == NULL) {
        PyErr_Clear(); /* not imported: no handlers */
        return;
    }
    PyObject *handlers = PyObject_GetAttrString(logging, "_handlerList");
    Py_DECREF(logging);
    if (handlers == NULL || !PyList_Check(handlers)) {
        Py_XDECREF(handlers);
        PyErr_Clear();
        return;
    }
    PyObject *snapshot = PyList_AsTuple(handlers);
    Py_DECREF(handlers);
    for (Py_ssize_t i = 0; snapshot != NULL && i < PyTuple_GET_SIZE(snapshot); i++) {
        PyObject *ref = PyTuple_GET_ITEM(snapshot, i);
        PyObject *handler = NULL, *dict = NULL, *held = NULL;
        if (!PyWeakref_Check(ref) || sp_weakref_get_ref(ref, &handler) <= 0) {
            PyErr_Clear();
            continue;
        }
        dict = PyObject_GenericGetDict(handler, NULL);
        if (dict != NULL && sp_dict_get_ref_str(dict, "stream", &held) > 0 &&
            held == stream && PyDict_SetItemString(dict, "stream", router) < 0) {
            PyErr_Clear();
        }
        PyErr_Clear();
        Py_XDECREF(held);
        Py_XDECREF(dict);
        Py_DECREF(handler);
    }
    Py_XDECREF(snapshot);
    PyErr_Clear();
}

/* The router now at sys.<name>: the one there, or a new one wrapping what
 * is there.  New reference, or NULL with no exception when sys has no such
 * stream, or NULL with an exception. */
static PyObject *
output_install_one(int which)
{
    PyObject *name = output_global->names[which];
    PyObject *cur = PySys_GetObject(which ? "stderr" : "stdout"); /* borrowed */
    if (cur == NULL) {
        return NULL; /* sys.stdout deleted: nothing to route */
    }
    if (Py_IS_TYPE(cur, output_global->router_type)) {
        return Py_NewRef(cur);
    }
    SpRouter *r = PyObject_GC_New(SpRouter, output_global->router_type);
    if (r == NULL) {
        return NULL;
    }
    Py_INCREF(output_global->router_type);
    r->target = Py_NewRef(cur);
    r->which = which;
    PyObject_GC_Track(r);
    if (PySys_SetObject(which ? "stderr" : "stdout", (PyObject *)r) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    (void)name;
    output_redirect_handlers(r->target, (PyObject *)r);
    return (PyObject *)r;
}

int
sp_output_enter(sp_output_streams *s)
{
    for (int i = 0; i < 2; i++) {
        s->router[i] = output_install_one(i);
        if (s->router[i] == NULL && PyErr_Occurred()) {
            goto error;
        }
        if (s->router[i] != NULL && s->own[i] != NULL &&
            PySys_SetObject(i ? "stderr" : "stdout", s->own[i]) < 0) {
            goto error;
        }
    }
    return 0;
error:
    Py_CLEAR(s->router[0]);
    Py_CLEAR(s->router[1]);
    return -1;
}

int
sp_output_leave(sp_output_streams *s)
{
    PyObject *pending = sp_err_get_raised();
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        if (s->router[i] == NULL) {
            continue;
        }
        PyObject *cur = PySys_GetObject(i ? "stderr" : "stdout"); /* borrowed */
        if (cur == s->router[i]) {
            Py_CLEAR(s->own[i]);
        }
        else {
            /* The cell's own stream (or None if it deleted sys.stdout):
             * its steps keep it, the host gets the router back. */
            Py_XSETREF(s->own[i], Py_NewRef(cur != NULL ? cur : Py_None));
            if (PySys_SetObject(i ? "stderr" : "stdout", s->router[i]) < 0) {
                rc = -1;
            }
        }
        Py_CLEAR(s->router[i]);
    }
    if (rc < 0 && pending != NULL) {
        PyErr_WriteUnraisable(NULL); /* the cell's error matters more */
        rc = 0;
    }
    if (pending != NULL) {
        sp_err_set_raised(pending);
    }
    return rc;
}

void
sp_output_clear(sp_output_streams *s)
{
    for (int i = 0; i < 2; i++) {
        Py_CLEAR(s->router[i]);
        Py_CLEAR(s->own[i]);
    }
}

int
sp_output_init(PyObject *module)
{
    if (output_global->router_type != NULL) {
        return PyModule_AddObjectRef(module, "OutputRouter",
                                     (PyObject *)output_global->router_type);
    }
    PyObject *io = PyImport_ImportModule("io");
    if (io == NULL) {
        return -1;
    }
    output_global->unsupported = PyObject_GetAttrString(io, "UnsupportedOperation");
    Py_DECREF(io);
    output_global->names[0] = PyUnicode_InternFromString("stdout");
    output_global->names[1] = PyUnicode_InternFromString("stderr");
    output_global->write_name = PyUnicode_InternFromString("write");
    output_global->flush_name = PyUnicode_InternFromString("flush");
    output_global->isatty_name = PyUnicode_InternFromString("isatty");
    output_global->fileno_name = PyUnicode_InternFromString("fileno");
    output_global->close_name = PyUnicode_InternFromString("close");
    output_global->logging_name = PyUnicode_InternFromString("logging");
    if (output_global->unsupported == NULL || output_global->names[0] == NULL ||
        output_global->names[1] == NULL || output_global->write_name == NULL ||
        output_global->flush_name == NULL || output_global->isatty_name == NULL ||
        output_global->fileno_name == NULL || output_global->close_name == NULL ||
        output_global->logging_name == NULL) {
        return -1;
    }
    output_global->router_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &router_spec, NULL);
    if (output_global->router_type == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "OutputRouter",
                                 (PyObject *)output_global->router_type);
}
