"""The embedded DINO-like dataset: an analytic DINO grid with synthetic, realistic snapshots.

No files and no network: :func:`dino` builds the grid of the DINO configuration (Kamm, Deshayes & Madec
2025; one basin on a Mercator sphere with a re-entrant southern channel) and ``n`` snapshots of
temperature, salinity and sea surface height whose per-level horizontal statistics follow the real 1°
DINO data, with warm salty tropics, cold fresh poles, a wind-driven gyre, eddies, a seasonal cycle and
random large-scale modes. Columns are statically stable by construction (see :func:`_stabilise`).

The result has exactly the structure of :func:`xoceandiff.open_nemo`'s (it goes through the same
:func:`xoceandiff.nemo.canonicalise`), and it is lazy: each chunk of snapshots is generated when computed,
from random streams seeded by ``(seed, snapshot index)``, so values do not depend on the chunking.
"""

from __future__ import annotations

import csv
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from .canonical import HORIZONTAL_DIMS, SPATIAL_DIMS, X, Y, Z, ocean_mask
from .conventions import TIME_DIM
from .eos import sigma0_teos10
from .errors import GridMismatchError, InvalidDataError
from .nemo import canonicalise

__all__ = ["dino", "dino_grid", "dino_resolution_of", "reference_levels"]

EARTH_RADIUS = 6371229.0  # m, NEMO's ra
N_LEVELS = 36  # level 35 is land everywhere
SSH_MEAN, SSH_STD = -0.327, 0.776  # m, real 1° DINO data
SNAPSHOT_DAYS = 10
_CHANNEL_LATITUDES = (-65.0, -46.0)  # re-entrant channel rows (1°: rows 13-47)


def reference_levels() -> dict[str, np.ndarray]:
    """Per-level depths, thicknesses and the real 1° DINO data's horizontal statistics.

    Returns
    -------
    dict of numpy arrays
        ``gdept_1d``, ``e3t_1d`` (36 levels, m) and ``toce_mean``, ``toce_std``, ``soce_mean``,
        ``soce_std`` (35 wet levels; level 35 is land).

    Examples
    --------
    >>> levels = reference_levels()
    >>> round(float(levels["e3t_1d"][:35].sum()), 1)
    4000.0
    """
    text = resources.files("xoceandiff").joinpath("data/dino_1deg_levels.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    col = lambda key: np.array([float(r[key]) for r in rows if r[key] != ""])  # noqa: E731
    return {
        "gdept_1d": col("gdept_1d_m"),
        "e3t_1d": col("e3t_1d_m"),
        "toce_mean": col("toce_mean_degC"),
        "toce_std": col("toce_std_degC"),
        "soce_mean": col("soce_mean"),
        "soce_std": col("soce_std"),
    }


def dino_grid(resolution: float = 1.0) -> xr.Dataset:
    """The analytic DINO grid and land-sea mask, on xnemogcm's dimensions.

    Parameters
    ----------
    resolution : float
        Grid spacing in degrees of longitude (1.0 gives the paper's 62 x 199 x 36 grid).

    Returns
    -------
    xarray.Dataset
        Grid variables as in a NEMO ``mesh_mask.nc`` opened by xnemogcm (``tmask``, ``umask``, ``vmask``,
        ``e1t`` ... ``e2f``, ``e3t_0`` ... ``e3w_0``, ``gdept_1d``, ``e3t_1d``, ``glamt``, ``gphit``, ...),
        global attribute ``Iperio = 1``.

    Examples
    --------
    >>> grid = dino_grid(1.0)
    >>> dict(grid.sizes)["x_c"], dict(grid.sizes)["y_c"], dict(grid.sizes)["z_c"]
    (62, 199, 36)
    >>> int(grid.tmask.isel(z_c=0).sum())
    11890
    """
    if not 0.1 <= resolution <= 5.0:
        raise InvalidDataError(
            f"resolution: expected a grid spacing between 0.1 and 5 degrees, found {resolution!r}."
        )
    nx, half = _dino_columns_and_half_rows(resolution)
    dlam = np.deg2rad(resolution)
    i = np.arange(nx)
    j = np.arange(-half, half + 1)
    ny = j.size
    lon_t = resolution * (i - 0.5)
    lon_u = lon_t + resolution / 2
    lat_t = np.rad2deg(np.arcsin(np.tanh(dlam * j)))
    lat_v = np.rad2deg(np.arcsin(np.tanh(dlam * (j + 0.5))))
    e_t = EARTH_RADIUS * dlam * np.cos(np.deg2rad(lat_t))  # isotropic Mercator: e1 = e2
    e_v = EARTH_RADIUS * dlam * np.cos(np.deg2rad(lat_v))

    # Land-sea mask: walls all round, except the channel rows, which are open across the east-west edge.
    ocean2d = np.zeros((ny, nx), dtype=bool)
    ocean2d[1:-1, 1:-1] = True
    channel = (lat_t >= _CHANNEL_LATITUDES[0]) & (lat_t <= _CHANNEL_LATITUDES[1])
    ocean2d[channel, 0] = ocean2d[channel, -1] = True
    tmask = np.repeat(ocean2d[None], N_LEVELS, axis=0)
    tmask[-1] = False
    umask = tmask & np.roll(tmask, -1, axis=2)  # periodic in x (Iperio = 1)
    vmask = tmask & np.concatenate([tmask[:, 1:], np.zeros_like(tmask[:, :1])], axis=1)

    # s-coordinate-like thicknesses: 35 wet levels in every column, stretched to the local depth
    # (4000 m in the interior, 2048 m on the continental slopes).
    levels = reference_levels()
    lon2d, lat2d = np.meshgrid(lon_t, lat_t)
    slope = np.maximum.reduce(
        [np.exp(-(lon2d - 0.5) / 4.0), np.exp(-(59.5 - lon2d) / 4.0), np.exp(-(lat2d + 69.85) / 3.0), np.exp(-(69.85 - lat2d) / 3.0)]
    )
    slope = np.where(channel[:, None], np.exp(-(lat2d + 69.85) / 3.0), slope)
    depth = 4000.0 - (4000.0 - 2048.0) * np.clip(slope, 0.0, 1.0)
    e3t = levels["e3t_1d"][:, None, None] * np.where(np.arange(N_LEVELS)[:, None, None] < N_LEVELS - 1, depth / 4000.0, 1.0)
    e3u = 0.5 * (e3t + np.roll(e3t, -1, axis=2))
    e3v = 0.5 * (e3t + np.concatenate([e3t[:, 1:], e3t[:, -1:]], axis=1))
    gdepw_1d = np.concatenate([[0.0], np.cumsum(levels["e3t_1d"])[:-1]])
    e3w_1d = np.concatenate([[levels["gdept_1d"][0]], np.diff(levels["gdept_1d"])])
    e3w = e3w_1d[:, None, None] * e3t / levels["e3t_1d"][:, None, None]

    # T, U, V, F points: xnemogcm's faces (x_f, y_f) beside the canonical T dims
    tt = HORIZONTAL_DIMS
    ut = (Y, "x_f")
    vt = ("y_f", X)
    ft = ("y_f", "x_f")
    zt = (Z,)
    full = lambda a: np.broadcast_to(a, (ny, nx)).copy()  # noqa: E731
    grid = xr.Dataset(
        {
            "tmask": (zt + tt, tmask.astype(np.int8)),
            "umask": (zt + ut, umask.astype(np.int8)),
            "vmask": (zt + vt, vmask.astype(np.int8)),
            "e1t": (tt, full(e_t[:, None])),
            "e2t": (tt, full(e_t[:, None])),
            "e1u": (ut, full(e_t[:, None])),
            "e2u": (ut, full(e_t[:, None])),
            "e1v": (vt, full(e_v[:, None])),
            "e2v": (vt, full(e_v[:, None])),
            "e1f": (ft, full(e_v[:, None])),
            "e2f": (ft, full(e_v[:, None])),
            "e3t_0": (zt + tt, e3t),
            "e3u_0": (zt + ut, e3u),
            "e3v_0": (zt + vt, e3v),
            "e3w_0": (("z_f",) + tt, e3w),
            "e3t_1d": (zt, levels["e3t_1d"]),
            "e3w_1d": (("z_f",), e3w_1d),
            "gdepw_1d": (("z_f",), gdepw_1d),
            "bathy_metry": (tt, depth * ocean2d),
        },
        coords={
            X: (X, i, {"axis": "X"}),
            "x_f": ("x_f", i + 0.5, {"axis": "X", "c_grid_axis_shift": 0.5}),
            Y: (Y, np.arange(ny), {"axis": "Y"}),
            "y_f": ("y_f", np.arange(ny) + 0.5, {"axis": "Y", "c_grid_axis_shift": 0.5}),
            Z: (Z, np.arange(N_LEVELS), {"axis": "Z"}),
            "z_f": ("z_f", np.arange(N_LEVELS) - 0.5, {"axis": "Z", "c_grid_axis_shift": -0.5}),
            "glamt": (tt, full(lon_t[None, :])),
            "gphit": (tt, full(lat_t[:, None])),
            "glamu": (ut, full(lon_u[None, :])),
            "gphiu": (ut, full(lat_t[:, None])),
            "glamv": (vt, full(lon_t[None, :])),
            "gphiv": (vt, full(lat_v[:, None])),
            "glamf": (ft, full(lon_u[None, :])),
            "gphif": (ft, full(lat_v[:, None])),
            "gdept_1d": (zt, levels["gdept_1d"]),
        },
        attrs={"Iperio": 1, "Jperio": 0, "name": "DINO", "resolution_degrees": resolution},
    )
    return grid


def _dino_columns_and_half_rows(resolution: float) -> tuple[int, int]:
    """``nx`` (60 degrees of basin and the 2 periodic halo columns) and the rows on each side of the equator."""
    return int(round(60 / resolution)) + 2, int(round(99 / resolution))


DINO_RESOLUTIONS: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25)
"""The resolutions (degrees) that :func:`dino_resolution_of` recognises from a grid's shape."""


def dino_resolution_of(sizes: Mapping[Hashable, int]) -> float:
    """The resolution of the DINO-like grid with these horizontal sizes: :func:`dino_grid`'s shape, inverted.

    For data that record no provenance (sample files): which embedded dataset shares their grid.

    Parameters
    ----------
    sizes : mapping
        Dimension sizes with ``y_c`` and ``x_c`` (``ds.sizes`` of a canonical dataset or a sample file).

    Raises
    ------
    GridMismatchError
        No resolution of :data:`DINO_RESOLUTIONS` gives this shape; the message says to pass the
        reference data instead.

    Examples
    --------
    >>> dino_resolution_of(dino_grid(4.0).sizes)
    4.0
    """
    shape = (sizes.get(Y), sizes.get(X))
    for resolution in DINO_RESOLUTIONS:
        nx, half = _dino_columns_and_half_rows(resolution)
        if (2 * half + 1, nx) == shape:
            return resolution
    raise GridMismatchError(
        f"grid: expected the shape (y_c, x_c) of a DINO-like grid at one of {DINO_RESOLUTIONS} degrees, "
        f"found {shape}; the data are on another grid: pass the reference data with their mesh mask "
        "(xoceandiff.open_nemo(files, mesh_mask=...); on the command line --reference FILES --mesh-mask FILE)."
    )

@dataclass(frozen=True)
class _Climatology:
    """Time-independent ingredients of the synthetic state, computed once per grid."""

    grid: xr.Dataset

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        g = self.grid
        levels = reference_levels()
        lat = g.gphit.values
        lon = g.glamt.values
        ocean = ocean_mask(g, "ssh").values
        z = levels["gdept_1d"][:35, None, None]
        basin_x = np.clip((lon - lon[ocean].min()) / (lon[ocean].max() - lon[ocean].min()), 0.0, 1.0)

        # Surface temperature restoring target of DINO: -0.5 °C south, 27 °C at the equator, 5 °C north.
        south = lat < 0
        pole_t = np.where(south, -0.5, 5.0)
        shape = np.cos(np.pi / 2 * np.clip(np.abs(lat) / 70.0, 0, 1)) ** 1.6
        t_surf = pole_t + (27.0 - pole_t) * shape
        # Wind-driven gyres (Stommel-like, western intensification) as a streamfunction.
        west = np.exp(-basin_x / 0.08)
        gyre = (1.0 - basin_x - west * (1 - basin_x)) * np.sin(np.pi * lat / 45.0) * (np.abs(lat) < 60)
        gyre += 0.6 * np.exp(-(((lat + 55.0) / 8.0) ** 2))  # circumpolar current through the channel
        t_surf = t_surf + 2.0 * gyre
        # Thermocline: deeper in the subtropical gyres, shallow at high latitude.
        thermocline = 150.0 + 650.0 * np.exp(-(((np.abs(lat) - 25.0) / 20.0) ** 2)) + 150 * gyre
        t_deep = 1.5 + 1.5 * np.clip((lat + 30.0) / 100.0, 0, 1) + 0.8 * shape
        temperature = t_deep + (t_surf - t_deep) * np.exp(-z / thermocline)

        # Salinity: DINO restores to 35 south, 37.25 in the subtropics/equator, 35.1 north; fresh poles.
        s_surf = np.where(south, 35.0, 35.1) + (37.25 - np.where(south, 35.0, 35.1)) * shape**0.7
        s_deep = 34.95 + 0.15 * np.clip((lat + 30.0) / 100.0, 0, 1)
        salinity = s_deep + (s_surf - s_deep) * np.exp(-z / (0.8 * thermocline))

        # Bring each level to the real data's horizontal mean and spread (over ocean cells).
        def match(field: np.ndarray, mean: np.ndarray | None, std: np.ndarray) -> np.ndarray:
            values = field[:, ocean]
            level_mean = values.mean(axis=1)[:, None, None]
            anomaly = (field - level_mean) / values.std(axis=1)[:, None, None]
            return (level_mean if mean is None else mean[:, None, None]) + std[:, None, None] * anomaly

        # Matching the statistics can create inversions where levels differ little (mixed layer, abyss,
        # where the real mean profile is only marginally stable); alternate convective adjustment and
        # matching so that the climatology is both stable and on the statistics, and snapshots need only
        # small adjustments. Salinity keeps the level means the adjustment gives it (they move by
        # ~1e-4 relative): pinning them too would make the abyss unstable again.
        salinity = match(salinity, levels["soce_mean"], levels["soce_std"])
        for _ in range(10):
            temperature = match(temperature, levels["toce_mean"], levels["toce_std"])
            salinity = match(salinity, None, levels["soce_std"])
            temperature, salinity = _stabilise(temperature, salinity)
        ssh = gyre - 0.4 * (t_surf - t_surf[ocean].mean()) / t_surf[ocean].std()
        ssh = SSH_MEAN + SSH_STD * (ssh - ssh[ocean].mean()) / ssh[ocean].std()
        return {
            "temperature": temperature.astype(np.float64),
            "salinity": salinity.astype(np.float64),
            "ssh": ssh,
            "ocean": ocean,
            "lat": lat,
            "lon": lon,
            "toce_std": levels["toce_std"],
            "soce_std": levels["soce_std"],
            "z": z,
        }


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_cells: float) -> np.ndarray:
    """Gaussian random field of unit variance with a Gaussian spectrum (correlation ~ scale_cells)."""
    ny, nx = shape
    white = rng.standard_normal(shape)
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    spectrum = np.exp(-0.5 * (2 * np.pi * scale_cells) ** 2 * (kx**2 + ky**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * spectrum, s=shape)
    return field / field.std()


def _stabilise(temperature: np.ndarray, salinity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convective adjustment: reorder each column's (T, S) pairs so that potential density increases with depth.

    Like NEMO's convection schemes, this mixes nothing away: each column keeps its water masses, the light
    ones on top. Axis -3 is depth (wet levels only).
    """
    rho = sigma0_teos10(temperature, salinity)
    order = np.argsort(rho, axis=-3, kind="stable")
    return np.take_along_axis(temperature, order, axis=-3), np.take_along_axis(salinity, order, axis=-3)


def _generate_block(indices: np.ndarray, climatology: _Climatology, seed: int) -> np.ndarray:
    """Snapshots ``indices`` stacked as (n, 2 * 35 + 1, ny, nx): temperature, salinity, ssh levels."""
    c = climatology.arrays
    ocean, lat, z = c["ocean"], c["lat"], c["z"]
    ny, nx = ocean.shape
    res = float(climatology.grid.attrs["resolution_degrees"])
    # Slow random large-scale modes: sums of sinusoids with periods of 1-10 years, phases from the seed,
    # so that any snapshot is computed without its predecessors (chunking does not change values).
    modes_rng = np.random.default_rng([seed, 2**31 - 1])
    n_modes = 4
    periods = modes_rng.uniform(365.0, 3650.0, size=(n_modes, 3))
    phases = modes_rng.uniform(0, 2 * np.pi, size=(n_modes, 3))
    mode_shapes = [_smooth_noise(modes_rng, (ny, nx), 12.0 / res) for _ in range(n_modes)]
    decay_deep = np.exp(-z / 1000.0)
    out = np.empty((len(indices), 71, ny, nx), dtype=np.float32)
    for slot, index in enumerate(indices):
        days = SNAPSHOT_DAYS * (index + 0.5)
        rng = np.random.default_rng([seed, int(index)])
        season = np.sin(2 * np.pi * days / 365.0)
        # Seasonal cycle of the surface layers: +-0.5 °C in the south, +-3 °C in the north (DINO forcing).
        seasonal_amp = np.where(lat < 0, 0.5, 3.0) * np.clip(np.abs(lat) / 60.0, 0, 1)
        t_anom = seasonal_amp * season * np.exp(-z / 40.0)
        large = sum(
            np.sin(2 * np.pi * days / periods[m, 0] + phases[m, 0]) * mode_shapes[m] for m in range(n_modes)
        ) / np.sqrt(n_modes / 2)
        eddies = _smooth_noise(rng, (ny, nx), 2.0 / res) * np.exp(-(((np.abs(lat) - 40.0) / 25.0) ** 2))
        t_anom = t_anom + c["toce_std"][:, None, None] * (0.06 * large + 0.05 * eddies) * (0.3 + 0.7 * decay_deep)
        s_anom = c["soce_std"][:, None, None] * (0.05 * large + 0.04 * eddies) * (0.3 + 0.7 * decay_deep)
        temperature, salinity = _stabilise(c["temperature"] + t_anom, c["salinity"] + s_anom)
        ssh = c["ssh"] + SSH_STD * (0.08 * large + 0.05 * eddies + 0.05 * season * np.sign(lat))
        out[slot, :35] = temperature
        out[slot, 35:70] = salinity
        out[slot, 70] = ssh
    # Land is written as NEMO writes it (0); canonicalise turns it into NaN.
    out[:, :70] *= np.tile(ocean, (70, 1, 1))
    out[:, 70] *= ocean
    return out


def dino(
    n: int = 100,
    resolution: float = 1.0,
    seed: int = 0,
    *,
    chunks: int = 10,
) -> xr.Dataset:
    """The embedded DINO-like dataset: ``n`` 10-day snapshots of toce, soce and ssh on the DINO grid.

    Parameters
    ----------
    n : int
        Number of snapshots (10 days apart).
    resolution : float
        Grid spacing in degrees (1.0: 62 x 199 x 36, the paper's grid; 4.0: 17 x 51 x 36 for quick tests).
    seed : int
        Random seed; the same seed gives the same snapshots, whatever ``chunks``.
    chunks : int
        Snapshots per dask chunk (the data are generated lazily, chunk by chunk).

    Returns
    -------
    xarray.Dataset
        Same structure as :func:`xoceandiff.open_nemo`'s result.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=3, resolution=4.0)
    >>> dict(ds.toce.sizes)
    {'t': 3, 'z_c': 36, 'y_c': 51, 'x_c': 17}
    >>> bool(ds.toce.isel(t=0, z_c=0).notnull().sum() == ds.tmask.isel(z_c=0).sum())
    True
    """
    if int(n) != n or n <= 0:
        raise InvalidDataError(f"n: expected a positive number of snapshots, found {n!r}.")
    if int(chunks) != chunks or chunks <= 0:
        raise InvalidDataError(f"chunks: expected a positive number of snapshots per chunk, found {chunks!r}.")
    grid = dino_grid(resolution)
    climatology = _Climatology(grid)
    ny, nx = (grid.sizes[d] for d in HORIZONTAL_DIMS)

    blocks = []
    for start in range(0, n, chunks):
        indices = np.arange(start, min(start + chunks, n))
        block = dask.delayed(_generate_block, pure=True)(indices, climatology, seed)
        blocks.append(dsa.from_delayed(block, shape=(len(indices), 71, ny, nx), dtype=np.float32))
    stacked = dsa.concatenate(blocks, axis=0)
    zeros = dsa.zeros((n, 1, ny, nx), dtype=np.float32, chunks=(stacked.chunks[0], 1, ny, nx))
    toce = dsa.concatenate([stacked[:, :35], zeros], axis=1)  # level 35 is land everywhere
    soce = dsa.concatenate([stacked[:, 35:70], zeros], axis=1)
    ssh = stacked[:, 70]

    time = np.datetime64("2000-01-01") + (np.arange(n) * SNAPSHOT_DAYS + SNAPSHOT_DAYS // 2).astype("timedelta64[D]")
    time = time.astype("datetime64[ns]")
    dims3 = (TIME_DIM, *SPATIAL_DIMS)
    merged = grid.assign(
        toce_inst=(dims3, toce, {"standard_name": "sea_water_conservative_temperature", "units": "degC"}),
        soce_inst=(dims3, soce, {"standard_name": "sea_water_absolute_salinity", "units": "1e-3"}),
        ssh_inst=((TIME_DIM, *HORIZONTAL_DIMS), ssh, {"standard_name": "sea_surface_height_above_geoid", "units": "m"}),
    ).assign_coords({TIME_DIM: (TIME_DIM, time, {"standard_name": "time", "axis": "T"})})
    ds = canonicalise(merged)
    ds.attrs.update(
        {
            "title": f"DINO-like synthetic ocean states ({resolution:g} degree)",
            "source": "xoceandiff.datasets.dino",
            "dino_seed": seed,
            "dino_resolution": resolution,
        }
    )
    return ds
