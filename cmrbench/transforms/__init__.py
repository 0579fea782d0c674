"""Batched, on-device image transforms: augmentation (`augment`) and masking (`masking`)."""
