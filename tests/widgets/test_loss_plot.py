"""The loss plot's step axis reads as whole, round numbers of steps."""

from __future__ import annotations

import pytest

from napari_unet._widgets.loss_plot import step_ticks


@pytest.mark.parametrize(("end", "ticks"), [
    (0, [0]), (3, [0, 1, 2, 3]), (7, [0, 2, 4, 6]), (77, [0, 20, 40, 60]),
    (100, [0, 50, 100]), (1234, [0, 500, 1000]),
])
def test_step_ticks_are_whole_round_numbers(end, ticks):
    assert step_ticks(end) == ticks
    assert len(step_ticks(end)) <= 5
