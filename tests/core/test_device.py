import pytest
import torch

from napari_unet.core.device import resolve_device


def test_auto_picks_an_available_device():
    dev = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert dev.type == expected
    assert dev.type in {"cuda", "mps", "cpu"}
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_or_missing_device_raises():
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
