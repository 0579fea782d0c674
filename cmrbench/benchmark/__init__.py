"""The harness: grids, cell specs, planning, training, evaluation, runner and executors."""
