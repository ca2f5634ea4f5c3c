/* engine.c - the safepyrun._engine module: wires the parts together.
 *
 * Each part (rules, context, registry, trust, hook, runner, policy, shell)
 * has its own file and an sp_<area>_init called from the one exec function below, in dependency
 * order.  The audit hook is process-wide and cannot be removed, so the
 * state it reads is process-wide too and outlives any one module object;
 * this module therefore declares that it does not support several
 * interpreters.
 *
 * The functions defined here are thin argument-parsing wrappers that expose
 * the path and syntax-tree checks to the Python shell and to the tests.
 */
#include "cell.h"
#include "check.h"
#include "compile.h"
#include "context.h"
#include "export.h"
#include "gate.h"
#include "guards.h"
#include "hook.h"
#include "libcache.h"
#include "monitor.h"
#include "output.h"
#include "paths.h"
#include "policy.h"
#include "registry.h"
#include "report.h"
#include "rules.h"
#include "runner.h"
#include "shell.h"
#include "state.h"
#include "threads.h"
#include "trust.h"
#include "watchdog.h"

#include <string.h>

PyDoc_STRVAR(normalise_dests_doc,
"normalise_dests(ok_dests) -> tuple[str, ...] | None\n\n"
"Validate ok_dests (None, or a list of str/bytes/PathLike) and return the\n"
"normalised tuple the engine checks writes against.");

static PyObject *
engine_normalise_dests(PyObject *module, PyObject *ok_dests)
{
    (void)module;
    return sp_paths_normalise_dests(ok_dests);
}

PyDoc_STRVAR(resolve_doc,
"resolve(path, dir_fd=-1, follow=True) -> str\n\n"
"The absolute, symlink-resolved directory entry a write to path affects.");

static PyObject *
engine_resolve(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "dir_fd", "follow", NULL};
    PyObject *path;
    int dir_fd = -1, follow = 1;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|ip:resolve", kwlist,
                                     &path, &dir_fd, &follow)) {
        return NULL;
    }
    return sp_paths_resolve(path, dir_fd, follow);
}

PyDoc_STRVAR(check_write_doc,
"check_write(path, ok_dests, dir_fd=-1, follow=True, self_ok=False) -> bool\n\n"
"Whether a write to path is allowed by ok_dests, by the same C check the\n"
"audit hook uses.  ok_dests=None allows everything.");

static PyObject *
engine_check_write(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "ok_dests", "dir_fd", "follow",
                             "self_ok", NULL};
    PyObject *path, *ok_dests;
    int dir_fd = -1, follow = 1, self_ok = 0;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|ipp:check_write",
                                     kwlist, &path, &ok_dests, &dir_fd,
                                     &follow, &self_ok)) {
        return NULL;
    }
    PyObject *dests = sp_paths_normalise_dests(ok_dests);
    if (dests == NULL) {
        return NULL;
    }
    if (dests == Py_None) {
        Py_DECREF(dests);
        Py_RETURN_TRUE;
    }
    int flags = (follow ? SP_PATH_FOLLOW : 0) | (self_ok ? SP_PATH_SELF : 0);
    int ok = sp_paths_check_write(path, dir_fd, flags, dests, NULL);
    Py_DECREF(dests);
    if (ok < 0) {
        return NULL;
    }
    return PyBool_FromLong(ok);
}

PyDoc_STRVAR(check_source_doc,
"check_source(source, banned=('socket', 'importlib', 'ctypes', 'safepyrun'),\n"
"             ban_defs=False, filename='<cell>') -> None\n\n"
"Parse source and apply the pre-run syntax-tree rules; raises\n"
"PermissionError on a banned import, exec/eval/compile call, or (with\n"
"ban_defs) a def or class.");

static PyObject *
engine_check_source(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"source", "banned", "ban_defs", "filename", NULL};
    PyObject *source, *banned = NULL, *filename = NULL;
    int ban_defs = 0;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|O!pU:check_source",
                                     kwlist, &source, &PyTuple_Type, &banned,
                                     &ban_defs, &filename)) {
        return NULL;
    }
    PyObject *owned_banned = NULL, *owned_filename = NULL, *tree = NULL;
    PyObject *result = NULL;
    if (banned == NULL) {
        banned = owned_banned = Py_BuildValue(
            "(ssss)", "socket", "importlib", "ctypes", "safepyrun");
        if (banned == NULL) {
            goto done;
        }
    }
    if (filename == NULL) {
        filename = owned_filename = PyUnicode_FromString("<cell>");
        if (filename == NULL) {
            goto done;
        }
    }
    Py_ssize_t size;
    const char *src = PyUnicode_AsUTF8AndSize(source, &size);
    const char *fname = src == NULL ? NULL : PyUnicode_AsUTF8(filename);
    if (src == NULL || fname == NULL) {
        goto done;
    }
    if ((Py_ssize_t)strlen(src) != size) {
        /* The C compiler would stop at the NUL and check only a prefix. */
        PyErr_SetString(PyExc_ValueError,
                        "source code string cannot contain null bytes");
        goto done;
    }
    tree = Py_CompileStringExFlags(
        src, fname, Py_file_input,
        &(PyCompilerFlags){PyCF_ONLY_AST | PyCF_ALLOW_TOP_LEVEL_AWAIT,
                           PY_MINOR_VERSION},
        -1);
    if (tree == NULL) {
        goto done;
    }
    if (sp_check_tree(tree, banned, ban_defs, filename) < 0) {
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(tree);
    Py_XDECREF(owned_banned);
    Py_XDECREF(owned_filename);
    return result;
}

PyDoc_STRVAR(chk_dest_doc,
"chk_dest(path, ok_dests) -> None\n\n"
"Raise PermissionError unless path lies inside one of ok_dests (a list of\n"
"paths, or a policy's data mapping holding 'ok_dests': a dict or a\n"
"read-only view).  ok_dests=None allows everything.  The same C resolution\n"
"as the audit hook: '~', '..' and symlinks resolved; a destination itself\n"
"counts as inside.");

static PyObject *
engine_chk_dest(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "chk_dest() takes 2 arguments (path, ok_dests), %zd given",
                     nargs);
        return NULL;
    }
    if (sp_policy_chk_dest(args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The engine's state: every part's, in one struct (state.h). */
SpState sp_state;

PyDoc_STRVAR(audit_rule_doc,
"audit_rule(event) -> str | None\n\n"
"How the engine classifies an audit event inside a run: 'allow', 'deny',\n"
"'write', 'open', 'env', 'setattr', 'dlopen', 'thread', 'code', 'sqlite',\n"
"'sqlite-handle', or None for an event it does not know (refused).");

static PyObject *
engine_audit_rule(PyObject *module, PyObject *event)
{
    static const char *const kinds[] = {"allow", "deny", "write", "open", "env",
                                        "setattr", "dlopen", "thread", "code",
                                        "sqlite", "sqlite-handle"};
    (void)module;
    const char *name = PyUnicode_Check(event) ? PyUnicode_AsUTF8(event) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "audit_rule() needs a str, not %.200s",
                         SP_TYPE_NAME(event));
        }
        return NULL;
    }
    const sp_rule *rule = sp_rules_lookup(name);
    if (rule == NULL) {
        Py_RETURN_NONE;
    }
    if (rule->kind >= sizeof(kinds) / sizeof(kinds[0])) {
        PyErr_SetString(PyExc_SystemError, "audit_rule(): unnamed rule kind");
        return NULL;
    }
    return PyUnicode_FromString(kinds[rule->kind]);
}

PyDoc_STRVAR(memory_hooks_installed_doc,
"memory_hooks_installed() -> bool\n\n"
"Whether the memory cap's allocator hooks are installed (they are once a\n"
"runner or a call was given max_memory, and stay installed).");

static PyObject *
engine_memory_hooks_installed(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(sp_state.memcap.installed);
}

static PyMethodDef engine_methods[] = {
    {"memory_hooks_installed", engine_memory_hooks_installed, METH_NOARGS,
     memory_hooks_installed_doc},
    {"audit_rule", engine_audit_rule, METH_O, audit_rule_doc},
    {"chk_dest", (PyCFunction)(void (*)(void))engine_chk_dest, METH_FASTCALL,
     chk_dest_doc},
    {"normalise_dests", engine_normalise_dests, METH_O, normalise_dests_doc},
    {"resolve", (PyCFunction)(void (*)(void))engine_resolve,
     METH_VARARGS | METH_KEYWORDS, resolve_doc},
    {"check_write", (PyCFunction)(void (*)(void))engine_check_write,
     METH_VARARGS | METH_KEYWORDS, check_write_doc},
    {"check_source", (PyCFunction)(void (*)(void))engine_check_source,
     METH_VARARGS | METH_KEYWORDS, check_source_doc},
    {NULL, NULL, 0, NULL},
};

static int
engine_exec(PyObject *module)
{
    if (sp_rules_init() < 0 || sp_context_init(module) < 0 ||
        sp_gate_init(module) < 0 || sp_libcache_init(module) < 0 ||
        sp_registry_init(module) < 0 || sp_trust_init(module) < 0 ||
        sp_monitor_init(module) < 0 || sp_hook_init(module) < 0 ||
        sp_threads_init(module) < 0 ||
        sp_guards_init(module) < 0 ||
        sp_compile_init(module) < 0 || sp_export_init(module) < 0 ||
        sp_report_init(module) < 0 || sp_output_init(module) < 0 ||
        sp_cell_init(module) < 0 || sp_runner_init(module) < 0 ||
        sp_policy_init(module) < 0 || sp_watchdog_init(module) < 0 ||
        sp_shell_init(module) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot engine_slots[] = {
    {Py_mod_exec, engine_exec},
#if SP_HAVE_MOD_MULTIPLE_INTERPRETERS
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(engine_doc,
"The safepyrun enforcement engine: audit hook, rules, path checks and the\n"
"cell runner.  Use the safepyrun package, not this module directly.");

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safepyrun._engine",
    .m_doc = engine_doc,
    .m_size = 0,
    .m_methods = engine_methods,
    .m_slots = engine_slots,
};

PyMODINIT_FUNC
PyInit__engine(void)
{
    return PyModuleDef_Init(&engine_module);
}
