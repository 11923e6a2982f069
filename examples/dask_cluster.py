"""Generate samples lazily, one dask task per chunk, on a ``LocalCluster``, and write them to NetCDF.

``ds.oceandiff.sample(n, ..., chunks=k)`` returns at once: a dask-backed Dataset whose every chunk of
``k`` samples is one task. A task carries the checkpoint's path and sha256, not its weights; each worker
process loads the model once and keeps it. Nothing runs until the data are needed: here
``samples.oceandiff.to_netcdf`` computes the chunks on the cluster's workers and writes them one by one
(CF-1.11, compressed, renamed into place when complete).

Sample ``i`` uses the random stream ``(seed, i)``, so the file holds the same states whatever ``k`` and
the number of workers. On a cluster, swap the ``LocalCluster`` for a ``dask_jobqueue.SLURMCluster``
(see the sampling guide), or use the resumable ``xoceandiff sample`` command::

    xoceandiff sample --n 64 --chunks 8 --constraints zero_mean border_zero_gradient \\
        --out samples.nc --local-workers 2

Run it::

    python examples/dask_cluster.py                 # 32 samples in chunks of 8, 2 workers
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/dask_cluster.py   # 4 samples in chunks of 2, 1 worker
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr
from distributed import Client, LocalCluster

import xoceandiff
from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model


def main(tiny: bool = False) -> None:
    out = Path("example_outputs") / "dask_cluster"
    out.mkdir(parents=True, exist_ok=True)
    n, chunks, workers, steps = (4, 2, 1, 5) if tiny else (32, 8, 2, 50)
    data = xoceandiff.datasets.dino(n=8, resolution=BUNDLED_RESOLUTION, seed=0)
    model = bundled_model()

    # One process per worker and one thread each: torch uses the cores of its own process.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print(f"cluster: {len(client.scheduler_info()['workers'])} worker(s)")
        samples = data.oceandiff.sample(n, ["zero_mean", "border_zero_gradient"], model=model, chunks=chunks,
                                        sampler="ddim", steps=steps, seed=0)
        print(f"lazy samples: {dict(samples.sizes)}; toce chunks along 'sample': {samples.toce.chunks[0]}; "
              f"{len(samples.toce.data.__dask_graph__())} tasks in the graph of toce")
        path = samples.oceandiff.to_netcdf(out / "samples.nc", overwrite=True)  # computed on the workers

    with xr.open_dataset(path) as written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {written.sizes['sample']} samples, "
              f"variables {sorted(written.data_vars)}")
        print(f"sampler: {written.attrs['sampler']}, constraints: {written.attrs['constraints']}, "
              f"checkpoint sha256: {written.attrs['checkpoint_sha256'][:16]}...")
        print(f"mean surface temperature of sample 0: {float(written.toce.isel(sample=0, depth=0).mean()):.3f} degC")


if __name__ == "__main__":
    main(tiny=os.environ.get("XOCEANDIFF_EXAMPLE_TINY") == "1")
