"""The Train dock's link to the autosaved session of an image (``session.Session``).

While a run goes on, the dock autosaves the training labels and, when it ends, the model into
the session folder of the chosen image; :func:`restore` brings both back in a later napari
session. The files themselves are ``session.Session``'s job; this module only knows layers.
"""

from __future__ import annotations

from typing import Any

from . import CONVENTION_KEY
from .session import Session


def session_for(image_layer: Any) -> Session:
    """The session folder of ``image_layer`` (next to its file, or per user)."""
    return Session.for_image(image_layer.name, getattr(image_layer.source, "path", None))


def has_saved(session: Session | None) -> bool:
    """Whether ``session`` holds autosaved labels or a model."""
    return session is not None and (session.has_labels() or session.has_model())


def restore(viewer: Any, image_layer: Any, session: Session) -> tuple[Any, str | None]:
    """Add the session's labels as a new layer over ``image_layer``; find its model.

    Returns
    -------
    (labels layer or None, model path or None)
        None where the session holds no such file.

    Raises
    ------
    ValueError
        The autosaved labels cannot be read (nothing is added then).
    """
    restored = session.load_labels()
    layer = None
    if restored is not None:
        labels, convention = restored
        layer = viewer.add_labels(
            labels, name=f"{image_layer.name} training labels (restored)",
            scale=image_layer.scale[-labels.ndim:], translate=image_layer.translate[-labels.ndim:],
            metadata={CONVENTION_KEY: convention})
    model = str(session.model_path) if session.has_model() else None
    return layer, model


__all__ = ["has_saved", "restore", "session_for"]
