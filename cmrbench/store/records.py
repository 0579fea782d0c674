"""Typed records of the store's JSON files: ``result.json`` (cells and pretraining jobs),
``error.json`` and ``run.json``.

Each record is a frozen dataclass whose fields, in order, are the file's keys. ``to_json``
gives the plain dict the writer stores; ``from_json`` checks a parsed file and raises a
`StoreError` that names the file and the missing or malformed field. Fields that stores
written before them lack are listed in a record's ``LEGACY`` with the value they read as
(``None``: not recorded), so old stores stay readable; every other field is required.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cmrbench.store.errors import StoreError

R = TypeVar("R", bound="Record")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """Base of the store's JSON records (see the module docstring)."""

    LEGACY: ClassVar[dict[str, Any]] = {}

    def to_json(self) -> dict[str, Any]:
        """The record as the plain JSON object its file holds (keys in field order)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls: type[R], data: Any, path: Path | str) -> R:
        """The record in ``data`` (a parsed ``path``); `StoreError` names ``path`` and the
        field when a required field is missing or a value has the wrong type. Keys the
        record does not know are ignored (a newer writer may add some)."""
        if not isinstance(data, dict):
            raise StoreError(
                f"{path}: expected a JSON object ({cls.__name__}), found {type(data).__name__}"
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in data:
                value = data[field.name]
            elif field.name in cls.LEGACY:
                value = cls.LEGACY[field.name]
            else:
                raise StoreError(
                    f"{path}: missing field {field.name!r} "
                    f"(a {cls.__name__} needs {[f.name for f in dataclasses.fields(cls)]})"
                )
            if not _fits(value, hints[field.name]):
                raise StoreError(
                    f"{path}: field {field.name!r} is {value!r}; expected "
                    f"{_type_name(hints[field.name])}"
                )
            values[field.name] = value
        return cls(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type ``hint`` (JSON numbers: an int is a valid float)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin or hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else hint.__name__


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainResult(Record):
    """``pretrain/<job>/result.json``: a pretraining job is done (written last).

    ``device`` names the device (CPU cores and threads, or the GPU); ``threads`` is
    ``torch.get_num_threads()`` of the process that ran the job (CPU float sums depend on
    it); ``precision_run`` is the precision autocast really used (fp32 off CUDA).
    """

    LEGACY: ClassVar[dict[str, Any]] = {
        "precision": None,
        "precision_run": None,
        "center": None,
        "views_centred_with_labels": None,
        "threads": None,
    }

    key: str
    status: str = "done"
    method: str
    encoder: str
    wall_time_s: float
    final_loss: float
    device: str
    pool_slices: int
    precision: str | None
    precision_run: str | None
    center: str | None
    views_centred_with_labels: bool | None
    threads: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CellResult(Record):
    """``cells/<cell>/result.json``: a cell is done (written last, after its tables).

    The identifying fields (method … seed, ``n_labelled``) match the rows of its tables;
    ``train_subjects`` are the labelled subjects drawn; ``init_weights_sha256`` hashes the
    net before fine-tuning; ``device`` and ``threads`` as in `PretrainResult`.
    """

    LEGACY: ClassVar[dict[str, Any]] = {
        "precision": None,
        "precision_run": None,
        "dice": None,
        "center": None,
        "pretrain_views_centred_with_labels": None,
        "threads": None,
    }

    key: str
    status: str = "done"
    method: str
    encoder: str
    dataset: str
    setting: str
    augmentation: str
    budget: str
    seed: int
    n_labelled: int
    pretrain_key: str | None
    init_weights_sha256: str
    wall_time_s: float
    device: str
    train_subjects: list[str]
    train_slices: int
    train_loss_final: float
    val_loss_final: float
    mean_dsc: float
    protocol_version: int
    precision: str | None
    precision_run: str | None
    dice: str | None
    center: str | None
    pretrain_views_centred_with_labels: bool | None
    threads: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExternalResult(Record):
    """``cells/<cell>/external/<set>/result.json``: a cell's scores on one external test set
    are done (written last, after its tables).

    ``test_dataset`` is the set's label (the rows' column), ``dataset`` its adapter;
    ``subjects`` is ``test`` or ``all``; ``weights`` says where the fine-tuned weights came
    from: ``kept`` (the cell's ``model.pt``) or ``refit`` (the done cell fine-tuned again,
    its in-domain scores untouched); ``refit_matches`` then says whether the refit's final
    training loss equals the cell's own (same device and threads give the same weights).
    """

    LEGACY: ClassVar[dict[str, Any]] = {}

    key: str
    status: str = "done"
    cell_key: str
    test_dataset: str
    dataset: str
    subjects: str
    n_subjects: int
    mean_dsc: float
    wall_time_s: float
    device: str
    threads: int
    weights: str
    refit_matches: bool | None
    protocol_version: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ErrorRecord(Record):
    """``error.json``: the job failed (``error`` is ``"<ExceptionType>: <message>"``)."""

    key: str
    error: str
    traceback: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunRecord(Record):
    """``run.json``: the provenance of a run.

    ``grid_yaml`` is the grid's text; ``packages`` maps package → version (None when not
    installed); ``finished`` is None while the run goes on; ``skipped_subjects`` are
    ``{dataset, subject, reason}`` objects; ``methods`` maps a method or checkpoint name to
    ``{doc, paper, source}``; ``planned_cells`` are the cells this invocation ran and
    ``grid_cells`` every cell of the grid (each a cell's identifying columns plus
    ``pretrain_key``); reports compare only the grid's cells. ``grid_external`` lists the
    grid's external evaluations (``key``, ``cell_key``, ``test_dataset``); reports use only
    those (None: a store written before external test sets existed: all are used).
    """

    LEGACY: ClassVar[dict[str, Any]] = {
        "methods": {},
        "planned_cells": None,
        "grid_cells": None,
        "grid_external": None,
    }

    grid: str
    grid_yaml: str
    cmrbench_version: str
    git_commit: str | None
    packages: dict[str, str | None]
    python: str
    platform: str
    device: str
    command: str
    started: str
    finished: str | None
    skipped_subjects: list[dict[str, str]]
    methods: dict[str, dict[str, str]]
    planned_cells: list[dict[str, Any]] | None
    grid_cells: list[dict[str, Any]] | None
    grid_external: list[dict[str, Any]] | None = None
