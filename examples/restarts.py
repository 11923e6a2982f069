"""Write generated states as NEMO restarts and initial states, and check them as NEMO would read them.

:func:`xoceandiff.restart.to_restart` writes one restart per sample (``tn``, ``sn``, ``sshn``, the
"before" copies for NEMO 4.x, velocities at rest, the calendar scalars), with ``time_counter``
UNLIMITED, float64 fields, land 0 and no ``_FillValue``, plus ``namelist_restart.txt`` with the
settings that start NEMO from them. :func:`xoceandiff.restart.check_restart` lists every way a file
breaks NEMO's reading rules; a file written by a plain ``xarray.Dataset.to_netcdf`` shows what it catches.
:func:`xoceandiff.restart.to_initial_state` writes the land-filled files of ``ln_tsd_init`` instead.

Run it::

    python examples/restarts.py                 # 4 samples, NEMO 4.2 and 5.0 restarts
    XOCEANDIFF_EXAMPLE_TINY=1 python examples/restarts.py   # 2 samples, 10 sampling steps
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import xarray as xr

import xoceandiff
from xoceandiff.pretrained import BUNDLED_RESOLUTION, bundled_model
from xoceandiff.restart import check_restart, to_initial_state, to_restart


def main(tiny: bool = False) -> None:
    out = Path("example_outputs") / "restarts"
    shutil.rmtree(out, ignore_errors=True)
    n, steps = (2, 10) if tiny else (4, 50)
    data = xoceandiff.datasets.dino(n=8, resolution=BUNDLED_RESOLUTION, seed=0)
    # Write the grid as NEMO's mesh_mask.nc: restarts are checked against the configuration's grid file.
    mesh_mask = data.isel(t=slice(0, 1)).oceandiff.to_nemo_files(out / "config")["mesh_mask"]
    samples = data.oceandiff.sample(n, ["zero_mean", "border_zero_gradient"], model=bundled_model(),
                                    sampler="ddim", steps=steps, seed=0, progress=False)

    # One restart per sample, for NEMO 4.2 (leapfrog: now and before fields).
    paths = to_restart(samples, out / "nemo42", mesh_mask=mesh_mask, nemo_version="4.2", kt=0)
    for path in paths:
        problems = check_restart(path, mesh_mask, nemo_version="4.2")
        print(f"{path.name}: {len(problems)} problems")
    with xr.open_dataset(paths[0]) as restart:
        print(f"variables: {sorted(restart.data_vars)}")
        print(f"tn: dims {restart.tn.dims}, dtype {restart.tn.dtype}, land value {float(restart.tn.values[0, -1, 0, 0])}")
    print("namelist settings (namelist_restart.txt):")
    print((out / "nemo42" / "namelist_restart.txt").read_text())

    # NEMO 5.0 (RK3) reads the "now" fields only.
    (path5,) = to_restart(samples.isel(sample=[0]), out / "nemo50", mesh_mask=mesh_mask, nemo_version="5.0")
    print(f"NEMO 5.0: {path5.name}: {len(check_restart(path5, mesh_mask, nemo_version='5.0'))} problems")

    # The same fields written by a plain xarray to_netcdf (land NaN, default encoding): what NEMO refuses.
    with xr.open_dataset(paths[0]) as restart:
        plain = xr.Dataset({name: restart[name].variable.to_base_variable() for name in restart.data_vars})
    plain = plain.load()
    plain["tn"] = plain.tn.where(plain.tn != 0)  # land as NaN, as in the canonical dataset
    plain.to_netcdf(out / "plain_xarray.nc")
    problems = check_restart(out / "plain_xarray.nc", mesh_mask, nemo_version="4.2")
    print(f"plain xarray file: {len(problems)} problems, among them:")
    for problem in problems:
        if problem.startswith(("tn:", "dimension")):
            print(f"  - {problem}")

    # Initial-state files for ln_tsd_init = .true. (land filled from the nearest ocean cells).
    files = to_initial_state(samples, out / "initial_state", index=0)
    print(f"initial state: {', '.join(p.name for p in files)}")


if __name__ == "__main__":
    main(tiny=os.environ.get("XOCEANDIFF_EXAMPLE_TINY") == "1")
