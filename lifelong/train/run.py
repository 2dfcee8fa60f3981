"""Runs one configuration end to end and writes its folder atomically.

A run folder holds ``result.json`` (resolved config, accuracy matrices per evaluated setting,
summary metrics, per-term loss curves, timings, versions, seed). While it runs, the folder is
``<name>.partial`` and holds ``checkpoint.pt`` (model, terms and results after the last finished
task); only a finished run is renamed to its final name, so a crash never leaves a half-written
result.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.config import RunConfig
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.methods.registry import build_recipe
from lifelong.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer
from lifelong.nn.model import build_model
from lifelong.train.loop import fit, resolve_device

FORMAT = "lifelong.run/1"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of lifelong, torch, numpy and python (recorded in every result)."""
    from lifelong import __version__

    return {"lifelong": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in a]


def summarize_matrix(R: np.ndarray, baseline: list[float] | None = None) -> dict[str, float | None]:
    """Average accuracy, forgetting, BWT (and FWT given the untrained model's accuracies)."""
    def clean(v: float) -> float | None:
        return None if v is None or np.isnan(v) else float(v)

    out = {"average_accuracy": clean(average_accuracy(R)),
           "forgetting": clean(forgetting(R)),
           "backward_transfer": clean(backward_transfer(R)),
           "forward_transfer": None}
    if baseline is not None and R.shape[0] > 1:
        out["forward_transfer"] = clean(forward_transfer(R, np.asarray(baseline)))
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_dir_name(cfg: RunConfig, setting: str) -> Path:
    """``<benchmark>/<setting>/<method>/seed<k>`` relative to the output root."""
    return Path(cfg.benchmark) / setting / cfg.method / f"seed{cfg.seed}"


def execute(cfg: RunConfig, out_root: str | Path | None = "runs", scenario: Scenario | None = None,
            resume: bool = False) -> dict[str, Any]:
    """Runs ``cfg``: builds scenario, layout, recipe and model, trains, evaluates, saves.

    Args:
        cfg: A resolved configuration (:func:`lifelong.config.make_config`).
        out_root: Folder under which the run folder is written; ``None`` writes nothing.
        scenario: An already built scenario for the same benchmark options and seed (reuse).
        resume: Continue from ``<run folder>.partial/checkpoint.pt`` if a crashed or interrupted
            run of the same configuration left one.

    Returns:
        The result dictionary that ``result.json`` holds.
    """
    started = _now()
    if scenario is None:
        scenario = build_scenario(cfg.benchmark, cfg.data, cfg.seed)
    setting = cfg.setting or scenario.default_setting
    layout = Layout.for_scenario(scenario, setting)
    cfg.model.validate(layout)
    recipe = build_recipe(cfg.method, cfg.hparams, setting)
    torch.manual_seed(cfg.seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer)

    partial: Path | None = None
    final: Path | None = None
    if out_root is not None:
        final = Path(out_root) / run_dir_name(cfg, setting)
        partial = final.with_name(final.name + ".partial")

    state = None
    if partial is not None and resume and (partial / "checkpoint.pt").is_file():
        state = torch.load(partial / "checkpoint.pt", weights_only=False,
                           map_location=resolve_device(cfg.train.device))
        if state.get("config") != cfg.to_dict():
            raise ValueError(
                f"cannot resume {partial}: its checkpoint was written by a different "
                "configuration; delete the folder or run without --resume"
            )
        print(f"resuming {partial} after task {state['task'] + 1}", flush=True)
    elif partial is not None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)

    def checkpoint(state: dict[str, Any]) -> None:
        if partial is None:
            return
        tmp = partial / f".checkpoint.pt.tmp-{os.getpid()}"
        torch.save({**state, "config": cfg.to_dict()}, tmp)
        os.replace(tmp, partial / "checkpoint.pt")

    res = fit(model, scenario, layout, recipe, cfg.train, seed=cfg.seed,
              desc=f"{cfg.method}@{cfg.benchmark}/s{cfg.seed}", checkpoint=checkpoint,
              resume=state)
    baseline = res.baseline_accuracy or {}
    result: dict[str, Any] = {
        "format": FORMAT,
        "benchmark": cfg.benchmark,
        "method": cfg.method,
        "setting": setting,
        "seed": cfg.seed,
        "settings": list(res.accuracy),
        "config": {**cfg.to_dict(), "setting": setting},
        "scenario": {k: v for k, v in scenario.info.items() if k not in ("mean", "std")},
        "tasks": [{"id": t.id, "name": t.name, "classes": list(t.classes),
                   "train_size": t.num_train, "test_size": t.num_test} for t in scenario.tasks],
        "accuracy": {s: _nan_to_none(a) for s, a in res.accuracy.items()},
        "summary": {s: summarize_matrix(a, baseline.get(s)) for s, a in res.accuracy.items()},
        "losses": res.losses,
        "timings": res.timings,
        "versions": versions(),
        "started_at": started,
        "finished_at": _now(),
    }
    if res.baseline_accuracy is not None:
        result["baseline_accuracy"] = res.baseline_accuracy
    if partial is not None and final is not None:
        atomic_write_text(partial / "result.json", json.dumps(result, indent=1))
        (partial / "checkpoint.pt").unlink(missing_ok=True)
        old = final.with_name(final.name + f".old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(partial, final)
        if old.exists():
            shutil.rmtree(old)
        result["path"] = str(final)
    return result
