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
from typing import Any

import cf_xarray
import dask
import numpy as np
import xarray as xr
import xnemogcm

from .canonical import (
    SPATIAL_DIMS,
    SalinityKind,
    X,
    Y,
    Z,
    field_attrs,
    field_dims,
    salinity_kind,
    stamp_history,
)
from .conventions import (
    CALENDARS,
    FIELDS,
    GRID_ATTRS,
    GRID_DIMS,
    PLAUSIBLE_RANGES,
    SALINITY_KIND_OF_STANDARD_NAME,
    TIME_DIM,
    UNITS,
    FieldSpec,
    UnitRule,
)
from .errors import GridMismatchError, InvalidDataError, MissingVariableError
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


# Records per dask chunk when the caller names none: small graphs for decades of output, a few MB a chunk.
_DEFAULT_TIME_CHUNK = 10
# Attributes of NEMO's fields that describe how XIOS/IOIPSL wrote them, not what they hold.
_WRITER_ATTRS = ("online_operation", "interval_operation", "interval_write", "cell_methods", "coordinates")
# A land cell holds "no value" when it is 0 (NEMO) or the fill value (NaN once decoded); anything larger
# than this (in the file's units) is a value.
_LAND_TOLERANCE = 1e-6
_CF_CALENDARS = {*CALENDARS.values(), "gregorian", "365_day", "366_day", "none"}


def _decode_times(ds: xr.Dataset, path: Path, decode_times: Any, notes: list[str]) -> xr.Dataset:
    """Decode the time variables of ``ds`` after mapping NEMO's calendar names to CF's (``360d`` -> ``360_day``)."""
    for name, var in ds.variables.items():
        calendar = var.attrs.get("calendar")
        if not isinstance(calendar, str):
            continue
        cf_name = CALENDARS.get(calendar.strip().lower())
        if cf_name is not None and cf_name != calendar:
            var.attrs["calendar"] = cf_name
            if calendar.strip().lower() not in _CF_CALENDARS:
                notes.append(f"{path.name}: {name} calendar {calendar!r} read as CF's {cf_name!r}")
    try:
        return xr.decode_cf(
            ds, decode_times=decode_times, mask_and_scale=False, concat_characters=False, decode_coords=False,
            decode_timedelta=False,
        )
    except (ValueError, TypeError, OverflowError) as err:
        times = {n: (v.attrs.get("units"), v.attrs.get("calendar")) for n, v in ds.variables.items()
                 if "since" in str(v.attrs.get("units", ""))}
        raise InvalidDataError(
            f"{path.name}: cannot decode the time variables {times} (units, calendar) ({err}). Calendars "
            f"understood: {sorted(CALENDARS)}. Fix the attribute in a copy of the file, or pass "
            "open_kwargs={'decode_times': False} to keep the raw numbers."
        ) from err


def _stored_time_chunk(var: xr.Variable) -> int | None:
    """Records per stored netCDF-4 chunk of ``var`` (None: contiguous or netCDF-3, any cut is free)."""
    sizes = var.encoding.get("chunksizes")
    if not sizes or "time_counter" not in var.dims or var.encoding.get("contiguous"):
        return None
    return int(sizes[var.dims.index("time_counter")])


def _aligned(target: int, stored: int | None, length: int) -> int:
    """The smallest multiple of the stored chunk that holds ``target`` records (at most ``length``)."""
    if stored is None:
        return max(1, min(target, length))
    return max(1, min(-(-target // stored) * stored, length))


def _chunk_like_storage(ds: xr.Dataset, time_chunk: int | None) -> xr.Dataset:
    """Dask chunks that never cut a stored netCDF chunk, then one common time chunking for all variables.

    Every variable is first wrapped in dask with a whole number of its own stored chunks per dask chunk
    (``time_chunk`` records, or ~10 by default, rounded up to the storage); this is what xarray warns about
    when done wrong. The variables are then put on one common time chunking: ``time_chunk`` when the caller
    asked for it, otherwise that of the variable with the most values per record. Both steps are lazy.
    """
    length = ds.sizes.get("time_counter", 1)
    target = time_chunk or _DEFAULT_TIME_CHUNK
    first: dict[str, xr.Variable] = {}
    per_record: dict[str, int] = {}
    for name, var in ds.variables.items():
        if name in ds.indexes:
            continue
        if "time_counter" in var.dims:
            chunk = _aligned(target, _stored_time_chunk(var), length)
            per_record[name] = int(var.size // max(length, 1))
            first[name] = var.chunk({d: (chunk if d == "time_counter" else -1) for d in var.dims})
        else:
            first[name] = var.chunk({d: -1 for d in var.dims})
    ds = ds.assign({n: v for n, v in first.items() if n in ds.data_vars})
    ds = ds.assign_coords({n: v for n, v in first.items() if n in ds.coords})
    if per_record:
        biggest = max(per_record, key=per_record.__getitem__)
        common = time_chunk or int(ds[biggest].chunks[ds[biggest].dims.index("time_counter")][0])
        ds = ds.chunk({"time_counter": min(common, length)})
    return ds


def _open_data_file(
    path: Path, time_chunk: int | None, open_kwargs: Mapping[str, Any] | None = None,
    notes: list[str] | None = None,
) -> xr.Dataset:
    """One NEMO output/restart file, lazily, on NEMO's dimension names (``time_counter, deptht, y, x``).

    ``open_kwargs`` go to :func:`xarray.open_dataset`; ``decode_times`` among them is applied after NEMO's
    calendar names are mapped to CF's. What was changed on the way is appended to ``notes``.
    """
    notes = notes if notes is not None else []
    kwargs = dict(open_kwargs or {})
    if "chunks" in kwargs:
        raise InvalidDataError(
            f"open_kwargs: expected no 'chunks' (found {kwargs['chunks']!r}); pass chunks= to open_nemo on the "
            "canonical dimensions, e.g. chunks={'t': 12}: the file's stored chunks are followed automatically."
        )
    decode_times = kwargs.pop("decode_times", True)
    kwargs.setdefault("decode_timedelta", False)
    kwargs.setdefault("cache", False)  # chunked below: one read per dask chunk, nothing kept in memory
    ds = xr.open_dataset(path, decode_times=False, **kwargs)
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
    # Longitudes/latitudes come from the grid file; bounds variables would only clash when combining.
    bounds = {str(v.attrs["bounds"]) for v in ds.variables.values() if "bounds" in v.attrs}
    drop = [v for v in ds.variables if v in ("nav_lon", "nav_lat", "nav_lev", "x", "y") or v.endswith("_bounds")]
    drop += [v for v in ds.variables if v in bounds or {"bounds", "axis_nbounds", "tbnds", "nbnds"} & set(ds[v].dims)]
    ds = ds.drop_vars(sorted(set(drop)), errors="ignore")
    if decode_times is not False:
        ds = _decode_times(ds, path, decode_times, notes)
    if "time_counter" not in ds.dims:
        ds = ds.expand_dims("time_counter")
    ds = _chunk_like_storage(ds, time_chunk)
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



def _units_rule(name: str, var: xr.DataArray) -> UnitRule | None:
    """The rule of :data:`~xoceandiff.conventions.UNITS` for the units of ``var`` (None: it has no units).

    Raises
    ------
    InvalidDataError
        Units that are not in the table: the message names the variable and the accepted spellings.
    """
    units = var.attrs.get("units")
    if units is None or str(units).strip() == "":
        return None
    table = UNITS[name]
    key = " ".join(str(units).split()).lower()
    for spelling, rule in table.items():
        if spelling.lower() == key:
            return rule
    raise InvalidDataError(
        f"{var.name} ({name}): units {units!r} are not understood. Accepted: {list(table)}. Set the units "
        "attribute of the variable to what the values are in (a copy of the file, or ds[name].attrs['units'] "
        "before canonicalise); open_nemo converts Kelvin, cm and kg/kg (absolute salinity) itself."
    )


def _salinity_of(var: xr.DataArray) -> tuple[SalinityKind, str | None]:
    """Whether ``var`` (the file's salinity) is practical or absolute salinity, and a note when assumed.

    A CF standard name decides; otherwise the units (PSU, "1", "1e-3": practical; g/kg: absolute). A file
    that says neither (NEMO restarts carry no attributes) is taken as absolute salinity, NEMO's default.
    """
    by_name = SALINITY_KIND_OF_STANDARD_NAME.get(str(var.attrs.get("standard_name")))
    rule = _units_rule("soce", var)
    if rule is not None and rule.needs_standard_name and by_name != rule.salinity:
        raise InvalidDataError(
            f"{var.name} (soce): units {var.attrs['units']!r} (a mass fraction) with standard_name "
            f"{var.attrs.get('standard_name')!r}: expected standard_name 'sea_water_absolute_salinity' for a "
            "mass fraction (it is then converted to g kg-1); practical salinity has no mass units. Set "
            "units = 'PSU' (or '1') for practical salinity, or the absolute-salinity standard name."
        )
    if by_name is not None:
        return by_name, None  # type: ignore[return-value]
    if rule is not None and rule.salinity is not None:
        return rule.salinity, None  # type: ignore[return-value]
    return "absolute", f"{var.name}: neither a salinity standard name nor units; taken as absolute salinity"


def _canonical_field(
    name: str, var: xr.DataArray, salinity: SalinityKind
) -> tuple[xr.DataArray, dict[str, Any], str | None]:
    """Field ``name`` read from ``var``: values in canonical units (lazily), its CF attributes, and a note.

    A standard name of the file that CF lists for this field is kept (for soce: one that says practical or
    absolute salinity); any other (IOIPSL's "Temperature", CF's kind-less "sea_water_salinity") is kept as
    ``original_standard_name`` and replaced by the canonical one for this kind of salinity.
    Converted values record the file's units as ``original_units``.
    """
    spec = FIELDS[name]
    source = str(var.name)
    cf = field_attrs(name, salinity)
    found = var.attrs.get("standard_name")
    rule = _units_rule(name, var)
    attrs = {k: v for k, v in var.attrs.items() if k not in _WRITER_ATTRS}
    attrs.update(cf)
    # soce keeps only a standard name that says its kind (salinity_kind reads it): sea_water_salinity is CF
    # but says neither, and becomes the name of the kind the units said.
    keep = SALINITY_KIND_OF_STANDARD_NAME if name == "soce" else spec.standard_names
    if found in keep:
        attrs["standard_name"] = found
    elif found is not None:
        attrs["original_standard_name"] = found
    attrs["original_name"] = source
    note = None
    if rule is None:
        note = f"{source}: no units; taken as {cf['units']!r}"
    elif rule.converts:
        file_units = str(var.attrs["units"])
        var = var * rule.scale if rule.scale != 1.0 else var
        var = var + rule.offset if rule.offset != 0.0 else var
        attrs["original_units"] = file_units
        for key in ("valid_min", "valid_max", "valid_range", "actual_range"):
            attrs.pop(key, None)
        formula = f"x * {rule.scale:g}" if rule.scale != 1.0 else f"x - {-rule.offset:g}"
        note = f"{source} converted from {file_units!r} to {cf['units']!r} ({formula})"
    return var, attrs, note


def canonicalise(
    merged: xr.Dataset, fields: Iterable[str] | None = None, *, periodic_x: bool | None = None
) -> xr.Dataset:
    """Turn an xnemogcm-style Dataset into the canonical xoceandiff Dataset.

    Each field gets its canonical CF attributes for the salinity the file holds: practical salinity
    (``sea_water_practical_salinity``, units ``"1"``) with potential temperature, or absolute salinity
    (``sea_water_absolute_salinity``, ``"g kg-1"``) with conservative temperature, decided by the
    salinity's standard name, else by its units (see :data:`~xoceandiff.conventions.UNITS`). Units are
    checked against that table and converted lazily where they differ (Kelvin, cm, kg/kg).

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
        coordinates; ``attrs["Iperio"]`` set to 0 or 1; conversions in ``attrs["history"]``.

    Raises
    ------
    xoceandiff.errors.MissingVariableError
        None of the fields is found.
    xoceandiff.errors.InvalidDataError
        Units that are not understood, or a mass fraction of salinity whose kind is not said.
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

    notes: list[str] = []
    salinity: SalinityKind = "absolute"
    if "soce" in found:
        salinity, note = _salinity_of(merged[found["soce"]])
        notes += [note] if note else []
    out = xr.Dataset(attrs={})
    for name, source in found.items():
        var, attrs, note = _canonical_field(name, merged[source].reset_coords(drop=True), salinity)
        notes += [note] if note else []
        mask = tmask if FIELDS[name].three_dimensional else tmask.isel(z_c=0, drop=True)
        var = var.where(mask)
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
    if notes:
        out.attrs = stamp_history(out.attrs, "xoceandiff.open_nemo: " + "; ".join(notes))
    return set_cf_attributes(out, periodic_x=periodic_x)


def set_cf_attributes(ds: xr.Dataset, periodic_x: bool) -> xr.Dataset:
    """Attach the CF attributes of the canonical dataset to every variable and coordinate.

    The fields keep a standard name that CF lists for them; units and long names follow the kind of
    salinity that ``soce``'s standard name says (:func:`xoceandiff.canonical.salinity_kind`).
    """
    ds = ds.copy()
    for name, attrs in GRID_ATTRS.items():
        if name in ds.variables:
            ds[name].attrs = dict(attrs)  # one source of truth: the table, not whatever the file said
    kind = salinity_kind(ds)
    for name in FIELDS:
        if name in ds:
            cf = field_attrs(name, kind)
            kept = ds[name].attrs.get("standard_name")
            ds[name].attrs.update(cf)
            if kept in FIELDS[name].standard_names:
                ds[name].attrs["standard_name"] = kept
    ds.attrs["Iperio"] = int(periodic_x)
    ds.attrs.setdefault("Conventions", "CF-1.11")
    return ds


_GRID_MARKERS = ("tmask", "top_level", "bottom_level", "e1t", "glamt")
"""Variables of which a mesh_mask.nc or domain_cfg.nc holds at least one (a data file holds none)."""


def _check_grid_files(mesh_files: list[Path]) -> None:
    """Each file opens as NetCDF and holds grid variables: a clear error for garbage or a data file."""
    for path in mesh_files:
        try:
            with xr.open_dataset(path, decode_times=False) as raw:
                names = list(raw.variables)
        except (OSError, RuntimeError, ValueError) as err:
            raise InvalidDataError(
                f"mesh_mask/domain_cfg {str(path)!r}: not a readable NetCDF file ({' '.join(str(err).split('. ')[0].split())[:300]}). "
                "Pass the mesh_mask.nc or domain_cfg.nc written by NEMO for this configuration."
            ) from err
        if not any(name in names for name in _GRID_MARKERS):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise MissingVariableError(
                f"mesh_mask/domain_cfg {str(path)!r}: expected grid variables (tmask or top_level/bottom_level, "
                f"e1t, glamt, ...), found only {shown}: it looks like a data file. Pass the mesh_mask.nc or "
                "domain_cfg.nc written by NEMO for this configuration (the data files go to open_nemo)."
            )


def open_grid(mesh_mask: PathLike | Iterable[PathLike]) -> xr.Dataset:
    """The canonical grid (coordinates only, no fields) of a ``mesh_mask.nc`` or ``domain_cfg.nc``.

    Raises
    ------
    FileNotFoundError
        A file does not exist.
    xoceandiff.errors.InvalidDataError
        A file is not NetCDF, or its land-sea mask has no ocean cell.
    xoceandiff.errors.MissingVariableError
        A file holds no grid variable (a data file given for the grid), or misses one the grid needs.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> paths = xoceandiff.datasets.dino(n=1, resolution=4.0).oceandiff.to_nemo_files(tempfile.mkdtemp())
    >>> grid = open_grid(paths["mesh_mask"])
    >>> int(grid.tmask.isel(z_c=0).sum()), grid.attrs["Iperio"]
    (753, 1)
    """
    mesh_files = _as_file_list(mesh_mask, "mesh_mask/domain_cfg")
    _check_grid_files(mesh_files)
    domcfg = xnemogcm.open_domain_cfg(files=[str(p) for p in mesh_files])
    out = xr.Dataset(coords=_grid_coordinates(domcfg))
    if not bool(out.tmask.any()):
        raise InvalidDataError(
            f"mesh_mask/domain_cfg {str(mesh_files[0])!r}: tmask has no ocean cell (all land). Pass the "
            "mesh_mask.nc or domain_cfg.nc of the configuration, with its land-sea mask."
        )
    for dim in sorted(GRID_DIMS):
        if dim in domcfg.coords:
            out = out.assign_coords({dim: domcfg[dim].variable})
    return set_cf_attributes(out, periodic_x=is_periodic_x(domcfg.attrs, domcfg.variables))


def _where(flags: np.ndarray, dims: tuple[str, ...], limit: int = 3) -> str:
    """The first ``limit`` cells where ``flags`` is set, as ``(z_c, y_c, x_c) = (k, j, i)`` (0-based)."""
    cells = [tuple(int(i) for i in cell) for cell in np.argwhere(flags)[:limit]]
    more = ", ..." if int(flags.sum()) > limit else ""
    return f"({', '.join(dims)}) = " + ", ".join(map(str, cells)) + more


def _check_land(name: str, source: str, raw: np.ndarray, ocean: np.ndarray, dims: tuple[str, ...]) -> str | None:
    """What in the first record of ``source`` contradicts the mask (None: nothing)."""
    finite = np.isfinite(raw)
    wet_land = ~ocean & finite & (np.abs(np.where(finite, raw, 0.0)) > _LAND_TOLERANCE)
    dry_ocean = ocean & ~finite  # the fill value where the mask says ocean
    if name == "soce":
        dry_ocean |= ocean & finite & (raw == 0.0)  # NEMO's land zeros: no ocean is that fresh
    problems = []
    if wet_land.any():
        problems.append(f"{int(wet_land.sum())} land cells of the mask hold values in {source} ({name}), at "
                        f"{_where(wet_land, dims)}")
    if dry_ocean.any():
        what = "0 or no value" if name == "soce" else "no value (the fill value)"
        problems.append(f"{int(dry_ocean.sum())} ocean cells of the mask hold {what} in {source} ({name}), at "
                        f"{_where(dry_ocean, dims)}")
    return "; ".join(problems) or None


def _likely_cause(name: str, value: float) -> str:
    """A guess at why ``value`` of field ``name`` is implausible, for the error message."""
    if name == "toce" and value > 200:
        return "the values look like Kelvin: set units = 'K' on the variable and open_nemo converts them"
    if name == "toce" and 30 < value < 45:
        return "the values look like salinity: are toce and soce swapped (variable names or standard names)?"
    if name == "soce" and value > 200:
        return "the values look like temperature in Kelvin: are toce and soce swapped?"
    if name == "soce" and 45 < value <= 1000:
        return "salinity in other units (g/L, mg/kg?) or temperature and salinity swapped?"
    if name == "soce" and value < 1:
        return ("the values look like a mass fraction (kg/kg): set units = 'kg kg-1' and standard_name = "
                "'sea_water_absolute_salinity' and open_nemo converts them to g kg-1")
    if name == "ssh" and abs(value) > 10:
        return "the values look like centimetres (or mm): set units = 'cm' (or 'mm') and open_nemo converts them"
    return "a fill value or missing-data code on ocean cells, or another variable read under this name?"


def _check_plausible(name: str, source: str, values: np.ndarray, ocean: np.ndarray, units: str,
                     depths: np.ndarray) -> None:
    """Raise when an ocean value of the first record is outside the field's plausible range."""
    limits = PLAUSIBLE_RANGES[name]
    wet = ocean & np.isfinite(values)
    if not wet.any():
        return
    low, high = float(values[wet].min()), float(values[wet].max())
    deep = wet & (depths[:, None, None] > limits.deep_below) if values.ndim == 3 else np.zeros_like(wet)
    deep_high = float(values[deep].max()) if deep.any() else None
    if high > limits.high or low < limits.low:
        value = high if high > limits.high else low
        expected = f"ocean values within [{limits.low:g}, {limits.high:g}] {units}"
    elif limits.max_at_least is not None and high < limits.max_at_least:
        value = high
        expected = f"an ocean whose largest value reaches at least {limits.max_at_least:g} {units}"
    elif limits.deep_high is not None and deep_high is not None and deep_high > limits.deep_high:
        value = deep_high
        expected = f"at most {limits.deep_high:g} {units} below {limits.deep_below:g} m"
    else:
        return
    cell = tuple(int(i) for i in np.argwhere(wet & (values == value))[0])
    if values.ndim == 3:
        where = f"level z_c = {cell[0]} ({depths[cell[0]]:.0f} m), (y_c, x_c) = {cell[1:]}"
    else:
        where = f"(y_c, x_c) = {cell}"
    raise InvalidDataError(
        f"{name} ({source}): the first record holds {value:.6g} {units} at {where} (ocean values span "
        f"{low:.6g} to {high:.6g}); expected {expected}. Likely cause: {_likely_cause(name, value)}."
    )


def _check_first_record(merged: xr.Dataset, out: xr.Dataset, mesh: Path) -> None:
    """Check the first record against the mask and the plausible ranges (the one eager read of open_nemo).

    NEMO writes 0 (or the fill value) on land: land cells with values, or ocean cells with no value (or
    salinity 0), mean the mesh_mask belongs to another configuration. Then every field's ocean values must
    be physically plausible (:data:`~xoceandiff.conventions.PLAUSIBLE_RANGES`), which catches mislabelled
    units and swapped variables.
    """
    names = [n for n in FIELDS if n in out.data_vars]

    def first(da: xr.DataArray) -> xr.DataArray:
        return da.isel({TIME_DIM: 0}) if TIME_DIM in da.dims else da

    raws = [first(merged[out[n].attrs["original_name"]].reset_coords(drop=True)).transpose(*field_dims(n)).data
            for n in names]
    fields = [first(out[n].reset_coords(drop=True)).data for n in names]
    tmask, depths, *values = dask.compute(out["tmask"].data, out["gdept_1d"].data, *raws, *fields)
    tmask = np.asarray(tmask, dtype=bool)
    raws_np, fields_np = values[: len(names)], values[len(names):]
    problems = []
    for name, raw in zip(names, raws_np, strict=True):
        ocean = tmask if FIELDS[name].three_dimensional else tmask[0]
        problem = _check_land(name, out[name].attrs["original_name"], np.asarray(raw), ocean, field_dims(name))
        problems += [problem] if problem else []
    if problems:
        raise GridMismatchError(
            f"The land-sea mask (tmask) of {str(mesh)!r} does not match the data's land on the first record: "
            + "; ".join(problems) + ". NEMO writes 0 (or the fill value) on land, so these files were written "
            "on another land-sea mask. Pass the mesh_mask.nc (or domain_cfg.nc) of the run that wrote them."
        )
    for name, values_np in zip(names, fields_np, strict=True):
        ocean = tmask if FIELDS[name].three_dimensional else tmask[0]
        _check_plausible(name, out[name].attrs["original_name"], np.asarray(values_np, dtype=np.float64), ocean,
                         out[name].attrs["units"], np.asarray(depths))


def open_nemo(
    files: PathLike | Iterable[PathLike],
    mesh_mask: PathLike | Iterable[PathLike] | None = None,
    *,
    chunks: Mapping[str, int] | None = None,
    open_kwargs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open NEMO output and its grid file as one canonical, lazy Dataset.

    NEMO's own conventions are read as NEMO writes them, without editing the files: IOIPSL's calendar
    names (``360d``, ``365d``, ...) are mapped to CF's before decoding; IOIPSL's non-CF standard names
    (``Temperature``, ``Salinity``) are kept as ``original_standard_name`` and replaced by CF's; units are
    checked against :data:`~xoceandiff.conventions.UNITS` and converted lazily where needed (Kelvin, cm,
    kg/kg), each conversion recorded in ``original_units`` and ``history``. Whether ``soce`` holds
    practical salinity (EOS-80 runs: ``sea_water_practical_salinity``, units ``"1"``, with potential
    temperature) or absolute salinity (TEOS-10: ``sea_water_absolute_salinity``, ``"g kg-1"``, with
    conservative temperature) is read from the file: its standard name, else its units.

    The first record (only that one) is read to check the data against the mesh mask and against
    :data:`~xoceandiff.conventions.PLAUSIBLE_RANGES`; everything else stays lazy.

    Parameters
    ----------
    files : path, glob pattern, or iterable of them
        NEMO output files (3-D and 2-D T-grid files, several time records, split along time or per MPI
        rank), restart files or CMIP-style files.
    mesh_mask : path, glob pattern, or iterable of them, optional
        ``mesh_mask.nc`` or ``domain_cfg.nc`` (or its per-rank pieces). By default the folder of the first
        data file is searched for one.
    chunks : mapping, optional
        Dask chunk sizes on the canonical dimensions, e.g. ``{"t": 10}``. By default about 10 records per
        chunk, rounded up to whole stored netCDF-4 chunks of the files (a file stored 12 records a chunk
        gets 12), so that no stored chunk is read twice and xarray has nothing to warn about.
    open_kwargs : mapping, optional
        Options for :func:`xarray.open_dataset` on each data file (``engine``, ``decode_times``, ...);
        ``decode_times=False`` keeps the raw time numbers. Chunks go through ``chunks``.

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
        The data and the grid file have different shapes, or different land-sea masks.
    xoceandiff.errors.InvalidDataError
        Units that are not understood, a time axis that cannot be decoded, or implausible values on the
        first record (Kelvin labelled as degC, swapped variables, ...).

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> folder = tempfile.mkdtemp()
    >>> paths = xoceandiff.datasets.dino(n=2, resolution=4.0).oceandiff.to_nemo_files(folder)
    >>> ds = xoceandiff.open_nemo([paths["grid_T_3D"], paths["grid_T_2D"]], mesh_mask=paths["mesh_mask"])
    >>> sorted(ds.data_vars)
    ['soce', 'ssh', 'toce']
    >>> ds.toce.attrs["original_name"], ds.soce.attrs["standard_name"]
    ('toce_inst', 'sea_water_absolute_salinity')
    """
    data_files = _as_file_list(files, "NEMO output")
    mesh_files = _as_file_list(mesh_mask, "mesh_mask/domain_cfg") if mesh_mask is not None else _find_mesh_mask(data_files)
    chunks = dict(chunks) if chunks is not None else {}

    _check_grid_files(mesh_files)
    domcfg = xnemogcm.open_domain_cfg(files=[str(p) for p in mesh_files])
    notes: list[str] = []
    pieces = [_open_data_file(path, chunks.get(TIME_DIM), open_kwargs, notes) for path in data_files]
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
    _check_first_record(merged, out, mesh_files[0])
    if notes:
        out.attrs = stamp_history(out.attrs, "xoceandiff.open_nemo: " + "; ".join(dict.fromkeys(notes)))
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


def _check_prefix(prefix: str) -> None:
    """``prefix`` is a plain part of a file name: no folder, no ``..``, nothing a file system refuses."""
    if (not isinstance(prefix, str) or not prefix or prefix in (".", "..") or "/" in prefix or "\\" in prefix
            or os.sep in prefix or (os.altsep or "/") in prefix or any(c in prefix for c in "\0\n\r")):
        raise InvalidDataError(
            f"prefix: expected a plain file-name part (no '/', no '..', no newline), found {prefix!r}. "
            "Give the destination as `folder` and only a name as `prefix`."
        )


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
        File name prefix: a plain name part, without folders (``InvalidDataError`` otherwise).
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

    _check_prefix(prefix)
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
