"""The run report (issue 9, item 4): ``await python.run(code)`` never raises
for the cell's errors and returns a RunResult -- value, output, error and
traceback, the events the sandbox judged (verdict, trusting callable),
elapsed time, and the figures the cell drew as PNG bytes."""
import asyncio
import json
import os
import sys

import pytest

from conftest import host_ns
from safepyrun import RunPython, RunResult, allow, disallow


def report(py, code, **kw):
    return asyncio.run(py.run(code, **kw))


@pytest.fixture
def py():
    return RunPython(host_ns(), ok_dests=[])


def save_tool(path):
    """A trusted host tool that writes where it is told."""
    with open(path, "w") as f:
        f.write("saved")


# ---- value, error, traceback ----------------------------------------------

def test_value_and_output(py):
    r = report(py, "print('hi')\nx_ = [1, 2]\nsum(x_) * 14")
    assert isinstance(r, RunResult)
    assert r.value == 42 and r.ok and r.error is None and r.traceback == ""
    assert r.stdout == "hi\n"
    assert py.g["x_"] == [1, 2]  # names still export
    assert r.elapsed >= 0 and r.peak_memory is None
    assert r.events == () and r.events_dropped == 0 and r.displays == ()


def test_value_is_what_python_returns(py):
    marker = object()
    py.g["marker"] = marker
    assert report(py, "marker").value is marker
    assert report(py, "y = 1").value is None


@pytest.mark.parametrize("code, exc_type, fragment", [
    ("1/0", ZeroDivisionError, "division by zero"),
    ("x = (", SyntaxError, "never closed"),
    ("open('/etc/safepyrun-report-test', 'w')", PermissionError,
     "safepyrun refused to open a file for writing"),
    ("raise TimeoutError('slow')", TimeoutError, "slow"),
    ("raise MemoryError('big')", MemoryError, "big"),
    ("raise KeyboardInterrupt", KeyboardInterrupt, ""),
    ("import sys\nsys.exit(3)", PermissionError, "exit the host"),
    ("import socket", PermissionError, "socket"),
])
def test_cell_errors_are_reported_not_raised(py, exc_type, code, fragment):
    r = report(py, code)
    assert isinstance(r.error, exc_type)
    assert not r.ok and r.value is None
    assert fragment in str(r.error)
    assert r.traceback.rstrip().splitlines()[-1].startswith(exc_type.__name__)


def test_traceback_starts_at_the_cell(py):
    r = report(py, "def inner():\n    return 1/0\n\nprint('before')\ninner()")
    assert r.stdout == "before\n"
    lines = r.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "<pyrun_') and "line 5" in lines[1]
    assert "    inner()" in lines
    assert "return 1/0" in r.traceback
    assert "asyncio" not in r.traceback and "safepyrun" not in r.traceback
    assert lines[-1] == "ZeroDivisionError: division by zero"


def test_error_in_a_task_of_the_cell(py):
    r = report(py, "import asyncio\nasync def bad():\n    raise ValueError('t')\n"
                   "asyncio.create_task(bad())\nprint('spawned')")
    assert isinstance(r.error, ValueError) and r.stdout == "spawned\n"


def test_misuse_of_the_api_raises(py):
    with pytest.raises(TypeError):
        report(py, 123)
    with pytest.raises(TypeError):
        report(py)  # missing code


def test_nested_run_from_a_cell_is_refused(py):
    py.g["python"] = py
    r = report(py, "await python.run('1')")
    assert isinstance(r.error, PermissionError)
    assert "start a run" in str(r.error)


def test_cancelling_the_awaiting_task_propagates(py):
    async def main():
        t = asyncio.create_task(py.run("import asyncio\nawait asyncio.sleep(10)"))
        await asyncio.sleep(0.02)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
    asyncio.run(main())


def test_elapsed(py):
    r = report(py, "import asyncio\nawait asyncio.sleep(0.05)")
    assert 0.05 <= r.elapsed < 5


# ---- events ------------------------------------------------------------------

def test_refused_write_is_a_denied_event_with_its_path(py, tmp_path):
    target = tmp_path / "nope.txt"
    r = report(py, f"open({str(target)!r}, 'w')")
    assert isinstance(r.error, PermissionError)
    assert not target.exists()
    [event] = r.events
    assert event.name == "open" and event.verdict == "denied"
    assert event.args[0] == repr(str(target)) and event.by is None
    assert str(event).startswith(f"[denied] open({str(target)!r}, 'w'")


def test_trusted_write_is_allowed_with_the_trusting_name(tmp_path):
    allow(save_tool)
    try:
        py = RunPython(host_ns(save_tool=save_tool), ok_dests=[])
        target = tmp_path / "t.txt"
        r = report(py, f"save_tool({str(target)!r})")
        assert r.ok, r.traceback
        assert target.read_text() == "saved"
        [event] = r.events
        assert event.verdict == "allowed"
        assert event.by == f"{__name__}.save_tool"
        assert event.args[0] == repr(str(target))
    finally:
        disallow(save_tool)


def test_write_inside_ok_dests_is_allowed_without_a_trusting_call(tmp_path):
    py = RunPython(host_ns(), ok_dests=[str(tmp_path)])
    r = report(py, f"open({str(tmp_path / 'a')!r}, 'w').close()\n"
                   f"import os\nos.remove({str(tmp_path / 'a')!r})")
    assert r.ok, r.traceback
    assert [(e.name, e.verdict, e.by) for e in r.events] == [
        ("open", "allowed", None), ("os.remove", "allowed", None)]


def test_denied_process_and_untrusted_events(py, tmp_path):
    marker = tmp_path / "m"
    r = report(py, f"import os\nos.system('touch {marker}')")
    assert not marker.exists()
    [event] = r.events
    assert (event.name, event.verdict) == ("os.system", "denied")
    assert str(marker) in event.args[0]


def test_pre_deny_allowance_is_named(tmp_path):
    py = RunPython(host_ns(), ok_dests=[], pre_deny=lambda info: True)
    target = tmp_path / "p"
    r = report(py, f"open({str(target)!r}, 'w').close()")
    assert r.ok and target.exists()
    [event] = r.events
    assert (event.verdict, event.by) == ("allowed", "pre_deny")


def test_event_args_never_run_a_cells_repr(py, tmp_path):
    """The report shows arguments without running the cell's __repr__ (it
    would run again, later, in the host, whenever the report is read)."""
    r = report(py, "calls = []\n"
                   "class P(str):\n"
                   "    def __repr__(self):\n"
                   "        calls.append(1)\n        return 'FORGED'\n"
                   "class Q:\n"
                   "    def __repr__(self):\n"
                   "        calls.append(2)\n        return 'FORGED'\n"
                   f"try:\n    open(P({str(tmp_path / 'x')!r}), 'w')\n"
                   "except PermissionError:\n    pass\n"
                   "import os\n"
                   "try:\n    os.system(Q())\nexcept (PermissionError, TypeError):\n    pass\n"
                   "calls")
    assert r.value == []
    assert "FORGED" not in repr(r.events)
    assert r.events[0].args[0] == repr(str(tmp_path / "x"))


def test_events_are_bounded_with_a_count(py, tmp_path):
    r = report(py, f"for i in range(1200):\n"
                   f"    try:\n        open({str(tmp_path)!r} + f'/f{{i}}', 'w')\n"
                   f"    except PermissionError:\n        pass\n")
    assert len(r.events) == 1000 and r.events_dropped == 200
    assert r.events[-1].args[0] == repr(str(tmp_path / "f999"))
    assert "[200 more events not recorded]" in str(r)
    assert os.listdir(tmp_path) == []


def test_events_belong_to_their_run(py, tmp_path):
    report(py, f"try:\n    open({str(tmp_path / 'a')!r}, 'w')\nexcept PermissionError:\n    pass")
    r = report(py, "1")
    assert r.events == ()


def test_concurrent_runs_keep_their_events(tmp_path):
    a = RunPython(host_ns(), ok_dests=[])
    b = RunPython(host_ns(), ok_dests=[])
    code = ("import asyncio\nfor i in range(3):\n"
            "    try:\n        open(DIR + f'/{NAME}{i}', 'w')\n"
            "    except PermissionError:\n        pass\n"
            "    await asyncio.sleep(0)\n")
    a.g.update(DIR=str(tmp_path), NAME="a")
    b.g.update(DIR=str(tmp_path), NAME="b")

    async def both():
        return await asyncio.gather(a.run(code), b.run(code))

    ra, rb = asyncio.run(both())
    assert [e.args[0] for e in ra.events] == [repr(f"{tmp_path}/a{i}") for i in range(3)]
    assert [e.args[0] for e in rb.events] == [repr(f"{tmp_path}/b{i}") for i in range(3)]


def test_plain_calls_record_nothing(py, tmp_path):
    """python(code) keeps no report: the hook does no extra work for it."""
    with pytest.raises(PermissionError):
        asyncio.run(py(f"open({str(tmp_path / 'a')!r}, 'w')"))


# ---- str(result) and JSON -----------------------------------------------------

def test_str_is_compact(py, tmp_path):
    r = report(py, f"print('out')\nimport sys\nprint('err', file=sys.stderr)\n"
                   f"open({str(tmp_path / 'z')!r}, 'w')")
    text = str(r)
    lines = text.splitlines()
    assert lines[0] == "out"
    assert lines[1:3] == ["[stderr]", "err"]
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1].startswith(f"[denied] open({str(tmp_path / 'z')!r}, 'w'")
    assert "PermissionError: safepyrun refused" in text
    assert str(report(py, "6 * 7")) == "Out: 42"
    assert str(report(py, "x = 1")) == "(no output)"


def test_str_of_a_value_whose_repr_fails(py):
    r = report(py, "class B:\n    def __repr__(self): raise ValueError('no')\nB()")
    assert "repr failed" in str(r)


def test_to_json_encodes_everything(py, tmp_path):
    r = report(py, "print('o')\n{'a': object()}")
    data = json.loads(json.dumps(r.to_json()))
    assert data["ok"] is True and data["stdout"] == "o\n"
    assert data["value"].startswith("{'a': <object object at")
    r = report(py, f"open({str(tmp_path / 'q')!r}, 'w')")
    data = json.loads(json.dumps(r.to_json()))
    assert data["error"]["type"] == "PermissionError"
    assert data["events"][0]["verdict"] == "denied"
    assert data["events"][0]["args"][0] == repr(str(tmp_path / "q"))


# ---- figures ------------------------------------------------------------------

@pytest.fixture
def plt():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    plt.close("all")
    yield plt
    plt.close("all")


def test_plot_comes_back_as_png(py, plt):
    py.g["plt"] = plt
    r = report(py, "plt.plot([1, 3, 2])\nplt.title('t')\nNone")
    assert r.ok, r.traceback
    [fig] = r.displays
    assert fig.mime == "image/png"
    assert fig.data[:8] == b"\x89PNG\r\n\x1a\n"
    dpi = plt.rcParams["figure.dpi"]
    w, h = plt.rcParams["figure.figsize"]
    assert (fig.width, fig.height) == (int(w * dpi), int(h * dpi))
    assert len(fig.data) > 1000
    assert plt.get_fignums() == []  # closed afterwards
    assert str(r) == f"[figure 1: PNG {fig.width}x{fig.height}]"


def test_two_figures_in_order_and_host_figures_left_alone(py, plt):
    host_fig = plt.figure()
    host_fig.canvas.draw()  # up to date: the cell does not touch it
    py.g["plt"] = plt
    r = report(py, "f1 = plt.figure(figsize=(2, 1), dpi=50)\nplt.plot([1])\n"
                   "f2 = plt.figure(figsize=(3, 2), dpi=50)\nplt.plot([2])\nNone")
    assert [(d.width, d.height) for d in r.displays] == [(100, 50), (150, 100)]
    assert plt.get_fignums() == [host_fig.number]


def test_host_figure_the_cell_draws_on_is_rendered_and_kept(py, plt):
    fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
    fig.canvas.draw()
    py.g["ax"] = ax
    r = report(py, "ax.plot([1, 2])\nNone")
    [d] = r.displays
    assert (d.width, d.height) == (80, 80)
    assert plt.get_fignums() == [fig.number]


def test_no_pyplot_no_figures(py):
    r = report(py, "1")
    assert r.displays == ()


# ---- IPython display() ----------------------------------------------------------

IPYTHON_DISPLAY = """
import asyncio, json
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from safepyrun import RunPython
shell = InteractiveShell.instance()
seen = []
shell.display_pub.publish = lambda data, metadata=None, **kw: seen.append(data)
py = RunPython({'display': display}, ok_dests=[])
r = asyncio.run(py.run("class H:\\n"
                       "    def _repr_html_(self): return '<b>hi</b>'\\n"
                       "display(H())\\ndisplay('plain')\\nNone"))
assert r.ok, r.traceback
print('displays', json.dumps([(d.mime, d.data) for d in r.displays]))
print('seen', json.dumps(seen))
print('text', json.dumps(str(r)))
display('host')  # the host's own display() still publishes
print('after', json.dumps(seen))
"""


def test_ipython_display_goes_into_the_report(tmp_path):
    """In a real IPython shell (a child process: the shell outlives its
    test), display() in a run goes into the report, not to the front end;
    the host's own display() still publishes."""
    pytest.importorskip("IPython")
    from trust_helpers import check_output
    out = dict(line.split(" ", 1) for line in
               check_output(IPYTHON_DISPLAY, tmp_path).splitlines()
               if line.split(" ", 1)[0] in ("displays", "seen", "text", "after"))
    assert json.loads(out["displays"]) == [["text/html", "<b>hi</b>"],
                                           ["text/plain", "'plain'"]]
    assert json.loads(out["seen"]) == []
    assert "[display 1: text/html, 9 characters]" in json.loads(out["text"])
    assert json.loads(out["after"]) == [{"text/plain": "'host'"}]


def test_report_display_keeps_only_plain_copies(py):
    from safepyrun import _engine
    assert _engine.report_display({"text/plain": "x"}) is False  # no run here
    py.g["rd"] = _engine.report_display
    r = report(py, "class S(str):\n    pass\n"
                   "rd({'text/plain': S('s'), 'image/png': b'\\x89PNG', "
                   "'other': object(), 3: 'x'})")
    assert r.value is True
    [d] = r.displays
    assert d.mime == "image/png" and type(d.data) is bytes


# ---- out of memory at every step of a reported run ---------------------------

OOM_REPORT_SWEEP = """
import os, sys
import _testcapi
from safepyrun import _engine, allow

def oom(k):
    _testcapi.set_nomemory(k, k + 1)

def tool():
    os.system('true')

allow(tool)
g = {'os': os, 'oom': oom, 'tool': tool}
runner = _engine.Runner(g, [], None, False, False, {}, None, max_output=20)

def one(code):
    try:
        runner.report(code).send(None)
    except StopIteration as stop:
        _testcapi.remove_mem_hooks()
        rep = stop.value
        assert isinstance(rep, dict) and set(rep) >= {'stdout', 'events'}, rep
        return 'ok'
    except (MemoryError, PermissionError, OSError):
        _testcapi.remove_mem_hooks()
        return 'error'
    except BaseException as e:
        _testcapi.remove_mem_hooks()
        return type(e).__name__
    finally:
        _testcapi.remove_mem_hooks()
    return 'ok'

outcomes = {}
for body in ["print('a' * 50)\\nimport sys\\nprint('e', file=sys.stderr)",
             "open('/nonexistent/x', 'w')", "tool()", "1/0"]:
    for k in range(0, 250):
        res = one(f"oom({k})\\n{body}")
        outcomes[res] = outcomes.get(res, 0) + 1
print('outcomes', sorted(outcomes))
try:
    runner.report("print('fine')\\n6*7").send(None)
except StopIteration as stop:
    print('after', stop.value['value'], repr(stop.value['stdout']))
"""


@pytest.mark.skipif(os.environ.get("SAFEPYRUN_ASAN") == "1",
                    reason="allocation failures are injected into pymalloc")
@pytest.mark.skipif(sys.version_info >= (3, 13),
                    reason="CPython 3.13's own out-of-memory paths crash under "
                           "this sweep (see test_engine_c)")
def test_out_of_memory_at_every_step_of_a_report_is_clean():
    """One failed allocation at a time over a reported run (the router's
    write, the events, the report's assembly): every outcome is a report or
    a clean exception, and the host then runs a report normally."""
    pytest.importorskip("_testcapi")
    from test_engine_c import python_child
    proc = python_child(OOM_REPORT_SWEEP, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = proc.stdout.split("outcomes ")[1].splitlines()[0]
    assert "SystemError" not in outcomes, outcomes
    assert "after 42 'fine\\n'" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def only_csv(obj, args, kwargs, data):
    if not str(args[0]).endswith(".csv"):
        raise PermissionError("only .csv files")


def save_csv(path):
    with open(path, "w") as f:
        f.write("a,b\n")


def test_call_refused_by_its_policy_is_a_denied_call_event(tmp_path):
    allow(save_csv, allow_policy=only_csv)
    try:
        py = RunPython(host_ns(save_csv=save_csv), ok_dests=[])
        r = report(py, f"save_csv({str(tmp_path / 'x.sh')!r})")
        assert isinstance(r.error, PermissionError)
        assert not (tmp_path / "x.sh").exists()
        assert [(e.name, e.args, e.verdict) for e in r.events] == [
            ("call", ("save_csv",), "denied")]
        r = report(py, f"save_csv({str(tmp_path / 'x.csv')!r})")
        assert r.ok, r.traceback
        assert [(e.name, e.verdict, e.by) for e in r.events] == [
            ("open", "allowed", f"{__name__}.save_csv")]
    finally:
        disallow(save_csv, None, only_csv)


def test_to_json_writes_figures_without_replacing_files(py, plt, tmp_path):
    py.g["plt"] = plt
    (tmp_path / "figure1.png").write_bytes(b"mine")
    r = report(py, "plt.figure(figsize=(1, 1), dpi=20)\nplt.plot([1])\nNone")
    data = r.to_json(figure_dir=tmp_path)
    [fig] = data["displays"]
    assert fig["path"] == str(tmp_path / "figure1-2.png")
    assert (tmp_path / "figure1.png").read_bytes() == b"mine"
    assert (tmp_path / "figure1-2.png").read_bytes() == r.displays[0].data
    assert (fig["width"], fig["height"], fig["bytes"]) == (20, 20, len(r.displays[0].data))
    assert "path" not in r.to_json()["displays"][0]


def test_report_peak_memory_with_a_cap_and_without():
    py = RunPython(host_ns(), max_memory=200 * 2**20)
    r = asyncio.run(py.run("x = bytearray(20 * 2**20)\nlen(x)"))
    assert r.error is None and r.value == 20 * 2**20
    assert isinstance(r.peak_memory, int)
    assert 20 * 2**20 <= r.peak_memory < 200 * 2**20
    r = asyncio.run(py.run("bytearray(300 * 2**20)"))
    assert type(r.error) is MemoryError
    assert str(r.error) == "cell exceeded its memory limit of 200.0 MiB"
    assert r.peak_memory <= 200 * 2**20
    assert asyncio.run(RunPython(host_ns()).run("1")).peak_memory is None


def test_run_takes_the_limits_per_call():
    py = RunPython(host_ns())
    r = asyncio.run(py.run("while True:\n    pass", timeout=0.3))
    assert type(r.error) is TimeoutError
    assert str(r.error) == "cell exceeded its time limit of 0.3 s"
    assert "TimeoutError" in r.traceback
    r = asyncio.run(py.run("bytearray(300 * 2**20)", max_memory=100 * 2**20))
    assert type(r.error) is MemoryError
    assert asyncio.run(py.run("6 * 7")).value == 42
