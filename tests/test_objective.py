"""Vertical differences as the diffusion variable, and the static-stability term of the training objective."""

from __future__ import annotations

import json

import gsw
import numpy as np
import pytest
import safetensors.torch
import torch

import xoceandiff
from xoceandiff.checkpoint import checkpoint_sha256, sha256_of
from xoceandiff.errors import CheckpointError, InvalidDataError
from xoceandiff.gridops import GridOps
from xoceandiff.layout import to_numpy, to_tensor
from xoceandiff.model import Denoiser, load_model
from xoceandiff.normalisation import normalise
from xoceandiff.objective import StabilityTerm, check_stability_weight
from xoceandiff.training import _clean_estimate, prepare_model, train, vertical_segments


@pytest.fixture(scope="module")
def data():
    return xoceandiff.datasets.dino(n=6, resolution=4.0, seed=7)


@pytest.fixture(scope="module")
def vertical_model(data):
    return prepare_model(data, "tiny", background=True, vertical=True, prediction_type="sample")


def _physical_anomalies(data, model):
    """Per record and channel, the physical anomaly about the per-cell training mean, with numpy only."""
    layout, norm = model.card.layout, model.card.normaliser
    x = to_numpy(normalise(data, norm), layout, dim="t").astype(np.float64)
    mean = x.mean(axis=0)
    unit = np.concatenate([np.asarray(norm.scale[name])[list(layout.levels)] if layout.three_dimensional(name)
                           else np.asarray(norm.scale[name])[:1] for name in layout.fields])
    return x, mean, (x - mean) * unit[None, :, None, None]


def test_vertical_spread_is_the_rms_of_the_level_differences(data, vertical_model):
    model = vertical_model
    layout = model.card.layout
    x, mean, anomaly = _physical_anomalies(data, model)
    ocean = GridOps.from_dataset(data, layout).mask.numpy()
    expected = np.empty(layout.channels)
    for name, part in layout.channel_slices.items():
        block = anomaly[:, part]
        if layout.three_dimensional(name):  # each level minus the one below (land 0), numpy's own differences
            wet = ocean[part][None]
            block = block * wet
            block = np.concatenate([-np.diff(block, axis=1), block[:, -1:]], axis=1) * wet
        for k, c in enumerate(range(part.start, part.stop)):
            expected[c] = np.sqrt((block[:, k][:, ocean[c]] ** 2).mean())
    np.testing.assert_allclose(model.space_scale.flatten().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(model.space_offset.numpy(), mean, atol=1e-6)
    assert vertical_segments(layout) == [[0, 18], [18, 36]] and model.vertical == ((0, 18), (18, 36))
    # the data in model space: each channel has unit RMS over its ocean cells
    y = model.to_model_space(torch.from_numpy(x).float()).numpy()
    rms = [np.sqrt((y[:, c][:, ocean[c]] ** 2).mean()) for c in range(layout.channels)]
    np.testing.assert_allclose(rms, 1.0, rtol=1e-4)


def test_vertical_model_space_round_trip_and_land(data, vertical_model):
    model = vertical_model
    layout = model.card.layout
    ocean = torch.from_numpy(GridOps.from_dataset(data, layout).mask.numpy())
    y = torch.randn(3, layout.channels, *layout.shape, generator=torch.Generator().manual_seed(0)) * ocean
    # float64 through: in float32 the rounding of x (about 1e-7 normalised, 1e-6 degC) comes back divided by
    # the deep levels' small difference scales
    torch.testing.assert_close(model.to_model_space(model.from_model_space(y.double())), y.double(), rtol=0, atol=1e-9)
    x = model.from_model_space(y)
    assert x.dtype == torch.float32
    # land cells get the background exactly; ocean cells are the cumulative sums of the scaled differences
    assert torch.equal(x[:, ~ocean], model.space_offset.expand_as(x)[:, ~ocean])
    top = layout.channel_slices["toce"]
    scale, unit = model.space_scale.flatten(), model.space_unit.flatten()
    j, i = (int(v) for v in torch.nonzero(ocean[top].all(0))[0])  # a column wet at every kept level
    column = (y[0, top, j, i] * scale[top]).double().numpy()
    rebuilt = model.space_offset[top, j, i].double().numpy() + np.cumsum(column[::-1])[::-1] / unit[top].double().numpy()
    np.testing.assert_allclose(x[0, top, j, i].double().numpy(), rebuilt, rtol=1e-5)


def test_vertical_sums_start_at_each_columns_own_bottom():
    """A 4-level field over two columns, one 2 levels deep: numpy's sums from each column's deepest wet level."""
    model = Denoiser(5, (16, 16), "tiny", background=True, vertical=[[0, 4]])
    mask = torch.ones(5, 16, 16)
    mask[2:4, 0, 0] = 0  # column (0, 0): levels 0 and 1 wet
    generator = torch.Generator().manual_seed(2)
    offset = torch.randn(5, 16, 16, generator=generator)
    scale, unit = torch.tensor([0.5, 0.2, 0.1, 0.05, 1.0]), torch.tensor([10.0, 9.0, 8.0, 7.0, 0.5])
    model.set_background(offset, scale, unit, mask)
    y = torch.randn(1, 5, 16, 16, generator=generator, dtype=torch.float64) * mask
    x = model.from_model_space(y)
    for (j, i), depth in (((0, 0), 2), ((3, 5), 4)):
        steps = (y[0, :depth, j, i] * scale[:depth]).numpy()
        rebuilt = offset[:depth, j, i].double().numpy() + np.cumsum(steps[::-1])[::-1] / unit[:depth].double().numpy()
        np.testing.assert_allclose(x[0, :depth, j, i].numpy(), rebuilt, rtol=1e-12)
    torch.testing.assert_close(model.to_model_space(x), y, rtol=0, atol=1e-9)


def test_vertical_model_saves_and_loads_its_space(data, vertical_model, tmp_path):
    model = vertical_model
    path = model.save(tmp_path / "ckpt")
    assert json.loads((path / "config.json").read_text())["model"]["vertical"] == [[0, 18], [18, 36]]
    loaded = load_model(path)
    assert loaded.vertical == model.vertical
    for name in ("space_offset", "space_scale", "space_unit", "space_mask"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    # weights that lack the tensors the config announces are refused, not half-loaded
    tensors = safetensors.torch.load_file(path / "model.safetensors")
    del tensors["space.unit"]
    broken = tmp_path / "broken"
    broken.mkdir()
    safetensors.torch.save_file(tensors, broken / "model.safetensors")
    document = json.loads((path / "config.json").read_text())
    document["weights"].update(sha256=sha256_of(broken / "model.safetensors"),
                               size=(broken / "model.safetensors").stat().st_size)
    document["checkpoint_sha256"] = checkpoint_sha256(document)
    (broken / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="space.unit"):
        load_model(broken)


def test_vertical_needs_a_background(data):
    with pytest.raises(InvalidDataError, match="background"):
        prepare_model(data, "tiny", vertical=True)
    with pytest.raises(InvalidDataError, match="segments"):
        Denoiser(37, (16, 32), "tiny", background=True, vertical=[[0, 20], [10, 30]])


def test_older_models_have_no_vertical_key(data):
    model = prepare_model(data, "tiny", background=True)
    assert "vertical" not in model.config and model.vertical == ()


def test_stability_term_is_the_squared_inversion_in_units_of_the_diffusion_variable(data):
    """One column made unstable by swapping two levels: the term against gsw's density and a finite-difference
    derivative at the level's mean state."""
    model = prepare_model(data, "tiny", background=True, prediction_type="sample", levels="all")
    card = model.card
    term = StabilityTerm(data, model)
    state = data.isel(t=[0]).load()
    assert float(term(model.to_model_space(to_tensor(normalise(state, card.normaliser), card.layout)))) < 1e-7
    k = 2
    j, i = (int(v) for v in np.argwhere(state.tmask.values[k + 1])[len(np.argwhere(state.tmask.values[k + 1])) // 2])
    t_col = state.toce.values[0, :, j, i].copy()
    s_col = state.soce.values[0, :, j, i].copy()
    # warm water under cold: swap the temperatures of levels k and k + 1 (salinity left as it is)
    t_col[k], t_col[k + 1] = t_col[k + 1], t_col[k]
    unstable = state.copy(deep=True)
    unstable.toce.values[0, :, j, i] = t_col
    y = model.to_model_space(to_tensor(normalise(unstable, card.normaliser), card.layout))
    value = float(term(y))
    layout = card.layout
    levels = list(layout.levels)
    assert k in levels and k + 1 in levels and levels.index(k + 1) == levels.index(k) + 1
    inversion = gsw.sigma0(s_col[k], t_col[k]) - gsw.sigma0(s_col[k + 1], t_col[k + 1])
    assert inversion > 0
    t_mean, s_mean = card.normaliser.offset["toce"][k], card.normaliser.offset["soce"][k]
    d_rho_d_t = abs(gsw.sigma0(s_mean, t_mean + 1e-3) - gsw.sigma0(s_mean, t_mean - 1e-3)) / 2e-3
    channel = layout.channel_slices["toce"].start + levels.index(k)
    unit = card.normaliser.scale["toce"][k] * float(model.space_scale.flatten()[channel])
    expected = (inversion / (d_rho_d_t * unit)) ** 2 / y[0].numel()
    # the package's EOS is the TEOS-10 polynomial, gsw the full function: they agree to a few 1e-3 here
    assert value == pytest.approx(expected, rel=2e-2)


def test_stability_weight_refusals():
    assert check_stability_weight(0, "epsilon", ("toce",)) == 0.0
    with pytest.raises(InvalidDataError, match="prediction_type"):
        check_stability_weight(1.0, "epsilon", ("toce", "soce", "ssh"))
    with pytest.raises(InvalidDataError, match="soce"):
        check_stability_weight(1.0, "sample", ("toce", "ssh"))
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(InvalidDataError, match="stability_weight"):
            check_stability_weight(bad, "sample", ("toce", "soce"))


def test_clean_estimate_inverts_the_v_target():
    from diffusers import DDPMScheduler

    from xoceandiff.model import DEFAULT_SCHEDULER_CONFIG

    scheduler = DDPMScheduler.from_config({**DEFAULT_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    generator = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 2, 4, 4, generator=generator), torch.randn(3, 2, 4, 4, generator=generator)
    timesteps = torch.tensor([0, 400, 990])
    noisy = scheduler.add_noise(x0, noise, timesteps)
    v = scheduler.get_velocity(x0, noise, timesteps)
    torch.testing.assert_close(_clean_estimate(scheduler, v, noisy, timesteps), x0, rtol=1e-4, atol=1e-4)


def test_training_with_the_term_records_it_and_adds_it_to_the_loss(data, one_thread):
    """Same seed, same first batch: the first step's loss with the term is the MSE's plus weight x term of the
    network's estimate, computed here from the same network output."""
    from xoceandiff.training import TrainingOptions, set_up, training_step

    runs = {}
    for weight in (0.0, 1e4):
        options = TrainingOptions(steps=1, batch_size=2, seed=3, progress=False, stability_weight=weight)
        runs[weight] = set_up(data, "tiny", options, background=True, prediction_type="sample")
    batch = next(runs[0.0].batches)
    assert torch.equal(batch, next(runs[1e4].batches))
    run = runs[1e4]
    model, scheduler = run.model, run.scheduler
    generator = torch.Generator().manual_seed(3)
    x0 = model.to_model_space(batch)
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
    with torch.no_grad():
        predicted = model(scheduler.add_noise(x0, noise, timesteps), timesteps)
        mse = float(torch.nn.functional.mse_loss(predicted, x0))
        extra = float(run.stability(predicted))
    assert extra > 0
    assert training_step(runs[0.0], batch) == pytest.approx(mse, rel=1e-5)
    assert training_step(run, batch) == pytest.approx(mse + 1e4 * extra, rel=1e-5)
    trained = train(data, "tiny", steps=2, batch_size=2, progress=False, background=True, prediction_type="sample",
                    stability_weight=5.0)
    assert trained.card.training["stability_weight"] == 5.0
    assert "static-stability" in trained.card.training["objective"]


def test_cli_refuses_the_term_and_differences_without_what_they_need(tmp_path, capsys):
    from test_reliability_cli import assert_one_line, run_main

    base = ["train", "--data", "dino", "--out", str(tmp_path / "run"), "--steps", "1", "--preset", "tiny"]
    code, err = run_main([*base, "--stability-weight", "3"], capsys)
    assert_one_line(code, err, "train", "--stability-weight", "--prediction-type sample")
    code, err = run_main([*base, "--vertical-differences"], capsys)
    assert_one_line(code, err, "train", "--vertical-differences", "--background")
    assert not (tmp_path / "run").exists()


def test_cli_trains_in_vertical_differences_with_the_term(tmp_path, one_thread):
    from xoceandiff.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "dino", "--dino-n", "4", "--out", str(out), "--steps", "2", "--preset", "tiny",
                 "--batch-size", "2", "--background", "--prediction-type", "sample", "--vertical-differences",
                 "--stability-weight", "2.5", "--no-progress"]) == 0
    model = load_model(out / "model")
    assert model.vertical and model.card.training["stability_weight"] == 2.5

