"""Prediction: tile planning, the plane predictor, blockwise and 3D, post-processing, batch."""
