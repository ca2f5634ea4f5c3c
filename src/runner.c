/* runner.c - compile a cell, run it under its run context, export names.
 *
 * What it owns: the Runner type (one per RunPython: the host namespace and
 * the policy) and the Cell type (one per `await python(code)`: an awaitable
 * that drives the cell to completion).
 *
 * A cell goes through these steps, all in C:
 *   parse once to a syntax tree (top-level await allowed); apply check.c's
 *   rules; if the last statement is an expression, turn it into an
 *   assignment to RUNNER_RESULT on the tree itself, so line numbers stay the
 *   cell's own; compile; register the source in linecache as <pyrun_N>;
 *   execute with a copy of the host namespace as globals (so top-level
 *   names are globals that comprehensions, closures and functions see);
 *   await the coroutine the code returns when it used top-level await;
 *   await the tasks the cell created; export new and changed names.
 *
 * Gating: every step that runs code a cell may have touched (the cell
 * itself, its coroutine, and asyncio calls whose module attributes a cell
 * could have replaced) runs with the run context entered, and the context
 * is left again before the Cell yields to the event loop, so host code
 * that runs while the cell is suspended is never gated.  Functions the
 * runner calls (compile, asyncio.gather, all_tasks) are captured before
 * the first cell of the process runs.
 *
 * Errors: an exception that wraps one of the run's refusals (a library's
 * own error type with the PermissionError as __cause__/__context__, or an
 * ExceptionGroup) is replaced by the refusal; the traceback is trimmed to
 * start at the cell's frames.
 */
#include "common.h"
#include "runner.h"

#include "check.h"
#include "context.h"
#include "gate.h"
#include "hook.h"
#include "monitor.h"
#include "paths.h"
#include "trust.h"

#include <stddef.h>
#include <structmember.h>

#define RUNNER_RESULT "__safepyrun_result__"
#define RUNNER_MAX_UNWRAP 32

/* Process-wide references captured once (GIL held).  Owned, never freed:
 * Cells of any module object use them. */
static struct {
    PyTypeObject *runner_type;  /* owned */
    PyTypeObject *cell_type;    /* owned */
    PyObject *compile;          /* owned: builtins.compile */
    PyObject *ast_expr;         /* owned: _ast.Expr */
    PyObject *ast_assign;       /* owned: _ast.Assign */
    PyObject *ast_name;         /* owned: _ast.Name */
    PyObject *ast_store;        /* owned: an _ast.Store() instance */
    PyObject *linecache;        /* owned: the linecache module (first srcfn) */
    PyObject *result_name;      /* owned: interned RUNNER_RESULT */
    PyObject *builtins_name;    /* owned: interned "__builtins__" */
    PyObject *default_banned;   /* owned: tuple of the default banned imports */
    PyObject *all_tasks;        /* owned: asyncio.all_tasks (first run) */
    PyObject *current_task;     /* owned: asyncio.current_task */
    PyObject *gather;           /* owned: asyncio.gather */
    PyObject *cancelled;        /* owned: asyncio.CancelledError */
    unsigned long srcfn_counter;
} runner_global;

/* ---- srcfn and should_export ---------------------------------------- */

/* Register `src` in linecache under the next <pyrun_N> name (N cycling
 * 0..9) so tracebacks and inspect.getsource show the cell.  New reference
 * to the name. */
static PyObject *
runner_srcfn(PyObject *src)
{
    PyObject *name = NULL, *lines = NULL, *entry = NULL, *cache = NULL;
    if (!PyUnicode_Check(src)) {
        PyErr_Format(PyExc_TypeError, "srcfn() argument must be str, not %.200s",
                     SP_TYPE_NAME(src));
        return NULL;
    }
    name = PyUnicode_FromFormat("<pyrun_%lu>", runner_global.srcfn_counter % 10);
    runner_global.srcfn_counter++;
    if (name == NULL) {
        goto error;
    }
    lines = PyUnicode_Splitlines(src, 1);
    if (lines == NULL) {
        goto error;
    }
    /* As linecache does for files: every line ends with a newline, so
     * inspect.getsource of a cell's last function is whole. */
    Py_ssize_t nlines = PyList_GET_SIZE(lines);
    if (nlines > 0) {
        PyObject *last = PyList_GET_ITEM(lines, nlines - 1);
        Py_ssize_t len = PyUnicode_GET_LENGTH(last);
        Py_UCS4 end = len > 0 ? PyUnicode_READ_CHAR(last, len - 1) : 0;
        if (end != '\n' && end != '\r') {
            PyObject *fixed = PyUnicode_FromFormat("%U\n", last);
            if (fixed == NULL || PyList_SetItem(lines, nlines - 1, fixed) < 0) {
                goto error;
            }
        }
    }
    entry = Py_BuildValue("(nOOO)", PyUnicode_GET_LENGTH(src), Py_None, lines,
                          name);
    /* Imported on first use: it is not cheap and `import safepyrun`
     * should be. */
    if (runner_global.linecache == NULL) {
        runner_global.linecache = PyImport_ImportModule("linecache");
        if (runner_global.linecache == NULL) {
            goto error;
        }
    }
    cache = PyObject_GetAttrString(runner_global.linecache, "cache");
    if (entry == NULL || cache == NULL) {
        goto error;
    }
    /* Only a real dict: a replacement object's __setitem__ would run
     * Python code outside the gate. */
    if (PyDict_CheckExact(cache) && PyDict_SetItem(cache, name, entry) < 0) {
        goto error;
    }
    Py_DECREF(lines);
    Py_DECREF(entry);
    Py_DECREF(cache);
    return name;
error:
    Py_XDECREF(name);
    Py_XDECREF(lines);
    Py_XDECREF(entry);
    Py_XDECREF(cache);
    return NULL;
}

static PyObject *
runner_py_srcfn(PyObject *module, PyObject *src)
{
    (void)module;
    return runner_srcfn(src);
}

/* A function whose code a cell compiled (file <pyrun_N>). */
static int
runner_is_cell_function(PyObject *obj)
{
    if (!PyFunction_Check(obj)) {
        return 0;
    }
    return sp_context_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(obj));
}

/* The export rule (DESIGN.md, "Namespaces"): 1 if cell name `k` with value
 * `v` goes back to the host namespace `g`, 0 if not, -1 on error.
 *   - names starting with '_' never (`_`, `_x`, `_x_`, dunders); other
 *     names ending in '_' always;
 *   - a new name always;
 *   - an existing name is not replaced when the old value is a callable or
 *     module of the host, or the new value is a callable or module (a cell
 *     cannot shadow host names with functions: the seed's `a=3; def a()`
 *     keeps a == 3); a function an earlier cell defined may be redefined. */
static int
runner_should_export(PyObject *k, PyObject *v, PyObject *g)
{
    if (!PyUnicode_Check(k)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    if (n == 0) {
        return 0;
    }
    Py_UCS4 first = PyUnicode_READ_CHAR(k, 0), last = PyUnicode_READ_CHAR(k, n - 1);
    if (first == '_') {
        return 0;
    }
    if (last == '_') {
        return 1;
    }
    PyObject *old = NULL;
    int found = sp_dict_get_ref(g, k, &old);
    if (found <= 0) {
        return found < 0 ? -1 : 1;
    }
    int res = 1;
    if (runner_is_cell_function(old)) {
        res = 1;
    }
    else if (PyCallable_Check(old) || PyModule_Check(old) ||
             PyCallable_Check(v) || PyModule_Check(v)) {
        res = 0;
    }
    Py_DECREF(old);
    return res;
}

static PyObject *
runner_py_should_export(PyObject *module, PyObject *const *args,
                        Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "should_export() takes 3 arguments (k, v, g), %zd given",
                     nargs);
        return NULL;
    }
    if (!PyDict_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "should_export() g must be a dict, not %.200s",
                     SP_TYPE_NAME(args[2]));
        return NULL;
    }
    int r = runner_should_export(args[0], args[1], args[2]);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* Copy new and changed names from the cell's globals to `g`. */
static int
runner_export(PyObject *globals, PyObject *g)
{
    PyObject *k, *v; /* borrowed */
    Py_ssize_t pos = 0;
    while (PyDict_Next(globals, &pos, &k, &v)) {
        PyObject *old = NULL;
        int found = sp_dict_get_ref(g, k, &old);
        if (found < 0) {
            return -1;
        }
        Py_XDECREF(old);
        if (found && old == v) {
            continue; /* unchanged (pointer compare only; old not used) */
        }
        int ok = runner_should_export(k, v, g);
        if (ok < 0 || (ok && PyDict_SetItem(g, k, v) < 0)) {
            return -1;
        }
    }
    return 0;
}

/* ---- Runner ---------------------------------------------------------- */

static PyObject *runner_run(PyObject *self, PyObject *source);

typedef struct {
    PyObject_HEAD
    PyObject *g;        /* owned: host namespace (dict) */
    PyObject *ok_dests; /* owned: normalised tuple, or None */
    PyObject *banned;   /* owned: tuple of str */
    PyObject *data;     /* owned: dict for policies (RunPython's keywords) */
    PyObject *pre_deny; /* owned: callable or None */
    int ban_defs;
    int yolo;
} SpRunner;

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
    return 0;
}

/* Runner(g, ok_dests, banned=None, ban_defs=False, yolo=False, data=None,
 *        pre_deny=None) */
static PyObject *
runner_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"g", "ok_dests", "banned", "ban_defs", "yolo",
                             "data", "pre_deny", NULL};
    PyObject *g, *ok_dests, *banned = Py_None, *data = Py_None;
    PyObject *pre_deny = Py_None;
    int ban_defs = 0, yolo = 0;
    /* A runner made inside a run would carry a policy of the cell's own
     * choosing (yolo, ok_dests=None): refused, whatever the route
     * (RunPython, _engine.Runner, a subclass). */
    if (sp_gate_refuse_inside("create a runner") < 0) {
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OppOO:Runner", kwlist,
                                     &g, &ok_dests, &banned, &ban_defs, &yolo,
                                     &data, &pre_deny)) {
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
    self->ban_defs = ban_defs;
    self->yolo = yolo;
    self->ok_dests = sp_paths_normalise_dests(ok_dests);
    if (self->ok_dests == NULL) {
        goto error;
    }
    if (banned == Py_None) {
        self->banned = Py_NewRef(runner_global.default_banned);
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

/* runner(code) is runner.run(code): RunPython, a subclass, is called
 * straight into C. */
static PyObject *
runner_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", NULL};
    PyObject *code; /* borrowed */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:__call__", kwlist,
                                     &code)) {
        return NULL;
    }
    return runner_run(self, code);
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
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- compiling a cell ---------------------------------------------- */

/* Copy the source location of `from` onto `to`. */
static int
runner_copy_location(PyObject *to, PyObject *from)
{
    static const char *const attrs[] = {"lineno", "col_offset", "end_lineno",
                                        "end_col_offset", NULL};
    for (int i = 0; attrs[i] != NULL; i++) {
        PyObject *v = PyObject_GetAttrString(from, attrs[i]);
        if (v == NULL) {
            return -1;
        }
        int rc = PyObject_SetAttrString(to, attrs[i], v);
        Py_DECREF(v);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

/* If the module's last statement is an expression, replace it in place by
 * `RUNNER_RESULT = <expression>` at the same location.  Returns 1 if it
 * did, 0 if there is no final expression, -1 on error. */
static int
runner_split_last(PyObject *tree)
{
    PyObject *body = NULL, *value = NULL, *name = NULL, *assign = NULL;
    PyObject *kw = NULL, *targets = NULL, *empty = NULL;
    int rc = -1;
    body = PyObject_GetAttrString(tree, "body");
    if (body == NULL) {
        goto done;
    }
    if (!PyList_Check(body) || PyList_GET_SIZE(body) == 0) {
        rc = 0;
        goto done;
    }
    Py_ssize_t last_i = PyList_GET_SIZE(body) - 1;
    PyObject *last = PyList_GET_ITEM(body, last_i); /* borrowed from body */
    if (!Py_IS_TYPE(last, (PyTypeObject *)runner_global.ast_expr)) {
        rc = 0;
        goto done;
    }
    value = PyObject_GetAttrString(last, "value");
    if (value == NULL) {
        goto done;
    }
    name = PyObject_CallFunctionObjArgs(runner_global.ast_name,
                                        runner_global.result_name,
                                        runner_global.ast_store, NULL);
    if (name == NULL || runner_copy_location(name, last) < 0) {
        goto done;
    }
    targets = PyList_New(1);
    if (targets == NULL) {
        goto done;
    }
    PyList_SET_ITEM(targets, 0, Py_NewRef(name));
    kw = Py_BuildValue("{sOsO}", "targets", targets, "value", value);
    empty = PyTuple_New(0);
    if (kw == NULL || empty == NULL) {
        goto done;
    }
    assign = PyObject_Call(runner_global.ast_assign, empty, kw);
    if (assign == NULL || runner_copy_location(assign, last) < 0) {
        goto done;
    }
    if (PyList_SetItem(body, last_i, Py_NewRef(assign)) < 0) {
        goto done;
    }
    rc = 1;
done:
    Py_XDECREF(body);
    Py_XDECREF(value);
    Py_XDECREF(name);
    Py_XDECREF(assign);
    Py_XDECREF(kw);
    Py_XDECREF(targets);
    Py_XDECREF(empty);
    return rc;
}

/* ---- Cell: the awaitable that runs one cell ------------------------- */

typedef enum {
    CELL_START,    /* not started */
    CELL_CORO,     /* driving the cell's coroutine (top-level await) */
    CELL_TASKS,    /* looking for tasks the cell created */
    CELL_WAIT,     /* driving gather() over those tasks */
    CELL_DONE,     /* finishing: result and export */
    CELL_FINISHED, /* returned or raised */
} cell_state;

typedef struct {
    PyObject_HEAD
    PyObject *runner;  /* owned: the SpRunner */
    SpRun *run;        /* owned: this cell's policy */
    PyObject *source;  /* owned: the code as given */
    PyObject *code;    /* owned or NULL until started: compiled cell */
    PyObject *globals; /* owned or NULL until started: the cell's namespace */
    PyObject *coro;    /* owned or NULL: the running cell coroutine */
    PyObject *waiter;  /* owned or NULL: gather(...).__await__() */
    PyObject *seen;    /* owned or NULL: tasks not to await (existed before,
                          or already awaited); NULL when no loop runs */
    PyObject *error;   /* owned or NULL: first failure of a cell task */
    int has_result;
    int monitored;     /* the call monitor watches this cell (monitor.c) */
    cell_state state;
} SpCell;

static int
cell_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    SpCell *c = (SpCell *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->runner);
    Py_VISIT(c->run);
    Py_VISIT(c->source);
    Py_VISIT(c->code);
    Py_VISIT(c->globals);
    Py_VISIT(c->coro);
    Py_VISIT(c->waiter);
    Py_VISIT(c->seen);
    Py_VISIT(c->error);
    return 0;
}

static int
cell_tp_clear(PyObject *self)
{
    SpCell *c = (SpCell *)self;
    Py_CLEAR(c->runner);
    Py_CLEAR(c->run);
    Py_CLEAR(c->source);
    Py_CLEAR(c->code);
    Py_CLEAR(c->globals);
    Py_CLEAR(c->coro);
    Py_CLEAR(c->waiter);
    Py_CLEAR(c->seen);
    Py_CLEAR(c->error);
    return 0;
}

/* Compile `source` for `runner`: type and NUL checks, parse, syntax-tree
 * rules, last-expression split, compile.  Sets *has_result.  New reference
 * to the code object, or NULL. */
static PyObject *
runner_compile(SpRunner *r, PyObject *source, int *has_result)
{
    PyObject *filename = NULL, *tree = NULL, *code = NULL;
    if (!PyUnicode_Check(source)) {
        PyErr_Format(PyExc_TypeError, "code must be a str, not %.200s", SP_TYPE_NAME(source));
        return NULL;
    }
    Py_ssize_t size;
    const char *src = PyUnicode_AsUTF8AndSize(source, &size);
    if (src == NULL) {
        return NULL;
    }
    if ((Py_ssize_t)strlen(src) != size) {
        PyErr_SetString(PyExc_ValueError,
                        "source code string cannot contain null bytes");
        return NULL;
    }
    filename = runner_srcfn(source);
    if (filename == NULL) {
        goto done;
    }
    PyCompilerFlags flags = {PyCF_ONLY_AST | PyCF_ALLOW_TOP_LEVEL_AWAIT,
                             PY_MINOR_VERSION};
    tree = Py_CompileStringObject(src, filename, Py_file_input, &flags, -1);
    if (tree == NULL) {
        goto done;
    }
    if (!r->yolo && sp_check_needed(source, r->banned, r->ban_defs) &&
        sp_check_tree(tree, r->banned, r->ban_defs, filename) < 0) {
        goto done;
    }
    *has_result = runner_split_last(tree);
    if (*has_result < 0) {
        goto done;
    }
    code = PyObject_CallFunction(runner_global.compile, "OOsii", tree, filename,
                                 "exec", PyCF_ALLOW_TOP_LEVEL_AWAIT, 1);
    if (code != NULL && !PyCode_Check(code)) {
        PyErr_SetString(PyExc_SystemError, "compile() did not return code");
        Py_CLEAR(code);
    }
done:
    Py_XDECREF(filename);
    Py_XDECREF(tree);
    return code;
}

/* Runner.run(code) -> Cell.  Nothing happens until the Cell is awaited:
 * then the code is checked, compiled and run, so a syntax error surfaces
 * at the await as any other error of the cell does. */
static PyObject *
runner_run(PyObject *self, PyObject *source)
{
    SpRunner *r = (SpRunner *)self;
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
    SpCell *cell = PyObject_GC_New(SpCell, runner_global.cell_type);
    if (cell == NULL) {
        Py_DECREF(run);
        return NULL;
    }
    Py_INCREF(runner_global.cell_type);
    cell->runner = Py_NewRef(self);
    cell->run = run; /* reference moves into the cell */
    cell->source = Py_NewRef(source);
    cell->code = cell->globals = cell->coro = cell->waiter = NULL;
    cell->seen = cell->error = NULL;
    cell->has_result = 0;
    cell->monitored = 0;
    cell->state = CELL_START;
    PyObject_GC_Track(cell);
    return (PyObject *)cell;
}

/* Capture asyncio's functions once, before any cell could replace them. */
static int
cell_capture_asyncio(void)
{
    if (runner_global.gather != NULL) {
        return 0;
    }
    if (sp_hook_note_asyncio() < 0) {
        return -1;
    }
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        return -1;
    }
    runner_global.all_tasks = PyObject_GetAttrString(asyncio, "all_tasks");
    runner_global.current_task = PyObject_GetAttrString(asyncio, "current_task");
    runner_global.cancelled = PyObject_GetAttrString(asyncio, "CancelledError");
    runner_global.gather = PyObject_GetAttrString(asyncio, "gather");
    Py_DECREF(asyncio);
    if (runner_global.all_tasks == NULL || runner_global.current_task == NULL ||
        runner_global.cancelled == NULL || runner_global.gather == NULL) {
        Py_CLEAR(runner_global.all_tasks);
        Py_CLEAR(runner_global.current_task);
        Py_CLEAR(runner_global.cancelled);
        Py_CLEAR(runner_global.gather);
        return -1;
    }
    return 0;
}

/* Prepare to find the tasks the cell creates.  Where a task's context
 * can be read (3.12+), a task is the cell's when its context holds this
 * cell's run, and only the current task needs excluding; on 3.11 the tasks
 * that exist before the cell runs are remembered.  Without a running event
 * loop there is nothing to track and `seen` stays NULL. */
static int
cell_begin(SpCell *self)
{
    if (cell_capture_asyncio() < 0) {
        return -1;
    }
    PyObject *current = PyObject_CallNoArgs(runner_global.current_task);
    if (current == NULL) {
        if (PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            PyErr_Clear(); /* no running loop */
            return 0;
        }
        return -1;
    }
#if SP_HAVE_TASK_GET_CONTEXT
    self->seen = PySet_New(NULL);
#else
    PyObject *tasks = PyObject_CallNoArgs(runner_global.all_tasks);
    self->seen = tasks == NULL ? NULL : PySet_New(tasks);
    Py_XDECREF(tasks);
#endif
    int rc = self->seen == NULL ? -1
             : current == Py_None ? 0
                                  : PySet_Add(self->seen, current);
    Py_DECREF(current);
    return rc;
}

/* Whether `task` belongs to this cell: it is not done and (where the
 * interpreter can tell) it runs in a context holding this cell's run.
 * 1 yes, 0 no, -1 error. */
static int
cell_owns_task(SpCell *self, PyObject *task)
{
    PyObject *done = PyObject_CallMethod(task, "done", NULL);
    if (done == NULL) {
        return -1;
    }
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done != 0) {
        return is_done < 0 ? -1 : 0;
    }
#if SP_HAVE_TASK_GET_CONTEXT
    PyObject *ctx = PyObject_CallMethod(task, "get_context", NULL);
    if (ctx == NULL) {
        return -1;
    }
    if (!PyContext_CheckExact(ctx)) {
        Py_DECREF(ctx);
        return 0;
    }
    PyObject *value = PyObject_GetItem(ctx, sp_context_var());
    Py_DECREF(ctx);
    if (value == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int mine = value == (PyObject *)self->run;
    Py_DECREF(value);
    return mine;
#else
    (void)self;
    return 1;
#endif
}

/* Find the cell's tasks not yet awaited; if any, start gathering them.
 * 1 if self->waiter was set, 0 if there is nothing to wait for, -1 error. */
static int
cell_collect_tasks(SpCell *self)
{
    PyObject *tasks = NULL, *mine = NULL, *args = NULL, *kw = NULL;
    PyObject *fut = NULL;
    int rc = -1;
    if (self->seen == NULL) {
        return 0;
    }
    tasks = PyObject_CallNoArgs(runner_global.all_tasks);
    mine = PyList_New(0);
    if (tasks == NULL || mine == NULL) {
        goto done;
    }
    PyObject *it = PyObject_GetIter(tasks);
    if (it == NULL) {
        goto done;
    }
    PyObject *task;
    while ((task = PyIter_Next(it)) != NULL) {
        int seen = PySet_Contains(self->seen, task);
        int own = seen == 0 ? cell_owns_task(self, task) : 0;
        if (seen < 0 || own < 0 ||
            (own && (PyList_Append(mine, task) < 0 ||
                     PySet_Add(self->seen, task) < 0))) {
            Py_DECREF(task);
            Py_DECREF(it);
            goto done;
        }
        Py_DECREF(task);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        goto done;
    }
    if (PyList_GET_SIZE(mine) == 0) {
        rc = 0;
        goto done;
    }
    args = PyList_AsTuple(mine);
    kw = Py_BuildValue("{sO}", "return_exceptions", Py_True);
    if (args == NULL || kw == NULL) {
        goto done;
    }
    fut = PyObject_Call(runner_global.gather, args, kw);
    if (fut == NULL) {
        goto done;
    }
    self->waiter = PyObject_CallMethod(fut, "__await__", NULL);
    rc = self->waiter == NULL ? -1 : 1;
done:
    Py_XDECREF(tasks);
    Py_XDECREF(mine);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(fut);
    return rc;
}

/* Note the first failure among gathered results (a list); a task that was
 * cancelled is not a failure of the cell. */
static void
cell_note_task_errors(SpCell *self, PyObject *results)
{
    if (!PyList_Check(results) || self->error != NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(results); i++) {
        PyObject *item = PyList_GET_ITEM(results, i);
        if (PyExceptionInstance_Check(item) &&
            !PyErr_GivenExceptionMatches(item, runner_global.cancelled)) {
            self->error = Py_NewRef(item);
            return;
        }
    }
}

/* Search `exc`'s causes, contexts and group members for one of the run's
 * refusals.  Borrowed result (kept alive by `exc`'s chain), or NULL. */
static PyObject *
cell_find_denial(SpRun *run, PyObject *exc, int depth)
{
    if (exc == NULL || depth > RUNNER_MAX_UNWRAP) {
        return NULL;
    }
    if (sp_context_is_denial(run, exc)) {
        return exc;
    }
    PyObject *found = NULL;
    PyObject *cause = PyException_GetCause(exc);     /* new or NULL */
    PyObject *context = PyException_GetContext(exc); /* new or NULL */
    found = cell_find_denial(run, cause, depth + 1);
    if (found == NULL) {
        found = cell_find_denial(run, context, depth + 1);
    }
    if (found == NULL &&
        PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_BaseExceptionGroup)) {
        PyObject *members = PyObject_GetAttrString(exc, "exceptions");
        if (members == NULL) {
            PyErr_Clear();
        }
        else if (PyTuple_Check(members)) {
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(members) && !found; i++) {
                found = cell_find_denial(run, PyTuple_GET_ITEM(members, i),
                                         depth + 1);
            }
        }
        Py_XDECREF(members);
    }
    /* `found` stays reachable from `exc`, which the caller holds. */
    Py_XDECREF(cause);
    Py_XDECREF(context);
    return found;
}

/* Whether a traceback entry runs a cell's code. */
static int
cell_tb_in_cell(PyObject *tb)
{
    PyFrameObject *frame = ((PyTracebackObject *)tb)->tb_frame;
    PyCodeObject *code = PyFrame_GetCode(frame);
    int is_cell = sp_context_is_cell_code(code);
    Py_DECREF(code);
    return is_cell;
}

/* Rewrite the pending exception for the host: a wrapped refusal is
 * unwrapped, and the traceback starts at the cell's first frame. */
static void
cell_fix_error(SpCell *self)
{
    PyObject *exc = sp_err_get_raised();
    if (exc == NULL) {
        return;
    }
    PyObject *denial = cell_find_denial(self->run, exc, 0);
    if (denial != NULL && denial != exc) {
        Py_SETREF(exc, Py_NewRef(denial));
    }
    PyObject *tb = PyException_GetTraceback(exc); /* new or NULL */
    PyObject *walk = tb;                          /* borrowed along the chain */
    while (walk != NULL && walk != Py_None && !cell_tb_in_cell(walk)) {
        walk = (PyObject *)((PyTracebackObject *)walk)->tb_next;
    }
    if (walk != NULL && walk != tb && walk != Py_None) {
        PyException_SetTraceback(exc, walk);
    }
    Py_XDECREF(tb);
    sp_err_set_raised(exc);
}

/* Throw `exc` into iterator `it` the way yield-from does. */
static PySendResult
cell_throw_into(PyObject *it, PyObject *exc, PyObject **out)
{
    *out = PyObject_CallMethod(it, "throw", "O", exc);
    if (*out != NULL) {
        return PYGEN_NEXT;
    }
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        return PYGEN_ERROR;
    }
    PyObject *stop = sp_err_get_raised();
    *out = PyObject_GetAttrString(stop, "value");
    Py_DECREF(stop);
    return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

/* Enter the cell's run: the monitor (when the cell needs it) and the run
 * context.  0 ok (then cell_leave must follow), -1 error. */
static int
cell_enter(SpCell *self, sp_monitor_saved *saved, PyObject **token)
{
    if (sp_monitor_enter(saved, self->monitored) < 0) {
        return -1;
    }
    *token = sp_context_enter(self->run);
    if (*token == NULL) {
        sp_monitor_leave(saved);
        return -1;
    }
    return 0;
}

/* Leave what cell_enter entered; a pending exception survives.  Steals
 * `token`.  0 ok, -1 error. */
static int
cell_leave(sp_monitor_saved *saved, PyObject *token)
{
    int left = sp_context_leave(token);
    sp_monitor_leave(saved);
    return left;
}

/* Send `arg` (or throw `exc`) into `it` with the run entered. */
static PySendResult
cell_drive(SpCell *self, PyObject *it, PyObject *arg, PyObject *exc,
           PyObject **out)
{
    sp_monitor_saved saved;
    PyObject *token;
    *out = NULL;
    if (cell_enter(self, &saved, &token) < 0) {
        return PYGEN_ERROR;
    }
    PySendResult r = exc != NULL ? cell_throw_into(it, exc, out)
                                 : PyIter_Send(it, arg, out);
    if (cell_leave(&saved, token) < 0 && r != PYGEN_ERROR) {
        Py_CLEAR(*out);
        return PYGEN_ERROR;
    }
    return r;
}

/* Start the cell: run its code; a cell that used top-level await returns a
 * coroutine, which becomes self->coro.  0 ok, -1 error. */
static int
cell_start(SpCell *self)
{
    SpRunner *r = (SpRunner *)self->runner;
    SpRun *outer = NULL;
    int nested = sp_context_current(&outer);
    Py_XDECREF(outer);
    if (nested != 0) {
        if (nested > 0) {
            PyErr_SetString(PyExc_PermissionError,
                            "safepyrun refused to start a run from sandboxed "
                            "code: a nested run could change the policy");
        }
        return -1;
    }
    if (sp_monitor_sync() < 0) {
        return -1;
    }
    self->code = runner_compile(r, self->source, &self->has_result);
    if (self->code == NULL ||
        sp_context_register_codes(self->code, self->run) < 0) {
        return -1;
    }
    self->monitored = sp_monitor_cell_wants(self->code);
    if (self->monitored && sp_monitor_watch_cell(self->code) < 0) {
        return -1;
    }
    /* A copy of the host namespace: the cell's top-level names are its
     * globals; new ones reach the host through runner_export. */
    self->globals = PyDict_Copy(r->g);
    if (self->globals == NULL) {
        return -1;
    }
    /* As exec() does: without __builtins__ a cell's imports misbehave. */
    if (PyDict_SetDefault(self->globals, runner_global.builtins_name,
                          PyEval_GetBuiltins()) == NULL) {
        return -1;
    }
    if (cell_begin(self) < 0) {
        return -1;
    }
    sp_monitor_saved saved;
    PyObject *token;
    if (cell_enter(self, &saved, &token) < 0) {
        return -1;
    }
    PyObject *res = PyEval_EvalCode(self->code, self->globals, self->globals);
    if (cell_leave(&saved, token) < 0 || res == NULL) {
        Py_XDECREF(res);
        return -1;
    }
    if (((PyCodeObject *)self->code)->co_flags & CO_COROUTINE) {
        self->coro = res;
        self->state = CELL_CORO;
    }
    else {
        Py_DECREF(res);
        self->state = CELL_TASKS;
    }
    return 0;
}

/* The cell's value: the last expression's, or None.  New reference. */
static PyObject *
cell_take_result(SpCell *self)
{
    if (!self->has_result) {
        return Py_NewRef(Py_None);
    }
    PyObject *result = NULL;
    if (sp_dict_get_ref(self->globals, runner_global.result_name, &result) < 0) {
        return NULL;
    }
    if (result == NULL) {
        return Py_NewRef(Py_None);
    }
    if (PyDict_DelItem(self->globals, runner_global.result_name) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* Export names after a failure, keeping the pending exception: what the
 * cell defined before it failed still reaches the host. */
static void
cell_export_on_error(SpCell *self)
{
    if (self->globals == NULL) {
        return; /* failed before running: nothing to export */
    }
    PyObject *pending = sp_err_get_raised();
    if (PyDict_DelItem(self->globals, runner_global.result_name) < 0) {
        PyErr_Clear();
    }
    if (runner_export(self->globals, ((SpRunner *)self->runner)->g) < 0) {
        PyErr_WriteUnraisable(self->runner);
    }
    sp_err_set_raised(pending);
}

/* The state machine behind send/throw/__next__.  `exc` (borrowed, may be
 * NULL) is thrown into whatever the cell is waiting on. */
static PySendResult
cell_advance(SpCell *self, PyObject *arg, PyObject *exc, PyObject **out)
{
    assert(self->state >= CELL_START && self->state <= CELL_FINISHED);
    assert(!PyErr_Occurred());
    *out = NULL;
    for (;;) {
        switch (self->state) {
        case CELL_START:
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                goto fail;
            }
            if (cell_start(self) < 0) {
                goto fail;
            }
            break;
        case CELL_CORO:
        case CELL_WAIT: {
            PyObject **it = self->state == CELL_CORO ? &self->coro : &self->waiter;
            assert(*it != NULL);
            PySendResult r = cell_drive(self, *it, arg, exc, out);
            exc = NULL;
            arg = Py_None;
            if (r == PYGEN_NEXT) {
                return PYGEN_NEXT;
            }
            Py_CLEAR(*it);
            if (r == PYGEN_ERROR) {
                goto fail;
            }
            if (self->state == CELL_WAIT) {
                cell_note_task_errors(self, *out);
            }
            Py_CLEAR(*out);
            self->state = CELL_TASKS;
            break;
        }
        case CELL_TASKS: {
            int found = cell_collect_tasks(self);
            if (found < 0) {
                goto fail;
            }
            self->state = found ? CELL_WAIT : CELL_DONE;
            break;
        }
        case CELL_DONE: {
            if (self->error != NULL) {
                PyObject *err = self->error; /* reference moves to the error */
                self->error = NULL;
                sp_err_set_raised(err);
                goto fail;
            }
            PyObject *result = cell_take_result(self);
            if (result == NULL) {
                goto fail;
            }
            if (runner_export(self->globals, ((SpRunner *)self->runner)->g) < 0) {
                Py_DECREF(result);
                goto fail;
            }
            self->state = CELL_FINISHED;
            *out = result;
            return PYGEN_RETURN;
        }
        case CELL_FINISHED:
            PyErr_SetString(PyExc_RuntimeError,
                            "cannot reuse an already awaited cell");
            return PYGEN_ERROR;
        }
    }
fail:
    self->state = CELL_FINISHED;
    Py_CLEAR(self->coro);
    Py_CLEAR(self->waiter);
    cell_export_on_error(self);
    cell_fix_error(self);
    return PYGEN_ERROR;
}

static PySendResult
cell_am_send(PyObject *self, PyObject *arg, PyObject **result)
{
    return cell_advance((SpCell *)self, arg, NULL, result);
}

static PyObject *
cell_send(PyObject *self, PyObject *arg)
{
    PyObject *value;
    PySendResult r = cell_advance((SpCell *)self, arg, NULL, &value);
    return sp_send_result_to_python(r, value);
}

static PyObject *
cell_tp_iternext(PyObject *self)
{
    return cell_send(self, Py_None);
}

static PyObject *
cell_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    PyObject *exc;
    if (PyExceptionInstance_Check(typ)) {
        exc = Py_NewRef(typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        exc = PyExceptionInstance_Check(val) ? Py_NewRef(val)
              : val == Py_None               ? PyObject_CallNoArgs(typ)
                                             : PyObject_CallOneArg(typ, val);
        if (exc == NULL) {
            return NULL;
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must derive from BaseException");
        return NULL;
    }
    PyObject *value;
    PySendResult r = cell_advance((SpCell *)self, Py_None, exc, &value);
    Py_DECREF(exc);
    return sp_send_result_to_python(r, value);
}

static PyObject *
cell_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    SpCell *c = (SpCell *)self;
    PyObject *it = c->coro != NULL ? c->coro : c->waiter; /* borrowed */
    c->state = CELL_FINISHED;
    PyObject *res = it != NULL ? PyObject_CallMethod(it, "close", NULL)
                               : Py_NewRef(Py_None);
    Py_CLEAR(c->coro);
    Py_CLEAR(c->waiter);
    return res == NULL ? NULL : (Py_DECREF(res), Py_NewRef(Py_None));
}

static PyObject *
cell_am_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyMethodDef cell_methods[] = {
    {"send", cell_send, METH_O, "Resume the cell with a value."},
    {"throw", (PyCFunction)(void (*)(void))cell_throw, METH_FASTCALL,
     "Raise an exception where the cell is suspended."},
    {"close", cell_close, METH_NOARGS, "Stop the cell."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot cell_slots[] = {
    {Py_tp_doc, "One cell run: await it to run the cell and get its value."},
    {Py_tp_traverse, cell_tp_traverse},
    {Py_tp_clear, cell_tp_clear},
    {Py_tp_dealloc, sp_gc_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, cell_tp_iternext},
    {Py_tp_methods, cell_methods},
    {Py_am_await, cell_am_await},
    {Py_am_send, cell_am_send},
    {0, NULL},
};

static PyType_Spec cell_spec = {
    .name = "safepyrun._engine.Cell",
    .basicsize = sizeof(SpCell),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = cell_slots,
};

static PyMethodDef runner_methods[] = {
    {"run", runner_run, METH_O,
     "run(code) -> Cell\n\nCheck and compile a cell; await the result to run "
     "it and get the value of its last expression."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot runner_slots[] = {
    {Py_tp_doc, "Runner(g, ok_dests, banned=None, ban_defs=False, yolo=False, "
                "data=None)\n\nThe engine behind RunPython: a host namespace "
                "and the policy its cells run under."},
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

static PyMethodDef runner_functions[] = {
    {"srcfn", runner_py_srcfn, METH_O,
     "srcfn(src) -> str\n\nStore src in linecache under <pyrun_N> (N cycling "
     "0..9) and return that name."},
    {"should_export", (PyCFunction)(void (*)(void))runner_py_should_export,
     METH_FASTCALL,
     "should_export(k, v, g) -> bool\n\nWhether cell name k with value v is "
     "exported to the host namespace g."},
    {NULL, NULL, 0, NULL},
};

/* Capture the process-wide references on the first import. */
static int
runner_global_init(PyObject *module)
{
    PyObject *builtins = NULL, *ast = NULL, *store_cls = NULL;
    int rc = -1;
    runner_global.runner_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &runner_spec, NULL);
    runner_global.cell_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &cell_spec, NULL);
    if (runner_global.runner_type == NULL || runner_global.cell_type == NULL) {
        goto done;
    }
    builtins = PyImport_ImportModule("builtins");
    ast = PyImport_ImportModule("_ast");
    if (builtins == NULL || ast == NULL) {
        goto done;
    }
    runner_global.compile = PyObject_GetAttrString(builtins, "compile");
    runner_global.ast_expr = PyObject_GetAttrString(ast, "Expr");
    runner_global.ast_assign = PyObject_GetAttrString(ast, "Assign");
    runner_global.ast_name = PyObject_GetAttrString(ast, "Name");
    store_cls = PyObject_GetAttrString(ast, "Store");
    if (store_cls != NULL) {
        runner_global.ast_store = PyObject_CallNoArgs(store_cls);
    }
    runner_global.result_name = PyUnicode_InternFromString(RUNNER_RESULT);
    runner_global.builtins_name = PyUnicode_InternFromString("__builtins__");
    runner_global.default_banned = Py_BuildValue(
        "(ssss)", "socket", "importlib", "ctypes", "safepyrun");
    if (runner_global.compile == NULL || runner_global.ast_expr == NULL ||
        runner_global.ast_assign == NULL || runner_global.ast_name == NULL ||
        runner_global.ast_store == NULL || runner_global.result_name == NULL ||
        runner_global.builtins_name == NULL ||
        runner_global.default_banned == NULL) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(builtins);
    Py_XDECREF(ast);
    Py_XDECREF(store_cls);
    return rc;
}

int
sp_runner_init(PyObject *module)
{
    if (runner_global.runner_type == NULL && runner_global_init(module) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Runner",
                              (PyObject *)runner_global.runner_type) < 0 ||
        PyModule_AddObjectRef(module, "Cell",
                              (PyObject *)runner_global.cell_type) < 0 ||
        PyModule_AddObjectRef(module, "DEFAULT_BAN_IMPORTS",
                              runner_global.default_banned) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, runner_functions);
}
