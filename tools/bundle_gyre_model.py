"""Train the bundled GYRE model on the shared NEMO 5.0 GYRE run and ship it inside the package.

The training command is run as a user would (``xoceandiff train``) and recorded in the model card; the card also
records the GYRE run's own density errors and convective-adjustment distance by depth band (what
``xoceandiff demo --config gyre`` compares the samples with, offline). The grid travels in the weights file.

Run from the repository root, alone on the machine (about 10 minutes on 2 cores, 26 with one thread)::

    python tools/bundle_gyre_model.py [GYRE_FOLDER]      # default ../shared/data/gyre
    python tools/bundle_gyre_model.py GYRE_FOLDER --from-run RUN   # bundle a run already trained by that command
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import xoceandiff
from xoceandiff.demo import _own_measures
from xoceandiff.model import load_model
from xoceandiff.pretrained import BUNDLED_CONFIGS

RECIPE = ("--steps 3000 --preset medium --levels all --background --prediction-type sample --vertical-differences "
          "--stability-weight 1000 --lr 1e-3 --ema-decay 0.999 --seed 0 --conditions day_of_year run_time --no-progress")


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    args = [a for a in sys.argv[1:] if a != "--from-run"]
    from_run = Path(sys.argv[sys.argv.index("--from-run") + 1]) if "--from-run" in sys.argv else None
    if from_run is not None:
        args.remove(str(from_run))
    folder = Path(args[0]) if args else root.parent / "shared" / "data" / "gyre"
    (grid_t,) = sorted(folder.glob("GYRE_5d_*_grid_T.nc"))
    with tempfile.TemporaryDirectory() as tmp:
        run = from_run or Path(tmp) / "run"
        command = f"xoceandiff train --data {grid_t} --mesh-mask {folder / 'mesh_mask.nc'} --out {run} " + RECIPE
        if from_run is None:
            print(command, flush=True)
            subprocess.run(shlex.split(command), check=True)
        model = load_model(run / "model")
    recorded = shlex.split(model.card.training["command"])
    if recorded[recorded.index("--steps"):] != shlex.split(RECIPE):  # the run must be this recipe's
        raise SystemExit(f"{run}: trained with {' '.join(recorded)}, not with the recipe {RECIPE}")
    data = xoceandiff.open_nemo(grid_t, mesh_mask=folder / "mesh_mask.nc")
    record = dict(model.card.training)
    # the command as a user would type it from the repository root, with the shared data's usual place
    record["command"] = shlex.join(["xoceandiff", "train", "--data", "../shared/data/gyre/" + grid_t.name,
                                    "--mesh-mask", "../shared/data/gyre/mesh_mask.nc", "--out", "gyre-run",
                                    *shlex.split(RECIPE)])
    record["data"] = "../shared/data/gyre/" + grid_t.name
    record["records"] = int(data.sizes["t"])
    record["reference_measures"] = _own_measures(data)
    model.card = model.card.with_training(record)
    target = root / "xoceandiff" / "data" / "pretrained" / BUNDLED_CONFIGS["gyre"]
    path = model.save(target, overwrite=True)
    print(f"saved {path}: checkpoint sha256 {model.checkpoint_hash}; GYRE run's own measures "
          f"{record['reference_measures']}")


if __name__ == "__main__":
    main()
