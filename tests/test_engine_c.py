"""The C engine tested adversarially from Python (STYLE.md rule 14).

Reference counts of the objects the engine is handed stay put after many
runs; hostile objects (raising __hash__, __eq__, __repr__, __fspath__;
str subclasses) get clean exceptions; a fresh import of the module works
and does not install a second hook; out-of-memory injected at every step
of a run gives MemoryError (or success), never a crash.
"""
import asyncio
import gc
import os
import subprocess
import sys
import textwrap

import pytest

from safepyrun import RunPython, _engine, allow, disallow
from conftest import run, host_ns
from trust_helpers import clean_registry  # noqa: F401


def refcounts(*objs):
    return [sys.getrefcount(o) for o in objs]


def test_inputs_keep_their_reference_counts(tmp_path):
    """As a refleak hunt does: one warm-up round for one-time caches, then
    the counts after a second round equal those after the first."""
    g = host_ns()
    dests = [str(tmp_path)]
    code = "x_ = [i for i in range(3)]\nlen(x_)"
    refused_code = "os.system('true')"
    py = RunPython(g, ok_dests=dests)

    async def many():
        for _ in range(300):
            await py(code)
            try:
                await py(refused_code)
            except PermissionError:
                pass
    asyncio.run(many())
    gc.collect()
    before = refcounts(g, dests, code, refused_code, os.system)
    asyncio.run(many())
    gc.collect()
    # Counted outside the assert: pytest's rewriting holds the arguments.
    after = refcounts(g, dests, code, refused_code, os.system)
    assert after == before


@pytest.mark.usefixtures("clean_registry")
def test_registrations_release_what_they_held():
    def tool():
        return 1

    class Policy:
        def __call__(self, obj, args, kwargs, data):
            return None

    policy = Policy()
    before = refcounts(tool, policy)
    for _ in range(200):
        allow(tool, allow_policy=policy)
        disallow(tool, None, policy)
    gc.collect()
    after = refcounts(tool, policy)
    assert after == before


def test_allocated_blocks_do_not_grow_over_many_runs():
    g = host_ns()
    py = RunPython(g, ok_dests=[])

    async def many(n):
        for _ in range(n):
            await py("def f(a): return a * 2\nf(21)")
            try:
                await py("open('/nonexistent-dir/x', 'w')")
            except PermissionError:
                pass
    asyncio.run(many(300))
    gc.collect()
    before = sys.getallocatedblocks()
    asyncio.run(many(2000))
    gc.collect()
    grown = sys.getallocatedblocks() - before
    assert grown < 2000, f"{grown} blocks more after 2000 runs"


class RaisingHash:
    def __hash__(self):
        raise RuntimeError("no hash")

    def __eq__(self, other):
        raise RuntimeError("no eq")

    def __repr__(self):
        raise RuntimeError("no repr")

    def __call__(self):
        return 1


@pytest.mark.usefixtures("clean_registry")
def test_unhashable_and_hostile_owners_register_by_identity():
    owner = RaisingHash()
    allow(owner)   # keyed by identity: __hash__/__eq__ are never called
    assert any(e[0] is owner for e in _engine.allow_entries())
    _engine.allow_remove(owner, None, None)


def test_hostile_paths_give_clean_exceptions(tmp_path):
    class BadPath:
        def __fspath__(self):
            raise RuntimeError("no path")

    class StrPath(str):
        pass

    with pytest.raises(RuntimeError, match="no path"):
        _engine.check_write(BadPath(), [str(tmp_path)])
    assert _engine.check_write(StrPath(tmp_path / "a"), [StrPath(tmp_path)]) is True
    py = RunPython(host_ns(BadPath=BadPath), ok_dests=[str(tmp_path)])
    with pytest.raises(RuntimeError, match="no path"):
        run(py, "open(BadPath(), 'w')")


def test_refusal_of_an_object_whose_repr_raises_still_refuses(tmp_path):
    py = RunPython(host_ns(RaisingHash=RaisingHash), ok_dests=[])
    with pytest.raises((PermissionError, RuntimeError)):
        run(py, "import subprocess\nsubprocess.Popen([RaisingHash()])")


def python_child(code, timeout=120, fixed_addresses=False):
    env = dict(os.environ, XDG_CONFIG_HOME=os.environ["XDG_CONFIG_HOME"])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL,
                          preexec_fn=_no_aslr if fixed_addresses else None)


def _no_aslr():
    """In the child before exec: address-space layout randomisation off
    (personality(ADDR_NO_RANDOMIZE)), so that a run is repeatable."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).personality(0x0040000)


def test_fresh_import_of_the_engine_installs_one_hook():
    proc = python_child("""
        import asyncio, sys
        import safepyrun._engine as first
        del sys.modules['safepyrun._engine']
        import safepyrun._engine as second
        assert first is not second
        calls = []
        sys.addaudithook(lambda e, a: calls.append(e) if e == 'os.system' else None)
        r = second.Runner({'os': __import__('os')}, [])
        try:
            asyncio.run(r.run("os.system('true')"))
        except PermissionError as e:
            print('refused once:', str(e).count('safepyrun refused'))
        print('after:', asyncio.run(second.Runner({}, []).run('6*7')))
        """)
    assert proc.returncode == 0, proc.stderr
    assert "refused once: 1" in proc.stdout
    assert "after: 42" in proc.stdout


OOM_SWEEP = """
import os, sys
import _testcapi
from safepyrun import _engine, allow

def oom(k):
    # Fail the k-th allocation from here on: inside the rest of the cell,
    # the hook, the refusal or trust path, the export and the clean-up.
    _testcapi.set_nomemory(k, k + 1)

def tool():
    os.system('true')

allow(tool)
SANDBOXED = {sandboxed}
g = {{'os': os, 'oom': oom, 'tool': tool}}
runner = _engine.Runner(g, [], None, False, False, {{}}, None)

def one(code):
    try:
        if SANDBOXED:
            runner.run(code).send(None)
        else:
            exec(compile(code, '<cell>', 'exec'), dict(g))
    except StopIteration:
        return 'ok'
    except (MemoryError, PermissionError, FileNotFoundError, OSError):
        return 'error'
    except BaseException as e:
        _testcapi.remove_mem_hooks()
        return type(e).__name__
    finally:
        _testcapi.remove_mem_hooks()
    return 'ok'

outcomes = {{}}
for body in ["os.system('true')", "x_ = [1]\\n42", "open('/nonexistent/x', 'w')",
             "tool()", "def f(): os.system('x')\\nf()"]:
    for k in range(0, 300):
        res = one(f"oom({{k}})\\n{{body}}")
        outcomes[res] = outcomes.get(res, 0) + 1
print('outcomes', sorted(outcomes))
print('after', one('6*7'))
"""


@pytest.mark.skipif(os.environ.get("SAFEPYRUN_ASAN") == "1",
                    reason="allocation failures are injected into pymalloc")
@pytest.mark.skipif(sys.version_info >= (3, 13),
                    reason="CPython 3.13's own out-of-memory paths crash under "
                           "this sweep: the plain-exec control segfaults in "
                           "the parser and compiler about every other run")
@pytest.mark.skipif(sys.version_info[:2] == (3, 12),
                    reason="CPython 3.12's compiler corrupts pymalloc's free "
                           "lists on some failed allocations: the plain-exec "
                           "control crashes in compile() (gdb: pymalloc_alloc "
                           "from _PyCode_New), in about one run in ten, and "
                           "the sandboxed sweep, which compiles at other heap "
                           "states, in some environments every time")
def test_out_of_memory_at_every_step_is_a_clean_error():
    """_testcapi.set_nomemory fails one allocation at a time, swept over a
    whole run (the cell, the hook, the refusal and trust paths, export and
    clean-up): every outcome is the cell's result or a clean exception, and
    the host works afterwards.  The same sweep over plain exec is the
    control: if it crashes, the interpreter is at fault and the test is
    skipped."""
    try:
        import _testcapi  # noqa: F401
    except ImportError:
        pytest.skip("the interpreter has no _testcapi")
    # Both sweeps run with fixed addresses: CPython 3.12.1's own compiler
    # corrupts pymalloc's free lists on some failed allocations (the plain
    # exec control crashes in compile() in about one run in ten with
    # randomised addresses), so with randomisation a passing control would
    # not show that the interpreter survives the sandboxed sweep's compiles.
    control = python_child(OOM_SWEEP.format(sandboxed=False), timeout=300,
                           fixed_addresses=True)
    if control.returncode != 0:
        pytest.skip("plain exec crashes under the same sweep: the "
                    "interpreter's out-of-memory paths are at fault")
    proc = python_child(OOM_SWEEP.format(sandboxed=True), timeout=300,
                        fixed_addresses=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = proc.stdout.split("outcomes ")[1].splitlines()[0]
    assert "SystemError" not in outcomes, outcomes
    assert "after ok" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_is_cell_code_tells_cell_functions_from_host_ones():
    from safepyrun import RunPython, _engine
    g = {}
    asyncio.run(RunPython(g)("def made_in_cell():\n    return 1\n"))
    assert _engine.is_cell_code(g["made_in_cell"]) is True
    assert _engine.is_cell_code(g["made_in_cell"].__code__) is True
    assert _engine.is_cell_code(test_is_cell_code_tells_cell_functions_from_host_ones) is False
    with pytest.raises(TypeError, match="needs a code object or a function"):
        _engine.is_cell_code(len)
