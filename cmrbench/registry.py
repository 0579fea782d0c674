"""A name → factory registry: a dict and a decorator (timm's `register_model` idea).

One `Registry` serves nets, methods and datasets, so every unknown name fails the same
way: with the list of valid names.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Generic, TypeVar

from cmrbench.errors import CmrbenchError

T = TypeVar("T")


class UnknownNameError(CmrbenchError, KeyError):
    """A name that is not registered; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class DuplicateNameError(CmrbenchError, ValueError):
    """Two entries claim one name; the message names both sources."""


class Registry(Generic[T]):
    """Maps names to entries of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str, source: str = "") -> Callable[[T], T]:
        """Decorator that registers ``entry`` under ``name``; ``source`` names its file."""

        def add(entry: T) -> T:
            self.add(name, entry, source or _source_of(entry))
            return entry

        return add

    def add(self, name: str, entry: T, source: str) -> None:
        """Register ``entry``; a second entry under one name raises `DuplicateNameError`."""
        if name in self._entries and self._entries[name] is not entry:
            raise DuplicateNameError(
                f"two {self.kind}s are named {name!r}: {self._sources[name]} and {source}")
        self._entries[name] = entry
        self._sources[name] = source

    def remove(self, name: str) -> None:
        """Forget ``name`` (used when a plugin folder is unloaded in tests)."""
        self._entries.pop(name, None)
        self._sources.pop(name, None)

    def get(self, name: str) -> T:
        """The entry for ``name``, or `UnknownNameError` listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None

    def source(self, name: str) -> str:
        """The file that registered ``name``."""
        self.get(name)
        return self._sources[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern`` (``"vit_*"``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _source_of(entry: object) -> str:
    import inspect

    try:
        return inspect.getsourcefile(entry) or ""  # type: ignore[arg-type]
    except TypeError:
        return ""
