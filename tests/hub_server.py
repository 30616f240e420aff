"""A minimal Hugging Face Hub-compatible file server for tests (127.0.0.1 only).

Serves ``<root>/<org>/<name>/<file>`` at ``/<org>/<name>/resolve/<revision>/<file>`` with the
headers huggingface_hub expects (commit, ETag, size) and the Hub's 404 error codes.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_handler(root: Path, log: list):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _resolve(self):
            parts = self.path.split("?")[0].strip("/").split("/")
            log.append((self.command, self.path))
            if len(parts) < 5 or parts[2] != "resolve":
                return None, "RepoNotFound"
            repo = root / parts[0] / parts[1]
            if not repo.is_dir():
                return None, "RepoNotFound"
            f = repo / "/".join(parts[4:])
            if not f.is_file():
                return None, "EntryNotFound"
            return f, None

        def _send(self, body: bool):
            f, err = self._resolve()
            if err:
                self.send_response(404)
                self.send_header("X-Error-Code", err)
                self.send_header("X-Error-Message", f"{err} (test server)")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = f.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._send(body=False)

        def do_GET(self):
            self._send(body=True)

    return Handler


class HubServer:
    """Context manager: ``with HubServer(root) as url: ...``."""

    def __init__(self, root: Path) -> None:
        self.log: list = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Path(root), self.log))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
