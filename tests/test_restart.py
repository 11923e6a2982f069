"""NEMO restarts and initial states: layout read back with netCDF4, options, rank pieces, templates.

The checker has its own tests (test_restart_check.py), and so has the thermal wind (test_dynamics.py).
"""

from __future__ import annotations

import re
import subprocess
import sys

import netCDF4
import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.errors import GridMismatchError, InvalidDataError, OutputExistsError
from xoceandiff.ranks import piece_window, split_ranks
from xoceandiff.restart import (
    RESTART_VARIABLES,
    RestartOptions,
    check_restart,
    is_rank_piece_name,
    read_mesh,
    restart_file_name,
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
    return to_restart(states, folder, nemo_version="4.2", kt=480, ndastp=20010101, rdt=2700.0)


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


def test_rank_pieces_match_the_nemo_output_writer(states, tmp_path):
    """One rank split for both writers: the same windows and DOMAIN_* attributes as to_nemo_files."""
    restart_pieces = to_restart(states.isel(sample=[0]), tmp_path / "restart", ranks=(2, 3))
    output = states.rename(sample="t").drop_vars("t").isel(t=[0]).oceandiff.to_nemo_files(tmp_path / "nemo", ranks=(2, 3))
    output_pieces = [p for p in output["pieces"] if "grid_T_3D" in p]
    assert len(output_pieces) == len(restart_pieces) == 6
    for rank, (ours, theirs) in enumerate(zip(restart_pieces, output_pieces, strict=True)):
        with netCDF4.Dataset(ours) as a, netCDF4.Dataset(theirs) as b:
            domain_a = {k: np.asarray(a.getncattr(k)).tolist() for k in a.ncattrs() if k.startswith("DOMAIN_")}
            domain_b = {k: np.asarray(b.getncattr(k)).tolist() for k in b.ncattrs() if k.startswith("DOMAIN_")}
            assert domain_a == domain_b and domain_a["DOMAIN_number"] == rank
            window = piece_window(domain_a)
            assert (a.dimensions["y"].size, a.dimensions["x"].size) == (window[0].stop - window[0].start,
                                                                        window[1].stop - window[1].start)
    with pytest.raises(InvalidDataError, match=r"ranks: expected .*1 <= nx <= 17.*found \(18, 1\)"):
        split_ranks(17, 51, (18, 1))


def test_options_are_validated_before_anything_is_read(states, tmp_path):
    for kwargs, message in (
        ({"nemo_version": "3.6"}, r"nemo_version: expected one of \['4.0', '4.2', '5.0'\], found '3.6'"),
        ({"velocities": "geostrophic"}, "velocities: expected 'rest' or 'thermal_wind'"),
        ({"template": tmp_path / "t.nc", "ranks": (2, 2)}, "not written from a template"),
        ({"nemo_version": "4.0", "ranks": (2, 2)}, "NEMO 4.0 pieces hold halos"),
        ({"kt": 1.5}, "kt: expected a non-negative time step index, found 1.5"),
    ):
        with pytest.raises(InvalidDataError, match=message):
            RestartOptions(**kwargs)
        with pytest.raises(InvalidDataError, match=message):
            to_restart(states, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    options = RestartOptions(template=tmp_path / "t.nc")
    assert options.velocity_mode == "template" and not options.leapfrog  # NEMO 5.0 by default
    assert RestartOptions(nemo_version=4.2).leapfrog
    assert RestartOptions(nemo_version="5.0", velocities="thermal_wind").velocity_mode == "thermal_wind"
    with pytest.raises(AttributeError):
        options.kt = 3  # frozen: validated once, never changed after


def test_one_mesh_reader(states, nemo_files):
    """read_mesh reads files through xoceandiff.nemo.open_grid, and canonical grids directly."""
    from xoceandiff.nemo import open_grid

    from_file = read_mesh(nemo_files["mesh_mask"])
    from_grid = read_mesh(open_grid(nemo_files["mesh_mask"]))
    from_samples = read_mesh(states)
    for mesh in (from_file, from_grid):
        np.testing.assert_array_equal(mesh.tmask, from_samples.tmask)
        np.testing.assert_array_equal(mesh.nav_lev, from_samples.nav_lev)
        np.testing.assert_array_equal(mesh.nav_lat, from_samples.nav_lat)
    assert from_file.source == str(nemo_files["mesh_mask"])
    raw = xr.open_dataset(nemo_files["mesh_mask"])
    with pytest.raises(InvalidDataError, match=r"tmask of the mesh_mask dataset: expected dimensions \('z_c', 'y_c', 'x_c'\)"):
        read_mesh(raw)
    with pytest.raises(FileNotFoundError, match="no_mesh.nc"):
        read_mesh(nemo_files["mesh_mask"] + ".missing/no_mesh.nc")


def test_restart_modules_do_not_import_torch():
    code = (
        "import sys, xoceandiff.restart, xoceandiff.restart_check, xoceandiff.dynamics, xoceandiff.ranks; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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


# --- the run that reads the restarts: template, namelist, explicit options ------------------------------------

NAMELIST_CFG = """!! NEMO/OCE :   Configuration namelist_cfg used to overwrite defaults value defined in namelist_ref
!-----------------------------------------------------------------------
&namrun        !   parameters of the run
!-----------------------------------------------------------------------
   cn_exp      =  "GYRE"   !  experience name ! not a comment: "!" inside quotes
   nn_it000    =  1        !  first time step
   nn_itend    =  4320     !  last  time step
   nn_date0    =  00510101 !  date at nit_0000 (format yyyymmdd)
   ln_rstart   = .false.   !  start from rest (F) or from a restart file (T)
   cn_ocerst_indir = "./restarts/"   ! a "/" inside quotes does not close the group
/
&namdom        !   time and space domain
   ln_linssh = .true. ,  rn_Dt = 14400.  ! time step for the dynamics and tracer
   rn_atfp  =    0.1d0
/
&nameos        !   ocean Equation Of Seawater
   ln_eos80    = .true.
/
&namtsd
   sn_tem  = 'data_1m_potential_temperature_nomask', -1., 'votemper', .true., .true., 'yearly', '', '', ''
/
"""


def test_namelist_reader(tmp_path):
    from xoceandiff.restart_format import read_namelist, settings_from_namelist

    path = tmp_path / "namelist_cfg"
    path.write_text(NAMELIST_CFG)
    groups = read_namelist(path)
    assert groups["namrun"]["cn_exp"] == "GYRE" and groups["namrun"]["cn_ocerst_indir"] == "./restarts/"
    assert groups["namrun"]["nn_date0"] == 510101 and groups["namrun"]["ln_rstart"] is False
    assert groups["namdom"] == {"ln_linssh": True, "rn_dt": 14400.0, "rn_atfp": 0.1}
    assert groups["nameos"] == {"ln_eos80": True}
    assert groups["namtsd"]["sn_tem"][:4] == ["data_1m_potential_temperature_nomask", -1.0, "votemper", True]
    settings = settings_from_namelist(path)
    assert (settings.rdt, settings.ndastp, settings.kt, settings.ln_rstart) == (14400.0, 510101, 0, False)
    assert settings.nemo_version is None  # rn_Dt: NEMO 4.2 or 5.0
    old = tmp_path / "namelist_40"
    old.write_text("&namdom\n   rn_rdt = 5760.\n/\n")
    assert (settings_from_namelist(old).nemo_version, settings_from_namelist(old).rdt) == ("4.0", 5760.0)
    bad = tmp_path / "namelist_bad"
    bad.write_text("&namdom\n   rn_Dt = 'fast'\n/\n")
    with pytest.raises(InvalidDataError, match=r"rn_dt in &namdom of .*expected a number, found 'fast'"):
        settings_from_namelist(bad)


def test_settings_from_a_namelist_and_explicit_options(states, tmp_path):
    namelist = tmp_path / "namelist_cfg"
    namelist.write_text(NAMELIST_CFG)
    (path,) = to_restart(states.isel(sample=[0]), tmp_path / "a", namelist=namelist)
    with netCDF4.Dataset(path) as nc:
        assert float(nc["rdt"][...]) == 14400.0 and float(nc["ndastp"][...]) == 510101
        assert "tb" not in nc.variables and nc.nemo_version == "5.0"  # 5.0 by default: rn_Dt does not tell
    text = (tmp_path / "a" / "namelist_restart.txt").read_text()
    assert "! NEMO version 5.0: default (no template, namelist or nemo_version told)" in text
    assert f"! rdt = 14400 s: namelist {str(namelist)!r} (rn_Dt/rn_rdt)" in text
    assert "nn_date0        = 00510101" in text and "rn_Dt           = 14400.0" in text
    assert "sets ln_rstart = .false.: set it to .true." in text
    # explicit options override the namelist
    (path,) = to_restart(states.isel(sample=[0]), tmp_path / "b", namelist=namelist, rdt=7200.0, ndastp=520101,
                         nemo_version="4.2")
    with netCDF4.Dataset(path) as nc:
        assert float(nc["rdt"][...]) == 7200.0 and float(nc["ndastp"][...]) == 520101 and "tb" in nc.variables
    text = (tmp_path / "b" / "namelist_restart.txt").read_text()
    assert "! NEMO version 4.2: given" in text and "! rdt = 7200 s: given" in text
    for kwargs, message in (({"rdt": 0.0}, "rdt: expected a positive time step"),
                            ({"ndastp": 20011301}, "ndastp: expected a date yyyymmdd")):
        with pytest.raises(InvalidDataError, match=message):
            to_restart(states, tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_settings_from_a_template_and_contradictions(states, loaded, tmp_path):
    template = tmp_path / "GYRE_00000480_restart.nc"
    _nemo_like_template(template, loaded.tmask.shape)  # NEMO 4.x: before fields, rdt 2700, kt 480
    namelist = tmp_path / "namelist_cfg"
    namelist.write_text(NAMELIST_CFG)
    (path,) = to_restart(states.isel(sample=[0]), tmp_path / "a", template=template, namelist=namelist, kt=480)
    assert check_restart(path, states, nemo_version="4.2") == []
    text = (tmp_path / "a" / "namelist_restart.txt").read_text()
    assert "! NEMO version 4.2: template" in text and "'before' fields" in text
    assert "! rdt = 2700 s: template" in text and "nn_date0        = 20010116" in text  # the template wins
    for kwargs, message in (
        ({"nemo_version": "5.0"}, r"nemo_version: '5.0' given, but the template .* is a NEMO 4.2 restart"),
        ({"rdt": 14400.0}, r"rdt: 14400.0 given, but the template .* has rdt = 2700.0"),
        ({"kt": 0}, r"kt: 0 given, but the template .* has kt = 480"),
        ({"ndastp": 19000101}, r"ndastp: 19000101 given, .* has ndastp = 20010116"),
    ):
        with pytest.raises(InvalidDataError, match=message):
            to_restart(states.isel(sample=[0]), tmp_path / "b", template=template, **kwargs)
    assert not (tmp_path / "b").exists()


def test_nemo5_template_replaces_ssha_and_rk3_velocities(states, loaded, tmp_path):
    """A NEMO 5.0 restart: no before fields, but ssha, uu_n, vv_n that must follow the new state."""
    template = tmp_path / "GYRE_5_restart.nc"
    _nemo_like_template(template, loaded.tmask.shape)
    with netCDF4.Dataset(template, "r+") as nc:
        for name in ("tb", "sb", "ub", "vb", "sshb"):
            nc.renameVariable(name, {"tb": "uu_n", "sb": "vv_n", "sshb": "ssha"}.get(name, f"old_{name}"))
    (path,) = to_restart(states.isel(sample=[0]), tmp_path / "a", template=template, velocities="rest")
    ocean = loaded.tmask.values
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        np.testing.assert_array_equal(nc["ssha"][0][ocean[0]], loaded.ssh.isel(sample=0).values[ocean[0]])
        assert np.all(nc["uu_n"][:] == 0) and np.all(nc["vv_n"][:] == 0)
    assert check_restart(path, states) == []  # read as a 5.0 restart: no before fields
    assert "! NEMO version 5.0: template" in (tmp_path / "a" / "namelist_restart.txt").read_text()
    with pytest.raises(InvalidDataError, match=r"nemo_version: '4.2' given, but the template .* NEMO 5.0"):
        to_restart(states.isel(sample=[0]), tmp_path / "b", template=template, nemo_version="4.2")
