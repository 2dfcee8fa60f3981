"""Command line: ``lifelong run | distill | list | report``.

``main(argv)`` returns what the command produced (the list of result dicts for ``run``), so tests
and scripts can call it directly; ``entry_point`` turns errors into one readable line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from lifelong.config import load_configs, make_config, normalize_method
from lifelong.data.scenarios import build_scenario, get_benchmark, list_benchmarks
from lifelong.methods.registry import get_method, list_methods, parse_method


class CLIError(ValueError):
    """A usage error reported as one line, without a traceback."""


def default_threads() -> tuple[int, str]:
    """torch intra-op threads of a run without ``--threads``, and how the header explains it.

    On a machine with two cores or fewer one thread: these small networks gain nothing from a
    second OpenMP thread, and two threads spinning against any other work make them several times
    slower (README, Speed). Elsewhere torch's own choice.
    """
    import torch

    cores = os.cpu_count() or 1
    if cores <= 2:
        return 1, f"1 torch thread (the default on {cores} core{'s' if cores > 1 else ''}; " \
                  "--threads N to change)"
    n = torch.get_num_threads()
    return n, f"{n} torch threads (torch's default on {cores} cores; --threads N to change)"


def _refuse_repeats(methods: list[str], seeds: list[int], method_source: str,
                    seed_source: str) -> None:
    """A method or a seed given twice would run (and write) the same run twice: refused."""
    seen: dict[frozenset[str], str] = {}
    for method in methods:
        norm = normalize_method(method)
        key = frozenset(norm.split("+"))
        if key in seen:
            if seen[key] == norm:
                raise CLIError(f"method {norm!r} is given twice ({method_source}); each method "
                               "runs once per seed")
            raise CLIError(f"methods {seen[key]!r} and {norm!r} are the same composition "
                           f"({method_source}); give one of them")
        seen[key] = norm
    for seed in seeds:
        if seeds.count(seed) > 1:
            raise CLIError(f"seed {seed} is given twice ({seed_source}); each seed runs once")


def _check_out(out: str) -> None:
    """``--out`` must be a folder lifelong can write to (checked before any training)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder: name a folder for the run folders "
                       "(e.g. -o runs)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lifelong-write-test-"):
            pass
    except OSError as error:
        raise CLIError(f"cannot write to --out {out} ({error.strerror or error}): choose a "
                       "writable folder with -o DIR") from None


def _cache_error(data_dir: str | None, error: Exception) -> CLIError | None:
    """The one-line error for a download into a folder that cannot be written, else ``None``."""
    from lifelong.data.datasets import user_cache_dir

    root = Path(data_dir).expanduser() if data_dir else user_cache_dir()
    where = f"--data-dir {root}" if data_dir else f"the dataset cache {root}"
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK) and not isinstance(error, PermissionError):
        return None
    why = getattr(error, "strerror", None) or "not writable"
    return CLIError(f"cannot download into {where} ({why}): pass --data-dir DIR naming a "
                    "writable folder, or put the dataset files there yourself")


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"expected key=value, got {item!r} (e.g. train.lr=0.001)")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifelong", description="Continual learning with PyTorch.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train methods on a benchmark and print the comparison",
                       description="Train one or more methods on a benchmark. With no arguments: "
                       "every registered method on the embedded split-digits benchmark.")
    r.add_argument("-b", "--benchmark", help="benchmark name (default split-digits)")
    r.add_argument("-m", "--method", nargs="+", dest="methods",
                   help="method expressions, e.g. ewc dhp+si (default: every registered method)")
    r.add_argument("-s", "--setting", choices=("task", "domain", "class"),
                   help="continual-learning setting (default: the benchmark's)")
    r.add_argument("--seeds", nargs="+", default=None, help="seeds (default 0)")
    r.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="TOML configuration file (see configs/); repeatable: a later file's "
                   "values replace an earlier file's, tables merge key by key")
    r.add_argument("--device", metavar="{auto,cpu,cuda[:N],mps}",
                   help="where to train (sets train.device over files and overrides; default "
                   "auto: CUDA when available, else the CPU)")
    r.add_argument("--data-dir", help="directory looked in first for dataset files")
    r.add_argument("--download", action="store_true", help="download missing datasets")
    r.add_argument("-o", "--out", default="runs", help="output root for run folders (default runs)")
    r.add_argument("--no-save", action="store_true", help="write no run folder")
    r.add_argument("--resume", action="store_true",
                   help="resume a sweep: skip runs whose result.json exists, continue those a "
                   "crash left as <run>.partial (from the last task), start the others")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set train.lr=0.001 (repeatable)")
    r.add_argument("--format", choices=("text", "markdown"), default="text",
                   help="format of the printed table")
    r.add_argument("--quiet", action="store_true",
                   help="no progress (one line per task on stderr, and a bar on a terminal)")
    r.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (default: 1 on a machine with <= 2 cores, "
                   "torch's choice elsewhere; the header says which)")
    r.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="also write TensorBoard logs (loss curves, accuracy after each task, the "
                   "accuracy matrix) to DIR/<benchmark>/<setting>/<method>/seed<k> (needs pip "
                   "install \"lifelong[tensorboard]\")")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the sweep as Ray tasks, N at a time (needs pip install "
                   "\"lifelong[ray]\"; default: one after another in this process)")
    r.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="run the sweep on an existing Ray cluster (the -o folder must be on "
                   "storage every node writes to)")
    r.add_argument("--import", action="append", default=[], dest="imports", metavar="MODULE",
                   help="import a module (name or .py file) that registers your benchmarks or "
                   "methods (lifelong.data.custom.register); repeatable")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides such as train.epochs=2 ewc.lam=1e7")
    t = sub.add_parser("tune", help="search hyperparameters on validation splits (Ray Tune)",
                       description="Search a method's hyperparameters with Ray Tune on a "
                       "validation split carved from each task's training data (the test set is "
                       "never read), and write the best configuration as a TOML file for "
                       "lifelong run -c FILE.")
    t.add_argument("-b", "--benchmark", help="benchmark name (default split-digits)")
    t.add_argument("-m", "--method", help="method expression, e.g. ewc or dhp+si")
    t.add_argument("-p", "--param", action="append", default=[], metavar="KEY=DIST(ARGS)",
                   help="a searched value: loguniform(lo,hi), uniform(lo,hi), randint(lo,hi), "
                   "choice(a,b,..) or grid(a,b,..), e.g. ewc.lam=loguniform(1,1e8); repeatable")
    t.add_argument("--trials", type=int, default=16, help="sampled configurations (default 16)")
    t.add_argument("-s", "--setting", choices=("task", "domain", "class"))
    t.add_argument("--seed", type=int, default=None, help="seed of the trials (default 0)")
    t.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="TOML configuration file(s), as for lifelong run")
    t.add_argument("--validation", type=float, default=0.2, metavar="FRACTION",
                   help="fraction of each class of each task's training data held out "
                   "(default 0.2)")
    t.add_argument("--workers", type=int, default=None, metavar="N",
                   help="trials at once (default: one per CPU)")
    t.add_argument("--early-stop", action="store_true",
                   help="stop poor trials after a task (ASHA on the validation accuracy after "
                   "each task); off by default, early tasks say little about forgetting")
    t.add_argument("--address", default=None, metavar="HOST:PORT", help="a Ray cluster to use")
    t.add_argument("--import", action="append", default=[], dest="imports", metavar="MODULE",
                   help="import a module (name or .py file) that registers benchmarks/methods")
    t.add_argument("--data-dir", help="directory looked in first for dataset files")
    t.add_argument("-o", "--out", default=None, metavar="FILE",
                   help="where to write the best configuration (default "
                   "tuned-<benchmark>-<method>.toml)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="fixed options for every trial, e.g. train.epochs=2")
    _add_distill_parser(sub)
    lst = sub.add_parser("list", help="list benchmarks and methods with their hyperparameters")
    lst.add_argument("--import", action="append", default=[], dest="imports", metavar="MODULE",
                     help="import a module (name or .py file) that registers benchmarks/methods")
    rep = sub.add_parser("report", help="tables and plots from saved runs")
    rep.add_argument("paths", nargs="+", help="run folders or folders containing them")
    rep.add_argument("-o", "--out", default=None,
                     help="folder for PNG plots and tables (default: no files)")
    rep.add_argument("--format", choices=("text", "markdown"), default="text")
    rep.add_argument("--html", metavar="FILE", default=None,
                     help="also write one self-contained HTML page (tables, heatmaps, curves, "
                     "each run's command and versions)")
    return p


def _add_distill_parser(sub: Any) -> None:
    from lifelong.train.distill import DistillConfig

    d0 = DistillConfig()
    d = sub.add_parser(
        "distill", help="knowledge distillation: a teacher, the student alone and the distilled "
        "student (Hinton et al. 2015)",
        description="Knowledge distillation as model compression (Hinton, Vinyals & Dean 2015): "
        "for every seed, train a teacher (one network or an ensemble), then a small student "
        "on the transfer set's hard labels alone and the same student on the teacher's soft "
        "targets plus the hard labels; print the test errors. Each model is saved as a run "
        "folder (result.json + model.pt) that 'lifelong report' reads.")
    d.add_argument("-b", "--benchmark", default=d0.benchmark,
                   help="a one-task benchmark: mnist, fashion-mnist or digits (default mnist)")
    d.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default 0)")
    d.add_argument("--teacher-hidden", nargs="+", type=int, default=list(d0.teacher_hidden),
                   metavar="W", help="teacher's hidden widths (default 1200 1200)")
    d.add_argument("--teacher-dropout", type=float, default=d0.teacher_dropout,
                   help=f"teacher's dropout after each hidden layer (default {d0.teacher_dropout})")
    d.add_argument("--teacher-members", type=int, default=d0.teacher_members, metavar="K",
                   help="an ensemble of K teachers, logits averaged (default 1)")
    d.add_argument("--teacher-epochs", type=int, default=d0.teacher_epochs,
                   help=f"epochs of each teacher (default {d0.teacher_epochs})")
    d.add_argument("--jitter", type=int, default=d0.jitter, metavar="PX",
                   help=f"teacher's random input translation, up to PX pixels (default "
                   f"{d0.jitter})")
    d.add_argument("--student-hidden", nargs="+", type=int, default=list(d0.student_hidden),
                   metavar="W", help="student's hidden widths (default 800 800)")
    d.add_argument("--student-dropout", type=float, default=d0.student_dropout,
                   help="student's dropout (default 0: unregularised)")
    d.add_argument("--student-epochs", type=int, default=d0.student_epochs,
                   help=f"epochs of both students over the transfer set (default "
                   f"{d0.student_epochs})")
    d.add_argument("--student-jitter", type=int, default=d0.student_jitter, metavar="PX",
                   help="students' input jitter (default 0: none in the transfer set)")
    d.add_argument("-T", "--temperature", type=float, default=d0.temperature,
                   help=f"temperature of the soft targets (default {d0.temperature:g})")
    d.add_argument("--soft-weight", type=float, default=d0.soft_weight,
                   help="weight of the soft term (default 1)")
    d.add_argument("--hard-weight", type=float, default=d0.hard_weight,
                   help="weight of the hard term, the labels' cross-entropy (default 1; 0: "
                   "soft targets only)")
    d.add_argument("--no-t2", action="store_true", help="do not multiply the soft term by T^2")
    d.add_argument("--transfer-fraction", type=float, default=d0.transfer_fraction,
                   metavar="F", help="train the students on this stratified fraction of the "
                   "training set (default 1; e.g. 0.01)")
    d.add_argument("--omit-classes", nargs="+", type=int, default=[], metavar="C",
                   help="leave these classes out of the transfer set (e.g. 3)")
    d.add_argument("--holdout", type=int, default=d0.holdout, metavar="N",
                   help="hold N training samples out of the transfer set; with --omit-classes "
                   "the bias correction is chosen on them (default 0)")
    d.add_argument("--name", default=None,
                   help="suffix of the students' folder names (default: from the transfer set, "
                   "e.g. f0.01, no3-h5000)")
    d.add_argument("--optimizer", choices=("adam", "sgd"), default=d0.train.optimizer)
    d.add_argument("--lr", type=float, default=d0.train.lr,
                   help=f"learning rate (default {d0.train.lr:g})")
    d.add_argument("--momentum", type=float, default=d0.train.momentum, help="SGD momentum")
    d.add_argument("--batch-size", type=int, default=d0.train.batch_size,
                   help=f"mini-batch size (default {d0.train.batch_size})")
    d.add_argument("--device", default="auto", metavar="{auto,cpu,cuda[:N],mps}",
                   help="where to train (default auto)")
    d.add_argument("--data-dir", help="directory looked in first for dataset files (then "
                   "$LIFELONG_DATA, then the user cache)")
    d.add_argument("--download", action="store_true", help="download missing datasets")
    d.add_argument("-o", "--out", default="runs", help="output root (default runs)")
    d.add_argument("--no-save", action="store_true", help="write no run folder")
    d.add_argument("--resume", action="store_true",
                   help="reuse finished runs of the same configuration: the teacher's saved "
                   "weights (one teacher for several transfer-set experiments) and students")
    d.add_argument("--format", choices=("text", "markdown"), default="text")
    d.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    d.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (default: 1 on <= 2 cores)")


def cmd_distill(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from lifelong.data.scenarios import BenchmarkOptions
    from lifelong.train.distill import DistillConfig, distill, distill_table
    from lifelong.train.loop import TrainConfig

    get_benchmark(args.benchmark)
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.resume and args.no_save:
        raise CLIError("--resume needs the run folders: it cannot be combined with --no-save")
    train = TrainConfig(optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                        batch_size=args.batch_size, device=args.device,
                        progress="off" if args.quiet else "auto")
    config = DistillConfig(
        benchmark=args.benchmark, seeds=tuple(args.seeds),
        teacher_hidden=tuple(args.teacher_hidden), teacher_dropout=args.teacher_dropout,
        teacher_members=args.teacher_members, teacher_epochs=args.teacher_epochs,
        jitter=args.jitter, student_hidden=tuple(args.student_hidden),
        student_dropout=args.student_dropout, student_epochs=args.student_epochs,
        student_jitter=args.student_jitter, temperature=args.temperature,
        soft_weight=args.soft_weight, hard_weight=args.hard_weight, t2=not args.no_t2,
        transfer_fraction=args.transfer_fraction, omit_classes=tuple(args.omit_classes),
        holdout=args.holdout, name=args.name, train=train,
        data=BenchmarkOptions(data_dir=args.data_dir, download=args.download))
    config.validate()
    out_root = None if args.no_save else args.out
    if out_root is not None:
        _check_out(out_root)
    threads, threads_text = ((args.threads, f"{args.threads} torch thread"
                              + ("s" if args.threads > 1 else "") + " (--threads)")
                             if args.threads is not None else default_threads())
    print(f"lifelong distill: {len(config.seeds)} seed{'s' if len(config.seeds) != 1 else ''} "
          f"on {config.benchmark}, teacher {'x'.join(map(str, config.teacher_hidden))}"
          + (f" (ensemble of {config.teacher_members})" if config.teacher_members > 1 else "")
          + f", student {'x'.join(map(str, config.student_hidden))}, T={config.temperature:g}, "
          f"{threads_text}" + (f", writing to {out_root}" if out_root else ""), flush=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = distill(config, out_root, resume=args.resume)
    finally:
        torch.set_num_threads(threads_before)
    print()
    print(distill_table(results, fmt=args.format))
    return results


def _split_seeds(seeds: list[str] | None, overrides: list[str]) -> list[int] | None:
    if seeds is None:
        return None
    out = []
    for s in seeds:
        if "=" in s:  # argparse's nargs='+' swallows trailing key=value overrides
            overrides.append(s)
            continue
        try:
            out.append(int(s))
        except ValueError:
            raise CLIError(f"--seeds takes integers, got {s!r}") from None
    return out


def cmd_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from lifelong.plugins import import_plugins
    from lifelong.report import format_table, summarize

    import_plugins(args.imports)
    extra = list(args.overrides) + list(args.set)
    seeds = _split_seeds(args.seeds, extra)
    if args.methods:
        methods = []
        for m in args.methods:
            if "=" in m:
                extra.append(m)
            else:
                methods.append(m)
        args.methods = methods
    # files (later over earlier) < dotted overrides < flags
    top, overrides = load_configs(args.config)
    cli_overrides = _parse_overrides(extra)
    overrides.update(cli_overrides)
    benchmark = args.benchmark or top.get("benchmark", "split-digits")
    get_benchmark(benchmark)
    default_methods = not (args.methods or top.get("methods") or top.get("method"))
    methods = args.methods or top.get("methods") or top.get("method") or list_methods()
    if isinstance(methods, str):
        methods = [methods]
    if seeds is None:
        seeds = top.get("seeds") or [top.get("seed", 0)]
    setting = args.setting or (None if "setting" in cli_overrides else top.get("setting"))
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    if args.download:
        overrides["data.download"] = True
    if args.quiet:
        overrides["train.progress"] = "off"
    if args.device is not None:
        overrides["train.device"] = args.device
    if args.tensorboard is not None:
        from lifelong.train.tensorboard import check_tensorboard

        check_tensorboard()
        overrides["train.tensorboard"] = str(Path(args.tensorboard).resolve())
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.resume and args.no_save:
        raise CLIError("--resume needs the run folders: it cannot be combined with --no-save")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    on_ray = args.address is not None or (args.workers or 1) > 1
    if on_ray:
        from lifelong.train.sweep import RAY_MISSING, ray_available

        if not ray_available():
            flag = f"--workers {args.workers}" if args.address is None else "--address"
            raise CLIError(f"{flag} {RAY_MISSING}")
    method_source = ("-m " + " ".join(args.methods) if args.methods else
                     "the configuration files' methods" if top.get("methods") or top.get("method")
                     else "the default methods")
    seed_source = ("--seeds " + " ".join(str(s) for s in seeds) if args.seeds else
                   "the configuration files' seeds")
    seeds = [int(s) for s in seeds]
    _refuse_repeats(list(methods), seeds, method_source, seed_source)
    # Validate every (method, seed) before any training: unknown names, bad options, settings.
    configs = []
    for method in methods:
        parse_method(normalize_method(method))
        for seed in seeds:
            configs.append(make_config(benchmark, method, seed, setting, overrides))
    out_root = None if args.no_save else args.out
    if out_root is not None:
        _check_out(out_root)
    from lifelong.data.layout import Layout
    from lifelong.methods.registry import build_recipe
    from lifelong.train.loop import resolve_device
    from lifelong.train.run import resume_plan

    scenarios: dict[Any, Any] = {}
    plans: dict[str, int] = {}
    kept, left_out = [], []
    for cfg in configs:
        key = (repr(dataclasses.asdict(cfg.data)), cfg.seed)
        if key not in scenarios:
            try:
                scenarios[key] = build_scenario(cfg.benchmark, cfg.data, cfg.seed)
            except OSError as error:
                cache = _cache_error(cfg.data.data_dir, error) if cfg.data.download else None
                if cache is not None:
                    raise cache from None
                raise
        sc = scenarios[key]
        s = cfg.setting or sc.default_setting
        if default_methods and s not in get_method(cfg.method).settings:
            left_out.append(cfg.method)  # e.g. iCaRL and BiC are class-IL methods
            continue
        kept.append(cfg)
        layout = Layout.for_scenario(sc, s)
        cfg.model.validate(layout)
        build_recipe(cfg.method, cfg.hparams, s)
        if args.resume and out_root is not None:
            plan = resume_plan(cfg, out_root, s)
            plans[plan] = plans.get(plan, 0) + 1
    configs = kept
    if left_out:
        names = ", ".join(dict.fromkeys(left_out))
        print(f"lifelong run: left out {names} (not applicable to this setting; name them "
              "with -m and --setting class)", flush=True)
    import torch

    threads, threads_text = ((args.threads, f"{args.threads} torch thread"
                              + ("s" if args.threads > 1 else "") + " (--threads)")
                             if args.threads is not None else default_threads())
    settings = sorted({c.setting or scenarios[(repr(dataclasses.asdict(c.data)), c.seed)]
                       .default_setting for c in configs})
    print(f"lifelong run: {len(configs)} run{'s' if len(configs) != 1 else ''} on {benchmark} "
          f"({', '.join(s + '-IL' for s in settings)}), "
          f"device {resolve_device(configs[0].train.device)}, "
          f"{threads_text}" + (f", writing to {out_root}" if out_root else ""), flush=True)
    if plans:
        print("resume: " + ", ".join(f"{n} {what}" for what, n in (
            ("finished (skipped)", plans.get("finished", 0)),
            ("interrupted (continued)", plans.get("continue", 0)),
            ("to start", plans.get("start", 0))) if n), flush=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if on_ray:
            from lifelong.train.sweep import run_on_ray

            jobs = [(c, scenarios[(repr(dataclasses.asdict(c.data)), c.seed)]) for c in configs]
            print(f"on Ray: {args.workers or len(configs)} run(s) at a time"
                  + (f" on the cluster at {args.address}" if args.address else
                     " (a local Ray, started for this sweep)"), flush=True)
            results = run_on_ray(jobs, out_root, args.resume, args.workers or len(configs),
                                 args.address, threads, args.imports,
                                 on_result=lambda i, c, r: _print_result(i, len(configs), c, r))
        else:
            results = _run_all(configs, scenarios, out_root, args.resume)
    finally:
        torch.set_num_threads(threads_before)
    print()
    print(format_table(summarize(results), fmt=args.format))
    return results


def _run_all(configs: list[Any], scenarios: dict[Any, Any], out_root: str | None,
             resume: bool) -> list[dict[str, Any]]:
    """Runs every configuration in order, printing one line per finished run. A run that
    diverges is recorded as failed and the others go on."""
    from lifelong.train.run import execute

    results = []
    for i, cfg in enumerate(configs):
        key = (repr(dataclasses.asdict(cfg.data)), cfg.seed)
        res = execute(cfg, out_root, scenario=scenarios[key], resume=resume)
        _print_result(i, len(configs), cfg, res)
        results.append(res)
    return results


def _print_result(i: int, n: int, cfg: Any, res: dict[str, Any]) -> None:
    """The line of a finished run: ``[i/n] method on benchmark (...): average accuracy ...``."""
    where = f" -> {res['path']}" if "path" in res else ""
    if res.get("status") == "failed":
        print(f"[{i + 1}/{n}] FAILED: {res['error']}{where}", flush=True)
        return
    s = res["summary"][res["setting"]]
    acc = s.get("average_accuracy")
    acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
    how = ("finished before, skipped" if res.get("skipped")
           else f"in {res['timings']['total_s']:.1f}s")
    print(f"[{i + 1}/{n}] {cfg.method} on {cfg.benchmark} ({res['setting']}-IL, seed {cfg.seed}): "
          f"average accuracy {acc_text} {how}{where}", flush=True)


def _hparam_lines(hp_type: type | None) -> list[str]:
    if hp_type is None:
        return []
    lines = []
    for f in dataclasses.fields(hp_type):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lines.append(f"      {f.name} = {default!r}")
    return lines


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    from lifelong.data.scenarios import BenchmarkOptions
    from lifelong.plugins import import_plugins

    import_plugins(getattr(args, "imports", []))
    from lifelong.nn.model import ModelConfig
    from lifelong.train.loop import TrainConfig

    print("Benchmarks (lifelong run --benchmark NAME):")
    for name in list_benchmarks():
        bench = get_benchmark(name)
        tag = "" if bench.needs_download else "  [embedded, no download]"
        print(f"  {name:28s} {bench.description}{tag}")
        if bench.defaults:
            print("      protocol: " + " ".join(f"{k}={v}" for k, v in bench.defaults.items()))
    print("\nMethods (lifelong run --method NAME; combine with '+', e.g. dhp+ewc):")
    for name in list_methods():
        spec = get_method(name)
        print(f"  {name:28s} {spec.description}")
        lines = _hparam_lines(spec.hparams)
        if lines:
            print(f"    hyperparameters ({name}.KEY=VALUE):")
            print("\n".join(lines))
    for title, cls in (("data", BenchmarkOptions), ("model", ModelConfig), ("train", TrainConfig)):
        print(f"\nOptions {title}.KEY=VALUE (defaults before a benchmark's protocol):")
        print("\n".join(_hparam_lines(cls)))
    return {"benchmarks": list_benchmarks(), "methods": list_methods()}


def cmd_report(args: argparse.Namespace) -> list[dict[str, Any]]:
    from lifelong.report import format_table, load_runs, summarize, write_report

    runs = load_runs(args.paths)
    print(format_table(summarize(runs), fmt=args.format))
    if args.out:
        paths = write_report(runs, Path(args.out))
        print(f"\nwrote {len(paths)} files to {args.out}")
    if args.html:
        from lifelong.report import write_html

        page = write_html(runs, args.html)
        print(f"wrote {page} ({page.stat().st_size / 1024:.0f} KiB, self-contained)")
    return runs


def cmd_tune(args: argparse.Namespace) -> dict[str, Any]:
    """``lifelong tune``: returns ``{"best": values, "val_accuracy": .., "trials": [..],
    "path": written TOML}``."""
    import copy
    import importlib.util

    from lifelong.config import apply_overrides
    from lifelong.plugins import import_plugins

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        raise CLIError("lifelong tune runs on Ray Tune, which is not installed here: pip install "
                       "\"lifelong[tune]\" (or pip install \"ray[tune]\" optuna)")
    from lifelong.train.tune import parse_space, tune, write_toml

    import_plugins(args.imports)
    if not args.param:
        raise CLIError("name at least one value to search: --param KEY=DIST(ARGS), e.g. "
                       "--param ewc.lam=loguniform(1,1e8)")
    if args.trials < 1:
        raise CLIError(f"--trials must be >= 1, got {args.trials}")
    top, overrides = load_configs(args.config)
    overrides.update(_parse_overrides(list(args.overrides)))
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    benchmark = args.benchmark or top.get("benchmark", "split-digits")
    method = args.method or top.get("method") or (top.get("methods") or [None])[0]
    if not method:
        raise CLIError("name the method to tune with -m METHOD")
    method = normalize_method(method)
    seed = args.seed if args.seed is not None else int(top.get("seed", 0))
    setting = args.setting or top.get("setting")
    cfg = make_config(benchmark, method, seed, setting, overrides)
    cfg.train.progress = "off"
    space = parse_space(args.param)
    for key, domain in space.items():  # a wrong key or value fails now, not in every trial
        sample = domain["grid_search"][0] if isinstance(domain, dict) else domain.sample()
        apply_overrides(copy.deepcopy(cfg), {key: sample})
    scenario = build_scenario(cfg.benchmark, cfg.data, cfg.seed)
    print(f"lifelong tune: {method} on {benchmark}, {args.trials} trial(s) of "
          + ", ".join(args.param) + f", seed {seed}, validation = {args.validation:g} of each "
          "task's training data (the test set is not read)", flush=True)
    best, accuracy, rows = tune(cfg, scenario, space, args.trials, args.validation,
                                args.imports, args.address, args.workers, args.early_stop)
    width = max(len(k) for k in space)
    print("\ntrials (validation average accuracy after the last task trained):")
    for row in sorted(rows, key=lambda r: -r["val_accuracy"]):
        values = "  ".join(f"{k}={row['config'][k]:<{width}.6g}" if isinstance(
            row["config"][k], float) else f"{k}={row['config'][k]}" for k in space)
        stopped = ("  (diverged)" if row["diverged"] else "" if row["tasks"] == len(
            scenario.tasks) else f"  (stopped after task {row['tasks']})")
        print(f"  {100 * row['val_accuracy']:6.2f}%  {values}{stopped}")
    out = Path(args.out or f"tuned-{benchmark}-{method}.toml")
    resolved = cfg.to_dict()  # the fixed options as the trials used them (typed, not strings)
    fixed = {k: resolved[k.split(".")[0]][k.split(".", 1)[1]] for k in overrides
             if k not in ("data.data_dir", "data.download", "train.progress")
             and isinstance(resolved.get(k.split(".")[0]), dict)}
    top_out = {"benchmark": benchmark, "method": method, "setting": setting}
    path = write_toml(out, top_out, {**fixed, **best}, comment=[
        shlex.join(["lifelong", *args.argv]),
        f"best of {len(rows)} trials: validation average accuracy {100 * accuracy:.2f}% (seed "
        f"{seed}, {args.validation:g} of each task's training data held out; the test set was "
        "not read)",
        f"run it on the test set: lifelong run -c {out} --seeds 0 1 2"])
    print("\nbest: " + " ".join(f"{k}={v}" for k, v in best.items())
          + f" (validation {100 * accuracy:.2f}%); wrote {path}")
    return {"best": best, "val_accuracy": accuracy, "trials": rows, "path": str(path)}


def main(argv: list[str] | None = None) -> Any:
    """Runs the command line with ``argv`` and returns the command's result."""
    args = _build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for records
    return {"run": cmd_run, "distill": cmd_distill, "list": cmd_list, "report": cmd_report,
            "tune": cmd_tune}[args.command](args)


def failed_runs(result: Any) -> list[dict[str, Any]]:
    """The failed runs among a ``run`` command's results."""
    if not isinstance(result, list):
        return []
    return [r for r in result if isinstance(r, dict) and r.get("status") == "failed"]


def entry_point() -> None:
    """Console script: errors become ``lifelong: error: ...`` and exit status 2; a sweep in which
    some run failed (diverged) exits with status 1 after the table."""
    try:
        result = main()
    except KeyboardInterrupt:
        print("lifelong: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError) as e:
        print(f"lifelong: error: {e}", file=sys.stderr)
        sys.exit(2)
    failed = failed_runs(result)
    if failed:
        print(f"lifelong: error: {len(failed)} of {len(result)} runs failed:", file=sys.stderr)
        for run in failed:
            print(f"  {run['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    entry_point()
