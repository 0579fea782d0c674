"""Read a results store (the folder `cmrbench run` writes) into pandas tables.

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from cmrbench.errors import CmrbenchError

ID_COLUMNS = ("cell_key", "method", "encoder", "dataset", "setting", "augmentation", "budget",
              "n_labelled", "seed", "subject", "vendor", "seen_vendor")
SUBJECT_COLUMNS = ID_COLUMNS + ("phase", "class", "annotated", "dsc", "hd95_mm",
                                "vol_pred_ml", "vol_ref_ml")
CLINICAL_COLUMNS = ID_COLUMNS + ("quantity", "unit", "pred", "ref")
# Read when every cell's file holds them (stores written before they existed do not).
OPTIONAL_SUBJECT_COLUMNS = ("pathology",)
CATEGORY_COLUMNS = ("cell_key", "method", "encoder", "dataset", "setting", "augmentation",
                    "budget", "subject", "vendor", "pathology", "phase", "class", "quantity",
                    "unit")
CELL_SPEC_FIELDS = ("method", "encoder", "dataset", "setting", "augmentation", "budget", "seed")
CELL_COLUMNS = ["key", "folder", "status", *CELL_SPEC_FIELDS, "pretrain_key", "wall_time_s",
                "device", "error", "center", "pretrain_center", "fov_diagonal_mm", "protocol_version"]
NOT_IN_GRID = "not in this grid"
STATUS_RANK = {"done": 0, "failed": 1, "pending": 2}
CONFLICT_ACROSS_RUNS = ("done in more than one run (same method, encoder, dataset, setting, "
                        "augmentation, budget and seed): a conflict, not averaged")
CONFLICTING = ("another done cell has the same method, encoder, dataset, setting, augmentation, "
               "budget and seed but a different key (a different configuration): not merged")


class StoreError(CmrbenchError, ValueError):
    """The results store breaks its layout; the message names the file and what was expected."""


@dataclass
class Store:
    """Everything a report needs from one run folder.

    Attributes:
        run_dir: the run folder.
        run: the contents of ``run.json`` (empty when absent).
        cells: one row per cell of the run (see the module docstring): ``key, folder,
            status`` (done | failed | pending; ``folder`` is empty for a grid cell not
            started), the spec fields ``method, encoder, dataset, setting, augmentation,
            budget, seed, pretrain_key``, ``wall_time_s``, ``device``, ``error``, and
            ``center`` / ``pretrain_center``: the fine-tuning and pretraining specs' ``center``
            field (e.g. "labels": views centred on the heart found from the labels), or "".
        set_aside: cell folders the report does not use, with the same columns plus ``reason``.
        subjects: the rows of every done cell's ``subjects.parquet`` (one per test subject ×
            phase × class; ``pathology`` when every cell's rows carry it), plus ``hd95_worst_mm``: the cell's field-of-view diagonal, the
            value an undefined HD95 (one mask empty) counts as.
        clinical: the rows of every done cell's ``clinical.parquet`` (one per subject × quantity).
        pretrain: one row per pretraining job: ``key, folder, status, method, encoder,
            wall_time_s, final_loss, device, center``.
    """

    run_dir: Path
    run: dict[str, Any]
    cells: pd.DataFrame
    set_aside: pd.DataFrame
    subjects: pd.DataFrame
    clinical: pd.DataFrame
    pretrain: pd.DataFrame


def read_json(path: Path) -> Any:
    """Parse one JSON file; a broken file raises `StoreError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: cannot read JSON ({err})") from err


def read_jsonl(path: Path) -> pd.DataFrame:
    """One row per JSON line of a training log (``log.jsonl``); empty when the file is absent."""
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise StoreError(f"{path}:{number}: expected one JSON object per line ({err})") from err
    return pd.DataFrame(rows)


def read_slices(cell_folder: Path) -> dict[str, np.ndarray] | None:
    """The qualitative slices of one cell (image float32 ``(K, H, W)``, reference and
    prediction uint8 ``(K, H, W)``, subject, phase, slice ``(K,)``), or None when absent."""
    path = cell_folder / "slices.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            slices = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: cannot read the qualitative slices ({err})") from err
    expected = {"image", "reference", "prediction", "subject", "phase", "slice"}
    if not expected <= set(slices):
        raise StoreError(f"{path}: expected arrays {sorted(expected)}, found {sorted(slices)}")
    return slices


def load_store(run_dir: Path) -> Store:
    """Read ``run_dir`` (a results store) into a `Store`.

    Raises `StoreError` when the folder is not a store or a file breaks the layout.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "cells").is_dir() and not (run_dir / "run.json").is_file():
        raise StoreError(f"{run_dir}: not a results store (expected run.json and a cells/ folder)")
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    if not isinstance(run, dict):
        raise StoreError(f"{run_dir / 'run.json'}: expected a JSON object")
    cells, set_aside = one_configuration(_cell_table(run_dir / "cells"), run.get("grid_cells"),
                                         run_dir / "run.json")
    done = cells[cells["status"] == "done"]["folder"].tolist()
    subjects = _read_parquets([Path(f) / "subjects.parquet" for f in done], SUBJECT_COLUMNS,
                              optional=OPTIONAL_SUBJECT_COLUMNS)
    subjects["hd95_worst_mm"] = subjects["cell_key"].astype(str).map(
        dict(zip(cells["key"], cells["fov_diagonal_mm"]))).astype(float)
    clinical = _read_parquets([Path(f) / "clinical.parquet" for f in done], CLINICAL_COLUMNS)
    return Store(run_dir=run_dir, run=run, cells=cells, set_aside=set_aside, subjects=subjects,
                 clinical=clinical, pretrain=_pretrain_table(run_dir / "pretrain"))


def load_stores(run_dirs: Sequence[Path]) -> Store:
    """One `Store` from one or more run folders (``cmrbench report RUN [RUN ...]``).

    Several runs (other datasets, encoders, or one grid split over machines) merge into one
    store: a cell done in exactly one run is used from that run; a cell identity (method,
    encoder, dataset, setting, augmentation, budget, seed) done in two runs is a conflict,
    and every copy is set aside with the runs named, never averaged. ``run`` then holds
    ``runs``: each run's ``run.json`` with its ``name``.
    """
    if not run_dirs:
        raise StoreError("no run folder given")
    if len(run_dirs) == 1:
        return load_store(Path(run_dirs[0]))
    names = run_names([Path(d) for d in run_dirs])
    return merge_stores([load_store(Path(d)) for d in run_dirs], names)


def run_names(run_dirs: list[Path]) -> list[str]:
    """A distinct short name per run folder (its name; ``name-2`` … when two share it)."""
    names: list[str] = []
    for run_dir in run_dirs:
        name, n = run_dir.resolve().name, 2
        while name in names:
            name, n = f"{run_dir.resolve().name}-{n}", n + 1
        names.append(name)
    return names


def merge_stores(stores: list[Store], names: list[str]) -> Store:
    """The stores of several runs as one (see `load_stores`); tables gain a ``run`` column."""
    cells = pd.concat([s.cells.assign(run=n) for s, n in zip(stores, names)], ignore_index=True)
    identity = cells[list(CELL_SPEC_FIELDS)].astype(str).agg("|".join, axis=1)
    done = cells["status"] == "done"
    done_runs = cells[done].groupby(identity[done])["run"].agg(lambda r: ", ".join(sorted(set(r))))
    conflicted = identity.map(done_runs).fillna("").str.contains(", ", regex=False).astype(bool)
    conflicts = cells[conflicted & done].assign(
        reason=[f"{CONFLICT_ACROSS_RUNS} ({done_runs[i]})" for i in identity[conflicted & done]])
    kept = cells[~conflicted]
    best_first = kept.assign(_rank=kept["status"].map(STATUS_RANK),
                             _identity=identity[~conflicted]).sort_values("_rank", kind="stable")
    used = best_first.drop_duplicates("_identity").drop(columns=["_rank", "_identity"])
    done_keys = set(used.loc[used["status"] == "done", "key"])

    def rows_of_used_cells(table: str) -> pd.DataFrame:
        rows = pd.concat([getattr(s, table) for s in stores], ignore_index=True)
        for column in OPTIONAL_SUBJECT_COLUMNS:     # a run without it: unknown, not "nan"
            if column in rows:
                rows[column] = rows[column].astype(object).fillna("").astype(str).astype("category")
        return rows[rows["cell_key"].astype(str).isin(done_keys)].reset_index(drop=True)

    set_aside = pd.concat([*(s.set_aside.assign(run=n) for s, n in zip(stores, names)), conflicts],
                          ignore_index=True)
    pretrain = pd.concat([s.pretrain.assign(run=n) for s, n in zip(stores, names)],
                         ignore_index=True).drop_duplicates("key")
    run = {"grid": " + ".join(dict.fromkeys(str(s.run.get("grid", n)) for s, n in zip(stores, names))),
           "runs": [{"name": n, "folder": str(s.run_dir), **s.run} for s, n in zip(stores, names)],
           "methods": {k: v for s in stores for k, v in (s.run.get("methods") or {}).items()},
           "skipped_subjects": [{**entry, "run": n} for s, n in zip(stores, names)
                                for entry in s.run.get("skipped_subjects") or []]}
    return Store(run_dir=stores[0].run_dir, run=run, cells=used.reset_index(drop=True),
                 set_aside=set_aside, subjects=rows_of_used_cells("subjects"),
                 clinical=rows_of_used_cells("clinical"), pretrain=pretrain.reset_index(drop=True))


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
                    "wall_time_s": np.nan, "device": "", "error": "", "center": "",
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


def _cell_table(cells_dir: Path) -> pd.DataFrame:
    rows = []
    folders = sorted(p for p in cells_dir.iterdir() if p.is_dir()) if cells_dir.is_dir() else []
    for folder in folders:
        spec_path = folder / "spec.json"
        if not spec_path.is_file():
            raise StoreError(f"{folder}: a cell folder without spec.json")
        spec = read_json(spec_path)
        row = {"key": "", "folder": str(folder), "status": "pending", "pretrain_key": None,
               "wall_time_s": np.nan, "device": "", "error": "",
               "center": _center(spec.get("finetune")) or _center(spec),
               "pretrain_center": _center(spec.get("pretrain")),
               "fov_diagonal_mm": _fov_diagonal_mm(spec.get("data"))}
        row.update(_cell_fields(spec, spec_path))
        if (folder / "result.json").is_file():
            result = read_json(folder / "result.json")
            row.update(status="done", wall_time_s=float(result.get("wall_time_s", np.nan)),
                       device=str(result.get("device", "")),
                       pretrain_key=result.get("pretrain_key", row["pretrain_key"]))
        elif (folder / "error.json").is_file():
            row.update(status="failed", error=str(read_json(folder / "error.json").get("error", "")))
        rows.append(row)
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


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
    folders = sorted(p for p in pretrain_dir.iterdir() if p.is_dir()) if pretrain_dir.is_dir() else []
    for folder in folders:
        spec_path = folder / "spec.json"
        if not spec_path.is_file():
            raise StoreError(f"{folder}: a pretraining folder without spec.json")
        spec = read_json(spec_path)
        row = {"key": str(spec.get("key", folder.name)), "folder": str(folder), "status": "pending",
               "method": str(spec.get("method", "")), "encoder": str(spec.get("encoder", "")),
               "wall_time_s": np.nan, "final_loss": np.nan, "device": "", "center": _center(spec)}
        if (folder / "result.json").is_file():
            result = read_json(folder / "result.json")
            row.update(status=str(result.get("status", "done")),
                       wall_time_s=float(result.get("wall_time_s", np.nan)),
                       final_loss=float(result.get("final_loss", np.nan)),
                       device=str(result.get("device", "")))
        rows.append(row)
    return pd.DataFrame(rows, columns=["key", "folder", "status", "method", "encoder",
                                       "wall_time_s", "final_loss", "device", "center"])


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
