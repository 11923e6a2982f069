"""Sampling: reproducible per-sample streams, samplers, output structure, bad input, the constraints at work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import xoceandiff
from xoceandiff.eos import sigma0_teos10
from xoceandiff.errors import CheckpointError, ConstraintError, GridMismatchError, InvalidDataError
from xoceandiff.model import Denoiser
from xoceandiff.sampling import SamplingOptions, make_scheduler, sample_seed, sample_tensors
from xoceandiff.training import prepare_model, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return xoceandiff.datasets.dino(n=16, resolution=4.0, seed=2, chunks=8)


@pytest.fixture(scope="module")
def model(data):
    return train(data, "tiny", steps=30, batch_size=8, lr=3e-3, progress=False)


def test_same_seed_same_samples_whatever_n(data, model):
    kwargs = dict(model=model, sampler="ddim", steps=8, seed=5, progress=False)
    four = data.oceandiff.sample(4, ["zero_mean", "border_zero_gradient"], batch_size=4, **kwargs)
    eight = data.oceandiff.sample(8, ["zero_mean", "border_zero_gradient"], batch_size=4, **kwargs)
    xr.testing.assert_identical(four.toce, eight.toce.isel(sample=slice(0, 4)))
    other_batches = data.oceandiff.sample(4, ["zero_mean", "border_zero_gradient"], batch_size=3, **kwargs)
    # to float rounding, which zero_mean's caps (thresholds on density steps) carry to a few 1e-4 degC in a few cells
    np.testing.assert_allclose(other_batches.toce.values, four.toce.values, rtol=0, atol=2e-3)
    close = np.abs(other_batches.toce.values - four.toce.values) <= 1e-4
    assert close[np.isfinite(four.toce.values)].mean() > 0.99
    different = data.oceandiff.sample(4, [], model=model, sampler="ddim", steps=8, seed=6, progress=False)
    assert np.nanmax(np.abs(different.toce.values - four.toce.values)) > 1e-3


def test_ddpm_noise_streams_are_per_sample(data, model):
    a = data.oceandiff.sample(3, [], model=model, sampler="ddpm", steps=10, seed=1, batch_size=1, progress=False)
    b = data.oceandiff.sample(3, [], model=model, sampler="ddpm", steps=10, seed=1, batch_size=3, progress=False)
    np.testing.assert_allclose(a.soce.values, b.soce.values, rtol=0, atol=1e-4)


def test_output_structure(data, model):
    samples = data.oceandiff.sample(2, ["border_zero"], model=model, sampler="ddim", steps=4, progress=False)
    assert samples.toce.dims == ("sample", "z_c", "y_c", "x_c") and samples.ssh.dims == ("sample", "y_c", "x_c")
    assert samples.sizes["z_c"] == 36
    ocean = data.tmask.values
    values = samples.toce.values
    assert np.isnan(values[:, ~ocean]).all() and np.isfinite(values[:, ocean]).all()
    assert samples.toce.attrs["standard_name"] == data.toce.attrs["standard_name"]
    assert samples.toce.attrs["units"] == "degC"
    for key in ("checkpoint_sha256", "sampler", "sampling_steps", "constraints", "seed", "xoceandiff_version"):
        assert key in samples.attrs
    assert samples.attrs["sampler"] == "ddim" and samples.attrs["sampling_steps"] == 4
    assert samples.attrs["constraints"] == "border_zero"


def test_zero_mean_in_physical_space(data, model):
    """zero_mean drives each kept level's area-weighted ocean mean to the training mean."""
    samples = data.oceandiff.sample(2, ["zero_mean"], model=model, sampler="ddim", steps=6, progress=False)
    stats = data.oceandiff.statistics(weighted=True).compute()  # targets: the area-weighted training means
    area = (data.e1t * data.e2t).where(data.tmask)
    level_means = samples.toce.weighted(area.fillna(0)).mean(("y_c", "x_c"))
    kept = list(model.card.layout.levels)
    scale = np.asarray(model.card.normaliser.scale["toce"])[kept]
    err = np.abs(level_means.isel(z_c=kept).values - stats.toce_mean.isel(z_c=kept).values) / scale
    assert err.max() < 1e-5 * 10  # normalised units; float32 denormalisation adds rounding
    # the test discriminates: unweighted and area-weighted training means differ by degrees at 4°
    plain = data.oceandiff.statistics().compute()
    assert float(abs(plain.toce_mean - stats.toce_mean).isel(z_c=0)) > 1.0


class _ConstantClean(torch.nn.Module):
    """A network that predicts the same clean state ``value`` everywhere (prediction_type "sample")."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, timesteps):
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_samplers_by_name_end_on_the_predicted_clean_state(data, sampler):
    """With a network that always predicts the clean state c, every sampler's last step returns c exactly.

    Oracle: the posterior mean at t = 0 has coefficient 1 on x0 and 0 on x_t (DDPM: beta_0 / (1 - abar_0) = 1;
    DDIM with final alpha 1 and DPM-Solver++ with final sigma 0 return x0); so the physical samples are
    offset + scale * c on every kept level, whatever the noise.
    """
    layout_model = prepare_model(data, "tiny")
    net = Denoiser(layout_model.channels, layout_model.sample_size, net=_ConstantClean(0.3),
                   scheduler_config={"prediction_type": "sample"})
    net.card = layout_model.card
    samples = data.oceandiff.sample(2, [], model=net, sampler=sampler, steps=7, progress=False)
    kept = list(net.card.layout.levels)
    offset = np.asarray(net.card.normaliser.offset["toce"])[kept]
    scale = np.asarray(net.card.normaliser.scale["toce"])[kept]
    ocean = data.tmask.values[kept]
    expected = np.broadcast_to((offset + 0.3 * scale)[:, None, None], ocean.shape)
    got = samples.toce.values[:, kept]
    np.testing.assert_allclose(got[:, ocean], np.broadcast_to(expected[ocean], got[:, ocean].shape), rtol=1e-5)


def test_unconstrained_ddim_is_diffusers_ddim_pipeline(data, model):
    """The loop without constraints is diffusers' DDIMPipeline with the same per-sample generators."""
    from diffusers import DDIMPipeline

    options = SamplingOptions(sampler="ddim", steps=50, seed=4, progress=False)
    ours = sample_tensors(model, [0, 1], (), options=options)
    scheduler = make_scheduler(model, "ddim", 50)
    pipeline = DDIMPipeline(unet=model.net, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(sample_seed(4, i)) for i in (0, 1)]
    theirs = pipeline(batch_size=2, generator=generators, num_inference_steps=50, output_type="pt").images
    # the pipeline maps [-1, 1] to [0, 1] and clamps: do the same to ours
    mapped = (ours / 2 + 0.5).clamp(0, 1)
    assert 0.2 < float(((mapped > 0) & (mapped < 1)).float().mean())  # most values are not clamped away
    torch.testing.assert_close(mapped, torch.as_tensor(theirs), rtol=0, atol=2e-5)


def test_bad_input_fails_before_work(data, model):
    with pytest.raises(InvalidDataError, match="n: expected a positive"):
        data.oceandiff.sample(0, model=model)
    with pytest.raises(InvalidDataError, match="steps: expected an integer between 1 and 1000"):
        data.oceandiff.sample(1, model=model, sampler="ddim", steps=5000)
    with pytest.raises(InvalidDataError, match="sampler: expected one of"):
        data.oceandiff.sample(1, model=model, sampler="euler")
    with pytest.raises(ConstraintError, match="Available constraints: .*zero_mean"):
        data.oceandiff.sample(1, ["no_such_constraint"], model=model)
    other = xoceandiff.datasets.dino(n=2, resolution=5.0)
    with pytest.raises(GridMismatchError, match=r"\(36, 51, 17\)"):
        other.oceandiff.sample(1, model=model)


def test_constraint_needing_a_missing_field(data):
    ssh_only = prepare_model(data.drop_vars(["toce", "soce"]), "tiny", levels="all")
    with pytest.raises(ConstraintError, match="toce"):
        data.oceandiff.sample(1, ["stable_stratification"], model=ssh_only, progress=False)


def test_training_leaves_the_dataset_alone_and_sampling_takes_the_model(data, tmp_path):
    ds = data.copy()
    ds.attrs = {**data.attrs, "xoceandiff_checkpoint": str(tmp_path / "elsewhere")}  # no side channel
    before = dict(ds.attrs)
    trained = ds.oceandiff.train("tiny", steps=2, batch_size=2, progress=False, checkpoint_dir=tmp_path / "run")
    assert ds.attrs == before
    from_object = ds.oceandiff.sample(1, model=trained, steps=2, progress=False)
    from_path = ds.oceandiff.sample(1, model=tmp_path / "run" / "model", steps=2, progress=False)
    assert from_object.attrs["checkpoint_sha256"] == from_path.attrs["checkpoint_sha256"] == trained.checkpoint_hash
    xr.testing.assert_identical(from_object.toce, from_path.toce)


def test_sampling_does_not_move_or_switch_the_callers_model(data, model):
    model.train()
    try:
        data.oceandiff.sample(1, model=model, steps=2, dtype=torch.float64, progress=False)
        assert model.training and next(model.parameters()).dtype == torch.float32
    finally:
        model.eval()


def test_default_sampler_is_ddim_50(data, model):
    samples = data.oceandiff.sample(1, model=model, progress=False)
    assert (samples.attrs["sampler"], samples.attrs["sampling_steps"]) == ("ddim", 50)


def test_no_model_anywhere(data):
    off_grid = xoceandiff.datasets.dino(n=1, resolution=5.0)
    with pytest.raises(CheckpointError, match="model: none given"):
        off_grid.oceandiff.sample(1)


def _density_error_percent(samples):
    t = samples.toce.values.astype("float64")
    s = samples.soce.values.astype("float64")
    rho = sigma0_teos10(t, s)
    volume = (samples.e1t * samples.e2t * samples.e3t).where(samples.tmask).transpose("z_c", "y_c", "x_c").values
    unstable = (rho[:, 1:] - rho[:, :-1]) < 0
    return 100 * np.where(unstable, volume[None, 1:], 0).sum(axis=(1, 2, 3)) / np.nansum(volume)


def test_stable_stratification_lowers_density_errors(data, model):
    kwargs = dict(model=model, sampler="ddim", steps=10, seed=3, progress=False)
    plain = data.oceandiff.sample(3, [], **kwargs)
    guided = data.oceandiff.sample(3, ["stable_stratification"], **kwargs)
    before, after = _density_error_percent(plain), _density_error_percent(guided)
    assert after.mean() < before.mean(), (before, after)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_dpm_x0_clip_is_the_same_whatever_the_network_predicts(prediction_type):
    import types

    from xoceandiff.model import DEFAULT_SCHEDULER_CONFIG
    from xoceandiff.sampling import _x0_clip, make_scheduler

    config = {**DEFAULT_SCHEDULER_CONFIG, "prediction_type": prediction_type, "clip_sample_range": 5.0}
    model = types.SimpleNamespace(scheduler_config=config)
    scheduler = make_scheduler(model, "dpm", 10)
    clip = _x0_clip(model, scheduler, "cpu", torch.float32)
    generator = torch.Generator().manual_seed(0)
    x0, eps = 10 * torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    t = torch.tensor(400)
    a = torch.as_tensor(scheduler.alphas_cumprod[400], dtype=torch.float32)
    y = a.sqrt() * x0 + (1 - a).sqrt() * eps
    velocity = make_scheduler(model, "ddpm").get_velocity(x0, eps, t.view(1))  # diffusers' definition of v
    output = {"epsilon": eps, "sample": x0, "v_prediction": velocity}[prediction_type]
    clipped = clip(output, y, t)
    back = {"epsilon": lambda o: (y - (1 - a).sqrt() * o) / a.sqrt(), "sample": lambda o: o,
            "v_prediction": lambda o: a.sqrt() * y - (1 - a).sqrt() * o}[prediction_type](clipped)
    assert (x0.abs() > 5).any()
    torch.testing.assert_close(back, x0.clamp(-5, 5), rtol=0, atol=1e-4)


def test_non_finite_samples_are_refused_and_their_source_named(data, model):
    def poison(x, t, ctx):  # a user constraint that breaks at one step
        return torch.where(torch.as_tensor(int(t) < 400), x * float("nan"), x)

    with pytest.raises(InvalidDataError, match=r"samples \[0\]: non-finite .*toce\[0\]: \d+.*"
                                               r"first produced by the constraint 'poison' at step \d+"):
        data.oceandiff.sample(1, [poison], model=model, steps=4, progress=False)
    broken = prepare_model(data, "tiny")
    with torch.no_grad():
        next(broken.net.parameters()).fill_(float("inf"))
    with pytest.raises(InvalidDataError, match="first produced by the denoiser at step"):
        data.oceandiff.sample(1, model=broken, steps=2, progress=False)


def test_level_means_records_drive_each_sample_to_one_training_records_profile(data, model):
    """level_means="records": each sample's area-weighted level means are those of the training record it drew
    (numpy oracle on the data), the record is named in a coordinate, the draw does not depend on batching."""
    card = model.card
    assert card.record_means["record"].tolist() == list(range(16))  # 16 records: all kept
    samples = data.oceandiff.sample(4, ["zero_mean"], model=model, steps=6, progress=False, level_means="records",
                                    batch_size=3)
    records = samples.level_means_record.values
    assert len(set(records.tolist())) > 1 and samples.attrs["level_means"] == "records"
    area = (data.e1t * data.e2t).where(data.tmask).fillna(0)
    kept = list(card.layout.levels)
    got = samples.toce.weighted(area).mean(("y_c", "x_c")).isel(z_c=kept).values
    toce = data.toce.values[records][:, kept]
    weights = np.broadcast_to(area.transpose("z_c", "y_c", "x_c").values[kept], toce.shape)
    ocean = np.isfinite(toce)
    expected = (np.where(ocean, toce, 0) * weights).sum((2, 3)) / (weights * ocean).sum((2, 3))
    scale = np.asarray(card.normaliser.scale["toce"])[kept]
    assert np.max(np.abs(got - expected) / scale) < 1e-4
    ssh = data.ssh.values[records]
    ssh_area = area.isel(z_c=0).values
    ssh_expected = np.nansum(ssh * ssh_area, (1, 2)) / np.sum(ssh_area * np.isfinite(ssh), (1, 2))
    got_ssh = samples.ssh.weighted(area.isel(z_c=0)).mean(("y_c", "x_c")).values
    assert np.max(np.abs(got_ssh - ssh_expected)) / card.normaliser.scale["ssh"][0] < 1e-4
    one_by_one = data.oceandiff.sample(4, ["zero_mean"], model=model, steps=6, progress=False,
                                       level_means="records", batch_size=1)
    np.testing.assert_array_equal(one_by_one.level_means_record.values, records)
    np.testing.assert_allclose(one_by_one.toce.values, samples.toce.values, rtol=0, atol=1e-4)  # float32 batching


def test_level_means_records_refused_for_a_card_without_them(data, model):
    from dataclasses import replace

    old = prepare_model(data, "tiny")
    old.card = replace(old.card, record_means=None)
    with pytest.raises(CheckpointError, match="keeps no per-record level means"):
        data.oceandiff.sample(1, ["zero_mean"], model=old, steps=2, level_means="records")
    with pytest.raises(InvalidDataError, match="level_means: expected 'training', 'records'"):
        data.oceandiff.sample(1, ["zero_mean"], model=model, steps=2, level_means="latest")


def test_level_means_of_chosen_records_are_what_zero_mean_drives_to(data, model):
    """zero_mean drives each kept level's area-weighted mean to the statistics given (here of 4 records
    that differ from the training mean), eagerly; the samples record where their means came from."""
    recent = data.isel(t=slice(0, 4))
    recent.attrs["level_means_source"] = "records 0-3"
    stats = recent.oceandiff.statistics(weighted=True).compute()
    stats.attrs["level_means_source"] = "records 0-3"
    samples = data.oceandiff.sample(2, ["zero_mean"], model=model, steps=6, progress=False, level_means=stats)
    area = (data.e1t * data.e2t).where(data.tmask).fillna(0)
    kept = list(model.card.layout.levels)
    got = samples.toce.weighted(area).mean(("y_c", "x_c")).isel(z_c=kept).values
    # oracle: numpy area-weighted means of those 4 records
    toce = recent.toce.values[:, kept]
    weights = np.broadcast_to(area.transpose("z_c", "y_c", "x_c").values[kept], toce.shape)
    ocean = np.isfinite(toce)
    expected = (np.where(ocean, toce, 0) * weights).sum((0, 2, 3)) / (weights * ocean).sum((0, 2, 3))
    scale = np.asarray(model.card.normaliser.scale["toce"])[kept]
    assert np.max(np.abs(got - expected) / scale) < 1e-4
    training = np.asarray(model.card.training_means["toce"])[kept]
    assert np.max(np.abs(expected - training) / scale) > 1e-3  # the test tells the two targets apart
    assert samples.attrs["level_means"] == "records 0-3"
    with pytest.raises(InvalidDataError, match="level_means: no 'toce_mean'"):
        data.oceandiff.sample(1, ["zero_mean"], model=model, steps=2, level_means=stats.drop_vars("toce_mean"))
