"""Regression tier for LwF (Li & Hoiem 2016) on real MNIST / Fashion-MNIST.

* "Three scenarios" SplitMNIST, task-IL (van de Ven & Tolias 2019; their LwF: T = 2 with the
  T^2 factor, no warm-up: ``configs/split-mnist-three-scenarios/lwf.toml``), REDUCED to 300
  iterations per task (2000 published), 3 seeds. Measured before being fixed here: 99.72 /
  99.53 / 99.67 (mean 99.64); fine-tune at the same reduction: 91.21 +- 4.94 (README). Held to
  a mean >= 99.0.
* The two-dataset protocol (``configs/two-datasets.toml``: 5 % of each training set, 3 epochs
  per task), Fashion-MNIST then MNIST, seed 0 of the README's table (measured: old task 68.60
  LwF / 64.16 fine-tune, new task 91.56 / 88.94): LwF keeps at least 3 points more old-task
  accuracy than fine-tuning, and its new-task accuracy is at most 3 points below fine-tuning's
  (the paper's claims, Sec. 4.1; the 3-seed means are +6.7 and +0.5 points).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifelong.config import load_configs, make_config
from lifelong.data.scenarios import build_scenario
from lifelong.train.run import execute

pytestmark = pytest.mark.regression

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _run(files: list[str], seed: int, data_dir: str, **overrides: Any) -> dict[str, Any]:
    top, options = load_configs([CONFIGS / f for f in files])
    options.update({"data.data_dir": data_dir, "train.progress": "off", **overrides})
    method = overrides.pop("method", None) or top.get("method", "finetune")
    cfg = make_config(top["benchmark"], method, seed, top.get("setting"), options)
    return execute(cfg, None, scenario=build_scenario(top["benchmark"], cfg.data, seed))


def test_three_scenarios_task_il_lwf(mnist_dir: str) -> None:
    accs = [_run(["split-mnist-three-scenarios.toml", "split-mnist-three-scenarios/lwf.toml"],
                 seed, mnist_dir, **{"train.iterations": 300})["summary"]["task"]
            ["average_accuracy"] for seed in (0, 1, 2)]
    assert float(np.mean(accs)) >= 0.990, accs


def test_two_datasets_lwf_keeps_the_old_task(mnist_dir: str) -> None:
    if not (Path(mnist_dir) / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not found beside MNIST in LIFELONG_DATA")
    reduce: dict[str, Any] = {}
    R = {}
    for method in ("finetune", "lwf"):
        top, options = load_configs([CONFIGS / "two-datasets.toml"])
        options.update({"data.data_dir": mnist_dir, "train.progress": "off", **reduce})
        cfg = make_config(top["benchmark"], method, 0, "task", options)
        res = execute(cfg, None, scenario=build_scenario(top["benchmark"], cfg.data, 0))
        R[method] = np.array(res["accuracy"]["task"], dtype=float)
    old = {m: r[1, 0] for m, r in R.items()}
    new = {m: r[1, 1] for m, r in R.items()}
    assert old["lwf"] >= old["finetune"] + 0.03, (old, new)
    assert new["lwf"] >= new["finetune"] - 0.03, (old, new)
