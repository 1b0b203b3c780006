"""A classical nuclei segmentation baseline: Otsu threshold + distance-transform watershed.

This is what the U-Net has to beat on our accuracy report (docs/models.md); it is also a
reasonable first guess on clean, well-separated nuclei.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed


def otsu_watershed(
    image: np.ndarray, smoothing: float = 1.0, min_distance: int | None = None,
    min_size: int = 30,
) -> np.ndarray:
    """Segment bright blobs on a dark background into instances.

    Parameters
    ----------
    image : (H, W) array
        One fluorescence channel.
    smoothing : float
        Gaussian sigma applied before thresholding (suppresses noise and texture).
    min_distance : int, optional
        Smallest distance between two seeds in pixels; by default a third of the median
        equivalent radius of the Otsu foreground components (so one seed per round object).
    min_size : int
        Components smaller than this many pixels are dropped.

    Returns
    -------
    (H, W) int32
        Instance labels, 0 = background.
    """
    if image.ndim != 2:
        raise ValueError(f"otsu_watershed expects a 2D image, got shape {image.shape}")
    smooth = gaussian(image.astype(np.float32), smoothing, preserve_range=True)
    if np.ptp(smooth) == 0:
        return np.zeros(image.shape, np.int32)
    components, _ = ndi.label(ndi.binary_fill_holes(smooth > threshold_otsu(smooth)))
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    if not keep.any():
        return np.zeros(image.shape, np.int32)
    mask = keep[components]
    distance = ndi.distance_transform_edt(mask)
    if min_distance is None:
        min_distance = max(2, int(np.sqrt(np.median(sizes[keep]) / np.pi) / 1.5))
    # Smooth the distance map so one object does not get several ridge peaks.
    peaks = peak_local_max(ndi.gaussian_filter(distance, 1.0), min_distance=min_distance,
                           labels=components * mask, exclude_border=False)
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)
