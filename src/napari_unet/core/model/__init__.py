"""The network: blocks, the U-Net and its presets, model metadata, checkpoints, the model card."""
