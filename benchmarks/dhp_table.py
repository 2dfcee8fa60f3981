"""The DHP-Softmax table: fine-tune, DHP, and X vs DHP+X for the consolidation methods.

Thangarasa, Miconi & Taylor 2020 claim that DHP-Softmax improves on a fine-tuned network (by
4.7 points on SplitMNIST) and that adding it to EWC, online EWC, SI or MAS improves each of them.
This script runs that comparison and prints a markdown table (mean +- sample std over seeds of
the average accuracy after the last task, in the benchmark's setting) with the difference
DHP+X - X, the per-seed values and the strength each consolidation row used.

Linear controls (``--controls``): a DHP row run again with ``dhp.alpha_init_scale=0
dhp.eta_init=0``. Then ``alpha``, ``eta`` and the trace stay exactly 0 (their gradients are
products with ``alpha`` and the trace), so the layer is a linear layer built from the *same*
random draws as the DHP row, and the per-seed difference isolates the plastic part. Against
``finetune`` or X the draws differ wherever a model has one head per task (a DHP head draws
``alpha`` after its weights, which shifts every later head's initialisation).

Protocols (``--benchmark``):

* ``split-mnist`` -- the seed's protocol, in full: task-IL, one DHP-Softmax (or ``nn.Linear``)
  head per task, MLP 784-256-256 ReLU, plain SGD lr 0.01, batch 64, 10 epochs per task, raw
  pixels (the benchmark's defaults). Consolidation hyperparameters from
  ``configs/split-mnist-dhp/<X>.toml`` (the method's defaults where that file is missing).
* ``permuted-mnist`` and ``imbalanced-permuted-mnist`` -- REDUCED: domain-IL (one shared 10-unit
  output layer, as the paper's PermutedMNIST network), the PermutedMNIST protocol of
  ``configs/permuted-mnist.toml`` (Adam lr 1e-4, batch 128) with 5 tasks, 20 % of each
  task's training set, 1000 iterations per task and an MLP 784-256-256, consolidation
  hyperparameters from ``configs/permuted-mnist/<X>.toml``.

``--quick`` shortens training (1 epoch / 200 iterations) for a smoke run; its numbers are not
the table's. Results are cached as JSON lines (``--cache``), so an interrupted run resumes and a
finished one reprints instantly.

Usage::

    LIFELONG_DATA=/work/shared/data python benchmarks/dhp_table.py --benchmark split-mnist \\
        --seeds 0 1 2 3 4 --jobs 2
    python benchmarks/dhp_table.py --benchmark permuted-mnist --seeds 0 1 2 --controls all
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CONSOLIDATION = ("ewc", "online-ewc", "si", "mas")
BENCHMARKS = ("split-mnist", "permuted-mnist", "imbalanced-permuted-mnist")
STRENGTH_KEYS = ("lam", "c")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one benchmark is run for the table.

    Attributes:
        benchmark: Registered benchmark name.
        setting: Continual-learning setting trained and reported.
        overrides: Dotted overrides on top of the benchmark's defaults.
        quick: Extra overrides of ``--quick``.
        config_pattern: path under ``configs/`` (``{method}`` substituted) of the file whose
            ``[<method>]`` table gives a consolidation method's hyperparameters.
        description: One line for the table's caption.
    """

    benchmark: str
    setting: str
    overrides: dict[str, Any]
    quick: dict[str, Any]
    config_pattern: str
    description: str


def protocols() -> dict[str, Protocol]:
    """The table's protocol for each benchmark (see the module docstring)."""
    reduced_perm = {"data.n_tasks": 5, "data.train_fraction": 0.2, "data.normalize": False,
                    "model.arch": "mlp", "model.hidden": "[256,256]", "train.optimizer": "adam",
                    "train.lr": 1e-4, "train.batch_size": 128, "train.iterations": 1000}
    perm_desc = ("REDUCED PermutedMNIST protocol: domain-IL (one shared 10-unit layer), 5 tasks, "
                 "20% of each training set, MLP 784-256-256, Adam lr 1e-4, batch 128, "
                 "1000 iterations per task")
    out = {
        "split-mnist": Protocol(
            "split-mnist", "task", {"data.normalize": False, "model.head": "multi"},
            {"train.epochs": 1}, "split-mnist-dhp/{method}.toml",
            "DHP SplitMNIST protocol (full): task-IL, one head per task, MLP 784-256-256, "
            "SGD lr 0.01, batch 64, 10 epochs per task, raw pixels"),
        "permuted-mnist": Protocol(
            "permuted-mnist", "domain", reduced_perm, {"train.iterations": 200},
            "permuted-mnist/{method}.toml", perm_desc),
    }
    out["imbalanced-permuted-mnist"] = dataclasses.replace(
        out["permuted-mnist"], benchmark="imbalanced-permuted-mnist",
        description="Imbalanced " + perm_desc + " (per-class keep fractions drawn from the seed)")
    return out


def method_overrides(protocol: Protocol, method: str) -> dict[str, Any]:
    """Hyperparameters of every part of ``method`` from its ``configs/`` file, if one exists."""
    from lifelong.config import load_toml

    out: dict[str, Any] = {}
    for part in method.split("+"):
        path = CONFIGS / protocol.config_pattern.format(method=part)
        if part in ("finetune", "dhp") or not path.is_file():
            continue
        _, overrides = load_toml(path)
        out.update({k: v for k, v in overrides.items() if k.startswith(part + ".")})
    return out


def _run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Runs one (method, seed) and returns its summary (in a worker process)."""
    import torch

    from lifelong.config import make_config
    from lifelong.train.run import execute

    torch.set_num_threads(1)
    cfg = make_config(job["benchmark"], job["method"], job["seed"], job["setting"],
                      job["overrides"])
    t0 = time.perf_counter()
    res = execute(cfg, None)
    s = res["summary"][res["setting"]]
    strengths = {}
    for name, hp in cfg.hparams.items():
        if hp is None:
            continue
        for key in STRENGTH_KEYS:
            if hasattr(hp, key):
                strengths[name] = f"{key}={getattr(hp, key):g}"
    return {**job, "accuracy": s["average_accuracy"], "forgetting": s["forgetting"],
            "strengths": strengths, "seconds": round(time.perf_counter() - t0, 1)}


def _key(job: dict[str, Any]) -> str:
    return json.dumps([job["benchmark"], job["label"], job["method"], job["seed"],
                       job["setting"], sorted(job["overrides"].items())], default=str)


def _load_cache(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[_key(rec)] = rec
    return out


def run_jobs(jobs: list[dict[str, Any]], n_workers: int, cache: Path | None,
             verbose: bool = True) -> list[dict[str, Any]]:
    """Runs every job not already in ``cache`` (appending results to it) and returns all."""
    done = _load_cache(cache)
    todo = [j for j in jobs if _key(j) not in done]
    if verbose and todo:
        print(f"{len(todo)} runs to do ({len(jobs) - len(todo)} cached)", file=sys.stderr)

    def record(rec: dict[str, Any]) -> None:
        done[_key(rec)] = rec
        if cache is not None:
            with cache.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if verbose:
            print(f"  {rec['benchmark']} {rec['label']} seed {rec['seed']}: "
                  f"{100 * rec['accuracy']:.2f}% ({rec['seconds']}s)", file=sys.stderr, flush=True)

    if n_workers <= 1:
        for job in todo:
            record(_run_one(job))
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for rec in pool.map(_run_one, todo):
                record(rec)
    return [done[_key(j)] for j in jobs]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, std


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table.

    Attributes:
        label: Shown in the table (and part of the cache key).
        method: Method expression run.
        overrides: Extra overrides of this row only.
        reference: Label of the row without DHP (``dhp`` -> ``finetune``, ``dhp+X`` -> ``X``).
        control: Label of the row's linear control (the same method with ``alpha0 = eta0 = 0``,
            built from the same random draws), against which the difference is paired by seed.
    """

    label: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()
    reference: str | None = None
    control: str | None = None


# alpha0 = 0 and eta0 = 0 keep alpha, eta and the trace at exactly 0 for the whole run (their
# gradients are products with alpha and with the trace): the layer *is* a linear layer, built
# from the same random draws as the DHP row -- the paired control of the plastic part.
LINEAR_CONTROL = (("dhp.alpha_init_scale", 0.0), ("dhp.eta_init", 0.0))
CONTROL_SUFFIX = ", alpha0=eta0=0"


PENALISED_SUFFIX = ", plastic penalised"


def table_rows(consolidation: Sequence[str], controls: str, plastic: str = "paper") -> list[Row]:
    """fine-tune, DHP, then X and DHP+X for every X; linear controls for ``dhp`` only
    (``controls="dhp"``), for every DHP row (``"all"``) or none (``"none"``).

    ``plastic``: which DHP+X rows -- ``"paper"`` (alpha and eta not regularised, the paper's
    and the library's default), ``"penalised"`` (``<X>.penalize_plastic=true``: the penalty
    also holds alpha and eta) or ``"both"``.
    """
    rows = [Row("finetune", "finetune")]

    def dhp_rows(method: str, reference: str, with_control: bool) -> list[Row]:
        if not with_control:
            return [Row(method, method, reference=reference)]
        ctrl = method + CONTROL_SUFFIX
        return [Row(method, method, reference=reference, control=ctrl),
                Row(ctrl, method, LINEAR_CONTROL)]

    rows += dhp_rows("dhp", "finetune", controls in ("dhp", "all"))
    for x in consolidation:
        rows.append(Row(x, x))
        if plastic in ("paper", "both"):
            rows += dhp_rows(f"dhp+{x}", x, controls == "all")
        if plastic in ("penalised", "both"):
            rows.append(Row(f"dhp+{x}{PENALISED_SUFFIX}", f"dhp+{x}",
                            ((f"{x}.penalize_plastic", True),), reference=x))
    return rows


def format_table(protocol: Protocol, records: dict[str, list[dict[str, Any]]], rows: list[Row],
                 seeds: list[int], quick: bool) -> str:
    """Markdown table: one line per row, with the differences to its reference and control."""
    setting = {"task": "task-IL", "domain": "domain-IL", "class": "class-IL"}[protocol.setting]
    lines = [f"**{protocol.benchmark}** -- {protocol.description}"
             + (" -- QUICK (not the reference numbers)" if quick else "")
             + f"; seeds {', '.join(map(str, seeds))}; mean ± sample std over seeds.", "",
             f"| method | strength | {setting} accuracy (%) | Δ vs. without DHP | "
             f"Δ vs. linear control (paired) | forgetting (%) | per seed (%) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    accs = {r.label: [100 * rec["accuracy"] for rec in records[r.label]] for r in rows}
    for r in rows:
        a = accs[r.label]
        mean, std = _stats(a)
        fmean, _ = _stats([100 * (rec["forgetting"] or 0.0) for rec in records[r.label]])
        first = records[r.label][0]["strengths"]
        strength = ", ".join(first[part] for part in r.method.split("+") if part in first) or "--"
        delta = "" if r.reference is None else \
            f"{statistics.fmean(a) - statistics.fmean(accs[r.reference]):+.2f}"
        paired = ""
        if r.control is not None:
            dm, ds = _stats([x - y for x, y in zip(a, accs[r.control])])
            paired = f"{dm:+.2f}" + ("" if math.isnan(ds) else f" ± {ds:.2f}")
        std_text = "" if math.isnan(std) else f" ± {std:.2f}"
        lines.append(f"| {r.label} | {strength} | {mean:.2f}{std_text} | {delta} | {paired} | "
                     f"{fmean:.2f} | " + " ".join(f"{x:.2f}" for x in a) + " |")
    return "\n".join(lines)


def jobs_for(protocol: Protocol, rows: list[Row], seeds: list[int], quick: bool,
             data_dir: str | None, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """One job per (row, seed)."""
    jobs = []
    for r in rows:
        ov = {**protocol.overrides, **method_overrides(protocol, r.method), **dict(r.overrides),
              **(protocol.quick if quick else {}), "train.progress": "off", **extra}
        if data_dir:
            ov["data.data_dir"] = data_dir
        for s in seeds:
            jobs.append({"label": r.label, "benchmark": protocol.benchmark, "method": r.method,
                         "seed": s, "setting": protocol.setting, "overrides": ov})
    return jobs


def main(argv: list[str] | None = None) -> str:
    """Runs the table(s) and returns the markdown printed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", choices=(*BENCHMARKS, "all"), default="split-mnist")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds (default 0-4 for split-mnist, 0-2 for the permuted benchmarks)")
    p.add_argument("--quick", action="store_true", help="short training, for a smoke run")
    p.add_argument("--consolidation", nargs="+", default=list(CONSOLIDATION),
                   help="methods X compared with dhp+X (default: ewc online-ewc si mas)")
    p.add_argument("--controls", choices=("none", "dhp", "all"), default="dhp",
                   help="linear controls (the DHP row with alpha0 = eta0 = 0, same random draws): "
                   "for dhp only (default), for every DHP row, or none")
    p.add_argument("--plastic", choices=("paper", "penalised", "both"), default=None,
                   help="DHP+X rows with alpha and eta unregularised (paper), regularised by X's "
                   "penalty (<X>.penalize_plastic=true), or both (default: paper for split-mnist, "
                   "both for the permuted benchmarks, whose output layer is shared by all tasks)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (1 thread each)")
    p.add_argument("--cache", default=str(ROOT / "runs" / "dhp_table.jsonl"),
                   help="JSON-lines cache of finished runs ('' for none)")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (else LIFELONG_DATA)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run, e.g. --set train.epochs=2")
    args = p.parse_args(argv)
    extra = {}
    for item in args.set:
        if "=" not in item:
            p.error(f"--set takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        extra[k] = v
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    chosen = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    out = []
    for name in chosen:
        protocol = protocols()[name]
        plastic = args.plastic or ("paper" if name == "split-mnist" else "both")
        rows = table_rows(args.consolidation, args.controls, plastic)
        seeds = args.seeds or ([0, 1, 2, 3, 4] if name == "split-mnist" else [0, 1, 2])
        jobs = jobs_for(protocol, rows, seeds, args.quick, args.data_dir, extra)
        by_label: dict[str, list[dict[str, Any]]] = {}
        for rec in run_jobs(jobs, args.jobs, cache):
            by_label.setdefault(rec["label"], []).append(rec)
        table = format_table(protocol, by_label, rows, seeds, args.quick)
        print(table + "\n", flush=True)
        out.append(table)
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
