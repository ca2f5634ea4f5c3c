"""Draw bench/results.png from bench/results.json:  python plot.py results.json results.png

One bar group per workload, one bar per sandboxed system, height = ratio to
plain compile+exec of the same code on the same interpreter (log scale).
Run by the bench/.venvs/plot interpreter (matplotlib); bench/run.py calls it.
"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

COLORS = {"ours": ["#1b7837", "#5aae61", "#a6dba0"], "published": ["#d6604d", "#b2182b"],
          "restrictedpython": ["#8073ac"], "smolagents": ["#bf812d"], "monty": ["#4393c3"]}


def main(src, dst):
    with open(src) as f:
        R = json.load(f)
    systems = [k for k, s in R["systems"].items() if s["kind"] != "exec"]
    wls = list(R["workloads"])
    order = {"ours": 0, "published": 1}
    systems.sort(key=lambda k: order.get(R["systems"][k]["kind"], 2))
    fig, ax = plt.subplots(figsize=(12, 5.6), dpi=110)
    color, used = {}, {}
    for k in systems:
        kind = R["systems"][k]["kind"]
        pal = COLORS.get(kind, ["#999999"])
        color[k] = pal[used.get(kind, 0) % len(pal)]
        used[kind] = used.get(kind, 0) + 1
    ratios = [R["stats"][k][w]["ratio"] for k in systems for w in wls if "ratio" in R["stats"][k][w]]
    lo = min(ratios + [1.0]) / 1.6
    hi = max(ratios + [2.0]) * 2.5
    # per workload, only the systems that apply (peers only where measured)
    groups = {w: [k for k in systems if "ratio" in R["stats"][k][w] or R["systems"][k]["kind"] in ("ours", "published")]
              for w in wls}
    width = 0.8 / max([len(g) for g in groups.values()] + [1])
    labelled = set()
    for j, w in enumerate(wls):
        g = groups[w]
        for i, k in enumerate(g):
            x = j + (i - (len(g) - 1) / 2) * width
            st = R["stats"][k][w]
            if "ratio" in st:
                r = st["ratio"]
                ax.bar(x, r - lo, width * 0.92, bottom=lo, color=color[k],
                       label=None if k in labelled else R["systems"][k]["label"])
                labelled.add(k)
                txt = ("%.0fx" % r) if r >= 100 else ("%.1fx" % r if r >= 10 else "%.2fx" % r)
                ax.text(x, r * 1.06, txt, ha="center", va="bottom", fontsize=7, rotation=90)
            else:
                ax.text(x, lo * 1.08, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color=color[k])
        # DESIGN.md targets drawn over their group
        tgt = {"W1": 1.5, "W2": 1.2, "W5": 1.1, "W6": 1.05, "W8": 1.03, "W9": 1.03,
               "W10": 1.03, "W11": 1.03}.get(w)
        if tgt:
            ax.hlines(tgt, j - 0.45, j + 0.45, colors="#1b7837", linestyles="dashed", lw=1.2)
            ax.text(j - 0.45, tgt * 1.01, "target %gx" % tgt, fontsize=7, color="#1b7837", va="bottom", ha="left",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5))
    handles, labels = ax.get_legend_handles_labels()
    for k in systems:  # legend entries for systems that only have n/a
        if k not in labelled:
            handles.append(Patch(color=color[k]))
            labels.append(R["systems"][k]["label"] + " (n/a)")
    ax.axhline(1.0, color="black", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels([R["workloads"][w].replace(" ", "\n", 1) for w in wls], fontsize=8)
    ax.set_xlim(-0.5, len(wls) - 0.5)
    ax.set_ylabel("time / plain compile+exec, same interpreter\n(log scale; black line = 1 = plain exec)")
    meta = R["meta"]
    ax.set_title("safepyrun benchmark — ratio to plain exec (lower is better; %s mode, %s)\n"
                 "W7: fresh process with `import safepyrun` vs bare interpreter start"
                 % (R["mode"], meta["date"].split()[0]), fontsize=10)
    ax.legend(handles, labels, fontsize=8, ncol=3, loc="upper right", frameon=False)
    ax.grid(axis="y", which="major", alpha=0.3)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
