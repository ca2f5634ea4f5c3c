"""Denied effects: each test shows the refusal AND that the effect did not
happen (no marker file, no process, no connection, no thread, environment
unchanged).  Network tests use 127.0.0.1 only, against sockets the host
opens itself, so nothing leaves the machine.

exec*/fork are tried in a child interpreter: if a refusal ever failed, only
that child would be replaced or forked, never the test runner.
"""
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import host_ns, refused, rejected, run
from safepyrun import RunPython


# --- programs ------------------------------------------------------------

def test_subprocess_run_refused(py, marker, touch):
    py.g["cmd"] = [touch, str(marker)]
    refused(py, "import subprocess\nsubprocess.run(cmd)", "subprocess.Popen",
            str(marker))
    assert not marker.exists()


def test_subprocess_popen_refused(py, marker, touch):
    py.g["cmd"] = [touch, str(marker)]
    refused(py, "import subprocess\np = subprocess.Popen(cmd)\np.wait()",
            "subprocess.Popen")
    assert not marker.exists()


def test_subprocess_check_output_shell_refused(py, marker):
    py.g["cmd"] = f"touch {marker}"
    refused(py, "import subprocess\nsubprocess.check_output(cmd, shell=True)",
            "subprocess.Popen")
    assert not marker.exists()


def test_os_system_refused(py, marker):
    cmd = f"touch {marker}"
    refused(py, f"os.system({cmd!r})", "os.system", repr(cmd),
            "run a shell command")
    assert not marker.exists()


def test_os_popen_refused(py, marker):
    with pytest.raises(PermissionError):
        run(py, f"os.popen('touch {marker}').read()")
    assert not marker.exists()


def test_posix_spawn_refused(py, marker, touch):
    # Harmless in-process even if the refusal failed: it would only touch.
    code = (f"pid = os.posix_spawn({touch!r}, ['touch', {str(marker)!r}], "
            "dict(os.environ))\nos.waitpid(pid, 0)")
    refused(py, code, "os.posix_spawn")
    assert not marker.exists()


def test_spawn_refused(py, marker, touch):
    code = f"os.spawnv(os.P_WAIT, {touch!r}, ['touch', {str(marker)!r}])"
    with pytest.raises(PermissionError):
        run(py, code)
    assert not marker.exists()


def test_refusal_inside_cell_function(py, marker):
    msg = refused(py, f"def go():\n    os.system('touch {marker}')\ngo()",
                  "os.system")
    assert "<module>" in msg and "go" in msg
    assert not marker.exists()


ISOLATED = """
import asyncio, os, sys
from safepyrun import RunPython
py = RunPython({'os': os, 'marker': sys.argv[1], 'touch': sys.argv[2]},
               ok_dests=None)
try:
    asyncio.run(py(sys.stdin.read()))
except PermissionError as e:
    print('REFUSED', e)
else:
    print('RAN')
"""


def run_isolated(code, marker, touch):
    """Run a cell in a child interpreter; its stdout."""
    out = subprocess.run([sys.executable, "-c", ISOLATED, str(marker), touch],
                         input=code, capture_output=True, text=True,
                         timeout=60)
    return out.stdout + out.stderr


@pytest.mark.parametrize("code, event", [
    ("os.execv(touch, ['touch', marker])", "os.exec"),
    ("os.execvp('touch', ['touch', marker])", "os.exec"),
    ("os.execl(touch, 'touch', marker)", "os.exec"),
    ("os.execve(touch, ['touch', marker], dict(os.environ))", "os.exec"),
    (textwrap.dedent("""\
        pid = os.fork()
        if pid == 0:
            try:
                open(marker, 'w').close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        """), "os.fork"),
])
def test_exec_and_fork_refused(code, event, marker, touch):
    out = run_isolated(code, marker, touch)
    assert out.startswith("REFUSED safepyrun refused"), out
    assert f"audit event '{event}'" in out, out
    assert not marker.exists()


def test_forkpty_refused(marker, touch):
    code = ("import pty\npid, fd = pty.fork()\n"
            "if pid == 0:\n    open(marker, 'w').close()\n    os._exit(0)\n"
            "os.waitpid(pid, 0)")
    out = run_isolated(code, marker, touch)
    assert out.startswith("REFUSED safepyrun refused"), out
    assert not marker.exists()


# --- network (loopback only) -----------------------------------------------

@pytest.fixture
def listener():
    """A TCP server socket on 127.0.0.1 that nobody should reach."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    yield srv
    srv.close()


def assert_no_connection(srv):
    with pytest.raises(BlockingIOError):
        conn, _ = srv.accept()
        conn.close()


@pytest.fixture
def pynet(listener):
    g = host_ns(socket=socket, port=listener.getsockname()[1])
    return RunPython(g)


def test_socket_connect_refused(pynet, listener):
    port = listener.getsockname()[1]
    refused(pynet, "s = socket.socket()\ns.connect(('127.0.0.1', port))",
            "socket.connect", f"('127.0.0.1', {port})",
            "open a network connection")
    assert_no_connection(listener)
    pynet.g["s"].close()


def test_socket_create_connection_refused(pynet, listener):
    with pytest.raises(PermissionError):
        run(pynet, "socket.create_connection(('127.0.0.1', port))")
    assert_no_connection(listener)


def test_socket_bind_refused(pynet):
    refused(pynet, "s = socket.socket()\ns.bind(('127.0.0.1', 0))",
            "socket.bind", "('127.0.0.1', 0)")
    s = pynet.g["s"]  # exported despite the failure
    try:
        assert s.getsockname() == ("0.0.0.0", 0)
    finally:
        s.close()


def test_socket_sendto_refused(pynet):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    pynet.g["rx_port"] = rx.getsockname()[1]
    try:
        refused(pynet, "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                       "s.sendto(b'leak', ('127.0.0.1', rx_port))",
                "socket.sendto")
        with pytest.raises(BlockingIOError):
            rx.recvfrom(100)
    finally:
        rx.close()
        pynet.g["s"].close()


def test_http_client_refused(pynet, listener):
    refused(pynet, "import http.client\n"
                   "c = http.client.HTTPConnection('127.0.0.1', port)\n"
                   "c.request('GET', '/')", "http.client.connect",
            "'127.0.0.1'")
    assert_no_connection(listener)


def test_urllib_refused(pynet, listener):
    with pytest.raises(PermissionError) as info:
        run(pynet, "import urllib.request\n"
                   "urllib.request.urlopen(f'http://127.0.0.1:{port}/')")
    # urllib wraps the refusal in URLError; the host sees the refusal.
    assert "safepyrun refused" in str(info.value)
    assert_no_connection(listener)


def test_asyncio_open_connection_refused(pynet, listener):
    refused(pynet, "import asyncio\n"
                   "await asyncio.open_connection('127.0.0.1', port)",
            "socket.connect")
    assert_no_connection(listener)


def test_name_lookup_allowed(pynet):
    assert run(pynet, "socket.getaddrinfo('127.0.0.1', 80)[0][4][0]") == "127.0.0.1"


def test_unconnected_socket_allowed(pynet):
    assert run(pynet, "s2 = socket.socket()\ns2.close()\n'ok'") == "ok"


def test_import_socket_banned_statically(py):
    rejected(py, "import socket", "'socket'")


# --- threads ---------------------------------------------------------------

def test_thread_start_refused(py):
    flag = []
    py.g["flag"] = flag
    before = threading.active_count()
    refused(py, "import threading\n"
                "t = threading.Thread(target=lambda: flag.append(1))\n"
                "t.start()", None, "start a thread")
    assert threading.active_count() == before
    assert flag == []


def test_thread_pool_executor_refused(py):
    flag = []
    py.g["flag"] = flag
    before = threading.active_count()
    refused(py, "from concurrent.futures import ThreadPoolExecutor\n"
                "with ThreadPoolExecutor(2) as ex:\n"
                "    ex.submit(flag.append, 1).result()", None,
            "start a thread")
    assert threading.active_count() == before
    assert flag == []


def test_low_level_thread_refused(py):
    flag = []
    py.g["flag"] = flag
    before = threading.active_count()
    with pytest.raises(PermissionError):
        run(py, "import _thread\n_thread.start_new_thread(flag.append, (1,))")
    assert threading.active_count() == before
    assert flag == []


def test_asyncio_to_thread_allowed(py):
    assert run(py, "import asyncio\ndef f(): return 42\n"
                   "await asyncio.to_thread(f)") == 42


def test_asyncio_to_thread_body_stays_gated(py, marker):
    refused(py, "import asyncio\n"
                f"def f(): os.system('touch {marker}')\n"
                "await asyncio.to_thread(f)", "os.system")
    assert not marker.exists()


def test_host_threads_work_after_refusal(py):
    with pytest.raises(PermissionError):
        run(py, "import threading\nthreading.Thread(target=print).start()")
    out = []
    t = threading.Thread(target=out.append, args=(1,))
    t.start()
    t.join()
    assert out == [1]


# --- native code -------------------------------------------------------------

def test_ctypes_cdll_refused():
    ctypes = pytest.importorskip("ctypes")
    py = RunPython(host_ns(ctypes=ctypes))
    refused(py, "lib = ctypes.CDLL('libc.so.6')", "ctypes.dlopen",
            "'libc.so.6'", "load a native library")
    assert "lib" not in py.g
    with pytest.raises(PermissionError):
        run(py, "ctypes.cdll.LoadLibrary('libm.so.6')")


def test_import_ctypes_banned_statically(py):
    rejected(py, "import ctypes", "'ctypes'")


# --- the interpreter's own controls ------------------------------------------

def test_addaudithook_has_no_effect(py):
    # CPython swallows an Exception raised by existing hooks at
    # sys.addaudithook and does not add the hook; what matters is that the
    # cell's hook never runs.
    seen = []
    py.g["seen"] = seen
    try:
        run(py, "sys.addaudithook(lambda ev, args: seen.append(ev))")
    except PermissionError:
        pass
    open(__file__).close()  # raises the 'open' audit event
    assert seen == []


def test_settrace_refused(py):
    before = sys.gettrace()
    refused(py, "sys.settrace(lambda *a: None)", "sys.settrace",
            "set a trace function")
    assert sys.gettrace() is before


def test_setprofile_refused(py):
    before = sys.getprofile()
    refused(py, "sys.setprofile(lambda *a: None)", "sys.setprofile")
    assert sys.getprofile() is before


# --- environment ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "PYTHONPATH", "HOME"])
def test_sensitive_env_refused(py, name):
    before = os.environ.get(name)
    refused(py, f"os.environ[{name!r}] = '/evil'", "os.putenv", repr(name),
            "sensitive environment variable")
    assert os.environ.get(name) == before


def test_sensitive_env_putenv_and_delete_refused(py):
    home = os.environ.get("HOME")
    assert home is not None
    refused(py, "os.putenv('LD_PRELOAD', '/evil.so')", "os.putenv")
    refused(py, "del os.environ['HOME']", "os.unsetenv", "'HOME'")
    assert os.environ.get("HOME") == home
    refused(py, "os.environ.update(PATH='/evil')", "os.putenv")
    assert os.environ["PATH"] != "/evil"


def test_lowercase_sensitive_env_refused(py):
    before = os.environ.get("ld_preload")
    with pytest.raises(PermissionError):
        run(py, "os.environ['ld_preload'] = 'x'")
    assert os.environ.get("ld_preload") == before


def test_ordinary_env_allowed(py):
    try:
        run(py, "os.environ['MY_VAR'] = '1'")
        assert os.environ["MY_VAR"] == "1"
        run(py, "del os.environ['MY_VAR']")
        assert "MY_VAR" not in os.environ
    finally:
        os.environ.pop("MY_VAR", None)


# --- tampering --------------------------------------------------------------

def test_replacing_code_refused(py):
    def host_fn():
        return 1
    py.g["host_fn"] = host_fn
    refused(py, "host_fn.__code__ = (lambda: 2).__code__",
            "object.__setattr__", "__code__")
    assert host_fn() == 1


def test_replacing_code_of_cell_function_refused(py):
    with pytest.raises(PermissionError):
        run(py, "def f(): return 1\nf.__code__ = (lambda: 2).__code__")
    assert run(py, "f()") == 1


def test_setattr_code_via_object_setattr_refused(py):
    def host_fn():
        return 1
    py.g["host_fn"] = host_fn
    with pytest.raises(PermissionError):
        run(py, "object.__setattr__(host_fn, '__code__', (lambda: 2).__code__)")
    assert host_fn() == 1


# --- yolo ---------------------------------------------------------------------

def test_yolo_runs_ungated(tmp_path, marker, touch):
    py = RunPython(host_ns(cmd=[touch, str(marker)]), yolo=True)
    target = tmp_path / "yolo.txt"
    assert run(py, f"Path({str(target)!r}).write_text('y')") == 1
    assert target.exists()
    run(py, "import subprocess\nsubprocess.run(cmd, check=True)")
    assert marker.exists()


def test_unknown_event_refused(py):
    msg = refused(py, "sys.audit('safepyrun.test.unknown', 1)",
                  "safepyrun.test.unknown")
    assert "does not know" in msg


def test_known_harmless_event_allowed(py):
    assert run(py, "sys.audit('os.listdir', '.')\n1") == 1


def test_signal_refused(py):
    refused(py, "os.kill(os.getpid(), 0)", "os.kill", "signal a process")


def test_asyncio_subprocess_refused(py, marker, touch):
    py.g["cmd"] = [touch, str(marker)]
    refused(py, "import asyncio\np = await asyncio.create_subprocess_exec(*cmd)\n"
                "await p.wait()", "subprocess.Popen")
    assert not marker.exists()


def test_pty_spawn_refused(py, marker, touch):
    with pytest.raises(PermissionError):
        run(py, f"import pty\npty.spawn([{touch!r}, {str(marker)!r}])")
    assert not marker.exists()


def test_breakpoint_refused(py):
    refused(py, "breakpoint()", "builtins.breakpoint")


def test_multiprocessing_refused(marker, touch):
    code = ("import multiprocessing as mp\n"
            "p = mp.get_context('fork').Process(target=os.system, "
            "args=(f'touch {marker}',))\np.start()\np.join()")
    out = run_isolated(code, marker, touch)
    assert out.startswith("REFUSED safepyrun refused"), out
    assert not marker.exists()
