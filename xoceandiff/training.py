"""Training the denoiser: DDPM on normalised snapshots, on one machine or under torchrun.

The loop follows the reference (method.md): ``x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s) eps`` with ``s``
uniform in ``[0, 1000)``, MSE between the network's output and its target (the true noise by default, as
in the paper; the clean state or v with ``prediction_type=``), AdamW, cosine learning-rate decay and
gradient-norm clipping at 1.0. Snapshots stream from the lazy dataset one dask chunk at a time through a
torch DataLoader; a small buffer of chunks is shuffled, so memory stays bounded by a few chunks.

Data parallelism: under ``torchrun --nproc_per_node=N`` the same call trains with DDP (gloo on CPU,
nccl on GPU). Every rank draws the same global batch (same seeded generators) and computes its slice of
it; DDP averages the gradients, so N processes follow the single-process run with the same global batch.
Only rank 0 writes checkpoints.

Checkpoints (``checkpoint_dir``)::

    checkpoint_dir/
        model/            the model checkpoint (xoceandiff.load_model reads it)
        training_state/   optimiser, learning-rate schedule, step, random states (safetensors + JSON)

Resuming from ``checkpoint_dir`` continues the same run: same step count, optimiser and schedule state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
import xarray as xr
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from .conventions import FIELDS
from .errors import CheckpointError, InvalidDataError
from .layout import Layout, check_fingerprint, grid_fingerprint, to_tensor
from .model import DEFAULT_SCHEDULER_CONFIG, Denoiser, load_model, move_into_place
from .normalisation import Normaliser, normalise, statistics

__all__ = ["train", "prepare_model", "climatology", "check_finite", "SnapshotStream", "level_means", "attach_area_means"]

MODEL_SUBDIR = "model"
STATE_SUBDIR = "training_state"


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def _record_dim(ds: xr.Dataset) -> str:
    field = next(name for name in FIELDS if name in ds)
    spatial = {"z_c", "y_c", "x_c"}
    others = [d for d in ds[field].dims if d not in spatial]
    if len(others) != 1:
        raise InvalidDataError(
            f"{field}: expected one record dimension besides (z_c, y_c, x_c), found {others}. "
            "Open NEMO output with xoceandiff.open_nemo."
        )
    return others[0]


def check_finite(ds: xr.Dataset, *, drop: bool = False) -> xr.Dataset:
    """Refuse (or drop) snapshots with missing values on ocean cells.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset.
    drop : bool
        Drop the offending snapshots instead of raising.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        A field has NaN on ocean cells; the message names the field and how many cells.
    """
    dim = _record_dim(ds)
    counts = {}
    for name in FIELDS:
        if name not in ds:
            continue
        mask = ds.tmask if FIELDS[name].three_dimensional else ds.tmask.isel(z_c=0)
        bad = (ds[name].isnull() & mask).sum([d for d in ds[name].dims if d != dim])
        counts[name] = bad
    (computed,) = dask.compute(counts)
    bad_records = np.zeros(ds.sizes[dim], dtype=bool)
    messages = []
    for name, per_record in computed.items():
        values = np.asarray(per_record)
        if values.sum():
            bad_records |= values > 0
            messages.append(f"{name}: {int(values.sum())} ocean cells in {int((values > 0).sum())} snapshots")
    if not messages:
        return ds
    if drop:
        warnings.warn(f"Dropping {int(bad_records.sum())} snapshots with NaN on ocean cells ({'; '.join(messages)}).", stacklevel=2)
        return ds.isel({dim: np.flatnonzero(~bad_records)})
    raise InvalidDataError(
        f"Missing values on ocean cells of the training data: {'; '.join(messages)}. Fix the data, or pass "
        "drop_nan_snapshots=True (--drop-nan-snapshots) to train without those snapshots."
    )


class _ChunkDataset(torch.utils.data.Dataset):
    """Item ``i`` is the i-th dask chunk along the record dimension, normalised, as a (n, C, H, W) tensor."""

    def __init__(self, ds: xr.Dataset, layout: Layout, normaliser: Normaliser) -> None:
        super().__init__()
        self.ds = ds
        self.layout = layout
        self.normaliser = normaliser
        self.dim = _record_dim(ds)
        field = next(name for name in FIELDS if name in ds)
        chunks = ds[field].chunks
        sizes = chunks[ds[field].dims.index(self.dim)] if chunks is not None else (ds.sizes[self.dim],)
        self.bounds = np.cumsum((0,) + tuple(sizes))

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def size(self, chunk: int) -> int:
        return int(self.bounds[chunk + 1] - self.bounds[chunk])

    def __getitem__(self, chunk: int) -> torch.Tensor:
        start, stop = int(self.bounds[chunk]), int(self.bounds[chunk + 1])
        piece = normalise(self.ds.isel({self.dim: slice(start, stop)}), self.normaliser)
        return to_tensor(piece, self.layout, dim=self.dim)


class SnapshotStream:
    """Shuffled batches of normalised snapshots, streamed chunk by chunk from a lazy dataset.

    Each epoch visits the dask chunks in a seeded random order; ``buffer_chunks`` chunks at a time are
    loaded (through a torch DataLoader), shuffled together and served in batches. The order depends only
    on ``seed``, and a resumed run skips the batches already seen without loading them.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        layout: Layout,
        normaliser: Normaliser,
        batch_size: int,
        *,
        seed: int = 0,
        buffer_chunks: int = 4,
    ) -> None:
        self.batch_size = batch_size
        self.buffer_chunks = buffer_chunks
        self.seed = seed
        self.chunks = _ChunkDataset(ds, layout, normaliser)
        self.n_records = int(self.chunks.bounds[-1])

    def batches(self, start: int = 0) -> Iterator[torch.Tensor]:
        """Endless iterator of (batch_size, C, H, W) float32 tensors, from batch number ``start`` on."""
        served = 0
        epoch = 0
        while True:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.chunks))
            for first in range(0, len(order), self.buffer_chunks):
                group = [int(c) for c in order[first : first + self.buffer_chunks]]
                size = sum(self.chunks.size(c) for c in group)
                permutation = torch.from_numpy(rng.permutation(size))
                n_batches = max(1, size // self.batch_size)
                if served + n_batches <= start:  # already seen before a resume: skip without loading
                    served += n_batches
                    continue
                loader = torch.utils.data.DataLoader(self.chunks, batch_size=None, sampler=group, num_workers=0)
                data = torch.cat(list(loader))
                for b in range(n_batches):
                    if served >= start:
                        # Batches wrap around the buffer so that every batch has batch_size members.
                        yield data[permutation[(torch.arange(self.batch_size) + b * self.batch_size) % size]]
                    served += 1
            epoch += 1


# --------------------------------------------------------------------------------------------------
# Model preparation
# --------------------------------------------------------------------------------------------------


def prepare_model(
    ds: xr.Dataset,
    model: Denoiser | str | os.PathLike | None = "small",
    *,
    levels: str | Sequence[int] = "every-other",
    scheme: str = "3-std",
    stats: xr.Dataset | None = None,
    weighted: bool = False,
    stats_method: str = "pooled",
    background: bool = False,
    prediction_type: str = "epsilon",
) -> Denoiser:
    """A denoiser whose metadata holds the layout, normalisation and grid fingerprint of ``ds``.

    ``model`` may be a preset name (``"paper"``, ``"medium"``, ``"small"``, ``"tiny"``), a Denoiser (its network is
    kept, its metadata completed), or a checkpoint path.

    ``background=True`` (new presets only) makes the diffusion variable the anomaly about the training
    climatology, ``y = (x - clim) / s`` with ``clim`` the per-cell mean of the normalised training
    tensors and ``s`` the per-channel spread of the anomalies; samples are ``clim + s * y``. The paper
    diffuses the normalised state itself (the default, ``False``); with little training, errors of the
    model then scale with the spatial spread of each level, whereas with a background they scale with
    the much smaller temporal spread. Its x0 clipping range becomes 5 (anomalies have unit spread).

    ``prediction_type`` (new presets only) is what the network learns to output: ``"epsilon"`` (the noise,
    the paper's), ``"sample"`` (the clean state) or ``"v_prediction"``; the schedulers read it from the
    model's scheduler config. With little training, an x0-predicting network errs towards the average of
    the plausible states, which is smooth in depth and so statically stable, whereas an epsilon-predicting
    one leaves residual noise that flips weakly stratified interfaces.
    """
    if isinstance(model, str | os.PathLike) and Path(model).exists():
        model = load_model(model)
    if isinstance(model, Denoiser) and "layout" in model.metadata:
        return model
    if stats is None:
        stats = statistics(ds, weighted=weighted, method=stats_method)
    # The mean constraints drive area-weighted level means (method.md): their targets are the training
    # data's area-weighted means, whatever the weighting of the normalisation statistics.
    area_means = statistics(ds, weighted=True) if not weighted else stats
    stats, area_means = dask.compute(stats, area_means)
    normaliser = Normaliser.from_statistics(stats, scheme=scheme)
    layout = Layout.from_dataset(ds, levels=levels)
    if model is None or isinstance(model, str):
        _check_prediction_type(prediction_type)
        scheduler_config = {**DEFAULT_SCHEDULER_CONFIG, "prediction_type": prediction_type}
        if background:
            scheduler_config["clip_sample_range"] = 5.0
        model = Denoiser(layout.channels, layout.shape, preset=model or "small", background=background,
                         scheduler_config=scheduler_config)
        if background:
            model.set_background(*climatology(ds, layout, normaliser))
    elif tuple(model.sample_size) != tuple(layout.shape) or model.channels != layout.channels:
        raise InvalidDataError(
            f"model: expects {model.channels} channels of {tuple(model.sample_size)}, but the data's layout "
            f"gives {layout.channels} channels of {tuple(layout.shape)}. Build the model with "
            f"Denoiser({layout.channels}, {tuple(layout.shape)}, ...)."
        )
    model.metadata.update(
        {
            "layout": layout.to_dict(),
            "normalisation": normaliser.to_dict(),
            "variables": list(layout.fields),
            "grid": grid_fingerprint(ds),
            "area_weighted_means": level_means(area_means, layout.fields),
            "periodic_x": int(ds.attrs.get("Iperio", 0)),
            "dataset": {k: ds.attrs[k] for k in ("title", "source", "dino_resolution", "dino_seed") if k in ds.attrs},
        }
    )
    return model


def climatology(ds: xr.Dataset, layout: Layout, normaliser: Normaliser) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell mean (C, H, W) of the normalised training tensors and per-channel anomaly spread (C,).

    One streamed pass over the dask chunks (float64 sums); the spread is the RMS anomaly over the
    records and the ocean cells of each channel (floored at 1e-4 normalised units).
    """
    from .gridops import GridOps

    chunks = _ChunkDataset(ds, layout, normaliser)
    total = sum_sq = None
    count = 0
    for index in range(len(chunks)):
        x = chunks[index].double()
        total = x.sum(0) if total is None else total + x.sum(0)
        sum_sq = (x * x).sum(0) if sum_sq is None else sum_sq + (x * x).sum(0)
        count += len(x)
    mean = total / count
    variance = (sum_sq / count - mean * mean).clamp_min(0)
    mask = GridOps.from_dataset(ds, layout).mask.to(torch.float64)
    spread = ((variance * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp_min(1)).sqrt().clamp_min(1e-4)
    return mean.float(), spread.float()


def level_means(stats: xr.Dataset, fields: Sequence[str]) -> dict[str, list[float | None]]:
    """Per-field, per-level means of a statistics Dataset as JSON-ready lists (NaN -> None)."""
    out = {}
    for name in fields:
        values = np.atleast_1d(np.asarray(stats[f"{name}_mean"].values, dtype=np.float64))
        out[name] = [None if not np.isfinite(v) else float(v) for v in values]
    return out


def attach_area_means(model: Denoiser, ds: xr.Dataset) -> Denoiser:
    """Record the area-weighted level means of ``ds`` (the training data) in ``model.metadata``."""
    model.metadata["area_weighted_means"] = level_means(
        statistics(ds, weighted=True).compute(), model.metadata["layout"]["fields"]
    )
    return model


# --------------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size())


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# Checkpoints of the training state (no pickle: tensors in safetensors, the rest in JSON)
# --------------------------------------------------------------------------------------------------


def _save_state(folder: Path, optimiser, lr_schedule, step: int, generator: torch.Generator,
                record: Mapping[str, Any], weights_hash: str | None, ema=None) -> None:
    opt_state = optimiser.state_dict()
    tensors: dict[str, torch.Tensor] = {"generator": generator.get_state()}
    ema_scalars = None
    if ema is not None:
        ema_state = ema.state_dict()
        for i, param in enumerate(ema_state.pop("shadow_params")):
            tensors[f"ema.{i}"] = param.detach().cpu().contiguous()
        # The model checkpoint holds the averaged weights; training resumes from the raw ones.
        for name, value in ema.raw_weights.items():
            tensors[f"raw.{name}"] = value.detach().cpu().contiguous()
        ema_scalars = {k: v for k, v in ema_state.items() if isinstance(v, int | float | bool | None)}
    scalars: dict[str, Any] = {}
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimiser.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    meta = {
        "step": step,
        "param_groups": opt_state["param_groups"],
        "optimiser_scalars": scalars,
        "lr_schedule": lr_schedule.state_dict(),
        "record": dict(record),
        "model_sha256": weights_hash,
        "ema": ema_scalars,
    }
    # Written beside the target and swapped in whole: a kill leaves the previous state or the new one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        safetensors.torch.save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=float))
        move_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_state(folder: Path, optimiser, lr_schedule, generator: torch.Generator, weights_hash: str | None,
                ema=None) -> dict:
    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = safetensors.torch.load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"Cannot read the training state in {str(folder)!r}: {err}. Delete it to start afresh.") from err
    if meta.get("model_sha256") != weights_hash:
        raise CheckpointError(
            f"The training state in {str(folder)!r} belongs to other weights (model sha256 "
            f"{meta.get('model_sha256')} expected, {weights_hash} found): the run was killed between the two "
            "writes. Delete the checkpoint directory to start afresh."
        )
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimiser_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimiser.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    lr_schedule.load_state_dict(meta["lr_schedule"])
    generator.set_state(tensors["generator"])
    if ema is not None and meta.get("ema") is not None:
        shadow = [tensors[f"ema.{i}"] for i in range(sum(k.startswith("ema.") for k in tensors))]
        ema.load_state_dict({**meta["ema"], "shadow_params": shadow})
        meta["raw_weights"] = {k[4:]: v for k, v in tensors.items() if k.startswith("raw.")}
    return meta


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def train(
    ds: xr.Dataset,
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
    progress: bool = True,
    record: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
    background: bool = False,
    prediction_type: str = "epsilon",
) -> Denoiser:
    """Train a denoiser on the snapshots of ``ds`` (DDPM, epsilon prediction).

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with a record dimension (``t``).
    model : Denoiser, preset name or checkpoint path
        What to train (default: a new ``small`` preset sized for ``ds``'s layout).
    steps : int
        Total optimiser steps (when resuming, the run continues up to this step).
    batch_size : int
        Global batch size (divided among torchrun processes).
    lr : float
        Peak learning rate of AdamW (cosine decay to 0 after a linear warm-up).
    seed : int
        Seeds data order, noise and timesteps.
    checkpoint_dir : path, optional
        Where to write ``model/`` and ``training_state/``; an existing state there is resumed.
    checkpoint_every : int, optional
        Also checkpoint every this many steps (default: only at the end).
    device : str or torch.device, optional
        Default: the CUDA device of this process if there is one, else the CPU.
    levels, scheme : see :class:`xoceandiff.layout.Layout` and :class:`xoceandiff.normalisation.Normaliser`.
    warmup_steps : int, optional
        Linear warm-up (default: 2% of the steps).
    ema_decay : float, optional
        Keep an exponential moving average of the weights with this decay; the returned (and saved)
        weights are the averaged ones.
    mixed_precision : bool, optional
        bf16 autocast; default on for CUDA, off on CPU.
    drop_nan_snapshots : bool
        Drop snapshots with NaN on ocean cells instead of refusing them.
    progress : bool
        Show a tqdm bar with the loss.
    record : mapping, optional
        Extra facts stored in the checkpoint's training record (the CLI stores its command line).
    stop_after : int, optional
        Do at most this many steps in this call, checkpoint, and return (for jobs under a wall-time
        limit: the next call with the same arguments continues the run).
    background : bool
        Diffuse anomalies about the training climatology (new models only; see :func:`prepare_model`).
    prediction_type : {"epsilon", "sample", "v_prediction"}
        What a new network learns to output (see :func:`prepare_model`); a model that already exists
        keeps its own.

    Returns
    -------
    Denoiser
        The trained model, in eval mode; ``metadata["training"]`` holds steps, seed and losses, and
        ``checkpoint_path`` the model checkpoint written (when ``checkpoint_dir`` is given).

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=8, resolution=4.0)
    >>> model = xoceandiff.training.train(ds, "tiny", steps=2, batch_size=2, progress=False)
    >>> model.metadata["training"]["steps"]
    2
    """
    if steps <= 0 or int(steps) != steps:
        raise InvalidDataError(f"steps: expected a positive integer, found {steps!r}.")
    if batch_size <= 0:
        raise InvalidDataError(f"batch_size: expected a positive integer, found {batch_size!r}.")
    device = _default_device(device)
    rank = _init_distributed(device)
    if batch_size % rank.world:
        raise InvalidDataError(
            f"batch_size: the global batch ({batch_size}) must divide among the {rank.world} processes."
        )
    ds = check_finite(ds, drop=drop_nan_snapshots)
    # The seed fixes the initial weights too (a new model is built below), and any module-internal
    # randomness; every rank starts from the same weights.
    torch.manual_seed(seed)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resume = checkpoint_dir is not None and (checkpoint_dir / STATE_SUBDIR / "state.json").exists()
    if resume:
        model = load_model(checkpoint_dir / MODEL_SUBDIR)
    model = prepare_model(ds, model, levels=levels, scheme=scheme, background=background,
                          prediction_type=prediction_type)
    check_fingerprint(model.metadata["grid"], ds)
    layout = Layout.from_dict(model.metadata["layout"])
    normaliser = Normaliser.from_dict(model.metadata["normalisation"])

    model.to(device).train()
    net: torch.nn.Module = model
    if rank.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    scheduler = model.make_scheduler()
    n_train = scheduler.config.num_train_timesteps
    alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    prediction_type = scheduler.config.prediction_type
    record = {"objective": f"DDPM, MSE on the {prediction_type} target", **dict(record or {})}
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = warmup_steps if warmup_steps is not None else max(1, steps // 50)
    lr_schedule = get_cosine_schedule_with_warmup(optimiser, num_warmup_steps=warmup, num_training_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    ema = None
    if ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.parameters(), decay=ema_decay)

    start_step, losses = 0, []
    if resume:
        meta = _load_state(checkpoint_dir / STATE_SUBDIR, optimiser, lr_schedule, generator, model.checkpoint_hash, ema)
        start_step = meta["step"]
        if meta.get("raw_weights"):
            model.load_state_dict(meta["raw_weights"])
        losses = list(meta["record"].get("loss_history", []))

    stream = SnapshotStream(ds, layout, normaliser, batch_size, seed=seed, buffer_chunks=buffer_chunks)
    batches = stream.batches(start_step)
    use_amp = mixed_precision if mixed_precision is not None else device.type == "cuda"
    per_rank = batch_size // rank.world
    bar = tqdm(total=steps, initial=start_step, desc="train", disable=not (progress and rank.main), unit="step")
    loss_value = float("nan")
    recent: list[float] = []
    end = steps if stop_after is None else min(steps, start_step + int(stop_after))
    for step in range(start_step, end):
        x0 = model.to_model_space(next(batches).to(device))
        # Draw the global batch's noise and timesteps on every rank, then keep this rank's slice: N
        # processes then see exactly what one process with the same global batch would.
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, n_train, (batch_size,), generator=generator)
        part = slice(rank.rank * per_rank, (rank.rank + 1) * per_rank)
        x0, noise, timesteps = x0[part].to(device), noise[part].to(device), timesteps[part].to(device)
        abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            predicted = net(noisy, timesteps)
        loss = torch.nn.functional.mse_loss(predicted.float(), _target(prediction_type, x0, noise, abar))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        lr_schedule.step()
        if ema is not None:
            ema.step(model.parameters())
        loss_value = loss.detach()
        if rank.world > 1:
            dist.all_reduce(loss_value, op=dist.ReduceOp.AVG if device.type == "cuda" else dist.ReduceOp.SUM)
            if device.type != "cuda":
                loss_value = loss_value / rank.world
        loss_value = float(loss_value)
        recent.append(loss_value)
        if (step + 1) % 10 == 0 or step + 1 == steps:
            losses.append([step + 1, float(np.mean(recent))])
            recent = []
        bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
        bar.update(1)
        done = step + 1
        if checkpoint_dir is not None and (done == end or (checkpoint_every and done % checkpoint_every == 0)):
            _checkpoint(model, ema, checkpoint_dir, optimiser, lr_schedule, done, generator,
                        _record(steps, batch_size, lr, seed, done, losses, record, rank), rank)
    bar.close()
    if ema is not None:
        ema.copy_to(model.parameters())
    model.metadata["training"] = _record(steps, batch_size, lr, seed, end, losses, record, rank)
    model.metadata["training"]["final_loss"] = losses[-1][1] if losses else loss_value
    if checkpoint_dir is not None:
        model.checkpoint_path = (checkpoint_dir / MODEL_SUBDIR).resolve()
    return model.eval()


PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise InvalidDataError(
            f"prediction_type: expected 'epsilon', 'sample' or 'v_prediction', found {prediction_type!r}; "
            "pass one of these to train() / prepare_model() (or in the model's scheduler_config)."
        )


def _target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """What the network learns to output: the noise, the clean state, or v (diffusers' conventions)."""
    _check_prediction_type(prediction_type)
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    return noise


def _record(steps, batch_size, lr, seed, done, losses, extra, rank) -> dict[str, Any]:
    out = {
        "steps": int(steps),
        "steps_done": int(done),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "processes": int(rank.world),
        "loss_history": [[int(s), float(v)] for s, v in losses],
        "final_loss": float(losses[-1][1]) if losses else None,
    }
    out.update(dict(extra or {}))
    return out


def _checkpoint(model, ema, checkpoint_dir, optimiser, lr_schedule, done, generator, record, rank):
    if not rank.main:
        return
    model.metadata["training"] = record
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if ema is not None:
        # Save the averaged weights, then put the raw ones back for further training.
        ema.raw_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    model.save(checkpoint_dir / MODEL_SUBDIR, overwrite=True)
    if ema is not None:
        ema.restore(model.parameters())
    _save_state(checkpoint_dir / STATE_SUBDIR, optimiser, lr_schedule, done, generator, record, model.checkpoint_hash, ema)
