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

from .canonical import (
    GRID_KIT,
    SalinityKind,
    X,
    Y,
    Z,
    cell_area,
    grid_from_kit,
    ocean_mask,
    record_dim,
    salinity_kind,
)
from .canonical import grid_kit as kit_of
from .errors import CheckpointError, InvalidDataError, XOceanDiffError
from .layout import Layout, check_fingerprint, grid_fingerprint
from .normalisation import Normaliser, statistics

__all__ = ["ModelCard", "CARD_KEYS", "PROVENANCE_ATTRS", "MAX_RECORD_MEANS"]

CARD_KEYS = ("layout", "normalisation", "variables", "grid", "area_weighted_means", "periodic_x", "dataset",
             "training", "salinity", "training_range")
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
    salinity : {"absolute", "practical"}
        The kind of salinity the model was trained on (TEOS-10 or EOS-80 runs); samples carry it.
    training_min, training_max : mapping of str to tuple of float, or None
        Per field and level, the smallest and largest ocean value of the training data (NaN on land-only
        levels): samples far outside are refused before they become restarts.
    grid_kit : mapping of str to numpy.ndarray, or None
        The grid variables of :data:`xoceandiff.canonical.GRID_KIT` (saved with the weights), so that the
        model can sample on its grid with no data file; None for checkpoints written before they were kept.
    record_means : mapping of str to numpy.ndarray, or None
        Area-weighted level means of up to :data:`MAX_RECORD_MEANS` training records, evenly spaced over
        the set: per field an array ``(records, levels)`` (``ssh``: ``(records, 1)``; NaN on land-only
        levels), and ``"record"``, their indices in the training set. The targets of
        ``level_means="records"`` (each sample's mean constraints drive to one record's profile); saved
        with the weights; None for checkpoints written before they were kept.

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
    salinity: SalinityKind = "absolute"
    training_min: Mapping[str, tuple[float, ...]] | None = None
    training_max: Mapping[str, tuple[float, ...]] | None = None
    grid_kit: Mapping[str, np.ndarray] | None = None
    record_means: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", _frozen(self.dataset))
        object.__setattr__(self, "training", _frozen(self.training))
        if self.salinity not in ("absolute", "practical"):
            raise InvalidDataError(f"salinity: expected 'absolute' or 'practical', found {self.salinity!r}.")
        for name in ("training_means", "training_min", "training_max"):
            table = getattr(self, name)
            if table is not None:
                values = {key: tuple(float(v) for v in level_values) for key, level_values in table.items()}
                object.__setattr__(self, name, ReadOnlyMapping(values))
        if self.grid_kit is not None:
            missing = [name for name in GRID_KIT if name not in self.grid_kit]
            if missing:
                raise CheckpointError(f"grid_kit: the model's grid lacks {missing}; expected {list(GRID_KIT)}.")
            object.__setattr__(self, "grid_kit", ReadOnlyMapping({k: np.asarray(self.grid_kit[k]) for k in GRID_KIT}))
        if self.record_means is not None:
            object.__setattr__(self, "record_means", _checked_record_means(self.record_means, self.layout))

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
        layout = Layout.from_dataset(ds, levels=levels)
        stats, area_means, record_means = dask.compute(stats, area_means, _record_means(ds, layout.fields))
        fingerprint = grid_fingerprint(ds)
        return cls(
            layout=layout,
            normaliser=Normaliser.from_statistics(stats, scheme=scheme),
            grid_shape=tuple(fingerprint["shape"]),
            mask_sha256=fingerprint["mask_sha256"],
            training_means=_per_level(area_means, layout.fields, "mean"),
            periodic_x=bool(int(ds.attrs.get("Iperio", 0))),
            dataset={k: ds.attrs[k] for k in PROVENANCE_ATTRS if k in ds.attrs},
            salinity=salinity_kind(ds),
            training_min=_per_level(stats, layout.fields, "min"),
            training_max=_per_level(stats, layout.fields, "max"),
            grid_kit=kit_of(ds),
            record_means=record_means,
        )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], grid_kit: Mapping[str, Any] | None = None,
                      record_means: Mapping[str, Any] | None = None) -> ModelCard:
        """The card recorded in a checkpoint's metadata (the inverse of :meth:`to_metadata`).

        ``grid_kit`` and ``record_means`` hold the arrays saved beside the weights (:meth:`grid_tensors`), if any.

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
        ranges = metadata.get("training_range") or {}
        return cls(
            layout=layout,
            normaliser=normaliser,
            grid_shape=shape,
            mask_sha256=mask,
            training_means=_from_json(means),
            periodic_x=bool(metadata.get("periodic_x", 0)),
            dataset=metadata.get("dataset") or {},
            training=metadata.get("training") or {},
            salinity=metadata.get("salinity", "absolute"),
            training_min=_from_json(ranges.get("min")),
            training_max=_from_json(ranges.get("max")),
            grid_kit=None if grid_kit is None else {k: np.asarray(v) for k, v in grid_kit.items()},
            record_means=None if not record_means else {k: np.asarray(v) for k, v in record_means.items()},
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

    @property
    def grid(self) -> xr.Dataset | None:
        """The model's grid as a canonical dataset (coordinates only), or None when the card has no grid kit.

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> card = ModelCard.from_dataset(ds)
        >>> card.check_grid(card.grid)  # the grid it carries is the one it was made for
        >>> dict(card.grid.sizes)["z_c"], card.grid.attrs["Iperio"]
        (36, 1)
        """
        if self.grid_kit is None:
            return None
        return grid_from_kit(self.grid_kit, periodic_x=self.periodic_x)

    def grid_tensors(self) -> dict[str, Any]:
        """The grid kit and the record means as tensors to save beside the weights (``grid.<name>``,
        ``record_means.<name>``); empty without them."""
        import torch

        tensors = {}
        for prefix, table in (("grid", self.grid_kit), ("record_means", self.record_means)):
            for name, values in (table or {}).items():
                tensors[f"{prefix}.{name}"] = torch.from_numpy(np.ascontiguousarray(values))
        return tensors

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
            "area_weighted_means": _to_json(self.training_means),
            "periodic_x": int(self.periodic_x),
            "dataset": dict(self.dataset),
            "training": json.loads(json.dumps(dict(self.training))),
            "salinity": self.salinity,
            "training_range": {"min": _to_json(self.training_min), "max": _to_json(self.training_max)},
        }


MAX_RECORD_MEANS = 144
"""Most training records whose level means a card keeps (evenly spaced; GYRE's 576 5-day means: every 4th)."""


def _record_means(ds: xr.Dataset, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """Lazy area-weighted level means of up to :data:`MAX_RECORD_MEANS` evenly spaced records (None without records)."""
    rdim = record_dim(ds, required=False)
    if rdim is None:
        return None
    count = ds.sizes[rdim]
    chosen = np.unique(np.linspace(0, count - 1, min(count, MAX_RECORD_MEANS)).round().astype(np.int64))
    area = cell_area(ds)
    out: dict[str, Any] = {"record": chosen}
    for name in fields:
        weights = area * ocean_mask(ds, name)
        field = ds[name].isel({rdim: chosen}).astype(np.float64)
        means = (field.where(weights > 0) * weights).sum((Y, X)) / weights.sum((Y, X)).where(lambda w: w > 0)
        means = means.transpose(rdim, ...)
        out[name] = (means.data if Z in means.dims else means.data[:, None]).astype(np.float64)
    try:  # the records' day of the year and time in the run, for conditional sampling's targets
        from .conditions import record_conditions

        values = record_conditions(ds.isel({rdim: chosen}), ["day_of_year", "run_time"])[1]
        out.update({name: np.asarray(v, dtype=np.float64) for name, v in values.items()})
    except XOceanDiffError:  # records without dates: no conditional targets
        pass
    for key in ds.coords:  # parameters of the runs (conditions.parameter_values)
        if str(key).startswith("condition_") and ds[key].dims == (rdim,):
            out[str(key)[len("condition_"):]] = np.asarray(ds[key].values[chosen], dtype=np.float64)
    return out


def _checked_record_means(table: Mapping[str, Any], layout: Layout) -> ReadOnlyMapping:
    """The record means as read-only numpy arrays, checked against the layout's fields and levels."""
    values = {key: np.asarray(value) for key, value in table.items()}
    if "record" not in values:
        raise CheckpointError("record_means: no 'record' (the indices of the records in the training set).")
    count = values["record"].size
    for name in layout.fields:
        levels = layout.n_levels if layout.three_dimensional(name) else 1
        if name not in values or values[name].shape != (count, levels):
            found = values[name].shape if name in values else "nothing"
            raise CheckpointError(f"record_means: expected {name} of shape ({count}, {levels}), found {found}.")
    return ReadOnlyMapping(values)


def _per_level(stats: xr.Dataset, fields: tuple[str, ...], statistic: str) -> dict[str, tuple[float, ...]]:
    """``{field: (value per level, ...)}`` of one statistic of a computed statistics Dataset."""
    return {
        name: tuple(np.atleast_1d(np.asarray(stats[f"{name}_{statistic}"].values, dtype=np.float64)))
        for name in fields
    }


def _to_json(table: Mapping[str, tuple[float, ...]] | None) -> dict[str, list[float | None]] | None:
    """Per-level values as JSON lists (NaN -> None)."""
    if table is None:
        return None
    return {name: [None if not np.isfinite(v) else float(v) for v in values] for name, values in table.items()}


def _from_json(table: Mapping[str, Any] | None) -> dict[str, tuple[float, ...]] | None:
    """The inverse of :func:`_to_json` (None -> NaN)."""
    if not table:
        return None
    return {name: tuple(float("nan") if v is None else float(v) for v in values) for name, values in table.items()}
