"""The command line, as a user runs it: demo, sample, diagnose, restart."""

from __future__ import annotations

import json
import os
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


def test_sample_diagnose_restart(checkpoint, tmp_path, capsys):
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
    assert main(["restart", str(samples), "--mesh-mask", mesh, "--out", str(restarts)]) == 0
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


def test_sample_without_data_needs_a_dino_trained_checkpoint(tmp_path, capsys):
    """Without --data the grid comes from the dataset the checkpoint records; none recorded: a clear error."""
    data = xoceandiff.datasets.dino(n=4, resolution=4.0, seed=1)
    data.attrs = {}  # as if opened from NEMO files: no DINO provenance
    train(data, "tiny", steps=1, batch_size=2, progress=False, checkpoint_dir=tmp_path / "run")
    code = main(["sample", "--checkpoint", str(tmp_path / "run" / MODEL_SUBDIR), "--n", "1", "--chunks", "1",
                 "--steps", "1", "--out", str(tmp_path / "x.nc")])
    err = capsys.readouterr().err
    assert code == 2 and "dino_resolution" in err and "--mesh-mask" in err
    assert not (tmp_path / "x.nc").exists()


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
    """The README's first command, on tiny settings, in a subprocess as a user would run it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "xoceandiff.cli", "demo", "--out", str(tmp_path / "demo"), "--n", "2", "--steps", "5",
         "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "demo"
    assert (out / "samples_constrained.nc").exists() and (out / "samples_unconstrained.nc").exists()
    assert len(list((out / "restarts").glob("restart_*.nc"))) == 2
    assert len(list((out / "figures").glob("*.png"))) == 5
    assert "| Data | 200 |" in result.stdout and "quality of the samples 'Constraint'" in result.stdout
    with netCDF4.Dataset(out / "samples_constrained.nc") as nc:
        toce = nc["toce"][:]
        assert np.isfinite(toce.compressed()).all()
