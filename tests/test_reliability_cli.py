"""The command line's error contract: a wrong call or input ends in one line and exit 2, quickly.

Every case the issue "Nothing lost, nothing mixed, nothing mislabelled" lists that the CLI can reach:
``xoceandiff CMD: error: <what, which file or option, the fix>`` on stderr, no traceback, exit status 2;
``--debug`` shows the traceback. Cheap checks run before torch, a model or data is loaded. Also the
small items: file-name prefixes, Fortran strings in the namelists, the demo's argument checks, and
output folders that an early failure leaves behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff import cli
from xoceandiff.cli import main
from xoceandiff.errors import InvalidDataError, MissingVariableError, OutputExistsError

TIME_LIMIT_S = 3.0  # generous: measured 0.75-0.85 s on a shared 2-core machine (the package import is ~0.65 s)


# --- helpers ----------------------------------------------------------------------------------------------


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)`` in this process: its exit status (argparse's SystemExit included) and stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, command: str, *words: str) -> str:
    """Exit 2, exactly one ``xoceandiff CMD: error:`` line, no traceback; the line holds ``words``."""
    lines = [line for line in err.splitlines() if line.startswith("xoceandiff")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"xoceandiff {command}: error: "), err
    assert "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def run_cli(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, float]:
    """The command in a fresh process, as a user runs it, and its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "xoceandiff.cli", *args], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=300)
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """NEMO-style files of the 4-degree grid, a garbage .nc, an all-land mesh_mask, a samples file."""
    folder = tmp_path_factory.mktemp("reliability")
    data = xoceandiff.datasets.dino(n=2, resolution=4.0, seed=1)
    paths = data.oceandiff.to_nemo_files(folder / "nemo")
    garbage = folder / "garbage.nc"
    garbage.write_text("this is not a NetCDF file\n")
    with xr.open_dataset(paths["mesh_mask"]) as raw:
        land = raw.load()
    land["tmask"][:] = 0
    land.to_netcdf(folder / "all_land.nc")
    samples = data.rename(t="sample").drop_vars("sample", errors="ignore").assign_coords(sample=np.arange(2))
    return {
        "mesh_mask": paths["mesh_mask"], "grid_T_3D": paths["grid_T_3D"], "garbage": str(garbage),
        "all_land": str(folder / "all_land.nc"), "samples": str(samples.oceandiff.to_netcdf(folder / "samples.nc")),
        "folder": folder,
    }


# --- fast failures, before anything heavy is loaded -------------------------------------------------------


def test_import_of_the_cli_does_not_import_torch(tmp_path):
    """Neither importing the CLI nor refusing a wrong call imports torch (the checks are torch-free)."""
    existing = tmp_path / "x.nc"
    existing.write_text("")
    code = (
        "import sys; from xoceandiff.cli import main; assert 'torch' not in sys.modules, 'import'; "
        f"code = main(['sample', '--n', '2', '--chunks', '1', '--constraints', 'zero_mean', '--out', {str(existing)!r}]);"
        " print(code, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr


@pytest.mark.parametrize(
    ("case", "args", "words"),
    [
        # measured 0.77 s (exit 2): argparse refuses the value
        ("n=0", ["--n", "0"], ["--n", "positive integer"]),
        # measured 0.78 s: the registry's names, read without torch
        ("unknown constraint", ["--n", "2", "--constraints", "nope"], ["--constraints", "'nope'", "zero_mean"]),
        # measured 0.82 s: the existing output, before the model is loaded
        ("existing --out", ["--n", "2"], ["--out", "exists", "--overwrite"]),
    ],
)
def test_invalid_calls_fail_in_under_a_second(case, args, words, tmp_path):
    out = tmp_path / "samples.nc"
    if case == "existing --out":
        out.write_text("")
    result, seconds = run_cli(["sample", *args, "--chunks", "1", "--out", str(out)], tmp_path)
    assert_one_line(result.returncode, result.stderr, "sample", *words)
    print(f"{case}: exit {result.returncode} in {seconds:.2f} s")
    assert seconds < TIME_LIMIT_S, f"{case}: {seconds:.2f} s"


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("sample", ["--n", "2", "--chunks", "1", "--seed", "-1"], ["--seed", ">= 0", "'-1'"]),
        ("sample", ["--n", "nan", "--chunks", "1"], ["--n", "'nan'"]),
        ("sample", ["--n", "None", "--chunks", "1"], ["--n", "'None'"]),
        ("sample", ["--n", "2", "--chunks", "0"], ["--chunks"]),
        ("sample", ["--n", "2", "--chunks", "1", "--steps", "0"], ["--steps"]),
        ("sample", ["--n", "2", "--chunks", "1", "--scheduler", "foo://"], ["--scheduler", "tcp://host:port"]),
        ("sample", ["--n", "2", "--chunks", "1", "--scheduler", "tcp://host"], ["--scheduler"]),
        ("sample", ["--n", "2", "--chunks", "1", "--device", "gpu"], ["--device", "cpu, cuda"]),
        ("sample", ["--n", "2", "--chunks", "1", "--sampler", "euler"], ["--sampler", "ddim"]),
        ("sample", ["--n", "2", "--chunks", "1", "--local-workers", "0"], ["--local-workers"]),
        ("train", ["--data", "dino", "--levels", "a,b"], ["--levels", "'a,b'", "every-other"]),
        ("train", ["--data", "dino", "--levels", "0,0"], ["--levels", "distinct"]),
        ("train", ["--data", "dino", "--lr", "-1"], ["--lr", "> 0"]),
        ("train", ["--data", "dino", "--lr", "nan"], ["--lr"]),
        ("train", ["--data", "dino", "--steps", "0"], ["--steps"]),
        ("train", ["--data", "dino", "--batch-size", "-3"], ["--batch-size"]),
        ("train", ["--data", "dino", "--ema-decay", "1.5"], ["--ema-decay", "between 0 and 1"]),
        ("train", ["--data", "dino", "--preset", "huge"], ["--preset", "tiny"]),
        ("train", ["--data", "dino", "--scheme", "3-sd"], ["--scheme", "3-std"]),
        ("demo", ["--n", "1"], ["--n", ">= 2"]),
    ],
)
def test_argument_checks(command, args, words, tmp_path, capsys):
    code, err = run_main([command, *args, "--out", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, command, *words)
    assert not (tmp_path / "out").exists()


def test_device_cuda_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = run_main(["sample", "--n", "2", "--chunks", "1", "--device", "cuda", "--out", str(tmp_path / "x.nc")],
                         capsys)
    assert_one_line(code, err, "sample", "--device cuda", "CUDA is not available", "--device cpu")
    # a remote scheduler's workers may have GPUs: not checked here
    assert cli._check_device("cuda", remote=True) is None


def test_missing_inputs_and_wrong_outputs(files, tmp_path, capsys):
    out = str(tmp_path / "x.nc")
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--data", "missing.nc", "--out", out], capsys)
    assert_one_line(code, err, "sample", "--data", "'missing.nc'", "does not exist")
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--checkpoint", files["garbage"], "--out", out], capsys)
    assert_one_line(code, err, "sample", "--checkpoint", "expected a folder")
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--out", str(tmp_path)], capsys)
    assert_one_line(code, err, "sample", "--out", "expected a file name")
    code, err = run_main(["restart", files["samples"], "--out", files["garbage"]], capsys)
    assert_one_line(code, err, "restart", "--out", "expected a folder")
    code, err = run_main(["diagnose", files["samples"], "--out", str(tmp_path / "r"), "--reference", "nope*.nc"], capsys)
    assert_one_line(code, err, "diagnose", "--reference", "no file matches")
    code, err = run_main(["train", "--data", "dino", "--out", f"{files['garbage']}/run"], capsys)
    assert_one_line(code, err, "train", "--out", "not a folder")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "table.md").write_text("")
    code, err = run_main(["diagnose", files["samples"], "--out", str(tmp_path / "report")], capsys)
    assert_one_line(code, err, "diagnose", "table.md", "--overwrite")


def test_read_only_output_folder(tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only mode does not stop writes (see the patched test below)")
        code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--out", str(folder / "x.nc")], capsys)
        assert_one_line(code, err, "sample", "--out", "permission denied")
        code, err = run_main(["restart", "x.nc", "--out", str(folder / "rst")], capsys)
        assert code == 2
    finally:
        folder.chmod(0o755)


# --- errors from the OS, netCDF/HDF5, torch and dask: one line, naming the file or option ---------------


def _raise(err: BaseException):
    def fail(*args, **kwargs):
        raise err

    return fail


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "OUT"), ["--out", "Permission denied", "EACCES"]),
        (OSError(errno.ENOSPC, "No space left on device", "OUT"), ["--out", "No space left", "df -h"]),
        (OSError(errno.EROFS, "Read-only file system", "OUT"), ["--out", "Read-only", "another --out"]),
        (RuntimeError("NetCDF: HDF error"), ["--out", "NetCDF: HDF error", "full disk"]),
    ],
)
def test_write_errors_of_the_restart_command(err, words, files, tmp_path, monkeypatch, capsys):
    """A full disk or a read-only folder mid-write (simulated: root ignores modes, and disks are rarely full)."""
    import xoceandiff.restart

    out = tmp_path / "restarts"
    if isinstance(err, OSError):
        err.filename = str(out / "restart_s000_xoceandiff.nc")
    monkeypatch.setattr(xoceandiff.restart, "to_restart", _raise(err))
    code, stderr = run_main(["restart", files["samples"], "--mesh-mask", files["mesh_mask"], "--out", str(out)], capsys)
    assert_one_line(code, stderr, "restart", *words)


def test_full_disk_mid_restart_leaves_no_folder(files, tmp_path, monkeypatch, capsys):
    """The second file hits a full disk: the first is discarded, and the folder made for them too."""
    import xoceandiff.restart

    real = xoceandiff.restart._write_netcdf
    calls = []

    def write(ds, tmp):
        calls.append(tmp)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        real(ds, tmp)

    monkeypatch.setattr(xoceandiff.restart, "_write_netcdf", write)
    out = tmp_path / "new" / "rst"
    code, err = run_main(["restart", files["samples"], "--mesh-mask", files["mesh_mask"], "--out", str(out)], capsys)
    assert_one_line(code, err, "restart", "--out", "No space left on device")
    assert len(calls) == 2 and not (tmp_path / "new").exists()


def test_netcdf_error_while_sampling(tmp_path, monkeypatch, capsys):
    import xoceandiff.parallel

    monkeypatch.setattr(xoceandiff.parallel, "generate_to_netcdf", _raise(RuntimeError("NetCDF: HDF error")))
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--out", str(tmp_path / "x.nc")], capsys)
    assert_one_line(code, err, "sample", "--out", "NetCDF: HDF error", "df -h")


def test_torch_and_dask_errors_and_memory(tmp_path, monkeypatch, capsys):
    import xoceandiff.parallel

    class KilledWorker(Exception):  # as distributed.scheduler.KilledWorker
        __module__ = "distributed.scheduler"

    cases = [
        (RuntimeError("shape '[36, 64, 32]' is invalid for input of size 100"), ["shape", "--checkpoint"]),
        (MemoryError(), ["out of memory", "--chunks"]),
        (KilledWorker("task lost"), ["dask", "KilledWorker", "--chunks"]),
        (ValueError("conflicting sizes"), ["conflicting sizes", "--debug"]),
    ]
    for err, words in cases:
        monkeypatch.setattr(xoceandiff.parallel, "generate_to_netcdf", _raise(err))
        code, stderr = run_main(["sample", "--n", "1", "--chunks", "1", "--out", str(tmp_path / "x.nc")], capsys)
        assert_one_line(code, stderr, "sample", *words)


def test_unexpected_error_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    """A bug (TypeError, ...) is no user error: exit 1, one line that asks for --debug and a report."""
    import xoceandiff.parallel

    monkeypatch.setattr(xoceandiff.parallel, "generate_to_netcdf", _raise(TypeError("unsupported operand")))
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--out", str(tmp_path / "x.nc")], capsys)
    assert code == 1 and err.count("\n") == 1 and "--debug" in err and "Traceback" not in err
    monkeypatch.setattr(xoceandiff.parallel, "generate_to_netcdf", _raise(KeyboardInterrupt()))
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--out", str(tmp_path / "x.nc")], capsys)
    assert code == 130 and err == "xoceandiff sample: interrupted\n"


def test_corrupted_checkpoint_config(tmp_path, capsys):
    """A config edited (and re-hashed) to a wrong sample size: torch's shape error, as one line."""
    from xoceandiff.checkpoint import checkpoint_sha256
    from xoceandiff.pretrained import bundled_checkpoint

    folder = tmp_path / "corrupt"
    shutil.copytree(bundled_checkpoint(), folder)
    document = json.loads((folder / "config.json").read_text())
    document["model"]["sample_size"] = document["model"]["sample_size"][::-1]
    document["checkpoint_sha256"] = checkpoint_sha256(document)
    (folder / "config.json").write_text(json.dumps(document))
    code, err = run_main(["sample", "--checkpoint", str(folder), "--n", "1", "--chunks", "1", "--steps", "1",
                          "--out", str(tmp_path / "x.nc")], capsys)
    assert_one_line(code, err, "sample")
    assert not (tmp_path / "x.nc").exists()
    (folder / "config.json").write_text("{ not json")
    code, err = run_main(["sample", "--checkpoint", str(folder), "--n", "1", "--chunks", "1", "--out",
                          str(tmp_path / "x.nc")], capsys)
    assert_one_line(code, err, "sample", "config")


def test_garbage_netcdf_inputs(files, tmp_path, capsys):
    garbage, out = files["garbage"], str(tmp_path / "out")
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--mesh-mask", garbage, "--out", out + ".nc"], capsys)
    assert_one_line(code, err, "sample", garbage, "not a readable NetCDF", "mesh_mask.nc")
    code, err = run_main(["train", "--data", garbage, "--mesh-mask", files["mesh_mask"], "--out", out], capsys)
    assert_one_line(code, err, "train", "--data", garbage, "cannot read")
    code, err = run_main(["restart", garbage, "--out", out], capsys)
    assert_one_line(code, err, "restart", "samples file", garbage)
    code, err = run_main(["diagnose", garbage, "--out", out, "--no-figures"], capsys)
    assert_one_line(code, err, "diagnose", garbage)
    code, err = run_main(["restart", files["samples"], "--mesh-mask", garbage, "--out", out], capsys)
    assert_one_line(code, err, "restart", garbage, "mesh_mask")
    assert not os.path.exists(out)


def test_mesh_mask_given_a_data_file(files, tmp_path, capsys):
    data_file = files["grid_T_3D"]
    with pytest.raises(MissingVariableError, match="looks like a data file"):
        xoceandiff.nemo.open_grid(data_file)
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--mesh-mask", data_file, "--out",
                          str(tmp_path / "x.nc")], capsys)
    assert_one_line(code, err, "sample", data_file, "looks like a data file", "mesh_mask.nc")
    code, err = run_main(["train", "--data", data_file, "--mesh-mask", data_file, "--out", str(tmp_path / "r")], capsys)
    assert_one_line(code, err, "train", "looks like a data file")


def test_all_land_grid(files, tmp_path, capsys):
    with pytest.raises(InvalidDataError, match="no ocean cell"):
        xoceandiff.nemo.open_grid(files["all_land"])
    code, err = run_main(["sample", "--n", "1", "--chunks", "1", "--mesh-mask", files["all_land"], "--out",
                          str(tmp_path / "x.nc")], capsys)
    assert_one_line(code, err, "sample", files["all_land"], "no ocean cell")
    code, err = run_main(["restart", files["samples"], "--mesh-mask", files["all_land"], "--out",
                          str(tmp_path / "rst")], capsys)
    assert_one_line(code, err, "restart", "no ocean cell")
    assert not (tmp_path / "rst").exists()


def test_debug_shows_the_traceback(files, tmp_path, capsys):
    args = ["sample", "--n", "1", "--chunks", "1", "--mesh-mask", files["garbage"], "--out", str(tmp_path / "x.nc")]
    result, _ = run_cli(["--debug", *args], tmp_path)
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "InvalidDataError" in result.stderr and "not a readable NetCDF" in result.stderr
    with pytest.raises(InvalidDataError):  # --debug after the subcommand too
        main([*args, "--debug"])
    assert_one_line(*run_main(args, capsys), "sample")  # and without it, one line


# --- what the CLI keeps in its own lists equals the library's ---------------------------------------------


def test_name_lists_match_the_library():
    from xoceandiff.constraints import ALIASES, CONSTRAINTS
    from xoceandiff.conventions import CONSTRAINT_NAMES
    from xoceandiff.demo import DEMO_MIN_SAMPLES
    from xoceandiff.model import PRESETS
    from xoceandiff.sampling import SAMPLERS

    assert set(CONSTRAINT_NAMES) == set(CONSTRAINTS) | set(ALIASES)
    assert len(CONSTRAINT_NAMES) == len(set(CONSTRAINT_NAMES))
    assert set(cli.SAMPLER_NAMES) == set(SAMPLERS)
    assert set(cli.PRESET_NAMES) == set(PRESETS)
    assert cli.DEMO_MIN_SAMPLES == DEMO_MIN_SAMPLES


def test_scheduler_addresses_and_files(tmp_path):
    assert cli._scheduler("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    assert cli._scheduler("node12:8786") == "node12:8786"
    assert cli._scheduler("tls://[::1]:8786") == "tls://[::1]:8786"
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": "tcp://10.1.2.3:41000"}))
    assert cli._scheduler(str(scheduler_file)) == "tcp://10.1.2.3:41000"
    for wrong in ("foo://", "tcp://host", "http://x y:1", str(tmp_path / "missing.json")):
        with pytest.raises(Exception, match="tcp://host:port"):
            cli._scheduler(wrong)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(Exception, match="scheduler file"):
        cli._scheduler(str(tmp_path / "bad.json"))
    assert cli._levels("0,2,4") == [0, 2, 4] and cli._levels("all") == "all"


# --- the small items: prefixes, namelist strings, the demo, folders left behind ---------------------------


def test_to_nemo_files_refuses_a_prefix_with_folders(tmp_path):
    data = xoceandiff.datasets.dino(n=1, resolution=4.0)
    for prefix in ("../../x", "sub/x", "..", "", "a\nb"):
        with pytest.raises(InvalidDataError, match="prefix"):
            data.oceandiff.to_nemo_files(tmp_path / "a" / "b", prefix=prefix)
    assert list(tmp_path.iterdir()) == []


def _fortran_value(text: str, name: str) -> str:
    """The value of ``name = "..."`` (or '...') in a namelist, quotes undoubled, as Fortran reads it."""
    match = re.search(rf"^\s*{name}\s*=\s*(\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*')", text, flags=re.MULTILINE)
    assert match, text
    quoted = match.group(1)
    quote = quoted[0]
    return quoted[1:-1].replace(quote * 2, quote)


def test_namelists_escape_fortran_strings(tmp_path):
    states = xoceandiff.datasets.dino(n=1, resolution=4.0)
    folder = tmp_path / 'run "A" it\'s'
    xoceandiff.restart.to_restart(states, folder)
    text = (folder / "namelist_restart.txt").read_text()
    assert _fortran_value(text, "cn_ocerst_indir") == str(folder.resolve())
    assert _fortran_value(text, "cn_ocerst_in") == "restart_s000_xoceandiff"
    xoceandiff.restart.to_initial_state(states, folder / "ini")
    text = (folder / "ini" / "namelist_initial_state.txt").read_text()
    assert _fortran_value(text, "cn_dir") == f"{(folder / 'ini').resolve()}/"
    assert _fortran_value(text, "sn_tem") == "initial_s000_temperature_nomask"


def test_namelist_strings_refuse_newlines_before_writing(tmp_path):
    states = xoceandiff.datasets.dino(n=1, resolution=4.0)
    with pytest.raises(InvalidDataError, match="newline"):
        xoceandiff.restart.to_restart(states, tmp_path / "a\nb")
    with pytest.raises(InvalidDataError, match="newline"):
        xoceandiff.restart.to_initial_state(states, tmp_path / "a\nb")
    with pytest.raises(InvalidDataError, match="prefix"):
        xoceandiff.restart.to_initial_state(states, tmp_path / "ini", prefix="../x")
    assert list(tmp_path.iterdir()) == []


def test_restart_folder_removed_when_a_write_fails(tmp_path, monkeypatch):
    """A failure after the first file: no file, and no folder the writer made (one that existed stays)."""
    import xoceandiff.restart

    states = xoceandiff.datasets.dino(n=3, resolution=4.0)
    real = xoceandiff.restart._write_netcdf
    calls = []

    def write(ds, tmp):
        calls.append(tmp)
        if len(calls) % 2 == 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        real(ds, tmp)

    monkeypatch.setattr(xoceandiff.restart, "_write_netcdf", write)
    with pytest.raises(OSError):
        xoceandiff.restart.to_restart(states, tmp_path / "made" / "rst")
    assert not (tmp_path / "made").exists()
    with pytest.raises(OSError):
        xoceandiff.restart.to_initial_state(states, tmp_path / "ini")
    assert not (tmp_path / "ini").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError):
        xoceandiff.restart.to_restart(states, tmp_path / "kept")
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_demo_checks_its_arguments_first(tmp_path):
    from xoceandiff.demo import run_demo

    for kwargs in ({"n": 1}, {"n": 2.5}, {"sampler": "euler"}, {"steps": 0}, {"seed": -1}):
        start = time.perf_counter()
        with pytest.raises(InvalidDataError):
            run_demo(tmp_path / "demo", **{"n": 2, **kwargs})
        assert time.perf_counter() - start < 1.0, kwargs  # before the model or the data is loaded
    assert not (tmp_path / "demo").exists()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "samples_stable.nc").write_text("")
    with pytest.raises(OutputExistsError, match="samples_stable.nc"):
        run_demo(tmp_path / "demo", n=2)
