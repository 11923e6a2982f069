"""What NEMO reads from a restart: versions, variables, file names, and the configuration's grid.

NEMO reads a restart (``ln_rstart = .true.``) by position, not by name:

- the record dimension ``time_counter`` is UNLIMITED (NEMO counts every fixed-size dimension as
  spatial), 3-D fields are ``(time_counter, nav_lev, y, x)``, 2-D fields ``(time_counter, y, x)``,
  calendar scalars are 0-d, and the sizes are those of the configuration's mesh_mask/domain_cfg;
- fields are float64 with land 0: no NaN and no ``_FillValue`` anywhere;
- a file name ending in ``_<digits>.nc`` is taken for one MPI rank's piece.

The writers (:mod:`xoceandiff.restart`) and the checker (:mod:`xoceandiff.restart_check`) share these
rules from here; :func:`read_mesh` reads the grid through :func:`xoceandiff.nemo.open_grid`, the one
reader of mesh_mask/domain_cfg files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from .canonical import SPATIAL_DIMS, ocean_mask
from .errors import InvalidDataError
from .ranks import is_rank_piece_name, rank_piece_name

__all__ = [
    "NEMO_VERSIONS",
    "RESTART_VARIABLES",
    "NemoVersion",
    "check_version",
    "restart_file_name",
    "is_rank_piece_name",
    "MeshInfo",
    "read_mesh",
    "DEFAULT_NEMO_VERSION",
    "RunSettings",
    "read_namelist",
    "settings_from_namelist",
    "settings_from_template",
]

PathLike = str | os.PathLike
NemoVersion = Literal["4.0", "4.2", "5.0"]

NEMO_VERSIONS: tuple[str, ...] = ("4.0", "4.2", "5.0")
"""NEMO versions whose restart layout :func:`xoceandiff.restart.to_restart` writes and checks."""

DEFAULT_NEMO_VERSION = "5.0"
"""The version written when neither the caller, a template restart nor a namelist tells: NEMO 5.0 (RK3),
the current release. Its variable set (``tn``, ``sn``, ``sshn``, ``un``, ``vn`` and the scalars) is also
what NEMO 4.x reads when it starts with an Euler step (no ``sshb``/``ub``)."""

# What each version reads (restart.F90, DOM/daymod.F90). Leapfrog versions read "now" and "before"
# fields; NEMO 5 (RK3) reads "now" fields only (uu_n/vv_n/ssha are rebuilt when absent).
FIELDS_3D = {
    "4.0": ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"),
    "4.2": ("tn", "sn", "tb", "sb", "un", "vn", "ub", "vb"),
    "5.0": ("tn", "sn", "un", "vn"),
}
FIELDS_2D = {"4.0": ("sshn", "sshb"), "4.2": ("sshn", "sshb"), "5.0": ("sshn",)}
SCALARS = ("kt", "ndastp", "adatrj", "ntime", "rdt")
RESTART_VARIABLES: dict[str, tuple[str, ...]] = {
    version: FIELDS_3D[version] + FIELDS_2D[version] + SCALARS for version in NEMO_VERSIONS
}
"""Variables :func:`xoceandiff.restart.to_restart` writes (and the checker requires), per NEMO version."""

# Optional fields NEMO writes in its own restarts (checked for layout and type when present).
OPTIONAL_3D = ("uu_n", "vv_n", "rhop", "en", "avt_k", "avm_k", "dissl", "rhd")
OPTIONAL_2D = ("ssha", "sshbb_e", "sshb_e", "sshn_e", "ub_e", "vb_e", "un_e", "vn_e", "ub2_b", "vb2_b")
COORDINATES = ("nav_lon", "nav_lat", "nav_lev", "time_counter")
TEMPERATURE_SALINITY = ("tn", "sn", "tb", "sb")
RESTART_DIMS_3D = ("time_counter", "nav_lev", "y", "x")
RESTART_DIMS_2D = ("time_counter", "y", "x")


def check_version(nemo_version: str) -> str:
    """``nemo_version`` as one of :data:`NEMO_VERSIONS`.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        Any other version.

    Examples
    --------
    >>> check_version(5.0)
    '5.0'
    """
    version = str(nemo_version)
    if version not in NEMO_VERSIONS:
        raise InvalidDataError(f"nemo_version: expected one of {list(NEMO_VERSIONS)}, found {nemo_version!r}.")
    return version


def restart_file_name(prefix: str, index: int | None, *, rank: int | None = None) -> str:
    """The file name of a restart: ``{prefix}_s{index:03d}_xoceandiff.nc``.

    The global file never ends in ``_<digits>.nc`` (NEMO would take it for a rank's piece); per-rank
    pieces add ``_{rank:04d}`` to it, as NEMO expects of them.

    Parameters
    ----------
    prefix : str
        File name prefix (no folder).
    index : int or None
        Sample index; None for a single state (``{prefix}_xoceandiff.nc``).
    rank : int, optional
        MPI rank of a piece (0-based).

    Examples
    --------
    >>> restart_file_name("restart", 2)
    'restart_s002_xoceandiff.nc'
    >>> restart_file_name("restart", 2, rank=5)
    'restart_s002_xoceandiff_0005.nc'
    """
    if not prefix or "/" in prefix or os.sep in prefix:
        raise InvalidDataError(f"prefix: expected a file name prefix without folders, found {prefix!r}.")
    stem = f"{prefix}_s{index:03d}_xoceandiff" if index is not None else f"{prefix}_xoceandiff"
    return rank_piece_name(stem, rank) if rank is not None else f"{stem}.nc"


@dataclass(frozen=True)
class MeshInfo:
    """What a restart needs of the configuration's grid (numpy arrays, global domain)."""

    tmask: np.ndarray  # (nz, ny, nx) bool
    nav_lon: np.ndarray | None = None  # (ny, nx)
    nav_lat: np.ndarray | None = None
    nav_lev: np.ndarray | None = None  # (nz,)
    source: str = "mesh_mask"

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``."""
        return tuple(int(n) for n in self.tmask.shape)  # type: ignore[return-value]


def _optional(grid: xr.Dataset, *names: str) -> np.ndarray | None:
    for name in names:
        if name in grid.variables:
            return np.asarray(grid[name].values)
    return None


def _mesh_of_grid(grid: xr.Dataset, source: str) -> MeshInfo:
    """The MeshInfo of a canonical grid (``tmask`` on ``z_c, y_c, x_c``); only grid variables are read."""
    tmask = ocean_mask(grid)
    if set(tmask.dims) != set(SPATIAL_DIMS):
        raise InvalidDataError(
            f"tmask of the {source}: expected dimensions {SPATIAL_DIMS} (a canonical grid), found {tmask.dims}. "
            "Pass the mesh_mask.nc/domain_cfg.nc path, or open it with xoceandiff.nemo.open_grid."
        )
    lev = _optional(grid, "gdept_1d", "nav_lev")
    return MeshInfo(
        tmask=np.asarray(tmask.transpose(*SPATIAL_DIMS).values),
        nav_lon=_optional(grid, "glamt", "nav_lon"),
        nav_lat=_optional(grid, "gphit", "nav_lat"),
        nav_lev=None if lev is None else lev.ravel(),
        source=source,
    )


def read_mesh(mesh_mask: PathLike | xr.Dataset | MeshInfo) -> MeshInfo:
    """The land-sea mask, longitudes, latitudes and depths of a configuration.

    Parameters
    ----------
    mesh_mask : path, xarray.Dataset or MeshInfo
        NEMO's ``mesh_mask.nc`` (``tmask``) or ``domain_cfg.nc`` (``top_level``/``bottom_level``), read with
        :func:`xoceandiff.nemo.open_grid`, or a canonical dataset or grid (``tmask`` on ``z_c, y_c, x_c``).

    Returns
    -------
    MeshInfo
        ``tmask`` (nz, ny, nx) as bool, and ``nav_lon``, ``nav_lat``, ``nav_lev`` when present.

    Examples
    --------
    >>> import xoceandiff
    >>> read_mesh(xoceandiff.datasets.dino(n=1, resolution=4.0)).shape
    (36, 51, 17)
    """
    if isinstance(mesh_mask, MeshInfo):
        return mesh_mask
    if isinstance(mesh_mask, xr.Dataset):
        return _mesh_of_grid(mesh_mask, "mesh_mask dataset")
    from .nemo import open_grid  # xnemogcm, only when a file is read

    path = Path(mesh_mask)
    if not path.is_file():
        raise FileNotFoundError(f"mesh_mask file not found: {str(path)!r}")
    return _mesh_of_grid(open_grid(path), str(path))


# --- what the run that reads the restarts says: a template restart, a namelist ----------------------------


@dataclass(frozen=True)
class RunSettings:
    """What a template restart or a NEMO namelist tells about the run that will read the restarts.

    Every field is None when the source does not tell. ``nemo_version`` is a hint (``"4.2"`` stands for the
    leapfrog versions 4.0 and 4.2, which read the same variables), explained by ``version_reason``.
    """

    source: str
    nemo_version: str | None = None
    version_reason: str = ""
    rdt: float | None = None
    kt: int | None = None
    ndastp: int | None = None
    adatrj: float | None = None
    ntime: int | None = None
    ln_rstart: bool | None = None


_BEFORE = ("tb", "sb", "sshb", "ub", "vb")


def settings_from_template(path: PathLike) -> RunSettings:
    """The NEMO version, time step and calendar of a restart NEMO wrote (or any restart).

    ``rdt``, ``kt``, ``ndastp``, ``adatrj`` and ``ntime`` are its 0-d variables; the version follows from
    its "before" fields: present (``tb``, ``sb``, ``sshb``, ...) for NEMO 4.x (leapfrog, hinted as
    ``"4.2"``), absent for NEMO 5.0 (RK3).

    Parameters
    ----------
    path : path
        A restart file.

    Returns
    -------
    RunSettings

    Examples
    --------
    >>> import tempfile, xoceandiff
    >>> from xoceandiff.restart import to_restart
    >>> states = xoceandiff.datasets.dino(n=1, resolution=4.0)
    >>> (path,) = to_restart(states, tempfile.mkdtemp(), nemo_version="5.0", rdt=14400.0)
    >>> settings = settings_from_template(path)
    >>> settings.nemo_version, settings.rdt, settings.ndastp
    ('5.0', 14400.0, 20000106)
    """
    import netCDF4

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"template restart not found: {str(path)!r}")
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        names = set(nc.variables)
        scalars = {
            name: float(np.asarray(nc.variables[name][...]).ravel()[0])
            for name in SCALARS
            if name in names and nc.variables[name].size >= 1
        }
    before = [name for name in _BEFORE if name in names]
    if before:
        version, reason = "4.2", f"its 'before' fields {before} (NEMO 4.x, leapfrog)"
    else:
        version, reason = "5.0", "no 'before' field (tb, sb, sshb, ub, vb): NEMO 5.0 (RK3)"
    as_int = {name: int(round(scalars[name])) if name in scalars else None for name in ("kt", "ndastp", "ntime")}
    return RunSettings(
        source=f"template {str(path)!r}", nemo_version=version, version_reason=reason, rdt=scalars.get("rdt"),
        kt=as_int["kt"], ndastp=as_int["ndastp"], adatrj=scalars.get("adatrj"), ntime=as_int["ntime"],
    )


# Fortran namelists: groups "&name ... /" of "key = value, value" with "!" comments and quoted strings.
_TOKEN = re.compile(
    r"""\s*(?:(?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")|(?P<eq>=)|(?P<comma>,)|(?P<word>[^\s,='"]+))"""
)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$")


def _strip_comments(text: str) -> str:
    """``text`` without its ``!`` comments (a ``!`` inside a quoted string is kept)."""
    out, quote = [], None
    for line in text.splitlines():
        kept = []
        for char in line:
            if quote is None and char == "!":
                break
            if char in "'\"":
                quote = None if quote == char else (char if quote is None else quote)
            kept.append(char)
        quote = None  # a string never spans lines in a namelist
        out.append("".join(kept))
    return "\n".join(out)


def _value(token: str, is_string: bool) -> Any:
    if is_string:
        return token[1:-1].replace(token[0] * 2, token[0])
    lower = token.lower()
    if lower in (".true.", ".t.", "t", "true"):
        return True
    if lower in (".false.", ".f.", "f", "false"):
        return False
    if _NUMBER.match(token):
        number = lower.replace("d", "e")
        return int(number) if re.fullmatch(r"[+-]?\d+", number) else float(number)
    return token


def _group_body(text: str, start: int) -> tuple[str, int]:
    """The body of a group from ``start`` to its closing unquoted ``/`` (or ``&end``), and the end position."""
    quote = None
    for i in range(start, len(text)):
        char = text[i]
        if char in "'\"":
            quote = None if quote == char else (char if quote is None else quote)
        elif quote is None and (char == "/" or text[i: i + 4].lower() == "&end"):
            return text[start:i], i + 1
        elif quote is None and char == "&":  # the next group: this one was not closed
            return text[start:i], i
    return text[start:], len(text)


def _assignments(body: str) -> dict[str, Any]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(body):
        match = _TOKEN.match(body, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        kind = match.lastgroup
        if kind is not None:
            tokens.append((kind, match.group(kind)))
    values: dict[str, Any] = {}
    key: str | None = None
    current: list[Any] = []
    for i, (kind, token) in enumerate(tokens):
        if kind == "word" and i + 1 < len(tokens) and tokens[i + 1][0] == "eq":
            if key is not None:
                values[key] = current[0] if len(current) == 1 else current
            key, current = token.lower(), []
        elif kind in ("word", "string") and key is not None:
            current.append(_value(token, kind == "string"))
    if key is not None:
        values[key] = current[0] if len(current) == 1 else current
    return values


def read_namelist(namelist: PathLike) -> dict[str, dict[str, Any]]:
    r"""The groups of a Fortran namelist file (NEMO's ``namelist_cfg``/``namelist_ref``) as dictionaries.

    Group and variable names are lower case; values are ``bool`` (``.true.``), ``int``, ``float``
    (``14400.``, ``1.d-3``), ``str`` (quoted) or a list of them (``sn_tem = 'file', -1., 'votemper', ...``).
    ``!`` comments are dropped (not inside quotes); a ``/`` inside a quoted string does not close a group;
    a group given twice is merged, the later value winning.

    Parameters
    ----------
    namelist : path
        The namelist file.

    Returns
    -------
    dict of str to dict of str to value

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "namelist_cfg"
    >>> _ = path.write_text("&namdom  ! space and time domain\n   rn_Dt = 14400.  ! time step\n/\n"
    ...                     "&namrun\n   nn_date0 = 00510101, ln_rstart = .true.\n   cn_dir = './'\n/\n")
    >>> groups = read_namelist(path)
    >>> groups["namdom"]["rn_dt"], groups["namrun"]
    (14400.0, {'nn_date0': 510101, 'ln_rstart': True, 'cn_dir': './'})
    """
    path = Path(namelist)
    if not path.is_file():
        raise FileNotFoundError(f"namelist not found: {str(path)!r}")
    text = _strip_comments(path.read_text(errors="replace"))
    groups: dict[str, dict[str, Any]] = {}
    position = 0
    while True:
        match = re.compile(r"&(\w+)").search(text, position)
        if match is None:
            break
        body, position = _group_body(text, match.end())
        groups.setdefault(match.group(1).lower(), {}).update(_assignments(body))
    return groups


def _number(groups: dict[str, dict[str, Any]], group: str, name: str, path: Path) -> float | None:
    value = groups.get(group, {}).get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidDataError(
            f"{name} in &{group} of {str(path)!r}: expected a number, found {value!r}. Fix the namelist, or pass "
            "the value explicitly (--rdt, --date)."
        )
    return float(value)


def settings_from_namelist(namelist: PathLike) -> RunSettings:
    r"""The time step, start date and first time step of the run a NEMO namelist configures.

    ``rdt`` from ``&namdom``'s ``rn_Dt`` (NEMO 4.2, 5.0) or ``rn_rdt`` (NEMO 4.0, which also hints the
    version), ``ndastp`` from ``&namrun``'s ``nn_date0``, ``kt = nn_it000 - 1`` and ``ln_rstart``. The
    names NEMO 4.2 and 5.0 share do not tell those two apart: no version hint then.

    Parameters
    ----------
    namelist : path
        ``namelist_cfg`` (or ``namelist_ref``) of the run.

    Returns
    -------
    RunSettings

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "namelist_cfg"
    >>> _ = path.write_text("&namrun\n nn_it000 = 1\n nn_date0 = 20100101\n/\n&namdom\n rn_Dt = 14400.\n/\n")
    >>> settings = settings_from_namelist(path)
    >>> settings.rdt, settings.ndastp, settings.kt, settings.nemo_version
    (14400.0, 20100101, 0, None)
    """
    path = Path(namelist)
    groups = read_namelist(path)
    rdt = _number(groups, "namdom", "rn_dt", path)
    version, reason = None, ""
    if rdt is None:
        rdt = _number(groups, "namdom", "rn_rdt", path)
        if rdt is not None:
            version, reason = "4.0", "&namdom's rn_rdt (NEMO 4.2 and 5.0 call it rn_Dt)"
    date = _number(groups, "namrun", "nn_date0", path)
    it000 = _number(groups, "namrun", "nn_it000", path)
    rstart = groups.get("namrun", {}).get("ln_rstart")
    return RunSettings(
        source=f"namelist {str(path)!r}", nemo_version=version, version_reason=reason, rdt=rdt,
        kt=None if it000 is None else max(int(it000) - 1, 0), ndastp=None if date is None else int(date),
        ln_rstart=rstart if isinstance(rstart, bool) else None,
    )


def _fortran_string(value: str, name: str, *, quote: str = '"') -> str:
    """``value`` as a Fortran namelist string: quoted, the quote character inside doubled.

    Parameters
    ----------
    value : str
        The text (a folder, a file name).
    name : str
        The namelist variable it is for, named in the error.
    quote : str
        ``'"'`` or ``"'"``.

    Returns
    -------
    str
        The quoted string.

    Raises
    ------
    xoceandiff.errors.InvalidDataError
        ``value`` holds a newline (or another control character), which no namelist string can hold.

    Examples
    --------
    >>> print(_fortran_string('runs/"best" one', "cn_ocerst_indir"))
    "runs/""best"" one"
    >>> print(_fortran_string("it's", "sn_tem", quote="'"))
    'it''s'
    """
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise InvalidDataError(
            f"{name}: a namelist string cannot hold a newline or control character, found {value!r}; "
            "write to a folder (and with a prefix) without one."
        )
    return quote + value.replace(quote, quote * 2) + quote
