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


@pytest.mark.gui
@pytest.mark.parametrize("sample", ["synthetic_nuclei", "nuclei_cells3d"])
def test_sample_ground_truth_is_never_preselected_for_training_or_correction(
        make_napari_viewer, sample):
    """The samples' reference labels are there to compare with: Train does not offer them as
    training labels unasked, Annotate not as the prediction to correct. Painted labels are."""
    from napari_unet._widgets import GROUND_TRUTH, ROLE_KEY

    viewer = make_napari_viewer()
    viewer.open_sample("napari-original-unet", sample)
    image, truth = viewer.layers
    assert truth.metadata[ROLE_KEY] == GROUND_TRUTH
    _, train = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-original-unet", "Annotate")
    # (the docks see napari's proxies of the layers: compared by name)
    assert train.inputs.image_layer().name == image.name
    assert train.inputs.labels_layer() is None
    assert annotate.prediction_combo.value is None
    # still there to pick by hand
    assert truth.name in [c.name for c in annotate.prediction_combo.choices if c is not None]
    annotate.create_training_layer()
    painted = annotate.labels_combo.value
    assert painted is not None and painted.name != truth.name
    train.inputs.refresh()
    assert train.inputs.labels_layer().name == painted.name
