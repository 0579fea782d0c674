"""A name → entry registry with one decorator (timm's `register_model` idea).

One `Registry` serves nets, methods and datasets alike, so every entry registers
the same way, with its name written once, and every unknown name fails the same way:
with the list of valid names.

    @METHODS.register                                   # a class: named by its ``name``
    class SimCLR(SSPMethod):
        name = "simclr"

    @NETS.register(net_class=UNet2D, downsampling=64)   # a function: named by itself,
    def unet2d(**kw): ...                               # with facts read without calling it
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar, overload

from cmrbench.errors import CmrbenchError

T = TypeVar("T")


class UnknownNameError(CmrbenchError, KeyError):
    """A name that is not registered; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class DuplicateNameError(CmrbenchError, ValueError):
    """Two entries claim one name; the message names both sources."""


class Registry(Generic[T]):
    """Maps names to entries of one kind.

    Args:
        kind: what an entry is, for messages (``"net"``).
        package: the package whose modules hold the built-in entries (``"cmrbench.methods"``),
            imported by `cmrbench.plugins.discover`; empty if its entries are imported directly.
        entry_point_group: the entry-point group installed packages add entries through.
        required: metadata keys every entry must declare (nets: ``net_class``,
            ``downsampling``; optimizers: ``reads``).
        helper_modules: modules of ``package`` that register nothing, which discovery
            therefore does not import (to keep heavy imports such as torch out of it).
        check: called with an entry's name and metadata when it registers; raises
            `TypeError` naming what is wrong (an optimizer reading a setting that does
            not exist), so that a mistake fails at registration, not at first use.
    """

    instances: ClassVar[list[Registry[Any]]] = []  # every registry, for plugin unloading

    def __init__(
        self,
        kind: str,
        package: str = "",
        entry_point_group: str = "",
        required: tuple[str, ...] = (),
        helper_modules: tuple[str, ...] = (),
        check: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.kind, self.package, self.entry_point_group = kind, package, entry_point_group
        self.required, self.helper_modules, self.check = required, helper_modules, check
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._metadata: dict[str, Mapping[str, Any]] = {}
        Registry.instances.append(self)

    @overload
    def register(self, entry: T, /) -> T: ...

    @overload
    def register(self, entry: None = None, /, **metadata: Any) -> Callable[[T], T]: ...

    def register(self, entry: T | None = None, /, **metadata: Any) -> T | Callable[[T], T]:
        """Decorator: register a class under its ``name`` attribute, or a factory function
        under its own name; ``@register(**metadata)`` also records facts about the entry."""
        if isinstance(entry, str):
            raise TypeError(
                f"{self.kind} names are not passed to register(): a class is "
                f"registered under its 'name' attribute, a function under its own "
                f"name (got {entry!r})"
            )

        def add(decorated: T) -> T:
            self._add(_name_of(decorated), decorated, _source_of(decorated), **metadata)
            return decorated

        return add if entry is None else add(entry)

    def _add(self, name: str, entry: T, source: str, **metadata: Any) -> None:
        """Register ``entry`` (from file ``source``); a second entry under one name raises
        `DuplicateNameError` naming both files."""
        missing = [key for key in self.required if key not in metadata]
        if missing:
            raise TypeError(
                f"{self.kind} {name!r} ({source}) must be registered with "
                f"metadata {', '.join(missing)}"
            )
        if self.check is not None:
            self.check(name, metadata)
        if name in self._entries and self._entries[name] is not entry:
            raise DuplicateNameError(
                f"two {self.kind}s are named {name!r}: {self._sources[name]} and {source}"
            )
        self._entries[name] = entry
        self._sources[name] = source
        self._metadata[name] = MappingProxyType(dict(metadata))

    def remove(self, name: str) -> None:
        """Forget ``name`` (used when a plugin folder is unloaded)."""
        for table in (self._entries, self._sources, self._metadata):
            table.pop(name, None)

    def get(self, name: str) -> T:
        """The entry for ``name``, or `UnknownNameError` listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}"
            ) from None

    def source(self, name: str) -> str:
        """The file that registered ``name``."""
        self.get(name)
        return self._sources[name]

    def metadata(self, name: str) -> Mapping[str, Any]:
        """The facts ``name`` was registered with (read without building the entry)."""
        self.get(name)
        return self._metadata[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern`` (``"vit_*"``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _name_of(entry: object) -> str:
    """A class's ``name`` attribute, else the entry's ``__name__``."""
    name = (
        getattr(entry, "name", None)
        if isinstance(entry, type)
        else getattr(entry, "__name__", None)
    )
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"cannot register {entry!r}: a class needs a non-empty 'name' "
            f"attribute, a function a __name__"
        )
    return name


def _source_of(entry: object) -> str:
    """The file of the module that defines ``entry`` (plugin files are modules too)."""
    module = getattr(entry, "__module__", "")
    return getattr(sys.modules.get(module), "__file__", None) or module
