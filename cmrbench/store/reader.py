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

One bad file never stops a report: a file the reader cannot read (a truncated ``result.json``
after a disk fault, a parquet file without its rows, a folder without its spec) is listed in
`Store.unreadable` (which folder, which file, why), and the cell it belongs to gets the status
"unreadable" and no rows, so it is never averaged; everything else is read as usual.
``cmrbench run`` moves such a ``result.json`` aside and computes the cell again
(`cmrbench.store.StoreWriter.set_aside_unreadable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cmrbench.store.errors import StoreError
from cmrbench.store.files import JsonlLog, read_json
from cmrbench.store.layout import (
    CATEGORY_COLUMNS,
    CELLS,
    CLINICAL,
    CLINICAL_COLUMNS,
    ERROR,
    EXTERNAL,
    EXTERNAL_CLINICAL_COLUMNS,
    EXTERNAL_SUBJECT_COLUMNS,
    OPTIONAL_SUBJECT_COLUMNS,
    PRETRAIN,
    RESULT,
    RUN,
    SLICE_ARRAYS,
    SLICES,
    SPEC,
    SUBJECT_COLUMNS,
    SUBJECTS,
    TEST_DATASET,
)
from cmrbench.store.records import CellResult, ErrorRecord, PretrainResult, RunRecord

CELL_SPEC_FIELDS = ("method", "encoder", "dataset", "setting", "augmentation", "budget", "seed")
CELL_COLUMNS = [
    "key",
    "folder",
    "status",
    *CELL_SPEC_FIELDS,
    "pretrain_key",
    "wall_time_s",
    "device",
    "threads",
    "error",
    "center",
    "pretrain_center",
    "fov_diagonal_mm",
    "protocol_version",
    "scale",
]
PRETRAIN_COLUMNS = [
    "key",
    "folder",
    "status",
    "method",
    "encoder",
    "wall_time_s",
    "final_loss",
    "device",
    "threads",
    "center",
]
UNREADABLE_COLUMNS = ["kind", "key", "folder", "file", "reason"]
UNREADABLE = "unreadable"
NOT_IN_GRID = "not in this grid"
CONFLICTING = (
    "another done cell has the same method, encoder, dataset, setting, augmentation, "
    "budget and seed but a different key (a different configuration): not merged"
)


@dataclass
class Store:
    """Everything a report needs from one run folder.

    Attributes:
        run_dir: the run folder.
        run: ``run.json`` as a `RunRecord`'s JSON (empty when absent).
        cells: one row per cell of the run (see the module docstring): ``key, folder,
            status`` (done | failed | pending | unreadable; ``folder`` is empty for a grid
            cell not started), the spec fields ``method, encoder, dataset, setting, augmentation,
            budget, seed, pretrain_key``, ``wall_time_s``, ``device``, ``threads`` (the
            job's ``torch.get_num_threads()``; NaN when the store did not record it),
            ``error``, and ``center`` / ``pretrain_center``: the fine-tuning and
            pretraining specs' ``center`` field (e.g. "labels": views centred on the heart
            found from the labels), or ""; ``scale``: the data spec's ``scale`` ("small" for a
            grid shrunk to CPU size by ``run --scale small``), or "".
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
        unreadable: one row per file the reader could not read: ``kind`` (cell, pretraining
            job, external evaluation, run), ``key`` (the job's, from its folder name),
            ``folder`` (relative to the run folder), ``file`` and ``reason``; such a cell has
            the status "unreadable" and no rows, and such an external evaluation gives no rows.
        parts: for a store merged from several run folders (`cmrbench.store.merge_stores`),
            each run's own store, in the order of ``run["runs"]``; empty for one run folder.
    """

    run_dir: Path
    run: dict[str, Any]
    cells: pd.DataFrame
    set_aside: pd.DataFrame
    subjects: pd.DataFrame
    clinical: pd.DataFrame
    pretrain: pd.DataFrame
    unreadable: pd.DataFrame
    external: pd.DataFrame = field(default_factory=lambda: _empty_frame(EXTERNAL_SUBJECT_COLUMNS))
    external_clinical: pd.DataFrame = field(
        default_factory=lambda: _empty_frame(EXTERNAL_CLINICAL_COLUMNS)
    )
    parts: tuple[Store, ...] = ()


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
    """Read ``run_dir`` (a results store) into a `Store`; files it cannot read are listed in
    `Store.unreadable` and left out (see the module docstring).

    Raises `StoreError` when the folder is not a store.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CELLS).is_dir() and not (run_dir / RUN).is_file():
        raise StoreError(f"{run_dir}: not a results store (expected {RUN} and a {CELLS}/ folder)")
    problems: list[dict[str, str]] = []
    run = _run_json(run_dir, problems)
    cells, set_aside = one_configuration(
        _cell_table(run_dir / CELLS, problems), run.get("grid_cells"), run_dir / RUN
    )
    cells = _mark_unreadable(cells, problems)
    done = [Path(f) for f in cells.loc[cells["status"] == "done", "folder"]]
    subjects, bad_subjects = _read_parquets(
        [f / SUBJECTS for f in done], SUBJECT_COLUMNS, optional=OPTIONAL_SUBJECT_COLUMNS
    )
    clinical, bad_clinical = _read_parquets([f / CLINICAL for f in done], CLINICAL_COLUMNS)
    for path, reason in {**bad_subjects, **bad_clinical}.items():
        problems.append(_problem("cell", path.parent, path.name, reason))
    if bad_subjects or bad_clinical:  # a cell with one unreadable table gives no rows
        cells = _mark_unreadable(cells, problems)
        used = set(cells.loc[cells["status"] == "done", "key"])
        subjects = subjects[subjects["cell_key"].astype(str).isin(used)].reset_index(drop=True)
        clinical = clinical[clinical["cell_key"].astype(str).isin(used)].reset_index(drop=True)
        done = [Path(f) for f in cells.loc[cells["status"] == "done", "folder"]]
    fov = dict(zip(cells["key"], cells["fov_diagonal_mm"]))
    subjects = _with_test_dataset(subjects)
    subjects["hd95_worst_mm"] = subjects["cell_key"].astype(str).map(fov).astype(float)
    external, external_clinical = _external_tables(
        _external_folders(done, run.get("grid_external"), problems), problems
    )
    external["hd95_worst_mm"] = external["cell_key"].astype(str).map(fov).astype(float)
    return Store(
        run_dir=run_dir,
        run=run,
        cells=cells,
        set_aside=set_aside,
        subjects=subjects,
        clinical=_with_test_dataset(clinical),
        pretrain=_pretrain_table(run_dir / PRETRAIN, problems),
        unreadable=pd.DataFrame(problems, columns=UNREADABLE_COLUMNS),
        external=external,
        external_clinical=external_clinical,
    )


def _external_tables(
    folders: list[Path], problems: list[dict[str, str]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The subject and clinical rows of the external evaluations in ``folders``; one with an
    unreadable table is listed in ``problems`` and gives no rows at all."""
    while True:
        external, bad = _read_parquets(
            [f / SUBJECTS for f in folders],
            EXTERNAL_SUBJECT_COLUMNS,
            optional=OPTIONAL_SUBJECT_COLUMNS,
        )
        external_clinical, bad_clinical = _read_parquets(
            [f / CLINICAL for f in folders], EXTERNAL_CLINICAL_COLUMNS
        )
        if not bad and not bad_clinical:
            return external, external_clinical
        for path, reason in {**bad, **bad_clinical}.items():
            problems.append(_problem("external evaluation", path.parent, path.name, reason))
        folders = [f for f in folders if f not in {p.parent for p in (*bad, *bad_clinical)}]


def _with_test_dataset(rows: pd.DataFrame) -> pd.DataFrame:
    """In-domain rows with ``test_dataset``: written since external test sets exist, and read
    as the cell's own dataset from stores written before."""
    if TEST_DATASET not in rows:
        rows[TEST_DATASET] = rows["dataset"].astype(str).astype("category")
    return rows


def _external_folders(
    cell_folders: list[Path], grid_external: list[dict] | None, problems: list[dict[str, str]]
) -> list[Path]:
    """The done external evaluations of ``cell_folders`` (those ``grid_external`` lists, when
    given): their folders, sorted; one whose ``spec.json`` cannot be read is listed in
    ``problems`` and left out."""
    keys = None if grid_external is None else {str(e.get("key")) for e in grid_external}
    found = []
    for cell in cell_folders:
        for result in sorted((cell / EXTERNAL).glob(f"*/{RESULT}")):
            folder = result.parent
            try:
                spec = read_json(folder / SPEC) if (folder / SPEC).is_file() else {}
            except StoreError as err:
                problems.append(
                    _problem("external evaluation", folder, SPEC, _reason(err, folder / SPEC))
                )
                continue
            if keys is None or str(spec.get("key")) in keys:
                found.append(folder)
    return found


def _problem(kind: str, folder: Path, file: str, reason: str) -> dict[str, str]:
    """One row of `Store.unreadable`: the job's folder relative to the run folder (``.`` for
    ``run.json``; ``cells/<cell>/external/<set>`` for an external evaluation); a job's key is
    the last part of its folder's name."""
    if kind == "run":
        return {"kind": kind, "key": "", "folder": ".", "file": file, "reason": reason}
    depth = 4 if kind == "external evaluation" else 2
    return {
        "kind": kind,
        "key": folder.name.rsplit("_", 1)[-1],
        "folder": "/".join(folder.parts[-depth:]),
        "file": file,
        "reason": reason,
    }


def _reason(err: StoreError, path: Path) -> str:
    """A `StoreError`'s message without the path it starts with (the table names the file)."""
    return str(err).removeprefix(f"{path}: ")


def _run_json(run_dir: Path, problems: list[dict[str, str]]) -> dict[str, Any]:
    """``run.json`` as JSON; {} (no grid list) when it is absent or cannot be read."""
    try:
        record = read_run(run_dir)
    except StoreError as err:
        problems.append(_problem("run", run_dir, RUN, _reason(err, run_dir / RUN)))
        return {}
    return record.to_json() if record else {}


def _mark_unreadable(cells: pd.DataFrame, problems: list[dict[str, str]]) -> pd.DataFrame:
    """Cells with an unreadable file: status "unreadable", the file and reason as their
    ``error`` (also a grid cell whose folder holds no readable spec)."""
    reasons = {p["key"]: p for p in problems if p["kind"] == "cell"}
    hit = cells["key"].isin(reasons) & (cells["status"] != UNREADABLE)
    if not hit.any():
        return cells
    cells = cells.copy()
    for index in cells.index[hit]:
        problem = reasons[str(cells.at[index, "key"])]
        cells.loc[index, ["status", "error"]] = [
            UNREADABLE,
            f"{problem['file']}: {problem['reason']}",
        ]
    return cells


def one_configuration(
    cells: pd.DataFrame, grid_cells: list[dict] | None, run_json: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the cell folders into those the report uses and those it sets aside (with a
    ``reason``), following the module docstring; grid cells without a folder become pending
    rows. ``grid_cells`` is ``run.json``'s list (None for stores written before it existed)."""
    if grid_cells is not None:
        if not isinstance(grid_cells, list) or not all(
            isinstance(c, dict) and "cell_key" in c for c in grid_cells
        ):
            raise StoreError(f"{run_json}: grid_cells must be a list of objects with a cell_key")
        keys = [str(c["cell_key"]) for c in grid_cells]
        in_grid = cells["key"].isin(keys)
        set_aside = cells[~in_grid].assign(reason=NOT_IN_GRID)
        started = set(cells["key"])
        planned = [
            {
                **{f: str(c.get(f, "")) for f in CELL_SPEC_FIELDS if f != "seed"},
                "seed": int(c.get("seed", 0)),
                "key": str(c["cell_key"]),
                "folder": "",
                "status": "pending",
                "pretrain_key": c.get("pretrain_key"),
                "wall_time_s": np.nan,
                "device": "",
                "threads": np.nan,
                "error": "",
                "center": "",
                "pretrain_center": "",
                "fov_diagonal_mm": np.nan,
                "protocol_version": "",
                "scale": "",
            }
            for c in grid_cells
            if str(c["cell_key"]) not in started
        ]
        used = (
            pd.concat(
                [cells[in_grid], pd.DataFrame(planned, columns=CELL_COLUMNS)], ignore_index=True
            )
            if planned
            else cells[in_grid]
        )
        return used.reset_index(drop=True), set_aside.reset_index(drop=True)
    done = cells[cells["status"] == "done"]
    keys_per_identity = done.groupby(list(CELL_SPEC_FIELDS))["key"].transform("nunique")
    conflicting = done.index[keys_per_identity > 1]
    set_aside = cells.loc[conflicting].assign(reason=CONFLICTING)
    return cells.drop(index=conflicting).reset_index(drop=True), set_aside.reset_index(drop=True)


def _job_specs(
    parent: Path, kind: str, problems: list[dict[str, str]]
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each job folder under ``parent`` (sorted) with its parsed ``spec.json``; a folder whose
    spec is missing or unreadable is a problem of ``kind`` ("cell", "pretraining job")."""
    folders = sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    for folder in folders:
        try:
            if not (folder / SPEC).is_file():
                raise StoreError(f"{folder / SPEC}: missing (a {kind} folder holds its {SPEC})")
            yield folder, read_json(folder / SPEC)
        except StoreError as err:
            problems.append(_problem(kind, folder, SPEC, _reason(err, folder / SPEC)))


def _cell_table(cells_dir: Path, problems: list[dict[str, str]]) -> pd.DataFrame:
    rows = []
    for folder, spec in _job_specs(cells_dir, "cell", problems):
        row = {
            "key": "",
            "folder": str(folder),
            "status": "pending",
            "pretrain_key": None,
            "wall_time_s": np.nan,
            "device": "",
            "threads": np.nan,
            "error": "",
            "center": _center(spec.get("finetune")) or _center(spec),
            "pretrain_center": _center(spec.get("pretrain")),
            "fov_diagonal_mm": _fov_diagonal_mm(spec.get("data")),
            "scale": _scale(spec.get("data")),
        }
        try:
            row.update(_cell_fields(spec, folder / SPEC))
        except StoreError as err:
            problems.append(_problem("cell", folder, SPEC, _reason(err, folder / SPEC)))
            continue
        try:
            if (folder / RESULT).is_file():
                result = CellResult.from_json(read_json(folder / RESULT), folder / RESULT)
                row.update(
                    status="done",
                    wall_time_s=float(result.wall_time_s),
                    device=result.device,
                    threads=_threads(result.threads),
                    pretrain_key=result.pretrain_key,
                )
            elif (folder / ERROR).is_file():
                row.update(
                    status="failed",
                    error=ErrorRecord.from_json(read_json(folder / ERROR), folder / ERROR).error,
                )
        except StoreError as err:
            file = RESULT if (folder / RESULT).is_file() else ERROR
            problems.append(_problem("cell", folder, file, _reason(err, folder / file)))
        rows.append(row)
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def _threads(threads: int | None) -> float:
    """A result's thread count for a table column (NaN: not recorded, an older store)."""
    return np.nan if threads is None else float(threads)


def _scale(data: object) -> str:
    """A data spec's ``scale`` ("small": the grid was shrunk to CPU size), or ""."""
    return str(data.get("scale") or "") if isinstance(data, dict) else ""


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
    try:
        seed = int(fields["seed"])
    except (TypeError, ValueError) as err:
        raise StoreError(f"{spec_path}: seed {fields['seed']!r} is not a whole number") from err
    nested = spec.get("pretrain")
    pretrain_key = spec.get("pretrain_key") or (
        nested.get("key") if isinstance(nested, dict) else None
    )
    row: dict[str, Any] = {f: str(fields[f]) for f in CELL_SPEC_FIELDS if f != "seed"}
    row.update(
        key=str(fields["key"]),
        seed=seed,
        pretrain_key=pretrain_key,
        protocol_version=str(fields.get("protocol_version", "")),
    )
    return row


def _pretrain_table(pretrain_dir: Path, problems: list[dict[str, str]]) -> pd.DataFrame:
    rows = []
    for folder, spec in _job_specs(pretrain_dir, "pretraining job", problems):
        row = {
            "key": str(spec.get("key", folder.name)),
            "folder": str(folder),
            "status": "pending",
            "method": str(spec.get("method", "")),
            "encoder": str(spec.get("encoder", "")),
            "wall_time_s": np.nan,
            "final_loss": np.nan,
            "device": "",
            "threads": np.nan,
            "center": _center(spec),
        }
        if (folder / RESULT).is_file():
            try:
                result = PretrainResult.from_json(read_json(folder / RESULT), folder / RESULT)
                row.update(
                    status=result.status,
                    wall_time_s=float(result.wall_time_s),
                    final_loss=float(result.final_loss),
                    device=result.device,
                    threads=_threads(result.threads),
                )
            except StoreError as err:
                row.update(status=UNREADABLE)
                problems.append(
                    _problem("pretraining job", folder, RESULT, _reason(err, folder / RESULT))
                )
        rows.append(row)
    return pd.DataFrame(rows, columns=PRETRAIN_COLUMNS)


def _read_parquets(
    paths: list[Path], columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, dict[Path, str]]:
    """Concatenate parquet files (one pyarrow dataset: multi-threaded, ~1 s for 1,000 cells);
    the ``optional`` columns are kept when every file holds them. A file that is missing,
    cannot be read, lacks an expected column or whose column types do not fit the others is
    left out and returned with the reason."""
    problems: dict[Path, str] = {}
    schemas: dict[Path, pa.Schema] = {}
    for path in paths:
        if not path.is_file():
            problems[path] = f"missing, but its cell has {RESULT} (a done cell holds {path.name})"
            continue
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as err:
            problems[path] = f"cannot read parquet ({err})"
            continue
        absent = [c for c in columns if c not in schema.names]
        if absent:
            problems[path] = f"missing column(s) {absent}; expected {list(columns)}"
        else:
            schemas[path] = schema
    good = list(schemas)
    columns += tuple(c for c in optional if good and all(c in schemas[p].names for p in good))
    while good:
        try:
            table = ds.dataset([str(p) for p in good], format="parquet").to_table(
                columns=list(columns)
            )
            break
        except (OSError, pa.ArrowException) as err:
            culprit, reason = _unreadable_parquet(good, schemas, columns, err)
            problems[culprit] = reason
            good.remove(culprit)
    else:
        return _empty_frame(columns), problems
    frame = table.to_pandas()
    for column in CATEGORY_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype(str).astype("category")
    frame["seed"] = frame["seed"].astype(int)
    frame["n_labelled"] = frame["n_labelled"].astype(int)
    return frame, problems


def _unreadable_parquet(
    paths: list[Path], schemas: dict[Path, pa.Schema], columns: tuple[str, ...], err: Exception
) -> tuple[Path, str]:
    """The file that keeps ``paths`` from being read as one table, and why: the first whose
    column types differ from the first file's, else the first that cannot be read alone."""
    reference = schemas[paths[0]]
    for path in paths[1:]:
        if any(schemas[path].field(c).type != reference.field(c).type for c in columns):
            return path, f"column types differ from those of {paths[0]} ({err})"
    for path in paths:
        try:
            pq.read_table(path, columns=list(columns))
        except (OSError, pa.ArrowException) as own:
            return path, f"cannot read parquet ({own})"
    raise StoreError(
        f"{paths[0].parent.parent}: cannot read the cells' parquet files together ({err})"
    ) from err


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
