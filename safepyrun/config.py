"""The user config: ``$XDG_CONFIG_HOME/safepyrun/config.py`` (default
``~/.config/safepyrun/config.py``), run once at import, after the defaults.

It runs with the public names of safepyrun available (``allow``,
``allow_imports``, the policies, ``set_data``, ``allow_matplotlib``, ...)
plus ``os``, ``sys`` and ``Path``, so it needs no imports::

    allow_pandas()
    allow({pandas.DataFrame: ['head', 'describe']})
    default_ok_dests = ['~/llm-out', '/tmp']

A plain assignment to ``default_ok_dests`` sets the default for runners made
without ``ok_dests``.  A config that fails (any exception, a syntax error)
gives a warning naming the file and the error, and its registrations are
undone: the defaults stay intact.
"""
from __future__ import annotations

import os
import sys

__all__ = ["config_path", "load_config"]


def config_path() -> str:
    """Where the user config lives (it need not exist)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
        os.path.expanduser("~"), ".config")
    return os.path.join(base, "safepyrun", "config.py")


def _namespace(pkg) -> dict:
    from pathlib import Path
    ns = {"__name__": "safepyrun_config", "__builtins__": __builtins__}
    for name in getattr(pkg, "__all__", ()):
        if name != "default_ok_dests" and hasattr(pkg, name):
            ns[name] = getattr(pkg, name)
    ns.update(os=os, sys=sys, Path=Path, safepyrun=pkg)
    return ns


def load_config(path: str | None = None) -> bool:
    """Run the user config at ``path`` (default ``config_path()``) if it
    exists.  Returns True when a config ran without error."""
    if path is None:
        path = config_path()
    if not os.path.exists(path):
        return False
    pkg = sys.modules[__package__]
    engine = pkg._engine
    before = engine.allow_entries()
    before_dests = engine.get_default_ok_dests()
    ns = _namespace(pkg)
    ns["__file__"] = path
    ns["default_ok_dests"] = before_dests
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), ns)
        new_dests = ns.get("default_ok_dests", before_dests)
        if new_dests is not before_dests:
            engine.set_default_ok_dests(new_dests)
    except (Exception, SystemExit) as e:
        _undo(engine, before, before_dests)
        import warnings
        warnings.warn(
            f"safepyrun: error in config file {path}: "
            f"{type(e).__name__}: {e}; the defaults are in effect",
            RuntimeWarning, stacklevel=2)
        return False
    return True


def _undo(engine, before: tuple, before_dests) -> None:
    """Remove registrations a failed config made; restore default_ok_dests."""
    kept = list(before)
    for entry in engine.allow_entries():
        for i, old in enumerate(kept):
            if (old[0] is entry[0] and old[2] is entry[2]
                    and old[1] == entry[1]):
                del kept[i]
                break
        else:
            try:
                engine.allow_remove(*entry)
            except Exception:
                pass
    try:
        engine.set_default_ok_dests(before_dests)
    except Exception:
        pass
