"""Figures comparing generated ocean states with the data they were trained on.

matplotlib is an optional dependency (``pip install xoceandiff[plot]``), imported only when a figure
is drawn. Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no
change to the user's backend, no global state. Each ``plot_*`` function returns a Figure;
:func:`plot_all` draws them all and writes PNGs atomically.

Every function takes ``sets``, a mapping of set names to datasets with the reference first
(``{"Data": ds, "No constraint": s0, "Constraint": s1}``); each set has its own record dimension.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import xarray as xr

from .atomic import atomic_path
from .canonical import HORIZONTAL_DIMS, X, Z, ocean_mask, record_dim, salinity_kind
from .diagnostics import (
    METRICS,
    SCALAR_METRICS,
    EosName,
    dataset_eos,
    diagnostics,
    horizontal_mean_profiles,
    metrics_for,
    record_labels,
    surface_field,
    unstable_column_counts,
    zonal_mean,
)
from .errors import InvalidDataError, MissingDependencyError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .report import Report

__all__ = [
    "plot_all",
    "plot_surface_maps",
    "plot_zonal_sections",
    "plot_profiles",
    "plot_metric_histograms",
    "plot_density_error_map",
    "FIGURE_NAMES",
]

FIGURE_NAMES: tuple[str, ...] = (
    "surface_maps",
    "zonal_mean_toce",
    "profiles",
    "metric_histograms",
    "density_errors_map",
)
"""The PNG files :func:`plot_all` writes (``<name>.png``)."""

_REFERENCE_COLOR = "black"
_SET_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
_LAND_COLOR = "0.8"
_DEPTH_TICKS = (0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000)

# Map titles and colour maps; the units are those of the metrics table (a field's own display units).
_FIELD_STYLE = {
    "toce": ("Surface temperature", METRICS["surface_toce"].units, "RdYlBu_r"),
    "soce": ("Surface salinity", METRICS["surface_soce"].units, "viridis"),
    "ssh": ("Sea surface height", METRICS["ssh_mean"].units, "RdBu_r"),
}


def _figure(**kwargs: Any) -> Figure:
    """A new Agg-backed Figure; a clear error when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "xoceandiff.plotting needs matplotlib: pip install 'xoceandiff[plot]' (or pip install matplotlib)."
        ) from err
    return Figure(**kwargs)


def _colors(sets: Mapping[str, xr.Dataset]) -> dict[str, str]:
    names = list(sets)
    out = {names[0]: _REFERENCE_COLOR}
    for i, name in enumerate(names[1:]):
        out[name] = _SET_COLORS[i % len(_SET_COLORS)]
    return out


def _check_sets(sets: Mapping[str, xr.Dataset]) -> None:
    if not sets:
        raise InvalidDataError("sets: expected at least one dataset (the reference first), found none.")


def _depth_axis(ax: Any, max_depth: float) -> None:
    """Depth increasing downward on a square-root scale (the upper ocean readable), ticks in m."""
    ax.set_yscale("function", functions=(lambda d: np.sqrt(np.maximum(d, 0.0)), lambda s: s**2))
    ax.set_ylim(max_depth, 0.0)
    ticks = [t for t in _DEPTH_TICKS if t <= max_depth]
    ax.set_yticks(ticks)
    ax.set_yticklabels([str(t) for t in ticks])
    ax.set_ylabel("Depth (m)")


def _wet_levels(ds: xr.Dataset) -> np.ndarray:
    """Which levels hold any ocean (the depth axes stop at the deepest)."""
    return np.asarray(ocean_mask(ds).any(HORIZONTAL_DIMS).values)


# --- individual figures ----------------------------------------------------------------------------


def plot_surface_maps(
    sets: Mapping[str, xr.Dataset],
    *,
    n_maps: int = 3,
    fields: Sequence[str] = ("toce", "soce", "ssh"),
) -> Figure:
    """Surface maps of each field for the first ``n_maps`` records of every set, side by side.

    One row per field, one column per (set, record); one colour scale per field shared by all
    panels, land in grey.

    Parameters
    ----------
    sets : mapping of str to xarray.Dataset
        The reference first, then the sample sets.
    n_maps : int, default 3
        Records shown per set, spread evenly from the first to the last.
    fields : sequence of str, default ("toce", "soce", "ssh")
        Fields to map (the surface level of 3-D fields).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xoceandiff
    >>> fig = plot_surface_maps({"Data": xoceandiff.datasets.dino(n=2, resolution=4.0)}, n_maps=2)
    >>> len(fig.axes)  # 3 fields x 2 maps, and 3 colour bars
    9
    """
    _check_sets(sets)
    fields = [f for f in fields if all(f in ds.variables for ds in sets.values())]
    columns: list[tuple[str, xr.Dataset, int, str]] = []
    lazy = []
    for name, ds in sets.items():
        rdim = record_dim(ds)
        k = min(n_maps, ds.sizes[rdim])
        labels = record_labels(ds, rdim)
        if not np.issubdtype(ds[rdim].dtype if rdim in ds.coords else np.dtype(int), np.datetime64):
            labels = [f"{rdim} {label}" for label in labels]
        # records spread over the set (first, ..., last): a run's first records can all look alike
        for i in np.unique(np.linspace(0, ds.sizes[rdim] - 1, k).round().astype(int)).tolist():
            columns.append((name, ds, i, labels[i]))
            lazy.append({f: surface_field(ds, f).isel({rdim: i}) for f in fields})
    (values,) = dask.compute(lazy)

    ncol, nrow = len(columns), len(fields)
    fig = _figure(figsize=(1.6 * ncol + 1.6, 4.0 * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    for r, f in enumerate(fields):
        title, units, cmap = _FIELD_STYLE.get(f, (f, "", "viridis"))
        if f == "soce":  # practical salinity (EOS-80 runs) has no units
            units = metrics_for(salinity_kind(next(iter(sets.values()))))["surface_soce"].units
        stack = np.concatenate([np.ravel(v[f].values) for v in values])
        vmin, vmax = np.nanpercentile(stack, [1, 99])
        extend = "both"
        if f == "ssh":
            vmin, vmax = float(np.nanmin(stack)), float(np.nanmax(stack))
            extend = "neither"
        mesh = None
        for c, ((name, ds, _i, label), v) in enumerate(zip(columns, values, strict=True)):
            ax = axes[r, c]
            ax.set_facecolor(_LAND_COLOR)
            data = np.ma.masked_invalid(v[f].values)
            mesh = ax.pcolormesh(ds.glamt.values, ds.gphit.values, data, shading="nearest",
                                 cmap=cmap, vmin=vmin, vmax=vmax)
            if r == 0:
                ax.set_title(f"{name}\n{label}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{title}\nLatitude (°N)")
            if r == nrow - 1:
                ax.set_xlabel("Longitude (°E)")
        cbar = fig.colorbar(mesh, ax=axes[r, :].tolist(), shrink=0.9, pad=0.01, extend=extend)
        cbar.set_label(f"{title} ({units})")
    fig.suptitle("Surface fields: data snapshots beside generated samples (land grey)")
    return fig


def _zonal_mean_temperature(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """The set-mean zonal-mean temperature section, and the latitude of each row to draw it against."""
    return zonal_mean(ds, "toce"), ds.gphit.reset_coords(drop=True).mean(X)


def plot_zonal_sections(sets: Mapping[str, xr.Dataset]) -> Figure:
    """Zonal-mean temperature sections (latitude x depth) of each set's mean state, and the differences to the reference.

    Parameters
    ----------
    sets : mapping of str to xarray.Dataset
        The reference first, then the sample sets.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xoceandiff
    >>> fig = plot_zonal_sections({"Data": xoceandiff.datasets.dino(n=2, resolution=4.0)})
    >>> fig.axes[0].get_title()
    'Data (2 records)'
    """
    _check_sets(sets)
    names = list(sets)
    lazy = {name: _zonal_mean_temperature(ds) for name, ds in sets.items()}
    (values,) = dask.compute(lazy)
    reference = names[0]
    ncol = len(names)
    nrow = 2 if ncol > 1 else 1
    fig = _figure(figsize=(4.2 * ncol + 1.0, 3.6 * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    stack = np.concatenate([np.ravel(values[n][0].values) for n in names])
    vmin, vmax = float(np.nanmin(stack)), float(np.nanmax(stack))
    differences = {
        n: values[n][0].values - values[reference][0].values for n in names[1:]
    }
    dmax = max([float(np.nanmax(np.abs(d))) for d in differences.values() if np.isfinite(d).any()] or [1.0])
    dmax = dmax if dmax > 0 else 1.0
    mesh = dmesh = None
    for c, name in enumerate(names):
        ds = sets[name]
        zonal, latitude = values[name]
        depth = ds.gdept_1d.values
        wet = _wet_levels(ds)
        max_depth = float(depth[wet].max()) if wet.any() else float(depth.max())
        ax = axes[0, c]
        ax.set_facecolor(_LAND_COLOR)
        mesh = ax.pcolormesh(latitude.values, depth, np.ma.masked_invalid(zonal.values),
                             shading="nearest", cmap="RdYlBu_r", vmin=vmin, vmax=vmax)
        levels = np.arange(np.floor(vmin), np.ceil(vmax) + 1, 2.0)
        ax.contour(latitude.values, depth, np.ma.masked_invalid(zonal.values), levels=levels,
                   colors="k", linewidths=0.5)
        n = ds.sizes[record_dim(ds)]
        ax.set_title(f"{name} ({n} records)")
        _depth_axis(ax, max_depth)
        if c > 0:
            ax.set_ylabel("")
            ax.set_yticklabels([])
        ax.set_xlabel("Latitude (°N)")
        ax.tick_params(labelbottom=True)
        if nrow == 2:
            dax = axes[1, c]
            if c == 0:
                dax.set_axis_off()
                continue
            dax.set_facecolor(_LAND_COLOR)
            dmesh = dax.pcolormesh(latitude.values, depth, np.ma.masked_invalid(differences[name]),
                                   shading="nearest", cmap="RdBu_r", vmin=-dmax, vmax=dmax)
            dax.set_title(f"{name} − {reference}")
            _depth_axis(dax, max_depth)
            if c > 1:
                dax.set_ylabel("")
                dax.set_yticklabels([])
            dax.set_xlabel("Latitude (°N)")
    cbar = fig.colorbar(mesh, ax=axes[0, :].tolist(), shrink=0.9, pad=0.01)
    cbar.set_label("Zonal-mean temperature (°C)")
    if dmesh is not None:
        dcbar = fig.colorbar(dmesh, ax=axes[1, :].tolist(), shrink=0.9, pad=0.01)
        dcbar.set_label("Difference (°C)")
    fig.suptitle("Zonal-mean temperature of the set-mean state (contours every 2 °C)")
    return fig


def plot_profiles(sets: Mapping[str, xr.Dataset]) -> Figure:
    """Envelopes (min to max over records, shaded) and mean of the horizontal-mean T and S profiles.

    Top row: the profiles. Bottom row: the same minus the reference's mean profile, where the
    spread of each set and its bias show.

    Parameters
    ----------
    sets : mapping of str to xarray.Dataset
        The reference first, then the sample sets (all on the same vertical grid).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xoceandiff
    >>> fig = plot_profiles({"Data": xoceandiff.datasets.dino(n=2, resolution=4.0)})
    >>> [ax.get_xlabel() for ax in fig.axes][:2]
    ['Temperature (°C)', 'Salinity (g/kg)']
    """
    _check_sets(sets)
    _figure()  # fails clearly without matplotlib
    from matplotlib.ticker import MaxNLocator

    lazy = {name: horizontal_mean_profiles(ds) for name, ds in sets.items()}
    (values,) = dask.compute(lazy)
    colors = _colors(sets)
    names = list(sets)
    reference = names[0]
    ref_ds = sets[reference]
    wet = _wet_levels(ref_ds)
    depth = ref_ds.gdept_1d.values[wet]
    max_depth = float(depth.max())
    fig = _figure(figsize=(9.5, 10.0), layout="constrained")
    axes = fig.subplots(2, 2, sharey=True)
    variables = ("toce_profile", "soce_profile")
    ref_mean = {
        var: values[reference][var].transpose(record_dim(ref_ds), Z).values[:, wet].mean(axis=0)
        for var in variables
    }
    for name in names:
        rdim = record_dim(sets[name])
        for col, var in enumerate(variables):
            p = values[name][var].transpose(rdim, Z).values[:, wet]
            for row, offset in enumerate((0.0, ref_mean[var])):
                ax = axes[row, col]
                q = p - offset
                ax.fill_betweenx(depth, q.min(axis=0), q.max(axis=0), color=colors[name], alpha=0.25, linewidth=0)
                ax.plot(q.mean(axis=0), depth, color=colors[name], linewidth=1.5,
                        label=f"{name}: mean and min-max ({p.shape[0]} records)")
    titles = (("Horizontal-mean temperature", "Horizontal-mean salinity"),
              (f"Temperature minus {reference}'s mean", f"Salinity minus {reference}'s mean"))
    xlabels = (("Temperature (°C)", "Salinity (g/kg)"),
               ("Temperature difference (°C)", "Salinity difference (g/kg)"))
    for row in range(2):
        for col in range(2):
            ax = axes[row, col]
            _depth_axis(ax, max_depth)
            ax.set_title(titles[row][col])
            ax.set_xlabel(xlabels[row][col])
            ax.grid(True, linewidth=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            if col:
                ax.set_ylabel("")
            if row:
                ax.axvline(0.0, color="0.4", linewidth=0.8)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Per-level horizontal-mean profiles (area-weighted over ocean)")
    return fig


def _heading(metric: str, values: Mapping[str, xr.Dataset]) -> str:
    """Axis label of ``metric``, in the units its values carry (practical salinity: PSS-78)."""
    units = next((v[metric].attrs.get("units") for v in values.values() if metric in v), None)
    return metrics_for("practical" if units == "1" and metric.endswith("soce") else "absolute")[metric].heading


def plot_metric_histograms(metrics: Mapping[str, xr.Dataset]) -> Figure:
    """Histograms of each per-record scalar metric, one colour per set.

    Parameters
    ----------
    metrics : mapping of str to xarray.Dataset
        Per set, the (computed or lazy) output of :func:`xoceandiff.diagnostics.diagnostics`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.diagnostics import diagnostics
    >>> fig = plot_metric_histograms({"Data": diagnostics(xoceandiff.datasets.dino(n=2, resolution=4.0))})
    >>> fig.axes[0].get_xlabel()
    'Density errors (%)'
    """
    if not metrics:
        raise InvalidDataError("metrics: expected at least one set of metrics, found none.")
    _figure()  # fails clearly without matplotlib
    from matplotlib.ticker import MaxNLocator

    (values,) = dask.compute(dict(metrics))
    names = [m for m in SCALAR_METRICS if any(m in v for v in values.values())]
    colors = _colors(values)
    ncol = 5
    nrow = int(np.ceil(len(names) / ncol))
    fig = _figure(figsize=(3.2 * ncol, 2.8 * nrow + 0.8), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, metric in zip(axes.flat, names, strict=False):
        arrays = {
            s: np.asarray(v[metric].values, dtype=np.float64) for s, v in values.items() if metric in v
        }
        stack = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
        lo, hi = (float(stack.min()), float(stack.max())) if stack.size else (0.0, 1.0)
        if hi <= lo:
            pad = max(abs(lo) * 1e-3, 1e-6)
            lo, hi = lo - pad, hi + pad
        bins = np.linspace(lo, hi, 21)
        for s, a in arrays.items():
            ax.hist(a[np.isfinite(a)], bins=bins, color=colors[s], alpha=0.5, label=s,
                    histtype="stepfilled", edgecolor=colors[s])
        ax.set_xlabel(_heading(metric, values))
        ax.set_ylabel("Records")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.tick_params(axis="x", labelsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", ncols=len(labels), fontsize=9)
    fig.suptitle("Per-record metrics by source", x=0.02, ha="left")
    return fig


def plot_density_error_map(sets: Mapping[str, xr.Dataset], *, eos: EosName = "auto") -> Figure:
    """Where the density errors are: the mean number of unstable interfaces per column, per set.

    Parameters
    ----------
    sets : mapping of str to xarray.Dataset
        The reference first, then the sample sets.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the potential density, one for every set: ``"auto"`` matches the first
        set's salinity (:func:`xoceandiff.diagnostics.dataset_eos`).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xoceandiff
    >>> fig = plot_density_error_map({"Data": xoceandiff.datasets.dino(n=2, resolution=4.0)})
    >>> len(fig.axes)  # one map and its colour bar
    2
    """
    _check_sets(sets)
    eos = dataset_eos(next(iter(sets.values())), eos)
    (values,) = dask.compute({name: unstable_column_counts(ds, eos=eos) for name, ds in sets.items()})
    vmax = max(float(np.nanmax(v.values)) if np.isfinite(v.values).any() else 0.0 for v in values.values())
    vmax = vmax if vmax > 0 else 1.0
    ncol = len(values)
    fig = _figure(figsize=(2.4 * ncol + 1.4, 5.4), layout="constrained")
    axes = fig.subplots(1, ncol, squeeze=False, sharey=True)[0]
    mesh = None
    for ax, (name, counts) in zip(axes, values.items(), strict=True):
        ds = sets[name]
        ax.set_facecolor(_LAND_COLOR)
        mesh = ax.pcolormesh(ds.glamt.values, ds.gphit.values, np.ma.masked_invalid(counts.values),
                             shading="nearest", cmap="magma_r", vmin=0.0, vmax=vmax)
        ax.set_title(f"{name}\nmean {float(np.nanmean(counts.values)):.3g} per column", fontsize=10)
        ax.set_xlabel("Longitude (°E)")
    axes[0].set_ylabel("Latitude (°N)")
    cbar = fig.colorbar(mesh, ax=list(axes), shrink=0.9, pad=0.01)
    cbar.set_label("Unstable interfaces per column\n(mean over records)")
    fig.suptitle(f"Static instabilities (potential density, eos={eos})")
    return fig


# --- everything --------------------------------------------------------------------------------------


def plot_all(
    reference: xr.Dataset,
    samples: Mapping[str, xr.Dataset],
    out_folder: str | os.PathLike,
    *,
    eos: EosName = "auto",
    depth_box: float = 1500.0,
    n_maps: int = 3,
    reference_name: str = "Data",
    report: Report | None = None,
    overwrite: bool = False,
    dpi: int = 110,
) -> list[Path]:
    """Draw every figure and write them as PNGs into ``out_folder``.

    Writes ``surface_maps.png``, ``zonal_mean_toce.png``, ``profiles.png``,
    ``metric_histograms.png`` and ``density_errors_map.png`` (see :data:`FIGURE_NAMES`).

    Parameters
    ----------
    reference : xarray.Dataset
        The reference states (the training data).
    samples : mapping of str to xarray.Dataset
        Sample sets by name.
    out_folder : path-like
        Where the PNGs go (created if needed).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the density errors: ``"auto"`` matches the reference's salinity
        (:func:`xoceandiff.diagnostics.dataset_eos`).
    depth_box : float, default 1500.0
        Depth limit of the boxes (for the metric histograms).
    n_maps : int, default 3
        Records mapped per set.
    reference_name : str, default "Data"
        Name of the reference in titles and legends.
    report : xoceandiff.report.Report, optional
        Already computed metrics (from :func:`xoceandiff.report.report` on the same sets) to
        reuse for the histograms instead of computing them again.
    overwrite : bool, default False
        Replace existing PNGs.
    dpi : int, default 110
        Resolution of the PNGs.

    Returns
    -------
    list of pathlib.Path
        The PNGs written, in :data:`FIGURE_NAMES` order.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> paths = plot_all(ds, {}, tempfile.mkdtemp(), n_maps=1)
    >>> [p.name for p in paths][:2]
    ['surface_maps.png', 'zonal_mean_toce.png']
    """
    if reference_name in samples:
        raise InvalidDataError(
            f"samples: the set name {reference_name!r} is the reference's; rename the set or pass "
            "reference_name=..."
        )
    sets = {reference_name: reference, **dict(samples)}
    eos = dataset_eos(reference, eos)
    if report is not None:
        metrics = {name: report.source(name) for name in report.sources}
    else:
        metrics = {name: diagnostics(ds, eos=eos, depth_box=depth_box) for name, ds in sets.items()}
    makers = {
        "surface_maps": lambda: plot_surface_maps(sets, n_maps=n_maps),
        "zonal_mean_toce": lambda: plot_zonal_sections(sets),
        "profiles": lambda: plot_profiles(sets),
        "metric_histograms": lambda: plot_metric_histograms(metrics),
        "density_errors_map": lambda: plot_density_error_map(sets, eos=eos),
    }
    folder = Path(out_folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FIGURE_NAMES:
        fig = makers[name]()
        path = folder / f"{name}.png"
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        paths.append(path)
    return paths
