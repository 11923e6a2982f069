"""Physical metrics of ocean states: the paper's table and the checks around it.

Everything here is lazy xarray arithmetic: each function returns a Dataset (or DataArray) whose
dask-backed variables compute when the user asks (``.compute()``, ``.load()``, a writer). Fields are
cast to float64 before any arithmetic, so float32 model output and float64 references give the same
answers.

Per record (the *record dimension* is the one dimension of the fields that is not spatial, see
``xoceandiff.canonical.record_dim``: ``t`` for model output, ``sample`` for generated states):

``check_density``
    Density errors (%), the paper's definition (Meunier et al. 2025, "Physical metrics"): potential
    density referenced to the surface per cell; the interface between vertically adjacent cells
    ``k`` and ``k+1`` (``k+1`` deeper) is unstable when ``rho[k+1] < rho[k]`` and both cells are
    ocean; it counts with the volume ``e1t * e2t * e3t`` of the deeper cell; the metric is
    ``100 * sum(unstable volumes) / volume of all ocean cells (every level)``. The equation of
    state follows the salinity of ``soce`` unless named (``eos="auto"``, :func:`dataset_eos`):
    NEMO's EOS-80 polynomial for practical salinity, its TEOS-10 polynomial for absolute salinity.
``BWbox_toce``, ``BWbox_soce``
    Bottom-Water box: volume-weighted means over the ocean cells that are *not*
    (``depth < depth_box`` and ``|latitude| < 30``).
``DWbox_toce``, ``DWbox_soce``
    Deep-Water box: ``500 m < depth < depth_box`` and ``|latitude| < 30``.
``temperature_500m_30NS``
    Mean temperature on the level nearest 500 m, ``-30 <= latitude <= 30``, weighted by the volume
    of the cells on that level.
``toce_profile``, ``soce_profile``, ``surface_toce``, ``surface_soce``, ``ssh_mean``, ``ssh_std``
    Area-weighted horizontal means over ocean cells, per level and at the surface; the area-weighted
    mean and standard deviation of the sea surface height.

Across a set of records: :func:`diversity` (mean pairwise RMS distance between members) and
:func:`profile_distance` (RMS difference of two sets' mean profiles).

Depth is the level depth ``gdept_1d``, latitude is ``gphit``, the ocean is ``tmask``; the record
dimension, ocean mask, cell areas and volumes are ``xoceandiff.canonical``'s. :data:`METRICS` is
the one table of every metric's label, display units and CF units: the ``units`` attributes here, the
report's tables (:mod:`xoceandiff.report`) and the figures' axes (:mod:`xoceandiff.plotting`) read it.
For the figures, :func:`surface_field`, :func:`zonal_mean` and :func:`unstable_column_counts` give the
fields they draw.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import xarray as xr

from .canonical import (
    HORIZONTAL_DIMS,
    SPATIAL_DIMS,
    X,
    Y,
    Z,
    cell_area,
    cell_volume,
    cell_weights,
    eos_for,
    field_dims,
    grid_variable,
    ocean_mask,
    record_dim,
    salinity_kind,
    stamp_history,
)
from .conventions import FIELDS
from .eos import AUTO_EOS, EOS_NAMES, potential_density
from .errors import GridMismatchError, InvalidDataError, MissingVariableError

__all__ = [
    "Metric",
    "METRICS",
    "metrics_for",
    "SCALAR_METRICS",
    "SET_METRICS",
    "SPATIAL_DIMS",
    "record_dim",
    "record_labels",
    "dataset_eos",
    "box_masks",
    "unstable_interfaces",
    "unstable_column_counts",
    "density_error_percent",
    "box_means",
    "horizontal_mean_profiles",
    "temperature_500m_30ns",
    "surface_means",
    "surface_field",
    "zonal_mean",
    "diversity",
    "profile_distance",
    "diagnostics",
]


@dataclass(frozen=True)
class Metric:
    """How one metric is named and measured: variable, short label, display units, CF units.

    Attributes
    ----------
    name : str
        The variable name in the datasets this module returns (``"BWbox_toce"``).
    label : str
        Short human label for table headers and figure axes (``"Bottom-Water T"``).
    units : str
        Units as printed in tables and on figures (``"°C"``).
    cf_units : str
        Units as written in the ``units`` attribute of files (``"degC"``, UDUNITS).

    Examples
    --------
    >>> METRICS["BWbox_soce"].heading, METRICS["BWbox_soce"].cf_units
    ('Bottom-Water S (g/kg)', 'g kg-1')
    """

    name: str
    label: str
    units: str
    cf_units: str

    @property
    def heading(self) -> str:
        """``"label (units)"``: a table header or an axis label."""
        return f"{self.label} ({self.units})"


_T_UNITS, _S_UNITS, _SSH_UNITS = (FIELDS[name].units for name in ("toce", "soce", "ssh"))

# The one table of metric names, labels and units: the report's tables, the figures' axes and the
# ``units`` attributes below all read it.
METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        metric.name: metric
        for metric in (
            Metric("check_density", "Density errors", "%", "%"),
            Metric("BWbox_toce", "Bottom-Water T", "°C", _T_UNITS),
            Metric("BWbox_soce", "Bottom-Water S", "g/kg", _S_UNITS),
            Metric("DWbox_toce", "Deep-Water T", "°C", _T_UNITS),
            Metric("DWbox_soce", "Deep-Water S", "g/kg", _S_UNITS),
            Metric("temperature_500m_30NS", "T at 500 m, 30°S-30°N", "°C", _T_UNITS),
            Metric("surface_toce", "Mean surface T", "°C", _T_UNITS),
            Metric("surface_soce", "Mean surface S", "g/kg", _S_UNITS),
            Metric("ssh_mean", "Mean ssh", "m", _SSH_UNITS),
            Metric("ssh_std", "ssh spread (std)", "m", _SSH_UNITS),
            Metric("toce_profile", "Horizontal-mean temperature", "°C", _T_UNITS),
            Metric("soce_profile", "Horizontal-mean salinity", "g/kg", _S_UNITS),
            Metric("diversity_toce", "Diversity T", "°C", _T_UNITS),
            Metric("diversity_soce", "Diversity S", "g/kg", _S_UNITS),
            Metric("diversity_ssh", "Diversity ssh", "m", _SSH_UNITS),
            Metric("profile_distance_toce", "Profile distance T", "°C", _T_UNITS),
            Metric("profile_distance_soce", "Profile distance S", "g/kg", _S_UNITS),
        )
    }
)
"""Every metric of this module by variable name: label, display units and CF units (:class:`Metric`)."""

_PRACTICAL_SALINITY_UNITS = ("PSS-78", "1")  # display, CF: practical salinity is dimensionless


def metrics_for(salinity: str = "absolute") -> Mapping[str, Metric]:
    """:data:`METRICS` for data of salinity kind ``salinity``: practical salinity has no units (PSS-78, CF "1").

    Examples
    --------
    >>> metrics_for("practical")["BWbox_soce"].heading, metrics_for("practical")["BWbox_soce"].cf_units
    ('Bottom-Water S (PSS-78)', '1')
    >>> metrics_for("absolute")["BWbox_soce"] is METRICS["BWbox_soce"]
    True
    """
    if salinity == "absolute":
        return METRICS
    display, cf = _PRACTICAL_SALINITY_UNITS
    return MappingProxyType(
        {name: Metric(m.name, m.label, display, cf) if m.cf_units == _S_UNITS else m for name, m in METRICS.items()}
    )

SCALAR_METRICS: tuple[str, ...] = (
    "check_density",
    "BWbox_toce",
    "BWbox_soce",
    "DWbox_toce",
    "DWbox_soce",
    "temperature_500m_30NS",
    "surface_toce",
    "surface_soce",
    "ssh_mean",
    "ssh_std",
)
"""The per-record scalar variables of :func:`diagnostics`, in table order."""

SET_METRICS: tuple[str, ...] = (
    "diversity_toce",
    "diversity_soce",
    "diversity_ssh",
    "profile_distance_toce",
    "profile_distance_soce",
)
"""The metrics of a whole set (:func:`diversity`, :func:`profile_distance`), in table order."""

TROPICS_LATITUDE = 30.0  # degrees: the boxes' latitude limit
DEEP_WATER_TOP = 500.0  # m: top of the Deep-Water box
TARGET_DEPTH_500M = 500.0  # m: the level of temperature_500m_30NS

EosName = Literal["auto", "teos10-poly", "eos80-poly", "seos"]


# --- inputs ----------------------------------------------------------------------------------------


def _field(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Field ``name`` without its (grid) coordinates, as float64, lazily; a clear error when absent."""
    if name not in ds.variables:
        raise MissingVariableError(
            f"the dataset has no {name!r}; the diagnostics need the fields toce, soce (ssh optional) and the "
            "grid variables tmask, e1t, e2t, e3t, gdept_1d, gphit. Open NEMO output with "
            "xoceandiff.open_nemo(..., mesh_mask=...) so that the grid comes with the fields."
        )
    return ds[name].reset_coords(drop=True).astype(np.float64)


def _depth(ds: xr.Dataset) -> xr.DataArray:
    return grid_variable(ds, "gdept_1d").astype(np.float64)


def _latitude(ds: xr.Dataset) -> xr.DataArray:
    return grid_variable(ds, "gphit").astype(np.float64)


def _weighted_mean(field: xr.DataArray, weights: xr.DataArray, dims: Sequence[str]) -> xr.DataArray:
    """``sum(w f) / sum(w)`` over ``dims``; cells of zero weight are ignored, NaN on weighted cells propagates.

    Where no cell has weight (a land-only level), the result is NaN without a division warning.
    """
    numerator = (field.where(weights > 0, 0.0) * weights).sum(dims, skipna=False)
    denominator = weights.sum(dims)
    return numerator / denominator.where(denominator > 0)


def _check_eos(eos: str) -> None:
    if eos != AUTO_EOS and eos not in EOS_NAMES:
        raise InvalidDataError(
            f"eos: expected 'auto' or one of {', '.join(repr(n) for n in EOS_NAMES)}, found {eos!r}; "
            "'auto' picks EOS-80 for practical salinity and TEOS-10 for absolute salinity."
        )


def dataset_eos(ds: xr.Dataset, eos: EosName = "auto") -> str:
    """The equation of state the density metrics of ``ds`` use.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset; with ``eos="auto"`` its ``soce`` standard name decides
        (:func:`xoceandiff.canonical.eos_for`).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        ``"auto"``: ``"eos80-poly"`` (NEMO's EOS-80 polynomial) when ``soce`` is practical salinity
        (``sea_water_practical_salinity``), ``"teos10-poly"`` otherwise. An explicit name is checked
        and returned.

    Returns
    -------
    str
        One of :data:`xoceandiff.eos.EOS_NAMES`.

    Raises
    ------
    InvalidDataError
        An unknown ``eos``.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> dataset_eos(ds), dataset_eos(ds, "seos")
    ('teos10-poly', 'seos')
    >>> ds.soce.attrs["standard_name"] = "sea_water_practical_salinity"
    >>> dataset_eos(ds)
    'eos80-poly'
    """
    _check_eos(eos)
    return eos_for(ds) if eos == AUTO_EOS else eos


def _check_depth_box(depth_box: float) -> float:
    value = float(depth_box)
    if not np.isfinite(value) or value <= DEEP_WATER_TOP:
        raise InvalidDataError(
            f"depth_box: expected a depth in m greater than {DEEP_WATER_TOP:g} (the top of the "
            f"Deep-Water box), found {depth_box!r}; the paper uses 1500."
        )
    return value


def _with_record_coord(result: xr.Dataset | xr.DataArray, ds: xr.Dataset, rdim: str):
    """Put back the record coordinate (the fields' coordinates were dropped for the arithmetic)."""
    if rdim in ds.coords:
        return result.assign_coords({rdim: ds[rdim]})
    return result


def record_labels(ds: xr.Dataset, rdim: Hashable | None = None) -> list[str]:
    """Printable labels of the records: dates as YYYY-MM-DD, else the coordinate values, else indices.

    Parameters
    ----------
    ds : xarray.Dataset
        A canonical dataset.
    rdim : str, optional
        The record dimension; default :func:`record_dim` of ``ds``.

    Examples
    --------
    >>> import xoceandiff
    >>> record_labels(xoceandiff.datasets.dino(n=2, resolution=4.0))
    ['2000-01-06', '2000-01-16']
    """
    rdim = record_dim(ds) if rdim is None else rdim
    if rdim in ds.coords:
        values = ds[rdim].values
        if np.issubdtype(values.dtype, np.datetime64):
            return [str(v)[:10] if str(v).endswith("T00:00:00.000000000") else str(v) for v in values]
        return [str(v) for v in values]
    return [str(i) for i in range(ds.sizes[rdim])]


# --- masks -----------------------------------------------------------------------------------------


def box_masks(ds: xr.Dataset, *, depth_box: float = 1500.0) -> xr.Dataset:
    """The ocean cells of the Bottom-Water and Deep-Water boxes.

    Parameters
    ----------
    ds : xarray.Dataset
        Anything with ``tmask``, ``gdept_1d`` and ``gphit``.
    depth_box : float, default 1500.0
        Bottom of the Deep-Water box and depth limit of the Bottom-Water box (m).

    Returns
    -------
    xarray.Dataset
        Boolean ``BWbox``: ocean and not (``depth < depth_box`` and ``|lat| < 30``); ``DWbox``: ocean
        and ``500 < depth < depth_box`` and ``|lat| < 30``; both on (z_c, y_c, x_c).

    Examples
    --------
    >>> import xoceandiff
    >>> boxes = box_masks(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> bool((boxes.BWbox & boxes.DWbox).any())
    False
    """
    depth_box = _check_depth_box(depth_box)
    ocean = ocean_mask(ds)
    depth = _depth(ds)
    tropics = abs(_latitude(ds)) < TROPICS_LATITUDE
    bottom = ocean & ~((depth < depth_box) & tropics)
    deep = ocean & (depth > DEEP_WATER_TOP) & (depth < depth_box) & tropics
    return xr.Dataset(
        {
            "BWbox": bottom.transpose(*SPATIAL_DIMS).assign_attrs(
                long_name=f"Bottom-Water box: ocean cells not (depth < {depth_box:g} m and |latitude| < 30)"
            ),
            "DWbox": deep.transpose(*SPATIAL_DIMS).assign_attrs(
                long_name=f"Deep-Water box: ocean cells with 500 m < depth < {depth_box:g} m and |latitude| < 30"
            ),
        },
        attrs={"depth_box": depth_box},
    )


# --- per-record metrics ----------------------------------------------------------------------------


def unstable_interfaces(ds: xr.Dataset, *, eos: EosName = "auto") -> xr.DataArray:
    """Where the water column is statically unstable, per interface between adjacent levels.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and ``tmask``.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the surface-referenced potential density
        (see :func:`xoceandiff.eos.potential_density`); ``"auto"`` matches the salinity of ``soce``
        (:func:`dataset_eos`: EOS-80 for practical salinity, TEOS-10 for absolute).

    Returns
    -------
    xarray.DataArray
        Boolean ``unstable`` (record, z_c, y_c, x_c) without the first level: the value at level
        ``k+1`` is True when ``rho[k+1] < rho[k]`` and both cells are ocean. Summing over ``z_c``
        counts the unstable interfaces of each column. Lazy. A NaN on an ocean cell makes its two
        interfaces count as stable.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> int(unstable_interfaces(ds).sum())  # the DINO-like states are stable by construction
    0
    """
    eos = dataset_eos(ds, eos)
    rdim = record_dim(ds)
    rho = potential_density(_field(ds, "toce"), _field(ds, "soce"), eos=eos)
    ocean = ocean_mask(ds)
    both_ocean = (ocean & ocean.shift({Z: 1}, fill_value=False)).isel({Z: slice(1, None)})
    lighter_below = rho.diff(Z, label="upper") < 0  # rho[k+1] - rho[k], labelled k+1
    unstable = (lighter_below & both_ocean).transpose(rdim, *SPATIAL_DIMS)
    unstable = _with_record_coord(unstable, ds, rdim).rename("unstable")
    unstable.attrs = {
        "long_name": "Statically unstable interface above the cell (rho[k+1] < rho[k], both ocean)",
        "eos": eos,
    }
    return unstable


def unstable_column_counts(ds: xr.Dataset, *, eos: EosName = "auto") -> xr.DataArray:
    """Where the density errors are: the mean number of unstable interfaces per column over the records.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and ``tmask``.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the potential density (:func:`dataset_eos`).

    Returns
    -------
    xarray.DataArray
        ``unstable_interfaces_per_column`` (y_c, x_c): the record mean of :func:`unstable_interfaces`
        summed over the column; NaN on land. Lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> counts = unstable_column_counts(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> counts.dims, float(counts.max())
    (('y_c', 'x_c'), 0.0)
    """
    eos = dataset_eos(ds, eos)
    rdim = record_dim(ds)
    counts = unstable_interfaces(ds, eos=eos).sum(Z).mean(rdim).reset_coords(drop=True)
    counts = counts.where(ocean_mask(ds, "ssh")).rename("unstable_interfaces_per_column")
    counts.attrs = {"long_name": "Unstable interfaces per column, mean over records", "units": "1", "eos": eos}
    return counts


def density_error_percent(ds: xr.Dataset, *, eos: EosName = "auto") -> xr.DataArray:
    """Density errors (%), the paper's ``check_density``.

    ``100 * sum(volume of the deeper cell of each unstable interface) / (volume of all ocean cells)``,
    per record, with cell volumes ``e1t * e2t * e3t`` (see :func:`unstable_interfaces`).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and the grid.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the potential density (:func:`dataset_eos`).

    Returns
    -------
    xarray.DataArray
        ``check_density`` (record), in %, lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> density_error_percent(ds).values.tolist()
    [0.0, 0.0]
    """
    eos = dataset_eos(ds, eos)
    rdim = record_dim(ds)
    volume = cell_volume(ds)
    unstable = unstable_interfaces(ds, eos=eos).reset_coords(drop=True)
    unstable_volume = (unstable * volume.isel({Z: slice(1, None)})).sum(SPATIAL_DIMS)
    result = 100.0 * unstable_volume / volume.sum()
    result = _with_record_coord(result, ds, rdim).rename("check_density")
    result.attrs = {
        "long_name": "Density errors: volume of statically unstable cells (potential density "
        "decreasing downward) as a percentage of the ocean volume",
        "units": METRICS["check_density"].cf_units,
        "eos": eos,
    }
    return result


def box_means(ds: xr.Dataset, *, depth_box: float = 1500.0) -> xr.Dataset:
    """Volume-weighted mean temperature and salinity in the Bottom-Water and Deep-Water boxes.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and the grid.
    depth_box : float, default 1500.0
        Depth limit of the boxes (m), see :func:`box_masks`.

    Returns
    -------
    xarray.Dataset
        ``BWbox_toce``, ``BWbox_soce``, ``DWbox_toce``, ``DWbox_soce`` (record), lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> means = box_means(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> bool((means.DWbox_toce > means.BWbox_toce).all())
    True
    """
    rdim = record_dim(ds)
    boxes = box_masks(ds, depth_box=depth_box)
    volume = cell_volume(ds)
    out = {}
    described = {
        "BWbox": f"Bottom-Water box (not depth < {boxes.depth_box:g} m and |lat| < 30)",
        "DWbox": f"Deep-Water box (500 m < depth < {boxes.depth_box:g} m, |lat| < 30)",
    }
    for box, words in described.items():
        weights = volume.where(boxes[box], 0.0)
        for name, label in (("toce", "temperature"), ("soce", "salinity")):
            mean = _weighted_mean(_field(ds, name), weights, SPATIAL_DIMS)
            metric = metrics_for(salinity_kind(ds))[f"{box}_{name}"]
            mean.attrs = {"long_name": f"Mean {label} of the {words}, volume-weighted", "units": metric.cf_units}
            out[metric.name] = mean
    return _with_record_coord(xr.Dataset(out, attrs={"depth_box": boxes.depth_box}), ds, rdim)


def horizontal_mean_profiles(ds: xr.Dataset) -> xr.Dataset:
    """Per-level area-weighted means of temperature and salinity over the ocean cells.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and the grid.

    Returns
    -------
    xarray.Dataset
        ``toce_profile``, ``soce_profile`` (record, z_c), NaN on levels without ocean, with the
        ``gdept_1d`` coordinate; lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> profiles = horizontal_mean_profiles(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> dict(profiles.toce_profile.sizes)
    {'t': 2, 'z_c': 36}
    """
    rdim = record_dim(ds)
    weights = cell_area(ds).where(ocean_mask(ds), 0.0)
    out = {}
    for name, label in (("toce", "temperature"), ("soce", "salinity")):
        profile = _weighted_mean(_field(ds, name), weights, HORIZONTAL_DIMS).transpose(rdim, Z)
        metric = metrics_for(salinity_kind(ds))[f"{name}_profile"]
        profile.attrs = {
            "long_name": f"Horizontal mean {label} per level, area-weighted over ocean",
            "units": metric.cf_units,
        }
        out[metric.name] = profile
    result = xr.Dataset(out).assign_coords(gdept_1d=grid_variable(ds, "gdept_1d"))
    return _with_record_coord(result, ds, rdim)


def _level_nearest(ds: xr.Dataset, depth: float) -> int:
    """Index of the level whose ``gdept_1d`` is nearest ``depth`` (the 1-D coordinate is read, not the data)."""
    levels = np.asarray(_depth(ds).values, dtype=np.float64)
    return int(np.argmin(np.abs(levels - depth)))


def temperature_500m_30ns(ds: xr.Dataset) -> xr.DataArray:
    """Mean temperature on the level nearest 500 m between 30°S and 30°N.

    Weighted by the volume ``e1t * e2t * e3t`` of the cells on that level (not of the column), over
    the ocean cells with ``-30 <= gphit <= 30``.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce`` and the grid.

    Returns
    -------
    xarray.DataArray
        ``temperature_500m_30NS`` (record) in °C, lazy; attribute ``level_depth`` gives the depth of
        the level used.

    Examples
    --------
    >>> import xoceandiff
    >>> t500 = temperature_500m_30ns(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> 5.0 < float(t500[0]) < 20.0
    True
    """
    rdim = record_dim(ds)
    k = _level_nearest(ds, TARGET_DEPTH_500M)
    tropics = abs(_latitude(ds)) <= TROPICS_LATITUDE
    weights = cell_volume(ds).isel({Z: k}, drop=True).where(tropics, 0.0)
    result = _weighted_mean(_field(ds, "toce").isel({Z: k}, drop=True), weights, HORIZONTAL_DIMS)
    result = _with_record_coord(result, ds, rdim).rename("temperature_500m_30NS")
    level_depth = float(_depth(ds).values[k])
    result.attrs = {
        "long_name": f"Mean temperature at {level_depth:.1f} m (level nearest 500 m) between 30S "
        "and 30N, volume-weighted",
        "units": METRICS["temperature_500m_30NS"].cf_units,
        "level_index": k,
        "level_depth": level_depth,
    }
    return result


def surface_means(ds: xr.Dataset) -> xr.Dataset:
    """Area-weighted surface means of temperature and salinity; sea surface height mean and spread.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce``, optionally ``ssh``, and the grid.

    Returns
    -------
    xarray.Dataset
        ``surface_toce``, ``surface_soce`` and, where ``ssh`` is present, ``ssh_mean`` and ``ssh_std``
        (the area-weighted standard deviation over the ocean surface), per record; lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> means = surface_means(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> sorted(means.data_vars)
    ['ssh_mean', 'ssh_std', 'surface_soce', 'surface_toce']
    """
    rdim = record_dim(ds)
    weights = cell_area(ds).where(ocean_mask(ds, "ssh"), 0.0)
    out = {}
    for name, label in (("toce", "temperature"), ("soce", "salinity")):
        mean = _weighted_mean(_field(ds, name).isel({Z: 0}, drop=True), weights, HORIZONTAL_DIMS)
        metric = metrics_for(salinity_kind(ds))[f"surface_{name}"]
        mean.attrs = {"long_name": f"Mean surface {label}, area-weighted", "units": metric.cf_units}
        out[metric.name] = mean
    if "ssh" in ds.variables:
        ssh = _field(ds, "ssh")
        mean = _weighted_mean(ssh, weights, HORIZONTAL_DIMS)
        variance = _weighted_mean((ssh - mean) ** 2, weights, HORIZONTAL_DIMS)
        out["ssh_mean"] = mean.assign_attrs(
            long_name="Mean sea surface height, area-weighted", units=METRICS["ssh_mean"].cf_units
        )
        out["ssh_std"] = np.sqrt(variance).assign_attrs(
            long_name="Standard deviation of sea surface height over the ocean, area-weighted",
            units=METRICS["ssh_std"].cf_units,
        )
    return _with_record_coord(xr.Dataset(out), ds, rdim)


def surface_field(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Field ``name`` at the surface (the top level of a 3-D field), float64, NaN on land, lazily.

    Examples
    --------
    >>> import xoceandiff
    >>> surface_field(xoceandiff.datasets.dino(n=2, resolution=4.0), "toce").dims
    ('t', 'y_c', 'x_c')
    """
    surface = _field(ds, name).isel({Z: 0}, missing_dims="ignore", drop=True)
    return surface.where(ocean_mask(ds, "ssh"))


def zonal_mean(ds: xr.Dataset, name: str = "toce") -> xr.DataArray:
    """Zonal mean of the set-mean state of a 3-D field: the record mean averaged along x over ocean cells.

    Weighted by the cell area ``e1t * e2t``; NaN where a row of a level has no ocean.

    Returns
    -------
    xarray.DataArray
        ``<name>_zonal_mean`` on (z_c, y_c), lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> zonal_mean(xoceandiff.datasets.dino(n=2, resolution=4.0)).dims
    ('z_c', 'y_c')
    """
    rdim = record_dim(ds)
    weights = cell_area(ds).where(ocean_mask(ds, name), 0.0)
    mean_state = _field(ds, name).mean(rdim)
    return _weighted_mean(mean_state, weights, (X,)).transpose(Z, Y).rename(f"{name}_zonal_mean")


def diagnostics(ds: xr.Dataset, *, eos: EosName = "auto", depth_box: float = 1500.0) -> xr.Dataset:
    """All per-record metrics of a set of ocean states, lazily.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset: ``toce``, ``soce`` (record, z_c, y_c, x_c), optionally ``ssh``
        (record, y_c, x_c), land NaN, and the grid coordinates ``tmask``, ``e1t``, ``e2t``,
        ``e3t``, ``gdept_1d``, ``gphit``. The record dimension is whatever ``toce`` has besides
        z_c, y_c, x_c (``t``, ``sample``, ...).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the density errors: ``"auto"`` matches the salinity of ``soce``
        (:func:`dataset_eos`): NEMO's EOS-80 polynomial for practical salinity, its TEOS-10
        polynomial (the paper's) for absolute salinity. The one used is in ``attrs["eos"]``.
    depth_box : float, default 1500.0
        Depth limit of the Bottom-Water and Deep-Water boxes (m).

    Returns
    -------
    xarray.Dataset
        ``check_density`` (%), ``BWbox_toce``, ``BWbox_soce``, ``DWbox_toce``, ``DWbox_soce``,
        ``temperature_500m_30NS``, ``surface_toce``, ``surface_soce``, ``ssh_mean``, ``ssh_std``
        (record) and ``toce_profile``, ``soce_profile`` (record, z_c), with ``long_name`` and
        ``units``. Nothing is computed until the user computes it.

    Raises
    ------
    MissingVariableError
        A field or grid variable is missing.
    InvalidDataError
        No single record dimension, an unknown ``eos``, or ``depth_box <= 500``.

    Examples
    --------
    >>> import xoceandiff
    >>> metrics = diagnostics(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> metrics.check_density.attrs["units"]
    '%'
    >>> metrics = metrics.compute()
    >>> bool((metrics.BWbox_soce > 34).all())
    True
    """
    eos = dataset_eos(ds, eos)
    depth_box = _check_depth_box(depth_box)
    rdim = record_dim(ds)
    parts = [
        density_error_percent(ds, eos=eos).to_dataset(),
        box_means(ds, depth_box=depth_box),
        temperature_500m_30ns(ds).to_dataset(),
        surface_means(ds),
        horizontal_mean_profiles(ds),
    ]
    out = xr.merge(parts, combine_attrs="drop_conflicts")
    ordered = [name for name in SCALAR_METRICS if name in out] + ["toce_profile", "soce_profile"]
    out = out[ordered]
    out.attrs = stamp_history(
        {k: v for k, v in ds.attrs.items() if k in ("title", "source", "history")},
        f"xoceandiff.diagnostics(eos={eos!r}, depth_box={depth_box:g})",
    )
    out.attrs.update({"eos": eos, "depth_box": depth_box, "record_dim": rdim})
    return out


# --- metrics of a set ------------------------------------------------------------------------------


def diversity(ds: xr.Dataset, *, fields: Sequence[str] = ("toce", "soce", "ssh")) -> xr.Dataset:
    r"""Mean pairwise RMS distance between the members of a set, per field, in physical units.

    For members :math:`x_i, x_j` and cell weights :math:`w_c` (volume for 3-D fields, area for
    ``ssh``, zero on land),

    .. math::

        d_{ij} = \Big(\sum_c w_c (x_{i,c} - x_{j,c})^2 \big/ \sum_c w_c\Big)^{1/2},
        \qquad D = \frac{2}{n(n-1)} \sum_{i<j} d_{ij}.

    The pairwise distances come from one Gram matrix,
    :math:`d_{ij}^2 = g_{ii} + g_{jj} - 2 g_{ij}` with
    :math:`g_{ij} = \sum_c w_c \tilde x_{i,c} \tilde x_{j,c} / \sum_c w_c`, on members centred on
    the set mean (which leaves the distances unchanged and avoids cancellation): no Python loop over
    pairs.

    Parameters
    ----------
    ds : xarray.Dataset
        A set of states (at least two records) with the grid.
    fields : sequence of str, default ("toce", "soce", "ssh")
        Fields to measure; those absent from ``ds`` (``ssh``) are skipped.

    Returns
    -------
    xarray.Dataset
        ``diversity_<field>`` scalars (°C, g/kg, m), lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> spread = diversity(xoceandiff.datasets.dino(n=2, resolution=4.0)).compute()
    >>> 0.0 < float(spread.diversity_toce) < 1.0
    True
    """
    rdim = record_dim(ds)
    n = ds.sizes[rdim]
    if n < 2:
        raise InvalidDataError(f"{rdim}: diversity needs at least 2 records, found {n}.")
    other = f"{rdim}_other"
    upper = xr.DataArray(np.triu(np.ones((n, n)), k=1), dims=(rdim, other))
    out = {}
    for name in fields:
        if name not in FIELDS:
            raise InvalidDataError(f"fields: expected names among {tuple(FIELDS)}, found {name!r}.")
        if name not in ds.variables:
            if name == "ssh":  # optional in a canonical dataset
                continue
            _field(ds, name)  # raises a clear MissingVariableError
        dims = field_dims(name)
        weights = cell_weights(ds, name)
        weights = weights / weights.sum()
        x = _field(ds, name).drop_vars(rdim, errors="ignore")
        x = (x - x.mean(rdim)).where(weights > 0, 0.0)
        if x.chunks is not None:
            # all records in one chunk, cells split instead: the Gram matrix is then one (n, n) block per
            # chunk of cells, summed, rather than (record chunks)^2 blocks (dask's PerformanceWarning)
            x = x.chunk({rdim: -1, dims[0]: "auto"})
        xw = x * weights
        gram = xr.dot(xw, x.rename({rdim: other}), dim=list(dims))
        norms = (xw * x).sum(dims)
        squared = norms + norms.rename({rdim: other}) - 2.0 * gram
        distances = np.sqrt(squared.clip(min=0.0))
        mean = (distances * upper).sum((rdim, other)) / (n * (n - 1) / 2)
        mean.attrs = {
            "long_name": f"Mean pairwise RMS distance between members ({name}), "
            + ("volume" if Z in dims else "area")
            + "-weighted over ocean cells",
            "units": metrics_for(salinity_kind(ds))[f"diversity_{name}"].cf_units,
        }
        out[f"diversity_{name}"] = mean
    return xr.Dataset(out, attrs={"n_records": n})


def profile_distance(
    samples: xr.Dataset,
    reference: xr.Dataset,
    *,
    vertical_weight: Literal["level", "volume"] = "level",
) -> xr.Dataset:
    """RMS difference between the set-mean horizontal-mean profiles of two sets, for T and S.

    The set-mean profile is the mean over records of :func:`horizontal_mean_profiles`; the RMS runs
    over the levels that hold ocean on both grids.

    Parameters
    ----------
    samples, reference : xarray.Dataset
        Two sets of states on the same vertical grid (each with its own record dimension).
    vertical_weight : {"level", "volume"}, default "level"
        ``"level"``: every level counts the same. ``"volume"``: levels weighted by the reference's
        ocean volume on them.

    Returns
    -------
    xarray.Dataset
        ``profile_distance_toce`` (°C) and ``profile_distance_soce`` (g/kg), lazy.

    Raises
    ------
    GridMismatchError
        The two sets have different numbers of levels.

    Examples
    --------
    >>> import xoceandiff
    >>> a = xoceandiff.datasets.dino(n=2, resolution=4.0, seed=0)
    >>> b = xoceandiff.datasets.dino(n=2, resolution=4.0, seed=1)
    >>> float(profile_distance(a, a).profile_distance_toce)
    0.0
    >>> float(profile_distance(a, b).profile_distance_toce) > 0
    True
    """
    if vertical_weight not in ("level", "volume"):
        raise InvalidDataError(f"vertical_weight: expected 'level' or 'volume', found {vertical_weight!r}.")
    if samples.sizes.get(Z) != reference.sizes.get(Z):
        raise GridMismatchError(
            f"{Z}: samples have {samples.sizes.get(Z)} levels, the reference {reference.sizes.get(Z)}; "
            "compare sets on the same vertical grid (interpolate one onto the other first)."
        )
    profiles = []
    for ds in (samples, reference):
        rdim = record_dim(ds)
        profiles.append(horizontal_mean_profiles(ds).drop_vars(["gdept_1d", rdim], errors="ignore").mean(rdim))
    wet = ocean_mask(samples).any(HORIZONTAL_DIMS).values & ocean_mask(reference).any(HORIZONTAL_DIMS).values
    if vertical_weight == "level":
        level_weights = xr.DataArray(wet.astype(np.float64), dims=Z)
    else:
        level_weights = cell_volume(reference).sum(HORIZONTAL_DIMS).drop_vars(Z, errors="ignore")
        level_weights = level_weights.where(xr.DataArray(wet, dims=Z), 0.0)
    out = {}
    for name in ("toce", "soce"):
        difference = (profiles[0][f"{name}_profile"] - profiles[1][f"{name}_profile"]).drop_vars(Z, errors="ignore")
        rms = np.sqrt(_weighted_mean(difference**2, level_weights, (Z,)))
        rms.attrs = {
            "long_name": f"RMS difference of the set-mean horizontal-mean {name} profiles "
            f"({vertical_weight}-weighted over wet levels)",
            "units": metrics_for(salinity_kind(reference))[f"profile_distance_{name}"].cf_units,
        }
        out[f"profile_distance_{name}"] = rms
    return xr.Dataset(out, attrs={"vertical_weight": vertical_weight})
