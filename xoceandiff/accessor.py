"""The ``.oceandiff`` accessor: thin methods over the package's pure functions.

xarray caches an accessor per object, so the accessor keeps no state of its own: every derived
object (the xgcm grid, ...) is built from the dataset each time it is asked for.
"""

from __future__ import annotations

import os

import xarray as xr
import xgcm

from . import grid as _grid
from . import nemo as _nemo

__all__ = ["OceanDiffAccessor"]


@xr.register_dataset_accessor("oceandiff")
class OceanDiffAccessor:
    """Diffusion-model tools for a canonical NEMO dataset (``toce``, ``soce``, ``ssh`` + grid)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def grid(self) -> xgcm.Grid:
        """The :class:`xgcm.Grid` of the dataset (see :func:`xoceandiff.grid.build_grid`)."""
        return _grid.build_grid(self._ds)

    @property
    def periodic_x(self) -> bool:
        """Whether X is periodic (NEMO's ``Iperio = 1``)."""
        return _grid.grid_padding(self._ds)["X"] == "periodic"

    def to_nemo_files(
        self,
        folder: str | os.PathLike,
        *,
        prefix: str = "DINO_10d",
        ranks: tuple[int, int] | None = None,
        overwrite: bool = False,
    ) -> dict[str, str]:
        """Write the dataset as NEMO/XIOS output files and a mesh_mask (see :func:`xoceandiff.nemo.to_nemo_files`)."""
        return _nemo.to_nemo_files(self._ds, folder, prefix=prefix, ranks=ranks, overwrite=overwrite)
