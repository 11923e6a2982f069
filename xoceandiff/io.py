"""Writing files safely, and writing CF-compliant NetCDF.

Every file is written to a temporary name in its folder and renamed on success: an error (or a kill)
mid-write leaves nothing at the target path, and an existing path is only replaced with
``overwrite=True``. Temporary names start with a dot and end in ``.part`` (so no tool mistakes them for
a result); they carry the writer's process id, so that one left behind by a killed process is removed
by the next write to the same path.

:func:`to_netcdf` writes any dataset the package produces (training data, samples, normalised fields)
as CF-1.11 NetCDF: CF attributes on every variable, 2-D longitude/latitude as auxiliary coordinates,
depth as the vertical coordinate, land as ``_FillValue``, zlib compression with the dask chunks as
NetCDF chunks, written chunk by chunk.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from .conventions import FIELDS, GRID_ATTRS, PAPER_REFERENCE, SAMPLE_DIM, TIME_DIM
from .errors import OutputExistsError

__all__ = [
    "atomic_path",
    "write_netcdf_atomic",
    "remove_stale_parts",
    "to_netcdf",
    "cf_dataset",
    "FILL_VALUE",
    "VERTICAL_NAME",
]

FILL_VALUE = 1.0e20
"""``_FillValue`` of land cells in the CF files (the value NEMO/XIOS and CMIP use)."""

VERTICAL_NAME = "depth"
"""Name of the vertical dimension and coordinate variable in the CF files (from ``gdept_1d``)."""

# Coordinates kept in CF files; every other grid helper (masks, U/V/F scale factors, x_f, ...) is
# dropped: the mesh_mask of the configuration holds them, and land is already the _FillValue.
_KEPT_COORDS = ("glamt", "gphit")
_PART_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.part$")
_COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}


# --- atomic writes -----------------------------------------------------------------------------------


def _temp_path(target: Path) -> Path:
    # A dot-name that ends in neither .nc nor _<digits>.nc, so no tool mistakes it for a result.
    return target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_parts(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``target`` left behind by writer processes that no longer exist.

    A writer that is killed (``SIGKILL``, power loss) cannot clean up; its ``.part`` file carries its
    process id, so the next write to the same path removes it. Temporary files of live processes are
    left alone.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for candidate in target.parent.glob(f".{_glob_escape(target.name)}.*.part"):
        match = _PART_RE.match(candidate.name)
        if match is None or match["name"] != target.name or _pid_alive(int(match["pid"])):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (``[``, ``*``, ``?``)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{str(target)!r} exists; pass overwrite=True (--overwrite on the command line) to replace it."
        )


def _discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary file (or folder) is removed when the block raises, including on
    ``KeyboardInterrupt``; temporary files of killed writers are removed on the next write.

    Parameters
    ----------
    path : path
        The final path.
    overwrite : bool
        Replace ``path`` if it exists.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    target = Path(path)
    _refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target)
    tmp = _temp_path(target)
    try:
        yield tmp
        if not overwrite:  # someone else may have written it meanwhile
            _refuse_existing(target, overwrite)
        os.replace(tmp, target)
    finally:
        _discard(tmp)


def write_netcdf_atomic(
    ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False, **to_netcdf_kwargs
) -> Path:
    """``ds.to_netcdf`` through :func:`atomic_path` (NETCDF4 format, netCDF4 engine).

    Examples
    --------
    >>> import tempfile, pathlib, xarray as xr
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.nc"
    >>> write_netcdf_atomic(xr.Dataset({"a": ("x", [1.0, 2.0])}), path).name
    'a.nc'
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", **to_netcdf_kwargs)
    return Path(path)


# --- CF datasets ---------------------------------------------------------------------------------------


def _history_line(attrs: Mapping[str, Any], line: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = attrs.get("history")
    return f"{stamp} {line}" + (f"\n{previous}" if previous else "")


def _netcdf_attr(value: Any) -> Any:
    """A global attribute value NetCDF can store (None dropped, bools as ints, the rest as text)."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    if isinstance(value, np.ndarray | list | tuple):
        array = np.asarray(value)
        if array.dtype.kind in "iuf":
            return array
    return str(value)


def _global_attrs(ds: xr.Dataset, line: str) -> dict[str, Any]:
    from . import __version__

    attrs = {k: _netcdf_attr(v) for k, v in ds.attrs.items()}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    attrs["Conventions"] = "CF-1.11"
    if SAMPLE_DIM in ds.dims:
        default_title = "Ocean states generated by a diffusion model (xoceandiff)"
    else:
        default_title = "Ocean states (xoceandiff)"
    attrs["title"] = str(attrs.get("title") or default_title)
    checkpoint = ds.attrs.get("checkpoint_sha256")
    ours = f"xoceandiff {__version__}" + (f", checkpoint sha256 {checkpoint}" if checkpoint else "")
    old_source = str(attrs.get("source") or "")
    has_all = f"xoceandiff {__version__}" in old_source and (not checkpoint or str(checkpoint) in old_source)
    attrs["source"] = old_source if has_all else ours + (f"; {old_source}" if old_source else "")
    old_refs = str(attrs.get("references") or "")
    attrs["references"] = old_refs if PAPER_REFERENCE in old_refs else (
        PAPER_REFERENCE + (f"\n{old_refs}" if old_refs else "")
    )
    attrs["history"] = _history_line(ds.attrs, line)
    return attrs


def cf_dataset(ds: xr.Dataset) -> xr.Dataset:
    """The CF-1.11 form of a dataset of the package, as :func:`to_netcdf` writes it (still lazy).

    - canonical fields (``toce``, ``soce``, ``ssh``) get ``standard_name``, ``units``, ``long_name`` from
      :data:`xoceandiff.conventions.FIELDS`; other data variables keep theirs (``long_name`` defaults
      to the name);
    - the vertical dimension ``z_c`` becomes ``depth``, whose coordinate variable holds ``gdept_1d``
      (``standard_name = "depth"``, ``positive = "down"``, ``axis = "Z"``);
    - ``glamt``/``gphit`` stay as 2-D auxiliary coordinates; the grid indices ``x_c``/``y_c`` and every
      other grid helper (masks, U/V/F scale factors, ``x_f``...) are dropped; ``e1t``, ``e2t``, ``e3t``
      become the cell measures ``cell_area`` and ``cell_volume``;
    - the ``sample`` dimension gets a coordinate variable (``long_name``, ``units = "1"``).

    Global attributes (``Conventions``, ``title``, ``source``, ``history``, ``references``) are set by
    :func:`to_netcdf`, which knows the path.

    Parameters
    ----------
    ds : xarray.Dataset
        A canonical dataset (training data, samples, ...).

    Returns
    -------
    xarray.Dataset
        The dataset to write; dask-backed variables stay lazy.

    Examples
    --------
    >>> import xoceandiff
    >>> cf = cf_dataset(xoceandiff.datasets.dino(n=2, resolution=4.0))
    >>> dict(cf.toce.sizes)
    {'t': 2, 'depth': 36, 'y_c': 51, 'x_c': 17}
    >>> cf.depth.attrs["positive"], cf.depth.attrs["axis"]
    ('down', 'Z')
    """
    out = ds.copy()
    data_names = list(out.data_vars)
    # Cell measures, while the scale factors are still here.
    # (bare Variables: no index coordinate travels with them)
    measures: dict[str, xr.Variable] = {}
    if {"e1t", "e2t"} <= set(out.variables) and {"y_c", "x_c"} <= set(out["e1t"].dims):
        area = out["e1t"].variable * out["e2t"].variable
        area.attrs = {"standard_name": "cell_area", "units": "m2", "long_name": "Horizontal area of T cells"}
        measures["cell_area"] = area
        if "e3t" in out.variables and "z_c" in out["e3t"].dims:
            volume = (area * out["e3t"].variable).transpose("z_c", "y_c", "x_c")
            volume.attrs = {"standard_name": "ocean_volume", "units": "m3", "long_name": "Volume of T cells"}
            measures["cell_volume"] = volume

    keep = set(_KEPT_COORDS) | {TIME_DIM, SAMPLE_DIM}
    drop = [name for name in out.coords if name not in keep]
    depth = out["gdept_1d"].values if "gdept_1d" in out.variables and "z_c" in out.dims else None
    out = out.drop_vars([n for n in drop if n in out.variables])
    for name, var in measures.items():
        out[name] = var
    if depth is not None:
        attrs = dict(GRID_ATTRS["gdept_1d"], axis="Z")
        out = out.rename({"z_c": VERTICAL_NAME}).assign_coords({VERTICAL_NAME: (VERTICAL_NAME, depth, attrs)})
    if SAMPLE_DIM in out.dims:
        if SAMPLE_DIM not in out.coords:
            out = out.assign_coords({SAMPLE_DIM: np.arange(out.sizes[SAMPLE_DIM])})
        attrs = dict(out[SAMPLE_DIM].attrs)
        attrs.setdefault("long_name", "Sample index (random stream)")
        attrs["units"] = "1"
        out[SAMPLE_DIM].attrs = attrs
    if TIME_DIM in out.coords and out[TIME_DIM].dtype.kind == "M":
        out[TIME_DIM].attrs = dict(GRID_ATTRS[TIME_DIM], units_metadata="leap_seconds: none")
    for name in _KEPT_COORDS:
        if name in out.coords:
            out[name].attrs = dict(GRID_ATTRS[name])

    for name in data_names:
        var = out[name]
        attrs = dict(var.attrs)
        if name in FIELDS:
            spec = FIELDS[name].attrs
            if attrs.get("standard_name") not in FIELDS[name].standard_names:
                attrs["standard_name"] = spec["standard_name"]
            attrs["units"] = spec["units"]
            attrs["long_name"] = spec["long_name"]
        attrs.setdefault("long_name", str(name))
        if attrs.get("units") == "degC" and "temperature" in str(attrs.get("standard_name", "")):
            attrs["units_metadata"] = "temperature: on_scale"
        for key in ("coordinates", "_FillValue", "missing_value", "cell_measures"):
            attrs.pop(key, None)
        if {"y_c", "x_c"} <= set(var.dims):
            if VERTICAL_NAME in var.dims and "cell_volume" in out:
                attrs["cell_measures"] = "volume: cell_volume"
            elif VERTICAL_NAME not in var.dims and "cell_area" in out:
                attrs["cell_measures"] = "area: cell_area"
        var.attrs = attrs
    for var in out.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in ("units", "calendar")}
    return out


def _encoding(ds: xr.Dataset, user: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        enc: dict[str, Any] = {}
        is_data = name in ds.data_vars and name not in ("cell_area", "cell_volume")
        if var.dtype.kind == "f":
            enc["_FillValue"] = var.dtype.type(FILL_VALUE) if is_data else None
        if var.ndim > 0 and var.dtype.kind in "fiu":
            enc.update(_COMPRESSION)
            if var.chunks is not None:
                enc["chunksizes"] = tuple(int(c[0]) for c in var.chunks)
        encoding[str(name)] = enc
    for name, extra in (user or {}).items():
        encoding.setdefault(str(name), {}).update(extra)
    return encoding


class _Opaque:
    """Hides a dask collection from dask.delayed, so that a task can compute it itself."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _write_and_rename(job: _Opaque, tmp: Path, target: Path, overwrite: bool) -> Path:
    ds, encoding = job.value
    _refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target)
    try:
        writes = ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding, compute=False)
        writes.compute()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        _refuse_existing(target, overwrite)
        os.replace(tmp, target)
    finally:
        _discard(tmp)
    return target


def to_netcdf(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    compute: bool = True,
    overwrite: bool = False,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path | Delayed:
    """Write a dataset of the package as a CF-1.11, compressed NetCDF4 file, atomically.

    The file holds the form of :func:`cf_dataset`: CF attributes on every variable, ``glamt``/``gphit``
    referenced through ``coordinates``, ``depth`` as the vertical coordinate (positive down), land as
    ``_FillValue`` (:data:`FILL_VALUE`), the ``sample`` dimension described, and the global attributes
    ``Conventions = "CF-1.11"``, ``title``, ``source`` (package version, and checkpoint hash when the
    dataset records one), ``history`` (a new line prepended to the old ones) and ``references`` (the
    paper). Variables are zlib-compressed; the NetCDF chunks of dask-backed variables are their dask
    chunks, and the data are written chunk by chunk (nothing is loaded whole).

    The file is written to a temporary name in the same folder and renamed on success: an error
    (also one raised while computing a dask chunk) leaves nothing at ``path`` and no temporary file.

    Parameters
    ----------
    ds : xarray.Dataset
        Training data (:func:`xoceandiff.datasets.dino`, :func:`xoceandiff.open_nemo`), samples, ...
    path : path
        Output file.
    compute : bool
        Write now (default). With False, nothing is written yet: the returned
        :class:`dask.delayed.Delayed` writes the file and renames it into place when computed.
    overwrite : bool
        Replace an existing ``path``.
    encoding : mapping, optional
        Per-variable NetCDF encoding merged over the defaults (e.g. ``{"toce": {"complevel": 9}}``);
        names are those of the written file (``depth`` for the vertical).

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The path written, or (``compute=False``) a Delayed whose result is that path.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is False (checked again before the final rename).

    Examples
    --------
    >>> import tempfile, pathlib, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dino.nc"
    >>> to_netcdf(ds, path).name
    'dino.nc'
    >>> delayed = to_netcdf(ds, path.with_name("later.nc"), compute=False)
    >>> path.with_name("later.nc").exists()
    False
    >>> delayed.compute().name
    'later.nc'
    """
    target = Path(path)
    _refuse_existing(target, overwrite)
    cf = cf_dataset(ds)
    cf.attrs = _global_attrs(ds, f"xoceandiff.io.to_netcdf: wrote {target.name}")
    enc = _encoding(cf, encoding)
    tmp = _temp_path(target)
    job = _Opaque((cf, enc))
    if compute:
        return _write_and_rename(job, tmp, target, overwrite)
    return dask.delayed(_write_and_rename, pure=False)(job, tmp, target, overwrite)


def open_samples(path: str | os.PathLike, grid: xr.Dataset, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Open a file written by :func:`to_netcdf` back into the canonical form, on ``grid``.

    The CF file drops the grid helpers (masks, U/V scale factors, index coordinates); they come back
    from ``grid`` (any canonical dataset or :func:`xoceandiff.nemo.open_grid` result on the same grid).

    Raises
    ------
    xoceandiff.errors.GridMismatchError
        The file and ``grid`` have different shapes.

    Examples
    --------
    >>> import tempfile, pathlib, xoceandiff
    >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> path = to_netcdf(ds, pathlib.Path(tempfile.mkdtemp()) / "data.nc")
    >>> back = open_samples(path, ds)
    >>> bool((back.toce == ds.toce).sum() == ds.toce.notnull().sum())
    True
    """
    from .errors import GridMismatchError

    raw = xr.open_dataset(path, chunks=dict(chunks) if chunks is not None else {}, decode_timedelta=False)
    if VERTICAL_NAME in raw.dims:
        raw = raw.rename({VERTICAL_NAME: "z_c"})
    file_shape = tuple(raw.sizes.get(d) for d in ("z_c", "y_c", "x_c"))
    grid_shape = tuple(grid.sizes.get(d) for d in ("z_c", "y_c", "x_c"))
    if file_shape != grid_shape:
        raise GridMismatchError(
            f"{str(path)!r} holds fields of shape (z, y, x) = {file_shape} but the grid given has {grid_shape}. "
            "Pass the mesh_mask (or data) of the configuration the samples were made for."
        )
    fields = [name for name in FIELDS if name in raw.data_vars]
    out = raw[fields].drop_vars([c for c in ("z_c", "glamt", "gphit") if c in raw.coords])
    coords = {name: grid[name].variable for name in grid.coords if set(grid[name].dims) <= {"x_c", "x_f", "y_c", "y_f", "z_c", "z_f"}}
    out = out.assign_coords(coords)
    for name in fields:
        out[name].attrs = {k: v for k, v in raw[name].attrs.items() if k not in ("cell_measures", "units_metadata")}
    out.attrs = dict(raw.attrs)
    out.attrs["Iperio"] = int(grid.attrs.get("Iperio", 0))
    return out
