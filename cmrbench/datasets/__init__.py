"""Dataset adapters (one file each), subject records, preprocessing and splits.

Adapter modules register themselves (``@DATASETS.register``) when `create_dataset` or
`list_datasets` first discovers them (`cmrbench.plugins.discover`: this package and entry
points; a plugin folder's once `cmrbench.plugins.load_plugins` has loaded it), so that
importing `cmrbench.datasets.subject` does not import nibabel or pydicom (GPU boxes may
lack them). `network_view` (what the network sees of a subject) is imported on first use:
it needs torch.
"""

from typing import Any

from cmrbench.datasets.base import (
    DATASETS,
    DatasetAdapter,
    DatasetError,
    create_dataset,
    list_datasets,
)
from cmrbench.datasets.subject import Subject, SubjectError

__all__ = [
    "DATASETS",
    "DatasetAdapter",
    "DatasetError",
    "Subject",
    "SubjectError",
    "create_dataset",
    "list_datasets",
    "network_view",
]


def __getattr__(name: str) -> Any:
    if name == "network_view":
        from cmrbench.datasets.view import network_view

        return network_view
    raise AttributeError(f"module 'cmrbench.datasets' has no attribute {name!r}")
