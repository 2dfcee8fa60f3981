"""``lifelong run --tensorboard DIR``: loss curves, the accuracy on every task after each task
and the accuracy matrix as an image, read back from the event files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lifelong.cli import main


def test_tensorboard_logs_losses_accuracies_and_matrices(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip "
                                              "install \"lifelong[tensorboard]\")")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = main(["run", "-b", "synthetic", "-m", "ewc", "--quiet", "-o", str(tmp_path / "runs"),
                "--tensorboard", str(tmp_path / "tb"), "train.log_every=5"])[0]
    folder = tmp_path / "tb" / "synthetic" / "task" / "ewc" / "seed0"
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    # every logged loss point of result.json, at its step
    for term, points in res["losses"].items():
        logged = [(e.step, e.value) for e in events.Scalars(f"loss/{term}")]
        assert [s for s, _ in logged] == [p[0] for p in points]
        np.testing.assert_allclose([v for _, v in logged], [p[1] for p in points], rtol=1e-6)
    # R[i, j] for j <= i at step i + 1, in both evaluated settings, and the running average
    for setting in ("task", "class"):
        R = np.asarray(res["accuracy"][setting], dtype=float)
        for j in range(3):
            logged = {e.step: e.value for e in events.Scalars(f"accuracy/{setting}/task{j}")}
            assert sorted(logged) == list(range(j + 1, 4))
            np.testing.assert_allclose([logged[i + 1] for i in range(j, 3)], R[j:, j], rtol=1e-6)
        averages = [e.value for e in events.Scalars(f"average_accuracy/{setting}")]
        np.testing.assert_allclose(averages[-1], res["summary"][setting]["average_accuracy"],
                                   rtol=1e-6)
        images = events.Images(f"accuracy_matrix/{setting}")
        assert [i.step for i in images] == [1, 2, 3]
        assert images[0].encoded_image_string[:4] == b"\x89PNG" and images[0].width > 200
    assert "command" in str(tags)


def test_tensorboard_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match=r'--tensorboard needs the tensorboard package, which is '
                                         r'not installed here: pip install "lifelong\[tensorboard\]"'):
        main(["run", "-b", "synthetic", "-m", "finetune", "--no-save", "--tensorboard", "x"])
