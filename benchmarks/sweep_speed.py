"""Wall time of a 4-run sweep with 2 Ray workers against the same sweep run one after another.

The grid (default: fine-tune and EWC x seeds 0 and 1 on SplitMNIST, DHP protocol, ``--epochs``
epochs per task) runs alternately in this process (``lifelong run``) and as Ray tasks (``lifelong
run --workers 2``, a local Ray started and shut down inside the timing, as a user pays for it),
``--rounds`` times each, into fresh folders. Prints each wall time, the ratio Ray / sequential
per round and their median (goal <= 0.6 on 2 cores), and checks that both wrote the same accuracy
matrices.

Usage::

    LIFELONG_DATA=../shared/data python benchmarks/sweep_speed.py --epochs 5 --rounds 2
    python benchmarks/sweep_speed.py --benchmark split-digits --epochs 200   # no data needed
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time

from lifelong.cli import main


def _sweep(argv: list[str]) -> tuple[float, list]:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        results = main(argv)
    return time.perf_counter() - start, [r["accuracy"] for r in results]


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    grid = ["-b", args.benchmark, "-m", "finetune", "ewc", "--seeds", "0", "1", "--quiet",
            "--threads", "1", f"train.epochs={args.epochs}"]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            seq_s, seq_acc = _sweep(["run", *grid, "-o", f"{tmp}/seq{r}"])
            ray_s, ray_acc = _sweep(["run", *grid, "-o", f"{tmp}/ray{r}",
                                     "--workers", str(args.workers)])
            assert ray_acc == seq_acc, "the Ray sweep's accuracy matrices differ"
            ratios.append(ray_s / seq_s)
            print(f"round {r + 1}: sequential {seq_s:.1f} s, {args.workers} Ray workers "
                  f"{ray_s:.1f} s, ratio {ray_s / seq_s:.2f} (identical accuracy matrices)",
                  flush=True)
    print(f"median ratio {statistics.median(ratios):.2f} over {len(ratios)} rounds "
          f"(goal <= 0.60)")


if __name__ == "__main__":
    run()
