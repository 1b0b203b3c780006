"""The package as the hub and PyPI see it: one name everywhere, the licence in the wheel, the
dependencies that the code imports, an sdist that carries the tests, a citation file.

(Building a wheel takes too long for the suite; these check the configuration that puts
LICENSE into it. ``python -m build`` was checked by hand: ``*.dist-info/licenses/LICENSE``.)
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "napari_unet"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"skimage": "scikit-image", "yaml": "pyyaml"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_one_name_for_distribution_manifest_and_entry_point():
    manifest = yaml.safe_load((SRC / "napari.yaml").read_text())
    name = PROJECT["name"]
    assert name == "napari-original-unet"  # napari-unet on PyPI is another project
    assert manifest["name"] == name
    ids = [c["id"] for c in manifest["contributions"]["commands"]]
    assert ids and all(i.startswith(name + ".") for i in ids)
    assert set(PROJECT["entry-points"]["napari.manifest"]) == {name}
    assert PROJECT["scripts"] == {"napari-unet": "napari_unet.cli:main"}
    assert f"--with {name}" in (ROOT / "README.md").read_text()


def test_licence_file_goes_into_the_wheel():
    assert PROJECT["license"] == "BSD-3-Clause"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    # license-files (PEP 639) needs setuptools >= 77
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]


def test_declared_dependencies_are_the_imported_ones():
    declared = {_requirement_name(r) for r in PROJECT["dependencies"]}
    imported: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {DISTRIBUTION.get(m, m).lower() for m in imported
                   if m not in sys.stdlib_module_names and m not in ("napari_unet", "bioimageio")}
    assert third_party - declared == set(), "imported but not declared"
    # zarr is not imported by name: tifffile's zarr store (lazy TIFFs) needs it.
    assert declared - third_party == {"zarr"}, "declared but not imported"
    assert "hypothesis" in {_requirement_name(r) for r in PROJECT["optional-dependencies"]
                            ["testing"]}
    extra = {_requirement_name(r): r for r in PROJECT["optional-dependencies"]["bioimageio"]}
    assert set(extra) == {"bioimageio.core", "pydantic"} and "<2.14" in extra["pydantic"]


def test_sdist_carries_tests_and_docs():
    manifest = (ROOT / "MANIFEST.in").read_text().split("\n")
    for line in ("graft tests", "graft docs", "graft src/napari_unet", "include .ci/run"):
        assert line in manifest
    assert (ROOT / "tests" / "conftest.py").is_file()


def test_citation_file_cites_the_paper():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "BSD-3-Clause"
    assert citation["version"] == PROJECT["version"]
    assert citation["preferred-citation"]["doi"] == "10.1007/978-3-319-24574-4_28"


def _tracked_files() -> list[Path]:
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:  # an unpacked sdist: nothing is tracked, nothing to check
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.stdout.decode().split("\0") if name]


def test_the_repository_holds_no_checkpoints_or_large_files():
    # a clone is what a contributor gets: the shipped model is the only checkpoint, and
    # training runs, logs and generated data stay local files
    shipped = SRC / "models" / "default.pt"
    tracked = [p for p in _tracked_files() if p.exists()]
    assert [p for p in tracked if p.suffix in (".pt", ".pth", ".ckpt") and p != shipped] == []
    assert [p for p in tracked if p != shipped and p.stat().st_size > 2 * 2**20] == []


def test_training_outputs_are_ignored():
    import subprocess

    _tracked_files()
    probes = ["training/checkpoints/run.resume.pt", "training/run.pt", "training/run-log.txt",
              "runs/x/model.pt"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *probes], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == probes


def test_the_public_api_imports_from_the_package():
    import napari_unet
    from napari_unet.core.inference.config import PredictConfig
    from napari_unet.core.training.config import TrainConfig

    assert napari_unet.TrainConfig is TrainConfig
    assert napari_unet.PredictConfig is PredictConfig
    for name in napari_unet.__all__:
        assert getattr(napari_unet, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        napari_unet.Nope  # noqa: B018
