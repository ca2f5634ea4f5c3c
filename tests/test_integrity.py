"""Integrity (issue 7): one gate that cell code cannot switch off, fool or
reach.  Each test attacks the engine from a cell as a determined user would
and asserts that the harmful effect did not happen: no file, no process,
policy unchanged, the gate still refusing afterwards.  Attacks that could
crash the interpreter run in a child process."""
import asyncio
import contextvars
import os
import subprocess
import sys
import types

import pytest

import safepyrun
from safepyrun import RunPython, _engine, allow, track_call

from conftest import host_ns, run
from trust_helpers import clean_registry, run_python  # noqa: F401

pytestmark = pytest.mark.usefixtures("clean_registry")

PY312 = sys.version_info >= (3, 12)


def apply_tool(fn, *args):
    """A trusted host tool that calls what it is given."""
    return fn(*args)


def touch_cmd(path):
    return f"touch {path}"


@pytest.fixture
def tool_g(marker):
    allow(apply_tool)
    return host_ns(apply_tool=apply_tool, marker=str(marker),
                   safepyrun=safepyrun, contextvars=contextvars)


def assert_refused(py, code):
    with pytest.raises(PermissionError) as info:
        run(py, code)
    return str(info.value)


def gate_still_refuses(g, marker):
    py = RunPython(g)
    assert_refused(py, f"import os; os.system({touch_cmd(marker)!r})")
    assert_refused(py, f"open({str(marker)!r}, 'w')")
    assert not marker.exists()


# ---- 1. export must not borrow across code that can mutate -------------


def test_export_survives_a_key_that_empties_the_namespace(tmp_path):
    """A str-subclass key whose __eq__ clears the cell's namespace while the
    export compares it with the host's: no use-after-free (the child
    process would crash), the host namespace stays consistent."""
    proc = run_python("""
        import asyncio
        from safepyrun import RunPython
        g = {'zz': 1}
        py = RunPython(g)
        cell = '''
        class K(str):
            def __hash__(self):
                return str.__hash__(self)
            def __eq__(self, other):
                globals().clear()
                return False
        globals()[K('zz')] = object()
        big = [object() for _ in range(1000)]
        '''
        for _ in range(20):
            try:
                asyncio.run(py(cell))
            except Exception as e:
                pass
        print('ALIVE', sorted(k for k in g if isinstance(k, str))[:3])
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ALIVE" in proc.stdout


# ---- 2. the calls context variable: forged values count for nothing ------


@track_call
async def grab_tool(cb):
    """A tracked async tool that calls back into the cell."""
    cb()
    await asyncio.sleep(0)


def plain_trusted():
    return 1


CALLS_FORGE = """
import asyncio, os
box = []
def grab():
    box.extend(k for k in contextvars.copy_context()
               if k.name == 'safepyrun.calls')
await grab_tool(grab)
var = box[0]
var.set({value})
loop = asyncio.get_running_loop()
loop.call_soon(os.system, {cmd!r})
await asyncio.sleep(0.1)
'found'
"""


@pytest.mark.parametrize("value", ["(12345,)", "((plain_trusted, (), {}),)",
                                   "'junk'", "(None, (1, 2, 3))"])
def test_forged_call_records_do_not_crash_or_trust(value, tool_g, marker):
    allow(grab_tool)
    allow(plain_trusted)
    tool_g.update(grab_tool=grab_tool, plain_trusted=plain_trusted)
    py = RunPython(tool_g)
    assert run(py, CALLS_FORGE.format(value=value,
                                      cmd=touch_cmd(marker))) == "found"
    assert not marker.exists()
    gate_still_refuses(tool_g, marker)


async def host_worker(path):
    await asyncio.sleep(0.02)
    os.system(touch_cmd(path))


@track_call
async def spawn_and_return(path):
    """Starts work and returns at once: the work outlives the call."""
    asyncio.get_running_loop().create_task(host_worker(path))


@track_call
async def spawn_and_wait(path):
    await asyncio.get_running_loop().create_task(host_worker(path))


def test_tracked_trust_ends_with_the_call(tool_g, marker):
    allow(spawn_and_return)
    allow(spawn_and_wait)
    tool_g.update(spawn_and_return=spawn_and_return,
                  spawn_and_wait=spawn_and_wait)
    py = RunPython(tool_g)
    try:  # the worker's refusal may surface in the cell or in the loop
        run(py, "await spawn_and_return(marker)\n"
                "import asyncio\nawait asyncio.sleep(0.1)")
    except PermissionError as e:
        assert "os.system" in str(e)
    assert not marker.exists()
    # While the tool's call is in progress its work is trusted.
    run(py, "await spawn_and_wait(marker)")
    assert marker.exists()


# ---- 5. one gate: fresh or reset contexts open nothing --------------------


FRESH_CONTEXT_CELLS = {
    "allow": "contextvars.Context().run(safepyrun.allow, {'subprocess.*': ...})",
    "allow_fn": "import os\ncontextvars.Context().run(safepyrun.allow, os.system)",
    "set_data": "contextvars.Context().run(safepyrun.set_data, ok_dests=['/'])",
    "default": "contextvars.Context().run(setattr, safepyrun, "
               "'default_ok_dests', None)",
    "engine_default": "contextvars.Context().run("
                      "safepyrun._engine.set_default_ok_dests, None)",
    "disallow": "contextvars.Context().run(safepyrun.disallow, apply_tool)",
    "runner": "contextvars.Context().run(safepyrun.RunPython, {}, yolo=True)",
}


@pytest.mark.parametrize("name", sorted(FRESH_CONTEXT_CELLS))
def test_fresh_context_does_not_open_the_gate(name, tool_g, marker):
    before = (_engine.allow_entries(), _engine.get_default_ok_dests(),
              _engine.get_data())
    py = RunPython(tool_g)
    msg = assert_refused(py, FRESH_CONTEXT_CELLS[name])
    assert "sandboxed code cannot change" in msg or "refused" in msg
    assert (_engine.allow_entries(), _engine.get_default_ok_dests(),
            _engine.get_data()) == before
    gate_still_refuses(tool_g, marker)


def test_reset_run_variable_still_gated(tool_g, marker):
    py = RunPython(tool_g)
    code = f"""
import os
for ctx_var in contextvars.copy_context():
    if ctx_var.name == 'safepyrun.run':
        ctx_var.set(None)
os.system({touch_cmd(marker)!r})
"""
    assert "os.system" in assert_refused(py, code)
    assert not marker.exists()


def test_fresh_context_cannot_skip_a_narrowing_policy(tmp_path):
    mod = types.ModuleType("narrow_tools")

    def save(path):
        with open(path, "w") as f:
            f.write("x")
    save.__module__ = mod.__name__
    mod.save = save

    def csv_only(obj, args, kwargs, data):
        if not str(args[0]).endswith(".csv"):
            raise PermissionError("only .csv")
    allow({mod: [("save", csv_only)]})
    g = host_ns(save=save, tools=[save], d=str(tmp_path))
    py = RunPython(g, ok_dests=[str(tmp_path)])
    for cell in ["import contextvars\n"
                 "contextvars.Context().run(save, d + '/x.sh')",
                 "tools[0](d + '/x.sh')",
                 "globals()['sa' + 've'](d + '/x.sh')"]:
        assert "only .csv" in assert_refused(py, cell)
        assert not (tmp_path / "x.sh").exists()
    run(py, "save(d + '/ok.csv')")
    assert (tmp_path / "ok.csv").exists()


# ---- 6. cell code by identity, never by file name or module name ------------


IDENTITY_CELLS = {
    "code_replace": "cb = lambda: __import__('os').system({cmd!r})\n"
                    "f = type(cb)(cb.__code__.replace(co_filename='x.py'), "
                    "globals())\napply_tool(f)",
    "eval_via_tool": "apply_tool(eval, \"__import__('os').system({cmd!r})\")",
    "exec_via_tool": "apply_tool(exec, \"import os; os.system({cmd!r})\")",
    "compile_builtin": "import builtins\n"
                       "c = getattr(builtins, 'com' + 'pile')("
                       "\"import os\\nos.system({cmd!r})\", "
                       "'/usr/lib/python3/os.py', 'exec')\n"
                       "apply_tool(getattr(builtins, 'ex' + 'ec'), c)",
    "module_name": "import builtins\n"
                   "ns = {{'__name__': 'trustedpkg.mod'}}\n"
                   "getattr(builtins, 'ex' + 'ec')("
                   "\"import os\\ndef f(): os.system({cmd!r})\", ns)\n"
                   "apply_tool(ns['f'])",
    "module_dict": "import builtins, trustedpkg\n"
                   "getattr(builtins, 'ex' + 'ec')("
                   "\"import os\\ndef f(): os.system({cmd!r})\", "
                   "vars(trustedpkg))\n"
                   "apply_tool(trustedpkg.f)",
}


@pytest.mark.parametrize("name", sorted(IDENTITY_CELLS))
def test_cell_code_is_known_by_identity(name, tool_g, marker):
    pkg = types.ModuleType("trustedpkg")
    sys.modules["trustedpkg"] = pkg
    try:
        allow({"trustedpkg.*": ...})
        allow(pkg)
        py = RunPython(tool_g)
        cell = IDENTITY_CELLS[name].format(cmd=touch_cmd(marker))
        assert "os.system" in assert_refused(py, cell)
        assert not marker.exists()
    finally:
        sys.modules.pop("trustedpkg", None)


def test_replaced_code_stays_gated_after_the_run(tool_g, marker):
    py = RunPython(tool_g)
    run(py, f"cb = lambda: __import__('os').system({touch_cmd(marker)!r})\n"
            "later_ = type(cb)(cb.__code__.replace(co_filename='host.py'), "
            "globals())")
    with pytest.raises(PermissionError):
        tool_g["later_"]()
    assert not marker.exists()


def test_trusted_code_cannot_be_rewrapped(tool_g, marker):
    py = RunPython(tool_g)
    msg = assert_refused(py, "f = type(apply_tool)(apply_tool.__code__, "
                             "{'__builtins__': {}})")
    assert "apply_tool" in msg


def test_ordinary_exec_and_namedtuple_still_work(tool_g):
    py = RunPython(tool_g)
    assert run(py, "import collections, dataclasses\n"
                   "P = collections.namedtuple('P', 'x y')\n"
                   "@dataclasses.dataclass\nclass D:\n    a: int = 1\n"
                   "(P(1, 2).y, D().a)") == (2, 1)


# ---- 8. 3.12+: a freed frame's address must not match a stale record ------


@pytest.mark.skipif(not PY312, reason="3.12+ native-call record")
def test_native_record_survives_no_frame_reuse(tmp_path, marker):
    allow(os.mkdir)
    g = host_ns(d=str(tmp_path), cmd=touch_cmd(marker))
    py = RunPython(g, ok_dests=[str(tmp_path / "sub")])
    code = """
import os
def h1(f, a):
    return f(a)
def h2(f, a):
    return f(a)
h2(len, 'x')              # this call site now calls an untrusted callable
for i in range(50):
    h1(os.mkdir, d + '/made%d' % i)
    try:
        h2(os.system, cmd)
    except PermissionError:
        pass
"""
    run(py, code)
    assert not marker.exists()
    assert (tmp_path / "made0").is_dir()


# ---- 12. pre_deny is host code -----------------------------------------------


def test_pre_deny_may_log_to_a_file(tmp_path, marker):
    log = tmp_path / "denials.log"

    def pre_deny(info):
        with open(log, "a") as f:
            f.write(info.event + "\n")
        return None

    py = RunPython(host_ns(), pre_deny=pre_deny)
    assert_refused(py, f"import os; os.system({touch_cmd(marker)!r})")
    assert log.read_text() == "os.system\n"
    assert not marker.exists()


def test_pre_deny_sees_cell_objects_as_gated(tmp_path, marker):
    """pre_deny runs ungated, but cell code it calls is still cell code."""
    seen = []

    def pre_deny(info):
        seen.append(info.event)
        for arg in info.args:
            if callable(arg):
                arg()
        return None

    py = RunPython(host_ns(), pre_deny=pre_deny)
    cell = (f"import sys\ndef f(): open({str(marker)!r}, 'w')\n"
            "sys.audit('weird.event', f)")
    assert_refused(py, cell)
    assert not marker.exists()
    assert seen[0] == "weird.event"


# ---- 13. unwrapping a diamond chain is linear ----------------------------------


DIAMOND_CELL = """
e = ValueError('leaf')
for i in range(60):
    n = ValueError(i)
    n.__cause__ = e
    n.__context__ = e
    e = n
try:
    open('/safepyrun-diamond.txt', 'w')
except PermissionError as p:
    e.__context__ = p
    raise e
"""


def test_diamond_exception_chain_unwraps_quickly(tmp_path):
    proc = run_python(f"""
        import asyncio, time
        from safepyrun import RunPython
        py = RunPython({{}})
        t = time.perf_counter()
        try:
            asyncio.run(py({DIAMOND_CELL!r}))
        except BaseException as exc:
            print(type(exc).__name__)
        print('elapsed-ok' if time.perf_counter() - t < 20 else 'slow')
    """, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "elapsed-ok" in proc.stdout
    assert "PermissionError" in proc.stdout
    assert not os.path.exists("/safepyrun-diamond.txt")


# ---- 14. a refusal stays a PermissionError; cell reprs do not run ----------------


def test_refusal_does_not_run_cell_repr(py):
    code = """
calls = []
class Evil:
    def __repr__(self):
        calls.append(1)
        raise ValueError('boom')
import sys
try:
    sys.audit('x.y', Evil())
except PermissionError as e:
    msg = str(e)
(msg, calls)
"""
    msg, calls = run(py, code)
    assert calls == []
    assert "<Evil object>" in msg and "'x.y'" in msg


def test_refusal_survives_a_str_subclass_with_hostile_methods(py, marker):
    code = f"""
import os
class S(str):
    def upper(self): return 'HARMLESS'
    def __repr__(self): raise ValueError('boom')
os.putenv(S('PATH'), '/tmp')
"""
    msg = assert_refused(py, code)
    assert "'PATH'" in msg
    assert os.environ.get("PATH") != "/tmp"


# ---- 15. NUL bytes -------------------------------------------------------------


def test_check_source_refuses_nul():
    with pytest.raises(ValueError, match="null bytes"):
        _engine.check_source("x = 1\x00import socket")


def test_cell_with_nul_refused(py):
    with pytest.raises(ValueError, match="null bytes"):
        run(py, "x = 1\x00import socket")


# ---- introspection ----------------------------------------------------------------


@pytest.mark.parametrize("call", ["gc.get_objects()",
                                  "gc.get_referrers(safepyrun)",
                                  "gc.get_referents(safepyrun.allow)"])
def test_gc_introspection_refused_in_a_run(call, tool_g):
    py = RunPython(tool_g)
    assert "audit event 'gc.get_" in assert_refused(py, "import gc\n" + call)
    import gc
    assert isinstance(gc.get_referents(safepyrun.allow), list)  # host: fine


def test_cell_code_index_survives_weakref_callbacks(tool_g, marker):
    """The index entry's weakref callback is reachable from Python; calling
    it while the code is alive removes nothing."""
    py = RunPython(tool_g)
    run(py, "import weakref\n"
            f"def f(): __import__('os').system({touch_cmd(marker)!r})\n"
            "for r in weakref.getweakrefs(f.__code__):\n"
            "    if r.__callback__ is not None:\n"
            "        r.__callback__(r)\n"
            "later_ = f")
    with pytest.raises(PermissionError):
        apply_tool(tool_g["later_"])
    assert not marker.exists()


# ---- 10. sqlite: the files a database open really writes ----------------------


@pytest.fixture
def sq(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    outside = tmp_path / "out"
    outside.mkdir()
    g = host_ns(inside=str(inside), outside=str(outside))
    return RunPython(g, ok_dests=[str(inside)]), inside, outside


@pytest.mark.parametrize("cell", [
    "sqlite3.connect('file:' + outside + '/x.db?mode=rwc', uri=True)",
    "sqlite3.connect('file:' + outside + '/x.db', uri=True)",
    "sqlite3.connect('file://localhost' + outside + '/x.db', uri=True)",
    "sqlite3.connect('file:' + outside.replace('/', '%2F') + '%2Fx.db', uri=True)",
    "sqlite3.Connection('file:' + outside + '/x.db?mode=rwc', uri=True)",
    "sqlite3.connect(outside + '/x.db')",
])
def test_sqlite_uri_cannot_write_outside(cell, sq):
    py, inside, outside = sq
    assert_refused(py, "import sqlite3, os\nos.chdir(" + repr(str(inside)) +
                   ")\n" + cell)
    assert not (outside / "x.db").exists()


@pytest.mark.parametrize("cell", [
    "sqlite3.connect(':memory:')",
    "sqlite3.connect('')",
    "sqlite3.connect('file::memory:', uri=True)",
    "sqlite3.connect('file:x?mode=memory&cache=shared', uri=True)",
    "sqlite3.connect('file:' + inside + '/a.db?mode=rwc', uri=True)",
    "sqlite3.connect(Path(inside) / 'b.db')",
])
def test_sqlite_ordinary_opens_work(cell, sq):
    py, inside, outside = sq
    run(py, "import sqlite3\ncon = " + cell + "\n"
            "con.execute('create table t(x)')\ncon.close()")


def test_sqlite_read_only_uri_of_any_file(sq):
    py, inside, outside = sq
    import sqlite3
    con = sqlite3.connect(str(outside / "r.db"))
    con.execute("create table t(x)")
    con.execute("insert into t values (7)")
    con.commit()
    con.close()
    assert run(py, "import sqlite3\n"
                   "con = sqlite3.connect('file:' + outside + '/r.db?mode=ro', "
                   "uri=True)\ncon.execute('select x from t').fetchone()[0]") == 7


@pytest.mark.parametrize("sql", [
    "ATTACH DATABASE '{out}/att.db' AS a",
    "VACUUM INTO '{out}/att.db'",
])
def test_sqlite_attach_and_vacuum_into_outside_refused(sql, sq):
    py, inside, outside = sq
    cell = ("import sqlite3\ncon = sqlite3.connect(inside + '/db.sqlite')\n"
            "con.execute('create table t(x)')\n"
            f"con.execute({sql.format(out=outside)!r})")
    with pytest.raises(sqlite3_error()):
        run(py, cell)
    assert not (outside / "att.db").exists()
    run(py, "import sqlite3\ncon = sqlite3.connect(inside + '/db2.sqlite')\n"
            f"con.execute({sql.format(out=inside)!r})")
    assert (inside / "att.db").exists()


def sqlite3_error():
    import sqlite3
    return sqlite3.DatabaseError


# ---- a path object answering the check and the write differently ----------------


@pytest.mark.parametrize("first", ["outside", "inside"])
def test_unstable_path_object_refused(first, sq):
    """A path object answering the check and the effect differently, in
    either order (os.mkdir converts before its event, shutil.copyfile
    raises its event before it opens)."""
    py, inside, outside = sq
    (inside / "src.txt").write_text("data")
    bad, ok = str(outside / "bad.txt"), str(inside / "ok.txt")
    answers = [bad, ok] if first == "outside" else [ok, bad]
    for call in ["os.mkdir(Flip())",
                 f"shutil.copyfile({str(inside / 'src.txt')!r}, Flip())"]:
        cell = f"""
import os, shutil
class Flip:
    n = 0
    def __fspath__(self):
        Flip.n += 1
        return {answers!r}[0] if Flip.n == 1 else {answers!r}[1]
{call}
"""
        try:  # refused, or (when the one answer used was inside) allowed
            run(py, cell)
        except PermissionError:
            pass
        assert not (outside / "bad.txt").exists()
    # shutil.copyfile asks the check first: the object itself is refused.
    cell = ("import shutil\nclass F:\n    def __fspath__(self):\n"
            f"        return {ok!r}\n"
            f"shutil.copyfile({str(inside / 'src.txt')!r}, F())")
    assert "path object" in assert_refused(py, cell)


def test_pathlib_subclass_str_trick_refused(sq):
    py, inside, outside = sq
    cell = f"""
import pathlib, itertools
import os
names = itertools.cycle([{str(outside / 'bad.txt')!r}, {str(inside / 'ok.txt')!r}])
class P(type(pathlib.Path())):
    def __str__(self):
        return next(names)
    __fspath__ = __str__
os.mkdir(P('x'))
"""
    assert_refused(py, cell)
    assert not (outside / "bad.txt").exists()


def test_pathlib_classes_cannot_be_patched(sq):
    py, inside, outside = sq
    with pytest.raises(TypeError, match="immutable type"):
        run(py, "import pathlib\n"
                "pathlib.PurePath.__fspath__ = lambda self: 'x'")
    import pathlib
    assert pathlib.PurePath.__fspath__ is not None
    run(py, "from pathlib import Path\n"
            "(Path(inside) / 'fine.txt').write_text('ok')")
    assert (inside / "fine.txt").read_text() == "ok"


# ---- policies judge the path the effect will use; their data is read-only ------


def write_text(path, text="x"):
    with open(os.path.expanduser(os.fspath(path)), "w") as f:
        f.write(text)


def test_policy_refuses_a_cell_path_object_and_reads_tilde_both_ways(tmp_path,
                                                                     monkeypatch):
    from safepyrun import PosAllowPolicy
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    allow(write_text, allow_policy=PosAllowPolicy(0))
    g = host_ns(write_text=write_text, out=str(tmp_path / "out.txt"),
                ok=str(work / "ok.txt"))
    py = RunPython(g, ok_dests=["."])
    # '~/x.csv' is '.'-relative to open() but $HOME to this tool.
    with pytest.raises(PermissionError):
        run(py, "write_text('~/x.csv')")
    assert not (home / "x.csv").exists()
    cell = """
class Flip:
    n = 0
    def __fspath__(self):
        Flip.n += 1
        return ok if Flip.n == 1 else out
write_text(Flip())
"""
    with pytest.raises(PermissionError):
        run(py, cell)
    assert not (tmp_path / "out.txt").exists()
    run(py, "write_text('fine.txt')")
    assert (work / "fine.txt").exists()


def test_policy_data_is_read_only(tmp_path):
    seen = []

    def sneaky(obj, args, kwargs, data):
        seen.append(type(data).__name__)
        try:
            data["ok_dests"] = None
        except TypeError:
            seen.append("read-only")

    def tool(path):
        return path
    allow(tool, allow_policy=sneaky)
    py = RunPython(host_ns(tool=tool), ok_dests=[str(tmp_path)])
    run(py, "tool('a')")
    run(py, "tool('b')")
    assert seen == ["mappingproxy", "read-only"] * 2
    assert py.ok_dests == (str(tmp_path),)


# ---- ctypes: foreign calls and raw objects need no audit event ------------------


@pytest.mark.parametrize("code", [
    "ct = sys.modules['ctypes']\nct.memmove(id(SECRET) + 20, b'PWNED', 5)",
    "ct = sys.modules['ctypes']\nct.c_char_p(1).value",
    "ct = sys.modules['ctypes']\nct.cast(id(SECRET), ct.POINTER(ct.c_char))[20] = b'X'",
    "ct = sys.modules['ctypes']\nf = ct.CFUNCTYPE(ct.c_void_p, ct.c_void_p, ct.c_void_p,"
    " ct.c_size_t)(ct.cast(ct.memmove, ct.c_void_p).value)\nf(id(SECRET) + 20, b'PWNED', 5)",
    "ct = sys.modules['_ctypes']\nct.CFuncPtr.__call__(sys.modules['ctypes'].memmove, id(SECRET) + 20, b'PWNED', 5)",
])
def test_ctypes_cannot_touch_host_memory(code):
    import ctypes  # the host has ctypes loaded already
    secret = b"original-secret-bytes"
    py = RunPython(host_ns(SECRET=secret))
    with pytest.raises(PermissionError, match="ctypes"):
        run(py, code)
    assert secret == b"original-secret-bytes"
    assert ctypes.c_int(3).value == 3  # the host's own ctypes works


def test_first_import_of_numpy_in_a_cell_still_works(tmp_path):
    proc = run_python("""
        import asyncio, sys
        from safepyrun import RunPython
        py = RunPython({})
        print(asyncio.run(py("import numpy as np\\nint(np.arange(5).sum())")))
        try:
            asyncio.run(py("import sys\\nsys.modules['ctypes'].c_char_p(1).value"))
        except PermissionError as e:
            print('refused', 'ctypes.new' in str(e))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10", "refused", "True"]


@pytest.mark.parametrize("path", ["", b"", "~", "~nosuchuser/x"])
def test_chk_dest_odd_paths(path, tmp_path):
    """Found by the fuzzer: an empty path made chk_dest raise IndexError."""
    from safepyrun import chk_dest
    with pytest.raises(PermissionError, match="is outside ok_dests"):
        chk_dest(path, [str(tmp_path / "ok")])


def test_refusal_does_not_run_a_native_repr_stored_in_a_cell_class(py):
    code = """
import functools, sys
calls = []
class Evil:
    __repr__ = functools.partial(calls.append, 'ran')
try:
    sys.audit('x.y', Evil())
except PermissionError as e:
    msg = str(e)
(msg, calls)
"""
    msg, calls = run(py, code)
    assert calls == []
    assert "<Evil object>" in msg
