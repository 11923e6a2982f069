"""Train a denoiser on the embedded DINO-like data, with checkpoints, a wall-time stop and a resume.

The run is split in two calls to show what a batch job under a wall-time limit does: the first call
stops after half the steps (``stop_after``) and leaves ``model/`` and ``training_state/`` in the
checkpoint folder; the second call, with the same arguments, resumes from there (same optimiser,
learning-rate schedule and random state) and finishes the run. The saved model is then loaded back
with :func:`xoceandiff.model.load_model`, which checks the sha256 of its weights.

The same run from the command line (``--out`` is the checkpoint folder, resumed if it holds a state)::

    xoceandiff train --data dino --dino-resolution 4 --out run/ --preset small --steps 400

Run it::

    python examples/train_model.py                 # "small" preset, 400 steps (minutes on a CPU)
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/train_model.py   # "tiny" preset, 6 steps
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import xoceandiff
from xoceandiff.model import load_model


def main(tiny: bool = False) -> None:
    out = Path("example_outputs") / "train_model"
    shutil.rmtree(out, ignore_errors=True)  # start afresh: an existing state would be resumed
    preset, steps, n = ("tiny", 6, 8) if tiny else ("small", 400, 200)
    data = xoceandiff.datasets.dino(n=n, resolution=4.0, seed=0, chunks=8)
    settings = {"steps": steps, "batch_size": 4 if tiny else 8, "seed": 0,
                "checkpoint_dir": out, "device": "cpu", "progress": not tiny}

    # First call: stops after half the steps, as a job killed by its wall-time limit would.
    first = data.oceandiff.train(preset, stop_after=steps // 2, **settings)
    record = json.loads((out / "training_state" / "state.json").read_text())
    print(f"first call: stopped at step {record['step']} of {steps}; checkpoint folder holds "
          f"{sorted(p.name for p in out.iterdir())}")
    print(f"model: '{preset}' preset, {first.n_parameters} parameters, "
          f"{first.channels} channels of {first.sample_size[0]} x {first.sample_size[1]}")

    # Second call, same arguments: resumes from training_state/ and finishes the run.
    model = data.oceandiff.train(preset, **settings)
    training = model.card.training
    print(f"second call: resumed and finished, steps_done: {training['steps_done']}")
    print(f"final loss: {training['final_loss']:.4f}")
    for step, loss in training["loss_history"][-3:]:
        print(f"  loss at step {step}: {loss:.4f}")

    # The checkpoint is self-contained: weights (safetensors), config.json with the layout,
    # normalisation, grid fingerprint and the training record.
    again = load_model(out / "model")
    print(f"checkpoint: {out / 'model'} ({', '.join(sorted(p.name for p in (out / 'model').iterdir()))})")
    print(f"weights sha256: {again.checkpoint_hash[:16]}...; model card: {again.card.layout.channels} channels, "
          f"grid {again.card.grid_shape}, trained {again.card.training['steps_done']} steps")
    print(f"samples from this model: data.oceandiff.sample(4, model={str(out / 'model')!r})")


if __name__ == "__main__":
    main(tiny=os.environ.get("XOCEANDIFF_EXAMPLE_TINY") == "1")
