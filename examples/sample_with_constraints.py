"""Sample ocean states with constraints and compare their static instabilities.

Three sample sets from the same random streams (seed 0, so sample ``i`` starts from the same noise
in every set):

1. no constraint;
2. ``zero_mean`` + ``border_zero_gradient``: each level's ocean mean held at the training mean, and a
   zero normal gradient at every coast, after every sampling step;
3. the same + ``stable_stratification``: a gradient step on the static-instability penalty after every
   step, and preconditioned steps at the end.

For each set it prints the paper's density-error metric (% of the ocean volume below an unstable
interface, potential density referenced to the surface with NEMO's TEOS-10 polynomial), next to the
training data's. The model is the bundled one (4-degree DINO-like grid); where the bundled checkpoint
is not installed, a tiny model is trained on the spot (its samples are noisy, the comparison still holds).

Run it::

    python examples/sample_with_constraints.py              # 16 samples per set, DDIM 50 steps
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/sample_with_constraints.py   # 2 samples, 20 steps
"""

from __future__ import annotations

import os

import numpy as np

import xoceandiff
from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model


def main(tiny: bool = False) -> None:
    n, steps = (2, 20) if tiny else (16, 50)
    data = xoceandiff.datasets.dino(n=8 if tiny else 200, resolution=BUNDLED_RESOLUTION, seed=0)
    model = bundled_model()

    settings = {
        "no constraint": [],
        "zero_mean + border_zero_gradient": ["zero_mean", "border_zero_gradient"],
        "... + stable_stratification": ["zero_mean", "border_zero_gradient", "stable_stratification"],
    }
    errors = {"training data": data.oceandiff.density_errors().values}
    sets = {}
    for label, constraints in settings.items():
        samples = data.oceandiff.sample(n, constraints, model=model, sampler="ddim", steps=steps, seed=0,
                                        progress=False)
        sets[label] = samples
        errors[label] = samples.oceandiff.density_errors().values
    print(f"\ndensity errors (% of ocean volume), {n} samples per set, DDIM {steps} steps:")
    for label, values in errors.items():
        print(f"  {label:36s} {values.mean():8.3f} +- {values.std():.3f}")
    for label, samples in sets.items():  # every ocean cell of a usable state holds a finite value
        bad = int((~np.isfinite(samples.toce) & data.tmask).sum() + (~np.isfinite(samples.soce) & data.tmask).sum())
        print(f"  {label:36s} non-finite ocean values: {bad}")

    # What zero_mean holds: the area-weighted ocean mean of each kept level (here the surface).
    area = data.e1t * data.e2t
    for label in ("no constraint", "zero_mean + border_zero_gradient"):
        surface = sets[label].toce.isel(z_c=0).weighted(area).mean(("y_c", "x_c"))
        print(f"surface mean temperature, {label}: {float(surface.mean()):.3f} degC")
    # zero_mean's target: the training data's area-weighted level means, on the model card
    # (older checkpoints without them: the normaliser's offsets, the plain means of the std schemes).
    card = model.card
    if card.training_means:
        print(f"surface mean temperature, zero_mean's target (training data): {card.training_means['toce'][0]:.3f} degC")
    elif card.normaliser.scheme.endswith("std"):
        print(f"surface mean temperature, zero_mean's target (training data): {card.normaliser.offset['toce'][0]:.3f} degC")

    # Reproducibility: sample i depends only on (seed, i), not on how many samples are drawn with it.
    alone = data.oceandiff.sample(1, settings["zero_mean + border_zero_gradient"], model=model, sampler="ddim",
                                  steps=steps, seed=0, progress=False)
    difference = np.nanmax(np.abs(alone.toce.values[0] - sets["zero_mean + border_zero_gradient"].toce.values[0]))
    print(f"sample 0 drawn alone vs in a batch of {n}: max |difference| = {difference:.2e} degC")
    print(f"provenance: {sets['... + stable_stratification'].attrs['constraints']!r}, "
          f"sampler {sets['... + stable_stratification'].attrs['sampler']}")


if __name__ == "__main__":
    main(tiny=os.environ.get("XOCEANDIFF_EXAMPLE_TINY") == "1")
