"""The simulator's HTTP side: routing, auth, the task lifecycle, media, faults and the log.

A task's state is computed from the clock at each GET (queued for `queue_s`, then
in_progress with progress rising linearly over `run_s`, then completed or failed), so no
background thread is needed and many tasks cost nothing while they wait.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from ..contract import DEFAULT_DURATION, DEFAULT_MODE, MAX_IMAGE_BYTES, MODEL, sniff_image
from .rules import Invalid, check_body
from .video import render_mp4

FAIL_MARKER = "sim:fail"
REJECT_MARKER = "sim:reject"
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford, as in the vendor's ULID-like ids


@dataclass
class SimConfig:
    queue_s: float = 1.0  # time a task stays queued
    run_s: float = 4.0  # time in_progress, progress rising linearly
    result_lifetime_s: float = 24 * 3600  # result URLs stop working after this
    result_padding_bytes: int = 0  # pad served videos to about this size (a trailing `free` box)


@dataclass
class Faults:
    rate: float = 0.0  # probability that a request is hit by a fault
    kinds: tuple[str, ...] = ("429", "500", "502", "503", "drop", "slow", "truncate", "drop_after_accept")
    seed: int | None = None
    retry_after: float = 1.0  # seconds, sent with 429
    slow_s: float = 3.0  # how long a "slow" answer takes
    endpoints: tuple[str, ...] = ("submit", "status", "upload", "download")  # which requests may be hit


# Which fault kinds make sense for which kind of request.
_APPLICABLE = {
    "submit": {"429", "500", "502", "503", "drop", "slow", "drop_after_accept"},
    "status": {"429", "500", "502", "503", "drop", "slow"},
    "upload": {"429", "500", "502", "503", "drop", "slow"},
    "download": {"429", "500", "502", "503", "drop", "slow", "truncate"},
}


@dataclass
class Task:
    id: str
    body: dict
    created: float
    fails: bool
    video: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class State:
    """Everything the server remembers, behind one lock."""

    def __init__(self, config: SimConfig, key: str | None, media_dir: Path):
        self.config = config
        self.key = key
        self.media_dir = media_dir
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, tuple[Path, str]] = {}
        self.log: list[dict] = []
        self.faults = Faults()
        self._random = random.Random()
        self.lock = threading.Lock()
        self.renderers = threading.BoundedSemaphore(2)

    def set_faults(self, faults: Faults) -> None:
        with self.lock:
            self.faults = faults
            self._random = random.Random(faults.seed)

    def draw_fault(self, kind: str) -> str | None:
        with self.lock:
            f = self.faults
            if f.rate <= 0 or kind not in _APPLICABLE or kind not in f.endpoints:
                return None
            if self._random.random() >= f.rate:
                return None
            choices = [k for k in f.kinds if k in _APPLICABLE[kind]]
            return self._random.choice(choices) if choices else None

    def record(self, entry: dict) -> None:
        with self.lock:
            self.log.append(entry)

    def task_json(self, task: Task, base_url: str, now: float) -> dict:
        c = self.config
        age = now - task.created
        data = {
            "id": task.id,
            "object": "generation.task",
            "model": task.body.get("model", MODEL),
            "status": "queued",
            "progress": 0,
            "created_at": int(task.created),
            "metadata": {},
        }
        if age < c.queue_s:
            return data
        if age < c.queue_s + c.run_s:
            data["status"] = "in_progress"
            data["progress"] = min(99, int(100 * (age - c.queue_s) / max(c.run_s, 1e-9)))
            return data
        done_at = task.created + c.queue_s + c.run_s
        if task.fails:
            data.update(status="failed", progress=data["progress"], completed_at=int(done_at))
            data["error"] = {
                "code": "content_policy_violation",
                "message": "The generated content was flagged by the content policy (simulated).",
            }
            return data
        data.update(
            status="completed",
            progress=100,
            completed_at=int(done_at),
            expires_at=int(done_at + c.result_lifetime_s),
            result={"type": "video", "data": [{"url": f"{base_url}/_sim/videos/{task.id}.mp4", "format": "mp4"}]},
        )
        return data

    def prerender(self, task: Task) -> None:
        """Render ahead of the first download; a failure here (e.g. the server stopping) is
        left for the download itself to meet and report."""
        try:
            self.video_of(task)
        except Exception:
            pass

    def video_of(self, task: Task) -> Path:
        with task.lock, self.renderers:  # rendered once per task, two at a time at most
            if task.video is None:
                body = task.body
                task.video = render_mp4(
                    self.media_dir / f"{task.id}.mp4",
                    body["prompt"],
                    mode=body.get("mode", DEFAULT_MODE),
                    duration=body.get("duration", DEFAULT_DURATION),
                    aspect_ratio=body.get("aspect_ratio", "16:9"),
                    first_frame=self.first_frame_of(body),
                )
            return task.video


    def first_frame_of(self, body: dict) -> Path | None:
        """The uploaded image a request starts from (its `first_frame`), if it is one of ours:
        the clip then opens on it, so a continued shot visibly starts where the last ended."""
        items = (body.get("metadata") or {}).get("image_list") or []
        for item in items:
            if isinstance(item, dict) and item.get("type") == "first_frame":
                name = str(item.get("image_url", "")).rsplit("/_sim/uploads/", 1)[-1]
                upload = self.uploads.get(name.split(".")[0])
                return upload[0] if upload else None
        return None


def new_task_id() -> str:
    return "video_" + "".join(secrets.choice(_B32) for _ in range(26))


class Handler(BaseHTTPRequestHandler):
    server: SimServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the structured log is in State.log
        pass

    # -- routing -----------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        state = self.server.state
        self._status_sent = None
        kind = _kind(method, path)
        entry = {"method": method, "path": path, "kind": kind, "t": time.time(), "fault": None, "status": None}
        # Logged before answering: a test counting submits right after a dropped reply must
        # already see the accepted one.
        state.record(entry)
        try:
            if path.startswith("/_sim/") and kind == "other":
                self._private(method, path)
                return
            fault = state.draw_fault(kind)
            entry["fault"] = fault
            if fault in ("429", "500", "502", "503"):
                self._error(int(fault), {"429": "rate_limit_exceeded"}.get(fault, "internal_error"),
                            f"simulated fault {fault}",
                            headers={"Retry-After": f"{state.faults.retry_after:g}"} if fault == "429" else None)
                self._drain()
                return
            if fault == "drop":
                self._drain()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "slow":
                time.sleep(state.faults.slow_s)
            if kind == "download":
                self._download(path, truncate=fault == "truncate")
            elif kind == "upload":
                self._require_key() and self._upload()
            elif kind == "submit":
                self._require_key() and self._submit(entry, drop_after=fault == "drop_after_accept")
            elif kind == "status":
                self._require_key() and self._status(path.rsplit("/", 1)[1])
            else:
                self._error(404, "not_found_error", "no such endpoint")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            entry["status"] = self._status_sent

    # -- endpoints ---------------------------------------------------------------------
    def _submit(self, entry: dict, *, drop_after: bool) -> None:
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            self._error(400, "invalid_request", "request body is not valid JSON")
            return
        try:
            check_body(body)
        except Invalid as err:
            self._error(400, "invalid_request", str(err))
            return
        if REJECT_MARKER in body["prompt"]:
            self._error(422, "content_policy_violation", "The prompt was refused by the content policy (simulated).")
            return
        task = Task(new_task_id(), body, time.time(), fails=FAIL_MARKER in body["prompt"])
        with self.server.state.lock:
            self.server.state.tasks[task.id] = task
            entry["accepted"] = True
            entry["task_id"] = task.id
            entry["created"] = task.created
        if not task.fails:
            # Like the service, make the video while the task runs, not when it is fetched.
            threading.Thread(target=self.server.state.prerender, args=(task,), daemon=True).start()
        if drop_after:  # accepted and billed, but the client never hears of it
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._json(200, self.server.state.task_json(task, self.server.base_url, time.time()))

    def _status(self, task_id: str) -> None:
        task = self.server.state.tasks.get(task_id)
        if task is None:
            self._error(404, "task_not_found", f"task {task_id[:80]} not found")
            return
        self._json(200, self.server.state.task_json(task, self.server.base_url, time.time()))

    def _upload(self) -> None:
        ctype = self.headers.get("Content-Type", "")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_IMAGE_BYTES + 64 * 1024:
            self._drain()
            self._json(400, {"success": False, "message": "Image too large. Maximum size is 10MB"})
            return
        raw = self._body()
        if not ctype.startswith("multipart/form-data"):
            self._json(400, {"success": False, "message": "Expected multipart/form-data with a file field"})
            return
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
        )
        data = None
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                data = part.get_payload(decode=True)
        if data is None:
            self._json(400, {"success": False, "message": "Missing file field"})
            return
        if len(data) > MAX_IMAGE_BYTES:
            self._json(400, {"success": False, "message": "Image too large. Maximum size is 10MB"})
            return
        mime = sniff_image(data[:16])
        if mime is None:
            self._json(400, {"success": False, "message": "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"})
            return
        upload_id = "upload_" + secrets.token_hex(8)
        ext = mime.split("/")[1].replace("jpeg", "jpg")
        path = self.server.state.media_dir / f"{upload_id}.{ext}"
        path.write_bytes(data)
        with self.server.state.lock:
            self.server.state.uploads[upload_id] = (path, mime)
        url = f"{self.server.base_url}/_sim/uploads/{upload_id}.{ext}"
        self._json(200, {"success": True, "message": "", "data": {"id": upload_id, "url": url, "mime_type": mime,
                                                                   "size": len(data)}})

    def _download(self, path: str, *, truncate: bool) -> None:
        state = self.server.state
        name = path.rsplit("/", 1)[1]
        if path.startswith("/_sim/uploads/"):
            item = state.uploads.get(name.split(".")[0])
            if item is None:
                self._error(404, "not_found_error", "no such upload")
                return
            self._send_file(item[0], item[1], 0, truncate)
            return
        task = state.tasks.get(name.removesuffix(".mp4"))
        info = state.task_json(task, self.server.base_url, time.time()) if task else None
        if info is None or info["status"] != "completed":
            self._error(404, "not_found_error", "no such video")
            return
        # The precise expiry, not the whole second the task object reports.
        if task.created + state.config.queue_s + state.config.run_s + state.config.result_lifetime_s <= time.time():
            self._error(404, "not_found_error", "this video URL has expired (results are kept 24 hours)")
            return
        self._send_file(state.video_of(task), "video/mp4", state.config.result_padding_bytes, truncate)

    def _send_file(self, path: Path, mime: str, pad_to: int, truncate: bool) -> None:
        """Serve a file (with an optional trailing MP4 `free` box to reach `pad_to` bytes),
        honouring a single Range request, streaming in chunks."""
        size = path.stat().st_size
        pad = max(0, pad_to - size)
        if 0 < pad < 8:
            pad = 8
        total = size + pad
        start, end = 0, total - 1
        status = 200
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            first, _, last = rng[6:].split(",")[0].partition("-")
            try:
                if first:
                    start, end = int(first), min(total - 1, int(last) if last else total - 1)
                else:
                    start, end = max(0, total - int(last)), total - 1
                status = 206
            except ValueError:
                start, end = 0, total - 1
            if start > end:
                self._error(416, "invalid_request", "range not satisfiable")
                return
        length = end - start + 1
        self.send_response(status)
        self._status_sent = status
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        limit = length // 2 if truncate else length
        self._stream(path, size, pad, start, limit)
        if truncate:
            self.close_connection = True

    def _stream(self, path: Path, size: int, pad: int, start: int, count: int) -> None:
        chunk = 1 << 16
        with open(path, "rb") as f:
            if start < size:
                f.seek(start)
                while count > 0 and start < size:
                    data = f.read(min(chunk, count, size - start))
                    if not data:
                        break
                    self.wfile.write(data)
                    count -= len(data)
                    start += len(data)
        # The padding: an 8-byte `free` box header, then zeros. MP4 readers skip `free` boxes.
        header = (pad).to_bytes(4, "big") + b"free" if pad else b""
        while count > 0 and pad:
            offset = start - size
            if offset < 8:
                data = header[offset : offset + count]
            else:
                data = bytes(min(chunk, count, size + pad - start))
            if not data:
                break
            self.wfile.write(data)
            count -= len(data)
            start += len(data)

    # -- private endpoints (tests and teaching; never faulted) -------------------------
    def _private(self, method: str, path: str) -> None:
        state = self.server.state
        if method == "GET" and path == "/_sim/log":
            with state.lock:
                log = list(state.log)
            self._json(200, log)
        elif method == "GET" and path == "/_sim/stats":
            self._json(200, self.server.stats())
        elif method == "POST" and path == "/_sim/faults":
            try:
                data = json.loads(self._body() or b"{}")
                data["kinds"] = tuple(data.get("kinds", Faults.kinds))
                data["endpoints"] = tuple(data.get("endpoints", Faults.endpoints))
                state.set_faults(Faults(**data))
            except (ValueError, TypeError) as err:
                self._error(400, "invalid_request", f"bad faults: {err}")
                return
            self._json(200, asdict(state.faults))
        else:
            self._error(404, "not_found_error", "no such endpoint")

    # -- helpers -----------------------------------------------------------------------
    def _require_key(self) -> bool:
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not token:
            self._drain()
            self._error(401, "unauthorized", "Missing API key: send Authorization: Bearer <key>")
            return False
        if self.server.state.key is not None and not secrets.compare_digest(token, self.server.state.key):
            self._drain()
            self._error(401, "authentication_error", "Invalid API key")
            return False
        return True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            data = self.rfile.read(min(length, 1 << 16))
            if not data:
                break
            length -= len(data)

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self._status_sent = status
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, type_: str, message: str, headers: dict | None = None) -> None:
        code = type_ if status in (404, 422, 429) else status
        self._json(status, {"error": {"code": code, "message": message, "type": type_}}, headers)


def _kind(method: str, path: str) -> str:
    if method == "POST" and path == "/v1/videos/generations":
        return "submit"
    if method == "GET" and path.startswith("/v1/videos/generations/") and path.count("/") == 4:
        return "status"
    if method == "POST" and path == "/v1/uploads/images":
        return "upload"
    if method == "GET" and (path.startswith("/_sim/videos/") or path.startswith("/_sim/uploads/")):
        return "download"
    return "other"


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, config: SimConfig, key: str | None):
        super().__init__(address, Handler)
        self._media = tempfile.TemporaryDirectory(prefix="kling-sim-")
        self.state = State(config, key, Path(self._media.name))
        host, port = self.server_address[:2]
        self.base_url = f"http://{host}:{port}"

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a timeout, an injected fault) is normal here, not news."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def stats(self) -> dict:
        with self.state.lock:
            counts: dict[str, int] = {}
            for e in self.state.log:
                counts[e["kind"]] = counts.get(e["kind"], 0) + 1
            counts["submit"] = sum(1 for e in self.state.log if e.get("accepted"))
            counts["tasks"] = len(self.state.tasks)
        return counts

    def server_close(self) -> None:
        super().server_close()
        self._media.cleanup()


__all__ = ["SimConfig", "Faults", "SimServer"]
