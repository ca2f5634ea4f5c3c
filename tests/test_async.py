"""Async cells: top-level await, tasks the cell creates, and the gate's
scope (a ContextVar: host coroutines interleaved with a suspended cell and
host code outside runs are not gated)."""
import asyncio
import os
import subprocess
import sys
import threading

import pytest

from conftest import host_ns, refused, run
from safepyrun import RunPython


def test_top_level_await(py):
    assert run(py, "import asyncio\nawait asyncio.sleep(0)\n7") == 7


def test_await_as_last_expression(py):
    assert run(py, "import asyncio\nasync def f(): return 3\nawait f()") == 3


def test_async_with(py):
    code = ("class CM:\n"
            "    async def __aenter__(self): return 'in'\n"
            "    async def __aexit__(self, *a): log.append('out')\n"
            "log = []\n"
            "async with CM() as v: log.append(v)\n"
            "log")
    assert run(py, code) == ["in", "out"]


def test_created_tasks_are_awaited(py):
    flag = []
    py.g["flag"] = flag
    code = ("import asyncio\n"
            "async def later():\n"
            "    await asyncio.sleep(0.01)\n"
            "    flag.append('done')\n"
            "asyncio.create_task(later())\n"
            "'returned'")
    assert run(py, code) == "returned"
    assert flag == ["done"]


def test_task_errors_surface(py):
    code = ("import asyncio\n"
            "async def bad(): raise ValueError('boom')\n"
            "asyncio.create_task(bad())\n1")
    with pytest.raises(ValueError, match="boom"):
        run(py, code)


def test_refusal_in_created_task_surfaces(py, marker):
    code = ("import asyncio\n"
            f"async def bad(): os.system('touch {marker}')\n"
            "asyncio.create_task(bad())\n1")
    refused(py, code, "os.system")
    assert not marker.exists()


def test_tasks_created_by_tasks_are_awaited(py):
    flag = []
    py.g["flag"] = flag
    code = ("import asyncio\n"
            "async def inner():\n"
            "    await asyncio.sleep(0)\n"
            "    flag.append('inner')\n"
            "async def outer():\n"
            "    asyncio.create_task(inner())\n"
            "asyncio.create_task(outer())\n")
    run(py, code)
    assert flag == ["inner"]


def test_gather_inside_cell(py):
    code = ("import asyncio\n"
            "async def sq(n):\n    await asyncio.sleep(0)\n    return n * n\n"
            "await asyncio.gather(*(sq(i) for i in range(5)))")
    assert run(py, code) == [0, 1, 4, 9, 16]


def test_task_group_refusal_unwrapped(py, marker):
    if sys.version_info < (3, 11):
        pytest.skip("TaskGroup is 3.11+")
    code = ("import asyncio\n"
            f"async def bad(): os.system('touch {marker}')\n"
            "async with asyncio.TaskGroup() as tg:\n"
            "    tg.create_task(bad())\n")
    refused(py, code, "os.system")
    assert not marker.exists()


def test_cell_functions_stay_gated_when_awaited_later(py, marker):
    run(py, f"async def later(): os.system('touch {marker}')")
    with pytest.raises(PermissionError):
        run(py, "await later()")
    assert not marker.exists()


# --- the gate follows the task context, not the thread ---------------------

def test_host_coroutine_interleaved_with_suspended_cell_not_gated(tmp_path):
    """While the cell is suspended at an await, a host coroutine in the same
    event loop writes a file, starts a thread and changes an ordinary
    environment variable: none of that is gated.  The cell only resumes
    after the host has done its work (an Event), so the interleaving is
    certain."""
    target = tmp_path / "host.txt"

    async def main():
        host_done = asyncio.Event()
        cell_waiting = asyncio.Event()
        py = RunPython(host_ns(host_done=host_done, cell_waiting=cell_waiting))

        async def host():
            await cell_waiting.wait()
            target.write_text("host")          # would be refused if gated
            out = []
            t = threading.Thread(target=out.append, args=(1,))
            t.start()
            t.join()
            host_done.set()
            return out

        cell = ("cell_waiting.set()\n"
                "await host_done.wait()\n"
                "'cell done'")
        return await asyncio.gather(py(cell), host())

    cell_result, host_result = asyncio.run(main())
    assert cell_result == "cell done"
    assert host_result == [1]
    assert target.read_text() == "host"


def test_cell_still_gated_after_host_interleaving(tmp_path):
    target = tmp_path / "cell.txt"

    async def main():
        go = asyncio.Event()
        py = RunPython(host_ns(go=go, target=str(target)))

        async def host():
            await asyncio.sleep(0)
            (tmp_path / "host.txt").write_text("ok")
            go.set()

        cell = "await go.wait()\nopen(target, 'w').write('x')"
        return await asyncio.gather(py(cell), host(), return_exceptions=True)

    cell_result, _ = asyncio.run(main())
    assert isinstance(cell_result, PermissionError)
    assert "safepyrun refused" in str(cell_result)
    assert not target.exists()
    assert (tmp_path / "host.txt").exists()


def test_two_cells_concurrently_keep_their_own_policy(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()

    async def main():
        step = asyncio.Event()
        pa = RunPython(host_ns(step=step), ok_dests=[str(a_dir)])
        pb = RunPython(host_ns(step=step), ok_dests=[str(b_dir)])
        ca = (f"await step.wait()\nopen({str(a_dir / 'x')!r}, 'w').close()\n"
              f"open({str(b_dir / 'x')!r}, 'w').close()")
        cb = ("import asyncio\nawait asyncio.sleep(0)\nstep.set()\n"
              f"open({str(b_dir / 'y')!r}, 'w').close()\n'b'")
        return await asyncio.gather(pa(ca), pb(cb), return_exceptions=True)

    ra, rb = asyncio.run(main())
    assert rb == "b"
    assert isinstance(ra, PermissionError)
    assert (a_dir / "x").exists()
    assert not (b_dir / "x").exists()
    assert (b_dir / "y").exists()


def test_host_code_outside_runs_not_gated(py, tmp_path, touch):
    with pytest.raises(PermissionError):
        run(py, "os.system('true')")
    # After a refused run, in the same thread and context, the host is free.
    (tmp_path / "after.txt").write_text("ok")
    marker = tmp_path / "ran"
    subprocess.run([touch, str(marker)], check=True)
    assert marker.exists()
    os.environ["SAFEPYRUN_TEST_VAR"] = "1"
    del os.environ["SAFEPYRUN_TEST_VAR"]
    sys.settrace(sys.gettrace())


def test_host_not_gated_inside_same_event_loop_after_run(tmp_path):
    async def main():
        py = RunPython(host_ns())
        assert await py("1 + 1") == 2
        (tmp_path / "in-loop.txt").write_text("ok")
        with pytest.raises(PermissionError):
            await py("os.system('true')")
        (tmp_path / "in-loop-2.txt").write_text("ok")

    asyncio.run(main())
    assert (tmp_path / "in-loop.txt").exists()
    assert (tmp_path / "in-loop-2.txt").exists()


def test_awaiting_without_running_loop_machinery(py):
    # A cell with no await still works when driven by a bare event loop.
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(py("sum(range(10))")) == 45
    finally:
        loop.close()


# ---- issue 11, item 6: python(code) without await warns --------------------------

def test_unawaited_cell_warns_like_a_coroutine(g):
    import gc
    import warnings
    py = RunPython(g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        py("marker_h11 = 1")
        gc.collect()
    assert [(w.category, str(w.message)) for w in caught] == [
        (RuntimeWarning, "safepyrun cell was never awaited: python(code) "
                         "returns an awaitable, so write `await python(code)`")]
    assert "marker_h11" not in g


def test_awaited_or_closed_cells_do_not_warn(g):
    import gc
    import warnings
    py = RunPython(g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(py, "1 + 1") == 2
        cell = py("2")
        cell.close()
        del cell
        gc.collect()
    assert caught == []


def test_unawaited_warning_as_error_does_not_break_the_host(g):
    import gc
    import warnings
    py = RunPython(g)
    seen = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u.exc_type)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            py("1")  # the error is reported as unraisable, not raised here
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert seen == [RuntimeWarning]
    assert run(py, "3") == 3
