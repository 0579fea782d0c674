"""Portable result bundles: a run's results as one zip file (``cmrbench export``).

A bundle holds what a report reads and nothing heavier: ``run.json`` (grid, provenance),
and per pretraining job and cell its spec, result or error, training log, transfer report,
per-subject and clinical tables and the few qualitative slices. No checkpoint, no slice
cache, no image beyond those slices. ``cmrbench report`` and ``cmrbench stats`` accept a
bundle wherever they accept a run folder (`opened_run`), so groups can share and publish
results without sharing the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from cmrbench.store import StoreError, load_store
from cmrbench.store.layout import (
    CELLS,
    CLINICAL,
    ERROR,
    EXTERNAL,
    LOG,
    PRETRAIN,
    RESULT,
    RUN,
    SLICES,
    SPEC,
    SUBJECTS,
    TRANSFER,
)

BUNDLE_MARK = "cmrbench-bundle.json"
BUNDLE_FORMAT = 1
RUN_FILES = (RUN,)
JOB_FILES = (SPEC, RESULT, ERROR, LOG, TRANSFER, SUBJECTS, CLINICAL, SLICES)
JOB_FOLDERS = (CELLS, PRETRAIN)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def bundle_members(run_dir: Path) -> list[str]:
    """The store files a bundle of ``run_dir`` holds, as sorted POSIX paths relative to it: the
    run's files, and each job's (a cell's external evaluations, ``external/<set>/``, too)."""
    run_dir = Path(run_dir)
    members = [name for name in RUN_FILES if (run_dir / name).is_file()]
    for folder in JOB_FOLDERS:
        if (run_dir / folder).is_dir():
            for job in sorted(p for p in (run_dir / folder).iterdir() if p.is_dir()):
                jobs = [job, *sorted(p for p in (job / EXTERNAL).glob("*") if p.is_dir())]
                members += [
                    path.relative_to(run_dir).as_posix()
                    for one in jobs
                    for path in (one / name for name in JOB_FILES)
                    if path.is_file()
                ]
    return sorted(members)


def export_bundle(run_dir: Path, out: Path, force: bool = False) -> Path:
    """Write the bundle of the store at ``run_dir`` to ``out`` (atomically, readable as any
    new file under the umask); return ``out``.

    Raises `StoreError` when ``run_dir`` is not a results store, or when ``out`` exists and
    ``force`` is not set (an existing file is replaced only then).
    """
    run_dir, out = Path(run_dir), Path(out)
    load_store(run_dir)  # refuses a folder that is not a store, naming it
    if out.exists() and not (force and out.is_file()):
        what = "a folder" if out.is_dir() else "a file"
        raise StoreError(
            f"{out} already exists ({what}); choose another --out"
            + ("" if out.is_dir() else ", or pass --force to replace it")
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(descriptor)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            mark = {
                "format": BUNDLE_FORMAT,
                "written_by": "cmrbench export",
                "source": run_dir.resolve().name,
            }
            _write_member(archive, BUNDLE_MARK, json.dumps(mark, indent=1).encode())
            for member in bundle_members(run_dir):
                _write_member(archive, member, (run_dir / member).read_bytes())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private (0600)
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return out


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Members carry a fixed date, so one store always gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def is_bundle(path: Path) -> bool:
    """True for a zip file that `export_bundle` wrote."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return BUNDLE_MARK in archive.namelist()


@contextmanager
def opened_run(path: Path) -> Iterator[Path]:
    """A run folder for ``path``: the folder itself, or a bundle unpacked into a temporary one.

    Raises `StoreError` for a file that is not a cmrbench bundle or holds a member outside
    the store's layout (an absolute path, ``..``, or a file a bundle never has).
    """
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not is_bundle(path):
        raise StoreError(
            f"{path}: neither a run folder nor a cmrbench bundle (a zip written by "
            f"`cmrbench export`, with {BUNDLE_MARK} inside)"
        )
    with tempfile.TemporaryDirectory(prefix="cmrbench-bundle-") as temporary:
        folder = Path(temporary) / path.stem  # the run's name in a merged report
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                _check_member(path, member)
            archive.extractall(folder)
        yield folder


def _check_member(bundle: Path, member: str) -> None:
    parts = PurePosixPath(member).parts
    job_file = (len(parts) == 3 and parts[0] in JOB_FOLDERS) or (
        len(parts) == 5 and parts[0] == CELLS and parts[2] == EXTERNAL
    )
    allowed = (
        member == BUNDLE_MARK
        or member in RUN_FILES
        or (job_file and parts[-1] in JOB_FILES and not {"", ".", ".."} & set(parts[1:-1]))
    )
    if not allowed or member.startswith("/") or "\\" in member:
        raise StoreError(
            f"{bundle}: member {member!r} is not part of a cmrbench bundle "
            f"(expected run.json, {{cells,pretrain}}/<job>/<file> or "
            f"cells/<cell>/external/<set>/<file>, a file one of "
            f"{', '.join(JOB_FILES)})"
        )


__all__ = ["BUNDLE_MARK", "bundle_members", "export_bundle", "is_bundle", "opened_run"]
