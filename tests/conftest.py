"""Shared helpers for the safepyrun test suite.

Every test passes RunPython an explicit namespace dict, so nothing depends
on the caller's globals.  `run(py, code)` drives one cell to completion in a
fresh event loop; `refused(...)` asserts a runtime refusal and returns its
message; `rejected(...)` asserts a pre-run (syntax-tree) refusal.
"""
import asyncio
import inspect
import os
import shutil
import string
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

# Isolate the suite from the user's ~/.config/safepyrun/config.py (it is
# executed at import and may widen default_ok_dests).  Set before the first
# import of safepyrun; child processes (CLI tests) inherit it.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="safepyrun-test-cfg-")

from safepyrun import RunPython  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds (deselect with "
        "-m 'not slow')")


def run(py, code):
    """Run one cell in a fresh event loop and return its value."""
    return asyncio.run(py(code))


def host_ns(**extra):
    """A fresh host namespace with the modules the seed examples use."""
    g = {"__name__": "__sandbox_test__", "os": os, "Path": Path,
         "shutil": shutil, "sys": sys, "warnings": warnings,
         "inspect": inspect, "string": string,
         "SimpleNamespace": SimpleNamespace}
    g.update(extra)
    return g


def refused(py, code, event=None, *fragments):
    """Assert that running `code` is refused at run time by the audit hook;
    return the message.  `event` is the audit event named in the message;
    `fragments` must all appear in it (e.g. the offending argument)."""
    with pytest.raises(PermissionError) as info:
        run(py, code)
    msg = str(info.value)
    assert "safepyrun refused" in msg, msg
    assert "call chain" in msg, msg
    if event is not None:
        assert f"audit event '{event}'" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def rejected(py, code, *fragments):
    """Assert that `code` is refused before it runs by the syntax-tree check;
    return the message."""
    with pytest.raises(PermissionError) as info:
        run(py, code)
    msg = str(info.value)
    assert "not allowed in the sandbox" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


@pytest.fixture
def g():
    return host_ns()


@pytest.fixture
def py(g):
    """A runner with the default policy: no writes, everything risky gated."""
    return RunPython(g)


@pytest.fixture
def marker(tmp_path):
    """A path a forbidden effect would create; tests assert it is absent."""
    return tmp_path / "marker-effect-happened"


@pytest.fixture
def touch():
    path = shutil.which("touch")
    if path is None:
        pytest.skip("no touch(1) on PATH")
    return path
