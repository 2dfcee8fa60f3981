"""Wall time of lifelong's training loop against a minimal hand-written PyTorch loop.

Both train the DHP protocol (Thangarasa et al. 2020; METHODS.md) with plain fine-tuning on
SplitMNIST: a multi-head MLP 784-256-256 (ReLU), one 2-way linear head per task, plain SGD
(lr 0.01), batch 64, raw pixels in [0, 1], ``--epochs`` epochs per task, evaluation of every task
seen so far after each task. Both use the *same* tensors (the tasks of one built scenario), the
same initialisation (``torch.manual_seed(seed)``, backbone then the heads in task order) and the
same data order (one ``torch.Generator`` seeded with the seed, one ``randperm`` per epoch), so the
final task-IL average accuracies should agree to within float rounding.

Usage::

    python benchmarks/loop_speed.py --data-dir ../shared/data --epochs 2
    LIFELONG_DATA=../shared/data python benchmarks/loop_speed.py          # 10 epochs

Prints both wall times, both accuracies and the ratio lifelong / hand-written (goal <= 1.10).
Building the scenario (reading MNIST) is done once, outside both timings. On a machine whose
cores are busy with other work, pass ``--threads 1``: torch's default thread pool then makes both
loops many times slower and the ratio meaningless.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.config import make_config
from lifelong.data.datasets import DatasetNotFoundError
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.train.run import execute

GOAL = 1.10


def hand_written(scenario: Scenario, epochs: int, seed: int, lr: float = 0.01,
                 batch_size: int = 64, hidden: tuple[int, ...] = (256, 256)) -> float:
    """Trains fine-tuning with a minimal loop and returns the final task-IL average accuracy.

    A multi-head MLP as in the DHP protocol (Thangarasa et al. 2020): the backbone and one fresh
    ``nn.Linear(hidden[-1], 2)`` per task, SGD on the backbone and the current head, per-epoch
    ``torch.randperm`` with a seeded generator, ``x[idx]`` batches, cross-entropy; after each
    task, accuracy of every task seen so far (argmax of that task's head).
    """
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = math.prod(scenario.input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    backbone = nn.Sequential(*layers)
    heads = nn.ModuleList(nn.Linear(width, len(t.classes)) for t in scenario.tasks)
    gen = torch.Generator().manual_seed(seed)
    accuracy: list[float] = []
    for t, task in enumerate(scenario.tasks):
        x = task.train_x.flatten(1)
        y = task.train_y - task.classes[0]
        opt = torch.optim.SGD([*backbone.parameters(), *heads[t].parameters()], lr=lr)
        backbone.train()
        n = x.shape[0]
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(heads[t](backbone(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        backbone.eval()
        with torch.no_grad():
            accuracy = []
            for j in range(t + 1):
                seen = scenario.tasks[j]
                pred = heads[j](backbone(seen.test_x.flatten(1))).argmax(1)
                accuracy.append(float((pred == seen.test_y - seen.classes[0]).float().mean()))
    return sum(accuracy) / len(accuracy)


def through_lifelong(scenario: Scenario, epochs: int, seed: int, data_dir: str | None
                     ) -> tuple[float, dict[str, Any]]:
    """Runs ``finetune`` through ``make_config`` + ``execute`` (nothing written, progress off)."""
    overrides: dict[str, Any] = {"train.epochs": epochs, "train.progress": "off"}
    if data_dir:
        overrides["data.data_dir"] = data_dir
    cfg = make_config("split-mnist", "finetune", seed=seed, setting="task", overrides=overrides)
    assert cfg.model.hidden == (256, 256) and cfg.train.lr == 0.01
    assert cfg.train.batch_size == 64 and cfg.train.optimizer == "sgd"
    assert cfg.data.normalize is False
    result = execute(cfg, None, scenario=scenario)
    return float(result["summary"]["task"]["average_accuracy"]), result


def _warm_up() -> None:
    """One SGD step on a tiny model, so that lazy imports of the first optimiser step
    (``torch.optim``, ``torch._dynamo``: about a second) are not charged to whichever loop runs
    first."""
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.zeros(3, 4)), torch.tensor([0, 1, 0])).backward()
    opt.step()


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the comparison and prints it; returns the measurements."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/*.gz (default: $LIFELONG_DATA, then the cache)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per task (protocol: 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate the two loops this many times; the minimum time is reported")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also cProfile one lifelong run and print its N most expensive calls")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_dir is None and not os.environ.get("LIFELONG_DATA"):
        print("loop_speed: this benchmark needs MNIST: pass --data-dir DIR or set "
              "LIFELONG_DATA=DIR "
              "(DIR/mnist/ holding the four *.gz IDX files)", file=sys.stderr)
        raise SystemExit(2)
    cfg = make_config("split-mnist", "finetune", seed=args.seed, setting="task",
                      overrides={"data.data_dir": args.data_dir} if args.data_dir else {})
    t0 = time.perf_counter()
    try:
        scenario = build_scenario("split-mnist", cfg.data, args.seed)
    except DatasetNotFoundError as e:
        print(f"loop_speed: MNIST not found: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    build_s = time.perf_counter() - t0
    print(f"split-mnist built in {build_s:.2f}s (not timed below); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.epochs} epoch(s) per task, seed {args.seed}")

    _warm_up()
    times: dict[str, list[float]] = {"lifelong": [], "hand": []}
    acc: dict[str, float] = {}
    for r in range(args.repeats):
        dt, (acc["lifelong"], result) = _timed(through_lifelong, scenario, args.epochs, args.seed,
                                               args.data_dir)
        times["lifelong"].append(dt)
        dt, acc["hand"] = _timed(hand_written, scenario, args.epochs, args.seed)
        times["hand"].append(dt)
        print(f"  repeat {r + 1}: lifelong {times['lifelong'][-1]:.2f}s "
              f"(train {result['timings']['train_s']:.2f}s, "
              f"eval {result['timings']['eval_s']:.2f}s)"
              f", hand-written {times['hand'][-1]:.2f}s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    ratio = best["lifelong"] / best["hand"]
    print(f"lifelong     : {best['lifelong']:8.2f} s   task-IL average accuracy "
          f"{100 * acc['lifelong']:.2f}%")
    print(f"hand-written : {best['hand']:8.2f} s   task-IL average accuracy "
          f"{100 * acc['hand']:.2f}%")
    verdict = "within" if ratio <= GOAL else "ABOVE"
    print(f"ratio lifelong / hand-written: {ratio:.3f} ({verdict} the goal of {GOAL:.2f})")
    if args.repeats > 1:
        print("median ratio: "
              f"{statistics.median(times['lifelong']) / statistics.median(times['hand']):.3f}")
    out: dict[str, Any] = {"times": times, "accuracy": acc, "ratio": ratio, "build_s": build_s}
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(through_lifelong, scenario, args.epochs, args.seed, args.data_dir)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.profile)
        print(buf.getvalue())
    return out


if __name__ == "__main__":
    main()
