"""A tiny name -> object registry used for backbones, augmentations, corpora, losses, samplers.

Registering a variant is a decorator line; an unknown name raises an error that lists the
registered ones (as timm does), so a typo in a sweep file is self-explaining.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pydantic import AfterValidator

from mmsearch.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """``registry.register("x", obj)`` or ``@registry.register("x")``."""
        if item is not None:
            self._add(name, item)
            return item

        def decorator(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorator

    def _add(self, name: str, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items))}"
            ) from None

    @property
    def validator(self) -> AfterValidator:
        """For a settings field naming an entry: ``Annotated[str, BACKBONES.validator]``."""

        def check(name: str) -> str:
            if name not in self._items:
                raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self._items)}")
            return name

        return AfterValidator(check)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
