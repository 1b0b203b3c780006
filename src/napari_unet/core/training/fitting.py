"""One optimizer step on a batch: the net in train mode (normalisation frozen or not), the
learning-rate warm-up, the configured loss with its distillation term, and dropout masks that a
resumed run repeats; the net's forward pass over a whole image (validation, previews)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ..model.unet import UNet
from .config import TrainConfig
from .losses import LOSSES, distillation
from .optimizer import set_warmup_lr
from .sampling import mirror_indices


class Fitter:
    """Steps ``model`` with ``optimizer`` as ``config`` says, on ``device``.

    Built before a checkpoint's weights are restored into ``model``: with ``config.distill``
    > 0 it keeps a frozen copy of the starting weights (the teacher: what the net already
    knew), with ``config.anchor`` > 0 the starting weights themselves.
    """

    def __init__(self, model: UNet, optimizer: torch.optim.Optimizer, config: TrainConfig,
                 device: torch.device) -> None:
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.device = device
        # the starting weights, frozen: what the net already knew, for the distillation term
        self.teacher = None
        if config.distill > 0:
            self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        # the starting weights, which every step pulls the weights back towards (config.anchor)
        self.start = [p.detach().clone() for p in model.parameters()] \
            if config.anchor > 0 else None
        self.has_dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0
                               for m in model.modules())
        self._writing = 0

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Marks a write to the weights (or to state that must change with them) that must
        not be cut half-way: :attr:`updating` is True inside."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1

    @property
    def updating(self) -> bool:
        """Whether a :meth:`writing` block runs now."""
        return self._writing > 0

    def train_mode(self) -> None:
        """The model in train mode, its batch norms in eval mode with ``config.freeze_norm``."""
        self.model.train()
        if self.config.freeze_norm:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def step(self, image: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
             step: int) -> float:
        """One optimizer step on a batch; ``step`` counts the steps done before it. Returns
        the loss."""
        loss = self.gradients(image, target, weights, step)
        self.apply()
        return loss

    def gradients(self, image: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                  step: int) -> float:
        """The loss of a batch and its gradients, the weights untouched (stopping here loses
        nothing but this step). Returns the loss."""
        dev = self.device
        image = image.to(dev, non_blocking=True)
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        target = target.to(dev, non_blocking=True)
        weights = weights.to(dev, non_blocking=True)
        self.train_mode()
        set_warmup_lr(self.optimizer, self.config, step)
        self.optimizer.zero_grad(set_to_none=True)
        if self.has_dropout:
            # Dropout masks seeded by (seed, step), so a resumed run repeats an uninterrupted
            # one; fork_rng keeps the caller's global torch RNG untouched.
            devices = [dev] if dev.type in ("cuda", "mps") else []
            with torch.random.fork_rng(devices=devices, device_type=dev.type
                                       if devices else "cuda"):
                torch.manual_seed(self.config.seed * 1_000_003 + step)
                loss = self.loss(self.model(image), target, weights, image)
                loss.backward()
        else:
            loss = self.loss(self.model(image), target, weights, image)
            loss.backward()
        return float(loss.detach())

    def apply(self) -> None:
        """Change the weights by the gradients of :meth:`gradients` (the optimizer's step),
        then move them ``config.anchor`` of the way back to the starting weights."""
        self.optimizer.step()
        if self.start is not None:
            with torch.no_grad():
                for weight, start in zip(self.model.parameters(), self.start, strict=True):
                    weight.lerp_(start, self.config.anchor)

    def loss(self, logits: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The configured loss; with a teacher and ``image``, plus the distillation term on the
        unannotated pixels (weight 0)."""
        loss = LOSSES[self.config.loss](logits, target, weights)
        if self.teacher is not None and image is not None and bool((weights == 0).any()):
            with torch.no_grad():
                teacher = self.teacher(image)
            loss = loss + self.config.distill * distillation(logits, teacher, weights)
        return loss


def forward_full(model: UNet, image: np.ndarray, device: torch.device | str = "cpu"
                 ) -> torch.Tensor:
    """Logits ``(K, H, W)`` of a whole normalised ``(C, H, W)`` (or ``(H, W)``) image.

    Valid nets see the image mirror-padded by their context (and up to a legal size). The
    caller sets eval mode and ``torch.no_grad()``.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    h, w = image.shape[-2:]
    if model.is_valid:
        c = model.context
        th, tw = model.valid_input_shape((h + 2 * c, w + 2 * c))
        rows = mirror_indices(-c, th, h)
        cols = mirror_indices(-c, tw, w)
        image = image[:, rows[:, None], cols[None, :]]
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    logits = model(x)[0]
    return logits[:, :h, :w]


__all__ = ["Fitter", "forward_full"]
