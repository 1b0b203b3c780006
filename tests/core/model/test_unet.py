import pytest
import torch

from napari_unet import UNet
from napari_unet.core.model.unet import count_parameters


def test_original_is_the_paper_net():
    net = UNet.original(1, 2)
    assert count_parameters(net) == 31_030_658
    assert net.output_shape((572, 572)) == (388, 388)
    assert net.context == 92


def test_original_forward_shape():
    net = UNet.original(1, 2).eval()
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_original_bilinear_parameter_count():
    assert count_parameters(UNet.original(1, 2, upsampling="bilinear")) == 28_941_698


def test_default_is_modified_and_keeps_size():
    net = UNet(in_channels=3, num_classes=2)
    assert net.config == UNet.modified(3, 2).config
    with torch.inference_mode():
        assert net(torch.zeros(1, 3, 256, 256)).shape == (1, 2, 256, 256)


@pytest.mark.parametrize("preset", [UNet.modified, UNet.small])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_padded_variants_any_size(preset, upsampling):
    net = preset(2, 3, base_channels=4, upsampling=upsampling)
    out = net(torch.rand(3, 2, 37, 91))
    assert out.shape == (3, 3, 37, 91)


def test_small_preset_channels():
    net = UNet.small(1, 2)
    assert net.config["base_channels"] == 32
    assert net.downs[-1].conv.block[0].out_channels == 512


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_valid_arithmetic_matches_forward(depth, upsampling):
    net = UNet(1, 2, base_channels=2, depth=depth, padding="valid", upsampling=upsampling)
    for request in (1, 50, 77):
        n = net.valid_input_shape((request, request))[0]
        assert n >= request
        out = net(torch.rand(1, 1, n, n + net.divisor))
        assert tuple(out.shape[-2:]) == net.output_shape((n, n + net.divisor))
        assert out.shape[-1] == n + net.divisor - 2 * net.context


def test_valid_depth4_legal_sizes_are_16k_plus_188():
    net = UNet.original(1, 2, base_channels=2)
    assert net.valid_input_shape((1, 189)) == (188, 204)
    assert net.output_shape((188, 204)) == (4, 20)
    assert net.input_shape_for_output((388, 1)) == (572, 188)


def test_illegal_valid_size_names_nearest():
    net = UNet.original(1, 2, base_channels=2)
    with pytest.raises(ValueError, match="tile 570 is not legal.*556 and 572"):
        net.output_shape((570, 572))
    with pytest.raises(ValueError, match="not legal"):
        net(torch.zeros(1, 1, 570, 570))
    with pytest.raises(ValueError, match="nearest are 188"):
        net.output_shape((100, 188))


def test_batch_and_multichannel():
    net = UNet(4, 5, base_channels=4, depth=2)
    assert net(torch.rand(2, 4, 20, 24)).shape == (2, 5, 20, 24)
    with pytest.raises(ValueError, match=r"expected input \(N, 4, H, W\)"):
        net(torch.rand(2, 3, 20, 24))


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_gradients_reach_every_parameter(padding, upsampling):
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=2, padding=padding, upsampling=upsampling,
               batch_norm=True, dropout=0.1)
    n = net.valid_input_shape((48, 48))
    net(torch.rand(2, 1, *n)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_he_initialisation_std():
    torch.manual_seed(0)
    net = UNet.original(1, 2)
    conv = net.downs[2].conv.block[0]  # 3x3, 256 -> 512
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 256)) ** 0.5, rel=0.02)
    up = net.ups[0].up  # 2x2 stride 2, 1024 -> 512: each output sees 1024 inputs
    assert up.weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.02)
    assert conv.bias.abs().max() == 0


def test_from_config_round_trip():
    net = UNet.small(3, 4, upsampling="bilinear")
    assert UNet.from_config(net.config).config == net.config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(padding="reflect"), "padding must be one of"),
        (dict(upsampling="nearest"), "upsampling must be one of"),
        (dict(depth=0), "depth must be a positive integer"),
        (dict(dropout=1.0), "dropout must be in"),
    ],
)
def test_bad_architecture_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(1, 2, **kwargs)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_forward_gives_the_forward_logits(padding, upsampling, batch_norm, channels_last):
    torch.manual_seed(0)
    net = UNet(2, 3, base_channels=4, depth=3, padding=padding, upsampling=upsampling,
               batch_norm=batch_norm)
    if batch_norm:  # running statistics that are not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    side = net.valid_input_shape((40, 40))[0] if padding == "valid" else 37  # 37: padded inside
    x = torch.rand(2, 2, side, side + net.divisor)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = net(x)
        got = net.lean_forward(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # only a part wanted: the same logits there (top, middle, bottom, one row, all)
    h, w = expected.shape[-2:]
    for keep in ((slice(0, 9), slice(3, w)), (slice(11, 23), slice(None)),
                 (slice(h - 5, h), slice(0, 7)), (slice(17, 18), slice(5, 6)),
                 (slice(None), slice(None))):
        with torch.inference_mode():
            part = net.lean_forward(x, keep)
        assert part.shape == expected[..., keep[0], keep[1]].shape
        torch.testing.assert_close(part, expected[..., keep[0], keep[1]], rtol=1e-5, atol=1e-5)


def test_lean_forward_computes_only_the_rows_a_kept_part_needs():
    """Rows 20-30 of a 64-row output of a depth-3 padded net: each up block reads its wanted
    rows plus 2 (its two 3x3 convolutions), and wants the rows its upsampled rows come from:
    level 0 reads 18-32 (14 rows), wants 9-16 from level 1, which reads 7-18 (11), wants 3-9
    from level 2, which reads 1-11 (10 rows) and wants 0-6 of the bottleneck's 8 rows."""
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=4, depth=3).eval()
    rows = []
    for up in net.ups:  # the last 3x3 convolution of each up block: its output rows
        up.conv.block[2].register_forward_hook(lambda m, i, out: rows.append(out.shape[-2]))
    x = torch.rand(1, 1, 64, 40)
    with torch.inference_mode():
        part = net.lean_forward(x, (slice(20, 30), slice(None)))
        assert rows == [10, 11, 14] and part.shape == (1, 2, 10, 40)
        rows.clear()
        net.lean_forward(x)
        assert rows == [16, 32, 64]
        rows.clear()
        net.lean_forward(x, (slice(0, 64), slice(10, 20)))  # columns: cut from the output
        assert rows == [16, 32, 64]
    with torch.inference_mode(), pytest.raises(ValueError, match="contiguous run of rows"):
        net.lean_forward(x, (slice(0, 64, 2), slice(None)))


def test_lean_forward_is_forward_when_gradients_are_wanted():
    net = UNet(1, 2, base_channels=4, depth=2)
    x = torch.rand(1, 1, 32, 32)
    out = net.lean_forward(x)
    out.sum().backward()  # the graph is there: training takes this path unchanged
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad(), pytest.raises(ValueError, match=r"expected input \(N, 1, H, W\)"):
        net.lean_forward(torch.rand(1, 2, 32, 32))
