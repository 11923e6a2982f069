"""Tests of xoceandiff.diagnostics, xoceandiff.report and xoceandiff.plotting.

Every metric is checked against an independent plain-numpy implementation of the paper's
definitions (Meunier et al. 2025, "Physical metrics") written here with loops and explicit masks;
the potential density of the oracle is the literal sum of the 28 EOSij0 terms of the coefficient
table (not the package's Horner scheme), and gsw checks the hand-made column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff import canonical
from xoceandiff.diagnostics import (
    METRICS,
    SCALAR_METRICS,
    box_masks,
    density_error_percent,
    diagnostics,
    diversity,
    profile_distance,
    record_dim,
    unstable_interfaces,
)
from xoceandiff.errors import InvalidDataError, MissingVariableError, OutputExistsError
from xoceandiff.report import CSV_COLUMNS, SET_COLUMNS, TABLE_COLUMNS, report

RTOL = 1e-6
TABLE = json.loads(
    (Path(__file__).resolve().parents[1] / "xoceandiff" / "data" / "eos_teos10_polynomial.json").read_text()
)
EOS80_TABLE = json.loads(
    (Path(__file__).resolve().parents[1] / "xoceandiff" / "data" / "eos_eos80_polynomial.json").read_text()
)


# --- data -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> xr.Dataset:
    """Training-like data: 6 float32 snapshots on the 4-degree grid, dask-backed, record dim ``t``."""
    return xoceandiff.datasets.dino(n=6, resolution=4.0, seed=3, chunks=4)


@pytest.fixture(scope="module")
def samples() -> xr.Dataset:
    """Sample-like data: other snapshots plus noise that creates inversions; float64, record dim ``sample``."""
    ds = xoceandiff.datasets.dino(n=5, resolution=4.0, seed=11, chunks=2)
    rng = np.random.default_rng(42)
    ocean = ds.tmask.values
    t_noise = np.where(ocean, 0.25 * rng.standard_normal(ds.toce.shape), 0.0)
    s_noise = np.where(ocean, 0.02 * rng.standard_normal(ds.soce.shape), 0.0)
    h_noise = np.where(ocean[0], 0.05 * rng.standard_normal(ds.ssh.shape), 0.0)
    ds = ds.assign(
        toce=ds.toce.astype(np.float64) + xr.DataArray(t_noise, dims=ds.toce.dims),
        soce=ds.soce.astype(np.float64) + xr.DataArray(s_noise, dims=ds.soce.dims),
        ssh=ds.ssh + xr.DataArray(h_noise, dims=ds.ssh.dims),
    )
    ds = ds.rename(t="sample")
    ds = ds.assign_coords(sample=np.arange(ds.sizes["sample"]))
    return ds


def _arrays(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Plain numpy copies of everything the oracle needs (record dim first)."""
    rdim = [d for d in ds.toce.dims if d not in ("z_c", "y_c", "x_c")][0]
    return {
        "T": np.asarray(ds.toce.transpose(rdim, "z_c", "y_c", "x_c").values, dtype=np.float64),
        "S": np.asarray(ds.soce.transpose(rdim, "z_c", "y_c", "x_c").values, dtype=np.float64),
        "ssh": np.asarray(ds.ssh.transpose(rdim, "y_c", "x_c").values, dtype=np.float64),
        "mask": np.asarray(ds.tmask.values, dtype=bool),
        "e1t": np.asarray(ds.e1t.values, dtype=np.float64),
        "e2t": np.asarray(ds.e2t.values, dtype=np.float64),
        "e3t": np.asarray(ds.e3t.values, dtype=np.float64),
        "depth": np.asarray(ds.gdept_1d.values, dtype=np.float64),
        "lat": np.asarray(ds.gphit.values, dtype=np.float64),
    }


@pytest.fixture(scope="module")
def ref_np(reference) -> dict[str, np.ndarray]:
    return _arrays(reference)


@pytest.fixture(scope="module")
def smp_np(samples) -> dict[str, np.ndarray]:
    return _arrays(samples)


# --- the oracle: the paper's definitions, written out -------------------------------------------------


def oracle_rho(t: np.ndarray, s: np.ndarray, table: dict = TABLE) -> np.ndarray:
    """sigma0 + 1000 as the literal double sum of EOSij0 zs^i zt^j (TEOS-10 table by default)."""
    k = table["constants"]
    zt = t * k["r1_T0"]
    zs = np.sqrt(np.abs(s + k["rdeltaS"]) * k["r1_S0"])
    rho = np.zeros_like(t)
    for i in range(7):
        for j in range(7 - i):
            rho = rho + table["coefficients"][f"EOS{i}{j}0"] * zs**i * zt**j
    return rho


def oracle_check_density(a: dict[str, np.ndarray], table: dict = TABLE) -> np.ndarray:
    volume = a["e1t"] * a["e2t"] * a["e3t"]  # (z, y, x)
    total = volume[a["mask"]].sum()
    out = []
    for r in range(a["T"].shape[0]):
        rho = oracle_rho(a["T"][r], a["S"][r], table)
        unstable_volume = 0.0
        for k in range(rho.shape[0] - 1):
            both = a["mask"][k] & a["mask"][k + 1]
            with np.errstate(invalid="ignore"):
                lighter_below = rho[k + 1] < rho[k]
            unstable_volume += volume[k + 1][both & lighter_below].sum()
        out.append(100.0 * unstable_volume / total)
    return np.array(out)


def oracle_box_means(a: dict[str, np.ndarray], depth_box: float = 1500.0) -> dict[str, np.ndarray]:
    nz, ny, nx = a["mask"].shape
    bottom = np.zeros((nz, ny, nx), dtype=bool)
    deep = np.zeros((nz, ny, nx), dtype=bool)
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                if not a["mask"][k, j, i]:
                    continue
                z, lat = a["depth"][k], a["lat"][j, i]
                bottom[k, j, i] = not (z < depth_box and abs(lat) < 30.0)
                deep[k, j, i] = 500.0 < z < depth_box and abs(lat) < 30.0
    volume = a["e1t"] * a["e2t"] * a["e3t"]
    out = {}
    for box, cells in (("BWbox", bottom), ("DWbox", deep)):
        w = volume[cells]
        for name, key in (("toce", "T"), ("soce", "S")):
            out[f"{box}_{name}"] = np.array([(f[cells] * w).sum() / w.sum() for f in a[key]])
    return out


def oracle_profiles(a: dict[str, np.ndarray], key: str) -> np.ndarray:
    n, nz = a[key].shape[:2]
    area = a["e1t"] * a["e2t"]
    out = np.full((n, nz), np.nan)
    for r in range(n):
        for k in range(nz):
            wet = a["mask"][k]
            if wet.any():
                out[r, k] = (a[key][r, k][wet] * area[wet]).sum() / area[wet].sum()
    return out


def oracle_t500(a: dict[str, np.ndarray]) -> np.ndarray:
    k = int(np.argmin(np.abs(a["depth"] - 500.0)))
    cells = a["mask"][k] & (np.abs(a["lat"]) <= 30.0)
    w = (a["e1t"] * a["e2t"] * a["e3t"][k])[cells]
    return np.array([(t[k][cells] * w).sum() / w.sum() for t in a["T"]])


def oracle_surface(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    wet = a["mask"][0]
    w = (a["e1t"] * a["e2t"])[wet]
    out = {
        "surface_toce": np.array([(t[0][wet] * w).sum() / w.sum() for t in a["T"]]),
        "surface_soce": np.array([(s[0][wet] * w).sum() / w.sum() for s in a["S"]]),
    }
    means, stds = [], []
    for h in a["ssh"]:
        m = (h[wet] * w).sum() / w.sum()
        means.append(m)
        stds.append(np.sqrt(((h[wet] - m) ** 2 * w).sum() / w.sum()))
    out["ssh_mean"], out["ssh_std"] = np.array(means), np.array(stds)
    return out


def oracle_diversity(a: dict[str, np.ndarray]) -> dict[str, float]:
    volume = a["e1t"] * a["e2t"] * a["e3t"]
    area = a["e1t"] * a["e2t"]
    out = {}
    for name, key, w, cells in (
        ("toce", "T", volume, a["mask"]),
        ("soce", "S", volume, a["mask"]),
        ("ssh", "ssh", area, a["mask"][0]),
    ):
        x = a[key]
        distances = []
        for i in range(x.shape[0]):
            for j in range(i + 1, x.shape[0]):
                d2 = ((x[i][cells] - x[j][cells]) ** 2 * w[cells]).sum() / w[cells].sum()
                distances.append(np.sqrt(d2))
        out[name] = float(np.mean(distances))
    return out


def oracle_profile_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    wet = a["mask"].any(axis=(1, 2)) & b["mask"].any(axis=(1, 2))
    for name, key in (("toce", "T"), ("soce", "S")):
        pa = oracle_profiles(a, key).mean(axis=0)[wet]
        pb = oracle_profiles(b, key).mean(axis=0)[wet]
        out[name] = float(np.sqrt(np.mean((pa - pb) ** 2)))
    return out


# --- per-record metrics against the oracle --------------------------------------------------------------


@pytest.fixture(scope="module")
def computed(reference, samples):
    return {"reference": diagnostics(reference).compute(), "samples": diagnostics(samples).compute()}


@pytest.mark.parametrize("which", ["reference", "samples"])
def test_check_density_matches_oracle(which, computed, ref_np, smp_np):
    a = ref_np if which == "reference" else smp_np
    expected = oracle_check_density(a)
    got = computed[which].check_density.values
    if which == "samples":
        assert (expected > 1.0).all(), "the perturbed samples should have inversions"
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)
    assert computed[which].check_density.attrs["units"] == "%"
    assert "long_name" in computed[which].check_density.attrs


@pytest.mark.parametrize("which", ["reference", "samples"])
def test_box_means_match_oracle(which, computed, ref_np, smp_np):
    a = ref_np if which == "reference" else smp_np
    for name, expected in oracle_box_means(a).items():
        np.testing.assert_allclose(computed[which][name].values, expected, rtol=RTOL, err_msg=name)


def test_box_means_depth_box_option(samples, smp_np):
    got = diagnostics(samples, depth_box=1000.0).compute()
    for name, expected in oracle_box_means(smp_np, depth_box=1000.0).items():
        np.testing.assert_allclose(got[name].values, expected, rtol=RTOL, err_msg=name)
    boxes = box_masks(samples, depth_box=1000.0)
    assert not bool((boxes.BWbox & boxes.DWbox).any())


@pytest.mark.parametrize("which", ["reference", "samples"])
def test_profiles_surface_ssh_t500_match_oracle(which, computed, ref_np, smp_np):
    a = ref_np if which == "reference" else smp_np
    got = computed[which]
    np.testing.assert_allclose(got.toce_profile.values, oracle_profiles(a, "T"), rtol=RTOL)
    np.testing.assert_allclose(got.soce_profile.values, oracle_profiles(a, "S"), rtol=RTOL)
    assert np.isnan(got.toce_profile.values[:, -1]).all()  # level 35 is land
    for name, expected in oracle_surface(a).items():
        np.testing.assert_allclose(got[name].values, expected, rtol=RTOL, err_msg=name)
    np.testing.assert_allclose(got.temperature_500m_30NS.values, oracle_t500(a), rtol=RTOL)


def test_diagnostics_structure(computed, reference, samples):
    ref, smp = computed["reference"], computed["samples"]
    assert record_dim(reference) == "t" and record_dim(samples) == "sample"
    assert set(SCALAR_METRICS) <= set(ref.data_vars)
    for name in SCALAR_METRICS:
        assert ref[name].dims == ("t",) and smp[name].dims == ("sample",)
        assert ref[name].attrs.get("long_name") and "units" in ref[name].attrs
    assert smp.toce_profile.dims == ("sample", "z_c")
    np.testing.assert_array_equal(ref.t.values, reference.t.values)
    assert "gdept_1d" in ref.coords and "history" in ref.attrs


def test_units_come_from_the_metrics_table(computed, reference, samples):
    assert record_dim is canonical.record_dim  # one rule for the record dimension, re-exported
    lazy = [computed["reference"], diversity(samples), profile_distance(samples, reference)]
    for metrics in lazy:
        for name, variable in metrics.data_vars.items():
            assert variable.attrs["units"] == METRICS[name].cf_units, name
    assert set(SCALAR_METRICS) | set(SET_COLUMNS) | {"toce_profile", "soce_profile"} == set(METRICS)


def test_practical_salinity_gets_eos80_by_default(samples, smp_np, computed):
    """soce as practical salinity (an EOS-80 run): the density metrics use NEMO's EOS-80 polynomial."""
    practical = samples.copy()
    practical["soce"] = samples.soce.assign_attrs(standard_name="sea_water_practical_salinity")
    assert canonical.eos_for(practical) == "eos80-poly"
    default = diagnostics(practical).compute()
    named = diagnostics(practical, eos="eos80-poly").compute()
    xr.testing.assert_identical(default.drop_attrs(), named.drop_attrs())
    assert default.attrs["eos"] == "eos80-poly" and default.check_density.attrs["eos"] == "eos80-poly"
    assert "eos='eos80-poly'" in default.attrs["history"].splitlines()[0]
    # the independent oracle: the literal sum of the EOS-80 table's 28 surface terms
    expected = oracle_check_density(smp_np, EOS80_TABLE)
    np.testing.assert_allclose(default.check_density.values, expected, rtol=RTOL, atol=0)
    # ... which is not what TEOS-10 gives on these near-neutral noisy columns
    assert computed["samples"].attrs["eos"] == "teos10-poly"
    assert not np.allclose(default.check_density.values, computed["samples"].check_density.values, rtol=1e-6)
    assert unstable_interfaces(practical).attrs["eos"] == "eos80-poly"
    # an explicit name still wins
    np.testing.assert_array_equal(
        diagnostics(practical, eos="teos10-poly").check_density.values, computed["samples"].check_density.values
    )
    # the report judges every set with the reference's equation of state, and records it
    table = report(practical, {"Absolute": samples})
    assert table.eos == "eos80-poly" and table.to_dataset().attrs["eos"] == "eos80-poly"
    np.testing.assert_allclose(table.source("Data").check_density.values, expected, rtol=RTOL, atol=0)


def test_numpy_backed_input_gives_the_same(reference, computed):
    eager = diagnostics(reference.compute()).compute()
    xr.testing.assert_allclose(eager[list(SCALAR_METRICS)], computed["reference"][list(SCALAR_METRICS)], rtol=1e-12)


# --- hand-made column -----------------------------------------------------------------------------------


def _column_dataset() -> xr.Dataset:
    """Two columns of 3 levels, 10 / 20 / 70 m thick, cells 1 km x 1 km.

    Column A (all ocean): 20 °C over 25 °C over 5 °C at S = 35: the interface 0-1 is unstable
    (warmer, lighter water below), 1-2 is stable; it counts with the volume of level 1 (20 m).
    Column B (level 2 land): 10 °C over 12 °C: unstable, volume of level 1 (20 m); the land cell
    holds a value that would make 1-2 unstable if land were counted.
    Ocean volume 100 + 30 = 130 (x 1e6 m3); unstable 20 + 20 = 40: 100 * 40 / 130 %.
    """
    t = np.array([[20.0, 10.0], [25.0, 12.0], [5.0, 30.0]])[:, None, :]  # (z, y, x)
    s = np.full_like(t, 35.0)
    mask = np.ones_like(t, dtype=bool)
    mask[2, 0, 1] = False
    t = np.where(mask, t, np.nan)
    s = np.where(mask, s, np.nan)
    e3t = np.broadcast_to(np.array([10.0, 20.0, 70.0])[:, None, None], t.shape).copy()
    dims = ("z_c", "y_c", "x_c")
    return xr.Dataset(
        {"toce": (("sample", *dims), t[None]), "soce": (("sample", *dims), s[None])},
        coords={
            "tmask": (dims, mask),
            "e1t": (("y_c", "x_c"), np.full((1, 2), 1000.0)),
            "e2t": (("y_c", "x_c"), np.full((1, 2), 1000.0)),
            "e3t": (dims, e3t),
            "gdept_1d": ("z_c", [5.0, 20.0, 65.0]),
            "gphit": (("y_c", "x_c"), np.zeros((1, 2))),
        },
    )


@pytest.mark.parametrize("eos", ["auto", "teos10-poly", "eos80-poly", "seos"])
def test_check_density_hand_made_column(eos):
    ds = _column_dataset()
    got = float(density_error_percent(ds, eos=eos).squeeze())
    assert got == pytest.approx(100.0 * 40.0 / 130.0, rel=1e-12)
    counts = unstable_interfaces(ds, eos=eos).sum("z_c").squeeze().values
    np.testing.assert_array_equal(counts, [1, 1])


def test_hand_made_column_inversions_are_real_by_gsw():
    gsw = pytest.importorskip("gsw")
    ds = _column_dataset()
    rho = gsw.sigma0(ds.soce.values[0], ds.toce.values[0])
    assert rho[1, 0, 0] < rho[0, 0, 0] and rho[2, 0, 0] > rho[1, 0, 0]  # column A
    assert rho[1, 0, 1] < rho[0, 0, 1]  # column B


def test_check_density_zero_for_stable_and_most_for_reversed_columns():
    ds = _column_dataset()
    stable = np.array([[20.0, 20.0], [10.0, 10.0], [2.0, np.nan]])[None, :, None, :]
    assert float(density_error_percent(ds.assign(toce=(ds.toce.dims, stable))).squeeze()) == 0.0
    # column A: 2 over 10 over 20 (both interfaces unstable: 20 + 70 m); column B: 10 over 20 (20 m)
    inverted = np.array([[2.0, 10.0], [10.0, 20.0], [20.0, np.nan]])[None, :, None, :]
    got = float(density_error_percent(ds.assign(toce=(ds.toce.dims, inverted))).squeeze())
    assert got == pytest.approx(100.0 * 110.0 / 130.0, rel=1e-12)


# --- set metrics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["reference", "samples"])
def test_diversity_matches_pairwise_loop(which, reference, samples, ref_np, smp_np):
    ds, a = (reference, ref_np) if which == "reference" else (samples, smp_np)
    got = diversity(ds).compute()
    for name, expected in oracle_diversity(a).items():
        assert float(got[f"diversity_{name}"]) == pytest.approx(expected, rel=RTOL), name
    assert got.diversity_toce.attrs["units"] == "degC"


def test_diversity_of_identical_members_is_zero(reference):
    same = xr.concat([reference.isel(t=0)] * 3, dim="t")
    assert float(diversity(same).compute().diversity_toce) == pytest.approx(0.0, abs=1e-12)


def test_profile_distance_matches_oracle(reference, samples, ref_np, smp_np):
    got = profile_distance(samples, reference).compute()
    for name, expected in oracle_profile_distance(smp_np, ref_np).items():
        assert float(got[f"profile_distance_{name}"]) == pytest.approx(expected, rel=RTOL), name
    assert float(profile_distance(reference, reference).compute().profile_distance_toce) == 0.0


# --- laziness -------------------------------------------------------------------------------------------


def test_nothing_computes_until_asked(reference, samples, compute_counter):
    lazy = [
        diagnostics(reference),
        diagnostics(samples, eos="seos", depth_box=1200.0),
        diversity(samples),
        profile_distance(samples, reference),
        unstable_interfaces(samples),
    ]
    assert compute_counter.count == 0, "building the metrics computed something"
    for obj in lazy:
        variables = obj.data_vars.values() if isinstance(obj, xr.Dataset) else [obj]
        assert all(v.chunks is not None for v in variables)
    lazy[0].compute()
    assert compute_counter.count >= 1


# --- errors ---------------------------------------------------------------------------------------------


def test_errors_name_the_problem(reference):
    with pytest.raises(MissingVariableError, match="tmask"):
        diagnostics(reference.drop_vars("tmask"))
    with pytest.raises(InvalidDataError, match="record dimension"):
        diagnostics(reference.isel(t=0))
    with pytest.raises(InvalidDataError, match="eos"):
        diagnostics(reference, eos="jmd95")
    with pytest.raises(InvalidDataError, match="depth_box"):
        diagnostics(reference, depth_box=400.0)
    with pytest.raises(InvalidDataError, match="at least 2"):
        diversity(reference.isel(t=[0]))


# --- report ---------------------------------------------------------------------------------------------


def test_report_tables_and_files(reference, samples, computed, tmp_path):
    rep = report(reference, {"No constraint": samples}, out=tmp_path / "report")
    md = rep.to_markdown()
    cells = re.findall(r"-?\d+\.\d+ ± \d+\.\d+", md)
    assert len(cells) == 2 * 5, md
    assert "Bottom-Water S" in md and "Deep-Water T" in md and "Density errors (%)" in md
    ref_bw_s = computed["reference"].BWbox_soce.values
    assert f"{ref_bw_s.mean():.3f} ± {ref_bw_s.std():.3f}" in md
    smp_cd = computed["samples"].check_density.values
    assert f"{smp_cd.mean():.4f} ± {smp_cd.std():.4f}" in md
    assert "Diversity T" in md and "Profile distance S" in md
    for metric in (*TABLE_COLUMNS, *SET_COLUMNS):
        assert f" {METRICS[metric].heading} |" in md, metric
        if metric in rep.set_metrics:
            assert rep.set_metrics[metric].attrs["units"] == METRICS[metric].cf_units
    assert "| No constraint | 5 |" in md and "| Data | 6 |" in md
    tex = rep.to_latex()
    assert r"\toprule" in tex and r"\multicolumn{2}{c}{Bottom-Water}" in tex and r"errors (\%)" in tex
    no_constraint_row = next(line for line in tex.splitlines() if line.startswith("No constraint & 5 &"))
    assert no_constraint_row.count(r"\pm") == 5
    assert f"{smp_cd.mean():.4f} \\pm {smp_cd.std():.4f}" in no_constraint_row

    assert {p.name for p in rep.paths.values()} == {"table.md", "table.tex", "metrics.csv", "metrics.nc"}
    assert rep.paths["table_md"].read_text(encoding="utf-8") == md
    rows = list(csv.DictReader(io.StringIO(rep.paths["metrics_csv"].read_text(encoding="utf-8"))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    expected_columns = {"source", "record", "check_density", "BWbox_toce", "BWbox_soce", "DWbox_toce",
                        "DWbox_soce", "temperature_500m_30NS", "surface_toce", "surface_soce",
                        "ssh_mean", "ssh_std"}
    assert expected_columns <= set(rows[0])
    assert [r["source"] for r in rows] == ["Data"] * 6 + ["No constraint"] * 5
    assert rows[0]["record"] == "2000-01-06" and rows[6]["record"] == "0"
    assert float(rows[7]["check_density"]) == pytest.approx(smp_cd[1], rel=1e-12)
    with xr.open_dataset(rep.paths["metrics_nc"]) as nc:
        np.testing.assert_allclose(nc.check_density.values[6:], smp_cd, rtol=1e-12)
        assert list(nc.set.values) == ["Data", "No constraint"]
    with pytest.raises(OutputExistsError):
        rep.write(tmp_path / "report")
    rep.write(tmp_path / "report", overwrite=True)


def test_report_shows_a_broken_record_as_nan(samples):
    """A sample with NaN on an ocean cell makes its set's box means nan: the table does not average it away."""
    broken = samples.isel(sample=[0, 1]).load()
    ocean = np.argwhere(broken.tmask.values)[-1]  # a deep ocean cell, inside the Bottom-Water box
    broken.toce.values[(1, *ocean)] = np.nan
    rep = report(samples.isel(sample=[2, 3]), {"Broken": broken})
    assert np.isnan(float(rep.summary().BWbox_toce_mean.sel(set="Broken")))
    assert rep.paper_table().loc["Broken", METRICS["BWbox_toce"].heading] == "nan"


def test_report_set_metrics(reference, samples, smp_np, ref_np):
    rep = report(reference, {"S": samples})
    s = rep.set_metrics.sel(set="S")
    assert float(s.diversity_toce) == pytest.approx(oracle_diversity(smp_np)["toce"], rel=RTOL)
    assert float(s.profile_distance_soce) == pytest.approx(
        oracle_profile_distance(smp_np, ref_np)["soce"], rel=RTOL
    )
    assert np.isnan(float(rep.set_metrics.sel(set="Data").profile_distance_toce))
    with pytest.raises(InvalidDataError, match="reference"):
        report(reference, {"Data": samples})


# --- plots ----------------------------------------------------------------------------------------------


def test_plot_all_writes_pngs(reference, samples, tmp_path):
    pytest.importorskip("matplotlib")
    from xoceandiff.plotting import FIGURE_NAMES, plot_all

    small = {"Sampled": samples.isel(sample=slice(0, 3))}
    paths = plot_all(reference.isel(t=slice(0, 3)), small, tmp_path / "figs", n_maps=2)
    assert [p.name for p in paths] == [f"{name}.png" for name in FIGURE_NAMES]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, p
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary files left behind


def test_practical_salinity_is_reported_without_mass_units():
    """An EOS-80 run's salinity is not g/kg: the table says PSS-78 and the files say CF's "1"."""
    ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    ds["soce"] = ds.soce.assign_attrs(standard_name="sea_water_practical_salinity", units="1")
    rep = report(ds, {"Same": ds})
    assert "Bottom-Water S (PSS-78)" in rep.to_markdown() and "g/kg" not in rep.to_markdown()
    assert rep.set_metrics.diversity_soce.attrs["units"] == "1"
    assert rep.metrics.BWbox_soce.attrs["units"] == "1" and rep.eos == "eos80-poly"
