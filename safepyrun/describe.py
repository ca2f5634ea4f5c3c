"""The tool description an LLM sees: ``RunPython.__doc__`` (and
``python.__doc__``) is generated from the live allow registry and the
runner's own settings, so it always says what this runner will do.

``tool_spec(python)`` returns the same text as a tool specification (name,
description, JSON schema of the input) for agent frameworks that want one.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any

__all__ = ["describe", "tool_spec", "DocDescriptor"]

_INTRO = """\
Execute Python in the host's own process and namespace, returning the value \
of the last expression (or None). The namespace persists across calls, as in \
a notebook.

What you can do: compute anything; import modules as usual{banned}; use all \
builtins; read any file; {defs}use top-level `await`, `async for` and \
`async with`; call the host's functions and use its objects. {output}"""

_REFUSED = """\
What is refused unless a trusted tool below does it: writing files \
{dests}, running programs (subprocess, os.system), network connections, \
starting threads, loading native libraries, changing sensitive environment \
variables, and changing the sandbox itself."""

_YOLO = """\
This runner has no sandbox (yolo=True): nothing is refused, writes go \
anywhere."""

_EXPORTS = """\
Names: new and changed top-level names are exported back to the host \
namespace, except names starting with `_` and except that a callable or module \
never replaces an existing name (names ending in `_` always export). \
Examples: `len([1,2,3])`; `df.shape`; `[x**2 for x in range(5)]`; \
`sorted(my_dict.items())`."""

_REFUSALS = """\
Refusals: a refused effect raises PermissionError that says what was refused \
and ends with the remedy, e.g. "safepyrun refused to run a program: ['ls'] \
(audit event 'subprocess.Popen'; call chain: ...). Remedy: only the host can \
allow this, by trusting a function that does it with allow(); do not retry it \
another way." Do not retry a refused action another way: use a trusted tool \
listed above, write inside the allowed directories, or ask the user."""

_OUTPUT = {
    True: "Printed output (stdout and stderr) is returned to you with the "
          "value.",
    False: "Printed output is not returned to you: only the value of the last "
           "expression is, so end the code with the expression you want to "
           "see.",
}


def _owner_name(owner: Any) -> str:
    if isinstance(owner, str):
        return owner
    if isinstance(owner, type(sys)):
        return owner.__name__
    qual = getattr(owner, "__qualname__", None) or getattr(
        owner, "__name__", None)
    if qual is None:  # an instance
        cls = type(owner)
        return f"<{cls.__module__}.{cls.__qualname__} instance>"
    # Functions and classes by the name a cell calls them by; the module
    # path would only be noise (an LLM does not import the host's tools).
    return qual


def _signature(fn: Any) -> str:
    """``(a, b=1) -> str`` of a callable, or ``(...)`` when it has none."""
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _first_doc_line(fn: Any) -> str:
    try:
        doc = inspect.getdoc(fn)
    except Exception:
        return ""
    if not doc:
        return ""
    return doc.strip().splitlines()[0].strip()


def _tool_text(label: str, fn: Any, pol: str) -> str:
    """One trusted tool as an LLM should call it: name, signature, first
    docstring line, and the policy that checks its arguments."""
    text = label + _signature(fn)
    first = _first_doc_line(fn)
    if first:
        text += f": {first}"
    if pol:
        text += f" (arguments checked by {pol})"
    return text


def _preset_owners() -> list[tuple[str, list[Any]]]:
    """The presets applied so far: (one-line summary, owners registered)."""
    presets = sys.modules.get(f"{__package__}.presets")
    applied = getattr(presets, "applied_presets", None)
    return list(applied.values()) if isinstance(applied, dict) else []


def _tool_lines(entries: Any) -> list[str]:
    """Group allow_listing()'s (owner, name, policy label) entries: each
    callable with its signature and first docstring line; a class or module
    trusted whole in one line; owners a preset registered left to the
    preset's own line."""
    presets = _preset_owners()
    in_preset = {id(o) for _, owners in presets for o in owners}
    lines: list[str] = []
    seen_presets: set[str] = set()
    groups: dict[int, list[str]] = {}
    for owner, name, pol in entries:
        if id(owner) in in_preset:
            for summary, owners in presets:
                if any(o is owner for o in owners):
                    seen_presets.add(summary)
            continue
        try:
            label = _owner_name(owner)
        except Exception:
            label = type(owner).__name__
        whole = isinstance(owner, (type, type(sys), str))
        if name is None and not whole:
            text = _tool_text(label, owner, pol)
        elif name is None:
            text = f"{label} (all of it" + (f"; checked by {pol})" if pol
                                            else ")")
        else:
            try:
                member = getattr(owner, name)
            except Exception:
                member = None
            text = _tool_text(f"{label}.{name}", member, pol) \
                if callable(member) else f"{label}.{name}" + (
                    f" (checked by {pol})" if pol else "")
        group = groups.setdefault(id(owner), [])
        if text not in group:
            group.append(text)
            lines.append("- " + text)
    for summary, _ in presets:
        if summary in seen_presets:
            lines.append("- " + summary)
    return lines


def _limits(runner: Any) -> str:
    """The runner's limits, as far as this build of the runner has them."""
    parts = []
    timeout = getattr(runner, "timeout", None)
    if timeout is not None:
        parts.append(f"each call may run for at most {timeout:g} seconds "
                     "(then TimeoutError)")
    memory = getattr(runner, "max_memory", None)
    if memory is not None:
        parts.append(f"each call may allocate at most {memory:,} bytes "
                     "(then MemoryError)")
    output = getattr(runner, "max_output", None)
    if output is not None:
        parts.append(f"printed output is cut after {output:,} characters")
    if not parts:
        return "Limits: none (no time or memory limit)."
    return "Limits: " + "; ".join(parts) + "."


def describe(ok_dests: Any = None, runner: Any = None,
             output_returned: bool | None = None) -> str:
    """The description of the sandbox as the live registry and ``runner``'s
    settings stand (``ok_dests``, ``ban_imports``, ``ban_defs``, ``yolo``,
    limits).  ``output_returned`` says whether the caller hands printed
    output back to the model (as ``python.run`` and the MCP server do);
    default: only when the runner captures it.

    Works inside a run too (a cell reading ``python.__doc__``): it reads the
    registry through ``allow_listing()``, which names each policy by a
    string, never handing out the live policy objects."""
    pkg = sys.modules[__package__]
    engine = pkg._engine
    banned = ("socket", "importlib", "ctypes", "safepyrun")
    ban_defs = yolo = False
    if runner is not None:
        ok_dests = runner.ok_dests
        banned = tuple(runner.ban_imports)
        ban_defs = bool(runner.ban_defs)
        yolo = bool(runner.yolo)
    elif ok_dests is None:
        ok_dests = engine.get_default_ok_dests()
    if output_returned is None:
        output_returned = bool(getattr(runner, "capture", False))
    if ok_dests is None:
        dests = "(write checks are off: writes are allowed anywhere)"
    elif not ok_dests:
        dests = "anywhere (no writes at all: no directory is allowed)"
    else:
        dests = "outside the allowed directories (" + ", ".join(
            repr(str(d)) for d in ok_dests) + ")"
    intro = _INTRO.format(
        banned=f" ({', '.join(banned)} are refused)" if banned and not yolo
        else "",
        defs="use variables (defining functions and classes with def/class "
             "is refused); " if ban_defs and not yolo
        else "define functions, classes and variables; ",
        output=_OUTPUT[bool(output_returned)])
    parts = [intro]
    if yolo:
        parts.append(_YOLO)
    else:
        parts.append(_REFUSED.format(dests=dests))
    parts.append(_limits(runner))
    lines = _tool_lines(engine.allow_listing())
    if lines:
        parts.append("Trusted tools and methods (these may do what is "
                     "otherwise refused; a policy checks their arguments):\n"
                     + "\n".join(lines))
    else:
        parts.append("Trusted tools and methods: none registered.")
    preset_imports = set()
    presets = sys.modules.get(f"{__package__}.presets")
    for mods in getattr(presets, "preset_imports", {}).values():
        preset_imports.update(mods)
    imports = [m for m in engine.allowed_imports() if m not in preset_imports]
    if imports:
        parts.append("Modules that may be imported inside a run even though "
                     "their import has side effects: " + ", ".join(imports)
                     + ".")
    parts.append(_EXPORTS)
    if not yolo:
        parts.append(_REFUSALS)
    return "\n\n".join(parts)


def tool_spec(runner: Any = None, name: str = "python",
              output_returned: bool | None = None) -> dict[str, Any]:
    """The runner as a tool specification for agent frameworks:
    ``{"name", "description", "input_schema"}``, where ``description`` is
    ``describe()`` for ``runner`` and ``input_schema`` is the JSON schema of
    the input (one required string, ``code``).  Frameworks that call the
    schema ``parameters`` or ``inputSchema`` take the same dict."""
    return {
        "name": name,
        "description": describe(runner=runner,
                                output_returned=output_returned),
        "input_schema": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Python source to run; the value of its "
                                   "last expression is returned.",
                },
            },
            "required": ["code"],
            "additionalProperties": False,
        },
    }


class DocDescriptor:
    """Put on a class as ``__doc__``: ``Cls.__doc__`` and ``obj.__doc__``
    are generated on every access (instances describe their own
    settings)."""

    __slots__ = ()

    def __get__(self, obj: Any, objtype: Any = None) -> str:
        try:
            runner_type = sys.modules[__package__]._engine.Runner
            if isinstance(obj, runner_type):
                return describe(runner=obj)
            return describe()
        except Exception as e:  # a description must never break help()
            return f"Run Python in a sandbox (description failed: {e!r})"
