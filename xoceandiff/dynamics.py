"""Ocean dynamics of a state: velocities in thermal-wind balance with its density, and NEMO's constants.

A generated state has temperature, salinity and sea surface height but no velocities. NEMO can start
from rest; :func:`thermal_wind` instead gives the geostrophic velocities that balance the state's
horizontal density gradients (zero at the bottom), for restarts that start with a circulation
(:func:`xoceandiff.restart.to_restart` with ``velocities="thermal_wind"``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .canonical import X, Y, Z, eos_for
from .eos import density_seos, potential_density
from .errors import MissingVariableError
from .grid import build_grid

__all__ = ["OMEGA", "GRAVITY", "RHO0", "thermal_wind"]

OMEGA = 7.292115083e-5
"""Earth's rotation rate (rad s-1), NEMO's ``omega``."""
GRAVITY = 9.80665
"""Gravity (m s-2), NEMO's ``grav``."""
RHO0 = 1026.0
"""Reference density (kg m-3), NEMO's ``rho0``."""

# Velocity points on NEMO's C grid: u between T points along x, v along y.
_U_DIMS = (Z, Y, "x_f")
_V_DIMS = (Z, "y_f", X)


def _bare(ds: xr.Dataset, name: str) -> xr.DataArray:
    if name not in ds.variables:
        raise MissingVariableError(
            f"thermal_wind needs '{name}' (a grid variable of the canonical dataset); found "
            f"{sorted(map(str, ds.variables))}. Open the data with xoceandiff.open_nemo or pass the training dataset's grid."
        )
    return ds[name].reset_coords(drop=True)


def _to_levels(w_field: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    """A field on W levels (z_f) re-labelled on T levels: W level m lies just above T level m."""
    return w_field.rename(z_f=Z).assign_coords({Z: ds[Z].values})


def _density(ds: xr.Dataset, density: xr.DataArray | None, eos: str, rho0: float) -> xr.DataArray:
    """Density at T points, land 0 (so that gradients across the coast are masked, not NaN)."""
    if density is None:
        if eos == "auto":  # the equation of state of the state's salinity (EOS-80 for practical)
            eos = eos_for(ds)
        if eos == "seos":
            density = density_seos(_bare(ds, "toce"), _bare(ds, "soce"), rho0=rho0)
        else:
            density = potential_density(_bare(ds, "toce"), _bare(ds, "soce"), eos=eos)
    tmask = _bare(ds, "tmask").astype(bool)
    return density.reset_coords(drop=True).where(tmask, 0.0).fillna(0.0)


def _onto_other_point(grid, field: xr.DataArray, mask: xr.DataArray, first: str, second: str) -> xr.DataArray:
    """Mean of the (up to four) ocean neighbours of ``field``, interpolated along ``first`` then ``second``."""
    weight = mask.astype(float)
    total = grid.interp(grid.interp(field, first), second)
    count = grid.interp(grid.interp(weight, first), second)
    return (total / count.where(count > 0)).fillna(0.0)


def _coriolis(grid, ds: xr.Dataset, axis: str, equator_band: float) -> xr.DataArray:
    """``f = 2 Omega sin(lat)`` at U (``axis="X"``) or V (``"Y"``) points, NaN within the equatorial band."""
    exact = "gphiu" if axis == "X" else "gphiv"
    lat = _bare(ds, exact) if exact in ds.variables else grid.interp(_bare(ds, "gphit"), axis)
    # NaN (not 0) within the equatorial band, so that nothing divides by f = 0 there
    return (2.0 * OMEGA * np.sin(np.deg2rad(lat))).where(abs(lat) >= equator_band)


def _w_thickness(ds: xr.Dataset) -> xr.DataArray:
    """Thickness of W levels at T points, labelled on T levels (``e3w``, else differences of ``gdept_1d``)."""
    if "e3w" in ds.variables:
        return _to_levels(_bare(ds, "e3w"), ds)
    depth = _bare(ds, "gdept_1d")
    e3w = depth.diff(Z, label="upper").reindex({Z: depth[Z]}).fillna(depth.isel({Z: 0}))
    return e3w.broadcast_like(_bare(ds, "tmask"))


def _integrate_upward(shear: xr.DataArray, mask: xr.DataArray, e3: xr.DataArray) -> xr.DataArray:
    """Velocity from its vertical shear, zero at the deepest ocean level.

    W level m (between T levels m-1 and m) adds the mean shear of the two levels times the W thickness,
    counted only where both levels are ocean; u(k) is the sum of the increments below level k.
    """
    both = mask & mask.shift({Z: 1}, fill_value=False)
    increment = (0.5 * (shear + shear.shift({Z: 1}, fill_value=0.0)) * e3).where(both, 0.0)
    return (increment.sum(Z) - increment.cumsum(Z)).where(mask, 0.0)


def _velocity(values: xr.DataArray, name: str, dims: tuple[str, ...], direction: str) -> xr.DataArray:
    """``values`` with the record dimensions first, then ``dims``, named and with CF attributes."""
    order = [d for d in values.dims if d not in dims] + list(dims)
    out = values.transpose(*order).rename(name)
    out.attrs = {
        "standard_name": f"sea_water_{direction[0]}_velocity",
        "units": "m s-1",
        "long_name": f"{direction[1]} velocity in thermal-wind balance (zero at the bottom)",
    }
    return out


def thermal_wind(
    ds: xr.Dataset,
    *,
    density: xr.DataArray | None = None,
    eos: str = "auto",
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
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}
        Equation of state for the potential density (:func:`xoceandiff.eos.potential_density`); ``"auto"``
        follows the salinity kind (EOS-80 for practical salinity, TEOS-10 for absolute).
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
    umask = _bare(ds, "umask").astype(bool)
    vmask = _bare(ds, "vmask").astype(bool)
    rho = _density(ds, density, eos, rho0)

    # 1. density gradients on the faces where they are centred, 2. then onto the other velocity point
    drho_dy = (grid.diff(rho, "Y") / _bare(ds, "e2v")).where(vmask, 0.0)  # V points
    drho_dx = (grid.diff(rho, "X") / _bare(ds, "e1u")).where(umask, 0.0)  # U points
    drho_dy_u = _onto_other_point(grid, drho_dy, vmask, "X", "Y")  # V -> F -> U
    drho_dx_v = _onto_other_point(grid, drho_dx, umask, "Y", "X")  # U -> F -> V

    # 3. shear over f, integrated upward; 4. no balance near the equator: shear 0 there
    f_u = _coriolis(grid, ds, "X", equator_band)
    f_v = _coriolis(grid, ds, "Y", equator_band)
    e3w = _w_thickness(ds)
    u = _integrate_upward((gravity / rho0 * drho_dy_u / f_u).fillna(0.0), umask & f_u.notnull(), grid.interp(e3w, "X"))
    v = _integrate_upward((-gravity / rho0 * drho_dx_v / f_v).fillna(0.0), vmask & f_v.notnull(), grid.interp(e3w, "Y"))
    return _velocity(u, "u", _U_DIMS, ("x", "Zonal")), _velocity(v, "v", _V_DIMS, ("y", "Meridional"))
