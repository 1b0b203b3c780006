import os
import pickle

import numpy as np
import pytest
import torch

from napari_unet.core.inference.predictor import is_channels_last
from napari_unet.core.model import checkpoint
from napari_unet.core.model.checkpoint import (
    load_checkpoint,
    load_model,
    resolve_model,
    save_model,
)
from napari_unet.core.model.meta import ModelMeta
from napari_unet.core.model.unet import UNet


def tiny(**kw):
    return UNet(1, 2, base_channels=4, depth=2, **kw)


def test_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = tiny(padding="valid", dropout=0.5)
    meta = {
        "mode": "instances",
        "class_names": ["background", "nucleus"],
        "normalization": {"method": "percentile", "low": 2.0, "high": 99.0},
        "pixel_size": 0.5,
        "object_diameter": 17.5,
        "training": {"preset": "fast", "lr": 1e-3, "iterations": 10},
        "step": 10,
    }
    path = save_model(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_model(path)
    assert loaded.config == model.config
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert sd0.keys() == sd1.keys()
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k
    assert isinstance(loaded_meta, ModelMeta)
    assert loaded_meta == ModelMeta.from_dict({**meta, "class_names": ("background", "nucleus")})
    assert loaded_meta.normalization == {"method": "percentile", "low": 2.0, "high": 99.0}
    assert load_checkpoint(path).format_version == checkpoint.FORMAT_VERSION
    assert not loaded.training  # ready to predict
    # in the layout CPU prediction runs in, so predicting needs no copy of the net
    assert is_channels_last(loaded) and not is_channels_last(model)
    x = torch.rand(1, 1, 44, 44)
    model.eval().to(memory_format=torch.channels_last)
    assert torch.equal(model(x), loaded(x))


def test_numpy_values_in_meta_become_plain(tmp_path):
    model = tiny()
    save_model(tmp_path / "m.pt", model, {"object_diameter": np.float32(12.0),
                                          "pixel_size": np.float64(0.25)})
    _, meta = load_model(tmp_path / "m.pt")
    assert meta.object_diameter == 12.0 and type(meta.object_diameter) is float
    assert meta.pixel_size == 0.25 and type(meta.pixel_size) is float
    assert meta.mode == "instances" and meta.step == 0  # defaults filled in


def test_optimizer_state_round_trip(tmp_path):
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.99)
    model(torch.rand(1, 1, 16, 16)).sum().backward()
    opt.step()
    save_model(tmp_path / "m.pt", model, {"step": 1}, optimizer_state=opt.state_dict())
    ckpt = load_checkpoint(tmp_path / "m.pt")
    opt2 = torch.optim.SGD(ckpt.model.parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(ckpt.optimizer_state)
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["momentum"] == 0.99
    for p0, p1 in zip(model.parameters(), ckpt.model.parameters(), strict=True):
        assert torch.equal(opt.state[p0]["momentum_buffer"], opt2.state[p1]["momentum_buffer"])
    assert load_checkpoint(tmp_path / "m.pt").meta.step == 1


def test_live_weights_round_trip_beside_the_average(tmp_path):
    average, live = tiny(), tiny()
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    save_model(tmp_path / "m.pt", average, {"step": 5}, live_state=live.state_dict())
    ckpt = load_checkpoint(tmp_path / "m.pt")
    for k, v in ckpt.model.state_dict().items():  # the model is the average ...
        assert torch.equal(v, average.state_dict()[k])
    assert ckpt.live_state.keys() == live.state_dict().keys()  # ... the live weights beside it
    for k, v in live.state_dict().items():
        assert torch.equal(ckpt.live_state[k], v)
    save_model(tmp_path / "plain.pt", average)
    assert load_checkpoint(tmp_path / "plain.pt").live_state is None
    other = UNet(1, 2, base_channels=8, depth=2)
    with pytest.raises(ValueError, match="live_state must be a state_dict of the same net"):
        save_model(tmp_path / "bad.pt", average, live_state=other.state_dict())
    assert not (tmp_path / "bad.pt").exists()
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # a file whose live part is cut
    payload["live_state_dict"].popitem()
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="not a valid napari-unet model.*live_state"):
        load_checkpoint(tmp_path / "cut.pt")


def test_failing_save_leaves_existing_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_model(path, tiny(), {"step": 3})
    before = path.read_bytes()

    def broken_save(obj, target):
        with open(target, "wb") as fh:
            fh.write(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, tiny(), {"step": 4})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]  # no temp file left behind


def test_unplain_meta_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="training must be a dict"):
        save_model(tmp_path / "m.pt", tiny(), {"training": object()})
    with pytest.raises(ValueError, match="plain values"):
        save_model(tmp_path / "m.pt", tiny(), {"training": {"x": object()}})
    assert not (tmp_path / "m.pt").exists()


def test_missing_output_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        save_model(tmp_path / "nope" / "m.pt", tiny(), {})


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nothing.pt")


def test_bare_state_dict_is_not_ours(tmp_path):
    torch.save(tiny().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="not a valid napari-unet model"):
        load_model(tmp_path / "sd.pt")


def test_text_file_is_not_a_model(tmp_path):
    (tmp_path / "m.pt").write_text("hello, I am not a model\n")
    with pytest.raises(ValueError, match="not a valid napari-unet model"):
        load_model(tmp_path / "m.pt")


def test_truncated_file(tmp_path):
    save_model(tmp_path / "m.pt", tiny(), {})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid napari-unet model"):
        load_model(tmp_path / "cut.pt")


def test_mismatched_weights(tmp_path):
    save_model(tmp_path / "m.pt", tiny(), {})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["architecture"]["base_channels"] = 8
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a valid napari-unet model"):
        load_model(tmp_path / "bad.pt")


def test_newer_format_version(tmp_path):
    save_model(tmp_path / "m.pt", tiny(), {})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="upgrade"):
        load_model(tmp_path / "new.pt")


def _touch(path):
    open(path, "w").close()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_loading_never_executes_a_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-unet", "payload": _Evil(str(marker))}, path)
    with pytest.raises(ValueError, match="not a valid napari-unet model"):
        load_model(path)
    assert not marker.exists()
    # The same object does run its side effect under a plain unpickler: the test can fail.
    pickle.loads(pickle.dumps(_Evil(str(marker))))
    assert marker.exists()


@pytest.mark.parametrize(("spec", "padding", "base"),
                         [("original", "valid", 64), ("modified", "same", 64),
                          ("small", "same", 32)])
def test_resolve_presets(spec, padding, base):
    model, meta = resolve_model(spec, in_channels=3, num_classes=4)
    assert model.config["padding"] == padding and model.config["base_channels"] == base
    assert model.in_channels == 3 and model.num_classes == 4
    assert meta.mode == "semantic" and len(meta.class_names) == 4
    assert meta.step == 0


def test_resolve_path_and_channel_check(tmp_path):
    save_model(tmp_path / "m.pt", tiny(), {"step": 7})
    model, meta = resolve_model(str(tmp_path / "m.pt"))
    assert meta.step == 7 and model.config["base_channels"] == 4
    with pytest.raises(ValueError, match="1 input channels but 3"):
        resolve_model(tmp_path / "m.pt", in_channels=3)


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint.resources, "files", lambda pkg: tmp_path)
    with pytest.raises(ValueError, match="default model is missing"):
        resolve_model("default")


def test_huge_architecture_in_a_small_file_fails_before_allocating(tmp_path):
    save_model(tmp_path / "m.pt", tiny(), {})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["architecture"]["depth"] = 10**6
    torch.save(payload, tmp_path / "deep.pt")
    with pytest.raises(ValueError, match="depth must be at most"):
        load_model(tmp_path / "deep.pt")
    payload["architecture"].update(depth=7, base_channels=32)  # within bounds, wrong weights
    torch.save(payload, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="do not fit its architecture"):
        load_model(tmp_path / "wide.pt")


def test_foreign_pickle_error_never_advises_unsafe_loading(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": _Evil(str(tmp_path / "x"))}, path)
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert "weights_only" not in str(err.value) and "never executes" in str(err.value)
    (tmp_path / "rand.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a valid napari-unet model"):
        load_model(tmp_path / "rand.pt")


def test_wrong_types_give_type_errors(tmp_path):
    with pytest.raises(TypeError, match="path"):
        load_model(None)
    with pytest.raises(TypeError, match="already have a UNet"):
        resolve_model(tiny())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_model("small", device="cuda")


def test_meta_validation_names_the_field():
    with pytest.raises(ValueError, match="mode"):
        ModelMeta(mode="panoptic")
    with pytest.raises(ValueError, match="object_diameter"):
        ModelMeta(object_diameter=-3.0)
    with pytest.raises(TypeError, match="pixel_size"):
        ModelMeta(pixel_size="0.5")
    with pytest.raises(ValueError, match="percentiles"):
        ModelMeta(normalization={"method": "percentile", "low": 99, "high": 1})
    meta = ModelMeta.from_dict({"step": 3, "from_a_newer_version": 1})
    assert meta.step == 3 and ModelMeta.from_dict(meta.to_dict()) == meta


def test_loading_a_model_imports_no_compiler_and_the_warm_up_does():
    # Building the shape-only skeleton used to run random init on meta tensors, which imports
    # torch._dynamo (~800 modules, seconds holding the GIL in a dock's worker thread). The
    # first optimiser step imports it anyway: the Train dock warms it up when it opens.
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from napari_unet.core.model.checkpoint import resolve_model\n"
        "from napari_unet.core.training.trainer import warm_up_imports\n"
        "resolve_model('default')\n"
        "after_load = 'torch._dynamo' in sys.modules\n"
        "warm_up_imports()\n"
        "print(json.dumps([after_load, 'torch._dynamo' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True]
