from pathlib import Path

import numpy as np
import pytest

import napari_unet

MANIFEST = Path(napari_unet.__file__).with_name("napari.yaml")


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-original-unet"
    # Every python_name must resolve to a real callable (no stubs in the manifest).
    from importlib import import_module

    for command in manifest.contributions.commands:
        module, attr = command.python_name.split(":")
        assert callable(getattr(import_module(module), attr)), command.id


def test_npe2_validate_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.gui
def test_viewer_opens_and_loads_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-original-unet", "synthetic_nuclei")
    image, labels = viewer.layers
    assert image.data.shape == labels.data.shape == (256, 256)
    assert labels.data.max() > 20
    assert np.issubdtype(labels.data.dtype, np.integer)
