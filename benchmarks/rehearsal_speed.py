"""What rehearsal costs on Split Fashion-MNIST, class-IL
(``configs/split-fashion-mnist-class-il.toml``).

1. The exemplar memory's update at each step's end (features of the step's training data plus
   herding, Rebuffi et al. 2017, Alg. 4) and BiC's second stage (logits of the held-out split
   plus the L-BFGS fit of ``alpha``, ``beta``), each as a fraction of the step's total time
   (training, both stages, evaluation), from a ``bic`` run. Target: each under 10 %.
2. Replay against fine-tuning per training sample seen (a step's optimiser-step time divided by
   the samples its epochs visit: the task's data, plus the exemplars for replay), the two run
   alternately in one process, ``--rounds`` times; the memory's update is left out of replay's
   training time and reported in (1). Target: at most 1.3x.

Runs on one thread by default (the machine is shared). Usage::

    LIFELONG_DATA=/work/shared/data python benchmarks/rehearsal_speed.py [--rounds 3] \\
        [--epochs 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lifelong.config import load_configs, make_config
from lifelong.data.layout import Layout
from lifelong.data.regimes import CurrentTask, DataRegime
from lifelong.data.scenarios import build_scenario
from lifelong.methods.registry import build_recipe
from lifelong.nn.model import build_model
from lifelong.terms.rehearsal import BiasCorrection, UpdateMemory
from lifelong.train.loop import fit

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "split-fashion-mnist-class-il.toml"


def _timed(obj: Any, name: str, log: list[float]) -> None:
    """Wraps ``obj.name`` so that each call's wall time is appended to ``log``."""
    inner: Callable[..., Any] = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        log.append(time.perf_counter() - t0)
        return out

    setattr(obj, name, wrapper)


def run(method: str, overrides: dict[str, Any]) -> dict[str, list[float]]:
    """One run of ``method``; per step: total time, training time, samples seen, memory update
    and stage-2 times."""
    top, file_overrides = load_configs([CONFIG])
    cfg = make_config(top["benchmark"], method, 0, "class", {**file_overrides, **overrides,
                                                             "train.progress": "off"})
    scenario = build_scenario(cfg.benchmark, cfg.data, cfg.seed)
    layout = Layout.for_scenario(scenario, "class")
    recipe = build_recipe(cfg.method, cfg.hparams, "class")
    if recipe.data is None:
        recipe.data = CurrentTask()
    regime: DataRegime = recipe.data
    sizes: list[int] = []
    inner = regime.training_data

    def training_data(*args: Any) -> Any:
        data = inner(*args)
        sizes.append(int(data.x.shape[0]))
        return data

    regime.training_data = training_data  # type: ignore[method-assign]
    memory: list[float] = []
    stage2: list[float] = []
    for term in recipe.terms:
        if isinstance(term, UpdateMemory):
            _timed(term, "on_task_end", memory)
        if isinstance(term, BiasCorrection):
            _timed(term, "on_task_end", stage2)
    torch.manual_seed(cfg.seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer)
    res = fit(model, scenario, layout, recipe, cfg.train, seed=cfg.seed)
    steps = res.timings["per_task_s"]
    return {"step": steps, "memory": memory or [0.0] * len(steps),
            "stage2": stage2 or [0.0] * len(steps),
            "samples": [s * cfg.train.epochs for s in sizes], "train": [res.timings["train_s"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="replay/finetune rounds (0: none)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    over = {"train.epochs": args.epochs}
    print(f"Split Fashion-MNIST class-IL, {args.epochs} epoch(s) per step, "
          f"{args.threads} thread(s)\n")
    b = run("bic", over)
    print("bic, per step: total s | memory update s (%) | stage 2 s (%)")
    for i, (s, m, q) in enumerate(zip(b["step"], b["memory"], b["stage2"])):
        print(f"  step {i + 1}: {s:7.2f} | {m:6.3f} ({100 * m / s:4.1f} %) | "
              f"{q:6.3f} ({100 * q / s:4.1f} %)")
    total = sum(b["step"])
    print(f"  whole run: memory update {100 * sum(b['memory']) / total:.1f} %, stage 2 "
          f"{100 * sum(b['stage2']) / total:.1f} % of {total:.1f} s\n")

    ratios = []
    for r in range(args.rounds):
        per_sample = {}
        for method in ("finetune", "replay") if r % 2 == 0 else ("replay", "finetune"):
            res = run(method, over)
            train = res["train"][0] - sum(res["memory"]) - sum(res["stage2"])
            per_sample[method] = train / sum(res["samples"])
        ratios.append(per_sample["replay"] / per_sample["finetune"])
        print(f"round {r + 1}: per training sample (optimiser steps only) finetune "
              f"{1e6 * per_sample['finetune']:.1f} us, replay {1e6 * per_sample['replay']:.1f} "
              f"us, ratio {ratios[-1]:.3f}")
    if not ratios:
        return
    print(f"replay / finetune per sample: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}) over {len(ratios)} rounds")


if __name__ == "__main__":
    main()
