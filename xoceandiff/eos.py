"""Equations of state of sea water: potential density from temperature and salinity.

Three equations of state are provided, each evaluated from a single table of coefficients:

``"teos10-poly"``
    The polynomial fit to TEOS-10 used by NEMO (``src/OCE/TRA/eosbn2.F90``), from
    Roquet, F., Madec, G., McDougall, T. J. and Barker, P. M. (2015), "Accurate polynomial
    expressions for the density and specific volume of seawater using the TEOS-10 standard",
    *Ocean Modelling*, 90, 29-43, doi:10.1016/j.ocemod.2015.04.002. The coefficients are package
    data (``xoceandiff/data/eos_teos10_polynomial.json``); the surface-referenced potential density
    uses its 28 ``EOSij0`` terms.
``"eos80-poly"``
    The polynomial fit to EOS-80 of the same paper, as coded in NEMO 5.0 (the ``np_eos80`` case of
    ``eosbn2``, ``ln_eos80 = .true.``, what GYRE runs with): the same functional form with other
    coefficients, taking potential temperature (°C) and practical salinity. The coefficients are
    package data (``xoceandiff/data/eos_eos80_polynomial.json``); the potential density uses its
    28 ``EOSij0`` terms. It agrees with TEOS-10 evaluated at the reference salinity of the practical
    salinity (``gsw.sigma0(SR, CT_from_pt(SR, T))``) to better than 1e-3 kg m-3 and with the UNESCO
    (1981) EOS-80 formula to about 1e-2 kg m-3 over the ocean's range.
``"seos"``
    The simplified S-EOS of the same paper, as run by the DINO configuration: linear in salinity,
    quadratic in temperature, with a thermobaric term.

Every function is plain arithmetic (``+``, ``*``, ``abs``, ``** 0.5``), so the same code runs
unchanged on Python floats, numpy arrays, xarray DataArrays (dask-backed ones stay lazy) and torch
tensors (differentiable through autograd, dtype and device preserved). Where an input is a
DataArray, the result is a DataArray named ``rhop`` with CF attributes.

In NEMO the model fields are used directly as the variables of the chosen equation of state:
Conservative Temperature (°C) and Absolute Salinity (g/kg) for TEOS-10, potential temperature (°C)
and practical salinity for EOS-80; so are they here. Which one a dataset needs follows from its
salinity (:func:`xoceandiff.canonical.eos_for`; ``eos="auto"`` in the diagnostics, the report and the
``stable_stratification`` constraint).
"""

from __future__ import annotations

import json
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import xarray as xr

from xoceandiff.errors import InvalidDataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "EOS_NAMES",
    "AUTO_EOS",
    "EOS_OF_SALINITY",
    "SEOS_CONSTANTS",
    "TEOS10_CONSTANTS",
    "TEOS10_COEFFICIENTS",
    "EOS80_CONSTANTS",
    "EOS80_COEFFICIENTS",
    "resolve_eos",
    "sigma0_teos10",
    "sigma0_eos80",
    "density_seos",
    "potential_density",
    "potential_density_and_gradient",
]

FieldLike: TypeAlias = "float | np.ndarray | xr.DataArray | torch.Tensor"
"""What the functions accept and return: a number, a numpy array, a DataArray or a torch tensor."""

EOS_NAMES: tuple[str, ...] = ("teos10-poly", "eos80-poly", "seos")
"""Names accepted by :func:`potential_density`."""

AUTO_EOS = "auto"
"""The name that asks for the equation of state matching the salinity (see :func:`resolve_eos`)."""

EOS_OF_SALINITY: MappingProxyType[str, str] = MappingProxyType(
    {"practical": "eos80-poly", "absolute": "teos10-poly"}
)
"""The equation of state of each kind of salinity: EOS-80 runs carry practical salinity, TEOS-10 runs absolute."""

_DATA_FILE = "eos_teos10_polynomial.json"
_EOS80_DATA_FILE = "eos_eos80_polynomial.json"
_OUTPUT_NAME = "rhop"
_STANDARD_NAME = "sea_water_potential_density"
_UNITS = "kg m-3"
_POLY_DEGREE = 6  # total degree in (zs, zt) of the surface terms EOSij0


def _load_table(filename: str = _DATA_FILE) -> dict:
    """Read a coefficient table shipped as package data."""
    text = (
        resources.files("xoceandiff")
        .joinpath("data")
        .joinpath(filename)
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


_TABLE = _load_table(_DATA_FILE)
_EOS80_TABLE = _load_table(_EOS80_DATA_FILE)

TEOS10_CONSTANTS: MappingProxyType[str, float] = MappingProxyType(
    {name: float(value) for name, value in _TABLE["constants"].items()}
)
"""Scaling constants of the TEOS-10 polynomial: ``rdeltaS``, ``r1_S0``, ``r1_T0``, ``r1_Z0``."""

TEOS10_COEFFICIENTS: MappingProxyType[str, float] = MappingProxyType(
    {name: float(value) for name, value in _TABLE["coefficients"].items()}
)
"""The coefficients ``EOSijk`` (multiplying ``zs**i * zt**j * zh**k``), read from package data."""

EOS80_CONSTANTS: MappingProxyType[str, float] = MappingProxyType(
    {name: float(value) for name, value in _EOS80_TABLE["constants"].items()}
)
"""Scaling constants of the EOS-80 polynomial: ``rdeltaS = 20``, ``r1_S0 = r1_T0 = 1/40``, ``r1_Z0``."""

EOS80_COEFFICIENTS: MappingProxyType[str, float] = MappingProxyType(
    {name: float(value) for name, value in _EOS80_TABLE["coefficients"].items()}
)
"""The EOS-80 coefficients ``EOSijk`` (multiplying ``zs**i * zt**j * zh**k``), read from package data."""


def _surface_horner_table(
    coefficients: MappingProxyType[str, float] = TEOS10_COEFFICIENTS, filename: str = _DATA_FILE
) -> tuple[tuple[float, ...], ...]:
    """Arrange the ``EOSij0`` coefficients for Horner's scheme.

    Element ``j`` holds the coefficients of ``zt**j`` as a polynomial in ``zs``, in ascending powers
    of ``zs``: ``(EOS0j0, EOS1j0, ..., EOS(6-j)j0)``.
    """
    rows = []
    for j in range(_POLY_DEGREE + 1):
        try:
            rows.append(
                tuple(coefficients[f"EOS{i}{j}0"] for i in range(_POLY_DEGREE + 1 - j))
            )
        except KeyError as err:  # pragma: no cover - the shipped tables are complete
            raise InvalidDataError(
                f"the coefficient table {filename!r} lacks {err.args[0]}; reinstall xoceandiff"
            ) from None
    return tuple(rows)


_SIGMA0_HORNER = _surface_horner_table(TEOS10_COEFFICIENTS, _DATA_FILE)
_EOS80_SIGMA0_HORNER = _surface_horner_table(EOS80_COEFFICIENTS, _EOS80_DATA_FILE)

_POLYNOMIALS: MappingProxyType[str, tuple[MappingProxyType[str, float], tuple[tuple[float, ...], ...]]] = (
    MappingProxyType(
        {
            "teos10-poly": (TEOS10_CONSTANTS, _SIGMA0_HORNER),
            "eos80-poly": (EOS80_CONSTANTS, _EOS80_SIGMA0_HORNER),
        }
    )
)
"""Constants and Horner table of each polynomial equation of state."""

SEOS_CONSTANTS: MappingProxyType[str, float] = MappingProxyType(
    {
        "a0": 0.165,  # linear thermal expansion coefficient, kg m-3 K-1
        "b0": 0.76554,  # linear haline contraction coefficient, kg m-3 (g/kg)-1
        "lambda1": 0.06,  # cabbeling coefficient in T^2, K-1
        "mu1": 1.497e-4,  # thermobaric coefficient, m-1
        "T0": 10.0,  # reference temperature, degC
        "S0": 35.0,  # reference salinity, g/kg
    }
)
"""Constants of the simplified S-EOS as run by DINO (Roquet et al. 2015)."""


def _horner(coefficients: tuple[float, ...], x: FieldLike) -> FieldLike:
    """Evaluate ``sum_n coefficients[n] * x**n`` by Horner's scheme."""
    result = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        result = result * x + c
    return result


def _unknown_eos(eos: object) -> InvalidDataError:
    """The error for an equation of state that is not one of :data:`EOS_NAMES`."""
    return InvalidDataError(
        f"unknown equation of state eos={eos!r}; expected one of "
        f"{', '.join(repr(name) for name in EOS_NAMES)}"
    )


def resolve_eos(eos: str, salinity: str = "absolute") -> str:
    """The equation of state to use: ``eos`` itself, or for ``"auto"`` the one of the salinity kind.

    Parameters
    ----------
    eos : {"auto", "teos10-poly", "eos80-poly", "seos"}
        ``"auto"`` picks from ``salinity`` through :data:`EOS_OF_SALINITY`; any other name is
        checked and returned unchanged.
    salinity : {"absolute", "practical"}, default "absolute"
        The kind of salinity of the fields (:func:`xoceandiff.canonical.salinity_kind` of a dataset).

    Returns
    -------
    str
        One of :data:`EOS_NAMES`.

    Raises
    ------
    InvalidDataError
        An unknown ``eos``, or an unknown ``salinity`` with ``eos="auto"``.

    Examples
    --------
    >>> resolve_eos("auto", "practical"), resolve_eos("auto", "absolute")
    ('eos80-poly', 'teos10-poly')
    >>> resolve_eos("seos", "practical")
    'seos'
    """
    if eos == AUTO_EOS:
        try:
            return EOS_OF_SALINITY[salinity]
        except (KeyError, TypeError):
            raise InvalidDataError(
                f"salinity: expected one of {', '.join(map(repr, EOS_OF_SALINITY))} to choose the "
                f"equation of state for eos='auto', found {salinity!r}; pass the salinity kind of the "
                "fields, or an explicit eos name."
            ) from None
    if eos not in EOS_NAMES:
        raise _unknown_eos(eos)
    return eos


def _finish(result: FieldLike, long_name: str) -> FieldLike:
    """Give DataArray results a name and CF attributes; leave anything else untouched."""
    if isinstance(result, xr.DataArray):
        result = result.rename(_OUTPUT_NAME)
        result.attrs = {
            "standard_name": _STANDARD_NAME,
            "units": _UNITS,
            "long_name": long_name,
        }
    return result


def sigma0_teos10(temperature: FieldLike, salinity: FieldLike) -> FieldLike:
    r"""Potential density referenced to the surface, NEMO TEOS-10 polynomial.

    The polynomial of Roquet et al. (2015) as coded in NEMO, evaluated at zero depth:

    .. math::

        \rho_\theta = \sum_{i=0}^{6} \sum_{j=0}^{6-i} \mathrm{EOS}_{ij0}\, z_s^i\, z_t^j,
        \qquad z_t = T\, r_{1,T0}, \qquad
        z_s = \sqrt{\lvert S + \delta_S \rvert\, r_{1,S0}}

    with :math:`r_{1,T0} = 1/40`, :math:`\delta_S = 32` and :math:`r_{1,S0} = 0.875/35.16504`.
    It is evaluated by Horner's scheme, nested in :math:`z_t` whose coefficients are polynomials in
    :math:`z_s`. The result agrees with TEOS-10 (``gsw.sigma0(SA, CT) + 1000``) to about
    :math:`10^{-3}` kg m-3 over the oceanic range.

    Parameters
    ----------
    temperature : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Conservative Temperature :math:`T` (°C).
    salinity : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Absolute Salinity :math:`S` (g/kg), broadcastable against ``temperature``.

    Returns
    -------
    float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Potential density :math:`\sigma_0 + 1000` (kg m-3), of the type of the inputs. A DataArray
        result is named ``rhop`` and carries ``standard_name``, ``units`` and ``long_name``;
        dask-backed inputs give a lazy result; torch inputs keep their dtype, device and graph.

    References
    ----------
    Roquet, F., Madec, G., McDougall, T. J. and Barker, P. M. (2015). Accurate polynomial
    expressions for the density and specific volume of seawater using the TEOS-10 standard.
    Ocean Modelling, 90, 29-43.

    Examples
    --------
    >>> round(float(sigma0_teos10(10.0, 35.0)), 4)
    1026.8248
    >>> round(float(sigma0_teos10(0.0, 35.0)), 4)
    1027.9744
    """
    result = _sigma0_polynomial(temperature, salinity, "teos10-poly")
    return _finish(result, "Sea water potential density (TEOS-10 polynomial, surface reference)")


def sigma0_eos80(temperature: FieldLike, salinity: FieldLike) -> FieldLike:
    r"""Potential density referenced to the surface, NEMO EOS-80 polynomial.

    The EOS-80 polynomial of Roquet et al. (2015) as coded in NEMO 5.0 (``ln_eos80``), evaluated at
    zero depth, the same sum as :func:`sigma0_teos10` over its own ``EOSij0`` coefficients:

    .. math::

        \rho_\theta = \sum_{i=0}^{6} \sum_{j=0}^{6-i} \mathrm{EOS}_{ij0}\, z_s^i\, z_t^j,
        \qquad z_t = \theta / 40, \qquad z_s = \sqrt{\lvert S_P + 20 \rvert / 40}

    Over :math:`-2 \le \theta \le 35` °C, :math:`0 \le S_P \le 42` it agrees with TEOS-10 at the
    reference salinity :math:`S_R = S_P \cdot 35.16504/35` and the Conservative Temperature of
    :math:`\theta` to 6e-4 kg m-3 (the fit's target), and with the UNESCO (1981) one-atmosphere
    EOS-80 to 1.2e-2 kg m-3 (2.3e-3 at 10 °C, 35), the difference between the two standards.

    Parameters
    ----------
    temperature : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Potential temperature :math:`\theta` (°C).
    salinity : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Practical salinity :math:`S_P` (PSS-78, unitless), broadcastable against ``temperature``.

    Returns
    -------
    float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Potential density :math:`\sigma_0 + 1000` (kg m-3), of the type of the inputs; a DataArray
        result is named ``rhop`` with CF attributes, dask stays lazy, torch keeps dtype, device and
        graph.

    References
    ----------
    Roquet, F., Madec, G., McDougall, T. J. and Barker, P. M. (2015). Accurate polynomial
    expressions for the density and specific volume of seawater using the TEOS-10 standard.
    Ocean Modelling, 90, 29-43.

    Examples
    --------
    >>> round(float(sigma0_eos80(10.0, 35.0)), 4)
    1026.9543
    >>> bool(sigma0_eos80(0.0, 35.0) > sigma0_eos80(10.0, 35.0))
    True
    """
    result = _sigma0_polynomial(temperature, salinity, "eos80-poly")
    return _finish(result, "Sea water potential density (EOS-80 polynomial, surface reference)")


def _sigma0_polynomial(temperature: FieldLike, salinity: FieldLike, eos: str) -> FieldLike:
    """The surface terms of polynomial ``eos`` by Horner's scheme, nested in ``zt``."""
    constants, horner = _POLYNOMIALS[eos]
    zt = temperature * constants["r1_T0"]
    zs = (abs(salinity + constants["rdeltaS"]) * constants["r1_S0"]) ** 0.5
    result = _horner(horner[-1], zs)
    for row in reversed(horner[:-1]):
        result = result * zt + _horner(row, zs)
    return result


def _horner_and_derivative(coefficients: tuple[float, ...], x):
    """``p(x)`` and ``p'(x)`` of ``p = sum_n coefficients[n] * x**n`` in one Horner pass."""
    value = coefficients[-1] + 0 * x
    derivative = 0 * x
    for c in reversed(coefficients[:-1]):
        derivative = derivative * x + value
        value = value * x + c
    return value, derivative


def potential_density_and_gradient(
    temperature: FieldLike, salinity: FieldLike, eos: str = "teos10-poly"
) -> tuple[FieldLike, FieldLike, FieldLike]:
    r"""Potential density and its partial derivatives :math:`\partial\rho/\partial T`, :math:`\partial\rho/\partial S`.

    Analytic derivatives from the same coefficient table (Horner's scheme with derivative), for
    numpy arrays and torch tensors; used where a gradient is needed many times (the
    ``stable_stratification`` constraint) at about the cost of two evaluations, without autograd.

    Parameters
    ----------
    temperature, salinity : float, numpy.ndarray or torch.Tensor
        The variables of ``eos`` (see :func:`potential_density`).
    eos : {"teos10-poly", "eos80-poly", "seos"}, default "teos10-poly"
        Equation of state.

    Returns
    -------
    tuple
        ``(rho, drho_dT, drho_dS)`` in kg m-3, kg m-3 K-1 and kg m-3 per unit of salinity.

    Raises
    ------
    InvalidDataError
        If ``eos`` is not one of :data:`EOS_NAMES`.

    Examples
    --------
    >>> rho, d_t, d_s = potential_density_and_gradient(10.0, 35.0)
    >>> round(float(rho), 4), round(float(d_t), 4), round(float(d_s), 4)
    (1026.8248, -0.1707, 0.7739)
    >>> rho, d_t, d_s = potential_density_and_gradient(10.0, 35.0, eos="eos80-poly")
    >>> round(float(rho), 4), round(float(d_t), 4), round(float(d_s), 4)
    (1026.9543, -0.171, 0.7808)
    """
    if eos == "seos":
        c = SEOS_CONSTANTS
        ta = temperature - c["T0"]
        rho = density_seos(temperature, salinity)
        return rho, -c["a0"] * (1 + c["lambda1"] * ta) + 0 * salinity, c["b0"] + 0 * temperature + 0 * salinity
    if eos not in _POLYNOMIALS:
        raise _unknown_eos(eos)
    constants, horner = _POLYNOMIALS[eos]
    zt = temperature * constants["r1_T0"]
    shifted = salinity + constants["rdeltaS"]
    zs = (abs(shifted) * constants["r1_S0"]) ** 0.5
    value, d_zs = _horner_and_derivative(horner[-1], zs)
    d_zt = 0 * zt
    for row in reversed(horner[:-1]):
        row_value, row_derivative = _horner_and_derivative(row, zs)
        d_zt = d_zt * zt + value
        d_zs = d_zs * zt + row_derivative
        value = value * zt + row_value
    # zs = sqrt(|S + dS| r1_S0): dzs/dS = r1_S0 / (2 zs) (S + dS > 0 in any ocean)
    return value, d_zt * constants["r1_T0"], d_zs * (constants["r1_S0"] / (2 * zs))


def density_seos(
    temperature: FieldLike,
    salinity: FieldLike,
    depth: FieldLike = 0.0,
    rho0: float = 1026.0,
) -> FieldLike:
    r"""Density from the simplified S-EOS that DINO runs with.

    .. math::

        \rho = \rho_0 - a_0 \left(1 + \tfrac{1}{2} \lambda_1 T_a + \mu_1 z\right) T_a + b_0 S_a,
        \qquad T_a = T - 10, \qquad S_a = S - 35

    with :math:`a_0 = 0.165`, :math:`b_0 = 0.76554`, :math:`\lambda_1 = 0.06`,
    :math:`\mu_1 = 1.497 \times 10^{-4}` (see :data:`SEOS_CONSTANTS`) and :math:`z` the depth in m,
    positive down. The :math:`\mu_1 z` term is thermobaricity; at ``depth=0`` the result is the
    potential density referenced to the surface.

    Parameters
    ----------
    temperature : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Temperature :math:`T` (°C).
    salinity : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Salinity :math:`S` (g/kg), broadcastable against ``temperature``.
    depth : float, numpy.ndarray, xarray.DataArray or torch.Tensor, default 0.0
        Depth :math:`z` (m, positive down), broadcastable against the other inputs.
    rho0 : float, default 1026.0
        Reference density :math:`\rho_0` (kg m-3). A constant offset: it does not change which
        cells are statically unstable.

    Returns
    -------
    float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Density (kg m-3), of the type of the inputs; a DataArray result is named ``rhop`` and
        carries ``standard_name``, ``units`` and ``long_name``.

    Examples
    --------
    >>> float(density_seos(10.0, 35.0))
    1026.0
    >>> round(float(density_seos(20.0, 36.0, depth=1000.0)), 6)
    1024.373535
    """
    c = SEOS_CONSTANTS
    ta = temperature - c["T0"]
    sa = salinity - c["S0"]
    result = rho0 - c["a0"] * (1.0 + 0.5 * c["lambda1"] * ta + c["mu1"] * depth) * ta + c["b0"] * sa
    return _finish(result, "Sea water potential density (simplified S-EOS)")


def potential_density(
    temperature: FieldLike, salinity: FieldLike, eos: str = "teos10-poly"
) -> FieldLike:
    """Potential density referenced to the surface, from the named equation of state.

    Parameters
    ----------
    temperature : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Temperature (°C): Conservative Temperature for ``"teos10-poly"``, potential temperature
        for ``"eos80-poly"``.
    salinity : float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Salinity: Absolute Salinity (g/kg) for ``"teos10-poly"``, practical salinity for
        ``"eos80-poly"``.
    eos : {"teos10-poly", "eos80-poly", "seos"}, default "teos10-poly"
        ``"teos10-poly"``: :func:`sigma0_teos10` (what the paper's density metrics use).
        ``"eos80-poly"``: :func:`sigma0_eos80` (NEMO runs with ``ln_eos80``, practical salinity).
        ``"seos"``: :func:`density_seos` at ``depth=0`` with the default ``rho0``.
        ``"auto"`` needs the salinity kind of a dataset: choose with :func:`resolve_eos`
        (the diagnostics do it for a dataset).

    Returns
    -------
    float, numpy.ndarray, xarray.DataArray or torch.Tensor
        Potential density (kg m-3), of the type of the inputs.

    Raises
    ------
    InvalidDataError
        If ``eos`` is not one of :data:`EOS_NAMES` (``"auto"`` included: there is no dataset here
        to choose from).

    Examples
    --------
    >>> round(float(potential_density(10.0, 35.0)), 4)
    1026.8248
    >>> round(float(potential_density(10.0, 35.0, eos="eos80-poly")), 4)
    1026.9543
    >>> float(potential_density(10.0, 35.0, eos="seos"))
    1026.0
    """
    if eos == "teos10-poly":
        return sigma0_teos10(temperature, salinity)
    if eos == "eos80-poly":
        return sigma0_eos80(temperature, salinity)
    if eos == "seos":
        return density_seos(temperature, salinity, depth=0.0)
    if eos == AUTO_EOS:
        raise InvalidDataError(
            "eos='auto' chooses the equation of state from a dataset's salinity, and potential_density "
            "gets only arrays; pass eos=resolve_eos('auto', salinity_kind) or an explicit name "
            f"({', '.join(repr(name) for name in EOS_NAMES)})."
        )
    raise _unknown_eos(eos)
