"""The package version, from the installed distribution's metadata (a leaf: imports nothing of the package)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

__all__ = ["__version__"]

try:
    __version__ = _version("xoceandiff")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
