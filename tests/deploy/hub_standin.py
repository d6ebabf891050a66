"""A stand-in for the Hugging Face Hub, for the deployment tests: the endpoints that
`huggingface_hub` (2.4.0) calls for create_repo, delete_repo, model_info, list_repo_tree,
create_commit and a file's download, served over real HTTP.

- `POST /api/repos/create`, `DELETE /api/repos/delete` (409 with the URL when it exists);
  a new repository gets an initial commit with a `.gitattributes`, as the Hub makes one.
- `GET /api/models/{repo}/revision/{rev}`: `sha`, `private`, `siblings`; a missing repo or
  revision answers 404 with `X-Error-Code: RepoNotFound` / `RevisionNotFound`.
- `GET /api/models/{repo}/tree/{rev}`: files (`oid` = git blob id; LFS files with `lfs.oid`
  = SHA-256) and folders, always recursive (one page, no `Link` header).
- `POST /api/models/{repo}/preupload/{rev}`: `uploadMode` "lfs" for the .gitattributes
  patterns and files of 10 MB or more, "regular" otherwise; `oid` of the file held there.
- `POST /{repo}.git/info/lfs/objects/batch` (basic transfer; no actions for objects already
  held), `PUT` of the bytes to the `href` it gives (checked against the SHA-256), `verify`.
- `POST /api/models/{repo}/commit/{rev}`: NDJSON `header` (`parentCommit` checked: 412 when
  the branch moved), `file` (base64), `lfsFile` (must have been uploaded), `deletedFile`,
  `deletedFolder`; answers `commitOid`, `commitUrl`.
- `POST /api/validate-yaml` (a README.md's front matter, before the commit).
- `GET /{repo}/resolve/{rev}/{path}`: the bytes, with `X-Repo-Commit` and `ETag`.

Private repositories, and every write, need `Authorization: Bearer <token>`. Xet storage is
not offered: `huggingface_hub` chooses Xet by itself whenever `hf_xet` is installed, so the
server under test runs with HF_HUB_DISABLE_XET=1 (the README says what only the Hub shows).

`corrupt = True` alters every byte stream it sends back (the first byte flipped)."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tuneforge.net import free_port

GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs " \
    b"merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs " \
    b"merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"
LFS_PATTERNS = ("*.bin", "*.safetensors", "*.pt", "*.onnx", "*.gguf")
_REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandIn:
    def __init__(self, folder: Path, token: str):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.corrupt = False
        # repo -> {"private", "branches": {name: sha}, "commits": {sha: {...}}}
        self.repos: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- what the tests read ---------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.folder / sha256

    def head(self, repo: str, branch: str = "main") -> str:
        return str(self.repos[repo]["branches"][branch])

    def files(self, repo: str, revision: str = "main") -> dict[str, str]:
        """path -> SHA-256 of the content at `revision`."""
        commit = self._commit(repo, revision)
        return {p: f["sha256"] for p, f in commit["files"].items()}

    def commits(self, repo: str) -> int:
        return len(self.repos[repo]["commits"])

    # -- HTTP ------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _route(self, method: str) -> None:
                standin.requests.append((method, self.path))
                body = self._body()
                authorized = self.headers.get("Authorization") == f"Bearer {standin.token}"
                with standin._lock:
                    status, answer, headers = standin.handle(method, self.path, body, authorized)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if not isinstance(answer, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._route("GET")

            def do_HEAD(self) -> None:
                self._route("HEAD")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def handle(
        self, method: str, raw: str, body: bytes, authorized: bool
    ) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(raw)
        path = unquote(url.path)
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body), authorized)
        if method == "DELETE" and path == "/api/repos/delete":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            if not authorized:
                return 401, {"error": "Invalid credentials"}, {}
            if repo not in self.repos:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            del self.repos[repo]
            return 200, {}, {}
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body)["content"])
        if m := re.fullmatch(r"/(?P<oid>[0-9a-f]{64})\.lfs", path):  # our upload href
            return self._lfs_put(m["oid"], body, method)
        if m := re.fullmatch(rf"/{_REPO}\.git/info/lfs/objects/batch", path):
            return self._lfs_batch(m["repo"], json.loads(body), authorized)
        if m := re.fullmatch(rf"/api/models/{_REPO}/(?P<what>revision|tree|preupload|commit)"
                             r"/(?P<rev>[^/]+)(?P<rest>/.*)?", path):
            repo, what, rev = m["repo"], m["what"], m["rev"]
            if repo not in self.repos or (self.repos[repo]["private"] and not authorized):
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            if what in ("preupload", "commit") and not authorized:
                return 401, {"error": "Invalid credentials"}, {}
            if what == "commit":
                return self._commit_post(repo, rev, body)
            if what == "preupload":
                return 200, self._preupload(repo, rev, json.loads(body)), {}
            try:
                commit_sha = self._resolve(repo, rev)
            except KeyError:
                return 404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code":
                                                                  "RevisionNotFound"}
            if what == "revision":
                return 200, self._info(repo, commit_sha), {}
            return 200, self._tree(repo, commit_sha), {}
        if m := re.fullmatch(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path):
            return self._resolve_file(m["repo"], m["rev"], m["file"], authorized)
        return 404, {"error": f"{method} {path} is no endpoint of this stand-in"}, {}

    # -- repositories ----------------------------------------------------------------------

    def _create(self, request: dict[str, Any], authorized: bool) -> tuple[int, Any, dict]:
        if not authorized:
            return 401, {"error": "Invalid credentials"}, {}
        repo = f"{request['organization']}/{request['name']}"
        url = f"{self.url}/{repo}"
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}, {}
        self.repos[repo] = {"private": request.get("visibility", "public") == "private",
                            "branches": {}, "commits": {}}
        sha256 = self._store(GITATTRIBUTES)
        self._new_commit(repo, "main", "initial commit", {
            ".gitattributes": {"sha256": sha256, "size": len(GITATTRIBUTES), "lfs": False}})
        return 200, {"url": url, "name": repo}, {}

    def _resolve(self, repo: str, rev: str) -> str:
        found = self.repos[repo]
        if rev in found["branches"]:
            return str(found["branches"][rev])
        if rev in found["commits"]:
            return rev
        raise KeyError(rev)

    def _commit(self, repo: str, rev: str) -> dict[str, Any]:
        return dict(self.repos[repo]["commits"][self._resolve(repo, rev)])

    def _new_commit(self, repo: str, branch: str, message: str,
                    files: dict[str, dict[str, Any]]) -> str:
        found = self.repos[repo]
        parent = found["branches"].get(branch)
        sha = hashlib.sha1(json.dumps([parent, message, files], sort_keys=True).encode()
                           + str(len(found["commits"])).encode()).hexdigest()
        found["commits"][sha] = {"parent": parent, "message": message, "files": files}
        found["branches"][branch] = sha
        return sha

    def _store(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        self.blob(sha256).write_bytes(data)
        return sha256

    def _info(self, repo: str, sha: str) -> dict[str, Any]:
        files = self.repos[repo]["commits"][sha]["files"]
        return {"id": repo, "modelId": repo, "sha": sha, "private": self.repos[repo]["private"],
                "siblings": [{"rfilename": p} for p in sorted(files)]}

    def _entry(self, path: str, f: dict[str, Any]) -> dict[str, Any]:
        if not f["lfs"]:
            oid = git_blob_id(self.blob(f["sha256"]).read_bytes())
            return {"type": "file", "oid": oid, "size": f["size"], "path": path}
        pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{f['sha256']}\n"
                   f"size {f['size']}\n").encode()
        return {"type": "file", "oid": git_blob_id(pointer), "size": f["size"], "path": path,
                "lfs": {"oid": f["sha256"], "size": f["size"], "pointerSize": len(pointer)}}

    def _tree(self, repo: str, sha: str) -> list[dict[str, Any]]:
        files = self.repos[repo]["commits"][sha]["files"]
        folders = {str(Path(p).parents[i]) for p in files
                   for i in range(len(Path(p).parents) - 1)}
        return [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                 "path": d} for d in sorted(folders)] + \
            [self._entry(p, f) for p, f in sorted(files.items())]

    def _validate_yaml(self, content: str) -> tuple[int, Any, dict]:
        """A model card's YAML front matter must parse to a mapping; none gets a warning."""
        import yaml

        if not content.startswith("---\n") or "\n---" not in content[3:]:
            return 200, {"warnings": [{"message": "empty or missing yaml metadata in repo "
                                                  "card"}]}, {}
        try:
            found = yaml.safe_load(content[4:content.index("\n---", 3)])
        except yaml.YAMLError as error:
            return 400, {"error": f"Invalid metadata in README.md: {error}"}, {}
        if found is not None and not isinstance(found, dict):
            return 400, {"error": "Invalid metadata in README.md: not a mapping"}, {}
        return 200, {"warnings": []}, {}

    # -- uploads ---------------------------------------------------------------------------

    def _preupload(self, repo: str, rev: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            held = self._commit(repo, rev)["files"]
        except KeyError:
            held = {}
        answers = []
        for f in request["files"]:
            lfs = f["size"] >= 10_000_000 or any(fnmatch.fnmatch(Path(f["path"]).name, p)
                                                 for p in LFS_PATTERNS)
            oid = None
            if f["path"] in held:
                h = held[f["path"]]
                oid = h["sha256"] if h["lfs"] else git_blob_id(self.blob(h["sha256"]).read_bytes())
            answers.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        return {"files": answers}

    def _lfs_batch(self, repo: str, request: dict[str, Any], authorized: bool) -> tuple:
        if not authorized:
            return 401, {"message": "Invalid credentials"}, {}
        if repo not in self.repos:
            return 404, {"message": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        objects = []
        for o in request["objects"]:
            entry: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
            if not self.blob(o["oid"]).is_file():
                entry["authenticated"] = True
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/{o['oid']}.lfs"},
                    "verify": {"href": f"{self.url}/{o['oid']}.lfs"},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _lfs_put(self, oid: str, body: bytes, method: str) -> tuple:
        if method == "PUT":
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"message": "the content does not match its oid"}, {}
            self._store(body)
            return 200, {}, {}
        if method == "POST":  # verify
            return (200, {}, {}) if self.blob(oid).is_file() else (404, {"message": "no"}, {})
        return 405, {"message": f"{method} is not allowed here"}, {}

    def _commit_post(self, repo: str, rev: str, body: bytes) -> tuple[int, Any, dict]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        head = self.repos[repo]["branches"].get(rev)
        if header.get("parentCommit") and header["parentCommit"] != head:
            return 412, {"error": "A commit has happened since. Please refresh and try again."}, {}
        files = dict(self.repos[repo]["commits"][head]["files"]) if head else {}
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = {"sha256": self._store(data), "size": len(data),
                                        "lfs": False}
            elif key == "lfsFile":
                if not self.blob(value["oid"]).is_file():
                    return 422, {"error": f"LFS object {value['oid']} was not uploaded"}, {}
                files[value["path"]] = {"sha256": value["oid"], "lfs": True,
                                        "size": self.blob(value["oid"]).stat().st_size}
            elif key == "deletedFile":
                if value["path"] not in files:
                    return 404, {"error": "A file with this name doesn't exist"}, \
                        {"X-Error-Code": "EntryNotFound"}
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            else:
                return 400, {"error": f"unknown operation {key}"}, {}
        sha = self._new_commit(repo, rev, header.get("summary", ""), files)
        return 200, {"success": True, "commitOid": sha,
                     "commitUrl": f"{self.url}/{repo}/commit/{sha}"}, {}

    def _resolve_file(self, repo: str, rev: str, file: str, authorized: bool) -> tuple:
        if repo not in self.repos or (self.repos[repo]["private"] and not authorized):
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        try:
            sha = self._resolve(repo, rev)
        except KeyError:
            return 404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"}
        found = self.repos[repo]["commits"][sha]["files"].get(file)
        if found is None:
            return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
        data = self.blob(found["sha256"]).read_bytes()
        if self.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return 200, data, {"X-Repo-Commit": sha, "ETag": f'"{found["sha256"]}"',
                           "Content-Type": "application/octet-stream"}
