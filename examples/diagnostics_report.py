"""The paper's table of physical metrics and the comparison figures, for two sample sets.

:func:`xoceandiff.report.report` computes, for the training data and each sample set, the per-record
metrics of :func:`xoceandiff.diagnostics.diagnostics` (Bottom-Water and Deep-Water box means of
temperature and salinity, density errors, profiles, surface means) in one dask computation, plus each
set's diversity and its profile distance to the data. It prints the table as Markdown (cells
"mean ± std" over the records) and writes ``table.md``, ``table.tex``, ``metrics.csv`` and
``metrics.nc``. :func:`xoceandiff.plotting.plot_all` draws surface maps, zonal sections, profile
envelopes, metric histograms and the map of unstable interfaces as PNGs.

The same from the command line::

    xoceandiff diagnose samples.nc --reference dino --out report/

Run it::

    python examples/diagnostics_report.py             # 200 data snapshots, 16 samples per set
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/diagnostics_report.py   # 4 snapshots, 2 samples
"""

from __future__ import annotations

import os
from pathlib import Path

import xoceandiff
from xoceandiff.plotting import plot_all
from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model
from xoceandiff.report import report


def main(tiny: bool = False) -> None:
    out = Path("example_outputs") / "diagnostics_report"
    n_data, n, steps = (4, 2, 5) if tiny else (200, 16, 50)
    data = xoceandiff.datasets.dino(n=n_data, resolution=BUNDLED_RESOLUTION, seed=0)
    model = bundled_model()
    sets = {
        label: data.oceandiff.sample(n, constraints, model=model, sampler="ddim", steps=steps, seed=0, progress=False)
        for label, constraints in (("No constraint", []), ("Constraint", ["zero_mean", "border_zero_gradient"]))
    }

    table = report(data, sets, out=out / "report", overwrite=True)
    print(table.to_markdown())
    summary = table.summary()  # mean and std over records of every scalar metric, per set
    for name in table.sources:
        row = summary.sel(set=name)
        print(f"{name}: Bottom-Water T {float(row.BWbox_toce_mean):.3f} degC, "
              f"density errors {float(row.check_density_mean):.4f} %")
    print("files:", ", ".join(f"{key}={path.name}" for key, path in table.paths.items()))

    # One metric by hand: the per-record density errors of the constrained set.
    errors = sets["Constraint"].oceandiff.density_errors().values
    print(f"density errors per constrained sample (%): {', '.join(f'{e:.3f}' for e in errors)}")

    figures = plot_all(data, sets, out / "figures", report=table, n_maps=1 if tiny else 3, overwrite=True)
    print(f"{len(figures)} figures: {', '.join(p.name for p in figures)}")


if __name__ == "__main__":
    main(tiny=os.environ.get("XOCEANDIFF_EXAMPLE_TINY") == "1")
