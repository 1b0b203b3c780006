"""Write a napari-unet model as a BioImage Model Zoo (bioimage.io) model package, spec 0.5.

The package is one zip file that deepImageJ, ilastik, QuPath, bioimageio.core and napari-unet
itself can run:

- ``rdf.yaml``: the description (format 0.5.4, the version current consumers read; built by
  :mod:`.rdf` with the ``README.md``);
- ``weights.pt``: the net's ``state_dict`` (``pytorch_state_dict`` weights) with ``unet.py``, a
  standalone copy of our U-Net source (``core.io.export.architecture``), whose ``UNetProbabilities``
  ends with a softmax, so the package's output is class probabilities;
- ``weights_torchscript.pt``: the same net traced with TorchScript. A trace of a padded net is
  right only for sizes that are multiples of 16, which are exactly the sizes the rdf allows;
  the export checks the trace against the net at a second size;
- ``test_input.npy`` / ``test_output.npy``: a crop of the shipped sample (or the image given)
  and what our net makes of it; ``cover.png``; ``README.md`` (the model card and how to use it);
- the model's percentile normalisation as ``scale_range`` preprocessing (per sample and
  channel, as napari-unet normalises each plane); the padded net's halo (its receptive radius
  rounded up to a multiple of 8, so tiles stay on the 16 px pooling grid) and size step (16);
- ``config.napari_unet``: the architecture and the full :class:`~core.model.meta.ModelMeta`,
  from which napari-unet rebuilds the net with its own code when it loads the package.

The paper is cited by DOI; the licence is BSD-3-Clause. Authors carry no ``github_user``: the
spec looks those up online, so offline validation would fail.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ...model.meta import ModelMeta
from ...model.unet import UNet
from ..outputs import atomic_write, plan_outputs
from .architecture import architecture_source, build_from_source
from .rdf import FILES, build_rdf, documentation, size_rule

DEFAULT_AUTHORS = ("napari-unet developers",)
#: Test tensors at most this big per side (the shipped sample is 256 x 256).
TEST_SIDE = 256


@dataclass(frozen=True)
class ExportConfig:
    """Settings of one export.

    Attributes
    ----------
    authors : tuple of str
        Who to credit (names only).
    description : str or None
        One paragraph; None builds one from the model's meta.
    torchscript : bool
        Also write TorchScript weights.
    overwrite : bool
        Replace an existing package file.
    tags : tuple of str
        Extra zoo tags (the U-Net, 2D, segmentation and mode tags are always there).
    """

    authors: tuple[str, ...] = DEFAULT_AUTHORS
    description: str | None = None
    torchscript: bool = True
    overwrite: bool = False
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        authors = self.authors
        if isinstance(authors, str) or not all(isinstance(a, str) and a.strip()
                                               for a in authors) or not authors:
            raise ValueError(f"authors must be a non-empty list of names, got {authors!r}")
        object.__setattr__(self, "authors", tuple(a.strip() for a in authors))
        if self.description is not None and not self.description.strip():
            raise ValueError("description must not be empty")
        if not isinstance(self.overwrite, bool) or not isinstance(self.torchscript, bool):
            raise TypeError("overwrite and torchscript must be True or False")
        object.__setattr__(self, "tags", tuple(self.tags))


def export_bioimageio(
    model: UNet,
    meta: ModelMeta,
    out: str | os.PathLike,
    config: ExportConfig | None = None,
    sample: np.ndarray | None = None,
) -> Path:
    """Write ``model`` and its ``meta`` to the bioimage.io package ``out`` (a ``.zip`` file).

    Parameters
    ----------
    model : UNet
        The net (any device; it is copied to the CPU).
    meta : ModelMeta
        Its metadata: normalisation, class names, pixel size, name, credits, evaluation.
    out : path-like
        The package file; it must end in ``.zip``. An existing file is replaced only with
        ``config.overwrite``; the zip is written to a temporary file and renamed into place.
    config : ExportConfig, optional
    sample : array, optional
        A 2D image ``(H, W)`` or ``(C, H, W)`` for the test tensors and the cover; default: a
        crop of the shipped nuclei sample (repeated over the net's input channels).

    Returns
    -------
    Path
        The package.

    Raises
    ------
    ValueError
        ``out`` is not a ``.zip`` path, exists without ``overwrite``, or its folder is missing;
        the sample does not fit the net.
    """
    config = config or ExportConfig()
    if not isinstance(model, UNet):
        raise TypeError(f"can only export napari-unet UNet models, got {type(model).__name__}")
    if not isinstance(meta, ModelMeta):
        raise TypeError(f"meta must be a ModelMeta, got {type(meta).__name__}")
    if len(meta.class_names) != model.num_classes:
        raise ValueError(f"the meta names {len(meta.class_names)} classes but the net has "
                         f"{model.num_classes}")
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"a bioimage.io package is a .zip file; got {str(out)!r}")
    plan_outputs([out], overwrite=config.overwrite, hint="--overwrite")

    net = _cpu_copy(model)
    raw = _test_image(net, sample)
    probabilities = _run(net, raw, meta)
    files: dict[str, bytes] = {}
    source = architecture_source()
    _check_architecture_file(source, net, raw, meta, probabilities)
    files[FILES["architecture"]] = source.encode()
    files[FILES["weights"]] = _torch_bytes({k: v.detach().clone()
                                            for k, v in net.state_dict().items()})
    if config.torchscript:
        files[FILES["torchscript"]] = _torchscript_bytes(net, raw, meta)
    files[FILES["test_input"]] = _npy_bytes(raw[None])
    files[FILES["test_output"]] = _npy_bytes(probabilities[None])
    files[FILES["sample_input"]] = _tif_bytes(raw[None])
    files[FILES["sample_output"]] = _tif_bytes(probabilities[None])
    files[FILES["cover"]] = _cover_png(raw, probabilities, meta)
    files[FILES["documentation"]] = documentation(net, meta).encode()
    rdf = build_rdf(net, meta, files, config.authors, config.description, config.tags)
    files[FILES["rdf"]] = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode()
    with atomic_write(out, overwrite=config.overwrite, hint="--overwrite") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    return out


# -- the package's files -----------------------------------------------------------------------
def _cpu_copy(model: UNet) -> UNet:
    net = UNet.from_config(dict(model.config))
    net.load_state_dict({k: v.detach().to("cpu") for k, v in model.state_dict().items()})
    return net.eval()


def _default_sample() -> np.ndarray:
    import tifffile

    path = Path(str(resources.files("napari_unet"))) / "data" / "nuclei_cells3d_z30.tif"
    return np.asarray(tifffile.imread(path))


def _test_image(model: UNet, sample: np.ndarray | None) -> np.ndarray:
    """The raw test input ``(C, H, W)`` float32: a legal-size crop of ``sample``, mirrored
    where the net needs more than the sample has."""
    image = _default_sample() if sample is None else np.asarray(sample)
    if image.ndim == 2:
        image = np.repeat(image[None], model.in_channels, axis=0) if sample is None \
            else image[None]
    if image.ndim != 3 or image.shape[0] != model.in_channels:
        raise ValueError(f"the test image must be (H, W) or (C, H, W) with C = "
                         f"{model.in_channels} input channels, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"the test image must be numeric, got dtype {image.dtype}")
    minimum, step = size_rule(model)
    sides = []
    for n in image.shape[1:]:
        side = max(minimum, minimum + (min(n, TEST_SIDE) - minimum) // step * step)
        sides.append(side)
    pad = [(0, 0)] + [(0, max(s - n, 0)) for s, n in zip(sides, image.shape[1:], strict=True)]
    if any(p[1] for p in pad):
        image = np.pad(image, pad, mode="symmetric")
    top, left = ((n - s) // 2 for n, s in zip(image.shape[1:], sides, strict=True))
    crop = image[:, top:top + sides[0], left:left + sides[1]]
    return np.ascontiguousarray(crop, dtype=np.float32)


def _normalized(raw: np.ndarray, meta: ModelMeta) -> np.ndarray:
    from ...normalize import normalize_plane

    return normalize_plane(raw, meta.normalization)


def _run(net: nn.Module, raw: np.ndarray, meta: ModelMeta) -> np.ndarray:
    with torch.no_grad():
        logits = net(torch.from_numpy(_normalized(raw, meta))[None])
        return torch.softmax(logits, dim=1)[0].numpy().astype(np.float32)


def _check_architecture_file(source: str, net: UNet, raw: np.ndarray, meta: ModelMeta,
                             probabilities: np.ndarray) -> None:
    """The generated ``unet.py`` must give our net's probabilities (else it is our bug)."""
    rebuilt = build_from_source(source, dict(net.config))
    rebuilt.load_state_dict(net.state_dict())
    rebuilt.eval()
    x = torch.from_numpy(_normalized(raw, meta))[None]
    with torch.no_grad():
        diff = np.abs(rebuilt(x)[0].numpy() - probabilities).max()
    if diff > 1e-5:
        raise RuntimeError(f"the generated architecture file differs from the net by {diff}")


class _Probabilities(nn.Module):
    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def _torchscript_bytes(net: UNet, raw: np.ndarray, meta: ModelMeta) -> bytes:
    """The traced net, checked against the eager net at a second legal size (a trace freezes
    Python branches such as the padding to a multiple of 16)."""
    wrapped = _Probabilities(net).eval()
    x = torch.from_numpy(_normalized(raw, meta))[None]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
        traced = torch.jit.trace(wrapped, x, check_trace=False)
        # Another legal size, different per axis: smaller where the net allows it (cheaper).
        minimum, step = size_rule(net)
        h, w = x.shape[-2:]
        other = x[..., :h - step, :w - 2 * step] if min(h - step, w - 2 * step) >= minimum \
            else torch.nn.functional.pad(x, (0, 2 * step, 0, step), mode="reflect")
        diff = (traced(other) - wrapped(other)).abs().max().item()
    if diff > 1e-5:
        raise RuntimeError(f"the TorchScript trace differs from the net by {diff}")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch >= 2.10 deprecates TorchScript in favour of torch.export, but the zoo's
        # consumers (deepImageJ, bioimageio.core) read TorchScript, not exported programs.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _tif_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(array, dtype=np.float32),
                     photometric="minisblack")  # channels are classes, never RGB
    return buffer.getvalue()


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _cover_png(raw: np.ndarray, probabilities: np.ndarray, meta: ModelMeta) -> bytes:
    """Input (first channel, normalised) beside the foreground or class map: 2:1, as the zoo
    asks for covers."""
    import imageio.v3 as iio

    image = _normalized(raw, meta)[0]
    lo, hi = np.percentile(image, [1, 99.8])
    left = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    if meta.mode == "instances":
        right = probabilities[1]
    else:
        right = np.argmax(probabilities, axis=0) / max(probabilities.shape[0] - 1, 1)
    top, side = ((a - b) // 2 for a, b in zip(left.shape, right.shape, strict=True))
    left = left[top:top + right.shape[0], side:side + right.shape[1]]  # valid nets crop
    panel = np.concatenate([left, right], axis=1)
    gray = (panel * 255).round().astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cover.png"
        iio.imwrite(path, np.stack([gray] * 3, axis=-1))
        return path.read_bytes()


__all__ = ["ExportConfig", "export_bioimageio"]
