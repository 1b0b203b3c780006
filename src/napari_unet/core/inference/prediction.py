"""Overlap-tile prediction (the paper's Fig. 2) for images of any size, stacks and channels.

The entry points: ``predict`` (a generator of events) and ``predict_image``. Settings and results
are in :mod:`.config`, the stack-level job in :mod:`.job`, tile geometry in :mod:`.tiles`, the
plane predictor in :mod:`.predictor`, dask in :mod:`.distributed`.

Valid-convolution nets
    The image is mirror-padded by the net's context (numpy ``"symmetric"``, which is dask's
    ``"reflect"``; one mode everywhere) and cut into input tiles of a legal size whose origins
    step by a multiple of ``model.divisor`` (2**depth). A depth-d net is shift-equivariant only
    by such multiples, so the stitched probabilities equal the un-tiled valid prediction of the
    mirror-padded image (to float rounding), whatever the tile size.

Padded ("same") nets
    Tiles overlap by ``2 * overlap`` pixels; by default ``overlap`` is the net's receptive
    radius (the context of the valid net of the same depth), and each tile keeps only the part
    nearer to its centre than to a neighbour's ("discard"), which then also equals the un-tiled
    prediction: no pixel that is kept sees a tile border. Smaller overlaps are faster and leave
    seams; ``blend="gaussian"`` averages overlapping tiles instead (see docs/performance.md for
    the seam errors measured for both).

Stacks ``(Z, [C,] H, W)`` are predicted slice by slice (one 2D plane in memory at a time, with
one progress event per slice), so inputs may be memory maps, zarr or dask arrays of any size;
outputs go into caller-supplied arrays (``out=``) or, when large, unlinked temporary memory maps.

Planes larger than ``block_size`` are predicted and labelled block by block
(:mod:`.blockwise`), so memory stays bounded whatever the plane's area; smaller planes take the
whole-plane path, which gives the same objects. Z stacks (``axes`` with a Z, or
``volume=True``) become 3D objects: the net still sees single slices, then the foreground is
labelled and split in 3D, block by block (or, with ``stitch_threshold``, 2D objects are linked
across slices by overlap); by default the XZ and YZ slices are predicted too and folded into
the foreground first (``orthogonal_views``, :mod:`.views`). Stacks whose axis is not known stay
slice by slice, with a note.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..events import Message, Progress
from ..model.meta import ModelMeta
from ..model.unet import UNet
from .config import PredictConfig, PredictionResult
from .job import PredictionJob


def as_model_meta(meta: Any, model: UNet) -> ModelMeta:
    """``meta`` as a :class:`ModelMeta` (None: the model's defaults; a dict: validated)."""
    if meta is None:
        return ModelMeta.for_model(model)
    if isinstance(meta, ModelMeta):
        return meta
    if isinstance(meta, Mapping):
        return ModelMeta.from_dict(meta, model)
    raise TypeError(f"meta must be a ModelMeta, a dict or None, got {type(meta).__name__}")


def check_model(model: Any) -> None:
    """``TypeError`` with a clear text unless ``model`` is a UNet."""
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a UNet (load one with checkpoint.resolve_model, or pass "
                        f"a model name or file to predict_image), got {type(model).__name__}")


# -- public entry points ---------------------------------------------------------------------
def predict(
    model: UNet,
    image: Any,
    config: PredictConfig | None = None,
    meta: ModelMeta | Mapping[str, Any] | None = None,
    out: Mapping[str, Any] | None = None,
) -> Iterator[Progress | Message | PredictionResult]:
    """Overlap-tile prediction of an image or a stack, as a generator of events.

    Parameters
    ----------
    model : UNet
        The net; it is put in eval mode and moved to ``config.device``.
    image : array-like
        ``(H, W)``, ``(Z, H, W)``, or with a channel axis (``config.channel_axis``, the "C" of
        ``config.axes``, or the axis of size ``model.in_channels``), e.g. ``(C, H, W)``,
        ``(Z, C, H, W)``, ``(H, W, C)``. numpy arrays, memory maps, dask and zarr arrays;
        integer or float. Stacks are read one slice at a time, big planes one block at a time.
    config : PredictConfig, optional
    meta : ModelMeta (or its dict), optional
        The model's metadata: ``normalization``, ``mode``, ``object_diameter``,
        ``pixel_size``. Without it, percentile normalisation and the mode implied by the
        class count.
    out : dict, optional
        Arrays to write into, by name (``"probabilities"``, ``"semantic"``, ``"instances"``,
        ``"uncertainty"``), e.g. memory maps or zarr arrays of the shapes in
        :class:`PredictionResult`. Missing big outputs become temporary memory maps.

    Yields
    ------
    Progress
        Per tile batch for a 2D image, per block of a big plane, per slice for a stack.
    Message
        Notes: float16 decisions, ignored scale hints, out-of-memory retries, a stack taken
        as slices, objects bigger than the block halo.
    PredictionResult
        Last.

    Raises
    ------
    TypeError
        ``model`` is not a UNet; wrong argument types.
    ValueError
        Wrong number of dims or channels, empty image, NaN/inf values, illegal tile size,
        rescale factor out of bounds, an output that does not fit in memory.
    OSError
        Not enough disk for the temporary memory maps of big outputs.
    MemoryError
        Out of memory even with one smallest tile.
    """
    check_model(model)
    config = config or PredictConfig()
    if not isinstance(config, PredictConfig):
        raise TypeError(f"config must be a PredictConfig, got {type(config).__name__}")
    check_out(out)
    meta = as_model_meta(meta, model)
    job = PredictionJob(model, image, config, meta, out, predict_at=predict_at)
    return job.run()



#: The outputs a caller may hand :func:`predict` arrays for (``out=``).
OUTPUT_NAMES = ("probabilities", "semantic", "instances", "uncertainty")


def check_out(out: Any) -> None:
    """``out`` is None or a dict of arrays named from :data:`OUTPUT_NAMES`: ``TypeError`` or
    ``ValueError`` naming ``out`` otherwise (a misspelt name would leave the array unfilled)."""
    if out is None:
        return
    if not isinstance(out, Mapping):
        raise TypeError(f"out must be a dict of arrays by output name ({', '.join(OUTPUT_NAMES)})"
                        f" or None, got {type(out).__name__}")
    unknown = sorted(str(name) for name in out if name not in OUTPUT_NAMES)
    if unknown:
        raise ValueError(f"out has no output named {', '.join(map(repr, unknown))}; the outputs "
                         f"are {', '.join(OUTPUT_NAMES)}")
    for name, array in out.items():
        if array is not None and not hasattr(array, "shape"):
            raise TypeError(f"out[{name!r}] must be an array, got {type(array).__name__}")


def run_to_result(events: Iterator[Any], callback: Callable[[Any], None] | None = None) -> Any:
    """Exhaust a job's generator and return its last item (calling ``callback`` on the rest)."""
    last = None
    for event in events:
        if last is not None and callback is not None:
            callback(last)
        last = event
    return last


def predict_at(model: Any, plane: Any, meta: ModelMeta, factor: float,
               **predict_kwargs: Any) -> Any:
    """``predict_image`` with the image resized by exactly ``factor`` for the net (a pixel-size
    ratio is applied as given; a diameter would go through the band)."""
    return predict_image(model, plane, meta.replace(pixel_size=1.0), pixel_size=factor,
                         **predict_kwargs)


def predict_image(model: UNet | str | os.PathLike, image: Any,
                  meta: ModelMeta | Mapping[str, Any] | None = None,
                  out: Mapping[str, Any] | None = None, **config_kwargs: Any) -> PredictionResult:
    """Predict ``image`` and return the :class:`PredictionResult` (see :func:`predict`).

    ``model`` is a UNet, or a model spec (``"default"``, an architecture name, a model file)
    resolved with :func:`~napari_unet.core.model.checkpoint.resolve_model` (its meta is used when
    ``meta`` is None). ``config_kwargs`` are :class:`PredictConfig` fields, e.g.
    ``tile_size=256, tta=True``.
    """
    if isinstance(model, (str, os.PathLike)):
        from ..model.checkpoint import resolve_model

        model, file_meta = resolve_model(model, device="cpu")
        meta = file_meta if meta is None else meta
    check_model(model)
    result = run_to_result(predict(model, image, PredictConfig(**config_kwargs), meta, out))
    if not isinstance(result, PredictionResult):  # pragma: no cover - predict always ends so
        raise RuntimeError("prediction ended without a result")
    return result


