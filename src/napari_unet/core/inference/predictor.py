"""The plane predictor: overlap-tile prediction of one normalised ``(C, H, W)`` plane.

The net is injected as a *predictor*: a callable ``(N, C, h, w)`` float tensor ->
``(N, K, h', w')`` class probabilities (``h' = h`` for padded nets, ``h - 2 * context`` for
valid ones), or only the part ``keep`` (rows, columns) of them when it is given, which a padded
net computes fewer rows for (:meth:`UNet.lean_forward`). Test-time augmentation and reduced
precision are wrappers around a predictor (:func:`with_tta`, :func:`with_autocast`,
:class:`FirstBatchCheck`), composed once by :func:`build_predictor`, so the tiling loop has no
branches for them. A wrapper may append channels after the ``K`` probabilities (the TTA
variance does); the loop stitches every channel it gets and hands back the first ``K`` as
probabilities and the next one, if any, as variance.

:class:`PlanePredictor` lays the tiles out with :mod:`.tiles`, runs the predictor on batches
of tiles, stitches ("discard" each tile's border, or Gaussian blending), and can shrink its
batch and tile after running out of memory so the caller can retry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from ..events import Progress
from ..model.unet import UNet, kept_part
from .tiles import gaussian_window, padded_axis_tiles, receptive_radius, valid_axis_tiles

Predictor = Callable[..., torch.Tensor]  # (x, keep: tuple[slice, slice] | None = None)
Keep = tuple[slice, slice] | None


class OutOfMemory(Exception):
    """A forward pass ran out of memory; the caller may :meth:`PlanePredictor.shrink`."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error of torch (CPU or CUDA) or Python."""
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(err, (MemoryError, *oom_types)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


# -- predictors and their wrappers -----------------------------------------------------------
def net_probabilities(model: UNet, channels_last: bool = False) -> Predictor:
    """The bare net as a predictor: softmax over the class axis, in float32.

    The net runs :meth:`UNet.lean_forward` (the logits of ``forward`` with about half the
    memory, which :func:`.tiles.forward_bytes_per_pixel` counts on). ``channels_last`` runs a
    channels-last copy of the net (``model`` itself is left as it is), or the net itself when
    its weights are channels-last already (models loaded for the CPU are: :func:`.checkpoint.
    load_checkpoint`), which saves a copy per job (~10 ms for the shipped net, ~1 % of a
    1536² plane). Its probabilities keep that layout (the stitching copies them anyway: a second
    copy into the contiguous layout cost ~1 % of a big plane's time).
    """
    if channels_last and not is_channels_last(model):
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def predict(x: torch.Tensor, keep: Keep = None) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.softmax(model.lean_forward(x, keep).float(), dim=1)

    return predict


def predicts_channels_last(device: torch.device) -> bool:
    """Whether nets predict in the channels-last layout on ``device``: on the CPU, where
    oneDNN's convolutions took 0.55-0.7x the time of the default layout (docs/tiling.md)."""
    return device.type == "cpu"


def is_channels_last(model: torch.nn.Module) -> bool:
    """Whether every convolution weight of ``model`` is laid out channels-last."""
    return all(p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters() if p.dim() == 4)


def with_autocast(predictor: Predictor, device_type: str, dtype: torch.dtype) -> Predictor:
    """Run ``predictor`` under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU)."""

    def predict(x: torch.Tensor, keep: Keep = None) -> torch.Tensor:
        with torch.autocast(device_type=device_type, dtype=dtype):
            y = predictor(x, keep)
        return y.float()

    return predict


class FirstBatchCheck:
    """Use ``fast`` only if it gives the same labels (arg-max) as ``exact`` on the first batch.

    The first call runs both and decides once; later calls run the chosen one. The decision is
    appended to ``notes`` as a sentence for the user.
    """

    def __init__(self, exact: Predictor, fast: Predictor, name: str,
                 notes: list[str] | None = None):
        self.exact, self.fast, self.name = exact, fast, name
        self.notes = notes if notes is not None else []
        self.use_fast: bool | None = None

    def __call__(self, x: torch.Tensor, keep: Keep = None) -> torch.Tensor:
        if self.use_fast is None:
            full, low = self.exact(x, keep), self.fast(x, keep)
            self.use_fast = bool(torch.equal(full.argmax(1), low.argmax(1)))
            self.notes.append(f"{self.name} gives the same labels; using it" if self.use_fast
                              else f"{self.name} changes labels; staying with float32")
            return low if self.use_fast else full
        return (self.fast if self.use_fast else self.exact)(x, keep)


def d4_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` of the 8 flips/rotations (``k = 0`` is ``x`` itself, not a copy)."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def d4_inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`d4_view` ``k`` on an output."""
    if k % 4:
        y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    if k >= 4:
        y = torch.flip(y, dims=(-1,))
    return y


def with_tta(predictor: Predictor, variance: bool = False) -> TTAPredictor:
    """``predictor`` averaged over the 8 flips/rotations of its input (see
    :class:`TTAPredictor`)."""
    return TTAPredictor(predictor, variance)


class TTAPredictor:
    """Average ``predictor`` over the 8 flips/rotations of its input.

    With ``variance`` one channel is appended: the variance of the probabilities over the views,
    averaged over classes, times 4 (so the largest possible variance, 0.25, maps to 1).
    The views run whole (a rotated view's wanted rows are columns); ``keep`` is cut after.
    :meth:`passes` runs the same as a generator that yields after each view, so a job can stop
    between two views: one view of a big CPU tile takes seconds, all eight tens of seconds
    (Stop waited 26 s on a 17,000² plane before, docs/performance.md).
    """

    n_passes = 8

    def __init__(self, predictor: Predictor, variance: bool = False):
        self.predictor, self.variance = predictor, variance

    def __call__(self, x: torch.Tensor, keep: Keep = None) -> torch.Tensor:
        return drain(self.passes(x, keep))

    def passes(self, x: torch.Tensor, keep: Keep = None
               ) -> Generator[None, None, torch.Tensor]:
        total = sq = None
        for k in range(self.n_passes):
            p = d4_inverse(self.predictor(d4_view(x, k)), k)
            total = p if total is None else total + p
            if self.variance:
                sq = p * p if sq is None else sq + p * p
            if k + 1 < self.n_passes:
                yield
        mean = total / self.n_passes
        if self.variance:
            var = 4 * (sq / self.n_passes - mean * mean).clamp_min(0).mean(1, keepdim=True)
            mean = torch.cat([mean, var], dim=1)
        return kept_part(mean, keep)


def build_predictor(model: UNet, device: torch.device, *, tta: bool = False,
                    variance: bool = False, half: bool | str = False,
                    notes: list[str] | None = None) -> Predictor:
    """Compose the predictor of one job: the net, reduced precision, then TTA.

    ``half`` (CUDA only; ignored elsewhere): True runs float16 autocast, ``"auto"`` keeps it
    only if the first batch's labels equal float32's. On CPU bfloat16 was measured slower than
    float32 on CPUs without native bfloat16 (see docs/tiling.md), so it is not offered here;
    :func:`with_autocast` composes it for who wants it. On CPU the net runs channels-last:
    oneDNN's convolutions took 0.55-0.7x the time of the default layout for the shipped net and
    UNet.small at 256-1536 px tiles (docs/tiling.md); probabilities differ by float rounding.
    """
    predict = net_probabilities(model, channels_last=predicts_channels_last(device))
    if device.type == "cuda" and half:
        low = with_autocast(predict, "cuda", torch.float16)
        predict = low if half is True else FirstBatchCheck(predict, low, "float16", notes)
    if tta:
        predict = with_tta(predict, variance)
    return predict


# -- the plane predictor ---------------------------------------------------------------------
class PlanePredictor:
    """Predicts one normalised ``(C, H, W)`` float32 plane by overlap-tiles.

    Parameters
    ----------
    net : Predictor
        ``(N, C, h, w)`` tensor -> ``(N, K', h', w')`` (``K' >= model.num_classes``).
    model : UNet
        The net's geometry: valid or padded, context, pooling divisor, class count.
    device : torch.device
        Where input batches go.
    tile : (int, int)
        Input tile size (legal for the model).
    batch_size : int
        Tiles per call of ``net``.
    blend : {"discard", "gaussian"}
        Padded nets: keep each tile's centre part, or Gaussian-weighted averaging.
    margin : int, optional
        Padded nets: pixels of context kept on each side of a tile's kept part (the overlap);
        None = the receptive radius (exact).
    notes : list of str, optional
        Shared with wrappers that report decisions (:class:`FirstBatchCheck`).
    """

    def __init__(self, net: Predictor, model: UNet, device: torch.device,
                 tile: tuple[int, int], batch_size: int = 1, blend: str = "discard",
                 margin: int | None = None, notes: list[str] | None = None):
        self.net = net
        self.model = model
        self.device = device
        self.tile = tuple(tile)
        self.batch_size = batch_size
        self.blend = blend
        self.margin = receptive_radius(model) if margin is None else margin
        self.notes = notes if notes is not None else []
        self._windows: dict[tuple[int, int], np.ndarray] = {}

    # one batch -------------------------------------------------------------------------------
    def forward(self, batch: np.ndarray, keep: Keep = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, C, h, w)`` -> probabilities ``(N, K, h', w')`` and variance ``(N, h', w')``
        (or their part ``keep`` (rows, columns))."""
        return drain(self.forward_passes(batch, keep))

    @property
    def passes_per_batch(self) -> int:
        """Net passes per batch of tiles (8 with TTA): :meth:`forward_passes` yields between
        them."""
        return getattr(self.net, "n_passes", 1)

    def forward_passes(self, batch: np.ndarray, keep: Keep = None
                       ) -> Generator[None, None, tuple[np.ndarray, np.ndarray | None]]:
        """As :meth:`forward`, yielding between the net's passes (see
        :class:`TTAPredictor`)."""
        x = torch.from_numpy(batch).to(self.device)
        passes = getattr(self.net, "passes", None)
        # (a net without passes is one pass: an empty run, then the net itself)
        run = passes(x, keep) if passes is not None else iter(())
        while True:
            # inference mode per pass: a context held across a yield would leak into the caller
            with torch.inference_mode():
                try:
                    next(run)
                except StopIteration as end:
                    y = end.value if passes is not None else self.net(x, keep)
                    out = y.cpu().numpy()
                    break
            yield
        k = self.model.num_classes
        return out[:, :k], (out[:, k] if out.shape[1] > k else None)

    # one plane, or a stack of planes of one shape --------------------------------------------
    def run(self, plane: np.ndarray, into: np.ndarray | None = None,
            keep: tuple[slice, slice] | None = None
            ) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray | None]]:
        """Generator of tile progress; returns ``(probabilities (K,H,W), variance or None)``.

        ``plane`` may also be a stack ``(B, C, H, W)`` of planes of one shape: then the results
        are ``(B, K, H, W)`` and ``(B, H, W)``, and tiles of different planes share a batch
        (the thin XZ/YZ slices of a stack: one call of the net for many, not one each).
        ``keep``: only this part of the plane is wanted (e.g. a block's core inside the window
        read around it): the result covers it alone, and tiles that keep nothing of it are not
        computed. ``into``: a float32 ``(K, h, w)`` array of the kept part's shape that the
        probabilities are stitched into (then returned), so that a caller keeping them needs no
        copy; left out when the net returns more channels (a variance).
        """
        stacked = plane.ndim == 4
        planes = plane if stacked else plane[None]
        h, w = planes.shape[-2:]
        if self.model.is_valid:
            jobs, src = self._valid_jobs(planes)
            gauss = False
        else:
            jobs, src = self._padded_jobs(planes)
            gauss = self.blend == "gaussian"
        (y0, y1, _), (x0, x1, _) = (keep[0].indices(h), keep[1].indices(w)) if keep else (
            (0, h, 1), (0, w, 1))
        jobs = [job for job in (_kept(job, (y0, y1), (x0, x1)) for job in jobs) if job]
        groups: dict[tuple[int, int], list] = {}
        for b in range(len(planes)):
            for job in jobs:
                groups.setdefault(job[0], []).append((b, *job))
        passes = self.passes_per_batch
        n_tiles = len(jobs) * len(planes)
        total, done = n_tiles * passes, 0
        stitched = weights = None
        for shape_jobs in groups.values():
            for i in range(0, len(shape_jobs), self.batch_size):
                chunk = shape_jobs[i:i + self.batch_size]
                if len(chunk) == 1:  # no copy when one tile is the whole (contiguous) plane
                    b, _, (sy, sx), _, _ = chunk[0]
                    batch = np.ascontiguousarray(src[b, None, :, sy, sx])
                else:
                    batch = np.stack([src[b, :, sy, sx] for b, _, (sy, sx), _, _ in chunk])
                # only the rows and columns the chunk's tiles keep (a padded net skips the
                # others' rows in its expanding path: ~8 % of a 4096² plane's time, docs/tiling.md)
                box = _bounding_box([own for *_, own in chunk])
                try:
                    forward = self.forward_passes(batch, box)
                    while True:  # a Progress between the net's passes (8 with TTA)
                        try:
                            next(forward)
                        except StopIteration as end:
                            out, var = end.value
                            break
                        done += len(chunk)
                        yield Progress(done, total, f"tile {done // passes + 1}/{n_tiles}")
                except RuntimeError as err:  # torch's CPU allocator fails with a RuntimeError
                    if is_out_of_memory(err):
                        raise OutOfMemory(str(err)) from err
                    raise
                except MemoryError as err:
                    raise OutOfMemory(str(err)) from err
                if var is not None:
                    out = np.concatenate([out, var[:, None]], axis=1)
                if stitched is None:  # channels as the wrappers return them
                    shape = (len(planes), out.shape[1], y1 - y0, x1 - x0)
                    if (not stacked and into is not None and into.shape == shape[1:]
                            and into.dtype == np.float32):
                        stitched = into[None]
                    else:  # discarded overlaps: the kept parts cover every pixel once
                        stitched = np.empty(shape, np.float32)
                    if gauss:
                        stitched[...] = 0
                        weights = np.zeros((shape[0], 1, *shape[2:]), np.float32)
                for j, (b, tile, _, (ty, tx), (oy, ox)) in enumerate(chunk):
                    part = out[j][:, _shifted(oy, box[0]), _shifted(ox, box[1])]
                    if weights is None:  # torch's copy: on all threads (NumPy's: on one)
                        torch.from_numpy(stitched[b, :, ty, tx]).copy_(torch.from_numpy(part))
                    else:  # (Gaussian blending: padded nets, whose output is the tile's size)
                        g = self._window(tile)[oy, ox]
                        stitched[b, :, ty, tx] += part * g
                        weights[b, 0, ty, tx] += g
                done += len(chunk)
                yield Progress(done, total, f"tile {done // passes}/{n_tiles}")
        if weights is not None:
            stitched /= weights
        k = self.model.num_classes
        probs, var = stitched[:, :k], (stitched[:, k] if stitched.shape[1] > k else None)
        return (probs, var) if stacked else (probs[0], None if var is None else var[0])

    def _window(self, shape: tuple[int, int]) -> np.ndarray:
        if shape not in self._windows:
            self._windows[shape] = np.outer(gaussian_window(shape[0]), gaussian_window(shape[1]))
        return self._windows[shape]

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
        padded = np.pad(plane, ((0, 0),) * (plane.ndim - 2) + ((c, after_y), (c, after_x)),
                        mode="symmetric")
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
                    own = (slice(0, y1 - y0), slice(0, x1 - x0))
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


def _kept(job: tuple, ys: tuple[int, int], xs: tuple[int, int]) -> tuple | None:
    """A tile job with its target (plane pixels) and own part (tile output pixels) cut to the
    kept rectangle ``ys`` x ``xs`` and the target made relative to it; None when it keeps
    nothing there."""
    shape, source, target, own = job
    cut_target, cut_own = [], []
    for t, o, (k0, k1) in zip(target, own, (ys, xs), strict=True):
        a, b = max(t.start, k0), min(t.stop, k1)
        if a >= b:
            return None
        start = (o.start or 0) + a - t.start
        cut_target.append(slice(a - k0, b - k0))
        cut_own.append(slice(start, start + b - a))
    return shape, source, tuple(cut_target), tuple(cut_own)


def _bounding_box(owns: list[tuple[slice, slice]]) -> tuple[slice, slice]:
    """The smallest (rows, columns) box holding every tile's own part (all start-stop)."""
    return tuple(slice(min(o[axis].start for o in owns), max(o[axis].stop for o in owns))
                 for axis in (0, 1))  # type: ignore[return-value]


def _shifted(own: slice, box: slice) -> slice:
    return slice(own.start - box.start, own.stop - box.start)


def plane_predictor(model: UNet, device: torch.device, tile: tuple[int, int], batch_size: int,
                    tta: bool, variance: bool, blend: str, margin: int | None,
                    half: bool | str) -> PlanePredictor:
    """A :class:`PlanePredictor` of ``model`` with the wrappers the settings ask for."""
    notes: list[str] = []
    net = build_predictor(model, device, tta=tta, variance=variance, half=half, notes=notes)
    return PlanePredictor(net, model, device, tile, batch_size, blend, margin, notes)


def drain(gen: Generator[Any, None, Any]) -> Any:
    """Run a generator to its end and return its return value (ignoring what it yields)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


__all__ = [
    "FirstBatchCheck", "OutOfMemory", "PlanePredictor", "Predictor", "TTAPredictor",
    "build_predictor", "d4_inverse", "d4_view", "drain", "is_channels_last", "is_out_of_memory",
    "net_probabilities", "plane_predictor", "predicts_channels_last", "with_autocast", "with_tta",
]
