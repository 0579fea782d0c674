"""Build a report site with another revision's code and with the working tree, and diff them.

A refactor of `cmrbench.reports` that must not change the site (the table catalogue of issue
23) is checked by building the same store twice: once with the code of REV (default: the
branch point, ``git merge-base HEAD main``) checked out into a temporary ``git worktree``, once
with this working tree, each by ``cmrbench report`` in its own Python process whose
``PYTHONPATH`` points at that code. Every file of both sites is compared by name and bytes;
in text files ISO 8601 timestamps (a build time or a run's start) are masked first. Exit
status 1 on any difference, 0 when the sites are identical.

    python perf/site_diff.py RUN_OR_BUNDLE [RUN_OR_BUNDLE ...] [--rev REV] [--keep DIR]
    python perf/site_diff.py --synthetic DIR        # write a store covering every table first

``--synthetic DIR`` writes (once) a synthetic store (tests/support/synthetic_store.py) with
several methods, budgets of one and three seeds, two augmentations, a vendor setting (seen
and unseen vendors), pathology groups, clinical values, an unannotated class, undefined
HD95, a failed and a pending cell, and a cell folder of another grid, and diffs its site.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".html", ".svg", ".csv", ".json", ".css", ".js", ".txt", ""}
TIMESTAMP = re.compile(rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
MASK = b"<timestamp>"
DIFF_LINES = 20


def git(*args: str) -> str:
    """``git ARGS`` in the repository; its stdout, stripped."""
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def build(code: Path, sources: list[Path], out: Path) -> None:
    """``cmrbench report SOURCES --out OUT`` with the package at ``code`` first on the path.

    The process runs outside the repository, so the working directory cannot shadow ``code``.
    """
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [
        sys.executable,
        "-m",
        "cmrbench.cli",
        "report",
        *map(str, sources),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=env, cwd=out.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building the site with {code} failed:\n{done.stdout}{done.stderr}")


def site_files(site: Path) -> dict[str, Path]:
    """Every file of a site by its path relative to the site folder."""
    return {str(p.relative_to(site)): p for p in sorted(site.rglob("*")) if p.is_file()}


def masked(path: Path) -> tuple[bytes, int]:
    """The file's bytes with timestamps masked (text files only) and how many were masked."""
    data = path.read_bytes()
    if path.suffix not in TEXT_SUFFIXES:
        return data, 0
    return TIMESTAMP.subn(MASK, data)


def compare(old: Path, new: Path, label: str) -> list[str]:
    """What differs between the site of revision ``label`` (``old``) and the working tree's
    (``new``): missing and extra files, then differing files with the first lines of a
    unified diff for text."""
    before, after = site_files(old), site_files(new)
    problems = [f"only in the {label} site: {name}" for name in sorted(set(before) - set(after))]
    problems += [
        f"only in the working-tree site: {name}" for name in sorted(set(after) - set(before))
    ]
    masks = 0
    for name in sorted(set(before) & set(after)):
        (a, masked_a), (b, masked_b) = masked(before[name]), masked(after[name])
        masks += masked_a + masked_b
        if a == b:
            continue
        detail = ""
        if before[name].suffix in TEXT_SUFFIXES:
            lines = list(
                difflib.unified_diff(
                    a.decode(errors="replace").splitlines(),
                    b.decode(errors="replace").splitlines(),
                    label,
                    "working tree",
                    lineterm="",
                    n=1,
                )
            )
            detail = "\n".join(f"    {line[:200]}" for line in lines[:DIFF_LINES])
        problems.append(
            f"differs: {name} ({len(a)} vs {len(b)} bytes)" + (f"\n{detail}" if detail else "")
        )
    print(f"compared {len(set(before) | set(after))} files; {masks} timestamps masked")
    return problems


def write_covering_store(run_dir: Path) -> Path:
    """A synthetic store whose site fills every table and page (see the module docstring)."""
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from support.synthetic_store import SyntheticGrid, write_synthetic_store

    if (run_dir / "run.json").is_file():
        return run_dir
    write_synthetic_store(
        run_dir,
        SyntheticGrid(
            methods=("scratch", "simclr", "mim", "dino"),
            budgets=("10", "25", "all"),
            augmentations=("none", "paper"),
            settings=("default", "vendors=A+B"),
            n_subjects=12,
            effects={"mim": 0.05, "dino": -0.02},
            unannotated_rv_every=5,
            empty_mask_every=4,
            failed=(("dino", "25"),),
            pending=(("simclr", "all"),),
            method_docs={"mim": "Masked image modelling.\nSecond line."},
            center="labels",
        ),
    )
    for path in sorted((run_dir / "cells").glob("*/subjects.parquet")):
        rows = pd.read_parquet(path)
        rows["pathology"] = rows["subject"].map(lambda s: ("NOR", "DCM", "HCM")[int(s[1:]) % 3])
        rows.to_parquet(path, index=False)
    # cells of another grid in the same folder: set aside as "not in this grid"
    with tempfile.TemporaryDirectory() as other:
        write_synthetic_store(
            Path(other),
            SyntheticGrid(methods=("scratch",), budgets=("50",), seeds=(0,), n_subjects=12),
        )
        for cell in sorted((Path(other) / "cells").iterdir()):
            shutil.move(str(cell), run_dir / "cells" / cell.name)
    return run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=Path, help="run folders or bundles")
    parser.add_argument(
        "--rev",
        default=None,
        help="the revision to compare with (default: git merge-base HEAD main)",
    )
    parser.add_argument(
        "--synthetic",
        type=Path,
        default=None,
        help="write a store covering every table here (once) and diff its site",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="leave both sites in this folder (old/, new/) instead of a temp one",
    )
    args = parser.parse_args()
    sources = [p.resolve() for p in args.sources]
    if args.synthetic:
        sources.append(write_covering_store(args.synthetic.resolve()))
    if not sources:
        parser.error("give a run folder or bundle, or --synthetic DIR")
    rev = args.rev or git("merge-base", "HEAD", "main")
    label = f"revision {git('rev-parse', '--short', rev)}"
    with tempfile.TemporaryDirectory(prefix="cmrbench-site-diff-") as temporary:
        work = (args.keep or Path(temporary)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        checkout = Path(temporary) / "code"
        git("worktree", "add", "--detach", str(checkout), rev)
        try:
            build(checkout, sources, work / "old")
        finally:
            git("worktree", "remove", "--force", str(checkout))
        build(REPO, sources, work / "new")
        problems = compare(work / "old", work / "new", label)
    print(f"{label} vs the working tree, sources: {', '.join(map(str, sources))}")
    for problem in problems:
        print(problem)
    print("identical (timestamps aside)" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
