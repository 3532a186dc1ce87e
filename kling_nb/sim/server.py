"""The simulator's HTTP side: routing, auth, accounts and billing, the task lifecycle, media,
faults and the log.

A task's state is computed from the clock at each GET (queued for `queue_s`, then
in_progress with progress rising linearly over `run_s`, then completed or failed), so no
background thread is needed and many tasks cost nothing while they wait.

Money (docs/api-contract.md, "Money" and section 4). Every key is a token with its own quota,
kept in the vendor's internal units (2500 per credit, 500000 per USD). The simulator's own key
(`key=`), or in any-key mode (`key=None`) every key the first time it is seen, opens a new
account whose one token starts with `SimConfig.starting_credits` (None: unlimited). A key made
with POST /v1/tokens belongs to the account of the key that made it and is used as
`Bearer sk-<key>`. A submit is charged when it is accepted, at the `RateCard` price; a token
with too little quota gets 402 and no task. An expired token gets 401 everywhere; a token whose
`model_limits_enabled` is set gets 403 `model_not_allowed` for any other model. Refusal order
for a submit: auth (401), JSON (400), model limits (403), body rules (400), quota (402),
content policy (422); only an accepted submit is charged.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import random
import secrets
import string
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..contract import DEFAULT_DURATION, DEFAULT_MODE, MAX_IMAGE_BYTES, MODEL, billing_class, sniff_image
from .rules import Invalid, check_body
from .video import render_mp4

FAIL_MARKER = "sim:fail"
REJECT_MARKER = "sim:reject"
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford, as in the vendor's ULID-like ids

# The vendor's units (docs/api-contract.md section 4), written here apart from the client's
# copy on purpose: the simulator checks the wire, so a client slip cannot hide behind it.
QUOTA_PER_CREDIT = 2500  # internal units per credit
CREDITS_PER_USD = 200  # 1 USD = 200 credits = 500000 internal units
QUOTA_PER_USD = QUOTA_PER_CREDIT * CREDITS_PER_USD
TOKEN_KEY_LENGTH = 48  # a created key, as returned: without its "sk-" prefix
MAX_TOKEN_NAME = 50
_KEY_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class RateCard:
    """Credits per second of video. The vendor bills by resolution (`mode`), plus "Sound" when
    `audio` is true or "Video" when the request has a `video_list` (the two never meet)."""

    std: float = 10.0  # 720P
    pro: float = 16.0  # 1080P
    sound: float = 4.0  # extra per second with audio: true
    video: float = 6.0  # extra per second with a video_list

    def credits(self, body: dict) -> float:
        """What an accepted (already validated) body costs, in credits."""
        per_s = self.pro if body.get("mode", DEFAULT_MODE) == "pro" else self.std
        if body.get("video_list"):  # the rule of contract.billing_class
            per_s += self.video
        elif body.get("audio") is True:
            per_s += self.sound
        return per_s * body.get("duration", DEFAULT_DURATION)


@dataclass
class SimConfig:
    queue_s: float = 1.0  # time a task stays queued
    run_s: float = 4.0  # time in_progress, progress rising linearly
    result_lifetime_s: float = 24 * 3600  # result URLs stop working after this
    result_padding_bytes: int = 0  # pad served videos to about this size (a trailing `free` box)
    rates: RateCard = field(default_factory=RateCard)  # what a submit costs
    # Credits of an account the simulator opens itself (its own key; any key in any-key mode).
    # None: unlimited, so nothing that ignores money ever meets a 402.
    starting_credits: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rates, dict):  # SimConfig(**settings) from plain data
            self.rates = RateCard(**self.rates)


@dataclass
class Faults:
    rate: float = 0.0  # probability that a request is hit by a fault
    kinds: tuple[str, ...] = ("429", "500", "502", "503", "drop", "slow", "truncate", "drop_after_accept")
    seed: int | None = None
    retry_after: float = 1.0  # seconds, sent with 429
    slow_s: float = 3.0  # how long a "slow" answer takes
    endpoints: tuple[str, ...] = ("submit", "status", "upload", "download")  # which requests may be hit


# Which fault kinds make sense for which kind of request. The account kinds ("balance",
# "user_balance", "tokens") are hit only when named in Faults.endpoints.
_APPLICABLE = {
    "submit": {"429", "500", "502", "503", "drop", "slow", "drop_after_accept"},
    "status": {"429", "500", "502", "503", "drop", "slow"},
    "upload": {"429", "500", "502", "503", "drop", "slow"},
    "download": {"429", "500", "502", "503", "drop", "slow", "truncate"},
    "balance": {"429", "500", "502", "503", "drop", "slow"},
    "user_balance": {"429", "500", "502", "503", "drop", "slow"},
    "tokens": {"429", "500", "502", "503", "drop", "slow", "drop_after_accept"},
}


@dataclass
class Task:
    id: str
    body: dict
    created: float
    fails: bool
    video: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    token_id: int | None = None  # the token that was charged
    charge: float = 0.0  # credits


@dataclass
class Token:
    """One API key and its quota (internal units). Never logged: the log names its `id`."""

    key: str  # exactly as it is sent after "Bearer "
    id: int
    user_id: int  # the account
    name: str
    created: int
    expires: int = -1  # Unix s; -1 never
    quota: int | None = None  # remaining; None unlimited
    used: int = 0
    model_limits: frozenset[str] | None = None  # None: any model
    group: str = ""

    def expired(self, now: float) -> bool:
        return self.expires != -1 and self.expires <= now


class State:
    """Everything the server remembers, behind one lock."""

    def __init__(self, config: SimConfig, key: str | None, media_dir: Path):
        self.config = config
        self.key = key
        self.media_dir = media_dir
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, tuple[Path, str]] = {}
        self.tokens: dict[str, Token] = {}
        self._last_token_id = 0
        self._last_user_id = 0
        self.log: list[dict] = []
        self.faults = Faults()
        self._random = random.Random()
        self.lock = threading.Lock()
        self.renderers = threading.BoundedSemaphore(2)
        self._own = self._open_account(key) if key is not None else None

    # -- accounts (call with the lock held) ----------------------------------------------
    def _open_account(self, key: str) -> Token:
        """A new account whose only token is `key`, with the configured starting credits."""
        self._last_user_id += 1
        start = self.config.starting_credits
        return self._add_token(
            key, self._last_user_id, "default", quota=None if start is None else round(start * QUOTA_PER_CREDIT)
        )

    def _add_token(self, key: str, user_id: int, name: str, **fields) -> Token:
        self._last_token_id += 1
        token = Token(key, self._last_token_id, user_id, name, int(time.time()), **fields)
        self.tokens[key] = token
        return token

    def token_for(self, key: str) -> Token | None:
        """The token a Bearer value names; None if it names none. In any-key mode a new key
        opens an account, except the bare form of a created key (its "sk-" left off)."""
        with self.lock:
            if self._own is not None and secrets.compare_digest(_raw(key), _raw(self._own.key)):
                return self._own
            token = self.tokens.get(key)
            if token is not None:
                return token
            if self.key is not None or ("sk-" + key) in self.tokens:
                return None
            return self._open_account(key)

    def create_token(self, owner: Token, spec: dict) -> Token:
        # The new key's quota is charged to nothing: the simulator does not debit the creator
        # (the real service may take it from the account's wallet; the contract does not say).
        with self.lock:
            while True:
                key = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(TOKEN_KEY_LENGTH))
                if "sk-" + key not in self.tokens:
                    break
            limits = spec["model_limits"]
            return self._add_token(
                "sk-" + key,
                owner.user_id,
                spec["name"],
                expires=spec["expired_time"],
                quota=None if spec["unlimited_quota"] else spec["remain_quota"],
                model_limits=frozenset(m.strip() for m in limits.split(",") if m.strip())
                if spec["model_limits_enabled"]
                else None,
                group=spec["group"],
            )

    def balance_of(self, tokens: list[Token]) -> dict:
        """The `data` of a balance reply for one token or a whole account (their sum)."""
        unlimited = any(t.quota is None for t in tokens)
        used = sum(t.used for t in tokens)
        remain = -1 if unlimited else sum(t.quota or 0 for t in tokens)
        return {
            "remain_balance": -1 if unlimited else _number(remain / QUOTA_PER_USD),
            "used_balance": _number(used / QUOTA_PER_USD),
            "remain_credits": -1 if unlimited else _number(remain / QUOTA_PER_CREDIT),
            "used_credits": _number(used / QUOTA_PER_CREDIT),
            "credits_per_usd": CREDITS_PER_USD,
            "unlimited_quota": unlimited,
        }

    def token_balance(self, token: Token) -> dict:
        with self.lock:
            return self.balance_of([token])

    def account_balance(self, token: Token) -> dict:
        with self.lock:
            return self.balance_of([t for t in self.tokens.values() if t.user_id == token.user_id])

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
            data["error"] = {  # the contract's code for a task that failed
                "code": "generation_failed",
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
        self._status_sent: int | None = None
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
                self._error(
                    int(fault),
                    {"429": "rate_limit_exceeded"}.get(fault, "internal_error"),
                    f"simulated fault {fault}",
                    headers={"Retry-After": f"{state.faults.retry_after:g}"} if fault == "429" else None,
                )
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
            elif kind in ("upload", "submit", "status"):
                token = self._authorize(account_style=False)
                if token is None:
                    return
                if kind == "upload":
                    self._upload()
                elif kind == "submit":
                    self._submit(entry, token, drop_after=fault == "drop_after_accept")
                else:
                    self._status(path.rsplit("/", 1)[1])
            elif kind in ("balance", "user_balance", "tokens"):
                token = self._authorize(account_style=True)
                if token is None:
                    return
                if kind == "tokens":
                    self._create_token(entry, token, drop_after=fault == "drop_after_accept")
                elif kind == "balance":
                    self._json(200, {"success": True, "message": "", "data": state.token_balance(token)})
                else:
                    self._json(200, {"success": True, "message": "", "data": state.account_balance(token)})
            else:
                self._error(404, "not_found_error", "no such endpoint")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            entry["status"] = self._status_sent

    # -- endpoints ---------------------------------------------------------------------
    def _submit(self, entry: dict, token: Token, *, drop_after: bool) -> None:
        state = self.server.state
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            self._error(400, "invalid_request", "request body is not valid JSON")
            return
        if token.model_limits is not None and isinstance(body, dict) and body.get("model") not in token.model_limits:
            shown = str(body.get("model"))[:60]
            self._error(
                403,
                "permission_error",
                f"This API key may not use the model {shown!r} (its model limits)",
                code="model_not_allowed",
            )
            return
        try:
            check_body(body)
        except Invalid as err:
            self._error(400, "invalid_request", str(err))
            return
        credits = state.config.rates.credits(body)
        cost = round(credits * QUOTA_PER_CREDIT)
        with state.lock:  # quota before content policy, as a service that reserves it first would
            short = token.quota is not None and token.quota < cost
            left = 0.0 if token.quota is None else token.quota / QUOTA_PER_CREDIT
        if short:
            self._error(
                402,
                "insufficient_quota",
                f"Insufficient quota: this request ({billing_class(body)}) costs {_number(credits)} "
                f"credits and this API key has {_number(left)} left",
            )
            return
        if REJECT_MARKER in body["prompt"]:
            self._error(422, "content_policy_violation", "The prompt was refused by the content policy (simulated).")
            return
        task = Task(
            new_task_id(),
            body,
            time.time(),
            fails=FAIL_MARKER in body["prompt"],
            token_id=token.id,
            charge=_number(credits),
        )
        with state.lock:  # checked again and debited with the task's creation, as one step
            if token.quota is not None and token.quota < cost:  # spent by a racing submit meanwhile
                short = True
            else:
                if token.quota is not None:
                    token.quota -= cost
                token.used += cost
                state.tasks[task.id] = task
                entry["accepted"] = True
                entry["task_id"] = task.id
                entry["created"] = task.created
                entry["charge"] = task.charge
                entry["billed_as"] = billing_class(body)
                entry["token_id"] = token.id
        if short:
            self._error(402, "insufficient_quota", "Insufficient quota: this API key's balance was spent meanwhile")
            return
        if not task.fails:
            # Like the service, make the video while the task runs, not when it is fetched.
            threading.Thread(target=self.server.state.prerender, args=(task,), daemon=True).start()
        if drop_after:  # accepted and billed, but the client never hears of it
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._json(200, self.server.state.task_json(task, self.server.base_url, time.time()))

    def _create_token(self, entry: dict, owner: Token, *, drop_after: bool) -> None:
        try:
            body = json.loads(self._body() or b"null")
        except ValueError:
            self._refuse(400, "invalid request body: not JSON")
            return
        try:
            spec = _token_spec(body)
        except Invalid as err:
            self._refuse(400, str(err))
            return
        state = self.server.state
        token = state.create_token(owner, spec)
        entry["token_id"] = token.id
        if drop_after:  # created, but the caller never hears of it
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._json(
            200,
            {
                "success": True,
                "message": "",
                "data": {
                    "id": token.id,
                    "user_id": token.user_id,
                    "key": token.key[3:],  # returned once, without its "sk-" prefix
                    "status": 1,
                    "name": token.name,
                    "created_time": token.created,
                    "accessed_time": token.created,
                    "expired_time": token.expires,
                    "remain_quota": spec["remain_quota"],
                    "unlimited_quota": spec["unlimited_quota"],
                    "used_quota": 0,
                    "model_limits_enabled": spec["model_limits_enabled"],
                    "model_limits": spec["model_limits"],
                    "group": spec["group"],
                    "cross_group_retry": False,
                },
            },
        )

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
        data: bytes | None = None
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                payload = part.get_payload(decode=True)  # bytes; None for a (nested) multipart part
                data = payload if isinstance(payload, bytes) else None
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
        self._json(
            200,
            {
                "success": True,
                "message": "",
                "data": {"id": upload_id, "url": url, "mime_type": mime, "size": len(data)},
            },
        )

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
        if task is None or info is None or info["status"] != "completed":
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
    def _authorize(self, *, account_style: bool) -> Token | None:
        """The calling token, or None after answering 401: in the error shape of the video
        endpoints, or `{"success": false, "message": ...}` for the account endpoints."""
        auth = self.headers.get("Authorization", "")
        value = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not value:
            problem = (
                "unauthorized",
                "No Authorization header" if account_style else "Missing API key: send Authorization: Bearer <key>",
            )
            token = None
        else:
            token = self.server.state.token_for(value)
            if token is None:
                problem = ("authentication_error", "Failed to get token info" if account_style else "Invalid API key")
            elif token.expired(time.time()):
                problem, token = ("authentication_error", "This API key has expired"), None
        if token is not None:
            return token
        self._drain()
        if account_style:
            self._refuse(401, problem[1])
        else:
            self._error(401, *problem)
        return None

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

    def _error(
        self, status: int, type_: str, message: str, headers: dict | None = None, *, code: str | int | None = None
    ) -> None:
        if code is None:
            code = type_ if status in (402, 404, 422, 429) else status
        self._json(status, {"error": {"code": code, "message": message, "type": type_}}, headers)

    def _refuse(self, status: int, message: str) -> None:
        """The account endpoints' refusal shape."""
        self._json(status, {"success": False, "message": message})


def _token_spec(body) -> dict:
    """A POST /v1/tokens body checked the way the service would, with its defaults filled in."""
    if not isinstance(body, dict):
        raise Invalid("invalid request body: expected a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("name is required")
    if len(name) > MAX_TOKEN_NAME:
        raise Invalid(f"Token name is too long (at most {MAX_TOKEN_NAME} characters)")
    spec: dict[str, Any] = {"name": name}
    for field_, kind, default in (
        ("expired_time", int, -1),
        ("remain_quota", int, 0),
        ("unlimited_quota", bool, False),
        ("model_limits_enabled", bool, False),
        ("model_limits", str, ""),
        ("group", str, ""),
    ):
        value = body.get(field_, default)
        if value is None:
            value = default
        if type(value) is not kind:  # a bool is not an int, a float is not an int (as in Go)
            raise Invalid(f"{field_} must be {'an integer' if kind is int else 'a ' + kind.__name__}")
        spec[field_] = value
    if spec["expired_time"] != -1 and spec["expired_time"] <= 0:
        raise Invalid("expired_time must be a Unix time in seconds, or -1 for never")
    if spec["remain_quota"] < 0:
        raise Invalid("remain_quota must not be negative")
    return spec


def _raw(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _number(value: float) -> float | int:
    """A whole number as an int, anything else rounded to 6 places (how amounts are shown)."""
    value = round(value, 6)
    return int(value) if math.isfinite(value) and value == int(value) else value


def _kind(method: str, path: str) -> str:
    if method == "GET" and path == "/v1/balance":
        return "balance"
    if method == "GET" and path == "/v1/user/balance":
        return "user_balance"
    if method == "POST" and path == "/v1/tokens":
        return "tokens"
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
        assert isinstance(host, str), "a bound AF_INET/AF_INET6 socket reports its host as a str"
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


__all__ = ["SimConfig", "RateCard", "Faults", "SimServer"]
