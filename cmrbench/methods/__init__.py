"""SSP methods: one file per method, found by discovery (see `discover_methods`).

Three places hold methods, and none needs an edit anywhere else:

1. every module in this package (``cmrbench/methods/*.py``);
2. plugin folders: every ``*.py`` file (not starting with ``_``) in a folder passed as
   ``plugin_dirs`` (``cmrbench ... --plugins DIR``) or listed in the environment variable
   ``CMRBENCH_PLUGINS`` (folders separated by ``os.pathsep``); each file is imported by
   path under its own module name, so two plugin folders may both hold a ``method.py``;
3. installed packages that declare an entry point in the group ``cmrbench.methods``
   (``[project.entry-points."cmrbench.methods"] mymethod = "mypkg.mymethod"``); an entry
   point names a module (importing it registers its methods) or an `SSPMethod` class.

A method registers itself with ``@register_method``. Two methods with one name raise
`DuplicateNameError` naming both files. A plugin that fails to import is recorded
(`plugin_errors`) and reported with a `PluginWarning`; every other method still works.
Discovery is idempotent: each file and entry point is imported once per process, so
calling it before every look-up is cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from cmrbench.errors import CmrbenchError
from cmrbench.registry import DuplicateNameError, Registry

if TYPE_CHECKING:
    from cmrbench.methods.base import SSPMethod

METHODS: Registry[type["SSPMethod"]] = Registry("method")
ENTRY_POINT_GROUP = "cmrbench.methods"
PLUGINS_ENV = "CMRBENCH_PLUGINS"
_NOT_METHOD_MODULES = {"base", "parts"}
_PLUGIN_PACKAGE = "cmrbench_plugins"


class PluginWarning(UserWarning):
    """A method plugin could not be loaded; the other methods are unaffected."""


class PluginDirError(CmrbenchError, ValueError):
    """A plugin folder that does not exist or is not a folder."""


@dataclass(frozen=True)
class PluginError:
    """A method file or entry point that failed to import, and why."""

    file: str
    exception: str


@dataclass
class _DiscoveryState:
    """What discovery has done in this process (so that repeating it costs nothing)."""

    builtins_done: bool = False
    entry_points_done: bool = False
    loaded: dict[Path, str] = field(default_factory=dict)   # plugin file -> module name
    errors: list[PluginError] = field(default_factory=list)


_state = _DiscoveryState()


def register_method(cls: type["SSPMethod"]) -> type["SSPMethod"]:
    """Class decorator: register an `SSPMethod` subclass under its ``name``."""
    source = getattr(sys.modules.get(cls.__module__), "__file__", "") or cls.__module__
    METHODS.add(cls.name, cls, source)
    return cls


def discover_methods(plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Register the built-in methods, those of ``plugin_dirs`` and ``CMRBENCH_PLUGINS``,
    and those of installed entry points (each source once per process)."""
    if not _state.builtins_done:
        _state.builtins_done = True
        for info in pkgutil.iter_modules(__path__):
            if info.name not in _NOT_METHOD_MODULES:
                _guarded_import(str(Path(__path__[0]) / f"{info.name}.py"),
                                partial(importlib.import_module, f"{__name__}.{info.name}"))
    for folder in [*plugin_dirs, *_env_plugin_dirs()]:
        for file in _plugin_files(folder):
            _load_plugin_file(file)
    if not _state.entry_points_done:
        _state.entry_points_done = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _guarded_import(f"entry point {ep.name} = {ep.value}", partial(_load_entry_point, ep))


def plugin_errors() -> list[PluginError]:
    """The method files and entry points that failed to import so far."""
    return list(_state.errors)


def unload_plugins(plugin_dir: str | os.PathLike[str]) -> list[str]:
    """Forget the methods (and optimizers), modules and errors of one plugin folder; return
    the method names removed.

    The next `discover_methods` with that folder imports its files afresh (tests use this
    to stay independent of each other).
    """
    folder = Path(plugin_dir).resolve()
    files = {f for f in _state.loaded if f.parent == folder}
    removed = [name for name in METHODS.names() if Path(METHODS.source(name)).resolve() in files]
    for name in removed:
        METHODS.remove(name)
    from cmrbench.optim import OPTIMIZERS   # a plugin may register an optimizer (BYOL's LARS)

    for name in OPTIMIZERS.names():
        if Path(OPTIMIZERS.source(name)).resolve() in files:
            OPTIMIZERS.remove(name)
    for file in files:
        sys.modules.pop(_state.loaded.pop(file), None)
    _state.errors = [e for e in _state.errors if Path(e.file).parent != folder]
    return removed


def get_method(name: str, plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> type["SSPMethod"]:
    """The method class registered as ``name`` (discovering methods first)."""
    discover_methods(plugin_dirs)
    return METHODS.get(name)


def list_methods(pattern: str = "*", plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Registered method names matching ``pattern``."""
    discover_methods(plugin_dirs)
    return METHODS.names(pattern)


def method_info(name: str, plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """What ``cmrbench list methods`` shows: name, source file, version, transferred parts
    per encoder family, paper, the paper's training settings and the resolved configuration
    (every hyper-parameter at its default)."""
    cls = get_method(name, plugin_dirs)
    families = sorted({*cls.transfers, *cls.optim_by_family})
    return {"name": cls.name, "source": METHODS.source(name), "version": cls.version,
            "transfers": {family: list(parts) for family, parts in cls.transfers.items()},
            "paper": cls.paper, "needs_pretraining": cls.needs_pretraining,
            "pretrain_as": cls.pretrain_as, "batch_size": cls.batch_size, "epochs": cls.epochs,
            "optim": {family: dataclasses.asdict(cls.optim_for(family)) for family in families},
            "hparams": cls.resolved_hparams()}


def _env_plugin_dirs() -> list[str]:
    return [d for d in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if d]


def _plugin_files(folder: str | os.PathLike[str]) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise PluginDirError(f"method plugin folder {str(folder)!r} does not exist or is not a "
                             f"folder (from --plugins or ${PLUGINS_ENV}); expected a folder of "
                             f".py files")
    return sorted(f.resolve() for f in path.glob("*.py") if not f.name.startswith("_"))


def _load_plugin_file(file: Path) -> None:
    """Import one plugin file under a module name unique to its path (once per process)."""
    if file in _state.loaded:
        return
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:12]
    module_name = f"{_PLUGIN_PACKAGE}.{file.stem}_{digest}"
    _state.loaded[file] = module_name

    def load() -> None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {file} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module   # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise

    try:
        _guarded_import(str(file), load)
    except DuplicateNameError:
        del _state.loaded[file]   # keep failing until the clash is resolved
        raise


def _load_entry_point(ep: EntryPoint) -> None:
    """Load an entry point: a module (its import registers its methods) or a method class."""
    from cmrbench.methods.base import SSPMethod

    target = ep.load()
    if isinstance(target, type) and issubclass(target, SSPMethod):
        register_method(target)


def _guarded_import(source: str, load: Callable[[], object]) -> None:
    """Run ``load``; record and warn about any failure except a duplicate method name."""
    try:
        load()
    except DuplicateNameError:
        raise
    except Exception as exc:  # a broken plugin must not take the other methods down
        text = f"{type(exc).__name__}: {exc}"
        _state.errors.append(PluginError(source, text))
        warnings.warn(f"could not load method plugin {source}: {text}", PluginWarning, stacklevel=3)
