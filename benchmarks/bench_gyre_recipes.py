"""Training recipes compared on the shared NEMO 5.0 GYRE run: which one gives states NEMO can start from quietly.

For each checkpoint given (each trained on the GYRE run by ``xoceandiff train`` with one recipe; the recipe is
read from its card), in one run:

- the denoiser's clean-state error at the lowest noise levels on 12 training records (how close to the identity
  the network is where the sampler ends: an x0-predicting network has to learn the identity, a v-predicting
  one gets it from its parameterisation), as RMS temperature error of the top 8 levels, of their level means
  and of their vertical differences, in degC;
- the 'States NEMO can start from quietly' measures of 20 samples at the GYRE demo's settings (DDIM 50, seed 0,
  ``zero_mean`` + ``border_zero_gradient``, level means of one training record per sample) and of 20 free
  samples (no constraint): convective-adjustment distance and density errors by band, spread and
  gradient-variance ratios, novelty (:func:`xoceandiff.fidelity.fidelity` against the 576 records).

Run from the repository root, alone on the machine (about a minute per checkpoint on 2 cores)::

    python benchmarks/bench_gyre_recipes.py GYRE_FOLDER CHECKPOINT [CHECKPOINT ...] | tee benchmarks/results/bench_gyre_recipes.txt
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch
from _common import header, table

import xoceandiff
from xoceandiff.canonical import DEPTH_BANDS
from xoceandiff.demo import DEMO_CONSTRAINTS, DEMO_SAMPLER, DEMO_STEPS
from xoceandiff.fidelity import fidelity
from xoceandiff.gridops import GridOps
from xoceandiff.layout import to_tensor
from xoceandiff.model import load_model
from xoceandiff.normalisation import normalise
from xoceandiff.training import _clean_estimate

N = 20
TOP_LEVELS = 8


def recipe(model) -> str:
    """The recipe part of the training command in the model's card (after ``--out DIR``)."""
    command = shlex.split(model.card.training.get("command", ""))
    return " ".join(command[command.index("--steps"):]) if "--steps" in command else "?"


def low_noise_errors(model, data, timesteps=(0, 20)) -> dict[str, float]:
    """RMS error (degC) of the network's clean-state estimate of the top levels' temperature at low noise."""
    card = model.card
    records = data.isel(t=slice(0, data.sizes["t"], 48))
    x = to_tensor(normalise(records, card.normaliser), card.layout)
    y0 = model.to_model_space(x)
    scheduler = model.make_scheduler()
    toce = card.layout.channel_slices["toce"]
    top = slice(toce.start, toce.start + TOP_LEVELS)
    scale = torch.tensor(card.normaliser.scale["toce"], dtype=torch.float32)[list(card.layout.levels)][:TOP_LEVELS]
    ocean = GridOps.from_dataset(records, card.layout).mask[top].float()
    out = {}
    generator = torch.Generator().manual_seed(0)
    for t in timesteps:
        steps = torch.full((len(y0),), t)
        noisy = scheduler.add_noise(y0, torch.randn(y0.shape, generator=generator), steps)
        with torch.no_grad():
            estimate = _clean_estimate(scheduler, model(noisy, steps), noisy, steps)
        error = (model.from_model_space(estimate) - x)[:, top] * scale[:, None, None]
        cells = ocean.sum() * len(error)
        level_means = (error * ocean).sum((-2, -1)) / ocean.sum((-2, -1))
        vertical = (error[:, 1:] - error[:, :-1]) * ocean[1:]
        out[f"x0_error_t{t}_toce_top{TOP_LEVELS}"] = float(((error**2 * ocean).sum() / cells).sqrt())
        out[f"x0_error_t{t}_level_means"] = float(level_means.square().mean().sqrt())
        out[f"x0_error_t{t}_vertical_differences"] = float((vertical.square().sum() / (ocean[1:].sum() * len(error))).sqrt())
    return out


def main() -> None:
    header("Training recipes on the GYRE run")
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    folder = Path(sys.argv[1])
    (grid_t,) = sorted(folder.glob("GYRE_5d_*_grid_T.nc"))
    data = xoceandiff.open_nemo(grid_t, mesh_mask=folder / "mesh_mask.nc").load()
    columns, results = [], []
    for index, path in enumerate(sys.argv[2:]):
        model = load_model(path)
        columns.append(f"model {index + 1}")
        print(f"# model {index + 1}: {path} (sha256 {model.checkpoint_hash[:12]}): {recipe(model)}")
        result = low_noise_errors(model, data)
        grid = model.card.grid
        for label, constraints in (("constrained", list(DEMO_CONSTRAINTS)), ("free", [])):
            samples = grid.oceandiff.sample(N, constraints, model=model, sampler=DEMO_SAMPLER, steps=DEMO_STEPS, seed=0,
                                            progress=False, level_means="records")
            measures = fidelity(samples, data).compute()
            result.update({f"{label}: {key}": float(value) for key, value in measures.items() if value.ndim == 0})
        results.append(result)
    print(f"\n{N} samples per set, {DEMO_SAMPLER} {DEMO_STEPS} steps, seed 0; 'constrained': "
          f"{' + '.join(DEMO_CONSTRAINTS)} with level means of one training record per sample\n")
    keys = [key for key in results[0] if key.startswith("x0_error")]
    for label in ("constrained", "free"):
        for measure, fields in (("convective_distance_samples", ("toce",)), ("convective_distance_ratio", ("toce",)),
                                ("spread_ratio", ("toce", "soce")), ("gradient_variance_ratio", ("toce", "soce"))):
            keys += [f"{label}: {measure}_{name}_{band}" for name in fields for band in DEPTH_BANDS]
        keys += [f"{label}: density_errors_samples_{band}" for band in DEPTH_BANDS]
        keys += [f"{label}: {key}" for key in ("range_violations_toce", "range_violations_soce", "novelty_ratio")]
    keys += [f"constrained: convective_distance_data_toce_{band}" for band in DEPTH_BANDS]
    keys += [f"constrained: density_errors_data_{band}" for band in DEPTH_BANDS]
    table([(key, *(f"{r[key]:.4g}" for r in results)) for key in keys], ("measure", *columns))


if __name__ == "__main__":
    main()
