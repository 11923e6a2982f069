"""NEMO restarts and initial states: layout read back with netCDF4, the checker, templates, thermal wind."""

from __future__ import annotations

import re
import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.datasets import dino_grid
from xoceandiff.eos import SEOS_CONSTANTS
from xoceandiff.errors import GridMismatchError, InvalidDataError, OutputExistsError
from xoceandiff.restart import (
    GRAVITY,
    OMEGA,
    RESTART_VARIABLES,
    RHO0,
    check_restart,
    is_rank_piece_name,
    read_mesh,
    restart_file_name,
    thermal_wind,
    to_initial_state,
    to_restart,
)

RANK_PIECE = re.compile(r"_\d+\.nc$")


@pytest.fixture(scope="module")
def states():
    ds = xoceandiff.datasets.dino(n=3, resolution=4.0, seed=2, chunks=2)
    samples = ds.rename(t="sample").drop_vars("sample").assign_coords(sample=np.arange(3))
    samples.attrs["checkpoint_sha256"] = "feedbeef"
    return samples


@pytest.fixture(scope="module")
def loaded(states):
    return states.compute()


@pytest.fixture(scope="module")
def restarts(states, tmp_path_factory):
    folder = tmp_path_factory.mktemp("restarts")
    return to_restart(states, folder, kt=480, ndastp=20010101, rdt=2700.0)


@pytest.fixture(scope="module")
def nemo_files(states, tmp_path_factory):
    """The configuration as NEMO describes it: mesh_mask.nc (with nav_lon, nav_lat, nav_lev)."""
    folder = tmp_path_factory.mktemp("nemo")
    return states.rename(sample="t").drop_vars("t").isel(t=[0]).oceandiff.to_nemo_files(folder)


# --- layout, read back with netCDF4 directly ----------------------------------------------------------


def test_restart_layout_and_values(restarts, loaded):
    ocean = loaded.tmask.values
    assert len(restarts) == 3
    for index, path in enumerate(restarts):
        assert not RANK_PIECE.search(path.name)
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_mask(False)
            assert nc.dimensions["time_counter"].isunlimited() and nc.dimensions["time_counter"].size == 1
            assert {d: len(nc.dimensions[d]) for d in ("nav_lev", "y", "x")} == {"nav_lev": 36, "y": 51, "x": 17}
            assert set(RESTART_VARIABLES["4.2"]) <= set(nc.variables)
            for name, var in nc.variables.items():
                assert "_FillValue" not in var.ncattrs(), name
            for name in ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"):
                var = nc[name]
                assert var.dimensions == ("time_counter", "nav_lev", "y", "x") and var.dtype == np.float64
                assert np.isfinite(var[:]).all()
            for name in ("sshn", "sshb"):
                assert nc[name].dimensions == ("time_counter", "y", "x") and nc[name].dtype == np.float64
            state = loaded.isel(sample=index)
            for restart_name, source in (("tn", "toce"), ("sn", "soce"), ("tb", "toce"), ("sb", "soce")):
                values = nc[restart_name][0]
                np.testing.assert_array_equal(values[ocean], state[source].values[ocean].astype(np.float64))
                assert np.all(values[~ocean] == 0)
            ssh = nc["sshn"][0]
            np.testing.assert_array_equal(ssh[ocean[0]], state.ssh.values[ocean[0]])
            assert np.all(ssh[~ocean[0]] == 0)
            np.testing.assert_array_equal(nc["sshb"][:], nc["sshn"][:])
            for name in ("un", "vn", "ub", "vb"):
                assert np.all(nc[name][:] == 0)  # at rest
            scalars = {name: nc[name] for name in ("kt", "ndastp", "adatrj", "ntime", "rdt")}
            for name, var in scalars.items():
                assert var.ndim == 0 and var.dimensions == () and var.dtype == np.float64, name
            assert float(scalars["kt"][...]) == 480 and float(scalars["ndastp"][...]) == 20010101
            assert float(scalars["rdt"][...]) == 2700.0 and float(scalars["adatrj"][...]) == 480 * 2700 / 86400
            assert nc["nav_lon"].dtype == np.float32 and nc["nav_lon"].dimensions == ("y", "x")
            assert nc["nav_lat"].dtype == np.float32
            assert nc["nav_lev"].dtype == np.float32 and nc["nav_lev"].dimensions == ("nav_lev",)
            np.testing.assert_array_equal(nc["nav_lev"][:], loaded.gdept_1d.values.astype(np.float32))
            np.testing.assert_array_equal(nc["nav_lat"][:], loaded.gphit.values.astype(np.float32))
            assert "time_counter" in nc.variables
            assert "feedbeef" in nc.source


def test_checker_accepts_what_to_restart_writes(restarts, states, nemo_files):
    for path in restarts:
        assert check_restart(path, states) == []
        assert check_restart(path, nemo_files["mesh_mask"]) == []


def test_namelist_beside_the_restarts(restarts):
    text = (restarts[0].parent / "namelist_restart.txt").read_text()
    assert "ln_rstart       = .true." in text
    assert 'cn_ocerst_in    = "restart_s000_xoceandiff"' in text
    assert "nn_rstctl" in text and "nn_it000        = 481" in text
    assert "ln_tsd_init     = .false." in text


def test_file_name_rule():
    names = [restart_file_name("restart", i) for i in (0, 7, 123, 4567)] + [restart_file_name("restart", None)]
    assert not any(RANK_PIECE.search(name) for name in names)
    assert restart_file_name("restart", 0) == "restart_s000_xoceandiff.nc"
    assert RANK_PIECE.search(restart_file_name("restart", 0, rank=3))
    assert is_rank_piece_name("GYRE_00000480_restart_0003.nc") and not is_rank_piece_name("restart.nc")
    assert is_rank_piece_name("restart_sample_000.nc") and not is_rank_piece_name("restart_sample000.nc")
    with pytest.raises(InvalidDataError, match="prefix"):
        restart_file_name("out/restart", 0)


def test_training_data_and_laziness(states, compute_counter, tmp_path):
    mesh = read_mesh(states)  # reads the grid only: the dask-backed fields are not computed
    assert compute_counter.count == 0 and mesh.shape == (36, 51, 17)
    training = xoceandiff.datasets.dino(n=3, resolution=4.0, chunks=2)
    paths = to_restart(training.isel(t=[2]), tmp_path)
    assert compute_counter.count == 1  # one chunk of states, computed once
    with netCDF4.Dataset(paths[0]) as nc:
        assert float(nc["ndastp"][...]) == 20000126  # the state's date
        assert float(nc["kt"][...]) == 0
    assert "nn_it000        = 1 " in (tmp_path / "namelist_restart.txt").read_text()


def test_nemo5_set_with_mesh_mask_file(states, nemo_files, tmp_path):
    paths = to_restart(states.isel(sample=[1]), tmp_path, mesh_mask=nemo_files["mesh_mask"], nemo_version="5.0")
    with netCDF4.Dataset(paths[0]) as nc:
        assert {"tn", "sn", "sshn", "un", "vn", "rdt", "kt", "ndastp", "adatrj", "ntime"} <= set(nc.variables)
        assert not {"tb", "sb", "sshb", "ub", "vb"} & set(nc.variables)
    assert check_restart(paths[0], nemo_files["mesh_mask"], nemo_version="5.0") == []
    assert any("tb" in p for p in check_restart(paths[0], nemo_files["mesh_mask"], nemo_version="4.2"))


def test_per_rank_pieces(states, loaded, tmp_path):
    paths = to_restart(states.isel(sample=[0]), tmp_path, ranks=(2, 3))
    assert [p.name for p in paths] == [f"restart_s000_xoceandiff_{r:04d}.nc" for r in range(6)]
    tn = np.zeros(loaded.tmask.shape)
    for rank, path in enumerate(paths):
        assert check_restart(path, states) == []
        with netCDF4.Dataset(path) as nc:
            assert int(nc.DOMAIN_number) == rank and int(nc.DOMAIN_number_total) == 6
            (i0, j0), (i1, j1) = nc.DOMAIN_position_first, nc.DOMAIN_position_last
            assert list(nc.DOMAIN_size_local) == [i1 - i0 + 1, j1 - j0 + 1]
            tn[:, j0 - 1: j1, i0 - 1: i1] = nc["tn"][0]
    np.testing.assert_array_equal(tn, np.where(loaded.tmask, loaded.toce.isel(sample=0), 0.0))


def test_grid_mismatch_with_mesh_mask(states, tmp_path):
    other = xoceandiff.datasets.dino(n=1, resolution=5.0).oceandiff.to_nemo_files(tmp_path / "other")
    with pytest.raises(GridMismatchError, match=r"\(36, 51, 17\).*\(36, 41, 14\)"):
        to_restart(states, tmp_path / "out", mesh_mask=other["mesh_mask"])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_all_or_nothing_and_overwrite(states, loaded, tmp_path):
    broken = loaded.copy(deep=True)
    ocean_cell = np.argwhere(loaded.tmask.values)[100]
    broken["toce"].values[(2, *ocean_cell)] = np.nan
    with pytest.raises(InvalidDataError, match=r"toce of sample 2: 1 ocean cells"):
        to_restart(broken, tmp_path)
    assert list(tmp_path.iterdir()) == []  # samples 0 and 1 were not left behind

    paths = to_restart(states.isel(sample=[0]), tmp_path)
    before = paths[0].read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        to_restart(states.isel(sample=[0]), tmp_path, kt=10)
    assert paths[0].read_bytes() == before
    to_restart(states.isel(sample=[0]), tmp_path, kt=10, overwrite=True)
    with netCDF4.Dataset(paths[0]) as nc:
        assert float(nc["kt"][...]) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["namelist_restart.txt", "restart_s000_xoceandiff.nc"]


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
    problems = check_restart(path, states)
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


# --- template --------------------------------------------------------------------------------------------------


def _nemo_like_template(path, shape, seed=0):
    """A restart as NEMO writes it: more fields (TKE, barotropic), compression, attributes."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("x", nx)
        nc.createDimension("y", ny)
        nc.createDimension("nav_lev", nz)
        nc.createDimension("time_counter", None)
        nc.setncatts({"DOMAIN_number_total": 1, "file_name": "GYRE_00000480_restart.nc", "TimeStamp": "01/01/2001"})
        for name in ("nav_lon", "nav_lat"):
            nc.createVariable(name, "f4", ("y", "x"))[:] = rng.normal(size=(ny, nx))
        nc.createVariable("nav_lev", "f4", ("nav_lev",))[:] = np.arange(nz)
        nc.createVariable("time_counter", "f8", ("time_counter",))[:] = [1296000.0]
        for name, value in (("kt", 480.0), ("ndastp", 20010116.0), ("adatrj", 15.0), ("ntime", 0.0), ("rdt", 2700.0)):
            nc.createVariable(name, "f8", ())[...] = value
        for name in ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb", "en", "avt_k", "rhop"):
            var = nc.createVariable(name, "f8", ("time_counter", "nav_lev", "y", "x"), zlib=(name in ("en", "avt_k")),
                                    complevel=5, shuffle=True, chunksizes=(1, 4, ny, nx))
            var[:] = rng.normal(size=(1, nz, ny, nx))
        for name in ("sshn", "sshb", "sshbb_e", "ub_e"):
            nc.createVariable(name, "f8", ("time_counter", "y", "x"))[:] = rng.normal(size=(1, ny, nx))
        nc["en"].setncatts({"long_name": "turbulent kinetic energy", "units": "m2 s-2"})


def _variables(path):
    out = {}
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        globals_ = {k: nc.getncattr(k) for k in nc.ncattrs()}
        for name, var in nc.variables.items():
            out[name] = {
                "data": np.asarray(var[...]),
                "dtype": var.dtype,
                "dims": var.dimensions,
                "attrs": {k: var.getncattr(k) for k in var.ncattrs()},
                "filters": var.filters(),
                "chunking": var.chunking(),
            }
        dims = {name: (len(d), d.isunlimited()) for name, d in nc.dimensions.items()}
    return out, globals_, dims


def test_template_replaces_only_temperature_salinity_ssh(states, loaded, tmp_path):
    template = tmp_path / "GYRE_00000480_restart.nc"
    _nemo_like_template(template, loaded.tmask.shape)
    paths = to_restart(states, tmp_path / "out", template=template)
    before, globals_before, dims_before = _variables(template)
    ocean = loaded.tmask.values
    replaced = {"tn": "toce", "sn": "soce", "tb": "toce", "sb": "soce", "sshn": "ssh", "sshb": "ssh"}
    for index, path in enumerate(paths):
        after, globals_after, dims_after = _variables(path)
        assert globals_after == globals_before and dims_after == dims_before
        assert set(after) == set(before)
        for name in before:
            for key in ("dtype", "dims", "attrs", "filters", "chunking"):
                assert after[name][key] == before[name][key], (name, key)
            if name not in replaced:
                assert after[name]["data"].tobytes() == before[name]["data"].tobytes(), name
        state = loaded.isel(sample=index)
        for name, source in replaced.items():
            values = after[name]["data"][0]
            mask = ocean if values.ndim == 3 else ocean[0]
            np.testing.assert_array_equal(values[mask], state[source].values[mask])
            assert np.all(values[~mask] == 0)
    assert "nn_it000        = 481" in (tmp_path / "out" / "namelist_restart.txt").read_text()

    # velocities given explicitly replace the template's
    (path,) = to_restart(states.isel(sample=[0]), tmp_path / "rest", template=template, velocities="rest")
    after, _, _ = _variables(path)
    for name in ("un", "vn", "ub", "vb"):
        assert np.all(after[name]["data"] == 0)
    assert after["en"]["data"].tobytes() == before["en"]["data"].tobytes()


def test_template_on_another_grid(states, tmp_path):
    template = tmp_path / "template.nc"
    _nemo_like_template(template, (31, 22, 32))
    with pytest.raises(GridMismatchError, match=r"\(1, 31, 22, 32\).*\(36, 51, 17\)"):
        to_restart(states, tmp_path / "out", template=template)
    assert not (tmp_path / "out").exists()


# --- thermal wind ------------------------------------------------------------------------------------------------


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
    ds["toce"] = (10.0 + 0 * ds.e3t).where(ocean).expand_dims(t=ds.t).transpose(*ds.toce.dims)
    ds["soce"] = (salinity + 0 * ds.e3t).where(ocean).expand_dims(t=ds.t).transpose(*ds.soce.dims)
    (path,) = to_restart(ds, tmp_path, velocities="thermal_wind", eos="seos")
    assert check_restart(path, ds) == []
    expected = _analytic_u(ds.isel(t=0), gradient)
    with netCDF4.Dataset(path) as nc:
        un, vn, ub = nc["un"][0], nc["vn"][0], nc["ub"][0]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(un, expected, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(ub, un)
    assert np.abs(vn).max() <= 1e-6 * scale


def test_thermal_wind_of_a_generated_state_is_plausible(loaded):
    u, v = thermal_wind(loaded.isel(sample=0))
    assert np.isfinite(u.values).all() and np.isfinite(v.values).all()
    assert 0.001 < float(abs(u).max()) < 2.0
    assert np.all(u.values[~loaded.umask.values.astype(bool)] == 0)
    assert np.all(v.values[~loaded.vmask.values.astype(bool)] == 0)


# --- initial state ---------------------------------------------------------------------------------------------


def test_initial_state_files(states, loaded, tmp_path):
    paths = to_initial_state(states, tmp_path, index=1)
    assert [p.name for p in paths] == ["initial_s001_temperature_nomask.nc", "initial_s001_salinity_nomask.nc"]
    assert not any(RANK_PIECE.search(p.name) for p in paths)
    ocean = loaded.tmask.values
    state = loaded.isel(sample=1)
    for path, variable, source in zip(paths, ("votemper", "vosaline"), ("toce", "soce"), strict=True):
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_mask(False)
            assert nc.dimensions["time_counter"].isunlimited()
            var = nc[variable]
            assert var.dimensions == ("time_counter", "nav_lev", "y", "x") and "_FillValue" not in var.ncattrs()
            values = var[0]
        assert np.isfinite(values).all()
        np.testing.assert_array_equal(values[ocean], state[source].values[ocean])
        for k in range(ocean.shape[0]):  # land filled with values of the ocean (of the level, or the one above)
            wet = ocean[k] if ocean[k].any() else ocean[k - 1]
            reference = values[k if ocean[k].any() else k - 1][wet]
            assert reference.min() <= values[k].min() and values[k].max() <= reference.max()
    # the southern wall takes the values of the first ocean row next to it
    np.testing.assert_allclose(values[0, 0, 5], values[0, 1, 5])
    text = (tmp_path / "namelist_initial_state.txt").read_text()
    assert "ln_tsd_init = .true." in text and "sn_tem  = 'initial_s001_temperature_nomask'" in text
    assert "'vosaline'" in text
    with pytest.raises(OutputExistsError):
        to_initial_state(states, tmp_path, index=1)
