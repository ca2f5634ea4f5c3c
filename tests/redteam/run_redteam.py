"""Red-team figures: run the escape corpus and the compatibility corpus on our
engine and on the published implementation, plus a fuzz run; print the
counts and write tests/redteam/RESULTS.md.

    python run_redteam.py --ours PY [--ours-path REPO] [--published PY]
                          [--fuzz PY --fuzz-seconds N] [--out RESULTS.md]
    python run_redteam.py --fuzz-only --fuzz PY --fuzz-seconds N

Each implementation runs in its own interpreter: the cases in one child
process each (harness.py), the compatibility corpus in one child
(compat.py); nothing imports both packages in one process.
"""
import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cases import CASES, GROUPS  # noqa: E402
from harness import run_case  # noqa: E402
import compat  # noqa: E402

FUZZ_STATS = os.path.join(HERE, "fuzz-stats.json")


def child_env(repo_path=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "XDG_CONFIG_HOME")}
    if repo_path:
        env["PYTHONPATH"] = repo_path
    env["MPLBACKEND"] = "Agg"
    return env


def version_of(python, env):
    code = ("import sys, importlib.metadata as m\n"
            "v = '%d.%d.%d' % sys.version_info[:3]\n"
            "try:\n    p = m.version('safepyrun')\nexcept Exception:\n    p = 'source tree'\n"
            "print(v, p)")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tempfile.gettempdir())
    return out.stdout.strip() or out.stderr.strip()[-200:]


def run_corpus(python, env, label):
    t0 = time.time()
    ids = list(CASES)
    with ThreadPoolExecutor(2) as ex:
        outs = dict(zip(ids, ex.map(
            lambda cid: run_case(cid, python=python, env=env), ids)))
    print(f"[{label}] {len(ids)} cases in {time.time() - t0:.0f}s", flush=True)
    return outs


def run_compat(python, env, published=False):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "compat.json")
        cenv = dict(env, XDG_CONFIG_HOME=os.path.join(d, "cfg"),
                    MPLCONFIGDIR=os.path.join(d, "mpl"))
        args = [python, os.path.join(HERE, "compat.py"), out]
        if published:
            args.append("published")
        proc = subprocess.run(args, capture_output=True, text=True, env=cenv,
                              cwd=d, timeout=600)
        if not os.path.exists(out):
            return {"error": proc.stderr[-2000:]}
        with open(out) as f:
            return json.load(f)


def run_fuzz(python, seconds, repo_path):
    artifacts = tempfile.mkdtemp(prefix="rt-fuzz-art-")
    env = child_env(repo_path)
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="rt-cfg-")
    t0 = time.time()
    proc = subprocess.run(
        [python, os.path.join(HERE, "fuzz_engine.py"),
         f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/"],
        capture_output=True, text=True, env=env, timeout=seconds + 300)
    import re
    runs = sum(int(n) for n in re.findall(r"Done (\d+) runs", proc.stderr))
    if not runs:  # stopped by a finding: take the last status line
        m = re.findall(r"^#(\d+)", proc.stderr, re.M)
        runs = int(m[-1]) if m else 0
    crashes = sorted(f for f in os.listdir(artifacts)
                     if f.startswith(("crash-", "timeout-", "oom-", "leak-")))
    stats = {"executions": runs, "crashes": len(crashes),
             "artifacts": [os.path.join(artifacts, c) for c in crashes],
             "seconds": round(time.time() - t0, 1), "exit": proc.returncode,
             "python": version_of(python, env),
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if crashes:
        stats["tail"] = proc.stderr[-3000:]
    with open(FUZZ_STATS, "w") as f:
        json.dump(stats, f, indent=1)
    print(f"[fuzz] {runs} executions in {stats['seconds']}s, "
          f"{len(crashes)} crashes", flush=True)
    return stats


def tally(outs):
    t = collections.defaultdict(lambda: [0, 0, 0])  # held, total, skipped
    for cid, o in outs.items():
        c = CASES[cid]
        for key in ((c.group, c.kind), (c.group, "all"), ("all", c.kind),
                    ("all", "all")):
            if o["status"] == "skipped":
                t[key][2] += 1
            else:
                t[key][1] += 1
                t[key][0] += o["status"] == "held"
    return t


def fmt(cell):
    held, total, skipped = cell
    if not total and not skipped:
        return "-"
    s = f"{held}/{total}"
    return s + (f" ({skipped} n/a)" if skipped else "")


def corpus_table(columns):
    """columns: [(name, tally)]"""
    rows = ["| group | kind | " + " | ".join(n for n, _ in columns) + " |",
            "|---|---|" + "---|" * len(columns)]
    first = columns[0][1]
    for g in list(GROUPS) + ["all"]:
        for k in ("clumsy", "deliberate", "all"):
            if not any(t[(g, k)][1] or t[(g, k)][2] for _, t in columns):
                continue
            rows.append(f"| {'**all**' if g == 'all' else g} | {k} | " +
                        " | ".join(fmt(t[(g, k)]) for _, t in columns) + " |")
    return "\n".join(rows)


def compat_score(res):
    if "error" in res and not isinstance(res.get("error"), dict):
        return None, None, []
    items = [v for v in res.values() if isinstance(v, dict) and v.get("plain_ok")]
    fails = sorted(k for k, v in res.items() if isinstance(v, dict)
                   and v.get("plain_ok") and not v.get("ok"))
    return sum(v["ok"] for v in items), len(items), fails


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", action="append", default=[],
                    help="an interpreter with our safepyrun (repeatable)")
    ap.add_argument("--ours-path", help="PYTHONPATH for ours (a source tree)")
    ap.add_argument("--published")
    ap.add_argument("--fuzz")
    ap.add_argument("--fuzz-seconds", type=int, default=30)
    ap.add_argument("--fuzz-only", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = ap.parse_args()
    for name in ("published", "fuzz", "ours_path"):
        if getattr(a, name):  # children run in other directories
            setattr(a, name, os.path.abspath(getattr(a, name)))
    a.ours = [os.path.abspath(p) for p in a.ours]
    started = time.time()
    if a.fuzz_only:
        run_fuzz(a.fuzz, a.fuzz_seconds, a.ours_path)
        return
    env_ours = child_env(a.ours_path)
    mine = []  # (label, outcomes, compat, version)
    for py in a.ours:
        v = version_of(py, env_ours)
        label = "ours " + v.split()[0].rsplit(".", 1)[0]
        mine.append((label, run_corpus(py, env_ours, label),
                     run_compat(py, env_ours), v))
    ours = mine[0][1]
    pub = pub_compat = pub_v = None
    if a.published:
        env_pub = child_env()
        pub_v = version_of(a.published, env_pub)
        pub = run_corpus(a.published, env_pub, "published")
        pub_compat = run_compat(a.published, env_pub, published=True)
    if a.fuzz:
        fuzz = run_fuzz(a.fuzz, a.fuzz_seconds, a.ours_path)
    elif os.path.exists(FUZZ_STATS):
        with open(FUZZ_STATS) as f:
            fuzz = json.load(f)
    else:
        fuzz = None

    pub_label = "published " + pub_v.split()[0].rsplit(".", 1)[0] if pub_v else None
    columns = [(label, tally(outs)) for label, outs, _, _ in mine]
    if pub:
        columns.append((pub_label, tally(pub)))
    lines = ["# Red-team results", "",
             f"Generated by `make redteam` (tests/redteam/run_redteam.py) on "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"in {time.time() - started:.0f} s.", "",
             *[f"- {label}: Python/safepyrun {v}" for label, _, _, v in mine],
             f"- {pub_label}: Python/safepyrun {pub_v} (+ fastaudit), run by its own "
             f"venv's python; cells run with ban_defs=False (its default bans def/class)"
             if pub_v else "- published: not run", "",
             "## Escape corpus: cases held / cases run", "",
             "A case holds when its effect did not happen and the sandbox refused "
             "it (its PermissionError, or the case's recorded reason). `n/a`: "
             "cases that do not apply (engine-internal names on the published "
             "implementation, 3.12+ monitoring on 3.11, limits we do not have yet).",
             "", corpus_table(columns), ""]
    lines += ["## Compatibility corpus: cells matching plain exec", "",
              "| | cells passing / total | failing |", "|---|---|---|"]
    for label, _, comp, _ in mine + ([(pub_label, None, pub_compat, None)] if pub else []):
        c, n, fails = compat_score(comp)
        lines.append(f"| {label} | {c}/{n} | {', '.join(fails) or '-'} |")
    lines += ["", "## Fuzzing (atheris: path checker, source checks, cell runner)", ""]
    if fuzz:
        lines += [f"{fuzz['executions']:,} executions in {fuzz['seconds']} s "
                  f"({fuzz['python']}, {fuzz['date']}); crashes found: "
                  f"{fuzz['crashes']}."]
    else:
        lines += ["not run (`make fuzz`)."]
    lines += ["", "## Cases that do not hold on ours", "",
              "| case | group | kind | " + " | ".join(l for l, _, _, _ in mine) +
              " | known gap |", "|---|---|---|" + "---|" * len(mine) + "---|"]
    for cid in CASES:
        stats = [outs[cid]["status"] for _, outs, _, _ in mine]
        if all(st in ("held", "skipped") for st in stats):
            continue
        c = CASES[cid]
        cells = []
        for _, outs, _, _ in mine:
            o = outs[cid]
            cells.append("held" if o["status"] == "held" else
                         "n/a" if o["status"] == "skipped" else
                         ("; ".join(o["effects"][:2]) or o["status"]))
        lines.append(f"| {cid} | {c.group} | {c.kind} | " + " | ".join(cells) +
                     f" | {c.known_gap or '**not marked**'} |")
    if pub:
        lines += ["", "## Published implementation: cases not held", ""]
        by = collections.defaultdict(list)
        for cid, o in pub.items():
            if o["status"] not in ("held", "skipped"):
                by[CASES[cid].group].append(cid)
        for g in GROUPS:
            if by[g]:
                lines.append(f"- {g}: " + ", ".join(by[g]))
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    unmarked = sorted({cid for _, outs, _, _ in mine for cid, o in outs.items()
                       if o["status"] not in ("held", "skipped")
                       and not CASES[cid].known_gap})
    print(f"wrote {a.out} in {time.time() - started:.0f} s; "
          f"cases not held and not marked known_gap: {unmarked or 'none'}")


if __name__ == "__main__":
    main()
