"""Ways a cell could step out of its run's gate with one stdlib call.

The gate is scoped by a ContextVar; code the cell runs in a fresh context,
in an executor thread that does not copy the context, or under a nested
runner with a broader policy must stay gated (DESIGN.md: "Sandboxed code
cannot change policy", "Cell code stays cell code").  Each test touches a
marker with os.system and asserts the marker is absent.
"""
import subprocess
import sys

import pytest

from conftest import run


def gone(py, code, marker):
    py.g["cmd"] = f"touch {marker}"
    with pytest.raises(PermissionError):
        run(py, code)
    assert not marker.exists(), "the effect happened outside the gate"


# --- fresh contexts -----------------------------------------------------------

def test_context_run_in_fresh_context_stays_gated(py, marker):
    gone(py, "import contextvars\n"
             "contextvars.Context().run(os.system, cmd)", marker)


def test_call_soon_with_fresh_context_stays_gated(py, marker):
    gone(py, "import asyncio, contextvars\n"
             "loop = asyncio.get_running_loop()\n"
             "fut = loop.create_future()\n"
             "def cb():\n"
             "    try:\n        fut.set_result(os.system(cmd))\n"
             "    except BaseException as e:\n        fut.set_exception(e)\n"
             "loop.call_soon(cb, context=contextvars.Context())\n"
             "await fut", marker)


def test_task_with_fresh_context_stays_gated(py, marker):
    if sys.version_info < (3, 11):
        pytest.skip("create_task(context=) is 3.11+")
    gone(py, "import asyncio, contextvars\n"
             "async def f(): os.system(cmd)\n"
             "await asyncio.create_task(f(), context=contextvars.Context())",
         marker)


def test_run_in_default_executor_stays_gated(py, marker):
    # asyncio.to_thread starts the default executor's worker (allowed);
    # run_in_executor then reuses it without copying the context.
    gone(py, "import asyncio\n"
             "await asyncio.to_thread(lambda: None)\n"
             "loop = asyncio.get_running_loop()\n"
             "await loop.run_in_executor(None, os.system, cmd)", marker)


# --- nested runners ---------------------------------------------------------------

@pytest.mark.parametrize("options", ["yolo=True", "ok_dests=None",
                                     "ok_dests=['/']"])
def test_nested_runner_cannot_broaden_policy(py, marker, options):
    py.g["target"] = str(marker)
    with pytest.raises(PermissionError):
        run(py, "sp = sys.modules['safepyrun']\n"
                f"inner = sp.RunPython({{'os': os}}, {options})\n"
                "await inner(f\"open({target!r}, 'w').close()\\n"
                "os.system('touch {target}')\")")
    assert not marker.exists()


def test_engine_runner_cannot_be_built_from_a_cell(py, marker):
    py.g["target"] = str(marker)
    with pytest.raises(PermissionError):
        run(py, "e = sys.modules['safepyrun._engine']\n"
                "r = e.Runner({}, None, None, False, True, None)\n"
                "await r.run(f\"__import__('os').system('touch {target}')\")")
    assert not marker.exists()


# --- cell code run later by the host (DESIGN: "Cell code stays cell code") ----

def test_cell_function_called_by_host_later_stays_gated(py, marker):
    run(py, f"def later_(): os.system('touch {marker}')")
    with pytest.raises(PermissionError):
        py.g["later_"]()
    assert not marker.exists()


def test_finalizer_and_atexit_stay_gated(tmp_path):
    m1, m2 = tmp_path / "atexit", tmp_path / "del"
    script = (
        "import asyncio, os\nfrom safepyrun import RunPython\n"
        "py = RunPython({'os': os})\n"
        "asyncio.run(py(\"import atexit\\n"
        f"atexit.register(os.system, 'touch {m1}')\\n"
        "class D:\\n"
        f"    def __del__(self): os.system('touch {m2}')\\n"
        "keep_ = D()\"))\n")
    subprocess.run([sys.executable, "-c", script], capture_output=True,
                   timeout=60)
    assert not m1.exists()
    assert not m2.exists()
