"""Helpers the tests share: paths and the CLI runner (`cli`), NIfTI fixtures, the synthetic
results store, method checks, a plugin net and the Slurm cluster probe. Tests import them as
``from support.cli import run_cli`` (pytest puts ``tests/`` on ``sys.path``)."""
