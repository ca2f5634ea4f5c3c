"""The memory cap (issue 9, item 2): RunPython(max_memory=bytes).

Allocations a cell makes while it runs (its steps, host code it calls, the
tasks it spawned, work it hands to asyncio.to_thread) are counted in C; past
the cap the allocation fails, the cell gets a MemoryError naming the cap,
what it built is freed, and the host carries on.  Each runaway case below is
stopped with the counted peak within 2x the cap, the host then runs a new
cell, and its resident memory is back within 50 MB of where it started.
"""
import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import traceback

import pytest

from conftest import host_ns, run
from safepyrun import RunPython, _engine

np = pytest.importorskip("numpy")

MiB = 1 << 20
CAP = 100 * MiB
CAP_MSG = "cell exceeded its memory limit of 100.0 MiB"
ASAN = os.environ.get("SAFEPYRUN_ASAN") == "1"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    """Resident memory of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def run_cell(py, code, **kw):
    """Run one cell; return (Cell, value or the exception raised)."""
    cell = py(code, **kw)

    async def main():
        return await cell
    try:
        return cell, asyncio.run(main())
    except BaseException as e:  # noqa: BLE001 - the test looks at it
        return cell, e


def assert_stopped(cell, err, cap=CAP, msg=CAP_MSG):
    assert type(err) is MemoryError, repr(err)
    assert str(err) == msg
    assert isinstance(err.__cause__, MemoryError)
    # Stopped within 2x its limit (arenas may pass the cap by a few MiB).
    assert cell.peak_memory <= 2 * cap


def child(code):
    """Run `code` in a fresh interpreter (process-wide hooks); its stdout."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=120,
                         env=os.environ)
    assert out.returncode == 0, out.stderr
    return out.stdout


# The loops end by themselves near 1 GB, so that a regression fails the
# test instead of exhausting a shared machine's memory.
RUNAWAYS = {
    "list_repeat": "[0] * 10**10",
    "str_repeat": "'a' * 10**11",
    "bytearray": "bytearray(10**11)",
    "growing_list": "l = []\nwhile len(l) < 10**5:\n    l.append([0] * 1000)",
    "numpy_ones": "import numpy as np\nnp.ones(10**10)",
    "numpy_list": "import numpy as np\na = []\nwhile len(a) < 1000:\n"
                  "    a.append(np.ones(10**5))",
    "growing_set": "s = set()\ni = 0\nwhile i < 2 * 10**7:\n    s.add(i)\n"
                   "    i += 1",
    "growing_bytes": "b = b''\nwhile len(b) < 10**9:\n    b += b'x' * 10**6",
    "small_objects": "l = []\nwhile len(l) < 2 * 10**7:\n"
                     "    l.append(object())",
    "in_function": "def f():\n    l = []\n    while len(l) < 10**5:\n"
                   "        l.append([0] * 1000)\nf()",
}


@pytest.mark.parametrize("name", sorted(RUNAWAYS))
def test_runaway_cell_is_stopped_and_the_host_recovers(name):
    g = host_ns()
    py = RunPython(g, max_memory=CAP)
    gc.collect()
    before = rss()
    cell, err = run_cell(py, RUNAWAYS[name])
    assert_stopped(cell, err)
    del err
    # The host runs a new cell under the same cap...
    assert run(py, "sum(range(10))") == 45
    # ...its names are as they were: what the cell built is gone...
    assert {"l", "a", "s", "b", "i", "f"}.isdisjoint(g)
    # ...and so is the memory.
    gc.collect()
    if not ASAN:  # freed memory sits in ASan's quarantine
        assert rss() - before < 50 * MiB


def test_memory_error_names_the_cap_and_keeps_the_original_as_cause():
    py = RunPython(host_ns(), max_memory=10 * MiB)
    cell, err = run_cell(py, "import numpy as np\nnp.zeros((10**6, 10**4))")
    assert_stopped(cell, err, 10 * MiB,
                   "cell exceeded its memory limit of 10.0 MiB")
    assert "Unable to allocate" in str(err.__cause__)
    # The traceback shows the cell's line.
    frames = traceback.extract_tb(err.__traceback__)
    assert [f.line for f in frames if f.filename.startswith("<pyrun_")] == [
        "np.zeros((10**6, 10**4))"]


@pytest.mark.parametrize("cap,text", [(512, "512 bytes"), (1536, "1.5 KiB"),
                                      (3 * 2**30, "3.0 GiB")])
def test_cap_is_named_in_readable_units(cap, text):
    py = RunPython(host_ns(), max_memory=cap)
    _, err = run_cell(py, "bytearray(10**13)")
    assert str(err) == f"cell exceeded its memory limit of {text}"


def test_stopped_cell_leaves_the_namespace_as_it_found_it():
    g = host_ns(keep=[1, 2, 3])
    py = RunPython(g, max_memory=CAP)
    run(py, "earlier = 'from an earlier cell'\n_private = 1")
    cell, err = run_cell(
        py, "earlier = 'changed'\nkeep = None\nnew = 1\n_p2 = 2\n"
            "del _private\nbig = [0] * 10**10")
    assert_stopped(cell, err)
    assert g["earlier"] == "from an earlier cell"
    assert g["keep"] == [1, 2, 3]
    assert "new" not in g and "big" not in g
    # The runner's own namespace too: the next cell sees the old state.
    assert run(py, "(earlier, _private, '_p2' in globals())") == (
        "from an earlier cell", 1, False)


def test_other_errors_still_export_what_the_cell_defined():
    g = host_ns()
    py = RunPython(g, max_memory=CAP)
    _, err = run_cell(py, "made = 1\n1 / 0")
    assert type(err) is ZeroDivisionError
    assert g["made"] == 1


def test_cell_that_catches_the_memory_error_carries_on():
    py = RunPython(host_ns(), max_memory=CAP)
    code = ("try:\n    x = [0] * 10**10\nexcept MemoryError:\n    x = None\n"
            "y = [0] * 1000\nlen(y)")
    assert run(py, code) == 1000


def test_host_tool_called_by_the_cell_is_counted():
    def make_table(n):
        return [[0] * 1000 for _ in range(n)]
    py = RunPython(host_ns(make_table=make_table), max_memory=CAP)
    cell, err = run_cell(py, "t = make_table(10**6)")
    assert_stopped(cell, err)


def test_spawned_task_is_counted():
    code = """
import asyncio
async def hog():
    l = []
    while True:
        l.append([0] * 1000)
        if len(l) % 100 == 0:
            await asyncio.sleep(0)
asyncio.create_task(hog())
await asyncio.sleep(0)
"""
    py = RunPython(host_ns(), max_memory=CAP)
    cell, err = run_cell(py, code)
    assert_stopped(cell, err)


def test_work_handed_to_a_thread_is_counted():
    py = RunPython(host_ns(), max_memory=CAP)
    cell, err = run_cell(
        py, "import asyncio\nawait asyncio.to_thread(bytearray, 300 * 2**20)")
    assert_stopped(cell, err)


def test_per_call_cap_replaces_the_runners():
    py = RunPython(host_ns(), max_memory=10 * MiB)
    code = "x = bytearray(50 * 2**20)\nlen(x)"
    _, err = run_cell(py, code)
    assert str(err) == "cell exceeded its memory limit of 10.0 MiB"
    assert run_cell(py, code, max_memory=100 * MiB)[1] == 50 * MiB
    assert run_cell(py, code, max_memory=None)[1] == 50 * MiB
    _, err = run_cell(py, code, max_memory=20 * MiB)
    assert str(err) == "cell exceeded its memory limit of 20.0 MiB"
    # A runner without a cap, capped for one call.
    free = RunPython(host_ns())
    assert free.max_memory is None
    _, err = run_cell(free, code, max_memory=CAP // 10)
    assert str(err) == "cell exceeded its memory limit of 10.0 MiB"


@pytest.mark.parametrize("bad,exc,msg", [
    (0, ValueError, "max_memory must be a positive number of bytes"),
    (-1, ValueError, "max_memory must be a positive number of bytes"),
    (True, TypeError, "max_memory must be an int (bytes) or None, not bool"),
    ("1G", TypeError, "max_memory must be an int (bytes) or None, not str"),
    (1.5, TypeError, "max_memory must be an int (bytes) or None, not float"),
])
def test_max_memory_is_validated(bad, exc, msg):
    with pytest.raises(exc) as info:
        RunPython(host_ns(), max_memory=bad)
    assert str(info.value) == msg
    py = RunPython(host_ns())
    with pytest.raises(exc) as info:
        py("1", max_memory=bad)
    assert str(info.value) == msg


def test_runner_reports_its_cap_and_it_is_read_only():
    py = RunPython(host_ns(), max_memory=CAP)
    assert py.max_memory == CAP
    with pytest.raises(AttributeError):
        py.max_memory = None
    assert py.max_memory == CAP


def test_peak_memory_is_counted_only_with_a_cap():
    cell, value = run_cell(RunPython(host_ns()), "x = [0] * 10**6\nlen(x)")
    assert value == 10**6 and cell.peak_memory is None
    cell, value = run_cell(RunPython(host_ns(), max_memory=CAP),
                           "x = [0] * 10**6\nlen(x)")
    assert value == 10**6
    assert 8 * 10**6 <= cell.peak_memory < 8 * 10**6 + 8 * MiB
    cell, value = run_cell(RunPython(host_ns(), max_memory=CAP),
                           "import numpy as np\nnp.ones(10**6).sum()")
    assert value == 10**6
    assert cell.peak_memory >= 8 * 10**6


def test_freeing_the_hosts_memory_gives_no_credit():
    g = host_ns(big=[0] * (10 * 10**6))  # 80 MB the host allocated
    py = RunPython(g, max_memory=50 * MiB)
    cell, err = run_cell(py, "big.clear()\nx = [0] * (7 * 10**6)")
    assert_stopped(cell, err, 50 * MiB,
                   "cell exceeded its memory limit of 50.0 MiB")
    assert run(py, "x = [0] * (5 * 10**6)\nlen(x)") == 5 * 10**6


def test_count_does_not_leak_across_runs():
    g = host_ns()
    py = RunPython(g, max_memory=50 * MiB)
    for i in range(10):
        # 40 MB each time, kept alive in the namespace by the export.
        assert run(py, f"keep{i} = bytearray(40 * 2**20)\nlen(keep{i})") == \
            40 * MiB
    for i in range(10):
        del g[f"keep{i}"]
    assert run(py, "1") == 1


def test_freeing_in_the_cell_gives_back_room():
    py = RunPython(host_ns(), max_memory=50 * MiB)
    code = ("for _ in range(20):\n    x = bytearray(30 * 2**20)\n    del x\n"
            "'done'")
    assert run(py, code) == "done"


def test_concurrent_runs_each_have_their_own_cap():
    a = RunPython(host_ns(), max_memory=50 * MiB)
    b = RunPython(host_ns(), max_memory=50 * MiB)
    c = RunPython(host_ns(), max_memory=20 * MiB)
    code = ("import asyncio\nx = bytearray(30 * 2**20)\n"
            "await asyncio.sleep(0.01)\ny = bytearray(10 * 2**20)\n"
            "await asyncio.sleep(0.01)\nlen(x) + len(y)")

    async def main():
        return await asyncio.gather(a(code), b(code), c(code),
                                    return_exceptions=True)
    ra, rb, rc = asyncio.run(main())
    assert ra == rb == 40 * MiB
    assert type(rc) is MemoryError
    assert str(rc) == "cell exceeded its memory limit of 20.0 MiB"


def test_host_allocations_while_the_cell_waits_are_not_charged():
    py = RunPython(host_ns(), max_memory=20 * MiB)
    hold = []

    async def host():
        await asyncio.sleep(0.005)
        hold.append(bytearray(200 * MiB))

    async def main():
        return await asyncio.gather(
            py("import asyncio\nawait asyncio.sleep(0.05)\n'ok'"), host())
    assert asyncio.run(main())[0] == "ok"
    assert len(hold[0]) == 200 * MiB


def test_numpy_behaviour_is_unchanged_outside_runs():
    from numpy._core.multiarray import get_handler_name
    py = RunPython(host_ns(), max_memory=CAP)
    assert get_handler_name() == "default_allocator"
    inside = run(py, "from numpy._core.multiarray import get_handler_name\n"
                     "import numpy as np\n"
                     "arr = np.arange(10**6)\n(get_handler_name(), "
                     "get_handler_name(arr))")
    assert inside == ("safepyrun_memcap:default_allocator",) * 2
    assert get_handler_name() == "default_allocator"
    host_arr = np.arange(10**6)
    assert get_handler_name(host_arr) == "default_allocator"
    # Arrays made in the cell stay usable, and the host may free them.
    g = py.g
    assert int(g["arr"].sum()) == sum(range(10**6))
    del g["arr"]


def test_without_a_cap_nothing_is_installed():
    out = child("""
        import asyncio
        from safepyrun import RunPython, _engine
        py = RunPython({})
        asyncio.run(py("x = [0] * 10**6"))
        print(_engine.memory_hooks_installed())
        RunPython({}, max_memory=10**9)
        print(_engine.memory_hooks_installed())
    """)
    assert out.split() == ["False", "True"]


def test_numpy_first_imported_inside_a_capped_cell_is_counted():
    out = child("""
        import asyncio, sys
        from safepyrun import RunPython
        assert "numpy" not in sys.modules
        py = RunPython({}, max_memory=100 * 2**20)
        try:
            asyncio.run(py("import numpy as np\\nnp.ones(10**10)"))
        except MemoryError as e:
            print(e)
        from numpy._core.multiarray import get_handler_name
        print(get_handler_name())
    """)
    assert out.splitlines() == [CAP_MSG, "default_allocator"]


def test_tracemalloc_before_and_after_a_capped_run():
    out = child("""
        import asyncio, tracemalloc
        tracemalloc.start()
        from safepyrun import RunPython
        py = RunPython({}, max_memory=100 * 2**20)
        def stopped(code):
            try:
                asyncio.run(py(code))
            except MemoryError as e:
                return str(e)
        print(stopped("bytearray(10**11)"))
        x = [0] * 10**5
        print(tracemalloc.get_traced_memory()[0] >= 8 * 10**5)
        tracemalloc.stop()
        print(tracemalloc.is_tracing())
        print(stopped("bytearray(10**11)"))
        tracemalloc.start()
        y = [0] * 10**5
        print(tracemalloc.get_traced_memory()[0] >= 8 * 10**5)
        print(stopped("bytearray(10**11)"))
        tracemalloc.stop()
        print(stopped("bytearray(10**11)"))
    """)
    assert out.splitlines() == [CAP_MSG, "True", "False", CAP_MSG, "True",
                                CAP_MSG, CAP_MSG]


# ---- a cell cannot raise, clear or disable its cap ---------------------------

ATTACKS = {
    # tracemalloc.stop() would put back the allocator it found at start
    # (older than the cap's hooks when the host started tracing first).
    "tracemalloc_stop": "import tracemalloc\ntracemalloc.start()\n"
                        "tracemalloc.stop()\nx = bytearray(300 * 2**20)",
    "_tracemalloc_stop": "import _tracemalloc\n_tracemalloc.stop()\n"
                         "x = bytearray(300 * 2**20)",
    "gc": "import gc\ngc.disable()\ngc.collect()\nx = bytearray(300 * 2**20)",
    "sys": "import sys\nsys.setswitchinterval(0.001)\nx = bytearray(300 * 2**20)",
    # The run object a cell can read from its context holds no handle.
    "run_object": "import contextvars\n"
                  "runs = [v for k, v in contextvars.copy_context().items()"
                  " if k.name == 'safepyrun.run']\n"
                  "assert runs and not hasattr(runs[0], 'max_memory')\n"
                  "x = bytearray(300 * 2**20)",
    "numpy_handler": "import numpy as np\n"
                     "from numpy._core import multiarray\n"
                     "assert not hasattr(multiarray, 'set_handler')\n"
                     "x = np.ones(4 * 10**8)",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_cell_cannot_switch_off_its_cap(name):
    py = RunPython(host_ns(), max_memory=CAP)
    try:
        cell, err = run_cell(py, ATTACKS[name])
    finally:
        gc.enable()
    assert_stopped(cell, err)


@pytest.mark.xfail(strict=True, reason="known gap (README, Limits): a task "
                   "started in a fresh contextvars.Context() does not carry "
                   "the run, and its steps are not counted")
def test_task_in_a_fresh_context_is_counted():
    py = RunPython(host_ns(), max_memory=CAP)
    cell, err = run_cell(py, "import asyncio, contextvars\n"
                             "async def hog():\n"
                             "    keep = []\n"
                             "    for _ in range(10):\n"
                             "        await asyncio.sleep(0.001)\n"
                             "        keep.append(bytearray(30 * 2**20))\n"
                             "await asyncio.create_task(hog(), "
                             "context=contextvars.Context())")
    assert_stopped(cell, err)


def test_cell_cannot_change_the_runners_cap():
    g = host_ns()
    py = RunPython(g, max_memory=CAP)
    g["python"] = py
    _, err = run_cell(py, "python.max_memory = None")
    assert type(err) is AttributeError
    _, err = run_cell(py, "await python('bytearray(300 * 2**20)', "
                          "max_memory=None)")
    assert type(err) is PermissionError
    assert "nested run" in str(err)
    assert py.max_memory == CAP
    cell, err = run_cell(py, "x = bytearray(300 * 2**20)")
    assert_stopped(cell, err)


def test_cell_stopping_tracemalloc_started_by_the_host_first():
    out = child("""
        import asyncio, tracemalloc
        tracemalloc.start()
        from safepyrun import RunPython
        py = RunPython({}, max_memory=100 * 2**20)
        try:
            asyncio.run(py("import tracemalloc\\ntracemalloc.stop()\\n"
                           "x = bytearray(300 * 2**20)\\nlen(x)"))
        except MemoryError as e:
            print(e)
    """)
    assert out.splitlines() == [CAP_MSG]


# ---- the command line -----------------------------------------------------------

def cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "safepyrun.cli", *args],
                          input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_cli_max_memory_stops_the_script():
    out = cli("--max-memory", "100M", "-",
              stdin="x = bytearray(300 * 2**20)\n")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.splitlines()[-1] == f"MemoryError: {CAP_MSG}"


def test_cli_max_memory_lets_the_script_run_under_it():
    out = cli("--max-memory", "2G", "-", stdin="len(bytearray(10**6))\n")
    assert (out.returncode, out.stdout, out.stderr) == (0, "1000000\n", "")


@pytest.mark.parametrize("text,size", [
    ("1000000", 1000000), ("512M", 512 * MiB), ("2G", 2 << 30),
    ("1.5GiB", 3 << 29), ("64k", 64 << 10), ("10MB", 10 * MiB),
    ("1T", 1 << 40)])
def test_cli_size_suffixes(text, size):
    from safepyrun.cli import parse_size
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12Q", "-5M", "0", "M", "1e9"])
def test_cli_rejects_bad_sizes(text):
    out = cli("--max-memory", text, "-", stdin="1\n")
    assert out.returncode == 2
    assert "argument --max-memory:" in out.stderr


def test_realloc_that_empties_an_arena_does_not_deadlock():
    # A small block grown past 512 bytes is moved by pymalloc, which frees
    # the old block; when that empties its arena, the arena is freed inside
    # the cap's counting path (which holds the cap's lock).
    out = child("""
        import asyncio
        from safepyrun import RunPython
        py = RunPython({}, max_memory=2**30)
        code = '''
        for k in range(100):
            junk = [bytes(40 + (i % 2)) for i in range(60000)]
            holder = list(range(10))
            junk2 = [bytes(40 + (i % 2)) for i in range(60000)]
            del junk, junk2
            holder.extend(range(1000))
            del holder
        'ok'
        '''
        import textwrap
        print(asyncio.run(py(textwrap.dedent(code))))
    """)
    assert out == "ok\n"
