"""Fisher diagonal and MAS over one SplitMNIST task: the linear fast path against ``vmap`` only,
and the vectorised Fisher against a Python loop over samples.

Model: the DHP protocol's multi-head MLP 784-256-256 (ReLU), one 2-unit head per task; data: the
first SplitMNIST task (digits 0/1, 12,665 training images) when MNIST is found through
``LIFELONG_DATA`` / ``--data-dir``, otherwise random images of the same shape (said in the
output). Timed (best of ``--repeats``):

* ``fisher_diagonal`` / ``mas_importance`` (default: exact linear fast path, ``torch.func``
  ``vmap`` for the rest) and the same with ``linear_fast_path=False`` (``vmap`` for every
  parameter) -- the ratio is the figure quoted in :mod:`lifelong.terms.importance`;
* the Python loop of ``tests/unit/_reference.py`` (one ``autograd.grad`` per sample and class),
  on ``--loop-samples`` samples, extrapolated linearly to the whole task.

Usage::

    python benchmarks/fisher_speed.py [--variant true] [--loop-samples 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from lifelong.data.scenarios import BenchmarkOptions, build_scenario
from lifelong.nn.backbones import MLP
from lifelong.nn.heads import MultiHead
from lifelong.nn.model import ContinualModel
from lifelong.terms.importance import fisher_diagonal, mas_importance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit._reference import fisher_diagonal_loop  # noqa: E402


def _data(data_dir: str | None) -> tuple[Tensor, Tensor, str]:
    try:
        sc = build_scenario("split-mnist", BenchmarkOptions(data_dir=data_dir), 0)
        task = sc.tasks[0]
        return task.train_x, task.train_y, "SplitMNIST task 1 (digits 0/1)"
    except Exception as e:  # noqa: BLE001 - any failure to find the data: fall back, and say so
        g = torch.Generator().manual_seed(0)
        x = torch.rand(12665, 1, 28, 28, generator=g)
        return x, torch.randint(0, 2, (12665,), generator=g), f"random images ({e})"


def _time(fn: Callable[[], dict[str, Tensor]], repeat: int) -> tuple[float, dict[str, Tensor]]:
    best, out = float("inf"), {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _rel(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)) for k in b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="true", choices=("true", "empirical"))
    ap.add_argument("--batch", type=int, default=512, help="samples per chunk")
    ap.add_argument("--loop-samples", type=int, default=300,
                    help="samples the Python loop is timed on (then extrapolated; 0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y, what = _data(args.data_dir)
    n = x.shape[0]
    torch.manual_seed(0)
    model = ContinualModel(MLP(784, (256, 256)), MultiHead(256, [2] * 5))
    units = slice(0, 2)

    def batches(m: int) -> list[tuple[Tensor, Tensor]]:
        return [(x[i:min(i + args.batch, m)], y[i:min(i + args.batch, m)])
                for i in range(0, m, args.batch)]

    full = batches(n)
    print(f"data: {what}, {n} samples; model 784-256-256 multi-head MLP "
          f"({sum(p.numel() for p in model.parameters())} parameters); torch threads "
          f"{torch.get_num_threads()}, best of {args.repeats}")
    estimators: dict[str, Callable[[bool], dict[str, Tensor]]] = {
        f"Fisher {args.variant!r}": lambda fast: fisher_diagonal(
            model, full, units, args.variant, linear_fast_path=fast),
        "MAS": lambda fast: mas_importance(model, full, units, linear_fast_path=fast)}
    t_fisher = 0.0
    for name, est in estimators.items():
        t_fast, f_fast = _time(partial(est, True), args.repeats)
        t_vmap, f_vmap = _time(partial(est, False), args.repeats)
        t_fisher = t_fisher or t_fast
        print(f"  {name:15s} fast path {t_fast:7.3f} s   vmap only {t_vmap:7.3f} s   ratio "
              f"{t_vmap / t_fast:5.1f}x   max relative difference {_rel(f_fast, f_vmap):.1e}")
    if args.loop_samples:
        m = min(args.loop_samples, n)
        t_sub, f_loop = _time(lambda: fisher_diagonal_loop(model, batches(m), units,
                                                           args.variant), 1)
        t_loop = t_sub * n / m
        err = _rel(fisher_diagonal(model, batches(m), units, args.variant), f_loop)
        print(f"  Python loop: {t_sub:.2f} s on {m} samples -> {t_loop:.1f} s extrapolated; "
              f"Fisher {t_loop / t_fisher:.0f}x faster; max relative difference {err:.1e}")


if __name__ == "__main__":
    main()
