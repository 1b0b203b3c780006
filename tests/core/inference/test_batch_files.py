"""The files of a batch: output names."""

from __future__ import annotations

from pathlib import Path

from napari_unet.core.inference.batch_files import output_name


def test_output_names():
    assert output_name(Path("x/cells.ome.tif")) == "cells.tif"
    assert output_name(Path("x/cells.TIFF"), "_labels") == "cells_labels.tif"
    assert output_name(Path("x/a.b.png")) == "a.b.tif"
