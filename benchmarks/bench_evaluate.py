"""How long `evaluate` takes on ten members (and ten reference members) of GYRE runs.

The runs are made by the tests' NEMO stand-in (`tests/standin/nemo_standin.py`): each 2160 steps with restart
dumps at steps 60 and 2160 and a `run.stat` line per step, as a one-year GYRE run writes. Only `evaluate` is
timed (reading 40 dumps, 20 start restarts and 20 run.stat files; the table; with and without the figures).

Run from the repository root, alone on the machine::

    python benchmarks/bench_evaluate.py | tee benchmarks/results/bench_evaluate.txt
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, table

import xoceandiff
from xoceandiff.ensemble import make_ensemble
from xoceandiff.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
GYRE = ROOT / "tests" / "data" / "gyre"
MESH = GYRE / "mesh_mask.nc"
MEMBERS = 10


def main() -> None:
    header("evaluate on ten GYRE members and ten reference members")
    data = xoceandiff.open_nemo(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc")), mesh_mask=MESH)
    states = data.isel(t=[i % data.sizes["t"] for i in range(MEMBERS)])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exp = root / "EXP00"
        exp.mkdir()
        (exp / "namelist_cfg").write_text("&namrun\n cn_exp = 'GYRE'\n nn_it000 = 1\n nn_itend = 2160\n"
                                          " nn_leapy = 30\n nn_date0 = 590101\n/\n&namdom\n rn_Dt = 14400.\n/\n")
        shutil.copy(ROOT / "tests" / "standin" / "nemo_standin.py", exp / "nemo")
        for label in ("runs", "reference"):
            make_ensemble(states, exp, root / label, mesh_mask=MESH, dumps=(60, 2160), scheduler="shell",
                          nemo_command=f"{sys.executable} ./nemo")
            subprocess.run(["bash", str(root / label / "run_ensemble.sh")], check=True)
        rows = []
        for figures in (False, True):
            start = time.perf_counter()
            result = evaluate(root / "runs", root / "reference", mesh_mask=MESH,
                              out=root / f"eval{int(figures)}" if figures else None)
            rows.append(("with files and figures" if figures else "table only", f"{time.perf_counter() - start:.2f} s",
                         len(result.samples) + len(result.reference)))
    table(rows, ("evaluate", "wall time", "members read"))


if __name__ == "__main__":
    main()
