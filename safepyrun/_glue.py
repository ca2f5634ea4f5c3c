"""Helpers the command line, the IPython extension and the MCP server share:
tracebacks that start at the cell, and forgetting the half-imported modules
a refused import leaves behind.  Host code only; nothing here enforces."""
from __future__ import annotations

import sys
import traceback
from types import TracebackType

__all__ = ["is_cell_file", "trim_to_cell", "format_cell_exception",
           "forget_failed_imports"]


def is_cell_file(filename: str) -> bool:
    """Whether ``filename`` is a cell's (``<pyrun_N>``, see ``srcfn``)."""
    return filename.startswith("<pyrun_")


def _trimmed(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first cell frame on; unchanged when it has none."""
    t = tb
    while t is not None:
        if is_cell_file(t.tb_frame.f_code.co_filename):
            return t
        t = t.tb_next
    return tb


def trim_to_cell(exc: BaseException) -> BaseException:
    """Drop the host's frames (the command line, the extension, asyncio)
    that come before the cell's first frame from ``exc``'s traceback and
    those of the exceptions chained to it.  Returns ``exc``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = _trimmed(e.__traceback__)
        todo += [e.__cause__, e.__context__]
        todo += list(getattr(e, "exceptions", ()) or ())
    return exc


def format_cell_exception(exc: BaseException,
                          filename: str | None = None) -> str:
    """The traceback text of ``exc`` starting at the cell; with
    ``filename``, cell frames are shown as that file (the script the
    command line ran)."""
    trim_to_cell(exc)
    text = "".join(traceback.format_exception(type(exc), exc,
                                              exc.__traceback__))
    if filename is not None:
        text = rename_cell_files(text, filename)
    return text


def rename_cell_files(text: str, filename: str) -> str:
    """``File "<pyrun_N>"`` lines of a traceback shown as ``filename``."""
    import re
    return re.sub(r'File "<pyrun_\d+>"',
                  lambda m: f'File "{filename}"', text)


def forget_failed_imports(before: set[str] | frozenset[str]) -> list[str]:
    """After a failed cell: drop from ``sys.modules`` the modules it added
    whose package is gone (Python removes a module whose import failed,
    but not the submodules it had already imported), so that a later
    import -- after ``allow_matplotlib()``, say -- starts clean instead of
    finding half a package.  Complete packages stay (a native extension
    such as numpy's cannot be loaded twice).  Returns the names dropped."""
    dropped = []
    for name in [m for m in list(sys.modules) if m not in before]:
        parts = name.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[:i]) not in sys.modules:
                sys.modules.pop(name, None)
                dropped.append(name)
                break
    return dropped


def modules_now() -> frozenset[str]:
    """The names in ``sys.modules`` (to pass to forget_failed_imports)."""
    return frozenset(sys.modules)

