"""Conditional generation: conditions read from the data, encoded, carried to the network and into every output."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch

import xoceandiff
from xoceandiff.conditions import (
    ConditionSpec,
    encode_conditions,
    record_conditions,
    requested_conditions,
)
from xoceandiff.errors import CheckpointError, InvalidDataError
from xoceandiff.fidelity import conditional_skill
from xoceandiff.layout import to_tensor
from xoceandiff.normalisation import normalise
from xoceandiff.training import SnapshotStream

GYRE = Path(__file__).parent / "data" / "gyre"


@pytest.fixture(scope="module")
def gyre():
    return xoceandiff.open_nemo(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc")), mesh_mask=GYRE / "mesh_mask.nc")


@pytest.fixture(scope="module")
def conditional(gyre, one_thread, tmp_path_factory):
    model = xoceandiff.training.train(gyre, "tiny", steps=2, batch_size=2, progress=False, levels="all",
                                      conditions=["day_of_year", "run_time"],
                                      checkpoint_dir=tmp_path_factory.mktemp("conditional"))
    with torch.no_grad():  # the trained embedding's last layer starts at zero: make the condition matter
        torch.nn.init.normal_(model.condition_embedding[2].weight, std=0.5)
    model.save(model.checkpoint_path, overwrite=True)
    return model


def test_conditions_are_read_from_the_time_coordinate_and_its_calendar(gyre):
    specs, values = record_conditions(gyre, ["day_of_year", "run_time"])
    with netCDF4.Dataset(sorted(GYRE.glob("GYRE_5d_*_grid_T.nc"))[0]) as nc:  # the file's own seconds
        seconds = np.asarray(nc["time_counter"][:], dtype=np.float64)
    days = seconds / 86400.0  # since 0001-01-01 in NEMO's 360-day calendar
    np.testing.assert_allclose(values["day_of_year"], days % 360.0, atol=1e-9)
    np.testing.assert_allclose(values["run_time"], 1.0 + days / 360.0, atol=1e-9)
    assert specs[0].days_per_year == 360.0 and specs[1].start == pytest.approx(1.0 + days[0] / 360.0)


def test_day_of_year_is_periodic_and_absent_conditions_are_zero():
    spec = ConditionSpec("day_of_year", 360.0, "360_day")
    near_end, start = encode_conditions([spec], {"day_of_year": np.array([359.9, 0.0])}, 2)
    assert np.linalg.norm(near_end - start) < 2 * np.pi * 0.1 / 360 * 1.0001  # neighbours on the circle
    np.testing.assert_allclose(encode_conditions([spec], {"day_of_year": np.array([180.0])}, 1), [[0.0, -1.0, 1.0]],
                               atol=1e-12)
    run = ConditionSpec("run_time", 360.0, "360_day", 51.0, 59.0)
    np.testing.assert_allclose(encode_conditions([spec, run], {"run_time": np.array([55.0])}, 1), [[0, 0, 0, 0, 1]])
    with pytest.raises(InvalidDataError, match="0 <= day < 360"):
        requested_conditions([spec], {"day_of_year": 360}, 1)
    with pytest.raises(InvalidDataError, match="one per sample"):
        requested_conditions([spec], {"day_of_year": [1, 2, 3]}, 2)


def test_training_batches_pair_each_state_with_its_own_condition(gyre):
    model = xoceandiff.training.prepare_model(gyre, "tiny", levels="all")
    layout, normaliser = model.card.layout, model.card.normaliser
    tags = np.arange(gyre.sizes["t"], dtype=np.float64)[:, None]  # the condition names its record
    stream = SnapshotStream(gyre.chunk({"t": 1}), layout, normaliser, 3, seed=1, buffer_chunks=2, conditions=tags)
    truth = to_tensor(normalise(gyre, normaliser), layout, dim="t")
    batches = stream.batches()
    for _ in range(4):
        states, conditions = next(batches)
        for state, tag in zip(states, conditions, strict=True):
            assert torch.equal(state, truth[int(tag)])


def test_a_condition_reaches_the_network_and_every_output(gyre, conditional, tmp_path):
    x = torch.randn(2, conditional.channels, *conditional.sample_size, generator=torch.Generator().manual_seed(0))
    summer = torch.as_tensor(encode_conditions(conditional.conditions, {"day_of_year": np.array([180.0, 180.0])}, 2),
                             dtype=torch.float32)
    winter = torch.as_tensor(encode_conditions(conditional.conditions, {"day_of_year": np.array([0.0, 0.0])}, 2),
                             dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(conditional(x, 500, summer), conditional(x, 500, winter))
    samples = {day: gyre.oceandiff.sample(2, ["zero_mean"], model=conditional, steps=2, progress=False,
                                          condition={"day_of_year": day}) for day in (0, 180)}
    assert not np.allclose(samples[0].toce.values, samples[180].toce.values, equal_nan=True)
    summer_set = samples[180]
    assert summer_set.condition_day_of_year.values.tolist() == [180.0, 180.0]
    assert [t.strftime("%Y-%m-%d") for t in summer_set.time.values] == ["0052-07-01"] * 2  # after the data's year 51
    assert summer_set.attrs["conditions"] == "day_of_year"
    # the lazy, chunked path gives the same samples (to float rounding: one sample per batch there) and coordinates
    lazy = gyre.oceandiff.sample(2, ["zero_mean"], model=conditional, steps=2, chunks=1,
                                 condition={"day_of_year": 180}).compute()
    np.testing.assert_allclose(lazy.toce.values, summer_set.toce.values, atol=1e-4)
    assert lazy.time.values.tolist() == summer_set.time.values.tolist()
    # into the file, and from there into the restarts and their namelist
    path = summer_set.oceandiff.to_netcdf(tmp_path / "summer.nc")
    back = xoceandiff.io.open_samples(path, gyre)
    assert back.condition_day_of_year.values.tolist() == [180.0, 180.0]
    assert back.time.values[0].strftime("%Y-%m-%d") == "0052-07-01"
    restarts = xoceandiff.restart.to_restart(back, tmp_path / "restarts", mesh_mask=GYRE / "mesh_mask.nc", rdt=14400.0)
    with netCDF4.Dataset(restarts[0]) as nc:
        assert int(nc["ndastp"][...]) == 520701
    assert "nn_date0        = 00520701" in (tmp_path / "restarts" / "namelist_restart.txt").read_text()


def test_conditions_are_refused_where_the_model_has_none(gyre, saved_tiny_model, chunked_dino, conditional):
    with pytest.raises(CheckpointError, match="not trained with it"):
        chunked_dino.oceandiff.sample(1, model=saved_tiny_model, steps=1, progress=False, condition={"day_of_year": 3})
    with pytest.raises(CheckpointError, match="its conditions: day_of_year, run_time"):
        gyre.oceandiff.sample(1, model=conditional, steps=1, progress=False, condition={"forcing": 1.0})
    with pytest.raises(InvalidDataError, match="guidance"):
        gyre.oceandiff.sample(1, model=conditional, steps=1, progress=False, condition={"day_of_year": 3}, guidance=-1)
    with pytest.raises(InvalidDataError, match="only a new model"):
        xoceandiff.training.prepare_model(gyre, conditional.__class__(3, (16, 32), "tiny"), conditions=["day_of_year"])


def test_mean_constraints_drive_to_the_records_nearest_the_condition(gyre, conditional):
    from xoceandiff.sampling import SamplingOptions, nearest_records, plan_sampling

    plan = plan_sampling(gyre, 3, ["zero_mean"], model=conditional, options=SamplingOptions(steps=1),
                         condition={"day_of_year": [0.0, 10.0, 14.0]})
    table = conditional.card.record_means
    rows = nearest_records(conditional.card, plan, [0, 1, 2])
    for wanted, chosen in zip((0.0, 10.0, 14.0), rows, strict=True):
        gaps = np.abs(np.asarray(table["day_of_year"]) - wanted)
        gaps = np.minimum(gaps % 360, 360 - gaps % 360)
        assert sorted(gaps[chosen]) == sorted(np.sort(gaps)[: len(chosen)])
    samples = gyre.oceandiff.sample(3, ["zero_mean"], model=conditional, steps=2, progress=False,
                                    condition={"day_of_year": [0.0, 10.0, 14.0]})
    area = (gyre.e1t * gyre.e2t).where(gyre.tmask).fillna(0)
    means = (samples.toce.fillna(0) * area).sum(("y_c", "x_c")) / area.sum(("y_c", "x_c"))
    for k, chosen in enumerate(rows):  # the mean of the nearest records' level means, to float32 precision
        expected = np.asarray(table["toce"])[chosen].mean(axis=0)
        np.testing.assert_allclose(means.isel(sample=k).values[:30], expected[:30], atol=2e-4)


def test_conditional_skill_against_numpy(gyre):
    data = gyre.load()
    day = float(record_conditions(data, ["day_of_year"])[1]["day_of_year"][1])
    perfect = data.isel(t=[0, 1, 2]).rename(t="sample")  # the window's own records: a perfect answer
    skill = conditional_skill(perfect, data, day, window=5.0)
    assert skill.attrs["data_records"] == 3
    assert float(skill.sst_anomaly_correlation) == pytest.approx(1.0, abs=1e-12)
    assert float(skill.level_mean_error_toce) == pytest.approx(0.0, abs=1e-12)
    # an independent computation of the top-200 m volume mean of one record
    record = data.toce.isel(t=0).values
    volume = (data.e1t * data.e2t * data.e3t).where(data.tmask).fillna(0).transpose("z_c", "y_c", "x_c").values
    upper = (data.gdept_1d.values < 200)[:, None, None] & data.tmask.values
    expected = np.sum(np.where(upper, record, 0) * volume * upper) / np.sum(volume * upper)
    other = conditional_skill(data.isel(t=[0]).rename(t="sample"), data, day, window=5.0)
    assert float(other.upper_t_samples) == pytest.approx(expected, rel=1e-10)


def test_a_run_parameter_is_a_condition_sampled_between_the_runs(gyre, one_thread):
    from xoceandiff.sampling import SamplingOptions, nearest_records, plan_sampling

    forcing = np.repeat([1.0, 2.0], [2, gyre.sizes["t"] - 2])  # two "runs", one value per file
    model = xoceandiff.training.train(gyre, "tiny", steps=2, batch_size=2, progress=False, levels="all",
                                      parameters={"forcing": forcing})
    (spec,) = model.conditions
    assert (spec.name, spec.start, spec.end, spec.is_parameter) == ("forcing", 1.0, 2.0, True)
    np.testing.assert_array_equal(model.card.record_means["forcing"], forcing[model.card.record_means["record"]])
    samples = gyre.oceandiff.sample(2, ["zero_mean"], model=model, steps=2, progress=False,
                                    condition={"forcing": 1.5})
    assert samples.condition_forcing.values.tolist() == [1.5, 1.5] and "time" not in samples.coords
    plan = plan_sampling(gyre, 1, [], model=model, options=SamplingOptions(steps=1), condition={"forcing": 1.0})
    (rows,) = nearest_records(model.card, plan, [0])
    assert set(model.card.record_means["forcing"][rows[:2]]) == {1.0}  # the nearest records are the run's own
    with pytest.raises(InvalidDataError, match=r"training range \[1, 2\]"):
        gyre.oceandiff.sample(1, model=model, steps=1, progress=False, condition={"forcing": 3.0})
    with pytest.raises(InvalidDataError, match="one value per record"):
        xoceandiff.training.train(gyre, "tiny", steps=1, progress=False, parameters={"forcing": [1.0]})


def test_cli_samples_the_bundled_gyre_model_for_a_day(tmp_path, capsys):
    from xoceandiff.cli import main
    from xoceandiff.pretrained import bundled_checkpoint

    out = tmp_path / "summer.nc"
    assert main(["sample", "--checkpoint", str(bundled_checkpoint("gyre")), "--n", "2", "--chunks", "1", "--steps", "2",
                 "--constraints", "zero_mean", "--condition", "day_of_year=180", "--out", str(out)]) == 0
    with netCDF4.Dataset(out) as nc:
        assert nc["condition_day_of_year"][:].tolist() == [180.0, 180.0]
        assert netCDF4.num2date(nc["time"][:], nc["time"].units, nc["time"].calendar)[0].strftime("%m-%d") == "07-01"
    assert main(["sample", "--checkpoint", str(bundled_checkpoint("gyre")), "--n", "1", "--chunks", "1",
                 "--condition", "season=2", "--out", str(tmp_path / "x.nc")]) == 2
    assert "its conditions: day_of_year, run_time" in capsys.readouterr().err
    assert main(["demo", "--day", "90", "--out", str(tmp_path / "demo")]) == 2
    assert "--day: only for --config gyre" in capsys.readouterr().err


def test_cli_restart_starts_conditional_samples_at_their_step_of_the_year(tmp_path):
    from xoceandiff.cli import main
    from xoceandiff.pretrained import bundled_checkpoint

    out = tmp_path / "autumn.nc"
    assert main(["sample", "--checkpoint", str(bundled_checkpoint("gyre")), "--n", "1", "--chunks", "1", "--steps", "2",
                 "--constraints", "zero_mean", "convective_adjustment", "--condition", "day_of_year=270",
                 "--out", str(out)]) == 0
    assert main(["restart", str(out), "--mesh-mask", str(GYRE / "mesh_mask.nc"), "--out", str(tmp_path / "r"),
                 "--rdt", "14400", "--forcing-phase", "step"]) == 0
    namelist = (tmp_path / "r" / "namelist_restart.txt").read_text()
    # 1 October of the 360-day year: 270 days of 6 steps; the date from the sample
    assert "nn_it000        = 1621" in namelist and "nn_date0        = 00591001" in namelist
    (restart,) = (tmp_path / "r").glob("*.nc")
    with netCDF4.Dataset(restart) as nc:
        assert int(nc["kt"][...]) == 1620 and int(nc["ndastp"][...]) == 591001
    undated = tmp_path / "undated.nc"  # sampled without a condition: no date, no calendar to count steps in
    assert main(["sample", "--checkpoint", str(bundled_checkpoint("gyre")), "--n", "1", "--chunks", "1", "--steps", "2",
                 "--out", str(undated)]) == 0
    assert main(["restart", str(undated), "--mesh-mask", str(GYRE / "mesh_mask.nc"), "--out", str(tmp_path / "u"),
                 "--rdt", "14400", "--forcing-phase", "step"]) == 2
    assert not (tmp_path / "u").exists()


def test_records_level_means_condition_each_sample_on_its_own_records_date(gyre, conditional):
    """level_means='records' without a condition: the network is asked for the date of the record whose level
    means the sample is driven to (the card's table), so that the two agree; an explicit condition still wins."""
    from xoceandiff.sampling import plan_sampling

    samples = gyre.oceandiff.sample(3, ["zero_mean"], model=conditional, steps=2, progress=False,
                                    level_means="records", seed=4)
    table = conditional.card.record_means
    rows = [int(np.flatnonzero(table["record"] == r)[0]) for r in samples.level_means_record.values]
    # oracle: the training records' own dates, read from their time coordinate
    _, dates = record_conditions(gyre, ["day_of_year", "run_time"])
    np.testing.assert_array_equal(samples.condition_day_of_year.values, dates["day_of_year"][table["record"][rows]])
    np.testing.assert_allclose(samples.condition_run_time.values, dates["run_time"][table["record"][rows]])
    area = (gyre.e1t * gyre.e2t).where(gyre.tmask.isel(z_c=0)).fillna(0)
    np.testing.assert_allclose(samples.toce.isel(z_c=0).weighted(area).mean(("y_c", "x_c")).values,
                               table["toce"][rows, 0], rtol=0, atol=1e-4)
    plan = plan_sampling(gyre, 3, ["zero_mean"], model=conditional, level_means="records",
                         condition={"day_of_year": 180})
    assert not plan.condition_from_records and plan.condition["day_of_year"].tolist() == [180.0] * 3
