"""The restart checker: every way a file breaks NEMO's reading rules, one small check per rule.

:func:`check_restart` runs the checks in the order NEMO would stumble on them (file name, record
dimension, variables, layout, scalars, values) and returns one message per violation. The rules
themselves (versions, variable sets, dimensions) live in :mod:`xoceandiff.restart_format`.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from .ranks import is_rank_piece_name, piece_window, rank_of_name
from .restart_format import (
    COORDINATES,
    FIELDS_2D,
    FIELDS_3D,
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

__all__ = ["check_restart"]


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


def check_restart(
    path: PathLike,
    mesh_mask: PathLike | xr.Dataset | MeshInfo,
    *,
    nemo_version: NemoVersion | str = "4.2",
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
    nemo_version : {"4.0", "4.2", "5.0"}
        Which variable set is required.

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
    version = check_version(nemo_version)
    path = Path(path)
    mesh = read_mesh(mesh_mask)
    problems = _suffix_problems(path)
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
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
