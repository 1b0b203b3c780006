"""A classical nuclei segmentation baseline: Otsu threshold + distance-transform watershed.

This is what the U-Net has to beat on our accuracy report (docs/models.md); it is also a
reasonable first guess on clean, well-separated nuclei.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import gaussian, threshold_otsu

from ..inference.postprocess import split_touching


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
        Smallest distance between two seeds in pixels; by default from the median size of the
        Otsu foreground components (see :func:`~core.inference.postprocess.split_touching`).
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
    return split_touching(keep[components], min_distance)
