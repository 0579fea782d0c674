"""Publish a site into a folder without ever losing a file that cmrbench did not write.

A report is built in a staging folder beside the target and then swapped in, so a build
that fails or is killed leaves the previous site whole. The target's marker file is a
manifest of the files the report wrote; a rebuild removes only those (and only when the new
report no longer has them). A non-empty folder without a marker is refused unless
``force``, and even then no file of the user's is overwritten or removed.

Swap order (each step is safe to interrupt): the manifest first lists old ∪ new files, then
each new file replaces its old version with one atomic ``os.replace``, then files the new
report no longer has are removed, and the manifest is rewritten with the new files only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cmrbench.errors import CmrbenchError

MANIFEST = ".cmrbench-report"
STAGING_MARK = ".cmrbench-staging"
MANIFEST_FORMAT = 1


class PublishError(CmrbenchError, ValueError):
    """The target folder cannot take the report without touching files cmrbench did not write."""


def publish(build: Callable[[Path], None], target: Path, force: bool = False) -> Path:
    """Run ``build(staging_folder)`` and swap what it wrote into ``target``.

    Returns ``target`` (resolved). Raises `PublishError` before building if ``target`` holds
    files but no cmrbench report (unless ``force``), and before swapping if a new file
    would overwrite a file the previous report did not write.
    """
    target = Path(target).resolve()
    owned = _owned_files(target, force)
    _remove_stale_staging(target)
    staging = target.parent / f".{target.name}{STAGING_MARK}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / STAGING_MARK).write_text("cmrbench is building a report here\n")
    try:
        build(staging)
        new = sorted(
            str(p.relative_to(staging))
            for p in staging.rglob("*")
            if p.is_file() and p.name not in (MANIFEST, STAGING_MARK)
        )
        _refuse_collisions(target, new, owned)
        _swap(staging, target, new, owned)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_manifest(folder: Path) -> set[str] | None:
    """The files the report in ``folder`` wrote, from its marker file.

    None when the marker predates manifests (plain text): such a report's files may be
    replaced by the new report's, but nothing is removed.
    """
    try:
        files = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        return None
    return {str(f) for f in files if _is_inside(str(f))}


def _owned_files(target: Path, force: bool) -> set[str] | None:
    """Files the report may replace or remove (None: a legacy report, see `read_manifest`)."""
    if not target.exists():
        return set()
    if not target.is_dir():
        raise PublishError(f"report folder {target} is a file, expected a folder")
    if not (target / MANIFEST).is_file():
        if any(target.iterdir()) and not force:
            raise PublishError(
                f"report folder {target} is not empty and holds no cmrbench report "
                f"(no {MANIFEST} file); choose an empty or new folder, or pass --force to add "
                f"the report beside the files there (none of them is overwritten or removed)"
            )
        return set()
    return read_manifest(target)


def _refuse_collisions(target: Path, new: list[str], owned: set[str] | None) -> None:
    if owned is None:
        return
    taken = [f for f in new if f not in owned and (target / f).exists()]
    if taken:
        raise PublishError(
            f"report folder {target}: the report would overwrite files it did "
            f"not write: {', '.join(taken[:10])}"
            f"{' …' if len(taken) > 10 else ''}; move them or choose another folder"
        )


def _swap(staging: Path, target: Path, new: list[str], owned: set[str] | None) -> None:
    owned = owned or set()
    target.mkdir(parents=True, exist_ok=True)
    _write_manifest(target, sorted(owned | set(new)))
    for name in new:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target / name)
    for name in sorted(owned - set(new)):
        path = target / name
        if path.is_file():
            path.unlink()
            _remove_empty_parents(path.parent, target)
    _write_manifest(target, new)


def _write_manifest(target: Path, files: list[str]) -> None:
    temporary = target / f"{MANIFEST}.tmp"
    temporary.write_text(
        json.dumps(
            {"format": MANIFEST_FORMAT, "written_by": "cmrbench report", "files": files}, indent=1
        )
        + "\n",
        encoding="utf-8",
    )
    os.replace(temporary, target / MANIFEST)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _remove_stale_staging(target: Path) -> None:
    """Staging folders of killed builds of this target (they carry `STAGING_MARK`)."""
    if not target.parent.is_dir():
        return
    for folder in target.parent.glob(f".{target.name}{STAGING_MARK}-*"):
        if (folder / STAGING_MARK).is_file():
            shutil.rmtree(folder, ignore_errors=True)


def _is_inside(relative: str) -> bool:
    path = Path(relative)
    return not path.is_absolute() and ".." not in path.parts and relative not in ("", ".")


__all__ = ["MANIFEST", "PublishError", "publish", "read_manifest"]
