"""Fault injection: a sweep killed with SIGKILL at any moment (during training, between writing a
checkpoint or ``result.json`` and renaming it, between the two renames that put a finished run in
place) and then run again with ``--resume`` ends, by ``lifelong report``, with the accuracy
matrices of an uninterrupted sweep."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.cli import main

# Runs ``lifelong.cli.main`` with ``os.replace`` wrapped: the process kills itself with SIGKILL
# right before or right after the KILL_AT-th rename into the runs folder. Per run of 5 tasks the
# renames are: 5 checkpoints, result.json, (old folder aside,) the finished folder into place.
WRAPPER = r"""
import os, signal, sys
mode, at, out = os.environ["KILL_MODE"], int(os.environ["KILL_AT"]), os.environ["KILL_OUT"]
real, count = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    if out not in str(dst):
        return real(src, dst, *args, **kwargs)
    count[0] += 1
    if mode == "before" and count[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, *args, **kwargs)
    if mode == "after" and count[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
from lifelong.cli import main
main(sys.argv[1:])
sys.exit(99)
"""


def sweep(out: Path) -> list[str]:
    return ["run", "-b", "split-digits", "-m", "finetune", "--seeds", "0", "1", "--quiet",
            "--threads", "1", "-o", str(out), "train.epochs=1", "model.hidden=[16]"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict]]:
    out = tmp_path_factory.mktemp("reference") / "runs"
    results = main(sweep(out))
    return out, {r["seed"]: r["accuracy"] for r in results}


@pytest.mark.parametrize("existing, mode, at", [
    ("none", "before", 1),    # during task 1 of seed 0: its first checkpoint not yet in place
    ("none", "after", 3),     # seed 0 after its third task's checkpoint
    ("none", "after", 6),     # seed 0's result.json written in seed0.partial, not moved yet
    ("none", "after", 7),     # seed 0 in place, seed 1 not started
    ("none", "before", 13),   # seed 1 trained, its result.json not yet renamed into place
    ("finished", "before", 2),  # re-running a finished sweep (no --resume): during training
    ("finished", "after", 7),   # the old seed0 moved aside, the new one not yet in place
    ("finished", "after", 8),   # the new seed0 in place, the old one not yet removed
])
def test_killed_sweep_resumes_to_the_uninterrupted_result(
        tmp_path: Path, reference: tuple[Path, dict[int, dict]], existing: str, mode: str,
        at: int) -> None:
    ref_out, ref_accuracy = reference
    out = tmp_path / "runs"
    if existing == "finished":
        shutil.copytree(ref_out, out)
    env = {**os.environ, "KILL_MODE": mode, "KILL_AT": str(at), "KILL_OUT": str(out)}
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *sweep(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    # both commands accept the folder as the kill left it
    try:
        main(["report", str(out)])
    except ValueError as error:  # nothing finished yet: one line that says so
        assert str(error).startswith("no result.json found") and "\n" not in str(error)
    resumed = main([*sweep(out), "--resume"])
    assert {r["seed"]: r["accuracy"] for r in resumed} == ref_accuracy
    runs = main(["report", str(out)])
    assert {r["seed"]: r["accuracy"] for r in runs} == ref_accuracy
    # no leftover of an interrupted write, except inside a re-run's <run>.partial that --resume
    # leaves alone (the finished run wins; the next run without --resume replaces it)
    leftovers = [p.name for p in out.rglob("*") if (".old-" in p.name or ".tmp" in p.name)
                 and not p.parent.name.endswith(".partial")]
    assert leftovers == []
    if existing == "none":
        assert not list(out.rglob("*.partial"))
