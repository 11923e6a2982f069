"""Re-save the bundled checkpoint in the current format, with the card facts its training data give.

The weights and the training record stay as trained (see README, "The bundled model"); what is added is
what newer cards record and the training data determine exactly: the per-level training ranges, the
salinity kind and the grid kit. The training data are regenerated from the provenance the checkpoint
records (``xoceandiff.datasets.dino(n, resolution, seed)``), so nothing is guessed.

Run from the repository root::

    python tools/upgrade_bundled_checkpoint.py
"""

from __future__ import annotations

import dataclasses

import xoceandiff
from xoceandiff.card import ModelCard
from xoceandiff.pretrained import bundled_checkpoint, bundled_model


def main() -> None:
    model = bundled_model()
    record = model.card.training
    n = int(record["command"].split("--dino-n")[1].split()[0])
    data = xoceandiff.datasets.dino(n=n, resolution=model.card.dataset["dino_resolution"],
                                    seed=model.card.dataset["dino_seed"])
    fresh = ModelCard.from_dataset(data)
    # the layout, normaliser and means must be the ones the model was trained with: check, do not replace
    assert fresh.layout == model.card.layout and fresh.normaliser == model.card.normaliser
    model.card = dataclasses.replace(model.card, training_min=fresh.training_min, training_max=fresh.training_max,
                                     salinity=fresh.salinity, grid_kit=fresh.grid_kit)
    path = model.save(bundled_checkpoint(), overwrite=True)
    print(f"re-saved {path}: checkpoint sha256 {model.checkpoint_hash}")


if __name__ == "__main__":
    main()
