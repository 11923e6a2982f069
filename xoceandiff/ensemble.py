"""Ready-to-run NEMO ensembles: one run folder per state, made from the user's experiment folder.

Each member folder holds the state's restart (the global file, or one piece per MPI rank), the experiment's
namelists copied with the documented changes (:data:`NAMELIST_CHANGES`) and links to everything else of the
experiment (executable, forcing, XML files); a job script runs them all (a SLURM or PBS job array, or a plain
shell loop). The user's experiment folder is only read.

The start of each run is placed at the state's date (``nn_date0``). Where the configuration's forcing follows
the time-step counter instead of the calendar (GYRE's analytic forcing does), ``nn_it000`` is set to the
state's step of the year as well; which of the two applies is decided per configuration and said in the plan
(:attr:`EnsemblePlan.phase_reason`), never silently.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from .atomic import atomic_path, refuse_existing
from .canonical import record_dim
from .conditions import yyyymmdd
from .errors import InvalidDataError, MissingVariableError
from .restart_format import _fortran_string, read_namelist

__all__ = [
    "NAMELIST_CHANGES",
    "SCHEDULERS",
    "EnsemblePlan",
    "MemberPlan",
    "edit_namelist",
    "make_ensemble",
    "plan_ensemble",
    "step_of_year",
]

PathLike = str | os.PathLike
Scheduler = Literal["slurm", "pbs", "shell"]
SCHEDULERS: tuple[str, ...] = ("slurm", "pbs", "shell")
ForcingPhase = Literal["auto", "calendar", "step"]

#: Every namelist line :func:`make_ensemble` may change, by group; nothing else of the template is touched.
NAMELIST_CHANGES: dict[str, tuple[str, ...]] = {
    "namrun": ("ln_rstart", "cn_ocerst_in", "cn_ocerst_indir", "nn_rstctl", "nn_it000", "nn_itend", "nn_date0",
               "ln_rst_list", "nn_stocklist"),
    "namtsd": ("ln_tsd_init",),
}

# what a previous run left in the experiment folder: not part of the experiment, never copied or linked
_RUN_LEFTOVERS = re.compile(
    r"^(ocean\.output.*|run\.stat(\.nc)?|time\.step|output\.abort.*|layout\.dat|communication_report\.txt|"
    r"output\.namelist\..*|.*_restart(_\d+)?\.nc|member_\d+)$"
)
# copied (so that the run folder is self-contained and the changes visible), everything else linked
_COPIED = re.compile(r"^(namelist_.*|.*\.xml)$")
_CALENDARS = {0: "noleap", 1: "standard", 30: "360_day"}  # NEMO's nn_leapy
_STOCKLIST_MAX = 10  # NEMO's nn_stocklist holds 10 steps


@dataclass(frozen=True)
class MemberPlan:
    """One run of the ensemble: where it goes, which state it starts from and how."""

    name: str
    index: int
    date: int
    nn_it000: int
    nn_itend: int
    dumps: tuple[int, ...]
    restart_stem: str

    @property
    def kt(self) -> int:
        """The restart's time step (NEMO starts at ``nn_it000 = kt + 1``)."""
        return self.nn_it000 - 1

    def namelist_changes(self) -> dict[str, dict[str, Any]]:
        """The namelist values this member's ``namelist_cfg`` gets (see :data:`NAMELIST_CHANGES`)."""
        run: dict[str, Any] = {
            "ln_rstart": True, "cn_ocerst_in": self.restart_stem, "cn_ocerst_indir": ".", "nn_rstctl": 0,
            "nn_it000": self.nn_it000, "nn_itend": self.nn_itend, "nn_date0": self.date,
        }
        if self.dumps:
            run |= {"ln_rst_list": True, "nn_stocklist": list(self.dumps)}
        return {"namrun": run, "namtsd": {"ln_tsd_init": False}}


@dataclass(frozen=True)
class EnsemblePlan:
    """What :func:`make_ensemble` writes; :meth:`describe` lists it (the dry run)."""

    template: Path
    out: Path
    members: tuple[MemberPlan, ...]
    rdt: float
    calendar: str
    phase: Literal["calendar", "step"]
    phase_reason: str
    scheduler: str
    nemo_command: str
    copied: tuple[str, ...]
    linked: tuple[str, ...]
    skipped: tuple[str, ...]
    ranks: tuple[int, int] | None = None
    nemo_version: str = "5.0"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def job_script(self) -> str:
        """The job script's file name."""
        return {"slurm": "run_ensemble.slurm", "pbs": "run_ensemble.pbs", "shell": "run_ensemble.sh"}[self.scheduler]

    def describe(self) -> str:
        """A readable list of everything that would be written."""
        restart = f"one piece per rank, {self.ranks[0]} x {self.ranks[1]}" if self.ranks else "global file"
        lines = [
            f"ensemble of {len(self.members)} NEMO {self.nemo_version} runs in {str(self.out)!r} from the experiment "
            f"{str(self.template)!r} (read only)",
            f"time step rn_Dt = {self.rdt:g} s, calendar {self.calendar}; start phase: {self.phase_reason}",
            f"each member: its restart ({restart}),"
            f" copies of {', '.join(self.copied) or 'nothing'}, links to {', '.join(self.linked) or 'nothing'}",
        ]
        if self.skipped:
            lines.append(f"left out (a previous run's output): {', '.join(self.skipped)}")
        lines.append("| member | state | nn_date0 | nn_it000 | nn_itend | restart dumps at steps |")
        lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
        for m in self.members:
            lines.append(f"| {m.name} | {m.index} | {m.date:08d} | {m.nn_it000} | {m.nn_itend} | "
                         f"{', '.join(map(str, m.dumps)) or '-'} |")
        lines.append(f"job script: {self.job_script} ({self.scheduler}), running `{self.nemo_command}` in each member")
        lines += list(self.notes)
        return "\n".join(lines)


# --- namelists --------------------------------------------------------------------------------------------


def _fortran_value(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, str):
        return _fortran_string(value, name, quote="'")
    if isinstance(value, Sequence):
        return ", ".join(_fortran_value(v, name) for v in value)
    raise InvalidDataError(f"{name}: cannot write {value!r} ({type(value).__name__}) into a namelist.")


def _group_span(text: str, group: str) -> tuple[int, int] | None:
    """(start of the body, start of the closing line) of ``&group`` in ``text``, outside comments."""
    opening = re.compile(rf"(?im)^[ \t]*&{re.escape(group)}\b[^\n]*\n?")
    match = opening.search(text)
    if match is None:
        return None
    closing = re.compile(r"(?m)^[ \t]*/")
    end = closing.search(text, match.end())
    if end is None:
        raise InvalidDataError(f"&{group}: the group is not closed by a line starting with '/'; fix the namelist.")
    return match.end(), end.start()


def _assignment(name: str) -> re.Pattern[str]:
    # the value: quoted strings or plain characters, up to a comment, the line's end or the next "name ="
    return re.compile(
        rf"(?im)^(?P<lead>[^!\n]*?\b){re.escape(name)}\s*=\s*(?P<value>(?:'[^'\n]*'|\"[^\"\n]*\"|[^'\"!\n])*?)"
        r"(?=\s*(?:,\s*\w+(?:\([\d:, ]*\))?\s*=|!|\n|$))"
    )


def edit_namelist(text: str, changes: Mapping[str, Mapping[str, Any]]) -> str:
    r"""``text`` (a Fortran namelist) with the given values set, everything else kept as it is.

    A variable already in its group has its value replaced in place (its comment kept); a missing one is
    added before the group's closing ``/``; a missing group is appended. Groups open with ``&name`` at the start
    of a line and close with a line starting with ``/``, as in every NEMO namelist.

    Parameters
    ----------
    text : str
        The namelist (e.g. the contents of ``namelist_cfg``).
    changes : mapping of group to mapping of variable to value
        Values: bool, int, float, str or a list of them.

    Returns
    -------
    str

    Examples
    --------
    >>> text = "&namrun  ! run\n   nn_it000 = 1   ! first step\n   cn_exp = 'GYRE'\n/\n"
    >>> print(edit_namelist(text, {"namrun": {"nn_it000": 2161, "ln_rstart": True}}), end="")
    &namrun  ! run
       nn_it000 = 2161   ! first step
       cn_exp = 'GYRE'
       ln_rstart = .true.   ! set by xoceandiff ensemble
    /
    """
    for group, values in changes.items():
        for name, value in values.items():
            written = _fortran_value(value, name)
            span = _group_span(text, group)
            if span is None:
                text = text.rstrip("\n") + f"\n&{group}   ! added by xoceandiff ensemble\n/\n"
                span = _group_span(text, group)
                assert span is not None
            start, end = span
            body = text[start:end]
            match = _assignment(name).search(body)
            if match is not None:
                body = body[: match.start("value")] + written + body[match.end("value"):]
            else:
                body = body + f"   {name} = {written}   ! set by xoceandiff ensemble\n"
            text = text[:start] + body + text[end:]
    return text


# --- dates and phases -------------------------------------------------------------------------------------


def _check_date(value: Any, what: str) -> int:
    date = int(value)
    month, day = (date // 100) % 100, date % 100
    if date != value or date < 101 or not 1 <= month <= 12 or not 1 <= day <= 31:
        raise InvalidDataError(f"{what}: expected a date yyyymmdd (e.g. 590101 for 1 January of year 59), found {value!r}.")
    return date


def step_of_year(date: int, rdt: float, calendar: str) -> int:
    """Time steps from 1 January 00:00 of ``date``'s year to ``date`` 00:00 in ``calendar``.

    Parameters
    ----------
    date : int
        ``yyyymmdd``.
    rdt : float
        Time step (s).
    calendar : str
        A cftime calendar (``"360_day"``, ``"noleap"``, ``"standard"``).

    Examples
    --------
    >>> step_of_year(590401, 14400.0, "360_day")    # 90 days of 6 steps
    540
    """
    import cftime

    year, month, day = date // 10000, (date // 100) % 100, date % 100
    days = (cftime.datetime(year, month, day, calendar=calendar)
            - cftime.datetime(year, 1, 1, calendar=calendar)).days
    steps = days * 86400.0 / rdt
    if abs(steps - round(steps)) > 1e-9:
        raise InvalidDataError(f"rn_Dt = {rdt:g} s does not divide a day: the step of the year of {date:08d} is not whole.")
    return int(round(steps))


def _state_dates(states: xr.Dataset, dim: str | None) -> list[int | None]:
    """Each state's date ``yyyymmdd`` from its time coordinate (datetime64 or cftime), None without one."""
    count = 1 if dim is None else states.sizes[dim]
    time = None
    for name in ("t", "time_counter", "time"):
        if name in states.coords and (states[name].dims == ((dim,) if dim else ())):
            time = np.atleast_1d(states[name].values)
            break
    if time is None:
        return [None] * count
    return [yyyymmdd(value) for value in time]


def _phase(groups: Mapping[str, Mapping[str, Any]], forcing_phase: str) -> tuple[Literal["calendar", "step"], str]:
    config = str(groups.get("namcfg", {}).get("cn_cfg", "")).strip().lower()
    if forcing_phase == "calendar":
        return "calendar", "given (forcing_phase='calendar'): nn_date0 = the state's date, nn_it000 = 1"
    if forcing_phase == "step":
        return "step", "given (forcing_phase='step'): nn_date0 = the state's date, nn_it000 at its step of the year"
    if forcing_phase != "auto":
        raise InvalidDataError(f"forcing_phase: expected 'auto', 'calendar' or 'step', found {forcing_phase!r}.")
    if config == "gyre":
        return "step", ("cn_cfg = 'gyre': GYRE's analytic forcing follows the time-step counter, so nn_it000 is "
                        "set at the state's step of the year and nn_date0 to its date")
    return "calendar", (f"cn_cfg = {config or 'not set'!r}: forcing read by date, so nn_date0 = the state's date and "
                        "nn_it000 = 1 (pass forcing_phase='step' for a forcing that follows the step counter)")


# --- the plan ---------------------------------------------------------------------------------------------


def _template_groups(template: Path) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for name in ("namelist_ref", "namelist_cfg"):  # NEMO reads ref, then cfg overrides
        path = template / name
        if path.is_file():
            for group, values in read_namelist(path).items():
                groups.setdefault(group, {}).update(values)
    return groups


def plan_ensemble(
    states: xr.Dataset,
    template_exp: PathLike,
    out: PathLike,
    *,
    date: int | None = None,
    run_steps: int | None = None,
    dumps: Sequence[int] = (),
    forcing_phase: ForcingPhase = "auto",
    scheduler: Scheduler = "slurm",
    nemo_command: str = "./nemo",
    ranks: tuple[int, int] | None = None,
    nemo_version: str = "5.0",
) -> EnsemblePlan:
    """Plan an ensemble (nothing is written): see :func:`make_ensemble` for the arguments."""
    template = Path(template_exp)
    if not (template / "namelist_cfg").is_file():
        raise MissingVariableError(
            f"template_exp: expected a NEMO experiment folder holding namelist_cfg, found none in {str(template)!r}. "
            "Pass the folder you run NEMO in (e.g. cfgs/GYRE_PISCES/EXP00)."
        )
    if scheduler not in SCHEDULERS:
        raise InvalidDataError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, found {scheduler!r}.")
    if not nemo_command.strip():
        raise InvalidDataError("nemo_command: expected the command that runs NEMO in a member folder, found ''.")
    groups = _template_groups(template)
    run = groups.get("namrun", {})
    rdt = groups.get("namdom", {}).get("rn_dt", groups.get("namdom", {}).get("rn_rdt"))
    if not isinstance(rdt, int | float) or isinstance(rdt, bool) or rdt <= 0:
        raise InvalidDataError(f"rn_Dt in &namdom of the experiment's namelists: expected a time step in seconds, "
                               f"found {rdt!r}. Set it in {str(template / 'namelist_cfg')!r}.")
    leapy = int(run.get("nn_leapy", 0))
    if leapy not in _CALENDARS:
        raise InvalidDataError(f"nn_leapy = {leapy} in &namrun: expected 0, 1 or 30.")
    calendar = _CALENDARS[leapy]
    if run_steps is None:
        first, last = run.get("nn_it000"), run.get("nn_itend")
        if not isinstance(first, int) or not isinstance(last, int) or last < first:
            raise InvalidDataError("run_steps: not given and the experiment's nn_it000/nn_itend do not define a run "
                                   f"length (found {first!r}, {last!r}); pass run_steps (--run-steps).")
        run_steps = last - first + 1
    if int(run_steps) != run_steps or run_steps < 1:
        raise InvalidDataError(f"run_steps: expected a positive number of time steps, found {run_steps!r}.")
    dumps = tuple(int(d) for d in dumps)
    if any(d < 1 or d > run_steps for d in dumps) or len(set(dumps)) != len(dumps) or len(dumps) > _STOCKLIST_MAX:
        raise InvalidDataError(f"dumps: expected up to {_STOCKLIST_MAX} distinct steps within the run (1 to "
                               f"{run_steps}, counted from its start), found {list(dumps)}.")
    phase, reason = _phase(groups, forcing_phase)
    dim = record_dim(states, required=False)
    own_dates = _state_dates(states, dim)
    fallback = run.get("nn_date0")
    members = []
    width = max(3, len(str(len(own_dates) - 1)))
    for i, own in enumerate(own_dates):
        chosen = date if date is not None else own if own is not None else fallback
        if chosen is None:
            raise InvalidDataError("date: the states carry no time and the experiment's namelists no nn_date0; pass "
                                   "date (--date yyyymmdd).")
        chosen = _check_date(chosen, "date")
        first = 1 + (step_of_year(chosen, float(rdt), calendar) if phase == "step" else 0)
        members.append(MemberPlan(
            name=f"member_{i:0{width}d}", index=i, date=chosen, nn_it000=first, nn_itend=first + int(run_steps) - 1,
            dumps=tuple(first - 1 + d for d in sorted(dumps)), restart_stem="restart_xoceandiff",
        ))
    copied, linked, skipped = [], [], []
    for entry in sorted(template.iterdir()):
        if _RUN_LEFTOVERS.match(entry.name):
            skipped.append(entry.name)
        elif entry.is_file() and _COPIED.match(entry.name):
            copied.append(entry.name)
        else:
            linked.append(entry.name)
    notes = []
    if date is None and all(d is None for d in own_dates):
        notes.append(f"date: the experiment's nn_date0 ({int(fallback):08d}); the states carry no time")
    return EnsemblePlan(
        template=template.resolve(), out=Path(out).resolve(), members=tuple(members), rdt=float(rdt),
        calendar=calendar, phase=phase, phase_reason=reason, scheduler=scheduler, nemo_command=nemo_command,
        copied=tuple(copied), linked=tuple(linked), skipped=tuple(skipped),
        ranks=None if ranks is None else (int(ranks[0]), int(ranks[1])), nemo_version=nemo_version,
        notes=tuple(notes),
    )


# --- job scripts ------------------------------------------------------------------------------------------


def job_script(plan: EnsemblePlan) -> str:
    """The job script that runs every member: a SLURM or PBS (Pro) job array, or a shell loop."""
    names = " ".join(m.name for m in plan.members)
    last = len(plan.members) - 1
    out = shlex.quote(str(plan.out))
    body = [
        "set -euo pipefail",
        f"members=({names})",
        f"runs={out}",
    ]
    run_member = ['cd "$runs/$member"', f"{plan.nemo_command} > nemo.log 2>&1"]
    if plan.scheduler == "slurm":
        head = ["#!/bin/bash", "#SBATCH --job-name=xoceandiff-ensemble", f"#SBATCH --array=0-{last}",
                f"#SBATCH --output={plan.out}/slurm_%A_%a.log"]
        body += ['member=${members[$SLURM_ARRAY_TASK_ID]}', *run_member]
    elif plan.scheduler == "pbs":
        head = ["#!/bin/bash", "#PBS -N xoceandiff-ensemble", f"#PBS -J 0-{last}", "#PBS -j oe",
                f"#PBS -o {plan.out}/"]
        body += ['member=${members[$PBS_ARRAY_INDEX]}', *run_member]
    else:
        head = ["#!/bin/bash", "# runs the members one after the other; a member that fails does not stop the others"]
        body = [line for line in body if line != "set -euo pipefail"] + [
            'for member in "${members[@]}"; do',
            f'    (cd "$runs/$member" && {plan.nemo_command} > nemo.log 2>&1) || echo "$member: failed" >&2',
            "done",
        ]
    head.append(f"# written by xoceandiff ensemble: {len(plan.members)} members in {plan.out}")
    return "\n".join(head + body) + "\n"


# --- writing ----------------------------------------------------------------------------------------------


def make_ensemble(
    states: xr.Dataset,
    template_exp: PathLike,
    out: PathLike,
    *,
    mesh_mask: PathLike | xr.Dataset | None = None,
    date: int | None = None,
    run_steps: int | None = None,
    dumps: Sequence[int] = (),
    forcing_phase: ForcingPhase = "auto",
    scheduler: Scheduler = "slurm",
    nemo_command: str = "./nemo",
    ranks: tuple[int, int] | None = None,
    nemo_version: str = "5.0",
    dry_run: bool = False,
    overwrite: bool = False,
) -> EnsemblePlan:
    """Write one NEMO run folder per state, and a job script that runs them all.

    Each member folder holds the state's restart (``restart_xoceandiff.nc``, or its per-rank pieces), a copy of
    every namelist and XML file of ``template_exp`` with only the lines of :data:`NAMELIST_CHANGES` set in
    ``namelist_cfg``, and links to everything else of the experiment (executable, forcing, input files). What a
    previous run left in the experiment folder (``ocean.output``, ``run.stat``, restart dumps, ...) is left out.
    The members start from rest at the state's date: ``nn_date0`` is the state's date (``date`` when given,
    else the state's time coordinate, else the experiment's ``nn_date0``); where the forcing follows the step
    counter (``forcing_phase="step"``, chosen by ``"auto"`` for GYRE), ``nn_it000`` is the date's step of the
    year, else 1. ``ensemble.json`` records the plan; the whole folder is written under a temporary name and
    renamed when complete.

    Parameters
    ----------
    states : xarray.Dataset
        Canonical states (``toce``, ``soce``, ``ssh``) along ``sample`` or ``t``: generated samples, or true
        states for reference runs.
    template_exp : path
        The NEMO experiment folder (with ``namelist_cfg``, ``namelist_ref``, the executable, ...); only read.
    out : path
        The ensemble folder.
    mesh_mask : path or xarray.Dataset, optional
        The configuration's mesh_mask (default: the states' own grid).
    date : int, optional
        Start date ``yyyymmdd`` of every member.
    run_steps : int, optional
        Length of each run in time steps (default: the experiment's ``nn_itend - nn_it000 + 1``).
    dumps : sequence of int
        Steps after the start at which NEMO writes a restart (``nn_stocklist``, up to 10), e.g. ``(60, 2160)``:
        10 and 360 days at GYRE's 4 h step.
    forcing_phase : {"auto", "calendar", "step"}
        Whether the forcing follows the calendar (``nn_it000 = 1``) or the step counter (``nn_it000`` at the
        state's step of the year). ``"auto"``: "step" for GYRE (``cn_cfg = 'gyre'``), else "calendar".
    scheduler : {"slurm", "pbs", "shell"}
        The job script: a SLURM job array, a PBS Pro job array (``#PBS -J``), or a plain shell loop.
    nemo_command : str
        What runs NEMO in a member folder (e.g. ``"srun ./nemo"`` or ``"mpirun -n 4 ./nemo"``).
    ranks : (int, int), optional
        Write each restart as ``ranks[0] x ranks[1]`` per-rank pieces (the run must use that decomposition).
    nemo_version : {"4.2", "5.0"}
        The restarts' variable set.
    dry_run : bool
        Only plan: nothing is written; :meth:`EnsemblePlan.describe` lists what would be.
    overwrite : bool
        Replace an existing ensemble folder.

    Returns
    -------
    EnsemblePlan

    Raises
    ------
    xoceandiff.errors.MissingVariableError
        ``template_exp`` holds no ``namelist_cfg``.
    xoceandiff.errors.InvalidDataError
        A bad date, run length, dump step, scheduler, or a state that cannot be a restart.
    xoceandiff.errors.OutputExistsError
        ``out`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import pathlib, tempfile, xoceandiff
    >>> exp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (exp / "namelist_cfg").write_text(
    ...     "&namrun\\n nn_it000 = 1\\n nn_itend = 2160\\n nn_date0 = 590101\\n nn_leapy = 30\\n/\\n"
    ...     "&namcfg\\n cn_cfg = 'gyre'\\n/\\n&namdom\\n rn_Dt = 14400.\\n/\\n")
    >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> plan = make_ensemble(states, exp, exp.parent / "runs", date=590401, dumps=(60,), dry_run=True)
    >>> [(m.name, m.nn_it000, m.nn_itend, m.dumps) for m in plan.members]
    [('member_000', 541, 2700, (600,)), ('member_001', 541, 2700, (600,))]
    """
    plan = plan_ensemble(states, template_exp, out, date=date, run_steps=run_steps, dumps=dumps,
                         forcing_phase=forcing_phase, scheduler=scheduler, nemo_command=nemo_command, ranks=ranks,
                         nemo_version=nemo_version)
    if dry_run:
        return plan
    from .restart import to_restart

    refuse_existing(plan.out, overwrite)
    dim = record_dim(states, required=False)
    cfg_text = (plan.template / "namelist_cfg").read_text()
    with atomic_path(plan.out, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        for member in plan.members:
            folder = tmp / member.name
            folder.mkdir()
            for name in plan.copied:
                shutil.copy2(plan.template / name, folder / name)
            for name in plan.linked:
                os.symlink(plan.template / name, folder / name)
            text = edit_namelist(cfg_text, member.namelist_changes())
            (folder / "namelist_cfg").write_text(text)
            state = states if dim is None else states.isel({dim: member.index})
            staging = folder / ".staging"
            written = to_restart(state, staging, mesh_mask=mesh_mask, nemo_version=nemo_version, kt=member.kt,
                                 ndastp=member.date, rdt=plan.rdt, ranks=plan.ranks)
            for path in written:
                os.replace(path, folder / path.name)
            shutil.rmtree(staging)
        script = tmp / plan.job_script
        script.write_text(job_script(plan))
        script.chmod(0o755)
        (tmp / "ensemble.json").write_text(json.dumps(_manifest(plan), indent=1))
    return plan


def _manifest(plan: EnsemblePlan) -> dict[str, Any]:
    return {
        "format": "xoceandiff-ensemble", "template": str(plan.template), "rdt": plan.rdt, "calendar": plan.calendar,
        "phase": plan.phase, "phase_reason": plan.phase_reason, "scheduler": plan.scheduler,
        "nemo_command": plan.nemo_command, "ranks": plan.ranks, "nemo_version": plan.nemo_version,
        "members": [{"name": m.name, "state": m.index, "nn_date0": m.date, "nn_it000": m.nn_it000,
                     "nn_itend": m.nn_itend, "dumps": list(m.dumps), "restart": m.restart_stem,
                     "namelist_changes": m.namelist_changes()} for m in plan.members],
    }
