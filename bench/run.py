#!/usr/bin/env python3
"""safepyrun benchmark driver:  python3 bench/run.py [--quick]

Standard library only; runs under any python3 >= 3.8.  It

1. creates the bench virtual environments under bench/.venvs/ (once; later
   runs reuse them and rebuild ours only when the checkout's sources change):
     ours-pyX.Y       this checkout (pip install of a copy of it) + numpy,
                      for the default interpreter and for the 3.12+ one;
                      plain compile+exec ("exec") also runs in these
     published-pyX.Y  safepyrun + fastaudit from PyPI (+ numpy), 3.12+ only
     peers-pyX.Y      pydantic-monty, RestrictedPython, smolagents
     plot             matplotlib, for bench/results.png
2. starts one worker process per system (bench/worker.py, run by that
   system's interpreter) and alternates them round by round (A B C A B C ...,
   rotating who goes first), collecting many samples per system;
3. measures W7 (import time, memory) in fresh processes, alternating too;
4. writes bench/RESULTS.md, bench/results.json, bench/results.png and the
   headline block of bench/README.md from the medians of this run.
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENVS = os.path.join(BENCH, ".venvs")
LOGS = os.path.join(VENVS, "logs")
sys.path.insert(0, BENCH)
import workloads as W  # noqa: E402

PEERS = [  # (system, pip requirement, import name)
    ("restrictedpython", "RestrictedPython", "RestrictedPython"),
    ("smolagents", "smolagents", "smolagents"),
    ("monty", "pydantic-monty", "pydantic_monty"),
]
PEER_LABELS = {"restrictedpython": "RestrictedPython", "smolagents": "smolagents LocalPythonExecutor",
               "monty": "pydantic-monty"}


# What the real-data workloads (W8-W11) import, in ours', exec's and the
# published implementation's venvs alike.
DATA_PACKAGES = ("numpy", "pandas", "matplotlib")


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Interpreters

def py_version(exe):
    try:
        out = subprocess.run([exe, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.version.split()[0])"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            mm, full = out.stdout.split()
            return mm, full
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return None, None


def find_py312plus():
    """(path, how it was found) for the published implementation, or (None, reason)."""
    looked = []
    cands = [("/usr/bin/python3.13", "/usr/bin/python3.13")]
    root = None
    if shutil.which("pyenv"):
        try:
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            root = None
    root = root or os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for minor in ("3.13", "3.12"):
        for p in sorted(glob.glob(os.path.join(root, "versions", minor + "*", "bin", "python" + minor)), reverse=True):
            cands.append((p, "pyenv (%s)" % p))
    for c, how in cands:
        looked.append(c)
        if os.path.exists(c):
            mm, _ = py_version(c)
            if mm and tuple(map(int, mm.split("."))) >= (3, 12):
                return c, how
    return None, ("no Python 3.12+ interpreter found (/usr/bin/python3.13 is absent; looked at %s)"
                  % ", ".join(looked[1:] or [os.path.join(root, "versions", "3.1[23]*")]))


# ---------------------------------------------------------------------------
# Virtual environments

def pip_error(path):
    """The telling error lines of the last command in a pip log (not pip's boilerplate)."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    last = text.rsplit("\n$ ", 1)[-1].splitlines()[1:]
    boiler = ("subprocess-exited-with-error", "metadata-generation-failed", "This error originates",
              "See above", "This is an issue with the package", "hint:", "did not run successfully",
              "Encountered error", "WARNING: Location", "legacy-install-failure", "Failed to build")
    keep = []
    for l in last:
        l = l.strip(" │╰─>×\t")
        if re.search(r"error|Error|ERROR|cannot be found|No matching distribution", l) and not any(b in l for b in boiler):
            if l not in keep:
                keep.append(l)
    return " / ".join(keep[-3:]) or tail(path, 3)


def tail(path, n=12):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if l.strip() and "WARNING: Location" not in l]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


class Venv:
    def __init__(self, name, base_python):
        self.name, self.base = name, base_python
        self.dir = os.path.join(VENVS, name)
        self.python = os.path.join(self.dir, "bin", "python")
        self.stamp_path = os.path.join(self.dir, ".bench-stamp.json")
        self.log = os.path.join(LOGS, name + ".log")

    def stamp(self):
        try:
            with open(self.stamp_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def set_stamp(self, key, value):
        s = self.stamp()
        s[key] = value
        with open(self.stamp_path, "w") as f:
            json.dump(s, f, indent=1)

    def _run(self, argv, timeout=1800):
        with open(self.log, "a") as lf:
            lf.write("\n$ %s\n" % " ".join(argv))
            lf.flush()
            try:
                return subprocess.run(argv, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                lf.write("timed out after %ss\n" % timeout)
                return -1

    def ensure(self):
        """Create the venv if needed.  Returns None or a reason it cannot be made."""
        os.makedirs(LOGS, exist_ok=True)
        if os.path.exists(self.python) and self.stamp().get("base") == self.base:
            return None
        shutil.rmtree(self.dir, ignore_errors=True)
        log("  creating venv %s (%s)" % (self.name, self.base))
        if self._run([self.base, "-m", "venv", self.dir]) != 0:
            return "could not create venv with %s: %s" % (self.base, tail(self.log, 3))
        self.set_stamp("base", self.base)
        return None

    def pip(self, *reqs, key=None, flags=()):
        """pip install reqs unless already done (stamped).  None or failure reason."""
        key = key or " ".join(reqs)
        if self.stamp().get("pip:" + key) == "ok":
            return None
        log("  %s: pip install %s" % (self.name, key))
        rc = self._run([self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *flags, *reqs])
        if rc != 0:
            return "pip install %s failed: %s" % (key, pip_error(self.log))
        self.set_stamp("pip:" + key, "ok")
        return None


def checkout_files():
    """The files that go into building ours (everything but tests, bench, caches, build output)."""
    skip_dirs = {".git", "bench", "tests", "build", "dist", "__pycache__", ".venv", ".venvs", "examples",
                 ".ci", ".pytest_cache", ".hypothesis"}
    out = []
    for dp, dns, fns in os.walk(ROOT):
        dns[:] = sorted(d for d in dns if d not in skip_dirs and not d.endswith(".egg-info"))
        for fn in sorted(fns):
            if fn.endswith((".so", ".pyc", ".o", ".pyd")):
                continue
            out.append(os.path.relpath(os.path.join(dp, fn), ROOT))
    return out


def checkout_hash(files):
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(ROOT, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


OURS_CHECK = ("import asyncio, safepyrun\n"
              "r = asyncio.run(safepyrun.RunPython(g={})('1+1'))\n"
              "assert r == 2, 'RunPython()(\"1+1\") returned %r, not 2' % (r,)\n"
              "print(getattr(safepyrun, '__file__', '?'))\n")


def install_ours(venv, files, digest):
    """Install this checkout into venv (from a clean copy, so the checkout stays untouched)."""
    st = venv.stamp()
    if st.get("ours_hash") == digest:
        return st.get("ours_error")  # unchanged sources: same result as last time
    err = venv.pip("setuptools>=64", "wheel")
    if err:
        return err
    log("  %s: building ours from the checkout (sources %s)" % (venv.name, digest))
    with tempfile.TemporaryDirectory(prefix="safepyrun-src-") as tmp:
        for rel in files:
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), os.path.join(tmp, rel))
        rc = venv._run([venv.python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--no-build-isolation", "--no-deps", "--force-reinstall", tmp])
    error = None
    if rc != 0:
        error = "does not build/install yet: " + pip_error(venv.log)
    else:
        with tempfile.TemporaryDirectory() as cwd:
            p = subprocess.run([venv.python, "-I", "-c", OURS_CHECK], capture_output=True, text=True,
                               cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            error = "installed but `await RunPython()('1+1') == 2` fails: " + " | ".join(
                (p.stderr or p.stdout).strip().splitlines()[-3:])
    venv.set_stamp("ours_hash", digest)
    venv.set_stamp("ours_error", error)
    return error


# ---------------------------------------------------------------------------
# Systems

class Sys:
    def __init__(self, key, kind, label, venv, interp, worker_name=None):
        self.key, self.kind, self.label, self.venv, self.interp = key, kind, label, venv, interp
        self.worker_name = worker_name or kind
        self.na = None          # reason the whole system is unavailable
        self.info = {}
        self.proc = None
        self.errlog = None

    @property
    def is_exec(self):
        return self.kind == "exec"


def setup(args):
    """Build venvs; return (systems, environment notes)."""
    env = {"notes": []}
    main_py = os.path.realpath(shutil.which(args.python) or args.python)
    main_mm, main_full = py_version(main_py)
    if not main_mm:
        sys.exit("cannot run %s" % main_py)
    env["interpreters"] = {main_mm: {"path": main_py, "version": main_full, "role": "default ($PYTHON)"}}
    if args.published_python == "none":
        new_py, how = None, "disabled with --published-python none"
    elif args.published_python:
        new_py, how = args.published_python, "--published-python %s" % args.published_python
    else:
        new_py, how = find_py312plus()
    new_mm = None
    if new_py:
        new_mm, new_full = py_version(new_py)
        if new_mm != main_mm:
            env["interpreters"][new_mm] = {"path": new_py, "version": new_full, "role": "3.12+ for the published implementation, found at " + how}
        else:
            env["interpreters"][main_mm]["role"] += "; also the 3.12+ interpreter"
        log("  3.12+ interpreter for the published implementation: %s" % how)
        if how != "/usr/bin/python3.13":
            log("  NOTE: /usr/bin/python3.13 is not present; using %s" % new_py)
            env["notes"].append("/usr/bin/python3.13 is not present on this machine; the 3.12+ interpreter is %s." % how)
    else:
        log("  NOTE: published safepyrun/fastaudit will be n/a: " + how)
        env["notes"].append("Published safepyrun/fastaudit NOT measured: " + how + ".")
    env["py312_reason"] = None if new_py else how

    interps = [(main_mm, main_py)] + ([(new_mm, new_py)] if new_py and new_mm != main_mm else [])
    files = checkout_files()
    digest = checkout_hash(files)
    env["checkout_hash"] = digest
    systems = []
    for mm, py in interps:
        v = Venv("ours-py" + mm, py)
        err = None if args.no_setup else (v.ensure() or v.pip(*DATA_PACKAGES))
        sx = Sys("exec-" + mm, "exec", "exec (%s)" % mm, v, mm)
        so = Sys("ours-" + mm, "ours", "ours (%s)" % mm, v, mm)
        if err:
            sx.na = so.na = "venv: " + err
        elif not args.no_setup:
            so.na = install_ours(v, files, digest)
        systems += [sx, so]
        if so.na:
            log("  ours (%s): n/a: %s" % (mm, so.na))
    pub_mm = new_mm
    if new_py:
        v = Venv("published-py" + new_mm, new_py)
        sp = Sys("published-" + new_mm, "published", "published (%s)" % new_mm, v, new_mm)
        err = None if args.no_setup else (v.ensure() or v.pip(*DATA_PACKAGES) or v.pip("safepyrun", "fastaudit"))
        sp.na = ("venv: " + err) if err else None
        systems.append(sp)
    else:
        sp = Sys("published", "published", "published", None, None)
        sp.na = how
        systems.append(sp)
    peer_mm, peer_py = (new_mm, new_py) if new_py else (main_mm, main_py)
    env["pub_interp"] = pub_mm
    if not args.no_peers:
        v = Venv("peers-py" + peer_mm, peer_py)
        verr = None if args.no_setup else v.ensure()
        for key, req, _mod in PEERS:
            s = Sys("%s-%s" % (key, peer_mm), key, "%s (%s)" % (PEER_LABELS[key], peer_mm), v, peer_mm)
            s.na = ("venv: " + verr) if verr else (None if args.no_setup else v.pip(req))
            if s.na:
                s.na = "does not install: " + s.na
            systems.append(s)
    return systems, env


# ---------------------------------------------------------------------------
# Workers

class WorkerDied(Exception):
    pass


def worker_env(cfgdir):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PYTHON") or k in ("VIRTUAL_ENV",):
            env.pop(k)
    env["XDG_CONFIG_HOME"] = cfgdir  # no user safepyrun config.py in the measurements
    return env


def system_env(ctx, s):
    """The environment of one system's processes: its own empty
    XDG_CONFIG_HOME.  Not shared: the published safepyrun writes a default
    `safepyrun/config.py` there on import, which our package (same config
    path, by design) would then run, and its import would be measured with
    another system's config."""
    cfg = os.path.join(ctx["cwd"], "cfg-" + s.key)
    os.makedirs(cfg, exist_ok=True)
    return worker_env(cfg)


def start_worker(s, ctx, timeout):
    s.errlog = open(os.path.join(LOGS, "worker-%s.log" % s.key), "a")
    s.proc = subprocess.Popen([s.venv.python, "-I", os.path.join(BENCH, "worker.py"), s.worker_name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=s.errlog,
                              cwd=ctx["cwd"], env=system_env(ctx, s), text=True, bufsize=1)
    msg = read_reply(s, timeout)
    if not msg.get("ready"):
        stop_worker(s)
        raise WorkerDied("does not start: %s" % msg.get("error"))
    s.info.update(msg.get("info", {}))


def read_reply(s, timeout):
    r, _, _ = select.select([s.proc.stdout], [], [], timeout)
    if not r:
        stop_worker(s)
        raise WorkerDied("timed out after %ds" % timeout)
    line = s.proc.stdout.readline()
    if not line:
        rc = s.proc.wait()
        s.errlog.flush()
        raise WorkerDied("worker exited with code %s: %s" % (rc, tail(s.errlog.name, 3)))
    return json.loads(line)


def stop_worker(s):
    if s.proc and s.proc.poll() is None:
        try:
            s.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            s.proc.stdin.flush()
            s.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            s.proc.kill()
            s.proc.wait()
    s.proc = None


def run_cells(systems, mode, ctx, only, timeout):
    """Alternate systems round by round on W1..W6.  Returns {sys: {w: samples | 'n/a: reason'}}."""
    res = {s.key: {} for s in systems}
    live = [s for s in systems if not s.na]
    rounds = ctx["rounds"]
    for w in [x for x in W.CELL_WORKLOADS if x in only]:
        inner, count = W.SAMPLING[mode][w]
        log("%s: %s — %d rounds x %d samples%s" % (w, W.WORKLOADS[w]["title"], rounds, count,
                                                    " x %d calls" % inner if inner > 1 else ""))
        t0 = time.time()
        for r in range(rounds):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for s in order:
                if isinstance(res[s.key].get(w), str):
                    continue
                try:
                    if s.proc is None:
                        start_worker(s, ctx, timeout)
                    s.proc.stdin.write(json.dumps({"op": "run", "w": w, "inner": inner, "count": count}) + "\n")
                    s.proc.stdin.flush()
                    msg = read_reply(s, timeout)
                except (WorkerDied, OSError) as e:
                    stop_worker(s)
                    res[s.key][w] = "worker crashed or hung during %s: %s" % (w, e)
                    continue
                if "na" in msg:
                    res[s.key][w] = msg["na"]
                    if "tb" in msg:
                        s.errlog.write(msg["tb"])
                else:
                    res[s.key].setdefault(w, []).extend(msg["times"])
        log("   done in %.1fs: %s" % (time.time() - t0, ", ".join(
            "%s %s" % (s.label, fmt_time(statistics.median(res[s.key][w])) if isinstance(res[s.key].get(w), list) else "n/a")
            for s in live if not (isinstance(res[s.key].get(w), str) and s.kind in PEER_LABELS))))
    for s in systems:
        stop_worker(s)
        if s.errlog:
            s.errlog.close()
    return res


W7_SNIPPET = r"""
import time
t0 = time.perf_counter()
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1])
r0 = rss()
t1 = time.perf_counter()
%s
t2 = time.perf_counter()
r1 = rss()
import os
print(t2 - t1, (r1 - r0) * os.sysconf('SC_PAGE_SIZE'))
"""


def run_import(systems, ctx, nprocs, timeout):
    """W7: fresh processes, alternating systems; exec = bare interpreter (no import)."""
    res = {}
    cands = [s for s in systems if not s.na and s.kind in ("exec", "ours", "published")]
    log("W7: import safepyrun in %d fresh processes per system, alternating" % nprocs)
    for s in systems:
        if s.kind in PEER_LABELS:
            res[s.key] = "W7 measures `import safepyrun`; not applicable to peers"
    for s in cands:
        res[s.key] = {"import": [], "rss": [], "wall": []}
    for i in range(nprocs + 1):  # the first pass warms the .pyc caches and is discarded
        order = cands[i % len(cands):] + cands[:i % len(cands)] if cands else []
        for s in order:
            if isinstance(res[s.key], str):
                continue
            code = W7_SNIPPET % ("pass" if s.is_exec else "import safepyrun")
            t0 = time.perf_counter()
            try:
                p = subprocess.run([s.venv.python, "-I", "-c", code], capture_output=True, text=True,
                                   cwd=ctx["cwd"], env=system_env(ctx, s), timeout=timeout,
                                   stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                res[s.key] = "timed out"
                continue
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                res[s.key] = "import fails: " + " | ".join(p.stderr.strip().splitlines()[-2:])
                continue
            if i == 0:
                continue
            imp, rss = p.stdout.split()
            res[s.key]["import"].append(float(imp))
            res[s.key]["rss"].append(int(rss))
            res[s.key]["wall"].append(wall)
    return res


# ---------------------------------------------------------------------------
# Analysis and reports

def fmt_time(t):
    if t is None:
        return "n/a"
    a = abs(t)
    if a < 1e-6:
        return "%.0f ns" % (t * 1e9)
    if a < 1e-3:
        return "%.2f µs" % (t * 1e6) if a < 1e-5 else "%.1f µs" % (t * 1e6)
    if a < 1:
        return "%.2f ms" % (t * 1e3) if a < 1e-2 else "%.1f ms" % (t * 1e3)
    return "%.2f s" % t


def fmt_ratio(r):
    if r is None:
        return "n/a"
    if r >= 100:
        return "%.0fx" % r
    if r >= 10:
        return "%.1fx" % r
    return "%.2fx" % r


def quartiles(xs):
    xs = sorted(xs)
    if len(xs) < 4:
        return xs[0], xs[-1]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def analyse(systems, cells, imports, env, args):
    by = {s.key: s for s in systems}
    stats = {}
    for s in systems:
        st = stats[s.key] = {}
        for w in W.CELL_WORKLOADS + ["W7"]:
            if s.na:
                st[w] = {"na": "%s unavailable (see Systems)" % s.label, "sysna": True}
                continue
            data = imports.get(s.key) if w == "W7" else cells.get(s.key, {}).get(w)
            if data is None:
                st[w] = {"na": "not run (--only)"}
            elif isinstance(data, str):
                st[w] = {"na": data}
            elif w == "W7":
                if not data["import"]:
                    st[w] = {"na": "no samples"}
                    continue
                st[w] = {"median": statistics.median(data["import"]), "rss": statistics.median(data["rss"]),
                         "wall": statistics.median(data["wall"]), "n": len(data["import"])}
                lo, hi = quartiles(data["import"])
                st[w]["iqr"] = [lo, hi]
            else:
                lo, hi = quartiles(data)
                st[w] = {"median": statistics.median(data), "n": len(data), "iqr": [lo, hi]}
    # ratios to plain exec on the same interpreter
    for s in systems:
        base = by.get("exec-%s" % s.interp)
        for w, st in stats[s.key].items():
            if "median" not in st or base is None or "median" not in stats[base.key].get(w, {}):
                continue
            b = stats[base.key][w]
            if w == "W7":
                st["ratio"] = st["wall"] / b["wall"]
                st["overhead"] = st["median"] if not s.is_exec else 0.0
            else:
                st["ratio"] = st["median"] / b["median"]
                st["overhead"] = st["median"] - b["median"]
                st["noise"] = (b["iqr"][1] - b["iqr"][0]) / 2
    return stats


def compare(stats, env):
    """Our overhead vs the published one's, on the published implementation's interpreter."""
    pm = env.get("pub_interp")
    rows = []
    for w in W.CELL_WORKLOADS + ["W7"]:
        o = stats.get("ours-%s" % pm, {}).get(w, {}) if pm else {}
        p = stats.get("published-%s" % pm, {}).get(w, {}) if pm else {}
        row = {"w": w, "ours": o, "pub": p}
        if "overhead" not in o or "overhead" not in p:
            why = []
            if not pm:
                why.append(env.get("py312_reason") or "no 3.12+ interpreter")
            else:
                if "overhead" not in o:
                    why.append("ours: " + o.get("na", "no data"))
                if "overhead" not in p:
                    why.append("published: " + p.get("na", "no data"))
            row.update(verdict="not measured", why="; ".join(why), factor=None)
        else:
            oo, po = o["overhead"], p["overhead"]
            if oo <= 0 and po <= 0:
                row.update(factor=None, verdict="met", why="neither has measurable overhead")
            elif oo <= 0:
                row.update(factor=float("inf"), verdict="met", why="ours at the floor")
            else:
                f = po / oo
                row.update(factor=f, verdict="met" if f >= 10 else "NOT met", why="")
            noise = max(o.get("noise", 0), p.get("noise", 0))
            if w != "W7" and noise and abs(oo) < noise:
                row["why"] = (row["why"] + "; " if row["why"] else "") + \
                    "our overhead is within the run-to-run spread of plain exec (±%s)" % fmt_time(noise)
        rows.append(row)
    return rows


def targets(systems, stats, cmp_rows, env):
    out = []
    ours = [s for s in systems if s.kind == "ours"]
    for s in ours:
        st = stats[s.key]
        w1, w6, w7 = st.get("W1", {}), st.get("W6", {}), st.get("W7", {})
        out.append(("Trivial-cell latency within 1.5x of bare compile+exec (W1)", s.interp,
                    fmt_ratio(w1.get("ratio")) if "ratio" in w1 else "n/a: " + w1.get("na", "no data"),
                    None if "ratio" not in w1 else w1["ratio"] <= 1.5))
        out.append(("Pure-Python loop within 5% of unsandboxed (W6)", s.interp,
                    ("%+.1f%% (%s)" % ((w6["ratio"] - 1) * 100, fmt_ratio(w6["ratio"]))) if "ratio" in w6 else "n/a: " + w6.get("na", "no data"),
                    None if "ratio" not in w6 else w6["ratio"] <= 1.05))
        for w, limit, title in [("W2", 1.2, "20-line cell within 1.2x of plain exec (W2)"),
                                ("W5", 1.1, "100,000 trusted native calls within 1.1x (W5)")] + [
                (w, 1.03, "%s within 3%% of plain exec (%s)" % (W.WORKLOADS[w]["short"].split(" ", 1)[1], w))
                for w in W.REAL_DATA]:
            sw = st.get(w, {})
            out.append((title, s.interp,
                        ("%s (%+.1f%%)" % (fmt_ratio(sw["ratio"]), (sw["ratio"] - 1) * 100)) if "ratio" in sw
                        else "n/a: " + sw.get("na", "no data"),
                        None if "ratio" not in sw else sw["ratio"] <= limit))
        out.append(("`import safepyrun` under 5 ms (W7)", s.interp,
                    fmt_time(w7["median"]) if "median" in w7 else "n/a: " + w7.get("na", "no data"),
                    None if "median" not in w7 else w7["median"] < 5e-3))
    c = peer_claim(systems, stats)
    if c:
        o_s, best, o, b = c
        out.append(("Trivial cell faster per call than every in-process peer (W1)", o_s.interp,
                    "ours %s vs %s %s" % (fmt_time(o), best.label, fmt_time(b)), o < b))
    for r in cmp_rows:
        meas = ("n/a: " + r["why"]) if r["verdict"] == "not measured" else (
            "%s smaller (ours %s vs published %s)%s" % (
                "∞x" if r["factor"] == float("inf") else ("–" if r["factor"] is None else fmt_ratio(r["factor"])),
                fmt_time(r["ours"]["overhead"]), fmt_time(r["pub"]["overhead"]),
                ("; " + r["why"]) if r["why"] else ""))
        out.append(("Overhead vs published at least 10x smaller (%s)" % r["w"], env.get("pub_interp") or "-",
                    meas, None if r["verdict"] == "not measured" else r["verdict"] == "met"))
    return out


# Why a target can stay unmet: printed under the targets table for each
# target this run did not meet (keyed by the target's workload).
NOT_MET_REASONS = {
    "W1": "the compile itself is now one direct compile of the text (no syntax-tree objects, "
          "`src/split.c`); what remains per call is the run machinery around it: two "
          "`asyncio.all_tasks()` snapshots to find tasks the cell started (Python code in asyncio), "
          "the shell integrity check, entering and leaving the run's context, the namespace "
          "sync in and export out, and the linecache entry (`src/cell.c`, `src/runner.c`, "
          "`src/shell.c`)",
    "W2": "the same per-call machinery as W1, plus the audit events of the cell's imports and "
          "prints, each judged by the hook",
    "W5": "no exact fast path exists: 3.12+ must see every call at a call site that calls a "
          "trusted native (disabling the site would let a different callee through it), so "
          "each call costs one sys.monitoring CALL callback; 3.11 has no sys.monitoring, and the "
          "C profile function that replaces it sees every call and return of the cell's step. "
          "See 'Trusted natives: the per-call check against its floor' below for the floor",
    "W6": "3.11 only: while any native or gated function is registered (W4 and W5 registered "
          "theirs earlier in the same worker, as a host's presets would), each step of a cell "
          "runs under the C profile function, and CPython 3.11 then sends every instruction "
          "through its tracing dispatch with specialisation off, even for a loop without calls",
}
# Real data work: on 3.11, the profile function (as W6) runs for every call
# inside the library; elsewhere, see the spread.
REAL_DATA_311 = ("3.11: the C profile function runs for every call inside the library while any "
                 "native or gated function is registered (see W6); 3.12+ watches cell code only")


def verdict(v):
    return "not measured" if v is None else ("**met**" if v else "**NOT met**")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, shell=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor()
    return {"uname": sh("uname -a") or " ".join(platform.uname()), "cpu": cpu or "unknown",
            "cores": os.cpu_count(), "git": sh("git -C %s rev-parse --short HEAD 2>/dev/null" % ROOT) or "no commit yet",
            "dirty": bool(sh("git -C %s status --porcelain -- src safepyrun setup.py pyproject.toml 2>/dev/null" % ROOT))}


def write_results(path, systems, stats, cmp_rows, tg, env, args, meta):
    mode = "quick" if args.quick else "full"
    L = []
    L.append("# safepyrun benchmark results\n")
    L.append("Generated by `bench/run.py` (%s mode: `make bench%s`) on %s. Every number below comes from "
             "this run; rerun to regenerate, do not edit.\n" % (mode, "-quick" if args.quick else "", meta["date"]))
    L.append("![ratio to plain exec](results.png)\n")
    L.append("## Machine\n")
    m = meta["machine"]
    L.append("- `%s`" % m["uname"])
    L.append("- CPU: %s, %s logical cores" % (m["cpu"], m["cores"]))
    for mm, i in sorted(env["interpreters"].items()):
        L.append("- Python %s: `%s` — %s" % (i["version"], i["path"], i["role"]))
    L.append("- Checkout: %s%s, sources hash %s" % (m["git"], " with uncommitted changes" if m["dirty"] else "", env["checkout_hash"]))
    L.append("- Rounds: %d per workload, systems alternated (A B C … A B C …, who goes first rotates); "
             "medians of all samples; wall time %.0f s" % (meta["rounds"], meta["elapsed"]))
    for n in env["notes"]:
        L.append("- **Note:** " + n)
    L.append("")
    L.append("## Systems\n")
    L.append("| system | interpreter | versions | status |")
    L.append("|---|---|---|---|")
    for s in systems:
        vers = ", ".join("%s %s" % (k, v) for k, v in s.info.items() if k not in ("python", "executable", "module") and v)
        L.append("| %s | %s | %s | %s |" % (s.label, s.info.get("python") or s.interp or "-", vers or "-",
                                            "n/a: " + s.na if s.na else "ran"))
    L.append("")
    L.append("## Results\n")
    L.append("Median time per %s; in brackets the ratio to plain `compile`+`exec` of the same code on the same "
             "interpreter (the floor). W7 is the in-process `import safepyrun` time; its ratio is the whole fresh "
             "process (start + import) against a bare interpreter start.\n" % "unit (W1, W2: one `await pyrun(code)` call; W3–W6, W8–W11: one cell)")
    shown = [s for s in systems]
    L.append("| workload | " + " | ".join(s.label for s in shown) + " |")
    L.append("|---|" + "---|" * len(shown))
    nas = []
    for w in W.CELL_WORKLOADS + ["W7"]:
        cells = []
        for s in shown:
            st = stats[s.key][w]
            if "median" in st:
                c = "**%s**" % fmt_time(st["median"]) if not s.is_exec else fmt_time(st["median"])
                if "ratio" in st and not s.is_exec:
                    c += " (%s)" % fmt_ratio(st["ratio"])
                if w == "W7" and s.is_exec:
                    c = "— (bare start %s)" % fmt_time(st["wall"])
                cells.append(c)
            else:
                reason = st.get("na", "no data")
                if s.na:
                    cells.append("n/a (see Systems)")
                else:
                    if reason not in nas:
                        nas.append(reason)
                    cells.append("n/a [%d]" % (nas.index(reason) + 1))
        L.append("| %s | " % W.WORKLOADS[w]["short"] + " | ".join(cells) + " |")
    L.append("")
    if nas:
        L.append("n/a reasons:\n")
        for i, reason in enumerate(nas, 1):
            L.append("%d. %s" % (i, reason.replace("|", "/")))
        L.append("")
    L.append("Workloads (defined once in `bench/workloads.py`, run identically on every system):\n")
    for w in W.CELL_WORKLOADS + ["W7"]:
        L.append("- **%s** — %s" % (w, W.WORKLOADS[w]["title"]))
    L.append("")
    L += peer_section(systems, stats)
    L.append("## Overhead against the published implementation\n")
    pm = env.get("pub_interp")
    L.append("Overhead = median time minus plain `exec` on the same interpreter (Python %s); for W7 it is the "
             "import time itself. Target: ours at least 10x smaller on every workload.\n" % (pm or "3.12+: not available"))
    L.append("| workload | plain exec | ours overhead | published overhead | published / ours | verdict |")
    L.append("|---|---|---|---|---|---|")
    for r in cmp_rows:
        ex = stats.get("exec-%s" % pm, {}).get(r["w"], {}) if pm else {}
        exs = fmt_time(ex["median"]) if "median" in ex and r["w"] != "W7" else ("—" if r["w"] == "W7" else "n/a")
        oo = fmt_time(r["ours"].get("overhead")) if "overhead" in r["ours"] else "n/a"
        po = fmt_time(r["pub"].get("overhead")) if "overhead" in r["pub"] else "n/a"
        f = r["factor"]
        fs = "∞" if f == float("inf") else ("–" if f is None else fmt_ratio(f))
        v = verdict(None if r["verdict"] == "not measured" else r["verdict"] == "met")
        if r["verdict"] == "not measured":
            v += ": " + r["why"]
        elif r["why"]:
            v += " (%s)" % r["why"]
        L.append("| %s | %s | %s | %s | %s | %s |" % (W.WORKLOADS[r["w"]]["short"], exs, oo, po, fs, v.replace("|", "/")))
    L.append("")
    L.append("## Performance targets (DESIGN.md, issue 12)\n")
    L.append("| target | Python | measured | verdict |")
    L.append("|---|---|---|---|")
    for name, interp, meas, ok in tg:
        L.append("| %s | %s | %s | %s |" % (name, interp, meas.replace("|", "/"), verdict(ok)))
    L.append("")
    why = []
    for name, interp, meas, ok in tg:
        m = re.search(r"\((W\d+)\)$", name)
        if ok is not False or not m or "published" in name:
            continue
        w = m.group(1)
        line_key = "- **%s, Python %s**" % (W.WORKLOADS[w]["short"], interp)
        if any(x.startswith(line_key + ":") for x in why):
            continue
        o = stats.get("ours-%s" % interp, {}).get(w, {})
        e = stats.get("exec-%s" % interp, {}).get(w, {})
        spread = ("iqr" in o and "iqr" in e and o["iqr"][0] <= e["iqr"][1] and e["iqr"][0] <= o["iqr"][1])
        if w in W.REAL_DATA:
            reason = REAL_DATA_311 if interp == "3.11" else ""
            if spread:
                reason = (reason + "; " if reason else "") + (
                    "ours and plain exec overlap (interquartile ranges %s–%s and %s–%s): this run on "
                    "this machine cannot resolve a difference of a few percent" % (
                        fmt_time(o["iqr"][0]), fmt_time(o["iqr"][1]), fmt_time(e["iqr"][0]), fmt_time(e["iqr"][1])))
            reason = reason or "not explained by this run"
        elif w == "W7":
            bare = stats.get("exec-%s" % interp, {}).get("W7", {})
            reason = ("timed in fresh processes on a machine shared with other jobs; the bare "
                      "interpreter start took %s in this run" % fmt_time(bare["wall"])) if "wall" in bare \
                else "not explained by this run"
        elif w == "W6" and interp != "3.11":
            reason = "within the spread" if spread else "not explained by this run"
        elif w in NOT_MET_REASONS:
            reason = NOT_MET_REASONS[w]
        else:
            continue
        why.append("%s: %s." % (line_key, reason))
    if why:
        L.append("Why the targets not met are not met:\n")
        L += why
        L.append("")
    L.append("Exact fast paths per interpreter for trusted natives (issue 12): on 3.12 and 3.13 a "
             "trusted native's call site keeps its CALL event (never DISABLEd, so no other callee "
             "passes unseen) and the check is a pointer compare against the last trusted callable, "
             "with a pointer-set pre-filter that answers 'not trusted' for every other callable "
             "without allocating; on 3.11 there is no exact fast path: the profile function sees every "
             "call of the step, and the same cache and pre-filter keep the check to a compare. The "
             "measured floors are in 'Trusted natives: the per-call check against its floor'.\n")
    L.append("## Import time and memory (W7)\n")
    L.append("| system | `import safepyrun` (median) | resident memory added | fresh process wall | ratio to bare start |")
    L.append("|---|---|---|---|---|")
    for s in systems:
        st = stats[s.key]["W7"]
        if s.kind in PEER_LABELS:
            continue
        if "median" in st:
            if s.is_exec:
                L.append("| %s (bare interpreter) | — | — | %s | 1.00x |" % (s.label, fmt_time(st["wall"])))
            else:
                L.append("| %s | %s | %.1f MB | %s | %s |" % (s.label, fmt_time(st["median"]), st["rss"] / 1e6,
                                                              fmt_time(st["wall"]), fmt_ratio(st.get("ratio"))))
        else:
            L.append("| %s | n/a: %s | | | |" % (s.label, st.get("na", "").replace("|", "/")))
    L.append("")
    L.append("## Spread\n")
    L.append("Interquartile range of the samples behind each median (n = number of samples).\n")
    L.append("| system | " + " | ".join(w for w in W.CELL_WORKLOADS + ["W7"]) + " |")
    L.append("|---|" + "---|" * (len(W.CELL_WORKLOADS) + 1))
    for s in systems:
        cells = []
        for w in W.CELL_WORKLOADS + ["W7"]:
            st = stats[s.key][w]
            cells.append("%s–%s (n=%d)" % (fmt_time(st["iqr"][0]), fmt_time(st["iqr"][1]), st["n"])
                         if "iqr" in st and not (s.is_exec and w == "W7") else "–")
        L.append("| %s | " % s.label + " | ".join(cells) + " |")
    L.append("")
    pp = env.get("pyperf") or {}
    L.append("## pyperf statistics\n")
    if pp.get("rows"):
        L.append("The same samples as a pyperf suite, `bench/results.pyperf.json` (one benchmark per system and "
                 "workload; `python -m pyperf stats` / `compare_to` read it). Mean ± standard deviation as pyperf "
                 "computes them:\n")
        L += pp["rows"]
    else:
        L.append("n/a: %s" % pp.get("error", "not run"))
    L.append("")
    L.append("## Method\n")
    L.append("- Each system runs in its own worker process (`bench/worker.py`) under its own virtual environment in "
             "`bench/.venvs/`; the driver (`bench/run.py`) sends every system the same workload in turn, round after "
             "round, rotating which system goes first.")
    L.append("- A sample of W1/W2 times a batch of back-to-back calls on one reused asyncio event loop and divides "
             "by the batch size, so it includes everything the system does per call (`await pyrun(code)`: compile, "
             "checks, namespace export). W3–W6 and W8–W11 time one cell. `gc.collect()` runs before each sample, untimed.")
    L.append("- Before timing, one warm-up call checks the result against plain Python; a system whose result "
             "differs, or that raises, is reported n/a with the error.")
    L.append("- `exec` is `exec(compile(code, '<cell>', 'exec'), g)` in the same interpreter and venv as ours. "
             "Peers (RestrictedPython, smolagents, pydantic-monty) are measured on the trivial cell only; "
             "pydantic-monty executes in a worker subprocess of its own, so its figure includes a round trip.")
    L.append("- W4/W5 register the host function / numpy method with `allow()` first (ours: `safepyrun.allow`; "
             "published 0.2.x: `safepyrun.core.allow`, from pyskills). W4's host function writes a file outside "
             "`ok_dests`, so every call needs the trusted-call check.")
    L.append("- W7 runs `python -I -c 'import safepyrun'` %d times per system in fresh processes (after one "
             "discarded warm-up), alternating systems; memory is the growth of resident pages across the import." % args.w7_procs)
    L.append("- W8–W11 are real data work: their host namespace (the CSV, the input files, matplotlib's Agg "
             "backend and font cache) is set up by the host before any cell runs, as in a notebook; every output "
             "file goes into `ok_dests`.")
    L.append("- Workers run with `-I` and an empty `XDG_CONFIG_HOME` of their own, so no user `safepyrun/config.py` is "
             "loaded (the published package writes a default one on import; each system has its own directory).")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


IN_PROCESS_PEERS = ("restrictedpython", "smolagents")


def peer_claim(systems, stats):
    """Ours vs the fastest in-process peer on W1 (same interpreter as the peers)."""
    peers = [s for s in systems if s.kind in IN_PROCESS_PEERS and "median" in stats[s.key]["W1"]]
    if not peers:
        return None
    best = min(peers, key=lambda s: stats[s.key]["W1"]["median"])
    ours = next((s for s in systems if s.kind == "ours" and s.interp == best.interp), None)
    if ours is None or "median" not in stats[ours.key]["W1"]:
        return None
    o, b = stats[ours.key]["W1"]["median"], stats[best.key]["W1"]["median"]
    return ours, best, o, b


def peer_section(systems, stats):
    if not any(s.kind in PEER_LABELS for s in systems):
        return []
    L = ["## Trivial cell against the peers (W1)\n",
         "The claim is that ours is faster than any in-process peer. pydantic-monty is listed for reference: "
         "it executes in a separate worker process.\n",
         None, "|---|---|---|---|"]
    c = peer_claim(systems, stats)
    L[2] = "| system | per call | ratio to plain exec | %s is |" % (c[0].label if c else "ours")
    ref = stats[c[0].key]["W1"]["median"] if c else None
    rows = [s for s in systems if s.kind != "exec" and "median" in stats[s.key]["W1"]]
    rows.sort(key=lambda s: stats[s.key]["W1"]["median"])
    for s in rows:
        st = stats[s.key]["W1"]
        rel = "–"
        if ref and s.kind != "ours":
            rel = ("%s faster" % fmt_ratio(st["median"] / ref)) if ref < st["median"] else ("%s slower" % fmt_ratio(ref / st["median"]))
        L.append("| %s%s | %s | %s | %s |" % (s.label, " (out of process)" if s.kind == "monty" else "",
                                            fmt_time(st["median"]), fmt_ratio(st.get("ratio")), rel))
    L.append("")
    if c:
        ours, best, o, b = c
        L.append("Verdict: ours (%s) is **%s** than the fastest in-process peer, %s (%s vs %s per call).\n" % (
            ours.interp, "faster" if o < b else "NOT faster", best.label, fmt_time(o), fmt_time(b)))
    return L


def headline(systems, stats, cmp_rows, tg, env, meta, args):
    pm = env.get("pub_interp")
    out = ["_%s run of %s (%s mode); full tables in [RESULTS.md](RESULTS.md)._" % (
        "Latest", meta["date"], "quick" if args.quick else "full"), ""]
    for s in systems:
        if s.kind != "ours":
            continue
        st = stats[s.key]
        parts = []
        for w in ("W1", "W2", "W5", "W6") + tuple(W.REAL_DATA):
            if "ratio" in st[w]:
                parts.append("%s %s" % (W.WORKLOADS[w]["short"], fmt_ratio(st[w]["ratio"])))
        if "median" in st["W7"]:
            parts.append("import %s" % fmt_time(st["W7"]["median"]))
        out.append("- **ours on Python %s**, ratio to plain exec: %s" % (s.interp, ", ".join(parts) if parts else "n/a: " + (s.na or "")))
    ps = stats.get("published-%s" % pm) if pm else None
    if ps:
        parts = ["%s %s" % (W.WORKLOADS[w]["short"], fmt_ratio(ps[w]["ratio"])) for w in ("W1", "W2", "W6") if "ratio" in ps[w]]
        if "median" in ps["W7"]:
            parts.append("import %s" % fmt_time(ps["W7"]["median"]))
        out.append("- **published safepyrun on Python %s**, ratio to plain exec: %s" % (pm, ", ".join(parts) or "n/a"))
    facs = []
    for r in cmp_rows:
        if r["verdict"] == "not measured":
            facs.append("%s n/a" % r["w"])
        else:
            f = r["factor"]
            facs.append("%s %s" % (r["w"], "∞" if f == float("inf") else ("–" if f is None else fmt_ratio(f))))
    out.append("- **published overhead / our overhead** (Python %s; target ≥ 10x): %s" % (pm or "n/a", ", ".join(facs)))
    c = peer_claim(systems, stats)
    if c:
        ours, best, o, b = c
        out.append("- **trivial cell vs the fastest in-process peer** (%s): ours %s, %s %s: ours is %s" % (
            ours.interp, fmt_time(o), best.label, fmt_time(b),
            ("%s faster" % fmt_ratio(b / o)) if o < b else ("**%s slower**" % fmt_ratio(o / b))))
    met = sum(1 for t in tg if t[3] is True)
    notmet = sum(1 for t in tg if t[3] is False)
    nm = sum(1 for t in tg if t[3] is None)
    out.append("- Targets (DESIGN.md, issue 12): %d met, %d not met, %d not measured yet." % (met, notmet, nm))
    return "\n".join(out)


def update_readme(text):
    path = os.path.join(BENCH, "README.md")
    try:
        with open(path) as f:
            body = f.read()
    except OSError:
        return
    a, b = "<!-- headline:start -->", "<!-- headline:end -->"
    if a in body and b in body:
        pre, rest = body.split(a, 1)
        _, post = rest.split(b, 1)
        with open(path, "w") as f:
            f.write(pre + a + "\n" + text + "\n" + b + post)


def plot(args, systems, stats, json_path):
    v = Venv("plot", os.path.realpath(shutil.which(args.python) or args.python))
    err = None if args.no_setup else (v.ensure() or v.pip("matplotlib"))
    if err:
        return "matplotlib unavailable: " + err
    out = os.path.join(BENCH, "results.png")
    p = subprocess.run([v.python, "-I", os.path.join(BENCH, "plot.py"), json_path, out],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return "plot failed: " + p.stderr.strip()[-500:]
    return None


def pyperf_export(args, json_path):
    """Statistics and JSON by pyperf: bench/pyperf_export.py (run in the plot
    venv, which gets pyperf) turns the raw samples into a pyperf
    BenchmarkSuite, bench/results.pyperf.json (`python -m pyperf stats` /
    `compare_to` read it), and returns its per-benchmark summary as Markdown
    rows.  None if pyperf is unavailable."""
    v = Venv("plot", os.path.realpath(shutil.which(args.python) or args.python))
    err = None if args.no_setup else (v.ensure() or v.pip("pyperf"))
    if err:
        return {"error": "pyperf unavailable: " + err}
    out = os.path.join(BENCH, "results.pyperf.json")
    p = subprocess.run([v.python, "-I", os.path.join(BENCH, "pyperf_export.py"), json_path, out],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return {"error": "pyperf export failed: " + p.stderr.strip()[-500:]}
    return {"rows": p.stdout.splitlines()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and samples (everyday use, < 2 min)")
    ap.add_argument("--python", default=os.environ.get("BENCH_PYTHON") or sys.executable,
                    help="default interpreter for ours/exec (default: the one running this script)")
    ap.add_argument("--published-python", default=os.environ.get("BENCH_PUBLISHED_PYTHON"),
                    help="3.12+ interpreter for the published implementation (default: auto; 'none' to skip)")
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--only", default=",".join(W.CELL_WORKLOADS + ["W7"]), help="comma-separated workloads")
    ap.add_argument("--no-peers", action="store_true", help="skip pydantic-monty, RestrictedPython, smolagents")
    ap.add_argument("--no-setup", action="store_true", help="use existing venvs as they are")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one worker request may take")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    args.w7_procs = W.W7_PROCS[mode]
    only = set(args.only.split(","))
    t_start = time.time()
    os.makedirs(LOGS, exist_ok=True)
    log("== safepyrun bench (%s mode): setting up venvs in %s" % (mode, os.path.relpath(VENVS)))
    systems, env = setup(args)
    for s in systems:
        log("  %-38s %s" % (s.label, "n/a: " + s.na if s.na else "ok (%s)" % s.venv.python))
    rounds = args.rounds or W.ROUNDS[mode]
    timeout = args.timeout or (120 if args.quick else 600)
    with tempfile.TemporaryDirectory(prefix="safepyrun-bench-") as tmp:
        ctx = {"cwd": tmp, "rounds": rounds}
        log("== running (%d rounds)" % rounds)
        cells = run_cells(systems, mode, ctx, only, timeout)
        imports = run_import(systems, ctx, args.w7_procs, timeout) if "W7" in only else {}
    stats = analyse(systems, cells, imports, env, args)
    cmp_rows = compare(stats, env)
    tg = targets(systems, stats, cmp_rows, env)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "rounds": rounds,
            "elapsed": time.time() - t_start}
    json_path = os.path.join(BENCH, "results.json")
    labels = {s.key: {"label": s.label, "kind": s.kind, "interp": s.interp} for s in systems}
    with open(json_path, "w") as f:
        json.dump({"mode": mode, "meta": meta, "env": env, "systems": labels, "stats": stats,
                   "workloads": {w: W.WORKLOADS[w]["short"] for w in W.CELL_WORKLOADS + ["W7"]},
                   "raw": {"cells": cells, "imports": imports}}, f, indent=1, default=str)
    perr = plot(args, systems, stats, json_path)
    if perr:
        env["notes"].append("bench/results.png not written: " + perr)
    env["pyperf"] = pyperf_export(args, json_path)
    meta["elapsed"] = time.time() - t_start
    write_results(os.path.join(BENCH, "RESULTS.md"), systems, stats, cmp_rows, tg, env, args, meta)
    hl = headline(systems, stats, cmp_rows, tg, env, meta, args)
    update_readme(hl)
    log("== done in %.0fs: bench/RESULTS.md, bench/results.json%s" % (meta["elapsed"], "" if perr else ", bench/results.png"))
    log(hl)
    if perr:
        log("!! " + perr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
