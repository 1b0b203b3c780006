import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import Message
from napari_unet.core.model.checkpoint import resolve_model
from napari_unet.core.model.unet import UNet
from napari_unet.core.normalize import normalize
from napari_unet.core.training.augment import AugmentConfig
from napari_unet.core.training.config import PRESETS, TrainConfig
from napari_unet.core.training.gaps import StartModelGaps, gaps_between_objects
from napari_unet.core.training.trainer import Trainer
from napari_unet.core.training.trainingset import TrainingSet
from napari_unet.core.training.weight_map import separated_instances

RAW = {"method": "none"}


# -- the gaps of a label image -----------------------------------------------------------------
def test_gaps_are_the_background_with_two_different_objects_within_the_radius():
    ids = np.zeros((9, 12), np.int32)
    ids[2:7, 1:5] = 1   # columns 1-4
    ids[2:7, 7:11] = 2  # columns 7-10: a 2-px gap at columns 5-6
    gaps = gaps_between_objects(ids, 2)
    expected = np.zeros_like(gaps)
    # a gap pixel sees both objects in its 5x5 square: columns 5-6, rows 0-8 (rows 0-1 and
    # 7-8 still reach rows 2 and 6 of both objects)
    expected[0:9, 5:7] = True
    np.testing.assert_array_equal(gaps, expected)
    # a 3x3 square never holds both sides of a 2-px gap
    assert not gaps_between_objects(ids, 1).any()
    assert not gaps_between_objects(ids, 0).any()


def test_no_gap_beside_a_lone_object_or_in_its_hole():
    ids = np.zeros((12, 12), np.int32)
    ids[2:10, 2:10] = 5
    ids[5:7, 5:7] = 0  # a hole inside the one object
    assert not gaps_between_objects(ids, 3).any()
    with pytest.raises(ValueError, match="2D"):
        gaps_between_objects(np.zeros((2, 4, 4), np.int32), 1)


def test_start_model_gaps_lie_between_the_objects_the_model_finds():
    image, labels = synthetic_nuclei((192, 192), touching=1.0, seed=5)
    model, meta = resolve_model("default", device="cpu")
    plane = normalize(image, meta.normalization)
    gaps, foreground = StartModelGaps(model, 3)(plane)
    assert gaps.shape == foreground.shape == image.shape and gaps.any()
    assert not (gaps & foreground).any()  # a gap is background
    # the foreground is the nuclei: nearly all of it inside the true labels, and most of them
    assert (labels > 0)[foreground].mean() > 0.9 and foreground[labels > 0].mean() > 0.8
    # the gaps are a thin share of the image, and lie where two true nuclei meet
    assert gaps.mean() < 0.05
    size, beyond = 9, labels.max() + 1
    largest = ndi.maximum_filter(labels, size)
    smallest = ndi.minimum_filter(np.where(labels > 0, labels, beyond), size)
    assert ((smallest < beyond) & (largest != smallest))[gaps].mean() > 0.9


# -- the training set's background hint --------------------------------------------------------
def _sparse_pair():
    image = np.arange(40 * 40, dtype=np.float32).reshape(40, 40)
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 2   # one painted object
    labels[25:35, 25:35] = 1  # painted background
    return image, labels


def test_a_background_hint_trains_unpainted_pixels_as_background_only():
    image, labels = _sparse_pair()
    samples = TrainingSet([image], [labels], convention="sparse", normalization=RAW,
                          validation_fraction=0.0)
    hint = np.zeros((40, 40), bool)
    hint[:, 18:20] = True    # unpainted pixels: trained as background
    hint[8:10, 8:10] = True  # painted object pixels: keep their label
    calls = []

    def mark(plane):
        calls.append(plane.shape)
        return hint

    painted = samples.n_annotated_pixels
    assert samples.set_background_hint(mark) == 40 * 2
    assert calls == [(1, 40, 40)]
    assert samples.n_annotated_pixels == painted  # the paint's count is the paint's
    rng = np.random.default_rng(0)
    for _ in range(20):
        patch, target, ignore = samples.sample_patch(rng, (40, 40))
        cols = patch[0].astype(int) % 40  # (RAW: a pixel's value tells where it came from)
        rows = patch[0].astype(int) // 40
        np.testing.assert_array_equal(ignore, (labels[rows, cols] == 0) & ~hint[rows, cols])
        assert (target[hint[rows, cols]] == (labels[rows, cols] > 1)[hint[rows, cols]]).all()
    assert samples.set_background_hint(None) == 0
    _, _, ignore = samples.sample_patch(rng, (40, 40))
    assert ignore.sum() == (labels == 0).sum()


def test_the_hint_reaches_planes_painted_later_and_stays_out_of_validation():
    stack = np.random.default_rng(1).random((3, 40, 40)).astype(np.float32)
    labels = np.zeros((3, 40, 40), np.int32)
    labels[0, 5:15, 5:15] = 2
    labels[0, 25:35, 25:35] = 1
    samples = TrainingSet([stack], [labels], convention="sparse", normalization=RAW,
                          validation_fraction=0.5)
    calls = []

    def mark(plane):
        calls.append(1)
        return np.ones(plane.shape[-2:], bool)

    samples.set_background_hint(mark)
    assert len(calls) == 1  # one annotated plane
    labels[2, 5:15, 5:15] = 3
    labels[2, 20:30, 20:30] = 1
    samples.update(0, labels)
    assert len(calls) == 2  # the newly painted plane; the first one's hint is cached
    for _, _, ignore in samples.validation_items():
        assert ignore.any()  # held out as painted, no hint


def test_semantic_sets_take_no_hint():
    image, labels = _sparse_pair()
    samples = TrainingSet([image], [labels], convention="semantic-sparse", mode="semantic",
                          normalization=RAW, validation_fraction=0.0)
    with pytest.raises(ValueError, match="instance"):
        samples.set_background_hint(lambda plane: np.ones(plane.shape[-2:], bool))


# -- the setting and the trainer -----------------------------------------------------------------
def test_keep_gaps_is_the_finetune_presets_alone():
    assert TrainConfig.finetune().keep_gaps == PRESETS["finetune"]["keep_gaps"] == 3
    assert TrainConfig.fast().keep_gaps == TrainConfig.paper().keep_gaps == 0
    assert TrainConfig.fast(keep_gaps=2).keep_gaps == 2
    with pytest.raises(ValueError, match="keep_gaps"):
        TrainConfig(keep_gaps=-1)


def test_the_trainer_keeps_the_gaps_of_its_starting_weights():
    image, labels = synthetic_nuclei((128, 128), touching=1.0, seed=7)
    model, meta = resolve_model("default", device="cpu")
    sparse = np.zeros_like(labels)
    one = np.unique(labels[labels > 0])[0]
    sparse[labels == one] = 2
    sparse[:6, :6] = 1
    samples = TrainingSet([image], [sparse], convention="sparse",
                          normalization=meta.normalization, validation_fraction=0.0)
    start, _ = StartModelGaps(model, 3)(normalize(image, meta.normalization))
    cfg = TrainConfig.finetune(iterations=2, batch_size=1, augment=AugmentConfig.none(),
                               validate_every=0, device="cpu", workers=0)
    trainer = Trainer(model, samples, cfg)
    with torch.no_grad():  # the weights change before the run: the gaps are the start's
        next(model.parameters()).add_(1.0)
    kept = [e for e in trainer.events() if isinstance(e, Message) and "kept_gaps" in e.data]
    assert len(kept) == 1 and kept[0].data["kept_gaps"] == int((start & (sparse == 0)).sum()) > 0
    hinted = samples.snapshot().train[0].plane.hint
    np.testing.assert_array_equal(hinted, start & (sparse == 0))


def test_a_corrected_crop_trains_most_where_the_starting_model_was_wrong():
    image, labels = synthetic_nuclei((128, 128), touching=1.0, seed=7)
    model, meta = resolve_model("default", device="cpu")
    corrected = np.where(labels > 0, labels + 1, 1).astype(np.int32)  # painted everywhere
    samples = TrainingSet([image], [corrected], convention="sparse",
                          normalization=meta.normalization, validation_fraction=0.0)
    _, foreground = StartModelGaps(model, 3)(normalize(image, meta.normalization))
    cfg = TrainConfig.finetune(iterations=1, batch_size=1, augment=AugmentConfig.none(),
                               validate_every=0, device="cpu", workers=0)
    events = list(Trainer(model, samples, cfg).events())
    told = [e for e in events if isinstance(e, Message) and "wrong" in e.data]
    wrong = samples.snapshot().train[0].plane.wrong
    mistakes = foreground != (separated_instances(labels) > 0)
    assert mistakes.any() and wrong[mistakes].all() and wrong.mean() < 0.5
    assert len(told) == 1 and told[0].data["wrong"] == wrong.sum()
    assert "half of the training pieces" in told[0].text


def test_no_gaps_without_the_setting():
    image, labels = synthetic_nuclei((64, 64), seed=2)
    sparse = np.where(labels > 0, labels + 1, 0).astype(np.int32)
    sparse[:4, :4] = 1
    samples = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.0)
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=8, depth=2)
    cfg = TrainConfig.fast(iterations=1, batch_size=1, tile_size=48, validate_every=0,
                           device="cpu")
    events = list(Trainer(net, samples, cfg).events())
    assert not any(isinstance(e, Message) and "kept_gaps" in e.data for e in events)
    assert samples.snapshot().train[0].plane.hint is None


def test_cli_training_from_the_default_model_keeps_gaps_and_finds_mistakes(tmp_path, capsys):
    import tifffile

    from napari_unet.cli import main

    image, labels = synthetic_nuclei((128, 128), touching=1.0, seed=7)
    sparse = np.zeros(labels.shape, np.uint16)
    one = np.unique(labels[labels > 0])[0]
    sparse[labels == one] = 2
    sparse[:6, :6] = 1
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "painted.tif", sparse)
    args = ["train", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path /
            "painted.tif"), "--sparse", "--model", "default", "--iterations", "1",
            "--batch-size", "1", "--device", "cpu", "--no-plots", "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "m.pt")]) == 0
    assert "unpainted pixels between objects the model already separates" in \
        capsys.readouterr().err
    assert main([*args, "--keep-gaps", "0", "--out", str(tmp_path / "m0.pt")]) == 0
    assert "already separates" not in capsys.readouterr().err
    # the same command on a corrected prediction: every pixel painted
    tifffile.imwrite(tmp_path / "painted.tif", np.where(labels > 0, labels + 1, 1).astype(
        np.uint16))
    assert main([*args, "--out", str(tmp_path / "m1.pt")]) == 0
    assert "painted pixels the model gets wrong" in capsys.readouterr().err


def test_a_failing_hint_leaves_the_training_set_as_it_was():
    image, labels = _sparse_pair()
    samples = TrainingSet([image], [labels], convention="sparse", normalization=RAW,
                          validation_fraction=0.0)
    before = samples.snapshot()

    def wrong(plane):
        return np.ones((3, 3), bool)

    with pytest.raises(ValueError, match="background hint gave shape"):
        samples.set_background_hint(wrong)
    assert samples.snapshot() is before
    labels[30:35, 5:10] = 1
    samples.update(0, labels)  # later planes are not given to the refused hint
    assert samples.snapshot().train[0].plane.hint is None
