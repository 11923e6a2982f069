"""The command line, as a user runs it: demo, sample, diagnose, restart."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys

import netCDF4
import numpy as np
import pytest

import xoceandiff
from xoceandiff.cli import main
from xoceandiff.model import CONFIG_FILE
from xoceandiff.restart import check_restart
from xoceandiff.training import MODEL_SUBDIR, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    data = xoceandiff.datasets.dino(n=8, resolution=4.0, seed=1)
    train(data, "tiny", steps=2, batch_size=4, progress=False, checkpoint_dir=folder)
    return folder / MODEL_SUBDIR


def test_help_for_every_subcommand(capsys):
    for command in ("demo", "train", "sample", "diagnose", "restart"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: xoceandiff " + command in capsys.readouterr().out


def test_sample_diagnose_restart(checkpoint, dino_samples, tmp_path, capsys):
    samples = tmp_path / "samples.nc"
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "3", "--chunks", "2", "--constraints", "zero_mean",
                 "border_zero_gradient", "--steps", "3", "--out", str(samples)]) == 0
    with netCDF4.Dataset(samples) as nc:
        assert nc.dimensions["sample"].size == 3 and nc.Conventions == "CF-1.11"
        assert "zero_mean, border_zero_gradient" in nc.constraints
    # an existing output is refused with a clear message and exit code 2
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "3", "--chunks", "2", "--out", str(samples)]) == 2
    assert "overwrite" in capsys.readouterr().err

    report = tmp_path / "report"
    assert main(["diagnose", f"Constraint={samples}", "--dino-n", "10", "--out", str(report), "--no-figures"]) == 0
    table = (report / "table.md").read_text()
    assert "| Constraint | 3 |" in table and "Density errors" in table
    header = (report / "metrics.csv").read_text().splitlines()[0]
    assert "check_density" in header and "BWbox_toce" in header

    mesh = xoceandiff.datasets.dino(n=1, resolution=4.0).oceandiff.to_nemo_files(tmp_path / "grid")["mesh_mask"]
    restarts = tmp_path / "restarts"
    # a model trained 2 steps, sampled in 3: no ocean NEMO should start from, and refused as such
    assert main(["restart", str(samples), "--mesh-mask", mesh, "--out", str(restarts)]) == 2
    assert re.search(r"(toce|soce|ssh)(: units| of sample \d)", capsys.readouterr().err)
    assert not restarts.exists()
    assert main(["restart", str(dino_samples), "--mesh-mask", mesh, "--out", str(restarts)]) == 0
    files = sorted(restarts.glob("*.nc"))
    assert len(files) == 3 and (restarts / "namelist_restart.txt").exists()
    assert check_restart(files[0], mesh) == []


def test_train_records_the_command_given_to_main(tmp_path, monkeypatch):
    """The training record holds main(argv)'s arguments, quoted, whatever the process's own sys.argv is."""
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests/test_cli.py"])
    out = tmp_path / "run with space"
    argv = ["train", "--data", "dino", "--dino-n", "4", "--dino-resolution", "4", "--steps", "1", "--preset", "tiny",
            "--batch-size", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    training = json.loads((out / MODEL_SUBDIR / CONFIG_FILE).read_text())["metadata"]["training"]
    assert training["command"] == "xoceandiff " + " ".join(shlex.quote(a) for a in argv)
    assert shlex.split(training["command"]) == ["xoceandiff", *argv]


def test_sample_without_data_on_a_checkpoint_without_grid_needs_a_mesh_mask(tmp_path, capsys):
    """Without --data the grid comes from the checkpoint (or, for older ones, the dataset it records); neither: an error."""
    data = xoceandiff.datasets.dino(n=4, resolution=4.0, seed=1)
    data.attrs = {}  # as if opened from NEMO files: no DINO provenance
    model = train(data, "tiny", steps=1, batch_size=2, progress=False)
    model.card = dataclasses.replace(model.card, grid_kit=None)  # a checkpoint written before models kept their grid
    model.save(tmp_path / "old")
    args = ["sample", "--checkpoint", str(tmp_path / "old"), "--n", "1", "--chunks", "1", "--steps", "1"]
    code = main([*args, "--out", str(tmp_path / "x.nc")])
    err = capsys.readouterr().err
    assert code == 2 and "dino_resolution" in err and "--mesh-mask" in err
    assert not (tmp_path / "x.nc").exists()
    # --mesh-mask alone is enough
    mesh = data.oceandiff.to_nemo_files(tmp_path / "nemo")["mesh_mask"]
    assert main([*args, "--mesh-mask", mesh, "--out", str(tmp_path / "y.nc")]) == 0
    assert (tmp_path / "y.nc").exists()


def test_diagnose_refuses_samples_off_the_dino_grids(tmp_path, capsys):
    samples = xoceandiff.datasets.dino(n=2, resolution=4.0).isel(x_c=slice(0, 10))
    path = samples.oceandiff.to_netcdf(tmp_path / "cut.nc")
    assert main(["diagnose", str(path), "--dino-n", "2", "--out", str(tmp_path / "report"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert "DINO-like grid" in err and "--reference FILES --mesh-mask FILE" in err


def test_errors_exit_cleanly(tmp_path, capsys):
    code = main(["sample", "--checkpoint", str(tmp_path / "missing"), "--n", "2", "--chunks", "1", "--out",
                 str(tmp_path / "x.nc")])
    assert code == 2 and "error" in capsys.readouterr().err


def test_demo_end_to_end(tmp_path):
    """The README's first command, on tiny settings, in a subprocess as a user would run it (no --out: the
    default folder in the working directory)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "xoceandiff.cli", "demo", "--n", "2", "--steps", "5", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "xoceandiff-demo"
    assert (out / "samples_constrained.nc").exists() and (out / "samples_unconstrained.nc").exists()
    assert len(list((out / "restarts").glob("restart_*.nc"))) == 2
    assert len(list((out / "figures").glob("*.png"))) == 5
    assert "| Data | 200 |" in result.stdout and "quality of the samples 'Constraint'" in result.stdout
    with netCDF4.Dataset(out / "samples_constrained.nc") as nc:
        toce = nc["toce"][:]
        assert np.isfinite(toce.compressed()).all()


def test_demo_refuses_to_replace_its_default_folder(tmp_path, monkeypatch, capsys):
    """Without --out the demo checks its default folder of the config, before loading anything."""
    monkeypatch.chdir(tmp_path)
    for config, folder in (("dino", "xoceandiff-demo"), ("gyre", "xoceandiff-demo-gyre")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "samples_unconstrained.nc").write_bytes(b"")
        assert main(["demo", "--config", config]) == 2
        err = capsys.readouterr().err
        assert f"'{folder}/samples_unconstrained.nc' exists" in err and "--overwrite" in err


@pytest.fixture(scope="module")
def dino_samples(tmp_path_factory):
    """A small samples file on the 4 degree DINO-like grid, as `xoceandiff sample` writes one."""
    states = xoceandiff.datasets.dino(n=3, resolution=4.0, seed=2)
    samples = states.rename(t="sample").drop_vars("sample", errors="ignore").assign_coords(sample=np.arange(3))
    return samples.oceandiff.to_netcdf(tmp_path_factory.mktemp("samples") / "samples.nc")


def test_restart_options_for_the_run(dino_samples, tmp_path, capsys):
    namelist = tmp_path / "namelist_cfg"
    namelist.write_text("&namrun\n   nn_date0 = 00510101   ! GYRE, year 51\n/\n&namdom\n   rn_Dt = 14400.\n/\n")
    out = tmp_path / "from_namelist"
    assert main(["restart", str(dino_samples), "--out", str(out), "--namelist", str(namelist)]) == 0
    printed = capsys.readouterr().out
    assert "NEMO version 5.0: default" in printed and "rdt = 14400 s: namelist" in printed
    files = sorted(out.glob("*.nc"))
    with netCDF4.Dataset(files[0]) as nc:
        assert float(nc["rdt"][...]) == 14400.0 and float(nc["ndastp"][...]) == 510101 and "tb" not in nc.variables
    assert check_restart(files[0], xoceandiff.datasets.dino(n=1, resolution=4.0)) == []

    out = tmp_path / "explicit"
    assert main(["restart", str(dino_samples), "--out", str(out), "--namelist", str(namelist), "--rdt", "7200",
                 "--date", "19800101", "--nemo-version", "4.2", "--kt", "10"]) == 0
    with netCDF4.Dataset(sorted(out.glob("*.nc"))[0]) as nc:
        assert float(nc["rdt"][...]) == 7200.0 and float(nc["ndastp"][...]) == 19800101 and "tb" in nc.variables
        assert float(nc["kt"][...]) == 10
    text = (out / "namelist_restart.txt").read_text()
    assert "! NEMO version 4.2: given" in text and "nn_it000        = 11" in text
    with pytest.raises(SystemExit):
        main(["restart", str(dino_samples), "--out", str(tmp_path / "x"), "--date", "1980-01-01"])
    assert "expected a date YYYYMMDD" in capsys.readouterr().err


def test_restart_refuses_implausible_samples(dino_samples, tmp_path, capsys):
    import xarray as xr

    with xr.open_dataset(dino_samples) as raw:
        kelvin = raw.load()
    kelvin["toce"] = (kelvin.toce + 273.15).assign_attrs(units="K")
    path = tmp_path / "kelvin.nc"
    kelvin.to_netcdf(path)
    assert main(["restart", str(path), "--out", str(tmp_path / "restarts")]) == 2
    err = capsys.readouterr().err
    assert "toce: units 'K' where a restart needs degC" in err
    assert not (tmp_path / "restarts").exists()


def test_diagnose_prints_no_warning(dino_samples, tmp_path):
    """The normal path: a DINO reference of 100 records in 10 chunks, sample files; no warning at all."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["diagnose", str(dino_samples), "--dino-n", "100", "--out", str(tmp_path / "report"),
                     "--no-figures"]) == 0


def test_diagnose_with_an_xios_reference(dino_samples, tmp_path):
    """Reference files carrying XIOS's time_centered coordinate (absent from the samples) concatenate."""
    import xarray as xr

    files = xoceandiff.datasets.dino(n=3, resolution=4.0).oceandiff.to_nemo_files(tmp_path / "nemo")
    reference = []
    for key in ("grid_T_3D", "grid_T_2D"):
        with xr.open_dataset(files[key]) as raw:
            ds = raw.load()
        ds = ds.assign_coords(time_centered=("time_counter", ds.time_counter.values, {"long_name": "Time axis"}))
        target = tmp_path / f"xios_{key}.nc"
        ds.to_netcdf(target)
        reference.append(str(target))
    reference_ds = xoceandiff.open_nemo(reference, mesh_mask=files["mesh_mask"])
    assert "time_centered" in reference_ds.coords  # what made xr.concat raise in report()
    assert main(["diagnose", str(dino_samples), "--reference", *reference, "--mesh-mask", files["mesh_mask"],
                 "--out", str(tmp_path / "report"), "--no-figures"]) == 0
    assert "| samples | 3 |" in (tmp_path / "report" / "table.md").read_text()
