"""GridOps against xgcm: diff, interp and average on random fields, periodic and walled grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import xoceandiff
from xoceandiff.errors import GridMismatchError, MissingVariableError
from xoceandiff.grid import build_grid
from xoceandiff.gridops import GridOps
from xoceandiff.layout import Layout


@pytest.fixture(scope="module")
def dino():
    return xoceandiff.datasets.dino(n=1, resolution=4.0, seed=7)


@pytest.fixture(scope="module", params=[1, 0], ids=["periodic", "walls"])
def case(request, dino):
    """A periodic (Iperio=1) and a walled (Iperio=0) copy of the grid, with float64 GridOps."""
    ds = dino.assign_attrs(Iperio=request.param)
    grid = build_grid(ds)
    layout = Layout.from_dataset(ds)
    ops = GridOps.from_dataset(ds, layout, grid=grid, dtype=torch.float64)
    return ds, grid, layout, ops


def _random_state(layout: Layout, ops: GridOps, batch: int = 2, seed: int = 0):
    """Random interior values and random garbage on the padding (which must never leak in)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(batch, layout.channels, layout.ny, layout.nx))
    x = torch.from_numpy(rng.normal(size=(batch, layout.channels, *layout.shape)) * 100)
    ops.unpad(x)[:] = torch.from_numpy(values)
    return values, x


@pytest.mark.parametrize(
    "method, xgcm_name, axis",
    [
        ("diff_x", "diff", "X"),
        ("diff_y", "diff", "Y"),
        ("interp_x", "interp", "X"),
        ("interp_y", "interp", "Y"),
    ],
)
def test_stencils_match_xgcm(case, method, xgcm_name, axis):
    ds, grid, layout, ops = case
    values, x = _random_state(layout, ops)
    expected = getattr(grid, xgcm_name)(
        xr.DataArray(values, dims=("b", "c", "y_c", "x_c")), axis
    )
    assert expected.dims[-2:] == (("y_f", "x_c") if axis == "Y" else ("y_c", "x_f"))
    out = getattr(ops, method)(x)
    np.testing.assert_allclose(ops.unpad(out).numpy(), expected.values, rtol=0, atol=1e-12)
    # nothing on the padding
    assert float(out[..., ~ops.interior].abs().max()) == 0.0
    # the same in float32, to 1e-6
    ops32 = ops.to(dtype=torch.float32)
    out32 = getattr(ops32, method)(x.float())
    np.testing.assert_allclose(ops32.unpad(out32).numpy(), expected.values, rtol=0, atol=1e-5)


def test_east_edge_follows_iperio(case):
    ds, grid, layout, ops = case
    values, x = _random_state(layout, ops, batch=1)
    last = ops.unpad(ops.diff_x(x))[..., -1].numpy()
    if ds.attrs["Iperio"] == 1:
        assert ops.x.padding == "periodic"
        np.testing.assert_allclose(last, values[..., 0] - values[..., -1], atol=1e-12)
    else:
        assert ops.x.padding == "fill"
        np.testing.assert_allclose(last, -values[..., -1], atol=1e-12)
    assert ops.y.padding == "fill"
    np.testing.assert_allclose(
        ops.unpad(ops.diff_y(x))[..., -1, :].numpy(), -values[..., -1, :], atol=1e-12
    )


def test_average_matches_xgcm(case):
    ds, grid, layout, ops = case
    values, x = _random_state(layout, ops)
    mask = xr.DataArray(ops.unpad(ops.mask).numpy(), dims=("c", "y_c", "x_c"))
    da = xr.DataArray(values, dims=("b", "c", "y_c", "x_c")).assign_coords(e1t=ds.e1t, e2t=ds.e2t)
    expected = grid.average(da.where(mask), ["X", "Y"]).transpose("b", "c").values
    np.testing.assert_allclose(ops.average_xy(x).numpy(), expected, rtol=1e-12, atol=0)
    ops32 = ops.to(dtype=torch.float32)
    np.testing.assert_allclose(ops32.average_xy(x.float()).numpy(), expected, rtol=0, atol=1e-6)


def test_masks_areas_volumes(case):
    ds, grid, layout, ops = case
    tmask = ds.tmask.values
    levels = list(layout.levels)
    mask = ops.unpad(ops.mask).numpy()
    np.testing.assert_array_equal(mask[: len(levels)], tmask[levels])  # toce
    np.testing.assert_array_equal(mask[len(levels) : 2 * len(levels)], tmask[levels])  # soce
    np.testing.assert_array_equal(mask[-1], tmask[0])  # ssh: the surface
    assert not ops.mask[:, ~ops.interior].any()
    area = (ds.e1t * ds.e2t).values
    np.testing.assert_allclose(ops.unpad(ops.area).numpy(), np.where(mask, area, 0.0), rtol=1e-12)
    volume = np.where(tmask[levels], area * ds.e3t.values[levels], 0.0)
    np.testing.assert_allclose(ops.unpad(ops.volume).numpy(), volume, rtol=1e-12)
    assert float(ops.total_volume) == pytest.approx(volume.sum(), rel=1e-12)
    assert ops.n_wet == int(tmask[levels].sum())
    both = tmask[levels][:-1] & tmask[levels][1:]
    np.testing.assert_allclose(
        ops.unpad(ops.interface_weight).numpy(),
        np.where(both, volume[1:], 0.0) / volume.sum(),
        rtol=1e-12,
    )
    np.testing.assert_allclose(ops.area_weight.sum(dim=(-2, -1)).numpy(), 1.0, rtol=1e-12)


def test_dtype_device_and_copy(case):
    ds, grid, layout, ops = case
    ops32 = GridOps.from_dataset(ds, layout, device="cpu")
    assert ops32.dtype == torch.float32 and ops32.device.type == "cpu"
    assert ops32.mask.dtype == torch.bool and ops32.gather_x.dtype == torch.long
    moved = ops32.to(dtype=torch.float64)
    assert moved.area.dtype == torch.float64 and moved.x.valid.dtype == torch.float64
    assert moved.mask.dtype == torch.bool and moved.x.index.dtype == torch.long
    torch.testing.assert_close(moved.area, ops.area)


def test_errors(dino):
    layout = Layout.from_dataset(dino)
    other = xoceandiff.datasets.dino(n=1, resolution=5.0)
    with pytest.raises(GridMismatchError, match="layout is for a grid"):
        GridOps.from_dataset(other, layout)
    with pytest.raises(MissingVariableError, match="e1t"):
        GridOps.from_dataset(dino.drop_vars("e1t"), layout)
