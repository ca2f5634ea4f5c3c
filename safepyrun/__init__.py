"""safepyrun: run LLM-written Python in your own process, with its dangerous
side effects refused.

The enforcement engine is the C extension ``safepyrun._engine`` (an audit
hook, the event rules, write-destination checks and the cell runner).  This
module only gives it a Pythonic face::

    from safepyrun import RunPython
    python = RunPython(ok_dests=['/tmp/out'])
    await python("import json; json.dumps({'a': 1})")

A cell may compute anything, read any file and call host functions; what it
may not do (unless the effect is allowed) is write outside ``ok_dests``, run
programs, open network connections, start threads, load native libraries,
change sensitive environment variables or switch the sandbox off.  A refusal
is a ``PermissionError`` that says what was refused and why.
"""
from __future__ import annotations

import sys
from typing import Any, Awaitable

from . import _engine
from ._engine import should_export, srcfn

__all__ = ["RunPython", "find_var", "should_export", "srcfn",
           "default_ok_dests", "UNSET"]


class _Unset:
    """Marker for "argument not given" (ok_dests=None means no write checks)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()

#: Where cells may write when RunPython is given no ok_dests: nowhere.
default_ok_dests: list[str] = []


def find_var(var: str) -> Any:
    """Return the value of ``var`` from the nearest frame on the call stack
    whose globals define it; raise ``NameError`` if none does."""
    frame = sys._getframe(1)
    while frame is not None:
        if var in frame.f_globals:
            return frame.f_globals[var]
        frame = frame.f_back
    raise NameError(f"{var!r} is not defined in any calling frame")


def _host_namespace(sentinel: str | None) -> dict:
    """The namespace cells run in when RunPython gets no ``g``: IPython's
    user namespace, else the globals of the nearest caller defining
    ``sentinel``, else ``__main__``'s globals."""
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        shell = ipython.get_ipython()
        if shell is not None:
            return shell.user_ns
    if sentinel is not None:
        frame = sys._getframe(2)
        while frame is not None:
            if sentinel in frame.f_globals:
                return frame.f_globals
            frame = frame.f_back
    return sys.modules["__main__"].__dict__


class RunPython:
    """Execute Python in the host's namespace, returning the last expression.

    Imports work as usual and all builtins are available.  Cells may define
    functions, classes and variables; new names are exported back to the
    host namespace unless they start with ``_`` or would shadow an existing
    callable or module (names ending in ``_`` always export).  Reading files
    and computing are free; writes outside the allowed directories, running
    programs, network connections, threads and native libraries raise
    ``PermissionError``.  Examples: ``len([1,2,3])``; ``df.shape``;
    ``[x**2 for x in range(5)]``; ``sorted(my_dict.items())``.
    """

    def __init__(self, g: dict | None = None, sentinel: str | None = None,
                 ok_dests: Any = UNSET, ban_imports: Any = None,
                 ban_defs: bool = False, yolo: bool = False, **data: Any):
        if g is None:
            g = _host_namespace(sentinel)
        if ok_dests is UNSET:
            ok_dests = list(default_ok_dests)
        self._runner = _engine.Runner(g, ok_dests, ban_imports, ban_defs,
                                      yolo, data)

    @property
    def g(self) -> dict:
        """The host namespace cells run in."""
        return self._runner.g

    @property
    def ok_dests(self) -> tuple[str, ...] | None:
        """Where cells may write (None: writes are not checked)."""
        return self._runner.ok_dests

    def __call__(self, code: str) -> Awaitable[Any]:
        """Run ``code``: ``await python(code)`` returns the value of its last
        expression (or None).

        The awaitable is the engine's own (a coroutine-compatible object with
        send/throw/close, so ``asyncio.create_task`` accepts it); awaiting it
        directly keeps the sandbox's machinery out of tracebacks."""
        return self._runner.run(code)

    def __repr__(self) -> str:
        return f"RunPython(ok_dests={self.ok_dests!r})"
