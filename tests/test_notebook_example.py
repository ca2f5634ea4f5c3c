"""examples/notebook.ipynb runs headless in a real Jupyter kernel (nbclient):
%load_ext safepyrun, %%py --ok-dest, a plot and a refused action (issue 11)."""
import os
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"


def outputs_text(cell, kind="text/plain", types=("execute_result",)):
    return [o.get("data", {}).get(kind) for o in cell.outputs
            if o.output_type in types and kind in o.get("data", {})]


@pytest.mark.slow
def test_example_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    if not NOTEBOOK.exists():
        pytest.skip("examples/notebook.ipynb is not in this tree")
    # The kernel shows figures with its own inline backend, and runs this
    # interpreter (the venv the tests run in).
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / "notebook.ipynb")
    nb = nbformat.read(work / "notebook.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, startup_timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(work)}})
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    load, host, write, plot, refused, export = code

    assert "%load_ext safepyrun" in load.source and not [
        o for o in load.outputs if o.output_type == "error"]
    assert "%%py --ok-dest out" in write.source
    assert outputs_text(write) == ["6"]
    assert (work / "out" / "rows.json").read_text().startswith('[{"n": 0')

    assert plot.source.rstrip().endswith(";")
    assert outputs_text(plot) == []  # the ';' hides the value
    pngs = outputs_text(plot, "image/png", ("display_data",))
    assert len(pngs) == 1 and len(pngs[0]) > 1000

    errors = [o for o in refused.outputs if o.output_type == "error"]
    assert len(errors) == 1
    assert errors[0].ename == "PermissionError"
    assert errors[0].evalue.startswith(
        "safepyrun refused to run a program: ['ls', '-l'] (audit event "
        "'subprocess.Popen'; call chain: <pyrun_")
    assert errors[0].evalue.endswith(
        "Remedy: only the host can allow this, by trusting a function that "
        "does it with allow(); do not retry it another way.")
    tb = "\n".join(errors[0].traceback)
    for host_frame in ("safepyrun/ipython.py", "run_sync", "base_events"):
        assert host_frame not in tb

    assert outputs_text(export) == ["{'n': 5, 'square': 25}"]
