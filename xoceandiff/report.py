"""The paper's table of physical metrics, for a reference set and any number of sample sets.

:func:`report` computes :func:`xoceandiff.diagnostics.diagnostics` for every set (one dask
computation for all of them), plus each set's :func:`~xoceandiff.diagnostics.diversity` and
:func:`~xoceandiff.diagnostics.profile_distance` to the reference, and returns a :class:`Report`:

- the paper's table (rows: the reference, then each sample set; columns Bottom-Water S, T |
  Deep-Water S, T | Density errors; cells "mean ± std" over the records) and a second table of set
  metrics, as pandas DataFrames (:meth:`Report.paper_table`, :meth:`Report.set_table`), Markdown
  (:meth:`Report.to_markdown`) and LaTeX (:meth:`Report.to_latex`, pandas' Styler);
- the per-record metrics as CSV (:meth:`Report.to_csv`, pandas) and NetCDF (:meth:`Report.to_netcdf`);
- for every sample set on the reference's grid, its fidelity to the reference
  (:func:`xoceandiff.fidelity.fidelity`: spread, gradient-variance and convective-distance ratios, shares of
  out-of-range cells and density errors by depth band, novelty, ssh balanced by the density) as a third
  table, "Fidelity", after the other two (:meth:`Report.fidelity_table`; ``to_csv(table="fidelity")``; in ``metrics.nc``).

Headers and units come from :data:`xoceandiff.diagnostics.METRICS` and
:data:`xoceandiff.fidelity.FIDELITY_METRICS`. Files are written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
import xarray as xr

from .atomic import atomic_path
from .canonical import salinity_kind
from .diagnostics import (
    SCALAR_METRICS,
    SET_METRICS,
    EosName,
    dataset_eos,
    diagnostics,
    diversity,
    metrics_for,
    profile_distance,
    record_dim,
    record_labels,
)
from .errors import InvalidDataError
from .fidelity import DATA_FLOORS, FIDELITY_COLUMNS, annotate_worst, fidelity, fidelity_metrics_for
from .io import write_netcdf_atomic

__all__ = ["Report", "report", "TABLE_COLUMNS", "SET_COLUMNS", "CSV_COLUMNS", "DEFAULT_DECIMALS"]

TABLE_COLUMNS: tuple[str, ...] = ("BWbox_soce", "BWbox_toce", "DWbox_soce", "DWbox_toce", "check_density")
"""The paper's table: its metrics in column order (headers and units in :data:`~xoceandiff.diagnostics.METRICS`)."""

SET_COLUMNS: tuple[str, ...] = SET_METRICS
"""The table of set metrics, in column order."""

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
_COUNT = "n"
_WORST = ("field", "level", "depth", "value")  # range_worst_<key>: the worst out-of-range cell of each sample set


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
        The options the metrics were computed with (``eos`` resolved: never ``"auto"``).
    decimals : int or mapping of str to int
        Decimals of the table cells, for all columns or per metric (:data:`DEFAULT_DECIMALS`).
    paths : dict of str to pathlib.Path
        The files written by :meth:`write` (``table_md``, ``table_tex``, ``metrics_csv``,
        ``metrics_nc``); empty until then.
    fidelity : xarray.Dataset or None
        Per sample set (dimension ``set``, the reference excluded): the scalar measures of
        :func:`xoceandiff.fidelity.fidelity` and ``range_worst_field``, ``range_worst_level``,
        ``range_worst_depth``, ``range_worst_value`` (the worst out-of-range cell; ``""`` when none).
        None when the report has no sample set.
    """

    metrics: xr.Dataset
    set_metrics: xr.Dataset
    sources: tuple[str, ...]
    eos: str = "teos10-poly"
    depth_box: float = 1500.0
    decimals: int | Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_DECIMALS))
    paths: dict[str, Path] = field(default_factory=dict)
    salinity: str = "absolute"
    fidelity: xr.Dataset | None = None

    @property
    def table_metrics(self) -> Mapping[str, Any]:
        """Labels and units of the metrics for the reference's salinity kind (:func:`~xoceandiff.diagnostics.metrics_for`)."""
        return metrics_for(self.salinity)

    # -- summaries --------------------------------------------------------------------------------

    @property
    def reference_name(self) -> str:
        """The reference's set name (the first source)."""
        return self.sources[0]

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

        Examples
        --------
        >>> import xoceandiff
        >>> summary = report(xoceandiff.datasets.dino(n=2, resolution=4.0), {}).summary()
        >>> round(float(summary.BWbox_soce_mean.sel(set="Data")), 3)
        35.13
        """
        scalars = [name for name in SCALAR_METRICS if name in self.metrics]
        grouped = self.metrics[scalars].reset_coords(drop=True).assign_coords(
            {_SET: (_RECORD, self.metrics[_SOURCE].values)}
        ).groupby(_SET)
        # skipna=False: a record whose metric is NaN (a broken sample) shows as nan, not hidden
        means, stds = grouped.mean(skipna=False), grouped.std(ddof=0, skipna=False)
        order = {_SET: list(self.sources)}
        out = {}
        for name in scalars:
            out[f"{name}_mean"] = (_SET, means[name].sel(order).values)
            out[f"{name}_std"] = (_SET, stds[name].sel(order).values)
        return xr.Dataset(out, coords=order)

    # -- tables -------------------------------------------------------------------------------------

    def paper_table(self) -> pd.DataFrame:
        """The paper's table: one row per set, ``n`` and "mean ± std" cells headed "label (units)".

        Examples
        --------
        >>> import xoceandiff
        >>> table = report(xoceandiff.datasets.dino(n=2, resolution=4.0), {}).paper_table()
        >>> table.loc["Data", "Bottom-Water S (g/kg)"]
        '35.130 ± 0.000'
        """
        return self._paper_cells(self._cell)

    def set_table(self) -> pd.DataFrame:
        """The set metrics: one row per set, ``n`` and a value (4 significant digits, "—" if none) per metric."""
        return self._set_cells(lambda value: _DASH if not math.isfinite(value) else f"{value:.4g}")

    def fidelity_columns(self) -> tuple[str, ...]:
        """The Fidelity table's measures: :data:`~xoceandiff.fidelity.FIDELITY_COLUMNS` that were computed."""
        if self.fidelity is None:
            return ()
        return tuple(name for name in FIDELITY_COLUMNS if name in self.fidelity)

    def fidelity_table(self) -> pd.DataFrame | None:
        """The Fidelity table: one row per sample set, ``n`` and each measure (4 significant digits, "—" if none).

        None for a report without sample sets.

        Examples
        --------
        >>> import xoceandiff
        >>> data = xoceandiff.datasets.dino(n=3, resolution=4.0)
        >>> table = report(data, {"A copy": data}).fidelity_table()
        >>> table.loc["A copy", "Spread T 0-200m (× data)"], table.loc["A copy", "Novelty (× data)"]
        ('1', '0')
        """
        return self._fidelity_cells(lambda value: _DASH if not math.isfinite(value) else f"{value:.4g}")

    def _fidelity_cells(self, cell: Callable[[float], str], headers: Sequence | None = None) -> pd.DataFrame | None:
        if self.fidelity is None:
            return None
        names = [str(name) for name in self.fidelity[_SET].values]
        counts = self.set_metrics["n_records"].sel({_SET: names}).values
        metrics = fidelity_metrics_for(self.salinity)
        columns: dict[str, list] = {_COUNT: [int(n) for n in counts]}
        for metric in self.fidelity_columns():
            columns[metrics[metric].heading] = [cell(float(v)) for v in self.fidelity[metric].values]
        frame = pd.DataFrame(columns, index=pd.Index(names))
        if headers is not None:
            frame.columns = headers
        return frame

    def _fidelity_caption(self) -> str:
        return (
            f"Fidelity to {self.reference_name}, by depth band. Ratios are the sample set's statistic over "
            f"{self.reference_name}'s (1: as real as the data): spread, the volume-weighted mean per-cell std across "
            "records; gradient variance, of the horizontal gradients across ocean-ocean faces; convective "
            "distance, how far convective adjustment moves a state. Out of range: share of ocean cells outside "
            f"{self.reference_name}'s per-level range widened by its record-to-record std. Novelty: median "
            f"RMS T distance of a sample to its nearest {self.reference_name} record over that of "
            f"{self.reference_name} records to each other (0: copies). Unbalanced ssh: RMS bottom-pressure "
            "anomaly left by ssh and the density below, which drives the geostrophic flow at the bottom. "
            "Density errors and convective "
            "distances are the sample set's own values."
        )

    def _floor_line(self) -> str | None:
        """The reference's own density errors and convective distances (the same on every row: the first set's)."""
        if self.fidelity is None:
            return None
        metrics = fidelity_metrics_for(self.salinity)
        cells = []
        for name in DATA_FLOORS:
            if name in self.fidelity:
                values = self.fidelity[name].values
                finite = values[np.isfinite(values)]
                if finite.size:
                    label = metrics[name].label.removeprefix("Data ")
                    cells.append(f"{label[0].lower()}{label[1:]} {float(finite[0]):.4g} {metrics[name].units}")
        return f"{self.reference_name}'s own: " + "; ".join(cells) + "." if cells else None

    def _worst_lines(self) -> list[str]:
        if self.fidelity is None or "range_worst_field" not in self.fidelity:
            return []
        floor = self._floor_line()
        lines = [floor] if floor else []
        for name in self.fidelity[_SET].values:
            row = self.fidelity.sel({_SET: name})
            field_name = str(row["range_worst_field"].values)
            if field_name:
                lines.append(
                    f"Worst out-of-range cell of {name}: {field_name} = {float(row['range_worst_value']):.4g} on level "
                    f"{int(row['range_worst_level'])} ({float(row['range_worst_depth']):.1f} m)."
                )
        return lines

    def _decimals(self, metric: str) -> int:
        if isinstance(self.decimals, Mapping):
            return int(self.decimals.get(metric, 3))
        return int(self.decimals)

    def _cell(self, metric: str, mean: float, std: float) -> str:
        if not (math.isfinite(mean) and math.isfinite(std)):
            return "nan"
        d = self._decimals(metric)
        return f"{mean:.{d}f} ± {std:.{d}f}"

    def _counts(self) -> list[int]:
        return [int(n) for n in self.set_metrics["n_records"].sel({_SET: list(self.sources)}).values]

    def _paper_cells(self, cell: Callable[[str, float, float], str], headers: Sequence | None = None) -> pd.DataFrame:
        summary = self.summary()
        columns = {_COUNT: self._counts()}
        for metric in TABLE_COLUMNS:
            means, stds = summary[f"{metric}_mean"].values, summary[f"{metric}_std"].values
            columns[self.table_metrics[metric].heading] = [
                cell(metric, float(m), float(s)) for m, s in zip(means, stds, strict=True)
            ]
        frame = pd.DataFrame(columns, index=pd.Index(self.sources))
        if headers is not None:
            frame.columns = headers
        return frame

    def _set_cells(self, cell: Callable[[float], str], headers: Sequence | None = None) -> pd.DataFrame:
        columns = {_COUNT: self._counts()}
        for metric in SET_COLUMNS:
            values = (
                self.set_metrics[metric].sel({_SET: list(self.sources)}).values
                if metric in self.set_metrics
                else [math.nan] * len(self.sources)
            )
            columns[self.table_metrics[metric].heading] = [cell(float(v)) for v in values]
        frame = pd.DataFrame(columns, index=pd.Index(self.sources))
        if headers is not None:
            frame.columns = headers
        return frame

    def _caption(self) -> str:
        return (
            f"Mean ± std over records (ddof=0); means volume-weighted; boxes limited at "
            f"{self.depth_box:g} m and 30° latitude; density errors with eos={self.eos!r}."
        )

    def to_markdown(self) -> str:
        """The paper's table and the set-metrics table, as GitHub Markdown.

        Examples
        --------
        >>> import xoceandiff
        >>> ds = xoceandiff.datasets.dino(n=2, resolution=4.0)
        >>> print(report(ds, {}).to_markdown().splitlines()[6])  # doctest: +ELLIPSIS
        | Data | 2 | 35.130 ± 0.000 | 3.973 ± 0.001 | ...
        """
        lines = ["## Physical metrics", "", self._caption(), ""]
        lines += _markdown_table(self.paper_table(), ":---:")
        lines += [
            "",
            "## Set metrics",
            "",
            "Diversity: mean pairwise RMS distance between members (volume-weighted; ssh area-weighted). "
            f"Profile distance: RMS difference of the set-mean horizontal-mean profiles from {self.reference_name}'s.",
            "",
        ]
        lines += _markdown_table(self.set_table(), "---:")
        fidelity_frame = self.fidelity_table()
        if fidelity_frame is not None:
            lines += ["", "## Fidelity", "", self._fidelity_caption(), ""]
            lines += _markdown_table(fidelity_frame, "---:")
            worst = self._worst_lines()
            if worst:
                lines += ["", *worst]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        r"""The two tables as LaTeX ``table`` environments (pandas' Styler: booktabs rules, ``$\pm$`` cells).

        Examples
        --------
        >>> import xoceandiff
        >>> tex = report(xoceandiff.datasets.dino(n=2, resolution=4.0), {}).to_latex()
        >>> "35.130 \\pm 0.000" in tex, r"\multicolumn{2}{c}{Bottom-Water}" in tex
        (True, True)
        """

        def tex_cell(*args: float | str) -> str:
            if len(args) == 3:  # a "mean ± std" cell of the paper's table
                return "$" + self._cell(*args).replace("±", r"\pm") + "$"
            value = float(args[0])
            return "--" if not math.isfinite(value) else f"{value:.4g}"

        # two header rows: the box ("Bottom-Water") over the quantity and units ("S (g/kg)")
        table = self.table_metrics
        groups = [table[m].label.rsplit(" ", 1) for m in TABLE_COLUMNS]  # "Bottom-Water", "S"
        paper_headers = pd.MultiIndex.from_tuples(
            [("", "$n$")]
            + [(group, _tex_heading(quantity, table[m].units)) for (group, quantity), m in zip(groups, TABLE_COLUMNS, strict=True)]
        )
        paper = self._paper_cells(tex_cell, paper_headers)
        set_headers = ["$n$"] + [_tex_heading(table[m].label, table[m].units) for m in SET_COLUMNS]
        sets = self._set_cells(tex_cell, set_headers)
        set_caption = (
            "Diversity (mean pairwise RMS distance between members) and RMS distance of the set-mean "
            f"profiles to {self.reference_name}'s."
        )
        tables = [
            _latex_table(paper, _tex_text(self._caption()), "lr" + "c" * len(TABLE_COLUMNS)),
            _latex_table(sets, _tex_text(set_caption), "lr" + "r" * len(SET_COLUMNS)),
        ]
        fidelity_metrics = fidelity_metrics_for(self.salinity)
        fidelity_headers = ["$n$"] + [
            _tex_heading(fidelity_metrics[m].label, fidelity_metrics[m].units) for m in self.fidelity_columns()
        ]
        fidelity_frame = self._fidelity_cells(tex_cell, fidelity_headers)
        if fidelity_frame is not None:
            tables.append(
                _latex_table(fidelity_frame, _tex_text(self._fidelity_caption()), "lr" + "r" * len(self.fidelity_columns()))
            )
        return "% requires \\usepackage{booktabs}\n" + "\n".join(tables)

    # -- per-record files ---------------------------------------------------------------------------

    def records_table(self) -> pd.DataFrame:
        """Per-record scalar metrics of every set, one row per record (columns :data:`CSV_COLUMNS`)."""
        columns = {
            "source": self.metrics[_SOURCE].values.astype(str),
            "record": self.metrics["record_label"].values.astype(str),
        }
        columns.update({name: self.metrics[name].values for name in SCALAR_METRICS if name in self.metrics})
        return pd.DataFrame(columns).reindex(columns=list(CSV_COLUMNS))

    def to_csv(
        self,
        path: str | os.PathLike | None = None,
        *,
        overwrite: bool = False,
        table: Literal["records", "fidelity"] = "records",
    ) -> str | Path:
        """Per-record scalar metrics as CSV (:meth:`records_table`; missing metrics are empty cells).

        With ``table="fidelity"``, the fidelity measures instead: one row per sample set (column ``source``),
        one column per scalar measure of :attr:`Report.fidelity` (variable names; full precision).

        Returns the text when ``path`` is None, else writes it atomically and returns the path.

        Raises
        ------
        InvalidDataError
            An unknown ``table``, or ``"fidelity"`` for a report without sample sets.
        """
        if table == "records":
            text = self.records_table().to_csv(index=False, lineterminator="\n", na_rep="nan")
        elif table == "fidelity":
            if self.fidelity is None:
                raise InvalidDataError("table: this report has no sample set, hence no fidelity measures.")
            frame = self.fidelity.to_dataframe().rename_axis(_SOURCE).reset_index()
            text = frame.to_csv(index=False, lineterminator="\n", na_rep="nan")
        else:
            raise InvalidDataError(f"table: expected 'records' or 'fidelity', found {table!r}.")
        if path is None:
            return text
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return Path(path)

    def to_dataset(self) -> xr.Dataset:
        """Per-record metrics and set metrics in one Dataset (what :meth:`to_netcdf` writes)."""
        parts = [self.metrics, self.set_metrics]
        if self.fidelity is not None:  # on every set (the reference's row empty), in the sets' order
            fill = {
                name: "" if var.dtype.kind in "OUS" else -1 if var.dtype.kind in "iu" else np.nan
                for name, var in self.fidelity.data_vars.items()
            }
            parts.append(self.fidelity.reindex({_SET: list(self.sources)}, fill_value=fill))
        out = xr.merge(parts, combine_attrs="override")
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
        for key, text in (("table_md", self.to_markdown()), ("table_tex", self.to_latex())):
            with atomic_path(paths[key], overwrite=overwrite) as tmp:
                tmp.write_text(text, encoding="utf-8")
        self.to_csv(paths["metrics_csv"], overwrite=overwrite)
        self.to_netcdf(paths["metrics_nc"], overwrite=overwrite)
        self.paths = paths
        return paths

    def __str__(self) -> str:
        return self.to_markdown()


def _markdown_table(frame: pd.DataFrame, align: str) -> list[str]:
    """GitHub Markdown rows of a table of strings: set names left, counts right, the cells ``align``-ed.

    Kept to a join (not ``DataFrame.to_markdown``) so that the package does not need ``tabulate``, and
    the rows stay unpadded (``| Data | 200 | ...``), as documented.
    """
    rows = [["", *map(str, frame.columns)], ["---", "---:", *[align] * (frame.shape[1] - 1)]]
    rows += [[str(name), *map(str, values)] for name, values in zip(frame.index, frame.to_numpy(), strict=True)]
    return ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _latex_table(frame: pd.DataFrame, caption: str, column_format: str) -> str:
    """A booktabs ``table`` of ``frame`` (cells already LaTeX, set names escaped), via pandas' Styler."""
    return frame.style.format_index(escape="latex", axis=0).to_latex(
        hrules=True,
        caption=caption,
        position="ht",
        position_float="centering",
        column_format=column_format,
        multicol_align="c",
    )


def _tex_heading(label: str, units: str) -> str:
    return f"{_tex_text(label)} ({_tex_text(units)})"


def _tex_text(text: str) -> str:
    """Plain text (captions, headers) as LaTeX: special characters escaped, ± and ° in math mode."""
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                          ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text.replace("±", r"$\pm$").replace("°", r"$^\circ$").replace("×", r"$\times$")


def _flat(metrics: xr.Dataset, ds: xr.Dataset, name: str) -> xr.Dataset:
    """One set's per-record metrics on dimension ``record`` with ``source`` and ``record_label``."""
    rdim = record_dim(ds)
    labels = record_labels(ds, rdim)
    flat = metrics.drop_vars(rdim, errors="ignore").rename({rdim: _RECORD})
    # coordinates of one set's records (XIOS's time_centered, time bounds) or scalar ones are not shared by
    # the other sets: the records keep record_label instead, so that the sets concatenate
    own = [name for name, coord in flat.coords.items() if coord.ndim == 0 or _RECORD in coord.dims]
    return flat.drop_vars(own).assign_coords(
        {
            _SOURCE: (_RECORD, np.array([name] * len(labels), dtype=object)),
            "record_label": (_RECORD, np.array(labels, dtype=object)),
        }
    )


def report(
    reference: xr.Dataset,
    samples: Mapping[str, xr.Dataset],
    *,
    eos: EosName = "auto",
    depth_box: float = 1500.0,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    reference_name: str = "Data",
    decimals: int | Mapping[str, int] | None = None,
    with_fidelity: bool = True,
) -> Report:
    """Compute the paper's table for a reference set and sample sets.

    Parameters
    ----------
    reference : xarray.Dataset
        The reference states (the training data), any record dimension.
    samples : mapping of str to xarray.Dataset
        Sample sets by name (e.g. ``{"No constraint": s0, "Constraint": s1}``), in row order.
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}, default "auto"
        Equation of state of the density errors, one for every set: ``"auto"`` matches the
        reference's salinity (:func:`xoceandiff.diagnostics.dataset_eos`: EOS-80 for practical
        salinity, TEOS-10 for absolute).
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
    with_fidelity : bool, default True
        Also measure each sample set's fidelity to the reference (:func:`xoceandiff.fidelity.fidelity`,
        the "Fidelity" table), in the same dask pass. A set on another grid, or too small for a measure
        (one record), gets "—" where the measure cannot be taken.

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
    eos = dataset_eos(reference, eos)
    lazy_metrics = {name: diagnostics(ds, eos=eos, depth_box=depth_box) for name, ds in sets.items()}
    lazy_sets = {}
    for name, ds in sets.items():
        parts = []
        if ds.sizes[record_dim(ds)] >= 2:
            parts.append(diversity(ds))
        if name != reference_name:
            parts.append(profile_distance(ds, reference))
        lazy_sets[name] = xr.merge(parts) if parts else xr.Dataset()
    lazy_fidelity = (
        {name: _lazy_fidelity(ds, reference, eos) for name, ds in samples.items()} if with_fidelity else {}
    )
    computed_metrics, computed_sets, computed_fidelity = dask.compute(lazy_metrics, lazy_sets, lazy_fidelity)

    flat = [_flat(computed_metrics[name], sets[name], name) for name in sets]
    metrics = xr.concat(flat, dim=_RECORD, coords="minimal", compat="override", combine_attrs="drop_conflicts")
    metrics = metrics.assign_coords({_RECORD: np.arange(metrics.sizes[_RECORD])})
    metrics.attrs = {
        "title": "Physical metrics of ocean states (Meunier et al. 2025, arXiv:2502.02499)",
        "history": computed_metrics[reference_name].attrs["history"].splitlines()[0],
    }

    columns = ["n_records", *SET_COLUMNS]
    table: dict[str, list[float]] = {key: [] for key in columns}
    for name, ds in sets.items():
        table["n_records"].append(ds.sizes[record_dim(ds)])
        for key in SET_COLUMNS:
            value = computed_sets[name].get(key)
            table[key].append(float(value) if value is not None else float("nan"))
    set_metrics = xr.Dataset({key: (_SET, values) for key, values in table.items()}, coords={_SET: list(sets)})
    for key in SET_COLUMNS:
        metric = metrics_for(salinity_kind(reference))[key]
        set_metrics[key].attrs = {"long_name": metric.label, "units": metric.cf_units}
    set_metrics["n_records"] = set_metrics["n_records"].astype(np.int64)
    set_metrics["n_records"].attrs = {"long_name": "Number of records in the set"}

    result = Report(
        fidelity=_fidelity_rows(computed_fidelity, salinity_kind(reference)) if computed_fidelity else None,
        metrics=metrics,
        set_metrics=set_metrics,
        sources=tuple(sets),
        eos=eos,
        depth_box=float(depth_box),
        salinity=salinity_kind(reference),
        decimals=dict(DEFAULT_DECIMALS) if decimals is None else decimals,
    )
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result


def _lazy_fidelity(ds: xr.Dataset, reference: xr.Dataset, eos: str) -> xr.Dataset:
    """:func:`~xoceandiff.fidelity.fidelity` of one set, or an empty Dataset where it cannot be measured.

    A set on a grid of another shape has no fidelity row (its cells show "—"); a set of one record has no
    spread ratio (a standard deviation needs two).
    """
    from .canonical import SPATIAL_DIMS

    if any(ds.sizes.get(dim) != reference.sizes.get(dim) for dim in SPATIAL_DIMS):
        return xr.Dataset()
    if ds.sizes[record_dim(ds)] < 2 or reference.sizes[record_dim(reference)] < 2:
        from .fidelity import density_errors_by_band, gradient_variance_ratio, range_violations

        return xr.merge([gradient_variance_ratio(ds, reference), range_violations(ds, reference),
                         density_errors_by_band(ds, reference, eos=eos)], combine_attrs="drop_conflicts")
    return fidelity(ds, reference, eos=eos)


def _fidelity_rows(computed: Mapping[str, xr.Dataset], salinity: str) -> xr.Dataset:
    """The scalar fidelity measures of every sample set on dimension ``set``, and each set's worst out-of-range cell."""
    metrics = fidelity_metrics_for(salinity)
    names = [name for name in metrics if any(name in ds for ds in computed.values())]
    rows: dict[str, Any] = {}
    for name in names:
        values = [float(ds[name]) if name in ds else math.nan for ds in computed.values()]
        rows[name] = xr.DataArray(
            np.array(values), dims=_SET, attrs={"long_name": metrics[name].label, "units": metrics[name].cf_units}
        )
    worst = {key: [] for key in _WORST}
    for ds in computed.values():
        attrs = annotate_worst(ds).attrs if any(k.startswith("range_low_") for k in ds.data_vars) else {}
        worst["field"].append(str(attrs.get("worst_field", "")))
        worst["level"].append(int(attrs.get("worst_level", -1)))
        worst["depth"].append(float(attrs.get("worst_depth", math.nan)))
        worst["value"].append(float(attrs.get("worst_value", math.nan)))
    descriptions = {
        "field": ("Field of the worst out-of-range cell (empty: none)", None),
        "level": ("Level index of the worst out-of-range cell (-1: none)", None),
        "depth": ("Depth of the worst out-of-range cell", "m"),
        "value": ("Value of the worst out-of-range cell", None),
    }
    for key, values in worst.items():
        long_name, units = descriptions[key]
        array = np.array(values, dtype=object if key == "field" else None)
        rows[f"range_worst_{key}"] = xr.DataArray(
            array, dims=_SET, attrs={"long_name": long_name, **({"units": units} if units else {})}
        )
    return xr.Dataset(rows, coords={_SET: list(computed)})
