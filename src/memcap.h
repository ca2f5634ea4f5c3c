/* memcap.h - the memory cap of a run: allocations counted in C (see
 * memcap.c).
 *
 * A run with a cap owns one account.  While one of its cell's steps runs on
 * a thread (memcap_step_enter .. leave), the allocations that thread makes
 * through CPython's allocator domains, pymalloc's arenas and numpy's data
 * allocator are charged to the account; one that would take it past the
 * cap fails, so the code gets MemoryError.  Without any cap, no hook is
 * installed.
 */
#ifndef SP_MEMCAP_H
#define SP_MEMCAP_H

#include "compat.h"

#include <stddef.h>

typedef struct sp_memcap_account sp_memcap_account;

/* What a step entered, to be left again (memcap_step_leave). */
typedef struct {
    sp_memcap_account *prev; /* borrowed: the thread's account before */
    PyObject *np_handler;    /* owned or NULL: numpy's handler to put back */
    int entered;
} sp_memcap_step;

/* Install the allocator hooks (once per process; host only, GIL held).
 * 0 ok, -1 error. */
int sp_memcap_install(void);

/* If the hooks were installed and something since put an older allocator
 * back (tracemalloc.stop()), wrap it again.  GIL held. */
void sp_memcap_rehook(void);

/* New account with cap `cap` bytes (> 0), or NULL with MemoryError.  Not a
 * Python object: owned by the SpRun that holds it (sp_memcap_release). */
sp_memcap_account *sp_memcap_new(size_t cap);

/* The run is over: blocks still alive stop being charged to it (their
 * later free credits nobody), and nothing more is counted.  Idempotent. */
void sp_memcap_end(sp_memcap_account *acct);

/* sp_memcap_end, then free the account.  NULL is fine. */
void sp_memcap_release(sp_memcap_account *acct);

/* Charge this thread's allocations to `acct` (NULL: nothing) until
 * sp_memcap_step_leave; numpy's data allocator is wrapped for the step
 * when numpy is loaded.  Never fails (a failure to wrap numpy's handler is
 * reported as unraisable). */
void sp_memcap_step_enter(sp_memcap_account *acct, sp_memcap_step *step);
void sp_memcap_step_leave(sp_memcap_step *step);

/* A module finished executing (guards.c's exec hooks): when it is numpy's
 * core and a capped step runs on this thread, numpy's allocator is wrapped
 * at once, so `import numpy` inside a cell does not escape the count. */
void sp_memcap_module_ready(PyObject *module);

/* Whether any capped run is alive and not over (a branch for the event
 * loop's hot path).  GIL held. */
int sp_memcap_any_live(void);

/* Whether `acct` still counts (its run is not over). */
int sp_memcap_counting(const sp_memcap_account *acct);

/* The cap, the bytes counted at the high-water mark, and whether an
 * allocation was refused. */
size_t sp_memcap_cap(const sp_memcap_account *acct);
size_t sp_memcap_peak(const sp_memcap_account *acct);
int sp_memcap_tripped(const sp_memcap_account *acct);

/* After a cap stopped a cell and its objects were freed: hand free heap
 * pages back to the system (glibc's malloc_trim; nothing elsewhere). */
void sp_memcap_trim(void);

/* "100.0 MiB": a byte count for messages, into buf (size >= 32). */
void sp_memcap_format(size_t bytes, char *buf, size_t size);

#endif /* SP_MEMCAP_H */
