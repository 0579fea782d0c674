"""cmrbench: a benchmark for self-supervised pretraining in cardiac MR cine segmentation."""

import importlib
from typing import Any

__version__ = "0.1.0"

# Imported on first use: `import cmrbench` (and `cmrbench.reports`) must not load torch.
_LAZY = {
    "run_grid": "cmrbench.benchmark.api",
    "plan_run": "cmrbench.benchmark.api",
    "RunOptions": "cmrbench.benchmark.runner",
    "load_plugins": "cmrbench.plugins",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cmrbench' has no attribute {name!r}")
