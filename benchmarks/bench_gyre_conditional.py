"""Conditional skill of a GYRE model trained with conditions (day of the year, time in the run).

For days 0, 90, 180 and 270: 20 samples (DDIM 50, seed 0) for that day, measured by
:func:`xoceandiff.fidelity.conditional_skill` against the data's records within 15 days of it: the correlation
of the samples' mean SST anomaly with the data's, and the top-200 m volume-mean T against the data's spread for
that day. Each day is sampled free (no constraint: the network's own skill), with ``zero_mean`` (whose targets
are then the level means of the records nearest the day) and with the demo's ``zero_mean`` +
``border_zero_gradient``, the constraints resting below timestep 300 and applied once at the end (the demo's
``free_below``).
Then the spin-up phase: samples asked for times spread over the last training year, against the last year's
and the whole period's level means, free and with ``zero_mean`` (targets: the records nearest each time), for
two seeds.

Run from the repository root, alone on the machine::

    python benchmarks/bench_gyre_conditional.py [CHECKPOINT [GYRE_FOLDER]] | tee benchmarks/results/bench_gyre_conditional.txt

(CHECKPOINT: default the bundled GYRE model.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _common import header, table

import xoceandiff
from xoceandiff.conditions import record_conditions
from xoceandiff.demo import DEMO_CONSTRAINTS, GYRE_FREE_BELOW
from xoceandiff.fidelity import conditional_skill
from xoceandiff.model import load_model
from xoceandiff.pretrained import bundled_model

N = 20
DAYS = (0, 90, 180, 270)


def _level_means(ds, dim):
    area = (ds.e1t * ds.e2t).where(ds.tmask).fillna(0.0)
    return ((ds.toce.fillna(0.0) * area).sum(("y_c", "x_c")) / area.sum(("y_c", "x_c"))).mean(dim).values


def main() -> None:
    header("Conditional skill on GYRE")
    root = Path(__file__).resolve().parents[1]
    model = load_model(sys.argv[1]) if len(sys.argv) > 1 else bundled_model(config="gyre")
    print(f"# model: {model.checkpoint_path} (sha256 {model.checkpoint_hash[:12]})")
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else root.parent / "shared" / "data" / "gyre"
    (grid_t,) = sorted(folder.glob("GYRE_5d_*_grid_T.nc"))
    data = xoceandiff.open_nemo(grid_t, mesh_mask=folder / "mesh_mask.nc").load()
    grid = model.card.grid
    rows = []
    for day in DAYS:
        for label, constraints in (("free", []), ("zero_mean", ["zero_mean"]),
                                   ("zero_mean + border_zero_gradient", list(DEMO_CONSTRAINTS))):
            samples = grid.oceandiff.sample(N, constraints, model=model, seed=0, progress=False,
                                            condition={"day_of_year": day}, free_below=GYRE_FREE_BELOW)
            skill = conditional_skill(samples, data, day, window=15.0)
            inside = abs(float(skill.upper_t_samples) - float(skill.upper_t_data)) <= float(skill.upper_t_data_std)
            rows.append((day, label, f"{float(skill.sst_anomaly_correlation):.3f}",
                         f"{float(skill.upper_t_samples):.3f}",
                         f"{float(skill.upper_t_data):.3f} ± {float(skill.upper_t_data_std):.3f}",
                         "yes" if inside else "no", f"{float(skill.level_mean_error_toce):.4f}",
                         skill.attrs["data_records"]))
    print(f"\n{N} samples per day, DDIM 50, seed 0, free_below {GYRE_FREE_BELOW}; data: records within 15 days of the day\n")
    table(rows, ("day", "constraints", "SST anomaly corr", "top-200 m T samples", "data (mean ± std)",
                 "within spread", "level-mean RMS error T", "data records"))

    # spin-up phase: the middle of the last training year, free samples
    run_time = record_conditions(data, ["run_time"])[1]["run_time"]
    last_year = np.floor(run_time.max())
    wanted = last_year + (np.arange(N) + 0.5) / N  # the whole last year, one time per sample
    last = _level_means(data.isel(t=np.flatnonzero(np.floor(run_time) == last_year)), "t")
    period = _level_means(data, "t")
    volume = (data.e1t * data.e2t * data.e3t).where(data.tmask).fillna(0.0).sum(("y_c", "x_c")).values
    ocean = volume > 0

    def rms(a, b):
        return float(np.sqrt(np.sum(volume[ocean] * (a[ocean] - b[ocean]) ** 2) / volume[ocean].sum()))

    rows = []
    for seed in (0, 1):
        for label, constraints in (("free", []), ("zero_mean", ["zero_mean"])):
            phase = grid.oceandiff.sample(N, constraints, model=model, seed=seed, progress=False,
                                          condition={"run_time": wanted}, free_below=GYRE_FREE_BELOW)
            means = _level_means(phase, "sample")
            rows.append((label, seed, f"{rms(means, last):.5f}", f"{rms(means, period):.5f}"))
    print(f"\nrun_time spread over the last training year ({last_year:g} to {last_year + 1:g}), {N} samples: "
          "volume-weighted RMS over levels of the level means of T (sample mean) to the data's; the data's last year "
          f"lies {rms(last, period):.5f} °C from the period's\n")
    table(rows, ("constraints", "seed", "to the last year's (°C)", "to the period's (°C)"))


if __name__ == "__main__":
    main()
