"""The model card: what it records (oracles: numpy over the training data), its round trip, what samples carry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xoceandiff
from xoceandiff.card import ModelCard
from xoceandiff.model import load_model
from xoceandiff.training import prepare_model, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _per_level(reduce, values):
    """``reduce`` over records and the horizontal, per level (NaN on a land-only level, quietly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of land-only levels
        return reduce(values, axis=(0, 2, 3))


@pytest.fixture(scope="module")
def data():
    return xoceandiff.datasets.dino(n=6, resolution=4.0, seed=7, chunks=3)


def test_card_records_ranges_salinity_and_grid(data):
    card = ModelCard.from_dataset(data)
    toce = data.toce.values  # land NaN
    np.testing.assert_allclose(card.training_min["toce"], _per_level(np.nanmin, toce), rtol=1e-6)
    np.testing.assert_allclose(card.training_max["soce"], _per_level(np.nanmax, data.soce.values), rtol=1e-6)
    np.testing.assert_allclose(card.training_max["ssh"], [np.nanmax(data.ssh.values)], rtol=1e-6)
    assert card.salinity == "absolute"
    grid = card.grid
    np.testing.assert_array_equal(grid.tmask.values, data.tmask.values)
    np.testing.assert_array_equal(grid.e3t.values, data.e3t.values)
    np.testing.assert_array_equal(grid.gdept_1d.values, data.gdept_1d.values)
    card.check_grid(grid)
    practical = data.copy()
    practical["soce"] = data.soce.assign_attrs(standard_name="sea_water_practical_salinity", units="1")
    assert ModelCard.from_dataset(practical).salinity == "practical"


def test_checkpoint_carries_the_card_and_the_grid(data, tmp_path):
    model = prepare_model(data, "tiny")
    loaded = load_model(model.save(tmp_path / "ckpt"))
    assert loaded.card.to_metadata() == model.card.to_metadata()
    for name, values in model.card.grid_kit.items():
        np.testing.assert_array_equal(loaded.card.grid_kit[name], values)
    xr.testing.assert_identical(loaded.card.grid, model.card.grid)
    # the fields' level means, and the records' day of the year and time in the run (conditional targets)
    assert set(loaded.card.record_means) == {"record", "toce", "soce", "ssh", "day_of_year", "run_time"}
    days = data.t.to_index()[model.card.record_means["record"]]
    np.testing.assert_allclose(loaded.card.record_means["day_of_year"], days.day_of_year - 1 + days.hour / 24)
    for name, values in model.card.record_means.items():
        np.testing.assert_array_equal(loaded.card.record_means[name], values)


def test_card_keeps_evenly_spaced_record_level_means(data, monkeypatch):
    """Area-weighted level means of evenly spaced records (numpy oracle), capped at MAX_RECORD_MEANS."""
    import xoceandiff.card as card_module

    monkeypatch.setattr(card_module, "MAX_RECORD_MEANS", 4)
    card = ModelCard.from_dataset(data)
    records = card.record_means["record"]
    assert records.tolist() == [0, 2, 3, 5]  # 6 records, 4 kept, evenly spaced
    area = (data.e1t * data.e2t).values
    for name in ("toce", "soce"):
        values = data[name].values[records]
        weights = np.where(np.isfinite(values), area, 0.0)
        with np.errstate(invalid="ignore"):
            expected = np.nansum(values * weights, (2, 3)) / weights.sum((2, 3))
        np.testing.assert_allclose(card.record_means[name], expected, rtol=1e-10, equal_nan=True)
    ssh = data.ssh.values[records]
    expected = np.nansum(ssh * area, (1, 2)) / np.sum(np.where(np.isfinite(ssh), area, 0), (1, 2))
    np.testing.assert_allclose(card.record_means["ssh"][:, 0], expected, rtol=1e-10)
    with pytest.raises(Exception, match="record_means: expected toce of shape"):
        ModelCard(card.layout, card.normaliser, card.grid_shape, card.mask_sha256,
                  record_means={**card.record_means, "toce": card.record_means["toce"][:, :3]})


def test_samples_carry_the_salinity_kind_and_the_training_ranges(data):
    practical = data.copy()
    practical["soce"] = data.soce.assign_attrs(standard_name="sea_water_practical_salinity", units="1")
    model = train(practical, "tiny", steps=2, batch_size=2, progress=False)
    samples = practical.oceandiff.sample(1, model=model, steps=2, progress=False)
    assert samples.soce.attrs["standard_name"] == "sea_water_practical_salinity"
    assert samples.soce.attrs["units"] == "1"
    assert samples.toce.attrs["standard_name"] == "sea_water_potential_temperature"
    np.testing.assert_allclose(samples.toce.attrs["training_max"], _per_level(np.nanmax, data.toce.values),
                               rtol=1e-6)
    assert len(samples.soce.attrs["training_min"]) == data.sizes["z_c"]


def test_cli_samples_on_the_grid_the_checkpoint_carries(data, tmp_path):
    """A model trained on data with no provenance samples from the command line with no data file."""
    from xoceandiff.cli import main

    anonymous = data.copy()
    anonymous.attrs = {"Iperio": data.attrs["Iperio"]}
    train(anonymous, "tiny", steps=1, batch_size=2, progress=False, checkpoint_dir=tmp_path / "run")
    out = tmp_path / "samples.nc"
    code = main(["sample", "--checkpoint", str(tmp_path / "run" / "model"), "--n", "2", "--chunks", "2",
                 "--steps", "2", "--out", str(out)])
    assert code == 0
    with xr.open_dataset(out) as written:
        assert written.toce.shape == (2, 36, 51, 17)
        assert int(written.toce.isel(sample=0).notnull().sum()) == int(data.tmask.sum())
