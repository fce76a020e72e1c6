"""A small local stand-in for the Hugging Face Hub, for tests of the real huggingface_hub client.

It serves model repos the way the Hub's file endpoints do (checked against huggingface_hub 2.4,
``file_download.py`` and ``utils/_http.py``):

- ``HEAD``/``GET {endpoint}/{repo_id}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``
  (40-hex commit), ``ETag`` (git blob sha1 for small files; the sha256 for LFS-like
  ``*.safetensors`` files, which also get ``X-Linked-Etag``/``X-Linked-Size``) and
  ``Content-Length``;
- 404 with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`` so the client raises
  its own exceptions;
- ``GET /api/models/{repo_id}/revision/{rev}`` (repo info, used by ``snapshot_download``);
- the write API used by ``HfApi.create_repo``/``create_branch``/``upload_folder`` on the legacy
  (non-Xet) path: ``/api/repos/create``, ``/api/validate-yaml``, ``.../preupload/{rev}``
  (always "regular" upload mode) and ``.../commit/{rev}`` (ndjson, base64 files).

Everything is in memory; ``requests`` records ``(method, path)`` of every request served;
``corrupt[filename] = n`` alters the bytes of the next n downloads of a file (not the headers).
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_API = re.compile(
    r"/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>revision|preupload|commit|branch)/(?P<rev>.+)"
)


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub sends as ETag of non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """In-memory Hub on 127.0.0.1 (random free port). Use ``start()``/``stop()``."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, str]] = {}  # repo_id -> {ref name: commit}
        self.commits: dict[str, dict[str, bytes]] = {}  # commit -> {filename: content}
        self.requests: list[tuple[str, str]] = []
        #: filename -> how many more GETs of it send altered bytes under the correct headers
        #: (a download corrupted in transit)
        self.corrupt: dict[str, int] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- repository content ----------------------------------------------------------------
    def create_repo(self, repo_id: str) -> None:
        """An empty repo whose ``main`` has one commit with ``.gitattributes`` (as on the Hub)."""
        if "main" not in self.repos.get(repo_id, {}):
            self.add_commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        tags: tuple[str, ...] = (),
        replace: bool = False,
    ) -> str:
        """Commit ``files`` on ``branch`` (or only them, with ``replace``); returns the hash."""
        with self._lock:
            refs = self.repos.setdefault(repo_id, {})
            parent = refs.get(branch)
            content = {} if replace or parent is None else dict(self.commits[parent])
            content.update(files)
            digest = hashlib.sha1(f"{repo_id} {parent} {len(self.commits)}".encode())
            for name in sorted(content):
                digest.update(name.encode() + b"\0" + content[name])
            commit = digest.hexdigest()
            self.commits[commit] = content
            refs[branch] = commit
            for tag in tags:
                refs[tag] = commit
            return commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self.commits[self.commit_of(repo_id, revision)])

    def commit_of(self, repo_id: str, revision: str) -> str:
        """The commit a ref or commit hash points to; KeyError if unknown."""
        refs = self.repos[repo_id]
        if revision in refs:
            return refs[revision]
        if revision in self.commits and revision in refs.values():
            return revision
        raise KeyError(revision)

    # -- server ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "HubServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = None


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep pytest output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            headers = {"Content-Type": "application/json", **(headers or {})}
            headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str, headers=None) -> None:
            extra = {"X-Error-Message": message, **(headers or {})}
            if code:
                extra["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), extra)

        def _json(self, payload, status: int = 200) -> None:
            self._send(status, json.dumps(payload).encode())

        def _locate(self, repo: str, rev: str) -> str | None:
            """The commit of repo@rev, or None after sending the Hub's 404."""
            if repo not in hub.repos:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            try:
                return hub.commit_of(repo, rev)
            except KeyError:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return None

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            if m := _RESOLVE.fullmatch(path):
                return self._resolve(m["repo"], unquote(m["rev"]), unquote(m["file"]))
            if (m := _API.fullmatch(path)) and m["op"] == "revision":
                commit = self._locate(m["repo"], unquote(m["rev"]))
                if commit is not None:
                    siblings = [{"rfilename": name} for name in sorted(hub.commits[commit])]
                    self._json({"id": m["repo"], "sha": commit, "siblings": siblings})
                return None
            self._error(404, None, f"no route {path}")

        def _resolve(self, repo: str, rev: str, filename: str) -> None:
            commit = self._locate(repo, rev)
            if commit is None:
                return
            data = hub.commits[commit].get(filename)
            if data is None:
                self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
                return
            headers = {"X-Repo-Commit": commit, "Content-Type": "application/octet-stream"}
            headers["Content-Length"] = str(len(data))
            if filename.endswith(".safetensors"):  # LFS-like: the etag is the content sha256
                sha = hashlib.sha256(data).hexdigest()
                headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"'})
                headers["X-Linked-Size"] = str(len(data))
            else:
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
            if self.command == "GET" and hub.corrupt.get(filename, 0) > 0:
                hub.corrupt[filename] -= 1
                data = bytes([data[0] ^ 0xFF]) + data[1:]  # same length, other bytes
            self._send(200, data, headers)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.headers.get("authorization", "").startswith("Bearer "):
                return self._error(401, None, "Invalid credentials in Authorization header")
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo = f"{payload['organization']}/{payload['name']}"
                if repo in hub.repos:  # the Hub's 409 body also carries the url
                    message = "You already created this model repo"
                    body = {"error": message, "url": f"{hub.endpoint}/{repo}"}
                    return self._send(409, json.dumps(body).encode(), {"X-Error-Message": message})
                hub.create_repo(repo)
                return self._json({"url": f"{hub.endpoint}/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body)["content"])
            m = _API.fullmatch(path)
            if m is None:
                return self._error(404, None, f"no route {path}")
            repo, rev = m["repo"], unquote(m["rev"])
            if m["op"] == "branch":
                if self._locate(repo, "main") is None:
                    return None
                if rev in hub.repos[repo]:
                    return self._error(409, None, "Reference already exists")
                hub.repos[repo][rev] = hub.repos[repo]["main"]
                return self._json({})
            if self._locate(repo, rev) is None:
                return None
            if m["op"] == "preupload":
                files = json.loads(body)["files"]
                modes = [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files
                ]
                return self._json({"files": modes})
            if m["op"] == "commit":
                return self._commit_ndjson(repo, rev, body)
            return self._error(404, None, f"no route {path}")

        def _validate_yaml(self, content: str) -> None:
            head = content[3:].partition("\n---")[0] if content.startswith("---") else ""
            try:
                meta = yaml.safe_load(head) or {}
            except yaml.YAMLError as err:
                return self._json({"errors": [{"message": str(err)}]}, status=400)
            if not isinstance(meta, dict):
                message = "metadata must be a mapping"
                return self._json({"errors": [{"message": message}]}, status=400)
            return self._json({"warnings": [], "errors": []})

        def _commit_ndjson(self, repo: str, rev: str, body: bytes) -> None:
            files = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] != "header":
                    return self._error(400, None, f"unsupported commit operation {item['key']}")
            commit = hub.add_commit(repo, files, branch=rev)
            url = f"{hub.endpoint}/{repo}/commit/{commit}"
            return self._json({"commitUrl": url, "commitOid": commit, "pullRequestUrl": None})

    return Handler
