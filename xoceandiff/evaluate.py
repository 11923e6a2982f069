r"""Reading NEMO runs back: did each member survive, how much did NEMO reshape its state, how did it drift.

For each member folder of an ensemble (:func:`xoceandiff.ensemble.make_ensemble`, or any NEMO run folder that
started from a restart) the measures are, with :math:`V_c` the volume of ocean T cell :math:`c`, :math:`x^0` the
state the run started from (its ``cn_ocerst_in`` restart) and :math:`x^s` the restart NEMO dumped at step
:math:`s` after the start:

- **survived**: NEMO reached ``nn_itend`` without stopping; a member that stopped gives the step and NEMO's
  message, from ``ocean.output`` (its ``E R R O R`` block) or else the last step of ``run.stat``;
- **adjustment** of T and S by depth band :math:`b` (:data:`~xoceandiff.canonical.DEPTH_BANDS`), the volume
  RMS change since the start,
  :math:`A_b(s) = \sqrt{\sum_{c \in b} V_c (x^s_c - x^0_c)^2 / \sum_{c \in b} V_c}`;
- **drift** of the volume means, :math:`D(s) = \sum_c V_c x^s_c / \sum_c V_c - \sum_c V_c x^0_c / \sum_c V_c`,
  at the dumps, and over the run's own output (``*grid_T*`` files, any NEMO writer) when there is some;
- **kinetic energy** per unit mass at the dumps,
  :math:`K(s) = \tfrac12 (\sum_u V_u u^2 + \sum_v V_v v^2) / \sum_c V_c`, with :math:`V_u = e_{1u} e_{2u} e_{3t}`
  on ocean U points (z levels: the U cell has its T neighbour's thickness), likewise for V;
- **max |u|** over time from ``run.stat``, and at the dumps.

:func:`evaluate` gathers every member of a sample ensemble and of a reference ensemble (restarts from true
states) and gives, for each measure at each dumped step, the set means and their ratio sample/reference.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .canonical import DEPTH_BANDS
from .errors import InvalidDataError, MissingVariableError
from .ranks import piece_window
from .restart_format import read_namelist

__all__ = [
    "MemberRun",
    "EnsembleEvaluation",
    "evaluate",
    "evaluate_member",
    "read_run_stat",
    "run_status",
]

PathLike = str | os.PathLike

_DUMP = re.compile(r"^(?P<exp>.+)_(?P<kt>\d{8})_(?P<stem>.+?)(?:_(?P<rank>\d{4}))?\.nc$")
_RUN_STAT = re.compile(r"\bit\s*:\s*(?P<step>\d+)(?P<rest>.*)")
_NUMBER = r"([-+]?\d*\.?\d+(?:[EeDd][-+]?\d+)?)"
_ERROR = "E R R O R"


@dataclass(frozen=True)
class MemberRun:
    """One member's status and measures (see the module docstring)."""

    name: str
    folder: Path
    survived: bool
    stopped_at: int | None
    message: str
    measures: xr.Dataset


# --- text files NEMO writes ------------------------------------------------------------------------------


def _number(text: str) -> float:
    return float(text.replace("D", "E").replace("d", "e"))


def read_run_stat(folder: PathLike) -> xr.Dataset:
    """``run.stat`` of a NEMO run: per time step, ``ssh_max`` (|ssh| max), ``u_max`` (|U| max), ``s_min``, ``s_max``.

    NEMO writes one line per step, ``it :  kt  |ssh|_max: v |U|_max: v S_min: v S_max: v`` (Fortran ``D``
    exponents). An empty dataset when the file is absent.
    """
    path = Path(folder) / "run.stat"
    if not path.is_file():
        return xr.Dataset()
    keys = {"ssh_max": r"\|ssh\|_max:", "u_max": r"\|U\|_max:", "s_min": r"S_min:", "s_max": r"S_max:"}
    steps, rows = [], []
    for line in path.read_text(errors="replace").splitlines():
        match = _RUN_STAT.search(line)
        if match is None:
            continue
        row = {}
        for name, label in keys.items():
            found = re.search(label + r"\s*" + _NUMBER, match["rest"])
            row[name] = _number(found.group(1)) if found else np.nan
        steps.append(int(match["step"]))
        rows.append(row)
    data = {name: ("step", np.array([r[name] for r in rows], dtype=np.float64)) for name in keys}
    out = xr.Dataset(data, coords={"step": ("step", np.array(steps, dtype=np.int64))})
    out["u_max"].attrs = {"long_name": "Maximum |U| over the domain (run.stat)", "units": "m s-1"}
    out["ssh_max"].attrs = {"long_name": "Maximum |ssh| over the domain (run.stat)", "units": "m"}
    return out


def run_status(folder: PathLike, *, last_step: int | None = None) -> tuple[bool, int | None, str]:
    """(survived, step it stopped at or None, NEMO's message) of the run in ``folder``.

    A run stopped when its ``ocean.output`` holds NEMO's ``E R R O R`` block (the message is that block, the step
    its ``kt=`` or the last step of ``run.stat``), or when ``run.stat`` ends before ``last_step``.
    """
    folder = Path(folder)
    stat = read_run_stat(folder)
    reached = int(stat.step[-1]) if stat.sizes.get("step") else None
    output = folder / "ocean.output"
    text = output.read_text(errors="replace") if output.is_file() else ""
    if _ERROR in text:
        block = text[text.index(_ERROR):].splitlines()
        message = " ".join(line.strip() for line in block[1:8] if line.strip() and set(line.strip()) != {"="})
        kt = re.search(r"kt\s*=\s*(\d+)", text[text.index(_ERROR):])
        return False, int(kt.group(1)) if kt else reached, message
    if last_step is not None and (reached is None or reached < last_step):
        where = "no run.stat" if reached is None else f"run.stat ends at step {reached}"
        return False, reached, f"{where}, before nn_itend = {last_step} (no error in ocean.output)"
    return True, None, ""


# --- restarts -------------------------------------------------------------------------------------------


def _read_restart(paths: Sequence[Path], shape: tuple[int, int, int], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The global fields ``names`` of a restart, from the global file or its per-rank pieces."""
    import netCDF4

    nz, ny, nx = shape
    out = {name: np.zeros((nz, ny, nx)) for name in names}
    for path in paths:
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_mask(False)
            window = piece_window({k: nc.getncattr(k) for k in nc.ncattrs()}) if len(paths) > 1 else None
            for name in names:
                if name not in nc.variables:
                    raise MissingVariableError(f"{str(path)!r}: no {name!r}; expected a NEMO restart (tn, sn, un, vn).")
                values = np.asarray(nc.variables[name][...], dtype=np.float64)
                values = values.reshape(values.shape[-3:]) if values.ndim >= 3 else values
                if window is None:
                    if values.shape != (nz, ny, nx):
                        raise InvalidDataError(f"{str(path)!r}: {name} has shape {values.shape}, expected {(nz, ny, nx)} "
                                               "(the mesh_mask's); pass the configuration's mesh_mask.")
                    out[name] = values
                else:
                    out[name][:, window[0], window[1]] = values
    return out


def _restart_files(folder: Path) -> dict[int, list[Path]]:
    """NEMO's restart dumps in ``folder`` by time step: ``<exp>_<kt:08d>_<name>[_<rank:04d>].nc``."""
    dumps: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("*.nc")):
        match = _DUMP.match(path.name)
        if match is not None:
            dumps.setdefault(int(match["kt"]), []).append(path)
    return dumps


def _initial_files(folder: Path, stem: str) -> list[Path]:
    single = folder / f"{stem}.nc"
    if single.is_file():
        return [single]
    pieces = sorted(folder.glob(f"{stem}_[0-9][0-9][0-9][0-9].nc"))
    if not pieces:
        raise MissingVariableError(f"{str(folder)!r}: the run's restart {stem}.nc (cn_ocerst_in) is not there; "
                                   "evaluate reads run folders made by 'xoceandiff ensemble' or started from a restart.")
    return pieces


# --- measures -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mesh:
    tmask: np.ndarray
    umask: np.ndarray
    vmask: np.ndarray
    volume: np.ndarray
    volume_u: np.ndarray
    volume_v: np.ndarray
    bands: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.tmask.shape)  # type: ignore[return-value]


def _mesh(mesh_mask: PathLike | xr.Dataset) -> _Mesh:
    from .nemo import open_grid

    grid = mesh_mask if isinstance(mesh_mask, xr.Dataset) else open_grid(mesh_mask)
    needed = ("tmask", "umask", "vmask", "e1t", "e2t", "e1u", "e2u", "e1v", "e2v", "e3t", "gdept_1d")
    missing = [n for n in needed if n not in grid.variables]
    if missing:
        raise MissingVariableError(f"mesh_mask: lacks {missing}; pass the mesh_mask.nc NEMO wrote for the runs.")

    def values(name: str) -> np.ndarray:
        return np.asarray(grid[name].values, dtype=np.float64)

    tmask = values("tmask") > 0
    umask, vmask = values("umask") > 0, values("vmask") > 0
    e3t = values("e3t")
    depth = values("gdept_1d")[:, None, None]
    bands = {name: tmask & (depth >= top) & (depth < bottom) for name, (top, bottom) in DEPTH_BANDS.items()}
    return _Mesh(tmask, umask, vmask, values("e1t") * values("e2t") * e3t * tmask,
                 values("e1u") * values("e2u") * e3t * umask, values("e1v") * values("e2v") * e3t * vmask, bands)


def _state_measures(state: dict[str, np.ndarray], start: dict[str, np.ndarray], mesh: _Mesh) -> dict[str, float]:
    out: dict[str, float] = {}
    total = mesh.volume.sum()
    for field, name in (("toce", "tn"), ("soce", "sn")):
        change = state[name] - start[name]
        for band, cells in mesh.bands.items():
            weight = mesh.volume[cells]
            out[f"adjustment_{field}_{band}"] = float(np.sqrt(np.sum(weight * change[cells] ** 2) / weight.sum()))
        out[f"drift_{field}"] = float(np.sum(mesh.volume * change) / total)
    if "un" in state:
        energy = np.sum(mesh.volume_u * state["un"] ** 2) + np.sum(mesh.volume_v * state["vn"] ** 2)
        out["kinetic_energy"] = float(0.5 * energy / total)
        out["u_max_dump"] = float(np.max(np.abs(np.where(mesh.umask, state["un"], 0.0))))
    return out


_ATTRS = {
    "adjustment": ("Volume RMS change since the start", {"toce": "degC", "soce": "1e-3"}),
    "drift": ("Change of the volume mean since the start", {"toce": "degC", "soce": "1e-3"}),
    "kinetic_energy": ("Volume-mean kinetic energy per unit mass", "m2 s-2"),
    "u_max_dump": ("Maximum |u| in the dumped restart", "m s-1"),
}


def _attrs(name: str) -> dict[str, str]:
    for prefix, (label, units) in _ATTRS.items():
        if name.startswith(prefix):
            if isinstance(units, dict):
                field = "toce" if "toce" in name else "soce"
                band = name.split(f"{field}_")[-1] if "adjustment" in name else "whole ocean"
                return {"long_name": f"{label} of {field}, {band}", "units": units[field]}
            return {"long_name": label, "units": units}
    return {}


def _output_drift(folder: Path, mesh_mask: PathLike | xr.Dataset, start: dict[str, np.ndarray], mesh: _Mesh) -> xr.Dataset:
    files = sorted(p for p in folder.glob("*grid_T*.nc"))
    if not files or isinstance(mesh_mask, xr.Dataset):
        return xr.Dataset()
    from .nemo import open_nemo

    ds = open_nemo(files, mesh_mask=mesh_mask)
    total = mesh.volume.sum()
    out = {}
    for field, name in (("toce", "tn"), ("soce", "sn")):
        values = ds[field].fillna(0.0).values
        means = np.tensordot(values, mesh.volume, axes=3) / total
        out[f"output_drift_{field}"] = (("time",), means - np.sum(mesh.volume * start[name]) / total,
                                        {"long_name": f"Volume mean of {field} in the run's output minus the start's",
                                         "units": "degC" if field == "toce" else "1e-3"})
    return xr.Dataset(out, coords={"time": ("time", ds["t"].values)})


def evaluate_member(folder: PathLike, mesh_mask: PathLike | xr.Dataset) -> MemberRun:
    """Status and measures of one NEMO run folder (see the module docstring).

    Parameters
    ----------
    folder : path
        A run folder: ``namelist_cfg`` (``cn_ocerst_in``, ``nn_it000``, ``nn_itend``), the restart it started
        from, and what NEMO wrote (``ocean.output``, ``run.stat``, restart dumps, output files).
    mesh_mask : path or xarray.Dataset
        The configuration's mesh_mask.

    Returns
    -------
    MemberRun
        ``measures`` holds, along ``dump`` (steps after the start), the adjustments, drifts, kinetic energy and
        max |u| at each dump; along ``step``, ``u_max`` and ``ssh_max`` of ``run.stat``; along ``time``, the
        drift of the output's volume means.
    """
    return _evaluate_member(Path(folder), mesh_mask, _mesh(mesh_mask))


def _evaluate_member(folder: Path, mesh_mask: PathLike | xr.Dataset, mesh: _Mesh) -> MemberRun:
    if not (folder / "namelist_cfg").is_file():
        raise MissingVariableError(f"{str(folder)!r}: no namelist_cfg; expected a NEMO run folder.")
    run = read_namelist(folder / "namelist_cfg").get("namrun", {})
    first, last = int(run.get("nn_it000", 1)), run.get("nn_itend")
    survived, stopped_at, message = run_status(folder, last_step=None if last is None else int(last))
    names = ("tn", "sn", "un", "vn")
    start = _read_restart(_initial_files(folder, str(run.get("cn_ocerst_in", "restart"))), mesh.shape, ("tn", "sn"))
    rows, steps = [], []
    for kt, paths in sorted(_restart_files(folder).items()):
        state = _read_restart(paths, mesh.shape, names)
        rows.append(_state_measures(state, start, mesh))
        steps.append(kt - (first - 1))
    data: dict[str, Any] = {}
    if rows:
        for key in rows[0]:
            data[key] = (("dump",), np.array([r[key] for r in rows]), _attrs(key))
    measures = xr.Dataset(data, coords={"dump": ("dump", np.array(steps, dtype=np.int64),
                                                 {"long_name": "Time steps since the start"})})
    measures = xr.merge([measures, read_run_stat(folder), _output_drift(folder, mesh_mask, start, mesh)])
    measures.attrs = {"member": folder.name, "survived": int(survived),
                      "stopped_at": -1 if stopped_at is None else stopped_at, "message": message}
    return MemberRun(folder.name, folder, survived, stopped_at, message, measures)


# --- ensembles ------------------------------------------------------------------------------------------


def _members(runs: Path) -> list[Path]:
    if not runs.is_dir():
        raise FileNotFoundError(f"runs: {str(runs)!r} is not a folder; pass the folder 'xoceandiff ensemble' wrote.")
    members = sorted(p for p in runs.iterdir() if p.is_dir() and (p / "namelist_cfg").is_file())
    if not members:
        raise MissingVariableError(f"runs: no run folder (with a namelist_cfg) in {str(runs)!r}.")
    return members


@dataclass(frozen=True)
class EnsembleEvaluation:
    """Members of the sample and reference ensembles, and the comparison table."""

    samples: tuple[MemberRun, ...]
    reference: tuple[MemberRun, ...]
    table: xr.Dataset

    def to_markdown(self) -> str:
        """The per-member status and the comparison table as Markdown."""
        lines = ["| set | member | survived | stopped at | NEMO's message |", "| --- | --- | --- | ---: | --- |"]
        for label, members in (("samples", self.samples), ("reference", self.reference)):
            for m in members:
                lines.append(f"| {label} | {m.name} | {'yes' if m.survived else 'no'} | "
                             f"{'' if m.stopped_at is None else m.stopped_at} | {m.message} |")
        lines += ["", "| measure | step | samples | reference | ratio |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {key} | {step} | " + " | ".join(f"{v:.4g}" for v in values) + " |" for key, step, values in self.rows()]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The comparison table as CSV (one row per measure and step)."""
        rows = ["measure,step,samples,reference,ratio"]
        rows += [f"{key},{step}," + ",".join(repr(v) for v in values) for key, step, values in self.rows()]
        return "\n".join(rows) + "\n"

    def rows(self) -> list[tuple[str, int, list[float]]]:
        """(measure, step, [samples, reference, ratio]) for every measure and dumped step of the table."""
        out = []
        for name in self.table.data_vars:
            if name.startswith("samples_"):
                key = name[len("samples_"):]
                for dump in self.table.dump.values:
                    out.append((key, int(dump), [float(self.table[f"{who}_{key}"].sel(dump=dump))
                                                 for who in ("samples", "reference", "ratio")]))
        return out


def _set_mean(members: Sequence[MemberRun]) -> xr.Dataset:
    """Mean over the surviving members of their measures at the dumps every one of them has."""
    alive = [m.measures for m in members if m.survived and "dump" in m.measures.dims]
    if not alive:
        return xr.Dataset()
    common = sorted(set.intersection(*(set(int(d) for d in m.dump.values) for m in alive)))
    keys = [k for k in alive[0].data_vars if alive[0][k].dims == ("dump",)]
    stacked = {k: np.mean([m[k].sel(dump=common).values for m in alive], axis=0) for k in keys}
    return xr.Dataset({k: (("dump",), v, alive[0][k].attrs) for k, v in stacked.items()}, coords={"dump": common})


def evaluate(runs: PathLike, reference: PathLike | None = None, *, mesh_mask: PathLike | xr.Dataset,
             out: PathLike | None = None, overwrite: bool = False) -> EnsembleEvaluation:
    """Read back a sample ensemble (and a reference ensemble of true states) and compare them.

    Parameters
    ----------
    runs : path
        The sample ensemble's folder (one run folder per member, as written by
        :func:`~xoceandiff.ensemble.make_ensemble` and run).
    reference : path, optional
        The reference ensemble (restarts from true states, run the same way).
    mesh_mask : path or xarray.Dataset
        The configuration's mesh_mask.
    out : path, optional
        Write ``evaluation.md``, ``evaluation.csv``, ``evaluation.nc`` (the table and every member's measures)
        and figures there.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    EnsembleEvaluation
        ``table`` holds ``samples_<measure>``, ``reference_<measure>`` (means over the surviving members) and
        ``ratio_<measure>`` along ``dump``.
    """
    mesh = _mesh(mesh_mask)  # read once for every member
    samples = tuple(_evaluate_member(folder, mesh_mask, mesh) for folder in _members(Path(runs)))
    refs = tuple(_evaluate_member(folder, mesh_mask, mesh) for folder in _members(Path(reference))) if reference else ()
    mean_s, mean_r = _set_mean(samples), _set_mean(refs)
    table = xr.Dataset()
    if mean_s.data_vars:
        if mean_r.data_vars:
            steps = sorted(set(int(d) for d in mean_s.dump.values) & set(int(d) for d in mean_r.dump.values))
            mean_s, mean_r = mean_s.sel(dump=steps), mean_r.sel(dump=steps)
        for key in mean_s.data_vars:
            table[f"samples_{key}"] = mean_s[key]
            if key in mean_r:
                table[f"reference_{key}"] = mean_r[key]
                table[f"ratio_{key}"] = (mean_s[key] / mean_r[key]).assign_attrs(
                    long_name=f"samples over reference: {mean_s[key].attrs.get('long_name', key)}", units="1")
            else:
                table[f"reference_{key}"] = mean_s[key] * np.nan
                table[f"ratio_{key}"] = mean_s[key] * np.nan
    result = EnsembleEvaluation(samples, refs, table)
    if out is not None:
        _write(result, Path(out), overwrite)
    return result


def _write(result: EnsembleEvaluation, out: Path, overwrite: bool) -> None:
    from .atomic import atomic_path

    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "evaluation.md").write_text(result.to_markdown())
        (tmp / "evaluation.csv").write_text(result.to_csv())
        result.table.to_netcdf(tmp / "evaluation.nc", group="table")
        for label, members in (("samples", result.samples), ("reference", result.reference)):
            for m in members:
                m.measures.to_netcdf(tmp / "evaluation.nc", mode="a", group=f"{label}/{m.name}")
        _figures(result, tmp / "figures")


def _figures(result: EnsembleEvaluation, folder: Path) -> None:
    """Adjustment of T by depth band over the dumped steps; kinetic energy and max |u| over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir()
    colours = {"samples": "tab:red", "reference": "tab:blue"}
    fig, axes = plt.subplots(1, len(DEPTH_BANDS), figsize=(4 * len(DEPTH_BANDS), 3.2), constrained_layout=True)
    for ax, band in zip(np.atleast_1d(axes), DEPTH_BANDS, strict=True):
        for label, members in (("samples", result.samples), ("reference", result.reference)):
            for i, m in enumerate(members):
                key = f"adjustment_toce_{band}"
                if key in m.measures:
                    ax.plot(m.measures.dump, m.measures[key], "o-", color=colours[label], alpha=0.6,
                            label=label if i == 0 else None)
        ax.set_title(f"T adjustment, {band}")
        ax.set_xlabel("time steps since the start")
        ax.set_ylabel("°C (volume RMS)")
        ax.legend()
    fig.savefig(folder / "adjustment_by_band.png", dpi=100)
    plt.close(fig)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    for label, members in (("samples", result.samples), ("reference", result.reference)):
        for i, m in enumerate(members):
            if "kinetic_energy" in m.measures:
                left.plot(m.measures.dump, m.measures.kinetic_energy, "o-", color=colours[label], alpha=0.6,
                          label=label if i == 0 else None)
            if "u_max" in m.measures:
                right.plot(m.measures.step, m.measures.u_max, color=colours[label], alpha=0.6,
                           label=label if i == 0 else None)
    left.set(title="kinetic energy (spin-up)", xlabel="time steps since the start", ylabel="m2 s-2")
    right.set(title="max |U| (run.stat)", xlabel="time step", ylabel="m s-1")
    left.legend()
    right.legend()
    fig.savefig(folder / "kinetic_energy.png", dpi=100)
    plt.close(fig)
