"""A real loopback HTTP server whose every answer is chosen by the test.

    with HostileServer() as server:
        server.on("GET", "/v1/videos/generations/video_1", json_reply({"id": "video_1", ...}))
        server.on("POST", "/v1/videos/generations", Reply(status=500), json_reply(TASK))
        ...
        assert [r.method for r in server.requests] == ["POST"]

`on(method, path, *answers)` queues answers for that route: each request takes the next one and
the last one repeats. An answer is a `Reply` or a function of the recorded `Request` that
returns one. A Reply can lie (a Content-Length that is not the body's), trickle (a delay before
each piece, header lines included), stream chunked pieces, or drop the connection after reading
the request. Every request is recorded (method, path, headers, body) before it is answered, so
a test can count what reached the server even when the answer never arrives. With `tls` (a
server-side ssl context) it answers over HTTPS.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from requests.structures import CaseInsensitiveDict


@dataclass
class Request:
    method: str
    path: str
    headers: CaseInsensitiveDict
    body: bytes
    # How the answer went: "completed" (all written), "broken" (the client hung up first),
    # "stopped" (the server was shut down mid-answer); None while it is still being written.
    outcome: str | None = None


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    # One piece or several: with `chunked`, each piece is one HTTP chunk; otherwise the pieces are
    # written one after another (after `delay` each) under one Content-Length.
    body: bytes | list[bytes] = b""
    delay: float = 0.0  # seconds before each piece of the body
    header_delay: float = 0.0  # seconds before each header line (a trickled head)
    chunked: bool = False
    content_length: int | None = None  # a lying Content-Length; None: the true one
    drop: bool = False  # read the request, then close the connection without a word

    @property
    def pieces(self) -> list[bytes]:
        return list(self.body) if isinstance(self.body, list) else [self.body]


Answer = Reply | Callable[[Request], Reply]


def json_reply(payload, status: int = 200, headers: dict | None = None) -> Reply:
    return Reply(
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json.dumps(payload).encode(),
    )


def trickle(data: bytes, every: float) -> Reply:
    """A 200 reply whose body arrives one byte at a time, `every` seconds apart."""
    return Reply(
        headers={"Content-Type": "application/json"}, body=[data[i : i + 1] for i in range(len(data))], delay=every
    )


@functools.cache
def tiny_mp4() -> bytes:
    """A real, playable one-second H.264 clip (a few kB), made once per test run."""
    from kling_nb.sim.video import render_mp4

    with tempfile.TemporaryDirectory() as folder:
        path = render_mp4(Path(folder) / "tiny.mp4", "tiny", mode="std", duration=1, aspect_ratio="1:1")
        return path.read_bytes()


def video_reply(data: bytes | None = None, **kw) -> Reply:
    return Reply(headers={"Content-Type": "video/mp4"}, body=tiny_mp4() if data is None else data, **kw)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def do_PUT(self):
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, CaseInsensitiveDict(self.headers.items()), body)
        owner = self.server.owner
        answer = owner._record_and_pick(request)
        reply = answer(request) if callable(answer) else answer
        try:
            request.outcome = "completed" if self._send(reply) else "stopped"
        except OSError:  # the client gave up (a deadline, a refusal): that is the point of many tests
            request.outcome = "broken"
            self.close_connection = True

    def _send(self, reply: Reply) -> bool:
        """Write the answer; False if the server was stopped before it was all written."""
        stop = self.server.owner._stopped
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        pieces = reply.pieces
        head = [f"HTTP/1.1 {reply.status} Hostile\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in reply.headers.items()]
        if reply.chunked:
            head.append("Transfer-Encoding: chunked\r\n")
        else:
            size = sum(len(p) for p in pieces) if reply.content_length is None else reply.content_length
            head.append(f"Content-Length: {size}\r\n")
        head.append("\r\n")
        for line in head:
            if reply.header_delay and stop.wait(reply.header_delay):
                return False
            self.wfile.write(line.encode("latin-1"))
        for piece in pieces:
            if reply.delay and stop.wait(reply.delay):
                return False
            if reply.chunked:
                if piece:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")
        if reply.content_length is not None:
            self.close_connection = True  # a lying length leaves the stream out of step
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileServer


class HostileServer:
    """A loopback server answering each route with the answers the test queued for it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # a server-side context: answer over HTTPS
        self.requests: list[Request] = []
        self._routes: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def on(self, method: str, path: str, *answers: Answer) -> HostileServer:
        with self._lock:
            self._routes[(method.upper(), path)] = deque(answers)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "use the server as a context manager"
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def hits(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def _record_and_pick(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            queue = self._routes.get((request.method, request.path.split("?")[0]))
            if not queue:
                return json_reply({"error": {"code": "not_found", "message": f"no route for {request.path}"}}, 404)
            return queue.popleft() if len(queue) > 1 else queue[0]

    def __enter__(self) -> HostileServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if self.tls is not None:  # the handshake happens in the handler's thread, at its first read
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()  # trickling answers stop at their next pause
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def outcome(self, index: int = 0, timeout: float = 10.0) -> str | None:
        """How the answer to request `index` went, once the server is done writing it. A client
        that gave up at its limit leaves a trickled answer "broken" long before it would have
        been "completed"."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.requests) > index and self.requests[index].outcome is not None:
                    return self.requests[index].outcome
            time.sleep(0.01)
        return None
