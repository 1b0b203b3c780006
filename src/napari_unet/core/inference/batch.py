"""Batch segmentation of image files (TIFF stacks) into label TIFFs, locally or on dask.

``batch_segment`` is a generator: it yields progress and per-file events and ends with a
:class:`BatchSummary`. One labels TIFF per input, named like the input (plus ``suffix``), with
the input's axes and pixel size: ImageJ-compatible uint16, or uint32 OME-TIFF above 65,535
objects (a :class:`Message` says so). Existing outputs are skipped unless ``overwrite`` (so an
interrupted run resumes), an unreadable file is reported and skipped, and every output is written
to a temporary file that is moved into place only when complete, so stopping the generator
mid-file never leaves half an output.

With a ``dask.distributed.Client`` the files are processed on the cluster; the net is shipped
once per worker as a worker plugin holding its state dict.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import ARCHITECTURES
from ..events import BatchSummary, FileDone, Message, Progress, SliceProgress
from ..io.images import plane_pixels
from ..io.resources import check_prediction_memory
from ..model.checkpoint import model_source_of, resolve_model
from ..model.meta import ModelMeta
from ..model.unet import UNet
from .batch_files import (
    find_inputs,
    leave_out_own_outputs,
    left_out_note,
    output_name,
    output_paths,
    prepare_output_dir,
    probabilities_path,
    write_probabilities,
)
from .config import PredictConfig, PredictionResult, cost_note, file_settings, stack_layout
from .prediction import predict
from .tiles import check_tile_size, tile_margin

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    """Settings of a batch job.

    Parameters
    ----------
    predict : PredictConfig
        How each image is predicted (tiles, TTA, device, threshold...).
    overwrite : bool
        Replace existing outputs; otherwise files whose output exists are skipped.
    probabilities : bool
        Also write ``<name>_probabilities.tif`` (float32, classes as the channel axis).
    suffix : str
        Appended to each input's name for its labels file (``""``: the same name).
    split_pixels : int
        With a dask client, single 2D images with more pixels than this are not sent to one
        worker whole; their tiles are spread over the cluster (``dask.array.map_overlap``).
    """

    predict: PredictConfig = field(default_factory=PredictConfig)
    overwrite: bool = False
    probabilities: bool = False
    suffix: str = ""
    split_pixels: int = 8192 * 8192

    def __post_init__(self) -> None:
        if not isinstance(self.predict, PredictConfig):
            raise ValueError(f"predict must be a PredictConfig, got {type(self.predict).__name__}")
        for name in ("overwrite", "probabilities"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.suffix, str):
            raise TypeError(f"suffix must be text appended to each output name, got "
                            f"{self.suffix!r} ({type(self.suffix).__name__})")
        if os.sep in self.suffix or "/" in self.suffix:
            raise ValueError(f"suffix must not contain a path separator, got {self.suffix!r}")


# -- one file ----------------------------------------------------------------------------------
#: What one bad file may raise while it is read, predicted and written: reported as that file's
#: failure. Anything else is a bug and stops the batch with its traceback.
FILE_ERRORS = (ValueError, OSError, MemoryError)


def segment_file(
    model: UNet,
    meta: ModelMeta | Mapping[str, Any] | None,
    path: Path,
    output: Path,
    config: BatchConfig,
) -> Iterator[SliceProgress | Message | FileDone]:
    """Segment one file into ``output`` (events; a :class:`FileDone` last).

    A bad file (unreadable, wrong shape, out of memory or disk) ends in a ``"failed"``
    :class:`FileDone`; other exceptions are bugs and propagate. Outputs are written to a
    temporary file that is renamed when complete, so stopping the generator (or Ctrl-C)
    mid-file leaves no half-written output and no temporary file.
    """
    from ..io.images import read_image, write_labels

    try:
        data = read_image(path)
        for note in data.notes:
            yield Message(note, level="warning", data={"path": str(path)})
        pconfig = file_settings(config.predict, data)
        array = data.array
        check_prediction_memory(path.name, tuple(array.shape), pconfig.channel_axis,  # as predict
                                model.num_classes, config.probabilities, bool(pconfig.uncertainty))
        label_axes, lead_shape = stack_layout(data.axes, tuple(array.shape))
        volumes = 1
        if lead_shape is not None:
            # e.g. TZCYX: predict as one stack of 2D planes (or of Z volumes), reshape back
            channel_axis = pconfig.channel_axis
            c_last = channel_axis is not None
            if c_last:
                array = np.moveaxis(array, channel_axis, -3)
            array = array.reshape((-1, *array.shape[-3 if c_last else -2:]))
            lead_axes = "".join(a for a in label_axes if a not in "YX")
            stack_axes = ("Z" if lead_axes.endswith("Z") else "T") + ("CYX" if c_last else "YX")
            if stack_axes[0] == "Z" and pconfig.volume is not False:
                volumes = int(np.prod(lead_shape[:-1]))  # one volume per time point
            pconfig = replace(pconfig, channel_axis=-3 if c_last else None, axes=stack_axes)
        pconfig = replace(pconfig, keep_probabilities=config.probabilities)
        labels, probs = yield from _predict_file(model, meta, path, array, pconfig, volumes)
        if lead_shape is not None:
            labels = labels.reshape(lead_shape + labels.shape[-2:])
        if config.overwrite or not output.is_file():  # else only its probabilities were missing
            written = write_labels(output, labels, label_axes, data.pixel_size,
                                   overwrite=config.overwrite)
            if written.note:
                yield Message(f"{path.name}: {written.note}", level="warning",
                              data={"path": str(output)})
        if config.probabilities:
            if lead_shape is not None:
                probs = probs.reshape(probs.shape[:1] + lead_shape + probs.shape[-2:])
            write_probabilities(probabilities_path(output), probs,
                                label_axes, data.pixel_size, config.overwrite)
    except FILE_ERRORS as err:  # one bad file must not stop the batch
        yield FileDone(path, None, "failed", _describe(err))
        return
    yield FileDone(path, output, "done")


def _predict_file(model: UNet, meta: Any, path: Path, array: Any, pconfig: PredictConfig,
                  volumes: int) -> Iterator[Any]:
    """Labels (and probabilities) of a file's array; ``volumes`` > 1 splits a (T*Z) stack into
    that many Z volumes predicted one after another, with ids continuing across them."""
    if volumes <= 1:
        result = yield from _predict_events(model, meta, path, array, pconfig)
        labels = result.instances if result.instances is not None else result.semantic
        return labels, result.probabilities
    depth = array.shape[0] // volumes
    labels_parts, probs_parts, offset = [], [], 0
    for t in range(volumes):
        result = yield from _predict_events(model, meta, path,
                                            array[t * depth:(t + 1) * depth], pconfig)
        if result.instances is not None:
            part = np.asarray(result.instances)
            part = np.where(part > 0, part + offset, 0).astype(np.int32)
            offset = max(offset, int(part.max()))
        else:
            part = np.asarray(result.semantic)
        labels_parts.append(part)
        if result.probabilities is not None:
            probs_parts.append(np.asarray(result.probabilities))
    probs = np.concatenate(probs_parts, axis=1) if probs_parts else None
    return np.concatenate(labels_parts), probs


def _predict_events(model: UNet, meta: Any, path: Path, array: Any,
                    pconfig: PredictConfig) -> Iterator[Any]:
    result: PredictionResult | None = None
    for event in predict(model, array, pconfig, meta):
        if isinstance(event, Progress):
            yield SliceProgress(path, event.step, event.total, event.message)
        elif isinstance(event, Message):
            if not event.data.get("cost"):  # the batch said what costs more when it began
                yield event
        else:
            result = event
    if result is None:  # pragma: no cover - predict always ends with its result
        raise RuntimeError("prediction ended without a result")
    return result


def _describe(err: BaseException) -> str:
    from ..io.outputs import OutputExists

    if isinstance(err, OutputExists):  # written meanwhile by another run: a batch never replaces
        return (f"{str(err.path)!r} appeared while this file was being segmented (another run?) "
                "and was kept")
    text = str(err).strip().splitlines()
    if isinstance(err, (ValueError, MemoryError)) and text:
        return text[0]
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- the batch -----------------------------------------------------------------------------------
def batch_segment(
    model: UNet | str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    config: BatchConfig | None = None,
    meta: ModelMeta | Mapping[str, Any] | None = None,
    client: Any = None,
    model_source: str | os.PathLike | None = None,
    **overrides: Any,
) -> Iterator[Progress | SliceProgress | Message | FileDone | BatchSummary]:
    """Segment every input image into a labels TIFF in ``output_dir``.

    The arguments are checked (and the model loaded) when this is called, not at the first
    ``next()``; the work happens as the returned generator is iterated.

    Parameters
    ----------
    model : UNet, or a model spec for ``checkpoint.resolve_model``
        ``"default"``, an architecture name or a model file.
    inputs : folder, glob pattern, file, or list of files
    output_dir : path-like
        Created if missing; must be writable.
    config : BatchConfig, optional
    meta : ModelMeta or dict, optional
        The model's metadata (taken from the file when ``model`` is a spec).
    client : dask.distributed.Client, optional
        Process the files on this cluster.
    model_source : path-like, optional
        The file or package folder a loaded ``model`` came from: no output replaces it or
        anything inside it (found by itself when ``model`` is a spec).
    **overrides
        Fields of :class:`BatchConfig` (``overwrite``, ``probabilities``, ``suffix``) or of
        :class:`PredictConfig` (``tta``, ``tile_size``, ``device``, ``axes``, ``volume``...).

    Yields
    ------
    Progress
        Files finished so far, of all files.
    SliceProgress, Message, FileDone
        Per-slice progress (local runs), notes, and each file's outcome.
    BatchSummary
        Last.

    Raises
    ------
    TypeError, ValueError
        No inputs, output folder not writable, outputs that would replace inputs, bad settings
        or model. Raised by the call, before anything is written.
    """
    if config is not None and not isinstance(config, BatchConfig):
        raise TypeError(f"config must be a BatchConfig, got {type(config).__name__}")
    config = _with_overrides(config or BatchConfig(), overrides)
    for name, value in (("output_dir", output_dir), ("model_source", model_source)):
        if not isinstance(value, (str, os.PathLike)) and (value is not None
                                                          or name == "output_dir"):
            raise TypeError(f"{name} must be a path (text or a pathlib.Path), got "
                            f"{type(value).__name__}")
    if isinstance(model, (str, os.PathLike)):
        model_source = model_source or model_source_of(model)
    # outputs checked before a model is loaded (a package folder is an input) or a folder made
    files, left_out = leave_out_own_outputs(find_inputs(inputs), Path(output_dir), config.suffix,
                                            config.overwrite, config.probabilities)
    outputs = output_paths(files, Path(output_dir), config.suffix, config.probabilities,
                           protected=[p for p in (model_source,) if p is not None])
    if isinstance(model, (str, os.PathLike)):
        counts = {} if str(model) in ARCHITECTURES else {"in_channels": None, "num_classes": None}
        model, file_meta = resolve_model(model, **counts)
        meta = meta if meta is not None else file_meta
    elif not isinstance(model, UNet):
        raise TypeError(f"model must be a UNet or a model spec ('default', an architecture name "
                        f"or a model file), got {type(model).__name__}")
    if meta is not None and not isinstance(meta, (ModelMeta, Mapping)):
        raise TypeError(f"meta must be a ModelMeta, a dict or None, got {type(meta).__name__}")
    meta = ModelMeta.for_model(model) if meta is None else (
        meta if isinstance(meta, ModelMeta) else ModelMeta.from_dict(meta, model))
    if config.predict.tile_size is not None:  # where settings and model meet: check once
        check_tile_size(model, config.predict.tile_size,
                        tile_margin(model, config.predict.tiling, config.predict.overlap))
    out_dir = prepare_output_dir(output_dir)
    return _batch(model, meta, files, outputs, out_dir, config, client, left_out)


def _batch(model: UNet, meta: ModelMeta, files: list[Path], outputs: list[Path], out_dir: Path,
           config: BatchConfig, client: Any, left_out: list[Path]) -> Iterator[Any]:
    from ..io.outputs import clean_stale_temps

    clean_stale_temps(out_dir)  # left by a killed run
    done: list[Path] = []
    skipped: list[Path] = []
    failed: list[tuple[Path, str]] = []
    todo: list[tuple[Path, Path]] = []
    for src, dst in zip(files, outputs, strict=True):
        # a file is done when all of its outputs are (a run that stopped between the labels
        # and the probabilities makes the probabilities again)
        done_before = dst.is_file() and (not config.probabilities
                                         or probabilities_path(dst).is_file())
        if done_before and not config.overwrite:
            skipped.append(src)
        else:
            todo.append((src, dst))
    total = len(files)
    if left_out:
        yield Message(left_out_note(left_out))
    if cost := cost_note(config.predict, views=False):
        yield Message(cost)
    for src in skipped:
        yield FileDone(src, out_dir / output_name(src, config.suffix), "skipped",
                       "output exists (use overwrite to replace it)")
    yield Progress(len(skipped), total, f"{len(skipped)} already done")

    if client is None:
        stream = _run_local(model, meta, todo, config)
    else:
        stream = _run_distributed(client, model, meta, todo, config)
    finished = len(skipped)
    for event in stream:
        yield event
        if isinstance(event, FileDone):
            if event.status == "done":
                done.append(event.path)
            else:
                failed.append((event.path, event.message))
            finished += 1
            yield Progress(finished, total, event.path.name)
    yield BatchSummary(done, skipped, failed)


def _with_overrides(config: BatchConfig, overrides: Mapping[str, Any]) -> BatchConfig:
    batch_names = {f.name for f in fields(BatchConfig)} - {"predict"}
    predict_names = {f.name for f in fields(PredictConfig)}
    unknown = set(overrides) - batch_names - predict_names
    if unknown:
        raise ValueError(f"unknown batch setting(s): {', '.join(sorted(unknown))}")
    pred = {k: v for k, v in overrides.items() if k in predict_names}
    batch = {k: v for k, v in overrides.items() if k in batch_names}
    if pred:
        batch["predict"] = replace(config.predict, **pred)
    return replace(config, **batch) if batch else config


def _run_local(model, meta, todo, config) -> Iterator[Any]:
    for src, dst in todo:
        yield from segment_file(model, meta, src, dst, config)


# -- dask.distributed ----------------------------------------------------------------------------
class _ModelPlugin:
    """Worker plugin carrying the net's architecture and weights: sent once to each worker,
    which builds the net once and reuses it for every file it gets."""

    idempotent = False
    setups = 0  # nets built, over all instances in this process (lets tests count them)

    def __init__(self, name: str, architecture: dict, state: dict, meta: dict) -> None:
        self.name = name
        self.architecture = architecture
        self.state = state
        self.meta = meta
        self.model: UNet | None = None
        self.builds = 0

    def setup(self, worker: Any = None) -> None:
        model = UNet.from_config(self.architecture)
        model.load_state_dict(self.state)
        self.model = model.eval()
        self.builds += 1
        _ModelPlugin.setups += 1

    def teardown(self, worker: Any = None) -> None:
        self.model = None


def _make_plugin(name: str, model: UNet, meta: ModelMeta) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    plugin_cls = type("NapariUNetModel", (_ModelPlugin, WorkerPlugin), {})
    # plain values travel to the workers (the meta is rebuilt there)
    return plugin_cls(name, dict(model.config), state, meta.to_dict())


def _segment_on_worker(plugin_name: str, src: str, dst: str,
                       config: BatchConfig) -> list[Any]:
    from distributed import get_worker

    plugin = get_worker().plugins[plugin_name]
    events = [e for e in segment_file(plugin.model, plugin.meta, Path(src), Path(dst), config)
              if not isinstance(e, SliceProgress)]
    return events


def segment_huge_plane(client: Any, model: UNet, meta: ModelMeta, path: Path, output: Path,
                       config: BatchConfig) -> Iterator[Message | FileDone]:
    """Segment one big 2D image with its tiles spread over a dask cluster.

    The probabilities come from :func:`~core.inference.distributed.segment_plane_distributed`
    (normalised with percentiles of a subsample, predicted chunk by chunk on the cluster with
    the net's context, labelled block by block here); the labels are written here. They equal
    the local result.
    """
    from ..io.images import read_image, write_labels
    from .distributed import segment_plane_distributed

    try:
        data = read_image(path)
        pconfig = file_settings(config.predict, data)
        chunk = min(2048, int(config.split_pixels ** 0.5))
        result = yield from segment_plane_distributed(
            client, model, data.array, replace(pconfig, keep_probabilities=config.probabilities),
            meta, chunk=chunk)
        labels = result.instances if result.instances is not None else result.semantic
        label_axes = data.axes.replace("C", "")
        if config.overwrite or not output.is_file():  # else only its probabilities were missing
            written = write_labels(output, labels, label_axes, data.pixel_size,
                                   overwrite=config.overwrite)
            if written.note:
                yield Message(f"{path.name}: {written.note}", level="warning")
        if config.probabilities:
            write_probabilities(probabilities_path(output),
                                result.probabilities, label_axes, data.pixel_size,
                                config.overwrite)
    except FILE_ERRORS as err:
        yield FileDone(path, None, "failed", _describe(err))
        return
    yield FileDone(path, output, "done", "tiles computed on the cluster")


def _run_distributed(client, model, meta, todo, config) -> Iterator[Any]:
    from distributed import as_completed

    if not todo:
        return
    # ("auto" may rescale too)
    no_rescale = config.predict.object_diameter is None and config.predict.pixel_size is None
    huge, rest = [], []
    for src, dst in todo:
        try:
            pixels = plane_pixels(src) if no_rescale else None
        except FILE_ERRORS as err:  # unreadable: that file fails, the others go on
            yield FileDone(src, None, "failed", _describe(err))
            continue
        (huge if pixels is not None and pixels > config.split_pixels else rest).append(
            (src, dst))
    for src, dst in huge:
        yield from segment_huge_plane(client, model, meta, src, dst, config)
    if not rest:
        return
    name = f"napari-unet-model-{uuid.uuid4().hex[:8]}"
    client.register_plugin(_make_plugin(name, model, meta), name=name)
    futures = [client.submit(_segment_on_worker, name, str(src), str(dst), config, pure=False)
               for src, dst in rest]
    by_future = dict(zip(futures, rest, strict=True))
    try:
        for future in as_completed(futures):
            src, _ = by_future[future]
            if future.status == "error":
                # a bug, or the worker died: report this file, log it, go on with the others
                err = future.exception()
                _log.error("segmenting %s failed on the cluster", src,
                           exc_info=(type(err), err, future.traceback()))
                events = [FileDone(src, None, "failed", _describe(err))]
            else:
                events = future.result()
            yield from events
    except GeneratorExit:
        client.cancel(futures)  # stopping the batch stops the cluster's work too
        raise
    client.unregister_worker_plugin(name)


__all__ = ["FILE_ERRORS", "BatchConfig", "batch_segment", "file_settings", "plane_pixels",
           "segment_file", "stack_layout"]
