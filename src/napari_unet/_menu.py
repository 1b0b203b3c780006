"""Menu commands: File > IO Utilities > "Batch segment a folder (U-Net)...".

npe2 injects the viewer into ``open_batch``; it docks the Batch widget (once per viewer).
"""

from __future__ import annotations

from typing import Any

BATCH_DOCK = "Batch segment"


def open_batch(viewer: Any) -> Any:
    """Show the Batch dock in ``viewer`` (reusing an open one) and return the widget."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", BATCH_DOCK)
    return widget
