"""Per-session table of a few-shot class-incremental benchmark: accuracy on all classes seen so
far after each session (Tao et al. 2020's metric), mean ± std over seeds, for several methods.

Runs every (method, seed) with ``lifelong.train.run.execute`` into ``--out`` (runs already
finished there are reused: ``--resume`` semantics), then prints a markdown table from each
run's ``result.json`` (``seen_accuracy``). The README's FSCIL table is::

    python benchmarks/fscil_table.py --benchmark fscil-fashion-mnist \\
        --methods finetune joint ncm hebbian-prototypes topic --seeds 0 1 2 --out runs/fscil

(one torch thread; ~25 min on the 2-core machine, most of it ``joint``). Extra ``KEY=VALUE``
arguments are overrides, as on the command line.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lifelong.config import make_config
from lifelong.data.scenarios import build_scenario
from lifelong.train.run import execute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--benchmark", default="fscil-fashion-mnist")
    ap.add_argument("--methods", nargs="+",
                    default=["finetune", "joint", "ncm", "hebbian-prototypes", "topic"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/fscil")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(o.split("=", 1) for o in args.overrides)
    overrides.setdefault("train.progress", "off")
    curves: dict[str, list[list[float]]] = {}
    names: list[str] = []
    for seed in args.seeds:
        scenario = None
        for method in args.methods:
            cfg = make_config(args.benchmark, method, seed, None, overrides)
            if scenario is None:
                scenario = build_scenario(args.benchmark, cfg.data, seed)
                names = [t.name for t in scenario.tasks]
            res = execute(cfg, args.out, scenario=scenario, resume=True)
            curve = res["seen_accuracy"]["class"]
            curves.setdefault(method, []).append(curve)
            print(f"{method} seed {seed}: " + " ".join(f"{100 * v:.2f}" for v in curve)
                  + f" ({res['timings']['total_s']:.0f} s)", flush=True)
    print(f"\n{args.benchmark}: accuracy (%) on all classes seen so far after each session, "
          f"mean ± std over seeds {args.seeds}\n")
    print("| method | " + " | ".join(f"{i + 1}: {n}" for i, n in enumerate(names)) + " |")
    print("| --- |" + " ---: |" * len(names))
    for method, runs in curves.items():
        a = 100 * np.array(runs, dtype=float)
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(a.mean(0), a.std(0))]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
