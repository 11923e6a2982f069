"""``xoceandiff demo``: a bundled model end to end, on a CPU.

``--config dino`` (the default), the bundled model on the embedded DINO-like data:

1. the DINO-like training data (``datasets.dino`` on the bundled model's grid);
2. ``n`` samples without constraints, with ``["zero_mean", "border_zero_gradient"]``, and with
   ``stable_stratification`` added (same seeds);
3. both sample sets as CF NetCDF, one NEMO restart per constrained sample (with the namelist settings);
4. the paper's diagnostics table (printed, and as Markdown, LaTeX, CSV, NetCDF) and PNG figures;
5. the quality checks of the bundled model, each with its measured value.

``--config gyre`` (:func:`run_gyre_demo`), the bundled GYRE model on the grid its checkpoint carries (no data
file needed): ``n`` samples with ``["zero_mean", "border_zero_gradient"]`` (each sample's level means those of
one training record) and with ``convective_adjustment`` added, as CF NetCDF; NEMO 5.0 restarts for GYRE's 4 h
time step from the statically stable set, with the namelist lines, each checked with
:func:`~xoceandiff.restart_check.check_restart`; the samples' density errors and convective-adjustment distance
by depth band against the GYRE run's own (recorded in the model card). Given the GYRE output files
(``--reference``), the full fidelity table against them too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

from .atomic import refuse_existing
from .canonical import ocean_mask
from .conventions import FIELDS

if TYPE_CHECKING:
    from .report import Report

__all__ = ["run_demo", "run_gyre_demo", "quality_checks", "DEMO_CONSTRAINTS", "DEMO_SAMPLER", "DEMO_STEPS",
           "GYRE_FREE_BELOW",
           "DEMO_MIN_SAMPLES", "DEMO_CONFIGS", "GYRE_RDT"]

DEMO_CONSTRAINTS = ("zero_mean", "border_zero_gradient")
DEMO_MIN_SAMPLES = 2  # the diversity check compares samples: one is not enough
DEMO_OUTPUTS = ("samples_unconstrained.nc", "samples_constrained.nc", "samples_stable.nc", "restarts", "report",
                "figures")
DEMO_SAMPLER = "ddim"
DEMO_STEPS = 50
GYRE_FREE_BELOW = 300
"""The GYRE demo's constraints rest below this timestep (DDIM-50: the last 15 steps), then apply once: the
network rebuilds the mixed layers' vertical structure alone (``free_below``, :class:`xoceandiff.sampling.SamplingOptions`)."""
DATA_SNAPSHOTS = 200  # the bundled model's training set (see its config.json)
PROFILE_RMS_LIMIT = 0.3  # degC: set-mean temperature profile against the data's
BOX_STD_LIMIT = 2.0  # box means within this many of the data's standard deviations
DIVERSITY_RATIO_LIMIT = 0.3  # temperature diversity at least this fraction of the data's
DEMO_CONFIGS = ("dino", "gyre")
GYRE_RDT = 14400.0  # s: the time step of NEMO's GYRE reference configuration (rn_Dt)
GYRE_OUTPUTS = ("samples_constrained.nc", "samples_convective.nc", "restarts", "report")


def quality_checks(rep: Report, name: str, samples: xr.Dataset) -> list[tuple[str, bool, str]]:
    """The bundled model's quality criteria on sample set ``name`` of a report, against its reference.

    Every number comes from the report (nothing is recomputed); only the finiteness of the samples
    is read from ``samples`` itself.

    Parameters
    ----------
    rep : xoceandiff.report.Report
        A report whose reference is the training data and which holds the sample set ``name``.
    name : str
        The sample set to judge.
    samples : xarray.Dataset
        That sample set's states.

    Returns
    -------
    list of (str, bool, str)
        ``(criterion, passed, measured)``: density-error percentage at most max(2 x data, data + 1
        point); set-mean temperature profile within 0.3 °C RMS of the data's (the report's
        ``profile_distance_toce``); Bottom- and Deep-Water box T and S within 2 standard deviations
        of the data's; no missing or non-finite value on any ocean cell; temperature diversity at
        least 30% of the data's.

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.report import report
    >>> data = xoceandiff.datasets.dino(n=4, resolution=4.0)
    >>> checks = quality_checks(report(data, {"A copy": data}), "A copy", data)  # a copy passes every check
    >>> len(checks), all(passed for _, passed, _ in checks)
    (8, True)
    """
    summary = rep.summary()
    data, tested = summary.sel(set=rep.reference_name), summary.sel(set=name)
    set_metrics = rep.set_metrics
    checks = []
    data_err, smp_err = float(data.check_density_mean), float(tested.check_density_mean)
    limit = max(2 * data_err, data_err + 1.0)
    checks.append(("density errors <= max(2 x data, data + 1 point)", smp_err <= limit,
                   f"{smp_err:.3f} % (data {data_err:.3f} %, limit {limit:.3f} %)"))
    rms = float(set_metrics.profile_distance_toce.sel(set=name))
    checks.append(("mean temperature profile within 0.3 degC RMS", rms <= PROFILE_RMS_LIMIT, f"{rms:.3f} degC RMS"))
    for box in ("BWbox_toce", "BWbox_soce", "DWbox_toce", "DWbox_soce"):
        mean, std = float(data[f"{box}_mean"]), float(data[f"{box}_std"])
        value = float(tested[f"{box}_mean"])
        checks.append((f"{box} within 2 std of the data", abs(value - mean) <= BOX_STD_LIMIT * std,
                       f"{value:.4f} (data {mean:.4f} +- {std:.4f})"))
    finite = all(
        bool(np.isfinite(samples[field].where(ocean_mask(samples, field), 0.0)).all())
        for field in FIELDS if field in samples
    )
    checks.append(("no missing or non-finite value on ocean cells", finite, "all finite" if finite else "NaN/inf found"))
    ratio = float(set_metrics.diversity_toce.sel(set=name)) / float(set_metrics.diversity_toce.sel(set=rep.reference_name))
    checks.append(("diversity >= 30% of the data's (temperature)", ratio >= DIVERSITY_RATIO_LIMIT,
                   f"{100 * ratio:.0f} % of the data's"))
    return checks


def _check_demo_arguments(out: Path, n: int, sampler: str, steps: int, seed: int, overwrite: bool,
                          outputs: tuple[str, ...] = DEMO_OUTPUTS) -> None:
    """Everything the demo needs from its arguments, checked in milliseconds before any work."""
    from .errors import InvalidDataError
    from .sampling import SAMPLERS

    def integer(value: object, minimum: int) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= minimum

    if not integer(n, DEMO_MIN_SAMPLES):
        raise InvalidDataError(f"n: expected an integer >= {DEMO_MIN_SAMPLES} (the diversity check compares "
                               f"samples), found {n!r}; pass n={DEMO_MIN_SAMPLES} or more (--n on the command line).")
    if sampler not in SAMPLERS:
        raise InvalidDataError(f"sampler: expected one of {sorted(SAMPLERS)}, found {sampler!r}.")
    if not integer(steps, 1):
        raise InvalidDataError(f"steps: expected a positive integer, found {steps!r}.")
    if not integer(seed, 0):
        raise InvalidDataError(f"seed: expected an integer >= 0, found {seed!r}.")
    if out.exists() and not out.is_dir():
        raise InvalidDataError(f"out: expected a folder, found the file {str(out)!r}; choose a folder.")
    if not overwrite:
        for name in outputs:
            path = out / name
            if path.is_dir() and not any(path.iterdir()):
                continue  # an empty folder holds nothing to lose
            refuse_existing(path, overwrite)


def run_demo(
    out: str | os.PathLike = "xoceandiff-demo",
    n: int = 8,
    sampler: str | None = None,
    steps: int | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    config: str = "dino",
    reference: str | os.PathLike | None = None,
    day: float | None = None,
) -> dict[str, Path]:
    """Run the demo; returns the paths it wrote.

    Parameters
    ----------
    out : path
        Output folder (created when the first file is written).
    n : int
        Samples per setting, at least :data:`DEMO_MIN_SAMPLES` (the diversity check compares samples).
    sampler : str, optional
        ``ddpm``, ``ddim`` or ``dpm`` (default :data:`DEMO_SAMPLER`).
    steps : int, optional
        Sampling steps (default :data:`DEMO_STEPS`, 1000 for ``ddpm``).
    seed : int
        Sample ``i`` uses the random stream ``(seed, i)``; at least 0.
    progress : bool
        Show progress bars.
    overwrite : bool
        Replace the outputs of a previous demo in ``out``.
    config : {"dino", "gyre"}
        Which bundled model: the DINO-like one on its embedded data, or the GYRE one (:func:`run_gyre_demo`).
    day : float, optional
        ``config="gyre"``: states for this day of the year (0-based), restarts starting there.
    reference : path, optional
        ``config="gyre"`` only: a folder with GYRE's output (``GYRE_5d_*_grid_T.nc`` and ``mesh_mask.nc``) to
        measure the samples against.

    Returns
    -------
    dict of str to pathlib.Path
        The sample files, and the restart, report and figure folders.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        An argument out of range; raised before any work.
    xoceandiff.errors.OutputExistsError
        A previous demo's output is in ``out`` and ``overwrite`` is False; raised before any work.
    """
    if config not in DEMO_CONFIGS:
        from .errors import InvalidDataError

        raise InvalidDataError(f"config: expected one of {list(DEMO_CONFIGS)}, found {config!r}.")
    if config == "gyre":
        return run_gyre_demo(out, n, sampler, steps, seed=seed, progress=progress, overwrite=overwrite,
                             reference=reference, day=day)
    start = time.perf_counter()
    out = Path(out)
    sampler = sampler or DEMO_SAMPLER
    steps = steps if steps is not None else (DEMO_STEPS if sampler != "ddpm" else 1000)
    _check_demo_arguments(out, n, sampler, steps, seed, overwrite)  # in milliseconds, before anything heavy

    import xoceandiff
    from xoceandiff.plotting import plot_all
    from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model
    from xoceandiff.report import report

    model = bundled_model()
    training = model.card.training if model.card is not None else {}
    print(f"bundled model: '{model.config['preset']}' preset, {model.n_parameters / 1e6:.2f} M parameters, "
          f"trained {training.get('steps', '?')} steps on the {BUNDLED_RESOLUTION:g} degree DINO-like grid")
    data = xoceandiff.datasets.dino(n=DATA_SNAPSHOTS, resolution=BUNDLED_RESOLUTION, seed=0)
    written: dict[str, Path] = {}
    sets = {}
    settings = (
        ("No constraint", "unconstrained", ()),
        ("Constraint", "constrained", DEMO_CONSTRAINTS),
        ("Constraint + stability", "stable", DEMO_CONSTRAINTS + ("stable_stratification",)),
    )
    for label, name, constraints in settings:
        print(f"\nsampling {n} states, {sampler} {steps} steps, constraints: {', '.join(constraints) or 'none'}")
        samples = data.oceandiff.sample(n, list(constraints), model=model, sampler=sampler, steps=steps, seed=seed,
                                        progress=progress)
        sets[label] = samples
        written[f"samples_{name}"] = samples.oceandiff.to_netcdf(out / f"samples_{name}.nc", overwrite=overwrite)

    restarts = sets["Constraint"].oceandiff.to_restart(out / "restarts", overwrite=overwrite)
    written["restarts"] = Path(restarts[0]).parent if restarts else out / "restarts"

    print("\ndiagnostics (the paper's table):")
    rep = report(reference=data, samples=sets, out=out / "report", overwrite=overwrite)
    print(rep.to_markdown())
    written["report"] = out / "report"
    figures = plot_all(data, sets, out / "figures", report=rep, overwrite=overwrite)
    written["figures"] = out / "figures"

    for label in ("Constraint", "Constraint + stability"):
        print(f"\nquality of the samples '{label}' against the training data:")
        for criterion, passed, measured in quality_checks(rep, label, sets[label]):
            print(f"  [{'ok' if passed else 'FAIL'}] {criterion}: {measured}")

    print(f"\ndone in {time.perf_counter() - start:.0f} s (torch threads: {torch.get_num_threads()}). Outputs:")
    for key, path in written.items():
        print(f"  {key:24s} {path}")
    print(f"  {'':24s} ({len(restarts)} restart files, {len(figures)} figures)")
    return written


def _own_measures(samples: xr.Dataset) -> dict[str, float]:
    """Density errors (%) and T convective-adjustment distance (degC) by depth band of a set, on its own."""
    from .canonical import DEPTH_BANDS
    from .fidelity import convective_distance, density_errors_by_band

    errors = density_errors_by_band(samples, samples).compute()
    distance = convective_distance(samples, samples).compute()
    out = {}
    for band in DEPTH_BANDS:
        out[f"density_errors_{band}"] = float(errors[f"density_errors_samples_{band}"])
        key = f"convective_distance_samples_toce_{band}"
        if key in distance:
            out[f"convective_distance_toce_{band}"] = float(distance[key])
    return out


def run_gyre_demo(
    out: str | os.PathLike = "xoceandiff-demo-gyre",
    n: int = 8,
    sampler: str | None = None,
    steps: int | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    reference: str | os.PathLike | None = None,
    day: float | None = None,
) -> dict[str, Path]:
    """The bundled GYRE model: samples, NEMO 5.0 restarts for GYRE and their physical measures (see the module).

    Arguments as :func:`run_demo`; ``reference`` is an optional folder with GYRE's output files to measure the
    samples against (the fidelity table). ``day`` (0-based day of the 360-day year) samples states for that
    day of the year: the samples carry its date, and the restarts start there (``nn_date0``, and ``nn_it000``
    at its step of the year, since GYRE's forcing follows the step counter). Returns the paths written.
    """
    start = time.perf_counter()
    out = Path(out)
    sampler = sampler or DEMO_SAMPLER
    steps = steps if steps is not None else (DEMO_STEPS if sampler != "ddpm" else 1000)
    _check_demo_arguments(out, n, sampler, steps, seed, overwrite, GYRE_OUTPUTS)
    reference_files = _gyre_reference_files(reference) if reference is not None else None

    from .pretrained import bundled_model
    from .restart_check import check_restart

    model = bundled_model(config="gyre")
    card = model.card
    training = card.training
    print(f"bundled GYRE model: '{model.config['preset']}' preset, {model.n_parameters / 1e6:.2f} M parameters, "
          f"trained {training.get('steps', '?')} steps on {training.get('records', '?')} five-day means of NEMO 5.0 "
          f"GYRE (grid {card.grid_shape[2]} x {card.grid_shape[1]} x {card.grid_shape[0]}, carried by the checkpoint)")
    grid = card.grid
    condition = None
    if day is not None:
        from .errors import InvalidDataError

        if not any(spec.name == "day_of_year" for spec in model.conditions):
            raise InvalidDataError("day: the bundled GYRE model was not trained with the day of the year.")
        condition = {"day_of_year": float(day)}
    written: dict[str, Path] = {}
    sets = {}
    settings = (("Constraint", "constrained", DEMO_CONSTRAINTS),
                ("Constraint + convection", "convective", DEMO_CONSTRAINTS + ("convective_adjustment",)))
    for label, name, constraints in settings:
        print(f"\nsampling {n} states, {sampler} {steps} steps, constraints: {', '.join(constraints)} (resting "
              f"below timestep {GYRE_FREE_BELOW}, then once); level means of one training record per sample"
              + ("" if day is None else f" among those nearest day {day:g} of the year"))
        samples = grid.oceandiff.sample(n, list(constraints), model=model, sampler=sampler, steps=steps, seed=seed,
                                        progress=progress, level_means="records", condition=condition,
                                        free_below=GYRE_FREE_BELOW)
        sets[label] = samples
        written[f"samples_{name}"] = samples.oceandiff.to_netcdf(out / f"samples_{name}.nc", overwrite=overwrite)

    # The statically stable set is the one to start NEMO from.
    stable = sets["Constraint + convection"]
    kt = 0
    if "time" in stable.coords:  # GYRE's forcing follows the step counter: start at the date's step of the year
        from .conditions import yyyymmdd
        from .ensemble import step_of_year

        first = stable.time.values[0]
        kt = step_of_year(yyyymmdd(first), GYRE_RDT, first.calendar)
    restarts = stable.oceandiff.to_restart(out / "restarts", rdt=GYRE_RDT, nemo_version="5.0", kt=kt,
                                           overwrite=overwrite)
    written["restarts"] = Path(restarts[0]).parent
    problems = [problem for path in restarts for problem in check_restart(path, grid)]
    print(f"\n{len(restarts)} NEMO 5.0 restarts for GYRE (rn_Dt = {GYRE_RDT:g} s) in {written['restarts']}, namelist "
          f"lines in {written['restarts'] / 'namelist_restart.txt'}; check_restart: "
          f"{'no problem' if not problems else '; '.join(problems)}")
    if day is None and "time" in stable.coords:
        print(f"each state is generated for the date of the training record whose level means it has, and each "
              f"restart carries that date (ndastp); GYRE's analytic forcing follows the time-step counter, so the "
              f"namelist starts the first one ({stable.time.values[0].strftime('%Y-%m-%d')}) at nn_it000 = {kt + 1}, "
              "its day's step of the year (another restart: that of its own date, 6 steps a day).")
    elif day is None:
        print("GYRE's analytic forcing follows the time-step counter: nn_it000 = 1 starts at the forcing's 1 January.")
    else:
        print(f"states for day {day:g} of the year ({stable.time.values[0].strftime('%Y-%m-%d')}): GYRE's analytic "
              f"forcing follows the time-step counter, so the namelist starts at nn_it000 = {kt + 1}, that day's "
              "step of the year.")

    recorded = training.get("reference_measures", {})
    print("\nphysical measures by depth band (density errors: % of the band's volume under an unstable interface; "
          "convective distance: RMS change of T by convective adjustment):")
    rows = {label: _own_measures(samples) for label, samples in sets.items()}
    keys = list(next(iter(rows.values())))
    print("| set | " + " | ".join(keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    if recorded:
        print("| GYRE run (recorded) | " + " | ".join(f"{recorded.get(k, float('nan')):.4g}" for k in keys) + " |")
    for label, values in rows.items():
        print(f"| {label} | " + " | ".join(f"{values[k]:.4g}" for k in keys) + " |")

    if reference_files is not None:
        import xoceandiff
        from xoceandiff.report import report

        data = xoceandiff.open_nemo(reference_files[0], mesh_mask=reference_files[1])
        rep = report(reference=data, samples=sets, out=out / "report", overwrite=overwrite)
        print("\n" + rep.to_markdown())
        written["report"] = out / "report"

    print(f"\ndone in {time.perf_counter() - start:.0f} s (torch threads: {torch.get_num_threads()}). Outputs:")
    for key, path in written.items():
        print(f"  {key:24s} {path}")
    return written


def _gyre_reference_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """The grid_T file and the mesh mask of a GYRE output folder, checked before any work."""
    from .errors import InvalidDataError

    folder = Path(folder)
    grids = sorted(folder.glob("GYRE_*_grid_T.nc")) if folder.is_dir() else []
    mesh = folder / "mesh_mask.nc"
    if len(grids) != 1 or not mesh.exists():
        raise InvalidDataError(
            f"reference: expected a folder with one GYRE_*_grid_T.nc file and mesh_mask.nc, found "
            f"{[p.name for p in grids] or 'no grid_T file'} and {'a' if mesh.exists() else 'no'} mesh_mask.nc in "
            f"{str(folder)!r}; pass the folder of a GYRE run's output (e.g. ../shared/data/gyre)."
        )
    return grids[0], mesh
