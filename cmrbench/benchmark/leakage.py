"""No subject a model trains on may be a test subject: checked at planning, before any job.

Training material is the fine-tuning dataset's pretraining pool (its training subjects, which
hold every labelled subset) and every dataset of a ``pretrain.pool``; test material is the
dataset's own test split and every ``evaluate_on`` set (issue 24). Two identities:

* by id: the adapter's `source` (its name and root folder; the phantom's seed) and the
  subject id, so the same dataset under other split options is still the same subjects;
* by content: a SHA-256 of every cine frame as loaded (float32 ``(Z, H, W)``, base → apex), so a
  study copied into another folder under another id is caught, even when one copy is a 4D
  cine and the other separate ED and ES cases (nnU-Net's layout). Constant frames carry no
  identity and are not hashed.

Content hashes need every subject loaded once. They are cached per dataset in
``cache_dir("hashes")`` (one JSON file per adapter fingerprint, written every
`SAVE_EVERY` subjects so an interrupted planning keeps its progress); a later planning reads
that small file. Like the slice cache, the hash cache assumes the files under a root do not
change; remove ``cache_dir("hashes")`` after editing a dataset in place. The check runs only
for grids with ``pretrain.pool`` or ``evaluate_on``: a single dataset's own split is kept
disjoint by its adapter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cmrbench.benchmark.data import adapter_for, selected_subjects
from cmrbench.benchmark.grid import GridError, Plan
from cmrbench.benchmark.spec import DataSpec, canonical_json
from cmrbench.datasets.base import DatasetAdapter
from cmrbench.paths import cache_dir
from cmrbench.store import atomic_write_json, read_json

HASH_VERSION = 1
SAVE_EVERY = 50
SHOWN = 10  # collisions named in the error; the rest are counted


class LeakageError(GridError):
    """A subject a model trains on is also a test subject (by id or by image content)."""


@dataclass(frozen=True)
class SubjectSet:
    """Some subjects of one dataset (``subjects``: ``train``, ``test`` or ``all``, as
    `selected_subjects` reads them) and what they are in the grid, for messages."""

    role: str
    data: DataSpec
    subjects: str


def data_name(data: DataSpec) -> str:
    """``phantom (vendors=C, n_test=8)``: a dataset as a user wrote it."""
    options = ", ".join(f"{k}={v}" for k, v in data.options)
    root = f" at {data.root}" if data.root else ""
    return f"{data.dataset}{root}" + (f" ({options})" if options else "")


def training_sets(plan: Plan) -> list[SubjectSet]:
    """The fine-tuning dataset's pretraining pool and each pool dataset of the plan's
    pretraining jobs (each once)."""
    own = plan.grid.data
    sets = [SubjectSet(f"training subjects of {data_name(own)}", own, "train")]
    for job in plan.pretrain:
        for source in job.pool_sources:
            found = SubjectSet(
                f"pretraining pool {data_name(source.data)}", source.data, source.subjects
            )
            if all((s.data, s.subjects) != (found.data, found.subjects) for s in sets):
                sets.append(found)
    return sets


def test_sets(plan: Plan) -> list[SubjectSet]:
    """The fine-tuning dataset's test split and each external test set."""
    return [
        SubjectSet(f"test set {plan.grid.data.dataset}", plan.grid.data, "test"),
        *(SubjectSet(f"test set {s.label}", s.data, s.subjects) for s in plan.grid.evaluate_on),
    ]


def frame_hashes(cine: np.ndarray) -> list[str]:
    """SHA-256 (hex, 32 digits) of each non-constant frame of a cine ``(T, Z, H, W)``."""
    return [
        hashlib.sha256(np.ascontiguousarray(frame, dtype=np.float32).tobytes()).hexdigest()[:32]
        for frame in cine
        if frame.min() != frame.max()
    ]


def hash_cache_path(adapter: DatasetAdapter) -> Path:
    """The hash cache file of a dataset (its adapter's fingerprint and `HASH_VERSION`)."""
    blob = json.dumps(
        {"dataset": adapter.fingerprint(), "version": HASH_VERSION}, sort_keys=True, default=str
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return cache_dir("hashes") / f"{adapter.name}-{key}.json"


def subject_hashes(
    adapter: DatasetAdapter, subject_ids: list[str], progress: bool = True
) -> dict[str, list[str]]:
    """Frame hashes of ``subject_ids``: read from the dataset's hash cache, the missing ones
    computed (each subject loaded once) and added to it."""
    path = hash_cache_path(adapter)
    cached: dict[str, list[str]] = read_json(path) if path.is_file() else {}
    missing = [s for s in subject_ids if s not in cached]
    for n, subject_id in enumerate(
        tqdm(
            missing,
            desc=f"hashing {adapter.name}",
            unit="subject",
            disable=not progress or not missing,
            leave=False,
        ),
        1,
    ):
        cached[subject_id] = frame_hashes(adapter.load(subject_id).cine)
        if n % SAVE_EVERY == 0 or n == len(missing):
            atomic_write_json(path, cached)
    return {s: cached[s] for s in subject_ids}


@dataclass
class Resolved:
    """A `SubjectSet`'s adapter, subject ids, the source the ids are ids within, and (once
    `with_hashes` ran) their frame hashes."""

    role: str
    adapter: DatasetAdapter
    source: str
    ids: list[str]
    hashes: dict[str, list[str]] = field(default_factory=dict)


def resolve(subject_set: SubjectSet) -> Resolved:
    """The subject ids of a `SubjectSet` (no image read)."""
    adapter = adapter_for(subject_set.data)
    return Resolved(
        subject_set.role,
        adapter,
        canonical_json(adapter.source()),
        selected_subjects(adapter, subject_set.subjects),
    )


def with_hashes(resolved: Resolved, progress: bool = True) -> Resolved:
    """``resolved`` with its subjects' frame hashes (`subject_hashes`)."""
    resolved.hashes = subject_hashes(resolved.adapter, resolved.ids, progress)
    return resolved


def same_ids(training: list[Resolved], tests: list[Resolved]) -> list[str]:
    """One line per training subject that is a test subject of the same dataset and id."""
    by_id = {(t.source, s): t.role for t in tests for s in t.ids}
    return [
        f"{s} of the {train.role} is {s} of the {by_id[(train.source, s)]} (same dataset and id)"
        for train in training
        for s in train.ids
        if (train.source, s) in by_id
    ]


def same_content(training: list[Resolved], tests: list[Resolved]) -> list[str]:
    """One line per training subject holding a frame of a test subject (hashes needed)."""
    by_content = {h: (t.role, s) for t in tests for s in t.ids for h in t.hashes[s]}
    found = []
    for train in training:
        for subject_id in train.ids:
            shared = next(
                (by_content[h] for h in train.hashes[subject_id] if h in by_content), None
            )
            if shared is not None:
                found.append(
                    f"{subject_id} of the {train.role} holds the images of "
                    f"{shared[1]} of the {shared[0]} (same frame content)"
                )
    return found


def check_no_test_subject_in_training(plan: Plan, progress: bool = True) -> None:
    """Raise `LeakageError` naming every subject a model of ``plan`` would train on that is
    also one of its test subjects: by id first (no image read), then by content; nothing
    for a grid without ``pretrain.pool`` and ``evaluate_on``."""
    if not plan.grid.pool and not plan.grid.evaluate_on:
        return
    training = [resolve(s) for s in training_sets(plan)]
    tests = [resolve(s) for s in test_sets(plan)]
    found = same_ids(training, tests)
    if not found:
        found = same_content(
            [with_hashes(r, progress) for r in training], [with_hashes(r, progress) for r in tests]
        )
    if found:
        more = f"\n  ... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        raise LeakageError(
            f"{plan.grid.source}: {len(found)} subject(s) a model trains on are "
            f"test subjects:\n  "
            + "\n  ".join(found[:SHOWN])
            + more
            + "\nexpected no test subject in any training data: take them out of "
            "'pretrain.pool' (e.g. subjects: train, or other options) or out of "
            "the test set"
        )
