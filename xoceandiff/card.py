"""The model card: everything that turns a trained network's tensors back into ocean states.

A :class:`ModelCard` is built once, when a model is prepared for a dataset (:func:`ModelCard.from_dataset`)
or loaded from a checkpoint (:meth:`ModelCard.from_metadata`), and hangs on the denoiser as
``model.card``. It is frozen: training replaces it (:meth:`ModelCard.with_training`) instead of editing it.
Every reader (sampling, the dask layer, training, the CLI) uses its typed fields; nothing else parses
the checkpoint's JSON.

What it holds: the :class:`~xoceandiff.layout.Layout` (fields, kept levels, padding), the
:class:`~xoceandiff.normalisation.Normaliser`, the grid fingerprint (shape and land-sea mask hash), the
training data's area-weighted level means (targets of the mean constraints), whether X is periodic, the
dataset's provenance and the training record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import dask
import numpy as np
import xarray as xr

from .errors import CheckpointError, InvalidDataError
from .layout import Layout, check_fingerprint, grid_fingerprint
from .normalisation import Normaliser, statistics

__all__ = ["ModelCard", "CARD_KEYS", "PROVENANCE_ATTRS"]

CARD_KEYS = ("layout", "normalisation", "variables", "grid", "area_weighted_means", "periodic_x", "dataset",
             "training")
"""The checkpoint metadata entries the card owns (the rest of ``metadata`` is free)."""

PROVENANCE_ATTRS = ("title", "source", "dino_resolution", "dino_seed")
"""Global attributes of the training data recorded as its provenance."""


class ReadOnlyMapping(Mapping):
    """A read-only mapping that pickles (a card travels to dask workers inside the model)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only, JSON-clean copy (what a save and a load would give back)."""
    return ReadOnlyMapping(json.loads(json.dumps(dict(value or {}), allow_nan=False, default=_plain)))


def _plain(value: Any) -> Any:
    # numpy scalars and arrays from dataset attributes
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass(frozen=True, eq=False)
class ModelCard:
    """What a trained denoiser is for: layout, normalisation, grid and training facts (frozen).

    Attributes
    ----------
    layout : Layout
        Fields, kept levels and padding of the tensors.
    normaliser : Normaliser
        Offsets and scales of the normalisation.
    grid_shape : tuple of int
        ``(nz, ny, nx)`` of the grid trained on.
    mask_sha256 : str
        sha256 of its land-sea mask (see :func:`xoceandiff.layout.grid_fingerprint`).
    training_means : mapping of str to tuple of float, or None
        Area-weighted level means of the training data per field (NaN on land-only levels).
    periodic_x : bool
        Whether X is periodic (NEMO's ``Iperio = 1``).
    dataset : mapping
        Provenance of the training data (title, source, and for the embedded data its resolution and seed).
    training : mapping
        The training record (steps, seed, losses, command, ...); empty before training.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> card = ModelCard.from_dataset(ds)
    >>> card.layout.channels, card.grid_shape, card.dataset["dino_resolution"]
    (37, (36, 51, 17), 4.0)
    >>> ModelCard.from_metadata(card.to_metadata()).to_metadata() == card.to_metadata()
    True
    """

    layout: Layout
    normaliser: Normaliser
    grid_shape: tuple[int, int, int]
    mask_sha256: str
    training_means: Mapping[str, tuple[float, ...]] | None = None
    periodic_x: bool = False
    dataset: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", _frozen(self.dataset))
        object.__setattr__(self, "training", _frozen(self.training))
        if self.training_means is not None:
            means = {name: tuple(float(v) for v in values) for name, values in self.training_means.items()}
            object.__setattr__(self, "training_means", ReadOnlyMapping(means))

    def __deepcopy__(self, memo: dict) -> ModelCard:
        return self  # immutable: copies of a model share their card

    # -- building ------------------------------------------------------------------------------------

    @classmethod
    def from_dataset(
        cls,
        ds: xr.Dataset,
        *,
        levels: str | tuple[int, ...] | list[int] = "every-other",
        scheme: str = "3-std",
        stats: xr.Dataset | None = None,
        weighted: bool = False,
        stats_method: str = "pooled",
    ) -> ModelCard:
        """The card of a new model for ``ds``: statistics in one dask pass, layout, fingerprint, provenance."""
        if stats is None:
            stats = statistics(ds, weighted=weighted, method=stats_method)
        # The mean constraints drive area-weighted level means (method.md), whatever the weighting of the
        # normalisation statistics.
        area_means = stats if weighted else statistics(ds, weighted=True)
        stats, area_means = dask.compute(stats, area_means)
        layout = Layout.from_dataset(ds, levels=levels)
        fingerprint = grid_fingerprint(ds)
        return cls(
            layout=layout,
            normaliser=Normaliser.from_statistics(stats, scheme=scheme),
            grid_shape=tuple(fingerprint["shape"]),
            mask_sha256=fingerprint["mask_sha256"],
            training_means={
                name: tuple(np.atleast_1d(np.asarray(area_means[f"{name}_mean"].values, dtype=np.float64)))
                for name in layout.fields
            },
            periodic_x=bool(int(ds.attrs.get("Iperio", 0))),
            dataset={k: ds.attrs[k] for k in PROVENANCE_ATTRS if k in ds.attrs},
        )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelCard:
        """The card recorded in a checkpoint's metadata (the inverse of :meth:`to_metadata`).

        Raises
        ------
        xoceandiff.errors.CheckpointError
            The metadata has no layout / normalisation / grid, or they do not parse.
        """
        missing = [key for key in ("layout", "normalisation", "grid") if key not in metadata]
        if missing:
            raise CheckpointError(
                f"model metadata: no {missing} (found {sorted(metadata)}); the model was not prepared by "
                "xoceandiff for a dataset. Train it with xoceandiff.training.train (or prepare_model)."
            )
        try:
            layout = Layout.from_dict(metadata["layout"])
            normaliser = Normaliser.from_dict(metadata["normalisation"])
            grid = metadata["grid"]
            shape = tuple(int(n) for n in grid["shape"])
            mask = str(grid["mask_sha256"])
        except (InvalidDataError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"model metadata: the layout, normalisation or grid does not parse: {error}") from error
        means = metadata.get("area_weighted_means")
        return cls(
            layout=layout,
            normaliser=normaliser,
            grid_shape=shape,
            mask_sha256=mask,
            training_means=None if not means else {
                name: tuple(float("nan") if v is None else float(v) for v in values) for name, values in means.items()
            },
            periodic_x=bool(metadata.get("periodic_x", 0)),
            dataset=metadata.get("dataset") or {},
            training=metadata.get("training") or {},
        )

    def with_training(self, record: Mapping[str, Any]) -> ModelCard:
        """A copy of the card with the training record ``record``."""
        return replace(self, training=record)

    # -- reading -------------------------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """The canonical fields the model generates, in channel order."""
        return self.layout.fields

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The grid fingerprint as :func:`xoceandiff.layout.grid_fingerprint` gives it."""
        return {"shape": list(self.grid_shape), "mask_sha256": self.mask_sha256}

    def check_grid(self, ds: xr.Dataset) -> None:
        """Raise :class:`~xoceandiff.errors.GridMismatchError` unless ``ds`` is on the model's grid."""
        check_fingerprint(self.fingerprint, ds)

    def to_metadata(self) -> dict[str, Any]:
        """The JSON form stored in a checkpoint's ``metadata`` (the entries of :data:`CARD_KEYS`)."""
        return {
            "layout": self.layout.to_dict(),
            "normalisation": self.normaliser.to_dict(),
            "variables": list(self.layout.fields),
            "grid": self.fingerprint,
            "area_weighted_means": None if self.training_means is None else {
                name: [None if not np.isfinite(v) else float(v) for v in values]
                for name, values in self.training_means.items()
            },
            "periodic_x": int(self.periodic_x),
            "dataset": dict(self.dataset),
            "training": json.loads(json.dumps(dict(self.training))),
        }
