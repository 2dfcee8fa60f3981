"""``lifelong report RUNS --html FILE``: one self-contained page whose tables, images, commands
and versions are those of the runs."""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.report import load_runs, summarize


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "runs"
    main(["run", "-b", "synthetic", "-m", "finetune", "ewc", "--seeds", "0", "1", "--quiet",
          "-o", str(out), "train.epochs=1"])
    return out


def test_html_report_holds_tables_images_commands_and_versions(runs_dir: Path,
                                                               tmp_path: Path) -> None:
    page_path = tmp_path / "report.html"
    main(["report", str(runs_dir), "--html", str(page_path)])
    page = page_path.read_text()
    # self-contained: nothing fetched (no http(s) source, stylesheet or script)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<script" not in page
    # the mean ± std of every row, as summarize computes it
    runs = load_runs(runs_dir)
    rows = summarize(runs)
    assert len(rows) == 4  # 2 methods x (task-IL trained + class-IL evaluated)
    for row in rows:
        cell = f"{row.avg_acc_mean:.2f} ± {row.avg_acc_std:.2f}"
        assert re.search(rf"<td>{row.setting}</td><td>{row.method}</td>.*?{re.escape(cell)}",
                         page), cell
    # 4 heatmaps + 2 average-accuracy curves + 4 loss curves, each a decodable PNG
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 10
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    # each run's command (it reproduces the run) and versions
    for run in runs:
        assert shlex.split(run["command"])[:8] == ["lifelong", "run", "-b", "synthetic", "-m",
                                                   run["method"], "--seeds", str(run["seed"])]
        assert "train.epochs=1" in run["command"]
        assert f"<code>{run['command']}</code>" in page
    assert page.count(f"torch {runs[0]['versions']['torch']}") == 4


def test_recorded_command_reproduces_the_run(runs_dir: Path, tmp_path: Path) -> None:
    run = next(r for r in load_runs(runs_dir) if r["method"] == "ewc" and r["seed"] == 1)
    again = main([*shlex.split(run["command"])[1:], "--quiet", "--no-save"])
    assert again[0]["accuracy"] == run["accuracy"]
