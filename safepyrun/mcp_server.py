"""``safepyrun mcp``: the sandbox as a Model Context Protocol server (stdio).

    safepyrun mcp --ok-dest ~/llm-out --preset matplotlib --timeout 30

It offers one tool, ``python``: stateful (the namespace persists across
calls, as in a notebook), described by the live tool description
(``describe()``), returning the run report -- printed output, the last
value's repr, the error with a traceback that starts at the cell, and each
figure as image content.  A refused action (or any error of the cell) is a
tool error result; the server keeps running.

Needs the official MCP SDK: ``pip install 'safepyrun[mcp]'``.  The SDK is
imported only here, so the core keeps zero runtime dependencies.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import inspect
import os
import sys
from typing import Any

__all__ = ["build_runner", "make_server", "serve", "main", "add_arguments"]

TOOL_NAME = "python"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options (shared with ``safepyrun mcp --help``)."""
    parser.add_argument("--ok-dest", action="append", default=None,
                        metavar="DIR",
                        help="a directory cells may write under (repeatable; "
                             "default: the config's default_ok_dests)")
    parser.add_argument("--allow", action="append", default=[],
                        metavar="MODULE:FUNCTION",
                        help="trust a host function, importable by path "
                             "(e.g. mytools:fetch or mytools:Client.get); "
                             "cells can call it by its name (repeatable)")
    parser.add_argument("--preset", action="append", default=[],
                        choices=("matplotlib", "pandas"),
                        help="trust a library's normal use (repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        metavar="SECONDS",
                        help="time limit of each tool call")
    from .cli import parse_size
    parser.add_argument("--max-memory", type=parse_size, default=None,
                        metavar="SIZE",
                        help="memory a tool call may allocate (bytes, or "
                             "512M, 2G)")


def _accepts(name: str) -> bool:
    """Whether this build's RunPython takes ``name`` as a parameter (not as
    policy data, which its ``**data`` would swallow silently)."""
    from . import RunPython
    return name in inspect.signature(RunPython.__new__).parameters


def _import_target(spec: str) -> tuple[str, Any]:
    """``'pkg.mod:Class.method'`` -> (``'method'``, the object)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"--allow {spec!r}: expected MODULE:FUNCTION")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--allow {spec!r}: {attr_path} is not callable")
    return attr_path.rsplit(".", 1)[-1], obj


def build_runner(ok_dests: list[str] | None = None,
                 allow: list[str] = (), presets: list[str] = (),
                 timeout: float | None = None,
                 max_memory: int | None = None) -> Any:
    """The runner the server's tool uses: a fresh namespace holding the
    trusted functions named by ``allow`` (``module:function``), the presets
    applied, the limits set.  ``ok_dests=None`` means the config's
    ``default_ok_dests``.  Raises ValueError for an option this build
    cannot honour (a limit the runner does not have)."""
    import safepyrun
    os.environ.setdefault("MPLBACKEND", "Agg")  # no GUI in a server
    for preset in presets:
        {"matplotlib": safepyrun.allow_matplotlib,
         "pandas": safepyrun.allow_pandas}[preset]()
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for spec in allow:
        name, fn = _import_target(spec)
        safepyrun.allow(fn)
        namespace[name] = fn
    kwargs: dict[str, Any] = {}
    for name, value in (("timeout", timeout), ("max_memory", max_memory)):
        if value is None:
            continue
        if not _accepts(name):
            raise ValueError(f"--{name.replace('_', '-')}: this build of "
                             f"safepyrun has no {name} limit")
        kwargs[name] = value
    if ok_dests is not None:
        kwargs["ok_dests"] = ok_dests
    return safepyrun.RunPython(namespace, **kwargs)


def tool_content(result: Any) -> tuple[list[Any], bool]:
    """A RunResult as MCP content: the report's text (output, value repr,
    error with traceback, refused events), then each figure as an image;
    and whether it is an error result."""
    from mcp import types
    content: list[Any] = [types.TextContent(type="text", text=str(result))]
    for shown in result.displays:
        if shown.mime.startswith("image/") and isinstance(shown.data, bytes):
            content.append(types.ImageContent(
                type="image", mime_type=shown.mime,
                data=base64.b64encode(shown.data).decode("ascii")))
    return content, result.error is not None


class CellThread:
    """Runs the cells of one runner, one at a time, on an event loop of
    their own in a thread of their own.

    Why not on the server's loop: a cell reaches the loop and task it runs
    on (``asyncio.get_running_loop().stop()``,
    ``asyncio.current_task().cancel()``), and on the server's they would
    end the server.  Here they end only that call, which comes back as an
    error result; the loop is replaced if a cell closed it."""

    def __init__(self, runner: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor
        self.runner = runner
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="safepyrun-mcp-cell")
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self, code: str) -> Any:
        from ._glue import forget_failed_imports
        if self.loop is None or self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        before = frozenset(sys.modules)
        result = self.loop.run_until_complete(self.runner.run(code))
        if result.error is not None:
            # A refused import leaves no half package behind (_glue.py).
            forget_failed_imports(before)
        return result

    async def run(self, code: str) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self._run, code)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def make_server(runner: Any, cells: CellThread | None = None) -> Any:
    """An MCP low-level server offering ``runner`` as the ``python`` tool.
    Calls run one at a time, in order (the namespace is shared), on
    ``cells`` (default: a CellThread of their own)."""
    from mcp import types
    from mcp.server.lowlevel import Server

    from . import __version__, tool_spec

    lock = asyncio.Lock()
    if cells is None:
        cells = CellThread(runner)

    async def list_tools(ctx: Any, params: Any) -> Any:
        # The live description: trust granted and settings as they stand.
        spec = tool_spec(runner, name=TOOL_NAME, output_returned=True)
        return types.ListToolsResult(tools=[types.Tool(
            name=spec["name"], description=spec["description"],
            input_schema=spec["input_schema"])])

    async def call_tool(ctx: Any, params: Any) -> Any:
        def error(text: str) -> Any:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=text)],
                is_error=True)

        if params.name != TOOL_NAME:
            return error(f"unknown tool {params.name!r}; the only tool is "
                         f"{TOOL_NAME!r}")
        code = (params.arguments or {}).get("code")
        if not isinstance(code, str):
            return error("the python tool takes one argument, code (a "
                         "string of Python source)")
        async with lock:
            try:
                result = await cells.run(code)
            except BaseException as e:
                # What a cell did to its own loop or task (stopped,
                # cancelled, closed), or misuse of the API: that call's
                # error, never the server's end.
                return error(f"{type(e).__name__}: {e}".rstrip(": ")
                             + " (the call did not complete)")
        content, is_error = tool_content(result)
        return types.CallToolResult(content=content, is_error=is_error)

    return Server("safepyrun", version=__version__,
                  instructions="Run Python in the user's process with its "
                               "dangerous side effects refused; see the "
                               "python tool's description.",
                  on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(runner: Any) -> None:
    """Serve ``runner`` over this process's stdin and stdout until the
    client closes the connection."""
    from mcp.server.stdio import stdio_server

    cells = CellThread(runner)
    server = make_server(runner, cells)
    try:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream,
                             server.create_initialization_options())
    finally:
        cells.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="safepyrun mcp",
        description="Serve the safepyrun sandbox as an MCP server over "
                    "stdio: one stateful `python` tool.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        import mcp  # noqa: F401
    except ImportError:
        print("safepyrun mcp: the MCP SDK is not installed; run "
              "pip install 'safepyrun[mcp]'", file=sys.stderr)
        return 2
    try:
        runner = build_runner(args.ok_dest, args.allow, args.preset,
                              args.timeout, args.max_memory)
    except (ImportError, AttributeError, ValueError) as e:
        print(f"safepyrun mcp: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(runner))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
