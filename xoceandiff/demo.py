"""``xoceandiff demo``: the bundled model on the embedded DINO-like data, end to end, on a CPU.

Samples ``n`` states without constraints and with ``["zero_mean", "border_zero_gradient"]`` (same seeds),
writes them as CF NetCDF, and prints where everything went.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

__all__ = ["run_demo", "DEMO_CONSTRAINTS", "DEMO_SAMPLER", "DEMO_STEPS"]

DEMO_CONSTRAINTS = ("zero_mean", "border_zero_gradient")
DEMO_SAMPLER = "ddim"
DEMO_STEPS = 50
DATA_SNAPSHOTS = 100


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
    from xoceandiff.io import write_netcdf_atomic
    from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model

    start = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = sampler or DEMO_SAMPLER
    steps = steps or (DEMO_STEPS if sampler != "ddpm" else 1000)
    data = xoceandiff.datasets.dino(n=DATA_SNAPSHOTS, resolution=BUNDLED_RESOLUTION, seed=0)
    model = bundled_model()
    print(f"bundled model: {model.config['preset']} preset, {model.n_parameters / 1e6:.2f} M parameters, "
          f"trained {model.metadata.get('training', {}).get('steps', '?')} steps on the {BUNDLED_RESOLUTION:g} degree DINO-like grid")
    written: dict[str, Path] = {}
    sets = {}
    for label, constraints in (("unconstrained", ()), ("constrained", DEMO_CONSTRAINTS)):
        samples = data.oceandiff.sample(n, list(constraints), model=model, sampler=sampler, steps=steps, seed=seed,
                                        progress=progress)
        sets[label] = samples
        path = write_netcdf_atomic(samples, out / f"samples_{label}.nc", overwrite=overwrite)
        written[f"samples_{label}"] = path
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Outputs:")
    for key, path in written.items():
        print(f"  {key:24s} {path}")
    return written
