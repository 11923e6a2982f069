"""Dask-chunked generation: lazy, reproducible, resumable, on one machine or a cluster.

* :func:`sample_lazy` builds a dask-backed Dataset with one task per chunk of samples. A task carries
  the checkpoint's path and hash, not its weights: each worker process loads the model once (a per-process
  cache) and keeps it, so the graph stays small whatever the model size.
* :func:`generate_to_netcdf` is the resumable job behind ``xoceandiff sample``: every finished chunk is
  written durably as its own part file (atomically, so a part is either complete or absent); a re-run
  skips the parts that exist, and the final file is merged from the parts and renamed into place.
  Randomness is per sample (see :mod:`xoceandiff.sampling`), so results do not depend on the chunking
  or on the number of workers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import torch
import xarray as xr

from .canonical import grid_from_kit, grid_kit
from .constraints import Constraint
from .conventions import FIELDS, SAMPLE_DIM
from .errors import CheckpointError, InvalidDataError, OutputExistsError
from .layout import from_tensor
from .model import Denoiser, load_model
from .sampling import (
    DEFAULT_SAMPLER,
    SamplingOptions,
    SamplingPlan,
    generate,
    plan_sampling,
    sample_field_attrs,
    sample_metadata,
)

THREE_D = frozenset(name for name, spec in FIELDS.items() if spec.three_dimensional)

__all__ = ["sample_lazy", "generate_to_netcdf", "connect", "cached_model", "part_paths"]

_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def cached_model(path: str, sha256: str, device: str):
    """The model of checkpoint ``path``, loaded once per process (and per device)."""
    key = (str(path), str(sha256), str(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            if not Path(path).exists():
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} is not readable from this worker ({os.uname().nodename}). Put it on "
                    "a file system every worker sees."
                )
            model = load_model(path, device=device)
            if model.checkpoint_hash != sha256:
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} changed since the graph was built (sha256 {sha256} expected, "
                    f"{model.checkpoint_hash} found)."
                )
            _CACHE[key] = model
        return _CACHE[key]


def _chunk_values(checkpoint: str, sha256: str, grid: xr.Dataset, indices: Sequence[int],
                  constraints: Sequence[Constraint], options: dict[str, Any]) -> np.ndarray:
    """Samples ``indices`` in physical units, stacked as (k, toce levels + soce levels + ssh, ny, nx).

    Runs on a worker: the options arrive as plain values (device and dtype as strings) and become torch
    objects again here, on the far side of the dask boundary.
    """
    device = options["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    model = cached_model(checkpoint, sha256, device)
    plan = SamplingPlan(model, tuple(constraints), SamplingOptions(**{**options, "device": torch.device(device)}))
    out = generate(grid, plan, indices)
    return np.concatenate([out[name].values if name in THREE_D else out[name].values[:, None]
                           for name in model.card.fields], axis=1)


def _grid_only(ds: xr.Dataset) -> xr.Dataset:
    """What a task needs of the grid (:data:`xoceandiff.canonical.GRID_KIT` and the index axes), loaded.

    Shipped once in the graph; the output's coordinates come from the full dataset when the graph is built.
    """
    return grid_from_kit(grid_kit(ds), periodic_x=bool(int(ds.attrs.get("Iperio", 0))))


def _wire_options(options: SamplingOptions) -> dict[str, Any]:
    """The options as plain values for the task graph (torch device and dtype as strings)."""
    return {
        "sampler": options.sampler, "steps": int(options.steps), "seed": int(options.seed),
        "batch_size": options.batch_size, "progress": False,
        "device": None if options.device is None else str(options.device),
        "dtype": str(options.dtype).replace("torch.", ""),
    }


def sample_lazy(
    ds: xr.Dataset,
    n: int,
    constraints: Any = (),
    *,
    model: Denoiser | str | os.PathLike | None = None,
    chunks: int,
    sampler: str = DEFAULT_SAMPLER,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> xr.Dataset:
    """Like :func:`xoceandiff.sampling.sample`, but lazy: one dask task per chunk of ``chunks`` samples.

    The model must be a saved checkpoint (its path and hash travel in the graph, not its weights). With
    ``device=None`` each worker uses its GPU if it has one, else its CPU.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> lazy = sample_lazy(ds, 4, ["zero_mean"], model=xoceandiff.pretrained.bundled_checkpoint(), chunks=2, steps=2)
    >>> lazy.toce.data.numblocks[0], lazy.attrs["chunks"]
    (2, 2)
    """
    options = SamplingOptions(sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                              device=None if device is None else torch.device(device),
                              dtype=dtype or torch.float32, progress=False)
    plan = plan_sampling(ds, n, constraints, model=model, options=options)
    if isinstance(chunks, bool) or int(chunks) != chunks or not 0 < chunks <= n:
        raise InvalidDataError(f"chunks: expected a number of samples per chunk between 1 and n={n}, found {chunks!r}.")
    model = plan.model
    if model.checkpoint_path is None or model.checkpoint_hash is None:
        raise CheckpointError(
            "chunks= needs a model saved to a checkpoint: workers load it from disk. Call model.save(path) first, "
            "or train with checkpoint_dir=."
        )
    stacked = _lazy_blocks(ds, plan, int(n), int(chunks))
    layout = model.card.layout
    # Structure (coordinates, attributes) from one eager conversion of an all-zero sample.
    shape = from_tensor(torch.zeros((1, layout.channels, *layout.shape)), layout, ds, dim=SAMPLE_DIM,
                        normaliser=model.card.normaliser)
    data_vars = {}
    start = 0
    for name in layout.fields:
        width = layout.n_levels if name in THREE_D else 1
        data = stacked[:, start : start + width] if name in THREE_D else stacked[:, start]
        start += width
        data_vars[name] = (shape[name].dims, data, sample_field_attrs(model.card, name))
    coords = {k: v.variable for k, v in shape.coords.items() if SAMPLE_DIM not in v.dims}
    out = xr.Dataset(data_vars, coords=coords)
    out = out.assign_coords({SAMPLE_DIM: (SAMPLE_DIM, np.arange(int(n)),
                                          {"long_name": "Sample index (random stream)", "units": "1"})})
    out.attrs = sample_metadata(ds.attrs, plan)
    out.attrs["chunks"] = int(chunks)
    return out


def _lazy_blocks(ds: xr.Dataset, plan: SamplingPlan, n: int, chunks: int) -> dsa.Array:
    """One delayed task per chunk of samples, concatenated along the sample axis."""
    model, layout = plan.model, plan.model.card.layout
    grid = dask.delayed(_grid_only(ds), pure=True)
    wire = _wire_options(plan.options)
    width = sum(layout.n_levels if name in THREE_D else 1 for name in layout.fields)
    blocks = []
    for first in range(0, n, chunks):
        indices = list(range(first, min(first + chunks, n)))
        task = dask.delayed(_chunk_values, pure=True)(
            str(model.checkpoint_path), model.checkpoint_hash, grid, indices, list(plan.constraints), wire,
            dask_key_name=f"xoceandiff-sample-{model.checkpoint_hash[:12]}-{wire['seed']}-{first}-{len(indices)}",
        )
        blocks.append(dsa.from_delayed(task, shape=(len(indices), width, layout.ny, layout.nx), dtype=np.float32))
    return dsa.concatenate(blocks, axis=0)


# --------------------------------------------------------------------------------------------------
# Resumable generation to NetCDF
# --------------------------------------------------------------------------------------------------


def part_paths(out: str | os.PathLike, n: int, chunks: int) -> list[Path]:
    """Part files of a resumable job writing ``out``: ``<out>.parts/part_<first>_<last>.ncpart``."""
    folder = Path(f"{out}.parts")
    return [folder / f"part_s{first:06d}-{min(first + chunks, n) - 1:06d}.ncpart" for first in range(0, n, chunks)]


def _write_part(lazy_part: xr.Dataset, path: str) -> str:
    from .io import write_netcdf_atomic

    # Already written by an earlier (killed) run: atomic writes mean an existing part is complete.
    if not Path(path).exists():
        write_netcdf_atomic(lazy_part.compute(scheduler="sync"), path)
    return path


def connect(scheduler: str | None = None, local_workers: int | None = None, *, timeout: float = 10.0):
    """A ``distributed.Client`` on ``scheduler`` (address) or a new ``LocalCluster`` of ``local_workers``; None for neither."""
    if scheduler and local_workers:
        raise InvalidDataError("Give either a scheduler address or a number of local workers, not both.")
    if not scheduler and not local_workers:
        return None
    try:  # an optional dependency (the hpc extra): only connect() needs it
        from distributed import Client, LocalCluster
    except ImportError as err:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            "connecting to a dask cluster needs the 'distributed' package, which is not installed; "
            'install it with pip install "xoceandiff[hpc]" (or pip install distributed).'
        ) from err

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as err:
            raise InvalidDataError(
                f"Cannot reach the dask scheduler at {scheduler!r} within {timeout:g} s ({err}). Check the address "
                "(e.g. tcp://host:8786) and that the scheduler is running."
            ) from err
    if int(local_workers) <= 0:
        raise InvalidDataError(f"local_workers: expected a positive number of workers, found {local_workers!r}.")
    cluster = LocalCluster(n_workers=int(local_workers), threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster)


def generate_to_netcdf(
    ds: xr.Dataset,
    n: int,
    constraints: Sequence = (),
    *,
    out: str | os.PathLike,
    model,
    chunks: int,
    overwrite: bool = False,
    client=None,
    retries: int = 2,
    resources: dict[str, float] | None = None,
    keep_parts: bool = False,
    sampler: str = DEFAULT_SAMPLER,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Generate ``n`` samples chunk by chunk into ``out``; resumable after a kill.

    Each chunk becomes a part file as soon as it is done (``<out>.parts/``). Running the same call again
    skips the finished parts. When all parts exist they are merged into ``out`` (CF NetCDF, atomic) and
    the parts folder is removed. Tasks that fail on a worker are retried ``retries`` times; with
    ``resources={"GPU": 1}`` each task asks its worker for one GPU, so two chunks never share one.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{str(out)!r} exists; pass overwrite=True (--overwrite) to replace it.")
    lazy = sample_lazy(ds, n, constraints, model=model, chunks=chunks, sampler=sampler, steps=steps, seed=seed,
                       batch_size=batch_size, device=device, dtype=dtype)
    paths = part_paths(out, int(n), int(chunks))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    annotations: dict[str, Any] = {"retries": int(retries)}
    if resources:
        annotations["resources"] = dict(resources)
    tasks = []
    with dask.annotate(**annotations):
        for path, first in zip(paths, range(0, int(n), int(chunks)), strict=True):
            if path.exists():
                continue
            part = lazy.isel(sample=slice(first, first + int(chunks)))
            tasks.append(dask.delayed(_write_part, pure=False)(part, str(path)))
    if tasks:
        if client is not None:
            futures = client.compute(tasks, retries=int(retries))
            client.gather(futures)
        else:
            dask.compute(*tasks, scheduler="threads", num_workers=1)
    from .io import to_netcdf

    merged = xr.open_mfdataset([str(p) for p in paths], combine="nested", concat_dim="sample", engine="netcdf4",
                               data_vars="minimal", coords="minimal", compat="override", join="override")
    merged.attrs = dict(lazy.attrs)
    try:
        to_netcdf(merged, out, overwrite=overwrite)
    finally:
        merged.close()
    if not keep_parts:
        for path in paths:
            path.unlink(missing_ok=True)
        try:
            paths[0].parent.rmdir()
        except OSError:
            pass
    return out
