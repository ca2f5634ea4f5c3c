"""bench/results.json (our harness's raw samples) -> a pyperf BenchmarkSuite.

Run by bench/run.py in the plot venv, which has pyperf:
    python bench/pyperf_export.py results.json results.pyperf.json
Our harness keeps what pyperf does not do (every system alternated in one
run, each in its own venv and worker); pyperf gives the statistics and the
JSON format its tools read (`python -m pyperf stats|hist|compare_to`).
Prints one Markdown table of pyperf's mean ± std dev per benchmark.
"""
import json
import sys

import pyperf


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        data = json.load(f)
    systems, names = data["systems"], data["workloads"]
    cells = data["raw"]["cells"]
    imports = data["raw"]["imports"]
    benches = []
    rows = []
    for key, info in systems.items():
        series = {w: v for w, v in cells.get(key, {}).items() if isinstance(v, list) and v}
        w7 = imports.get(key)
        if isinstance(w7, dict) and w7.get("import") and info["kind"] != "exec":
            series["W7"] = w7["import"]
        for w, values in series.items():
            meta = {"name": "%s %s" % (names.get(w, w), info["label"]), "unit": "second",
                    "loops": 1, "python_version": info.get("interp") or ""}
            # One pyperf run per sample: our samples are already per-unit
            # times, each from its own alternation round.
            runs = [pyperf.Run([float(v)], metadata=meta, collect_metadata=False) for v in values]
            b = pyperf.Benchmark(runs)
            benches.append(b)
            mean, sd = b.mean(), (b.stdev() if len(values) > 1 else 0.0)
            rows.append((w, info["label"], b.get_nrun(), b.median(), mean, sd))
    suite = pyperf.BenchmarkSuite(benches)
    suite.dump(dst, replace=True)
    order = {w: i for i, w in enumerate(names)}
    rows.sort(key=lambda r: (order.get(r[0], 99), r[1]))
    print("| workload | system | samples | median | mean ± std dev |")
    print("|---|---|---:|---:|---:|")
    for w, label, n, med, mean, sd in rows:
        print("| %s | %s | %d | %s | %s ± %s |" % (names.get(w, w), label, n, fmt(med), fmt(mean), fmt(sd)))


def fmt(t):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(t) >= scale:
            return "%.3g %s" % (t / scale, unit)
    return "%.3g ns" % (t / 1e-9)


if __name__ == "__main__":
    main()
