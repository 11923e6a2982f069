"""The ``xoceandiff`` command line: ``demo``, ``train``, ``sample``, ``diagnose``, ``restart``.

Each subcommand parses its arguments and calls the library; no logic lives here.

The error contract: every argument that can be checked without loading a model or data is checked
first (numbers, names, devices, addresses, input paths, existing outputs), before torch is imported,
so that a wrong call fails in well under a second. Whatever fails (a bad argument, the library, the
operating system, netCDF/HDF5, torch or dask) ends as one line on stderr,
``xoceandiff CMD: error: <what, which file or option, the fix>``, and exit status 2. ``--debug``
(before or after the subcommand) lets the exception through, with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .conventions import CONSTRAINT_NAMES
from .errors import ConstraintError, InvalidDataError, OutputExistsError, XOceanDiffError

__all__ = ["main", "build_parser", "SAMPLER_NAMES", "PRESET_NAMES"]

SAMPLER_NAMES: tuple[str, ...] = ("ddpm", "ddim", "dpm")
"""The samplers of :data:`xoceandiff.sampling.SAMPLERS`, readable without importing torch."""
PRESET_NAMES: tuple[str, ...] = ("paper", "medium", "small", "tiny")
"""The presets of :data:`xoceandiff.model.PRESETS`, readable without importing torch."""
DEMO_MIN_SAMPLES = 2  # the demo's diversity check needs two samples (xoceandiff.demo checks it too)


# --- argument types: each checks one value, without loading anything -------------------------------------


def _integer(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value

    return parse


_positive_int = _integer(1, "a positive integer (1, 2, ...)")
_non_negative_int = _integer(0, "an integer >= 0")
_demo_n = _integer(DEMO_MIN_SAMPLES, f"an integer >= {DEMO_MIN_SAMPLES} (the diversity check compares samples)")


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, found {text!r}")
    return value


def _decay(text: str) -> float:
    """An argparse type: an EMA decay, strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1 (e.g. 0.999), found {text!r}")
    return value


def _levels(text: str) -> str | list[int]:
    """``--levels``: ``all``, ``every-other`` or a comma list of distinct level indices >= 0."""
    if text in ("all", "every-other"):
        return text
    expected = "'all', 'every-other' or a comma list of level indices >= 0 (e.g. 0,2,4)"
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected {expected}, distinct, found {text!r}")
    return values


_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def _device(text: str) -> str:
    """``--device``: ``cpu``, ``cuda``, ``cuda:K`` or ``mps`` (availability is checked after parsing)."""
    if not _DEVICE_RE.match(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:K (K a GPU index) or mps, found {text!r}")
    return text


_ADDRESS_RE = re.compile(r"^((tcp|tls|ucx|inproc|ws|wss)://)?[A-Za-z0-9._\-\[\]:]*[A-Za-z0-9.\]_\-]:\d{1,5}/?$")


def _scheduler(text: str) -> str:
    """``--scheduler``: an address ``tcp://host:port`` (or ``host:port``, tls://, ucx://), or a scheduler file.

    A scheduler file (``dask scheduler --scheduler-file FILE``) is read here: its ``address`` is returned.
    """
    if "://" not in text and os.path.isfile(text):
        try:
            address = json.loads(Path(text).read_text())["address"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise argparse.ArgumentTypeError(
                f"{text!r} is a file but no dask scheduler file (JSON with an 'address'): {err}; pass the file "
                "written by dask scheduler --scheduler-file, or the address tcp://host:port"
            ) from None
        if isinstance(address, str) and _ADDRESS_RE.match(address):
            return address
        raise argparse.ArgumentTypeError(f"the scheduler file {text!r} holds the address {address!r}, not host:port")
    if _ADDRESS_RE.match(text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected a dask scheduler address tcp://host:port (e.g. tcp://10.0.0.1:8786) or the path of a scheduler "
        f"file, found {text!r}"
    )


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``xoceandiff CMD: error: ...; see ... --help``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_flat(message)}; see '{self.prog} --help'\n")


# --- checks after parsing: several options together, paths, devices; still nothing loaded ---------------


def _flat(text: str) -> str:
    """``text`` on one line."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _check_inputs(option: str, values: Sequence[str] | str | None, *, folder: bool = False) -> None:
    """Each of ``values`` (paths or glob patterns) exists (a folder when ``folder``)."""
    if values is None:
        return
    for value in [values] if isinstance(values, str) else values:
        if glob.has_magic(value):
            if not glob.glob(value):
                raise FileNotFoundError(f"{option}: no file matches the pattern {value!r}; check the pattern.")
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{option}: {value!r} does not exist; check the path.")
        if folder and not path.is_dir():
            raise InvalidDataError(f"{option}: expected a folder, found the file {value!r}; pass the folder.")
        if not folder and path.is_dir():
            raise InvalidDataError(f"{option}: expected a file, found the folder {value!r}; pass a file in it.")


def _check_output(option: str, value: str, *, folder: bool, overwrite: bool | None,
                  marker: str | None = None) -> None:
    """``value`` can be written: its type, the first output it would replace, a writable folder.

    ``marker``: the file (inside the ``folder``) whose presence means a previous output is there;
    ``overwrite=None``: an existing output is fine (resumed).
    """
    path = Path(value).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise InvalidDataError(f"{option}: expected a folder, found the file {value!r}; choose a folder.")
        if not folder and path.is_dir():
            raise InvalidDataError(f"{option}: expected a file name, found the folder {value!r}; add a file name.")
    existing = path / marker if marker else path
    if overwrite is False and existing.exists():
        raise OutputExistsError(f"{option}: {str(existing)!r} exists; pass --overwrite to replace it, or choose "
                                f"another {option}.")
    ancestor = path if folder else path.parent
    ancestor = ancestor.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidDataError(f"{option}: {value!r} lies under the file {str(ancestor)!r}, not a folder; choose "
                               f"another {option}.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidDataError(f"{option}: cannot write in the folder {str(ancestor)!r} (permission denied); "
                               f"choose another {option}, or change the folder's permissions.")


def _check_device(device: str | None, *, remote: bool) -> None:
    """CUDA (or MPS) exists when asked for and the work runs here (not on a dask scheduler's workers)."""
    if device is None or device == "cpu" or remote:
        return
    import torch  # only when a GPU is asked for

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidDataError("--device mps: MPS is not available on this machine; use --device cpu.")
        return
    if not torch.cuda.is_available():
        raise InvalidDataError(
            f"--device {device}: CUDA is not available here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); use --device cpu, or a machine and torch build with CUDA."
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InvalidDataError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                               f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; pick one of them.")


def _check_constraints(names: Sequence[str]) -> None:
    """Every name of ``--constraints`` (each maybe ``a+b`` or ``a,b``) is in the registry, without torch."""
    for entry in names:
        for name in (p.strip() for p in entry.replace(",", "+").split("+")):
            if name and name != "none" and name not in CONSTRAINT_NAMES:
                raise ConstraintError(
                    f"--constraints: unknown constraint {name!r}; expected names among {', '.join(CONSTRAINT_NAMES)} "
                    "(e.g. --constraints zero_mean border_zero_gradient)."
                )


def _check_scheme(scheme: str) -> None:
    from .normalisation import _parse_scheme  # numpy/xarray only, already imported

    try:
        _parse_scheme(scheme)
    except InvalidDataError as err:
        raise InvalidDataError(f"--{err}") from None


def _is_dino(values: Sequence[str] | None) -> bool:
    return values is not None and list(values) == ["dino"]


def _check_args(args: argparse.Namespace) -> None:
    """Everything about the call that needs no model and no data: fails in milliseconds."""
    command = args.command
    if command in ("train", "sample"):
        if not _is_dino(args.data):
            _check_inputs("--data", args.data)
        _check_inputs("--mesh-mask", args.mesh_mask)
    if command == "train":
        _check_scheme(args.scheme)
        if args.vertical_differences and not args.background:
            raise InvalidDataError("--vertical-differences: the differences are taken of the anomalies about the "
                                   "training climatology; add --background.")
        if args.stability_weight and args.prediction_type == "epsilon":
            raise InvalidDataError("--stability-weight: the stability term needs the network's estimate of the clean "
                                   "state; add --prediction-type sample (or v_prediction), or leave the weight at 0.")
        _check_output("--out", args.out, folder=True, overwrite=None)
        _check_device(args.device, remote=False)
    elif command == "sample":
        _check_inputs("--checkpoint", args.checkpoint, folder=True)
        _check_constraints(args.constraints)
        _check_output("--out", args.out, folder=False, overwrite=args.overwrite)
        _check_device(args.device, remote=args.scheduler is not None)
    elif command == "diagnose":
        _check_inputs("samples", [item.rpartition("=")[2] for item in args.samples])
        if not _is_dino(args.reference):
            _check_inputs("--reference", args.reference)
        _check_inputs("--mesh-mask", args.mesh_mask)
        _check_output("--out", args.out, folder=True, overwrite=args.overwrite, marker="table.md")
    elif command == "restart":
        _check_inputs("samples", args.samples)
        for option in ("mesh_mask", "template", "namelist"):
            _check_inputs("--" + option.replace("_", "-"), getattr(args, option))
        _check_output("--out", args.out, folder=True, overwrite=args.overwrite, marker="namelist_restart.txt")
    elif command == "demo":
        _check_output("--out", _demo_out(args), folder=True, overwrite=args.overwrite, marker="samples_unconstrained.nc")
    elif command == "evaluate":
        _check_inputs("runs", args.runs, folder=True)
        _check_inputs("--reference", args.reference, folder=True)
        _check_inputs("--mesh-mask", args.mesh_mask)
        if args.out is not None:
            _check_output("--out", args.out, folder=True, overwrite=args.overwrite, marker="evaluation.md")
    elif command == "ensemble":
        _check_inputs("states", args.states)
        _check_inputs("--template-exp", args.template_exp, folder=True)
        _check_inputs("--mesh-mask", args.mesh_mask)
        if not args.dry_run:
            _check_output("--out", args.out, folder=True, overwrite=args.overwrite, marker="ensemble.json")


# --- errors as one line -----------------------------------------------------------------------------------

_FILES_OF = {
    "train": "--data and --mesh-mask",
    "sample": "--checkpoint, --data and --mesh-mask",
    "diagnose": "the sample files, --reference and --mesh-mask",
    "restart": "the samples file, --mesh-mask, --template and --namelist",
    "demo": "the bundled model",
    "ensemble": "the states, --template-exp and --mesh-mask",
    "evaluate": "the run folders and --mesh-mask",
}


def _describe(err: BaseException) -> str:
    """What went wrong, in words: the exception's kind and message, on one line."""
    if isinstance(err, XOceanDiffError):
        return _flat(str(err))
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        where = f" {str(err.filename)!r}" if err.filename else ""
        return f"{err.strerror}{where} [{errno.errorcode.get(err.errno, err.errno)}]"
    text = _flat(str(err))
    if isinstance(err, KeyError) and err.args:
        text = _flat(str(err.args[0]))
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _is_netcdf_error(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and any(word in str(err) for word in ("NetCDF", "HDF"))


def _is_dask_error(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] in ("dask", "distributed")


def _message(err: BaseException, command: str) -> tuple[str, int]:
    """The one line for ``err`` (after ``xoceandiff CMD: error:``) and the exit status."""
    files = _FILES_OF.get(command, "the input files")
    what = _describe(err)
    if isinstance(err, XOceanDiffError) or (isinstance(err, OSError) and err.errno is None and err.args):
        return _flat(str(err)), 2  # the package's own messages (FileNotFoundError included) say it all
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}: the disk is full; free space (df -h) or choose another --out.", 2
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}: no permission; choose another --out, or change the permissions.", 2
    if isinstance(err, OSError):
        return f"{what}; check the paths given ({files}, --out).", 2
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return (f"out of memory ({what}); use fewer samples per task (--chunks), a smaller --batch-size or "
                "--n, or a machine with more memory."), 2
    if _is_netcdf_error(err):
        return (f"netCDF/HDF5: {what}; a file given ({files}) is not a valid NetCDF file or is truncated, or the "
                "disk of --out is full or read-only: check them (ncdump -h FILE, df -h); --debug shows where."), 2
    if _is_dask_error(err):
        return (f"dask: {what}; a worker failed or was lost (often out of memory): lower --chunks or give the "
                "workers more memory; --debug shows the traceback."), 2
    if isinstance(err, (RuntimeError, ValueError, KeyError, IndexError, EOFError)):
        return f"{what}; check {files} (--debug shows where it failed).", 2
    return (f"{what} (an unexpected error, likely a bug in xoceandiff): rerun with --debug and report the "
            "traceback."), 1


@contextlib.contextmanager
def _reading(option: str, value: Any, fix: str) -> Iterator[None]:
    """Errors while reading ``value`` (given as ``option``) become one InvalidDataError naming it."""
    try:
        yield
    except (XOceanDiffError, MemoryError):
        raise
    except (OSError, RuntimeError, ValueError, KeyError, IndexError, EOFError) as err:
        if isinstance(err, OSError) and (err.errno is None or err.errno in (errno.ENOSPC, errno.EDQUOT)):
            raise  # the package's own FileNotFoundError says it all; a full disk is no reading error
        shown = " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        raise InvalidDataError(f"{option} {shown}: cannot read it ({_describe(err)}); {fix}") from err


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


@contextlib.contextmanager
def _writing(option: str, value: Any) -> Iterator[None]:
    """OS and netCDF/HDF5 errors while writing ``value`` (given as ``option``) become one line naming it.

    Only errors that are about writing: an OSError on a path under ``value`` or of a writing kind (full
    disk, no permission, read-only file system), and netCDF/HDF5 errors (which do not tell reading from
    writing: the message says both).
    """
    try:
        yield
    except XOceanDiffError:
        raise
    except OSError as err:
        target = str(Path(value).expanduser())
        if err.errno not in _WRITE_ERRNOS and not str(err.filename or "").startswith(target):
            raise
        raise InvalidDataError(f"{option} {value}: cannot write it ({_describe(err)}); check the free space "
                               f"(df -h) and the permissions of its folder, or choose another {option}.") from err
    except RuntimeError as err:
        if not _is_netcdf_error(err):
            raise
        raise InvalidDataError(f"{option} {value}: netCDF/HDF5 error while writing it ({_describe(err)}); often a "
                               f"full disk or a read-only folder: check the free space (df -h) or choose another "
                               f"{option}; else an input file is truncated (ncdump -h FILE).") from err


_FIX = {
    "--checkpoint": "pass a checkpoint folder written by 'xoceandiff train' (or model.save), or leave --checkpoint "
                    "out for the bundled model",
    "--data": "pass NEMO output files (NetCDF with toce/soce/ssh) and their mesh_mask.nc or domain_cfg.nc "
              "(--mesh-mask)",
    "--mesh-mask": "pass the mesh_mask.nc or domain_cfg.nc that NEMO wrote for this configuration",
    "samples": "pass a samples file written by 'xoceandiff sample'",
    "states": "pass a samples file written by 'xoceandiff sample', or NEMO output files with --mesh-mask",
    "--reference": "pass NEMO output files (NetCDF with toce/soce/ssh) and their --mesh-mask",
}


def _load_data(data: Sequence[str], mesh_mask: str | None, dino_n: int, dino_resolution: float, seed: int):
    import xoceandiff

    if list(data) == ["dino"]:
        return xoceandiff.datasets.dino(n=dino_n, resolution=dino_resolution, seed=seed)
    shown = [*data, f"(with --mesh-mask {mesh_mask})"] if mesh_mask else list(data)
    with _reading("--data", shown, _FIX["--data"]):
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
        levels=args.levels,
        scheme=args.scheme,
        ema_decay=args.ema_decay,
        background=args.background,
        prediction_type=args.prediction_type,
        conditions=args.conditions,
        stability_weight=args.stability_weight,
        vertical=args.vertical_differences,
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

    with _reading("--checkpoint", args.checkpoint or bundled_checkpoint(), _FIX["--checkpoint"]):
        model = load_model(args.checkpoint or bundled_checkpoint())
    if args.data:
        ds = _load_data(args.data, args.mesh_mask, 1, 1.0, 0)
    else:
        with _reading("--mesh-mask", args.mesh_mask, _FIX["--mesh-mask"]):
            ds = grid_for(model, args.mesh_mask)
    if args.jobqueue:
        from .parallel import jobqueue_client

        client = jobqueue_client(args.jobqueue, args.jobs, memory=args.job_memory, walltime=args.job_walltime,
                                 queue=args.job_queue)
    else:
        client = connect(args.scheduler, args.local_workers)
    try:
        with _writing("--out", args.out):
            out = generate_to_netcdf(
                ds, args.n, args.constraints, out=args.out, model=model, chunks=args.chunks, overwrite=args.overwrite,
                client=client, sampler=args.sampler, steps=args.steps, seed=args.seed, device=args.device,
                resources={"GPU": 1} if args.gpu_resources else None, level_means=args.level_means,
                condition=dict(args.condition) or None, guidance=args.guidance, free_below=args.free_below,
            )
    finally:
        if client is not None:
            client.close()
    print(f"wrote {args.n} samples to {out}")
    return 0


def _open_samples(path: str, grid):
    from .io import open_samples

    with _reading("samples file", path, _FIX["samples"]):
        return open_samples(path, grid=grid)


def _reference(args: argparse.Namespace, samples_path: str):
    import xarray as xr

    import xoceandiff

    if args.reference and list(args.reference) != ["dino"]:
        with _reading("--reference", list(args.reference), _FIX["--reference"]):
            return xoceandiff.open_nemo(list(args.reference), mesh_mask=args.mesh_mask)
    with _reading("samples file", samples_path, _FIX["samples"]), xr.open_dataset(samples_path) as raw:
        sizes = dict(raw.sizes)  # sample files record no dataset: their grid tells
    resolution = xoceandiff.datasets.dino_resolution_of(sizes)
    return xoceandiff.datasets.dino(n=args.dino_n, resolution=resolution, seed=0)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from .plotting import plot_all
    from .report import report

    reference = _reference(args, args.samples[0].rpartition("=")[2])
    sets = {}
    for item in args.samples:
        name, _, path = item.rpartition("=")
        sets[name or Path(path).stem] = _open_samples(path, reference)
    with _writing("--out", args.out):
        rep = report(reference=reference, samples=sets, out=args.out, overwrite=args.overwrite, eos=args.eos,
                     depth_box=args.depth_box)
    print(rep.to_markdown())
    with _writing("--out", args.out):
        figures = [] if args.no_figures else plot_all(reference, sets, Path(args.out) / "figures", report=rep,
                                                       overwrite=args.overwrite, eos=args.eos,
                                                       depth_box=args.depth_box)
    print(f"\nreport written to {args.out} ({len(figures)} figures)")
    return 0


def _condition(text: str) -> tuple[str, float]:
    """``--condition NAME=VALUE``: a condition of a conditional model and its value."""
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. day_of_year=180), found {text!r}") from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}")
    return value


def _date(text: str) -> int:
    """``--date YYYYMMDD`` (``00510101`` for year 51) as NEMO's integer ndastp."""
    if not (text.isdigit() and len(text) == 8):
        raise argparse.ArgumentTypeError(f"expected a date YYYYMMDD (e.g. 19000101 or 00510101), found {text!r}")
    return int(text)


def _step_phase_kt(samples, args: argparse.Namespace) -> int:
    """``--forcing-phase step``: kt at the date's step of the year (forcing that follows the step counter, GYRE)."""
    from .conditions import yyyymmdd
    from .ensemble import step_of_year

    if args.kt is not None:
        raise InvalidDataError("--forcing-phase step sets kt from the date; leave --kt out.")
    if args.rdt is None:
        raise InvalidDataError("--forcing-phase step: pass --rdt, the run's time step, to count the steps.")
    if "time" not in samples.coords:  # the calendar is the samples' own: never guessed
        raise InvalidDataError("--forcing-phase step: the samples carry no date, so neither its step of the year nor "
                               "its calendar is known; sample a conditional model for a day of the year, or use "
                               "'xoceandiff ensemble', which reads the calendar from the experiment's namelist.")
    if args.date is not None:
        date, calendar = args.date, samples.time.values.ravel()[0].calendar
    else:
        dates = {yyyymmdd(t) for t in samples.time.values.ravel()}
        if len(dates) > 1:
            raise InvalidDataError(f"--forcing-phase step: the samples are for {len(dates)} different dates, which "
                                   "need different nn_it000; write one ensemble member each with 'xoceandiff ensemble'.")
        (date,) = dates
        calendar = samples.time.values.ravel()[0].calendar
    return step_of_year(date, args.rdt, calendar)


def _cmd_restart(args: argparse.Namespace) -> int:
    from .nemo import open_grid
    from .restart import to_restart

    if args.mesh_mask:
        with _reading("--mesh-mask", args.mesh_mask, _FIX["--mesh-mask"]):
            grid = open_grid(args.mesh_mask)
    else:
        grid = _reference(args, args.samples)
    samples = _open_samples(args.samples, grid)
    kt = args.kt
    if args.forcing_phase == "step":
        kt = _step_phase_kt(samples, args)
    with _writing("--out", args.out):
        paths = to_restart(
            samples, args.out, mesh_mask=args.mesh_mask, template=args.template, namelist=args.namelist,
            nemo_version=args.nemo_version, kt=kt, ndastp=args.date, rdt=args.rdt, velocities=args.velocities,
            overwrite=args.overwrite,
        )
    namelist = Path(args.out) / "namelist_restart.txt"
    settings = [line[2:] for line in namelist.read_text().splitlines()[3:6]]  # version, rdt, date: and whence
    print(f"wrote {len(paths)} restart files to {args.out}\n  " + "\n  ".join(settings) + f"\nsettings: {namelist}")
    return 0


def _open_states(paths: Sequence[str], mesh_mask: str, records: Sequence[int] | None):
    """A samples file written by xoceandiff, or NEMO output (true states, e.g. for reference runs)."""
    import xarray as xr

    import xoceandiff

    from .nemo import open_grid

    with _reading("--mesh-mask", mesh_mask, _FIX["--mesh-mask"]):
        grid = open_grid(mesh_mask)
    paths = [match for path in paths for match in (sorted(glob.glob(path)) if glob.has_magic(path) else [path])]
    with _reading("states", list(paths), _FIX["states"]), xr.open_dataset(paths[0], decode_times=False) as raw:
        is_samples = "sample" in raw.dims
    if is_samples:
        if len(paths) > 1:
            raise InvalidDataError(f"states: one samples file at a time, found {len(paths)}: {list(paths)}.")
        states = _open_samples(paths[0], grid)
    else:
        with _reading("states", list(paths), _FIX["states"]):
            states = xoceandiff.open_nemo(list(paths), mesh_mask=mesh_mask)
    if records:
        dim = "sample" if is_samples else "t"
        size = states.sizes[dim]
        if any(not 0 <= r < size for r in records):
            raise InvalidDataError(f"--records: expected indices from 0 to {size - 1} along {dim!r}, found {list(records)}.")
        states = states.isel({dim: list(records)})
    return states


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from .ensemble import make_ensemble

    mesh_mask = args.mesh_mask or str(Path(args.template_exp) / "mesh_mask.nc")
    states = _open_states(args.states, mesh_mask, args.records)
    with _writing("--out", args.out):
        plan = make_ensemble(states, args.template_exp, args.out, mesh_mask=mesh_mask, date=args.date,
                             run_steps=args.run_steps, dumps=args.dumps, forcing_phase=args.forcing_phase,
                             scheduler=args.scheduler, nemo_command=args.nemo_command,
                             ranks=None if args.ranks is None else tuple(args.ranks), nemo_version=args.nemo_version,
                             dry_run=args.dry_run, overwrite=args.overwrite)
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing written")
    else:
        submit = {"slurm": "sbatch", "pbs": "qsub", "shell": "bash"}[plan.scheduler]
        print(f"written; run them with: {submit} {plan.out / plan.job_script}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    with _writing("--out", args.out or "."):
        result = evaluate(args.runs, args.reference, mesh_mask=args.mesh_mask, out=args.out, overwrite=args.overwrite)
    print(result.to_markdown())
    if args.out:
        print(f"written to {args.out}: evaluation.md, evaluation.csv, evaluation.nc, figures/")
    return 0


def _demo_out(args: argparse.Namespace) -> str:
    """The demo's output folder: ``--out``, or the default of its ``--config``."""
    return args.out or ("xoceandiff-demo" if args.config == "dino" else "xoceandiff-demo-gyre")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    out = _demo_out(args)
    if args.reference is not None and args.config != "gyre":
        raise InvalidDataError("--reference: only for --config gyre (the DINO-like demo builds its own data).")
    if args.day is not None and args.config != "gyre":
        raise InvalidDataError("--day: only for --config gyre (the DINO-like model has no seasons).")
    with _writing("--out", out):
        run_demo(out=out, n=args.n, sampler=args.sampler, steps=args.steps, progress=not args.no_progress,
                 overwrite=args.overwrite, config=args.config, reference=args.reference, day=args.day)
    return 0


def _debug_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, show the Python traceback instead of one line")


def build_parser() -> argparse.ArgumentParser:
    """The ``xoceandiff`` argument parser: every value is checked as it is parsed (see the module docstring)."""
    parser = _Parser(
        prog="xoceandiff",
        description="Generate NEMO ocean states (toce, soce, ssh) with diffusion models.",
    )
    _debug_option(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        _debug_option(cmd, argparse.SUPPRESS)  # also after the subcommand; the global default holds otherwise
        return cmd

    demo = command("demo", "sample a bundled model (DINO-like data, or GYRE), write files, restarts and a report")
    demo.add_argument("--config", default="dino", choices=["dino", "gyre"],
                      help="which bundled model: the DINO-like one on its embedded data, or NEMO's GYRE "
                           "(default: %(default)s)")
    demo.add_argument("--reference", default=None,
                      help="--config gyre: folder with GYRE output (GYRE_*_grid_T.nc, mesh_mask.nc) to measure against")
    demo.add_argument("--out", default=None, help="output folder (default: xoceandiff-demo, xoceandiff-demo-gyre)")
    demo.add_argument("--day", type=_non_negative_float, default=None,
                      help="--config gyre: states for this day of the 360-day year (0: 1 January), restarts from it")
    demo.add_argument("--n", type=_demo_n, default=8, help="samples per setting, at least 2 (default: %(default)s)")
    demo.add_argument("--sampler", default=None, choices=SAMPLER_NAMES,
                      help="ddpm, ddim or dpm (default: the documented fast sampler)")
    demo.add_argument("--steps", type=_positive_int, default=None, help="sampling steps")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_cmd_demo)

    train = command("train", "train a denoiser on NEMO output or on the embedded DINO-like data")
    train.add_argument("--data", nargs="+", required=True, help="NEMO output files, or 'dino' for the embedded dataset")
    train.add_argument("--mesh-mask", default=None, help="mesh_mask.nc or domain_cfg.nc (default: beside the data)")
    train.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a training state)")
    train.add_argument("--steps", type=_positive_int, default=1000, help="optimiser steps (default: %(default)s)")
    train.add_argument("--preset", default="small", choices=PRESET_NAMES, help="network size (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=8, help="global batch size (default: %(default)s)")
    train.add_argument("--lr", type=_positive_float, default=1e-4, help="peak learning rate (default: %(default)s)")
    train.add_argument("--seed", type=_non_negative_int, default=0, help="training seed (default: %(default)s)")
    train.add_argument("--levels", type=_levels, default="every-other",
                       help="all, every-other or a comma list of level indices (default: %(default)s)")
    train.add_argument("--scheme", default="3-std", help="normalisation scheme (default: %(default)s)")
    train.add_argument("--background", action="store_true",
                       help="diffuse anomalies about the training climatology (see training.prepare_model)")
    train.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "sample", "v_prediction"],
                       help="what a new network learns to output (default: %(default)s, the paper's)")
    train.add_argument("--ema-decay", type=_decay, default=None, help="keep an EMA of the weights with this decay")
    train.add_argument("--conditions", nargs="+", default=[], choices=["day_of_year", "run_time"],
                       help="train a conditional model on the records' day of the year and/or time in the run")
    train.add_argument("--vertical-differences", action="store_true",
                       help="with --background: diffuse each level's difference from the level below "
                            "(see training.prepare_model)")
    train.add_argument("--stability-weight", type=_non_negative_float, default=0.0,
                       help="weight of the static-stability term in the loss (needs --prediction-type sample or "
                            "v_prediction; default: %(default)s, the MSE alone)")
    train.add_argument("--checkpoint-every", type=_positive_int, default=None, help="also checkpoint every N steps")
    train.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 (default: the GPU if any)")
    train.add_argument("--drop-nan-snapshots", action="store_true", help="drop snapshots with NaN on ocean cells")
    train.add_argument("--dino-n", type=_positive_int, default=200,
                       help="snapshots of the embedded dataset (default: %(default)s)")
    train.add_argument("--dino-resolution", type=_positive_float, default=1.0,
                       help="its resolution in degrees (default: %(default)s)")
    train.add_argument("--data-seed", type=_non_negative_int, default=0, help="its seed (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=_cmd_train)

    sample = command("sample", "generate samples chunk by chunk (resumable) into a CF NetCDF file")
    sample.add_argument("--checkpoint", default=None, help="model checkpoint folder (default: the bundled model)")
    sample.add_argument("--n", type=_positive_int, required=True, help="number of samples")
    sample.add_argument("--chunks", type=_positive_int, required=True, help="samples per task / part file")
    sample.add_argument("--constraints", nargs="*", default=[],
                        help=f"constraint names, applied in order ({', '.join(CONSTRAINT_NAMES)})")
    sample.add_argument("--out", required=True, help="output NetCDF file")
    sample.add_argument("--sampler", default="ddim", choices=SAMPLER_NAMES, help="(default: %(default)s)")
    sample.add_argument("--steps", type=_positive_int, default=None,
                        help="sampling steps (default: 1000 ddpm, 50 ddim, 25 dpm)")
    sample.add_argument("--seed", type=_non_negative_int, default=0, help="sample i uses the random stream (seed, i)")
    sample.add_argument("--level-means", default="training", choices=["training", "records"],
                        help="what zero_mean drives level means to: the training mean, or one training record's "
                             "per sample (a model trained on the date then samples each for its record's date; "
                             "default: %(default)s)")
    sample.add_argument("--condition", type=_condition, nargs="+", default=[], metavar="NAME=VALUE",
                        help="for a conditional model: day_of_year=180 (0: 1 January) and/or run_time=58.5 (years)")
    sample.add_argument("--guidance", type=_non_negative_float, default=1.0,
                        help="classifier-free guidance scale (default: %(default)s, none)")
    sample.add_argument("--free-below", type=_non_negative_int, default=0, metavar="TIMESTEP",
                        help="the constraints rest below this diffusers timestep (0-1000) and apply once after the "
                             "last step: 300 lets the network finish the last 30 %% of the noise alone (the GYRE "
                             "demo's setting; default: %(default)s, after every step)")
    sample.add_argument("--data", nargs="+", default=None, help="NEMO files giving the grid (default: the DINO-like grid)")
    sample.add_argument("--mesh-mask", default=None,
                        help="mesh_mask.nc or domain_cfg.nc of --data, or alone: the grid to sample on "
                             "(default: the grid the checkpoint carries)")
    sample.add_argument("--device", type=_device, default=None, help="cpu or cuda (default: cuda if the worker has one)")
    where = sample.add_mutually_exclusive_group()
    where.add_argument("--scheduler", type=_scheduler, default=None,
                       help="address of a running dask scheduler (e.g. tcp://host:8786), or its scheduler file")
    where.add_argument("--local-workers", type=_positive_int, default=None,
                       help="start a LocalCluster with N worker processes")
    where.add_argument("--jobqueue", default=None, choices=["slurm", "pbs"],
                       help="start dask workers as batch jobs (dask-jobqueue), one single-threaded worker per job")
    sample.add_argument("--jobs", type=_positive_int, default=2, help="--jobqueue: batch jobs (default: %(default)s)")
    sample.add_argument("--job-memory", default="4GB", help="--jobqueue: memory per job (default: %(default)s)")
    sample.add_argument("--job-walltime", default="01:00:00", help="--jobqueue: wall-clock limit (default: %(default)s)")
    sample.add_argument("--job-queue", default=None, help="--jobqueue: queue or partition (default: the system's)")
    sample.add_argument("--gpu-resources", action="store_true", help="each task needs worker resource GPU=1")
    sample.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sample.set_defaults(func=_cmd_sample)

    diagnose = command("diagnose", "the paper's diagnostics table, metrics and figures for sample files")
    diagnose.add_argument("samples", nargs="+", help="sample NetCDF files written by xoceandiff (optionally NAME=FILE)")
    diagnose.add_argument("--reference", nargs="+", default=["dino"], help="reference NEMO files, or 'dino' (default)")
    diagnose.add_argument("--mesh-mask", default=None, help="mesh_mask.nc or domain_cfg.nc of --reference")
    diagnose.add_argument("--dino-n", type=_positive_int, default=200,
                          help="snapshots of the DINO-like reference (default: %(default)s)")
    diagnose.add_argument("--out", required=True, help="report folder")
    diagnose.add_argument("--eos", default="auto", choices=["auto", "teos10-poly", "eos80-poly", "seos"],
                          help="equation of state; auto: EOS-80 for practical salinity, TEOS-10 for absolute")
    diagnose.add_argument("--depth-box", type=_positive_float, default=1500.0,
                          help="box depth in m (default: %(default)s)")
    diagnose.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    diagnose.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    diagnose.set_defaults(func=_cmd_diagnose)

    restart = command("restart", "write one NEMO restart per sample of a samples file")
    restart.add_argument("samples", help="sample NetCDF file written by xoceandiff")
    restart.add_argument("--mesh-mask", default=None, help="mesh_mask.nc / domain_cfg.nc of the configuration")
    restart.add_argument("--reference", nargs="+", default=["dino"], help=argparse.SUPPRESS)
    restart.add_argument("--dino-n", type=_positive_int, default=1, help=argparse.SUPPRESS)
    restart.add_argument("--out", required=True, help="output folder")
    restart.add_argument("--template", default=None,
                         help="an existing restart of the run: every other variable, its version, rdt and calendar")
    restart.add_argument("--namelist", default=None,
                         help="the run's namelist_cfg: rdt from rn_Dt (rn_rdt), date from nn_date0, kt = nn_it000 - 1")
    restart.add_argument("--nemo-version", default=None, choices=["4.0", "4.2", "5.0"],
                         help="NEMO version of the run (default: the template's or namelist's, else 5.0)")
    restart.add_argument("--rdt", type=_positive_float, default=None,
                         help="time step in seconds, NEMO's rn_Dt (default: the template's or namelist's, else 3600)")
    restart.add_argument("--date", type=_date, default=None, metavar="YYYYMMDD",
                         help="date of the restart, ndastp (default: the template's, the namelist's nn_date0, "
                              "the state's, else 19000101)")
    restart.add_argument("--kt", type=_non_negative_int, default=None,
                         help="time step of the restart, nn_it000 = kt + 1 (default: the template's or namelist's, else 0)")
    restart.add_argument("--forcing-phase", default="calendar", choices=["calendar", "step"],
                         help="step: the forcing follows the time-step counter (GYRE), so kt (nn_it000 - 1) is the "
                              "date's step of the year (default: %(default)s, kt from --kt or 0)")
    restart.add_argument("--velocities", default=None, choices=["rest", "thermal_wind"],
                         help="(default: rest, or the template's)")
    restart.add_argument("--overwrite", action="store_true", help="replace existing files")
    restart.set_defaults(func=_cmd_restart)

    ensemble = command("ensemble", "one NEMO run folder per state, from your experiment folder, and a job script")
    ensemble.add_argument("states", nargs="+",
                          help="samples file written by xoceandiff, or NEMO output files (true states)")
    ensemble.add_argument("--template-exp", required=True,
                          help="your NEMO experiment folder (namelist_cfg, namelist_ref, executable, inputs); only read")
    ensemble.add_argument("--out", required=True, help="ensemble folder (one member_NNN folder per state)")
    ensemble.add_argument("--mesh-mask", default=None,
                          help="mesh_mask.nc of the configuration (default: mesh_mask.nc in --template-exp)")
    ensemble.add_argument("--records", type=_non_negative_int, nargs="+", default=None,
                          help="only these states (indices along sample, or along time for NEMO output)")
    ensemble.add_argument("--date", type=_date, default=None, metavar="YYYYMMDD",
                          help="start date of every member (default: the state's own, else the experiment's nn_date0)")
    ensemble.add_argument("--run-steps", type=_positive_int, default=None,
                          help="time steps per run (default: the experiment's nn_itend - nn_it000 + 1)")
    ensemble.add_argument("--dumps", type=_positive_int, nargs="*", default=[],
                          help="steps after the start at which NEMO writes a restart (nn_stocklist), e.g. 60 2160")
    ensemble.add_argument("--forcing-phase", default="auto", choices=["auto", "calendar", "step"],
                          help="forcing by date (nn_it000 = 1) or by step counter (nn_it000 at the state's step of "
                               "the year); auto: step for GYRE (default: %(default)s)")
    ensemble.add_argument("--scheduler", default="slurm", choices=["slurm", "pbs", "shell"],
                          help="job script: SLURM or PBS job array, or a shell loop (default: %(default)s)")
    ensemble.add_argument("--nemo-command", default="./nemo",
                          help="what runs NEMO in a member folder (default: %(default)s), e.g. 'srun ./nemo'")
    ensemble.add_argument("--ranks", type=_positive_int, nargs=2, default=None, metavar=("JPNI", "JPNJ"),
                          help="write each restart as per-rank pieces for this decomposition")
    ensemble.add_argument("--nemo-version", default="5.0", choices=["4.2", "5.0"],
                          help="restart variables of this NEMO version (default: %(default)s)")
    ensemble.add_argument("--dry-run", action="store_true", help="list what would be written, write nothing")
    ensemble.add_argument("--overwrite", action="store_true", help="replace an existing ensemble folder")
    ensemble.set_defaults(func=_cmd_ensemble)

    evaluation = command("evaluate", "read back the NEMO runs of an ensemble and compare them with reference runs")
    evaluation.add_argument("runs", help="the ensemble folder (one run folder per member), after NEMO ran")
    evaluation.add_argument("--reference", default=None, help="the reference ensemble (restarts from true states)")
    evaluation.add_argument("--mesh-mask", required=True, help="mesh_mask.nc of the configuration")
    evaluation.add_argument("--out", default=None, help="folder for evaluation.md/.csv/.nc and figures")
    evaluation.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    evaluation.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xoceandiff`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; 2 when the call or its inputs are wrong (one line on stderr:
        ``xoceandiff CMD: error: ...``); 1 for an unexpected error (a bug: rerun with ``--debug``);
        130 when interrupted. Errors in the arguments themselves exit 2 through ``SystemExit``.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what `train` records as its command
    prog = f"xoceandiff {args.command}"
    try:
        _check_args(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        message, code = _message(err, args.command)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
