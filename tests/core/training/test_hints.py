import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.training.hints import (
    HINT_MARGIN,
    WRONG_REACH,
    BackgroundHint,
    hint_events,
    inside,
    paint_box,
)
from napari_unet.core.training.trainingset import TrainingSet

RAW = {"method": "none"}


def test_paint_box_is_the_paint_with_its_margin_clipped_to_the_plane():
    ignore = np.ones((100, 200), bool)
    ignore[40:45, 150:152] = False
    assert paint_box(ignore, 10) == (30, 55, 140, 162)
    assert paint_box(ignore, 60) == (0, 100, 90, 200)
    assert inside((30, 55, 140, 162), (0, 100, 90, 200))
    assert not inside((0, 100, 89, 200), (0, 100, 90, 200))


def test_a_big_plane_painted_in_a_corner_gives_the_hint_that_corner_only():
    size = 3 * HINT_MARGIN
    image = np.zeros((size, size), np.float32)
    labels = np.zeros((size, size), np.int32)
    labels[10:20, 10:20] = 2
    labels[30:34, 30:34] = 1
    seen = []

    def mark(plane):
        seen.append(plane.shape)
        return np.ones(plane.shape[-2:], bool)

    samples = TrainingSet([image], [labels], convention="sparse", normalization=RAW,
                          validation_fraction=0.0)
    hinted = samples.set_background_hint(mark)
    corner = 34 + HINT_MARGIN
    assert seen == [(1, corner, corner)]
    assert hinted == corner * corner - (labels[:corner, :corner] > 0).sum()
    labels[20:25, 10:15] = 1  # new paint inside what the hint saw: no new call
    samples.update(0, labels)
    assert len(seen) == 1
    labels[300:305, 10:15] = 1  # beyond it: the hint sees the union
    samples.update(0, labels)
    assert seen[-1] == (1, 305 + HINT_MARGIN, corner)
    hint = samples.snapshot().train[0].plane.hint
    assert hint[:305 + HINT_MARGIN, :corner][labels[:305 + HINT_MARGIN, :corner] == 0].all()
    assert not hint[:, corner:].any()


def test_the_hint_must_give_the_shape_it_was_given():
    ignore = np.ones((50, 50), bool)
    ignore[5:8, 5:8] = False
    target = np.zeros((50, 50), np.int32)
    with pytest.raises(ValueError, match="background hint gave shape"):
        BackgroundHint(lambda plane: np.ones((2, 2), bool)).plane((0, -1), np.zeros((1, 50, 50)),
                                                                  target, ignore)
    with pytest.raises(ValueError, match="background hint gave shape"):
        BackgroundHint(lambda plane: (np.ones((50, 50), bool), np.ones((2, 2), bool))).plane(
            (0, -1), np.zeros((1, 50, 50)), target, ignore)
    # nothing painted: nothing to hint, and the hint is not run
    assert BackgroundHint(lambda plane: 1 / 0).plane((0, -1), np.zeros((1, 4, 4)),
                                                       np.zeros((4, 4), np.int32),
                                                       np.ones((4, 4), bool)) == (None, None)


def test_the_paint_the_starting_model_gets_wrong_is_where_its_foreground_differs():
    # painted densely: two touching objects (ids 1 and 2) beside background
    target = np.zeros((30, 30), np.int32)
    target[5:15, 5:10] = 1
    target[5:15, 10:15] = 2
    ignore = np.zeros((30, 30), bool)
    ignore[:, 25:] = True  # a strip left unpainted
    # the model sees one blob where the paint has two, and an object on painted background
    foreground = np.zeros((30, 30), bool)
    foreground[5:15, 5:15] = True
    foreground[20:23, 20:23] = True
    foreground[:, 27] = True  # on unpainted pixels: says nothing about the paint
    hint = BackgroundHint(lambda plane: (np.zeros(plane.shape[-2:], bool), foreground))
    hinted, wrong = hint.plane((0, -1), np.zeros((1, 30, 30)), target, ignore)
    assert hinted is None
    # wrong: the seam the paint cuts between 1 and 2 (column 9 of id 1 beside id 2: the cut
    # training makes) and the false blob, each with the painted pixels 2 px around it
    seam = np.zeros((30, 30), bool)
    seam[5:15, 9] = True
    blob = np.zeros((30, 30), bool)
    blob[20:23, 20:23] = True
    expected = np.zeros((30, 30), bool)
    for part in (seam, blob):
        expected |= ndi.binary_dilation(part, iterations=WRONG_REACH)
    np.testing.assert_array_equal(wrong, expected & ~ignore)
    # a hint of the background alone tells nothing of that
    assert BackgroundHint(lambda plane: np.zeros(plane.shape[-2:], bool)).plane(
        (0, -1), np.zeros((1, 30, 30)), target, ignore) == (None, None)


def test_planes_painted_all_over_get_the_pass_within_a_pixel_budget(monkeypatch):
    from napari_unet.core.training import hints

    monkeypatch.setattr(hints, "DENSE_PASS_PIXELS", 2 * 20 * 20)
    calls = []

    def view(plane):
        calls.append(plane.shape)
        return np.zeros(plane.shape[-2:], bool), np.ones(plane.shape[-2:], bool)

    hint = BackgroundHint(view)
    target = np.zeros((20, 20), np.int32)  # painted all over as background: all of it wrong
    painted = np.zeros((20, 20), bool)
    for z in range(3):
        _, wrong = hint.plane((0, z), np.zeros((1, 20, 20)), target, painted)
        assert (wrong is not None) == (z < 2)  # the third plane is over the budget
    assert len(calls) == 2
    hint.plane((0, 0), np.zeros((1, 20, 20)), target, painted)  # seen: cached, no new pass
    assert len(calls) == 2
    # a plane with unpainted pixels always gets the hint (its gaps), whatever the budget
    partly = painted.copy()
    partly[:, :5] = True
    hinted, wrong = hint.plane((0, 3), np.zeros((1, 20, 20)), target, partly)
    assert len(calls) == 3 and wrong.sum() == 20 * 15


def test_the_hint_runs_plane_by_plane_with_a_note_before_each_and_goes_on_after_a_stop():
    images = np.zeros((3, 40, 40), np.float32)
    labels = np.zeros((3, 40, 40), np.int32)
    for z in range(3):
        labels[z, 5:10, 5:10] = 2  # a painted object on each plane
        labels[z, 20:25, 20:25] = 1
    calls = []

    def mark(plane):
        calls.append(plane.shape)
        return np.ones(plane.shape[-2:], bool)

    samples = TrainingSet([images], [labels], convention="sparse", normalization=RAW,
                          validation_fraction=0.0)
    hint = BackgroundHint(mark)
    events = hint_events(hint, samples)
    first = next(events)
    assert first.text == "the starting model looks at the paint: plane 1 of 3"
    assert first.data == {"plane": 1, "planes": 3} and calls == []  # the note comes first
    assert next(events).data == {"plane": 2, "planes": 3} and len(calls) == 1
    events.close()  # stopped: the first plane's pass stays, nothing is installed
    assert samples.snapshot().train[0].plane.hint is None
    assert [p.key for p in hint.pending(samples.annotated_planes())] == [(0, 1), (0, 2)]
    texts = [e.text for e in hint_events(hint, samples)]
    assert texts[:2] == ["the starting model looks at the paint: plane 1 of 2",
                         "the starting model looks at the paint: plane 2 of 2"]
    kept = 3 * (40 * 40 - 2 * 25)
    assert texts[2:] == [f"{kept:,} unpainted pixels between objects the model already "
                         "separates are kept as background"]
    assert len(calls) == 3  # each plane seen once
    assert all(r.plane.hint is not None for r in samples.snapshot().train)
    assert hint.pending(samples.annotated_planes()) == []


def test_pending_planes_count_the_dense_budget_in_order(monkeypatch):
    from types import SimpleNamespace

    from napari_unet.core.training import hints

    monkeypatch.setattr(hints, "DENSE_PASS_PIXELS", 2 * 20 * 20)
    dense = [SimpleNamespace(key=(0, z), ignore=np.zeros((20, 20), bool)) for z in range(3)]
    blank = SimpleNamespace(key=(0, 3), ignore=np.ones((20, 20), bool))
    partly = SimpleNamespace(key=(0, 4), ignore=np.zeros((20, 20), bool))
    partly.ignore[:, :5] = True
    hint = BackgroundHint(lambda plane: np.zeros(plane.shape[-2:], bool))
    # two dense planes fit the budget; an unpainted plane needs nothing; a partly painted one
    # always gets the pass
    assert [p.key for p in hint.pending([*dense, blank, partly])] == [(0, 0), (0, 1), (0, 4)]
