"""Conservative convective adjustment: mix statically unstable neighbours, as NEMO's non-penetrative convection.

NEMO's non-penetrative convective adjustment (``tranpc.F90``, ``ln_tranpc``) removes static instabilities
by mixing: where the potential density of a cell exceeds that of the ocean cell below, the two are
replaced by their volume-weighted mean temperature and salinity, and the mixed layer keeps absorbing the
cells above and below while it is still unstable against them. Each column's volume-integrated heat and
salt are conserved; the result is statically stable (potential density non-decreasing with depth).

Here the scheme is the exact "pool adjacent violators" form of it: scanning each column downward, a stack
of homogeneous layers is kept whose adjacent pairs are all stable; a new cell is pushed, then the two
layers at the top of the stack are merged (volume-weighted means of ``T`` and ``S``) while the upper is
denser than the lower. Every merge removes a layer, so the scan ends after at most ``nz`` merges per column,
with a stable column, whatever the equation of state. Stable columns are returned bitwise unchanged, land
cells too. The scan is vectorised over columns: numpy (:func:`adjust_columns`) and torch
(:func:`adjust_columns_torch`, for the end of sampling) run the same code.

``margin`` (kg m-3, 0 by default, NEMO's neutral mixed layers) gives each mixed layer a tiny stable
stratification: the salinity of its cells is tilted about the layer mean (conserving the layer's salt)
so that density grows by ``margin`` from each cell to the next, and a layer is merged with a neighbour
unless it is stable against it by ``margin`` (pairs of untouched cells merge only when strictly
unstable). Neutral layers are fragile: a round trip through a per-level normalisation, or a float32
evaluation of the density, flips about half of their interfaces to "unstable" by rounding alone.

:func:`convective_adjustment` and :func:`adjustment_distance` apply the scheme to a canonical dataset;
the latter is the fidelity measure "how far is this state from one NEMO could start from quietly": the
volume-weighted RMS change of temperature and salinity, per record and depth band
(:data:`xoceandiff.canonical.DEPTH_BANDS`).

This module knows numpy and xarray; torch only inside :func:`adjust_columns_torch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .canonical import (
    DEPTH_BANDS,
    SPATIAL_DIMS,
    Z,
    band_masks,
    cell_volume,
    field_attrs,
    record_dim,
    salinity_kind,
    stamp_history,
)
from .eos import AUTO_EOS, potential_density, potential_density_and_gradient, resolve_eos
from .errors import InvalidDataError, MissingVariableError

if TYPE_CHECKING:
    import torch

__all__ = [
    "adjust_columns",
    "adjust_columns_torch",
    "stable_blend_torch",
    "stable_level_shift_torch",
    "convective_adjustment",
    "adjustment_distance",
]


# --- the column scan, for numpy and torch --------------------------------------------------------


@dataclass(frozen=True)
class _Backend:
    """The few array functions the scan needs that numpy and torch spell differently."""

    zeros: Callable[..., Any]  # zeros(shape, kind) with kind in {"float", "int", "bool"}
    nonzero: Callable[[Any], Any]  # 1-D indices of the True entries of a 1-D bool array
    isfinite: Callable[[Any], Any]
    cumsum: Callable[[Any], Any]  # along the last axis
    full: Callable[[int, int], Any]  # full(n, value) of ints
    arange: Callable[[int], Any]  # 0, 1, ..., n - 1 (ints)
    where: Callable[[Any, Any, Any], Any]
    to_caller: Callable[[Any], Any]  # values as the caller will hold them (its dtype)
    to_work: Callable[[Any], Any]  # back to the working dtype


def _numpy_backend(dtype: np.dtype) -> _Backend:
    """The numpy backend; ``dtype`` is the caller's (the scan works in float64)."""
    kinds = {"float": np.float64, "int": np.int64, "bool": bool}
    return _Backend(
        zeros=lambda shape, kind: np.zeros(shape, dtype=kinds[kind]),
        nonzero=lambda a: np.flatnonzero(a),
        isfinite=np.isfinite,
        cumsum=lambda a: np.cumsum(a, axis=-1),
        full=lambda n, value: np.full(n, value, dtype=np.int64),
        arange=lambda n: np.arange(n),
        where=np.where,
        to_caller=lambda a: a.astype(dtype),
        to_work=lambda a: a.astype(np.float64),
    )


def _scan(T: Any, S: Any, V: Any, eos: str, margin: float, max_iterations: int | None,
          xp: _Backend) -> tuple[Any, Any]:
    """Convective adjustment of ``N`` columns ``(N, nz)`` (V = 0 or non-finite values: land).

    Sums and densities are computed in the working dtype (float64), the densities on values rounded to the
    caller's dtype: what the caller gets back is stable as the diagnostics see it (float64 densities of
    the stored values).
    """
    N, nz = T.shape

    def density(t: Any, s: Any) -> Any:
        return potential_density(xp.to_work(xp.to_caller(t)), xp.to_work(xp.to_caller(s)), eos=eos)

    ocean = (V > 0) & xp.isfinite(T) & xp.isfinite(S) & xp.isfinite(V)
    Tc = xp.where(ocean, T, 0.0)  # NaN of land out of the way (values of land are never used)
    Sc = xp.where(ocean, S, 0.0)
    # one slot per layer of each column's stack
    vol, heat, salt, moment = (xp.zeros((N, nz), "float") for _ in range(4))
    t_mean, s_mean, k_mean, slope, rho_top, rho_bot = (xp.zeros((N, nz), "float") for _ in range(6))
    count, start = xp.zeros((N, nz), "int"), xp.zeros((N, nz), "int")
    barrier = xp.zeros((N, nz), "bool")  # the layer may not merge with the one above (land in between)
    top = xp.full(N, -1)

    def derive(rows: Any, slot: Any) -> None:
        """Means, tilt and top/bottom densities of layers ``(rows, slot)`` from their sums."""
        v = vol[rows, slot]
        t = heat[rows, slot] / v
        s = salt[rows, slot] / v
        kbar = moment[rows, slot] / v
        t_mean[rows, slot], s_mean[rows, slot], k_mean[rows, slot] = t, s, kbar
        if margin > 0:
            _, _, d_s = potential_density_and_gradient(t, s, eos=eos)
            tilt = margin / d_s  # salinity step between neighbours that makes density grow by margin
            first = start[rows, slot] - kbar
            last = first + (count[rows, slot] - 1)
            slope[rows, slot] = tilt
            rho_top[rows, slot] = density(t, s + tilt * first)
            rho_bot[rows, slot] = density(t, s + tilt * last)
        else:
            rho = density(t, s)
            rho_top[rows, slot], rho_bot[rows, slot] = rho, rho

    for k in range(nz):
        rows = xp.nonzero(ocean[:, k])
        if len(rows) == 0:
            continue
        slot = top[rows] + 1
        top[rows] = slot
        v = V[rows, k]
        vol[rows, slot], heat[rows, slot], salt[rows, slot] = v, v * Tc[rows, k], v * Sc[rows, k]
        moment[rows, slot] = v * k
        count[rows, slot], start[rows, slot] = 1, k
        slope[rows, slot] = 0.0
        barrier[rows, slot] = ~ocean[rows, k - 1] if k > 0 else True
        t_mean[rows, slot], s_mean[rows, slot], k_mean[rows, slot] = Tc[rows, k], Sc[rows, k], float(k)
        rho = density(Tc[rows, k], Sc[rows, k])
        rho_top[rows, slot], rho_bot[rows, slot] = rho, rho
        iteration = 0
        while len(rows) and (max_iterations is None or iteration < max_iterations):
            lower = top[rows]
            upper = (lower - 1).clip(min=0)
            gap = rho_top[rows, lower] - rho_bot[rows, upper]
            mixed = (count[rows, lower] > 1) | (count[rows, upper] > 1)
            unstable = (gap < 0) | (mixed & (gap < margin)) if margin > 0 else gap < 0
            rows = rows[(lower >= 1) & ~barrier[rows, lower] & unstable]
            if len(rows) == 0:
                break
            lower = top[rows]
            upper = lower - 1
            for total in (vol, heat, salt, moment, count):
                total[rows, upper] = total[rows, upper] + total[rows, lower]
            top[rows] = upper
            derive(rows, upper)
            iteration += 1

    # each cell takes the values of its layer: layers start where a stack slot starts
    starts = xp.zeros((N, nz), "int")
    used = xp.nonzero((top >= 0).reshape(-1))
    for slot in range(nz):
        rows = used[top[used] >= slot]
        if len(rows) == 0:
            break
        starts[rows, start[rows, slot]] = 1
    layer = (xp.cumsum(starts) - 1).clip(min=0)
    cols = xp.arange(N)[:, None]
    touched = ocean & (count[cols, layer] > 1)
    S_mixed = s_mean[cols, layer] + slope[cols, layer] * (xp.arange(nz)[None, :] - k_mean[cols, layer])
    # exactly the input where untouched (NaN land stays NaN)
    return xp.where(touched, t_mean[cols, layer], T), xp.where(touched, S_mixed, S)


def _checked_eos(eos: str) -> str:
    """``eos`` if it names an equation of state; ``"auto"`` needs a dataset, which columns do not have."""
    if eos == AUTO_EOS:
        raise InvalidDataError(
            "eos='auto' chooses the equation of state from a dataset's salinity, and columns are plain "
            "arrays; pass eos=xoceandiff.eos.resolve_eos('auto', salinity_kind) or an explicit name."
        )
    return resolve_eos(eos)


def adjust_columns(
    temperature: np.ndarray,
    salinity: np.ndarray,
    volume: np.ndarray,
    *,
    eos: str = "teos10-poly",
    axis: int = -1,
    margin: float = 0.0,
    max_iterations: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-penetrative convective adjustment of water columns (numpy).

    Scanning each column downward, a cell denser than the ocean cell below is mixed with it (volume-weighted
    mean temperature and salinity), and the mixed layer absorbs further cells above and below while the
    instability persists, until the column's potential density (surface-referenced,
    :func:`xoceandiff.eos.potential_density`) does not decrease with depth. Each column's
    volume-integrated temperature and salinity are conserved (to float rounding); stable columns and land
    cells are returned unchanged, bit for bit.

    Parameters
    ----------
    temperature, salinity : numpy.ndarray
        The columns, depth along ``axis`` (``(..., z)`` by default; ``axis=0`` for ``(z, y, x)``), in the
        variables of ``eos``. NaN marks land.
    volume : numpy.ndarray
        Cell volumes (m3, or any weights), broadcastable against ``temperature``; 0 or NaN marks land.
    eos : {"teos10-poly", "eos80-poly", "seos"}, default "teos10-poly"
        Equation of state of the potential density.
    axis : int, default -1
        The depth axis of ``temperature`` and ``salinity`` (of the broadcast ``volume``), surface first.
    margin : float, default 0.0
        Density step (kg m-3) given to each interface inside a mixed layer, by tilting its salinity about
        the layer mean (salt conserved), and asked of every interface a mixed layer touches; 0 gives NEMO's
        neutral mixed layers (see the module's notes).
    max_iterations : int, optional
        At most this many merge passes after each new cell (default: as many as needed, at most the
        number of cells above; with a smaller bound the result may stay unstable).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The adjusted temperature and salinity, shape and dtype of the inputs (computed in float64).

    Raises
    ------
    InvalidDataError
        Shapes that do not broadcast, or an unknown ``eos``.

    Examples
    --------
    Two cells of equal volume, the upper one colder (denser): both take the mean.

    >>> t, s = adjust_columns(np.array([2.0, 10.0]), np.array([35.0, 35.0]), np.array([1.0, 1.0]))
    >>> t.tolist(), s.tolist()
    ([6.0, 6.0], [35.0, 35.0])
    >>> adjust_columns(np.array([10.0, 2.0]), np.array([35.0, 35.0]), np.ones(2))[0].tolist()  # stable
    [10.0, 2.0]
    """
    eos = _checked_eos(eos)
    temperature = np.asarray(temperature)
    salinity = np.asarray(salinity)
    try:
        T, S, V = np.broadcast_arrays(temperature, salinity, np.asarray(volume))
    except ValueError as err:
        raise InvalidDataError(
            f"temperature {temperature.shape}, salinity {salinity.shape} and volume "
            f"{np.shape(volume)} do not broadcast: {err}"
        ) from None
    dtype = np.result_type(temperature.dtype, salinity.dtype, np.float32)
    moved = [np.moveaxis(a, axis, -1).astype(np.float64) for a in (T, S, V)]
    shape = moved[0].shape
    nz = shape[-1] if shape else 1
    T2, S2, V2 = (a.reshape(-1, nz) for a in moved)
    T_out, S_out = _scan(T2, S2, V2, eos, float(margin), max_iterations, _numpy_backend(dtype))
    T_out = np.moveaxis(T_out.reshape(shape), -1, axis)
    S_out = np.moveaxis(S_out.reshape(shape), -1, axis)
    # untouched values come back bitwise (the float64 detour is exact for float32 input)
    return T_out.astype(dtype, copy=False), S_out.astype(dtype, copy=False)


def adjust_columns_torch(
    x_T: torch.Tensor,
    x_S: torch.Tensor,
    volume: torch.Tensor,
    eos: str = "teos10-poly",
    *,
    margin: float = 0.0,
    max_iterations: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-penetrative convective adjustment of ``(B, L, H, W)`` tensors: :func:`adjust_columns` in torch.

    The same scan, vectorised over the ``B * H * W`` columns (one pass per level plus one per merge,
    about ``L`` to ``2 L`` vectorised steps in all for sampled states), on the tensors' device; it is
    computed in float64 (float32 on MPS, which lacks it) and returned in the input dtype. Stable columns
    and land come back unchanged.

    Parameters
    ----------
    x_T, x_S : torch.Tensor
        ``(B, L, H, W)`` temperature and salinity in physical units (levels surface first).
    volume : torch.Tensor
        ``(L, H, W)`` (or broadcastable) cell volumes, 0 on land and padding.
    eos : {"teos10-poly", "eos80-poly", "seos"}, default "teos10-poly"
        Equation of state of the potential density.
    margin : float, default 0.0
        See :func:`adjust_columns`.
    max_iterations : int, optional
        See :func:`adjust_columns`.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Adjusted temperature and salinity, ``(B, L, H, W)``, dtype and device of ``x_T``.

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([2.0, 10.0]).reshape(1, 2, 1, 1)
    >>> s = torch.full((1, 2, 1, 1), 35.0)
    >>> adjust_columns_torch(t, s, torch.ones(2, 1, 1))[0].flatten().tolist()
    [6.0, 6.0]
    """
    import torch

    eos = _checked_eos(eos)
    if x_T.ndim != 4 or x_S.shape != x_T.shape:
        raise InvalidDataError(
            f"x_T and x_S: expected two (B, L, H, W) tensors of one shape, found {tuple(x_T.shape)} and "
            f"{tuple(x_S.shape)}."
        )
    B, L, H, W = x_T.shape
    work = torch.float32 if x_T.device.type == "mps" else torch.float64
    V = torch.broadcast_to(volume.to(device=x_T.device, dtype=work), x_T.shape)

    def columns(a: torch.Tensor) -> torch.Tensor:
        return a.to(work).permute(0, 2, 3, 1).reshape(-1, L)

    device = x_T.device
    kinds = {"float": work, "int": torch.long, "bool": torch.bool}
    backend = _Backend(
        zeros=lambda shape, kind: torch.zeros(shape, dtype=kinds[kind], device=device),
        nonzero=lambda a: torch.nonzero(a).flatten(),
        isfinite=torch.isfinite,
        cumsum=lambda a: torch.cumsum(a, dim=-1),
        full=lambda n, value: torch.full((n,), value, dtype=torch.long, device=device),
        arange=lambda n: torch.arange(n, device=device),
        where=lambda c, a, b: torch.where(c, a, torch.as_tensor(b, dtype=work, device=device)),
        to_caller=lambda a: a.to(x_T.dtype),
        to_work=lambda a: a.to(work),
    )
    with torch.no_grad():
        T_out, S_out = _scan(columns(x_T), columns(x_S), columns(V), eos, float(margin), max_iterations, backend)

    def back(a: torch.Tensor) -> torch.Tensor:
        return a.reshape(B, H, W, L).permute(0, 3, 1, 2).to(x_T.dtype).contiguous()

    return back(T_out), back(S_out)


def stable_blend_torch(
    x_T: torch.Tensor,
    x_S: torch.Tensor,
    ref_T: torch.Tensor,
    ref_S: torch.Tensor,
    where: torch.Tensor,
    eos: str = "teos10-poly",
    *,
    margin: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Columns rebuilt from the bottom, each unstable interface's step moved towards a stable reference's.

    Used by ``border_zero_gradient`` at the end of sampling: a boundary cell that copies its neighbour's
    anomaly onto its own background can be denser than the cell below it (GYRE's western boundary: its mean
    stratification is not its neighbour's), while the neighbour's own column, the reference, is stable.
    For each interface ``k`` of ``where`` (bottom up, level ``k + 1`` already final), the vertical steps
    :math:`d = x_k - x_{k+1}` of ``T`` and ``S`` become

    .. math:: d(\theta) = \theta\, d_x + (1 - \theta)\, d_{ref}, \qquad x_k = x_{k+1} + d(\theta),

    with :math:`\theta = 1` (the step unchanged) where the interface is stable, and otherwise about the
    largest :math:`\theta` that leaves potential density growing by ``margin`` from level ``k`` to ``k + 1``
    (six bracketed regula-falsi steps on the equation of state, ending on the stable side), or
    :math:`\theta = 0` (the reference's step) where that step is not stable by ``margin`` itself: a step
    of the column's own that is unstable by a hair can still hold T and S differences that nearly
    compensate in density, and mixing it (NEMO's convection, the fidelity measure) moves T a lot. Where the
    reference's step is unstable too, its step would hand the reference's instability on, so the interface
    is mixed instead: no step at all (:math:`d_{ref} = 0`, level ``k`` takes the T and S of level ``k + 1``,
    neutral). On GYRE that took the top-200 m convective-adjustment distance of samples from 0.0017-0.0024 to
    0.0011-0.0018 °C over seeds 0-2. Above a changed interface the column keeps its own steps, so it moves
    as one. Columns without an unstable interface are returned bit for bit.

    Parameters
    ----------
    x_T, x_S : torch.Tensor
        ``(B, L, H, W)`` temperature and salinity in physical units (levels surface first).
    ref_T, ref_S : torch.Tensor
        ``(B, L, H, W)`` the reference columns whose steps the unstable interfaces move towards.
    where : torch.Tensor
        ``(L - 1, H, W)`` bool, the interfaces that may change (ocean on both sides).
    eos : {"teos10-poly", "eos80-poly", "seos"}, default "teos10-poly"
        Equation of state of the potential density.
    margin : float, default 1e-4
        Density step (kg m-3) a changed interface is given.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``T`` and ``S``, dtype of ``x_T``; computed in float64 (float32 on MPS).

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([12.0, 10.0, 11.0]).reshape(1, 3, 1, 1)  # 10 over 11 degC: unstable
    >>> ref = torch.tensor([12.0, 11.0, 10.0]).reshape(1, 3, 1, 1)
    >>> s = torch.full((1, 3, 1, 1), 35.0)
    >>> new_t, _ = stable_blend_torch(t, s, ref, s, torch.ones(2, 1, 1, dtype=torch.bool))
    >>> [round(v, 2) for v in new_t.flatten().tolist()]
    [13.0, 11.0, 11.0]
    """
    import torch

    eos = _checked_eos(eos)
    work = torch.float32 if x_T.device.type == "mps" else torch.float64
    T, S = x_T.to(work).clone(), x_S.to(work).clone()
    step_T, step_S = T[:, :-1] - T[:, 1:], S[:, :-1] - S[:, 1:]
    ref_step_T = (ref_T[:, :-1] - ref_T[:, 1:]).to(work)
    ref_step_S = (ref_S[:, :-1] - ref_S[:, 1:]).to(work)
    where = torch.broadcast_to(where.to(x_T.device), step_T.shape[1:])
    one = torch.ones((), dtype=work, device=x_T.device)
    shifted = torch.zeros_like(T[:, 0], dtype=torch.bool)  # columns already rebuilt below level k
    for k in range(T.shape[1] - 2, -1, -1):
        below = potential_density(T[:, k + 1], S[:, k + 1], eos)

        def stability(theta: torch.Tensor, k: int = k, below: torch.Tensor = below) -> torch.Tensor:
            t = T[:, k + 1] + theta * step_T[:, k] + (1 - theta) * ref_step_T[:, k]
            s = S[:, k + 1] + theta * step_S[:, k] + (1 - theta) * ref_step_S[:, k]
            return below - potential_density(t, s, eos)

        own, ref = stability(one), stability(0 * one)
        # an unstable reference step would hand the neighbour's instability to this column: the interface is
        # mixed instead (no step of T or S, neutral: nothing for convection to move)
        unstable_ref = ref < 0
        if bool(unstable_ref.any()):
            ref_step_T[:, k] = torch.where(unstable_ref, 0.0, ref_step_T[:, k])
            ref_step_S[:, k] = torch.where(unstable_ref, 0.0, ref_step_S[:, k])
            ref = torch.where(unstable_ref, 0.0, ref)
        change = where[k] & (own < 0)
        theta = one.expand_as(own)
        if bool(change.any()):
            # regula falsi on the bracket [low, high] (stable by the goal at low, short of it at high); the
            # bracket's stable end is taken, so the interface is stable by the goal whatever the EOS's curvature.
            # Where the reference step is not stable by margin itself, it is taken whole (theta = 0).
            goal = torch.full_like(ref, margin)
            low, f_low = torch.zeros_like(own), torch.maximum(ref, goal)
            high, f_high = torch.ones_like(own), own
            for _ in range(6):
                trial = (low + (high - low) * (f_low - goal) / (f_low - f_high)).clamp(0, 1)
                f_trial = stability(trial)
                good = f_trial >= 0.999 * goal  # a trial on the goal but for rounding counts as reached
                low, f_low = torch.where(good, trial, low), torch.where(good, f_trial, f_low)
                high, f_high = torch.where(good, high, trial), torch.where(good, f_high, f_trial)
            theta = torch.where(change, low, one)
        shifted = shifted | change
        # where nothing changed at or below k the column keeps its values bit for bit
        T[:, k] = torch.where(shifted, T[:, k + 1] + theta * step_T[:, k] + (1 - theta) * ref_step_T[:, k], T[:, k])
        S[:, k] = torch.where(shifted, S[:, k + 1] + theta * step_S[:, k] + (1 - theta) * ref_step_S[:, k], S[:, k])
    return T.to(x_T.dtype), S.to(x_T.dtype)


def stable_level_shift_torch(
    x_T: torch.Tensor,
    x_S: torch.Tensor,
    shift_T: torch.Tensor,
    shift_S: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    eos: str = "teos10-poly",
    *,
    margin: float = 3e-3,
    max_factor: float = 100.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Each level's weighted mean of ``T`` and ``S`` moved by a given amount, without making stable interfaces unstable.

    Used by ``zero_mean``: moving every cell of a level by the level's shift (the paper's constraint) changes
    the vertical step between two levels by the difference of their shifts in every column alike, and in a
    mixed layer, where the step is nearly neutral, that makes the interface unstable (on GYRE, 6 times the
    free samples' convective-adjustment distance in the top 200 m). Here the shifts are built from the bottom
    up as changes of the vertical steps: at level :math:`k`, with :math:`c_{k+1}` the change already given to
    the cell below, each column's change is

    .. math:: c_k = c_{k+1} + w\, a_k, \qquad a_k = \delta_k - \langle c_{k+1} \rangle_k,

    with :math:`\delta_k` the wanted shift of the level mean :math:`\langle\cdot\rangle_k` (``weight[k]``) and
    :math:`w \ge 0` a weight of mean 1 over the level, so that every level's mean moves by exactly
    :math:`\delta_k`. Where :math:`(T, S) + w\,(a^T, a^S)` makes level :math:`k` denser relative to the cell
    below (linearised with the EOS's gradient, :math:`g = \rho_T a^T + \rho_S a^S > 0`), ``w`` is at
    most the column's room, :math:`(\Delta\rho - \text{margin})^+ / g`: an interface stable by ``margin`` stays
    stable, a weaker one does not lose stability. Within these caps ``w`` is the closest to uniform
    (:math:`w = \min(\text{cap}, \lambda)`, :math:`\lambda \ge 1` exactly, over the sorted caps), and at most ``max_factor``.
    Where the level's room above ``margin`` is too small for its shift, the caps are taken down to neutral
    (margin 0), and where even that is too small, the rest is spread uniformly. Where every column has
    room, this is the uniform shift.

    Parameters
    ----------
    x_T, x_S : torch.Tensor
        ``(B, L, H, W)`` temperature and salinity in physical units (levels surface first).
    shift_T, shift_S : torch.Tensor
        ``(B, L)`` the wanted change of each level's weighted mean.
    weight : torch.Tensor
        ``(L, H, W)`` each level's averaging weights: >= 0, summing to 1 over its ocean cells.
    mask : torch.Tensor
        ``(L, H, W)`` bool, the ocean cells; the others are returned unchanged.
    eos : {"teos10-poly", "eos80-poly", "seos"}, default "teos10-poly"
        Equation of state of the potential density.
    margin : float, default 3e-3
        Density step (kg m-3) below which an interface takes no destabilising change.
    max_factor : float, default 100
        The largest multiple of the level's shift one column takes while others have room.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``T`` and ``S``, dtype of ``x_T``; computed in float64 (float32 on MPS).

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([[10.0, 10.0], [9.9, 8.0]]).reshape(1, 2, 1, 2)  # column 0 weakly, 1 well stratified
    >>> s = torch.full_like(t, 35.0)
    >>> weight, mask = torch.full((2, 1, 2), 0.5), torch.ones(2, 1, 2, dtype=torch.bool)
    >>> new_t, _ = stable_level_shift_torch(t, s, torch.tensor([[-0.4, 0.0]]), torch.zeros(1, 2), weight, mask)
    >>> [round(v, 3) for v in new_t.flatten().tolist()]  # the top level cools by 0.4 on average, mostly in column 1
    [9.918, 9.282, 9.9, 8.0]
    """
    import torch

    eos = _checked_eos(eos)
    work = torch.float32 if x_T.device.type == "mps" else torch.float64
    T, S = x_T.to(work), x_S.to(work)
    shift_T, shift_S, weight = shift_T.to(work), shift_S.to(work), weight.to(work)
    mask = mask.to(x_T.device)
    new_T, new_S = T.clone(), S.clone()
    carried_T = torch.zeros_like(T[:, 0])  # the change of the cell below, carried up the column
    carried_S = torch.zeros_like(carried_T)
    infinite = torch.full_like(carried_T, math.inf)
    levels = T.shape[1]
    for k in range(levels - 1, -1, -1):
        level_weight = weight[k]
        a_T = shift_T[:, k] - (carried_T * level_weight).sum((-2, -1))
        a_S = shift_S[:, k] - (carried_S * level_weight).sum((-2, -1))
        w = torch.ones_like(carried_T)
        if k < levels - 1:
            below = potential_density(new_T[:, k + 1], new_S[:, k + 1], eos)
            rho, rho_T, rho_S = potential_density_and_gradient(T[:, k] + carried_T, S[:, k] + carried_S, eos)
            densening = rho_T * a_T[:, None, None] + rho_S * a_S[:, None, None]
            limited = mask[k] & mask[k + 1] & (densening > 0)
            step = below - rho

            def caps(keep: float, step: torch.Tensor = step, densening: torch.Tensor = densening,
                     limited: torch.Tensor = limited) -> torch.Tensor:
                room = (step - keep).clamp(min=0)
                return torch.where(limited, room / densening.clamp(min=1e-300), infinite).clamp(max=max_factor)

            cap = caps(margin)
            total = (cap * level_weight).sum((-2, -1))
            if margin > 0 and bool((total < 1).any()):
                # too little room above the margin: let the interfaces go down to neutral before any turns unstable
                neutral = caps(0.0)
                short = (total < 1)[:, None, None]
                cap = torch.where(short, neutral, cap)
                total = (cap * level_weight).sum((-2, -1))
            if bool((total < 1 - 1e-12).any() | (cap < 1).any()):
                # lambda >= 1 with mean(min(cap, lambda)) = 1, exactly: over the caps sorted, the mean at
                # lambda = cap_j is sum_{i <= j} a_i cap_i + cap_j sum_{i > j} a_i, growing with j
                flat_cap = cap.flatten(-2)
                order = torch.argsort(flat_cap, dim=-1)
                sorted_cap = flat_cap.gather(-1, order)
                sorted_weight = level_weight.flatten().expand_as(flat_cap).gather(-1, order)
                below_ac = torch.cumsum(sorted_weight * sorted_cap, -1) - sorted_weight * sorted_cap
                below_a = torch.cumsum(sorted_weight, -1) - sorted_weight
                whole = sorted_weight.sum(-1, keepdim=True)
                reached = below_ac + sorted_cap * (whole - below_a) >= 1
                first = torch.where(reached.any(-1), reached.float().argmax(-1), flat_cap.shape[-1] - 1)[:, None]
                lam = (1 - below_ac.gather(-1, first)) / (whole - below_a.gather(-1, first)).clamp(min=1e-300)
                w = torch.minimum(cap, lam[..., None])
                # where the room is too small for the shift, the rest goes to every cell alike
                w = torch.where((total < 1)[:, None, None], cap + (1 - total)[:, None, None], w)
        carried_T = torch.where(mask[k], carried_T + w * a_T[:, None, None], 0.0)
        carried_S = torch.where(mask[k], carried_S + w * a_S[:, None, None], 0.0)
        new_T[:, k] = T[:, k] + carried_T
        new_S[:, k] = S[:, k] + carried_S
    return new_T.to(x_T.dtype), new_S.to(x_T.dtype)


# --- datasets ------------------------------------------------------------------------------------


def _resolved_eos(ds: xr.Dataset, eos: str) -> str:
    """``eos``, or for ``"auto"`` the equation of state of the dataset's salinity."""
    return resolve_eos(eos, salinity_kind(ds)) if eos == AUTO_EOS else resolve_eos(eos)


def _check_fields(ds: xr.Dataset) -> None:
    missing = [name for name in ("toce", "soce") if name not in ds.data_vars]
    if missing:
        raise MissingVariableError(
            f"convective adjustment needs toce and soce; the dataset lacks {missing} (found "
            f"{sorted(map(str, ds.data_vars))}). Open NEMO output with xoceandiff.open_nemo."
        )


def convective_adjustment(ds: xr.Dataset, eos: str = AUTO_EOS, *, margin: float = 0.0) -> xr.Dataset:
    """The dataset with ``toce`` and ``soce`` convectively adjusted (:func:`adjust_columns`), lazily.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and the grid (``tmask``, ``e1t``, ``e2t``, ``e3t``).
        Dask-backed fields stay lazy (one task per chunk of records; depth is gathered into one chunk).
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state; ``"auto"`` follows the salinity of ``soce``
        (:func:`xoceandiff.canonical.eos_for`: EOS-80 for practical, TEOS-10 for absolute salinity).
    margin : float, default 0.0
        See :func:`adjust_columns` (0: NEMO's scheme).

    Returns
    -------
    xarray.Dataset
        A copy of ``ds`` with adjusted ``toce`` and ``soce`` (attributes kept, ``eos`` added, history
        stamped); the other variables are untouched.

    Raises
    ------
    MissingVariableError
        ``toce``, ``soce`` or the grid missing.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> cold_top = ds.copy()
    >>> cold_top["toce"] = ds.toce.where(ds.z_c != 0, ds.toce.isel(z_c=0) - 15.0)
    >>> out = convective_adjustment(cold_top)
    >>> bool((out.toce.isel(z_c=0) > cold_top.toce.isel(z_c=0)).any())
    True
    """
    _check_fields(ds)
    name = _resolved_eos(ds, eos)
    volume = cell_volume(ds).transpose(*SPATIAL_DIMS)
    fields = [ds[f].transpose(..., *SPATIAL_DIMS) for f in ("toce", "soce")]
    if any(f.chunks is not None for f in fields):
        fields = [f.chunk({Z: -1}) for f in fields]

    def adjust(t: np.ndarray, s: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return adjust_columns(t, s, v, eos=name, margin=margin)

    core = [[Z], [Z], [Z]]
    toce, soce = xr.apply_ufunc(
        adjust, fields[0], fields[1], volume, input_core_dims=core, output_core_dims=[[Z], [Z]],
        dask="parallelized", output_dtypes=[fields[0].dtype, fields[1].dtype],
    )
    out = ds.copy()
    for field, adjusted in (("toce", toce), ("soce", soce)):
        adjusted = adjusted.transpose(*ds[field].dims)
        out[field] = adjusted.assign_attrs({**ds[field].attrs, "convective_adjustment_eos": name})
    out.attrs = stamp_history(ds.attrs, f"xoceandiff.convection.convective_adjustment(eos={name!r}, margin={margin:g})")
    return out


def adjustment_distance(ds: xr.Dataset, eos: str = AUTO_EOS) -> xr.Dataset:
    r"""How much the convective adjustment changes each record: volume-weighted RMS change per depth band.

    For each record and each band :math:`b` of :data:`xoceandiff.canonical.DEPTH_BANDS` (by the depth of
    the T points),

    .. math::

        d_b(X) = \sqrt{\frac{\sum_{c \in b} V_c\, (X^{adj}_c - X_c)^2}{\sum_{c \in b} V_c}}

    over the ocean cells :math:`c`, with :math:`V` the cell volumes and :math:`X^{adj}` the state after
    :func:`convective_adjustment` (NEMO's neutral scheme, ``margin=0``). A statically stable state
    scores 0; the score is how far a state is from one NEMO's convection would leave alone.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset with ``toce``, ``soce`` and the grid; dask-backed fields give a lazy result.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state (``"auto"``: the dataset's salinity's, :func:`xoceandiff.canonical.eos_for`).

    Returns
    -------
    xarray.Dataset
        On the record dimension: ``convective_distance_toce_<band>`` (units of ``toce``) and
        ``convective_distance_soce_<band>`` (units of ``soce``) for each band name (``0-200m``,
        ``200-1000m``, ``below-1000m``); NaN for a band without ocean.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> distance = adjustment_distance(ds)
    >>> sorted(distance.data_vars)[:2]
    ['convective_distance_soce_0-200m', 'convective_distance_soce_200-1000m']
    >>> float(distance["convective_distance_toce_0-200m"].max()) < 1e-3  # stable by construction
    True
    """
    _check_fields(ds)
    rdim = record_dim(ds)
    name = _resolved_eos(ds, eos)
    adjusted = convective_adjustment(ds, eos=name)
    volume = cell_volume(ds)
    kind = salinity_kind(ds)
    out = xr.Dataset()
    for field in ("toce", "soce"):
        change = (adjusted[field].astype(np.float64) - ds[field].astype(np.float64)).fillna(0.0)
        units = ds[field].attrs.get("units", field_attrs(field, kind).get("units", "1"))
        quantity = "temperature" if field == "toce" else "salinity"
        for band, mask in band_masks(ds).items():
            weights = volume.where(mask, 0.0)
            total = weights.sum(SPATIAL_DIMS)
            mean_square = (weights * change**2).sum(SPATIAL_DIMS) / total.where(total > 0)
            top, bottom = DEPTH_BANDS[band]
            variable = np.sqrt(mean_square).reset_coords(drop=True)
            out[f"convective_distance_{field}_{band}"] = variable.assign_attrs(
                long_name=(
                    f"Volume-weighted RMS change of {quantity} by a conservative convective adjustment, "
                    f"{top:g}-{bottom:g} m"
                ),
                units=units,
                eos=name,
                cell_methods=f"area: depth: root_mean_square (volume-weighted, {band})",
            )
    if rdim in ds.coords:
        out = out.assign_coords({rdim: ds[rdim]})
    out.attrs = {"title": "Convective-adjustment distance by depth band", "eos": name}
    return out
