"""Resumable jobs lose nothing, mix nothing, mislabel nothing: keyed parts, the output lock, size checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import xarray as xr

from xoceandiff import parallel
from xoceandiff.errors import InvalidDataError, OutputExistsError
from xoceandiff.parallel import connect, generate_to_netcdf, output_lock, part_paths, sample_lazy

KW = dict(sampler="ddim", steps=2)


@pytest.fixture
def data(chunked_dino):
    return chunked_dino


@pytest.fixture
def model(saved_tiny_model):
    return saved_tiny_model


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_rerun_with_other_settings_refuses_mixed_parts(data, model, tmp_path):
    # A job killed after 2 of 4 parts, re-run with another seed: refused, naming the seed, never mixed.
    checkpoint = str(model.checkpoint_path)
    command = [sys.executable, "-m", "xoceandiff.cli", "sample", "--checkpoint", checkpoint, "--n", "8",
               "--chunks", "2", "--sampler", "ddim", "--steps", "60", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = tmp_path / "killed.nc"
    parts = part_paths(target, 8, 2)
    process = subprocess.Popen([*command, "--out", str(target)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while sum(p.exists() for p in parts) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sum(p.exists() for p in parts)
    assert 0 < done < len(parts), f"kill came at a bad moment ({done} parts)"
    first = next(p for p in parts if p.exists())
    manifest = json.loads((first.parent / parallel.MANIFEST_NAME).read_text())
    assert manifest["settings"]["seed"] == 0
    with xr.open_dataset(first) as part:
        assert part.attrs[parallel.RUN_KEY_ATTR] == manifest["key"]
    # the killed job's lock is stale (its pid is dead): taken over, then the other seed is refused
    assert Path(f"{target}.lock").exists()
    with pytest.raises(OutputExistsError, match=r"parts of another run \(seed is 0 there and 1 now\).*--overwrite"):
        generate_to_netcdf(data, 8, out=target, model=model, chunks=2, sampler="ddim", steps=60, seed=1)
    assert sum(p.exists() for p in parts) == done and not target.exists()
    assert not Path(f"{target}.lock").exists()  # released on the error
    # other steps or constraints are refused just the same
    with pytest.raises(OutputExistsError, match="steps is 60 there and 2 now"):
        generate_to_netcdf(data, 8, out=target, model=model, chunks=2, sampler="ddim", steps=2, seed=0)
    with pytest.raises(OutputExistsError, match=r"constraints is \[\] there and \[\"ZeroMean\(stable=.end., .*\)\"\] now"):
        generate_to_netcdf(data, 8, ["zero_mean"], out=target, model=model, chunks=2, sampler="ddim", steps=60)
    # a part recorded under another key is never reused: it is computed again
    with xr.open_dataset(first) as part:
        foreign = part.load()
    foreign.attrs[parallel.RUN_KEY_ATTR] = "0" * 64
    first.unlink()
    foreign.to_netcdf(first)
    with pytest.warns(RuntimeWarning, match="not written by this run"):
        generate_to_netcdf(data, 8, out=target, model=model, chunks=2, sampler="ddim", steps=60, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.nc"]
    # --overwrite discards the parts of another run
    generate_to_netcdf(data, 2, out=tmp_path / "b.nc", model=model, chunks=1, seed=0, keep_parts=True, **KW)
    (tmp_path / "b.nc.parts").rename(tmp_path / "c.nc.parts")
    with pytest.raises(OutputExistsError, match="seed is 0 there and 5 now"):
        generate_to_netcdf(data, 2, out=tmp_path / "c.nc", model=model, chunks=1, seed=5, **KW)
    generate_to_netcdf(data, 2, out=tmp_path / "c.nc", model=model, chunks=1, seed=5, overwrite=True, **KW)
    with xr.open_dataset(tmp_path / "c.nc") as written:
        assert written.attrs["seed"] == 5
    assert not (tmp_path / "c.nc.parts").exists()


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(data, model, tmp_path):
    out = tmp_path / "samples.nc"
    with output_lock(out) as lock:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        start = time.perf_counter()
        with pytest.raises(OutputExistsError, match=rf"being written by process {os.getpid()} on "):
            generate_to_netcdf(data, 2, out=out, model=model, chunks=1, **KW)
        assert time.perf_counter() - start < 5
        with pytest.raises(OutputExistsError, match="lock"):
            with output_lock(out):
                pass
    assert not lock.exists()
    # a lock on another host cannot be checked: refused, with the way out
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "2026-01-01T00:00:00"}))
    with pytest.raises(OutputExistsError, match="process 1 on elsewhere.example.*delete the lock file"):
        generate_to_netcdf(data, 2, out=out, model=model, chunks=1, **KW)
    # the lock of a dead process of this host is stale: taken over, and removed at the end
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "then"}))
    generate_to_netcdf(data, 2, out=out, model=model, chunks=1, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.nc"]


def test_huge_requests_refused_up_front(data, model, tmp_path, monkeypatch):
    # measured on a shared 2-core machine: 0.03 s for each refusal (the graph of 10**6 tasks took minutes)
    cases = [
        (dict(n=10**7, chunks=10), r"1,000,000 tasks, more than the 20,000 .* Use chunks=500 or more"),
        (dict(n=10**8, chunks=10**8), r"one chunk of 100000000 samples needs about .* GiB.* Use chunks=\d+ or fewer"),
    ]
    for kwargs, message in cases:
        start = time.perf_counter()
        with pytest.raises(InvalidDataError, match=message):
            sample_lazy(data, model=model, **kwargs, **KW)
        assert time.perf_counter() - start < 5
        start = time.perf_counter()
        with pytest.raises(InvalidDataError, match=message):
            generate_to_netcdf(data, out=tmp_path / "huge.nc", model=model, **kwargs, **KW)
        assert time.perf_counter() - start < 5
    # the disk: a request larger than the free space of the output's file system
    monkeypatch.setattr(parallel.shutil, "disk_usage", lambda path: type("U", (), {"free": 10 * 2**20})())
    start = time.perf_counter()
    with pytest.raises(InvalidDataError, match=r"need about .* GiB on the file system .* only 0.01 GiB are free"):
        generate_to_netcdf(data, 1000, out=tmp_path / "sub" / "big.nc", model=model, chunks=100, **KW)
    assert time.perf_counter() - start < 5
    assert list(tmp_path.iterdir()) == []  # nothing created: no folder, no parts, no lock


def test_no_empty_parts_folder_after_an_early_failure(data, model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("worker died")

    monkeypatch.setattr(parallel, "_chunk_values", broken)
    out = tmp_path / "samples.nc"
    with pytest.raises(RuntimeError, match="worker died"):
        generate_to_netcdf(data, 4, out=out, model=model, chunks=2, **KW)
    assert list(tmp_path.iterdir()) == []


def test_local_workers_zero_refused():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidDataError, match="local_workers: expected a positive number"):
            connect(local_workers=bad)


def test_parts_are_compressed(data, model, tmp_path):
    out = tmp_path / "samples.nc"
    generate_to_netcdf(data, 2, out=out, model=model, chunks=2, keep_parts=True, **KW)
    (part,) = part_paths(out, 2, 2)
    with xr.open_dataset(part) as ds:
        assert ds.toce.encoding["zlib"] and ds.toce.encoding["complevel"] == 4
        assert all(ds[name].encoding.get("zlib") for name in ("toce", "soce", "ssh", "e3t", "glamt"))
        raw = sum(var.nbytes for var in ds.variables.values())
    # measured: 0.61 MB on disk for 1.67 MB of values (the grid included); uncompressed parts were larger than raw
    assert part.stat().st_size < raw / 2, (part.stat().st_size, raw)


def test_local_cluster_has_no_dashboard():
    pytest.importorskip("distributed")
    client = connect(local_workers=1)
    try:
        cluster = client.cluster
        sockets = [s.getsockname() for s in cluster.scheduler.http_server._sockets.values()]
        assert sockets and all(host == "127.0.0.1" and port != 8787 for host, port, *_ in sockets), sockets
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{sockets[0][1]}/status", timeout=10)
        assert info.value.code == 404  # no dashboard pages
        worker_dashboards = client.run(lambda dask_worker: bool(dask_worker._dashboard))
        assert set(worker_dashboards.values()) == {False}
    finally:
        client.close()
        cluster.close()
