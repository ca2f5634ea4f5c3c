/* sqlite.h - which files a sqlite3 database open writes (see sqlite.c). */
#ifndef SP_SQLITE_H
#define SP_SQLITE_H

#include "compat.h"

/* How a database name is read: as a plain file name, as a "file:" URI
 * (connect(..., uri=True)), or unknown (both must pass). */
typedef enum {
    SP_SQLITE_PLAIN = 0,
    SP_SQLITE_URI = 1,
    SP_SQLITE_EITHER = 2,
} sp_sqlite_naming;

/* The file paths that opening `database` (str, bytes or os.PathLike) may
 * create or write, read `naming`: a new list of str/bytes (empty when no
 * file is written: ':memory:', an empty name, a temporary database,
 * mode=ro, mode=memory, vfs=memdb).  NULL with an exception on error. */
PyObject *sp_sqlite_write_targets(PyObject *database, sp_sqlite_naming naming);

/* Whether `database` is the object the connect guard has just judged and
 * passes to the real sqlite3.connect (the hook then does not judge it a
 * second time, less precisely).  Compared by identity. */
int sp_sqlite_is_prejudged(PyObject *database);

/* Whether the connect guard is opening a connection on this thread now
 * (it then sets the connection's ATTACH authorizer itself). */
int sp_sqlite_in_guard(void);

/* Before the first cell runs: import _sqlite3 (when available), capture
 * what the hook needs and replace sqlite3.connect by the guard.  A no-op
 * afterwards.  0 ok, -1 error. */
int sp_sqlite_before_run(void);

#endif /* SP_SQLITE_H */
