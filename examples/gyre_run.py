"""A real NEMO run end to end: GYRE (NEMO 5.0, IOIPSL, EOS-80) from its output files to NEMO 5.0 restarts.

Opens NEMO's own output as it is, trains a model on it, samples on the grid the checkpoint carries,
compares the samples with the run (EOS-80 densities, since the run's salinity is practical) and writes
restarts for GYRE's 4 h time step. See docs/guide/your-nemo-run.md.

Run it::

    python examples/gyre_run.py [FOLDER]     # FOLDER holds GYRE_5d_*_grid_T.nc and mesh_mask.nc
                                               # (default ../shared/data/gyre); 300 steps, ~2 min
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/gyre_run.py   # the 4-record test fixture, seconds
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import xoceandiff
from xoceandiff.report import report
from xoceandiff.restart import check_restart, to_restart


def _folder(tiny: bool) -> Path:
    """The GYRE files: the command line's folder, else the shared run (the test fixture when tiny)."""
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    root = Path(__file__).resolve().parents[1]
    return root / "tests" / "data" / "gyre" if tiny else root.parent / "shared" / "data" / "gyre"


def main(tiny: bool = False) -> None:
    folder = _folder(tiny)
    out = Path("example_outputs") / "gyre"
    shutil.rmtree(out, ignore_errors=True)
    steps, n = (2, 2) if tiny else (300, 8)
    (grid_t,) = sorted(folder.glob("GYRE_5d_*_grid_T.nc"))
    mesh = folder / "mesh_mask.nc"

    ds = xoceandiff.open_nemo(grid_t, mesh_mask=mesh)
    print(f"opened {grid_t.name}: {ds.sizes['t']} records, soce is {ds.soce.attrs['standard_name']} "
          f"(units {ds.soce.attrs['units']!r}), toce is {ds.toce.attrs['standard_name']}")

    start = time.perf_counter()
    model = ds.oceandiff.train("tiny" if tiny else "medium", steps=steps, lr=1e-3, levels="all", background=True,
                               prediction_type="sample", ema_decay=None if tiny else 0.999, seed=0,
                               checkpoint_dir=out / "run", progress=False)
    print(f"trained {steps} steps in {time.perf_counter() - start:.0f} s; the card: salinity "
          f"{model.card.salinity}, grid {model.card.grid_shape}")

    # No data needed to sample: the checkpoint carries its grid.
    grid = model.card.grid
    samples = grid.oceandiff.sample(n, ["zero_mean", "border_zero_gradient"], model=model, seed=0,
                                    steps=5 if tiny else 50, progress=False)
    rep = report(reference=ds, samples={"Samples": samples}, out=out / "report")
    print(rep.to_markdown())

    if tiny:  # two steps of training make no plausible ocean: show the writer on two records of the run
        samples = ds.isel(t=[0, 1]).rename(t="sample")
    paths = to_restart(samples, out / "restarts", mesh_mask=mesh, rdt=14400.0, ndastp=590101)
    problems = [check_restart(path, mesh) for path in paths]
    print(f"wrote {len(paths)} NEMO {5.0} restarts to {out / 'restarts'}; check_restart problems: "
          f"{sum(map(len, problems))}")


if __name__ == "__main__":
    main(tiny=bool(os.environ.get("XOCEANDIFF_EXAMPLE_TINY")))
