"""Edits of the Train dock's labels layer reach it once the painting pauses."""

import numpy as np
from napari.layers import Labels

from napari_unet._widgets.train_labels import LabelsFollower


def test_edits_are_handed_on_once_after_the_painting_pauses(qtbot):
    seen = []
    follower = LabelsFollower(lambda layer, snapshot: seen.append((layer, snapshot)))
    follower.timer.setInterval(50)
    layer, other = Labels(np.zeros((8, 8), np.int32)), Labels(np.zeros((8, 8), np.int32))
    follower.follow(layer)
    layer.brush_size = 1
    layer.paint((1, 1), 2)
    layer.paint((2, 2), 3)
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=5_000)
    qtbot.wait(150)
    assert len(seen) == 1  # one snapshot for both strokes
    got, snapshot = seen[0]
    assert got is layer and snapshot[1, 1] == 2 and snapshot[2, 2] == 3
    snapshot[0, 0] = 9
    assert layer.data[0, 0] == 0  # a copy, not the layer's array

    follower.follow(other)  # the old layer's edits are no longer followed
    layer.data = np.ones((8, 8), np.int32)
    qtbot.wait(150)
    assert len(seen) == 1
    other.data = np.ones((8, 8), np.int32)
    qtbot.waitUntil(lambda: len(seen) == 2, timeout=5_000)
    assert seen[1][0] is other
