"""Seeded synthetic 3D nuclei volumes with anisotropic z-spacing (tests and the 3D benchmark).

The lateral layout comes from the 2D generator
(:func:`~napari_unet.core.data.synthetic.synthetic_nuclei`): each of its ellipses becomes a body of
revolution whose z half-height equals its largest in-plane inscribed radius, so nuclei are
roughly round in physical units. Several such layers are stacked at
different depths (objects of neighbouring layers may touch along z), voxels where two bodies
overlap go to the one they are deeper inside, and the volume is rendered like the 2D images
(brightness per nucleus, dimmer towards its own outline, optical blur, background, read noise) so
that a net trained on the 2D images sees familiar slices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from .synthetic import synthetic_nuclei

#: Z step in units of the lateral pixel size (2: slices twice as far apart as pixels).
DEFAULT_Z_SPACING = 2.0


def synthetic_nuclei_volume(
    shape: tuple[int, int, int] = (32, 256, 256),
    z_spacing: float = DEFAULT_Z_SPACING,
    layers: int | None = None,
    radius: tuple[float, float] = (6.0, 14.0),
    touching: float = 0.5,
    blur: float = 1.2,
    noise: float = 0.04,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic nuclei volume and its 3D instance labels.

    Parameters
    ----------
    shape : (Z, H, W)
        Volume size in slices and pixels.
    z_spacing : float
        Distance between slices in lateral pixels (> 0); 2 means a nucleus of radius 10 px spans
        about 10 slices.
    layers : int, optional
        Layers of nuclei stacked in depth; by default as many as fit (one per ~2 mean radii).
    radius : (min, max)
        Range of the in-plane semi-axes in pixels (as in the 2D generator).
    touching : float
        Fraction of nuclei of a layer placed against a previous one.
    blur : float
        Lateral Gaussian sigma of the optics in pixels (z: ``blur / z_spacing`` slices).
    noise : float
        Standard deviation of the read noise relative to the mean brightness.
    seed : int or None
        The same seed gives the same volume.

    Returns
    -------
    image : (Z, H, W) float32
    labels : (Z, H, W) int32
        0 = background, objects 1..n (consecutive).
    """
    n_z, h, w = (int(s) for s in shape)
    if min(n_z, h, w) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape!r}")
    if not (np.isfinite(z_spacing) and z_spacing > 0):
        raise ValueError(f"z_spacing must be a positive number, got {z_spacing!r}")
    rng = np.random.default_rng(seed)
    mean_r = float(np.mean(radius))
    depth_px = n_z * z_spacing
    if layers is None:
        layers = max(1, int(round(depth_px / (2.2 * mean_r))))
    best = np.full((n_z, h, w), np.inf, np.float32)  # how far out of its body each voxel is
    labels = np.zeros((n_z, h, w), np.int32)
    zz = (np.arange(n_z, dtype=np.float32) + 0.5) * z_spacing
    next_id = 1
    for layer in range(layers):
        centre_z = (layer + 0.5) * depth_px / layers
        _, layout = synthetic_nuclei((h, w), radius=radius, touching=touching,
                                     seed=int(rng.integers(2**31)))
        for box_id, box in enumerate(ndi.find_objects(layout), start=1):
            if box is None:
                continue
            region = np.pad(layout[box] == box_id, 1)
            inside = ndi.distance_transform_edt(region)[1:-1, 1:-1].astype(np.float32)
            r_max = float(inside.max())
            # 0 at the outline, 1 at the centre: an in-plane "depth inside the ellipse"
            q = np.clip(inside / r_max, 0.0, 1.0)
            cz = centre_z + rng.uniform(-0.25, 0.25) * depth_px / layers
            dz = (zz - cz) / max(r_max, 1.0)  # half-height = the in-plane inscribed radius
            # normalised distance of a body of revolution: 1 on its surface
            e = dz[:, None, None] ** 2 + (1.0 - q[None]) ** 2
            e[:, ~(q > 0)] = np.inf
            window = best[:, box[0], box[1]]
            take = (e <= 1.0) & (e < window)
            if take.sum() < 20:
                continue
            window[take] = e[take]
            labels[:, box[0], box[1]][take] = next_id
            next_id += 1
    labels = _relabel(labels)
    image = _render(labels, rng, z_spacing, blur, noise)
    return image, labels


def _render(labels: np.ndarray, rng: np.random.Generator, z_spacing: float, blur: float,
            noise: float) -> np.ndarray:
    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.4, 1.0, n)]).astype(np.float32)
    signal = brightness[labels]
    texture = ndi.gaussian_filter(rng.normal(0, 1, labels.shape).astype(np.float32),
                                  (2.0 / z_spacing, 2.0, 2.0))
    signal *= 1.0 + 0.15 * texture / (texture.std() + 1e-6)
    # dimmer towards each nucleus' own outline, also where it touches a neighbour (the seam)
    inner = ndi.distance_transform_edt(~find_boundaries(labels, mode="inner"),
                                       sampling=(z_spacing, 1.0, 1.0))
    signal *= np.clip(0.6 + inner / 6.0, 0.6, 1.0).astype(np.float32)
    signal = ndi.gaussian_filter(signal, (blur / z_spacing, blur, blur))
    n_z, h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    gy, gx = rng.uniform(-0.05, 0.05, 2)
    image = signal + (0.1 + gy * yy + gx * xx)[None]
    image = image + rng.normal(0, noise * 0.6, labels.shape)
    return np.clip(image, 0, None).astype(np.float32)


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


__all__ = ["DEFAULT_Z_SPACING", "synthetic_nuclei_volume"]
