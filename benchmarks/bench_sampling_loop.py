"""Time per step of the sampling loop against the bare denoiser forward, on the same batch.

    python benchmarks/bench_sampling_loop.py [--resolution 1] [--preset small] [--batch 4] [--repeats 30]

Prints the ratios (full step / bare forward) for: the scheduler alone; the scheduler with zero_mean,
border_zero, border_zero_gradient and gradient_zero_mean; and the scheduler with stable_stratification.
Measured in one run, interleaved, medians of ``--repeats`` timings each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import xoceandiff
from xoceandiff.constraints import ConstraintContext, get_constraints
from xoceandiff.sampling import make_scheduler
from xoceandiff.training import prepare_model

CHEAP = ["zero_mean", "border_zero", "border_zero_gradient", "gradient_zero_mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = xoceandiff.datasets.dino(n=4, resolution=args.resolution)
    model = prepare_model(ds, args.preset).to(device).eval()
    layout, normaliser = model.card.layout, model.card.normaliser
    ctx = ConstraintContext.from_model(ds, layout, normaliser, device=device)
    x = torch.randn((args.batch, layout.channels, *layout.shape), device=device)
    settings = {
        "scheduler only": [],
        "scheduler + 4 cheap constraints": get_constraints(CHEAP),
        "scheduler + stable_stratification": get_constraints(["stable_stratification"]),
    }
    scheduler = make_scheduler(model, "ddpm", 1000)
    t = scheduler.timesteps[500]
    generators = [torch.Generator(device=device).manual_seed(i) for i in range(args.batch)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward_only() -> None:
        with torch.inference_mode():
            model(x, t)

    def full_step(constraints) -> None:
        with torch.inference_mode():
            eps = model(x, t)
            y = scheduler.step(eps, t, x, generator=generators).prev_sample
            for c in constraints:
                y = c(y, t, ctx)

    timings: dict[str, list[float]] = {"forward": [], **{k: [] for k in settings}}
    for _ in range(3):  # warm-up
        forward_only()
        for constraints in settings.values():
            full_step(constraints)
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        forward_only()
        sync()
        timings["forward"].append(time.perf_counter() - start)
        for name, constraints in settings.items():
            sync()
            start = time.perf_counter()
            full_step(constraints)
            sync()
            timings[name].append(time.perf_counter() - start)
    forward = statistics.median(timings["forward"])
    print(f"grid {args.resolution:g} deg, preset {args.preset}, batch {args.batch}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} repeats")
    print(f"bare denoiser forward: {forward * 1e3:.1f} ms (median)")
    for name in settings:
        step = statistics.median(timings[name])
        print(f"{name:38s} {step * 1e3:8.1f} ms   ratio {step / forward:.3f}  (+{100 * (step / forward - 1):.1f}%)")


if __name__ == "__main__":
    main()
