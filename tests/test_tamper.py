"""A cell cannot widen trust or change the sandbox's policy (issue 3,
item 5): afterwards a new run still refuses what it refused before."""
import subprocess
import sys

import pytest

import safepyrun
from safepyrun import RunPython, _engine, allow, set_data

from conftest import host_ns, refused, run
from trust_helpers import clean_registry  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")


def run_true():
    return subprocess.run(["true"]).returncode


@pytest.fixture
def tg(tmp_path):
    g = host_ns(allow=allow, set_data=set_data, run_true=run_true,
                d=str(tmp_path))
    return g


def still_refuses(g, tmp_path):
    """What the default policy refuses, a fresh runner still refuses."""
    py = RunPython(g, ok_dests=[str(tmp_path / "only")])
    refused(py, "run_true()", "subprocess.Popen")
    refused(py, "print('x')\nimport subprocess\nsubprocess.run(['true'])",
            "subprocess.Popen")
    refused(py, "open('/etc/h3-tamper', 'w')", "open")
    refused(py, "open(d + '/outside.txt', 'w')", "open")
    assert not (tmp_path / "outside.txt").exists()
    assert RunPython(g).ok_dests == RunPython(g).ok_dests  # stable default


CELLS = {
    "allow_print": "allow(print)",
    "allow_run_true": "allow(run_true)",
    "allow_module": "allow({sys.modules['subprocess']: ...})",
    "allow_prefix": "allow({'subprocess.*': ...})",
    "set_data": "set_data(ok_dests=['/'])",
    "default_ok_dests": "sys.modules['safepyrun'].default_ok_dests = ['/']",
    "setattr_allow": "sys.modules['safepyrun'].allow = lambda *a, **k: a[0]",
    "delattr_allow": "del sys.modules['safepyrun'].allow",
    "engine_register": "allow.__globals__['_engine'].allow_register(run_true)",
    "engine_dests": "allow.__globals__['_engine'].set_default_ok_dests(['/'])",
    "engine_import": "allow.__globals__['_engine'].allow_import('subprocess')",
    "engine_remove": "allow.__globals__['_engine'].allow_remove(run_true)",
    "allow_imports": "sys.modules['safepyrun'].allow_imports('subprocess')",
    "code_swap": "run_true.__code__ = (lambda: 0).__code__",
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cell_cannot_change_trust(name, tg, tmp_path):
    before = (_engine.allow_entries(), _engine.allowed_imports(),
              _engine.get_default_ok_dests(), _engine.get_data())
    allow_fn = safepyrun.allow
    py = RunPython(tg, ok_dests=[str(tmp_path)])
    with pytest.raises((PermissionError, KeyError)):
        run(py, CELLS[name])
    after = (_engine.allow_entries(), _engine.allowed_imports(),
             _engine.get_default_ok_dests(), _engine.get_data())
    assert after == before
    assert safepyrun.allow is allow_fn
    still_refuses(tg, tmp_path)


def test_in_run_is_false_outside_and_true_inside(tg):
    tg["in_run"] = _engine.in_run
    assert not _engine.in_run()
    assert run(RunPython(tg), "in_run()") is True


def test_allow_from_cell_message(tg):
    with pytest.raises(PermissionError, match="sandboxed code cannot"):
        run(RunPython(tg), "allow(print)")


def test_replacing_allow_in_module_dict_changes_no_policy(tg, tmp_path):
    """Even a route the module's __setattr__ does not see (its __dict__)
    leaves the engine's policy alone: a new run still refuses."""
    saved = safepyrun.__dict__["allow"]
    try:
        py = RunPython(tg, ok_dests=[])
        try:
            run(py, "vars(sys.modules['safepyrun'])['allow'] = print")
        except PermissionError:
            pass
        still_refuses(tg, tmp_path)
    finally:
        safepyrun.__dict__["allow"] = saved


def test_cell_cannot_swap_the_engine_used_by_new_runners(tg, tmp_path):
    """A cell replacing `_engine` in safepyrun's namespace must not make the
    host's next RunPython() unrestricted (it did: RunPython.__init__ looks
    `_engine` up in the module globals a cell can write via vars())."""
    saved = safepyrun.__dict__["_engine"]
    code = """
m = sys.modules['safepyrun']
e = vars(m)['_engine']
class FakeEngine:
    def __getattr__(self, n):
        return getattr(e, n)
    def Runner(self, g, ok, banned, ban_defs, yolo, data, pre_deny):
        return e.Runner(g, None, banned, ban_defs, True, data, pre_deny)
vars(m)['_engine'] = FakeEngine()
"""
    try:
        try:
            run(RunPython(tg, ok_dests=[]), code)
        except PermissionError:
            pass
        still_refuses(tg, tmp_path)
    finally:
        safepyrun.__dict__["_engine"] = saved


def test_default_ok_dests_set_by_host_applies_and_cell_cannot(tg, tmp_path):
    safepyrun.default_ok_dests = [str(tmp_path)]
    assert [str(p) for p in RunPython(tg).ok_dests] == [str(tmp_path)]
    with pytest.raises(PermissionError):
        run(RunPython(tg), "sys.modules['safepyrun'].default_ok_dests = None")
    assert [str(p) for p in safepyrun.default_ok_dests] == [str(tmp_path)]
