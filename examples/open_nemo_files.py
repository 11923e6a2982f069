"""Open NEMO output with ``xoceandiff.open_nemo`` and look at what it found.

The embedded DINO-like dataset is first written as NEMO (through XIOS) writes its output, into a
temporary folder: ``DINO_10d_grid_T_3D.nc`` (``toce_inst``, ``soce_inst``), ``DINO_10d_grid_T_2D.nc``
(``ssh_inst``) and ``mesh_mask.nc``, land as 0, and once more split into one file per MPI rank.
Both layouts are then opened with :func:`xoceandiff.open_nemo`, which returns the same canonical,
lazy dataset: ``toce``, ``soce``, ``ssh`` with land as NaN and the grid as coordinates.

Run it::

    python examples/open_nemo_files.py              # the 1-degree grid, 20 snapshots
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/open_nemo_files.py   # 4-degree grid, 3 snapshots
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import xoceandiff


def main(tiny: bool = False) -> None:
    resolution, n = (4.0, 3) if tiny else (1.0, 20)
    data = xoceandiff.datasets.dino(n=n, resolution=resolution, seed=0)

    with tempfile.TemporaryDirectory() as tmp:
        # 1. One file per kind, as a single-process run (or a rebuilt output) leaves them.
        paths = data.oceandiff.to_nemo_files(Path(tmp) / "whole")
        print("NEMO files written:", ", ".join(Path(p).name for p in paths["pieces"]), "+ mesh_mask.nc")
        ds = xoceandiff.open_nemo([paths["grid_T_3D"], paths["grid_T_2D"]], mesh_mask=paths["mesh_mask"])

        print(f"fields: {sorted(ds.data_vars)}")
        for name in ds.data_vars:
            print(f"  {name}: dims {ds[name].dims}, read from '{ds[name].attrs['original_name']}', "
                  f"units {ds[name].attrs.get('units')}")
        print(f"sizes: {dict(ds.sizes)}")
        print(f"grid coordinates: {sorted(ds.coords)}")
        print(f"periodic in x (Iperio): {ds.attrs['Iperio']}; xgcm grid axes: {sorted(ds.oceandiff.grid.axes)}")
        print(f"lazy: toce is a dask array with chunks {ds.toce.data.chunksize}")

        wet = int(ds.tmask.isel(z_c=0).sum())
        land_is_nan = bool(ds.toce.isel(t=0, z_c=0).isnull().sum() == ds.tmask.isel(z_c=0).size - wet)
        print(f"ocean cells per level: {wet}; land is NaN: {land_is_nan}")
        surface = ds.toce.isel(z_c=0).weighted(ds.e1t * ds.e2t).mean(("y_c", "x_c"))
        print(f"area-weighted surface temperature of the first snapshot: {float(surface.isel(t=0)):.3f} degC")

        # 2. One file per MPI rank (XIOS "multiple_file"): pass them all, or a glob pattern.
        ranks = (2, 2)
        pieces = data.oceandiff.to_nemo_files(Path(tmp) / "ranks", ranks=ranks)
        pattern = str(Path(tmp) / "ranks" / "DINO_10d_grid_T_*_0*.nc")
        per_rank = xoceandiff.open_nemo(pattern, mesh_mask=pieces["mesh_mask"])
        same = bool((per_rank.toce.fillna(-99) == ds.toce.fillna(-99)).all())
        print(f"{len(pieces['pieces'])} per-rank files ({ranks[0]} x {ranks[1]} ranks) give the same dataset: {same}")


if __name__ == "__main__":
    main(tiny=os.environ.get("XOCEANDIFF_EXAMPLE_TINY") == "1")
