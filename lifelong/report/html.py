"""One self-contained HTML page from saved runs (``lifelong report RUNS --html report.html``).

The page holds, per benchmark: the mean ± std table of :func:`~lifelong.report.summarize`, the
average-accuracy curves and the accuracy-matrix heatmaps of
:func:`~lifelong.report.write_report` (PNG, embedded as ``data:`` URIs), and each run's loss
curve; then one line per run with its status, the ``lifelong run`` command that reproduces it and
the versions it ran with. No script, stylesheet or image is fetched from anywhere: the file can
be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong.report._files import atomic_write_text, slugify
from lifelong.report.plots import write_report
from lifelong.report.runs import PATH_KEY, is_failed
from lifelong.report.summary import Row, _cell, _seeds_cell, summarize

__all__ = ["render_html", "write_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } tr.other td { color: #666; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; }
.figs figure { margin: 0; } .figs img { max-width: 420px; border: 1px solid #eee; }
code { font-size: 0.85em; background: #f6f6f6; padding: 0.1em 0.3em; word-break: break-all; }
.failed { color: #b00020; font-weight: bold; } .note { color: #555; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption class=\"note\">{_e(alt)}</figcaption></figure>")


def _table(rows: Sequence[Row]) -> str:
    with_fwt = any(row.fwt_mean is not None for row in rows)
    head = ["setting", "method", "trained", "seeds", "avg acc (%)", "forgetting (%)", "BWT (%)"]
    head += ["FWT (%)"] if with_fwt else []
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        cells = [_e(row.setting), _e(row.method), _e(row.trained)]
        nums = [_seeds_cell(row), _cell(row.avg_acc_mean, row.avg_acc_std, row),
                _cell(row.forgetting_mean, row.forgetting_std, row),
                _cell(row.bwt_mean, row.bwt_std, row)]
        if with_fwt:
            nums.append(_cell(row.fwt_mean, row.fwt_std, row))
        klass = "" if row.setting == row.trained else ' class="other"'
        out.append(f"<tr{klass}>" + "".join(f"<td>{c}</td>" for c in cells)
                   + "".join(f'<td class="num">{_e(c)}</td>' for c in nums) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    out = ["<table><thead><tr><th>run</th><th>status</th><th>avg acc (%)</th><th>time (s)</th>"
           "<th>command</th><th>versions</th></tr></thead><tbody>"]
    for run in runs:
        name = f"{run['method']} · {run['setting']} · seed {run['seed']}"
        summary = (run.get("summary") or {}).get(run["setting"]) or {}
        acc = summary.get("average_accuracy")
        status = ('<span class="failed">failed</span>: ' + _e(run.get("error", ""))
                  if is_failed(run) else "finished")
        seconds = (run.get("timings") or {}).get("total_s")
        versions = ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items())
        threads = run.get("threads")
        if threads is not None:
            versions += f"; {threads} torch thread{'s' if threads != 1 else ''}"
        command = run.get("command") or "(not recorded: run before lifelong recorded commands)"
        out.append(
            f"<tr><td>{_e(name)}<br><span class=\"note\">{_e(run.get(PATH_KEY, ''))}</span></td>"
            f"<td>{status}</td>"
            f'<td class="num">{"n/a" if acc is None else f"{100 * acc:.2f}"}</td>'
            f'<td class="num">{"n/a" if seconds is None else f"{seconds:.1f}"}</td>'
            f"<td><code>{_e(command)}</code></td><td>{_e(versions)}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(runs: Iterable[Mapping[str, Any]], title: str = "lifelong report") -> str:
    """The report page as a string (see the module docstring for what it holds).

    Raises:
        ValueError: If there are no runs, or as :func:`~lifelong.report.summarize`.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("render_html got no runs: load some with load_runs() first")
    rows = summarize(runs)
    with tempfile.TemporaryDirectory(prefix="lifelong-report-") as tmp:
        images = {p.name: p.read_bytes() for p in write_report(runs, tmp) if p.suffix == ".png"}
    benchmarks = list(dict.fromkeys(row.benchmark for row in rows))
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{len(runs)} run{"s" if len(runs) != 1 else ""} on '
        f"{len(benchmarks)} benchmark{'s' if len(benchmarks) != 1 else ''}, made {when}. "
        "Accuracies in %, mean ± sample std over seeds (the mean alone for one seed); grey rows "
        "are settings evaluated from runs trained for another one. Heatmaps: R[i, j], accuracy "
        "on task j after training on task i, mean over seeds.</p>",
    ]
    for benchmark in benchmarks:
        slug = slugify(benchmark)
        parts.append(f'<h2 id="{_e(slug)}">{_e(benchmark)}</h2>')
        parts.append(_table([row for row in rows if row.benchmark == benchmark]))
        first = next(row.setting for row in rows if row.benchmark == benchmark)
        curves = sorted((n for n in images if n.startswith(f"average-accuracy_{slug}_")),
                        key=lambda n: (not n.endswith(f"_{slugify(first)}.png"), n))
        matrices = sorted((n for n in images if n.startswith(f"accuracy-matrix_{slug}_")),
                          key=lambda n: ("_trained-" in n, n))  # trained settings first
        losses = sorted(n for n in images if n.startswith(f"loss-curve_{slug}_"))
        for heading, names in (("Average accuracy after each task", curves),
                               ("Accuracy matrices", matrices), ("Loss curves", losses)):
            if not names:
                continue
            figures = "".join(_img(images[n], n[:-4].replace("_", " · ")) for n in names)
            if heading == "Loss curves":
                parts.append(f"<details><summary>{heading} ({len(names)})</summary>"
                             f'<div class="figs">{figures}</div></details>')
            else:
                parts.append(f'<h3>{heading}</h3><div class="figs">{figures}</div>')
        parts.append("<h3>Runs</h3>")
        parts.append(_runs_table([run for run in runs if run["benchmark"] == benchmark]))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(runs: Iterable[Mapping[str, Any]], path: str | Path,
               title: str = "lifelong report") -> Path:
    """Writes :func:`render_html` to ``path`` atomically and returns the path."""
    return atomic_write_text(path, render_html(runs, title))
