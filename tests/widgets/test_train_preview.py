"""Preview geometry and the GUI -> job request box (no viewer needed)."""

from __future__ import annotations

import threading

from napari_unet._widgets.train_preview import PreviewBox, preview_region


def test_preview_region_follows_the_view_within_limits():
    # Zoomed in: the visible 100x80 box around (200, 300).
    assert preview_region((200, 300), (100, 80), (1000, 1000)) == (slice(150, 250),
                                                                    slice(260, 340))
    # Zoomed out on a big image: 512 px around the centre.
    assert preview_region((500, 500), (1000, 1000), (1000, 1000)) == (slice(244, 756),
                                                                      slice(244, 756))
    # Near the border: shifted inside; tiny view: at least 64 px.
    assert preview_region((5, 995), (10, 10), (1000, 1000)) == (slice(0, 64), slice(936, 1000))
    # Small image: the whole image.
    assert preview_region((20, 20), (500, 500), (40, 30)) == (slice(0, 40), slice(0, 30))


def test_preview_box_versions_only_real_changes():
    box = PreviewBox()
    assert box.get() == (None, 0)
    region = (None, slice(0, 64), slice(0, 64))
    box.set(region)
    box.set((None, slice(0, 64), slice(0, 64)))  # the same region again: no new version
    assert box.get() == (region, 1)
    box.set((2, slice(0, 64), slice(0, 64)))
    assert box.get()[1] == 2
    # Written by one thread, read by another.
    seen = []
    reader = threading.Thread(target=lambda: seen.append(box.get()))
    reader.start()
    reader.join()
    assert seen == [box.get()]
