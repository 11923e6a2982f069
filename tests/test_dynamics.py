"""Thermal wind: the analytic shear of a uniform density gradient, in restarts too, and plausibility."""

from __future__ import annotations

import netCDF4
import numpy as np
import xarray as xr

import xoceandiff
from xoceandiff.datasets import dino_grid
from xoceandiff.dynamics import GRAVITY, OMEGA, RHO0, thermal_wind
from xoceandiff.eos import SEOS_CONSTANTS
from xoceandiff.restart import check_restart, to_restart


def _meridional_distance(ds):
    """Y(j): distance from row 0 along the grid's meridians, sum of e2v (so that dY = e2v exactly)."""
    e2v = ds.e2v.isel(x_c=0).values
    return np.concatenate([[0.0], np.cumsum(e2v[:-1])])


def _analytic_u(ds, gradient, equator_band=5.0):
    """u = g G / (rho0 f) * (depth of the deepest ocean U level - depth), independent numpy code."""
    grid = dino_grid(4.0)
    umask = ds.umask.values.astype(bool)
    e3w = ds.e3w.values
    gdept = np.cumsum(e3w, axis=0)  # depth of T level k: sum of the W thicknesses above it
    gdepu = 0.5 * (gdept + np.roll(gdept, -1, axis=2))  # periodic in x
    lat_u = grid.gphiu.values
    f = 2 * OMEGA * np.sin(np.deg2rad(lat_u))
    bottom = np.where(umask.any(axis=0), umask.shape[0] - 1 - np.argmax(umask[::-1], axis=0), 0)
    depth_bottom = np.take_along_axis(gdepu, bottom[None], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = GRAVITY * gradient / (RHO0 * f) * (depth_bottom - gdepu)
    return np.where(umask & (np.abs(lat_u) >= equator_band), u, 0.0)


def test_thermal_wind_matches_analytic_shear():
    ds = xoceandiff.datasets.dino(n=1, resolution=4.0).isel(t=0).compute()
    gradient = 2e-7  # kg m-4: density increases northward
    density = 1025.0 + gradient * xr.DataArray(_meridional_distance(ds), dims="y_c") + 0 * ds.e3t
    u, v = thermal_wind(ds, density=density)
    expected = _analytic_u(ds, gradient)
    assert u.dims == ("z_c", "y_c", "x_f") and v.dims == ("z_c", "y_f", "x_c")
    scale = np.abs(expected).max()
    assert scale > 0.01
    np.testing.assert_allclose(u.values, expected, rtol=0, atol=1e-6 * scale)
    assert np.abs(v.values).max() <= 1e-6 * scale  # no zonal gradient, no meridional flow
    # zero at the bottom, positive (eastward) above it in the north where f > 0
    lat = dino_grid(4.0).gphiu.values
    north = (lat > 10) & ds.umask.values[0].astype(bool)
    assert np.all(u.values[0][north] > 0) and np.all(u.values[34][north] == 0)
    assert np.all(u.values[:, np.abs(lat) < 5.0] == 0)


def test_thermal_wind_in_restart_with_seos(tmp_path):
    ds = xoceandiff.datasets.dino(n=1, resolution=4.0).compute()
    gradient = 2e-7
    # the S-EOS at T = 10 °C is linear in salinity: rho = rho0 + b0 (S - 35)
    salinity = 35.0 + gradient * xr.DataArray(_meridional_distance(ds), dims="y_c") / SEOS_CONSTANTS["b0"]
    ocean = ds.tmask
    attrs = {name: dict(ds[name].attrs) for name in ("toce", "soce")}  # not e3t's units
    ds["toce"] = (10.0 + 0 * ds.e3t).where(ocean).expand_dims(t=ds.t).transpose(*ds.toce.dims)
    ds["soce"] = (salinity + 0 * ds.e3t).where(ocean).expand_dims(t=ds.t).transpose(*ds.soce.dims)
    for name in attrs:
        ds[name].attrs = attrs[name]
    (path,) = to_restart(ds, tmp_path, velocities="thermal_wind", eos="seos", nemo_version="4.2")  # with ub
    assert check_restart(path, ds) == []
    expected = _analytic_u(ds.isel(t=0), gradient)
    with netCDF4.Dataset(path) as nc:
        un, vn, ub = nc["un"][0], nc["vn"][0], nc["ub"][0]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(un, expected, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(ub, un)
    assert np.abs(vn).max() <= 1e-6 * scale


def test_thermal_wind_of_a_generated_state_is_plausible():
    state = xoceandiff.datasets.dino(n=3, resolution=4.0, seed=2).isel(t=0).compute()
    u, v = thermal_wind(state)
    assert np.isfinite(u.values).all() and np.isfinite(v.values).all()
    assert 0.001 < float(abs(u).max()) < 2.0
    assert np.all(u.values[~state.umask.values.astype(bool)] == 0)
    assert np.all(v.values[~state.vmask.values.astype(bool)] == 0)


def test_thermal_wind_keeps_the_record_dimension_first():
    states = xoceandiff.datasets.dino(n=2, resolution=4.0, seed=2).compute()
    u, v = thermal_wind(states)
    assert u.dims == ("t", "z_c", "y_c", "x_f") and v.dims == ("t", "z_c", "y_f", "x_c")
    first, _ = thermal_wind(states.isel(t=0))
    np.testing.assert_allclose(u.isel(t=0).values, first.values, rtol=0, atol=1e-12)
    assert u.attrs["standard_name"] == "sea_water_x_velocity" and v.attrs["standard_name"] == "sea_water_y_velocity"


def test_old_import_path_is_the_same_function():
    import xoceandiff.restart as restart

    assert restart.thermal_wind is thermal_wind and restart.OMEGA == OMEGA and restart.RHO0 == RHO0
