"""The frozen heap while a training runs in the viewer's process."""

from __future__ import annotations

import gc

from napari_unet._widgets.gc_freeze import FrozenHeap


def test_the_heap_is_frozen_while_any_hold_is_open_and_given_back_after():
    assert gc.get_freeze_count() == 0
    marker = [object()]  # alive now: frozen with the rest
    first = FrozenHeap()
    assert gc.get_freeze_count() > 0
    assert not any(o is marker for o in gc.get_objects(2))  # out of the collector's sight
    second = FrozenHeap()  # a second dock training at the same time
    first.release()
    first.release()  # idempotent: does not end the second hold
    assert gc.get_freeze_count() > 0
    second.release()
    assert gc.get_freeze_count() == 0
    assert any(o is marker for o in gc.get_objects(2))  # back in the oldest generation


def test_a_heap_frozen_by_someone_else_stays_frozen():
    gc.freeze()
    try:
        hold = FrozenHeap()
        hold.release()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
