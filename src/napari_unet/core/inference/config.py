"""Settings and results of one prediction job."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..constants import DEFAULT_TILING
from ..runtime.device import DEVICE_CHOICES, check_device_name
from ..settings import check_declared, number_or, setting
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
    """Settings of one prediction job; each field's help is in its declaration below.

    Notes for developers: ``tile_size`` may also be ``(H, W)``; legal sizes are checked where
    the config meets the model (:func:`.tiles.check_tile_size`). ``object_diameter`` outside
    the model's band resamples the image into it, inside it the scale is chosen once per job
    on a crop (:func:`.diameter.choose_scale`); instances are found at that scale and brought
    back (:func:`.scaling.labels_at_image_scale`). Planes longer than ``block_size`` are
    labelled block by block (:mod:`.blockwise`) with the objects of the whole-plane path;
    volumes use blocks of 16 slices x ``block_size / 8`` px. ``orthogonal_views`` is
    :mod:`.views` (measured in docs/big-images-and-volumes.md).
    """

    tile_size: int | tuple[int, int] | None = setting(
        None, label="tile size", unit="px", kind="int", flag="--tile-size", aliases=("--tile",),
        minimum=0, maximum=8192, step=16, none_text="auto", advanced=True,
        help="Side of the square pieces the image is cut into for the network. Auto picks it "
             "from the memory available; set it lower only if prediction runs out of memory.")
    batch_size: int | None = setting(
        None, label="tiles per pass", kind="int", flag="--batch-size", minimum=0, maximum=256,
        none_text="auto", advanced=True, dock=False,
        help="How many tiles the network takes at once. Auto picks what computes the fewest "
             "pixels within the memory available.")
    tta: bool = setting(
        False, label="test-time augmentation", flag="--tta",
        help="Average the predictions of 8 flipped and rotated copies of each tile: slightly "
             "smoother outlines and a better uncertainty map, 8 times slower.")
    uncertainty: bool = setting(
        False, label="uncertainty map", dock=False,
        elsewhere="`--uncertainty FILE` (predict); the Predict dock's uncertainty layer",
        help="Also make a map of how unsure the model is at each pixel, from 0 (sure) to 1: "
             "paint where it is bright, then fine-tune.")
    uncertainty_method: str = setting(
        "entropy", label="uncertainty measure", flag="--uncertainty-method", advanced=True,
        dock=False, choices=(("entropy", "entropy"), ("variance", "variance over augmentations")),
        help="Entropy: how evenly the model splits a pixel between classes. Variance: how much "
             "the 8 test-time augmentations disagree (needs test-time augmentation).")
    device: str = setting(
        "auto", label="device", flag="--device", kind="choice", advanced=True, dock=False,
        choices=tuple((d, d) for d in DEVICE_CHOICES), parse=check_device_name,
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="Where the network runs. Auto takes an NVIDIA GPU, then an Apple GPU, then the "
             "processor.")
    channel_axis: int | None = setting(
        None, label="channel axis", kind="int", flag="--channel-axis", minimum=-8, maximum=8,
        none_text="from the file", dock=False,
        help="Which axis of the image holds the channels, counted from 0 (an RGB image's "
             "colours count as channels). Taken from the file when it says.")
    channel: int | None = setting(
        None, label="channel", kind="int", flag="--channel", minimum=-1, maximum=1024,
        none_text="all",
        help="Which channel of a multi-channel or RGB image the model sees, counted from 0. "
             "Needed when the model takes one channel and the image has several.")
    threshold: float = setting(
        0.5, label="threshold", flag="--threshold", minimum=0.01, maximum=0.99, step=0.05,
        help="Foreground probability above which a pixel belongs to an object. Lower it when "
             "objects come out too small or are missed; raise it when they merge.")
    min_size: int | None = setting(
        None, label="minimum size", unit="px", kind="int", flag="--min-size", minimum=0,
        maximum=1_000_000, step=10, none_text="auto",
        help="Objects smaller than this many pixels are dropped. Auto drops only specks.")
    split_touching: bool = setting(
        True, label="split touching objects", flag="--split",
        help="Cut objects that touch apart at the narrow neck between them. Turn it off for "
             "long or irregular objects, which it may cut in pieces.")
    object_diameter: float | str | None = setting(
        None, label="object diameter", unit="px", kind="float", flag="--diameter",
        minimum=1.0, maximum=10_000.0, step=1.0, decimals=1, none_text="model scale",
        metavar="PX|auto", parse=number_or("auto", float, "a number of pixels"),
        help="Typical diameter of your objects in pixels. Images whose objects are much smaller "
             "or larger than the model's are rescaled to its size first. Auto measures it "
             "with the model; leave it empty when your objects look like the model's.")
    pixel_size: float | None = setting(
        None, label="pixel size", unit="µm", kind="float", dock=False,
        elsewhere="from the file or the layer",
        help="Micrometres per pixel of the image, from the file or the layer; used with the "
             "model's pixel size when no object diameter is given.")
    half: bool | str = setting(
        "auto", label="half precision", dock=False,
        choices=(("auto", "auto"), (True, "on"), (False, "off")),
        help="Compute in 16-bit floats on an NVIDIA GPU: faster, and auto keeps it only when "
             "the labels come out identical.")
    blend: str = setting(
        "discard", label="tile blending", dock=False,
        choices=(("discard", "keep each tile's centre"), ("gaussian", "weighted average")),
        help="How overlapping tiles are joined: each pixel from the tile it is most central "
             "in, or a weighted average of the tiles that see it.")
    overlap: int | None = setting(
        None, label="tile overlap", unit="px", kind="int", dock=False, none_text="auto",
        help="Pixels of context around the part of a tile that is kept. Auto follows the "
             "tiling setting.")
    tiling: str = setting(
        DEFAULT_TILING, label="tiling", flag="--tiling", advanced=True,
        choices=(("exact", "exact (same as untiled)"), ("fast", "fast")),
        help="Exact: tiles overlap enough that the result equals predicting the whole image "
             "at once. Fast: less overlap, fewer pixels computed, a few pixels may differ "
             "along tile borders.")
    memory_budget: int | None = setting(
        None, label="memory budget", unit="bytes", kind="int", dock=False, none_text="auto",
        help="Memory the automatic tile size may plan for on the processor.")
    keep_probabilities: bool = setting(
        True, label="probability maps", dock=False,
        elsewhere="`--probabilities` (predict, batch); the docks' probability outputs",
        help="Also keep the probability of each class at each pixel (the largest output).")
    axes: str | None = setting(
        None, label="axes", kind="text", flag="--axes", metavar="LETTERS", dock=False,
        none_text="from the file",
        help="The image's axes as letters from TZCYX, for example ZYX for a Z stack. Leave it "
             "out to take them from the file.")
    volume: bool | None = setting(
        None, label="Z stacks", flag="--3d", kind="choice",
        choices=((None, "auto (from the file)"), (True, "3D objects"),
                 (False, "slice by slice")),
        help="Whether the slices of a stack are one 3D volume (objects are joined across "
             "slices) or separate images. Auto follows the file's axes.")
    z_spacing: float | None = setting(
        None, label="z spacing", kind="float", flag="--z-spacing", minimum=0.0,
        maximum=1000.0, none_text="from the file", advanced=True, dock=False,
        help="3D: the distance between slices, in pixels of the image plane (z step divided "
             "by pixel size). Leave it out to take it from the file.")
    stitch_threshold: float | None = setting(
        None, label="link slices by overlap", kind="float", flag="--stitch-threshold",
        minimum=0.0, maximum=1.0, none_text="off", advanced=True, dock=False,
        help="3D: instead of building 3D objects, join objects of neighbouring slices that "
             "overlap at least this much (0 to 1).")
    orthogonal_views: bool | None = setting(
        None, label="side views", flag="--orthogonal-views", kind="choice", advanced=True,
        choices=((None, "auto: stacks 32 px tall or more"), (True, "always"),
                 (False, "off: XY slices only")),
        help="3D: also predict the stack seen from the side and keep only what all views "
             "see, which separates objects stacked on top of each other; about 2 to 3 times "
             "the time of the XY slices alone. Auto uses them where 3D objects are built "
             "and the stack seen from the side (slices times z spacing) is at least 32 px "
             "tall.")
    block_size: int = setting(
        DEFAULT_BLOCK, label="block size", unit="px", flag="--block-size", minimum=MIN_BLOCK,
        maximum=1_000_000, step=256, advanced=True, dock=False,
        help="Images wider or taller than this are segmented block by block, so memory stays "
             "small whatever the image size.")
    block_halo: int | None = setting(
        None, label="block margin", unit="px", kind="int", dock=False, none_text="auto",
        help="Pixels around each block that are labelled with it; must be larger than the "
             "largest object. Auto: three object diameters.")

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
        if self.channel is not None and (not is_int(self.channel) or self.channel < 0):
            raise ValueError(f"channel must be a channel number from 0, got {self.channel!r}")
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
        check_declared(self)  # the declared kinds and ranges: the docks' and options' bounds


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


def cost_note(config: PredictConfig, views: bool) -> str | None:
    """What makes this run slower than a plain one, said when it starts (a setting remembered
    from an earlier session should not make a run 8 times longer without a word)."""
    costs = []
    if config.tta:
        costs.append("test-time augmentation: 8 passes per tile, about 8 times the time")
    if views:
        costs.append("side views of the stack (XZ and YZ slices too): about 2 to 3 times the "
                     "time of the XY slices alone")
    return "; ".join(costs) or None


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


def stack_layout(axes: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...] | None]:
    """Label axes (no C) and, when more than one axis leads Y, X, the merged stack shape."""
    label_axes = axes.replace("C", "")
    lead = [a for a in label_axes if a not in "YX"]
    if len(lead) <= 1:
        return label_axes, None
    lead_shape = tuple(shape[axes.index(a)] for a in lead)
    return label_axes, lead_shape


def file_settings(pconfig: PredictConfig, data: Any) -> PredictConfig:
    """The file's own channel axis, axes and z spacing, each unless the settings give it
    (``data``: a ``core.io.read_image`` result). The z spacing comes from the file's voxel size
    whenever the file has a Z axis and the settings give no spacing, also when they give the
    axes (shared by ``batch`` and ``predict`` on the command line and the Batch dock)."""
    changes: dict[str, Any] = {}
    if pconfig.channel_axis is None and data.channel_axis is not None:
        changes["channel_axis"] = data.channel_axis
    if pconfig.axes is None and data.axes:
        changes["axes"] = data.axes
    sizes = data.pixel_size
    if pconfig.z_spacing is None and sizes and "Z" in data.axes and len(sizes) == 3 \
            and sizes[0] and sizes[-1]:
        changes["z_spacing"] = float(sizes[0]) / float(sizes[-1])
    return replace(pconfig, **changes) if changes else pconfig
