"""A local stand-in for the parts of the Hugging Face Hub API that a dataset push uses.

It serves, on 127.0.0.1 only, just what `HfApi.create_repo`, `HfApi.create_commit` (with
its uploads) and `datasets.DatasetDict.push_to_hub` call. Regular files travel base64-encoded
in the NDJSON commit; binary ones go through the legacy Git LFS batch API ("basic" transfer),
so tests set HF_HUB_DISABLE_XET (the Xet protocol is not emulated):

    GET  /api/whoami-v2                                   who the token belongs to
    POST /api/validate-yaml                               check a README's YAML (create_commit asks)
    POST /api/repos/create                                create a repository (409 if it exists)
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]        repository info (sha, siblings)
    POST /api/{type}s/{ns}/{name}/preupload/{rev}         upload mode: "lfs" for binary/Parquet, else "regular"
    POST /[datasets/]{ns}/{name}.git/info/lfs/objects/batch   LFS batch API ("basic" transfer)
    PUT  /__lfs__/upload/{oid}?sig=...                    LFS object upload (a presigned-style URL)
    POST /__lfs__/verify                                  LFS verify
    POST /api/{type}s/{ns}/{name}/commit/{rev}            NDJSON commit: header, file, deletedFile
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]     directory listing (HfFileSystem)
    POST /api/{type}s/{ns}/{name}/paths-info/{rev}        path metadata (HfFileSystem)
    HEAD/GET /[datasets/]{ns}/{name}/resolve/{rev}/{path} file bytes (Range supported)

Every request must carry `Authorization: Bearer <token>` equal to the stand-in's token, else
401 with the Hub's "Invalid credentials" message. The repositories live in memory: each commit
is a full snapshot, so `repos[...].files()` is what a reader of `main` would get. Bounded: the
server answers at most `max_requests` requests and stops by itself after `lifetime_s` seconds;
`stop()` (or leaving the `with` block) shuts it down at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

USER = "standin-user"
_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".zip", ".gz")


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool | None
    commits: list[tuple[str, str, dict[str, bytes]]] = field(default_factory=list)  # (sha, summary, files)

    def __post_init__(self):
        files = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
        self.commits.append((_sha(f"init {self.repo_id}".encode()), "initial commit", files))

    @property
    def head(self) -> str:
        return self.commits[-1][0]

    def files(self, revision: str = "main") -> dict[str, bytes] | None:
        if revision in ("main", "HEAD", None):
            return self.commits[-1][2]
        for sha, _, files in self.commits:
            if sha == revision or (len(revision) >= 7 and sha.startswith(revision)):
                return files
        return None


class HubStandIn:
    """A threaded HTTP server on 127.0.0.1 emulating the Hub endpoints a dataset push needs."""

    def __init__(self, token: str = "hf_standin_secret_token", *, max_requests: int = 500, lifetime_s: float = 120.0):
        self.token = token
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.admitted = 0  # requests let through, counted on arrival (the log is written after the reply)
        self.seen_authorization: list[str] = []
        self.validated_cards: list[str] = []
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes (the emulated LFS storage)
        self._secret = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._server_to_close: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubStandIn":
        standin = self

        class Handler(_Handler):
            hub = standin

        self._server = self._server_to_close = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Shut the server down (idempotent; safe from the timer and from handler threads)."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            server, self._server_to_close = self._server_to_close, None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has stopped
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "HubStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _signature(self, oid: str) -> str:
        return hashlib.sha256(f"{self._secret}:{oid}".encode()).hexdigest()[:32]

    # -- helpers for tests -----------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def requests_seen(self) -> list[str]:
        return [f"{m} {p}" for m, p, _ in self.log]


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls
    timeout = 10  # an idle keep-alive connection's thread ends after this many seconds

    def log_message(self, format, *args):  # quiet
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            for _ in range(1_000_000):  # bounded
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, payload=None, *, headers: dict | None = None, raw: bytes | None = None, head=False):
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        with self.hub._lock:
            self.hub.log.append((self.command, self.path, status))

    def _error(self, status: int, code: str | None, message: str, head=False):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers=headers, head=head)

    def _dispatch(self):
        # Counted on arrival, under the lock: counting the log instead raced, since a reply is
        # logged after it is sent and the client's next request can arrive first.
        with self.hub._lock:
            over = self.hub.admitted >= self.hub.max_requests
            if not over:
                self.hub.admitted += 1
        if over:
            self._error(503, None, "stand-in request budget exhausted")
            threading.Thread(target=self.hub.stop, daemon=True).start()
            return
        if self.path.startswith("/api/agent-harnesses"):  # huggingface_hub's optional registry: not emulated
            return self._error(404, None, "not emulated")
        auth = self.headers.get("Authorization", "")
        with self.hub._lock:
            self.hub.seen_authorization.append(auth)
        body = self._body() if self.command in ("POST", "PUT") else b""
        split = urlsplit(self.path)
        upload = re.fullmatch(r"/__lfs__/upload/(?P<oid>[0-9a-f]{64})", split.path)
        if upload and self.command == "PUT":  # presigned-style upload URL: checked by its signature
            if parse_qs(split.query).get("sig", [""])[0] != self.hub._signature(upload["oid"]):
                return self._error(403, None, "bad upload signature")
            return self.lfs_upload(upload, {}, body)
        if auth != f"Bearer {self.hub.token}":
            self._error(401, None, "Invalid credentials in Authorization header", head=self.command == "HEAD")
            return
        path, query = unquote(split.path), parse_qs(split.query)
        for pattern, method, handler in _ROUTES:
            m = re.fullmatch(pattern, path)
            if m and method == self.command:
                return handler(self, m, query, body)
        self._error(404, None, f"stand-in: no route for {self.command} {path}", head=self.command == "HEAD")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch

    def _repo(self, kind: str, repo_id: str, head=False) -> Repo | None:
        repo = self.hub.repos.get((_TYPES.get(kind, kind), repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
        return repo

    # -- endpoints -------------------------------------------------------------------------
    def whoami(self, m, q, body):
        self._send(200, {"type": "user", "name": USER, "fullname": "Stand-in User", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def validate_yaml(self, m, q, body):
        import yaml

        content = json.loads(body or b"{}").get("content", "")
        match = re.match(r"^\s*---[\r\n]+([\S\s]*?)[\r\n]+---(\r\n|\n|$)", content)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []},
                              headers={"X-Error-Message": "Invalid metadata"})
        if meta is not None and not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []},
                              headers={"X-Error-Message": "Invalid metadata"})
        with self.hub._lock:
            self.hub.validated_cards.append(content)
        self._send(200, {"errors": [], "warnings": []})

    def create_repo(self, m, q, body):
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        key = (repo_type, repo_id)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        if key in self.hub.repos:
            return self._error(409, None, "You already created this dataset repo")
        private = payload.get("private")
        if private is None and "visibility" in payload:
            private = payload["visibility"] == "private"
        with self.hub._lock:
            self.hub.repos[key] = Repo(repo_id, repo_type, private)
        self._send(200, {"url": f"{self.hub.url}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})

    def repo_info(self, m, q, body):
        repo = self._repo(m["kind"], m["repo"])
        if repo is None:
            return
        rev = m["rev"] or "main"
        files = repo.files(rev)
        if files is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        sha = repo.head if rev == "main" else next(s for s, _, f in repo.commits if f is files)
        self._send(200, {"id": repo.repo_id, "_id": repo.repo_id, "sha": sha, "private": bool(repo.private),
                         "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                         "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
                         "siblings": [{"rfilename": p} for p in sorted(files)]})  # fmt: skip

    def preupload(self, m, q, body):
        if self._repo(m["kind"], m["repo"]) is None:
            return
        payload = json.loads(body or b"{}")
        files = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            lfs = f["path"].endswith(_LFS_SUFFIXES) or b"\x00" in sample or int(f.get("size") or 0) > 10_000_000
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        self._send(200, {"files": files, "commitOid": None})

    def commit(self, m, q, body):
        repo = self._repo(m["kind"], m["repo"])
        if repo is None:
            return
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent and parent != repo.head:
            return self._error(412, None, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.files())
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                content = value["content"]
                base64_encoded = value.get("encoding") == "base64"
                files[value["path"]] = base64.b64decode(content) if base64_encoded else content.encode()
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None or len(data) != value.get("size"):
                    return self._error(422, None, f"LFS object {value['oid']} of {value['path']} was not uploaded")
                files[value["path"]] = data
        sha = _sha(repo.head.encode() + json.dumps(sorted((p, _sha(b)) for p, b in files.items())).encode())
        with self.hub._lock:
            repo.commits.append((sha, header.get("summary", ""), files))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._send(200, {"commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{sha}", "commitOid": sha,
                         "success": True, "pullRequestUrl": None})  # fmt: skip

    def lfs_batch(self, m, q, body):
        kind = (m["kind"] or "models/").rstrip("/")
        if self._repo(kind, m["repo"]) is None:
            return
        payload = json.loads(body or b"{}")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry = {"oid": oid, "size": size}
            if oid not in self.hub.lfs_objects:  # like a presigned URL: no Authorization, a signature instead
                sig = self.hub._signature(oid)
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/__lfs__/upload/{oid}?sig={sig}"},
                    "verify": {"href": f"{self.hub.url}/__lfs__/verify"},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, m, q, body):
        oid = m["oid"]
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, None, "uploaded bytes do not match the LFS oid")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = body
        self._send(200, {})

    def lfs_verify(self, m, q, body):
        payload = json.loads(body or b"{}")
        if payload.get("oid") not in self.hub.lfs_objects:
            return self._error(404, None, "LFS object not found")
        self._send(200, {})

    def _entries(self, files: dict[str, bytes], base: str, recursive: bool) -> list[dict]:
        base = base.strip("/")
        prefix = base + "/" if base else ""
        out, dirs = [], set()
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "oid": _sha(d.encode()), "size": 0})
            if recursive or len(parts) == 1:
                out.append({"type": "file", "path": path, "oid": _sha(data), "size": len(data)})
        return out

    def tree(self, m, q, body):
        repo = self._repo(m["kind"], m["repo"])
        if repo is None:
            return
        files = repo.files(m["rev"])
        if files is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}")
        base = (m["path"] or "").strip("/")
        if base and not any(p.startswith(base + "/") for p in files):
            return self._error(404, "EntryNotFound", f"{base} does not exist on {m['rev']}")
        recursive = (q.get("recursive") or ["false"])[0].lower() == "true"
        self._send(200, self._entries(files, base, recursive))

    def paths_info(self, m, q, body):
        repo = self._repo(m["kind"], m["repo"])
        if repo is None:
            return
        files = repo.files(m["rev"])
        if files is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}")
        form = parse_qs(body.decode())
        out = []
        for p in form.get("paths", []):
            p = p.strip("/")
            if p in files:
                out.append({"type": "file", "path": p, "oid": _sha(files[p]), "size": len(files[p])})
            elif any(f.startswith(p + "/") for f in files):
                out.append({"type": "directory", "path": p, "oid": _sha(p.encode()), "size": 0})
        self._send(200, out)

    def resolve(self, m, q, body):
        head = self.command == "HEAD"
        kind = (m["kind"] or "models/").rstrip("/")
        repo = self._repo(kind, m["repo"], head=head)
        if repo is None:
            return
        files = repo.files(m["rev"])
        if files is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}", head=head)
        data = files.get(m["path"])
        if data is None:
            return self._error(404, "EntryNotFound", f"Entry not found: {m['path']}", head=head)
        sha = repo.head if m["rev"] in ("main", "HEAD") else next(s for s, _, f in repo.commits if f is files)
        headers = {"ETag": f'"{_sha(data)}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng and not head:
            start = int(rng[1])
            end = min(int(rng[2]) if rng[2] else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, raw=data[start:end + 1], headers=headers)
        if head:
            self.send_response(200)
            headers.update({"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"})
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            with self.hub._lock:
                self.hub.log.append((self.command, self.path, 200))
            return
        self._send(200, raw=data, headers=headers)


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_KIND = r"(?P<kind>datasets|models|spaces)"
_ROUTES = [
    (r"/api/whoami-v2", "GET", _Handler.whoami),
    (r"/api/repos/create", "POST", _Handler.create_repo),
    (r"/api/validate-yaml", "POST", _Handler.validate_yaml),
    (r"/__lfs__/verify", "POST", _Handler.lfs_verify),
    (rf"/(?P<kind>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch", "POST", _Handler.lfs_batch),
    (rf"/api/{_KIND}/{_REPO}/preupload/(?P<rev>[^/]+)", "POST", _Handler.preupload),
    (rf"/api/{_KIND}/{_REPO}/commit/(?P<rev>[^/]+)", "POST", _Handler.commit),
    (rf"/api/{_KIND}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "GET", _Handler.tree),
    (rf"/api/{_KIND}/{_REPO}/paths-info/(?P<rev>[^/]+)", "POST", _Handler.paths_info),
    (rf"/api/{_KIND}/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "GET", _Handler.repo_info),
    (rf"/(?P<kind>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "GET", _Handler.resolve),
    (rf"/(?P<kind>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "HEAD", _Handler.resolve),
]
