"""Fetch the ImageNet 64x64 ADM checkpoint into the user's cache: progress, resume, cancel, verification.

The file is 1.2 GB, so an interrupted download resumes from the partial ``.part`` file with an HTTP
Range request, and the final file only appears (atomic rename) after a strict load proved it is the
right network. urllib only: no extra dependency inside QGIS's Python.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .progress import Progress

OFFICIAL_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64x64_diffusion.pt"
CHUNK = 1 << 20


def download_file(url: str, dest: Path, progress: Optional[Progress] = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file when the server allows."""
    progress = progress or Progress()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            os.replace(part, dest)
            return dest
        raise ValueError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"cannot reach {url}: {exc}. Check the network or download the file by hand "
                         f"and give its path as the backbone checkpoint.") from exc
    with response:
        resumed = have > 0 and response.status == 206
        if have and not resumed:
            progress.log("The server does not support resuming: starting the download again")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if resumed:
            progress.log(f"Resuming the download at {have / 1e6:.1f} MB")
        done = have
        with open(part, "ab" if resumed else "wb") as out:
            while True:
                progress.check()  # a cancelled download keeps its .part file for the next resume
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if total:
                    progress.report(done / total)
    if total is not None and done != total:
        raise ValueError(f"download of {url} stopped at {done} of {total} bytes: run it again to resume")
    os.replace(part, dest)
    return dest


def download_backbone(dest: Path, url: str = OFFICIAL_URL, progress: Optional[Progress] = None,
                      config=None) -> Path:
    """Download (or resume) the checkpoint, then keep it only if it loads strictly as the ADM network."""
    from .backbone import BackboneLoadError, load_backbone

    progress = progress or Progress()
    dest = Path(dest)
    staging = dest.with_name(dest.name + ".download")
    download_file(url, staging, progress.sub(0.0, 0.9))
    progress.log("Verifying the checkpoint by a strict load")
    try:
        load_backbone(str(staging), device="cpu", config=config)
    except BackboneLoadError:
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, dest)
    progress.report(1.0)
    return dest
