"""Tests of xoceandiff.normalisation against direct numpy computations and exact inverses."""

from __future__ import annotations

import json
import warnings

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.errors import GridMismatchError, InvalidDataError, MissingVariableError
from xoceandiff.normalisation import Normaliser, denormalise, normalise, statistics

FIELDS3D = ("toce", "soce")
ALL_SCHEMES = ("std", "3-std", "7-std", "2.5-std", "min-max", "global-min-max")
EPS32 = float(np.finfo(np.float32).eps)


def _forbid_compute(*args, **kwargs):
    raise AssertionError("something was computed while the result should have stayed lazy")


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    # chunks=6 over 20 records: uneven chunks, so the moments are combined across chunks.
    return xoceandiff.datasets.dino(n=20, resolution=4.0, seed=1, chunks=6)


@pytest.fixture(scope="module")
def values(ds) -> dict[str, np.ndarray]:
    """The fields as float64 numpy arrays (land NaN), and the cell areas: the oracle's inputs."""
    out = {name: ds[name].values.astype(np.float64) for name in ("toce", "soce", "ssh")}
    out["area"] = (ds.e1t * ds.e2t).values
    return out


def _oracle(x: np.ndarray, area: np.ndarray, *, weighted: bool, method: str) -> dict[str, float]:
    """Direct numpy statistics of one level: x is (t, y, x) with land NaN."""
    ocean = ~np.isnan(x)
    if not ocean.any():
        return dict.fromkeys(("mean", "std", "min", "max"), np.nan)
    w = np.broadcast_to(area, x.shape)
    if method == "pooled":
        if weighted:
            mean = np.average(x[ocean], weights=w[ocean])
            std = np.sqrt(np.average((x[ocean] - mean) ** 2, weights=w[ocean]))
        else:
            mean, std = np.nanmean(x), np.nanstd(x)
    else:
        if weighted:
            means = [np.average(s[o], weights=area[o]) for s, o in zip(x, ocean, strict=True)]
            stds = [
                np.sqrt(np.average((s[o] - m) ** 2, weights=area[o]))
                for s, o, m in zip(x, ocean, means, strict=True)
            ]
        else:
            means = np.nanmean(x, axis=(1, 2))
            stds = np.nanstd(x, axis=(1, 2))
        mean, std = np.mean(means), np.mean(stds)
    return {"mean": mean, "std": std, "min": np.nanmin(x), "max": np.nanmax(x)}


# --- statistics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("method", ["pooled", "per-snapshot"])
def test_statistics_equal_numpy(ds, values, weighted, method):
    stats = statistics(ds, weighted=weighted, method=method).compute()
    for name in ("toce", "soce", "ssh"):
        x = values[name]
        levels = range(x.shape[1]) if x.ndim == 4 else [None]
        for k in levels:
            level = x[:, k] if k is not None else x
            expected = _oracle(level, values["area"], weighted=weighted, method=method)
            for key, value in expected.items():
                got = stats[f"{name}_{key}"]
                got = float(got[k] if k is not None else got)
                if np.isnan(value):
                    assert np.isnan(got), (name, k, key)
                else:
                    np.testing.assert_allclose(got, value, rtol=1e-6, err_msg=f"{name} level {k} {key}")


def test_statistics_methods_and_weighting_differ(ds):
    """The oracles above would pass for identical outputs only if the data made them equal: they don't."""
    pooled = statistics(ds).compute()
    per_snapshot = statistics(ds, method="per-snapshot").compute()
    weighted = statistics(ds, weighted=True).compute()
    assert not np.allclose(pooled.toce_std[:35], per_snapshot.toce_std[:35], rtol=1e-6)
    assert not np.allclose(pooled.toce_mean[:35], weighted.toce_mean[:35], rtol=1e-6)


def test_statistics_land_level_and_layout(ds):
    stats = statistics(ds).compute()
    assert stats.toce_mean.dims == ("z_c",) and stats.ssh_mean.dims == ()
    assert stats.toce_mean.dtype == np.float64
    assert np.isnan(stats.toce_mean[35]) and np.isnan(stats.soce_max[35]) and np.isnan(stats.toce_std[35])
    assert np.isfinite(stats.toce_mean[:35]).all()
    assert "gdept_1d" in stats.coords
    assert stats.attrs["statistics_method"] == "pooled" and stats.attrs["weighting"] == "none"
    assert statistics(ds, weighted=True, method="per-snapshot").attrs["weighting"] == "area e1t*e2t"
    assert statistics(ds, method="per-snapshot").attrs["statistics_method"] == "per-snapshot"
    assert stats.attrs["n_records"] == 20 and stats.attrs["record_dims"] == "t"
    assert stats.toce_mean.attrs["units"] == "degC"


@pytest.mark.parametrize("method", ["pooled", "per-snapshot"])
def test_statistics_is_lazy_and_one_graph(ds, compute_counter, method):
    with dask.config.set(scheduler=_forbid_compute):
        stats = statistics(ds, weighted=True, method=method)
    assert compute_counter.count == 0
    for name in stats.data_vars:
        assert isinstance(stats[name].data, dsa.Array), name
    stats.compute()
    assert compute_counter.count == 1


class _PeakArrays(dask.callbacks.Callback):
    """Largest number of data-sized arrays held in the scheduler's memory at once."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.nbytes = nbytes
        self.peak = 0

    def _posttask(self, key, result, dsk, state, id):
        held = sum(1 for v in state["cache"].values() if isinstance(v, np.ndarray) and v.nbytes >= self.nbytes)
        self.peak = max(self.peak, held)


@pytest.mark.parametrize("method", ["pooled", "per-snapshot"])
def test_statistics_memory_is_a_few_chunks(method):
    """24 one-record chunks, three fields: each chunk is consumed at once, not held for the next field.

    (Separate xarray reductions per field and statistic hold all 48 chunks of toce and soce here.)
    """
    ds = xoceandiff.datasets.dino(n=24, resolution=4.0, seed=0, chunks=1)
    one_field_chunk = 36 * 51 * 17 * 4
    with _PeakArrays(one_field_chunk // 2) as peak, dask.config.set(scheduler="sync"):
        statistics(ds, weighted=True, method=method).compute()
    assert 1 <= peak.peak <= 4


def test_statistics_numpy_input_and_sample_dim(ds):
    reference = statistics(ds).compute()
    loaded = ds.compute()  # numpy-backed
    from_numpy = statistics(loaded)
    assert isinstance(from_numpy.toce_mean.data, dsa.Array)
    xr.testing.assert_allclose(from_numpy.compute(), reference, rtol=1e-12)
    samples = ds.rename(t="sample")
    xr.testing.assert_allclose(statistics(samples).compute(), reference, rtol=1e-12)
    xr.testing.assert_allclose(statistics(samples, dim="sample").compute(), reference, rtol=1e-12)
    with pytest.raises(InvalidDataError, match="no dimension 'time'"):
        statistics(ds, dim="time")
    # two record dimensions (members x times) are pooled like one
    members = ds.assign_coords(t=np.arange(20)).coarsen(t=5).construct(t=("member", "time"))
    for method in ("pooled", "per-snapshot"):
        xr.testing.assert_allclose(
            statistics(members, method=method).compute().reset_coords(drop=True),
            statistics(ds, method=method).compute().reset_coords(drop=True),
            rtol=1e-12,
        )


def test_statistics_no_cancellation():
    """A tiny spread on a large offset: E[x^2] - E[x]^2 would lose it all; the pairwise moments don't."""
    grid = xoceandiff.datasets.dino_grid(4.0)
    rng = np.random.default_rng(0)
    ocean = grid.tmask.values.astype(bool)
    data = 1.0e6 + 1.0e-3 * rng.standard_normal((30, *ocean.shape))
    data = np.where(ocean, data, np.nan)
    ds = xr.Dataset(
        {"toce": (("t", "z_c", "y_c", "x_c"), dsa.from_array(data, chunks=(4, 7, 51, 17)))},
        coords={"tmask": grid.tmask.astype(bool), "e1t": grid.e1t, "e2t": grid.e2t},
    )
    stats = statistics(ds).compute()
    np.testing.assert_allclose(stats.toce_std[:35], np.nanstd(data[:, :35], axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(stats.toce_mean[:35], np.nanmean(data[:, :35], axis=(0, 2, 3)), rtol=1e-12)


def test_statistics_errors(ds):
    with pytest.raises(InvalidDataError, match="method.*'pooled'.*'per-snapshot'"):
        statistics(ds, method="reference")
    with pytest.raises(MissingVariableError, match="e1t"):
        statistics(ds.drop_vars("e1t"), weighted=True)
    with pytest.raises(InvalidDataError, match="'uoce' is not a canonical field"):
        statistics(ds, fields=["uoce"])
    with pytest.raises(MissingVariableError, match="'ssh' is not in the dataset"):
        statistics(ds.drop_vars("ssh"), fields=["ssh"])


# --- normaliser and schemes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pooled_stats(ds) -> xr.Dataset:
    return statistics(ds).compute()


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_round_trip_every_scheme(ds, values, pooled_stats, scheme):
    norm = Normaliser.from_statistics(pooled_stats, scheme=scheme)
    with dask.config.set(scheduler=_forbid_compute):
        normed = normalise(ds, norm)
        back = denormalise(normed, norm)
    normed_values = {name: normed[name].values for name in ("toce", "soce", "ssh")}
    for name in ("toce", "soce", "ssh"):
        x = values[name]
        assert normed[name].dtype == np.float32 and back[name].dtype == np.float32
        got = back[name].values.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(x))
        np.testing.assert_array_equal(np.isnan(normed_values[name]), np.isnan(x))
        scale = np.asarray(norm.scale[name]).reshape((-1, 1, 1) if x.ndim == 4 else ())
        # float32 rounding of the normalised value and of the result, nothing more
        tolerance = 2 * EPS32 * (np.abs(x) + np.abs(normed_values[name]) * scale)
        ocean = ~np.isnan(x)
        assert np.all(np.abs(got - x)[ocean] <= tolerance[ocean]), (scheme, name)


@pytest.mark.parametrize("scheme, alpha", [("std", 1.0), ("3-std", 3.0), ("7-std", 7.0)])
def test_std_schemes_give_zero_mean_and_unit_std(ds, pooled_stats, scheme, alpha):
    normed = normalise(ds, Normaliser.from_statistics(pooled_stats, scheme=scheme))
    for name in FIELDS3D:
        x = normed[name].values[:, :35].astype(np.float64)
        np.testing.assert_allclose(np.nanmean(x, axis=(0, 2, 3)), 0.0, atol=2e-5)
        np.testing.assert_allclose(np.nanstd(x, axis=(0, 2, 3)), 1.0 / alpha, rtol=2e-5)
    ssh = normed.ssh.values.astype(np.float64)
    assert abs(np.nanmean(ssh)) < 2e-5 and abs(np.nanstd(ssh) - 1 / alpha) < 2e-5


def test_min_max_maps_extremes_exactly(ds, pooled_stats):
    normed = normalise(ds, Normaliser.from_statistics(pooled_stats, scheme="min-max"))
    for name in FIELDS3D:
        x = normed[name].values[:, :35]
        assert np.all(np.nanmin(x, axis=(0, 2, 3)) == -1.0)
        assert np.all(np.nanmax(x, axis=(0, 2, 3)) == 1.0)
    assert np.nanmin(normed.ssh.values) == -1.0 and np.nanmax(normed.ssh.values) == 1.0

    normed = normalise(ds, Normaliser.from_statistics(pooled_stats, scheme="global-min-max"))
    for name in FIELDS3D:
        x = normed[name].values
        assert np.nanmin(x) == -1.0 and np.nanmax(x) == 1.0
        # one min/max per field: deep levels span only part of [-1, 1]
        assert np.nanmax(x[:, 30]) - np.nanmin(x[:, 30]) < 1.0
    norm = Normaliser.from_statistics(pooled_stats, scheme="global-min-max")
    assert len(set(norm.scale["toce"][:35])) == 1


def test_scheme_numbers(pooled_stats):
    s = pooled_stats
    norm = Normaliser.from_statistics(s, scheme="3-std")
    np.testing.assert_allclose(norm.offset["toce"][:35], s.toce_mean[:35])
    np.testing.assert_allclose(norm.scale["soce"][:35], 3 * s.soce_std[:35])
    assert norm.offset["toce"][35] == 0.0 and norm.scale["toce"][35] == 1.0
    norm = Normaliser.from_statistics(s, scheme="min-max")
    np.testing.assert_allclose(norm.scale["toce"][:35], (s.toce_max - s.toce_min)[:35] / 2)
    assert Normaliser.from_statistics(s, scheme="2.5-std").scale["ssh"][0] == pytest.approx(2.5 * float(s.ssh_std))


def test_a_constant_level_borrows_its_nearest_levels_scale(ds):
    """A level constant over the records is data, not an error: no warning, the neighbours' scale, values 0."""
    flat = ds.assign(toce=xr.where(ds.z_c == 3, np.float32(12.0), ds.toce).where(ds.tmask))
    stats = statistics(flat).compute()
    for scheme in ("3-std", "min-max"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            norm = Normaliser.from_statistics(stats, scheme=scheme)
        # levels 2 and 4 are equally near: the smaller of their scales
        assert norm.scale["toce"][3] == min(norm.scale["toce"][2], norm.scale["toce"][4])
        normed = normalise(flat, norm).toce.isel(z_c=3).values
        assert np.nanmax(np.abs(normed)) == 0.0


def test_a_field_without_any_spread_warns_and_stays_finite(ds):
    constant = ds.assign(toce=(ds.toce * 0 + 12.0))
    with pytest.warns(UserWarning, match=r"toce level 0, 1, .*: zero spread"):
        norm = Normaliser.from_statistics(statistics(constant, fields=["toce"]), scheme="3-std")
    assert norm.scale["toce"][0] == 1.0
    constant_ssh = ds.assign(ssh=(ds.ssh * 0 + 1.5))
    with pytest.warns(UserWarning, match=r"ssh: zero spread"):
        Normaliser.from_statistics(statistics(constant_ssh, fields=["ssh"]), scheme="global-min-max")


@pytest.mark.parametrize("scheme", ["max-min", "0-std", "-3-std", "std3", "zscore"])
def test_unknown_scheme(pooled_stats, scheme):
    with pytest.raises(InvalidDataError, match=r"valid schemes are \['std', '3-std', '7-std', '<alpha>-std', 'min-max'"):
        Normaliser.from_statistics(pooled_stats, scheme=scheme)


def test_normaliser_serialisation(pooled_stats):
    norm = Normaliser.from_statistics(pooled_stats, scheme="3-std")
    text = json.dumps(norm.to_dict(), allow_nan=False)
    again = Normaliser.from_dict(json.loads(text))
    assert again == norm and hash(again) == hash(norm)
    assert again.fields == ("toce", "soce", "ssh")
    assert again.method == "pooled" and again.weighted is False
    with pytest.raises(AttributeError):
        norm.scheme = "std"  # frozen
    with pytest.raises(InvalidDataError, match="missing keys"):
        Normaliser.from_dict({"scheme": "std"})
    with pytest.raises(InvalidDataError, match="zero or non-finite scale"):
        Normaliser(scheme="std", offset={"ssh": (0.0,)}, scale={"ssh": (0.0,)})


def test_attributes_and_history(ds, pooled_stats):
    norm = Normaliser.from_statistics(pooled_stats, scheme="3-std")
    normed = normalise(ds, norm)
    assert normed.toce.attrs["units"] == "1" and normed.toce.attrs["normalisation"] == "3-std"
    assert normed.toce.attrs["long_name"] == ds.toce.attrs["long_name"]
    assert normed.attrs["history"].split(" ", 1)[1].startswith("xoceandiff.normalise")
    assert set(normed.coords) == set(ds.coords)
    back = denormalise(normed, norm)
    for name, spec in xoceandiff.conventions.FIELDS.items():
        assert back[name].attrs["units"] == spec.units
        assert back[name].attrs["long_name"] == spec.long_name
        assert "normalisation" not in back[name].attrs
    assert back.attrs["history"].count("\n") == 1
    with pytest.raises(InvalidDataError, match="already normalised"):
        normalise(normed, norm)
    with pytest.raises(InvalidDataError, match="scheme '3-std'.*'std'"):
        denormalise(normed, Normaliser.from_statistics(pooled_stats, scheme="std"))


def test_level_mismatch(ds, pooled_stats):
    norm = Normaliser.from_statistics(pooled_stats, scheme="std")
    with pytest.raises(GridMismatchError, match="36 levels but the data has z_c = 10"):
        normalise(ds.isel(z_c=slice(0, 10)), norm)
