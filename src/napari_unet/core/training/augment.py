"""Augmentation of training patches: elastic deformation, flips, rotation, shift, intensity.

The paper's key augmentation is a smooth elastic deformation: random displacement vectors on a
coarse 3x3 grid, drawn from a Gaussian with 10 px standard deviation, interpolated bicubically to
a per-pixel displacement field. Rotation, shift and the elastic field are composed into one
coordinate map, so every array is resampled exactly once (one interpolation blur, not three).

Geometry is applied identically to the image, the label map and the ignore mask. The image is
interpolated smoothly; labels and the ignore mask by nearest neighbour, so object ids survive and
no new ids appear. Coordinates falling outside the patch are mirrored with the half-sample
symmetric rule (``d c b a | a b c d | d c b a``), the same as ``np.pad(mode="symmetric")`` used
by :mod:`napari_unet.core.training.sampling`, so there is one mirror convention everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..settings import setting

# scipy's "reflect" is the half-sample symmetric mirror, i.e. np.pad(mode="symmetric").
MIRROR_MODE = "reflect"


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of :func:`augment`; the defaults follow the paper where it gives a value.

    Parameters
    ----------
    elastic : bool
        Smooth elastic deformation (the paper's main augmentation).
    elastic_grid : int
        Points per side of the coarse displacement grid (3 in the paper).
    elastic_sigma : float
        Standard deviation in pixels of the displacement at each grid point (10 in the paper).
    flips : bool
        Random horizontal and vertical flips.
    rot90 : bool
        Random multiples of 90 degrees (only quarter turns that keep the shape, i.e. any on
        square patches, 0 or 180 degrees on non-square ones).
    rotation : float
        Maximum angle in degrees of a random rotation about the patch centre (uniform in
        ``[-rotation, rotation]``).
    shift : float
        Maximum random translation in pixels along each axis. Random patch placement already
        shifts, so the default is 0.
    brightness : (low, high)
        Range of an additive offset (images are normalised to about [0, 1]).
    contrast : (low, high)
        Range of a factor scaling each channel about its mean.
    gamma : (low, high)
        Range of a gamma exponent applied to each channel rescaled to [0, 1] by its own min/max.
    order : {1, 3}
        Spline order of the image interpolation (labels always use nearest neighbour).
    """

    elastic: bool = setting(
        True, label="elastic", dock=False,
        help="Random smooth stretching of the training pieces, as the paper does: teaches "
             "shapes from few examples.")
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    flips: bool = setting(
        True, label="flips", dock=False,
        help="Random mirror images of the training pieces.")
    rot90: bool = setting(
        True, label="quarter turns", dock=False,
        help="Random rotations of the training pieces by quarter turns.")
    rotation: float = 10.0
    shift: float = 0.0
    brightness: tuple[float, float] = (-0.1, 0.1)
    contrast: tuple[float, float] = (0.8, 1.25)
    gamma: tuple[float, float] = (0.8, 1.25)
    order: int = 1

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "gamma"):
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{name} must be a (low, high) pair of numbers, got {value!r}"
                ) from None
            if not (np.isfinite(low) and np.isfinite(high)) or low > high:
                raise ValueError(f"{name} must be a finite range with low <= high, got {value!r}")
            if name != "brightness" and low <= 0:
                raise ValueError(f"{name} factors must be > 0, got {value!r}")
            object.__setattr__(self, name, (low, high))
        if int(self.elastic_grid) != self.elastic_grid or self.elastic_grid < 2:
            raise ValueError(f"elastic_grid must be an integer >= 2, got {self.elastic_grid!r}")
        object.__setattr__(self, "elastic_grid", int(self.elastic_grid))
        if not np.isfinite(self.elastic_sigma) or self.elastic_sigma < 0:
            raise ValueError(f"elastic_sigma must be >= 0 pixels, got {self.elastic_sigma!r}")
        if not np.isfinite(self.rotation) or not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation must be in [0, 180] degrees, got {self.rotation!r}")
        if not np.isfinite(self.shift) or self.shift < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {self.shift!r}")
        if self.order not in (1, 3):
            raise ValueError(f"order must be 1 (linear) or 3 (cubic), got {self.order!r}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """A configuration that changes nothing (``augment`` returns its inputs unchanged)."""
        return cls(elastic=False, flips=False, rot90=False, rotation=0.0, shift=0.0,
                   brightness=(0.0, 0.0), contrast=(1.0, 1.0), gamma=(1.0, 1.0))

    @classmethod
    def paper(cls) -> AugmentConfig:
        """Geometric augmentation only, as in the paper (elastic, shift, rotation, no intensity)."""
        return cls(flips=False, rot90=False, rotation=10.0, shift=10.0,
                   brightness=(0.0, 0.0), contrast=(1.0, 1.0), gamma=(1.0, 1.0))

    @property
    def has_warp(self) -> bool:
        """Whether a resampling (elastic, rotation or shift) can happen."""
        return (self.elastic and self.elastic_sigma > 0) or self.rotation > 0 or self.shift > 0

    @property
    def has_intensity(self) -> bool:
        """Whether an intensity change can happen."""
        return (self.brightness != (0.0, 0.0) or self.contrast != (1.0, 1.0)
                or self.gamma != (1.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def elastic_displacement(
    shape: tuple[int, int], rng: np.random.Generator, grid: int = 3, sigma: float = 10.0
) -> np.ndarray:
    """Draw a smooth random displacement field.

    Parameters
    ----------
    shape : (H, W)
        Size of the field.
    rng : numpy.random.Generator
        Source of randomness.
    grid : int
        Points per side of the coarse grid spanning the whole field (corners included).
    sigma : float
        Standard deviation of the displacement at each grid point, in pixels.

    Returns
    -------
    (2, H, W) float32
        Row and column displacement of every pixel, the bicubic (cubic spline) interpolation of
        the ``(2, grid, grid)`` random vectors.
    """
    h, w = (int(s) for s in shape)
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    # Separable cubic-spline interpolation: the dense field is Ry @ coarse @ Rx.T, where Ry/Rx
    # interpolate grid samples to pixel positions; two small matrix products instead of a 2D
    # spline evaluation per pixel.
    ry = _cubic_resample_matrix(grid, h)
    rx = _cubic_resample_matrix(grid, w)
    return (ry @ coarse @ rx.T).astype(np.float32)


def _cubic_resample_matrix(n: int, m: int) -> np.ndarray:
    """(m, n) matrix mapping n grid samples (first/last at the ends) to m cubic-spline values."""
    positions = np.linspace(0.0, n - 1, m) if m > 1 else np.zeros(1)
    eye = np.eye(n)
    return np.stack([
        ndi.map_coordinates(eye[:, j], positions[None], order=3, mode="mirror")
        for j in range(n)
    ], axis=1)


def elastic_deform(
    image: np.ndarray,
    instances: np.ndarray | None = None,
    ignore: np.ndarray | None = None,
    *,
    rng: np.random.Generator,
    grid: int = 3,
    sigma: float = 10.0,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Apply one random elastic deformation to an image and (optionally) its labels.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array
        Interpolated with spline ``order``; returned as float32.
    instances : (H, W) int array, optional
        Labels (instances or classes), resampled by nearest neighbour.
    ignore : (H, W) bool array, optional
        Ignore mask, resampled by nearest neighbour.
    rng, grid, sigma
        See :func:`elastic_displacement`.
    order : {1, 3}
        Spline order for the image.

    Returns
    -------
    image, instances, ignore
        The deformed arrays (``None`` where ``None`` was given).
    """
    hw = _check_arrays(image, instances, ignore)
    disp = elastic_displacement(hw, rng, grid, sigma)
    coords = np.indices(hw, dtype=np.float32) + disp
    return _resample(image, instances, ignore, coords, order)


def augment(
    image: np.ndarray,
    instances: np.ndarray,
    ignore: np.ndarray | None,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Randomly augment one training patch.

    Parameters
    ----------
    image : (C, H, W) or (H, W) float array
        Normalised image patch.
    instances : (H, W) int array
        Instance labels (or, in semantic mode, the class map): only moved, never changed.
    ignore : (H, W) bool array or None
        True where not annotated.
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same result.
    config : AugmentConfig, optional
        What to apply (default ``AugmentConfig()``).

    Returns
    -------
    image : float32, same shape as the input
    instances : same dtype and shape; its ids are a subset of the input's
    ignore : bool (or None)

    Notes
    -----
    Order: flips and quarter turns (exact index operations), then one resampling through the
    composed map ``source = R (p - c) + c - t + d(p)`` (rotation ``R`` about the centre ``c``,
    shift ``t``, elastic displacement ``d``), then intensity changes on the image only.
    """
    config = AugmentConfig() if config is None else config
    hw = _check_arrays(image, instances, ignore)
    image = np.asarray(image, dtype=np.float32)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[None]
    arrays = [image, np.asarray(instances), None if ignore is None else np.asarray(ignore, bool)]

    if config.flips:
        for axis, flip in zip((-2, -1), rng.random(2) < 0.5, strict=True):
            if flip:
                arrays = [None if a is None else np.flip(a, axis) for a in arrays]
    if config.rot90:
        k = int(rng.integers(4)) if hw[0] == hw[1] else 2 * int(rng.integers(2))
        if k:
            arrays = [None if a is None else np.rot90(a, k, axes=(-2, -1)) for a in arrays]

    if config.has_warp:
        coords = np.indices(hw, dtype=np.float32)
        if config.rotation > 0 or config.shift > 0:
            angle = np.deg2rad(rng.uniform(-config.rotation, config.rotation))
            ty, tx = rng.uniform(-config.shift, config.shift, size=2)
            cy, cx = (hw[0] - 1) / 2.0, (hw[1] - 1) / 2.0
            dy, dx = coords[0] - cy, coords[1] - cx
            cos, sin = np.cos(angle), np.sin(angle)
            coords = np.stack([cy + cos * dy - sin * dx - ty, cx + sin * dy + cos * dx - tx])
        if config.elastic and config.elastic_sigma > 0:
            coords += elastic_displacement(hw, rng, config.elastic_grid, config.elastic_sigma)
        arrays = list(_resample(*arrays, coords, config.order))

    image, labels, mask = arrays
    if config.has_intensity:
        image = _intensity(np.array(image, dtype=np.float32), rng, config)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if squeeze:
        image = image[0]
    labels = np.array(labels, dtype=np.asarray(instances).dtype)
    mask = None if mask is None else np.array(mask, dtype=bool)
    return image, labels, mask


def _intensity(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Per-channel gamma, contrast and brightness on a (C, H, W) float32 array (in place)."""
    n = image.shape[0]
    gammas = rng.uniform(*config.gamma, size=n)
    contrasts = rng.uniform(*config.contrast, size=n)
    offsets = rng.uniform(*config.brightness, size=n)
    for c in range(n):
        channel = image[c]
        if gammas[c] != 1.0:
            # Images are normalised but not clipped (values may be < 0 or > 1), so gamma acts
            # on the channel rescaled to [0, 1] and is mapped back to the same range.
            low, high = float(channel.min()), float(channel.max())
            if high > low:
                unit = (channel - low) / (high - low)
                channel[...] = low + (high - low) * np.power(unit, gammas[c])
        if contrasts[c] != 1.0:
            mean = float(channel.mean())
            channel[...] = mean + (channel - mean) * contrasts[c]
        if offsets[c] != 0.0:
            channel += offsets[c]
    return image


def _resample(
    image: np.ndarray,
    instances: np.ndarray | None,
    ignore: np.ndarray | None,
    coords: np.ndarray,
    order: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Sample every array at ``coords`` (2, H, W): the image smoothly, labels by nearest."""
    image = np.asarray(image, dtype=np.float32)
    flat = image.reshape(-1, *image.shape[-2:])
    out = np.empty((flat.shape[0], *coords.shape[1:]), np.float32)
    for c in range(flat.shape[0]):
        ndi.map_coordinates(flat[c], coords, output=out[c], order=order, mode=MIRROR_MODE,
                            prefilter=order > 1)
    out = out.reshape(*image.shape[:-2], *coords.shape[1:])
    labels = None
    if instances is not None:
        instances = np.asarray(instances)
        labels = np.empty(coords.shape[1:], instances.dtype)
        ndi.map_coordinates(instances, coords, output=labels, order=0, mode=MIRROR_MODE)
    mask = None
    if ignore is not None:
        mask = ndi.map_coordinates(np.asarray(ignore, np.uint8), coords, order=0,
                                   mode=MIRROR_MODE).astype(bool)
    return out, labels, mask


def _check_arrays(
    image: np.ndarray, instances: np.ndarray | None, ignore: np.ndarray | None
) -> tuple[int, int]:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    hw = image.shape[-2:]
    if min(hw) < 1:
        raise ValueError(f"image is empty, shape {image.shape}")
    for name, arr in (("instances", instances), ("ignore", ignore)):
        if arr is not None and np.shape(arr) != hw:
            raise ValueError(
                f"{name} shape {np.shape(arr)} does not match image shape {tuple(hw)}"
            )
    if instances is not None and not np.issubdtype(np.asarray(instances).dtype, np.integer):
        raise ValueError(f"instances must be integers, got {np.asarray(instances).dtype}")
    return int(hw[0]), int(hw[1])
