"""Former home of ``atomic_path``; the output policy lives in :mod:`napari_unet.core.outputs`.

Kept only so that modules not yet switched keep importing; remove once nothing imports it.
"""

from .outputs import atomic_path

__all__ = ["atomic_path"]
