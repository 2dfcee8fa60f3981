"""Summaries over seeds and result tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lifelong.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer
from lifelong.report.runs import is_failed, run_matrix, run_settings, validate_run

__all__ = ["GroupKey", "Row", "SeedResult", "format_table", "group_runs", "summarize"]

GroupKey = tuple[str, str, str, str]
"""``(benchmark, evaluated setting, method, trained setting)``."""


@dataclass(frozen=True)
class SeedResult:
    """One run's accuracy matrix for one evaluated setting."""

    seed: int
    matrix: np.ndarray
    run: Mapping[str, Any]


def group_runs(runs: Iterable[Mapping[str, Any]]) -> dict[GroupKey, list[SeedResult]]:
    """Group every evaluated setting of every run by (benchmark, setting, method, trained).

    A run trained for one setting but also evaluated in another (e.g. a task-IL run's class-IL
    accuracy) contributes to a separate group for that other setting; the ``trained`` part of
    the key keeps it apart from runs trained for that setting.

    Args:
        runs: Runs as returned by :func:`lifelong.report.load_runs`.

    Returns:
        Groups in a stable order: per benchmark, the rows of runs evaluated in the setting they
        were trained for first (by setting, then method), then the rows of other evaluated
        settings; each group with its seed results sorted by seed.

    Raises:
        ValueError: On a malformed run, a seed that appears twice in one group, or matrices of
            different sizes in one group.
    """
    groups: dict[GroupKey, list[SeedResult]] = {}
    for run in runs:
        validate_run(run)
        for setting in run_settings(run):
            key = (run["benchmark"], setting, run["method"], run["setting"])
            groups.setdefault(key, []).append(
                SeedResult(seed=run["seed"], matrix=run_matrix(run, setting), run=run)
            )
    ordered: dict[GroupKey, list[SeedResult]] = {}
    for key in sorted(groups, key=lambda k: (k[0], k[3] != k[1], k[1], k[2], k[3])):
        results = sorted(groups[key], key=lambda result: result.seed)
        for first, second in zip(results, results[1:]):
            if first.seed == second.seed:
                raise ValueError(
                    f"seed {first.seed} appears twice for benchmark={key[0]!r}, setting="
                    f"{key[1]!r}, method={key[2]!r}, trained={key[3]!r} (in "
                    f"{first.run.get('_path', 'a run')} and {second.run.get('_path', 'a run')}); "
                    "pass each run only once"
                )
        sizes = sorted({result.matrix.shape[0] for result in results})
        if len(sizes) > 1:
            raise ValueError(
                f"runs of benchmark={key[0]!r}, setting={key[1]!r}, method={key[2]!r} have "
                f"different numbers of tasks {sizes}; they cannot be averaged"
            )
        ordered[key] = results
    return ordered


@dataclass(frozen=True)
class Row:
    """One line of the results table: a (benchmark, setting, method, trained) group over seeds.

    Accuracy, forgetting, BWT and FWT are in percent (points); ``*_std`` is the sample standard
    deviation over seeds (``ddof=1``), 0 for a single seed. Metrics: ACC, BWT, FWT from
    Lopez-Paz & Ranzato 2017 (GEM); forgetting from Chaudhry et al. 2018 (RWalk). Runs that
    failed (diverged) are listed in ``failed_seeds`` and left out of the metrics (all NaN when
    every run of the group failed); ``num_seeds`` and ``seeds`` count the finished runs.
    """

    benchmark: str
    setting: str
    method: str
    trained: str
    num_tasks: int
    num_seeds: int
    seeds: list[int] = field(default_factory=list)
    avg_acc_mean: float = math.nan
    avg_acc_std: float = math.nan
    forgetting_mean: float = math.nan
    forgetting_std: float = math.nan
    bwt_mean: float = math.nan
    bwt_std: float = math.nan
    fwt_mean: float | None = None
    fwt_std: float | None = None
    failed_seeds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (JSON-friendly apart from NaN floats)."""
        return asdict(self)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for one value) in percent; NaN if any value is NaN."""
    array = 100.0 * np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if math.isnan(mean):
        return math.nan, math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return mean, std


def _forward_transfers(results: Sequence[SeedResult], setting: str) -> list[float] | None:
    values = []
    for result in results:
        baseline = (result.run.get("baseline_accuracy") or {}).get(setting)
        if baseline is None:
            return None
        try:
            values.append(forward_transfer(result.matrix, [math.nan if b is None else b
                                                           for b in baseline]))
        except ValueError:
            return None
    return values


def summarize(runs: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Mean ± std over seeds of the final metrics, one row per group of :func:`group_runs`.

    Final average accuracy and BWT (Lopez-Paz & Ranzato 2017, GEM) and forgetting (Chaudhry et
    al. 2018, RWalk) are recomputed from the accuracy matrices (the run's ``summary`` block is
    not trusted). FWT is filled in only when every run of the group has a ``baseline_accuracy``
    for the setting and the entries above the diagonal; otherwise it is ``None``.

    Args:
        runs: Runs as returned by :func:`lifelong.report.load_runs`.

    Returns:
        One :class:`Row` per (benchmark, evaluated setting, method, trained setting).

    Raises:
        ValueError: As :func:`group_runs`.
    """
    rows = []
    for (benchmark, setting, method, trained), group in group_runs(runs).items():
        failed = [r.seed for r in group if is_failed(r.run)]
        results = [r for r in group if not is_failed(r.run)]
        if not results:
            rows.append(Row(benchmark=benchmark, setting=setting, method=method, trained=trained,
                            num_tasks=int(group[0].matrix.shape[0]), num_seeds=0,
                            failed_seeds=failed))
            continue
        avg = _mean_std([average_accuracy(r.matrix) for r in results])
        fgt = _mean_std([forgetting(r.matrix) for r in results])
        bwt = _mean_std([backward_transfer(r.matrix) for r in results])
        fwt_values = _forward_transfers(results, setting)
        fwt = _mean_std(fwt_values) if fwt_values is not None else (None, None)
        rows.append(
            Row(
                benchmark=benchmark,
                setting=setting,
                method=method,
                trained=trained,
                num_tasks=int(results[0].matrix.shape[0]),
                num_seeds=len(results),
                seeds=[r.seed for r in results],
                avg_acc_mean=avg[0],
                avg_acc_std=avg[1],
                forgetting_mean=fgt[0],
                forgetting_std=fgt[1],
                bwt_mean=bwt[0],
                bwt_std=bwt[1],
                fwt_mean=fwt[0],
                fwt_std=fwt[1],
                failed_seeds=failed,
            )
        )
    return rows


def _cell(mean: float | None, std: float | None, row: Row) -> str:
    if row.num_seeds == 0 and row.failed_seeds:
        return "failed"
    if mean is None or std is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if row.num_seeds == 1 else f"{mean:.2f} ± {std:.2f}"


def _seeds_cell(row: Row) -> str:
    if not row.failed_seeds:
        return str(row.num_seeds)
    failed = f"{len(row.failed_seeds)} failed"
    return failed if row.num_seeds == 0 else f"{row.num_seeds} + {failed}"


def format_table(rows: Sequence[Row], fmt: Literal["text", "markdown"] = "text") -> str:
    """Render rows as an aligned plain-text table or a GitHub markdown table.

    Columns: benchmark, setting, method, trained, seeds, avg acc (%), forgetting (%), BWT (%),
    and FWT (%) when any row has it; metric cells read ``mean ± std`` with two decimals (the
    mean alone for one seed; ``n/a`` where undefined, e.g. forgetting with one task; ``failed``
    when every run of the row diverged). The seeds cell counts failed runs apart
    (``2 + 1 failed``). Rows come in :func:`group_runs`' order: the trained setting's first.

    Args:
        rows: Rows from :func:`summarize`.
        fmt: ``"text"`` or ``"markdown"``.

    Returns:
        The table, ending with a newline.

    Raises:
        ValueError: On an unknown ``fmt``.
    """
    if fmt not in ("text", "markdown"):
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
    with_fwt = any(row.fwt_mean is not None for row in rows)
    header = ["benchmark", "setting", "method", "trained", "seeds", "avg acc (%)",
              "forgetting (%)", "BWT (%)"] + (["FWT (%)"] if with_fwt else [])
    numeric = [False, False, False, False, True, True, True, True] + ([True] if with_fwt else [])
    body = []
    for row in rows:
        cells = [row.benchmark, row.setting, row.method, row.trained, _seeds_cell(row),
                 _cell(row.avg_acc_mean, row.avg_acc_std, row),
                 _cell(row.forgetting_mean, row.forgetting_std, row),
                 _cell(row.bwt_mean, row.bwt_std, row)]
        if with_fwt:
            cells.append(_cell(row.fwt_mean, row.fwt_std, row))
        body.append(cells)
    if fmt == "markdown":
        body = [[cell.replace("|", "\\|") for cell in cells] for cells in body]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def align(cells: Sequence[str]) -> list[str]:
        return [cell.rjust(w) if right else cell.ljust(w)
                for cell, w, right in zip(cells, widths, numeric)]

    if fmt == "markdown":
        rule = [("-" * (w - 1) + ":") if right else "-" * w for w, right in zip(widths, numeric)]
        lines = ["| " + " | ".join(cells) + " |" for cells in [align(header), rule]]
        lines += ["| " + " | ".join(align(cells)) + " |" for cells in body]
    else:
        lines = ["  ".join(align(header)).rstrip(), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(align(cells)).rstrip() for cells in body]
    return "\n".join(lines) + "\n"
