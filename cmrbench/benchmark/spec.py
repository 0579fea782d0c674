"""Frozen, fully resolved specs of pretraining jobs and fine-tuning cells, and their keys.

A spec's key is a hash of its canonical JSON: same spec, same key, same folder
(DESIGN.md, "Cell"). `PROTOCOL_VERSION` is part of every spec: bump it whenever a code
change would change results, so that stale cells are never reused silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cmrbench.optim import OptimConfig
from cmrbench.store.layout import (
    CELLS,
    EXTERNAL,
    PRETRAIN,
    cell_folder_name,
    external_folder_name,
    pretrain_folder_name,
)

# 4: the data as the study prepares it (layout, border crop, RandSolarized, fp16 per stage),
# optimizers hash only what they read, tied pretraining seeds. History: CHANGELOG.md.
PROTOCOL_VERSION = 4
KEY_LENGTH = 12

DICE_MODES = ("sample", "batch")
"""Soft Dice per image and class averaged over the batch (the study's), or pooled over the batch."""
CENTER_MODES = ("labels", "image")
"""Augmented slices are translated to the subject's label-derived heart centre (the study's), or
stay centred on the image (label-free)."""
PRECISIONS = ("bf16", "tf32", "fp32", "fp16")
"""bf16 autocast, fp32 with TF32 matmuls and convolutions, strict fp32, or fp16 autocast with a
gradient scaler (the study's SimCLR, DINO and MIM pretraining); all on CUDA only."""
PROTOCOL_CHOICES = {"dice": DICE_MODES, "center": CENTER_MODES, "precision": PRECISIONS}
POOL_SUBJECTS = ("train", "all")
"""Which subjects of a dataset join a pretraining pool: its pretraining pool (the training split,
plus unlabelled material where the adapter offers it) or every subject it lists."""
TEST_SUBJECTS = ("test", "all")
"""Which subjects of an external test set are scored: its test split or every subject."""
OMIT_AT_DEFAULT = "omit_at_default"
"""Field metadata: the field is left out of a spec's JSON (and key) while it holds its default,
so that adding it kept every earlier key."""


def freeze(mapping: Any) -> tuple[tuple[str, Any], ...]:
    """A dict as a sorted tuple of pairs, so that specs stay hashable."""
    return tuple(sorted(dict(mapping or {}).items()))


def canonical_json(obj: Any) -> str:
    """Deterministic JSON of a spec (sorted keys, no spaces)."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))


def to_jsonable(obj: Any) -> Any:
    """Specs → plain JSON types (frozen pair tuples become dicts; fields marked
    `OMIT_AT_DEFAULT` are left out while they hold their default). An `OptimConfig` gives
    only the settings that act on the run (`OptimConfig.settings`): a setting its optimizer
    does not read is not part of a key."""
    if isinstance(obj, OptimConfig):
        return {name: to_jsonable(value) for name, value in obj.settings().items()}
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get(OMIT_AT_DEFAULT) and getattr(obj, f.name) == f.default)
        }
    if (
        isinstance(obj, tuple)
        and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in obj)
        and obj
    ):
        return {k: to_jsonable(v) for k, v in obj}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise `ValueError` naming ``name``, its ``value`` and the ``allowed`` values."""
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def check_protocol_choices(options: dict[str, Any]) -> None:
    """Raise `ValueError` naming the option, its value and the valid ones if any option in
    `PROTOCOL_CHOICES` (``dice``, ``center``, ``precision``) has a value it does not know."""
    for name, allowed in PROTOCOL_CHOICES.items():
        if name in options:
            check_choice(name, options[name], allowed)


def spec_key(obj: Any) -> str:
    """The first `KEY_LENGTH` hex digits of the SHA-256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class DataSpec:
    """Which data, preprocessed how (PAPER.md "Preprocessing": 256 px at 1.25 mm)."""

    dataset: str = "phantom"
    root: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    image_size: int = 256
    spacing_mm: float = 1.25
    exclude: tuple[str, ...] = ()  # subjects skipped with --skip-bad-subjects
    # "small": the grid was shrunk to CPU size by `grid.scale_grid` (``run --scale small``)
    scale: str = field(default="", metadata={OMIT_AT_DEFAULT: True})


@dataclass(frozen=True)
class PoolSource:
    """One dataset of a pretraining pool: every frame of its ``subjects`` (`POOL_SUBJECTS`)."""

    data: DataSpec
    subjects: str = "train"

    def __post_init__(self) -> None:
        check_choice("pool subjects", self.subjects, POOL_SUBJECTS)


@dataclass(frozen=True)
class ExternalSet:
    """A test set beyond the cell's own dataset: its ``subjects`` (`TEST_SUBJECTS`) of
    ``data``, scored at the cell's geometry; ``label`` is its ``test_dataset`` column."""

    label: str
    data: DataSpec
    subjects: str = "test"

    def __post_init__(self) -> None:
        check_choice("evaluate_on subjects", self.subjects, TEST_SUBJECTS)


@dataclass(frozen=True)
class PretrainSpec:
    """One pretraining job: method × encoder × data × seed (independent of budgets).

    Fully resolved at planning time: ``hparams`` holds EVERY field of the method's
    configuration (its defaults with the grid's overrides applied, not only the overrides),
    ``net_kwargs`` the method's extra `create_net` arguments, ``optim`` the optimizer for
    the encoder's family, and ``method_version`` the method's ``version``, so that a
    changed default, network or method code gives a new key.

    ``center`` (`CENTER_MODES`): the study centred every pretraining view on the subject's
    label-derived heart centre, so its "self-supervised" views used labels; ``image`` is the
    label-free variant. ``precision`` (`PRECISIONS`): the study used fp16 with a GradScaler
    for SimCLR, DINO and MIM and fp32 for PCL.

    ``pool`` lists the datasets whose frames form the unlabelled pool (the grid's
    ``pretrain.pool``); empty, the default, is the pretraining pool of ``data`` alone (what
    every job pretrained on before pools existed, so its key is unchanged).
    """

    method: str
    encoder: str
    data: DataSpec
    epochs: float
    batch_size: int
    optim: OptimConfig
    hparams: tuple[tuple[str, Any], ...] = ()
    net_kwargs: tuple[tuple[str, Any], ...] = ()
    method_version: int = 1
    seed: int = 0
    center: str = "labels"
    precision: str = "bf16"
    protocol_version: int = PROTOCOL_VERSION
    pool: tuple[PoolSource, ...] = field(default=(), metadata={OMIT_AT_DEFAULT: True})
    store_folder: ClassVar[str] = PRETRAIN

    def __post_init__(self) -> None:
        check_protocol_choices({"center": self.center, "precision": self.precision})

    @property
    def pool_sources(self) -> tuple[PoolSource, ...]:
        """The pool's datasets: ``pool``, or the fine-tuning dataset's pretraining pool."""
        return self.pool or (PoolSource(self.data),)

    @property
    def key(self) -> str:
        return spec_key(self)

    @property
    def folder_name(self) -> str:
        return pretrain_folder_name(self.method, self.encoder, self.key)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning schedule (PAPER.md "Network and fine-tuning").

    SGD, Nesterov, momentum 0.99, weight decay 3e-5, poly decay (power 0.9), batch 32,
    1000 epochs of the labelled slices (an epoch is ``max(1, n // batch_size)`` steps, as
    the study's ``drop_last`` loaders); lr 0.01 from scratch, 0.005 after pretraining.
    ``val_every`` epochs the validation loss is logged. Protocol options (defaults are the
    study's, except ``precision``; docs/protocol.md): ``dice`` in `DICE_MODES`, ``center``
    in `CENTER_MODES`, ``precision`` in `PRECISIONS` (the study fine-tuned in fp32).
    """

    epochs: float = 1000
    batch_size: int = 32
    optim: OptimConfig = OptimConfig(
        optimizer="sgd", lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5, schedule="poly"
    )
    val_every: int = 50
    layer_decay: float | None = None
    dice: str = "sample"
    center: str = "labels"
    precision: str = "bf16"

    def __post_init__(self) -> None:
        check_protocol_choices(
            {"dice": self.dice, "center": self.center, "precision": self.precision}
        )


@dataclass(frozen=True)
class CheckpointSpec:
    """An external pretrained checkpoint that seeds a cell instead of a pretraining job.

    ``path`` is absolute; ``sha256`` is the file's digest, so a replaced file gives new
    keys; ``format`` is how its tensors are read (``cmrbench``: a pretraining job's
    ``checkpoint.pt``; ``timm``: a timm ViT state dict); ``parts`` are the `SegNet` parts
    it seeds; with ``strict`` false, net tensors it cannot fill stay randomly initialised.
    """

    name: str
    path: str
    sha256: str
    format: str
    encoder: str
    strict: bool = True
    parts: tuple[str, ...] = ("encoder",)


@dataclass(frozen=True)
class CellSpec:
    """One fine-tuning cell: method × encoder × budget × augmentation × seed × setting.

    ``transfers`` names the net parts the pretrained weights seed (``("encoder",)``,
    ``("encoder", "decoder")``; empty without pretraining).
    """

    method: str
    encoder: str
    data: DataSpec
    budget: str
    seed: int
    augmentation: str
    setting: str
    finetune: FinetuneConfig
    pretrain: PretrainSpec | None = None
    transfers: tuple[str, ...] = ()
    protocol_version: int = PROTOCOL_VERSION
    checkpoint: CheckpointSpec | None = None  # an external checkpoint (then method = its name)
    store_folder: ClassVar[str] = CELLS

    @property
    def key(self) -> str:
        return spec_key(self)

    @property
    def pretrain_key(self) -> str | None:
        return self.pretrain.key if self.pretrain else None

    @property
    def folder_name(self) -> str:
        return cell_folder_name(
            self.method,
            self.encoder,
            self.budget,
            self.augmentation,
            self.setting,
            self.seed,
            self.key,
        )

    def describe(self) -> dict[str, Any]:
        """The identifying columns every result row carries."""
        return {
            "cell_key": self.key,
            "method": self.method,
            "encoder": self.encoder,
            "dataset": self.data.dataset,
            "setting": self.setting,
            "augmentation": self.augmentation,
            "budget": self.budget,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ExternalSpec:
    """One cell scored on one external test set (the grid's ``evaluate_on``), from the
    cell's fine-tuned weights.

    Its own job, keyed apart from the cell, so that adding an external set to a finished
    grid leaves every cell key as it was; its files live in the cell's folder
    (``cells/<cell>/external/<label>_<subjects>_<key>/``).
    """

    cell_key: str
    cell_folder: str
    external: ExternalSet
    protocol_version: int = PROTOCOL_VERSION

    @property
    def key(self) -> str:
        return spec_key(self)

    @property
    def store_folder(self) -> str:
        return f"{CELLS}/{self.cell_folder}/{EXTERNAL}"

    @property
    def folder_name(self) -> str:
        return external_folder_name(self.external.label, self.external.subjects, self.key)


def external_specs(cell: CellSpec, sets: tuple[ExternalSet, ...]) -> tuple[ExternalSpec, ...]:
    """The external evaluations of ``cell``: one per external set."""
    return tuple(
        ExternalSpec(cell_key=cell.key, cell_folder=cell.folder_name, external=s) for s in sets
    )


DERIVED_FIELDS = ("key", "pretrain_key", "dataset")


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples a frozen spec holds (recursively)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _frozen_tuples(mapping: Any) -> tuple[tuple[str, Any], ...]:
    return freeze({k: _tuples(v) for k, v in (mapping or {}).items()})


def _optim(d: dict[str, Any]) -> OptimConfig:
    return OptimConfig(**{k: _tuples(v) for k, v in d.items()})


def spec_from_json(data: dict[str, Any]) -> CellSpec | PretrainSpec | ExternalSpec:
    """Rebuild a spec from its JSON (``spec.json``; derived fields such as ``key`` are
    dropped and recomputed)."""
    data = {k: v for k, v in data.items() if k not in DERIVED_FIELDS}

    def data_spec(d: dict[str, Any]) -> DataSpec:
        return DataSpec(
            **{**d, "options": freeze(d.get("options")), "exclude": tuple(d.get("exclude", ()))}
        )

    def pretrain(d: dict[str, Any]) -> PretrainSpec:
        return PretrainSpec(
            **{
                **d,
                "data": data_spec(d["data"]),
                "optim": _optim(d["optim"]),
                "hparams": _frozen_tuples(d.get("hparams")),
                "net_kwargs": _frozen_tuples(d.get("net_kwargs")),
                "pool": tuple(
                    PoolSource(data_spec(p["data"]), p["subjects"]) for p in d.get("pool", ())
                ),
            }
        )

    if "cell_key" in data:
        external = data["external"]
        return ExternalSpec(
            **{**data, "external": ExternalSet(**{**external, "data": data_spec(external["data"])})}
        )
    if "budget" not in data:
        return pretrain(data)
    finetune = data["finetune"]
    checkpoint = data.get("checkpoint")
    return CellSpec(
        **{
            **data,
            "data": data_spec(data["data"]),
            "finetune": FinetuneConfig(**{**finetune, "optim": _optim(finetune["optim"])}),
            "pretrain": pretrain(data["pretrain"]) if data.get("pretrain") else None,
            "transfers": tuple(data.get("transfers", ())),
            "checkpoint": CheckpointSpec(**{**checkpoint, "parts": tuple(checkpoint["parts"])})
            if checkpoint
            else None,
        }
    )


__all__ = [
    "PROTOCOL_VERSION",
    "DICE_MODES",
    "CENTER_MODES",
    "PRECISIONS",
    "PROTOCOL_CHOICES",
    "POOL_SUBJECTS",
    "TEST_SUBJECTS",
    "check_protocol_choices",
    "DataSpec",
    "PoolSource",
    "ExternalSet",
    "PretrainSpec",
    "FinetuneConfig",
    "CheckpointSpec",
    "CellSpec",
    "ExternalSpec",
    "external_specs",
    "canonical_json",
    "spec_key",
    "spec_from_json",
    "freeze",
]
