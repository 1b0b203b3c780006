"""Prediction of images and stacks: layouts, inputs and outputs, rescaling, memory, bad input.

Tile geometry is tested in test_tiles.py, stitching, TTA and precision in test_predictor.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.events import PART_STEPS, Message, Progress
from napari_unet.core.inference.config import PredictConfig, PredictionResult
from napari_unet.core.inference.distributed import predict_tiles_dask
from napari_unet.core.inference.prediction import predict, predict_image
from napari_unet.core.model.unet import UNet

RAW = {"normalization": {"method": "none"}}  # compare against the bare net


def _net(padding: str, depth: int = 2, base: int = 4, in_channels: int = 1, seed: int = 0):
    torch.manual_seed(seed)  # UNet's own init is He's, as the exactness test needs
    return UNet(in_channels, 2, base_channels=base, depth=depth, padding=padding).eval()


def _softmax(model: UNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x)[None]), 1)[0].numpy()


def _untiled_valid(model: UNet, image: np.ndarray) -> np.ndarray:
    """Un-tiled valid prediction of the mirror-padded image, cropped to the image."""
    c = model.context
    h, w = image.shape[-2:]
    need = model.input_shape_for_output((h, w))
    pad = np.pad(image, ((0, 0), (c, need[0] - h - c), (c, need[1] - w - c)), mode="symmetric")
    return _softmax(model, pad.astype(np.float32))[:, :h, :w]


def _image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# -- layouts -----------------------------------------------------------------------------------
def test_stack_is_predicted_slice_by_slice_with_progress_per_slice():
    model = _net("valid")
    stack = np.stack([_image((40, 52), seed=s) for s in range(3)])
    events = list(predict(model, stack, PredictConfig(tile_size=60, device="cpu"), RAW))
    progress = [e for e in events if isinstance(e, Progress)]
    # each slice's tiles report inside its share of the bar (a Stop waits for one tile, not
    # a slice); the slice's end is its last step
    assert all(p.total == 3 * PART_STEPS for p in progress)
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    ends = [p.step for p in progress if p.step % PART_STEPS == 0 and p.step]
    assert ends[-3:] == [PART_STEPS, 2 * PART_STEPS, 3 * PART_STEPS]
    assert {p.message for p in progress} == {"slice 1/3", "slice 2/3", "slice 3/3"}
    result = events[-1]
    assert isinstance(result, PredictionResult)
    assert result.probabilities.shape == (2, 3, 40, 52)
    assert result.instances.shape == (3, 40, 52) and result.instances.dtype == np.int32
    for z in range(3):
        single = predict_image(model, stack[z], meta=RAW, tile_size=60, device="cpu")
        np.testing.assert_allclose(result.probabilities[:, z], single.probabilities, atol=1e-6)
    # ids stay unique over the stack: each slice's objects get their own range
    ids = [set(np.unique(result.instances[z])) - {0} for z in range(3)]
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])


def test_channel_axes_explicit_guessed_and_last():
    model = _net("same", in_channels=2)
    chw = np.stack([_image((40, 48), 0), _image((40, 48), 1)])
    ref = predict_image(model, chw, meta=RAW, tile_size=64, device="cpu").probabilities
    hwc = np.moveaxis(chw, 0, -1)
    guessed = predict_image(model, hwc, meta=RAW, tile_size=64, device="cpu")
    explicit = predict_image(model, hwc, meta=RAW, tile_size=64, device="cpu", channel_axis=2)
    np.testing.assert_allclose(guessed.probabilities, ref, atol=1e-6)
    np.testing.assert_allclose(explicit.probabilities, ref, atol=1e-6)
    zchw = np.stack([chw, chw[::-1]])  # (Z, C, H, W)
    stacked = predict_image(model, zchw, meta=RAW, tile_size=64, device="cpu")
    assert stacked.probabilities.shape == (2, 2, 40, 48)
    np.testing.assert_allclose(stacked.probabilities[:, 0], ref, atol=1e-6)


def test_image_smaller_than_one_tile_and_integer_dtypes():
    model = _net("valid")
    image = (np.random.default_rng(3).integers(0, 4000, size=(9, 13))).astype(np.uint16)
    spec = {"normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}
    result = predict_image(model, image, meta=spec, tile_size=92, device="cpu")
    as_float = predict_image(model, image.astype(np.float64), meta=spec, tile_size=44,
                             device="cpu")
    assert result.probabilities.shape == (2, 9, 13)
    np.testing.assert_allclose(result.probabilities, as_float.probabilities, atol=1e-5)
    from napari_unet.core.normalize import normalize

    ref = _untiled_valid(model, normalize(image, spec["normalization"])[None])
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-5)


def test_memmap_and_dask_inputs_with_memmap_outputs(tmp_path):
    import dask.array as da

    model = _net("valid")
    stack = np.stack([_image((40, 52), seed=s) for s in range(3)])
    src = np.memmap(tmp_path / "in.dat", dtype=np.float32, mode="w+", shape=stack.shape)
    src[:] = stack
    out = {"probabilities": np.memmap(tmp_path / "p.dat", dtype=np.float32, mode="w+",
                                      shape=(2, 3, 40, 52)),
           "instances": np.memmap(tmp_path / "i.dat", dtype=np.int32, mode="w+",
                                  shape=(3, 40, 52))}
    result = predict_image(model, src, meta=RAW, out=out, tile_size=60, device="cpu")
    assert result.probabilities is out["probabilities"]
    ref = predict_image(model, stack, meta=RAW, tile_size=60, device="cpu")
    np.testing.assert_allclose(np.asarray(out["probabilities"]), ref.probabilities, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out["instances"]), ref.instances)
    lazy = predict_image(model, da.from_array(stack, chunks=(1, 40, 52)), meta=RAW,
                         tile_size=60, device="cpu")
    np.testing.assert_allclose(lazy.probabilities, ref.probabilities, atol=1e-6)


def test_dask_map_overlap_tiles_of_one_plane_equal_local():
    import dask.array as da

    model = _net("valid")
    image = _image((150, 170), seed=4)
    local = predict_image(model, image, meta=RAW, tile_size=60, device="cpu").probabilities
    lazy = predict_tiles_dask(model, da.from_array(image[None]), PredictConfig(tile_size=60),
                              chunk=48)
    # chunks start at multiples of 4; a last chunk thinner than the overlap joins the one before
    assert lazy.chunks[1:] == ((48, 48, 54), (48, 48, 48, 26))
    np.testing.assert_allclose(lazy.compute(scheduler="sync"), local, atol=1e-5)


# -- TTA and uncertainty ------------------------------------------------------------------------
def test_entropy_uncertainty_is_normalised_entropy_of_the_probabilities():
    model = _net("same")
    image = _image((40, 40), seed=6)
    result = predict_image(model, image, meta=RAW, tile_size=64, device="cpu", uncertainty=True)
    p = result.probabilities
    expected = -(p * np.log(p)).sum(0) / np.log(2)
    np.testing.assert_allclose(result.uncertainty, expected, atol=1e-5)
    assert 0 <= result.uncertainty.min() and result.uncertainty.max() <= 1


# -- object scale --------------------------------------------------------------------------------
def test_object_diameter_resamples_in_and_out():
    from skimage.transform import resize

    model = _net("same")
    image = _image((40, 50), seed=7)
    meta = {**RAW, "object_diameter": 20.0}
    # 5 px objects, below the model's band (10-30 px): brought to its edge, 10 px, so 2x
    result = predict_image(model, image, meta=meta, object_diameter=5.0, tile_size=128,
                           device="cpu")
    assert result.probabilities.shape == (2, 40, 50)
    big = resize(image, (80, 100), order=1, mode="symmetric", preserve_range=True)
    probs = _softmax(model, big[None].astype(np.float32))
    expected = resize(probs, (2, 40, 50), order=1, mode="symmetric", preserve_range=True,
                      anti_aliasing=True)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(result.probabilities.sum(0), 1, atol=1e-5)


def test_object_diameter_near_the_training_diameter_predicts_at_the_images_own_scale():
    # (further inside the band, core.diameter.choose_scale also tries the training diameter)
    model = _net("same")
    image = _image((40, 50), seed=8)
    meta = {**RAW, "object_diameter": 20.0}
    own = predict_image(model, image, meta=meta, device="cpu")
    for inside in (17.0, 20.0, 23.5):
        events = list(predict(model, image, PredictConfig(object_diameter=inside,
                                                          device="cpu"), meta))
        assert any(isinstance(e, Message) and "within the model's 10.0-30.0 px" in e.text
                   for e in events)
        np.testing.assert_array_equal(events[-1].probabilities, own.probabilities)
    above = predict_image(model, image, meta=meta, object_diameter=70.0, device="cpu")
    assert not np.array_equal(above.probabilities, own.probabilities)  # 0.5x: rescaled


def test_object_diameter_without_model_diameter_is_a_message():
    model = _net("same")
    events = list(predict(model, _image((20, 20)), PredictConfig(object_diameter=12,
                                                                 device="cpu"), RAW))
    assert any(isinstance(e, Message) and "diameter" in e.text for e in events)
    assert events[-1].probabilities.shape == (2, 20, 20)


# -- memory --------------------------------------------------------------------------------------
def test_out_of_memory_retries_with_smaller_batches_and_tiles_then_explains():
    model = _net("valid")
    image = _image((30, 34), seed=8)
    ref = predict_image(model, image, meta=RAW, tile_size=92, batch_size=4, device="cpu")
    forward = model.lean_forward  # what the predictors run

    def limited(x, keep=None):  # pretend only one 60x60 tile fits
        if x.shape[0] * x.shape[-1] * x.shape[-2] > 60 * 60:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x, keep)

    model.lean_forward = limited
    events = list(predict(model, image, PredictConfig(tile_size=92, batch_size=4, device="cpu"),
                          RAW))
    notes = [e.text for e in events if isinstance(e, Message)]
    assert len(notes) >= 3 and all("out of memory" in n for n in notes)
    result = events[-1]
    assert result.tile_size[0] <= 60
    np.testing.assert_allclose(result.probabilities, ref.probabilities, atol=1e-5)

    def never(x, keep=None):
        raise torch.OutOfMemoryError("CUDA out of memory")

    model.lean_forward = never
    with pytest.raises(MemoryError, match="out of memory on cpu even with one 44x44 tile"):
        predict_image(model, image, meta=RAW, tile_size=92, device="cpu")


def test_big_outputs_become_temporary_memory_maps(monkeypatch):
    import napari_unet.core.inference.stack as stack

    monkeypatch.setattr(stack, "IN_RAM_BYTES", 1000)
    result = predict_image(_net("same"), _image((2, 30, 30)), meta=RAW, device="cpu",
                           tile_size=64)
    assert isinstance(result.probabilities, np.memmap)
    assert isinstance(result.instances, np.memmap)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(tile_size=(0, 5)), "tile_size"),
    (dict(threshold=1.5), "threshold"),
    (dict(uncertainty=True, uncertainty_method="variance"), "needs tta"),
    (dict(blend="max"), "blend"),
    (dict(half="yes"), "half"),
    (dict(object_diameter=-3), "object_diameter"),
    (dict(device="tpu"), "device"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PredictConfig(**kwargs)


@pytest.mark.parametrize("image, in_channels, match", [
    (np.zeros((2, 3, 20, 20), np.float32), 1, "1-channel model takes"),
    (np.zeros((20, 20, 3), np.float32), 2, "expects 2 channels but no axis"),
    (np.zeros((0, 20), np.float32), 1, "empty"),
    (np.full((20, 20), np.nan, np.float32), 1, "NaN or infinite"),
    (np.array([[1 + 1j]]), 1, "real-valued"),
])
def test_bad_images_raise_clear_errors(image, in_channels, match):
    model = _net("same", in_channels=in_channels)
    with pytest.raises(ValueError, match=match):
        predict_image(model, image, meta=RAW, device="cpu")


def test_channel_count_mismatch_with_explicit_axis():
    with pytest.raises(ValueError, match="expects 2 channel.* has 3 along channel_axis"):
        predict_image(_net("same", in_channels=2), np.zeros((3, 20, 20), np.float32),
                      channel_axis=0, device="cpu")


def test_inf_in_one_slice_of_a_stack_names_the_slice():
    stack = _image((3, 20, 20))
    stack[1, 5, 5] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict_image(_net("same"), stack, meta=RAW, device="cpu", tile_size=64)


def test_zarr_input_from_tifffile_is_read_slice_by_slice(tmp_path):
    import tifffile
    import zarr

    stack = (np.random.default_rng(9).random((3, 40, 52)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    lazy = zarr.open(tifffile.imread(tmp_path / "s.tif", aszarr=True), mode="r")
    model = _net("same")
    got = predict_image(model, lazy, device="cpu", tile_size=64)
    ref = predict_image(model, stack, device="cpu", tile_size=64)
    np.testing.assert_array_equal(got.probabilities, ref.probabilities)
    np.testing.assert_array_equal(got.instances, ref.instances)


def test_split_touching_setting_reaches_post_processing():
    from skimage.draw import disk

    from napari_unet.core.inference.config import PredictConfig
    from napari_unet.core.inference.labelling import instance_labels

    fg = np.zeros((60, 80), np.float32)
    fg[disk((30, 25), 14, shape=fg.shape)] = 0.9
    fg[disk((30, 47), 14, shape=fg.shape)] = 0.9
    assert instance_labels(fg, PredictConfig()).max() == 2
    assert instance_labels(fg, PredictConfig(split_touching=False)).max() == 1
