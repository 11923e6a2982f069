"""Generated ocean states as files NEMO starts from: restarts and initial states.

NEMO reads a restart by position, not by name, with rules that a plain
:meth:`xarray.Dataset.to_netcdf` breaks (see :mod:`xoceandiff.restart_format`). :func:`to_restart`
writes one restart per generated state (fresh, or from a template restart, optionally cut into
per-rank pieces) and :func:`to_initial_state` the land-filled ("nomask") temperature and salinity files
of ``ln_tsd_init``. Both first plan every output (an :class:`OutputPlan`), refuse existing files up
front, and write all of them atomically or none.

The checker :func:`~xoceandiff.restart_check.check_restart`, the velocities
:func:`~xoceandiff.dynamics.thermal_wind` and the rules of :mod:`xoceandiff.restart_format` are
re-exported here, so that ``from xoceandiff.restart import check_restart`` keeps working.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import netCDF4
import numpy as np
import xarray as xr

from .atomic import atomic_path, refuse_existing
from .canonical import (
    SPATIAL_DIMS,
    TIME_DIM,
    field_attrs,
    field_dims,
    record_dim,
    salinity_kind,
    stamp_history,
)
from .dynamics import GRAVITY, OMEGA, RHO0, thermal_wind
from .errors import GridMismatchError, InvalidDataError, MissingVariableError
from .ranks import RankPiece, cut_piece, rank_piece_name, split_ranks
from .restart_check import check_plausible, check_restart
from .restart_format import (
    DEFAULT_NEMO_VERSION,
    NEMO_VERSIONS,
    RESTART_DIMS_2D,
    RESTART_DIMS_3D,
    RESTART_VARIABLES,
    MeshInfo,
    NemoVersion,
    PathLike,
    RunSettings,
    _fortran_string,
    check_version,
    is_rank_piece_name,
    read_mesh,
    restart_file_name,
    settings_from_namelist,
    settings_from_template,
)

__all__ = [
    "NEMO_VERSIONS",
    "DEFAULT_NEMO_VERSION",
    "DEFAULT_RDT",
    "RESTART_VARIABLES",
    "OMEGA",
    "GRAVITY",
    "RHO0",
    "RestartOptions",
    "resolve_options",
    "check_plausible",
    "OutputPlan",
    "PlannedState",
    "to_restart",
    "to_initial_state",
    "check_restart",
    "thermal_wind",
    "restart_file_name",
    "is_rank_piece_name",
    "read_mesh",
    "MeshInfo",
]

Velocities = Literal["rest", "thermal_wind"]
_DEFAULT_DATE = 19000101  # NEMO's own default nn_date0
DEFAULT_RDT = 3600.0
"""The time step (s) written as ``rdt`` when neither the caller, a template nor a namelist tells."""
_TEMPLATE_STATE = ("tn", "sn", "tb", "sb", "sshn", "sshb", "ssha")
_TEMPLATE_VELOCITIES = ("un", "vn", "ub", "vb", "uu_n", "vv_n")
_RUN_SETTINGS = ("nemo_version", "rdt", "kt", "ndastp", "adatrj", "ntime")


# --- options and output plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartOptions:
    """The validated settings of :func:`to_restart` (see there for their meaning).

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        An unknown NEMO version or velocity mode, a negative ``kt``, or ``ranks`` with a template or
        NEMO 4.0.

    Examples
    --------
    >>> RestartOptions(nemo_version="5.0", kt=10).velocity_mode
    'rest'
    >>> RestartOptions(kt=-1)
    Traceback (most recent call last):
    ...
    xoceandiff.errors.InvalidDataError: kt: expected a non-negative time step index, found -1.
    """

    nemo_version: str = DEFAULT_NEMO_VERSION
    kt: int = 0
    ndastp: int | None = None
    rdt: float = DEFAULT_RDT
    adatrj: float | None = None
    ntime: int = 0
    velocities: Velocities | None = None
    eos: str = "auto"
    prefix: str = "restart"
    ranks: tuple[int, int] | None = None
    template: Path | None = None
    namelist: Path | None = None
    sources: tuple[tuple[str, str], ...] = ()  # (setting, where its value came from), for the namelist output
    overwrite: bool = False

    def __post_init__(self) -> None:
        version = check_version(self.nemo_version)
        object.__setattr__(self, "nemo_version", version)
        if self.velocities not in (None, "rest", "thermal_wind"):
            raise InvalidDataError(f"velocities: expected 'rest' or 'thermal_wind', found {self.velocities!r}.")
        if self.template is not None and self.ranks is not None:
            raise InvalidDataError("ranks: per-rank pieces are not written from a template; write the global file.")
        if self.ranks is not None and version == "4.0":
            raise InvalidDataError(
                "ranks: NEMO 4.0 pieces hold halos; write the global file (it works with any decomposition)."
            )
        if int(self.kt) != self.kt or self.kt < 0:
            raise InvalidDataError(f"kt: expected a non-negative time step index, found {self.kt!r}.")
        if not (np.isfinite(self.rdt) and self.rdt > 0):
            raise InvalidDataError(f"rdt: expected a positive time step in seconds (NEMO's rn_Dt), found {self.rdt!r}.")
        if self.ndastp is not None and not _is_date(self.ndastp):
            raise InvalidDataError(
                f"ndastp: expected a date yyyymmdd (e.g. 19000101, or 510101 for year 51), found {self.ndastp!r}."
            )

    @property
    def velocity_mode(self) -> str:
        """``"rest"``, ``"thermal_wind"``, or ``"template"`` (the template's velocities are kept)."""
        return self.velocities or ("template" if self.template is not None else "rest")

    @property
    def leapfrog(self) -> bool:
        """Whether the version reads "before" fields (NEMO 4.x) besides the "now" ones."""
        return self.nemo_version != "5.0"

    def source_of(self, name: str) -> str:
        """Where the value of setting ``name`` came from (``"given"`` when not recorded)."""
        return dict(self.sources).get(name, "given")


def _is_date(value: Any) -> bool:
    try:
        date = int(value)
    except (TypeError, ValueError):
        return False
    return date == value and date > 0 and 1 <= date // 100 % 100 <= 12 and 1 <= date % 100 <= 31


def _agrees(name: str, given: Any, found: Any) -> bool:
    if name == "nemo_version":  # 4.0 and 4.2 read the same variables: a template tells 4.x from 5.0
        return (given == "5.0") == (found == "5.0")
    return bool(np.isclose(float(given), float(found), rtol=1e-9, atol=1e-9))


def _template_conflict(name: str, given: Any, found: Any, settings: RunSettings) -> InvalidDataError:
    if name == "nemo_version":
        return InvalidDataError(
            f"nemo_version: {given!r} given, but the {settings.source} is a NEMO {found} restart "
            f"({settings.version_reason}). Leave nemo_version out (the template's is used), or pass a template "
            f"of a NEMO {given} run."
        )
    return InvalidDataError(
        f"{name}: {given!r} given, but the {settings.source} has {name} = {found!r}, and each restart is a copy of "
        f"the template that keeps it. Leave {name} out (the template's is used), or pass a template with "
        f"{name} = {given!r}."
    )


def resolve_options(
    *,
    template: PathLike | None = None,
    namelist: PathLike | None = None,
    nemo_version: str | None = None,
    kt: int | None = None,
    ndastp: int | None = None,
    rdt: float | None = None,
    adatrj: float | None = None,
    ntime: int | None = None,
    **others: Any,
) -> RestartOptions:
    """The :class:`RestartOptions` for the run that will read the restarts.

    Each of ``nemo_version``, ``rdt``, ``kt``, ``ndastp``, ``adatrj`` and ``ntime`` is taken, in this order,
    from the argument when given, the ``template`` restart (its 0-d variables; its version from its
    "before" fields), the ``namelist`` (``rn_Dt``/``rn_rdt``, ``nn_date0``, ``nn_it000 - 1``; ``rn_rdt``
    hints NEMO 4.0), else the defaults: :data:`DEFAULT_NEMO_VERSION` (5.0), :data:`DEFAULT_RDT` (3600 s),
    ``kt = 0``, the state's own date or 19000101. Where each value came from is kept in
    :attr:`RestartOptions.sources` and written in the namelist output.

    Parameters
    ----------
    template, namelist : path, optional
        A restart of the run (each output is a copy of it), and its ``namelist_cfg``.
    nemo_version, kt, ndastp, rdt, adatrj, ntime : optional
        Explicit values (see :func:`to_restart`); they override the namelist's.
    **others
        The other fields of :class:`RestartOptions` (``velocities``, ``prefix``, ``ranks``, ...).

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        Invalid values, or an explicit value that contradicts the template (the copies keep the template's
        scalars, and a NEMO 4.x version needs a template with "before" fields).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "namelist_cfg"
    >>> _ = path.write_text("&namrun\\n  nn_date0 = 00510101\\n/\\n&namdom\\n  rn_Dt = 14400.\\n/\\n")
    >>> options = resolve_options(namelist=path, rdt=7200.0)
    >>> options.nemo_version, options.rdt, options.ndastp
    ('5.0', 7200.0, 510101)
    >>> options.source_of("nemo_version"), options.source_of("ndastp")  # doctest: +ELLIPSIS
    ('default (no template, namelist or nemo_version told)', "namelist '...namelist_cfg' (nn_date0)")
    """
    explicit = {"nemo_version": None if nemo_version is None else check_version(nemo_version), "kt": kt,
                "ndastp": ndastp, "rdt": rdt, "adatrj": adatrj, "ntime": ntime}
    template = None if template is None else Path(template)
    namelist = None if namelist is None else Path(namelist)
    # the arguments alone first: an invalid one is refused before any file is read
    RestartOptions(**{k: v for k, v in explicit.items() if v is not None}, template=template, **others)
    from_template = settings_from_template(template) if template is not None else None
    from_namelist = settings_from_namelist(namelist) if namelist is not None else None
    namelist_names = {"rdt": "rn_Dt/rn_rdt", "ndastp": "nn_date0", "kt": "nn_it000 - 1"}
    values: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    for name in _RUN_SETTINGS:
        given = explicit[name]
        in_template = None if from_template is None else getattr(from_template, name)
        in_namelist = None if from_namelist is None else getattr(from_namelist, name)
        if given is not None and in_template is not None and not _agrees(name, given, in_template):
            raise _template_conflict(name, given, in_template, from_template)  # type: ignore[arg-type]
        if given is not None:
            values[name], source = given, "given"
        elif in_template is not None:
            values[name], source = in_template, from_template.source  # type: ignore[union-attr]
            if name == "nemo_version":
                source += f": {from_template.version_reason}"  # type: ignore[union-attr]
        elif in_namelist is not None:
            values[name] = in_namelist
            source = from_namelist.source + (  # type: ignore[union-attr]
                f": {from_namelist.version_reason}" if name == "nemo_version"  # type: ignore[union-attr]
                else f" ({namelist_names.get(name, name)})"
            )
        else:
            source = {
                "nemo_version": "default (no template, namelist or nemo_version told)",
                "rdt": f"default {DEFAULT_RDT:g} s (no template, namelist or rdt told)",
                "kt": "default",
                "ndastp": f"the state's date, else {_DEFAULT_DATE}",
                "adatrj": "kt * rdt / 86400",
                "ntime": "default",
            }[name]
        sources.append((name, source))
    if from_namelist is not None and from_namelist.ln_rstart is False:
        sources.append(("ln_rstart", f"{from_namelist.source} sets ln_rstart = .false.: set it to .true."))
    return RestartOptions(**values, template=template, namelist=namelist, sources=tuple(sources), **others)


class PlannedFile(NamedTuple):
    """One file to write: its path, and the rank's window when it is a per-rank piece."""

    path: Path
    piece: RankPiece | None = None


@dataclass(frozen=True)
class PlannedState:
    """The files of one state: ``index`` along the record dimension (None for a single state)."""

    index: int | None
    stem: str  # the global file name without .nc, what the namelist names
    files: tuple[PlannedFile, ...]


@dataclass(frozen=True)
class OutputPlan:
    """Every file a writer will produce, known before anything is written (all or nothing)."""

    states: tuple[PlannedState, ...]
    namelist: Path

    @property
    def paths(self) -> list[Path]:
        """The data files, in state order (not the namelist)."""
        return [file.path for state in self.states for file in state.files]

    def refuse_existing(self, overwrite: bool) -> None:
        """Raise :class:`~xoceandiff.errors.OutputExistsError` before writing when any output exists."""
        for path in [*self.paths, self.namelist]:
            refuse_existing(path, overwrite)


def _plan_restarts(indices: Sequence[int | None], folder: Path, options: RestartOptions,
                   shape: tuple[int, int, int]) -> OutputPlan:
    """One global file per state, or its per-rank pieces."""
    pieces = split_ranks(shape[2], shape[1], options.ranks) if options.ranks is not None else None
    states = []
    for index in indices:
        stem = restart_file_name(options.prefix, index)[: -len(".nc")]
        if pieces is None:
            files: tuple[PlannedFile, ...] = (PlannedFile(folder / f"{stem}.nc"),)
        else:
            files = tuple(PlannedFile(folder / rank_piece_name(stem, p.rank), p) for p in pieces)
        states.append(PlannedState(index, stem, files))
    return OutputPlan(tuple(states), folder / "namelist_restart.txt")


# --- states ----------------------------------------------------------------------------------------------


def _indices(ds: xr.Dataset) -> list[int | None]:
    dim = record_dim(ds, required=False)
    return [None] if dim is None else list(range(ds.sizes[dim]))


def _states(ds: xr.Dataset) -> Iterator[tuple[int | None, xr.Dataset]]:
    """The states of ``ds`` in memory, one dask chunk of the record dimension computed at a time."""
    dim = record_dim(ds, required=False)
    if dim is None:
        yield None, ds.load()
        return
    sizes: tuple[int, ...] = (ds.sizes[dim],)
    for var in ds.data_vars.values():
        if var.chunks is not None and dim in var.dims:
            sizes = tuple(var.chunks[var.dims.index(dim)])
            break
    start = 0
    for size in sizes:
        block = ds.isel({dim: slice(start, start + size)}).load()
        for offset in range(size):
            yield start + offset, block.isel({dim: offset})
        start += size


def _field(state: xr.Dataset, name: str, what: str) -> np.ndarray:
    if name not in state:
        raise MissingVariableError(
            f"The samples have no '{name}' ({what}); found {sorted(map(str, state.data_vars))}. A restart needs "
            "toce, soce and ssh: add the missing field (e.g. ssh=0) explicitly."
        )
    return np.asarray(state[name].transpose(*field_dims(name)).values, dtype=np.float64)


def _land_zero(values: np.ndarray, mask: np.ndarray, name: str, label: str) -> np.ndarray:
    bad = ~np.isfinite(values) & mask
    if bad.any():
        raise InvalidDataError(
            f"{name} of {label}: {int(bad.sum())} ocean cells are NaN or infinite; a restart needs finite values "
            "on every ocean cell. Check the samples (or their land-sea mask against the mesh_mask)."
        )
    return np.where(mask, values, 0.0)


def _date_of(state: xr.Dataset) -> int | None:
    """The state's date ``yyyymmdd``: a record's time (``t``) or a conditional sample's (``time``), any calendar."""
    from .conditions import yyyymmdd

    for name in (TIME_DIM, "time"):
        if name in state.coords and state[name].ndim == 0:
            value = state[name].values[()]
            if state[name].dtype.kind == "M" or hasattr(value, "calendar"):  # datetime64 or cftime
                return yyyymmdd(value)
    return None


# --- the configuration's grid --------------------------------------------------------------------------


def _sample_mesh(state: xr.Dataset) -> MeshInfo:
    if "tmask" not in state.variables:
        raise MissingVariableError(
            "The samples have no 'tmask' coordinate and no mesh_mask was given: cannot tell land from ocean. "
            "Pass mesh_mask='path/to/mesh_mask.nc'."
        )
    return read_mesh(state)


def _restart_mesh(samples: xr.Dataset, mesh_mask: PathLike | xr.Dataset | None) -> MeshInfo:
    """The grid restarts are written on: the mesh_mask's (checked against the samples) or the samples' own."""
    shape = tuple(int(samples.sizes[d]) for d in SPATIAL_DIMS)
    mesh = read_mesh(mesh_mask) if mesh_mask is not None else _sample_mesh(samples)
    what = "the mesh_mask" if mesh_mask is not None else "the samples' grid"
    if shape != mesh.shape:
        raise GridMismatchError(
            f"The samples have (z_c, y_c, x_c) = {shape} but {what} {mesh.source!r} has "
            f"(nav_lev, y, x) = {mesh.shape}. Restarts must have the configuration's global sizes: pass the "
            "mesh_mask/domain_cfg of the configuration the samples were generated for."
        )
    if mesh_mask is not None and "tmask" in samples.variables:
        own = read_mesh(samples).tmask
        if not np.array_equal(own, mesh.tmask):
            raise GridMismatchError(
                f"The samples' land-sea mask differs from the mesh_mask's on {int((own != mesh.tmask).sum())} cells. "
                "Pass the mesh_mask of the configuration the samples were generated for."
            )
    return mesh


def _mesh_variables(mesh: MeshInfo) -> dict[str, Any]:
    """``nav_lon``, ``nav_lat`` (float32 variables) and ``nav_lev`` (float32 coordinate), zeros when unknown."""
    nz, ny, nx = mesh.shape
    lon = mesh.nav_lon if mesh.nav_lon is not None else np.zeros((ny, nx))
    lat = mesh.nav_lat if mesh.nav_lat is not None else np.zeros((ny, nx))
    lev = mesh.nav_lev if mesh.nav_lev is not None else np.arange(nz, dtype=float)
    return {
        "nav_lon": (("y", "x"), np.asarray(lon, dtype=np.float32)),
        "nav_lat": (("y", "x"), np.asarray(lat, dtype=np.float32)),
        "nav_lev": ("nav_lev", np.asarray(lev, dtype=np.float32),
                    {"units": "m", "positive": "down", "long_name": "Depth of T levels"}),
    }


# --- writing ---------------------------------------------------------------------------------------------


def _write_netcdf(ds: xr.Dataset, tmp: Path) -> None:
    """NEMO's layout: no ``_FillValue`` anywhere, ``time_counter`` UNLIMITED."""
    encoding = {str(name): {"_FillValue": None} for name in ds.variables}
    ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding, unlimited_dims=["time_counter"])


@contextlib.contextmanager
def _folder_removed_on_error(folder: Path) -> Iterator[None]:
    """Remove ``folder`` (and the parents it needed) on an error when this write created them and they are empty.

    The atomic writers create the folder with the first file; when a later file fails, every file is
    discarded, and so are the folders made for them: an early failure leaves nothing behind.
    """
    created: list[Path] = []
    path = folder.absolute()
    while not path.exists() and path != path.parent:
        created.append(path)  # deepest first
        path = path.parent
    try:
        yield
    except BaseException:
        for made in created:
            try:
                made.rmdir()  # only if empty: someone else's files are never removed
            except OSError:
                break
        raise


def _atomic(stack: contextlib.ExitStack, path: Path, overwrite: bool) -> Path:
    """A temporary path renamed to ``path`` only when every output of ``stack`` succeeded."""
    return stack.enter_context(atomic_path(path, overwrite=overwrite))


def _write_text(stack: contextlib.ExitStack, path: Path, text: str, overwrite: bool) -> None:
    _atomic(stack, path, overwrite).write_text(text)


def _package_version() -> str:
    from .version import __version__

    return __version__


class _StateFields(NamedTuple):
    """One state as NEMO's "now" fields (float64, land 0) and its date."""

    label: str
    tn: np.ndarray
    sn: np.ndarray
    sshn: np.ndarray
    un: np.ndarray
    vn: np.ndarray
    date: int


def _state_fields(index: int | None, state: xr.Dataset, mesh: MeshInfo, options: RestartOptions) -> _StateFields:
    label = f"sample {index}" if index is not None else "the state"
    ocean = mesh.tmask
    tn = _land_zero(_field(state, "toce", "temperature"), ocean, "toce", label)
    sn = _land_zero(_field(state, "soce", "salinity"), ocean, "soce", label)
    sshn = _land_zero(_field(state, "ssh", "sea surface height"), ocean[0], "ssh", label)
    check_plausible(state, label=label)  # before its file is written: Kelvin, swapped toce/soce, out of range
    if options.velocity_mode == "thermal_wind":
        u, v = thermal_wind(state, eos=options.eos)
        un = np.nan_to_num(np.asarray(u.values, dtype=np.float64))
        vn = np.nan_to_num(np.asarray(v.values, dtype=np.float64))
    else:
        un = vn = np.zeros(mesh.shape)
    date = options.ndastp if options.ndastp is not None else (_date_of(state) or _DEFAULT_DATE)
    return _StateFields(label, tn, sn, sshn, un, vn, int(date))


def _restart_dataset(fields: _StateFields, mesh: MeshInfo, options: RestartOptions,
                     attrs: Mapping[str, Any]) -> xr.Dataset:
    """A fresh restart of the version's variable set: "before" = "now" for leapfrog versions."""
    fields3d = {"tn": fields.tn, "sn": fields.sn, "un": fields.un, "vn": fields.vn}
    fields2d = {"sshn": fields.sshn}
    if options.leapfrog:
        fields3d.update({"tb": fields.tn, "sb": fields.sn, "ub": fields.un, "vb": fields.vn})
        fields2d["sshb"] = fields.sshn
    scalars = {
        "kt": float(options.kt),
        "ndastp": float(fields.date),
        "adatrj": float(options.adatrj if options.adatrj is not None else options.kt * options.rdt / 86400.0),
        "ntime": float(options.ntime),
        "rdt": float(options.rdt),
    }
    out = xr.Dataset(attrs=dict(attrs))
    for name in RESTART_VARIABLES[options.nemo_version]:  # NEMO's order: 3-D fields, 2-D fields, scalars
        if name in fields3d:
            out[name] = (RESTART_DIMS_3D, np.ascontiguousarray(fields3d[name], dtype=np.float64)[None])
        elif name in fields2d:
            out[name] = (RESTART_DIMS_2D, np.ascontiguousarray(fields2d[name], dtype=np.float64)[None])
        else:
            out[name] = ((), np.float64(scalars[name]))
    kind = attrs.get("salinity", "absolute")
    for names, field in ((("tn", "tb"), "toce"), (("sn", "sb"), "soce"), (("sshn", "sshb"), "ssh")):
        for name in names:
            if name in out:
                out[name].attrs = field_attrs(field, kind)
    nav = _mesh_variables(mesh)
    out = out.assign(nav_lon=nav["nav_lon"], nav_lat=nav["nav_lat"])
    seconds = np.array([options.kt * options.rdt], dtype=np.float64)
    return out.assign_coords(
        nav_lev=nav["nav_lev"],
        time_counter=("time_counter", seconds, {"units": "seconds", "long_name": "Time since the start of the experiment"}),
    )


def _restart_attrs(samples: xr.Dataset, fields: _StateFields, options: RestartOptions) -> dict[str, Any]:
    version = _package_version()
    checkpoint = samples.attrs.get("checkpoint_sha256")
    attrs = {
        "title": f"NEMO {options.nemo_version} restart of a generated ocean state (xoceandiff)",
        "source": f"xoceandiff {version}" + (f", checkpoint sha256 {checkpoint}" if checkpoint else ""),
        "xoceandiff_state": fields.label,
        "nemo_version": options.nemo_version,
        "velocities": options.velocity_mode,
        # NEMO reads the values as they are: say which salinity (and temperature) they are
        "salinity": salinity_kind(samples),
    }
    return stamp_history(attrs, f"xoceandiff {version}: restart written by xoceandiff.restart.to_restart")


def _write_fresh(stack: contextlib.ExitStack, planned: PlannedState, fields: _StateFields, mesh: MeshInfo,
                 options: RestartOptions, attrs: Mapping[str, Any]) -> None:
    """The writer without template: the global file, or its per-rank pieces."""
    ds = _restart_dataset(fields, mesh, options, attrs)
    for path, piece in planned.files:
        out = ds if piece is None else cut_piece(ds, piece, options.ranks)  # type: ignore[arg-type]
        _write_netcdf(out, _atomic(stack, path, options.overwrite))


def _write_from_template(stack: contextlib.ExitStack, planned: PlannedState, fields: _StateFields, mesh: MeshInfo,
                         options: RestartOptions, attrs: Mapping[str, Any]) -> None:
    """The writer with template: a byte copy with only the state (and given velocities) replaced."""
    values = {"tn": fields.tn, "sn": fields.sn, "tb": fields.tn, "sb": fields.sn,
              "sshn": fields.sshn, "sshb": fields.sshn, "ssha": fields.sshn}  # NEMO 5.0: ssha defaults to sshn
    if options.velocities is not None:  # and uu_n, vv_n (NEMO 5.0) with them, when the template has them
        values.update({"un": fields.un, "vn": fields.vn, "ub": fields.un, "vb": fields.vn,
                       "uu_n": fields.un, "vv_n": fields.vn})
    ((path, _),) = planned.files
    tmp = _atomic(stack, path, options.overwrite)
    shutil.copyfile(options.template, tmp)  # type: ignore[arg-type]
    with netCDF4.Dataset(tmp, "r+") as nc:
        for name, array in values.items():
            if name in nc.variables:
                var = nc.variables[name]
                var.set_auto_maskandscale(False)
                var[...] = np.broadcast_to(array, var.shape).astype(var.dtype)


# --- templates -------------------------------------------------------------------------------------------


def _check_template(path: Path, shape: tuple[int, int, int], names: Sequence[str]) -> None:
    """The template is a restart whose fields ``names`` lie on ``shape`` (2-D for ssh)."""
    if not path.is_file():
        raise FileNotFoundError(f"template restart not found: {str(path)!r}")
    with netCDF4.Dataset(path) as nc:
        for name in names:
            if name not in nc.variables:
                continue
            found = nc.variables[name].shape
            expected = shape if not name.startswith("ssh") else shape[1:]
            if tuple(found[-len(expected):]) != tuple(expected) or len(found) < len(expected):
                raise GridMismatchError(
                    f"The template {str(path)!r} has {name} of shape {tuple(found)} (dims "
                    f"{nc.variables[name].dimensions}) but the samples are on (nav_lev, y, x) = {shape}. "
                    "Pass a template restart of the samples' configuration."
                )
        if "tn" not in nc.variables:
            raise MissingVariableError(
                f"The template {str(path)!r} has no 'tn': it is not a NEMO restart. Found {sorted(nc.variables)}."
            )


# --- namelists -------------------------------------------------------------------------------------------


def _namelist_restart(stems: Sequence[str], first_date: int, options: RestartOptions, folder: Path) -> str:
    version, kt, rdt = options.nemo_version, int(options.kt), float(options.rdt)
    date_source = options.source_of("ndastp") if options.ndastp is not None else (
        "the state's date" if first_date != _DEFAULT_DATE else f"default {_DEFAULT_DATE} (no date told)")
    lines = [
        f"! NEMO {version} namelist settings to start from the restarts written by xoceandiff {_package_version()}",
        "! Copy them into namelist_cfg. One restart per generated state: set cn_ocerst_in to the one to run.",
        f"! Restarts in {str(folder)!r}: {', '.join(stems)}",
        f"! NEMO version {version}: {options.source_of('nemo_version')}",
        f"! rdt = {rdt:g} s: {options.source_of('rdt')}",
        f"! kt = {kt}: {options.source_of('kt')}; ndastp = {first_date:08d}: {date_source}",
    ]
    if "ln_rstart" in dict(options.sources):
        lines.append(f"! Note: {options.source_of('ln_rstart')}")
    lines += [
        "&namrun",
        "   ln_rstart       = .true.",
        f"   cn_ocerst_in    = {_fortran_string(stems[0], 'cn_ocerst_in')}   ! file name without .nc",
        f"   cn_ocerst_indir = {_fortran_string(str(folder), 'cn_ocerst_indir')}",
        "   nn_rstctl       = 0        ! 0: calendar from nn_date0; 1: nit000 checked against kt; 2: calendar from the file",
        f"   nn_it000        = {kt + 1}        ! = kt + 1",
        f"   nn_date0        = {first_date:08d}   ! = ndastp of the restart",
        "/",
        "&namdom",
        f"   rn_Dt           = {rdt!r}   ! = rdt of the restarts (your run's time step differs? write them with it)",
        "/",
        "&namtsd",
        "   ln_tsd_init     = .false.  ! the state comes from the restart",
        "/",
    ]
    if options.leapfrog:
        lines += [
            "! NEMO 4.x (leapfrog): 'before' fields = 'now' fields. NEMO starts with an Euler step when the",
            "! restart's rdt differs from rn_Dt; the model spins the circulation up from the density field.",
        ]
    else:
        lines += [
            "! NEMO 5.0 (RK3): only the 'now' fields (tn, sn, sshn, un, vn) are read; NEMO rebuilds uu_n, vv_n",
            "! and ssha from them. The model spins the circulation up from the density field.",
        ]
    if options.ranks is not None:
        lines.append(
            f"! Per-rank pieces: run with jpni = {options.ranks[0]}, jpnj = {options.ranks[1]} and no land-domain "
            "removal; NEMO opens <cn_ocerst_in>_<rank>.nc when <cn_ocerst_in>.nc is absent."
        )
    return "\n".join(lines) + "\n"


def _restart_namelist(plan: OutputPlan, options: RestartOptions, first_date: int) -> str:
    """The namelist of the first restart (the options hold the template's calendar when there is one)."""
    stems = [state.stem for state in plan.states]
    return _namelist_restart(stems, int(first_date), options, plan.namelist.parent.resolve())


# --- restarts --------------------------------------------------------------------------------------------


def to_restart(
    samples: xr.Dataset,
    target: PathLike,
    *,
    mesh_mask: PathLike | xr.Dataset | None = None,
    template: PathLike | None = None,
    namelist: PathLike | None = None,
    nemo_version: NemoVersion | str | None = None,
    kt: int | None = None,
    ndastp: int | None = None,
    rdt: float | None = None,
    adatrj: float | None = None,
    ntime: int | None = None,
    velocities: Velocities | None = None,
    eos: str = "auto",
    prefix: str = "restart",
    ranks: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write one NEMO restart per generated state, ready for ``ln_rstart = .true.``.

    Each file follows NEMO's reading rules: dimensions ``(time_counter, nav_lev, y, x)`` with
    ``time_counter`` UNLIMITED and the configuration's global sizes; float64 fields with land 0, no NaN
    and no ``_FillValue``; ``tn``, ``sn``, ``sshn`` and (NEMO 4.x) the "before" copies ``tb``, ``sb``,
    ``sshb``; velocities ``un``, ``vn`` (and ``ub``, ``vb``); the 0-d doubles ``kt``, ``ndastp``,
    ``adatrj``, ``ntime``, ``rdt``; ``nav_lon``, ``nav_lat``, ``nav_lev`` (float32) and ``time_counter``.
    NEMO 5.0 (RK3) gets ``tn``, ``sn``, ``sshn``, ``un``, ``vn`` and the scalars (it rebuilds ``uu_n``,
    ``vv_n`` and ``ssha`` from them). File names are ``{prefix}_s{index:03d}_xoceandiff.nc``
    (:func:`restart_file_name`): never ``_<digits>.nc``, which NEMO takes for a rank's piece.

    The NEMO version, time step and calendar are those of the run that will read the restarts: each is
    taken from the argument when given, else from the ``template`` restart, else from the run's
    ``namelist``, else from the defaults (NEMO 5.0, 3600 s, ``kt = 0``, the state's date or 19000101); see
    :func:`resolve_options`. An argument that contradicts the template is refused.

    Every state is checked first (:func:`~xoceandiff.restart_check.check_plausible`): units, physical
    ranges, and the training range the samples carry; a temperature in Kelvin or swapped ``toce``/``soce``
    raises instead of becoming a restart.

    A ``namelist_restart.txt`` beside the files lists the settings to use (``ln_rstart``,
    ``cn_ocerst_in``, ``nn_rstctl``, ``nn_it000 = kt + 1``, ``nn_date0``, ``rn_Dt``,
    ``ln_tsd_init = .false.``) and says where the version, time step and date came from. Every file is
    written atomically, and all of them or none: an error leaves no new file behind.

    Parameters
    ----------
    samples : xarray.Dataset
        Canonical states: ``toce``, ``soce`` (``z_c, y_c, x_c``) and ``ssh`` (``y_c, x_c``), along
        ``sample`` (or ``t``, or a single state), land NaN, with the grid coordinates.
    target : path
        Output folder (created if needed).
    mesh_mask : path or xarray.Dataset, optional
        The configuration's ``mesh_mask.nc``/``domain_cfg.nc``: its sizes must equal the samples', and its
        ``tmask``, ``nav_lon``, ``nav_lat`` and depths are written. Default: the samples' own grid.
    template : path, optional
        An existing restart of the same configuration: each output is a copy of it in which only ``tn``,
        ``sn``, ``sshn`` (and ``tb``, ``sb``, ``sshb``, ``ssha`` when present) are replaced; every other
        variable, attribute and encoding is kept bit for bit, its velocities too unless ``velocities`` is
        given (then ``un``, ``vn``, ``ub``, ``vb``, ``uu_n``, ``vv_n``). Its version (from its "before"
        fields), ``rdt``, ``kt``, ``ndastp``, ``adatrj`` and ``ntime`` are the defaults of the arguments.
    namelist : path, optional
        The run's ``namelist_cfg``: ``rn_Dt`` (``rn_rdt`` in NEMO 4.0), ``nn_date0`` and ``nn_it000`` give
        ``rdt``, ``ndastp`` and ``kt`` where neither an argument nor the template does.
    nemo_version : {"4.0", "4.2", "5.0"}, optional
        Which variable set to write. Default: the template's, the namelist's (``rn_rdt``: 4.0), else
        :data:`DEFAULT_NEMO_VERSION` (5.0, RK3; its variables are also what NEMO 4.x reads when it starts
        with an Euler step).
    kt : int, optional
        Time step of the restart: NEMO starts at ``nn_it000 = kt + 1`` (checked with ``nn_rstctl >= 1``).
        Default: the template's, the namelist's ``nn_it000 - 1``, else 0.
    ndastp : int, optional
        Date ``yyyymmdd`` (read with ``nn_rstctl = 2``). Default: the template's, the namelist's
        ``nn_date0``, the state's date when it has a time coordinate, else 19000101.
    rdt : float, optional
        Time step (s) written as ``rdt``. NEMO 4.x starts with an Euler step when it differs from the
        namelist's ``rn_Dt``. Default: the template's, the namelist's ``rn_Dt``, else
        :data:`DEFAULT_RDT` (3600 s).
    adatrj : float, optional
        Days since the start of the experiment (default: the template's, else ``kt * rdt / 86400``).
    ntime : int, optional
        Time of day (``hhmm``) of the start, NEMO's ``nn_time0`` (default: the template's, else 0).
    velocities : {"rest", "thermal_wind"}, optional
        ``"rest"`` (the default without template): 0 everywhere, what NEMO does for an initial state.
        ``"thermal_wind"``: :func:`thermal_wind` of each state's density. With a template, the default
        keeps the template's velocities.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}
        Equation of state for ``velocities="thermal_wind"``.
    prefix : str
        File name prefix.
    ranks : (int, int), optional
        Also cut each restart into ``ranks[0] x ranks[1]`` (i, j) per-rank pieces ``..._NNNN.nc`` with
        ``DOMAIN_*`` global attributes, instead of the global file. The run must use the same
        decomposition; the global file works with any and is preferred. Not with NEMO 4.0 (its pieces
        hold halos) nor with a template.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The restart files (the pieces with ``ranks``), in sample order.

    Raises
    ------
    xoceandiff.errors.GridMismatchError
        The samples, the mesh_mask and the template are not on the same grid.
    xoceandiff.errors.InvalidDataError
        NaN on an ocean cell of a state, an implausible state (units, ranges), bad arguments, or arguments
        that contradict the template.
    xoceandiff.errors.OutputExistsError
        An output exists and ``overwrite`` is False (nothing is written).

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> paths = to_restart(states, tempfile.mkdtemp())
    >>> [p.name for p in paths]
    ['restart_s000_xoceandiff.nc', 'restart_s001_xoceandiff.nc']
    >>> check_restart(paths[0], states)
    []
    >>> print((paths[0].parent / "namelist_restart.txt").read_text().splitlines()[3])
    ! NEMO version 5.0: default (no template, namelist or nemo_version told)
    """
    options = resolve_options(
        template=template, namelist=namelist, nemo_version=None if nemo_version is None else str(nemo_version),
        kt=kt, ndastp=ndastp, rdt=rdt, adatrj=adatrj, ntime=ntime, velocities=velocities, eos=eos, prefix=prefix,
        ranks=None if ranks is None else tuple(ranks), overwrite=overwrite,
    )
    return _write_restarts(samples, Path(target), mesh_mask, options)


def _write_restarts(samples: xr.Dataset, folder: Path, mesh_mask: PathLike | xr.Dataset | None,
                    options: RestartOptions) -> list[Path]:
    """Check the grids, plan every file, then write them all (or none) with the fresh or template writer."""
    mesh = _restart_mesh(samples, mesh_mask)
    if options.template is not None:
        replaced = _TEMPLATE_STATE + (_TEMPLATE_VELOCITIES if options.velocities is not None else ())
        _check_template(options.template, mesh.shape, replaced)
    plan = _plan_restarts(_indices(samples), folder, options, mesh.shape)
    plan.refuse_existing(options.overwrite)  # nothing is half-written when one output exists
    _fortran_string(str(folder.resolve()), "cn_ocerst_indir")  # the namelist can name the folder
    write = _write_from_template if options.template is not None else _write_fresh
    dates: list[int] = []
    with _folder_removed_on_error(folder), contextlib.ExitStack() as stack:
        for (index, state), planned in zip(_states(samples), plan.states, strict=True):
            fields = _state_fields(index, state, mesh, options)
            dates.append(fields.date)
            write(stack, planned, fields, mesh, options, _restart_attrs(samples, fields, options))
        _write_text(stack, plan.namelist, _restart_namelist(plan, options, dates[0]), options.overwrite)
    return plan.paths


# --- initial states --------------------------------------------------------------------------------------


class _InitialVariable(NamedTuple):
    """One initial-state file: NEMO's variable, the file's suffix, the canonical field and its CF attributes."""

    name: str
    suffix: str
    source: str
    standard_name: str
    units: str
    long_name: str


_INITIAL_VARIABLES = (
    _InitialVariable("votemper", "temperature_nomask", "toce", "sea_water_conservative_temperature", "degC",
                     "Sea water temperature (land filled)"),
    _InitialVariable("vosaline", "salinity_nomask", "soce", "sea_water_absolute_salinity", "g kg-1",
                     "Sea water salinity (land filled)"),
)


def _fill_level(level: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Land cells of one level from the mean of their known neighbours, ring by ring (no wrap-around)."""
    level = np.where(known, level, 0.0)
    known = known.copy()
    while not known.all():
        total = np.zeros_like(level)
        count = np.zeros_like(level)
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            shifted_known = np.roll(known, step, axis=axis)
            shifted = np.roll(level, step, axis=axis)
            # no wrap-around: the edge row/column rolled in from the other side does not count
            edge = [slice(None), slice(None)]
            edge[axis] = 0 if step == 1 else -1
            shifted_known[tuple(edge)] = False
            total += np.where(shifted_known, shifted, 0.0)
            count += shifted_known
        new = ~known & (count > 0)
        level[new] = total[new] / count[new]
        known |= new
    return level


def _drown(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill land cells of each level from the nearest ocean cells (successive dilation); levels without
    ocean take the filled level above."""
    out = np.array(values, dtype=np.float64)
    for k in range(out.shape[0]):
        if mask[k].any():
            out[k] = _fill_level(out[k], mask[k])
        elif k == 0:
            raise InvalidDataError("The surface level has no ocean cell: nothing to fill the land from.")
        else:
            out[k] = out[k - 1]
    return out


def _pick_state(samples: xr.Dataset, index: int) -> xr.Dataset:
    """State ``index`` along the record dimension (or the single state), in memory."""
    dim = record_dim(samples, required=False)
    count = 1 if dim is None else samples.sizes[dim]
    if not 0 <= int(index) < count:
        raise InvalidDataError(f"index: expected 0 <= index < {count}, found {index!r}.")
    return (samples if dim is None else samples.isel({dim: int(index)})).load()


def _plan_initial_state(folder: Path, prefix: str, index: int) -> OutputPlan:
    stem = f"{prefix}_s{index:03d}"
    files = tuple(PlannedFile(folder / f"{stem}_{variable.suffix}.nc") for variable in _INITIAL_VARIABLES)
    return OutputPlan((PlannedState(index, stem, files),), folder / "namelist_initial_state.txt")


def _initial_state_dataset(state: xr.Dataset, mesh: MeshInfo, variable: _InitialVariable, index: int) -> xr.Dataset:
    values = _field(state, variable.source, variable.long_name)
    _land_zero(values, mesh.tmask, variable.source, f"state {index}")  # raises on NaN in the ocean
    filled = _drown(values, mesh.tmask)
    nav = _mesh_variables(mesh)
    attrs = {"standard_name": variable.standard_name, "units": variable.units, "long_name": variable.long_name}
    version = _package_version()
    return xr.Dataset(
        {variable.name: (RESTART_DIMS_3D, filled[None], attrs), "nav_lon": nav["nav_lon"], "nav_lat": nav["nav_lat"]},
        coords={
            "nav_lev": nav["nav_lev"],
            "time_counter": ("time_counter", np.array([0.0]), {"units": "seconds", "long_name": "Time"}),
        },
        attrs=stamp_history(
            {"title": f"NEMO initial state ({variable.name}, land filled) of a generated ocean state",
             "source": f"xoceandiff {version}"},
            f"xoceandiff {version}: initial state written by xoceandiff.restart.to_initial_state",
        ),
    )


def _namelist_initial_state(plan: OutputPlan) -> str:
    (planned,) = plan.states
    temperature, salinity = (file.path.stem for file in planned.files)
    return "\n".join(
        [
            f"! NEMO namelist settings to start from the initial state written by xoceandiff {_package_version()}",
            "&namrun",
            "   ln_rstart   = .false.",
            "/",
            "&namtsd",
            "   ln_tsd_init = .true.",
            "   ln_tsd_dmp  = .false.",
            f"   cn_dir      = {_fortran_string(f'{plan.namelist.parent.resolve()}/', 'cn_dir')}",
            "   !         file name                      ! freq (h) ! variable ! time interp ! clim ! 'yearly' ! weights ! rotation ! lsm",
            f"   sn_tem  = {_fortran_string(temperature, 'sn_tem', quote=chr(39))}, -12., 'votemper', .false., .true., "
            "'yearly', '', '', ''",
            f"   sn_sal  = {_fortran_string(salinity, 'sn_sal', quote=chr(39))}, -12., 'vosaline', .false., .true., "
            "'yearly', '', '', ''",
            "/",
            "! One record (a yearly climatology): the same state whatever the start date. Velocities start at rest.",
        ]
    ) + "\n"


def to_initial_state(
    samples: xr.Dataset,
    target: PathLike,
    *,
    index: int = 0,
    prefix: str = "initial",
    overwrite: bool = False,
) -> list[Path]:
    """Write one generated state as NEMO initial-state files (``ln_tsd_init = .true.``).

    Two files, ``{prefix}_s{index:03d}_temperature_nomask.nc`` (``votemper``) and
    ``{prefix}_s{index:03d}_salinity_nomask.nc`` (``vosaline``), on the model's grid and levels with
    ``time_counter`` UNLIMITED (one record), float64, no ``_FillValue``: land is filled from the nearest
    ocean cells of the same level ("nomask": every cell holds a plausible value), levels without ocean
    from the level above. NEMO masks land itself; velocities start at rest. A
    ``namelist_initial_state.txt`` beside them holds the ``&namrun``/``&namtsd`` settings. Like
    :func:`to_restart`, every output is refused up front when one exists, and all are written or none.

    Parameters
    ----------
    samples : xarray.Dataset
        Canonical states with ``toce``, ``soce`` and ``tmask``.
    target : path
        Output folder.
    index : int
        Which state (along ``sample`` or ``t``).
    prefix : str
        File name prefix.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The temperature and salinity files.

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> states = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> [p.name for p in to_initial_state(states, tempfile.mkdtemp(), index=1)]
    ['initial_s001_temperature_nomask.nc', 'initial_s001_salinity_nomask.nc']
    """
    state = _pick_state(samples, index)
    mesh = _sample_mesh(state)
    check_plausible(state, label=f"state {int(index)}")
    if not prefix or any(c in prefix for c in "/\\\0") or prefix == "..":
        raise InvalidDataError(f"prefix: expected a file name prefix without folders, found {prefix!r}; give the "
                               "folder as `target`.")
    plan = _plan_initial_state(Path(target), prefix, int(index))
    plan.refuse_existing(overwrite)
    _fortran_string(f"{Path(target).resolve()}/", "cn_dir")  # the namelist can name the folder
    with _folder_removed_on_error(Path(target)), contextlib.ExitStack() as stack:
        for (path, _), variable in zip(plan.states[0].files, _INITIAL_VARIABLES, strict=True):
            _write_netcdf(_initial_state_dataset(state, mesh, variable, int(index)), _atomic(stack, path, overwrite))
        _write_text(stack, plan.namelist, _namelist_initial_state(plan), overwrite)
    return plan.paths
