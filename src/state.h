/* state.h - the engine's state, in one struct.
 *
 * Why one process-wide struct and not module state: the audit hook is
 * installed once per process and can never be removed (PEP 578), and what
 * it reads must outlive any module object; the module declares that it
 * does not support several interpreters (engine.c).  So every part of the
 * engine keeps its state here, in `sp_state`, defined once in engine.c,
 * each part in a sub-struct of its own that only its own file writes.  The
 * hook's userData holds no Python objects: the hook reads this struct.
 *
 * Who writes what, and when (all with the GIL held):
 *   - the first import fills every part (each part's sp_<area>_init, called
 *     in order by engine.c's exec function); a second import of the module
 *     finds them filled and only adds the objects to the new module;
 *   - afterwards only: the registry (allow(), outside runs), the gate's
 *     cell-code index (cells compiled or code made inside runs), the
 *     defaults of trust (set_data, default_ok_dests, outside runs), the
 *     monitor's sync state, and the lazily captured asyncio functions.
 * Nothing is ever freed: the hook that reads it lives as long as the
 * process.  Per-thread state (the monitor's native-call record, the gate's
 * host-call barrier) is _Thread_local in its own file and named there.
 *
 * Every PyObject pointer below is an owned reference unless marked.
 */
#ifndef SP_STATE_H
#define SP_STATE_H

#include "compat.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Sizes of fixed tables, here so that the struct can hold them. */
#define SP_RULES_SLOTS 512 /* rules.c: power of two >= 2x the rule count */
#define SP_CHECK_NTYPES 8  /* check.c: syntax-tree node types it checks */
#define SP_CHECK_NSTRS 8   /* check.c: attribute names it reads */
#define SP_GUARDS_MAX 64        /* guards.c: functions it can guard */
#define SP_GUARDS_MAX_MODULES 16 /* guards.c: modules those live in */
#define SP_FOREIGN_NBASES 6     /* foreign.c: the _ctypes base types */

/* memcap.c: one counted block (key 0: empty, 1: removed). */
typedef struct {
    uintptr_t key;                   /* the block's address */
    size_t size;                     /* bytes charged for it */
    struct sp_memcap_account *acct;  /* borrowed: the account charged */
} sp_memcap_slot;

/* gate.c: one entry of the cell-code index. */
typedef struct {
    PyObject *code; /* compared only (held weakly through wr), or NULL, or
                       a tombstone marker */
    PyObject *wr;   /* weakref to code; its callback removes the entry */
    PyObject *run;  /* the SpRun the code stays gated under */
} sp_gate_slot;

typedef struct {
    /* rules.c: slot -> index into the static rule table + 1 (0 empty). */
    struct sp_rules_state {
        uint16_t slots[SP_RULES_SLOTS];
        int ready;
    } rules;

    /* check.c: the syntax-tree node types and attribute names it uses. */
    struct sp_check_state {
        PyTypeObject *types[SP_CHECK_NTYPES];
        PyObject *strs[SP_CHECK_NSTRS];
        int ready;
    } check;

    /* context.c: the run type and the context variable holding the run. */
    struct sp_context_state {
        PyTypeObject *run_type;
        PyObject *run_var;
    } context;

    /* gate.c: the cell-code index (open addressing, PyMem) and the code of
     * the import system's exec helper. */
    struct sp_gate_state {
        sp_gate_slot *slots; /* `size` slots, or NULL */
        size_t size;         /* a power of two, or 0 */
        size_t live;         /* entries holding a code object */
        size_t filled;       /* live + tombstones */
        PyObject *import_exec_code;
    } gate;

    /* registry.c: the registrations and the indexes derived from them. */
    struct sp_registry_state {
        PyObject *entries;  /* list of (owner, name, policy) */
        PyObject *imports;  /* list of module names trusted while importing */
        PyObject *codes;    /* {id(code): (code, (grant, ...))} */
        PyObject *natives;  /* {id(callable): (callable, (grant, ...))} */
        PyObject *modules;  /* {id(module dict): module dict} */
        PyObject *prefixes; /* tuple of str: 'pkg' for an entry 'pkg.*' */
        PyObject *gated;    /* {id(code): code} for codes with policies */
        PyObject *name_key; /* interned "__name__" */
        PyObject *locals_marker; /* interned "<locals>" */
        unsigned long version;   /* bumped by every change */
    } registry;

    /* trust.c: the trust search's types, defaults and interned names. */
    struct sp_trust_state {
        PyObject *calls_var;      /* ContextVar: tuple of SpCallRecord */
        PyTypeObject *record;     /* SpCallRecord */
        PyObject *default_data;   /* dict: set_data() defaults */
        PyObject *default_dests;  /* normalised default ok_dests (tuple/None) */
        PyTypeObject *deny_info;  /* struct sequence DenyInfo */
        PyTypeObject *call_info;  /* struct sequence CallInfo */
        PyTypeObject *raw_deny_info; /* struct sequence RawDenyInfo */
        PyTypeObject *tracked;    /* track_call wrapper type */
        PyTypeObject *tracked_aw; /* its awaitable */
        PyObject *module_name;    /* interned "<module>" */
        PyObject *name_key;       /* interned "__name__" */
        PyObject *empty_tuple;
        PyObject *unbound;        /* marks an unbound free variable */
    } trust;

    /* monitor.c: the call monitor. */
    struct sp_monitor_state {
        int ready;                     /* the fields below are initialised */
        unsigned long synced_version;  /* registry version last synced */
        PyObject *gated;               /* {id(code): code} as last synced */
        int tool_id;                   /* 3.12+: our sys.monitoring tool, or -1 */
        PyObject *disable;             /* 3.12+: sys.monitoring.DISABLE */
        PyObject *set_local_events;    /* 3.12+: captured at import, before */
        PyObject *use_tool_id;         /*   any cell could replace them */
        PyObject *register_callback;
        Py_tracefunc chained_func;     /* 3.11: the host's profile function */
        PyObject *chained_obj;         /*   and its object (borrowed from the
                                            caller's saved state) */
    } monitor;

    /* hook.c: the audit hook. */
    struct sp_hook_state {
        int installed;
        PyObject *package_name;   /* "safepyrun" */
        PyObject *to_thread_code; /* asyncio.to_thread.__code__ */
    } hook;

    /* threads.c: the executor and thread-start guards. */
    struct sp_threads_state {
        PyObject *submit;           /* the real ThreadPoolExecutor.submit */
        PyObject *init;             /* the real ThreadPoolExecutor.__init__ */
        PyObject *run_in_executor_code; /* BaseEventLoop.run_in_executor's */
        PyObject *asyncio_executors; /* {id: weakref}: asyncio's own */
        PyObject *frozen_types;     /* the classes made immutable */
        PyObject *start_thread;     /* 3.11: the real _thread.start_new_thread */
        PyObject *bootstrap;        /* threading.Thread._bootstrap, as at the
                                       first run */
        PyObject *adopted;          /* {id(thread): (weakref, run)}: threads a
                                       library's import started in a run */
    } threads;

    /* compile.c: builtins.compile, the _ast types, linecache. */
    struct sp_compile_state {
        PyObject *compile;
        PyObject *ast_expr;
        PyObject *ast_assign;
        PyObject *ast_name;
        PyObject *ast_store;   /* an _ast.Store() instance */
        PyObject *linecache;   /* the module, after the first srcfn; or NULL */
        PyObject *result_name; /* interned name of a cell's last value */
        unsigned long srcfn_counter;
    } compile;

    /* libcache.c: a library's first-import cache writes. */
    struct sp_libcache_state {
        PyObject *compile;  /* builtins.compile, as at import */
        PyObject *verified; /* set of module codes equal to their file's */
        PyObject *created;  /* list of str: temp directories imports made */
    } libcache;

    /* cell.c: the Cell type and the asyncio functions it calls. */
    struct sp_cell_state {
        PyTypeObject *cell_type;
        PyObject *builtins_name; /* interned "__builtins__" */
        PyObject *all_tasks;     /* asyncio.all_tasks (first run) */
        PyObject *current_task;
        PyObject *gather;
        PyObject *cancelled;     /* asyncio.CancelledError */
    } cell;

    /* sqlite.c: the real sqlite3.connect and what the hook installs on
     * connections opened inside a run. */
    struct sp_sqlite_state {
        int installed;             /* sp_sqlite_before_run has run */
        PyObject *connect;         /* _sqlite3.connect, or NULL */
        PyObject *conn_type;       /* _sqlite3.Connection */
        PyObject *set_authorizer;  /* _sqlite3.Connection.set_authorizer */
        PyObject *authorizer;      /* our authorizer callback */
    } sqlite;

    /* guards.c: the guards on natives that raise no audit event, and the
     * real functions they replaced (held only here, GC-untracked). */
    struct sp_guards_state {
        int installed;
        PyObject *real[SP_GUARDS_MAX];  /* the real function */
        PyObject *guard[SP_GUARDS_MAX]; /* what replaced it (for a class
                                           guard, the instancemethod) */
        unsigned char patched[SP_GUARDS_MAX_MODULES]; /* module guarded */
        int pending;             /* pure-Python modules not yet guarded */
        PyObject *monitoring;    /* private copy of sys.monitoring with the
                                    real functions (GC-untracked) */
        PyObject *future_type;   /* asyncio.Future (C), or NULL */
        PyObject *run_var;       /* borrowed: the run context variable */
        PyTypeObject *boundcall_type; /* boundcall.c: SpBoundCall */
        PyTypeObject *environ_type;   /* environ.c: SpEnviron */
    } guards;

    /* policy.c: the built-in policy types. */
    struct sp_policy_state {
        PyTypeObject *base;  /* AllowPolicy */
        PyTypeObject *pos;   /* PosAllowPolicy */
        PyTypeObject *path;  /* PathWritePolicy */
        PyTypeObject *open;  /* OpenWritePolicy */
        PyTypeObject *local; /* LocalWritePolicy */
    } policy;

    /* shell.c: the Python shell's names and objects, pinned (written by
     * the snapshot and shell_pin, host only). */
    struct sp_shell_state {
        PyObject *pins;        /* list of pin tuples, or NULL before the
                                  first snapshot */
        PyObject *extra;       /* list of pin tuples added by shell_pin */
        PyObject *ignored_key; /* interned "__warningregistry__" */
        PyObject *quarantine;  /* what the last verify removed, or NULL */
        int watcher;           /* 3.12+: our dict watcher's id, or -1 */
        int dirty;             /* 3.12+: a watched dict changed since the
                                  last verify */
    } shell;

    /* foreign.c: _ctypes' slots, as they were before the redirection. */
    struct sp_foreign_state {
        int installed;
        PyObject *bases[SP_FOREIGN_NBASES];   /* the base types, or NULL */
        newfunc real_new[SP_FOREIGN_NBASES];  /* their tp_new */
        ternaryfunc real_call;                /* CFuncPtr's tp_call */
    } foreign;

    /* paths.c: the pathlib classes whose __fspath__ answers are stable. */
    struct sp_paths_state {
        PyObject *pathlib_types;   /* tuple, or NULL before the first run */
    } paths;

    /* memcap.c: the allocator hooks' table of counted blocks (libc
     * memory, guarded by memcap.c's mutex) and numpy's API, once found. */
    struct sp_memcap_state {
        int installed;            /* the hooks were installed */
        size_t accounts_live;     /* accounts not yet ended */
        sp_memcap_slot *slots;    /* `size` slots, or NULL */
        size_t size;              /* a power of two, or 0 */
        size_t live;              /* entries holding a block */
        size_t filled;            /* live + removed */
        void **np_api;            /* borrowed from np_api_capsule: numpy's
                                     C API table, or NULL */
        PyObject *np_api_capsule; /* numpy's _ARRAY_API capsule, or NULL */
        PyObject *np_wraps;       /* {id(handler): our wrapping capsule} */
    } memcap;

    /* report.c: the run report type. */
    struct sp_report_state {
        PyTypeObject *type;
    } report;

    /* output.c: the stream router type and the names it calls. */
    struct sp_output_state {
        PyTypeObject *router_type;
        PyObject *unsupported;   /* io.UnsupportedOperation */
        PyObject *names[2];      /* interned "stdout", "stderr" */
        PyObject *write_name;    /* interned method names */
        PyObject *flush_name;
        PyObject *isatty_name;
        PyObject *fileno_name;
        PyObject *close_name;
        PyObject *logging_name;  /* "logging" */
    } output;

    /* watchdog.c: the watchdog thread, what it watches, and the asyncio
     * functions a loop pass calls (captured before any cell runs).  The
     * lists and flags are shared with the watchdog thread: read and written
     * under `lock` only; the Python objects are touched with the GIL only. */
    struct sp_watchdog_state {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        pthread_t thread;
        int started;               /* the thread runs */
        int stop;                  /* the thread must end (interpreter exit) */
        int idle;                  /* the thread waits for work, untimed */
        int queued;                /* a pending call is queued */
        int in_pass;               /* a loop pass runs (no nested passes) */
        unsigned long main_thread; /* ident of the main thread */
        unsigned long steps_seen;  /* bumped by each registered step */
        struct sp_wd_step *steps;  /* active steps, innermost first */
        struct sp_wd_limit *armed; /* limits with a deadline */
        PyObject *cancelled;       /* asyncio.CancelledError */
        PyObject *timeout_error;   /* builtins.TimeoutError */
        PyObject *get_running_loop; /* asyncio.events._get_running_loop */
        PyObject *current_task;    /* asyncio.current_task */
        PyObject *enter_task;      /* asyncio.tasks._enter_task */
        PyObject *leave_task;      /* asyncio.tasks._leave_task */
        PyObject *base_loop;       /* asyncio.BaseEventLoop */
        PyObject *run_once;        /* BaseEventLoop._run_once */
        PyObject *call_soon;       /* BaseEventLoop.call_soon */
        PyObject *call_at;         /* BaseEventLoop.call_at */
        PyObject *call_soon_ts;    /* BaseEventLoop.call_soon_threadsafe */
        PyObject *loop_time;       /* BaseEventLoop.time */
        PyObject *future_type;     /* asyncio.Future */
        PyObject *future_cancel;   /* asyncio.Future.cancel */
        PyObject *handle_cancel;   /* asyncio.Handle.cancel */
        PyObject *handle_cancelled; /* asyncio.Handle.cancelled */
        PyObject *pass_fn;         /* our pass, called as host code */
        PyObject *noop;            /* a callback that does nothing */
        PyObject *stop_fn;         /* registered with atexit */
    } watchdog;

    /* runner.c: the Runner type. */
    struct sp_runner_state {
        PyTypeObject *runner_type;
        PyObject *default_banned; /* tuple of the default banned imports */
    } runner;
} SpState;

/* The one instance (engine.c).  Zero-initialised at load. */
extern SpState sp_state;

#endif /* SP_STATE_H */
