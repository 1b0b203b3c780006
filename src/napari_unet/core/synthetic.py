"""Seeded synthetic fluorescence nuclei with instance labels (tests, sample data, default model).

Objects are ellipses of varied size, eccentricity and brightness; a fraction is placed in
touching clusters so that the border weight map matters. Where ellipses overlap, each pixel goes
to the object whose (normalised) ellipse distance is smallest, so touching nuclei meet along a
curved boundary instead of merging.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256),
    n_objects: int | None = None,
    radius: tuple[float, float] = (6.0, 14.0),
    touching: float = 0.5,
    blur: tuple[float, float] = (0.8, 2.0),
    noise: float = 0.04,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic nuclei image and its instance labels.

    Parameters
    ----------
    shape : (H, W)
        Image size.
    n_objects : int, optional
        Number of nuclei to try to place; by default about 30% area coverage.
    radius : (min, max)
        Range of the ellipses' semi-axes in pixels.
    touching : float
        Fraction of nuclei placed against a previous one (clusters of touching nuclei).
    blur : (min, max)
        Range of the Gaussian blur sigma (optics), drawn once per image.
    noise : float
        Standard deviation of the additive Gaussian read noise, relative to the mean brightness.
    seed : int or None
        Seed of the random generator; the same seed gives the same image.

    Returns
    -------
    image : (H, W) float32
        Fluorescence-like intensities, background around 0.1, nuclei around 0.4..1.
    labels : (H, W) int32
        Instance labels, 0 = background, 1..n objects (consecutive).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    if n_objects is None:
        mean_area = np.pi * np.mean(radius) ** 2
        n_objects = max(1, int(0.3 * h * w / mean_area))
    best = np.full(shape, np.inf, np.float32)  # smallest normalised ellipse distance so far
    labels = np.zeros(shape, np.int32)
    centers: list[tuple[float, float, float]] = []
    n_placed = 0
    for _ in range(n_objects):
        a, b = rng.uniform(*radius, size=2)
        theta = rng.uniform(0, np.pi)
        if centers and rng.random() < touching:
            cy, cx, cr = centers[rng.integers(len(centers))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = 0.85 * (cr + (a + b) / 2)  # slight overlap -> a shared boundary
            cy, cx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = max(a, b)
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, h))
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, w))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        e = (u / a) ** 2 + (v / b) ** 2
        window = best[y0:y1, x0:x1]
        take = (e <= 1.0) & (e < window)
        # Skip objects that would be mostly hidden behind earlier ones.
        if take.sum() < 0.6 * (e <= 1.0).sum() or take.sum() < 12:
            continue
        n_placed += 1
        window[take] = e[take]
        labels[y0:y1, x0:x1][take] = n_placed
        centers.append((cy, cx, (a + b) / 2))
    labels = _relabel_consecutive(labels)
    image = _render(labels, rng, blur, noise)
    return image, labels


def synthetic_dataset(
    n: int, shape: tuple[int, int] = (256, 256), seed: int = 0, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``n`` synthetic images: ``(n, H, W)`` float32 images and ``(n, H, W)`` int32 labels."""
    pairs = [synthetic_nuclei(shape, seed=seed * 100_003 + i, **kwargs) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _render(labels: np.ndarray, rng: np.random.Generator, blur: tuple[float, float],
            noise: float) -> np.ndarray:
    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.4, 1.0, n)]).astype(np.float32)
    signal = brightness[labels]
    # Chromatin texture inside nuclei, and dimmer rims.
    texture = ndi.gaussian_filter(rng.normal(0, 1, labels.shape), 2.0).astype(np.float32)
    signal *= 1.0 + 0.6 * texture / (texture.std() + 1e-6) * 0.25
    # Each nucleus dims towards its own outline, also where it touches a neighbour: the faint
    # seam between touching nuclei is the cue (in real images too) that separates them.
    inner = ndi.distance_transform_edt(~find_boundaries(labels, mode="inner"))
    signal *= np.clip(0.6 + inner / 6.0, 0.6, 1.0)
    signal = ndi.gaussian_filter(signal, rng.uniform(*blur))
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    gy, gx = rng.uniform(-0.05, 0.05, 2)
    background = 0.1 + gy * yy + gx * xx
    image = signal + background
    image = image + rng.normal(0, noise * 0.6, labels.shape)
    return np.clip(image, 0, None).astype(np.float32)


def _relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]
