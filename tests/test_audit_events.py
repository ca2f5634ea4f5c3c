"""Every audit event the standard library raises is classified (issue 8,
item 8): an unknown event is refused, so an event the table misses breaks
ordinary code on the interpreter that raises it (3.12's pathlib.Path.walk
made every rglob fail).

Two sources: CPython's audit events table (the events raised in C, listed
here with the version that added them), and the interpreter under test's
own standard library, scanned for `sys.audit("...")` calls, so that a new
interpreter's Python-level events are caught without editing this file."""
import ast
import os
import sys
import sysconfig

import pytest

from safepyrun import _engine

# CPython's audit events table (Doc/library/audit_events.rst), 3.11-3.13,
# with the version that added each event where it is newer than 3.11.
DOCUMENTED = {
    "_thread.start_new_thread": (3, 12),
    "_thread.start_joinable_thread": (3, 13),
    "array.__new__": None, "builtins.breakpoint": None, "builtins.id": None,
    "builtins.input": None, "builtins.input/result": None,
    "code.__new__": None, "compile": None,
    "cpython.PyInterpreterState_Clear": None,
    "cpython.PyInterpreterState_New": None,
    "cpython._PySys_ClearAuditHooks": None, "cpython.run_command": None,
    "cpython.run_file": None, "cpython.run_interactivehook": None,
    "cpython.run_module": None, "cpython.run_startup": None,
    "cpython.run_stdin": None,
    "ctypes.addressof": None, "ctypes.call_function": None,
    "ctypes.cdata": None, "ctypes.cdata/buffer": None,
    "ctypes.create_string_buffer": None, "ctypes.create_unicode_buffer": None,
    "ctypes.dlopen": None, "ctypes.dlsym": None, "ctypes.dlsym/handle": None,
    "ctypes.get_errno": None, "ctypes.get_last_error": None,
    "ctypes.set_errno": None, "ctypes.set_exception": None,
    "ctypes.set_last_error": None, "ctypes.string_at": None,
    "ctypes.wstring_at": None, "ensurepip.bootstrap": None, "exec": None,
    "fcntl.fcntl": None, "fcntl.flock": None, "fcntl.ioctl": None,
    "fcntl.lockf": None, "ftplib.connect": None, "ftplib.sendcmd": None,
    "function.__new__": None, "gc.get_objects": None,
    "gc.get_referents": None, "gc.get_referrers": None, "glob.glob": None,
    "glob.glob/2": None, "http.client.connect": None,
    "http.client.send": None, "imaplib.open": None, "imaplib.send": None,
    "import": None, "marshal.dumps": None, "marshal.load": None,
    "marshal.loads": None, "mmap.__new__": None,
    "msvcrt.get_osfhandle": None, "msvcrt.locking": None,
    "msvcrt.open_osfhandle": None, "nntplib.connect": None,
    "nntplib.putline": None, "object.__delattr__": None,
    "object.__getattr__": None, "object.__setattr__": None, "open": None,
    "os.add_dll_directory": None, "os.chdir": None, "os.chflags": None,
    "os.chmod": None, "os.chown": None, "os.exec": None, "os.fork": None,
    "os.forkpty": None, "os.fwalk": None, "os.getxattr": None,
    "os.kill": None, "os.killpg": None, "os.link": None, "os.listdir": None,
    "os.listdrives": (3, 12), "os.listmounts": (3, 12),
    "os.listvolumes": (3, 12), "os.listxattr": None, "os.lockf": None,
    "os.mkdir": None, "os.posix_spawn": None, "os.putenv": None,
    "os.remove": None, "os.removexattr": None, "os.rename": None,
    "os.rmdir": None, "os.scandir": None, "os.setxattr": None,
    "os.spawn": None, "os.startfile": None, "os.startfile/2": None,
    "os.symlink": None, "os.system": None, "os.truncate": None,
    "os.unsetenv": None, "os.utime": None, "os.walk": None,
    "pathlib.Path.glob": None, "pathlib.Path.rglob": None,
    "pathlib.Path.walk": (3, 12), "pdb.Pdb": None,
    "pickle.find_class": None, "poplib.connect": None,
    "poplib.putline": None, "pty.spawn": None, "resource.prlimit": None,
    "resource.setrlimit": None, "setopencode": None, "shutil.chown": None,
    "shutil.copyfile": None, "shutil.copymode": None,
    "shutil.copystat": None, "shutil.copytree": None,
    "shutil.make_archive": None, "shutil.move": None, "shutil.rmtree": None,
    "shutil.unpack_archive": None, "signal.pthread_kill": None,
    "smtplib.connect": None, "smtplib.send": None, "socket.__new__": None,
    "socket.bind": None, "socket.connect": None, "socket.getaddrinfo": None,
    "socket.gethostbyaddr": None, "socket.gethostbyname": None,
    "socket.gethostname": None, "socket.getnameinfo": None,
    "socket.getservbyname": None, "socket.getservbyport": None,
    "socket.sendmsg": None, "socket.sendto": None,
    "socket.sethostname": None, "sqlite3.connect": None,
    "sqlite3.connect/handle": None, "sqlite3.enable_load_extension": None,
    "sqlite3.load_extension": None, "subprocess.Popen": None,
    "sys._current_exceptions": None, "sys._current_frames": None,
    "sys._getframe": None, "sys._getframemodulename": (3, 12),
    "sys.addaudithook": None, "sys.excepthook": None,
    "sys.monitoring.register_callback": (3, 12),
    "sys.set_asyncgen_hooks_finalizer": None,
    "sys.set_asyncgen_hooks_firstiter": None, "sys.setprofile": None,
    "sys.settrace": None, "sys.unraisablehook": None,
    "syslog.closelog": None, "syslog.openlog": None,
    "syslog.setlogmask": None, "syslog.syslog": None,
    "telnetlib.Telnet.open": None, "telnetlib.Telnet.write": None,
    "tempfile.mkdtemp": None, "tempfile.mkstemp": None, "time.sleep": None,
    "urllib.Request": None, "webbrowser.open": None,
    "winreg.ConnectRegistry": None, "winreg.CreateKey": None,
    "winreg.DeleteKey": None, "winreg.DeleteValue": None,
    "winreg.DisableReflectionKey": None, "winreg.EnableReflectionKey": None,
    "winreg.EnumKey": None, "winreg.EnumValue": None,
    "winreg.ExpandEnvironmentStrings": None, "winreg.LoadKey": None,
    "winreg.OpenKey": None, "winreg.OpenKey/result": None,
    "winreg.PyHKEY.Detach": None, "winreg.QueryInfoKey": None,
    "winreg.QueryReflectionKey": None, "winreg.QueryValue": None,
    "winreg.SaveKey": None, "winreg.SetValue": None,
    "_winapi.CreateFile": None, "_winapi.CreateJunction": None,
    "_winapi.CreateNamedPipe": None, "_winapi.CreatePipe": None,
    "_winapi.CreateProcess": None, "_winapi.OpenProcess": None,
    "_winapi.TerminateProcess": None, "_wmi.exec_query": None,
}


def stdlib_audit_calls():
    """Event names passed as literals to sys.audit() in this interpreter's
    standard library (tests excluded)."""
    root = sysconfig.get_paths()["stdlib"]
    names = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in ("test", "tests", "idle_test",
                                    "site-packages", "__pycache__")]
        for fn in filenames:
            if not fn.endswith(".py"):
                continue
            path = os.path.join(dirpath, fn)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            if "audit(" not in text:
                continue
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and node.args and
                        isinstance(node.func, ast.Attribute) and
                        node.func.attr == "audit" and
                        isinstance(node.func.value, ast.Name) and
                        node.func.value.id in ("sys", "_sys") and
                        isinstance(node.args[0], ast.Constant) and
                        isinstance(node.args[0].value, str)):
                    names.add(node.args[0].value)
    return names


def test_every_documented_event_is_classified():
    unknown = [name for name, since in DOCUMENTED.items()
               if _engine.audit_rule(name) is None]
    assert unknown == []


def test_every_stdlib_sys_audit_event_is_classified():
    found = stdlib_audit_calls()
    assert "subprocess.Popen" in found and "shutil.rmtree" in found
    unknown = sorted(n for n in found if _engine.audit_rule(n) is None)
    assert unknown == []


@pytest.mark.parametrize("event, kind", [
    ("pathlib.Path.walk", "allow"), ("os.walk", "allow"),
    ("open", "open"), ("os.system", "deny"), ("smtplib.send", "deny"),
    ("sqlite3.connect", "sqlite"), ("exec", "code"),
    ("gc.get_objects", "deny"), ("ctypes.cdata", "deny"),
])
def test_classification_of_representative_events(event, kind):
    assert _engine.audit_rule(event) == kind


def test_unknown_events_stay_unknown():
    assert _engine.audit_rule("mylib.private_event") is None
    with pytest.raises(TypeError):
        _engine.audit_rule(42)


def test_rglob_works_in_a_cell(tmp_path):
    from conftest import run
    from safepyrun import RunPython
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    (tmp_path / "y.txt").write_text("2")
    py = RunPython({"d": str(tmp_path)})
    assert run(py, "from pathlib import Path\n"
                   "sorted(p.name for p in Path(d).rglob('*.txt'))") == [
        "x.txt", "y.txt"]
    if sys.version_info >= (3, 12):
        assert run(py, "from pathlib import Path\n"
                       "len(list(Path(d).walk()))") == 2
