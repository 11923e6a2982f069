"""The ``.oceandiff`` accessor: thin methods over the package's pure functions.

xarray caches an accessor per object, so the accessor keeps no state of its own: every derived
object (the xgcm grid, ...) is built from the dataset each time it is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr

if TYPE_CHECKING:  # torch, xgcm and the readers are imported on first use, not with the package
    import torch
    import xgcm

    from .model import Denoiser
    from .normalisation import Normaliser

__all__ = ["OceanDiffAccessor"]


@xr.register_dataset_accessor("oceandiff")
class OceanDiffAccessor:
    """Diffusion-model tools for a canonical NEMO dataset (``toce``, ``soce``, ``ssh`` + grid)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def grid(self) -> xgcm.Grid:
        """The :class:`xgcm.Grid` of the dataset (see :func:`xoceandiff.grid.build_grid`).

        Examples
        --------
        >>> import xoceandiff
        >>> sorted(xoceandiff.datasets.dino(n=1, resolution=4.0).oceandiff.grid.axes)
        ['X', 'Y', 'Z']
        """
        from .grid import build_grid

        return build_grid(self._ds)

    @property
    def periodic_x(self) -> bool:
        """Whether X is periodic (NEMO's ``Iperio = 1``).

        Examples
        --------
        >>> import xoceandiff
        >>> xoceandiff.datasets.dino(n=1, resolution=4.0).oceandiff.periodic_x
        True
        """
        from .grid import grid_padding

        return grid_padding(self._ds)["X"] == "periodic"

    def to_nemo_files(
        self,
        folder: str | os.PathLike,
        *,
        prefix: str = "DINO_10d",
        ranks: tuple[int, int] | None = None,
        overwrite: bool = False,
    ) -> dict[str, str]:
        """Write the dataset as NEMO/XIOS output files and a mesh_mask (see :func:`xoceandiff.nemo.to_nemo_files`).

        Examples
        --------
        >>> import tempfile, xoceandiff
        >>> paths = xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.to_nemo_files(tempfile.mkdtemp())
        >>> sorted(paths)
        ['grid_T_2D', 'grid_T_3D', 'mesh_mask', 'pieces']
        """
        from .nemo import to_nemo_files

        return to_nemo_files(self._ds, folder, prefix=prefix, ranks=ranks, overwrite=overwrite)

    # -- normalisation ------------------------------------------------------------------------------

    def statistics(
        self, *, fields: Sequence[str] | None = None, weighted: bool = False, method: str = "pooled"
    ) -> xr.Dataset:
        """Per-field, per-level mean, std, min, max in one lazy pass (see :func:`xoceandiff.normalisation.statistics`).

        Examples
        --------
        >>> import xoceandiff
        >>> stats = xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.statistics(fields=["ssh"])
        >>> sorted(stats.data_vars)
        ['ssh_max', 'ssh_mean', 'ssh_min', 'ssh_std']
        """
        from .normalisation import statistics

        return statistics(self._ds, fields=fields, weighted=weighted, method=method)

    def normalise(self, stats_or_normaliser: xr.Dataset | Normaliser, scheme: str = "3-std") -> xr.Dataset:
        """Normalise the fields (lazy); ``stats_or_normaliser`` is a statistics Dataset or a Normaliser.

        Examples
        --------
        >>> import numpy as np, xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> normalised = ds.oceandiff.normalise(ds.oceandiff.statistics(), scheme="3-std")
        >>> back = normalised.oceandiff.denormalise(ds.oceandiff.statistics(), scheme="3-std")
        >>> bool(np.allclose(back.toce, ds.toce, equal_nan=True))
        True
        """
        from .normalisation import Normaliser, normalise

        normaliser = stats_or_normaliser
        if not isinstance(normaliser, Normaliser):
            normaliser = Normaliser.from_statistics(stats_or_normaliser, scheme=scheme)
        return normalise(self._ds, normaliser)

    def denormalise(self, stats_or_normaliser: xr.Dataset | Normaliser, scheme: str = "3-std") -> xr.Dataset:
        """Exact inverse of :meth:`normalise`."""
        from .normalisation import Normaliser, denormalise

        normaliser = stats_or_normaliser
        if not isinstance(normaliser, Normaliser):
            normaliser = Normaliser.from_statistics(stats_or_normaliser, scheme=scheme)
        return denormalise(self._ds, normaliser)

    # -- model ----------------------------------------------------------------------------------------

    def train(
        self,
        model: Denoiser | str | os.PathLike | None = "small",
        *,
        steps: int = 1000,
        batch_size: int = 8,
        lr: float = 1e-4,
        seed: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        device: str | torch.device | None = None,
        levels: str | Sequence[int] = "every-other",
        scheme: str = "3-std",
        warmup_steps: int | None = None,
        ema_decay: float | None = None,
        mixed_precision: bool | None = None,
        drop_nan_snapshots: bool = False,
        buffer_chunks: int = 4,
        background: bool = False,
        prediction_type: str = "epsilon",
        record: Mapping[str, Any] | None = None,
        stop_after: int | None = None,
        progress: bool = True,
        conditions: Sequence[str] = (),
        condition_dropout: float = 0.1,
        parameters: Mapping[str, Any] | None = None,
        stability_weight: float = 0.0,
        vertical: bool = False,
    ) -> Denoiser:
        """Train a denoiser on this dataset's snapshots and return it (see :func:`xoceandiff.training.train`).

        The returned model carries its card (layout, normaliser, grid); pass it (or its checkpoint folder,
        ``checkpoint_dir/model``) to :meth:`sample`. The dataset is not modified.

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=4, resolution=4.0)
        >>> model = ds.oceandiff.train("tiny", steps=2, batch_size=2, progress=False)
        >>> model.card.training["steps_done"], "xoceandiff_checkpoint" in ds.attrs
        (2, False)
        """
        from .training import train

        return train(self._ds, model, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                     checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, device=device, levels=levels,
                     scheme=scheme, warmup_steps=warmup_steps, ema_decay=ema_decay, mixed_precision=mixed_precision,
                     drop_nan_snapshots=drop_nan_snapshots, buffer_chunks=buffer_chunks, background=background,
                     prediction_type=prediction_type, record=record, stop_after=stop_after, progress=progress,
                     conditions=conditions, condition_dropout=condition_dropout, parameters=parameters,
                     stability_weight=stability_weight, vertical=vertical)

    def sample(
        self,
        n: int,
        constraints: Any = (),
        *,
        model: Denoiser | str | os.PathLike | None = None,
        sampler: str = "ddim",
        steps: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        chunks: int | None = None,
        progress: bool = True,
        level_means: xr.Dataset | str | None = None,
        condition: Mapping[str, Any] | None = None,
        guidance: float = 1.0,
        free_below: int = 0,
    ) -> xr.Dataset:
        """Generate ``n`` ocean states on this dataset's grid: in memory, or lazily with ``chunks``.

        Eager: :func:`xoceandiff.sampling.sample`; with ``chunks=k``, a dask-backed Dataset with one task per
        ``k`` samples (:func:`xoceandiff.parallel.sample_lazy`; the model must then be a saved checkpoint).
        The default sampler is DDIM with 50 steps; ``sampler="ddpm"`` (1000 steps) is the paper's setting.
        ``level_means`` chooses what ``zero_mean`` drives the level means to: the training data's (default) or
        the statistics of chosen records (``ds.isel(t=slice(-72, None)).oceandiff.statistics(weighted=True)``
        places the samples at the end of a run that still drifts), or ``"records"``: one training record's per
        sample, and for a model trained on the date, each sample generated for its record's date. A conditional
        model samples for ``condition`` (``{"day_of_year": 180}``; see :func:`xoceandiff.sampling.sample`).
        ``free_below=300`` lets the network finish the last, low-noise steps alone before the ``at_end``
        constraints apply once (:class:`xoceandiff.sampling.SamplingOptions`): the GYRE demo's setting.

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> states = ds.oceandiff.sample(2, ["zero_mean", "border_zero_gradient"], steps=2, progress=False)
        >>> states.sizes["sample"], states.attrs["constraints"]
        (2, 'zero_mean, border_zero_gradient')
        """
        if chunks is not None:
            from .parallel import sample_lazy

            return sample_lazy(self._ds, n, constraints, model=model, chunks=chunks, sampler=sampler, steps=steps,
                               seed=seed, batch_size=batch_size, device=device, dtype=dtype, level_means=level_means,
                               condition=condition, guidance=guidance, free_below=free_below)
        from .sampling import sample

        return sample(self._ds, n, constraints, model=model, sampler=sampler, steps=steps, seed=seed,
                      batch_size=batch_size, device=device, dtype=dtype, progress=progress, level_means=level_means,
                      condition=condition, guidance=guidance, free_below=free_below)

    # -- diagnostics --------------------------------------------------------------------------------

    def diagnostics(self, *, eos: str = "auto", depth_box: float = 1500.0) -> xr.Dataset:
        """Per-record physical metrics, lazy (see :func:`xoceandiff.diagnostics.diagnostics`).

        ``eos="auto"`` takes the equation of state of the data's salinity: EOS-80 for practical salinity,
        TEOS-10 for absolute.

        Examples
        --------
        >>> import xoceandiff
        >>> metrics = xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.diagnostics()
        >>> metrics.sizes["t"], "check_density" in metrics
        (2, True)
        """
        from .diagnostics import diagnostics

        return diagnostics(self._ds, eos=eos, depth_box=depth_box)

    def density_errors(self, *, eos: str = "auto") -> xr.DataArray:
        """The paper's density-error percentage per record (see :func:`xoceandiff.diagnostics.density_error_percent`).

        Examples
        --------
        >>> import xoceandiff
        >>> errors = xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.density_errors()
        >>> bool((errors < 0.1).all())
        True
        """
        from .diagnostics import density_error_percent

        return density_error_percent(self._ds, eos=eos)

    def diversity(self) -> xr.Dataset:
        """Mean pairwise RMS distance between the records (see :func:`xoceandiff.diagnostics.diversity`).

        Examples
        --------
        >>> import xoceandiff
        >>> sorted(xoceandiff.datasets.dino(n=3, resolution=4.0).oceandiff.diversity().data_vars)
        ['diversity_soce', 'diversity_ssh', 'diversity_toce']
        """
        from .diagnostics import diversity

        return diversity(self._ds)

    # -- outputs ------------------------------------------------------------------------------------

    def to_netcdf(
        self,
        path: str | os.PathLike,
        *,
        compute: bool = True,
        overwrite: bool = False,
        encoding: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Any:
        """CF-1.11 NetCDF, written chunk by chunk and atomically (see :func:`xoceandiff.io.to_netcdf`).

        Returns the path written, or with ``compute=False`` a ``dask.delayed.Delayed`` that writes it.

        Examples
        --------
        >>> import pathlib, tempfile, xoceandiff
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "dino.nc"
        >>> xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.to_netcdf(path).name
        'dino.nc'
        """
        from .io import to_netcdf

        return to_netcdf(self._ds, path, compute=compute, overwrite=overwrite, encoding=encoding)

    def to_restart(
        self,
        target: str | os.PathLike,
        *,
        mesh_mask: str | os.PathLike | xr.Dataset | None = None,
        template: str | os.PathLike | None = None,
        namelist: str | os.PathLike | None = None,
        nemo_version: str | None = None,
        kt: int | None = None,
        ndastp: int | None = None,
        rdt: float | None = None,
        adatrj: float | None = None,
        ntime: int | None = None,
        velocities: str | None = None,
        eos: str = "auto",
        prefix: str = "restart",
        ranks: tuple[int, int] | None = None,
        overwrite: bool = False,
    ) -> list:
        """One NEMO restart per sample and the namelist settings (see :func:`xoceandiff.restart.to_restart`).

        Version, time step and date come from the explicit arguments, else the ``template`` restart, else the
        ``namelist``, else the documented defaults (NEMO 5.0).

        Examples
        --------
        >>> import tempfile, xoceandiff
        >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0).rename(t="sample")
        >>> paths = states.oceandiff.to_restart(tempfile.mkdtemp())
        >>> [p.name for p in paths][:2]
        ['restart_s000_xoceandiff.nc', 'restart_s001_xoceandiff.nc']
        """
        from .restart import to_restart

        return to_restart(self._ds, target, mesh_mask=mesh_mask, template=template, namelist=namelist,
                          nemo_version=nemo_version,
                          kt=kt, ndastp=ndastp, rdt=rdt, adatrj=adatrj, ntime=ntime, velocities=velocities, eos=eos,
                          prefix=prefix, ranks=ranks, overwrite=overwrite)

    def to_initial_state(
        self, target: str | os.PathLike, *, index: int = 0, prefix: str = "initial", overwrite: bool = False
    ) -> list:
        """NEMO initial-state files of sample ``index`` (see :func:`xoceandiff.restart.to_initial_state`)."""
        from .restart import to_initial_state

        return to_initial_state(self._ds, target, index=index, prefix=prefix, overwrite=overwrite)
