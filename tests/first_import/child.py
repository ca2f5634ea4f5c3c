"""Run cells in a fresh process, sandboxed or under plain exec, and print
what they gave as JSON (tests/test_first_import.py).

    python child.py MODE OK_DEST CELL [CELL ...]

MODE is "sandbox" (RunPython(ok_dests=[OK_DEST])) or "plain" (exec in one
shared namespace, the last expression's value kept as IPython does).  The
output is {"values": [repr, ...]} or {"error": "Type: message"}.
"""
import ast
import asyncio
import json
import sys


def plain_cell(code, g):
    tree = ast.parse(code)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), g)
    return eval(compile(last, "<cell>", "eval"), g) if last else None


async def sandboxed(ok_dest, cells):
    from safepyrun import RunPython
    python = RunPython({"__name__": "__main__"}, ok_dests=[ok_dest])
    return [await python(c) for c in cells]


def main():
    mode, ok_dest, *cells = sys.argv[1:]
    try:
        if mode == "plain":
            g = {"__name__": "__main__"}
            values = [plain_cell(c, g) for c in cells]
        else:
            values = asyncio.run(sandboxed(ok_dest, cells))
        out = {"values": [repr(v) for v in values]}
    except BaseException as e:  # the test compares it
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


main()
