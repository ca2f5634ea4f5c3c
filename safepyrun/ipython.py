"""IPython glue: the ``%%py`` / ``%py`` magics and the extension hooks.

    %load_ext safepyrun        # injects `pyrun` and `allow`, registers %%py

    %%py
    import json
    json.dumps({'a': 1})       # shown as the cell's output

    %%py --ok-dest out --timeout 10
    df.to_csv('out/d.csv')     # this cell may also write under ./out

    pyrun.ok_dests = ['out']   # the user (not a cell) changes the runner
    python = %py -o            # the runner the magic uses

How a ``%%py`` cell runs: the extension rewrites it, before IPython
compiles it, into one top-level ``await`` of the sandboxed cell, so it runs
on IPython's own async machinery (ipykernel's event loop, or the terminal's
loop runner) and its value is displayed by IPython's own rules (a trailing
``;`` hides it).  Where IPython cannot await (``%autoawait off``, a direct
``run_cell_magic`` call), the magic runs the cell on a fresh event loop --
in a worker thread if this thread's loop is busy.  Tracebacks start at the
cell.  IPython is imported only when these functions are called.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Awaitable
from typing import Any

from ._glue import forget_failed_imports, trim_to_cell

__all__ = ["create_pyrun_magic", "load_ipython_extension",
           "unload_ipython_extension", "run_sync", "run_cell"]


def run_sync(awaitable: Awaitable[Any]) -> Any:
    """Drive an awaitable to completion from synchronous code in this
    thread, on a fresh event loop (public asyncio API only).  If this
    thread's loop is already running (ipykernel, with ``%autoawait off``),
    the awaitable runs on a loop of its own in a worker thread and this
    thread waits: the sandbox's gate follows the run's context, not the
    thread."""
    import asyncio
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_new_loop(awaitable)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1, thread_name_prefix="safepyrun-cell") as ex:
        return ex.submit(_run_on_new_loop, awaitable).result()


def _run_on_new_loop(awaitable: Awaitable[Any]) -> Any:
    import asyncio
    loop = asyncio.new_event_loop()
    try:
        future = asyncio.ensure_future(awaitable, loop=loop)
        try:
            return loop.run_until_complete(future)
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


# ---- options on the magic's line -----------------------------------------------

def _usage_error(message: str) -> Exception:
    """IPython's UsageError (shown as one line, no traceback)."""
    try:
        from IPython.core.error import UsageError
    except ImportError:  # pragma: no cover - the magics need IPython
        return ValueError(message)
    return UsageError(message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # no SystemExit in a kernel
        raise _usage_error(f"%%py: {message}")


def _parse_line(line: str) -> argparse.Namespace:
    """``%%py`` options: ``--ok-dest DIR`` (repeatable: this cell may also
    write under DIR) and ``--timeout SECONDS`` (this cell's time limit)."""
    parser = _Parser(prog="%%py", add_help=False)
    parser.add_argument("--ok-dest", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=None)
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise _usage_error(f"%%py: {e}") from None
    return parser.parse_args(words)


def _start(pyrun: Any, code: str, opts: argparse.Namespace) -> Any:
    """The runner's awaitable for ``code`` under this cell's options.  A
    cell takes the runner's ok_dests when it is made, so the cell's own
    ``--ok-dest`` directories are set for that moment only."""
    kwargs = {}
    if opts.timeout is not None:
        kwargs["timeout"] = opts.timeout
    saved = pyrun.ok_dests
    if opts.ok_dest and saved is not None:
        pyrun.ok_dests = list(saved) + list(opts.ok_dest)
    try:
        try:
            return pyrun(code, **kwargs)
        except TypeError:
            if kwargs:
                raise _usage_error("%%py --timeout: this build of safepyrun "
                                   "has no time limit") from None
            raise
    finally:
        if pyrun.ok_dests != saved:
            pyrun.ok_dests = saved


def _transform(shell: Any, code: str) -> str:
    transform_cell = getattr(shell, "transform_cell", None)
    return transform_cell(code) if transform_cell is not None else code


async def run_cell(line: str, cell: str) -> Any:
    """What a rewritten ``%%py`` cell awaits: run ``cell`` in the sandbox
    with the options of ``line`` and return its value.  The exception of a
    failed cell is raised with a traceback that starts at the cell."""
    __tracebackhide__ = True  # IPython leaves this frame out
    from IPython import get_ipython
    shell = get_ipython()
    pyrun = _magic_runner(shell)
    if pyrun is None:
        raise RuntimeError("%%py: the safepyrun extension is not loaded "
                           "(%load_ext safepyrun)")
    # {var} and $var on the line, as IPython expands a magic's arguments
    # (depth=1: the notebook cell's frame, whose namespace is the user's).
    opts = _parse_line(shell.var_expand(line, depth=1) if line else line)
    awaitable = _start(pyrun, _transform(shell, cell), opts)
    before, guard = frozenset(sys.modules), _Guard(shell)
    try:
        return await awaitable
    except BaseException as e:
        forget_failed_imports(before)
        raise trim_to_cell(e)
    finally:
        guard.restore()


# IPython's input machinery: what these lists hold turns the *next* cell's
# text or syntax tree into code IPython runs unsandboxed, and event
# callbacks run as IPython's.  A cell can reach them (get_ipython()), so
# whatever a %%py cell changes in them is put back when it ends (_Guard).
_GUARDED_LISTS = (
    ("", "input_transformers_cleanup"), ("", "input_transformers_post"),
    ("", "ast_transformers"),
    ("input_transformer_manager", "cleanup_transforms"),
    ("input_transformer_manager", "line_transforms"),
    ("input_transformer_manager", "token_transformers"),
)


class _Guard:
    """A snapshot of the shell's input machinery (the lists above, the
    event callbacks) taken before a %%py cell; ``restore()`` puts back
    what the cell changed: rebound attributes, removed entries, and added
    entries other than plain host callables (``_engine.is_host_callable``)."""

    def __init__(self, shell: Any) -> None:
        self.items: list[tuple[Any, str, Any, list]] = []
        for owner_name, attr in _GUARDED_LISTS:
            owner = getattr(shell, owner_name, None) if owner_name else shell
            value = getattr(owner, attr, None)
            if owner is not None and isinstance(value, list):
                self.items.append((owner, attr, value, list(value)))
        events = getattr(getattr(shell, "events", None), "callbacks", None)
        self.events = events if isinstance(events, dict) else {}
        self.callbacks = {k: (v, list(v)) for k, v in self.events.items()
                          if isinstance(v, list)}

    @staticmethod
    def _put_back(lst: list, before: list) -> None:
        """``before``, then what was added that is plainly the host's
        (decided in C: ``_engine.is_host_callable``)."""
        from ._engine import is_host_callable
        if len(lst) == len(before) and all(
                a is b for a, b in zip(lst, before)):
            return
        kept = [x for x in list(lst)
                if not any(x is b for b in before) and is_host_callable(x)]
        lst[:] = before + kept

    def restore(self) -> None:
        for owner, attr, lst, before in self.items:
            if getattr(owner, attr, None) is not lst:
                setattr(owner, attr, lst)
            self._put_back(lst, before)
        for key in [k for k in self.events if k not in self.callbacks]:
            del self.events[key]
        for key, (lst, before) in self.callbacks.items():
            if self.events.get(key) is not lst:
                self.events[key] = lst
            self._put_back(lst, before)


def _magic_runner(shell: Any) -> Any:
    """The runner of the shell's registered ``%%py`` magic, read from the
    magic function's closure: the engine pins both the magic table's entry
    and that closure (_pin_magic), so no cell can slip another runner in
    -- nor anything that is not an engine Runner."""
    from ._engine import Runner
    for table in _magic_tables(shell):
        fn = table.get("py")
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, Runner):
                return value
    return None


def _quiet(cell: str) -> bool:
    """IPython's own rule: is the last token of the cell a ';'?"""
    try:
        from IPython.core.displayhook import DisplayHook
        return bool(DisplayHook.semicolon_at_end_of_expression(cell))
    except Exception:  # not tokenizable (a syntax error): the cell will say
        return False


def _is_py_magic(first: str, prefix: str) -> bool:
    return first.startswith(prefix) and (
        len(first) == len(prefix) or first[len(prefix)].isspace())


def _make_transformer(shell: Any) -> Any:
    """An input transformer (IPython's ``input_transformers_cleanup``, run
    before its own magic handling) rewriting a ``%%py`` cell, or a cell
    that is one ``%py CODE`` line, into ``await run_cell(line, code)``, so
    that IPython's async machinery runs it.  Left alone (the magic runs it)
    when IPython would not await it."""

    def transform(lines: list[str]) -> list[str]:
        if not lines or not getattr(shell, "autoawait", False):
            return lines
        if getattr(getattr(shell, "loop_runner", None), "__name__",
                   "") == "_pseudo_sync_runner":
            return lines
        first = lines[0].rstrip("\n")
        if _is_py_magic(first, "%%py"):
            line, cell = first[4:].strip(), "".join(lines[1:])
        elif (_is_py_magic(first, "%py") and len(lines) == 1
              and first[3:].strip() and not first[3:].split()[0] == "-o"):
            line, cell = "", first[3:].strip() + "\n"
        else:
            return lines
        end = ";" if _quiet(cell) else ""
        return ["await __import__('safepyrun.ipython').ipython.run_cell("
                f"{line!r}, {cell!r}){end}\n"]

    transform.safepyrun = True  # marks ours, for unload
    return transform


def create_pyrun_magic(shell: Any = None, pyrun: Any = None) -> Any:
    """Register ``%%py`` (run the cell in the sandbox; its last value is
    displayed) and ``%py`` (``%py -o`` returns the runner; ``%py code``
    runs one line) on ``shell`` (default: the running IPython).  Cells go
    through IPython's ``transform_cell`` first, so ``%magics`` and ``!cmd``
    lines work as in IPython -- and what they do is gated like any other
    code (``!ls`` runs a program: refused).  Returns the runner."""
    if shell is None:
        from IPython import get_ipython
        shell = get_ipython()
        if shell is None:
            raise RuntimeError("create_pyrun_magic(): no IPython shell is "
                               "running; pass shell=")
    if pyrun is None:
        from . import RunPython
        pyrun = RunPython(shell.user_ns)

    def py(line: str, cell: str | None = None):
        __tracebackhide__ = True  # IPython leaves this frame out
        if cell is None:  # %py: -o, or one line of code (no options)
            if line.split()[:1] == ["-o"]:
                return pyrun
            if not line.strip():
                return None
            cell, opts = line, _parse_line("")
        else:
            opts = _parse_line(line)
        awaitable = _start(pyrun, _transform(shell, cell), opts)
        before, guard = frozenset(sys.modules), _Guard(shell)
        try:
            result = run_sync(awaitable)
        except BaseException as e:
            forget_failed_imports(before)
            raise trim_to_cell(e)
        finally:
            guard.restore()
        return None if _quiet(cell) else result

    py.__doc__ = ("Run the cell in the safepyrun sandbox (%%py [--ok-dest "
                  "DIR] [--timeout S]), or one line (%py code); `%py -o` "
                  "returns the runner.")
    shell.register_magic_function(py, magic_kind="line_cell", magic_name="py")
    _pin_magic(shell, py)
    transformers = getattr(shell, "input_transformers_cleanup", None)
    if isinstance(transformers, list):
        transformers[:] = [t for t in transformers
                           if not getattr(t, "safepyrun", False)]
        transformers.append(_make_transformer(shell))
    return pyrun


def _magic_tables(shell: Any) -> list[dict]:
    """IPython's line and cell magic tables (empty if it has none)."""
    magics = getattr(getattr(shell, "magics_manager", None), "magics", None)
    if not isinstance(magics, dict):
        return []
    return [t for t in (magics.get("line"), magics.get("cell"))
            if isinstance(t, dict)]


def _pin_magic(shell: Any, py: Any) -> None:
    """A cell can reach the magic (get_ipython().magics_manager): the
    engine pins the function's closure (the runner it calls) and its
    entries in the magic tables, and puts them back if a cell rebinds
    them."""
    from ._engine import shell_pin
    shell_pin(py)
    for table in _magic_tables(shell):
        if table.get("py") is not None:
            shell_pin(table, "py")


def _unpin_magic(shell: Any) -> None:
    from ._engine import shell_unpin
    for table in _magic_tables(shell):
        fn = table.get("py")
        if fn is not None:
            shell_unpin(table, "py")
            if callable(fn) and hasattr(fn, "__code__"):
                shell_unpin(fn)


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext safepyrun``: register the magics and put ``pyrun`` (the
    runner) and ``allow`` into the user namespace.  A cell cannot replace
    these names: existing callables are never overwritten by a cell's
    exports."""
    from . import allow
    pyrun = create_pyrun_magic(ip)
    ip.user_ns["pyrun"] = pyrun
    ip.user_ns["allow"] = allow
    # Hidden from %who, as IPython does for its own injected names.
    hidden = getattr(ip, "user_ns_hidden", None)
    if isinstance(hidden, dict):
        hidden.update(pyrun=pyrun, allow=allow)


def unload_ipython_extension(ip: Any) -> None:
    _unpin_magic(ip)
    magics = getattr(getattr(ip, "magics_manager", None), "magics", None)
    if magics:
        magics.get("line", {}).pop("py", None)
        magics.get("cell", {}).pop("py", None)
    transformers = getattr(ip, "input_transformers_cleanup", None)
    if isinstance(transformers, list):
        transformers[:] = [t for t in transformers
                           if not getattr(t, "safepyrun", False)]
    for name in ("pyrun", "allow"):
        ip.user_ns.pop(name, None)
