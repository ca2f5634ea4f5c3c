"""Namespaces: cell globals, the export rule, srcfn/linecache, find_var,
the host-namespace default, and the pre-run syntax-tree checks."""
import inspect
import linecache
import os
import re

import pytest

from conftest import host_ns, rejected, run
from safepyrun import RunPython, find_var, should_export, srcfn

_ns_test_sentinel_9f3 = True


# --- top-level names are globals of the cell --------------------------------

def test_comprehension_sees_top_level_names(py):
    assert run(py, "n = 10\n[i*n for i in range(3)]") == [0, 10, 20]


def test_function_sees_top_level_names(py):
    assert run(py, "x = 5\ndef f(): return x\nf()") == 5


def test_closure_and_generator_see_top_level_names(py):
    code = ("k = 3\n"
            "def outer():\n    def inner(): return k * 2\n    return inner()\n"
            "(outer(), sum(k for _ in range(2)), {i: k for i in range(1)})")
    assert run(py, code) == (6, 6, {0: 3})


def test_class_body_sees_top_level_names(py):
    assert run(py, "base = 4\nclass K:\n    v = base + 1\nK.v") == 5


def test_host_names_visible(py, g):
    g["host_value"] = 41
    assert run(py, "host_value + 1") == 42


def test_functions_persist_across_runs(py):
    run(py, "def double(x): return 2 * x")
    assert run(py, "double(21)") == 42


def test_function_from_earlier_cell_sees_later_host_changes(py, g):
    run(py, "y = 1\ndef gety(): return y")
    run(py, "y = 2")
    assert g["y"] == 2
    assert run(py, "y") == 2


def test_global_statement_in_cell_function(py, g):
    run(py, "counter = 0\ndef bump():\n    global counter\n    counter += 1\n"
            "bump()\nbump()")
    assert g["counter"] == 2


def test_no_result_when_last_statement_not_expression(py):
    assert run(py, "x = 1") is None
    assert run(py, "for i in range(3): pass") is None
    assert run(py, "") is None
    assert run(py, "# just a comment") is None


def test_last_expression_after_statements(py):
    assert run(py, "x = 2\nif x:\n    y = 3\nx * y") == 6


def test_last_expression_none_value(py):
    assert run(py, "None") is None


# --- export rule ------------------------------------------------------------

def test_private_and_dunder_names_not_exported(py, g):
    run(py, "_hidden = 1\n__dunder__ = 2\nvisible = 3")
    assert "_hidden" not in g
    assert "__dunder__" not in g
    assert g["visible"] == 3


def test_trailing_underscore_always_exports(py, g):
    g["f_"] = print
    g["m_"] = os
    run(py, "f_ = 1\nm_ = 2\ndef c_(): return 'c'")
    assert g["f_"] == 1
    assert g["m_"] == 2
    assert g["c_"]() == "c"


def test_existing_callable_not_replaced(py, g):
    g["helper"] = len
    run(py, "helper = 5")
    assert g["helper"] is len


def test_existing_module_not_replaced(py, g):
    run(py, "os = 'shadow'")
    assert g["os"] is os


def test_new_callable_does_not_replace_value(py, g):
    g["a"] = 3
    run(py, "def a(): ...")
    assert g["a"] == 3
    run(py, "import json as a")
    assert g["a"] == 3


def test_new_callable_and_module_exported_under_new_names(py, g):
    run(py, "def fresh(): return 1\nimport json as fresh_mod")
    assert g["fresh"]() == 1
    assert g["fresh_mod"].__name__ == "json"


def test_cell_function_may_be_redefined(py, g):
    run(py, "def f(): return 1")
    run(py, "def f(): return 2")
    assert g["f"]() == 2
    assert run(py, "f()") == 2


def test_plain_values_replaced(py, g):
    g["v"] = 1
    run(py, "v = [1, 2]")
    assert g["v"] == [1, 2]


def test_export_after_failing_run(py, g):
    with pytest.raises(ZeroDivisionError):
        run(py, "before_error = 1\n1/0\nafter_error = 2")
    assert g["before_error"] == 1
    assert "after_error" not in g


def test_export_after_refused_run(py, g):
    with pytest.raises(PermissionError):
        run(py, "partial = 'yes'\nos.system('true')")
    assert g["partial"] == "yes"


def test_result_name_not_leaked(py, g):
    run(py, "1 + 1")
    assert not [k for k in g if "safepyrun" in k]


@pytest.mark.parametrize("k, v, g, expected", [
    ("x", 1, {}, True),
    ("_x", 1, {}, False),
    ("__x__", 1, {}, False),
    ("x_", print, {"x_": 1}, True),
    ("x_", 1, {"x_": os}, True),
    ("x", 2, {"x": 1}, True),
    ("x", print, {"x": 1}, False),
    ("x", os, {"x": 1}, False),
    ("x", 1, {"x": print}, False),
    ("x", 1, {"x": os}, False),
    ("x", print, {}, True),
])
def test_should_export(k, v, g, expected):
    assert should_export(k, v, g) is expected


def test_should_export_cell_function_replaceable(py, g):
    run(py, "def cellfn(): pass")
    assert should_export("cellfn", lambda: 2, g) is True
    assert should_export("cellfn", 5, g) is True


# --- srcfn and linecache ------------------------------------------------------

def _num(name):
    m = re.fullmatch(r"<pyrun_(\d)>", name)
    assert m, name
    return int(m.group(1))


def test_srcfn_consecutive_names():
    a, b = srcfn(""), srcfn("")
    assert (_num(a) + 1) % 10 == _num(b)


def test_srcfn_cycles_mod_10():
    names = [srcfn(f"x = {i}\n") for i in range(20)]
    nums = [_num(n) for n in names]
    assert all((x + 1) % 10 == y for x, y in zip(nums, nums[1:]))
    assert len(set(names)) == 10


def test_srcfn_registers_linecache():
    name = srcfn("a = 1\nb = 2\n")
    assert linecache.getline(name, 2) == "b = 2\n"
    assert linecache.getlines(name) == ["a = 1\n", "b = 2\n"]


def test_srcfn_rejects_non_str():
    with pytest.raises(TypeError):
        srcfn(b"x")


def test_getsource_of_cell_function(py, g):
    run(py, "x = 1\ndef described(a, b):\n    return a + b\n")
    assert inspect.getsource(g["described"]) == (
        "def described(a, b):\n    return a + b\n")


def test_cell_code_filename(py, g):
    run(py, "def where(): pass")
    assert _num(g["where"].__code__.co_filename) in range(10)


# --- find_var and the default namespace ----------------------------------------

def test_find_var_from_caller():
    local_marker_var = "found"  # noqa: F841 - locals are not searched
    assert find_var("_ns_test_sentinel_9f3") is True


def test_find_var_missing():
    with pytest.raises(NameError):
        find_var("no_such_variable_anywhere_xyz")


def test_sentinel_finds_module_globals():
    py = RunPython(sentinel="_ns_test_sentinel_9f3")
    assert py.g is globals()


def test_g_must_be_dict():
    with pytest.raises(TypeError):
        RunPython(g=[1, 2])


# --- pre-run syntax-tree checks -----------------------------------------------

@pytest.mark.parametrize("stmt, name", [
    ("import socket", "socket"),
    ("import importlib", "importlib"),
    ("from importlib import import_module", "importlib"),
    ("import ctypes", "ctypes"),
    ("import safepyrun", "safepyrun"),
    ("import safepyrun._engine", "safepyrun._engine"),
    ("from safepyrun import _engine", "safepyrun"),
    ("import importlib.util", "importlib.util"),
])
def test_banned_import_runs_nothing(py, g, stmt, name):
    msg = rejected(py, f"x_ = 1\n{stmt}", f"'{name}'")
    assert re.search(r"<pyrun_\d>, line 2", msg), msg
    assert "x_" not in g


@pytest.mark.parametrize("call", ["exec('y_ = 1')", "eval('1')",
                                  "compile('1', 'f', 'eval')"])
def test_exec_eval_compile_refused_before_running(py, g, call):
    fn = call.split("(")[0]
    rejected(py, f"x_ = 1\n{call}", f"{fn}()")
    assert "x_" not in g and "y_" not in g


def test_banned_check_nested_in_function(py, g):
    rejected(py, "x_ = 1\ndef f():\n    import socket\n", "'socket'")
    assert "x_" not in g


def test_ban_defs(g):
    py = RunPython(g, ban_defs=True)
    rejected(py, "x_ = 1\ndef f(): pass")
    rejected(py, "class C: pass")
    rejected(py, "async def f(): pass")
    assert "x_" not in g
    assert run(py, "(lambda: 3)()") == 3


def test_custom_ban_imports(g):
    py = RunPython(g, ban_imports=["json"])
    rejected(py, "import json", "'json'")
    assert run(py, "import socketserver\n1") == 1


def test_ban_imports_must_be_list_of_names(g):
    with pytest.raises(TypeError):
        RunPython(g, ban_imports="json")
    with pytest.raises(TypeError):
        RunPython(g, ban_imports=[1])


def test_importlib_via_dunder_import_still_gated_at_run_time(py, marker):
    # The syntax check is a first line; the audit hook is the boundary.
    code = (f"sp = __import__('subprocess')\nsp.run(['touch', {str(marker)!r}])")
    with pytest.raises(PermissionError):
        run(py, code)
    assert not marker.exists()
