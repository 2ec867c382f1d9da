"""The explorer's web server: one static page and a small JSON API over an ExplorerSession.

The standard library's threading HTTP server is all a local, single-user page needs: nothing
to install, nothing fetched from the internet (the page has no external assets), and it binds
to 127.0.0.1 unless told otherwise. Every request is answered; a bad request (a file that is
not an image, an unknown slider) gets a JSON ``{"error": ...}`` with a 4xx status that the page
shows, and the server goes on.

API (all JSON unless noted):

* ``GET /`` - the page; ``GET /api/info`` - sliders, gallery, what is available;
* ``POST /api/pick`` ``{"token"}`` - start editing a gallery image (``g<k>``);
* ``POST /api/upload`` (the raw file as the body) - convert and start editing an upload;
* ``POST /api/render`` ``{"token", "positions"}`` - re-render with moved sliders;
* ``POST /api/sample`` ``{"token", "positions"}`` - posterior samples and their spread;
* ``GET /api/sweep?token=&key=&steps=&format=gif|png&positions=<json>`` - a sweep file.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from dcign.explorer.session import MAX_UPLOAD_BYTES, ExplorerSession, UploadError

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server that serves one session."""

    daemon_threads = True

    def __init__(self, session: ExplorerSession, host: str = "127.0.0.1", port: int = 7860):
        self.session = session
        super().__init__((host, port), ExplorerHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class ExplorerHandler(BaseHTTPRequestHandler):
    server: ExplorerServer

    # ----------------------------------------------------------------- routing
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        url = urlparse(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif url.path == "/api/info":
            self._answer(self.server.session.info)
        elif url.path == "/api/sweep":
            self._sweep(parse_qs(url.query))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"No page {url.path}.")

    def do_POST(self) -> None:  # noqa: N802 - the http.server interface
        session = self.server.session
        path = urlparse(self.path).path
        if path == "/api/upload":
            body = self._body(MAX_UPLOAD_BYTES)
            if body is not None:
                self._answer(session.upload, body)
            return
        routes = {"/api/pick": session.pick, "/api/render": session.render}
        if path not in (*routes, "/api/sample"):
            self._error(HTTPStatus.NOT_FOUND, f"No endpoint {path}.")
            return
        request = self._json()
        if request is None:
            return
        token = str(request.get("token", ""))
        if path == "/api/pick":
            self._answer(session.pick, token)
        elif path == "/api/render":
            self._answer(session.render, token, request.get("positions") or {})
        else:
            self._answer(session.samples, token, request.get("positions") or {})

    # ----------------------------------------------------------------- requests
    def _sweep(self, query: dict[str, list[str]]) -> None:
        def first(name: str, default: str) -> str:
            return query.get(name, [default])[0]

        try:
            positions = json.loads(first("positions", "{}"))
            steps = int(first("steps", "9"))
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "positions must be JSON and steps an integer.")
            return
        try:
            data, kind = self.server.session.sweep(
                first("token", ""), positions, first("key", ""), steps, first("format", "gif")
            )
        except UploadError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
            return
        name = f"sweep_{first('key', 'latent')}.{kind.split('/')[1]}"
        self._send(
            HTTPStatus.OK, data, kind, {"Content-Disposition": f'attachment; filename="{name}"'}
        )

    def _answer(self, action: Any, *args: Any) -> None:
        """Run one session request; its result as JSON, a user error as a 400 with the message."""
        try:
            result = action(*args)
        except UploadError as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception:  # noqa: BLE001 - the server answers and goes on, whatever happened
            log.exception("The explorer failed to answer %s", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "The explorer failed; see its log.")
        else:
            self._send(HTTPStatus.OK, json.dumps(result).encode(), "application/json")

    def _json(self) -> dict[str, Any] | None:
        body = self._body(1024 * 1024)
        if body is None:
            return None
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._error(HTTPStatus.BAD_REQUEST, "The request body must be a JSON object.")
            return None
        return request

    def _body(self, limit: int) -> bytes | None:
        """The request body, or None after answering 413 when it is larger than ``limit``."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The file has {length / 1e6:.1f} MB; the explorer takes up to "
                f"{limit / 1e6:.0f} MB. Resize it first.",
            )
            return None
        return self.rfile.read(length)

    # ----------------------------------------------------------------- responses
    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _send(
        self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.debug("%s - %s", self.address_string(), format % args)
