"""The ``xoceandiff`` command line: ``demo``, ``train`` (and more as the package grows).

Each subcommand parses its arguments and calls the library; no logic lives here.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _load_data(data: Sequence[str], mesh_mask: str | None, dino_n: int, dino_resolution: float, seed: int):
    import xoceandiff

    if list(data) == ["dino"]:
        return xoceandiff.datasets.dino(n=dino_n, resolution=dino_resolution, seed=seed)
    return xoceandiff.open_nemo(list(data), mesh_mask=mesh_mask)


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import MODEL_SUBDIR, train

    ds = _load_data(args.data, args.mesh_mask, args.dino_n, args.dino_resolution, args.data_seed)
    command = shlex.join(["xoceandiff", *args.argv])  # the command as given to main(argv), to rerun it
    start = time.perf_counter()
    model = train(
        ds,
        args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        levels=args.levels if args.levels in ("all", "every-other") else [int(v) for v in args.levels.split(",")],
        scheme=args.scheme,
        ema_decay=args.ema_decay,
        background=args.background,
        prediction_type=args.prediction_type,
        drop_nan_snapshots=args.drop_nan_snapshots,
        progress=not args.no_progress,
        record={"command": command, "data": " ".join(args.data)},
    )
    record = model.card.training
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one summary
        return 0
    print(
        f"trained {record['steps']} steps in {time.perf_counter() - start:.0f} s, final loss "
        f"{record['final_loss']:.4f}\ncheckpoint: {Path(args.out) / MODEL_SUBDIR}"
    )
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .model import load_model
    from .parallel import connect, generate_to_netcdf
    from .pretrained import bundled_checkpoint, grid_for

    model = load_model(args.checkpoint or bundled_checkpoint())
    ds = _load_data(args.data, args.mesh_mask, 1, 1.0, 0) if args.data else grid_for(model, args.mesh_mask)
    client = connect(args.scheduler, args.local_workers)
    try:
        out = generate_to_netcdf(
            ds, args.n, args.constraints, out=args.out, model=model, chunks=args.chunks, overwrite=args.overwrite,
            client=client, sampler=args.sampler, steps=args.steps, seed=args.seed, device=args.device,
            resources={"GPU": 1} if args.gpu_resources else None,
        )
    finally:
        if client is not None:
            client.close()
    print(f"wrote {args.n} samples to {out}")
    return 0


def _open_samples(path: str, grid):
    from .io import open_samples

    return open_samples(path, grid=grid)


def _reference(args: argparse.Namespace, samples_path: str):
    import xarray as xr

    import xoceandiff

    if args.reference and list(args.reference) != ["dino"]:
        return xoceandiff.open_nemo(list(args.reference), mesh_mask=args.mesh_mask)
    with xr.open_dataset(samples_path) as raw:  # sample files record no dataset: their grid tells
        resolution = xoceandiff.datasets.dino_resolution_of(raw.sizes)
    return xoceandiff.datasets.dino(n=args.dino_n, resolution=resolution, seed=0)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from .plotting import plot_all
    from .report import report

    reference = _reference(args, args.samples[0].rpartition("=")[2])
    sets = {}
    for item in args.samples:
        name, _, path = item.rpartition("=")
        sets[name or Path(path).stem] = _open_samples(path, reference)
    rep = report(reference=reference, samples=sets, out=args.out, overwrite=args.overwrite, eos=args.eos,
                 depth_box=args.depth_box)
    print(rep.to_markdown())
    figures = [] if args.no_figures else plot_all(reference, sets, Path(args.out) / "figures", report=rep,
                                                   overwrite=args.overwrite, eos=args.eos, depth_box=args.depth_box)
    print(f"\nreport written to {args.out} ({len(figures)} figures)")
    return 0


def _date(text: str) -> int:
    """``--date YYYYMMDD`` (``00510101`` for year 51) as NEMO's integer ndastp."""
    if not (text.isdigit() and len(text) == 8):
        raise argparse.ArgumentTypeError(f"expected a date YYYYMMDD (e.g. 19000101 or 00510101), found {text!r}")
    return int(text)


def _cmd_restart(args: argparse.Namespace) -> int:
    from .nemo import open_grid
    from .restart import to_restart

    grid = open_grid(args.mesh_mask) if args.mesh_mask else _reference(args, args.samples)
    samples = _open_samples(args.samples, grid)
    paths = to_restart(
        samples, args.out, mesh_mask=args.mesh_mask, template=args.template, namelist=args.namelist,
        nemo_version=args.nemo_version, kt=args.kt, ndastp=args.date, rdt=args.rdt, velocities=args.velocities,
        overwrite=args.overwrite,
    )
    namelist = Path(args.out) / "namelist_restart.txt"
    settings = [line[2:] for line in namelist.read_text().splitlines()[3:6]]  # version, rdt, date: and whence
    print(f"wrote {len(paths)} restart files to {args.out}\n  " + "\n  ".join(settings) + f"\nsettings: {namelist}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, n=args.n, sampler=args.sampler, steps=args.steps, progress=not args.no_progress,
             overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xoceandiff",
        description="Generate NEMO ocean states (toce, soce, ssh) with diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="sample the bundled model on the embedded DINO-like data, write files and a report")
    demo.add_argument("--out", default="xoceandiff-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--n", type=int, default=8, help="samples per setting (default: %(default)s)")
    demo.add_argument("--sampler", default=None, help="ddpm, ddim or dpm (default: the documented fast sampler)")
    demo.add_argument("--steps", type=int, default=None, help="sampling steps")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train", help="train a denoiser on NEMO output or on the embedded DINO-like data")
    train.add_argument("--data", nargs="+", required=True, help="NEMO output files, or 'dino' for the embedded dataset")
    train.add_argument("--mesh-mask", default=None, help="mesh_mask.nc or domain_cfg.nc (default: beside the data)")
    train.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a training state)")
    train.add_argument("--steps", type=int, default=1000, help="optimiser steps (default: %(default)s)")
    train.add_argument("--preset", default="small", help="paper, medium, small or tiny (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=8, help="global batch size (default: %(default)s)")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    train.add_argument("--levels", default="every-other", help="all, every-other or a comma list (default: %(default)s)")
    train.add_argument("--scheme", default="3-std", help="normalisation scheme (default: %(default)s)")
    train.add_argument("--background", action="store_true",
                       help="diffuse anomalies about the training climatology (see training.prepare_model)")
    train.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "sample", "v_prediction"],
                       help="what a new network learns to output (default: %(default)s, the paper's)")
    train.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights with this decay")
    train.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU if any)")
    train.add_argument("--drop-nan-snapshots", action="store_true", help="drop snapshots with NaN on ocean cells")
    train.add_argument("--dino-n", type=int, default=200, help="snapshots of the embedded dataset (default: %(default)s)")
    train.add_argument("--dino-resolution", type=float, default=1.0, help="its resolution in degrees (default: %(default)s)")
    train.add_argument("--data-seed", type=int, default=0, help="its seed (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=_cmd_train)

    sample = sub.add_parser("sample", help="generate samples chunk by chunk (resumable) into a CF NetCDF file")
    sample.add_argument("--checkpoint", default=None, help="model checkpoint folder (default: the bundled model)")
    sample.add_argument("--n", type=int, required=True, help="number of samples")
    sample.add_argument("--chunks", type=int, required=True, help="samples per task / part file")
    sample.add_argument("--constraints", nargs="*", default=[], help="constraint names, applied in order")
    sample.add_argument("--out", required=True, help="output NetCDF file")
    sample.add_argument("--sampler", default="ddim", help="ddpm, ddim or dpm (default: %(default)s)")
    sample.add_argument("--steps", type=int, default=None, help="sampling steps (default: 1000 ddpm, 50 ddim, 25 dpm)")
    sample.add_argument("--seed", type=int, default=0, help="sample i uses the random stream (seed, i)")
    sample.add_argument("--data", nargs="+", default=None, help="NEMO files giving the grid (default: the DINO-like grid)")
    sample.add_argument("--mesh-mask", default=None,
                        help="mesh_mask.nc or domain_cfg.nc of --data, or alone: the grid to sample on "
                             "(default: the grid the checkpoint carries)")
    sample.add_argument("--device", default=None, help="cpu or cuda (default: cuda if the worker has one)")
    where = sample.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, help="address of a running dask scheduler (e.g. tcp://host:8786)")
    where.add_argument("--local-workers", type=int, default=None, help="start a LocalCluster with N worker processes")
    sample.add_argument("--gpu-resources", action="store_true", help="each task needs worker resource GPU=1")
    sample.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sample.set_defaults(func=_cmd_sample)

    diagnose = sub.add_parser("diagnose", help="the paper's diagnostics table, metrics and figures for sample files")
    diagnose.add_argument("samples", nargs="+", help="sample NetCDF files written by xoceandiff (optionally NAME=FILE)")
    diagnose.add_argument("--reference", nargs="+", default=["dino"], help="reference NEMO files, or 'dino' (default)")
    diagnose.add_argument("--mesh-mask", default=None, help="mesh_mask.nc or domain_cfg.nc of --reference")
    diagnose.add_argument("--dino-n", type=int, default=200, help="snapshots of the DINO-like reference (default: %(default)s)")
    diagnose.add_argument("--out", required=True, help="report folder")
    diagnose.add_argument("--eos", default="auto", choices=["auto", "teos10-poly", "eos80-poly", "seos"],
                          help="equation of state; auto: EOS-80 for practical salinity, TEOS-10 for absolute")
    diagnose.add_argument("--depth-box", type=float, default=1500.0, help="box depth in m (default: %(default)s)")
    diagnose.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    diagnose.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    diagnose.set_defaults(func=_cmd_diagnose)

    restart = sub.add_parser("restart", help="write one NEMO restart per sample of a samples file")
    restart.add_argument("samples", help="sample NetCDF file written by xoceandiff")
    restart.add_argument("--mesh-mask", default=None, help="mesh_mask.nc / domain_cfg.nc of the configuration")
    restart.add_argument("--reference", nargs="+", default=["dino"], help=argparse.SUPPRESS)
    restart.add_argument("--dino-n", type=int, default=1, help=argparse.SUPPRESS)
    restart.add_argument("--out", required=True, help="output folder")
    restart.add_argument("--template", default=None,
                         help="an existing restart of the run: every other variable, its version, rdt and calendar")
    restart.add_argument("--namelist", default=None,
                         help="the run's namelist_cfg: rdt from rn_Dt (rn_rdt), date from nn_date0, kt = nn_it000 - 1")
    restart.add_argument("--nemo-version", default=None, choices=["4.0", "4.2", "5.0"],
                         help="NEMO version of the run (default: the template's or namelist's, else 5.0)")
    restart.add_argument("--rdt", type=float, default=None,
                         help="time step in seconds, NEMO's rn_Dt (default: the template's or namelist's, else 3600)")
    restart.add_argument("--date", type=_date, default=None, metavar="YYYYMMDD",
                         help="date of the restart, ndastp (default: the template's, the namelist's nn_date0, "
                              "the state's, else 19000101)")
    restart.add_argument("--kt", type=int, default=None,
                         help="time step of the restart, nn_it000 = kt + 1 (default: the template's or namelist's, else 0)")
    restart.add_argument("--velocities", default=None, help="rest or thermal_wind (default: rest, or the template's)")
    restart.add_argument("--overwrite", action="store_true", help="replace existing files")
    restart.set_defaults(func=_cmd_restart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xoceandiff`` command."""
    from .errors import XOceanDiffError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what `train` records as its command
    try:
        return int(args.func(args) or 0)
    except (XOceanDiffError, FileNotFoundError) as err:
        print(f"xoceandiff {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
