"""HPC for real: a local single-node SLURM runs an ensemble's job array and dask-jobqueue workers.

The cluster is the one ``.ci/slurm-up`` starts (Debian's slurm-wlm: munge, slurmctld, slurmd). Where SLURM is
not running and cannot be started here (not root, no slurm-wlm), the tests skip and say why; CI sets
``XOCEANDIFF_REQUIRE_SLURM=1`` so that they fail instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.ensemble import make_ensemble
from xoceandiff.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
GYRE = Path(__file__).parent / "data" / "gyre"
MESH = GYRE / "mesh_mask.nc"
STANDIN = Path(__file__).parent / "standin" / "nemo_standin.py"


def _answers(conf: str | None) -> bool:
    if shutil.which("sinfo") is None:
        return False
    env = dict(os.environ, **({"SLURM_CONF": conf} if conf else {}))
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and any(s.strip("*") in ("idle", "mix", "alloc") for s in done.stdout.split())


@pytest.fixture(scope="session")
def slurm() -> str:
    """The slurm.conf of a running local SLURM (started by .ci/slurm-up when absent and possible)."""
    conf = os.environ.get("SLURM_CONF")
    reason = ""
    if not _answers(conf):
        if os.geteuid() != 0:
            reason = "SLURM is not running and starting it needs root (run .ci/slurm-up as root)"
        else:
            done = subprocess.run([str(ROOT / ".ci" / "slurm-up")], capture_output=True, text=True, timeout=600)
            conf = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else None
            if not _answers(conf):
                reason = f"SLURM could not be started by .ci/slurm-up: {done.stderr.strip()[-300:]}"
    if reason:
        if os.environ.get("XOCEANDIFF_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)
    if conf:
        os.environ["SLURM_CONF"] = conf
    return conf or ""


def test_ensemble_job_array_runs_on_slurm_and_evaluate_reads_it_back(slurm, tmp_path):
    exp = tmp_path / "EXP00"
    exp.mkdir()
    (exp / "namelist_cfg").write_text("&namrun\n cn_exp = 'GYRE'\n nn_it000 = 1\n nn_itend = 120\n nn_leapy = 30\n"
                                      " nn_date0 = 590101\n/\n&namcfg\n cn_cfg = 'gyre'\n/\n&namdom\n rn_Dt = 14400.\n/\n")
    shutil.copy(STANDIN, exp / "nemo")
    states = xoceandiff.open_nemo(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc")), mesh_mask=MESH).isel(t=[0, 1, 2])
    plan = make_ensemble(states, exp, tmp_path / "runs", mesh_mask=MESH, dumps=(60, 120), scheduler="slurm",
                         nemo_command=f"{sys.executable} ./nemo")
    done = subprocess.run(["sbatch", "--wait", str(tmp_path / "runs" / plan.job_script)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    logs = sorted((tmp_path / "runs").glob("slurm_*_*.log"))
    assert len(logs) == 3  # one per array task
    result = evaluate(tmp_path / "runs", mesh_mask=MESH)
    assert [m.survived for m in result.samples] == [True, True, True]
    assert list(result.table.dump.values) == [60, 120]
    growth = result.table["samples_adjustment_toce_0-200m"]
    assert float(growth.sel(dump=120) / growth.sel(dump=60)) == pytest.approx(np.sqrt(2), rel=1e-6)


def test_jobqueue_generation_equals_local_cluster_bitwise(slurm, saved_tiny_model, chunked_dino, tmp_path):
    from xoceandiff.parallel import connect, generate_to_netcdf, jobqueue_client

    outputs = {}
    for label in ("slurm", "local"):
        client = jobqueue_client("slurm", 2, memory="2GB", timeout=300,
                                 log_directory=tmp_path / "logs") if label == "slurm" else connect(local_workers=2)
        try:
            if label == "slurm":  # the workers really are SLURM jobs
                jobs = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
                assert jobs.count("dask-worker") == 2
            outputs[label] = generate_to_netcdf(chunked_dino, 4, ["zero_mean"], out=tmp_path / f"{label}.nc",
                                                model=saved_tiny_model, chunks=2, client=client, sampler="ddim",
                                                steps=3, seed=5)
        finally:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    with xr.open_dataset(outputs["slurm"]) as a, xr.open_dataset(outputs["local"]) as b:
        for name in ("toce", "soce", "ssh"):
            np.testing.assert_array_equal(a[name].values, b[name].values)
        assert a.sizes["sample"] == 4
