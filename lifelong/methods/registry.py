"""The method registry: ``register_method``, ``list_methods``, ``get_method``, ``build_recipe``.

A method is registered with a builder ``build(hparams) -> Recipe`` and, where it has any, a
dataclass of hyperparameters whose defaults are shown by ``lifelong list``. Method expressions
join names with ``+`` (``dhp+ewc``) and are composed by :func:`lifelong.methods.base.compose`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lifelong.data.scenarios import SETTINGS
from lifelong.methods.base import Recipe, compose


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: Registry name (lower case, ``-`` separated).
        build: ``build(hparams) -> Recipe`` (``hparams`` is ``None`` when the method has none).
        hparams: Dataclass type of the hyperparameters, or ``None``.
        description: One line for ``lifelong list``, citing the paper.
        settings: Settings the method applies to.
    """

    name: str
    build: Callable[[Any], Recipe]
    hparams: type | None
    description: str
    settings: tuple[str, ...] = SETTINGS

    def default_hparams(self) -> Any:
        return None if self.hparams is None else self.hparams()


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, hparams: type | None = None, description: str = "",
                    settings: tuple[str, ...] = SETTINGS
                    ) -> Callable[[Callable[[Any], Recipe]], Callable[[Any], Recipe]]:
    """Decorator registering ``build(hparams) -> Recipe`` under ``name``."""
    if "+" in name:
        raise ValueError(f"method names cannot contain '+': {name!r}")
    if hparams is not None and not dataclasses.is_dataclass(hparams):
        raise TypeError(f"hparams of {name!r} must be a dataclass type")

    def deco(build: Callable[[Any], Recipe]) -> Callable[[Any], Recipe]:
        _METHODS[name] = MethodSpec(name, build, hparams, description, settings)
        return build

    return deco


def _ensure_loaded() -> None:
    # Importing the recipe modules registers their methods (explicitly, on first use).
    import lifelong.methods.recipes  # noqa: F401


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    _ensure_loaded()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The spec of a registered method; an error listing the valid names otherwise."""
    _ensure_loaded()
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; valid methods: {', '.join(sorted(_METHODS))} "
            "(combine them with '+', e.g. dhp+ewc)"
        ) from None


def parse_method(expr: str) -> list[MethodSpec]:
    """Splits ``a+b`` into registered method specs (errors name the unknown part)."""
    parts = [p.strip() for p in expr.split("+")]
    if not expr or any(not p for p in parts):
        raise ValueError(f"malformed method expression {expr!r}; write e.g. 'ewc' or 'dhp+ewc'")
    if len(set(parts)) != len(parts):
        raise ValueError(f"method expression {expr!r} names a method twice")
    return [get_method(p) for p in parts]


def build_recipe(expr: str, hparams: dict[str, Any] | None = None, setting: str | None = None
                 ) -> Recipe:
    """Builds (and composes) the recipe of a method expression.

    Args:
        expr: ``"ewc"``, ``"dhp+online-ewc"``, ...
        hparams: ``method name -> hyperparameter dataclass`` (defaults where missing).
        setting: If given, every part must support it.
    """
    hparams = hparams or {}
    specs = parse_method(expr)
    recipes = []
    for spec in specs:
        if setting is not None and setting not in spec.settings:
            raise ValueError(
                f"method {spec.name!r} does not apply to the {setting}-incremental setting; "
                f"it supports: {', '.join(spec.settings)}"
            )
        hp = hparams.get(spec.name, spec.default_hparams())
        recipe = spec.build(hp)
        recipe.name = spec.name
        recipes.append(recipe)
    out = compose(recipes)
    out.name = "+".join(s.name for s in specs)
    return out
