"""What a model picker chose (:class:`ModelSpec`): a plain value, free of Qt.

The Predict and Train docks describe the user's choice with it; building or loading the net
happens later, in a worker thread or the job process (:mod:`napari_unet.core.runtime.processes`),
which unpickles it without importing Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where a model comes from: the shipped model, a new (untrained) net, or a saved file.
SOURCES = ("default", "original", "modified", "small", "file")
NEW_VARIANTS = ("original", "modified", "small")
UPSAMPLINGS = ("transpose", "bilinear")


@dataclass(frozen=True)
class ModelSpec:
    """What the user picked; :meth:`build` turns it into ``(UNet, meta)``.

    Parameters
    ----------
    source : {"default", "original", "modified", "small", "file"}
        The shipped model, a new net of that variant, or a saved model file.
    upsampling : {"transpose", "bilinear"}
        Upsampling of a new net (ignored for loaded models, whose architecture is stored).
    path : str
        The model file when ``source == "file"``.
    overrides : dict
        Extra architecture arguments of a new net (``base_channels``, ``depth``, ...); used by
        tests and benchmarks to get tiny nets, not shown in the GUI.
    """

    source: str = "small"
    upsampling: str = "transpose"
    path: str = ""
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"model source must be one of {SOURCES}, got {self.source!r}")
        if self.upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {self.upsampling!r}")
        if self.source == "file":
            if not self.path:
                raise ValueError("choose a model file (or another model source)")
            path = Path(self.path)
            # a model file, a BioImage Model Zoo .zip, or an unpacked package folder (rdf.yaml)
            if not (path.is_file() or (path / "rdf.yaml").is_file()):
                raise ValueError(f"model file {self.path!r} does not exist")

    @property
    def is_new(self) -> bool:
        """True when the net is created untrained (so it must be trained before predicting)."""
        return self.source in NEW_VARIANTS

    def describe(self) -> str:
        """Short human-readable text, e.g. ``"new small (bilinear)"`` or the file name."""
        if self.is_new:
            return f"new {self.source} ({self.upsampling})"
        if self.source == "file":
            return Path(self.path).name
        return "shipped default"

    def build(
        self, in_channels: int, num_classes: int = 2, device: Any = "cpu"
    ) -> tuple[Any, Any]:
        """Create or load the net; slow for big nets, so call it from a worker.

        Parameters
        ----------
        in_channels, num_classes : int
            Channels of the image and classes wanted; a loaded net must match them.
        device : str or torch.device
            Where to put the net.

        Returns
        -------
        (UNet, ModelMeta)
            The net and its metadata (see ``core.model.checkpoint.resolve_model``).
        """
        from ..core.model.checkpoint import resolve_model
        from ..core.model.meta import ModelMeta
        from ..core.model.unet import UNet

        if self.is_new:
            constructor = getattr(UNet, self.source)
            model = constructor(in_channels=in_channels, num_classes=num_classes,
                                upsampling=self.upsampling, **self.overrides)
            return model.to(device), ModelMeta.for_model(model)
        return resolve_model(self.loads(), in_channels=in_channels, num_classes=num_classes,
                             device=device)

    def loads(self) -> str:
        """What ``resolve_model`` loads: ``"default"`` or the file's path (a trained model)."""
        return "default" if self.source == "default" else self.path

    def source_file(self) -> Any:
        """The file or package folder the model comes from (an input no output may replace),
        or None for a new net."""
        from ..core.model.checkpoint import model_source_of

        return None if self.is_new else model_source_of(self.loads())


def default_model_problem() -> str | None:
    """Why the shipped default model cannot be used, or None when it is installed."""
    from ..core.model.checkpoint import default_model_path

    try:
        default_model_path()
    except ValueError as err:
        return str(err)
    return None


__all__ = ["NEW_VARIANTS", "SOURCES", "UPSAMPLINGS", "ModelSpec", "default_model_problem"]
