"""The scripts in examples/ run, in their tiny settings, and print or write what they promise.

Each runs in a subprocess (as a user would run it) with ``XOCEANDIFF_EXAMPLE_TINY=1`` and
``OMP_NUM_THREADS=1``, in a temporary working directory.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xoceandiff

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, cwd: Path, *args: str) -> str:
    env = dict(os.environ, XOCEANDIFF_EXAMPLE_TINY="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name}.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*(-?[0-9.]+(?:e[-+]?[0-9]+)?)", text)
    assert match, f"no number after {label!r} in:\n{text}"
    return float(match.group(1))


def test_every_example_is_tested_and_documented():
    names = {path.stem for path in EXAMPLES.glob("*.py")}
    tested = {"open_nemo_files", "train_model", "sample_with_constraints", "dask_cluster", "restarts",
              "diagnostics_report", "gyre_run"}
    assert names == tested
    for name in names:
        tree = ast.parse((EXAMPLES / f"{name}.py").read_text())
        assert ast.get_docstring(tree), f"{name}.py has no docstring"
        mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        assert mains and [a.arg for a in mains[0].args.args] == ["tiny"], f"{name}.py: expected main(tiny)"


def test_open_nemo_files(tmp_path):
    out = run_example("open_nemo_files", tmp_path)
    assert number_after("ocean cells per level:", out) == 753  # the 4-degree DINO-like grid
    assert "read from 'toce_inst'" in out
    assert "give the same dataset: True" in out


def test_train_model(tmp_path):
    out = run_example("train_model", tmp_path)
    assert "first call: stopped at step 3 of 6" in out
    assert number_after("steps_done:", out) == 6
    assert 0 < number_after("final loss:", out) < 10
    checkpoint = tmp_path / "example_outputs" / "train_model" / "model"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "config.json").is_file()


def gsw_density_error_percent(ds: xr.Dataset) -> np.ndarray:
    """The paper's density errors per record, recomputed with gsw's full TEOS-10 and numpy.

    Independent of xoceandiff's diagnostics (which use NEMO's polynomial TEOS-10 through xarray): the
    volume of the deeper ocean cell of every interface where sigma0 decreases downward, in % of the
    ocean volume.
    """
    gsw = pytest.importorskip("gsw")
    ds = ds.compute()
    spatial = ("z_c", "y_c", "x_c")
    ocean = ds.tmask.transpose(*spatial).values.astype(bool)
    volume = ds.e3t.transpose(*spatial).values * (ds.e1t * ds.e2t).transpose(*spatial[1:]).values * ocean
    sigma0 = gsw.sigma0(ds.soce.transpose(..., *spatial).values, ds.toce.transpose(..., *spatial).values)
    unstable = (np.diff(sigma0, axis=1) < 0) & ocean[1:] & ocean[:-1]
    return 100.0 * (unstable * volume[1:]).sum(axis=(1, 2, 3)) / volume.sum()


def test_sample_with_constraints(tmp_path):
    out = run_example("sample_with_constraints", tmp_path)
    labels = ("no constraint", "zero_mean + border_zero_gradient", "... + stable_stratification")
    printed = {label: number_after(label, out) for label in ("training data", *labels)}
    # Oracle: the same data and unconstrained samples (seed 0, as in the example, tiny settings),
    # their density errors recomputed with gsw. The two equations of state disagree on a few marginal
    # interfaces only; one cell of the 4-degree grid is ~0.004 % of the ocean volume.
    from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model

    data = xoceandiff.datasets.dino(n=8, resolution=BUNDLED_RESOLUTION, seed=0)
    samples = data.oceandiff.sample(2, [], model=bundled_model(), sampler="ddim", steps=20, seed=0, progress=False)
    assert printed["training data"] == pytest.approx(gsw_density_error_percent(data).mean(), abs=2e-3)
    expected = gsw_density_error_percent(samples).mean()
    assert expected > 0.05  # the unconstrained samples do have density errors to remove
    assert printed["no constraint"] == pytest.approx(expected, abs=5e-3)
    # what the example shows: each added constraint removes density errors
    assert printed[labels[0]] > printed[labels[1]] > printed[labels[2]]
    assert re.search(r"zero_mean \+ border_zero_gradient\s+non-finite ocean values: 0", out)
    assert number_after("max |difference| =", out) < 1e-2  # sample 0 does not depend on n


def test_dask_cluster(tmp_path):
    out = run_example("dask_cluster", tmp_path)
    assert "toce chunks along 'sample': (2, 2)" in out
    with xr.open_dataset(tmp_path / "example_outputs" / "dask_cluster" / "samples.nc") as samples:
        assert samples.sizes["sample"] == 4
        assert samples.attrs["constraints"] == "zero_mean, border_zero_gradient"


def test_restarts(tmp_path):
    out = run_example("restarts", tmp_path)
    assert "restart_s000_xoceandiff.nc: 0 problems" in out
    assert "restart_s001_xoceandiff.nc: 0 problems" in out
    assert "NEMO 5.0: restart_s000_xoceandiff.nc: 0 problems" in out
    assert number_after("plain xarray file:", out) > 0
    assert "nn_it000        = 1" in out
    folder = tmp_path / "example_outputs" / "restarts"
    assert (folder / "nemo42" / "namelist_restart.txt").is_file()
    assert (folder / "initial_state" / "initial_s000_temperature_nomask.nc").is_file()


def test_diagnostics_report(tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("diagnostics_report", tmp_path)
    assert "| Data | 4 |" in out
    folder = tmp_path / "example_outputs" / "diagnostics_report"
    assert "Density errors" in (folder / "report" / "table.md").read_text()
    assert "5 figures:" in out
    assert len(list((folder / "figures").glob("*.png"))) == 5


def test_gyre_run(tmp_path):
    fixture = Path(__file__).resolve().parent / "data" / "gyre"
    out = run_example("gyre_run", tmp_path, str(fixture))
    assert "soce is sea_water_practical_salinity (units '1'), toce is sea_water_potential_temperature" in out
    assert "the card: salinity practical, grid (31, 22, 32)" in out
    assert "density errors with eos='eos80-poly'" in out
    assert "check_restart problems: 0" in out
    assert len(list((tmp_path / "example_outputs" / "gyre" / "restarts").glob("restart_s*.nc"))) == 2
