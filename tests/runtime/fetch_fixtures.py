"""Helpers for the fetch tests: a real TorchScript model, archives, a loopback HTTP server."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_CONFIG = {
    "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [4]}],
    "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [2]}],
}


@contextmanager
def torchscript_allowed() -> Iterator[None]:
    """torch 2.13 deprecates torch.jit.*; TorchScript is still the format Ferry serves."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def make_model_dir(path: Path) -> Path:
    """Write a real TorchScript model (scripted ``nn.Linear(4, 2)``) and its model.json."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torchscript_allowed():
        module = torch.jit.script(torch.nn.Linear(4, 2).eval())
        torch.jit.save(module, str(path / "model.pt"))
    (path / "model.json").write_text(json.dumps(MODEL_CONFIG))
    return path


def tar_gz_bytes(source: Path, *, top_level: str | None = None) -> bytes:
    """A .tar.gz of the files in ``source``, flat or under one top-level directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for file in sorted(source.rglob("*")):
            if file.is_file():
                name = file.relative_to(source).as_posix()
                tar.add(file, arcname=f"{top_level}/{name}" if top_level else name)
    return buffer.getvalue()


def zip_bytes(source: Path) -> bytes:
    """A .zip of the files in ``source``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file in sorted(source.rglob("*")):
            if file.is_file():
                bundle.write(file, arcname=file.relative_to(source).as_posix())
    return buffer.getvalue()


def tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A .tar.gz holding exactly the given (possibly hostile) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    """A tar header of the given type."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def assert_not_complete(dest: Path) -> None:
    """A failed fetch leaves nothing that looks like a model: no marker, no model files."""
    if not dest.exists():
        return
    names = sorted(child.name for child in dest.iterdir())
    assert ".ferry-complete" not in names, names
    assert "model.pt" not in names, names
    assert not [name for name in names if name.startswith(".ferry-staging-")], names


@dataclass
class ServedRequest:
    """One request the loopback server received."""

    path: str
    authorization: str | None


@dataclass
class ModelHttpServer:
    """A real HTTP/1.1 server on 127.0.0.1 serving bytes by path, with scripted faults."""

    files: dict[str, bytes] = field(default_factory=dict)
    required_authorization: str | None = None
    truncate: set[str] = field(default_factory=set)
    """Paths answered with the full Content-Length but only half the body, then closed."""
    stall: set[str] = field(default_factory=set)
    """Paths answered with headers and part of the body, then held open until stop()."""
    fail_first: dict[str, int] = field(default_factory=dict)
    """Paths answered with 503 this many times before they succeed."""
    requests: list[ServedRequest] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    base_url: str = ""

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base_url + path

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        authorization = handler.headers.get("Authorization")
        self.requests.append(ServedRequest(path, authorization))
        if self.required_authorization and authorization != self.required_authorization:
            self._reply(handler, 401, b"unauthorized\n")
            return
        if self.fail_first.get(path, 0) > 0:
            self.fail_first[path] -= 1
            self._reply(handler, 503, b"busy\n")
            return
        body = self.files.get(path)
        if body is None:
            self._reply(handler, 404, b"not found\n")
            return
        if path in self.truncate or path in self.stall:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if path in self.stall:
                self.released.wait(30)
            handler.close_connection = True
            return
        self._reply(handler, 200, body)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        handler.wfile.write(body)


@contextmanager
def serve_http(server_state: ModelHttpServer) -> Iterator[ModelHttpServer]:
    """Run ``server_state`` on 127.0.0.1 on a free port for the duration of the block."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            server_state.handle(self)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    host, port = httpd.server_address[:2]
    server_state.base_url = f"http://{host!s}:{port}"
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="fetch-test-http", daemon=True
    )
    thread.start()
    try:
        yield server_state
    finally:
        server_state.released.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
