"""The run report: what ``await python.run(code)`` returns.

The engine gathers the report in C while the cell runs (its output, routed
by the run context; the effects the sandbox judged; the time); this module
gives it a Python face, renders the matplotlib figures the cell made (as
host code, after the cell has ended), and writes the compact text an LLM
reads (``str(result)``) and the JSON the command line prints.
"""
import io
import os
import sys
from typing import Any, NamedTuple

from . import _engine

__all__ = ["RunResult", "RunEvent", "Display"]

# The stream router stands in for the host's text streams: library code
# that checks isinstance(sys.stdout, io.TextIOBase) keeps working.
io.TextIOBase.register(_engine.OutputRouter)

# Longest value repr shown by str(RunResult).
_MAX_VALUE_REPR = 2000


class RunEvent(NamedTuple):
    """One effect the sandbox judged during a run.

    ``name`` is the audit event (``'open'``, ``'os.system'``, ...);
    ``args`` its arguments as text (made without running any of the
    cell's code); ``verdict`` is ``'allowed'`` or ``'denied'``; ``by``
    names the trusted callable that allowed it (``'module.qualname'``,
    ``'pre_deny'``), or is None."""

    name: str
    args: tuple[str, ...]
    verdict: str
    by: str | None

    def __str__(self) -> str:
        by = f" by {self.by}" if self.by else ""
        return f"[{self.verdict}] {self.name}({', '.join(self.args)}){by}"


class Display(NamedTuple):
    """A rich output of the run: a matplotlib figure as PNG bytes
    (``mime='image/png'``, with its pixel size), or an object the cell
    passed to IPython's ``display()`` (its richest representation)."""

    mime: str
    data: bytes | str
    width: int | None = None
    height: int | None = None

    def describe(self, number: int) -> str:
        """``'[figure 1: PNG 640x480]'`` and the like."""
        if self.mime == "image/png":
            size = f" {self.width}x{self.height}" if self.width is not None else ""
            return f"[figure {number}: PNG{size}]"
        size = f"{len(self.data):,} {'bytes' if isinstance(self.data, bytes) else 'characters'}"
        return f"[display {number}: {self.mime}, {size}]"


def _png_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None, None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class RunResult:
    """What one run did.  ``await python.run(code)`` never raises for the
    cell's own errors: they are in ``error`` and ``traceback``.

    Attributes: ``value`` (the last expression's value, as ``python()``
    returns it), ``stdout`` and ``stderr`` (what the cell, its tasks,
    ``warnings`` and ``logging`` wrote; cut at ``max_output`` characters
    with a marker), ``error`` (the exception, or None), ``traceback``
    (its text, from the cell's first line on; ``''`` when none),
    ``events`` (each effect the sandbox judged: ``RunEvent``),
    ``events_dropped`` (events past the bound, counted only), ``elapsed``
    (seconds), ``peak_memory`` (bytes, when a memory limit is set; else
    None) and ``displays`` (figures as PNG bytes first: ``Display``).
    ``str(result)`` is a compact text for an LLM."""

    __slots__ = ("value", "stdout", "stderr", "error", "traceback", "events",
                 "events_dropped", "elapsed", "peak_memory", "displays")

    def __init__(self, value: Any = None, stdout: str = "", stderr: str = "",
                 error: BaseException | None = None, traceback: str = "",
                 events: tuple[RunEvent, ...] = (), events_dropped: int = 0,
                 elapsed: float = 0.0, peak_memory: int | None = None,
                 displays: tuple[Display, ...] = ()) -> None:
        self.value = value
        self.stdout = stdout
        self.stderr = stderr
        self.error = error
        self.traceback = traceback
        self.events = events
        self.events_dropped = events_dropped
        self.elapsed = elapsed
        self.peak_memory = peak_memory
        self.displays = displays

    @classmethod
    def from_engine(cls, raw: dict, displays: tuple[Display, ...] = ()
                    ) -> "RunResult":
        """Build a result from the engine's report (a dict); ``displays``
        (the figures) come first, then what the cell passed to
        ``display()``."""
        displays = tuple(displays) + tuple(
            d for d in map(_display_of, raw.get("displays", ())) if d is not None)
        error = raw["error"]
        tb = ""
        if error is not None:
            import traceback as _traceback  # only when there is one
            tb = "".join(_traceback.format_exception(
                type(error), error, error.__traceback__))
        return cls(value=raw["value"], stdout=raw["stdout"],
                   stderr=raw["stderr"], error=error, traceback=tb,
                   events=tuple(RunEvent(*e) for e in raw["events"]),
                   events_dropped=raw["events_dropped"],
                   elapsed=raw["elapsed"],
                   peak_memory=raw.get("peak_memory"), displays=displays)

    @property
    def ok(self) -> bool:
        """True when the cell ended without an error."""
        return self.error is None

    @property
    def denied(self) -> tuple[RunEvent, ...]:
        """The events the sandbox refused."""
        return tuple(e for e in self.events if e.verdict == "denied")

    def value_repr(self) -> str:
        """repr() of the value, cut to a readable length."""
        try:
            text = repr(self.value)
        except Exception as e:  # a value whose repr fails
            text = f"<{type(self.value).__name__} object; repr failed: {e!r}>"
        if len(text) > _MAX_VALUE_REPR:
            text = (text[:_MAX_VALUE_REPR]
                    + f"... [{len(text) - _MAX_VALUE_REPR:,} more characters]")
        return text

    def __str__(self) -> str:
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr.rstrip("\n"))
        if self.error is not None:
            parts.append(self.traceback.rstrip("\n"))
        parts.extend(str(e) for e in self.denied)
        if self.events_dropped:
            parts.append(f"[{self.events_dropped:,} more events not recorded]")
        if self.value is not None:
            parts.append("Out: " + self.value_repr())
        parts.extend(d.describe(i) for i, d in enumerate(self.displays, 1))
        return "\n".join(parts) if parts else "(no output)"

    def __repr__(self) -> str:
        status = "ok" if self.error is None else type(self.error).__name__
        return (f"<RunResult {status}: {len(self.stdout)} chars stdout, "
                f"{len(self.stderr)} chars stderr, {len(self.events)} events, "
                f"{len(self.displays)} displays, {self.elapsed:.3f}s>")

    def to_json(self, figure_dir: str | os.PathLike | None = None,
                prefix: str = "figure") -> dict:
        """The report as JSON-ready data.  Values that JSON cannot encode
        are given as their ``repr()``; PNG figures are written into
        ``figure_dir`` (when given) as ``figure1.png``, ... (``figure1-2.png``
        when the name is taken) and named by path, else left out with their
        size only."""
        import json

        def encodable(v: Any) -> Any:
            try:
                json.dumps(v)
                return v
            except (TypeError, ValueError, RecursionError):
                return self.value_repr() if v is self.value else repr(v)

        displays = []
        for i, d in enumerate(self.displays, 1):
            item: dict[str, Any] = {"mime": d.mime}
            if d.width is not None:
                item.update(width=d.width, height=d.height)
            if isinstance(d.data, bytes):
                if figure_dir is not None:
                    item["path"] = _write_new(figure_dir, f"{prefix}{i}", d.data)
                item["bytes"] = len(d.data)
            else:
                item["data"] = d.data
            displays.append(item)
        return {
            "ok": self.ok,
            "value": encodable(self.value),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": None if self.error is None else {
                "type": type(self.error).__name__,
                "message": str(self.error),
                "traceback": self.traceback},
            "events": [e._asdict() | {"args": list(e.args)} for e in self.events],
            "events_dropped": self.events_dropped,
            "elapsed": self.elapsed,
            "peak_memory": self.peak_memory,
            "displays": displays,
        }


def _write_new(directory: "str | os.PathLike", stem: str, data: bytes) -> str:
    """Write ``data`` to ``directory/stem.png``, or ``stem-2.png``, ... when
    that name is taken (an existing file is never replaced).  The path."""
    n = 1
    while True:
        name = f"{stem}.png" if n == 1 else f"{stem}-{n}.png"
        path = os.path.join(os.fspath(directory), name)
        try:
            with open(path, "xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            n += 1


# ---- IPython display() ---------------------------------------------------------
# Mime types in the order a report prefers them: an image first (what a
# multimodal LLM can look at), then markup, then text.
_MIME_ORDER = ("image/png", "image/jpeg", "image/svg+xml", "text/html",
               "text/markdown", "text/latex", "application/json", "text/plain")


def _display_of(data: dict) -> "Display | None":
    """The richest representation in one display() call's data."""
    for mime in _MIME_ORDER:
        value = data.get(mime)
        if value is None:
            continue
        if mime in ("image/png", "image/jpeg") and isinstance(value, str):
            import base64
            import binascii
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
        if mime == "image/png" and isinstance(value, bytes):
            return Display(mime, value, *_png_size(value))
        return Display(mime, value)
    return None


def hook_ipython_display() -> None:
    """Route IPython's display() of a run into its report: the shell's
    display publisher asks the engine first (the run context decides,
    as for output); the host's own display() calls publish as before.
    Installed once per publisher, when IPython is loaded with a shell."""
    ipython = sys.modules.get("IPython")
    shell_mod = sys.modules.get("IPython.core.interactiveshell")
    if ipython is None or shell_mod is None:
        return
    cls = shell_mod.InteractiveShell
    if not cls.initialized():
        return  # display() without a shell prints the repr: captured as output
    pub = cls.instance().display_pub
    if getattr(pub.publish, "_safepyrun_routed", False):
        return
    original = pub.publish

    def publish(data, metadata=None, *args, **kwargs):
        if isinstance(data, dict) and _engine.report_display(data):
            return None
        return original(data, metadata, *args, **kwargs)

    publish._safepyrun_routed = True
    pub.publish = publish


# ---- figures ----------------------------------------------------------------
# Rendered by the engine's own (host) code after the cell has ended: the
# cell's code does not run the render, so no gated write is involved, and
# the figures the run made are closed afterwards, as IPython's inline
# backend does.

def figures_before() -> dict[int, tuple[Any, bool]] | None:
    """The open matplotlib figures before a run: id -> (figure, stale)
    (None when pyplot is not imported: every figure then is the run's)."""
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None or "matplotlib.pyplot" not in sys.modules:
        return None
    return {id(m.canvas.figure): (m.canvas.figure, bool(m.canvas.figure.stale))
            for m in helpers.Gcf.get_all_fig_managers()}


def render_figures(before: dict[int, tuple[Any, bool]] | None) -> tuple[Display, ...]:
    """PNGs of the figures the run created (closed afterwards) or drew on
    (a host figure that was up to date before the run and is stale now;
    left open)."""
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if helpers is None or pyplot is None:
        return ()
    before = before or {}
    out = []
    for manager in list(helpers.Gcf.get_all_fig_managers()):
        fig = manager.canvas.figure
        new = id(fig) not in before
        drawn = not new and fig.stale and not before[id(fig)][1]
        if not (new or drawn):
            continue
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png")
        except Exception as e:  # a figure that cannot render: say so
            out.append(Display("text/plain", f"figure could not be rendered: {e!r}"))
        else:
            data = buf.getvalue()
            out.append(Display("image/png", data, *_png_size(data)))
        if new:
            pyplot.close(fig)
    return tuple(out)
