"""Presets: ready-made allow() registrations for common libraries, and the
``safepyrun_import_allow`` entry-point group.

Nothing here is imported or registered until the host asks for it:
``allow_matplotlib()`` and ``allow_pandas()`` import their library when
called, and the entry points are read on the first ``RunPython()``.
"""
from __future__ import annotations

import sys
import types

from ._engine import LocalWritePolicy

__all__ = ["allow_matplotlib", "allow_pandas", "LocalWritePolicy",
           "load_import_entry_points"]

# LocalWritePolicy (a PosAllowPolicy for library writers that also accept
# URLs: the target must be a local path inside ok_dests; buffers and file
# objects pass; a URL such as ``s3://...`` is refused, since trusting the
# call would also trust the network traffic it makes) is an immutable C type
# of the engine, like the other built-in policies.


def _pkg() -> types.ModuleType:
    return sys.modules[__package__]


#: The presets applied so far, for the tool description (describe.py):
#: name -> (one-line summary, the owners it registered).  Changed in place,
#: since the module's names are pinned.
applied_presets: dict[str, tuple[str, list]] = {}
#: name -> the modules whose import-time effects the preset trusts.
preset_imports: dict[str, tuple[str, ...]] = {}

_MATPLOTLIB_SUMMARY = (
    "matplotlib (preset): import it and plot freely (Figure, Axes, pyplot); "
    "savefig/imsave write only inside the allowed directories, a BytesIO "
    "buffer always works")
_PANDAS_SUMMARY = (
    "pandas (preset): import it and use DataFrame/Series freely; their "
    "writers (to_csv, to_json, to_parquet, to_excel, ...) write only local "
    "paths inside the allowed directories, buffers always work")


# ---- matplotlib ----------------------------------------------------------------

def allow_matplotlib() -> None:
    """Let cells plot with matplotlib.

    Importing matplotlib inside a run works (its font cache and config
    directory are written while it initialises); ``Figure``, ``Axes``,
    ``Axis``, ``Spine``, ``SpinesProxy`` and ``pyplot`` are trusted; the
    font cache may be rebuilt later; and the calls that write a file --
    ``Figure.savefig``, ``pyplot.savefig``, ``pyplot.imsave`` and
    ``matplotlib.image.imsave`` -- are gated by a policy: their target must
    lie inside ``ok_dests`` (a buffer such as ``BytesIO`` always passes).
    """
    import matplotlib
    import matplotlib.image as mimage
    import matplotlib.pyplot as plt
    from matplotlib import font_manager
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.spines import Spine, SpinesProxy

    pkg = _pkg()
    imports = ("matplotlib", "mpl_toolkits", "PIL", "fontTools",
               "kiwisolver", "matplotlib_inline")
    pkg.allow_imports(*imports)
    policy = pkg.LocalWritePolicy(0, "fname")
    registrations = [
        # Plotting: pure computation in the effect model, trusted as in the
        # seed so that anything incidental (caches) is covered.
        {Figure: ..., Axes: ..., Axis: ..., Spine: ..., SpinesProxy: ...},
        {plt: ...},
        # The writers: named grants take precedence over the blanket ones
        # above, and gate the call itself.
        {Figure: [("savefig", policy)]},
        {plt: [("savefig", policy), ("imsave", policy)]},
        {mimage: [("imsave", policy)]},
    ]
    loader = getattr(font_manager, "_load_fontmanager", None)
    if loader is not None:  # lazily rebuilds and writes the font cache
        registrations.append(loader)
    for item in registrations:
        pkg.allow(item)
    owners = [Figure, Axes, Axis, Spine, SpinesProxy, plt, mimage]
    if loader is not None:
        owners.append(loader)
    applied_presets["matplotlib"] = (_MATPLOTLIB_SUMMARY, owners)
    preset_imports["matplotlib"] = imports
    del matplotlib


# ---- pandas --------------------------------------------------------------------

#: DataFrame/Series writer methods and the keyword naming their target
#: (read-only: allow_pandas() trusts what it lists).
PANDAS_WRITERS = types.MappingProxyType({
    "to_csv": "path_or_buf", "to_json": "path_or_buf", "to_hdf": "path_or_buf",
    "to_excel": "excel_writer", "to_parquet": "path", "to_feather": "path",
    "to_pickle": "path", "to_stata": "path", "to_orc": "path",
    "to_xml": "path_or_buffer", "to_html": "buf", "to_markdown": "buf",
    "to_latex": "buf", "to_string": "buf",
})


def allow_pandas() -> None:
    """Let cells import pandas and use its writers.

    ``DataFrame``/``Series`` ``to_csv``, ``to_json``, ``to_parquet``,
    ``to_excel``, ``to_pickle``, ``to_feather``, ``to_stata``, ``to_hdf``,
    ``to_html``, ``to_markdown``, ... (those the installed pandas has) are
    gated by a policy: the target (first argument or its keyword) must be a
    local path inside ``ok_dests``; buffers pass; URLs are refused.  A write
    pandas makes by any other route is still checked by the engine against
    ``ok_dests``.
    """
    import pandas as pd

    pkg = _pkg()
    imports = ("pandas", "pyarrow", "openpyxl", "xlsxwriter", "tables",
               "fastparquet", "tabulate")
    pkg.allow_imports(*imports)
    seen = set()  # methods DataFrame and Series share are registered once
    for cls in (pd.DataFrame, pd.Series):
        names = []
        for name, kw in PANDAS_WRITERS.items():
            fn = getattr(cls, name, None)
            if callable(fn) and id(fn) not in seen:
                seen.add(id(fn))
                names.append((name, pkg.LocalWritePolicy(0, kw)))
        if names:
            pkg.allow({cls: names})
    applied_presets["pandas"] = (_PANDAS_SUMMARY, [pd.DataFrame, pd.Series])
    preset_imports["pandas"] = imports


# ---- the safepyrun_import_allow entry-point group ------------------------------

# Whether the entry points were read: changed in place, since the module's
# names are pinned (the engine puts back a rebound global).
_entry_points_state = {"loaded": False}


def load_import_entry_points(force: bool = False) -> list[str]:
    """Call ``allow_imports`` for every entry point of the group
    ``safepyrun_import_allow`` (its value is a module name).  Done once, on
    the first ``RunPython()``; failures warn and are skipped.  Returns the
    module names added."""
    if _entry_points_state["loaded"] and not force:
        return []
    _entry_points_state["loaded"] = True
    added: list[str] = []
    try:
        from importlib.metadata import entry_points
        try:
            eps = entry_points(group="safepyrun_import_allow")
        except TypeError:  # Python < 3.10 API
            eps = entry_points().get("safepyrun_import_allow", [])
    except Exception as e:  # a broken distribution on sys.path
        _warn(f"safepyrun: cannot read the safepyrun_import_allow entry "
              f"points: {type(e).__name__}: {e}")
        return added
    for ep in eps:
        try:
            value = ep.value.strip()
            if not value:
                raise ValueError("empty module name")
            _pkg().allow_imports(value)
            added.append(value)
        except Exception as e:
            _warn(f"safepyrun: ignoring safepyrun_import_allow entry point "
                  f"{getattr(ep, 'name', ep)!r}: {type(e).__name__}: {e}")
    return added


def _warn(msg: str) -> None:
    import warnings
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
