"""Reading NEMO runs back: status, adjustment by depth band, drift and kinetic energy against a numpy oracle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest

import xoceandiff
from xoceandiff.ensemble import make_ensemble
from xoceandiff.errors import MissingVariableError
from xoceandiff.evaluate import evaluate, evaluate_member, read_run_stat

GYRE = Path(__file__).parent / "data" / "gyre"
MESH = GYRE / "mesh_mask.nc"
STANDIN = Path(__file__).parent / "standin" / "nemo_standin.py"

NAMELIST_CFG = """&namrun
   cn_exp      =  "GYRE"
   nn_it000    =       1
   nn_itend    =    2160
   nn_leapy    =      30
   nn_date0    =  590101
/
&namcfg
   cn_cfg      = "gyre"
/
&namdom
   rn_Dt       = 14400.
/
"""


def _experiment(folder: Path) -> Path:
    folder.mkdir()
    (folder / "namelist_cfg").write_text(NAMELIST_CFG)
    (folder / "namelist_ref").write_text("&namrun\n/\n")
    shutil.copy(STANDIN, folder / "nemo")
    return folder


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A 3-member sample ensemble (one stops at step 100 of its run) and a 2-member reference, run by the stand-in."""
    root = tmp_path_factory.mktemp("evaluate")
    exp = _experiment(root / "EXP00")
    data = xoceandiff.open_nemo(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc")), mesh_mask=MESH)
    # "samples": true states nudged, so that they differ from the reference's
    samples = data.isel(t=[0, 1, 2]).copy()
    samples["toce"] = samples.toce + 0.05 * np.cos(np.arange(samples.sizes["y_c"]))[:, None]
    plans = {}
    for label, states in (("runs", samples), ("reference", data.isel(t=[1, 3]))):
        plans[label] = make_ensemble(states, exp, root / label, mesh_mask=MESH, dumps=(60, 2160), scheduler="shell",
                                     nemo_command=f"{sys.executable} ./nemo")
    stopped = root / "runs" / "member_001"
    (stopped / "FAIL_AT").write_text(str(plans["runs"].members[1].nn_it000 + 99))
    for label in plans:
        subprocess.run(["bash", str(root / label / "run_ensemble.sh")], check=True, capture_output=True)
    # NEMO output of one member: two 5-day means with NEMO's own '360d' calendar name
    member = root / "runs" / "member_000"
    output = samples.isel(t=[0, 0]).assign_coords(t=data.t.values[[0, 1]])
    paths = xoceandiff.nemo.to_nemo_files(output, member / "out", prefix="GYRE_5d")
    for key in ("grid_T_3D", "grid_T_2D"):
        with netCDF4.Dataset(paths[key], "a") as nc:
            nc["time_counter"].calendar = "360d"
        shutil.move(paths[key], member / Path(paths[key]).name)
    shutil.rmtree(member / "out")
    return root, plans


def _oracle(folder: Path, first: int) -> dict[tuple[str, int], float]:
    """The measures recomputed from the files with numpy alone."""
    with netCDF4.Dataset(MESH) as nc:
        tmask = nc["tmask"][0].astype(bool)
        umask, vmask = nc["umask"][0].astype(bool), nc["vmask"][0].astype(bool)
        e3 = np.asarray(nc["e3t_1d"][0])[:, None, None]
        depth = np.asarray(nc["gdept_1d"][0])
        vol = np.asarray(nc["e1t"][0] * nc["e2t"][0]) * e3 * tmask
        vol_u = np.asarray(nc["e1u"][0] * nc["e2u"][0]) * e3 * umask
        vol_v = np.asarray(nc["e1v"][0] * nc["e2v"][0]) * e3 * vmask
    with netCDF4.Dataset(folder / "restart_xoceandiff.nc") as nc:
        t0, s0 = np.asarray(nc["tn"][0]), np.asarray(nc["sn"][0])
    out = {}
    for path in sorted(folder.glob("GYRE_*_restart.nc")):
        kt = int(path.name.split("_")[1])
        step = kt - first + 1
        with netCDF4.Dataset(path) as nc:
            t, s, u, v = (np.asarray(nc[n][0]) for n in ("tn", "sn", "un", "vn"))
        for name, (new, old) in {"toce": (t, t0), "soce": (s, s0)}.items():
            for band, (top, bottom) in {"0-200m": (0, 200), "200-1000m": (200, 1000),
                                        "below-1000m": (1000, np.inf)}.items():
                total = weighted = 0.0
                for k in np.flatnonzero((depth >= top) & (depth < bottom)):
                    total += vol[k].sum()
                    weighted += np.sum(vol[k] * (new[k] - old[k]) ** 2)
                out[(f"adjustment_{name}_{band}", step)] = np.sqrt(weighted / total)
            out[(f"drift_{name}", step)] = (np.sum(vol * new) - np.sum(vol * old)) / vol.sum()
        out[("kinetic_energy", step)] = 0.5 * (np.sum(vol_u * u**2) + np.sum(vol_v * v**2)) / vol.sum()
        out[("u_max_dump", step)] = np.abs(u[umask]).max()
    return out


def test_member_measures_match_the_numpy_oracle(ran):
    root, plans = ran
    for member in plans["runs"].members[::2] + plans["reference"].members:
        folder = root / ("runs" if member in plans["runs"].members else "reference") / member.name
        run = evaluate_member(folder, MESH)
        assert run.survived and run.stopped_at is None
        expected = _oracle(folder, member.nn_it000)
        assert sorted({s for _, s in expected}) == list(run.measures.dump.values) == [60, 2160]
        for (key, step), value in expected.items():
            assert float(run.measures[key].sel(dump=step)) == pytest.approx(value, rel=1e-6, abs=1e-12), (key, step)
        # the stand-in's known change: 0.01 sqrt(s) of a pattern, so the adjustment grows as sqrt(s)
        ratio = run.measures["adjustment_toce_0-200m"]
        assert float(ratio.sel(dump=2160) / ratio.sel(dump=60)) == pytest.approx(np.sqrt(36), rel=1e-6)
        stat = run.measures.u_max
        assert stat.sizes["step"] == 2160 and float(stat[-1]) == pytest.approx(1e-4 * np.sqrt(2160), rel=1e-12)


def test_stopped_member_is_flagged_with_its_step_and_nemos_message(ran):
    root, plans = ran
    member = plans["runs"].members[1]
    run = evaluate_member(root / "runs" / member.name, MESH)
    assert not run.survived and run.stopped_at == member.nn_it000 + 99
    assert "stp_ctl: |ssh| > 20 m  or  |U| > 10 m/s" in run.message
    assert int(read_run_stat(root / "runs" / member.name).step[-1]) == member.nn_it000 + 99


def test_output_drift_reads_nemo_output_with_its_360d_calendar(ran):
    root, plans = ran
    folder = root / "runs" / "member_000"
    run = evaluate_member(folder, MESH)
    drift = run.measures.output_drift_toce
    assert drift.sizes["time"] == 2 and drift.time.values[0].calendar == "360_day"
    # the output holds the start state itself: no drift, to float32 precision of the output file
    np.testing.assert_allclose(drift.values, 0.0, atol=1e-5)


def test_evaluate_compares_sets_and_writes_tables_and_figures(ran, tmp_path):
    root, plans = ran
    result = evaluate(root / "runs", root / "reference", mesh_mask=MESH, out=tmp_path / "eval")
    table = result.table
    survivors = [m for m in plans["runs"].members if m.name != "member_001"]
    for key in ("adjustment_toce_0-200m", "kinetic_energy", "drift_soce"):
        for step in (60, 2160):
            samples = np.mean([_oracle(root / "runs" / m.name, m.nn_it000)[(key, step)] for m in survivors])
            reference = np.mean([_oracle(root / "reference" / m.name, m.nn_it000)[(key, step)]
                                 for m in plans["reference"].members])
            assert float(table[f"samples_{key}"].sel(dump=step)) == pytest.approx(samples, rel=1e-6)
            assert float(table[f"reference_{key}"].sel(dump=step)) == pytest.approx(reference, rel=1e-6)
            assert float(table[f"ratio_{key}"].sel(dump=step)) == pytest.approx(samples / reference, rel=1e-6)
    text = (tmp_path / "eval" / "evaluation.md").read_text()
    assert f"| samples | member_001 | no | {plans['runs'].members[1].nn_it000 + 99} | " in text
    assert (tmp_path / "eval" / "evaluation.csv").read_text().splitlines()[0] == "measure,step,samples,reference,ratio"
    assert {p.name for p in (tmp_path / "eval" / "figures").iterdir()} == {"adjustment_by_band.png", "kinetic_energy.png"}
    with netCDF4.Dataset(tmp_path / "eval" / "evaluation.nc") as nc:
        assert set(nc.groups) == {"table", "samples", "reference"}
        assert set(nc.groups["samples"].groups) == {"member_000", "member_001", "member_002"}


def test_evaluate_refuses_what_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingVariableError, match="no run folder"):
        evaluate(tmp_path / "empty", mesh_mask=MESH)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        evaluate(tmp_path / "nowhere", mesh_mask=MESH)


def test_cli_evaluate(ran, tmp_path, capsys):
    from xoceandiff.cli import main

    root, plans = ran
    assert main(["evaluate", str(root / "runs"), "--reference", str(root / "reference"), "--mesh-mask", str(MESH),
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "| samples | member_001 | no |" in printed and (tmp_path / "eval" / "evaluation.csv").is_file()
    assert main(["evaluate", str(root / "runs"), "--mesh-mask", str(MESH), "--out", str(tmp_path / "eval")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_dumps_written_per_rank_give_the_same_measures(ran, tmp_path):
    from xoceandiff.ranks import domain_attributes, split_ranks

    root, plans = ran
    folder = tmp_path / "member"
    shutil.copytree(root / "reference" / "member_000", folder, symlinks=True)
    whole = evaluate_member(folder, MESH).measures
    for dump in sorted(folder.glob("GYRE_*_restart.nc")):
        with netCDF4.Dataset(dump) as nc:
            nc.set_auto_mask(False)
            fields = {n: np.asarray(nc[n][0]) for n in ("tn", "sn", "un", "vn")}
        nz, ny, nx = fields["tn"].shape
        for piece in split_ranks(nx, ny, (2, 2)):  # NEMO's naming: <exp>_<kt>_restart_<rank:04d>.nc
            with netCDF4.Dataset(dump.with_name(dump.stem + f"_{piece.rank:04d}.nc"), "w") as nc:
                nc.setncatts(domain_attributes(piece, (2, 2), nx, ny))
                nc.createDimension("x", piece.x.stop - piece.x.start)
                nc.createDimension("y", piece.y.stop - piece.y.start)
                nc.createDimension("nav_lev", nz)
                nc.createDimension("time_counter", None)
                for name, values in fields.items():
                    nc.createVariable(name, "f8", ("time_counter", "nav_lev", "y", "x"))[0] = values[:, piece.y, piece.x]
        dump.unlink()
    pieces = evaluate_member(folder, MESH).measures
    for key in ("adjustment_toce_0-200m", "adjustment_soce_below-1000m", "kinetic_energy", "drift_toce"):
        np.testing.assert_array_equal(pieces[key].values, whole[key].values)
