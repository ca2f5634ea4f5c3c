/* paths.h - write-destination checks.
 *
 * A write is allowed when the directory entry it affects lies inside one of
 * the run's ok_dests.  Both the entry and every destination are resolved on
 * each check (symlinked parents and '..' followed, '.' and other relative
 * destinations taken against the working directory of that moment).
 */
#ifndef SP_PATHS_H
#define SP_PATHS_H

#include "compat.h"

/* Flags for sp_paths_check_write. */
enum {
    /* The operation follows a symlink in the last component (open,
     * truncate, chmod...): a symlink there is resolved and its target must
     * be allowed too. */
    SP_PATH_FOLLOW = 1 << 0,
    /* The operation changes the entry's inode, not its parent directory
     * (chmod, utime, chdir): the entry may be an ok_dest itself. */
    SP_PATH_SELF = 1 << 1,
};

/* Validate and normalise a user-given ok_dests.
 * Accepts None (returns None: write checking off) or a list/tuple/set of
 * str, bytes or os.PathLike.  Each entry is fspath'd, decoded and
 * '~'-expanded; relative entries stay relative (resolved at check time).
 * Returns a new reference to a tuple of str (or None); on bad input raises
 * TypeError/ValueError and returns NULL. */
PyObject *sp_paths_normalise_dests(PyObject *ok_dests);

/* Resolve `path` as the directory entry an operation affects.
 * `path` is str, bytes, os.PathLike or int (an open descriptor, resolved
 * through /proc/self/fd).  Relative paths are taken against `dir_fd` when it
 * is >= 0, else the working directory.  The parent is resolved fully; the
 * last component is resolved too when `follow` is set and it is a symlink.
 * Returns a new reference to an absolute str, or NULL with an exception. */
PyObject *sp_paths_resolve(PyObject *path, int dir_fd, int follow);

/* Check a write to `path` against `dests` (a tuple from
 * sp_paths_normalise_dests, never None).  `flags` is SP_PATH_*.
 * Returns 1 if allowed, 0 if refused, -1 with an exception on error.
 * On 0 or 1, *resolved is set to a new reference to the resolved entry
 * (for messages) when `resolved` is not NULL; on -1 it is NULL. */
int sp_paths_check_write(PyObject *path, int dir_fd, int flags,
                         PyObject *dests, PyObject **resolved);

/* os.fspath(path) as an exact str (bytes decoded with the file system
 * encoding; a str subclass copied).  Asks the object once.  New reference
 * or NULL. */
PyObject *sp_paths_text(PyObject *path);

/* `s` (a str) with a leading "~" or "~user" expanded as os.path.expanduser
 * does; other strings unchanged.  New reference or NULL. */
PyObject *sp_paths_expand_user(PyObject *s);

/* Whether the path an object names is stable: asking it twice gives the
 * same answer.  A write check asks os.fspath(path) once and the effect
 * asks again, so a path object whose __fspath__ (or __str__, for a pathlib
 * subclass) is the sandbox's own could pass the check with one path and
 * write another.  Stable: str, bytes (subclasses too: their data is used,
 * not their methods), int descriptors, objects of static (C) types such as
 * os.DirEntry, the exact pathlib classes, and classes whose __fspath__ and
 * __str__ are the host's functions.  Not stable: a class whose __fspath__
 * or __str__ is a cell's function or a non-function callable stored in a
 * Python class.  No Python code runs. */
int sp_paths_stable(PyObject *path);

/* Whether `path` (as sp_paths_resolve takes it) names an existing
 * directory, following symlinks.  1 yes, 0 no (or it does not exist), -1
 * with an exception for a path that cannot be converted. */
int sp_paths_is_dir(PyObject *path, int dir_fd);

/* Capture the pathlib classes sp_paths_stable trusts (imports pathlib;
 * before the first cell runs).  New reference to the tuple of classes, to
 * be guarded against change by the caller; NULL with an exception. */
PyObject *sp_paths_capture_pathlib(void);

#endif /* SP_PATHS_H */
