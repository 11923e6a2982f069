"""Tests of xoceandiff.eos against independent oracles (gsw, seawater, hand computation, finite differences)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr

from xoceandiff.eos import (
    EOS80_COEFFICIENTS,
    EOS80_CONSTANTS,
    EOS_NAMES,
    EOS_OF_SALINITY,
    SEOS_CONSTANTS,
    TEOS10_COEFFICIENTS,
    density_seos,
    potential_density,
    potential_density_and_gradient,
    resolve_eos,
    sigma0_eos80,
    sigma0_teos10,
)
from xoceandiff.errors import InvalidDataError

A0, B0, LAMBDA1, MU1 = 0.165, 0.76554, 0.06, 1.497e-4  # dino.md, typed in independently


def _ts_grid() -> tuple[np.ndarray, np.ndarray]:
    t, s = np.meshgrid(np.linspace(-2.0, 32.0, 69), np.linspace(30.0, 40.0, 41), indexing="ij")
    return t, s


def _ocean_range_grid(n_t: int = 371, n_s: int = 421) -> tuple[np.ndarray, np.ndarray]:
    """The ocean's range of the EOS-80 checks: -2..35 degC (0.1 degC steps), 0..42 practical (0.1 steps)."""
    t, s = np.meshgrid(np.linspace(-2.0, 35.0, n_t), np.linspace(0.0, 42.0, n_s), indexing="ij")
    return t, s


def _forbid_compute(*args, **kwargs):
    raise AssertionError("something was computed while the result should have stayed lazy")


# --- TEOS-10 polynomial --------------------------------------------------------------------------


def test_sigma0_matches_gsw():
    gsw = pytest.importorskip("gsw")
    t, s = _ts_grid()
    expected = gsw.sigma0(s, t) + 1000.0
    got = sigma0_teos10(t, s)
    err = float(np.max(np.abs(got - expected)))
    assert got.shape == t.shape
    assert err <= 2e-3, f"max |sigma0_teos10 - (gsw.sigma0 + 1000)| = {err:.3e} kg m-3 > 2e-3"


def test_sigma0_horner_equals_plain_sum_of_json_terms():
    """Horner's scheme gives the literal sum over the 28 EOSij0 terms of the reference table."""
    ref = Path(__file__).resolve().parents[1] / "xoceandiff" / "data" / "eos_teos10_polynomial.json"
    table = json.loads(ref.read_text())
    k = table["constants"]
    t, s = _ts_grid()
    zt = t * k["r1_T0"]
    zs = np.sqrt(np.abs(s + k["rdeltaS"]) * k["r1_S0"])
    expected = np.zeros_like(t)
    n_terms = 0
    for name, value in table["coefficients"].items():
        i, j, kk = (int(c) for c in name[3:])
        if kk == 0:
            expected += value * zs**i * zt**j
            n_terms += 1
    assert n_terms == 28
    np.testing.assert_allclose(sigma0_teos10(t, s), expected, rtol=0, atol=1e-9)
    assert dict(TEOS10_COEFFICIENTS) == table["coefficients"]


def test_sigma0_torch_matches_numpy_and_autograd_matches_finite_difference():
    t, s = _ts_grid()
    tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    rho = sigma0_teos10(tt, st)
    assert isinstance(rho, torch.Tensor) and rho.dtype == torch.float64
    np.testing.assert_allclose(rho.detach().numpy(), sigma0_teos10(t, s), rtol=0, atol=1e-10)

    rho.sum().backward()
    h = 1e-3
    drho_dt = (sigma0_teos10(t + h, s) - sigma0_teos10(t - h, s)) / (2 * h)
    drho_ds = (sigma0_teos10(t, s + h) - sigma0_teos10(t, s - h)) / (2 * h)
    np.testing.assert_allclose(tt.grad.numpy(), drho_dt, rtol=1e-6, atol=0)
    np.testing.assert_allclose(st.grad.numpy(), drho_ds, rtol=1e-6, atol=0)
    # physical sanity of the oracle itself: warmer is lighter, saltier is denser
    assert np.all(drho_dt < 0) and np.all(drho_ds > 0)


def test_sigma0_torch_float32_keeps_dtype():
    t, s = _ts_grid()
    rho = sigma0_teos10(torch.tensor(t, dtype=torch.float32), torch.tensor(s, dtype=torch.float32))
    assert rho.dtype == torch.float32
    np.testing.assert_allclose(rho.numpy(), sigma0_teos10(t, s), rtol=0, atol=1e-3)


@pytest.mark.parametrize("eos_name", EOS_NAMES)
def test_dask_dataarray_stays_lazy(eos_name):
    t, s = _ts_grid()
    dims = ("y", "x")
    coords = {"y": np.arange(t.shape[0]), "x": np.arange(t.shape[1])}
    temp = xr.DataArray(da.from_array(t, chunks=(20, 20)), dims=dims, coords=coords, name="toce")
    sal = xr.DataArray(da.from_array(s, chunks=(20, 20)), dims=dims, coords=coords, name="soce")
    with dask.config.set(scheduler=_forbid_compute):
        rho = potential_density(temp, sal, eos=eos_name)
        assert isinstance(rho, xr.DataArray)
        assert isinstance(rho.data, da.Array)
    assert rho.dims == dims and rho.chunks == temp.chunks
    assert rho.name == "rhop"
    assert rho.attrs["standard_name"] == "sea_water_potential_density"
    assert rho.attrs["units"] == "kg m-3"
    assert rho.attrs["long_name"]
    np.testing.assert_allclose(
        rho.compute().values, potential_density(t, s, eos=eos_name), rtol=0, atol=1e-12
    )


def test_numpy_backed_dataarray_gets_attrs_and_keeps_coords():
    t, s = _ts_grid()
    temp = xr.DataArray(t, dims=("y", "x"), attrs={"standard_name": "sea_water_temperature"})
    temp = temp.assign_coords(y=np.arange(t.shape[0]))
    rho = sigma0_teos10(temp, 35.0)
    assert rho.attrs["standard_name"] == "sea_water_potential_density"
    np.testing.assert_array_equal(rho["y"].values, np.arange(t.shape[0]))
    np.testing.assert_allclose(rho.values, sigma0_teos10(t, 35.0), rtol=0, atol=1e-12)


def test_nan_propagates():
    rho = sigma0_teos10(np.array([np.nan, 10.0]), np.array([35.0, np.nan]))
    assert np.isnan(rho).all()


# --- EOS-80 polynomial ---------------------------------------------------------------------------


def test_sigma0_eos80_within_1e3_of_gsw_at_reference_salinity():
    """Independent oracle: TEOS-10 (gsw) at S_R = S_P * 35.16504/35 and CT of the potential temperature.

    NEMO's EOS-80 polynomial (Roquet et al. 2015) takes potential temperature and practical salinity;
    gsw computes the same state through the Gibbs function. Measured max |difference| over
    -2..35 degC x 0..42: 5.98e-4 kg m-3 (at 0.1 degC x 0.1 salinity steps).
    """
    gsw = pytest.importorskip("gsw")
    t, s = _ocean_range_grid()
    sr = gsw.SR_from_SP(s)
    expected = gsw.sigma0(sr, gsw.CT_from_pt(sr, t)) + 1000.0
    err = float(np.max(np.abs(sigma0_eos80(t, s) - expected)))
    assert err <= 1e-3, f"max |sigma0_eos80 - gsw at S_R| = {err:.3e} kg m-3 > 1e-3"


def test_sigma0_eos80_against_unesco_seawater():
    """Second independent oracle: the UNESCO (1981) EOS-80 of the ``seawater`` package.

    UNESCO's EOS-80 and TEOS-10 differ by up to 1.1e-2 kg m-3 over this range (2.1e-3 at 10 degC, 35),
    and the polynomial follows TEOS-10: measured max |sigma0_eos80 - sw.pden| = 1.13e-2 kg m-3 (at
    -2 degC, 42), 2.3e-3 at 10 degC, 35. What remains once the difference between the two standards is
    taken out is the fit error, within 1e-3.
    """
    sw = _seawater()
    gsw = pytest.importorskip("gsw")
    t, s = _ocean_range_grid()
    unesco = sw.pden(s, t, 0, 0)  # potential density at p = 0 of potential temperature t (p_ref = 0)
    got = sigma0_eos80(t, s)
    err = float(np.max(np.abs(got - unesco)))
    assert err <= 1.2e-2, f"max |sigma0_eos80 - seawater.pden| = {err:.3e} kg m-3 > 1.2e-2"
    assert abs(float(sigma0_eos80(10.0, 35.0)) - float(sw.pden(35.0, 10.0, 0, 0))) <= 2.5e-3
    sr = gsw.SR_from_SP(s)
    standards = gsw.sigma0(sr, gsw.CT_from_pt(sr, t)) + 1000.0 - unesco  # TEOS-10 minus UNESCO
    np.testing.assert_allclose(got - unesco, standards, rtol=0, atol=1e-3)


def _seawater():
    """The ``seawater`` package (UNESCO EOS-80), imported without its deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*seawater library is deprecated", category=UserWarning)
        return pytest.importorskip("seawater")


def test_sigma0_eos80_derivatives_against_unesco_expansion_coefficients():
    """drho/dT and drho/dS against seawater's alpha, beta (w.r.t. potential temperature) times rho."""
    sw = _seawater()
    t, s = _ocean_range_grid(38, 43)
    rho, d_t, d_s = potential_density_and_gradient(t, s, eos="eos80-poly")
    unesco = sw.pden(s, t, 0, 0)
    np.testing.assert_allclose(d_t, -sw.alpha(s, t, 0, pt=True) * unesco, rtol=0, atol=1.5e-2)
    np.testing.assert_allclose(d_s, sw.beta(s, t, 0, pt=True) * unesco, rtol=0.03, atol=0)


def test_sigma0_eos80_by_hand_and_table():
    """26.95 kg m-3 at 10 degC, 35 (the reference's value); Horner equals the literal sum of the 28 terms."""
    assert float(sigma0_eos80(10.0, 35.0)) - 1000.0 == pytest.approx(26.954, abs=1e-3)
    ref = Path(__file__).resolve().parents[1] / "xoceandiff" / "data" / "eos_eos80_polynomial.json"
    table = json.loads(ref.read_text())
    assert dict(EOS80_COEFFICIENTS) == table["coefficients"] and len(EOS80_COEFFICIENTS) == 52
    assert dict(EOS80_CONSTANTS) == {"rdeltaS": 20.0, "r1_S0": 1 / 40, "r1_T0": 1 / 40, "r1_Z0": 1e-4}
    k = table["constants"]
    t, s = _ts_grid()
    zt, zs = t * k["r1_T0"], np.sqrt(np.abs(s + k["rdeltaS"]) * k["r1_S0"])
    expected = np.zeros_like(t)
    for name, value in table["coefficients"].items():
        i, j, kk = (int(c) for c in name[3:])
        if kk == 0:
            expected += value * zs**i * zt**j
    np.testing.assert_allclose(sigma0_eos80(t, s), expected, rtol=0, atol=1e-9)
    assert not np.allclose(sigma0_eos80(t, s), sigma0_teos10(t, s), atol=1e-2)


def test_sigma0_eos80_torch_and_xarray():
    t, s = _ts_grid()
    rho32 = sigma0_eos80(torch.tensor(t, dtype=torch.float32), torch.tensor(s, dtype=torch.float32))
    assert rho32.dtype == torch.float32
    np.testing.assert_allclose(rho32.numpy(), sigma0_eos80(t, s), rtol=0, atol=1e-3)
    rho = sigma0_eos80(xr.DataArray(t, dims=("y", "x")), xr.DataArray(s, dims=("y", "x")))
    assert rho.name == "rhop" and "EOS-80" in rho.attrs["long_name"]


@pytest.mark.parametrize("eos_name", EOS_NAMES)
def test_closed_form_gradient_equals_autograd(eos_name):
    """potential_density_and_gradient: same density as potential_density, derivatives equal to autograd."""
    t, s = _ocean_range_grid(38, 43)
    tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    rho = potential_density(tt, st, eos=eos_name)
    d_t_auto, d_s_auto = torch.autograd.grad(rho.sum(), (tt, st))
    value, d_t, d_s = potential_density_and_gradient(tt.detach(), st.detach(), eos=eos_name)
    torch.testing.assert_close(value, rho.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(d_t, d_t_auto, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d_s, d_s_auto, rtol=1e-10, atol=1e-12)


def test_resolve_eos_and_auto():
    from xoceandiff.canonical import SALINITY_STANDARD_NAMES, eos_for

    assert resolve_eos("auto", "practical") == "eos80-poly"
    assert resolve_eos("auto", "absolute") == "teos10-poly"
    assert [resolve_eos(name, "practical") for name in EOS_NAMES] == list(EOS_NAMES)
    # one mapping: canonical.eos_for of a dataset agrees with EOS_OF_SALINITY
    for kind, standard_name in SALINITY_STANDARD_NAMES.items():
        ds = xr.Dataset({"soce": xr.DataArray([35.0], dims="x", attrs={"standard_name": standard_name})})
        assert eos_for(ds) == EOS_OF_SALINITY[kind]
    with pytest.raises(InvalidDataError, match=r"salinity: expected.*'practical'.*found 'psu'"):
        resolve_eos("auto", "psu")
    with pytest.raises(InvalidDataError, match="unknown equation of state eos='eos-80'"):
        resolve_eos("eos-80")
    with pytest.raises(InvalidDataError, match=r"eos='auto'.*resolve_eos"):
        potential_density(10.0, 35.0, eos="auto")


# --- simplified S-EOS ---------------------------------------------------------------------------


def test_seos_reference_point_is_rho0_exactly():
    assert density_seos(10.0, 35.0) == 1026.0
    assert density_seos(10.0, 35.0, depth=0.0, rho0=1000.0) == 1000.0
    assert float(potential_density(10.0, 35.0, eos="seos")) == 1026.0


def test_seos_constants_are_dino_values():
    assert (SEOS_CONSTANTS["a0"], SEOS_CONSTANTS["b0"]) == (A0, B0)
    assert (SEOS_CONSTANTS["lambda1"], SEOS_CONSTANTS["mu1"]) == (LAMBDA1, MU1)


def test_seos_haline_derivative_is_b0():
    t = torch.tensor([-2.0, 4.0, 10.0, 25.0], dtype=torch.float64)
    s = torch.tensor([30.0, 34.5, 35.0, 39.0], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0.0, 500.0, 2000.0, 4000.0], dtype=torch.float64)
    density_seos(t, s, depth=z).sum().backward()
    np.testing.assert_allclose(s.grad.numpy(), B0, rtol=0, atol=1e-15)
    # and from plain numpy, a unit salinity step changes density by b0
    step = density_seos(t.numpy(), s.detach().numpy() + 1.0, z.numpy()) - density_seos(
        t.numpy(), s.detach().numpy(), z.numpy()
    )
    np.testing.assert_allclose(step, B0, rtol=0, atol=1e-10)


def test_seos_thermobaric_term_by_hand():
    # T=20, S=36, z=1000: Ta=10, Sa=1
    #   rho = 1026 - 0.165 * (1 + 0.03*10 + 0.1497) * 10 + 0.76554 = 1026 - 2.392005 + 0.76554
    assert density_seos(20.0, 36.0, depth=1000.0) == pytest.approx(1024.373535, abs=1e-10)
    #   thermobaric part alone: -a0 * mu1 * z * Ta = -0.165 * 0.1497 * 10
    assert density_seos(20.0, 36.0, depth=1000.0) - density_seos(20.0, 36.0) == pytest.approx(
        -0.247005, abs=1e-10
    )
    # T=0, S=34, z=2000: Ta=-10, Sa=-1
    #   rho = 1026 - 0.165 * (1 - 0.3 + 0.2994) * (-10) - 0.76554 = 1026 + 1.64901 - 0.76554
    assert density_seos(0.0, 34.0, depth=2000.0) == pytest.approx(1026.88347, abs=1e-10)
    # cold water gets denser with depth relative to warm water (thermobaricity)
    assert density_seos(0.0, 34.0, depth=2000.0) - density_seos(0.0, 34.0) == pytest.approx(
        0.49401, abs=1e-10
    )


def test_seos_depth_broadcasts_with_xarray():
    z = xr.DataArray([0.0, 1000.0], dims="depth")
    temp = xr.DataArray([20.0, 0.0], dims="x")
    rho = density_seos(temp, 36.0, depth=z)
    assert set(rho.dims) == {"x", "depth"}
    assert float(rho.isel(depth=1, x=0)) == pytest.approx(1024.373535, abs=1e-10)
    assert float(rho.isel(depth=0, x=1)) == pytest.approx(1026.0 + 0.165 * 0.7 * 10 + B0, abs=1e-10)


# --- dispatch -----------------------------------------------------------------------------------


def test_potential_density_dispatch():
    t, s = _ts_grid()
    assert EOS_NAMES == ("teos10-poly", "eos80-poly", "seos")
    np.testing.assert_array_equal(potential_density(t, s), sigma0_teos10(t, s))
    np.testing.assert_array_equal(potential_density(t, s, eos="eos80-poly"), sigma0_eos80(t, s))
    np.testing.assert_array_equal(potential_density(t, s, eos="seos"), density_seos(t, s))
    # the two equations of state differ (different rho0 offsets and shapes)
    assert not np.allclose(potential_density(t, s), potential_density(t, s, eos="seos"))


def test_unknown_eos_name_lists_available():
    with pytest.raises(InvalidDataError, match=r"'eos-80'.*'teos10-poly'.*'eos80-poly'.*'seos'"):
        potential_density(10.0, 35.0, eos="eos-80")
    with pytest.raises(ValueError, match="unknown equation of state"):
        potential_density(10.0, 35.0, eos="TEOS10")

