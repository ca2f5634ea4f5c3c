/* hook.c - the audit hook: event -> rule -> verdict.
 *
 * One C hook is installed with PySys_AddAuditHook by the first import and
 * stays for the life of the process (audit hooks cannot be removed).  Its
 * userData is NULL: everything it reads is process-wide C state in
 * rules.c (the static event table) and context.c (the run context
 * variable), plus the static `hook_global` below.
 *
 * Hot path, in order, with no Python-level work:
 *   1. look the event up in the static table; ALLOW -> return 0;
 *   2. `open` that only reads (flags without a write bit) -> return 0;
 *   3. read the run context variable; no gated run here -> return 0.
 * Only an event that may be refused inside a run reaches hook_judge, the
 * slow path, which may resolve paths and walk frames, still in C.
 *
 * A refusal is a PermissionError naming what was refused, the offending
 * argument, the audit event and the Python call chain.  Each refusal is
 * recorded in the run (context.c) so that the runner can recognise it when
 * a library wraps it in another exception.
 *
 * Threading: audit hooks run with the GIL held, in the thread that raised
 * the event.  Nothing here keeps per-call state outside the stack.
 */
#include "hook.h"

#include "common.h"
#include "state.h"

#include "context.h"
#include "gate.h"
#include "libcache.h"
#include "paths.h"
#include "registry.h"
#include "report.h"
#include "rules.h"
#include "sqlite.h"
#include "threads.h"
#include "trust.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>

/* This file's part of the engine state (state.h). */
static struct sp_hook_state *const hook_global = &sp_state.hook;

/* Longest repr shown for an offending argument. */
#define HOOK_MAX_SHOWN 200
/* Frames shown in a call chain (the innermost ones, then the cell). */
#define HOOK_MAX_CHAIN 8

/* ---- refusal messages ---------------------------------------------- */

/* What a rule refuses, for messages ("open a file for writing"). */
static const char *
hook_rule_what(const sp_rule *rule)
{
    return rule != NULL && rule->what != NULL
        ? rule->what : "raise an audit event the sandbox does not know";
}

/* repr(obj) for a refusal message, without running cell code: builtin
 * types and str/bytes subclasses as their plain value (bytes decoded, as
 * os.system's command and fsencoded paths read better so), lists and
 * tuples item by item, other objects by their class's repr when that is
 * the host's (gate.h), else "<Type object>".  New reference or NULL. */
static PyObject *
hook_safe_repr(PyObject *obj, int depth)
{
    if (PyBytes_Check(obj)) {
        PyObject *text = PyUnicode_DecodeFSDefaultAndSize(
            PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj));
        PyObject *r = text == NULL ? NULL : PyObject_Repr(text);
        Py_XDECREF(text);
        return r;
    }
    if (PyUnicode_Check(obj)) {
        PyObject *plain = PyUnicode_FromObject(obj); /* copies a subclass */
        PyObject *r = plain == NULL ? NULL : PyObject_Repr(plain);
        Py_XDECREF(plain);
        return r;
    }
    if ((PyList_CheckExact(obj) || PyTuple_CheckExact(obj)) && depth < 2) {
        /* A snapshot tuple holds the items while their reprs run. */
        PyObject *items = PySequence_Tuple(obj); /* exact: no code runs */
        PyObject *parts = items == NULL ? NULL : PyList_New(0);
        PyObject *sep = NULL, *joined = NULL, *res = NULL;
        for (Py_ssize_t i = 0; parts != NULL && i < PyTuple_GET_SIZE(items); i++) {
            PyObject *r = hook_safe_repr(PyTuple_GET_ITEM(items, i), depth + 1);
            if (r == NULL || PyList_Append(parts, r) < 0) {
                Py_XDECREF(r);
                Py_CLEAR(parts);
                break;
            }
            Py_DECREF(r);
        }
        sep = parts == NULL ? NULL : PyUnicode_FromString(", ");
        joined = sep == NULL ? NULL : PyUnicode_Join(sep, parts);
        if (joined != NULL) {
            res = PyList_CheckExact(obj)
                ? PyUnicode_FromFormat("[%U]", joined)
                : PyUnicode_FromFormat(PyTuple_GET_SIZE(items) == 1
                                           ? "(%U,)" : "(%U)", joined);
        }
        Py_XDECREF(items);
        Py_XDECREF(parts);
        Py_XDECREF(sep);
        Py_XDECREF(joined);
        return res;
    }
    if (!(Py_TYPE(obj)->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
        sp_gate_method_kind(Py_TYPE(obj), "__repr__") == SP_METHOD_HOST) {
        PyObject *r = PyObject_Repr(obj);
        if (r != NULL) {
            return r;
        }
        PyErr_Clear(); /* a repr that fails: show the type */
    }
    return PyUnicode_FromFormat("<%s object>", SP_TYPE_NAME(obj));
}

/* hook_safe_repr cut to HOOK_MAX_SHOWN characters.  New reference or
 * NULL. */
static PyObject *
hook_short_repr(PyObject *obj)
{
    PyObject *r = hook_safe_repr(obj, 0);
    if (r == NULL || PyUnicode_GET_LENGTH(r) <= HOOK_MAX_SHOWN) {
        return r;
    }
    PyObject *cut = PyUnicode_Substring(r, 0, HOOK_MAX_SHOWN);
    Py_DECREF(r);
    if (cut == NULL) {
        return NULL;
    }
    PyObject *res = PyUnicode_FromFormat("%U...", cut);
    Py_DECREF(cut);
    return res;
}

/* "file:line qualname" for one frame.  New reference or NULL. */
static PyObject *
hook_frame_text(PyFrameObject *frame)
{
    PyCodeObject *code = PyFrame_GetCode(frame); /* new reference */
    PyObject *qualname = NULL, *res = NULL;
    PyObject *filename = code->co_filename; /* borrowed from code */
    qualname = PyObject_GetAttrString((PyObject *)code, "co_qualname");
    if (qualname == NULL) {
        goto done;
    }
    /* Basename keeps the chain short; cell names have no '/'. */
    Py_ssize_t slash = PyUnicode_FindChar(
        filename, '/', 0, PyUnicode_GET_LENGTH(filename), -1);
    if (slash == -2) {
        goto done;
    }
    PyObject *base = slash >= 0
        ? PyUnicode_Substring(filename, slash + 1, PY_SSIZE_T_MAX)
        : Py_NewRef(filename);
    if (base == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("%U:%d %U", base, PyFrame_GetLineNumber(frame),
                               qualname);
    Py_DECREF(base);
done:
    Py_XDECREF(qualname);
    Py_DECREF(code);
    return res;
}

/* Frames examined for a call chain; deeper stacks show their innermost. */
#define HOOK_MAX_WALK 256

/* The Python call chain that led to the event, outermost first: from the
 * outermost frame of cell code (the host's frames above it, the runner and
 * the event loop, are left out) to the innermost frame.  Without cell code
 * on the stack (a worker thread) it is the innermost frames.  A long chain
 * keeps its outermost and innermost frames.  New reference to a str, or
 * NULL with an exception. */
static PyObject *
hook_call_chain(void)
{
    PyFrameObject *frames[HOOK_MAX_WALK]; /* owned: innermost first */
    PyObject *parts = NULL, *sep = NULL, *res = NULL; /* owned */
    Py_ssize_t n = 0, cut = -1;
    sp_walk w;
    sp_walk_start(&w);
    PyFrameObject *frame;
    while (n < HOOK_MAX_WALK && (frame = sp_walk_next(&w)) != NULL) {
        if (sp_gate_is_cell_code(w.code)) {
            cut = n;
        }
        frames[n++] = (PyFrameObject *)Py_NewRef(frame);
    }
    sp_walk_stop(&w);
    if (PyErr_Occurred()) {
        goto done;
    }
    Py_ssize_t shown = cut >= 0 ? cut + 1 : (n < HOOK_MAX_CHAIN ? n : HOOK_MAX_CHAIN);
    parts = PyList_New(0);
    if (parts == NULL) {
        goto done;
    }
    /* Outermost first; a chain longer than HOOK_MAX_CHAIN keeps its
     * outermost frame and the innermost HOOK_MAX_CHAIN - 1. */
    int elide = shown > HOOK_MAX_CHAIN;
    for (Py_ssize_t i = shown - 1; i >= 0; i--) {
        PyObject *text;
        if (elide && i < shown - 1 && i >= HOOK_MAX_CHAIN - 1) {
            if (i != shown - 2) {
                continue;
            }
            text = PyUnicode_FromFormat("...%zd frames...",
                                        shown - HOOK_MAX_CHAIN);
        }
        else {
            text = hook_frame_text(frames[i]);
        }
        if (text == NULL || PyList_Append(parts, text) < 0) {
            Py_XDECREF(text);
            goto done;
        }
        Py_DECREF(text);
    }
    sep = PyUnicode_FromString(" -> ");
    if (sep != NULL) {
        res = PyUnicode_Join(sep, parts);
    }
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(frames[i]);
    }
    Py_XDECREF(parts);
    Py_XDECREF(sep);
    return res;
}

/* Raise the refusal for `event` (arguments `args`, borrowed) and record it
 * in `run` and its report.  `shown` is the
 * offending argument (borrowed, may be NULL); `detail` (borrowed, may be
 * NULL) follows it, or stands alone, e.g. " is outside ok_dests [...]".
 * Always returns -1 with an exception set: the PermissionError, or
 * whatever failed while building it (refused either way). */
static int
hook_refuse(SpRun *run, const sp_rule *rule, const char *event,
            PyObject *args, PyObject *shown, PyObject *detail)
{
    PyObject *chain = NULL, *arg_text = NULL, *msg = NULL, *exc = NULL;
    const char *what = hook_rule_what(rule);
    /* A write's remedy is a directory; anything else needs a trusted
     * function (common.h holds the one wording). */
    int writes = rule != NULL && (rule->kind == SP_RULE_WRITE ||
                                  rule->kind == SP_RULE_OPEN ||
                                  rule->kind == SP_RULE_SQLITE);
    const char *remedy = writes ? SP_REMEDY_WRITE : SP_REMEDY_TRUST;

    chain = hook_call_chain();
    if (chain == NULL) {
        goto done;
    }
    if (shown != NULL) {
        PyObject *r = hook_short_repr(shown);
        if (r == NULL) {
            goto done;
        }
        arg_text = detail != NULL ? PyUnicode_FromFormat(": %U%U", r, detail)
                                  : PyUnicode_FromFormat(": %U", r);
        Py_DECREF(r);
    }
    else {
        arg_text = detail != NULL ? Py_NewRef(detail) : PyUnicode_FromString("");
    }
    if (arg_text == NULL) {
        goto done;
    }
    msg = PyUnicode_FromFormat(
        "safepyrun refused to %s%U (audit event '%s'; call chain: %U).%s",
        what, arg_text, event, chain, remedy);
done:
    if (msg == NULL) {
        /* Whatever failed while describing the refusal (a repr, a frame,
         * memory), it is still a refusal: a plain message then. */
        PyErr_Clear();
        msg = PyUnicode_FromFormat(
            "safepyrun refused to %s (audit event '%s'; call chain: "
            "unavailable).%s", what, event, remedy);
    }
    exc = msg == NULL ? NULL : PyObject_CallOneArg(PyExc_PermissionError, msg);
    sp_report_event(run, event, args, hook_short_repr, "denied", NULL);
    if (exc != NULL && sp_context_record_denial(run, exc) == 0) {
        PyErr_SetObject(PyExc_PermissionError, exc);
    }
    Py_XDECREF(chain);
    Py_XDECREF(arg_text);
    Py_XDECREF(msg);
    Py_XDECREF(exc);
    return -1;
}

/* A would-be refusal: allowed after all when a trusted call is active or
 * the host's pre_deny hook says so; refused otherwise, with the policies'
 * refusals (if any) added to `detail` (borrowed, may be NULL).  0 allow,
 * -1 with an exception. */
static int
hook_deny(SpRun *run, const sp_rule *rule, const char *event, PyObject *args,
          PyObject *shown, PyObject *detail)
{
    PyObject *refusals = NULL, *full = NULL, *by = NULL;
    int trusted = sp_trust_search_by(run, &refusals,
                                     run->report != NULL ? &by : NULL);
    if (trusted != 0) {
        if (trusted > 0) {
            sp_report_event(run, event, args, hook_short_repr, "allowed", by);
        }
        Py_XDECREF(by);
        return trusted < 0 ? -1 : 0;
    }
    int pre = sp_trust_pre_deny(run, event, args, hook_rule_what(rule));
    if (pre != 0) {
        Py_DECREF(refusals);
        if (pre > 0 && run->report != NULL) {
            PyObject *hook_name = PyUnicode_FromString("pre_deny");
            PyErr_Clear();
            sp_report_event(run, event, args, hook_short_repr, "allowed",
                            hook_name);
            Py_XDECREF(hook_name);
        }
        return pre < 0 ? -1 : 0;
    }
    if (PyList_GET_SIZE(refusals) > 0) {
        PyObject *sep = PyUnicode_FromString("; ");
        PyObject *joined = sep == NULL ? NULL : PyUnicode_Join(sep, refusals);
        Py_XDECREF(sep);
        if (joined == NULL) {
            Py_DECREF(refusals);
            return -1;
        }
        full = detail != NULL
            ? PyUnicode_FromFormat("%U; the trusted call's policies refused: %U",
                                   detail, joined)
            : PyUnicode_FromFormat(" (the trusted call's policies refused: %U)",
                                   joined);
        Py_DECREF(joined);
        if (full == NULL) {
            Py_DECREF(refusals);
            return -1;
        }
        detail = full;
    }
    Py_DECREF(refusals);
    int rc = hook_refuse(run, rule, event, args, shown, detail);
    Py_XDECREF(full);
    return rc;
}

/* Argument `i` of the event, borrowed, or NULL when absent. */
static inline PyObject *
hook_arg(PyObject *args, int i)
{
    if (i < 0 || !PyTuple_Check(args) || i >= PyTuple_GET_SIZE(args)) {
        return NULL;
    }
    return PyTuple_GET_ITEM(args, i);
}

/* An `open` event's flags (argument 2), or -1 when it has none that can
 * be read (then judged as a write). */
static inline long
hook_open_flags(PyObject *args)
{
    PyObject *flags = hook_arg(args, 2);
    if (flags == NULL || !PyLong_Check(flags)) {
        return -1;
    }
    long f = PyLong_AsLong(flags);
    if (f == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    return f < 0 ? -1 : f;
}

/* Whether an `open` event's flags ask for writing. */
static inline int
hook_open_writes(PyObject *args)
{
    long f = hook_open_flags(args);
    return f < 0 || (f & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)) != 0;
}

/* Why a write was refused: "is outside ok_dests [...]", or "(no writes are
 * allowed: ok_dests is empty)", plus the resolved path when it differs from
 * what the code wrote.  New reference or NULL. */
static PyObject *
hook_write_detail(PyObject *dests, PyObject *path, PyObject *resolved)
{
    PyObject *given = PyUnicode_Check(path) ? Py_NewRef(path) : PyOS_FSPath(path);
    if (given == NULL) {
        PyErr_Clear();
    }
    int same = given != NULL && PyUnicode_Check(given) &&
               PyUnicode_Compare(given, resolved) == 0;
    Py_XDECREF(given);
    PyObject *where = same ? PyUnicode_FromString("")
                           : PyUnicode_FromFormat(" (resolved to %R)", resolved);
    if (where == NULL) {
        return NULL;
    }
    PyObject *res;
    if (PyTuple_GET_SIZE(dests) == 0) {
        res = PyUnicode_FromFormat(
            "%U (no writes are allowed: ok_dests is empty)", where);
    }
    else {
        PyObject *list = PySequence_List(dests);
        res = list == NULL ? NULL
                           : PyUnicode_FromFormat("%U is outside ok_dests %R",
                                                  where, list);
        Py_XDECREF(list);
    }
    Py_DECREF(where);
    return res;
}

/* Check each path argument of a write event.  1 allowed, -1 refused or
 * error (exception set). */
static int
hook_judge_write(SpRun *run, const sp_rule *rule, const char *event,
                 PyObject *args)
{
    if (run->ok_dests == Py_None) {
        return 1;
    }
    int judged = 0; /* a path was checked against ok_dests */
    int reported = 0; /* hook_deny reported the event */
    for (int k = 0; k < 2; k++) {
        PyObject *path = hook_arg(args, rule->path_arg[k]);
        if (path == NULL || path == Py_None) {
            continue;
        }
        if (rule->kind == SP_RULE_OPEN && PyLong_Check(path)) {
            continue; /* open(fd, 'w'): the descriptor is already open */
        }
        if (!sp_paths_stable(path)) {
            /* Checked with one answer of its __fspath__, written with
             * another: refused whatever it answers. */
            PyObject *detail = PyUnicode_FromString(
                " (a path object of the sandbox's own class: its __fspath__ "
                "could name another file to the write; pass a str or "
                "pathlib.Path)");
            if (detail == NULL) {
                return -1;
            }
            int rc = hook_deny(run, rule, event, args, path, detail);
            Py_DECREF(detail);
            if (rc < 0) {
                return -1;
            }
            reported = 1;
            continue;
        }
        int dir_fd = -1;
        PyObject *fd_obj = hook_arg(args, rule->dirfd_arg[k]);
        if (fd_obj != NULL && PyLong_Check(fd_obj)) {
            long fd = PyLong_AsLong(fd_obj);
            if (fd == -1 && PyErr_Occurred()) {
                return -1;
            }
            dir_fd = fd >= 0 && fd <= INT_MAX ? (int)fd : -1;
        }
        int path_flags = rule->path_flags;
        if (rule->kind == SP_RULE_OPEN) {
            long oflags = hook_open_flags(args);
#ifdef O_TMPFILE
            if (oflags >= 0 && (oflags & O_TMPFILE) == O_TMPFILE) {
                /* An unnamed file in that directory (tempfile's
                 * TemporaryFile): the directory may be an ok_dest. */
                path_flags |= SP_PATH_SELF;
            }
            else
#endif
            {
                /* open(dir, 'w', opener=...) (tempfile's NamedTemporaryFile):
                 * a directory cannot be opened for writing, so the open
                 * writes nothing; the opener's own open is audited. */
                int is_dir = sp_paths_is_dir(path, dir_fd);
                if (is_dir != 0) {
                    if (is_dir < 0) {
                        return -1;
                    }
                    continue;
                }
            }
        }
        PyObject *resolved = NULL;
        int ok = sp_paths_check_write(path, dir_fd, path_flags,
                                      run->ok_dests, &resolved);
        if (ok < 0) {
            return -1;
        }
        judged = 1;
        if (ok == 0) {
            /* A library's first import creating its caches. */
            int lib = sp_libcache_allows(run, resolved,
                                         strcmp(event, "os.mkdir") == 0);
            if (lib != 0) {
                Py_DECREF(resolved);
                if (lib < 0) {
                    return -1;
                }
                continue;
            }
            PyObject *detail = hook_write_detail(run->ok_dests, path, resolved);
            Py_DECREF(resolved);
            if (detail == NULL) {
                return -1;
            }
            int rc = hook_deny(run, rule, event, args, path, detail);
            Py_DECREF(detail);
            if (rc < 0) {
                return -1;
            }
            reported = 1;
            continue; /* trusted: check the other path too */
        }
        Py_DECREF(resolved);
    }
    if (judged && !reported) {
        /* Inside ok_dests: allowed by the policy itself. */
        sp_report_event(run, event, args, hook_short_repr, "allowed", NULL);
    }
    return 1;
}

/* Environment names whose change would redirect programs, libraries, the
 * interpreter or the sandbox's own configuration. */
static int
hook_env_sensitive(PyObject *key)
{
    static const char *const exact[] = {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TEMP", "TMP",
        "IFS", "ENV", "BASH_ENV", "CDPATH", "PS4", "EDITOR", "VISUAL",
        "PAGER", "BROWSER", "SSL_CERT_FILE", "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY",
        "ALL_PROXY", "NO_PROXY", "FTP_PROXY", "VIRTUAL_ENV", "MPLCONFIGDIR",
        NULL};
    static const char *const prefixes[] = {
        "LD_", "DYLD_", "PYTHON", "PIP_", "UV_", "CONDA", "XDG_", "GIT_",
        "SAFEPYRUN", "MALLOC", "GCONV_", "NLSPATH", "LOCPATH", NULL};
    PyObject *str = NULL;
    int res = 1; /* undecodable or odd names count as sensitive */
    if (PyUnicode_Check(key)) {
        str = PyUnicode_FromObject(key); /* a subclass's methods never run */
    }
    else if (PyBytes_Check(key)) {
        str = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(key));
    }
    if (str == NULL) {
        PyErr_Clear();
        return 1;
    }
    PyObject *upper = PyObject_CallMethod(str, "upper", NULL);
    const char *name = upper != NULL ? PyUnicode_AsUTF8(upper) : NULL;
    if (name == NULL) {
        PyErr_Clear();
        goto done;
    }
    res = 0;
    for (int i = 0; exact[i] != NULL && !res; i++) {
        res = strcmp(name, exact[i]) == 0;
    }
    for (int i = 0; prefixes[i] != NULL && !res; i++) {
        res = strncmp(name, prefixes[i], strlen(prefixes[i])) == 0;
    }
done:
    Py_XDECREF(upper);
    Py_DECREF(str);
    return res;
}

/* object.__setattr__/__delattr__: (obj, name[, value]).  Refused when a
 * cell swaps a function's code (the object identity that trust is keyed
 * on would then run the cell's code), changes a trusted function's
 * defaults, or changes a class of the sandbox's own package. */
static int
hook_setattr_tampers(PyObject *args)
{
    PyObject *obj = hook_arg(args, 0), *name = hook_arg(args, 1);
    if (obj == NULL || name == NULL || !PyUnicode_Check(name)) {
        return 0;
    }
    if (PyFunction_Check(obj) &&
        PyUnicode_CompareWithASCIIString(name, "__code__") == 0) {
        return 1;
    }
    /* A trusted function's defaults are part of what it does: it would
     * run with the cell's arguments under its trust. */
    if (PyFunction_Check(obj) &&
        (PyUnicode_CompareWithASCIIString(name, "__defaults__") == 0 ||
         PyUnicode_CompareWithASCIIString(name, "__kwdefaults__") == 0)) {
        PyObject *grants = sp_registry_code_grants(PyFunction_GET_CODE(obj));
        Py_XDECREF(grants);
        if (grants != NULL) {
            return 1;
        }
    }
    if (PyType_Check(obj)) {
        PyObject *dict = sp_type_dict((PyTypeObject *)obj);
        PyObject *mod = NULL; /* owned */
        if (dict == NULL || sp_dict_get_ref_str(dict, "__module__", &mod) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(dict);
        int ours = mod != NULL && PyUnicode_Check(mod) &&
            PyUnicode_Tailmatch(mod, hook_global->package_name, 0, 9, -1) == 1;
        Py_XDECREF(mod);
        if (ours) {
            return 1;
        }
    }
    return 0;
}

/* Whether asyncio.to_thread is running in this frame stack: it starts the
 * default executor's worker, whose work runs in a copy of the caller's
 * context and so stays gated.  1 yes, 0 no, -1 error. */
static int
hook_in_to_thread(void)
{
    if (hook_global->to_thread_code == NULL) {
        return 0;
    }
    int found = 0;
    sp_walk w;
    sp_walk_start(&w);
    while (!found && sp_walk_next(&w) != NULL) {
        found = (PyObject *)w.code == hook_global->to_thread_code;
    }
    sp_walk_stop(&w);
    return PyErr_Occurred() ? -1 : found;
}

/* exec/eval of a code object, or FunctionType(code, globals), inside a
 * run: the code becomes cell code of the run, by identity, so that it
 * stays gated and the trusted-call search stops at it, whatever its file
 * name or module globals say.  A trusted function's code may not be
 * rewrapped (its grants are keyed on the code: FunctionType(trusted.
 * __code__, cell_globals) would run it with the cell's names); the import
 * system executing a module's code is the library's own.  0 allow, -1
 * refused or error. */
static int
hook_judge_code(SpRun *run, const sp_rule *rule, const char *event,
                PyObject *args)
{
    PyObject *code = hook_arg(args, 0);
    if (code == NULL || !PyCode_Check(code) ||
        sp_gate_is_cell_code((PyCodeObject *)code) || sp_gate_exec_is_import()) {
        return 0;
    }
    PyObject *grants = sp_registry_code_grants(code);
    if (grants != NULL) {
        Py_DECREF(grants);
        PyObject *name = PyObject_GetAttrString(code, "co_qualname");
        if (name == NULL) {
            return -1;
        }
        int rc = hook_deny(run, rule, event, args, name, NULL);
        Py_DECREF(name);
        return rc;
    }
    return sp_gate_register_codes(code, run);
}

/* 'sqlite3.connect' / 'sqlite3.attach': the files the name writes, read
 * as a plain name and as a URI when it is not known which (sqlite.c); the
 * connect guard's own open is judged already.  0 allow, -1 refused. */
static int
hook_judge_sqlite(SpRun *run, const sp_rule *rule, const char *event,
                  PyObject *args)
{
    PyObject *database = hook_arg(args, 0);
    if (database == NULL || sp_sqlite_is_prejudged(database) ||
        run->ok_dests == Py_None) {
        return 0;
    }
    PyObject *targets = NULL;
    if (sp_paths_stable(database)) {
        targets = sp_sqlite_write_targets(database, SP_SQLITE_EITHER);
        if (targets == NULL) {
            return -1;
        }
    }
    else {
        targets = PyList_New(1); /* judged as is: refused below */
        if (targets == NULL) {
            return -1;
        }
        PyList_SET_ITEM(targets, 0, Py_NewRef(database));
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(targets) && rc == 0; i++) {
        PyObject *one = PyTuple_Pack(1, PyList_GET_ITEM(targets, i));
        rc = one == NULL ? -1 : hook_judge_write(run, rule, event, one);
        rc = rc < 0 ? -1 : 0;
        Py_XDECREF(one);
    }
    Py_DECREF(targets);
    return rc;
}

/* 'sqlite3.connect/handle' inside a run: a connection not opened by the
 * connect guard would have no ATTACH authorizer (sqlite.c): refused. */
static int
hook_sqlite_handle(SpRun *run, const sp_rule *rule, const char *event,
                   PyObject *args)
{
    if (sp_sqlite_in_guard() || run->ok_dests == Py_None) {
        return 0;
    }
    return hook_deny(run, rule, event, args, NULL, NULL);
}

/* The slow path: an event that may be refused, inside a gated run.
 * Returns 0 to allow, -1 with an exception to refuse. */
static int
hook_judge(SpRun *run, const sp_rule *rule, const char *event,
           PyObject *args)
{
    PyObject *shown = rule != NULL ? hook_arg(args, rule->show_arg) : args;
    if (rule == NULL) {
        return hook_deny(run, rule, event, args, args, NULL);
    }
    switch ((sp_rule_kind)rule->kind) {
    case SP_RULE_ALLOW:
        return 0;
    case SP_RULE_WRITE:
    case SP_RULE_OPEN:
        return hook_judge_write(run, rule, event, args) < 0 ? -1 : 0;
    case SP_RULE_ENV:
        if (shown == NULL || !hook_env_sensitive(shown)) {
            return 0;
        }
        break;
    case SP_RULE_SETATTR:
        if (!hook_setattr_tampers(args)) {
            return 0;
        }
        break;
    case SP_RULE_DLOPEN:
        if (shown == Py_None) {
            return 0;
        }
        break;
    case SP_RULE_THREAD: {
        if (sp_threads_in_default_submit()) {
            return 0; /* asyncio's worker, for work that stays gated */
        }
        int in_to_thread = hook_in_to_thread();
        if (in_to_thread != 0) {
            return in_to_thread < 0 ? -1 : 0;
        }
        /* A library's first import starting a helper thread: the thread
         * runs under this run's gate. */
        int in_import = sp_libcache_in_import(run);
        if (in_import > 0) {
            PyObject *fn = hook_arg(args, 0);
            in_import = fn == NULL ? 0 : sp_threads_adopt(run, fn);
        }
        if (in_import != 0) {
            return in_import < 0 ? -1 : 0;
        }
        break;
    }
    case SP_RULE_CODE:
        return hook_judge_code(run, rule, event, args);
    case SP_RULE_SQLITE:
        return hook_judge_sqlite(run, rule, event, args);
    case SP_RULE_SQLITE_HANDLE:
        return hook_sqlite_handle(run, rule, event, args);
    case SP_RULE_DENY:
        break;
    }
    return hook_deny(run, rule, event, args, shown, NULL);
}

static int
hook_audit(const char *event, PyObject *args, void *user_data)
{
    (void)user_data;
    assert(args == NULL || PyTuple_Check(args));
    const sp_rule *rule = sp_rules_lookup(event);
    if (rule != NULL) {
        if (rule->kind == SP_RULE_ALLOW) {
            return 0;
        }
        if (rule->kind == SP_RULE_OPEN && !hook_open_writes(args)) {
            return 0;
        }
    }
    if (sp_gate_in_engine()) {
        return 0; /* the engine's own call (gate.h) */
    }
    /* The gate: the run in this context, or the policy of cell code on
     * the stack (code a cell made, running later or in another context). */
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    if (active <= 0) {
        return active;
    }
    int verdict = hook_judge(run, rule, event, args);
    Py_DECREF(run);
    return verdict;
}

int
sp_hook_before_run(void)
{
    if (hook_global->to_thread_code != NULL) {
        return 0;
    }
    if (sp_sqlite_before_run() < 0) {
        return -1;
    }
    if (sp_threads_before_run() < 0) {
        return -1;
    }
    PyObject *mod = PyImport_ImportModule("asyncio.threads");
    if (mod == NULL) {
        return -1;
    }
    PyObject *fn = PyObject_GetAttrString(mod, "to_thread");
    Py_DECREF(mod);
    if (fn == NULL) {
        return -1;
    }
    if (PyFunction_Check(fn)) {
        hook_global->to_thread_code = Py_NewRef(PyFunction_GetCode(fn));
    }
    Py_DECREF(fn);
    return 0;
}

int
sp_hook_init(PyObject *module)
{
    if (hook_global->installed) {
        return 0;
    }
    hook_global->package_name = PyUnicode_InternFromString("safepyrun");
    if (hook_global->package_name == NULL) {
        return -1;
    }
    (void)module;
    if (PySys_AddAuditHook(hook_audit, NULL) < 0) {
        return -1;
    }
    hook_global->installed = 1;
    return 0;
}
