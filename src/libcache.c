/* libcache.c - a library's first import may create its own caches (see
 * libcache.h for the rule and why each part of it is there). */
#include "libcache.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "gate.h"
#include "paths.h"
#include "state.h"

extern char **environ;

static struct sp_libcache_state *const lib = &sp_state.libcache;

/* A module's source larger than this is not verified (and its writes stay
 * refused): no library's module body is near it. */
#define LIB_MAX_SOURCE (32 << 20)
/* Temporary directories remembered as created by imports. */
#define LIB_MAX_CREATED 256
/* Module codes remembered as verified (held: a few module bodies). */
#define LIB_MAX_VERIFIED 1024

/* The bytes of the regular file `path`, read in C: no audit event, no
 * Python code.  New reference, or NULL without an exception when the file
 * is not a readable regular file of a sane size. */
static PyObject *
lib_read_source(const char *path)
{
    PyObject *data = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size > LIB_MAX_SOURCE) {
        goto done;
    }
    data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)st.st_size);
    if (data == NULL) {
        PyErr_Clear();
        goto done;
    }
    size_t n = fread(PyBytes_AS_STRING(data), 1, (size_t)st.st_size, f);
    if (n != (size_t)st.st_size) {
        Py_CLEAR(data); /* changed under us: not verified */
    }
done:
    fclose(f);
    return data;
}

/* Whether a code object equal to `code` was verified before: equality is
 * what the verification establishes.  1 / 0 / -1. */
static int
lib_is_verified(PyCodeObject *code)
{
    return PySet_Contains(lib->verified, (PyObject *)code);
}

static void
lib_remember_verified(PyCodeObject *code)
{
    if (PySet_GET_SIZE(lib->verified) >= LIB_MAX_VERIFIED) {
        PySet_Clear(lib->verified);
    }
    if (PySet_Add(lib->verified, (PyObject *)code) < 0) {
        PyErr_Clear(); /* only a cache */
    }
}

/* Whether `path` (an absolute str) lies inside one of `roots` (a tuple of
 * str, possibly empty).  1 / 0 / -1. */
static int
lib_inside(PyObject *path, PyObject *roots)
{
    if (PyTuple_GET_SIZE(roots) == 0) {
        return 0;
    }
    return sp_paths_check_write(path, -1, 0, roots, NULL);
}

/* Whether the module body `code` is exactly the code of a regular file
 * outside the run's ok_dests: a fresh compile of the file its co_filename
 * names compares equal.  1 / 0 / -1. */
static int
lib_code_is_library_file(SpRun *run, PyCodeObject *code)
{
    int verified = lib_is_verified(code);
    if (verified != 0) {
        return verified;
    }
    PyObject *filename = code->co_filename; /* borrowed */
    if (!PyUnicode_CheckExact(filename) || PyUnicode_GET_LENGTH(filename) == 0 ||
        PyUnicode_READ_CHAR(filename, 0) != '/') {
        return 0;
    }
    int result = 0;
    PyObject *resolved = NULL, *source = NULL, *fresh = NULL;
    resolved = sp_paths_resolve(filename, -1, 1);
    if (resolved == NULL) {
        PyErr_Clear();
        return 0;
    }
    const char *real = PyUnicode_AsUTF8(resolved);
    if (real == NULL) {
        result = -1;
        goto done;
    }
    if (strncmp(real, "/proc/", 6) == 0 || strncmp(real, "/dev/", 5) == 0) {
        goto done;
    }
    if (run->ok_dests != Py_None) {
        /* A file a cell could have written is not the library's. */
        int inside = lib_inside(resolved, run->ok_dests);
        if (inside != 0) {
            result = inside < 0 ? -1 : 0;
            goto done;
        }
    }
    source = lib_read_source(real);
    if (source == NULL) {
        goto done;
    }
    /* The import system compiles with dont_inherit and the interpreter's
     * optimisation level; so does this.  The compile's audit event is the
     * engine's own. */
    sp_gate_engine_begin();
    fresh = PyObject_CallFunction(lib->compile, "OOsii", source, filename,
                                  "exec", 0, 1);
    sp_gate_engine_end();
    if (fresh == NULL) {
        PyErr_Clear(); /* not compilable now: not verified */
        goto done;
    }
    result = PyObject_RichCompareBool(fresh, (PyObject *)code, Py_EQ);
    if (result > 0) {
        lib_remember_verified(code);
    }
done:
    Py_XDECREF(resolved);
    Py_XDECREF(source);
    Py_XDECREF(fresh);
    return result;
}

/* Whether environment variable `name` (its length `len`) names a cache or
 * config directory of a library.  The tool caches whose contents later
 * become code (pip's and uv's wheels, compiler caches, Python's own
 * bytecode prefix) and the XDG roots (handled per package) are not. */
static int
lib_env_names_cache(const char *name, size_t len)
{
    static const char *const excluded[] = {
        "PIP_", "UV_", "PYTHON", "CCACHE", "SCCACHE", "XDG_", "CONDA",
        "POETRY", "PIPENV", "HATCH", "PDM", "CARGO", "RUSTUP", "GO",
        "NPM", "YARN", "MAVEN", "GRADLE", NULL,
    };
    for (int i = 0; excluded[i] != NULL; i++) {
        if (strncmp(name, excluded[i], strlen(excluded[i])) == 0) {
            return 0;
        }
    }
    for (size_t i = 0; i + 5 <= len; i++) {
        if (memcmp(name + i, "CACHE", 5) == 0) {
            return 1;
        }
    }
    return (len >= 9 && memcmp(name + len - 9, "CONFIGDIR", 9) == 0) ||
           (len >= 10 && memcmp(name + len - 10, "CONFIG_DIR", 10) == 0);
}

/* Append `dir` (C string) to `roots` when it is an absolute directory path
 * other than "/" and $HOME.  0 / -1. */
static int
lib_add_root(PyObject *roots, const char *dir, const char *home)
{
    if (dir == NULL || dir[0] != '/' || dir[1] == '\0' ||
        (home != NULL && strcmp(dir, home) == 0)) {
        return 0;
    }
    PyObject *s = PyUnicode_DecodeFSDefault(dir);
    if (s == NULL) {
        PyErr_Clear();
        return 0;
    }
    int rc = PyList_Append(roots, s);
    Py_DECREF(s);
    return rc;
}

/* The directories inside which the library `pkg` (its top-level name, an
 * identifier) may write while its import runs.  New tuple or NULL. */
static PyObject *
lib_roots(PyObject *pkg)
{
    PyObject *roots = PyList_New(0);
    if (roots == NULL) {
        return NULL;
    }
    const char *home = getenv("HOME");
    const char *pkg_s = PyUnicode_AsUTF8(pkg);
    if (pkg_s == NULL) {
        goto error;
    }
    /* The per-user cache directory of this package. */
    const char *xdg = getenv("XDG_CACHE_HOME");
    char buf[4096];
    int n = -1;
    if (xdg != NULL && xdg[0] == '/') {
        n = snprintf(buf, sizeof buf, "%s/%s", xdg, pkg_s);
    }
    else if (home != NULL && home[0] == '/') {
        n = snprintf(buf, sizeof buf, "%s/.cache/%s", home, pkg_s);
    }
    if (n > 0 && (size_t)n < sizeof buf && lib_add_root(roots, buf, home) < 0) {
        goto error;
    }
    /* Cache and config directories the host's environment names. */
    for (char **env = environ; env != NULL && *env != NULL; env++) {
        const char *eq = strchr(*env, '=');
        if (eq == NULL || !lib_env_names_cache(*env, (size_t)(eq - *env))) {
            continue;
        }
        if (lib_add_root(roots, eq + 1, home) < 0) {
            goto error;
        }
    }
    /* Temporary directories an import created. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lib->created); i++) {
        if (PyList_Append(roots, PyList_GET_ITEM(lib->created, i)) < 0) {
            goto error;
        }
    }
    PyObject *tuple = PyList_AsTuple(roots);
    Py_DECREF(roots);
    return tuple;
error:
    Py_DECREF(roots);
    return NULL;
}

/* A directory an import is about to create directly inside a temporary
 * directory root (tempfile.mkdtemp): remembered, when it does not exist
 * yet, so that the import may fill it. */
static int
lib_note_created(PyObject *resolved)
{
    const char *path = PyUnicode_AsUTF8(resolved);
    if (path == NULL) {
        return -1;
    }
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash == path || slash[1] == '\0') {
        return 0;
    }
    size_t parent_len = (size_t)(slash - path);
    const char *tmpdir = getenv("TMPDIR");
    const char *temp_roots[] = {tmpdir, "/tmp", "/var/tmp", NULL};
    int in_temp = 0;
    for (int i = 0; i < 3 && !in_temp; i++) {
        const char *t = temp_roots[i];
        if (t == NULL || t[0] != '/') {
            continue;
        }
        size_t tl = strlen(t);
        while (tl > 1 && t[tl - 1] == '/') {
            tl--;
        }
        in_temp = tl == parent_len && strncmp(path, t, tl) == 0;
    }
    struct stat st;
    if (!in_temp || lstat(path, &st) == 0 || errno != ENOENT) {
        return 0; /* elsewhere, or it exists: the mkdir creates nothing */
    }
    if (PyList_GET_SIZE(lib->created) >= LIB_MAX_CREATED) {
        return 0;
    }
    return PyList_Append(lib->created, resolved);
}

/* The verified library module body being imported, as in the header.
 * 1 with *globals (new reference), 0 none, -1 error. */
static int
lib_import_body(SpRun *run, PyObject **globals)
{
    PyCodeObject *code = NULL;
    int result = sp_gate_import_body(globals, &code);
    if (result <= 0) {
        return result;
    }
    result = lib_code_is_library_file(run, code);
    Py_DECREF(code);
    if (result <= 0) {
        Py_CLEAR(*globals);
    }
    return result;
}

int
sp_libcache_in_import(SpRun *run)
{
    if (lib->compile == NULL) {
        return 0;
    }
    PyObject *globals = NULL;
    int result = lib_import_body(run, &globals);
    Py_XDECREF(globals);
    return result;
}

int
sp_libcache_allows(SpRun *run, PyObject *resolved, int is_mkdir)
{
    if (lib->compile == NULL || !PyUnicode_Check(resolved)) {
        return 0;
    }
    PyObject *globals = NULL, *name = NULL, *pkg = NULL, *roots = NULL;
    int result = lib_import_body(run, &globals);
    if (result <= 0) {
        return result;
    }
    if (is_mkdir) {
        /* Creating a directory destroys nothing. */
        result = lib_note_created(resolved) < 0 ? -1 : 1;
        goto done;
    }
    result = 0;
    if (!PyDict_Check(globals) ||
        sp_dict_get_ref_str(globals, "__name__", &name) <= 0 ||
        !PyUnicode_Check(name)) {
        PyErr_Clear();
        goto done;
    }
    Py_ssize_t dot = PyUnicode_FindChar(name, '.', 0,
                                        PyUnicode_GET_LENGTH(name), 1);
    pkg = dot >= 0 ? PyUnicode_Substring(name, 0, dot) : Py_NewRef(name);
    if (pkg == NULL) {
        result = -1;
        goto done;
    }
    if (!PyUnicode_IsIdentifier(pkg)) {
        goto done;
    }
    roots = lib_roots(pkg);
    result = roots == NULL ? -1 : lib_inside(resolved, roots);
done:
    Py_XDECREF(globals);
    Py_XDECREF(name);
    Py_XDECREF(pkg);
    Py_XDECREF(roots);
    return result;
}

int
sp_libcache_init(PyObject *module)
{
    (void)module;
    if (lib->compile != NULL) {
        return 0;
    }
    lib->verified = PySet_New(NULL);
    lib->created = PyList_New(0);
    if (lib->verified == NULL || lib->created == NULL) {
        return -1;
    }
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
    PyObject *compile = builtins == NULL ? NULL
                        : PyDict_GetItemString(builtins, "compile");
    if (compile == NULL) {
        PyErr_SetString(PyExc_ImportError, "safepyrun: no builtins.compile");
        return -1;
    }
    lib->compile = Py_NewRef(compile);
    return 0;
}
