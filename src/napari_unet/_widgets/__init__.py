"""Dock widgets of napari-unet: thin Qt views over ``napari_unet.core``.

Modules are imported lazily by the npe2 manifest (``python_name``), so opening napari does not
import torch. Layer metadata keys shared by the docks:

- ``napari_unet_convention``: label convention of a training labels layer (``"sparse"``:
  0 = not annotated, 1 = background, 2.. = objects; ``"semantic-sparse"``: class c painted as
  c + 1; or any convention of ``core.data``).
- ``napari_unet_class_names``: class names of a multi-class layer, background first.
- ``napari_unet_role``: ``"training"`` for layers made by the Annotate dock, ``"prediction"`` for
  layers written by the Predict dock, ``"ground truth"`` for the sample data's reference
  labels (listed, never preselected as training labels or as a prediction). Predictions are
  never written into training layers.
- ``napari_unet_axes``: axes of a labels layer's data (e.g. ``"ZYX"``), set by the Predict dock
  from the image's file; the labels writer uses it.
- ``napari_unet_pixel_size``: micrometres per Z/Y/X axis of a labels layer's data, set by the
  Predict dock when the pixel size comes from the image's file (napari's reader leaves the
  layer's scale at 1); the labels writer uses it when the scale says nothing.
"""

CONVENTION_KEY = "napari_unet_convention"
CLASS_NAMES_KEY = "napari_unet_class_names"
ROLE_KEY = "napari_unet_role"
GROUND_TRUTH = "ground truth"  # the role of reference labels (the samples')
AXES_KEY = "napari_unet_axes"
PIXEL_SIZE_KEY = "napari_unet_pixel_size"
