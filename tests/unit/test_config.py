"""Configuration (lifelong.config): coercion of dotted overrides, errors, method hyperparameters,
TOML files and the resolution order defaults -> benchmark protocol -> overrides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lifelong.config import coerce, load_toml, make_config
from lifelong.methods import registry
from lifelong.methods.base import Recipe
from lifelong.methods.registry import list_methods, register_method


@dataclass
class ToyHP:
    """Hyperparameters of the test-only method ``toy``."""

    lam: float = 1.0
    steps: int = 3
    online: bool = False
    gamma: float | None = None


@pytest.fixture
def toy_method(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Registers a method ``toy`` with hyperparameters for one test (the registry is restored)."""
    list_methods()  # load the real registrations first
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @register_method("toy", hparams=ToyHP, description="test-only method")
    def build(hp: ToyHP) -> Recipe:
        return Recipe(name="toy")

    yield "toy"


# -------------------------------------------------------------------- coercion


@pytest.mark.parametrize("key, text, expected", [
    ("train.reset_optimizer", "false", False),
    ("train.reset_optimizer", "Yes", True),
    ("train.reset_optimizer", "0", False),
    ("train.eval_future", "on", True),
    ("train.epochs", "3", 3),
    ("train.epochs", "2.0", 2),
    ("train.lr", "1e-3", 0.001),
    ("train.lr", "5", 5.0),
    ("model.hidden", "128,64", (128, 64)),
    ("model.hidden", "[128, 64]", (128, 64)),
    ("model.hidden", "(32,)", (32,)),
    ("model.hidden", "400", (400,)),
    ("train.betas", "0.8,0.99", (0.8, 0.99)),
    ("data.n_tasks", "none", None),
    ("data.n_tasks", "None", None),
    ("data.n_tasks", "5", 5),
    ("data.data_dir", "/tmp/x", "/tmp/x"),
    ("data.normalize", "true", True),
])
def test_override_coercion(key: str, text: str, expected: object) -> None:
    cfg = make_config("split-digits", "finetune", overrides={key: text})
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    assert value == expected and type(value) is type(expected)


def test_toml_values_are_coerced_too() -> None:
    cfg = make_config("split-digits", "finetune",
                      overrides={"model.hidden": [64, 32], "train.epochs": 4, "train.lr": 1,
                                 "train.betas": [0.5, 0.6], "data.normalize": True})
    assert cfg.model.hidden == (64, 32)
    assert cfg.train.epochs == 4 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.betas == (0.5, 0.6)
    assert cfg.data.normalize is True


@pytest.mark.parametrize("key, text, message", [
    ("train.reset_optimizer", "maybe", "train.reset_optimizer: expected true or false, got 'maybe'"),
    ("train.epochs", "2.5", "train.epochs: expected an integer, got '2.5'"),
    ("train.epochs", "ten", "train.epochs: expected an integer, got 'ten'"),
    ("train.lr", "fast", "train.lr: expected a number, got 'fast'"),
    ("train.betas", "0.9", r"train.betas: expected 2 values, got \['0.9'\]"),
    ("model.hidden", "[1, 2", r"model.hidden: cannot parse list '\[1, 2'"),
])
def test_bad_values_are_explained(key: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config("split-digits", "finetune", overrides={key: text})


def test_coerce_bool_is_not_an_integer() -> None:
    with pytest.raises(ValueError, match="expected an integer"):
        coerce(True, int, "train.epochs")


def test_unknown_key_lists_the_valid_keys() -> None:
    with pytest.raises(ValueError) as err:
        make_config("split-digits", "finetune", overrides={"train.lrr": "0.1"})
    msg = str(err.value)
    assert "unknown option 'train.lrr'" in msg
    for key in ("train.lr", "train.optimizer", "train.batch_size", "train.epochs",
                "train.iterations", "train.eval_future"):
        assert key in msg
    with pytest.raises(ValueError, match=r"valid keys: model\.arch, model\.hidden"):
        make_config("split-digits", "finetune", overrides={"model.width": "3"})


def test_key_without_section_is_explained() -> None:
    with pytest.raises(ValueError, match=r"override 'lr' needs a section: data\.\*, model\.\*"):
        make_config("split-digits", "finetune", overrides={"lr": "0.1"})


def test_invalid_values_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown train.optimizer 'rmsprop'; valid: sgd, adam"):
        make_config("split-digits", "finetune", overrides={"train.optimizer": "rmsprop"})
    with pytest.raises(ValueError, match="data.train_fraction must be in"):
        make_config("split-digits", "finetune", overrides={"data.train_fraction": "1.5"})


# -------------------------------------------------------------------- resolution order


def test_benchmark_protocol_then_overrides() -> None:
    cfg = make_config("split-mnist", "finetune")
    # the DHP protocol (METHODS.md): 784-256-256 MLP, SGD 0.01, batch 64, 10 epochs, raw pixels
    assert cfg.model.arch == "mlp" and cfg.model.hidden == (256, 256)
    assert cfg.train.optimizer == "sgd" and cfg.train.lr == 0.01
    assert cfg.train.batch_size == 64 and cfg.train.epochs == 10
    assert cfg.data.normalize is False
    over = make_config("split-mnist", "finetune", seed=2, setting="class",
                       overrides={"train.lr": "0.1", "data.normalize": "true"})
    assert over.train.lr == 0.1 and over.data.normalize is True
    assert over.train.epochs == 10  # protocol value kept
    assert over.seed == 2 and over.setting == "class"
    d = over.to_dict()
    assert d["train"]["lr"] == 0.1 and d["model"]["hidden"] == [256, 256]
    assert d["benchmark"] == "split-mnist" and d["seed"] == 2


def test_run_level_overrides() -> None:
    cfg = make_config("synthetic", "finetune", overrides={"seed": "7", "setting": "class"})
    assert cfg.seed == 7 and cfg.setting == "class"


def test_unknown_benchmark_and_method_in_make_config() -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'nope'; valid benchmarks: .*split-digits"):
        make_config("nope", "finetune")
    with pytest.raises(ValueError, match=r"unknown method 'nope'; valid methods: .*finetune"):
        make_config("split-digits", "nope")
    with pytest.raises(ValueError, match="names a method twice"):
        make_config("split-digits", "finetune+finetune")


# -------------------------------------------------------------------- method hyperparameters


def test_method_hyperparameters_are_resolved(toy_method: str) -> None:
    cfg = make_config("synthetic", "toy", overrides={"toy.lam": "1e7", "toy.steps": "5",
                                                     "toy.online": "true", "toy.gamma": "0.5"})
    hp = cfg.hparams["toy"]
    assert isinstance(hp, ToyHP)
    assert (hp.lam, hp.steps, hp.online, hp.gamma) == (1e7, 5, True, 0.5)
    assert cfg.to_dict()["toy"] == {"lam": 1e7, "steps": 5, "online": True, "gamma": 0.5}
    default = make_config("synthetic", "toy").hparams["toy"]
    assert default == ToyHP()
    none = make_config("synthetic", "toy", overrides={"toy.gamma": "none"}).hparams["toy"]
    assert none.gamma is None


def test_override_for_a_method_not_in_the_expression_is_ignored(toy_method: str) -> None:
    cfg = make_config("synthetic", "finetune", overrides={"toy.lam": "5"})
    assert "toy" not in cfg.hparams and cfg.hparams == {"finetune": None}


def test_unknown_method_hyperparameter_errors(toy_method: str) -> None:
    with pytest.raises(ValueError) as err:
        make_config("synthetic", "toy", overrides={"toy.lamda": "5"})
    assert "unknown option 'toy.lamda'" in str(err.value)
    assert "toy.lam, toy.steps, toy.online, toy.gamma" in str(err.value)


def test_override_for_an_unknown_method_errors() -> None:
    with pytest.raises(ValueError) as err:
        make_config("synthetic", "finetune", overrides={"ewcc.lam": "5"})
    msg = str(err.value)
    assert "unknown method 'ewcc'" in msg
    for name in list_methods():
        assert name in msg


def test_override_for_a_method_without_hyperparameters_errors() -> None:
    with pytest.raises(ValueError, match="method 'joint' has no hyperparameters"):
        make_config("synthetic", "finetune", overrides={"joint.lam": "5"})


# -------------------------------------------------------------------- TOML


def test_toml_file_is_loaded(tmp_path: Path, toy_method: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'benchmark = "synthetic"\n'
        'methods = ["finetune", "toy"]\n'
        "seeds = [0, 1, 2]\n"
        'setting = "class"\n'
        "[train]\nepochs = 3\nlr = 0.5\nbetas = [0.8, 0.9]\n"
        "[model]\nhidden = [12, 6]\n"
        "[data]\nn_tasks = 2\n"
        "[toy]\nlam = 100.0\nonline = true\n"
    )
    top, overrides = load_toml(path)
    assert top == {"benchmark": "synthetic", "methods": ["finetune", "toy"], "seeds": [0, 1, 2],
                   "setting": "class"}
    assert overrides == {"train.epochs": 3, "train.lr": 0.5, "train.betas": [0.8, 0.9],
                         "model.hidden": [12, 6], "data.n_tasks": 2, "toy.lam": 100.0,
                         "toy.online": True}
    cfg = make_config("synthetic", "toy", overrides=overrides)
    assert cfg.train.epochs == 3 and cfg.train.betas == (0.8, 0.9)
    assert cfg.model.hidden == (12, 6) and cfg.data.n_tasks == 2
    assert cfg.hparams["toy"].lam == 100.0 and cfg.hparams["toy"].online is True
    # the same file serves finetune, for which the [toy] table is ignored
    assert make_config("synthetic", "finetune", overrides=overrides).hparams == {"finetune": None}


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_toml(bad)
    odd = tmp_path / "odd.toml"
    odd.write_text('epochs = 3\n')
    with pytest.raises(ValueError, match=r"unknown top-level key 'epochs' in config file; valid: "
                                         r"benchmark, method\(s\), setting, seeds"):
        load_toml(odd)
