"""Reports from saved runs: load ``result.json`` files, summarise over seeds, tables and plots.

Typical use::

    runs = load_runs(["runs/"])
    print(format_table(summarize(runs)))
    write_report(runs, "report/")
    write_html(runs, "report.html")            # one self-contained page
"""

from __future__ import annotations

from lifelong.report.html import render_html, write_html
from lifelong.report.plots import (
    plot_accuracy_matrix,
    plot_average_accuracy,
    plot_losses,
    write_report,
    zoom_limits,
)
from lifelong.report.runs import (
    RESULT_FILE,
    RUN_FORMAT,
    is_failed,
    is_unfinished,
    load_runs,
    run_matrix,
    run_settings,
    validate_run,
)
from lifelong.report.summary import GroupKey, Row, SeedResult, format_table, group_runs, summarize

__all__ = [
    "GroupKey",
    "RESULT_FILE",
    "RUN_FORMAT",
    "Row",
    "SeedResult",
    "format_table",
    "group_runs",
    "is_failed",
    "is_unfinished",
    "load_runs",
    "plot_accuracy_matrix",
    "plot_average_accuracy",
    "plot_losses",
    "render_html",
    "run_matrix",
    "run_settings",
    "summarize",
    "validate_run",
    "write_html",
    "write_report",
    "zoom_limits",
]
