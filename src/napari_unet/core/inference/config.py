"""Settings and results of one prediction job."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..constants import DEFAULT_TILING
from ..runtime.device import check_device_name
from .blockwise import (
    DEFAULT_BLOCK,
    MIN_BLOCK,
)
from .tiles import TILING_MODES
from .volume import check_axes

BLEND_MODES = ("discard", "gaussian")
UNCERTAINTY_METHODS = ("entropy", "variance")


# -- settings and results --------------------------------------------------------------------
@dataclass(frozen=True)
class PredictConfig:
    """Settings of one prediction job.

    Parameters
    ----------
    tile_size : int or (int, int), optional
        Input tile size ``(H, W)``; legal sizes for valid nets, multiples of ``model.divisor``
        for padded nets. None chooses it from a memory budget (free CUDA memory, or
        ``memory_budget`` / a quarter of the free RAM on CPU).
    batch_size : int, optional
        Tiles per forward pass; None chooses it with the tile size (:func:`.tiles.plan_tiles`:
        one large tile per pass on CPU, as many as the memory holds on CUDA).
    tta : bool
        Test-time augmentation: average the 8 flips/rotations of every tile.
    uncertainty : bool
        Also return a per-pixel uncertainty map in [0, 1] (``uncertainty_method``).
    uncertainty_method : {"entropy", "variance"}
        Normalised entropy of the (mean) class probabilities, or the variance of the class
        probabilities over the TTA views (needs ``tta``), averaged over classes, times 4.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    channel_axis : int, optional
        Axis of the channels in the image; None guesses it from ``model.in_channels`` (or takes
        the "C" of ``axes``).
    threshold : float
        Foreground probability threshold for instances.
    min_size : int, optional
        Instances smaller than this many pixels are dropped; None = post-processing default.
    split_touching : bool
        Also split instances at the necks between round parts (distance-transform
        watershed), for touching objects whose gap the net did not separate. Measured on the
        default model's held-out nuclei (docs/models.md); switch it off for long or
        irregular objects, which it may cut.
    object_diameter : float or "auto", optional
        Typical object diameter (pixels) in the image; with the model's ``object_diameter``,
        objects outside the model's band are resampled into it, and those inside it to the
        training diameter when the net is surer of its objects there
        (:func:`.diameter.choose_scale`, decided once per job on a crop); their instances are
        found at that scale and brought back (:func:`labels_at_image_scale`). ``"auto"``
        measures it with the model first (:mod:`.diameter`).
    pixel_size : float, optional
        Micrometres per pixel of the image; used with the model's ``pixel_size`` when no
        diameter is given.
    half : {"auto", True, False}
        float16 on CUDA. ``"auto"`` tries it on the first batch and keeps it only if the labels
        (argmax) are identical to float32. Ignored on CPU/MPS.
    blend : {"discard", "gaussian"}
        Padded nets: keep each tile's centre part, or Gaussian-weighted averaging.
    overlap : int, optional
        Padded nets: pixels of context kept on each side of a tile's kept part. None = the
        net's receptive radius (exact stitching) or the fast fraction of it (``tiling``).
    tiling : {"fast", "exact"}
        Padded nets: ``"exact"`` overlaps tiles by the receptive radius, so the result equals
        the un-tiled prediction to float rounding; ``"fast"`` keeps a third of it, computing
        fewer pixels, with seam differences measured on the shipped model (docs/tiling.md).
    memory_budget : int, optional
        Bytes for the automatic tile size on CPU (default: :func:`.tiles.plan_tiles`'s, and
        ``BLOCKWISE_FORWARD_BUDGET`` for planes predicted block by block).
    keep_probabilities : bool
        Return the probability maps (they are the biggest output: ``num_classes`` float32
        values per pixel).
    axes : str, optional
        The image's axes, one letter from "TZCYX" per axis (e.g. ``"ZYX"``, ``"TCYX"``), from
        the file or the layer. A "Z" stack gives 3D objects; "T" stays slice by slice.
    volume : bool, optional
        True: the stack is a Z stack, build 3D objects (a 3D image without ``axes`` is taken
        as ZYX); False: slice by slice; None: 3D only when ``axes`` says Z (an ambiguous stack
        is segmented slice by slice, with a :class:`Message` saying so).
    z_spacing : float, optional
        Volumes: the distance between slices in lateral pixels (z pixel size / x pixel size);
        None = 1. Used by the 3D split (distances, seed spacing) and the z halo.
    stitch_threshold : float, optional
        Volumes: None labels and splits the foreground in 3D (measured best); a number in
        (0, 1] instead links the 2D objects of neighbouring slices whose IoU reaches it
        (cellpose's stitching).
    orthogonal_views : bool, optional
        Volumes ("2.5D", :mod:`.views`): also predict every XZ and YZ slice (stretched along z
        by ``z_spacing``) and keep a voxel as foreground only where all three views see it, so
        nuclei stacked along z get the gap the net draws between neighbours (merged + split
        nuclei 5.3 % -> 2.7 %, AP@0.75 0.66 -> 0.88), for about 3.5x the prediction time
        (measured, docs/big-images-and-volumes.md). None (default): wherever the objects are
        labelled in 3D (a Z stack, an instance model, no ``stitch_threshold``); True: asked
        for (a note when it cannot apply; not with ``stitch_threshold``); False: XY slices
        only. The uncertainty's entropy is then that of the combined probabilities (the
        variance stays the XY slices').
    block_size : int
        Planes with a side longer than this are predicted and labelled block by block with
        bounded memory (blocks of this side, plus a halo); the objects are those of the
        whole-plane path. Volumes use blocks of 16 slices x ``block_size / 8`` px.
    block_halo : int, optional
        Pixels around each block that are labelled with it; must exceed the largest object
        (a :class:`Message` warns when objects reach it). None: 3x the model's object
        diameter, at least 64.
    """

    tile_size: int | tuple[int, int] | None = None
    batch_size: int | None = None
    tta: bool = False
    uncertainty: bool = False
    uncertainty_method: str = "entropy"
    device: str = "auto"
    channel_axis: int | None = None
    threshold: float = 0.5
    min_size: int | None = None
    split_touching: bool = True
    object_diameter: float | str | None = None
    pixel_size: float | None = None
    half: bool | str = "auto"
    blend: str = "discard"
    overlap: int | None = None
    tiling: str = DEFAULT_TILING
    memory_budget: int | None = None
    keep_probabilities: bool = True
    axes: str | None = None
    volume: bool | None = None
    z_spacing: float | None = None
    stitch_threshold: float | None = None
    orthogonal_views: bool | None = None
    block_size: int = DEFAULT_BLOCK
    block_halo: int | None = None

    def __post_init__(self) -> None:
        tile = self.tile_size
        if tile is not None:
            if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
                tile = (int(tile), int(tile))
            tile = tuple(tile)
            if len(tile) != 2 or any(not is_int(t) or t < 1 for t in tile):
                raise ValueError(f"tile_size must be a positive int or (H, W), got "
                                 f"{self.tile_size!r}")
            object.__setattr__(self, "tile_size", (int(tile[0]), int(tile[1])))
        if self.batch_size is not None and (not is_int(self.batch_size)
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.channel_axis is not None and not is_int(self.channel_axis):
            raise TypeError(f"channel_axis must be an integer or None, got "
                            f"{self.channel_axis!r} ({type(self.channel_axis).__name__})")
        if self.uncertainty_method not in UNCERTAINTY_METHODS:
            raise ValueError(f"uncertainty_method must be one of {UNCERTAINTY_METHODS}, got "
                             f"{self.uncertainty_method!r}")
        if self.uncertainty and self.uncertainty_method == "variance" and not self.tta:
            raise ValueError("uncertainty_method='variance' is the variance over the TTA views "
                             "and needs tta=True")
        _check_number("threshold", self.threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.min_size is not None and (not is_int(self.min_size) or self.min_size < 0):
            raise ValueError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        if isinstance(self.object_diameter, str):
            if self.object_diameter != "auto":
                raise ValueError(f"object_diameter must be a positive number or 'auto', got "
                                 f"{self.object_diameter!r}")
        else:
            _check_positive("object_diameter", self.object_diameter)
        _check_positive("pixel_size", self.pixel_size)
        _check_positive("z_spacing", self.z_spacing)
        if not (self.half is True or self.half is False or self.half == "auto"):
            raise ValueError(f"half must be 'auto', True or False, got {self.half!r}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.overlap is not None and (not is_int(self.overlap) or self.overlap < 0):
            raise ValueError(f"overlap must be a non-negative integer, got {self.overlap!r}")
        if self.tiling not in TILING_MODES:
            raise ValueError(f"tiling must be one of {TILING_MODES}, got {self.tiling!r}")
        if self.memory_budget is not None and (not is_int(self.memory_budget)
                                               or self.memory_budget < 2**20):
            raise ValueError(f"memory_budget is in bytes and must be >= 1 MiB, got "
                             f"{self.memory_budget!r}")
        object.__setattr__(self, "axes", check_axes(self.axes))
        if self.volume is not None and not isinstance(self.volume, bool):
            raise TypeError(f"volume must be True, False or None, got {self.volume!r}")
        if self.stitch_threshold is not None:
            _check_number("stitch_threshold", self.stitch_threshold)
            if not 0.0 < self.stitch_threshold <= 1.0:
                raise ValueError(f"stitch_threshold must be in (0, 1], got "
                                 f"{self.stitch_threshold!r}")
        if self.orthogonal_views is not None and not isinstance(self.orthogonal_views, bool):
            raise TypeError(f"orthogonal_views must be True, False or None, got "
                            f"{self.orthogonal_views!r}")
        if self.orthogonal_views and self.stitch_threshold is not None:
            raise ValueError("orthogonal_views combines the views' probabilities before the 3D "
                             "labelling; it does not work with stitch_threshold (linking 2D "
                             "objects): give one of them")
        if not is_int(self.block_size) or self.block_size < MIN_BLOCK:
            raise ValueError(f"block_size must be an integer >= {MIN_BLOCK}, got "
                             f"{self.block_size!r}")
        if self.block_halo is not None and (not is_int(self.block_halo)
                                            or self.block_halo < 8):
            raise ValueError(f"block_halo must be an integer >= 8 (pixels), got "
                             f"{self.block_halo!r}")
        check_device_name(self.device)


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")


def _check_positive(name: str, value: Any) -> None:
    if value is None:
        return
    _check_number(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class PredictionResult:
    """What :func:`predict` returns.

    Attributes
    ----------
    probabilities : (K, *spatial) float32 or None
        Class probabilities (``K = model.num_classes``; spatial is ``(H, W)`` or
        ``(Z, H, W)``); None when ``keep_probabilities`` is False.
    semantic : (*spatial) uint8
        Arg-max class per pixel.
    instances : (*spatial) int32 or None
        Instance labels (0 = background) for instance-mode nets; ids are unique over a stack,
        and an object of a volume keeps one id through its slices.
    uncertainty : (*spatial) float32 or None
        Per-pixel uncertainty in [0, 1] when requested.
    tile_size : (int, int)
        Input tile size used (after any out-of-memory retries).
    device : str
        Device that ran the net.
    messages : tuple of str
        Notes (fallbacks, rescaling) also yielded as :class:`Message` events.
    volume : bool
        Whether the stack was segmented as a volume (3D objects).
    """

    probabilities: Any
    semantic: Any
    instances: Any
    uncertainty: Any
    tile_size: tuple[int, int]
    device: str
    messages: tuple[str, ...] = field(default_factory=tuple)
    volume: bool = False
