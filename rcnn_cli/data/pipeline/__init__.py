"""The training pipeline: records -> decoded, augmented, batched tensors (the LightningDataModule,
its dataset, augmentations, aspect-ratio batches, repeat-factor sampling and training tiles)."""
