"""One epoch of BiC's CIFAR-100 protocol (``configs/cifar100-bic.toml``) on synthetic CIFAR-shaped
data: ResNet-32, 20 classes per step, 2000 exemplars, 9:1 split, SGD 0.1 (momentum 0.9, weight
decay 2e-4), batch 128, on the device given (``auto``: CUDA when present).

Times the second step (new classes + exemplars, the distillation's teacher forward, the memory's
herding update and the bias stage) for one epoch, after a first step of one epoch, so that
the cost of the 250-epoch protocol can be estimated before the real data is at hand. Gaussian
class clusters stand in for the images (the cost does not depend on the pixels).
``--per-class 500`` is CIFAR-100's training set; fewer make a CPU smoke run.

    python benchmarks/cifar_epoch.py --device cuda
    python benchmarks/cifar_epoch.py --device cpu --per-class 20 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from lifelong.config import load_configs, make_config
from lifelong.data.layout import Layout
from lifelong.data.synthetic import synthetic_scenario
from lifelong.methods.registry import build_recipe
from lifelong.nn.model import build_model
from lifelong.terms.rehearsal import BiasCorrection, UpdateMemory
from lifelong.train.loop import fit

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cifar100-bic.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _, overrides = load_configs([CONFIG])
    cfg = make_config("synthetic", "bic", 0, "class", {
        **overrides, "data.n_tasks": None, "data.normalize": False, "train.epochs": 1,
        "train.device": args.device, "train.progress": "off"})
    scenario = synthetic_scenario(n_tasks=2, classes_per_task=20, train_per_class=args.per_class,
                                  test_per_class=10, shape=(3, 32, 32), seed=0)
    layout = Layout.for_scenario(scenario, "class")
    recipe = build_recipe("bic", cfg.hparams, "class")
    spent: dict[str, list[float]] = {"memory": [], "bias": []}
    for term in recipe.terms:
        if isinstance(term, (UpdateMemory, BiasCorrection)):
            inner = term.on_task_end

            def timed(ctx: Any, inner: Any = inner, name: str = term.name) -> None:
                t0 = time.perf_counter()
                inner(ctx)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                spent[name].append(time.perf_counter() - t0)

            term.on_task_end = timed  # type: ignore[method-assign]
    torch.manual_seed(0)
    model = build_model(scenario, layout, cfg.model, recipe.layer)
    res = fit(model, scenario, layout, recipe, cfg.train, seed=0)
    step = res.timings["per_task_s"][1]
    n = 20 * args.per_class
    print(f"device {cfg.train.device} ({torch.get_num_threads()} threads), ResNet-32, "
          f"{args.per_class} images per class")
    print(f"step 2, one epoch over {n} new images + the exemplars: {step:.1f} s in all "
          f"(memory update {spent['memory'][1]:.2f} s, bias stage {spent['bias'][1]:.2f} s); "
          f"250 epochs x 5 steps ~ {250 * 5 * step / 3600:.1f} h at this rate")


if __name__ == "__main__":
    main()
