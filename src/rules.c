/* rules.c - the audit-event table.
 *
 * Every audit event CPython or a library raises is looked up here.  The
 * table says whether the event is harmless (ALLOW), refused unless a
 * trusted call is active (DENY), or a write whose path arguments are
 * checked against ok_dests (WRITE), plus a few special cases.  Events the
 * table does not know are refused by the hook: a new library raising a new
 * event fails closed.
 *
 * The lookup is on the hot path of every audited operation (imports,
 * opens, compile, id(), attribute reads...), so it is a precomputed
 * open-addressing hash table over the event name: one FNV-1a hash of a
 * short string and usually one strcmp.  No Python objects, no allocation;
 * the table is built once per process and never changes.
 */
#include "rules.h"

#include "paths.h"
#include "state.h"

#include <stdint.h>
#include <string.h>

#define F SP_PATH_FOLLOW
#define S SP_PATH_SELF

/* Shorthands: {event, kind, path_flags, {path args}, {dir_fd args},
 * shown arg, what}.  DENY shows the first argument, DENYA the one named. */
#define ALLOW(ev) {ev, SP_RULE_ALLOW, 0, {-1, -1}, {-1, -1}, -1, NULL}
#define DENY(ev, what) {ev, SP_RULE_DENY, 0, {-1, -1}, {-1, -1}, 0, what}
#define DENYA(ev, show, what) \
    {ev, SP_RULE_DENY, 0, {-1, -1}, {-1, -1}, show, what}
#define SPECIAL(ev, kind, arg, what) {ev, kind, 0, {arg, -1}, {-1, -1}, arg, what}
#define WRITE1(ev, fl, p, d, what) \
    {ev, SP_RULE_WRITE, fl, {p, -1}, {d, -1}, p, what}
#define WRITE2(ev, fl, p1, p2, d1, d2, what) \
    {ev, SP_RULE_WRITE, fl, {p1, p2}, {d1, d2}, p1, what}

static const sp_rule rules_table[] = {
    /* Running code and importing: the effects come later, as events. */
    ALLOW("import"), ALLOW("compile"), ALLOW("code.__new__"),
    ALLOW("marshal.loads"), ALLOW("marshal.load"),
    ALLOW("marshal.dumps"), ALLOW("pickle.find_class"), ALLOW("builtins.id"),
    ALLOW("builtins.input"), ALLOW("builtins.input/result"),
    ALLOW("object.__getattr__"), ALLOW("sys._getframe"),
    ALLOW("sys._getframemodulename"), ALLOW("sys._current_frames"),
    ALLOW("sys._current_exceptions"), ALLOW("sys.excepthook"),
    ALLOW("sys.unraisablehook"), ALLOW("sys.set_asyncgen_hooks_firstiter"),
    ALLOW("sys.set_asyncgen_hooks_finalizer"),
    ALLOW("sys.set_asyncgen_hook_firstiter"),
    ALLOW("sys.set_asyncgen_hook_finalizer"), ALLOW("time.sleep"),
    ALLOW("array.__new__"),

    /* Code a cell makes runs as cell code, found by identity (hook.c). */
    SPECIAL("exec", SP_RULE_CODE, 0, "reuse a trusted function's code"),
    SPECIAL("function.__new__", SP_RULE_CODE, 0,
            "reuse a trusted function's code"),

    /* The garbage collector hands out every object, the engine's and the
     * host's included. */
    DENYA("gc.get_objects", -1, "list the garbage collector's objects"),
    DENYA("gc.get_referrers", -1, "find an object's referrers"),
    DENYA("gc.get_referents", -1, "find an object's referents"),

    /* Reading the file system. */
    ALLOW("os.listdir"), ALLOW("os.scandir"), ALLOW("os.walk"),
    ALLOW("os.fwalk"), ALLOW("glob.glob"), ALLOW("glob.glob/2"),
    ALLOW("os.getxattr"), ALLOW("os.listxattr"), ALLOW("pathlib.Path.glob"),
    ALLOW("pathlib.Path.rglob"), ALLOW("pathlib.Path.walk"),
    ALLOW("os.listdrives"), ALLOW("os.listmounts"), ALLOW("os.lockf"),
    ALLOW("os.listvolumes"), ALLOW("fcntl.fcntl"), ALLOW("fcntl.ioctl"),
    ALLOW("fcntl.flock"), ALLOW("fcntl.lockf"), ALLOW("mmap.__new__"),
    SPECIAL("sqlite3.connect/handle", SP_RULE_SQLITE_HANDLE, -1,
            "open a sqlite connection other than through sqlite3.connect"),
    /* tempfile raises these after the os.open/os.mkdir that was checked. */
    ALLOW("tempfile.mkstemp"), ALLOW("tempfile.mkdtemp"),

    /* Name look-ups and unconnected sockets are harmless; traffic is not. */
    ALLOW("socket.__new__"), ALLOW("socket.getaddrinfo"),
    ALLOW("socket.gethostbyname"), ALLOW("socket.gethostbyaddr"),
    ALLOW("socket.gethostname"), ALLOW("socket.getnameinfo"),
    ALLOW("socket.getservbyname"), ALLOW("socket.getservbyport"),
    ALLOW("urllib.Request"),

    /* Opening: a write only when the flags say so (hook.c checks them). */
    {"open", SP_RULE_OPEN, F, {0, -1}, {-1, -1}, 0, "open a file for writing"},

    WRITE1("os.remove", 0, 0, 1, "remove a file"),
    WRITE2("os.rename", 0, 0, 1, 2, 3, "rename a file"),
    WRITE1("os.mkdir", 0, 0, 2, "create a directory"),
    WRITE1("os.rmdir", 0, 0, 1, "remove a directory"),
    WRITE1("os.chmod", F | S, 0, 2, "change file permissions"),
    WRITE1("os.chown", F | S, 0, 3, "change file ownership"),
    WRITE1("os.chflags", F | S, 0, -1, "change file flags"),
    WRITE1("os.lchflags", S, 0, -1, "change file flags"),
    WRITE2("os.link", 0, 0, 1, 2, 3, "create a hard link"),
    WRITE2("os.symlink", 0, 1, 0, 2, 2, "create a symbolic link"),
    WRITE1("os.truncate", F, 0, -1, "truncate a file"),
    WRITE1("os.utime", F | S, 0, 3, "change file times"),
    WRITE1("os.mkfifo", 0, 0, 2, "create a FIFO"),
    WRITE1("os.mknod", 0, 0, 3, "create a device node"),
    WRITE1("os.setxattr", F | S, 0, -1, "set an extended attribute"),
    WRITE1("os.removexattr", F | S, 0, -1, "remove an extended attribute"),
    WRITE1("os.chdir", F | S, 0, -1, "change the working directory"),
    WRITE2("shutil.copyfile", F, 1, -1, -1, -1, "copy a file"),
    WRITE2("shutil.copymode", F | S, 1, -1, -1, -1, "copy file permissions"),
    WRITE2("shutil.copystat", F | S, 1, -1, -1, -1, "copy file metadata"),
    WRITE2("shutil.copytree", 0, 1, -1, -1, -1, "copy a directory tree"),
    WRITE2("shutil.move", 0, 0, 1, -1, -1, "move a file"),
    WRITE1("shutil.rmtree", 0, 0, 1, "remove a directory tree"),
    WRITE1("shutil.chown", F | S, 0, -1, "change file ownership"),
    WRITE1("shutil.make_archive", 0, 0, -1, "create an archive"),
    WRITE2("shutil.unpack_archive", S, 1, -1, -1, -1, "unpack an archive"),
    {"sqlite3.connect", SP_RULE_SQLITE, F, {0, -1}, {-1, -1}, 0,
     "open a database file"},
    {"sqlite3.attach", SP_RULE_SQLITE, F, {0, -1}, {-1, -1}, 0,
     "attach a database file"},

    /* Environment: only the sensitive names are refused (hook.c). */
    SPECIAL("os.putenv", SP_RULE_ENV, 0,
            "change a sensitive environment variable"),
    SPECIAL("os.unsetenv", SP_RULE_ENV, 0,
            "remove a sensitive environment variable"),

    /* Attribute writes on classes and functions: tampering refused. */
    SPECIAL("object.__setattr__", SP_RULE_SETATTR, 1,
            "replace a function's code or defaults, or change the sandbox"),
    SPECIAL("object.__delattr__", SP_RULE_SETATTR, 1, "change the sandbox"),

    /* Foreign code: loading the process's own image (ctypes' import does
     * it) adds no code; any other library is refused. */
    SPECIAL("ctypes.dlopen", SP_RULE_DLOPEN, 0, "load a native library"),

    /* Programs. */
    DENYA("subprocess.Popen", 1, "run a program"),
    DENY("os.system", "run a shell command"),
    DENYA("os.exec", 1, "replace the process with a program"),
    DENYA("os.posix_spawn", 1, "run a program"),
    DENYA("os.spawn", 2, "run a program"), DENY("os.startfile", "open a file"),
    DENY("os.fork", "fork the process"), DENY("os.forkpty", "fork the process"),
    DENY("pty.spawn", "run a program"), DENY("os.kill", "signal a process"),
    DENY("os.killpg", "signal a process group"),
    DENY("signal.pthread_kill", "signal a thread"),
    DENY("os.add_dll_directory", "change the native library path"),
    DENY("webbrowser.open", "open a web browser"),

    /* Network traffic. */
    DENYA("socket.connect", 1, "open a network connection"),
    DENYA("socket.bind", 1, "listen on a network address"),
    DENYA("socket.sendto", 1, "send network data"),
    DENYA("socket.sendmsg", 1, "send network data"),
    DENY("socket.sethostname", "change the host name"),
    DENYA("http.client.connect", 1, "open an HTTP connection"),
    DENY("http.client.send", "send an HTTP request"),
    DENY("ftplib.connect", "open an FTP connection"),
    DENY("smtplib.connect", "open an SMTP connection"),
    DENY("poplib.connect", "open a POP connection"),
    DENY("imaplib.open", "open an IMAP connection"),
    DENY("nntplib.connect", "open an NNTP connection"),
    DENY("telnetlib.Telnet.open", "open a telnet connection"),

    /* Threads (3.12+ raise these; 3.11 goes through hook.c's guard). */
    SPECIAL("_thread.start_new_thread", SP_RULE_THREAD, 0, "start a thread"),
    SPECIAL("_thread.start_joinable_thread", SP_RULE_THREAD, 0,
            "start a thread"),

    /* Traffic on connections that exist already (opening them is refused
     * above; a trusted tool may hand one to a cell). */
    DENY("ftplib.sendcmd", "send an FTP command"),
    DENY("imaplib.send", "send IMAP data"),
    DENY("nntplib.putline", "send NNTP data"),
    DENY("poplib.putline", "send POP data"),
    DENY("smtplib.send", "send SMTP data"),
    DENY("telnetlib.Telnet.write", "send telnet data"),

    /* The system log. */
    DENY("syslog.openlog", "open the system log"),
    DENY("syslog.syslog", "write to the system log"),
    DENY("syslog.setlogmask", "change the system log mask"),
    DENY("syslog.closelog", "close the system log"),

    /* Foreign memory: reading or writing raw addresses (foreign calls and
     * library loads are refused above). */
    ALLOW("ctypes.create_string_buffer"), ALLOW("ctypes.create_unicode_buffer"),
    ALLOW("ctypes.get_errno"), ALLOW("ctypes.get_last_error"),
    DENY("ctypes.addressof", "take a raw memory address"),
    DENY("ctypes.call_function", "call a foreign function"),
    DENY("ctypes.new", "create a ctypes object"),
    DENY("ctypes.cdata", "read raw memory"),
    DENY("ctypes.cdata/buffer", "read raw memory"),
    DENY("ctypes.dlsym", "look up a native symbol"),
    DENY("ctypes.dlsym/handle", "look up a native symbol"),
    DENY("ctypes.set_errno", "set the C errno"),
    DENY("ctypes.set_last_error", "set the C last error"),
    DENY("ctypes.set_exception", "raise through ctypes"),
    DENY("ctypes.string_at", "read raw memory"),
    DENY("ctypes.wstring_at", "read raw memory"),

    /* Windows only (this engine runs on Linux; listed so that no event
     * of the standard library is unknown). */
    DENY("os.startfile/2", "open a file"),
    DENY("msvcrt.get_osfhandle", "use a Windows handle"),
    DENY("msvcrt.locking", "lock a file"),
    DENY("msvcrt.open_osfhandle", "use a Windows handle"),
    DENY("winreg.ConnectRegistry", "use the Windows registry"),
    DENY("winreg.CreateKey", "change the Windows registry"),
    DENY("winreg.DeleteKey", "change the Windows registry"),
    DENY("winreg.DeleteValue", "change the Windows registry"),
    DENY("winreg.DisableReflectionKey", "change the Windows registry"),
    DENY("winreg.EnableReflectionKey", "change the Windows registry"),
    DENY("winreg.EnumKey", "read the Windows registry"),
    DENY("winreg.EnumValue", "read the Windows registry"),
    DENY("winreg.ExpandEnvironmentStrings", "read the Windows registry"),
    DENY("winreg.LoadKey", "change the Windows registry"),
    DENY("winreg.OpenKey", "read the Windows registry"),
    DENY("winreg.OpenKey/result", "read the Windows registry"),
    DENY("winreg.PyHKEY.Detach", "use the Windows registry"),
    DENY("winreg.QueryInfoKey", "read the Windows registry"),
    DENY("winreg.QueryReflectionKey", "read the Windows registry"),
    DENY("winreg.QueryValue", "read the Windows registry"),
    DENY("winreg.SaveKey", "change the Windows registry"),
    DENY("winreg.SetValue", "change the Windows registry"),
    DENY("_winapi.CreateFile", "open a Windows file"),
    DENY("_winapi.CreateJunction", "create a junction"),
    DENY("_winapi.CreateNamedPipe", "create a pipe"),
    DENY("_winapi.CreatePipe", "create a pipe"),
    DENY("_winapi.CreateProcess", "run a program"),
    DENY("_winapi.OpenProcess", "open a process"),
    DENY("_winapi.TerminateProcess", "kill a process"),
    DENY("_wmi.exec_query", "query WMI"),

    /* The host process itself (guards.c raises these). */
    DENYA("os._exit", 1, "end the host process"),
    DENYA("os.abort", 1, "abort the host process"),
    DENYA("os.umask", 1, "change the process's file mode mask"),
    DENYA("os.setid", 1, "change the process's identity or session"),
    DENYA("signal.raise_signal", 1, "signal the host process"),
    DENYA("signal.alarm", 1, "set a timer signal on the host process"),
    DENYA("faulthandler.crash", 0, "crash the host process"),
    DENY("sys.setrecursionlimit", "raise the recursion limit past a safe depth"),
    DENY("sys.setswitchinterval", "raise the thread switch interval (the time limit needs it short)"),

    /* The interpreter's own controls. */
    DENY("pdb.Pdb", "enter the debugger"),
    DENY("ensurepip.bootstrap", "install pip"),
    DENY("cpython.run_command", "run a command"),
    DENY("cpython.run_file", "run a file"),
    DENY("cpython.run_module", "run a module"),
    DENY("cpython.run_startup", "run a startup file"),
    DENY("cpython.run_stdin", "run standard input"),
    DENY("cpython.run_interactivehook", "run the interactive hook"),
    DENY("cpython.remote_debugger_script", "run a debugger script"),
    ALLOW("cpython._PySys_ClearAuditHooks"),
    DENY("sys.addaudithook", "add an audit hook"),
    DENY("sys.settrace", "set a trace function"),
    DENY("sys.setprofile", "set a profile function"),
    DENY("sys.monitoring.register_callback", "register a monitoring callback"),
    DENY("sys._setprofileallthreads", "set a profile function"),
    DENY("sys._settraceallthreads", "set a trace function"),
    DENY("sys.remote_exec", "inject code into a process"),
    DENY("setopencode", "replace the import file opener"),
    DENY("builtins.breakpoint", "enter the debugger"),
    DENY("resource.setrlimit", "change resource limits"),
    DENY("resource.prlimit", "change resource limits"),
    DENY("cpython.PyInterpreterState_New", "create an interpreter"),
    DENY("cpython.PyInterpreterState_Clear", "destroy an interpreter"),
    DENY("sqlite3.enable_load_extension", "enable sqlite extensions"),
    DENY("sqlite3.load_extension", "load a sqlite extension"),

    /* guards.c: events raised by the guards on natives that raise none.
     * os.open with a dir_fd is shaped as "open" (path, mode, flags) plus
     * the descriptor; shm_open as "open" on its file in /dev/shm.
     * (os.mkfifo / os.mknod, also raised there, are above.) */
    {"os.open", SP_RULE_OPEN, F, {0, -1}, {3, -1}, 0,
     "open a file for writing"},
    {"_posixshmem.shm_open", SP_RULE_OPEN, 0, {0, -1}, {-1, -1}, 3,
     "open shared memory for writing"},
    WRITE1("_posixshmem.shm_unlink", 0, 0, -1, "remove shared memory"),
    WRITE1("readline.write_history_file", F, 0, -1,
           "write the readline history"),
    WRITE1("readline.append_history_file", F, 0, -1,
           "write the readline history"),
    DENY("os.memfd_create", "create an anonymous memory file"),
    DENY("_posixsubprocess.fork_exec", "run a program"),
    DENY("signal.pidfd_send_signal", "signal a process"),
    DENYA("_tkinter.create", -1, "start a Tcl/Tk interpreter"),
    DENY("_imp.create_builtin", "re-create a module the sandbox guards"),
    DENY("_imp.create_dynamic", "re-create a module the sandbox guards"),
    DENY("sys.monitoring.use_tool_id", "change sys.monitoring"),
    DENY("sys.monitoring.free_tool_id", "change sys.monitoring"),
    DENY("sys.monitoring.clear_tool_id", "change sys.monitoring"),
    DENY("sys.monitoring.set_events", "change sys.monitoring"),
    DENY("sys.monitoring.set_local_events", "change sys.monitoring"),
    DENY("sys.monitoring.restart_events", "change sys.monitoring"),
};

#undef ALLOW
#undef DENY
#undef DENYA
#undef SPECIAL
#undef WRITE1
#undef WRITE2
#undef F
#undef S

#define RULES_COUNT (sizeof(rules_table) / sizeof(rules_table[0]))
/* Power of two, at least twice the rule count: short probe chains. */
#define RULES_SLOTS SP_RULES_SLOTS

/* slot -> index into rules_table + 1 (0 = empty), in the engine state.
 * Written once by sp_rules_init under the GIL during the first import;
 * read-only after. */
static uint16_t *const rules_slots = sp_state.rules.slots;

static inline uint32_t
rules_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

int
sp_rules_init(void)
{
    if (sp_state.rules.ready) {
        return 0;
    }
    _Static_assert(RULES_COUNT * 2 <= RULES_SLOTS, "grow RULES_SLOTS");
    for (size_t i = 0; i < RULES_COUNT; i++) {
        uint32_t slot = rules_hash(rules_table[i].event) & (RULES_SLOTS - 1);
        while (rules_slots[slot] != 0) {
            if (strcmp(rules_table[rules_slots[slot] - 1].event,
                       rules_table[i].event) == 0) {
                PyErr_Format(PyExc_SystemError,
                             "safepyrun: duplicate audit rule %s",
                             rules_table[i].event);
                return -1;
            }
            slot = (slot + 1) & (RULES_SLOTS - 1);
        }
        rules_slots[slot] = (uint16_t)(i + 1);
    }
    sp_state.rules.ready = 1;
    return 0;
}

const sp_rule *
sp_rules_lookup(const char *event)
{
    uint32_t slot = rules_hash(event) & (RULES_SLOTS - 1);
    for (;;) {
        uint16_t idx = rules_slots[slot];
        if (idx == 0) {
            return NULL;
        }
        const sp_rule *rule = &rules_table[idx - 1];
        if (strcmp(rule->event, event) == 0) {
            return rule;
        }
        slot = (slot + 1) & (RULES_SLOTS - 1);
    }
}
