"""The IPython integration, in a real IPython shell (a subprocess)."""
import pytest

from trust_helpers import check_output

pytest.importorskip("IPython")

PRELUDE = """
import asyncio, io, os, sys, json
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
def cell(src):
    r = shell.run_cell(src, store_history=True)
    err = r.error_before_exec or r.error_in_exec
    return (type(err).__name__ + ': ' + str(err)) if err else r.result
def show(x):
    print('@@' + json.dumps(x if isinstance(x, (bool, int, str, type(None), list)) else repr(x)), flush=True)
"""


def lines(out):
    import json
    return [json.loads(line[2:]) for line in out.splitlines() if line.startswith('@@')]


def test_load_ext_cell_magic_and_line_magic(tmp_path):
    out = check_output(PRELUDE + """
show(cell('%load_ext safepyrun'))
show(cell('%%py\\nx = 20\\nx + 1'))
show(shell.user_ns.get('x'))
show(cell('%%py\\nx * 2;'))
show(cell('type(pyrun).__name__, allow.__module__'))
r = cell('runner = %py -o\\nrunner is pyrun')
show(r)
show(cell('%py 6 * 7'))
show(cell('%%py\\nimport subprocess\\nsubprocess.run(["true"])'))
""", tmp_path)
    got = lines(out)
    assert got[0] is None
    assert got[1] == 21
    assert got[2] == 20
    assert got[3] is None  # trailing ';' hides the value
    assert got[4] == "('RunPython', 'safepyrun')"
    assert got[5] is True
    assert got[6] == 42
    assert got[7].startswith("PermissionError") and "subprocess.Popen" in got[7]


def test_injected_names_are_not_overwritten(tmp_path):
    out = check_output(PRELUDE + """
cell('%load_ext safepyrun')
pyrun, allow = shell.user_ns['pyrun'], shell.user_ns['allow']
cell('%%py\\npyrun = 1\\nallow = 2\\ndef python(): pass\\nkept = 3')
show(shell.user_ns['pyrun'] is pyrun)
show(shell.user_ns['allow'] is allow)
show(shell.user_ns.get('kept'))
cell('%%py\\ndef pyrun(code): return None\\ndef allow(*a): return a')
show(shell.user_ns['pyrun'] is pyrun)
show(shell.user_ns['allow'] is allow)
""", tmp_path)
    assert lines(out) == [True, True, 3, True, True]


def test_transform_cell_magics_and_shell_escapes(tmp_path, touch):
    marker = tmp_path / "bang-ran"
    out = check_output(PRELUDE + f"""
from safepyrun import create_pyrun_magic
create_pyrun_magic(shell)
show(cell('%%py\\na = %time 3 + 4\\na'))
show(cell('%%py\\n!{touch} {marker}'))
show(cell('%%py\\nfiles = !echo hi\\nfiles'))
show(os.path.exists({str(marker)!r}))
""", tmp_path)
    got = lines(out)
    assert got[0] == 7
    assert got[1].startswith("PermissionError"), got[1]
    assert got[2].startswith("PermissionError"), got[2]
    assert got[3] is False
    assert not marker.exists()


def test_magic_runs_with_an_event_loop_already_running(tmp_path):
    """ipykernel runs cells inside a running event loop; the magic must
    still run the cell (in this thread, so the gate applies)."""
    out = check_output(PRELUDE + """
from safepyrun import create_pyrun_magic
create_pyrun_magic(shell)
async def main():
    r = await shell.run_cell_async(
        '%%py\\nimport asyncio\\nawait asyncio.sleep(0.01)\\nn = sum(range(5))\\nn',
        store_history=True, transformed_cell=shell.transform_cell(
        '%%py\\nimport asyncio\\nawait asyncio.sleep(0.01)\\nn = sum(range(5))\\nn'))
    show(r.result)
    r = await shell.run_cell_async('%%py\\nimport os\\nos.system("true")',
        transformed_cell=shell.transform_cell('%%py\\nimport os\\nos.system("true")'))
    show(type(r.error_in_exec).__name__)
    show(asyncio.get_running_loop() is loop)
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
show(cell('%%py\\nn + 1'))
""", tmp_path)
    assert lines(out) == [10, "PermissionError", True, 11]


def test_create_pyrun_magic_with_explicit_runner(tmp_path):
    out = check_output(PRELUDE + f"""
from safepyrun import RunPython, create_pyrun_magic
ns = {{}}
mine = RunPython(ns, ok_dests=[{str(tmp_path)!r}])
assert create_pyrun_magic(shell, mine) is mine
shell.user_ns['mine'] = mine
show(cell("%%py\\nopen(" + repr({str(tmp_path / "ok.txt")!r}) + ", 'w').write('hi')"))
show(ns.get('__builtins__') is not None or True)
show(cell('r = %py -o\\nr is mine'))
""", tmp_path)
    assert lines(out)[0] == 2
    assert lines(out)[2] is True
    assert (tmp_path / "ok.txt").read_text() == "hi"


# ---- issue 11, item 4: IPython and Jupyter --------------------------------------

def test_cell_options_ok_dest_for_that_cell_only(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    a, b = out_dir / "a.txt", out_dir / "b.txt"
    out = check_output(PRELUDE + f"""
cell('%load_ext safepyrun')
show(cell("%%py --ok-dest {out_dir}\\nopen({str(a)!r}, 'w').write('abc')"))
show(cell("%%py\\nopen({str(b)!r}, 'w').write('no')"))
show(list(shell.user_ns['pyrun'].ok_dests))
show(cell('%%py --no-such-option\\n1'))
""", tmp_path)
    got = lines(out)
    assert got[0] == 3
    assert got[1].startswith("PermissionError: safepyrun refused to open a "
                             f"file for writing: {str(b)!r} (no writes are "
                             "allowed: ok_dests is empty)")
    assert got[2] == []
    assert got[3] == "UsageError: %%py: unrecognized arguments: --no-such-option"
    assert a.read_text() == "abc" and not b.exists()


def test_user_changes_ok_dests_without_reloading_but_cells_cannot(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    out = check_output(PRELUDE + f"""
cell('%load_ext safepyrun')
show(cell("pyrun.ok_dests = [{str(d)!r}]"))
show(cell("%%py\\nopen({str(d / 'x')!r}, 'w').write('x')"))
show(cell("%%py\\npyrun.ok_dests = None"))
show(cell("%%py\\nimport gc\\ntype(pyrun).ok_dests.__set__(pyrun, None)"))
show(list(shell.user_ns['pyrun'].ok_dests))
show(cell("%%py\\nopen({str(tmp_path / 'y')!r}, 'w')"))
""", tmp_path)
    got = lines(out)
    assert got[0] is None
    assert got[1] == 1
    assert got[2] == ("PermissionError: safepyrun refused to change a runner's "
                      "ok_dests: sandboxed code cannot change the sandbox") \
        or got[2].startswith("PermissionError: safepyrun refused to change a "
                             "runner's ok_dests")
    assert got[3].startswith("PermissionError: safepyrun refused to change a "
                             "runner's ok_dests")
    assert got[4] == [str(d)]
    assert got[5].startswith("PermissionError: safepyrun refused to open a "
                             "file for writing")
    assert (d / "x").read_text() == "x"
    assert not (tmp_path / "y").exists()


def test_value_display_follows_ipythons_rules(tmp_path):
    out = check_output(PRELUDE + """
cell('%load_ext safepyrun')
show(cell('%%py\\nlen("a;#b")'))
show(cell('%%py\\nlen("ab");  # hidden'))
show(cell('%%py\\nx = 5\\nx'))
show(cell('%%py\\nx;'))
show(cell('%py len("a;b")'))
show(cell('_'))
""", tmp_path)
    assert lines(out) == [4, None, 5, None, 3, 3]


def test_cell_runs_on_ipythons_own_loop(tmp_path):
    out = check_output(PRELUDE + """
from IPython.core.async_helpers import get_asyncio_loop
cell('%load_ext safepyrun')
show(cell('%%py\\nimport asyncio\\nasyncio.get_running_loop()') is get_asyncio_loop())
show(cell('%%py\\nimport asyncio\\nawait asyncio.sleep(0)\\n7'))
""", tmp_path)
    assert lines(out) == [True, 7]


def test_traceback_starts_at_the_cell(tmp_path):
    out = check_output(PRELUDE + """
cell('%load_ext safepyrun')
print('<<<')
cell('%%py\\ndef f():\\n    return 1 / 0\\nf()')
print('>>>')
print('<<<')
cell('%%py\\nimport os\\nos.system("true")')
print('>>>')
""", tmp_path)
    import re
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # IPython's colours
    shown = [part.split(">>>")[0] for part in out.split("<<<")[1:]]
    assert len(shown) == 2
    for text in shown:
        for host_frame in ("safepyrun/ipython.py", "run_sync", "asyncio",
                           "base_events", "_glue"):
            assert host_frame not in text, text
    assert "return 1 / 0" in shown[0] and "ZeroDivisionError" in shown[0]
    assert "os.system(\"true\")" in shown[1] and "PermissionError" in shown[1]


def test_refused_import_leaves_no_half_package(tmp_path):
    pkg = tmp_path / "h11pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import part\nfrom . import writer\n")
    (pkg / "part.py").write_text("VALUE = 1\n")
    (pkg / "writer.py").write_text(
        f"open({str(tmp_path / 'cache.txt')!r}, 'w').write('c')\n")
    out = check_output(PRELUDE + f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
cell('%load_ext safepyrun')
show(cell('%%py\\nimport h11pkg').split(':')[0])
show(sorted(m for m in sys.modules if m.startswith('h11pkg')))
cell("pyrun.ok_dests = [{str(tmp_path)!r}]")
show(cell('%%py\\nimport h11pkg\\nh11pkg.part.VALUE'))
""", tmp_path)
    assert lines(out) == ["PermissionError", [], 1]
    assert (tmp_path / "cache.txt").read_text() == "c"


def test_refused_matplotlib_import_then_preset_works(tmp_path):
    pytest.importorskip("matplotlib")
    out = check_output(PRELUDE + """
import sys
cell('%load_ext safepyrun')
r = cell('%%py\\nimport matplotlib.pyplot as plt')
show(r if not isinstance(r, str) else r.split(':')[0])
from safepyrun import allow_matplotlib
allow_matplotlib()
show(cell('%%py\\nimport matplotlib.pyplot as plt\\nlen(plt.plot([1, 2]))'))
""", tmp_path, env={"MPLCONFIGDIR": str(tmp_path / "mpl"),
                    "MPLBACKEND": "Agg"})
    got = lines(out)
    # refused while matplotlib sets up its config and cache directories
    # (matplotlib reports that as an OSError caused by the refusal), or,
    # where the engine leaves such caches to the library (libcache.c), not
    # refused at all; test_refused_import_leaves_no_half_package holds the
    # refused case exactly
    assert got[0] in ("PermissionError", "OSError", None)
    assert got[1] == 1


def test_a_cell_cannot_swap_the_runner_rewritten_cells_use(tmp_path):
    target = tmp_path / "escaped.txt"
    out = check_output(PRELUDE + f"""
cell('%load_ext safepyrun')
fn = shell.magics_manager.magics['cell']['py']
show(cell('''%%py
import sys
class Fake:
    ok_dests = None
    def __call__(self, code, **kw):
        async def go():
            exec(code, {{}})
        return go()
fn = get_ipython().magics_manager.magics['cell']['py']
cells = [c for c in fn.__closure__ if type(c.cell_contents).__name__ == 'RunPython']
cells[0].cell_contents = Fake()
get_ipython().magics_manager.magics['cell']['py'] = lambda line, cell: Fake()(cell)
"swapped"'''))
show(shell.magics_manager.magics['cell']['py'] is fn)
show(cell("%%py\\nopen({str(target)!r}, 'w').write('x')").split(':')[0])
""", tmp_path)
    got = lines(out)
    assert got[1] is True
    assert got[2] == "PermissionError"
    assert not target.exists()


@pytest.mark.parametrize("install", [
    "get_ipython().input_transformers_cleanup.insert(0, evil)",
    "get_ipython().input_transformers_post.append(evil)",
    "get_ipython().input_transformer_manager.line_transforms.append(evil)",
    "get_ipython().input_transformers_post = [evil]",
    "import ast\nclass T(ast.NodeTransformer):\n    def visit_Module(self, node):\n"
    "        return ast.parse(evil([])[0])\nget_ipython().ast_transformers.append(T())",
    "get_ipython().events.register('pre_run_cell', lambda *a: None)",
])
def test_a_cell_cannot_leave_code_in_ipythons_input_machinery(tmp_path, install):
    marker = tmp_path / "escaped"
    code = ("def evil(lines):\n"
            f"    return [\"import os; os.system('touch {marker}')\\n\"]\n"
            + install + "\n'installed'")
    out = check_output(PRELUDE + f"""
cell('%load_ext safepyrun')
before = (list(shell.input_transformers_cleanup), list(shell.input_transformers_post),
          list(shell.ast_transformers), list(shell.events.callbacks['pre_run_cell']))
show(cell({('%%py' + chr(10) + code)!r}))
show(cell('x_h11 = 1'))
after = (list(shell.input_transformers_cleanup), list(shell.input_transformers_post),
         list(shell.ast_transformers), list(shell.events.callbacks['pre_run_cell']))
show(all(len(a) == len(b) and all(p is q for p, q in zip(a, b))
         for a, b in zip(before, after)))
show(shell.user_ns.get('x_h11'))
""", tmp_path)
    got = lines(out)
    assert got[0] == "installed"
    assert got[2] is True and got[3] == 1
    assert not marker.exists()


def test_is_host_callable_is_decided_in_c_by_code_identity():
    """What the %%py guard keeps of what a cell's run added to IPython's
    input machinery: only plain host or library callables."""
    import asyncio
    from safepyrun import RunPython, _engine

    g = {}
    asyncio.run(RunPython(g)(
        "def cell_fn(lines):\n    return lines\n"
        "class Cell:\n    def m(self, lines):\n        return lines\n"
        "class Sub(list):\n    @staticmethod\n    def s():\n        pass\n"
        "bound = Cell().m\nsub_append = Sub().append\n"))
    assert _engine.is_host_callable(g["cell_fn"]) is False
    assert _engine.is_host_callable(g["bound"]) is False
    assert _engine.is_host_callable(g["sub_append"]) is False  # bound native
    assert _engine.is_host_callable(g["Cell"]) is False  # a class is not one

    class Host:
        def m(self):
            pass
    assert _engine.is_host_callable(test_is_host_callable_is_decided_in_c_by_code_identity)
    assert _engine.is_host_callable(Host().m) is True
    assert _engine.is_host_callable(print) is True
    assert _engine.is_host_callable(len) is True
    assert _engine.is_host_callable([].append) is False
    import functools
    assert _engine.is_host_callable(functools.partial(print)) is False
