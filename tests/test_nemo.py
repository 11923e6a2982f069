"""open_nemo: the real file path end to end, NEMO layouts, CF metadata, errors, laziness."""

from __future__ import annotations

import shutil

import cf_xarray  # noqa: F401  (registers .cf)
import dask
import netCDF4
import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.errors import GridMismatchError, MissingVariableError, XOceanDiffError


def _files(paths):
    return [paths["grid_T_3D"], paths["grid_T_2D"]]


def test_round_trip_through_nemo_files(small_dino, small_nemo_files):
    ds = xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=small_nemo_files["mesh_mask"])
    expected = small_dino.compute()
    for name in ("toce", "soce", "ssh"):
        xr.testing.assert_identical(ds[name].compute(), expected[name])
    # land is NaN, ocean finite
    ocean = ds.tmask.values
    toce = ds.toce.isel(t=0).values
    assert np.isnan(toce[~ocean]).all() and np.isfinite(toce[ocean]).all()
    assert ds.toce.attrs["original_name"] == "toce_inst"
    assert ds.ssh.attrs["original_name"] == "ssh_inst"


def test_files_hold_zero_on_land_and_nemo_layout(small_nemo_files):
    with netCDF4.Dataset(small_nemo_files["grid_T_3D"]) as nc:
        assert nc["toce_inst"].dimensions == ("time_counter", "deptht", "y", "x")
        assert nc.dimensions["time_counter"].isunlimited()
        values = nc["toce_inst"][0, :, 0, :]  # row 0 is the southern wall
        assert np.all(np.asarray(values) == 0)
    with netCDF4.Dataset(small_nemo_files["mesh_mask"]) as nc:
        assert nc["tmask"].dimensions == ("time_counter", "nav_lev", "y", "x")
        assert nc.dimensions["time_counter"].size == 1
        assert int(nc.getncattr("Iperio")) == 1


def test_cf_metadata(small_nemo_files):
    ds = xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=small_nemo_files["mesh_mask"])
    axes = ds.cf.axes
    assert axes["X"] == ["x_c", "x_f"] and axes["Y"] == ["y_c", "y_f"] and "z_c" in axes["Z"] and axes["T"] == ["t"]
    assert ds.cf.standard_names["sea_water_conservative_temperature"] == ["toce"]
    assert ds.cf.standard_names["sea_water_absolute_salinity"] == ["soce"]
    assert ds.cf.standard_names["sea_surface_height_above_geoid"] == ["ssh"]
    assert ds.cf["longitude"].name == "glamt" and ds.cf["latitude"].name == "gphit"
    assert ds.gdept_1d.attrs["positive"] == "down" and ds.gdept_1d.attrs["units"] == "m"
    for name in ("toce", "soce", "ssh"):
        assert {"standard_name", "units", "long_name"} <= set(ds[name].attrs)
    for name in ds.coords:
        assert ds[name].attrs, f"coordinate {name} has no attributes"


def test_per_rank_files(small_dino, tmp_path):
    paths = small_dino.oceandiff.to_nemo_files(tmp_path, ranks=(2, 3))
    assert len(paths["pieces"]) == 12
    with netCDF4.Dataset(paths["pieces"][1]) as nc:
        assert list(nc.getncattr("DOMAIN_position_first")) != [1, 1]
    ds = xoceandiff.open_nemo(paths["pieces"], mesh_mask=paths["mesh_mask"])
    xr.testing.assert_identical(ds.toce.compute(), small_dino.toce.compute())
    xr.testing.assert_identical(ds.ssh.compute(), small_dino.ssh.compute())


def test_files_split_along_time(small_dino, tmp_path):
    first = small_dino.isel(t=slice(0, 5)).oceandiff.to_nemo_files(tmp_path / "a")
    second = small_dino.isel(t=slice(5, None)).oceandiff.to_nemo_files(tmp_path / "b")
    ds = xoceandiff.open_nemo(_files(second) + _files(first), mesh_mask=first["mesh_mask"])
    assert ds.sizes["t"] == 12
    xr.testing.assert_identical(ds.toce.compute(), small_dino.toce.compute())


def _rewrite(path, out, rename=None, dims=None, attrs=None, drop=()):
    ds = xr.open_dataset(path, decode_times=False).load()
    ds = ds.drop_vars([v for v in drop if v in ds.variables])
    if rename:
        ds = ds.rename(rename)
    if dims:
        ds = ds.swap_dims(dims) if False else ds.rename_dims(dims)
    if attrs:
        for name, a in attrs.items():
            ds[name].attrs = a
    ds.to_netcdf(out, unlimited_dims=["time_counter"] if "time_counter" in ds.dims else None)
    return out


def test_nemo36_names_without_standard_names(small_dino, small_nemo_files, tmp_path):
    f3 = _rewrite(small_nemo_files["grid_T_3D"], tmp_path / "GYRE_grid_T.nc",
                  rename={"toce_inst": "votemper", "soce_inst": "vosaline"},
                  attrs={"votemper": {"units": "degC"}, "vosaline": {"units": "psu"}})
    ds = xoceandiff.open_nemo(f3, mesh_mask=small_nemo_files["mesh_mask"])
    assert ds.toce.attrs["original_name"] == "votemper" and "ssh" not in ds
    xr.testing.assert_allclose(ds.soce.compute(), small_dino.soce.compute())


def test_standard_name_wins_over_alias(small_nemo_files, tmp_path):
    # a CMIP-like file: the temperature is called 'thetao', and a decoy 'toce' has no standard name
    src = xr.open_dataset(small_nemo_files["grid_T_3D"], decode_times=False).load()
    src = src.rename({"toce_inst": "thetao", "soce_inst": "so", "deptht": "lev"})
    src["toce"] = src["thetao"] * 0 + 99.0
    src["toce"].attrs = {"units": "degC"}
    src.to_netcdf(tmp_path / "cmip_grid_T.nc", unlimited_dims=["time_counter"])
    ds = xoceandiff.open_nemo(tmp_path / "cmip_grid_T.nc", mesh_mask=small_nemo_files["mesh_mask"])
    assert ds.toce.attrs["original_name"] == "thetao"
    assert float(ds.toce.max()) < 40


def test_domain_cfg_without_tmask(small_dino, small_nemo_files, tmp_path):
    mesh = xr.open_dataset(small_nemo_files["mesh_mask"]).load()
    ocean = mesh.tmask.isel(time_counter=0).values.astype(bool)
    bottom = ocean.sum(axis=0).astype("int32")
    domcfg = mesh.drop_vars(["tmask", "umask", "vmask"])
    domcfg["top_level"] = (("time_counter", "y", "x"), (bottom > 0).astype("int32")[None])
    domcfg["bottom_level"] = (("time_counter", "y", "x"), bottom[None])
    domcfg.to_netcdf(tmp_path / "domain_cfg.nc")
    shutil.copy(small_nemo_files["grid_T_3D"], tmp_path / "DINO_10d_grid_T_3D.nc")
    # mesh_mask omitted: the domain_cfg beside the data is found
    ds = xoceandiff.open_nemo(tmp_path / "DINO_10d_grid_T_3D.nc")
    np.testing.assert_array_equal(ds.tmask.values, small_dino.tmask.values)
    xr.testing.assert_identical(ds.toce.compute(), small_dino.toce.compute())


def test_domain_cfg_without_depths_gets_mid_cell_depths(small_nemo_files, tmp_path):
    """A domain_cfg.nc has e3t_1d but no gdept_1d: T depths are the W depths plus half a cell."""
    mesh = xr.open_dataset(small_nemo_files["mesh_mask"]).load()
    mesh.drop_vars("gdept_1d").to_netcdf(tmp_path / "domain_cfg.nc")
    with pytest.warns(UserWarning, match="gdept_1d: the grid file has no T-level depths"):
        grid = xoceandiff.nemo.open_grid(tmp_path / "domain_cfg.nc")
    e3t = mesh.e3t_1d.values.ravel()
    expected = np.concatenate([[0.0], np.cumsum(e3t)[:-1]]) + e3t / 2
    np.testing.assert_allclose(grid.gdept_1d.values, expected, rtol=1e-12)


def test_restart_style_file(small_dino, small_nemo_files, tmp_path):
    # restart layout: tn/sn/sshn on (time_counter, nav_lev, y, x), no grid_T in the file name
    src = xr.open_dataset(small_nemo_files["grid_T_3D"], decode_times=False).isel(time_counter=[0]).load()
    two = xr.open_dataset(small_nemo_files["grid_T_2D"], decode_times=False).isel(time_counter=[0]).load()
    rst = xr.Dataset(
        {
            "tn": src.toce_inst.rename(deptht="nav_lev").astype("float64"),
            "sn": src.soce_inst.rename(deptht="nav_lev").astype("float64"),
            "sshn": two.ssh_inst.astype("float64"),
        }
    ).drop_vars(["nav_lon", "nav_lat", "nav_lev", "deptht"], errors="ignore")
    for v in rst.data_vars:
        rst[v].attrs = {}
    rst.to_netcdf(tmp_path / "restart.nc", unlimited_dims=["time_counter"])
    ds = xoceandiff.open_nemo(tmp_path / "restart.nc", mesh_mask=small_nemo_files["mesh_mask"])
    assert ds.toce.attrs["original_name"] == "tn"
    np.testing.assert_allclose(ds.toce.isel(t=0).values, small_dino.toce.isel(t=0).values, equal_nan=True)


def test_periodicity_follows_iperio(small_nemo_files, tmp_path):
    ds = xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=small_nemo_files["mesh_mask"])
    assert ds.attrs["Iperio"] == 1 and ds.oceandiff.periodic_x
    mesh = xr.open_dataset(small_nemo_files["mesh_mask"]).load()
    mesh.attrs.pop("Iperio")
    mesh.to_netcdf(tmp_path / "mesh_mask.nc")
    closed = xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=tmp_path / "mesh_mask.nc")
    assert closed.attrs["Iperio"] == 0 and not closed.oceandiff.periodic_x


class _GraphRecorder(dask.callbacks.Callback):
    """Records the (optimised, culled) graph of every dask compute."""

    def __init__(self) -> None:
        super().__init__()
        self.graphs: list[dict] = []

    def _start(self, dsk) -> None:
        self.graphs.append(dict(dsk))


def test_opening_is_lazy(small_nemo_files):
    """One compute at the door (the first-record check), touching the first chunk of each array only."""
    with _GraphRecorder() as recorder:
        ds = xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=small_nemo_files["mesh_mask"], chunks={"t": 4})
    assert len(recorder.graphs) == 1
    blocks = [key[1:] for key in recorder.graphs[0] if isinstance(key, tuple)]
    assert blocks and all(index == 0 for block in blocks for index in block)  # no chunk past records 0-3
    assert ds.toce.chunks[0] == (4, 4, 4)
    for name in ("toce", "soce", "ssh"):
        assert isinstance(ds[name].data, dask.array.Array)
    _ = ds.oceandiff.grid
    assert len(recorder.graphs) == 1


def test_missing_fields_error(small_nemo_files, tmp_path):
    src = xr.open_dataset(small_nemo_files["grid_T_3D"], decode_times=False).load()
    src = src.rename({"toce_inst": "temperature_thing", "soce_inst": "salt_thing"})
    for v in ("temperature_thing", "salt_thing"):
        src[v].attrs = {}
    src.to_netcdf(tmp_path / "x_grid_T.nc")
    with pytest.raises(MissingVariableError, match=r"toce: standard_name in .*'votemper'.*Found variables: .*'salt_thing', 'temperature_thing'"):
        xoceandiff.open_nemo(tmp_path / "x_grid_T.nc", mesh_mask=small_nemo_files["mesh_mask"])


def test_mesh_mask_shape_mismatch(small_nemo_files, tmp_path):
    other = xoceandiff.datasets.dino(n=1, resolution=5.0).oceandiff.to_nemo_files(tmp_path)
    with pytest.raises(GridMismatchError, match=r"shape \(z, y, x\) = \(36, 51, 17\).*has \(36, 41, 14\)"):
        xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=other["mesh_mask"])


def test_missing_files(small_nemo_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope_grid_T.nc"):
        xoceandiff.open_nemo(tmp_path / "nope_grid_T.nc", mesh_mask=small_nemo_files["mesh_mask"])
    with pytest.raises(FileNotFoundError, match="no_mesh.nc"):
        xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=tmp_path / "no_mesh.nc")
    lonely = tmp_path / "alone"
    lonely.mkdir()
    shutil.copy(small_nemo_files["grid_T_3D"], lonely / "DINO_10d_grid_T_3D.nc")
    with pytest.raises(FileNotFoundError, match="mesh_mask"):
        xoceandiff.open_nemo(lonely / "DINO_10d_grid_T_3D.nc")


def test_errors_share_one_base():
    assert issubclass(MissingVariableError, XOceanDiffError) and issubclass(MissingVariableError, KeyError)
    assert issubclass(GridMismatchError, ValueError)


def test_opening_writes_nothing(small_nemo_files):
    folder = __import__("pathlib").Path(small_nemo_files["mesh_mask"]).parent
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    xoceandiff.open_nemo(_files(small_nemo_files), mesh_mask=small_nemo_files["mesh_mask"]).compute()
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_xios_grid_named_axes(small_dino, small_nemo_files, tmp_path):
    """Some XIOS files name the horizontal axes x_grid_T / y_grid_T."""
    src = xr.open_dataset(small_nemo_files["grid_T_3D"], decode_times=False).load()
    src = src.rename_dims({"x": "x_grid_T", "y": "y_grid_T"})
    src.to_netcdf(tmp_path / "X_grid_T.nc", unlimited_dims=["time_counter"])
    ds = xoceandiff.open_nemo(tmp_path / "X_grid_T.nc", mesh_mask=small_nemo_files["mesh_mask"])
    xr.testing.assert_identical(ds.toce.compute(), small_dino.toce.compute())


def _fields(**variables):
    """A dataset of tiny fields: name=standard_name (or None for a field without one)."""
    return xr.Dataset(
        {name: ("x", np.zeros(2), {"standard_name": sn} if sn else {}) for name, sn in variables.items()}
    )


def test_find_field_ranking():
    from xoceandiff.conventions import FIELDS
    from xoceandiff.nemo import find_field

    toce = FIELDS["toce"]
    # standard names in their order, whatever the variables' order
    ds = _fields(a="sea_water_potential_temperature", b="sea_water_conservative_temperature")
    assert find_field(ds, toce) == "b"
    # a standard name beats an alias, even the canonical name itself
    assert find_field(_fields(toce=None, thetao="sea_water_potential_temperature"), toce) == "thetao"
    # among standard-name matches, the earlier alias wins (restart: now before before)
    ds = _fields(tb="sea_water_conservative_temperature", tn="sea_water_potential_temperature")
    assert find_field(ds, toce) == "tn"
    # aliases alone, in their order; names are matched whole (no toce_bounds, no prefix match)
    assert find_field(_fields(thetao=None, votemper=None, toce_bounds=None), toce) == "votemper"
    assert find_field(_fields(toce_bounds=None, temperature="sea_water_temperature_anomaly"), toce) is None
    # coordinates are never fields
    coord = xr.Dataset(coords={"votemper": ("x", np.zeros(2))})
    assert find_field(coord, toce) is None


def test_cf_criteria_with_cf_xarray():
    # the conventions table as cf-xarray custom criteria: ds.cf finds NEMO's names and CF's
    from xoceandiff.conventions import CF_CRITERIA

    ds = _fields(votemper=None, so="sea_water_absolute_salinity", zos=None)
    with cf_xarray.set_options(custom_criteria=CF_CRITERIA):
        assert ds.cf["toce"].name == "votemper"
        assert ds.cf["soce"].name == "so"
        assert ds.cf["ssh"].name == "zos"
