"""Bad JSON-RPC endpoints on loopback for the tests: one that answers HTML to every POST, one that
accepts connections and never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer


class _Garbage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html>502 bad gateway, or not a chain at all</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_a: object) -> None:
        pass


@contextlib.contextmanager
def bad_endpoints() -> Iterator[tuple[str, str]]:
    """(garbage URL, hanging URL), both on 127.0.0.1, for the length of the block."""
    srv = HTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # accepts connections, never answers
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", f"http://127.0.0.1:{hang.getsockname()[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        hang.close()
