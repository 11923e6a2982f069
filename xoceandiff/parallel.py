"""Dask-chunked generation: lazy, reproducible, resumable, on one machine or a cluster.

* :func:`sample_lazy` builds a dask-backed Dataset with one task per chunk of samples. A task carries
  the checkpoint's path and hash, not its weights: each worker process loads the model once (a per-process
  cache) and keeps it, so the graph stays small whatever the model size.
* :func:`generate_to_netcdf` is the resumable job behind ``xoceandiff sample``: every finished chunk is
  written durably as its own part file (atomically, so a part is either complete or absent); a re-run
  skips the parts that exist, and the final file is merged from the parts and renamed into place.
  Randomness is per sample (see :mod:`xoceandiff.sampling`), so results do not depend on the chunking
  or on the number of workers.

What is guaranteed (nothing lost, nothing mixed, nothing mislabelled):

* **Keyed parts.** A job's parts folder holds a manifest (``run.json``) with the *run key*: the sha256 of
  everything that determines a sample (checkpoint hash, sampler, steps, seed, constraints with their
  parameters, dtype, package version, ``n`` and ``chunks``; see :func:`run_settings`). Every part file
  carries the key in its attributes. A re-run with other settings refuses, naming the settings that
  differ; a part whose key differs is never reused.
* **One writer.** ``<out>.lock`` is created exclusively (``O_CREAT | O_EXCL``) with the writer's pid and
  host, and removed at the end, also on error. A second job on the same output refuses at once; a lock
  left by a dead process of this host is stale and taken over.
* **Checked up front.** :func:`sample_lazy` refuses more than :data:`MAX_TASKS` tasks and a chunk whose
  memory exceeds :data:`MEMORY_FRACTION` of the machine's; :func:`generate_to_netcdf` also refuses when
  the output's file system lacks the space. Each refusal takes well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
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
    sample_coords,
    sample_field_attrs,
    sample_metadata,
)

THREE_D = frozenset(name for name, spec in FIELDS.items() if spec.three_dimensional)

__all__ = [
    "sample_lazy",
    "generate_to_netcdf",
    "connect",
    "jobqueue_client",
    "JOBQUEUES",
    "cached_model",
    "part_paths",
    "run_settings",
    "run_key",
    "output_lock",
    "check_request_size",
    "MAX_TASKS",
    "MEMORY_FRACTION",
]

MAX_TASKS = 20_000
"""Most tasks (chunks) a lazy request may have. Building a graph costs about 0.3 ms per task (20,000 tasks:
6 s on a busy 2-core machine; a million: minutes), and the scheduler pays again per task. Raise ``chunks``."""

MEMORY_FRACTION = 0.5
"""Largest share of the machine's memory one chunk (its samples and the model's working set) may need."""

WORKING_SET_FACTOR = 8
"""The network's activations per sample, in units of one sample tensor (a rough lower bound)."""

COMPRESSION_GUESS = 2.0
"""Compression ratio assumed by the disk check (zlib gives 2-4x on samples; 2 errs on the safe side)."""

MANIFEST_NAME = "run.json"
"""The manifest of a parts folder: its run key and the settings behind it."""

RUN_KEY_ATTR = "xoceandiff_run_key"
"""Global attribute of a part file: the run key of the job that wrote it."""

RUN_SETTINGS_ATTR = "xoceandiff_run_settings"
"""Global attribute of a part file: the settings behind its run key, as JSON."""

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
                  constraints: Sequence[Constraint], options: dict[str, Any],
                  extras: Mapping[str, Any] | None = None) -> np.ndarray:
    """Samples ``indices`` in physical units, stacked as (k, toce levels + soce levels + ssh, ny, nx).

    Runs on a worker: the options arrive as plain values (device and dtype as strings) and become torch
    objects again here, on the far side of the dask boundary.
    """
    device = options["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    model = cached_model(checkpoint, sha256, device)
    plan = SamplingPlan(model, tuple(constraints), SamplingOptions(**{**options, "device": torch.device(device)}),
                        **dict(extras or {}))
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
        "batch_size": options.batch_size, "progress": False, "free_below": int(options.free_below),
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
    level_means: xr.Dataset | str | None = None,
    condition: Mapping[str, Any] | None = None,
    guidance: float = 1.0,
    free_below: int = 0,
) -> xr.Dataset:
    """Like :func:`xoceandiff.sampling.sample`, but lazy: one dask task per chunk of ``chunks`` samples.

    The model must be a saved checkpoint (its path and hash travel in the graph, not its weights). With
    ``device=None`` each worker uses its GPU if it has one, else its CPU.

    The request is sized before anything is built (:func:`check_request_size`): more than
    :data:`MAX_TASKS` chunks, or a chunk needing more than :data:`MEMORY_FRACTION` of the machine's
    memory, is refused at once.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        ``chunks`` out of range, or a request too large (the message names the numbers and the fix).
    xoceandiff.errors.CheckpointError
        The model is not saved to a checkpoint.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> lazy = sample_lazy(ds, 4, ["zero_mean"], model=xoceandiff.pretrained.bundled_checkpoint(), chunks=2, steps=2)
    >>> lazy.toce.data.numblocks[0], lazy.attrs["chunks"]
    (2, 2)
    """
    return _sample_lazy(ds, n, constraints, model=model, chunks=chunks, sampler=sampler, steps=steps, seed=seed,
                        batch_size=batch_size, device=device, dtype=dtype, level_means=level_means,
                        condition=condition, guidance=guidance, free_below=free_below)[0]


def _sample_lazy(ds: xr.Dataset, n: int, constraints: Any, *, model, chunks: int, sampler: str, steps: int | None,
                 seed: int, batch_size: int | None, device, dtype, level_means: xr.Dataset | str | None = None,
                 condition: Mapping[str, Any] | None = None, guidance: float = 1.0, free_below: int = 0
                 ) -> tuple[xr.Dataset, SamplingPlan]:
    """:func:`sample_lazy` and the validated plan behind it."""
    options = SamplingOptions(sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                              device=None if device is None else torch.device(device),
                              dtype=dtype or torch.float32, progress=False, free_below=free_below)
    plan = plan_sampling(ds, n, constraints, model=model, options=options, level_means=level_means,
                         condition=condition, guidance=guidance)
    if isinstance(chunks, bool) or int(chunks) != chunks or not 0 < chunks <= n:
        raise InvalidDataError(f"chunks: expected a number of samples per chunk between 1 and n={n}, found {chunks!r}.")
    model = plan.model
    if model.checkpoint_path is None or model.checkpoint_hash is None:
        raise CheckpointError(
            "chunks= needs a model saved to a checkpoint: workers load it from disk. Call model.save(path) first, "
            "or train with checkpoint_dir=."
        )
    check_request_size(plan, int(n), int(chunks))
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
    out = out.assign_coords(sample_coords(plan, range(int(n))))
    out.attrs = sample_metadata(ds.attrs, plan)
    out.attrs["chunks"] = int(chunks)
    return out, plan


# --------------------------------------------------------------------------------------------------
# Sizing a request before building it
# --------------------------------------------------------------------------------------------------


def _sample_width(plan: SamplingPlan) -> int:
    """Values per grid column of one output sample (levels of each 3-D field, one per 2-D field)."""
    layout = plan.model.card.layout
    return sum(layout.n_levels if name in THREE_D else 1 for name in layout.fields)


def sample_bytes(plan: SamplingPlan) -> int:
    """Bytes of one output sample (float32), as the graph's blocks and the raw files hold it."""
    layout = plan.model.card.layout
    return _sample_width(plan) * layout.ny * layout.nx * 4


def machine_memory() -> int:
    """Physical memory of this machine in bytes (psutil when installed, else ``os.sysconf``; 0 if unknown)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().total)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.2f} GiB"


def check_request_size(plan: SamplingPlan, n: int, chunks: int) -> None:
    """Refuse a lazy request too large to build or run, before anything is built.

    Two checks, each a few arithmetic operations:

    * the number of tasks, ``ceil(n / chunks)``, must not exceed :data:`MAX_TASKS` (a graph of a million
      tasks takes minutes to build);
    * one chunk's memory, ``chunks x values per sample x 4 bytes`` plus the model's working set (its
      parameters and about :data:`WORKING_SET_FACTOR` sample tensors of activations per sample of a batch),
      must not exceed :data:`MEMORY_FRACTION` of this machine's memory (:func:`machine_memory`).

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        Naming the numbers and how to fix the request.

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.sampling import plan_sampling
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> plan = plan_sampling(ds, 4, model=xoceandiff.pretrained.bundled_checkpoint())
    >>> check_request_size(plan, 4, 2)  # fine: nothing raised
    >>> check_request_size(plan, 10**7, 10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xoceandiff.errors.InvalidDataError: chunks: n=10000000 samples in chunks of 10 make 1,000,000 tasks, ...
    """
    tasks = -(-int(n) // int(chunks))
    if tasks > MAX_TASKS:
        fewer = -(-int(n) // MAX_TASKS)
        raise InvalidDataError(
            f"chunks: n={n} samples in chunks of {chunks} make {tasks:,} tasks, more than the {MAX_TASKS:,} a graph "
            f"may hold (xoceandiff.parallel.MAX_TASKS). Use chunks={fewer} or more, or split the request into "
            "several runs."
        )
    model, options = plan.model, plan.options
    layout = model.card.layout
    itemsize = torch.empty((), dtype=options.dtype).element_size()
    batch = min(int(options.batch_size or chunks), int(chunks))
    tensor = layout.channels * int(np.prod(layout.shape)) * itemsize
    params = sum(p.numel() for p in model.parameters()) * itemsize
    output = int(chunks) * sample_bytes(plan)
    working = params + batch * tensor * WORKING_SET_FACTOR
    total = machine_memory()
    if total and output + working > MEMORY_FRACTION * total:
        per_sample = sample_bytes(plan) + tensor * WORKING_SET_FACTOR
        fitting = max(1, int((MEMORY_FRACTION * total - params) // per_sample))
        raise InvalidDataError(
            f"chunks: one chunk of {chunks} samples needs about {_gib(output + working)} ({_gib(output)} of samples, "
            f"{_gib(working)} for the model and its activations), more than {MEMORY_FRACTION:.0%} of this machine's "
            f"{_gib(total)}. Use chunks={fitting} or fewer (and batch_size= to bound the activations)."
        )


def _plan_extras(plan: SamplingPlan) -> dict[str, Any]:
    """What a task needs of the plan besides the model, constraints and options, as plain values."""
    return {
        "level_means": None if plan.level_means is None else dict(plan.level_means),
        "level_means_source": plan.level_means_source,
        "condition": None if plan.condition is None else {k: np.asarray(v).tolist() for k, v in plan.condition.items()},
        "guidance": float(plan.guidance),
    }


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
            _plan_extras(plan),
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


_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def run_settings(plan: SamplingPlan, n: int, chunks: int) -> dict[str, Any]:
    """Everything that determines the samples of a chunked job, as plain values (the run key's input).

    The checkpoint's sha256, the sampler and its steps, the seed, the constraints in order with their
    parameters (their ``repr``, memory addresses removed), the dtype, the package version, ``n`` and
    ``chunks``. The device and the batch size are left out: they change the samples only by float rounding.

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.sampling import SamplingOptions, plan_sampling
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> plan = plan_sampling(ds, 4, ["zero_mean"], model=xoceandiff.pretrained.bundled_checkpoint(),
    ...                      options=SamplingOptions(seed=3))
    >>> settings = run_settings(plan, 4, 2)
    >>> settings["seed"], settings["constraints"], settings["dtype"], settings["n"], settings["chunks"]
    (3, ["ZeroMean(stable='end', eos='auto', margin=0.003, max_factor=100)"], 'float32', 4, 2)
    """
    from .version import __version__

    options = plan.options
    return {
        "checkpoint_sha256": str(plan.model.checkpoint_hash or "unsaved"),
        "sampler": str(options.sampler),
        "steps": int(options.steps),
        "free_below": int(options.free_below),
        "seed": int(options.seed),
        "constraints": [_ADDRESS_RE.sub("", repr(c)) for c in plan.constraints],
        "dtype": str(options.dtype).replace("torch.", ""),
        "xoceandiff_version": str(__version__),
        "n": int(n),
        "chunks": int(chunks),
        "level_means": None if plan.level_means is None else {k: list(v) for k, v in plan.level_means.items()},
        **({} if plan.condition is None else {
            "condition": {k: np.asarray(v).tolist() for k, v in plan.condition.items()}, "guidance": plan.guidance}),
    }


def run_key(settings: dict[str, Any]) -> str:
    """The sha256 of ``settings`` (:func:`run_settings`) as canonical JSON: equal keys, equal samples.

    Examples
    --------
    >>> run_key({"seed": 0, "n": 4}) == run_key({"n": 4, "seed": 0}) != run_key({"seed": 1, "n": 4})
    True
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    """``"seed is 0 there and 1 now; ..."`` for the settings that differ."""
    names = [k for k in sorted(set(found) | set(wanted)) if found.get(k) != wanted.get(k)]
    return "; ".join(f"{k} is {found.get(k, 'not recorded')!r} there and {wanted.get(k)!r} now" for k in names)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The parts folder's manifest, or None when it has none (or an unreadable one)."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "key" in manifest else None


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest once, atomically (concurrent writers of one run write the same text)."""
    from .atomic import atomic_path

    target = folder / MANIFEST_NAME
    if _read_manifest(folder) == manifest:
        return
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _part_record(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The run key and settings a part file records; ``(None, {})`` when unreadable or unkeyed."""
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
    except (OSError, RuntimeError, ValueError):
        return None, {}
    try:
        settings = json.loads(str(attrs.get(RUN_SETTINGS_ATTR, "{}")))
    except ValueError:
        settings = {}
    key = attrs.get(RUN_KEY_ATTR)
    return (None if key is None else str(key)), settings if isinstance(settings, dict) else {}


def _check_previous_run(folder: Path, out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Keep the parts of an earlier run with the same key; refuse (or, with overwrite, discard) others."""
    if not folder.exists():
        return
    parts = sorted(folder.glob("part_s*.ncpart"))
    recorded = _read_manifest(folder)
    if recorded is None and parts:  # parts without a manifest: trust only what the parts themselves record
        key, settings = _part_record(parts[0])
        recorded = {"key": key, "settings": settings}
    if recorded is None or recorded["key"] == manifest["key"]:
        return
    if overwrite:
        shutil.rmtree(folder)
        return
    differ = _differences(dict(recorded.get("settings") or {}), manifest["settings"]) or "the run key differs"
    raise OutputExistsError(
        f"out: {str(folder)!r} holds the parts of another run ({differ}); its samples cannot be mixed into this "
        f"one. Re-run with that run's settings to resume it, pass overwrite=True (--overwrite) to discard its "
        f"parts, or choose another out than {str(out)!r}."
    )


def _reusable(path: Path, key: str) -> bool:
    """Whether the existing part ``path`` was written by the run ``key`` (a part of another run is removed)."""
    if not path.exists():
        return False
    found, _ = _part_record(path)
    if found == key:
        return True
    warnings.warn(f"{str(path)!r} was not written by this run (run key {found} instead of {key}); computing it "
                  "again.", RuntimeWarning, stacklevel=3)
    path.unlink(missing_ok=True)
    return False


def _part_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """zlib compression for every numeric array of a part, as :func:`xoceandiff.io.to_netcdf` compresses."""
    from .io import _COMPRESSION

    return {str(name): dict(_COMPRESSION) for name, var in ds.variables.items()
            if var.ndim > 0 and var.dtype.kind in "fiu"}


def _write_part(lazy_part: xr.Dataset, path: str, manifest: dict[str, Any]) -> str:
    """Compute one chunk and write it as a compressed part file keyed by its run (the folder appears now)."""
    from .io import write_netcdf_atomic

    target = Path(path)
    # Already written by an earlier (killed) run and checked before the graph was built: atomic writes
    # mean an existing part is complete.
    if target.exists():
        return path
    part = lazy_part.compute(scheduler="sync")
    part.attrs[RUN_KEY_ATTR] = manifest["key"]
    part.attrs[RUN_SETTINGS_ATTR] = json.dumps(manifest["settings"], sort_keys=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_manifest(target.parent, manifest)
    write_netcdf_atomic(part, target, encoding=_part_encoding(part))
    return path


# --------------------------------------------------------------------------------------------------
# The output lock
# --------------------------------------------------------------------------------------------------


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _stale(lock: Path, holder: dict[str, Any] | None) -> bool:
    """A lock of a dead process of this host, or an unreadable one older than a minute."""
    from .atomic import _pid_alive

    if holder is None:  # being written right now, or left half-written by a kill
        try:
            return time.time() - lock.stat().st_mtime > 60
        except OSError:
            return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        return not _pid_alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return False


def _take_over(lock: Path, holder: dict[str, Any] | None) -> None:
    """Remove the stale ``lock``, unless another process replaced it meanwhile (then it is put back)."""
    aside = lock.with_name(f".{lock.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if _read_lock(aside) != holder and holder is not None:
        with contextlib.suppress(OSError):  # not the stale lock we saw: give it back
            os.link(aside, lock)
    aside.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<out>.lock`` for the block: one job at a time writes ``out`` and its parts.

    The lock file is created exclusively (``O_CREAT | O_EXCL``) and holds the process id, host and start
    time; it is removed when the block ends, also on error. A lock whose process is dead on this host (a
    killed job) is stale and taken over; a live one, or one held on another host, refuses at once.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        Another job holds the lock; the message names it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "samples.nc"
    >>> with output_lock(out) as lock:
    ...     lock.name, lock.exists()
    ('samples.nc.lock', True)
    >>> lock.exists()
    False
    """
    lock = Path(f"{out}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "token": uuid.uuid4().hex}
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder == {}:  # released meanwhile
                continue
            if _stale(lock, holder):
                _take_over(lock, holder)
                continue
            who = (f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"
                   if holder else "a process that is still writing it")
            raise OutputExistsError(
                f"out: {str(out)!r} is being written by {who}: its lock {str(lock)!r} exists. Wait for that job to "
                "finish, choose another out, or, if that process is gone (e.g. it ran on another host), delete the "
                "lock file."
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(mine))
            handle.flush()
            os.fsync(handle.fileno())
        break
    else:
        raise OutputExistsError(f"out: could not take the lock {str(lock)!r} (other jobs keep taking it); try again.")
    try:
        yield lock
    finally:
        if _read_lock(lock) == mine:
            lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Clusters and the resumable job
# --------------------------------------------------------------------------------------------------


def connect(scheduler: str | None = None, local_workers: int | None = None, *, timeout: float = 10.0):
    """A ``distributed.Client`` on ``scheduler`` (an address) or on a new ``LocalCluster``; None for neither.

    The local cluster has ``local_workers`` single-threaded worker processes and no dashboard: the
    scheduler's small HTTP server (health and metrics only, which distributed always starts) listens on
    a random port of 127.0.0.1, not on the dashboard port 8787, and serves no dashboard pages.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://host:8786``.
    local_workers : int, optional
        Number of worker processes of a new local cluster (a positive integer).
    timeout : float
        Seconds to wait for the scheduler.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        Both or a bad number of workers given, or the scheduler unreachable.
    xoceandiff.errors.MissingDependencyError
        dask.distributed (the ``hpc`` extra) is not installed.

    Examples
    --------
    >>> connect() is None
    True
    """
    if scheduler and local_workers is not None:
        raise InvalidDataError("Give either a scheduler address or a number of local workers, not both.")
    if local_workers is not None and (isinstance(local_workers, bool) or int(local_workers) != local_workers
                                      or local_workers <= 0):
        raise InvalidDataError(
            f"local_workers: expected a positive number of worker processes, found {local_workers!r}. Leave it out "
            "(no --local-workers) to run the chunks one after the other in this process."
        )
    if not scheduler and local_workers is None:
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
    # dashboard_address=None turns the dashboard pages off but still binds the scheduler's HTTP server to the
    # dashboard port 8787 (distributed 2026.8): bind it to a random loopback port instead, dashboard still off.
    cluster = LocalCluster(n_workers=int(local_workers), threads_per_worker=1, processes=True,
                           dashboard_address=None, worker_dashboard_address=None,
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    return Client(cluster)


JOBQUEUES: tuple[str, ...] = ("slurm", "pbs")


def jobqueue_client(kind: str, jobs: int, *, memory: str = "4GB", walltime: str = "01:00:00",
                    queue: str | None = None, timeout: float = 300.0, log_directory: str | os.PathLike | None = None):
    """A ``distributed.Client`` on a dask-jobqueue cluster: ``jobs`` batch jobs of one single-threaded worker each.

    Each job asks the batch system for one core and ``memory``; the workers run this Python
    (``sys.executable``), so the nodes must see the same environment. The call returns once every worker has
    joined (within ``timeout`` seconds), so that chunks are spread over all of them. Samples do not depend on
    where they run: the same seeds give the same bits as on a ``LocalCluster`` of single-threaded workers.

    Parameters
    ----------
    kind : {"slurm", "pbs"}
        dask-jobqueue's ``SLURMCluster`` or ``PBSCluster``.
    jobs : int
        Batch jobs (= workers) to start.
    memory, walltime, queue : str
        Per-job memory, wall-clock limit and queue/partition (the batch system's default when None).
    timeout : float
        Seconds to wait for the workers to join.
    log_directory : path, optional
        Where the jobs write their output (default: the batch system's, e.g. ``slurm-<job>.out`` in the
        current folder).

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        An unknown kind, a bad number of jobs, or workers that did not join in time.
    xoceandiff.errors.MissingDependencyError
        dask-jobqueue is not installed.
    """
    if kind not in JOBQUEUES:
        raise InvalidDataError(f"jobqueue: expected one of {', '.join(JOBQUEUES)}, found {kind!r}.")
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs <= 0:
        raise InvalidDataError(f"jobs: expected a positive number of batch jobs, found {jobs!r}.")
    try:
        import dask_jobqueue
        from distributed import Client
    except ImportError as err:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            "a batch-system cluster needs 'dask-jobqueue' and 'distributed'; install them with "
            'pip install "xoceandiff[hpc]".'
        ) from err
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    cluster = cls(cores=1, processes=1, memory=memory, walltime=walltime, queue=queue, python=sys.executable,
                  scheduler_options={"dashboard_address": None},
                  log_directory=None if log_directory is None else os.fspath(log_directory))
    cluster.scale(jobs=int(jobs))
    client = Client(cluster)
    try:
        client.wait_for_workers(int(jobs), timeout=timeout)
    except TimeoutError as err:
        client.close()
        cluster.close()
        raise InvalidDataError(
            f"jobqueue: {jobs} {kind} job(s) submitted but not all workers joined within {timeout:g} s; check the "
            f"queue (squeue / qstat) and that the nodes see this Python ({sys.executable})."
        ) from err
    return client


def _free_space(path: Path) -> int:
    """Free bytes on the file system that will hold ``path`` (its nearest existing folder)."""
    folder = path.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return int(shutil.disk_usage(folder).free)


def _check_disk(out: Path, plan: SamplingPlan, n: int, missing: int) -> None:
    """Refuse when the parts still to write and the merged file will not fit on ``out``'s file system."""
    per_sample = sample_bytes(plan)
    need = int((missing + n) * per_sample / COMPRESSION_GUESS)
    free = _free_space(out)
    if need > free:
        raise InvalidDataError(
            f"out: {n} samples of {per_sample / 2**20:,.2f} MiB each need about {_gib(need)} on the file system of "
            f"{str(out)!r} ({missing} samples still to write as parts, then the merged file, both at an assumed "
            f"{COMPRESSION_GUESS:g}x compression), but only {_gib(free)} are free. Free some space, write to another "
            "file system, or ask for fewer samples."
        )


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
    level_means: xr.Dataset | str | None = None,
    condition: Mapping[str, Any] | None = None,
    guidance: float = 1.0,
    free_below: int = 0,
) -> Path:
    """Generate ``n`` samples chunk by chunk into ``out``; resumable after a kill.

    Each chunk becomes a zlib-compressed part file as soon as it is done (``<out>.parts/``, a folder
    created with the first part). Running the same call again skips the finished parts. When all parts
    exist they are merged into ``out`` (CF NetCDF, atomic) and the parts folder is removed. Tasks that
    fail on a worker are retried ``retries`` times; with ``resources={"GPU": 1}`` each task asks its
    worker for one GPU, so two chunks never share one.

    The parts are keyed by the run (:func:`run_settings`, :func:`run_key`): parts of a run with other
    settings are refused (or, with ``overwrite=True``, discarded), never mixed in. ``<out>.lock``
    (:func:`output_lock`) keeps a second job off the same ``out``. The request is sized up front
    (:func:`check_request_size`, and the free disk space).

    Parameters
    ----------
    ds : xarray.Dataset
        Any canonical dataset on the model's grid.
    n, chunks : int
        Number of samples; samples per task and part file.
    constraints : sequence
        Constraint names or instances, in order.
    out : path
        The NetCDF file to write.
    model : Denoiser or checkpoint path
        A saved model.
    overwrite : bool
        Replace an existing ``out``, and discard the parts of a run with other settings.
    client : distributed.Client, optional
        Run the tasks on this cluster (default: one after the other in this process).
    retries : int
        Retries of a failed task.
    resources : dict, optional
        Worker resources each task asks for, e.g. ``{"GPU": 1}``.
    keep_parts : bool
        Keep the parts folder after the merge.
    sampler, steps, seed, batch_size, device, dtype
        As in :func:`xoceandiff.sampling.sample`.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        ``out`` exists, its parts come from another run, or another job holds its lock.
    xoceandiff.errors.InvalidDataError
        A request too large (tasks, memory, disk).

    Examples
    --------
    >>> import pathlib, tempfile, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "samples.nc"
    >>> generate_to_netcdf(ds, 2, out=out, model=xoceandiff.pretrained.bundled_checkpoint(), chunks=1,
    ...                    steps=2).name
    'samples.nc'
    >>> sorted(p.name for p in out.parent.iterdir())
    ['samples.nc']
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{str(out)!r} exists; pass overwrite=True (--overwrite) to replace it.")
    lazy, plan = _sample_lazy(ds, n, constraints, model=model, chunks=chunks, sampler=sampler, steps=steps,
                              seed=seed, batch_size=batch_size, device=device, dtype=dtype, level_means=level_means,
                              condition=condition, guidance=guidance, free_below=free_below)
    n, chunks = int(n), int(chunks)
    paths = part_paths(out, n, chunks)
    folder = paths[0].parent
    settings = run_settings(plan, n, chunks)
    manifest = {"key": run_key(settings), "settings": settings}
    done = sum(min(chunks, n - i * chunks) for i, p in enumerate(paths) if p.exists()) if folder.exists() else 0
    _check_disk(out, plan, n, n - done)
    with output_lock(out):
        if out.exists() and not overwrite:  # written by a job that finished while we were checking
            raise OutputExistsError(f"{str(out)!r} exists; pass overwrite=True (--overwrite) to replace it.")
        _check_previous_run(folder, out, manifest, overwrite)
        annotations: dict[str, Any] = {"retries": int(retries)}
        if resources:
            annotations["resources"] = dict(resources)
        tasks = []
        with dask.annotate(**annotations):
            for path, first in zip(paths, range(0, n, chunks), strict=True):
                if _reusable(path, manifest["key"]):
                    continue
                part = lazy.isel(sample=slice(first, first + chunks))
                tasks.append(dask.delayed(_write_part, pure=False)(part, str(path), manifest))
        try:
            if tasks:
                if client is not None:
                    futures = client.compute(tasks, retries=int(retries))
                    client.gather(futures)
                else:
                    dask.compute(*tasks, scheduler="threads", num_workers=1)
        except BaseException:
            if folder.exists() and not any(folder.glob("part_s*.ncpart")):
                shutil.rmtree(folder, ignore_errors=True)  # nothing to resume from: leave no empty folder
            raise
        _merge(paths, lazy.attrs, out, overwrite)
        if not keep_parts:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def _merge(paths: list[Path], attrs: dict[str, Any], out: Path, overwrite: bool) -> None:
    """Merge the part files into ``out`` (CF NetCDF, atomic), with the run's global attributes."""
    from .io import to_netcdf

    merged = xr.open_mfdataset([str(p) for p in paths], combine="nested", concat_dim="sample", engine="netcdf4",
                               data_vars="minimal", coords="minimal", compat="override", join="override")
    merged.attrs = dict(attrs)
    try:
        to_netcdf(merged, out, overwrite=overwrite)
    finally:
        merged.close()
