"""RunPython.__doc__ is generated from the live registry (issue 3, item 9)."""
import pytest

from safepyrun import (PosAllowPolicy, RunPython, allow, describe, disallow)

from trust_helpers import clean_registry  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")


def h3_report_tool(path):
    """Write a report."""


class H3Service:
    def fetch(self, url):
        pass

    def store(self, path):
        pass


def test_doc_lists_registry_and_changes_after_allow():
    before = RunPython.__doc__
    assert "h3_report_tool" not in before
    allow(h3_report_tool)
    allow({H3Service: ["fetch", ("store", PosAllowPolicy(0))]})
    doc = RunPython.__doc__
    assert doc != before
    assert "h3_report_tool" in doc
    assert "H3Service" in doc and "fetch" in doc and "store" in doc
    assert "PosAllowPolicy" in doc
    disallow(h3_report_tool)
    assert "h3_report_tool" not in RunPython.__doc__


def test_doc_explains_rules_and_refusals():
    doc = RunPython.__doc__
    assert "last expression" in doc
    assert "exported" in doc and "_" in doc
    assert "PermissionError" in doc
    assert "subprocess" in doc


def test_instance_doc_is_current_and_names_its_dests(tmp_path):
    py = RunPython({}, ok_dests=[str(tmp_path)])
    assert str(tmp_path) in py.__doc__
    allow(h3_report_tool)
    assert "h3_report_tool" in py.__doc__
    assert "no writes" in RunPython({}, ok_dests=[]).__doc__


def test_describe_function_and_help():
    assert describe() == RunPython.__doc__
    import pydoc
    text = pydoc.render_doc(RunPython, renderer=pydoc.plaintext)
    assert "trusted" in text.lower() or "Trusted" in text


# ---- issue 11, item 2: a description that tells the truth ---------------------

def h11_fetch(url: str, timeout: float = 5.0) -> str:
    """Fetch a URL and return its text.

    The second paragraph is not shown."""


class H11Store:
    def save(self, path, *, overwrite=False):
        """Save the store to path."""


def test_trusted_tools_show_signature_and_first_doc_line():
    allow(h11_fetch)
    allow({H11Store: [("save", PosAllowPolicy(0))]})
    doc = RunPython({}, ok_dests=[]).__doc__
    assert ("- h11_fetch(url: str, timeout: float = 5.0) -> str: Fetch a URL "
            "and return its text.\n") in doc
    assert "second paragraph" not in doc
    assert ("- H11Store.save(self, path, *, overwrite=False): Save the store "
            "to path. (arguments checked by PosAllowPolicy(pos=0, kw=None))"
            ) in doc


def test_doc_reflects_runner_settings(tmp_path):
    doc = RunPython({}, ok_dests=[str(tmp_path)]).__doc__
    assert (f"writing files outside the allowed directories ({str(tmp_path)!r})"
            in doc)
    assert ("(socket, importlib, ctypes, safepyrun are refused)" in doc)
    assert "define functions, classes and variables;" in doc
    assert "Limits: none (no time or memory limit)." in doc
    doc = RunPython({}, ok_dests=None, ban_imports=["pickle"],
                    ban_defs=True).__doc__
    assert "(write checks are off: writes are allowed anywhere)" in doc
    assert "import modules as usual (pickle are refused)" in doc
    assert ("use variables (defining functions and classes with def/class is "
            "refused);") in doc
    assert "define functions, classes" not in doc
    doc = RunPython({}, ok_dests=[]).__doc__
    assert "writing files anywhere (no writes at all" in doc
    doc = RunPython({}, yolo=True).__doc__
    assert "This runner has no sandbox (yolo=True): nothing is refused" in doc
    assert "What is refused" not in doc and "Refusals:" not in doc


def test_doc_says_whether_printed_output_is_returned():
    py = RunPython({}, ok_dests=[])
    assert ("Printed output is not returned to you: only the value of the last "
            "expression is") in py.__doc__
    assert ("Printed output (stdout and stderr) is returned to you with the "
            "value.") in describe(runner=py, output_returned=True)


def test_presets_summarised_in_a_line_each():
    pytest.importorskip("matplotlib")
    pytest.importorskip("pandas")
    from safepyrun import allow_matplotlib, allow_pandas
    allow_matplotlib()
    allow_pandas()
    doc = RunPython({}, ok_dests=[]).__doc__
    lines = doc.splitlines()
    assert sum(line.startswith("- matplotlib (preset): ") for line in lines) == 1
    assert sum(line.startswith("- pandas (preset): ") for line in lines) == 1
    for internal in ("matplotlib.axes._axes.Axes", "SpinesProxy",
                     "LocalWritePolicy", "_load_fontmanager", "kiwisolver",
                     "pandas.DataFrame: to_csv"):
        assert internal not in doc


def test_tool_spec_matches_description(tmp_path):
    from safepyrun import tool_spec
    py = RunPython({}, ok_dests=[str(tmp_path)])
    spec = tool_spec(py)
    assert set(spec) == {"name", "description", "input_schema"}
    assert spec["name"] == "python"
    assert spec["description"] == py.__doc__
    assert spec["input_schema"] == {
        "type": "object",
        "properties": {"code": {
            "type": "string",
            "description": "Python source to run; the value of its last "
                           "expression is returned."}},
        "required": ["code"], "additionalProperties": False}
    spec = tool_spec(py, name="run_python", output_returned=True)
    assert spec["name"] == "run_python"
    assert "Printed output (stdout and stderr) is returned" in spec["description"]


@pytest.mark.skipif(not hasattr(RunPython({}, ok_dests=[]), "timeout"),
                    reason="RunPython(timeout=) comes with the limits-time branch")
def test_doc_names_the_time_limit():
    doc = RunPython({}, ok_dests=[], timeout=2.5).__doc__
    assert "each call may run for at most 2.5 seconds (then TimeoutError)" in doc
    assert "Limits: none" not in doc
