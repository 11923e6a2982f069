"""Fidelity of the bundled GYRE model against the shared NEMO 5.0 GYRE run (the 'States NEMO can start from
quietly' acceptance measures).

20 samples at the GYRE demo's settings (DDIM 50, seed 0, ``zero_mean`` + ``border_zero_gradient`` resting below
timestep 300 and applied once at the end, level means of one training record per sample, each sample generated for
that record's date), without and with ``convective_adjustment``, and, for comparison, with the
training mean as the single level-mean target; each measured by :func:`xoceandiff.fidelity.fidelity` against
the 576 five-day means the model was trained on. Then the convective-adjustment distance of the first set
(no convective constraint) for four more seeds: the top band is the one close to its 0.002 °C line.

Run from the repository root, alone on the machine (about three minutes on 2 cores)::

    python benchmarks/bench_gyre_fidelity.py [GYRE_FOLDER [CHECKPOINT]] | tee benchmarks/results/bench_gyre_fidelity.txt

(CHECKPOINT: another model than the bundled GYRE one, e.g. a candidate before it is bundled.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import header, table

import xoceandiff
from xoceandiff.canonical import DEPTH_BANDS
from xoceandiff.demo import DEMO_CONSTRAINTS, DEMO_SAMPLER, DEMO_STEPS, GYRE_FREE_BELOW
from xoceandiff.fidelity import convective_distance, fidelity
from xoceandiff.pretrained import bundled_model

N = 20
MORE_SEEDS = (1, 2, 3, 4)


def main() -> None:
    header("Fidelity of the bundled GYRE model against the GYRE run")
    root = Path(__file__).resolve().parents[1]
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data" / "gyre"
    (grid_t,) = sorted(folder.glob("GYRE_5d_*_grid_T.nc"))
    data = xoceandiff.open_nemo(grid_t, mesh_mask=folder / "mesh_mask.nc").load()
    if len(sys.argv) > 2:
        from xoceandiff.model import load_model

        model = load_model(sys.argv[2])
    else:
        model = bundled_model(config="gyre")
    print(f"# model: {model.checkpoint_path} (sha256 {model.checkpoint_hash[:12]})")
    grid = model.card.grid
    settings = {
        "records": (list(DEMO_CONSTRAINTS), "records"),
        "records + convection": (list(DEMO_CONSTRAINTS) + ["convective_adjustment"], "records"),
        "training mean": (list(DEMO_CONSTRAINTS), "training"),
    }
    results = {}
    for label, (constraints, level_means) in settings.items():
        samples = grid.oceandiff.sample(N, constraints, model=model, sampler=DEMO_SAMPLER, steps=DEMO_STEPS, seed=0,
                                        progress=False, level_means=level_means, free_below=GYRE_FREE_BELOW)
        results[label] = fidelity(samples, data).compute()
    print(f"\n{N} samples per set, {DEMO_SAMPLER} {DEMO_STEPS} steps, seed 0; ratios are samples over data\n")
    rows = []
    for measure, fields in (("spread_ratio", ("toce", "soce")), ("gradient_variance_ratio", ("toce", "soce")),
                            ("convective_distance_samples", ("toce",)), ("convective_distance_data", ("toce",)),
                            ("convective_distance_ratio", ("toce",))):
        for name in fields:
            for band in DEPTH_BANDS:
                key = f"{measure}_{name}_{band}"
                rows.append((key, *(f"{float(r[key]):.4g}" for r in results.values())))
    for who in ("samples", "data"):
        for band in DEPTH_BANDS:
            key = f"density_errors_{who}_{band}"
            rows.append((key + " (%)", *(f"{float(r[key]):.4g}" for r in results.values())))
    for key in ("range_violations_toce", "range_violations_soce", "nearest_distance_samples", "nearest_distance_data",
                "novelty_ratio", "ssh_anomaly_samples", "ssh_anomaly_data", "ssh_balance_samples", "ssh_balance_data",
                "ssh_balance_ratio"):
        rows.append((key, *(f"{float(r[key]):.4g}" for r in results.values())))
    table(rows, ("measure", *results))

    constraints, level_means = settings["records"]
    print(f"\nconvective-adjustment distance of T (degC), {N} samples, constraints {constraints}, by seed\n")
    rows = [("0", *(f"{float(results['records'][f'convective_distance_samples_toce_{b}']):.3g}" for b in DEPTH_BANDS))]
    for seed in MORE_SEEDS:
        samples = grid.oceandiff.sample(N, constraints, model=model, sampler=DEMO_SAMPLER, steps=DEMO_STEPS, seed=seed,
                                        progress=False, level_means=level_means, free_below=GYRE_FREE_BELOW)
        distance = convective_distance(samples, data).compute()
        rows.append((str(seed), *(f"{float(distance[f'convective_distance_samples_toce_{b}']):.3g}" for b in DEPTH_BANDS)))
    table(rows, ("seed", *DEPTH_BANDS))


if __name__ == "__main__":
    main()
