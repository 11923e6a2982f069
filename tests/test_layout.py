"""Tests of xoceandiff.layout: the reference's tensor layout, exact inverses, depth interpolation, grid checks."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import xarray as xr

import xoceandiff
from xoceandiff.errors import GridMismatchError, InvalidDataError, MissingVariableError
from xoceandiff.layout import (
    Layout,
    check_fingerprint,
    from_tensor,
    grid_fingerprint,
    to_numpy,
    to_tensor,
)
from xoceandiff.normalisation import Normaliser, normalise, statistics

GRID_COORDS = ("tmask", "e1t", "e2t", "e3t", "gdept_1d", "glamt", "gphit", "x_c", "y_c", "z_c")


@pytest.fixture(scope="module")
def raw1() -> xr.Dataset:
    return xoceandiff.datasets.dino(n=3, resolution=1.0, seed=2)


@pytest.fixture(scope="module")
def norm1(raw1) -> Normaliser:
    return Normaliser.from_statistics(statistics(raw1), scheme="3-std")


@pytest.fixture(scope="module")
def normed1(raw1, norm1) -> xr.Dataset:
    return normalise(raw1, norm1).compute()


@pytest.fixture(scope="module")
def layout1(raw1) -> Layout:
    return Layout.from_dataset(raw1)


@pytest.fixture(scope="module")
def tensor1(normed1, layout1) -> torch.Tensor:
    return to_tensor(normed1, layout1)


@pytest.fixture(scope="module")
def back1(tensor1, layout1, raw1) -> xr.Dataset:
    return from_tensor(tensor1, layout1, raw1)


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    return xoceandiff.datasets.dino(n=4, resolution=4.0, seed=5).compute()


def _interp_columns(values: np.ndarray, kept_depths: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """np.interp in depth, column by column: values (K, ncol) on kept_depths -> (nz, ncol) on depths."""
    return np.stack([np.interp(depths, kept_depths, values[:, c]) for c in range(values.shape[1])], axis=1)


# --- the reference layout at 1° --------------------------------------------------------------------


def test_reference_layout(layout1):
    assert layout1.fields == ("toce", "soce", "ssh")
    assert layout1.levels == tuple(range(0, 35, 2)) and len(layout1.levels) == 18
    assert layout1.channels == 37
    assert (layout1.ny, layout1.nx, layout1.n_levels) == (199, 62, 36)
    assert layout1.shape == (208, 64)
    assert layout1.padding == ((5, 4), (1, 1))
    assert layout1.channel_slices == {"toce": slice(0, 18), "soce": slice(18, 36), "ssh": slice(36, 37)}
    assert layout1.channel_names[:2] == ("toce[0]", "toce[2]") and layout1.channel_names[-1] == "ssh"


def test_to_tensor_channels_padding_and_land(tensor1, normed1, raw1):
    x = tensor1.numpy()
    assert tensor1.dtype == torch.float32 and x.shape == (3, 37, 208, 64)
    # padding: 5 rows south (first), 4 north, 1 column each side
    assert not x[:, :, :5].any() and not x[:, :, -4:].any()
    assert not x[:, :, :, :1].any() and not x[:, :, :, -1:].any()
    plane = x[:, :, 5:204, 1:63]
    ocean = raw1.tmask.values
    expected_toce = np.nan_to_num(normed1.toce.values[:, 0:35:2])
    expected_soce = np.nan_to_num(normed1.soce.values[:, 0:35:2])
    np.testing.assert_array_equal(plane[:, :18], expected_toce)
    np.testing.assert_array_equal(plane[:, 18:36], expected_soce)
    np.testing.assert_array_equal(plane[:, 36], np.nan_to_num(normed1.ssh.values))
    assert not plane[:, :18][:, ~ocean[0:35:2]].any()  # land is 0
    assert np.abs(plane[:, :18][:, ocean[0:35:2]]).min() > 0  # ocean is not


def test_from_tensor_exact_on_kept_levels_and_nan_on_land(back1, normed1, raw1):
    assert dict(back1.toce.sizes) == {"sample": 3, "z_c": 36, "y_c": 199, "x_c": 62}
    assert back1.ssh.dims == ("sample", "y_c", "x_c")
    for name in ("toce", "soce"):
        np.testing.assert_array_equal(back1[name].values[:, 0:35:2], normed1[name].values[:, 0:35:2])
        np.testing.assert_array_equal(np.isnan(back1[name].values), ~raw1.tmask.values[None].repeat(3, 0))
    np.testing.assert_array_equal(back1.ssh.values, normed1.ssh.values)
    assert back1.toce.dtype == np.float32


def test_from_tensor_interpolates_in_depth(back1, normed1, raw1):
    depths = raw1.gdept_1d.values
    kept = list(range(0, 35, 2))
    ocean = raw1.tmask.values[0]
    columns = np.flatnonzero(ocean.ravel())[::37]  # a few hundred ocean columns
    for name in ("toce", "soce"):
        for s in range(3):
            values = normed1[name].values[s, kept].reshape(len(kept), -1)[:, columns].astype(np.float64)
            expected = _interp_columns(values, depths[kept], depths[:35])
            got = back1[name].values[s, :35].reshape(35, -1)[:, columns]
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
            # depth, not level index: the levels are unevenly spaced, so the two differ
            by_index = _interp_columns(values, np.asarray(kept, float), np.arange(35.0))
            assert np.abs(by_index - expected).max() > 1e-3


def test_from_tensor_grid_coordinates_and_attrs(back1, raw1):
    for name in GRID_COORDS:
        assert name in back1.coords, name
        xr.testing.assert_identical(back1[name].reset_coords(drop=True), raw1[name].reset_coords(drop=True))
    assert "t" not in back1.coords and list(back1.sample.values) == [0, 1, 2]
    assert back1.attrs["Iperio"] == raw1.attrs["Iperio"]
    assert "xoceandiff.from_tensor" in back1.attrs["history"]


def test_from_tensor_inputs_and_normaliser(tensor1, layout1, raw1, norm1, back1):
    from_numpy = from_tensor(tensor1.numpy(), layout1, raw1)
    xr.testing.assert_identical(from_numpy.drop_attrs(), back1.drop_attrs())
    one = from_tensor(tensor1[1], layout1, raw1, dim="member")
    assert dict(one.toce.sizes)["member"] == 1
    np.testing.assert_array_equal(one.toce.values[0], back1.toce.values[1])
    physical = from_tensor(tensor1, layout1, raw1, normaliser=norm1)
    assert physical.toce.attrs["units"] == "degC"
    np.testing.assert_allclose(physical.toce.values[:, 0:35:2], raw1.toce.values[:, 0:35:2], rtol=2e-6)
    np.testing.assert_allclose(physical.ssh.values, raw1.ssh.values, rtol=1e-5, atol=1e-6)


def test_to_tensor_computes_once_and_takes_sample_dim(small, compute_counter):
    lazy = small.chunk({"t": 2}).rename(t="sample")
    layout = Layout.from_dataset(small)
    before = compute_counter.count
    x = to_tensor(lazy, layout)
    assert compute_counter.count - before == 1  # one dask compute for all fields
    np.testing.assert_array_equal(x.numpy(), to_numpy(small, layout, dim="t"))
    single = to_numpy(small.isel(t=0), layout)
    np.testing.assert_array_equal(single[0], x.numpy()[0])


# --- levels and depth interpolation per column -----------------------------------------------------


def test_extrapolation_above_and_below_the_kept_levels(small):
    layout = Layout.from_dataset(small, levels=[2, 10, 20], fields=["toce"])
    assert layout.channels == 3 and layout.fields == ("toce",)
    back = from_tensor(to_tensor(small, layout), layout, small)
    depths = small.gdept_1d.values
    toce = back.toce.values
    np.testing.assert_array_equal(toce[:, 0], toce[:, 2])  # above the shallowest: its value
    np.testing.assert_array_equal(toce[:, 34], toce[:, 20])  # below the deepest: its value
    ocean = small.tmask.values[0]
    kept = small.toce.values[:, [2, 10, 20]][..., ocean].astype(np.float64)  # (t, 3, ncol)
    for t in range(kept.shape[0]):
        expected = _interp_columns(kept[t], depths[[2, 10, 20]], depths[:35])
        np.testing.assert_allclose(toce[t, :35][..., ocean], expected, rtol=1e-6)


def test_shallow_columns_take_their_deepest_kept_level(small):
    """Where a column ends between kept levels, dropped levels do not interpolate towards land (0)."""
    tmask = small.tmask.values.copy()
    tmask[20:, 10:30, 3:9] = False  # a shelf: only levels 0-19 are ocean there
    shelf = small.assign_coords(tmask=(("z_c", "y_c", "x_c"), tmask))
    shelf = shelf.assign(toce=shelf.toce.where(shelf.tmask), soce=shelf.soce.where(shelf.tmask))
    layout = Layout.from_dataset(shelf)
    back = from_tensor(to_tensor(shelf, layout), layout, shelf)
    toce = back.toce.values
    np.testing.assert_array_equal(toce[:, 19, 10:30, 3:9], toce[:, 18, 10:30, 3:9])
    assert np.isnan(toce[:, 20:, 10:30, 3:9]).all()
    depths = small.gdept_1d.values
    weight = (depths[19] - depths[18]) / (depths[20] - depths[18])
    deep = slice(35, 45), slice(3, 9)  # a full column elsewhere interpolates as usual
    expected = toce[:, 18][:, deep[0], deep[1]] + weight * (toce[:, 20] - toce[:, 18])[:, deep[0], deep[1]]
    np.testing.assert_allclose(toce[:, 19][:, deep[0], deep[1]], expected, rtol=1e-6)


def test_level_choices(small, raw1):
    assert Layout.from_dataset(small, levels="all").levels == tuple(range(35))
    assert Layout.from_dataset(small, levels="all").channels == 71
    assert Layout.from_dataset(small, fields=["ssh"]).channels == 1
    eight = Layout.from_dataset(raw1, multiple=8)  # the least the U-Net needs; the reference used 208
    assert eight.shape == (200, 64) and eight.padding == ((1, 0), (1, 1))
    with pytest.raises(InvalidDataError, match="strictly increasing"):
        Layout.from_dataset(small, levels=[4, 2])
    with pytest.raises(InvalidDataError, match=r"in \[0, 36\)"):
        Layout.from_dataset(small, levels=[0, 36])
    with pytest.raises(InvalidDataError, match="'every-other', 'all'"):
        Layout.from_dataset(small, levels="odd")
    with pytest.raises(MissingVariableError, match="gdept_1d"):
        Layout.from_dataset(small.drop_vars("gdept_1d"))


def test_layout_serialisation(layout1):
    data = json.loads(json.dumps(layout1.to_dict(), allow_nan=False))
    assert data["channels"] == 37 and data["shape"] == [208, 64] and data["padding"] == [[5, 4], [1, 1]]
    again = Layout.from_dict(data)
    assert again == layout1 and hash(again) == hash(layout1)
    with pytest.raises(InvalidDataError, match="'channels' says 36"):
        Layout.from_dict({**data, "channels": 36})
    with pytest.raises(InvalidDataError, match="missing keys"):
        Layout.from_dict({"fields": ["toce"]})
    with pytest.raises(AttributeError):
        layout1.ny = 10  # frozen


# --- errors ----------------------------------------------------------------------------------------


def test_tensor_errors(small, layout1, tensor1, raw1):
    layout = Layout.from_dataset(small)
    with pytest.raises(GridMismatchError, match=r"\(36, 199, 62\) but the dataset has \(36, 51, 17\)"):
        to_tensor(small, layout1)
    holes = small.copy()
    holes["toce"] = small.toce.where(~((small.z_c == 4) & (small.y_c == 20) & (small.x_c == 5)))
    with pytest.raises(InvalidDataError, match=r"toce: 4 ocean cells hold NaN \(first at record 0, level 4, y_c=20, x_c=5\)"):
        to_tensor(holes, layout)
    with pytest.raises(InvalidDataError, match=r"shape \(records, 37, 208, 64\).*found \(3, 36, 208, 64\)"):
        from_tensor(tensor1[:, :36], layout1, raw1)
    with pytest.raises(GridMismatchError, match="layout is for a grid of"):
        from_tensor(tensor1, layout1, small)
    with pytest.raises(MissingVariableError, match="lacks \\['ssh'\\]"):
        to_tensor(small.drop_vars("ssh"), layout)


# --- grid fingerprint ------------------------------------------------------------------------------


def test_fingerprint(raw1, small):
    fingerprint = grid_fingerprint(raw1)
    assert fingerprint["shape"] == [36, 199, 62]
    expected = hashlib.sha256(raw1.tmask.values.astype(np.uint8).tobytes()).hexdigest()
    assert fingerprint["mask_sha256"] == expected
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert grid_fingerprint(xoceandiff.datasets.dino(n=1, resolution=1.0, seed=9)) == fingerprint
    check_fingerprint(fingerprint, raw1)
    with pytest.raises(GridMismatchError, match=r"expected \(z_c, y_c, x_c\) = \(36, 199, 62\) but the dataset has \(36, 51, 17\)"):
        check_fingerprint(fingerprint, small)
    tmask = small.tmask.values.copy()
    tmask[0, 25, 8] = False
    moved = small.assign_coords(tmask=(("z_c", "y_c", "x_c"), tmask))
    with pytest.raises(GridMismatchError, match=r"same shape .*\(36, 51, 17\).*masks \(tmask\) differ"):
        check_fingerprint(grid_fingerprint(small), moved)
