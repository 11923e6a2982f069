"""What a canonical dataset is: its dimensions, record dimension, fields, ocean mask, cells and history.

A canonical dataset (what :func:`xoceandiff.open_nemo` and :func:`xoceandiff.datasets.dino` return) holds
``toce``, ``soce`` on ``(record, z_c, y_c, x_c)`` and ``ssh`` on ``(record, y_c, x_c)``, land as NaN, and
its grid (``tmask``, ``e1t``, ``e2t``, ``e3t``, ``gdept_1d``, ...) as coordinates. Every module asks this
one for these facts instead of re-deriving them; dimension names come from the conventions table.

This module is a leaf: it knows xarray and the conventions table, nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import xarray as xr

from .conventions import DIMS, FIELDS, SAMPLE_DIM, TIME_DIM
from .errors import InvalidDataError, MissingVariableError

__all__ = [
    "X",
    "Y",
    "Z",
    "SPATIAL_DIMS",
    "HORIZONTAL_DIMS",
    "SAMPLE_DIM",
    "TIME_DIM",
    "fields_of",
    "field_dims",
    "record_dim",
    "grid_variable",
    "ocean_mask",
    "cell_area",
    "cell_volume",
    "cell_weights",
    "stamp_history",
    "SalinityKind",
    "SALINITY_STANDARD_NAMES",
    "salinity_kind",
    "eos_for",
    "field_attrs",
    "GRID_KIT",
    "DEPTH_BANDS",
    "band_masks",
    "grid_kit",
    "grid_from_kit",
]

X, Y, Z = DIMS["X"], DIMS["Y"], DIMS["Z"]
SPATIAL_DIMS: tuple[str, str, str] = (Z, Y, X)
HORIZONTAL_DIMS: tuple[str, str] = (Y, X)


def fields_of(ds: xr.Dataset) -> tuple[str, ...]:
    """The canonical fields present in ``ds``, in the order of the conventions table.

    Examples
    --------
    >>> import xoceandiff
    >>> fields_of(xoceandiff.datasets.dino(n=1, resolution=4.0))
    ('toce', 'soce', 'ssh')
    """
    return tuple(name for name in FIELDS if name in ds.data_vars)


def field_dims(name: str) -> tuple[str, ...]:
    """The spatial dimensions of canonical field ``name`` (3-D or surface)."""
    return SPATIAL_DIMS if FIELDS[name].three_dimensional else HORIZONTAL_DIMS


def record_dim(ds: xr.Dataset | xr.DataArray, *, required: bool = True) -> str | None:
    """The record dimension: the one dimension of the fields that is not spatial.

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        A canonical dataset (its first canonical field is used) or one field.
    required : bool
        Raise when there is no record dimension; otherwise return None (a single state).

    Returns
    -------
    str or None
        ``"t"`` for model output, ``"sample"`` for generated states, whatever the dimension is called.

    Raises
    ------
    MissingVariableError
        A Dataset without any of toce, soce, ssh.
    InvalidDataError
        More than one non-spatial dimension, or none while ``required``.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> record_dim(ds), record_dim(ds.isel(t=0), required=False)
    ('t', None)
    """
    if isinstance(ds, xr.Dataset):
        present = fields_of(ds)
        if not present:
            raise MissingVariableError(
                f"the dataset has none of the fields {tuple(FIELDS)} (found {sorted(map(str, ds.data_vars))}); "
                "open NEMO output with xoceandiff.open_nemo, which finds them by standard name and NEMO's names."
            )
        field = ds[present[0]]
    else:
        field = ds
    others = [str(d) for d in field.dims if d not in SPATIAL_DIMS]
    if len(others) == 1:
        return others[0]
    if not others and not required:
        return None
    name = field.name if field.name is not None else "the field"
    hint = (
        f"add one with .expand_dims({SAMPLE_DIM!r})"
        if not others
        else "select or stack the extra dimensions first (e.g. .stack(record=[...]))"
    )
    raise InvalidDataError(
        f"{name}: expected exactly one record dimension besides {SPATIAL_DIMS}, found dims "
        f"{tuple(map(str, field.dims))}; {hint}."
    )


def grid_variable(ds: xr.Dataset, name: str, *alternatives: str) -> xr.DataArray:
    """Grid variable ``name`` (or the first alternative present) without its own coordinates.

    Raises
    ------
    MissingVariableError
        None of the names is in the dataset; the message says how to get the grid.
    """
    for candidate in (name, *alternatives):
        if candidate in ds.variables:
            return ds[candidate].reset_coords(drop=True)
    tried = " or ".join(repr(n) for n in (name, *alternatives))
    raise MissingVariableError(
        f"the dataset has no {tried}; it needs the grid variables tmask, e1t, e2t, e3t, gdept_1d. Open NEMO "
        "output with xoceandiff.open_nemo(..., mesh_mask=...) so that the grid comes with the fields."
    )


def ocean_mask(ds: xr.Dataset, name: str = "toce") -> xr.DataArray:
    """The ocean mask (bool) on the spatial dims of field ``name``: 3-D tmask, or its top level for ssh.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> ocean_mask(ds, "ssh").dims, bool(ocean_mask(ds).any())
    (('y_c', 'x_c'), True)
    """
    mask = grid_variable(ds, "tmask").astype(bool)
    if not FIELDS[name].three_dimensional:
        mask = mask.isel({Z: 0}, drop=True)
    return mask


def cell_area(ds: xr.Dataset) -> xr.DataArray:
    """Horizontal area of T cells, ``e1t * e2t`` (m2), float64."""
    return grid_variable(ds, "e1t").astype(np.float64) * grid_variable(ds, "e2t")


def cell_volume(ds: xr.Dataset) -> xr.DataArray:
    """Volume of ocean T cells, ``e1t * e2t * e3t`` (m3, ``e3t_0`` where e3t is absent), zero on land."""
    e3t = grid_variable(ds, "e3t", "e3t_0").astype(np.float64)
    return (cell_area(ds) * e3t).where(ocean_mask(ds), 0.0)


def cell_weights(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Integration weights of field ``name``: cell volume (3-D) or surface cell area (ssh), zero on land."""
    if FIELDS[name].three_dimensional:
        return cell_volume(ds)
    return cell_area(ds).where(ocean_mask(ds, name), 0.0)


def stamp_history(attrs: Mapping[str, Any], line: str) -> dict[str, Any]:
    """A copy of ``attrs`` whose ``history`` starts with a UTC-stamped ``line`` (CF: newest first).

    Examples
    --------
    >>> attrs = stamp_history({"history": "opened"}, "normalised")
    >>> attrs["history"].split("\\n")[1], attrs["history"].split("\\n")[0].endswith("Z normalised")
    ('opened', True)
    """
    out = dict(attrs)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = out.get("history")
    out["history"] = f"{stamp} {line}" + (f"\n{previous}" if previous else "")
    return out


SalinityKind = Literal["practical", "absolute"]

SALINITY_STANDARD_NAMES: dict[str, str] = {
    "practical": "sea_water_practical_salinity",
    "absolute": "sea_water_absolute_salinity",
}
"""The CF standard name of ``soce`` for each kind of salinity."""


def salinity_kind(ds: xr.Dataset) -> SalinityKind:
    """Whether ``soce`` holds practical (EOS-80 runs) or absolute salinity (TEOS-10 runs), from its standard name.

    A dataset without ``soce``, or whose ``soce`` names neither, counts as absolute salinity (NEMO's default,
    TEOS-10, and the embedded dataset's).

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> salinity_kind(ds)
    'absolute'
    >>> ds.soce.attrs["standard_name"] = "sea_water_practical_salinity"
    >>> salinity_kind(ds), eos_for(ds)
    ('practical', 'eos80-poly')
    """
    name = ds["soce"].attrs.get("standard_name") if "soce" in ds.variables else None
    return "practical" if name == SALINITY_STANDARD_NAMES["practical"] else "absolute"


def eos_for(ds: xr.Dataset) -> str:
    """The equation of state that matches the dataset's salinity: EOS-80 for practical, TEOS-10 for absolute."""
    from .eos import EOS_OF_SALINITY  # the one table: eos owns the equations' names

    return EOS_OF_SALINITY[salinity_kind(ds)]


_TEMPERATURE_OF_SALINITY = {
    "practical": "sea_water_potential_temperature",  # EOS-80 runs
    "absolute": "sea_water_conservative_temperature",  # TEOS-10 runs
}
_SALINITY_UNITS = {"practical": "1", "absolute": "g kg-1"}  # practical salinity is dimensionless


def field_attrs(name: str, salinity: SalinityKind = "absolute") -> dict[str, str]:
    """The CF attributes of canonical field ``name`` for a run whose salinity is of kind ``salinity``.

    Examples
    --------
    >>> field_attrs("soce", "practical")["standard_name"], field_attrs("soce", "practical")["units"]
    ('sea_water_practical_salinity', '1')
    >>> field_attrs("toce", "practical")["standard_name"]
    'sea_water_potential_temperature'
    """
    attrs = dict(FIELDS[name].attrs)
    if name == "soce":
        attrs.update(standard_name=SALINITY_STANDARD_NAMES[salinity], units=_SALINITY_UNITS[salinity])
    elif name == "toce":
        attrs["standard_name"] = _TEMPERATURE_OF_SALINITY[salinity]
    return attrs


GRID_KIT: tuple[str, ...] = ("tmask", "e1t", "e2t", "e3t", "gdept_1d", "glamt", "gphit")
"""The grid variables everything downstream of a model needs (masks, T-cell sizes, depths, positions)."""


def grid_kit(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The :data:`GRID_KIT` arrays of ``ds`` (loaded: the grid is small next to the fields).

    Raises
    ------
    MissingVariableError
        A kit variable is missing (the message says how to get the grid).
    """
    return {name: np.asarray(grid_variable(ds, name).values) for name in GRID_KIT}


def grid_from_kit(kit: Mapping[str, Any], *, periodic_x: bool) -> xr.Dataset:
    """The canonical grid (coordinates only) rebuilt from :func:`grid_kit` arrays, with xgcm's index axes.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> grid = grid_from_kit(grid_kit(ds), periodic_x=True)
    >>> sorted(grid.oceandiff.grid.axes), bool((grid.tmask == ds.tmask).all()), grid.attrs["Iperio"]
    (['X', 'Y', 'Z'], True, 1)
    """
    from .conventions import GRID_ATTRS

    tmask = np.asarray(kit["tmask"]).astype(bool)
    nz, ny, nx = tmask.shape
    dims = {"tmask": SPATIAL_DIMS, "e3t": SPATIAL_DIMS, "gdept_1d": (Z,), "e1t": HORIZONTAL_DIMS,
            "e2t": HORIZONTAL_DIMS, "glamt": HORIZONTAL_DIMS, "gphit": HORIZONTAL_DIMS}
    coords: dict[str, Any] = {
        name: (dims[name], np.asarray(kit[name]) if name != "tmask" else tmask) for name in GRID_KIT
    }
    # xnemogcm's index axes: T points at integers, U/V points half a cell east/north, W points half a cell up
    coords.update({X: np.arange(nx), "x_f": np.arange(nx) + 0.5, Y: np.arange(ny), "y_f": np.arange(ny) + 0.5,
                   Z: np.arange(nz), "z_f": np.arange(nz) - 0.5})
    grid = xr.Dataset(coords=coords, attrs={"Iperio": int(periodic_x)})
    for name in grid.coords:
        if name in GRID_ATTRS:
            grid[name].attrs = dict(GRID_ATTRS[name])
    return grid


DEPTH_BANDS: dict[str, tuple[float, float]] = {
    "0-200m": (0.0, 200.0),
    "200-1000m": (200.0, 1000.0),
    "below-1000m": (1000.0, float("inf")),
}
"""The depth bands (m, of the T points) in which fidelity measures are reported: upper ocean, thermocline, abyss."""


def band_masks(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """Per depth band of :data:`DEPTH_BANDS`, the ocean mask of the cells whose T depth falls in it.

    Examples
    --------
    >>> import xoceandiff
    >>> masks = band_masks(xoceandiff.datasets.dino(n=1, resolution=4.0))
    >>> list(masks), masks["0-200m"].dims
    (['0-200m', '200-1000m', 'below-1000m'], ('z_c', 'y_c', 'x_c'))
    """
    depth = grid_variable(ds, "gdept_1d")
    ocean = ocean_mask(ds)
    return {name: ocean & (depth >= top) & (depth < bottom) for name, (top, bottom) in DEPTH_BANDS.items()}
