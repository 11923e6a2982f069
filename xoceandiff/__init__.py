"""xoceandiff: xarray-native diffusion models that generate NEMO ocean states.

``import xoceandiff`` registers the ``.oceandiff`` accessor on :class:`xarray.Dataset`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import datasets, eos, errors
from .accessor import OceanDiffAccessor
from .nemo import open_nemo

try:
    __version__ = _version("xoceandiff")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "open_nemo", "datasets", "eos", "errors", "OceanDiffAccessor"]
