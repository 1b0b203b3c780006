"""Training: training set, sampling, augmentation, losses, weight map, the trainer."""
