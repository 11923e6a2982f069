"""Real NEMO output end to end: GYRE (NEMO 5.0, IOIPSL, EOS-80) from files to restarts NEMO can read.

The fixture (tests/data/gyre: four records cut from the shared run) always runs; the full command-line
run on ../shared/data/gyre is slow and skips where that folder is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pytest

import xoceandiff
from xoceandiff.restart import to_restart
from xoceandiff.restart_check import check_restart

FIXTURE = Path(__file__).parent / "data" / "gyre"
GRID_T = FIXTURE / "GYRE_5d_00510101_00510120_grid_T.nc"
MESH = FIXTURE / "mesh_mask.nc"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gyre"
FULL_GRID_T = SHARED / "GYRE_5d_00510101_00581230_grid_T.nc"


def test_records_of_a_real_run_become_restarts_with_practical_salinity(tmp_path):
    """NEMO's own states, written back as NEMO 5.0 restarts: values unchanged, salinity kind stated."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the normal path is quiet
        ds = xoceandiff.open_nemo(GRID_T, mesh_mask=MESH)
    states = ds.isel(t=[0, 1]).rename(t="sample")
    paths = to_restart(states, tmp_path, mesh_mask=MESH, rdt=14400.0, ndastp=590101)
    grid = xoceandiff.nemo.open_grid(MESH)
    ocean = grid.tmask.values
    for index, path in enumerate(paths):
        assert check_restart(path, grid) == []
        with netCDF4.Dataset(path) as nc:
            assert nc.getncattr("nemo_version") == "5.0" and nc.getncattr("salinity") == "practical"
            assert nc["sn"].getncattr("standard_name") == "sea_water_practical_salinity"
            assert float(nc["rdt"][:]) == 14400.0
            sn = np.asarray(nc["sn"][0])
        # oracle: NEMO's file itself, read with netCDF4 (land 0 there and here)
        with netCDF4.Dataset(GRID_T) as raw:
            original = np.asarray(raw["vosaline"][index], dtype=np.float64)
        np.testing.assert_allclose(sn[ocean], original[ocean], rtol=0, atol=1e-5)
        assert np.all(sn[~ocean] == 0)


@pytest.mark.slow
def test_gyre_from_the_command_line_open_train_sample_diagnose_restart(tmp_path):
    if not FULL_GRID_T.exists():
        pytest.skip(f"the real GYRE output is not at {SHARED} (../shared/data/gyre beside the checkout)")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "default"}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "xoceandiff.cli", *args], capture_output=True, text=True,
                              env=env, timeout=900)
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr  # no warning printed on the normal path
        return done

    mesh = str(SHARED / "mesh_mask.nc")
    run("train", "--data", str(FULL_GRID_T), "--mesh-mask", mesh, "--out", str(tmp_path / "run"), "--steps", "300",
        "--preset", "medium", "--levels", "all", "--background", "--prediction-type", "sample", "--lr", "1e-3",
        "--ema-decay", "0.999", "--seed", "0", "--no-progress")
    samples = tmp_path / "samples.nc"
    run("sample", "--checkpoint", str(tmp_path / "run" / "model"), "--n", "4", "--chunks", "2", "--constraints",
        "zero_mean", "border_zero_gradient", "--out", str(samples))  # no data file: the checkpoint's grid
    report = run("diagnose", str(samples), "--reference", str(FULL_GRID_T), "--mesh-mask", mesh, "--out",
                 str(tmp_path / "report"), "--no-figures")
    assert "eos='eos80-poly'" in report.stdout
    run("restart", str(samples), "--mesh-mask", mesh, "--out", str(tmp_path / "restarts"), "--rdt", "14400",
        "--date", "00590101")
    grid = xoceandiff.nemo.open_grid(mesh)
    paths = sorted((tmp_path / "restarts").glob("restart_s*.nc"))
    assert len(paths) == 4
    for path in paths:
        assert check_restart(path, grid) == []
        with netCDF4.Dataset(path) as nc:
            assert nc["sn"].getncattr("standard_name") == "sea_water_practical_salinity"


def test_border_zero_gradient_keeps_true_gyre_states_as_stable_as_they_are():
    """True GYRE states through the boundary rule about the bundled model's background: copying the neighbour's
    anomaly alone makes the boundary columns unstable (tens of times the data's convective-adjustment distance in
    the top 200 m); the constraint's last step (finish) rebuilds them, back to the data's own distance, while the
    boundary columns the rule left stable keep its values bit for bit."""
    import torch

    from xoceandiff.constraints import BorderZeroGradient, ConstraintContext
    from xoceandiff.convection import adjustment_distance
    from xoceandiff.layout import from_tensor, to_tensor
    from xoceandiff.normalisation import normalise
    from xoceandiff.pretrained import bundled_model

    model = bundled_model(config="gyre")
    card = model.card
    data = xoceandiff.open_nemo(GRID_T, mesh_mask=MESH).load()
    x = to_tensor(normalise(data[list(card.fields)], card.normaliser), card.layout, dim="t")
    ctx = ConstraintContext.from_model(card.grid, card.layout, card.normaliser, salinity=card.salinity,
                                       background=model.space_offset)
    rule = BorderZeroGradient()
    copied, finished = rule(x, 0, ctx), rule.finish(x, ctx)

    def top_distance(tensor: torch.Tensor) -> float:
        states = from_tensor(tensor, card.layout, card.grid, dim="sample", normaliser=card.normaliser)
        # GYRE is EOS-80 (the model card's practical salinity): the rule's own equation of state
        return float(adjustment_distance(states, eos="eos80-poly")["convective_distance_toce_0-200m"].max())

    truth, after_rule, after_finish = top_distance(x), top_distance(copied), top_distance(finished)
    assert after_rule > 10 * truth  # the plain anomaly copy
    assert after_finish < 1.5 * truth + 1e-5
    # columns the rule left stable are the rule's output exactly; interior cells are never touched
    boundary = (ctx.ops.boundary_x | ctx.ops.boundary_y)
    assert torch.equal(finished * ~boundary, copied * ~boundary)
    changed = (finished != copied).any(dim=1)  # (records, H, W)
    assert 0 < int(changed.sum()) < int(boundary.any(0).sum()) * x.shape[0]
