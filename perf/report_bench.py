"""Time `build_site` on a synthetic store of 1,000 cells × 140 test subjects.

The issue's target is a report in at most 60 s on 2 cores. The store (8 methods, budgets
10/15/25/50 × 3 seeds + all, 2 augmentations, 2 encoders, 3 settings, cut at 1,000 cells)
is written once by ``tests/support/synthetic_store.py`` and reused with ``--store DIR``.

    python perf/report_bench.py [--store DIR] [--cells 1000] [--subjects 140]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cmrbench.reports import Statistics, build_site  # noqa: E402
from cmrbench.store import load_store  # noqa: E402
from support.synthetic_store import SyntheticGrid, write_synthetic_store  # noqa: E402

METHODS = ("scratch", "simclr", "pcl", "dino", "mim", "mim_enc", "byol", "mae")


def benchmark_grid(cells: int, subjects: int) -> SyntheticGrid:
    """The paper's grid shape (PAPER.md "Seeds") widened to two encoders and three settings."""
    return SyntheticGrid(
        methods=METHODS,
        encoders=("unet2d", "vit_small"),
        budgets=("10", "15", "25", "50", "all"),
        augmentations=("none", "paper"),
        settings=("default", "vendors=A+B", "phase=ED"),
        n_subjects=subjects,
        effects={"mim": 0.03},
        max_cells=cells,
        n_slices=4,
        image_size=128,
        unannotated_rv_every=0,
        empty_mask_every=9,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="reuse (or create) the store in this folder")
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--subjects", type=int, default=140)
    args = parser.parse_args()
    store_dir = args.store or Path(tempfile.mkdtemp(prefix="cmrbench-report-bench-"))
    if not (store_dir / "run.json").is_file():
        started = time.perf_counter()
        written = write_synthetic_store(store_dir, benchmark_grid(args.cells, args.subjects))
        print(
            f"wrote {len(written)} cells × {args.subjects} subjects in "
            f"{time.perf_counter() - started:.1f} s to {store_dir}"
        )
    started = time.perf_counter()
    store = load_store(store_dir)
    loaded = time.perf_counter()
    tables = dict(Statistics(store))  # every table of the catalogue
    computed = time.perf_counter()
    print(
        f"load_store: {loaded - started:.1f} s ({len(store.subjects):,} subject rows, "
        f"{len(store.clinical):,} clinical rows); {len(tables)} tables: "
        f"{computed - loaded:.1f} s"
    )
    site_dir = Path(tempfile.mkdtemp(prefix="cmrbench-report-site-"))
    started, cpu_started = time.perf_counter(), time.process_time()
    build_site(store_dir, site_dir)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    files = sum(1 for p in site_dir.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in site_dir.rglob("*") if p.is_file())
    print(
        f"build_site: {elapsed:.1f} s wall, {cpu:.1f} s CPU for {len(store.cells)} cells × "
        f"{args.subjects} subjects ({files} files, {size / 2**20:.1f} MiB)"
    )
    shutil.rmtree(site_dir)
    if args.store is None:
        shutil.rmtree(store_dir)


if __name__ == "__main__":
    main()
