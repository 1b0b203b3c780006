"""The U-Net family of the seed: one class, three named presets, and the tile-size arithmetic.

``UNet.original`` is the paper's net (valid convolutions, 572x572 -> 388x388, 31,030,658
parameters for 1 input channel and 2 classes); ``UNet.modified`` keeps the channels but pads
(output size = input size); ``UNet.small`` halves the channels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import DoubleConv, Down, OutConv, Up, center_crop, he_init_, pad_to_multiple

PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transpose", "bilinear")
# Bounds checked before a net is built, so that a model file claiming an absurd architecture
# fails with a message instead of allocating gigabytes (the paper's net: depth 4, 64..1024).
MAX_DEPTH = 8
MAX_WIDTH = 4096  # features of the deepest level, base_channels * 2**depth
MAX_CHANNELS = 1024  # input channels and output classes


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base_channels * 2**level`` features per level.

    Parameters
    ----------
    in_channels : int
        Image channels.
    num_classes : int
        Output classes (2 for background/foreground).
    base_channels : int
        Features of the first level (64 in the paper).
    depth : int
        Number of 2x2 poolings (4 in the paper).
    padding : {"same", "valid"}
        ``"valid"`` is the paper's unpadded convolutions (output smaller than input, to be used
        with overlap-tile prediction); ``"same"`` pads so output size = input size for any H, W.
    upsampling : {"transpose", "bilinear"}
        The paper's 2x2 up-convolution, or bilinear x2 followed by a 1x1 convolution.
    batch_norm : bool
        BatchNorm after every 3x3 convolution (not in the paper; off by default).
    dropout : float
        Dropout probability at the end of the contracting path (the paper uses it, 0.5).

    Notes
    -----
    ``forward`` maps ``(N, in_channels, H, W)`` to logits
    ``(N, num_classes, *output_shape((H, W)))``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "same",
        upsampling: str = "transpose",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_architecture(in_channels, num_classes, base_channels, depth, padding, upsampling,
                            dropout)
        self.config: dict[str, Any] = dict(
            in_channels=int(in_channels), num_classes=int(num_classes),
            base_channels=int(base_channels), depth=int(depth), padding=padding,
            upsampling=upsampling, batch_norm=bool(batch_norm), dropout=float(dropout),
        )
        p = 1 if padding == "same" else 0
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0], p, batch_norm)
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], p, batch_norm) for i in range(depth)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], p, upsampling, batch_norm) for i in reversed(range(depth))
        )
        self.outc = OutConv(widths[0], num_classes)
        he_init_(self)

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def original(cls, in_channels: int = 1, num_classes: int = 2, **overrides: Any) -> UNet:
        """The paper's net: valid convolutions, up-convolutions, 64..1024 channels, dropout 0.5."""
        kwargs = dict(base_channels=64, depth=4, padding="valid", upsampling="transpose",
                      dropout=0.5)
        return cls(in_channels, num_classes, **{**kwargs, **overrides})

    @classmethod
    def modified(cls, in_channels: int = 1, num_classes: int = 2, **overrides: Any) -> UNet:
        """The paper's channels with padded convolutions: output size = input size."""
        kwargs = dict(base_channels=64, depth=4, padding="same", upsampling="transpose")
        return cls(in_channels, num_classes, **{**kwargs, **overrides})

    @classmethod
    def small(cls, in_channels: int = 1, num_classes: int = 2, **overrides: Any) -> UNet:
        """Padded net with 32..512 channels (a quarter of the parameters)."""
        kwargs = dict(base_channels=32, depth=4, padding="same", upsampling="transpose")
        return cls(in_channels, num_classes, **{**kwargs, **overrides})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet:
        """Rebuild a net from its :attr:`config` (as stored in checkpoints).

        ``TypeError``/``ValueError`` name a missing, unknown or out-of-bounds field.
        """
        if not isinstance(config, dict):
            raise TypeError(f"architecture must be a dict, got {type(config).__name__}")
        required = {"in_channels", "num_classes"}
        known = {"in_channels", "num_classes", "base_channels", "depth", "padding",
                 "upsampling", "batch_norm", "dropout"}
        if missing := required - config.keys():
            raise ValueError(f"architecture lacks {', '.join(sorted(missing))}")
        if unknown := config.keys() - known:
            names = ", ".join(sorted(map(str, unknown)))
            raise ValueError(f"architecture has unknown fields {names}")
        return cls(**config)

    # -- shapes ----------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.config["in_channels"]

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    @property
    def is_valid(self) -> bool:
        """True for the paper's unpadded (valid-convolution) nets."""
        return self.config["padding"] == "valid"

    @property
    def divisor(self) -> int:
        """2**depth: tile origins must step by multiples of this for exact stitching."""
        return 2 ** self.config["depth"]

    @property
    def context(self) -> int:
        """Pixels lost on each side by a valid net (92 for depth 4); 0 for padded nets."""
        return (12 * self.divisor - 8) // 2 if self.is_valid else 0

    def output_shape(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial output size for an input of ``input_hw``; raises for illegal valid sizes."""
        return tuple(self._output_length(int(n)) for n in input_hw)  # type: ignore[return-value]

    def valid_input_shape(self, min_hw: tuple[int, int]) -> tuple[int, int]:
        """Smallest legal input size >= ``min_hw`` per axis (valid nets: 16k + 188 at depth 4)."""
        return tuple(self._legal_at_least(int(n)) for n in min_hw)  # type: ignore[return-value]

    def input_shape_for_output(self, out_hw: tuple[int, int]) -> tuple[int, int]:
        """Smallest legal input whose output covers at least ``out_hw``."""
        return self.valid_input_shape(tuple(n + 2 * self.context for n in out_hw))

    def _smallest_legal(self) -> int:
        # input = 2^d * s + 4 (2^d - 1) with bottleneck input s >= 8 (smaller gives no output).
        return self.divisor * 8 + 4 * (self.divisor - 1) if self.is_valid else 1

    def _legal_at_least(self, n: int) -> int:
        if not self.is_valid:
            return max(n, 1)
        first = self._smallest_legal()
        if n <= first:
            return first
        return first + -(-(n - first) // self.divisor) * self.divisor

    def _output_length(self, n: int) -> int:
        if not self.is_valid:
            if n < 1:
                raise ValueError(f"input size must be >= 1, got {n}")
            return n
        first = self._smallest_legal()
        if n < first or (n - first) % self.divisor:
            below = first + max((n - first) // self.divisor, 0) * self.divisor
            nearest = sorted({b for b in (below, self._legal_at_least(n)) if b >= first})
            raise ValueError(
                f"tile {n} is not legal for this valid depth-{self.config['depth']} net; "
                f"nearest are {' and '.join(map(str, nearest))}"
            )
        return n - 2 * self.context

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._sized(x, self._forward)

    def _sized(self, x: torch.Tensor, body: Any) -> torch.Tensor:
        """``body`` (:meth:`_forward` or :meth:`_lean_forward`) on a checked input: a padded
        net's input mirrored up to a multiple of the pooling and its output cropped back; a
        valid net's size must be legal. (``Any``: the exported architecture file, a copy of
        this module, may import only typing and torch.)"""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if self.is_valid:
            self.output_shape(tuple(x.shape[-2:]))  # clear error for illegal sizes
            return body(x)
        x, (h, w) = pad_to_multiple(x, self.divisor)
        return body(x)[..., :h, :w]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)

    def lean_forward(self, x: torch.Tensor,
                     keep: tuple[slice, slice] | None = None) -> torch.Tensor:
        """The logits of :meth:`forward` (to float rounding) with less memory, without autograd.

        Prediction's forward passes: the expanding path never concatenates. The first 3x3
        convolution of each up block is split over its input channels (skip part + upsampled
        part, summed in place), and every feature map is freed as soon as it has been used, so
        the widest level holds ~3 maps of ``base_channels`` instead of ~6 (UNet.small, 1024²,
        no freed memory kept: ~390 instead of ~740 bytes per pixel; docs/tiling.md). With
        autograd on it is :meth:`forward` (training keeps every map for the backward pass).

        ``keep`` (rows, columns): only this part of the output is wanted, and only it is
        returned. A padded net's expanding path then computes only the rows it needs: each
        level's rows plus the context of the convolutions above it (exact: the same logits to
        float rounding). Rows are cut as views, free for a batch of one in the channels-last
        layout of the CPU predictor (other layouts copy them); columns are cut from the output,
        since cutting them inside took copies that cost more than they saved (docs/tiling.md).
        """
        if torch.is_grad_enabled():
            out = self(x)
        elif keep is not None and not self.is_valid:
            rows = range(x.shape[-2])[keep[0]]
            if rows.step != 1:
                raise ValueError(f"keep must be a contiguous run of rows, got {keep[0]}")
            # (_sized's crop to the input's height keeps all of the fewer rows computed)
            out = self._sized(x, lambda padded: self._lean_forward(
                padded, (rows.start, max(rows.start, rows.stop))))
            return out[..., keep[1]]
        else:
            out = self._sized(x, self._lean_forward)
        return kept_part(out, keep)

    def _lean_forward(self, x: torch.Tensor,
                      rows: tuple[int, int] | None = None) -> torch.Tensor:
        skips = [self.inc(x)]  # (the input stays alive with the caller: one map of C_in)
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        if rows is not None:
            wanted, read = _rows_per_level(
                rows, [s.shape[-2] for s in skips] + [x.shape[-2]],
                extra=1 if self.config["upsampling"] == "bilinear" else 0)
            x = x[..., slice(*wanted[-1]), :]
        for level, up in zip(reversed(range(len(self.ups))), self.ups, strict=True):
            # names are dropped as soon as a map is used: each `del` frees one (a list or an
            # argument would keep it alive until the level is done)
            skip = skips.pop()
            first = up.conv.block[0]
            w_skip, w_up = _split_in_channels(first.weight, skip.shape[1])
            if rows is None:
                skip = center_crop(skip, (2 * x.shape[-2], 2 * x.shape[-1]))
                from_up = slice(None)
            else:  # this level's rows to read, and where they lie in the upsampled rows
                (r0, r1), below = read[level], wanted[level + 1][0]
                skip = skip[..., r0:r1, :]
                from_up = slice(r0 - 2 * below, r1 - 2 * below)
            out = F.conv2d(skip, w_skip, first.bias, padding=first.padding)
            del skip
            upsampled = up.up(x)
            del x
            out += F.conv2d(upsampled[..., from_up, :], w_up, None, padding=first.padding)
            del upsampled
            for layer in up.conv.block[1:]:
                out = layer(out)
            if rows is not None:  # the rows read around the wanted ones are not exact
                (a, b), r0 = wanted[level], read[level][0]
                out = out[..., a - r0:b - r0, :]
            x, out = out, None
        return self.outc(x)


def kept_part(y: torch.Tensor, keep: tuple[slice, slice] | None) -> torch.Tensor:
    """``y``'s part ``keep`` (rows, columns of its last two axes), or ``y`` when None: what a
    predictor asked for ``keep`` returns (:meth:`UNet.lean_forward`)."""
    return y if keep is None else y[..., keep[0], keep[1]]


def _rows_per_level(rows: tuple[int, int], heights: list[int], extra: int
                    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Rows of a padded net's expanding path needed for output ``rows``, per level.

    ``heights``: each level's map height (level 0 = full resolution, last = bottleneck).
    Returns ``wanted`` (rows each level must give right, one entry per level including the
    bottleneck) and ``read`` (rows each up block computes: ``wanted`` plus the 2 rows of
    context of its two 3x3 convolutions, within the map, where zero padding is the net's own).
    An up block's rows ``[a, b)`` come from the level below's rows ``[a // 2, ceil(b / 2))``
    (the 2x2 up-convolution), one more each side for bilinear upsampling (``extra``).
    """
    wanted, read = [(max(0, rows[0]), min(heights[0], rows[1]))], []
    for level in range(len(heights) - 1):
        a, b = wanted[level]
        a, b = max(0, a - 2), min(heights[level], b + 2)
        read.append((a, b))
        wanted.append((max(0, a // 2 - extra), min(heights[level + 1], -(-b // 2) + extra)))
    return wanted, read


def _split_in_channels(weight: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution's weight cut after input channel ``first``, each part dense in the
    weight's own memory format (oneDNN takes the channels-last copy of the CPU predictor)."""
    fmt = (torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last)
           and not weight.is_contiguous() else torch.contiguous_format)
    return (weight[:, :first].contiguous(memory_format=fmt),
            weight[:, first:].contiguous(memory_format=fmt))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_architecture(in_channels, num_classes, base_channels, depth, padding, upsampling,
                        dropout) -> None:
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("base_channels", base_channels), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a positive integer, got {type(value).__name__}")
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if depth > MAX_DEPTH:
        raise ValueError(f"depth must be at most {MAX_DEPTH}, got {depth}")
    if base_channels * 2**depth > MAX_WIDTH:
        raise ValueError(f"base_channels * 2**depth must be at most {MAX_WIDTH}, got "
                         f"{base_channels} * 2**{depth} = {base_channels * 2**depth}")
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if value > MAX_CHANNELS:
            raise ValueError(f"{name} must be at most {MAX_CHANNELS}, got {value}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


__all__ = ["MAX_CHANNELS", "MAX_DEPTH", "MAX_WIDTH", "UNet", "center_crop", "count_parameters",
           "kept_part"]
