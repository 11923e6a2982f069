"""Samples x steps per second of the bare denoiser forward, and the implied time of the paper's job.

    python benchmarks/bench_throughput.py [--presets paper small] [--threads 1 2] [--batch 4] [--repeats 5]

The denoiser of each preset is built for the 1-degree DINO layout (``Layout.from_dataset``: 37 channels,
208 x 64) and run under ``torch.inference_mode`` on a random batch at diffusion step 500 (untrained
weights: the cost does not depend on their values). On the CPU the torch thread counts of ``--threads``
are interleaved within each repeat (so that they see the same background load); the median of
``--repeats`` timings (after 2 warm-up calls) is kept. When ``torch.cuda.is_available()``, the CUDA
forward in float32 and with bf16 autocast + channels_last is timed too (skipped otherwise).

Implied time of the paper's job = 200 samples x 1000 DDPM steps / (samples x steps per second); the
sampling loop adds a few % on top of the forward (see bench_sampling_loop.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
from _common import header, table

PAPER_JOB = 200 * 1000  # samples x steps


def _human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU torch thread counts")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cuda-batch", type=int, default=None, help="CUDA batch (default: --batch)")
    parser.add_argument("--resolution", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(max(args.threads))
    import xoceandiff
    from xoceandiff.layout import Layout
    from xoceandiff.model import Denoiser

    header("bench_throughput: bare denoiser forward, samples x steps per second", args)
    ds = xoceandiff.datasets.dino(n=1, resolution=args.resolution)
    layout = Layout.from_dataset(ds, levels="every-other")
    print(f"layout: {layout.channels} channels x {tuple(layout.shape)} ({args.resolution:g} deg DINO), batch "
          f"{args.batch}, step t=500, inference_mode, median of {args.repeats} after 2 warm-up calls")
    torch.manual_seed(0)
    rows = []
    rates: dict[tuple[str, str], float] = {}
    for preset in args.presets:
        model = Denoiser(layout.channels, layout.shape, preset=preset).eval()
        x = torch.randn((args.batch, layout.channels, *layout.shape))
        t = torch.tensor(500)
        timings: dict[int, list[float]] = {n: [] for n in args.threads}

        def forward(threads: int, model=model, x=x, t=t) -> float:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            with torch.inference_mode():
                model(x, t)
            return time.perf_counter() - start

        for threads in args.threads:
            for _ in range(2):
                forward(threads)
        for _ in range(args.repeats):
            for threads in args.threads:
                timings[threads].append(forward(threads))
        for threads in args.threads:
            seconds = statistics.median(timings[threads])
            rate = args.batch / seconds
            rates[(preset, f"cpu x{threads}")] = rate
            rows.append((preset, f"{model.n_parameters / 1e6:.2f}", f"cpu, {threads} thread(s)",
                         f"{seconds * 1e3:.0f}", f"{rate:.2f}",
                         f"{rate / rates[(preset, f'cpu x{args.threads[0]}')]:.2f}", _human(PAPER_JOB / rate)))

        if torch.cuda.is_available():
            batch = args.cuda_batch or args.batch
            device = torch.device("cuda")
            gpu_x = torch.randn((batch, layout.channels, *layout.shape), device=device)
            gpu_t = torch.tensor(500, device=device)
            for label, bf16 in (("cuda fp32", False), ("cuda bf16+channels_last", True)):
                net = Denoiser(layout.channels, layout.shape, preset=preset).to(device).eval()
                inp = gpu_x
                if bf16:
                    net = net.to(memory_format=torch.channels_last)
                    inp = gpu_x.contiguous(memory_format=torch.channels_last)
                autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
                samples = []
                with torch.inference_mode(), autocast:
                    for i in range(3 + args.repeats * 4):
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                        net(inp, gpu_t)
                        torch.cuda.synchronize()
                        if i >= 3:
                            samples.append(time.perf_counter() - start)
                seconds = statistics.median(samples)
                rate = batch / seconds
                rates[(preset, label)] = rate
                rows.append((preset, f"{net.n_parameters / 1e6:.2f}", f"{label}, batch {batch}",
                             f"{seconds * 1e3:.1f}", f"{rate:.1f}",
                             f"{rate / rates[(preset, f'cpu x{args.threads[0]}')]:.1f}", _human(PAPER_JOB / rate)))
        else:
            rows.append((preset, f"{model.n_parameters / 1e6:.2f}", "cuda", "-", "-", "-",
                         "skipped: torch.cuda.is_available() is False"))
    print()
    table(rows, ("preset", "M params", "device", "ms / forward", "sample-steps/s",
                 f"x vs cpu {args.threads[0]} thr", "paper job 200 x 1000"))
    if len(args.threads) > 1:
        for preset in args.presets:
            a, b = args.threads[0], args.threads[-1]
            print(f"{preset}: {b} threads / {a} thread speed-up {rates[(preset, f'cpu x{b}')] / rates[(preset, f'cpu x{a}')]:.2f}")
    if len(args.presets) > 1:
        p0, p1 = args.presets[0], args.presets[1]
        for threads in args.threads:
            key = f"cpu x{threads}"
            print(f"{p1} / {p0} throughput at {threads} thread(s): {rates[(p1, key)] / rates[(p0, key)]:.2f}")
    slower = [p for p in args.presets if len(args.threads) > 1
              and rates[(p, f"cpu x{args.threads[-1]}")] < rates[(p, f"cpu x{args.threads[0]}")]]
    if slower:
        print(f"note: more threads ran slower ({', '.join(slower)}); load average now {os.getloadavg()[0]:.2f} on "
              f"{len(os.sched_getaffinity(0))} usable CPUs: other processes held the cores, so the multi-thread "
              "timings measure contention (threads waiting for each other), not the kernels")

if __name__ == "__main__":
    main()
