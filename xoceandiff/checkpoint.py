"""Every disk format of the package's models: the model checkpoint and the training state (with EMA).

A model checkpoint is a folder::

    checkpoint/
        model.safetensors   the weights (safetensors: tensors only, nothing is ever unpickled)
        config.json         model config, scheduler config, metadata (the model card), versions,
                            and the sha256 and byte size of model.safetensors

A training state (``checkpoint_dir/training_state/``) holds what resuming needs and the model file does
not: the optimiser's tensors, the learning-rate schedule, the step, the random generator, the EMA's
shadow weights and the raw (not averaged) weights, as ``state.safetensors`` + ``state.json``; it records
the sha256 of the model weights it belongs to.

Both are written through :func:`xoceandiff.atomic.atomic_path` (a temporary folder renamed into place),
so a path holds the previous version or the new one, never a mixture. This module knows files, JSON,
safetensors and torch tensors; it does not know what a Denoiser is (:mod:`xoceandiff.model` builds one
from what :func:`read_model_files` returns).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from .atomic import atomic_path, refuse_existing
from .errors import CheckpointError, InvalidDataError
from .version import __version__

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATE_TENSORS",
    "STATE_JSON",
    "check_json",
    "json_roundtrip",
    "write_model_files",
    "read_model_files",
    "TrainingState",
    "write_training_state",
    "read_training_state",
    "sha256_of",
    "checkpoint_sha256",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "xoceandiff-denoiser"
FORMAT_VERSION = 2
"""Bumped when config.json changes incompatibly; a reader refuses versions newer than its own.

Version 2 adds ``checkpoint_sha256``: one hash over the whole checkpoint (config and weights)."""

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
_HASH_CHUNK = 1 << 20


# --- JSON --------------------------------------------------------------------------------------------


def check_json(value: Any, where: str) -> None:
    """Raise InvalidDataError naming the first item of ``value`` that strict JSON cannot hold."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDataError(f"{where} is {value!r}; strict JSON holds no NaN or infinity: store None instead")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidDataError(f"{where} has the key {key!r} ({type(key).__name__}); JSON keys are strings")
            check_json(item, f"{where}[{key!r}]")
        return
    raise InvalidDataError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which JSON cannot hold; "
        f"convert it to plain Python (numpy and torch: .tolist(), paths: str())"
    )


def json_roundtrip(value: Any, where: str) -> Any:
    """``value`` as JSON gives it back (tuples become lists), after :func:`check_json`."""
    check_json(value, where)
    return json.loads(json.dumps(value, allow_nan=False))


# --- model checkpoint ----------------------------------------------------------------------------------


def sha256_of(file: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as stream:
        for block in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(file: Path) -> None:
    # safetensors closes the file without fsync; without it a crash after the rename could leave a
    # complete-looking folder with an empty weights file.
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _software_versions() -> dict[str, str]:
    import diffusers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "safetensors": safetensors.__version__}


def write_model_files(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    model: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    metadata: Mapping[str, Any],
    overwrite: bool = False,
) -> tuple[Path, str]:
    """Write a model checkpoint folder atomically; return its absolute path and its :func:`checkpoint_sha256`.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing is written).
    xoceandiff.errors.InvalidDataError
        ``metadata`` holds something JSON cannot (checked before touching the disk).
    """
    path = Path(os.path.abspath(os.fspath(path)))
    refuse_existing(path, overwrite)
    check_json(dict(metadata), "metadata")
    document: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "xoceandiff_version": __version__,
        "software": _software_versions(),
        "model": dict(model),
        "scheduler": dict(scheduler),
        "metadata": dict(metadata),
    }
    # to(copy=True) detaches from the live parameters and from each other: safetensors refuses tensors
    # sharing storage, and the file must hold contiguous CPU tensors.
    plain = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in tensors.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.mkdir()
        weights = tmp / WEIGHTS_FILE
        safetensors.torch.save_file(plain, str(weights), metadata={"format": "pt"})
        _fsync(weights)
        digest = sha256_of(weights)
        document["weights"] = {"file": WEIGHTS_FILE, "sha256": digest, "size": weights.stat().st_size}
        digest = document["checkpoint_sha256"] = checkpoint_sha256(document)
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
    return path, digest


def checkpoint_sha256(document: Mapping[str, Any]) -> str:
    """One sha256 over the whole checkpoint: its config (canonical JSON) including the weights' sha256.

    The entry ``checkpoint_sha256`` itself is left out, so the config can carry its own hash. Editing any
    entry of config.json (a normalisation scale, the layout) or any byte of the weights changes it.

    Examples
    --------
    >>> a = checkpoint_sha256({"weights": {"sha256": "00"}, "metadata": {"x": 1}})
    >>> a == checkpoint_sha256({"metadata": {"x": 1}, "weights": {"sha256": "00"}, "checkpoint_sha256": "ab"})
    True
    >>> a == checkpoint_sha256({"weights": {"sha256": "00"}, "metadata": {"x": 2}})
    False
    """
    body = {key: value for key, value in document.items() if key != "checkpoint_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _read_config(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise CheckpointError(
            f"{file} is missing: not a complete xoceandiff checkpoint (a checkpoint folder holds {CONFIG_FILE} "
            f"and {WEIGHTS_FILE}, as written by Denoiser.save)"
        )
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(
            f"{file} is not an xoceandiff checkpoint config: expected format {FORMAT_NAME!r}, found {found!r}"
        )
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has format_version {version!r}; this xoceandiff reads up to {FORMAT_VERSION}: upgrade "
            f"xoceandiff (checkpoint written by {document.get('xoceandiff_version', 'an unknown version')})"
        )
    missing = [key for key in ("model", "scheduler", "metadata", "weights") if key not in document]
    if missing:
        raise CheckpointError(f"{file} lacks the entries {missing}")
    weights = document["weights"]
    if not isinstance(weights, dict) or not {"sha256", "size"} <= set(weights):
        raise CheckpointError(f"{file}: 'weights' must record the sha256 and size of the weights")
    if version >= 2:
        recorded = document.get("checkpoint_sha256")
        found = checkpoint_sha256(document)
        if recorded != found:
            raise CheckpointError(
                f"{file} was modified after it was written: its checkpoint_sha256 is {recorded}, its content "
                f"hashes to {found}. An edited config.json (a normalisation scale, the layout) would give wrong "
                "states; restore the file, or retrain."
            )
    return document


def _verify_weights(weights: Path, expected: Mapping[str, Any]) -> str:
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    size = weights.stat().st_size
    if size != expected["size"]:
        raise CheckpointError(f"{weights} is truncated or modified: expected {expected['size']} bytes, found {size}")
    digest = sha256_of(weights)
    if digest != expected["sha256"]:
        raise CheckpointError(
            f"{weights} is truncated or modified: expected sha256 {expected['sha256']}, found {digest}"
        )
    return digest


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of checkpoint folder ``path`` (weights not read)."""
    path = Path(os.path.abspath(os.fspath(path)))
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a checkpoint directory (expected a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}, "
            "as written by Denoiser.save)"
        )
    return _read_config(path / CONFIG_FILE)


def read_model_files(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """The config document, the tensors (on the CPU) and the checkpoint's sha256 of checkpoint folder ``path``.

    The config is checked against its own ``checkpoint_sha256`` (one hash over config and weights), the
    weights' byte size and sha256 against the config before they are read, and they are read with
    ``safetensors.torch.load_file`` only: nothing is unpickled. Checkpoints of format 1 (before the whole
    hash) give the weights' sha256.

    Raises
    ------
    xoceandiff.errors.CheckpointError
        A missing or invalid config, a missing, truncated or modified weights file.
    """
    document = read_model_config(path)
    weights = Path(os.path.abspath(os.fspath(path))) / WEIGHTS_FILE
    digest = _verify_weights(weights, document["weights"])
    if document["format_version"] >= 2:
        digest = document["checkpoint_sha256"]  # checked against the config by read_model_config
    try:
        tensors = safetensors.torch.load_file(str(weights), device="cpu")
    except (safetensors.SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from error
    return document, tensors, digest


# --- training state ------------------------------------------------------------------------------------


@dataclass
class TrainingState:
    """What resuming a training needs besides the model file.

    Attributes
    ----------
    step : int
        Optimiser steps done.
    optimiser, lr_schedule : dict
        ``state_dict()`` of the optimiser and of the learning-rate schedule.
    generator : torch.Tensor
        State of the training's random generator.
    record : dict
        The training record so far (losses, ...).
    model_sha256 : str or None
        sha256 of the model weights written with this state.
    ema : dict or None
        ``EMAModel.state_dict()`` (shadow parameters included), None without EMA.
    raw_weights : dict of str to torch.Tensor
        The raw network weights (the model file holds the averaged ones when EMA is on).
    """

    step: int
    optimiser: dict[str, Any]
    lr_schedule: dict[str, Any]
    generator: torch.Tensor
    record: dict[str, Any]
    model_sha256: str | None
    ema: dict[str, Any] | None = None
    raw_weights: dict[str, torch.Tensor] | None = None


def _split_optimiser(state: Mapping[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move the optimiser's tensors into ``tensors``; return its scalars keyed ``<param>.<name>``."""
    scalars: dict[str, Any] = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optimiser.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return scalars


def write_training_state(folder: str | os.PathLike, state: TrainingState) -> Path:
    """Write ``state`` into ``folder`` (replaced whole, atomically)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {"generator": state.generator}
    scalars = _split_optimiser(state.optimiser, tensors)
    ema_scalars = None
    if state.ema is not None:
        ema = dict(state.ema)
        for i, param in enumerate(ema.pop("shadow_params")):
            tensors[f"ema.{i}"] = param.detach().cpu().contiguous()
        ema_scalars = {k: v for k, v in ema.items() if isinstance(v, int | float | bool | None)}
    for name, value in (state.raw_weights or {}).items():
        tensors[f"raw.{name}"] = value.detach().cpu().contiguous()
    meta = {
        "step": int(state.step),
        "param_groups": state.optimiser["param_groups"],
        "optimiser_scalars": scalars,
        "lr_schedule": state.lr_schedule,
        "record": dict(state.record),
        "model_sha256": state.model_sha256,
        "ema": ema_scalars,
    }
    with atomic_path(folder, overwrite=True) as tmp:
        tmp.mkdir()
        safetensors.torch.save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1, default=float))
    return folder


def read_training_state(folder: str | os.PathLike, model_sha256: str | None) -> TrainingState:
    """The training state in ``folder``, checked to belong to the model weights ``model_sha256``.

    Raises
    ------
    xoceandiff.errors.CheckpointError
        Unreadable files, or a state written for other weights (a run killed between the two writes).
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / STATE_JSON).read_text())
        tensors = safetensors.torch.load_file(str(folder / STATE_TENSORS))
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"Cannot read the training state in {str(folder)!r}: {err}. Delete it to start afresh.") from err
    if meta.get("model_sha256") != model_sha256:
        raise CheckpointError(
            f"The training state in {str(folder)!r} belongs to other weights (model sha256 {meta.get('model_sha256')} "
            f"expected, {model_sha256} found): the run was killed between the two writes. Delete the checkpoint "
            "directory to start afresh."
        )
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
    for key, value in meta["optimiser_scalars"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    ema = None
    if meta.get("ema") is not None:
        shadow = [tensors[f"ema.{i}"] for i in range(sum(k.startswith("ema.") for k in tensors))]
        ema = {**meta["ema"], "shadow_params": shadow}
    raw = {k[4:]: v for k, v in tensors.items() if k.startswith("raw.")}
    return TrainingState(
        step=int(meta["step"]),
        optimiser={"state": per_param, "param_groups": meta["param_groups"]},
        lr_schedule=meta["lr_schedule"],
        generator=tensors["generator"],
        record=meta["record"],
        model_sha256=meta.get("model_sha256"),
        ema=ema,
        raw_weights=raw or None,
    )
