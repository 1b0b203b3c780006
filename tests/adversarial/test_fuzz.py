"""Property-based fuzzing of the image reader and the model loader (hypothesis), in-process.

Each case is a random, truncated or mutated TIFF or model file. It must end in a correct
result or a ValueError/TypeError/OSError whose message names the file, within a hard deadline,
leaving no file behind (in its folder or the temp folder). Anything else fails the test with
hypothesis' shrunk example.

The default run is bounded for CI (400 TIFF and 80 model cases, derandomised: well under a
minute together); ``NAPARI_UNET_FUZZ_LONG=1``
runs the ``fuzz_long`` tests with >= 1000 cases per target and prints the counts.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch._dynamo  # noqa: F401 - torch.load imports it lazily; a deadline must not cut that
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet.core.io import resources
from napari_unet.core.io.images import ImageData, read_image
from napari_unet.core.model.checkpoint import load_model, save_model
from napari_unet.core.model.meta import ModelMeta
from napari_unet.core.model.unet import UNet

from .conftest import Timeout, deadline

CONTRACT = (ValueError, TypeError, OSError)
CASE_DEADLINE_S = 20.0  # a hang never ends; a busy CI machine is slow
FUZZ_MEMORY = 64 * 2**20  # what the reader may allocate per case: keeps each case fast
QUICK = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=1200, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
STATS: dict[str, dict[str, int]] = {}


# -- seeds ---------------------------------------------------------------------------------------
def _tiff_bytes(**kwargs) -> bytes:
    data = kwargs.pop("data")
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, **kwargs)
    return buf.getvalue()


def _tiff_seeds() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (24, 20), dtype=np.uint8)
    u16 = rng.integers(0, 4000, (3, 16, 18), dtype=np.uint16)
    return [
        (".tif", _tiff_bytes(data=u8)),
        (".tif", _tiff_bytes(data=u16, imagej=True, metadata={"axes": "ZYX", "unit": "um",
                                                              "spacing": 0.5},
                             resolution=(4.0, 4.0))),
        (".ome.tif", _tiff_bytes(data=u16, ome=True, metadata={"axes": "ZYX",
                                                              "PhysicalSizeX": 0.3})),
        (".tif", _tiff_bytes(data=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                             photometric="rgb")),
        (".tif", _tiff_bytes(data=u16, compression="zlib")),
        (".tif", _tiff_bytes(data=np.tile(u8, (2, 2)), tile=(16, 16), compression="zlib")),
        (".tif", _tiff_bytes(data=rng.random((2, 12, 14)).astype(np.float32))),
        (".tif", _tiff_bytes(data=u16[0], compression="lzw", predictor=True)),
    ]


TIFF_SEEDS = _tiff_seeds()
INTERESTING = (0, 1, 2, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**32 - 1, 2**24, 10**6)


@st.composite
def mutated(draw, seeds):
    """A seed file, then one to four of: truncate, flip bytes, write an 'interesting' 16/32-bit
    value (sizes, offsets, counts), insert or delete a run; or plain random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([s for s, _ in seeds])), draw(st.binary(max_size=600))
    suffix, data = draw(st.sampled_from(seeds))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["truncate", "flip", "int16", "int32", "insert", "delete"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[at:]
        elif op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op in ("int16", "int32"):
            fmt = "<H" if op == "int16" else "<I"
            value = draw(st.sampled_from(INTERESTING)) % (2**16 if op == "int16" else 2**32)
            packed = struct.pack(fmt, value)
            data[at:at + len(packed)] = packed
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[at:at + draw(st.integers(1, 64))]
    return suffix, bytes(data)


def _record(target: str, outcome: str) -> None:
    STATS.setdefault(target, {}).setdefault(outcome, 0)
    STATS[target][outcome] += 1


def _case(target: str, suffix: str, data: bytes, call, check_result) -> None:
    """Write ``data`` to a fresh folder, run ``call(path)`` under the contract, check that the
    folder and a private temp folder hold nothing else afterwards."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        folder, tmp = root / "case", root / "tmp"
        folder.mkdir()
        tmp.mkdir()
        path = folder / f"case{suffix}"
        path.write_bytes(data)
        saved = tempfile.tempdir
        tempfile.tempdir = str(tmp)
        try:
            with deadline(CASE_DEADLINE_S):
                try:
                    result = call(path)
                except CONTRACT as err:
                    assert str(err).strip(), f"{type(err).__name__} without a message"
                    assert "weights_only" not in str(err), str(err)
                    _record(target, type(err).__name__)
                else:
                    check_result(result)
                    _record(target, "ok")
        except Timeout:
            _record(target, "timeout")
            raise AssertionError(f"{target}: no answer within {CASE_DEADLINE_S} s") from None
        finally:
            tempfile.tempdir = saved
        assert [p.name for p in folder.iterdir()] == [path.name], "files left beside the input"
        assert [p.name for p in tmp.iterdir()] == [], "files left in the temp folder"


# -- the image reader ----------------------------------------------------------------------------
def _check_image(result) -> None:
    assert isinstance(result, ImageData)
    assert result.array.ndim == len(result.axes)
    if isinstance(result.array, np.ndarray) and not isinstance(result.array, np.memmap):
        assert result.array.size == int(np.prod(result.array.shape))


def _reader_case(suffix: str, data: bytes) -> None:
    saved = resources.available_memory
    resources.available_memory = lambda: FUZZ_MEMORY
    try:
        _case("read_image", suffix, data, read_image, _check_image)
    finally:
        resources.available_memory = saved


@QUICK
@given(mutated(TIFF_SEEDS))
def test_fuzz_read_image(case):
    _reader_case(*case)


@pytest.mark.fuzz_long
@LONG
@given(mutated(TIFF_SEEDS))
def test_fuzz_read_image_long(case):
    _reader_case(*case)


# -- the model loader ----------------------------------------------------------------------------
def _model_seed() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.pt"
        save_model(path, UNet(1, 2, base_channels=4, depth=2, padding="same"),
                   {"object_diameter": 12.0, "pixel_size": 0.3})
        buf.write(path.read_bytes())
    return buf.getvalue()


MODEL_SEED = _model_seed()
MODEL_SEEDS = [(".pt", MODEL_SEED)]
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, 2, 3, 8, 9, 10**6, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4),
                                                              st.integers(), max_size=2),
)
ARCH_FIELDS = ("in_channels", "num_classes", "base_channels", "depth", "padding", "upsampling",
               "batch_norm", "dropout", "unknown_field")
META_FIELDS = ("mode", "class_names", "normalization", "pixel_size", "object_diameter",
               "training", "step", "best_step", "name", "unknown_field")
TOP_FIELDS = ("format", "format_version", "napari_unet_version", "architecture", "meta",
              "state_dict", "optimizer_state")


@st.composite
def structured_models(draw):
    """A model file whose payload (not its bytes) is mutated: odd values in the architecture,
    the meta or the header, weights of the wrong shape, dtype or name, keys removed."""
    payload = torch.load(io.BytesIO(MODEL_SEED), weights_only=True)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["arch", "meta", "top", "tensor", "drop"]))
        if where == "arch" and isinstance(payload.get("architecture"), dict):
            payload["architecture"][draw(st.sampled_from(ARCH_FIELDS))] = draw(ODD_VALUES)
        elif where == "meta" and isinstance(payload.get("meta"), dict):
            payload["meta"][draw(st.sampled_from(META_FIELDS))] = draw(ODD_VALUES)
        elif where == "top":
            payload[draw(st.sampled_from(TOP_FIELDS))] = draw(ODD_VALUES)
        elif where == "tensor" and isinstance(payload.get("state_dict"), dict) \
                and payload["state_dict"]:
            key = draw(st.sampled_from(sorted(payload["state_dict"])))
            kind = draw(st.sampled_from(["shape", "dtype", "nan", "rename", "scalar"]))
            t = payload["state_dict"][key]
            if kind == "shape":
                payload["state_dict"][key] = torch.zeros(tuple(s + 1 for s in t.shape))
            elif kind == "dtype":
                payload["state_dict"][key] = t.to(torch.int64)
            elif kind == "nan":
                # a float tensor: an earlier "dtype" change may have made t an integer one
                payload["state_dict"][key] = torch.full(tuple(t.shape), float("nan"))
            elif kind == "rename":
                payload["state_dict"][key + "_x"] = payload["state_dict"].pop(key)
            else:
                payload["state_dict"][key] = torch.tensor(1.0)
        elif where == "drop":
            payload.pop(draw(st.sampled_from(TOP_FIELDS)), None)
    buf = io.BytesIO()
    torch.save(payload, buf)
    return ".pt", buf.getvalue()


def _check_model(result) -> None:
    model, meta = result
    assert isinstance(model, UNet) and isinstance(meta, ModelMeta)
    assert sum(p.numel() for p in model.parameters()) < 10**8


def _loader_case(suffix: str, data: bytes) -> None:
    _case("load_model", suffix, data, lambda p: load_model(p, "cpu"), _check_model)


MODEL_CASES = st.one_of(mutated(MODEL_SEEDS), structured_models())


@settings(QUICK, max_examples=80)
@given(MODEL_CASES)
def test_fuzz_load_model(case):
    _loader_case(*case)


@pytest.mark.fuzz_long
@LONG
@given(MODEL_CASES)
def test_fuzz_load_model_long(case):
    _loader_case(*case)


@pytest.fixture(autouse=True, scope="module")
def report_counts():
    start = time.monotonic()
    yield
    if STATS:
        lines = [f"{target}: {sum(c.values())} cases, {dict(sorted(c.items()))}"
                 for target, c in sorted(STATS.items())]
        print(f"\nfuzz outcomes ({time.monotonic() - start:.0f} s):\n  " + "\n  ".join(lines))


def test_seeds_are_valid_files(tmp_path):
    """The fuzzers start from files that read correctly (else they only test garbage)."""
    for i, (suffix, data) in enumerate(TIFF_SEEDS):
        path = tmp_path / f"seed{i}{suffix}"
        path.write_bytes(data)
        assert read_image(path).array.size > 0
    (tmp_path / "seed.pt").write_bytes(MODEL_SEED)
    model, meta = load_model(tmp_path / "seed.pt")
    assert meta.object_diameter == 12.0 and os.path.getsize(tmp_path / "seed.pt") > 0
