# SPDX-License-Identifier: Apache-2.0
"""Exceptions raised by eo_pipeline.

Every error the library raises on bad input derives from :class:`EOPipelineError`,
and each subclass also derives from the matching builtin exception, so callers can
catch either ``EOPipelineError`` or, say, ``FileNotFoundError``.

Messages follow one pattern: *what* (naming the file or value), *why*, and *what to
do next*. The command-line interface prints ``str(error)`` on one line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "EOPipelineError",
    "InputFileNotFoundError",
    "NotNetCDFError",
    "CorruptFileError",
    "UnknownProductError",
    "ReaderError",
    "MissingVariableError",
    "ReaderOptionError",
    "ConfigError",
    "GridError",
    "OutputError",
    "EOPipelineWarning",
    "QualityWarning",
    "warn",
]


class EOPipelineError(Exception):
    """Root of every error eo_pipeline raises on bad input or configuration."""


class InputFileNotFoundError(EOPipelineError, FileNotFoundError):
    """An input path does not exist."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: no such file; check the path (and any glob pattern)")

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno-style
        return self.args[0]


class NotNetCDFError(EOPipelineError, ValueError):
    """A file is neither NetCDF-4 nor HDF5."""


class CorruptFileError(EOPipelineError, OSError):
    """A file has a NetCDF/HDF5 signature but cannot be read (truncated or damaged)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class UnknownProductError(EOPipelineError, ValueError):
    """No registered reader recognises a file's content."""


class ReaderError(EOPipelineError, ValueError):
    """A reader recognised a file but cannot turn it into the canonical schema."""


class MissingVariableError(ReaderError):
    """A known product lacks a variable that its reader requires."""


class ReaderOptionError(EOPipelineError, TypeError):
    """A reader was given an option it does not understand, or a bad value."""


class ConfigError(EOPipelineError, ValueError):
    """A configuration file or value is invalid; the message names the key."""


class GridError(EOPipelineError, ValueError):
    """A grid definition is invalid or unknown."""


class OutputError(EOPipelineError, OSError):
    """An output cannot be written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class EOPipelineWarning(UserWarning):
    """Base class of the warnings eo_pipeline emits."""


class QualityWarning(EOPipelineWarning):
    """A product cannot apply its quality rule as asked, or nothing passes it."""


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def warn(message: str, category: type[Warning] = EOPipelineWarning) -> None:
    """Emit a warning attributed to the first caller outside eo_pipeline."""
    import sys
    import warnings

    level = 2
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
