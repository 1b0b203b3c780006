import pytest
import torch

from napari_unet.core.runtime.device import resolve_device


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


def test_device_names_are_checked_without_touching_accelerators():
    from napari_unet.core.runtime.device import check_device_name

    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert check_device_name(name) == name
    with pytest.raises(ValueError, match="cuda:N"):
        check_device_name("cuda:x")
    with pytest.raises(TypeError, match="string"):
        check_device_name(0)

