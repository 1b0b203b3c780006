"""The plane predictor: overlap-tile prediction of one normalised ``(C, H, W)`` plane.

Runs the net on batches of tiles laid out by :mod:`.tiles`, stitches the probabilities
("discard" the tile borders or Gaussian blending), with optional test-time augmentation,
float16 on CUDA, and a shrink step the caller uses to retry after running out of memory.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from .events import Progress
from .model import UNet
from .tiles import gaussian_window, padded_axis_tiles, receptive_radius, valid_axis_tiles


class OutOfMemory(Exception):
    pass


def is_out_of_memory(err: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(err, (MemoryError, *oom_types)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def d4_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` of the 8 flips/rotations (``k = 0`` is ``x`` itself, not a copy)."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def d4_inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    if k % 4:
        y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    if k >= 4:
        y = torch.flip(y, dims=(-1,))
    return y


class PlanePredictor:
    """Predicts one normalised ``(C, H, W)`` float32 plane by overlap-tiles."""

    def __init__(self, model: UNet, device: torch.device, tile: tuple[int, int], batch_size: int,
                 tta: bool, variance: bool, blend: str, overlap: int | None, half: bool | str):
        self.model = model
        self.device = device
        self.tile = tile
        self.batch_size = batch_size
        self.tta = tta
        self.variance = variance
        self.blend = blend
        self.margin = receptive_radius(model) if overlap is None else overlap
        # float16 only where CUDA runs it; "auto" is decided on the first batch
        self.half: bool | str = half if device.type == "cuda" else False
        self.notes: list[str] = []

    # one batch -------------------------------------------------------------------------------
    def _net(self, x: torch.Tensor, half: bool) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, C, h, w)`` -> probabilities ``(N, K, h', w')`` and variance ``(N, h', w')``."""
        x = torch.from_numpy(batch).to(self.device)
        if self.half == "auto":
            full = self._net(x, False)
            low = self._net(x, True)
            self.half = bool(torch.equal(full.argmax(1), low.argmax(1)))
            self.notes.append("float16 gives the same labels; using it" if self.half else
                              "float16 changes labels; staying with float32")
        views = range(8) if self.tta else range(1)
        total = sq = None
        for k in views:
            p = d4_inverse(self._net(d4_view(x, k), bool(self.half)), k)
            total = p if total is None else total + p
            if self.variance:
                sq = p * p if sq is None else sq + p * p
        mean = total / len(views) if len(views) > 1 else total
        var = None
        if self.variance:
            # mean over classes of E[p^2] - E[p]^2; x4 maps the largest variance (0.25) to 1
            var = (4 * (sq / len(views) - mean * mean).clamp_min(0).mean(1)).cpu().numpy()
        return mean.cpu().numpy(), var

    # one plane -------------------------------------------------------------------------------
    def run(self, plane: np.ndarray) -> Generator[Progress, None,
                                                   tuple[np.ndarray, np.ndarray | None]]:
        """Generator of tile progress; returns ``(probabilities (K,H,W), variance or None)``."""
        h, w = plane.shape[-2:]
        k = self.model.num_classes
        probs = np.zeros((k, h, w), np.float32)
        var = np.zeros((h, w), np.float32) if self.variance else None
        if self.model.is_valid:
            jobs, src = self._valid_jobs(plane)
            weights = None
        else:
            jobs, src = self._padded_jobs(plane)
            weights = np.zeros((h, w), np.float32) if self.blend == "gaussian" else None
        groups: dict[tuple[int, int], list] = {}
        for job in jobs:
            groups.setdefault(job[0], []).append(job)
        total, done = len(jobs), 0
        for shape_jobs in groups.values():
            for i in range(0, len(shape_jobs), self.batch_size):
                chunk = shape_jobs[i:i + self.batch_size]
                batch = np.stack([src[:, sy, sx] for _, (sy, sx), _, _ in chunk])
                try:
                    out, v = self.forward(batch)
                except Exception as err:
                    if is_out_of_memory(err):
                        raise OutOfMemory(str(err)) from err
                    raise
                for j, (_, _, (ty, tx), (oy, ox)) in enumerate(chunk):
                    if weights is None:
                        probs[:, ty, tx] = out[j][:, oy, ox]
                        if var is not None:
                            var[ty, tx] = v[j][oy, ox]
                    else:
                        g = np.outer(gaussian_window(out.shape[-2]),
                                     gaussian_window(out.shape[-1]))
                        probs[:, ty, tx] += out[j] * g
                        weights[ty, tx] += g
                        if var is not None:
                            var[ty, tx] += v[j] * g
                done += len(chunk)
                yield Progress(done, total, f"tile {done}/{total}")
        if weights is not None:
            probs /= weights
            if var is not None:
                var /= weights
        return probs, var

    def _valid_jobs(self, plane: np.ndarray):
        c, d = self.model.context, self.model.divisor
        h, w = plane.shape[-2:]
        # a tile bigger than needed for a small image shrinks to the smallest legal cover
        cover = self.model.input_shape_for_output((h, w))
        tile = (min(self.tile[0], cover[0]), min(self.tile[1], cover[1]))
        oy_n, ox_n = tile[0] - 2 * c, tile[1] - 2 * c
        ys = valid_axis_tiles(h, tile[0], c, d)
        xs = valid_axis_tiles(w, tile[1], c, d)
        after_y = ys[-1] + tile[0] - h - c
        after_x = xs[-1] + tile[1] - w - c
        padded = np.pad(plane, ((0, 0), (c, after_y), (c, after_x)), mode="symmetric")
        jobs = []
        for y in ys:
            for x in xs:
                hy, wx = min(oy_n, h - y), min(ox_n, w - x)
                jobs.append((tile, (slice(y, y + tile[0]), slice(x, x + tile[1])),
                             (slice(y, y + hy), slice(x, x + wx)),
                             (slice(0, hy), slice(0, wx))))
        return jobs, padded

    def _padded_jobs(self, plane: np.ndarray):
        h, w = plane.shape[-2:]
        d = self.model.divisor
        ys = padded_axis_tiles(h, self.tile[0], self.margin, d)
        xs = padded_axis_tiles(w, self.tile[1], self.margin, d)
        gauss = self.blend == "gaussian"
        jobs = []
        for y0, y1, ky0, ky1 in ys:
            for x0, x1, kx0, kx1 in xs:
                if gauss:
                    target = (slice(y0, y1), slice(x0, x1))
                    own = (slice(None), slice(None))
                else:
                    target = (slice(ky0, ky1), slice(kx0, kx1))
                    own = (slice(ky0 - y0, ky1 - y0), slice(kx0 - x0, kx1 - x0))
                jobs.append(((y1 - y0, x1 - x0), (slice(y0, y1), slice(x0, x1)), target, own))
        return jobs, plane

    def shrink(self) -> bool:
        """Use less memory after an out-of-memory error; False when nothing is left to try."""
        if self.batch_size > 1:
            self.batch_size //= 2
            return True
        half = (self.tile[0] // 2, self.tile[1] // 2)
        try:
            if self.model.is_valid:
                smaller = self.model.valid_input_shape(half)
            else:
                d = self.model.divisor
                smaller = tuple(max(-(-t // d) * d, 2 * self.margin + d) for t in half)
        except ValueError:
            return False
        if smaller[0] >= self.tile[0] and smaller[1] >= self.tile[1]:
            return False
        self.tile = (min(smaller[0], self.tile[0]), min(smaller[1], self.tile[1]))
        return True



def drain(gen: Generator[Any, None, Any]) -> Any:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


__all__ = ["OutOfMemory", "PlanePredictor", "d4_inverse", "d4_view", "drain", "is_out_of_memory"]
