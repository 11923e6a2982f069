"""Run by tests/test_training.py under torchrun: train a tiny model, write this rank's weights and losses."""

import json
import os
import sys

import safetensors.torch

import xoceandiff
from xoceandiff.training import train

out = sys.argv[1]
ds = xoceandiff.datasets.dino(n=16, resolution=4.0, seed=5, chunks=4)
model = train(ds, "tiny", steps=6, batch_size=4, lr=1e-3, seed=11, progress=False,
              checkpoint_dir=os.path.join(out, "ckpt"))
rank = int(os.environ.get("RANK", "0"))
safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, f"rank{rank}.safetensors"))
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(model.card.training["loss_history"], f)
