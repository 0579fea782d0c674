"""SSP methods: one file per method, registered with ``@METHODS.register``.

Methods come from this package and from installed entry points in the group
``cmrbench.methods`` (`cmrbench.plugins.discover` imports both on the first look-up), and
from plugin folders once `cmrbench.plugins.load_plugins` has loaded them. A method class
registers under its ``name`` attribute; two methods with one name raise
`DuplicateNameError` naming both files.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

from cmrbench.plugins import discover
from cmrbench.registry import Registry

if TYPE_CHECKING:
    from cmrbench.methods.base import SSPMethod

METHODS: Registry[type[SSPMethod]] = Registry(
    "method",
    package=__name__,
    entry_point_group="cmrbench.methods",
    helper_modules=("base", "parts"),
)


def get_method(name: str) -> type[SSPMethod]:
    """The method class registered as ``name`` (discovering the built-in methods first)."""
    discover(METHODS)
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching ``pattern``."""
    discover(METHODS)
    return METHODS.names(pattern)


def method_info(name: str) -> dict[str, Any]:
    """What ``cmrbench list methods`` shows: name, description, source file, version,
    transferred parts per encoder family, paper, the paper's training settings (each family's
    optimizer with the settings it reads) and the resolved configuration (every
    hyper-parameter at its default)."""
    cls = get_method(name)
    families = sorted({*cls.transfers, *cls.optim_by_family})
    return {
        "name": cls.name,
        "description": method_description(cls),
        "doc": inspect.cleandoc(cls.__dict__.get("__doc__") or ""),
        "source": METHODS.source(name),
        "version": cls.version,
        "transfers": {family: list(parts) for family, parts in cls.transfers.items()},
        "paper": cls.paper,
        "needs_pretraining": cls.needs_pretraining,
        "pretrain_as": cls.pretrain_as,
        "batch_size": cls.batch_size,
        "epochs": cls.epochs,
        "optim": {family: cls.optim_for(family).settings() for family in families},
        "hparams": cls.resolved_hparams(),
    }


def method_description(cls: type[SSPMethod]) -> str:
    """The first paragraph of the method class's own docstring, on one line; else the first
    line of its module's docstring; else a request for a docstring."""
    own = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    if own:
        return " ".join(own.split("\n\n")[0].split())
    module = inspect.cleandoc(getattr(sys.modules.get(cls.__module__), "__doc__", None) or "")
    if module:
        return module.splitlines()[0]
    return f"(no description: give class {cls.__name__} a docstring)"
