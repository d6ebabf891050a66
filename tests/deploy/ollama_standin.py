"""A stand-in for an Ollama server, for the deployment tests: the documented endpoints a
deployment uses (blobs, create, tags, copy, delete, chat), served over real HTTP.

Models are kept as Ollama keeps them: a name (`:latest` added where no tag is given) pointing
at a GGUF blob by digest, with the TEMPLATE, SYSTEM and parameters given at creation. Chat
answers are llama.cpp's greedy continuation of the conversation rendered through the TEMPLATE,
with SYSTEM put first when the conversation has none, as Ollama does. Ollama renders with Go's
template engine; this stand-in uses tuneforge's renderer of the TEMPLATE, so only a real
Ollama shows that both engines agree (the README says so).

`broken = True` makes every answer come back reversed: a model that loads but answers wrong."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tuneforge.export.modelfile import render_template
from tuneforge.net import free_port


def _full(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


class OllamaStandIn:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, dict[str, Any]] = {}
        self.broken = False
        self.requests: list[tuple[str, str]] = []
        self._engines: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def blob(self, digest: str) -> Path:
        return self.folder / digest.replace(":", "-")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
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

            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                standin.requests.append((method, self.path))
                body = self._body()
                try:
                    status, answer = standin.handle(method, self.path, body)
                except KeyError as missing:
                    status, answer = 404, {"error": f"model {missing} not found"}
                self._reply(status, answer)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_HEAD(self) -> None:
                found = standin.blob(self.path.rsplit("/", 1)[-1]).is_file()
                self.send_response(200 if found else 404)
                self.end_headers()

        return Handler

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path.startswith("/api/blobs/"):
            digest = path.rsplit("/", 1)[-1]
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                return 400, {"error": "digest mismatch"}
            self.blob(digest).write_bytes(body)
            return 201, {}
        request = json.loads(body) if body else {}
        if method == "GET" and path == "/api/tags":
            return 200, {"models": [
                {"model": name, "name": name, "digest": m["digest"], "size": m["size"],
                 "modified_at": "2026-12-07T00:00:00Z"} for name, m in self.models.items()]}
        if method == "POST" and path == "/api/create":
            files = request.get("files") or {}
            if len(files) != 1:
                return 400, {"error": "one GGUF file expected"}
            digest = next(iter(files.values()))
            if not self.blob(digest).is_file():
                return 400, {"error": f"blob {digest} not found"}
            parameters = request.get("parameters") or {}
            self.models[_full(request["model"])] = {
                "digest": digest, "size": self.blob(digest).stat().st_size,
                "template": request.get("template") or "{{ .Prompt }}",
                "system": request.get("system"), "stop": list(parameters.get("stop") or [])}
            return 200, {"status": "success"}
        if method == "POST" and path == "/api/copy":
            self.models[_full(request["destination"])] = dict(
                self.models[_full(request["source"])])
            return 200, {}
        if method == "DELETE" and path == "/api/delete":
            del self.models[_full(request["model"])]
            return 200, {}
        if method == "POST" and path == "/api/chat":
            return 200, self._chat(request)
        return 404, {"error": f"{method} {path} is no endpoint of this stand-in"}

    def _chat(self, request: dict[str, Any]) -> dict[str, Any]:
        name = _full(request["model"])
        model = self.models[name]
        messages = list(request.get("messages") or [])
        if model["system"] and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": model["system"]})
        prompt = render_template(model["template"], messages)
        options = request.get("options") or {}
        with self._lock:
            engine = self._engine(model["digest"])
            out = engine.create_completion(
                prompt, max_tokens=int(options.get("num_predict", 64)), temperature=0.0,
                top_k=1, repeat_penalty=float(options.get("repeat_penalty", 1.1)),
                stop=model["stop"] or None)
        text = out["choices"][0]["text"]
        if self.broken:
            text = text[::-1]
        return {"model": name, "created_at": "2026-12-07T00:00:00Z", "done": True,
                "done_reason": "stop", "message": {"role": "assistant", "content": text}}

    def _engine(self, digest: str) -> Any:
        if digest not in self._engines:
            from llama_cpp import Llama

            self._engines[digest] = Llama(model_path=str(self.blob(digest)), n_ctx=512,
                                          n_threads=1, verbose=False)
        return self._engines[digest]
