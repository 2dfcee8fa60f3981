"""Reports from saved runs: loading, mean ± std over seeds, tables, PNG files."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifelong.report import (
    format_table,
    load_runs,
    plot_accuracy_matrix,
    plot_average_accuracy,
    summarize,
    write_report,
)
from lifelong.report._files import atomic_write_text, slugify

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ewc, trained task-IL, also evaluated class-IL; two seeds.
#   task  seed 0: ACC 75, forgetting 20, BWT -20   seed 1: ACC 90, forgetting 10, BWT -10
#         -> 82.50 ± 10.61 (|90-75|/sqrt(2)), 15.00 ± 7.07, -15.00 ± 7.07
#   class seed 0: ACC 40, forgetting 90, BWT -90   seed 1: ACC 55, forgetting 80, BWT -80
#         -> 47.50 ± 10.61, 85.00 ± 7.07, -85.00 ± 7.07
# si, trained class-IL, one seed: ACC 67.5, forgetting 45, BWT -45, FWT 0.10 - 0.05 = 5.
EWC = {
    0: {"task": [[0.9, None], [0.7, 0.8]], "class": [[0.9, None], [0.0, 0.8]]},
    1: {"task": [[1.0, None], [0.9, 0.9]], "class": [[1.0, None], [0.2, 0.9]]},
}
SI = {"class": [[0.95, 0.1], [0.5, 0.85]]}


def make_run(method: str, seed: int, setting: str, accuracy: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    return {
        "format": "lifelong.run/1",
        "benchmark": "split-mnist",
        "method": method,
        "setting": setting,
        "seed": seed,
        "settings": list(accuracy),
        "config": {"method": {"name": method}},
        "tasks": [{"id": 0, "name": "0/1", "classes": [0, 1]},
                  {"id": 1, "name": "2/3", "classes": [2, 3]}],
        "accuracy": accuracy,
        "summary": {},
        "losses": {"ce": [[0, 2.3], [10, 0.4]]},
        "timings": {"total_s": 1.0},
        "versions": {"lifelong": "0.1.0"},
        **extra,
    }


def write_run(folder: Path, run: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    path = folder / "result.json"
    path.write_text(json.dumps(run))
    return path


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, accuracy in EWC.items():
        write_run(root / f"ewc-s{seed}", make_run("ewc", seed, "task", accuracy))
    write_run(root / "nested" / "si-s0",
              make_run("si", 0, "class", SI, baseline_accuracy={"class": [0.5, 0.05]}))
    (root / "notes").mkdir()  # a folder without result.json is skipped
    return root


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_load_runs_finds_every_result_recursively(runs_dir: Path) -> None:
    runs = load_runs([runs_dir])
    assert [(r["method"], r["seed"]) for r in runs] == [("ewc", 0), ("ewc", 1), ("si", 0)]
    assert runs[2]["_path"] == str(runs_dir / "nested" / "si-s0" / "result.json")


def test_load_runs_accepts_folders_files_and_dedupes(runs_dir: Path) -> None:
    by_folder = load_runs([runs_dir / "ewc-s1"])
    by_file = load_runs([str(runs_dir / "ewc-s1" / "result.json")])
    assert by_folder == by_file and by_folder[0]["seed"] == 1
    assert len(load_runs([runs_dir, runs_dir / "ewc-s0", runs_dir / "ewc-s0/result.json"])) == 3
    assert len(load_runs(runs_dir)) == 3  # a single path is accepted too


def test_load_runs_nothing_found(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no result\.json found \(searched recursively in: "
                                         + str(empty).replace("\\", "\\\\") + r"\)"):
        load_runs([empty])
    with pytest.raises(ValueError, match="no run paths given"):
        load_runs([])
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_runs([tmp_path / "does-not-exist"])


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", r"invalid JSON"),
        ("[1, 2]", r"JSON object at the top level"),
        (json.dumps({**make_run("ewc", 0, "task", EWC[0]), "format": "other/2"}),
         r"'format' must be 'lifelong.run/1'"),
        (json.dumps(make_run("ewc", 0, "task", {"task": [[0.9, None, 0.1], [0.7, 0.8, 0.1]]})),
         r"must be square"),
        (json.dumps(make_run("ewc", 0, "task", {"task": [[90.0, None], [70.0, 80.0]]})),
         r"outside \[0, 1\].*not percentages"),
        (json.dumps(make_run("ewc", 0, "class", {"task": EWC[0]["task"]})),
         r"trained setting 'class' has no matrix"),
        (json.dumps({**make_run("ewc", 0, "task", EWC[0]), "seed": "0"}),
         r"'seed' must be an integer"),
    ],
)
def test_load_runs_malformed_file_is_named(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "bad" / "result.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern) as error:
        load_runs([tmp_path])
    assert str(path) in str(error.value)


def test_summarize_mean_and_sample_std(runs_dir: Path) -> None:
    rows = summarize(load_runs([runs_dir]))
    keys = [(r.benchmark, r.setting, r.method, r.trained) for r in rows]
    assert keys == [  # the rows of the trained setting first
        ("split-mnist", "class", "si", "class"),
        ("split-mnist", "task", "ewc", "task"),
        ("split-mnist", "class", "ewc", "task"),
    ]
    si_class, ewc_task, ewc_class = rows
    spread = 15.0 / math.sqrt(2.0)  # sample std of two values 15 apart
    assert ewc_task.num_seeds == 2 and ewc_task.seeds == [0, 1] and ewc_task.num_tasks == 2
    assert ewc_task.avg_acc_mean == pytest.approx(82.5)
    assert ewc_task.avg_acc_std == pytest.approx(spread)
    assert ewc_task.forgetting_mean == pytest.approx(15.0)
    assert ewc_task.forgetting_std == pytest.approx(10.0 / math.sqrt(2.0))
    assert ewc_task.bwt_mean == pytest.approx(-15.0)
    assert ewc_task.fwt_mean is None and ewc_task.fwt_std is None
    assert ewc_class.avg_acc_mean == pytest.approx(47.5)
    assert ewc_class.avg_acc_std == pytest.approx(spread)
    assert ewc_class.forgetting_mean == pytest.approx(85.0)
    assert ewc_class.bwt_mean == pytest.approx(-85.0)
    assert si_class.num_seeds == 1 and si_class.seeds == [0]
    assert si_class.avg_acc_mean == pytest.approx(67.5) and si_class.avg_acc_std == 0.0
    assert si_class.forgetting_mean == pytest.approx(45.0) and si_class.forgetting_std == 0.0
    assert si_class.bwt_mean == pytest.approx(-45.0)
    assert si_class.fwt_mean == pytest.approx(5.0) and si_class.fwt_std == 0.0
    assert ewc_task.to_dict()["seeds"] == [0, 1]


def test_summarize_rejects_duplicate_seeds(runs_dir: Path) -> None:
    runs = load_runs([runs_dir])
    with pytest.raises(ValueError, match=r"seed 0 appears twice .*method='ewc'"):
        summarize(runs + [runs[0]])


def test_markdown_table(runs_dir: Path) -> None:
    table = format_table(summarize(load_runs([runs_dir])), fmt="markdown")
    lines = table.splitlines()
    assert cells(lines[0]) == ["benchmark", "setting", "method", "trained", "seeds",
                               "avg acc (%)", "forgetting (%)", "BWT (%)", "FWT (%)"]
    assert set(cells(lines[1])[4]) == {"-", ":"} and cells(lines[1])[4].endswith(":")
    assert cells(lines[1])[0].startswith("-") and not cells(lines[1])[0].endswith(":")
    assert cells(lines[2]) == ["split-mnist", "class", "si", "class", "1", "67.50",
                               "45.00", "-45.00", "5.00"]  # one seed: no "± 0.00"
    assert cells(lines[3]) == ["split-mnist", "task", "ewc", "task", "2", "82.50 ± 10.61",
                               "15.00 ± 7.07", "-15.00 ± 7.07", "n/a"]
    assert cells(lines[4]) == ["split-mnist", "class", "ewc", "task", "2", "47.50 ± 10.61",
                               "85.00 ± 7.07", "-85.00 ± 7.07", "n/a"]
    assert len(lines) == 5 and table.endswith("\n")
    assert len({len(line) for line in lines}) == 1  # padded columns


def test_text_table_is_aligned(runs_dir: Path) -> None:
    rows = summarize(load_runs([runs_dir / "ewc-s0", runs_dir / "ewc-s1"]))
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:5] == ["benchmark", "setting", "method", "trained", "seeds"]
    assert "FWT" not in lines[0]  # no run has a baseline
    assert set(lines[1]) == {"-", " "}
    assert len({len(line) for line in lines}) == 1
    assert lines[0].index("avg acc (%)") + len("avg acc (%)") == lines[2].index(
        "82.50 ± 10.61") + len("82.50 ± 10.61")
    assert lines[3].endswith("-85.00 ± 7.07")
    with pytest.raises(ValueError, match="fmt must be 'text' or 'markdown'"):
        format_table(rows, fmt="html")  # type: ignore[arg-type]


def test_write_report_writes_pngs_and_tables(runs_dir: Path, tmp_path: Path) -> None:
    runs = load_runs([runs_dir])
    out = tmp_path / "report"
    paths = write_report(runs, out)
    assert [p.name for p in paths] == [
        "accuracy-matrix_split-mnist_class_si.png",
        "accuracy-matrix_split-mnist_task_ewc.png",
        "accuracy-matrix_split-mnist_class_ewc_trained-task.png",
        "average-accuracy_split-mnist_class.png",
        "average-accuracy_split-mnist_task.png",
        "loss-curve_split-mnist_task_ewc_seed0.png",
        "loss-curve_split-mnist_task_ewc_seed1.png",
        "loss-curve_split-mnist_class_si_seed0.png",
        "table.md",
        "table.txt",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files
    for path in paths[:8]:
        width, height = png_size(path)
        assert width >= 300 and height >= 300
        assert path.stat().st_size > 5_000
    rows = summarize(runs)
    assert (out / "table.md").read_text() == format_table(rows, fmt="markdown")
    assert (out / "table.txt").read_text() == format_table(rows, fmt="text")
    with pytest.raises(ValueError, match="no runs"):
        write_report([], out)


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    R = np.array([[0.9, np.nan, np.nan], [0.7, 0.8, np.nan], [0.6, 0.5, 0.9]])
    R_before = R.copy()
    heatmap = plot_accuracy_matrix(R, tmp_path / "m.png", "R", task_names=["a", "b", "c"])
    assert heatmap == tmp_path / "m.png" and png_size(heatmap)[0] > 300
    np.testing.assert_array_equal(R, R_before)
    curve = plot_average_accuracy({"ewc": [R, R * 0.9], "sgd": [R * 0.5]}, tmp_path / "c.png",
                                  "curves")
    assert png_size(curve)[0] > 300 and curve.stat().st_size > 5_000
    with pytest.raises(ValueError, match="task_names has 2 entries, expected 3"):
        plot_accuracy_matrix(R, tmp_path / "x.png", "R", task_names=["a", "b"])
    with pytest.raises(ValueError, match="runs_by_method is empty"):
        plot_average_accuracy({}, tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match=r"different numbers of tasks \[2, 3\]"):
        plot_average_accuracy({"ewc": [R, R[:2, :2]]}, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()


def test_file_helpers(tmp_path: Path) -> None:
    assert slugify("Split MNIST / Task_IL") == "split-mnist-task-il"
    assert slugify("***") == "x"
    target = atomic_write_text(tmp_path / "deep" / "t.txt", "hello ±")
    assert target.read_text(encoding="utf-8") == "hello ±"
    assert [p.name for p in target.parent.iterdir()] == ["t.txt"]
