"""Cut the GYRE test fixture from the real NEMO 5.0 GYRE output in ../shared/data/gyre.

The fixture is the first records of ``GYRE_5d_00510101_00581230_grid_T.nc`` with every dimension,
variable, attribute, compression and chunk size as in the source (only the record count differs),
and the run's ``mesh_mask.nc`` copied whole. Run from the repository root::

    python tests/data/gyre/make_fixture.py [--records 4]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import netCDF4

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[3] / "shared" / "data" / "gyre"
GRID_T = "GYRE_5d_00510101_00581230_grid_T.nc"


def cut(source: Path, target: Path, records: int) -> None:
    """Copy ``source`` to ``target`` keeping only the first ``records`` along the unlimited dimension."""
    with netCDF4.Dataset(source) as src, netCDF4.Dataset(target, "w", format=src.data_model) as dst:
        dst.setncatts({name: src.getncattr(name) for name in src.ncattrs()})
        for name, dim in src.dimensions.items():
            dst.createDimension(name, None if dim.isunlimited() else len(dim))
        for name, var in src.variables.items():
            var.set_auto_maskandscale(False)  # raw bytes: _FillValue and land zeros as written
            filters = var.filters() or {}
            chunking = var.chunking()
            out = dst.createVariable(
                name,
                var.dtype,
                var.dimensions,
                zlib=bool(filters.get("zlib")),
                complevel=int(filters.get("complevel") or 4),
                shuffle=bool(filters.get("shuffle")),
                chunksizes=None if chunking == "contiguous" else chunking,
                fill_value=var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else False,
            )
            out.setncatts({k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"})
            out.set_auto_maskandscale(False)
            unlimited = [src.dimensions[d].isunlimited() for d in var.dimensions]
            index = tuple(slice(0, records) if u else slice(None) for u in unlimited)
            out[index] = var[index]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4)
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args(argv)
    cut(args.source / GRID_T, HERE / GRID_T.replace("00581230", "00510120"), args.records)
    shutil.copyfile(args.source / "mesh_mask.nc", HERE / "mesh_mask.nc")


if __name__ == "__main__":
    main()
