"""The seed document's examples that do not use allow(), one test each.

The ok_dests examples are in test_writes.py.  Cells run in an explicit host
namespace (conftest.host_ns) holding the modules the seed's notebook had.
"""
import inspect
import os
import warnings
from types import SimpleNamespace

import pytest

from conftest import refused, run
from safepyrun import RunPython


# --- results and printing ------------------------------------------------

def test_empty_list_result(py):
    assert run(py, "[]") == []


def test_print(py, capsys):
    assert run(py, "print('tt')") is None
    assert capsys.readouterr().out == "tt\n"


def test_type_of_str(py):
    assert run(py, "type('t')") is str


def test_augmented_assignment_in_one_cell(py, g):
    assert run(py, "a = 1\na+=2\na") == 3
    assert g["a"] == 3


def test_augmented_assignment_across_cells(py, g):
    run(py, "a = 1")
    run(py, "a += 2")
    assert run(py, "a") == 3
    assert g["a"] == 3


def test_unpacking_in_print(py, capsys):
    run(py, "a = [1,2,3]\nprint(*a)")
    assert capsys.readouterr().out == "1 2 3\n"


def test_warning_in_cell_function(py, capsys):
    code = ("def f(): warnings.warn('a warning')\n"
            "print(\"asdf\")\nf()\n1+1")
    with pytest.warns(UserWarning, match="a warning"):
        assert run(py, code) == 2
    assert capsys.readouterr().out == "asdf\n"


def test_warning_points_at_cell_line(py):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(py, "x = 1\ndef f(): warnings.warn('shown')\nf()\n1+1") == 2
    assert [str(w.message) for w in caught] == ["shown"]
    assert caught[0].category is UserWarning
    assert caught[0].filename.startswith("<pyrun_")
    assert caught[0].lineno == 2
    text = warnings.formatwarning(caught[0].message, caught[0].category,
                                  caught[0].filename, caught[0].lineno)
    assert "def f(): warnings.warn('shown')" in text


# --- classes and functions -----------------------------------------------

def test_class_created(py, g, capsys):
    run(py, "\nclass A:\n    def __init__(self): print('safe')\n_ = A()")
    assert capsys.readouterr().out == "safe\n"
    assert isinstance(g["A"], type)


def test_function_created(py, capsys):
    run(py, "\ndef f(): print('safe')\nf()")
    assert capsys.readouterr().out == "safe\n"


def test_os_system_refused(py, capsys):
    refused(py, 'os.system("ls")', "os.system", "'ls'")
    assert capsys.readouterr().out == ""


def test_unsafe_code_in_class_refused(py, tmp_path):
    victim = tmp_path / "unsafe"
    victim.write_text("keep")
    py.g["victim"] = str(victim)
    refused(py, "\nclass A:\n    def __init__(self): os.unlink(victim)\nA()",
            "os.remove", str(victim))
    assert victim.read_text() == "keep"


def test_unsafe_code_in_function_refused(py, tmp_path):
    victim = tmp_path / "unsafe"
    victim.write_text("keep")
    py.g["victim"] = str(victim)
    msg = refused(py, "\ndef f(): os.unlink(victim)\nf()", "os.remove",
                  str(victim))
    assert " f" in msg  # the chain names the cell function
    assert victim.read_text() == "keep"


def test_seed_literal_unsafe_paths_refused(py):
    refused(py, "\ndef f(): os.unlink('/unsafe')\nf()", "os.remove",
            "'/unsafe'")
    refused(py, "\nclass A:\n    def __init__(self): os.unlink('/unsafe')\nA()",
            "os.remove", "'/unsafe'")
    refused(py, "os.unlink('/foo/bar')", "os.remove", "'/foo/bar'")


# --- reading callables, type and isinstance ------------------------------

def test_reading_callables(py, capsys):
    run(py, "print(os.unlink)\nprint(type(os.unlink))\n"
            "print(os.unlink.__qualname__)")
    assert capsys.readouterr().out == (
        "<built-in function unlink>\n"
        "<class 'builtin_function_or_method'>\nunlink\n")


def test_isinstance_and_type(py):
    assert run(py, "class C: ...\nc = C()\nisinstance(C, type)") is True
    assert run(py, "isinstance(c, type)") is False
    assert run(py, "type(c) is C") is True


# --- host objects ---------------------------------------------------------

def test_mutating_host_dicts_and_objects(py, g):
    o = SimpleNamespace(x=1)
    host_dict = {"k": 0}
    g.update(o=o, host_dict=host_dict)
    code = '\nd = {}\nd["x"] = 1\no.x = 2\nhost_dict["k"] = 5\nd["x"],o.x'
    assert run(py, code) == (1, 2)
    assert o.x == 2
    assert host_dict == {"k": 5}
    assert g["o"] is o and g["host_dict"] is host_dict


def test_dict_items(py):
    assert run(py, 'a = {"b":1}\nlist(a.items())') == [("b", 1)]


def test_path_exists(py, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert run(py, "Path().exists()") is True


def test_os_path_join(py):
    assert run(py, "os.path.join('/foo', 'bar', 'baz.py')") == "/foo/bar/baz.py"


# --- exports --------------------------------------------------------------

def test_trailing_underscore_exports(py, g):
    assert run(py, "a_=3\na_") == 3
    assert g["a_"] == 3
    assert run(py, "aa_='33'\nlen(aa_)") == 2
    assert g["aa_"] == "33"


def test_callables_do_not_shadow_host_names(py, g):
    g["a"] = 3
    run(py, "def g(): ...\na=3\ndef a(): ...")
    assert g["a"] == 3
    assert inspect.getsource(g["g"]) == "def g(): ...\n"


def test_callable_cell_does_not_replace_host_value(py, g):
    g["a"] = 3
    run(py, "def a(): ...")
    assert g["a"] == 3


def test_getsource_in_a_later_cell(py):
    run(py, "def g(): ...")
    assert run(py, "inspect.getsource(g)") == "def g(): ...\n"


# --- async ---------------------------------------------------------------

def test_async_for_over_cell_generator(py, g):
    code = ("async def agen():\n    for x in [1,2]: yield x\n"
            "res = []\nasync for x in agen(): res.append(x)\nres")
    assert run(py, code) == [1, 2]
    assert g["res"] == [1, 2]


def test_asyncio_gather(py, capsys):
    code = ("import asyncio\nasync def fetch(n): return n * 10\n"
            "print(string.ascii_letters)\n"
            "await asyncio.gather(fetch(1), fetch(2), fetch(3))")
    assert run(py, code) == [10, 20, 30]
    assert capsys.readouterr().out == (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n")


def test_pyrun_of_empty_list_with_fresh_runner():
    assert run(RunPython({}), "[]") == []


# --- libraries -------------------------------------------------------------

def test_numpy(py):
    np = pytest.importorskip("numpy")
    res = run(py, "import numpy as np\nnp.array([1,2,3]).sum()")
    assert res == 6
    assert isinstance(res, np.int64)


def test_pandas_dataframe(py):
    pd = pytest.importorskip("pandas")
    py.g["df"] = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    assert run(py, "df.shape") == (3, 2)
    assert run(py, "int(df['a'].sum() + df.b.max())") == 12


def test_reading_a_file_is_allowed(py, tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("hello world")
    py.g["f"] = f
    assert run(py, "open(f).read()") == "hello world"
    assert run(py, "f.read_text()[:5]") == "hello"
    assert run(py, "os.path.getsize(f)") == 11
