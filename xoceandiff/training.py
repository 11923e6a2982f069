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
The disk formats live in :mod:`xoceandiff.checkpoint`.

The code is three parts: :func:`set_up` (data, model, optimiser, schedule, resume), :func:`training_step`
(one optimiser step, noising through diffusers' ``add_noise`` and ``get_velocity``) and the short loop of
:func:`train`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
import torch.distributed as dist
import xarray as xr
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .atomic import replace_path
from .canonical import field_dims, fields_of, ocean_mask, record_dim
from .card import ModelCard
from .checkpoint import (
    STATE_JSON,
    TrainingState,
    read_model_config,
    read_training_state,
    write_training_state,
)
from .conditions import encode_conditions, record_conditions
from .errors import CheckpointError, InvalidDataError
from .layout import Layout, to_tensor
from .model import DEFAULT_SCHEDULER_CONFIG, Denoiser, load_model, vertical_differences
from .normalisation import Normaliser, normalise
from .objective import StabilityTerm, check_stability_weight

__all__ = ["train", "prepare_model", "climatology", "check_finite", "SnapshotStream", "TrainingOptions", "TrainingRun",
           "set_up", "training_step", "PREDICTION_TYPES"]

MODEL_SUBDIR = "model"
NEXT_MODEL_SUBDIR = "model.next"  # the newer model while a checkpoint pair is being written
STATE_SUBDIR = "training_state"
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def check_finite(ds: xr.Dataset, *, drop: bool = False) -> xr.Dataset:
    """Refuse (or drop) snapshots with NaN or infinite values on ocean cells.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset.
    drop : bool
        Drop the offending snapshots instead of raising.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        A field has NaN or inf on ocean cells; the message names the field, the levels and how many cells.
    """
    dim = record_dim(ds)
    counts = {}
    for name in fields_of(ds):
        # NaN and +-inf alike: one infinite value makes its level's statistics, then every weight, non-finite
        field = ds[name].reset_coords(drop=True)
        bad = (~np.isfinite(field) & ocean_mask(ds, name)).transpose(dim, *field_dims(name))
        counts[name] = (bad.sum(field_dims(name)), bad.sum((dim, *field_dims(name)[1:])) if name != "ssh" else None)
    (computed,) = dask.compute(counts)
    bad_records = np.zeros(ds.sizes[dim], dtype=bool)
    messages = []
    for name, (per_record, per_level) in computed.items():
        values = np.asarray(per_record)
        if values.sum():
            bad_records |= values > 0
            levels = "" if per_level is None else f" (levels {np.flatnonzero(np.asarray(per_level)).tolist()})"
            messages.append(f"{name}: {int(values.sum())} ocean cells{levels} in {int((values > 0).sum())} snapshots")
    if not messages:
        return ds
    if drop:
        warnings.warn(f"Dropping {int(bad_records.sum())} snapshots with NaN or infinite values on ocean cells "
                      f"({'; '.join(messages)}).", stacklevel=2)
        return ds.isel({dim: np.flatnonzero(~bad_records)})
    raise InvalidDataError(
        f"NaN or infinite values on ocean cells of the training data: {'; '.join(messages)}. Fix the data, or pass "
        "drop_nan_snapshots=True (--drop-nan-snapshots) to train without those snapshots."
    )


class _ChunkDataset(torch.utils.data.Dataset):
    """Item ``i`` is the i-th dask chunk along the record dimension, normalised, as a (n, C, H, W) tensor."""

    def __init__(self, ds: xr.Dataset, layout: Layout, normaliser: Normaliser) -> None:
        super().__init__()
        self.ds = ds
        self.layout = layout
        self.normaliser = normaliser
        self.dim = record_dim(ds)
        field = fields_of(ds)[0]
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
        conditions: np.ndarray | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.buffer_chunks = buffer_chunks
        self.seed = seed
        self.chunks = _ChunkDataset(ds, layout, normaliser)
        self.n_records = int(self.chunks.bounds[-1])
        # encoded conditions per record (see xoceandiff.conditions): batches are then (states, conditions)
        self.conditions = None if conditions is None else torch.as_tensor(conditions, dtype=torch.float32)

    def batches(self, start: int = 0) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """Endless iterator of (batch_size, C, H, W) float32 tensors, from batch number ``start`` on.

        With conditions, each batch is a pair: the states and their encoded conditions ``(batch_size, k)``.
        """
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
                if self.conditions is not None:
                    records = torch.cat([torch.arange(int(self.chunks.bounds[c]), int(self.chunks.bounds[c + 1]))
                                         for c in group])
                for b in range(n_batches):
                    if served >= start:
                        # Batches wrap around the buffer so that every batch has batch_size members.
                        chosen = permutation[(torch.arange(self.batch_size) + b * self.batch_size) % size]
                        if self.conditions is None:
                            yield data[chosen]
                        else:
                            yield data[chosen], self.conditions[records[chosen]]
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
    conditions: Sequence[str] = (),
    vertical: bool = False,
) -> Denoiser:
    """A denoiser carrying the :class:`~xoceandiff.card.ModelCard` of ``ds`` (layout, normaliser, grid).

    ``model`` may be a preset name (``"paper"``, ``"medium"``, ``"small"``, ``"tiny"``), a Denoiser (its network is
    kept; it gets a card if it has none), or a checkpoint path. A model that already has a card is returned as is.

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

    ``conditions`` (new presets only; :data:`xoceandiff.conditions.CONDITION_NAMES`) are read from the records'
    time coordinate; the network then takes them as its class embedding (see :mod:`xoceandiff.conditions`).

    ``vertical=True`` (new presets with a background only) diffuses, for ``toce`` and ``soce``, each column's
    deepest level's anomaly and each upper level's difference from the one below, in physical units, each scaled by the
    data's spread of that difference (:meth:`Denoiser.to_model_space`). Where NEMO's convection keeps columns
    mixed, the levels' anomalies are nearly equal and their differences' spread is tens of times smaller than
    the levels' own: the network's errors then stay that much smaller in the vertical structure, where they
    make statically unstable interfaces.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=4, resolution=4.0)
    >>> model = prepare_model(ds, "tiny")
    >>> model.card.layout.channels, model.channels, model.card.grid_shape
    (37, 37, (36, 51, 17))
    """
    if isinstance(model, str | os.PathLike) and Path(model).exists():
        model = load_model(model)
    if isinstance(model, Denoiser) and model.card is not None:
        return model
    card = ModelCard.from_dataset(ds, levels=levels, scheme=scheme, stats=stats, weighted=weighted,
                                  stats_method=stats_method)
    layout = card.layout
    if model is None or isinstance(model, str):
        _check_prediction_type(prediction_type)
        scheduler_config = {**DEFAULT_SCHEDULER_CONFIG, "prediction_type": prediction_type}
        if background:
            scheduler_config["clip_sample_range"] = 5.0
        specs = record_conditions(ds, conditions)[0] if conditions else ()
        segments = vertical_segments(layout) if vertical else None
        model = Denoiser(layout.channels, layout.shape, preset=model or "small", background=background,
                         scheduler_config=scheduler_config, conditions=[spec.to_dict() for spec in specs],
                         vertical=segments)
        if background:
            model.set_background(*climatology(ds, layout, card.normaliser, vertical=segments))
    elif conditions or vertical:
        raise InvalidDataError("conditions, vertical: only a new model (a preset name) can be built with them.")
    elif tuple(model.sample_size) != tuple(layout.shape) or model.channels != layout.channels:
        raise InvalidDataError(
            f"model: expects {model.channels} channels of {tuple(model.sample_size)}, but the data's layout "
            f"gives {layout.channels} channels of {tuple(layout.shape)}. Build the model with "
            f"Denoiser({layout.channels}, {tuple(layout.shape)}, ...)."
        )
    model.card = card
    return model


def vertical_segments(layout: Layout) -> list[list[int]]:
    """The channel ranges ``[start, stop)`` of the 3-D fields of ``layout``, top level first.

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.layout import Layout
    >>> layout = Layout.from_dataset(xoceandiff.datasets.dino(n=1, resolution=4.0))
    >>> vertical_segments(layout)
    [[0, 18], [18, 36]]
    """
    return [[part.start, part.stop] for name, part in layout.channel_slices.items() if layout.three_dimensional(name)]


def climatology(ds: xr.Dataset, layout: Layout, normaliser: Normaliser,
                vertical: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, ...]:
    """Per-cell mean (C, H, W) of the normalised training tensors and per-channel anomaly spread (C,).

    One streamed pass over the dask chunks (float64 sums); the spread is the RMS anomaly over the
    records and the ocean cells of each channel (floored at 1e-4 normalised units). With ``vertical``
    segments (see :func:`vertical_segments`) the spread is that of the anomalies' vertical differences in
    physical units instead (the differences are linear, so the same pass sums them), floored at 1e-4 of the
    largest of their field, and the physical size of one normalised unit (C,) and the ocean mask (C, H, W)
    follow: the arguments of :meth:`Denoiser.set_background` for a model in vertical differences.
    """
    from .gridops import GridOps

    mask = GridOps.from_dataset(ds, layout).mask.to(torch.float64)
    unit = torch.ones(layout.channels, dtype=torch.float64)
    for name, part in layout.channel_slices.items():
        unit[part] = torch.as_tensor(np.asarray(normaliser.scale[name], dtype=np.float64)[
            list(layout.levels) if layout.three_dimensional(name) else [0]])
    unit = unit[:, None, None]

    def spread_variable(x: torch.Tensor) -> torch.Tensor:
        return x if not vertical else vertical_differences(x * unit * mask, vertical) * mask

    chunks = _ChunkDataset(ds, layout, normaliser)
    total = sum_sq = spread_total = None
    count = 0
    for index in range(len(chunks)):
        x = chunks[index].double()
        z = spread_variable(x)
        total = x.sum(0) if total is None else total + x.sum(0)
        spread_total = z.sum(0) if spread_total is None else spread_total + z.sum(0)
        sum_sq = (z * z).sum(0) if sum_sq is None else sum_sq + (z * z).sum(0)
        count += len(x)
    mean = total / count
    variance = (sum_sq / count - (spread_total / count) ** 2).clamp_min(0)
    spread = ((variance * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp_min(1)).sqrt()
    if not vertical:
        return mean.float(), spread.clamp_min(1e-4).float()
    for start, stop in vertical:  # a level whose difference never varies gets a tiny, not a zero, scale
        spread[start:stop] = spread[start:stop].clamp_min(1e-4 * float(spread[start:stop].max()) or 1e-12)
    spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    return mean.float(), spread.float(), unit.float().flatten(), mask.float()


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise InvalidDataError(
            f"prediction_type: expected 'epsilon', 'sample' or 'v_prediction', found {prediction_type!r}; "
            "pass one of these to train() / prepare_model() (or in the model's scheduler_config)."
        )


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
# Set-up, one step, the loop
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOptions:
    """The validated settings of a training run (see :func:`train` for each)."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int | None = None
    warmup_steps: int | None = None
    ema_decay: float | None = None
    mixed_precision: bool | None = None
    drop_nan_snapshots: bool = False
    buffer_chunks: int = 4
    progress: bool = True
    record: Mapping[str, Any] = field(default_factory=dict)
    stop_after: int | None = None
    condition_dropout: float = 0.1
    stability_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.condition_dropout, int | float) and 0 <= self.condition_dropout < 1):
            raise InvalidDataError(f"condition_dropout: expected a probability in [0, 1), found {self.condition_dropout!r}.")
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps <= 0:
            raise InvalidDataError(f"steps: expected a positive integer, found {self.steps!r}.")
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size <= 0:
            raise InvalidDataError(f"batch_size: expected a positive integer, found {self.batch_size!r}.")
        if not (isinstance(self.lr, int | float) and np.isfinite(self.lr) and self.lr > 0):
            raise InvalidDataError(f"lr: expected a positive learning rate (e.g. 1e-4), found {self.lr!r}.")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise InvalidDataError(f"seed: expected a non-negative integer, found {self.seed!r}.")
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))

    @property
    def warmup(self) -> int:
        """Linear warm-up steps (default: 2 % of the steps)."""
        return self.warmup_steps if self.warmup_steps is not None else max(1, self.steps // 50)

    @property
    def resumes(self) -> bool:
        """Whether ``checkpoint_dir`` holds a training state to continue."""
        return self.checkpoint_dir is not None and (self.checkpoint_dir / STATE_SUBDIR / "state.json").exists()


@dataclass
class TrainingRun:
    """Everything one training run holds between steps (built by :func:`set_up`)."""

    model: Denoiser
    net: torch.nn.Module
    scheduler: DDPMScheduler
    optimiser: torch.optim.Optimizer
    lr_schedule: Any
    generator: torch.Generator
    ema: EMAModel | None
    batches: Iterator[torch.Tensor]
    device: torch.device
    rank: _Dist
    use_amp: bool
    options: TrainingOptions
    start_step: int = 0
    losses: list[list[float]] = field(default_factory=list)
    stability: StabilityTerm | None = None


def set_up(
    ds: xr.Dataset,
    model: Denoiser | str | os.PathLike | None,
    options: TrainingOptions,
    *,
    device: str | torch.device | None = None,
    levels: str | Sequence[int] = "every-other",
    scheme: str = "3-std",
    background: bool = False,
    prediction_type: str = "epsilon",
    conditions: Sequence[str] = (),
    vertical: bool = False,
) -> TrainingRun:
    """Data, model, optimiser, schedules and random state of a run, resumed from ``checkpoint_dir`` if there."""
    device = _default_device(device)
    rank = _init_distributed(device)
    if options.batch_size % rank.world:
        raise InvalidDataError(
            f"batch_size: the global batch ({options.batch_size}) must divide among the {rank.world} processes."
        )
    ds = check_finite(ds, drop=options.drop_nan_snapshots)
    # The seed fixes the initial weights too (a new model is built below), and any module-internal
    # randomness; every rank starts from the same weights.
    torch.manual_seed(options.seed)
    if options.checkpoint_dir is not None and rank.main:
        settle_checkpoint_pair(options.checkpoint_dir)
    if options.resumes:
        model = load_model(options.checkpoint_dir / MODEL_SUBDIR)
    model = prepare_model(ds, model, levels=levels, scheme=scheme, background=background,
                          prediction_type=prediction_type, conditions=() if options.resumes else conditions,
                          vertical=vertical and not options.resumes)
    model.card.check_grid(ds)
    weight = check_stability_weight(options.stability_weight, model.scheduler_config["prediction_type"],
                                    model.card.fields)
    encoded = None
    if model.conditions:
        values = record_conditions(ds, [spec.name for spec in model.conditions])[1]
        encoded = encode_conditions(model.conditions, values, ds.sizes[record_dim(ds)])
    if options.checkpoint_dir is not None and rank.main:
        _check_writable(options.checkpoint_dir, model)
    model.to(device).train()
    net: torch.nn.Module = model
    if rank.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr)
    run = TrainingRun(
        model=model, net=net, scheduler=model.make_scheduler(), optimiser=optimiser,
        lr_schedule=get_cosine_schedule_with_warmup(optimiser, num_warmup_steps=options.warmup,
                                                    num_training_steps=options.steps),
        generator=torch.Generator().manual_seed(options.seed),
        ema=EMAModel(model.parameters(), decay=options.ema_decay) if options.ema_decay is not None else None,
        batches=iter(()), device=device, rank=rank,
        use_amp=options.mixed_precision if options.mixed_precision is not None else device.type == "cuda",
        options=options,
        stability=StabilityTerm(ds, model, device=device) if weight else None,
    )
    if options.resumes:
        _resume(run)
    stream = SnapshotStream(ds, model.card.layout, model.card.normaliser, options.batch_size, seed=options.seed,
                            buffer_chunks=options.buffer_chunks, conditions=encoded)
    run.batches = stream.batches(run.start_step)
    return run


def _resume(run: TrainingRun) -> None:
    state = read_training_state(run.options.checkpoint_dir / STATE_SUBDIR, run.model.checkpoint_hash)
    if state.step > run.options.steps:
        raise InvalidDataError(
            f"steps: {str(run.options.checkpoint_dir)!r} holds a run already at step {state.step}, beyond "
            f"steps={run.options.steps}; pass steps >= {state.step} to continue it, or another checkpoint_dir."
        )
    run.optimiser.load_state_dict(state.optimiser)
    run.lr_schedule.load_state_dict(state.lr_schedule)
    run.generator.set_state(state.generator)
    if run.ema is not None and state.ema is not None:
        run.ema.load_state_dict(state.ema)
    if state.raw_weights:  # the model file holds the averaged weights; training goes on from the raw ones
        run.model.load_state_dict(state.raw_weights)
    run.start_step = state.step
    run.losses = list(state.record.get("loss_history", []))


def training_step(run: TrainingRun, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> float:
    """One optimiser step on a global batch of normalised states; returns the loss averaged over ranks.

    Every rank draws the global batch's noise and timesteps from the same generator, then keeps its slice:
    N processes see exactly what one process with the same global batch would.
    """
    model, scheduler, device = run.model, run.scheduler, run.device
    condition = None
    if isinstance(batch, tuple):
        batch, condition = batch
        # classifier-free guidance: each condition is dropped (features and presence flag zeroed) at random
        keep = (torch.rand(len(batch), len(model.conditions), generator=run.generator)
                >= run.options.condition_dropout).float()
        widths = torch.tensor([spec.width for spec in model.conditions])
        condition = condition * torch.repeat_interleave(keep, widths, dim=1)
    x0 = model.to_model_space(batch.to(device))
    noise = torch.randn(x0.shape, generator=run.generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=run.generator)
    per_rank = len(batch) // run.rank.world
    part = slice(run.rank.rank * per_rank, (run.rank.rank + 1) * per_rank)
    x0, noise, timesteps = x0[part], noise[part].to(device), timesteps[part].to(device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=run.use_amp):
        if condition is None:
            predicted = run.net(noisy, timesteps)
        else:
            predicted = run.net(noisy, timesteps, condition=condition[part].to(device))
    loss = torch.nn.functional.mse_loss(predicted.float(), _target(scheduler, x0, noise, timesteps))
    if run.stability is not None:
        loss = loss + run.options.stability_weight * run.stability(_clean_estimate(scheduler, predicted.float(),
                                                                                   noisy, timesteps))
    run.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    run.optimiser.step()
    run.lr_schedule.step()
    if run.ema is not None:
        run.ema.step(model.parameters())
    value = loss.detach()
    if run.rank.world > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / run.rank.world
    return float(value)


def _target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the network learns to output: the noise, the clean state, or v (diffusers' ``get_velocity``)."""
    prediction_type = scheduler.config.prediction_type
    _check_prediction_type(prediction_type)
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    return noise


def _clean_estimate(scheduler: DDPMScheduler, predicted: torch.Tensor, noisy: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """The network's estimate of the clean state from its output (``sample`` or ``v_prediction`` targets)."""
    if scheduler.config.prediction_type == "sample":
        return predicted
    alpha_bar = scheduler.alphas_cumprod.to(noisy.device)[timesteps].reshape(-1, 1, 1, 1)
    return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * predicted


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
    conditions: Sequence[str] = (),
    condition_dropout: float = 0.1,
    parameters: Mapping[str, Any] | None = None,
    stability_weight: float = 0.0,
    vertical: bool = False,
) -> Denoiser:
    """Train a denoiser on the snapshots of ``ds`` (DDPM; epsilon prediction unless told otherwise).

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
    buffer_chunks : int
        Dask chunks loaded and shuffled together.
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
    conditions : sequence of str
        Train a conditional model (new models only): ``"day_of_year"`` and/or ``"run_time"``, read from the
        records' time coordinate (see :mod:`xoceandiff.conditions`).
    condition_dropout : float
        Probability of dropping each condition of a training sample (classifier-free guidance).
    parameters : mapping of str to array-like, optional
        Scalar parameters of the runs as conditions: per name, one value per record (``np.repeat`` per-file
        values by the records per file); added to ``conditions``.
    vertical : bool
        Diffuse the vertical differences of the anomalies of toce and soce (new models with a background only;
        see :func:`prepare_model`).
    stability_weight : float
        Weight of the static-stability term added to the MSE (:class:`xoceandiff.objective.StabilityTerm`:
        the squared density inversions of the network's estimate of the clean state); 0, the default, trains on
        the MSE alone. Needs ``prediction_type`` ``"sample"`` or ``"v_prediction"`` and both toce and soce.

    Returns
    -------
    Denoiser
        The trained model, in eval mode; ``model.card.training`` holds steps, seed and losses, and
        ``checkpoint_path`` the model checkpoint written (when ``checkpoint_dir`` is given).

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=8, resolution=4.0)
    >>> model = xoceandiff.training.train(ds, "tiny", steps=2, batch_size=2, progress=False)
    >>> model.card.training["steps"], model.card.training["steps_done"]
    (2, 2)
    """
    if parameters:
        dim = record_dim(ds)
        for name, values in parameters.items():
            column = np.asarray(values, dtype=np.float64)
            if column.shape != (ds.sizes[dim],):
                raise InvalidDataError(f"parameters[{name!r}]: expected one value per record ({ds.sizes[dim]}), "
                                       f"found shape {column.shape}.")
            ds = ds.assign_coords({f"condition_{name}": (dim, column)})
        conditions = list(conditions) + [name for name in parameters if name not in conditions]
    options = TrainingOptions(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, warmup_steps=warmup_steps, ema_decay=ema_decay,
        mixed_precision=mixed_precision, drop_nan_snapshots=drop_nan_snapshots, buffer_chunks=buffer_chunks,
        progress=progress, record=dict(record or {}), stop_after=stop_after, condition_dropout=condition_dropout,
        stability_weight=stability_weight,
    )
    run = set_up(ds, model, options, device=device, levels=levels, scheme=scheme, background=background,
                 prediction_type=prediction_type, conditions=conditions, vertical=vertical)
    end = options.steps if stop_after is None else min(options.steps, run.start_step + int(stop_after))
    bar = tqdm(total=options.steps, initial=run.start_step, desc="train", unit="step",
               disable=not (options.progress and run.rank.main))
    recent: list[float] = []
    for step in range(run.start_step, end):
        recent.append(training_step(run, next(run.batches)))
        if (step + 1) % 10 == 0 or step + 1 == options.steps:
            run.losses.append([step + 1, float(np.mean(recent))])
            recent = []
        bar.set_postfix(loss=f"{recent[-1] if recent else run.losses[-1][1]:.4f}", refresh=False)
        bar.update(1)
        if options.checkpoint_dir is not None and (
            step + 1 == end or (options.checkpoint_every and (step + 1) % options.checkpoint_every == 0)
        ):
            _checkpoint(run, step + 1)
    bar.close()
    if run.ema is not None:
        run.ema.copy_to(run.model.parameters())
    run.model.card = run.model.card.with_training(_record(run, end, last_loss=recent[-1] if recent else None))
    if options.checkpoint_dir is not None:
        run.model.checkpoint_path = (options.checkpoint_dir / MODEL_SUBDIR).resolve()
    return run.model.eval()


def _record(run: TrainingRun, done: int, last_loss: float | None = None) -> dict[str, Any]:
    options = run.options
    out = {
        "steps": int(options.steps),
        "steps_done": int(done),
        "batch_size": int(options.batch_size),
        "lr": float(options.lr),
        "seed": int(options.seed),
        "processes": int(run.rank.world),
        "loss_history": [[int(s), float(v)] for s, v in run.losses],
        "final_loss": float(run.losses[-1][1]) if run.losses else last_loss,
        "objective": f"DDPM, MSE on the {run.scheduler.config.prediction_type} target"
                     + (f" + {options.stability_weight:g} x static-stability term" if run.stability is not None else ""),
        "stability_weight": float(options.stability_weight),
    }
    out.update(dict(options.record))
    return out


def _checkpoint(run: TrainingRun, done: int) -> None:
    """Write the model (averaged weights with EMA) and the training state; rank 0 only."""
    if not run.rank.main:
        return
    model, ema = run.model, run.ema
    model.card = model.card.with_training(_record(run, done))
    run.options.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    raw = None
    if ema is not None:
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    folder = run.options.checkpoint_dir
    # The pair is written so that a crash leaves the previous pair or the new one: the new model goes
    # beside the old one, then the state that names it, then the model takes the old one's place.
    # settle_checkpoint_pair finishes (or discards) an interrupted write when the run resumes.
    model.save(folder / NEXT_MODEL_SUBDIR, overwrite=True)
    if ema is not None:
        ema.restore(model.parameters())
    state = TrainingState(
        step=done, optimiser=run.optimiser.state_dict(), lr_schedule=run.lr_schedule.state_dict(),
        generator=run.generator.get_state(), record=dict(model.card.training), model_sha256=model.checkpoint_hash,
        ema=ema.state_dict() if ema is not None else None, raw_weights=raw,
    )
    write_training_state(folder / STATE_SUBDIR, state)
    replace_path(folder / NEXT_MODEL_SUBDIR, folder / MODEL_SUBDIR)
    model.checkpoint_path = (folder / MODEL_SUBDIR).resolve()


def settle_checkpoint_pair(folder: Path) -> None:
    """Finish or discard a checkpoint write that a crash interrupted, so that model and state match.

    A ``model.next`` that the training state names is the newer half of a complete pair: it replaces
    ``model``. Any other ``model.next`` is a write that never got its state: it is removed.
    """
    pending = folder / NEXT_MODEL_SUBDIR
    if not pending.exists():
        return
    state_file = folder / STATE_SUBDIR / STATE_JSON
    try:
        named = json.loads(state_file.read_text()).get("model_sha256")
        pending_hash = read_model_config(pending).get("checkpoint_sha256")
    except (OSError, ValueError, CheckpointError):
        named = pending_hash = None
    if named is not None and named == pending_hash:
        replace_path(pending, folder / MODEL_SUBDIR)
    else:
        shutil.rmtree(pending, ignore_errors=True)


def _check_writable(folder: Path, model: Denoiser) -> None:
    """Refuse, before any step, a checkpoint folder that cannot be written or lacks the room for a pair."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise InvalidDataError(
            f"checkpoint_dir: cannot write in {str(folder)!r} ({error.strerror or error}); choose a folder you "
            "can write to (the check runs before training, so no step is lost)."
        ) from error
    # model twice (old and new beside each other), optimiser moments (2x), EMA shadow and raw weights
    needed = 6 * 4 * model.n_parameters + (64 << 20)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InvalidDataError(
            f"checkpoint_dir: {str(folder)!r} has {free / 2**20:.0f} MiB free, a checkpoint of this model needs about "
            f"{needed / 2**20:.0f} MiB; free some space or choose another folder."
        )
