"""The U-Net's building blocks: the seed's ``DoubleConv``, ``Down``, ``Up`` and ``OutConv``.

Every block works for both padding modes. With ``padding=0`` ("valid", the paper) each 3x3
convolution trims one pixel from every side; with ``padding=1`` ("same") sizes are kept.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by optional BatchNorm and a ReLU.

    Input ``(N, in_channels, H, W)`` -> output ``(N, out_channels, H - 4 + 4 * padding, ...)``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, padding: int = 1, batch_norm: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A bias is redundant right before BatchNorm.
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """2x2 max-pooling (stride 2) followed by a :class:`DoubleConv`.

    Input ``(N, in_channels, H, W)`` with even H, W -> ``(N, out_channels, H/2 - 4 + 4p, ...)``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, padding: int = 1, batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_channels, out_channels, padding, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Upsample x2 halving the channels, concatenate the skip connection, then DoubleConv.

    ``upsampling="transpose"`` is the paper's 2x2 up-convolution; ``"bilinear"`` is bilinear
    interpolation followed by a 1x1 convolution that halves the channels (a 1x1 kernel keeps
    the valid-size arithmetic identical). The skip is centre-cropped to the upsampled size,
    which is a no-op for padded nets.

    ``x``: ``(N, in_channels, h, w)``, ``skip``: ``(N, in_channels // 2, H, W)`` with H >= 2h
    -> ``(N, out_channels, 2h - 4 + 4p, 2w - 4 + 4p)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        padding: int = 1,
        upsampling: str = "transpose",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        half = in_channels // 2
        if upsampling == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        elif upsampling == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, half, kernel_size=1),
            )
        else:
            raise ValueError(f"upsampling must be 'transpose' or 'bilinear', got {upsampling!r}")
        self.conv = DoubleConv(2 * half, out_channels, padding, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # ``x`` now names the concatenation only, so in inference the upsampled half is freed
        # before the convolutions (a 1152² tile of the shipped net: peak ~600 instead of ~850
        # MiB with core.runtime.heap's reuse, docs/big-images-and-volumes.md)
        x = torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1)
        return self.conv(x)


class OutConv(nn.Module):
    """1x1 convolution mapping features to class scores (logits)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def center_crop(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Crop the last two axes of ``x`` to ``size`` around their centre."""
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def he_init_(module: nn.Module) -> None:
    """He initialisation as in the paper: N(0, sqrt(2 / N)), N = incoming nodes of one neuron.

    For a convolution N = k*k*in_channels. A transposed 2x2/stride-2 convolution feeds each
    output pixel from exactly one kernel tap, so N = in_channels * (k / stride)^2; torch's own
    fan-in (computed from the weight's second axis) would use the output channels instead.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.weight.is_meta:
            # a shape-only skeleton (checkpoint loading): nothing to draw, and random ops on
            # meta tensors import torch._dynamo (~3 s of imports holding the GIL, a freeze of
            # the viewer when a dock loads a model in its worker thread)
            continue
        if isinstance(m, nn.ConvTranspose2d):
            k, s = m.kernel_size[0] * m.kernel_size[1], m.stride[0] * m.stride[1]
            fan_in = m.in_channels * max(k // s, 1)
        elif isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        else:
            continue
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad the bottom/right of ``x`` so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(H, W)`` to crop back to. Mirroring falls back to
    edge replication when the image is smaller than the pad (reflection needs pad < size).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)
