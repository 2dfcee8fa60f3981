"""Configuration (lifelong.config): coercion of dotted overrides, errors, method hyperparameters,
TOML files layered later-over-earlier, the shipped ``configs/`` and the resolution order
defaults -> benchmark protocol -> files -> overrides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lifelong.config import coerce, load_configs, load_toml, make_config
from lifelong.methods import registry
from lifelong.methods.base import Recipe
from lifelong.methods.registry import list_methods, register_method

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PROTOCOL_FILES = sorted(CONFIGS.glob("*.toml"))
LAYER_FILES = sorted(CONFIGS.glob("*/*.toml"))


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
    assert msg.startswith("unknown section 'ewcc' in 'ewcc.lam' (did you mean 'ewc'?); valid: "
                          "data, model, train or a method's name (")
    for name in list_methods():
        assert name in msg


def test_override_for_a_method_not_in_the_run_is_still_checked(toy_method: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown option 'toy\.lamda'; valid keys: toy\.lam"):
        make_config("synthetic", "finetune", overrides={"toy.lamda": "5"})
    with pytest.raises(ValueError, match=r"^toy\.lam must be >= 0 \(the penalty's strength\), "
                                         r"got -5$"):
        make_config("synthetic", "finetune", overrides={"toy.lam": "-5"})


def test_values_are_checked_as_written() -> None:
    with pytest.raises(ValueError, match=r"^ewc\.lam must be >= 0 \(the penalty's strength\), "
                                         r"got -5\.0$"):
        make_config("synthetic", "ewc", overrides={"ewc.lam": -5.0})  # a TOML value
    with pytest.raises(ValueError, match=r"^train\.lr: expected a finite number, got nan$"):
        make_config("synthetic", "finetune", overrides={"train.lr": float("nan")})


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


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_toml_errors_name_the_file_in_one_line(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.toml", "[train]\nlr = 1\n")
    cases = [
        (tmp_path / "missing.toml", FileNotFoundError, "does not exist"),
        (_write(tmp_path / "bad.toml", "[train\nlr = 1\n"), ValueError, "is not valid TOML: "),
        (_write(tmp_path / "odd.toml", "epochs = 3\n"), ValueError,
         ": unknown top-level key 'epochs'; valid: benchmark, method(s), setting, seed(s)"),
        (_write(tmp_path / "typo.toml", "[trian]\nlr = 1\n"), ValueError,
         ": unknown table [trian]; valid: [data], [model], [train] or a method's name (bic, "),
        (_write(tmp_path / "seeds.toml", "seeds = 3\n"), ValueError,
         ": seeds must be a list, got 3"),
    ]
    for path, error, message in cases:
        for load in (load_toml, lambda p: load_configs([good, p])):
            with pytest.raises(error) as err:
                load(path)
            text = str(err.value)
            assert text.startswith(f"config file {str(path)!r}"), text
            assert message in text and "\n" not in text, text


# -------------------------------------------------------------------- layered files


def test_later_file_wins_and_tables_merge_key_by_key(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.toml",
                  'benchmark = "synthetic"\nmethods = ["finetune", "ewc"]\nseeds = [0, 1]\n'
                  'setting = "task"\n[train]\nlr = 0.1\nepochs = 3\n[ewc]\nlam = 5.0\n')
    layer = _write(tmp_path / "layer.toml",
                   'method = "ewc"\nseed = 4\n[train]\nlr = 0.2\n[ewc]\nvariant = "predicted"\n')
    top, overrides = load_configs([base, layer])
    # method replaces methods and seed replaces seeds; the rest of the base stays
    assert top == {"benchmark": "synthetic", "setting": "task", "method": "ewc", "seed": 4}
    assert overrides == {"train.lr": 0.2, "train.epochs": 3, "ewc.lam": 5.0,
                         "ewc.variant": "predicted"}
    cfg = make_config(top["benchmark"], top["method"], top["seed"], top["setting"], overrides)
    assert (cfg.train.lr, cfg.train.epochs, cfg.seed) == (0.2, 3, 4)
    assert (cfg.hparams["ewc"].lam, cfg.hparams["ewc"].variant) == (5.0, "predicted")
    # the other order: the base wins every key both files set
    top, overrides = load_configs([layer, base])
    assert top == {"benchmark": "synthetic", "setting": "task", "methods": ["finetune", "ewc"],
                   "seeds": [0, 1]}
    assert overrides["train.lr"] == 0.1 and overrides["ewc.variant"] == "predicted"
    assert load_configs([]) == ({}, {})


def test_dhp_protocol_and_the_ewc_file_resolve_to_the_published_numbers() -> None:
    top, overrides = load_configs([CONFIGS / "split-mnist-dhp.toml",
                                   CONFIGS / "split-mnist-dhp" / "ewc.toml"])
    assert (top["benchmark"], top["method"], top["setting"]) == ("split-mnist", "ewc", "task")
    for method in ("ewc", "dhp+ewc"):  # the composition reuses the same [ewc] table
        cfg = make_config(top["benchmark"], method, 0, top["setting"], overrides)
        assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (
            "sgd", 0.01, 64, 10)
        assert (cfg.model.hidden, cfg.model.head, cfg.data.normalize) == ((256, 256), "multi",
                                                                          False)
        assert cfg.hparams["ewc"].lam == 100.0 and cfg.hparams["ewc"].variant == "true"


@pytest.mark.parametrize("protocol, method, field, value", [
    ("split-mnist-dhp", "ewc", "lam", 100.0), ("split-mnist-dhp", "online-ewc", "lam", 300.0),
    ("split-mnist-dhp", "si", "c", 100.0), ("split-mnist-dhp", "mas", "lam", 0.5),
    ("split-mnist-dhp", "mas-local", "lam", 1.0),
    ("split-mnist-three-scenarios", "ewc", "lam", 1e7),
    ("split-mnist-three-scenarios", "online-ewc", "lam", 1e5),
    ("split-mnist-three-scenarios", "si", "c", 100.0),
    ("split-mnist-three-scenarios", "mas", "lam", 1.0),
    ("split-mnist-three-scenarios", "mas-local", "lam", 1.0),
    ("permuted-mnist", "ewc", "lam", 100.0), ("permuted-mnist", "online-ewc", "lam", 100.0),
    ("permuted-mnist", "si", "c", 10.0), ("permuted-mnist", "mas", "lam", 1.0),
    ("permuted-mnist", "mas-local", "lam", 1.0),
])
def test_each_protocol_has_its_own_strength(protocol: str, method: str, field: str,
                                            value: float) -> None:
    """X's file of a protocol sets X's strength there, for X and for DHP+X alike."""
    proto, own = CONFIGS / f"{protocol}.toml", CONFIGS / protocol / f"{method}.toml"
    dhp = [CONFIGS / protocol / "dhp.toml"] if (CONFIGS / protocol / "dhp.toml").is_file() else []
    for files, expr in (([proto, own], method), ([proto, own], f"dhp+{method}"),
                        ([proto, *dhp, own], f"dhp+{method}"), ([proto, own, *dhp], f"dhp+{method}")):
        top, overrides = load_configs(files)
        cfg = make_config(top["benchmark"], expr, 0, top["setting"], overrides)
        assert getattr(cfg.hparams[method], field) == value, files


@pytest.mark.parametrize("protocol, benchmark, setting, train, hidden", [
    ("split-mnist-dhp", "split-mnist", "task",
     {"optimizer": "sgd", "lr": 0.01, "batch_size": 64, "epochs": 10, "iterations": 0}, (256, 256)),
    ("split-mnist-three-scenarios", "split-mnist", "task",
     {"optimizer": "adam", "lr": 0.001, "batch_size": 128, "iterations": 2000}, (400, 400)),
    ("permuted-mnist", "permuted-mnist", "domain",
     {"optimizer": "adam", "lr": 0.0001, "batch_size": 128, "iterations": 5000}, (1000, 1000)),
])
def test_protocol_files_hold_the_published_protocols(protocol: str, benchmark: str, setting: str,
                                                     train: dict[str, object],
                                                     hidden: tuple[int, ...]) -> None:
    top, overrides = load_configs([CONFIGS / f"{protocol}.toml"])
    assert (top["benchmark"], top["setting"], top["method"]) == (benchmark, setting, "finetune")
    cfg = make_config(benchmark, "finetune", 0, setting, overrides)
    assert {k: getattr(cfg.train, k) for k in train} == train
    assert cfg.model.hidden == hidden and cfg.data.normalize is False


def test_the_normalized_variant_changes_only_the_inputs() -> None:
    base = CONFIGS / "split-mnist-dhp.toml"
    plain = load_configs([base])[1]
    top, overrides = load_configs([base, CONFIGS / "split-mnist-dhp" / "normalized.toml"])
    assert overrides == {**plain, "data.normalize": True}
    assert make_config(top["benchmark"], "finetune", 0, "task", overrides).data.normalize is True


@pytest.mark.parametrize("path", PROTOCOL_FILES + LAYER_FILES,
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_file_loads_and_resolves(path: Path) -> None:
    """A protocol file ``configs/<protocol>.toml`` alone, a layer ``configs/<protocol>/<name>.toml``
    on its protocol; every value the file sets reaches the resolved configuration."""
    own_top, own = load_toml(path)
    if path.parent == CONFIGS:
        files = [path]
        assert {"benchmark", "setting", "seeds"} <= set(own_top)
        assert "method" in own_top or "methods" in own_top
    else:
        files = [CONFIGS / f"{path.parent.name}.toml", path]
        assert set(own_top) <= {"method"}  # layers hold a method and tables, nothing run-level
        assert own_top.get("method", path.stem) == path.stem
    top, overrides = load_configs(files)
    method = top["method"] if "method" in top else top["methods"][-1]
    cfg = make_config(top["benchmark"], method, top["seeds"][0], top["setting"], overrides)
    resolved = cfg.to_dict()
    for key, value in own.items():
        section, name = key.split(".", 1)
        if section in resolved:  # the table of a method outside the run is ignored
            assert resolved[section][name] == value, key


def test_every_layer_directory_has_its_protocol_file() -> None:
    for folder in (p for p in CONFIGS.iterdir() if p.is_dir()):
        assert (CONFIGS / f"{folder.name}.toml").is_file(), folder
