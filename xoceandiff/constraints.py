"""Constraints applied to the normalised, padded state during sampling.

A constraint is a callable ``constraint(x, t, ctx) -> x``: ``x`` is the ``(B, C, H, W)`` layout
tensor in normalised space right after a scheduler step, ``t`` the diffusers timestep that step
came from (999 -> 0; an int or a 0-d tensor), ``ctx`` a :class:`ConstraintContext` built once per
sampling call. Each constraint also says which fields it ``requires`` (checked by
:meth:`Constraint.check` before any work) and whether it should be applied once more after the
last step (``at_end``).

The constraints and their equations follow the method of Meunier et al. (2025),
arXiv:2502.02499 (the project's ``method.md``, "Constraints applied during sampling"); the
``stable_stratification`` constraint follows the static-stability idea of the follow-up work
(Gorce, Ollier, Kamm & Meunier 2025) with the paper's density-error metric as its penalty.

========================= ================================================================
name                      what it does after each step
========================= ================================================================
``zero_mean``             hard: each channel's area-weighted ocean mean set to its target,
                          T and S without making stable interfaces unstable
``gradient_zero_mean``    soft (the paper's): the mean moved by ``kappa(t)`` towards the target
``border_zero``           land and padding set to 0
``border_zero_gradient``  boundary ocean cells copy their interior neighbour (zero normal gradient)
``stable_stratification`` gradient step on a static-instability penalty (potential density)
``convective_adjustment`` nothing; after the last step, NEMO's convection: unstable neighbours
                          mixed, each column's heat and salt conserved (a final constraint)
========================= ================================================================

The alias ``border_zero_gradient_zero_mean`` is the paper's "constraint" run, under the name of the
companion code: ``border_zero`` then ``gradient_zero_mean``.

Everything that runs per step is tensor arithmetic on tensors precomputed in the context (no numpy,
no xarray, no host synchronisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np
import torch
import xarray as xr

from .eos import (
    AUTO_EOS,
    EOS_NAMES,
    EOS_OF_SALINITY,
    potential_density,
    potential_density_and_gradient,
    resolve_eos,
)
from .errors import ConstraintError, GridMismatchError
from .gridops import GridOps
from .layout import Layout
from .normalisation import Normaliser

__all__ = [
    "ALIASES",
    "CONSTRAINTS",
    "BorderZero",
    "BorderZeroGradient",
    "Constraint",
    "ConstraintContext",
    "ConvectiveAdjustment",
    "FunctionConstraint",
    "GradientZeroMean",
    "KappaSchedule",
    "StableStratification",
    "ZeroMean",
    "get_constraints",
    "make_kappa",
]

Timestep: TypeAlias = "int | float | torch.Tensor"
"""A diffusers timestep: a Python number or a 0-d tensor (possibly on the device)."""

KappaLike: TypeAlias = "KappaSchedule | Callable[[Any], Any] | float | tuple[float, float, float] | None"
"""What ``kappa=`` accepts: a schedule, a callable of ``t``, a constant, ``(base, amplitude, tau)``."""


# --- step-size schedules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KappaSchedule:
    r"""The step-size schedule :math:`\kappa(t) = a + b\, e^{-t/\tau}` of the soft constraints.

    With the paper's defaults (``base=0.001``, ``amplitude=0.04``, ``tau=50``) the step is about
    0.001 for most of the reverse process and grows to 0.041 over the last ~100 steps, when the
    sample has taken shape (method.md, ``gradient_zero_mean``).

    Parameters
    ----------
    base : float
        :math:`a`, the step for large ``t``.
    amplitude : float
        :math:`b`, added as ``t`` reaches 0 (0 gives a constant step).
    tau : float
        :math:`\tau`, the e-folding number of timesteps.

    Examples
    --------
    >>> kappa = KappaSchedule()
    >>> round(kappa(0), 6), round(kappa(999), 6)
    (0.041, 0.001)
    >>> round(float(kappa(torch.tensor(0))), 6)  # a tensor t gives a tensor (no host sync)
    0.041
    """

    base: float = 0.001
    amplitude: float = 0.04
    tau: float = 50.0

    def __call__(self, t: Timestep) -> float | torch.Tensor:
        """:math:`\\kappa(t)`: a float for a number, a 0-d tensor (same device) for a tensor."""
        if isinstance(t, torch.Tensor):
            return self.base + self.amplitude * torch.exp(-t.float() / self.tau)
        return self.base + self.amplitude * math.exp(-float(t) / self.tau)


def make_kappa(kappa: KappaLike, default: KappaSchedule | None = None) -> Callable[[Any], Any]:
    """A schedule from what users write: ``None`` (the default), a number, a triple or a callable.

    Parameters
    ----------
    kappa : KappaSchedule, callable, float, (base, amplitude, tau) or None
        A callable ``kappa(t)`` is used as is; a number is a constant step; a triple is
        ``KappaSchedule(base, amplitude, tau)``.
    default : KappaSchedule, optional
        What ``None`` means (default: the paper's :class:`KappaSchedule`).

    Raises
    ------
    xoceandiff.errors.ConstraintError
        Anything else.

    Examples
    --------
    >>> make_kappa(0.01)(500)
    0.01
    >>> make_kappa((0.0, 1.0, 10.0))(10) == math.exp(-1)
    True
    """
    if kappa is None:
        return default if default is not None else KappaSchedule()
    if isinstance(kappa, bool):
        raise ConstraintError(f"kappa: expected a number, a triple or a callable, found {kappa!r}.")
    if isinstance(kappa, (int, float)):
        return KappaSchedule(base=float(kappa), amplitude=0.0)
    if isinstance(kappa, (tuple, list)) and len(kappa) == 3:
        return KappaSchedule(*(float(v) for v in kappa))
    if callable(kappa):
        return kappa
    raise ConstraintError(
        f"kappa: expected a number, (base, amplitude, tau), a KappaSchedule or a callable of t, "
        f"found {kappa!r}."
    )


# --- the context -----------------------------------------------------------------------------------


def _background(background: torch.Tensor, ops: GridOps, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The background on the constraints' device, checked against the layout plane of ``ops``."""
    background = torch.as_tensor(background).detach().to(device=device, dtype=dtype)
    if tuple(background.shape) != tuple(ops.mask.shape):
        raise GridMismatchError(
            f"background: expected the per-cell training mean on the layout plane, shape {tuple(ops.mask.shape)} "
            f"(channels, y, x), found {tuple(background.shape)}; pass the model's space_offset."
        )
    return background


def _target_means(
    layout: Layout,
    normaliser: Normaliser,
    means: xr.Dataset | Mapping[str, Any] | None,
    offset: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray | None:
    """Per-channel normalised training means, or None where they cannot be known."""
    if means is None:
        if normaliser.scheme.endswith("std"):  # offset = mean: the target is 0
            return np.zeros(layout.channels)
        return None
    values: list[float] = []
    for name in layout.fields:
        if isinstance(means, xr.Dataset):
            key = f"{name}_mean"
            if key not in means.variables:
                raise ConstraintError(
                    f"means: the statistics have no {key!r} (found {sorted(map(str, means.data_vars))}); "
                    "pass the output of xoceandiff.normalisation.statistics."
                )
            field = np.atleast_1d(np.asarray(means[key].values, dtype=np.float64))
        else:
            if name not in means:
                raise ConstraintError(f"means: no training mean for {name!r} (found {sorted(means)}).")
            field = np.atleast_1d(np.asarray(means[name], dtype=np.float64))
        if layout.three_dimensional(name):
            if field.size != layout.n_levels:
                raise GridMismatchError(
                    f"means: {name} has {field.size} levels, the layout's grid {layout.n_levels}."
                )
            values += list(field[list(layout.levels)])
        else:
            values.append(float(field[0]))
    target = (np.asarray(values) - offset) / scale
    return np.where(np.isfinite(target), target, 0.0)


@dataclass(frozen=True, eq=False)
class ConstraintContext:
    """Everything the constraints need about the grid and the normalisation, on the device.

    Build it once per sampling call with :meth:`from_model`.

    Attributes
    ----------
    ops : GridOps
        Masks, areas, volumes and stencils of the grid on the layout plane.
    layout : Layout
        The model's layout.
    scheme : str
        The normalisation scheme.
    offset, scale : torch.Tensor
        ``(C,)``: channel ``c`` holds ``(x - offset[c]) / scale[c]``.
    target : torch.Tensor or None
        ``(C,)`` (or ``(B, C)``, one profile per sample of the batch: ``level_means="records"``), the
        training mean of each channel in normalised space,
        ``(mean_k - offset_k) / scale_k`` (0 for the ``std`` family); None when unknown (a
        ``min-max`` normaliser without ``means``): the mean constraints then refuse to run.
    channels : dict of str to torch.Tensor
        The channel indices (int64) of each field, e.g. ``channels["soce"]``.
    toce_channels, soce_channels : torch.Tensor or None
        ``(L,)`` channel indices of temperature and salinity, one per kept level (None if the
        layout lacks the field).
    depths : torch.Tensor
        ``(L,)`` depth (m) of the kept levels.
    field_scale, field_offset : dict of str to torch.Tensor
        ``(n, 1, 1)`` scale and offset of each field's channels, for :meth:`denormalise`.
    salinity : {"absolute", "practical"}
        The kind of salinity the model generates (its training data's); ``eos="auto"`` density
        constraints use EOS-80 for ``"practical"``, TEOS-10 for ``"absolute"``.
    background : torch.Tensor or None
        ``(C, H, W)``: the per-cell training mean in normalised space when the model diffuses anomalies
        about one (:attr:`xoceandiff.model.Denoiser.background`), else None. Boundary constraints act on
        the departure from it (see :class:`BorderZeroGradient`).

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.layout import Layout
    >>> from xoceandiff.normalisation import Normaliser, statistics
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> layout = Layout.from_dataset(ds)
    >>> norm = Normaliser.from_statistics(statistics(ds), scheme="3-std")
    >>> ctx = ConstraintContext.from_model(ds, layout, norm)
    >>> tuple(ctx.offset.shape), float(ctx.target.abs().max()), ctx.toce_channels[:3].tolist()
    ((37,), 0.0, [0, 1, 2])
    """

    ops: GridOps
    layout: Layout
    scheme: str
    offset: torch.Tensor
    scale: torch.Tensor
    target: torch.Tensor | None
    channels: Mapping[str, torch.Tensor]
    toce_channels: torch.Tensor | None
    soce_channels: torch.Tensor | None
    depths: torch.Tensor
    field_scale: Mapping[str, torch.Tensor]
    field_offset: Mapping[str, torch.Tensor]
    salinity: str = "absolute"
    background: torch.Tensor | None = None

    @classmethod
    def from_model(
        cls,
        ds: xr.Dataset,
        layout: Layout,
        normaliser: Normaliser,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        means: xr.Dataset | Mapping[str, Any] | None = None,
        grid: Any = None,
        ops: GridOps | None = None,
        salinity: str = "absolute",
        background: torch.Tensor | None = None,
    ) -> ConstraintContext:
        """The context of a model (layout + normaliser) on the grid of ``ds``.

        Parameters
        ----------
        ds : xarray.Dataset
            A canonical dataset or its grid (``tmask``, ``e1t``, ``e2t``, ``e3t``).
        layout : Layout
            The model's layout.
        normaliser : Normaliser
            The model's normaliser.
        device : str or torch.device, optional
            Device of the sampling tensors (default: the CPU).
        dtype : torch.dtype, default torch.float32
            Dtype of the sampling tensors.
        means : xarray.Dataset or mapping, optional
            Training means per field and level (:func:`xoceandiff.normalisation.statistics` output
            or ``{"toce": [...36 levels...], "ssh": value}``). Not needed for the ``std`` family,
            whose offsets are the means (targets 0).
        grid : xgcm.Grid, optional
            The grid of ``ds`` (default :func:`xoceandiff.grid.build_grid`).
        ops : GridOps, optional
            Precomputed operators to reuse (moved to ``device``/``dtype``).
        salinity : {"absolute", "practical"}, default "absolute"
            The kind of salinity of the model's ``soce`` (the model card's; the salinity kind of its
            training data, :func:`xoceandiff.canonical.salinity_kind`). It picks the equation of
            state of ``eos="auto"`` constraints.
        background : torch.Tensor, optional
            ``(C, H, W)`` per-cell training mean in normalised space (a background model's
            ``space_offset``); see :attr:`background`.

        Returns
        -------
        ConstraintContext

        Raises
        ------
        xoceandiff.errors.ConstraintError
            The normaliser lacks a field of the layout, ``means`` lacks one, or ``salinity`` is not
            ``"absolute"`` or ``"practical"``.
        xoceandiff.errors.GridMismatchError
            Normaliser, means or dataset are not on the layout's grid.
        """
        if salinity not in EOS_OF_SALINITY:
            raise ConstraintError(
                f"salinity: expected one of {', '.join(map(repr, EOS_OF_SALINITY))} (the salinity kind of "
                f"the model's soce), found {salinity!r}; pass the model card's salinity kind."
            )
        missing = [f for f in layout.fields if f not in normaliser.fields]
        if missing:
            raise ConstraintError(
                f"The normaliser knows {list(normaliser.fields)} but the layout stacks {missing} too; "
                "use the normaliser the model was trained with."
            )
        offset: list[float] = []
        scale: list[float] = []
        channels: dict[str, list[int]] = {}
        for name, chans in layout.channel_slices.items():
            channels[name] = list(range(chans.start, chans.stop))
            if layout.three_dimensional(name):
                if len(normaliser.offset[name]) != layout.n_levels:
                    raise GridMismatchError(
                        f"The normaliser has {len(normaliser.offset[name])} levels of {name}, the "
                        f"layout's grid {layout.n_levels}."
                    )
                offset += [normaliser.offset[name][k] for k in layout.levels]
                scale += [normaliser.scale[name][k] for k in layout.levels]
            else:
                offset.append(normaliser.offset[name][0])
                scale.append(normaliser.scale[name][0])
        offset_np, scale_np = np.asarray(offset), np.asarray(scale)
        target = _target_means(layout, normaliser, means, offset_np, scale_np)

        device = torch.device(device) if device is not None else torch.device("cpu")

        def tensor(values: Any, kind: torch.dtype = dtype) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), device=device).to(kind)

        # normal (not inference) tensors, so that autograd-based constraints can use them even
        # when the context is built inside torch.inference_mode()
        with torch.inference_mode(False):
            if ops is None:
                ops = GridOps.from_dataset(ds, layout, grid=grid, device=device, dtype=dtype)
            else:
                ops = ops.to(device=device, dtype=dtype)
            index = {name: tensor(chans, torch.long) for name, chans in channels.items()}
            return cls(
                ops=ops,
                layout=layout,
                scheme=normaliser.scheme,
                offset=tensor(offset_np),
                scale=tensor(scale_np),
                target=None if target is None else tensor(target),
                channels=index,
                toce_channels=index.get("toce"),
                soce_channels=index.get("soce"),
                depths=tensor([layout.depths[k] for k in layout.levels]),
                field_scale={
                    name: tensor(scale_np[chans])[:, None, None] for name, chans in channels.items()
                },
                field_offset={
                    name: tensor(offset_np[chans])[:, None, None] for name, chans in channels.items()
                },
                salinity=salinity,
                background=None if background is None else _background(background, ops, device, dtype),
            )

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.offset.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the tensors."""
        return self.offset.dtype

    def denormalise(self, x: torch.Tensor, field: str | None = None) -> torch.Tensor:
        """Physical values ``x * scale + offset`` of all channels, or of one field's channels.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, H, W)`` normalised layout tensor.
        field : str, optional
            Return only this field's channels, ``(B, L, H, W)`` (or ``(B, 1, H, W)`` for ``ssh``).
        """
        if field is None:
            return x * self.scale[:, None, None] + self.offset[:, None, None]
        return x.index_select(-3, self.channels[field]) * self.field_scale[field] + self.field_offset[field]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised values ``(x - offset) / scale`` of a physical ``(B, C, H, W)`` tensor."""
        return (x - self.offset[:, None, None]) / self.scale[:, None, None]


# --- the protocol ----------------------------------------------------------------------------------


class Constraint:
    """Base class of the constraints: ``constraint(x, t, ctx) -> x``.

    Subclasses set :attr:`name`, :attr:`requires` and :attr:`at_end` and implement
    :meth:`__call__`; a subclass whose ``__init__`` takes no required argument can be passed to
    :func:`get_constraints` as a class.

    Attributes
    ----------
    name : str
        Registry name.
    requires : tuple of str
        Fields the model must generate (checked by :meth:`check`).
    at_end : bool
        Whether the sampling loop applies it once more after the last step (``t = 0``).
    """

    name: ClassVar[str] = "constraint"
    requires: tuple[str, ...] = ()
    at_end: bool = False

    def check(self, layout: Layout) -> None:
        """Raise :class:`~xoceandiff.errors.ConstraintError` if the layout lacks a required field."""
        missing = [f for f in self.requires if f not in layout.fields]
        if missing:
            raise ConstraintError(
                f"Constraint {self.name!r} needs the fields {list(self.requires)}, but the model "
                f"generates {list(layout.fields)} (missing {missing}). Drop the constraint or use a "
                "model trained on those fields."
            )

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _target(ctx: ConstraintContext, name: str) -> torch.Tensor:
    if ctx.target is None:
        raise ConstraintError(
            f"Constraint {name!r} drives each level's mean to the training mean, which a "
            f"{ctx.scheme!r} normaliser does not hold; build the context with "
            "ConstraintContext.from_model(..., means=statistics(training_data))."
        )
    return ctx.target


def _shift_ocean(x: torch.Tensor, shift: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
    """``x - shift[..., None, None] * mask``: one fused pass (the two-pass broadcast is ~15x slower on CPU)."""
    return torch.addcmul(x, shift[..., None, None].to(x.dtype), ctx.ops.mask.to(x.dtype), value=-1)


def _eos_and_margin(eos: str, margin: float) -> tuple[str, float]:
    """The checked ``eos`` and ``margin`` of the density-step constraints."""
    if eos != AUTO_EOS and eos not in EOS_NAMES:
        raise ConstraintError(
            f"eos: expected 'auto' or one of {list(EOS_NAMES)}, found {eos!r}; 'auto' follows the "
            "salinity of the model (EOS-80 for practical, TEOS-10 for absolute)."
        )
    if not margin >= 0:
        raise ConstraintError(f"margin: expected a density step >= 0 (kg m-3), found {margin!r}.")
    return eos, float(margin)


def _write_back(x: torch.Tensor, ctx: ConstraintContext, temperature: torch.Tensor, salinity: torch.Tensor,
                new_t: torch.Tensor, new_s: torch.Tensor) -> torch.Tensor:
    """``x`` with the cells whose physical T or S changed set to the new values, normalised; the rest bit for bit."""
    touched = (new_t != temperature) | (new_s != salinity)
    out = x.clone()
    for channels, field, values in ((ctx.toce_channels, "toce", new_t), (ctx.soce_channels, "soce", new_s)):
        normalised = (values - ctx.field_offset[field]) / ctx.field_scale[field]
        out[:, channels] = torch.where(touched, normalised.to(x.dtype), x[:, channels])
    return out


class ZeroMean(Constraint):
    r"""Hard zero-mean constraint: each channel's ocean mean is set to its target.

    The hydrostatic / mean-stratification constraint of method.md, in its hard form, with the
    physically right average (ocean cells only, weighted by cell area :math:`A = e_{1t} e_{2t}`):

    .. math::

        \bar x_c = \frac{\sum_{ij} A_{ij} m_{cij} x_{cij}}{\sum_{ij} A_{ij} m_{cij}}, \qquad
        \bar x_c \leftarrow \mu_c

    with :math:`m_c` the ocean mask of channel :math:`c` and :math:`\mu_c` its normalised target
    (the training mean, 0 for the ``std`` schemes, or one record's: ``level_means``). Land and
    padding are untouched. ``at_end = True``.

    With ``stable=False``, and for the channels other than ``toce`` and ``soce``, every ocean cell of
    the channel moves by the same amount, :math:`x_{cij} \leftarrow x_{cij} - (\bar x_c - \mu_c)\, m_{cij}`
    (the paper's). That changes the vertical step between two levels by the difference of their shifts in
    every column alike, and where a column is mixed (nearly neutral) the interface turns unstable: on GYRE,
    free samples' convective-adjustment distance in the top 200 m (0.0026 °C) went to 0.0175 °C with it.
    Otherwise (when the layout has ``toce`` and ``soce`` on two levels or more) the same level means are
    reached by :func:`xoceandiff.convection.stable_level_shift_torch`: the shifts are built from the bottom
    up as changes of the vertical steps, uniform where the columns have room, and kept out of the
    interfaces they would make unstable (stable by less than ``margin``), in physical units. With
    ``stable="end"`` (the default) this is done where the correction reaches the sample: at timestep 0 (the
    last step, and the final pass after the loop); the earlier steps, which the network reworks, take the
    uniform shift, which costs nothing beside the denoiser (the stable shift costs about half a denoiser
    call on GYRE). ``stable=True`` does it after every step.

    Parameters
    ----------
    stable : {"end", True, False}, default "end"
        Keep the shifts of ``toce`` and ``soce`` out of the interfaces they would make unstable: at
        timestep 0 only, after every step, or never (the paper's uniform shift).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the stability check; ``"auto"`` follows :attr:`ConstraintContext.salinity`.
    margin : float, default 3e-3
        Density step (kg m-3) an interface keeps when a shift would make it less stable.
    max_factor : float, default 100
        The largest multiple of its level's shift a column takes while others have room.

    Examples
    --------
    >>> import torch, xoceandiff
    >>> from xoceandiff.layout import Layout, to_tensor
    >>> from xoceandiff.normalisation import Normaliser, normalise, statistics
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> layout = Layout.from_dataset(ds)
    >>> norm = Normaliser.from_statistics(statistics(ds), scheme="3-std")
    >>> ctx = ConstraintContext.from_model(ds, layout, norm, dtype=torch.float64)
    >>> x = to_tensor(normalise(ds, norm), layout).double() + 0.1  # every level warmer and saltier
    >>> y = ZeroMean()(x, 0, ctx)
    >>> float((ctx.ops.average_xy(y) - ctx.target).abs().max()) < 1e-9
    True
    """

    name = "zero_mean"
    at_end = True

    def __init__(self, *, stable: bool | str = "end", eos: str = AUTO_EOS, margin: float = 3e-3,
                 max_factor: float = 100.0) -> None:
        if stable not in (True, False, "end"):
            raise ConstraintError(f"stable: expected True, False or 'end', found {stable!r}.")
        self.stable = stable
        self.eos, self.margin = _eos_and_margin(eos, margin)
        if not max_factor >= 1:
            raise ConstraintError(f"max_factor: expected a multiple of the level's shift >= 1, found {max_factor!r}.")
        self.max_factor = float(max_factor)

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        excess = ctx.ops.average_xy(x) - _target(ctx, self.name)
        out = _shift_ocean(x, excess, ctx)
        if (not self.stable or (self.stable == "end" and int(t) != 0) or ctx.toce_channels is None
                or ctx.soce_channels is None or len(ctx.depths) < 2):
            return out
        from .convection import stable_level_shift_torch

        excess = excess.expand(x.shape[0], -1)
        # float64 physical values: a float32 salinity near 35 carries 2e-6 of rounding, a thousandth of the spread
        # of a deep level
        wide = x if x.device.type == "mps" else x.double()
        temperature, salinity = ctx.denormalise(wide, "toce"), ctx.denormalise(wide, "soce")
        toce, soce = ctx.toce_channels, ctx.soce_channels
        new_t, new_s = stable_level_shift_torch(
            temperature, salinity,
            -excess[:, toce] * ctx.field_scale["toce"].reshape(-1), -excess[:, soce] * ctx.field_scale["soce"].reshape(-1),
            ctx.ops.area_weight.index_select(0, toce), ctx.ops.mask.index_select(0, toce),
            resolve_eos(self.eos, ctx.salinity), margin=self.margin, max_factor=self.max_factor,
        )
        ocean = ctx.ops.mask.index_select(0, toce)
        for channels, field, values in ((toce, "toce", new_t), (soce, "soce", new_s)):
            normalised = (values - ctx.field_offset[field]) / ctx.field_scale[field]
            out[:, channels] = torch.where(ocean, normalised.to(x.dtype), x[:, channels])
        return out

    def __repr__(self) -> str:
        return (f"ZeroMean(stable={self.stable!r}, eos={self.eos!r}, margin={self.margin:g}, "
                f"max_factor={self.max_factor:g})")


class GradientZeroMean(Constraint):
    r"""Soft zero-mean constraint, the one the paper used.

    A relaxation of the mean constraint :math:`C(x) = \sum_c (\mu_c - \bar x_c)^2` of method.md
    (``gradient_zero_mean``): after every scheduler step each ocean cell of channel :math:`c` moves
    by the same amount, :math:`\kappa(t)` times :math:`\tfrac12 \partial C / \partial \bar x_c`,

    .. math::

        x_{cij} \leftarrow x_{cij} - \kappa(t)\, (\bar x_c - \mu_c)\, m_{cij},
        \qquad \kappa(t) = 0.001 + 0.04\, e^{-t/50}

    so the mean's distance to its target shrinks by exactly :math:`1 - \kappa(t)`. :math:`\bar x_c`
    is the area-weighted ocean mean of :class:`ZeroMean`.

    Parameters
    ----------
    kappa : KappaSchedule, callable, float or (base, amplitude, tau), optional
        The step schedule (default the paper's, :class:`KappaSchedule`).
    reference : bool, default False
        The companion code's version: :math:`\bar x_c` is the plain mean over the whole padded plane
        (land and padding included), the target is 0 and every cell, padding included, is shifted:
        :math:`x \leftarrow x - \kappa(t)\, \mathrm{mean}_{HW}(x)`.
    """

    name = "gradient_zero_mean"

    def __init__(self, kappa: KappaLike = None, *, reference: bool = False) -> None:
        self.kappa = make_kappa(kappa)
        self.reference = bool(reference)

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        kappa = self.kappa(t)
        if self.reference:
            return x - kappa * x.mean(dim=(-2, -1), keepdim=True)
        excess = ctx.ops.average_xy(x) - _target(ctx, self.name)
        return _shift_ocean(x, kappa * excess, ctx)

    def __repr__(self) -> str:
        return f"GradientZeroMean(kappa={self.kappa!r}, reference={self.reference})"


class BorderZero(Constraint):
    r"""Land and padding set to 0 (method.md: ``border_zero``).

    .. math:: x_{cij} \leftarrow m_{cij}\, x_{cij}

    with :math:`m_c` the ocean mask of channel :math:`c` (False on the padding). Open periodic
    boundaries (DINO's channel rows) are ocean and keep their values. ``at_end = True``.
    """

    name = "border_zero"
    at_end = True

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        return torch.where(ctx.ops.mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


class BorderZeroGradient(Constraint):
    r"""Zero normal gradient at every coast and domain edge (method.md: ``border_zero_gradient``).

    An ocean cell with land (or the edge of a non-periodic axis) on one side along Y takes the
    value of its neighbour on the other side, then the same along X:

    .. math::

        x_{j} \leftarrow x_{j+1} \text{ if } m_{j-1} = 0, \qquad
        x_{j} \leftarrow x_{j-1} \text{ if } m_{j+1} = 0

    so that xgcm's ``grid.diff`` across the face between a boundary cell and its interior
    neighbour is 0. The reference did this by hand after sampling for the southern boundary only
    (row 1 := row 2); here it covers every boundary and runs after each step. Periodic X (DINO's
    channel) has no edge. Cells with land on both sides are unchanged; in a passage two cells wide
    the cell with land on its south (west) side takes its neighbour's value. The X pass runs on the
    Y pass's result, so convex corners come out with both faces at 0; where a cell is a boundary
    both ways and its Y neighbour is not an X boundary too (a wall ending at a non-periodic edge),
    the X face wins. Two precomputed gathers (:meth:`GridOps.zero_normal_gradient`).
    ``at_end = True``.

    For a model that diffuses anomalies about a background (the per-cell training mean
    :math:`b`, :attr:`ConstraintContext.background`), the rule applies to the departure from it:
    :math:`x \leftarrow b + Z(x - b)` with :math:`Z` the gathers above. A real ocean has gradients
    across its coasts (GYRE's western boundary current: the training mean itself is far from a zero
    normal gradient there), and forcing them to 0 at every step put the boundary cells hundreds of
    anomaly spreads away from anything the network was trained on: on GYRE it collapsed the samples
    onto one state (spread across samples 2 % of the data's). Without a background :math:`b = 0`:
    the paper's rule on the field itself.

    Copying the neighbour's anomaly onto the boundary cell's own background can leave the boundary
    column statically unstable where the two backgrounds are stratified differently: applied to true
    GYRE states it puts 58 times the data's convective-adjustment distance into the top 200 m. So after
    the last step (:meth:`finish`), with ``toce`` and ``soce`` in the layout and a background, each
    boundary column is rebuilt from the bottom with its unstable interfaces' vertical steps moved
    towards those of the neighbour's own column (stable where the neighbour is), just enough for
    potential density to grow by ``margin`` (:func:`xoceandiff.convection.stable_blend_torch`); stable
    boundary columns keep the rule's values bit for bit, and on true GYRE states the distance is then
    the data's own. ``at_end = True``.

    Parameters
    ----------
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the stability check; ``"auto"`` follows :attr:`ConstraintContext.salinity`.
    margin : float, default 1e-4
        Density step (kg m-3) given to a boundary interface the rule would leave unstable.
    """

    name = "border_zero_gradient"
    at_end = True

    def __init__(self, *, eos: str = AUTO_EOS, margin: float = 1e-4) -> None:
        self.eos, self.margin = _eos_and_margin(eos, margin)

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        if ctx.background is None:
            return ctx.ops.zero_normal_gradient(x)
        return ctx.background + ctx.ops.zero_normal_gradient(x - ctx.background)

    def finish(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        """The rule, then the boundary columns it left unstable rebuilt (see the class)."""
        out = self(x, 0, ctx)
        if ctx.background is None or ctx.toce_channels is None or ctx.soce_channels is None or len(ctx.depths) < 2:
            return out  # the paper's rule copies whole neighbour columns: as stable as they are
        from .convection import stable_blend_torch

        neighbours = ctx.ops.zero_normal_gradient(x)
        boundary = (ctx.ops.boundary_x | ctx.ops.boundary_y).index_select(0, ctx.toce_channels)
        interfaces = ctx.ops.interface_mask & boundary[1:] & boundary[:-1]
        temperature, salinity = ctx.denormalise(out, "toce"), ctx.denormalise(out, "soce")
        new_t, new_s = stable_blend_torch(
            temperature, salinity, ctx.denormalise(neighbours, "toce"), ctx.denormalise(neighbours, "soce"),
            interfaces, resolve_eos(self.eos, ctx.salinity), margin=self.margin,
        )
        return _write_back(out, ctx, temperature, salinity, new_t, new_s)

    def __repr__(self) -> str:
        return f"BorderZeroGradient(eos={self.eos!r}, margin={self.margin:g})"


class StableStratification(Constraint):
    r"""Gradient step towards static stability: potential density not decreasing with depth.

    On the de-normalised state, with :math:`\rho_k` the potential density referenced to the surface
    (NEMO's TEOS-10 or EOS-80 polynomial, or the simplified S-EOS) of kept level :math:`k` and :math:`V` the
    cell volumes :math:`e_{1t} e_{2t} e_{3t}`, the penalty is the volume-weighted squared inversion
    between vertically adjacent kept levels, over the columns wet at both:

    .. math::

        P(x) = \frac{1}{\sum V} \sum_{k} \sum_{ij} V_{k+1,ij}\,
               \max(0, \rho_{k,ij} - \rho_{k+1,ij} + \delta)^2

    the smooth counterpart of the paper's density-error metric (an unstable interface counts with
    the volume of its deeper cell), with a small ``margin`` :math:`\delta` (see below). After each step

    .. math:: x \leftarrow x - N \kappa(t)\, \nabla_x P(x)

    with :math:`\nabla_x P` from autograd (one ``enable_grad`` block, all levels at once) and
    :math:`N` the number of wet cells of the kept levels (``per_cell=True``).

    Why this default: :math:`\partial P / \partial x` at a cell carries the factor
    :math:`V_{cell} / \sum V \approx 1/N`, so a plain :math:`\kappa` would weaken as the grid is
    refined. With the factor :math:`N`, one step shrinks an isolated inversion :math:`d` by the
    fraction :math:`r \approx 2 \kappa (V_{k+1}/\bar V) (g_k^2 + g_{k+1}^2)`, with
    :math:`g = \partial\rho/\partial x` the density change per normalised unit, whatever the
    grid size. On DINO with the ``3-std`` scheme :math:`(V/\bar V) g^2` runs from about 0.12
    (deep levels) to 3.5 (upper 500 m; the same at 4° and 1°), so the paper's schedule
    :math:`\kappa(t) = 0.001 + 0.04 e^{-t/50}` leaves the noisy early steps almost alone
    (:math:`r \le 1.4\%`), removes 2 % (deep) to 57 % (upper ocean) of an inversion per step at
    the end, and never overshoots an isolated inversion (:math:`r < 1`; :math:`r < 2`, hence
    convergence, even where neighbouring inversions interact). Over the last 100 steps it lowers
    the penalty of noisy or inverted DINO states by more than 100 times.

    ``margin`` (:math:`\delta`, kg m-3) asks for a slightly stable interface,
    :math:`\rho_{k+1} - \rho_k \ge \delta`, i.e. the penalty uses
    :math:`\max(0, \rho_k - \rho_{k+1} + \delta)^2`: without it the squared hinge only brings an
    inversion asymptotically to neutral and the *count* of unstable interfaces (the paper's
    metric) does not fall. The default 5e-3 kg m-3 is about 40 float32 ulps of a density near
    1027 kg m-3 and near the 1st percentile of the density step between adjacent kept levels of
    the DINO-like data, so stable training-like states are hardly touched; it also leaves room for
    the levels the layout drops and brings back by linear interpolation, where cabbeling makes a
    mixture of two nearly equal densities denser than both (with 1e-3, the bundled model's samples
    kept 2.2 % density errors, almost all next to interpolated levels; with 5e-3, 1.1 %).

    Parameters
    ----------
    kappa : KappaSchedule, callable, float or (base, amplitude, tau), optional
        Step schedule (default :class:`KappaSchedule`, the paper's).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state (:func:`xoceandiff.eos.potential_density`). ``"auto"`` follows the
        salinity the model generates, :attr:`ConstraintContext.salinity`: NEMO's EOS-80 polynomial
        for practical salinity, its TEOS-10 polynomial for absolute salinity (:meth:`eos_for`).
    margin : float, default 5e-3
        Density step :math:`\delta` (kg m-3) below which an interface is penalised.
    per_cell : bool, default True
        Multiply :math:`\kappa(t)` by :math:`N` (see above); False for the plain
        :math:`x - \kappa(t) \nabla_x P`.
    final_iterations, final_kappa : int, float
        Preconditioned steps applied once after the last sampling step (:meth:`finish`); 0 to skip.
    max_step : float
        Largest change of one value (normalised units) per finishing step.
    max_step_toce, max_step_soce : float, default 0.5 and 0.1
        Largest change per finishing step in physical units: 0.5 °C of temperature and 0.1 of salinity
        (g/kg or PSS-78). The finish is safe: over the default 50 steps no value moves by more than 25 °C
        and 5 in salinity whatever the input (a poor sample used to reach salinities of 70 through
        cells where density hardly responds to temperature), while the steps a real inversion needs stay
        inside the caps (an isolated 1 °C inversion in the tropical upper ocean of the DINO-like data goes in
        one step that moves the two cells by 0.05 °C and 0.02 in salinity; larger ones take a few steps).
    """

    name = "stable_stratification"
    requires = ("toce", "soce")
    at_end = True

    def __init__(
        self,
        kappa: KappaLike = None,
        *,
        eos: str = AUTO_EOS,
        margin: float = 5e-3,
        per_cell: bool = True,
        final_iterations: int = 50,
        final_kappa: float = 0.25,
        max_step: float = 1.0,
        max_step_toce: float = 0.5,
        max_step_soce: float = 0.1,
    ) -> None:
        if eos != AUTO_EOS and eos not in EOS_NAMES:
            raise ConstraintError(
                f"eos: expected 'auto' or one of {list(EOS_NAMES)}, found {eos!r}; 'auto' follows the "
                "salinity of the model (EOS-80 for practical, TEOS-10 for absolute)."
            )
        self.kappa = make_kappa(kappa)
        self.eos = eos
        self.margin = float(margin)
        self.per_cell = bool(per_cell)
        self.final_iterations = int(final_iterations)
        self.final_kappa = float(final_kappa)
        self.max_step = float(max_step)
        self.max_step_toce = float(max_step_toce)
        self.max_step_soce = float(max_step_soce)
        if min(self.max_step, self.max_step_toce, self.max_step_soce) <= 0:
            raise ConstraintError(
                f"max_step, max_step_toce, max_step_soce: expected positive numbers, found {max_step!r}, "
                f"{max_step_toce!r}, {max_step_soce!r}."
            )

    def eos_for(self, ctx: ConstraintContext) -> str:
        """The equation of state used with context ``ctx``: :attr:`eos`, or for ``"auto"`` the salinity's.

        Examples
        --------
        >>> from types import SimpleNamespace
        >>> StableStratification().eos_for(SimpleNamespace(salinity="practical"))
        'eos80-poly'
        >>> StableStratification(eos="seos").eos_for(SimpleNamespace(salinity="practical"))
        'seos'
        """
        return resolve_eos(self.eos, ctx.salinity)

    def check(self, layout: Layout) -> None:
        """Also refuse a layout with fewer than two kept levels (no interface to test)."""
        super().check(layout)
        if len(layout.levels) < 2:
            raise ConstraintError(
                f"Constraint {self.name!r} compares vertically adjacent levels, but the layout keeps "
                f"{len(layout.levels)} level(s) {list(layout.levels)}."
            )

    def penalty(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        """:math:`P(x)` per sample, ``(B,)`` (differentiable)."""
        inversion = self._inversions(self._density(x, ctx))
        return (ctx.ops.interface_weight * inversion.square()).sum(dim=(-3, -2, -1))

    def unstable(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        """Number of unstable interfaces (:math:`\\rho_k > \\rho_{k+1}`, both wet) per sample."""
        with torch.no_grad():
            rho = self._density(x, ctx)
            bad = (rho[:, :-1] > rho[:, 1:]) & ctx.ops.interface_mask
            return bad.sum(dim=(-3, -2, -1))

    def penalty_gradient(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        r""":math:`\nabla_x P` in closed form (chain rule through the analytic density derivatives).

        Equal to the autograd gradient of :meth:`penalty` (tested) at about half its cost: this runs
        after every sampling step.
        """
        temperature = ctx.denormalise(x, "toce")
        salinity = ctx.denormalise(x, "soce")
        rho, d_t, d_s = potential_density_and_gradient(temperature, salinity, eos=self.eos_for(ctx))
        # dP/d(rho_k) from interface k (k the upper cell) and from interface k - 1 (k the deeper cell)
        slope = 2 * ctx.ops.interface_weight * self._inversions(rho)
        d_rho = torch.nn.functional.pad(slope, (0, 0, 0, 0, 0, 1)) - torch.nn.functional.pad(slope, (0, 0, 0, 0, 1, 0))
        grad = torch.zeros_like(x)
        grad[:, ctx.toce_channels] = d_rho * d_t * ctx.field_scale["toce"]
        grad[:, ctx.soce_channels] = d_rho * d_s * ctx.field_scale["soce"]
        return grad

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        grad = self.penalty_gradient(x, ctx)
        kappa = self.kappa(t)
        if self.per_cell:
            kappa = kappa * ctx.ops.n_wet
        return x - kappa * grad

    def finish(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        r"""After the last step: ``final_iterations`` diagonally preconditioned steps on :math:`P`.

        The density sensitivity :math:`g_c = \partial\rho/\partial x_c` differs by ~1000 between the
        surface and the abyss (the normalisation scale times the expansion coefficient), so plain
        gradient steps barely move deep inversions. Dividing each cell's gradient by the diagonal of
        the Gauss-Newton Hessian, :math:`H_c = 2 \sum_i w_i g_c^2` over the active interfaces ``i`` the cell
        touches, makes one step with ``final_kappa = 0.25`` remove an isolated inversion exactly (four
        unknowns move: T and S of the two cells); neighbouring inversions converge over the iterations.
        """
        for _ in range(self.final_iterations):
            x = x - self._preconditioned_step(x, ctx)
        return x

    def _density(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        """Potential density (kg m-3) of the kept levels, ``(B, L, H, W)``."""
        return potential_density(ctx.denormalise(x, "toce"), ctx.denormalise(x, "soce"), eos=self.eos_for(ctx))

    def _inversions(self, rho: torch.Tensor) -> torch.Tensor:
        """``max(0, rho_k - rho_{k+1} + margin)`` per interface, ``(B, L-1, H, W)``."""
        return torch.relu(rho[:, :-1] - rho[:, 1:] + self.margin)

    def _preconditioned_step(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        """One Gauss-Newton-diagonal step on the penalty, capped at ``max_step`` per value (normalised)
        and at ``max_step_toce`` / ``max_step_soce`` in physical units."""
        with torch.inference_mode(False), torch.enable_grad():
            leaf = x.detach().clone().requires_grad_(True)
            rho = self._density(leaf, ctx)
            inversion = self._inversions(rho) * ctx.ops.interface_mask
            penalty = (ctx.ops.interface_weight * inversion.square()).sum()
            (grad_penalty,) = torch.autograd.grad(penalty, leaf, retain_graph=True)
            (grad_rho,) = torch.autograd.grad(rho.sum(), leaf)
        hessian = self._hessian_diagonal(x, grad_rho, (inversion > 0).to(x.dtype) * ctx.ops.interface_weight, ctx)
        # Levenberg-Marquardt damping and a cap: where the density barely responds to a channel
        # (g ~ 0, e.g. far outside the ocean's range in a poor sample) the plain ratio explodes.
        reference = hessian.amax(dim=(-2, -1), keepdim=True)
        step = torch.where(hessian > 0, grad_penalty / (hessian + 1e-3 * reference).clamp_min(1e-30), torch.zeros_like(x))
        step = torch.nan_to_num(self.final_kappa * step, nan=0.0, posinf=0.0, neginf=0.0)
        step = step.clamp(-self.max_step, self.max_step)
        # the physical caps, in normalised units: a change dx moves the field by dx * scale
        limit = torch.full_like(step[:1], self.max_step)
        limit[:, ctx.toce_channels] = (self.max_step_toce / ctx.field_scale["toce"].abs()).clamp_max(self.max_step)
        limit[:, ctx.soce_channels] = (self.max_step_soce / ctx.field_scale["soce"].abs()).clamp_max(self.max_step)
        return torch.maximum(torch.minimum(step, limit), -limit)

    @staticmethod
    def _hessian_diagonal(x: torch.Tensor, grad_rho: torch.Tensor, active: torch.Tensor,
                          ctx: ConstraintContext) -> torch.Tensor:
        """``H_c = 2 g_c^2`` times the weight of the active interfaces (above and below) cell ``c`` touches."""
        pad = torch.nn.functional.pad
        touching = pad(active, (0, 0, 0, 0, 0, 1)) + pad(active, (0, 0, 0, 0, 1, 0))
        hessian = torch.zeros_like(x)
        g2 = grad_rho.square()
        hessian[:, ctx.toce_channels] = 2 * touching * g2[:, ctx.toce_channels]
        hessian[:, ctx.soce_channels] = 2 * touching * g2[:, ctx.soce_channels]
        return hessian

    def __repr__(self) -> str:
        return f"StableStratification(kappa={self.kappa!r}, eos={self.eos!r}, per_cell={self.per_cell})"


class ConvectiveAdjustment(Constraint):
    r"""A final constraint: NEMO's non-penetrative convection, mixing statically unstable neighbours.

    After the last sampling step (:meth:`finish`; during the loop the state passes unchanged), the kept
    levels of every column are adjusted by :func:`xoceandiff.convection.adjust_columns_torch`: where the
    potential density of a cell exceeds that of the ocean cell below, the two are replaced by their
    volume-weighted mean temperature and salinity, and the mixed layer grows up and down while it is
    unstable against its neighbours. In physical units, with :math:`V` the cell volumes of the kept levels
    (:attr:`GridOps.volume`), each column's

    .. math:: \sum_k V_k T_k \quad\text{and}\quad \sum_k V_k S_k

    are conserved (to float rounding), and no kept interface is left unstable. Stable columns, land,
    padding and ``ssh`` are returned bit for bit. It does what NEMO would do in its first time step with
    ``ln_tranpc``, so that a restart written from the sample starts without a convective burst.

    ``margin`` (kg m-3) tilts the salinity of each mixed layer (its salt conserved) so that density grows
    by ``margin`` from each of its cells to the next, and keeps mixing a mixed layer with a neighbour
    until they are stable by ``margin``: exactly neutral layers do not survive the round trip through the
    normalisation (a per-level scale and offset) and the float32 density of the metrics, which would count
    about half of their interfaces as unstable. The default 1e-3 kg m-3 is about 8 float32 ulps of a
    density near 1027 kg m-3 and below the density step of 98 % of the adjacent levels of the DINO-like
    data, so the mixed layers do not spread much further than NEMO's; 0 gives NEMO's neutral layers.

    Parameters
    ----------
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state; ``"auto"`` follows :attr:`ConstraintContext.salinity` (EOS-80 for practical,
        TEOS-10 for absolute salinity).
    margin : float, default 1e-3
        Density step (kg m-3) inside mixed layers and between a mixed layer and its neighbours.

    Examples
    --------
    >>> [c.name for c in get_constraints("border_zero+convective_adjustment")]
    ['border_zero', 'convective_adjustment']
    >>> ConvectiveAdjustment.at_end
    True
    """

    name = "convective_adjustment"
    requires = ("toce", "soce")
    at_end = True

    def __init__(self, *, eos: str = AUTO_EOS, margin: float = 1e-3) -> None:
        self.eos, self.margin = _eos_and_margin(eos, margin)

    def eos_for(self, ctx: ConstraintContext) -> str:
        """The equation of state used with context ``ctx``: :attr:`eos`, or for ``"auto"`` the salinity's."""
        return resolve_eos(self.eos, ctx.salinity)

    def check(self, layout: Layout) -> None:
        """Also refuse a layout with fewer than two kept levels (no column to mix)."""
        super().check(layout)
        if len(layout.levels) < 2:
            raise ConstraintError(
                f"Constraint {self.name!r} mixes vertically adjacent levels, but the layout keeps "
                f"{len(layout.levels)} level(s) {list(layout.levels)}."
            )

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        """During the loop: ``x`` unchanged (the adjustment runs once, in :meth:`finish`)."""
        return x

    def finish(self, x: torch.Tensor, ctx: ConstraintContext) -> torch.Tensor:
        """The state with every column of the kept levels convectively adjusted (see the class)."""
        from .convection import adjust_columns_torch

        temperature = ctx.denormalise(x, "toce")
        salinity = ctx.denormalise(x, "soce")
        new_t, new_s = adjust_columns_torch(
            temperature, salinity, ctx.ops.volume, self.eos_for(ctx), margin=self.margin
        )
        return _write_back(x, ctx, temperature, salinity, new_t, new_s)

    def __repr__(self) -> str:
        return f"ConvectiveAdjustment(eos={self.eos!r}, margin={self.margin:g})"


class FunctionConstraint(Constraint):
    """A plain callable ``f(x, t, ctx) -> x`` as a constraint.

    ``at_end`` and ``requires`` are read from attributes of the callable when it has them.
    """

    def __init__(self, function: Callable[[torch.Tensor, Any, ConstraintContext], torch.Tensor]) -> None:
        self.function = function
        self.name = getattr(function, "__name__", type(function).__name__)  # type: ignore[misc]
        self.at_end = bool(getattr(function, "at_end", False))
        self.requires = tuple(getattr(function, "requires", ()))

    def __call__(self, x: torch.Tensor, t: Timestep, ctx: ConstraintContext) -> torch.Tensor:
        return self.function(x, t, ctx)

    def __repr__(self) -> str:
        return f"FunctionConstraint({self.name})"


# --- the registry ----------------------------------------------------------------------------------

CONSTRAINTS: dict[str, type[Constraint]] = {
    cls.name: cls
    for cls in (ZeroMean, GradientZeroMean, BorderZero, BorderZeroGradient, StableStratification,
                ConvectiveAdjustment)
}
"""Constraint classes by name; add your own to use them by name."""

ALIASES: dict[str, tuple[str, ...]] = {
    "border_zero_gradient_zero_mean": ("border_zero", "gradient_zero_mean"),
}
"""Names of combinations: the companion code's name for the paper's "constraint" run."""

ConstraintSpec: TypeAlias = (
    "str | Constraint | type[Constraint] | Callable[..., torch.Tensor] | Iterable[Any] | None"
)


def _unknown(name: str) -> ConstraintError:
    return ConstraintError(
        f"Unknown constraint {name!r}. Available constraints: {', '.join(sorted(CONSTRAINTS))}; "
        f"combinations: {', '.join(sorted(ALIASES))}."
    )


def _resolve(spec: Any, out: list[Constraint]) -> None:
    if spec is None:
        return
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.replace(",", "+").split("+") if p.strip()]
        for name in parts:
            if name in ALIASES:
                out.extend(CONSTRAINTS[n]() for n in ALIASES[name])
            elif name in CONSTRAINTS:
                out.append(CONSTRAINTS[name]())
            elif name != "none":
                raise _unknown(name)
        return
    if isinstance(spec, Constraint):
        out.append(spec)
        return
    if isinstance(spec, type):
        if issubclass(spec, Constraint):
            out.append(spec())
            return
        raise ConstraintError(
            f"{spec.__name__} is a class but not a subclass of xoceandiff.constraints.Constraint; "
            "pass an instance, a Constraint subclass or a function f(x, t, ctx)."
        )
    if callable(spec):
        out.append(FunctionConstraint(spec))
        return
    if isinstance(spec, Iterable) and not isinstance(spec, (bytes, Mapping)):
        for item in spec:
            _resolve(item, out)
        return
    raise ConstraintError(
        f"Cannot make a constraint from {spec!r}: expected a name, a Constraint, a Constraint "
        "subclass, a function f(x, t, ctx) or a list of those."
    )


def get_constraints(spec: ConstraintSpec, layout: Layout | None = None) -> list[Constraint]:
    """The constraints named or given by ``spec``, in order.

    Parameters
    ----------
    spec : str, Constraint, Constraint subclass, callable, list of those, or None
        A registry name (:data:`CONSTRAINTS`) or alias (:data:`ALIASES`); several names joined by
        ``+`` or ``,``; an instance; a subclass (instantiated without arguments); a function
        ``f(x, t, ctx) -> x`` (wrapped in :class:`FunctionConstraint`); a list of any of these.
        ``None`` or ``"none"``: no constraint.
    layout : Layout, optional
        If given, every constraint's :meth:`Constraint.check` runs against it.

    Returns
    -------
    list of Constraint

    Raises
    ------
    xoceandiff.errors.ConstraintError
        An unknown name (the message lists the available ones), an object that is no constraint, or
        a constraint the layout cannot serve.

    Examples
    --------
    >>> [c.name for c in get_constraints("border_zero_gradient_zero_mean")]
    ['border_zero', 'gradient_zero_mean']
    >>> [c.name for c in get_constraints(["zero_mean", lambda x, t, ctx: x])]
    ['zero_mean', '<lambda>']
    """
    out: list[Constraint] = []
    _resolve(spec, out)
    if layout is not None:
        for constraint in out:
            constraint.check(layout)
    return out

