"""The pretrained denoiser shipped inside the package (trained on the embedded DINO-like data).

Nothing is downloaded: the checkpoint lies in ``xoceandiff/data/pretrained/``; its ``config.json``
records the ``xoceandiff train`` command, seed, steps and final loss that made it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import xarray as xr

from .errors import CheckpointError, GridMismatchError
from .layout import check_fingerprint
from .model import Denoiser, load_model

__all__ = ["BUNDLED_RESOLUTION", "bundled_checkpoint", "bundled_model", "bundled_model_fits"]

BUNDLED_RESOLUTION = 4.0  # degrees: xoceandiff.datasets.dino(resolution=BUNDLED_RESOLUTION)
_FOLDER = "dino4"


def bundled_checkpoint() -> Path:
    """Path of the bundled checkpoint folder."""
    path = Path(str(resources.files("xoceandiff").joinpath("data").joinpath("pretrained").joinpath(_FOLDER)))
    if not (path / "config.json").exists():
        raise CheckpointError(
            f"The bundled checkpoint is missing from {str(path)!r}: the installation is incomplete. "
            "Reinstall xoceandiff, or pass model= a checkpoint of your own."
        )
    return path


def bundled_model(device: str | torch.device | None = None) -> Denoiser:
    """The bundled pretrained denoiser (for ``xoceandiff.datasets.dino(resolution=BUNDLED_RESOLUTION)``)."""
    return load_model(bundled_checkpoint(), device=device)


def bundled_model_fits(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is on the bundled model's grid (same shape and land-sea mask)."""
    import json

    try:
        config = json.loads((bundled_checkpoint() / "config.json").read_text())
        check_fingerprint(config["metadata"]["grid"], ds)
    except (CheckpointError, GridMismatchError, KeyError):
        return False
    return True
