"""Ordinary notebook code behaves as in plain Python (issue 8): each test
runs the same cell under the sandbox and under plain exec and compares."""
import asyncio

import pytest

from safepyrun import RunPython

from conftest import host_ns, run


def plain(code, g=None):
    """The value of `code`'s last expression under plain exec."""
    import ast
    g = {} if g is None else g
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<plain>", "exec"), g)
    return eval(compile(ast.Expression(last.value), "<plain>", "eval"), g) \
        if last is not None else None


@pytest.mark.parametrize("code", [
    "from importlib.metadata import version\nversion('pytest')",
    "from importlib import metadata\nmetadata.version('pytest')",
    "import importlib.metadata as md\nmd.distribution('pytest').metadata['Name']",
    "from importlib.resources import files\nfiles('json').joinpath('__init__.py').is_file()",
])
def test_read_only_importlib_in_a_cell(code):
    assert run(RunPython(host_ns()), code) == plain(code)


@pytest.mark.parametrize("code", [
    "import sqlite3\ncon = sqlite3.connect(':memory:')\n"
    "con.execute('create table t(x)')\ncon.execute('insert into t values (1)')\n"
    "con.execute('select sum(x) from t').fetchone()[0]",
    "import sqlite3\ncon = sqlite3.connect('file::memory:', uri=True)\n"
    "con.execute('select 41 + 1').fetchone()[0]",
])
def test_sqlite_in_memory_under_the_default_policy(code):
    assert run(RunPython(host_ns()), code) == plain(code)
