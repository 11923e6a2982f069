"""The paper's table of physical metrics, for a reference set and any number of sample sets.

:func:`report` computes :func:`xoceandiff.diagnostics.diagnostics` for every set (one dask
computation for all of them), plus each set's :func:`~xoceandiff.diagnostics.diversity` and
:func:`~xoceandiff.diagnostics.profile_distance` to the reference, and returns a :class:`Report`:

- the paper's table (rows: the reference, then each sample set; columns Bottom-Water S, T |
  Deep-Water S, T | Density errors; cells "mean ± std" over the records) and a second table of set
  metrics, as Markdown (:meth:`Report.to_markdown`) and LaTeX (:meth:`Report.to_latex`);
- the per-record metrics as CSV (:meth:`Report.to_csv`) and NetCDF (:meth:`Report.to_netcdf`).

Files are written atomically (:mod:`xoceandiff.io`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import dask
import numpy as np
import xarray as xr

from .diagnostics import (
    SCALAR_METRICS,
    EosName,
    _record_labels,
    diagnostics,
    diversity,
    profile_distance,
    record_dim,
)
from .errors import InvalidDataError
from .io import atomic_path, write_netcdf_atomic

__all__ = ["Report", "report", "TABLE_COLUMNS", "SET_COLUMNS", "CSV_COLUMNS", "DEFAULT_DECIMALS"]

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("BWbox_soce", "Bottom-Water S", "g/kg"),
    ("BWbox_toce", "Bottom-Water T", "°C"),
    ("DWbox_soce", "Deep-Water S", "g/kg"),
    ("DWbox_toce", "Deep-Water T", "°C"),
    ("check_density", "Density errors", "%"),
)
"""The paper's table: (metric, header, units), in column order."""

SET_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("diversity_toce", "Diversity T", "°C"),
    ("diversity_soce", "Diversity S", "g/kg"),
    ("diversity_ssh", "Diversity ssh", "m"),
    ("profile_distance_toce", "Profile distance T", "°C"),
    ("profile_distance_soce", "Profile distance S", "g/kg"),
)
"""The table of set metrics: (variable, header, units)."""

DEFAULT_DECIMALS: Mapping[str, int] = MappingProxyType(
    {"BWbox_soce": 3, "BWbox_toce": 3, "DWbox_soce": 3, "DWbox_toce": 3, "check_density": 4}
)
"""Decimals of the table cells per metric."""

CSV_COLUMNS: tuple[str, ...] = ("source", "record", *SCALAR_METRICS)
"""Columns of the per-record CSV."""

_RECORD = "record"
_SOURCE = "source"
_SET = "set"
_DASH = "—"
_CF_UNITS = {"°C": "degC", "g/kg": "g kg-1", "m": "m", "%": "%"}


@dataclass
class Report:
    """Computed metrics of a reference set and sample sets, and their tables.

    Attributes
    ----------
    metrics : xarray.Dataset
        Per-record metrics of every set on one dimension ``record``, with coordinates ``source``
        (the set's name) and ``record_label`` (the record's own label: a date, a sample index),
        the profiles on ``z_c``.
    set_metrics : xarray.Dataset
        Per set (dimension ``set``): ``n_records``, ``diversity_toce``, ``diversity_soce``,
        ``diversity_ssh``, ``profile_distance_toce``, ``profile_distance_soce`` (NaN for the
        reference's distance to itself is not reported: it is zero by definition).
    sources : tuple of str
        Set names, the reference first.
    eos, depth_box
        The options the metrics were computed with.
    decimals : int or mapping of str to int
        Decimals of the table cells, for all columns or per metric (:data:`DEFAULT_DECIMALS`).
    paths : dict of str to pathlib.Path
        The files written by :meth:`write` (``table_md``, ``table_tex``, ``metrics_csv``,
        ``metrics_nc``); empty until then.
    """

    metrics: xr.Dataset
    set_metrics: xr.Dataset
    sources: tuple[str, ...]
    eos: str = "teos10-poly"
    depth_box: float = 1500.0
    decimals: int | Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_DECIMALS))
    paths: dict[str, Path] = field(default_factory=dict)

    # -- summaries --------------------------------------------------------------------------------

    def source(self, name: str) -> xr.Dataset:
        """The per-record metrics of one set (records of other sets removed)."""
        if name not in self.sources:
            raise InvalidDataError(f"source: expected one of {list(self.sources)}, found {name!r}.")
        return self.metrics.isel({_RECORD: np.flatnonzero(self.metrics[_SOURCE].values == name)})

    def summary(self) -> xr.Dataset:
        """Mean and standard deviation (ddof=0) over records of each scalar metric, per set.

        Returns
        -------
        xarray.Dataset
            ``<metric>_mean`` and ``<metric>_std`` on dimension ``set``.
        """
        out: dict[str, list[float]] = {}
        for name in self.sources:
            part = self.source(name)
            for metric in SCALAR_METRICS:
                if metric not in part:
                    continue
                values = np.asarray(part[metric].values, dtype=np.float64)
                out.setdefault(f"{metric}_mean", []).append(float(np.mean(values)))
                out.setdefault(f"{metric}_std", []).append(float(np.std(values)))
        return xr.Dataset(
            {k: (_SET, v) for k, v in out.items()}, coords={_SET: list(self.sources)}
        )

    def _decimals(self, metric: str) -> int:
        if isinstance(self.decimals, Mapping):
            return int(self.decimals.get(metric, 3))
        return int(self.decimals)

    def _cell(self, metric: str, mean: float, std: float) -> str:
        if not (math.isfinite(mean) and math.isfinite(std)):
            return "nan"
        d = self._decimals(metric)
        return f"{mean:.{d}f} ± {std:.{d}f}"

    def _value(self, value: float) -> str:
        if not math.isfinite(value):
            return _DASH
        return f"{value:.4g}"

    def _rows(self) -> list[tuple[str, int, list[str]]]:
        summary = self.summary()
        rows = []
        for name in self.sources:
            s = summary.sel({_SET: name})
            cells = [
                self._cell(key, float(s[f"{key}_mean"]), float(s[f"{key}_std"])) for key, _, _ in TABLE_COLUMNS
            ]
            rows.append((name, int(self.set_metrics["n_records"].sel({_SET: name})), cells))
        return rows

    def _set_rows(self) -> list[tuple[str, list[str]]]:
        rows = []
        for name in self.sources:
            s = self.set_metrics.sel({_SET: name})
            rows.append((name, [self._value(float(s[key])) if key in s else _DASH for key, _, _ in SET_COLUMNS]))
        return rows

    def _caption(self) -> str:
        return (
            f"Mean ± std over records (ddof=0); means volume-weighted; boxes limited at "
            f"{self.depth_box:g} m and 30° latitude; density errors with eos={self.eos!r}."
        )

    # -- tables -------------------------------------------------------------------------------------

    def to_markdown(self) -> str:
        """The paper's table and the set-metrics table, as GitHub Markdown.

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> print(report(ds, {}).to_markdown().splitlines()[6])  # doctest: +ELLIPSIS
        | Data | 2 | 35.130 ± 0.000 | 3.973 ± 0.001 | ...
        """
        headers = ["", "n"] + [f"{title} ({units})" for _, title, units in TABLE_COLUMNS]
        lines = ["## Physical metrics", "", self._caption(), ""]
        lines += [_md_row(headers), _md_row(["---", "---:"] + [":---:"] * len(TABLE_COLUMNS))]
        lines += [_md_row([name, str(n), *cells]) for name, n, cells in self._rows()]
        set_headers = ["", "n"] + [f"{title} ({units})" for _, title, units in SET_COLUMNS]
        lines += [
            "",
            "## Set metrics",
            "",
            "Diversity: mean pairwise RMS distance between members (volume-weighted; ssh area-weighted). "
            f"Profile distance: RMS difference of the set-mean horizontal-mean profiles from {self.sources[0]}'s.",
            "",
            _md_row(set_headers),
            _md_row(["---", "---:"] + ["---:"] * len(SET_COLUMNS)),
        ]
        n_records = self.set_metrics["n_records"]
        lines += [
            _md_row([name, str(int(n_records.sel({_SET: name}))), *cells]) for name, cells in self._set_rows()
        ]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        r"""The two tables as LaTeX ``table`` environments (booktabs rules, ``$\pm$`` cells)."""
        def tex_units(units: str) -> str:
            return units.replace("°C", r"$^\circ$C").replace("%", r"\%")

        def tex_cell(cell: str) -> str:
            if "±" in cell:
                return "$" + cell.replace("±", r"\pm") + "$"
            return "--" if cell == _DASH else cell

        lines = [
            r"% requires \usepackage{booktabs}",
            r"\begin{table}[ht]",
            r"\centering",
            r"\caption{" + _tex_escape(self._caption()).replace("±", r"$\pm$").replace("°", r"$^\circ$") + "}",
            r"\begin{tabular}{lr" + "c" * len(TABLE_COLUMNS) + "}",
            r"\toprule",
            r" & & \multicolumn{2}{c}{Bottom Water} & \multicolumn{2}{c}{Deep Water} & Density \\",
            r"\cmidrule(lr){3-4}\cmidrule(lr){5-6}",
            r" & $n$ & S (g/kg) & T ($^\circ$C) & S (g/kg) & T ($^\circ$C) & errors (\%) \\",
            r"\midrule",
        ]
        for name, n, cells in self._rows():
            lines.append(" & ".join([_tex_escape(name), str(n), *map(tex_cell, cells)]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        lines += [
            r"\begin{table}[ht]",
            r"\centering",
            r"\caption{Diversity (mean pairwise RMS distance between members) and RMS distance of the "
            r"set-mean profiles to " + _tex_escape(self.sources[0]) + "'s.}",
            r"\begin{tabular}{lr" + "r" * len(SET_COLUMNS) + "}",
            r"\toprule",
            " & ".join(["", "$n$", *(f"{_tex_escape(t)} ({tex_units(u)})" for _, t, u in SET_COLUMNS)]) + r" \\",
            r"\midrule",
        ]
        n_records = self.set_metrics["n_records"]
        for name, cells in self._set_rows():
            n = str(int(n_records.sel({_SET: name})))
            lines.append(" & ".join([_tex_escape(name), n, *map(tex_cell, cells)]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    # -- per-record files ---------------------------------------------------------------------------

    def to_csv(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> str | Path:
        """Per-record scalar metrics as CSV (columns :data:`CSV_COLUMNS`).

        Returns the text when ``path`` is None, else writes it atomically and returns the path.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        columns = {
            name: (np.asarray(self.metrics[name].values, dtype=np.float64) if name in self.metrics else None)
            for name in SCALAR_METRICS
        }
        sources = self.metrics[_SOURCE].values
        labels = self.metrics["record_label"].values
        for i in range(self.metrics.sizes[_RECORD]):
            row = [str(sources[i]), str(labels[i])]
            row += ["" if values is None else repr(float(values[i])) for values in columns.values()]
            writer.writerow(row)
        text = buffer.getvalue()
        if path is None:
            return text
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return Path(path)

    def to_dataset(self) -> xr.Dataset:
        """Per-record metrics and set metrics in one Dataset (what :meth:`to_netcdf` writes)."""
        out = xr.merge([self.metrics, self.set_metrics], combine_attrs="override")
        out.attrs = {
            **self.metrics.attrs,
            "eos": self.eos,
            "depth_box": self.depth_box,
            "sources": ", ".join(self.sources),
        }
        return out

    def to_netcdf(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dataset` as NetCDF4, atomically."""
        return write_netcdf_atomic(self.to_dataset(), path, overwrite=overwrite)

    def write(self, folder: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Path]:
        """Write ``table.md``, ``table.tex``, ``metrics.csv``, ``metrics.nc`` into ``folder``.

        Returns
        -------
        dict of str to pathlib.Path
            ``table_md``, ``table_tex``, ``metrics_csv``, ``metrics_nc``; also kept in :attr:`paths`.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "table_md": folder / "table.md",
            "table_tex": folder / "table.tex",
            "metrics_csv": folder / "metrics.csv",
            "metrics_nc": folder / "metrics.nc",
        }
        for key in ("table_md", "table_tex"):
            text = self.to_markdown() if key == "table_md" else self.to_latex()
            with atomic_path(paths[key], overwrite=overwrite) as tmp:
                tmp.write_text(text, encoding="utf-8")
        self.to_csv(paths["metrics_csv"], overwrite=overwrite)
        self.to_netcdf(paths["metrics_nc"], overwrite=overwrite)
        self.paths = paths
        return paths

    def __str__(self) -> str:
        return self.to_markdown()


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _tex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                          ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


def _flat(metrics: xr.Dataset, ds: xr.Dataset, name: str) -> xr.Dataset:
    """One set's per-record metrics on dimension ``record`` with ``source`` and ``record_label``."""
    rdim = record_dim(ds)
    labels = _record_labels(ds, rdim)
    flat = metrics.drop_vars(rdim, errors="ignore").rename({rdim: _RECORD})
    return flat.assign_coords(
        {
            _SOURCE: (_RECORD, np.array([name] * len(labels), dtype=object)),
            "record_label": (_RECORD, np.array(labels, dtype=object)),
        }
    )


def report(
    reference: xr.Dataset,
    samples: Mapping[str, xr.Dataset],
    *,
    eos: EosName = "teos10-poly",
    depth_box: float = 1500.0,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    reference_name: str = "Data",
    decimals: int | Mapping[str, int] | None = None,
) -> Report:
    """Compute the paper's table for a reference set and sample sets.

    Parameters
    ----------
    reference : xarray.Dataset
        The reference states (the training data), any record dimension.
    samples : mapping of str to xarray.Dataset
        Sample sets by name (e.g. ``{"No constraint": s0, "Constraint": s1}``), in row order.
    eos : {"teos10-poly", "seos"}, default "teos10-poly"
        Equation of state of the density errors.
    depth_box : float, default 1500.0
        Depth limit of the Bottom-Water and Deep-Water boxes (m).
    out : path-like, optional
        Folder to write ``table.md``, ``table.tex``, ``metrics.csv`` and ``metrics.nc`` into
        (atomically); their paths are in :attr:`Report.paths`.
    overwrite : bool, default False
        Replace existing files in ``out``.
    reference_name : str, default "Data"
        Row name of the reference.
    decimals : int or mapping of str to int, optional
        Decimals of the table cells, for every column or per metric; default
        :data:`DEFAULT_DECIMALS` (3 for temperatures and salinities, 4 for density errors).

    Returns
    -------
    Report
        Computed metrics; :meth:`Report.to_markdown`, :meth:`Report.to_latex`, :meth:`Report.to_csv`,
        :meth:`Report.to_netcdf`.

    Raises
    ------
    InvalidDataError
        A sample set is named like the reference.
    xoceandiff.errors.OutputExistsError
        A file in ``out`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import xoceandiff
    >>> data = xoceandiff.datasets.dino(n=2, resolution=4.0)
    >>> other = xoceandiff.datasets.dino(n=2, resolution=4.0, seed=1)
    >>> table = report(data, {"Other seed": other})
    >>> table.sources
    ('Data', 'Other seed')
    >>> "±" in table.to_markdown()
    True
    """
    if reference_name in samples:
        raise InvalidDataError(
            f"samples: the set name {reference_name!r} is the reference's; rename the set or pass "
            "reference_name=..."
        )
    sets = {reference_name: reference, **dict(samples)}
    lazy_metrics = {name: diagnostics(ds, eos=eos, depth_box=depth_box) for name, ds in sets.items()}
    lazy_sets = {}
    for name, ds in sets.items():
        parts = []
        if ds.sizes[record_dim(ds)] >= 2:
            parts.append(diversity(ds))
        if name != reference_name:
            parts.append(profile_distance(ds, reference))
        lazy_sets[name] = xr.merge(parts) if parts else xr.Dataset()
    computed_metrics, computed_sets = dask.compute(lazy_metrics, lazy_sets)

    flat = [_flat(computed_metrics[name], sets[name], name) for name in sets]
    metrics = xr.concat(flat, dim=_RECORD, coords="minimal", compat="override", combine_attrs="drop_conflicts")
    metrics = metrics.assign_coords({_RECORD: np.arange(metrics.sizes[_RECORD])})
    metrics.attrs = {
        "title": "Physical metrics of ocean states (Meunier et al. 2025, arXiv:2502.02499)",
        "history": computed_metrics[reference_name].attrs["history"].splitlines()[0],
    }

    columns = ["n_records"] + [key for key, _, _ in SET_COLUMNS]
    table: dict[str, list[float]] = {key: [] for key in columns}
    for name, ds in sets.items():
        table["n_records"].append(ds.sizes[record_dim(ds)])
        for key in columns[1:]:
            value = computed_sets[name].get(key)
            table[key].append(float(value) if value is not None else float("nan"))
    set_metrics = xr.Dataset({key: (_SET, values) for key, values in table.items()}, coords={_SET: list(sets)})
    for key, title, units in SET_COLUMNS:
        set_metrics[key].attrs = {"long_name": title, "units": _CF_UNITS[units]}
    set_metrics["n_records"] = set_metrics["n_records"].astype(np.int64)
    set_metrics["n_records"].attrs = {"long_name": "Number of records in the set"}

    result = Report(
        metrics=metrics,
        set_metrics=set_metrics,
        sources=tuple(sets),
        eos=eos,
        depth_box=float(depth_box),
        decimals=dict(DEFAULT_DECIMALS) if decimals is None else decimals,
    )
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result
