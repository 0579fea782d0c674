"""Write a synthetic results store with the writer and records `cmrbench run` uses.

Every file goes through `cmrbench.store` (`StoreWriter`, the typed records, `JsonlLog`, the
layout's folder names), so a change of the store format changes this store too and the
report tests see it (run.json, pretrain/*, cells/* with spec.json, log.jsonl,
transfer.json, subjects.parquet, clinical.parquet, slices.npz, result.json last).
DSC values follow a simple generative model at the subject level:

    dsc[method, seed, subject, phase, class] = base(budget) + subject_effect[subject]
        + subset_effect[budget, seed] + run_noise[method, seed] + entry_noise + effect[method]
        + checkpoint_effect[pretraining job]

``subset_effect`` is shared by every method trained on the same labelled subset (the seed
draws the subset), so a method with ``effect`` 0 has the same distribution as scratch.
``checkpoint_effect`` (SD ``checkpoint_sd``, 0 by default) is shared by every cell that
fine-tunes from one pretraining job: with ``pretrain_seeds="single"`` one job per method,
with ``"tied"`` one per method and seed.
Tests and the report benchmark use it; it imports only `cmrbench.store` (no torch).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cmrbench.store import CellResult, ErrorRecord, JsonlLog, PretrainResult, RunRecord, StoreWriter
from cmrbench.store.layout import CELLS, LOG, PRETRAIN, cell_folder_name, pretrain_folder_name, slug

CLASSES = ("LV", "MYO", "RV")
PHASES = ("ED", "ES")
VENDORS = ("A", "B", "C", "D")
QUANTITIES = (
    ("LV_EDV", "ml"),
    ("LV_ESV", "ml"),
    ("LV_EF", "%"),
    ("RV_EDV", "ml"),
    ("RV_ESV", "ml"),
    ("RV_EF", "%"),
    ("LV_MASS", "g"),
)
MYO_DENSITY_G_PER_ML = 1.05
DEVICE, THREADS = "cpu (2 cores, 1 threads)", 1


@dataclass(frozen=True)
class SyntheticJob:
    """A synthetic pretraining job or cell as the store's writer sees it (`StoredJob`)."""

    store_folder: str
    key: str
    folder_name: str


@dataclass(frozen=True)
class SyntheticGrid:
    """What the synthetic store holds.

    ``effects`` adds a constant to every DSC of a method (e.g. ``{"mim": 0.05}``);
    ``pending`` names (method, budget) pairs whose cell folders have no result.json (every
    seed), ``failed`` those whose seed-0 cell holds error.json instead (the other seeds are
    done), and ``absent`` those that get no folder at all.
    ``run_noise_sd`` is the spread of ``run_noise`` (one training run's offset, shared by
    all of its subjects). ``record_grid``: ``run.json`` lists every cell of the grid
    (``grid_cells``, as ``cmrbench run`` writes it), absent and unstarted ones included;
    ``pretrain_seeds`` (single, tied) and ``pretrain_as`` (method → the method whose
    pretraining job it reuses, as ``mim_enc`` reuses ``mim``'s) shape the pretraining jobs.
    ``scale`` ("small") is written into every cell's data spec when set, as ``run --scale``
    does. ``options`` goes into every cell spec's data spec (two grids differing only in it share
    cell identities, not keys); ``center`` is written into every spec when set.
    ``unannotated_rv_every``: every k-th subject has no RV annotation (NaN DSC, annotated
    False), as in Sunnybrook. ``empty_mask_every``: every k-th subject's ES RV HD95 is NaN
    (one mask empty).
    """

    methods: tuple[str, ...] = ("scratch", "simclr", "mim")
    encoders: tuple[str, ...] = ("unet2d_small",)
    budgets: tuple[str, ...] = ("10", "all")
    seeds: tuple[int, ...] = (0, 1, 2)
    augmentations: tuple[str, ...] = ("none",)
    settings: tuple[str, ...] = ("default",)
    dataset: str = "mnms"
    n_subjects: int = 20
    n_train_all: int = 296
    effects: dict[str, float] = field(default_factory=dict)
    pending: tuple[tuple[str, str], ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    absent: tuple[tuple[str, str], ...] = ()
    unannotated_rv_every: int = 0
    empty_mask_every: int = 0
    method_docs: dict[str, str] = field(default_factory=dict)
    run_noise_sd: float = 0.005
    n_slices: int = 2
    image_size: int = 32
    max_cells: int | None = None
    seed: int = 0
    record_grid: bool = True
    options: dict[str, str] = field(default_factory=dict)
    center: str | None = None
    pretrain_seeds: str = "single"
    pretrain_as: dict[str, str] = field(default_factory=dict)
    checkpoint_sd: float = 0.0
    scale: str = ""


def write_synthetic_store(run_dir: Path, grid: SyntheticGrid = SyntheticGrid()) -> list[dict]:
    """Write ``grid`` under ``run_dir``; return the spec of every cell written (done or not)."""
    store = StoreWriter(run_dir)
    rng = np.random.default_rng(grid.seed)
    subjects = _test_subjects(grid, rng)
    subset_effect = {(b, s): rng.normal(0.0, 0.01) for b in grid.budgets for s in grid.seeds}
    pretrain_keys = _write_pretrain_jobs(store, grid, rng)
    checkpoint_effect = (
        {key: rng.normal(0.0, grid.checkpoint_sd) for key in sorted(set(pretrain_keys.values()))}
        if grid.checkpoint_sd
        else {}
    )
    planned = _cell_specs(grid, pretrain_keys)[: grid.max_cells]
    store.write_run(_run_record(grid, planned))
    specs = []
    for spec in planned:
        if (spec["method"], spec["budget"]) in grid.absent:
            continue
        specs.append(spec)
        _write_cell(store, grid, spec, subjects, {**subset_effect, **checkpoint_effect}, rng)
    return specs


def n_labelled(grid: SyntheticGrid, budget: str, setting: str) -> int:
    """Labelled training subjects of a budget ("all" is every training subject of the setting)."""
    if budget != "all":
        return int(budget)
    return grid.n_train_all // 2 if setting.startswith("vendors=") else grid.n_train_all


def _test_subjects(grid: SyntheticGrid, rng: np.random.Generator) -> pd.DataFrame:
    ids = [f"S{i:03d}" for i in range(grid.n_subjects)]
    lv_edv = rng.normal(150.0, 30.0, grid.n_subjects)
    lv_esv = lv_edv * rng.uniform(0.3, 0.6, grid.n_subjects)
    rv_edv = rng.normal(160.0, 30.0, grid.n_subjects)
    rv_esv = rv_edv * rng.uniform(0.35, 0.6, grid.n_subjects)
    myo_ml = rng.normal(110.0, 20.0, grid.n_subjects)
    return pd.DataFrame(
        {
            "subject": ids,
            "vendor": [VENDORS[i % 4] for i in range(grid.n_subjects)],
            "ability": rng.normal(0.0, 0.03, grid.n_subjects),
            "LV_ED": lv_edv,
            "LV_ES": lv_esv,
            "RV_ED": rv_edv,
            "RV_ES": rv_esv,
            "MYO_ED": myo_ml,
            "MYO_ES": myo_ml,
            "rv_annotated": [
                not (grid.unannotated_rv_every and i % grid.unannotated_rv_every == 0)
                for i in range(grid.n_subjects)
            ],
            "rv_es_empty": [
                bool(grid.empty_mask_every and i % grid.empty_mask_every == 1)
                for i in range(grid.n_subjects)
            ],
        }
    )


def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _cell_job(spec: dict) -> SyntheticJob:
    return SyntheticJob(
        CELLS,
        spec["key"],
        cell_folder_name(
            spec["method"],
            spec["encoder"],
            spec["budget"],
            spec["augmentation"],
            spec["setting"],
            spec["seed"],
            spec["key"],
        ),
    )


def _without_key(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "key"}


def _run_record(grid: SyntheticGrid, planned: list[dict]) -> RunRecord:
    identity = (
        "method",
        "encoder",
        "dataset",
        "setting",
        "augmentation",
        "budget",
        "seed",
        "pretrain_key",
    )
    cells = (
        [{"cell_key": s["key"], **{k: s[k] for k in identity}} for s in planned]
        if grid.record_grid
        else None
    )
    return RunRecord(
        grid="synthetic",
        grid_yaml=f"# synthetic grid\nmethods: {list(grid.methods)}\n"
        f"budgets: {list(grid.budgets)}\n",
        cmrbench_version="0.1.0",
        git_commit="0123456789abcdef0123456789abcdef01234567",
        packages={"numpy": np.__version__, "pandas": pd.__version__},
        python="3.11.7",
        platform="synthetic",
        device="cpu (2 cores)",
        command="cmrbench run --grid synthetic",
        started="2025-01-01T00:00:00",
        finished=None,
        skipped_subjects=[
            {
                "dataset": grid.dataset,
                "subject": "S999",
                "file": "S999_sa.nii.gz",
                "reason": "no ES label <b>",
            }
        ],
        methods={
            name: {"doc": doc, "source": f"plugins/{slug(name)}.py"}
            for name, doc in grid.method_docs.items()
        },
        planned_cells=cells,
        grid_cells=cells,
    )


def _centred_with_labels(grid: SyntheticGrid) -> bool | None:
    return None if grid.center is None else grid.center == "labels"


def _write_pretrain_jobs(
    store: StoreWriter, grid: SyntheticGrid, rng: np.random.Generator
) -> dict[tuple[str, str, int], str]:
    """One job per pretraining method × encoder (× seed when tied); returns the key of the job
    each (method, encoder, seed) fine-tunes from."""
    keys: dict[tuple[str, str, int], str] = {}
    jobs: dict[tuple[str, str, int], str] = {}
    for method in grid.methods:
        if method == "scratch":
            continue
        job_method = grid.pretrain_as.get(method, method)
        for encoder in grid.encoders:
            for seed in grid.seeds:
                job_seed = seed if grid.pretrain_seeds == "tied" else 0
                if (job_method, encoder, job_seed) not in jobs:
                    jobs[(job_method, encoder, job_seed)] = _write_pretrain_job(
                        store, grid, job_method, encoder, job_seed, rng
                    )
                keys[(method, encoder, seed)] = jobs[(job_method, encoder, job_seed)]
    return keys


def _write_pretrain_job(
    store: StoreWriter,
    grid: SyntheticGrid,
    method: str,
    encoder: str,
    seed: int,
    rng: np.random.Generator,
) -> str:
    spec = {
        "method": method,
        "encoder": encoder,
        "data": {"dataset": grid.dataset, "options": grid.options},
        "epochs": 100,
        "batch_size": 64,
        "hparams": {"temperature": 0.1},
        "protocol_version": 1,
        **({"center": grid.center} if grid.center else {}),
        **({"seed": seed} if grid.pretrain_seeds == "tied" else {}),
    }
    key = _key(spec)
    job = SyntheticJob(PRETRAIN, key, pretrain_folder_name(method, encoder, key))
    log = JsonlLog(store.write_spec(job, spec) / LOG)
    steps = np.arange(0, 200, 10)
    loss = 5.0 * np.exp(-steps / 80.0) + 0.1 * rng.random(steps.size)
    for step, value in zip(steps, loss):
        log.write(
            {
                "step": int(step),
                "epoch": int(step // 20),
                "loss": float(value),
                "lr": 0.1,
                "images_per_s": 500.0,
                "time_s": float(step) / 10,
            }
        )
    store.write_result(
        job,
        PretrainResult(
            key=key,
            method=method,
            encoder=encoder,
            wall_time_s=120.0,
            final_loss=float(loss[-1]),
            device=DEVICE,
            pool_slices=2400,
            precision="bf16",
            precision_run="fp32",
            center=grid.center,
            views_centred_with_labels=_centred_with_labels(grid),
            threads=THREADS,
        ),
    )
    return key


def _cell_specs(grid: SyntheticGrid, pretrain_keys: dict[tuple[str, str, int], str]) -> list[dict]:
    specs = []
    for setting in grid.settings:
        for augmentation in grid.augmentations:
            for encoder in grid.encoders:
                for budget in grid.budgets:
                    for seed in grid.seeds[:1] if budget == "all" else grid.seeds:
                        for method in grid.methods:
                            spec = {
                                "method": method,
                                "encoder": encoder,
                                "dataset": grid.dataset,
                                "data": {
                                    "dataset": grid.dataset,
                                    "options": grid.options,
                                    "image_size": grid.image_size,
                                    "spacing_mm": 1.25,
                                    **({"scale": grid.scale} if grid.scale else {}),
                                },
                                "setting": setting,
                                "augmentation": augmentation,
                                "budget": budget,
                                "seed": seed,
                                "pretrain_key": pretrain_keys.get((method, encoder, seed)),
                                "finetune": {
                                    "epochs": 1000,
                                    "batch_size": 32,
                                    **({"center": grid.center} if grid.center else {}),
                                },
                                "protocol_version": 1,
                            }
                            spec["key"] = _key(spec)
                            specs.append(spec)
    return specs


def _seen_vendors(setting: str) -> set[str]:
    if setting.startswith("vendors="):
        return set(setting.split("=", 1)[1].split("+"))
    return set(VENDORS)


def _write_cell(
    store: StoreWriter,
    grid: SyntheticGrid,
    spec: dict,
    subjects: pd.DataFrame,
    effects: dict,
    rng: np.random.Generator,
) -> None:
    job = _cell_job(spec)
    log = JsonlLog(store.write_spec(job, _without_key(spec)) / LOG)
    for step in range(4):
        log.write(
            {
                "step": step,
                "epoch": step,
                "loss": 1.0 / (step + 1),
                "lr": 0.01,
                "images_per_s": 100.0,
                "time_s": float(step),
                **({"val_loss": 1.2 / (step + 1)} if step % 2 else {}),
            }
        )
    cell_id = (spec["method"], spec["budget"])
    if cell_id in grid.failed and spec["seed"] == grid.seeds[0]:
        store.write_error(
            job, ErrorRecord(key=spec["key"], error="CUDA out of memory", traceback="Traceback ...")
        )
        return
    if cell_id in grid.pending:
        return
    if spec["pretrain_key"]:
        store.write_transfer(
            job,
            {
                "pretrain_key": spec["pretrain_key"],
                "parts": {
                    "encoder": {"tensors_loaded": 42, "params_loaded": 1_234_567, "skipped": []},
                    "decoder": {"tensors_loaded": 0, "params_loaded": 0, "skipped": []},
                },
                "skipped": ["head.weight", "head.bias"],
            },
        )
    rows = _subject_rows(grid, spec, subjects, effects, rng)
    store.write_tables(
        job, rows, _clinical_rows(grid, spec, subjects, rng), _slices(grid, subjects, rng)
    )
    labelled = n_labelled(grid, spec["budget"], spec["setting"])
    store.write_result(
        job,
        CellResult(
            key=spec["key"],
            **{
                k: spec[k]
                for k in (
                    "method",
                    "encoder",
                    "dataset",
                    "setting",
                    "augmentation",
                    "budget",
                    "seed",
                    "pretrain_key",
                )
            },
            n_labelled=labelled,
            init_weights_sha256="0" * 64,
            wall_time_s=30.0,
            device=DEVICE,
            train_subjects=[f"T{i:03d}" for i in range(labelled)],
            train_slices=20 * labelled,
            train_loss_final=0.2,
            val_loss_final=0.25,
            mean_dsc=float(np.nanmean(rows["dsc"])),
            protocol_version=1,
            precision="bf16",
            precision_run="fp32",
            dice="sample",
            center=grid.center,
            pretrain_views_centred_with_labels=(
                _centred_with_labels(grid) if spec["pretrain_key"] else False
            ),
            threads=THREADS,
        ),
    )


def _identity(grid: SyntheticGrid, spec: dict, subjects: pd.DataFrame) -> dict:
    seen = _seen_vendors(spec["setting"])
    return {
        "cell_key": spec["key"],
        "method": spec["method"],
        "encoder": spec["encoder"],
        "dataset": grid.dataset,
        "setting": spec["setting"],
        "augmentation": spec["augmentation"],
        "budget": spec["budget"],
        "n_labelled": n_labelled(grid, spec["budget"], spec["setting"]),
        "seed": spec["seed"],
        "subject": subjects["subject"].to_numpy(),
        "vendor": subjects["vendor"].to_numpy(),
        "seen_vendor": subjects["vendor"].isin(seen).to_numpy(),
    }


def _subject_rows(
    grid: SyntheticGrid, spec: dict, subjects: pd.DataFrame, effects: dict, rng: np.random.Generator
) -> pd.DataFrame:
    """``effects`` holds each (budget, seed)'s subset effect and each pretraining job's
    checkpoint effect (by key)."""
    n = len(subjects)
    base = 0.80 + 0.02 * np.log(n_labelled(grid, spec["budget"], spec["setting"]) / 10.0)
    level = (
        base
        + subjects["ability"].to_numpy()
        + effects[(spec["budget"], spec["seed"])]
        + rng.normal(0.0, grid.run_noise_sd)
        + grid.effects.get(spec["method"], 0.0)
        + effects.get(spec["pretrain_key"], 0.0)
    )
    frames = []
    for phase in PHASES:
        for name in CLASSES:
            dsc = np.clip(level + rng.normal(0.0, 0.02, n), 0.0, 1.0)
            hd95 = np.clip(20.0 * (1.0 - dsc) + rng.normal(0.0, 0.5, n), 0.5, None)
            annotated = subjects["rv_annotated"].to_numpy() if name == "RV" else np.ones(n, bool)
            dsc = np.where(annotated, dsc, np.nan)
            hd95 = np.where(annotated, hd95, np.nan)
            if name == "RV" and phase == "ES":
                hd95 = np.where(subjects["rv_es_empty"].to_numpy(), np.nan, hd95)
            vol_ref = subjects[f"{name}_{phase}"].to_numpy()
            frames.append(
                pd.DataFrame(
                    {
                        **_identity(grid, spec, subjects),
                        "phase": phase,
                        "class": name,
                        "annotated": annotated,
                        "dsc": dsc,
                        "hd95_mm": hd95,
                        "vol_pred_ml": vol_ref * rng.normal(1.0, 0.05, n),
                        "vol_ref_ml": vol_ref,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _clinical_rows(
    grid: SyntheticGrid, spec: dict, subjects: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    n = len(subjects)
    ref = {
        "LV_EDV": subjects["LV_ED"].to_numpy(),
        "LV_ESV": subjects["LV_ES"].to_numpy(),
        "RV_EDV": subjects["RV_ED"].to_numpy(),
        "RV_ESV": subjects["RV_ES"].to_numpy(),
        "LV_MASS": subjects["MYO_ED"].to_numpy() * MYO_DENSITY_G_PER_ML,
    }
    pred = {q: v * rng.normal(1.02, 0.06, n) for q, v in ref.items()}
    for side in ("LV", "RV"):
        for values in (ref, pred):
            values[f"{side}_EF"] = (
                100.0 * (values[f"{side}_EDV"] - values[f"{side}_ESV"]) / values[f"{side}_EDV"]
            )
    rv_missing = ~subjects["rv_annotated"].to_numpy()
    frames = []
    for quantity, unit in QUANTITIES:
        reference = (
            np.where(rv_missing, np.nan, ref[quantity])
            if quantity.startswith("RV")
            else ref[quantity]
        )
        frames.append(
            pd.DataFrame(
                {
                    **_identity(grid, spec, subjects),
                    "quantity": quantity,
                    "unit": unit,
                    "pred": pred[quantity],
                    "ref": reference,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _slices(
    grid: SyntheticGrid, subjects: pd.DataFrame, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The qualitative slices of one cell (`cmrbench.store.layout.SLICE_ARRAYS`)."""
    size, count = grid.image_size, grid.n_slices
    yy, xx = np.mgrid[:size, :size] - size / 2
    radius = np.hypot(yy, xx + size / 8)
    reference = np.zeros((size, size), np.uint8)
    reference[np.hypot(yy, xx - size / 4) < size / 5] = 3
    reference[radius < size / 4] = 2
    reference[radius < size / 6] = 1
    image = (reference * 0.3 + rng.normal(0.0, 0.1, (count, size, size))).astype(np.float32)
    prediction = np.roll(reference, 1, axis=1)
    return {
        "image": image,
        "reference": np.repeat(reference[None], count, 0),
        "prediction": np.repeat(prediction[None], count, 0),
        "subject": np.array(subjects["subject"][:count].tolist()),
        "phase": np.array(["ED", "ES"] * count)[:count],
        "slice": np.arange(count),
    }
