/* rules.h - the audit-event table: what each event means to the sandbox. */
#ifndef SP_RULES_H
#define SP_RULES_H

#include "compat.h"

typedef enum {
    SP_RULE_ALLOW = 0, /* harmless (reads, imports, introspection): return */
    SP_RULE_DENY,      /* refused unless a trusted call is active */
    SP_RULE_WRITE,     /* a write: path args checked against ok_dests */
    SP_RULE_OPEN,      /* open / os.open: a write only when flags write */
    SP_RULE_ENV,       /* os.putenv / os.unsetenv: sensitive names denied */
    SP_RULE_SETATTR,   /* object.__setattr__/__delattr__: tampering denied */
    SP_RULE_DLOPEN,    /* ctypes.dlopen: the process's own image allowed */
    SP_RULE_THREAD,    /* thread start: denied, asyncio.to_thread excepted */
    SP_RULE_CODE,      /* exec / FunctionType of a code object: in a run,
                          the code becomes cell code (hook.c) */
    SP_RULE_SQLITE,    /* a sqlite database or ATTACH: the files it writes
                          (sqlite.c) are checked against ok_dests */
    SP_RULE_SQLITE_HANDLE, /* a connection opened in a run other than by
                              the connect guard: refused (sqlite.c) */
} sp_rule_kind;

typedef struct {
    const char *event;        /* audit event name */
    unsigned char kind;       /* sp_rule_kind */
    unsigned char path_flags; /* SP_PATH_* for SP_RULE_WRITE */
    signed char path_arg[2];  /* argument index of each path, -1 = none */
    signed char dirfd_arg[2]; /* argument index of its dir_fd, -1 = none */
    signed char show_arg;     /* argument shown in refusal messages, -1 none */
    const char *what;         /* what the event does, for refusal messages */
} sp_rule;

/* Build the lookup table.  Called once per process. */
int sp_rules_init(void);

/* The rule for `event`, or NULL for an event the table does not know
 * (which the hook refuses).  Borrowed pointer into a static table; no
 * Python calls, safe from any thread holding the GIL. */
const sp_rule *sp_rules_lookup(const char *event);

#endif /* SP_RULES_H */
