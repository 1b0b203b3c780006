"""BioImage Model Zoo in and out: export a model as a bioimage.io package, load one back.

Export (``bioimageio``) and loading (``package``) need only torch, numpy and PyYAML; the
optional ``[bioimageio]`` extra (bioimageio.core) is used by the tests to validate packages.
"""

from .bioimageio import ExportConfig, export_bioimageio
from .package import is_bioimageio_package, load_bioimageio_package

__all__ = ["ExportConfig", "export_bioimageio", "is_bioimageio_package",
           "load_bioimageio_package"]
