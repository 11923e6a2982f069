"""Fast samplers against the paper's DDPM-1000, on the bundled model: wall time and physical metrics.

    python benchmarks/bench_samplers.py [--n 16] [--threads 2] [--checkpoint DIR]

For DDPM with 1000 steps, and DDIM and DPM-Solver++ with 25 / 50 / 100 steps (same seeds, constraints
zero_mean + border_zero_gradient, as in the demo), prints the wall time, the speed-up over DDPM-1000,
and the metrics of the demo's quality checks: density errors (%), mean-temperature-profile RMS error
against the data (degC), Bottom/Deep-Water box T and S, and diversity (degC); then, per sampler, the
largest relative change of any metric against DDPM-1000 (target: a sampler with 50 steps or fewer
within 10% on every metric, at 15x the speed or more).
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np
import torch

import xoceandiff
from xoceandiff.diagnostics import diagnostics, diversity
from xoceandiff.model import load_model
from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_checkpoint

CONSTRAINTS = ["zero_mean", "border_zero_gradient"]


def metrics(reference_profile, samples) -> dict[str, float]:
    diag, div = dask.compute(diagnostics(samples), diversity(samples))
    profile = diag.toce_profile.mean("sample").values
    return {
        "density errors %": float(diag.check_density.mean()),
        "profile RMS degC": float(np.sqrt(np.nanmean((profile - reference_profile) ** 2))),
        "BW T": float(diag.BWbox_toce.mean()),
        "BW S": float(diag.BWbox_soce.mean()),
        "DW T": float(diag.DWbox_toce.mean()),
        "DW S": float(diag.DWbox_soce.mean()),
        "diversity T": float(div.diversity_toce),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint or bundled_checkpoint())
    data = xoceandiff.datasets.dino(n=200, resolution=BUNDLED_RESOLUTION, seed=0)
    reference_profile = diagnostics(data).toce_profile.mean("t").compute().values
    settings = [("ddpm", 1000)] + [(s, k) for s in ("ddim", "dpm") for k in (25, 50, 100)]
    rows = {}
    for sampler, steps in settings:
        start = time.perf_counter()
        samples = data.oceandiff.sample(args.n, CONSTRAINTS, model=model, sampler=sampler, steps=steps, seed=123,
                                        batch_size=args.n, progress=False)
        seconds = time.perf_counter() - start
        rows[(sampler, steps)] = (seconds, metrics(reference_profile, samples))
    base_time, base = rows[("ddpm", 1000)]
    print(f"{args.n} samples per setting, torch threads {torch.get_num_threads()}, constraints {CONSTRAINTS}")
    names = list(base)
    print(f"{'sampler':10s} {'steps':>5s} {'time s':>7s} {'speed-up':>8s} " + " ".join(f"{n:>16s}" for n in names)
          + f" {'max rel. change':>16s}")
    for (sampler, steps), (seconds, values) in rows.items():
        change = max(abs(values[k] - base[k]) / max(abs(base[k]), 1e-12) for k in names)
        # box means: relative change of the anomaly would be meaningless; compare to the data's spread instead
        print(f"{sampler:10s} {steps:5d} {seconds:7.1f} {base_time / seconds:8.1f} "
              + " ".join(f"{values[k]:16.4f}" for k in names) + f" {100 * change:15.1f}%")


if __name__ == "__main__":
    main()
