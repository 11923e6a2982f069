"""The exception hierarchy of xoceandiff.

Every error raised on bad input derives from :class:`XOceanDiffError`, and from the builtin that a
user would catch for the same mistake (``ValueError``, ``KeyError``, ...), so both ``except`` styles
work. Messages name the variable, what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "XOceanDiffError",
    "MissingVariableError",
    "GridMismatchError",
    "CheckpointError",
    "ConstraintError",
    "OutputExistsError",
    "InvalidDataError",
    "MissingDependencyError",
]


class XOceanDiffError(Exception):
    """Base class of every error raised by xoceandiff."""


class MissingVariableError(XOceanDiffError, KeyError):
    """A field or grid variable the operation needs is not in the dataset."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class GridMismatchError(XOceanDiffError, ValueError):
    """Two objects (data and mesh mask, dataset and checkpoint, ...) are on different grids."""


class InvalidDataError(XOceanDiffError, ValueError):
    """Values are unusable: NaN on ocean cells, wrong dimensions, out-of-range arguments."""


class CheckpointError(XOceanDiffError, ValueError):
    """A checkpoint is missing, truncated, tampered with, or incompatible."""


class ConstraintError(XOceanDiffError, ValueError):
    """An unknown constraint name, or a constraint that cannot apply to this model."""


class OutputExistsError(XOceanDiffError, FileExistsError):
    """The output path exists and ``overwrite=True`` was not given."""


class MissingDependencyError(XOceanDiffError, ImportError):
    """An optional dependency the operation needs is not installed; the message names the extra."""
