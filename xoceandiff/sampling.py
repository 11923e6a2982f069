"""Sampling: one loop, samplers by name, per-sample random streams; the eager core of generation.

The loop (method.md)::

    x_S ~ N(0, I)
    for t in scheduler.timesteps:            # 49 steps down to 0 for DDIM-50, 999 -> 0 for DDPM-1000
        out = denoiser(x, t)
        x = scheduler.step(out, t, x).prev_sample
        for c in constraints: x = c(x, t, ctx)
    for c in constraints if c.at_end: x = c.finish(x, ctx) if it has one, else c(x, 0, ctx)

The scheduler is swapped by name (``ddim``, the default with 50 steps; ``ddpm``, the paper's with 1000;
``dpm`` = DPM-Solver++), the loop is not copied. Everything the constraints need is precomputed in the
ConstraintContext, so the loop only touches tensors already on the device.

The flow is one way: :func:`plan_sampling` validates a request into a :class:`SamplingPlan`;
:func:`generate` turns (grid, plan, sample indices) into physical states; :func:`sample` is the eager
front door, and :mod:`xoceandiff.parallel` calls :func:`generate` once per dask chunk. This module never
imports the dask layer.

Randomness: sample ``i`` draws its initial noise and every DDPM noise term from its own
``torch.Generator`` seeded by ``(seed, i)``, so sample ``i`` is the same whatever ``n`` and the batch
size (bitwise for the same batch size and torch thread count; to float tolerance otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from .canonical import field_attrs
from .card import ModelCard
from .conditions import condition_date, encode_conditions, requested_conditions
from .constraints import Constraint, ConstraintContext, get_constraints
from .conventions import PAPER_REFERENCE, SAMPLE_DIM
from .errors import CheckpointError, GridMismatchError, InvalidDataError
from .layout import from_tensor
from .model import Denoiser, load_model
from .pretrained import bundled_model, bundled_model_fits

__all__ = [
    "SAMPLERS",
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "SamplingOptions",
    "SamplingPlan",
    "make_scheduler",
    "sample_seed",
    "sample_tensors",
    "resolve_model",
    "plan_sampling",
    "generate",
    "sample",
    "sample_metadata",
    "sample_field_attrs",
]

SAMPLERS: dict[str, Callable[[dict], Any]] = {
    "ddpm": lambda config: DDPMScheduler.from_config(config),
    "ddim": lambda config: DDIMScheduler.from_config(config),
    # DPM-Solver++ (2nd order, multistep). It has no x0 clipping: with the squaredcos_cap_v2 schedule the
    # first steps divide by sqrt(alpha_bar) ~ 0 and blow up unless lambda(t) is clipped (diffusers'
    # lambda_min_clipped, "critical for the cosine schedule").
    "dpm": lambda config: DPMSolverMultistepScheduler.from_config(
        {k: v for k, v in config.items() if k not in ("clip_sample", "clip_sample_range")},
        algorithm_type="dpmsolver++",
        solver_order=2,
        thresholding=False,
        lambda_min_clipped=-5.1,
    ),
}
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm": 25}
DEFAULT_SAMPLER = "ddim"
"""The documented fast sampler (within 10 % of DDPM-1000 on every metric at 21x; docs/performance.md)."""


def _check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise InvalidDataError(f"sampler: expected one of {sorted(SAMPLERS)}, found {sampler!r}.")


def make_scheduler(model: Denoiser, sampler: str = DEFAULT_SAMPLER, steps: int | None = None):
    """A fresh diffusers scheduler of the model's noise schedule, set to ``steps`` inference steps."""
    _check_sampler(sampler)
    config = dict(model.scheduler_config)
    n_train = int(config.get("num_train_timesteps", 1000))
    steps = DEFAULT_STEPS[sampler] if steps is None else steps
    if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= n_train:
        raise InvalidDataError(f"steps: expected an integer between 1 and {n_train} for {sampler}, found {steps!r}.")
    scheduler = SAMPLERS[sampler](config)
    scheduler.set_timesteps(int(steps))
    return scheduler


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: sampler and steps, random streams, batching, device and precision (validated).

    ``device`` and ``dtype`` are torch objects (``device=None``: the model's device); the dask layer
    turns them into strings only at its boundary.

    Examples
    --------
    ``free_below`` is the diffusers timestep (0 to 1000) below which the constraints rest in the loop: the
    network finishes the sample alone over the last, low-noise steps (DDIM-50: ``free_below=300``, the last
    15 steps), then the constraints apply once as after a step and the ``at_end`` ones once more, as at the
    end of every loop. Constraints enforced up to the last step
    put the network's inputs off the states it learnt at the noise levels where it no longer rebuilds the
    vertical structure: on GYRE that tripled the static instability it leaves in the top 200 m (see the
    sampling guide). 0 (the default): the constraints act after every step.

    Examples
    --------
    >>> SamplingOptions().sampler, SamplingOptions().steps, SamplingOptions(sampler="ddpm").steps
    ('ddim', 50, 1000)
    >>> SamplingOptions(free_below=300).free_below
    300
    """

    sampler: str = DEFAULT_SAMPLER
    steps: int | None = None
    seed: int = 0
    batch_size: int | None = None
    device: torch.device | None = None
    dtype: torch.dtype = torch.float32
    progress: bool = True
    free_below: int = 0

    def __post_init__(self) -> None:
        _check_sampler(self.sampler)
        if isinstance(self.free_below, bool) or int(self.free_below) != self.free_below or self.free_below < 0:
            raise InvalidDataError(
                f"free_below: expected a diffusers timestep >= 0 (0 to 1000; 0: constraints after every step), "
                f"found {self.free_below!r}."
            )
        object.__setattr__(self, "free_below", int(self.free_below))
        if self.steps is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.sampler])
        elif isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise InvalidDataError(f"steps: expected a positive integer, found {self.steps!r}.")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise InvalidDataError(f"seed: expected a non-negative integer, found {self.seed!r}.")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size <= 0
        ):
            raise InvalidDataError(f"batch_size: expected a positive integer, found {self.batch_size!r}.")
        if self.device is not None:
            object.__setattr__(self, "device", torch.device(self.device))
        if isinstance(self.dtype, str):
            object.__setattr__(self, "dtype", getattr(torch, self.dtype.replace("torch.", "")))
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise InvalidDataError(f"dtype: expected a floating torch dtype, found {self.dtype!r}.")


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``'s random stream (independent streams from numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _x0_clip(model: Denoiser, scheduler, device, dtype):
    """For schedulers without x0 clipping (DPM-Solver++): clip x0 as DDPM/DDIM do.

    The network output (epsilon, x0 or v, after the model's ``prediction_type``) is turned into
    ``x0 = (y - sqrt(1 - abar) eps) / sqrt(abar)``, clipped to the model's ``clip_sample_range`` and turned
    back; near t = T, where ``abar ~ 0``, this keeps the first steps from amplifying the denoiser's error.
    None when the scheduler clips by itself or the model does not ask for clipping.
    """
    config = model.scheduler_config
    if not config.get("clip_sample", False) or "clip_sample" in scheduler.config:
        return None
    bound = float(config.get("clip_sample_range", 1.0))
    prediction_type = config.get("prediction_type", "epsilon")
    abar = torch.as_tensor(scheduler.alphas_cumprod, device=device, dtype=torch.float32)

    def clip(output: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[int(t)]
        if prediction_type == "sample":
            return output.clamp(-bound, bound)
        if prediction_type == "v_prediction":
            x0 = (a.sqrt() * y - (1 - a).sqrt() * output).clamp(-bound, bound)
            eps = (y - a.sqrt() * x0) / (1 - a).sqrt()
            return (a.sqrt() * eps - (1 - a).sqrt() * x0).to(output.dtype)
        x0 = ((y - (1 - a).sqrt() * output) / a.sqrt()).clamp(-bound, bound)
        return ((y - a.sqrt() * x0) / (1 - a).sqrt()).to(output.dtype)

    return clip


def sample_tensors(
    model: Denoiser,
    indices: Sequence[int],
    constraints: Sequence[Constraint] = (),
    *,
    ctx: ConstraintContext | None = None,
    options: SamplingOptions | None = None,
    targets: torch.Tensor | None = None,
    condition: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Normalised samples ``(len(indices), C, H, W)`` on the CPU, float32: the sampling loop.

    ``indices`` name the samples (their random streams), so any subset can be generated anywhere. The
    caller's model is left as it is (see :meth:`~xoceandiff.model.Denoiser.detached_copy`). ``targets``,
    ``(len(indices), C)``, replaces ``ctx.target`` sample by sample (one level-mean profile per sample).
    ``condition`` ``(len(indices), k)`` holds a conditional model's encoded conditions; with ``guidance``
    :math:`w \\ne 1` the denoiser output is :math:`o_u + w (o_c - o_u)` (classifier-free guidance).
    """
    options = options or SamplingOptions()
    device = options.device or next(model.parameters()).device
    model = model.detached_copy(device, options.dtype)
    indices = [int(i) for i in indices]
    batch_size = options.batch_size or max(1, len(indices))
    shape = (model.channels, *model.sample_size)
    out = []
    bar = tqdm(total=int(options.steps) * len(indices), desc=f"sample ({options.sampler})", unit="sample-step",
               disable=not options.progress)
    for first in range(0, len(indices), batch_size):
        batch = indices[first : first + batch_size]
        batch_ctx = ctx if targets is None else replace(ctx, target=targets[first : first + batch_size].to(device))
        batch_condition = None if condition is None else condition[first : first + batch_size].to(device)
        out.append(_sample_batch(model, batch, constraints, batch_ctx, options, device, bar,
                                 condition=batch_condition, guidance=guidance).float().cpu())
    bar.close()
    return torch.cat(out) if out else torch.empty((0, *shape))


def _sample_batch(model: Denoiser, batch: list[int], constraints: Sequence[Constraint], ctx, options: SamplingOptions,
                  device: torch.device, bar, watch: Callable[[str, Any, torch.Tensor], None] | None = None,
                  condition: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
    """One batch through the loop; the normalised state ``x`` is what constraints see.

    ``watch(source, t, tensor)``, when given, sees the output of the denoiser and of every constraint (used
    only to find where non-finite values first appear, so the normal loop pays nothing for it).
    """
    dtype = options.dtype
    generators = [torch.Generator(device=device).manual_seed(sample_seed(options.seed, i)) for i in batch]
    shape = (model.channels, *model.sample_size)
    # y is the diffusion variable (the normalised state, or its anomaly about the model's background).
    y = torch.stack([torch.randn(shape, generator=g, device=device, dtype=dtype) for g in generators])
    scheduler = make_scheduler(model, options.sampler, options.steps)
    y = y * scheduler.init_noise_sigma
    clip = _x0_clip(model, scheduler, device, dtype)
    with torch.inference_mode():
        for t in scheduler.timesteps:
            if condition is None:
                output = model(y, t.to(device))  # epsilon, x0 or v: the scheduler knows which
            else:
                output = model(y, t.to(device), condition=condition)
                if guidance != 1.0:
                    unconditional = model(y, t.to(device))
                    output = unconditional + guidance * (output - unconditional)
            if watch is not None:
                watch("the denoiser", int(t), output)
            if clip is not None:
                output = clip(output, y, t)
            y = scheduler.step(output, t, y, generator=generators).prev_sample
            if constraints and int(t) >= options.free_below:
                x = model.from_model_space(y)
                for constraint in constraints:
                    x = constraint(x, t, ctx)
                    if watch is not None:
                        watch(f"the constraint {_name(constraint)!r}", int(t), x)
                y = model.to_model_space(x)
            bar.update(len(batch))
        x = model.from_model_space(y)
        if options.free_below > 0:
            # the step the loop skipped: the constraints once as after a step, then their at_end pass (which
            # then only mends what a later constraint did to an earlier one's work, as at the end of every loop)
            for constraint in constraints:
                x = constraint(x, 0, ctx)
        for constraint in constraints:
            if getattr(constraint, "at_end", False):
                finish = getattr(constraint, "finish", None)
                x = finish(x, ctx) if finish is not None else constraint(x, 0, ctx)
                if watch is not None:
                    watch(f"the final step of the constraint {_name(constraint)!r}", 0, x)
    _check_finite(x, model, batch, constraints, ctx, options, device, watch)
    return x


def _check_finite(x: torch.Tensor, model: Denoiser, batch: list[int], constraints: Sequence[Constraint], ctx,
                  options: SamplingOptions, device: torch.device, watch) -> None:
    """Refuse samples with NaN or inf on ocean cells, naming where they came from, the fields and levels."""
    bad = ~torch.isfinite(x)
    if ctx is not None:
        bad &= ctx.ops.mask.to(device=bad.device, dtype=torch.bool)
    if watch is not None or not bool(bad.any()):
        return
    counts = bad.sum(dim=(0, 2, 3)).cpu()
    names = model.card.layout.channel_names if model.card is not None else tuple(map(str, range(len(counts))))
    where = ", ".join(f"{names[c]}: {int(counts[c])}" for c in torch.nonzero(counts).flatten().tolist()[:8])
    source = "an unknown step"

    def first_non_finite(name: str, t: Any, tensor: torch.Tensor) -> None:
        if not bool(torch.isfinite(tensor).all()):
            raise _Found(f"{name} at step {t}")

    try:  # the same batch again, watched, to name the culprit (only on this failure path)
        _sample_batch(model, batch, constraints, ctx, options, device, _NoBar(), first_non_finite)
    except _Found as found:
        source = str(found)
    raise InvalidDataError(
        f"samples {batch}: non-finite values (NaN or inf) on ocean cells ({where}), first produced by {source}. "
        "A constraint that returns NaN, or a model whose weights are not finite (trained on data with inf?), "
        "gives this: check that constraint or retrain on finite data."
    )


class _Found(Exception):
    """Where the first non-finite value appeared (raised by the watch of :func:`_check_finite`)."""


class _NoBar:
    def update(self, n: int) -> None:
        pass


def resolve_model(model: Denoiser | str | os.PathLike | None, ds: xr.Dataset | None = None,
                  device: torch.device | str | None = None) -> Denoiser:
    """The model to sample with: given, a checkpoint path, or the bundled one when ``ds`` is on its grid."""
    if isinstance(model, Denoiser):
        return model
    if model is not None:
        return load_model(model, device=device)
    if ds is not None and bundled_model_fits(ds):
        return bundled_model(device=device)
    raise CheckpointError(
        "model: none given, and the data are not on the bundled model's grid. Pass model= (the Denoiser that "
        "ds.oceandiff.train(...) returned, or a checkpoint folder such as 'run/model'), or use a dataset on the "
        "bundled model's grid (xoceandiff.datasets.dino(resolution=xoceandiff.pretrained.BUNDLED_RESOLUTION))."
    )


@dataclass(frozen=True)
class SamplingPlan:
    """A validated sampling request: the model (with its card), the resolved constraints, the options."""

    model: Denoiser
    constraints: tuple[Constraint, ...]
    options: SamplingOptions
    level_means: Mapping[str, tuple[float, ...]] | None = None
    level_means_source: str = "training"
    condition: Mapping[str, Any] | None = None  # per condition, one value per sample of the whole request
    guidance: float = 1.0
    condition_from_records: bool = False  # the condition is each sample's own target record's (not asked for)

    @property
    def means(self) -> Mapping[str, tuple[float, ...]] | None:
        """The level means the mean constraints drive to: the given ones, else the training data's."""
        return self.level_means if self.level_means is not None else self.model.card.training_means


def _level_means(stats: xr.Dataset, card: ModelCard) -> dict[str, tuple[float, ...]]:
    """Per-field level means from a statistics Dataset, checked against the model's fields and levels."""
    out = {}
    for name in card.fields:
        key = f"{name}_mean"
        if key not in stats.variables:
            raise InvalidDataError(
                f"level_means: no {key!r} in the statistics given (found {sorted(map(str, stats.data_vars))}); pass "
                "ds.oceandiff.statistics(weighted=True) of the records whose means the samples should have."
            )
        values = np.atleast_1d(np.asarray(stats[key].values, dtype=np.float64))
        expected = card.layout.n_levels if card.layout.three_dimensional(name) else 1
        if values.size != expected:
            raise GridMismatchError(f"level_means: {key} has {values.size} levels, the model's grid {expected}.")
        out[name] = tuple(values.tolist())
    return out


def _record_conditions(model: Denoiser, seed: int, n: int) -> dict[str, np.ndarray] | None:
    """For ``level_means="records"`` without a condition: each sample's target record's own conditions.

    A model trained on the date (day of the year, time in the run) is asked for the date of the record whose
    level means the mean constraints drive the sample to, so that the network generates a state of that date
    and the constraints' last shift stays small: on GYRE an unconditioned sample's level means are a season
    away from its record's, and shifting each level of a mixed layer by a different amount makes it unstable.
    None for an unconditional model, or one with a condition the card's records do not carry (a parameter).
    """
    table = model.card.record_means
    if not model.conditions or table is None or any(spec.name not in table for spec in model.conditions):
        return None
    rows = record_choices(model.card, seed, range(n))
    return {spec.name: np.asarray(table[spec.name], dtype=np.float64)[rows] for spec in model.conditions}


def plan_sampling(
    ds: xr.Dataset,
    n: int,
    constraints: Any = (),
    *,
    model: Denoiser | str | os.PathLike | None = None,
    options: SamplingOptions | None = None,
    level_means: xr.Dataset | str | None = None,
    condition: Mapping[str, Any] | None = None,
    guidance: float = 1.0,
) -> SamplingPlan:
    """Check a sampling request before any work (the eager and the chunked paths share it).

    ``level_means`` (the targets of ``zero_mean`` and ``gradient_zero_mean``): None or ``"training"`` for
    the training data's area-weighted level means, ``"records"`` for the level means of one training record
    per sample (drawn from the sample's own random stream among the card's
    :attr:`~xoceandiff.card.ModelCard.record_means`), or a statistics Dataset (e.g. of the last records of a
    run that still drifts: ``ds.isel(t=slice(-36, None)).oceandiff.statistics(weighted=True)``).

    ``condition`` (a conditional model's, :mod:`xoceandiff.conditions`): per condition a value for every
    sample or one per sample; the mean constraints then drive each sample to the level means of the training
    records nearest its condition (their mean, or one of them with ``"records"``). With ``"records"`` and no
    ``condition``, a model trained on the date is conditioned on each sample's own record's date
    (:func:`_record_conditions`). ``guidance`` is the
    classifier-free guidance scale (1: the conditional model alone; above 1 sharpens the condition at the
    price of a second denoiser call per step).

    Raises a clear error for ``n <= 0``, an unknown sampler or steps out of range, a model without a card
    or on another grid (:class:`~xoceandiff.errors.GridMismatchError`), a constraint that needs a field
    the model does not produce, and a condition the model was not trained with.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise InvalidDataError(f"n: expected a positive integer number of samples, found {n!r}.")
    options = options or SamplingOptions()
    model = resolve_model(model, ds, device=options.device)
    if model.card is None:
        raise CheckpointError(
            "model: it has no model card (layout, normalisation, grid): it was not prepared for a dataset. Train "
            "it with xoceandiff.training.train, or call xoceandiff.training.prepare_model(ds, model) first."
        )
    model.card.check_grid(ds)
    chosen = tuple(get_constraints(constraints, layout=model.card.layout))
    make_scheduler(model, options.sampler, options.steps)  # validates steps against the model's schedule
    wanted = requested_conditions(model.conditions, condition, int(n))
    if not (isinstance(guidance, int | float) and np.isfinite(guidance) and guidance >= 0):
        raise InvalidDataError(f"guidance: expected a scale >= 0 (1: no guidance), found {guidance!r}.")
    extras = {"condition": wanted, "guidance": float(guidance)}
    if level_means is None or (isinstance(level_means, str) and level_means == "training"):
        return SamplingPlan(model, chosen, options, **extras)
    if isinstance(level_means, str) and level_means == "records":
        if model.card.record_means is None:
            raise CheckpointError(
                "level_means='records': the model's card keeps no per-record level means (a checkpoint written before "
                "they were kept); retrain it, or pass level_means='training' or a statistics Dataset."
            )
        dated = _record_conditions(model, options.seed, int(n)) if wanted is None else None
        if dated is not None:
            extras.update(condition=dated, condition_from_records=True)
        return SamplingPlan(model, chosen, options, None, "records", **extras)
    if not isinstance(level_means, xr.Dataset):
        raise InvalidDataError(
            f"level_means: expected 'training', 'records' or a statistics Dataset "
            f"(ds.oceandiff.statistics(weighted=True)), found {level_means!r}."
        )
    source = str(level_means.attrs.get("level_means_source", "given statistics"))
    return SamplingPlan(model, chosen, options, _level_means(level_means.compute(), model.card), source, **extras)


def generate(grid: xr.Dataset, plan: SamplingPlan, indices: Sequence[int]) -> xr.Dataset:
    """The core: samples ``indices`` of ``plan`` as physical states on ``grid`` (dimension ``sample``).

    ``grid`` is any canonical dataset on the model's grid (only its grid variables are used).
    """
    model, options = plan.model, plan.options
    card = model.card
    device = options.device or next(model.parameters()).device
    ctx = ConstraintContext.from_model(grid, card.layout, card.normaliser, device=device, dtype=options.dtype,
                                       means=plan.means, salinity=card.salinity,
                                       background=model.space_offset if model.background else None)
    targets, condition = None, None
    if plan.condition is not None:
        wanted = {name: np.asarray(values)[list(indices)] for name, values in plan.condition.items()}
        condition = torch.as_tensor(encode_conditions(model.conditions, wanted, len(indices)), dtype=torch.float32)
    nearest = nearest_records(card, plan, indices)
    if nearest is not None and plan.level_means is None:
        if plan.level_means_source == "records":  # one of the records nearest the condition
            targets = record_targets(card, ctx, record_choices(card, options.seed, indices, among=nearest))
        else:  # their mean: the data's mean state for that condition
            targets = torch.stack([record_targets(card, ctx, rows).mean(0) for rows in nearest])
    elif plan.level_means_source == "records":
        targets = record_targets(card, ctx, record_choices(card, options.seed, indices))
    tensors = sample_tensors(model, indices, plan.constraints, ctx=ctx, options=options, targets=targets,
                             condition=condition, guidance=plan.guidance)
    out = from_tensor(tensors, card.layout, grid, dim=SAMPLE_DIM, normaliser=card.normaliser)
    for name in card.fields:
        out[name].attrs = sample_field_attrs(card, name)
    return out.assign_coords(sample_coords(plan, indices))


def sample_coords(plan: SamplingPlan, indices: Sequence[int]) -> dict[str, Any]:
    """The sample axis's coordinates: the sample indices and, for ``level_means="records"``, each sample's record."""
    coords: dict[str, Any] = {SAMPLE_DIM: (SAMPLE_DIM, np.asarray(indices, dtype=np.int64),
                                           {"long_name": "Sample index (random stream)", "units": "1"})}
    card = plan.model.card
    nearest = nearest_records(card, plan, indices)
    if plan.level_means_source == "records" and plan.level_means is None:
        rows = record_choices(card, plan.options.seed, indices, among=nearest)
        coords["level_means_record"] = (SAMPLE_DIM, np.asarray(card.record_means["record"])[rows], {
            "long_name": "Training record whose level means the mean constraints drove this sample to", "units": "1"})
    if plan.condition is not None:
        coords.update(condition_coords(plan, indices))
    return coords


NEAREST_RECORDS = 8
"""With a condition, the mean constraints' targets come from this many training records nearest to it."""


def nearest_records(card: ModelCard, plan: SamplingPlan, indices: Sequence[int]) -> list[np.ndarray] | None:
    """Per sample, the rows of the card's record means nearest its condition (None without a condition).

    The distance adds, per condition asked for, the day-of-year distance on the calendar's circle in years and
    the distance in run time in years.
    """
    table = card.record_means
    if plan.condition is None or table is None or plan.condition_from_records:
        return None
    names = [name for name in plan.condition if name in table]
    if not names:
        return None
    specs = {spec.name: spec for spec in plan.model.conditions}
    out = []
    for i in indices:
        distance = np.zeros(np.asarray(table["record"]).size)
        for name in names:
            value, rows = float(np.asarray(plan.condition[name])[int(i)]), np.asarray(table[name], dtype=np.float64)
            if name == "day_of_year":
                period = specs[name].days_per_year
                gap = np.abs(rows - value) % period
                distance += np.minimum(gap, period - gap) / period
            elif specs[name].is_parameter:  # in units of the parameter's training range
                span = (specs[name].end - specs[name].start) or 1.0
                distance += np.abs(rows - value) / span
            else:
                distance += np.abs(rows - value)
        out.append(np.argsort(distance, kind="stable")[:NEAREST_RECORDS])
    return out


def condition_coords(plan: SamplingPlan, indices: Sequence[int]) -> dict[str, Any]:
    """Per-sample coordinates of the conditions asked for, and for a day of the year its date (``time``)."""
    coords: dict[str, Any] = {}
    rows = list(indices)
    specs = {spec.name: spec for spec in plan.model.conditions}
    labels = {"day_of_year": ("Day of the year the sample was generated for (0: 1 January)", "day"),
              "run_time": ("Time in the run the sample was generated for (model years)", "year")}
    for name, values in plan.condition.items():
        long_name, units = labels.get(name, (f"Parameter {name} the sample was generated for", "1"))
        coords[f"condition_{name}"] = (SAMPLE_DIM, np.asarray(values, dtype=np.float64)[rows],
                                       {"long_name": long_name, "units": units})
    if "day_of_year" in plan.condition:
        spec = specs["day_of_year"]
        table = plan.model.card.record_means
        if "run_time" in plan.condition:
            years = np.floor(np.asarray(plan.condition["run_time"], dtype=np.float64)[rows]).astype(int)
        elif table is not None and "run_time" in table:  # the year after the training records
            years = np.full(len(rows), int(np.floor(np.max(table["run_time"]))) + 1)
        else:
            years = np.ones(len(rows), dtype=int)
        days = np.asarray(plan.condition["day_of_year"], dtype=np.float64)[rows]
        coords["time"] = (SAMPLE_DIM, np.array([condition_date(spec.calendar, d, y) for d, y in zip(days, years,
                                                                                                    strict=True)]),
                          {"long_name": "Date the sample was generated for (00:00 of its day)"})
    return coords


def record_choices(card: ModelCard, seed: int, indices: Sequence[int],
                   among: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """For ``level_means="records"``: the row of :attr:`ModelCard.record_means` each sample drives to.

    Drawn from each sample's own stream (:func:`sample_seed` with a second key), so that a sample gets the same
    record whatever the batch or chunk it is generated in; ``among`` restricts sample ``k`` to the rows
    ``among[k]`` (the records nearest its condition).
    """
    count = int(np.asarray(card.record_means["record"]).size)
    if among is None:
        return np.asarray([np.random.default_rng([sample_seed(seed, int(i)), 1]).integers(count) for i in indices],
                          dtype=np.int64)
    return np.asarray([rows[np.random.default_rng([sample_seed(seed, int(i)), 1]).integers(len(rows))]
                       for i, rows in zip(indices, among, strict=True)], dtype=np.int64)


def record_targets(card: ModelCard, ctx: ConstraintContext, rows: np.ndarray) -> torch.Tensor:
    """``(len(rows), C)`` normalised level-mean targets of the chosen rows of the card's record means."""
    layout = card.layout
    columns = []
    for name in layout.fields:
        table = np.asarray(card.record_means[name], dtype=np.float64)[rows]
        columns.append(table[:, list(layout.levels)] if layout.three_dimensional(name) else table[:, :1])
    means = torch.as_tensor(np.concatenate(columns, axis=1), device=ctx.device, dtype=ctx.dtype)
    # land-only levels have no mean (NaN): the training mean's target keeps them as they are
    fallback = ctx.target if ctx.target is not None else torch.zeros(layout.channels, device=ctx.device, dtype=ctx.dtype)
    return torch.where(torch.isfinite(means), (means - ctx.offset) / ctx.scale, fallback)


def sample_field_attrs(card: ModelCard, name: str) -> dict[str, Any]:
    """CF attributes of generated field ``name``: its salinity kind's names and the training data's range.

    ``training_min`` / ``training_max`` (one value per level for toce and soce) let a later step refuse a
    value far outside what the model was trained on (see :mod:`xoceandiff.restart_check`).
    """
    attrs: dict[str, Any] = dict(field_attrs(name, card.salinity))
    for key, table in (("training_min", card.training_min), ("training_max", card.training_max)):
        if table is not None and name in table:
            values = np.asarray(table[name], dtype=np.float64)
            attrs[key] = values if values.size > 1 else float(values[0])
    return attrs


def sample(
    ds: xr.Dataset,
    n: int,
    constraints: Any = (),
    *,
    model: Denoiser | str | os.PathLike | None = None,
    sampler: str = DEFAULT_SAMPLER,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    level_means: xr.Dataset | str | None = None,
    condition: Mapping[str, Any] | None = None,
    guidance: float = 1.0,
    free_below: int = 0,
) -> xr.Dataset:
    """Generate ``n`` ocean states on the grid of ``ds``, in physical units, in memory.

    For a lazy, dask-backed result (one task per chunk of samples) use
    :func:`xoceandiff.parallel.sample_lazy`, or ``ds.oceandiff.sample(..., chunks=k)``.

    Parameters
    ----------
    ds : xarray.Dataset
        Any canonical dataset on the model's grid (only its grid is used).
    n : int
        Number of samples.
    constraints : sequence
        Constraint names (see :data:`xoceandiff.constraints.CONSTRAINTS`), instances or callables,
        applied in order after every scheduler step.
    model : Denoiser, checkpoint path, optional
        Default: the bundled demo model when ``ds`` is on its grid.
    sampler : {"ddim", "ddpm", "dpm"}
        Scheduler; ``ddim`` with 50 steps is the default, ``ddpm`` with 1000 steps the paper's setting.
    steps : int, optional
        Inference steps (default: 50 for ddim, 1000 for ddpm, 25 for dpm).
    seed : int
        Sample ``i`` uses the random stream ``(seed, i)``.
    batch_size : int, optional
        Samples per denoiser call (default: all).
    device, dtype : optional
        Where and in which precision to run (default: the model's device, float32). The model passed in
        is not moved.
    progress : bool
        Show a progress bar.
    level_means : "training" or xarray.Dataset, optional
        What ``zero_mean`` / ``gradient_zero_mean`` drive each level's area-weighted mean to: the training
        data's (default: on a run that still drifts, the middle of the training period), or the statistics
        of chosen records, e.g. the last year's to place the samples at the end of the run
        (``ds.isel(t=slice(-72, None)).oceandiff.statistics(weighted=True)``).
    condition : mapping, optional
        For a conditional model: ``{"day_of_year": 180}`` (0-based) and/or ``{"run_time": 58.5}`` (model years),
        each a number or one per sample (see :func:`plan_sampling`). The samples carry it as coordinates
        (``condition_day_of_year``, and their date as ``time``).
    guidance : float
        Classifier-free guidance scale (1: none).
    free_below : int
        Timestep below which the constraints rest in the loop; the ``at_end`` ones still apply once after
        the last step (see :class:`SamplingOptions`). 0: after every step.

    Returns
    -------
    xarray.Dataset
        ``toce``, ``soce`` (sample, z_c, y_c, x_c) and ``ssh`` (sample, y_c, x_c), land NaN, CF attributes,
        attributes recording the checkpoint hash, sampler, steps, constraints, seed and package version.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> states = sample(ds, 2, ["zero_mean", "border_zero_gradient"], steps=2, progress=False)
    >>> dict(states.toce.sizes), states.attrs["sampler"], states.attrs["sampling_steps"]
    ({'sample': 2, 'z_c': 36, 'y_c': 51, 'x_c': 17}, 'ddim', 2)
    """
    options = SamplingOptions(sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                              device=None if device is None else torch.device(device),
                              dtype=dtype or torch.float32, progress=progress, free_below=free_below)
    plan = plan_sampling(ds, n, constraints, model=model, options=options, level_means=level_means,
                         condition=condition, guidance=guidance)
    out = generate(ds, plan, range(int(n)))
    out.attrs = sample_metadata(ds.attrs, plan)
    return out


def sample_metadata(template_attrs, plan: SamplingPlan) -> dict:
    """Global attributes of a sample set: provenance (checkpoint hash, sampler, steps, constraints, seed)."""
    from .version import __version__

    # The template's own global attributes (a training set's title, ...) do not describe the samples.
    attrs = {key: template_attrs[key] for key in ("Iperio", "Conventions", "history") if key in template_attrs}
    attrs.update(
        {
            "title": "Ocean states generated by a diffusion model (xoceandiff)",
            "source": f"xoceandiff {__version__}, checkpoint sha256 {plan.model.checkpoint_hash or 'unsaved'}",
            "references": PAPER_REFERENCE,
            "xoceandiff_version": __version__,
            "checkpoint_sha256": plan.model.checkpoint_hash or "unsaved",
            "sampler": plan.options.sampler,
            "sampling_steps": int(plan.options.steps),
            "constraints_free_below": int(plan.options.free_below),
            "constraints": ", ".join(_name(c) for c in plan.constraints) or "none",
            "seed": int(plan.options.seed),
            "level_means": plan.level_means_source,
        }
    )
    if plan.condition is not None:
        attrs["conditions"] = ", ".join(plan.condition)
        attrs["guidance"] = float(plan.guidance)
    return attrs


def _name(constraint) -> str:
    return str(getattr(constraint, "name", None) or getattr(constraint, "__name__", None) or type(constraint).__name__)
