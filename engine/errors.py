"""The engine's user-facing errors: one family, so the algorithms' boundary can print them as one line.

Low-level failures (GDAL, zip, KeyError in model metadata, OSError on output) are translated into these
where they happen, because only there is it known which file, band or parameter was involved.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input or a broken file: the message says what is wrong, with which file/band, and what to do."""


class OutputPathError(UserInputError):
    """An output path that must not be written (an input, another output, no folder, wrong extension)."""


class CorruptFileError(UserInputError):
    """A raster or model file that cannot be read to the end (truncated, damaged, edited)."""
