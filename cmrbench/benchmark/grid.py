"""Grid files (``benchmark/grids/*.yaml`` or a user's YAML) → validated plans of jobs.

A grid names its data, encoders, methods, label budgets, seeds, augmentations and
generalisation settings, and the schedules. `load_grid` validates every key and value
(errors name the file, the key and what is allowed); `plan_grid` expands the axes into
frozen `CellSpec`s and the `PretrainSpec`s they need (one per method × encoder: a
pretraining job never depends on the budget or augmentation of a cell).

The axes at the top level form one block. A grid may instead list ``blocks``, each
overriding some axes (and the ``finetune`` section) of the top level, so that a small
grid can cross some axes fully and others sparsely (the CPU smoke grid does); cells that
two blocks share are planned once.

A grid's ``checkpoints`` section declares external pretrained weight files by name
(`cmrbench.benchmark.checkpoints`); each is fine-tuned in every block like a method, on
its own encoder, and its name is the method column of its results.

Every section goes through one typed path when the grid is read (so ``--dry-run`` and
every command catch a mistake before anything runs): its keys are checked against the
section's allowed keys and each value is coerced to its type in `SETTING_TYPES`
(`cmrbench.typed`); a method's ``hparams`` against its ``config_class``, the optimizer
settings against `OptimConfig` and the optimizer's ``reads``, and ``dataset.options``
against the adapter's ``options_class``. A mistake is a `GridError` naming the file, the
key and the allowed keys or the expected type.

Beyond the grid's dataset: ``evaluate_on`` lists external test sets, each scored by every
cell as its own job (`ExternalSpec`, keyed apart from the cell, so adding one to a finished
grid leaves every cell key as it was), and ``pretrain.pool`` lists the datasets whose frames
form the pretraining pool (``dataset`` stands for the grid's own training subjects); the pool
is part of the pretraining key. `cmrbench.benchmark.leakage` checks at planning that no
subject a model trains on is a test subject.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cmrbench.benchmark.checkpoints import FORMATS, CheckpointError, resolve_checkpoint
from cmrbench.benchmark.spec import (
    POOL_SUBJECTS,
    TEST_SUBJECTS,
    CellSpec,
    CheckpointSpec,
    DataSpec,
    ExternalSet,
    ExternalSpec,
    FinetuneConfig,
    PoolSource,
    PretrainSpec,
    check_protocol_choices,
    external_specs,
    freeze,
    to_jsonable,
)
from cmrbench.datasets import DatasetError, list_datasets
from cmrbench.datasets.base import check_dataset_options
from cmrbench.datasets.splits import ALL, Setting, SplitError, parse_budget
from cmrbench.errors import CmrbenchError
from cmrbench.methods import get_method, list_methods
from cmrbench.nets import TRANSFERABLE_PARTS, list_nets, net_facts
from cmrbench.optim import OPTIMIZER_SETTINGS, OptimConfig
from cmrbench.store.layout import slug
from cmrbench.transforms.augment import AUGMENTATIONS
from cmrbench.typed import (
    ConfigError,
    build_config,
    coerce,
    coerce_values,
    field_names,
    field_types,
)

AXIS_KEYS = {"encoders", "methods", "budgets", "seeds", "all_seeds", "augmentations", "settings"}
TOP_KEYS = AXIS_KEYS | {
    "name",
    "description",
    "dataset",
    "finetune",
    "pretrain",
    "slurm",
    "blocks",
    "checkpoints",
    "evaluate_on",
    "pretrain_seeds",
}
BLOCK_KEYS = AXIS_KEYS | {"name", "finetune"}
DATASET_KEYS = {"name", "root", "options", "options_for", "image_size", "spacing_mm", "scale"}
OPTIM_KEYS = set(field_names(OptimConfig))
FINETUNE_KEYS = {
    "epochs",
    "batch_size",
    "lr",
    "lr_pretrained",
    "val_every",
    "layer_decay",
    "families",
    "dice",
    "center",
    "precision",
} | OPTIM_KEYS
PRETRAIN_KEYS = {"epochs", "batch_size", "seed", "methods", "center", "precision", "pool"}
PRETRAIN_FAMILY_KEYS = {"epochs", "batch_size"} | OPTIM_KEYS
PRETRAIN_METHOD_KEYS = {"hparams", "families", "center", "precision"} | PRETRAIN_FAMILY_KEYS
CHECKPOINT_KEYS = {"path", "format", "encoder", "strict", "parts"}
EXTERNAL_KEYS = {"name", "label", "root", "options", "subjects"}
POOL_KEYS = {"name", "root", "options", "subjects"}
OWN_DATASET = "dataset"  # in pretrain.pool: the grid's own dataset's pretraining pool
PRETRAIN_SEEDS = ("single", "tied")
"""``pretrain_seeds``: one pretraining job per method × encoder with seed ``pretrain.seed`` (the
study's design; every claim is conditional on that run), or one per fine-tuning seed, cell seed
s fine-tuning from checkpoint s (the run-level variance then includes pretraining)."""
SLURM_KEYS = {
    "partition",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "time_min",
    "array_parallelism",
    "account",
    "qos",
    "constraint",
}
SETTING_TYPES: dict[str, Any] = {
    **field_types(OptimConfig),
    "name": str,
    "description": str,
    "root": str | None,
    "options": dict[str, Any],
    "options_for": dict[str, dict[str, Any]],
    "image_size": int,
    "spacing_mm": float,
    "epochs": float,
    "batch_size": int,
    "seed": int,
    "lr_pretrained": float,
    "val_every": int,
    "layer_decay": float | None,
    "dice": str,
    "center": str,
    "precision": str,
    "hparams": dict[str, Any],
    "families": dict[str, Any],
    "path": str,
    "format": str,
    "encoder": str | None,
    "strict": bool,
    "parts": list[str],
    "label": str,
    "subjects": str,
    "scale": str,
    "pretrain_seeds": str,
    "partition": str | None,
    "gpus_per_node": int | None,
    "cpus_per_task": int | None,
    "mem_gb": float | None,
    "time_min": int | None,
    "array_parallelism": int | None,
    "account": str | None,
    "qos": str | None,
    "constraint": str | None,
}
"""The type of every grid key that holds a value, whatever section it is in (a key means one
thing everywhere); a key that holds a list of names or a section of its own (``methods``,
``blocks``) is checked where that is parsed."""


class GridLoader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers: ``1:00:00`` stays the text
    it looks like instead of becoming 3600 (a ``time_min`` of 60 hours)."""


SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
GridLoader.yaml_implicit_resolvers = {
    first: ([("tag:yaml.org,2002:str", SEXAGESIMAL)] if first in "+-0123456789" else [])
    + list(resolvers)
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> Any:
    """Parse grid YAML (a grid file or a command-line value) with `GridLoader`."""
    return yaml.load(text, Loader=GridLoader)


class GridError(CmrbenchError, ValueError):
    """A grid file or override is invalid; the message names the file, key and allowed values."""


@dataclass(frozen=True)
class GridBlock:
    """One set of crossed axes, with its fine-tuning section (grid's, then the block's)."""

    encoders: tuple[str, ...]
    methods: tuple[str, ...]
    budgets: tuple[str, ...]
    seeds: tuple[int, ...]
    all_seeds: tuple[int, ...]
    augmentations: tuple[str, ...]
    settings: tuple[str, ...]
    finetune: dict[str, Any]


@dataclass(frozen=True)
class Grid:
    """A validated grid (the YAML's content with defaults filled in)."""

    name: str
    source: str
    text: str
    data: DataSpec
    blocks: tuple[GridBlock, ...]
    pretrain: dict[str, Any]
    slurm: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # name → entry, path absolute
    folder: str = "."  # the grid file's folder: relative checkpoint paths start there
    evaluate_on: tuple[ExternalSet, ...] = ()
    pool: tuple[PoolSource | None, ...] = ()  # ``pretrain.pool``; None: the grid's dataset
    pretrain_seeds: str = "single"  # `PRETRAIN_SEEDS`


@dataclass(frozen=True)
class Plan:
    """The jobs of a grid: pretraining jobs first, then the cells that use them, and each
    cell's external evaluations (none without ``evaluate_on``)."""

    grid: Grid
    pretrain: tuple[PretrainSpec, ...]
    cells: tuple[CellSpec, ...]
    external: tuple[ExternalSpec, ...] = ()

    @cached_property
    def _external_by_cell(self) -> dict[str, tuple[ExternalSpec, ...]]:
        by_cell: dict[str, list[ExternalSpec]] = {}
        for evaluation in self.external:
            by_cell.setdefault(evaluation.cell_key, []).append(evaluation)
        return {key: tuple(evaluations) for key, evaluations in by_cell.items()}

    def external_of(self, cell: CellSpec) -> tuple[ExternalSpec, ...]:
        """The external evaluations of ``cell``."""
        return self._external_by_cell.get(cell.key, ())


def builtin_grids() -> list[str]:
    """Names of the grids shipped in ``cmrbench/benchmark/grids``."""
    folder = resources.files("cmrbench.benchmark") / "grids"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def grid_description(grid: Grid) -> str:
    """The grid's ``description``, else the first line of its leading comment."""
    raw = read_yaml(grid.text) if grid.text else {}
    if isinstance(raw, dict) and raw.get("description"):
        return str(raw["description"])
    return next((line.lstrip("# ") for line in grid.text.splitlines() if line.startswith("#")), "")


def grid_path(name_or_path: str) -> Path:
    """A built-in grid name (``smoke``) or a path to a user's YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise GridError(f"grid file {path} does not exist")
        return path
    if name_or_path not in builtin_grids():  # a folder named like a built-in grid is no grid file
        raise GridError(
            f"unknown grid {name_or_path!r}; built-in grids: "
            f"{', '.join(builtin_grids())} (or pass a path to a YAML file"
            f"{'; ' + str(path) + ' is a folder' if path.is_dir() else ''})"
        )
    return Path(str(resources.files("cmrbench.benchmark") / "grids" / f"{name_or_path}.yaml"))


def _section(where: str, section: str, mapping: Any, allowed: set[str]) -> dict[str, Any]:
    """A grid section: a mapping of ``allowed`` keys, each value typed by `SETTING_TYPES`."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise GridError(f"{where}: '{section}' must be a mapping, got {type(mapping).__name__}")
    types = {key: SETTING_TYPES.get(key, Any) for key in sorted(allowed)}
    try:
        return coerce_values(mapping, types, f"{where}: '{section}'")
    except ConfigError as exc:
        raise GridError(str(exc)) from None


def _as_list(where: str, key: str, value: Any) -> list[Any]:
    if value is None:
        raise GridError(f"{where}: '{key}' is required")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise GridError(f"{where}: '{key}' must not be empty")
    return items


def _expand_methods(where: str, names: list[str]) -> tuple[str, ...]:
    """Method names; ``"*"`` stands for every registered method."""
    out: list[str] = []
    for name in names:
        for resolved in list_methods() if name == "*" else [str(name)]:
            if resolved not in list_methods():
                raise GridError(
                    f"{where}: unknown method {resolved!r} in 'methods'; allowed: "
                    f"{', '.join(list_methods())} or '*'"
                )
            if resolved not in out:
                out.append(resolved)
    return tuple(out)


def _expand_choice(where: str, key: str, names: list[Any], allowed: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        for resolved in allowed if name == "*" else [str(name)]:
            if resolved not in allowed:
                raise GridError(
                    f"{where}: unknown value {resolved!r} in '{key}'; allowed: "
                    f"{', '.join(allowed)} or '*'"
                )
            if resolved not in out:
                out.append(resolved)
    return tuple(out)


def _check_choices(where: str, section: str, mapping: dict[str, Any]) -> None:
    """The protocol options of a section (``dice``, ``center``, ``precision``) hold known values."""
    try:
        check_protocol_choices(mapping)
    except ValueError as exc:
        raise GridError(f"{where}: in '{section}': {exc}") from None


def _parse_finetune(where: str, section: Any, name: str = "finetune") -> dict[str, Any]:
    """A ``finetune`` section (the grid's, or ``name`` ``blocks[i].finetune``) and its
    ``families.<family>`` sections, typed; a family must be a registered net's family."""
    finetune = _section(where, name, section, FINETUNE_KEYS)
    _check_choices(where, name, finetune)
    families = _section(
        where,
        f"{name}.families",
        finetune.get("families"),
        {net_facts(net).family for net in list_nets()},
    )
    for family, family_section in families.items():
        families[family] = _section(
            where, f"{name}.families.{family}", family_section, FINETUNE_KEYS - {"families"}
        )
        _check_choices(where, f"{name}.families.{family}", families[family])
    return {**finetune, "families": families} if families else finetune


def _merge_finetune(base: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    families = {**(base.get("families") or {})}
    for family, section in (block.get("families") or {}).items():
        families[family] = {**families.get(family, {}), **section}
    return {**base, **block, "families": families}


def _parse_block(
    where: str, raw: dict[str, Any], data: DataSpec, finetune: dict[str, Any], name: str
) -> GridBlock:
    """One block (``name``: ``blocks[i]``): the grid's axes with the block's own, and the
    grid's ``finetune`` section updated by the block's."""
    encoders = _expand_choice(
        where, "encoders", _as_list(where, "encoders", raw.get("encoders")), list_nets()
    )
    for enc in encoders:
        downsampling = net_facts(enc).downsampling
        if data.image_size % downsampling:
            raise GridError(
                f"{where}: encoder {enc!r}: image size {data.image_size} is not "
                f"divisible by {downsampling}, the encoder's total downsampling; "
                f"choose a multiple of {downsampling}"
            )
    methods = _expand_methods(where, _as_list(where, "methods", raw.get("methods")))
    try:
        budgets = tuple(
            dict.fromkeys(parse_budget(b) for b in _as_list(where, "budgets", raw.get("budgets")))
        )
        settings = tuple(Setting(str(s)).name for s in raw.get("settings") or ["default"])
    except SplitError as exc:
        raise GridError(f"{where}: {exc}") from None
    seeds = _seeds(where, "seeds", _as_list(where, "seeds", raw.get("seeds", [0])))
    augmentations = _expand_choice(
        where,
        "augmentations",
        _as_list(where, "augmentations", raw.get("augmentations", ["paper"])),
        sorted(AUGMENTATIONS),
    )
    finetune = _merge_finetune(
        finetune, _parse_finetune(where, raw.get("finetune"), f"{name}.finetune")
    )
    for encoder in encoders:  # an optimizer setting the encoder's optimizer does not read
        for pretrained in (False, True):
            _finetune_optim(where, finetune, encoder, pretrained)
    return GridBlock(
        encoders=encoders,
        methods=methods,
        budgets=budgets,
        seeds=seeds,
        all_seeds=_seeds(where, "all_seeds", raw.get("all_seeds") or [seeds[0]]),
        augmentations=augmentations,
        settings=settings,
        finetune=finetune,
    )


def _seeds(where: str, key: str, values: list[Any]) -> tuple[int, ...]:
    """Whole numbers; the command line's ``--seeds 0,1`` arrive as text."""
    try:
        return tuple(
            int(value)
            if isinstance(value, str) and value.strip().isdigit()
            else coerce(value, int, f"{where}: '{key}' value")
            for value in values
        )
    except ConfigError as exc:
        raise GridError(str(exc)) from None


def _parse_checkpoints(where: str, section: Any, folder: Path) -> dict[str, dict[str, Any]]:
    """The ``checkpoints`` section, validated, with paths made absolute against ``folder``
    (the files themselves are read when the grid is planned)."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise GridError(
            f"{where}: 'checkpoints' must be a mapping of name → {{path, format, "
            f"encoder, strict, parts}}, got {type(section).__name__}"
        )
    out = {}
    for name, entry in section.items():
        name = str(name)
        entry = _section(where, f"checkpoints.{name}", entry, CHECKPOINT_KEYS)
        if name in list_methods() or slug(name) != name:
            raise GridError(
                f"{where}: checkpoint name {name!r} must differ from every method "
                f"name and use only letters, digits and ._- (it is the method "
                f"column of its results)"
            )
        if not entry.get("path"):
            raise GridError(
                f"{where}: 'checkpoints.{name}.path' is required (relative paths "
                f"start at the grid file's folder, {folder})"
            )
        if entry.get("format") not in FORMATS:
            raise GridError(
                f"{where}: 'checkpoints.{name}.format' must be one of "
                f"{', '.join(FORMATS)}, got {entry.get('format')!r}"
            )
        parts = entry.get("parts") or []
        if any(p not in TRANSFERABLE_PARTS for p in parts):
            raise GridError(
                f"{where}: 'checkpoints.{name}.parts' must be a list of "
                f"{', '.join(TRANSFERABLE_PARTS)}, got {parts!r}"
            )
        path = os.path.abspath(folder / Path(str(entry["path"])).expanduser())
        out[name] = {**entry, "path": path}
    return out


def _parse_dataset(where: str, section: Any) -> DataSpec:
    """The ``dataset`` section: a registered adapter, its options typed by the adapter's
    ``options_class``, and ``options_for`` (dataset name → the options the grid uses on that
    dataset) checked against each named adapter."""
    ds = _section(where, "dataset", section or {"name": "phantom"}, DATASET_KEYS)
    name = ds.get("name", "phantom")
    if name not in list_datasets():
        raise GridError(
            f"{where}: unknown value {name!r} in 'dataset.name'; allowed: "
            f"{', '.join(list_datasets())}"
        )
    for other, options in (ds.get("options_for") or {}).items():
        if other not in list_datasets():
            raise GridError(
                f"{where}: unknown dataset {other!r} in 'dataset.options_for'; "
                f"allowed: {', '.join(list_datasets())}"
            )
        _dataset_options(where, f"dataset.options_for.{other}", other, options)
    scale = ds.get("scale", "")
    if scale and scale not in SCALES:
        raise GridError(
            f"{where}: unknown value {scale!r} in 'dataset.scale'; allowed: "
            f"{', '.join(SCALES)} (set by --scale)"
        )
    return DataSpec(
        dataset=name,
        root=ds.get("root"),
        options=freeze(_dataset_options(where, "dataset.options", name, ds.get("options") or {})),
        image_size=ds.get("image_size", 256),
        spacing_mm=ds.get("spacing_mm", 1.25),
        scale=scale,
    )


def _dataset_options(
    where: str, section: str, dataset: str, options: dict[str, Any]
) -> dict[str, Any]:
    try:
        return check_dataset_options(dataset, options)
    except DatasetError as exc:
        raise GridError(f"{where}: '{section}': {exc}") from None


def parse_grid(
    raw: dict[str, Any], source: str, text: str = "", folder: Path | None = None
) -> Grid:
    """Validate a grid mapping; ``source`` names its file in every error; relative
    checkpoint paths start at ``folder`` (default: the working directory)."""
    where = source
    raw = _section(where, "top level", raw, TOP_KEYS)
    data = _parse_dataset(where, raw.get("dataset"))
    finetune = _parse_finetune(where, raw.get("finetune"))
    top_axes = {k: v for k, v in raw.items() if k in AXIS_KEYS}
    blocks_raw = raw.get("blocks") or [{}]
    if not isinstance(blocks_raw, list):
        raise GridError(f"{where}: 'blocks' must be a list of mappings")
    blocks = []
    for i, block in enumerate(blocks_raw):
        block = _section(where, f"blocks[{i}]", block, BLOCK_KEYS)
        blocks.append(
            _parse_block(
                where if len(blocks_raw) == 1 else f"{where} (blocks[{i}])",
                {**top_axes, **block},
                data,
                finetune,
                f"blocks[{i}]",
            )
        )
    folder = Path(folder or Path.cwd())
    pretrain = _parse_pretrain(where, raw.get("pretrain"))
    pretrain_seeds = _parse_pretrain_seeds(where, raw.get("pretrain_seeds", "single"), pretrain)
    return Grid(
        name=raw.get("name", Path(source).stem),
        source=source,
        text=text,
        data=data,
        blocks=tuple(blocks),
        pretrain=pretrain,
        slurm=_section(where, "slurm", raw.get("slurm"), SLURM_KEYS),
        checkpoints=_parse_checkpoints(where, raw.get("checkpoints"), folder),
        folder=str(folder),
        evaluate_on=_parse_evaluate_on(where, raw.get("evaluate_on"), data),
        pool=_parse_pool(where, pretrain.get("pool"), data),
        pretrain_seeds=pretrain_seeds,
    )


def _parse_pretrain_seeds(where: str, value: str, pretrain: dict[str, Any]) -> str:
    """``pretrain_seeds`` (`PRETRAIN_SEEDS`); ``tied`` takes each cell's seed, so a
    ``pretrain.seed`` beside it would be ignored and is refused."""
    if value not in PRETRAIN_SEEDS:
        raise GridError(
            f"{where}: unknown value {value!r} in 'pretrain_seeds'; allowed: "
            f"{', '.join(PRETRAIN_SEEDS)}"
        )
    if value == "tied" and "seed" in pretrain:
        raise GridError(
            f"{where}: 'pretrain.seed' applies to 'pretrain_seeds: single' only; "
            f"with 'pretrain_seeds: tied' cell seed s fine-tunes from the checkpoint "
            f"pretrained with seed s"
        )
    return value


def _other_dataset(
    where: str, section: str, entry: Any, allowed: set[str], grid_data: DataSpec
) -> tuple[dict[str, Any], DataSpec]:
    """One dataset entry of ``evaluate_on`` or ``pretrain.pool`` (a mapping with ``name``,
    ``root``, ``options``, ...), checked, and its `DataSpec` at the grid's geometry."""
    entry = _section(where, section, entry, allowed)
    name = entry.get("name")
    if name not in list_datasets():
        raise GridError(
            f"{where}: '{section}.name' is {name!r}; allowed: {', '.join(list_datasets())}"
        )
    options = _dataset_options(where, f"{section}.options", name, entry.get("options") or {})
    return entry, DataSpec(
        dataset=name,
        root=entry.get("root"),
        options=freeze(options),
        image_size=grid_data.image_size,
        spacing_mm=grid_data.spacing_mm,
    )


def _subjects_choice(
    where: str, section: str, entry: dict[str, Any], default: str, allowed: tuple[str, ...]
) -> str:
    subjects = str(entry.get("subjects", default))
    if subjects not in allowed:
        raise GridError(
            f"{where}: '{section}.subjects' is {subjects!r}; allowed: {', '.join(allowed)}"
        )
    return subjects


def _parse_evaluate_on(where: str, section: Any, data: DataSpec) -> tuple[ExternalSet, ...]:
    """``evaluate_on``: a list of external test sets (``name``, ``root``, ``options``,
    ``subjects: test | all``, ``label``: their ``test_dataset`` column, default the name).
    Labels are unique and differ from the grid's dataset, so every row names one test set."""
    if section is None:
        return ()
    if not isinstance(section, list):
        raise GridError(
            f"{where}: 'evaluate_on' must be a list of datasets ({{name, root, "
            f"options, subjects, label}}), got {type(section).__name__}"
        )
    sets: list[ExternalSet] = []
    for i, raw_entry in enumerate(section):
        entry, spec = _other_dataset(where, f"evaluate_on[{i}]", raw_entry, EXTERNAL_KEYS, data)
        label = str(entry.get("label", spec.dataset))
        taken = [data.dataset, *(s.label for s in sets)]
        if label in taken or slug(label) != label:
            raise GridError(
                f"{where}: 'evaluate_on[{i}]' needs a label of its own (letters, "
                f"digits and ._-), different from the grid's dataset and the other "
                f"external sets ({', '.join(taken)}): it is the test_dataset column "
                f"of its rows; got {label!r}"
            )
        sets.append(
            ExternalSet(
                label=label,
                data=spec,
                subjects=_subjects_choice(where, f"evaluate_on[{i}]", entry, "test", TEST_SUBJECTS),
            )
        )
    return tuple(sets)


def _parse_pool(where: str, section: Any, data: DataSpec) -> tuple[PoolSource | None, ...]:
    """``pretrain.pool``: a list of ``dataset`` (the grid's dataset's pretraining pool) and
    datasets (``name``, ``root``, ``options``, ``subjects: train | all``); empty: the default.
    A pool of ``[dataset]`` alone is the default, so its pretraining keys stay as they were."""
    if section is None:
        return ()
    if not isinstance(section, list) or not section:
        raise GridError(
            f"{where}: 'pretrain.pool' must be a non-empty list of '{OWN_DATASET}' "
            f"(the grid's dataset) and datasets ({{name, root, options, subjects}})"
        )
    pool: list[PoolSource | None] = []
    for i, raw_entry in enumerate(section):
        if raw_entry == OWN_DATASET:
            source = None
        elif not isinstance(raw_entry, dict):
            raise GridError(
                f"{where}: 'pretrain.pool[{i}]' is {raw_entry!r}; expected "
                f"'{OWN_DATASET}' (the grid's dataset) or a mapping {{name, root, "
                f"options, subjects}}"
            )
        else:
            entry, spec = _other_dataset(where, f"pretrain.pool[{i}]", raw_entry, POOL_KEYS, data)
            source = PoolSource(
                spec, _subjects_choice(where, f"pretrain.pool[{i}]", entry, "train", POOL_SUBJECTS)
            )
        if source in pool:
            raise GridError(f"{where}: 'pretrain.pool[{i}]' repeats an earlier entry")
        pool.append(source)
    return () if pool == [None] else tuple(pool)


def _parse_pretrain(where: str, section: Any) -> dict[str, Any]:
    """The ``pretrain`` section with each ``methods.<method>`` section typed."""
    pretrain = _section(where, "pretrain", section, PRETRAIN_KEYS)
    _check_choices(where, "pretrain", pretrain)
    methods = pretrain.get("methods") or {}
    if not isinstance(methods, dict):
        raise GridError(
            f"{where}: 'pretrain.methods' must be a mapping of method names to "
            f"settings, got {type(methods).__name__}"
        )
    if not methods:
        return pretrain
    return {
        **pretrain,
        "methods": {
            method: _parse_pretrain_method(where, method, settings)
            for method, settings in methods.items()
        },
    }


def _parse_pretrain_method(where: str, method: str, section: Any) -> dict[str, Any]:
    """``pretrain.methods.<method>``, typed: its keys, its hyper-parameters against the
    method's configuration, its ``families`` sections and, per family, its optimizer
    settings against the optimizer's (`_optim_with`)."""
    if method not in list_methods():
        raise GridError(
            f"{where}: unknown method {method!r} in 'pretrain.methods'; allowed: "
            f"{', '.join(list_methods())}"
        )
    name = f"pretrain.methods.{method}"
    section = _section(where, name, section, PRETRAIN_METHOD_KEYS)
    _check_choices(where, name, section)
    cls = get_method(method)
    if cls.pretrain_as:
        raise GridError(
            f"{where}: '{name}': {method} reuses the pretraining job of "
            f"{cls.pretrain_as}; set its settings under "
            f"'pretrain.methods.{cls.pretrain_as}'"
        )
    if not cls.needs_pretraining:
        raise GridError(f"{where}: '{name}': {method} has no pretraining")
    try:
        cls.resolve_config(section.get("hparams"))
    except ConfigError as exc:
        raise GridError(f"{where}: '{name}.hparams': {exc}") from None
    families = _section(
        where, f"{name}.families", section.get("families"), {*cls.transfers, *cls.optim_by_family}
    )
    for family, family_section in families.items():
        families[family] = _section(
            where, f"{name}.families.{family}", family_section, PRETRAIN_FAMILY_KEYS
        )
    for family in {*families, *cls.transfers}:
        _optim_with(
            cls.optim_for(family), {**section, **families.get(family, {})}, f"{where}: '{name}'"
        )
    return {**section, "families": families} if families else section


def _optim_with(base: OptimConfig, section: dict[str, Any], where: str) -> OptimConfig:
    """``base`` with the optimizer settings of a grid section. A section that names another
    optimizer starts from ``base``'s schedule settings alone: the settings only ``base``'s
    optimizer reads do not carry over to one that may not read them.

    Raises:
        GridError: a setting of the wrong type, out of range, or one the optimizer does not
            read (naming ``where``, the setting and those it reads).
    """
    overrides = {k: section[k] for k in OPTIM_KEYS if k in section}
    kept = base.settings()
    if overrides.get("optimizer", base.optimizer) != base.optimizer:
        kept = {k: v for k, v in kept.items() if k not in OPTIMIZER_SETTINGS}
    try:
        return build_config(OptimConfig, {**kept, **overrides}, where, noun="optimizer setting")
    except ConfigError as exc:
        raise GridError(str(exc)) from None


def load_grid(name_or_path: str) -> Grid:
    """Read and validate a built-in grid or a YAML file."""
    path = grid_path(name_or_path)
    text = path.read_text()
    try:
        raw = read_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML ({exc})") from None
    return parse_grid(raw, str(path), text, path.parent)


def override(grid: Grid, dataset_options: dict[str, Any] | None = None, **axes: str | None) -> Grid:
    """Replace axes from comma-separated CLI values (``methods="scratch,mim"``), the
    dataset name or root, and set dataset options; with none of them, ``grid`` itself.

    In a grid with ``blocks``, an axis value goes to the blocks that hold it and a value
    that no block holds goes to every block; a block left without values is dropped
    (`_blocks_overridden`), so that each block keeps its own schedule. Switching to another
    dataset replaces the grid's options for the old one (they mean nothing to another
    adapter) by the grid's ``dataset.options_for.<new dataset>``, if any (the ``paper``
    grid's ``split: paper`` for ``mnms+mnms2``); ``dataset_options`` then override those.
    A new ``root`` alone keeps the grid's options.
    """
    given = {key: value for key, value in axes.items() if value is not None}
    if not given and not dataset_options:
        return grid
    raw = read_yaml(grid.text) if grid.text else {}
    if given.get("dataset") and given["dataset"] != grid.data.dataset:
        section = raw.setdefault("dataset", {})
        section.pop("options", None)
        options_for = (section.get("options_for") or {}).get(given["dataset"])
        if options_for:
            section["options"] = dict(options_for)
    if dataset_options:
        section = raw.setdefault("dataset", {})
        section["options"] = {**(section.get("options") or {}), **dataset_options}
    for key in ("dataset", "root"):
        if key in given:
            raw.setdefault("dataset", {})["name" if key == "dataset" else "root"] = given[key]
    values = {
        key: [v.strip() for v in str(value).split(",") if v.strip()]
        for key, value in given.items()
        if key not in ("dataset", "root")
    }
    raw.update(values)
    if raw.get("blocks") and values:
        raw["blocks"] = _blocks_overridden(grid, raw["blocks"], values)
    return parse_grid(
        raw, f"{grid.source} (with command-line overrides)", yaml.safe_dump(raw), Path(grid.folder)
    )


def _blocks_overridden(
    grid: Grid, raw_blocks: list[dict[str, Any]], values: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """The raw ``blocks`` with axis overrides applied: on each axis, a value goes to the
    blocks whose axis holds it, a value no block holds to every block; a block left with no
    value on an overridden axis is dropped.

    So ``--budgets 8`` on the smoke grid runs its ``large`` block alone (budget 8 at its own
    60 epochs and one seed) rather than also planning budget 8 under ``small``'s 200 epochs
    and five seeds, which would put two schedules under one budget.
    """
    wanted = {key: _normalised(grid, key, items) for key, items in values.items()}
    kept = []
    for raw_block, block in zip(raw_blocks, grid.blocks):
        updated = dict(raw_block)
        for key, items in wanted.items():
            held = [v for v in items if v in getattr(block, key)]
            free = [v for v in items if not any(v in getattr(b, key) for b in grid.blocks)]
            updated[key] = [v for v in items if v in held or v in free]
        if all(updated[key] for key in values):
            kept.append(updated)
    return kept


def _normalised(grid: Grid, key: str, items: list[str]) -> tuple[Any, ...]:
    """Command-line values of axis ``key`` as a parsed block holds them (``*`` expanded,
    budgets as text, seeds as numbers), parsed with the grid's first block's other axes."""
    probe = {axis: list(getattr(grid.blocks[0], axis)) for axis in AXIS_KEYS}
    block = _parse_block(
        f"{grid.source}: --{key}", {**probe, key: items}, grid.data, {}, f"--{key}"
    )
    return getattr(block, key)


@dataclass(frozen=True)
class Scale:
    """A named CPU size for any grid (``run --scale small``): each encoder replaced by the
    smallest net of its family, and the image size capped at ``image_size`` with the spacing
    grown so that the field of view in millimetres stays the grid's (the study's 256 px of
    1.25 mm = 320 mm become 64 px of 5 mm): label-centred training views and image-centred
    test slices then see the same anatomy as at full size. Budgets, seeds, schedules and
    batch sizes stay the grid's; ``--epochs-scale`` shortens the schedules."""

    image_size: int
    nets: dict[str, str]  # encoder family → the net that replaces its encoders


SCALES = {"small": Scale(image_size=64, nets={"cnn": "unet2d_xs", "vit": "vit_xs"})}


def scale_grid(grid: Grid, scale: str | None) -> Grid:
    """``grid`` at the CPU size `SCALES` names (None: ``grid`` itself), its data marked with
    the scale (``DataSpec.scale``, part of every key: scaled cells are never confused with
    full-size ones) and its name suffixed (``acdc-small``). A grid already at that size
    (``smoke``, ``pipeline``) comes back unchanged. External checkpoints keep their encoder.
    """
    if scale is None:
        return grid
    if scale not in SCALES:
        raise GridError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    target = SCALES[scale]
    size = min(grid.data.image_size, target.image_size)
    raw = read_yaml(grid.text) if grid.text else {}
    blocks = raw.get("blocks") or [raw]
    changed = size != grid.data.image_size
    for raw_block, block in zip(blocks, grid.blocks):
        encoders = list(
            dict.fromkeys(target.nets.get(net_facts(e).family, e) for e in block.encoders)
        )
        changed |= encoders != list(block.encoders)
        raw_block["encoders"] = encoders
    if not changed:
        return grid
    if raw.get("blocks"):
        raw.pop("encoders", None)  # every block now names its own
    dataset = raw.setdefault("dataset", {})
    dataset.update(
        image_size=size, scale=scale, spacing_mm=grid.data.image_size * grid.data.spacing_mm / size
    )
    raw["name"] = f"{grid.name}-{scale}"
    return parse_grid(
        raw, f"{grid.source} (at --scale {scale})", yaml.safe_dump(raw), Path(grid.folder)
    )


def parse_checkpoint_option(text: str) -> tuple[str, dict[str, Any]]:
    """``--checkpoint name=path[,format=timm][,encoder=vit_small][,strict=false]
    [,parts=encoder+decoder]`` → (name, grid entry); a relative path starts at the
    working directory."""
    head, *options = text.split(",")
    name, sep, path = head.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise GridError(
            f"--checkpoint {text!r}: expected name=path[,format=timm|cmrbench]"
            f"[,encoder=NET][,strict=false][,parts=encoder+decoder]"
        )
    entry: dict[str, Any] = {"path": os.path.abspath(Path(path.strip()).expanduser())}
    for option in options:
        key, sep, value = (s.strip() for s in option.partition("="))
        if not sep:
            raise GridError(f"--checkpoint {text!r}: cannot read {option!r}; expected key=value")
        entry[key] = value.split("+") if key == "parts" else read_yaml(value)
    return name.strip(), entry


def add_checkpoints(grid: Grid, declarations: tuple[str, ...]) -> Grid:
    """The grid with the ``--checkpoint`` declarations added to its ``checkpoints``."""
    if not declarations:
        return grid
    raw = read_yaml(grid.text) if grid.text else {}
    raw["checkpoints"] = {
        **(raw.get("checkpoints") or {}),
        **dict(parse_checkpoint_option(text) for text in declarations),
    }
    return parse_grid(
        raw, f"{grid.source} (with --checkpoint)", yaml.safe_dump(raw), Path(grid.folder)
    )


def _finetune_section(finetune: dict[str, Any], family: str) -> dict[str, Any]:
    """A block's ``finetune`` section with its ``families.<family>`` overrides applied."""
    return {
        **{k: v for k, v in finetune.items() if k != "families"},
        **(finetune.get("families") or {}).get(family, {}),
    }


def _finetune_optim(
    where: str, finetune: dict[str, Any], encoder: str, pretrained: bool
) -> OptimConfig:
    """The encoder's own fine-tuning optimizer with a block's ``finetune`` settings (and
    ``lr_pretrained`` for a pretrained encoder)."""
    net = net_facts(encoder)
    section = _finetune_section(finetune, net.family)
    if pretrained and "lr_pretrained" in section:
        section = {**section, "lr": section["lr_pretrained"]}
    return _optim_with(
        net.finetune_optim,
        section,
        f"{where}: 'finetune' for encoder {encoder!r} of family {net.family!r} "
        f"(a setting for one family goes under 'finetune.families.<family>')",
    )


def _finetune_config(
    grid: Grid, block: GridBlock, encoder: str, pretrained: bool, epochs_scale: float
) -> FinetuneConfig:
    """The encoder's own fine-tuning optimizer, then the block's ``finetune`` section, then
    its ``finetune.families.<family>`` overrides."""
    net = net_facts(encoder)
    section = _finetune_section(block.finetune, net.family)
    base = FinetuneConfig()
    return FinetuneConfig(
        epochs=section.get("epochs", base.epochs) * epochs_scale,
        batch_size=section.get("batch_size", base.batch_size),
        optim=_finetune_optim(grid.source, block.finetune, encoder, pretrained),
        val_every=section.get("val_every", base.val_every),
        layer_decay=section.get("layer_decay", net.layer_decay),
        **{k: section[k] for k in ("dice", "center", "precision") if k in section},
    )


def pretrain_spec(
    grid: Grid, method: str, encoder: str, epochs_scale: float = 1.0, cell_seed: int = 0
) -> PretrainSpec:
    """The fully resolved pretraining job of ``method`` on ``encoder`` for a cell of seed
    ``cell_seed``.

    Settings in order of precedence: the method's defaults (its optimizer for the encoder's
    family, ``optim_by_family``), the grid's ``pretrain`` section, its
    ``pretrain.methods.<method>`` section, then that section's ``families.<family>``. The
    spec holds every field of the method's configuration, its ``net_kwargs`` and ``version``.
    Its seed is ``pretrain.seed`` (default 0) with ``pretrain_seeds: single``, and
    ``cell_seed`` with ``tied``.

    Raises:
        GridError: the method transfers nothing for the encoder's family, or a setting
            does not fit (naming the method, the key and the valid keys).
    """
    cls = get_method(method)
    job_method = cls.pretrain_as or method
    job_cls = get_method(job_method)
    family = net_facts(encoder).family
    if not cls.transferred_parts(family):
        raise GridError(
            f"{grid.source}: method {method!r} needs pretraining but transfers nothing "
            f"to encoder {encoder!r} of family {family!r} (its transfers: "
            f"{', '.join(cls.transfers) or 'none'}); drop one of them from the grid"
        )
    method_section = (grid.pretrain.get("methods") or {}).get(job_method) or {}
    section = {
        **{
            k: v
            for k, v in grid.pretrain.items()
            if k in ("epochs", "batch_size", "center", "precision")
        },
        **{k: v for k, v in method_section.items() if k != "families"},
        **((method_section.get("families") or {}).get(family) or {}),
    }
    where = f"{grid.source}: 'pretrain.methods.{job_method}'"
    optim = _optim_with(job_cls.optim_for(family), section, where)
    try:
        hparams = job_cls.resolved_hparams(section.get("hparams"))
    except ConfigError as exc:
        raise GridError(f"{where}: {exc}") from None
    epochs = float(section.get("epochs", job_cls.epochs)) * epochs_scale
    return PretrainSpec(
        method=job_method,
        encoder=encoder,
        data=grid.data,
        epochs=epochs,
        batch_size=section.get("batch_size", job_cls.batch_size),
        optim=optim,
        hparams=freeze(hparams),
        net_kwargs=freeze(job_cls.net_kwargs),
        method_version=job_cls.version,
        seed=cell_seed if grid.pretrain_seeds == "tied" else grid.pretrain.get("seed", 0),
        pool=pool_sources(grid),
        **{k: section[k] for k in ("center", "precision") if k in section},
    )


def pool_sources(grid: Grid) -> tuple[PoolSource, ...]:
    """The grid's ``pretrain.pool`` with ``dataset`` resolved to its dataset (as planned, with
    any subjects skipped); empty for the default pool."""
    return tuple(PoolSource(grid.data) if source is None else source for source in grid.pool)


def _cell_axes(block: GridBlock) -> Iterator[tuple[str, str, str, int]]:
    """(setting, augmentation, budget, seed) of every cell of a block, for one method."""
    for setting in block.settings:
        for augmentation in block.augmentations:
            for budget in block.budgets:
                for seed in block.all_seeds if budget == ALL else block.seeds:
                    yield setting, augmentation, budget, seed


def resolve_checkpoints(grid: Grid) -> tuple[CheckpointSpec, ...]:
    """The grid's external checkpoints, each read, hashed and test-loaded into its net."""
    try:
        return tuple(
            resolve_checkpoint(name, entry, grid.data.image_size)
            for name, entry in grid.checkpoints.items()
        )
    except CheckpointError as exc:
        raise GridError(f"{grid.source}: {exc}") from None


def plan_grid(grid: Grid, epochs_scale: float = 1.0) -> Plan:
    """Expand every block's axes into cells (and the pretraining jobs they need); each
    external checkpoint gets the cells of a method on its own encoder in every block.

    Raises:
        GridError: two blocks plan one cell (method, encoder, budget, seed, augmentation,
            setting) with different specs (`_check_one_spec_per_cell`).
    """
    if epochs_scale <= 0:
        raise GridError(f"--epochs-scale must be positive, got {epochs_scale}")
    pretrains: dict[str, PretrainSpec] = {}
    cells: dict[str, tuple[GridBlock, CellSpec]] = {}
    checkpoints = resolve_checkpoints(grid)
    for block in grid.blocks:
        for encoder in block.encoders:
            for method in block.methods:
                cls = get_method(method)
                transfers = (
                    cls.transferred_parts(net_facts(encoder).family)
                    if cls.needs_pretraining
                    else ()
                )
                finetune = _finetune_config(
                    grid, block, encoder, cls.needs_pretraining, epochs_scale
                )
                by_seed: dict[int, PretrainSpec] = {}  # one spec per pretraining seed
                for setting, augmentation, budget, seed in _cell_axes(block):
                    pre = None
                    if cls.needs_pretraining:
                        pre = by_seed.get(seed) or pretrain_spec(
                            grid, method, encoder, epochs_scale, seed
                        )
                        by_seed[seed] = pretrains.setdefault(pre.key, pre)
                    cell = CellSpec(
                        method=method,
                        encoder=encoder,
                        data=grid.data,
                        budget=budget,
                        seed=seed,
                        augmentation=augmentation,
                        setting=setting,
                        finetune=finetune,
                        pretrain=pre,
                        transfers=transfers,
                    )
                    cells.setdefault(cell.key, (block, cell))
        for checkpoint in checkpoints:
            finetune = _finetune_config(grid, block, checkpoint.encoder, True, epochs_scale)
            for setting, augmentation, budget, seed in _cell_axes(block):
                cell = CellSpec(
                    method=checkpoint.name,
                    encoder=checkpoint.encoder,
                    data=grid.data,
                    budget=budget,
                    seed=seed,
                    augmentation=augmentation,
                    setting=setting,
                    finetune=finetune,
                    checkpoint=checkpoint,
                    transfers=checkpoint.parts,
                )
                cells.setdefault(cell.key, (block, cell))
    _check_one_spec_per_cell(grid, list(cells.values()))
    planned = tuple(cell for _, cell in cells.values())
    return Plan(
        grid=grid,
        pretrain=tuple(pretrains.values()),
        cells=planned,
        external=tuple(e for cell in planned for e in external_specs(cell, grid.evaluate_on)),
    )


def _check_one_spec_per_cell(grid: Grid, planned: list[tuple[GridBlock, CellSpec]]) -> None:
    """Refuse two cells that a report would take for one (same method, encoder, budget,
    seed, augmentation and setting) but whose specs differ, naming both blocks and the
    difference: the leaderboard would count one run twice under two schedules."""
    labels = dict(zip(map(id, grid.blocks), _block_labels(grid)))
    seen: dict[tuple[Any, ...], tuple[GridBlock, CellSpec]] = {}
    for block, cell in planned:
        identity = tuple(v for k, v in cell.describe().items() if k != "cell_key")
        if identity not in seen:
            seen[identity] = (block, cell)
            continue
        first_block, first = seen[identity]
        differences = "; ".join(_differences(to_jsonable(first), to_jsonable(cell)))
        both = f"{labels[id(first_block)]} and {labels[id(block)]}"
        raise GridError(
            f"{grid.source}: {both} both plan "
            f"{cell.method} on {cell.encoder}, budget {cell.budget}, seed {cell.seed}, "
            f"augmentation {cell.augmentation}, setting {cell.setting}, with different "
            f"specs ({differences}); a cell must come from one block: choose values "
            f"that only one of the grid's blocks holds, or edit the blocks in a grid "
            f"file"
        )


def _block_labels(grid: Grid) -> list[str]:
    """How errors name each block: ``block 'small'`` (its ``name``), or ``block blocks[1]``."""
    raw = read_yaml(grid.text) if grid.text else {}
    blocks = (raw.get("blocks") if isinstance(raw, dict) else None) or [{}]
    return [f"block {str(block.get('name', f'blocks[{i}]'))!r}" for i, block in enumerate(blocks)]


def _differences(first: Any, second: Any, path: str = "") -> list[str]:
    """``path: first vs second`` for every leaf where two JSON values differ."""
    if isinstance(first, dict) and isinstance(second, dict):
        return [
            line
            for key in sorted({*first, *second})
            for line in _differences(
                first.get(key), second.get(key), f"{path}.{key}" if path else key
            )
        ]
    return [] if first == second else [f"{path}: {first!r} vs {second!r}"]


ONLY_KEYS = ("method", "encoder", "budget", "seed", "augmentation", "setting")


def select_cells(cells: tuple[CellSpec, ...], only: str | None) -> tuple[CellSpec, ...]:
    """Keep the cells matching ``--only key=v1|v2,key=v`` (keys: `ONLY_KEYS`).

    A selection that keeps no cell is a `GridError` listing the values the grid has, so that a
    typo (``method=mmi``) stops the run instead of running nothing and reporting success.
    """
    if not only:
        return cells
    wanted: dict[str, set[str]] = {}
    for part in only.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ONLY_KEYS:
            raise GridError(
                f"--only: cannot read {part!r}; expected key=value with key in "
                f"{', '.join(ONLY_KEYS)}"
            )
        wanted.setdefault(key, set()).update(v.strip() for v in value.split("|"))
    picked = tuple(
        c for c in cells if all(str(getattr(c, k)) in values for k, values in wanted.items())
    )
    if not picked:
        present = "; ".join(
            f"{k}: {', '.join(sorted({str(getattr(c, k)) for c in cells}))}" for k in wanted
        )
        raise GridError(
            f"--only {only!r} selects none of the grid's {len(cells)} cells; the grid has {present}"
        )
    return picked
