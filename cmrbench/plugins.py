"""Plugins: entries of the registries from outside the package, loaded once per process.

Three places hold entries besides the modules that define the registries, and none needs
an edit anywhere else:

1. every module of a registry's built-in ``package`` (``cmrbench/methods/*.py``,
   ``cmrbench/datasets/*.py``) except its ``helper_modules``, and
2. installed packages that declare an entry point in a registry's group
   (``[project.entry-points."cmrbench.methods"]``, ``"cmrbench.datasets"`` or
   ``"cmrbench.nets"``; an entry point names a module, whose import registers its entries,
   or a class to register): `discover` imports both, once per process, on a registry's
   first look-up (``get_method``, ``create_dataset``, ``create_net``, ...), so that every
   process of one installation sees the same entries without being told;
3. plugin folders: every ``*.py`` file (not starting with ``_``) of a folder passed to
   `load_plugins` (``cmrbench ... --plugins DIR``, ``run_grid(..., plugins=[DIR])``) or
   listed in the environment variable ``CMRBENCH_PLUGINS`` (folders separated by
   ``os.pathsep``). Each file is imported by path under its own module name, so two plugin
   folders may both hold a ``method.py``, and one file may register methods, datasets, nets
   and optimizers alike. Folders are per run, not per installation, so they are loaded
   explicitly: by the CLI and the API before a grid is read, and by every worker process
   and Slurm task before its first job, from the list `loaded_plugin_dirs` gives the
   executor that starts them (`cmrbench.benchmark.executors`, `cmrbench.benchmark.slurm`).

Two entries with one name raise `DuplicateNameError` naming both files. A plugin that
fails to import is recorded (`plugin_errors`) and reported with a `PluginWarning`; every
other entry still works. Loading is idempotent: each module, file and entry point is
imported once per process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pkgutil
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

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
    folders: list[Path] = field(default_factory=list)  # plugin folders, in load order
    loaded: dict[Path, str] = field(default_factory=dict)  # plugin file -> module name
    errors: list[PluginError] = field(default_factory=list)


_state = _DiscoveryState()


def discover(registry: Registry[Any]) -> None:
    """Register ``registry``'s built-in entries and those of its installed entry points
    (each module and entry point once per process). Plugin folders are `load_plugins`'."""
    if registry.package and registry.package not in _state.packages_done:
        _state.packages_done.add(registry.package)
        package = importlib.import_module(registry.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in registry.helper_modules:
                continue
            _guarded_import(
                str(Path(package.__path__[0]) / f"{info.name}.py"),
                partial(importlib.import_module, f"{registry.package}.{info.name}"),
            )
    group = registry.entry_point_group
    if group and group not in _state.groups_done:
        _state.groups_done.add(group)
        for ep in entry_points(group=group):
            _guarded_import(
                f"entry point {ep.name} = {ep.value}", partial(_load_entry_point, ep, registry)
            )


def load_plugins(plugin_dirs: Iterable[str | os.PathLike[str]] = ()) -> tuple[str, ...]:
    """Import every plugin file of ``plugin_dirs`` and of the folders in ``CMRBENCH_PLUGINS``
    (each file once per process); return every folder loaded in this process so far.

    The entry point of each process calls it: the CLI with its ``--plugins`` folders, the
    API with ``plugins=``, and each worker process and Slurm task with the folders its
    executor was started with (`loaded_plugin_dirs`).

    Raises:
        PluginDirError: a folder does not exist.
        DuplicateNameError: two entries claim one name.
    """
    for registry in list(Registry.instances):  # built-ins first: a plugin cannot shadow one
        discover(registry)
    for folder in [*plugin_dirs, *plugin_dirs_from_env()]:
        files = _plugin_files(folder)
        resolved = Path(folder).resolve()
        if resolved not in _state.folders:
            _state.folders.append(resolved)
        for file in files:
            _load_plugin_file(file)
    return loaded_plugin_dirs()


def loaded_plugin_dirs() -> tuple[str, ...]:
    """The plugin folders `load_plugins` has loaded in this process (absolute, in order):
    what an executor hands each worker process and Slurm task."""
    return tuple(str(folder) for folder in _state.folders)


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
    _state.folders = [f for f in _state.folders if f != folder]
    _state.errors = [e for e in _state.errors if Path(e.file).parent != folder]
    return sorted(removed)


def _plugin_files(folder: str | os.PathLike[str]) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise PluginDirError(
            f"plugin folder {str(folder)!r} does not exist or is not a folder "
            f"(from --plugins or ${PLUGINS_ENV}); expected a folder of .py files"
        )
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
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise

    try:
        _guarded_import(str(file), load)
    except DuplicateNameError:
        del _state.loaded[file]  # keep failing until the clash is resolved
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
