"""Load a bioimage.io model package (a ``.zip`` or a folder with ``rdf.yaml``) as a napari-unet
model, with napari-unet's own code.

A package's ``pytorch_state_dict`` weights come with a Python file that rebuilds the net;
running it would run whatever the package's author wrote. This loader never runs a package's
Python: it accepts packages that napari-unet exported (recognised by ``config.napari_unet``),
rebuilds the net from its recorded architecture with our ``UNet`` and reads the weights with
``torch.load(weights_only=True)``. Anything else is refused with a message saying why (another
program's model, 3D, several inputs or outputs, unsupported preprocessing, ...).

What other tools do with the package comes from the rdf, so where the rdf and our recorded
meta could disagree the rdf wins (the normalisation comes from its preprocessing) or the
package is refused (axes, classes, architecture).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from ...model.meta import ModelMeta
from ...model.unet import UNet
from ..resources import check_memory
from .rdf import PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, channel_names

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: A description bigger than this is not an rdf (they are a few kB).
MAX_RDF_BYTES = 2**20
#: Weights bigger than this are refused before reading (the paper's net is ~125 MB).
MAX_WEIGHTS_BYTES = 4 * 2**30


class _Package:
    """Read-only access to the files of a zip or folder package (no extraction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            names = [n for n in RDF_NAMES if (path / n).is_file()]
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as err:  # ValueError: names
                raise ValueError(f"{str(path)!r} is not a bioimage.io package: {err}") from None
            members = set(self.zip.namelist())
            names = [n for n in RDF_NAMES if n in members]
        if not names:
            raise ValueError(f"{str(path)!r} is not a bioimage.io package: it has no "
                             f"{' or '.join(RDF_NAMES)}")
        self.rdf_name = names[0]

    def read(self, name: str, what: str, limit: int) -> bytes:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self._where()}: {what} names no file")
        if "://" in name:
            raise ValueError(f"{self._where()}: {what} is a URL ({name}); napari-unet reads "
                             "only files inside the package and downloads nothing")
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or ".." in parts:
            raise ValueError(f"{self._where()}: {what} {name!r} points outside the package")
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError:
                raise ValueError(f"{self._where()}: {what} {name!r} is not in the package") \
                    from None
            if info.file_size > limit:
                raise ValueError(f"{self._where()}: {what} {name!r} is {info.file_size} bytes, "
                                 f"more than the {limit} napari-unet accepts")
            check_memory(info.file_size, f"{self._where()}: reading {what} {name!r}")
            try:
                return self.zip.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
                    zlib.error) as err:  # corrupt, encrypted or oddly compressed member
                raise ValueError(f"{self._where()}: cannot read {what} {name!r}: {err}") \
                    from None
        file = self.path / name
        if not file.is_file():
            raise ValueError(f"{self._where()}: {what} {name!r} is not in the package")
        if file.stat().st_size > limit:
            raise ValueError(f"{self._where()}: {what} {name!r} is {file.stat().st_size} "
                             f"bytes, more than the {limit} napari-unet accepts")
        return file.read_bytes()

    def _where(self) -> str:
        return f"bioimage.io package {str(self.path)!r}"

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def is_bioimageio_package(spec: Any) -> bool:
    """Whether ``spec`` names a bioimage.io package: a folder holding ``rdf.yaml`` (or
    ``bioimageio.yaml``), that file itself, or a zip file with one at its top level. Torch
    model files are zips too, but hold no rdf. Never raises."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    path = Path(spec)
    try:
        if path.is_dir():
            return any((path / n).is_file() for n in RDF_NAMES)
        if path.name in RDF_NAMES and path.is_file():
            return True
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any(n in RDF_NAMES for n in zf.namelist())
    except (OSError, ValueError, zipfile.BadZipFile):  # ValueError: undecodable member names
        return False


def load_bioimageio_package(path: str | os.PathLike,
                            device: str | torch.device = "cpu") -> tuple[UNet, ModelMeta]:
    """``(model, meta)`` from a bioimage.io package that napari-unet exported.

    Raises ``ValueError`` naming the reason for anything else: not a bioimage.io model, another
    program's model (its Python would have to run), 3D or several inputs/outputs, preprocessing
    napari-unet cannot reproduce, weights that are missing, corrupt or do not fit.
    """
    path = Path(path)
    if path.name in RDF_NAMES and path.is_file():
        path = path.parent
    if not path.exists():
        raise ValueError(f"bioimage.io package {str(path)!r} does not exist")
    package = _Package(path)
    try:
        rdf = _read_rdf(package)
        where = package._where()
        _check_model_rdf(rdf, where)
        ours = _our_config(rdf, where)
        in_channels, num_classes = _check_io(rdf, ours, where)
        normalization = _normalization(rdf["inputs"][0], where)
        model = _build(ours, rdf, where, in_channels, num_classes)
        state = _read_weights(package, rdf, where)
    finally:
        package.close()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{where}: its weights do not fit its architecture: {first}") from None
    try:
        meta = ModelMeta.from_dict(ours.get("meta") or {}, model=model)
        meta = meta.replace(normalization=normalization)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad napari-unet metadata: {err}") from None
    if channel_names(meta) != _output_channels(rdf):
        raise ValueError(f"{where}: its output channels {_output_channels(rdf)} do not match "
                         f"the recorded classes {list(meta.class_names)}")
    return model.to(device).eval(), meta


# -- the steps -------------------------------------------------------------------------------
def _read_rdf(package: _Package) -> dict[str, Any]:
    data = package.read(package.rdf_name, "the description", MAX_RDF_BYTES)
    try:
        rdf = yaml.safe_load(data)
    except yaml.YAMLError as err:
        raise ValueError(f"{package._where()}: {package.rdf_name} is not valid YAML: "
                         f"{str(err).splitlines()[0]}") from None
    if not isinstance(rdf, dict):
        raise ValueError(f"{package._where()}: {package.rdf_name} is not a description "
                         "(no key: value mapping)")
    return rdf


def _check_model_rdf(rdf: Mapping[str, Any], where: str) -> None:
    kind = rdf.get("type")
    if kind != "model":
        raise ValueError(f"{where} is not a bioimage.io model (type: {kind!r})")
    version = str(rdf.get("format_version", ""))
    if not version.startswith("0.5"):
        raise ValueError(f"{where} uses model format {version!r}; napari-unet reads format 0.5 "
                         "(bioimageio.spec can update older packages)")


def _our_config(rdf: Mapping[str, Any], where: str) -> dict[str, Any]:
    config = rdf.get("config")
    ours = config.get("napari_unet") if isinstance(config, dict) else None
    if not isinstance(ours, dict) or ours.get("format") != PACKAGE_FORMAT:
        weights = rdf.get("weights")
        formats = ", ".join(sorted(map(str, weights))) if isinstance(weights, dict) else ""
        formats = formats or "none"
        raise ValueError(
            f"{where} was not made by napari-unet (weights: {formats}). napari-unet loads only "
            "its own packages: rebuilding another program's net means running the Python code "
            "that comes with the package, which napari-unet never does")
    version = ours.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) \
            or version > PACKAGE_FORMAT_VERSION:
        raise ValueError(f"{where} was written by a newer napari-unet (package format "
                         f"{version!r}; this one reads up to {PACKAGE_FORMAT_VERSION}): "
                         "please upgrade napari-unet")
    return ours


def _axes(tensor: Mapping[str, Any]) -> list[str]:
    """Axis ids of a 0.5 tensor description (batch/channel/index by type, space/time by id)."""
    axes = tensor.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
        return []
    return [str(a.get("id") or a.get("type")) if a.get("type") in ("space", "time")
            else str(a.get("type")) for a in axes]


def _check_io(rdf: Mapping[str, Any], ours: Mapping[str, Any], where: str) -> tuple[int, int]:
    inputs, outputs = rdf.get("inputs"), rdf.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) \
            or not all(isinstance(t, dict) for t in inputs + outputs):
        raise ValueError(f"{where} describes no inputs/outputs")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{where} has {len(inputs)} input(s) and {len(outputs)} output(s); "
                         "napari-unet runs models with one input image and one output")
    expected = ["batch", "channel", "y", "x"]
    for kind, tensor in (("input", inputs[0]), ("output", outputs[0])):
        axes = _axes(tensor)
        if "z" in axes:
            raise ValueError(f"{where} is a 3D model ({kind} axes {', '.join(axes)}); "
                             "napari-unet runs 2D models")
        if axes != expected:
            raise ValueError(f"{where}: its {kind} axes are ({', '.join(axes)}) but the "
                             f"napari-unet net takes ({', '.join(expected)}); the description "
                             "was changed after export")
    arch = ours.get("architecture")
    if not isinstance(arch, dict):
        raise ValueError(f"{where}: napari-unet metadata without an architecture")
    in_ch = _channel_count(inputs[0])
    out_ch = len(_output_channels(rdf))
    if in_ch != arch.get("in_channels") or out_ch != arch.get("num_classes"):
        raise ValueError(f"{where}: its tensors have {in_ch} input and {out_ch} output "
                         f"channels but the recorded net has {arch.get('in_channels')} and "
                         f"{arch.get('num_classes')}")
    return in_ch, out_ch


def _listed(value: Any) -> list[Any]:
    """``value`` when it is a list, else nothing (a malformed field lists nothing)."""
    return value if isinstance(value, list) else []


def _channel_count(tensor: Mapping[str, Any]) -> int:
    for axis in _listed(tensor.get("axes")):
        if isinstance(axis, dict) and axis.get("type") == "channel":
            names = axis.get("channel_names")
            return len(names) if isinstance(names, list) else -1
    return -1


def _output_channels(rdf: Mapping[str, Any]) -> list[str]:
    for axis in _listed(rdf["outputs"][0].get("axes")):
        if isinstance(axis, dict) and axis.get("type") == "channel":
            names = axis.get("channel_names")
            return [str(n) for n in names] if isinstance(names, list) else []
    return []


def _normalization(tensor: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The input's preprocessing as napari-unet's normalisation spec."""
    steps = tensor.get("preprocessing") or []
    if not isinstance(steps, list):
        raise ValueError(f"{where}: preprocessing must be a list")
    found: dict[str, Any] = {"method": "none"}
    for i, step in enumerate(steps):
        name = step.get("id") if isinstance(step, dict) else None
        kwargs = (step.get("kwargs") or {}) if isinstance(step, dict) else {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where}: its rdf field inputs[0].preprocessing[{i}].kwargs must "
                             f"be a mapping (key: value), not {_kind(kwargs)}")
        if name == "ensure_dtype" and kwargs.get("dtype") == "float32":
            continue
        if name == "scale_range" and found["method"] == "none":
            axes = kwargs.get("axes")
            if axes is not None and not isinstance(axes, list):
                raise ValueError(f"{where}: its rdf field inputs[0].preprocessing[{i}].kwargs."
                                 f"axes must be a list of axis names, not {_kind(axes)}")
            if axes is None or sorted(map(str, axes)) != ["x", "y"] \
                    or kwargs.get("reference_tensor") not in (None, tensor.get("id")):
                raise ValueError(f"{where}: scale_range over axes {axes} is not the per-image, "
                                 "per-channel normalisation napari-unet applies (axes y, x)")
            found = {"method": "percentile", "low": kwargs.get("min_percentile", 0.0),
                     "high": kwargs.get("max_percentile", 100.0)}
            continue
        raise ValueError(f"{where}: preprocessing step {name!r} is not one napari-unet "
                         "reproduces (it knows percentile scale_range over y, x)")
    return found


def _build(ours: Mapping[str, Any], rdf: Mapping[str, Any], where: str,
           in_channels: int, num_classes: int) -> UNet:
    arch = dict(ours["architecture"])
    weights = rdf.get("weights")
    if not isinstance(weights, dict):
        raise ValueError(f"{where}: its rdf field weights must be a mapping of weight formats, "
                         f"not {_kind(weights)}")
    entry = weights.get("pytorch_state_dict")
    if not isinstance(entry, dict):
        raise ValueError(f"{where} has no pytorch_state_dict weights")
    architecture = entry.get("architecture") or {}
    if not isinstance(architecture, dict):
        raise ValueError(f"{where}: its rdf field weights.pytorch_state_dict.architecture must "
                         f"be a mapping (key: value), not {_kind(architecture)}")
    kwargs = architecture.get("kwargs")
    if kwargs != arch:
        raise ValueError(f"{where}: the architecture of its weights ({kwargs}) is not the one "
                         f"napari-unet recorded ({arch})")
    try:
        return UNet.from_config(arch)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad architecture: {err}") from None


def _read_weights(package: _Package, rdf: Mapping[str, Any], where: str) -> dict[str, Any]:
    entry = rdf["weights"]["pytorch_state_dict"]
    data = package.read(entry.get("source"), "the weights", MAX_WEIGHTS_BYTES)
    expected = entry.get("sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != str(expected).lower():
        raise ValueError(f"{where}: its weights file does not match its sha256 (corrupt or "
                         "changed)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch's unpickler raises many types for foreign bytes
        # (UnpicklingError, RuntimeError, EOFError, IndexError "pop from empty list" found by
        # fuzzing, ...); its own message suggests weights_only=False: never for such a file
        raise ValueError(f"{where}: cannot read its weights: {entry.get('source')!r} is not a "
                         "safe weights file (PyTorch tensors only); napari-unet never runs "
                         "code stored in one") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"{where}: its weights are not a state_dict of tensors")
    return state


def _kind(value: Any) -> str:
    """What a malformed field holds, in words."""
    names = {str: "a text", int: "a number", float: "a number", bool: "true/false",
             list: "a list", dict: "a mapping", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


__all__ = ["RDF_NAMES", "is_bioimageio_package", "load_bioimageio_package"]
