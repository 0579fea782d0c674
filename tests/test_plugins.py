"""Registration and discovery: the one decorator, net metadata read without building,
methods and datasets from built-ins, plugin folders, the environment variable and entry
points, broken and clashing plugins, a dataset adapter as a plugin file, and the `byol`
example plugin."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cmrbench
import cmrbench.methods
import cmrbench.plugins as plugins
from cmrbench.benchmark.grid import GridError, load_grid, parse_grid, plan_grid
from cmrbench.benchmark.runner import RunOptions
from cmrbench.cli import main
from cmrbench.datasets import DATASETS, DatasetAdapter, create_dataset, list_datasets
from cmrbench.methods import METHODS, get_method, list_methods, method_info
from cmrbench.methods.base import SSPMethod
from cmrbench.nets import NETS, NetFacts, SegNet, create_net, list_nets, net_facts
from cmrbench.plugins import (
    PLUGINS_ENV,
    PluginDirError,
    PluginWarning,
    load_plugins,
    loaded_plugin_dirs,
    plugin_errors,
    unload_plugins,
)
from cmrbench.registry import DuplicateNameError, Registry, UnknownNameError
from support.method_checks import (
    blob_slices,
    build_method,
    first_and_last_mean,
    short_pretraining_losses,
)
from support.plugin_net import PLUGIN_NET, plugin_net_grid, write_plugin_net

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


def test_every_method_class_of_the_methods_package_is_registered_from_its_file() -> None:
    names = list_methods()
    assert set(STUDY_METHODS) <= set(names)
    defined = {}
    for info in pkgutil.iter_modules(cmrbench.methods.__path__):
        module = importlib.import_module(f"cmrbench.methods.{info.name}")
        defined.update(
            {
                cls.name: module.__file__
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, SSPMethod) and cls.__module__ == module.__name__ and cls.name
            }
        )
    assert set(STUDY_METHODS) <= set(defined)
    assert {name: METHODS.source(name) for name in defined} == defined


def test_a_method_file_in_a_plugin_folder_is_listed_after_discovery(plugin_dir: Path) -> None:
    path = _simclr_copy(plugin_dir, "simclr_copy")
    assert "simclr_copy" not in list_methods()
    assert load_plugins([plugin_dir]) == (str(plugin_dir.resolve()),)
    assert "simclr_copy" in list_methods()
    info = method_info("simclr_copy")
    assert Path(info["source"]) == path.resolve()
    assert info["transfers"] == {"cnn": ["encoder"], "vit": ["encoder"]}
    assert get_method("simclr_copy").resolved_hparams() == get_method("simclr").resolved_hparams()


def test_unloading_a_plugin_folder_removes_its_methods(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    _simclr_copy(folder, "simclr_gone")
    load_plugins([folder])
    assert str(folder.resolve()) in loaded_plugin_dirs()
    assert unload_plugins(folder) == ["simclr_gone"]
    assert "simclr_gone" not in list_methods()
    assert str(folder.resolve()) not in loaded_plugin_dirs()


def test_discovery_imports_each_plugin_file_once(plugin_dir: Path, tmp_path: Path) -> None:
    counter = tmp_path / "imports.txt"
    (plugin_dir / "counted.py").write_text(
        f"from pathlib import Path\nwith open({str(counter)!r}, 'a') as f:\n    f.write('x')\n"
    )
    for _ in range(3):
        load_plugins([plugin_dir])
        load_plugins([str(plugin_dir) + "/../plugins"])
    assert counter.read_text() == "x"


def test_plugin_folders_come_from_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _simclr_copy(first, "env_one", "method.py")
    _simclr_copy(second, "env_two", "method.py")  # same file name, different folder
    monkeypatch.setenv(PLUGINS_ENV, os.pathsep.join([str(first), str(second)]))
    try:
        assert "env_one" not in list_methods()  # the variable is read when plugins load
        load_plugins()
        assert {"env_one", "env_two"} <= set(list_methods())
    finally:
        monkeypatch.delenv(PLUGINS_ENV)
        unload_plugins(first)
        unload_plugins(second)


def test_broken_plugins_are_reported_by_file_and_exception_and_the_rest_still_works(
    plugin_dir: Path,
) -> None:
    syntax = plugin_dir / "syntax_error.py"
    syntax.write_text("def broken(:\n")
    raising = plugin_dir / "raising.py"
    raising.write_text("raise RuntimeError('plugin exploded on import')\n")
    _simclr_copy(plugin_dir, "still_fine")
    with pytest.warns(PluginWarning) as warned:
        load_plugins([plugin_dir])
    names = list_methods()
    assert set(STUDY_METHODS) | {"still_fine"} <= set(names)
    errors = {e.file: e.exception for e in plugin_errors()}
    assert errors[str(syntax.resolve())].startswith("SyntaxError")
    assert errors[str(raising.resolve())] == "RuntimeError: plugin exploded on import"
    messages = [str(w.message) for w in warned]
    assert any(str(syntax.resolve()) in m and "SyntaxError" in m for m in messages)
    assert any(str(raising.resolve()) in m and "plugin exploded on import" in m for m in messages)


def test_a_plugin_method_whose_optimizer_sets_what_it_does_not_read_is_refused(
    plugin_dir: Path,
) -> None:
    path = _simclr_copy(plugin_dir, "simclr_betas")
    source = path.read_text()
    path.write_text(
        source.replace(
            'optim = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9,',
            'optim = OptimConfig(optimizer="sgd", betas=(0.9, 0.95), lr=0.1, momentum=0.9,',
        )
    )
    assert path.read_text() != source
    with pytest.warns(PluginWarning):
        load_plugins([plugin_dir])
    assert "simclr_betas" not in list_methods()
    (error,) = [e for e in plugin_errors() if e.file == str(path.resolve())]
    assert error.exception.startswith(
        "ValueError: optimizer 'sgd' does not read betas; it "
        "reads lr, weight_decay, momentum, nesterov"
    )


def test_two_methods_with_one_name_raise_naming_both_files(plugin_dir: Path) -> None:
    first = _simclr_copy(plugin_dir, "twin", "a_twin.py")
    second = _simclr_copy(plugin_dir, "twin", "b_twin.py")
    with pytest.raises(DuplicateNameError) as error:
        load_plugins([plugin_dir])
    assert str(first.resolve()) in str(error.value) and str(second.resolve()) in str(error.value)


def test_a_plugin_reusing_a_built_in_name_raises_naming_both_files(plugin_dir: Path) -> None:
    clash = _simclr_copy(plugin_dir, "pcl", "my_pcl.py")
    with pytest.raises(DuplicateNameError, match="'pcl'") as error:
        load_plugins([plugin_dir])
    assert "pcl.py" in str(error.value) and str(clash.resolve()) in str(error.value)
    assert get_method("pcl").__module__ == "cmrbench.methods.pcl"


def test_a_missing_plugin_folder_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PluginDirError, match="nowhere"):
        load_plugins([tmp_path / "nowhere"])


def test_methods_of_installed_packages_load_from_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site"
    _simclr_copy(package, "from_entry_point", "ep_method.py")
    monkeypatch.syspath_prepend(str(package))
    points = [
        importlib.metadata.EntryPoint("mine", "ep_method", "cmrbench.methods"),
        importlib.metadata.EntryPoint("broken", "no_such_module", "cmrbench.methods"),
    ]
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: [p for p in points if p.group == group]
    )
    monkeypatch.setattr(
        plugins, "_state", plugins._DiscoveryState(packages_done={"cmrbench.methods"})
    )
    try:
        with pytest.warns(PluginWarning, match="no_such_module"):
            assert "from_entry_point" in list_methods()
        assert plugin_errors()[0].file == "entry point broken = no_such_module"
    finally:
        METHODS.remove("from_entry_point")
        sys.modules.pop("ep_method", None)


def test_the_byol_plugin_loads_from_its_folder_and_lowers_its_loss() -> None:
    try:
        load_plugins([BYOL_DIR])
        assert "byol" in list_methods()
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


# A dataset adapter as a plugin file: two subjects of 2 frames × 2 slices × 8×8 pixels, each
# slice a 4×4 myocardium square around a 2×2 LV blood pool; no RV.
TWO_BOXES_ADAPTER = """
import numpy as np

from cmrbench.datasets import DATASETS, DatasetAdapter, Subject


class TwoBoxes(DatasetAdapter):
    \"\"\"Two box phantoms (a plugin dataset for tests).\"\"\"

    name = "two_boxes"
    needs_root = False

    def subject_ids(self):
        return ["box0", "box1"]

    def load(self, subject_id):
        labels = np.zeros((2, 8, 8), np.uint8)
        labels[:, 2:6, 2:6] = 2
        labels[:, 3:5, 3:5] = 1
        cine = np.stack([labels, labels]).astype(np.float32)
        return Subject(subject_id, cine, (8.0, 1.5, 1.5), {0: labels, 1: labels}, ed=0, es=1,
                       meta={"dataset": self.name, "vendor": "A", "pathology": "NOR"})

    def default_split(self):
        return {"train": ["box0"], "val": [], "test": ["box1"]}
"""


def _two_boxes_plugin(folder: Path, registered: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = TWO_BOXES_ADAPTER.replace("\nclass TwoBoxes", "\n@DATASETS.register\nclass TwoBoxes")
    path = folder / "two_boxes.py"
    path.write_text(source if registered else TWO_BOXES_ADAPTER)
    return path


def test_a_dataset_adapter_in_a_plugin_folder_is_listed_and_created(plugin_dir: Path) -> None:
    path = _two_boxes_plugin(plugin_dir)
    assert "two_boxes" not in list_datasets()
    load_plugins([plugin_dir])
    assert "two_boxes" in list_datasets()
    assert Path(DATASETS.source("two_boxes")) == path.resolve()
    subject = create_dataset("two_boxes").load("box1")
    assert subject.shape == (2, 2, 8, 8)
    assert (
        int((subject.labels[0] == 1).sum()) == 2 * 4
        and int((subject.labels[0] == 2).sum()) == 2 * 12
    )


def test_cli_lists_and_checks_a_plugin_dataset(plugin_dir: Path) -> None:
    _two_boxes_plugin(plugin_dir)
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "datasets", "--plugins", str(plugin_dir)])
    assert listed.exit_code == 0, listed.output
    assert (
        "two_boxes    Two box phantoms (a plugin dataset for tests)." in listed.output.splitlines()
    )
    checked = runner.invoke(
        main, ["data", "check", "--dataset", "two_boxes", "--plugins", str(plugin_dir)]
    )
    assert checked.exit_code == 0, checked.output
    lines = checked.output.splitlines()
    assert lines[0] == "dataset two_boxes at (no root folder)"
    assert "  subjects   2 loaded of 2 listed" in lines
    assert "  labels     0, 1, 2" in lines and "  vendors    A 2" in lines
    assert "  split      train 1, val 0, test 1" in lines
    assert lines[-1] == "no problems"


def test_dataset_adapters_of_installed_packages_load_from_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site"
    _two_boxes_plugin(package, registered=False)  # the entry point names the class itself
    monkeypatch.syspath_prepend(str(package))
    point = importlib.metadata.EntryPoint("boxes", "two_boxes:TwoBoxes", "cmrbench.datasets")
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: [point] if group == point.group else []
    )
    monkeypatch.setattr(
        plugins, "_state", plugins._DiscoveryState(packages_done={"cmrbench.datasets"})
    )
    try:
        assert "two_boxes" in list_datasets()
        assert create_dataset("two_boxes").subject_ids() == ["box0", "box1"]
    finally:
        DATASETS.remove("two_boxes")
        sys.modules.pop("two_boxes", None)


def test_a_plugin_dataset_reusing_a_built_in_name_raises_naming_both_files(
    plugin_dir: Path,
) -> None:
    clash = _two_boxes_plugin(plugin_dir)
    clash.write_text(clash.read_text().replace('name = "two_boxes"', 'name = "acdc"'))
    with pytest.raises(DuplicateNameError, match="'acdc'") as error:
        load_plugins([plugin_dir])
    assert "acdc.py" in str(error.value) and str(clash.resolve()) in str(error.value)


def test_a_net_in_a_plugin_folder_resolves_after_its_folder_is_loaded(plugin_dir: Path) -> None:
    path = write_plugin_net(plugin_dir)
    assert PLUGIN_NET not in list_nets()
    load_plugins([plugin_dir])
    assert PLUGIN_NET in list_nets() and Path(NETS.source(PLUGIN_NET)) == path.resolve()
    assert (net_facts(PLUGIN_NET).family, net_facts(PLUGIN_NET).downsampling) == ("cnn", 4)
    net = create_net(PLUGIN_NET, img_size=32)
    assert net.channels == (4, 8, 16)
    assert net.eval()(torch.zeros(2, 1, 32, 32)).shape == (2, 4, 32, 32)
    listed = CliRunner().invoke(main, ["list", "nets", "--plugins", str(plugin_dir)])
    assert listed.exit_code == 0, listed.output
    assert f"{PLUGIN_NET:<14} cnn " in listed.output and "input divisible by 4" in listed.output


def test_a_plugin_net_resolves_in_fresh_local_worker_processes(
    plugin_dir: Path, tmp_path: Path, cmrbench_env: dict
) -> None:
    # Two spawned workers start with no plugin and no CMRBENCH_PLUGINS (the fixture removes
    # it): the folder reaches them only as the executor's explicit list.
    write_plugin_net(plugin_dir)
    assert PLUGINS_ENV not in os.environ
    load_plugins([plugin_dir])
    grid = parse_grid(plugin_net_grid(seeds=[0, 1]), "plugin net grid")
    summary = cmrbench.run_grid(
        grid, tmp_path / "run", jobs=2, options=RunOptions(threads=1, progress=False)
    )
    assert (summary.done, summary.failures) == (2, [])
    results = sorted((tmp_path / "run" / "cells").glob(f"scratch_{PLUGIN_NET}_*/result.json"))
    assert len(results) == 2 and PLUGINS_ENV not in os.environ


def test_the_facts_of_every_net_are_those_of_the_net_it_builds() -> None:
    for name in NETS.names():
        net = create_net(name)
        assert type(net) is NETS.metadata(name)["net_class"], name
        assert net_facts(name) == NetFacts(
            net.family, net.downsampling, net.finetune_optim, getattr(net, "layer_decay", None)
        ), name


def test_net_facts_and_a_grid_plan_build_no_net(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_building(*args, **kwargs):
        raise AssertionError("a net was built")

    monkeypatch.setattr(SegNet, "__init__", no_building)
    assert [net_facts(name).family for name in ("unet2d", "vit_small")] == ["cnn", "vit"]
    assert net_facts("vit_small").layer_decay == 0.75 and net_facts("unet2d").layer_decay is None
    plan = plan_grid(load_grid("paper"))
    assert {cell.encoder for cell in plan.cells} == {"unet2d"}


def test_a_grid_image_size_the_encoder_cannot_take_fails_naming_both(tmp_path: Path) -> None:
    grid = tmp_path / "odd.yaml"
    grid.write_text(load_grid("smoke").text.replace("image_size: 64", "image_size: 60"))
    assert "image_size: 60" in grid.read_text()
    with pytest.raises(GridError, match="encoder 'unet2d_xs': image size 60 is not divisible by 8"):
        load_grid(str(grid))


def test_registration_takes_the_name_from_the_class_or_function_and_checks_metadata() -> None:
    things: Registry[object] = Registry("thing", required=("size",))

    @things.register(size=3)
    def small() -> None: ...

    assert things.names() == ["small"] and things.metadata("small") == {"size": 3}
    assert things.source("small") == __file__
    with pytest.raises(TypeError, match="'large'.*size"):
        things.register()(type("Large", (), {"name": "large"}))
    with pytest.raises(TypeError, match="'name' attribute"):
        things.register(size=1)(type("Nameless", (), {}))
    with pytest.raises(UnknownNameError, match="unknown thing 'big'; valid things: small"):
        things.get("big")
    Registry.instances.remove(things)


def test_dataset_discovery_imports_the_adapter_modules_and_not_the_helpers() -> None:
    code = (
        "import sys\nfrom cmrbench.datasets import list_datasets\nlist_datasets()\n"
        "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules"
        " if m.startswith('cmrbench.datasets.')), 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), PLUGINS_ENV: ""},
    )
    assert done.returncode == 0, done.stderr
    package = Path(importlib.import_module("cmrbench.datasets").__file__).parent
    sources = {Path(DATASETS.source(name)) for name in list_datasets()}
    # other tests may register adapters of their own in this process: keep the package's
    adapters = sorted(s.stem for s in sources if s.parent == package)
    assert adapters == ["acdc", "mnms", "nnunet", "phantom", "sunnybrook"]
    # the adapters import base, layout, nifti, paper_splits and subject themselves
    imported = sorted([*adapters, "base", "layout", "nifti", "paper_splits", "subject"])
    assert done.stdout.strip() == f"{imported} False"


def test_the_dataset_helper_modules_define_no_adapter() -> None:
    for helper in DATASETS.helper_modules:
        module = importlib.import_module(f"cmrbench.datasets.{helper}")
        adapters = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, DatasetAdapter) and cls.__module__ == module.__name__ and cls.name
        ]
        assert adapters == [], helper
