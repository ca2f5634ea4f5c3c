"""IPython glue: the ``%%py`` / ``%py`` magics and the extension hooks.

    %load_ext safepyrun        # injects `pyrun` and `allow`, registers %%py

    %%py
    import json
    json.dumps({'a': 1})       # shown as the cell's output

    python = %py -o            # the runner the magic uses

IPython is imported only when these functions are called.
"""
from __future__ import annotations

import sys
from collections.abc import Awaitable
from typing import Any

__all__ = ["create_pyrun_magic", "load_ipython_extension",
           "unload_ipython_extension", "run_sync"]


def run_sync(awaitable: Awaitable[Any]) -> Any:
    """Drive an awaitable to completion from synchronous code in this
    thread.  With no event loop running (a terminal IPython, a script) this
    is ``loop.run_until_complete`` on a fresh loop; when a loop is already
    running in this thread (ipykernel runs cells inside one), a fresh loop
    runs nested in the same thread and context -- the sandbox's gate is
    context-scoped, so the cell must not move to another thread."""
    import asyncio
    from asyncio import events
    outer = events._get_running_loop()
    loop = asyncio.new_event_loop()
    events._set_running_loop(None)
    try:
        try:
            return loop.run_until_complete(awaitable)
        finally:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
        events._set_running_loop(outer)


def _cancel_leftovers(loop: Any) -> None:
    import asyncio
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(
            asyncio.gather(*pending, return_exceptions=True))


def _quiet(cell: str) -> bool:
    """Whether the cell's last line ends with ';' (IPython hides the value)."""
    for line in reversed(cell.rstrip().splitlines()):
        code = line.split("#", 1)[0].rstrip()
        if code:
            return code.endswith(";")
    return False


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

    def transform(code: str) -> str:
        transform_cell = getattr(shell, "transform_cell", None)
        return transform_cell(code) if transform_cell is not None else code

    def py(line: str, cell: str | None = None):
        if cell is None:
            words = line.split()
            if words[:1] == ["-o"]:
                return pyrun
            if not line.strip():
                return None
            return run_sync(pyrun(transform(line)))
        result = run_sync(pyrun(transform(cell)))
        return None if _quiet(cell) else result

    py.__doc__ = ("Run the cell in the safepyrun sandbox (%%py), or one line "
                  "(%py code); `%py -o` returns the runner.")
    shell.register_magic_function(py, magic_kind="line_cell", magic_name="py")
    _pin_magic(shell, py)
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
    for name in ("pyrun", "allow"):
        ip.user_ns.pop(name, None)
