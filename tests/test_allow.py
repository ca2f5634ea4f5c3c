"""allow(): every registration form, and the trusted-call search as
DESIGN.md describes it (issue 3, items 1, 2 and 4)."""
import asyncio
import gc
import os
import subprocess
import sys
import types

import pytest

import safepyrun
from safepyrun import (AllowPolicy, RunPython, allow, disallow, set_data,
                       track_call, _engine)

from conftest import host_ns, refused, run
from trust_helpers import clean_registry, run_python  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")


def echo_hi():
    return subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout


def run_true():
    return subprocess.run(["true"]).returncode


def make_touch(marker):
    def touch_marker():
        return subprocess.run(["touch", str(marker)]).returncode
    return touch_marker


# ---- the seed's example ------------------------------------------------------

def test_seed_trusted_echo(g):
    def trusted_echo():
        return subprocess.run(["echo", "hi"], capture_output=True, text=True)
    g["trusted_echo"] = trusted_echo
    py = RunPython(g, ok_dests=[])
    refused(py, "trusted_echo().stdout", "subprocess.Popen", "echo")
    refused(py, "import subprocess; subprocess.run(['echo', 'hi'])",
            "subprocess.Popen")
    assert allow(trusted_echo) is trusted_echo
    assert run(py, "trusted_echo().stdout") == "hi\n"
    refused(py, "import subprocess; subprocess.run(['echo', 'hi'])",
            "subprocess.Popen")


def test_trusted_call_does_not_leak_to_cell_code_after_it(g):
    allow(echo_hi)
    g["echo_hi"] = echo_hi
    py = RunPython(g, ok_dests=[])
    refused(py, "import subprocess\nx = echo_hi()\nsubprocess.run(['true'])",
            "subprocess.Popen")


# ---- registration forms ------------------------------------------------------

class Tool:
    def echo(self):
        return subprocess.run(["echo", "tool"], capture_output=True,
                              text=True).stdout

    def other(self):
        return run_true()

    @staticmethod
    def static_echo():
        return echo_hi()

    @classmethod
    def class_true(cls):
        return run_true()


class SubTool(Tool):
    pass


def test_method_via_class_any_instance_and_subclass(g):
    g.update(Tool=Tool, SubTool=SubTool)
    py = RunPython(g, ok_dests=[])
    refused(py, "Tool().echo()", "subprocess.Popen")
    allow(Tool.echo)
    assert run(py, "Tool().echo()") == "tool\n"
    assert run(py, "SubTool().echo()") == "tool\n"
    refused(py, "Tool().other()", "subprocess.Popen")


def test_dict_form_names_static_and_class_methods(g):
    g.update(Tool=Tool)
    py = RunPython(g, ok_dests=[])
    refused(py, "Tool.static_echo()", "subprocess.Popen")
    allow({Tool: ["static_echo", "class_true"]})
    assert run(py, "Tool.static_echo()") == "hi\n"
    assert run(py, "Tool.class_true()") == 0
    refused(py, "Tool().other()", "subprocess.Popen")


def test_dict_form_single_name_and_module_owner(g):
    mod = types.ModuleType("h3_tools_mod")
    mod.run_true = run_true
    mod.echo_hi = echo_hi
    g["tools"] = mod
    py = RunPython(g, ok_dests=[])
    refused(py, "tools.run_true()", "subprocess.Popen")
    allow({mod: "run_true"})
    assert run(py, "tools.run_true()") == 0
    refused(py, "tools.echo_hi()", "subprocess.Popen")


def test_full_trust_of_a_class(g):
    class Box:
        def a(self):
            return run_true()

        def b(self):
            return echo_hi()
    g["Box"] = Box
    py = RunPython(g, ok_dests=[])
    refused(py, "Box().a()", "subprocess.Popen")
    allow({Box: ...})
    assert run(py, "Box().a(), Box().b()") == (0, "hi\n")


def test_class_item_is_full_trust(g):
    class Box2:
        def a(self):
            return run_true()
    g["Box2"] = Box2
    allow(Box2)
    assert run(RunPython(g, ok_dests=[]), "Box2().a()") == 0


def test_method_added_after_class_definition(g):
    class Late:
        pass

    def added(self):
        return run_true()
    Late.added = added
    g["Late"] = Late
    py = RunPython(g, ok_dests=[])
    refused(py, "Late().added()", "subprocess.Popen")
    allow(Late.added)
    assert run(py, "Late().added()") == 0


def test_instance_keyed_callables_are_trusted_separately(g):
    class Op:
        def __init__(self, name):
            self.name = name

        def __call__(self):
            return subprocess.run(["echo", self.name], capture_output=True,
                                   text=True).stdout

        def again(self):
            return self()
    op1, op2 = Op("one"), Op("two")
    g.update(op1=op1, op2=op2)
    py = RunPython(g, ok_dests=[])
    allow(op1)
    assert run(py, "op1()") == "one\n"
    refused(py, "op2()", "subprocess.Popen", "two")


def test_bound_method_is_trusted_on_that_instance_only(g):
    t1, t2 = Tool(), Tool()
    g.update(t1=t1, t2=t2)
    py = RunPython(g, ok_dests=[])
    allow(t1.echo)
    assert run(py, "t1.echo()") == "tool\n"
    refused(py, "t2.echo()", "subprocess.Popen")


def test_several_items_in_one_call(g):
    def a():
        return run_true()

    def b():
        return echo_hi()
    g.update(a=a, b=b)
    allow(a, b)
    assert run(RunPython(g, ok_dests=[]), "a(), b()") == (0, "hi\n")


def test_decorator_forms(g):
    seen = []

    class Record(AllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            seen.append(tuple(args))

    @allow
    def plain():
        return run_true()

    @allow(allow_policy=Record())
    def checked(x):
        return run_true() + x

    assert callable(plain) and plain.__name__ == "plain"
    g.update(plain=plain, checked=checked)
    py = RunPython(g, ok_dests=[])
    assert run(py, "plain(), checked(5)") == (0, 5)
    assert (5,) in seen


def test_native_callable_is_trusted(g, tmp_path, touch):
    marker = tmp_path / "native-ran"
    g.update(cmd=f"{touch} {marker}")
    py = RunPython(g, ok_dests=[])
    refused(py, "os.system(cmd)", "os.system")
    assert not marker.exists()
    allow(os.system)
    try:
        assert run(py, "os.system(cmd)") == 0
    finally:
        disallow(os.system)
    assert marker.exists()
    refused(py, "os.system('true')", "os.system")


def test_inherited_native_method_is_trusted_on_subclass_instances(g):
    """A method descriptor registered under its __objclass__ trusts the
    bound method on an instance of a subclass (socket.socket inherits
    connect from _socket.socket), with a loopback listener as the peer."""
    import _socket
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    g.update(sock=socket.socket(), addr=listener.getsockname())
    try:
        py = RunPython(g, ok_dests=[])
        refused(py, "sock.connect(addr)", "socket.connect")
        allow({_socket.socket: ["connect"]})
        try:
            assert run(py, "sock.connect(addr)\nsock.getpeername()[0]") == "127.0.0.1"
        finally:
            disallow(_socket.socket, "connect")
    finally:
        g["sock"].close()
        listener.close()


def test_registrations_survive_del_of_host_names(g):
    def make():
        def ephemeral():
            return run_true()
        return ephemeral
    fn = make()
    allow(fn)
    g["tool"] = fn
    del fn
    gc.collect()
    assert run(RunPython(g, ok_dests=[]), "tool()") == 0


def test_registrations_survive_del_of_the_class(g):
    class Gone:
        def go(self):
            return run_true()
    allow({Gone: ["go"]})
    inst = Gone()
    del Gone
    gc.collect()
    g["inst"] = inst
    assert run(RunPython(g, ok_dests=[]), "inst.go()") == 0


def test_unhashable_owners(g):
    class Unhashable:
        __hash__ = None

        def __eq__(self, other):
            return True

        def __call__(self):
            return run_true()

        def meth(self):
            return echo_hi()
    u1, u2 = Unhashable(), Unhashable()
    with pytest.raises(TypeError):
        hash(u1)
    g.update(u1=u1, u2=u2)
    py = RunPython(g, ok_dests=[])
    allow(u1)
    allow(u1.meth)
    assert run(py, "u1(), u1.meth()") == (0, "hi\n")
    # equal but distinct: identity, not equality, decides
    refused(py, "u2()", "subprocess.Popen")
    refused(py, "u2.meth()", "subprocess.Popen")
    disallow(u1)
    refused(py, "u1()", "subprocess.Popen")


def test_unhashable_class_owner(g):
    class Meta(type):
        __hash__ = None

        def __eq__(cls, other):
            return cls is other

    class Weird(metaclass=Meta):
        def run(self):
            return run_true()
    allow({Weird.__mro__[0].__dict__["run"].__class__: []}) if False else None
    allow(Weird.run)
    g["Weird"] = Weird
    assert run(RunPython(g, ok_dests=[]), "Weird().run()") == 0


def test_prefix_key_trusts_a_package(g, tmp_path, monkeypatch):
    name = f"h3pkg_{os.getpid()}_{id(tmp_path) % 100000}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text(
        "import subprocess\n"
        "def go():\n    return subprocess.run(['true']).returncode\n")
    other = tmp_path / f"{name}x"
    other.mkdir()
    (other / "__init__.py").write_text(
        "import subprocess\n"
        "def go():\n    return subprocess.run(['true']).returncode\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    sub = importlib.import_module(f"{name}.sub")
    lookalike = importlib.import_module(f"{name}x")
    g.update(sub=sub, lookalike=lookalike)
    py = RunPython(g, ok_dests=[])
    refused(py, "sub.go()", "subprocess.Popen")
    allow({f"{name}.*": ...})
    assert run(py, "sub.go()") == 0
    # 'pkg.*' is the package and its submodules, not a name prefix
    refused(py, "lookalike.go()", "subprocess.Popen")


def test_bad_registrations_raise_type_error():
    with pytest.raises(TypeError):
        allow(42)
    with pytest.raises(TypeError):
        allow({"notaprefix": ...})
    with pytest.raises(TypeError):
        allow({Tool: [3]})
    with pytest.raises(TypeError):
        allow({Tool: [("echo", "not callable")]})
    with pytest.raises(AttributeError):
        allow({Tool: ["missing"]})


# ---- the shape of trust ---------------------------------------------------------

def test_trusted_call_nested_under_untrusted_cell_frames(g):
    allow(echo_hi)
    g["echo_hi"] = echo_hi
    py = RunPython(g, ok_dests=[])
    code = """
def outer():
    return middle()
def middle():
    return [echo_hi() for _ in range(1)][0]
class K:
    def m(self):
        return outer()
K().m()
"""
    assert run(py, code) == "hi\n"


def test_trusted_async_tool_awaits_before_its_effect(g):
    async def atool(n):
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        return subprocess.run(["echo", str(n)], capture_output=True,
                              text=True).stdout
    g["atool"] = atool
    py = RunPython(g, ok_dests=[])
    refused(py, "await atool(1)", "subprocess.Popen")
    allow(atool)
    assert run(py, "await atool(1)") == "1\n"
    assert run(py, "import asyncio\nawait asyncio.gather(atool(2), atool(3))") \
        == ["2\n", "3\n"]


def test_trusted_function_calling_untrusted_host_code(g):
    def helper():  # not registered: host code called by a trusted tool
        return run_true()

    def tool():
        return helper()
    allow(tool)
    g.update(tool=tool, helper=helper)
    py = RunPython(g, ok_dests=[])
    assert run(py, "tool()") == 0
    refused(py, "helper()", "subprocess.Popen")


def test_cell_callback_inside_trusted_function_is_refused(g, tmp_path, touch):
    marker = tmp_path / "callback-ran"

    def apply(cb):
        return cb()
    allow(apply)
    g.update(apply=apply, touch=touch, marker=str(marker))
    py = RunPython(g, ok_dests=[])
    refused(py, "import subprocess\n"
                "def cb():\n    return subprocess.run([touch, marker])\n"
                "apply(cb)", "subprocess.Popen")
    refused(py, "import subprocess\napply(lambda: subprocess.run([touch, marker]))",
            "subprocess.Popen")
    assert not marker.exists()
    # the host's own callback through the same trusted function is fine
    g["host_cb"] = make_touch(marker)
    assert run(py, "apply(host_cb)") == 0
    assert marker.exists()


def test_cell_function_run_later_by_a_trusted_tool_stays_gated(g, tmp_path,
                                                               touch):
    marker = tmp_path / "later"
    saved = []

    def register(cb):
        saved.append(cb)
    allow(register)
    g.update(register=register, touch=touch, marker=str(marker))
    py = RunPython(g, ok_dests=[])
    run(py, "import subprocess\nregister(lambda: subprocess.run([touch, marker]))")
    assert saved
    with pytest.raises(PermissionError):
        saved[0]()
    assert not marker.exists()


# ---- additive policies ------------------------------------------------------------

class Named(AllowPolicy):
    def __init__(self, suffix):
        self.suffix = suffix

    def __call__(self, obj, args, kwargs, data):
        if not str(args[0]).endswith(self.suffix):
            raise PermissionError(f"{args[0]!r} does not end with {self.suffix}")


class Writer:
    def write(self, path, text="x"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return path


def test_two_additive_policies_and_combined_message(g, tmp_path):
    allow({Writer: [("write", Named(".csv")), ("write", Named(".json"))]})
    g.update(w=Writer(), d=str(tmp_path))
    py = RunPython(g, ok_dests=[])  # the policies, not ok_dests, decide
    run(py, "w.write(d + '/a.csv')")
    run(py, "w.write(d + '/a.json')")
    with pytest.raises(PermissionError) as info:
        run(py, "w.write(d + '/a.sh')")
    msg = str(info.value)
    assert "does not end with .csv" in msg and "does not end with .json" in msg
    assert (tmp_path / "a.csv").exists() and (tmp_path / "a.json").exists()
    assert not (tmp_path / "a.sh").exists()


def test_policy_narrows_a_write_inside_ok_dests(g, tmp_path):
    allow({Writer: [("write", Named(".csv"))]})
    g.update(w=Writer(), d=str(tmp_path))
    py = RunPython(g, ok_dests=[str(tmp_path)])
    with pytest.raises(PermissionError, match="does not end with .csv"):
        run(py, "w.write(d + '/x.sh')")
    assert not (tmp_path / "x.sh").exists()
    # the same write straight from the cell is allowed by ok_dests
    run(py, "open(d + '/y.sh', 'w').write('ok')")
    assert (tmp_path / "y.sh").exists()


def test_named_policy_takes_precedence_over_blanket_owner(g, tmp_path):
    allow({Writer: ...})
    allow({Writer: [("write", Named(".csv"))]})
    g.update(w=Writer(), d=str(tmp_path))
    py = RunPython(g, ok_dests=[])
    run(py, "w.write(d + '/ok.csv')")
    with pytest.raises(PermissionError):
        run(py, "w.write(d + '/no.txt')")
    assert not (tmp_path / "no.txt").exists()


def test_policy_gets_real_arguments_self_removed_and_star_args(g):
    seen = []

    class Spy(AllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            seen.append((obj, list(args), dict(kwargs)))

    class Svc:
        def go(self, a, *rest, flag=False, **extra):
            return run_true()
    svc = Svc()
    allow({Svc: [("go", Spy())]})
    g["svc"] = svc
    assert run(RunPython(g, ok_dests=[]), "svc.go(1, 2, 3, flag=True, z=4)") == 0
    obj, args, kwargs = seen[-1]
    assert obj is svc
    assert args == [1, 2, 3]
    assert kwargs == {"flag": True, "z": 4}


def test_policy_returning_false_refuses(g):
    def tool():
        return run_true()
    allow({types.ModuleType("m"): []}) if False else None
    allow(tool, allow_policy=lambda obj, args, kwargs, data: False)
    g["tool"] = tool
    refused_call = None
    with pytest.raises(PermissionError) as info:
        run(RunPython(g, ok_dests=[]), "tool()")
    refused_call = str(info.value)
    assert "refused" in refused_call


def test_policy_outside_runs_is_not_consulted(tmp_path):
    allow({Writer: [("write", Named(".csv"))]})
    Writer().write(str(tmp_path / "plain.txt"))
    assert (tmp_path / "plain.txt").exists()


# ---- data, set_data, pre_deny, track_call -------------------------------------------

def test_set_data_and_runner_data_reach_policies(g):
    seen = {}

    class Look(AllowPolicy):
        def __call__(self, obj, args, kwargs, data):
            seen.update(data)

    def tool():
        return run_true()
    allow(tool, allow_policy=Look())
    set_data(h3_team="blue")
    g["tool"] = tool
    py = RunPython(g, ok_dests=["/tmp"], h3_user="ann")
    assert run(py, "tool()") == 0
    assert seen["h3_team"] == "blue"
    assert seen["h3_user"] == "ann"
    assert "/tmp" in [str(d) for d in seen["ok_dests"]]
    assert _engine.get_data()["h3_team"] == "blue"


def test_pre_deny_true_false_none(g):
    infos = []

    def decide(verdict):
        def pre_deny(info):
            infos.append(info)
            return verdict
        return pre_deny

    def tool(n, *, label=None):
        return run_true()
    g["tool"] = tool
    code = "def wrapper():\n    return tool(7, label='x')\nwrapper()"
    assert run(RunPython(g, ok_dests=[], pre_deny=decide(True),
                         h3_k=1), code) == 0
    # subprocess.Popen, then the guard's _posixsubprocess.fork_exec
    info = next(i for i in infos if i.event == "subprocess.Popen")
    assert infos[-1].event == "_posixsubprocess.fork_exec"
    assert info.data["h3_k"] == 1 and "ok_dests" in info.data
    qualnames = [c.qualname for c in info.calls]
    assert qualnames[-1] == "wrapper"
    call = next(c for c in info.calls if c.qualname.endswith(".tool"))
    assert call.module == __name__ and call.source == "frame"
    assert call.name == f"{__name__}.{call.qualname}"
    assert info.find(call.qualname) is call and info.find(call.name) is call
    assert call.args == [7] and call.kwargs == {"label": "x"}
    # the event's own arguments are info.raw.args; info.args/kwargs are
    # the first call's (the published implementation's shape)
    assert isinstance(info.raw.args, tuple)
    assert info.call is info.calls[0]
    assert info.args == info.call.args and info.kwargs == info.call.kwargs
    refused(RunPython(g, ok_dests=[], pre_deny=decide(False)), code,
            "subprocess.Popen")
    refused(RunPython(g, ok_dests=[], pre_deny=decide(None)), code,
            "subprocess.Popen")
    # None falls through to the registry
    allow(tool)
    assert run(RunPython(g, ok_dests=[], pre_deny=decide(None)), code) == 0


def test_track_call_effect_in_spawned_task(g):
    async def spawner():
        async def effect():
            await asyncio.sleep(0)
            return subprocess.run(["echo", "task"], capture_output=True,
                                  text=True).stdout
        task = asyncio.get_running_loop().create_task(effect())
        await asyncio.sleep(0)
        return await task
    tracked = track_call(allow(spawner))
    g["spawner"] = tracked
    assert tracked.__wrapped__ is spawner
    assert tracked.__name__ == "spawner"
    py = RunPython(g, ok_dests=[])
    assert run(py, "await spawner()") == "task\n"
    g["untracked"] = spawner
    refused(py, "await untracked()", "subprocess.Popen")


def test_track_call_without_allow_grants_nothing(g):
    async def spawner():
        async def effect():
            return run_true()
        return await asyncio.get_running_loop().create_task(effect())
    g["spawner"] = track_call(spawner)
    refused(RunPython(g, ok_dests=[]), "await spawner()", "subprocess.Popen")


def test_allow_accepts_a_tracked_tool(g):
    """allow(track_call(fn)) should register fn (the order of the two
    wrappers should not matter)."""
    async def spawner():
        return await asyncio.get_running_loop().create_task(_true_async())
    tracked = track_call(spawner)
    allow(tracked)
    g["spawner"] = tracked
    assert run(RunPython(g, ok_dests=[]), "await spawner()") == 0


async def _true_async():
    return run_true()


def test_disallow_removes_trust(g):
    allow(echo_hi)
    g["echo_hi"] = echo_hi
    py = RunPython(g, ok_dests=[])
    assert run(py, "echo_hi()") == "hi\n"
    disallow(echo_hi)
    refused(py, "echo_hi()", "subprocess.Popen")
    with pytest.raises(KeyError):
        disallow(echo_hi)


def test_trusted_builtin_open_write(tmp_path):
    """A trusted function whose effect is the builtin open() for writing.
    Run in a subprocess: a double decref in the engine's write check once
    crashed the interpreter here."""
    proc = run_python(f"""
        import asyncio, pathlib
        from safepyrun import RunPython, allow, AllowPolicy
        class Only(AllowPolicy):
            def __call__(self, obj, args, kwargs, data):
                if not str(args[0]).endswith('.csv'):
                    raise PermissionError('only csv')
        class W:
            def write(self, path):
                with open(path, 'w') as f:
                    f.write('x')
        def save(path):
            pathlib.Path(path).write_text('y')
        allow(save)
        allow({{W: [('write', Only())]}})
        py = RunPython({{'w': W(), 'save': save}}, ok_dests=[])
        d = {str(tmp_path)!r}
        asyncio.run(py(f"save({{d!r}} + '/a.txt')"))
        asyncio.run(py(f"w.write({{d!r}} + '/b.csv')"))
        try:
            asyncio.run(py(f"w.write({{d!r}} + '/c.sh')"))
        except PermissionError as e:
            print('refused:', e)
        print('done')
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused:" in proc.stdout and "only csv" in proc.stdout
    assert (tmp_path / "a.txt").read_text() == "y"
    assert (tmp_path / "b.csv").read_text() == "x"
    assert not (tmp_path / "c.sh").exists()


def test_trusted_write_outside_ok_dests_does_not_crash(tmp_path):
    """Many trusted writes outside ok_dests, in a fresh interpreter with the
    system allocator (the double free in hook_judge_write shows there)."""
    proc = run_python(f"""
        import asyncio, os
        from safepyrun import RunPython, allow
        def mk(p):
            for i in range(200):
                os.close(os.open(p + str(i), os.O_WRONLY | os.O_CREAT, 0o644))
        allow(mk)
        asyncio.run(RunPython({{'mk': mk}}, ok_dests=[])(
            "mk(" + repr({str(tmp_path)!r} + '/f') + ")"))
        print('ok')
        """, tmp_path, env={"PYTHONMALLOC": "malloc"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    assert (tmp_path / "f199").exists()
