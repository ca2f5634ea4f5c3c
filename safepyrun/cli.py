"""The `safepyrun` command: run a script (or stdin) in the sandbox.

    safepyrun script.py              # prints the value of the last expression
    echo '1+1' | safepyrun           # reads the cell from standard input
    safepyrun --ok-dest out job.py   # allow writes under ./out

A refusal or any other error is printed to stderr and the exit status is 1.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import traceback

from . import RunPython


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["mcp"]:
        from .mcp_server import main as mcp_main
        return mcp_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="safepyrun",
        description="Run Python with its dangerous side effects refused.")
    parser.add_argument("script", nargs="?", default="-",
                        help="script to run, or - for standard input (default)")
    parser.add_argument("--ok-dest", action="append", default=[],
                        metavar="DIR",
                        help="a directory the code may write under (repeatable)")
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
        python = RunPython(namespace, ok_dests=args.ok_dest)
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
