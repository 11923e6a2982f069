"""The static-stability term of the training objective.

The denoiser's loss is a mean squared error in the diffusion variable, level by level and field by field:
it knows nothing of the water column. On real model output that leaves samples whose levels are each
plausible but whose columns are not: in a mixed layer, where NEMO's convection keeps density vertically
uniform, errors of a few hundredths of a degree that are independent from level to level make every other
interface unstable, and NEMO's convection reshapes the state at once.

:class:`StabilityTerm` adds what the MSE misses: the squared density inversions of the network's estimate
of the clean state, :math:`\\hat x_0`, measured in the units the MSE uses. For the interface between kept
levels :math:`k` and :math:`k+1` of a column,

.. math::

    s_k = \\frac{\\max(0, \\hat\\rho_k - \\hat\\rho_{k+1})}{g_k}, \\qquad
    g_k = \\left|\\frac{\\partial\\rho}{\\partial T}\\right|_k \\sigma^T_k,

with :math:`\\hat\\rho` the potential density (the model's equation of state) of the de-normalised
:math:`\\hat x_0` and :math:`g_k` the density change of one unit of the diffusion variable of temperature at
level :math:`k` (:math:`\\sigma^T_k` the physical size of that unit: normalisation scale times, for a
background model, the anomaly scale; for a model in vertical differences, the spread of the difference
across the interface; :math:`\\partial\\rho/\\partial T` at the level's mean state). The term is
:math:`\\sum s_k^2` over the ocean interfaces of a state divided by the number of elements of the state
(channels times cells, as the MSE's mean), averaged over the batch: with weight 1 an inversion costs
what the temperature error that would make it costs in the MSE; larger weights make inversions dearer than
errors. The training data are statically stable (NEMO's convection sees to it), and with a linear
equation of state the stable columns form a convex set that holds the MSE's optimum, the conditional mean
of stable states; the term leaves that optimum in place and only adds gradient where the network errs
towards instability.

It needs :math:`\\hat x_0` from the network output, exact for the ``sample`` and ``v_prediction`` targets
(``epsilon`` divides by :math:`\\sqrt{\\bar\\alpha_t}`, unbounded at the noisy end, and is refused).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .constraints import ConstraintContext, StableStratification
from .eos import potential_density, potential_density_and_gradient
from .errors import InvalidDataError
from .model import Denoiser

__all__ = ["StabilityTerm", "check_stability_weight"]


def check_stability_weight(weight: float, prediction_type: str, fields: tuple[str, ...]) -> float:
    """``weight`` as a float, refused where the term cannot apply.

    Examples
    --------
    >>> check_stability_weight(1, "sample", ("toce", "soce", "ssh"))
    1.0
    """
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not np.isfinite(weight) or weight < 0:
        raise InvalidDataError(f"stability_weight: expected a non-negative number, found {weight!r}.")
    if weight and prediction_type == "epsilon":
        raise InvalidDataError(
            "stability_weight: the stability term needs the network's estimate of the clean state, exact for "
            "prediction_type 'sample' or 'v_prediction', found 'epsilon'; train with prediction_type='sample' "
            "(CLI --prediction-type sample) or stability_weight=0."
        )
    if weight and not {"toce", "soce"} <= set(fields):
        raise InvalidDataError(
            f"stability_weight: the stability term needs toce and soce among the model's fields, found "
            f"{list(fields)}; train on both or with stability_weight=0."
        )
    return float(weight)


class StabilityTerm:
    """Squared density inversions of :math:`\\hat x_0`, in units of the diffusion variable, per state element.

    Parameters
    ----------
    ds : xarray.Dataset
        The training data or its grid (``tmask``, ``e1t``, ``e2t``, ``e3t``).
    model : Denoiser
        The model being trained (layout, normaliser, background, salinity kind from its card).
    device : torch.device, optional
        Where the training tensors live.

    Examples
    --------
    >>> import torch, xoceandiff
    >>> from xoceandiff.training import prepare_model
    >>> ds = xoceandiff.datasets.dino(n=4, resolution=4.0)
    >>> model = prepare_model(ds, "tiny", prediction_type="sample")
    >>> term = StabilityTerm(ds, model)
    >>> state = model.to_model_space(xoceandiff.layout.to_tensor(
    ...     xoceandiff.normalisation.normalise(ds, model.card.normaliser), model.card.layout))
    >>> float(term(state)) < 1e-6   # the data are stable
    True
    """

    def __init__(self, ds: xr.Dataset, model: Denoiser, device: torch.device | None = None) -> None:
        card = model.card
        self.model = model
        self.ctx = ConstraintContext.from_model(ds, card.layout, card.normaliser, device=device,
                                                dtype=torch.float64, salinity=card.salinity)
        self.eos = StableStratification().eos_for(self.ctx)
        ctx = self.ctx
        offset_t = ctx.field_offset["toce"].reshape(-1)
        offset_s = ctx.field_offset["soce"].reshape(-1)
        _, d_t, _ = potential_density_and_gradient(offset_t, offset_s, eos=self.eos)
        # the physical size of one unit of the diffusion variable of T at each level: for a model in vertical
        # differences, one spread of the difference across the interface below it
        unit = torch.ones_like(d_t)
        if model.background:
            unit = model.space_scale.detach().reshape(-1)[ctx.toce_channels.cpu()].to(d_t).abs()
        if not model.vertical:
            unit = unit * ctx.field_scale["toce"].reshape(-1).abs()
        density_unit = (d_t.abs() * unit)[:-1]  # kg m-3 per unit, at each interface's upper level
        # floored so that a level whose temperature never varies (unit 0) cannot make the term infinite
        floor = 1e-6 * float(density_unit.max()) if density_unit.numel() else 1.0
        self.density_unit = density_unit.clamp_min(floor)[:, None, None]
        self.interface_mask = ctx.ops.interface_mask.to(torch.float64)

    def __call__(self, estimate: torch.Tensor) -> torch.Tensor:
        """The term for a batch of estimates ``(B, C, H, W)`` of the clean state, in the diffusion variable."""
        ctx = self.ctx
        normalised = self.model.from_model_space(estimate)
        # float64: an inversion of a thousandth of a degree is a few float32 ulps of a density near 1027
        normalised = normalised.double()
        rho = potential_density(ctx.denormalise(normalised, "toce"), ctx.denormalise(normalised, "soce"), eos=self.eos)
        inversion = torch.relu(rho[:, :-1] - rho[:, 1:]) / self.density_unit
        per_state = (self.interface_mask * inversion.square()).sum(dim=(-3, -2, -1)) / estimate[0].numel()
        return per_state.mean().float()
