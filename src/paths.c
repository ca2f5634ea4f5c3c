/* paths.c - write-destination checks: resolving paths and matching ok_dests.
 *
 * Owns: the path resolver (a physical, lstat/readlink walk in the manner of
 * os.path.realpath(strict=False)) and the "is this entry inside an ok_dest"
 * test.  No module state: every call allocates its own scratch buffers, so
 * the functions are re-entrant (PyOS_FSPath may run Python code that fires
 * the audit hook again).
 *
 * Invariants:
 * - Resolved paths are kept as bytes in fixed PATH_MAX+1 buffers, absolute,
 *   without a trailing '/', and the root is the EMPTY string; "/" appears
 *   only when a result is handed to Python.  So "E is strictly inside D" is
 *   just "D is a prefix of E and E continues with '/'", root included.
 * - The walk helpers set errno and return -1; they never touch Python.
 *   Their callers turn errno into an OSError naming the user's path.
 * - Anything longer than PATH_MAX is refused with ENAMETOOLONG rather than
 *   truncated: a shortened path could land inside an ok_dest.
 *
 * Threading: called with the GIL held, from the audit hook.  The check and
 * resolve paths run no Python code except PyOS_FSPath on the given path.
 * sp_paths_normalise_dests runs at set-up time and may run Python code
 * (entries' __fspath__, iterating a set subclass).
 */
#include "paths.h"

#include "gate.h"
#include "state.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATHS_BUF (PATH_MAX + 1)
/* Same limit as the kernel's (MAXSYMLINKS) for one path lookup. */
#define PATHS_MAX_LINKS 40

/* Scratch for one walk. */
typedef struct {
    char out[PATHS_BUF];  /* the resolved prefix (root = "") */
    size_t out_len;
    char rest[PATHS_BUF]; /* components still to walk */
    char link[PATHS_BUF]; /* readlink() target */
} paths_walk;

/* A whole check: the walk, the cwd (read once, so the entry and every
 * relative dest are taken against the same directory), and the entry and
 * followed target kept for comparing against each dest.  ~28 KiB, so it is
 * heap-allocated: the hook may run on a thread with a small stack. */
typedef struct {
    paths_walk w;
    char cwd[PATHS_BUF];
    size_t cwd_len;
    int have_cwd;
    char entry[PATHS_BUF];
    size_t entry_len;
    char target[PATHS_BUF];
    size_t target_len;
    int have_target;
} paths_state;

/* Store a path from the kernel (getcwd, /proc readlink) as a base: absolute
 * and "/" becomes "".  Returns 0, or -1 with errno. */
static int
paths_set_base(char *buf, size_t *len, ssize_t n)
{
    if (n <= 0 || buf[0] != '/') {
        /* Not a directory in the file tree (a pipe, socket...). */
        errno = ENOTDIR;
        return -1;
    }
    *len = (n == 1) ? 0 : (size_t)n;
    buf[*len] = '\0';
    return 0;
}

/* readlink("/proc/self/fd/N") into buf.  Returns the length or -1/errno.
 * A closed descriptor shows up as ENOENT; report it as EBADF, which is what
 * the operation itself would have failed with. */
static ssize_t
paths_read_fd(int fd, char *buf)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, buf, PATHS_BUF);
    if (n < 0) {
        if (errno == ENOENT) {
            errno = EBADF;
        }
        return -1;
    }
    if (n >= PATHS_BUF) {
        errno = ENAMETOOLONG;
        return -1;
    }
    buf[n] = '\0';
    return n;
}

/* The cwd, read at most once per state.  Returns 0, or -1 with errno. */
static int
paths_cwd(paths_state *st)
{
    if (st->have_cwd) {
        return 0;
    }
    if (getcwd(st->cwd, PATHS_BUF) == NULL) {
        return -1;
    }
    if (paths_set_base(st->cwd, &st->cwd_len, (ssize_t)strlen(st->cwd)) < 0) {
        return -1;
    }
    st->have_cwd = 1;
    return 0;
}

/* Resolve `path` (NUL-free, len <= PATH_MAX) into st->w.out.  Relative paths
 * start from dir_fd's directory, or the cwd when dir_fd < 0.  Every symlink
 * is followed except a final plain name when !follow_last; '..' drops the
 * last resolved component, so it is physical; a component that does not
 * exist is kept as written.  Returns 0, or -1 with errno. */
static int
paths_walk_path(paths_state *st, const char *path, size_t len, int dir_fd,
                int follow_last)
{
    paths_walk *w = &st->w;
    if (path[0] == '/') {
        w->out_len = 0;
    }
    else if (dir_fd >= 0) {
        ssize_t n = paths_read_fd(dir_fd, w->out);
        if (n < 0 || paths_set_base(w->out, &w->out_len, n) < 0) {
            return -1;
        }
    }
    else {
        if (paths_cwd(st) < 0) {
            return -1;
        }
        memcpy(w->out, st->cwd, st->cwd_len);
        w->out_len = st->cwd_len;
    }
    memcpy(w->rest, path, len);
    w->rest[len] = '\0';

    size_t pos = 0;
    int links = 0;
    for (;;) {
        while (w->rest[pos] == '/') {
            pos++;
        }
        if (w->rest[pos] == '\0') {
            break;
        }
        const char *name = w->rest + pos;
        size_t name_len = strcspn(name, "/");
        pos += name_len;
        /* Only the path's own last component can be last here: a symlink's
         * target is spliced in front of the rest, never after it. */
        int last = w->rest[pos] == '\0';
        if (name_len == 1 && name[0] == '.') {
            continue;
        }
        if (name_len == 2 && name[0] == '.' && name[1] == '.') {
            while (w->out_len > 0 && w->out[--w->out_len] != '/') {
            }
            continue;
        }
        size_t prev = w->out_len;
        if (prev + 1 + name_len > PATH_MAX) {
            errno = ENAMETOOLONG;
            return -1;
        }
        w->out[prev] = '/';
        memcpy(w->out + prev + 1, name, name_len);
        w->out_len = prev + 1 + name_len;
        w->out[w->out_len] = '\0';
        if (last && !follow_last) {
            break;
        }
        struct stat sb;
        if (lstat(w->out, &sb) < 0) {
            /* Only "does not exist" may be taken lexically: the kernel
             * will fail on it too.  Any other failure (EACCES,
             * ENAMETOOLONG...) could hide a symlink, so it is an error. */
            if (errno == ENOENT || errno == ENOTDIR) {
                continue;
            }
            return -1;
        }
        if (!S_ISLNK(sb.st_mode)) {
            continue;
        }
        if (++links > PATHS_MAX_LINKS) {
            errno = ELOOP;
            return -1;
        }
        ssize_t n = readlink(w->out, w->link, PATHS_BUF);
        if (n < 0) {
            return -1;
        }
        size_t tail = strlen(w->rest + pos);
        if (n >= PATHS_BUF || (size_t)n + tail > PATH_MAX) {
            errno = ENAMETOOLONG;
            return -1;
        }
        /* rest = target + the unwalked tail (which starts with '/' or is
         * empty), then walk it from the link's directory or the root. */
        memmove(w->rest + n, w->rest + pos, tail + 1);
        memcpy(w->rest, w->link, (size_t)n);
        pos = 0;
        w->out_len = (n > 0 && w->link[0] == '/') ? 0 : prev;
        w->out[w->out_len] = '\0';
    }
    w->out[w->out_len] = '\0';
    return 0;
}

/* A resolved buffer as a new str; the internal "" root is "/". */
static PyObject *
paths_decode(const char *buf, size_t len)
{
    if (len == 0) {
        return PyUnicode_FromString("/");
    }
    return PyUnicode_DecodeFSDefaultAndSize(buf, (Py_ssize_t)len);
}

/* Raise OSError from errno, naming the user's path. */
static void
paths_raise_errno(PyObject *filename)
{
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, filename);
}

/* Turn a path argument into bytes.  An int is a descriptor: *fd is set and
 * *bytes stays NULL.  Otherwise *bytes is a new reference to NUL-free
 * bytes of at most PATH_MAX.  Returns 0, or -1 with an exception. */
static int
paths_convert(PyObject *path, PyObject **bytes, int *fd)
{
    *bytes = NULL;
    *fd = -1;
    if (PyLong_Check(path)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(path, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow || v < 0 || v > INT_MAX) {
            errno = EBADF;
            paths_raise_errno(path);
            return -1;
        }
        *fd = (int)v;
        return 0;
    }
    PyObject *fs = PyOS_FSPath(path);
    if (fs == NULL) {
        return -1;
    }
    PyObject *b = fs;
    if (PyUnicode_Check(fs)) {
        b = PyUnicode_EncodeFSDefault(fs);
        Py_DECREF(fs);
        if (b == NULL) {
            return -1;
        }
    }
    Py_ssize_t len = PyBytes_GET_SIZE(b);
    if (memchr(PyBytes_AS_STRING(b), '\0', (size_t)len) != NULL) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_ValueError, "embedded null byte");
        return -1;
    }
    if (len > PATH_MAX) {
        Py_DECREF(b);
        errno = ENAMETOOLONG;
        paths_raise_errno(path);
        return -1;
    }
    *bytes = b;
    return 0;
}

/* Resolve an already converted path (bytes, or fd when bytes is NULL) into
 * st->w.out.  A descriptor's /proc name is already physical and is used as
 * the kernel gives it (it may not be a path: "pipe:[42]").  Returns 0, or -1
 * with an exception. */
static int
paths_resolve_into(paths_state *st, PyObject *path, PyObject *bytes, int fd,
                   int dir_fd, int follow)
{
    paths_walk *w = &st->w;
    if (bytes == NULL) {
        ssize_t n = paths_read_fd(fd, w->out);
        if (n < 0) {
            paths_raise_errno(path);
            return -1;
        }
        w->out_len = (n == 1 && w->out[0] == '/') ? 0 : (size_t)n;
        w->out[w->out_len] = '\0';
        return 0;
    }
    if (paths_walk_path(st, PyBytes_AS_STRING(bytes),
                        (size_t)PyBytes_GET_SIZE(bytes), dir_fd, follow) < 0) {
        paths_raise_errno(path);
        return -1;
    }
    return 0;
}

PyObject *
sp_paths_resolve(PyObject *path, int dir_fd, int follow)
{
    PyObject *bytes = NULL, *result = NULL;
    paths_state *st = NULL;
    int fd;
    if (paths_convert(path, &bytes, &fd) < 0) {
        goto done;
    }
    st = PyMem_Malloc(sizeof(*st));
    if (st == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    st->have_cwd = 0;
    if (paths_resolve_into(st, path, bytes, fd, dir_fd, follow) < 0) {
        goto done;
    }
    result = paths_decode(st->w.out, st->w.out_len);
done:
    PyMem_Free(st);
    Py_XDECREF(bytes);
    return result;
}

/* Whether resolved entry E lies strictly inside resolved dest D, or is D
 * when self_ok.  Both use the "" root, so D = root needs no special case. */
static int
paths_inside(const char *e, size_t e_len, const char *d, size_t d_len,
             int self_ok)
{
    if (e_len < d_len || memcmp(e, d, d_len) != 0) {
        return 0;
    }
    return e_len == d_len ? self_ok : e[d_len] == '/';
}

int
sp_paths_check_write(PyObject *path, int dir_fd, int flags, PyObject *dests,
                     PyObject **resolved)
{
    PyObject *bytes = NULL, *dest_bytes = NULL;
    paths_state *st = NULL;
    int result = -1, fd;
    int self_ok = (flags & SP_PATH_SELF) != 0;
    if (resolved != NULL) {
        *resolved = NULL;
    }
    if (!PyTuple_Check(dests)) {
        PyErr_SetString(PyExc_TypeError, "dests must be a tuple of str");
        goto done;
    }
    if (paths_convert(path, &bytes, &fd) < 0) {
        goto done;
    }
    st = PyMem_Malloc(sizeof(*st));
    if (st == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    st->have_cwd = 0;
    st->have_target = 0;
    st->target_len = 0;

    /* The entry itself: what unlink or rename would touch. */
    if (paths_resolve_into(st, path, bytes, fd, dir_fd, 0) < 0) {
        goto done;
    }
    memcpy(st->entry, st->w.out, st->w.out_len + 1);
    st->entry_len = st->w.out_len;
    /* An operation that follows a final symlink writes to its target as
     * well, so that must be allowed too.  (A descriptor has no link.) */
    struct stat sb;
    if ((flags & SP_PATH_FOLLOW) && bytes != NULL &&
        lstat(st->entry, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        if (paths_resolve_into(st, path, bytes, fd, dir_fd, 1) < 0) {
            goto done;
        }
        memcpy(st->target, st->w.out, st->w.out_len + 1);
        st->target_len = st->w.out_len;
        st->have_target = 1;
    }

    int entry_ok = 0, target_ok = !st->have_target;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(dests); i++) {
        PyObject *dest = PyTuple_GET_ITEM(dests, i);
        /* A non-str raises TypeError here. */
        Py_XSETREF(dest_bytes, PyUnicode_EncodeFSDefault(dest));
        if (dest_bytes == NULL) {
            goto done;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(dest_bytes);
        /* normalise_dests rejected these; refuse rather than misread. */
        if (len == 0 || len > PATH_MAX ||
            memchr(PyBytes_AS_STRING(dest_bytes), '\0', (size_t)len)) {
            continue;
        }
        /* Resolved on every check: a dest may be relative to the cwd, or be
         * (or sit under) a symlink that has since changed. */
        if (paths_walk_path(st, PyBytes_AS_STRING(dest_bytes), (size_t)len,
                            -1, 1) < 0) {
            paths_raise_errno(dest);
            goto done;
        }
        entry_ok = entry_ok || paths_inside(st->entry, st->entry_len, st->w.out,
                                            st->w.out_len, self_ok);
        target_ok = target_ok || paths_inside(st->target, st->target_len,
                                              st->w.out, st->w.out_len, self_ok);
        if (entry_ok && target_ok) {
            break;
        }
    }
    result = entry_ok && target_ok;
    if (resolved != NULL) {
        /* Report what was refused, else what the operation writes to. */
        int show_target = st->have_target && entry_ok;
        *resolved = show_target ? paths_decode(st->target, st->target_len)
                                : paths_decode(st->entry, st->entry_len);
        if (*resolved == NULL) {
            result = -1;
        }
    }
done:
    PyMem_Free(st);
    Py_XDECREF(dest_bytes);
    Py_XDECREF(bytes);
    return result;
}

/* Expand a leading "~" or "~user" as os.path.expanduser does; an unknown
 * user or no home leaves the entry as written.  `s` is a NUL-free str. */
PyObject *
sp_paths_expand_user(PyObject *s)
{
    PyObject *user = NULL, *home = NULL, *tail = NULL, *result = NULL;
    Py_ssize_t len = PyUnicode_GetLength(s);
    if (len == 0) {
        return Py_NewRef(s);
    }
    Py_UCS4 first = PyUnicode_ReadChar(s, 0);
    if (len < 0 || first == (Py_UCS4)-1) {
        return NULL;
    }
    if (first != '~') {
        return Py_NewRef(s);
    }
    Py_ssize_t slash = PyUnicode_FindChar(s, '/', 1, len, 1);
    if (slash == -2) {
        return NULL;
    }
    if (slash == -1) {
        slash = len;
    }
    const char *dir = NULL;
    if (slash == 1) {
        dir = getenv("HOME");
        if (dir == NULL) {
            struct passwd *pw = getpwuid(getuid());
            dir = pw != NULL ? pw->pw_dir : NULL;
        }
    }
    else {
        PyObject *name = PyUnicode_Substring(s, 1, slash);
        if (name == NULL) {
            goto done;
        }
        user = PyUnicode_EncodeFSDefault(name);
        Py_DECREF(name);
        if (user == NULL) {
            goto done;
        }
        struct passwd *pw = getpwnam(PyBytes_AS_STRING(user));
        dir = pw != NULL ? pw->pw_dir : NULL;
    }
    if (dir == NULL) {
        result = Py_NewRef(s);
        goto done;
    }
    size_t dir_len = strlen(dir);
    while (dir_len > 0 && dir[dir_len - 1] == '/') {
        dir_len--;
    }
    home = PyUnicode_DecodeFSDefaultAndSize(dir, (Py_ssize_t)dir_len);
    tail = PyUnicode_Substring(s, slash, len);
    if (home == NULL || tail == NULL) {
        goto done;
    }
    result = PyUnicode_Concat(home, tail);
    if (result != NULL && PyUnicode_GetLength(result) == 0) {
        /* A home of "/" with a bare "~": the root, as posixpath gives. */
        Py_SETREF(result, PyUnicode_FromString("/"));
    }
done:
    Py_XDECREF(user);
    Py_XDECREF(home);
    Py_XDECREF(tail);
    return result;
}

/* One ok_dests entry as a checked, '~'-expanded exact str (new ref). */
static PyObject *
paths_normalise_one(PyObject *item)
{
    PyObject *fs = NULL, *str = NULL, *result = NULL, *encoded = NULL;
    if (!PyUnicode_Check(item) && !PyBytes_Check(item) &&
        !PyObject_HasAttrString((PyObject *)Py_TYPE(item), "__fspath__")) {
        PyErr_Format(PyExc_TypeError,
                     "ok_dests entries must be str, bytes or os.PathLike, "
                     "not %.200s", Py_TYPE(item)->tp_name);
        return NULL;
    }
    fs = PyOS_FSPath(item);
    if (fs == NULL) {
        goto done;
    }
    if (PyBytes_Check(fs)) {
        str = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(fs),
                                               PyBytes_GET_SIZE(fs));
    }
    else {
        /* An exact copy, so no subclass travels into the checks. */
        str = PyUnicode_FromObject(fs);
    }
    if (str == NULL) {
        goto done;
    }
    Py_ssize_t len = PyUnicode_GetLength(str);
    if (len < 0) {
        goto done;
    }
    if (len == 0) {
        PyErr_SetString(PyExc_ValueError, "ok_dests entries must not be empty");
        goto done;
    }
    Py_ssize_t nul = PyUnicode_FindChar(str, 0, 0, len, 1);
    if (nul == -2) {
        goto done;
    }
    if (nul >= 0) {
        /* Checked before expansion: getpwnam() would stop at the NUL. */
        PyErr_SetString(PyExc_ValueError,
                        "embedded null character in ok_dests entry");
        goto done;
    }
    result = sp_paths_expand_user(str);
    if (result == NULL) {
        goto done;
    }
    /* Fail now, not on every later write, if it cannot be a path. */
    encoded = PyUnicode_EncodeFSDefault(result);
    if (encoded == NULL) {
        Py_CLEAR(result);
        goto done;
    }
    if (PyBytes_GET_SIZE(encoded) > PATH_MAX) {
        PyErr_SetString(PyExc_ValueError, "ok_dests entry is too long");
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(encoded);
    Py_XDECREF(str);
    Py_XDECREF(fs);
    return result;
}

PyObject *
sp_paths_normalise_dests(PyObject *ok_dests)
{
    PyObject *items = NULL, *result = NULL;
    if (ok_dests == Py_None) {
        return Py_NewRef(Py_None);
    }
    /* A bare str is iterable but almost surely meant as one path; refuse
     * it rather than allow each of its characters. */
    if (!PyList_Check(ok_dests) && !PyTuple_Check(ok_dests) &&
        !PyAnySet_Check(ok_dests)) {
        PyErr_Format(PyExc_TypeError, "ok_dests must be a list of paths, not %.200s",
                     Py_TYPE(ok_dests)->tp_name);
        return NULL;
    }
    /* A snapshot: entries' __fspath__ may mutate the container. */
    items = PySequence_Tuple(ok_dests);
    if (items == NULL) {
        goto error;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    result = PyTuple_New(n);
    if (result == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = paths_normalise_one(PyTuple_GET_ITEM(items, i));
        if (entry == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(result, i, entry);
    }
    Py_DECREF(items);
    return result;
error:
    Py_XDECREF(items);
    Py_XDECREF(result);
    return NULL;
}

/* ---- stable path objects ---------------------------------------------------- */

int
sp_paths_stable(PyObject *path)
{
    PyTypeObject *tp = Py_TYPE(path);
    if (PyUnicode_Check(path) || PyBytes_Check(path) || PyLong_CheckExact(path) ||
        !(tp->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        return 1;
    }
    PyObject *types = sp_state.paths.pathlib_types; /* borrowed */
    for (Py_ssize_t i = 0; types != NULL && i < PyTuple_GET_SIZE(types); i++) {
        if ((PyObject *)tp == PyTuple_GET_ITEM(types, i)) {
            return 1;
        }
    }
    /* A host's path class converts with the host's code; a class of the
     * sandbox's own, or one overriding how a path turns into text, does
     * not. */
    return sp_gate_method_kind(tp, "__fspath__") == SP_METHOD_HOST &&
           sp_gate_method_kind(tp, "__str__") == SP_METHOD_HOST;
}

PyObject *
sp_paths_capture_pathlib(void)
{
    if (sp_state.paths.pathlib_types != NULL) {
        return Py_NewRef(sp_state.paths.pathlib_types);
    }
    static const char *const names[] = {"PurePath", "PurePosixPath",
                                        "PureWindowsPath", "Path", "PosixPath",
                                        "WindowsPath"};
    PyObject *mod = PyImport_ImportModule("pathlib");
    PyObject *types = mod == NULL ? NULL : PyTuple_New(6);
    for (int i = 0; types != NULL && i < 6; i++) {
        PyObject *tp = PyObject_GetAttrString(mod, names[i]);
        if (tp == NULL || !PyType_Check(tp)) {
            Py_XDECREF(tp);
            Py_CLEAR(types);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "pathlib has no path classes");
            }
            break;
        }
        PyTuple_SET_ITEM(types, i, tp);
    }
    Py_XDECREF(mod);
    if (types == NULL) {
        return NULL;
    }
    sp_state.paths.pathlib_types = Py_NewRef(types);
    return types;
}

int
sp_paths_is_dir(PyObject *path, int dir_fd)
{
    PyObject *bytes = NULL;
    int fd;
    if (paths_convert(path, &bytes, &fd) < 0) {
        return -1;
    }
    struct stat sb;
    int rc = bytes == NULL
        ? fstat(fd, &sb)
        : fstatat(dir_fd >= 0 ? dir_fd : AT_FDCWD, PyBytes_AS_STRING(bytes), &sb, 0);
    Py_XDECREF(bytes);
    return rc == 0 && S_ISDIR(sb.st_mode);
}

PyObject *
sp_paths_text(PyObject *path)
{
    PyObject *fs = PyOS_FSPath(path);
    if (fs == NULL) {
        return NULL;
    }
    PyObject *text = PyBytes_Check(fs)
        ? PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(fs),
                                           PyBytes_GET_SIZE(fs))
        : PyUnicode_FromObject(fs); /* a str subclass's methods never run */
    Py_DECREF(fs);
    return text;
}
