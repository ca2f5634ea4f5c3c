"""The IPython integration, in a real IPython shell (a subprocess)."""
import pytest

from trust_helpers import check_output

pytest.importorskip("IPython")

PRELUDE = """
import asyncio, io, os, sys, json
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
def cell(src):
    r = shell.run_cell(src, store_history=True)
    err = r.error_before_exec or r.error_in_exec
    return (type(err).__name__ + ': ' + str(err)) if err else r.result
def show(x):
    print('@@' + json.dumps(x if isinstance(x, (bool, int, str, type(None), list)) else repr(x)), flush=True)
"""


def lines(out):
    import json
    return [json.loads(line[2:]) for line in out.splitlines() if line.startswith('@@')]


def test_load_ext_cell_magic_and_line_magic(tmp_path):
    out = check_output(PRELUDE + """
show(cell('%load_ext safepyrun'))
show(cell('%%py\\nx = 20\\nx + 1'))
show(shell.user_ns.get('x'))
show(cell('%%py\\nx * 2;'))
show(cell('type(pyrun).__name__, allow.__module__'))
r = cell('runner = %py -o\\nrunner is pyrun')
show(r)
show(cell('%py 6 * 7'))
show(cell('%%py\\nimport subprocess\\nsubprocess.run(["true"])'))
""", tmp_path)
    got = lines(out)
    assert got[0] is None
    assert got[1] == 21
    assert got[2] == 20
    assert got[3] is None  # trailing ';' hides the value
    assert got[4] == "('RunPython', 'safepyrun')"
    assert got[5] is True
    assert got[6] == 42
    assert got[7].startswith("PermissionError") and "subprocess.Popen" in got[7]


def test_injected_names_are_not_overwritten(tmp_path):
    out = check_output(PRELUDE + """
cell('%load_ext safepyrun')
pyrun, allow = shell.user_ns['pyrun'], shell.user_ns['allow']
cell('%%py\\npyrun = 1\\nallow = 2\\ndef python(): pass\\nkept = 3')
show(shell.user_ns['pyrun'] is pyrun)
show(shell.user_ns['allow'] is allow)
show(shell.user_ns.get('kept'))
cell('%%py\\ndef pyrun(code): return None\\ndef allow(*a): return a')
show(shell.user_ns['pyrun'] is pyrun)
show(shell.user_ns['allow'] is allow)
""", tmp_path)
    assert lines(out) == [True, True, 3, True, True]


def test_transform_cell_magics_and_shell_escapes(tmp_path, touch):
    marker = tmp_path / "bang-ran"
    out = check_output(PRELUDE + f"""
from safepyrun import create_pyrun_magic
create_pyrun_magic(shell)
show(cell('%%py\\na = %time 3 + 4\\na'))
show(cell('%%py\\n!{touch} {marker}'))
show(cell('%%py\\nfiles = !echo hi\\nfiles'))
show(os.path.exists({str(marker)!r}))
""", tmp_path)
    got = lines(out)
    assert got[0] == 7
    assert got[1].startswith("PermissionError"), got[1]
    assert got[2].startswith("PermissionError"), got[2]
    assert got[3] is False
    assert not marker.exists()


def test_magic_runs_with_an_event_loop_already_running(tmp_path):
    """ipykernel runs cells inside a running event loop; the magic must
    still run the cell (in this thread, so the gate applies)."""
    out = check_output(PRELUDE + """
from safepyrun import create_pyrun_magic
create_pyrun_magic(shell)
async def main():
    r = await shell.run_cell_async(
        '%%py\\nimport asyncio\\nawait asyncio.sleep(0.01)\\nn = sum(range(5))\\nn',
        store_history=True, transformed_cell=shell.transform_cell(
        '%%py\\nimport asyncio\\nawait asyncio.sleep(0.01)\\nn = sum(range(5))\\nn'))
    show(r.result)
    r = await shell.run_cell_async('%%py\\nimport os\\nos.system("true")',
        transformed_cell=shell.transform_cell('%%py\\nimport os\\nos.system("true")'))
    show(type(r.error_in_exec).__name__)
    show(asyncio.get_running_loop() is loop)
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
show(cell('%%py\\nn + 1'))
""", tmp_path)
    assert lines(out) == [10, "PermissionError", True, 11]


def test_create_pyrun_magic_with_explicit_runner(tmp_path):
    out = check_output(PRELUDE + f"""
from safepyrun import RunPython, create_pyrun_magic
ns = {{}}
mine = RunPython(ns, ok_dests=[{str(tmp_path)!r}])
assert create_pyrun_magic(shell, mine) is mine
shell.user_ns['mine'] = mine
show(cell("%%py\\nopen(" + repr({str(tmp_path / "ok.txt")!r}) + ", 'w').write('hi')"))
show(ns.get('__builtins__') is not None or True)
show(cell('r = %py -o\\nr is mine'))
""", tmp_path)
    assert lines(out)[0] == 2
    assert lines(out)[2] is True
    assert (tmp_path / "ok.txt").read_text() == "hi"
