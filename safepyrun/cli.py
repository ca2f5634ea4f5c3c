"""The `safepyrun` command: run a script (or stdin) in the sandbox.

    safepyrun script.py              # prints the value of the last expression
    echo '1+1' | safepyrun           # reads the cell from standard input
    safepyrun --ok-dest out job.py   # allow writes under ./out
    safepyrun --timeout 30 job.py    # stop it after 30 seconds

A refusal or any other error is printed to stderr and the exit status is 1.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import traceback

from . import RunPython


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="safepyrun",
        description="Run Python with its dangerous side effects refused.")
    parser.add_argument("script", nargs="?", default="-",
                        help="script to run, or - for standard input (default)")
    parser.add_argument("--ok-dest", action="append", default=[],
                        metavar="DIR",
                        help="a directory the code may write under (repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        metavar="SECONDS",
                        help="stop the code with TimeoutError after this many "
                             "seconds")
    args = parser.parse_args(argv)
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

    namespace = {"__name__": "__main__"}
    try:
        python = RunPython(namespace, ok_dests=args.ok_dest,
                           timeout=args.timeout)
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
