"""Discovery: fills a `Registry` from its package, plugin folders and entry points.

One function, `discover`, serves every registry that names its sources (methods,
datasets). Three places hold entries, and none needs an edit anywhere else:

1. every module of the registry's built-in ``package`` (``cmrbench/methods/*.py``,
   ``cmrbench/datasets/*.py``) except its ``helper_modules``;
2. plugin folders: every ``*.py`` file (not starting with ``_``) in a folder passed as
   ``plugin_dirs`` (``cmrbench ... --plugins DIR``) or listed in the environment variable
   ``CMRBENCH_PLUGINS`` (folders separated by ``os.pathsep``); each file is imported by
   path under its own module name, so two plugin folders may both hold a ``method.py``,
   and one file may register a method, a dataset and an optimizer alike;
3. installed packages that declare an entry point in the registry's group
   (``[project.entry-points."cmrbench.methods"]`` or ``"cmrbench.datasets"``); an entry
   point names a module (importing it registers its entries) or a class to register.

Two entries with one name raise `DuplicateNameError` naming both files. A plugin that
fails to import is recorded (`plugin_errors`) and reported with a `PluginWarning`; every
other entry still works. Discovery is idempotent: each module, file and entry point is
imported once per process, so calling it before every look-up is cheap.
"""

from __future__ import annotations

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
from typing import Any, Callable, Iterable

from cmrbench.errors import CmrbenchError
from cmrbench.registry import DuplicateNameError, Registry

PLUGINS_ENV = "CMRBENCH_PLUGINS"
_PLUGIN_PACKAGE = "cmrbench_plugins"


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the other entries are unaffected."""


class PluginDirError(CmrbenchError, ValueError):
    """A plugin folder that does not exist or is not a folder."""


@dataclass(frozen=True)
class PluginError:
    """A module, plugin file or entry point that failed to import, and why."""

    file: str
    exception: str


@dataclass
class _DiscoveryState:
    """What discovery has done in this process (so that repeating it costs nothing)."""

    packages_done: set[str] = field(default_factory=set)
    groups_done: set[str] = field(default_factory=set)
    loaded: dict[Path, str] = field(default_factory=dict)   # plugin file -> module name
    errors: list[PluginError] = field(default_factory=list)


_state = _DiscoveryState()


def discover(registry: Registry[Any], plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Register ``registry``'s built-in entries, those of ``plugin_dirs`` and
    ``CMRBENCH_PLUGINS``, and those of its installed entry points (each once per process)."""
    if registry.package and registry.package not in _state.packages_done:
        _state.packages_done.add(registry.package)
        package = importlib.import_module(registry.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in registry.helper_modules:
                continue
            _guarded_import(str(Path(package.__path__[0]) / f"{info.name}.py"),
                            partial(importlib.import_module, f"{registry.package}.{info.name}"))
    for folder in [*plugin_dirs, *plugin_dirs_from_env()]:
        for file in _plugin_files(folder):
            _load_plugin_file(file)
    group = registry.entry_point_group
    if group and group not in _state.groups_done:
        _state.groups_done.add(group)
        for ep in entry_points(group=group):
            _guarded_import(f"entry point {ep.name} = {ep.value}",
                            partial(_load_entry_point, ep, registry))


def plugin_dirs_from_env() -> list[str]:
    """The folders listed in ``CMRBENCH_PLUGINS``."""
    return [d for d in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if d]


def plugin_errors() -> list[PluginError]:
    """The modules, plugin files and entry points that failed to import so far."""
    return list(_state.errors)


def unload_plugins(plugin_dir: str | os.PathLike[str]) -> list[str]:
    """Forget the entries (of every registry), modules and errors of one plugin folder;
    return the names removed.

    The next `discover` with that folder imports its files afresh (tests use this to stay
    independent of each other).
    """
    folder = Path(plugin_dir).resolve()
    files = {f for f in _state.loaded if f.parent == folder}
    removed = []
    for registry in Registry.instances:
        for name in registry.names():
            if Path(registry.source(name)).resolve() in files:
                registry.remove(name)
                removed.append(name)
    for file in files:
        sys.modules.pop(_state.loaded.pop(file), None)
    _state.errors = [e for e in _state.errors if Path(e.file).parent != folder]
    return sorted(removed)


def _plugin_files(folder: str | os.PathLike[str]) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise PluginDirError(f"plugin folder {str(folder)!r} does not exist or is not a folder "
                             f"(from --plugins or ${PLUGINS_ENV}); expected a folder of .py files")
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


def _load_entry_point(ep: EntryPoint, registry: Registry[Any]) -> None:
    """Load an entry point: a module (its import registers its entries) or a class."""
    target = ep.load()
    if isinstance(target, type):
        registry.register(target)


def _guarded_import(source: str, load: Callable[[], object]) -> None:
    """Run ``load``; record and warn about any failure except a duplicate name."""
    try:
        load()
    except DuplicateNameError:
        raise
    except Exception as exc:  # a broken plugin must not take the other entries down
        text = f"{type(exc).__name__}: {exc}"
        _state.errors.append(PluginError(source, text))
        warnings.warn(f"could not load plugin {source}: {text}", PluginWarning, stacklevel=3)
