"""The tool description an LLM sees: ``RunPython.__doc__`` (and
``python.__doc__``) is generated from the live allow registry, so it always
lists what the host has trusted."""
from __future__ import annotations

import sys
from typing import Any

__all__ = ["describe", "DocDescriptor"]

_INTRO = """\
Execute Python in the host's own process and namespace, returning the value \
of the last expression (or None).

What you can do: compute anything; import modules as usual (socket, ctypes, \
importlib and safepyrun are refused); use all builtins; read any file; define \
functions, classes and variables; use top-level `await`, `async for` and \
`async with`; call the host's functions and use its objects. print() output \
is shown.

What is refused unless a trusted tool below does it: writing files outside \
the allowed directories ({dests}), running programs (subprocess, os.system), \
network connections, starting threads, loading native libraries, changing \
sensitive environment variables, and changing the sandbox itself."""

_EXPORTS = """\
Names: new and changed top-level names are exported back to the host \
namespace, except names starting with `_` and except that a callable or module \
never replaces an existing name (names ending in `_` always export). \
Examples: `len([1,2,3])`; `df.shape`; `[x**2 for x in range(5)]`; \
`sorted(my_dict.items())`."""

_REFUSALS = """\
Refusals: a refused effect raises PermissionError, e.g. "safepyrun refused to \
run a program: ['ls'] (audit event 'subprocess.Popen'; call chain: \
<pyrun_0>:1 <module> -> ...)" or "Dest '/etc/x' not allowed; permitted: \
['/tmp']". Do not retry a refused action another way: use a trusted tool \
listed above, write inside the allowed directories, or ask the user."""


def _owner_name(owner: Any) -> str:
    if isinstance(owner, str):
        return owner
    mod = getattr(owner, "__module__", None)
    if isinstance(owner, type(sys)):
        return owner.__name__
    qual = getattr(owner, "__qualname__", None) or getattr(
        owner, "__name__", None)
    if qual is None:  # an instance
        cls = type(owner)
        return f"<{cls.__module__}.{cls.__qualname__} instance>"
    if mod and mod not in ("builtins", "__main__"):
        return f"{mod}.{qual}"
    return qual


def _entries_by_owner(entries: Any) -> list[tuple[str, list[str]]]:
    """Group allow_listing()'s (owner, name, policy label) entries by
    owner."""
    groups: dict[int, tuple[str, list[str]]] = {}
    order: list[int] = []
    for owner, name, pol in entries:
        key = id(owner)
        if key not in groups:
            try:
                label = _owner_name(owner)
            except Exception:
                label = type(owner).__name__
            groups[key] = (label, [])
            order.append(key)
        items = groups[key][1]
        if name is None:
            kind = "all of it" if isinstance(owner, (type, type(sys), str)) \
                else "callable"
            text = kind + (f" (checked by {pol})" if pol else "")
        else:
            text = name + (f" (checked by {pol})" if pol else "")
        if text not in items:
            items.append(text)
    return [groups[k] for k in order]


def describe(ok_dests: Any = None, runner: Any = None) -> str:
    """The description of the sandbox as the live registry stands.

    Works inside a run too (a cell reading ``python.__doc__``): it reads the
    registry through ``allow_listing()``, which names each policy by a
    string, never handing out the live policy objects."""
    pkg = sys.modules[__package__]
    engine = pkg._engine
    if runner is not None:
        ok_dests = runner.ok_dests
    elif ok_dests is None:
        ok_dests = engine.get_default_ok_dests()
    if ok_dests is None:
        dests = "write checks are off: writes are allowed anywhere"
    elif not ok_dests:
        dests = "none: no writes at all"
    else:
        dests = ", ".join(repr(str(d)) for d in ok_dests)
    parts = [_INTRO.format(dests=dests)]
    groups = _entries_by_owner(engine.allow_listing())
    if groups:
        lines = ["Trusted tools and methods (these may do what is otherwise "
                 "refused; a policy checks their arguments):"]
        for label, items in groups:
            lines.append(f"- {label}: " + ", ".join(items))
        parts.append("\n".join(lines))
    else:
        parts.append("Trusted tools and methods: none registered.")
    imports = engine.allowed_imports()
    if imports:
        parts.append("Modules that may be imported inside a run even though "
                     "their import has side effects: " + ", ".join(imports)
                     + ".")
    parts.append(_EXPORTS)
    parts.append(_REFUSALS)
    return "\n\n".join(parts)


class DocDescriptor:
    """Put on a class as ``__doc__``: ``Cls.__doc__`` and ``obj.__doc__``
    are generated on every access (instances describe their own
    ok_dests)."""

    __slots__ = ()

    def __get__(self, obj: Any, objtype: Any = None) -> str:
        try:
            runner_type = sys.modules[__package__]._engine.Runner
            if isinstance(obj, runner_type):
                return describe(runner=obj)
            return describe()
        except Exception as e:  # a description must never break help()
            return f"Run Python in a sandbox (description failed: {e!r})"
