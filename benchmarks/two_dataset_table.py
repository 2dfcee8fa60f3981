"""Old-task and new-task test accuracy after the second task, as the LwF paper's tables print
them (Li & Hoiem 2016, Tables 1-2): mean ± std over seeds per benchmark and method, from the run
folders of ``configs/two-datasets.toml``.

    python benchmarks/two_dataset_table.py runs [--setting task]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from lifelong.report.runs import is_failed, load_runs, run_matrix

ORDER = ("finetune", "finetune-fc", "feature-extraction", "joint", "lwf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders or roots")
    parser.add_argument("--setting", default="task", help="setting whose accuracy is read")
    args = parser.parse_args()
    cells: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for run in load_runs(args.paths):
        if is_failed(run) or args.setting not in run["accuracy"]:
            continue
        R = run_matrix(run, args.setting)
        if R.shape != (2, 2):
            continue
        cells[(run["benchmark"], run["method"])].append((100 * R[1, 0], 100 * R[1, 1]))
    print("| benchmark | method | seeds | old task (%) | new task (%) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for bench in sorted({b for b, _ in cells}):
        methods = sorted({m for b, m in cells if b == bench},
                         key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))
        for m in methods:
            a = np.array(cells[(bench, m)])
            std = a.std(0, ddof=1) if len(a) > 1 else np.zeros(2)
            print(f"| {bench} | {m} | {len(a)} | {a[:, 0].mean():.2f} ± {std[0]:.2f} | "
                  f"{a[:, 1].mean():.2f} ± {std[1]:.2f} |")


if __name__ == "__main__":
    main()
