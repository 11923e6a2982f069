"""The denoiser: a U-Net that predicts the noise (or the clean state, or v) of a normalised ocean state.

The network follows Meunier et al. (2025, arXiv:2502.02499): a diffusers ``UNet2DModel`` whose input
and output are the ``(batch, channels, H, W)`` tensors built by :mod:`xoceandiff.layout` (37
channels, a 208 x 64 (H x W) padded plane for DINO 1°), trained with epsilon prediction under a DDPM
``squaredcos_cap_v2`` schedule of 1000 steps. :data:`PRESETS` holds the paper's configuration and
smaller ones for CPUs and tests; any torch module with the call signature ``net(x, timesteps)`` can be
plugged in instead.

A trained denoiser carries its :class:`~xoceandiff.card.ModelCard` (``model.card``: layout,
normaliser, grid fingerprint, training means and record), which turns its tensors back into ocean
states. :meth:`Denoiser.save` and :func:`load_model` go through :mod:`xoceandiff.checkpoint`, which owns
the disk format (safetensors weights hashed in a JSON config, written atomically; nothing unpickled).
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import torch
from diffusers import DDPMScheduler, UNet2DModel

from .card import CARD_KEYS, ModelCard
from .checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    json_roundtrip,
    read_model_files,
    write_model_files,
)
from .errors import CheckpointError, InvalidDataError

__all__ = [
    "PRESETS",
    "DEFAULT_SCHEDULER_CONFIG",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "FORMAT_VERSION",
    "Denoiser",
    "load_model",
]

PathLike: TypeAlias = "str | os.PathLike[str]"

PRESETS: dict[str, dict[str, Any]] = {
    # The configuration of the paper (method.md): 6.84 M parameters at 37 channels, ~25 GFLOP per
    # sample and step at 208 x 64. No attention blocks: the reference has none.
    "paper": {
        "block_out_channels": (64, 64, 128, 128),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D",) * 4,
        "up_block_types": ("UpBlock2D",) * 4,
    },
    # ~3.07 M parameters at 37 channels: the paper's first-level width (wider than the 37 input
    # channels, so the vertical structure of T and S is not squeezed) on three levels with one layer
    # each; the bundled model's preset (about 0.3 s per AdamW step of a batch of 8 at 64 x 32 on 2 cores).
    "medium": {
        "block_out_channels": (64, 64, 128),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D",) * 3,
        "up_block_types": ("UpBlock2D",) * 3,
    },
    # ~1.08 M parameters at 37 channels: about 1 s per AdamW step of a batch of 8 at 208 x 64 on
    # 2 CPU cores, so a few hundred steps (enough to see the loss fall) take minutes.
    "small": {
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D",) * 3,
        "up_block_types": ("UpBlock2D",) * 3,
    },
    # For tests and doctests: a forward pass on a 16 x 32 plane takes milliseconds.
    # norm_num_groups is lowered because GroupNorm needs it to divide every block width (16).
    "tiny": {
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "down_block_types": ("DownBlock2D",) * 2,
        "up_block_types": ("UpBlock2D",) * 2,
    },
}
"""UNet2DModel keyword arguments of each named preset (``in_channels``, ``out_channels`` and
``sample_size`` come from the :class:`Denoiser`)."""

DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": True,
    "prediction_type": "epsilon",
}
"""The DDPM schedule of the paper; keys given to ``Denoiser(scheduler_config=...)`` override these."""

# UNet2DModel arguments that the Denoiser sets itself: accepting them in unet_kwargs too would
# allow a config that contradicts ``channels`` / ``sample_size``.
_RESERVED_UNET_KWARGS = ("in_channels", "out_channels", "sample_size")


class Denoiser(torch.nn.Module):
    """A noise-prediction network with its scheduler config and free metadata.

    Parameters
    ----------
    channels : int
        Number of input and output channels (37 for the paper's layout).
    sample_size : (int, int) or int
        Spatial size ``(H, W)`` of the tensors (``(208, 64)`` for DINO 1°). With the built-in U-Net,
        both must be divisible by ``2 ** (len(block_out_channels) - 1)``, since the U-Net halves
        the plane that many times.
    preset : {"paper", "medium", "small", "tiny"}
        Name of a U-Net configuration in :data:`PRESETS`. Ignored when ``net`` is given.
    unet_kwargs : dict, optional
        ``UNet2DModel`` keyword arguments that override the preset's (not ``in_channels``,
        ``out_channels`` or ``sample_size``: those come from ``channels`` and ``sample_size``).
    net : torch.nn.Module, optional
        A network to use instead of the U-Net: called as ``net(x, timesteps)`` with ``timesteps`` a
        1-d tensor of length ``batch``, it returns a tensor shaped like ``x``, or an object with a
        ``.sample`` tensor (like ``UNet2DModel``). A checkpoint of such a model can only be
        reloaded by passing an instance of the same network to :func:`load_model`.
    scheduler_config : dict, optional
        Keys of ``diffusers.DDPMScheduler`` that override :data:`DEFAULT_SCHEDULER_CONFIG`.
    metadata : dict, optional
        Free JSON-serialisable dictionary saved with the checkpoint (copied here; tuples become lists,
        as they would after a save and load).

    Attributes
    ----------
    net : torch.nn.Module
        The wrapped network.
    metadata : dict
        Free, JSON-serialisable dictionary filled by the rest of the package (layout, normalisation,
        variable names, grid fingerprint, training record). Checked when the model is saved.
    checkpoint_path : pathlib.Path or None
        Absolute path of the checkpoint this model was last saved to or loaded from.
    checkpoint_hash : str or None
        sha256 (hex) of that checkpoint as a whole (config and weights, see
        :func:`xoceandiff.checkpoint.checkpoint_sha256`).
    card : ModelCard or None
        What the model is for (layout, normaliser, grid, training facts): set when the model is prepared
        for a dataset (:func:`xoceandiff.training.prepare_model`) or loaded; None for a bare network.

    Raises
    ------
    InvalidDataError
        On an unknown preset, bad ``channels`` / ``sample_size``, reserved or contradictory
        ``unet_kwargs``, an unknown scheduler key, or metadata that JSON cannot hold.

    Examples
    --------
    >>> import torch
    >>> from xoceandiff.model import Denoiser
    >>> model = Denoiser(37, sample_size=(16, 32), preset="tiny")
    >>> x = torch.randn(2, 37, 16, 32, generator=torch.Generator().manual_seed(0))
    >>> with torch.no_grad():
    ...     eps = model(x, 999)
    >>> eps.shape
    torch.Size([2, 37, 16, 32])
    >>> model.config["preset"], model.n_parameters
    ('tiny', 174389)
    """

    def __init__(
        self,
        channels: int,
        sample_size: tuple[int, int] | int = (208, 64),
        preset: str = "small",
        *,
        unet_kwargs: Mapping[str, Any] | None = None,
        net: torch.nn.Module | None = None,
        scheduler_config: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        background: bool = False,
        conditions: Sequence[Mapping[str, Any]] = (),
        vertical: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        channels = _check_channels(channels)
        size = _check_sample_size(sample_size)
        self.vertical = _check_vertical(vertical, channels, background)
        from .conditions import ConditionSpec

        self.conditions = tuple(ConditionSpec.from_dict(c) for c in conditions)
        if self.conditions:
            if net is not None:
                raise InvalidDataError("conditions: only the built-in U-Net takes conditions, not a custom net=.")
            # the encoded conditions reach the U-Net as its class embedding, added to the time embedding
            unet_kwargs = {**dict(unet_kwargs or {}), "class_embed_type": "identity"}
        self.background = bool(background)
        if self.background:
            # The diffusion variable is y = (x - offset) / scale: anomalies about the training
            # climatology, one scale per channel (see set_background).
            self.register_buffer("space_offset", torch.zeros(channels, *size))
            self.register_buffer("space_scale", torch.ones(channels, 1, 1))
        if self.vertical:
            # Vertical differences (see to_model_space): the physical size of one normalised unit per
            # channel, and the ocean mask, both set with the background.
            self.register_buffer("space_unit", torch.ones(channels, 1, 1))
            self.register_buffer("space_mask", torch.ones(channels, *size))

        net, resolved, preset_name, network = build_network(channels, size, preset, unet_kwargs, net)
        self.net = net
        if self.conditions:
            width = int(resolved.get("time_embedding_dim") or resolved["block_out_channels"][0] * 4)
            inputs = sum(c.width for c in self.conditions)
            self.condition_embedding = torch.nn.Sequential(
                torch.nn.Linear(inputs, width), torch.nn.SiLU(), torch.nn.Linear(width, width))
            torch.nn.init.zeros_(self.condition_embedding[2].weight)  # starts as the unconditional model
            torch.nn.init.zeros_(self.condition_embedding[2].bias)
        # Stored in the form JSON gives back, so that a loaded model's config compares equal.
        self._config: dict[str, Any] = json_roundtrip(
            {
                "channels": channels,
                "sample_size": list(size),
                "preset": preset_name,
                "unet_kwargs": resolved,
                "network": network,
                "background": self.background,
                # only conditional models record the key: older checkpoints' configs stay as they were
                **({"conditions": [c.to_dict() for c in self.conditions]} if self.conditions else {}),
                # likewise only models in vertical differences record their level segments
                **({"vertical": [list(segment) for segment in self.vertical]} if self.vertical else {}),
            },
            "config",
        )
        self._scheduler_config = json_roundtrip(
            _resolve_scheduler_config(scheduler_config), "scheduler_config"
        )
        self.metadata: dict[str, Any] = json_roundtrip(
            dict(metadata) if metadata is not None else {}, "metadata"
        )
        self.checkpoint_path: Path | None = None
        self.checkpoint_hash: str | None = None
        self.card: ModelCard | None = None

    # -- read-only views: a config edited after construction would no longer describe the net ----
    @property
    def config(self) -> dict[str, Any]:
        """Model configuration (a copy): ``channels``, ``sample_size``, ``preset``,
        ``unet_kwargs`` (the full ``UNet2DModel`` arguments, ``None`` for a custom net) and
        ``network`` (the custom net's class, ``None`` for the U-Net)."""
        return copy.deepcopy(self._config)

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """``DDPMScheduler`` configuration (a copy)."""
        return copy.deepcopy(self._scheduler_config)

    @property
    def channels(self) -> int:
        """Number of input and output channels."""
        return int(self._config["channels"])

    @property
    def sample_size(self) -> tuple[int, int]:
        """Spatial size ``(H, W)``."""
        height, width = self._config["sample_size"]
        return int(height), int(width)

    @property
    def n_parameters(self) -> int:
        """Number of scalar parameters of the network."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        kind = self._config["preset"] or self._config["network"]
        return f"{kind!r}, channels={self.channels}, sample_size={self.sample_size}"

    def set_background(self, offset: torch.Tensor, scale: torch.Tensor, unit: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> None:
        """Set the climatology ``offset`` (C, H, W) and per-channel ``scale`` (C,) of the diffusion variable.

        A model in vertical differences also takes ``unit`` (C,), the physical size of one normalised unit of
        each channel, and ``mask`` (C, H, W), its ocean cells.
        """
        if not self.background:
            raise InvalidDataError("set_background: build the Denoiser with background=True first")
        if self.vertical and (unit is None or mask is None):
            raise InvalidDataError("set_background: a model in vertical differences needs unit= and mask= too")
        with torch.no_grad():
            self.space_offset.copy_(torch.as_tensor(offset).reshape(self.space_offset.shape))
            self.space_scale.copy_(torch.as_tensor(scale).reshape(self.space_scale.shape))
            if self.vertical:
                self.space_unit.copy_(torch.as_tensor(unit).reshape(self.space_unit.shape))
                self.space_mask.copy_(torch.as_tensor(mask).reshape(self.space_mask.shape))

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised state -> diffusion variable (identity without a background).

        With a background, ``y = (x - offset) / scale``. In vertical differences the anomaly is first taken to
        physical units and each level of a segment replaced by its difference from the level below (each
        column's deepest wet level kept), on ocean cells (0 on land): the network's errors then reach the
        vertical structure, and with it the static stability, in units of the data's own spread of vertical
        differences, which is small where NEMO's convection keeps columns mixed. Anchored at the bottom, where
        anomalies are smallest, the sums that rebuild the levels carry the errors of the differences upwards,
        towards the levels whose own spread is largest.
        """
        if not self.background:
            return x
        if self.vertical:  # float64: small differences beside the sums they come from
            mask = self.space_mask.double()
            anomaly = (x.double() - self.space_offset.double()) * self.space_unit.double() * mask
            anomaly = vertical_differences(anomaly, self.vertical) * mask
            return (anomaly / self.space_scale.double()).to(x.dtype)
        return (x - self.space_offset) / self.space_scale

    def from_model_space(self, y: torch.Tensor) -> torch.Tensor:
        """Diffusion variable -> normalised state (identity without a background); inverse of :meth:`to_model_space`.

        In vertical differences the levels are summed back up each column; land cells get the background.
        """
        if not self.background:
            return y
        if self.vertical:
            mask = self.space_mask.double()
            anomaly = mask * vertical_sums(self.space_scale.double() * y.double() * mask, self.vertical)
            return (self.space_offset.double() + anomaly / self.space_unit.double()).to(y.dtype)
        return self.space_offset + self.space_scale * y

    def make_scheduler(self) -> DDPMScheduler:
        """A fresh ``DDPMScheduler`` built from :attr:`scheduler_config`.

        Fresh each call, because a scheduler holds state (``set_timesteps``) that must not leak
        between sampling runs.

        Examples
        --------
        >>> from xoceandiff.model import Denoiser
        >>> scheduler = Denoiser(37, (16, 32), "tiny").make_scheduler()
        >>> scheduler.config.num_train_timesteps, scheduler.config.beta_schedule
        (1000, 'squaredcos_cap_v2')
        """
        return DDPMScheduler.from_config(self.scheduler_config)

    def forward(self, x: torch.Tensor, timesteps: int | torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise in ``x`` at diffusion step ``timesteps``.

        Parameters
        ----------
        x : torch.Tensor
            Noisy states, shape ``(batch, channels, H, W)``.
        timesteps : int or torch.Tensor
            One step for the whole batch (an int or a 0-d tensor), or one per sample (a 1-d tensor
            of length ``batch``, or 1).
        condition : torch.Tensor, optional
            Encoded conditions ``(batch, inputs)`` (:func:`xoceandiff.conditions.encode_conditions`) of a
            conditional model; None for the unconditional prediction.

        Returns
        -------
        torch.Tensor
            The predicted noise, same shape as ``x``.

        Examples
        --------
        >>> import torch
        >>> from xoceandiff.model import Denoiser
        >>> model = Denoiser(3, (16, 32), "tiny")
        >>> x = torch.zeros(2, 3, 16, 32)
        >>> with torch.no_grad():
        ...     a, b = model(x, 10), model(x, torch.tensor([10, 10]))
        >>> torch.equal(a, b)
        True
        """
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise InvalidDataError(
                f"x must have shape (batch, {self.channels}, H, W); found {tuple(x.shape)}"
            )
        if self._config["network"] is None:
            _check_divisible(tuple(x.shape[-2:]), self._config["unet_kwargs"], "x")
        batch = x.shape[0]
        t = torch.as_tensor(timesteps, device=x.device)
        # Always hand the network one step per sample: UNet2DModel broadcasts a scalar itself,
        # but a plugged-in net should not have to.
        if t.ndim == 0:
            t = t.expand(batch)
        elif t.ndim == 1 and t.shape[0] in (1, batch):
            t = t.expand(batch)
        else:
            raise InvalidDataError(
                f"timesteps must be an int, a 0-d tensor or a 1-d tensor of length 1 or {batch} "
                f"(the batch size); found shape {tuple(t.shape)}"
            )
        if self.conditions:
            if condition is None:
                condition = torch.zeros(batch, self.condition_embedding[0].in_features)
            condition = condition.to(device=x.device, dtype=self.condition_embedding[0].weight.dtype)
            out = self.net(x, t, class_labels=self.condition_embedding(condition))
        elif condition is not None:
            raise CheckpointError("condition: this model was not trained with conditions; sample it without one.")
        else:
            out = self.net(x, t)
        if isinstance(out, tuple):
            out = out[0]
        out = getattr(out, "sample", out)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidDataError(
                f"the network must return the predicted noise shaped like x {tuple(x.shape)}; "
                f"it returned {found}"
            )
        return out

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the checkpoint directory ``path`` (``model.safetensors`` + ``config.json``).

        Everything is written into a temporary directory next to ``path`` and renamed into place
        only once complete, so ``path`` never holds a half-written checkpoint.

        Parameters
        ----------
        path : str or os.PathLike
            The checkpoint directory to create (its parent is created if missing).
        overwrite : bool
            Replace an existing ``path``. The old content is removed only after the new
            checkpoint is complete.

        Returns
        -------
        pathlib.Path
            The absolute checkpoint path (also stored in :attr:`checkpoint_path`).

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is false.
        InvalidDataError
            If :attr:`metadata` holds something JSON cannot (the message names the key).

        Examples
        --------
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from xoceandiff.model import Denoiser, load_model
        >>> model = Denoiser(3, (16, 32), "tiny", metadata={"variables": ["toce", "soce", "ssh"]})
        >>> x = torch.randn(1, 3, 16, 32, generator=torch.Generator().manual_seed(1))
        >>> with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        ...     path = model.save(Path(tmp) / "ckpt")
        ...     again = load_model(path)
        ...     torch.equal(again(x, 500), model(x, 500)), again.metadata["variables"]
        (True, ['toce', 'soce', 'ssh'])
        """
        tensors = dict(self.net.state_dict())
        if self.conditions:
            tensors.update({f"condition.{k}": v for k, v in self.condition_embedding.state_dict().items()})
        if self.background:
            tensors["space.offset"] = self.space_offset
            tensors["space.scale"] = self.space_scale
        if self.vertical:
            tensors["space.unit"] = self.space_unit
            tensors["space.mask"] = self.space_mask
        metadata = dict(self.metadata)
        if self.card is not None:
            metadata.update(self.card.to_metadata())
            tensors.update(self.card.grid_tensors())  # grid and record means, hashed with the weights
        path, digest = write_model_files(
            path, tensors, model=self._config, scheduler=self._scheduler_config, metadata=metadata,
            overwrite=overwrite,
        )
        self.checkpoint_path = path
        self.checkpoint_hash = digest
        return path

    def detached_copy(self, device: torch.device, dtype: torch.dtype) -> Denoiser:
        """This model in eval mode on ``device`` / ``dtype``: itself if it already is, else a copy.

        Sampling uses it so that the caller's model is never moved or switched to eval mode.
        """
        parameter = next(self.parameters())
        if not self.training and parameter.device == device and parameter.dtype == dtype:
            return self
        return copy.deepcopy(self).to(device=device, dtype=dtype).eval()  # the frozen card is shared, not copied


def load_model(
    path: PathLike,
    *,
    device: str | torch.device | None = None,
    net: torch.nn.Module | None = None,
) -> Denoiser:
    """Load a checkpoint written by :meth:`Denoiser.save`.

    The weights are read with ``safetensors.torch.load_file`` only: nothing is unpickled, so a
    checkpoint from an untrusted source cannot run code. Their byte size and sha256 are checked
    against ``config.json`` before they are read.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint directory.
    device : str or torch.device, optional
        Where to put the model (default: CPU).
    net : torch.nn.Module, optional
        A fresh instance of the network, required for checkpoints of a model built with ``net=``;
        its weights are replaced by the checkpoint's.

    Returns
    -------
    Denoiser
        The model in eval mode, with :attr:`~Denoiser.checkpoint_path` and
        :attr:`~Denoiser.checkpoint_hash` set.

    Raises
    ------
    CheckpointError
        If ``config.json`` is missing or invalid, the weights file is missing, truncated or
        modified, its tensors do not match the network (missing / unexpected keys, shapes), or the
        checkpoint needs ``net=``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from xoceandiff.model import Denoiser, load_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     saved = Denoiser(3, (16, 32), "tiny").save(Path(tmp) / "ckpt")
    ...     model = load_model(saved)
    ...     model.config["sample_size"], model.checkpoint_path == saved, len(model.checkpoint_hash)
    ([16, 32], True, 64)
    """
    document, tensors, digest = read_model_files(path)
    model_config = document["model"]
    network = model_config.get("network")
    if network is not None and net is None:
        raise CheckpointError(
            f"{path} was saved from a model with a custom network ({network}); its architecture "
            f"is not in the checkpoint: build a fresh instance and pass load_model(path, net=...)"
        )
    metadata = document["metadata"]
    grid = {key[len("grid."):]: tensors.pop(key).numpy() for key in list(tensors) if key.startswith("grid.")}
    record_means = {key[len("record_means."):]: tensors.pop(key).numpy()
                    for key in list(tensors) if key.startswith("record_means.")}
    card = (ModelCard.from_metadata(metadata, grid_kit=grid or None, record_means=record_means or None)
            if "layout" in metadata else None)
    try:
        model = Denoiser(
            model_config["channels"],
            sample_size=tuple(model_config["sample_size"]),
            preset=model_config.get("preset") or "small",
            unet_kwargs=None if net is not None else model_config.get("unet_kwargs"),
            net=net,
            scheduler_config=document["scheduler"],
            metadata={k: v for k, v in metadata.items() if card is None or k not in CARD_KEYS},
            background=bool(model_config.get("background", False)),
            conditions=model_config.get("conditions") or (),
            vertical=model_config.get("vertical"),
        )
    except (KeyError, TypeError, ValueError, InvalidDataError) as error:
        raise CheckpointError(f"{path}/{CONFIG_FILE} does not describe a model this version can build: {error}") from error
    weights = Path(path) / WEIGHTS_FILE
    space = {key: tensors.pop(key) for key in ("space.offset", "space.scale", "space.unit", "space.mask")
             if key in tensors}
    embedding = {key[len("condition."):]: tensors.pop(key) for key in list(tensors) if key.startswith("condition.")}
    if model.conditions:
        _load_state(model.condition_embedding, embedding, weights)
    elif embedding:
        raise CheckpointError(f"{weights} holds condition weights but its config has no conditions")
    if model.background:
        wanted = ("space.offset", "space.scale") + (("space.unit", "space.mask") if model.vertical else ())
        if set(space) != set(wanted):
            raise CheckpointError(f"{weights} holds the background tensors {sorted(space)}, its config announces "
                                  f"{sorted(wanted)}")
        model.set_background(*(space[key] for key in wanted))
    elif space:
        raise CheckpointError(f"{weights} holds background tensors but its config has no background")
    _load_state(model.net, tensors, weights)

    model.eval()  # sampling is the usual next step; training code calls .train() itself
    if device is not None:
        model.to(device)
    model.card = card
    model.checkpoint_path = Path(os.path.abspath(os.fspath(path)))
    model.checkpoint_hash = digest
    return model


# ------------------------------------------------------------------------------------------------
# helpers


def vertical_differences(anomaly: torch.Tensor, segments: Sequence[Sequence[int]]) -> torch.Tensor:
    """Each channel of a segment ``[start, stop)`` (dimension -3) minus the one below it; the last kept.

    Land below a column's bottom must be 0 in ``anomaly``: each column then keeps its own deepest wet level.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([10.0, 6.0, 3.0, 1.0, 7.0]).reshape(5, 1, 1)
    >>> vertical_differences(a, [[0, 4]]).flatten().tolist()
    [4.0, 3.0, 2.0, 1.0, 7.0]
    >>> vertical_sums(vertical_differences(a, [[0, 4]]), [[0, 4]]).flatten().tolist()
    [10.0, 6.0, 3.0, 1.0, 7.0]
    """
    out = anomaly.clone()
    for start, stop in segments:
        out[..., start : stop - 1, :, :] = anomaly[..., start : stop - 1, :, :] - anomaly[..., start + 1 : stop, :, :]
    return out


def vertical_sums(differences: torch.Tensor, segments: Sequence[Sequence[int]]) -> torch.Tensor:
    """Inverse of :func:`vertical_differences`: cumulative sums up each segment, from its deepest level."""
    out = differences.clone()
    for start, stop in segments:
        part = differences[..., start:stop, :, :]
        out[..., start:stop, :, :] = part.flip(-3).cumsum(-3).flip(-3)
    return out


def _check_vertical(vertical: Sequence[Sequence[int]] | None, channels: int,
                    background: bool) -> tuple[tuple[int, int], ...]:
    """The level segments ``((start, stop), ...)`` of a model in vertical differences, checked; () for none."""
    if not vertical:
        return ()
    if not background:
        raise InvalidDataError("vertical: vertical differences are taken of the anomaly about a background; "
                               "build the Denoiser with background=True.")
    segments = tuple((int(a), int(b)) for a, b in vertical)
    last = 0
    for start, stop in segments:
        if not (last <= start < stop <= channels):
            raise InvalidDataError(f"vertical: expected ordered, disjoint channel segments [start, stop) within "
                                   f"0..{channels}, found {[list(s) for s in segments]}.")
        last = stop
    return segments


def build_network(
    channels: int,
    size: tuple[int, int],
    preset: str,
    unet_kwargs: Mapping[str, Any] | None,
    net: torch.nn.Module | None,
) -> tuple[torch.nn.Module, dict[str, Any] | None, str | None, str | None]:
    """The network, its full UNet2DModel arguments, preset name and (custom net) class name.

    A custom ``net`` is checked and kept; otherwise a ``UNet2DModel`` of ``preset`` (with ``unet_kwargs``
    overrides) is built for ``channels`` on a ``size`` plane.
    """
    if net is None:
        resolved = _resolve_unet_kwargs(preset, unet_kwargs)
        _check_unet_fits(resolved, size)
        unet = UNet2DModel(in_channels=channels, out_channels=channels, sample_size=size, **copy.deepcopy(resolved))
        return unet, resolved, preset, None
    if unet_kwargs is not None:
        raise InvalidDataError(
            "unet_kwargs configure the built-in U-Net and cannot apply to a custom net=; give one or the other"
        )
    if not isinstance(net, torch.nn.Module):
        raise InvalidDataError(f"net must be a torch.nn.Module called as net(x, timesteps); found {type(net).__name__}")
    return net, None, None, f"{type(net).__module__}.{type(net).__qualname__}"


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise InvalidDataError(f"channels must be a positive int; found {channels!r}")
    return channels


def _check_sample_size(sample_size: tuple[int, int] | int) -> tuple[int, int]:
    size = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    if len(size) != 2 or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size
    ):
        raise InvalidDataError(
            f"sample_size must be (H, W) with two positive ints; found {sample_size!r}"
        )
    return size  # type: ignore[return-value]


def _resolve_unet_kwargs(preset: str, unet_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if preset not in PRESETS:
        raise InvalidDataError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    overrides = dict(unet_kwargs or {})
    reserved = sorted(set(overrides) & set(_RESERVED_UNET_KWARGS))
    if reserved:
        raise InvalidDataError(
            f"unet_kwargs may not set {reserved}: pass channels= and sample_size= to Denoiser"
        )
    allowed = set(inspect.signature(UNet2DModel.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise InvalidDataError(f"unknown UNet2DModel arguments in unet_kwargs: {unknown}")
    return {**copy.deepcopy(PRESETS[preset]), **overrides}


def _check_unet_fits(kwargs: Mapping[str, Any], size: tuple[int, int]) -> None:
    widths = list(kwargs.get("block_out_channels", ()))
    n_down = len(kwargs.get("down_block_types", ()))
    n_up = len(kwargs.get("up_block_types", ()))
    if not widths or n_down != len(widths) or n_up != len(widths):
        raise InvalidDataError(
            f"block_out_channels ({len(widths)} entries), down_block_types ({n_down}) and "
            f"up_block_types ({n_up}) must have the same, non-zero length"
        )
    groups = kwargs.get("norm_num_groups", 32)
    if groups is not None and any(w % groups for w in widths):
        raise InvalidDataError(
            f"norm_num_groups={groups} must divide every block width {widths} (GroupNorm); "
            f"set unet_kwargs={{'norm_num_groups': ...}}"
        )
    _check_divisible(size, kwargs, "sample_size")


def _check_divisible(size: tuple[int, ...], kwargs: Mapping[str, Any], what: str) -> None:
    # The U-Net halves the plane once per block but the last, and concatenates skip connections
    # on the way up: sizes that do not halve cleanly fail deep inside diffusers.
    factor = 2 ** (len(kwargs["block_out_channels"]) - 1)
    if any(n % factor for n in size):
        raise InvalidDataError(
            f"{what} {tuple(size)} must be divisible by {factor} in both dimensions for this "
            f"{len(kwargs['block_out_channels'])}-level U-Net; pad the plane (layout padding)"
        )


def _resolve_scheduler_config(scheduler_config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = {**DEFAULT_SCHEDULER_CONFIG, **dict(scheduler_config or {})}
    # diffusers ignores unknown keys with a log line; a typo would silently change the schedule.
    allowed = set(inspect.signature(DDPMScheduler.__init__).parameters) - {"self"}
    unknown = sorted(k for k in config if k not in allowed and not k.startswith("_"))
    if unknown:
        raise InvalidDataError(f"unknown DDPMScheduler keys in scheduler_config: {unknown}")
    return config


def _load_state(net: torch.nn.Module, tensors: dict[str, torch.Tensor], weights: Path) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"the tensors in {weights} do not match the network: "
            f"missing {missing}, unexpected {unexpected}"
        )
    wrong = [
        f"{name}: expected {tuple(expected[name].shape)}, found {tuple(tensors[name].shape)}"
        for name in sorted(expected)
        if expected[name].shape != tensors[name].shape
    ]
    if wrong:
        raise CheckpointError(
            f"the tensors in {weights} have the wrong shapes for the network: " + "; ".join(wrong)
        )
    net.load_state_dict(tensors, strict=True)
