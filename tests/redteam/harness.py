"""Run red-team cases: one case per child interpreter, effects judged by the parent.

The parent (pytest, or ``run_redteam.py``) calls :func:`run_case`.  It lays
out a fresh world directory::

    BASE/world/            the cell's working directory (NOT in ok_dests)
    BASE/world/ok/         the only ok_dest
    BASE/world/outside/    victim.txt ("original"), sub/, empty/
    BASE/meta/             the child's report (never scanned)

opens a loopback TCP listener and UDP socket (127.0.0.1 only), and starts
``python harness.py CASE_ID BASE TCP UDP`` with whatever interpreter runs the
implementation under test (ours: PYTHONPATH=the repo; the published one: its
own venv).  The child runs the case's ``setup`` (host code), the cell, the
case's ``after`` (host code run after the run ended), a pause for callbacks,
then policy probes, and writes a JSON report.  After the child has exited
(so atexit handlers and finalizers have run) the parent compares the world
tree outside ``ok/`` with the child's snapshot, looks for markers, and
accepts pending connections.

A case *holds* when no effect is seen AND a sandbox refusal was seen: a
``PermissionError`` without ``errno`` (the sandbox's, not the OS's) from the
cell or the ``after`` step, or a refusal printed on the child's stderr (an
atexit handler or finalizer), or the case's recorded ``holds_by`` reason.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SENSITIVE_ENV = ("PATH", "HOME", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH",
                 "PYTHONHOME", "SHELL", "TMPDIR", "USER", "http_proxy",
                 "HTTPS_PROXY", "SSL_CERT_FILE", "BROWSER")
REFUSAL_TEXT = ("safepyrun refused", "not allowed in the sandbox",
                "blocked in sandbox",  # the published implementation
                "not allowed; permitted", " not in ", "not allowed")


# ---- the world ----------------------------------------------------------------

def make_world(base):
    world = os.path.join(base, "world")
    for d in ("ok", "outside/sub", "outside/empty", "meta"):
        os.makedirs(os.path.join(world if d != "meta" else base, d),
                    exist_ok=True)
    with open(os.path.join(world, "outside", "victim.txt"), "w") as f:
        f.write("original")
    with open(os.path.join(world, "outside", "sub", "keep.txt"), "w") as f:
        f.write("keep")
    with open(os.path.join(world, "ok", "data.txt"), "w") as f:
        f.write("a,b\n1,2\n")
    os.chmod(os.path.join(base, "meta"), 0o777)  # a case may drop privileges
    return world


def snapshot(world):
    """Everything under world except ok/: path -> (kind, size, mtime, mode,
    link target or content of small files)."""
    out = {}
    ok = os.path.join(world, "ok")
    for root, dirs, files in os.walk(world):
        if root == world:
            dirs[:] = [d for d in dirs if os.path.join(root, d) != ok]
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = os.path.relpath(p, world)
            if os.path.islink(p):
                out[rel] = ["link", os.readlink(p)]
            elif os.path.isdir(p):
                out[rel] = ["dir", st.st_mode]
            elif not stat.S_ISREG(st.st_mode):
                out[rel] = ["special", st.st_mode]
            else:
                extra = None
                if st.st_size < 4096:
                    try:
                        with open(p, "rb") as f:
                            extra = f.read().decode("latin-1")
                    except OSError:
                        extra = "unreadable"
                out[rel] = ["file", st.st_size, st.st_mode, st.st_uid,
                            st.st_mtime_ns, extra]
    st = os.lstat(world)
    out["."] = ["dir", st.st_mode]
    return out


def diff(before, after):
    changes = []
    for k in sorted(set(before) | set(after)):
        if k not in after:
            changes.append(f"removed {k}")
        elif k not in before:
            changes.append(f"created {k}")
        elif before[k] != after[k]:
            changes.append(f"changed {k}")
    return changes


# ---- the parent side ------------------------------------------------------------

class Outcome(dict):
    """held (bool), status (held / escaped / no-refusal / crashed / hung /
    skipped), effects (list), refusal (where it was seen), error (the
    cell's exception), stderr tail."""

    @property
    def held(self):
        return self["status"] == "held"


def run_case(case_id, python=sys.executable, env=None, timeout=60):
    """Run one case in a child interpreter and judge it; an Outcome."""
    base = tempfile.mkdtemp(prefix="rt-")
    world = make_world(base)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("XDG_CONFIG_HOME", os.path.join(base, "meta", "cfg"))
    child_env["MPLBACKEND"] = "Agg"
    child_env["MPLCONFIGDIR"] = os.path.join(base, "meta", "mpl")
    try:
        try:
            proc = subprocess.run(
                [python, os.path.join(HERE, "harness.py"), case_id, base,
                 str(tcp.getsockname()[1]), str(udp.getsockname()[1])],
                cwd=world, env=child_env, capture_output=True, text=True,
                timeout=timeout, stdin=subprocess.DEVNULL)
            rc, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, stderr = "timeout", (e.stderr or b"").decode("utf-8", "replace")
        time.sleep(0.05)  # a process the cell started may still be finishing
        report_path = os.path.join(base, "meta", "report.json")
        report = {}
        if os.path.exists(report_path):
            with open(report_path) as f:
                report = json.load(f)
        effects = list(report.get("effects", []))
        if "before" in report:
            effects += diff(report["before"], snapshot(world))
        for name in ("marker", "probe-marker", "probe-marker-2"):
            if os.path.exists(os.path.join(world, "outside", name)):
                effects.append(f"{name} touched (a program ran)")
        try:
            conn, _ = tcp.accept()
            conn.close()
            effects.append("the loopback TCP server got a connection")
        except BlockingIOError:
            pass
        try:
            udp.recvfrom(100)
            effects.append("the loopback UDP socket got a datagram")
        except BlockingIOError:
            pass
    finally:
        tcp.close()
        udp.close()
    out = Outcome(effects=sorted(set(effects)), error=report.get("error"),
                  refusal=report.get("refusal"), rc=rc,
                  stderr=stderr[-3000:], skipped=report.get("skipped"))
    if report.get("skipped"):
        out["status"] = "skipped"
    elif rc == "timeout":
        out["status"] = "hung"
    elif isinstance(rc, int) and rc < 0:
        out["status"] = "crashed"
        out["effects"].append(f"host killed by signal {-rc}")
    elif not report.get("done"):
        out["status"] = "crashed"
        out["effects"].append(f"host exited ({rc}) before its report")
    elif out["effects"]:
        out["status"] = "escaped"
    else:
        refusal = report.get("refusal")
        if refusal is None and any(t in stderr for t in REFUSAL_TEXT[:4]):
            refusal = "stderr"
        if refusal is None and report.get("holds_by"):
            refusal = "holds_by: " + report["holds_by"]
        out["refusal"] = refusal
        out["status"] = "held" if refusal else "no-refusal"
    if out["status"] != "held" or os.environ.get("RT_KEEP") != "1":
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    return out


# ---- the child side ---------------------------------------------------------------

def _sandbox_refusal(exc, seen=None):
    """The sandbox's PermissionError in exc's chain or group, or None."""
    seen = seen if seen is not None else set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, PermissionError) and exc.errno is None:
            return exc
        for sub in getattr(exc, "exceptions", ()) or ():
            found = _sandbox_refusal(sub, seen)
            if found is not None:
                return found
        reason = getattr(exc, "reason", None)  # urllib's URLError
        if isinstance(reason, BaseException):
            found = _sandbox_refusal(reason, seen)
            if found is not None:
                return found
        exc = exc.__cause__ or exc.__context__
    return None


def _host_state(sp):
    """Process-wide state a cell must not change (read outside any run)."""
    st = {"trace": repr(sys.gettrace()), "profile": repr(sys.getprofile()),
          "umask": os.umask(0o22), "uid": os.getuid(), "cwd": os.getcwd()}
    os.umask(st["umask"])
    try:
        import resource
        st["nofile"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    except Exception:
        pass
    if hasattr(sys, "monitoring"):
        st["monitoring"] = [(sys.monitoring.get_tool(i),
                             sys.monitoring.get_events(i)) for i in range(6)]
    st["default_ok_dests"] = repr(getattr(sp, "default_ok_dests", None))
    st["sp_attrs"] = sorted(f"{k}={id(v)}" for k, v in vars(sp).items()
                            if not k.startswith("__"))
    eng = getattr(sp, "_engine", None)
    if eng is not None:
        st["allow_entries"] = [repr(e) for e in eng.allow_entries()]
        st["data"] = repr(sorted(eng.get_data().items()))
        st["imports"] = list(eng.allowed_imports())
    rp = sp.RunPython
    st["RunPython"] = sorted(f"{k}={id(v)}" for k, v in vars(rp).items()
                             if k != "__doc__")
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        st["c_env"] = {k: (libc.getenv(k.encode()) or b"").decode()
                       for k in SENSITIVE_ENV}
    except Exception:
        pass
    st["env"] = {k: os.environ.get(k) for k in SENSITIVE_ENV}
    return st


def child_main(case_id, base, tcp_port, udp_port):
    import asyncio
    import threading
    import signal
    from cases import CASES
    case = CASES[case_id]
    world = os.path.join(base, "world")
    ok, out = os.path.join(world, "ok"), os.path.join(world, "outside")
    report = {"id": case_id}
    report_path = os.path.join(base, "meta", "report.json")

    def write_report():
        with open(report_path + ".tmp", "w") as f:
            json.dump(report, f)
        os.replace(report_path + ".tmp", report_path)

    import safepyrun as sp
    impl = "ours" if hasattr(sp, "_engine") else "published"
    if case.skip_if and eval(case.skip_if, {"sys": sys, "impl": impl}):
        report["skipped"] = case.skip_if
        write_report()
        return
    import shutil
    import tempfile as tf
    from pathlib import Path
    from types import SimpleNamespace
    flag = []
    touch = shutil.which("touch")
    marker = os.path.join(out, "marker")
    spa = sp if hasattr(sp, "allow") else __import__("pyskills")
    g = {"__name__": "__redteam__", "os": os, "sys": sys, "Path": Path, "SPA": spa,
         "shutil": shutil, "SimpleNamespace": SimpleNamespace,
         "OK": ok, "OUT": out, "WORLD": world, "VICTIM": os.path.join(out, "victim.txt"),
         "MARKER": marker, "TOUCH": touch, "CMD": f"{touch} {marker}",
         "PORT": tcp_port, "UPORT": udp_port, "FLAG": flag, "IMPL": impl}
    tf.tempdir = out  # as if the system temp dir were not an ok_dest
    if case.setup:
        exec(case.setup, g)
    # The trusted tools a case may use are registered by its setup (allow()).
    kw = {"ban_defs": False} if impl == "published" else {}
    warm = asyncio.new_event_loop()  # the engine may install its monitor lazily
    warm.run_until_complete(sp.RunPython(g={}, ok_dests=[ok], **kw)("1"))
    warm.close()
    state_before = _host_state(sp)
    report["before"] = snapshot(world)
    threads_before = threading.active_count()
    kw = {"ban_defs": False} if impl == "published" else {}
    py = sp.RunPython(g=g, ok_dests=[ok], **kw)
    g["python"] = py
    loop = asyncio.new_event_loop()
    write_report()

    def note(where, exc):
        ref = _sandbox_refusal(exc)
        if ref is not None and report.get("refusal") is None:
            report["refusal"] = where
            report["message"] = str(ref)[:500]
        return ref

    try:
        loop.run_until_complete(py(case.code))
        report["error"] = None
    except BaseException as e:  # SystemExit too: the host survives it here
        report["error"] = f"{type(e).__name__}: {e}"[:600]
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            report.setdefault("effects", []).append(
                f"{type(e).__name__} reached the host")
        note("cell", e)
    write_report()
    if case.after:
        try:
            exec(case.after, g)
        except BaseException as e:
            report["after_error"] = f"{type(e).__name__}: {e}"[:600]
            note("after", e)
    try:
        loop.run_until_complete(asyncio.sleep(0.06))  # pending callbacks run
        loop.run_until_complete(loop.shutdown_default_executor())
    except BaseException as e:
        note("loop", e)
    write_report()

    effects = report.setdefault("effects", [])
    if flag:
        effects.append(f"host flag set: {flag!r}")
    if threading.active_count() > threads_before:
        names = [t.name for t in threading.enumerate()]
        effects.append(f"threads still running: {names}")
    state_after = _host_state(sp)
    for k in state_before:
        if state_before[k] != state_after.get(k):
            effects.append(f"host state changed: {k}")
    # Policy probes: the same runner and a new one still refuse.
    probes = [("write", f"open({out + '/probe-write'!r}, 'w').close()",
               os.path.join(out, "probe-write")),
              ("system", f"os.system('{touch} {out}/probe-marker')",
               os.path.join(out, "probe-marker"))]
    fresh = sp.RunPython(g={"os": os}, ok_dests=[ok], **kw)
    for runner_name, runner in (("same runner", py), ("new runner", fresh)):
        for what, code, path in probes:
            try:
                loop.run_until_complete(runner(code))
                refused = False
            except BaseException as e:
                refused = _sandbox_refusal(e) is not None
            if not refused or os.path.exists(path):
                effects.append(f"policy changed: {runner_name} allowed {what}")
            for p in (path,):
                if os.path.exists(p):
                    os.remove(p)
    # Host code outside a run stays ungated (no stuck gate either).
    try:
        with open(os.path.join(ok, "host-write"), "w") as f:
            f.write("x")
    except BaseException as e:
        effects.append(f"host write outside a run failed: {e!r}")
    if case.holds_by:
        report["holds_by"] = case.holds_by
    if case.check:
        msg = eval(case.check, g)
        if msg:
            effects.append(msg)
    report["done"] = True
    write_report()
    sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
