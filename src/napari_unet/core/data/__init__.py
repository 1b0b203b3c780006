"""Synthetic images, the classical baseline, metrics and evaluation."""
