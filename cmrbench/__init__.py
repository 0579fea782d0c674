"""cmrbench: a benchmark for self-supervised pretraining in cardiac MR cine segmentation."""

__version__ = "0.1.0"
