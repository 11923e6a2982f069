"""Peak memory (RSS high-water mark) of chunked generation to NetCDF and of the statistics pass.

    python benchmarks/bench_memory.py [--sizes 8 40 120] [--chunks 4] [--preset tiny] [--steps 3]
                                      [--stats-n 100 600] [--part all|generate|statistics]
    python benchmarks/bench_memory.py --part statistics --stats-n 100 1800    # the n=1800 case (3-6 min)

Every case runs in a fresh subprocess (this script with ``--case``), which reports its RSS after the
imports and set-up (``baseline``: psutil) and its high-water mark at the end
(``VmHWM`` of ``/proc/self/status``, i.e. ``getrusage(RUSAGE_SELF).ru_maxrss`` without the part
inherited from this parent process through fork/exec); ``increment`` = peak - baseline is the memory the
measured call itself needed.

(a) ``xoceandiff.parallel.generate_to_netcdf`` of n = 8, 40 and 120 samples, ``chunks=4``, on the
    1-degree DINO grid with a freshly saved checkpoint (``tiny`` preset, untrained: memory does not
    depend on the weights' values) and ``ddim`` with a few steps. Target: peak(n=40) <= 1.3 x peak(n=8).
    The largest n is run once more with ``netCDF4.set_chunk_cache(1 MiB)``: the netCDF-C/HDF5 chunk
    cache (64 MiB per variable by default) is what grows with n until it is full.
(b) ``xoceandiff.datasets.dino(n, resolution=1.0, chunks=10).oceandiff.statistics().compute()`` for
    n = 100 and n = 600 by default (n = 1800, ~6 GB of float32 if it were loaded, with ``--stats-n 100 1800``:
    generating the snapshots takes ~0.1-0.2 s each, so that case alone takes 3-6 minutes) against
    generating (loading) a single chunk of 10 snapshots. Target: bounded by a few chunks, independent
    of n.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, table


def _rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # /proc fallback (Linux)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """This process image's RSS high-water mark.

    ``VmHWM`` (Linux) is reset by ``exec``; ``ru_maxrss`` is not (a child started by ``subprocess``
    inherits the parent's high-water mark at the fork), so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the measured cases (run in a subprocess each) ---------------------------------------------------


def run_case(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import xoceandiff

    if args.case == "generate":
        if args.chunk_cache is not None:
            import netCDF4

            netCDF4.set_chunk_cache(args.chunk_cache)
        from xoceandiff.model import load_model
        from xoceandiff.parallel import cached_model, generate_to_netcdf

        ds = xoceandiff.datasets.dino(n=1, resolution=args.resolution)  # only its grid is used
        loaded = load_model(args.checkpoint)
        # The copy the chunk tasks use (per-process cache): loaded before the baseline is taken.
        model = cached_model(str(loaded.checkpoint_path), loaded.checkpoint_hash, "cpu")
        del loaded
        out = Path(args.workdir) / f"samples_{args.n}.nc"
        baseline = _rss_mib()
        start = time.perf_counter()
        generate_to_netcdf(ds, args.n, out=out, model=model, chunks=args.chunks, sampler="ddim",
                           steps=args.steps, device="cpu", overwrite=True)
        seconds = time.perf_counter() - start
        import xarray as xr

        with xr.open_dataset(out) as check:
            assert check.sizes["sample"] == args.n, check.sizes
        extra = {"file_mib": out.stat().st_size / 2**20}
    elif args.case == "chunk":
        ds = xoceandiff.datasets.dino(n=args.n, resolution=args.resolution, chunks=args.n)
        baseline = _rss_mib()
        start = time.perf_counter()
        loaded = ds[["toce", "soce", "ssh"]].load()
        seconds = time.perf_counter() - start
        extra = {"loaded_mib": loaded.nbytes / 2**20}
    elif args.case == "statistics":
        ds = xoceandiff.datasets.dino(n=args.n, resolution=args.resolution, chunks=args.stats_chunks)
        lazy_mib = sum(ds[v].nbytes for v in ("toce", "soce", "ssh")) / 2**20
        baseline = _rss_mib()
        start = time.perf_counter()
        stats = ds.oceandiff.statistics().compute()
        seconds = time.perf_counter() - start
        assert int(stats.attrs["n_records"]) == args.n
        extra = {"lazy_mib": lazy_mib}
    else:
        raise ValueError(args.case)
    return {"baseline": baseline, "peak": _peak_mib(), "seconds": seconds, **extra}


def spawn(case: str, n: int, args, **extra) -> dict:
    command = [sys.executable, __file__, "--case", case, "--n", str(n), "--threads", str(args.threads),
               "--resolution", str(args.resolution), "--chunks", str(args.chunks), "--steps", str(args.steps),
               "--stats-chunks", str(args.stats_chunks)]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"case {case} n={n} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "generate", "statistics"], default="all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 40, 120],
                        help="n of part (a); the target compares the second with the first")
    parser.add_argument("--cache-check", type=int, default=2**20,
                        help="also run the largest n with this HDF5 chunk cache (bytes; 0: skip)")
    parser.add_argument("--chunks", type=int, default=4, help="samples per chunk, part (a)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=3, help="ddim steps, part (a)")
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--stats-n", type=int, nargs="+", default=[100, 600], help="n of part (b)")
    parser.add_argument("--stats-chunks", type=int, default=10, help="snapshots per dask chunk, part (b)")
    parser.add_argument("--threads", type=int, default=1, help="torch (and OpenMP) threads per case")
    parser.add_argument("--case", choices=["generate", "chunk", "statistics"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-cache", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return

    header("bench_memory: peak RSS of chunked generation to NetCDF and of the statistics pass", args)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        if args.part in ("all", "generate"):
            import torch

            torch.set_num_threads(args.threads)
            import xoceandiff
            from xoceandiff.training import prepare_model

            ds = xoceandiff.datasets.dino(n=10, resolution=args.resolution)
            model = prepare_model(ds, args.preset)
            checkpoint = model.save(Path(tmp) / f"checkpoint_{args.preset}")
            print(f"\n(a) generate_to_netcdf, {args.preset} checkpoint ({model.n_parameters / 1e6:.2f} M parameters), "
                  f"{args.resolution:g} deg grid {tuple(model.sample_size)} x {model.channels} channels, "
                  f"chunks={args.chunks}, ddim {args.steps} steps, one subprocess per case")
            results = {(n, None): spawn("generate", n, args, checkpoint=checkpoint, workdir=tmp) for n in args.sizes}
            if args.cache_check:
                n = max(args.sizes)
                results[(n, args.cache_check)] = spawn("generate", n, args, checkpoint=checkpoint, workdir=tmp,
                                                       **{"chunk-cache": args.cache_check})
            first = results[(args.sizes[0], None)]
            rows = [(n, "default" if cache is None else f"{cache / 2**20:g} MiB", f"{r['baseline']:.0f}",
                     f"{r['peak']:.0f}", f"{r['peak'] - r['baseline']:.0f}", f"{r['peak'] / first['peak']:.3f}",
                     f"{(r['peak'] - r['baseline']) / (first['peak'] - first['baseline']):.3f}",
                     f"{r['seconds']:.1f}", f"{r['file_mib']:.1f}") for (n, cache), r in results.items()]
            table(rows, ("n", "HDF5 chunk cache", "baseline MiB", "peak MiB", "increment MiB",
                         f"peak / n={args.sizes[0]}", f"increment / n={args.sizes[0]}", "seconds", "file MiB"))
            ratio = results[(args.sizes[1], None)]["peak"] / first["peak"]
            print(f"peak ratio n={args.sizes[1]} / n={args.sizes[0]}: {ratio:.3f}  (target <= 1.3: "
                  f"{'PASS' if ratio <= 1.3 else 'FAIL'})")
            if args.cache_check:
                print("(the last row: the same job after netCDF4.set_chunk_cache(size) in the subprocess; the "
                      "netCDF-C default keeps up to 64 MiB of chunks per variable while writing)")
        if args.part in ("all", "statistics"):
            print(f"\n(b) dino(n, resolution={args.resolution:g}, chunks={args.stats_chunks}).oceandiff.statistics()"
                  ".compute() (dask threaded scheduler, default workers) against loading one chunk")
            chunk = spawn("chunk", args.stats_chunks, args)
            rows = [(f"load 1 chunk ({args.stats_chunks} snapshots)", f"{chunk['loaded_mib']:.0f} (loaded)",
                     f"{chunk['baseline']:.0f}", f"{chunk['peak']:.0f}", f"{chunk['peak'] - chunk['baseline']:.0f}",
                     f"{chunk['seconds']:.1f}", "1.00")]
            chunk_inc = chunk["peak"] - chunk["baseline"]
            stats = {}
            for n in args.stats_n:
                r = stats[n] = spawn("statistics", n, args)
                rows.append((f"statistics n={n}", f"{r['lazy_mib']:.0f} (lazy)", f"{r['baseline']:.0f}",
                             f"{r['peak']:.0f}", f"{r['peak'] - r['baseline']:.0f}", f"{r['seconds']:.1f}",
                             f"{(r['peak'] - r['baseline']) / chunk_inc:.2f}"))
            table(rows, ("case", "data MiB", "baseline MiB", "peak MiB", "increment MiB", "seconds",
                         "increment / 1-chunk increment"))
            first, last = stats[args.stats_n[0]], stats[args.stats_n[-1]]
            growth = (last["peak"] - last["baseline"]) / (first["peak"] - first["baseline"])
            print(f"increment ratio n={args.stats_n[-1]} / n={args.stats_n[0]}: {growth:.3f} "
                  f"(data x{args.stats_n[-1] / args.stats_n[0]:.0f}); peak ratio "
                  f"{last['peak'] / first['peak']:.3f}; n={args.stats_n[-1]} increment = "
                  f"{(last['peak'] - last['baseline']) / chunk_inc:.2f} x one chunk's  (target: a few chunks, "
                  f"independent of n: {'PASS' if growth <= 1.3 and (last['peak'] - last['baseline']) <= 5 * chunk_inc else 'FAIL'})")


if __name__ == "__main__":
    main()
