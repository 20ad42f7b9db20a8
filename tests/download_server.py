"""A local HTTP file server for the download tests: Range support, interruptions, request log.

Used by tests/engine/test_download.py and tests/qgis/test_downloadbackbone.py. Binds 127.0.0.1 on a free
port, serves one payload in a daemon thread and is shut down by the fixture that started it.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

_RANGE = re.compile(r"bytes=(\d+)-$")


class CheckpointServer:
    """Serves ``payload`` at ``/<name>``.

    ``cut_after``: a list of byte counts; each request pops the first and sends only that many body bytes
    before dropping the connection (a simulated network failure). ``support_range=False`` makes it answer
    every request with the whole file (200), like a server without resume support.
    """

    def __init__(self, payload: bytes, name: str = "64x64_diffusion.pt"):
        self.payload = payload
        self.name = name
        self.support_range = True
        self.cut_after: List[int] = []
        self.requests: List[Dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{self.name}"

    def start(self) -> "CheckpointServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802
                with owner._lock:
                    owner.requests.append({k.lower(): v for k, v in self.headers.items()})
                    cut = owner.cut_after.pop(0) if owner.cut_after else None
                if self.path != f"/{owner.name}":
                    self.send_error(404, "Not Found")
                    return
                body, size = owner.payload, len(owner.payload)
                m = _RANGE.match(self.headers.get("Range", "") or "")
                if owner.support_range and m:
                    start = int(m.group(1))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                    body = body[start:]
                else:
                    self.send_response(200)
                if owner.support_range:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                try:
                    if cut is not None:
                        self.wfile.write(body[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client cancelled
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


# A tiny ADM U-Net (1.4 MB state dict) for checkpoints served in tests; JSON-able like the CONFIG parameter.
TINY_CONFIG = {"name": "tiny_test", "model_channels": 32, "out_channels": 3, "num_res_blocks": 1,
               "attention_resolutions": [2], "channel_mult": [1, 1], "num_classes": None, "learn_sigma": False,
               "num_head_channels": 32}


def checkpoint_bytes(config_dict=None, seed: int = 0) -> bytes:
    """A checkpoint stored the way the official one is: ``torch.save(model.state_dict())``."""
    import io

    import torch
    from engine.networks.backbone import UNetConfig, build_backbone

    buffer = io.BytesIO()
    torch.save(build_backbone(UNetConfig.from_dict(config_dict or TINY_CONFIG), seed=seed).state_dict(), buffer)
    return buffer.getvalue()
