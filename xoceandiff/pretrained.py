"""The pretrained denoisers shipped inside the package.

Nothing is downloaded: the checkpoints lie in ``xoceandiff/data/pretrained/``, one folder per configuration
(:data:`BUNDLED_CONFIGS`): ``dino`` trained on the embedded DINO-like data, ``gyre`` on five-day means of
NEMO 5.0's GYRE reference configuration. Each ``config.json`` records the ``xoceandiff train`` command, seed,
steps and final loss that made it; each weights file carries its grid, so sampling needs no data file.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
import xarray as xr

from .card import ModelCard
from .checkpoint import read_model_config
from .errors import CheckpointError, GridMismatchError, InvalidDataError
from .model import Denoiser, load_model

__all__ = [
    "BUNDLED_RESOLUTION",
    "BUNDLED_CONFIGS",
    "bundled_checkpoint",
    "bundled_card",
    "bundled_model",
    "bundled_model_fits",
    "reference_for",
]

BUNDLED_RESOLUTION = 4.0  # degrees: xoceandiff.datasets.dino(resolution=BUNDLED_RESOLUTION)
BUNDLED_CONFIGS: dict[str, str] = {"dino": "dino4", "gyre": "gyre"}
"""Configuration name -> folder of its bundled checkpoint."""


def bundled_checkpoint(config: str = "dino") -> Path:
    """Path of the bundled checkpoint folder of ``config`` (:data:`BUNDLED_CONFIGS`)."""
    if config not in BUNDLED_CONFIGS:
        raise InvalidDataError(f"config: expected one of {sorted(BUNDLED_CONFIGS)}, found {config!r}.")
    folder = BUNDLED_CONFIGS[config]
    path = Path(str(resources.files("xoceandiff").joinpath("data").joinpath("pretrained").joinpath(folder)))
    if not (path / "config.json").exists():
        raise CheckpointError(
            f"The bundled checkpoint is missing from {str(path)!r}: the installation is incomplete. "
            "Reinstall xoceandiff, or pass model= a checkpoint of your own."
        )
    return path


def bundled_model(device: str | torch.device | None = None, config: str = "dino") -> Denoiser:
    """The bundled pretrained denoiser of ``config`` (``"dino"``: for
    ``xoceandiff.datasets.dino(resolution=BUNDLED_RESOLUTION)``; ``"gyre"``: NEMO's GYRE, 32 x 22 x 31)."""
    return load_model(bundled_checkpoint(config), device=device)


def bundled_card(config: str = "dino") -> ModelCard:
    """The bundled model's card, read from its config.json without loading the weights."""
    return ModelCard.from_metadata(read_model_config(bundled_checkpoint(config))["metadata"])


def bundled_model_fits(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is on the bundled model's grid (same shape and land-sea mask).

    Examples
    --------
    >>> import xoceandiff
    >>> bundled_model_fits(xoceandiff.datasets.dino(n=1, resolution=BUNDLED_RESOLUTION))
    True
    >>> bundled_model_fits(xoceandiff.datasets.dino(n=1, resolution=5.0))
    False
    """
    try:
        bundled_card().check_grid(ds)
    except (CheckpointError, GridMismatchError):
        return False
    return True


def reference_for(model: Denoiser, *, n: int = 1, seed: int | None = None) -> xr.Dataset:
    """The embedded dataset a model was trained on, rebuilt from the provenance its checkpoint records.

    Training records the dataset's ``dino_resolution`` and ``dino_seed`` (``model.card.dataset``) when
    it was :func:`xoceandiff.datasets.dino`; this returns that dataset, on the model's grid.

    Parameters
    ----------
    model : xoceandiff.model.Denoiser
        A loaded model.
    n : int, default 1
        Snapshots of the dataset (one is enough for a grid).
    seed : int, optional
        Its seed; default the recorded one.

    Raises
    ------
    CheckpointError
        The model was not trained on the embedded dataset (or records no provenance): pass the
        data it was trained on instead (on the command line ``--data FILES --mesh-mask FILE``).

    Examples
    --------
    >>> reference_for(bundled_model()).attrs["dino_resolution"] == BUNDLED_RESOLUTION
    True
    """
    from .datasets import dino

    card = model.card
    provenance = dict(card.dataset) if card is not None else {}
    if "dino_resolution" not in provenance:
        raise CheckpointError(
            "model: expected a checkpoint trained on the embedded DINO-like data (a dataset record with "
            f"dino_resolution), found the dataset record {provenance or 'none'}; pass the data the model was "
            "trained on with their mesh mask (on the command line --data/--reference FILES --mesh-mask FILE)."
        )
    recorded_seed = int(provenance.get("dino_seed", 0))
    ds = dino(n=n, resolution=float(provenance["dino_resolution"]), seed=recorded_seed if seed is None else seed)
    if card is not None:
        card.check_grid(ds)  # the recorded provenance must describe the model's own grid
    return ds


def grid_for(model: Denoiser, mesh_mask: str | os.PathLike | None = None) -> xr.Dataset:
    """The grid to sample ``model`` on: ``mesh_mask`` if given, else the grid its checkpoint carries.

    Checkpoints written before models carried their grid fall back on the embedded dataset they were
    trained on (:func:`reference_for`). The grid is checked against the model's fingerprint.

    Raises
    ------
    CheckpointError
        No mesh_mask, no grid in the checkpoint and no embedded-dataset provenance.
    GridMismatchError
        The mesh_mask is not the model's grid (shape or land-sea mask).

    Examples
    --------
    >>> import xoceandiff
    >>> grid_for(bundled_model()).sizes["z_c"]
    36
    """
    from .nemo import open_grid

    card = model.card
    if mesh_mask is not None:
        grid = open_grid(mesh_mask)
    elif card is not None and card.grid is not None:
        grid = card.grid
    else:
        grid = reference_for(model)
    if card is not None:
        card.check_grid(grid)
    return grid
