"""The ``xoceandiff`` command line: ``demo``, ``train`` (and more as the package grows).

Each subcommand parses its arguments and calls the library; no logic lives here.
"""

from __future__ import annotations

import argparse
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
    command = "xoceandiff " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
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
        drop_nan_snapshots=args.drop_nan_snapshots,
        progress=not args.no_progress,
        record={"command": command, "data": " ".join(args.data)},
    )
    record = model.metadata["training"]
    print(
        f"trained {record['steps']} steps in {time.perf_counter() - start:.0f} s, final loss "
        f"{record['final_loss']:.4f}\ncheckpoint: {Path(args.out) / MODEL_SUBDIR}"
    )
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
    train.add_argument("--preset", default="small", help="paper, small or tiny (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=8, help="global batch size (default: %(default)s)")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    train.add_argument("--levels", default="every-other", help="all, every-other or a comma list (default: %(default)s)")
    train.add_argument("--scheme", default="3-std", help="normalisation scheme (default: %(default)s)")
    train.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights with this decay")
    train.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU if any)")
    train.add_argument("--drop-nan-snapshots", action="store_true", help="drop snapshots with NaN on ocean cells")
    train.add_argument("--dino-n", type=int, default=200, help="snapshots of the embedded dataset (default: %(default)s)")
    train.add_argument("--dino-resolution", type=float, default=1.0, help="its resolution in degrees (default: %(default)s)")
    train.add_argument("--data-seed", type=int, default=0, help="its seed (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xoceandiff`` command."""
    from .errors import XOceanDiffError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (XOceanDiffError, FileNotFoundError) as err:
        print(f"xoceandiff {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
