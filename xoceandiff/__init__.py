"""xoceandiff: xarray-native diffusion models that generate NEMO ocean states.

``import xoceandiff`` registers the ``.oceandiff`` accessor on :class:`xarray.Dataset`. Every other module
(datasets, open_nemo, and those that need torch: model, training, sampling, ...) is imported on first use,
so that the command line answers a bad call at once and opening data stays quick.
"""

from __future__ import annotations

import importlib

from . import errors
from .accessor import OceanDiffAccessor
from .version import __version__

_SUBMODULES = (
    "datasets", "eos", "cli", "constraints", "conventions", "demo", "diagnostics", "fidelity", "grid", "gridops", "io", "layout", "model",
    "nemo", "normalisation", "parallel", "plotting", "pretrained", "report", "restart", "sampling", "training",
    "restart_format", "restart_check", "dynamics", "ranks", "atomic", "canonical", "card", "checkpoint", "version",
    "convection",
)


def __getattr__(name: str):
    # PEP 562: xoceandiff.report, xoceandiff.training, ... without importing torch at start-up.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "open_nemo":  # xnemogcm and dask load with it, not with the package (a quick CLI)
        from .nemo import open_nemo

        return open_nemo
    if name == "load_model":
        from .model import load_model

        return load_model
    raise AttributeError(f"module 'xoceandiff' has no attribute {name!r}")


__all__ = ["__version__", "open_nemo", "load_model", "errors", "OceanDiffAccessor", *_SUBMODULES]
