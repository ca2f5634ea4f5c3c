"""The refusal path: what a would-be denial costs when the trusted-call
search allows it, with the trusted call 20 frames up the stack.

Issue 3's target: under 5 us per allowed refusal for a 20-frame stack.

One cell calls a trusted host function `tool(depth)`, which calls an
untrusted host helper that recurses `depth` frames and then raises an audit
event: the search must walk those frames to reach `tool`.  Two events are timed in the
same cell shape:
  - `bench.unknown` is not in the engine's table: the hook would refuse it,
    so every call walks the 20 frames, finds `tool` and allows it;
  - `time.sleep` is an allowed event: the hook returns at once.
The difference per call is the refusal path (frame walk, registry lookups,
verdict), measured side by side, medians of alternating rounds.

Run with an interpreter that has safepyrun installed:
    bench/.venvs/ours-py3.11/bin/python bench/trust_search.py
Prints markdown table rows (`--header` adds the table header).  Standard
library only.
"""
import asyncio
import statistics
import sys
import time

from safepyrun import RunPython, allow

CALLS = 20_000
ROUNDS = 7


def deep(depth, event):
    if depth > 0:
        return deep(depth - 1, event)
    sys.audit(event)
    return 1


def tool(depth, event):
    return deep(depth, event)


allow(tool)


def cell(depth, event):
    return (f"t0 = clock()\n"
            f"for _ in range({CALLS}):\n"
            f"    tool({depth}, {event!r})\n"
            f"clock() - t0")


async def measure(depth):
    py = RunPython({"tool": tool, "clock": time.perf_counter}, ok_dests=[])
    refused, allowed = [], []
    for _ in range(ROUNDS):  # alternate A B A B
        refused.append(await py(cell(depth, "bench.unknown")) / CALLS)
        allowed.append(await py(cell(depth, "time.sleep")) / CALLS)
    return statistics.median(refused), statistics.median(allowed)


def main():
    version = "%d.%d" % sys.version_info[:2]
    if "--header" in sys.argv:
        print("| Python | untrusted frames between | refused-then-trusted event | "
              "allowed event | refusal path | target < 5 us |")
        print("|---|---:|---:|---:|---:|---|")
    for depth in (0, 20):
        refused, allowed = asyncio.run(measure(depth))
        cost = (refused - allowed) * 1e6
        verdict = "met" if cost < 5 else "NOT met"
        print(f"| {version} | {depth} frames | {refused * 1e6:.2f} us | "
              f"{allowed * 1e6:.2f} us | **{cost:.2f} us** | "
              f"{verdict if depth == 20 else '(reference)'} |")


if __name__ == "__main__":
    main()
