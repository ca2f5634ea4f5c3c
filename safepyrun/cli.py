"""The `safepyrun` command: run a script (or stdin) in the sandbox, as
`python` would -- arguments after the script are its ``sys.argv``,
``__file__`` is set, tracebacks start at the script -- with its dangerous
side effects refused.

    safepyrun script.py a b          # prints the value of the last expression
    echo '1+1' | safepyrun           # reads the cell from standard input
    python -m safepyrun script.py    # the same
    safepyrun mcp --ok-dest out      # the MCP server (safepyrun[mcp])
    safepyrun --ok-dest out job.py   # allow writes under ./out
    safepyrun --max-memory 512M job.py   # a MemoryError past 512 MiB
    safepyrun --json job.py          # the run report as JSON
    safepyrun --max-output 10000 job.py  # cut long output, with a marker
    safepyrun --timeout 30 job.py    # stop it after 30 seconds

A refusal or any other error is printed to stderr and the exit status is 1.
With --json the report (value, stdout, stderr, error, events, elapsed,
figures) is printed as one JSON object on stdout; values JSON cannot encode
are given as their repr(), and matplotlib figures are written as PNG files
into the first --ok-dest directory and named in the report.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys

from . import UNSET, RunPython, RunResult, __version__
from ._glue import format_cell_exception, rename_cell_files

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from a size such as ``1000000``, ``512M``, ``2G``, ``1.5GiB``
    (K, M, G, T are powers of 1024; a trailing ``B`` or ``iB`` is allowed)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text,
                     re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r} (use bytes or a suffix: 512M, 2G)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return size


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["mcp"]:
        from .mcp_server import main as mcp_main
        return mcp_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="safepyrun",
        usage="safepyrun [options] [script | -] [args ...]\n"
              "       safepyrun mcp [options]   (the MCP server; "
              "safepyrun mcp --help)",
        description="Run Python with its dangerous side effects refused.")
    parser.add_argument("--version", action="version",
                        version=f"safepyrun {__version__}")
    parser.add_argument("script", nargs="?", default="-",
                        help="script to run, or - for standard input (default)")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="arguments for the script (its sys.argv[1:])")
    parser.add_argument("--ok-dest", action="append", default=None,
                        metavar="DIR",
                        help="a directory the code may write under "
                             "(repeatable; default: the config's "
                             "default_ok_dests)")
    parser.add_argument("--max-memory", type=parse_size, default=None,
                        metavar="SIZE",
                        help="memory the code may allocate (bytes, or 512M, 2G); "
                             "past it the code gets MemoryError")
    parser.add_argument("--json", action="store_true",
                        help="print the run report as JSON (figures go into "
                             "the first --ok-dest directory)")
    parser.add_argument("--max-output", type=int, default=None, metavar="N",
                        help="keep at most N characters of stdout and of "
                             "stderr, then a truncation marker")
    parser.add_argument("--timeout", type=float, default=None,
                        metavar="SECONDS",
                        help="stop the code with TimeoutError after this many "
                             "seconds")
    args = parser.parse_args(argv)
    if args.max_output is not None and args.max_output < 0:
        parser.error("--max-output must be >= 0")
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        parser.error("--timeout must be a positive number of seconds")

    try:
        if args.script == "-":
            code = sys.stdin.read()
        else:
            with open(args.script, encoding="utf-8") as f:
                code = f.read()
    except OSError as e:
        print(f"safepyrun: cannot read {args.script}: {e.strerror}",
              file=sys.stderr)
        return 2

    # As python does: the script's sys.argv, __file__ and sys.path[0].
    namespace = {"__name__": "__main__"}
    if args.script == "-":
        shown_name = "<stdin>"
        sys.argv = ["-"] + args.args
        sys.path.insert(0, "")
    else:
        shown_name = os.path.abspath(args.script)
        namespace["__file__"] = shown_name
        sys.argv = [args.script] + args.args
        sys.path.insert(0, os.path.dirname(shown_name))
    args.shown_name = shown_name
    python = RunPython(namespace,
                       ok_dests=UNSET if args.ok_dest is None else args.ok_dest,
                       max_output=args.max_output,
                       max_memory=args.max_memory, timeout=args.timeout)
    if args.json or args.max_output is not None:
        return _report(python, code, args)
    try:
        result = asyncio.run(python(code))
    except KeyboardInterrupt:
        return 130
    except BaseException as e:  # the cell's error, reported like Python does
        status = _exit_status(e)
        if status is None:
            sys.stderr.write(format_cell_exception(e, shown_name))
            return 1
        return status
    if result is not None:
        print(repr(result))
    return 0


def _exit_status(error: BaseException) -> int | None:
    """sys.exit() in the script: the sandbox refuses to end the host and
    keeps the SystemExit as the refusal's cause; a script's exit code is
    the command's, as with python.  None for any other error."""
    exit_ = error if isinstance(error, SystemExit) else error.__cause__
    if not isinstance(exit_, SystemExit):
        return None
    code = exit_.code
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _report(python: RunPython, code: str, args: argparse.Namespace) -> int:
    """Run with the output captured: --json prints the report, else the
    (possibly cut) output, value and error as a plain run would."""
    try:
        result: RunResult = asyncio.run(python.run(code))
    except KeyboardInterrupt:
        return 130
    status = 0 if result.error is None else _exit_status(result.error)
    if args.json:
        dests = args.ok_dest if args.ok_dest is not None else python.ok_dests
        figure_dir = dests[0] if dests else None
        report = result.to_json(figure_dir=figure_dir)
        print(json.dumps(report, indent=1))
        return 1 if status is None else status
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.error is not None:
        if status is None:
            sys.stderr.write(rename_cell_files(result.traceback,
                                               args.shown_name))
            return 1
        return status
    if result.value is not None:
        print(result.value_repr())
    return 0


if __name__ == "__main__":
    sys.exit(main())
