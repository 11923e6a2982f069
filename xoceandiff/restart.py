"""Generated ocean states as files NEMO starts from: restarts, initial states, and a restart checker.

NEMO reads a restart (``ln_rstart = .true.``) by position, not by name, with rules that a plain
:meth:`xarray.Dataset.to_netcdf` breaks (see :func:`to_restart`):

- the record dimension ``time_counter`` is UNLIMITED (NEMO counts every fixed-size dimension as
  spatial), 3-D fields are ``(time_counter, nav_lev, y, x)``, 2-D fields ``(time_counter, y, x)``,
  calendar scalars are 0-d, and the sizes are those of the configuration's mesh_mask/domain_cfg;
- fields are float64 with land 0: no NaN and no ``_FillValue`` anywhere;
- a file name ending in ``_<digits>.nc`` is taken for one MPI rank's piece.

:func:`to_restart` writes one restart per generated state (optionally from a template restart, or cut
into per-rank pieces), :func:`to_initial_state` writes the land-filled ("nomask") temperature and
salinity files of ``ln_tsd_init``, :func:`check_restart` lists every way a file breaks the rules, and
:func:`thermal_wind` gives velocities in thermal-wind balance with a state's density.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import netCDF4
import numpy as np
import xarray as xr

from .conventions import SAMPLE_DIM, TIME_DIM
from .eos import density_seos, potential_density
from .errors import GridMismatchError, InvalidDataError, MissingVariableError, OutputExistsError
from .grid import build_grid
from .io import atomic_path

__all__ = [
    "NEMO_VERSIONS",
    "RESTART_VARIABLES",
    "OMEGA",
    "GRAVITY",
    "RHO0",
    "to_restart",
    "to_initial_state",
    "check_restart",
    "thermal_wind",
    "restart_file_name",
    "is_rank_piece_name",
    "read_mesh",
    "MeshInfo",
]

PathLike = str | os.PathLike
NemoVersion = Literal["4.0", "4.2", "5.0"]

NEMO_VERSIONS: tuple[str, ...] = ("4.0", "4.2", "5.0")
"""NEMO versions whose restart layout :func:`to_restart` writes and :func:`check_restart` checks."""

# What each version reads (restart.F90, DOM/daymod.F90). Leapfrog versions read "now" and "before"
# fields; NEMO 5 (RK3) reads "now" fields only (uu_n/vv_n/ssha are rebuilt when absent).
_FIELDS_3D = {
    "4.0": ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"),
    "4.2": ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"),
    "5.0": ("tn", "sn", "un", "vn"),
}
_FIELDS_2D = {"4.0": ("sshn", "sshb"), "4.2": ("sshn", "sshb"), "5.0": ("sshn",)}
_SCALARS = ("kt", "ndastp", "adatrj", "ntime", "rdt")
RESTART_VARIABLES: dict[str, tuple[str, ...]] = {
    version: _FIELDS_3D[version] + _FIELDS_2D[version] + _SCALARS for version in NEMO_VERSIONS
}
"""Variables :func:`to_restart` writes (and :func:`check_restart` requires), per NEMO version."""

# Optional fields NEMO writes in its own restarts (checked for layout and type when present).
_OPTIONAL_3D = ("uu_n", "vv_n", "rhop", "en", "avt_k", "avm_k", "dissl", "rhd")
_OPTIONAL_2D = ("ssha", "sshbb_e", "sshb_e", "sshn_e", "ub_e", "vb_e", "un_e", "vn_e", "ub2_b", "vb2_b")
_COORDINATES = ("nav_lon", "nav_lat", "nav_lev", "time_counter")
_TEMPERATURE_SALINITY = ("tn", "sn", "tb", "sb")

OMEGA = 7.292115083e-5
"""Earth's rotation rate (rad s-1), NEMO's ``omega``."""
GRAVITY = 9.80665
"""Gravity (m s-2), NEMO's ``grav``."""
RHO0 = 1026.0
"""Reference density (kg m-3), NEMO's ``rho0``."""

_RANK_PIECE_RE = re.compile(r"_(\d+)\.nc$")


# --- file names ----------------------------------------------------------------------------------------


def is_rank_piece_name(name: str | os.PathLike) -> bool:
    """Whether NEMO would take a file of this name for one MPI rank's piece (``..._<digits>.nc``).

    Examples
    --------
    >>> is_rank_piece_name("restart_0003.nc"), is_rank_piece_name("restart_s003_xoceandiff.nc")
    (True, False)
    """
    return _RANK_PIECE_RE.search(Path(name).name) is not None


def restart_file_name(prefix: str, index: int | None, *, rank: int | None = None) -> str:
    """The file name of a restart: ``{prefix}_s{index:03d}_xoceandiff.nc``.

    The global file never ends in ``_<digits>.nc`` (NEMO would take it for a rank's piece); per-rank
    pieces add ``_{rank:04d}`` to it, as NEMO expects of them.

    Parameters
    ----------
    prefix : str
        File name prefix (no folder).
    index : int or None
        Sample index; None for a single state (``{prefix}_xoceandiff.nc``).
    rank : int, optional
        MPI rank of a piece (0-based).

    Examples
    --------
    >>> restart_file_name("restart", 2)
    'restart_s002_xoceandiff.nc'
    >>> restart_file_name("restart", 2, rank=5)
    'restart_s002_xoceandiff_0005.nc'
    """
    if not prefix or "/" in prefix or os.sep in prefix:
        raise InvalidDataError(f"prefix: expected a file name prefix without folders, found {prefix!r}.")
    stem = f"{prefix}_s{index:03d}_xoceandiff" if index is not None else f"{prefix}_xoceandiff"
    if rank is not None:
        return f"{stem}_{rank:04d}.nc"
    return f"{stem}.nc"


# --- the configuration's grid --------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshInfo:
    """What a restart needs of the configuration's grid (numpy arrays, global domain)."""

    tmask: np.ndarray  # (nz, ny, nx) bool
    nav_lon: np.ndarray | None = None  # (ny, nx)
    nav_lat: np.ndarray | None = None
    nav_lev: np.ndarray | None = None  # (nz,)
    source: str = "mesh_mask"

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``."""
        return tuple(int(n) for n in self.tmask.shape)  # type: ignore[return-value]


def _last3(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InvalidDataError(f"{what}: expected a 3-D (z, y, x) array, found shape {array.shape}.")
    return array


def _last2(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array


def _mesh_from_variables(variables: Mapping[str, Any], source: str) -> MeshInfo:
    def get(*names: str) -> np.ndarray | None:
        for name in names:
            if name in variables:
                return np.asarray(variables[name][...])
        return None

    tmask = get("tmask")
    if tmask is not None:
        tmask = _last3(tmask, f"{source}: tmask").astype(bool)
    else:
        top, bottom = get("top_level"), get("bottom_level")
        thickness = get("e3t_0", "e3t")
        if top is None or bottom is None or thickness is None:
            raise MissingVariableError(
                f"{source}: found neither 'tmask' nor 'top_level'/'bottom_level' with 'e3t_0': cannot tell land "
                "from ocean. Pass the mesh_mask.nc or domain_cfg.nc of the configuration."
            )
        nz = _last3(thickness, f"{source}: e3t_0").shape[0]
        top, bottom = _last2(top), _last2(bottom)
        level = np.arange(1, nz + 1)[:, None, None]
        tmask = (level >= top) & (level <= bottom) & (bottom > 0)
    lon, lat = get("nav_lon", "glamt"), get("nav_lat", "gphit")
    lev = get("gdept_1d", "nav_lev")
    return MeshInfo(
        tmask=tmask,
        nav_lon=None if lon is None else _last2(lon),
        nav_lat=None if lat is None else _last2(lat),
        nav_lev=None if lev is None else np.asarray(lev).ravel()[-tmask.shape[0]:],
        source=source,
    )


def read_mesh(mesh_mask: PathLike | xr.Dataset | MeshInfo) -> MeshInfo:
    """The land-sea mask, longitudes, latitudes and depths of a configuration.

    Parameters
    ----------
    mesh_mask : path, xarray.Dataset or MeshInfo
        NEMO's ``mesh_mask.nc`` (``tmask``) or ``domain_cfg.nc`` (``top_level``/``bottom_level``), a dataset
        opened from one, or a canonical dataset (``tmask`` on ``z_c, y_c, x_c``).

    Returns
    -------
    MeshInfo
        ``tmask`` (nz, ny, nx) as bool, and ``nav_lon``, ``nav_lat``, ``nav_lev`` when present.

    Examples
    --------
    >>> import xoceandiff
    >>> read_mesh(xoceandiff.datasets.dino(n=1, resolution=4.0)).shape
    (36, 51, 17)
    """
    if isinstance(mesh_mask, MeshInfo):
        return mesh_mask
    if isinstance(mesh_mask, xr.Dataset):
        # only the grid variables are read: the fields of a dask-backed dataset are not computed
        variables: dict[str, Any] = dict(mesh_mask.variables)
        if "tmask" in variables and {"z_c", "y_c", "x_c"} <= set(variables["tmask"].dims):
            variables["tmask"] = variables["tmask"].transpose("z_c", "y_c", "x_c")
        return _mesh_from_variables(variables, "mesh_mask dataset")
    path = Path(mesh_mask)
    if not path.is_file():
        raise FileNotFoundError(f"mesh_mask file not found: {str(path)!r}")
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        return _mesh_from_variables(nc.variables, str(path))


def _sample_mesh(state: xr.Dataset) -> MeshInfo:
    if "tmask" not in state.variables:
        raise MissingVariableError(
            "The samples have no 'tmask' coordinate and no mesh_mask was given: cannot tell land from ocean. "
            "Pass mesh_mask='path/to/mesh_mask.nc'."
        )
    return read_mesh(state)


# --- states ----------------------------------------------------------------------------------------------


def _record_dim(ds: xr.Dataset) -> str | None:
    for dim in (SAMPLE_DIM, TIME_DIM):
        if dim in ds.dims:
            return dim
    return None


def _indices(ds: xr.Dataset) -> list[int | None]:
    dim = _record_dim(ds)
    return [None] if dim is None else list(range(ds.sizes[dim]))


def _states(ds: xr.Dataset) -> Iterator[tuple[int | None, xr.Dataset]]:
    """The states of ``ds`` in memory, one dask chunk of the record dimension computed at a time."""
    dim = _record_dim(ds)
    if dim is None:
        yield None, ds.load()
        return
    sizes: tuple[int, ...] = (ds.sizes[dim],)
    for var in ds.data_vars.values():
        if var.chunks is not None and dim in var.dims:
            sizes = tuple(var.chunks[var.dims.index(dim)])
            break
    start = 0
    for size in sizes:
        block = ds.isel({dim: slice(start, start + size)}).load()
        for offset in range(size):
            yield start + offset, block.isel({dim: offset})
        start += size


def _field(state: xr.Dataset, name: str, what: str) -> np.ndarray:
    if name not in state:
        raise MissingVariableError(
            f"The samples have no '{name}' ({what}); found {sorted(map(str, state.data_vars))}. A restart needs "
            "toce, soce and ssh: add the missing field (e.g. ssh=0) explicitly."
        )
    dims = ("z_c", "y_c", "x_c") if name != "ssh" else ("y_c", "x_c")
    return np.asarray(state[name].transpose(*dims).values, dtype=np.float64)


def _land_zero(values: np.ndarray, mask: np.ndarray, name: str, label: str) -> np.ndarray:
    bad = ~np.isfinite(values) & mask
    if bad.any():
        raise InvalidDataError(
            f"{name} of {label}: {int(bad.sum())} ocean cells are NaN or infinite; a restart needs finite values "
            "on every ocean cell. Check the samples (or their land-sea mask against the mesh_mask)."
        )
    return np.where(mask, values, 0.0)


def _check_shapes(state_shape: tuple[int, ...], mesh: MeshInfo, what: str) -> None:
    if tuple(state_shape) != mesh.shape:
        raise GridMismatchError(
            f"The samples have (z_c, y_c, x_c) = {tuple(state_shape)} but {what} {mesh.source!r} has "
            f"(nav_lev, y, x) = {mesh.shape}. Restarts must have the configuration's global sizes: pass the "
            "mesh_mask/domain_cfg of the configuration the samples were generated for."
        )


def _state_shape(state: xr.Dataset) -> tuple[int, int, int]:
    return (int(state.sizes["z_c"]), int(state.sizes["y_c"]), int(state.sizes["x_c"]))


def _date_of(state: xr.Dataset) -> int | None:
    dim = TIME_DIM
    if dim in state.coords and state[dim].ndim == 0 and state[dim].dtype.kind == "M":
        return int(np.datetime_as_string(state[dim].values, unit="D").replace("-", ""))
    return None


# --- thermal wind ------------------------------------------------------------------------------------------


def _bare(ds: xr.Dataset, name: str) -> xr.DataArray:
    if name not in ds.variables:
        raise MissingVariableError(
            f"thermal_wind needs '{name}' (a grid variable of the canonical dataset); found "
            f"{sorted(map(str, ds.variables))}. Open the data with xoceandiff.open_nemo or pass the training dataset's grid."
        )
    return ds[name].reset_coords(drop=True)


def _to_levels(w_field: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    """A field on W levels (z_f) re-labelled on T levels: W level m lies just above T level m."""
    return w_field.rename(z_f="z_c").assign_coords(z_c=ds["z_c"].values)


def thermal_wind(
    ds: xr.Dataset,
    *,
    density: xr.DataArray | None = None,
    eos: str = "teos10-poly",
    rho0: float = RHO0,
    gravity: float = GRAVITY,
    equator_band: float = 5.0,
) -> tuple[xr.DataArray, xr.DataArray]:
    r"""Velocities in thermal-wind balance with the density of a state, zero at the bottom.

    On NEMO's C grid, with :math:`z` upward:

    .. math::

        f \frac{\partial u}{\partial z} = \frac{g}{\rho_0} \frac{\partial \rho}{\partial y}, \qquad
        f \frac{\partial v}{\partial z} = -\frac{g}{\rho_0} \frac{\partial \rho}{\partial x}

    1. :math:`\partial_y \rho` on V points (``grid.diff`` over ``e2v``, masked by ``vmask``) and
       :math:`\partial_x \rho` on U points (over ``e1u``, masked by ``umask``), with the xgcm grid of
       :func:`xoceandiff.grid.build_grid` (its padding: periodic in X only when ``Iperio = 1``).
    2. Each gradient is averaged onto the other velocity point from its (up to) four ocean neighbours.
    3. The shear, divided by :math:`f = 2\Omega\sin\varphi` at U/V points, is averaged onto W levels and
       integrated upward from :math:`u = v = 0` at the deepest ocean level, over the W-level thicknesses
       (``e3w`` averaged onto U/V points).
    4. Velocities are masked with ``umask``/``vmask`` and set to 0 within ``equator_band`` degrees of the
       equator, where :math:`f \to 0` and the balance does not hold.

    Density gradients are taken along model levels (a z-level approximation).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset (one state or several along ``sample``/``t``) with ``toce``, ``soce`` and the grid
        coordinates ``umask``, ``vmask``, ``e1u``, ``e2v``, ``e3w`` (or ``gdept_1d``), ``gphit``.
    density : xarray.DataArray, optional
        Density at T points (kg m-3) to use instead of the equation of state.
    eos : {"teos10-poly", "seos"}
        Equation of state for the potential density (:func:`xoceandiff.eos.potential_density`).
    rho0, gravity : float
        Reference density (kg m-3) and gravity (m s-2).
    equator_band : float
        Half-width (degrees of latitude) of the band around the equator where velocities are 0.

    Returns
    -------
    (xarray.DataArray, xarray.DataArray)
        ``u`` on U points (``z_c, y_c, x_f``) and ``v`` on V points (``z_c, y_f, x_c``), m s-1, land 0.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0).isel(t=0)
    >>> u, v = thermal_wind(ds)
    >>> u.dims, v.dims
    (('z_c', 'y_c', 'x_f'), ('z_c', 'y_f', 'x_c'))
    >>> float(abs(u).max()) < 2.0
    True
    """
    grid = build_grid(ds)
    tmask = _bare(ds, "tmask").astype(bool)
    umask = _bare(ds, "umask").astype(bool)
    vmask = _bare(ds, "vmask").astype(bool)
    if density is None:
        if eos == "seos":
            density = density_seos(_bare(ds, "toce"), _bare(ds, "soce"), rho0=rho0)
        else:
            density = potential_density(_bare(ds, "toce"), _bare(ds, "soce"), eos=eos)
    rho = density.reset_coords(drop=True).where(tmask, 0.0).fillna(0.0)

    # 1. density gradients on the faces where they are centred
    drho_dy = (grid.diff(rho, "Y") / _bare(ds, "e2v")).where(vmask, 0.0)  # V points
    drho_dx = (grid.diff(rho, "X") / _bare(ds, "e1u")).where(umask, 0.0)  # U points

    # 2. onto the other velocity point: mean of the ocean neighbours
    def onto(field: xr.DataArray, mask: xr.DataArray, first: str, second: str) -> xr.DataArray:
        weight = mask.astype(float)
        total = grid.interp(grid.interp(field, first), second)
        count = grid.interp(grid.interp(weight, first), second)
        return (total / count.where(count > 0)).fillna(0.0)

    drho_dy_u = onto(drho_dy, vmask, "X", "Y")  # V -> F -> U
    drho_dx_v = onto(drho_dx, umask, "Y", "X")  # U -> F -> V

    # 3. Coriolis parameter at U and V points, thicknesses of W levels there
    gphit = _bare(ds, "gphit")
    lat_u = _bare(ds, "gphiu") if "gphiu" in ds.variables else grid.interp(gphit, "X")
    lat_v = _bare(ds, "gphiv") if "gphiv" in ds.variables else grid.interp(gphit, "Y")
    # NaN (not 0) within the equatorial band, so that nothing divides by f = 0 there
    f_u = (2.0 * OMEGA * np.sin(np.deg2rad(lat_u))).where(abs(lat_u) >= equator_band)
    f_v = (2.0 * OMEGA * np.sin(np.deg2rad(lat_v))).where(abs(lat_v) >= equator_band)
    if "e3w" in ds.variables:
        e3w = _to_levels(_bare(ds, "e3w"), ds)
    else:
        depth = _bare(ds, "gdept_1d")
        e3w = depth.diff("z_c", label="upper").reindex(z_c=depth["z_c"]).fillna(depth.isel(z_c=0))
        e3w = e3w.broadcast_like(tmask)
    e3uw = grid.interp(e3w, "X")
    e3vw = grid.interp(e3w, "Y")

    def integrate(shear: xr.DataArray, mask: xr.DataArray, e3: xr.DataArray) -> xr.DataArray:
        # W level m (between T levels m-1 and m): mean shear of the two levels times the W thickness,
        # counted only where both levels are ocean; u(k) = sum of the increments below level k.
        both = mask & mask.shift(z_c=1, fill_value=False)
        increment = (0.5 * (shear + shear.shift(z_c=1, fill_value=0.0)) * e3).where(both, 0.0)
        return (increment.sum("z_c") - increment.cumsum("z_c")).where(mask, 0.0)

    # 4. no balance near the equator: shear 0 there
    u = integrate((gravity / rho0 * drho_dy_u / f_u).fillna(0.0), umask & f_u.notnull(), e3uw)
    v = integrate((-gravity / rho0 * drho_dx_v / f_v).fillna(0.0), vmask & f_v.notnull(), e3vw)
    dims_u = [d for d in u.dims if d not in ("z_c", "y_c", "x_f")] + ["z_c", "y_c", "x_f"]
    dims_v = [d for d in v.dims if d not in ("z_c", "y_f", "x_c")] + ["z_c", "y_f", "x_c"]
    u = u.transpose(*dims_u).rename("u")
    v = v.transpose(*dims_v).rename("v")
    u.attrs = {"standard_name": "sea_water_x_velocity", "units": "m s-1",
               "long_name": "Zonal velocity in thermal-wind balance (zero at the bottom)"}
    v.attrs = {"standard_name": "sea_water_y_velocity", "units": "m s-1",
               "long_name": "Meridional velocity in thermal-wind balance (zero at the bottom)"}
    return u, v


# --- writing -------------------------------------------------------------------------------------------------


def _check_version(nemo_version: str) -> str:
    version = str(nemo_version)
    if version not in NEMO_VERSIONS:
        raise InvalidDataError(
            f"nemo_version: expected one of {list(NEMO_VERSIONS)}, found {nemo_version!r}."
        )
    return version


def _history() -> str:
    from . import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} xoceandiff {__version__}: restart written by xoceandiff.restart.to_restart"


def _restart_dataset(
    fields3d: Mapping[str, np.ndarray],
    fields2d: Mapping[str, np.ndarray],
    scalars: Mapping[str, float],
    mesh: MeshInfo,
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    dims3 = ("time_counter", "nav_lev", "y", "x")
    dims2 = ("time_counter", "y", "x")
    out = xr.Dataset(attrs=dict(attrs))
    for name, values in fields3d.items():
        out[name] = (dims3, np.ascontiguousarray(values, dtype=np.float64)[None])
    for name, values in fields2d.items():
        out[name] = (dims2, np.ascontiguousarray(values, dtype=np.float64)[None])
    for name, value in scalars.items():
        out[name] = ((), np.float64(value))
    nz, ny, nx = mesh.shape
    lon = mesh.nav_lon if mesh.nav_lon is not None else np.zeros((ny, nx))
    lat = mesh.nav_lat if mesh.nav_lat is not None else np.zeros((ny, nx))
    lev = mesh.nav_lev if mesh.nav_lev is not None else np.arange(nz, dtype=float)
    out["nav_lon"] = (("y", "x"), np.asarray(lon, dtype=np.float32))
    out["nav_lat"] = (("y", "x"), np.asarray(lat, dtype=np.float32))
    out = out.assign_coords(
        nav_lev=("nav_lev", np.asarray(lev, dtype=np.float32)),
        time_counter=("time_counter", np.array([scalars.get("kt", 0.0) * scalars.get("rdt", 0.0)], dtype=np.float64),
                      {"units": "seconds", "long_name": "Time since the start of the experiment"}),
    )
    return out


def _write_restart(ds: xr.Dataset, tmp: Path) -> None:
    encoding = {str(name): {"_FillValue": None} for name in ds.variables}
    ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding, unlimited_dims=["time_counter"])


def _pieces(shape: tuple[int, int, int], ranks: tuple[int, int]) -> list[tuple[int, slice, slice]]:
    _, ny, nx = shape
    nrx, nry = (int(r) for r in ranks)
    if nrx < 1 or nry < 1 or nrx > nx or nry > ny:
        raise InvalidDataError(f"ranks: expected (nx, ny) with 1 <= nx <= {nx} and 1 <= ny <= {ny}, found {ranks!r}.")
    xs = np.array_split(np.arange(nx), nrx)
    ys = np.array_split(np.arange(ny), nry)
    out = []
    rank = 0
    for yi in ys:  # NEMO numbers ranks with i fastest: narea = 1 + i + jpni * j
        for xi in xs:
            out.append((rank, slice(int(xi[0]), int(xi[-1]) + 1), slice(int(yi[0]), int(yi[-1]) + 1)))
            rank += 1
    return out


def _piece(ds: xr.Dataset, rank: int, xs: slice, ys: slice, ranks: tuple[int, int], shape: tuple[int, int, int]) -> xr.Dataset:
    _, ny, nx = shape
    piece = ds.isel(x=xs, y=ys)
    piece.attrs = dict(ds.attrs)
    piece.attrs.update(
        {
            "DOMAIN_number_total": int(ranks[0] * ranks[1]),
            "DOMAIN_number": int(rank),
            "DOMAIN_dimensions_ids": np.array([1, 2], dtype=np.int32),
            "DOMAIN_size_global": np.array([nx, ny], dtype=np.int32),
            "DOMAIN_size_local": np.array([xs.stop - xs.start, ys.stop - ys.start], dtype=np.int32),
            "DOMAIN_position_first": np.array([xs.start + 1, ys.start + 1], dtype=np.int32),
            "DOMAIN_position_last": np.array([xs.stop, ys.stop], dtype=np.int32),
            "DOMAIN_halo_size_start": np.array([0, 0], dtype=np.int32),
            "DOMAIN_halo_size_end": np.array([0, 0], dtype=np.int32),
            "DOMAIN_type": "BOX",
        }
    )
    return piece


def _namelist_restart(stems: Sequence[str], kt: int, ndastp: int, nemo_version: str, folder: Path,
                      ranks: tuple[int, int] | None) -> str:
    from . import __version__

    lines = [
        f"! NEMO {nemo_version} namelist settings to start from the restarts written by xoceandiff {__version__}",
        "! Copy them into namelist_cfg. One restart per generated state: set cn_ocerst_in to the one to run.",
        f"! Restarts in {str(folder)!r}: {', '.join(stems)}",
        "&namrun",
        "   ln_rstart       = .true.",
        f"   cn_ocerst_in    = \"{stems[0]}\"   ! file name without .nc",
        f"   cn_ocerst_indir = \"{folder}\"",
        "   nn_rstctl       = 0        ! 0: calendar from nn_date0; 1: nit000 checked against kt; 2: calendar from the file",
        f"   nn_it000        = {int(kt) + 1}        ! = kt + 1",
        f"   nn_date0        = {int(ndastp)}   ! = ndastp of the restart",
        "/",
        "&namtsd",
        "   ln_tsd_init     = .false.  ! the state comes from the restart",
        "/",
        "! Velocities and 'before' fields: before = now. NEMO 4.x starts with an Euler step when the",
        "! restart's rdt differs from rn_Dt; the model spins the circulation up from the density field.",
    ]
    if ranks is not None:
        lines.append(
            f"! Per-rank pieces: run with jpni = {ranks[0]}, jpnj = {ranks[1]} and no land-domain removal; "
            "NEMO opens <cn_ocerst_in>_<rank>.nc when <cn_ocerst_in>.nc is absent."
        )
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str, stack: contextlib.ExitStack, overwrite: bool) -> None:
    tmp = stack.enter_context(atomic_path(path, overwrite=overwrite))
    tmp.write_text(text)


def _template_fields(path: Path, names: Sequence[str], shape: tuple[int, int, int]) -> None:
    with netCDF4.Dataset(path) as nc:
        for name in names:
            if name not in nc.variables:
                continue
            found = nc.variables[name].shape
            expected = shape if name not in ("sshn", "sshb") else shape[1:]
            if tuple(found[-len(expected):]) != tuple(expected) or len(found) < len(expected):
                raise GridMismatchError(
                    f"The template {str(path)!r} has {name} of shape {tuple(found)} (dims "
                    f"{nc.variables[name].dimensions}) but the samples are on (nav_lev, y, x) = {shape}. "
                    "Pass a template restart of the samples' configuration."
                )
        if "tn" not in nc.variables:
            raise MissingVariableError(
                f"The template {str(path)!r} has no 'tn': it is not a NEMO restart. Found {sorted(nc.variables)}."
            )


def _fill_template(tmp: Path, values: Mapping[str, np.ndarray]) -> None:
    with netCDF4.Dataset(tmp, "r+") as nc:
        for name, array in values.items():
            if name not in nc.variables:
                continue
            var = nc.variables[name]
            var.set_auto_maskandscale(False)
            var[...] = np.broadcast_to(array, var.shape).astype(var.dtype)


def to_restart(
    samples: xr.Dataset,
    target: PathLike,
    *,
    mesh_mask: PathLike | xr.Dataset | None = None,
    template: PathLike | None = None,
    nemo_version: NemoVersion | str = "4.2",
    kt: int = 0,
    ndastp: int | None = None,
    rdt: float = 3600.0,
    adatrj: float | None = None,
    ntime: int = 0,
    velocities: Literal["rest", "thermal_wind"] | None = None,
    eos: str = "teos10-poly",
    prefix: str = "restart",
    ranks: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write one NEMO restart per generated state, ready for ``ln_rstart = .true.``.

    Each file follows NEMO's reading rules: dimensions ``(time_counter, nav_lev, y, x)`` with
    ``time_counter`` UNLIMITED and the configuration's global sizes; float64 fields with land 0, no NaN
    and no ``_FillValue``; ``tn``, ``sn``, ``sshn`` and (NEMO 4.x) the "before" copies ``tb``, ``sb``,
    ``sshb``; velocities ``un``, ``vn`` (and ``ub``, ``vb``); the 0-d doubles ``kt``, ``ndastp``,
    ``adatrj``, ``ntime``, ``rdt``; ``nav_lon``, ``nav_lat``, ``nav_lev`` (float32) and ``time_counter``.
    NEMO 5.0 (RK3) gets ``tn``, ``sn``, ``sshn``, ``un``, ``vn`` and the scalars (it rebuilds ``uu_n``,
    ``vv_n`` and ``ssha`` from them). File names are ``{prefix}_s{index:03d}_xoceandiff.nc``
    (:func:`restart_file_name`): never ``_<digits>.nc``, which NEMO takes for a rank's piece.

    A ``namelist_restart.txt`` beside the files lists the settings to use (``ln_rstart``,
    ``cn_ocerst_in``, ``nn_rstctl``, ``nn_it000 = kt + 1``, ``ln_tsd_init = .false.``). Every file is
    written atomically, and all of them or none: an error leaves no new file behind.

    Parameters
    ----------
    samples : xarray.Dataset
        Canonical states: ``toce``, ``soce`` (``z_c, y_c, x_c``) and ``ssh`` (``y_c, x_c``), along
        ``sample`` (or ``t``, or a single state), land NaN, with the grid coordinates.
    target : path
        Output folder (created if needed).
    mesh_mask : path or xarray.Dataset, optional
        The configuration's ``mesh_mask.nc``/``domain_cfg.nc``: its sizes must equal the samples', and its
        ``tmask``, ``nav_lon``, ``nav_lat`` and depths are written. Default: the samples' own grid.
    template : path, optional
        An existing restart of the same configuration: each output is a copy of it in which only ``tn``,
        ``sn``, ``sshn`` (and ``tb``, ``sb``, ``sshb`` when present) are replaced; every other variable,
        attribute and encoding is kept bit for bit, its velocities too unless ``velocities`` is given.
    nemo_version : {"4.0", "4.2", "5.0"}
        Which variable set to write.
    kt : int
        Time step of the restart: NEMO starts at ``nn_it000 = kt + 1`` (checked with ``nn_rstctl >= 1``).
    ndastp : int, optional
        Date ``yyyymmdd`` (read with ``nn_rstctl = 2``). Default: the state's date when it has a time
        coordinate, else 19000101.
    rdt : float
        Time step (s) written as ``rdt``. NEMO 4.x starts with an Euler step when it differs from the
        namelist's ``rn_Dt``.
    adatrj : float, optional
        Days since the start of the experiment (default ``kt * rdt / 86400``).
    ntime : int
        Time of day (``hhmm``) of the start, NEMO's ``nn_time0``.
    velocities : {"rest", "thermal_wind"}, optional
        ``"rest"`` (the default without template): 0 everywhere, what NEMO does for an initial state.
        ``"thermal_wind"``: :func:`thermal_wind` of each state's density. With a template, the default
        keeps the template's velocities.
    eos : {"teos10-poly", "seos"}
        Equation of state for ``velocities="thermal_wind"``.
    prefix : str
        File name prefix.
    ranks : (int, int), optional
        Also cut each restart into ``ranks[0] x ranks[1]`` (i, j) per-rank pieces ``..._NNNN.nc`` with
        ``DOMAIN_*`` global attributes, instead of the global file. The run must use the same
        decomposition; the global file works with any and is preferred. Not with NEMO 4.0 (its pieces
        hold halos) nor with a template.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The restart files (the pieces with ``ranks``), in sample order.

    Raises
    ------
    xoceandiff.errors.GridMismatchError
        The samples, the mesh_mask and the template are not on the same grid.
    xoceandiff.errors.InvalidDataError
        NaN on an ocean cell of a state, or bad arguments.
    xoceandiff.errors.OutputExistsError
        An output exists and ``overwrite`` is False (nothing is written).

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> paths = to_restart(states, tempfile.mkdtemp())
    >>> [p.name for p in paths]
    ['restart_s000_xoceandiff.nc', 'restart_s001_xoceandiff.nc']
    >>> check_restart(paths[0], states)
    []
    """
    version = _check_version(nemo_version)
    if velocities not in (None, "rest", "thermal_wind"):
        raise InvalidDataError(f"velocities: expected 'rest' or 'thermal_wind', found {velocities!r}.")
    if template is not None and ranks is not None:
        raise InvalidDataError("ranks: per-rank pieces are not written from a template; write the global file.")
    if ranks is not None and version == "4.0":
        raise InvalidDataError("ranks: NEMO 4.0 pieces hold halos; write the global file (it works with any decomposition).")
    if int(kt) != kt or kt < 0:
        raise InvalidDataError(f"kt: expected a non-negative time step index, found {kt!r}.")
    folder = Path(target)
    shape = _state_shape(samples)
    mesh = read_mesh(mesh_mask) if mesh_mask is not None else _sample_mesh(samples)
    _check_shapes(shape, mesh, "the mesh_mask" if mesh_mask is not None else "the samples' grid")
    if mesh_mask is not None and "tmask" in samples.variables:
        own = read_mesh(samples).tmask
        if not np.array_equal(own, mesh.tmask):
            raise GridMismatchError(
                f"The samples' land-sea mask differs from the mesh_mask's on {int((own != mesh.tmask).sum())} cells. "
                "Pass the mesh_mask of the configuration the samples were generated for."
            )
    template_path = Path(template) if template is not None else None
    if template_path is not None:
        if not template_path.is_file():
            raise FileNotFoundError(f"template restart not found: {str(template_path)!r}")
        _template_fields(template_path, ("tn", "sn", "tb", "sb", "sshn", "sshb"), shape)
        if velocities is not None:
            _template_fields(template_path, ("un", "vn", "ub", "vb"), shape)
    mode = velocities or ("template" if template_path is not None else "rest")

    # Every output is refused up front when one exists: nothing is half-written.
    outputs: list[tuple[int | None, list[tuple[Path, int | None, slice, slice]]]] = []
    for index in _indices(samples):
        name = restart_file_name(prefix, index)
        if ranks is None:
            outputs.append((index, [(folder / name, None, slice(None), slice(None))]))
        else:
            stem = name[: -len(".nc")]
            pieces = [(folder / f"{stem}_{rank:04d}.nc", rank, xs, ys) for rank, xs, ys in _pieces(shape, ranks)]
            outputs.append((index, pieces))
    namelist_path = folder / "namelist_restart.txt"
    for path in [p for _, pieces in outputs for p, *_ in pieces] + [namelist_path]:
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{str(path)!r} exists; pass overwrite=True (--overwrite on the command line) to replace it."
            )

    from . import __version__

    written: list[Path] = []
    first_kt = int(kt)
    first_date = 19000101
    with contextlib.ExitStack() as stack:
        for n, ((index, state), (_, pieces)) in enumerate(zip(_states(samples), outputs, strict=True)):
            label = f"sample {index}" if index is not None else "the state"
            ocean = mesh.tmask
            tn = _land_zero(_field(state, "toce", "temperature"), ocean, "toce", label)
            sn = _land_zero(_field(state, "soce", "salinity"), ocean, "soce", label)
            sshn = _land_zero(_field(state, "ssh", "sea surface height"), ocean[0], "ssh", label)
            if mode == "thermal_wind":
                u, v = thermal_wind(state, eos=eos)
                un = np.nan_to_num(np.asarray(u.values, dtype=np.float64))
                vn = np.nan_to_num(np.asarray(v.values, dtype=np.float64))
            else:
                un = vn = np.zeros(shape)
            date = ndastp if ndastp is not None else (_date_of(state) or 19000101)
            if n == 0:
                first_date = int(date)

            if template_path is not None:
                values = {"tn": tn, "sn": sn, "tb": tn, "sb": sn, "sshn": sshn, "sshb": sshn}
                if mode != "template":
                    values.update({"un": un, "vn": vn, "ub": un, "vb": vn})
                (path, *_), = pieces
                tmp = stack.enter_context(atomic_path(path, overwrite=overwrite))
                shutil.copyfile(template_path, tmp)
                _fill_template(tmp, values)
                written.append(path)
                if n == 0:
                    with netCDF4.Dataset(template_path) as nc:
                        if "kt" in nc.variables:
                            first_kt = int(np.asarray(nc.variables["kt"][...]).ravel()[0])
                        if "ndastp" in nc.variables:
                            first_date = int(np.asarray(nc.variables["ndastp"][...]).ravel()[0])
                continue

            fields3d = {"tn": tn, "sn": sn}
            fields2d = {"sshn": sshn}
            if version != "5.0":
                fields3d.update({"tb": tn, "sb": sn})
                fields2d["sshb"] = sshn
            fields3d.update({"un": un, "vn": vn})
            if version != "5.0":
                fields3d.update({"ub": un, "vb": vn})
            scalars = {
                "kt": float(kt),
                "ndastp": float(date),
                "adatrj": float(adatrj if adatrj is not None else kt * rdt / 86400.0),
                "ntime": float(ntime),
                "rdt": float(rdt),
            }
            checkpoint = samples.attrs.get("checkpoint_sha256")
            attrs = {
                "title": f"NEMO {version} restart of a generated ocean state (xoceandiff)",
                "source": f"xoceandiff {__version__}" + (f", checkpoint sha256 {checkpoint}" if checkpoint else ""),
                "history": _history(),
                "xoceandiff_state": str(label),
                "nemo_version": version,
                "velocities": mode,
            }
            ds = _restart_dataset(fields3d, fields2d, scalars, mesh, attrs)
            for path, rank, xs, ys in pieces:
                out = ds if rank is None else _piece(ds, rank, xs, ys, ranks, shape)  # type: ignore[arg-type]
                tmp = stack.enter_context(atomic_path(path, overwrite=overwrite))
                _write_restart(out, tmp)
                written.append(path)

        stems = [restart_file_name(prefix, index)[: -len(".nc")] for index, _ in outputs]
        _write_text(namelist_path, _namelist_restart(stems, first_kt, first_date, version, folder.resolve(), ranks),
                    stack, overwrite)
    return written


# --- initial states -------------------------------------------------------------------------------------------


def _drown(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill land cells of each level from the nearest ocean cells (successive dilation); levels without
    ocean take the filled level above."""
    out = np.array(values, dtype=np.float64)
    nz = out.shape[0]
    for k in range(nz):
        known = mask[k].copy()
        if not known.any():
            if k == 0:
                raise InvalidDataError("The surface level has no ocean cell: nothing to fill the land from.")
            out[k] = out[k - 1]
            continue
        level = np.where(known, out[k], 0.0)
        while not known.all():
            total = np.zeros_like(level)
            count = np.zeros_like(level)
            for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
                shifted_known = np.roll(known, step, axis=axis)
                shifted = np.roll(level, step, axis=axis)
                # no wrap-around: the edge row/column rolled in from the other side does not count
                edge = [slice(None), slice(None)]
                edge[axis] = 0 if step == 1 else -1
                shifted_known[tuple(edge)] = False
                total += np.where(shifted_known, shifted, 0.0)
                count += shifted_known
            new = ~known & (count > 0)
            level[new] = total[new] / count[new]
            known |= new
        out[k] = level
    return out


def to_initial_state(
    samples: xr.Dataset,
    target: PathLike,
    *,
    index: int = 0,
    prefix: str = "initial",
    overwrite: bool = False,
) -> list[Path]:
    """Write one generated state as NEMO initial-state files (``ln_tsd_init = .true.``).

    Two files, ``{prefix}_s{index:03d}_temperature_nomask.nc`` (``votemper``) and
    ``{prefix}_s{index:03d}_salinity_nomask.nc`` (``vosaline``), on the model's grid and levels with
    ``time_counter`` UNLIMITED (one record), float64, no ``_FillValue``: land is filled from the nearest
    ocean cells of the same level ("nomask": every cell holds a plausible value), levels without ocean
    from the level above. NEMO masks land itself; velocities start at rest. A
    ``namelist_initial_state.txt`` beside them holds the ``&namrun``/``&namtsd`` settings.

    Parameters
    ----------
    samples : xarray.Dataset
        Canonical states with ``toce``, ``soce`` and ``tmask``.
    target : path
        Output folder.
    index : int
        Which state (along ``sample`` or ``t``).
    prefix : str
        File name prefix.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The temperature and salinity files.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> [p.name for p in to_initial_state(states, tempfile.mkdtemp(), index=1)]
    ['initial_s001_temperature_nomask.nc', 'initial_s001_salinity_nomask.nc']
    """
    from . import __version__

    indices = _indices(samples)
    if not 0 <= int(index) < len(indices):
        raise InvalidDataError(f"index: expected 0 <= index < {len(indices)}, found {index!r}.")
    dim = _record_dim(samples)
    label = indices[int(index)]
    state = (samples if dim is None else samples.isel({dim: int(index)})).load()
    mesh = _sample_mesh(state)
    folder = Path(target)
    number = label if label is not None else int(index)
    stem = f"{prefix}_s{number:03d}"
    names = {
        "votemper": (f"{stem}_temperature_nomask", "toce", "sea_water_conservative_temperature", "degC",
                     "Sea water temperature (land filled)"),
        "vosaline": (f"{stem}_salinity_nomask", "soce", "sea_water_absolute_salinity", "g kg-1",
                     "Sea water salinity (land filled)"),
    }
    paths = [folder / f"{file}.nc" for file, *_ in names.values()] + [folder / "namelist_initial_state.txt"]
    for path in paths:
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite on the command line) to replace it.")
    nz, ny, nx = mesh.shape
    written: list[Path] = []
    with contextlib.ExitStack() as stack:
        for variable, (file, source, standard_name, units, long_name) in names.items():
            values = _field(state, source, long_name)
            _land_zero(values, mesh.tmask, source, f"state {number}")  # raises on NaN in the ocean
            filled = _drown(values, mesh.tmask)
            ds = xr.Dataset(
                {
                    variable: (("time_counter", "nav_lev", "y", "x"), filled[None],
                               {"standard_name": standard_name, "units": units, "long_name": long_name}),
                    "nav_lon": (("y", "x"), np.asarray(mesh.nav_lon if mesh.nav_lon is not None else np.zeros((ny, nx)), dtype=np.float32)),
                    "nav_lat": (("y", "x"), np.asarray(mesh.nav_lat if mesh.nav_lat is not None else np.zeros((ny, nx)), dtype=np.float32)),
                },
                coords={
                    "nav_lev": ("nav_lev", np.asarray(mesh.nav_lev if mesh.nav_lev is not None else np.arange(nz), dtype=np.float32),
                                {"units": "m", "positive": "down", "long_name": "Depth of T levels"}),
                    "time_counter": ("time_counter", np.array([0.0]), {"units": "seconds", "long_name": "Time"}),
                },
                attrs={
                    "title": f"NEMO initial state ({variable}, land filled) of a generated ocean state",
                    "source": f"xoceandiff {__version__}",
                    "history": _history().replace("restart written by xoceandiff.restart.to_restart",
                                                  "initial state written by xoceandiff.restart.to_initial_state"),
                },
            )
            path = folder / f"{file}.nc"
            tmp = stack.enter_context(atomic_path(path, overwrite=overwrite))
            _write_restart(ds, tmp)
            written.append(path)
        namelist = "\n".join(
            [
                f"! NEMO namelist settings to start from the initial state written by xoceandiff {__version__}",
                "&namrun",
                "   ln_rstart   = .false.",
                "/",
                "&namtsd",
                "   ln_tsd_init = .true.",
                "   ln_tsd_dmp  = .false.",
                f"   cn_dir      = \"{folder.resolve()}/\"",
                "   !         file name                      ! freq (h) ! variable ! time interp ! clim ! 'yearly' ! weights ! rotation ! lsm",
                f"   sn_tem  = '{names['votemper'][0]}', -12., 'votemper', .false., .true., 'yearly', '', '', ''",
                f"   sn_sal  = '{names['vosaline'][0]}', -12., 'vosaline', .false., .true., 'yearly', '', '', ''",
                "/",
                "! One record (a yearly climatology): the same state whatever the start date. Velocities start at rest.",
            ]
        ) + "\n"
        _write_text(folder / "namelist_initial_state.txt", namelist, stack, overwrite)
    return written


# --- checking -------------------------------------------------------------------------------------------------


def check_restart(
    path: PathLike,
    mesh_mask: PathLike | xr.Dataset | MeshInfo,
    *,
    nemo_version: NemoVersion | str = "4.2",
) -> list[str]:
    """Every way a restart file breaks NEMO's reading rules; an empty list means NEMO can read it.

    Checked: the file name (``.nc``, and no ``_<digits>.nc`` unless the file is a rank's piece with
    ``DOMAIN_*`` attributes); an UNLIMITED ``time_counter`` with at least one record; the variables the
    version reads (:data:`RESTART_VARIABLES`); 3-D fields ``(time_counter, nav_lev, y, x)`` and 2-D fields
    ``(time_counter, y, x)`` with the mesh_mask's sizes (a piece's local sizes); calendar scalars 0-d;
    float64 data; no ``_FillValue`` attribute; no NaN or infinity; land 0 in ``tn``, ``sn`` (``tb``,
    ``sb``).

    Parameters
    ----------
    path : path
        The restart file.
    mesh_mask : path, xarray.Dataset or MeshInfo
        The configuration's mesh_mask/domain_cfg (see :func:`read_mesh`).
    nemo_version : {"4.0", "4.2", "5.0"}
        Which variable set is required.

    Returns
    -------
    list of str
        One message per violation, naming the variable, what NEMO expects and what was found.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> states = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> (path,) = to_restart(states, tempfile.mkdtemp())
    >>> check_restart(path, states)
    []
    >>> check_restart(path, states, nemo_version="3.6")
    Traceback (most recent call last):
    ...
    xoceandiff.errors.InvalidDataError: nemo_version: expected one of ['4.0', '4.2', '5.0'], found '3.6'.
    """
    version = _check_version(nemo_version)
    path = Path(path)
    mesh = read_mesh(mesh_mask)
    problems: list[str] = []
    if not path.name.endswith(".nc"):
        problems.append(f"file name {path.name!r}: NEMO appends '.nc' to cn_ocerst_in; name the file '<name>.nc'.")
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        global_attrs = set(nc.ncattrs())
        tmask = mesh.tmask
        if "DOMAIN_number" in global_attrs:
            rank = int(np.asarray(nc.getncattr("DOMAIN_number")).ravel()[0])
            if {"DOMAIN_position_first", "DOMAIN_position_last"} <= global_attrs:
                first = np.asarray(nc.getncattr("DOMAIN_position_first")).ravel()
                last = np.asarray(nc.getncattr("DOMAIN_position_last")).ravel()
                tmask = tmask[:, first[1] - 1: last[1], first[0] - 1: last[0]]
            else:
                problems.append(
                    "a rank's piece (DOMAIN_number) without DOMAIN_position_first/DOMAIN_position_last: cannot tell "
                    "where it lies in the global domain."
                )
            match = _RANK_PIECE_RE.search(path.name)
            if match is None or int(match.group(1)) != rank:
                problems.append(
                    f"file name {path.name!r}: a piece of rank {rank} (DOMAIN_number) must be named "
                    f"'<cn_ocerst_in>_{rank:04d}.nc'."
                )
        elif is_rank_piece_name(path.name):
            problems.append(
                f"file name {path.name!r} ends in '_<digits>.nc': NEMO takes it for one MPI rank's piece. Rename it "
                "(e.g. 'restart_s000_xoceandiff.nc')."
            )
        nz, ny, nx = tmask.shape

        record = nc.dimensions.get("time_counter")
        if record is None:
            problems.append("dimension 'time_counter' is missing: NEMO needs an UNLIMITED record dimension.")
        else:
            if not record.isunlimited():
                problems.append(
                    f"dimension 'time_counter' has a fixed size ({len(record)}): NEMO counts fixed dimensions as spatial "
                    "and stops; write it UNLIMITED (xarray: unlimited_dims=['time_counter'])."
                )
            if len(record) < 1:
                problems.append("dimension 'time_counter' holds no record: NEMO reads record 1.")

        missing = [name for name in RESTART_VARIABLES[version] if name not in nc.variables]
        if missing:
            problems.append(f"variables missing for NEMO {version}: {missing}.")

        def field_layout(name: str, spatial: tuple[int, ...], labels: str) -> None:
            var = nc.variables[name]
            dims = var.dimensions
            expected = f"(time_counter, {labels}) = (UNLIMITED, {', '.join(map(str, spatial))})"
            found = f"{dims} = {var.shape}"
            if len(dims) != len(spatial) + 1:
                problems.append(f"{name}: expected dimensions {expected}, found {found}.")
                return
            if not nc.dimensions[dims[0]].isunlimited():
                problems.append(f"{name}: its first dimension {dims[0]!r} must be the UNLIMITED record dimension; found {found}.")
            if tuple(var.shape[1:]) != tuple(spatial):
                problems.append(f"{name}: expected dimensions {expected} (the mesh_mask's sizes), found {found}.")

        for name in _FIELDS_3D[version] + _OPTIONAL_3D:
            if name in nc.variables:
                field_layout(name, (nz, ny, nx), "nav_lev, y, x")
        for name in _FIELDS_2D[version] + _OPTIONAL_2D:
            if name in nc.variables:
                field_layout(name, (ny, nx), "y, x")
        for name in _SCALARS:
            if name in nc.variables and nc.variables[name].ndim != 0:
                problems.append(
                    f"{name}: expected a 0-d scalar, found dimensions {nc.variables[name].dimensions} "
                    f"of sizes {nc.variables[name].shape}."
                )

        for name, var in nc.variables.items():
            if "_FillValue" in var.ncattrs():
                problems.append(
                    f"{name}: has a _FillValue attribute ({var.getncattr('_FillValue')!r}); NEMO restarts have none "
                    "(xarray: encoding {'_FillValue': None}, land 0)."
                )
            if name in _COORDINATES:
                continue
            if var.dtype != np.float64:
                problems.append(f"{name}: expected float64 (double), found {var.dtype}.")
            if var.dtype.kind == "f":
                values = np.asarray(var[...])
                bad = ~np.isfinite(values)
                if bad.any():
                    problems.append(f"{name}: {int(bad.sum())} values are NaN or infinite; NEMO needs finite values (land 0).")
                if name in _TEMPERATURE_SALINITY and values.ndim == 4 and values.shape[1:] == tmask.shape:
                    land = (values != 0) & ~tmask[None]
                    if land.any():
                        problems.append(f"{name}: {int(land.sum())} land cells (tmask = 0) are not 0.")
    return problems
