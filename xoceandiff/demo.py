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

import numpy as np
import torch

__all__ = ["run_demo", "quality_checks", "DEMO_CONSTRAINTS", "DEMO_SAMPLER", "DEMO_STEPS"]

DEMO_CONSTRAINTS = ("zero_mean", "border_zero_gradient")
DEMO_SAMPLER = "ddim"
DEMO_STEPS = 50
DATA_SNAPSHOTS = 200  # the bundled model's training set (see its config.json)


def quality_checks(reference, samples) -> list[tuple[str, bool, str]]:
    """The bundled model's quality criteria on a sample set, against the training data.

    Returns ``(criterion, passed, measured)`` triples: density-error percentage at most
    max(2 x data, data + 1 point); per-level mean temperature profile within 0.3 °C RMS of the data's;
    Bottom- and Deep-Water box T and S within 2 standard deviations of the data's; no missing or
    non-finite value on any ocean cell; diversity at least 30% of the data's.
    """
    import dask

    from .diagnostics import diagnostics, diversity

    ref_metrics, smp_metrics, ref_div, smp_div = dask.compute(
        diagnostics(reference), diagnostics(samples), diversity(reference), diversity(samples)
    )
    checks = []
    data_err = float(ref_metrics.check_density.mean())
    smp_err = float(smp_metrics.check_density.mean())
    limit = max(2 * data_err, data_err + 1.0)
    checks.append(("density errors <= max(2 x data, data + 1 point)", smp_err <= limit,
                   f"{smp_err:.3f} % (data {data_err:.3f} %, limit {limit:.3f} %)"))
    profile = smp_metrics.toce_profile.mean(smp_metrics.toce_profile.dims[0])
    ref_profile = ref_metrics.toce_profile.mean(ref_metrics.toce_profile.dims[0])
    rms = float(np.sqrt(np.nanmean((profile.values - ref_profile.values) ** 2)))
    checks.append(("mean temperature profile within 0.3 degC RMS", rms <= 0.3, f"{rms:.3f} degC RMS"))
    for box in ("BWbox_toce", "BWbox_soce", "DWbox_toce", "DWbox_soce"):
        mean, std = float(ref_metrics[box].mean()), float(ref_metrics[box].std())
        value = float(smp_metrics[box].mean())
        checks.append((f"{box} within 2 std of the data", abs(value - mean) <= 2 * std,
                       f"{value:.4f} (data {mean:.4f} +- {std:.4f})"))
    ocean = reference.tmask.values
    finite = all(
        bool(np.isfinite(samples[name].values[:, ocean] if samples[name].ndim == 4 else samples[name].values[:, ocean[0]]).all())
        for name in ("toce", "soce", "ssh") if name in samples
    )
    checks.append(("no missing or non-finite value on ocean cells", finite, "all finite" if finite else "NaN/inf found"))
    ratio = float(smp_div.diversity_toce) / float(ref_div.diversity_toce)
    checks.append(("diversity >= 30% of the data's (temperature)", ratio >= 0.3, f"{100 * ratio:.0f} % of the data's"))
    return checks


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
    """Run the demo; returns the paths it wrote."""
    import xoceandiff
    from xoceandiff.plotting import plot_all
    from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model
    from xoceandiff.report import report

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = sampler or DEMO_SAMPLER
    steps = steps or (DEMO_STEPS if sampler != "ddpm" else 1000)
    model = bundled_model()
    training = model.metadata.get("training", {})
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
        for criterion, passed, measured in quality_checks(data, sets[label]):
            print(f"  [{'ok' if passed else 'FAIL'}] {criterion}: {measured}")

    print(f"\ndone in {time.perf_counter() - start:.0f} s (torch threads: {torch.get_num_threads()}). Outputs:")
    for key, path in written.items():
        print(f"  {key:24s} {path}")
    print(f"  {'':24s} ({len(restarts)} restart files, {len(figures)} figures)")
    return written
