"""Seeded synthetic fluorescence nuclei with instance labels (tests, sample data, default model).

Two layers:

- :func:`synthetic_nuclei` with no ``style`` keeps the original *plain* look (ellipses of varied
  size and brightness on a flat background, a dim seam where nuclei touch): tests and
  benchmarks across the project rely on it, so its output for a given seed does not change.
- With a :class:`NucleiStyle` (or a preset name: ``"widefield"``, ``"confocal"``) the image is
  rendered to look like a real widefield/confocal nuclear stain: irregular outlines; brightness
  varying between nuclei and inside them (chromatin texture, dark nucleoli, bright
  chromocentres); small bright mitotic nuclei next to large dim ones; nuclei out of the focal
  plane; haze; an uneven background and vignetting; Poisson (shot) plus Gaussian (read) noise;
  and integer camera counts at 8, 12 or 16 bits. :func:`varied_nuclei` draws all of that,
  plus size and density, at random from one seed (the default model's training images).

Where objects overlap, each pixel goes to the object whose normalised distance is smallest, so
touching nuclei meet along a curved boundary instead of merging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

#: Kinds of nuclei in a layout (``NucleiLayout.kinds``).
NORMAL, MITOTIC, LARGE_DIM = 0, 1, 2
BIT_DEPTHS = (8, 12, 16)


@dataclass(frozen=True)
class NucleiStyle:
    """How a synthetic image looks beyond the size and layout of its nuclei.

    All "amount" fields default to 0 (off); ``NucleiStyle()`` is close to the plain look but
    rendered by the realistic renderer. Fractions are per nucleus, drawn independently.
    """

    #: Amplitude of the outline's low-frequency wobble, as a fraction of the radius.
    irregularity: float = 0.0
    #: Log-normal sigma of the brightness between nuclei (0: uniform 0.4..1 as the plain look).
    brightness_spread: float = 0.0
    #: Relative amplitude of the chromatin texture inside nuclei (varies per nucleus).
    texture: float = 0.15
    #: Mean number of dark nucleoli per nucleus (Poisson).
    nucleoli: float = 0.0
    #: Mean number of small bright spots (chromocentres) per nucleus (Poisson).
    chromocentres: float = 0.0
    #: Fraction of small (0.45-0.7x radius), bright (2-3.5x), condensed, elongated nuclei.
    mitotic: float = 0.0
    #: Fraction of large (1.3-1.7x radius), dim (0.3-0.6x) nuclei.
    large_dim: float = 0.0
    #: Fraction of labelled nuclei blurred as if just out of the focal plane.
    defocus: float = 0.0
    #: Out-of-focus haze: a widely blurred copy of the signal plus faint unlabelled ghosts of
    #: nuclei in other planes, relative to the mean nucleus brightness.
    haze: float = 0.0
    #: Background level relative to the mean nucleus brightness.
    background: float = 0.15
    #: Amplitude (relative to ``background``) of a smooth, uneven background.
    background_variation: float = 0.0
    #: Relative intensity lost at the far corners (optical vignetting).
    vignetting: float = 0.0
    #: Expected photons collected at a mean nucleus pixel; None: no shot noise.
    photons: float | None = None
    #: Integer camera counts of this many bits (8, 12 or 16); None: float32 intensities.
    bit_depth: int | None = None

    def __post_init__(self) -> None:
        for name in ("irregularity", "brightness_spread", "texture", "nucleoli", "chromocentres",
                     "haze", "background", "background_variation"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"NucleiStyle.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("mitotic", "large_dim", "defocus", "vignetting"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"NucleiStyle.{name} must be in [0, 1], got "
                                 f"{getattr(self, name)!r}")
        if self.mitotic + self.large_dim > 1:
            raise ValueError("NucleiStyle.mitotic + large_dim must be <= 1")
        if self.photons is not None and not self.photons > 0:
            raise ValueError(f"NucleiStyle.photons must be > 0 or None, got {self.photons!r}")
        if self.bit_depth is not None and self.bit_depth not in BIT_DEPTHS:
            raise ValueError(f"NucleiStyle.bit_depth must be one of {BIT_DEPTHS} or None, got "
                             f"{self.bit_depth!r}")


#: Named looks. "widefield": haze, uneven light, moderate noise, 16-bit camera. "confocal":
#: sharper, darker background, fewer photons, 12-bit.
STYLES: dict[str, NucleiStyle] = {
    "widefield": NucleiStyle(
        irregularity=0.06, brightness_spread=0.35, texture=0.25, nucleoli=1.5,
        chromocentres=0.5, mitotic=0.05, large_dim=0.08, defocus=0.15, haze=0.25,
        background=0.2, background_variation=0.4, vignetting=0.3, photons=200.0, bit_depth=16),
    "confocal": NucleiStyle(
        irregularity=0.05, brightness_spread=0.3, texture=0.35, nucleoli=2.0,
        chromocentres=2.0, mitotic=0.05, large_dim=0.05, defocus=0.05, haze=0.05,
        background=0.05, background_variation=0.2, vignetting=0.1, photons=40.0, bit_depth=12),
}


@dataclass(frozen=True)
class NucleiLayout:
    """Where the nuclei are: instance labels and, per label id, the kind of nucleus."""

    labels: np.ndarray  # (H, W) int32, 0 = background, 1..n consecutive
    kinds: np.ndarray   # (n + 1,) int8, kinds[0] unused; NORMAL, MITOTIC or LARGE_DIM


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256),
    n_objects: int | None = None,
    radius: tuple[float, float] = (6.0, 14.0),
    touching: float = 0.5,
    blur: tuple[float, float] = (0.8, 2.0),
    noise: float = 0.04,
    seed: int | None = 0,
    style: NucleiStyle | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic nuclei image and its instance labels.

    Parameters
    ----------
    shape : (H, W)
        Image size.
    n_objects : int, optional
        Number of nuclei to try to place; by default about 30% area coverage.
    radius : (min, max)
        Range of the ellipses' semi-axes in pixels (of normal nuclei; mitotic and large
        nuclei of a ``style`` are scaled from it).
    touching : float
        Fraction of nuclei placed against a previous one (clusters of touching nuclei).
    blur : (min, max)
        Range of the Gaussian blur sigma (optics), drawn once per image.
    noise : float
        Standard deviation of the additive Gaussian read noise, relative to the mean brightness.
    seed : int or None
        Seed of the random generator; the same seed gives the same image.
    style : NucleiStyle or str, optional
        The realistic look (see :class:`NucleiStyle`, :data:`STYLES`); None: the plain look.

    Returns
    -------
    image : (H, W) float32, or uint8/uint16 with ``style.bit_depth``
        Fluorescence-like intensities; plain look: background around 0.1, nuclei 0.4..1.
    labels : (H, W) int32
        Instance labels, 0 = background, 1..n objects (consecutive).
    """
    _check_common(shape, radius, touching, blur, noise)
    rng = np.random.default_rng(seed)
    if style is None:
        layout = place_nuclei(shape, n_objects, radius, touching, rng=rng)
        return _render_plain(layout.labels, rng, blur, noise), layout.labels
    style = _as_style(style)
    layout = place_nuclei(shape, n_objects, radius, touching, style, rng)
    return render_nuclei(layout, style, rng, blur, noise), layout.labels


def place_nuclei(
    shape: tuple[int, int],
    n_objects: int | None = None,
    radius: tuple[float, float] = (6.0, 14.0),
    touching: float = 0.5,
    style: NucleiStyle | None = None,
    rng: np.random.Generator | None = None,
) -> NucleiLayout:
    """Lay out nuclei (labels and kinds) without rendering them; arguments as
    :func:`synthetic_nuclei`. With no ``style`` every nucleus is a plain ellipse."""
    rng = rng if rng is not None else np.random.default_rng(0)
    h, w = shape
    if n_objects is None:
        mean_area = np.pi * np.mean(radius) ** 2
        n_objects = max(1, int(0.3 * h * w / mean_area))
    best = np.full(shape, np.inf, np.float32)  # smallest normalised distance so far
    labels = np.zeros(shape, np.int32)
    centers: list[tuple[float, float, float]] = []
    kinds = [NORMAL]
    for _ in range(n_objects):
        a, b = rng.uniform(*radius, size=2)
        theta = rng.uniform(0, np.pi)
        kind, wobble = NORMAL, None
        if style is not None:
            kind = _draw_kind(style, rng)
            if kind == MITOTIC:  # condensed chromosomes: small and elongated (metaphase plate)
                a, b = a * rng.uniform(0.45, 0.7), b * rng.uniform(0.25, 0.45)
            elif kind == LARGE_DIM:
                a, b = a * rng.uniform(1.3, 1.7), b * rng.uniform(1.3, 1.7)
            a, b = max(a, 1.5), max(b, 1.5)
            if style.irregularity > 0:
                # Harmonics 2..5 of the outline, smaller with order: lumpy, never star-like.
                k = np.arange(2, 6)
                wobble = (rng.normal(0, style.irregularity, 4) / (k - 1),
                          rng.uniform(0, 2 * np.pi, 4))
        if centers and rng.random() < touching:
            cy, cx, cr = centers[rng.integers(len(centers))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = 0.85 * (cr + (a + b) / 2)  # slight overlap -> a shared boundary
            cy, cx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = max(a, b) * (1.0 if wobble is None else 1.0 + np.abs(wobble[0]).sum())
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, h))
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, w))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        e = (u / a) ** 2 + (v / b) ** 2
        if wobble is not None:
            phi = np.arctan2(v / b, u / a)
            amp, phase = wobble
            edge = 1.0 + sum(amp[i] * np.cos((i + 2) * phi + phase[i]) for i in range(4))
            e = e / np.maximum(edge, 0.5) ** 2
        window = best[y0:y1, x0:x1]
        take = (e <= 1.0) & (e < window)
        # Skip objects that would be mostly hidden behind earlier ones.
        if take.sum() < 0.6 * (e <= 1.0).sum() or take.sum() < 12:
            continue
        window[take] = e[take]
        labels[y0:y1, x0:x1][take] = len(kinds)
        kinds.append(kind)
        centers.append((cy, cx, (a + b) / 2))
    labels, kept = _relabel_consecutive(labels)
    return NucleiLayout(labels, np.asarray(kinds, np.int8)[kept])


def render_nuclei(
    layout: NucleiLayout,
    style: NucleiStyle | str,
    rng: np.random.Generator | None = None,
    blur: tuple[float, float] = (0.8, 2.0),
    noise: float = 0.04,
) -> np.ndarray:
    """Render a layout in a realistic ``style``; float32, or integer counts with a bit depth."""
    style = _as_style(style)
    rng = rng if rng is not None else np.random.default_rng(0)
    labels, kinds = layout.labels, layout.kinds
    n = int(labels.max())
    shape = labels.shape
    inside = labels > 0

    # Brightness between nuclei: uniform like the plain look, times a log-normal spread; kinds.
    brightness = rng.uniform(0.4, 1.0, n + 1) * np.exp(rng.normal(0, style.brightness_spread,
                                                                  n + 1))
    brightness[kinds == MITOTIC] *= rng.uniform(2.0, 3.5, int((kinds == MITOTIC).sum()))
    brightness[kinds == LARGE_DIM] *= rng.uniform(0.3, 0.6, int((kinds == LARGE_DIM).sum()))
    # Dim, not invisible: an annotator labels what can be seen, so the net must be able to.
    if n:
        brightness = np.maximum(brightness, 0.2 * float(np.median(brightness[1:])))
    brightness[0] = 0.0
    signal = brightness.astype(np.float32)[labels]

    # Chromatin: fine and coarse texture with an amplitude that varies per nucleus (smooth
    # euchromatin to granular heterochromatin); mitotic chromosomes are the most granular.
    fine = _unit_field(rng, shape, 1.0)
    coarse = _unit_field(rng, shape, 3.0)
    amount = style.texture * rng.uniform(0.3, 1.5, n + 1)
    amount[kinds == MITOTIC] = max(style.texture, 0.2) * 2.0
    mix = rng.uniform(0.2, 0.8, n + 1)
    texture = mix[labels] * fine + (1 - mix[labels]) * coarse
    signal *= np.clip(1.0 + amount[labels] * texture, 0.2, None)

    # Dark nucleoli and bright chromocentres: small spots inside normal/large nuclei.
    spots = np.zeros(shape, np.float32)
    for count, sign in ((style.nucleoli, -1.0), (style.chromocentres, 1.0)):
        if count > 0:
            _add_spots(spots, labels, kinds, count, sign, rng)
    signal *= np.clip(1.0 + spots, 0.1, None) * inside

    # Each nucleus dims towards its own outline, also where it touches a neighbour: the faint
    # seam between touching nuclei is the cue (in real images too) that separates them.
    inner = ndi.distance_transform_edt(~find_boundaries(labels, mode="inner"))
    signal *= np.clip(0.6 + inner / 6.0, 0.6, 1.0)

    # Nuclei just out of the focal plane: blurred more and a little dimmer, still labelled.
    if style.defocus > 0 and n:
        out = rng.random(n + 1) < style.defocus
        out[0] = False
        if out.any():
            mask = out[labels]
            signal = np.where(mask, 0.0, signal) + ndi.gaussian_filter(
                np.where(mask, signal * 0.8, 0.0), rng.uniform(2.0, 4.0))
    mean_level = float(signal[inside].mean()) if inside.any() else 0.7

    # Optics, then out-of-focus light from this plane and from nuclei in other planes.
    signal = ndi.gaussian_filter(signal, rng.uniform(*blur))
    if style.haze > 0:
        signal += style.haze * ndi.gaussian_filter(signal, rng.uniform(6.0, 15.0))
        signal += style.haze * mean_level * _ghosts(shape, labels, rng)

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = style.background * mean_level * (
        1.0 + style.background_variation * _unit_field(rng, shape, max(h, w) / 4.0, 1.0))
    image = signal + np.clip(background, 0.0, None)
    if style.vignetting > 0:
        cy, cx = h / 2 + rng.uniform(-0.15, 0.15) * h, w / 2 + rng.uniform(-0.15, 0.15) * w
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
        image *= 1.0 - style.vignetting * np.clip(r2, 0.0, 1.0)
    image = np.clip(image, 0.0, None)

    # Detector: shot noise from the photon count, then Gaussian read noise.
    if style.photons is not None:
        scale = style.photons / max(mean_level, 1e-6)
        image = rng.poisson(image * scale).astype(np.float32) / scale
    image = image + rng.normal(0, noise * mean_level, shape).astype(np.float32)
    if style.bit_depth is None:
        return np.clip(image, 0.0, None).astype(np.float32)
    return _to_counts(image, style.bit_depth, rng)


def varied_nuclei(
    shape: tuple[int, int] = (256, 256),
    seed: int | None = 0,
    diameter: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic image whose look, size and density are all drawn from ``seed``.

    Median nucleus diameter log-uniform in 8-60 px (or about ``diameter``); density from sparse
    to crowded touching clusters; a random mix of widefield/confocal looks; photons 5-2,000 per
    nucleus pixel (low to high SNR); float32 or 8/12/16-bit counts. The default model's
    synthetic training data.
    """
    rng = np.random.default_rng(seed)
    style, kwargs = random_style(rng, diameter)
    layout = place_nuclei(shape, kwargs["n_objects_for"](shape), kwargs["radius"],
                          kwargs["touching"], style, rng)
    image = render_nuclei(layout, style, rng, kwargs["blur"], kwargs["noise"])
    return image, layout.labels


def random_style(rng: np.random.Generator, diameter: float | None = None):
    """Draw a style and layout settings (used by :func:`varied_nuclei`)."""
    d = float(np.exp(rng.uniform(np.log(8.0), np.log(60.0)))) if diameter is None else diameter
    spread = rng.uniform(0.1, 0.35)
    radius = (d / 2 * (1 - spread), d / 2 * (1 + spread))
    coverage = float(np.exp(rng.uniform(np.log(0.04), np.log(0.55))))
    touching = float(rng.uniform(0.0, 0.9)) if coverage > 0.15 else float(rng.uniform(0, 0.4))
    base = STYLES["widefield" if rng.random() < 0.5 else "confocal"]
    photons = float(np.exp(rng.uniform(np.log(5.0), np.log(2000.0))))
    style = replace(
        base,
        irregularity=rng.uniform(0.0, 0.12),
        brightness_spread=rng.uniform(0.1, 0.5),
        texture=rng.uniform(0.05, 0.5),
        nucleoli=rng.uniform(0.0, 3.0),
        chromocentres=rng.uniform(0.0, 3.0) if rng.random() < 0.5 else 0.0,
        mitotic=rng.uniform(0.0, 0.12),
        large_dim=rng.uniform(0.0, 0.15),
        defocus=rng.uniform(0.0, 0.3),
        haze=rng.uniform(0.0, 0.5) * base.haze / 0.25,
        background=rng.uniform(0.02, 0.4),
        background_variation=rng.uniform(0.0, 0.8),
        vignetting=rng.uniform(0.0, 0.5),
        photons=photons,
        bit_depth=(None, 8, 12, 16)[rng.integers(4)],
    )

    def n_objects_for(shape: tuple[int, int]) -> int:
        return max(1, int(coverage * shape[0] * shape[1] / (np.pi * (d / 2) ** 2)))

    blur_low = rng.uniform(0.5, 1.5)
    kwargs = dict(radius=radius, touching=touching, n_objects_for=n_objects_for,
                  blur=(blur_low, blur_low + rng.uniform(0.0, 1.5)),
                  noise=rng.uniform(0.005, 0.05))
    return style, kwargs


def synthetic_dataset(
    n: int, shape: tuple[int, int] = (256, 256), seed: int = 0, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``n`` synthetic images: ``(n, H, W)`` images and ``(n, H, W)`` int32 labels."""
    pairs = [synthetic_nuclei(shape, seed=seed * 100_003 + i, **kwargs) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameter (px) of each object of an instance label image: 2 sqrt(area / pi)."""
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    areas = areas[areas > 0].astype(np.float64)
    return 2.0 * np.sqrt(areas / np.pi)


# -- helpers ---------------------------------------------------------------------------------
def _check_common(shape, radius, touching, blur, noise) -> None:
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape!r}")
    if not 0 < radius[0] <= radius[1]:
        raise ValueError(f"radius must be (min, max) with 0 < min <= max, got {radius!r}")
    if not 0 <= touching <= 1:
        raise ValueError(f"touching must be in [0, 1], got {touching!r}")
    if not 0 <= blur[0] <= blur[1]:
        raise ValueError(f"blur must be (min, max) with 0 <= min <= max, got {blur!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")


def _as_style(style: NucleiStyle | str) -> NucleiStyle:
    if isinstance(style, NucleiStyle):
        return style
    if isinstance(style, str) and style in STYLES:
        return STYLES[style]
    raise ValueError(f"style must be a NucleiStyle or one of {sorted(STYLES)}, got {style!r}")


def _draw_kind(style: NucleiStyle, rng: np.random.Generator) -> int:
    x = rng.random()
    if x < style.mitotic:
        return MITOTIC
    if x < style.mitotic + style.large_dim:
        return LARGE_DIM
    return NORMAL


def _unit_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float,
                peak: float | None = None) -> np.ndarray:
    """Smooth Gaussian noise with unit standard deviation (or scaled to max |x| = ``peak``)."""
    field = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), sigma)
    if peak is not None:
        return field / (np.abs(field).max() + 1e-12) * peak
    return field / (field.std() + 1e-12)


def _add_spots(spots: np.ndarray, labels: np.ndarray, kinds: np.ndarray, mean_count: float,
               sign: float, rng: np.random.Generator) -> None:
    """Add Gaussian spots (relative change ``sign`` x 0.3-0.7) at random pixels of nuclei."""
    slices = ndi.find_objects(labels)
    for i, where in enumerate(slices, start=1):
        if where is None or kinds[i] == MITOTIC:
            continue
        mask = labels[where] == i
        area = int(mask.sum())
        r = np.sqrt(area / np.pi)
        for _ in range(rng.poisson(mean_count)):
            ys, xs = np.nonzero(mask)
            k = rng.integers(len(ys))
            s = max(0.8, r * rng.uniform(0.08, 0.2) if sign < 0 else r * rng.uniform(0.04, 0.1))
            yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
            g = np.exp(-((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) / (2 * s * s))
            spots[where] += (sign * rng.uniform(0.3, 0.7) * g * mask).astype(np.float32)


def _ghosts(shape: tuple[int, int], labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint, widely blurred blobs where other planes' nuclei would be (unlabelled)."""
    ghosts = np.zeros(shape, np.float32)
    diam = equivalent_diameters(labels)
    r = float(np.median(diam)) / 2 if diam.size else 8.0
    n = rng.poisson(max(1.0, shape[0] * shape[1] * 0.05 / (np.pi * r * r)))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for _ in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ghosts[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] += rng.uniform(0.3, 1.0)
    return ndi.gaussian_filter(ghosts, max(3.0, r * 0.6))


def _to_counts(image: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Camera counts: an offset, a gain that puts the brightest pixels at 20-90% of full
    scale, rounded and clipped to ``bits``."""
    full = 2**bits - 1
    offset = rng.uniform(0.0, 0.05) * full
    top = float(np.percentile(image, 99.9)) or 1.0
    gain = rng.uniform(0.2, 0.9) * (full - offset) / top
    counts = np.clip(np.round(offset + gain * image), 0, full)
    return counts.astype(np.uint8 if bits == 8 else np.uint16)


def _render_plain(labels: np.ndarray, rng: np.random.Generator, blur: tuple[float, float],
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


def _relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1..n, and the old ids kept (0 first) to index per-id arrays."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels], np.concatenate([[0], ids])
