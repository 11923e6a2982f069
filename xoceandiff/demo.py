"""``xoceandiff demo``: the bundled model on the embedded DINO-like data, end to end, on a CPU.

1. the DINO-like training data (``datasets.dino`` on the bundled model's grid);
2. ``n`` samples without constraints, with ``["zero_mean", "border_zero_gradient"]``, and with
   ``stable_stratification`` added (same seeds);
3. both sample sets as CF NetCDF, one NEMO restart per constrained sample (with the namelist settings);
4. the paper's diagnostics table (printed, and as Markdown, LaTeX, CSV, NetCDF) and PNG figures;
5. the quality checks of the bundled model, each with its measured value.
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

__all__ = ["run_demo", "quality_checks", "DEMO_CONSTRAINTS", "DEMO_SAMPLER", "DEMO_STEPS", "DEMO_MIN_SAMPLES"]

DEMO_CONSTRAINTS = ("zero_mean", "border_zero_gradient")
DEMO_MIN_SAMPLES = 2  # the diversity check compares samples: one is not enough
DEMO_OUTPUTS = ("samples_unconstrained.nc", "samples_constrained.nc", "samples_stable.nc", "restarts", "report",
                "figures")
DEMO_SAMPLER = "ddim"
DEMO_STEPS = 50
DATA_SNAPSHOTS = 200  # the bundled model's training set (see its config.json)
PROFILE_RMS_LIMIT = 0.3  # degC: set-mean temperature profile against the data's
BOX_STD_LIMIT = 2.0  # box means within this many of the data's standard deviations
DIVERSITY_RATIO_LIMIT = 0.3  # temperature diversity at least this fraction of the data's


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


def _check_demo_arguments(out: Path, n: int, sampler: str, steps: int, seed: int, overwrite: bool) -> None:
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
        for name in DEMO_OUTPUTS:
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
