"""The plane predictor: exact stitching, the fast mode's seams, the injected predictor and its
wrappers (TTA, reduced precision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.inference.predictor import (
    FirstBatchCheck,
    PlanePredictor,
    build_predictor,
    drain,
    is_channels_last,
    net_probabilities,
    with_autocast,
    with_tta,
)
from napari_unet.core.inference.tiles import receptive_radius, tile_margin
from napari_unet.core.model.unet import UNet, kept_part

RAW = {"normalization": {"method": "none"}}  # compare against the bare net
CPU = torch.device("cpu")
# the fast mode's worst seam error on the shipped model, measured with seams exactly at its
# 80 px margin (docs/tiling.md): max |dp| 0.031, mean 1.2e-5 (cells3d nuclei)
FAST_MAX, FAST_MEAN = 0.04, 2e-5


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


# -- exact mode --------------------------------------------------------------------------------
@pytest.mark.parametrize("tile", [48, 60, 92])
@pytest.mark.parametrize("shape", [(77, 93), (31, 50), (64, 64)])
def test_valid_tiling_equals_untiled_prediction(tile, shape):
    model = _net("valid")
    image = _image(shape)
    ref = _untiled_valid(model, image[None])
    # valid nets are exact in both modes
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
def test_padded_exact_mode_equals_untiled(depth):
    model = _net("same", depth=depth)
    image = _image((150, 171), seed=2)
    ref = _softmax(model, image[None])
    d, m = model.divisor, receptive_radius(model)
    tile = (2 * m + d + 30) // d * d
    result = predict_image(model, image, meta=RAW, tile_size=tile, device="cpu",
                           tiling="exact")
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-5)
    # the automatic plan with a budget that forces several tiles is exact too
    auto = predict_image(model, image, meta=RAW, device="cpu", tiling="exact",
                         memory_budget=2**20)
    assert auto.tile_size[0] < 150 or auto.tile_size[1] < 171
    np.testing.assert_allclose(auto.probabilities, ref, atol=1e-5)


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


# -- fast mode on the shipped model ------------------------------------------------------------
def test_fast_mode_seams_on_the_shipped_model_stay_below_the_measured_bound():
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.model.checkpoint import resolve_model

    model, meta = resolve_model("default")
    m = tile_margin(model, "fast")
    assert m == 80
    # 3 x 3 tiles of 256 px whose kept parts meet exactly m px from a tile border: the worst
    # case of the fast layout (automatic layouts split the overlaps half-way, often wider)
    side = 256 + 2 * (256 - 2 * m)
    image, _ = synthetic_nuclei((side, side), seed=3)
    ref = predict_image(model, image, meta=meta, tile_size=side, device="cpu")
    fast = predict_image(model, image, meta=meta, tile_size=256, device="cpu")
    assert fast.tile_size == (256, 256)
    diff = np.abs(fast.probabilities[1] - ref.probabilities[1])
    # below the measured bound (bench_seams.py at 80 px: max 0.006 / 0.031, 1 and 3 pixels
    # change class, synthetic / cells3d)
    assert diff.max() < FAST_MAX and diff.mean() < FAST_MEAN
    changed = np.count_nonzero((fast.probabilities[1] > 0.5) != (ref.probabilities[1] > 0.5))
    assert changed <= 4  # the measured worst: 3 of 200k pixels


# -- the injected predictor and its wrappers ---------------------------------------------------
def _pointwise(x: torch.Tensor, keep=None) -> torch.Tensor:
    """A 'net' that looks at one pixel only: any tiling of it is exact."""
    return kept_part(torch.softmax(torch.cat([x[:, :1], -x[:, :1]], dim=1), dim=1), keep)


def test_plane_predictor_takes_any_callable_and_stitches_all_channels():
    model = _net("same")  # geometry only: padded, divisor 4
    plane = _image((1, 70, 90), seed=4)
    calls = []

    def spy(x, keep=None):
        calls.append((tuple(x.shape), keep))
        return _pointwise(x, keep)

    predictor = PlanePredictor(spy, model, CPU, (32, 48), batch_size=2, margin=6)
    probs, var = drain(predictor.run(plane))
    np.testing.assert_allclose(probs, _pointwise(torch.from_numpy(plane)[None])[0].numpy(),
                               atol=1e-6)
    assert var is None and all(shape[0] <= 2 for shape, _ in calls)
    # each batch is asked only for the box its tiles keep: the first two 32x48 tiles (rows
    # 0-32, columns 0-48 and 20-68) keep rows 0-24 and columns 0-34 and 14-34 of theirs (the
    # layout splits overlaps half-way); every tile here has a neighbour, so no box is whole
    assert calls[0][1] == (slice(0, 24), slice(0, 34))
    assert all((k[0].stop - k[0].start) * (k[1].stop - k[1].start) < shape[-2] * shape[-1]
               for shape, k in calls)
    # a wrapper's extra channel (the TTA variance) comes back as the variance
    noisy = PlanePredictor(with_tta(_pointwise, variance=True), model, CPU, (32, 48),
                           margin=6)
    probs2, var2 = drain(noisy.run(plane))
    np.testing.assert_allclose(probs2, probs, atol=1e-6)
    assert var2.shape == (70, 90) and var2.max() < 1e-6  # a pointwise net is D4-invariant


def test_plane_predictor_stitches_into_a_given_array():
    model = _net("same")
    plane = _image((1, 70, 90), seed=4)
    expected, _ = drain(PlanePredictor(_pointwise, model, CPU, (32, 48), margin=6).run(plane))
    for tile in ((32, 48), (72, 92)):  # several tiles, and one tile over the whole plane
        into = np.full((2, 70, 90), np.nan, np.float32)
        probs, _ = drain(PlanePredictor(_pointwise, model, CPU, tile, margin=6).run(plane,
                                                                                    into))
        assert np.shares_memory(probs, into)
        np.testing.assert_allclose(into, expected, atol=1e-6)  # every pixel written
    # a variance channel does not fit the array: stitched apart, the array left alone
    into = np.zeros((2, 70, 90), np.float32)
    noisy = PlanePredictor(with_tta(_pointwise, variance=True), model, CPU, (32, 48), margin=6)
    probs, var = drain(noisy.run(plane, into))
    assert not np.shares_memory(probs, into) and not into.any() and var.shape == (70, 90)


@pytest.mark.parametrize("padding,blend", [("same", "discard"), ("same", "gaussian"),
                                           ("valid", "discard")])
def test_plane_predictor_keeps_only_the_part_asked_for(padding, blend):
    """``keep`` gives the same pixels as the whole plane's result cut there (a real net, so
    each tile's context matters), computes no tile that keeps nothing of it, and stitches
    into an array of the kept part's shape."""
    model = _net(padding)
    plane = _image((1, 150, 170), seed=5)
    tile = (64, 64) if padding == "same" else (60, 60)

    def run(keep=None, into=None):
        calls = []

        def spy(x, keep=None):
            calls.append(x.shape[0])
            return kept_part(torch.softmax(model(x), 1), keep)

        predictor = PlanePredictor(spy, model, CPU, tile, blend=blend, margin=8)
        with torch.inference_mode():
            return drain(predictor.run(plane, into, keep)), sum(calls)

    (whole, _), n_whole = run()
    keep = (slice(20, 61), slice(100, 170))
    (part, _), n_part = run(keep)
    np.testing.assert_array_equal(part, whole[(slice(None), *keep)])
    assert 0 < n_part < n_whole
    into = np.full((2, 41, 70), np.nan, np.float32)
    (stitched, _), _ = run(keep, into)
    assert np.shares_memory(stitched, into)
    np.testing.assert_array_equal(into, whole[(slice(None), *keep)])


def test_tta_wrapper_averages_the_eight_views_by_hand():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    weight = torch.randn(2, 1, 3, 3)

    def conv(t):  # not D4-equivariant: views differ
        return torch.softmax(torch.nn.functional.conv2d(t, weight, padding=1), dim=1)

    views = []
    for flip in (False, True):
        v = torch.flip(x, (-1,)) if flip else x
        for k in range(4):
            y = torch.rot90(conv(torch.rot90(v, k, (-2, -1))), -k, (-2, -1))
            views.append(torch.flip(y, (-1,)) if flip else y)
    mean = torch.stack(views).mean(0)
    torch.testing.assert_close(with_tta(conv)(x), mean, atol=1e-6, rtol=0)
    with_var = with_tta(conv, variance=True)(x)
    assert with_var.shape == (2, 3, 8, 8)
    var = 4 * torch.stack(views).var(0, unbiased=False).mean(1)
    torch.testing.assert_close(with_var[:, 2], var, atol=1e-6, rtol=0)


def test_tta_yields_between_its_views_so_a_job_can_stop_mid_tile():
    """With TTA one batch is 8 net passes; the plane's run reports after each, so Stop waits
    for one pass, not eight (a big CPU tile takes seconds per pass)."""
    model = _net("same")
    plane = _image((1, 70, 90), seed=4)
    calls = []

    def spy(x, keep=None):
        calls.append(torch.is_inference_mode_enabled())
        return _pointwise(x, keep)

    predictor = PlanePredictor(with_tta(spy), model, CPU, (32, 48), margin=6)
    run = predictor.run(plane)
    first = next(run)
    assert (first.step, len(calls)) == (1, 1)  # one view done, seven to go in this tile
    steps = [first.step] + [event.step for event in iter(lambda: next(run, None), None)]
    tiles = len(calls) // 8
    assert steps == list(range(1, 8 * tiles + 1)) and first.total == 8 * tiles
    assert all(calls)  # every pass in inference mode ...
    run2 = predictor.run(plane)
    next(run2)
    assert not torch.is_inference_mode_enabled()  # ... and none left on while a job waits
    run2.close()  # stopping between two views
    probs, _ = drain(PlanePredictor(with_tta(_pointwise), model, CPU, (32, 48),
                                    margin=6).run(plane))
    plain, _ = drain(PlanePredictor(_pointwise, model, CPU, (32, 48), margin=6).run(plane))
    np.testing.assert_allclose(probs, plain, atol=1e-6)


def test_precision_wrappers_compose_with_tta():
    model = _net("same", depth=2, base=8)
    x = torch.from_numpy(_image((2, 1, 32, 32), seed=6))
    full = net_probabilities(model)
    low = with_autocast(full, "cpu", torch.bfloat16)
    notes: list[str] = []
    check = FirstBatchCheck(full, low, "bfloat16", notes)
    composed = with_tta(check)
    with torch.inference_mode():
        out = composed(x)
        ref = with_tta(full)(x)
    assert out.dtype == torch.float32 and out.shape == (2, 2, 32, 32)
    # decided once, on the first call (the first TTA view), and said so
    assert check.use_fast is not None and len(notes) == 1 and "bfloat16" in notes[0]
    chosen = with_tta(low if check.use_fast else full)
    with torch.inference_mode():
        torch.testing.assert_close(out, chosen(x), atol=1e-6, rtol=0)
    assert (out - ref).abs().max() < 0.05  # bfloat16 keeps 8 bits of mantissa
    # on CPU build_predictor ignores half (CUDA float16 only) and composes TTA with variance
    built = build_predictor(model, CPU, tta=True, variance=True, half="auto")
    with torch.inference_mode():
        both = built(x)
    torch.testing.assert_close(both[:, :2], ref, atol=1e-6, rtol=0)
    assert both.shape == (2, 3, 32, 32)


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


def test_channels_last_net_runs_a_copy_only_when_the_net_is_not_laid_out_so():
    model = _net("same", depth=2, base=8)
    x = torch.from_numpy(_image((1, 1, 32, 32), seed=7))
    ran: list[torch.nn.Module] = []
    model.inc.register_forward_hook(lambda module, *_: ran.append(module))
    with torch.inference_mode():
        ref = torch.softmax(model(x), 1)
        ran.clear()
        copied = net_probabilities(model, channels_last=True)(x)
    # a default-layout net is copied (the caller's net keeps its layout)
    assert ran and ran[0] is not model.inc and not is_channels_last(model)
    model.to(memory_format=torch.channels_last)  # as models loaded for the CPU come
    ran.clear()
    with torch.inference_mode():
        own = net_probabilities(model, channels_last=True)(x)
    assert ran == [model.inc]
    torch.testing.assert_close(copied, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(own, copied, atol=0, rtol=0)
