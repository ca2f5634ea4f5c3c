/* sqlite.c - which files a sqlite3 database open writes.
 *
 * sqlite3.connect raises the 'sqlite3.connect' audit event with the
 * database name as given.  What file that opens depends on more than the
 * name: ':memory:' and '' open none, and with uri=True a "file:" name is a
 * URI whose path is percent-encoded and whose query may say mode=ro (a
 * read, allowed like any read), mode=memory or vfs=memdb (no file) or
 * mode=rwc (a write of the URI's path, not of the literal name).  The
 * event does not say whether uri=True was passed.  And a connection can
 * open further files with ATTACH or VACUUM INTO, with no audit event.
 *
 * So:
 *   - sp_sqlite_write_targets turns a name into the paths a write check
 *     must pass, for a known reading or for either (both must pass);
 *   - the guard that replaces sqlite3.connect (installed before the first
 *     cell runs) reads `uri`, judges the exact targets by raising the
 *     'sqlite3.connect' event with each, and calls the real connect with an
 *     exact copy of the name (so a path-like object's __fspath__ cannot
 *     answer the check and the open differently) that the hook recognises
 *     as already judged;
 *   - the guard sets an authorizer on every connection it opens inside a
 *     run (through the base class's set_authorizer, not the connection's
 *     own attribute), which raises the 'sqlite3.attach' event for the file
 *     of each ATTACH and VACUUM INTO, judged like a connect;
 *   - any other way to open a connection inside a run
 *     (sqlite3.Connection(...), a copy of the real connect the host kept)
 *     has its name judged by the hook both ways, and is then refused: it
 *     would have no authorizer (the connection cannot take one before its
 *     __init__ has finished, which is after its last audit event).
 *
 * State: the engine state's sqlite part (state.h), written once by
 * sp_sqlite_before_run; the per-thread "already judged" name below.
 */
#include "sqlite.h"

#include "gate.h"
#include "paths.h"
#include "state.h"

#include <string.h>
#include <strings.h>

/* This file's part of the engine state (state.h). */
static struct sp_sqlite_state *const sqlite_state = &sp_state.sqlite;

/* The exact name the guard passes to the real connect right now, on this
 * thread (compared only; the guard holds it). */
static _Thread_local PyObject *sqlite_prejudged;

/* SQLite's authorizer codes (sqlite3.h; stable). */
#define SQLITE_OK_CODE 0
#define SQLITE_DENY_CODE 1
#define SQLITE_ATTACH_CODE 24

/* ---- naming ----------------------------------------------------------------- */

static int
sqlite_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decode s[0:n] as SQLite does, to a str (the bytes are a file
 * name: decoded with the file system encoding).  New reference or NULL. */
static PyObject *
sqlite_unescape(const char *s, Py_ssize_t n)
{
    char *buf = PyMem_Malloc((size_t)n + 1);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = sqlite_hex(s[i + 1])) >= 0 &&
            (lo = sqlite_hex(s[i + 2])) >= 0) {
            buf[j++] = (char)(hi * 16 + lo);
            i += 2;
        }
        else {
            buf[j++] = s[i];
        }
    }
    PyObject *res = PyUnicode_DecodeFSDefaultAndSize(buf, j);
    PyMem_Free(buf);
    return res;
}

/* Whether query parameter `key` of the query q[0:n] equals `value`
 * (after percent-decoding, as SQLite compares them). */
static int
sqlite_query_is(const char *q, Py_ssize_t n, const char *key, const char *value)
{
    Py_ssize_t i = 0, klen = (Py_ssize_t)strlen(key);
    while (i < n) {
        Py_ssize_t end = i;
        while (end < n && q[end] != '&') {
            end++;
        }
        const char *eq = memchr(q + i, '=', (size_t)(end - i));
        if (eq != NULL && eq - (q + i) == klen && memcmp(q + i, key, klen) == 0) {
            PyObject *v = sqlite_unescape(eq + 1, q + end - (eq + 1));
            if (v == NULL) {
                PyErr_Clear();
                return 0;
            }
            int same = PyUnicode_CompareWithASCIIString(v, value) == 0;
            Py_DECREF(v);
            if (same) {
                return 1;
            }
        }
        i = end + 1;
    }
    return 0;
}

/* Add the file a plain (non-URI) name writes to `out`.  0 / -1. */
static int
sqlite_plain_target(PyObject *name, PyObject *out)
{
    if (PyUnicode_GET_LENGTH(name) == 0 ||
        PyUnicode_CompareWithASCIIString(name, ":memory:") == 0) {
        return 0; /* no file, or a temporary one of SQLite's own */
    }
    return PyList_Append(out, name);
}

/* Add the file a "file:" URI writes to `out`.  0 / -1. */
static int
sqlite_uri_target(const char *s, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 5; /* after "file:" */
    if (n - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
        i += 2; /* an authority: "" or "localhost" opens, anything else
                   fails; either way the path starts at the next '/' */
        while (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#') {
            i++;
        }
    }
    Py_ssize_t path_end = i;
    while (path_end < n && s[path_end] != '?' && s[path_end] != '#') {
        path_end++;
    }
    Py_ssize_t q = path_end < n && s[path_end] == '?' ? path_end + 1 : path_end;
    Py_ssize_t q_end = q;
    while (q_end < n && s[q_end] != '#') {
        q_end++;
    }
    const char *query = s + q;
    Py_ssize_t qn = q_end - q;
    if (sqlite_query_is(query, qn, "mode", "ro") ||
        sqlite_query_is(query, qn, "mode", "memory") ||
        sqlite_query_is(query, qn, "vfs", "memdb")) {
        return 0; /* a read, or no file */
    }
    PyObject *path = sqlite_unescape(s + i, path_end - i);
    if (path == NULL) {
        return -1;
    }
    int rc = sqlite_plain_target(path, out);
    Py_DECREF(path);
    return rc;
}

PyObject *
sp_sqlite_write_targets(PyObject *database, sp_sqlite_naming naming)
{
    PyObject *name = NULL, *out = NULL; /* owned */
    name = sp_paths_text(database);
    out = name == NULL ? NULL : PyList_New(0);
    if (out == NULL) {
        goto error;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    int is_uri = s != NULL && n >= 5 && strncasecmp(s, "file:", 5) == 0;
    if (s == NULL) {
        PyErr_Clear(); /* not UTF-8 (lone surrogates): a plain name */
    }
    if ((naming != SP_SQLITE_URI || !is_uri) && sqlite_plain_target(name, out) < 0) {
        goto error;
    }
    if (naming != SP_SQLITE_PLAIN && is_uri && sqlite_uri_target(s, n, out) < 0) {
        goto error;
    }
    Py_DECREF(name);
    return out;
error:
    Py_XDECREF(name);
    Py_XDECREF(out);
    return NULL;
}

int
sp_sqlite_is_prejudged(PyObject *database)
{
    return database != NULL && database == sqlite_prejudged;
}

int
sp_sqlite_in_guard(void)
{
    return sqlite_prejudged != NULL;
}

/* ---- the authorizer ------------------------------------------------------ */

/* authorizer(action, arg1, arg2, db_name, trigger) -> SQLITE_OK / DENY.
 * ATTACH (VACUUM INTO attaches its target too) raises 'sqlite3.attach'
 * with the file name; a refusal denies the statement. */
static PyObject *
sqlite_authorize(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs < 2 || !PyLong_Check(args[0]) ||
        PyLong_AsLong(args[0]) != SQLITE_ATTACH_CODE || args[1] == Py_None) {
        PyErr_Clear();
        return PyLong_FromLong(SQLITE_OK_CODE);
    }
    if (PySys_Audit("sqlite3.attach", "O", args[1]) < 0) {
        /* sqlite3 turns an exception here into "not authorized" anyway;
         * the refusal is in the run's record and printed as unraisable. */
        PyErr_WriteUnraisable(args[1]);
        return PyLong_FromLong(SQLITE_DENY_CODE);
    }
    return PyLong_FromLong(SQLITE_OK_CODE);
}

static PyMethodDef sqlite_authorize_def = {
    "safepyrun_sqlite_authorizer", (PyCFunction)(void (*)(void))sqlite_authorize,
    METH_FASTCALL, "safepyrun: judges the files ATTACH and VACUUM INTO open."};

/* ---- the connect guard --------------------------------------------------- */

/* connect's parameters by position (3.11-3.13): database is 0, uri 7. */
#define SQLITE_ARG_DATABASE 0
#define SQLITE_ARG_URI 7

/* An exact str or bytes copy of a database name: one answer from a
 * path-like object's __fspath__, kept for the check and the open.  New
 * reference or NULL. */
static PyObject *
sqlite_exact_name(PyObject *database)
{
    PyObject *fs = PyOS_FSPath(database);
    if (fs == NULL || PyUnicode_CheckExact(fs) || PyBytes_CheckExact(fs)) {
        return fs;
    }
    PyObject *exact = PyUnicode_Check(fs)
        ? PyUnicode_FromObject(fs)
        : PyBytes_FromStringAndSize(PyBytes_AS_STRING(fs), PyBytes_GET_SIZE(fs));
    Py_DECREF(fs);
    return exact;
}

static PyObject *
sqlite_guarded_connect(PyObject *self, PyObject *const *args, size_t nargsf,
                       PyObject *kwnames)
{
    (void)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    SpRun *run = NULL;
    int active = sp_gate_run(&run);
    Py_XDECREF(run);
    if (active <= 0) {
        return active < 0 ? NULL : PyObject_Vectorcall(sqlite_state->connect, args,
                                                       nargsf, kwnames);
    }
    /* Where database and uri are in this call. */
    Py_ssize_t db_at = nargs > SQLITE_ARG_DATABASE ? SQLITE_ARG_DATABASE : -1;
    Py_ssize_t uri_at = nargs > SQLITE_ARG_URI ? SQLITE_ARG_URI : -1;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        if (PyUnicode_CompareWithASCIIString(key, "database") == 0) {
            db_at = nargs + k;
        }
        else if (PyUnicode_CompareWithASCIIString(key, "uri") == 0) {
            uri_at = nargs + k;
        }
    }
    if (db_at < 0) {
        return PyObject_Vectorcall(sqlite_state->connect, args, nargsf, kwnames);
    }
    int uri = uri_at >= 0 ? PyObject_IsTrue(args[uri_at]) : 0; /* asked once */
    if (uri < 0) {
        return NULL;
    }
    PyObject *name = NULL, *targets = NULL, *res = NULL; /* owned */
    PyObject **stack = NULL;                              /* PyMem */
    name = sqlite_exact_name(args[db_at]);
    targets = name == NULL ? NULL
        : sp_sqlite_write_targets(name, uri ? SP_SQLITE_URI : SP_SQLITE_PLAIN);
    if (targets == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(targets); i++) {
        if (PySys_Audit("sqlite3.connect", "O", PyList_GET_ITEM(targets, i)) < 0) {
            goto done;
        }
    }
    stack = PyMem_New(PyObject *, nargs + nkw);
    if (stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(stack, args, sizeof(PyObject *) * (size_t)(nargs + nkw));
    stack[db_at] = name;
    if (uri_at >= 0) {
        stack[uri_at] = uri ? Py_True : Py_False;
    }
    PyObject *saved = sqlite_prejudged;
    sqlite_prejudged = name;
    res = PyObject_Vectorcall(sqlite_state->connect, stack, nargs, kwnames);
    sqlite_prejudged = saved;
    /* ATTACH and VACUUM INTO open files with no audit event: the
     * authorizer judges them.  Set through the base class: a factory
     * subclass's set_authorizer would be the cell's. */
    if (res != NULL &&
        PyObject_TypeCheck(res, (PyTypeObject *)sqlite_state->conn_type)) {
        PyObject *r = PyObject_CallFunctionObjArgs(sqlite_state->set_authorizer,
                                                   res, sqlite_state->authorizer,
                                                   NULL);
        if (r == NULL) {
            Py_CLEAR(res);
        }
        Py_XDECREF(r);
    }
done:
    PyMem_Free(stack);
    Py_XDECREF(name);
    Py_XDECREF(targets);
    return res;
}

static PyMethodDef sqlite_connect_def = {
    "connect", (PyCFunction)(void (*)(void))sqlite_guarded_connect,
    METH_FASTCALL | METH_KEYWORDS,
    "connect(database, ...) -- open a sqlite3 database (the file it writes "
    "is checked against ok_dests inside a safepyrun run)."};

/* Replace `attr` of the module named `modname`, if loaded and still the
 * real function, by the guard.  0 / -1. */
static int
sqlite_patch(const char *modname, PyObject *guard)
{
    PyObject *name = PyUnicode_FromString(modname);
    PyObject *mod = name == NULL ? NULL : PyImport_GetModule(name);
    Py_XDECREF(name);
    if (mod == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *cur = PyObject_GetAttrString(mod, "connect");
    int rc = 0;
    if (cur == NULL) {
        PyErr_Clear();
    }
    else if (cur == sqlite_state->connect) {
        rc = PyObject_SetAttrString(mod, "connect", guard);
    }
    Py_XDECREF(cur);
    Py_DECREF(mod);
    return rc;
}

int
sp_sqlite_before_run(void)
{
    if (sqlite_state->installed) {
        return 0;
    }
    sqlite_state->installed = 1; /* once, whatever happens below */
    PyObject *mod = PyImport_ImportModule("_sqlite3");
    if (mod == NULL) {
        PyErr_Clear(); /* built without sqlite3: nothing to guard */
        return 0;
    }
    PyObject *guard = NULL; /* owned */
    int rc = -1;
    sqlite_state->connect = PyObject_GetAttrString(mod, "connect");
    sqlite_state->conn_type = PyObject_GetAttrString(mod, "Connection");
    sqlite_state->set_authorizer = sqlite_state->conn_type == NULL ? NULL
        : PyObject_GetAttrString(sqlite_state->conn_type, "set_authorizer");
    sqlite_state->authorizer = PyCFunction_New(&sqlite_authorize_def, NULL);
    guard = PyCFunction_New(&sqlite_connect_def, NULL);
    if (sqlite_state->connect == NULL || sqlite_state->set_authorizer == NULL ||
        !PyType_Check(sqlite_state->conn_type) ||
        sqlite_state->authorizer == NULL || guard == NULL) {
        goto done;
    }
    /* _sqlite3 first: sqlite3.dbapi2 binds its names from it at import. */
    if (sqlite_patch("_sqlite3", guard) < 0 ||
        sqlite_patch("sqlite3.dbapi2", guard) < 0 ||
        sqlite_patch("sqlite3", guard) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(mod);
    Py_XDECREF(guard);
    return rc;
}
