"""The common harness: grid, cells, store, executors, nets, augmentation, training, metrics."""
