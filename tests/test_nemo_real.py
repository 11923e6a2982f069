"""open_nemo on real NEMO output: GYRE (NEMO 5.0, IOIPSL writer), its fixture and edited copies of it.

The fixture in ``tests/data/gyre`` is the first 4 records of the real GYRE grid_T file, every variable
and attribute as NEMO (and NCO) wrote them, and the run's mesh_mask (``make_fixture.py`` cut them); its
tests always run. The tests on the full files in ``../shared/data/gyre`` skip when that folder is absent.
Edits (Kelvin, kg/kg, other masks, other NEMO generations' names) are made on copies in ``tmp_path``.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import cftime
import dask.array
import netCDF4
import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.canonical import eos_for, salinity_kind
from xoceandiff.errors import GridMismatchError, InvalidDataError

FIXTURE = Path(__file__).parent / "data" / "gyre"
GRID_T = FIXTURE / "GYRE_5d_00510101_00510120_grid_T.nc"
MESH = FIXTURE / "mesh_mask.nc"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gyre"
FULL_GRID_T = SHARED / "GYRE_5d_00510101_00581230_grid_T.nc"


def _open(grid_t=GRID_T, mesh=MESH, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the normal path prints nothing
        return xoceandiff.open_nemo(grid_t, mesh_mask=mesh, **kwargs)


def _raw(name, path=GRID_T):
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        return np.asarray(nc[name][:])


def _ocean():
    with netCDF4.Dataset(MESH) as nc:
        return np.asarray(nc["tmask"][0]).astype(bool)


def _edited(tmp_path, edit, source=GRID_T):
    """A copy of ``source`` in ``tmp_path``, changed in place by ``edit(nc)`` (a netCDF4.Dataset)."""
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    with netCDF4.Dataset(copy, "a") as nc:
        nc.set_auto_mask(False)
        edit(nc)
    return copy


# -- the fixture as NEMO wrote it -----------------------------------------------------------------------


def test_fixture_is_small_and_real():
    assert GRID_T.stat().st_size < 1_000_000 and MESH.stat().st_size < 300_000
    with netCDF4.Dataset(GRID_T) as nc:
        assert nc.dimensions["time_counter"].size == 4
        assert nc["time_counter"].calendar == "360d" and nc.Conventions == "CF-1.1"
        assert nc["votemper"].units == "C" and nc["vosaline"].standard_name == "Salinity"


def test_gyre_opens_with_cf_attributes():
    ds = _open()
    assert dict(ds.toce.sizes) == {"t": 4, "z_c": 31, "y_c": 22, "x_c": 32}
    assert ds.toce.attrs["standard_name"] == "sea_water_potential_temperature"
    assert ds.toce.attrs["units"] == "degC" and ds.toce.attrs["original_standard_name"] == "Temperature"
    assert ds.soce.attrs["standard_name"] == "sea_water_practical_salinity" and ds.soce.attrs["units"] == "1"
    assert ds.soce.attrs["original_standard_name"] == "Salinity" and ds.soce.attrs["original_name"] == "vosaline"
    assert ds.ssh.attrs["standard_name"] == "sea_surface_height_above_geoid" and ds.ssh.attrs["units"] == "m"
    assert salinity_kind(ds) == "practical" and eos_for(ds) == "eos80-poly"
    assert ds.attrs["Conventions"] == "CF-1.11" and ds.attrs["Iperio"] == 0
    # no non-CF standard name survives anywhere (IOIPSL's deptht says model_level_number in metres)
    cf_names = {"sea_water_potential_temperature", "sea_water_practical_salinity", "sea_surface_height_above_geoid",
                "time", "longitude", "latitude", "depth", "cell_x_length", "cell_y_length", "cell_thickness"}
    assert {v.attrs["standard_name"] for v in ds.variables.values() if "standard_name" in v.attrs} <= cf_names
    assert "original_units" not in ds.toce.attrs  # "C" is degC: relabelled, not converted


def test_gyre_values_land_and_dates():
    ds = _open().compute()
    ocean = _ocean()
    for name, source in (("toce", "votemper"), ("soce", "vosaline")):
        values = ds[name].values
        assert np.isnan(values[:, ~ocean]).all() and np.isfinite(values[:, ocean]).all()
        np.testing.assert_array_equal(values[:, ocean], _raw(source)[:, ocean])
    assert np.isnan(ds.ssh.values[:, ~ocean[0]]).all()
    assert isinstance(ds.t.values[0], cftime.Datetime360Day)
    assert [str(t) for t in ds.t.values[:2]] == ["0051-01-03 12:00:00", "0051-01-08 12:00:00"]
    assert "calendar '360d' read as CF's '360_day'" in ds.attrs["history"]


def test_chunks_follow_storage_and_stay_lazy():
    ds = _open()  # stored 12 records a chunk: the 4 records are one chunk, no warning
    for name in ("toce", "soce", "ssh"):
        assert isinstance(ds[name].data, dask.array.Array) and ds[name].chunks[0] == (4,)
    two = _open(chunks={"t": 2})
    assert two.toce.chunks[0] == (2, 2) and two.ssh.chunks[0] == (2, 2)


def test_open_kwargs_pass_through():
    raw_times = _open(open_kwargs={"decode_times": False, "engine": "netcdf4"})
    assert raw_times.t.dtype == np.float64 and float(raw_times.t[0]) == pytest.approx(51 * 360 * 86400 - 355 * 86400 - 43200, abs=1e9)
    with pytest.raises(InvalidDataError, match=r"open_kwargs: expected no 'chunks'.*chunks=\{'t': 12\}"):
        xoceandiff.open_nemo(GRID_T, mesh_mask=MESH, open_kwargs={"chunks": {"time_counter": 1}})


def test_unknown_calendar_is_explained(tmp_path):
    copy = _edited(tmp_path, lambda nc: nc["time_counter"].setncattr("calendar", "300d"))
    with pytest.raises(InvalidDataError, match=r"time_counter.*'300d'.*Calendars understood.*decode_times': False"):
        xoceandiff.open_nemo(copy, mesh_mask=MESH)
    ds = xoceandiff.open_nemo(copy, mesh_mask=MESH, open_kwargs={"decode_times": False})
    assert ds.t.dtype == np.float64


# -- units: converted, refused ---------------------------------------------------------------------------


def _to_kelvin(nc):
    ocean = _ocean()
    values = nc["votemper"][:]
    nc["votemper"][:] = np.where(ocean, values + np.float32(273.15), 0)  # NEMO keeps 0 on land
    nc["votemper"].units = "K"


def test_kelvin_is_converted(tmp_path):
    ds = _open(_edited(tmp_path, _to_kelvin))
    ocean = _ocean()
    kelvin = _raw("votemper", tmp_path / GRID_T.name)
    np.testing.assert_array_equal(ds.toce.values[:, ocean], (kelvin - 273.15)[:, ocean])  # exactly x - 273.15
    np.testing.assert_allclose(ds.toce.values[:, ocean], _raw("votemper")[:, ocean], atol=3e-5)
    assert ds.toce.attrs["units"] == "degC" and ds.toce.attrs["original_units"] == "K"
    assert "votemper converted from 'K' to 'degC' (x - 273.15)" in ds.attrs["history"]
    assert isinstance(ds.toce.data, dask.array.Array)


def test_centimetres_are_converted(tmp_path):
    def to_cm(nc):
        nc["sossheig"][:] = nc["sossheig"][:] * np.float32(100)
        nc["sossheig"].units = "cm"

    ds = _open(_edited(tmp_path, to_cm))
    np.testing.assert_allclose(ds.ssh.values, _open().ssh.values, rtol=1e-6, equal_nan=True)
    assert ds.ssh.attrs["original_units"] == "cm"


def _to_mass_fraction(standard_name):
    def edit(nc):
        nc["vosaline"][:] = nc["vosaline"][:] / np.float32(1000)
        nc["vosaline"].units = "kg kg-1"
        nc["vosaline"].standard_name = standard_name

    return edit


def test_mass_fraction_converted_only_for_absolute_salinity(tmp_path):
    ds = _open(_edited(tmp_path, _to_mass_fraction("sea_water_absolute_salinity")))
    assert ds.soce.attrs["standard_name"] == "sea_water_absolute_salinity" and ds.soce.attrs["units"] == "g kg-1"
    assert ds.soce.attrs["original_units"] == "kg kg-1" and salinity_kind(ds) == "absolute"
    assert ds.toce.attrs["standard_name"] == "sea_water_conservative_temperature"
    np.testing.assert_allclose(ds.soce.values, _open().soce.values, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("standard_name", ["Salinity", "sea_water_practical_salinity", "sea_water_salinity"])
def test_mass_fraction_refused_when_kind_unknown(tmp_path, standard_name):
    copy = _edited(tmp_path, _to_mass_fraction(standard_name))
    with pytest.raises(InvalidDataError, match=r"vosaline \(soce\): units 'kg kg-1' \(a mass fraction\).*"
                                               r"expected standard_name 'sea_water_absolute_salinity'"):
        xoceandiff.open_nemo(copy, mesh_mask=MESH)


def test_unknown_units_refused(tmp_path):
    copy = _edited(tmp_path, lambda nc: nc["votemper"].setncattr("units", "furlongs"))
    with pytest.raises(InvalidDataError, match=r"votemper \(toce\): units 'furlongs' are not understood\. "
                                               r"Accepted: \['degC', 'C',.*'K'"):
        xoceandiff.open_nemo(copy, mesh_mask=MESH)


@pytest.mark.parametrize(
    ("units", "standard_name", "kind"),
    [("g/kg", None, "absolute"), ("1e-3", None, "practical"), ("psu", None, "practical"),
     ("PSS-78", "Salinity", "practical"), ("1", None, "practical"), ("PSU", "sea_water_absolute_salinity", "absolute")],
)
def test_salinity_kind_from_the_file(tmp_path, units, standard_name, kind):
    def edit(nc):
        nc["vosaline"].units = units
        if standard_name is None:
            nc["vosaline"].delncattr("standard_name")
        else:
            nc["vosaline"].standard_name = standard_name

    ds = _open(_edited(tmp_path, edit))
    assert salinity_kind(ds) == kind
    assert ds.soce.attrs["units"] == {"practical": "1", "absolute": "g kg-1"}[kind]
    temperature = {"practical": "sea_water_potential_temperature", "absolute": "sea_water_conservative_temperature"}
    assert ds.toce.attrs["standard_name"] == temperature[kind]


# -- plausibility of the first record --------------------------------------------------------------------


def test_kelvin_labelled_celsius_refused(tmp_path):
    copy = _edited(tmp_path, lambda nc: (_to_kelvin(nc), nc["votemper"].setncattr("units", "C")))
    with pytest.raises(InvalidDataError, match=r"toce \(votemper\): the first record holds 29\d\.\d+ degC at level "
                                               r"z_c = 0 \(5 m\).*within \[-3, 40\] degC.*Kelvin: set units = 'K'"):
        xoceandiff.open_nemo(copy, mesh_mask=MESH)


def test_swapped_temperature_and_salinity_refused(tmp_path):
    def swap(nc):
        temperature, salinity = nc["votemper"][:], nc["vosaline"][:]
        nc["votemper"][:], nc["vosaline"][:] = salinity, temperature

    with pytest.raises(InvalidDataError, match=r"toce \(votemper\).*below 1000 m.*are toce and soce swapped"):
        xoceandiff.open_nemo(_edited(tmp_path, swap), mesh_mask=MESH)


def test_mass_fraction_labelled_psu_refused(tmp_path):
    copy = _edited(tmp_path, lambda nc: nc["vosaline"].__setitem__(slice(None), nc["vosaline"][:] / 1000))
    with pytest.raises(InvalidDataError, match=r"soce \(vosaline\).*at least 1 1.*mass fraction"):
        xoceandiff.open_nemo(copy, mesh_mask=MESH)


# -- the mesh mask must be the data's ------------------------------------------------------------------


def _mesh_with(tmp_path, change):
    return _edited(tmp_path, lambda nc: nc["tmask"].__setitem__(slice(None), change(nc["tmask"][:])), source=MESH)


def test_other_land_mask_refused(tmp_path):
    shifted = _mesh_with(tmp_path, lambda tmask: np.roll(tmask, 1, axis=-1))  # same shape, another land
    with pytest.raises(GridMismatchError, match=r"tmask\) of .*mesh_mask.nc' does not match the data's land.*"
                                                r"\d+ land cells of the mask hold values in votemper \(toce\), at "
                                                r"\(z_c, y_c, x_c\) = \(\d+, \d+, \d+\).*"
                                                r"ocean cells of the mask hold 0 or no value in vosaline"):
        xoceandiff.open_nemo(GRID_T, mesh_mask=shifted)


def test_one_extra_ocean_cell_refused(tmp_path):
    ocean = _ocean()
    k, j, i = np.argwhere(~ocean[:, 1:-1, 1:-1])[0] + (0, 1, 1)  # a land cell inside the basin (the bottom)

    def flood(tmask):
        tmask[0, k, j, i] = 1
        return tmask

    with pytest.raises(GridMismatchError, match=rf"1 ocean cells of the mask hold 0 or no value in vosaline "
                                                rf"\(soce\), at \(z_c, y_c, x_c\) = \({k}, {j}, {i}\)"):
        xoceandiff.open_nemo(GRID_T, mesh_mask=_mesh_with(tmp_path, flood))


# -- other NEMO generations' files, made from the same real data ---------------------------------------

# variable names and attributes as NEMO writes them: IOIPSL (3.6 and GYRE 5.0 without XIOS), XIOS
# (NEMO 3.6's field_def names, NEMO 4/5's, CMIP-style), and a restart (no attributes, nav_lev).
_GENERATIONS = {
    "xios-3.6": ({"votemper": "votemper", "vosaline": "vosaline", "sossheig": "sossheig"},
                 {"votemper": {"units": "degC", "standard_name": "sea_water_potential_temperature"},
                  "vosaline": {"units": "1e-3", "standard_name": "sea_water_salinity"},
                  "sossheig": {"units": "m", "standard_name": "sea_surface_height_above_geoid"}},
                 "365d", "practical"),
    "xios-4": ({"votemper": "toce", "vosaline": "soce", "sossheig": "ssh"},
               {"toce": {"units": "degC", "standard_name": "sea_water_potential_temperature"},
                "soce": {"units": "1e-3", "standard_name": "sea_water_practical_salinity"},
                "ssh": {"units": "m", "standard_name": "sea_surface_height_above_geoid"}},
               "360_day", "practical"),
    "xios-5-teos10": ({"votemper": "thetao", "vosaline": "so", "sossheig": "zos"},
                      {"thetao": {"units": "degC", "standard_name": "sea_water_conservative_temperature"},
                       "so": {"units": "g kg-1", "standard_name": "sea_water_reference_salinity"},
                       "zos": {"units": "m", "standard_name": "sea_surface_height_above_geoid"}},
                      "noleap", "absolute"),
}


@pytest.mark.parametrize("generation", sorted(_GENERATIONS))
def test_xios_generations(tmp_path, generation):
    names, attrs, calendar, kind = _GENERATIONS[generation]
    src = xr.open_dataset(GRID_T, decode_times=False).load().rename(names)
    for name, new in attrs.items():
        src[name].attrs.update(new)
    src["time_counter"].attrs["calendar"] = calendar
    path = tmp_path / f"{generation}_grid_T.nc"
    src.to_netcdf(path, unlimited_dims=["time_counter"])
    ds = _open(path)
    assert ds.toce.attrs["original_name"] == next(iter(attrs)) and salinity_kind(ds) == kind
    assert "original_standard_name" not in ds.toce.attrs
    np.testing.assert_array_equal(ds.toce.values, _open().toce.values)


def test_restart_file(tmp_path):
    src = xr.open_dataset(GRID_T, decode_times=False).isel(time_counter=[0]).load()
    rst = xr.Dataset({
        "tn": src.votemper.astype("float64"), "tb": src.votemper.astype("float64"),
        "sn": src.vosaline.astype("float64"), "sb": src.vosaline.astype("float64"),
        "sshn": src.sossheig.astype("float64"), "kt": ((), 1234.0),
    }).drop_vars(["nav_lon", "nav_lat", "deptht", "time_counter"]).rename_dims(deptht="nav_lev")
    for var in rst.variables.values():
        var.attrs, var.encoding = {}, {}
    rst.to_netcdf(tmp_path / "GYRE_00001234_restart.nc", unlimited_dims=["time_counter"])
    ds = _open(tmp_path / "GYRE_00001234_restart.nc")
    assert ds.toce.attrs["original_name"] == "tn" and ds.sizes["t"] == 1
    np.testing.assert_array_equal(ds.soce.values, _open().soce.isel(t=[0]).values.astype("float64"))
    # a restart says nothing about its salinity: taken as absolute (NEMO's default), and said so
    assert salinity_kind(ds) == "absolute" and "sn: neither a salinity standard name nor units" in ds.attrs["history"]


# -- the full shared files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_gyre():
    if not FULL_GRID_T.is_file():
        pytest.skip(f"the real GYRE output is not at {SHARED} (../shared/data/gyre beside the checkout)")
    start = time.perf_counter()
    ds = _open(FULL_GRID_T, SHARED / "mesh_mask.nc")
    return ds, time.perf_counter() - start


def test_full_gyre_opens_quietly_and_lazily(full_gyre):
    ds, seconds = full_gyre
    assert seconds < 30  # about 0.3 s on a quiet machine: metadata and one record
    assert ds.sizes["t"] == 576 and set(ds.toce.chunks[0]) == {12}  # the file's stored chunks
    assert isinstance(ds.toce.data, dask.array.Array)
    assert [str(ds.t.values[i]) for i in (0, -1)] == ["0051-01-03 12:00:00", "0058-12-28 12:00:00"]
    assert isinstance(ds.t.values[-1], cftime.Datetime360Day)
    assert salinity_kind(ds) == "practical" and ds.soce.attrs["units"] == "1"
    assert ds.toce.attrs["standard_name"] == "sea_water_potential_temperature"


def test_full_gyre_last_record(full_gyre):
    ds, _ = full_gyre
    last = ds.isel(t=-1).compute()
    ocean = last.tmask.values
    assert np.isnan(last.toce.values[~ocean]).all() and np.isfinite(last.toce.values[ocean]).all()
    assert 30 < float(last.soce.min()) and float(last.soce.max()) < 40
    assert 0 < float(last.toce.min()) and float(last.toce.max()) < 30
