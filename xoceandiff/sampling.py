"""Sampling: one loop, samplers by name, per-sample random streams.

The loop (method.md)::

    x_S ~ N(0, I)
    for t in scheduler.timesteps:            # 999 -> 0 for DDPM-1000
        eps = denoiser(x, t)
        x = scheduler.step(eps, t, x).prev_sample
        for c in constraints: x = c(x, t, ctx)
    for c in constraints if c.at_end: x = c.finish(x, ctx) if it has one, else c(x, 0, ctx)

The scheduler is swapped by name (``ddpm``, ``ddim``, ``dpm`` = DPM-Solver++), the loop is not copied.
Everything the constraints need is precomputed in the ConstraintContext, so the loop only touches
tensors already on the device.

Randomness: sample ``i`` draws its initial noise and every DDPM noise term from its own
``torch.Generator`` seeded by ``(seed, i)``, so sample ``i`` is the same whatever ``n`` and the batch
size (bitwise for the same batch size and torch thread count; to float tolerance otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from .constraints import ConstraintContext, get_constraints
from .conventions import PAPER_REFERENCE
from .errors import CheckpointError, InvalidDataError
from .layout import Layout, check_fingerprint, from_tensor
from .model import Denoiser, load_model
from .normalisation import Normaliser

__all__ = ["SAMPLERS", "DEFAULT_STEPS", "make_scheduler", "sample_tensors", "sample", "resolve_model", "sample_seed", "sample_metadata", "plan_sampling", "SamplingPlan"]

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
CHECKPOINT_ATTR = "xoceandiff_checkpoint"


def make_scheduler(model: Denoiser, sampler: str = "ddpm", steps: int | None = None):
    """A fresh diffusers scheduler of the model's noise schedule, set to ``steps`` inference steps."""
    if sampler not in SAMPLERS:
        raise InvalidDataError(f"sampler: expected one of {sorted(SAMPLERS)}, found {sampler!r}.")
    config = dict(model.scheduler_config)
    n_train = int(config.get("num_train_timesteps", 1000))
    steps = DEFAULT_STEPS[sampler] if steps is None else steps
    if int(steps) != steps or not 1 <= steps <= n_train:
        raise InvalidDataError(f"steps: expected an integer between 1 and {n_train} for {sampler}, found {steps!r}.")
    scheduler = SAMPLERS[sampler](config)
    scheduler.set_timesteps(int(steps))
    return scheduler


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
    constraints: Sequence = (),
    *,
    ctx: ConstraintContext | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Normalised samples ``(len(indices), C, H, W)`` on the CPU, float32.

    ``indices`` name the samples (their random streams), so any subset can be generated anywhere.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = dtype or torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    indices = [int(i) for i in indices]
    batch_size = batch_size or len(indices)
    shape = (model.channels, *model.sample_size)
    out = []
    n_steps = len(make_scheduler(model, sampler, steps).timesteps)
    bar = tqdm(total=n_steps * len(indices), desc=f"sample ({sampler})", unit="sample-step", disable=not progress)
    for first in range(0, len(indices), batch_size):
        batch = indices[first : first + batch_size]
        generators = [torch.Generator(device=device).manual_seed(sample_seed(seed, i)) for i in batch]
        # y is the diffusion variable (the normalised state, or its anomaly about the model's
        # background); constraints always see the normalised state x.
        y = torch.stack([torch.randn(shape, generator=g, device=device, dtype=dtype) for g in generators])
        scheduler = make_scheduler(model, sampler, steps)
        y = y * scheduler.init_noise_sigma
        clip = _x0_clip(model, scheduler, device, dtype)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                output = model(y, t.to(device))  # epsilon, x0 or v: the scheduler knows which
                if clip is not None:
                    output = clip(output, y, t)
                y = scheduler.step(output, t, y, generator=generators).prev_sample
                if constraints:
                    x = model.from_model_space(y)
                    for constraint in constraints:
                        x = constraint(x, t, ctx)
                    y = model.to_model_space(x)
                bar.update(len(batch))
            x = model.from_model_space(y)
            for constraint in constraints:
                if getattr(constraint, "at_end", False):
                    finish = getattr(constraint, "finish", None)
                    x = finish(x, ctx) if finish is not None else constraint(x, 0, ctx)
        out.append(x.float().cpu())
    bar.close()
    return torch.cat(out) if out else torch.empty((0, *shape))


def training_means(model: Denoiser) -> dict[str, list[float]] | None:
    """The training data's area-weighted level means recorded in the checkpoint (None if absent)."""
    means = model.metadata.get("area_weighted_means")
    if not means:
        return None
    return {name: [float("nan") if v is None else v for v in values] for name, values in means.items()}


def resolve_model(ds: xr.Dataset, model: Denoiser | str | os.PathLike | None, device=None) -> Denoiser:
    """The model to sample with: given, a checkpoint path, the one recorded in ``ds.attrs``, or the bundled one."""
    if isinstance(model, Denoiser):
        return model
    if model is not None:
        return load_model(model, device=device)
    recorded = ds.attrs.get(CHECKPOINT_ATTR)
    if recorded and Path(recorded).exists():
        return load_model(recorded, device=device)
    from .pretrained import bundled_model, bundled_model_fits

    if bundled_model_fits(ds):
        return bundled_model(device=device)
    raise CheckpointError(
        "No model given: pass model= (a Denoiser or a checkpoint folder), train one with "
        "ds.oceandiff.train(checkpoint_dir=...), or use a dataset on the bundled model's grid "
        "(xoceandiff.datasets.dino(resolution=xoceandiff.pretrained.BUNDLED_RESOLUTION))."
    )


def sample(
    ds: xr.Dataset,
    n: int,
    constraints: Sequence = (),
    *,
    model: Denoiser | str | os.PathLike | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    chunks: int | None = None,
) -> xr.Dataset:
    """Generate ``n`` ocean states on the grid of ``ds``, in physical units.

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
        Default: the checkpoint recorded in ``ds.attrs`` by training, else the bundled demo model when
        ``ds`` is on its grid.
    sampler : {"ddpm", "ddim", "dpm"}
        Scheduler; ``ddpm`` with 1000 steps is the paper's setting.
    steps : int, optional
        Inference steps (default: 1000 for ddpm, 50 for ddim, 25 for dpm).
    seed : int
        Sample ``i`` uses the random stream ``(seed, i)``.
    batch_size : int, optional
        Samples per denoiser call (default: all).
    device, dtype : optional
        Where and in which precision to run (default: the model's device, float32).
    progress : bool
        Show a progress bar.
    chunks : int, optional
        Return a lazy, dask-backed Dataset with one task per chunk of ``chunks`` samples (see
        :func:`xoceandiff.parallel.sample_lazy`); the model must then be a saved checkpoint.

    Returns
    -------
    xarray.Dataset
        ``toce``, ``soce`` (sample, z_c, y_c, x_c) and ``ssh`` (sample, y_c, x_c), land NaN, CF attributes,
        attributes recording the checkpoint hash, sampler, steps, constraints, seed and package version.
    """
    if chunks is not None:
        from .parallel import sample_lazy

        return sample_lazy(ds, n, constraints, model=model, chunks=chunks, sampler=sampler, steps=steps, seed=seed,
                           batch_size=batch_size, device=str(device) if device is not None else None,
                           dtype=str(dtype).replace("torch.", "") if dtype is not None else None)
    plan = plan_sampling(ds, n, constraints, model=model, sampler=sampler, steps=steps, batch_size=batch_size,
                         device=device)
    model, layout, normaliser, chosen, steps = plan.model, plan.layout, plan.normaliser, plan.constraints, plan.steps
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ctx = ConstraintContext.from_model(ds, layout, normaliser, device=device, dtype=dtype or torch.float32,
                                       means=training_means(model))
    tensors = sample_tensors(
        model, range(int(n)), chosen, ctx=ctx, sampler=sampler, steps=steps, seed=seed,
        batch_size=batch_size, device=device, dtype=dtype, progress=progress,
    )
    out = from_tensor(tensors, layout, ds, dim="sample", normaliser=normaliser)
    out = out.assign_coords(sample=("sample", np.arange(int(n)), {"long_name": "Sample index (random stream)", "units": "1"}))
    out.attrs = sample_metadata(out.attrs, model, sampler, int(steps), chosen, seed)
    return out


@dataclass(frozen=True)
class SamplingPlan:
    """A validated sampling request: the model, its layout and normaliser, constraints, steps."""

    model: Denoiser
    layout: Layout
    normaliser: Normaliser
    constraints: list
    steps: int


def plan_sampling(
    ds: xr.Dataset,
    n: int,
    constraints: Sequence = (),
    *,
    model: Denoiser | str | os.PathLike | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> SamplingPlan:
    """Check a sampling request before any work (the eager and the chunked paths share it).

    Raises a clear error for ``n <= 0``, a bad ``batch_size``, an unknown sampler or steps out of range, a
    model without layout or on another grid (:class:`~xoceandiff.errors.GridMismatchError`), and a
    constraint that needs a field the model does not produce.
    """
    if int(n) != n or n <= 0:
        raise InvalidDataError(f"n: expected a positive number of samples, found {n!r}.")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size <= 0):
        raise InvalidDataError(f"batch_size: expected a positive integer, found {batch_size!r}.")
    model = resolve_model(ds, model, device=device)
    if "layout" not in model.metadata or "normalisation" not in model.metadata:
        raise CheckpointError("model: its metadata has no layout/normalisation; train it with xoceandiff (prepare_model).")
    check_fingerprint(model.metadata["grid"], ds)
    layout = Layout.from_dict(model.metadata["layout"])
    normaliser = Normaliser.from_dict(model.metadata["normalisation"])
    chosen = get_constraints(constraints)
    for constraint in chosen:
        check = getattr(constraint, "check", None)
        if check is not None:
            check(layout)
    steps = DEFAULT_STEPS[sampler] if steps is None and sampler in SAMPLERS else steps
    make_scheduler(model, sampler, steps)  # validates sampler and steps
    return SamplingPlan(model, layout, normaliser, chosen, int(steps))


def sample_metadata(template_attrs, model: Denoiser, sampler: str, steps: int, constraints, seed: int) -> dict:
    """Global attributes of a sample set: provenance (checkpoint hash, sampler, steps, constraints, seed)."""
    from . import __version__

    # The template's own global attributes (a training set's title, ...) do not describe the samples.
    attrs = {key: template_attrs[key] for key in ("Iperio", "Conventions", "history") if key in template_attrs}
    attrs.update(
        {
            "title": "Ocean states generated by a diffusion model (xoceandiff)",
            "source": f"xoceandiff {__version__}, checkpoint sha256 {model.checkpoint_hash or 'unsaved'}",
            "references": PAPER_REFERENCE,
            "xoceandiff_version": __version__,
            "checkpoint_sha256": model.checkpoint_hash or "unsaved",
            "sampler": sampler,
            "sampling_steps": int(steps),
            "constraints": ", ".join(_name(c) for c in constraints) or "none",
            "seed": int(seed),
        }
    )
    return attrs


def _name(constraint) -> str:
    return str(getattr(constraint, "name", None) or getattr(constraint, "__name__", None) or type(constraint).__name__)
