"""to_netcdf: CF-1.11 compliance (IOOS checker), attributes, chunked compressed writing, atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import dask
import dask.array as dsa
import netCDF4
import numpy as np
import pytest
import xarray as xr
from compliance_checker.base import BaseCheck
from compliance_checker.runner import CheckSuite
from dask.delayed import Delayed

import xoceandiff
from xoceandiff.conventions import PAPER_REFERENCE
from xoceandiff.errors import OutputExistsError
from xoceandiff.io import FILL_VALUE, atomic_path, cf_dataset, remove_stale_parts, to_netcdf

pytestmark = pytest.mark.filterwarnings("ignore:The ioos_sos checker is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def training():
    return xoceandiff.datasets.dino(n=4, resolution=4.0, seed=1, chunks=2)


def _as_samples(ds):
    """A fake sample set: the training data along `sample`, with what sampling records."""
    samples = ds.rename(t="sample").drop_vars("sample").assign_coords(sample=np.arange(ds.sizes["t"]))
    samples.attrs = {
        "Iperio": 1,
        "history": "2025-01-01T00:00:00Z an earlier step",
        "checkpoint_sha256": "0123abcd" * 8,
        "sampler": "ddpm",
        "sampling_steps": 1000,
        "constraints": "none",
        "seed": 0,
    }
    return samples


@pytest.fixture(scope="module")
def samples(training):
    return _as_samples(training)


def _folder_listing(folder):
    return sorted(p.name for p in folder.iterdir())


def cf_results(path):
    """Results of the IOOS compliance checker (cf:1.11) that did not pass."""
    suite = CheckSuite()
    suite.load_all_available_checkers()
    ds = suite.load_dataset(str(path))
    try:
        raw, errors = suite.run_all(ds, ["cf:1.11"], skip_checks=[])["cf:1.11"]
    finally:
        ds.close()
    assert not errors, errors
    return [r for r in raw if r.value[0] < r.value[1]]


@pytest.mark.parametrize("kind", ["training", "samples"])
def test_cf_checker_finds_no_high_priority_failure(kind, training, samples, tmp_path):
    path = to_netcdf(training if kind == "training" else samples, tmp_path / f"{kind}.nc")
    failures = cf_results(path)
    assert not [(r.name, r.msgs) for r in failures if r.weight == BaseCheck.HIGH]
    # The only remark left is the checker's note on curvilinear grids: the index dimensions (y_c, x_c)
    # of 2-D longitude/latitude are "auxiliary" and not recognised as Y, X in the order check.
    assert {r.name for r in failures} <= {"§2.4 Dimensions"}
    for result in failures:
        assert all("(A)" in msg for msg in result.msgs)


def test_cf_attributes_and_values(samples, tmp_path):
    path = to_netcdf(samples, tmp_path / "samples.nc")
    expected = samples.compute()
    with netCDF4.Dataset(path) as nc:
        assert nc.Conventions == "CF-1.11"
        assert nc.title
        assert f"xoceandiff {xoceandiff.__version__}" in nc.source and "0123abcd" * 8 in nc.source
        history = nc.history.splitlines()
        assert "xoceandiff.io.to_netcdf" in history[0] and history[1] == "2025-01-01T00:00:00Z an earlier step"
        assert PAPER_REFERENCE in nc.references
        assert nc.sampler == "ddpm"
        for name in ("toce", "soce", "ssh"):
            var = nc[name]
            assert {"standard_name", "units", "long_name", "_FillValue"} <= set(var.ncattrs())
            assert set(var.coordinates.split()) == {"glamt", "gphit"}
            assert var.filters()["zlib"] and var.filters()["shuffle"]
            assert var.chunking() == [c[0] for c in samples[name].chunks]
        assert nc["toce"].dimensions == ("sample", "depth", "y_c", "x_c")
        assert nc["glamt"].standard_name == "longitude" and nc["gphit"].standard_name == "latitude"
        depth = nc["depth"]
        assert depth.dimensions == ("depth",) and depth.positive == "down" and depth.axis == "Z"
        assert depth.standard_name == "depth" and depth.units == "m"
        np.testing.assert_array_equal(depth[:], samples.gdept_1d.values)
        assert nc["sample"].units == "1" and nc["sample"].long_name
        for helper in ("tmask", "umask", "vmask", "x_f", "y_f", "z_f", "e1u", "z_c", "x_c", "gdept_1d"):
            assert helper not in nc.variables
        # land is the _FillValue, ocean the values themselves
        nc.set_auto_mask(False)
        raw = nc["toce"][:]
        assert nc["toce"]._FillValue == np.float32(FILL_VALUE)
    ocean = samples.tmask.values
    assert np.all(raw[:, ~ocean] == np.float32(FILL_VALUE))
    np.testing.assert_array_equal(raw[:, ocean], expected.toce.values[:, ocean])
    with netCDF4.Dataset(path) as nc:  # masked reading gives the land back as missing
        assert np.ma.getmaskarray(nc["toce"][:])[:, ~ocean].all()


def test_training_data_time_and_cell_measures(training, tmp_path):
    path = to_netcdf(training, tmp_path / "training.nc")
    with netCDF4.Dataset(path) as nc:
        assert nc["t"].standard_name == "time" and nc["t"].axis == "T" and "since" in nc["t"].units
        assert "_FillValue" not in nc["t"].ncattrs() and "_FillValue" not in nc["depth"].ncattrs()
        assert nc["toce"].cell_measures == "volume: cell_volume" and nc["ssh"].cell_measures == "area: cell_area"
        np.testing.assert_allclose(nc["cell_area"][:], (training.e1t * training.e2t).values)
        assert nc.source.startswith(f"xoceandiff {xoceandiff.__version__}")
        assert nc.history.count("\n") == 0


def test_cf_dataset_stays_lazy(training, compute_counter, tmp_path):
    cf = cf_dataset(training)
    delayed = to_netcdf(training, tmp_path / "folder" / "x.nc", compute=False)
    assert compute_counter.count == 0
    assert _folder_listing(tmp_path) == []  # not even the folder yet
    assert isinstance(cf.toce.data, dsa.Array) and isinstance(delayed, Delayed)


def test_overwrite_refused(training, tmp_path):
    path = to_netcdf(training, tmp_path / "a.nc")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        to_netcdf(training, path)
    with pytest.raises(OutputExistsError):
        to_netcdf(training, path, compute=False)
    assert path.read_bytes() == before
    assert _folder_listing(tmp_path) == ["a.nc"]
    to_netcdf(training.isel(t=[0]), path, overwrite=True)
    with netCDF4.Dataset(path) as nc:
        assert nc.dimensions["t"].size == 1


def test_compute_false_writes_only_when_computed(samples, tmp_path):
    path = tmp_path / "later.nc"
    delayed = to_netcdf(samples, path, compute=False)
    assert isinstance(delayed, Delayed)
    assert _folder_listing(tmp_path) == []  # nothing touched yet, not even a temporary file
    assert delayed.compute() == path
    assert _folder_listing(tmp_path) == ["later.nc"]
    with netCDF4.Dataset(path) as nc:
        assert nc.dimensions["sample"].size == samples.sizes["sample"]


def _meta(da):
    """An empty array of the right type: map_blocks then never calls the function to guess it."""
    return np.empty((0,) * da.ndim, dtype=da.dtype)


def _failing(ds, bad_block: int):
    def boom(block, block_info=None):
        if block_info[0]["chunk-location"][0] == bad_block:
            raise RuntimeError("chunk computation failed")
        return block

    return ds.assign(toce=ds.toce.copy(data=ds.toce.data.map_blocks(boom, meta=_meta(ds.toce))))


@pytest.mark.parametrize("compute", [True, False])
def test_error_inside_a_chunk_leaves_nothing(training, tmp_path, compute):
    bad = _failing(training, bad_block=1)
    path = tmp_path / "broken.nc"
    with pytest.raises(RuntimeError, match="chunk computation failed"):
        result = to_netcdf(bad, path, compute=compute)
        if not compute:
            result.compute()
    assert not path.exists()
    assert _folder_listing(tmp_path) == []


def test_error_leaves_the_existing_file_alone(training, tmp_path):
    path = to_netcdf(training, tmp_path / "keep.nc")
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        to_netcdf(_failing(training, bad_block=0), path, overwrite=True)
    assert path.read_bytes() == before
    assert _folder_listing(tmp_path) == ["keep.nc"]


def test_written_chunk_by_chunk(training, tmp_path):
    calls = []

    def record(block, block_info=None):
        calls.append(block_info[0]["chunk-location"])
        return block

    ds = training.assign(toce=training.toce.copy(data=training.toce.data.map_blocks(record, meta=_meta(training.toce))))
    with dask.config.set(scheduler="synchronous"):
        to_netcdf(ds, tmp_path / "chunks.nc")
    assert sorted(calls) == sorted(set(calls))  # each chunk computed once
    assert len(calls) == training.toce.data.npartitions


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time, pathlib
    import numpy as np
    import xoceandiff
    from xoceandiff.io import to_netcdf

    marker = pathlib.Path(sys.argv[2])
    ds = xoceandiff.datasets.dino(n=4, resolution=4.0, chunks=2)

    def slow(block, block_info=None):
        marker.write_text("writing")
        time.sleep(60)
        return block

    meta = np.empty((0, 0, 0, 0), dtype="float32")
    ds = ds.assign(toce=ds.toce.copy(data=ds.toce.data.map_blocks(slow, meta=meta)))
    to_netcdf(ds, sys.argv[1])
    """
)


def test_kill_leaves_nothing_at_path_and_next_write_cleans_up(training, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = out / "killed.nc"
    marker = tmp_path / "started"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 25
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the writer did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not path.exists()
    leftovers = _folder_listing(out)
    assert leftovers  # the killed writer could not clean up its temporary file
    assert all(name.startswith(".killed.nc.") and name.endswith(".part") for name in leftovers)
    # the writer is dead: its temporary file is removed by the next write to the same path
    assert len(remove_stale_parts(path)) == len(leftovers)
    to_netcdf(training, path)
    assert _folder_listing(out) == ["killed.nc"]


def test_atomic_path_cleans_up_on_interrupt(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert _folder_listing(tmp_path) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    with pytest.raises(OutputExistsError), atomic_path(target):
        pass


def test_user_encoding_is_merged(training, tmp_path):
    path = to_netcdf(training, tmp_path / "enc.nc", encoding={"toce": {"complevel": 9}})
    with netCDF4.Dataset(path) as nc:
        assert nc["toce"].filters()["complevel"] == 9 and nc["soce"].filters()["complevel"] == 4


def test_practical_salinity_is_written_as_such(tmp_path):
    """An EOS-80 run's salinity keeps its name and its (dimensionless) units in the CF file."""
    ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    ds["soce"] = ds.soce.assign_attrs(standard_name="sea_water_practical_salinity", units="1")
    with xr.open_dataset(to_netcdf(ds, tmp_path / "practical.nc")) as written:
        assert written.soce.attrs["standard_name"] == "sea_water_practical_salinity"
        assert written.soce.attrs["units"] == "1"
        assert written.toce.attrs["standard_name"] == "sea_water_potential_temperature"
