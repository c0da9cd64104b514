"""A loopback HTTP server (127.0.0.1) that serves files as plain URLs and as a Hugging Face Hub would, so the weights
resolver is tested without the internet. It records every request it answers.

    GET/HEAD /files/<name>                               a plain file, 404 if unknown
    GET/HEAD /<owner>/<repo>/resolve/<revision>/<path>   the hub's file route (what hf_hub_download asks), with the
                                                         hub's headers (X-Repo-Commit, ETag) and error codes
                                                         (X-Error-Code RepoNotFound / RevisionNotFound /
                                                         EntryNotFound)
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class HubServer:
    """`files`: {name: bytes}; `repos`: {"owner/repo": {revision: {path: bytes}}}; `requests`: [(method, path)]."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commit(self, repo: str, revision: str) -> str:
        """The 40-hex commit a revision names (a commit hash names itself)."""
        return revision if len(revision) == 40 else hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()

    def lookup(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a request path."""
        if path.startswith("/files/"):
            data = self.files.get(path[len("/files/"):])
            return (404, {}, b"not found") if data is None else (200, {}, data)
        parts = path.strip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {}, b"not found"
        repo, revision, name = f"{parts[0]}/{parts[1]}", parts[3], parts[4]
        if repo not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, b"repository not found"
        revisions = {self.commit(repo, r): files for r, files in self.repos[repo].items()} | self.repos[repo]
        if revision not in revisions:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b"revision not found"
        if name not in revisions[revision]:
            return 404, {"X-Error-Code": "EntryNotFound"}, b"entry not found"
        commit = next(self.commit(repo, r) for r, f in self.repos[repo].items() if f is revisions[revision])
        data = revisions[revision][name]
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, data


def _handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            server.requests.append((self.command, path))
            status, headers, data = server.lookup(path)
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data)),
                               "Content-Type": "application/octet-stream"}.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, *args) -> None:
            pass

    return Handler
