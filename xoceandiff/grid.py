"""The xgcm grid of a canonical dataset.

X is periodic exactly when NEMO's flags say so (``Iperio = 1``, see
:func:`xoceandiff.nemo.is_periodic_x`); otherwise every axis is padded explicitly with a fill value of
0, the value NEMO gives land. Nothing is ever silently periodic.
"""

from __future__ import annotations

import xarray as xr
import xgcm

from .canonical import X, Y, Z
from .errors import MissingVariableError

__all__ = ["build_grid", "grid_padding", "METRICS"]

# Metric names per axis, as xnemogcm/xgcm expect them; only those present in the dataset are used.
METRICS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("X",): ("e1t", "e1u", "e1v", "e1f"),
    ("Y",): ("e2t", "e2u", "e2v", "e2f"),
    ("Z",): ("e3t", "e3u", "e3v", "e3w"),
}

# xnemogcm's positions: U/V faces right of the T points (i+1/2), W levels above them (k-1/2).
_AXES = {
    "X": {"center": X, "right": "x_f"},
    "Y": {"center": Y, "right": "y_f"},
    "Z": {"center": Z, "left": "z_f"},
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
    DINO is periodic in X (``Iperio = 1``) and closed in Y: a difference from T to U points wraps
    around, one from T to V points sees 0 beyond the northern edge (numpy gives the expected values).

    >>> import numpy as np, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> grid = build_grid(ds)
    >>> sorted(grid.axes)
    ['X', 'Y', 'Z']
    >>> f = ds.toce.isel(t=0, z_c=0).fillna(0.0)  # surface temperature, 0 on land as NEMO has it
    >>> dx, dy = grid.diff(f, "X"), grid.diff(f, "Y")
    >>> dx.dims, dy.dims
    (('y_c', 'x_f'), ('y_f', 'x_c'))
    >>> bool(np.allclose(dx, np.roll(f.values, -1, axis=1) - f.values))
    True
    >>> north = np.concatenate([f.values[1:], np.zeros_like(f.values[:1])])
    >>> bool(np.allclose(dy, north - f.values))
    True
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
