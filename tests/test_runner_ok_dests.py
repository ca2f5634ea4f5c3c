"""The host may change a runner's ok_dests between cells (issue 11, item 4);
no cell, nor code a cell left behind, may."""
import pytest

from safepyrun import RunPython

from conftest import host_ns, run


def test_host_sets_ok_dests_between_cells(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    py = RunPython(host_ns(), ok_dests=[])
    py.ok_dests = [str(d)]
    assert py.ok_dests == (str(d),)
    assert run(py, f"open({str(d / 'a')!r}, 'w').write('a')") == 1
    py.ok_dests = []
    with pytest.raises(PermissionError):
        run(py, f"open({str(d / 'b')!r}, 'w')")
    assert not (d / "b").exists()
    with pytest.raises(AttributeError):
        del py.ok_dests


@pytest.mark.parametrize("code", [
    "python.ok_dests = None",
    "python.ok_dests = ['/']",
    "type(python).ok_dests.__set__(python, None)",
    "object.__setattr__(python, 'ok_dests', None)",
    "import asyncio\nasync def t():\n    python.ok_dests = None\n"
    "await asyncio.create_task(t())",
])
def test_cells_cannot_change_ok_dests(tmp_path, code):
    py = RunPython(host_ns(), ok_dests=[str(tmp_path)])
    py.g["python"] = py
    with pytest.raises(PermissionError, match="change a runner's ok_dests"
                       "|change the sandbox"):
        run(py, code)
    assert py.ok_dests == (str(tmp_path),)


def test_code_a_cell_left_behind_cannot_change_ok_dests(tmp_path):
    py = RunPython(host_ns(), ok_dests=[str(tmp_path)])
    py.g["python"] = py
    run(py, "def widen():\n    python.ok_dests = None\n")
    with pytest.raises(PermissionError, match="change a runner's ok_dests"):
        py.g["widen"]()
    assert py.ok_dests == (str(tmp_path),)
