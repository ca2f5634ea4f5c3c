"""Errors: refusal messages, unwrapping, traceback trimming, and bad input
(each followed by a check that the host and the runner keep working)."""
import asyncio
import os
import re
import subprocess
import sys
import traceback

import pytest

from conftest import host_ns, refused, run
from safepyrun import RunPython


def still_works(py):
    assert run(py, "1 + 1") == 2
    with pytest.raises(PermissionError):
        run(py, "os.system('true')")


# --- refusal messages ------------------------------------------------------

def test_refusal_message_fragments(py):
    msg = refused(py, "os.system('echo hi')", "os.system", "'echo hi'",
                  "run a shell command")
    assert re.search(r"call chain: <pyrun_\d>:1 <module>", msg), msg


def test_refusal_chain_shows_cell_function_and_line(py):
    msg = refused(py, "x = 1\ndef helper():\n    os.system('echo hi')\nhelper()",
                  "os.system")
    assert re.search(r"<pyrun_\d>:4 <module> -> <pyrun_\d>:3 helper", msg), msg


def test_refusal_is_permission_error_subclass_of_oserror(py):
    with pytest.raises(OSError):
        run(py, "os.system('true')")


# --- unwrapping -------------------------------------------------------------

def test_wrapped_by_raise_from_is_unwrapped(py):
    code = ("class LibError(Exception): pass\n"
            "try:\n    os.system('true')\n"
            "except PermissionError as e:\n    raise LibError('wrapped') from e")
    refused(py, code, "os.system")


def test_wrapped_by_implicit_context_is_unwrapped(py):
    code = ("try:\n    os.system('true')\n"
            "except PermissionError:\n    raise RuntimeError('during handling')")
    refused(py, code, "os.system")


def test_wrapped_in_exception_group_is_unwrapped(py):
    code = ("try:\n    os.system('true')\n"
            "except PermissionError as e:\n"
            "    raise ExceptionGroup('many', [ValueError('x'), e])")
    refused(py, code, "os.system")


def test_nested_exception_group_is_unwrapped(py):
    code = ("try:\n    os.system('true')\n"
            "except PermissionError as e:\n"
            "    inner = ExceptionGroup('inner', [e])\n"
            "    raise ExceptionGroup('outer', [KeyError('k'), inner])")
    refused(py, code, "os.system")


def test_cells_own_permission_error_is_not_a_refusal(py):
    # A PermissionError the cell raises itself passes through unchanged.
    with pytest.raises(PermissionError, match="^my own$"):
        run(py, "raise PermissionError('my own')")


def test_other_errors_pass_through(py):
    with pytest.raises(KeyError):
        run(py, "{}['missing']")
    with pytest.raises(RuntimeError, match="plain"):
        run(py, "raise RuntimeError('plain') from ValueError('x')")


def test_swallowed_refusal_lets_cell_continue(py):
    code = ("try:\n    os.system('true')\n"
            "except PermissionError as e:\n    msg = str(e)\n"
            "'handled:' + str('safepyrun refused' in msg)")
    assert run(py, code) == "handled:True"


# --- tracebacks ---------------------------------------------------------------

def caught(py, code):
    """The exception `await py(code)` raises, caught right at the await, and
    the traceback entries below the awaiting frame."""
    async def awaiting_frame():
        try:
            await py(code)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            return e
        raise AssertionError("cell did not fail")

    exc = asyncio.run(awaiting_frame())
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames[0].name == "awaiting_frame", frames
    return exc, frames[1:]


def test_traceback_starts_at_cell(py):
    exc, frames = caught(py, "a = 1\nb = 0\na / b")
    assert isinstance(exc, ZeroDivisionError)
    assert len(frames) == 1, frames
    assert re.fullmatch(r"<pyrun_\d>", frames[0].filename), frames
    assert frames[0].lineno == 3
    assert frames[0].line == "a / b"


def test_traceback_shows_cell_function_lines(py):
    exc, frames = caught(py, "def inner():\n    raise ValueError('deep')\n\ninner()")
    assert isinstance(exc, ValueError)
    assert all(re.fullmatch(r"<pyrun_\d>", f.filename) for f in frames), frames
    assert [(f.lineno, f.line) for f in frames] == [
        (4, "inner()"), (2, "raise ValueError('deep')")]


def test_formatted_traceback_has_no_engine_frames(py):
    exc, frames = caught(py, "x = 1\nundefined_name")
    assert isinstance(exc, NameError)
    text = "".join(traceback.format_exception(exc))
    assert "undefined_name" in text
    assert "safepyrun" not in text.replace("awaiting_frame", "")


def test_traceback_of_refusal_starts_at_cell(py):
    exc, frames = caught(py, "x = 1\nos.system('true')")
    assert isinstance(exc, PermissionError)
    assert re.fullmatch(r"<pyrun_\d>", frames[0].filename), frames
    assert frames[0].lineno == 2
    assert frames[0].line == "os.system('true')"


def test_traceback_of_unwrapped_refusal_starts_at_cell(py):
    code = ("try:\n    os.system('true')\n"
            "except PermissionError as e:\n    raise KeyError('w') from e")
    exc, frames = caught(py, code)
    assert isinstance(exc, PermissionError)
    assert re.fullmatch(r"<pyrun_\d>", frames[0].filename), frames
    assert frames[0].lineno == 2


# --- bad input ------------------------------------------------------------------

@pytest.mark.parametrize("code", [b"1+1", 42, None, ["1"]])
def test_non_string_code(py, code):
    with pytest.raises(TypeError):
        run(py, code)
    still_works(py)


def test_syntax_error_line_and_filename(py):
    with pytest.raises(SyntaxError) as info:
        run(py, "x = 1\ny = 2\nz = (3 +\n")
    err = info.value
    assert re.fullmatch(r"<pyrun_\d>", err.filename), err.filename
    assert err.lineno == 3
    still_works(py)


def test_syntax_error_on_later_line(py):
    with pytest.raises(SyntaxError) as info:
        run(py, "a = 1\n\n\ndef f(:\n    pass\n")
    assert info.value.lineno == 4
    assert re.fullmatch(r"<pyrun_\d>", info.value.filename)


def test_indentation_error(py):
    with pytest.raises(IndentationError) as info:
        run(py, "if True:\nx = 1\n")
    assert info.value.lineno == 2


def test_syntax_error_runs_nothing(py, g):
    with pytest.raises(SyntaxError):
        run(py, "x_ = 1\n)")
    assert "x_" not in g


def test_await_outside_async_is_ok_at_top_level_only(py):
    with pytest.raises(SyntaxError):
        run(py, "def f():\n    await g()\n")


def test_nul_bytes(py, g):
    with pytest.raises(ValueError):
        run(py, "x_ = 1\n\x00\n")
    with pytest.raises(ValueError):
        run(py, "s = 'a\x00b'")
    assert "x_" not in g
    still_works(py)


def test_escaped_nul_in_string_is_fine(py):
    assert run(py, "'a\\x00b'") == "a\x00b"


def test_10mb_string_literal_cell(py):
    code = "s = '" + "a" * 10_000_000 + "'\nlen(s)"
    assert run(py, code) == 10_000_000
    py.g.pop("s", None)
    still_works(py)


def test_10mb_comment_cell(py):
    line = "# " + "c" * 98 + "\n"
    code = line * (10_000_000 // len(line)) + "'end'"
    assert len(code) >= 9_990_000
    assert run(py, code) == "end"
    still_works(py)


def test_10mb_cell_of_100k_statements(py):
    line = "x = '" + "a" * 100 + "'\n"
    code = line * (10_000_000 // len(line)) + "len(x)"
    assert run(py, code) == 100
    still_works(py)


@pytest.mark.slow
def test_10mb_cell_of_tiny_statements(py):
    code = "x = 1\n" * (10_000_000 // 6) + "x"
    try:
        assert run(py, code) == 1
    except (MemoryError, RecursionError, SyntaxError):
        pass  # a clean error is acceptable
    still_works(py)


@pytest.mark.parametrize("code", [
    "(" * 1000 + "1" + ")" * 1000,
    "[" * 1000 + "]" * 1000,
    "-" * 1000 + "1",
    "not " * 1000 + "True",
    "x = 1\nx" + ".real" * 1000,
    "1" + " + 1" * 1000,
    "".join(" " * i + "if True:\n" for i in range(1000)) + " " * 1000 + "pass\n",
    "def f():\n" + "".join("    " * (i + 1) + "def f():\n" for i in range(999))
        + "    " * 1000 + "pass\n",
])
def test_deep_nesting_is_clean(py, code):
    try:
        run(py, code)
    except (SyntaxError, RecursionError, MemoryError):
        pass
    still_works(py)


def test_deep_runtime_nesting(py):
    # A 1000-deep data structure built at run time.
    assert run(py, "e = []\nfor _ in range(1000): e = [e]\nd = 0\n"
                   "while e: e = e[0]; d += 1\nd") == 1000
    still_works(py)


def test_infinite_recursion(py):
    limit = sys.getrecursionlimit()
    with pytest.raises(RecursionError):
        run(py, "def f(): return f()\nf()")
    assert sys.getrecursionlimit() == limit
    still_works(py)


def test_infinite_recursion_in_method_then_refusal_still_works(py):
    with pytest.raises(RecursionError):
        run(py, "class R:\n    def __repr__(self): return repr(self)\nrepr(R())")
    # The gate's slow path (building a call chain) still works afterwards.
    still_works(py)


def test_refusal_at_recursion_depth(py, marker):
    code = (f"def f(n):\n    if n == 0:\n        os.system('touch {marker}')\n"
            "    return f(n - 1)\nf(400)")
    with pytest.raises((PermissionError, RecursionError)):
        run(py, code)
    assert not marker.exists()
    still_works(py)


@pytest.mark.parametrize("bad", ["/tmp", b"/tmp", 5, [1], ["/tmp", None],
                                 [["/tmp"]], {"/tmp": 1}.values()])
def test_bad_ok_dests(bad):
    with pytest.raises(TypeError):
        RunPython(host_ns(), ok_dests=bad)


def test_runner_usable_after_many_errors(py):
    for code in ["1/0", "os.system('x')", "def (", "import socket",
                 "raise SystemExit(3)", "open('/nonexistent/x')"]:
        with pytest.raises(BaseException):
            run(py, code)
    still_works(py)


@pytest.mark.parametrize("code", ["raise SystemExit(3)", "import sys; sys.exit(3)",
                                  "exit(3)", "quit(3)"])
def test_system_exit_in_cell_does_not_end_the_host(py, code):
    """A cell cannot end the host process: SystemExit becomes a refusal
    whose cause is the SystemExit (the CLI takes its code)."""
    with pytest.raises(PermissionError, match="exit the host process") as info:
        run(py, code)
    assert isinstance(info.value.__cause__, SystemExit)
    assert info.value.__cause__.code == 3
    still_works(py)


def test_cli_script_exit_code(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import sys\nsys.exit(4)\n")
    proc = subprocess.run([sys.executable, "-m", "safepyrun.cli", str(script)],
                          capture_output=True, text=True,
                          env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path)))
    assert proc.returncode == 4, proc.stderr


def test_keyboard_interrupt_in_cell_propagates(py):
    with pytest.raises(KeyboardInterrupt):
        run(py, "raise KeyboardInterrupt")
    still_works(py)


def test_cancelled_cell_leaves_gate_closed_for_host(tmp_path):
    async def main():
        py = RunPython(host_ns())
        task = asyncio.ensure_future(py("import asyncio\nawait asyncio.sleep(10)"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (tmp_path / "after-cancel.txt").write_text("ok")
        assert await py("2 + 2") == 4

    asyncio.run(main())
    assert (tmp_path / "after-cancel.txt").exists()
