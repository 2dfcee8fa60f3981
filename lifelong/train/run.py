"""Runs one configuration end to end and writes its folder atomically.

A run folder holds ``result.json`` (resolved config, accuracy matrices per evaluated setting,
summary metrics, per-term loss curves, timings, versions, seed, and under ``learned`` what terms
report through :meth:`~lifelong.terms.base.Term.report`, e.g. BiC's ``alpha``, ``beta`` per
step). While it runs, the folder is ``<name>.partial`` and holds ``checkpoint.pt`` (model, terms
and results after the last finished task); only a finished run is renamed to its final name, so
a crash never leaves a half-written result. A run whose loss diverges (NaN or infinite) is a
finished run too: ``result.json`` says ``"status": "failed"`` with the message, and keeps what
was finished before.

Every write is atomic (a temporary file, then ``os.replace``), so a kill at any moment leaves one
of these, each of which ``--resume`` (:func:`resume_plan`) and ``lifelong report`` accept:
``<run>.partial/`` without a checkpoint (started again), with ``checkpoint.pt`` (continued),
with ``result.json`` (finished: moved into place), ``<run>/`` (finished), and leftovers
``<run>.old-<pid>/`` or ``.*.tmp-<pid>`` files (removed by the next run, ignored by reports).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lifelong.config import RunConfig, command_line, config_difference
from lifelong.data.layout import Layout
from lifelong.data.scenarios import Scenario, build_scenario
from lifelong.methods.registry import build_recipe
from lifelong.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    seen_accuracy_curve,
)
from lifelong.nn.model import build_model
from lifelong.train.loop import DivergenceError, FitResult, fit, resolve_device

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


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def dumps_result(result: dict[str, Any]) -> str:
    """``result`` as strict JSON: no bare ``NaN``/``Infinity`` tokens (they become ``null``)."""
    return json.dumps(json_safe(result), indent=1, allow_nan=False)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def read_result(path: Path) -> dict[str, Any]:
    """A run's ``result.json``; ``ValueError`` naming the file if it cannot be read or decoded."""
    try:
        run = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read as a run result ({_one_line(error)})") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path} is not a run result (not a JSON object)")
    return run


def load_checkpoint(path: Path, cfg: RunConfig, device: Any = "cpu") -> dict[str, Any]:
    """The training state in ``<run>.partial/checkpoint.pt``, checked against ``cfg``.

    Raises:
        ValueError: One line naming the file and what to do: the file is truncated or corrupted,
            or was written by another configuration.
    """
    try:
        state = torch.load(path, weights_only=False, map_location=device)
    except Exception as error:  # torch raises many kinds for a truncated zip or pickle
        raise ValueError(f"cannot resume from {path}: the checkpoint is truncated or corrupted "
                         f"({_one_line(error)}); delete {path.parent} to start that run "
                         "from its beginning") from None
    if not isinstance(state, dict) or not {"task", "model", "config"} <= set(state):
        raise ValueError(f"cannot resume from {path}: not a lifelong checkpoint; delete "
                         f"{path.parent} to start that run from its beginning")
    diff = config_difference(cfg.to_dict(), state["config"])
    if diff is not None:
        raise ValueError(f"cannot resume {path.parent}: its checkpoint was written by a "
                         f"different configuration ({diff}); delete the folder or run without "
                         "--resume")
    return state


def _install(partial: Path, final: Path) -> None:
    """Moves a finished ``<run>.partial`` into place as ``<run>`` (replacing an older one)."""
    old = final.with_name(final.name + f".old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    if old.exists():
        shutil.rmtree(old)


def _remove_leftovers(final: Path) -> None:
    """Removes ``<run>.old-*`` folders that a kill during :func:`_install` left behind."""
    if final.parent.is_dir():
        for old in final.parent.glob(final.name + ".old-*"):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)


def resume_plan(cfg: RunConfig, out_root: str | Path, setting: str, device: Any = "cpu",
                check_checkpoint: bool = True, partial_only: bool = False) -> str:
    """What ``--resume`` does with this run: ``finished`` (its ``result.json`` exists: skipped),
    ``continue`` (from ``<run>.partial/checkpoint.pt``) or ``start``. With ``check_checkpoint``
    a checkpoint is loaded and checked too (:func:`load_checkpoint`); without, only its presence
    counts (for a caller that loads it next anyway). With ``partial_only`` only the run's
    ``.partial`` folder counts, not a finished folder of an earlier sweep (a sweep re-running a
    run whose worker died).

    Raises:
        ValueError: One line naming the file and what to do, when a result or checkpoint cannot
            be read or belongs to another configuration (checked before any training).
    """
    final = Path(out_root) / run_dir_name(cfg, setting)
    partial = final.with_name(final.name + ".partial")
    mine = {**cfg.to_dict(), "setting": setting}
    for folder in (partial,) if partial_only else (partial, final):  # <run>.partial's result
        # is the newer one: killed
        path = folder / "result.json"  # between writing it and moving the folder into place
        if path.is_file():
            diff = config_difference(mine, read_result(path).get("config") or {})
            if diff is not None:
                raise ValueError(f"cannot resume into {folder}: it holds a finished run of another "
                                 f"configuration ({diff}); choose another --out, or run without "
                                 "--resume to replace it")
            return "finished"
    if (partial / "checkpoint.pt").is_file():
        if check_checkpoint:
            load_checkpoint(partial / "checkpoint.pt", cfg, device)
        return "continue"
    return "start"


def _task_line(label: str, state: dict[str, Any], since_step: int, n_tasks: int,
               elapsed: float) -> str:
    """``<label> task 2/5: 3.1 s, loss 0.412 (ce 0.400, ewc 0.012)`` from a checkpoint state."""
    means = {}
    for name, points in state["losses"].items():
        values = [v for step, v in points if step > since_step]
        if values:
            means[name] = sum(values) / len(values)
    loss = f", loss {sum(means.values()):.4g}" if means else ""
    if len(means) > 1:
        loss += " (" + ", ".join(f"{k} {v:.4g}" for k, v in means.items()) + ")"
    return f"  {label} task {state['task'] + 1}/{n_tasks}: {elapsed:.1f} s{loss}"


def run_dir_name(cfg: RunConfig, setting: str) -> Path:
    """``<benchmark>/<setting>/<method>/seed<k>`` relative to the output root."""
    return Path(cfg.benchmark) / setting / cfg.method / f"seed{cfg.seed}"


def run_record(cfg: RunConfig, scenario: Scenario, setting: str, res: FitResult, started: str,
               failure: DivergenceError | None = None, command: str | None = None
               ) -> dict[str, Any]:
    """The ``result.json`` of a run (format ``lifelong.run/1``, JSON-safe): configuration,
    scenario, accuracy matrices and their summaries, loss curves, timings, the command that
    reproduces it (``command``, when given), versions; a failed run's ``error`` and
    ``failure``."""
    baseline = res.baseline_accuracy or {}
    test_sizes = [max(t.num_test, 1) for t in scenario.tasks]
    result: dict[str, Any] = {
        "format": FORMAT,
        "status": "finished" if failure is None else "failed",
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
        # accuracy on the union of the test sets seen so far, after each task (FSCIL's metric)
        "seen_accuracy": {s: seen_accuracy_curve(a, test_sizes).tolist()
                          for s, a in res.accuracy.items()},
        "losses": res.losses,
        "timings": res.timings,
        "threads": torch.get_num_threads(),
        **({"command": command} if command is not None else {}),
        "versions": versions(),
        "started_at": started,
        "finished_at": _now(),
    }
    if failure is not None:
        result["error"] = (f"{cfg.method} on {cfg.benchmark} ({setting}-IL, seed {cfg.seed}): "
                           f"{failure}")
        result["failure"] = {"task": failure.task, "step": failure.step, "term": failure.term}
    if res.baseline_accuracy is not None:
        result["baseline_accuracy"] = res.baseline_accuracy
    return json_safe(result)


def write_run(final: Path, result: dict[str, Any], files: dict[str, Any] | None = None
              ) -> Path:
    """Writes a finished run's folder as :func:`execute` does, for a caller with its own training
    (``lifelong distill``): ``<final>.partial/`` with every ``files`` entry (``name -> object``
    saved by ``torch.save``) and ``result.json``, each written atomically, then moved into place
    as ``final`` (replacing an older run). Returns ``final``."""
    _remove_leftovers(final)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for name, obj in (files or {}).items():
        tmp = partial / f".{name}.tmp-{os.getpid()}"
        torch.save(obj, tmp)
        os.replace(tmp, partial / name)
    atomic_write_text(partial / "result.json", dumps_result(result))
    _install(partial, final)
    return final


def execute(cfg: RunConfig, out_root: str | Path | None = "runs", scenario: Scenario | None = None,
            resume: bool | Literal["partial"] = False) -> dict[str, Any]:
    """Runs ``cfg``: builds scenario, layout, recipe and model, trains, evaluates, saves.

    Args:
        cfg: A resolved configuration (:func:`lifelong.config.make_config`).
        out_root: Folder under which the run folder is written; ``None`` writes nothing.
        scenario: An already built scenario of ``cfg.benchmark`` with the same options and seed
            (reuse); one of another name is refused (its result would be filed wrongly).
        resume: Skip the run if its ``result.json`` exists (returning it, with ``"skipped":
            True``), else continue from ``<run folder>.partial/checkpoint.pt`` if a crashed or
            interrupted run of the same configuration left one (:func:`resume_plan`).
            ``"partial"``: only continue from (or install) the run's own ``.partial`` folder,
            ignoring a finished folder of an earlier sweep (a sweep's re-run of a dead worker).

    Returns:
        The result dictionary that ``result.json`` holds (``"status"`` is ``finished`` or
        ``failed``; a failed run's ``error`` is one line naming the run, the task, the step and
        the loss term), plus ``"path"`` where it was written.
    """
    started, clock = _now(), time.perf_counter()
    if scenario is None:
        scenario = build_scenario(cfg.benchmark, cfg.data, cfg.seed)
    elif scenario.name != cfg.benchmark:
        raise ValueError(
            f"execute: the scenario is {scenario.name!r} but the configuration is for benchmark "
            f"{cfg.benchmark!r}, under whose name the result would be filed; make the "
            f"configuration with make_config({scenario.name!r}, ...) (register your data first: "
            "lifelong.data.custom.register)")
    setting = cfg.setting or scenario.default_setting
    layout = Layout.for_scenario(scenario, setting)
    cfg.model.validate(layout)
    recipe = build_recipe(cfg.method, cfg.hparams, setting)
    label = f"{cfg.method}@{cfg.benchmark}/s{cfg.seed}"

    partial: Path | None = None
    final: Path | None = None
    if out_root is not None:
        final = Path(out_root) / run_dir_name(cfg, setting)
        partial = final.with_name(final.name + ".partial")
        _remove_leftovers(final)

    state = None
    if partial is not None and final is not None and resume:
        plan = resume_plan(cfg, out_root or ".", setting, check_checkpoint=False,
                           partial_only=resume == "partial")
        if plan == "finished":
            if (partial / "result.json").is_file():  # killed before its folder was renamed
                (partial / "checkpoint.pt").unlink(missing_ok=True)
                _install(partial, final)
            done = read_result(final / "result.json")
            done["path"], done["skipped"] = str(final), True
            return done
        if plan == "continue":
            state = load_checkpoint(partial / "checkpoint.pt", cfg,
                                    resolve_device(cfg.train.device))
            print(f"resuming {partial} after task {state['task'] + 1}", flush=True)
            for tmp in partial.glob(".*.tmp-*"):  # a write that a kill interrupted
                tmp.unlink()
    if partial is not None and state is None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)

    torch.manual_seed(cfg.seed)
    model = build_model(scenario, layout, cfg.model, recipe.layer)
    lines = cfg.train.progress != "off"
    last_step = [int(state["step"]) if state is not None else 0]

    board = None
    if cfg.train.tensorboard:
        from lifelong.train.tensorboard import TensorBoardLog

        board = TensorBoardLog(Path(cfg.train.tensorboard) / run_dir_name(cfg, setting),
                               [t.name for t in scenario.tasks],
                               f"{cfg.method} on {cfg.benchmark}, seed {cfg.seed}",
                               command_line(cfg), since_step=last_step[0])

    def checkpoint(state: dict[str, Any]) -> None:
        if board is not None:
            board.task_done(state)
        if lines:
            print(_task_line(label, state, last_step[0], len(scenario.tasks),
                             time.perf_counter() - clock), file=sys.stderr, flush=True)
        last_step[0] = int(state["step"])
        if partial is None:
            return
        tmp = partial / f".checkpoint.pt.tmp-{os.getpid()}"
        torch.save({**state, "config": cfg.to_dict()}, tmp)
        os.replace(tmp, partial / "checkpoint.pt")

    failure: DivergenceError | None = None
    try:
        res = fit(model, scenario, layout, recipe, cfg.train, seed=cfg.seed, desc=label,
                  checkpoint=checkpoint, resume=state)
    except DivergenceError as error:
        if error.result is None:
            raise
        failure, res = error, error.result
        res.timings["total_s"] = res.timings["train_s"] + res.timings["eval_s"]
    finally:
        if board is not None:
            board.close()
    result = run_record(cfg, scenario, setting, res, started, failure, command_line(cfg))
    if failure is not None:
        print(f"lifelong: run failed: {result['error']}", file=sys.stderr, flush=True)
    learned = {term.name: term.report() for term in recipe.terms if term.report()}
    if learned:
        result["learned"] = json_safe(learned)  # e.g. BiC's alpha, beta per step
    if partial is not None and final is not None:
        atomic_write_text(partial / "result.json", dumps_result(result))
        (partial / "checkpoint.pt").unlink(missing_ok=True)
        _install(partial, final)
        result["path"] = str(final)
    return result
