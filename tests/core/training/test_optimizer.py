"""The optimizer of a run: which levels freeze."""

import pytest
import torch

from napari_unet.core.model.unet import UNet
from napari_unet.core.training.config import FINETUNE_FROZEN_LEVELS, TrainConfig
from napari_unet.core.training.optimizer import frozen_parameters


def test_frozen_levels_by_hand():
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=3)

    def ids(*modules):
        return {id(p) for m in modules for p in m.parameters()}

    assert frozen_parameters(net, 0) == []
    assert {id(p) for p in frozen_parameters(net, 1)} == ids(net.inc, net.ups[2], net.outc)
    level2 = ids(net.inc, net.downs[0], net.ups[1], net.ups[2], net.outc)
    assert {id(p) for p in frozen_parameters(net, 2)} == level2
    # the two lowest levels always train: more is capped
    assert {id(p) for p in frozen_parameters(net, 9)} == level2
    assert frozen_parameters(UNet(1, 2, base_channels=8, depth=2), 1)
    assert frozen_parameters(UNet(1, 2, depth=1), 1) == []
    assert TrainConfig.finetune().frozen_levels == FINETUNE_FROZEN_LEVELS >= 1
    assert TrainConfig.fast().frozen_levels == TrainConfig.paper().frozen_levels == 0
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="frozen_levels"):
            TrainConfig(frozen_levels=bad)
