"""Reading NEMO output into the canonical xoceandiff Dataset.

NEMO (through XIOS) writes temperature, salinity and sea surface height under many names, on grids
described by a ``mesh_mask.nc`` or ``domain_cfg.nc`` file, sometimes split in one file per MPI rank.
:func:`open_nemo` hides all of that: files are opened lazily, rank pieces and time pieces are combined,
xnemogcm puts every variable on its Arakawa point (``x_c``/``x_f``, ``y_c``/``y_f``, ``z_c``/``z_f``, ``t``),
and the result holds only the canonical fields ``toce``, ``soce``, ``ssh`` with land as NaN, and the grid
variables (masks, scale factors, depths, longitude, latitude) as coordinates with CF attributes.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import cf_xarray
import numpy as np
import xarray as xr
import xnemogcm

from .canonical import SPATIAL_DIMS, X, Y, Z, field_dims
from .conventions import FIELDS, GRID_ATTRS, GRID_DIMS, TIME_DIM, FieldSpec
from .errors import GridMismatchError, MissingVariableError
from .ranks import cut_piece, rank_piece_name, split_ranks

__all__ = ["open_nemo", "open_grid", "canonicalise", "find_field", "is_periodic_x", "GRID_VARIABLES"]

PathLike = str | os.PathLike

# Grid variables kept (as coordinates) in the canonical dataset, when the grid file has them.
GRID_VARIABLES: tuple[str, ...] = (
    "tmask",
    "umask",
    "vmask",
    "e1t",
    "e2t",
    "e1u",
    "e2u",
    "e1v",
    "e2v",
    "e1f",
    "e2f",
    "e3t",
    "e3u",
    "e3v",
    "e3w",
    "gdept_1d",
    "glamt",
    "gphit",
)

# Vertical dimension names of the files NEMO and CMIP tools write, renamed to XIOS's `deptht` so that
# xnemogcm recognises them.
_VERTICAL_DIMS = ("deptht", "nav_lev", "z", "lev", "olevel", "depth")
_TIME_DIMS = ("time_counter", "time", "t")
# Periodicity codes of NEMO < 4.2 (`jperio`) with a cyclic east-west boundary.
_JPERIO_CYCLIC_X = {1, 4, 5, 6, 7}


def _as_file_list(files: PathLike | Iterable[PathLike], what: str) -> list[Path]:
    if isinstance(files, str | os.PathLike):
        files = [files]
    paths: list[Path] = []
    for entry in files:
        entry = os.fspath(entry)
        matches = sorted(glob.glob(entry)) if glob.has_magic(entry) else [entry]
        if not matches:
            raise FileNotFoundError(f"No {what} file matches the pattern {entry!r}.")
        for match in matches:
            path = Path(match).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{what} file not found: {str(path)!r}")
            paths.append(path)
    if not paths:
        raise FileNotFoundError(f"No {what} files were given.")
    return paths


def _find_mesh_mask(data_files: list[Path]) -> list[Path]:
    folder = data_files[0].parent
    found = sorted(folder.glob("*mesh_mask*.nc")) or sorted(folder.glob("*domain_cfg*.nc"))
    if not found:
        raise FileNotFoundError(
            f"No mesh_mask or domain_cfg file was given and none lies beside the data in {str(folder)!r}. "
            "Pass mesh_mask='path/to/mesh_mask.nc' (or domain_cfg.nc)."
        )
    return found


def find_field(ds: xr.Dataset, spec: FieldSpec) -> str | None:
    """Name of the variable of ``ds`` holding the canonical field ``spec``, or None.

    cf-xarray finds the candidates, with ``spec.cf_criteria`` as custom criteria: data variables with
    one of ``spec.standard_names`` as CF ``standard_name``, or named one of ``spec.aliases`` (the names
    NEMO and CMIP use). They are ranked so that a standard name beats an alias (a decoy ``toce`` without
    one loses to a CF-described ``thetao``); among standard-name matches, the one whose name comes first
    in the aliases wins (a restart holds ``tn`` and ``tb``), then the one whose standard name comes
    first; aliases alone are tried in their order.

    Examples
    --------
    >>> import numpy as np
    >>> from xoceandiff.conventions import FIELDS
    >>> ds = xr.Dataset({
    ...     "toce": ("x", np.zeros(2)),
    ...     "tb": ("x", np.zeros(2), {"standard_name": "sea_water_potential_temperature"}),
    ...     "tn": ("x", np.zeros(2), {"standard_name": "sea_water_potential_temperature"}),
    ... })
    >>> find_field(ds, FIELDS["toce"]), find_field(ds, FIELDS["ssh"])
    ('tn', None)
    """
    # cf-xarray is asked about a scalar stand-in of each field that keeps only its standard name: it
    # then neither matches coordinates nor chases (and warns about) the ``coordinates`` and
    # ``cell_measures`` that XIOS writes and that open_nemo drops.
    probe = xr.Dataset(
        {
            name: xr.Variable((), 0, {k: v for k, v in var.attrs.items() if k == "standard_name"})
            for name, var in ds.data_vars.items()
        }
    )
    with cf_xarray.set_options(custom_criteria={spec.name: spec.cf_criteria}):
        try:
            candidates = list(probe.cf[[spec.name]].data_vars)
        except KeyError:  # cf-xarray's way of saying that nothing matches
            return None
    order = {name: i for i, name in enumerate(ds.data_vars)}
    return min(candidates, key=lambda name: _rank(ds[name], spec, order[name]), default=None)


def _rank(var: xr.DataArray, spec: FieldSpec, position: int) -> tuple[int, int, int, int]:
    """Sort key of a candidate of :func:`find_field` (smallest wins)."""
    n_aliases = len(spec.aliases)
    alias = spec.aliases.index(var.name) if var.name in spec.aliases else n_aliases
    standard_name = var.attrs.get("standard_name")
    if standard_name in spec.standard_names:
        return (0, alias, spec.standard_names.index(standard_name), position)
    return (1, alias, 0, position)


def is_periodic_x(attrs: Mapping, variables: Mapping | None = None) -> bool:
    """Whether the grid is cyclic in X according to NEMO's own flags.

    NEMO >= 4.2 writes ``Iperio`` (global attribute or scalar variable); older versions ``jperio``.
    Without either flag the grid is not periodic: xoceandiff never assumes a wrap-around.
    """
    variables = variables or {}
    for key in ("Iperio", "iperio"):
        if key in attrs:
            return int(np.asarray(attrs[key]).ravel()[0]) == 1
        if key in variables:
            return int(np.asarray(variables[key]).ravel()[0]) == 1
    for key in ("jperio",):
        if key in attrs:
            return int(np.asarray(attrs[key]).ravel()[0]) in _JPERIO_CYCLIC_X
        if key in variables:
            return int(np.asarray(variables[key]).ravel()[0]) in _JPERIO_CYCLIC_X
    return False


def _open_data_file(path: Path, time_chunk: int | None) -> xr.Dataset:
    ds = xr.open_dataset(path, chunks={}, decode_timedelta=False)
    rename = {}
    for dim in ds.dims:
        if dim.startswith(("x_grid", "y_grid")) and not dim.endswith("inner"):
            rename[dim] = dim[0]  # XIOS names the axes of some grids x_grid_T, y_grid_T
        elif dim in _VERTICAL_DIMS and dim != "deptht":
            rename[dim] = "deptht"
        elif dim in _TIME_DIMS and dim != "time_counter":
            rename[dim] = "time_counter"
    # Horizontal index variables (x_grid_T, x, ...) carry nothing the grid file does not (they are
    # dropped below anyway); dropping them first renames plain dimensions, without xarray's warning.
    horizontal = {d: n for d, n in rename.items() if n in ("x", "y")}
    if horizontal:
        ds = ds.drop_vars([v for v in (*horizontal, "x", "y") if v in ds.variables]).rename_dims(horizontal)
    ds = ds.rename({d: n for d, n in rename.items() if d not in horizontal})
    if "time_counter" not in ds.dims:
        ds = ds.expand_dims("time_counter")
    if time_chunk:
        ds = ds.chunk({"time_counter": time_chunk})
    # Longitudes/latitudes come from the grid file; bounds variables would only clash when combining.
    drop = [v for v in ds.variables if v in ("nav_lon", "nav_lat", "nav_lev", "x", "y") or v.endswith("_bounds")]
    drop += [v for v in ds.variables if "bounds" in ds[v].dims or "axis_nbounds" in ds[v].dims]
    ds = ds.drop_vars(sorted(set(drop)), errors="ignore")
    # Per-rank pieces (XIOS "multiple_file", NEMO restarts) say where they sit in the global domain.
    first = ds.attrs.get("DOMAIN_position_first", (1, 1))
    x0, y0 = (int(v) for v in np.asarray(first).ravel()[:2])
    ds = ds.assign_coords(x=np.arange(ds.sizes["x"]) + x0 - 1, y=np.arange(ds.sizes["y"]) + y0 - 1)
    if "time_counter" not in ds.coords:
        ds = ds.assign_coords(time_counter=np.arange(ds.sizes["time_counter"]))
    return ds


def _mask_from_levels(domcfg: xr.Dataset) -> xr.DataArray:
    # domain_cfg files (NEMO >= 4) carry top_level/bottom_level (1-based) instead of tmask.
    level = domcfg[Z] + 1
    return (level >= domcfg["top_level"]) & (level <= domcfg["bottom_level"]) & (domcfg["bottom_level"] > 0)


def _grid_coordinates(grid: xr.Dataset) -> dict[str, xr.DataArray]:
    """The canonical grid variables (``GRID_VARIABLES``) of an xnemogcm grid, with ``tmask`` as bool."""
    if "tmask" not in grid:
        if {"top_level", "bottom_level"} <= set(grid.variables):
            grid = grid.assign(tmask=_mask_from_levels(grid).transpose(*SPATIAL_DIMS))
        else:
            raise MissingVariableError(
                "The grid file holds neither 'tmask' nor 'top_level'/'bottom_level': cannot tell land from "
                "ocean. Pass the mesh_mask.nc or domain_cfg.nc of this configuration."
            )
    grid_vars: dict[str, xr.DataArray] = {}
    for name in GRID_VARIABLES:
        source = name
        if name not in grid.variables and f"{name}_0" in grid.variables:
            source = f"{name}_0"  # linear free surface: only the reference thickness exists
        if source in grid.variables:
            grid_vars[name] = grid[source].reset_coords(drop=True)
    if "e3t" not in grid_vars and "e3t_1d" in grid.variables:
        grid_vars["e3t"] = grid["e3t_1d"].broadcast_like(grid["tmask"]).reset_coords(drop=True)
    if "gdept_1d" not in grid_vars and "e3t_1d" in grid.variables:
        # A domain_cfg.nc has thicknesses but no depths: put T points mid-cell below the W level above.
        warnings.warn(
            "gdept_1d: the grid file has no T-level depths; using mid-cell depths from e3t_1d (NEMO's analytic "
            "levels can sit a few % off mid-cell). Pass the mesh_mask.nc for NEMO's own depths.",
            stacklevel=3,
        )
        e3t_1d = grid["e3t_1d"].reset_coords(drop=True)
        grid_vars["gdept_1d"] = e3t_1d.cumsum(Z) - 0.5 * e3t_1d
    for required in ("e1t", "e2t", "e3t", "gdept_1d", "glamt", "gphit"):
        if required not in grid_vars:
            raise MissingVariableError(
                f"The grid file has no '{required}' (nor '{required}_0'): it is needed for cell areas, volumes "
                "and positions. Pass the mesh_mask.nc or domain_cfg.nc written by NEMO for this configuration."
            )
    grid_vars["tmask"] = grid_vars["tmask"].astype(bool)
    return grid_vars



def canonicalise(
    merged: xr.Dataset, fields: Iterable[str] | None = None, *, periodic_x: bool | None = None
) -> xr.Dataset:
    """Turn an xnemogcm-style Dataset into the canonical xoceandiff Dataset.

    Parameters
    ----------
    merged : xarray.Dataset
        NEMO output merged with its grid file, on xnemogcm's dimensions (``t``, ``z_c``, ``y_c``, ``x_c``).
    fields : iterable of str, optional
        Canonical fields to look for (default: all of ``toce``, ``soce``, ``ssh``; those present are kept).
    periodic_x : bool, optional
        Whether X is cyclic; by default read from NEMO's flags in ``merged`` (see :func:`is_periodic_x`).

    Returns
    -------
    xarray.Dataset
        ``toce``, ``soce``, ``ssh`` (those found) with land as NaN and CF attributes; grid variables as
        coordinates; ``attrs["Iperio"]`` set to 0 or 1.
    """
    wanted = tuple(fields) if fields is not None else tuple(FIELDS)
    found: dict[str, str] = {}
    for name in wanted:
        source = find_field(merged, FIELDS[name])
        if source is not None:
            found[name] = source
    if not found:
        looked_for = "; ".join(
            f"{n}: standard_name in {list(FIELDS[n].standard_names)} or a variable named {list(FIELDS[n].aliases)}"
            for n in wanted
        )
        raise MissingVariableError(
            f"None of the canonical fields was found. Looked for {looked_for}. "
            f"Found variables: {sorted(map(str, merged.data_vars))}. Rename your variable or set its "
            "standard_name attribute."
        )

    grid_vars = _grid_coordinates(merged)
    tmask = grid_vars["tmask"]

    out = xr.Dataset(attrs={})
    for name, source in found.items():
        var = merged[source].reset_coords(drop=True)
        mask = tmask if FIELDS[name].three_dimensional else tmask.isel(z_c=0, drop=True)
        var = var.where(mask)
        attrs = dict(var.attrs)
        attrs.update(FIELDS[name].attrs)
        attrs["original_name"] = source
        if var.attrs.get("standard_name") and var.attrs["standard_name"] != FIELDS[name].attrs["standard_name"]:
            attrs["standard_name"] = var.attrs["standard_name"]
        for key in ("online_operation", "interval_operation", "interval_write", "cell_methods", "coordinates"):
            attrs.pop(key, None)
        dims = ((TIME_DIM,) if TIME_DIM in var.dims else ()) + field_dims(name)
        var = var.transpose(*dims)
        var.attrs = attrs
        out[name] = var

    out = out.assign_coords(grid_vars)
    for dim in sorted(GRID_DIMS):
        if dim in merged.coords:
            out = out.assign_coords({dim: merged[dim].variable})
    if TIME_DIM in merged.coords and TIME_DIM in out.dims:
        out = out.assign_coords({TIME_DIM: merged[TIME_DIM]})
    if periodic_x is None:
        periodic_x = is_periodic_x(merged.attrs, merged.variables)
    return set_cf_attributes(out, periodic_x=periodic_x)


def set_cf_attributes(ds: xr.Dataset, periodic_x: bool) -> xr.Dataset:
    """Attach the CF attributes of the canonical dataset to every variable and coordinate."""
    ds = ds.copy()
    for name, attrs in GRID_ATTRS.items():
        if name in ds.variables:
            ds[name].attrs = dict(attrs)  # one source of truth: the table, not whatever the file said
    for name in FIELDS:
        if name in ds:
            ds[name].attrs.update({k: v for k, v in FIELDS[name].attrs.items() if k != "standard_name"})
            ds[name].attrs.setdefault("standard_name", FIELDS[name].attrs["standard_name"])
    ds.attrs["Iperio"] = int(periodic_x)
    ds.attrs.setdefault("Conventions", "CF-1.11")
    return ds


def open_grid(mesh_mask: PathLike | Iterable[PathLike]) -> xr.Dataset:
    """The canonical grid (coordinates only, no fields) of a ``mesh_mask.nc`` or ``domain_cfg.nc``.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> paths = xoceandiff.datasets.dino(n=1, resolution=4.0).oceandiff.to_nemo_files(tempfile.mkdtemp())
    >>> grid = open_grid(paths["mesh_mask"])
    >>> int(grid.tmask.isel(z_c=0).sum()), grid.attrs["Iperio"]
    (753, 1)
    """
    mesh_files = _as_file_list(mesh_mask, "mesh_mask/domain_cfg")
    domcfg = xnemogcm.open_domain_cfg(files=[str(p) for p in mesh_files])
    out = xr.Dataset(coords=_grid_coordinates(domcfg))
    for dim in sorted(GRID_DIMS):
        if dim in domcfg.coords:
            out = out.assign_coords({dim: domcfg[dim].variable})
    return set_cf_attributes(out, periodic_x=is_periodic_x(domcfg.attrs, domcfg.variables))


def open_nemo(
    files: PathLike | Iterable[PathLike],
    mesh_mask: PathLike | Iterable[PathLike] | None = None,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open NEMO output and its grid file as one canonical, lazy Dataset.

    Parameters
    ----------
    files : path, glob pattern, or iterable of them
        NEMO output files (3-D and 2-D T-grid files, several time records, split along time or per MPI
        rank), restart files or CMIP-style files.
    mesh_mask : path, glob pattern, or iterable of them, optional
        ``mesh_mask.nc`` or ``domain_cfg.nc`` (or its per-rank pieces). By default the folder of the first
        data file is searched for one.
    chunks : mapping, optional
        Dask chunk sizes on the canonical dimensions, e.g. ``{"t": 10}`` (the default: 10 records per
        chunk, so that opening 50 years of output builds a small graph and loads nothing).

    Returns
    -------
    xarray.Dataset
        ``toce``, ``soce``, ``ssh`` (those present; the original name in ``attrs["original_name"]``) with
        land as NaN, and ``tmask``, ``e1t``, ``e2t``, ``e3t``, ``gdept_1d``, ``glamt``, ``gphit`` (and the U/V
        scale factors and masks) as coordinates, all with CF attributes.

    Raises
    ------
    FileNotFoundError
        A data or grid file does not exist.
    xoceandiff.errors.MissingVariableError
        None of the canonical fields is in the files.
    xoceandiff.errors.GridMismatchError
        The data and the grid file have different shapes.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> folder = tempfile.mkdtemp()
    >>> paths = xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.to_nemo_files(folder)
    >>> ds = xoceandiff.open_nemo([paths["grid_T_3D"], paths["grid_T_2D"]], mesh_mask=paths["mesh_mask"])
    >>> sorted(ds.data_vars)
    ['soce', 'ssh', 'toce']
    >>> ds.toce.attrs["original_name"]
    'toce_inst'
    """
    data_files = _as_file_list(files, "NEMO output")
    mesh_files = _as_file_list(mesh_mask, "mesh_mask/domain_cfg") if mesh_mask is not None else _find_mesh_mask(data_files)
    chunks = dict(chunks) if chunks is not None else {TIME_DIM: 10}

    domcfg = xnemogcm.open_domain_cfg(files=[str(p) for p in mesh_files])
    pieces = [_open_data_file(path, chunks.get(TIME_DIM)) for path in data_files]
    data = xr.combine_by_coords(
        pieces, combine_attrs="drop_conflicts", data_vars="minimal", coords="minimal", compat="override", join="outer"
    )
    for key in ("DOMAIN_position_first", "DOMAIN_position_last", "DOMAIN_size_local", "DOMAIN_number"):
        data.attrs.pop(key, None)

    data_shape = {"z": data.sizes.get("deptht"), "y": data.sizes["y"], "x": data.sizes["x"]}
    grid_shape = {"z": domcfg.sizes[Z], "y": domcfg.sizes[Y], "x": domcfg.sizes[X]}
    if any(data_shape[k] is not None and data_shape[k] != grid_shape[k] for k in data_shape):
        raise GridMismatchError(
            f"The data files have shape (z, y, x) = {tuple(data_shape.values())} but the grid file "
            f"{str(mesh_files[0])!r} has {tuple(grid_shape.values())}. Pass the mesh_mask/domain_cfg of the "
            "configuration that wrote these files."
        )

    # xnemogcm needs `time_counter` to name its bounds; XIOS always does, other writers may not.
    data = data.drop_vars(["x", "y"])
    data["time_counter"].attrs.setdefault("bounds", "time_counter_bounds")
    nemo_ds = xnemogcm.process_nemo(positions=[(data, "T")], domcfg=domcfg)
    merged = xr.merge([nemo_ds, domcfg], compat="override", combine_attrs="override")
    merged.attrs = {}
    # Periodicity is a property of the grid: only the grid file's flags count.
    out = canonicalise(merged, periodic_x=is_periodic_x(domcfg.attrs, domcfg.variables))
    other = {d: c for d, c in chunks.items() if d != TIME_DIM and d in out.dims}
    if other:
        out = out.chunk(other)
    return out


def _renamed(da: xr.DataArray, mapping: Mapping[str, str]) -> xr.Variable:
    """The bare variable of ``da`` with its dimensions renamed (no coordinates travel with it)."""
    var = da.variable
    return xr.Variable(tuple(mapping.get(d, d) for d in var.dims), var.data, var.attrs)


_TIME_ENCODING = {"units": "seconds since 1900-01-01 00:00:00", "calendar": "gregorian", "dtype": "float64"}


def _nemo_grid_file(ds: xr.Dataset) -> xr.Dataset:
    """The grid variables of a canonical dataset in NEMO's mesh_mask layout (time_counter=1, nav_lev, y, x)."""
    rename = {"z_c": "nav_lev", "z_f": "nav_lev", "y_c": "y", "y_f": "y", "x_c": "x", "x_f": "x"}
    out = xr.Dataset(attrs={"Iperio": int(ds.attrs.get("Iperio", 0)), "Jperio": 0, "file_name": "mesh_mask.nc"})
    for name in GRID_VARIABLES:
        if name not in ds.variables:
            continue
        var = _renamed(ds[name], rename)
        if name.startswith("e3"):
            name = f"{name}_0"
        if name.endswith("mask"):
            var = var.astype("int8")
        out[name] = var.expand_dims("time_counter")
    out["nav_lon"] = _renamed(ds["glamt"], {"y_c": "y", "x_c": "x"}).astype("float32")
    out["nav_lat"] = _renamed(ds["gphit"], {"y_c": "y", "x_c": "x"}).astype("float32")
    out["nav_lev"] = ("nav_lev", ds["gdept_1d"].values.astype("float32"))
    out["e3t_1d"] = ("time_counter", "nav_lev"), (ds["e3t"].where(ds["tmask"]).max(("y_c", "x_c")).fillna(0)).values[None]
    return out


def _xios_grid_t_file(ds: xr.Dataset, prefix: str, kind: str, names: tuple[str, ...]) -> xr.Dataset:
    """The fields ``names`` of ``ds`` as XIOS writes a grid_T file: ``<name>_inst`` float32, land 0."""
    rename = {"t": "time_counter", "z_c": "deptht", "y_c": "y", "x_c": "x"}
    out = xr.Dataset(attrs={"name": f"{prefix}_{kind}", "description": "ocean T grid variables",
                            "Conventions": "CF-1.6 UGRID-1.0"})
    for name in (n for n in names if n in ds):
        var = ds[name].fillna(0.0).reset_coords(drop=True).rename({d: rename[d] for d in ds[name].dims})
        attrs = {k: v for k, v in ds[name].attrs.items() if k in ("standard_name", "units", "long_name")}
        out[f"{name}_inst"] = var.astype("float32").assign_attrs(attrs, online_operation="instant", coordinates="time_counter nav_lat nav_lon")
    out = out.assign_coords(
        nav_lon=_renamed(ds["glamt"], {"y_c": "y", "x_c": "x"}).astype("float32"),
        nav_lat=_renamed(ds["gphit"], {"y_c": "y", "x_c": "x"}).astype("float32"),
    )
    if "t" in ds.coords:
        out = out.assign_coords(time_counter=("time_counter", ds["t"].values, {"standard_name": "time", "axis": "T", "long_name": "Time axis"}))
    if "deptht" in out.dims:
        out = out.assign_coords(deptht=("deptht", ds["gdept_1d"].values.astype("float32"),
                                        {"long_name": "Vertical T levels", "units": "m", "positive": "down", "axis": "Z"}))
    return out


def _write_xios_pieces(out: xr.Dataset, stem: Path, ranks: tuple[int, int] | None, overwrite: bool) -> list[str]:
    """Write ``out`` as ``{stem}.nc``, or as one ``{stem}_NNNN.nc`` per rank (see :mod:`xoceandiff.ranks`)."""
    from .io import write_netcdf_atomic

    encoding = {v: {"_FillValue": None} for v in out.variables}
    if "time_counter" in out.coords:
        encoding["time_counter"] = dict(_TIME_ENCODING, _FillValue=None)
    if ranks is None:
        files = [(out, stem.with_name(f"{stem.name}.nc"))]
    else:
        files = [(cut_piece(out, piece, ranks), stem.with_name(rank_piece_name(stem.name, piece.rank)))
                 for piece in split_ranks(out.sizes["x"], out.sizes["y"], ranks)]
    return [
        str(write_netcdf_atomic(piece, path, overwrite=overwrite, encoding=encoding, unlimited_dims=["time_counter"]))
        for piece, path in files
    ]


def to_nemo_files(
    ds: xr.Dataset,
    folder: str | os.PathLike,
    *,
    prefix: str = "DINO_10d",
    ranks: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> dict[str, str]:
    """Write a canonical dataset as NEMO writes its output: XIOS grid_T files and a mesh_mask.

    Files: ``{prefix}_grid_T_3D.nc`` (``toce_inst``, ``soce_inst``; dims ``time_counter, deptht, y, x``),
    ``{prefix}_grid_T_2D.nc`` (``ssh_inst``) and ``mesh_mask.nc`` (leading ``time_counter`` of length 1,
    ``nav_lev``). Land holds 0, as in NEMO output.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical dataset.
    folder : path
        Destination folder (created if needed).
    prefix : str
        File name prefix.
    ranks : (int, int), optional
        Split the data files into ``ranks[0] x ranks[1]`` (x, y) pieces named ``..._NNNN.nc`` with
        ``DOMAIN_*`` global attributes, as NEMO does with one file per MPI rank (the same cut and
        attributes as the per-rank restarts of :func:`xoceandiff.restart.to_restart`).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict
        Paths of ``grid_T_3D``, ``grid_T_2D`` (the first piece when split) and ``mesh_mask``, and
        ``"pieces"``: every data file written.
    """
    from .io import write_netcdf_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, str] = {}
    pieces_written: list[str] = []
    for kind, names in (("grid_T_3D", ("toce", "soce")), ("grid_T_2D", ("ssh",))):
        if not any(name in ds for name in names):
            continue
        paths = _write_xios_pieces(_xios_grid_t_file(ds, prefix, kind, names), folder / f"{prefix}_{kind}",
                                   ranks, overwrite)
        result[kind] = paths[0]
        pieces_written += paths
    mesh = _nemo_grid_file(ds)
    encoding = {v: {"_FillValue": None} for v in mesh.variables}
    result["mesh_mask"] = str(write_netcdf_atomic(mesh, folder / "mesh_mask.nc", overwrite=overwrite, encoding=encoding))
    result["pieces"] = pieces_written  # type: ignore[assignment]
    return result
