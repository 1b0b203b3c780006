"""Plain PyTorch/NumPy core of napari-unet: no Qt, magicgui or napari imports here."""
