"""Sweeps on Ray: the runs of ``lifelong run --workers N`` (or ``--address HOST:PORT``) as Ray
tasks (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI Applications").

Each run is one task that calls :func:`lifelong.train.run.execute` in a Ray worker process, so
the run folders are exactly those of the sequential run (the same function writes them, with the
same atomic writes and checkpoints). At most ``workers`` runs are in flight; each asks Ray for
one CPU (and one GPU when it trains on CUDA). Without ``address`` a local Ray is started in this
process and shut down at the end; with one, the driver joins that cluster (the output folder
must then be on storage that every node writes to).

Nothing finished is lost: a finished run's folder is in place before its task returns, Ctrl-C
stops the workers (``--resume`` then skips the finished runs and continues the interrupted
ones), and a worker that dies mid-run (killed, out of memory) has its run submitted again,
continuing from that run's last checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from lifelong.config import RunConfig
from lifelong.data.scenarios import Scenario

__all__ = ["RAY_MISSING", "ray_available", "run_on_ray"]

RAY_MISSING = ("runs the sweep on Ray, which is not installed here: pip install "
               "\"lifelong[ray]\" (or pip install ray); without --workers/--address the runs go "
               "one after another in this process")
RETRIES = 2  # how often a run whose worker died is submitted again


def ray_available() -> bool:
    """Whether ``ray`` can be imported."""
    return importlib.util.find_spec("ray") is not None


def _execute(payload: bytes, scenario: Scenario, out_root: str | None,
             resume: bool | Literal["partial"],
             threads: int, imports: Sequence[str]) -> dict[str, Any]:
    """Body of one Ray task: the worker imports the user's modules (their benchmarks, methods
    and hyperparameter classes) before it unpickles the configuration, then runs it."""
    import torch

    from lifelong.plugins import import_plugins
    from lifelong.train.run import execute

    import_plugins(list(imports))
    torch.set_num_threads(threads)
    cfg: RunConfig = pickle.loads(payload)
    return execute(cfg, out_root, scenario=scenario, resume=resume)


def run_on_ray(
    jobs: Sequence[tuple[RunConfig, Scenario]],
    out_root: str | Path | None,
    resume: bool,
    workers: int,
    address: str | None = None,
    threads: int = 1,
    imports: Sequence[str] = (),
    on_result: Callable[[int, RunConfig, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Runs ``jobs`` (configuration and its built scenario) as Ray tasks, ``workers`` at a time.

    Args:
        jobs: The runs, in the order their results are returned.
        out_root: Output root of the run folders (``None``: nothing written).
        resume: As ``execute(resume=...)``: skip finished runs, continue interrupted ones.
        workers: Runs in flight at once (a local Ray gets this many CPUs).
        address: ``HOST:PORT`` of a running Ray cluster; ``None`` starts a local one.
        threads: torch threads in each worker.
        imports: Modules or ``.py`` files each worker imports first (``--import``).
        on_result: Called as ``on_result(index, cfg, result)`` when a run finishes.

    Returns:
        The result dictionaries, in the order of ``jobs``.

    Raises:
        ValueError: If Ray is not installed, or as ``execute`` (a run's own error is raised
            as it would be in the sequential run).
    """
    if not ray_available():
        raise ValueError(f"--workers {workers} {RAY_MISSING}")
    import ray

    from lifelong.train.loop import resolve_device

    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR,
                     configure_logging=False)
        else:
            ray.init(address=address, logging_level=logging.ERROR, configure_logging=False)
    root = None if out_root is None else str(Path(out_root).resolve())
    try:
        remote = ray.remote(max_retries=0)(_execute)
        scenario_refs: dict[int, Any] = {}
        pending: dict[Any, tuple[int, int]] = {}  # task ref -> (job index, attempt)
        results: dict[int, dict[str, Any]] = {}

        def submit(index: int, attempt: int) -> None:
            cfg, scenario = jobs[index]
            if id(scenario) not in scenario_refs:
                scenario_refs[id(scenario)] = ray.put(scenario)
            gpus = 1 if resolve_device(cfg.train.device).type == "cuda" else 0
            # a resubmitted run continues from its own .partial folder (its last checkpoint)
            how: bool | Literal["partial"] = resume
            if attempt > 0 and not resume:
                how = "partial"
            ref = remote.options(num_cpus=1, num_gpus=gpus).remote(
                pickle.dumps(cfg), scenario_refs[id(scenario)], root, how, threads,
                list(imports))
            pending[ref] = (index, attempt)

        queue = list(range(len(jobs)))
        while queue or pending:
            while queue and len(pending) < workers:
                submit(queue.pop(0), 0)
            done, _ = ray.wait(list(pending), num_returns=1)
            index, attempt = pending.pop(done[0])
            cfg = jobs[index][0]
            try:
                result = ray.get(done[0])
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.LocalRayletDiedError) as error:
                if attempt >= RETRIES:
                    raise ValueError(f"{cfg.method} on {cfg.benchmark} (seed {cfg.seed}): its "
                                     f"worker died {attempt + 1} times ({type(error).__name__}); "
                                     "run it again with --resume") from None
                print(f"lifelong: the worker running {cfg.method} on {cfg.benchmark} (seed "
                      f"{cfg.seed}) died; running it again from its last checkpoint",
                      file=sys.stderr, flush=True)
                submit(index, attempt + 1)
                continue
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if getattr(error, "cause", None) is not None else error
                raise cause from None
            results[index] = result
            if on_result is not None:
                on_result(index, cfg, result)
        return [results[i] for i in range(len(jobs))]
    finally:
        if started_here:
            ray.shutdown()
