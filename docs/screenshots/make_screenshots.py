"""Screenshots of the Annotate, Train, Predict and Batch docks, for docs/user-guide.md, in the
window of a 1366 x 768 laptop screen.

Run under a virtual display of that size from the repository root:
``xvfb-run -a -s "-screen 0 1366x768x24" python docs/screenshots/make_screenshots.py
[annotate|train|predict|batch ...]``. The model for the Predict shot is the shipped default, or
``--model path/to/model.pt``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def _wait(app, condition, timeout=600.0):
    end = time.time() + timeout
    while not condition():
        app.processEvents()
        time.sleep(0.02)
        if time.time() > end:
            raise TimeoutError("job did not finish")


def _viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)  # a laptop's screen
    return viewer


def annotate_shot() -> None:
    from qtpy.QtWidgets import QApplication

    viewer = _viewer()
    viewer.open_sample("napari-original-unet", "nuclei_cells3d")
    truth = viewer.layers[1]
    truth.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Annotate")
    widget.image_combo.value = viewer.layers[0]
    layer = widget.create_training_layer()
    # A few painted objects and background strokes, as a user would start.
    data = np.zeros_like(layer.data)
    gt = np.asarray(truth.data)
    for new_id, old_id in enumerate((3, 8, 12, 15), start=2):
        data[gt == old_id] = new_id
    yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
    for cy, cx in ((30, 120), (200, 40), (140, 230)):
        ring = (np.abs(np.hypot(yy - cy, xx - cx) - 14) < 3) & (gt == 0)
        data[ring] = 1
    layer.data = data
    widget.new_object()
    widget.update_counts()
    viewer.layers.selection.active = layer
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "annotate.png"), canvas_only=False)
    viewer.close()


def train_shot() -> None:
    """The Train dock a few steps into fine-tuning the default model on the sample's labels."""
    from qtpy.QtWidgets import QApplication

    viewer = _viewer()
    viewer.open_sample("napari-original-unet", "nuclei_cells3d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    # the sample's ground truth is never preselected for training: chosen, as a user would
    widget.inputs.set_layers(labels=viewer.layers["nuclei (cells3d z30) labels"])
    widget.train_form.set_value("minutes", None)
    widget.train_form.set_value("iterations", 30)
    widget.start()
    _wait(QApplication.instance(), lambda: widget.worker is None)
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "train_dock.png"), canvas_only=False)
    viewer.close()


def predict_shot(model: str | None) -> None:
    from qtpy.QtWidgets import QApplication

    viewer = _viewer()
    viewer.open_sample("napari-original-unet", "nuclei_cells3d")
    viewer.layers[1].visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Predict")
    if model:
        widget.model_choice.set_source("file", model)
    widget.form.set_value("uncertainty_layer", True)
    widget.run()
    _wait(QApplication.instance(), lambda: not widget.runner.running)
    viewer.layers["nuclei (cells3d z30) uncertainty"].opacity = 0.6
    viewer.layers["nuclei (cells3d z30) uncertainty"].visible = False
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "predict.png"), canvas_only=False)
    viewer.close()


def batch_shot(model: str | None, folder: Path) -> None:
    import shutil

    from qtpy.QtWidgets import QApplication

    from napari_unet.core.io.images import read_image, write_labels

    shutil.rmtree(folder, ignore_errors=True)  # a scratch folder: start from scratch
    src = folder / "in"
    out = folder / "out"
    src.mkdir(parents=True)
    out.mkdir()
    import tifffile

    from napari_unet._sample_data import data_path

    image = read_image(data_path("nuclei_cells3d_z30.tif")).array
    for i, (r, c) in enumerate(((0, 0), (0, 128), (128, 0))):
        tifffile.imwrite(src / f"nuclei_{i}.tif", image[r:r + 128, c:c + 128])
    (src / "broken.tif").write_bytes(b"not a TIFF")
    write_labels(out / "nuclei_0.tif", np.zeros((128, 128), np.uint16), overwrite=True)

    viewer = _viewer()
    viewer.open_sample("napari-original-unet", "nuclei_cells3d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Batch segment")
    widget.input_edit.setText(str(src))
    widget.output_edit.setText(str(out))
    if model:
        widget.model_choice.set_source("file", model)
    widget.run()
    _wait(QApplication.instance(), lambda: not widget.runner.running)
    # Show one written file on top of the region it came from (crop at row 0, column 128).
    viewer.layers[1].visible = False
    result = read_image(out / "nuclei_1.tif").array
    scale = tuple(viewer.layers[0].scale)  # the sample's 0.26 um pixels
    viewer.add_labels(np.asarray(result), name="out/nuclei_1.tif", scale=scale,
                      translate=(0, 128 * scale[1]))
    end = time.time() + 1.0  # let the canvas draw the new layer
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.screenshot(str(HERE / "batch.png"), canvas_only=False)
    viewer.close()


def main() -> None:
    import os
    import tempfile

    # the docks remember settings: keep the shots' choices out of the user's settings file
    os.environ["NAPARI_UNET_SETTINGS"] = os.path.join(tempfile.mkdtemp(), "docks.ini")
    parser = argparse.ArgumentParser()
    parser.add_argument("shots", nargs="*", default=["annotate", "train", "predict", "batch"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--work", default="/tmp/napari_unet_shots")
    args = parser.parse_args()
    if "annotate" in args.shots:
        annotate_shot()
    if "train" in args.shots:
        train_shot()
    if "predict" in args.shots:
        predict_shot(args.model)
    if "batch" in args.shots:
        batch_shot(args.model, Path(args.work))


if __name__ == "__main__":
    main()
