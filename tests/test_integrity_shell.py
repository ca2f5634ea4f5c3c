"""The host's state is out of a cell's reach: no cell, however written, may
widen trust, switch the gate off, change a policy or reach the engine's
state through the Python shell (safepyrun/*.py).

Each attack runs from a cell and the test asserts that its harmful effect
did not happen: the policy still refuses a bad path afterwards, no file was
written, the host's RunPython is still the real one.  Rebinding a name is
caught by the shell's snapshot: `_engine.shell_verify()` (which the engine
calls when a cell step leaves its run) puts it back and raises
PermissionError; the tests call it themselves after the cell.
"""
import asyncio
import copy
import gc
import io
import os
import pickle
import sys
import types
import typing
import warnings
from pathlib import Path

import pytest

import safepyrun
from safepyrun import (AllowPolicy, LocalWritePolicy, OpenWritePolicy,
                       PathWritePolicy, PosAllowPolicy, RunPython, _engine,
                       allow, chk_dest)

from conftest import host_ns, run
from trust_helpers import check_output, clean_registry  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")

SANDBOX = "sandboxed code cannot change the sandbox"


class Store:
    """A trusted tool whose write is gated by a policy (os.open, so the
    engine's own write check is not what refuses)."""

    def save(self, path, text="x"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, text.encode())
        os.close(fd)
        return "saved"


@pytest.fixture
def env(tmp_path):
    """A runner whose cells reach the engine and the shell, with a trusted
    tool gated by PosAllowPolicy; ok_dests is tmp_path/ok."""
    ok = tmp_path / "ok"
    ok.mkdir()
    allow({Store: [("save", PosAllowPolicy(0, "path"))]})
    g = host_ns(gc=gc, types=types, s=Store(), ok=str(ok),
                out=str(tmp_path / "outside.txt"))
    py = RunPython(g, ok_dests=[str(ok)])
    g["python"] = py
    yield types.SimpleNamespace(g=g, py=py, ok=ok, tmp=tmp_path,
                                outside=tmp_path / "outside.txt")
    _engine.shell_verify()  # every test leaves the shell as it found it


def attempt(py, code):
    """Run a cell that the sandbox may refuse; return its exception (or
    None)."""
    try:
        run(py, code)
    except Exception as e:  # noqa: BLE001 - any refusal will do
        return e
    return None


def put_back_message(err):
    """The message of verify's refusal if `err` (or an exception it was
    raised during) is one, else None."""
    while err is not None:
        if isinstance(err, PermissionError) and "(put back)" in str(err):
            return str(err)
        err = err.__context__
    return None


# Refusals that stop a tampering cell before it reaches the shell: gc
# introspection, and the hook's refusal to change a host function's code
# or defaults.
EARLY_REFUSALS = ("audit event 'gc.get_", "audit event 'object.__setattr__'")


def gc_refused(err):
    """Whether `err` is one of the early refusals above."""
    while err is not None:
        if isinstance(err, PermissionError) and any(
                r in str(err) for r in EARLY_REFUSALS):
            return True
        err = err.__context__
    return False


def tampered(py, code, *fragments):
    """Run a cell that changes the shell: the change is put back and
    reported -- when the step leaves its run (once the engine calls
    shell_verify there) or by the verify the test makes now.  A cell that
    reaches the shell through gc is refused first (gc introspection is
    refused inside a run); the same change made by host code is then put
    back by verify, which is checked instead."""
    err = attempt(py, code)
    if gc_refused(err):
        exec(code, dict(py.g, gc=gc, sys=sys, types=types))
        err = None
    msg = put_back_message(err)
    if msg is None:
        with pytest.raises(PermissionError, match=SANDBOX) as info:
            _engine.shell_verify()
        msg = str(info.value)
    assert SANDBOX in msg
    for fragment in fragments:
        assert fragment in msg, msg
    _engine.shell_verify()  # clean now


def refused_with(py, code, fragment):
    """The cell is refused with `fragment` in the refusal (which verify,
    when the step leaves its run, may have wrapped)."""
    err = attempt(py, code)
    assert isinstance(err, PermissionError), err
    if gc_refused(err):
        return  # refused before it reached anything
    messages = []
    while err is not None:
        messages.append(str(err))
        err = err.__context__
    assert any(fragment in m for m in messages), messages


def still_refuses(env):
    """The policy still refuses a bad path, the engine a bad write, and a
    runner made by the host is as strict as asked."""
    py = RunPython(env.g, ok_dests=[str(env.ok)])
    with pytest.raises(PermissionError, match="is outside ok_dests"):
        run(py, "s.save(out)")
    with pytest.raises(PermissionError):
        run(py, "open(out, 'w').close()")
    assert run(py, "s.save(ok + '/in.txt')") == "saved"
    assert not env.outside.exists()
    assert RunPython(env.g).ok_dests == ()


# ---- 1. the runner behind RunPython cannot be swapped ------------------------------

def test_runpython_is_the_engine_runner(env):
    py = env.py
    assert isinstance(py, _engine.Runner)
    assert type(py) is RunPython and RunPython.__slots__ == ()
    assert not hasattr(py, "__dict__") and not hasattr(py, "_runner")
    assert py.g is env.g and py.ok_dests == (str(env.ok),)
    assert repr(py) == f"RunPython(ok_dests={(str(env.ok),)!r})"
    assert "Trusted tools" in py.__doc__
    cell = py("1")
    assert type(cell) is _engine.Cell  # python(code) is the C runner's
    cell.close()  # not awaited on purpose: closed, so it does not warn
    assert asyncio.run(py("6 * 7")) == 42


@pytest.mark.parametrize("code", [
    "python._runner = sys.modules['safepyrun._engine'].Runner({}, None)",
    "object.__setattr__(python, '_runner', None)",
    "python.ok_dests = None",
    "python.g = {}",
    "python.__dict__['_runner'] = None",
])
def test_cell_cannot_swap_or_change_the_runner(env, code):
    assert isinstance(attempt(env.py, code),
                      (AttributeError, TypeError, PermissionError))
    assert env.py.ok_dests == (str(env.ok),)
    with pytest.raises(PermissionError):
        run(env.py, "open(out, 'w').close()")
    assert not env.outside.exists()
    still_refuses(env)


@pytest.mark.parametrize("code", [
    "e.Runner({}, None, yolo=True)",
    "e.Runner.__new__(e.Runner, {}, None)",
    "type(python)({}, ok_dests=None)",
    "type(python).__new__(type(python), {}, ok_dests=None)",
    "class R(e.Runner):\n    pass\nR({}, None)",
    "sys.modules['safepyrun'].RunPython(yolo=True)",
])
def test_no_runner_is_created_inside_a_run(env, code):
    env.g["e"] = _engine
    with pytest.raises(PermissionError, match="create a runner"):
        run(env.py, code + "\n")
    still_refuses(env)


# ---- 2. the shell's classes are immutable --------------------------------------------

CLASS_ROUTES = [
    "RunPython._default_ok_dests = staticmethod(lambda: None)",
    "setattr(RunPython, '_default_ok_dests', lambda: None)",
    "type.__setattr__(RunPython, '__repr__', lambda self: 'x')",
    "del RunPython.__repr__",
    "RunPython.__bases__ = (object,)",
    "RunPython.__init_subclass__ = classmethod(lambda cls: None)",
    "PosAllowPolicy.__call__ = lambda *a: None",
    "AllowPolicy.__call__ = lambda *a: None",
    "type(sys.modules['safepyrun']).__setattr__ = object.__setattr__",
    "type(sys.modules['safepyrun'].UNSET).__repr__ = lambda s: 'x'",
    "type(vars(RunPython)['__doc__']).__get__ = lambda *a: 'forged'",
    "sys.modules['safepyrun._engine'].Runner.run = lambda *a: None",
]


@pytest.mark.parametrize("code", CLASS_ROUTES)
def test_class_attributes_cannot_be_changed(env, code):
    env.g.update(RunPython=RunPython, PosAllowPolicy=PosAllowPolicy,
                 AllowPolicy=AllowPolicy)
    before = dict(vars(RunPython))
    assert isinstance(attempt(env.py, code), (TypeError, PermissionError))
    assert dict(vars(RunPython)) == before
    _engine.shell_verify()  # nothing to put back
    still_refuses(env)


@pytest.mark.parametrize("code", [
    "python.__class__ = type('X', (e.Runner,), {'__slots__': ()})",
    "pol = PosAllowPolicy(0)\n"
    "pol.__class__ = type('P', (PosAllowPolicy,), {'__call__': lambda *a: 0})",
    "sys.modules['safepyrun'].UNSET.__class__ = type('U', (), {})",
    "vars(RunPython)['__doc__'].__class__ = type('D', (), {'__slots__': ()})",
])
def test_instances_cannot_change_class(env, code):
    env.g.update(e=_engine, RunPython=RunPython, PosAllowPolicy=PosAllowPolicy)
    assert isinstance(attempt(env.py, code), (TypeError, PermissionError))
    assert type(env.py) is RunPython
    assert type(safepyrun.UNSET).__name__ == "_Unset"
    still_refuses(env)


def test_class_dict_reached_through_gc_is_put_back(env):
    """gc.get_referents(vars(cls)) hands out the real class dict."""
    env.g["RunPython"] = RunPython
    tampered(env.py, "d = gc.get_referents(vars(RunPython))[0]\n"
                     "d['_default_ok_dests'] = staticmethod(lambda: None)\n"
                     "d['__repr__'] = lambda self: 'forged'", "RunPython")
    assert RunPython(env.g).ok_dests == ()
    assert repr(env.py).startswith("RunPython(ok_dests=")
    still_refuses(env)


def test_cell_subclasses_change_nothing_of_the_host(env):
    env.g.update(RunPython=RunPython, PosAllowPolicy=PosAllowPolicy)
    run(env.py, "class Loose(PosAllowPolicy):\n"
                "    def __init_subclass__(cls, **kw): pass\n"
                "    def __call__(self, *a): return None\n"
                "class Mine(RunPython):\n"
                "    __slots__ = ()\n"
                "    def __call__(self, code): return None\n"
                "r = repr(Loose(0))")
    assert env.g["r"] == "Loose(pos=0, kw=None)"
    assert RunPython.__call__ is _engine.Runner.__call__
    _engine.shell_verify()
    still_refuses(env)


# ---- 3. the built-in policies decide in C -------------------------------------------

@pytest.mark.parametrize("code", [
    "vars(sys.modules['safepyrun'])['chk_dest'] = lambda *a: None",
    "vars(sys.modules['safepyrun._engine'])['chk_dest'] = lambda *a: None",
    "gc.get_referents(vars(PosAllowPolicy))[0]['__call__'] = lambda *a: None",
    "gc.get_referents(vars(PosAllowPolicy))[0]['target'] = lambda *a: None",
])
def test_rebinding_what_policies_used_changes_no_decision(env, code):
    """The rebinding and the trusted call in one cell: the policy still
    refuses (no name it could look up takes part), then verify puts the
    name back."""
    env.g["PosAllowPolicy"] = PosAllowPolicy
    refused_with(env.py, code + "\ns.save(out)", "is outside ok_dests")
    assert not env.outside.exists()
    try:
        _engine.shell_verify()
    except PermissionError:
        pass
    _engine.shell_verify()
    still_refuses(env)


def test_policies_are_immutable_c_types(tmp_path):
    for cls in (AllowPolicy, PosAllowPolicy, PathWritePolicy, OpenWritePolicy,
                LocalWritePolicy):
        assert cls.__module__ == "safepyrun"
        with pytest.raises(TypeError):
            cls.extra = 1
    assert issubclass(LocalWritePolicy, PosAllowPolicy)
    assert safepyrun.presets.LocalWritePolicy is LocalWritePolicy
    p = PosAllowPolicy(pos=1, kw="path")
    assert (p.pos, p.kw) == (1, "path")
    for name, value in (("pos", 99), ("kw", None)):
        with pytest.raises(AttributeError):
            setattr(p, name, value)
    p.__init__(99, "other")  # a second __init__ changes nothing
    assert (p.pos, p.kw) == (1, "path")
    q = PathWritePolicy(target_kw="target")
    with pytest.raises(AttributeError):
        q.target_pos = 0
    assert repr(PosAllowPolicy()) == "PosAllowPolicy(pos=0, kw=None)"
    assert repr(q) == "PathWritePolicy(target_pos=None, target_kw='target')"
    assert repr(OpenWritePolicy()) == "OpenWritePolicy()"
    assert repr(LocalWritePolicy(0, "fname")) == \
        "LocalWritePolicy(pos=0, kw='fname')"
    assert p.target([1, 2], {"path": 3}) == 3 and p.target([1, 2], {}) == 2
    assert p.target([1], {}) is None
    for clone in (copy.copy(p), pickle.loads(pickle.dumps(p))):
        assert (type(clone), clone.pos, clone.kw) == (PosAllowPolicy, 1, "path")


def test_policy_messages_and_checks_as_before(tmp_path):
    data = {"ok_dests": (str(tmp_path),)}
    with pytest.raises(PermissionError) as info:
        PosAllowPolicy(0)(None, ["/etc/x"], {}, data)
    assert str(info.value) == (
        f"safepyrun refused to write a file: '/etc/x' is outside ok_dests "
        f"[{str(tmp_path)!r}] (write policy check). Remedy: only the host "
        "can allow this, by adding the directory to ok_dests (or trusting "
        "the function that writes with allow()); do not retry it another "
        "way.")
    with pytest.raises(PermissionError, match="is a URL, not a local path"):
        LocalWritePolicy(0)(None, [b"s3://bucket/x"], {}, data)
    LocalWritePolicy(0)(None, [io.BytesIO()], {}, data)
    LocalWritePolicy(0, "fname")(None, [], {"fname": str(tmp_path / "a")}, data)
    with pytest.raises(PermissionError):
        PathWritePolicy(target_pos=-1)(tmp_path / "a", ["/etc/b"], {}, data)
    with pytest.raises(PermissionError):
        OpenWritePolicy()(None, [], {"file": "/etc/x", "mode": "a"}, data)
    with pytest.raises(NotImplementedError):
        AllowPolicy()(None, [], {}, data)
    with pytest.raises(KeyError, match="ok_dests"):
        PosAllowPolicy(0)(None, ["/etc/x"], {}, {})
    # keyword call, as the Python versions allowed
    PosAllowPolicy(0)(obj=None, args=[str(tmp_path / "a")], kwargs={},
                      data=data)


def test_python_subclasses_of_the_policies(tmp_path):
    class Csv(PosAllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            if not str(self.target(args, kwargs)).endswith(".csv"):
                raise PermissionError("csv only")
            return super().__call__(obj, args, kwargs, data)

    class Tagged(AllowPolicy):
        def __init__(self, tag):
            self.tag = tag

        def __call__(self, obj, args, kwargs, data):
            return None

    data = {"ok_dests": (str(tmp_path),)}
    Csv(0)(None, [str(tmp_path / "a.csv")], {}, data)
    with pytest.raises(PermissionError, match="csv only"):
        Csv(0)(None, [str(tmp_path / "a.sh")], {}, data)
    with pytest.raises(PermissionError, match="is outside ok_dests"):
        Csv(0)(None, ["/etc/a.csv"], {}, data)
    assert repr(Tagged("x")) == "Tagged(tag='x')"
    assert isinstance(Tagged("x"), AllowPolicy)


# ---- 4. the registry's live policy objects stay with the host -----------------------

class HostPolicy(AllowPolicy):
    """A host-defined policy: a Python object with mutable fields."""

    def __init__(self):
        self.limit = ".csv"

    def __call__(self, obj, args, kwargs, data):
        if not str(args[0]).endswith(self.limit):
            raise PermissionError(f"only {self.limit} files")


class Report:
    def write(self, path):
        return Store().save(path)


def test_allow_entries_is_refused_inside_a_run(env):
    pol = HostPolicy()
    allow({Report: [("write", pol)]})
    env.g["rep"] = Report()
    env.g["e"] = _engine
    with pytest.raises(PermissionError, match="allow registry"):
        run(env.py, "[p for _, _, p in e.allow_entries()]")
    # the listing names policies by strings, never the objects
    listing = run(env.py, "e.allow_listing()")
    assert all(isinstance(label, str) for _, _, label in listing)
    assert not any(label is pol for _, _, label in listing)
    assert "HostPolicy(limit='.csv')" in [label for _, _, label in listing]
    assert pol.limit == ".csv"
    with pytest.raises(PermissionError, match="only .csv files"):
        run(env.py, "rep.write(ok + '/x.sh')")
    assert run(env.py, "rep.write(ok + '/x.csv')") == "saved"


def test_description_from_inside_a_run(env):
    allow({Store: [("save", HostPolicy())]})
    doc = run(env.py, "python.__doc__")
    assert "Store" in doc and "checked by HostPolicy(limit='.csv')" in doc
    assert str(env.ok) in doc
    assert doc == env.py.__doc__
    assert "Trusted tools" in run(env.py, "type(python).__doc__")


# ---- 5. policies get a read-only copy of the run's data ------------------------------

def test_data_view_is_a_read_only_copy(tmp_path):
    data = {"ok_dests": (str(tmp_path),), "user": "ann"}
    view = _engine.policy_data_view(data)
    assert isinstance(view, types.MappingProxyType)
    assert dict(view) == data
    with pytest.raises(TypeError):
        view["ok_dests"] = None
    data["ok_dests"] = None  # the view is a copy, not a window
    assert view["ok_dests"] == (str(tmp_path),)
    # no route from the view back to a mutable dict of the run
    assert not any(isinstance(r, dict) and r is data
                   for r in gc.get_referents(view))
    # the policies and chk_dest read ok_dests from the view
    chk_dest(str(tmp_path / "a"), view)
    with pytest.raises(PermissionError):
        chk_dest("/etc/x", view)
    with pytest.raises(PermissionError):
        PosAllowPolicy(0)(None, ["/etc/x"], {}, view)
    view2 = _engine.policy_data_view(types.MappingProxyType({"ok_dests": None}))
    chk_dest("/etc/x", view2)


def test_policy_cannot_change_the_runs_data(env):
    seen = []

    class Meddle(AllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            seen.append(type(data))
            data["ok_dests"] = None

    def tool():
        return "ok"
    allow(tool, allow_policy=Meddle())
    env.g["tool"] = tool
    with pytest.raises(TypeError):
        run(env.py, "tool()")
    assert seen == [types.MappingProxyType]


def test_pre_deny_info_data_is_read_only(env):
    infos = []

    def pre_deny(info):
        infos.append(info)
    py = RunPython(env.g, ok_dests=[str(env.ok)], pre_deny=pre_deny)
    env.g["infos"] = infos
    with pytest.raises(PermissionError):
        run(py, "open(out, 'w')")
    with pytest.raises(TypeError):
        run(py, "infos[0].data['ok_dests'] = None")


# ---- 6. names the host looks up later are pinned ------------------------------------

PKG = "vars(sys.modules['safepyrun'])"
REBINDS = {
    "RunPython": (f"{PKG}['RunPython'] = type('Fake', (), {{}})",
                  "safepyrun.RunPython"),
    "allow": (f"{PKG}['allow'] = lambda *a, **k: a[0]", "safepyrun.allow"),
    "engine": (f"{PKG}['_engine'] = None", "safepyrun._engine"),
    "helper": (f"{PKG}['_allow_spec'] = print", "safepyrun._allow_spec"),
    "chk_dest": (f"{PKG}['chk_dest'] = lambda *a: None", "safepyrun.chk_dest"),
    "shadow_builtin": (f"{PKG}['isinstance'] = lambda *a: True",
                       "safepyrun.isinstance"),
    "deleted": (f"del {PKG}['allow_imports']", "safepyrun.allow_imports"),
    "sys_modules": ("sys.modules['safepyrun'] = types.ModuleType('safepyrun')",
                    "sys.modules['safepyrun']"),
    "sys_modules_engine": ("del sys.modules['safepyrun._engine']",
                           "sys.modules['safepyrun._engine']"),
    "module_class": ("object.__setattr__(sys.modules['safepyrun'], "
                     "'__class__', types.ModuleType)", "the class of safepyrun"),
    "kwdefaults": ("sys.modules['safepyrun'].allow.__kwdefaults__"
                   "['allow_policy'] = print", "safepyrun.allow"),
    "defaults": ("f = sys.modules['safepyrun'].RunPython.__new__\n"
                 "f.__defaults__ = (None,) * len(f.__defaults__)",
                 "RunPython.__new__"),
    "closure": ("f = sys.modules['safepyrun'].RunPython.__new__\n"
                "f.__closure__[0].cell_contents = int", "RunPython.__new__"),
    "path": ("sys.modules['safepyrun'].__path__.insert(0, '/tmp/evil')",
             "safepyrun.__path__"),
    "all": ("sys.modules['safepyrun'].__all__.append('os')",
            "safepyrun.__all__"),
    "submodule": ("vars(sys.modules['safepyrun.describe'])['describe'] = "
                  "lambda *a, **k: 'forged'", "safepyrun.describe.describe"),
    "presets": ("vars(sys.modules['safepyrun.presets'])['PANDAS_WRITERS'] = "
                "{'to_sql': 'con'}", "safepyrun.presets.PANDAS_WRITERS"),
    "engine_dict": ("vars(sys.modules['safepyrun._engine'])['Runner'] = int",
                    "safepyrun._engine.Runner"),
}


@pytest.mark.parametrize("name", sorted(REBINDS))
def test_rebound_names_are_put_back(env, name):
    code, what = REBINDS[name]
    saved = dict(vars(safepyrun))
    allow_fn, new = safepyrun.allow, RunPython.__new__
    defaults = new.__defaults__
    tampered(env.py, code, what)
    assert sys.modules["safepyrun"] is safepyrun
    assert type(safepyrun).__name__ == "_SafepyrunModule"
    assert vars(safepyrun) == saved
    assert safepyrun.allow is allow_fn and safepyrun.RunPython is RunPython
    assert allow_fn.__kwdefaults__ == {"allow_policy": None}
    assert new.__defaults__ is defaults
    assert "/tmp/evil" not in safepyrun.__path__
    assert "os" not in safepyrun.__all__
    assert "forged" not in RunPython.__doc__
    still_refuses(env)


def test_module_attribute_set_by_a_cell_is_refused_and_by_the_host_kept(env):
    with pytest.raises(PermissionError, match=SANDBOX):
        run(env.py, "sys.modules['safepyrun'].RunPython = int")
    safepyrun.h3_host_flag = 1  # the host's own change is recorded
    try:
        _engine.shell_verify()
        assert safepyrun.h3_host_flag == 1
    finally:
        del safepyrun.h3_host_flag
    _engine.shell_verify()


def test_host_activity_leaves_the_snapshot_clean(env):
    import safepyrun.cli  # noqa: F401 - a submodule imported later
    RunPython(env.g)
    safepyrun.load_import_entry_points(force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safepyrun.presets._warn("h3 test warning")
    safepyrun.describe()
    run(env.py, "x = 1\nimport json\njson.dumps([x])")
    _engine.shell_verify()


@pytest.mark.parametrize("code", [
    "e.shell_snapshot()", "e.shell_refresh()",
    "e.shell_pin(sys.modules)", "e.shell_unpin(python)",
])
def test_the_snapshot_is_the_hosts(env, code):
    env.g["e"] = _engine
    with pytest.raises((PermissionError, TypeError)):
        run(env.py, code)


def test_a_snapshot_retaken_from_a_cell_cannot_launder_a_change(env):
    env.g["e"] = _engine
    tampered(env.py, f"{PKG}['allow'] = print\ne.shell_snapshot()",
             "safepyrun.allow")
    assert safepyrun.allow is not print


# ---- 7. IPython: the injected runner and the magic ----------------------------------

IPY = """
import json
from IPython.core.interactiveshell import InteractiveShell
from safepyrun import _engine
shell = InteractiveShell.instance()
def cell(src):
    r = shell.run_cell(src)
    err = r.error_before_exec or r.error_in_exec
    return type(err).__name__ if err else 'ok'
def verify():
    try:
        _engine.shell_verify()
        return 'clean'
    except PermissionError as e:
        return 'put back'
def show(x):
    print('@@' + json.dumps(x), flush=True)
cell('%load_ext safepyrun')
pyrun, allow = shell.user_ns['pyrun'], shell.user_ns['allow']
magic = shell.magics_manager.magics['cell']['py']
"""

IPY_ATTACKS = [
    "pyrun.__class__ = type('X', (type(pyrun).__mro__[1],), {'__slots__': ()})",
    "pyrun.__dict__['run'] = None",
    "pyrun._runner = None",
    "allow.__kwdefaults__['allow_policy'] = print",
    "m = get_ipython().magics_manager.magics['cell']['py']\n"
    "for c in m.__closure__:\n    c.cell_contents = None",
    "get_ipython().magics_manager.magics['cell']['py'] = print",
    "get_ipython().magics_manager.magics['line']['py'] = print",
]


def test_ipython_injected_names_and_magic(tmp_path):
    pytest.importorskip("IPython")
    target = tmp_path / "h3-ipy.txt"
    lines = [IPY]
    for code in IPY_ATTACKS:
        lines.append(f"show([cell({'%%py' + chr(10) + code!r}), verify()])")
    lines.append("show([type(pyrun).__name__, "
                 "shell.magics_manager.magics['cell']['py'] is magic, "
                 "shell.user_ns['pyrun'] is pyrun])")
    lines.append(f"show(cell(\"%%py\\nopen({str(target)!r}, 'w')\"))")
    lines.append("show(cell('%unload_ext safepyrun'))")
    lines.append("show(verify())")
    out = check_output("\n".join(lines), tmp_path)
    import json
    got = [json.loads(line[2:]) for line in out.splitlines()
           if line.startswith("@@")]
    results = got[:len(IPY_ATTACKS)]
    # refused outright (no instance dict, immutable class) ...
    assert results[0][0] == "TypeError" and results[0][1] == "clean"
    assert results[1][0] == "AttributeError" and results[1][1] == "clean"
    assert results[2][0] == "AttributeError" and results[2][1] == "clean"
    # ... or put back: as the step leaves the run (the cell then fails with
    # the refusal) or by the verify made after it
    for r in results[3:]:
        assert r[1] == "put back" or r == ["PermissionError", "clean"], results
    assert got[len(IPY_ATTACKS)] == ["RunPython", True, True]
    assert got[len(IPY_ATTACKS) + 1] == "PermissionError"
    assert got[-2:] == ["ok", "clean"]
    assert not target.exists()


# ---- 8. the public API's annotations resolve ----------------------------------------

def _public_callables():
    from safepyrun import config, describe as describe_mod, ipython, presets
    seen = []
    for mod in (safepyrun, presets, ipython, describe_mod, config):
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if isinstance(obj, types.FunctionType):
                seen.append((f"{mod.__name__}.{name}", obj))
            elif isinstance(obj, type) and obj.__module__.startswith("safepyrun"):
                for attr, value in vars(obj).items():
                    fn = getattr(value, "__func__", value)
                    if isinstance(fn, types.FunctionType):
                        seen.append((f"{name}.{attr}", fn))
    return seen


def test_type_hints_of_every_public_function_resolve():
    callables = _public_callables()
    names = [n for n, _ in callables]
    assert "safepyrun.allow" in names and "RunPython.__new__" in names
    for name, fn in callables:
        typing.get_type_hints(fn)  # raises NameError on an unknown name
    hints = typing.get_type_hints(safepyrun.allow)
    assert "allow_policy" in hints
    typing.get_type_hints(RunPython.__init__)
    typing.get_type_hints(safepyrun.find_var)


def test_signature_of_runpython_is_documented():
    import inspect
    params = inspect.signature(RunPython).parameters
    assert list(params)[:7] == ["g", "sentinel", "ok_dests", "ban_imports",
                                "ban_defs", "yolo", "pre_deny"]
    assert str(params["ok_dests"].default) == "UNSET"


def test_path_policy_on_real_paths(tmp_path):
    data = _engine.policy_data_view({"ok_dests": (str(tmp_path),)})
    PathWritePolicy(target_pos=0)(tmp_path / "a", [Path(tmp_path / "b")], {},
                                  data)
    with pytest.raises(PermissionError):
        PathWritePolicy(target_pos=0)(tmp_path / "a", [Path("/etc/b")], {},
                                      data)


@pytest.mark.parametrize("attr", ["pre_deny", "data"])
def test_runner_hands_no_host_hook_or_data_to_a_cell(env, attr):
    """The pre_deny hook (whose closure may decide what is allowed) and the
    policy data (whose values may be mutable) stay with the host."""
    hook_state = {"allow": False}

    def pre_deny(info):
        return hook_state["allow"]
    py = RunPython(env.g, ok_dests=[str(env.ok)], pre_deny=pre_deny,
                   allowed=["a"])
    env.g["runner"] = py
    with pytest.raises(PermissionError, match="runner's"):
        run(py, f"runner.{attr}")
    assert py.pre_deny is pre_deny and py.data["allowed"] == ["a"]
    with pytest.raises(PermissionError):
        run(py, "open(out, 'w')")
    assert not env.outside.exists()


@pytest.mark.parametrize("name", ["isinstance", "hasattr", "callable",
                                  "getattr"])
def test_builtins_the_shell_uses_are_put_back(env, name):
    """allow(), RunPython() and the other shell functions look builtins up
    when they run: a cell replacing one is put back.  (The stand-in behaves
    like the original, so the rest of the process keeps working until
    verify runs.)"""
    import builtins
    original = getattr(builtins, name)
    stand_in = f"(lambda f: lambda *a: f(*a))(builtins.{name})"
    try:
        tampered(env.py, f"import builtins\nbuiltins.{name} = {stand_in}",
                 f"builtins[{name!r}]")
        assert getattr(builtins, name) is original
        still_refuses(env)
    finally:
        setattr(builtins, name, original)


def test_host_attribute_set_cannot_launder_an_earlier_change(env):
    """A change made outside any step (as a cell's finalizer could) is
    verified before the host's next module attribute set retakes the
    snapshot: it is put back, not recorded."""
    saved = vars(safepyrun)["allow"]
    vars(safepyrun)["allow"] = print
    try:
        with pytest.raises(PermissionError, match="safepyrun.allow"):
            safepyrun.h3_flag = 1
        assert vars(safepyrun)["allow"] is saved
        assert safepyrun.h3_flag == 1  # the host's own change is kept
        _engine.shell_verify()
    finally:
        vars(safepyrun)["allow"] = saved
        del safepyrun.h3_flag
    _engine.shell_verify()


# ---- verify itself runs no code a cell wrote ---------------------------------------

FOREIGN_KEY = """
class K(str):
    def __hash__(self):
        hits.append('hash')
        return str.__hash__(self)
    def __eq__(self, other):
        hits.append('eq')
        return str.__eq__(self, other)
"""


@pytest.mark.parametrize("where, what", [
    ("vars(sys.modules['safepyrun'])", "safepyrun.zzz_k"),
    ("vars(sys.modules['safepyrun'].RunPython)", "safepyrun.RunPython.zzz_k"),
    ("sys.modules", "sys.modules['zzz_k']"),
])
def test_a_key_with_its_own_hash_is_removed_without_calling_it(env, where,
                                                                what):
    hits = env.g["hits"] = []
    target = where if "RunPython" not in where else \
        "gc.get_referents(vars(sys.modules['safepyrun'].RunPython))[0]"
    tampered(env.py, FOREIGN_KEY + f"{target}[K('zzz_k')] = 1\n"
                                   f"{target}['allow'] = print", what)
    assert hits == ["hash"]  # the cell's own insertion; verify called no K
    assert "zzz_k" not in vars(safepyrun) and "zzz_k" not in sys.modules
    assert "zzz_k" not in vars(RunPython)
    assert safepyrun.allow is not print
    still_refuses(env)


def test_module_class_is_put_back_past_its_own_setattr(env):
    """The replaced module class's __setattr__ and a __class__ property of
    its own are a cell's code: the class is put back without them."""
    tampered(env.py, "class M(types.ModuleType):\n"
                     "    def __setattr__(self, n, v): pass\n"
                     "    __class__ = property(lambda s: M, lambda s, v: None)\n"
                     "object.__setattr__(sys.modules['safepyrun'], '__class__',"
                     " M)", "the class of safepyrun")
    assert type(safepyrun).__name__ == "_SafepyrunModule"
    still_refuses(env)


def test_a_finalizer_that_tampers_again_is_met_by_another_pass(env):
    """A chain of finalizers, each re-tampering and planting the next: no
    finalizer runs between verify's last check and its return."""
    env.g["chain"] = chain = [True]
    attempt(env.py, "class D:\n"
                "    def __del__(self):\n"
                "        if chain[0]:\n"
                "            vars(sys.modules['safepyrun'])['allow'] = print\n"
                "            vars(sys.modules['safepyrun'])['again'] = D()\n"
                "vars(sys.modules['safepyrun'])['zzz_d'] = D()")
    for _ in range(3):
        with pytest.raises(PermissionError, match=SANDBOX):
            _engine.shell_verify()  # the quarantined D tampers again
        assert safepyrun.allow is not print
        assert "again" not in vars(safepyrun)
    chain[0] = False  # the quarantined D goes quietly at the next verify
    _engine.shell_verify()


def test_one_finalizer_is_undone_before_verify_returns(env):
    tampered(env.py, "class D:\n"
                     "    def __del__(self):\n"
                     "        vars(sys.modules['safepyrun'])['allow'] = print\n"
                     "vars(sys.modules['safepyrun'])['zzz_d'] = D()",
             "safepyrun.zzz_d")
    assert safepyrun.allow is not print  # the second pass put it back


def test_no_reference_leaks_in_policies_and_verify(tmp_path):
    data = {"ok_dests": (str(tmp_path),)}
    args, kwargs = [str(tmp_path / "a"), "w"], {"path": str(tmp_path / "b")}
    pols = [PosAllowPolicy(0, "path"), LocalWritePolicy(0),
            PathWritePolicy(0, "path"), OpenWritePolicy()]
    view = _engine.policy_data_view(data)
    watched = [data, args, kwargs, view, tmp_path] + pols
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(300):
        for p in pols:
            p(tmp_path / "x", args, kwargs, data)
            p(tmp_path / "x", args, kwargs, view)
            repr(p)
            with pytest.raises(PermissionError):
                p(Path("/etc/x"), ["/etc/x", "w"], {"path": "/etc/x"}, view)
        _engine.policy_data_view(data)
    del p  # the loop variable holds the last policy
    assert [sys.getrefcount(o) for o in watched] == before
    allow_fn = safepyrun.allow
    refs = sys.getrefcount(allow_fn)
    for _ in range(50):
        vars(safepyrun)["allow"] = print
        with pytest.raises(PermissionError):
            _engine.shell_verify()
        _engine.shell_verify()
    assert sys.getrefcount(allow_fn) == refs


class Boom(Exception):
    pass


class BadPath:
    def __fspath__(self):
        raise Boom("fspath")


class BadKey:
    def __hash__(self):
        raise Boom("hash")

    def __repr__(self):
        raise Boom("repr")


class BadMapping:
    """A mapping (not a sequence) whose lookup raises."""

    def __getitem__(self, key):
        raise Boom("getitem")

    def keys(self):
        return []


def test_policies_with_hostile_inputs(tmp_path):
    data = {"ok_dests": (str(tmp_path),)}
    with pytest.raises(Boom):
        PosAllowPolicy(0)(None, [BadPath()], {}, data)
    with pytest.raises(Boom):
        PathWritePolicy()(BadPath(), [], {}, data)
    with pytest.raises(Boom):
        PosAllowPolicy(0, BadKey())(None, ["/etc/x"], {"a": 1}, data)
    with pytest.raises(Boom):
        repr(PosAllowPolicy(0, BadKey()))
    with pytest.raises((Boom, TypeError)):
        chk_dest("/etc/x", BadMapping())
    with pytest.raises(TypeError):
        PosAllowPolicy(0)(None, [str(tmp_path / "a")], {})  # 3 arguments
    with pytest.raises(TypeError):
        PosAllowPolicy("0")
    with pytest.raises(TypeError):
        PathWritePolicy(target_pos="x")
    # str subclass paths and bytes work as paths
    PosAllowPolicy(0)(None, [type("S", (str,), {})(str(tmp_path / "a"))], {},
                      data)
    PosAllowPolicy(0)(None, [str(tmp_path / "a").encode()], {}, data)
