"""What NEMO reads from a restart: versions, variables, file names, and the configuration's grid.

NEMO reads a restart (``ln_rstart = .true.``) by position, not by name:

- the record dimension ``time_counter`` is UNLIMITED (NEMO counts every fixed-size dimension as
  spatial), 3-D fields are ``(time_counter, nav_lev, y, x)``, 2-D fields ``(time_counter, y, x)``,
  calendar scalars are 0-d, and the sizes are those of the configuration's mesh_mask/domain_cfg;
- fields are float64 with land 0: no NaN and no ``_FillValue`` anywhere;
- a file name ending in ``_<digits>.nc`` is taken for one MPI rank's piece.

The writers (:mod:`xoceandiff.restart`) and the checker (:mod:`xoceandiff.restart_check`) share these
rules from here; :func:`read_mesh` reads the grid through :func:`xoceandiff.nemo.open_grid`, the one
reader of mesh_mask/domain_cfg files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from .canonical import SPATIAL_DIMS, ocean_mask
from .errors import InvalidDataError
from .ranks import is_rank_piece_name, rank_piece_name

__all__ = [
    "NEMO_VERSIONS",
    "RESTART_VARIABLES",
    "NemoVersion",
    "check_version",
    "restart_file_name",
    "is_rank_piece_name",
    "MeshInfo",
    "read_mesh",
]

PathLike = str | os.PathLike
NemoVersion = Literal["4.0", "4.2", "5.0"]

NEMO_VERSIONS: tuple[str, ...] = ("4.0", "4.2", "5.0")
"""NEMO versions whose restart layout :func:`xoceandiff.restart.to_restart` writes and checks."""

# What each version reads (restart.F90, DOM/daymod.F90). Leapfrog versions read "now" and "before"
# fields; NEMO 5 (RK3) reads "now" fields only (uu_n/vv_n/ssha are rebuilt when absent).
FIELDS_3D = {
    "4.0": ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"),
    "4.2": ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"),
    "5.0": ("tn", "sn", "un", "vn"),
}
FIELDS_2D = {"4.0": ("sshn", "sshb"), "4.2": ("sshn", "sshb"), "5.0": ("sshn",)}
SCALARS = ("kt", "ndastp", "adatrj", "ntime", "rdt")
RESTART_VARIABLES: dict[str, tuple[str, ...]] = {
    version: FIELDS_3D[version] + FIELDS_2D[version] + SCALARS for version in NEMO_VERSIONS
}
"""Variables :func:`xoceandiff.restart.to_restart` writes (and the checker requires), per NEMO version."""

# Optional fields NEMO writes in its own restarts (checked for layout and type when present).
OPTIONAL_3D = ("uu_n", "vv_n", "rhop", "en", "avt_k", "avm_k", "dissl", "rhd")
OPTIONAL_2D = ("ssha", "sshbb_e", "sshb_e", "sshn_e", "ub_e", "vb_e", "un_e", "vn_e", "ub2_b", "vb2_b")
COORDINATES = ("nav_lon", "nav_lat", "nav_lev", "time_counter")
TEMPERATURE_SALINITY = ("tn", "sn", "tb", "sb")
RESTART_DIMS_3D = ("time_counter", "nav_lev", "y", "x")
RESTART_DIMS_2D = ("time_counter", "y", "x")


def check_version(nemo_version: str) -> str:
    """``nemo_version`` as one of :data:`NEMO_VERSIONS`.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        Any other version.

    Examples
    --------
    >>> check_version(5.0)
    '5.0'
    """
    version = str(nemo_version)
    if version not in NEMO_VERSIONS:
        raise InvalidDataError(f"nemo_version: expected one of {list(NEMO_VERSIONS)}, found {nemo_version!r}.")
    return version


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
    return rank_piece_name(stem, rank) if rank is not None else f"{stem}.nc"


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


def _optional(grid: xr.Dataset, *names: str) -> np.ndarray | None:
    for name in names:
        if name in grid.variables:
            return np.asarray(grid[name].values)
    return None


def _mesh_of_grid(grid: xr.Dataset, source: str) -> MeshInfo:
    """The MeshInfo of a canonical grid (``tmask`` on ``z_c, y_c, x_c``); only grid variables are read."""
    tmask = ocean_mask(grid)
    if set(tmask.dims) != set(SPATIAL_DIMS):
        raise InvalidDataError(
            f"tmask of the {source}: expected dimensions {SPATIAL_DIMS} (a canonical grid), found {tmask.dims}. "
            "Pass the mesh_mask.nc/domain_cfg.nc path, or open it with xoceandiff.nemo.open_grid."
        )
    lev = _optional(grid, "gdept_1d", "nav_lev")
    return MeshInfo(
        tmask=np.asarray(tmask.transpose(*SPATIAL_DIMS).values),
        nav_lon=_optional(grid, "glamt", "nav_lon"),
        nav_lat=_optional(grid, "gphit", "nav_lat"),
        nav_lev=None if lev is None else lev.ravel(),
        source=source,
    )


def read_mesh(mesh_mask: PathLike | xr.Dataset | MeshInfo) -> MeshInfo:
    """The land-sea mask, longitudes, latitudes and depths of a configuration.

    Parameters
    ----------
    mesh_mask : path, xarray.Dataset or MeshInfo
        NEMO's ``mesh_mask.nc`` (``tmask``) or ``domain_cfg.nc`` (``top_level``/``bottom_level``), read with
        :func:`xoceandiff.nemo.open_grid`, or a canonical dataset or grid (``tmask`` on ``z_c, y_c, x_c``).

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
        return _mesh_of_grid(mesh_mask, "mesh_mask dataset")
    from .nemo import open_grid  # xnemogcm, only when a file is read

    path = Path(mesh_mask)
    if not path.is_file():
        raise FileNotFoundError(f"mesh_mask file not found: {str(path)!r}")
    return _mesh_of_grid(open_grid(path), str(path))
