"""A Hugging Face hub-protocol server for tests: model and dataset repos served from a folder.

Standard library only (``http.server``), bound to 127.0.0.1 on a free port, enough of the hub's
protocol for the real clients (huggingface_hub, transformers, datasets) pointed at it with
``HF_ENDPOINT=http://127.0.0.1:PORT``. The folder holds one directory per repo::

    ROOT/models/<org>/<name>/refs.json          {"main": "snap-a", "v1.0": "snap-b"}  (ref -> snapshot)
    ROOT/models/<org>/<name>/repo.json          optional: {"gated": "manual"}
    ROOT/models/<org>/<name>/<snapshot>/...     the files of one commit
    ROOT/datasets/<org>/<name>/...              the same for dataset repos

A snapshot's commit sha is a hash of its paths and file hashes, so equal contents give equal
commits (as in git) and a full sha is a valid revision. What is served, as the hub does it:

- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` and ``/datasets/{repo}/resolve/...``: the file with
  ``X-Repo-Commit``, ``ETag`` (git blob sha1; sha256 for LFS-style files: safetensors, parquet,
  ...), ``Content-Length``; ``Range`` requests get 206 and ``Content-Range``;
- ``GET /api/{models,datasets}/{repo}[/revision/{rev}]``: JSON with ``sha``, ``siblings`` (with
  sizes, blob ids and LFS facts for ``?blobs=true``), ``gated``;
- ``GET /api/{kind}s/{repo}/tree/{rev}[/{path}]`` (``recursive``) and ``POST .../paths-info/{rev}``;
- ``GET /api/agent-harnesses``: an empty registry, ``{"standardEnvVars": [], "harnesses": {}}``
  (huggingface_hub 2.4 asks once a day and caches it in HF_HOME; an empty list breaks its agent detection);
- missing things: 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
  ``EntryNotFound``; a gated repo's files: 401 ``GatedRepo``.

Refs containing ``/`` are accepted percent-encoded and raw. ``faults`` makes chosen files fail:
``"500"`` answers 500 to every request for them, ``"drop"`` closes the connection half-way through
the body (and at once on a resumed, ranged request past that point). Every request is logged in
``requests`` as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["HubServer", "publish", "commit_of", "LFS_SUFFIXES"]

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".gguf", ".pt", ".arrow", ".msgpack")
KINDS = {"models": "model", "datasets": "dataset"}


def _blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _files(snapshot: Path) -> dict[str, Path]:
    return {p.relative_to(snapshot).as_posix(): p for p in sorted(snapshot.rglob("*")) if p.is_file()}


def commit_of(snapshot: Path) -> str:
    """The 40-hex commit sha of a snapshot folder (a hash of its paths and their blob hashes)."""
    h = hashlib.sha1()
    for name, path in _files(snapshot).items():
        h.update(f"{name}\0{_blob_sha1(path.read_bytes())}\n".encode())
    return h.hexdigest()


def publish(root: Path, kind: str, repo_id: str, files: dict[str, bytes] | Path, refs: list[str],
            gated: str | None = None) -> str:
    """Add a snapshot of ``files`` (a {path: bytes} dict or a folder to copy) to repo ``repo_id``
    (``kind`` ``model`` or ``dataset``) and point ``refs`` (branches or tags) at it; its commit sha."""
    repo = Path(root) / f"{kind}s" / repo_id
    repo.mkdir(parents=True, exist_ok=True)
    staging = repo / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    if isinstance(files, dict):
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
    else:
        shutil.copytree(files, staging)
    sha = commit_of(staging)
    target = repo / sha
    if target.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    table = json.loads((repo / "refs.json").read_text()) if (repo / "refs.json").exists() else {}
    table.update({ref: sha for ref in refs})
    (repo / "refs.json").write_text(json.dumps(table))
    if gated:
        (repo / "repo.json").write_text(json.dumps({"gated": gated}))
    return sha


class HubServer:
    """The server, running in a daemon thread until :meth:`close` (also a context manager)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str, str | None]] = []
        self.faults: dict[tuple[str, str], str] = {}  # (repo id, file path) -> "500" | "drop"
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def log(self, method: str, path: str, byte_range: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, byte_range))

    def downloads(self, since: int = 0) -> list[str]:
        """Paths of the file bodies sent (GET of resolve/ URLs) after request number ``since``."""
        with self._lock:
            return [p for m, p, _ in self.requests[since:] if m == "GET" and "/resolve/" in p]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_port() -> int:
    """A port nothing listens on (for a 'server down' endpoint)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NotFound(Exception):
    def __init__(self, code: str, message: str, commit: str | None = None):
        super().__init__(message)
        self.code, self.commit = code, commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, *args) -> None:  # quiet: the hub's own request log is enough
        pass

    # ------------------------------------------------------------------ dispatch
    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_POST(self) -> None:
        self._dispatch(body=True)

    def _dispatch(self, body: bool) -> None:
        raw_path, _, query = self.path.partition("?")
        self.hub.log(self.command, raw_path, self.headers.get("Range"))
        params = urllib.parse.parse_qs(query)
        parts = raw_path.strip("/").split("/")
        try:
            if parts[:2] == ["api", "agent-harnesses"]:
                return self._json({"standardEnvVars": [], "harnesses": {}}, body)
            if parts[0] == "api" and len(parts) >= 4 and parts[1] in KINDS:
                return self._api(KINDS[parts[1]], parts[2:], params, body)
            kind = "dataset" if parts[0] == "datasets" else "model"
            parts = parts[1:] if kind == "dataset" else parts
            if "resolve" in parts:
                at = parts.index("resolve")
                return self._resolve(kind, "/".join(parts[:at]), parts[at + 1:], body)
            self._error(404, "EntryNotFound", f"no route {raw_path}")
        except _NotFound as err:
            self._error(404, err.code, str(err), err.commit)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ------------------------------------------------------------------ repos and refs
    def _repo(self, kind: str, repo_id: str) -> Path:
        repo = self.hub.root / f"{kind}s" / urllib.parse.unquote(repo_id)
        if not (repo / "refs.json").is_file():
            raise _NotFound("RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def _snapshot(self, repo: Path, segments: list[str]) -> tuple[Path, str, list[str]]:
        """(snapshot folder, commit sha, the rest of the path) for a revision given as the first
        path segment(s): percent-encoded in one segment, or raw across several (refs/pr/1)."""
        refs = json.loads((repo / "refs.json").read_text())
        shas = set(refs.values())
        for n in range(len(segments), 0, -1):
            name = urllib.parse.unquote("/".join(segments[:n]))
            sha = refs.get(name) or (name if name in shas else None)
            if sha:
                return repo / sha, sha, segments[n:]
        raise _NotFound("RevisionNotFound", f"Invalid rev id: {urllib.parse.unquote(segments[0]) if segments else ''}")

    def _gated(self, repo: Path) -> str | bool:
        info = repo / "repo.json"
        return json.loads(info.read_text()).get("gated", False) if info.exists() else False

    # ------------------------------------------------------------------ file downloads
    def _resolve(self, kind: str, repo_id: str, rest: list[str], body: bool) -> None:
        repo = self._repo(kind, repo_id)
        snapshot, sha, path_parts = self._snapshot(repo, rest)
        if self._gated(repo):
            return self._error(401, "GatedRepo", f"Access to {kind} {repo_id} is restricted. You must have "
                               "access to it and be authenticated to access it. Please log in.", sha)
        name = urllib.parse.unquote("/".join(path_parts))
        file = snapshot / name
        if not name or not file.is_file():
            raise _NotFound("EntryNotFound", f"{name} does not exist at this revision", sha)
        fault = self.hub.faults.get((repo_id, name))
        if fault == "500":
            return self._error(500, None, "Internal Error - We're working hard to fix this as soon as possible!", sha)
        data = file.read_bytes()
        start, end = 0, len(data) - 1
        byte_range = self.headers.get("Range")
        if byte_range and byte_range.startswith("bytes="):
            first, _, last = byte_range[6:].partition("-")
            start = int(first) if first else max(len(data) - int(last), 0)
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if byte_range else 200)
        etag = hashlib.sha256(data).hexdigest() if _is_lfs(name) else _blob_sha1(data)
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if byte_range:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        if fault == "drop":  # half the file, then the connection goes away
            cut = len(data) // 2
            if start < cut:
                self.wfile.write(data[start:cut])
                self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:end + 1])

    # ------------------------------------------------------------------ the JSON API
    def _api(self, kind: str, parts: list[str], params: dict, body: bool) -> None:
        repo_id, rest = "/".join(parts[:2]), parts[2:]
        repo = self._repo(kind, repo_id)
        action = rest[0] if rest else "revision"
        snapshot, sha, path_parts = self._snapshot(repo, rest[1:] if rest else ["main"])
        files = _files(snapshot)
        if action == "revision":
            blobs = params.get("blobs", ["false"])[0].lower() == "true"
            siblings = [self._entry(name, path)["sibling" if blobs else "name"] for name, path in files.items()]
            return self._json({"id": repo_id, "_id": sha[:24], "sha": sha, "private": False,
                               "gated": self._gated(repo), "disabled": False, "tags": [], "downloads": 0,
                               "likes": 0, "lastModified": "2026-01-01T00:00:00.000Z",
                               "createdAt": "2026-01-01T00:00:00.000Z", "siblings": siblings}, body)
        if action == "tree":
            prefix = urllib.parse.unquote("/".join(path_parts)).strip("/")
            recursive = params.get("recursive", ["false"])[0].lower() == "true"
            return self._json(self._tree(files, prefix, recursive), body)
        if action == "paths-info":
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            wanted = [p.strip("/") for p in form.get("paths", [])]
            return self._json([e for e in self._tree(files, "", True) if e["path"] in wanted], body)
        raise _NotFound("EntryNotFound", f"no API route {action}")

    @staticmethod
    def _entry(name: str, path: Path) -> dict:
        data = path.read_bytes()
        entry = {"type": "file", "oid": _blob_sha1(data), "size": len(data), "path": name}
        if _is_lfs(name):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        sibling = {"rfilename": name, "size": len(data), "blobId": entry["oid"]}
        if _is_lfs(name):
            sibling["lfs"] = {"size": len(data), "sha256": entry["lfs"]["oid"], "pointerSize": 134}
        return {"tree": entry, "sibling": sibling, "name": {"rfilename": name}}

    def _tree(self, files: dict[str, Path], prefix: str, recursive: bool) -> list[dict]:
        under = {n: p for n, p in files.items() if not prefix or n.startswith(prefix + "/")}
        if prefix and not under:
            raise _NotFound("EntryNotFound", f"{prefix} does not exist on this revision")
        entries, folders = [], set()
        for name, path in under.items():
            rel = name[len(prefix) + 1:] if prefix else name
            parents = rel.split("/")[:-1]
            for depth in range(1, len(parents) + 1):
                if depth == 1 or recursive:
                    folders.add("/".join(filter(None, [prefix, *parents[:depth]])))
            if recursive or not parents:
                entries.append(self._entry(name, path)["tree"])
        folder_entries = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                          for f in sorted(folders)]
        return folder_entries + entries

    # ------------------------------------------------------------------ responses
    def _json(self, payload, body: bool) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
