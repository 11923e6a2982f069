"""Torch stencils and weights of an xgcm grid, on the padded ``(batch, channels, H, W)`` layout.

:class:`GridOps` is derived once from the xgcm grid of a dataset (:func:`xoceandiff.grid.build_grid`)
and a :class:`~xoceandiff.layout.Layout`. Every tensor it needs (masks, cell areas and volumes,
neighbour indices, boundary gathers) is precomputed on the device, so that the operators are a
handful of tensor operations, cheap enough to run after each of the thousands of steps of a sampling
loop.

Conventions, those of the layout and of xgcm:

- a layout tensor has shape ``(..., C, H, W)``; the grid's ``(ny, nx)`` interior occupies rows
  ``south:south+ny`` and columns ``west:west+nx``; the rest is padding;
- channel ``c`` lives on level ``k_c`` of the grid: the kept level of a 3-D field (``toce``,
  ``soce``), the surface for ``ssh``;
- the operators :meth:`GridOps.diff_x`, :meth:`GridOps.interp_x` (and their ``_y`` twins) take a field
  at T points to U (V) points, exactly as ``grid.diff(f, "X")`` and ``grid.interp(f, "X")`` from
  ``x_c`` to ``x_f``: with NEMO's right-shifted faces, ``out[i] = f[i+1] - f[i]`` and
  ``out[i] = (f[i] + f[i+1]) / 2``. Beyond the edge of the *original* grid the axis's padding
  applies: a periodic wrap over the ``nx`` interior columns when ``Iperio = 1``, the fill value (0)
  otherwise, as in :func:`xoceandiff.grid.grid_padding`. Face ``i`` is stored at the position of
  T cell ``i``; outputs are 0 on the padding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import xarray as xr
import xgcm

from .canonical import HORIZONTAL_DIMS, SPATIAL_DIMS, cell_area, cell_volume, ocean_mask
from .errors import GridMismatchError
from .grid import build_grid
from .layout import Layout

__all__ = ["GridOps", "AxisStencil"]


@dataclass(frozen=True, eq=False)
class AxisStencil:
    """The neighbour of every cell along one horizontal axis, in padded coordinates.

    Parameters
    ----------
    index : torch.Tensor
        ``(n,)`` int64: for each padded row (Y) or column (X), the padded position of its neighbour
        across the face xgcm's ``diff`` looks at (itself on the padding and where there is none).
    valid : torch.Tensor
        ``(n,)`` float: 1 where ``index`` points at a real grid cell, 0 where the neighbour lies beyond
        the edge of a non-periodic axis (its value is then ``fill``).
    fill : float
        xgcm's fill value of the axis.
    shift : int
        +1 when the faces are right of the centres (NEMO, ``out = f[i+1] - f[i]``), -1 when left
        (``out = f[i] - f[i-1]``).
    padding : str
        The axis's xgcm padding: ``"periodic"``, ``"fill"`` or ``"extend"``.
    """

    index: torch.Tensor
    valid: torch.Tensor
    fill: float
    shift: int
    padding: str


def _stencil(
    n: int, before: int, after: int, axis: Any, device: torch.device | None, dtype: torch.dtype
) -> AxisStencil:
    """Neighbour indices along one axis of ``n`` grid cells padded by ``before`` and ``after``."""
    padding = str(axis.padding)
    shifts = dict(axis.default_shifts)
    shift = 1 if shifts.get("center") == "right" else -1
    total = before + n + after
    index = np.arange(total)
    valid = np.zeros(total)
    i = np.arange(n)
    neighbour = i + shift
    if padding == "periodic":
        neighbour = neighbour % n
        ok = np.ones(n, dtype=bool)
    elif padding == "extend":
        neighbour = np.clip(neighbour, 0, n - 1)
        ok = np.ones(n, dtype=bool)
    else:  # "fill"
        ok = (neighbour >= 0) & (neighbour < n)
        neighbour = np.where(ok, neighbour, i)
    index[before : before + n] = before + neighbour
    valid[before : before + n] = ok
    fill = axis.fill_value
    return AxisStencil(
        index=torch.as_tensor(index, dtype=torch.long, device=device),
        valid=torch.as_tensor(valid, dtype=dtype, device=device),
        fill=float(0.0 if fill is None else fill),
        shift=shift,
        padding=padding,
    )


def _ocean_neighbours(mask: np.ndarray, axis: int, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Whether the previous and the next cell along ``axis`` of ``mask`` (..., ny, nx) are ocean.

    Beyond the edge of a non-periodic axis there is no ocean.
    """
    if periodic:
        return np.roll(mask, 1, axis=axis), np.roll(mask, -1, axis=axis)
    n = mask.shape[axis]
    pad = [(0, 0)] * mask.ndim
    pad[axis] = (1, 1)
    padded = np.pad(mask, pad, constant_values=False)
    return (
        np.take(padded, np.arange(0, n), axis=axis),
        np.take(padded, np.arange(2, n + 2), axis=axis),
    )


def _zero_gradient_gather(
    mask: np.ndarray, axis: int, periodic: bool, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary cells and the flat gather index that copies into them their interior neighbour.

    ``mask`` is the ocean mask ``(C, ny, nx)``; ``axis`` is 1 (Y) or 2 (X). A cell with land (or the
    edge of a non-periodic axis) on exactly one side takes the value of its neighbour on the other
    side. Where two such cells face each other (a passage two cells wide), the one with land on the
    previous side takes the other's value and the other keeps its own, so that a source is never
    itself a target and one gather is exact. Cells with land on both sides are left alone.

    Returns
    -------
    target : numpy.ndarray
        ``(C, H, W)`` bool, the boundary cells (padded coordinates).
    index : numpy.ndarray
        ``(C, H * W)`` int64, identity except at targets, which point at their source.
    """
    C, ny, nx = mask.shape
    H, W = layout.shape
    (south, _), (west, _) = layout.padding
    prev_ocean, next_ocean = _ocean_neighbours(mask, axis, periodic)
    n = mask.shape[axis]
    takes_next = mask & ~prev_ocean & next_ocean  # land before: take the next cell
    takes_prev = mask & ~next_ocean & prev_ocean  # land after: take the previous cell
    # a previous cell that itself takes the next cell (i.e. this one) is not a valid source
    prev_takes_next = np.roll(takes_next, 1, axis=axis)
    if not periodic:
        first = [slice(None)] * 3
        first[axis] = slice(0, 1)
        prev_takes_next[tuple(first)] = False
    takes_prev &= ~prev_takes_next

    c, j, i = np.meshgrid(np.arange(C), np.arange(ny), np.arange(nx), indexing="ij")
    src_j, src_i = j.copy(), i.copy()
    coord = src_j if axis == 1 else src_i
    coord[takes_next] += 1
    coord[takes_prev] -= 1
    coord %= n  # wraps only matter (and only happen) on a periodic axis
    target = takes_next | takes_prev

    index = np.broadcast_to(np.arange(H * W), (C, H * W)).copy()
    flat_target = (south + j) * W + (west + i)
    flat_source = (south + src_j) * W + (west + src_i)
    index[c[target], flat_target[target]] = flat_source[target]
    padded_target = np.zeros((C, H, W), dtype=bool)
    padded_target[:, south : south + ny, west : west + nx] = target
    return padded_target, index


@dataclass(frozen=True, eq=False)
class GridOps:
    """Masks, weights and stencils of a grid on the padded layout plane, as device tensors.

    Build it with :meth:`from_dataset`; every attribute is computed there, once.

    Attributes
    ----------
    layout : Layout
        The layout the tensors follow.
    channel_levels : tuple of int
        Grid level of each channel (the kept level for ``toce``/``soce``, 0 for ``ssh``).
    interior : torch.Tensor
        ``(H, W)`` bool, True on the ``(ny, nx)`` grid, False on the padding.
    mask : torch.Tensor
        ``(C, H, W)`` bool, ocean cells of each channel's level (``tmask``); False on the padding.
    area : torch.Tensor
        ``(C, H, W)``, cell area ``e1t * e2t`` (m2) on ocean cells, 0 elsewhere.
    area_weight : torch.Tensor
        ``(C, H, W)``, ``area`` divided by its sum over the plane (0 for a channel without ocean):
        the weights of :meth:`average_xy`.
    level_mask : torch.Tensor
        ``(L, H, W)`` bool, ocean cells of each kept level (``L = len(layout.levels)``).
    volume : torch.Tensor
        ``(L, H, W)``, cell volume ``e1t * e2t * e3t`` (m3) of each kept level on ocean cells, 0
        elsewhere.
    total_volume : torch.Tensor
        0-d, the sum of ``volume``.
    n_wet : int
        Number of ocean cells over the kept levels.
    interface_mask : torch.Tensor
        ``(L - 1, H, W)`` bool, columns wet at both kept levels ``k`` and ``k + 1``.
    interface_weight : torch.Tensor
        ``(L - 1, H, W)``, ``volume[k + 1] / total_volume`` where ``interface_mask``, else 0: the
        weight of the interface between kept levels ``k`` and ``k + 1`` in the static-stability
        penalty and metric (the volume of the deeper cell, as in the paper's density error).
    x, y : AxisStencil
        Neighbour indices of the X and Y axes, with the grid's padding.
    boundary_x, boundary_y : torch.Tensor
        ``(C, H, W)`` bool, ocean cells with land or a (non-periodic) domain edge on exactly one
        side along X (Y): the cells :meth:`zero_normal_gradient` overwrites.
    gather_x, gather_y : torch.Tensor
        ``(C, H * W)`` int64 flat gather indices of :meth:`zero_normal_gradient`.

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.layout import Layout
    >>> ds = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> layout = Layout.from_dataset(ds)
    >>> ops = GridOps.from_dataset(ds, layout)
    >>> ops.mask.shape[0], tuple(ops.mask.shape[1:]) == layout.shape, ops.x.padding, ops.y.padding
    (37, True, 'periodic', 'fill')
    >>> x = torch.ones(2, 37, *layout.shape)
    >>> bool(torch.allclose(ops.average_xy(x), torch.ones(2, 37)))
    True
    >>> float(ops.diff_x(x).abs().max())  # a constant has no gradient across a periodic X
    0.0
    """

    layout: Layout
    channel_levels: tuple[int, ...]
    interior: torch.Tensor
    mask: torch.Tensor
    area: torch.Tensor
    area_weight: torch.Tensor
    level_mask: torch.Tensor
    volume: torch.Tensor
    total_volume: torch.Tensor
    n_wet: int
    interface_mask: torch.Tensor
    interface_weight: torch.Tensor
    x: AxisStencil
    y: AxisStencil
    boundary_x: torch.Tensor
    boundary_y: torch.Tensor
    gather_x: torch.Tensor
    gather_y: torch.Tensor

    @classmethod
    def from_dataset(
        cls,
        ds: xr.Dataset,
        layout: Layout,
        *,
        grid: xgcm.Grid | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GridOps:
        """Derive the operators from the xgcm grid of ``ds`` and a layout.

        Parameters
        ----------
        ds : xarray.Dataset
            A canonical dataset, or just its grid: needs ``tmask``, ``e1t``, ``e2t`` and, for a
            layout with 3-D fields, ``e3t`` (or ``e3t_0``, or the 1-D ``e3t_1d``).
        layout : Layout
            The layout of the tensors the operators will act on.
        grid : xgcm.Grid, optional
            The grid of ``ds`` (default :func:`xoceandiff.grid.build_grid`); its X and Y paddings
            (``periodic``, ``fill`` or ``extend``) and fill values define the edges.
        device : str or torch.device, optional
            Where the tensors live (default: the CPU).
        dtype : torch.dtype, default torch.float32
            Floating dtype of the weights; use the dtype of the tensors you will pass.

        Returns
        -------
        GridOps

        Raises
        ------
        xoceandiff.errors.MissingVariableError
            A grid variable is missing.
        xoceandiff.errors.GridMismatchError
            ``ds`` is not on the layout's grid.
        """
        # first, so that a missing grid variable is reported before any size mismatch
        tmask = np.asarray(ocean_mask(ds).transpose(*SPATIAL_DIMS).values)
        area2d = np.asarray(cell_area(ds).transpose(*HORIZONTAL_DIMS).values)
        found = tuple(ds.sizes.get(d) for d in HORIZONTAL_DIMS)
        if found != (layout.ny, layout.nx):
            raise GridMismatchError(
                f"GridOps: the layout is for a grid of ({', '.join(HORIZONTAL_DIMS)}) = "
                f"{(layout.ny, layout.nx)} but the dataset has {found}. Build the layout from data on this grid."
            )
        grid = build_grid(ds) if grid is None else grid
        device = torch.device(device) if device is not None else None
        H, W = layout.shape
        (south, north), (west, east) = layout.padding
        ny, nx = layout.ny, layout.nx
        inner = (slice(south, south + ny), slice(west, west + nx))

        if tmask.shape[0] != layout.n_levels and layout.levels:
            raise GridMismatchError(
                f"GridOps: the layout has {layout.n_levels} levels but tmask has {tmask.shape[0]}."
            )
        levels = list(layout.levels)
        channel_levels: list[int] = []
        for name in layout.fields:
            channel_levels += levels if layout.three_dimensional(name) else [0]
        C = len(channel_levels)

        def pad(values: np.ndarray, fill: float | bool = 0) -> np.ndarray:
            out = np.full(values.shape[:-2] + (H, W), fill, dtype=values.dtype)
            out[(...,) + inner] = values
            return out

        mask = tmask[channel_levels] if C else np.zeros((0, ny, nx), dtype=bool)
        area = np.where(mask, area2d, 0.0)
        total_area = area.sum(axis=(1, 2), keepdims=True)
        area_weight = np.divide(area, total_area, out=np.zeros_like(area), where=total_area > 0)

        level_mask = tmask[levels] if levels else np.zeros((0, ny, nx), dtype=bool)
        if levels:
            if not {"e3t", "e3t_0"} & set(ds.variables) and "e3t_1d" in ds.variables:
                # a z-coordinate grid without partial steps may carry only the 1-D thicknesses
                ds = ds.assign_coords(e3t=ds["e3t_1d"] * xr.ones_like(ds["e1t"]))
            volume = np.asarray(cell_volume(ds).transpose(*SPATIAL_DIMS).values)[levels]
        else:
            volume = np.zeros((0, ny, nx))
        total_volume = float(volume.sum())
        interface_mask = level_mask[:-1] & level_mask[1:]
        interface_weight = np.where(interface_mask, volume[1:], 0.0) / (total_volume or 1.0)

        periodic_x = str(grid.axes["X"].padding) == "periodic"
        periodic_y = str(grid.axes["Y"].padding) == "periodic"
        boundary_y, gather_y = _zero_gradient_gather(mask, 1, periodic_y, layout)
        boundary_x, gather_x = _zero_gradient_gather(mask, 2, periodic_x, layout)

        def tensor(values: np.ndarray, kind: torch.dtype = dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(values), device=device).to(kind)

        interior = np.zeros((H, W), dtype=bool)
        interior[inner] = True
        with torch.inference_mode(False):  # usable by autograd even if built in inference mode
            return cls(
                layout=layout,
                channel_levels=tuple(channel_levels),
                interior=tensor(interior, torch.bool),
                mask=tensor(pad(mask, False), torch.bool),
                area=tensor(pad(area)),
                area_weight=tensor(pad(area_weight)),
                level_mask=tensor(pad(level_mask, False), torch.bool),
                volume=tensor(pad(volume)),
                total_volume=torch.tensor(total_volume, dtype=dtype, device=device),
                n_wet=int(level_mask.sum()),
                interface_mask=tensor(pad(interface_mask, False), torch.bool),
                interface_weight=tensor(pad(interface_weight)),
                x=_stencil(nx, west, east, grid.axes["X"], device, dtype),
                y=_stencil(ny, south, north, grid.axes["Y"], device, dtype),
                boundary_x=tensor(boundary_x, torch.bool),
                boundary_y=tensor(boundary_y, torch.bool),
                gather_x=tensor(gather_x, torch.long),
                gather_y=tensor(gather_y, torch.long),
            )

    # --- housekeeping ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.area.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return self.area.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> GridOps:
        """A copy with the tensors moved to ``device`` and floating tensors cast to ``dtype``."""

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                kind = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
                return value.to(device=device, dtype=kind)
            if isinstance(value, AxisStencil):
                return replace(value, index=move(value.index), valid=move(value.valid))
            return value

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(ny, nx)`` interior of a layout tensor ``(..., H, W)`` (a view)."""
        (south, _), (west, _) = self.layout.padding
        return x[..., south : south + self.layout.ny, west : west + self.layout.nx]

    # --- stencils ----------------------------------------------------------------------------------

    def _neighbour(self, x: torch.Tensor, axis: AxisStencil, dim: int) -> torch.Tensor:
        """The value across each cell's face along ``dim`` (-1: X, -2: Y), with the axis's padding."""
        valid = axis.valid if dim == -1 else axis.valid[:, None]
        across = x.index_select(dim, axis.index) * valid
        if axis.fill != 0.0:
            across = across + axis.fill * (1 - valid)
        return across

    def _diff(self, x: torch.Tensor, axis: AxisStencil, dim: int) -> torch.Tensor:
        across = self._neighbour(x, axis, dim)
        out = across - x if axis.shift > 0 else x - across
        return out * self.interior

    def _interp(self, x: torch.Tensor, axis: AxisStencil, dim: int) -> torch.Tensor:
        return 0.5 * (x + self._neighbour(x, axis, dim)) * self.interior

    def diff_x(self, x: torch.Tensor) -> torch.Tensor:
        r"""Difference from T to U points, xgcm's ``grid.diff(f, "X")``.

        :math:`\delta_x f_{i+1/2} = f_{i+1} - f_i` (right-shifted faces, NEMO's), stored at ``i``;
        beyond the last column the X padding applies (periodic wrap over the ``nx`` grid columns,
        or the fill value). 0 on the padding.

        Parameters
        ----------
        x : torch.Tensor
            ``(..., H, W)`` layout tensor.

        Returns
        -------
        torch.Tensor
            Same shape as ``x``.
        """
        return self._diff(x, self.x, -1)

    def diff_y(self, x: torch.Tensor) -> torch.Tensor:
        r"""Difference from T to V points, xgcm's ``grid.diff(f, "Y")``: :math:`f_{j+1} - f_j`.

        See :meth:`diff_x`; the Y padding applies beyond the last row.
        """
        return self._diff(x, self.y, -2)

    def interp_x(self, x: torch.Tensor) -> torch.Tensor:
        r"""Interpolation from T to U points, xgcm's ``grid.interp(f, "X")``: :math:`(f_i + f_{i+1}) / 2`.

        See :meth:`diff_x` for the edges and the storage.
        """
        return self._interp(x, self.x, -1)

    def interp_y(self, x: torch.Tensor) -> torch.Tensor:
        r"""Interpolation from T to V points, xgcm's ``grid.interp(f, "Y")``: :math:`(f_j + f_{j+1}) / 2`.

        See :meth:`diff_x` for the edges and the storage.
        """
        return self._interp(x, self.y, -2)

    def average_xy(self, x: torch.Tensor) -> torch.Tensor:
        r"""Area-weighted mean over the ocean cells of each channel.

        .. math:: \bar x_c = \frac{\sum_{ij} A_{ij} m_{cij} x_{cij}}{\sum_{ij} A_{ij} m_{cij}},
           \qquad A = e_{1t} e_{2t}

        with :math:`m_c` the ocean mask of the channel's level: xgcm's
        ``grid.average(f.where(tmask), ["X", "Y"])``. Land and padding values do not matter as long
        as they are finite. A channel without ocean has mean 0.

        Parameters
        ----------
        x : torch.Tensor
            ``(..., C, H, W)`` layout tensor.

        Returns
        -------
        torch.Tensor
            ``(..., C)``.
        """
        return (x * self.area_weight).sum(dim=(-2, -1))

    def zero_normal_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """Copy into every boundary cell the value of its interior neighbour: a Y pass, then an X pass.

        A cell with land or the edge of the domain on one side along an axis takes the value of its
        neighbour on the other side (see :attr:`boundary_y`, :attr:`boundary_x`), so that xgcm's
        ``diff`` across the face between them is 0. Across a periodic axis there is no edge. The X
        pass reads the result of the Y pass, so at convex corners both faces come out at 0. Two
        gathers; nothing else changes.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, H, W)`` layout tensor.

        Returns
        -------
        torch.Tensor
            A new tensor of the same shape.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-3], shape[-2] * shape[-1])
        n = flat.shape[0]
        flat = torch.gather(flat, 2, self.gather_y.expand(n, -1, -1))
        flat = torch.gather(flat, 2, self.gather_x.expand(n, -1, -1))
        return flat.reshape(shape)
