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
