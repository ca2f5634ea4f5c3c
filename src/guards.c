/* guards.c - guards on standard-library natives that raise no audit event.
 *
 * Design.  Guards translate effects into audit events; the hook decides.
 * A guard is a C function that replaces a module attribute (posix.mkfifo,
 * _posixsubprocess.fork_exec, ...).  It raises an audit event carrying the
 * effect's real arguments (CPython's own name where one exists, otherwise a
 * CPython-style one such as "os.mkfifo"; rules.c judges each) and, when the
 * hook lets it through, calls the real function.  The hook does the gate,
 * the trusted-call search and the refusal message, so a trusted tool can
 * still do these things, and outside a run the cost is one PySys_Audit whose
 * rule look-up is a hash.  The real functions live only in `guards` below,
 * never in a place Python can reach: they are untracked by the garbage
 * collector too, so gc.get_objects() does not hand them out.
 *
 * Aliases.  `os.open` is `posix.open`, `signal.signal` wraps `_signal.signal`
 * and subprocess binds `from _posixsubprocess import fork_exec`.  After
 * replacing the attributes of a module, every module in sys.modules is swept
 * once for values that are the same C function (same PyMethodDef function
 * pointer, whichever module object it came from) and those are replaced too.
 *
 * When.  sp_guards_init (module exec) guards the modules that are cheap to
 * import or always loaded (posix, _posixsubprocess, _signal, atexit, _imp,
 * sys.monitoring) and any other guarded module already imported.
 * Extension modules imported later (readline, _tkinter, _posixshmem) are
 * guarded as they are created: _imp.create_dynamic/exec_dynamic (and the
 * builtin twins) are guarded themselves and patch a guarded module's fresh
 * object before anyone sees it.  The pure-Python registration points
 * (weakref.finalize, asyncio's Handle, concurrent.futures' _WorkItem) are
 * guarded by sp_guards_before_run, which the runner calls before each cell:
 * the runner imports asyncio, and with it weakref and concurrent.futures,
 * before the first cell, so they are loaded and guarded before any cell
 * runs; once all three are guarded it returns at once.
 *
 * Fresh copies.  `del sys.modules['posix']; import posix` (or
 * _imp.create_builtin(spec)) builds a new module object with the real
 * functions.  Inside a run, re-creating a module that was guarded raises the
 * "_imp.create_builtin" / "_imp.create_dynamic" event (refused unless
 * trusted); in any case, the new object is patched right after creation and
 * again after execution, so a fresh copy is a guarded copy.  reload() of an
 * extension module re-runs only its exec slots, and is patched afterwards.
 *
 * Deferred callables.  atexit.register, weakref.finalize, signal.signal,
 * asyncio Handles (call_soon, call_later, call_at, call_soon_threadsafe)
 * and concurrent.futures' _WorkItem take a callable that runs later, maybe
 * with no cell frame on the stack and in a context without the run.  While
 * a run governs the registration (sp_gate_run) and no trusted call is
 * active, the callable is wrapped in an SpBoundCall (boundcall.c) that
 * enters the run's context around the call, so that the hook judges what it
 * does under the run's policy.  A Handle's callback is wrapped only when it is headed for
 * a context without the run (an explicit contextvars.Context()): with the
 * default context it inherits the run anyway.  asyncio's own plumbing (a
 * task's step or wakeup, a future's method, recognised by exact C type) is
 * never wrapped: a cell that completes a host future must not gate the host
 * task it wakes.  Host event loops create handles constantly, so outside a
 * run the Handle guard looks at the run context variable and at most
 * GUARDS_HANDLE_FRAMES frames for cell code (about 0.3 us per handle in
 * all); a cell that schedules through a deeper chain of Python helpers is
 * not seen there (its callback runs in the context it gave).
 *
 * Not closed (the tests mark them xfail): a Handle's slots (_callback,
 * _context) rewritten after creation; a guarded class's __init__ replaced
 * by a cell (plain class attribute assignment raises no audit event); a
 * duck-typed object with a native run() put into an executor's _work_queue
 * (the worker loop calls it and no guard sees that).
 *
 * sys.monitoring.  Its functions raise no event: inside a run any call to
 * the guarded ones is the event "sys.monitoring.<name>" (denied unless
 * trusted); in any context a call naming the engine's own tool (the one
 * named "safepyrun") is refused outright.  The engine's monitor uses the
 * real functions through sp_guards_monitoring.
 *
 * Environment.  os.environ._data (the same dict as posix.environ) changes
 * what child processes and shutil.which see without os.putenv: posix's
 * environ is put behind an SpEnviron (environ.c) whenever posix is guarded,
 * which raises "os.putenv" / "os.unsetenv" for every change.
 *
 * Threading: GIL held throughout; the state below is process-wide, written
 * by sp_guards_init and the install paths (all under the GIL), like the
 * audit hook that judges the events.
 */
#include "guards.h"

#include "boundcall.h"
#include "environ.h"
#include "foreign.h"
#include "gate.h"
#include "memcap.h"
#include "state.h"
#include "trust.h"

#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the guard table ------------------------------------------------ */

enum {
    G_OPEN,
    G_MKFIFO,
    G_MKNOD,
    G_MEMFD_CREATE,
    G_FORK_EXEC,
    G_PIDFD_SEND_SIGNAL,
    G_SIGNAL,
    G_ATEXIT_REGISTER,
    G_SHM_OPEN,
    G_SHM_UNLINK,
    G_WRITE_HISTORY,
    G_APPEND_HISTORY,
    G_TK_CREATE,
    G_CREATE_BUILTIN,
    G_EXEC_BUILTIN,
    G_CREATE_DYNAMIC,
    G_EXEC_DYNAMIC,
    G_MON_USE_TOOL_ID,
    G_MON_FREE_TOOL_ID,
    G_MON_CLEAR_TOOL_ID,
    G_MON_SET_EVENTS,
    G_MON_SET_LOCAL_EVENTS,
    G_MON_RESTART_EVENTS,
    G_MON_REGISTER_CALLBACK,
    G_FINALIZE_INIT,
    G_HANDLE_INIT,
    G_WORKITEM_INIT,
    G_EXIT,
    G_ABORT,
    G_UMASK,
    G_SETUID,
    G_SETGID,
    G_SETEUID,
    G_SETEGID,
    G_SETREUID,
    G_SETREGID,
    G_SETRESUID,
    G_SETRESGID,
    G_SETGROUPS,
    G_INITGROUPS,
    G_SETSID,
    G_SETPGID,
    G_SETPGRP,
    G_RAISE_SIGNAL,
    G_ALARM,
    G_SETITIMER,
    G_FH_SIGSEGV,
    G_FH_SIGABRT,
    G_FH_SIGFPE,
    G_FH_FATAL,
    G_FH_FATAL_THREAD,
    G_FH_STACK,
    G_FH_READ_NULL,
    G_SETRECURSIONLIMIT,
    G_TRACEMALLOC_STOP,
    G_SETSWITCHINTERVAL,
    G_COUNT
};

/* Where each guard goes: module `module` (a sys.modules name; for a class
 * guard, the module that defines `cls`), attribute `name` of the module or
 * of class `cls`. */
typedef struct {
    const char *module;
    const char *cls;  /* NULL: a module attribute */
    const char *name;
} guards_place;

static const guards_place guards_places[G_COUNT] = {
    [G_OPEN] = {"posix", NULL, "open"},
    [G_MKFIFO] = {"posix", NULL, "mkfifo"},
    [G_MKNOD] = {"posix", NULL, "mknod"},
    [G_MEMFD_CREATE] = {"posix", NULL, "memfd_create"},
    [G_FORK_EXEC] = {"_posixsubprocess", NULL, "fork_exec"},
    [G_PIDFD_SEND_SIGNAL] = {"_signal", NULL, "pidfd_send_signal"},
    [G_SIGNAL] = {"_signal", NULL, "signal"},
    [G_ATEXIT_REGISTER] = {"atexit", NULL, "register"},
    [G_SHM_OPEN] = {"_posixshmem", NULL, "shm_open"},
    [G_SHM_UNLINK] = {"_posixshmem", NULL, "shm_unlink"},
    [G_WRITE_HISTORY] = {"readline", NULL, "write_history_file"},
    [G_APPEND_HISTORY] = {"readline", NULL, "append_history_file"},
    [G_TK_CREATE] = {"_tkinter", NULL, "create"},
    [G_CREATE_BUILTIN] = {"_imp", NULL, "create_builtin"},
    [G_EXEC_BUILTIN] = {"_imp", NULL, "exec_builtin"},
    [G_CREATE_DYNAMIC] = {"_imp", NULL, "create_dynamic"},
    [G_EXEC_DYNAMIC] = {"_imp", NULL, "exec_dynamic"},
    [G_MON_USE_TOOL_ID] = {"sys.monitoring", NULL, "use_tool_id"},
    [G_MON_FREE_TOOL_ID] = {"sys.monitoring", NULL, "free_tool_id"},
    [G_MON_CLEAR_TOOL_ID] = {"sys.monitoring", NULL, "clear_tool_id"},
    [G_MON_SET_EVENTS] = {"sys.monitoring", NULL, "set_events"},
    [G_MON_SET_LOCAL_EVENTS] = {"sys.monitoring", NULL, "set_local_events"},
    [G_MON_RESTART_EVENTS] = {"sys.monitoring", NULL, "restart_events"},
    [G_MON_REGISTER_CALLBACK] = {"sys.monitoring", NULL, "register_callback"},
    [G_FINALIZE_INIT] = {"weakref", "finalize", "__init__"},
    [G_HANDLE_INIT] = {"asyncio.events", "Handle", "__init__"},
    [G_WORKITEM_INIT] = {"concurrent.futures.thread", "_WorkItem", "__init__"},
    [G_EXIT] = {"posix", NULL, "_exit"},
    [G_ABORT] = {"posix", NULL, "abort"},
    [G_UMASK] = {"posix", NULL, "umask"},
    [G_SETUID] = {"posix", NULL, "setuid"},
    [G_SETGID] = {"posix", NULL, "setgid"},
    [G_SETEUID] = {"posix", NULL, "seteuid"},
    [G_SETEGID] = {"posix", NULL, "setegid"},
    [G_SETREUID] = {"posix", NULL, "setreuid"},
    [G_SETREGID] = {"posix", NULL, "setregid"},
    [G_SETRESUID] = {"posix", NULL, "setresuid"},
    [G_SETRESGID] = {"posix", NULL, "setresgid"},
    [G_SETGROUPS] = {"posix", NULL, "setgroups"},
    [G_INITGROUPS] = {"posix", NULL, "initgroups"},
    [G_SETSID] = {"posix", NULL, "setsid"},
    [G_SETPGID] = {"posix", NULL, "setpgid"},
    [G_SETPGRP] = {"posix", NULL, "setpgrp"},
    [G_RAISE_SIGNAL] = {"_signal", NULL, "raise_signal"},
    [G_ALARM] = {"_signal", NULL, "alarm"},
    [G_SETITIMER] = {"_signal", NULL, "setitimer"},
    [G_FH_SIGSEGV] = {"faulthandler", NULL, "_sigsegv"},
    [G_FH_SIGABRT] = {"faulthandler", NULL, "_sigabrt"},
    [G_FH_SIGFPE] = {"faulthandler", NULL, "_sigfpe"},
    [G_FH_FATAL] = {"faulthandler", NULL, "_fatal_error"},
    [G_FH_FATAL_THREAD] = {"faulthandler", NULL, "_fatal_error_c_thread"},
    [G_FH_STACK] = {"faulthandler", NULL, "_stack_overflow"},
    [G_FH_READ_NULL] = {"faulthandler", NULL, "_read_null"},
    [G_SETRECURSIONLIMIT] = {"sys", NULL, "setrecursionlimit"},
    [G_TRACEMALLOC_STOP] = {"_tracemalloc", NULL, "stop"},
    [G_SETSWITCHINTERVAL] = {"sys", NULL, "setswitchinterval"},
};

/* The modules guarded, with whether sp_guards_init imports them (cheap or
 * always loaded) or only guards them once something else imported them. */
static const struct {
    const char *name;
    int eager;  /* imported by sp_guards_init */
    int python; /* a pure-Python module: guarded by sp_guards_before_run
                   (extension modules are guarded as they are created) */
} guards_modules[] = {
    {"posix", 1, 0},          {"_posixsubprocess", 1, 0},
    {"_signal", 1, 0},        {"atexit", 1, 0},
    {"_imp", 1, 0},           {"weakref", 0, 1},
    {"_posixshmem", 0, 0},    {"readline", 0, 0},
    {"_tkinter", 0, 0},       {"asyncio.events", 0, 1},
    {"concurrent.futures.thread", 0, 1},
    {"faulthandler", 1, 0},   {"sys", 1, 0},
    {"_tracemalloc", 0, 0},
};
#define GUARDS_NMODULES (sizeof(guards_modules) / sizeof(guards_modules[0]))

_Static_assert(G_COUNT <= SP_GUARDS_MAX, "state.h: SP_GUARDS_MAX");
_Static_assert(GUARDS_NMODULES <= SP_GUARDS_MAX_MODULES,
               "state.h: SP_GUARDS_MAX_MODULES");

/* This file's part of the engine state (state.h): written under the GIL by
 * the install paths; never released (the guards stay installed for the
 * life of the process). */
static struct sp_guards_state *const guards = &sp_state.guards;

static int guards_patch_module(PyObject *mod, size_t m);

/* ---- argument helpers ------------------------------------------------ */

/* Index in a vectorcall vector of the argument at position `pos` (or -1:
 * keyword-only) or named `kw` (or NULL: positional-only), or -1 when the
 * caller did not pass it. */
static Py_ssize_t
guards_slot(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            int pos, const char *kw)
{
    (void)args;
    if (pos >= 0 && pos < nargs) {
        return pos;
    }
    if (kw != NULL && kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (PyUnicode_Check(name) &&
                PyUnicode_CompareWithASCIIString(name, kw) == 0) {
                return nargs + i;
            }
        }
    }
    return -1;
}

/* The argument at `slot`, or None when absent.  Borrowed. */
static inline PyObject *
guards_arg(PyObject *const *args, Py_ssize_t slot)
{
    return slot >= 0 ? args[slot] : Py_None;
}

/* A path argument as the real function will see it: os.PathLike is
 * converted once here, so that the hook judges exactly the str or bytes the
 * real function receives (an __fspath__ that answers differently on each
 * call cannot pass one path to the check and another to the effect).
 * Anything else is returned as it is.  New reference or NULL. */
static PyObject *
guards_fspath(PyObject *obj)
{
    if (PyUnicode_Check(obj) || PyBytes_Check(obj) || PyLong_Check(obj) ||
        obj == Py_None) {
        return Py_NewRef(obj);
    }
    PyObject *path = PyOS_FSPath(obj);
    if (path == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear(); /* not a path: the real function will say so */
        return Py_NewRef(obj);
    }
    return path;
}

/* Call real function `g` with the caller's arguments, argument `slot`
 * replaced by `value` (borrowed) when slot >= 0.  New reference or NULL. */
static PyObject *
guards_call(int g, PyObject *const *args, size_t nargsf, PyObject *kwnames,
            Py_ssize_t slot, PyObject *value)
{
    PyObject *real = guards->real[g];
    if (slot < 0 || args[slot] == value) {
        return PyObject_Vectorcall(real, args, nargsf, kwnames);
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    /* One spare slot in front: PY_VECTORCALL_ARGUMENTS_OFFSET. */
    PyObject **stack = PyMem_New(PyObject *, total + 1);
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(stack + 1, args, (size_t)total * sizeof(PyObject *));
    stack[1 + slot] = value;
    PyObject *res = PyObject_Vectorcall(
        real, stack + 1, (size_t)nargs | PY_VECTORCALL_ARGUMENTS_OFFSET,
        kwnames);
    PyMem_Free(stack);
    return res;
}

/* Whether a callable registered now must be bound: a run governs the code
 * running now and no trusted call is active (a trusted tool's own
 * registrations are the host's business).  1 with *run a new reference, 0
 * no, -1 error. */
static int
guards_must_bind(SpRun **run)
{
    int active = sp_gate_run(run);
    if (active <= 0) {
        return active;
    }
    PyObject *refusals = NULL;
    int trusted = sp_trust_search(*run, &refusals);
    Py_XDECREF(refusals);
    if (trusted != 0) {
        Py_CLEAR(*run);
        return trusted < 0 ? -1 : 0;
    }
    return 1;
}

/* A registration point: the callable at position `pos` (or keyword `kw`)
 * is bound to the governing run, if any, before the real function `g`
 * sees it.  New reference or NULL. */
static PyObject *
guards_register(int g, PyObject *const *args, size_t nargsf,
                PyObject *kwnames, int pos, const char *kw)
{
    SpRun *run = NULL;                      /* owned */
    PyObject *bound = NULL, *res = NULL;    /* owned */
    Py_ssize_t slot = guards_slot(args, PyVectorcall_NARGS(nargsf), kwnames,
                                  pos, kw);
    if (slot < 0 || !PyCallable_Check(args[slot])) {
        return guards_call(g, args, nargsf, kwnames, -1, NULL);
    }
    int bind = guards_must_bind(&run);
    if (bind <= 0) {
        return bind < 0 ? NULL
                        : guards_call(g, args, nargsf, kwnames, -1, NULL);
    }
    bound = sp_boundcall_new(run, args[slot]);
    if (bound != NULL) {
        res = guards_call(g, args, nargsf, kwnames, slot, bound);
    }
    Py_DECREF(run);
    Py_XDECREF(bound);
    return res;
}

/* ---- file-system guards ----------------------------------------------- */

/* posix.open(path, flags, mode=0o777, *, dir_fd=None).  CPython's "open"
 * event has no dir_fd, so a relative name is checked against the working
 * directory; with a dir_fd, "os.open" (path, None, flags, dir_fd) is raised
 * too, shaped as "open" plus the descriptor, and judged against it. */
static PyObject *
guards_open(PyObject *unused, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t fd_slot = guards_slot(args, nargs, kwnames, -1, "dir_fd");
    if (fd_slot < 0 || args[fd_slot] == Py_None) {
        return guards_call(G_OPEN, args, nargsf, kwnames, -1, NULL);
    }
    Py_ssize_t p_slot = guards_slot(args, nargs, kwnames, 0, "path");
    Py_ssize_t f_slot = guards_slot(args, nargs, kwnames, 1, "flags");
    PyObject *path = guards_fspath(guards_arg(args, p_slot));
    if (path == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    if (PySys_Audit("os.open", "OOOO", path, Py_None, guards_arg(args, f_slot),
                    args[fd_slot]) == 0) {
        res = guards_call(G_OPEN, args, nargsf, kwnames, p_slot, path);
    }
    Py_DECREF(path);
    return res;
}

/* posix.mkfifo(path, mode=0o666, *, dir_fd=None): "os.mkfifo"
 * (path, mode, dir_fd). */
static PyObject *
guards_mkfifo(PyObject *unused, PyObject *const *args, size_t nargsf,
              PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t p_slot = guards_slot(args, nargs, kwnames, 0, "path");
    PyObject *path = guards_fspath(guards_arg(args, p_slot));
    if (path == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    PyObject *mode = guards_arg(args, guards_slot(args, nargs, kwnames, 1, "mode"));
    PyObject *dir_fd = guards_arg(args, guards_slot(args, nargs, kwnames, -1, "dir_fd"));
    if (PySys_Audit("os.mkfifo", "OOO", path, mode, dir_fd) == 0) {
        res = guards_call(G_MKFIFO, args, nargsf, kwnames, p_slot, path);
    }
    Py_DECREF(path);
    return res;
}

/* posix.mknod(path, mode=0o600, device=0, *, dir_fd=None): "os.mknod"
 * (path, mode, device, dir_fd). */
static PyObject *
guards_mknod(PyObject *unused, PyObject *const *args, size_t nargsf,
             PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t p_slot = guards_slot(args, nargs, kwnames, 0, "path");
    PyObject *path = guards_fspath(guards_arg(args, p_slot));
    if (path == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    PyObject *mode = guards_arg(args, guards_slot(args, nargs, kwnames, 1, "mode"));
    PyObject *dev = guards_arg(args, guards_slot(args, nargs, kwnames, 2, "device"));
    PyObject *dir_fd = guards_arg(args, guards_slot(args, nargs, kwnames, -1, "dir_fd"));
    if (PySys_Audit("os.mknod", "OOOO", path, mode, dev, dir_fd) == 0) {
        res = guards_call(G_MKNOD, args, nargsf, kwnames, p_slot, path);
    }
    Py_DECREF(path);
    return res;
}

/* posix.memfd_create(name, flags=MFD_CLOEXEC): "os.memfd_create" (name). */
static PyObject *
guards_memfd_create(PyObject *unused, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *name = guards_arg(args, guards_slot(args, nargs, kwnames, 0, "name"));
    if (PySys_Audit("os.memfd_create", "(O)", name) < 0) {
        return NULL;
    }
    return guards_call(G_MEMFD_CREATE, args, nargsf, kwnames, -1, NULL);
}

/* The file a POSIX shared-memory name lives in: "/dev/shm/<name>" for
 * "/<name>" (Linux).  New reference; anything but a str gives None (the
 * real function refuses it). */
static PyObject *
guards_shm_path(PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        return Py_NewRef(Py_None);
    }
    Py_ssize_t start = 0, n = PyUnicode_GET_LENGTH(name);
    while (start < n && PyUnicode_READ_CHAR(name, start) == '/') {
        start++;
    }
    PyObject *tail = PyUnicode_Substring(name, start, n);
    if (tail == NULL) {
        return NULL;
    }
    PyObject *path = PyUnicode_FromFormat("/dev/shm/%U", tail);
    Py_DECREF(tail);
    return path;
}

/* _posixshmem.shm_open(path, flags, mode=0o777): "_posixshmem.shm_open"
 * (file, None, flags, name), shaped as "open": a write when the flags
 * write, checked against ok_dests at the file in /dev/shm. */
static PyObject *
guards_shm_open(PyObject *unused, PyObject *const *args, size_t nargsf,
                PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *name = guards_arg(args, guards_slot(args, nargs, kwnames, 0, "path"));
    PyObject *flags = guards_arg(args, guards_slot(args, nargs, kwnames, 1, "flags"));
    PyObject *file = guards_shm_path(name);
    if (file == NULL) {
        return NULL;
    }
    int rc = PySys_Audit("_posixshmem.shm_open", "OOOO", file, Py_None, flags,
                         name);
    Py_DECREF(file);
    return rc < 0 ? NULL
                  : guards_call(G_SHM_OPEN, args, nargsf, kwnames, -1, NULL);
}

/* _posixshmem.shm_unlink(path): "_posixshmem.shm_unlink" (file, name). */
static PyObject *
guards_shm_unlink(PyObject *unused, PyObject *const *args, size_t nargsf,
                  PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *name = guards_arg(args, guards_slot(args, nargs, kwnames, 0, "path"));
    PyObject *file = guards_shm_path(name);
    if (file == NULL) {
        return NULL;
    }
    int rc = PySys_Audit("_posixshmem.shm_unlink", "OO", file, name);
    Py_DECREF(file);
    return rc < 0 ? NULL
                  : guards_call(G_SHM_UNLINK, args, nargsf, kwnames, -1, NULL);
}

/* readline's default history file: ~/.history, as GNU readline finds
 * home ($HOME, else the password database).  New reference or NULL. */
static PyObject *
guards_default_history(void)
{
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0') {
        struct passwd *pw = getpwuid(getuid());
        home = pw != NULL && pw->pw_dir != NULL ? pw->pw_dir : ".";
    }
    PyObject *dir = PyUnicode_DecodeFSDefault(home);
    if (dir == NULL) {
        return NULL;
    }
    PyObject *path = PyUnicode_FromFormat("%U/.history", dir);
    Py_DECREF(dir);
    return path;
}

/* readline.write_history_file(filename=None, /) and
 * append_history_file(nelements, filename=None, /): a write of the file,
 * "readline.write_history_file" / "readline.append_history_file" (path). */
static PyObject *
guards_history(int g, const char *event, int pos, PyObject *const *args,
               size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t slot = guards_slot(args, PyVectorcall_NARGS(nargsf), kwnames,
                                  pos, NULL);
    PyObject *given = guards_arg(args, slot);
    PyObject *path = given == Py_None ? guards_default_history()
                                      : guards_fspath(given);
    if (path == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    if (PySys_Audit(event, "(O)", path) == 0) {
        /* The real function gets the converted path, or its own default. */
        res = guards_call(g, args, nargsf, kwnames, given == Py_None ? -1 : slot,
                          path);
    }
    Py_DECREF(path);
    return res;
}

static PyObject *
guards_write_history(PyObject *unused, PyObject *const *args, size_t nargsf,
                     PyObject *kwnames)
{
    (void)unused;
    return guards_history(G_WRITE_HISTORY, "readline.write_history_file", 0,
                          args, nargsf, kwnames);
}

static PyObject *
guards_append_history(PyObject *unused, PyObject *const *args, size_t nargsf,
                      PyObject *kwnames)
{
    (void)unused;
    return guards_history(G_APPEND_HISTORY, "readline.append_history_file", 1,
                          args, nargsf, kwnames);
}

/* ---- processes -------------------------------------------------------- */

/* _posixsubprocess.fork_exec(args, executable_list, ...): subprocess and
 * multiprocessing (spawn, forkserver) start programs through it.
 * "_posixsubprocess.fork_exec" (args, executable_list). */
static PyObject *
guards_fork_exec(PyObject *unused, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *argv = guards_arg(args, guards_slot(args, nargs, kwnames, 0, NULL));
    PyObject *exe = guards_arg(args, guards_slot(args, nargs, kwnames, 1, NULL));
    if (PySys_Audit("_posixsubprocess.fork_exec", "OO", argv, exe) < 0) {
        return NULL;
    }
    return guards_call(G_FORK_EXEC, args, nargsf, kwnames, -1, NULL);
}

/* signal.pidfd_send_signal(pidfd, sig, siginfo=None, flags=0):
 * "signal.pidfd_send_signal" (pidfd, sig), as os.kill raises "os.kill". */
static PyObject *
guards_pidfd_send_signal(PyObject *unused, PyObject *const *args,
                         size_t nargsf, PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *fd = guards_arg(args, guards_slot(args, nargs, kwnames, 0, NULL));
    PyObject *sig = guards_arg(args, guards_slot(args, nargs, kwnames, 1, NULL));
    if (PySys_Audit("signal.pidfd_send_signal", "OO", fd, sig) < 0) {
        return NULL;
    }
    return guards_call(G_PIDFD_SEND_SIGNAL, args, nargsf, kwnames, -1, NULL);
}

/* _tkinter.create(...): a Tcl interpreter can run programs and write
 * files with no event.  "_tkinter.create" (screenName). */
static PyObject *
guards_tk_create(PyObject *unused, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    (void)unused;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *screen = guards_arg(args, guards_slot(args, nargs, kwnames, 0, NULL));
    if (PySys_Audit("_tkinter.create", "(O)", screen) < 0) {
        return NULL;
    }
    return guards_call(G_TK_CREATE, args, nargsf, kwnames, -1, NULL);
}

/* ---- deferred callables ------------------------------------------------ */

/* _signal.signal(signalnum, handler, /). */
static PyObject *
guards_signal(PyObject *unused, PyObject *const *args, size_t nargsf,
              PyObject *kwnames)
{
    (void)unused;
    return guards_register(G_SIGNAL, args, nargsf, kwnames, 1, NULL);
}

/* atexit.register(func, /, *args, **kwargs) -> func: returns the
 * caller's func, not the bound call (it is used as a decorator). */
static PyObject *
guards_atexit_register(PyObject *unused, PyObject *const *args,
                       size_t nargsf, PyObject *kwnames)
{
    (void)unused;
    PyObject *res = guards_register(G_ATEXIT_REGISTER, args, nargsf, kwnames,
                                    0, NULL);
    if (res != NULL && PyVectorcall_NARGS(nargsf) > 0) {
        Py_SETREF(res, Py_NewRef(args[0]));
    }
    return res;
}

/* weakref.finalize.__init__(self, obj, func, /, *args, **kwargs). */
static PyObject *
guards_finalize_init(PyObject *unused, PyObject *const *args, size_t nargsf,
                     PyObject *kwnames)
{
    (void)unused;
    return guards_register(G_FINALIZE_INIT, args, nargsf, kwnames, 2, NULL);
}

/* concurrent.futures.thread._WorkItem.__init__(self, future, fn, args,
 * kwargs): work put straight into an executor's _work_queue. */
static PyObject *
guards_workitem_init(PyObject *unused, PyObject *const *args, size_t nargsf,
                     PyObject *kwnames)
{
    (void)unused;
    return guards_register(G_WORKITEM_INIT, args, nargsf, kwnames, 2, "fn");
}

/* Whether a Handle's callback is asyncio's own: a task's step or wakeup,
 * or another method of a future.  Checked on exact C types only (a Python
 * class can be named like them or carry a __self__; it cannot be a
 * builtin method or a type without Py_TPFLAGS_BASETYPE). */
static int
guards_asyncio_internal(PyObject *cb)
{
    if (PyCFunction_CheckExact(cb)) {
        PyObject *self = PyCFunction_GET_SELF(cb);
        return self != NULL && guards->future_type != NULL &&
               PyObject_TypeCheck(self, (PyTypeObject *)guards->future_type);
    }
    PyTypeObject *tp = Py_TYPE(cb);
    return !(tp->tp_flags & Py_TPFLAGS_BASETYPE) &&
           strcmp(tp->tp_name, "TaskStepMethWrapper") == 0;
}

/* Whether cell code: a function (or a method of one) compiled from a
 * cell.  Its frames keep it gated wherever it runs; no need to bind it. */
static int
guards_cell_function(PyObject *cb)
{
    if (PyMethod_Check(cb)) {
        cb = PyMethod_GET_FUNCTION(cb);
    }
    return PyFunction_Check(cb) &&
           sp_gate_is_cell_code((PyCodeObject *)PyFunction_GET_CODE(cb));
}

/* Frames looked at for cell code when a Handle is created outside the
 * run's context.  The deepest direct path is TimerHandle.__init__ <-
 * call_at <- call_later <- the caller (Handle.__init__ is this guard, with
 * no frame); one to spare.  Each frame costs a little on every handle a
 * host loop creates, hence the bound (see the design note). */
#define GUARDS_HANDLE_FRAMES 5

/* Whether cell code is among the innermost GUARDS_HANDLE_FRAMES frames.
 * Outside runs, this bounds what a Handle costs to a few frames instead
 * of sp_gate_run's walk of the whole stack.  1, 0, or -1 on error. */
static int
guards_cell_frame_near(void)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed, then owned */
    Py_XINCREF(frame);
    int found = 0;
    for (int depth = 0; frame != NULL && !found && depth < GUARDS_HANDLE_FRAMES;
         depth++) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        found = sp_gate_is_cell_code(code);
        Py_DECREF(code);
        Py_SETREF(frame, PyFrame_GetBack(frame));
    }
    Py_XDECREF(frame);
    return PyErr_Occurred() ? -1 : found;
}

/* Whether a Handle's callback is a task's step or wakeup: a step wrapper
 * (a static type on 3.11, a heap type named with its module from 3.12) or
 * a builtin method of a future. */
static int
guards_task_plumbing(PyObject *cb)
{
    PyTypeObject *tp = Py_TYPE(cb);
    return guards_asyncio_internal(cb) ||
           (!(tp->tp_flags & Py_TPFLAGS_BASETYPE) &&
            strcmp(tp->tp_name, "_asyncio.TaskStepMethWrapper") == 0);
}

/* A task step or wakeup headed for a context that holds a run with a
 * memory cap (a task the cell spawned): the callback is charged to the
 * cap while it runs.  Only reached while a capped run is alive.  1 when
 * handled (*res the result, or NULL with an exception), 0 when the Handle
 * is none of these (the ordinary guard decides). */
static int
guards_handle_memcap(PyObject *const *args, size_t nargsf, PyObject *kwnames,
                     Py_ssize_t slot, PyObject **res)
{
    *res = NULL;
    if (!guards_task_plumbing(args[slot])) {
        return 0;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *ctx = guards_arg(args, guards_slot(args, nargs, kwnames, 4, "context"));
    PyObject *run = NULL; /* owned */
    if (PyContext_CheckExact(ctx)) {
        run = PyObject_GetItem(ctx, guards->run_var);
        if (run == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                return 1;
            }
            PyErr_Clear();
        }
    }
    if (run == NULL || !Py_IS_TYPE(run, sp_state.context.run_type) ||
        !sp_memcap_counting(((SpRun *)run)->mem)) {
        Py_XDECREF(run);
        return 0;
    }
    PyObject *bound = sp_boundcall_memcap_new((SpRun *)run, args[slot]);
    Py_DECREF(run);
    if (bound == NULL) {
        return 1;
    }
    *res = guards_call(G_HANDLE_INIT, args, nargsf, kwnames, slot, bound);
    Py_DECREF(bound);
    return 1;
}

/* asyncio.events.Handle.__init__(self, callback, args, loop, context=None)
 * (TimerHandle's calls it; so do call_soon, call_later, call_at and
 * call_soon_threadsafe).  The callback is bound when a run governs its
 * creation and it is headed for a context without the run (an explicit
 * contextvars.Context(), say), unless it is cell code (gated by its
 * frames) or asyncio's own plumbing (a task's step or wakeup, a future's
 * method: a cell that completes a host future must not gate the host task
 * it wakes).  Python callbacks are bound too: a host function such as
 * shutil.rmtree would otherwise run with no run and no cell frame. */
static PyObject *
guards_handle_init(PyObject *unused, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    (void)unused;
    SpRun *run = NULL;                   /* owned */
    PyObject *bound = NULL, *res = NULL; /* owned */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t slot = guards_slot(args, nargs, kwnames, 1, "callback");
    if (slot >= 0 && sp_memcap_any_live()) {
        PyObject *res = NULL;
        int done = guards_handle_memcap(args, nargsf, kwnames, slot, &res);
        if (done != 0) {
            return res;
        }
    }
    if (slot < 0 || guards_asyncio_internal(args[slot]) ||
        guards_cell_function(args[slot]) || !PyCallable_Check(args[slot])) {
        return guards_call(G_HANDLE_INIT, args, nargsf, kwnames, -1, NULL);
    }
    /* The cheap tests first: host event loops create handles all the time. */
    int in_run = sp_context_current(&run);
    Py_CLEAR(run);
    if (in_run == 0) {
        in_run = guards_cell_frame_near();
        if (in_run == 0) {
            return guards_call(G_HANDLE_INIT, args, nargsf, kwnames, -1, NULL);
        }
        in_run = in_run < 0 ? -1 : 0; /* cell code near, the context has none */
    }
    if (in_run < 0) {
        return NULL;
    }
    PyObject *ctx = guards_arg(args, guards_slot(args, nargs, kwnames, 4, "context"));
    int has_run;
    if (ctx == Py_None) {
        has_run = in_run; /* a copy of the current context */
    }
    else if (PyContext_CheckExact(ctx)) {
        has_run = PyMapping_HasKey(ctx, guards->run_var);
    }
    else {
        has_run = 0; /* not a Context: Handle will fail on it */
    }
    if (has_run) {
        return guards_call(G_HANDLE_INIT, args, nargsf, kwnames, -1, NULL);
    }
    int bind = guards_must_bind(&run);
    if (bind <= 0) {
        return bind < 0 ? NULL
                        : guards_call(G_HANDLE_INIT, args, nargsf, kwnames,
                                      -1, NULL);
    }
    bound = sp_boundcall_new(run, args[slot]);
    if (bound != NULL) {
        res = guards_call(G_HANDLE_INIT, args, nargsf, kwnames, slot, bound);
    }
    Py_DECREF(run);
    Py_XDECREF(bound);
    return res;
}

/* ---- re-imports --------------------------------------------------------- */

/* Index in guards_modules of a module name (str), or -1. */
static int
guards_module_index(PyObject *name)
{
    if (name == NULL || !PyUnicode_Check(name)) {
        return -1;
    }
    for (size_t m = 0; m < GUARDS_NMODULES; m++) {
        if (PyUnicode_CompareWithASCIIString(name, guards_modules[m].name) == 0) {
            return (int)m;
        }
    }
    return -1;
}

/* After the real create/exec: patch the module if it is a guarded one.
 * Steals `res`; returns it, or NULL with an exception. */
static PyObject *
guards_after_load(PyObject *res)
{
    if (res == NULL || !PyModule_Check(res)) {
        return res;
    }
    PyObject *name = PyModule_GetNameObject(res);
    if (name == NULL) {
        PyErr_Clear(); /* a module without a name guards nothing */
        return res;
    }
    int m = guards_module_index(name);
    int is_ctypes = PyUnicode_CompareWithASCIIString(name, "_ctypes") == 0;
    Py_DECREF(name);
    if ((m >= 0 && guards_patch_module(res, (size_t)m) < 0) ||
        (is_ctypes && sp_foreign_install(res) < 0)) {
        Py_DECREF(res);
        return NULL;
    }
    return res;
}

/* _imp.create_builtin(spec) / create_dynamic(spec, file=None): building a
 * fresh copy of a module that was guarded (its real functions) raises
 * `event` (name) first; the new object is guarded before it is returned. */
static PyObject *
guards_create(int g, const char *event, PyObject *const *args, size_t nargsf,
              PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t slot = guards_slot(args, nargs, kwnames, 0, NULL);
    if (slot >= 0) {
        PyObject *name = PyObject_GetAttrString(args[slot], "name");
        if (name == NULL) {
            PyErr_Clear(); /* the real function will refuse the spec */
        }
        int m = guards_module_index(name);
        int again = m >= 0 && guards->patched[m];
        int rc = again ? PySys_Audit(event, "(O)", name) : 0;
        Py_XDECREF(name);
        if (rc < 0) {
            return NULL;
        }
    }
    return guards_after_load(guards_call(g, args, nargsf, kwnames, -1, NULL));
}

static PyObject *
guards_create_builtin(PyObject *unused, PyObject *const *args, size_t nargsf,
                      PyObject *kwnames)
{
    (void)unused;
    return guards_create(G_CREATE_BUILTIN, "_imp.create_builtin", args,
                         nargsf, kwnames);
}

static PyObject *
guards_create_dynamic(PyObject *unused, PyObject *const *args, size_t nargsf,
                      PyObject *kwnames)
{
    (void)unused;
    return guards_create(G_CREATE_DYNAMIC, "_imp.create_dynamic", args,
                         nargsf, kwnames);
}

/* _imp.exec_builtin(mod) / exec_dynamic(mod): execution may add or reset
 * attributes (posix.environ), so the module is patched again after it. */
static PyObject *
guards_exec_module(int g, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    PyObject *res = guards_call(g, args, nargsf, kwnames, -1, NULL);
    if (res == NULL || PyVectorcall_NARGS(nargsf) < 1) {
        return res;
    }
    PyObject *mod = guards_after_load(Py_NewRef(args[0]));
    if (mod == NULL) {
        Py_DECREF(res);
        return NULL;
    }
    /* numpy's core imported inside a capped cell: its data allocator is
     * counted from now on, not from the cell's next step. */
    sp_memcap_module_ready(mod);
    Py_DECREF(mod);
    return res;
}

static PyObject *
guards_exec_builtin(PyObject *unused, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    (void)unused;
    return guards_exec_module(G_EXEC_BUILTIN, args, nargsf, kwnames);
}

static PyObject *
guards_exec_dynamic(PyObject *unused, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    (void)unused;
    return guards_exec_module(G_EXEC_DYNAMIC, args, nargsf, kwnames);
}

/* ---- sys.monitoring ------------------------------------------------------ */

/* Whether tool `tool` (an int object) is the engine's: named "safepyrun".
 * 1 yes, 0 no, -1 error. */
static int
guards_engine_tool(PyObject *tool)
{
    if (tool == NULL || !PyLong_Check(tool) || guards->monitoring == NULL) {
        return 0;
    }
    PyObject *name = PyObject_CallMethod(guards->monitoring, "get_tool", "O", tool);
    if (name == NULL) {
        /* An out-of-range id: the real function will say so. */
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int ours = PyUnicode_Check(name) &&
               PyUnicode_CompareWithASCIIString(name, "safepyrun") == 0;
    Py_DECREF(name);
    return ours;
}

/* A sys.monitoring function: inside a run, the event `event` (tool id)
 * first, when `event` is not NULL; then, anywhere, a call naming the
 * engine's tool is refused (it would switch off the call gate). */
static PyObject *
guards_monitoring_call(int g, const char *event, PyObject *const *args,
                       size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *tool = nargs > 0 ? args[0] : NULL;
    if (event != NULL) {
        SpRun *run = NULL;
        int active = sp_gate_run(&run);
        Py_XDECREF(run);
        if (active < 0) {
            return NULL;
        }
        if (active > 0 &&
            PySys_Audit(event, "(O)", tool != NULL ? tool : Py_None) < 0) {
            return NULL;
        }
    }
    int ours = guards_engine_tool(tool);
    if (ours != 0) {
        if (ours > 0) {
            PyErr_Format(PyExc_PermissionError,
                         "safepyrun refused to call sys.monitoring.%s on tool "
                         "%R: that tool is safepyrun's call gate",
                         guards_places[g].name, tool);
        }
        return NULL;
    }
    return guards_call(g, args, nargsf, kwnames, -1, NULL);
}

#define GUARDS_MONITORING(fn, g, event)                                      \
    static PyObject *fn(PyObject *unused, PyObject *const *args,             \
                        size_t nargsf, PyObject *kwnames)                    \
    {                                                                        \
        (void)unused;                                                        \
        return guards_monitoring_call(g, event, args, nargsf, kwnames);      \
    }

GUARDS_MONITORING(guards_mon_use_tool_id, G_MON_USE_TOOL_ID,
                  "sys.monitoring.use_tool_id")
GUARDS_MONITORING(guards_mon_free_tool_id, G_MON_FREE_TOOL_ID,
                  "sys.monitoring.free_tool_id")
GUARDS_MONITORING(guards_mon_clear_tool_id, G_MON_CLEAR_TOOL_ID,
                  "sys.monitoring.clear_tool_id")
GUARDS_MONITORING(guards_mon_set_events, G_MON_SET_EVENTS,
                  "sys.monitoring.set_events")
GUARDS_MONITORING(guards_mon_set_local_events, G_MON_SET_LOCAL_EVENTS,
                  "sys.monitoring.set_local_events")
GUARDS_MONITORING(guards_mon_restart_events, G_MON_RESTART_EVENTS,
                  "sys.monitoring.restart_events")
/* register_callback raises its own event; only the tool check is added. */
GUARDS_MONITORING(guards_mon_register_callback, G_MON_REGISTER_CALLBACK, NULL)
#undef GUARDS_MONITORING

/* ---- the host process itself --------------------------------------------- */

/* Natives that end, crash or reconfigure the whole process (os._exit,
 * os.abort, os.umask, the set*id family, signal.raise_signal, alarm and
 * setitimer, faulthandler's crash helpers): the event names what it does,
 * with the positional arguments.  Refused inside a run unless a trusted
 * call is active. */
static PyObject *
guards_process_call(int g, const char *event, PyObject *const *args,
                    size_t nargsf, PyObject *kwnames)
{
    PyObject *pos = PyTuple_New(PyVectorcall_NARGS(nargsf));
    for (Py_ssize_t i = 0; pos != NULL && i < PyTuple_GET_SIZE(pos); i++) {
        PyTuple_SET_ITEM(pos, i, Py_NewRef(args[i]));
    }
    if (pos == NULL) {
        return NULL;
    }
    int rc = PySys_Audit(event, "sO", guards_places[g].name, pos);
    Py_DECREF(pos);
    if (rc < 0) {
        return NULL;
    }
    return guards_call(g, args, nargsf, kwnames, -1, NULL);
}

#define GUARDS_PROCESS(fn, g, event)                                         \
    static PyObject *fn(PyObject *unused, PyObject *const *args,             \
                        size_t nargsf, PyObject *kwnames)                    \
    {                                                                        \
        (void)unused;                                                        \
        return guards_process_call(g, event, args, nargsf, kwnames);         \
    }

GUARDS_PROCESS(guards_p_exit, G_EXIT, "os._exit")
GUARDS_PROCESS(guards_p_abort, G_ABORT, "os.abort")
GUARDS_PROCESS(guards_p_umask, G_UMASK, "os.umask")
GUARDS_PROCESS(guards_p_setuid, G_SETUID, "os.setid")
GUARDS_PROCESS(guards_p_setgid, G_SETGID, "os.setid")
GUARDS_PROCESS(guards_p_seteuid, G_SETEUID, "os.setid")
GUARDS_PROCESS(guards_p_setegid, G_SETEGID, "os.setid")
GUARDS_PROCESS(guards_p_setreuid, G_SETREUID, "os.setid")
GUARDS_PROCESS(guards_p_setregid, G_SETREGID, "os.setid")
GUARDS_PROCESS(guards_p_setresuid, G_SETRESUID, "os.setid")
GUARDS_PROCESS(guards_p_setresgid, G_SETRESGID, "os.setid")
GUARDS_PROCESS(guards_p_setgroups, G_SETGROUPS, "os.setid")
GUARDS_PROCESS(guards_p_initgroups, G_INITGROUPS, "os.setid")
GUARDS_PROCESS(guards_p_setsid, G_SETSID, "os.setid")
GUARDS_PROCESS(guards_p_setpgid, G_SETPGID, "os.setid")
GUARDS_PROCESS(guards_p_setpgrp, G_SETPGRP, "os.setid")
GUARDS_PROCESS(guards_p_raise_signal, G_RAISE_SIGNAL, "signal.raise_signal")
GUARDS_PROCESS(guards_p_alarm, G_ALARM, "signal.alarm")
GUARDS_PROCESS(guards_p_setitimer, G_SETITIMER, "signal.alarm")
GUARDS_PROCESS(guards_p_fh_sigsegv, G_FH_SIGSEGV, "faulthandler.crash")
GUARDS_PROCESS(guards_p_fh_sigabrt, G_FH_SIGABRT, "faulthandler.crash")
GUARDS_PROCESS(guards_p_fh_sigfpe, G_FH_SIGFPE, "faulthandler.crash")
GUARDS_PROCESS(guards_p_fh_fatal, G_FH_FATAL, "faulthandler.crash")
GUARDS_PROCESS(guards_p_fh_fatal_thread, G_FH_FATAL_THREAD, "faulthandler.crash")
GUARDS_PROCESS(guards_p_fh_stack, G_FH_STACK, "faulthandler.crash")
GUARDS_PROCESS(guards_p_fh_read_null, G_FH_READ_NULL, "faulthandler.crash")
#undef GUARDS_PROCESS

/* Recursion deep enough to run the C stack out crashes the host: raising
 * the recursion limit past this (the interpreter's default is 1000) raises
 * "sys.setrecursionlimit" (refused in a run); lower limits pass. */
#define GUARDS_SAFE_RECURSION 10000

static PyObject *
guards_setrecursionlimit(PyObject *unused, PyObject *const *args,
                         size_t nargsf, PyObject *kwnames)
{
    (void)unused;
    if (PyVectorcall_NARGS(nargsf) >= 1 && PyLong_Check(args[0])) {
        int overflow = 0;
        long n = PyLong_AsLongAndOverflow(args[0], &overflow);
        if (n == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if ((overflow > 0 || n > GUARDS_SAFE_RECURSION) &&
            PySys_Audit("sys.setrecursionlimit", "O", args[0]) < 0) {
            return NULL;
        }
    }
    return guards_call(G_SETRECURSIONLIMIT, args, nargsf, kwnames, -1, NULL);
}

/* tracemalloc.stop() puts back the allocators it found when it started;
 * if the memory cap's hooks came after that, they would be gone, and a
 * cell could stop tracemalloc and then allocate uncounted.  The hooks are
 * put back at once (memcap.c). */
static PyObject *
guards_tracemalloc_stop(PyObject *unused, PyObject *const *args,
                        size_t nargsf, PyObject *kwnames)
{
    (void)unused;
    PyObject *res = guards_call(G_TRACEMALLOC_STOP, args, nargsf, kwnames, -1,
                                NULL);
    sp_memcap_rehook();
    return res;
}

/* Before 3.13 the time limit's watchdog (watchdog.c) makes the main
 * thread notice it by waiting for the GIL, which a spinning thread gives
 * up after the switch interval: raising the interval past this raises
 * "sys.setswitchinterval" (refused in a run); shorter intervals pass. */
#define GUARDS_SAFE_SWITCH_INTERVAL 0.02

static PyObject *
guards_setswitchinterval(PyObject *unused, PyObject *const *args,
                         size_t nargsf, PyObject *kwnames)
{
    (void)unused;
    if (PyVectorcall_NARGS(nargsf) >= 1 && (PyFloat_Check(args[0]) || PyLong_Check(args[0]))) {
        double v = PyFloat_AsDouble(args[0]);
        if (v == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (!(v <= GUARDS_SAFE_SWITCH_INTERVAL) &&
            PySys_Audit("sys.setswitchinterval", "O", args[0]) < 0) {
            return NULL;
        }
    }
    return guards_call(G_SETSWITCHINTERVAL, args, nargsf, kwnames, -1, NULL);
}

/* ---- the method table ------------------------------------------------------ */

#define GUARDS_DEF(name, fn, doc)                                            \
    {name, (PyCFunction)(void (*)(void))(fn), METH_FASTCALL | METH_KEYWORDS, \
     doc " (guarded by safepyrun)"}

static PyMethodDef guards_defs[G_COUNT] = {
    [G_OPEN] = GUARDS_DEF("open", guards_open, "Open a file descriptor."),
    [G_MKFIFO] = GUARDS_DEF("mkfifo", guards_mkfifo, "Create a FIFO."),
    [G_MKNOD] = GUARDS_DEF("mknod", guards_mknod, "Create a file system node."),
    [G_MEMFD_CREATE] = GUARDS_DEF("memfd_create", guards_memfd_create,
                                  "Create an anonymous file."),
    [G_FORK_EXEC] = GUARDS_DEF("fork_exec", guards_fork_exec,
                               "Fork and execute a program."),
    [G_PIDFD_SEND_SIGNAL] = GUARDS_DEF("pidfd_send_signal",
                                       guards_pidfd_send_signal,
                                       "Send a signal to a process."),
    [G_SIGNAL] = GUARDS_DEF("signal", guards_signal, "Set a signal handler."),
    [G_ATEXIT_REGISTER] = GUARDS_DEF("register", guards_atexit_register,
                                     "Register a function to call at exit."),
    [G_SHM_OPEN] = GUARDS_DEF("shm_open", guards_shm_open,
                              "Open shared memory."),
    [G_SHM_UNLINK] = GUARDS_DEF("shm_unlink", guards_shm_unlink,
                                "Remove shared memory."),
    [G_WRITE_HISTORY] = GUARDS_DEF("write_history_file", guards_write_history,
                                   "Save the history to a file."),
    [G_APPEND_HISTORY] = GUARDS_DEF("append_history_file",
                                    guards_append_history,
                                    "Append the history to a file."),
    [G_TK_CREATE] = GUARDS_DEF("create", guards_tk_create,
                               "Create a Tcl interpreter."),
    [G_CREATE_BUILTIN] = GUARDS_DEF("create_builtin", guards_create_builtin,
                                    "Create a built-in module."),
    [G_EXEC_BUILTIN] = GUARDS_DEF("exec_builtin", guards_exec_builtin,
                                  "Initialize a built-in module."),
    [G_CREATE_DYNAMIC] = GUARDS_DEF("create_dynamic", guards_create_dynamic,
                                    "Create an extension module."),
    [G_EXEC_DYNAMIC] = GUARDS_DEF("exec_dynamic", guards_exec_dynamic,
                                  "Initialize an extension module."),
    [G_MON_USE_TOOL_ID] = GUARDS_DEF("use_tool_id", guards_mon_use_tool_id,
                                     "Claim a monitoring tool id."),
    [G_MON_FREE_TOOL_ID] = GUARDS_DEF("free_tool_id", guards_mon_free_tool_id,
                                      "Free a monitoring tool id."),
    [G_MON_CLEAR_TOOL_ID] = GUARDS_DEF("clear_tool_id",
                                       guards_mon_clear_tool_id,
                                       "Clear a monitoring tool's events."),
    [G_MON_SET_EVENTS] = GUARDS_DEF("set_events", guards_mon_set_events,
                                    "Set global monitoring events."),
    [G_MON_SET_LOCAL_EVENTS] = GUARDS_DEF("set_local_events",
                                          guards_mon_set_local_events,
                                          "Set local monitoring events."),
    [G_MON_RESTART_EVENTS] = GUARDS_DEF("restart_events",
                                        guards_mon_restart_events,
                                        "Restart disabled events."),
    [G_MON_REGISTER_CALLBACK] = GUARDS_DEF("register_callback",
                                           guards_mon_register_callback,
                                           "Register a monitoring callback."),
    [G_FINALIZE_INIT] = GUARDS_DEF("__init__", guards_finalize_init,
                                   "__init__($self, obj, func, /, *args, **kwargs)\n"
                                   "--\n\nRegister a finalizer."),
    [G_HANDLE_INIT] = GUARDS_DEF("__init__", guards_handle_init,
                                 "__init__($self, callback, args, loop, "
                                 "context=None)\n--\n\nA scheduled callback."),
    [G_WORKITEM_INIT] = GUARDS_DEF("__init__", guards_workitem_init,
                                   "__init__($self, future, fn, args, kwargs)\n"
                                   "--\n\nAn executor's work item."),
    [G_EXIT] = GUARDS_DEF("_exit", guards_p_exit, "_exit (the process)"),
    [G_ABORT] = GUARDS_DEF("abort", guards_p_abort, "abort (the process)"),
    [G_UMASK] = GUARDS_DEF("umask", guards_p_umask, "umask (the process)"),
    [G_SETUID] = GUARDS_DEF("setuid", guards_p_setuid, "setuid (the process)"),
    [G_SETGID] = GUARDS_DEF("setgid", guards_p_setgid, "setgid (the process)"),
    [G_SETEUID] = GUARDS_DEF("seteuid", guards_p_seteuid, "seteuid (the process)"),
    [G_SETEGID] = GUARDS_DEF("setegid", guards_p_setegid, "setegid (the process)"),
    [G_SETREUID] = GUARDS_DEF("setreuid", guards_p_setreuid, "setreuid (the process)"),
    [G_SETREGID] = GUARDS_DEF("setregid", guards_p_setregid, "setregid (the process)"),
    [G_SETRESUID] = GUARDS_DEF("setresuid", guards_p_setresuid, "setresuid (the process)"),
    [G_SETRESGID] = GUARDS_DEF("setresgid", guards_p_setresgid, "setresgid (the process)"),
    [G_SETGROUPS] = GUARDS_DEF("setgroups", guards_p_setgroups, "setgroups (the process)"),
    [G_INITGROUPS] = GUARDS_DEF("initgroups", guards_p_initgroups, "initgroups (the process)"),
    [G_SETSID] = GUARDS_DEF("setsid", guards_p_setsid, "setsid (the process)"),
    [G_SETPGID] = GUARDS_DEF("setpgid", guards_p_setpgid, "setpgid (the process)"),
    [G_SETPGRP] = GUARDS_DEF("setpgrp", guards_p_setpgrp, "setpgrp (the process)"),
    [G_RAISE_SIGNAL] = GUARDS_DEF("raise_signal", guards_p_raise_signal, "raise_signal (the process)"),
    [G_ALARM] = GUARDS_DEF("alarm", guards_p_alarm, "alarm (the process)"),
    [G_SETITIMER] = GUARDS_DEF("setitimer", guards_p_setitimer, "setitimer (the process)"),
    [G_FH_SIGSEGV] = GUARDS_DEF("_sigsegv", guards_p_fh_sigsegv, "_sigsegv (the process)"),
    [G_FH_SIGABRT] = GUARDS_DEF("_sigabrt", guards_p_fh_sigabrt, "_sigabrt (the process)"),
    [G_FH_SIGFPE] = GUARDS_DEF("_sigfpe", guards_p_fh_sigfpe, "_sigfpe (the process)"),
    [G_FH_FATAL] = GUARDS_DEF("_fatal_error", guards_p_fh_fatal, "_fatal_error (the process)"),
    [G_FH_FATAL_THREAD] = GUARDS_DEF("_fatal_error_c_thread", guards_p_fh_fatal_thread, "_fatal_error_c_thread (the process)"),
    [G_FH_STACK] = GUARDS_DEF("_stack_overflow", guards_p_fh_stack, "_stack_overflow (the process)"),
    [G_FH_READ_NULL] = GUARDS_DEF("_read_null", guards_p_fh_read_null, "_read_null (the process)"),
    [G_SETRECURSIONLIMIT] = GUARDS_DEF("setrecursionlimit",
                                       guards_setrecursionlimit,
                                       "Set the recursion limit."),
    [G_TRACEMALLOC_STOP] = GUARDS_DEF("stop", guards_tracemalloc_stop,
                                      "Stop tracing memory allocations."),
    [G_SETSWITCHINTERVAL] = GUARDS_DEF("setswitchinterval",
                                       guards_setswitchinterval,
                                       "Set the thread switch interval."),
};
#undef GUARDS_DEF

/* ---- installing ------------------------------------------------------------ */

/* Whether `obj` is real function `g` or another object of the same C
 * function (a fresh module copy's).  Module functions only. */
static int
guards_is_real(PyObject *obj, int g)
{
    PyObject *real = guards->real[g];
    return real != NULL && PyCFunction_Check(obj) &&
           (obj == real ||
            PyCFunction_GET_FUNCTION(obj) == PyCFunction_GET_FUNCTION(real));
}

/* A single-phase extension module (_tkinter on 3.11-3.13) keeps a copy of
 * its first namespace that every re-import starts from, and that copy is a
 * dict the collector tracks: replace real function `g` by its guard in
 * every dict that holds it, so that neither a re-import nor gc.get_objects()
 * hands out the real function.  One walk of the heap, done once per
 * captured function of such a module.  0 ok, -1 error. */
static int
guards_replace_in_referrers(int g)
{
    PyObject *gc = NULL, *refs = NULL; /* owned */
    int rc = -1;
    gc = PyImport_ImportModule("gc");
    /* The engine's own walk, also when a cell's import brought the module
     * in: gc.get_referrers is refused to cells, not to the engine. */
    sp_gate_engine_begin();
    refs = gc == NULL ? NULL
                      : PyObject_CallMethod(gc, "get_referrers", "O", guards->real[g]);
    sp_gate_engine_end();
    if (refs == NULL || !PyList_Check(refs)) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++) {
        PyObject *dict = PyList_GET_ITEM(refs, i);
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_CheckExact(dict) && PyDict_Next(dict, &pos, &key, &value)) {
            /* Same key: the dict's size does not change. */
            if (value == guards->real[g] &&
                PyDict_SetItem(dict, key, guards->guard[g]) < 0) {
                goto done;
            }
        }
    }
    rc = 0;
done:
    Py_XDECREF(gc);
    Py_XDECREF(refs);
    return rc;
}

/* Whether `mod` comes from a single-phase extension (a definition without
 * slots, and with functions). */
static int
guards_single_phase(PyObject *mod)
{
    PyModuleDef *def = PyModule_Check(mod) ? PyModule_GetDef(mod) : NULL;
    if (def == NULL) {
        PyErr_Clear();
        return 0;
    }
    return def->m_slots == NULL;
}

/* Capture the real function `g` from `attr` (the first time) and build its
 * guard.  A module function's guard has the module `mod` as its __self__,
 * as the real one has (inspect.signature drops it); a class guard has
 * none.  0 ok, -1 error. */
static int
guards_capture(int g, PyObject *attr, PyObject *mod, PyObject *modname)
{
    guards->real[g] = Py_NewRef(attr);
    /* Out of gc.get_objects()' reach: only this struct holds it now. */
    if (PyObject_GC_IsTracked(attr)) {
        PyObject_GC_UnTrack(attr);
    }
    if (guards_places[g].cls == NULL && PyCFunction_Check(attr)) {
        /* The real docstring and signature (inspect.signature(os.open)):
         * a static string of the extension, loaded for good. */
        guards_defs[g].ml_doc = ((PyCFunctionObject *)attr)->m_ml->ml_doc;
    }
    PyObject *self = guards_places[g].cls == NULL ? mod : NULL;
    PyObject *fn = PyCFunction_NewEx(&guards_defs[g], self, modname);
    if (fn == NULL) {
        return -1;
    }
    if (guards_places[g].cls == NULL) {
        guards->guard[g] = fn;
        return 0;
    }
    guards->guard[g] = PyInstanceMethod_New(fn);
    Py_DECREF(fn);
    return guards->guard[g] == NULL ? -1 : 0;
}

/* Guard the class attribute `g` of module `mod`.  0 ok, -1 error. */
static int
guards_patch_class(PyObject *mod, int g, PyObject *modname)
{
    PyObject *cls = NULL, *dict = NULL, *attr = NULL; /* owned */
    int rc = -1;
    cls = PyObject_GetAttrString(mod, guards_places[g].cls);
    if (cls == NULL || !PyType_Check(cls)) {
        PyErr_Clear();
        rc = 0; /* not there in this version */
        goto done;
    }
    dict = sp_type_dict((PyTypeObject *)cls);
    if (dict == NULL || sp_dict_get_ref_str(dict, guards_places[g].name, &attr) < 0) {
        goto done;
    }
    if (attr == NULL || attr == guards->guard[g] || !PyFunction_Check(attr)) {
        rc = 0; /* inherited, already guarded, or replaced by the host */
        goto done;
    }
    if (guards->real[g] == NULL) {
        if (guards_capture(g, attr, NULL, modname) < 0) {
            goto done;
        }
    }
    else if (attr != guards->real[g]) {
        rc = 0; /* a re-imported module's class: another real; leave it */
        goto done;
    }
    rc = PyObject_SetAttrString(cls, guards_places[g].name, guards->guard[g]);
done:
    Py_XDECREF(cls);
    Py_XDECREF(dict);
    Py_XDECREF(attr);
    return rc;
}

/* Replace the guarded attributes of module object `mod` (guards_modules[m]).
 * 0 ok, -1 error. */
static int
guards_patch_module(PyObject *mod, size_t m)
{
    const char *name = guards_modules[m].name;
    PyObject *modname = PyUnicode_FromString(name);
    if (modname == NULL) {
        return -1;
    }
    int rc = -1;
    for (int g = 0; g < G_COUNT; g++) {
        if (strcmp(guards_places[g].module, name) != 0) {
            continue;
        }
        if (guards_places[g].cls != NULL) {
            if (guards_patch_class(mod, g, modname) < 0) {
                goto done;
            }
            continue;
        }
        PyObject *attr = PyObject_GetAttrString(mod, guards_places[g].name);
        if (attr == NULL) {
            PyErr_Clear(); /* not on this platform or version */
            continue;
        }
        int replace = 0;
        if (attr == guards->guard[g]) {
            replace = 0;
        }
        else if (guards->real[g] == NULL) {
            if (!PyCFunction_Check(attr)) {
                Py_DECREF(attr);
                continue; /* replaced by the host: not ours to guard */
            }
            replace = guards_capture(g, attr, mod, modname) == 0 ? 1 : -1;
            if (replace > 0 && guards_single_phase(mod) &&
                guards_replace_in_referrers(g) < 0) {
                replace = -1;
            }
        }
        else {
            replace = guards_is_real(attr, g);
        }
        Py_DECREF(attr);
        if (replace < 0 ||
            (replace && PyObject_SetAttrString(mod, guards_places[g].name,
                                               guards->guard[g]) < 0)) {
            goto done;
        }
    }
    if (strcmp(name, "posix") == 0 && sp_environ_guard(mod) < 0) {
        goto done;
    }
    if (!guards->patched[m]) {
        guards->patched[m] = 1;
        guards->pending -= guards_modules[m].python;
    }
    rc = 0;
done:
    Py_DECREF(modname);
    return rc;
}

/* Replace aliases of the real module functions in every loaded module
 * (os.open, subprocess._fork_exec, signal.signal's siblings...).
 * 0 ok, -1 error. */
static int
guards_sweep(void)
{
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    PyObject *values = PyDict_Values(modules);
    if (values == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *mod = PyList_GET_ITEM(values, i);
        if (!PyModule_Check(mod)) {
            continue;
        }
        PyObject *dict = PyModule_GetDict(mod); /* borrowed */
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (dict != NULL && PyDict_Next(dict, &pos, &key, &value)) {
            if (!PyCFunction_Check(value)) {
                continue;
            }
            for (int g = 0; g < G_COUNT; g++) {
                if (guards_places[g].cls == NULL && guards_is_real(value, g)) {
                    /* Same key: the dict's size does not change. */
                    if (PyDict_SetItem(dict, key, guards->guard[g]) < 0) {
                        Py_DECREF(values);
                        return -1;
                    }
                    break;
                }
            }
        }
    }
    Py_DECREF(values);
    return 0;
}

/* sys.monitoring (3.12+): keep a private copy of its namespace with the
 * real functions for the engine's monitor, then guard the module.
 * 0 ok (also when there is no sys.monitoring), -1 error. */
static int
guards_install_monitoring(void)
{
    PyObject *mon = PySys_GetObject("monitoring"); /* borrowed */
    if (mon == NULL || !PyModule_Check(mon)) {
        return 0;
    }
    Py_INCREF(mon);
    int rc = -1;
    PyObject *copy = PyModule_New("sys.monitoring");
    PyObject *copy_dict = copy == NULL ? NULL : PyModule_GetDict(copy);
    if (copy_dict == NULL || PyDict_Update(copy_dict, PyModule_GetDict(mon)) < 0) {
        Py_XDECREF(copy);
        goto done;
    }
    /* Out of gc.get_objects()' reach, with the real functions it holds. */
    PyObject_GC_UnTrack(copy);
    if (PyObject_GC_IsTracked(copy_dict)) {
        PyObject_GC_UnTrack(copy_dict);
    }
    guards->monitoring = copy;
    /* guards_patch_module's table walk finds "sys.monitoring" entries. */
    PyObject *modname = PyUnicode_FromString("sys.monitoring");
    if (modname == NULL) {
        goto done;
    }
    rc = 0;
    for (int g = 0; g < G_COUNT && rc == 0; g++) {
        if (strcmp(guards_places[g].module, "sys.monitoring") != 0) {
            continue;
        }
        PyObject *attr = PyObject_GetAttrString(mon, guards_places[g].name);
        if (attr == NULL) {
            PyErr_Clear(); /* clear_tool_id is 3.13+ */
            continue;
        }
        if (PyCFunction_Check(attr) && guards->real[g] == NULL &&
            (guards_capture(g, attr, mon, modname) < 0 ||
             PyObject_SetAttrString(mon, guards_places[g].name,
                                    guards->guard[g]) < 0)) {
            rc = -1;
        }
        Py_DECREF(attr);
    }
    Py_DECREF(modname);
done:
    Py_DECREF(mon);
    return rc;
}

PyObject *
sp_guards_monitoring(void)
{
    if (guards->monitoring != NULL) {
        return Py_NewRef(guards->monitoring);
    }
    PyObject *mon = PySys_GetObject("monitoring"); /* borrowed */
    if (mon == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "safepyrun: no sys.monitoring");
        return NULL;
    }
    return Py_NewRef(mon);
}

/* Guard the modules of guards_modules that are loaded (importing the
 * eager ones when `import_eager`), then sweep for aliases when anything
 * changed.  0 ok, -1 error. */
static int
guards_install_loaded(int import_eager)
{
    int changed = 0;
    for (size_t m = 0; m < GUARDS_NMODULES; m++) {
        if (guards->patched[m]) {
            continue;
        }
        PyObject *name = PyUnicode_FromString(guards_modules[m].name);
        if (name == NULL) {
            return -1;
        }
        PyObject *mod = PyImport_GetModule(name);
        if (mod == NULL && !PyErr_Occurred() && import_eager &&
            guards_modules[m].eager) {
            mod = PyImport_Import(name);
            if (mod == NULL && PyErr_ExceptionMatches(PyExc_ImportError)) {
                PyErr_Clear(); /* not built on this platform */
            }
        }
        Py_DECREF(name);
        if (mod == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            continue;
        }
        int rc = guards_patch_module(mod, m);
        Py_DECREF(mod);
        if (rc < 0) {
            return -1;
        }
        changed = 1;
    }
    return changed ? guards_sweep() : 0;
}

int
sp_guards_before_run(void)
{
    if (sp_foreign_before_run() < 0) {
        return -1;
    }
    if (guards->pending == 0 || !guards->installed) {
        return 0;
    }
    if (guards->future_type == NULL) {
        PyObject *name = PyUnicode_FromString("asyncio.futures");
        PyObject *futures = name == NULL ? NULL : PyImport_GetModule(name);
        Py_XDECREF(name);
        if (futures == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (futures != NULL) {
            guards->future_type = PyObject_GetAttrString(futures, "Future");
            Py_DECREF(futures);
            if (guards->future_type == NULL) {
                return -1;
            }
        }
    }
    return guards_install_loaded(0);
}

int
sp_guards_init(PyObject *module)
{
    if (guards->installed) {
        return 0;
    }
    for (size_t m = 0; m < GUARDS_NMODULES; m++) {
        guards->pending += guards_modules[m].python;
    }
    guards->run_var = sp_context_var();
    if (sp_boundcall_init(module) < 0 || sp_environ_init(module) < 0) {
        return -1;
    }
    if (guards_install_monitoring() < 0 || guards_install_loaded(1) < 0) {
        return -1;
    }
    guards->installed = 1;
    return 0;
}
