"""Fetch the ImageNet 64x64 ADM checkpoint into the user's cache: progress, resume, cancel, verification.

The file is 1.2 GB, so the download goes to ``<dest>.part`` and an interrupted or cancelled download
resumes from it with an HTTP Range request (automatically for a few network hiccups, or on the next run).
The final file only appears (atomic rename) after a strict load proved it is the expected network, so
``<dest>`` is either absent, the previous file, or a verified checkpoint. urllib only: no extra dependency
inside QGIS's Python. Torch is imported only for the verification.
"""
from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .. import ENGINE_VERSION
from ..files import commit
from ..progress import Progress

OFFICIAL_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64x64_diffusion.pt"
CHUNK = 1 << 20  # bytes per read: the cancel check and the progress report run once per chunk
USER_AGENT = f"diffusion-landcover/{ENGINE_VERSION} (+python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class _Interrupted(Exception):
    """A transfer that broke off for a network reason: worth resuming."""


@dataclass
class BackboneDownload:
    """What :func:`fetch_backbone` did: where the verified file is and whether it was downloaded now."""

    path: Path
    fingerprint: str  # engine.networks.backbone.weights_fingerprint of the verified weights
    reused: bool  # an existing verified file was kept; nothing was downloaded
    downloaded_bytes: int  # bytes transferred by this call
    resumed_from: int  # size of the partial file the download continued from (0 = from scratch)


def part_path(dest: Path) -> Path:
    """The partial file beside ``dest`` that a later run resumes from."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _content_range(response) -> Tuple[Optional[int], Optional[int]]:
    """(first byte, total size) from a 206's Content-Range, None where the server left them out."""
    m = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


@dataclass
class _Transfer:
    """Book-keeping across the attempts of one download."""

    total: Optional[int] = None
    resumed_from: Optional[int] = None  # offset of the first answered request (0 = from scratch)
    read: int = 0  # bytes received by this call, all attempts together


def _fetch_once(url: str, part: Path, progress: Progress, timeout: float, state: _Transfer) -> None:
    """One request that appends to ``part`` (or rewrites it); raises _Interrupted on network trouble."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left after `have`: complete already, or the file changed
            m = _UNSATISFIED_RANGE.match(exc.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == have:
                state.total = have
                if state.resumed_from is None:
                    state.resumed_from = have
                return
            progress.log(f"The partial download {part} does not fit the file on the server: starting again")
            part.unlink()
            return _fetch_once(url, part, progress, timeout, state)
        if exc.code >= 500:
            raise _Interrupted(f"server error HTTP {exc.code} {exc.reason}") from exc
        raise ValueError(f"Download of {url} failed: the server answered HTTP {exc.code} {exc.reason}. Check the "
                         f"URL (the official checkpoint is {OFFICIAL_URL}).") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Interrupted(f"cannot reach the server ({reason})") from exc

    with response:
        start, total = (None, None)
        if have and response.status == 206:
            start, total = _content_range(response)
        resumed = have > 0 and response.status == 206 and start == have
        if have and not resumed:
            progress.log("The server does not support resuming this download: starting it again from the "
                         "beginning")
        offset = have if resumed else 0
        if state.resumed_from is None:
            state.resumed_from = offset
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = offset + int(length)
        state.total = total
        if resumed:
            progress.log(f"Resuming the download at {offset / 1e6:.1f} MB"
                         + (f" of {total / 1e6:.1f} MB" if total else ""))
        done, next_log = offset, 0.1
        with open(part, "ab" if resumed else "wb") as out:
            while True:
                progress.check()  # a cancelled download keeps its .part file for the next resume
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                    raise _Interrupted(f"the connection broke off at {done / 1e6:.1f} MB ({exc!r})") from exc
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                state.read += len(chunk)
                if total:
                    progress.report(done / total)
                    if done / total >= next_log and done < total:
                        progress.log(f"Downloaded {done / 1e6:.1f} of {total / 1e6:.1f} MB")
                        next_log = (int(done / total * 10) + 1) / 10
    if total is not None and done < total:
        raise _Interrupted(f"the connection closed at {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink()
        raise ValueError(f"Download of {url} returned {done} bytes, more than the announced {total}: the partial "
                         "file was removed, run again.")
    state.total = done


def _fetch_part(url: str, part: Path, progress: Progress, timeout: float, retries: int,
                retry_delay: float, hint: str) -> _Transfer:
    """Fill ``part`` completely, resuming up to ``retries`` times after network interruptions."""
    part.parent.mkdir(parents=True, exist_ok=True)
    state = _Transfer()
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, progress, timeout, state)
            return state
        except _Interrupted as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                kept = f"; the {have / 1e6:.1f} MB already downloaded are kept in {part}" if have else ""
                raise ValueError(f"Download of {url} failed: {exc}{kept}. Run again to resume{hint}.") from exc
            attempt += 1
            progress.log(f"Download interrupted: {exc}. Retrying ({attempt} of {retries})")
            deadline = time.monotonic() + retry_delay * attempt
            while time.monotonic() < deadline:
                progress.check()
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def download_file(url: str, dest: Path, progress: Optional[Progress] = None, timeout: float = 60.0, *,
                  retries: int = 3, retry_delay: float = 2.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file when the server allows.

    Raises ValueError (clear message) on HTTP errors and when the network fails ``retries`` times in a
    row; :class:`~.progress.Cancelled` on cancel. In both cases ``dest.part`` stays for the next resume.
    """
    progress = progress or Progress()
    dest = Path(dest)
    part = part_path(dest)
    _fetch_part(url, part, progress, timeout, retries, retry_delay, "")
    commit(str(part), str(dest))
    progress.report(1.0)
    return dest


def verify_backbone(path: Path, config=None) -> str:
    """Strict load of ``path`` (official state dict or our safetensors); returns the weights fingerprint.

    ``config`` is the expected :class:`~.backbone.UNetConfig` (None = the file's own or ImageNet ADM 64).
    Raises :class:`~.backbone.BackboneLoadError` naming what does not match.
    """
    from ..networks.backbone import load_backbone, weights_fingerprint

    return weights_fingerprint(load_backbone(str(path), device="cpu", config=config))


def fetch_backbone(dest: Path, url: str = OFFICIAL_URL, progress: Optional[Progress] = None, config=None, *,
                   overwrite: bool = False, timeout: float = 60.0, retries: int = 3,
                   retry_delay: float = 2.0) -> BackboneDownload:
    """Make ``dest`` a verified checkpoint: reuse it when it already verifies (unless ``overwrite``),
    else download (or resume) ``url`` and keep the result only if it loads strictly.

    A downloaded file that fails the strict load is deleted (also its ``.part``) and the
    :class:`~.backbone.BackboneLoadError` says what does not match; an existing ``dest`` is replaced only
    by a verified file.
    """
    from ..networks.backbone import BackboneLoadError

    progress = progress or Progress()
    dest = Path(dest)
    if dest.is_file() and not overwrite:
        progress.log(f"Checking the existing checkpoint {dest}")
        try:
            fingerprint = verify_backbone(dest, config)
        except BackboneLoadError as exc:
            progress.log(f"The existing file is not a usable checkpoint ({exc}); downloading it again")
        else:
            progress.log(f"{dest} is already installed and verified: nothing to download")
            progress.report(1.0)
            return BackboneDownload(dest, fingerprint, True, 0, 0)
    part = part_path(dest)
    hint = (f", or download {url} by hand (e.g. with a browser or curl -C - -o '{part}' '{url}') and save it "
            f"as {dest}")
    progress.log(f"Downloading {url} to {dest}")
    transfer = _fetch_part(url, part, progress.sub(0.0, 0.9), timeout, retries, retry_delay, hint)
    progress.log(f"Verifying the checkpoint ({transfer.total / 1e6:.1f} MB) by a strict load")
    progress.check()
    try:
        fingerprint = verify_backbone(part, config)
    except BackboneLoadError as exc:
        part.unlink(missing_ok=True)
        raise BackboneLoadError(f"The file downloaded from {url} is not the expected checkpoint and was "
                                f"deleted: {exc}") from exc
    commit(str(part), str(dest))
    progress.report(1.0)
    progress.log(f"Checkpoint installed: {dest} (fingerprint {fingerprint[:16]}…)")
    return BackboneDownload(dest, fingerprint, False, transfer.read, transfer.resumed_from or 0)


def download_backbone(dest: Path, url: str = OFFICIAL_URL, progress: Optional[Progress] = None, config=None, *,
                      overwrite: bool = True, **kwargs) -> Path:
    """Download (or resume) the checkpoint, then keep it only if it loads strictly as the ADM network.

    Shorthand for :func:`fetch_backbone` that returns the path; by default it always downloads again.
    """
    return fetch_backbone(dest, url, progress, config, overwrite=overwrite, **kwargs).path
