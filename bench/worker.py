"""One benchmarked system in its own process.

Run by the system's venv interpreter:  python -I bench/worker.py SYSTEM
It answers JSON-line requests from bench/run.py on stdin; replies go to the
original stdout (fd 1 is re-pointed to /dev/null so cells that print do not
disturb the protocol).  Standard library only, apart from the system itself.

Systems:
  exec              plain compile()+exec() in this interpreter: the floor
  ours              safepyrun from this checkout (RunPython / allow)
  published         safepyrun + fastaudit from PyPI
  restrictedpython  RestrictedPython compile_restricted + exec   (W1 only)
  smolagents        smolagents LocalPythonExecutor              (W1 only)
  monty             pydantic-monty session.feed_run             (W1 only)
"""
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as W  # noqa: E402

PEERS = ("restrictedpython", "smolagents", "monty")
PEER_WORKLOADS = ("W1",)


def dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


class NA(Exception):
    """The system cannot run this workload; the message is the reason."""


class System:
    """Adapter: run(code) for one system.  kind is 'sync' or 'async'."""

    def __init__(self, name, tmp):
        self.name, self.tmp = name, tmp
        self.kind = "sync"
        self.returns_value = True
        self.cleanup = []
        self.info = {"python": sys.version.split()[0], "executable": sys.executable}
        getattr(self, "_init_" + name)()

    # -- exec: the floor ----------------------------------------------------
    def _init_exec(self):
        self.returns_value = False

    def make_runner(self, host):
        """Return run(code) bound to host.g, after registering host.allow_items."""
        return getattr(self, "_runner_" + self.name)(host)

    def _runner_exec(self, host):
        g = host.g
        def run(code):
            exec(compile(code, "<cell>", "exec"), g)
        return run

    # -- ours / published ---------------------------------------------------
    def _init_ours(self):
        import safepyrun
        self.mod = safepyrun
        self.kind = "async"
        self.info["safepyrun"] = dist_version("safepyrun")
        self.info["module"] = os.path.dirname(safepyrun.__file__)
        self.allow = getattr(safepyrun, "allow", None)
        self.no_allow = "allow() not implemented yet (safepyrun has no attribute 'allow')"

    def _init_published(self):
        import safepyrun
        self.mod = safepyrun
        self.kind = "async"
        self.info["safepyrun"] = dist_version("safepyrun")
        self.info["fastaudit"] = dist_version("fastaudit")
        allow = getattr(safepyrun, "allow", None)
        if allow is None:  # published 0.2.x: allow() comes from pyskills via safepyrun.core
            core = getattr(safepyrun, "core", None)
            allow = getattr(core, "allow", None)
        self.allow = allow
        self.no_allow = "published safepyrun exposes no allow()"

    def _sandbox_runner(self, host):
        if host.allow_items:
            if self.allow is None:
                raise NA(self.no_allow)
            for item in host.allow_items:
                self.allow(item)
        py = self.mod.RunPython(g=host.g, ok_dests=[host.ok_dir])
        return py

    _runner_ours = _sandbox_runner
    _runner_published = _sandbox_runner

    # -- peers (trivial-cell figure) ----------------------------------------
    def _init_restrictedpython(self):
        from RestrictedPython import compile_restricted, safe_globals
        self.rp = (compile_restricted, safe_globals)
        self.returns_value = False
        self.info["RestrictedPython"] = dist_version("RestrictedPython")

    def _runner_restrictedpython(self, host):
        compile_restricted, safe_globals = self.rp
        g = dict(safe_globals)
        g.update(host.g)
        def run(code):
            exec(compile_restricted(code, "<cell>", "exec"), g)
        return run

    def _init_smolagents(self):
        from smolagents import LocalPythonExecutor
        self.ex = LocalPythonExecutor(additional_authorized_imports=["json", "re"])
        self.ex.send_tools({})
        self.info["smolagents"] = dist_version("smolagents")

    def _runner_smolagents(self, host):
        ex = self.ex
        ex.send_variables(dict((k, v) for k, v in host.g.items() if not k.startswith("__")))
        def run(code):
            return ex(code).output
        return run

    def _init_monty(self):
        from pydantic_monty import Monty
        pool = Monty()
        pool.__enter__()
        cm = pool.checkout()
        self.session = cm.__enter__()
        self.cleanup += [lambda: cm.__exit__(None, None, None), lambda: pool.__exit__(None, None, None)]
        self.info["pydantic-monty"] = dist_version("pydantic-monty")

    def _runner_monty(self, host):
        s = self.session
        def run(code):
            return s.feed_run(code)
        return run


class Worker:
    def __init__(self, system, out):
        self.out = out
        self.tmp = tempfile.mkdtemp(prefix="safepyrun-bench-")
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.system = System(system, self.tmp)
        self.prepared = {}  # workload -> (run, host) or NA message

    def reply(self, obj):
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def call(self, run, code):
        if self.system.kind == "async":
            return self.loop.run_until_complete(run(code))
        return run(code)

    def prepare(self, wname):
        if wname in self.prepared:
            return self.prepared[wname]
        sysname = self.system.name
        wl = W.WORKLOADS[wname]
        try:
            if sysname in PEERS and wname not in PEER_WORKLOADS:
                raise NA("peer measured on the trivial cell (W1) only")
            for mod in ("numpy", "pandas", "matplotlib"):
                if mod in wl["needs"]:
                    try:
                        __import__(mod)
                    except ImportError as e:
                        raise NA(f"{mod} not importable: {e}")
            host = W.Host(wname, os.path.join(self.tmp, wname))
            expected = W.expected_value(wl["code"], host.g)
            host.calls[0] = 0
            run = self.system.make_runner(host)
            # Warm-up call doubles as the correctness check.
            try:
                got = self.call(run, wl["code"])
            except Exception as e:
                msg = " ".join(f"{type(e).__name__}: {e}".split())
                raise NA(f"raises {msg[:300]}")
            if self.system.returns_value and got != expected:
                raise NA(f"wrong result: got {got!r:.80}, expected {expected!r:.80}")
            if wname == "W4" and host.calls[0] != W.W4_CALLS:
                raise NA(f"host function ran {host.calls[0]} times, expected {W.W4_CALLS}")
            self.prepared[wname] = (run, host)
        except NA as e:
            self.prepared[wname] = str(e)
        return self.prepared[wname]

    def samples(self, wname, inner, count):
        prep = self.prepare(wname)
        if isinstance(prep, str):
            return {"na": prep}
        run, host = prep
        code = W.WORKLOADS[wname]["code"]
        out = []
        clock = time.perf_counter_ns
        for _ in range(count):
            gc.collect()
            if self.system.kind == "async":
                async def batch():
                    t0 = clock()
                    for _ in range(inner):
                        await run(code)
                    return clock() - t0
                dt = self.loop.run_until_complete(batch())
            else:
                t0 = clock()
                for _ in range(inner):
                    run(code)
                dt = clock() - t0
            out.append(dt / inner / 1e9)
        return {"times": out}

    def serve(self, inp):
        self.reply({"ready": True, "info": self.system.info})
        for line in inp:
            req = json.loads(line)
            if req.get("op") == "quit":
                break
            try:
                res = self.samples(req["w"], req["inner"], req["count"])
            except Exception as e:
                res = {"na": f"worker error: {type(e).__name__}: {e}"[:400],
                       "tb": traceback.format_exc()[-2000:]}
            self.reply(res)
        for f in self.system.cleanup:
            try:
                f()
            except Exception:
                pass


def main():
    system = sys.argv[1]
    # Protocol channel: a private copy of the original stdout.
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)
    try:
        worker = Worker(system, out)
    except Exception as e:
        out.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"[:400],
                              "tb": traceback.format_exc()[-2000:]}) + "\n")
        out.flush()
        return 1
    worker.serve(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
