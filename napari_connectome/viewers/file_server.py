"""A read-only HTTP file server on 127.0.0.1 for the folders a user chose to show in a browser
viewer (neuroglancer reads zarr, N5 and precomputed straight over HTTP).

Why not ``http.server.SimpleHTTPRequestHandler``: it serves the whole current folder, lists
folders and has no CORS or byte ranges. Here every URL is ``/TOKEN/NAME/relative/path``: TOKEN
is random per server (a web page the user happens to visit cannot guess it, so ``Access-Control-
Allow-Origin: *`` exposes nothing), NAME is one of the folders registered with
:meth:`FileServer.add_folder`, and the path must resolve, links followed, to a regular file inside
that folder. ``..``, absolute parts and links that leave the folder answer 404, as does anything
that is not a plain file. Byte ranges (``Range: bytes=a-b``, ``a-``, ``-n``) are served because
neuroglancer reads sharded zarr and precomputed files in pieces.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from napari_connectome.errors import UserInputError

LOOPBACK = "127.0.0.1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TYPES = {".json": "application/json", ".html": "text/html"}


class FileServer:
    """Serves registered folders (and a few in-memory files) read-only; start with
    :meth:`start`, stop with :meth:`stop` (or use ``with``)."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self.port = port
        self.token = secrets.token_urlsafe(18)
        self._roots: dict[str, str] = {}
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0  # answered requests, for tests and the CLI's summary

    # ---- what is served
    def add_folder(self, name: str, folder: str | os.PathLike) -> str:
        """Serve ``folder`` (resolved now) under ``NAME``; returns its base URL (ends with /)."""
        if not _NAME.fullmatch(name) or name in self._roots or name in self._blobs:
            raise ValueError(f"invalid or duplicate served name {name!r}")
        real = os.path.realpath(folder)
        if not os.path.isdir(real):
            raise UserInputError(f"{folder} is not a folder; nothing to serve")
        self._roots[name] = real
        return f"{self.base_url}{name}/"

    def add_bytes(self, name: str, data: bytes, content_type: str = "application/json") -> str:
        """Serve ``data`` as ``/TOKEN/NAME`` (a viewer state, for instance); returns its URL."""
        if not _NAME.fullmatch(name) or name in self._roots:
            raise ValueError(f"invalid served name {name!r}")
        self._blobs[name] = (bytes(data), content_type)
        return f"{self.base_url}{name}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/{self.token}/"

    def resolve(self, url_path: str) -> str | None:
        """The real path of the file a request path names, or None when it names nothing we
        serve (outside every folder, a folder, a link out, a device...)."""
        path = unquote(urlsplit(url_path).path)
        parts = path.split("/")
        if len(parts) < 4 or parts[0] != "" or parts[1] != self.token:
            return None
        name, rest = parts[2], parts[3:]
        root = self._roots.get(name)
        if (
            root is None
            or not rest
            or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in rest)
        ):
            return None
        real = os.path.realpath(os.path.join(root, *rest))
        if not real.startswith(root + os.sep):
            return None  # a link (or a name) that leads out of the served folder
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except OSError:
            return None
        return real

    def blob(self, url_path: str) -> tuple[bytes, str] | None:
        parts = unquote(urlsplit(url_path).path).split("/")
        if len(parts) == 3 and parts[0] == "" and parts[1] == self.token:
            return self._blobs.get(parts[2])
        return None

    # ---- life cycle
    def start(self) -> FileServer:
        if self._httpd is not None:
            return self
        handler = _handler_for(self)
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise UserInputError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); choose "
                "another --port, or 0 for any free port"
            ) from None
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="file-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """(first, last) of a single ``bytes=`` range; None: no (usable) range header, serve all;
    False: unsatisfiable."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # several ranges or another unit: the whole file is a valid answer
    if not m.group(1):  # the last n bytes
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n and size else False
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (first, last) if first <= last and first < size else False


def _handler_for(server: FileServer) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "napari-connectome"

        def log_message(self, format: str, *args: object) -> None:
            pass  # a viewer asks for thousands of chunks; the terminal stays readable

        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "range, x-requested-with")
            self.send_header("Access-Control-Expose-Headers", "content-range, content-length")
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")

        def do_OPTIONS(self) -> None:
            self.send_response(HTTPStatus.NO_CONTENT)
            self._cors()
            # a page served from elsewhere may read loopback only with this (Private Network
            # Access); the token still has to be known
            self.send_header("Access-Control-Allow-Private-Network", "true")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _not_found(self) -> None:
            self.send_response(HTTPStatus.NOT_FOUND)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, body: bool) -> None:
            server.requests += 1
            blob = server.blob(self.path)
            if blob is not None:
                data, ctype = blob
                self._send(data, ctype, body)
                return
            real = server.resolve(self.path)
            if real is None:
                self._not_found()
                return
            try:
                with open(real, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    rng = _byte_range(self.headers.get("Range"), size)
                    if rng is False:
                        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        self._cors()
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    first, last = rng if rng else (0, size - 1)
                    f.seek(first)
                    data = f.read(max(0, last - first + 1))
            except OSError:
                self._not_found()
                return
            ctype = _TYPES.get(Path(real).suffix, "application/octet-stream")
            if Path(real).name in ("zarr.json", ".zarray", ".zattrs", ".zgroup", "info"):
                ctype = "application/json"
            self._send(data, ctype, body, (first, last, size) if rng else None)

        def _send(
            self, data: bytes, ctype: str, body: bool, part: tuple[int, int, int] | None = None
        ) -> None:
            self.send_response(HTTPStatus.PARTIAL_CONTENT if part else HTTPStatus.OK)
            self._cors()
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "no-cache")  # proofreading may change what is served
            if part:
                self.send_header("Content-Range", f"bytes {part[0]}-{part[1]}/{part[2]}")
            self.end_headers()
            if body:
                # the browser may cancel a chunk it no longer needs
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

    return Handler
