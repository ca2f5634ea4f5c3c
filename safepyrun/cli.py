"""The `safepyrun` command: run a script (or stdin) in the sandbox.

    safepyrun script.py              # prints the value of the last expression
    echo '1+1' | safepyrun           # reads the cell from standard input
    safepyrun --ok-dest out job.py   # allow writes under ./out
    safepyrun --max-memory 512M job.py   # a MemoryError past 512 MiB
    safepyrun --json job.py          # the run report as JSON
    safepyrun --max-output 10000 job.py  # cut long output, with a marker

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
import re
import sys
import traceback

from . import RunPython, RunResult

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
    parser = argparse.ArgumentParser(
        prog="safepyrun",
        description="Run Python with its dangerous side effects refused.")
    parser.add_argument("script", nargs="?", default="-",
                        help="script to run, or - for standard input (default)")
    parser.add_argument("--ok-dest", action="append", default=[],
                        metavar="DIR",
                        help="a directory the code may write under (repeatable)")
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
    args = parser.parse_args(argv)
    if args.max_output is not None and args.max_output < 0:
        parser.error("--max-output must be >= 0")

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

    namespace = {"__name__": "__main__"}
    python = RunPython(namespace, ok_dests=args.ok_dest,
                       max_output=args.max_output, max_memory=args.max_memory)
    if args.json or args.max_output is not None:
        return _report(python, code, args)
    try:
        result = asyncio.run(python(code))
    except KeyboardInterrupt:
        return 130
    except BaseException as e:  # the cell's error, reported like Python does
        status = _exit_status(e)
        if status is None:
            traceback.print_exception(e, file=sys.stderr)
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
        figure_dir = args.ok_dest[0] if args.ok_dest else None
        report = result.to_json(figure_dir=figure_dir)
        print(json.dumps(report, indent=1))
        return 1 if status is None else status
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.error is not None:
        if status is None:
            sys.stderr.write(result.traceback)
            return 1
        return status
    if result.value is not None:
        print(result.value_repr())
    return 0


if __name__ == "__main__":
    sys.exit(main())
