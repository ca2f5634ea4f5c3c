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
import types

from . import _engine
from ._engine import (CallInfo, DenyInfo, chk_dest, in_run, set_data,
                      should_export, srcfn, track_call)

__all__ = ["RunPython", "allow", "allow_imports", "AllowPolicy",
           "PosAllowPolicy", "PathWritePolicy", "OpenWritePolicy", "chk_dest",
           "set_data", "track_call", "find_var", "should_export", "srcfn",
           "default_ok_dests", "DenyInfo", "CallInfo", "UNSET"]


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


class AllowPolicy:
    """Base class for policies: ``policy(obj, args, kwargs, data)`` is called
    with the trusted call's object (``self`` of a method, else None), its
    positional and keyword arguments, and the run's data (which holds
    ``ok_dests``).  Refuse by raising ``PermissionError`` (or returning
    False); anything else allows."""

    def __call__(self, obj: Any, args: list, kwargs: dict, data: dict) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class PosAllowPolicy(AllowPolicy):
    """Allow when the path argument at position ``pos`` (or keyword ``kw``)
    lies inside ok_dests; buffers and file objects are not paths and pass."""

    def __init__(self, pos: int = 0, kw: str | None = None):
        self.pos, self.kw = pos, kw

    def target(self, args: list, kwargs: dict) -> Any:
        """The argument this policy checks (keyword first), or None."""
        if self.kw is not None and self.kw in kwargs:
            return kwargs[self.kw]
        return args[self.pos] if self.pos < len(args) else None

    def __call__(self, obj, args, kwargs, data):
        target = self.target(args, kwargs)
        if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__"):
            chk_dest(target, data)


class PathWritePolicy(AllowPolicy):
    """Allow a ``Path`` method when the path itself (``obj``), and the target
    argument if given by ``target_pos``/``target_kw``, lie inside ok_dests."""

    def __init__(self, target_pos: int | None = None,
                 target_kw: str | None = None):
        self.target_pos, self.target_kw = target_pos, target_kw

    def __call__(self, obj, args, kwargs, data):
        chk_dest(obj, data)
        if self.target_pos is not None and self.target_pos < len(args):
            chk_dest(args[self.target_pos], data)
        if self.target_kw is not None and self.target_kw in kwargs:
            chk_dest(kwargs[self.target_kw], data)


class OpenWritePolicy(AllowPolicy):
    """Allow ``open(file, mode)``-shaped calls that read; a mode that writes
    (w, a, x or +) needs the file inside ok_dests."""

    def __call__(self, obj, args, kwargs, data):
        mode = kwargs.get("mode", args[1] if len(args) > 1 else "r")
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            chk_dest(args[0] if args else kwargs.get("file"), data)


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

    # The engine entry points, held by the class: a cell can rebind names
    # in this module's namespace (vars(module)[...] = ...), but changing a
    # class attribute raises an audit event the engine refuses.
    _Runner = _engine.Runner
    _default_ok_dests = staticmethod(_engine.get_default_ok_dests)
    _load_entry_points = staticmethod(lambda: None)  # set below

    def __init__(self, g: dict | None = None, sentinel: str | None = None,
                 ok_dests: Any = UNSET, ban_imports: Any = None,
                 ban_defs: bool = False, yolo: bool = False,
                 pre_deny: Callable[[DenyInfo], bool | None] | None = None,
                 **data: Any):
        if g is None:
            g = _host_namespace(sentinel)
        cls = type(self)
        cls._load_entry_points()  # only the first call reads them
        if ok_dests is UNSET:
            ok_dests = cls._default_ok_dests()
        self._runner = cls._Runner(g, ok_dests, ban_imports, ban_defs, yolo,
                                   data, pre_deny)

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

    def __delattr__(self, name: str) -> None:
        if in_run():
            raise PermissionError(
                f"safepyrun refused to delete safepyrun.{name}: sandboxed "
                "code cannot change the sandbox")
        super().__delattr__(name)


sys.modules[__name__].__class__ = _SafepyrunModule


# ---- presets, tool description, IPython, user config (issue 3, items 6-9) ----
# Kept in their own modules; imported here so `from safepyrun import ...`
# finds them.  IPython, matplotlib and pandas are imported only when used.

from .presets import (LocalWritePolicy, allow_matplotlib, allow_pandas,
                      load_import_entry_points)
from .describe import DocDescriptor as _DocDescriptor, describe
from .ipython import (create_pyrun_magic, load_ipython_extension,
                      unload_ipython_extension)

__all__ += ["allow_matplotlib", "allow_pandas", "LocalWritePolicy",
            "describe", "create_pyrun_magic", "load_ipython_extension",
            "disallow"]

# RunPython.__doc__ (and python.__doc__) describe the live registry.
RunPython.__doc__ = _DocDescriptor()

# The safepyrun_import_allow entry points are read on the first RunPython().
RunPython._load_entry_points = staticmethod(load_import_entry_points)

# The user config runs last, after every default is registered.
from .config import load_config as _load_config  # noqa: E402
_load_config()
