"""Samples per second of chunked generation on a dask LocalCluster of 1 and of 2 worker processes.

    python benchmarks/bench_scaling.py [--workers 1 2] [--n 8] [--chunks 2] [--steps 10] [--preset small]

A ``small`` checkpoint (untrained: the cost does not depend on the weights' values) is prepared for the
1-degree DINO grid and saved; for each worker count a ``distributed.LocalCluster`` is started through
``xoceandiff.parallel.connect(local_workers=k)`` (processes, ``threads_per_worker=1``), every worker is
set to 1 torch thread (``client.run(torch.set_num_threads, 1)``, checked) and warmed up (checkpoint
loaded into the per-process cache, one forward). Then, timed, best of ``--repeats``:

* ``ds.oceandiff.sample(n, model=checkpoint, chunks=2, sampler="ddim", steps=10).compute()`` (the
  samples gathered in this process), and
* ``xoceandiff.parallel.generate_to_netcdf(..., client=client)`` (part files written by the workers,
  merged into one CF NetCDF file by this process).

Speed-up = samples per second with the most workers / with 1 worker (ideal: the worker ratio, if the
cores are free: the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from _common import header, table


def _warm(path: str, sha256: str, threads: int) -> tuple[int, int]:
    """On a worker: set torch threads, load the checkpoint into the per-process cache, run one forward."""
    import torch

    from xoceandiff.parallel import cached_model

    torch.set_num_threads(threads)
    model = cached_model(path, sha256, "cpu")
    with torch.inference_mode():
        model(torch.zeros((1, model.channels, *model.sample_size)), 500)
    return os.getpid(), torch.get_num_threads()


def run(ds, args, checkpoint: Path, client, tmp: str, workers: int) -> dict[str, float]:
    """Best wall time of each way of generating, over ``args.repeats`` interleaved runs."""
    from distributed import get_task_stream

    from xoceandiff.parallel import generate_to_netcdf

    best: dict[str, float] = {}
    for repeat in range(args.repeats):
        start = time.perf_counter()
        with get_task_stream(client) as stream:
            samples = ds.oceandiff.sample(args.n, model=str(checkpoint), chunks=args.chunks, sampler="ddim",
                                          steps=args.steps, device="cpu").compute()
        elapsed = time.perf_counter() - start
        tasks = [t for t in stream.data if "xoceandiff-sample" in str(t["key"])]
        per_worker: dict[str, int] = {}
        for task in tasks:
            per_worker[task["worker"]] = per_worker.get(task["worker"], 0) + 1
        compute = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute") for t in tasks]
        if elapsed < best.get("sample(chunks).compute()", float("inf")):
            best["_tasks"] = "+".join(str(v) for v in sorted(per_worker.values(), reverse=True))
            best["_task_s"] = sum(compute) / max(len(compute), 1)
        assert samples.sizes["sample"] == args.n and bool(samples.toce.notnull().any())
        best["sample(chunks).compute()"] = min(best.get("sample(chunks).compute()", float("inf")), elapsed)
        out = Path(tmp) / f"samples_{workers}_{repeat}.nc"
        start = time.perf_counter()
        generate_to_netcdf(ds, args.n, out=out, model=str(checkpoint), chunks=args.chunks, sampler="ddim",
                           steps=args.steps, device="cpu", client=client)
        elapsed = time.perf_counter() - start
        best["generate_to_netcdf"] = min(best.get("generate_to_netcdf", float("inf")), elapsed)
        out.unlink()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="ddim steps")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import xoceandiff
    from xoceandiff.parallel import connect
    from xoceandiff.training import prepare_model

    header("bench_scaling: chunked generation on a LocalCluster of 1 and of 2 worker processes", args)
    ds = xoceandiff.datasets.dino(n=10, resolution=args.resolution)
    rows = []
    rates: dict[tuple[str, int], float] = {}
    caught: list[warnings.WarningMessage] = []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        model = prepare_model(ds, args.preset)
        checkpoint = model.save(Path(tmp) / f"checkpoint_{args.preset}")
        print(f"{args.preset} checkpoint ({model.n_parameters / 1e6:.2f} M parameters), {model.channels} channels x "
              f"{tuple(model.sample_size)}; n={args.n}, chunks={args.chunks} ({-(-args.n // args.chunks)} tasks), "
              f"ddim {args.steps} steps, no constraints")
        for workers in args.workers:
            client = connect(local_workers=workers)
            try:
                client.wait_for_workers(workers)
                info = client.run(_warm, str(checkpoint), model.checkpoint_hash, args.threads)
                threads = sorted({t for _, t in info.values()})
                load = os.getloadavg()[0]
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    best = run(ds, args, checkpoint, client, tmp, workers)
                caught.extend(seen)
            finally:
                cluster = getattr(client, "cluster", None)
                client.close()
                if cluster is not None:
                    cluster.close()
            tasks, task_s = best.pop("_tasks"), best.pop("_task_s")
            for what, seconds in best.items():
                rate = args.n / seconds
                rates[(what, workers)] = rate
                rows.append((what, workers, ",".join(map(str, threads)), f"{load:.2f}", f"{seconds:.1f}",
                             f"{rate:.3f}", f"{args.n * args.steps / seconds:.1f}",
                             f"{tasks} / {task_s:.2f}" if what.startswith("sample") else ""))
    print()
    table(rows, ("what", "workers", "torch threads/worker", "load avg", f"best of {args.repeats} s", "samples/s",
                 "sample-steps/s", "tasks per worker / mean task s"))
    lo, hi = min(args.workers), max(args.workers)
    for what in ("sample(chunks).compute()", "generate_to_netcdf"):
        speedup = rates[(what, hi)] / rates[(what, lo)]
        print(f"{what}: speed-up {hi} / {lo} workers = {speedup:.2f}  (ideal {hi / lo:.0f})")
    messages = sorted({str(w.message).splitlines()[0] for w in caught})
    if messages:
        print("warnings during the timed runs (distinct first lines):")
        for message in messages:
            print(f"  {message}")


if __name__ == "__main__":
    main()
