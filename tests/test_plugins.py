"""Method discovery: built-ins, plugin folders, the environment variable, entry points,
broken and clashing plugins, and the `byol` example plugin."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest
from method_checks import blob_slices, build_method, first_and_last_mean, short_pretraining_losses

import cmrbench.methods as methods
from cmrbench.methods import (PLUGINS_ENV, PluginDirError, PluginWarning, discover_methods,
                              get_method, list_methods, method_info, plugin_errors,
                              unload_plugins)
from cmrbench.registry import DuplicateNameError

REPO = Path(__file__).resolve().parents[1]
BYOL_DIR = REPO / "plugins" / "byol"
SIMCLR_SOURCE = (REPO / "cmrbench" / "methods" / "simclr.py").read_text()
STUDY_METHODS = ["dino", "mim", "mim_enc", "pcl", "scratch", "simclr"]


def _simclr_copy(folder: Path, name: str, file: str | None = None) -> Path:
    """Write a copy of simclr.py registered as ``name`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = SIMCLR_SOURCE.replace('name = "simclr"', f'name = "{name}"')
    assert source != SIMCLR_SOURCE
    path = folder / (file or f"{name}.py")
    path.write_text(source)
    return path


@pytest.fixture
def plugin_dir(tmp_path: Path):
    """A fresh plugin folder, unloaded again after the test."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    yield folder
    unload_plugins(folder)


def test_every_module_of_the_methods_package_registers_its_methods() -> None:
    names = list_methods()
    assert set(STUDY_METHODS) <= set(names)
    package = REPO / "cmrbench" / "methods"
    sources = {Path(methods.METHODS.source(name)).resolve() for name in names}
    modules = {p.resolve() for p in package.glob("*.py")
               if p.stem not in {"__init__", *methods._NOT_METHOD_MODULES}}
    assert modules <= sources


def test_a_method_file_in_a_plugin_folder_is_listed_after_discovery(plugin_dir: Path) -> None:
    path = _simclr_copy(plugin_dir, "simclr_copy")
    assert "simclr_copy" not in list_methods()
    assert "simclr_copy" in list_methods(plugin_dirs=[plugin_dir])
    info = method_info("simclr_copy")
    assert Path(info["source"]) == path.resolve()
    assert info["transfers"] == {"cnn": ["encoder"], "vit": ["encoder"]}
    assert get_method("simclr_copy").resolved_hparams() == get_method("simclr").resolved_hparams()


def test_unloading_a_plugin_folder_removes_its_methods(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    _simclr_copy(folder, "simclr_gone")
    discover_methods([folder])
    assert unload_plugins(folder) == ["simclr_gone"]
    assert "simclr_gone" not in list_methods()


def test_discovery_imports_each_plugin_file_once(plugin_dir: Path, tmp_path: Path) -> None:
    counter = tmp_path / "imports.txt"
    (plugin_dir / "counted.py").write_text(
        f"from pathlib import Path\nwith open({str(counter)!r}, 'a') as f:\n    f.write('x')\n")
    for _ in range(3):
        discover_methods([plugin_dir])
        discover_methods([str(plugin_dir) + "/../plugins"])
    assert counter.read_text() == "x"


def test_plugin_folders_come_from_the_environment_variable(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _simclr_copy(first, "env_one", "method.py")
    _simclr_copy(second, "env_two", "method.py")   # same file name, different folder
    monkeypatch.setenv(PLUGINS_ENV, os.pathsep.join([str(first), str(second)]))
    try:
        assert {"env_one", "env_two"} <= set(list_methods())
    finally:
        monkeypatch.delenv(PLUGINS_ENV)
        unload_plugins(first)
        unload_plugins(second)


def test_broken_plugins_are_reported_by_file_and_exception_and_the_rest_still_works(plugin_dir: Path) -> None:
    syntax = plugin_dir / "syntax_error.py"
    syntax.write_text("def broken(:\n")
    raising = plugin_dir / "raising.py"
    raising.write_text("raise RuntimeError('plugin exploded on import')\n")
    _simclr_copy(plugin_dir, "still_fine")
    with pytest.warns(PluginWarning) as warned:
        names = list_methods(plugin_dirs=[plugin_dir])
    assert set(STUDY_METHODS) | {"still_fine"} <= set(names)
    errors = {e.file: e.exception for e in plugin_errors()}
    assert errors[str(syntax.resolve())].startswith("SyntaxError")
    assert errors[str(raising.resolve())] == "RuntimeError: plugin exploded on import"
    messages = [str(w.message) for w in warned]
    assert any(str(syntax.resolve()) in m and "SyntaxError" in m for m in messages)
    assert any(str(raising.resolve()) in m and "plugin exploded on import" in m for m in messages)


def test_two_methods_with_one_name_raise_naming_both_files(plugin_dir: Path) -> None:
    first = _simclr_copy(plugin_dir, "twin", "a_twin.py")
    second = _simclr_copy(plugin_dir, "twin", "b_twin.py")
    with pytest.raises(DuplicateNameError) as error:
        discover_methods([plugin_dir])
    assert str(first.resolve()) in str(error.value) and str(second.resolve()) in str(error.value)


def test_a_plugin_reusing_a_built_in_name_raises_naming_both_files(plugin_dir: Path) -> None:
    clash = _simclr_copy(plugin_dir, "pcl", "my_pcl.py")
    with pytest.raises(DuplicateNameError, match="'pcl'") as error:
        discover_methods([plugin_dir])
    assert "pcl.py" in str(error.value) and str(clash.resolve()) in str(error.value)
    assert get_method("pcl").__module__ == "cmrbench.methods.pcl"


def test_a_missing_plugin_folder_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PluginDirError, match="nowhere"):
        discover_methods([tmp_path / "nowhere"])


def test_methods_of_installed_packages_load_from_entry_points(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site"
    _simclr_copy(package, "from_entry_point", "ep_method.py")
    monkeypatch.syspath_prepend(str(package))
    points = [importlib.metadata.EntryPoint("mine", "ep_method", methods.ENTRY_POINT_GROUP),
              importlib.metadata.EntryPoint("broken", "no_such_module", methods.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(methods, "entry_points", lambda group: [p for p in points if p.group == group])
    monkeypatch.setattr(methods, "_state", methods._DiscoveryState(builtins_done=True))
    try:
        with pytest.warns(PluginWarning, match="no_such_module"):
            assert "from_entry_point" in list_methods()
        assert plugin_errors()[0].file == "entry point broken = no_such_module"
    finally:
        methods.METHODS.remove("from_entry_point")
        sys.modules.pop("ep_method", None)


def test_the_byol_plugin_loads_from_its_folder_and_lowers_its_loss() -> None:
    try:
        assert "byol" in list_methods(plugin_dirs=[BYOL_DIR])
        byol = get_method("byol")
        info = method_info("byol")
        assert Path(info["source"]) == (BYOL_DIR / "byol.py").resolve()
        assert "arXiv 2006.07733" in info["paper"]
        method = build_method(byol, hidden_dim=64, projection_dim=32)
        assert all(not p.requires_grad for p in method.target_net.parameters())
        first, last = first_and_last_mean(short_pretraining_losses(method, blob_slices(64)))
        assert last < first
    finally:
        unload_plugins(BYOL_DIR)
    assert "byol" not in list_methods()
