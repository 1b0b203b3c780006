"""The stack-level prediction job: planes, blocks, volumes and views, at either scale."""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..constants import DEFAULT_NORMALIZATION, mode_for_classes
from ..events import PART_STEPS, Message, Progress, pass_messages_on, within
from ..model.meta import ModelMeta
from ..model.unet import UNet
from ..normalize import IntensityRange, intensity_range, normalize_region
from ..runtime.device import resolve_device
from ..runtime.heap import reuse_freed_memory
from .blockwise import (
    BLOCKWISE_FORWARD_BUDGET,
    MIN_BLOCK,
    Window,
    auto_halo,
    block_grid,
    block_windows,
    label_blocks,
    needs_blocks,
    predict_blocks,
    tile_windows,
)
from .config import PredictConfig, PredictionResult, cost_note
from .diameter import PredictAt, choose_scale, estimate_diameter
from .labelling import entropy, instance_labels, min_size_for, semantic_labels
from .predictor import OutOfMemory, PlanePredictor, plane_predictor
from .scaling import labels_at_image_scale, resize_plane, scale_factor
from .stack import allocate_output, as_stack, check_finite_in_memory, image_layout
from .tiles import check_tile_size, padded_axis_tiles, plan_tiles, tile_margin
from .views import fold_orthogonal_views, side_predictor, thin_stack_note
from .volume import VOLUME_BLOCK_SLICES, link_slices, stack_is_volume


class PredictionJob:
    """One prediction: the checks up front (in the constructor), then :meth:`run`'s loop
    (allocations, planes or blocks, labelling). :mod:`.distributed` overrides how a plane's
    blocks are predicted."""

    def __init__(self, model: UNet, image: Any, config: PredictConfig, meta: ModelMeta,
                 out: Mapping[str, Any] | None, predict_at: PredictAt) -> None:
        self.model, self.config, self.meta = model, config, meta
        self.predict_at = predict_at  # the measuring passes of the object size
        image, axes, channel_axis, channel_note = image_layout(image, config, model.in_channels,
                                                               meta.channel)
        self.view, self.stacked = as_stack(image, model.in_channels, channel_axis)
        self.image, self.channel_axis = image, channel_axis
        check_finite_in_memory(image)
        self.is_volume, layout_note = stack_is_volume(axes, self.stacked, config.volume)
        self.layout_note = "; ".join(n for n in (channel_note, layout_note) if n) or None
        self.device = resolve_device(config.device)
        if config.tile_size is not None:
            check_tile_size(model, config.tile_size,
                            tile_margin(model, config.tiling, config.overlap))
        elif not model.is_valid and config.overlap is not None:
            check_tile_size(model, (10**6, 10**6), config.overlap)
        self.n_z, _, self.h, self.w = (int(s) for s in self.view.shape)
        self.diameter = None if config.object_diameter == "auto" else config.object_diameter
        self.mode = meta.mode or mode_for_classes(model.num_classes)
        self.spec = meta.normalization or DEFAULT_NORMALIZATION
        self.blockwise = needs_blocks((self.h, self.w), config.block_size)
        self.scale, self.scale_note = 1.0, None
        if config.object_diameter != "auto":  # "auto" is measured when the job runs
            self.scale, self.scale_note = scale_factor(config, meta, self.diameter,
                                                        (self.h, self.w))
        self.out = out
        self.notes: list[str] = []
        # objects labelled and split in 3D (a Z stack of an instance model, not linked by
        # overlap): where the orthogonal views apply
        self.label_3d = (self.mode == "instances" and self.is_volume
                         and config.stitch_threshold is None)
        self.views = config.orthogonal_views is not False and self.label_3d
        self.views_note = None
        if config.orthogonal_views and not self.views:  # asked for, and it cannot apply
            self.views_note = ("orthogonal views ignored: they need 3D objects of an "
                               "instance model" + ("" if self.is_volume else
                                                   " and this image is not taken as a Z stack"))

    # -- setup that may need the model (auto diameter) -------------------------------------
    def _setup(self) -> Iterator[Message]:
        config, model = self.config, self.model
        # the measuring passes on a crop (estimate, choice of scale) predict as the job does
        passes = dict(predict_at=self.predict_at, channel_axis=self.channel_axis,
                      device=config.device,
                      tile_size=config.tile_size, batch_size=config.batch_size, tta=config.tta,
                      threshold=config.threshold)
        if config.object_diameter == "auto":
            estimate = estimate_diameter(model, self.image, self.meta, **passes)
            yield self._note(estimate.note, "info" if estimate.usable else "warning")
            if estimate.usable:
                self.diameter = estimate.diameter
            self.scale, self.scale_note = scale_factor(config, self.meta, self.diameter,
                                                        (self.h, self.w))
        if (self.diameter is not None and self.scale == 1.0 and self.meta.object_diameter
                and self.mode == "instances"):
            # inside the model's band: its own scale, or the training diameter if the net is
            # surer of its objects there (measured on a crop; one rule for given and "auto")
            self.scale, self.scale_note = choose_scale(
                model, self.image, self.meta, float(self.diameter), **passes)
        if self.scale_note:
            yield self._note(self.scale_note, "warning")
        if self.layout_note:
            yield self._note(self.layout_note)
        if self.views_note:
            yield self._note(self.views_note, "warning")
        if self.views and config.orthogonal_views is None:  # (the scale is known now)
            if thin := thin_stack_note(self.n_z, float(config.z_spacing or 1.0), self.scale):
                self.views = False
                yield self._note(thin)
        if cost := cost_note(config, self.views):  # batch says it once, not for every file
            self.notes.append(cost)
            yield Message(cost, data={"cost": True})
        hw_model = self._model_hw((self.h, self.w))
        if self.blockwise and not self._tiles_are_windows():
            # tiles are fitted to one block's window (a plane's own tiles need the whole plane)
            side = config.block_size + 2 * self._context()
            hw_model = self._model_hw((min(self.h, side), min(self.w, side)))
        # tile, batch and overlap by total cost (the pixels the net computes)
        budget = config.memory_budget
        if budget is None and self.blockwise and self.device.type != "cuda":
            # bounded memory is the point of blocks: the net's passes get a fixed share
            budget = BLOCKWISE_FORWARD_BUDGET
        self.plan = plan_tiles(model, hw_model, self.device, tiling=config.tiling,
                               overlap=config.overlap, tile_size=config.tile_size,
                               batch_size=config.batch_size, memory_budget=budget)
        self.tile = self.plan.tile

    def _note(self, text: str, level: str = "info") -> Message:
        self.notes.append(text)
        return Message(text, level=level)

    def _model_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        if self.scale == 1.0:
            return hw
        return max(1, round(hw[0] * self.scale)), max(1, round(hw[1] * self.scale))

    def _windows(self) -> list[Window]:
        """The windows a blockwise plane is predicted in. A padded net at the image's scale with
        "discard" stitching: the plane's own tiles, one at a time, so it computes what tiling
        the whole plane computes (bigger windows would repeat the net's context at every window
        border too) and holds one tile. Otherwise (valid nets, rescaling, Gaussian blending):
        blocks of ``block_size`` with the net's context around them."""
        model, config = self.model, self.config
        if self._tiles_are_windows():
            # the predictor's tile: smaller than planned after running out of memory
            tile, margin, d = self.predictor.tile, self.predictor.margin, model.divisor
            return tile_windows(padded_axis_tiles(self.h, tile[0], margin, d),
                                padded_axis_tiles(self.w, tile[1], margin, d))
        align = model.divisor if self.scale == 1.0 else 1
        return block_windows((self.h, self.w), self._context(), align, config.block_size)

    def _tiles_are_windows(self) -> bool:
        """Whether a blockwise plane is predicted in its own tiles (:meth:`_windows`)."""
        return (not self.model.is_valid and self.scale == 1.0
                and self.config.blend == "discard")

    def _context(self) -> int:
        """Pixels (image scale) of input a block needs around it for exact probabilities."""
        model = self.model
        if model.is_valid:
            # the receptive field reaches up to one pooling block beyond the context
            ctx = model.context + model.divisor
        else:  # as much context as the tiles keep (exact tiling: the receptive radius)
            ctx = tile_margin(model, self.config.tiling, self.config.overlap)
        scale = getattr(self, "scale", 1.0)
        return int(math.ceil(ctx / scale)) + (2 if scale != 1.0 else 0)

    def _halo(self, volume: bool = False, scale: float = 1.0) -> int:
        """Halo (px) for labelling blocks of a plane or volume ``scale`` x the image's size."""
        if self.config.block_halo is not None:
            return round(self.config.block_halo * scale)
        diameter = self.diameter
        if diameter is None and self.meta.object_diameter:
            diameter = float(self.meta.object_diameter) / self.scale
        if diameter is not None:
            diameter *= scale
        if volume and diameter is not None:
            # in 3D the halo's volume dominates a block's memory: two diameters (the warning
            # names block_halo if objects reach it)
            return max(32, int(math.ceil(2 * diameter / 8)) * 8)
        return auto_halo(diameter)

    # -- outputs -----------------------------------------------------------------------------
    def _allocate(self) -> None:
        config, out = self.config, self.out
        spatial = (self.n_z, self.h, self.w) if self.stacked else (self.h, self.w)
        self.spatial = spatial
        k = self.model.num_classes
        self.probabilities = (allocate_output("probabilities", (k, *spatial), np.float32, out)
                              if config.keep_probabilities else None)
        self.semantic = allocate_output("semantic", spatial, np.uint8 if k <= 256 else np.int32,
                                        out)
        self.instances = (allocate_output("instances", spatial, np.int32, out)
                          if self.mode == "instances" else None)
        self.uncertainty = (allocate_output("uncertainty", spatial, np.float32, out)
                            if config.uncertainty else None)
        # the foreground probability is kept for blockwise or 3D labelling
        self.foreground = None
        if self.instances is not None and (self.blockwise or self.label_3d):
            self.foreground = (self.probabilities[1] if self.probabilities is not None
                               else allocate_output("foreground", spatial, np.float32))
        # a rescaled plane labelled block by block, or a rescaled volume: its foreground at the
        # model's scale too (one plane, reused; a volume's every plane), where its instances are
        # found
        self.model_foreground = None
        if self.foreground is not None and self.scale != 1.0:
            hw = self._model_hw((self.h, self.w))
            self.model_foreground = allocate_output(
                "model foreground", (self.n_z, *hw) if self.label_3d else hw, np.float32)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Iterator[Progress | Message | PredictionResult]:
        yield from self._setup()
        self._allocate()
        model, config = self.model, self.config
        # (each walks the net's modules: ~2 ms for the shipped net, skipped when not needed)
        if model.training:
            model.eval()
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        self.predictor = plane_predictor(
            model, self.device, self.tile, self.plan.batch_size, config.tta,
            config.uncertainty and config.uncertainty_method == "variance", config.blend,
            self.plan.margin, config.half)
        volume_range = (intensity_range(self.view, self.spec) if self.is_volume else None)
        offset = 0
        # the net's passes over a plane reuse freed memory (core.runtime.heap: a pass frees big maps
        # that its next layers and passes allocate again); the labelling after them allocates
        # as usual, so a heap kept for the passes does not add to its peak
        with torch.inference_mode():
            for z in range(self.n_z):
                rng = volume_range if self.is_volume else intensity_range(
                    self.view[z:z + 1], self.spec)
                with reuse_freed_memory():
                    plane = (self._plane_blockwise(z, rng) if self.blockwise
                             else self._plane_whole(z, rng))
                    yield from self._slice_part(plane, z, 0.0, 0.9)
                if self.instances is not None and not self.label_3d:
                    offset = yield from self._slice_part(self._plane_instances(z, offset), z,
                                                         0.9, 1.0)
                if self.stacked:
                    yield Progress((z + 1) * PART_STEPS, self.n_z * PART_STEPS,
                                   f"slice {z + 1}/{self.n_z}")
            if self.views:
                with reuse_freed_memory():
                    yield from self._orthogonal_views(volume_range)
            if self.instances is not None and self.is_volume:
                yield from self._volume_instances()
        yield PredictionResult(self.probabilities, self.semantic, self.instances,
                               self.uncertainty, tuple(self.predictor.tile), str(self.device),
                               tuple(self.notes), self.is_volume)

    def _slice_part(self, gen: Generator[Any, None, Any], z: int, start: float, stop: float
                    ) -> Generator[Any, None, Any]:
        """A plane's sub-job: a stack's slice ``z`` reports its progress as that share
        (``start`` to ``stop``) of the slice's steps; a single plane's passes on as it is."""
        if not self.stacked:
            return (yield from gen)
        return (yield from within(gen, z * PART_STEPS + round(start * PART_STEPS),
                                  round((stop - start) * PART_STEPS), self.n_z * PART_STEPS,
                                  f"slice {z + 1}/{self.n_z}"))

    def _at(self, z: int, where: tuple[slice, ...] = ()) -> tuple:
        return ((z,) if self.stacked else ()) + where

    def _predict_at_model_scale(self, plane: np.ndarray, into: np.ndarray | None = None,
                                keep: tuple[slice, slice] | None = None,
                                predictor: PlanePredictor | None = None
                                ) -> Generator[Progress | Message, None, tuple[np.ndarray, Any]]:
        """One normalised plane or window (or a stack of planes of one shape), with
        out-of-memory retries on smaller tiles: the probabilities (and variance) at the model's
        scale, of the part ``keep`` (all of it when None) and stitched into ``into`` where that
        fits (see :meth:`PlanePredictor.run`; at the image's scale only: a rescaled plane's are
        whole, cut by :meth:`_at_image_scale`)."""
        h, w = plane.shape[-2:]
        if self.scale != 1.0:
            plane = resize_plane(plane, self._model_hw((h, w)), order=1)
        predictor = predictor or self.predictor
        while True:
            try:
                # (no contiguous copy first: the predictor copies each tile into its batch)
                run = (predictor.run(plane, into, keep) if self.scale == 1.0
                       else predictor.run(plane))  # rescaled: cut after scaling back
                probs, var = yield from run
                break
            except OutOfMemory as err:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                before = (predictor.batch_size, predictor.tile)
                if not predictor.shrink():
                    raise MemoryError(
                        f"out of memory on {self.device} even with one {predictor.tile[0]}x"
                        f"{predictor.tile[1]} tile per pass ({err}); free memory, use a "
                        "smaller model or device='cpu'") from None
                yield self._note(f"out of memory with {before[0]} tile(s) of {before[1]}; "
                                 f"retrying with {predictor.batch_size} of {predictor.tile}",
                                 "warning")
        for text in predictor.notes:
            yield self._note(text)
        predictor.notes.clear()
        return probs, var

    def _at_image_scale(self, probs: np.ndarray, var: np.ndarray | None, hw: tuple[int, int],
                        keep: tuple[slice, slice] | None = None) -> tuple[np.ndarray, Any]:
        """Model-scale probabilities (and variance) resampled to the plane's ``hw``, cut to
        ``keep``; unchanged when the plane was not rescaled."""
        if self.scale != 1.0:
            h, w = hw
            probs = resize_plane(probs, (h, w), order=1)
            if var is not None:
                var = resize_plane(var, (h, w), order=1)
            if keep is not None:
                probs = probs[(..., *keep)]
                var = None if var is None else var[(..., *keep)]
        return probs, var

    def _store(self, z: int, where: tuple[slice, slice], probs: np.ndarray,
               var: np.ndarray | None, uncertainty: bool = True) -> None:
        at = self._at(z, where)
        if self.probabilities is not None:
            if not np.may_share_memory(probs, self.probabilities):  # not stitched in place
                self.probabilities[(slice(None), *at)] = probs
        elif self.foreground is not None:
            self.foreground[at] = probs[1]
        self.semantic[at] = semantic_labels(probs)
        if self.uncertainty is not None and uncertainty:
            self.uncertainty[at] = var if var is not None else entropy(probs)

    def _model_plane(self, z: int) -> Any:
        """Plane ``z`` of the model-scale foreground (a plane's is one plane, reused)."""
        return self.model_foreground[z] if self.label_3d else self.model_foreground

    def _keep_at_model_scale(self, z: int, win: Window, probs: np.ndarray) -> None:
        """A rescaled window's core, from its model-scale probabilities, into plane ``z``'s
        model-scale foreground (nothing to keep when the plane is not rescaled or labelled
        block by block). The core's model pixels are those of the whole plane's grid, so the
        windows' cores tile it."""
        if self.model_foreground is None:
            return
        target = self._model_plane(z)
        where = []
        for core, window, n, m, size in zip(win.core, win.window, (self.h, self.w),
                                            target.shape, probs.shape[-2:], strict=True):
            offset = round(window.start * m / n)
            start = round(core.start * m / n)
            stop = min(round(core.stop * m / n), offset + size)
            where.append((slice(start, stop), slice(start - offset, stop - offset)))
        target[where[0][0], where[1][0]] = probs[1][where[0][1], where[1][1]]

    def _plane_whole(self, z: int, rng: IntensityRange | None) -> Iterator[Any]:
        plane = normalize_region(np.asarray(self.view[z]), rng)
        # the plane's probabilities stitched straight into an output array in memory
        into = (self.probabilities[(slice(None), *self._at(z))]
                if isinstance(self.probabilities, np.ndarray) else None)
        model_probs, var = yield from self._predict_at_model_scale(plane, into=into)
        probs, var = self._at_image_scale(model_probs, var, plane.shape[-2:])
        self._store(z, (slice(None), slice(None)), probs, var)
        # instances are found where the net saw the objects: on a rescaled plane, at the
        # model's scale, whose pixel sizes the post-processing's gaps, specks and split seeds
        # are measured in (scaled back, 1-2-px gaps vanish or widen and nuclei merge or shrink)
        self._last_fg = model_probs[1]
        self._last_image_fg = probs[1]
        if self.label_3d and self.model_foreground is not None:
            self.model_foreground[z] = model_probs[1]

    def _plane_blockwise(self, z: int, rng: IntensityRange | None) -> Iterator[Any]:
        # the windows' cores stitched straight into an output array in memory
        plane_out = (self.probabilities[(slice(None), *self._at(z))]
                     if isinstance(self.probabilities, np.ndarray) else None)

        def predict_window(region: np.ndarray, win: Window) -> Generator[Any, None, Any]:
            into = None if plane_out is None else plane_out[(slice(None), *win.core)]
            probs, var = yield from self._predict_at_model_scale(region, into, win.inner)
            self._keep_at_model_scale(z, win, probs)
            return self._at_image_scale(probs, var, region.shape[-2:], win.inner)

        def sink(win: Window, result: tuple[np.ndarray, Any]) -> None:
            self._store(z, win.core, *result)

        yield from predict_blocks(self.view[z], rng, predict_window, sink, self._windows())
        self._last_fg = self._last_image_fg = None

    def _orthogonal_views(self, rng: IntensityRange | None) -> Iterator[Any]:
        """Fold the XZ/YZ slices' foreground into the XY pass's (:mod:`.views`), then write the
        combined probabilities back into every output."""
        zs, config = float(self.config.z_spacing or 1.0), self.config
        hw = self._model_hw((max(1, round(self.n_z * zs)), max(self.h, self.w)))
        side = side_predictor(self.predictor, hw, plan_tiles(
            self.model, hw, self.device, tiling=config.tiling, overlap=config.overlap,
            memory_budget=config.memory_budget))

        def predict(planes: np.ndarray) -> Generator[Any, None, np.ndarray]:
            probs, _ = yield from self._predict_at_model_scale(planes, predictor=side)
            return self._at_image_scale(probs, None, planes.shape[-2:])[0]

        # a rescaled volume: the side views' own minimum, folded into the XY pass at the
        # image's scale and, resampled, at the model's (where its instances are found)
        sides = self.foreground
        if self.model_foreground is not None:
            sides = allocate_output("side views", self.spatial, np.float32)
            sides[...] = 1.0
        yield from fold_orthogonal_views(self.view, sides, rng, predict, zs)
        for z in range(self.n_z) if sides is not self.foreground else ():
            seen, model_fg = np.asarray(sides[z]), self.model_foreground
            self.foreground[z] = np.minimum(np.asarray(self.foreground[z]), seen)
            model_fg[z] = np.minimum(np.asarray(model_fg[z]),
                                     resize_plane(seen, model_fg.shape[-2:], order=1))
        # the TTA variance is the XY slices' (there is none of the side views); an entropy is
        # that of the combined probabilities
        entropy = self.config.uncertainty_method == "entropy"
        for z in range(self.n_z):
            fg = np.asarray(self.foreground[z], np.float32)
            self._store(z, (slice(None),) * 2, np.stack([1.0 - fg, fg]), None,
                        uncertainty=entropy)

    def _plane_instances(self, z: int, offset: int) -> Generator[Any, None, int]:
        config = self.config
        target = self.instances[z] if self.stacked else self.instances
        if not self.blockwise:
            labels = instance_labels(self._last_fg, config, self.scale)
            if self.scale != 1.0:
                labels = labels_at_image_scale(labels, self._last_fg, self._last_image_fg,
                                               config.threshold)
            if offset:
                labels = np.where(labels > 0, labels + offset, 0).astype(np.int32)
            target[...] = labels
            return max(offset, int(labels.max()) if labels.size else 0)
        fg = self.foreground[z] if self.stacked else self.foreground
        if self.model_foreground is not None:
            return (yield from self._blocks_at_model_scale(fg, target, offset))
        scratch = (allocate_output("unsplit", fg.shape, np.int32)
                   if config.split_touching else None)
        n = yield from pass_messages_on(label_blocks(
            fg, target, config.threshold, split=config.split_touching,
            block=config.block_size, halo=self._halo(), scratch=scratch, first_id=offset + 1,
            **min_size_for(config)), notes=self.notes)
        return offset + n

    def _blocks_at_model_scale(self, fg: Any, target: Any, offset: int
                               ) -> Generator[Any, None, int]:
        """A rescaled plane's instances, labelled block by block at the model's scale (as a
        whole plane is), then brought to the image's block by block."""
        config, model_fg = self.config, self.model_foreground
        model_labels = allocate_output("model instances", model_fg.shape, np.int32)
        scratch = (allocate_output("unsplit", model_fg.shape, np.int32)
                   if config.split_touching else None)
        n = yield from pass_messages_on(label_blocks(
            model_fg, model_labels, config.threshold, split=config.split_touching,
            block=config.block_size, halo=self._halo(scale=self.scale), scratch=scratch,
            first_id=offset + 1, **min_size_for(config, self.scale)),
            notes=self.notes)
        self._to_image_scale(model_labels, model_fg, fg, target)
        return offset + n

    def _to_image_scale(self, model_labels: Any, model_fg: Any, fg: Any, target: Any) -> None:
        """A plane's model-scale instances into ``target`` at the image's scale, block by block
        (:func:`labels_at_image_scale`: each block reads only its part and a margin)."""
        for block in block_grid((self.h, self.w), self.config.block_size, 0):
            where = tuple(slice(a, b) for a, b in block.core)
            target[where] = labels_at_image_scale(model_labels, model_fg, fg,
                                                  self.config.threshold, where)

    def _volume_instances(self) -> Iterator[Any]:
        config = self.config
        if config.stitch_threshold is not None:
            linking = link_slices(self.instances, threshold=config.stitch_threshold)
            yield from pass_messages_on(linking, notes=self.notes)
            return
        # a rescaled volume is labelled at the model's scale (as a rescaled plane is), where
        # the slices lie z_spacing x scale of its pixels apart, then brought back plane by plane
        scale = self.scale
        fg, target = self.foreground, self.instances
        if self.model_foreground is not None:
            fg = self.model_foreground
            target = allocate_output("model instances", fg.shape, np.int32)
        zs = float(config.z_spacing or 1.0) * scale
        halo = self._halo(volume=True, scale=scale)
        side = max(config.block_size // 8, MIN_BLOCK)
        block = (VOLUME_BLOCK_SLICES, side, side)
        halos = (int(math.ceil(halo / zs)), halo, halo)
        scratch = (allocate_output("unsplit", fg.shape, np.int32)
                   if config.split_touching else None)
        yield from pass_messages_on(label_blocks(
            fg, target, config.threshold, split=config.split_touching,
            block=block, halo=halos, scratch=scratch, spacing=(zs, 1.0, 1.0),
            **min_size_for(config, scale)),
            notes=self.notes)
        if target is not self.instances:
            for z in range(self.n_z):
                self._to_image_scale(target[z], fg[z], self.foreground[z], self.instances[z])

