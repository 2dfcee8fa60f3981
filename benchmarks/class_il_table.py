"""Class-incremental accuracy after each step, printed like BiC's ablation table (Wu et al. 2019,
Table 6): accuracy on *all classes seen so far* after each step (mean over seeds, test sets
weighted by their size), one row per method, from run folders (``configs/*-class-il.toml``).
BiC's learned ``alpha``, ``beta`` per step (mean over seeds) follow the table.

    python benchmarks/class_il_table.py runs/class-il [--setting class]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import numpy as np

from lifelong.report.runs import is_failed, load_runs, run_matrix

ORDER = ("bic-baseline-1", "bic-baseline-2", "bic", "bic-upper-bound", "finetune", "replay",
         "icarl", "lwf")


def seen_accuracy(run: dict[str, Any], setting: str) -> np.ndarray:
    """Accuracy on all classes seen after each step: ``R[i, :i+1]``'s mean weighted by the test
    sets' sizes."""
    R = run_matrix(run, setting)
    sizes = np.array([t["test_size"] for t in run["tasks"]], dtype=float)
    return np.array([(R[i, :i + 1] * sizes[:i + 1]).sum() / sizes[:i + 1].sum()
                     for i in range(R.shape[0])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders or roots")
    parser.add_argument("--setting", default="class", help="setting whose accuracy is read")
    args = parser.parse_args()
    curves: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    learned: dict[str, list[tuple[list[float], list[float]]]] = defaultdict(list)
    classes: dict[str, list[int]] = {}
    for run in load_runs(args.paths):
        if is_failed(run) or args.setting not in run["accuracy"]:
            continue
        bench = run["benchmark"]
        curves[(bench, run["method"])].append(100 * seen_accuracy(run, args.setting))
        classes[bench] = list(np.cumsum([len(t["classes"]) for t in run["tasks"]]))
        bias = (run.get("learned") or {}).get("bias")
        if bias:
            learned[bench].append((bias["alpha"], bias["beta"]))
    for bench in sorted(classes):
        cols = classes[bench]
        print(f"\n{bench} ({args.setting}-IL): accuracy (%) on all classes seen after each step, "
              "mean ± std over seeds\n")
        print("| method | seeds | " + " | ".join(f"{c} classes" for c in cols) + " |")
        print("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
        methods = sorted({m for b, m in curves if b == bench},
                         key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))
        for m in methods:
            a = np.array(curves[(bench, m)])
            std = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
            cells = " | ".join(f"{mu:.2f} ± {sd:.2f}" for mu, sd in zip(a.mean(0), std))
            print(f"| {m} | {len(a)} | {cells} |")
        if learned[bench]:
            alpha = np.mean([a for a, _ in learned[bench]], axis=0)
            beta = np.mean([b for _, b in learned[bench]], axis=0)
            print(f"\nbic's learned bias layer per step (mean of {len(learned[bench])} seeds): "
                  f"alpha {' '.join(f'{v:.3f}' for v in alpha)}; "
                  f"beta {' '.join(f'{v:.3f}' for v in beta)}")


if __name__ == "__main__":
    main()
