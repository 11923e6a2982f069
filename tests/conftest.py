"""Shared fixtures: small DINO-like datasets and their NEMO-style files."""

from __future__ import annotations

import dask
import pytest
import torch

import xoceandiff
from xoceandiff.constraints import ConstraintContext
from xoceandiff.layout import Layout, to_tensor
from xoceandiff.normalisation import Normaliser, normalise, statistics


class ComputeCounter(dask.callbacks.Callback):
    """Counts dask graph executions (each compute/persist/.values of a dask object is one)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _start(self, dsk) -> None:
        self.count += 1


@pytest.fixture
def compute_counter():
    with ComputeCounter() as counter:
        yield counter


@pytest.fixture(scope="session")
def small_dino():
    """12 snapshots of the 4-degree DINO-like grid (51 x 17 x 36)."""
    return xoceandiff.datasets.dino(n=12, resolution=4.0, seed=3, chunks=5)


@pytest.fixture(scope="session")
def small_nemo_files(small_dino, tmp_path_factory):
    """The small dataset written as NEMO writes it: grid_T_3D, grid_T_2D and mesh_mask.nc."""
    folder = tmp_path_factory.mktemp("nemo")
    return small_dino.oceandiff.to_nemo_files(folder)


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: intra-op threads only add overhead (a lot on a busy machine); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def chunked_dino():
    """8 snapshots of the 4-degree grid in one dask chunk: the data of the chunked-generation tests."""
    return xoceandiff.datasets.dino(n=8, resolution=4.0, seed=2, chunks=8)


@pytest.fixture(scope="session")
def saved_tiny_model(chunked_dino, tmp_path_factory):
    """A tiny model trained 3 steps on ``chunked_dino`` and saved (workers load checkpoints from disk)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ckpt")
    trained = xoceandiff.training.train(chunked_dino, "tiny", steps=3, batch_size=4, progress=False,
                                        checkpoint_dir=folder)
    torch.set_num_threads(threads)
    return trained


@pytest.fixture(scope="session")
def constraint_case():
    """Two 4-degree snapshots, their layout, 3-std normaliser, float64 constraint context and tensors."""
    dino = xoceandiff.datasets.dino(n=2, resolution=4.0, seed=11)
    layout = Layout.from_dataset(dino)
    norm = Normaliser.from_statistics(statistics(dino), scheme="3-std")
    ctx = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64)
    data = to_tensor(normalise(dino, norm), layout).double()
    return dino, (layout, norm, ctx, data)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say in the log whether the tests on the local SLURM ran, were skipped or failed (CI must show they ran)."""
    outcomes = []
    for status in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(status, []):
            if getattr(report, "nodeid", "").startswith("tests/test_slurm.py") and report.when in ("call", "setup"):
                if status == "passed" and report.when != "call":
                    continue
                outcomes.append(f"{report.nodeid.split('::')[-1]}: {status}")
    if outcomes:
        terminalreporter.write_sep("-", "tests on the local SLURM")
        for line in outcomes:
            terminalreporter.write_line(line)
