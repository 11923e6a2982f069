"""The bridge between ocean states (xarray) and the denoiser's tensors (torch).

A :class:`Layout` says which fields and levels become channels, in which order, and how the horizontal
plane is padded so that the U-Net can halve it several times. :func:`to_tensor` stacks a (normalised)
dataset into ``(records, channels, H, W)``; :func:`from_tensor` is its exact inverse on the kept levels
and brings the dropped levels back by linear interpolation in depth, column by column.

:func:`grid_fingerprint` and :func:`check_fingerprint` tell whether a dataset is on the grid a model was
trained on. This is the only module where xarray meets torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask
import numpy as np
import torch
import xarray as xr

from .canonical import (
    HORIZONTAL_DIMS,
    SPATIAL_DIMS,
    X,
    Y,
    Z,
    field_dims,
    fields_of,
    ocean_mask,
    stamp_history,
)
from .conventions import FIELD_NAMES, FIELDS, GRID_DIMS, SAMPLE_DIM
from .errors import GridMismatchError, InvalidDataError, MissingVariableError
from .normalisation import Normaliser, denormalise, record_dims

__all__ = [
    "Layout",
    "to_numpy",
    "to_tensor",
    "from_tensor",
    "grid_fingerprint",
    "check_fingerprint",
]


def _split(extra: int) -> tuple[int, int]:
    """Padding before/after: the odd cell goes before (south in y, west in x), as in the reference."""
    return extra - extra // 2, extra // 2


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Which fields and levels are channels, and how the plane is padded.

    Parameters
    ----------
    fields : tuple of str
        Canonical fields, in channel order (default ``("toce", "soce", "ssh")``).
    levels : tuple of int
        Levels kept for the 3-D fields (indices along ``z_c``, increasing).
    n_levels : int
        Number of levels of the grid.
    depths : tuple of float
        Depth of every level (``gdept_1d``, m, increasing), used to interpolate dropped levels back.
    ny, nx : int
        Size of the horizontal grid (``y_c``, ``x_c``).
    padding : ((int, int), (int, int))
        Zero padding ``((south, north), (west, east))``.

    Examples
    --------
    >>> import json, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> layout = Layout.from_dataset(ds)
    >>> layout.channels, layout.shape, layout.padding
    (37, (64, 32), ((7, 6), (8, 7)))
    >>> Layout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
    True
    """

    fields: tuple[str, ...] = ("toce", "soce", "ssh")
    levels: tuple[int, ...]
    n_levels: int
    depths: tuple[float, ...]
    ny: int
    nx: int
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))

    def __post_init__(self) -> None:
        fields = tuple(str(f) for f in self.fields)
        levels = tuple(int(k) for k in self.levels)
        depths = tuple(float(d) for d in self.depths)
        padding = tuple(tuple(int(p) for p in pair) for pair in self.padding)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "padding", padding)
        object.__setattr__(self, "n_levels", int(self.n_levels))
        object.__setattr__(self, "ny", int(self.ny))
        object.__setattr__(self, "nx", int(self.nx))
        if not fields or len(set(fields)) != len(fields) or any(f not in FIELDS for f in fields):
            raise InvalidDataError(
                f"Layout.fields: expected distinct canonical fields among {list(FIELD_NAMES)}, found {list(fields)}."
            )
        if self.ny <= 0 or self.nx <= 0 or self.n_levels <= 0:
            raise InvalidDataError(
                f"Layout: ny, nx and n_levels must be positive, found {self.ny}, {self.nx}, {self.n_levels}."
            )
        if len(depths) != self.n_levels or not np.all(np.diff(depths) > 0):
            raise InvalidDataError(
                f"Layout.depths: expected {self.n_levels} increasing depths (gdept_1d), found {list(depths)}."
            )
        if any(self.three_dimensional(f) for f in fields):
            if not levels:
                raise InvalidDataError("Layout.levels: a layout with 3-D fields needs at least one level.")
            if any(b <= a for a, b in zip(levels, levels[1:], strict=False)) or levels[0] < 0 or levels[-1] >= self.n_levels:
                raise InvalidDataError(
                    f"Layout.levels: expected strictly increasing level indices in [0, {self.n_levels}), found {list(levels)}."
                )
        if len(padding) != 2 or any(len(pair) != 2 or min(pair) < 0 for pair in padding):
            raise InvalidDataError(
                f"Layout.padding: expected ((south, north), (west, east)) of non-negative integers, found {self.padding!r}."
            )

    @staticmethod
    def three_dimensional(name: str) -> bool:
        """Whether field ``name`` has levels."""
        return FIELDS[name].three_dimensional

    @property
    def channels(self) -> int:
        """Number of channels: one per kept level of each 3-D field, one per 2-D field."""
        return sum(len(self.levels) if self.three_dimensional(f) else 1 for f in self.fields)

    @property
    def shape(self) -> tuple[int, int]:
        """Padded plane ``(H, W)``."""
        (south, north), (west, east) = self.padding
        return self.ny + south + north, self.nx + west + east

    @property
    def channel_slices(self) -> dict[str, slice]:
        """The channels of each field, e.g. ``{"toce": slice(0, 18), "soce": slice(18, 36), "ssh": slice(36, 37)}``."""
        out, start = {}, 0
        for name in self.fields:
            n = len(self.levels) if self.three_dimensional(name) else 1
            out[name] = slice(start, start + n)
            start += n
        return out

    @property
    def channel_names(self) -> tuple[str, ...]:
        """A name per channel: ``"toce[0]"``, ``"toce[2]"``, ..., ``"ssh"``."""
        return tuple(
            name_k
            for name in self.fields
            for name_k in ([f"{name}[{k}]" for k in self.levels] if self.three_dimensional(name) else [name])
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (with the derived ``channels`` and ``shape`` for readers)."""
        return {
            "fields": list(self.fields),
            "levels": list(self.levels),
            "n_levels": self.n_levels,
            "depths": list(self.depths),
            "ny": self.ny,
            "nx": self.nx,
            "padding": [list(pair) for pair in self.padding],
            "channels": self.channels,
            "shape": list(self.shape),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layout:
        """The layout described by :meth:`to_dict`'s output (derived entries are checked, not trusted)."""
        keys = ("fields", "levels", "n_levels", "depths", "ny", "nx", "padding")
        missing = [k for k in keys if k not in data]
        if missing:
            raise InvalidDataError(f"Layout.from_dict: missing keys {missing}; found {sorted(data)}.")
        layout = cls(**{k: data[k] for k in keys})
        if "channels" in data and int(data["channels"]) != layout.channels:
            raise InvalidDataError(
                f"Layout.from_dict: 'channels' says {data['channels']} but fields and levels give {layout.channels}."
            )
        if "shape" in data and tuple(data["shape"]) != layout.shape:
            raise InvalidDataError(
                f"Layout.from_dict: 'shape' says {tuple(data['shape'])} but the grid and padding give {layout.shape}."
            )
        return layout

    @classmethod
    def from_dataset(
        cls,
        ds: xr.Dataset,
        levels: Literal["every-other", "all"] | Sequence[int] = "every-other",
        multiple: int = 16,
        fields: Sequence[str] | None = None,
    ) -> Layout:
        """The layout of a canonical dataset.

        Parameters
        ----------
        ds : xarray.Dataset
            Canonical dataset (needs ``tmask`` and ``gdept_1d``; data variables only to choose the fields).
        levels : "every-other", "all" or sequence of int
            ``"every-other"`` (the reference): every other wet level starting at the first (0, 2, ..., 34
            on DINO); ``"all"``: every wet level (levels that are land everywhere are never channels);
            or explicit, strictly increasing level indices.
        multiple : int
            Pad y and x up to the next multiple of this. The default, 16, gives the reference's plane:
            199 x 62 becomes 208 x 64 (the U-Net halves it 3 times, and once more would still divide);
            8 is the least the reference U-Net accepts (199 x 62 -> 200 x 64). The odd cell goes south
            (first rows) and west (first columns): 5 rows south, 4 north and 1 column each side at 1°.
        fields : sequence of str, optional
            Fields to stack (default: those of ``toce``, ``soce``, ``ssh`` in ``ds``), in canonical order.

        Returns
        -------
        Layout

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> layout = Layout.from_dataset(ds, levels=[0, 10, 20], fields=["toce", "ssh"])
        >>> layout.channels, layout.channel_names
        (4, ('toce[0]', 'toce[10]', 'toce[20]', 'ssh'))
        """
        for name in ("tmask", "gdept_1d"):
            if name not in ds.variables:
                raise MissingVariableError(
                    f"Layout.from_dataset needs {name!r}, which the dataset lacks. Open the data with "
                    "xoceandiff.open_nemo (with its mesh_mask) to get the grid variables."
                )
        if fields is None:
            names = fields_of(ds)
            if not names:
                raise MissingVariableError(
                    f"The dataset holds none of {list(FIELD_NAMES)}; pass fields= to build a layout from a grid."
                )
        else:
            fields = (fields,) if isinstance(fields, str) else tuple(fields)
            unknown = [f for f in fields if f not in FIELDS]
            if unknown:
                raise InvalidDataError(f"fields: {unknown} are not canonical fields ({list(FIELD_NAMES)}).")
            names = tuple(n for n in FIELD_NAMES if n in fields)
        if int(multiple) != multiple or multiple < 1:
            raise InvalidDataError(f"multiple: expected a positive integer, found {multiple!r}.")
        tmask = ocean_mask(ds).transpose(*SPATIAL_DIMS)
        nz, ny, nx = tmask.shape
        wet = np.flatnonzero(np.asarray(tmask.any(HORIZONTAL_DIMS).values))
        if isinstance(levels, str):
            if levels == "every-other":
                kept = tuple(int(k) for k in wet[::2])
            elif levels == "all":
                kept = tuple(int(k) for k in wet)
            else:
                raise InvalidDataError(
                    f"levels: expected 'every-other', 'all' or a list of level indices, found {levels!r}."
                )
        else:
            kept = tuple(int(k) for k in levels)
        depths = np.asarray(ds["gdept_1d"].values, dtype=np.float64).ravel()
        H = -(-ny // int(multiple)) * int(multiple)
        W = -(-nx // int(multiple)) * int(multiple)
        return cls(
            fields=names,
            levels=kept,
            n_levels=nz,
            depths=tuple(depths.tolist()),
            ny=ny,
            nx=nx,
            padding=(_split(H - ny), _split(W - nx)),
        )


# --- grid checks -----------------------------------------------------------------------------------


def _tmask(ds: xr.Dataset) -> np.ndarray:
    """The 3-D ocean mask as a bool array on ``SPATIAL_DIMS`` (computed)."""
    return np.asarray(ocean_mask(ds).transpose(*SPATIAL_DIMS).values)


def _check_grid(ds: xr.Dataset, layout: Layout, what: str) -> None:
    found = tuple(ds.sizes.get(d) for d in SPATIAL_DIMS)
    expected = (layout.n_levels, layout.ny, layout.nx)
    needs_z = any(layout.three_dimensional(f) for f in layout.fields)
    if found[1:] != expected[1:] or (needs_z and found[0] != expected[0]):
        raise GridMismatchError(
            f"{what}: the layout is for a grid of ({', '.join(SPATIAL_DIMS)}) = {expected} but the dataset has {found}. "
            "Build the layout from data on this grid (Layout.from_dataset) or use the model's grid."
        )


def grid_fingerprint(ds: xr.Dataset) -> dict[str, Any]:
    """Shape and land-sea mask hash of the grid of ``ds``.

    Returns
    -------
    dict
        ``{"shape": [nz, ny, nx], "mask_sha256": <hex digest of tmask as uint8, C order, (z_c, y_c, x_c)>}``,
        JSON-serialisable.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> fingerprint = grid_fingerprint(ds)
    >>> fingerprint["shape"], len(fingerprint["mask_sha256"])
    ([36, 51, 17], 64)
    """
    mask = np.ascontiguousarray(_tmask(ds).astype(np.uint8))
    return {"shape": [int(n) for n in mask.shape], "mask_sha256": hashlib.sha256(mask.tobytes()).hexdigest()}


def check_fingerprint(expected: Mapping[str, Any], ds: xr.Dataset) -> None:
    """Raise if ``ds`` is not on the grid described by ``expected`` (from :func:`grid_fingerprint`).

    Raises
    ------
    xoceandiff.errors.GridMismatchError
        With both shapes, and saying that the land-sea masks differ when only they do.

    Examples
    --------
    >>> import xoceandiff
    >>> coarse = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> check_fingerprint(grid_fingerprint(coarse), coarse)  # same grid: nothing happens
    """
    found = grid_fingerprint(ds)
    shape = [int(n) for n in expected.get("shape", [])]
    if shape != found["shape"]:
        raise GridMismatchError(
            f"Grid mismatch: expected ({', '.join(SPATIAL_DIMS)}) = {tuple(shape)} but the dataset has {tuple(found['shape'])}. "
            "Use data on the grid the model was trained on, or train a model on this grid."
        )
    if expected.get("mask_sha256") != found["mask_sha256"]:
        raise GridMismatchError(
            f"Grid mismatch: same shape ({', '.join(SPATIAL_DIMS)}) = {tuple(shape)} (expected and found) but the land-sea "
            f"masks (tmask) differ: sha256 expected {expected.get('mask_sha256')}, found {found['mask_sha256']}. "
            "Use the mesh_mask of the configuration the model was trained on."
        )


# --- dataset -> tensor -----------------------------------------------------------------------------


def to_numpy(ds: xr.Dataset, layout: Layout, *, dim: str | None = None) -> np.ndarray:
    """Stack a normalised dataset into a float32 array ``(records, channels, H, W)``.

    Channels follow ``layout.fields`` (3-D fields: the kept levels in order); land and padding are 0.
    The data are computed (one dask compute for all fields): call it per batch.

    Parameters
    ----------
    ds : xarray.Dataset
        Normalised dataset on the layout's grid.
    layout : Layout
    dim : str, optional
        Record dimension (default: the one non-spatial dimension of the fields; a dataset without one is a
        single record).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    xoceandiff.errors.GridMismatchError
        ``ds`` is not on the layout's grid.
    xoceandiff.errors.InvalidDataError
        Ocean cells hold NaN, or the fields have several record dimensions.

    Examples
    --------
    >>> import xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> to_numpy(ds, Layout.from_dataset(ds)).shape
    (2, 37, 64, 32)
    """
    _check_grid(ds, layout, "to_tensor")
    missing = [f for f in layout.fields if f not in ds.data_vars]
    if missing:
        raise MissingVariableError(
            f"The layout stacks {list(layout.fields)} but the dataset lacks {missing} (found {sorted(map(str, ds.data_vars))})."
        )
    records = record_dims(ds[layout.fields[0]], dim)
    if len(records) > 1:
        raise InvalidDataError(
            f"to_tensor: the fields have several record dimensions {records}; stack them into one first "
            f"(ds.stack(sample={records})) or pass dim=."
        )
    rec = records[0] if records else None
    tmask = ocean_mask(ds).transpose(*SPATIAL_DIMS)  # raises the missing-mask error first
    levels = list(layout.levels)
    sub = ds[list(layout.fields)].reset_coords(drop=True)
    if Z in sub.dims:
        sub = sub.isel({Z: levels})
    # one compute for the fields and the mask (which is dask-backed when the grid was chunked)
    sub, tmask = dask.compute(sub, tmask)
    mask = np.asarray(tmask.values)
    n = sub.sizes[rec] if rec else 1
    H, W = layout.shape
    (south, _), (west, _) = layout.padding
    out = np.zeros((n, layout.channels, H, W), dtype=np.float32)
    for name, channels in layout.channel_slices.items():
        three_d = layout.three_dimensional(name)
        spatial = field_dims(name)
        da = sub[name]
        if rec and rec not in da.dims:
            raise InvalidDataError(f"{name} has no record dimension {rec!r} (dims {tuple(map(str, da.dims))}).")
        values = np.asarray(da.transpose(*((rec,) if rec else ()), *spatial).values)
        if not rec:
            values = values[None]
        if not three_d:
            values = values[:, None]
        ocean = (mask[levels] if three_d else mask[:1])[None]
        bad = np.isnan(values) & ocean
        if bad.any():
            r, k, j, i = (int(a[0]) for a in np.nonzero(bad))
            where = f"level {levels[k]}, " if three_d else ""
            raise InvalidDataError(
                f"{name}: {int(bad.sum())} ocean cells hold NaN (first at record {r}, {where}{Y}={j}, {X}={i}). "
                "Fill or drop those records, or check that the data and the mask are of the same grid."
            )
        out[:, channels, south : south + layout.ny, west : west + layout.nx] = np.where(ocean, values, 0.0)
    return out


def to_tensor(
    ds: xr.Dataset,
    layout: Layout,
    *,
    dim: str | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Stack a normalised dataset into a float32 tensor ``(records, channels, H, W)``.

    See :func:`to_numpy` for the layout of the channels; the tensor is on the CPU unless ``device`` is given.

    Examples
    --------
    >>> import xoceandiff
    >>> from xoceandiff.normalisation import Normaliser, normalise, statistics
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> normed = normalise(ds, Normaliser.from_statistics(statistics(ds)))
    >>> x = to_tensor(normed, Layout.from_dataset(ds))
    >>> tuple(x.shape), x.dtype, float(x[0, 0, 0, 0])
    ((2, 37, 64, 32), torch.float32, 0.0)
    """
    tensor = torch.from_numpy(to_numpy(ds, layout, dim=dim))
    return tensor if device is None else tensor.to(device)


# --- tensor -> dataset -----------------------------------------------------------------------------


def _as_array(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach()
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()
        return tensor.cpu().numpy()
    arr = np.asarray(tensor)
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)


def _fill_down(values: np.ndarray, axis: int) -> np.ndarray:
    """Replace NaN by the last non-NaN value before it along ``axis`` (forward fill)."""
    out = np.moveaxis(values.copy(), axis, 0)
    for k in range(1, out.shape[0]):
        out[k] = np.where(np.isnan(out[k]), out[k - 1], out[k])
    return np.moveaxis(out, 0, axis)


def _levels_back(kept: np.ndarray, layout: Layout, wet: np.ndarray) -> np.ndarray:
    """All levels from the kept ones, linear in depth over the wet kept levels of each column.

    ``kept`` is (n, K, ny, nx), ``wet`` the mask of the kept levels (K, ny, nx). Above the shallowest and
    below the deepest wet kept level of a column, the values are constant.
    """
    depths = np.asarray(layout.depths)
    levels = list(layout.levels)
    kept_depth = np.where(wet, depths[levels][:, None, None], np.nan)  # (K, ny, nx)
    values = np.where(wet[None], kept, np.nan)
    above, above_depth = _fill_down(values, 1), _fill_down(kept_depth, 0)
    below, below_depth = _fill_down(values[:, ::-1], 1)[:, ::-1], _fill_down(kept_depth[::-1], 0)[::-1]
    n, _, ny, nx = kept.shape
    out = np.empty((n, layout.n_levels, ny, nx), dtype=kept.dtype)
    position = {k: i for i, k in enumerate(levels)}
    for z in range(layout.n_levels):
        if z in position:
            out[:, z] = kept[:, position[z]]
            continue
        j = int(np.searchsorted(depths[levels], depths[z]))  # kept levels [0, j) are shallower than z
        if j == 0:
            out[:, z] = below[:, 0]
            continue
        if j == len(levels):
            out[:, z] = above[:, -1]
            continue
        lo, hi = above[:, j - 1].astype(np.float64), below[:, j].astype(np.float64)
        d_lo, d_hi = above_depth[j - 1], below_depth[j]
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = (depths[z] - d_lo) / (d_hi - d_lo)
            interpolated = lo + weight * (hi - lo)
        interpolated = np.where(np.isnan(hi), lo, np.where(np.isnan(lo), hi, interpolated))
        out[:, z] = interpolated.astype(kept.dtype)
    return out


def from_tensor(
    tensor: torch.Tensor | np.ndarray,
    layout: Layout,
    template: xr.Dataset,
    *,
    dim: str = SAMPLE_DIM,
    normaliser: Normaliser | None = None,
) -> xr.Dataset:
    """Turn ``(records, channels, H, W)`` back into a dataset on the template's grid, with all levels.

    Un-pads, splits the channels into fields, brings the dropped levels back by linear interpolation in
    depth (``gdept_1d``; per column over the wet kept levels, levels below the deepest one take its value,
    levels above the shallowest one take that), and sets land to NaN with the template's ``tmask``. Kept
    levels are exactly the tensor's values.

    Parameters
    ----------
    tensor : torch.Tensor or numpy.ndarray
        ``(records, channels, H, W)`` (or one record ``(channels, H, W)``), normalised values.
    layout : Layout
        The layout that made the tensor.
    template : xarray.Dataset
        Any canonical dataset on the grid (only its grid coordinates are used: ``tmask``, ``e1t``,
        ``e2t``, ``e3t``, ``gdept_1d``, ``glamt``, ``gphit``, the dimension coordinates, ...).
    dim : str
        Name of the record dimension of the result.
    normaliser : Normaliser, optional
        If given, the result is denormalised with it (physical values with CF attributes); otherwise the
        values stay in the tensor's (normalised) space.

    Returns
    -------
    xarray.Dataset
        Fields with dims ``(dim, z_c, y_c, x_c)`` or ``(dim, y_c, x_c)`` (numpy-backed), the template's grid
        coordinates and global attributes, a ``history`` line.

    Raises
    ------
    xoceandiff.errors.GridMismatchError
        The template is not on the layout's grid.
    xoceandiff.errors.InvalidDataError
        The tensor's shape is not ``(records, layout.channels, *layout.shape)``.

    Examples
    --------
    >>> import numpy as np, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> layout = Layout.from_dataset(ds)
    >>> back = from_tensor(to_tensor(ds, layout), layout, ds)
    >>> dict(back.toce.sizes)
    {'sample': 2, 'z_c': 36, 'y_c': 51, 'x_c': 17}
    >>> bool(np.array_equal(back.toce.isel(z_c=4), ds.toce.isel(t=[0, 1], z_c=4), equal_nan=True))
    True
    """
    arr = _as_array(tensor)
    if arr.ndim == 3:
        arr = arr[None]
    expected = (layout.channels, *layout.shape)
    if arr.ndim != 4 or tuple(arr.shape[1:]) != expected:
        raise InvalidDataError(
            f"from_tensor: expected a tensor of shape (records, {', '.join(map(str, expected))}) for this layout, "
            f"found {tuple(arr.shape)}."
        )
    _check_grid(template, layout, "from_tensor")
    if "gdept_1d" in template.variables:
        depths = np.asarray(template["gdept_1d"].values, dtype=np.float64).ravel()
        if depths.shape != (layout.n_levels,) or not np.allclose(depths, layout.depths, rtol=1e-6):
            raise GridMismatchError(
                f"from_tensor: the template's level depths (gdept_1d) differ from the layout's: expected "
                f"{list(np.round(layout.depths, 3))}, found {list(np.round(depths, 3))}."
            )
    mask = _tmask(template)
    (south, _), (west, _) = layout.padding
    plane = arr[:, :, south : south + layout.ny, west : west + layout.nx]
    n = plane.shape[0]

    data_vars: dict[str, xr.Variable] = {}
    for name, channels in layout.channel_slices.items():
        values = plane[:, channels]
        if layout.three_dimensional(name):
            values = _levels_back(values, layout, mask[list(layout.levels)])
            values = np.where(mask[None], values, np.nan).astype(values.dtype)
        else:
            values = np.where(mask[0][None], values[:, 0], np.nan).astype(values.dtype)
        dims = (dim, *field_dims(name))
        attrs: dict[str, Any] = {"long_name": FIELDS[name].long_name}
        if name in template.data_vars and "normalisation" in template[name].attrs:
            attrs = dict(template[name].attrs)
        data_vars[name] = xr.Variable(dims, values, attrs)

    coords: dict[str, Any] = {
        str(k): v.variable for k, v in template.coords.items() if v.dims and set(map(str, v.dims)) <= GRID_DIMS
    }
    coords[dim] = xr.Variable((dim,), np.arange(n), {"long_name": "Sample index"})
    attrs = {k: v for k, v in template.attrs.items() if k not in ("history", "normalisation")}
    # the template's history is its own story, not the samples': they start a new one
    attrs = stamp_history(attrs, f"xoceandiff.from_tensor: {n} records, {layout.channels} channels")
    out = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if normaliser is not None:
        out = denormalise(out, normaliser)
    return out
