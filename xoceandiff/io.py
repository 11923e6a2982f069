"""Writing files safely: every file is written to a temporary name in its folder and renamed on success.

An error (or a kill) mid-write leaves nothing at the target path, and an existing path is only replaced
with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import xarray as xr

from .errors import OutputExistsError

__all__ = ["atomic_path", "write_netcdf_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{str(target)!r} exists; pass overwrite=True (--overwrite on the command line) to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # A dot-name that ends in neither .nc nor _<digits>.nc, so no tool mistakes it for a result.
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_netcdf_atomic(
    ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False, **to_netcdf_kwargs
) -> Path:
    """``ds.to_netcdf`` through :func:`atomic_path` (NETCDF4 format, netCDF4 engine)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", **to_netcdf_kwargs)
    return Path(path)
