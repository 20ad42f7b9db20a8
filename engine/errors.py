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


class OutputWriteError(UserInputError):
    """An output that could not be written to the end: the disk filled up, or its folder stopped taking files."""


NO_SPACE, NO_PERMISSION, NO_FILE = "no space", "no permission", "no file"
_CAUSES = ((NO_SPACE, ("no space left on device", "disk full", "enospc", "not enough space", "file too large",
                       "disk quota exceeded")),
           (NO_PERMISSION, ("permission denied", "read-only file system", "eacces", "erofs",
                            "operation not permitted")),
           (NO_FILE, ("no such file or directory", "enoent", "does not exist in the file system")))


def io_cause(text) -> str:
    """Which of the common operating-system failures a low-level message (GDAL's RuntimeError text, an OSError)
    describes: :data:`NO_SPACE`, :data:`NO_PERMISSION`, :data:`NO_FILE`, or '' for anything else. The one place
    these texts are recognised (the readers, the writers and the algorithms' boundary all ask here)."""
    if isinstance(text, OSError) and text.errno is not None:
        import errno

        by_errno = {errno.ENOSPC: NO_SPACE, errno.EDQUOT: NO_SPACE, errno.EFBIG: NO_SPACE, errno.EACCES: NO_PERMISSION,
                    errno.EPERM: NO_PERMISSION, errno.EROFS: NO_PERMISSION, errno.ENOENT: NO_FILE}
        if text.errno in by_errno:
            return by_errno[text.errno]
    low = str(text).lower()
    for cause, needles in _CAUSES:
        if any(n in low for n in needles):
            return cause
    return ""


def size_text(nbytes: float) -> str:
    """1536 → '1.5 KiB'; how much an output needs, in messages."""
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover
