"""Dataset adapters (one file each), subject records, preprocessing and splits."""

from cmrbench.datasets.base import (DATASETS, DatasetAdapter, DatasetError, create_dataset,
                                    list_datasets)
from cmrbench.datasets.subject import Subject, SubjectError

__all__ = ["DATASETS", "DatasetAdapter", "DatasetError", "Subject", "SubjectError",
           "create_dataset", "list_datasets"]
