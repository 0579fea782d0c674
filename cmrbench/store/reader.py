"""The reader side of the store: a run folder into the pandas tables the reports use.

Reports read only the store, never a model (DESIGN.md, "Results"). A cell is done when
its ``result.json`` exists; a cell folder with ``error.json`` failed; any other cell
folder is still pending. Only done cells contribute rows; the others are listed in
`Store.cells` so that reports can mark them missing.

One configuration per comparison: when ``run.json`` lists the cells of the run's grid
(``grid_cells``, written by ``cmrbench run``), only those cells are used, a grid cell
without a folder yet is pending, and every other cell folder is set aside as "not in this
grid" (a rerun with an edited grid, or another grid sharing the folder). Without that list,
done cells that share an identity (method, encoder, dataset, setting, augmentation, budget,
seed) but not a key are different configurations: all of them are set aside, never merged.
Several run folders merge into one `Store` in `cmrbench.store.merge`.

External test sets (``cells/<cell>/external/<set>/``) are read apart from the in-domain rows,
so that no in-domain statistic mixes in another dataset's subjects: `Store.external` holds
their rows (with ``test_dataset``, the set's label), only of the cells the report uses, and,
when ``run.json`` lists the grid's external evaluations (``grid_external``), only of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from cmrbench.store.errors import StoreError
from cmrbench.store.files import JsonlLog, read_json
from cmrbench.store.layout import (CATEGORY_COLUMNS, CELLS, CLINICAL, CLINICAL_COLUMNS, ERROR,
                                   EXTERNAL, EXTERNAL_CLINICAL_COLUMNS, EXTERNAL_SUBJECT_COLUMNS,
                                   OPTIONAL_SUBJECT_COLUMNS, PRETRAIN, RESULT, RUN, SLICE_ARRAYS,
                                   SLICES, SPEC, SUBJECT_COLUMNS, SUBJECTS, TEST_DATASET)
from cmrbench.store.records import CellResult, ErrorRecord, PretrainResult, RunRecord

CELL_SPEC_FIELDS = ("method", "encoder", "dataset", "setting", "augmentation", "budget", "seed")
CELL_COLUMNS = ["key", "folder", "status", *CELL_SPEC_FIELDS, "pretrain_key", "wall_time_s",
                "device", "threads", "error", "center", "pretrain_center", "fov_diagonal_mm",
                "protocol_version"]
PRETRAIN_COLUMNS = ["key", "folder", "status", "method", "encoder", "wall_time_s", "final_loss",
                    "device", "threads", "center"]
NOT_IN_GRID = "not in this grid"
CONFLICTING = ("another done cell has the same method, encoder, dataset, setting, augmentation, "
               "budget and seed but a different key (a different configuration): not merged")


@dataclass
class Store:
    """Everything a report needs from one run folder.

    Attributes:
        run_dir: the run folder.
        run: ``run.json`` as a `RunRecord`'s JSON (empty when absent).
        cells: one row per cell of the run (see the module docstring): ``key, folder,
            status`` (done | failed | pending; ``folder`` is empty for a grid cell not
            started), the spec fields ``method, encoder, dataset, setting, augmentation,
            budget, seed, pretrain_key``, ``wall_time_s``, ``device``, ``threads`` (the
            job's ``torch.get_num_threads()``; NaN when the store did not record it),
            ``error``, and ``center`` / ``pretrain_center``: the fine-tuning and
            pretraining specs' ``center`` field (e.g. "labels": views centred on the heart
            found from the labels), or "".
        set_aside: cell folders the report does not use, with the same columns plus ``reason``.
        subjects: the rows of every done cell's ``subjects.parquet`` (one per test subject ×
            phase × class; ``pathology`` when every cell's rows carry it; ``test_dataset``,
            the cell's own dataset here), plus ``hd95_worst_mm``: the cell's field-of-view
            diagonal, the value an undefined HD95 (one mask empty) counts as.
        clinical: the rows of every done cell's ``clinical.parquet`` (one per subject × quantity).
        pretrain: one row per pretraining job: ``key, folder, status, method, encoder,
            wall_time_s, final_loss, device, threads, center``.
        external: the rows of the used cells' done external evaluations, as ``subjects``
            (``test_dataset`` = the external set's label; ``dataset`` stays the cell's).
        external_clinical: their clinical rows, as ``clinical`` with ``test_dataset``.
    """

    run_dir: Path
    run: dict[str, Any]
    cells: pd.DataFrame
    set_aside: pd.DataFrame
    subjects: pd.DataFrame
    clinical: pd.DataFrame
    pretrain: pd.DataFrame
    external: pd.DataFrame = field(default_factory=lambda: _empty_frame(EXTERNAL_SUBJECT_COLUMNS))
    external_clinical: pd.DataFrame = field(
        default_factory=lambda: _empty_frame(EXTERNAL_CLINICAL_COLUMNS))


def read_jsonl(path: Path) -> pd.DataFrame:
    """One row per JSON line of a training log (``log.jsonl``); empty when the file is absent."""
    return pd.DataFrame(JsonlLog(path).records())


def read_run(run_dir: Path) -> RunRecord | None:
    """The run's ``run.json``, or None when the folder has none yet."""
    path = Path(run_dir) / RUN
    return RunRecord.from_json(read_json(path), path) if path.is_file() else None


def read_slices(cell_folder: Path) -> dict[str, np.ndarray] | None:
    """The qualitative slices of one cell (image float32 ``(K, H, W)``, reference and
    prediction uint8 ``(K, H, W)``, subject, phase, slice ``(K,)``), or None when absent."""
    path = cell_folder / SLICES
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            slices = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: cannot read the qualitative slices ({err})") from err
    expected = set(SLICE_ARRAYS)
    if not expected <= set(slices):
        raise StoreError(f"{path}: expected arrays {sorted(expected)}, found {sorted(slices)}")
    return slices


def load_store(run_dir: Path) -> Store:
    """Read ``run_dir`` (a results store) into a `Store`.

    Raises `StoreError` when the folder is not a store or a file breaks the layout.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CELLS).is_dir() and not (run_dir / RUN).is_file():
        raise StoreError(f"{run_dir}: not a results store (expected {RUN} and a {CELLS}/ folder)")
    record = read_run(run_dir)
    run = record.to_json() if record else {}
    cells, set_aside = one_configuration(_cell_table(run_dir / CELLS), run.get("grid_cells"),
                                         run_dir / RUN)
    done = cells[cells["status"] == "done"]["folder"].tolist()
    subject_files = [Path(f) / SUBJECTS for f in done]
    subjects = _with_test_dataset(_read_parquets(subject_files, SUBJECT_COLUMNS,
                                                 optional=OPTIONAL_SUBJECT_COLUMNS))
    fov = dict(zip(cells["key"], cells["fov_diagonal_mm"]))
    subjects["hd95_worst_mm"] = subjects["cell_key"].astype(str).map(fov).astype(float)
    clinical = _with_test_dataset(_read_parquets([Path(f) / CLINICAL for f in done],
                                                 CLINICAL_COLUMNS))
    external_dirs = _external_folders(done, run.get("grid_external"))
    external = _read_parquets([f / SUBJECTS for f in external_dirs], EXTERNAL_SUBJECT_COLUMNS,
                              optional=OPTIONAL_SUBJECT_COLUMNS)
    external["hd95_worst_mm"] = external["cell_key"].astype(str).map(fov).astype(float)
    return Store(run_dir=run_dir, run=run, cells=cells, set_aside=set_aside, subjects=subjects,
                 clinical=clinical, pretrain=_pretrain_table(run_dir / PRETRAIN),
                 external=external,
                 external_clinical=_read_parquets([f / CLINICAL for f in external_dirs],
                                                  EXTERNAL_CLINICAL_COLUMNS))


def _with_test_dataset(rows: pd.DataFrame) -> pd.DataFrame:
    """In-domain rows with ``test_dataset``: written since external test sets exist, and read
    as the cell's own dataset from stores written before."""
    if TEST_DATASET not in rows:
        rows[TEST_DATASET] = rows["dataset"].astype(str).astype("category")
    return rows


def _external_folders(cell_folders: list[str], grid_external: list[dict] | None) -> list[Path]:
    """The done external evaluations of ``cell_folders`` (those ``grid_external`` lists, when
    given): their folders, sorted."""
    keys = None if grid_external is None else {str(e.get("key")) for e in grid_external}
    found = []
    for cell in cell_folders:
        for result in sorted((Path(cell) / EXTERNAL).glob(f"*/{RESULT}")):
            folder = result.parent
            spec = read_json(folder / SPEC) if (folder / SPEC).is_file() else {}
            if keys is None or str(spec.get("key")) in keys:
                found.append(folder)
    return found


def one_configuration(cells: pd.DataFrame, grid_cells: list[dict] | None,
                      run_json: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the cell folders into those the report uses and those it sets aside (with a
    ``reason``), following the module docstring; grid cells without a folder become pending
    rows. ``grid_cells`` is ``run.json``'s list (None for stores written before it existed)."""
    if grid_cells is not None:
        if not isinstance(grid_cells, list) or not all(
                isinstance(c, dict) and "cell_key" in c for c in grid_cells):
            raise StoreError(f"{run_json}: grid_cells must be a list of objects with a cell_key")
        keys = [str(c["cell_key"]) for c in grid_cells]
        in_grid = cells["key"].isin(keys)
        set_aside = cells[~in_grid].assign(reason=NOT_IN_GRID)
        started = set(cells["key"])
        planned = [{**{f: str(c.get(f, "")) for f in CELL_SPEC_FIELDS if f != "seed"},
                    "seed": int(c.get("seed", 0)), "key": str(c["cell_key"]), "folder": "",
                    "status": "pending", "pretrain_key": c.get("pretrain_key"),
                    "wall_time_s": np.nan, "device": "", "threads": np.nan, "error": "", "center": "",
                    "pretrain_center": "", "fov_diagonal_mm": np.nan, "protocol_version": ""}
                   for c in grid_cells if str(c["cell_key"]) not in started]
        used = pd.concat([cells[in_grid], pd.DataFrame(planned, columns=CELL_COLUMNS)],
                         ignore_index=True) if planned else cells[in_grid]
        return used.reset_index(drop=True), set_aside.reset_index(drop=True)
    done = cells[cells["status"] == "done"]
    keys_per_identity = done.groupby(list(CELL_SPEC_FIELDS))["key"].transform("nunique")
    conflicting = done.index[keys_per_identity > 1]
    set_aside = cells.loc[conflicting].assign(reason=CONFLICTING)
    return cells.drop(index=conflicting).reset_index(drop=True), set_aside.reset_index(drop=True)


def _job_specs(parent: Path, kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each job folder under ``parent`` (sorted) with its parsed ``spec.json``; ``kind``
    ("cell", "pretraining") names the folder in the error when the spec is missing."""
    folders = sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    for folder in folders:
        if not (folder / SPEC).is_file():
            raise StoreError(f"{folder}: a {kind} folder without {SPEC}")
        yield folder, read_json(folder / SPEC)


def _cell_table(cells_dir: Path) -> pd.DataFrame:
    rows = []
    for folder, spec in _job_specs(cells_dir, "cell"):
        row = {"key": "", "folder": str(folder), "status": "pending", "pretrain_key": None,
               "wall_time_s": np.nan, "device": "", "threads": np.nan, "error": "",
               "center": _center(spec.get("finetune")) or _center(spec),
               "pretrain_center": _center(spec.get("pretrain")),
               "fov_diagonal_mm": _fov_diagonal_mm(spec.get("data"))}
        row.update(_cell_fields(spec, folder / SPEC))
        if (folder / RESULT).is_file():
            result = CellResult.from_json(read_json(folder / RESULT), folder / RESULT)
            row.update(status="done", wall_time_s=float(result.wall_time_s), device=result.device,
                       threads=_threads(result.threads), pretrain_key=result.pretrain_key)
        elif (folder / ERROR).is_file():
            row.update(status="failed",
                       error=ErrorRecord.from_json(read_json(folder / ERROR), folder / ERROR).error)
        rows.append(row)
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def _threads(threads: int | None) -> float:
    """A result's thread count for a table column (NaN: not recorded, an older store)."""
    return np.nan if threads is None else float(threads)


def _fov_diagonal_mm(data: object) -> float:
    """The diagonal of the preprocessed slices' field of view (``image_size × spacing_mm ×
    √2``; 452 mm at the study's 256 px of 1.25 mm): the worst-case HD95 of a structure one
    mask misses. NaN when the data spec does not say."""
    if not isinstance(data, dict):
        return np.nan
    try:
        return float(data["image_size"]) * float(data["spacing_mm"]) * float(np.sqrt(2.0))
    except (KeyError, TypeError, ValueError):
        return np.nan


def _center(spec: object) -> str:
    """A spec's ``center`` field (where augmented views were centred, e.g. "labels"), or ""
    when the spec has none (stores written before the field existed)."""
    return str(spec.get("center") or "") if isinstance(spec, dict) else ""


def _cell_fields(spec: dict[str, Any], spec_path: Path) -> dict[str, Any]:
    """The identifying fields of a cell spec; ``dataset`` and ``pretrain_key`` may also sit
    inside the nested ``data`` and ``pretrain`` specs, and ``setting`` defaults to "default"."""
    fields = dict(spec)
    if "dataset" not in fields and isinstance(spec.get("data"), dict):
        fields["dataset"] = spec["data"].get("dataset")
    fields.setdefault("setting", "default")
    absent = [f for f in ("key",) + CELL_SPEC_FIELDS if fields.get(f) is None]
    if absent:
        raise StoreError(f"{spec_path}: missing field(s) {absent} in the cell spec")
    nested = spec.get("pretrain")
    pretrain_key = spec.get("pretrain_key") or (nested.get("key") if isinstance(nested, dict) else None)
    row = {f: str(fields[f]) for f in CELL_SPEC_FIELDS if f != "seed"}
    row.update(key=str(fields["key"]), seed=int(fields["seed"]), pretrain_key=pretrain_key,
               protocol_version=str(fields.get("protocol_version", "")))
    return row


def _pretrain_table(pretrain_dir: Path) -> pd.DataFrame:
    rows = []
    for folder, spec in _job_specs(pretrain_dir, "pretraining"):
        row = {"key": str(spec.get("key", folder.name)), "folder": str(folder), "status": "pending",
               "method": str(spec.get("method", "")), "encoder": str(spec.get("encoder", "")),
               "wall_time_s": np.nan, "final_loss": np.nan, "device": "", "threads": np.nan,
               "center": _center(spec)}
        if (folder / RESULT).is_file():
            result = PretrainResult.from_json(read_json(folder / RESULT), folder / RESULT)
            row.update(status=result.status, wall_time_s=float(result.wall_time_s),
                       final_loss=float(result.final_loss), device=result.device,
                       threads=_threads(result.threads))
        rows.append(row)
    return pd.DataFrame(rows, columns=PRETRAIN_COLUMNS)


def _read_parquets(paths: list[Path], columns: tuple[str, ...],
                   optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Concatenate parquet files (one pyarrow dataset: multi-threaded, ~1 s for 1,000 cells),
    checking first that each file holds every expected column; the ``optional`` columns
    are kept when every file holds them."""
    if not paths:
        return _empty_frame(columns)
    absent_files = [p for p in paths if not p.is_file()]
    if absent_files:
        raise StoreError(f"{absent_files[0]}: missing, but its cell has result.json "
                         f"(a done cell must hold {absent_files[0].name})")
    dataset = ds.dataset([str(p) for p in paths], format="parquet")
    fragments = list(dataset.get_fragments())
    schemas = []
    for fragment in fragments:
        try:
            schema = fragment.physical_schema
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"{fragment.path}: cannot read parquet ({err})") from err
        absent = [c for c in columns if c not in schema.names]
        if absent:
            raise StoreError(f"{fragment.path}: missing column(s) {absent}; expected {list(columns)}")
        schemas.append(schema)
    columns += tuple(c for c in optional if all(c in schema.names for schema in schemas))
    try:
        table = dataset.to_table(columns=list(columns))
    except pa.ArrowException as err:
        reference = schemas[0]
        culprit = next((f.path for f, schema in zip(fragments, schemas) if any(
            schema.field(c).type != reference.field(c).type for c in columns)), fragments[0].path)
        raise StoreError(f"{culprit}: column types differ from those of {fragments[0].path} "
                         f"({err})") from err
    frame = table.to_pandas()
    for column in CATEGORY_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype(str).astype("category")
    frame["seed"] = frame["seed"].astype(int)
    frame["n_labelled"] = frame["n_labelled"].astype(int)
    return frame


def _empty_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    for column in ("dsc", "hd95_mm", "vol_pred_ml", "vol_ref_ml", "pred", "ref"):
        if column in frame:
            frame[column] = frame[column].astype(float)
    for column in ("seed", "n_labelled"):
        frame[column] = frame[column].astype(int)
    for column in ("seen_vendor", "annotated"):
        if column in frame:
            frame[column] = frame[column].astype(bool)
    return frame
