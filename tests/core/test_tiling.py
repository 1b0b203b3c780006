"""Overlap-tile prediction: exact stitching, layouts, TTA, rescaling, memory, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.distributed import predict_tiles_dask
from napari_unet.core.events import Message, Progress
from napari_unet.core.model import UNet
from napari_unet.core.prediction import PredictConfig, PredictionResult, predict, predict_image
from napari_unet.core.tiles import (
    auto_tile_size,
    padded_axis_tiles,
    receptive_radius,
    valid_axis_tiles,
)

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


# -- geometry ----------------------------------------------------------------------------------
def test_valid_axis_tiles_cover_with_aligned_origins():
    # depth 4: tile 572 -> output 388; 3 tiles needed, origins multiples of 16, spread evenly
    origins = valid_axis_tiles(1000, 572, 92, 16)
    assert origins == [0, 304, 624]
    assert origins[-1] + 388 >= 1000 and origins[-1] + 388 - 1000 < 16
    assert valid_axis_tiles(100, 572, 92, 16) == [0]
    with pytest.raises(ValueError, match="less than one pooling step"):
        valid_axis_tiles(1000, 188, 92, 16)


def test_automatic_tiles_fit_the_image():
    # 2048 px with at most 1024 px tiles: 3 tiles of ~700 px, not 3 of 1024
    from napari_unet.core.tiles import fit_tile_to_image

    small = UNet.small()
    tile = fit_tile_to_image(small, (1024, 1024), (2048, 2048))
    assert tile[0] % 16 == 0 and tile[0] < 900
    assert len(padded_axis_tiles(2048, tile[0], receptive_radius(small), 16)) == 3
    original = UNet.original()
    tile = fit_tile_to_image(original, (1024, 1024), (1000, 2048))
    original.output_shape(tile)
    assert len(valid_axis_tiles(1000, tile[0], 92, 16)) == 2


def test_padded_axis_tiles_keep_parts_partition_the_axis():
    tiles = padded_axis_tiles(301, 128, 30, 16)
    keeps = [(k0, k1) for _, _, k0, k1 in tiles]
    assert keeps[0][0] == 0 and keeps[-1][1] == 301
    assert all(a[1] == b[0] for a, b in zip(keeps[:-1], keeps[1:], strict=True))
    for start, stop, k0, k1 in tiles:
        assert start % 16 == 0 and stop <= 301
        assert (k0 == 0 or k0 - start >= 30) and (k1 == 301 or stop - k1 >= 30)
    assert tiles[-1][1] == 301


# -- exactness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [48, 60, 92])
@pytest.mark.parametrize("shape", [(77, 93), (31, 50), (64, 64)])
def test_valid_tiling_equals_untiled_prediction(tile, shape):
    model = _net("valid")
    image = _image(shape)
    ref = _untiled_valid(model, image[None])
    result = predict_image(model, image, meta=RAW, tile_size=tile, device="cpu", batch_size=3)
    assert result.probabilities.shape == (2, *shape)
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-5)
    np.testing.assert_array_equal(result.semantic, ref.argmax(0))


def test_valid_tiling_depth3_misaligned_grid_would_be_caught():
    model = _net("valid", depth=3, base=4)
    image = _image((101, 130), seed=1)
    ref = _untiled_valid(model, image[None])
    result = predict_image(model, image, meta=RAW, tile_size=116, device="cpu")
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-5)
    # a tile grid shifted by less than 2**depth does not give the same values (He weights)
    c = model.context
    shifted = np.pad(image, ((c + 4, c + 60), (c + 4, c + 60)), mode="symmetric")
    off = _softmax(model, shifted[None, :116 + 4 * 16, :116 + 4 * 16])[:, 4:20, 4:20]
    assert np.abs(off - ref[:, :16, :16]).max() > 1e-3


@pytest.mark.parametrize("depth", [2, 3])
def test_padded_discard_with_default_overlap_equals_untiled(depth):
    model = _net("same", depth=depth)
    image = _image((150, 171), seed=2)
    ref = _softmax(model, image[None])
    d, m = model.divisor, receptive_radius(model)
    tile = (2 * m + d + 30) // d * d
    result = predict_image(model, image, meta=RAW, tile_size=tile, device="cpu")
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-5)


def test_padded_small_overlap_seams_are_measured_bounded():
    model = _net("same", depth=2)
    image = _image((150, 171), seed=2)
    ref = _softmax(model, image[None])
    errors = {}
    for blend in ("discard", "gaussian"):
        result = predict_image(model, image, meta=RAW, tile_size=60, overlap=8, blend=blend,
                               device="cpu")
        errors[blend] = np.abs(result.probabilities - ref)
    # 8 px of a 22 px receptive radius: seams appear (so the default overlap matters) ...
    assert errors["discard"].max() > 1e-3
    # ... but only where kept parts meet; far from every seam the tiles are exact
    far = errors["discard"][:, :12, :12]
    assert far.max() < 1e-5
    # bounds from the measured errors for this seed (max 0.50 / 0.41, mean 0.0074 / 0.0072 for
    # discard / gaussian; random He weights make seams far worse than a trained net's)
    assert errors["discard"].max() < 0.6 and errors["gaussian"].max() < 0.6
    assert errors["discard"].mean() < 0.015 and errors["gaussian"].mean() < 0.015


# -- layouts -----------------------------------------------------------------------------------
def test_stack_is_predicted_slice_by_slice_with_progress_per_slice():
    model = _net("valid")
    stack = np.stack([_image((40, 52), seed=s) for s in range(3)])
    events = list(predict(model, stack, PredictConfig(tile_size=60, device="cpu"), RAW))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [(p.step, p.total) for p in progress] == [(1, 3), (2, 3), (3, 3)]
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
def _symmetrise_(model: UNet) -> UNet:
    """Make every kernel invariant under flips and 90-degree rotations (a D4-equivariant net)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                w = module.weight
                views = [torch.rot90(v, k, dims=(-2, -1)) for v in (w, torch.flip(w, (-1,)))
                         for k in range(4)]
                w.copy_(torch.stack(views).mean(0))
    return model


def test_tta_of_an_equivariant_net_equals_plain_prediction():
    model = _symmetrise_(_net("same", depth=2, base=4))
    image = _image((64, 64), seed=5)
    plain = predict_image(model, image, meta=RAW, tile_size=32, overlap=4, device="cpu")
    tta = predict_image(model, image, meta=RAW, tile_size=32, overlap=4, device="cpu", tta=True,
                        uncertainty=True, uncertainty_method="variance")
    np.testing.assert_allclose(tta.probabilities, plain.probabilities, atol=1e-5)
    assert tta.uncertainty.max() < 1e-5  # all 8 views agree
    # an ordinary net is not equivariant: TTA does change its output
    other = _net("same", depth=2, base=4, seed=1)
    a = predict_image(other, image, meta=RAW, tile_size=64, device="cpu").probabilities
    b = predict_image(other, image, meta=RAW, tile_size=64, device="cpu", tta=True).probabilities
    assert np.abs(a - b).max() > 1e-3


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
    result = predict_image(model, image, meta=meta, object_diameter=10.0, tile_size=128,
                           device="cpu")
    assert result.probabilities.shape == (2, 40, 50)
    big = resize(image, (80, 100), order=1, mode="symmetric", preserve_range=True)
    probs = _softmax(model, big[None].astype(np.float32))
    expected = resize(probs, (2, 40, 50), order=1, mode="symmetric", preserve_range=True,
                      anti_aliasing=True)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(result.probabilities.sum(0), 1, atol=1e-5)


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
    forward = model.forward

    def limited(x):  # pretend only one 60x60 tile fits
        if x.shape[0] * x.shape[-1] * x.shape[-2] > 60 * 60:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)

    model.forward = limited
    events = list(predict(model, image, PredictConfig(tile_size=92, batch_size=4, device="cpu"),
                          RAW))
    notes = [e.text for e in events if isinstance(e, Message)]
    assert len(notes) >= 3 and all("out of memory" in n for n in notes)
    result = events[-1]
    assert result.tile_size[0] <= 60
    np.testing.assert_allclose(result.probabilities, ref.probabilities, atol=1e-5)

    def never(x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    model.forward = never
    with pytest.raises(MemoryError, match="out of memory on cpu even with one 44x44 tile"):
        predict_image(model, image, meta=RAW, tile_size=92, device="cpu")


def test_auto_tile_size_is_legal_and_follows_the_budget():
    cpu = torch.device("cpu")
    valid, padded = _net("valid"), _net("same")
    small = auto_tile_size(valid, cpu, 1, memory_budget=2**22)
    big = auto_tile_size(valid, cpu, 1, memory_budget=2**30)
    assert small[0] < big[0] <= 1024
    valid.output_shape(small), valid.output_shape(big)  # legal: no error
    t = auto_tile_size(padded, cpu, 4, memory_budget=2**26)
    assert t[0] % padded.divisor == 0 and t[0] >= 2 * receptive_radius(padded)
    result = predict_image(valid, _image((50, 50)), meta=RAW, device="cpu")
    valid.output_shape(result.tile_size)


def test_big_outputs_become_temporary_memory_maps(monkeypatch):
    import napari_unet.core.prediction as prediction

    monkeypatch.setattr(prediction, "IN_RAM_BYTES", 1000)
    result = predict_image(_net("same"), _image((2, 30, 30)), meta=RAW, device="cpu",
                           tile_size=64)
    assert isinstance(result.probabilities, np.memmap)
    assert isinstance(result.instances, np.memmap)


# -- bad input -----------------------------------------------------------------------------------
def test_illegal_tile_sizes_name_the_nearest_legal_ones():
    with pytest.raises(ValueError, match="tile 46 is not legal .* nearest are 44 and 48"):
        predict_image(_net("valid"), _image((30, 30)), meta=RAW, tile_size=46, device="cpu")
    with pytest.raises(ValueError, match="tile 50 is not legal .* nearest are 48 and 52"):
        predict_image(_net("same"), _image((30, 30)), meta=RAW, tile_size=50, device="cpu")
    with pytest.raises(ValueError, match="too small for an overlap"):
        predict_image(_net("same"), _image((30, 30)), meta=RAW, tile_size=32, device="cpu")
    big = UNet.original()
    with pytest.raises(ValueError, match="tile 570 is not legal .* nearest are 556 and 572"):
        predict_image(big, _image((30, 30)), meta=RAW, tile_size=570, device="cpu")


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

    from napari_unet.core.prediction import PredictConfig, instance_labels

    fg = np.zeros((60, 80), np.float32)
    fg[disk((30, 25), 14, shape=fg.shape)] = 0.9
    fg[disk((30, 47), 14, shape=fg.shape)] = 0.9
    assert instance_labels(fg, PredictConfig()).max() == 2
    assert instance_labels(fg, PredictConfig(split_touching=False)).max() == 1
