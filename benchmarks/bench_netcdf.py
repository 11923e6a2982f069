"""NetCDF writing throughput of ``xoceandiff.io.to_netcdf`` against a bare ``netCDF4.Dataset`` write.

    python benchmarks/bench_netcdf.py [--n 40] [--resolution 1] [--chunk 4] [--repeats 3]

Data: ``xoceandiff.datasets.dino(n).rename(t="sample")`` (samples-like records: toce, soce, ssh on the
1-degree grid), computed into memory first and chunked ``--chunk`` samples per dask chunk, so that
generation is not timed.

* ``xoceandiff.io.to_netcdf``: the CF-1.11 form (attributes, depth coordinate, cell measures, land as
  ``_FillValue``), zlib level 4 + shuffle, NetCDF chunks = the dask chunks, written chunk by chunk to a
  temporary file, fsync'ed and renamed into place.
* bare ``netCDF4.Dataset``: the very same variables (the raw arrays of the file ``to_netcdf`` wrote,
  read back unmasked, land already 1e20), with the same dimensions, dtypes, attributes, compression
  filters and chunk sizes (copied from that file), each written with one assignment; no fsync, no
  rename. This is the cost of the bytes alone, i.e. a strict reference.

Throughput = uncompressed bytes of the data variables / wall time; each way is run ``--repeats`` times,
interleaved, and the best is kept. Target: to_netcdf >= 70% of the bare write's throughput.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
from _common import header, table


def read_raw(path: Path) -> dict:
    """Dimensions, global attributes and every variable (raw values, encoding) of a NetCDF file."""
    with netCDF4.Dataset(path) as src:
        src.set_auto_maskandscale(False)
        dims = {name: len(dim) for name, dim in src.dimensions.items()}
        variables = {}
        for name, var in src.variables.items():
            chunking = var.chunking()
            filters = var.filters() or {}
            attrs = {k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"}
            variables[name] = {
                "dtype": var.dtype,
                "dims": var.dimensions,
                "values": var[...],
                "fill_value": getattr(var, "_FillValue", False),
                "chunksizes": None if chunking == "contiguous" else tuple(chunking),
                "zlib": bool(filters.get("zlib")),
                "complevel": int(filters.get("complevel") or 0),
                "shuffle": bool(filters.get("shuffle")),
                "attrs": attrs,
            }
        return {"dims": dims, "attrs": {k: src.getncattr(k) for k in src.ncattrs()}, "variables": variables}


def bare_write(raw: dict, path: Path) -> None:
    with netCDF4.Dataset(path, "w", format="NETCDF4") as dst:
        dst.setncatts(raw["attrs"])
        for name, size in raw["dims"].items():
            dst.createDimension(name, size)
        for name, v in raw["variables"].items():
            kwargs = {"fill_value": v["fill_value"]}
            if v["zlib"]:
                kwargs.update(compression="zlib", complevel=v["complevel"], shuffle=v["shuffle"])
            if v["chunksizes"] is not None:
                kwargs.update(chunksizes=v["chunksizes"], contiguous=False)
            var = dst.createVariable(name, v["dtype"], v["dims"], **kwargs)
            var.set_auto_maskandscale(False)
            var.setncatts(v["attrs"])
            var[...] = v["values"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="records (samples)")
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--chunk", type=int, default=4, help="samples per dask chunk = NetCDF chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (unused by the writes)")
    parser.add_argument("--dir", default=None, help="folder to write in (default: a temporary one)")
    args = parser.parse_args()
    import dask
    import torch

    torch.set_num_threads(args.threads)
    import xoceandiff
    from xoceandiff.io import to_netcdf

    header("bench_netcdf: xoceandiff.io.to_netcdf against a bare netCDF4.Dataset write", args)
    ds = xoceandiff.datasets.dino(n=args.n, resolution=args.resolution).rename(t="sample")
    ds = ds.drop_vars("sample").compute().chunk({"sample": args.chunk})  # generated before any timing
    nbytes = sum(ds[v].nbytes for v in ("toce", "soce", "ssh"))
    print(f"data: toce, soce {tuple(ds.toce.shape)} + ssh {tuple(ds.ssh.shape)} float32 = {nbytes / 1e6:.1f} MB "
          f"(uncompressed), in memory, dask chunks of {args.chunk} samples")

    with tempfile.TemporaryDirectory(prefix="bench_netcdf_", dir=args.dir) as tmp:
        ours, bare = Path(tmp) / "to_netcdf.nc", Path(tmp) / "bare.nc"
        with dask.config.set(scheduler="threads"):
            to_netcdf(ds, ours, overwrite=True)  # warm-up, and the file whose arrays the bare write copies
        raw = read_raw(ours)
        enc = raw["variables"]["toce"]
        print(f"toce in the file: chunks {enc['chunksizes']}, zlib={enc['zlib']} complevel={enc['complevel']} "
              f"shuffle={enc['shuffle']}, _FillValue={enc['fill_value']}; {len(raw['variables'])} variables")
        bare_write(raw, bare)  # warm-up
        times: dict[str, list[float]] = {"xoceandiff.io.to_netcdf": [], "bare netCDF4.Dataset": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            with dask.config.set(scheduler="threads"):
                to_netcdf(ds, ours, overwrite=True)
            times["xoceandiff.io.to_netcdf"].append(time.perf_counter() - start)
            os.remove(bare)
            start = time.perf_counter()
            bare_write(raw, bare)
            times["bare netCDF4.Dataset"].append(time.perf_counter() - start)
        # same content: every data variable equal (raw)
        check = read_raw(bare)
        for name in ("toce", "soce", "ssh"):
            assert np.array_equal(check["variables"][name]["values"], raw["variables"][name]["values"]), name
        sizes = {"xoceandiff.io.to_netcdf": ours.stat().st_size, "bare netCDF4.Dataset": bare.stat().st_size}

    rows = []
    best = {k: min(v) for k, v in times.items()}
    for name, values in times.items():
        rows.append((name, " ".join(f"{t:.2f}" for t in values), f"{best[name]:.2f}",
                     f"{nbytes / 1e6 / best[name]:.1f}", f"{sizes[name] / 1e6:.1f}"))
    print()
    table(rows, ("writer", "seconds (each run)", "best s", "MB/s (best)", "file MB"))
    ratio = best["bare netCDF4.Dataset"] / best["xoceandiff.io.to_netcdf"]
    print(f"throughput ratio to_netcdf / bare: {ratio:.3f}  (target >= 0.70: {'PASS' if ratio >= 0.7 else 'FAIL'})")


if __name__ == "__main__":
    main()
