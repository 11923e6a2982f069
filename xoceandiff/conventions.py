"""The CF table of xoceandiff, as data.

Which canonical fields exist, the names NEMO (and CMIP) give them, their CF standard names, units and
long names, and the CF attributes of the grid variables. Lookup code elsewhere reads these tables;
nothing here knows about files, grids or torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FieldSpec",
    "FIELDS",
    "FIELD_NAMES",
    "CF_CRITERIA",
    "GRID_ATTRS",
    "DIMS",
    "GRID_DIMS",
    "SAMPLE_DIM",
    "TIME_DIM",
    "PAPER_REFERENCE",
    "UnitRule",
    "UNITS",
    "SALINITY_KIND_OF_STANDARD_NAME",
    "PlausibleRange",
    "PLAUSIBLE_RANGES",
    "CALENDARS",
    "CONSTRAINT_NAMES",
]


@dataclass(frozen=True)
class FieldSpec:
    """How to recognise and describe one canonical field."""

    name: str
    standard_names: tuple[str, ...]
    aliases: tuple[str, ...]
    units: str
    long_name: str
    three_dimensional: bool

    @property
    def attrs(self) -> dict[str, str]:
        """Canonical CF attributes written on the field."""
        return {
            "standard_name": self.standard_names[0],
            "units": self.units,
            "long_name": self.long_name,
        }

    @property
    def cf_criteria(self) -> dict[str, str]:
        """cf-xarray custom criteria that match this field: any accepted standard name, or any alias.

        Each value is one anchored regular expression (cf-xarray matches with ``re.match``, which only
        anchors the start), so ``toce`` does not match ``toce_bounds``.

        Examples
        --------
        >>> FIELDS["ssh"].cf_criteria["name"]
        '^(?:ssh|ssh_inst|sossheig|zos|sshn)$'
        """
        return {
            "standard_name": _any_of(self.standard_names),
            "name": _any_of(self.aliases),
        }


def _any_of(words: tuple[str, ...]) -> str:
    return "^(?:" + "|".join(map(re.escape, words)) + ")$"


# Standard names are tried in order, then the NEMO / CMIP aliases in order. The first standard name
# is the one written: NEMO with ln_teos10 (the default) carries Conservative Temperature and
# Absolute Salinity in toce / soce.
FIELDS: dict[str, FieldSpec] = {
    "toce": FieldSpec(
        name="toce",
        standard_names=(
            "sea_water_conservative_temperature",
            "sea_water_potential_temperature",
            "sea_water_temperature",
        ),
        aliases=("toce", "toce_inst", "votemper", "thetao", "tn"),
        units="degC",
        long_name="Sea water temperature",
        three_dimensional=True,
    ),
    "soce": FieldSpec(
        name="soce",
        standard_names=(
            "sea_water_absolute_salinity",
            "sea_water_practical_salinity",
            "sea_water_reference_salinity",
            "sea_water_salinity",
        ),
        aliases=("soce", "soce_inst", "vosaline", "so", "sn"),
        units="g kg-1",
        long_name="Sea water salinity",
        three_dimensional=True,
    ),
    "ssh": FieldSpec(
        name="ssh",
        standard_names=("sea_surface_height_above_geoid", "sea_surface_height"),
        aliases=("ssh", "ssh_inst", "sossheig", "zos", "sshn"),
        units="m",
        long_name="Sea surface height",
        three_dimensional=False,
    ),
}
FIELD_NAMES: tuple[str, ...] = tuple(FIELDS)

# The same table as cf-xarray custom criteria: with
# ``cf_xarray.set_options(custom_criteria=CF_CRITERIA)``, ``ds.cf[["toce"]]`` finds the temperature of
# raw NEMO / CMIP output whatever its name. :func:`xoceandiff.nemo.find_field` ranks those candidates.
CF_CRITERIA: dict[str, dict[str, str]] = {name: spec.cf_criteria for name, spec in FIELDS.items()}


@dataclass(frozen=True)
class UnitRule:
    """How values written in one spelling of units become canonical: ``value * scale + offset``.

    ``salinity`` is the kind of salinity these units imply (``soce`` only; None: they do not say), and
    ``needs_standard_name`` marks units that are accepted only when the standard name says that kind
    (a mass fraction in kg/kg could be either kind).
    """

    units: str
    scale: float = 1.0
    offset: float = 0.0
    salinity: str | None = None
    needs_standard_name: bool = False

    @property
    def converts(self) -> bool:
        """Whether values change (not only the spelling of the units)."""
        return self.scale != 1.0 or self.offset != 0.0


def _spellings(rule: UnitRule, *names: str) -> dict[str, UnitRule]:
    return dict.fromkeys(names, rule)


# The units open_nemo accepts for each field, in the spellings met in files; they are compared in lower
# case with blanks collapsed ("Deg C" reads as "deg c"). The canonical units of soce depend on the kind of
# salinity: "1" for practical salinity (dimensionless, PSS-78), "g kg-1" for absolute salinity; the
# ``units`` of a salinity rule are those of the kind it implies. Anything else is refused.
UNITS: dict[str, dict[str, UnitRule]] = {
    "toce": {
        **_spellings(UnitRule("degC"), "degC", "C", "deg_C", "deg C", "celsius", "°C", "degree_Celsius",
                     "degrees_Celsius", "degree_C", "degrees_C", "degreeC", "degrees C"),
        **_spellings(UnitRule("degC", offset=-273.15), "K", "kelvin", "degK", "deg_K", "degree_Kelvin",
                     "degrees_Kelvin"),
    },
    "soce": {
        **_spellings(UnitRule("1", salinity="practical"), "PSU", "PSS-78", "PSS78", "1", "1e-3", "0.001",
                     "practical_salinity_unit", "practical_salinity_units"),
        **_spellings(UnitRule("g kg-1", salinity="absolute"), "g kg-1", "g/kg", "g kg^-1", "g.kg-1"),
        **_spellings(UnitRule("g kg-1", scale=1000.0, salinity="absolute", needs_standard_name=True),
                     "kg kg-1", "kg/kg", "kg kg^-1", "kg.kg-1"),
    },
    "ssh": {
        **_spellings(UnitRule("m"), "m", "meter", "metre", "meters", "metres"),
        **_spellings(UnitRule("m", scale=0.01), "cm", "centimeter", "centimetre", "centimeters", "centimetres"),
        **_spellings(UnitRule("m", scale=0.001), "mm", "millimeter", "millimetre", "millimeters", "millimetres"),
    },
}

# The kind of salinity each CF standard name of soce says (sea_water_salinity says neither). Reference
# salinity is TEOS-10's, in g kg-1, and goes with the TEOS-10 equation of state as absolute salinity does.
SALINITY_KIND_OF_STANDARD_NAME: dict[str, str] = {
    "sea_water_practical_salinity": "practical",
    "sea_water_absolute_salinity": "absolute",
    "sea_water_reference_salinity": "absolute",
}


@dataclass(frozen=True)
class PlausibleRange:
    """The values an ocean cell of a field can physically hold, in canonical units.

    ``max_at_least``: the largest ocean value of a record must reach it (salinity in kg/kg labelled
    g/kg holds 0.035 everywhere: inside the range, but no ocean is that fresh). ``deep_high``: the
    largest value allowed below ``deep_below`` metres (the deep ocean is nowhere warmer than ~22 °C, the
    Red Sea's; salinity read as temperature, 35 everywhere, is not).
    """

    low: float
    high: float
    max_at_least: float | None = None
    deep_high: float | None = None
    deep_below: float = 1000.0


PLAUSIBLE_RANGES: dict[str, PlausibleRange] = {
    "toce": PlausibleRange(-3.0, 40.0, deep_high=25.0),
    "soce": PlausibleRange(0.0, 45.0, max_at_least=1.0),
    "ssh": PlausibleRange(-10.0, 10.0),
}

# NEMO's calendar names (IOIPSL writes "360d", "noleap", "365d", "366d"; older XIOS "gregorian") and the
# CF names cftime decodes; names CF already knows map to themselves.
CALENDARS: dict[str, str] = {
    "360d": "360_day",
    "360_day": "360_day",
    "365d": "noleap",
    "365_day": "noleap",
    "noleap": "noleap",
    "no_leap": "noleap",
    "366d": "all_leap",
    "366_day": "all_leap",
    "all_leap": "all_leap",
    "gregorian": "standard",
    "standard": "standard",
    "proleptic_gregorian": "proleptic_gregorian",
    "julian": "julian",
}


# Dimension names of the canonical dataset: xnemogcm's (xgcm-ready) names for T points.
TIME_DIM = "t"
SAMPLE_DIM = "sample"
DIMS = {"X": "x_c", "Y": "y_c", "Z": "z_c"}

# CF attributes of grid variables and axes of the canonical dataset.
GRID_ATTRS: dict[str, dict[str, str]] = {
    "glamt": {"standard_name": "longitude", "units": "degrees_east", "long_name": "Longitude of T points"},
    "gphit": {"standard_name": "latitude", "units": "degrees_north", "long_name": "Latitude of T points"},
    "gdept_1d": {
        "standard_name": "depth",
        "units": "m",
        "positive": "down",
        "long_name": "Depth of T levels",
    },
    "tmask": {"long_name": "Land-sea mask at T points (1 ocean, 0 land)", "flag_values": "0 1", "flag_meanings": "land ocean"},
    "e1t": {"standard_name": "cell_x_length", "units": "m", "long_name": "Zonal size of T cells"},
    "e2t": {"standard_name": "cell_y_length", "units": "m", "long_name": "Meridional size of T cells"},
    "e1u": {"units": "m", "long_name": "Zonal size of U cells"},
    "e2u": {"units": "m", "long_name": "Meridional size of U cells"},
    "e1v": {"units": "m", "long_name": "Zonal size of V cells"},
    "e2v": {"units": "m", "long_name": "Meridional size of V cells"},
    "e1f": {"units": "m", "long_name": "Zonal size of F cells"},
    "e2f": {"units": "m", "long_name": "Meridional size of F cells"},
    "e3t": {"standard_name": "cell_thickness", "units": "m", "long_name": "Thickness of T cells"},
    "e3u": {"standard_name": "cell_thickness", "units": "m", "long_name": "Thickness of U cells"},
    "e3v": {"standard_name": "cell_thickness", "units": "m", "long_name": "Thickness of V cells"},
    "e3w": {"standard_name": "cell_thickness", "units": "m", "long_name": "Thickness of W cells"},
    "umask": {"long_name": "Land-sea mask at U points (1 ocean, 0 land)"},
    "vmask": {"long_name": "Land-sea mask at V points (1 ocean, 0 land)"},
    "x_c": {"axis": "X", "long_name": "Grid index of T points along i", "units": "1"},
    "x_f": {"axis": "X", "c_grid_axis_shift": 0.5, "long_name": "Grid index of U points along i", "units": "1"},
    "y_c": {"axis": "Y", "long_name": "Grid index of T points along j", "units": "1"},
    "y_f": {"axis": "Y", "c_grid_axis_shift": 0.5, "long_name": "Grid index of V points along j", "units": "1"},
    "z_c": {"axis": "Z", "positive": "down", "long_name": "Model level of T points", "units": "1"},
    "z_f": {"axis": "Z", "positive": "down", "c_grid_axis_shift": -0.5, "long_name": "Model level of W points", "units": "1"},
    "t": {"standard_name": "time", "axis": "T", "long_name": "Time"},
}

# The axes of the C grid, T points and faces (x_c, x_f, ...): a coordinate on these alone is a grid variable.
GRID_DIMS: frozenset[str] = frozenset(n for n, attrs in GRID_ATTRS.items() if attrs.get("axis") in ("X", "Y", "Z"))

PAPER_REFERENCE = (
    "Meunier, Kamm, Gachon, Lguensat and Deshayes (2025): Learning to generate physical ocean "
    "states: towards hybrid climate modeling. arXiv:2502.02499"
)

# The names of the constraint registry and its combinations (xoceandiff.constraints.CONSTRAINTS and
# ALIASES), as data: the command line checks --constraints against them without importing torch.
# tests/test_reliability_cli.py checks that both lists agree.
CONSTRAINT_NAMES: tuple[str, ...] = (
    "zero_mean",
    "gradient_zero_mean",
    "border_zero",
    "border_zero_gradient",
    "stable_stratification",
    "convective_adjustment",
    "border_zero_gradient_zero_mean",
)
