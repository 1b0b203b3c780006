"""Property-based fuzzing of the model-package loader (bioimage.io zip and folder), in-process.

Each case is a package that napari-unet exported, then changed: its bytes mutated (truncated,
flipped, odd values written over sizes), a field of its ``rdf.yaml`` set to an odd value or
removed, or its weights member replaced (random bytes, a truncation, zeros, a pickle that would
run a command, a state dict of the wrong shapes or of other objects). It must end in a model
or a ValueError/TypeError/OSError naming the problem, within the hard deadline, never run code,
never suggest ``weights_only=False``, and leave no file behind. Same contract and harness as
``test_fuzz.py``; ``NAPARI_UNET_FUZZ_LONG=1`` runs >= 1000 cases per target.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.io.export import ExportConfig, export_bioimageio
from napari_unet.core.model.checkpoint import load_model
from napari_unet.core.model.meta import ModelMeta
from napari_unet.core.model.unet import UNet

from .test_fuzz import (
    CASE_DEADLINE_S,
    CONTRACT,
    LONG,
    ODD_VALUES,
    QUICK,
    STATS,
    Timeout,
    _case,
    _check_model,
    _record,
    deadline,
    mutated,
)

MARKER = Path(tempfile.gettempdir()) / f"napari-unet-fuzz-code-ran-{os.getpid()}"


def _package_seed() -> dict[str, bytes]:
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2, padding="same").eval()
    with tempfile.TemporaryDirectory() as folder:
        path = export_bioimageio(model, ModelMeta.for_model(model, pixel_size=0.3),
                                 Path(folder) / "seed.zip", ExportConfig(torchscript=False))
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist()}


SEED_FILES = _package_seed()
SEED_RDF = yaml.safe_load(SEED_FILES["rdf.yaml"])


def _zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


SEED_ZIP = _zipped(SEED_FILES)


def _field_paths(node, prefix=()) -> list[tuple]:
    """Every key path of the rdf (into mappings and lists)."""
    paths = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        paths.append((*prefix, key))
        paths.extend(_field_paths(value, (*prefix, key)))
    return paths


RDF_PATHS = _field_paths(SEED_RDF)


class _RunsCode:
    """Unpickles as ``os.system('touch MARKER')``: a hostile weights file."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _weights(kind: str, draw) -> bytes:
    seed = SEED_FILES["weights.pt"]
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "truncated":
        return seed[:draw(st.integers(0, len(seed) - 1))]
    if kind == "zeros":
        return bytes(draw(st.integers(0, 2**20)))
    buf = io.BytesIO()
    state = torch.load(io.BytesIO(seed), weights_only=True)
    if kind == "pickle":
        state = {"w": _RunsCode()}
    elif kind == "shapes":
        key = draw(st.sampled_from(sorted(state)))
        state[key] = torch.zeros(tuple(s + 1 for s in state[key].shape))
    elif kind == "objects":
        state[draw(st.sampled_from(sorted(state)))] = draw(ODD_VALUES)
    torch.save(state, buf)
    return buf.getvalue()


@st.composite
def structured_packages(draw):
    """The seed package with one to three changes to its rdf fields or its weights member;
    the weights' sha256 is updated (as a careful author would) unless the change is to it."""
    files = dict(SEED_FILES)
    rdf = yaml.safe_load(files["rdf.yaml"])
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            files["weights.pt"] = _weights(draw(st.sampled_from(
                ["random", "truncated", "zeros", "pickle", "shapes", "objects"])), draw)
            continue
        path = draw(st.sampled_from(RDF_PATHS))
        node = rdf
        try:
            for key in path[:-1]:
                node = node[key]
            if draw(st.integers(0, 4)) == 0:
                del node[path[-1]]
            else:
                node[path[-1]] = draw(ODD_VALUES)
        except (KeyError, IndexError, TypeError):  # an earlier change removed the way there
            pass
    entry = rdf.get("weights", {}).get("pytorch_state_dict") \
        if isinstance(rdf.get("weights"), dict) else None
    if isinstance(entry, dict) and "sha256" in entry and draw(st.booleans()):
        entry["sha256"] = hashlib.sha256(files["weights.pt"]).hexdigest()
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    return files


def _load(path: Path):
    return load_model(path, "cpu")


def _zip_case(data: bytes) -> None:
    _case("load_package_zip", ".zip", data, _load, _check_model)
    assert not MARKER.exists(), "code stored in a package ran"


def _folder_case(files: dict[str, bytes]) -> None:
    """The package unpacked into a folder; nothing may appear in it."""
    target = "load_package_folder"
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "pkg"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        with deadline(CASE_DEADLINE_S):
            try:
                try:
                    result = _load(folder)
                except CONTRACT as err:
                    assert str(err).strip(), f"{type(err).__name__} without a message"
                    assert "weights_only" not in str(err), str(err)
                    _record(target, type(err).__name__)
                else:
                    _check_model(result)
                    _record(target, "ok")
            except Timeout:
                _record(target, "timeout")
                raise AssertionError(f"{target}: no answer within {CASE_DEADLINE_S} s") from None
        assert sorted(p.name for p in folder.iterdir()) == sorted(files), "files left behind"
    assert not MARKER.exists(), "code stored in a package ran"


ZIP_CASES = st.one_of(mutated([(".zip", SEED_ZIP)]), structured_packages().map(_zipped))


@settings(QUICK, max_examples=100)
@given(ZIP_CASES)
def test_fuzz_load_package_zip(data):
    if isinstance(data, tuple):  # mutated() gives (suffix, bytes)
        data = data[1]
    _zip_case(data)


@settings(QUICK, max_examples=60)
@given(structured_packages())
def test_fuzz_load_package_folder(files):
    _folder_case(files)


@pytest.mark.fuzz_long
@LONG
@given(ZIP_CASES)
def test_fuzz_load_package_zip_long(data):
    if isinstance(data, tuple):
        data = data[1]
    _zip_case(data)


@pytest.mark.fuzz_long
@LONG
@given(structured_packages())
def test_fuzz_load_package_folder_long(files):
    _folder_case(files)


@pytest.fixture(autouse=True, scope="module")
def report_package_counts():
    start = time.monotonic()
    yield
    mine = {t: c for t, c in STATS.items() if t.startswith("load_package")}
    if mine:
        lines = [f"{target}: {sum(c.values())} cases, {dict(sorted(c.items()))}"
                 for target, c in sorted(mine.items())]
        print(f"\npackage fuzz outcomes ({time.monotonic() - start:.0f} s):\n  "
              + "\n  ".join(lines))


def test_package_seed_loads():
    """The fuzzer starts from a package that loads (else it only tests garbage)."""
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "seed.zip"
        path.write_bytes(SEED_ZIP)
        model, meta = load_model(path)
        assert meta.pixel_size == 0.3 and isinstance(model, UNet)
