"""Command line: ``lifelong run | list | report``.

``main(argv)`` returns what the command produced (the list of result dicts for ``run``), so tests
and scripts can call it directly; ``entry_point`` turns errors into one readable line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lifelong.config import load_configs, make_config
from lifelong.data.scenarios import build_scenario, get_benchmark, list_benchmarks
from lifelong.methods.registry import get_method, list_methods, parse_method


class CLIError(ValueError):
    """A usage error reported as one line, without a traceback."""


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
                   help="continue runs that a crash left as <run>.partial (from the last task)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set train.lr=0.001 (repeatable)")
    r.add_argument("--format", choices=("text", "markdown"), default="text",
                   help="format of the printed table")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (default: torch's choice). On a small shared "
                   "machine 1 is often fastest for these small networks")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides such as train.epochs=2 ewc.lam=1e7")
    sub.add_parser("list", help="list benchmarks and methods with their hyperparameters")
    rep = sub.add_parser("report", help="tables and plots from saved runs")
    rep.add_argument("paths", nargs="+", help="run folders or folders containing them")
    rep.add_argument("-o", "--out", default=None,
                     help="folder for PNG plots and tables (default: no files)")
    rep.add_argument("--format", choices=("text", "markdown"), default="text")
    return p


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
    from lifelong.report import format_table, summarize

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
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # Validate every (method, seed) before any training: unknown names, bad options, settings.
    configs = []
    for method in methods:
        parse_method(method)
        for seed in seeds:
            configs.append(make_config(benchmark, method, int(seed), setting, overrides))
    from lifelong.data.layout import Layout
    from lifelong.methods.registry import build_recipe

    scenarios: dict[Any, Any] = {}
    for cfg in configs:
        key = (repr(dataclasses.asdict(cfg.data)), cfg.seed)
        if key not in scenarios:
            scenarios[key] = build_scenario(cfg.benchmark, cfg.data, cfg.seed)
        sc = scenarios[key]
        s = cfg.setting or sc.default_setting
        layout = Layout.for_scenario(sc, s)
        cfg.model.validate(layout)
        build_recipe(cfg.method, cfg.hparams, s)
    import torch

    results = []
    out_root = None if args.no_save else args.out
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        results = _run_all(configs, scenarios, out_root, args.resume)
    finally:
        torch.set_num_threads(threads_before)
    print()
    print(format_table(summarize(results), fmt=args.format))
    return results


def _run_all(configs: list[Any], scenarios: dict[Any, Any], out_root: str | None,
             resume: bool) -> list[dict[str, Any]]:
    """Runs every configuration in order, printing one line per finished run."""
    from lifelong.train.run import execute

    results = []
    for i, cfg in enumerate(configs):
        key = (repr(dataclasses.asdict(cfg.data)), cfg.seed)
        res = execute(cfg, out_root, scenario=scenarios[key], resume=resume)
        s = res["summary"][res["setting"]]
        print(f"[{i + 1}/{len(configs)}] {cfg.method} on {cfg.benchmark} ({res['setting']}-IL, "
              f"seed {cfg.seed}): average accuracy {100 * s['average_accuracy']:.2f}% "
              f"in {res['timings']['total_s']:.1f}s"
              + (f" -> {res['path']}" if "path" in res else ""), flush=True)
        results.append(res)
    return results


def _hparam_lines(hp_type: type | None) -> list[str]:
    if hp_type is None:
        return []
    lines = []
    for f in dataclasses.fields(hp_type):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lines.append(f"      {f.name} = {default!r}")
    return lines


def cmd_list(_: argparse.Namespace) -> dict[str, Any]:
    from lifelong.data.scenarios import BenchmarkOptions
    from lifelong.nn.model import ModelConfig
    from lifelong.train.loop import TrainConfig

    print("Benchmarks (lifelong run --benchmark NAME):")
    for name in list_benchmarks():
        spec = get_benchmark(name)
        tag = "" if spec.needs_download else "  [embedded, no download]"
        print(f"  {name:28s} {spec.description}{tag}")
        if spec.defaults:
            print("      protocol: " + " ".join(f"{k}={v}" for k, v in spec.defaults.items()))
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
    return runs


def main(argv: list[str] | None = None) -> Any:
    """Runs the command line with ``argv`` and returns the command's result."""
    args = _build_parser().parse_args(argv)
    return {"run": cmd_run, "list": cmd_list, "report": cmd_report}[args.command](args)


def entry_point() -> None:
    """Console script: errors become ``lifelong: error: ...`` and exit status 2."""
    try:
        main()
    except KeyboardInterrupt:
        print("lifelong: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, FileNotFoundError) as e:
        print(f"lifelong: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    entry_point()
