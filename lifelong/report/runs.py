"""Reading saved runs (``result.json``, format ``lifelong.run/1``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from lifelong.metrics import as_accuracy_matrix

__all__ = ["RESULT_FILE", "RUN_FORMAT", "is_failed", "is_unfinished", "load_runs", "run_matrix",
           "run_settings", "validate_run"]

RESULT_FILE = "result.json"
RUN_FORMAT = "lifelong.run/1"
PATH_KEY = "_path"


def _describe(run: Mapping[str, Any]) -> str:
    path = run.get(PATH_KEY)
    if path:
        return str(path)
    fields = ", ".join(f"{key}={run.get(key)!r}" for key in ("benchmark", "method", "seed"))
    return f"run ({fields})"


def is_failed(run: Mapping[str, Any]) -> bool:
    """Whether the run stopped early (its loss diverged): ``"status": "failed"``."""
    return run.get("status") == "failed"


def run_settings(run: Mapping[str, Any]) -> list[str]:
    """The evaluated settings of a run: its ``settings`` list, else the keys of ``accuracy``."""
    settings = run.get("settings")
    return list(settings) if settings is not None else list(run["accuracy"])


def run_matrix(run: Mapping[str, Any], setting: str | None = None) -> np.ndarray:
    """The accuracy matrix (float64, NaN for ``null``) of ``run`` for ``setting``.

    Args:
        run: A run dictionary as returned by :func:`load_runs`.
        setting: Evaluated setting; ``None`` means the run's own (trained) ``setting``.

    Raises:
        ValueError: If the run has no matrix for that setting.
    """
    key = run["setting"] if setting is None else setting
    accuracy = run.get("accuracy", {})
    if key not in accuracy:
        raise ValueError(
            f"{_describe(run)} has no accuracy matrix for setting {key!r}; "
            f"it has {sorted(accuracy)}"
        )
    return as_accuracy_matrix(accuracy[key], name=f"accuracy[{key!r}]")


def validate_run(run: Any, source: str | None = None) -> None:
    """Check that ``run`` follows the ``lifelong.run/1`` schema as far as reports need it.

    Checks the format tag, ``benchmark``/``method``/``setting`` strings, an integer ``seed``,
    one square matrix per setting in ``accuracy`` (all the same size, fractions in ``[0, 1]``),
    that ``settings`` (if present) lists exactly those keys and contains ``setting``, that
    ``tasks`` (if present) has one entry per task, and the shape of ``baseline_accuracy``.

    Args:
        run: Parsed ``result.json``.
        source: Name used in error messages (defaults to the run's ``_path`` or its keys).

    Raises:
        ValueError: Naming the source and the first problem found.
    """
    where = source or (_describe(run) if isinstance(run, Mapping) else "run")

    def fail(problem: str) -> NoReturn:
        raise ValueError(f"{where}: malformed {RUN_FORMAT} result: {problem}")

    if not isinstance(run, Mapping):
        fail(f"expected a JSON object at the top level, got {type(run).__name__}")
    if run.get("format") != RUN_FORMAT:
        fail(f"'format' must be {RUN_FORMAT!r}, got {run.get('format')!r}")
    for key in ("benchmark", "method", "setting"):
        if not isinstance(run.get(key), str) or not run[key]:
            fail(f"{key!r} must be a non-empty string, got {run.get(key)!r}")
    status = run.get("status", "finished")
    if status not in ("finished", "failed"):
        fail(f"'status' must be 'finished' or 'failed', got {status!r}")
    if status == "failed" and not isinstance(run.get("error"), str):
        fail("a failed run needs its 'error' message")
    seed = run.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        fail(f"'seed' must be an integer, got {seed!r}")
    accuracy = run.get("accuracy")
    if not isinstance(accuracy, Mapping) or not accuracy:
        fail("'accuracy' must be an object mapping each evaluated setting to its T x T matrix")
    settings = run.get("settings")
    if settings is not None:
        if not isinstance(settings, list) or set(settings) != set(accuracy):
            fail(f"'settings' {settings!r} must list exactly the keys of 'accuracy' "
                 f"{sorted(accuracy)}")
    if run["setting"] not in accuracy:
        fail(f"trained setting {run['setting']!r} has no matrix in 'accuracy' "
             f"(has {sorted(accuracy)})")
    sizes = set()
    for key, value in accuracy.items():
        try:
            matrix = as_accuracy_matrix(value, name=f"accuracy[{key!r}]")
        except ValueError as error:
            fail(str(error))
        finite = matrix[~np.isnan(matrix)]
        if np.any((finite < 0.0) | (finite > 1.0)):
            fail(f"accuracy[{key!r}] has values outside [0, 1]; accuracies are stored as "
                 "fractions, not percentages")
        sizes.add(matrix.shape[0])
    if len(sizes) != 1:
        fail(f"accuracy matrices have different sizes {sorted(sizes)}")
    (num_tasks,) = sizes
    tasks = run.get("tasks")
    if tasks is not None and (not isinstance(tasks, list) or len(tasks) != num_tasks):
        fail(f"'tasks' must list {num_tasks} task(s) to match the accuracy matrices")
    baselines = run.get("baseline_accuracy")
    if baselines is not None:
        if not isinstance(baselines, Mapping):
            fail("'baseline_accuracy' must map settings to one accuracy per task")
        for key, value in baselines.items():
            if not isinstance(value, list) or len(value) != num_tasks:
                fail(f"baseline_accuracy[{key!r}] must be a list of {num_tasks} accuracies")


def _read_run(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{path}: cannot read run result: {error}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: malformed {RUN_FORMAT} result: not UTF-8 text "
                         f"({error.reason} at byte {error.start}); delete the run folder, or run "
                         "it again") from None
    try:
        run = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: malformed {RUN_FORMAT} result: invalid JSON ({error})") from error
    validate_run(run, source=str(path))
    run[PATH_KEY] = str(path)
    return run


def is_unfinished(name: str) -> bool:
    """Whether a folder or file name is a run in progress or a leftover, not a finished run:
    ``<run>.partial``, ``<run>.old-<pid>`` (a replaced run being removed) or a hidden temporary
    name (``.result.json.tmp-<pid>``)."""
    return name.endswith(".partial") or ".old-" in name or name.startswith(".")


def _result_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    direct = path / RESULT_FILE
    if direct.is_file():
        return [direct]
    return sorted(candidate for candidate in path.rglob(RESULT_FILE) if candidate.is_file()
                  and not any(is_unfinished(part)
                              for part in candidate.relative_to(path).parts[:-1]))


def load_runs(paths: Iterable[str | Path] | str | Path) -> list[dict[str, Any]]:
    """Load saved runs.

    Each path may be a run folder (holding ``result.json``), a ``result.json`` file itself, or
    any directory, which is searched recursively for ``result.json`` (folders without one are
    skipped, and so are runs in progress, ``<run>.partial``, and the leftovers of an interrupted
    write, ``<run>.old-<pid>`` and hidden temporary names). Files found twice are loaded once.

    Args:
        paths: Paths to load from (a single path is accepted too).

    Returns:
        The parsed runs in path order, each with an extra key ``"_path"`` (the file it came
        from).

    Raises:
        FileNotFoundError: If a given path does not exist.
        ValueError: If a file is malformed (the message names it), or if nothing was given or
            no ``result.json`` was found (the message lists where it looked).
    """
    roots = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not roots:
        raise ValueError("no run paths given: pass run folders, result.json files or directories")
    files: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"run path {root} does not exist")
        for candidate in _result_files(root):
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append(candidate)
    if not files:
        looked = ", ".join(str(root) for root in roots)
        unfinished = sum(1 for root in roots if root.is_dir()
                         for p in root.rglob("*.partial") if p.is_dir())
        hint = (f"; {unfinished} unfinished run{'s' if unfinished > 1 else ''} (*.partial) "
                "ignored: 'lifelong run ... --resume' finishes them" if unfinished else "")
        raise ValueError(f"no {RESULT_FILE} found (searched recursively in: {looked}){hint}")
    return [_read_run(path) for path in files]
