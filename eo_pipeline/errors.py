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
    "UnreadableFileError",
    "NotNetCDFError",
    "EmptyFileError",
    "CorruptFileError",
    "TruncatedFileError",
    "FileChangedError",
    "UnknownProductError",
    "ReaderError",
    "MissingVariableError",
    "ProductLayoutError",
    "VariableLayoutError",
    "ReaderOptionError",
    "ConfigError",
    "GridError",
    "OutputError",
    "ClusterError",
    "EOPipelineWarning",
    "QualityWarning",
    "CoordinateWarning",
    "DuplicateProductWarning",
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


class UnreadableFileError(EOPipelineError, PermissionError):
    """An input exists but this process may not read it (permissions)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class NotNetCDFError(EOPipelineError, ValueError):
    """A file is neither NetCDF-4 nor HDF5 (or is a directory)."""


class EmptyFileError(NotNetCDFError):
    """An input file holds no bytes at all (an interrupted download or copy)."""


class CorruptFileError(EOPipelineError, OSError):
    """A file has a NetCDF/HDF5 signature but the HDF5 library cannot read it (damaged).

    Raised for every failure of the HDF5/netCDF libraries on a file's metadata
    (superblock, object headers, attributes, links) or data chunks, so that a damaged
    file always ends in one line naming it.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class TruncatedFileError(CorruptFileError):
    """A file is shorter than the end-of-file address its HDF5 superblock records."""


class FileChangedError(CorruptFileError):
    """A file changed on disk (size or modification time) after it was opened."""


class UnknownProductError(EOPipelineError, ValueError):
    """No registered reader recognises a file's content."""


class ReaderError(EOPipelineError, ValueError):
    """A reader recognised a file but cannot turn it into the canonical schema."""


class MissingVariableError(ReaderError):
    """A known product lacks a variable that its reader requires."""


class ProductLayoutError(ReaderError):
    """A recognised product's structure differs from the documented one (not a library failure)."""


class VariableLayoutError(ProductLayoutError):
    """A required variable exists but has the wrong data type, shape or units of time."""


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


class ClusterError(EOPipelineError, RuntimeError):
    """The dask cluster a job was given cannot be reached, or lost what it cannot recompute."""


class EOPipelineWarning(UserWarning):
    """Base class of the warnings eo_pipeline emits."""


class QualityWarning(EOPipelineWarning):
    """A product cannot apply its quality rule as asked, or nothing passes it."""


class CoordinateWarning(QualityWarning):
    """Soundings with impossible coordinates (non-finite, latitude beyond +-90) were masked."""


class DuplicateProductWarning(EOPipelineWarning):
    """The same product was given twice (under two names); the second copy is ignored."""


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
