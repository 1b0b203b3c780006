"""predict(): blockwise planes, volumes, bad arguments, resource checks."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import Message, Progress
from napari_unet.core.inference.config import PredictConfig, PredictionResult
from napari_unet.core.inference.labelling import instance_labels
from napari_unet.core.inference.prediction import predict, predict_image
from napari_unet.core.inference.scaling import labels_at_image_scale
from napari_unet.core.inference.stack import allocate_output
from napari_unet.core.model.meta import ModelMeta
from napari_unet.core.model.unet import UNet, kept_part


def assert_same_objects(a, b):
    """Equal label images up to the ids: each object of one is exactly one object of the other."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UNet(1, 2, base_channels=4, depth=2, padding="same").eval()


def _image(shape=(200, 232), seed=0):
    image, _ = synthetic_nuclei(shape, seed=seed)
    return (image * 1000).astype(np.uint16)


def _events(gen):
    events = list(gen)
    assert isinstance(events[-1], PredictionResult)
    return events[:-1], events[-1]


@pytest.fixture(scope="module")
def shipped():
    from napari_unet.core.model.checkpoint import resolve_model

    return resolve_model("default")


def test_blockwise_plane_equals_whole_plane(shipped):
    net, meta = shipped
    image = _image((200, 232))
    settings = dict(device="cpu", tiling="exact")
    whole = predict_image(net, image, meta, **settings)
    events, blocks = _events(predict(net, image, PredictConfig(block_size=112, **settings),
                                     meta))
    progress = [e for e in events if isinstance(e, Progress)]
    assert any("block" in e.message for e in progress)
    np.testing.assert_allclose(blocks.probabilities, whole.probabilities, atol=1e-5)
    np.testing.assert_array_equal(blocks.semantic, whole.semantic)
    assert whole.instances.max() > 20
    assert_same_objects(blocks.instances, whole.instances)


def test_blockwise_plane_runs_the_planes_own_tiles_one_at_a_time(shipped):
    # 416 x 480 in 256 px tiles (80 px margins, steps of 96 px): 3 x 4 tiles; blocks of 128 px
    # would repeat the net's context at every block border, the plane's own tiles do not
    net, meta = shipped
    image = _image((416, 480), seed=3)
    settings = dict(device="cpu", tile_size=256)
    calls: list[tuple[int, int]] = []
    # the first block sees every tile (the predictors run UNet.lean_forward, not forward)
    hook = net.inc.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[-2:]))
    try:
        whole = predict_image(net, image, meta, **settings)
        n_whole, computed = len(calls), sum(h * w for h, w in calls)
        calls.clear()
        events, blocks = _events(predict(net, image, PredictConfig(block_size=128, **settings),
                                         meta))
    finally:
        hook.remove()
    assert n_whole == 12
    assert len(calls) == 12 and sum(h * w for h, w in calls) == computed
    assert sum("block" in e.message for e in events if isinstance(e, Progress)) >= 12
    np.testing.assert_array_equal(blocks.probabilities, whole.probabilities)
    assert_same_objects(blocks.instances, whole.instances)


def test_blockwise_stack_keeps_ids_unique(shipped):
    net, meta = shipped
    stack = np.stack([_image((96, 120), s) for s in range(2)])
    settings = dict(device="cpu", tiling="exact", keep_probabilities=False)
    res = predict_image(net, stack, meta, block_size=64, **settings)
    ref = predict_image(net, stack, meta, **settings)
    for z in range(2):
        assert_same_objects(res.instances[z], ref.instances[z])
    ids0 = set(np.unique(res.instances[0])) - {0}
    ids1 = set(np.unique(res.instances[1])) - {0}
    assert ids0 and ids1 and not ids0 & ids1


def test_volume_objects_keep_one_id_through_the_slices(model):
    # one bright ball in a Z stack: one 3D object, not one object per slice
    zz, yy, xx = np.mgrid[0:9, 0:64, 0:64]
    ball = ((zz - 4) * 2.0) ** 2 + (yy - 32) ** 2 + (xx - 32) ** 2 <= 12 ** 2
    fake = _ThresholdNet()
    image = np.where(ball, 1000, 10).astype(np.uint16)
    events, res = _events(predict(fake, image, PredictConfig(device="cpu", axes="ZYX",
                                                             z_spacing=2.0)))
    assert res.volume
    assert set(np.unique(res.instances)) == {0, 1}
    assert (res.instances[4] == 1).sum() > 300 and (res.instances[1] == 1).sum() > 0
    # the same stack without axes: slice by slice, and a note saying so
    events, flat = _events(predict(fake, image, PredictConfig(device="cpu")))
    assert not flat.volume and len(np.unique(flat.instances)) > 2
    assert any(isinstance(e, Message) and "slice by slice" in e.text for e in events)
    # linking 2D objects by overlap gives the one object too
    _, linked = _events(predict(fake, image, PredictConfig(device="cpu", volume=True,
                                                           stitch_threshold=0.3)))
    assert set(np.unique(linked.instances)) == {0, 1}


class _ThresholdNet(UNet):
    """A "net" whose foreground probability is the normalised intensity (no weights to train):
    prediction's plumbing without a trained model."""

    def __init__(self):
        super().__init__(1, 2, base_channels=2, depth=1, padding="same")

    def forward(self, x):
        fg = (x[:, :1] > 0.5).float() * 8 - 4
        return torch.cat([-fg, fg], dim=1)

    def lean_forward(self, x, keep=None):  # what the predictors run
        return kept_part(self(x), keep)


def test_volume_true_on_a_time_series_is_refused(model):
    with pytest.raises(ValueError, match="T stays slice by slice"):
        predict(model, np.zeros((3, 32, 32), np.uint16),
                PredictConfig(device="cpu", axes="TYX", volume=True))
    with pytest.raises(ValueError, match="axes 'ZYX' has 3 letters"):
        predict(model, np.zeros((32, 32), np.uint16), PredictConfig(axes="ZYX"))


def test_model_argument_checked_with_clear_errors(model):
    image = _image((64, 64))
    with pytest.raises(TypeError, match="model must be a UNet"):
        predict_image(None, image)
    with pytest.raises(TypeError, match="model must be a UNet"):
        predict(42, image)
    with pytest.raises(ValueError):
        predict_image("no-such-model.pt", image)


def test_default_model_by_name():
    res = predict_image("default", _image((64, 64)), device="cpu")
    assert res.instances.shape == (64, 64)


@pytest.mark.parametrize("bad", [1.5, "0", True])
def test_channel_axis_must_be_an_integer(bad):
    with pytest.raises(TypeError, match="channel_axis must be an integer"):
        PredictConfig(channel_axis=bad)


def test_huge_finite_values_are_not_called_infinite(model):
    image = _image((64, 64)).astype(np.float64)
    image[3, 3] = 1e308
    res = predict_image(model, image, device="cpu")
    assert np.isfinite(res.probabilities).all()
    image[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict_image(model, image, device="cpu")


def test_rescale_factor_is_bounded(model):
    meta = ModelMeta.for_model(model, object_diameter=2000.0)
    # 5 px objects brought to the band's lower edge, 1000 px: 200x
    with pytest.raises(ValueError, match=r"200x.*64 x 64 -> 12800 x 12800"):
        predict(model, _image((64, 64)), PredictConfig(object_diameter=5.0), meta)
    with pytest.raises(ValueError, match="object_diameter must be a positive number or 'auto'"):
        PredictConfig(object_diameter="big")


def test_labels_at_image_scale_by_hand():
    labels = np.array([[1, 1, 0, 2],
                       [1, 1, 0, 2],
                       [0, 0, 0, 2],
                       [3, 0, 0, 0]], np.int32)
    fg = (labels > 0).astype(np.float32)
    block = np.ones((2, 2))
    # 2x: each model pixel is a 2x2 block where the image-scale foreground agrees
    up = labels_at_image_scale(labels, fg, np.kron(fg, block))
    assert up.dtype == np.int32 and np.array_equal(up, np.kron(labels, block))
    # the outline is the image-scale foreground's: one more column of object 1 (x = 4) ...
    finer = np.kron(fg, block)
    finer[0:4, 4] = 1.0
    assert np.array_equal(labels_at_image_scale(labels, fg, finer)[0:4, 4], [1, 1, 1, 1])
    # ... but a gap given back at the model's scale (labelled, foreground <= threshold) stays
    gap_fg = fg.copy()
    gap_fg[0, 1] = 0.2
    up = labels_at_image_scale(labels, gap_fg, np.kron(gap_fg, block))
    assert np.array_equal(up[0:2, 2:4], [[1, 1], [1, 1]])
    # a part is the same as the whole cut there
    where = (slice(3, 7), slice(1, 6))
    assert np.array_equal(labels_at_image_scale(labels, fg, np.kron(fg, block), where=where),
                          np.kron(labels, block)[where])
    # shrunk by 2, the 2x2 blocks come back as the model's pixels
    big = np.kron(labels, block).astype(np.int32)
    assert np.array_equal(labels_at_image_scale(big, np.kron(fg, block), fg), labels)


def test_min_size_counts_image_pixels_on_a_rescaled_plane():
    fg = np.zeros((20, 20), np.float32)
    fg[2:6, 2:6] = 1.0      # 16 px at the model's scale: 64 px of an image at half this size
    fg[12:14, 12:14] = 1.0  # 4 px: 16 image px
    config = PredictConfig(min_size=40, split_touching=False)
    kept = instance_labels(fg, config, scale=2.0)  # 40 image px = 160 model px: neither
    assert kept.max() == 0
    kept = instance_labels(fg, config, scale=0.5)  # model at half the image: 10 model px
    assert np.array_equal(np.unique(kept[2:6, 2:6]), [1]) and kept[12:14, 12:14].max() == 0


def test_a_rescaled_plane_is_labelled_at_the_models_scale(shipped, monkeypatch):
    """Instances come from the model-scale probabilities (where the post-processing's gaps,
    specks and split seeds are measured), then are brought to the image's size."""
    from napari_unet.core.inference import job

    model, meta = shipped
    image, _ = synthetic_nuclei((96, 80), radius=(3.0, 4.0), touching=0.5, seed=3)
    seen = {}
    real = job.instance_labels

    def spy(fg, config, scale):
        seen.update(fg=np.array(fg), scale=scale, labels=real(fg, config, scale))
        return seen["labels"]

    monkeypatch.setattr(job, "instance_labels", spy)
    # objects a quarter of the model's diameter: brought to the band's lower edge, 2x
    result = predict_image(model, image, meta, object_diameter=meta.object_diameter / 4)
    assert seen["fg"].shape == (192, 160) and seen["scale"] == 2.0
    assert result.probabilities.shape == (2, 96, 80)
    model_labels, labels = seen["labels"], result.instances
    assert len(np.unique(model_labels)) > 4  # (the test means something: several nuclei)
    nearest = model_labels[1::2, 1::2]  # the model pixel nearest each image pixel at 2x
    # the image's objects are the model-scale ones (their ids), pixel by pixel but at edges
    assert set(np.unique(labels)) <= set(np.unique(model_labels))
    for i in np.unique(labels[labels > 0]):
        assert np.mean(nearest[labels == i] == i) >= 0.8
    # the outline: the image-scale foreground plus the gaps given back at the model's scale
    given_back = ((model_labels > 0) & (seen["fg"] <= 0.5))[1::2, 1::2]
    assert given_back.any()
    inside = (result.probabilities[1] > 0.5) | given_back
    assert not (labels > 0)[~inside].any()
    assert (labels > 0)[inside & (nearest > 0)].all()


@pytest.mark.parametrize("field,value", [("stitch_threshold", 0.0), ("block_size", 10),
                                         ("block_halo", 2), ("axes", "XYZ"), ("axes", "ZZYX"),
                                         ("z_spacing", -1.0)])
def test_bad_new_settings(field, value):
    with pytest.raises(ValueError, match=field if field != "axes" else "axes"):
        PredictConfig(**{field: value})


def test_predict_checks_when_called_not_at_first_next(model):
    with pytest.raises(ValueError, match="empty"):
        predict(model, np.zeros((0, 5)), PredictConfig(device="cpu"))


def _our_temps():
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("napari-unet-")}


def test_allocation_checks_disk_and_leaves_no_temp_file(monkeypatch, tmp_path):
    import napari_unet.core.inference.stack as stack
    import napari_unet.core.io.outputs as outputs

    monkeypatch.setattr(stack, "IN_RAM_BYTES", 1024)
    before = set(os.listdir(tmp_path))

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stack.np, "memmap", fail)
    with pytest.raises(OSError, match="cannot create the instances output"):
        allocate_output("instances", (100, 100), np.int32, scratch=str(tmp_path))
    assert set(os.listdir(tmp_path)) == before
    monkeypatch.undo()
    monkeypatch.setattr(stack, "IN_RAM_BYTES", 1024)

    class Usage:
        free = 1000

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda folder: Usage)
    with pytest.raises(OSError, match=r"not enough disk space.*39.1 KiB"):
        allocate_output("instances", (100, 100), np.int32, scratch=str(tmp_path))
    assert set(os.listdir(tmp_path)) == before


def test_allocation_in_ram_checks_memory(monkeypatch):
    import napari_unet.core.io.resources as resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    with pytest.raises(ValueError, match=r"semantic output \(100 x 100 uint8\) needs 9.8 KiB"):
        allocate_output("semantic", (100, 100), np.uint8)


def test_stopping_mid_plane_leaves_no_temp_files(model, monkeypatch):
    import napari_unet.core.inference.stack as stack

    monkeypatch.setattr(stack, "IN_RAM_BYTES", 1024)  # every output a temp memory map
    before = _our_temps()
    gen = predict(model, _image(), PredictConfig(device="cpu", tile_size=64, block_size=64))
    for event in gen:
        if isinstance(event, Progress):
            break
    gen.close()
    assert _our_temps() == before  # memory maps are unlinked when made


class _RecordingArray:
    """An array-like (as zarr is) that records the regions read from it."""

    def __init__(self, data, chunks):
        self.data, self.chunks, self.reads = data, chunks, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        part = self.data[key]
        self.reads.append(part.size)
        return part


def test_chunked_inputs_are_read_block_by_block_never_whole(shipped):
    net, meta = shipped
    image = _image((192, 192))
    source = _RecordingArray(image, chunks=(64, 64))
    res = predict_image(net, source, meta, device="cpu", block_size=96,
                        keep_probabilities=False)
    assert res.instances.max() > 5
    assert source.reads and max(source.reads) <= 64 * 64  # chunk by chunk, never the plane


def test_orthogonal_views_separate_nuclei_stacked_along_z(shipped):
    # two synthetic nuclei one above the other (slices 10-21 and 22-26, 2x z spacing): no XY
    # slice shows a gap between them, so slice-wise prediction makes one 3D object; in the XZ
    # and YZ slices they sit side by side and the net draws the gap
    from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume

    net, meta = shipped
    image, truth = synthetic_nuclei_volume((32, 256, 256), seed=5)
    image, truth = image[:, 197:249, 155:205], truth[:, 197:249, 155:205]
    upper, lower = truth == 103, truth == 128
    assert np.ptp(np.nonzero(upper)[0]) > 8 and np.nonzero(lower)[0].min() == 22
    settings = dict(device="cpu", axes="ZYX", z_spacing=2.0)

    def owner(labels, mask):  # the prediction holding most of a true nucleus
        ids, counts = np.unique(labels[mask], return_counts=True)
        assert counts.max() * 2 >= mask.sum()
        return ids[np.argmax(counts)]

    xy = predict_image(net, image, meta, orthogonal_views=False, **settings)
    assert owner(xy.instances, upper) == owner(xy.instances, lower) != 0
    views = predict_image(net, image, meta, **settings)  # the default for 3D objects
    a, b = owner(views.instances, upper), owner(views.instances, lower)
    assert 0 not in (a, b) and a != b
    # the outputs agree with the combined foreground
    p = views.probabilities
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-6)
    assert (p[1] <= xy.probabilities[1] + 1e-6).all()  # the minimum never adds foreground
    np.testing.assert_array_equal(views.semantic, (p[1] > p[0]).astype(views.semantic.dtype))


def test_orthogonal_views_settings_and_notes(model):
    image = np.zeros((3, 32, 32), np.uint16)
    with pytest.raises(ValueError, match="does not work with stitch_threshold"):
        PredictConfig(orthogonal_views=True, stitch_threshold=0.3)
    with pytest.raises(TypeError, match="orthogonal_views must be True, False or None"):
        PredictConfig(orthogonal_views="yes")
    assert PredictConfig().orthogonal_views is None  # the views wherever objects are 3D
    # a stack not taken as Z, or a 2D image: a warning, and the slice-wise result
    for kwargs in (dict(), dict(axes="TYX")):
        events, res = _events(predict(model, image, PredictConfig(
            device="cpu", orthogonal_views=True, **kwargs)))
        assert not res.volume
        assert any(isinstance(e, Message) and "orthogonal views ignored" in e.text
                   for e in events)
    events, res = _events(predict(model, image[0], PredictConfig(device="cpu",
                                                                 orthogonal_views=True)))
    assert any(isinstance(e, Message) and "not taken as a Z stack" in e.text for e in events)
    # the default: no note where the views do not apply (2D, not Z, linking 2D objects)
    for img, kwargs in ((image[0], {}), (image, {}), (image, dict(axes="ZYX",
                                                                  stitch_threshold=0.3))):
        events, _ = _events(predict(model, img, PredictConfig(device="cpu", **kwargs)))
        assert not any(isinstance(e, Message) and "orthogonal" in e.text for e in events)
        assert not any(isinstance(e, Progress) and e.message.startswith("XZ") for e in events)

    def side_views(config):
        events, res = _events(predict(model, image, config))
        labels = [e.message for e in events if isinstance(e, Progress)]
        return any(m.startswith("XZ slices") for m in labels) and any(
            m.startswith("YZ slices 32/32") for m in labels), res

    # a Z stack: the XZ and YZ slices are predicted (progress through both orientations)
    # when asked for; by default only on stacks 32 px tall or more seen from the side (this
    # one: 3 slices 1 px apart), and the status says so; False: the XY slices only
    seen, res = side_views(PredictConfig(device="cpu", axes="ZYX", z_spacing=3.0,
                                         orthogonal_views=True, uncertainty=True))
    assert seen and res.volume and res.uncertainty.shape == (3, 32, 32)
    events, res = _events(predict(model, image, PredictConfig(device="cpu", axes="ZYX")))
    assert res.volume and not any(isinstance(e, Progress) and e.message.startswith("XZ")
                                  for e in events)
    notes = [e.text for e in events if isinstance(e, Message)]
    assert any("XY slices only" in n and "3 px tall (3 slices)" in n and "from 32 px" in n
               for n in notes)
    # as tall by its z spacing (3 slices 11 px apart), or by its slices: the views by default
    for stack, spacing in ((image, 11.0), (np.concatenate([image] * 11), None)):
        events, res = _events(predict(model, stack, PredictConfig(
            device="cpu", axes="ZYX", z_spacing=spacing)))
        assert any(isinstance(e, Progress) and e.message.startswith("YZ slices 32/32")
                   for e in events)
    seen, xy = side_views(PredictConfig(device="cpu", axes="ZYX", orthogonal_views=False,
                                        tta=True, uncertainty=True,
                                        uncertainty_method="variance"))
    assert not seen
    # the TTA variance stays the XY slices' (the side views have none)
    seen, res = side_views(PredictConfig(device="cpu", axes="ZYX", tta=True, uncertainty=True,
                                         uncertainty_method="variance", orthogonal_views=True))
    assert seen
    np.testing.assert_array_equal(res.uncertainty, xy.uncertainty)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_side_slices_are_predicted_many_per_net_pass(padding, monkeypatch):
    """The thin XZ/YZ slices share the net's passes (as many as the XY pass's pixels per pass):
    one pass per slice cost a 4-slice stack 9 times its XY pass. The result is the same as
    slice by slice."""
    from napari_unet.core.inference.predictor import PlanePredictor

    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=2, padding=padding).eval()
    stack = np.stack([_image((64, 72), seed=s) for s in range(4)])
    batches = []
    forward = PlanePredictor.forward_passes

    def spy(self, batch, keep=None):
        batches.append(batch.shape)
        return (yield from forward(self, batch, keep))

    monkeypatch.setattr(PlanePredictor, "forward_passes", spy)
    settings = dict(device="cpu", axes="ZYX", orthogonal_views=True, keep_probabilities=True)
    batched = predict_image(net, stack, **settings)
    side = [shape for shape in batches if shape[-2] < 64]  # the XZ/YZ slices' passes
    # every slice once, at least two per pass (the XY pass's pixels here: one small plane)
    assert sum(shape[0] for shape in side) == 64 + 72 and len(side) <= (64 + 72) // 2 + 2
    # one slice per pass: the same probabilities
    monkeypatch.setattr("napari_unet.core.inference.job.side_predictor",
                        lambda xy, hw, plan: PlanePredictor(xy.net, xy.model, xy.device,
                                                            plan.tile, 1, xy.blend, xy.margin))
    one = predict_image(net, stack, **settings)
    np.testing.assert_allclose(batched.probabilities, one.probabilities, atol=1e-5)
    np.testing.assert_array_equal(batched.instances, one.instances)


def test_freed_memory_is_kept_for_each_planes_passes_and_returned_before_labelling(
        model, monkeypatch):
    # even one pass reuses what it frees (its first layers' maps serve its later ones); the
    # labelling of each plane runs after the kept memory is given back
    from contextlib import contextmanager

    from napari_unet.core.inference import job

    log = []

    @contextmanager
    def spy():
        log.append("keep")
        yield True
        log.append("return")

    def labels(probability, config, scale):
        log.append("label")
        return instance_labels(probability, config, scale)

    instance_labels = job.instance_labels
    monkeypatch.setattr(job, "reuse_freed_memory", spy)
    monkeypatch.setattr(job, "instance_labels", labels)
    image = _image((96, 96))
    predict_image(model, image, device="cpu")  # one 96 px tile
    assert log == ["keep", "return", "label"]
    log.clear()
    stack = np.stack([image, image])
    predict_image(model, stack, device="cpu", tile_size=64)  # 2 x 2 tiles per slice
    assert log == ["keep", "return", "label"] * 2


def test_a_rescaled_plane_labelled_block_by_block_as_a_whole(shipped):
    """Blocks of a rescaled plane are labelled at the model's scale too: the same objects."""
    from napari_unet.core.data.evaluation import evaluate_dataset

    model, meta = shipped
    image, _ = synthetic_nuclei((200, 176), radius=(3.0, 4.0), touching=0.5, seed=5)
    d = meta.object_diameter / 4  # 2x
    whole = predict_image(model, image, meta, object_diameter=d).instances
    blocks = predict_image(model, image, meta, object_diameter=d, block_size=64).instances
    assert len(np.unique(whole)) > 10
    assert evaluate_dataset([(whole, blocks)])["ap50"] >= 0.95
    assert np.mean((whole > 0) == (blocks > 0)) >= 0.99


def _spy_on_labelling(monkeypatch):
    """Record what each ``label_blocks`` call labels (the foreground, its keywords, the labels
    made), in the list returned."""
    from napari_unet.core.inference import job

    real, calls = job.label_blocks, []

    def spy(fg, out, *args, **kwargs):
        n = yield from real(fg, out, *args, **kwargs)
        calls.append(dict(fg=np.array(fg), kwargs=kwargs, labels=np.array(out)))
        return n

    monkeypatch.setattr(job, "label_blocks", spy)
    return calls


def test_a_rescaled_volume_is_labelled_at_the_models_scale(shipped, monkeypatch):
    """A Z stack whose XY is rescaled finds its 3D objects at the model's scale (slices
    z_spacing x scale model pixels apart), side views folded in, then brought back plane by
    plane with their ids."""
    from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume

    model, meta = shipped
    image, _ = synthetic_nuclei_volume((8, 48, 40), radius=(3.0, 4.0), seed=2)
    settings = dict(axes="ZYX", z_spacing=2.0, object_diameter=meta.object_diameter / 4)
    calls = _spy_on_labelling(monkeypatch)
    predict_image(model, image, meta, orthogonal_views=False, **settings)
    result = predict_image(model, image, meta, orthogonal_views=True, **settings)
    xy_only, with_views = calls
    for seen in (xy_only, with_views):
        assert seen["fg"].shape == (8, 96, 80)  # 2x in XY, every slice
        assert seen["kwargs"]["spacing"] == (4.0, 1.0, 1.0)
    # the side views' gaps reach the model-scale foreground (a minimum: never more)
    assert (with_views["fg"] <= xy_only["fg"] + 1e-6).all()
    assert (with_views["fg"] < xy_only["fg"] - 0.1).any()
    model_labels, labels = with_views["labels"], result.instances
    assert labels.shape == image.shape
    ids = np.unique(labels[labels > 0])
    assert len(ids) > 3 and set(ids) <= set(np.unique(model_labels))
    assert max(len(np.unique(np.nonzero(labels == i)[0])) for i in ids) >= 3  # 3D objects
    nearest = model_labels[:, 1::2, 1::2]  # the model voxel nearest each image voxel at 2x
    for i in ids:
        assert np.mean(nearest[labels == i] == i) >= 0.8
    # the outline: the image-scale foreground plus the gaps given back at the model's scale
    given_back = ((model_labels > 0) & (with_views["fg"] <= 0.5))[:, 1::2, 1::2]
    inside = (result.semantic > 0) | given_back
    assert not (labels > 0)[~inside].any()


def test_small_nuclei_of_a_rescaled_volume_stay_apart(shipped):
    """Nuclei of ~6 px in a Z stack, given their diameter: labelled at the model's scale they
    come out one by one (labelled at the image's scale, as before: AP@0.5 0.58, merged)."""
    from skimage.transform import resize

    from napari_unet.core.data.metrics import average_precision
    from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume

    model, meta = shipped
    image, truth = synthetic_nuclei_volume((12, 160, 160), seed=2)
    image = resize(image, (12, 56, 56), order=1, preserve_range=True,
                   anti_aliasing=True).astype(np.float32)
    truth = resize(truth, (12, 56, 56), order=0, preserve_range=True,
                   anti_aliasing=False).astype(np.int32)
    result = predict_image(model, image, meta, axes="ZYX", z_spacing=0.7, object_diameter=6.0,
                           orthogonal_views=False)
    assert len(np.unique(truth)) - 1 == 21
    assert average_precision(truth, result.instances, (0.5,))[0.5] >= 0.8


def test_a_run_that_costs_more_says_so_when_it_starts(model):
    from napari_unet.core.events import Message

    plain = [e.text for e in predict(model, _image(), PredictConfig(device="cpu"))
             if isinstance(e, Message)]
    assert not [t for t in plain if "times the time" in t]
    notes = [e.text for e in predict(model, _image(), PredictConfig(device="cpu", tta=True))
             if isinstance(e, Message)]
    assert any("test-time augmentation: 8 passes per tile" in t for t in notes)
