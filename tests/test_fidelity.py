"""Tests of xoceandiff.fidelity and the report's Fidelity table.

Every measure is checked against an independent numpy implementation written here: per-cell standard
deviations with explicit band masks, gradients face by face with a loop over the horizontal points,
range bounds level by level, nearest distances from a loop over pairs (no Gram matrix), density errors
from a loop over interfaces.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.canonical import DEPTH_BANDS
from xoceandiff.eos import potential_density
from xoceandiff.errors import GridMismatchError, InvalidDataError
from xoceandiff.fidelity import (
    FIDELITY_COLUMNS,
    FIDELITY_METRICS,
    annotate_worst,
    convective_distance,
    density_errors_by_band,
    fidelity,
    gradient_variance_ratio,
    novelty,
    range_violations,
    spread_ratio,
    ssh_balance,
    worst_violation,
)
from xoceandiff.report import report

RTOL = 1e-9
HAS_CONVECTION = importlib.util.find_spec("xoceandiff.convection") is not None


# --- data -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> xr.Dataset:
    """Training-like data: 6 snapshots on the 4-degree grid, dask-backed (record dim ``t``)."""
    return xoceandiff.datasets.dino(n=6, resolution=4.0, chunks=4)


@pytest.fixture(scope="module")
def other() -> xr.Dataset:
    """Sample-like states: other snapshots plus noise; float64, record dim ``sample``."""
    ds = xoceandiff.datasets.dino(n=5, resolution=4.0, seed=11, chunks=2).load()
    rng = np.random.default_rng(7)
    ocean = ds.tmask.values
    noise = np.where(ocean, 0.3 * rng.standard_normal(ds.toce.shape), 0.0)
    ds = ds.assign(toce=ds.toce.astype(np.float64) + xr.DataArray(noise, dims=ds.toce.dims))
    return ds.rename(t="sample").assign_coords(sample=np.arange(5))


def _with(ds: xr.Dataset, toce: np.ndarray | None = None, soce: np.ndarray | None = None) -> xr.Dataset:
    """A copy of ``ds`` (loaded) with new temperature and/or salinity arrays."""
    out = ds.compute()  # a loaded copy: the fixture stays lazy
    rdim = [d for d in ds.toce.dims if d not in ("z_c", "y_c", "x_c")][0]
    dims = (rdim, "z_c", "y_c", "x_c")
    if toce is not None:
        out["toce"] = (dims, toce)
    if soce is not None:
        out["soce"] = (dims, soce)
    return out


def _np(ds: xr.Dataset) -> dict[str, np.ndarray]:
    rdim = [d for d in ds.toce.dims if d not in ("z_c", "y_c", "x_c")][0]
    return {
        "toce": np.asarray(ds.toce.transpose(rdim, ...).values, dtype=np.float64),
        "soce": np.asarray(ds.soce.transpose(rdim, ...).values, dtype=np.float64),
    }


@pytest.fixture(scope="module")
def grid(data) -> dict:
    e3t = data["e3t"] if "e3t" in data.variables else data["e3t_0"]
    return {
        "ocean": data.tmask.values.astype(bool),
        "volume": data.e1t.values * data.e2t.values * e3t.values * data.tmask.values,
        "depth": data.gdept_1d.values,
        "e1u": data.e1u.values,
        "e2v": data.e2v.values,
        "periodic": int(data.attrs.get("Iperio", 0)) == 1,
    }


def oracle_bands(g) -> dict[str, np.ndarray]:
    out = {}
    for band, (top, bottom) in DEPTH_BANDS.items():
        level = (g["depth"] >= top) & (g["depth"] < bottom)
        out[band] = g["ocean"] & level[:, None, None]
    return out


def oracle_spread(s: dict, d: dict, g) -> dict[str, float]:
    out = {}
    for name in ("toce", "soce"):
        for band, mask in oracle_bands(g).items():
            w = g["volume"][mask]
            spreads = [np.std(x[name][:, mask], axis=0, ddof=1) for x in (s, d)]
            out[f"spread_ratio_{name}_{band}"] = (np.sum(w * spreads[0]) / w.sum()) / (np.sum(w * spreads[1]) / w.sum())
    return out


def oracle_gradient_variance(x: np.ndarray, mask: np.ndarray, g) -> float:
    """Sum of the X and Y gradient variances over the band's ocean-ocean faces, face by face."""
    n, nz, ny, nx = x.shape
    total = 0.0
    for axis in ("X", "Y"):
        values = []
        for j in range(ny):
            for i in range(nx):
                if axis == "X":
                    if i + 1 == nx and not g["periodic"]:
                        continue
                    jj, ii, scale = j, (i + 1) % nx, g["e1u"][j, i]
                else:
                    if j + 1 == ny:
                        continue
                    jj, ii, scale = j + 1, i, g["e2v"][j, i]
                both = mask[:, j, i] & mask[:, jj, ii]
                if both.any():
                    values.append(((x[:, :, jj, ii] - x[:, :, j, i]) / scale)[:, both].ravel())
        total += np.var(np.concatenate(values))
    return total


def oracle_range(s: dict, d: dict, g, n_std: float = 5.0, dtype=np.float64) -> dict[str, float]:
    out = {}
    ocean = g["ocean"]
    for name in ("toce", "soce"):
        outside = 0
        for k in range(ocean.shape[0]):
            cells = ocean[k]
            if not cells.any():
                continue
            ref = d[name][:, k][:, cells]
            sigma = max(np.sqrt(np.mean(np.var(ref, axis=0))), np.finfo(dtype).eps * np.abs(ref).max())
            low, high = ref.min() - n_std * sigma, ref.max() + n_std * sigma
            values = s[name][:, k][:, cells]
            outside += int(np.sum(~((values >= low) & (values <= high))))
        out[f"range_violations_{name}"] = 100.0 * outside / (s[name].shape[0] * ocean.sum())
    return out


def oracle_novelty(s: np.ndarray, d: np.ndarray, g) -> tuple[float, float]:
    w = g["volume"] / g["volume"].sum()
    ocean = g["ocean"]

    def distance(a, b):
        return np.sqrt(np.sum(w[ocean] * (a[ocean] - b[ocean]) ** 2))

    to_data = [min(distance(a, b) for b in d) for a in s]
    between = [min(distance(d[j], d[k]) for k in range(len(d)) if k != j) for j in range(len(d))]
    return float(np.median(to_data)), float(np.median(between))


def oracle_density_errors(x: dict, g, eos: str = "teos10-poly") -> dict[str, float]:
    rho = np.asarray(potential_density(x["toce"], x["soce"], eos=eos))
    ocean, volume = g["ocean"], g["volume"]
    out = {}
    for band, mask in oracle_bands(g).items():
        percents = []
        for r in range(rho.shape[0]):
            unstable = 0.0
            for k in range(1, rho.shape[1]):
                interface = ocean[k] & ocean[k - 1] & (rho[r, k] < rho[r, k - 1]) & mask[k]
                unstable += volume[k][interface].sum()
            percents.append(100.0 * unstable / volume[mask].sum())
        out[band] = float(np.mean(percents))
    return out


# --- spread ----------------------------------------------------------------------------------------------


def test_spread_ratio_matches_oracle(data, other, grid):
    computed = spread_ratio(other, data).compute()
    for key, expected in oracle_spread(_np(other), _np(data), grid).items():
        assert float(computed[key]) == pytest.approx(expected, rel=RTOL), key
        assert computed[key].attrs["units"] == "1"


def test_spread_ratio_of_copies_doubled_anomalies_and_constants(data):
    arrays = _np(data)
    same = spread_ratio(data, data).compute()
    mean = {name: arrays[name].mean(axis=0, keepdims=True) for name in arrays}
    doubled = _with(data, *(mean[n] + 2.0 * (arrays[n] - mean[n]) for n in ("toce", "soce")))
    constant = _with(data, *(np.broadcast_to(mean[n], arrays[n].shape).copy() for n in ("toce", "soce")))
    twice, flat = spread_ratio(doubled, data).compute(), spread_ratio(constant, data).compute()
    for name in ("toce", "soce"):
        for band in DEPTH_BANDS:
            key = f"spread_ratio_{name}_{band}"
            assert float(same[key]) == pytest.approx(1.0, rel=1e-12)
            assert float(twice[key]) == pytest.approx(2.0, rel=1e-9)
            assert float(flat[key]) == pytest.approx(0.0, abs=1e-9)


# --- gradients -------------------------------------------------------------------------------------------


def test_gradient_variance_ratio_matches_face_by_face_oracle(data, other, grid):
    computed = gradient_variance_ratio(other, data).compute()
    s, d = _np(other), _np(data)
    for name in ("toce", "soce"):
        for band, mask in oracle_bands(grid).items():
            expected = oracle_gradient_variance(s[name], mask, grid) / oracle_gradient_variance(d[name], mask, grid)
            key = f"gradient_variance_ratio_{name}_{band}"
            assert float(computed[key]) == pytest.approx(expected, rel=1e-8), key


def test_gradient_variance_of_copies_and_without_face_scale_factors(data, grid):
    same = gradient_variance_ratio(data, data).compute()
    assert all(float(v) == pytest.approx(1.0, rel=1e-12) for v in same.data_vars.values())
    # a grid without e1u/e2v (a sample file's grid kit): the mean of the two cells' e1t/e2t, the same here
    bare = data.drop_vars(["e1u", "e2v"])
    arrays = _np(data)
    doubled = _with(bare, 2.0 * arrays["toce"], arrays["soce"])
    ratio = gradient_variance_ratio(doubled, bare).compute()
    assert float(ratio["gradient_variance_ratio_toce_0-200m"]) == pytest.approx(4.0, rel=1e-9)
    assert float(ratio["gradient_variance_ratio_soce_0-200m"]) == pytest.approx(1.0, rel=1e-12)


# --- range -----------------------------------------------------------------------------------------------


def test_range_violations_match_oracle(data, other, grid):
    computed = range_violations(other, data, n_std=0.5).compute()
    expected = oracle_range(_np(other), _np(data), grid, n_std=0.5)
    for key, value in expected.items():
        assert float(computed[key]) == pytest.approx(value, rel=RTOL), key
    assert expected["range_violations_toce"] > 0  # the noise leaves the range somewhere at n_std = 0.5
    assert float(range_violations(data, data).compute().range_violations_toce) == 0.0


def test_range_violations_name_a_hot_cell(data, grid):
    arrays = _np(data)
    k, j, i = (int(v) for v in np.argwhere(grid["ocean"])[len(np.argwhere(grid["ocean"])) // 2])
    hot = arrays["toce"].copy()
    hot[3, k, j, i] = 50.0
    samples = _with(data, hot, arrays["soce"])
    result = range_violations(samples, data.compute())  # numpy-backed: the worst cell is named at once
    assert result.attrs["worst_field"] == "toce"
    assert result.attrs["worst_level"] == k
    assert result.attrs["worst_value"] == 50.0
    assert result.attrs["worst_depth"] == pytest.approx(grid["depth"][k])
    share = 100.0 / (arrays["toce"].shape[0] * grid["ocean"].sum())
    assert float(result.range_violations_toce) == pytest.approx(share, rel=1e-12)
    assert float(result.range_violations_soce) == 0.0
    lazy = range_violations(samples.chunk({"t": 2}), data)
    assert "worst_field" not in lazy.attrs
    assert annotate_worst(lazy.compute()).attrs["worst_level"] == k
    assert worst_violation(range_violations(data, data)) is None


def test_range_violations_do_not_count_what_float32_data_cannot_resolve(data, grid):
    # a level that never varies in a float32 file (GYRE's deep salinity): its std is below one float32 step
    arrays = _np(data)
    still = np.full_like(arrays["soce"], 35.12, dtype=np.float32)
    reference = _with(data, arrays["toce"].astype(np.float32), still)
    step = float(np.spacing(np.float32(35.12)))
    ocean = grid["ocean"]
    for offset, expected_share in ((3 * step, 0.0), (-3 * step, 0.0), (6 * step, 100.0 / ocean.sum())):
        moved = still.copy()
        moved[0][ocean] += np.float32(offset) * (np.arange(ocean.sum()) == 0)  # one ocean cell moved
        samples = _with(data, arrays["toce"].astype(np.float32), moved)
        result = range_violations(samples, reference).compute()
        assert float(result.range_violations_soce) == pytest.approx(expected_share / moved.shape[0]), offset
        oracle = oracle_range(_np(samples), _np(reference), grid, dtype=np.float32)
        assert float(result.range_violations_soce) == pytest.approx(oracle["range_violations_soce"])


def test_range_violations_count_nan_on_ocean(data, grid):
    arrays = _np(data)
    broken = arrays["soce"].copy()
    k, j, i = np.argwhere(grid["ocean"])[0]
    broken[0, k, j, i] = np.nan
    result = range_violations(_with(data, arrays["toce"], broken), data).compute()
    assert float(result.range_violations_soce) == pytest.approx(100.0 / (6 * grid["ocean"].sum()))


# --- novelty ---------------------------------------------------------------------------------------------


def test_novelty_matches_pairwise_loop(data, other, grid):
    computed = novelty(other, data).compute()
    samples_median, data_median = oracle_novelty(_np(other)["toce"], _np(data)["toce"], grid)
    assert float(computed.nearest_distance_samples) == pytest.approx(samples_median, rel=1e-8)
    assert float(computed.nearest_distance_data) == pytest.approx(data_median, rel=1e-8)
    assert float(computed.novelty_ratio) == pytest.approx(samples_median / data_median, rel=1e-8)
    assert computed.nearest_distance_data.attrs["units"] == FIDELITY_METRICS["nearest_distance_data"].cf_units


def test_novelty_of_copies_is_zero(data):
    computed = novelty(data, data).compute()
    assert float(computed.nearest_distance_data) > 0.01
    assert float(computed.novelty_ratio) == pytest.approx(0.0, abs=1e-5)


# --- density and convection ------------------------------------------------------------------------------


def test_density_errors_by_band_match_interface_loop(data, other, grid):
    arrays = _np(other)
    swapped = arrays["toce"].copy()
    swapped[:, 1:4] = swapped[:, 3:0:-1]  # warm water under cold: inversions in the top band
    samples = _with(other, swapped, arrays["soce"])
    computed = density_errors_by_band(samples, data).compute()
    expected = oracle_density_errors({"toce": swapped, "soce": arrays["soce"]}, grid)
    floor = oracle_density_errors(_np(data), grid)
    for band in DEPTH_BANDS:
        assert float(computed[f"density_errors_samples_{band}"]) == pytest.approx(expected[band], rel=1e-9, abs=1e-12)
        assert float(computed[f"density_errors_data_{band}"]) == pytest.approx(floor[band], rel=1e-9, abs=1e-12)
    assert expected["0-200m"] > 1.0


@pytest.mark.skipif(not HAS_CONVECTION, reason="xoceandiff.convection is not there yet")
def test_convective_distance_is_the_ratio_of_set_means(data, other):
    from xoceandiff.convection import adjustment_distance

    computed = convective_distance(other, data).compute()
    s, d = adjustment_distance(other).compute(), adjustment_distance(data).compute()
    for name in ("toce", "soce"):
        for band in DEPTH_BANDS:
            source = f"convective_distance_{name}_{band}"
            s_mean, d_mean = float(s[source].mean()), float(d[source].mean())
            assert float(computed[f"convective_distance_samples_{name}_{band}"]) == pytest.approx(s_mean, rel=1e-12)
            assert float(computed[f"convective_distance_data_{name}_{band}"]) == pytest.approx(d_mean, rel=1e-12)
            ratio = float(computed[f"convective_distance_ratio_{name}_{band}"])
            assert ratio == pytest.approx(s_mean / d_mean, rel=1e-12) if d_mean > 0 else np.isnan(ratio)


# --- geostrophic consistency of ssh ------------------------------------------------------------------------

GYRE = Path(__file__).parent / "data" / "gyre"


def oracle_unbalanced_ssh(ds: xr.Dataset, rho: np.ndarray, rho0: float = 1026.0) -> tuple[float, float]:
    """Column by column: b = ssh' + sum_k rho'_k e3t_k / rho0, primes from area-weighted means over the ocean."""
    rdim = [d for d in ds.toce.dims if d not in ("z_c", "y_c", "x_c")][0]
    ssh = np.asarray(ds.ssh.transpose(rdim, ...).values, dtype=np.float64)
    ocean = ds.tmask.values.astype(bool)
    area = ds.e1t.values * ds.e2t.values
    e3t = (ds["e3t"] if "e3t" in ds.variables else ds["e3t_0"]).values
    surface = ocean[0]
    balance, anomaly = [], []
    for r in range(rho.shape[0]):
        steric = np.zeros(area.shape)
        for k in range(rho.shape[1]):
            cells = ocean[k]
            if cells.any():
                mean = np.sum(area[cells] * rho[r, k][cells]) / area[cells].sum()
                steric[cells] += (rho[r, k][cells] - mean) * e3t[k][cells] / rho0
        eta = ssh[r] - np.sum(area[surface] * ssh[r][surface]) / area[surface].sum()
        bottom = eta + steric
        bottom = bottom - np.sum(area[surface] * bottom[surface]) / area[surface].sum()
        balance.append(np.sqrt(np.sum(area[surface] * bottom[surface] ** 2) / area[surface].sum()))
        anomaly.append(np.sqrt(np.sum(area[surface] * eta[surface] ** 2) / area[surface].sum()))
    return float(np.mean(balance)), float(np.mean(anomaly))


def test_ssh_balance_matches_a_column_loop_with_gsw(data, other):
    """TEOS-10 states (the DINO-like data): potential density from gsw, integrals column by column."""
    gsw = pytest.importorskip("gsw")
    result = ssh_balance(other, data).compute()
    for who, ds in (("samples", other), ("data", data)):
        x = _np(ds)
        balance, anomaly = oracle_unbalanced_ssh(ds, gsw.sigma0(x["soce"], x["toce"]) + 1000.0)
        np.testing.assert_allclose(float(result[f"ssh_balance_{who}"]), balance, rtol=1e-3)
        np.testing.assert_allclose(float(result[f"ssh_anomaly_{who}"]), anomaly, rtol=1e-9)
    assert float(result.ssh_balance_ratio) == pytest.approx(
        float(result.ssh_balance_samples) / float(result.ssh_balance_data), rel=1e-12)


def test_ssh_balance_tells_nemos_own_sea_surface_from_a_misplaced_one():
    """Four records of the real GYRE run: NEMO's ssh is balanced by its density to a few percent; the same ssh
    mirrored east-west is not, and an ssh made of the steric height alone is balanced exactly."""
    ds = xoceandiff.open_nemo(GYRE / "GYRE_5d_00510101_00510120_grid_T.nc", mesh_mask=GYRE / "mesh_mask.nc").load()
    itself = ssh_balance(ds, ds).compute()
    assert float(itself.ssh_balance_ratio) == 1.0
    assert float(itself.ssh_balance_data) < 0.1 * float(itself.ssh_anomaly_data)  # 0.010 m of 0.23 m
    mirrored = ds.assign(ssh=ds.ssh.copy(data=ds.ssh.values[..., ::-1]).where(ds.tmask.isel(z_c=0) > 0, 0.0))
    assert float(ssh_balance(mirrored, ds).ssh_balance_ratio) > 10
    rho = np.asarray(potential_density(_np(ds)["toce"], _np(ds)["soce"], eos="eos80-poly"))
    ocean = ds.tmask.values.astype(bool)
    area = ds.e1t.values * ds.e2t.values
    level_means = np.array([[np.sum(area[o] * r[o]) / area[o].sum() if o.any() else 0.0
                             for r, o in zip(rec, ocean, strict=True)] for rec in rho])
    steric = (np.where(ocean, rho - level_means[..., None, None], 0.0) * ds.e3t.values).sum(1) / 1026.0
    balanced = ds.assign(ssh=ds.ssh.copy(data=-steric))
    assert float(ssh_balance(balanced, ds).ssh_balance_samples) < 1e-9


# --- fidelity and the report -----------------------------------------------------------------------------


def test_fidelity_is_lazy_and_gathers_every_measure(data, other, compute_counter):
    result = fidelity(other.chunk({"sample": 2}), data)
    assert compute_counter.count == 0
    assert all(var.chunks is not None for var in result.data_vars.values())
    expected = {"novelty_ratio", "range_violations_toce", "spread_ratio_soce_below-1000m",
                "gradient_variance_ratio_toce_200-1000m", "density_errors_samples_0-200m"}
    assert expected <= set(result.data_vars)
    assert ("convective_distance_ratio_toce_0-200m" in result) == HAS_CONVECTION
    assert "ssh_balance_ratio" in result
    assert set(FIDELITY_COLUMNS) - set(result.data_vars) <= {c for c in FIDELITY_COLUMNS if "convective" in c}


def test_errors_name_the_problem(data, other):
    with pytest.raises(GridMismatchError, match="y_c"):
        spread_ratio(xoceandiff.datasets.dino(n=2, resolution=2.0), data)
    with pytest.raises(InvalidDataError, match="at least 2"):
        spread_ratio(other.isel(sample=[0]), data)
    with pytest.raises(InvalidDataError, match="at least 2"):
        novelty(other, data.isel(t=[0]))
    with pytest.raises(InvalidDataError, match="n_std"):
        range_violations(other, data, n_std=-1.0)


def test_report_fidelity_table_after_the_others(data, other, grid, tmp_path):
    without = report(data, {"Samples": other, "Copy": data}, with_fidelity=False)
    rep = report(data, {"Samples": other, "Copy": data}, out=tmp_path / "report")
    assert without.fidelity is None and report(data, {}).fidelity is None
    assert "## Fidelity" not in report(data, {}).to_markdown()
    # the earlier tables are unchanged, the Fidelity table follows them
    md, tex = rep.to_markdown(), rep.to_latex()
    assert md.startswith(without.to_markdown()) and "## Fidelity" in md[len(without.to_markdown()):]
    assert tex.startswith(without.to_latex()) and tex.count(r"\begin{table}") == 3
    assert rep.to_csv() == without.to_csv()
    table = rep.fidelity_table()
    assert list(table.index) == ["Samples", "Copy"]
    heading = FIDELITY_METRICS["spread_ratio_toce_0-200m"].heading
    assert heading == "Spread T 0-200m (× data)" and f" {heading} |" in md
    assert table.loc["Copy", heading] == "1" and table.loc["Copy", "Novelty (× data)"] == "0"
    expected = oracle_spread(_np(other), _np(data), grid)
    assert float(rep.fidelity["spread_ratio_toce_0-200m"].sel(set="Samples")) == pytest.approx(
        expected["spread_ratio_toce_0-200m"], rel=RTOL
    )
    assert table.loc["Samples", heading] == f"{expected['spread_ratio_toce_0-200m']:.4g}"
    rows = list(csv.DictReader(io.StringIO(rep.to_csv(table="fidelity"))))
    assert [r["source"] for r in rows] == ["Samples", "Copy"] and float(rows[1]["novelty_ratio"]) < 1e-5
    with xr.open_dataset(rep.paths["metrics_nc"]) as nc:
        assert list(nc.set.values) == ["Data", "Samples", "Copy"]
        assert np.isnan(nc["novelty_ratio"].values[0]) and nc["novelty_ratio"].values[2] < 1e-5
    with pytest.raises(InvalidDataError, match="fidelity"):
        report(data, {}).to_csv(table="fidelity")


def test_report_names_the_worst_out_of_range_cell(data, grid):
    arrays = _np(data)
    k, j, i = (int(v) for v in np.argwhere(grid["ocean"])[-1])
    hot = arrays["toce"].copy()
    hot[0, k, j, i] = 50.0
    rep = report(data, {"Hot": _with(data, hot, arrays["soce"])})
    row = rep.fidelity.sel(set="Hot")
    assert str(row.range_worst_field.values) == "toce" and int(row.range_worst_level) == k
    assert float(row.range_worst_value) == 50.0
    assert f"Worst out-of-range cell of Hot: toce = 50 on level {k}" in rep.to_markdown()
