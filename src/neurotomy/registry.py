"""One registry pattern for every named thing: criteria, explanation methods, metrics,
architectures, recipe operations, layer rules.

A :class:`Registry` maps names to the objects that define them. The object registers itself where
it is defined, with a decorator (as timm's ``@register_model`` does), so adding a criterion or a
CAM method is one file plus one import line. ``get`` raises the one "unknown …; use one of …"
error, ``names`` gives the CLI its ``choices``, and tags (``axis="class"``, ``family="cam"``, a
paper) let callers list a subset without keeping a second hand-written list.

Example:
    >>> colours = Registry("colour")
    >>> @colours.register("red", warm=True)
    ... class Red:
    ...     pass
    >>> @colours.register("blue", warm=False)
    ... class Blue:
    ...     pass
    >>> colours.get("red") is Red, colours.names(), colours.names(warm=True)
    (True, ['red', 'blue'], ['red'])
    >>> colours.get("green")
    Traceback (most recent call last):
    ...
    neurotomy.errors.NeurotomyError: unknown colour 'green'; use one of red, blue
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from neurotomy.errors import NeurotomyError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → objects of one ``kind``, each with optional tags."""

    def __init__(self, kind: str, error: type[NeurotomyError] = NeurotomyError, hint: str = "") -> None:
        self.kind, self.error, self.hint = kind, error, hint
        self._entries: dict[str, T] = {}
        self._tags: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **tags: Any) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (default: its ``name`` attribute,
        else its ``__name__``) with ``tags``; returns the object unchanged."""
        def decorate(obj: T) -> T:
            self.add(name or getattr(obj, "name", None) or obj.__name__, obj, **tags)
            return obj
        return decorate

    def add(self, name: str, obj: T, **tags: Any) -> T:
        """Register ``obj`` under ``name`` without a decorator (for objects made by a factory)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")  # a programming error, not a user's
        self._entries[name] = obj
        self._tags[name] = tags
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises the registry's one error."""
        if name not in self._entries:
            hint = f" {self.hint}" if self.hint else ""
            raise self.error(f"unknown {self.kind} {name!r}; use one of {', '.join(self._entries)}{hint}")
        return self._entries[name]

    def names(self, **tags: Any) -> list[str]:
        """Registered names in registration order, only those whose tags equal ``tags``."""
        return [n for n in self._entries if all(self._tags[n].get(k) == v for k, v in tags.items())]

    def tags(self, name: str) -> dict[str, Any]:
        """The tags ``name`` was registered with."""
        self.get(name)
        return dict(self._tags[name])

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
