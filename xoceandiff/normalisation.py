"""Training-set statistics and the normalisation schemes of xoceandiff, with their exact inverses.

:func:`statistics` reduces a whole dataset (any number of records, on disk or generated lazily) to the
per-level mean, standard deviation, minimum and maximum of each field over all records and ocean cells,
as one dask graph: every chunk is read once, cast to float64 and reduced to a few numbers per level
(means and centred second moments, combined pairwise as in Chan et al. 1979, so that no precision is
lost to cancellation), so memory stays bounded by a few chunks whatever the number of records.

A :class:`Normaliser` holds, per field and per level, an ``offset`` and a ``scale`` such that
``normalised = (x - offset) / scale``; the schemes of the reference (``std``, ``3-std``, ``7-std``,
``min-max``, ``global-min-max``) differ only in how they are derived from the statistics.
:func:`normalise` and :func:`denormalise` are lazy xarray arithmetic and exact inverses of each other.

This module knows nothing of torch.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from .canonical import (
    SPATIAL_DIMS,
    Z,
    cell_area,
    field_dims,
    fields_of,
    ocean_mask,
    stamp_history,
)
from .conventions import FIELD_NAMES, FIELDS
from .errors import GridMismatchError, InvalidDataError, MissingVariableError

__all__ = [
    "statistics",
    "Normaliser",
    "normalise",
    "denormalise",
    "SCHEMES",
    "STATISTICS_METHODS",
]

SCHEMES: tuple[str, ...] = ("std", "3-std", "7-std", "<alpha>-std", "min-max", "global-min-max")
"""Valid normalisation schemes; ``"<alpha>-std"`` stands for any positive number, e.g. ``"2.5-std"``."""
STATISTICS_METHODS: tuple[str, ...] = ("pooled", "per-snapshot")

_ALPHA_STD = re.compile(r"^(?P<alpha>\d+(\.\d*)?|\.\d+)-std$")
_STATS = ("mean", "std", "min", "max")
_SPLIT_EVERY = 8  # partials merged per task


# --- per-chunk partial statistics and how they combine ---------------------------------------------
#
# The data are reduced record chunk by record chunk: one task takes the chunk of every field (so a chunk
# of a lazily generated or read dataset is consumed at once and released) and returns small partial
# statistics per level; partials are merged in a tree. Pooled means and second moments merge with
# Chan et al.'s (1979) pairwise update, which loses nothing to cancellation (salinity ~35 with a
# spread of 0.01); per-snapshot means and standard deviations are summed with their record counts.


def _chunk_partials(
    blocks: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], method: str
) -> dict[str, dict[str, np.ndarray]]:
    """Partial statistics of one record chunk; each block is (records, [z,] y, x), weights ([z,] y, x)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, block in blocks.items():
        x = np.asarray(block, dtype=np.float64)
        w = np.broadcast_to(np.asarray(weights[name], dtype=np.float64), x.shape)
        valid = ~np.isnan(x) & (w > 0)
        w = np.where(valid, w, 0.0)
        xv = np.where(valid, x, 0.0)
        part = {
            "min": np.where(valid, x, np.inf).min(axis=(0, -2, -1)),
            "max": np.where(valid, x, -np.inf).max(axis=(0, -2, -1)),
        }
        horizontal = (-2, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if method == "pooled":
                axes = (0, -2, -1)
                total = w.sum(axis=axes)
                mean = np.where(total > 0, (w * xv).sum(axis=axes) / total, 0.0)
                anomaly = xv - mean[..., None, None]
                part.update(w=total, m=mean, m2=(w * anomaly**2).sum(axis=axes))
            else:
                total = w.sum(axis=horizontal)  # (records, [z])
                mean = np.where(total > 0, (w * xv).sum(axis=horizontal) / total, 0.0)
                anomaly = xv - mean[..., None, None]
                std = np.sqrt(np.where(total > 0, (w * anomaly**2).sum(axis=horizontal) / total, 0.0))
                part.update(n=(total > 0).sum(axis=0), sum_mean=mean.sum(axis=0), sum_std=std.sum(axis=0))
        out[name] = part
    return out


def _combine_partials(parts: Sequence[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Merge partial statistics of disjoint sets of records."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in parts[0]:
        ps = [p[name] for p in parts]
        merged = {
            "min": np.min([p["min"] for p in ps], axis=0),
            "max": np.max([p["max"] for p in ps], axis=0),
        }
        if "w" in ps[0]:
            w = np.stack([p["w"] for p in ps])
            m = np.stack([p["m"] for p in ps])
            total = w.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(total > 0, (w * m).sum(axis=0) / total, 0.0)
            m2 = np.sum([p["m2"] for p in ps], axis=0) + (w * (m - mean) ** 2).sum(axis=0)
            merged.update(w=total, m=mean, m2=m2)
        else:
            for key in ("n", "sum_mean", "sum_std"):
                merged[key] = np.sum([p[key] for p in ps], axis=0)
        out[name] = merged
    return out


def _finalise(part: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Mean, std, min, max per field (NaN where there is no ocean)."""
    out = {}
    for name, p in part.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            if "w" in p:
                empty = p["w"] <= 0
                mean = p["m"]
                std = np.sqrt(p["m2"] / p["w"])
            else:
                empty = p["n"] == 0
                mean = p["sum_mean"] / p["n"]
                std = p["sum_std"] / p["n"]
        values = {"mean": mean, "std": std, "min": p["min"], "max": p["max"]}
        out[name] = {k: np.where(empty, np.nan, v).astype(np.float64) for k, v in values.items()}
    return out


# --- statistics ------------------------------------------------------------------------------------


def _fields_of(ds: xr.Dataset, fields: Iterable[str] | None) -> tuple[str, ...]:
    if fields is None:
        found = fields_of(ds)
        if not found:
            raise MissingVariableError(
                f"None of the canonical fields {list(FIELD_NAMES)} is in the dataset (found "
                f"{sorted(map(str, ds.data_vars))}). Open the data with xoceandiff.open_nemo or pass fields=."
            )
        return found
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    for name in fields:
        if name not in FIELDS:
            raise InvalidDataError(f"fields: {name!r} is not a canonical field; expected some of {list(FIELD_NAMES)}.")
        if name not in ds.data_vars:
            raise MissingVariableError(
                f"fields: {name!r} is not in the dataset (found {sorted(map(str, ds.data_vars))})."
            )
    return fields


def record_dims(da: xr.DataArray, dim: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The record dimensions of a field: ``dim`` if given, else every dimension that is not spatial.

    The several-dimension variant of :func:`xoceandiff.canonical.record_dim`: statistics reduce over all
    of them (e.g. ``member`` and ``t`` of an ensemble).

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> record_dims(ds.toce), record_dims(ds.ssh.rename(t="sample"))
    (('t',), ('sample',))
    """
    if dim is None:
        return tuple(str(d) for d in da.dims if d not in SPATIAL_DIMS)
    dims = (dim,) if isinstance(dim, str) else tuple(dim)
    for d in dims:
        if d not in da.dims:
            raise InvalidDataError(
                f"dim: {da.name!r} has no dimension {d!r}; its dimensions are {tuple(map(str, da.dims))}."
            )
    return dims


def _check_field_dims(da: xr.DataArray, name: str) -> tuple[str, ...]:
    spatial = field_dims(name)
    missing = [d for d in spatial if d not in da.dims]
    if missing:
        raise InvalidDataError(
            f"{name}: expected dimensions {spatial} (plus record dimensions), found {tuple(map(str, da.dims))}. "
            "Open the data with xoceandiff.open_nemo to get the canonical dimensions."
        )
    return spatial


def _weights(ds: xr.Dataset, name: str, weighted: bool) -> xr.DataArray:
    """Cell weights of field ``name``: the ocean mask, times the cell area when ``weighted``."""
    spatial = field_dims(name)
    if "tmask" in ds.variables:
        w = ocean_mask(ds, name).astype(np.float64)
    else:  # fields with land as NaN need no mask: NaN cells are skipped anyway
        w = xr.DataArray(np.ones([ds.sizes[d] for d in spatial]), dims=spatial)
    if weighted:
        for name in ("e1t", "e2t"):
            if name not in ds.variables:
                raise MissingVariableError(
                    f"weighted=True needs the cell sizes {name!r}, which the dataset lacks. Pass the grid "
                    "variables (xoceandiff.open_nemo with the mesh_mask) or use weighted=False."
                )
        w = w * cell_area(ds)
    return w.transpose(*spatial)


def _record_blocks(
    ds: xr.Dataset, names: Sequence[str], dim: str | Sequence[str] | None
) -> tuple[tuple[str, ...], dict[str, list[Any]]]:
    """Record dims, and per field the dask blocks of whole record chunks (all spatial dims in one block).

    Every field is cut at the record chunks of the first one, so that one task sees the same records of
    every field.
    """
    records: tuple[str, ...] | None = None
    arrays: dict[str, dsa.Array] = {}
    for name in names:
        da = ds[name]
        spatial = _check_field_dims(da, name)
        these = record_dims(da, dim)
        if records is None:
            records = these
        elif set(these) != set(records):
            raise InvalidDataError(
                f"{name} has record dimensions {these} but {names[0]} has {records}; pass fields= or dim=."
            )
        extra = [d for d in da.dims if d not in these and d not in spatial]
        if extra:
            raise InvalidDataError(f"{name}: dimensions {extra} are neither records nor {', '.join(SPATIAL_DIMS)}.")
        data = da.transpose(*records, *spatial).data
        arr = data if isinstance(data, dsa.Array) else dsa.from_array(np.asarray(data), chunks=-1)
        nrec = len(records)
        # one block across every axis but the first record axis (so that records can be flattened)
        arr = arr.rechunk({axis: -1 for axis in range(min(nrec, 1), arr.ndim)})
        if nrec == 0:
            arr = arr[None]
        elif nrec > 1:
            arr = arr.reshape((-1, *arr.shape[nrec:]))
        arrays[name] = arr
    records = records or ()
    first = arrays[names[0]].chunks[0]
    blocks = {name: list(arr.rechunk({0: first}).to_delayed().ravel()) for name, arr in arrays.items()}
    return records, blocks


def statistics(
    ds: xr.Dataset,
    *,
    fields: Iterable[str] | None = None,
    weighted: bool = False,
    method: Literal["pooled", "per-snapshot"] = "pooled",
    dim: str | Sequence[str] | None = None,
) -> xr.Dataset:
    """Per-level mean, standard deviation, minimum and maximum of each field over records and ocean cells.

    Lazy: the result is dask-backed and nothing is read until it is computed. The graph has one task
    per record chunk, which takes that chunk of every field, casts it to float64 and reduces it to a few
    numbers per level, and a tree of merges; so each chunk is read once and memory stays bounded by a
    few chunks whatever the number of records.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset (``toce``, ``soce``, ``ssh`` with land as NaN, ``tmask`` and, for
        ``weighted=True``, ``e1t`` and ``e2t``).
    fields : iterable of str, optional
        Fields to describe (default: those of ``toce``, ``soce``, ``ssh`` that ``ds`` holds).
    weighted : bool
        Weight every cell by its area ``e1t * e2t`` (default: every ocean cell counts the same).
    method : {"pooled", "per-snapshot"}
        ``"pooled"``: mean and standard deviation over all records and ocean cells of a level at once.
        ``"per-snapshot"``: the reference's way, mean and standard deviation over the horizontal ocean
        cells of each record, then averaged over records. Minimum and maximum are over everything in
        both cases.
    dim : str or sequence of str, optional
        Record dimension(s) (default: every dimension of a field other than ``z_c``, ``y_c``, ``x_c``,
        e.g. ``t`` or ``sample``).

    Returns
    -------
    xarray.Dataset
        ``{field}_mean``, ``{field}_std``, ``{field}_min``, ``{field}_max`` (float64, dims ``z_c`` for 3-D
        fields, scalars for ``ssh``); levels without ocean are NaN. Standard deviations are population
        ones (``ddof=0``). ``attrs`` record the method, the weighting and the record dimensions.

    Raises
    ------
    xoceandiff.errors.MissingVariableError
        A requested field, or ``e1t``/``e2t`` for ``weighted=True``, is missing.
    xoceandiff.errors.InvalidDataError
        Unknown ``method`` or a field with non-canonical dimensions.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> stats = statistics(ds)
    >>> stats.toce_mean.dims, stats.ssh_std.dims
    (('z_c',), ())
    >>> stats = stats.compute()
    >>> bool(stats.toce_mean[0] > stats.toce_mean[30]), bool(stats.toce_std[35].isnull())
    (True, True)
    """
    if method not in STATISTICS_METHODS:
        raise InvalidDataError(f"method: expected one of {list(STATISTICS_METHODS)}, found {method!r}.")
    names = _fields_of(ds, fields)
    records, blocks = _record_blocks(ds, names, dim)
    weights = {}
    for name in names:
        weights[name] = _weights(ds, name, weighted).data  # numpy or dask: delayed unpacks both
    shared_weights = dask.delayed(weights, pure=True)  # one node that every chunk task depends on

    # One task per record chunk for all fields, then a tree of merges: one graph, a few chunks in memory.
    n_chunks = len(blocks[names[0]])
    parts = [
        dask.delayed(_chunk_partials, pure=True)({n: blocks[n][i] for n in names}, shared_weights, method)
        for i in range(n_chunks)
    ]
    while len(parts) > 1:
        parts = [
            dask.delayed(_combine_partials, pure=True)(parts[i : i + _SPLIT_EVERY])
            for i in range(0, len(parts), _SPLIT_EVERY)
        ]
    final = dask.delayed(_finalise, pure=True)(parts[0])

    variables: dict[str, xr.DataArray] = {}
    for name in names:
        three_d = FIELDS[name].three_dimensional
        coords: dict[Hashable, Any] = {}
        if three_d:
            coords = {Z: ds[Z].variable} if Z in ds.coords else {}
            if "gdept_1d" in ds.variables and ds["gdept_1d"].dims == (Z,):
                coords["gdept_1d"] = ds["gdept_1d"].variable
        shape = (ds.sizes[Z],) if three_d else ()
        for key in _STATS:
            arr = dsa.from_delayed(final[name][key], shape=shape, dtype=np.float64)
            attrs = {
                "long_name": f"{key} of {FIELDS[name].long_name.lower()}"
                + (" per level" if three_d else "")
                + " over records and ocean cells",
                "units": FIELDS[name].units,
            }
            variables[f"{name}_{key}"] = xr.DataArray(
                arr, dims=(Z,) if three_d else (), coords=coords, attrs=attrs
            )
    n_records = int(np.prod([ds.sizes[d] for d in records])) if records else 1
    out = xr.Dataset(variables)
    out.attrs = {
        "title": "Training-set statistics of xoceandiff",
        "statistics_method": method,
        "weighting": "area e1t*e2t" if weighted else "none",
        "record_dims": " ".join(records),
        "n_records": n_records,
        "fields": " ".join(names),
        "ddof": 0,
    }
    return out


# --- Normaliser ------------------------------------------------------------------------------------


def _parse_scheme(scheme: str) -> tuple[str, float | None]:
    """('std', alpha) for the std family, (scheme, None) for the min-max family."""
    if scheme == "std":
        return "std", 1.0
    if scheme in ("min-max", "global-min-max"):
        return scheme, None
    match = _ALPHA_STD.match(scheme) if isinstance(scheme, str) else None
    if match and float(match["alpha"]) > 0:
        return "std", float(match["alpha"])
    raise InvalidDataError(
        f"scheme: unknown normalisation scheme {scheme!r}; valid schemes are {list(SCHEMES)}, where "
        "'<alpha>-std' is any positive number, e.g. '2.5-std'."
    )


def _warn_zero_spread(name: str, levels: Sequence[int] | None, what: str) -> None:
    where = f"{name} level {', '.join(map(str, levels))}" if levels is not None else name
    warnings.warn(
        f"{where}: zero spread in the statistics ({what}); using scale 1 there, so these values are only "
        "shifted by their offset. Check that the field varies over the training records.",
        UserWarning,
        stacklevel=3,
    )


def _nearest_scale(scale: np.ndarray, varying: np.ndarray) -> np.ndarray:
    """For every level, the scale of the nearest level with spread (the smaller one on a tie)."""
    candidates = np.flatnonzero(varying)
    distance = np.abs(np.arange(scale.size)[:, None] - candidates[None, :]).astype(np.float64)
    # ties go to the smaller scale: add a tie-breaker below one level of distance
    ranked = distance + 0.5 * (scale[candidates] / scale[candidates].max())[None, :]
    return scale[candidates[np.argmin(ranked, axis=1)]]


@dataclass(frozen=True)
class Normaliser:
    """Per-field, per-level affine normalisation: ``normalised = (x - offset) / scale``.

    Parameters
    ----------
    scheme : str
        Name of the scheme that produced the numbers (see :data:`SCHEMES`).
    offset, scale : mapping of str to tuple of float
        Per field, one number per level (``nz`` for 3-D fields, one for ``ssh``). Levels without ocean
        have offset 0 and scale 1.
    method : str
        Statistics method the numbers come from (``"pooled"`` or ``"per-snapshot"``).
    weighted : bool
        Whether the statistics were area-weighted.

    Examples
    --------
    >>> import json, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> norm = Normaliser.from_statistics(statistics(ds), scheme="3-std")
    >>> norm.fields, len(norm.offset["toce"]), len(norm.offset["ssh"])
    (('toce', 'soce', 'ssh'), 36, 1)
    >>> Normaliser.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    True
    """

    scheme: str
    offset: Mapping[str, tuple[float, ...]]
    scale: Mapping[str, tuple[float, ...]]
    method: str = "pooled"
    weighted: bool = False

    def __post_init__(self) -> None:
        _parse_scheme(self.scheme)
        offset = {str(k): tuple(float(v) for v in np.atleast_1d(vals)) for k, vals in self.offset.items()}
        scale = {str(k): tuple(float(v) for v in np.atleast_1d(vals)) for k, vals in self.scale.items()}
        if set(offset) != set(scale):
            raise InvalidDataError(
                f"Normaliser: offset and scale must describe the same fields, found {sorted(offset)} and {sorted(scale)}."
            )
        for name in offset:
            if name not in FIELDS:
                raise InvalidDataError(f"Normaliser: {name!r} is not a canonical field ({list(FIELD_NAMES)}).")
            if len(offset[name]) != len(scale[name]):
                raise InvalidDataError(
                    f"Normaliser: {name} has {len(offset[name])} offsets but {len(scale[name])} scales."
                )
            if not FIELDS[name].three_dimensional and len(offset[name]) != 1:
                raise InvalidDataError(f"Normaliser: {name} is 2-D and needs one offset, found {len(offset[name])}.")
            bad = [k for k, s in enumerate(scale[name]) if not np.isfinite(s) or s == 0]
            bad += [k for k, o in enumerate(offset[name]) if not np.isfinite(o)]
            if bad:
                raise InvalidDataError(
                    f"Normaliser: {name} has a zero or non-finite scale or offset at level(s) {sorted(set(bad))}."
                )
        order = [n for n in FIELD_NAMES if n in offset]
        object.__setattr__(self, "offset", {n: offset[n] for n in order})
        object.__setattr__(self, "scale", {n: scale[n] for n in order})
        object.__setattr__(self, "method", str(self.method))
        object.__setattr__(self, "weighted", bool(self.weighted))

    def __hash__(self) -> int:
        return hash((self.scheme, tuple(self.offset.items()), tuple(self.scale.items()), self.method, self.weighted))

    @property
    def fields(self) -> tuple[str, ...]:
        """Fields this normaliser knows, in canonical order."""
        return tuple(self.offset)

    def offset_of(self, name: str) -> xr.DataArray:
        """Offsets of field ``name``: a DataArray on ``z_c`` (3-D fields) or a scalar one (``ssh``)."""
        return self._values(name, self.offset)

    def scale_of(self, name: str) -> xr.DataArray:
        """Scales of field ``name``: a DataArray on ``z_c`` (3-D fields) or a scalar one (``ssh``)."""
        return self._values(name, self.scale)

    def _values(self, name: str, table: Mapping[str, tuple[float, ...]]) -> xr.DataArray:
        if name not in table:
            raise MissingVariableError(f"The normaliser knows {list(self.fields)}, not {name!r}.")
        values = np.asarray(table[name], dtype=np.float64)
        if FIELDS[name].three_dimensional:
            return xr.DataArray(values, dims=(Z,))
        return xr.DataArray(values[0])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (plain lists, strings, numbers)."""
        return {
            "scheme": self.scheme,
            "method": self.method,
            "weighted": self.weighted,
            "offset": {k: list(v) for k, v in self.offset.items()},
            "scale": {k: list(v) for k, v in self.scale.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normaliser:
        """The normaliser described by :meth:`to_dict`'s output."""
        missing = [k for k in ("scheme", "offset", "scale") if k not in data]
        if missing:
            raise InvalidDataError(f"Normaliser.from_dict: missing keys {missing}; found {sorted(data)}.")
        return cls(
            scheme=data["scheme"],
            offset={k: tuple(v) for k, v in data["offset"].items()},
            scale={k: tuple(v) for k, v in data["scale"].items()},
            method=data.get("method", "pooled"),
            weighted=bool(data.get("weighted", False)),
        )

    @classmethod
    def from_statistics(cls, stats: xr.Dataset, scheme: str = "3-std") -> Normaliser:
        """Offsets and scales of ``scheme`` from the output of :func:`statistics`.

        Parameters
        ----------
        stats : xarray.Dataset
            Output of :func:`statistics` (computed here: it is tiny).
        scheme : str
            ``"std"`` (mean, std), ``"<alpha>-std"`` such as ``"3-std"`` (the paper's) or ``"7-std"`` (mean,
            alpha * std), ``"min-max"`` (per level to [-1, 1]) or ``"global-min-max"`` (one min and max per
            field over all levels, to [-1, 1]).

        Returns
        -------
        Normaliser

        Raises
        ------
        xoceandiff.errors.InvalidDataError
            Unknown scheme (the message lists the valid ones), or statistics without any field.

        Warns
        -----
        UserWarning
            A level with ocean but zero spread (its scale is set to 1), naming the field and the level.

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> norm = Normaliser.from_statistics(statistics(ds), scheme="min-max")
        >>> norm.scheme, norm.offset["toce"][35], norm.scale["toce"][35]
        ('min-max', 0.0, 1.0)
        """
        kind, alpha = _parse_scheme(scheme)
        names = [n for n in FIELD_NAMES if all(f"{n}_{k}" in stats.variables for k in _STATS)]
        if not names:
            raise InvalidDataError(
                "stats: expected the output of xoceandiff.normalisation.statistics (variables such as "
                f"'toce_mean', 'toce_std', 'toce_min', 'toce_max'), found {sorted(map(str, stats.data_vars))}."
            )
        stats = stats[[f"{n}_{k}" for n in names for k in _STATS]].compute()
        offsets: dict[str, tuple[float, ...]] = {}
        scales: dict[str, tuple[float, ...]] = {}
        for name in names:
            mean, std, lo, hi = (np.atleast_1d(stats[f"{name}_{k}"].values).astype(np.float64) for k in _STATS)
            wet = np.isfinite(mean) & np.isfinite(std) & np.isfinite(lo) & np.isfinite(hi)
            levels = np.arange(mean.size)
            three_d = FIELDS[name].three_dimensional
            if kind == "std":
                offset = mean
                scale = alpha * std
                what = "std = 0"
            elif kind == "min-max":
                offset = (hi + lo) / 2
                scale = (hi - lo) / 2
                what = "max = min"
            else:
                if not wet.any():
                    gmin = gmax = np.nan
                else:
                    gmin, gmax = float(lo[wet].min()), float(hi[wet].max())
                offset = np.full(mean.shape, (gmax + gmin) / 2)
                scale = np.full(mean.shape, (gmax - gmin) / 2)
                what = "max = min over all levels"
            flat = wet & ~(scale > 0)
            varying = wet & (scale > 0)
            if flat.any() and (kind == "global-min-max" or not varying.any()):
                _warn_zero_spread(name, list(levels[flat]) if three_d and kind != "global-min-max" else None, what)
            elif flat.any():
                # A level constant over the records (the deepest levels of a spun-up run) is real data, not
                # an error: it borrows the scale of its nearest varying level, so that a model's small
                # normalised error stays small in physical units there too.
                scale = np.where(flat, _nearest_scale(scale, varying), scale)
            offset = np.where(wet, offset, 0.0)
            scale = np.where(wet & (scale > 0), scale, 1.0)
            offsets[name] = tuple(offset.tolist())
            scales[name] = tuple(scale.tolist())
        return cls(
            scheme=scheme,
            offset=offsets,
            scale=scales,
            method=str(stats.attrs.get("statistics_method", "pooled")),
            weighted=str(stats.attrs.get("weighting", "none")) != "none",
        )


# --- normalise / denormalise -----------------------------------------------------------------------


def _fields_to_transform(ds: xr.Dataset, normaliser: Normaliser) -> list[str]:
    names = [n for n in normaliser.fields if n in ds.data_vars]
    if not names:
        raise MissingVariableError(
            f"The dataset holds none of the normaliser's fields {list(normaliser.fields)} (found "
            f"{sorted(map(str, ds.data_vars))})."
        )
    for name in names:
        if FIELDS[name].three_dimensional:
            nz = ds[name].sizes.get(Z)
            if nz != len(normaliser.offset[name]):
                raise GridMismatchError(
                    f"{name}: the normaliser has {len(normaliser.offset[name])} levels but the data has "
                    f"{Z} = {nz}. Use the normaliser made from statistics of data on this grid."
                )
    return names


def _affine(da: xr.DataArray, offset: xr.DataArray, scale: xr.DataArray, forward: bool) -> xr.DataArray:
    dtype = da.dtype if np.issubdtype(da.dtype, np.floating) else np.dtype(np.float64)
    x = da.astype(np.float64)
    y = (x - offset) / scale if forward else x * scale + offset
    return y.astype(dtype).transpose(*da.dims)


def normalise(ds: xr.Dataset, normaliser: Normaliser) -> xr.Dataset:
    """Normalise the fields of ``ds``: ``(x - offset) / scale`` per field and level (lazy).

    Computed in float64 and cast back to each field's dtype; land (NaN) stays NaN; coordinates and
    attributes are kept, with ``units = "1"`` and ``normalisation = <scheme>`` on each normalised field.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset (records along ``t``, ``sample`` or any other dimension).
    normaliser : Normaliser
        Offsets and scales, e.g. from :meth:`Normaliser.from_statistics`.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        A field is already normalised.
    xoceandiff.errors.GridMismatchError
        The number of levels differs from the normaliser's.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> norm = Normaliser.from_statistics(statistics(ds), scheme="std")
    >>> normed = normalise(ds, norm)
    >>> normed.toce.attrs["units"], normed.toce.attrs["normalisation"]
    ('1', 'std')
    >>> abs(float(normed.toce.isel(z_c=0).mean())) < 1e-5
    True
    """
    names = _fields_to_transform(ds, normaliser)
    out = ds.copy()
    for name in names:
        da = ds[name]
        if "normalisation" in da.attrs:
            raise InvalidDataError(
                f"{name} is already normalised (scheme {da.attrs['normalisation']!r}); normalise it once only, "
                "or denormalise it first."
            )
        normed = _affine(da, normaliser.offset_of(name), normaliser.scale_of(name), forward=True)
        attrs = dict(da.attrs)
        if "units" in attrs:
            attrs["units_before_normalisation"] = attrs["units"]
        attrs["units"] = "1"
        attrs["normalisation"] = normaliser.scheme
        normed.attrs = attrs
        out[name] = normed
    out.attrs = stamp_history(ds.attrs, f"xoceandiff.normalise: {', '.join(names)} with scheme {normaliser.scheme}")
    out.attrs["normalisation"] = normaliser.scheme
    return out


def denormalise(ds: xr.Dataset, normaliser: Normaliser) -> xr.Dataset:
    """Undo :func:`normalise`: ``x * scale + offset`` per field and level (lazy).

    Restores the CF attributes of each field (``units``, ``long_name``, ``standard_name`` from
    :data:`xoceandiff.conventions.FIELDS`) and removes the normalisation attributes. Fields that carry no
    ``normalisation`` attribute (e.g. from :func:`xoceandiff.layout.from_tensor`) are taken as normalised
    by ``normaliser``.

    Parameters
    ----------
    ds : xarray.Dataset
        Normalised dataset.
    normaliser : Normaliser
        The normaliser that normalised it.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        A field says it was normalised with another scheme.

    Examples
    --------
    >>> import numpy as np, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> norm = Normaliser.from_statistics(statistics(ds), scheme="3-std")
    >>> back = denormalise(normalise(ds, norm), norm)
    >>> back.toce.attrs["units"]
    'degC'
    >>> bool(np.allclose(back.toce, ds.toce, rtol=1e-6, equal_nan=True))
    True
    """
    names = _fields_to_transform(ds, normaliser)
    out = ds.copy()
    for name in names:
        da = ds[name]
        found = da.attrs.get("normalisation")
        if found is not None and found != normaliser.scheme:
            raise InvalidDataError(
                f"{name} was normalised with scheme {found!r} but the normaliser's scheme is "
                f"{normaliser.scheme!r}; denormalise with the normaliser that normalised it."
            )
        physical = _affine(da, normaliser.offset_of(name), normaliser.scale_of(name), forward=False)
        attrs = {k: v for k, v in da.attrs.items() if k not in ("normalisation", "units_before_normalisation")}
        cf = FIELDS[name].attrs
        attrs["units"] = da.attrs.get("units_before_normalisation", cf["units"])
        attrs["long_name"] = cf["long_name"]
        attrs.setdefault("standard_name", cf["standard_name"])
        physical.attrs = attrs
        out[name] = physical
    out.attrs = stamp_history(
        {k: v for k, v in ds.attrs.items() if k != "normalisation"},
        f"xoceandiff.denormalise: {', '.join(names)} with scheme {normaliser.scheme}",
    )
    return out
