"""The xgcm grid of a canonical dataset.

X is periodic exactly when NEMO's flags say so (``Iperio = 1``, see
:func:`xoceandiff.nemo.is_periodic_x`); otherwise every axis is padded explicitly with a fill value of
0, the value NEMO gives land. Nothing is ever silently periodic.
"""

from __future__ import annotations

import xarray as xr
import xgcm

from .errors import MissingVariableError

__all__ = ["build_grid", "grid_padding", "METRICS"]

# Metric names per axis, as xnemogcm/xgcm expect them; only those present in the dataset are used.
METRICS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("X",): ("e1t", "e1u", "e1v", "e1f"),
    ("Y",): ("e2t", "e2u", "e2v", "e2f"),
    ("Z",): ("e3t", "e3u", "e3v", "e3w"),
}

_AXES = {
    "X": {"center": "x_c", "right": "x_f"},
    "Y": {"center": "y_c", "right": "y_f"},
    "Z": {"center": "z_c", "left": "z_f"},
}


def grid_padding(ds: xr.Dataset) -> dict[str, str]:
    """Per-axis padding of the grid: ``periodic`` in X when ``ds.attrs["Iperio"] == 1``, else ``fill``."""
    return {
        "X": "periodic" if int(ds.attrs.get("Iperio", 0)) == 1 else "fill",
        "Y": "fill",
        "Z": "fill",
    }


def build_grid(ds: xr.Dataset) -> xgcm.Grid:
    """An :class:`xgcm.Grid` over T/U/V/F/W points of a canonical dataset, with its metrics.

    Parameters
    ----------
    ds : xarray.Dataset
        A canonical dataset (from :func:`xoceandiff.open_nemo` or :func:`xoceandiff.datasets.dino`).

    Returns
    -------
    xgcm.Grid
        Axes X (``x_c``/``x_f``), Y (``y_c``/``y_f``), Z (``z_c``/``z_f``); metrics e1*, e2*, e3* present
        in ``ds``; padding from :func:`grid_padding` with fill value 0.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> grid = build_grid(ds)
    >>> sorted(grid.axes)
    ['X', 'Y', 'Z']
    >>> grid.axes["X"].padding if hasattr(grid.axes["X"], "padding") else grid_padding(ds)["X"]
    'periodic'
    """
    coords = {}
    for axis, positions in _AXES.items():
        present = {pos: dim for pos, dim in positions.items() if dim in ds.dims or dim in ds.coords}
        if "center" not in present:
            raise MissingVariableError(
                f"The dataset has no '{positions['center']}' dimension for the {axis} axis; found dims "
                f"{sorted(map(str, ds.dims))}. Open NEMO files with xoceandiff.open_nemo."
            )
        coords[axis] = present
    metrics = {
        axes: [name for name in names if name in ds.variables] for axes, names in METRICS.items()
    }
    metrics = {axes: names for axes, names in metrics.items() if names}
    return xgcm.Grid(
        ds,
        coords=coords,
        metrics=metrics,
        padding=grid_padding(ds),
        fill_value=0.0,
        autoparse_metadata=False,
    )
