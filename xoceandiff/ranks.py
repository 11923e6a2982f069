"""Per-MPI-rank pieces of a NEMO file: how the domain is cut, what the pieces are called, their attributes.

NEMO (and XIOS with ``multiple_file``) writes one file per MPI rank, named ``..._<rank:04d>.nc``, with
``DOMAIN_*`` global attributes that say where the piece lies in the global domain. Ranks are numbered
with i fastest (``narea = 1 + i + jpni * j``). The two writers of such pieces (NEMO output in
:func:`xoceandiff.nemo.to_nemo_files`, restarts in :func:`xoceandiff.restart.to_restart`) and the
restart checker all use this module, so that a piece is cut, named and described in one way.

This module is a leaf: it knows numpy, xarray and the package's errors, nothing else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import InvalidDataError

__all__ = [
    "RankPiece",
    "split_ranks",
    "domain_attributes",
    "cut_piece",
    "piece_window",
    "rank_piece_name",
    "is_rank_piece_name",
    "rank_of_name",
]

# NEMO opens "<name>_<digits>.nc" as one rank's piece when "<name>.nc" is absent.
_RANK_PIECE_RE = re.compile(r"_(\d+)\.nc$")


@dataclass(frozen=True)
class RankPiece:
    """One rank's window of the global domain (0-based, end-exclusive slices on x and y)."""

    rank: int
    x: slice
    y: slice


def split_ranks(nx: int, ny: int, ranks: tuple[int, int]) -> list[RankPiece]:
    """Cut an ``nx`` by ``ny`` domain into ``ranks[0] x ranks[1]`` (i, j) pieces, ranks numbered i fastest.

    Parameters
    ----------
    nx, ny : int
        Global sizes of the domain.
    ranks : (int, int)
        Number of pieces along x (``jpni``) and y (``jpnj``).

    Returns
    -------
    list of RankPiece
        In rank order; pieces differ in size by at most one cell along each axis.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        A number of pieces below 1 or above the domain's size.

    Examples
    --------
    >>> [(p.rank, p.x.start, p.x.stop, p.y.start, p.y.stop) for p in split_ranks(5, 4, (2, 1))]
    [(0, 0, 3, 0, 4), (1, 3, 5, 0, 4)]
    """
    nrx, nry = (int(r) for r in ranks)
    if nrx < 1 or nry < 1 or nrx > nx or nry > ny:
        raise InvalidDataError(
            f"ranks: expected (nx, ny) with 1 <= nx <= {nx} and 1 <= ny <= {ny}, found {tuple(ranks)!r}; "
            "use at most one rank per grid column and row."
        )
    xs = np.array_split(np.arange(nx), nrx)
    ys = np.array_split(np.arange(ny), nry)
    pieces = []
    for j, yi in enumerate(ys):
        for i, xi in enumerate(xs):
            pieces.append(
                RankPiece(
                    rank=i + nrx * j,
                    x=slice(int(xi[0]), int(xi[-1]) + 1),
                    y=slice(int(yi[0]), int(yi[-1]) + 1),
                )
            )
    return pieces


def domain_attributes(piece: RankPiece, ranks: tuple[int, int], nx: int, ny: int) -> dict[str, Any]:
    """The ``DOMAIN_*`` global attributes NEMO and XIOS write in a rank's piece (1-based positions, no halo).

    Examples
    --------
    >>> attrs = domain_attributes(RankPiece(1, slice(3, 5), slice(0, 4)), (2, 1), 5, 4)
    >>> attrs["DOMAIN_number"], attrs["DOMAIN_position_first"].tolist(), attrs["DOMAIN_position_last"].tolist()
    (1, [4, 1], [5, 4])
    """
    return {
        "DOMAIN_number_total": int(ranks[0] * ranks[1]),
        "DOMAIN_number": int(piece.rank),
        "DOMAIN_dimensions_ids": np.array([1, 2], dtype=np.int32),
        "DOMAIN_size_global": np.array([nx, ny], dtype=np.int32),
        "DOMAIN_size_local": np.array([piece.x.stop - piece.x.start, piece.y.stop - piece.y.start], dtype=np.int32),
        "DOMAIN_position_first": np.array([piece.x.start + 1, piece.y.start + 1], dtype=np.int32),
        "DOMAIN_position_last": np.array([piece.x.stop, piece.y.stop], dtype=np.int32),
        "DOMAIN_halo_size_start": np.array([0, 0], dtype=np.int32),
        "DOMAIN_halo_size_end": np.array([0, 0], dtype=np.int32),
        "DOMAIN_type": "BOX",
    }


def cut_piece(ds: xr.Dataset, piece: RankPiece, ranks: tuple[int, int]) -> xr.Dataset:
    """The piece of ``ds`` (NEMO file layout: dimensions ``x``, ``y``) with its ``DOMAIN_*`` attributes.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"tn": (("y", "x"), np.zeros((4, 5)))})
    >>> part = cut_piece(ds, split_ranks(5, 4, (2, 1))[1], (2, 1))
    >>> dict(part.sizes), int(part.attrs["DOMAIN_number"])
    ({'y': 4, 'x': 2}, 1)
    """
    out = ds.isel(x=piece.x, y=piece.y)
    # a fresh dict: the pieces of one dataset must not share (and overwrite) one attribute mapping
    out.attrs = {**ds.attrs, **domain_attributes(piece, ranks, ds.sizes["x"], ds.sizes["y"])}
    return out


def piece_window(attrs: Mapping[str, Any]) -> tuple[slice, slice] | None:
    """Where a piece lies in the global domain: (y, x) slices from its ``DOMAIN_position_*`` attributes.

    None when the attributes are absent (a global file, or a piece that does not say).

    Examples
    --------
    >>> piece_window({"DOMAIN_position_first": [4, 1], "DOMAIN_position_last": [5, 4]})
    (slice(0, 4, None), slice(3, 5, None))
    """
    if "DOMAIN_position_first" not in attrs or "DOMAIN_position_last" not in attrs:
        return None
    first = np.asarray(attrs["DOMAIN_position_first"]).ravel()
    last = np.asarray(attrs["DOMAIN_position_last"]).ravel()
    return slice(int(first[1]) - 1, int(last[1])), slice(int(first[0]) - 1, int(last[0]))


def rank_piece_name(stem: str, rank: int) -> str:
    """The file name NEMO opens for rank ``rank`` of ``stem``: ``{stem}_{rank:04d}.nc``.

    Examples
    --------
    >>> rank_piece_name("restart_s002_xoceandiff", 5)
    'restart_s002_xoceandiff_0005.nc'
    """
    return f"{stem}_{int(rank):04d}.nc"


def is_rank_piece_name(name: str | os.PathLike) -> bool:
    """Whether NEMO would take a file of this name for one MPI rank's piece (``..._<digits>.nc``).

    Examples
    --------
    >>> is_rank_piece_name("restart_0003.nc"), is_rank_piece_name("restart_s003_xoceandiff.nc")
    (True, False)
    """
    return rank_of_name(name) is not None


def rank_of_name(name: str | os.PathLike) -> int | None:
    """The rank a file name says it holds (``..._<digits>.nc``), or None.

    Examples
    --------
    >>> rank_of_name("restart_0003.nc"), rank_of_name("restart.nc")
    (3, None)
    """
    match = _RANK_PIECE_RE.search(Path(name).name)
    return None if match is None else int(match.group(1))
