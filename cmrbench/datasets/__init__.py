"""Dataset adapters (one file each), subject records, preprocessing and splits."""

from cmrbench.datasets.base import (DATASETS, DatasetAdapter, DatasetError, create_dataset,
                                    list_datasets)
from cmrbench.datasets.subject import Subject, SubjectError

# Adapter modules register themselves on import.
from cmrbench.datasets import acdc, mnms, phantom, sunnybrook  # noqa: E402,F401  isort: skip

__all__ = ["DATASETS", "DatasetAdapter", "DatasetError", "Subject", "SubjectError",
           "create_dataset", "list_datasets"]
