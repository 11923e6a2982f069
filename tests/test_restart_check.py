"""The restart checker: it accepts what to_restart writes and finds every planted violation."""

from __future__ import annotations

import re
import shutil
import warnings

import netCDF4
import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.errors import InvalidDataError
from xoceandiff.restart import to_restart
from xoceandiff.restart_check import check_restart


@pytest.fixture(scope="module")
def states():
    ds = xoceandiff.datasets.dino(n=3, resolution=4.0, seed=2, chunks=2)
    return ds.rename(t="sample").drop_vars("sample").assign_coords(sample=np.arange(3))


@pytest.fixture(scope="module")
def loaded(states):
    return states.compute()


@pytest.fixture(scope="module")
def restarts(states, tmp_path_factory):
    return to_restart(states, tmp_path_factory.mktemp("restarts"), nemo_version="4.2", kt=480, ndastp=20010101,
                      rdt=2700.0)


@pytest.fixture(scope="module")
def nemo_files(states, tmp_path_factory):
    """The configuration as NEMO describes it: mesh_mask.nc (with nav_lon, nav_lat, nav_lev)."""
    folder = tmp_path_factory.mktemp("nemo")
    return states.rename(sample="t").drop_vars("t").isel(t=[0]).oceandiff.to_nemo_files(folder)


def test_checker_accepts_what_to_restart_writes(restarts, states, nemo_files):
    for path in restarts:
        assert check_restart(path, states) == []
        assert check_restart(path, nemo_files["mesh_mask"]) == []


# --- the checker finds planted violations ---------------------------------------------------------------


def _copy(path, folder, name="restart_copy.nc"):
    target = folder / name
    shutil.copyfile(path, target)
    return target


def test_checker_finds_a_plain_xarray_write(loaded, states, tmp_path):
    """The file NEMO refused: fixed time_counter, NaN on land, _FillValue everywhere."""
    state = loaded.isel(sample=0)
    plain = xr.Dataset(
        {
            "tn": (("time_counter", "nav_lev", "y", "x"), state.toce.values[None].astype(np.float64)),
            "sn": (("time_counter", "nav_lev", "y", "x"), state.soce.values[None].astype(np.float64)),
            "sshn": (("time_counter", "y", "x"), state.ssh.values[None].astype(np.float64)),
        }
    )
    path = tmp_path / "restart.nc"
    plain.to_netcdf(path)
    problems = check_restart(path, states, nemo_version="4.2")
    text = "\n".join(problems)
    assert "time_counter' has a fixed size" in text
    assert re.search(r"tn: \d+ values are NaN", text) and re.search(r"sshn: \d+ values are NaN", text)
    assert "tn: has a _FillValue" in text
    assert re.search(r"variables missing for NEMO 4.2: \['tb', 'sb', 'un'", text)
    assert "tn: its first dimension 'time_counter' must be the UNLIMITED" in text


def test_checker_finds_each_planted_violation(restarts, states, tmp_path):
    # NaN and land not 0
    path = _copy(restarts[0], tmp_path, "nan.nc")
    with netCDF4.Dataset(path, "r+") as nc:
        nc["sn"][0, 0, 10, 5] = np.nan
        nc["tn"][0, 0, 0, 0] = 12.0  # (0, 0) is land
    problems = check_restart(path, states)
    assert len(problems) == 2
    assert "sn: 1 values are NaN or infinite" in problems[0] or "sn: 1 values are NaN or infinite" in problems[1]
    assert any("tn: 1 land cells (tmask = 0) are not 0" in p for p in problems)

    # wrong sizes: another configuration
    other = xoceandiff.datasets.dino(n=1, resolution=5.0)
    problems = check_restart(restarts[0], other)
    assert any(re.search(r"tn: expected dimensions .*\(UNLIMITED, 36, 41, 14\).*found .*\(1, 36, 51, 17\)", p) for p in problems)
    assert any(p.startswith("sshn: expected dimensions") for p in problems)

    # scalars that are not 0-d, float32 data, a missing variable, a _FillValue, a rank-piece name
    state = xr.open_dataset(restarts[0]).load()
    bad = state.drop_vars("vb").assign(
        kt=("time_counter", [0.0]), tn=state.tn.astype(np.float32)
    )
    path = tmp_path / "restart_0001.nc"
    encoding = {name: {"_FillValue": None} for name in bad.variables}
    encoding["sn"] = {"_FillValue": -1.0}
    bad.to_netcdf(path, encoding=encoding, unlimited_dims=["time_counter"])
    problems = "\n".join(check_restart(path, states))
    assert "kt: expected a 0-d scalar" in problems
    assert "tn: expected float64 (double), found float32" in problems
    assert "variables missing for NEMO 4.2: ['vb']" in problems
    assert "sn: has a _FillValue attribute" in problems
    assert "ends in '_<digits>.nc'" in problems
    with pytest.raises(InvalidDataError, match="nemo_version"):
        check_restart(restarts[0], states, nemo_version="3.6")


def test_checker_finds_bad_pieces_and_records(states, tmp_path):
    (piece, *_) = to_restart(states.isel(sample=[0]), tmp_path / "pieces", ranks=(2, 1))
    # a piece renamed to another rank, and one that no longer says where it lies
    wrong_rank = _copy(piece, tmp_path, "restart_s000_xoceandiff_0001.nc")
    assert check_restart(wrong_rank, states) == [
        "file name 'restart_s000_xoceandiff_0001.nc': a piece of rank 0 (DOMAIN_number) must be named "
        "'<cn_ocerst_in>_0000.nc'."
    ]
    lost = _copy(piece, tmp_path, "restart_lost_0000.nc")
    with netCDF4.Dataset(lost, "r+") as nc:
        nc.delncattr("DOMAIN_position_first")
    problems = check_restart(lost, states)
    assert problems[0].startswith("a rank's piece (DOMAIN_number) without DOMAIN_position_first")
    # without its window, the piece is compared with the global sizes
    assert any(p.startswith("tn: expected dimensions") for p in problems)

    # no .nc suffix, no record dimension at all
    plain = xr.Dataset({"tn": (("nav_lev", "y", "x"), np.zeros((36, 51, 17)))})
    path = tmp_path / "restart_norecord"
    plain.to_netcdf(path, encoding={"tn": {"_FillValue": None}})
    problems = check_restart(path, states)
    assert problems[0] == (
        "file name 'restart_norecord': NEMO appends '.nc' to cn_ocerst_in; name the file '<name>.nc'."
    )
    assert "dimension 'time_counter' is missing: NEMO needs an UNLIMITED record dimension." in problems
    assert any(p.startswith("tn: expected dimensions (time_counter, nav_lev, y, x)") for p in problems)


def test_checker_reads_a_domain_cfg_without_tmask(restarts, nemo_files, tmp_path):
    """The grid comes from xoceandiff.nemo.open_grid: top_level/bottom_level give the same tmask."""
    mesh = xr.open_dataset(nemo_files["mesh_mask"]).load()
    bottom = mesh.tmask.isel(time_counter=0).values.astype(bool).sum(axis=0).astype("int32")
    domcfg = mesh.drop_vars(["tmask", "umask", "vmask"])
    domcfg["top_level"] = (("time_counter", "y", "x"), (bottom > 0).astype("int32")[None])
    domcfg["bottom_level"] = (("time_counter", "y", "x"), bottom[None])
    domcfg.to_netcdf(tmp_path / "domain_cfg.nc")
    assert check_restart(restarts[0], tmp_path / "domain_cfg.nc") == []


# --- plausibility of the states given to the writers ----------------------------------------------------------


def _with_training_ranges(samples):
    """Samples as the lead's generator writes them: training_min/max per level (toce, soce), scalars (ssh)."""
    out = samples.copy()
    ocean = samples.tmask.values
    for name in ("toce", "soce"):
        values = np.where(ocean[None], samples[name].values, np.nan)
        out[name] = samples[name].copy()
        with warnings.catch_warnings():  # levels without ocean: NaN, as the generator writes them
            warnings.simplefilter("ignore", RuntimeWarning)
            out[name].attrs.update(training_min=np.nanmin(values, axis=(0, 2, 3)),
                                   training_max=np.nanmax(values, axis=(0, 2, 3)))
    out["ssh"] = samples["ssh"].copy()
    out["ssh"].attrs.update(training_min=float(samples.ssh.min()), training_max=float(samples.ssh.max()))
    return out


def test_plausible_states_pass(loaded):
    from xoceandiff.restart_check import check_plausible

    check_plausible(loaded)
    check_plausible(_with_training_ranges(loaded))


def test_kelvin_and_units_are_refused(loaded, tmp_path):
    from xoceandiff.restart import to_initial_state
    from xoceandiff.restart_check import check_plausible

    kelvin = loaded.assign(toce=loaded.toce + 273.15)
    with pytest.raises(InvalidDataError, match=r"toce of the samples at level 0 \(5\.0\d* m\): value 27\d\.\d+ outside "
                                               r"the physical range -3 to 40 degC"):
        check_plausible(kelvin)
    with pytest.raises(InvalidDataError, match=r"toce of sample 0 at level 0 .*value 27\d"):
        to_restart(kelvin, tmp_path / "out")
    with pytest.raises(InvalidDataError, match=r"toce of state 1 at level 0"):
        to_initial_state(kelvin, tmp_path / "initial", index=1)
    assert not (tmp_path / "out").exists() and not (tmp_path / "initial").exists()
    # units K are refused even when the values look like degC; so is salinity as a mass fraction
    labelled = loaded.copy()
    labelled["toce"] = loaded.toce.assign_attrs(units="K")
    with pytest.raises(InvalidDataError, match=r"toce: units 'K' where a restart needs degC"):
        to_restart(labelled, tmp_path / "out")
    labelled["toce"] = loaded.toce.assign_attrs(units="degree_Celsius")
    labelled["soce"] = loaded.soce.assign_attrs(units="kg kg-1")
    with pytest.raises(InvalidDataError, match=r"soce: units 'kg kg-1'"):
        check_plausible(labelled)
    labelled["soce"] = loaded.soce.assign_attrs(units="PSU")  # NEMO's own output
    check_plausible(labelled)
    with pytest.raises(InvalidDataError, match=r"ssh of the samples at the surface: value 25 outside the physical"):
        check_plausible(loaded.assign(ssh=loaded.ssh.where(loaded.ssh.isnull(), 25.0)))
    assert not (tmp_path / "out").exists()


def test_swapped_temperature_and_salinity_are_refused(loaded, tmp_path):
    """Swapped fields lie within the physical ranges (toce 35, soce 2 to 25): the training ranges catch them."""
    from xoceandiff.restart_check import check_plausible

    trained = _with_training_ranges(loaded)
    swapped = trained.copy()
    swapped["toce"], swapped["soce"] = trained.soce.copy(), trained.toce.copy()
    swapped["toce"].attrs, swapped["soce"].attrs = trained.toce.attrs, trained.soce.attrs
    with pytest.raises(InvalidDataError, match=r"toce of sample 0 at level \d+ \([\d.]+ m\): value 3\d\.\d+ outside the "
                                               r"training range .* widened by its span"):
        to_restart(swapped, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # one deep value off by far more than the training spread: named with its level and depth
    deep = trained.copy()
    deep["toce"] = trained.toce.copy(data=trained.toce.values.copy())
    cell = tuple(np.argwhere(loaded.tmask.values[30])[0])
    deep["toce"].values[(1, 30, *cell)] = 20.0
    depth = float(loaded.gdept_1d[30])
    with pytest.raises(InvalidDataError, match=rf"toce of the samples at level 30 \({depth:g} m\): value 20 outside"):
        check_plausible(deep)
    # within the widened range: accepted
    near = trained.copy()
    span = trained.soce.attrs["training_max"] - trained.soce.attrs["training_min"]
    near["soce"] = trained.soce + xr.DataArray(np.nan_to_num(0.9 * span), dims="z_c")
    near["soce"].attrs = trained.soce.attrs
    check_plausible(near)
    wrong = trained.copy()
    wrong["toce"] = trained.toce.assign_attrs(training_min=[0.0, 1.0], training_max=[1.0, 2.0])
    with pytest.raises(InvalidDataError, match=r"toce: attributes training_min/training_max hold 2/2 values, expected 36"):
        check_plausible(wrong)
