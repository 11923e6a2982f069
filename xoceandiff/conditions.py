"""Conditions a model can be trained on and sampled for: the day of the year, the time in the run, parameters.

A condition is read from the records' time coordinate (its calendar included) and encoded for the network:

- ``day_of_year`` (0-based, fractional), periodic: :math:`(\\sin 2\\pi d/P, \\cos 2\\pi d/P)` with :math:`P` the
  days of the calendar's year (360 for NEMO's ``360d``), so that 31 December and 1 January are neighbours;
- ``run_time``, the record's time in model years (``year + day_of_year / P``), scaled to [-1, 1] over the
  training records (the spin-up phase);
- any other name is a scalar parameter of the run (a forcing amplitude, a namelist coefficient), given per
  record as the coordinate ``condition_<name>`` along the record dimension (``train(parameters=...)`` adds
  it), scaled to [-1, 1] over its training range; sampling asks for a value within that range, between the
  runs trained on.

Each condition also gets a presence flag: at training a condition is dropped (features and flag zeroed) with a
small probability, so that the network also learns the unconditional distribution (classifier-free guidance);
at sampling, a condition not asked for is absent in the same way.

This module is a leaf: numpy, xarray and the package's errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from .errors import CheckpointError, InvalidDataError, MissingVariableError

__all__ = [
    "CONDITION_NAMES",
    "ConditionSpec",
    "condition_date",
    "yyyymmdd",
    "encode_conditions",
    "record_conditions",
    "requested_conditions",
]

CONDITION_NAMES: tuple[str, ...] = ("day_of_year", "run_time")
_DAYS = {"360_day": 360.0, "noleap": 365.0, "365_day": 365.0, "all_leap": 366.0, "366_day": 366.0}


@dataclass(frozen=True)
class ConditionSpec:
    """One condition of a model: its name and what its encoding needs (the calendar's year, the run's span)."""

    name: str
    days_per_year: float
    calendar: str
    start: float | None = None  # run_time: first and last training record, model years
    end: float | None = None

    @property
    def width(self) -> int:
        """Network inputs of this condition, its presence flag included."""
        return 3 if self.name == "day_of_year" else 2

    @property
    def is_parameter(self) -> bool:
        """A scalar parameter of the run, not read from the time coordinate."""
        return self.name not in CONDITION_NAMES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConditionSpec:
        return cls(**{k: data[k] for k in ("name", "days_per_year", "calendar", "start", "end") if k in data})


def _times(ds: xr.Dataset | xr.DataArray) -> tuple[xr.DataArray, str]:
    """The record time coordinate and its calendar."""
    for name in ("t", "time_counter", "time"):
        if name in ds.coords and ds[name].ndim == 1:
            time = ds[name]
            break
    else:
        raise MissingVariableError(
            "conditions: the data have no time coordinate (t, time_counter or time) to read the day of the year "
            "and the time in the run from; open NEMO output with its times (xoceandiff.open_nemo does)."
        )
    if time.dtype.kind == "M":
        return time, "standard"
    if time.dtype == object and hasattr(time.values[0], "calendar"):
        return time, str(time.values[0].calendar)
    raise InvalidDataError(f"conditions: the time coordinate {time.name!r} holds {time.dtype}, not dates; "
                           "open the files with decoded times.")


def _days_per_year(calendar: str) -> float:
    return _DAYS.get(calendar, 365.2425)


def record_conditions(ds: xr.Dataset, names: Sequence[str]) -> tuple[tuple[ConditionSpec, ...], dict[str, np.ndarray]]:
    """The specs of ``names`` for the records of ``ds``, and each condition's value per record.

    Examples
    --------
    >>> import pathlib, xoceandiff
    >>> folder = pathlib.Path(xoceandiff.__file__).parents[1] / "tests" / "data" / "gyre"
    >>> ds = xoceandiff.open_nemo(sorted(folder.glob("GYRE_5d_*.nc")), mesh_mask=folder / "mesh_mask.nc")
    >>> specs, values = record_conditions(ds, ["day_of_year"])
    >>> specs[0].days_per_year, specs[0].calendar, values["day_of_year"][:2].tolist()
    (360.0, '360_day', [2.5, 7.5])
    """
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise InvalidDataError(f"conditions: expected distinct names ({', '.join(CONDITION_NAMES)} or parameter "
                               f"names), found {list(names)}.")
    parameters = [n for n in names if n not in CONDITION_NAMES]
    if parameters and len(parameters) == len(names):
        specs, values = [], {}
    else:
        specs, values = _time_conditions(ds, [n for n in names if n in CONDITION_NAMES])
    for name in parameters:
        column = parameter_values(ds, name)
        values[name] = column
        specs.append(ConditionSpec(name, 0.0, "", float(column.min()), float(column.max())))
    order = {name: i for i, name in enumerate(names)}
    specs.sort(key=lambda spec: order[spec.name])
    return tuple(specs), {name: values[name] for name in names}


def parameter_values(ds: xr.Dataset, name: str) -> np.ndarray:
    """The values per record of the parameter ``name`` (the coordinate ``condition_<name>``)."""
    key = f"condition_{name}"
    if key not in ds.coords or ds[key].ndim != 1:
        raise MissingVariableError(
            f"condition {name!r}: not a time condition ({', '.join(CONDITION_NAMES)}), and the data have no "
            f"coordinate {key!r} giving its value per record; pass train(..., parameters={{{name!r}: values}}) "
            "with one value per record (np.repeat(per_file_values, records_per_file) for one value per file)."
        )
    column = np.asarray(ds[key].values, dtype=np.float64)
    if not np.all(np.isfinite(column)):
        raise InvalidDataError(f"condition {name!r}: the values per record must be finite, found {column[:5]}...")
    return column


def _time_conditions(ds: xr.Dataset, names: Sequence[str]) -> tuple[list[ConditionSpec], dict[str, np.ndarray]]:
    time, calendar = _times(ds)
    period = _days_per_year(calendar)
    if time.dtype.kind == "M":
        stamps = time.to_index()
        day = np.asarray(stamps.day_of_year - 1 + stamps.hour / 24.0, dtype=np.float64)
        year = np.asarray(stamps.year, dtype=np.float64)
    else:
        day = np.array([v.dayofyr - 1 + v.hour / 24.0 for v in time.values], dtype=np.float64)
        year = np.array([v.year for v in time.values], dtype=np.float64)
    values = {"day_of_year": day, "run_time": year + day / period}
    specs = []
    for name in names:
        if name == "run_time":
            span = values["run_time"]
            specs.append(ConditionSpec(name, period, calendar, float(span.min()), float(span.max())))
        else:
            specs.append(ConditionSpec(name, period, calendar))
    return specs, {name: values[name] for name in names}


def encode_conditions(specs: Sequence[ConditionSpec], values: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """``(count, sum of widths)`` network inputs; a condition missing from ``values`` is encoded as absent.

    Examples
    --------
    >>> spec = ConditionSpec("day_of_year", 360.0, "360_day")
    >>> encode_conditions([spec], {"day_of_year": np.array([90.0])}, 1).round(6).tolist()
    [[1.0, 0.0, 1.0]]
    >>> encode_conditions([spec], {}, 1).tolist()
    [[0.0, 0.0, 0.0]]
    """
    columns = []
    for spec in specs:
        if spec.name not in values:
            columns.append(np.zeros((count, spec.width)))
            continue
        v = np.broadcast_to(np.asarray(values[spec.name], dtype=np.float64), (count,))
        if spec.name == "day_of_year":
            angle = 2.0 * np.pi * v / spec.days_per_year
            columns.append(np.stack([np.sin(angle), np.cos(angle), np.ones(count)], axis=1))
        else:
            span = (spec.end or 0.0) - (spec.start or 0.0)
            scaled = 2.0 * (v - spec.start) / span - 1.0 if span > 0 else np.zeros(count)
            columns.append(np.stack([scaled, np.ones(count)], axis=1))
    return np.concatenate(columns, axis=1) if columns else np.zeros((count, 0))


def requested_conditions(specs: Sequence[ConditionSpec], condition: Mapping[str, Any] | None,
                         n: int) -> dict[str, np.ndarray] | None:
    """``condition`` checked against the model's conditions, as one value per sample (None: unconditional).

    Each value is a number for every sample or a sequence of ``n``. ``day_of_year`` is 0-based (0 is 1 January)
    and below the calendar's days per year; ``run_time`` is in model years (e.g. 58.5 for mid-year 58).

    Raises
    ------
    xoceandiff.errors.CheckpointError
        The model was not trained with a condition asked for.
    xoceandiff.errors.InvalidDataError
        A value of the wrong length or out of range.
    """
    if not condition:
        return None
    known = {spec.name: spec for spec in specs}
    out = {}
    for name, value in condition.items():
        if name not in known:
            trained = ", ".join(known) or "none"
            raise CheckpointError(f"condition {name!r}: the model was not trained with it (its conditions: {trained}); "
                                  "train with conditions=[...] (--conditions) to sample for it.")
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 0:
            array = np.full(n, float(array))
        if array.shape != (n,) or not np.all(np.isfinite(array)):
            raise InvalidDataError(f"condition {name!r}: expected a finite number or {n} of them (one per sample), "
                                   f"found {value!r}.")
        spec = known[name]
        if name == "day_of_year" and (array.min() < 0 or array.max() >= spec.days_per_year):
            raise InvalidDataError(f"condition 'day_of_year': expected 0 <= day < {spec.days_per_year:g} (0 is "
                                   f"1 January in the {spec.calendar} calendar), found {value!r}.")
        if spec.is_parameter and (array.min() < spec.start or array.max() > spec.end):
            raise InvalidDataError(f"condition {name!r}: expected values within the training range "
                                   f"[{spec.start:g}, {spec.end:g}] (between the runs trained on), found {value!r}.")
        out[name] = array
    return out


def condition_date(spec_calendar: str, day_of_year: float, year: int) -> Any:
    """The cftime date of ``day_of_year`` (0-based) in ``year`` of the calendar (00:00 of that day).

    Examples
    --------
    >>> condition_date("360_day", 180, 59).strftime("%Y-%m-%d")
    '0059-07-01'
    """
    import datetime

    import cftime

    start = cftime.datetime(int(year), 1, 1, calendar=spec_calendar)
    return start + datetime.timedelta(days=int(np.floor(day_of_year)))


def yyyymmdd(value: Any) -> int:
    """NEMO's integer date ``yyyymmdd`` of a time value: numpy datetime64 or cftime (any calendar).

    Examples
    --------
    >>> yyyymmdd(np.datetime64("2024-03-01T12:00")), yyyymmdd(condition_date("360_day", 180, 59))
    (20240301, 590701)
    """
    if isinstance(value, np.datetime64):
        return int(np.datetime_as_string(value, unit="D").replace("-", ""))
    return int(value.year * 10000 + value.month * 100 + value.day)
