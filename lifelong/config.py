"""One run's configuration, composed from each component's defaults, and dotted overrides.

Resolution order: component defaults -> the benchmark's protocol -> TOML files, later over
earlier (:func:`load_configs`) -> the command line's ``key=value`` overrides. Keys are dotted:
``data.normalize``, ``model.hidden``, ``train.lr``, and ``<method>.<field>`` for a method's
hyperparameters (``ewc.lam=1e7``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import shlex
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from lifelong.data.scenarios import BenchmarkOptions, get_benchmark
from lifelong.methods.registry import get_method, list_methods, parse_method
from lifelong.nn.model import ModelConfig
from lifelong.train.loop import TrainConfig

SECTIONS = ("data", "model", "train")
# run-level entries of a configuration file and the type each must have
TOP_KEYS: dict[str, type] = {"benchmark": str, "method": str, "methods": list, "setting": str,
                             "seed": int, "seeds": list}
# a later file's ``method`` replaces an earlier ``methods`` (and ``seed`` ``seeds``), and back
_ALTERNATIVE = {"method": "methods", "methods": "method", "seed": "seeds", "seeds": "seed"}
# options that change neither the training nor its numbers: a run may be resumed across them
RESUME_IGNORED = ("train.progress", "train.tensorboard", "data.data_dir", "data.download")

# Checks of single values, applied where the value is set so that the message names the option
# and the value as the user wrote them (``ewc.lam must be >= 0, got -5``, not the internal -2.5).
_Rule = tuple[typing.Callable[[Any], bool], str]
_POSITIVE: _Rule = (lambda v: v > 0, "must be > 0")
_NONNEGATIVE: _Rule = (lambda v: v >= 0, "must be >= 0")
_AT_LEAST_ONE: _Rule = (lambda v: v >= 1, "must be >= 1")
_UNIT: _Rule = (lambda v: 0 <= v <= 1, "must lie in [0, 1]")
VALUE_RULES: dict[str, _Rule] = {
    "train.lr": _POSITIVE, "train.momentum": _NONNEGATIVE, "train.weight_decay": _NONNEGATIVE,
    "train.batch_size": _AT_LEAST_ONE, "train.eval_batch_size": _AT_LEAST_ONE,
    "train.log_every": _AT_LEAST_ONE, "train.epochs": _NONNEGATIVE,
    "train.later_epochs": _NONNEGATIVE,
    "train.iterations": _NONNEGATIVE, "train.betas": (lambda v: all(0 <= b < 1 for b in v),
                                                      "must lie in [0, 1)"),
    "train.jitter": _NONNEGATIVE,
    "model.dropout": (lambda v: 0 <= v < 1, "must lie in [0, 1)"),
    "model.hidden": (lambda v: all(h >= 1 for h in v), "must be >= 1 each"),
}
# a method's hyperparameter, by field name (every method that has the field means the same)
HPARAM_RULES: dict[str, _Rule] = {
    "lam": (lambda v: v >= 0, "must be >= 0 (the penalty's strength)"),
    "c": (lambda v: v >= 0, "must be >= 0 (the penalty's strength)"),
    "xi": _POSITIVE, "gamma": _UNIT, "eta_init": _UNIT, "alpha_init_scale": _NONNEGATIVE,
    "fisher_samples": _AT_LEAST_ONE, "samples": _AT_LEAST_ONE, "fisher_batch": _AT_LEAST_ONE,
    "batch": _AT_LEAST_ONE, "budget": _AT_LEAST_ONE, "max_iter": _AT_LEAST_ONE,
    "holdout": (lambda v: 0 <= v < 1, "must lie in [0, 1) (the held-out fraction)"),
    "beta_decay": _NONNEGATIVE, "temperature": _POSITIVE, "weight_decay": _NONNEGATIVE,
}
# consolidation penalties: pointless on top of joint training, and some pairs are one penalty
PENALTY_METHODS = ("ewc", "online-ewc", "si", "mas", "mas-local")
# methods that keep an exemplar memory (lifelong.methods.rehearsal), and those of them that
# already distil the previous model's outputs over the old classes
MEMORY_METHODS = ("replay", "icarl", "bic-baseline-1", "bic-baseline-2", "bic", "bic-upper-bound")
DISTILLING_MEMORY_METHODS = {
    "icarl": "distils the old classes with LwF's term already",
    "bic-baseline-2": "distils the old classes already (lambda = n/(n+m))",
    "bic": "distils the old classes already (lambda = n/(n+m))",
    "bic-upper-bound": "distils the old classes already (lambda = n/(n+m))",
}
_SAME_PENALTY = {
    frozenset({"ewc", "online-ewc"}): "two forms of one Fisher penalty (online EWC keeps one "
                                      "running Fisher instead of one per task)",
    frozenset({"mas", "mas-local"}): "two estimates of one importance (global and local)",
}


@dataclass
class RunConfig:
    """Everything that determines one run (one method, one benchmark, one seed).

    Attributes:
        benchmark: Registered benchmark name.
        method: Method expression (``ewc``, ``dhp+si`` ...).
        setting: ``task``, ``domain`` or ``class``; ``None`` takes the benchmark's default.
        seed: Seeds the scenario, the model's initialisation and the data order.
        data: Benchmark options.
        model: Model options.
        train: Optimisation options.
        hparams: ``method name -> hyperparameter dataclass`` for every part of ``method``.
    """

    benchmark: str = "split-digits"
    method: str = "finetune"
    setting: str | None = None
    seed: int = 0
    data: BenchmarkOptions = field(default_factory=BenchmarkOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hparams: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly nested dict (hyperparameters under their method's name)."""
        out = {
            "benchmark": self.benchmark, "method": self.method, "setting": self.setting,
            "seed": self.seed,
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }
        for name, hp in self.hparams.items():
            out[name] = dataclasses.asdict(hp) if hp is not None else {}
        return json.loads(json.dumps(out, default=list))


def _parse_bool(text: str, key: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{key}: expected true or false, got {text!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Converts ``value`` (a CLI string or a TOML value) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return coerce(value, a, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"{key}: cannot parse list {text!r}") from None
            elif text.startswith("("):
                value = [v for v in text.strip("()").split(",") if v.strip()]
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key) for v in value)
        if args and len(args) != len(value):
            raise ValueError(f"{key}: expected {len(args)} values, got {list(value)}")
        return tuple(coerce(v, a, key) for v, a in zip(value, args)) if args else tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        return _parse_bool(str(value), key)
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        return str(value)
    if tp is Any:
        return value
    raise ValueError(f"{key}: unsupported option type {tp}")


def _shown(value: Any) -> str:
    """A value as the user wrote it (a command-line string as is, a TOML value as Python)."""
    return value.strip() if isinstance(value, str) else repr(value)


def check_value(key: str, value: Any, raw: Any, method: bool = False) -> None:
    """Raises ``ValueError`` naming ``key`` and the user's ``raw`` text if the coerced ``value``
    breaks the option's rule (:data:`VALUE_RULES`, or :data:`HPARAM_RULES` for a method's)."""
    name = key.split(".", 1)[1]
    rule = HPARAM_RULES.get(name) if method else VALUE_RULES.get(key)
    if method and name == "variant":
        from lifelong.terms.importance import FISHER_VARIANTS

        if value not in FISHER_VARIANTS:
            raise ValueError(f"{key}: unknown Fisher variant {_shown(raw)}; valid: "
                             f"{', '.join(FISHER_VARIANTS)}")
    if rule is not None and value is not None and not isinstance(value, (str, bool)):
        ok, requirement = rule
        if not ok(value):
            raise ValueError(f"{key} {requirement}, got {_shown(raw)}")


def set_field(obj: Any, name: str, value: Any, key: str, method: bool = False) -> None:
    """Sets dataclass field ``name`` of ``obj`` to ``value`` coerced to its annotation, after
    :func:`check_value` (``method``: ``obj`` holds a method's hyperparameters)."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    if name not in names:
        raise ValueError(f"unknown option {key!r}; valid keys: "
                         + ", ".join(f"{key.rsplit('.', 1)[0]}.{n}" for n in names))
    coerced = coerce(value, hints[name], key)
    check_value(key, coerced, value, method)
    setattr(obj, name, coerced)


def _unknown_section(section: str, key: str) -> ValueError:
    valid = [*SECTIONS, *list_methods()]
    close = difflib.get_close_matches(section, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown section {section!r} in {key!r}{hint}; valid: data, model, train "
                      f"or a method's name ({', '.join(list_methods())})")


def normalize_method(expr: str) -> str:
    """``"dhp + ewc"`` -> ``"dhp+ewc"``: the form used in folder names and tables."""
    return "+".join(part.strip() for part in str(expr).split("+"))


def check_composition(expr: str) -> None:
    """Refuses compositions that are no-ops or contradictions, saying why.

    * ``finetune`` is plain training, the empty recipe: ``finetune+X`` is ``X`` (and
      ``finetune+joint`` contradicts itself);
    * ``joint`` trains on every task's data, so there is nothing to forget: a consolidation
      penalty (``joint+ewc``) only holds the upper bound back;
    * ``ewc+online-ewc`` and ``mas+mas-local`` are the same penalty twice;
    * ``joint+lwf``: with every task's data at hand, distilling the previous model's responses
      only holds the upper bound back (as a penalty does);
    * two exemplar memories (``replay+icarl``, ``icarl+bic``: iCaRL and the BiC rows are replay
      plus their own parts), or a memory with ``joint`` (which replays every sample already);
    * ``lwf`` with ``icarl`` or a distilling BiC row (``bic-baseline-2``, ``bic``,
      ``bic-upper-bound``): the old classes would be distilled twice.

    ``dhp+X`` (DHP-Softmax with X's penalty), ``joint+dhp`` (DHP's upper bound), pairs of
    different penalties (``ewc+si``: the sum of both), ``lwf+X`` with a penalty (``lwf+ewc``:
    distillation on the outputs and a penalty on the weights), ``dhp+lwf`` and ``lwf`` with
    ``finetune-fc`` or ``feature-extraction`` (in class-IL the shared layer's old rows still
    move, and LwF protects them) are meaningful and allowed, as are ``replay+lwf`` (LwF's
    distillation on new samples and exemplars) and a memory with a penalty (``replay+ewc``).
    """
    parts = [p.strip() for p in expr.split("+")]
    if len(parts) < 2:
        return
    rest = "+".join(p for p in parts if p != "finetune")
    if "finetune" in parts and "joint" in parts:
        raise ValueError(f"method {expr!r} contradicts itself: 'finetune' trains on each new "
                         "task's data only, 'joint' on the data of every task so far; compare "
                         "them as two methods (-m finetune joint)")
    if "finetune" in parts:
        raise ValueError(f"method {expr!r}: 'finetune' is plain training and adds nothing to "
                         f"{rest!r}; run {rest!r}")
    penalties = [p for p in parts if p in PENALTY_METHODS]
    if "joint" in parts and penalties:
        raise ValueError(f"method {expr!r}: 'joint' trains on the data of every task so far, so "
                         f"there is nothing to forget and the penalty of {penalties[0]!r} only "
                         f"holds it back; compare them as two methods (-m joint {penalties[0]})")
    if "joint" in parts and "lwf" in parts:
        raise ValueError(f"method {expr!r}: 'joint' trains on the data of every task so far, so "
                         "there is nothing to forget and distilling the previous model's "
                         "responses ('lwf') only holds it back; compare them as two methods "
                         "(-m joint lwf)")
    for pair, why in _SAME_PENALTY.items():
        if pair <= set(parts):
            a, b = sorted(pair)
            raise ValueError(f"method {expr!r}: {a!r} and {b!r} are {why}; use one of them")
    memories = [p for p in parts if p in MEMORY_METHODS]
    if "joint" in parts and memories:
        raise ValueError(f"method {expr!r}: 'joint' trains on every sample of every task so "
                         f"far, so the exemplar memory of {memories[0]!r} has nothing to add; "
                         f"compare them as two methods (-m joint {memories[0]})")
    if len(memories) > 1:
        raise ValueError(f"method {expr!r}: {memories[0]!r} and {memories[1]!r} both keep an "
                         "exemplar memory ('icarl' and the 'bic' rows are replay plus their own "
                         "parts); use one of them")
    if "lwf" in parts:
        for p in parts:
            if p in DISTILLING_MEMORY_METHODS:
                raise ValueError(f"method {expr!r}: {p!r} {DISTILLING_MEMORY_METHODS[p]}; "
                                 f"adding 'lwf' would distil them twice (use 'replay+lwf' for "
                                 "exemplars with LwF)")


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a ``RunConfig.to_dict()``) without :data:`RESUME_IGNORED` options."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key in RESUME_IGNORED:
        section, name = key.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(name, None)
    return out


def config_difference(mine: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """The first option in which two configurations differ (``train.lr: 0.5, not 0.01``), or
    ``None``; options of :data:`RESUME_IGNORED` do not count."""
    a, b = comparable_config(mine), comparable_config(theirs)
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            for name in sorted(set(x) | set(y)):
                if x.get(name) != y.get(name):
                    return f"{key}.{name} is {y.get(name)!r} there, {x.get(name)!r} here"
        elif x != y:
            return f"{key} is {y!r} there, {x!r} here"
    return None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], strict_methods: bool = True) -> None:
    """Applies dotted overrides to ``cfg`` in place.

    A ``<method>.<field>`` key for a method that is registered but not part of ``cfg.method`` is
    checked (name and value) and then ignored when ``strict_methods`` is false (one override list
    serves several methods).
    """
    for key, value in overrides.items():
        if key in ("benchmark", "method", "setting", "seed"):
            if key == "seed":
                cfg.seed = coerce(value, int, key)
            elif key == "setting":
                cfg.setting = coerce(value, str | None, key)
            else:
                setattr(cfg, key, str(value))
            continue
        if "." not in key:
            raise ValueError(
                f"override {key!r} needs a section: data.*, model.*, train.* or <method>.* "
                "(e.g. train.lr=0.001, ewc.lam=1e7)"
            )
        section, name = key.split(".", 1)
        if section in SECTIONS:
            set_field(getattr(cfg, section), name, value, key)
            continue
        if section not in list_methods():
            raise _unknown_section(section, key)
        spec = get_method(section)
        if spec.hparams is None:
            raise ValueError(f"method {section!r} has no hyperparameters (got {key!r})")
        if section not in cfg.hparams:
            if strict_methods:
                raise ValueError(f"override {key!r} is for method {section!r}, which is not part "
                                 f"of {cfg.method!r}")
            set_field(spec.default_hparams(), name, value, key, method=True)  # a typo still fails
            continue
        set_field(cfg.hparams[section], name, value, key, method=True)


def flatten_toml(doc: dict[str, Any], where: str = "config file"
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits a TOML document into run-level entries (benchmark, method(s), seed(s), setting) and
    dotted overrides; errors start with ``where`` (the file's name)."""
    top: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            if k not in SECTIONS and k not in list_methods():
                raise ValueError(f"{where}: unknown table [{k}]; valid: [data], [model], [train] "
                                 f"or a method's name ({', '.join(list_methods())})")
            for kk, vv in v.items():
                overrides[f"{k}.{kk}"] = vv
        elif k in TOP_KEYS:
            if not isinstance(v, TOP_KEYS[k]) or isinstance(v, bool):
                # ValueError like every other mistake in a file: one line from the CLI
                raise ValueError(  # noqa: TRY004
                    f"{where}: {k} must be a {TOP_KEYS[k].__name__}, got {v!r}")
            top[k] = v
        else:
            raise ValueError(f"{where}: unknown top-level key {k!r}; valid: benchmark, "
                             "method(s), setting, seed(s), and [data]/[model]/[train]/[<method>] "
                             "tables")
    return top, overrides


def load_toml(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads one TOML configuration file (see ``configs/``) as ``(top, overrides)``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    return flatten_toml(doc, f"config file {str(p)!r}")


def load_configs(paths: Sequence[str | Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads TOML configuration files and layers them, later files over earlier ones.

    Tables merge key by key: a later ``[train] lr`` replaces only ``train.lr``, and a method's
    table adds to the same table of an earlier file. A later top-level entry (``benchmark``,
    ``method``/``methods``, ``seed``/``seeds``, ``setting``) replaces the earlier one; ``method``
    and ``methods`` (``seed`` and ``seeds``) replace each other.

    Args:
        paths: Configuration files, the one with the lowest precedence first.

    Returns:
        ``(top, overrides)`` as :func:`load_toml` returns them for a single file: the run-level
        entries, and the dotted overrides (``{"train.lr": 0.01, "ewc.lam": 100.0}``).

    Raises:
        FileNotFoundError: A file does not exist.
        ValueError: A file is not valid TOML, or has an unknown top-level key or table, or a
            top-level value of the wrong type. Every message names the file.
    """
    top: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for path in paths:
        file_top, file_overrides = load_toml(path)
        for key, value in file_top.items():
            alternative = _ALTERNATIVE.get(key)
            if alternative is not None and alternative not in file_top:
                top.pop(alternative, None)
            top[key] = value
        overrides.update(file_overrides)
    return top, overrides


def make_config(benchmark: str, method: str, seed: int = 0, setting: str | None = None,
                overrides: dict[str, Any] | None = None) -> RunConfig:
    """Resolves a run's configuration: defaults, benchmark protocol, then ``overrides``.

    The method expression is normalised (``"dhp + ewc"`` -> ``"dhp+ewc"``) and checked
    (:func:`check_composition`); every value is checked where it is set (:func:`check_value`).
    """
    spec = get_benchmark(benchmark)
    method = normalize_method(method)
    parts = parse_method(method)
    check_composition(method)
    cfg = RunConfig(benchmark=benchmark, method=method, seed=seed, setting=setting)
    for part in parts:
        cfg.hparams[part.name] = part.default_hparams()
    apply_overrides(cfg, dict(spec.defaults), strict_methods=False)
    apply_overrides(cfg, overrides or {}, strict_methods=False)
    if setting is not None:
        cfg.setting = setting
    cfg.data.validate()
    cfg.train.validate()
    for hp in cfg.hparams.values():
        if hp is not None and callable(getattr(hp, "validate", None)):
            hp.validate()
    return cfg


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), separators=(",", ":"))
    return str(value)


def command_line(cfg: RunConfig) -> str:
    """The ``lifelong run`` command that reproduces ``cfg``: benchmark, method, seed, setting and
    every option that differs from the benchmark's protocol and the defaults (recorded in each
    run's ``result.json`` as ``command``; options of :data:`RESUME_IGNORED` are left out).

    Example:
        ``lifelong run -b split-digits -m ewc --seeds 0 train.epochs=2 ewc.lam=1000.0``
    """
    base = comparable_config(make_config(cfg.benchmark, cfg.method, cfg.seed).to_dict())
    mine = comparable_config(cfg.to_dict())
    words = ["lifelong", "run", "-b", cfg.benchmark, "-m", cfg.method, "--seeds", str(cfg.seed)]
    if cfg.setting is not None:
        words += ["-s", cfg.setting]
    for section, values in mine.items():
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if (base.get(section) or {}).get(name) != value:
                words.append(f"{section}.{name}={_cli_value(value)}")
    return shlex.join(words)
