"""The moving average of a model's weights during training (``TrainConfig.average``).

A run gives the average, not the last weights the optimizer stepped: while a run goes on the
model holds the live weights (the optimizer steps them) and the average follows them after
each step; when the run stops the model holds the average and the live weights wait here, so
that a next run (or a checkpoint, which stores them beside the average) goes on from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from ..model.unet import UNet


class WeightAverage:
    """The moving average of ``model``'s floating-point weights and buffers.

    Parameters
    ----------
    model : UNet
        The trained net (its weights are read and written in place).
    decay : float
        ``TrainConfig.average``: each step the average moves ``1 - decay`` of the way to the
        live weights; 0 (off) never starts an average.
    guard : callable returning a context manager, optional
        Entered around every write to the weights (the trainer's :meth:`Trainer.updating`
        flag: a stop request waits for the end of a write).

    Attributes
    ----------
    average : list of torch.Tensor or None
        The average, started when a run starts (None: off, or no run yet).
    live : list of torch.Tensor or None
        The live weights while no run is going on and the model holds the average.
    """

    def __init__(self, model: UNet, decay: float,
                 guard: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.model = model
        self.decay = decay
        self.guard = guard
        self.average: list[torch.Tensor] | None = None
        self.live: list[torch.Tensor] | None = None

    def float_keys(self) -> list[str]:
        """Names of the model's floating-point weights and buffers (not the batch counters),
        in the order of :meth:`float_state`."""
        return [k for k, v in self.model.state_dict().items() if v.dtype.is_floating_point]

    def float_state(self) -> list[torch.Tensor]:
        """The model's floating-point weights and buffers (not the batch counters)."""
        return [v for v in self.model.state_dict().values() if v.dtype.is_floating_point]

    @torch.no_grad()
    def load(self, values: list[torch.Tensor]) -> None:
        """Copy ``values`` (in :meth:`float_state` order) into the model."""
        with self.guard():
            for target, value in zip(self.float_state(), values, strict=True):
                target.copy_(value)

    def resume(self, live: dict[str, Any], device: torch.device) -> None:
        """Take over a checkpoint's live weights (the model holds the saved average).

        The optimizer state belongs to the live weights. Averaging on, both go on; off,
        training goes on from the live weights (the exact continuation) and the average is
        dropped.
        """
        weights = [live[k].to(device) for k in self.float_keys()]
        if self.decay > 0:
            self.average = [v.detach().clone() for v in self.float_state()]
            self.live = weights
        else:
            self.load(weights)

    def begin(self) -> None:
        """A run starts: the optimizer goes on from the weights it was stepping, and the
        average starts (when on and not started yet)."""
        if self.live is not None:
            self.load(self.live)
            self.live = None
        if self.decay > 0 and self.average is None:
            self.average = [v.detach().clone() for v in self.float_state()]

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: move the average towards the live weights."""
        if self.average is None:
            return
        weight = 1.0 - self.decay
        with self.guard():
            for avg, value in zip(self.average, self.float_state(), strict=True):
                avg.lerp_(value, weight)

    def end(self) -> None:
        """A run stops: the run gives the average; the live weights wait in :attr:`live`."""
        if self.average is not None:
            self.live = [v.detach().clone() for v in self.float_state()]
            self.load(self.average)

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """Inside, the model holds the weights a run gives at this step: the average (when
        started), else the live weights; the live ones are back on exit."""
        if self.average is None:
            yield
            return
        live = [v.detach().clone() for v in self.float_state()]
        self.load(self.average)
        try:
            yield
        finally:
            self.load(live)

    def live_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The weights the optimizer steps, as a state_dict, when the model a run gives is
        their moving average (else None: they are the same)."""
        if self.average is None:
            return None
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.live is not None:  # between runs the model holds the average
            state.update(zip(self.float_keys(), (v.detach().clone() for v in self.live),
                             strict=True))
        return state


__all__ = ["WeightAverage"]
