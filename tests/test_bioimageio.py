"""BioImage Model Zoo in and out: export, offline validation, bioimageio.core's test_model, and
loading packages back (ours work with the same labels; anything else is refused clearly).

Validation and test_model need the optional ``[bioimageio]`` extra (``.ci/run`` installs it);
export and loading do not.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from napari_unet.cli import main
from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.io.export import (
    ExportConfig,
    export_bioimageio,
    is_bioimageio_package,
    load_bioimageio_package,
)
from napari_unet.core.io.export.architecture import architecture_source
from napari_unet.core.io.export.rdf import halo, plain, size_rule
from napari_unet.core.model.checkpoint import load_model, resolve_model, save_model
from napari_unet.core.model.meta import ModelMeta
from napari_unet.core.model.unet import UNet

SAMPLE = Path(__file__).parents[1] / "src" / "napari_unet" / "data" / "nuclei_cells3d_z30.tif"


def _small(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(1, 2, base_channels=8, depth=2, **kwargs).eval()


def _crop() -> np.ndarray:
    return tifffile.imread(SAMPLE)[64:192, 64:192]


def _files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rewrite(src: Path, dst: Path, edit_rdf=None, replace: dict[str, bytes] | None = None) -> Path:
    """A copy of package ``src`` with its rdf edited in place by ``edit_rdf(rdf)`` and files
    replaced (their sha256 in the rdf updated, as a careful author would)."""
    files = _files(src)
    files.update(replace or {})
    rdf = yaml.safe_load(files["rdf.yaml"])
    for entry in rdf["weights"].values():
        entry["sha256"] = hashlib.sha256(files[entry["source"]]).hexdigest()
    if edit_rdf is not None:
        edit_rdf(rdf)
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return dst


@pytest.fixture(scope="module")
def default_package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "default.zip"
    model, meta = load_model("default")
    # TorchScript weights are tested on the small net (tracing the default net costs time).
    return export_bioimageio(model, meta, path, ExportConfig(torchscript=False))


@pytest.fixture(scope="module")
def small_package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "small.zip"
    model = _small()
    meta = ModelMeta.for_model(model, pixel_size=0.26, name="tiny test net")
    return export_bioimageio(model, meta, path)


# -- round trip ---------------------------------------------------------------------------------
def test_default_package_validates_offline_and_predicts_the_same_labels(default_package, tmp_path):
    import bioimageio.spec as spec
    description = spec.load_description(default_package, perform_io_checks=True)
    summary = description.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert type(description).__name__ == "ModelDescr"

    original, meta = load_model("default")
    loaded, loaded_meta = resolve_model(default_package, in_channels=1, num_classes=2)
    assert plain(loaded_meta.to_dict()) == plain(meta.to_dict())
    crop = _crop()
    expected = predict_image(original, crop, meta).instances
    got = predict_image(loaded, crop, loaded_meta).instances
    assert expected.max() >= 5  # nuclei were found at all
    np.testing.assert_array_equal(got, expected)

    # The command line takes the package as --model, too.
    image = tmp_path / "crop.tif"
    tifffile.imwrite(image, crop)
    for name, model in (("a.tif", "default"), ("b.tif", str(default_package))):
        assert main(["predict", "--image", str(image), "--out", str(tmp_path / name),
                     "--model", model, "--device", "cpu"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"),
                                  tifffile.imread(tmp_path / "a.tif"))


def test_package_contents(small_package):
    files = _files(small_package)
    rdf = yaml.safe_load(files["rdf.yaml"])
    assert rdf["format_version"].startswith("0.5")
    assert rdf["license"] == "BSD-3-Clause"
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert all(set(a) == {"name"} for a in rdf["authors"])  # no github_user: offline validation
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert inp["preprocessing"] == [{"id": "scale_range", "kwargs": {
        "axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.8, "eps": 1e-6}}]
    # depth 2: receptive radius 22 -> halo 24 (a multiple of 8); sides 2 * 24 + 4k, k >= 1
    assert inp["axes"][2]["size"] == {"min": 52, "step": 4}
    assert inp["axes"][2]["scale"] == 0.26 and inp["axes"][2]["unit"] == "micrometer"
    assert out["axes"][2]["halo"] == 24 and out["axes"][1]["channel_names"] == [
        "background", "foreground"]
    x = np.load(io.BytesIO(files["test_input.npy"]))
    y = np.load(io.BytesIO(files["test_output.npy"]))
    assert x.shape[:2] == (1, 1) and y.shape == (1, 2, *x.shape[2:])
    assert (x.shape[2] - 52) % 4 == 0
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)  # softmax probabilities
    assert files["cover.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Validation" in files["README.md"].decode()


def test_small_package_passes_bioimageio_test_model(small_package):
    import bioimageio.core as core
    summary = core.test_model(small_package)
    assert summary.status == "passed", summary.format()


@pytest.mark.slow
def test_default_package_passes_bioimageio_test_model(default_package):
    import bioimageio.core as core
    summary = core.test_model(default_package)
    assert summary.status == "passed", summary.format()


def test_halo_and_sizes_of_the_presets():
    padded = UNet(1, 2, base_channels=4, depth=4)
    assert halo(padded) == 104 and halo(padded) % 8 == 0  # receptive radius 100
    assert size_rule(padded) == (2 * 104 + 16, 16)
    valid = UNet(1, 2, base_channels=4, depth=4, padding="valid")
    assert halo(valid) == 0 and size_rule(valid) == (188, 16)


def test_architecture_file_is_standalone():
    import ast

    tree = ast.parse(architecture_source())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported <= {"__future__", "typing", "torch"}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_weights_match_the_net_at_other_sizes(small_package):
    scripted = torch.jit.load(io.BytesIO(_files(small_package)["weights_torchscript.pt"]))
    model = _small()
    x = torch.rand(2, 1, 56, 72)  # legal sizes the trace never saw
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), torch.softmax(model(x), 1).numpy(),
                                   atol=1e-6)


def test_valid_semantic_net_round_trip(tmp_path):
    torch.manual_seed(1)
    model = UNet(1, 3, base_channels=8, depth=2, padding="valid").eval()
    meta = ModelMeta.for_model(model, normalization={"method": "none"})
    path = export_bioimageio(model, meta, tmp_path / "valid.zip", ExportConfig(torchscript=False))
    rdf = yaml.safe_load(_files(path)["rdf.yaml"])
    assert rdf["inputs"][0]["preprocessing"] == []
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -2 * model.context
    loaded, loaded_meta = load_bioimageio_package(path)
    assert loaded_meta.mode == "semantic" and loaded_meta.normalization == {"method": "none"}
    image = np.random.default_rng(0).random((60, 64), dtype=np.float32)
    np.testing.assert_array_equal(predict_image(loaded, image, loaded_meta).semantic,
                                  predict_image(model, image, meta).semantic)


# -- variants made by hand: work, or are refused clearly -----------------------------------------
def test_folder_package_and_rdf_normalisation_wins(small_package, tmp_path):
    def percentiles(rdf):
        rdf["inputs"][0]["preprocessing"][0]["kwargs"].update(min_percentile=2.0,
                                                              max_percentile=99.0)

    changed = _rewrite(small_package, tmp_path / "p.zip", percentiles)
    _, meta = load_bioimageio_package(changed)
    assert meta.normalization == {"method": "percentile", "low": 2.0, "high": 99.0}
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(changed) as zf:
        zf.extractall(folder)
    assert is_bioimageio_package(folder) and is_bioimageio_package(folder / "rdf.yaml")
    model, meta = resolve_model(folder)
    assert meta.normalization["low"] == 2.0 and model.config == _small().config


@pytest.mark.parametrize("case, message", [
    ("axis order", "input axes are (batch, y, x, channel)"),
    ("zero mean", "preprocessing step 'zero_mean_unit_variance'"),
    ("3d", "is a 3D model"),
    ("two outputs", "has 1 input(s) and 2 output(s)"),
    ("dataset", "is not a bioimage.io model (type: 'dataset')"),
    ("format 0.4", "napari-unet reads format 0.5"),
    ("classes", "output channels"),
    ("newer", "please upgrade napari-unet"),
    ("url weights", "is a URL"),
    ("outside", "points outside the package"),
])
def test_changed_packages_are_refused(small_package, tmp_path, case, message):
    def edit(rdf):
        inp, out = rdf["inputs"][0], rdf["outputs"][0]
        if case == "axis order":
            inp["axes"] = [inp["axes"][0], *inp["axes"][2:], inp["axes"][1]]
        elif case == "zero mean":
            inp["preprocessing"] = [{"id": "zero_mean_unit_variance",
                                     "kwargs": {"axes": ["y", "x"]}}]
        elif case == "3d":
            inp["axes"].insert(2, {"type": "space", "id": "z", "size": {"min": 4, "step": 4}})
        elif case == "two outputs":
            rdf["outputs"].append(dict(out, id="second"))
        elif case == "dataset":
            rdf["type"] = "dataset"
        elif case == "format 0.4":
            rdf["format_version"] = "0.4.10"
        elif case == "classes":
            out["axes"][1]["channel_names"] = ["cells", "edges"]
        elif case == "newer":
            rdf["config"]["napari_unet"]["format_version"] = 99
        elif case == "url weights":
            rdf["weights"]["pytorch_state_dict"]["source"] = "https://example.org/w.pt"
        elif case == "outside":
            rdf["weights"]["pytorch_state_dict"]["source"] = "../weights.pt"

    bad = _rewrite(small_package, tmp_path / "bad.zip", edit)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_model(bad)


def test_foreign_state_dict_package_is_refused_without_running_its_code(small_package, tmp_path):
    marker = tmp_path / "code-ran"
    evil = f"open({str(marker)!r}, 'w').write('ran')\n".encode() + _files(small_package)[
        "unet.py"]

    def foreign(rdf):
        del rdf["config"]
        rdf["weights"]["pytorch_state_dict"]["architecture"]["sha256"] = \
            hashlib.sha256(evil).hexdigest()

    bad = _rewrite(small_package, tmp_path / "foreign.zip", foreign, {"unet.py": evil})
    with pytest.raises(ValueError, match="was not made by napari-unet.*never does"):
        resolve_model(bad)
    assert not marker.exists()


def test_broken_weights_are_refused(small_package, tmp_path):
    garbage = _rewrite(small_package, tmp_path / "g.zip", replace={"weights.pt": b"not torch"})
    with pytest.raises(ValueError, match="cannot read its weights"):
        load_bioimageio_package(garbage)
    other = io.BytesIO()
    torch.save(UNet(1, 2, base_channels=4, depth=2).state_dict(), other)
    wrong = _rewrite(small_package, tmp_path / "w.zip", replace={"weights.pt": other.getvalue()})
    with pytest.raises(ValueError, match="weights do not fit its architecture"):
        load_bioimageio_package(wrong)

    def bad_sha(rdf):
        rdf["weights"]["pytorch_state_dict"]["sha256"] = "0" * 64

    changed = _rewrite(small_package, tmp_path / "s.zip", bad_sha)
    with pytest.raises(ValueError, match="does not match its sha256"):
        load_bioimageio_package(changed)


def test_not_a_package(tmp_path):
    model_file = save_model(tmp_path / "m.pt", _small())
    assert not is_bioimageio_package(model_file)  # torch files are zips, without an rdf
    assert resolve_model(model_file)[0].config == _small().config
    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("notes.txt", "hello")
    assert not is_bioimageio_package(plain_zip)
    with pytest.raises(ValueError, match="is not a bioimage.io package: it has no rdf.yaml"):
        load_bioimageio_package(plain_zip)
    text = tmp_path / "rdf.zip"
    with zipfile.ZipFile(text, "w") as zf:
        zf.writestr("rdf.yaml", "- just\n- a list\n")
    with pytest.raises(ValueError, match="not a description"):
        resolve_model(text)


# -- exporting: output policy and the command line -----------------------------------------------
def test_export_refuses_existing_and_bad_paths(tmp_path):
    model = _small()
    meta = ModelMeta.for_model(model)
    existing = tmp_path / "taken.zip"
    existing.write_bytes(b"precious")
    with pytest.raises(ValueError, match="already exists"):
        export_bioimageio(model, meta, existing)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(ValueError, match=r"is a \.zip file"):
        export_bioimageio(model, meta, tmp_path / "model.tif")
    with pytest.raises(ValueError, match="does not exist"):
        export_bioimageio(model, meta, tmp_path / "missing" / "m.zip")
    export_bioimageio(model, meta, existing, ExportConfig(overwrite=True, torchscript=False))
    assert is_bioimageio_package(existing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.zip"]  # no temporary left


def test_cli_export(tmp_path, capsys):
    model_file = save_model(tmp_path / "m.pt", _small(), ModelMeta.for_model(_small()))
    out = tmp_path / "m.zip"
    args = ["export", "--model", str(model_file), "--out", str(out), "--author", "A. Person",
            "--no-torchscript"]
    assert main(args) == 0
    rdf = yaml.safe_load(_files(out)["rdf.yaml"])
    assert rdf["authors"] == [{"name": "A. Person"}] and "torchscript" not in rdf["weights"]
    before = out.read_bytes()
    assert main(args) == 2
    assert "already exists (use --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", "--model", str(model_file), "--out", str(model_file)]) == 2
    assert main(["export", "--model", "small", "--out", str(tmp_path / "new.zip")]) == 2
    assert "untrained" in capsys.readouterr().err
