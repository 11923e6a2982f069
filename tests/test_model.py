"""Tests of xoceandiff.model: presets, forward, the safetensors checkpoint and the scheduler.

Oracles: the paper's published parameter count, bit-identical outputs across a save and a load,
hashes computed here with hashlib, the squaredcos_cap_v2 schedule recomputed in numpy from its
formula, and a plugged-in convolution compared with the bare convolution.
"""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import DDPMScheduler, UNet2DModel

from xoceandiff import model as model_module
from xoceandiff.checkpoint import checkpoint_sha256
from xoceandiff.errors import CheckpointError, InvalidDataError, OutputExistsError
from xoceandiff.model import (
    CONFIG_FILE,
    DEFAULT_SCHEDULER_CONFIG,
    PRESETS,
    WEIGHTS_FILE,
    Denoiser,
    load_model,
)

C, H, W = 5, 16, 32
METADATA = {
    "variables": ["toce", "soce", "ssh"],
    "normalisation": {"scheme": "3-std", "mean": [1.5, 2.0], "std": [0.25, None]},
    "grid_fingerprint": "abc123",
}


@pytest.fixture
def tiny() -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(C, (H, W), "tiny", metadata=METADATA)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, C, H, W, generator=torch.Generator().manual_seed(42))


class ConvNet(torch.nn.Module):
    """A plugged-in network: one convolution, plus a record of the timesteps it was given."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.seen.append(timesteps)
        return self.conv(x)


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- presets -----------------------------------------------------------------------------------


def test_paper_preset_has_the_published_parameter_count():
    model = Denoiser(37, (64, 208), "paper")
    assert round(model.n_parameters / 1e6, 2) == 6.84  # method.md: 6.84 M parameters
    # Independent count on a UNet2DModel built here from the paper's description.
    reference = UNet2DModel(
        sample_size=(64, 208),
        in_channels=37,
        out_channels=37,
        layers_per_block=2,
        block_out_channels=(64, 64, 128, 128),
        down_block_types=("DownBlock2D",) * 4,
        up_block_types=("UpBlock2D",) * 4,
    )
    assert model.n_parameters == _n_params(reference)


def test_smaller_presets_are_smaller_and_valid():
    counts = {
        name: Denoiser(37, (64, 208), name).n_parameters for name in ("tiny", "small", "paper")
    }
    assert counts["tiny"] < counts["small"] < counts["paper"]
    for name, kwargs in PRESETS.items():
        groups = kwargs.get("norm_num_groups", 32)
        assert all(width % groups == 0 for width in kwargs["block_out_channels"]), name
    assert DEFAULT_SCHEDULER_CONFIG == {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "clip_sample": True,
        "prediction_type": "epsilon",
    }


def test_unet_kwargs_override_the_preset_and_reserved_keys_are_refused():
    model = Denoiser(C, (H, W), "tiny", unet_kwargs={"layers_per_block": 2})
    assert model.config["unet_kwargs"]["layers_per_block"] == 2
    assert model.config["unet_kwargs"]["block_out_channels"] == [16, 32]
    assert model.n_parameters > Denoiser(C, (H, W), "tiny").n_parameters
    with pytest.raises(InvalidDataError, match="in_channels"):
        Denoiser(C, (H, W), "tiny", unet_kwargs={"in_channels": 3})
    with pytest.raises(InvalidDataError, match="unknown preset 'huge'"):
        Denoiser(C, (H, W), "huge")
    with pytest.raises(InvalidDataError, match="divisible by 4"):
        Denoiser(C, (62, 199), "small")
    with pytest.raises(InvalidDataError, match="norm_num_groups=32"):
        Denoiser(C, (H, W), "tiny", unet_kwargs={"norm_num_groups": 32})
    with pytest.raises(InvalidDataError, match="unknown DDPMScheduler keys.*beta_shedule"):
        Denoiser(C, (H, W), "tiny", scheduler_config={"beta_shedule": "linear"})


# -- forward ----------------------------------------------------------------------------------


def test_forward_is_the_unet_and_accepts_every_timestep_form(tiny, x):
    with torch.no_grad():
        out = tiny(x, 7)
        assert isinstance(out, torch.Tensor) and out.shape == x.shape
        assert torch.equal(out, tiny.net(x, torch.tensor([7, 7])).sample)
        assert torch.equal(out, tiny(x, torch.tensor(7)))
        assert torch.equal(out, tiny(x, torch.tensor([7])))
        per_sample = tiny(x, torch.tensor([7, 900]))
    assert torch.equal(per_sample[0], out[0])
    assert not torch.equal(per_sample[1], out[1])  # the timestep reaches the network


def test_forward_rejects_bad_shapes(tiny, x):
    with pytest.raises(InvalidDataError, match=r"shape \(batch, 5, H, W\)"):
        tiny(x[:, :3], 1)
    with pytest.raises(InvalidDataError, match="length 1 or 2"):
        tiny(x, torch.tensor([1, 2, 3]))
    with pytest.raises(InvalidDataError, match="divisible by 2"):
        tiny(torch.zeros(1, C, 15, 32), 1)


# -- checkpoint round trip --------------------------------------------------------------------


def test_save_load_is_bit_identical(tiny, x, tmp_path):
    target = tmp_path / "ckpt"
    returned = tiny.save(target)
    assert returned == target and sorted(p.name for p in target.iterdir()) == [
        CONFIG_FILE,
        WEIGHTS_FILE,
    ]
    again = load_model(target)
    with torch.no_grad():
        assert torch.equal(again(x, 123), tiny(x, 123))
        assert torch.equal(again(x, torch.tensor([0, 999])), tiny(x, torch.tensor([0, 999])))
    assert again.config == tiny.config
    assert again.metadata == tiny.metadata == METADATA
    assert again.scheduler_config == tiny.scheduler_config
    for name, tensor in tiny.net.state_dict().items():
        assert torch.equal(again.net.state_dict()[name], tensor), name

    # The recorded hash and size are those of the file on disk, computed independently here.
    digest = hashlib.sha256((target / WEIGHTS_FILE).read_bytes()).hexdigest()
    document = json.loads((target / CONFIG_FILE).read_text())
    assert document["weights"]["sha256"] == digest
    # the checkpoint's hash covers the config (with the weights' hash in it), computed here from its definition
    body = json.dumps({k: v for k, v in document.items() if k != "checkpoint_sha256"}, sort_keys=True,
                      separators=(",", ":"))
    whole = hashlib.sha256(body.encode()).hexdigest()
    assert document["checkpoint_sha256"] == whole == again.checkpoint_hash == tiny.checkpoint_hash
    assert document["weights"]["size"] == (target / WEIGHTS_FILE).stat().st_size
    assert document["format_version"] == model_module.FORMAT_VERSION
    assert isinstance(document["xoceandiff_version"], str) and document["xoceandiff_version"]
    assert again.checkpoint_path == tiny.checkpoint_path == target
    assert not again.training  # loaded for sampling


def test_loading_never_unpickles(tiny, x, tmp_path, monkeypatch):
    tiny.save(tmp_path / "ckpt")

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    again = load_model(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(again(x, 3), tiny(x, 3))


def test_load_replaces_the_fresh_initialisation(tiny, x, tmp_path):
    # load_model builds a freshly initialised network first. Reseed so that this fresh
    # initialisation equals `tiny`, not `other`: a load that skipped the weights would then
    # return tiny's outputs and fail the last assertion.
    torch.manual_seed(1)
    other = Denoiser(C, (H, W), "tiny")
    with torch.no_grad():
        assert not torch.equal(other(x, 5), tiny(x, 5))
    other.save(tmp_path / "other")
    torch.manual_seed(0)  # the seed `tiny` was built with
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "other")(x, 5), other(x, 5))


# -- damaged checkpoints ----------------------------------------------------------------------


def test_flipped_byte_is_detected(tiny, tmp_path):
    target = tiny.save(tmp_path / "ckpt")
    data = bytearray((target / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (target / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or modified: expected sha256"):
        load_model(target)


def test_truncated_weights_are_detected(tiny, tmp_path):
    target = tiny.save(tmp_path / "ckpt")
    data = (target / WEIGHTS_FILE).read_bytes()
    (target / WEIGHTS_FILE).write_bytes(data[:-100])
    expected = f"expected {len(data)} bytes, found {len(data) - 100}"
    with pytest.raises(CheckpointError, match=f"truncated or modified: {expected}"):
        load_model(target)


def test_missing_or_invalid_config_is_named(tiny, tmp_path):
    target = tiny.save(tmp_path / "ckpt")
    (target / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_model(target)
    (target / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json is missing"):
        load_model(target)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "nowhere")


def test_missing_and_unexpected_tensors_are_listed(tiny, tmp_path):
    # A consistent checkpoint (hash and size rewritten) whose tensors do not fit the network.
    target = tiny.save(tmp_path / "ckpt")
    tensors = safetensors.torch.load_file(str(target / WEIGHTS_FILE))
    del tensors["conv_in.weight"]
    tensors["extra.bias"] = torch.zeros(3)
    safetensors.torch.save_file(tensors, str(target / WEIGHTS_FILE))
    document = json.loads((target / CONFIG_FILE).read_text())
    data = (target / WEIGHTS_FILE).read_bytes()
    document["weights"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    document["checkpoint_sha256"] = checkpoint_sha256(document)
    (target / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"missing \['conv_in.weight'\].*\['extra.bias'\]"):
        load_model(target)


def test_an_edited_config_is_refused(tiny, tmp_path):
    """One hash over config and weights: an edited normalisation scale no longer loads silently."""
    target = tiny.save(tmp_path / "ckpt")
    document = json.loads((target / CONFIG_FILE).read_text())
    document["metadata"]["normalisation"]["std"] = [0.5, None]
    (target / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="was modified after it was written"):
        load_model(target)


def test_newer_format_is_refused(tiny, tmp_path):
    target = tiny.save(tmp_path / "ckpt")
    document = json.loads((target / CONFIG_FILE).read_text())
    document["format_version"] = model_module.FORMAT_VERSION + 1
    (target / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="upgrade xoceandiff"):
        load_model(target)


# -- atomic save ------------------------------------------------------------------------------


def test_existing_path_is_refused_unless_overwrite(tiny, x, tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        tiny.save(target)
    assert (target / "keep.txt").read_text() == "user data"

    tiny.save(target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or backup left
    with torch.no_grad():
        assert torch.equal(load_model(target)(x, 9), tiny(x, 9))


def test_failed_save_leaves_nothing(tiny, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny.save(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []
    assert tiny.checkpoint_path is None and tiny.checkpoint_hash is None


def test_failed_overwrite_keeps_the_old_checkpoint(tiny, x, tmp_path, monkeypatch):
    target = tiny.save(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        Denoiser(C, (H, W), "tiny").save(target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_metadata_that_json_cannot_hold_is_refused_before_writing(tiny, tmp_path):
    tiny.metadata["normalisation"]["mean"] = np.array([1.0, 2.0])
    with pytest.raises(InvalidDataError, match=r"metadata\['normalisation'\]\['mean'\].*tolist"):
        tiny.save(tmp_path / "ckpt")
    tiny.metadata["normalisation"]["mean"] = [float("nan")]
    with pytest.raises(InvalidDataError, match="NaN"):
        tiny.save(tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


# -- plugged-in network -----------------------------------------------------------------------


def test_custom_net_forward_and_checkpoint(x, tmp_path):
    torch.manual_seed(3)
    conv = ConvNet(C)
    model = Denoiser(C, (H, W), net=conv, metadata={"note": "custom"})
    with torch.no_grad():
        out = model(x, 11)
        assert torch.equal(out, conv.conv(x))
    assert conv.seen[-1].shape == (2,) and conv.seen[-1].tolist() == [11, 11]
    assert model.config["preset"] is None and model.config["network"].endswith("ConvNet")
    assert model.n_parameters == C * C * 9 + C

    target = model.save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"custom network .*ConvNet.*net="):
        load_model(target)
    torch.manual_seed(4)
    fresh = ConvNet(C)
    with torch.no_grad():
        assert not torch.equal(fresh.conv(x), out)
    again = load_model(target, net=fresh)
    assert again.net is fresh and again.metadata == {"note": "custom"}
    with torch.no_grad():
        assert torch.equal(again(x, 11), out)

    # The wrong network for these weights: the keys are listed.
    with pytest.raises(CheckpointError, match=r"missing \[.*unexpected \['conv.bias'"):
        load_model(target, net=torch.nn.Sequential(torch.nn.Conv2d(C, C, 1)))


# -- scheduler --------------------------------------------------------------------------------


def test_scheduler_follows_the_squaredcos_formula(tiny):
    scheduler = tiny.make_scheduler()
    assert isinstance(scheduler, DDPMScheduler)
    assert scheduler is not tiny.make_scheduler()  # fresh each call: no shared set_timesteps state
    assert scheduler.config.prediction_type == "epsilon" and scheduler.config.clip_sample

    T = 1000

    def abar(s: np.ndarray) -> np.ndarray:
        return np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2

    i = np.arange(T, dtype=np.float64)
    betas = np.minimum(1 - abar((i + 1) / T) / abar(i / T), 0.999)
    expected = np.cumprod(1 - betas)
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), expected, rtol=0, atol=1e-6)


def test_scheduler_config_overrides_reach_the_scheduler(tmp_path):
    model = Denoiser(C, (H, W), "tiny", scheduler_config={"num_train_timesteps": 50})
    assert model.make_scheduler().alphas_cumprod.shape == (50,)
    assert (
        load_model(model.save(tmp_path / "ckpt")).make_scheduler().config.num_train_timesteps == 50
    )

