"""The restart checker: every way a file breaks NEMO's reading rules, one small check per rule.

:func:`check_restart` runs the checks in the order NEMO would stumble on them (file name, record
dimension, variables, layout, scalars, values) and returns one message per violation. The rules
themselves (versions, variable sets, dimensions) live in :mod:`xoceandiff.restart_format`.

:func:`check_plausible` guards the other end: the states a writer is given. Temperatures in Kelvin,
swapped ``toce``/``soce`` or values far outside the model's training range are refused before they become
a restart NEMO would happily start from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import netCDF4
import numpy as np
import xarray as xr

from .canonical import SPATIAL_DIMS, Z, field_dims, ocean_mask
from .errors import InvalidDataError
from .ranks import is_rank_piece_name, piece_window, rank_of_name
from .restart_format import (
    COORDINATES,
    FIELDS_2D,
    FIELDS_3D,
    NEMO_VERSIONS,
    OPTIONAL_2D,
    OPTIONAL_3D,
    RESTART_VARIABLES,
    SCALARS,
    TEMPERATURE_SALINITY,
    MeshInfo,
    NemoVersion,
    PathLike,
    check_version,
    read_mesh,
)

__all__ = ["check_restart", "check_plausible", "PHYSICAL_RANGES"]

PHYSICAL_RANGES: Mapping[str, tuple[float, float, str]] = MappingProxyType(
    {"toce": (-3.0, 40.0, "degC"), "soce": (0.0, 45.0, "g/kg or psu"), "ssh": (-10.0, 10.0, "m")}
)
"""Values of an ocean state that :func:`check_plausible` accepts whatever the training data: (min, max, units)."""

# Units a field may carry (compared lower case, spaces and underscores removed); other units are refused.
_UNITS = {
    "toce": {"degc", "degreec", "degreesc", "degreecelsius", "degreescelsius", "celsius", "c", "°c", "deg c"},
    "soce": {"gkg-1", "g/kg", "gkg**-1", "psu", "pss-78", "pss78", "1e-3", "0.001", "1", "", "practicalsalinity"},
    "ssh": {"m", "meter", "meters", "metre", "metres"},
}
_WIDEN_FLOOR = 0.01  # the training range is widened by at least 1 % of the physical range's width


def _suffix_problems(path: Path) -> list[str]:
    if path.name.endswith(".nc"):
        return []
    return [f"file name {path.name!r}: NEMO appends '.nc' to cn_ocerst_in; name the file '<name>.nc'."]


def _global_name_problems(path: Path) -> list[str]:
    """A global file (no ``DOMAIN_number``) must not be named like a rank's piece."""
    if not is_rank_piece_name(path.name):
        return []
    return [
        f"file name {path.name!r} ends in '_<digits>.nc': NEMO takes it for one MPI rank's piece. Rename it "
        "(e.g. 'restart_s000_xoceandiff.nc')."
    ]


def _piece_problems(path: Path, nc: netCDF4.Dataset) -> list[str]:
    """A rank's piece must say where it lies and carry its rank in its name."""
    attrs = {key: nc.getncattr(key) for key in nc.ncattrs()}
    rank = int(np.asarray(attrs["DOMAIN_number"]).ravel()[0])
    problems = []
    if piece_window(attrs) is None:
        problems.append(
            "a rank's piece (DOMAIN_number) without DOMAIN_position_first/DOMAIN_position_last: cannot tell "
            "where it lies in the global domain."
        )
    if rank_of_name(path.name) != rank:
        problems.append(
            f"file name {path.name!r}: a piece of rank {rank} (DOMAIN_number) must be named "
            f"'<cn_ocerst_in>_{rank:04d}.nc'."
        )
    return problems


def _local_mask(nc: netCDF4.Dataset, tmask: np.ndarray) -> np.ndarray:
    """The part of the global ``tmask`` a file covers: all of it, or a rank's window."""
    window = piece_window({key: nc.getncattr(key) for key in nc.ncattrs()})
    if "DOMAIN_number" not in nc.ncattrs() or window is None:
        return tmask
    return tmask[:, window[0], window[1]]


def _record_problems(nc: netCDF4.Dataset) -> list[str]:
    record = nc.dimensions.get("time_counter")
    if record is None:
        return ["dimension 'time_counter' is missing: NEMO needs an UNLIMITED record dimension."]
    problems = []
    if not record.isunlimited():
        problems.append(
            f"dimension 'time_counter' has a fixed size ({len(record)}): NEMO counts fixed dimensions as spatial "
            "and stops; write it UNLIMITED (xarray: unlimited_dims=['time_counter'])."
        )
    if len(record) < 1:
        problems.append("dimension 'time_counter' holds no record: NEMO reads record 1.")
    return problems


def _missing_problems(nc: netCDF4.Dataset, version: str) -> list[str]:
    missing = [name for name in RESTART_VARIABLES[version] if name not in nc.variables]
    return [f"variables missing for NEMO {version}: {missing}."] if missing else []


def _field_layout_problems(nc: netCDF4.Dataset, name: str, spatial: tuple[int, ...], labels: str) -> list[str]:
    """``name`` must be ``(UNLIMITED record, *spatial)``."""
    var = nc.variables[name]
    dims = var.dimensions
    expected = f"(time_counter, {labels}) = (UNLIMITED, {', '.join(map(str, spatial))})"
    found = f"{dims} = {var.shape}"
    if len(dims) != len(spatial) + 1:
        return [f"{name}: expected dimensions {expected}, found {found}."]
    problems = []
    if not nc.dimensions[dims[0]].isunlimited():
        problems.append(f"{name}: its first dimension {dims[0]!r} must be the UNLIMITED record dimension; found {found}.")
    if tuple(var.shape[1:]) != tuple(spatial):
        problems.append(f"{name}: expected dimensions {expected} (the mesh_mask's sizes), found {found}.")
    return problems


def _layout_problems(nc: netCDF4.Dataset, version: str, shape: tuple[int, int, int]) -> list[str]:
    nz, ny, nx = shape
    problems = []
    for name in FIELDS_3D[version] + OPTIONAL_3D:
        if name in nc.variables:
            problems += _field_layout_problems(nc, name, (nz, ny, nx), "nav_lev, y, x")
    for name in FIELDS_2D[version] + OPTIONAL_2D:
        if name in nc.variables:
            problems += _field_layout_problems(nc, name, (ny, nx), "y, x")
    return problems


def _scalar_problems(nc: netCDF4.Dataset) -> list[str]:
    return [
        f"{name}: expected a 0-d scalar, found dimensions {nc.variables[name].dimensions} "
        f"of sizes {nc.variables[name].shape}."
        for name in SCALARS
        if name in nc.variables and nc.variables[name].ndim != 0
    ]


def _variable_problems(name: str, var: netCDF4.Variable, tmask: np.ndarray) -> list[str]:
    """No _FillValue; data (not coordinates) float64, finite, and land 0 in temperature and salinity."""
    problems = []
    if "_FillValue" in var.ncattrs():
        problems.append(
            f"{name}: has a _FillValue attribute ({var.getncattr('_FillValue')!r}); NEMO restarts have none "
            "(xarray: encoding {'_FillValue': None}, land 0)."
        )
    if name in COORDINATES:
        return problems
    if var.dtype != np.float64:
        problems.append(f"{name}: expected float64 (double), found {var.dtype}.")
    if var.dtype.kind != "f":
        return problems
    values = np.asarray(var[...])
    bad = ~np.isfinite(values)
    if bad.any():
        problems.append(f"{name}: {int(bad.sum())} values are NaN or infinite; NEMO needs finite values (land 0).")
    if name in TEMPERATURE_SALINITY and values.ndim == 4 and values.shape[1:] == tmask.shape:
        land = (values != 0) & ~tmask[None]
        if land.any():
            problems.append(f"{name}: {int(land.sum())} land cells (tmask = 0) are not 0.")
    return problems


def _version_of(nc: netCDF4.Dataset) -> str:
    """The version a restart was written for: its ``nemo_version`` attribute, else its "before" fields."""
    if "nemo_version" in nc.ncattrs() and str(nc.getncattr("nemo_version")) in NEMO_VERSIONS:
        return str(nc.getncattr("nemo_version"))
    return "4.2" if any(name in nc.variables for name in ("tb", "sb", "sshb", "ub", "vb")) else "5.0"


def check_restart(
    path: PathLike,
    mesh_mask: PathLike | xr.Dataset | MeshInfo,
    *,
    nemo_version: NemoVersion | str | None = None,
) -> list[str]:
    """Every way a restart file breaks NEMO's reading rules; an empty list means NEMO can read it.

    Checked: the file name (``.nc``, and no ``_<digits>.nc`` unless the file is a rank's piece with
    ``DOMAIN_*`` attributes); an UNLIMITED ``time_counter`` with at least one record; the variables the
    version reads (:data:`xoceandiff.restart_format.RESTART_VARIABLES`); 3-D fields
    ``(time_counter, nav_lev, y, x)`` and 2-D fields ``(time_counter, y, x)`` with the mesh_mask's sizes
    (a piece's local sizes); calendar scalars 0-d; float64 data; no ``_FillValue`` attribute; no NaN or
    infinity; land 0 in ``tn``, ``sn`` (``tb``, ``sb``).

    Parameters
    ----------
    path : path
        The restart file.
    mesh_mask : path, xarray.Dataset or MeshInfo
        The configuration's mesh_mask/domain_cfg (see :func:`xoceandiff.restart_format.read_mesh`).
    nemo_version : {"4.0", "4.2", "5.0"}, optional
        Which variable set is required. Default: the file's ``nemo_version`` attribute (set by
        :func:`xoceandiff.restart.to_restart`), else 4.2 when it holds "before" fields (``tb``, ``sb``,
        ``sshb``, ``ub``, ``vb``: a leapfrog restart), else 5.0.

    Returns
    -------
    list of str
        One message per violation, naming the variable, what NEMO expects and what was found.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> from xoceandiff.restart import to_restart
    >>> states = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> (path,) = to_restart(states, tempfile.mkdtemp())
    >>> check_restart(path, states)
    []
    >>> check_restart(path, states, nemo_version="3.6")
    Traceback (most recent call last):
    ...
    xoceandiff.errors.InvalidDataError: nemo_version: expected one of ['4.0', '4.2', '5.0'], found '3.6'.
    """
    version = None if nemo_version is None else check_version(nemo_version)
    path = Path(path)
    mesh = read_mesh(mesh_mask)
    problems = _suffix_problems(path)
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        if version is None:
            version = _version_of(nc)
        is_piece = "DOMAIN_number" in nc.ncattrs()
        problems += _piece_problems(path, nc) if is_piece else _global_name_problems(path)
        tmask = _local_mask(nc, mesh.tmask)
        problems += _record_problems(nc)
        problems += _missing_problems(nc, version)
        problems += _layout_problems(nc, version, tmask.shape)
        problems += _scalar_problems(nc)
        for name, var in nc.variables.items():
            problems += _variable_problems(name, var, tmask)
    return problems


# --- plausibility of the states a writer is given ----------------------------------------------------------


def _units_problem(name: str, units: object) -> str | None:
    key = str(units).strip().lower().replace(" ", "").replace("_", "")
    if key in _UNITS[name]:
        return None
    low, high, expected = PHYSICAL_RANGES[name]
    return (
        f"{name}: units {units!r} where a restart needs {expected} (NEMO reads tn/sn/sshn as such); convert "
        f"the samples (e.g. Kelvin - 273.15) and set {name}.attrs['units'], or drop a wrong units attribute."
    )


def _depth_of(ds: xr.Dataset, level: int) -> str:
    for name in ("gdept_1d", "deptht"):
        if name in ds.variables and ds[name].dims == (Z,):
            return f"{float(ds[name].values[level]):g} m"
    return "depth unknown"


def _extremes(ds: xr.Dataset, name: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per level (3-D fields) or overall (ssh): the min and max over ocean cells and records."""
    data = ds[name]
    spatial = field_dims(name)
    others = [d for d in data.dims if d not in spatial]
    values = np.asarray(data.transpose(*others, *spatial).values, dtype=np.float64)
    values = values.reshape((-1, *values.shape[len(others):]))
    keep = np.isfinite(values)
    if mask is not None and mask.shape == values.shape[1:]:
        keep &= mask[None]
    if Z in spatial:
        values = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
        keep = np.moveaxis(keep, 1, 0).reshape(keep.shape[1], -1)
    else:
        values, keep = values.reshape(1, -1), keep.reshape(1, -1)
    low = np.where(keep, values, np.inf).min(axis=1)
    high = np.where(keep, values, -np.inf).max(axis=1)
    return low, high


def _training_range(ds: xr.Dataset, name: str, levels: int) -> tuple[np.ndarray, np.ndarray] | None:
    attrs = ds[name].attrs
    if "training_min" not in attrs or "training_max" not in attrs:
        return None
    low = np.atleast_1d(np.asarray(attrs["training_min"], dtype=np.float64)).ravel()
    high = np.atleast_1d(np.asarray(attrs["training_max"], dtype=np.float64)).ravel()
    if low.size != levels or high.size != levels:
        raise InvalidDataError(
            f"{name}: attributes training_min/training_max hold {low.size}/{high.size} values, expected {levels} "
            f"({'one per level' if levels > 1 else 'a scalar'}). Regenerate the samples, or remove the attributes."
        )
    return low, high


def _where(level: int, ds: xr.Dataset, name: str) -> str:
    return f"at level {level} ({_depth_of(ds, level)})" if Z in field_dims(name) else "at the surface"


def _value_problem(ds: xr.Dataset, name: str, low: np.ndarray, high: np.ndarray, label: str) -> str | None:
    """The worst value outside the physical range, else outside the widened training range."""
    floor, ceiling, units = PHYSICAL_RANGES[name]
    for level in range(low.size):
        for value in (low[level], high[level]):
            if np.isfinite(value) and not floor <= value <= ceiling:
                return (
                    f"{name} of {label} {_where(level, ds, name)}: value {value:.6g} outside the physical range "
                    f"{floor:g} to {ceiling:g} {units}. Temperatures in Kelvin, salinity as a fraction or swapped "
                    "toce/soce? Fix the samples before writing them for NEMO."
                )
    training = _training_range(ds, name, low.size)
    if training is None:
        return None
    t_low, t_high = training
    widen = np.maximum(t_high - t_low, _WIDEN_FLOOR * (ceiling - floor))
    for level in range(low.size):
        lower, upper = t_low[level] - widen[level], t_high[level] + widen[level]
        for value in (low[level], high[level]):
            if np.isfinite(value) and not lower <= value <= upper:
                return (
                    f"{name} of {label} {_where(level, ds, name)}: value {value:.6g} outside the training range "
                    f"{t_low[level]:.6g} to {t_high[level]:.6g} {units} widened by its span ({lower:.6g} to "
                    f"{upper:.6g}). Swapped toce/soce, another unit, or a broken sample? Check the samples."
                )
    return None


def check_plausible(samples: xr.Dataset, *, label: str = "the samples") -> None:
    """Refuse states that are no ocean NEMO should start from: wrong units, out of range, toce/soce swapped.

    Checked, on the ocean cells (``tmask`` when present) of every record:

    - ``units`` of ``toce`` (degC), ``soce`` (g/kg or psu) and ``ssh`` (m) when the attribute is present:
      a temperature in Kelvin is refused even when its values look like degC;
    - the physical ranges :data:`PHYSICAL_RANGES`: ``toce`` -3 to 40 degC, ``soce`` 0 to 45, ``ssh`` -10 to
      10 m;
    - when a field carries the attributes ``training_min`` and ``training_max`` (one value per level for
      ``toce``/``soce``, scalars for ``ssh``: the training data's range, set on generated samples), every
      value within that range widened by its span (``max - min``, at least 1 % of the physical range's width)
      on each side: temperatures of 35 at depth (``toce`` and ``soce`` swapped) are refused there.

    Parameters
    ----------
    samples : xarray.Dataset
        Canonical states (``toce``, ``soce``, ``ssh``; any of them absent is skipped), any record dimension.
    label : str
        What the states are, for the message (e.g. ``"sample 3"``).

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        The first problem found, naming the field, the level (index and depth), the value and the range.

    Examples
    --------
    >>> import xoceandiff
    >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> check_plausible(states)
    >>> check_plausible(states.assign(toce=states.toce + 273.15))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xoceandiff.errors.InvalidDataError: toce of the samples at level 0 (5.0336 m): value 276.225 outside the physical range -3 to 40 degC. ...
    """
    mask = None
    if "tmask" in samples.variables and set(samples["tmask"].dims) == set(SPATIAL_DIMS):
        mask = np.asarray(ocean_mask(samples).transpose(*SPATIAL_DIMS).values, dtype=bool)
    for name in PHYSICAL_RANGES:
        if name not in samples.data_vars:
            continue
        if "units" in samples[name].attrs and (problem := _units_problem(name, samples[name].attrs["units"])):
            raise InvalidDataError(problem)
    for name in PHYSICAL_RANGES:
        if name not in samples.data_vars:
            continue
        field_mask = None if mask is None else (mask if Z in field_dims(name) else mask[0])
        low, high = _extremes(samples, name, field_mask)
        if (problem := _value_problem(samples, name, low, high, label)) is not None:
            raise InvalidDataError(problem)
