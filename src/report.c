/* report.c - the run report: what one run wrote and which of its effects
 * the sandbox judged.
 *
 * A report exists only for a run started by Runner.report (RunPython.run):
 * the run holds it (SpRun.report, owned) and so do the context copies of
 * the tasks the cell spawned, which is how output written by those tasks
 * finds it.  The output router (output.c) appends what the run writes to
 * sys.stdout/sys.stderr; the audit hook (hook.c) and the call gate
 * (trust.c) add each event they judged.  When the cell ends, the cell
 * (cell.c) closes the report and turns it into a dict: from then on what
 * the run's leftover tasks or threads write goes to the host's streams,
 * and no more events are recorded.
 *
 * Bounds: each stream keeps at most `max_output` characters (the rest is
 * counted and named by a marker at the end); at most REPORT_MAX_EVENTS
 * events are kept, the rest counted.  Event arguments are kept as reprs
 * made without running a cell's code (the hook's safe repr), so that a
 * report never holds, nor later shows, objects a cell could use to run
 * code in the host.
 *
 * Threading: GIL held throughout; a worker thread of the run (to_thread)
 * writes into the same report under the GIL.
 */
#include "common.h"
#include "state.h"
#include "report.h"

#include <time.h>

/* Events kept per run; a cell retrying a refused write in a loop should
 * not grow the report without end. */
#define REPORT_MAX_EVENTS 1000
/* Rich outputs (IPython display()) kept per run. */
#define REPORT_MAX_DISPLAYS 100

/* This file's part of the engine state (state.h). */
static struct sp_report_state *const report_global = &sp_state.report;

typedef struct {
    PyObject_HEAD
    PyObject *chunks[2];       /* owned: lists of str, per stream */
    Py_ssize_t kept[2];        /* characters held in chunks */
    Py_ssize_t dropped[2];     /* characters past max_output, not held */
    Py_ssize_t max_output;     /* per stream; -1: no limit */
    PyObject *events;          /* owned: list of (name, args, verdict, by) */
    PyObject *displays;        /* owned: list of {mime: str or bytes} */
    Py_ssize_t events_dropped; /* events past REPORT_MAX_EVENTS */
    double start;              /* monotonic seconds at the first step */
    int echo;                  /* also shown on the host's streams */
    int open;                  /* capturing and recording */
} SpReport;

static double
report_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
report_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpReport *r = (SpReport *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(r->chunks[0]);
    Py_VISIT(r->chunks[1]);
    Py_VISIT(r->events);
    Py_VISIT(r->displays);
    return 0;
}

static int
report_tp_clear(PyObject *self)
{
    SpReport *r = (SpReport *)self;
    Py_CLEAR(r->chunks[0]);
    Py_CLEAR(r->chunks[1]);
    Py_CLEAR(r->events);
    Py_CLEAR(r->displays);
    return 0;
}

/* report_display(data) -> bool: a rich output (IPython's display data, a
 * {mime: str or bytes} dict) for the report of the run writing here.
 * Only str keys with str or bytes values are kept, as plain copies: the
 * report never holds a cell's objects.  False when no report is open here
 * (the caller then publishes as usual). */
static PyObject *
report_display(PyObject *module, PyObject *data)
{
    (void)module;
    SpRun *run = NULL;   /* owned */
    PyObject *copy = NULL, *items = NULL, *res = NULL; /* owned */
    if (!PyDict_Check(data)) {
        PyErr_Format(PyExc_TypeError, "display data must be a dict, not %.200s",
                     SP_TYPE_NAME(data));
        return NULL;
    }
    int found = sp_context_current_any(&run);
    if (found < 0) {
        return NULL;
    }
    SpReport *r = found ? (SpReport *)sp_report_open_of(run) : NULL;
    if (r == NULL) {
        res = Py_NewRef(Py_False);
        goto done;
    }
    if (PyList_GET_SIZE(r->displays) >= REPORT_MAX_DISPLAYS) {
        res = Py_NewRef(Py_True); /* kept from the host too: the run's */
        goto done;
    }
    copy = PyDict_New();
    items = copy == NULL ? NULL : PyDict_Items(data);
    if (items == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        PyObject *k = PyTuple_GET_ITEM(kv, 0), *v = PyTuple_GET_ITEM(kv, 1);
        if (!PyUnicode_Check(k) || !(PyUnicode_Check(v) || PyBytes_Check(v))) {
            continue;
        }
        PyObject *kc = PyUnicode_FromObject(k);
        PyObject *vc = PyUnicode_Check(v) ? PyUnicode_FromObject(v)
                                          : PyBytes_FromStringAndSize(
                                                PyBytes_AS_STRING(v),
                                                PyBytes_GET_SIZE(v));
        int rc = kc == NULL || vc == NULL ? -1 : PyDict_SetItem(copy, kc, vc);
        Py_XDECREF(kc);
        Py_XDECREF(vc);
        if (rc < 0) {
            goto done;
        }
    }
    if (PyList_Append(r->displays, copy) < 0) {
        goto done;
    }
    res = Py_NewRef(Py_True);
done:
    Py_XDECREF(run);
    Py_XDECREF(copy);
    Py_XDECREF(items);
    return res;
}

static PyMethodDef report_functions[] = {
    {"report_display", report_display, METH_O,
     "report_display(data) -> bool\n\nKeep IPython display data in the "
     "report of the run writing here; False when there is none."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot report_slots[] = {
    {Py_tp_doc, "The report of one run (engine-internal)."},
    {Py_tp_traverse, report_tp_traverse},
    {Py_tp_clear, report_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {0, NULL},
};

static PyType_Spec report_spec = {
    .name = "safepyrun._engine.RunReport",
    .basicsize = sizeof(SpReport),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = report_slots,
};

int
sp_report_init(PyObject *module)
{
    if (report_global->type == NULL) {
        /* Not added to the module: nothing outside the engine needs it. */
        report_global->type =
            (PyTypeObject *)PyType_FromModuleAndSpec(module, &report_spec, NULL);
        if (report_global->type == NULL) {
            return -1;
        }
    }
    return PyModule_AddFunctions(module, report_functions);
}

PyObject *
sp_report_new(Py_ssize_t max_output, int echo)
{
    SpReport *r = PyObject_GC_New(SpReport, report_global->type);
    if (r == NULL) {
        return NULL;
    }
    Py_INCREF(report_global->type);
    r->chunks[0] = PyList_New(0);
    r->chunks[1] = PyList_New(0);
    r->events = PyList_New(0);
    r->displays = PyList_New(0);
    r->kept[0] = r->kept[1] = r->dropped[0] = r->dropped[1] = 0;
    r->max_output = max_output;
    r->events_dropped = 0;
    r->start = report_now();
    r->echo = echo;
    r->open = 1;
    PyObject_GC_Track(r);
    if (r->chunks[0] == NULL || r->chunks[1] == NULL || r->events == NULL ||
        r->displays == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

PyObject *
sp_report_open_of(SpRun *run)
{
    PyObject *rep = run->report;
    return rep != NULL && ((SpReport *)rep)->open ? rep : NULL;
}

int
sp_report_echoes(PyObject *report)
{
    return ((SpReport *)report)->echo;
}

void
sp_report_start(PyObject *report)
{
    ((SpReport *)report)->start = report_now();
}

int
sp_report_append(PyObject *report, int which, PyObject *text)
{
    SpReport *r = (SpReport *)report;
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    Py_ssize_t take = len;
    if (r->max_output >= 0) {
        Py_ssize_t room = r->max_output - r->kept[which];
        take = room <= 0 ? 0 : (len < room ? len : room);
    }
    r->dropped[which] += len - take;
    if (take == 0) {
        return 0;
    }
    /* A copy of exactly the characters kept: a str subclass's methods
     * never run later, when the host reads the output. */
    PyObject *part = PyUnicode_Substring(text, 0, take);
    if (part == NULL) {
        return -1;
    }
    int rc = PyList_Append(r->chunks[which], part);
    Py_DECREF(part);
    if (rc == 0) {
        r->kept[which] += take;
    }
    return rc;
}

void
sp_report_event(SpRun *run, const char *event, PyObject *args,
                PyObject *(*repr_fn)(PyObject *), const char *verdict,
                PyObject *by)
{
    SpReport *r = (SpReport *)sp_report_open_of(run);
    if (r == NULL) {
        return;
    }
    if (PyList_GET_SIZE(r->events) >= REPORT_MAX_EVENTS) {
        r->events_dropped++;
        return;
    }
    PyObject *pending = sp_err_get_raised();
    PyObject *shown = NULL, *entry = NULL; /* owned */
    Py_ssize_t n = args != NULL && PyTuple_Check(args) ? PyTuple_GET_SIZE(args) : 0;
    shown = PyTuple_New(n);
    for (Py_ssize_t i = 0; shown != NULL && i < n; i++) {
        PyObject *text = repr_fn(PyTuple_GET_ITEM(args, i));
        if (text == NULL) {
            /* Shown as unavailable rather than losing the event. */
            PyErr_Clear();
            text = PyUnicode_FromString("<?>");
            if (text == NULL) {
                Py_CLEAR(shown);
                break;
            }
        }
        PyTuple_SET_ITEM(shown, i, text);
    }
    if (shown != NULL) {
        entry = Py_BuildValue("(sOsO)", event, shown, verdict,
                              by != NULL ? by : Py_None);
    }
    if (entry == NULL || PyList_Append(r->events, entry) < 0) {
        r->events_dropped++;
    }
    Py_XDECREF(shown);
    Py_XDECREF(entry);
    PyErr_Clear(); /* a report that cannot record is not the cell's error */
    sp_err_set_raised(pending);
}

/* One stream's captured text, with the truncation marker when characters
 * were dropped.  New reference or NULL. */
static PyObject *
report_stream_text(SpReport *r, int which)
{
    PyObject *empty = NULL, *text = NULL, *count = NULL, *spec = NULL;
    PyObject *shown = NULL, *res = NULL;
    empty = PyUnicode_FromString("");
    if (empty == NULL) {
        goto done;
    }
    text = PyUnicode_Join(empty, r->chunks[which]);
    if (text == NULL || r->dropped[which] == 0) {
        res = Py_XNewRef(text);
        goto done;
    }
    /* "12,345": the thousands grouping of format(n, ','). */
    count = PyLong_FromSsize_t(r->dropped[which]);
    spec = count == NULL ? NULL : PyUnicode_FromString(",");
    shown = spec == NULL ? NULL : PyObject_Format(count, spec);
    if (shown == NULL) {
        goto done;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    int newline = len > 0 && PyUnicode_READ_CHAR(text, len - 1) != '\n';
    res = PyUnicode_FromFormat("%U%s... [output truncated: %U more characters]\n",
                               text, newline ? "\n" : "", shown);
done:
    Py_XDECREF(empty);
    Py_XDECREF(text);
    Py_XDECREF(count);
    Py_XDECREF(spec);
    Py_XDECREF(shown);
    return res;
}

void
sp_report_close(SpRun *run)
{
    if (run->report != NULL) {
        ((SpReport *)run->report)->open = 0;
    }
}

PyObject *
sp_report_finish(SpRun *run, PyObject *value, PyObject *error)
{
    SpReport *r = (SpReport *)run->report;
    PyObject *out = NULL, *err = NULL, *events = NULL, *displays = NULL;
    PyObject *res = NULL, *peak = NULL;
    if (r == NULL) {
        PyErr_SetString(PyExc_SystemError, "safepyrun: the run has no report");
        return NULL;
    }
    double elapsed = report_now() - r->start;
    r->open = 0; /* later writes go to the host; no more events */
    out = report_stream_text(r, SP_REPORT_STDOUT);
    err = out == NULL ? NULL : report_stream_text(r, SP_REPORT_STDERR);
    events = err == NULL ? NULL : PyList_AsTuple(r->events);
    displays = events == NULL ? NULL : PyList_AsTuple(r->displays);
    peak = displays == NULL ? NULL : sp_memcap_run_peak(run);
    if (peak == NULL) {
        goto done;
    }
    res = Py_BuildValue("{sOsOsOsOsOsnsdsOsO}",
                        "value", value != NULL ? value : Py_None,
                        "error", error != NULL ? error : Py_None,
                        "stdout", out, "stderr", err, "events", events,
                        "events_dropped", r->events_dropped,
                        "elapsed", elapsed, "displays", displays,
                        "peak_memory", peak);
done:
    Py_XDECREF(peak);
    Py_XDECREF(out);
    Py_XDECREF(err);
    Py_XDECREF(events);
    Py_XDECREF(displays);
    return res;
}
