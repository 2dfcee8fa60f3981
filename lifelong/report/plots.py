"""PNG plots (accuracy-matrix heatmaps, average-accuracy curves) and the report writer.

Figures are drawn with ``matplotlib.figure.Figure`` on an explicit Agg canvas, so no global
backend is selected and nothing touches ``pyplot`` state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifelong.metrics import as_accuracy_matrix, average_accuracy_curve
from lifelong.report._files import atomic_write_bytes, atomic_write_text, slugify
from lifelong.report.runs import is_failed, run_matrix
from lifelong.report.summary import format_table, group_runs, summarize

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_accuracy_matrix", "plot_average_accuracy", "plot_losses", "write_report",
           "zoom_limits"]


def zoom_limits(values: Any, step: float = 5.0, floor: float = 0.0, ceiling: float = 100.0
                ) -> tuple[float, float]:
    """Y limits (percent) around the finite ``values``: a margin, rounded out to ``step``, within
    ``[floor, ceiling]``; the whole range when there is no finite value."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return floor, ceiling
    low, high = float(finite.min()), float(finite.max())
    margin = max(1.0, 0.1 * (high - low))
    lo = max(floor, step * math.floor((low - margin) / step))
    hi = min(ceiling, step * math.ceil((high + margin) / step))
    return lo, hi


def _save_png(figure: Figure, path: str | Path) -> Path:
    return atomic_write_bytes(path, png_bytes(figure))


def plot_accuracy_matrix(
    R: Any,
    path: str | Path,
    title: str,
    task_names: Sequence[str] | None = None,
) -> Path:
    """Heatmap of an accuracy matrix, each cell annotated with its value in %; NaN cells blank.

    Rows are training stages (after task ``i``), columns evaluated tasks ``j``, as in the
    ``R`` of Lopez-Paz & Ranzato 2017 (GEM).

    Args:
        R: ``T x T`` accuracy matrix (fractions, NaN where not evaluated).
        path: PNG file to write (atomically).
        title: Figure title.
        task_names: Optional tick labels, one per task.

    Returns:
        The written path.

    Raises:
        ValueError: On a malformed matrix or a wrong number of task names.
    """
    return _save_png(accuracy_matrix_figure(R, title, task_names), path)


def accuracy_matrix_figure(R: Any, title: str, task_names: Sequence[str] | None = None
                           ) -> Figure:
    """The figure of :func:`plot_accuracy_matrix` (for callers that render it elsewhere, e.g.
    TensorBoard)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    matrix = as_accuracy_matrix(R)
    num_tasks = matrix.shape[0]
    names = [str(j) for j in range(num_tasks)] if task_names is None else list(task_names)
    if len(names) != num_tasks:
        raise ValueError(f"task_names has {len(names)} entries, expected {num_tasks}")
    percent = 100.0 * matrix
    side = min(16.0, max(4.5, 0.55 * num_tasks + 2.5))
    figure = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="white")
    image = axes.imshow(np.ma.masked_invalid(percent), cmap=cmap, vmin=0.0, vmax=100.0)
    figure.colorbar(image, ax=axes, label="accuracy (%)", shrink=0.8)
    cell_inches = 0.75 * side / num_tasks  # the axes take roughly 3/4 of the figure side
    font = max(4.0, min(10.0, 0.25 * 72.0 * cell_inches))
    rows, cols = np.nonzero(~np.isnan(percent))
    for i, j in zip(rows.tolist(), cols.tolist()):
        value = percent[i, j]
        axes.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=font,
                  color="black" if value > 60.0 else "white")
    tick_font = min(10.0, font + 1.0)
    axes.set_xticks(range(num_tasks), names, rotation=45 if num_tasks > 8 else 0,
                    fontsize=tick_font)
    axes.set_yticks(range(num_tasks), names, fontsize=tick_font)
    axes.set_xlabel("evaluated on task")
    axes.set_ylabel("after training on task")
    axes.set_title(title)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """``figure`` rendered as PNG (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _curve_stack(entries: Sequence[Any], setting: str | None, label: str) -> np.ndarray:
    curves = []
    for entry in entries:
        matrix = run_matrix(entry, setting) if isinstance(entry, Mapping) else entry
        curves.append(average_accuracy_curve(matrix))
    if not curves:
        raise ValueError(f"no runs given for {label!r}")
    sizes = sorted({curve.shape[0] for curve in curves})
    if len(sizes) > 1:
        raise ValueError(f"runs of {label!r} have different numbers of tasks {sizes}")
    return 100.0 * np.stack(curves)


def plot_average_accuracy(
    runs_by_method: Mapping[str, Sequence[Any]],
    path: str | Path,
    title: str,
    setting: str | None = None,
) -> Path:
    """Average accuracy after each task (GEM's ACC, stage by stage), one line per method.

    Each line is the mean over seeds, with a ±1 sample-std band when there are several seeds
    (Lopez-Paz & Ranzato 2017 define ACC; the curve is ACC after each training stage).

    Args:
        runs_by_method: Line label -> the seeds' runs (dicts from
            :func:`lifelong.report.load_runs`) or their accuracy matrices.
        path: PNG file to write (atomically).
        title: Figure title.
        setting: Which accuracy matrix of run dicts to use; ``None`` is each run's trained
            setting. Ignored for matrices.

    Returns:
        The written path.

    Raises:
        ValueError: If there are no methods, a method has no runs, or seeds disagree on the
            number of tasks.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not runs_by_method:
        raise ValueError("runs_by_method is empty: give at least one method with its runs")
    figure = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    shown: list[np.ndarray] = []
    for label, entries in runs_by_method.items():
        stack = _curve_stack(entries, setting, label)
        stages = np.arange(1, stack.shape[1] + 1)
        mean = stack.mean(axis=0)
        line = axes.plot(stages, mean, marker="o", markersize=3,
                         label=f"{label} (n={stack.shape[0]})")[0]
        shown.append(mean)
        if stack.shape[0] > 1:
            std = stack.std(axis=0, ddof=1)
            axes.fill_between(stages, mean - std, mean + std, color=line.get_color(),
                              alpha=0.2, linewidth=0)
            shown += [mean - std, mean + std]
    axes.set_xlabel("tasks trained")
    axes.set_ylabel("average accuracy (%)")
    axes.set_ylim(*zoom_limits(np.concatenate(shown)))  # zoomed to the data
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title(title)
    return _save_png(figure, path)


def plot_losses(losses: Mapping[str, Sequence[Sequence[Any]]], path: str | Path, title: str
                ) -> Path:
    """A run's logged loss curves (``term -> [[step, mean loss], ...]``), one line per term,
    on a log scale when every value is positive; missing (``null``) points are skipped.

    Raises:
        ValueError: If no term has a point.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    values: list[float] = []
    for name, points in losses.items():
        kept = [(p[0], p[1]) for p in points if p[1] is not None and math.isfinite(p[1])]
        if kept:
            steps, ys = zip(*kept)
            axes.plot(steps, ys, linewidth=1.2, label=name)
            values += ys
    if not values:
        raise ValueError(f"no loss values to plot for {title!r}")
    if min(values) > 0:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("mean loss over the logged interval")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title(title)
    return _save_png(figure, path)


def _unique(name: str, used: set[str]) -> str:
    candidate, counter = name, 2
    while candidate in used:
        candidate = f"{name}-{counter}"
        counter += 1
    used.add(candidate)
    return candidate


def write_report(runs: Iterable[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write tables and plots for a set of runs.

    Writes, atomically, into ``out_dir`` (created if missing):

    - ``accuracy-matrix_<benchmark>_<setting>_<method>[_trained-<setting>].png``: heatmap of
      the mean accuracy matrix over seeds for each group (the suffix marks runs evaluated in a
      setting other than the one they were trained for);
    - ``average-accuracy_<benchmark>_<setting>.png``: average accuracy after each task, one line
      per method (mean ± std over seeds), the y axis zoomed to the data;
    - ``loss-curve_<benchmark>_<setting>_<method>_seed<k>.png``: each run's logged loss per term
      (failed runs too: their curves show the divergence coming);
    - ``table.md`` (GitHub markdown) and ``table.txt`` (plain text) from :func:`summarize`.

    Args:
        runs: Runs as returned by :func:`lifelong.report.load_runs`.
        out_dir: Output folder.

    Returns:
        The written paths, in the order above.

    Raises:
        ValueError: If there are no runs, or as :func:`lifelong.report.group_runs`.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("write_report got no runs: load some with load_runs() first")
    groups = group_runs(runs)
    rows = summarize(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written: list[Path] = []
    curves: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}
    for (benchmark, setting, method, trained), group in groups.items():
        results = [result for result in group if not is_failed(result.run)]
        if not results:  # every seed diverged: the table says so, there is no matrix to show
            continue
        suffix = "" if trained == setting else f"_trained-{slugify(trained)}"
        stem = f"accuracy-matrix_{slugify(benchmark)}_{slugify(setting)}_{slugify(method)}{suffix}"
        mean_matrix = np.mean(np.stack([result.matrix for result in results]), axis=0)
        tasks = results[0].run.get("tasks")
        names = ([str(task.get("name", index)) if isinstance(task, Mapping) else str(task)
                  for index, task in enumerate(tasks)] if tasks else None)
        trained_note = "" if trained == setting else f", trained {trained}"
        title = (f"{benchmark} · {setting} · {method}{trained_note}\n"
                 f"mean of {len(results)} seed{'s' if len(results) > 1 else ''}")
        written.append(plot_accuracy_matrix(mean_matrix, out / f"{_unique(stem, used)}.png",
                                            title, task_names=names))
        label = method if trained == setting else f"{method} (trained {trained})"
        curves.setdefault((benchmark, setting), {})[label] = [r.matrix for r in results]
    for (benchmark, setting), by_method in curves.items():
        stem = _unique(f"average-accuracy_{slugify(benchmark)}_{slugify(setting)}", used)
        written.append(plot_average_accuracy(by_method, out / f"{stem}.png",
                                             f"{benchmark} · {setting}: average accuracy"))
    for run in runs:
        if any(p[1] is not None for points in (run.get("losses") or {}).values() for p in points):
            stem = _unique(f"loss-curve_{slugify(run['benchmark'])}_{slugify(run['setting'])}_"
                           f"{slugify(run['method'])}_seed{run['seed']}", used)
            state = " (failed)" if is_failed(run) else ""
            written.append(plot_losses(run["losses"], out / f"{stem}.png",
                                       f"{run['benchmark']} · {run['setting']} · {run['method']}"
                                       f" · seed {run['seed']}{state}: loss"))
    written.append(atomic_write_text(out / "table.md", format_table(rows, fmt="markdown")))
    written.append(atomic_write_text(out / "table.txt", format_table(rows, fmt="text")))
    return written

