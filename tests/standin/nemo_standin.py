#!/usr/bin/env python3
"""A stand-in for NEMO in test ensembles: run in a member folder, it writes what NEMO writes, with known numbers.

It reads ``namelist_cfg`` (``cn_ocerst_in``, ``nn_it000``, ``nn_itend``, ``nn_stocklist``, ``cn_exp``) and the
restart, then writes ``run.stat`` (one line per step, NEMO's format), ``ocean.output`` and, at each step of
``nn_stocklist``, a restart dump ``<cn_exp>_<kt:08d>_restart.nc`` whose fields are the start's plus a known change:
``tn + 0.01 * sqrt(s) * pattern``, ``sn - 0.001 * sqrt(s) * pattern``, ``un = vn = 1e-4 * sqrt(s) * pattern`` with
``s`` the steps since the start and ``pattern`` a fixed field of the cell indices. With a file ``FAIL_AT`` holding
a step, it stops there as NEMO does when |U| exceeds 10 m/s (the E R R O R block in ocean.output, exit code 1).
Only numpy and netCDF4: what a compute node of the test cluster has.
"""

import re
import sys
from pathlib import Path

import netCDF4
import numpy as np


def namelist_value(text, name):
    match = re.search(rf"(?im)^[^!\n]*\b{name}\s*=\s*([^!\n]+)", text)
    if match is None:
        return None
    value = match.group(1).strip().rstrip(",")
    return value.strip("'\"")


def pattern(shape):
    k, j, i = np.indices(shape)
    return np.sin(0.3 * i + 0.2 * j) * np.cos(0.1 * k)


def main():
    folder = Path.cwd()
    text = (folder / "namelist_cfg").read_text()
    first, last = int(namelist_value(text, "nn_it000")), int(namelist_value(text, "nn_itend"))
    dumps = [int(v) for v in (namelist_value(text, "nn_stocklist") or "").split(",") if v.strip()]
    exp = namelist_value(text, "cn_exp") or "NEMO"
    stem = namelist_value(text, "cn_ocerst_in")
    fail = int((folder / "FAIL_AT").read_text()) if (folder / "FAIL_AT").is_file() else None
    with netCDF4.Dataset(folder / f"{stem}.nc") as nc:
        nc.set_auto_mask(False)
        tn, sn = (np.asarray(nc[name][0], dtype=np.float64) for name in ("tn", "sn"))
    ocean = tn != 0.0
    shape = tn.shape
    wave = pattern(shape) * ocean
    output = ["", "                       NEMO stand-in for xoceandiff tests", ""]
    with open(folder / "run.stat", "w") as stat:
        for kt in range(first, last + 1):
            steps = kt - first + 1
            u_max = 1e-4 * np.sqrt(steps) if fail is None or kt < fail else 12.5
            stat.write(f" it :{kt:8d}    |ssh|_max:  0.1000000000000000D+00 |U|_max: {u_max:23.16E} "
                       f"S_min:  0.3400000000000000D+02 S_max:  0.3600000000000000D+02\n".replace("E", "D"))
            if fail is not None and kt == fail:
                output += ["", " ===>>> : E R R O R", "         ===========", "",
                           " stp_ctl: |ssh| > 20 m  or  |U| > 10 m/s  or  S <= 0  or  S >= 100  or  NaN encounter in the tests",
                           " ======= ", f" kt={kt:8d}   |U|   max:  12.50    , at  i j k:    10   12    1", ""]
                (folder / "ocean.output").write_text("\n".join(output) + "\n")
                sys.exit(1)
            if kt in dumps:
                grow = np.sqrt(steps)
                with netCDF4.Dataset(folder / f"{exp}_{kt:08d}_restart.nc", "w") as nc:
                    nc.createDimension("x", shape[2])
                    nc.createDimension("y", shape[1])
                    nc.createDimension("nav_lev", shape[0])
                    nc.createDimension("time_counter", None)
                    for name, values in (("tn", tn + 0.01 * grow * wave), ("sn", sn - 0.001 * grow * wave),
                                         ("un", 1e-4 * grow * wave), ("vn", 1e-4 * grow * wave)):
                        var = nc.createVariable(name, "f8", ("time_counter", "nav_lev", "y", "x"))
                        var[0] = values
                    nc.createVariable("kt", "f8", ())[...] = kt
    output += [" AAAAAAAA", "", f" run stop at nitend = {last} with nstop = 0"]
    (folder / "ocean.output").write_text("\n".join(output) + "\n")


if __name__ == "__main__":
    main()
