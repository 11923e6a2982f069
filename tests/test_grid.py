"""The xgcm grid: explicit padding, periodic exactly when Iperio = 1, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xoceandiff


@pytest.fixture(scope="module")
def ds():
    return xoceandiff.datasets.dino(n=2, resolution=4.0, seed=1).compute()


def test_axes_and_metrics(ds):
    grid = ds.oceandiff.grid
    assert set(grid.axes) == {"X", "Y", "Z"}
    area = grid.get_metric(ds.toce, ("X", "Y"))
    np.testing.assert_allclose(area.values, (ds.e1t * ds.e2t).values)
    thickness = grid.get_metric(ds.toce, ("Z",))
    np.testing.assert_allclose(thickness.values, ds.e3t.values)


def test_periodic_diff_matches_numpy(ds):
    """grid.diff along the periodic X axis: T -> U points, u_i = T_{i+1} - T_i with T_{nx} = T_0."""
    field = xr.DataArray(np.random.default_rng(0).normal(size=(ds.sizes["y_c"], ds.sizes["x_c"])), dims=("y_c", "x_c"))
    result = ds.oceandiff.grid.diff(field, "X")
    assert result.dims == ("y_c", "x_f")
    expected = np.roll(field.values, -1, axis=1) - field.values
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-12)
    # and back: U -> T, t_i = u_i - u_{i-1}, periodic
    back = ds.oceandiff.grid.diff(result.rename(x_f="x_f"), "X")
    np.testing.assert_allclose(back.values, result.values - np.roll(result.values, 1, axis=1), atol=1e-12)


def test_closed_y_axis_pads_with_zero(ds):
    field = xr.DataArray(np.arange(ds.sizes["y_c"], dtype=float)[:, None] * np.ones(ds.sizes["x_c"]), dims=("y_c", "x_c"))
    result = ds.oceandiff.grid.diff(field, "Y").values
    np.testing.assert_allclose(result[:-1], 1.0)
    np.testing.assert_allclose(result[-1], 0.0 - (ds.sizes["y_c"] - 1))  # fill value 0 beyond the north edge


def test_not_periodic_without_iperio(ds):
    closed = ds.copy()
    closed.attrs["Iperio"] = 0
    field = xr.DataArray(np.ones((ds.sizes["y_c"], ds.sizes["x_c"])), dims=("y_c", "x_c"))
    result = closed.oceandiff.grid.diff(field, "X").values
    np.testing.assert_allclose(result[:, :-1], 0.0)
    np.testing.assert_allclose(result[:, -1], -1.0)  # padded with 0, not wrapped


def test_accessor_keeps_no_state(ds):
    """xarray caches accessors per object: the grid must follow the dataset, not the first call."""
    a = ds.oceandiff.grid
    b = ds.oceandiff.grid
    assert a is not b
    closed = ds.assign_attrs(Iperio=0)
    assert closed.oceandiff.periodic_x is False and ds.oceandiff.periodic_x is True
