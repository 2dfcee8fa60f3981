"""Modules that register your benchmarks or methods, loaded by name or path (``--import``).

``lifelong run --import my_data`` (or ``--import path/to/my_data.py``) imports the module before
the configuration is resolved, so the benchmarks and methods it registers
(:func:`lifelong.data.custom.register`, :func:`lifelong.methods.registry.register_method`) can be
named with ``-b`` and ``-m``. Sweeps on Ray import the same modules in every worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_plugins"]


def _import_one(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or "\\" in name:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"--import {name}: no such file")
        module_name = f"lifelong_plugin_{path.stem}"
        if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) \
                == str(path):
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"--import {name}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ValueError(f"--import {name}: no module named {error.name!r} (give an importable "
                         "module name, or the path of a .py file)") from None


def import_plugins(names: list[str] | tuple[str, ...]) -> list[ModuleType]:
    """Imports each module name or ``.py`` path in ``names`` (a file is imported once per
    process), so that what it registers is available.

    Raises:
        ValueError: Naming the module or file that cannot be found.
    """
    return [_import_one(name) for name in names]
