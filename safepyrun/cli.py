"""The `safepyrun` command: run a script (or stdin) in the sandbox.

    safepyrun script.py              # prints the value of the last expression
    echo '1+1' | safepyrun           # reads the cell from standard input
    safepyrun --ok-dest out job.py   # allow writes under ./out
    safepyrun --max-memory 512M job.py   # a MemoryError past 512 MiB

A refusal or any other error is printed to stderr and the exit status is 1.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import traceback

from . import RunPython

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
    args = parser.parse_args(argv)

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
    try:
        python = RunPython(namespace, ok_dests=args.ok_dest,
                           max_memory=args.max_memory)
        result = asyncio.run(python(code))
    except KeyboardInterrupt:
        return 130
    except BaseException as e:  # the cell's error, reported like Python does
        # sys.exit() in the script: the sandbox refuses to end the host and
        # keeps the SystemExit as the refusal's cause; a script's exit code
        # is the command's, as with python.
        exit_ = e if isinstance(e, SystemExit) else e.__cause__
        if isinstance(exit_, SystemExit):
            code = exit_.code
            if code is None or isinstance(code, int):
                return code or 0
            print(code, file=sys.stderr)
            return 1
        traceback.print_exception(e, file=sys.stderr)
        return 1
    if result is not None:
        print(repr(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
