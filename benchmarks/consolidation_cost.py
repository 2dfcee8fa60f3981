"""Cost of synaptic consolidation and LwF: wall time relative to fine-tuning, and memory per task.

1. Wall time of ``finetune``, ``ewc``, ``online-ewc``, ``si``, ``mas``, ``mas-local``, ``dhp``
   and ``lwf`` (a frozen snapshot's forward per batch, plus its warm-up epoch per new task) on
   SplitMNIST under the DHP protocol (multi-head MLP 784-256-256, SGD 0.01, batch 64), with
   ``--epochs`` epochs per task (default 10, the protocol; fewer make the ratio slightly
   pessimistic, since the once-per-task importance estimate weighs more). Fine-tune runs before
   every round and once more at the end; its median is the reference.
2. Bytes of the method state (every tensor in the term's ``state_dict()``) after each of 10
   PermutedMNIST tasks (MLP 784-1000-1000, the permuted protocol's model), training only a few
   iterations per task on a small fraction of the data (the state's size does not depend on
   how well the model learned): EWC keeps one (Fisher, anchor) pair per task and grows
   linearly; online EWC, SI and MAS keep one pair whatever the number of tasks.

Needs real MNIST (``LIFELONG_DATA`` or ``--data-dir``). Usage::

    python benchmarks/consolidation_cost.py [--epochs 10] [--threads 1] [--methods si ewc]
                                            [--rounds 3] [--skip-time] [--skip-memory]

With ``--rounds R`` every method runs R times, alternating with fine-tune, and the medians are
compared (wall times on a shared machine swing by +-5 % from run to run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch import Tensor

from lifelong.config import make_config
from lifelong.data.layout import Layout
from lifelong.data.scenarios import build_scenario
from lifelong.methods.registry import build_recipe
from lifelong.nn.model import build_model
from lifelong.train.loop import fit
from lifelong.train.run import execute

METHODS = ("ewc", "online-ewc", "si", "mas", "mas-local")
TIMED = (*METHODS, "dhp", "lwf")  # dhp: the DHP-Softmax output layer, no penalty


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor inside a (nested) state dict."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def wall_times(epochs: int, data_dir: str | None, methods: tuple[str, ...] = TIMED,
               rounds: int = 1) -> None:
    """Times every method ``rounds`` times, alternating with fine-tune (which also runs once
    more at the end), and prints each method's median time over the median fine-tune time."""
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    overrides = {"train.epochs": epochs, "train.progress": "off"}
    if data_dir:
        overrides["data.data_dir"] = data_dir
    cfg0 = make_config("split-mnist", "finetune", 0, None, overrides)
    scenario = build_scenario("split-mnist", cfg0.data, 0)
    times: dict[str, list[float]] = {m: [] for m in ("finetune", *methods)}
    cpu: dict[str, list[float]] = {m: [] for m in ("finetune", *methods)}
    accuracy: dict[str, float] = {}
    order = [m for _ in range(rounds) for m in ("finetune", *methods)] + ["finetune"]
    for i, method in enumerate(order):
        cfg = make_config("split-mnist", method, 0, None, overrides)
        t0, c0 = time.perf_counter(), time.process_time()
        res = execute(cfg, None, scenario=scenario)
        times[method].append(time.perf_counter() - t0)
        cpu[method].append(time.process_time() - c0)
        accuracy[method] = res["summary"]["task"]["average_accuracy"]
        print(f"  [{i + 1}/{len(order)}] {method}: {times[method][-1]:.1f} s "
              f"(cpu {cpu[method][-1]:.1f} s)", flush=True)
    ref = statistics.median(times["finetune"])
    runs = ", ".join(f"{t:.1f}" for t in times["finetune"])
    print(f"SplitMNIST, DHP protocol, {epochs} epoch(s) per task, seed 0, "
          f"torch threads {torch.get_num_threads()}, {rounds} round(s); fine-tune reference "
          f"(median) {ref:.1f} s (runs: {runs} s)")
    cpu_ref = statistics.median(cpu["finetune"])
    print(f"  {'method':12s} {'wall (s)':>9s} {'x fine-tune':>12s} {'range':>13s} "
          f"{'cpu x ft':>9s} {'task-IL acc':>12s}")
    for method in methods:
        t = statistics.median(times[method])
        lo, hi = min(times[method]) / ref, max(times[method]) / ref
        c = statistics.median(cpu[method]) / cpu_ref
        print(f"  {method:12s} {t:9.1f} {t / ref:12.2f} {lo:6.2f}-{hi:<6.2f} {c:9.2f} "
              f"{100 * accuracy[method]:11.2f}%")


def state_memory(n_tasks: int, iterations: int, data_dir: str | None) -> None:
    overrides: dict[str, Any] = {"train.iterations": iterations, "train.progress": "off",
                                 "data.train_fraction": 0.02, "data.n_tasks": n_tasks}
    if data_dir:
        overrides["data.data_dir"] = data_dir
    cfg0 = make_config("permuted-mnist", "finetune", 0, None, overrides)
    scenario = build_scenario("permuted-mnist", cfg0.data, 0)
    table: dict[str, list[int]] = {}
    for method in METHODS:
        cfg = make_config("permuted-mnist", method, 0, None, overrides)
        layout = Layout.for_scenario(scenario, scenario.default_setting)
        recipe = build_recipe(method, cfg.hparams, layout.setting)
        torch.manual_seed(0)
        model = build_model(scenario, layout, cfg.model)
        sizes: list[int] = []
        fit(model, scenario, layout, recipe, cfg.train, seed=0,
            checkpoint=lambda state, sizes=sizes, recipe=recipe: sizes.append(
                tensor_bytes(recipe.terms[0].state_dict())))
        table[method] = sizes
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nPermutedMNIST ({n_tasks} tasks, domain-IL, MLP 784-1000-1000, {n_params} parameters"
          f" = {4 * n_params / 2**20:.1f} MiB): method state after each task (MiB, every tensor "
          "of the term's state_dict)")
    print("  " + f"{'method':12s}" + "".join(f"{t + 1:>7d}" for t in range(n_tasks)))
    for method, sizes in table.items():
        print("  " + f"{method:12s}" + "".join(f"{s / 2**20:7.1f}" for s in sizes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10, help="epochs per task for the timing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--tasks", type=int, default=10, help="PermutedMNIST tasks for the memory")
    ap.add_argument("--iterations", type=int, default=5, help="iterations per permuted task")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--methods", nargs="+", default=list(TIMED), choices=TIMED,
                    metavar="METHOD", help=f"methods to time (default: {' '.join(TIMED)})")
    ap.add_argument("--rounds", type=int, default=1,
                    help="timing rounds (methods alternate with fine-tune; medians reported)")
    ap.add_argument("--skip-time", action="store_true", help="only the memory table")
    ap.add_argument("--skip-memory", action="store_true", help="only the timing table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_time:
        wall_times(args.epochs, args.data_dir, tuple(args.methods), args.rounds)
    if not args.skip_memory:
        state_memory(args.tasks, args.iterations, args.data_dir)


if __name__ == "__main__":
    main()
