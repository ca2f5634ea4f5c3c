"""Helpers for the trust tests (allow, policies, presets, config, IPython,
tamper, describe): registry clean-up and subprocess runners."""
import os
import subprocess
import sys
import textwrap

import pytest

from safepyrun import _engine


@pytest.fixture
def clean_registry():
    """Undo every allow() a test makes, and restore default_ok_dests."""
    before = _engine.allow_entries()
    dests = _engine.get_default_ok_dests()
    yield
    kept = list(before)
    for entry in _engine.allow_entries():
        for i, old in enumerate(kept):
            if old[0] is entry[0] and old[2] is entry[2] and old[1] == entry[1]:
                del kept[i]
                break
        else:
            _engine.allow_remove(*entry)
    _engine.set_default_ok_dests(dests)


def run_python(code, tmp_path, env=None, timeout=120, cwd=None):
    """Run `code` in a fresh interpreter with XDG_CONFIG_HOME (and HOME's
    config dirs) pointing into tmp_path; return CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("MPLBACKEND", "Agg")
    full_env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    full_env.pop("PYTHONSTARTUP", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=cwd or str(tmp_path))


def check_output(code, tmp_path, **kw):
    """run_python that must succeed; returns stdout."""
    proc = run_python(code, tmp_path, **kw)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout
