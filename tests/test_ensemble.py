"""Ensembles of NEMO runs: folders that differ from the experiment only where documented, job scripts bash accepts."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import xoceandiff
from xoceandiff.ensemble import NAMELIST_CHANGES, edit_namelist, make_ensemble, step_of_year
from xoceandiff.errors import InvalidDataError, MissingVariableError, OutputExistsError
from xoceandiff.restart_check import check_restart
from xoceandiff.restart_format import read_namelist

GYRE = Path(__file__).parent / "data" / "gyre"

NAMELIST_CFG = """!! GYRE configuration namelist (trimmed)
&namrun        !   parameters of the run
   cn_exp      =  "GYRE"   !  experience name
   nn_it000    =       1   !  first time step
   nn_itend    =    4320   !  last  time step
   nn_leapy    =      30   !  Leap year calendar (1) or not (0)
   nn_date0    =  010101, ln_rstart = .false.
   nn_stock    =    4320   !  frequency of creation of a restart file (modulo referenced to 1)
/
&namcfg        !   parameters of the configuration
   ln_read_cfg = .false.
   cn_cfg      = "gyre"
/
&namdom        !   time and space domain
   rn_Dt       = 14400.    !  time step for the dynamics
/
&namtsd        !   Temperature & Salinity Data  (init/dmp)
   ln_tsd_init = .true.    ! Initialisation of ocean T & S with T &S input data (T) or not (F)
/
"""


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A NEMO experiment folder as a user has it: namelists, XML, executable, an input file and old run output."""
    exp = tmp_path / "EXP00"
    exp.mkdir()
    (exp / "namelist_cfg").write_text(NAMELIST_CFG)
    (exp / "namelist_ref").write_text("&namrun\n   nn_it000 = 1\n   nn_itend = 5475\n   nn_rstctl = 0\n/\n"
                                      "&namdom\n   rn_Dt = 5760.\n/\n")
    (exp / "iodef.xml").write_text("<?xml version='1.0'?><simulation></simulation>\n")
    (exp / "nemo").write_text("#!/bin/bash\necho NEMO\n")
    (exp / "nemo").chmod(0o755)
    (exp / "forcing.nc").write_bytes(b"CDF\x01" + bytes(100))
    for leftover in ("ocean.output", "run.stat", "time.step", "GYRE_00004320_restart.nc"):
        (exp / leftover).write_text("from an earlier run\n")
    return exp


@pytest.fixture(scope="module")
def states():
    return xoceandiff.open_nemo(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc")), mesh_mask=GYRE / "mesh_mask.nc").isel(t=[0, 3])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if not p.is_symlink() else os.readlink(p).encode()
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def test_step_of_year_in_nemo_calendars():
    assert step_of_year(590101, 14400.0, "360_day") == 0
    assert step_of_year(590716, 14400.0, "360_day") == (6 * 30 + 15) * 6  # 16 July: 195 days of 6 steps
    assert step_of_year(20240301, 3600.0, "standard") == (31 + 29) * 24  # 2024 is a leap year
    assert step_of_year(20230301, 3600.0, "noleap") == (31 + 28) * 24
    with pytest.raises(InvalidDataError, match="does not divide a day"):
        step_of_year(590102, 7000.0, "360_day")


def test_edit_namelist_changes_only_the_values_asked_for():
    changes = {"namrun": {"nn_it000": 541, "ln_rstart": True, "cn_ocerst_in": "restart_xoceandiff",
                          "nn_stocklist": [600, 2700]},
               "namtsd": {"ln_tsd_init": False}, "namnew": {"nn_x": 2.5}}
    edited = edit_namelist(NAMELIST_CFG, changes)
    before, after = NAMELIST_CFG.splitlines(), edited.splitlines()
    # in place, comments kept; the second assignment on a line is found too; nothing else removed
    assert [line for line in before if line not in after] == [
        "   nn_it000    =       1   !  first time step",
        "   nn_date0    =  010101, ln_rstart = .false.",
        "   ln_tsd_init = .true.    ! Initialisation of ocean T & S with T &S input data (T) or not (F)",
    ]
    assert [line for line in after if line not in before] == [
        "   nn_it000    =       541   !  first time step",
        "   nn_date0    =  010101, ln_rstart = .true.",
        "   cn_ocerst_in = 'restart_xoceandiff'   ! set by xoceandiff ensemble",
        "   nn_stocklist = 600, 2700   ! set by xoceandiff ensemble",
        "   ln_tsd_init = .false.    ! Initialisation of ocean T & S with T &S input data (T) or not (F)",
        "&namnew   ! added by xoceandiff ensemble",
        "   nn_x = 2.5   ! set by xoceandiff ensemble",
    ]
    groups, original = read_namelist_text(edited), read_namelist_text(NAMELIST_CFG)
    assert groups["namrun"]["nn_stocklist"] == [600, 2700] and groups["namrun"]["cn_ocerst_in"] == "restart_xoceandiff"
    assert groups["namnew"] == {"nn_x": 2.5}
    for group, values in original.items():  # everything not asked for is as it was
        for name, value in values.items():
            if name not in changes.get(group, {}):
                assert groups[group][name] == value, (group, name)


def read_namelist_text(text: str) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "namelist_cfg"
        path.write_text(text)
        return read_namelist(path)


def test_ensemble_members_differ_from_the_experiment_only_in_restarts_and_documented_lines(experiment, states, tmp_path):
    before = _snapshot(experiment)
    runs = tmp_path / "runs"
    plan = make_ensemble(states, experiment, runs, dumps=(60, 2160), run_steps=2160,
                         mesh_mask=GYRE / "mesh_mask.nc", nemo_command="mpirun -n 1 ./nemo")
    assert _snapshot(experiment) == before  # the template is only read
    # GYRE: the forcing follows the step counter, so each state starts at its own step of the year
    assert plan.phase == "step" and "cn_cfg = 'gyre'" in plan.phase_reason
    times = states.t.values
    for member, time in zip(plan.members, times, strict=True):
        date = time.year * 10000 + time.month * 100 + time.day
        first = 1 + ((time.month - 1) * 30 + time.day - 1) * 6
        assert (member.date, member.nn_it000, member.nn_itend) == (date, first, first + 2159)
        assert member.dumps == (first - 1 + 60, first - 1 + 2160)
    assert sorted(p.name for p in runs.iterdir()) == ["ensemble.json", "member_000", "member_001", "run_ensemble.slurm"]
    allowed = {(g, n) for g, names in NAMELIST_CHANGES.items() for n in names}
    template_groups = read_namelist(experiment / "namelist_cfg")
    for member in plan.members:
        folder = runs / member.name
        names = {p.name for p in folder.iterdir()}
        # the experiment's files, minus the earlier run's output, plus the restart
        assert names == {"namelist_cfg", "namelist_ref", "iodef.xml", "nemo", "forcing.nc", "restart_xoceandiff.nc"}
        for name in ("namelist_ref", "iodef.xml", "nemo", "forcing.nc"):
            assert filecmp.cmp(folder / name, experiment / name, shallow=False), name
        assert (folder / "nemo").is_symlink() and not (folder / "namelist_ref").is_symlink()
        groups = read_namelist(folder / "namelist_cfg")
        differing = {(g, n) for g in groups for n in groups[g] if template_groups.get(g, {}).get(n) != groups[g][n]}
        assert differing <= allowed
        run = groups["namrun"]
        assert run["ln_rstart"] is True and run["cn_ocerst_in"] == "restart_xoceandiff" and run["nn_rstctl"] == 0
        assert (run["nn_it000"], run["nn_itend"], run["nn_date0"]) == (member.nn_it000, member.nn_itend, member.date)
        assert run["nn_stocklist"] == list(member.dumps) and run["ln_rst_list"] is True
        assert groups["namtsd"]["ln_tsd_init"] is False
        assert check_restart(folder / "restart_xoceandiff.nc", GYRE / "mesh_mask.nc") == []
        import netCDF4

        with netCDF4.Dataset(folder / "restart_xoceandiff.nc") as nc:
            assert int(nc["kt"][...]) == member.nn_it000 - 1 and int(nc["ndastp"][...]) == member.date
            assert float(nc["rdt"][...]) == 14400.0
            tn = np.asarray(nc["tn"][0])
        truth = states.toce.isel(t=member.index).fillna(0.0).values
        np.testing.assert_allclose(tn, truth, atol=1e-5)
    manifest = json.loads((runs / "ensemble.json").read_text())
    assert [m["nn_it000"] for m in manifest["members"]] == [m.nn_it000 for m in plan.members]


def test_job_scripts_pass_bash_syntax_check(experiment, states, tmp_path):
    bash = shutil.which("bash")
    assert bash is not None
    for scheduler, marker in (("slurm", "#SBATCH --array=0-1"), ("pbs", "#PBS -J 0-1"), ("shell", "for member in")):
        plan = make_ensemble(states, experiment, tmp_path / scheduler, scheduler=scheduler, run_steps=10,
                             mesh_mask=GYRE / "mesh_mask.nc")
        script = tmp_path / scheduler / plan.job_script
        text = script.read_text()
        assert marker in text and os.access(script, os.X_OK)
        assert subprocess.run([bash, "-n", str(script)], capture_output=True).returncode == 0, text
    # the shell loop really runs every member (the stand-in executable prints NEMO)
    subprocess.run([bash, str(tmp_path / "shell" / "run_ensemble.sh")], check=True)
    assert (tmp_path / "shell" / "member_001" / "nemo.log").read_text() == "NEMO\n"


def test_dry_run_writes_nothing_and_lists_the_plan(experiment, states, tmp_path):
    plan = make_ensemble(states, experiment, tmp_path / "runs", date=590401, run_steps=60, forcing_phase="calendar",
                         dry_run=True)
    assert not (tmp_path / "runs").exists()
    text = plan.describe()
    assert "| member_000 | 0 | 00590401 | 1 | 60 | - |" in text
    assert "left out (a previous run's output): GYRE_00004320_restart.nc, ocean.output, run.stat, time.step" in text


def test_ensemble_refusals(experiment, states, tmp_path):
    with pytest.raises(MissingVariableError, match="namelist_cfg"):
        make_ensemble(states, tmp_path, tmp_path / "runs")
    with pytest.raises(InvalidDataError, match="dumps"):
        make_ensemble(states, experiment, tmp_path / "runs", run_steps=10, dumps=(60,), dry_run=True)
    with pytest.raises(InvalidDataError, match="scheduler"):
        make_ensemble(states, experiment, tmp_path / "runs", scheduler="lsf", dry_run=True)
    with pytest.raises(InvalidDataError, match="yyyymmdd"):
        make_ensemble(states, experiment, tmp_path / "runs", date=591340, dry_run=True)
    make_ensemble(states, experiment, tmp_path / "runs", run_steps=10, mesh_mask=GYRE / "mesh_mask.nc")
    with pytest.raises(OutputExistsError, match="overwrite"):
        make_ensemble(states, experiment, tmp_path / "runs", run_steps=10, mesh_mask=GYRE / "mesh_mask.nc")
    # a state that cannot be a restart leaves nothing behind
    broken = states.copy(deep=True)
    broken["toce"] = broken.toce + 273.15
    with pytest.raises(InvalidDataError):
        make_ensemble(broken, experiment, tmp_path / "broken", run_steps=10, mesh_mask=GYRE / "mesh_mask.nc")
    assert not (tmp_path / "broken").exists() and sorted(p.name for p in tmp_path.iterdir() if "broken" in p.name) == []


def test_cli_ensemble_from_true_states_and_its_refusals(experiment, tmp_path, capsys):
    from xoceandiff.cli import main

    data = str(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc"))[0])
    mesh = str(GYRE / "mesh_mask.nc")
    args = [data, "--template-exp", str(experiment), "--mesh-mask", mesh, "--records", "0", "2", "--run-steps", "60",
            "--dumps", "60", "--scheduler", "shell"]
    assert main(["ensemble", *args, "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out and not (tmp_path / "dry").exists()
    assert main(["ensemble", *args, "--out", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert f"bash {tmp_path / 'runs' / 'run_ensemble.sh'}" in printed
    states = xoceandiff.open_nemo(data, mesh_mask=mesh)
    third = states.t.values[2]  # 5-day means: record 2 is centred on 13 January of year 51
    groups = read_namelist(tmp_path / "runs" / "member_001" / "namelist_cfg")
    assert groups["namrun"]["nn_date0"] == third.year * 10000 + third.month * 100 + third.day
    assert groups["namrun"]["nn_it000"] == 1 + (third.day - 1) * 6 and groups["namrun"]["nn_stocklist"] == groups[
        "namrun"]["nn_it000"] - 1 + 60
    assert main(["ensemble", *args, "--out", str(tmp_path / "runs")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["ensemble", data, "--template-exp", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "--template-exp" in capsys.readouterr().err
