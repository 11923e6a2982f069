"""xoceandiff: xarray-native diffusion models that generate NEMO ocean states.

``import xoceandiff`` registers the ``.oceandiff`` accessor on :class:`xarray.Dataset`. The modules that
need torch (model, training, sampling, ...) are imported on first use, so that opening data stays quick.
"""

from __future__ import annotations

import importlib

from . import datasets, eos, errors
from .accessor import OceanDiffAccessor
from .nemo import open_nemo
from .version import __version__

_SUBMODULES = (
    "cli", "constraints", "conventions", "demo", "diagnostics", "grid", "gridops", "io", "layout", "model",
    "nemo", "normalisation", "parallel", "plotting", "pretrained", "report", "restart", "sampling", "training",
    "restart_format", "restart_check", "dynamics", "ranks", "atomic", "canonical", "card", "checkpoint", "version",
)


def __getattr__(name: str):
    # PEP 562: xoceandiff.report, xoceandiff.training, ... without importing torch at start-up.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "load_model":
        from .model import load_model

        return load_model
    raise AttributeError(f"module 'xoceandiff' has no attribute {name!r}")


__all__ = ["__version__", "open_nemo", "load_model", "datasets", "eos", "errors", "OceanDiffAccessor", *_SUBMODULES]
