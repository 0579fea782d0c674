"""The results store: its layout, typed records, atomic writer, locks and reader (no torch).

Every writer and reader of a run folder goes through this package: the runner, the
executors and the CLI write with `StoreWriter` and the records; the reports read with
`load_store` / `load_stores`; the synthetic test store writes with the same writer. It
imports numpy, pandas and pyarrow, never torch or the harness (`cmrbench.benchmark`).
"""

from cmrbench.store.errors import StoreError
from cmrbench.store.files import (
    JsonlLog,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npz,
    atomic_write_parquet,
    read_json,
)
from cmrbench.store.locks import JobLock
from cmrbench.store.merge import load_stores, merge_stores, run_names
from cmrbench.store.reader import (
    Store,
    load_store,
    one_configuration,
    read_jsonl,
    read_run,
    read_slices,
)
from cmrbench.store.records import (
    CellResult,
    ErrorRecord,
    ExternalResult,
    PretrainResult,
    Record,
    RunRecord,
)
from cmrbench.store.writer import StoredJob, StoreWriter

__all__ = [
    "CellResult",
    "ErrorRecord",
    "ExternalResult",
    "JobLock",
    "JsonlLog",
    "PretrainResult",
    "Record",
    "RunRecord",
    "Store",
    "StoreError",
    "StoreWriter",
    "StoredJob",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npz",
    "atomic_write_parquet",
    "load_store",
    "load_stores",
    "merge_stores",
    "one_configuration",
    "read_json",
    "read_jsonl",
    "read_run",
    "read_slices",
    "run_names",
]
