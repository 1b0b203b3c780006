"""The optimizer of a training run: which weights train and how fast (the encoder's learning
rate scale, frozen levels) and the learning-rate warm-up."""

from __future__ import annotations

import torch

from ..model.unet import UNet
from .config import TrainConfig


def frozen_parameters(model: UNet, levels: int) -> list[torch.nn.Parameter]:
    """Parameters of the top ``levels`` resolution levels of ``model`` (level 1: ``inc``, the
    last up block and ``outc``; level k > 1 adds ``downs[k - 2]`` and ``ups[-k]``), at most
    ``depth - 1`` levels: the two lowest always train (a preset works for any net)."""
    depth = len(model.downs)
    levels = min(int(levels), depth - 1)
    if levels <= 0:
        return []
    modules = [model.inc, model.outc, *model.ups[depth - levels:], *model.downs[:levels - 1]]
    return [p for mod in modules for p in mod.parameters()]


def make_optimizer(model: UNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``'s parameters: the encoder (``inc`` and
    ``downs``) in a group of its own at ``encoder_lr_scale`` times the learning rate (0:
    frozen), the ``frozen_levels`` frozen. Each group's ``lr_scale`` is kept for
    :func:`set_warmup_lr`."""
    # what an earlier run on this model object froze trains again unless frozen here too
    model.requires_grad_(True)
    encoder = [p for mod in (model.inc, model.downs) for p in mod.parameters()]
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr_scale": 1.0}]
    frozen = frozen_parameters(model, cfg.frozen_levels)
    if cfg.encoder_lr_scale > 0:
        groups.append({"params": encoder, "lr_scale": float(cfg.encoder_lr_scale)})
    else:
        frozen = encoder + frozen
    # frozen: no gradients computed at all. The frozen levels stay in their groups (the
    # optimizer skips parameters without a gradient), so the optimizer state keeps one
    # layout whatever is frozen and checkpoints resume across that setting
    for p in frozen:
        p.requires_grad_(False)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_warmup_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Linear warm-up over ``warmup_steps`` (the step about to run is ``step + 1``)."""
    factor = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    for g in optimizer.param_groups:
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0) * factor


__all__ = ["frozen_parameters", "make_optimizer", "set_warmup_lr"]
