r"""How real are the samples? Fidelity measures of a sample set against the training data.

Each measure reads as "as real as the data": a ratio of the samples' statistic to the data's (1 is as
real as the data), or a share of cells outside what the data ever do (0 is as real as the data), by
depth band (:data:`xoceandiff.canonical.DEPTH_BANDS`: 0-200 m, 200-1000 m, below 1000 m).

:func:`spread_ratio`
    Per band and field, the volume-weighted mean over ocean cells of the per-cell standard deviation
    across records (ddof = 1), samples over data: 1 when the samples vary cell by cell as much as the data.
:func:`gradient_variance_ratio`
    Per band and field, the variance of the horizontal gradients (differences across ocean-ocean
    faces divided by the scale factors ``e1u``, ``e2v``), pooled over records and faces, samples over
    data: below 1 for over-smooth samples, above 1 for noisy ones.
:func:`range_violations`
    Per field, the share (%) of the samples' ocean cells outside the data's per-level range widened by
    ``n_std`` standard deviations (a NaN on an ocean cell counts as outside); :func:`worst_violation`
    names the worst cell's field, level and value.
:func:`density_errors_by_band`
    The paper's density errors (:func:`xoceandiff.diagnostics.density_error_percent`) restricted to a
    band: the volume of the deeper cells of unstable interfaces in the band over the band's ocean volume.
:func:`convective_distance`
    The mean convective-adjustment distance (:func:`xoceandiff.convection.adjustment_distance`) of the
    samples and of the data, and their ratio, per band and field.
:func:`novelty`
    The median over samples of the volume-weighted RMS temperature distance to the nearest data record,
    the median over data records of the distance to their nearest other data record, and their ratio:
    near 0 for copies of the training data, about 1 for samples as new as a fresh data record.

:func:`ssh_balance`
    Geostrophic consistency of ``ssh`` with the density field: the RMS of the bottom-pressure anomaly
    (in metres of water) that the sea surface leaves unbalanced by the density below, samples over data;
    it sets the geostrophic flow at the bottom, small in a spun-up ocean.

:func:`fidelity` gathers them for one sample set; :func:`xoceandiff.report.report` adds a "Fidelity"
table with one row per sample set. :data:`FIDELITY_METRICS` is the one table of their labels and units.
Everything is lazy: the functions return Datasets whose variables compute when asked.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from .canonical import (
    DEPTH_BANDS,
    HORIZONTAL_DIMS,
    SPATIAL_DIMS,
    X,
    Y,
    Z,
    band_masks,
    cell_area,
    cell_volume,
    grid_variable,
    ocean_mask,
    record_dim,
    salinity_kind,
)
from .conventions import FIELDS
from .diagnostics import (
    _PRACTICAL_SALINITY_UNITS,
    _S_UNITS,
    EosName,
    Metric,
    _weighted_mean,
    dataset_eos,
    unstable_interfaces,
)
from .dynamics import RHO0
from .eos import potential_density
from .errors import GridMismatchError, InvalidDataError, MissingVariableError
from .grid import grid_padding

__all__ = [
    "FIDELITY_FIELDS",
    "FIDELITY_METRICS",
    "FIDELITY_COLUMNS",
    "DATA_FLOORS",
    "fidelity_metrics_for",
    "spread_ratio",
    "gradient_variance_ratio",
    "range_violations",
    "worst_violation",
    "annotate_worst",
    "density_errors_by_band",
    "convective_distance",
    "convection_available",
    "novelty",
    "ssh_balance",
    "fidelity",
    "conditional_skill",
]

FIDELITY_FIELDS: tuple[str, ...] = ("toce", "soce")
"""The fields the fidelity measures judge."""

_LETTER = {"toce": "T", "soce": "S"}
_ROUNDING = 64 * np.finfo(np.float64).eps  # relative rounding error of a squared distance from a Gram matrix
_T_UNITS = FIELDS["toce"].units
_RATIO = ("× data", "1")  # display, CF


def _build_metrics() -> dict[str, Metric]:
    metrics: list[Metric] = []
    for prefix, label in (("spread_ratio", "Spread"), ("gradient_variance_ratio", "Gradient variance")):
        for name in FIDELITY_FIELDS:
            for band in DEPTH_BANDS:
                metrics.append(Metric(f"{prefix}_{name}_{band}", f"{label} {_LETTER[name]} {band}", *_RATIO))
    for name in FIDELITY_FIELDS:
        metrics.append(Metric(f"range_violations_{name}", f"Out of range {_LETTER[name]}", "%", "%"))
    metrics += [
        Metric("nearest_distance_samples", "Nearest-data distance T", "°C", _T_UNITS),
        Metric("nearest_distance_data", "Data-data distance T", "°C", _T_UNITS),
        Metric("novelty_ratio", "Novelty", *_RATIO),
    ]
    metrics += [
        Metric("ssh_balance_samples", "Unbalanced ssh", "m", "m"),
        Metric("ssh_balance_data", "Data unbalanced ssh", "m", "m"),
        Metric("ssh_balance_ratio", "Unbalanced ssh", *_RATIO),
    ]
    for who, label in (("samples", "Density errors"), ("data", "Data density errors")):
        for band in DEPTH_BANDS:
            metrics.append(Metric(f"density_errors_{who}_{band}", f"{label} {band}", "%", "%"))
    for name in FIDELITY_FIELDS:
        units = FIELDS[name].units
        display = "°C" if name == "toce" else "g/kg"
        for band in DEPTH_BANDS:
            letter = _LETTER[name]
            metrics += [
                Metric(f"convective_distance_samples_{name}_{band}", f"Convective distance {letter} {band}", display, units),
                Metric(f"convective_distance_data_{name}_{band}", f"Data convective distance {letter} {band}", display, units),
                Metric(f"convective_distance_ratio_{name}_{band}", f"Convective distance {letter} {band}", *_RATIO),
            ]
    return {metric.name: metric for metric in metrics}


FIDELITY_METRICS: Mapping[str, Metric] = MappingProxyType(_build_metrics())
"""Every fidelity measure by variable name: label, display units and CF units (as :data:`~xoceandiff.diagnostics.METRICS`)."""

FIDELITY_COLUMNS: tuple[str, ...] = (
    *(f"spread_ratio_{n}_{b}" for n in FIDELITY_FIELDS for b in DEPTH_BANDS),
    *(f"gradient_variance_ratio_{n}_{b}" for n in FIDELITY_FIELDS for b in DEPTH_BANDS),
    *(f"range_violations_{n}" for n in FIDELITY_FIELDS),
    "novelty_ratio",
    "ssh_balance_ratio",
    *(f"density_errors_samples_{b}" for b in DEPTH_BANDS),
    *(f"convective_distance_samples_{n}_{b}" for n in FIDELITY_FIELDS for b in DEPTH_BANDS),
)
"""The report's Fidelity table: its columns in order (those not computed are left out).

Density errors and convective distances are shown as values, not ratios: the data's are near zero (their
values, the floor, are printed under the table)."""

DATA_FLOORS: tuple[str, ...] = (
    *(f"density_errors_data_{b}" for b in DEPTH_BANDS),
    *(f"convective_distance_data_{n}_{b}" for n in FIDELITY_FIELDS for b in DEPTH_BANDS),
)
"""The data's own values of the measures the Fidelity table shows as values (printed under the table)."""


def fidelity_metrics_for(salinity: str = "absolute") -> Mapping[str, Metric]:
    """:data:`FIDELITY_METRICS` for data of salinity kind ``salinity`` (practical salinity: PSS-78, CF "1").

    Examples
    --------
    >>> fidelity_metrics_for()["spread_ratio_toce_0-200m"].heading
    'Spread T 0-200m (× data)'
    >>> fidelity_metrics_for("practical")["convective_distance_data_soce_0-200m"].cf_units
    '1'
    """
    if salinity == "absolute":
        return FIDELITY_METRICS
    display, cf = _PRACTICAL_SALINITY_UNITS
    return MappingProxyType(
        {k: Metric(m.name, m.label, display, cf) if m.cf_units == _S_UNITS else m for k, m in FIDELITY_METRICS.items()}
    )


# --- inputs ----------------------------------------------------------------------------------------


def _bare(array: xr.DataArray) -> xr.DataArray:
    """Without coordinates (index ones too), so that arrays of both sets and faces align by position."""
    array = array.reset_coords(drop=True)
    return array.drop_vars([name for name in array.coords], errors="ignore")


def _field(ds: xr.Dataset, name: str) -> xr.DataArray:
    if name not in ds.variables:
        raise MissingVariableError(
            f"the dataset has no {name!r}; the fidelity measures need the fields toce, soce and the grid "
            "(tmask, e1t, e2t, e3t, gdept_1d). Open samples with xoceandiff.io.open_samples(..., grid=data)."
        )
    return _bare(ds[name]).astype(np.float64)


def _check_pair(samples: xr.Dataset, reference: xr.Dataset, *, min_samples: int = 1, min_data: int = 1) -> tuple[str, str]:
    """The record dimensions of both sets, after checking they share the grid shape and have enough records."""
    for dim in SPATIAL_DIMS:
        if samples.sizes.get(dim) != reference.sizes.get(dim):
            raise GridMismatchError(
                f"{dim}: the samples have {samples.sizes.get(dim)} points, the reference {reference.sizes.get(dim)}; "
                "fidelity compares sets on the same grid (open the samples with io.open_samples(..., grid=data))."
            )
    s_dim, r_dim = record_dim(samples), record_dim(reference)
    for ds, rdim, least, who in ((samples, s_dim, min_samples, "samples"), (reference, r_dim, min_data, "reference")):
        if ds.sizes[rdim] < least:
            raise InvalidDataError(f"{who}: this measure needs at least {least} records along {rdim!r}, found {ds.sizes[rdim]}.")
    return s_dim, r_dim


def _bands(reference: xr.Dataset) -> dict[str, xr.DataArray]:
    return {band: _bare(mask) for band, mask in band_masks(reference).items()}


def _weighted_band_mean(values: xr.DataArray, weights: xr.DataArray, mask: xr.DataArray) -> xr.DataArray:
    """``sum(w v) / sum(w)`` over the spatial cells of ``mask``; NaN for an empty band; NaN on a cell propagates."""
    w = weights.where(mask, 0.0)
    total = w.sum(SPATIAL_DIMS)
    return (values.where(mask, 0.0) * w).sum(SPATIAL_DIMS) / total.where(total > 0)


def _ratio(numerator: xr.DataArray, denominator: xr.DataArray) -> xr.DataArray:
    return numerator / denominator.where(denominator != 0)


def _attrs(name: str, long_name: str, salinity: str) -> dict[str, str]:
    return {"long_name": long_name, "units": fidelity_metrics_for(salinity)[name].cf_units}


def _salinity(reference: xr.Dataset) -> str:
    return salinity_kind(reference)


# --- spread ----------------------------------------------------------------------------------------


def spread_ratio(samples: xr.Dataset, reference: xr.Dataset) -> xr.Dataset:
    r"""Per depth band and field, the samples' cell-by-cell spread across records over the data's.

    .. math::

        \sigma_c = \operatorname{std}_r(x_{r,c}) \;(\text{ddof} = 1), \qquad
        \text{spread ratio}_b = \frac{\sum_{c \in b} V_c\, \sigma^\text{samples}_c / \sum_{c \in b} V_c}
                                     {\sum_{c \in b} V_c\, \sigma^\text{data}_c / \sum_{c \in b} V_c}

    with :math:`V_c` the reference's ocean cell volumes and :math:`b` a depth band.

    Parameters
    ----------
    samples, reference : xarray.Dataset
        Two sets of states on the same grid, at least two records each.

    Returns
    -------
    xarray.Dataset
        ``spread_ratio_<field>_<band>`` scalars for toce and soce and each band of
        :data:`~xoceandiff.canonical.DEPTH_BANDS`; lazy.

    Raises
    ------
    GridMismatchError
        The sets are on grids of different shapes.
    InvalidDataError
        A set with fewer than two records.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=4, resolution=4.0)
    >>> float(spread_ratio(data, data)["spread_ratio_toce_0-200m"])
    1.0
    """
    s_dim, r_dim = _check_pair(samples, reference, min_samples=2, min_data=2)
    weights = _bare(cell_volume(reference))
    ocean = _bare(ocean_mask(reference))
    bands = _bands(reference)
    salinity = _salinity(reference)
    out = {}
    for name in FIDELITY_FIELDS:
        spreads = [  # land 0 (no empty-slice warnings), a NaN on an ocean cell propagates
            _field(ds, name).where(ocean, 0.0).std(rdim, ddof=1, skipna=False)
            for ds, rdim in ((samples, s_dim), (reference, r_dim))
        ]
        for band, mask in bands.items():
            key = f"spread_ratio_{name}_{band}"
            ratio = _ratio(*(_weighted_band_mean(s, weights, mask) for s in spreads))
            out[key] = ratio.assign_attrs(
                _attrs(key, f"Volume-weighted mean per-cell std across records of {name} in {band}, samples over data", salinity)
            )
    return xr.Dataset(out)


# --- horizontal gradients ----------------------------------------------------------------------------


def _neighbour(array: xr.DataArray, dim: str, *, periodic: bool, fill: Any) -> xr.DataArray:
    """The value at the next point along ``dim`` (east, north): rolled if periodic, else ``fill`` at the edge."""
    if periodic:
        return array.roll({dim: -1}, roll_coords=False)
    return array.shift({dim: -1}, fill_value=fill)


def _face_scale(ds: xr.Dataset, axis: str, periodic_x: bool) -> xr.DataArray:
    """Distance between the T points either side of each east (X) or north (Y) face, on the T point's index."""
    name, face_dim, dim = ("e1u", "x_f", X) if axis == "X" else ("e2v", "y_f", Y)
    if name in ds.variables:
        scale = ds[name].reset_coords(drop=True)
        return _bare(scale.rename({face_dim: dim})).astype(np.float64)
    t_scale = _bare(grid_variable(ds, "e1t" if axis == "X" else "e2t")).astype(np.float64)
    neighbour = _neighbour(t_scale, dim, periodic=periodic_x and axis == "X", fill=np.nan)
    return 0.5 * (t_scale + neighbour)


def _faces(reference: xr.Dataset) -> dict[str, tuple[xr.DataArray, xr.DataArray, bool]]:
    """Per axis: the ocean-ocean faces (z, y, x on the index of the cell west/south), their scale, periodicity."""
    periodic_x = grid_padding(reference)["X"] == "periodic"
    ocean = _bare(ocean_mask(reference))
    out = {}
    for axis, dim in (("X", X), ("Y", Y)):
        periodic = periodic_x and axis == "X"
        faces = ocean & _neighbour(ocean, dim, periodic=periodic, fill=False)
        out[axis] = (faces, _face_scale(reference, axis, periodic_x), periodic)
    return out


def _gradient_variance(ds: xr.Dataset, name: str, rdim: str, faces, band: xr.DataArray) -> xr.DataArray:
    """Sum over X and Y of the variance of the gradient across the band's ocean-ocean faces, pooled over records."""
    field = _field(ds, name)
    total = 0.0
    for axis, dim in (("X", X), ("Y", Y)):
        ocean_faces, scale, periodic = faces[axis]
        mask = ocean_faces & band  # a horizontal face lies on one level: in the band of its two cells
        gradient = (_neighbour(field, dim, periodic=periodic, fill=np.nan) - field) / scale
        gradient = gradient.where(mask, 0.0)
        count = mask.sum(SPATIAL_DIMS) * ds.sizes[rdim]
        mean = gradient.sum((rdim, *SPATIAL_DIMS)) / count
        variance = ((gradient - mean) ** 2).where(mask, 0.0).sum((rdim, *SPATIAL_DIMS)) / count
        total = total + variance
    return total


def gradient_variance_ratio(samples: xr.Dataset, reference: xr.Dataset) -> xr.Dataset:
    r"""Per depth band and field, the variance of the horizontal gradients of the samples over the data's.

    For the faces between two ocean cells of one level (east faces :math:`i+\tfrac12`, north faces
    :math:`j+\tfrac12`; across the periodic seam when ``Iperio = 1``),

    .. math::

        g^x = \frac{x_{i+1} - x_i}{e_{1u}}, \qquad g^y = \frac{x_{j+1} - x_j}{e_{2v}}, \qquad
        \text{ratio}_b = \frac{\operatorname{var}(g^x) + \operatorname{var}(g^y)\;\text{(samples)}}
                              {\operatorname{var}(g^x) + \operatorname{var}(g^y)\;\text{(data)}}

    each variance (ddof = 0) pooled over the records and the faces of band :math:`b` (every face counts
    once). Without ``e1u``/``e2v`` the scale is the mean of the two cells' ``e1t``/``e2t``.

    Parameters
    ----------
    samples, reference : xarray.Dataset
        Two sets of states on the same grid; the reference's mask, scale factors and ``Iperio`` are used.

    Returns
    -------
    xarray.Dataset
        ``gradient_variance_ratio_<field>_<band>`` scalars; lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> smooth = data.assign(toce=data.toce.mean(("y_c", "x_c")) + 0 * data.toce)
    >>> float(gradient_variance_ratio(smooth, data)["gradient_variance_ratio_toce_0-200m"])
    0.0
    """
    s_dim, r_dim = _check_pair(samples, reference)
    faces = _faces(reference)
    bands = _bands(reference)
    salinity = _salinity(reference)
    out = {}
    for name in FIDELITY_FIELDS:
        for band, mask in bands.items():
            key = f"gradient_variance_ratio_{name}_{band}"
            ratio = _ratio(
                _gradient_variance(samples, name, s_dim, faces, mask), _gradient_variance(reference, name, r_dim, faces, mask)
            )
            out[key] = ratio.assign_attrs(
                _attrs(key, f"Variance of the horizontal gradients of {name} in {band}, samples over data", salinity)
            )
    return xr.Dataset(out)


# --- range -----------------------------------------------------------------------------------------


def range_violations(samples: xr.Dataset, reference: xr.Dataset, *, n_std: float = 5.0) -> xr.Dataset:
    r"""Per field, the share (%) of the samples' ocean cells outside the data's per-level range.

    On level :math:`k`, with :math:`\min_k`, :math:`\max_k` the extremes of the reference over its
    records and the level's ocean cells, and :math:`\sigma_k` the level's record-to-record variability (the
    RMS over the level's ocean cells of each cell's standard deviation across records, ddof = 0, floored at
    the spacing of the reference's floating-point type at the level's extremes: a float32 file cannot
    resolve a variability below it, as on GYRE's deep levels whose salinity varies by a few 1e-6 PSU), the
    allowed range is :math:`[\min_k - n\,\sigma_k,\; \max_k + n\,\sigma_k]`; the share counts the samples' ocean cells (all records) outside it, a NaN counting as outside:

    .. math:: \text{range violations} = 100\, \frac{\#\{(r, c) : x_{r,c} \notin [\,\text{low}_{k(c)}, \text{high}_{k(c)}]\}}{n_\text{records}\; \#\text{ocean cells}}.

    Parameters
    ----------
    samples, reference : xarray.Dataset
        Two sets of states on the same grid.
    n_std : float, default 5.0
        How many of the data's standard deviations the range is widened by on each side.

    Returns
    -------
    xarray.Dataset
        ``range_violations_<field>`` (%) and, per level (``z_c``, with ``gdept_1d``), the allowed range
        ``range_low_<field>``, ``range_high_<field>`` and the samples' extremes ``range_min_<field>``,
        ``range_max_<field>``; lazy. For numpy-backed inputs the attributes ``worst_field``,
        ``worst_level``, ``worst_depth``, ``worst_value`` name the worst cell (:func:`annotate_worst`
        adds them to a computed result).

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=3, resolution=4.0).load()
    >>> hot = data.copy(deep=True)
    >>> hot["toce"][0, 2, 20, 8] = 50.0
    >>> result = range_violations(hot, data)
    >>> result.attrs["worst_field"], result.attrs["worst_level"], result.attrs["worst_value"]
    ('toce', 2, 50.0)
    """
    if not np.isfinite(n_std) or n_std < 0:
        raise InvalidDataError(f"n_std: expected a finite number >= 0, found {n_std!r}.")
    s_dim, r_dim = _check_pair(samples, reference)
    ocean = _bare(ocean_mask(reference))
    horizontal = (Y, X)
    wet = ocean.any(horizontal)  # levels with ocean; extremes below come from +-inf on land (no all-NaN slices)

    def lowest(x: xr.DataArray, dims: tuple[str, ...]) -> xr.DataArray:
        return x.where(ocean, np.inf).min(dims).where(wet)

    def highest(x: xr.DataArray, dims: tuple[str, ...]) -> xr.DataArray:
        return x.where(ocean, -np.inf).max(dims).where(wet)

    out: dict[str, xr.DataArray] = {}
    for name in FIDELITY_FIELDS:
        data = _field(reference, name).where(ocean)
        dims = (r_dim, *horizontal)
        # the level's record-to-record variability: RMS over its ocean cells of the per-cell std across records
        variance = data.where(ocean, 0.0).var(r_dim).where(ocean, 0.0).sum(horizontal)
        sigma = np.sqrt(variance / ocean.sum(horizontal).where(wet))
        low, high = lowest(data, dims), highest(data, dims)
        stored = reference[name].dtype  # _field works in float64; the floor is the file's own resolution
        if np.issubdtype(stored, np.floating):
            sigma = np.maximum(sigma, np.finfo(stored).eps * np.maximum(abs(low), abs(high)))
        low, high = low - n_std * sigma, high + n_std * sigma
        values = _field(samples, name)
        outside = ~((values >= low) & (values <= high))  # NaN compares False: counted as outside
        cells = ocean.sum() * samples.sizes[s_dim]
        share = 100.0 * outside.where(ocean, False).sum((s_dim, *SPATIAL_DIMS)) / cells
        units = FIELDS[name].units
        out[f"range_violations_{name}"] = share.assign_attrs(
            long_name=f"Share of the samples' ocean cells of {name} outside the data's per-level "
            f"[min - {n_std:g} sigma, max + {n_std:g} sigma], sigma the level's record-to-record std",
            units="%",
        )
        out[f"range_low_{name}"] = low.assign_attrs(long_name=f"Lowest {name} allowed per level", units=units)
        out[f"range_high_{name}"] = high.assign_attrs(long_name=f"Highest {name} allowed per level", units=units)
        out[f"range_min_{name}"] = lowest(values, (s_dim, *horizontal)).assign_attrs(
            long_name=f"Samples' lowest {name} per level", units=units
        )
        out[f"range_max_{name}"] = highest(values, (s_dim, *horizontal)).assign_attrs(
            long_name=f"Samples' highest {name} per level", units=units
        )
    result = xr.Dataset(out).assign_coords(gdept_1d=_bare(grid_variable(reference, "gdept_1d")))
    result.attrs["n_std"] = float(n_std)
    if all(var.chunks is None for var in result.data_vars.values()):
        result = annotate_worst(result)
    return result


def worst_violation(result: xr.Dataset) -> dict[str, Any] | None:
    """The worst out-of-range cell of a computed :func:`range_violations` result, or None when none is out.

    The worst is the level and side whose extreme lies farthest outside the allowed range, measured in
    widths of that range (a level of the data that never varies counts any excess as infinite).

    Returns
    -------
    dict or None
        ``field``, ``level`` (index), ``depth`` (m), ``value``, ``low``, ``high``.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=3, resolution=4.0).load()
    >>> worst_violation(range_violations(data, data)) is None
    True
    """
    best: tuple[float, dict[str, Any]] | None = None
    for name in FIDELITY_FIELDS:
        if f"range_low_{name}" not in result:
            continue
        low, high = (np.asarray(result[f"range_{side}_{name}"].values, dtype=np.float64) for side in ("low", "high"))
        smin, smax = (np.asarray(result[f"range_{side}_{name}"].values, dtype=np.float64) for side in ("min", "max"))
        width = high - low
        with np.errstate(invalid="ignore", divide="ignore"):
            for excess, extreme in ((smax - high, smax), (low - smin, smin)):
                score = np.where(excess > 0, np.where(width > 0, excess / width, np.inf), -np.inf)
                score = np.where(np.isnan(score), -np.inf, score)
                k = int(np.argmax(score))
                if score[k] > -np.inf and (best is None or score[k] > best[0]):
                    depth = float(result["gdept_1d"].values[k]) if "gdept_1d" in result.coords else float("nan")
                    best = (float(score[k]), {"field": name, "level": k, "depth": depth, "value": float(extreme[k]),
                                              "low": float(low[k]), "high": float(high[k])})
    return None if best is None else best[1]


def annotate_worst(result: xr.Dataset) -> xr.Dataset:
    """A computed :func:`range_violations` result with ``worst_field``, ``worst_level``, ``worst_depth``, ``worst_value`` attributes.

    ``worst_field`` is ``""`` and the others NaN or -1 when no cell is outside the range. Loads the
    per-level variables (small) when they are lazy.
    """
    worst = worst_violation(result)
    out = result.copy()
    if worst is None:
        out.attrs.update(worst_field="", worst_level=-1, worst_depth=float("nan"), worst_value=float("nan"))
    else:
        out.attrs.update(worst_field=worst["field"], worst_level=worst["level"], worst_depth=worst["depth"],
                         worst_value=worst["value"])
    return out


# --- density and convection --------------------------------------------------------------------------


def _band_density_errors(ds: xr.Dataset, eos: str, bands: Mapping[str, xr.DataArray], volume: xr.DataArray) -> dict[str, xr.DataArray]:
    rdim = record_dim(ds)
    unstable = _bare(unstable_interfaces(ds, eos=eos))  # levels 1..nz-1: the deeper cell of each interface
    deeper = volume.isel({Z: slice(1, None)})
    out = {}
    for band, mask in bands.items():
        unstable_volume = (unstable * deeper.where(mask.isel({Z: slice(1, None)}), 0.0)).sum(SPATIAL_DIMS)
        band_volume = volume.where(mask, 0.0).sum()
        out[band] = (100.0 * unstable_volume / band_volume.where(band_volume > 0)).mean(rdim)
    return out


def density_errors_by_band(samples: xr.Dataset, reference: xr.Dataset, *, eos: EosName = "auto") -> xr.Dataset:
    r"""The density errors (%) of the samples and of the data per depth band, mean over records.

    .. math:: \text{density errors}_b = 100\, \frac{\sum_{\text{unstable } (k, k+1),\, k+1 \in b} V_{k+1}}{\sum_{c \in b} V_c}

    the interfaces of :func:`xoceandiff.diagnostics.unstable_interfaces`, each in the band of its deeper
    cell; the equation of state is the reference's (``eos="auto"``) for both sets.

    Returns
    -------
    xarray.Dataset
        ``density_errors_samples_<band>``, ``density_errors_data_<band>`` (%); lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> float(density_errors_by_band(data, data)["density_errors_samples_0-200m"])
    0.0
    """
    _check_pair(samples, reference)
    eos = dataset_eos(reference, eos)
    bands = _bands(reference)
    volume = _bare(cell_volume(reference))
    out = {}
    for who, ds in (("samples", samples), ("data", reference)):
        for band, value in _band_density_errors(ds, eos, bands, volume).items():
            out[f"density_errors_{who}_{band}"] = value.assign_attrs(
                long_name=f"Density errors in {band} ({who}): unstable volume over the band's ocean volume, "
                "mean over records",
                units="%",
                eos=eos,
            )
    return xr.Dataset(out, attrs={"eos": eos})


def convection_available() -> bool:
    """Whether :mod:`xoceandiff.convection` (the convective-adjustment distance) is installed with the package."""
    return importlib.util.find_spec(f"{__package__}.convection") is not None


def convective_distance(samples: xr.Dataset, reference: xr.Dataset, *, eos: EosName = "auto") -> xr.Dataset:
    r"""The mean convective-adjustment distance of the samples and of the data per band and field, and their ratio.

    The distance of one state is :func:`xoceandiff.convection.adjustment_distance`: how far convective
    adjustment moves it; here its mean over each set's records,

    .. math:: \text{ratio}_{f,b} = \overline{d}^{\,\text{samples}}_{f,b} \big/ \overline{d}^{\,\text{data}}_{f,b}.

    Returns
    -------
    xarray.Dataset
        ``convective_distance_samples_<field>_<band>``, ``convective_distance_data_<field>_<band>``,
        ``convective_distance_ratio_<field>_<band>``; lazy. Empty when :func:`convection_available` is False.
    """
    _check_pair(samples, reference)
    if not convection_available():
        return xr.Dataset()
    from .convection import adjustment_distance

    eos = dataset_eos(reference, eos)
    salinity = _salinity(reference)
    means = [adjustment_distance(ds, eos=eos) for ds in (samples, reference)]
    out = {}
    for name in FIDELITY_FIELDS:
        for band in DEPTH_BANDS:
            source = f"convective_distance_{name}_{band}"
            if source not in means[0] or source not in means[1]:
                continue
            s_mean, d_mean = (_bare(m[source]).mean() for m in means)
            for who, value in (("samples", s_mean), ("data", d_mean), ("ratio", _ratio(s_mean, d_mean))):
                key = f"convective_distance_{who}_{name}_{band}"
                out[key] = value.assign_attrs(
                    _attrs(key, f"Convective-adjustment distance of {name} in {band} ({who}), mean over records", salinity)
                )
    return xr.Dataset(out, attrs={"eos": eos})


# --- novelty -----------------------------------------------------------------------------------------


def novelty(samples: xr.Dataset, reference: xr.Dataset, *, field: str = "toce") -> xr.Dataset:
    r"""Copies or novelty: how far the samples lie from the data, against how far data records lie from each other.

    With :math:`V_c` the reference's ocean cell volumes and
    :math:`d(a, b) = \big(\sum_c V_c (a_c - b_c)^2 / \sum_c V_c\big)^{1/2}`,

    .. math::

        \text{nearest distance samples} = \operatorname{median}_i \min_j d(s_i, x_j), \qquad
        \text{nearest distance data} = \operatorname{median}_j \min_{j' \ne j} d(x_j, x_{j'}),

    and ``novelty_ratio`` is their quotient: near 0 when samples copy training records, about 1 when a
    sample is as far from the data as a data record from its nearest other record. The distances come
    from Gram matrices of the states centred on the data mean (as :func:`xoceandiff.diagnostics.diversity`),
    summed over chunks of cells: no array of pairs times cells.

    Parameters
    ----------
    samples, reference : xarray.Dataset
        Two sets on the same grid; the reference needs at least two records.
    field : str, default "toce"
        The 3-D field the distances are measured on.

    Returns
    -------
    xarray.Dataset
        ``nearest_distance_samples``, ``nearest_distance_data`` (units of the field) and ``novelty_ratio``; lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=4, resolution=4.0)
    >>> float(novelty(data, data).novelty_ratio) < 1e-3   # every sample a copy
    True
    """
    if field not in FIDELITY_FIELDS:
        raise InvalidDataError(f"field: expected one of {FIDELITY_FIELDS}, found {field!r}.")
    s_dim, r_dim = _check_pair(samples, reference, min_data=2)
    s_rec, d_rec, d_other = "_sample", "_data", "_data_other"
    weights = _bare(cell_volume(reference))
    weights = weights / weights.sum()
    data = _field(reference, field).rename({r_dim: d_rec})
    values = _field(samples, field).rename({s_dim: s_rec})
    centre = data.mean(d_rec)

    def prepared(x: xr.DataArray, rdim: str) -> xr.DataArray:
        x = (x - centre).where(weights > 0, 0.0)
        if x.chunks is not None:  # all records in one chunk, cells split: one (n, m) block per chunk of cells
            x = x.chunk({rdim: -1, Z: "auto"})
        return x

    x, y = prepared(values, s_rec), prepared(data, d_rec)
    yw = y * weights
    y_norms = (yw * y).sum(SPATIAL_DIMS)
    x_norms = (x * weights * x).sum(SPATIAL_DIMS)

    def squared_distance(norms_a: xr.DataArray, norms_b: xr.DataArray, gram: xr.DataArray) -> xr.DataArray:
        # below the rounding error of the sum (a few eps of the norms) a distance is zero: copies score 0
        squared = norms_a + norms_b - 2.0 * gram
        return squared.where(squared > _ROUNDING * (norms_a + norms_b), 0.0)

    cross = xr.dot(x, yw, dim=list(SPATIAL_DIMS))
    to_data = np.sqrt(squared_distance(x_norms, y_norms, cross)).min(d_rec)

    within = xr.dot(yw, y.rename({d_rec: d_other}), dim=list(SPATIAL_DIMS))
    squared = squared_distance(y_norms, y_norms.rename({d_rec: d_other}), within)
    n = reference.sizes[r_dim]
    others = xr.DataArray(~np.eye(n, dtype=bool), dims=(d_rec, d_other))
    between = np.sqrt(squared.where(others)).min(d_other)

    if to_data.chunks is not None:
        to_data, between = to_data.chunk({s_rec: -1}), between.chunk({d_rec: -1})
    # quantile, not median: xarray hands dask a full reduction of a 1-D median, which dask refuses
    nearest_samples, nearest_data = (
        d.quantile(0.5, dim=rdim, skipna=False).drop_vars("quantile") for d, rdim in ((to_data, s_rec), (between, d_rec))
    )
    salinity = _salinity(reference)
    units = fidelity_metrics_for(salinity)["nearest_distance_data"].cf_units if field == "toce" else FIELDS[field].units
    return xr.Dataset(
        {
            "nearest_distance_samples": nearest_samples.assign_attrs(
                long_name=f"Median over samples of the volume-weighted RMS {field} distance to the nearest data record",
                units=units,
            ),
            "nearest_distance_data": nearest_data.assign_attrs(
                long_name=f"Median over data records of the volume-weighted RMS {field} distance to the nearest other one",
                units=units,
            ),
            "novelty_ratio": _ratio(nearest_samples, nearest_data).assign_attrs(
                long_name="Nearest-data distance of the samples over the data's own (0: copies, 1: as new as the data)",
                units="1",
            ),
        },
        attrs={"novelty_field": field},
    )


# --- geostrophic consistency of ssh ----------------------------------------------------------------------


def _area_anomaly(field: xr.DataArray, area: xr.DataArray) -> xr.DataArray:
    """``field`` minus its ``area``-weighted mean over each horizontal plane (NaN on a land level)."""
    return field - _weighted_mean(field, area, HORIZONTAL_DIMS)


def _unbalanced_ssh(ds: xr.Dataset, eos: str, level_area: xr.DataArray, thickness: xr.DataArray,
                    rho0: float) -> tuple[xr.DataArray, xr.DataArray]:
    """The RMS over the surface of the bottom-pressure anomaly and of the ssh anomaly (m), per record."""
    area = level_area.isel({Z: 0})
    rho = _bare(potential_density(_field(ds, "toce"), _field(ds, "soce"), eos=eos))
    steric = (_area_anomaly(rho, level_area).where(level_area > 0, 0.0) * thickness).sum(Z) / rho0
    ssh = _area_anomaly(_field(ds, "ssh"), area)
    bottom = _area_anomaly(ssh + steric, area)
    return (np.sqrt(_weighted_mean(x**2, area, HORIZONTAL_DIMS)) for x in (bottom, ssh))


def ssh_balance(samples: xr.Dataset, reference: xr.Dataset, *, eos: EosName = "auto",
                rho0: float = RHO0) -> xr.Dataset:
    r"""Geostrophic consistency of ``ssh`` with the density field: how much sea surface the density leaves unbalanced.

    The hydrostatic pressure at the bottom of a column is :math:`g\,(\rho_0 \eta + \sum_k \rho_k e_{3t,k})`.
    Its horizontal anomaly in metres of water,

    .. math:: b = \eta' + \frac{1}{\rho_0} \sum_k \rho'_k\, e_{3t,k},

    (primes: departures from the area-weighted mean over the ocean of the surface, of each level, and of
    :math:`b` itself; :math:`\rho` the potential density) drives the geostrophic flow at the bottom,
    :math:`f\,\hat z \times u_b = -g \nabla b`. In a spun-up ocean the sea surface is mostly balanced by
    the density below (the baroclinic gyre's compensation), so :math:`b` is a fraction of :math:`\eta'`; an
    ``ssh`` generated out of step with the density leaves :math:`b` as large as :math:`\eta'` itself, and
    NEMO's first steps radiate it away as barotropic waves. Per set, the area-weighted RMS of :math:`b`
    over the ocean surface, mean over records; the ratio is samples over data (1: as balanced as the data).

    Parameters
    ----------
    samples, reference : xarray.Dataset
        Two sets on the same grid with ``toce``, ``soce`` and ``ssh``.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the potential density (the reference's by default).
    rho0 : float, default 1026.0
        Reference density (kg m-3), NEMO's ``rho0``.

    Returns
    -------
    xarray.Dataset
        ``ssh_balance_samples``, ``ssh_balance_data`` (m), ``ssh_balance_ratio`` and the RMS of the ssh
        anomaly itself, ``ssh_anomaly_samples``, ``ssh_anomaly_data`` (m); lazy. Empty when either set has
        no ``ssh``.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> float(ssh_balance(data, data)["ssh_balance_ratio"])
    1.0
    """
    _check_pair(samples, reference)
    if "ssh" not in samples.variables or "ssh" not in reference.variables:
        return xr.Dataset()
    eos = dataset_eos(reference, eos)
    level_area = _bare(cell_area(reference)).where(_bare(ocean_mask(reference)), 0.0)  # its top level: the surface's
    thickness = _bare(grid_variable(reference, "e3t", "e3t_0")).astype(np.float64)
    out = {}
    for who, ds in (("samples", samples), ("data", reference)):
        bottom, ssh = _unbalanced_ssh(ds, eos, level_area, thickness, rho0)
        rdim = record_dim(ds)
        out[f"ssh_balance_{who}"] = bottom.mean(rdim).assign_attrs(
            long_name=f"RMS bottom-pressure anomaly left by ssh and density, metres of water ({who}), mean over records",
            units="m")
        out[f"ssh_anomaly_{who}"] = ssh.mean(rdim).assign_attrs(
            long_name=f"RMS ssh anomaly over the ocean surface ({who}), mean over records", units="m")
    out["ssh_balance_ratio"] = _ratio(out["ssh_balance_samples"], out["ssh_balance_data"]).assign_attrs(
        long_name="RMS bottom-pressure anomaly left by ssh and density, samples over data", units="1")
    return xr.Dataset(out, attrs={"eos": eos})


# --- all -------------------------------------------------------------------------------------------


def fidelity(samples: xr.Dataset, reference: xr.Dataset, *, eos: EosName = "auto", n_std: float = 5.0) -> xr.Dataset:
    """All fidelity measures of one sample set against the training data, lazily.

    Parameters
    ----------
    samples : xarray.Dataset
        The sample set (at least two records for the spread).
    reference : xarray.Dataset
        The training data on the same grid (at least two records).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the density errors and the convective adjustment (the reference's by default).
    n_std : float, default 5.0
        Widening of the data's per-level range (:func:`range_violations`).

    Returns
    -------
    xarray.Dataset
        The variables of :func:`spread_ratio`, :func:`gradient_variance_ratio`, :func:`range_violations`,
        :func:`novelty`, :func:`density_errors_by_band`, :func:`ssh_balance` (where both sets have ``ssh``)
        and, when :mod:`xoceandiff.convection` is there, :func:`convective_distance`; lazy (:func:`annotate_worst` names the worst out-of-range cell once
        computed).

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=4, resolution=4.0)
    >>> result = fidelity(data, data).compute()
    >>> float(result["spread_ratio_soce_below-1000m"]), float(result.range_violations_toce)
    (1.0, 0.0)
    """
    eos = dataset_eos(reference, eos)
    parts = [
        spread_ratio(samples, reference),
        gradient_variance_ratio(samples, reference),
        range_violations(samples, reference, n_std=n_std),
        novelty(samples, reference),
        density_errors_by_band(samples, reference, eos=eos),
        convective_distance(samples, reference, eos=eos),
        ssh_balance(samples, reference, eos=eos),
    ]
    out = xr.merge(parts, combine_attrs="drop_conflicts")
    out.attrs.update({"eos": eos, "n_std": float(n_std), "convection": int(convection_available())})
    return out


# --- conditional skill ---------------------------------------------------------------------------------


def conditional_skill(samples: xr.Dataset, reference: xr.Dataset, day_of_year: float, *,
                      window: float = 15.0) -> xr.Dataset:
    r"""How well samples generated for ``day_of_year`` match the data's state for that day.

    The data's state for the day is the mean of its records within ``window`` days of it (on the calendar's
    circle); anomalies are taken from the mean of all records. With :math:`A` the cell areas of the surface
    ocean, :math:`s` the samples' mean surface temperature and :math:`d` the day's data mean:

    - ``sst_anomaly_correlation``: area-weighted correlation over the surface ocean of :math:`s - ar d_{all}`
      with :math:`d - ar d_{all}`;
    - ``upper_t_samples`` / ``upper_t_data`` / ``upper_t_data_std``: volume-mean T of the top 200 m, of the
      samples (their mean) and of the day's records (mean and std across them, ddof 0);
    - ``level_mean_error_toce``: RMS over levels (weighted by their ocean volume) of the difference of the
      area-weighted level means of T, samples' mean minus the day's data mean.

    Parameters
    ----------
    samples : xarray.Dataset
        Samples generated for ``day_of_year`` (dimension ``sample``).
    reference : xarray.Dataset
        The data, with a time coordinate (its calendar gives the year's length).
    day_of_year : float
        0-based day of the year.
    window : float
        Half-width in days of the data records taken as "that day".

    Returns
    -------
    xarray.Dataset
        The scalars above, computed.
    """
    from .conditions import record_conditions

    s_dim, r_dim = _check_pair(samples, reference)
    specs, values = record_conditions(reference, ["day_of_year"])
    period = specs[0].days_per_year
    gap = np.abs(values["day_of_year"] - float(day_of_year)) % period
    near = np.flatnonzero(np.minimum(gap, period - gap) <= window)
    if near.size == 0:
        raise InvalidDataError(f"day_of_year: no record of the data within {window:g} days of {day_of_year!r}; "
                               "widen window.")
    ocean = _bare(ocean_mask(reference))
    area = (_bare(grid_variable(reference, "e1t")) * _bare(grid_variable(reference, "e2t"))).where(ocean, 0.0)
    toce_data, toce_samples = _field(reference, "toce"), _field(samples, "toce")
    climate = toce_data.mean(r_dim)
    day = toce_data.isel({r_dim: near})
    surface = {Z: 0}
    a = area.isel(surface)
    d = (day.mean(r_dim) - climate).isel(surface).where(ocean.isel(surface), 0.0)
    m = (toce_samples.mean(s_dim) - climate).isel(surface).where(ocean.isel(surface), 0.0)
    w = a / a.sum()
    d0, m0 = d - (w * d).sum(), m - (w * m).sum()
    correlation = (w * d0 * m0).sum() / np.sqrt((w * d0**2).sum() * (w * m0**2).sum())
    volume = _bare(cell_volume(reference))
    upper = ocean & (_bare(grid_variable(reference, "gdept_1d")) < 200.0)
    upper_volume = volume.where(upper, 0.0)

    def upper_mean(x: xr.DataArray) -> xr.DataArray:
        return (x.where(upper, 0.0) * upper_volume).sum(SPATIAL_DIMS) / upper_volume.sum()

    def level_means(x: xr.DataArray) -> xr.DataArray:
        return (x.where(ocean, 0.0) * area).sum((Y, X)) / area.sum((Y, X)).where(lambda v: v > 0)

    day_upper = upper_mean(day)
    level_gap = level_means(toce_samples.mean(s_dim)) - level_means(day.mean(r_dim))
    level_volume = volume.sum((Y, X))
    level_error = np.sqrt((level_volume * level_gap.fillna(0.0) ** 2).sum() / level_volume.sum())
    out = xr.Dataset({
        "sst_anomaly_correlation": correlation.assign_attrs(
            long_name="Correlation of the samples' mean SST anomaly with the data's for the day", units="1"),
        "upper_t_samples": upper_mean(toce_samples).mean(s_dim).assign_attrs(
            long_name="Samples' volume-mean T of the top 200 m", units=_T_UNITS),
        "upper_t_data": day_upper.mean(r_dim).assign_attrs(
            long_name="Day's data volume-mean T of the top 200 m", units=_T_UNITS),
        "upper_t_data_std": day_upper.std(r_dim).assign_attrs(
            long_name="Spread (std) of the day's data volume-mean T of the top 200 m", units=_T_UNITS),
        "level_mean_error_toce": level_error.assign_attrs(
            long_name="Volume-weighted RMS over levels of the samples' minus the day's level means of T",
            units=_T_UNITS),
    })
    out.attrs = {"day_of_year": float(day_of_year), "window_days": float(window), "data_records": int(near.size)}
    return out.compute()
