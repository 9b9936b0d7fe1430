"""Deferred imports, so that commands which train nothing never load torch.

``mmsearch sweep list`` validates every sweep against the config schema, and the schema checks
registered names (backbones, augmentation sets, losses, ...). Those registries live beside
their implementations; importing torch just to learn a name would cost seconds per command.
Registries therefore reach torch through :func:`lazy_module`, and heavy packages export their
public names through :func:`lazy_exports`, as Optuna does for its optional modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


class _LazyModule:
    """A stand-in for a module that imports it on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """``torch = lazy_module("torch")``: ``torch.cat`` imports torch the first time it is used."""
    return _LazyModule(name)


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """PEP 562 ``__getattr__``/``__dir__`` for a package whose public names live in submodules
    (``{"fit": "._engine"}``): the submodule is imported when the name is first used."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module: ModuleType = importlib.import_module(exports[name], package)
        return getattr(module, name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
