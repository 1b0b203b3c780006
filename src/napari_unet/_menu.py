"""Menu commands: File > IO Utilities (and Layers > Segment) > "Batch segment a folder".

napari injects the current viewer into ``open_batch`` from its type annotation, so the
annotation must be the real ``Viewer`` class (no postponed annotations in this module).
"""

from napari.viewer import Viewer

BATCH_DOCK = "Batch segment"


def open_batch(viewer: Viewer):
    """Show the Batch dock in ``viewer`` (reusing an open one) and return the widget."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", BATCH_DOCK)
    return widget
