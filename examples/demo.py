"""safepyrun demo: an LLM-style cell runs in this process, sees its objects,
and its dangerous side effects are refused.  Run with `make demo`."""
import asyncio
import os
import tempfile
from pathlib import Path

from safepyrun import RunPython, allow

workdir = Path(tempfile.mkdtemp(prefix="safepyrun-demo-"))
archive_dir = Path(tempfile.mkdtemp(prefix="safepyrun-demo-archive-"))


@allow  # a host tool the LLM may use: it writes where the cell may not
def archive(name: str) -> str:
    """Copy a report from the work directory into the archive."""
    target = archive_dir / name
    target.write_text((workdir / name).read_text())
    return str(target)

sales = {"north": [120, 95, 143], "south": [88, 102, 97], "east": [150, 160, 171]}
python = RunPython(globals(), ok_dests=[str(workdir)])


def show(title, code):
    print(f"\n--- {title} ---")
    print("\n".join("  >>> " + line for line in code.strip().splitlines()))
    return code


async def main():
    code = show("an LLM cell computes with the host's data", """
import statistics
totals = {region: sum(v) for region, v in sales.items()}
best = max(totals, key=totals.get)
print(f"{'region':<8}{'total':>7}{'mean':>8}")
for region, v in sales.items():
    print(f"{region:<8}{sum(v):>7}{statistics.mean(v):>8.1f}")
(workdir / 'report.txt').write_text(f'best region: {best}\\n')
best
""")
    print("  result:", repr(await python(code)))
    print("  report written inside ok_dests:", (workdir / "report.txt").read_text().strip())

    code = show("a write outside ok_dests is refused", """
open(os.path.expanduser('~/notes.txt'), 'w').write('oops')
""")
    try:
        await python(code)
    except PermissionError as e:
        print("  PermissionError:", e)
    print("  ~/notes.txt exists afterwards:",
          os.path.exists(os.path.expanduser("~/notes.txt")) and "(it existed before)" or False)

    code = show("running a program is refused", """
import subprocess
subprocess.run(['rm', '-rf', str(workdir)])
""")
    try:
        await python(code)
    except PermissionError as e:
        print("  PermissionError:", e)
    print("  workdir still there:", workdir.exists())

    code = show("a tool the host trusted with allow() may write elsewhere", """
archive('report.txt')
""")
    print("  result:", repr(await python(code)))
    code = show("...but the cell itself still may not", """
(archive_dir / 'forged.txt').write_text('nope')
""")
    try:
        await python(code)
    except PermissionError as e:
        print("  PermissionError:", str(e)[:110] + "...")
    print("  forged.txt exists:", (archive_dir / "forged.txt").exists())

    code = show("the run report an agent hands back to its LLM", """
print('checking the archive')
open('/etc/hostname-copy', 'w')
""")
    result = await python.run(code)
    print("  " + str(result).replace("\n", "\n  "))

    code = show("a runaway cell is stopped by its time limit", """
while True:
    try:
        pass
    except BaseException:
        pass
""")
    result = await python.run(code, timeout=0.5)
    print(f"  {type(result.error).__name__}: {result.error} "
          f"(after {result.elapsed:.2f} s)")

    print("\n--- the host itself is not gated ---")
    print("  best region exported to the host namespace:", best)


asyncio.run(main())
