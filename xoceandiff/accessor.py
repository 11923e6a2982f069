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

    # -- normalisation ------------------------------------------------------------------------------

    def statistics(self, *, fields=None, weighted: bool = False, method: str = "pooled") -> xr.Dataset:
        """Per-field, per-level mean, std, min, max in one lazy pass (see :func:`xoceandiff.normalisation.statistics`)."""
        from .normalisation import statistics

        return statistics(self._ds, fields=fields, weighted=weighted, method=method)

    def normalise(self, stats_or_normaliser, scheme: str = "3-std") -> xr.Dataset:
        """Normalise the fields (lazy); ``stats_or_normaliser`` is a statistics Dataset or a Normaliser."""
        from .normalisation import Normaliser, normalise

        normaliser = stats_or_normaliser
        if not isinstance(normaliser, Normaliser):
            normaliser = Normaliser.from_statistics(stats_or_normaliser, scheme=scheme)
        return normalise(self._ds, normaliser)

    def denormalise(self, stats_or_normaliser, scheme: str = "3-std") -> xr.Dataset:
        """Exact inverse of :meth:`normalise`."""
        from .normalisation import Normaliser, denormalise

        normaliser = stats_or_normaliser
        if not isinstance(normaliser, Normaliser):
            normaliser = Normaliser.from_statistics(stats_or_normaliser, scheme=scheme)
        return denormalise(self._ds, normaliser)

    # -- model ----------------------------------------------------------------------------------------

    def train(self, model="small", **kwargs):
        """Train a denoiser on this dataset (see :func:`xoceandiff.training.train`).

        When a ``checkpoint_dir`` is given, the written checkpoint is recorded in ``ds.attrs`` so that
        :meth:`sample` finds it without ``model=``.
        """
        from .sampling import CHECKPOINT_ATTR
        from .training import train

        trained = train(self._ds, model, **kwargs)
        if trained.checkpoint_path is not None:
            self._ds.attrs[CHECKPOINT_ATTR] = str(trained.checkpoint_path)
        return trained

    def sample(self, n: int, constraints=(), **kwargs) -> xr.Dataset:
        """Generate ``n`` ocean states on this dataset's grid (see :func:`xoceandiff.sampling.sample`)."""
        from .sampling import sample

        return sample(self._ds, n, constraints, **kwargs)

    # -- diagnostics --------------------------------------------------------------------------------

    def diagnostics(self, *, eos: str = "teos10-poly", depth_box: float = 1500.0) -> xr.Dataset:
        """Per-record physical metrics, lazy (see :func:`xoceandiff.diagnostics.diagnostics`)."""
        from .diagnostics import diagnostics

        return diagnostics(self._ds, eos=eos, depth_box=depth_box)

    def density_errors(self, *, eos: str = "teos10-poly") -> xr.DataArray:
        """The paper's density-error percentage per record (see :func:`xoceandiff.diagnostics.density_error_percent`)."""
        from .diagnostics import density_error_percent

        return density_error_percent(self._ds, eos=eos)

    def diversity(self) -> xr.Dataset:
        """Mean pairwise RMS distance between the records (see :func:`xoceandiff.diagnostics.diversity`)."""
        from .diagnostics import diversity

        return diversity(self._ds)

    # -- outputs ------------------------------------------------------------------------------------

    def to_netcdf(self, path: str | os.PathLike, *, compute: bool = True, overwrite: bool = False, encoding=None):
        """CF-1.11 NetCDF, written chunk by chunk and atomically (see :func:`xoceandiff.io.to_netcdf`)."""
        from .io import to_netcdf

        return to_netcdf(self._ds, path, compute=compute, overwrite=overwrite, encoding=encoding)

    def to_restart(self, target: str | os.PathLike, **kwargs):
        """One NEMO restart per sample (see :func:`xoceandiff.restart.to_restart`)."""
        from .restart import to_restart

        return to_restart(self._ds, target, **kwargs)

    def to_initial_state(self, target: str | os.PathLike, **kwargs):
        """NEMO initial-state files for ``ln_tsd_init`` (see :func:`xoceandiff.restart.to_initial_state`)."""
        from .restart import to_initial_state

        return to_initial_state(self._ds, target, **kwargs)
