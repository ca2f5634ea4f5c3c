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

#: The package's version (pyproject.toml reads it from here).
__version__ = "0.1.0"

import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

from . import _engine
from . import report as _report
from .report import Display, RunEvent, RunResult
from ._engine import (AllowPolicy, CallInfo, DenyInfo, OpenWritePolicy,
                      PathWritePolicy, PosAllowPolicy, RawDenyInfo, chk_dest,
                      in_run,
                      set_data, should_export, srcfn, track_call)

__all__ = ["RunPython", "allow", "allow_imports", "AllowPolicy",
           "PosAllowPolicy", "PathWritePolicy", "OpenWritePolicy", "chk_dest",
           "set_data", "track_call", "find_var", "should_export", "srcfn",
           "default_ok_dests", "DenyInfo", "CallInfo", "RawDenyInfo", "UNSET",
           "RunResult", "RunEvent", "Display"]


class _Unset:
    """Marker for "argument not given" (ok_dests=None means no write checks)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def find_var(var: str) -> Any:
    """Return the value of ``var`` from the nearest frame on the call stack
    whose globals define it; raise ``NameError`` if none does."""
    frame = sys._getframe(1)
    while frame is not None:
        if var in frame.f_globals:
            return frame.f_globals[var]
        frame = frame.f_back
    raise NameError(f"{var!r} is not defined in any calling frame")


# ---- trust ------------------------------------------------------------------

def allow(*items: Any, allow_policy: Callable | None = None) -> Any:
    """Trust callables: effects that would be refused are permitted while a
    trusted call is active, optionally only when ``allow_policy`` (or a
    per-name policy) accepts the call's real arguments.

    Items may be a function, a method (``Cls.meth``: any instance), a bound
    method or callable instance (that object only), a class or module (all
    of it), a native function, or a dict
    ``{module_or_class: [name, (name, policy), ...] or ...}``; a
    ``'package.*'`` key with ``...`` trusts a package's code.  Works as a
    decorator (``@allow`` or ``@allow(allow_policy=p)``), returning the
    function.  Refused (``PermissionError``) inside a sandboxed run.
    """
    if not items:
        return lambda fn: allow(fn, allow_policy=allow_policy)
    for item in items:
        if isinstance(item, dict):
            for owner, spec in item.items():
                _allow_spec(owner, spec, allow_policy)
        elif hasattr(item, "__allow__") and not isinstance(item, type):
            allow(*item.__allow__(), allow_policy=allow_policy)
        elif isinstance(item, _engine.Tracked):
            _engine.allow_register(item.__wrapped__, None, allow_policy)
        else:
            _engine.allow_register(item, None, allow_policy)
    return items[0]


def _allow_spec(owner: Any, spec: Any, allow_policy: Callable | None) -> None:
    """Register one ``owner: spec`` pair of allow()'s dict form."""
    if spec is ...:
        _engine.allow_register(owner, None, allow_policy)
        return
    if callable(spec) and not isinstance(spec, type):
        # {fn: policy}, as the published package writes
        # allow({httpx.get: chk_url}): the owner trusted under that policy.
        _engine.allow_register(owner, None, spec)
        return
    if isinstance(spec, (str, tuple)):
        spec = [spec]
    for entry in spec:
        if entry is ...:
            _engine.allow_register(owner, None, allow_policy)
        elif isinstance(entry, str):
            _engine.allow_register(owner, entry, allow_policy)
        elif isinstance(entry, tuple) and len(entry) == 2:
            name, policy = entry
            _engine.allow_register(owner, None if name is ... else name, policy)
        else:
            raise TypeError(f"allow(): expected a name, (name, policy) or ..., "
                            f"not {entry!r}")


def disallow(owner: Any, name: str | None = None,
             policy: Callable | None = None) -> None:
    """Remove one registration made by allow()."""
    _engine.allow_remove(owner, name, policy)


def allow_imports(*modules: str) -> None:
    """Trust the import-time code of these modules (and their submodules)
    while they initialise inside a run: font caches, optional-dependency
    probes and similar harmless side effects."""
    for name in modules:
        _engine.allow_import(name)


# The published package keeps these in a set (``allow_imports.add('pkg')``);
# both spellings work: ``allow_imports('pkg')`` and ``.add``/``.update``.
allow_imports.add = allow_imports
allow_imports.update = lambda names: allow_imports(*names)


# The policies -- AllowPolicy (the base for your own), PosAllowPolicy,
# PathWritePolicy, OpenWritePolicy (and presets' LocalWritePolicy) -- are
# immutable C types of the engine: their checks call the engine's write
# check directly, so no name a cell can rebind takes part in them.


# ---- running cells ------------------------------------------------------------

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


class RunPython(_engine.Runner):
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

    # A RunPython *is* the engine's runner: its namespace and policy live in
    # the C object, there is no instance dict to swap a runner into, and
    # ``python(code)`` calls straight into C.  The class is made immutable
    # at the end of the import (see _engine.shell_snapshot), so its
    # attributes -- the engine entry points below included -- cannot be
    # reassigned, nor an instance's __class__.
    __slots__ = ()

    _default_ok_dests = staticmethod(_engine.get_default_ok_dests)
    _host_namespace = staticmethod(_host_namespace)
    _load_entry_points = staticmethod(lambda: None)  # set below

    def __new__(cls, g: dict | None = None, sentinel: str | None = None,
                ok_dests: Any = UNSET, ban_imports: Any = None,
                ban_defs: bool = False, yolo: bool = False,
                pre_deny: Callable[[DenyInfo], bool | None] | None = None,
                echo: bool = False, max_output: int | None = None,
                max_memory: int | None = None,
                timeout: float | None = None,
                **data: Any) -> RunPython:
        """A runner for ``g`` (default: the IPython user namespace, else the
        caller's namespace holding ``sentinel``, else ``__main__``'s).
        ``ok_dests``: where cells may write (default:
        ``safepyrun.default_ok_dests``; None: writes are not checked).
        ``echo``: ``python.run()`` also shows the output it captures on the
        host's streams (``python(code)`` always shows it).  ``max_output``:
        characters of each stream a ``python.run()`` report keeps.
        ``max_memory``: bytes a cell may allocate while it runs (None: no
        cap); past it the cell gets ``MemoryError`` and what it built is
        freed.  ``await python(code, max_memory=...)`` overrides it per call.
        ``timeout``: each cell's time limit in seconds (None: none); past
        it the cell gets ``TimeoutError`` raised inside it, and
        ``await python(code, timeout=s)`` sets it for one cell.
        Other keywords are data handed to policies.  Refused inside a run."""
        if g is None:
            g = cls._host_namespace(sentinel)
        if ok_dests is UNSET:
            ok_dests = cls._default_ok_dests()
        self = super().__new__(cls, g, ok_dests, ban_imports, ban_defs, yolo,
                               data, pre_deny, echo=echo,
                               max_output=max_output,
                               max_memory=max_memory, timeout=timeout)
        cls._load_entry_points()  # only the first call reads them
        return self

    async def run(self, code: str, *, echo: bool | None = None,
                  timeout: float | None = None, **limits: Any) -> RunResult:
        """Run ``code`` like ``await python(code)`` and report what it did:
        a ``RunResult`` with its value, captured stdout/stderr, error and
        traceback, the effects the sandbox judged, the time it took and the
        figures it drew.  Never raises for the cell's own errors (a
        refusal, a syntax error, any exception); misuse of the API (code
        that is not a str, a run started from a cell) raises.  ``echo``
        (default: the runner's) also shows the output on the host's
        streams as it is written.  ``timeout`` (seconds) and ``max_memory``
        (bytes, or None for no cap) replace the runner's limits for this
        run."""
        before = _report.figures_before()
        _report.hook_ipython_display()
        raw = await self.report(code, echo, timeout=timeout, **limits)
        try:
            displays = _report.render_figures(before)
        except Exception as e:  # the report still comes back
            displays = (_report.Display(
                "text/plain", f"figures could not be rendered: {e!r}"),)
        return _report.RunResult.from_engine(raw, displays)

    def __repr__(self) -> str:
        return f"RunPython(ok_dests={self.ok_dests!r})"


# ---- the module itself --------------------------------------------------------

class _SafepyrunModule(types.ModuleType):
    """The safepyrun module.  ``default_ok_dests`` is stored in the engine;
    assigning module attributes from sandboxed code is refused, so a cell
    cannot swap the functions the host calls (the engine never reads its
    policy from these attributes in any case)."""

    @property
    def default_ok_dests(self) -> list[str] | None:
        """Where cells may write when RunPython gets no ok_dests (default:
        nowhere)."""
        return _engine.get_default_ok_dests()

    @default_ok_dests.setter
    def default_ok_dests(self, value: Any) -> None:
        _engine.set_default_ok_dests(value)

    def __setattr__(self, name: str, value: Any) -> None:
        if in_run():
            raise PermissionError(
                f"safepyrun refused to set safepyrun.{name}: sandboxed code "
                "cannot change the sandbox")
        super().__setattr__(name, value)
        # The host's own change (a submodule import): the engine records it.
        _engine.shell_refresh(self, name)

    def __delattr__(self, name: str) -> None:
        if in_run():
            raise PermissionError(
                f"safepyrun refused to delete safepyrun.{name}: sandboxed "
                "code cannot change the sandbox")
        super().__delattr__(name)
        _engine.shell_refresh(self, name)


sys.modules[__name__].__class__ = _SafepyrunModule


# ---- presets, tool description, IPython, user config (issue 3, items 6-9) ----
# Kept in their own modules; imported here so `from safepyrun import ...`
# finds them.  IPython, matplotlib and pandas are imported only when used.

from ._engine import LocalWritePolicy  # noqa: E402
from .presets import (allow_matplotlib, allow_pandas,  # noqa: E402
                      load_import_entry_points)
from .describe import DocDescriptor as _DocDescriptor, describe, tool_spec
from .ipython import (create_pyrun_magic, load_ipython_extension,
                      unload_ipython_extension)

__all__ += ["allow_matplotlib", "allow_pandas", "LocalWritePolicy",
            "describe", "tool_spec", "create_pyrun_magic", "load_ipython_extension",
            "disallow"]

# RunPython.__doc__ (and python.__doc__) describe the live registry.
RunPython.__doc__ = _DocDescriptor()

# The safepyrun_import_allow entry points are read on the first RunPython().
RunPython._load_entry_points = staticmethod(load_import_entry_points)

# The user config runs last, after every default is registered.
from .config import load_config as _load_config  # noqa: E402

# The shell's names, classes and functions are pinned (and its classes made
# immutable): the engine puts back whatever a cell rebinds.  Taken again
# after the config, which may add names.
_engine.shell_snapshot()
_load_config()
_engine.shell_snapshot()
